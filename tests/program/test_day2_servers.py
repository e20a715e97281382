"""Issue 11 items 5 and 6: a resize never power-cycles a pair's active host; operator SshKey names come from
the keys themselves, so rotating one key renames no other."""

from __future__ import annotations

import base64

import pytest

from components.stack import operator_key_slug
from qpool.review import deferred_changes, format_plan, plan_document

SERVER = "hcloud:index/server:Server"
SSHKEY = "hcloud:index/sshKey:SshKey"


def _key(n: int, comment: str) -> str:
    blob = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20" + bytes([n]) * 32
    return f"ssh-ed25519 {base64.b64encode(blob).decode()} {comment}"


def _ignored(run, host: str) -> list[str]:  # type: ignore[no-untyped-def]
    server = next(s for s in run.of_type(SERVER) if s.display_inputs()["name"] == host)
    return server.options["ignoreChanges"]


@pytest.mark.parametrize("active", ["primary", "backup"])
def test_server_type_is_deferred_only_on_the_active_host(run_stack, testnet_raw, active: str) -> None:
    pairs = [{**p, "active": active} for p in testnet_raw["validatorPairs"]]
    run = run_stack({**testnet_raw, "validatorPairs": pairs})
    standby = "backup" if active == "primary" else "primary"
    for pair in pairs:
        assert "serverType" in _ignored(run, f"qp-testnet-{pair['name']}-{active}")
        assert "serverType" not in _ignored(run, f"qp-testnet-{pair['name']}-{standby}")
    assert "serverType" not in _ignored(run, "qp-testnet-monitoring")
    deferred = deferred_changes(run)
    assert [d["host"] for d in deferred] == [f"qp-testnet-{p['name']}-{active}" for p in pairs]
    assert "failover" in deferred[0]["reason"]
    assert plan_document(run)["deferred"] == deferred
    assert f"qp-testnet-{pairs[0]['name']}-{active}: serverType" in format_plan(run)


def _sshkeys(run) -> dict[str, tuple[str, str]]:  # type: ignore[no-untyped-def]
    """public key -> (logical name, Hetzner name) of the operator keys."""
    out = {}
    for k in run.of_type(SSHKEY):
        inputs = k.display_inputs()
        if k.name != "qp-deploy-sshkey":
            out[inputs["publicKey"]] = (k.name, inputs["name"])
    return out


def test_rotating_one_operator_key_renames_no_other(run_stack, testnet_raw) -> None:
    a, b, c, b2 = _key(1, "alice"), _key(2, "bob"), _key(3, "carol"), _key(4, "bob-rotated")
    before = _sshkeys(run_stack({**testnet_raw, "operatorSshKeys": [a, b, c]}))
    after = _sshkeys(run_stack({**testnet_raw, "operatorSshKeys": [a, b2, c]}))
    assert after[a] == before[a] and after[c] == before[c]
    assert after[b2] != before[b] and after[b2][1] not in {n for _, n in before.values()}
    # removing the first key changes no other name either (positions shift, names do not)
    shifted = _sshkeys(run_stack({**testnet_raw, "operatorSshKeys": [b, c]}))
    assert shifted[b] == before[b] and shifted[c] == before[c]
    assert before[a] == (f"qp-operator-{operator_key_slug(a)}", f"qp-testnet-operator-{operator_key_slug(a)}")


def test_duplicate_operator_key_is_refused_before_any_resource(run_stack, testnet_raw) -> None:
    a = _key(1, "alice")
    with pytest.raises(Exception, match="nothing was changed"):  # the config check names the duplicate
        run_stack({**testnet_raw, "operatorSshKeys": [a, _key(1, "alice-again")]})
