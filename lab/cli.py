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

import click

from qpool.errors import QpoolError

LAB_ROOT = Path("/var/lib/quantapool-lab")


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
@_errors
def up(stack: str, slot_seconds: float, slots_per_epoch: int, detach: bool, config_file: Path | None) -> None:
    """Boot every host of the stack locally, run the bootstrap, keep the lab up until Ctrl-C / `lab down`."""
    _require_lab_host()
    state = _state(stack)
    if state and _alive(state.get("pid")):
        raise QpoolError(f"lab {stack} is already up (pid {state['pid']}); `qpool lab down --stack {stack}` first")
    if detach:
        log = Path(f"/var/log/quantapool-lab-{stack}.log")
        with open(log, "ab") as fh:
            proc = subprocess.Popen(
                [sys.executable, "-m", "qpool_cli.main", "lab", "up", "--stack", stack, "--slot-seconds",
                 str(slot_seconds), "--slots-per-epoch", str(slots_per_epoch),
                 *(["--config-file", str(config_file.resolve())] if config_file else [])],
                stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 1800
        while time.monotonic() < deadline:
            state = _state(stack)
            if state and state.get("pid") == proc.pid and state.get("ready"):
                click.echo(log.read_text().split("----\n")[-1])
                return
            if proc.poll() is not None:
                raise QpoolError(f"lab up failed (exit {proc.returncode}); see {log}")
            time.sleep(2)
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
    dep = deploy(stack, config_file=config_file, state_root=LAB_ROOT, log=click.echo,
                 clock=LabClock(slot_seconds=slot_seconds, slots_per_epoch=slots_per_epoch))
    session = LabSession(dep).start()
    stop = {"now": False}

    def handle(_signum: int, _frame: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    state_path = dep.state_dir / "lab.json"
    doc = json.loads(state_path.read_text())
    doc.update({"pid": os.getpid(), "ready": True, "inventory": str(session.inventory_path)})
    state_path.write_text(json.dumps(doc, indent=2) + "\n")
    mon = dep.config.monitoring_host()
    click.echo("----")
    click.echo(f"lab {stack} is up: {len(dep.hosts)} hosts on bridge {dep.network.bridge} ({dep.network.subnet})")
    for spec in dep.config.hosts():
        click.echo(f"  {spec.name:<32} {spec.role:<10} {spec.private_ip}")
    click.echo(f"Prometheus:   {mon.private_ip}:9090 on the monitoring host; from here: "
               f"qpool lab ssh {mon.name} -L 9090 -L 9093, then http://127.0.0.1:9090")
    click.echo(f"Alertmanager: {mon.private_ip}:9093 (same tunnel: http://127.0.0.1:9093)")
    click.echo(f"Operate it:   export HCLOUD_TOKEN=$(cat {dep.state_dir / 'hcloud_token'}); "
               f"qpool status --stack {stack}; qpool activate --stack {stack} --pair <pair> --first-start")
    click.echo("Stop it:      Ctrl-C here, or `qpool lab down --stack " + stack + "`")
    try:
        while not stop["now"]:
            time.sleep(0.5)
    finally:
        click.echo("lab: tearing down")
        session.close(destroy=True)


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
    """SSH into a lab host as the admin user (pinned host key), optionally forwarding ports."""
    from qpool.inventory import resolve_inventory
    from qpool.remote import Ssh

    inv = resolve_inventory(stack, LAB_ROOT / stack / "inventory.json")
    matches = [h for name, h in inv.hosts.items() if name == host or name.endswith("-" + host)]
    if len(matches) != 1:
        raise QpoolError(f"no single lab host matches {host!r}; hosts: {', '.join(inv.hosts)}")
    client = Ssh(inv)
    client._guard_lab_route(matches[0])
    argv = client.argv(matches[0])
    options = [opt for port in forwards for opt in ("-L", f"{port}:127.0.0.1:{port}")]
    os.execvp(argv[0], [*argv[:-1], *options, argv[-1], *command])  # noqa: S606 - OpenSSH, no shell
