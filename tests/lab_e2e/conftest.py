"""Shared helpers for the lab's end-to-end tests (issue 5): one whole-stack lab per test module.

Why module-scoped labs: a lab of the testnet stack takes ~35-60 s to deploy, so each module deploys one
(`running_lab`, which always tears it down) and its tests only observe it, or restore what they change.
Each module uses its own stack name (`e2e*`), its own subnet octet (21-29, reserved for these tests) and a
temporary state root, so these tests run beside other labs on the same machine.

Skipped, loudly, when the machine cannot run labs (not root, tools missing); CI runs them as root.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.deploy import LabClock, LabDeployment
from lab.session import LabSession
from lab.testing import lab_unavailable_reason, running_lab

UNAVAILABLE = lab_unavailable_reason()

#: Applied by every module here: lab-marked and skipped with the reason when labs cannot run.
LAB_MARKS = [pytest.mark.lab, pytest.mark.skipif(UNAVAILABLE is not None, reason=UNAVAILABLE or "")]

Lab = tuple[LabDeployment, LabSession]


def module_lab(stack: str, octet: int, state_root: Path, clock: LabClock | None = None) -> Iterator[Lab]:
    """Deploy one lab for a module (for use inside a module-scoped fixture); torn down on exit."""
    assert stack.startswith("e2e") and 21 <= octet <= 29, "e2e labs use stacks e2e* and octets 21-29"
    log: list[str] = []
    with running_lab(stack, octet, state_root, clock=clock, log=log.append) as lab:
        yield lab


@pytest.fixture(scope="session")
def shared_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """One lab for the modules that only observe it (test_bootstrap, test_ports): a lab deploy is the slowest
    part of these tests, and those modules leave the lab as they found it. Under pytest-xdist every test that
    uses this fixture runs on one worker (tests/conftest.py groups them), so it is deployed once."""
    yield from module_lab("e2eshared", 21, tmp_path_factory.mktemp("e2eshared"))


def role_hosts(dep: LabDeployment, role: str) -> list[str]:
    """Names of the hosts with this role (primary, backup, monitoring), in config order."""
    return [spec.name for spec in dep.config.hosts() if spec.role == role]


def one_host(dep: LabDeployment, role: str) -> str:
    names = role_hosts(dep, role)
    assert len(names) == 1, f"expected one {role} host, got {names}"
    return names[0]


def key_hosts(dep: LabDeployment) -> list[str]:
    return [spec.name for spec in dep.config.hosts() if spec.is_key_host]


def sh(dep: LabDeployment, host: str, cmd: str, *, timeout: float = 60, input: bytes | None = None) -> Any:
    """Run `cmd` on a lab host over SSH as the admin user (pinned host key); returns CompletedProcess."""
    return dep.ssh(host, cmd, timeout=timeout, input=input)


def out(dep: LabDeployment, host: str, cmd: str, *, timeout: float = 60) -> str:
    """stdout of `cmd` on a host, failing the test (with stderr) when the command fails."""
    proc = sh(dep, host, cmd, timeout=timeout)
    assert proc.returncode == 0, (f"{host}: {cmd!r} exit {proc.returncode}: "
                                  f"{proc.stderr.decode(errors='replace').strip()[-500:]}")
    return proc.stdout.decode(errors="replace")


def ctl_status(dep: LabDeployment, host: str) -> dict[str, Any]:
    """The host's own view of its validator (`qp-validator-ctl status`), the evidence qpool acts on."""
    return json.loads(out(dep, host, "sudo qp-validator-ctl status"))


def tcp_from_host(dep: LabDeployment, host: str, ip: str, port: int, timeout: float = 2.0) -> bool:
    """Whether a TCP handshake from `host` to ip:port completes (bash /dev/tcp, no extra tools)."""
    probe = f"timeout {timeout:g} bash -c {shlex.quote(f'exec 3<>/dev/tcp/{ip}/{port}')}"
    proc = sh(dep, host, probe, timeout=timeout + 30)
    assert proc.returncode != 255, f"{host}: ssh itself failed: {proc.stderr.decode(errors='replace')[-300:]}"
    return proc.returncode == 0


def tcp_many_from_host(dep: LabDeployment, host: str, targets: list[tuple[str, int]],
                       timeout: float = 2.0) -> dict[tuple[str, int], bool]:
    """`tcp_from_host` for many targets at once: one SSH session, probes in parallel (a silently dropped
    port costs the whole timeout, so serial probes would dominate the suite's time)."""
    lines = [f"( timeout {timeout:g} bash -c {shlex.quote(f'exec 3<>/dev/tcp/{ip}/{port}')} 2>/dev/null; "
             f"echo \"{ip} {port} $?\" ) &" for ip, port in targets]
    proc = sh(dep, host, "\n".join([*lines, "wait"]), timeout=timeout + 60)
    assert proc.returncode != 255, f"{host}: ssh itself failed: {proc.stderr.decode(errors='replace')[-300:]}"
    result = {}
    for line in proc.stdout.decode().splitlines():
        ip, port, rc = line.split()
        result[(ip, int(port))] = rc == "0"
    assert set(result) == set(targets), f"{host}: probes missing: {set(targets) - set(result)}"
    return result


def wait_for(what: str, predicate: Callable[[], Any], timeout: float = 120.0, interval: float = 1.0) -> Any:
    """Poll until `predicate()` is truthy and return its value; fail naming `what` on timeout.

    A bound on waiting, not a timing assertion: the tests assert states, never durations.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except AssertionError as exc:  # a helper's failed command counts as "not yet"
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:g}s waiting for {what} (last: {last!r})")
