"""Rendered key-host files checked by the real Debian tools (cloud-init, systemd, shellcheck, nft, apt).

How units are verified here (PID 1 is not systemd on these machines): `systemd-analyze verify --root=DIR`
with DIR holding the rendered units under etc/systemd/system, a copy of this machine's unit directory
(for targets such as sysinit.target) and executable stand-ins at every path an Exec= line names, because
verify refuses commands that do not exist. Unknown keys and bad values are only *warnings* for verify
(exit 0), so the test fails on any output, not just on the exit code.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from cloud_init import key_host as kh
from cloud_init.base import NFTABLES_CONF

from .hf_unitparse import exec_argv, values
from .support import Rendered, need_tool, render_variant

pytestmark = pytest.mark.realtools

SYSTEM_UNIT_DIRS = [Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")]


def run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=120, **kw)  # type: ignore[call-overload]


def test_cloud_init_schema_accepts_user_data(variant: Rendered, tmp_path: Path) -> None:
    tool = need_tool("cloud-init")
    path = tmp_path / "user-data"
    path.write_text(variant.user_data)
    res = run([tool, "schema", "--config-file", str(path)])
    assert res.returncode == 0 and "Valid cloud-config" in res.stdout, res.stdout + res.stderr


def test_cloud_init_schema_would_catch_a_bad_document(tmp_path: Path) -> None:
    tool = need_tool("cloud-init")
    path = tmp_path / "user-data"
    path.write_text("#cloud-config\nusers: 5\nruncmd: {a: 1}\n")
    assert run([tool, "schema", "--config-file", str(path)]).returncode != 0


def _unit_root(r: Rendered, tmp_path: Path) -> Path:
    root = tmp_path / "root"
    unit_dir = root / "etc/systemd/system"
    unit_dir.mkdir(parents=True)
    system = next((d for d in SYSTEM_UNIT_DIRS if (d / "sysinit.target").exists()), None)
    if system is None:
        pytest.skip("REAL TOOL MISSING: no systemd unit directory with sysinit.target on this machine")
    shutil.copytree(system, root / "usr/lib/systemd/system", symlinks=True)
    for name in (kh.EXECUTION_UNIT, kh.BEACON_UNIT, kh.VALIDATOR_UNIT, kh.LOCK_UNIT):
        text = r.files[f"{kh.UNIT_DIR}/{name}"]
        (unit_dir / name).write_text(text)
        for key in ("ExecStart", "ExecStartPre"):
            for cmd in values(text, "Service", key):
                exe = root / exec_argv(cmd)[0].lstrip("/")
                exe.parent.mkdir(parents=True, exist_ok=True)
                exe.write_text("#!/bin/sh\nexit 0\n")
                exe.chmod(0o755)
    return root


def test_units_pass_systemd_analyze_verify(variant: Rendered, tmp_path: Path) -> None:
    tool = need_tool("systemd-analyze")
    root = _unit_root(variant, tmp_path)
    names = [f"/etc/systemd/system/{n}" for n in (kh.EXECUTION_UNIT, kh.BEACON_UNIT, kh.VALIDATOR_UNIT, kh.LOCK_UNIT)]
    res = run([tool, "verify", f"--root={root}", *names])
    assert res.returncode == 0 and not (res.stdout + res.stderr).strip(), res.stdout + res.stderr


def test_verify_setup_would_catch_a_bad_unit(tmp_path: Path) -> None:
    """The harness itself: a misspelt key and a missing executable must produce output."""
    tool = need_tool("systemd-analyze")
    r = render_variant("gqrl", "primary", False)
    root = _unit_root(r, tmp_path)
    unit = root / "etc/systemd/system" / kh.BEACON_UNIT
    unit.write_text(unit.read_text().replace("ProtectHome=yes", "ProtectHomme=yes"))
    (root / "opt/quantapool/bin/validator").unlink()
    res = run([tool, "verify", f"--root={root}", f"/etc/systemd/system/{kh.BEACON_UNIT}",
               f"/etc/systemd/system/{kh.VALIDATOR_UNIT}"])
    out = res.stdout + res.stderr
    assert "ProtectHomme" in out and "/opt/quantapool/bin/validator" in out


def test_scripts_pass_shellcheck(variant: Rendered, tmp_path: Path) -> None:
    tool = need_tool("shellcheck")
    paths = []
    for path in [*kh.SCRIPTS, kh.INSTALL_SECRET]:
        target = tmp_path / Path(path).name
        target.write_text(variant.files[path])
        paths.append(str(target))
    res = run([tool, "--shell=bash", "--severity=style", *paths])
    assert res.returncode == 0, res.stdout + res.stderr


def test_ruleset_passes_nft_check(variant: Rendered, tmp_path: Path) -> None:
    """Both rulesets: user-data's first-boot one and the firewall bundle's full one."""
    tool = need_tool("nft")
    for name, text in (("first-boot", variant.files[NFTABLES_CONF]), ("bundle", variant.bundles[NFTABLES_CONF])):
        path = tmp_path / f"{name}.conf"
        path.write_text(text)
        res = run([tool, "-c", "-f", str(path)])
        if res.returncode != 0 and "Operation not permitted" in res.stderr:
            pytest.skip("REAL TOOL UNUSABLE: nft -c needs CAP_NET_ADMIN here; this check did not run")
        assert res.returncode == 0, name + ": " + res.stderr


def test_nft_check_would_catch_a_bad_ruleset(tmp_path: Path) -> None:
    tool = need_tool("nft")
    r = render_variant("gzond", "backup", True)
    path = tmp_path / "nftables.conf"
    path.write_text(r.bundles[NFTABLES_CONF].replace("policy drop;", "policy dorp;", 1))
    assert run([tool, "-c", "-f", str(path)]).returncode != 0


def test_unattended_upgrades_security_only_no_reboot(variant: Rendered, tmp_path: Path) -> None:
    """apt's own parser: our file clears Debian's default origins (which include point releases)."""
    tool = need_tool("apt-config")
    parts = tmp_path / "apt.conf.d"
    parts.mkdir()
    (parts / "50unattended-upgrades").write_text(
        'Unattended-Upgrade::Origins-Pattern {\n "origin=Debian,codename=${distro_codename},label=Debian";\n'
        ' "origin=Debian,codename=${distro_codename}-security,label=Debian-Security";\n};\n'
        'Unattended-Upgrade::Automatic-Reboot "true";\n')
    for path, content in variant.bundles.items():
        if path.startswith("/etc/apt/apt.conf.d/"):
            (parts / Path(path).name).write_text(content)
    empty = tmp_path / "apt.conf"
    empty.write_text("")
    # APT_CONFIG is read before the parts directory, so it can point apt at ours (-o would be too late)
    main = tmp_path / "main.conf"
    main.write_text(f'Dir::Etc::parts "{parts}";\nDir::Etc::main "{empty}";\n')
    res = run([tool, "dump"], env={"APT_CONFIG": str(main), "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stderr
    origins = re.findall(r'Unattended-Upgrade::Origins-Pattern:: "([^"]+)"', res.stdout)
    assert origins and all("Debian-Security" in o for o in origins), origins
    assert 'Unattended-Upgrade::Automatic-Reboot "false";' in res.stdout
    assert 'APT::Periodic::Unattended-Upgrade "1";' in res.stdout


def test_runcmd_script_stops_at_the_first_failure(variant: Rendered, tmp_path: Path) -> None:
    """cloud-init turns runcmd into one sh script; with our leading `set -eu` a failed step ends it
    non-zero (cloud-init then reports an error) instead of running on and reporting success."""
    python = "/usr/bin/python3"  # cloud-init's own interpreter (Debian package), not a venv/pyenv one
    if not Path(python).exists() or run([python, "-c", "import cloudinit.util"]).returncode != 0:
        pytest.skip("REAL TOOL MISSING: cloud-init's Python package (apt-get install cloud-init)")
    import json
    script = run([python, "-c", "import json,sys; from cloudinit import util; "
                  "print(util.shellify(json.load(sys.stdin)), end='')"], input=json.dumps(variant.doc["runcmd"]))
    assert script.returncode == 0, script.stderr
    stubs = tmp_path / "bin"
    stubs.mkdir()
    log = tmp_path / "log"
    for name in {c[0].rsplit("/", 1)[-1] for c in variant.doc["runcmd"] if isinstance(c, list)}:
        stub = stubs / name
        # every command succeeds except `nft`, which fails like a broken ruleset would
        stub.write_text(f'#!/bin/sh\necho "{name} $*" >> {log}\n' + ("exit 1\n" if name == "nft" else "exit 0\n"))
        stub.chmod(0o755)
    text = script.stdout
    for c in variant.doc["runcmd"]:
        if isinstance(c, list) and c[0].startswith("/"):
            text = text.replace(f"'{c[0]}'", f"'{stubs}/{c[0].rsplit('/', 1)[-1]}'")
    res = run(["sh", "-c", text], env={"PATH": f"{stubs}:/usr/bin:/bin"})
    assert res.returncode != 0
    ran = log.read_text().splitlines()
    assert ran[-1].startswith("nft -c -f"), ran
    assert not any(line.startswith("qp-install-clients") for line in ran)


def test_enabling_never_wires_the_validator_into_boot(variant: Rendered, tmp_path: Path) -> None:
    """systemctl itself (offline, --root): enabling everything, even the validator by mistake, leaves no
    boot-time link to it, while the lock unit is pulled in by sysinit.target."""
    tool = need_tool("systemctl")
    root = _unit_root(variant, tmp_path)
    for unit in (kh.LOCK_UNIT, kh.EXECUTION_UNIT, kh.BEACON_UNIT, kh.VALIDATOR_UNIT):
        res = run([tool, f"--root={root}", "enable", unit])
        assert res.returncode == 0, res.stderr
    res = run([tool, f"--root={root}", "disable", kh.VALIDATOR_UNIT])
    assert res.returncode == 0, "the backup's runcmd disables it: must not fail cloud-init"
    links = {p.relative_to(root / "etc/systemd/system").as_posix()
             for p in (root / "etc/systemd/system").rglob("*") if p.is_symlink()}
    assert f"sysinit.target.wants/{kh.LOCK_UNIT}" in links
    assert f"multi-user.target.wants/{kh.EXECUTION_UNIT}" in links
    assert not [link for link in links if kh.VALIDATOR_UNIT in link], links


def test_volume_wait_bootcmd_is_valid_sh(tmp_path: Path) -> None:
    r = render_variant("gqrl", "primary", True)
    [cmd] = r.doc["bootcmd"]
    res = run(["sh", "-n", "-c", cmd])
    assert res.returncode == 0, res.stderr
    fake = tmp_path / "not-a-block-device"
    fake.write_text("")
    quick = cmd.replace(kh_volume(r), str(fake)).replace("seq 1 300", "seq 1 2")
    assert run(["sh", "-c", quick]).returncode == 0, "a missing volume must not fail bootcmd itself"


def kh_volume(r: Rendered) -> str:
    assert r.inputs.volume_device is not None
    return r.inputs.volume_device
