"""The pool contracts' function table (lab/standins/pool_abi.py) and the exporter's reads against it."""

from __future__ import annotations

import json
import urllib.request

import pytest
from eth_hash.auto import keccak

from exporter.collector import Exporter
from exporter.rpc import RpcRevertError
from exporter.views import VIEWS
from lab.standins import pool_abi
from tests.exporter.conftest import ADDR, FakeNode, sel


@pytest.mark.parametrize("contract", sorted(pool_abi.FUNCTIONS))
def test_selectors_are_keccak_of_the_signatures(contract):
    rows = pool_abi.FUNCTIONS[contract]
    for selector_hex, signature, _outputs in rows:
        assert keccak(signature.encode())[:4].hex() == selector_hex, signature
    assert len({row[0] for row in rows}) == len(rows), "a selector twice"


def test_every_exporter_view_is_a_real_function_with_the_same_outputs():
    for view in VIEWS:
        table = pool_abi.selectors(view.contract)
        assert view.selector in table, f"{view.contract} has no {view.function}()"
        signature, outputs = table[view.selector]
        assert signature == f"{view.function}()"
        assert list(outputs) == view.abi_types, signature


def test_the_pool_has_no_total_pooled_or_total_shares():
    # The bug of issue #14: only the IstQRL interface in DepositPool-v2.sol declares them.
    pool = pool_abi.selectors("deposit_pool")
    stqrl = pool_abi.selectors("stqrl")
    for signature in ("totalPooledQRL()", "totalShares()"):
        assert sel(signature) not in pool
        assert sel(signature) in stqrl


def test_fake_contracts_answer_exactly_the_real_functions():
    node = FakeNode(namespace="qrl", prefix="Q")
    for key, address in ADDR.items():
        assert node.functions[address] == {s: sig for s, (sig, _o) in pool_abi.selectors(key).items()}
    with pytest.raises(AssertionError, match="has no totalPooledQRL"):
        node.set_view("deposit_pool", "totalPooledQRL()", ["uint256"], [1])


def test_a_missing_function_reverts_like_go_zond(node_server, node, profile):
    ns = node.namespace
    body = {"jsonrpc": "2.0", "id": 7, "method": f"{ns}_call",
            "params": [{"to": node.text(ADDR["deposit_pool"]), "data": "0x" + sel("totalPooledQRL()").hex()},
                       "latest"]}
    req = urllib.request.Request(node_server.url, json.dumps(body).encode(), {"Content-Type": "application/json"})  # noqa: S310
    with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310 - loopback fake
        reply = json.loads(resp.read())
    assert reply["error"] == {"code": -32000, "message": "execution reverted"}


@pytest.mark.parametrize("fault", ["revert", "error"])
def test_the_rpc_client_classifies_reverts(make_exporter, node, pool_values, fault):
    exporter: Exporter = make_exporter()
    node.fault_call("stqrl", "paused()", fault)
    with pytest.raises(RpcRevertError, match="execution reverted"):
        exporter.rpc.call(node.text(ADDR["stqrl"]), sel("paused()"), "latest")


def test_event_topics_match_the_exporters_events():
    from exporter.views import EVENTS

    rows = [(c, t, sig) for c, t, sig in pool_abi.EVENT_TOPICS]
    assert rows == [(e.contract, e.topic0.hex(), e.signature) for e in EVENTS]
    for _contract, topic_hex, signature in rows:
        assert keccak(signature.encode()).hex() == topic_hex, signature
