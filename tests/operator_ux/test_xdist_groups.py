"""The test loop: how `make test` splits the suite over pytest-xdist workers (tests/xdist_groups.py)."""

from __future__ import annotations

from pathlib import Path

from tests.xdist_groups import SHARED_LAB_GROUP, scope_of


def test_xdist_scopes_keep_modules_together_and_share_the_read_only_lab() -> None:
    """`make test` (-n N --dist loadgroup): one work unit per module; the shared-lab modules form one unit."""
    root = Path(__file__).resolve().parents[2]
    assert scope_of("tests/lab_e2e/test_bootstrap.py::test_alertmanager_ready", root) == SHARED_LAB_GROUP
    assert scope_of("tests/lab_e2e/test_ports.py::test_ssh_open_to_the_whole_private_subnet_by_design",
                    root) == SHARED_LAB_GROUP
    assert scope_of("tests/lab_e2e/test_reboot.py::test_x", root) == "tests/lab_e2e/test_reboot.py"
    assert scope_of("tests/keys/test_seal.py::test_a[1]", root) == "tests/keys/test_seal.py"
