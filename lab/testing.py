"""Helpers for tests and benchmarks that need a whole lab: isolated stacks, subnets and state roots.

Several labs can run at once (different test modules, a benchmark): each gets its own stack name, its own
/24 inside 10.42.0.0/16 and its own state root, so kernel objects, addresses and files never collide.
"""

from __future__ import annotations

import contextlib
import copy
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import yaml

from lab.deploy import LabClock, LabDeployment, deploy
from lab.session import LabSession
from qpool.inventory import load_inventory_file
from qpool.operations import Context

REPO = Path(__file__).resolve().parent.parent


def lab_unavailable_reason() -> str | None:
    """Why lab tests cannot run here (None when they can). CI runs as root, so there they always run."""
    if os.geteuid() != 0:
        return "LAB TESTS SKIPPED: they need root (network namespaces, systemd-nspawn)"
    for tool in ("systemd-nspawn", "mmdebstrap", "nft", "ssh"):
        if shutil.which(tool) is None:
            return f"LAB TESTS SKIPPED: {tool} is missing (make system-deps)"
    return None


def config_variant(dest: Path, octet: int, *, base_stack: str = "testnet", mutate=None) -> Path:  # type: ignore[no-untyped-def]
    """A copy of a repo stack file on subnet 10.42.<octet>.0/24 (hosts .11, .12, ..., monitoring .20)."""
    doc = yaml.safe_load((REPO / f"Pulumi.{base_stack}.yaml").read_text())
    config = copy.deepcopy(doc["config"])
    config["quantapool:network"]["subnet"] = f"10.42.{octet}.0/24"
    for i, pair in enumerate(config["quantapool:validatorPairs"]):
        pair["primary"]["privateIp"] = f"10.42.{octet}.{11 + 2 * i}"
        pair["backup"]["privateIp"] = f"10.42.{octet}.{12 + 2 * i}"
    config["quantapool:monitoring"]["privateIp"] = f"10.42.{octet}.{200}"
    if mutate is not None:
        mutate(config)
    doc["config"] = config
    dest.write_text(yaml.safe_dump(doc, sort_keys=False))
    return dest


@contextlib.contextmanager
def running_lab(stack: str, octet: int, state_root: Path, *, clock: LabClock | None = None,
                log=print, base_stack: str = "testnet", mutate=None) -> Iterator[tuple[LabDeployment, LabSession]]:  # type: ignore[no-untyped-def]
    """Deploy a lab, start its session (fake Hetzner API, inventory), and always tear it down. `mutate`: edits
    the stack config before the deploy (config_variant), e.g. a second pair from the start."""
    state_root.mkdir(parents=True, exist_ok=True)
    config = config_variant(state_root / f"Pulumi.{stack}.yaml", octet, base_stack=base_stack, mutate=mutate)
    dep = deploy(stack, config_file=config, state_root=state_root, clock=clock or LabClock(), log=log)
    session = LabSession(dep)
    try:
        session.start()
        yield dep, session
    finally:
        session.close(destroy=True)


def operator_context(session: LabSession, **kwargs) -> Context:  # type: ignore[no-untyped-def]
    """A qpool Context on the lab, as the CLI builds it (fake Hetzner API client included)."""
    from qpool.hetzner import make_client

    inv = load_inventory_file(session.inventory_path)
    client = make_client(token=session.token, endpoint=inv.hcloud_endpoint)
    kwargs.setdefault("report", lambda _msg: None)
    return Context(inventory=inv, config_file=inv.config_file, hcloud=client,  # type: ignore[arg-type]
                   journal_dir=Path(inv.extra["journal_dir"]), **kwargs)
