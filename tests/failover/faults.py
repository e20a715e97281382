"""Faults the lab hosts do not offer themselves: a validator that hangs but keeps its process alive.

Why ptrace and not SIGSTOP: systemd follows its SIGTERM with a SIGCONT, so a SIGSTOPped validator wakes up
and exits gracefully the moment it is stopped; that is not a hang. A ptrace-stopped main thread is not
woken by SIGCONT, while the process's other threads (its metrics server) keep answering, exactly like a
validator whose duty loop is stuck: SIGTERM is never acted on, and only SIGKILL ends it.
"""

from __future__ import annotations

import ctypes
import os
import threading
from pathlib import Path

from lab.hosts import LabHost

PTRACE_ATTACH = 16
WALL = 0x40000000  # __WALL: wait for a traced thread that is not our child


def operator_pid(host: LabHost, guest_pid: int) -> int:
    """The operator-side PID of a process a lab host sees as `guest_pid` (same pid namespace as its init)."""
    leader = host.leader_pid()
    if leader is None:
        raise AssertionError(f"{host.name} is not running")
    ns = os.readlink(f"/proc/{leader}/ns/pid")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(entry / "ns/pid") != ns:
                continue
            for line in (entry / "status").read_text().splitlines():
                if line.startswith("NSpid:") and int(line.split()[-1]) == guest_pid:
                    return int(entry.name)
        except (OSError, ValueError):
            continue
    raise AssertionError(f"no process {guest_pid} in {host.name}'s pid namespace")


class Hang:
    """ptrace-attach the validator's main thread and never let it run again (until SIGKILL ends it).

    The tracer is a thread of the test process; it reaps the traced thread when it dies, so systemd (the
    real parent) learns of the exit and the unit can go inactive.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.error: int | None = None
        self.died = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._trace, name=f"hang-{pid}", daemon=True)
        self._thread.start()
        if not self._ready.wait(10) or self.error is not None:
            raise AssertionError(f"cannot ptrace-stop pid {pid}: errno {self.error}")

    def _trace(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
        libc.ptrace.restype = ctypes.c_long
        if libc.ptrace(PTRACE_ATTACH, self.pid, None, None) != 0:
            self.error = ctypes.get_errno()
            self._ready.set()
            return
        self._ready.set()
        while True:
            try:
                _pid, status = os.waitpid(self.pid, WALL)
            except ChildProcessError:
                break
            if os.WIFEXITED(status) or os.WIFSIGNALED(status):
                break
            # A stop (the attach's SIGSTOP, or any later signal): never continue it.
        self.died.set()
