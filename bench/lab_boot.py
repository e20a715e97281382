"""Benchmark the local lab: cold base-image build and N-host boot-to-ready time.

Run as root: ``/opt/qp-venv/bin/python bench/lab_boot.py --hosts 3 --cold``. ``--cold`` builds the
image into a throwaway cache dir (about 770 MB, removed afterwards) so the figure is a real cold
build; without it the shared cache is used (and built if missing). Boot-to-ready is measured from the
first boot() call to each host's ``cloud-init status --wait`` returning ``done`` over SSH.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cloud_init.base import ADMIN_USER
from lab.hosts import LabHost
from lab.image import DEFAULT_CACHE_DIR, LAB_ROLE_PACKAGES, build_base_image
from lab.net import LabNetwork
from lab.reaper import reap

USER = ADMIN_USER


def free_subnet() -> ipaddress.IPv4Network:
    out = subprocess.run(["ip", "-j", "-4", "addr", "show"], capture_output=True, check=True).stdout
    used = [ipaddress.IPv4Network(f"{a['local']}/{a['prefixlen']}", strict=False)
            for link in json.loads(out or b"[]") for a in link.get("addr_info", [])]
    for i in range(1, 250):
        net = ipaddress.IPv4Network(f"10.42.{i}.0/24")
        if not any(net.overlaps(u) for u in used):
            return net
    raise SystemExit("no free 10.42.x.0/24 subnet")


def user_data(pubkey: str) -> str:
    return (f"#cloud-config\nssh_pwauth: false\nmanage_etc_hosts: true\nusers:\n  - name: {USER}\n"
            f"    sudo: \"ALL=(ALL) NOPASSWD:ALL\"\n    ssh_authorized_keys: [\"{pubkey}\"]\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=3)
    ap.add_argument("--cold", action="store_true", help="time a cold image build in a throwaway cache dir")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="qp-lab-bench-"))
    try:
        cache = work / "image-cache" if args.cold else DEFAULT_CACHE_DIR
        t0 = time.monotonic()
        image = build_base_image(cache, extra_packages=LAB_ROLE_PACKAGES)
        print(f"image build ({'cold' if args.cold else 'cache'}): {time.monotonic() - t0:6.1f} s  {image}")

        removed = reap()
        if removed:
            print(f"reaped {len(removed)} leftovers of crashed runs")
        key = work / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        subnet = free_subnet()
        net = LabNetwork("qpbench", str(subnet), str(subnet.network_address + 254), state_dir=work / "net")
        net.create()
        hosts = [LabHost(f"bench{i}", str(subnet.network_address + 10 + i), net, image, work / f"h{i}")
                 for i in range(1, args.hosts + 1)]
        try:
            ud = user_data(key.with_suffix(".pub").read_text().strip())
            t0 = time.monotonic()
            for h in hosts:
                h.boot(ud)
            for h in hosts:
                h.wait_ready(USER, key, timeout=300)
                print(f"  {h.name} ready at {time.monotonic() - t0:6.1f} s")
            print(f"{args.hosts} hosts boot-to-ready: {time.monotonic() - t0:6.1f} s")
            h = hosts[0]
            h.power_off()
            t0 = time.monotonic()
            h.power_on()
            h.wait_ready(USER, key, timeout=300)
            print(f"power-off/on of one host to ready: {time.monotonic() - t0:6.1f} s")
        finally:
            for h in hosts:
                h.destroy()
            net.destroy()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
