"""`qpool lab up|down|status|ssh`: the stack on local nspawn hosts (no cloud account, no credentials)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click

from qpool.errors import QpoolError

LAB_ROOT = Path("/var/lib/quantapool-lab")
REPO = Path(__file__).resolve().parent.parent


def _require_lab_host() -> None:
    if sys.platform != "linux":
        raise QpoolError("the lab needs Linux (systemd-nspawn and network namespaces)")
    if os.geteuid() != 0:
        raise QpoolError("the lab needs root (network namespaces, bridges, systemd-nspawn): run it with sudo")
    missing = [tool for tool in ("systemd-nspawn", "mmdebstrap", "nft", "ip", "ssh") if shutil.which(tool) is None]
    if missing:
        raise QpoolError(f"missing tools for the lab: {', '.join(missing)}; run `make system-deps` (Debian packages)")


def _state(stack: str) -> dict | None:
    path = LAB_ROOT / stack / "lab.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _errors(func):  # type: ignore[no-untyped-def]
    from qpool.cli import operator_errors

    return operator_errors(func)


@click.group()
def lab() -> None:
    """The local lab: the same topology on local test hosts, deployed by the program's own output."""


@lab.command()
@click.option("--stack", "-s", default="testnet", show_default=True)
@click.option("--slot-seconds", type=float, default=12.0, show_default=True,
              help="Stand-in chain slot length (Zond: 60).")
