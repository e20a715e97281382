"""Selectors and topics against values fixed by the Solidity ABI, and the event table's shape."""

from __future__ import annotations

import pytest

from exporter.abi import parse_event, selector, topic
from exporter.views import EVENTS, VIEWS, Kind, scale


@pytest.mark.parametrize(("signature", "expected"), [
    ("paused()", "5c975abb"),
    ("owner()", "8da5cb5b"),
    ("totalSupply()", "18160ddd"),
])
def test_well_known_selectors(signature, expected):
    assert selector(signature).hex() == expected


@pytest.mark.parametrize(("signature", "expected"), [
    ("Paused(address)", "62e78cea01bee320cd4e420270b5ea74000d11b0c9f74754ebdbfc544b05a258"),
    ("Unpaused(address)", "5db9ee0a495bf2e6ff9c91a7834c1ba4fdd244a5e8aa4e537bd38aeae4b073aa"),
])
def test_well_known_topics(signature, expected):
    assert topic(signature).hex() == expected


def test_indexed_and_names_do_not_enter_the_signature():
    declaration = "WithdrawalCancelled(address indexed user, uint256 indexed requestId, uint256 shares)"
    spec = parse_event("deposit_pool", declaration)
    assert spec.signature == "WithdrawalCancelled(address,uint256,uint256)"
    assert spec.indexed == (True, True, False)
    assert spec.topic_count == 3
    bare = parse_event("validator_manager", "ValidatorExited(uint256 indexed, uint256)")
    assert (bare.signature, bare.indexed) == ("ValidatorExited(uint256,uint256)", (True, False))


@pytest.mark.parametrize("bad", ["NoParens", "E(uint256[] xs)", "E(uint256 a b c d)", "E(uint256 notindexed name)"])
def test_unsupported_declarations_are_rejected(bad):
    with pytest.raises(ValueError, match=r"E\(|NoParens"):
        parse_event("deposit_pool", bad)


def test_event_table_matches_pool_contracts_md():
    signatures = {(e.contract, e.signature, e.topic_count) for e in EVENTS}
    assert len(signatures) == len(EVENTS) == 18
    assert ("deposit_pool", "Deposited(address,uint256,uint256)", 2) in signatures
    assert ("deposit_pool", "ValidatorFunded(uint256,bytes,uint256)", 2) in signatures
    assert ("deposit_pool", "RewardsSynced(uint256,uint256,uint256)", 1) in signatures
    assert ("deposit_pool", "EmergencyWithdrawal(address,uint256)", 2) in signatures
    assert ("validator_manager", "ValidatorRegistered(uint256,bytes,uint8)", 2) in signatures
    assert ("validator_manager", "ValidatorSlashed(uint256,uint256)", 2) in signatures


def test_views_are_unique_and_zero_argument():
    keys = [(v.contract, v.function) for v in VIEWS]
    assert len(keys) == len(set(keys))
    assert len({(v.contract, v.selector) for v in VIEWS}) == len(VIEWS)


@pytest.mark.parametrize(("kind", "raw", "expected"), [
    (Kind.QRL, 40_000 * 10**18, 40_000.0),
    (Kind.QRL, 1, 1e-18),
    (Kind.RATIO, 10**18, 1.0),
    (Kind.COUNT, 7, 7.0),
    (Kind.BOOL, True, 1.0),
    (Kind.BOOL, False, 0.0),
])
def test_scaling(kind, raw, expected):
    assert scale(kind, raw) == expected


def test_scaling_rejects_non_integers():
    with pytest.raises(TypeError):
        scale(Kind.QRL, "1")
