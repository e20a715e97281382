"""Issue 13, two identities per host: the deploy identity (Pulumi's steps and `qpool`) may run only the
root-owned qp-* tools as root; the operators (their own keys) log in as the admin user with full sudo.

Checked here without a lab: the rendered users and sudoers drop-in (`visudo -cf` for real), and every remote
command the program and `qpool` build is a single `sudo /usr/local/sbin/qp-<tool> ARGS` call of a tool that
host's sudoers lists. The lab proves sudo itself refuses everything else (tests/lab_e2e/test_bootstrap.py).
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from cloud_init import HostRenderInputs
from cloud_init.base import (
    ADMIN_USER,
    AUTHORIZED_KEYS,
    DEPLOY_AUTHORIZED_KEYS,
    DEPLOY_SUDOERS,
    DEPLOY_USER,
    decoded_write_files,
    deploy_sudo_commands,
    ssh_access_bundle,
)
from cloud_init.host_tools import CTL_PATH
from cloud_init.key_host import IMPORT_KEYS
from qpool import backups, witnesses
from qpool.inventory import HostRecord, Inventory
from qpool.operations import alertmanager_alert
from qpool.remote import DEPLOY_TOOL_DIR, Ssh, ctl_command, deploy_command_problem
from qpool.review import plan_stack

from .support import DEPLOY_KEY, stack_inputs

REPO = Path(__file__).resolve().parents[2]
COMMAND = "command:remote:Command"
QP_TOOL = re.compile(rf"^{re.escape(DEPLOY_TOOL_DIR)}/qp-[a-z0-9-]+$")


def _sudoers(inputs: HostRenderInputs) -> str:
    return next(f.content for f in ssh_access_bundle(inputs).files if f.path == DEPLOY_SUDOERS)


def _rule_tools(sudoers: str) -> list[str]:
    """The commands of the deploy user's one rule, through its Cmnd_Alias."""
    rules = [line for line in sudoers.splitlines() if line and not line.startswith("#")]
    alias, rule = rules
    assert rule == f"{DEPLOY_USER} ALL=(root) NOPASSWD: QP_DEPLOY_TOOLS", rule
    name, _, listed = alias.partition("=")
    assert name.strip() == "Cmnd_Alias QP_DEPLOY_TOOLS"
    return [t.strip() for t in listed.split(",")]


# -- rendered users and sudoers ---------------------------------------------------------------------------

