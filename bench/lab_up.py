"""Benchmark `qpool lab up`: cold and warm, to all hosts ready and bootstrapped (goal: warm <= 3 min).

Run as root: ``/opt/qp-venv/bin/python bench/lab_up.py`` (cold, then warm). What is timed is what
`qpool lab up` does before it prints "lab ... is up": the base image (cold: built with mmdebstrap into a
fresh, throwaway cache dir, ~770 MB, removed afterwards; warm: the shared cache under
/var/cache/quantapool-lab, built first if missing and not timed), then `lab.deploy.deploy()` of the testnet
stack: program under mocks, hosts booted, cloud-init done on every host, every recorded bootstrap step run.

Each run deploys stack ``e2ebench`` on subnet 10.42.<octet>.0/24 (default 27) under a temporary state root
and tears it down before the next, so it can run beside other labs. Figures depend on the machine and on
what else runs on it (2 shared cores here): report them with the load average this prints.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lab.deploy import LabClock, deploy, teardown
from lab.image import DEFAULT_CACHE_DIR, LAB_ROLE_PACKAGES, build_base_image
from lab.testing import config_variant

STACK = "e2ebench"
WARM_GOAL_SECONDS = 180.0
_PHASE_RE = re.compile(r"^(?P<what>.+?) \((?P<seconds>[0-9.]+)s\)")


def lab_up(image: Path, octet: int, work: Path) -> dict[str, float]:
    """One deploy to bootstrapped, torn down afterwards; returns phase times in seconds."""
    root = work / f"state-{time.monotonic_ns()}"
    root.mkdir(parents=True)
    config = config_variant(root / f"Pulumi.{STACK}.yaml", octet)
    phases: dict[str, float] = {}

    def log(line: str) -> None:
        match = _PHASE_RE.match(line)
        if match and match.group("what") in ("3 hosts booting", "cloud-init done on all hosts"):
            phases[match.group("what")] = float(match.group("seconds"))

    started = time.monotonic()
    dep = deploy(STACK, config_file=config, state_root=root, clock=LabClock(), log=log, base_image=image)
    phases["bootstrapped"] = time.monotonic() - started
    try:
        assert len(dep.hosts) == 3
    finally:
        teardown(dep)
        shutil.rmtree(root, ignore_errors=True)
    return phases


def report(label: str, image_seconds: float, phases: dict[str, float]) -> float:
    total = image_seconds + phases["bootstrapped"]
    print(f"{label}: image {image_seconds:6.1f} s | hosts booting at {phases.get('3 hosts booting', 0):5.1f} s, "
          f"cloud-init done at {phases.get('cloud-init done on all hosts', 0):5.1f} s, bootstrapped at "
          f"{phases['bootstrapped']:5.1f} s | lab up total {total:6.1f} s", flush=True)
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--octet", type=int, default=27, help="subnet 10.42.<octet>.0/24 (default 27)")
    ap.add_argument("--skip-cold", action="store_true", help="only the warm run (shared image cache)")
    ap.add_argument("--warm-runs", type=int, default=1)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/lab_up.py needs root (network namespaces, systemd-nspawn)", file=sys.stderr)
        return 2
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; cpus: {os.cpu_count()}")
    work = Path(tempfile.mkdtemp(prefix="qp-lab-up-bench-"))
    try:
        if not args.skip_cold:
            cache = work / "image-cache"  # empty: a real cold build, nothing shared with other runs
            t0 = time.monotonic()
            image = build_base_image(cache, extra_packages=LAB_ROLE_PACKAGES)
            image_seconds = time.monotonic() - t0
            report("cold", image_seconds, lab_up(image, args.octet, work))
            shutil.rmtree(cache, ignore_errors=True)
        image = build_base_image(DEFAULT_CACHE_DIR, extra_packages=LAB_ROLE_PACKAGES)  # not timed: the cache
        for i in range(args.warm_runs):
            total = report(f"warm{'' if args.warm_runs == 1 else f' #{i + 1}'}", 0.0, lab_up(image, args.octet, work))
            verdict = "meets" if total <= WARM_GOAL_SECONDS else "MISSES"
            print(f"  {verdict} the warm goal of {WARM_GOAL_SECONDS:.0f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
