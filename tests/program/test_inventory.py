"""Finding a stack's hosts from an inventory file or from Hetzner labels (the fake API on loopback)."""

from __future__ import annotations

import json

import pytest

from lab.fake_hcloud import FakeHetzner
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
        monkeypatch.setenv("HCLOUD_TOKEN", "tok")
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
    for var in ("QPOOL_INVENTORY", "HCLOUD_TOKEN", "QPOOL_SSH_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(QpoolError, match="no inventory for stack nosuchstack"):
        resolve_inventory("nosuchstack")