@pytest.mark.parametrize("inputs", stack_inputs(), ids=lambda i: i.host.name)
def test_deploy_sudoers_lists_only_absolute_qp_tools_and_passes_visudo(inputs: HostRenderInputs,
                                                                       tmp_path: Path) -> None:
    text = _sudoers(inputs)
    tools = _rule_tools(text)
    assert tools == deploy_sudo_commands(inputs) and tools
    assert all(QP_TOOL.match(t) for t in tools), tools  # absolute, no arguments, no wildcard, no ALL
    assert "ALL" not in text.split("NOPASSWD:")[1]
    visudo = shutil.which("visudo")
    if visudo is None:
        pytest.skip("REAL TOOL MISSING: visudo (apt-get install sudo); this check did not run")
    path = tmp_path / "qp-deploy"
    path.write_text(text)
    path.chmod(0o440)
    res = subprocess.run([visudo, "-cf", str(path)], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stdout + res.stderr
    # visudo really checks: a broken file fails (so the bundle's check can stop a bad sudoers)
    path.chmod(0o640)
    path.write_text(text.replace("NOPASSWD:", "NOPASSWD"))
    assert subprocess.run([visudo, "-cf", str(path)], capture_output=True, timeout=30).returncode != 0


@pytest.mark.parametrize("inputs", stack_inputs()[:1] + stack_inputs()[-1:], ids=lambda i: i.host.role)
def test_user_data_has_two_identities(inputs: HostRenderInputs) -> None:
    from cloud_init.key_host import key_host_cloud_config
    from cloud_init.monitoring.user_data import monitoring_cloud_config

    doc = key_host_cloud_config(inputs) if inputs.host.is_key_host else monitoring_cloud_config(inputs)
    users = {u["name"]: u for u in doc["users"] if isinstance(u, dict)}
    admin, deploy = users[ADMIN_USER], users[DEPLOY_USER]
    assert admin["sudo"] == "ALL=(ALL) NOPASSWD:ALL"
    assert admin["ssh_authorized_keys"] == [k.strip() for k in inputs.config.operator_ssh_keys]
    assert DEPLOY_KEY not in admin["ssh_authorized_keys"]
    assert deploy["ssh_authorized_keys"] == [f"restrict {DEPLOY_KEY}"]  # no forwarding, no PTY
    assert "sudo" not in deploy and "groups" not in deploy  # no cloud-init sudo rule, not in group sudo/adm
    files = decoded_write_files(doc)
    assert files[DEPLOY_SUDOERS] == _sudoers(inputs)
    entry = next(e for e in doc["write_files"] if e["path"] == DEPLOY_SUDOERS)
    assert entry["permissions"] == "0440" and entry["owner"] == "root:root"


def test_ssh_access_bundle_keeps_the_identities_apart_and_checks_sudoers() -> None:
    inputs = stack_inputs()[0]
    bundle = ssh_access_bundle(inputs)
    files = {f.path: f for f in bundle.files}
    assert DEPLOY_KEY not in files[AUTHORIZED_KEYS].content
    assert all(k.strip() in files[AUTHORIZED_KEYS].content for k in inputs.config.operator_ssh_keys)
    deploy_keys = [line for line in files[DEPLOY_AUTHORIZED_KEYS].content.splitlines() if not line.startswith("#")]
    assert deploy_keys == [f"restrict {DEPLOY_KEY}"]
    assert files[DEPLOY_AUTHORIZED_KEYS].owner == f"{DEPLOY_USER}:{DEPLOY_USER}"
    assert (files[DEPLOY_SUDOERS].mode, files[DEPLOY_SUDOERS].owner) == ("0440", "root:root")
    assert any(c.command.startswith("visudo -c") and DEPLOY_SUDOERS in c.command for c in bundle.checks)


# -- every command the program sends ----------------------------------------------------------------------

def _segments(command: str) -> list[str]:
    """A step may chain qp-* calls with ` && ` (the clients step: install the bundle, then reconcile)."""
    return command.split(" && ")


@pytest.fixture(scope="module")
def program_commands() -> list[tuple[str, str, str, dict[str, Any]]]:
    """(stack, host, command, connection) of every Command of both stacks: create, update and delete."""
    out = []
    for stack in ("testnet", "mainnet"):
        run = plan_stack(stack).run
        hosts = _host_names(stack)
        for cmd in run.of_type(COMMAND):
            inputs = cmd.plain_inputs()
            host = next(n for n in hosts if cmd.name.startswith(n + "-"))
            for verb in ("create", "update", "delete"):
                if inputs.get(verb):
                    out.append((stack, host, inputs[verb], inputs.get("connection") or {}))
    return out


def _host_names(stack: str) -> list[str]:
    from qpool.stacks import load_stack

    return [h.name for h in load_stack(stack).config.hosts()]


def _allowed(stack: str, host: str) -> list[str]:
    from qpool.stacks import load_stack

    cfg = load_stack(stack).config
    spec = next(h for h in cfg.hosts() if h.name == host)
    return deploy_sudo_commands(HostRenderInputs(config=cfg, host=spec, deploy_public_key=DEPLOY_KEY,
                                                 volume_device=None))


def test_every_program_command_is_a_listed_qp_tool_of_its_host(program_commands: list[Any]) -> None:
    assert len(program_commands) > 20
    used: set[str] = set()
    for stack, host, command, connection in program_commands:
        assert connection.get("user") == DEPLOY_USER, (host, connection.get("user"))
        allowed = _allowed(stack, host)
        for segment in _segments(command):
            problem = deploy_command_problem(segment)
            assert problem is None, f"{host}: {command[:100]!r}: {problem}"
            tool = shlex.split(segment)[1]
            assert tool in allowed, f"{host}: {tool} is not in its sudoers list {allowed}"
            used.add(tool)
    # and the lists name nothing the program or qpool never runs (least privilege both ways)
    qpool_tools = {CTL_PATH, IMPORT_KEYS}
    for stack, host, _c, _conn in program_commands:
        assert set(_allowed(stack, host)) <= used | qpool_tools, host


# -- every command qpool sends ----------------------------------------------------------------------------

def test_the_guard_accepts_only_single_quoted_qp_tool_calls() -> None:
    assert deploy_command_problem(ctl_command("status")) is None
    assert deploy_command_problem(ctl_command("alert", "--summary", "a | b; $(reboot) `id` *")) is None
    for bad in ("sudo sh -c 'cat /etc/shadow'", "sudo cat /etc/shadow", "sudo /bin/true", "curl -fsS http://x",
                f"base64 -d | sudo {IMPORT_KEYS}", f"sudo {CTL_PATH} status; id", f"sudo {CTL_PATH} $(id)",
                f"sudo {DEPLOY_TOOL_DIR}/../bin/sh", f"sudo {DEPLOY_TOOL_DIR}/qp-x > /tmp/f", "qp-validator-ctl status",
                f"sudo -u root {CTL_PATH} status"):
        assert deploy_command_problem(bad) is not None, bad


MON = HostRecord("qp-t-monitoring", "monitoring", None, "127.0.0.1", "10.0.0.20", server_id=3)
KEYHOST = HostRecord("qp-t-p1-primary", "primary", "p1", "127.0.0.1", "10.0.0.11", server_id=1)


class _Recorder:
    """Stands in for subprocess.run inside qpool.remote: records the remote command and answers like the host."""

    def __init__(self) -> None:
        self.commands: list[str] = []

    def __call__(self, argv: list[str], **_kw: Any) -> subprocess.CompletedProcess[bytes]:
        command = argv[-1]
        self.commands.append(command)
        words = shlex.split(command)
        sub = words[2] if len(words) > 2 else ""
        out: bytes = b"{}"
        err = b""
        if sub == "list-replicas":
            out = json.dumps({"replicas": [{"name": "qp-t-p1-primary--1Z.db", "mtime": 1.0, "sha256": None}]}).encode()
        elif sub in ("read-replica", "convert-replica", "export-slashing"):
            out = b"{}"
            err = b"sha256=" + hashlib.sha256(out).hexdigest().encode()
        elif sub == "prometheus-samples":
            out = json.dumps({"now": 5.0, "response": {"data": {"result": [{"values": [[1, "1"]]}]}}}).encode()
        return subprocess.CompletedProcess(argv, 0, out, err)


def test_every_command_qpool_sends_passes_the_guard_and_names_a_listed_tool(monkeypatch: pytest.MonkeyPatch,
                                                                           tmp_path: Path) -> None:
    """Drive each qpool call site that sends a command through the real Ssh (subprocess stubbed), so the
    command strings are the ones qpool builds; a new call site must be added here (the AST check below)."""
    recorder = _Recorder()
    monkeypatch.setattr("qpool.remote.subprocess.run", recorder)
    inv = Inventory(stack="t", hosts={MON.name: MON, KEYHOST.name: KEYHOST}, ssh_user=DEPLOY_USER,
                    ssh_key=tmp_path / "k", known_hosts=tmp_path / "kh")
    ssh = Ssh(inv)

    class Ctx:
        inventory = inv

        def __init__(self) -> None:
            self.ssh = ssh

        def report(self, _text: str) -> None:
            pass

    ctx: Any = Ctx()
    ssh.status(KEYHOST)
    ssh.ctl(KEYHOST, "oplock", "acquire", "--run-id", "r", "--owner", "qpool test")
    ssh.export_bytes(KEYHOST, "export-slashing")
    backups.list_replicas(ctx, MON, ["qp-t-p1-primary", "qp-t-p1-backup"])
    backups._pull_raw(ctx, MON, "qp-t-p1-primary--1Z.db", hashlib.sha256(b"{}").hexdigest())
    backups._convert_raw(ctx, KEYHOST, b"raw db")
    witnesses.prometheus_samples(ctx, KEYHOST, 600)
    alertmanager_alert(ctx)("run-1", "failover done; it's `quoted` | safe")
    ssh.run(KEYHOST, f"sudo {IMPORT_KEYS}", input=b"tar")  # qpool restore / keys push
    with pytest.raises(Exception, match="refusing to send"):
        ssh.run(KEYHOST, "sudo cat /etc/shadow")
    assert "sudo cat /etc/shadow" not in recorder.commands  # refused before ssh runs
    from qpool.stacks import load_stack

    cfg = load_stack("testnet").config
    union = {t for h in cfg.hosts() for t in deploy_sudo_commands(
        HostRenderInputs(config=cfg, host=h, deploy_public_key=DEPLOY_KEY, volume_device=None))}
    for command in recorder.commands:
        assert deploy_command_problem(command) is None, command
        assert shlex.split(command)[1] in union, command


def test_every_ssh_run_call_site_in_qpool_is_covered() -> None:
    """The call sites above, found in the source: a new `ssh.run(...)` must be driven by the test above."""
    covered = {("witnesses.py", "prometheus_samples"), ("backups.py", "list_replicas"), ("backups.py", "_pull_raw"),
               ("backups.py", "_convert_raw"), ("backups.py", "restore"), ("push.py", "push_keys"),
               ("remote.py", "ctl"), ("remote.py", "export_bytes")}
    found = set()
    for path in (REPO / "qpool").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for fn in ast.walk(tree):
            if not isinstance(fn, ast.FunctionDef):
                continue
            for node in ast.walk(fn):
                if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                        and node.func.attr == "run"):
                    continue
                target = ast.unparse(node.func.value)
                if target.endswith("ssh") or (target == "self" and path.name == "remote.py"):
                    found.add((path.name, fn.name))
    assert found <= covered, f"uncovered remote command call sites: {sorted(found - covered)}"


def test_every_validator_ctl_subcommand_qpool_uses_exists_on_the_host() -> None:
    """ctl(...) / export_bytes(...) / ctl_command(...) first arguments in qpool vs the tool's own parser."""
    source = "\n".join(p.read_text() for p in (REPO / "qpool").rglob("*.py"))
    used = set(re.findall(r'(?:\.ctl|export_bytes|ctl_command)\([^"\n]*?"([a-z-]+)"', source))
    used.add("list-replicas")  # built as a list in backups.list_replicas
    assert {"oplock", "read-replica", "convert-replica", "import-slashing", "alert", "prometheus-samples"} <= used
    parser_text = (REPO / "cloud_init/files/qp_validator_ctl.py").read_text()
    known = set(re.findall(r'sub\.add_parser\("([a-z-]+)"\)', parser_text))
    assert used <= known, sorted(used - known)