@click.option("--slots-per-epoch", type=int, default=8, show_default=True, help="Stand-in epoch length (Zond: 128).")
@click.option("--detach", is_flag=True, help="Run the lab in the background; stop it with `qpool lab down`.")
@click.option("--config-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Stack config to deploy instead of Pulumi.<stack>.yaml (e.g. a copy on another subnet).")
@click.option("--json", "as_json", is_flag=True, help="Progress as one JSON object per line (for programs).")
@click.option("--detached-owner", is_flag=True, hidden=True, help="Internal: the background process of --detach.")
@_errors
def up(stack: str, slot_seconds: float, slots_per_epoch: int, detach: bool, config_file: Path | None,
       as_json: bool, detached_owner: bool) -> None:
    """Boot every host of the stack locally, run the bootstrap, keep the lab up until Ctrl-C / `lab down`."""
    from qpool.progress import make_progress

    _require_lab_host()
    state = _state(stack)
    if state and _alive(state.get("pid")):
        raise QpoolError(f"lab {stack} is already up (pid {state['pid']}); `qpool lab down --stack {stack}` first")
    progress = make_progress("json" if as_json or detached_owner else "auto")
    if detach:
        log = Path(f"/var/log/quantapool-lab-{stack}.log")
        with open(log, "ab") as fh:
            offset = fh.tell()
            proc = subprocess.Popen(
                [sys.executable, "-m", "qpool_cli.main", "lab", "up", "--stack", stack, "--slot-seconds",
                 str(slot_seconds), "--slots-per-epoch", str(slots_per_epoch), "--detached-owner",
                 *(["--config-file", str(config_file.resolve())] if config_file else [])],
                stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        follow = LogFollower(log, offset, progress)
        deadline = time.monotonic() + 1800
        while time.monotonic() < deadline:
            state = _state(stack)
            if state and state.get("pid") == proc.pid and state.get("ready"):
                follow.poll()  # the banner was written before the state said ready
                return
            follow.poll()
            if proc.poll() is not None:
                follow.poll()
                progress.close()
                raise QpoolError(f"lab up failed (exit {proc.returncode}); see {log}")
            time.sleep(1)
        progress.close()
        raise QpoolError(f"lab up did not finish within 30 min; see {log}")

    from lab.deploy import LabClock, deploy
    from lab.reaper import reap
    from lab.session import LabSession

    stale = LAB_ROOT / stack
    if stale.exists():
        reap()
        shutil.rmtree(stale, ignore_errors=True)

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt  # deploy() tears down what it built

    signal.signal(signal.SIGTERM, interrupt)
    dep = deploy(stack, config_file=config_file, state_root=LAB_ROOT, log=progress,
                 clock=LabClock(slot_seconds=slot_seconds, slots_per_epoch=slots_per_epoch))
    session = LabSession(dep).start()
    stop = {"now": False}

    def handle(_signum: int, _frame: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    hosts = [(spec.name, spec.role, spec.private_ip) for spec in dep.config.hosts()]
    mon = dep.config.monitoring_host()
    # The banner first: `lab up --detach` prints the owner's log up to the moment the state says ready.
    for line in ready_banner(stack, hosts, dep.network.bridge, str(dep.network.subnet), (mon.name, mon.private_ip),
                             detached=detached_owner, qpool=qpool_command()):
        progress.log(line)
    state_path = dep.state_dir / "lab.json"
    doc = json.loads(state_path.read_text())
    doc.update({"pid": os.getpid(), "ready": True, "inventory": str(session.inventory_path)})
    state_path.write_text(json.dumps(doc, indent=2) + "\n")
    try:
        while not stop["now"]:
            serve_apply_request(dep, session)
            time.sleep(0.5)
    finally:
        progress.log("lab: tearing down")
        session.close(destroy=True)


APPLY_REQUEST = "apply-request.json"
APPLY_RESULT = "apply-result.json"
APPLY_LOG = "apply.log"


def serve_apply_request(dep: Any, session: Any) -> None:
    """In the lab's owner process: carry out a `qpool lab apply` request, if one is waiting.

    Why the owner: it holds the lab's hosts, network claim and fake Hetzner API, so only it can boot a new
    host or power-cycle one; `lab apply` hands it the stack file and follows its log."""
    request_path = dep.state_dir / APPLY_REQUEST
    if not request_path.exists():
        return
    from lab.apply import apply

    request = json.loads(request_path.read_text())
    result: dict[str, Any] = {"id": request["id"], "ok": False}
    with open(dep.state_dir / APPLY_LOG, "a") as log_file:
        def log(line: str) -> None:
            log_file.write(line + "\n")
            log_file.flush()

        try:
            outcome = apply(dep, Path(request["config_file"]), log=log, dry_run=bool(request.get("dry_run")),
                            session=session)
            result.update(ok=True, summary=outcome.plan.summary, ran=outcome.ran, seconds=outcome.seconds)
        except Exception as exc:  # reported to the `lab apply` process, which exits non-zero with it
            result["error"] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            log(f"error: {result['error']}")
    tmp = dep.state_dir / (APPLY_RESULT + ".tmp")
    tmp.write_text(json.dumps(result) + "\n")
    tmp.replace(dep.state_dir / APPLY_RESULT)
    request_path.unlink(missing_ok=True)


@lab.command(name="apply")
@click.option("--stack", "-s", default="testnet", show_default=True)
@click.option("--config-file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The changed stack file to apply to the running lab.")
@click.option("--dry-run", is_flag=True, help="Print the plan (like `pulumi preview`) and change nothing.")
@_errors
def lab_apply(stack: str, config_file: Path, dry_run: bool) -> None:
    """Apply a changed stack file to the running lab as `pulumi up` would: plan first, then the steps."""
    import uuid

    _require_lab_host()
    state = _state(stack)
    if not state or not _alive(state.get("pid")) or not state.get("ready"):
        raise QpoolError(f"lab {stack} is not up; start it with `qpool lab up --stack {stack} --detach`")
    state_dir = LAB_ROOT / stack
    request_path = state_dir / APPLY_REQUEST
    if request_path.exists():
        raise QpoolError(f"an apply is already running on lab {stack} ({request_path}); wait for it")
    log_path = state_dir / APPLY_LOG
    offset = log_path.stat().st_size if log_path.exists() else 0
    request_id = uuid.uuid4().hex
    tmp = state_dir / (APPLY_REQUEST + ".tmp")
    tmp.write_text(json.dumps({"id": request_id, "config_file": str(config_file.resolve()), "dry_run": dry_run}))
    tmp.replace(request_path)
    result_path = state_dir / APPLY_RESULT
    deadline = time.monotonic() + 3600
    while time.monotonic() < deadline:
        offset = _echo_new_lines(log_path, offset)
        try:
            result = json.loads(result_path.read_text())
        except (OSError, ValueError):
            result = None
        if result and result.get("id") == request_id:
            _echo_new_lines(log_path, offset)
            if not result["ok"]:
                raise QpoolError(result.get("error") or "lab apply failed")
            return
        if not _alive(state.get("pid")):
            raise QpoolError(f"the lab owner process {state.get('pid')} exited during the apply; "
                             f"see /var/log/quantapool-lab-{stack}.log")
        time.sleep(0.5)
    raise QpoolError(f"lab apply did not finish within 60 min; see {log_path}")


def _echo_new_lines(path: Path, offset: int) -> int:
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except OSError:
        return offset
    complete, _, _rest = data.rpartition(b"\n")
    if complete:
        for line in complete.decode(errors="replace").split("\n"):
            if not line.startswith("error: "):  # the error is printed once, by operator_errors
                click.echo(line)
        return offset + len(complete) + 1
    return offset


BANNER_SEPARATOR = "----"


def qpool_command(repo: Path = REPO) -> str:
    """How the user can run this qpool from where they are: `qpool` when PATH finds this install (the venv's
    entry point or the repo's bin/qpool wrapper), else the wrapper by a path that works from the cwd."""
    venv_qpool = Path(sys.executable).parent / "qpool"
    wrapper = repo / "bin" / "qpool"
    on_path = shutil.which("qpool")
    if on_path and any(_same_file(on_path, candidate) for candidate in (venv_qpool, wrapper)):
        return "qpool"
    if wrapper.exists():
        return "bin/qpool" if Path.cwd().resolve() == repo.resolve() else str(wrapper)
    return str(venv_qpool) if venv_qpool.exists() else f"{sys.executable} -m qpool.cli"


def _same_file(a: str | Path, b: Path) -> bool:
    try:
        return Path(a).resolve() == b.resolve() or os.path.samefile(a, b)
    except OSError:
        return False


def ready_banner(stack: str, hosts: list[tuple[str, str, str]], bridge: str, subnet: str,
                 monitoring: tuple[str, str], *, detached: bool, qpool: str = "qpool") -> list[str]:
    """What `qpool lab up` prints once the lab is ready: hosts, how to reach monitoring, how to operate and
    stop it. `detached`: the lab runs in a background process, so there is no Ctrl-C to offer. The lab's own
    fake Hetzner API token is found through the lab inventory, so no credentials are mentioned."""
    mon_name, mon_ip = monitoring
    lines = [BANNER_SEPARATOR, f"lab {stack} is up: {len(hosts)} hosts on bridge {bridge} ({subnet})"]
    lines += [f"  {name:<32} {role:<10} {ip}" for name, role, ip in hosts]
    lines += [
        f"Prometheus:   {mon_ip}:9090 on the monitoring host; from here: "
        f"{qpool} lab ssh {mon_name} -L 9090 -L 9093, then http://127.0.0.1:9090",
        f"Alertmanager: {mon_ip}:9093 (same tunnel: http://127.0.0.1:9093)",
        f"Operate it:   {qpool} status --stack {stack}   (it ends with the next safe action for each pair)",
    ]
    if detached:
        lines.append(f"Stop it:      {qpool} lab down --stack {stack}   (the lab runs in the background)")
    else:
        lines.append(f"Stop it:      Ctrl-C here, or `{qpool} lab down --stack {stack}` from another terminal")
    return lines


class LogFollower:
    """Replays what the detached lab owner writes to its log (JSON progress events and plain lines) onto this
    terminal's progress renderer, so `lab up --detach` shows the same progress as a foreground run."""

    def __init__(self, path: Path, offset: int, progress: Any) -> None:
        self.path = path
        self.offset = offset
        self.progress = progress
        self._partial = b""

    def poll(self) -> None:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                data = fh.read()
        except OSError:
            return
        self.offset += len(data)
        *lines, self._partial = (self._partial + data).split(b"\n")
        for raw in lines:
            self.replay(raw.decode(errors="replace"))

    def replay(self, line: str) -> None:
        try:
            event = json.loads(line)
        except ValueError:
            event = None
        if not isinstance(event, dict) or "event" not in event:
            self.progress.log(line)
        elif event["event"] == "update":
            self.progress.update(event.get("step", ""), event.get("message", ""), current=event.get("current"),
                                 total=event.get("total"), remaining=event.get("remaining"))
        elif event["event"] == "done":
            self.progress.done(event.get("step", ""), event.get("message", ""))
        else:
            self.progress.log(event.get("message", ""))


@lab.command()
@click.option("--stack", "-s", default="testnet", show_default=True)
@_errors
def down(stack: str) -> None:
    """Stop the lab's owner process (it tears every host down), or clean up after a crashed one."""
    _require_lab_host()
    state = _state(stack)
    pid = (state or {}).get("pid")
    if _alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 120
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        if _alive(pid):
            raise QpoolError(f"lab owner process {pid} did not stop within 120 s")
    from lab.reaper import reap

    removed = reap()
    shutil.rmtree(LAB_ROOT / stack, ignore_errors=True)
    click.echo(f"lab {stack} is down" + (f" (reaped {len(removed)} leftovers)" if removed else ""))


@lab.command(name="status")
@click.option("--stack", "-s", default="testnet", show_default=True)
@_errors
def lab_status(stack: str) -> None:
    """Hosts of the lab and whether they answer on SSH."""
    state = _state(stack)
    if not state or not _alive(state.get("pid")):
        raise QpoolError(f"lab {stack} is not up; `qpool lab up --stack {stack}`")
    from lab.net import tcp_port_open

    bridge_ok = Path(f"/sys/class/net/{json.loads(Path(state['inventory']).read_text())['extra']['lab_bridge']}"
                     ).exists()
    click.echo(f"lab {stack}: owner pid {state['pid']}, bridge {'up' if bridge_ok else 'MISSING'}")
    for name, host in state["hosts"].items():
        answering = bridge_ok and tcp_port_open(host["ip"], 22, timeout=1.0)
        click.echo(f"  {name:<32} {host['role']:<10} {host['ip']:<15} {'ssh ok' if answering else 'no answer'}")


@lab.command(context_settings={"ignore_unknown_options": True})
@click.argument("host")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.option("--stack", "-s", default="testnet", show_default=True)
@click.option("--forward", "-L", "forwards", multiple=True, type=int,
              help="Forward this local port to the same port on the host's loopback (e.g. 9090).")
@_errors
def ssh(host: str, command: tuple[str, ...], stack: str, forwards: tuple[int, ...]) -> None:
    """SSH into a lab host as the lab's operator (the admin user, full sudo; pinned host key), optionally
    forwarding ports. qpool itself uses the deploy identity (sudo: the qp-* tools only)."""
    import dataclasses

    from cloud_init.base import ADMIN_USER
    from lab.state import OPERATOR_KEY_FILE
    from qpool.inventory import resolve_inventory
    from qpool.remote import Ssh

    inv = resolve_inventory(stack, LAB_ROOT / stack / "inventory.json")
    inv = dataclasses.replace(inv, ssh_user=ADMIN_USER, ssh_key=LAB_ROOT / stack / OPERATOR_KEY_FILE)
    matches = [h for name, h in inv.hosts.items() if name == host or name.endswith("-" + host)]
    if len(matches) != 1:
        raise QpoolError(f"no single lab host matches {host!r}; hosts: {', '.join(inv.hosts)}")
    client = Ssh(inv)
    client._guard_lab_route(matches[0])
    argv = client.argv(matches[0])
    options = [opt for port in forwards for opt in ("-L", f"{port}:127.0.0.1:{port}")]
    os.execvp(argv[0], [*argv[:-1], *options, argv[-1], *command])  # noqa: S606 - OpenSSH, no shell
