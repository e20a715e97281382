"""Finding a stack's hosts from an inventory file or from Hetzner labels (the fake API on loopback)."""

from __future__ import annotations

import json

import pytest

from lab.fake_hcloud import FakeHetzner
from qpool import inventory
from qpool.errors import QpoolError
from qpool.inventory import load_inventory_file, resolve_inventory


def test_inventory_file_roundtrip(tmp_path):
    doc = {"stack": "testnet", "ssh": {"user": "qpadmin", "key": "key", "known_hosts": "kh"},
           "hosts": {"a": {"role": "primary", "pair": "p1", "address": "10.0.0.1", "server_id": 7}}}
    path = tmp_path / "inv.json"
    path.write_text(json.dumps(doc))
    inv = load_inventory_file(path)
    assert inv.ssh_key == tmp_path / "key" and inv.hosts["a"].server_id == 7
    assert [h.name for h in inv.pair_hosts("p1")] == ["a"]
    with pytest.raises(QpoolError, match="no pair 'p9'"):
        inv.pair_hosts("p9")


def test_inventory_for_another_stack_refused(tmp_path):
    path = tmp_path / "inv.json"
    path.write_text(json.dumps({"stack": "mainnet", "ssh": {"user": "u", "key": "k", "known_hosts": "kh"},
                                "hosts": {}}))
    with pytest.raises(QpoolError, match="is for stack mainnet"):
        resolve_inventory("testnet", path)


def test_inventory_from_hetzner_labels(tmp_path, monkeypatch):
    with FakeHetzner("tok") as api:
        endpoint = api.endpoint
        base = {"app": "quantapool", "env": "testnet"}
        api.add_server("qp-testnet-p1-primary", {**base, "role": "primary", "pair": "p1"},
                       "198.51.100.11", "10.42.1.11")
        api.add_server("qp-testnet-p1-backup", {**base, "role": "backup", "pair": "p1"},
                       "198.51.100.12", "10.42.1.12")
        api.add_server("qp-mainnet-p1-primary", {"app": "quantapool", "env": "mainnet", "role": "primary",
                                                 "pair": "p1"}, "198.51.100.13", "10.43.1.11")
        monkeypatch.setenv("HCLOUD_FENCING_TOKEN", "tok")
        monkeypatch.setenv("QPOOL_HCLOUD_ENDPOINT", endpoint)
        monkeypatch.setenv("QPOOL_SSH_KEY", str(tmp_path / "key"))
        monkeypatch.setenv("QPOOL_KNOWN_HOSTS", str(tmp_path / "known_hosts"))
        monkeypatch.delenv("QPOOL_INVENTORY", raising=False)
        monkeypatch.setenv("PATH", str(tmp_path))  # no Pulumi CLI: the Hetzner path is used
        inv = resolve_inventory("testnet")
    assert sorted(inv.hosts) == ["qp-testnet-p1-backup", "qp-testnet-p1-primary"]
    primary = inv.hosts["qp-testnet-p1-primary"]
    assert (primary.address, primary.private_ip, primary.pair) == ("198.51.100.11", "10.42.1.11", "p1")


def test_no_source_gives_clear_error(monkeypatch, tmp_path):
    for var in ("QPOOL_INVENTORY", "HCLOUD_FENCING_TOKEN", "QPOOL_SSH_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(QpoolError, match="no inventory for stack nosuchstack"):
        resolve_inventory("nosuchstack")


def _lab_inventory(root, stack: str) -> None:
    """What `qpool lab up` leaves behind for a running lab: <root>/<stack>/inventory.json."""
    (root / stack).mkdir(parents=True)
    (root / stack / "inventory.json").write_text(json.dumps({
        "stack": stack, "ssh": {"user": "qpadmin", "key": "deploy_ed25519", "known_hosts": "known_hosts"},
        "hosts": {"lab-host": {"role": "primary", "pair": "p1", "address": "10.42.1.11"}}}))


def test_tests_have_their_own_empty_lab_root():
    """The root conftest points QPOOL_LAB_ROOT at the test's own directory, never the machine's."""
    root = inventory.lab_root()
    assert root != inventory.DEFAULT_LAB_ROOT and root.is_dir() and not any(root.iterdir())


def test_lab_inventory_found_under_the_injected_root(tmp_path, monkeypatch):
    own = tmp_path / "lab"
    _lab_inventory(own, "testnet")
    monkeypatch.setenv(inventory.LAB_ROOT_ENV, str(own))
    monkeypatch.delenv("QPOOL_INVENTORY", raising=False)
    assert list(resolve_inventory("testnet").hosts) == ["lab-host"]


def test_a_lab_at_the_default_path_does_not_change_the_outcome(tmp_path, monkeypatch):
    """The `make test` failure of issue 15: a testnet lab running on the machine made resolve_inventory prefer
    it. With a lab at the default path (simulated) the Hetzner-labels test above still gets Hetzner's hosts."""
    machine = tmp_path / "var-lib-quantapool-lab"
    _lab_inventory(machine, "testnet")
    monkeypatch.setattr(inventory, "DEFAULT_LAB_ROOT", machine)
    # without the injected root that lab wins, which is what broke the test before
    monkeypatch.delenv(inventory.LAB_ROOT_ENV)
    monkeypatch.delenv("QPOOL_INVENTORY", raising=False)
    assert list(resolve_inventory("testnet").hosts) == ["lab-host"]
    # with the test's own root (what the root conftest sets for every test) it is invisible
    monkeypatch.setenv(inventory.LAB_ROOT_ENV, str(tmp_path / "own"))
    test_inventory_from_hetzner_labels(tmp_path, monkeypatch)
