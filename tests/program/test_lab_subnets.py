"""Every lab test module owns its own private subnet (10.42.<octet>.0/24).

Why: `make test` runs lab modules side by side; two labs on one subnet put two bridges with the same
on-link route on the machine, so the operator's SSH and the hosts' traffic reach whichever lab the kernel
picks. A second module on the same octet once made a healthy-lab test flaky under CI.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent
#: `OCTET = 27` or `module_lab("stack", 27, ...)`: how lab modules name their subnet.
OCTET_RE = re.compile(r'^OCTET = (\d+)$|module_lab\("[a-z0-9]+", (\d+)', re.M)


def lab_octets() -> dict[int, list[str]]:
    found: dict[int, list[str]] = defaultdict(list)
    for path in sorted(p for p in TESTS.rglob("test_*.py") if p != Path(__file__).resolve()):
        for match in OCTET_RE.finditer(path.read_text()):
            found[int(match.group(1) or match.group(2))].append(str(path.relative_to(TESTS)))
    return found


def test_each_lab_module_has_its_own_subnet() -> None:
    octets = lab_octets()
    assert len(octets) >= 10, f"the scan found too few lab modules to be looking at the right files: {octets}"
    shared = {octet: modules for octet, modules in octets.items() if len(set(modules)) > 1}
    assert shared == {}, f"lab modules sharing a subnet: {shared}"
