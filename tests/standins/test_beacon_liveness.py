"""The beacon stand-in's validator index lookup and liveness, as qrysm serves them (issue 12's chain-side check).

qrysm (theQRL/qrysm): `GET /zond/v1/beacon/states/{state_id}/validators?id=..` (beacon-chain/rpc/eth/beacon/
handlers_validator.go GetValidators, decodeIds) and `POST /zond/v1/validator/liveness/{epoch}` with a JSON list
of decimal index strings (beacon-chain/rpc/eth/validator/handlers.go GetLiveness); errors are
`{"message": .., "code": ..}` (network/http HandleError). The stand-in answers liveness from the lab gossip
directory (lab/standins/gossip.py): votes of ANY validator, also one attached to another beacon node.
"""

from __future__ import annotations

import importlib.util
import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from lab.standins import chain, gossip
from lab.standins.harness import (
    SLOT_SECONDS,
    SLOTS_PER_EPOCH,
    Runner,
    Stack,
    free_port,
    http_get,
    start_stack,
    validator_args,
    wait_until,
)
from lab.standins.keystore_fixture import make_keystore

CTL_FILE = Path(__file__).resolve().parents[2] / "cloud_init" / "files" / "qp_validator_ctl.py"
OUTSIDER = "0x" + make_keystore("x", index=0)["pubkey"]


def _post(url: str, body: bytes | None, method: str = "POST") -> tuple[int, Any]:
    assert url.startswith("http://127.0.0.1:")
    req = urllib.request.Request(url, data=body, method=method,  # noqa: S310 - loopback only
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=3) as resp:  # noqa: S310 - loopback only
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw)
        except ValueError:
            return exc.code, raw


def _clock() -> chain.Clock:
    return chain.Clock(chain.DEFAULT_GENESIS_TIME, float(SLOT_SECONDS), int(SLOTS_PER_EPOCH))


def _head_epoch(stack: Stack) -> int:
    head = int(json.loads(http_get(stack.rest_url + "/zond/v1/node/syncing")[1])["data"]["head_slot"])
    return head // int(SLOTS_PER_EPOCH)


@pytest.fixture
def gossip_dir(tmp_path: Path) -> Path:
    path = tmp_path / "gossip"
    path.mkdir()
    return path


@pytest.fixture
def gstack(runner: Runner, tmp_path: Path, gossip_dir: Path) -> Stack:
    (tmp_path / "a").mkdir()
    return start_stack(runner, tmp_path / "a", beacon_env={gossip.ENV_GOSSIP_DIR: str(gossip_dir)})


def _validators(stack: Stack, *ids: str, state: str = "head") -> tuple[int, Any]:
    query = urllib.parse.urlencode([("id", i) for i in ids])
    status, body = http_get(f"{stack.rest_url}/zond/v1/beacon/states/{state}/validators?{query}")
    return status, json.loads(body)


def _liveness(stack: Stack, epoch: int | str, body: Any) -> tuple[int, Any]:
    raw = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    return _post(f"{stack.rest_url}/zond/v1/validator/liveness/{epoch}", raw)


def test_validator_lookup_by_pubkey(gstack: Stack) -> None:
    status, doc = _validators(gstack, OUTSIDER)
    assert status == 200 and set(doc) == {"execution_optimistic", "finalized", "data"}
    (entry,) = doc["data"]
    assert entry["index"] == str(gossip.validator_index(OUTSIDER)) and entry["status"] == "active_ongoing"
    assert entry["validator"]["pubkey"] == OUTSIDER and entry["validator"]["slashed"] is False
    assert _validators(gstack, "12")[1]["data"] == [], "an index whose key never voted is unknown: ignored"


@pytest.mark.parametrize(("ids", "message"), [
    (["0xabcd"], "Pubkey length is 2 instead of 2592"),
    (["abc"], "Invalid validator index abc"),
    (["0xzz"], "Invalid validator index 0xzz"),
])
def test_validator_lookup_bad_ids_are_400(gstack: Stack, ids: list[str], message: str) -> None:
    assert _validators(gstack, *ids) == (400, {"message": message, "code": 400})


def test_validator_lookup_bad_state_is_400(gstack: Stack) -> None:
    status, doc = _validators(gstack, OUTSIDER, state="nonsense")
    assert status == 400 and doc["message"].startswith("Invalid state ID")


@pytest.mark.parametrize(("epoch", "body", "message"), [
    ("x", ["1"], 'Epoch is invalid: strconv.ParseUint: parsing "x": invalid syntax'),
    ("0", None, "No data submitted"),
    ("0", [], "No data submitted"),
    ("0", ["1", "x"], 'ValidatorIndices[1] is invalid: strconv.ParseUint: parsing "x": invalid syntax'),
    ("0", [str(gossip.REGISTRY_SIZE)], f"Validator index {gossip.REGISTRY_SIZE} is invalid"),
    ("99999999", ["1"], "Requested epoch cannot be in the future"),
])
def test_liveness_bad_input_is_400(gstack: Stack, epoch: str, body: Any, message: str) -> None:
    assert _liveness(gstack, epoch, body) == (400, {"message": message, "code": 400})


def test_liveness_undecodable_body_is_400(gstack: Stack) -> None:
    for body in (b"{", b"[1, 2]", b'{"a": 1}'):
        status, doc = _liveness(gstack, 0, body)
        assert status == 400 and doc["message"].startswith("Could not decode request body"), body


def test_liveness_is_post_only(gstack: Stack) -> None:
    assert _post(f"{gstack.rest_url}/zond/v1/validator/liveness/0", None, method="GET")[0] == 405


def test_outsiders_votes_are_live_in_their_target_epoch_only(gstack: Stack, gossip_dir: Path) -> None:
    """A signer that is not a host of the stack: its gossip is on the network, so the beacon reports it."""
    epoch = _head_epoch(gstack)
    spe = int(SLOTS_PER_EPOCH)
    (gossip_dir / "outsider.jsonl").write_text("".join(json.dumps(
        {"host": "outsider", "pubkey": OUTSIDER, "duty": "attestation", "slot": e * spe, "source_epoch": e - 1,
         "target_epoch": e, "signing_root": "0x" + "00" * 32}) + "\n" for e in (epoch - 1,)) + "{torn")
    index = str(gossip.validator_index(OUTSIDER))
    assert _liveness(gstack, epoch - 1, [index]) == (200, {"data": [{"index": index, "is_live": True}]})
    assert _liveness(gstack, epoch - 2, [index, "7"]) == (200, {"data": [{"index": index, "is_live": False},
                                                                          {"index": "7", "is_live": False}]})
    assert _validators(gstack, index)[1]["data"][0]["validator"]["pubkey"] == OUTSIDER, "index known once voted"


def _load_ctl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rest: str) -> ModuleType:
    path = tmp_path / "validator-ctl.json"
    path.write_text(json.dumps({"beacon_rest": rest}))
    monkeypatch.setenv("QP_CTL_CONFIG", str(path))
    spec = importlib.util.spec_from_file_location("qp_validator_ctl_liveness", CTL_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.CFG = module.load_config()
    return module


def test_another_hosts_validator_is_live_on_this_beacon_and_in_ctl_status(
        runner: Runner, tmp_path: Path, gossip_dir: Path, gstack: Stack, keys: dict[str, Any],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Host A's validator signs through A's beacon; host B's beacon (same gossip) reports A's keys live, and
    qp-validator-ctl's reading on B (batched index lookup, then the current and previous epoch) says so."""
    env = {gossip.ENV_GOSSIP_DIR: str(gossip_dir)}
    (tmp_path / "b").mkdir()
    other = start_stack(runner, tmp_path / "b", beacon_env=env)
    wallet = tmp_path / "wallet"
    res = runner.run("validator", "accounts", "import", "--wallet-dir", str(wallet), "--keys-dir", str(keys["dir"]),
                     "--wallet-password-file", str(keys["wallet_pw"]), "--account-password-file",
                     str(keys["account_pw"]), "--accept-terms-of-use")
    assert res.returncode == 0, res.stderr
    runner.start("validator", *validator_args(wallet, tmp_path / "vdata", keys["wallet_pw"], gstack, free_port()),
                 env=env)
    ctl = _load_ctl(tmp_path, monkeypatch, other.rest_url + "/zond/v1")
    pubkeys = [k.lower() for k in keys["pubkeys"]]
    many = pubkeys + [OUTSIDER] + ["0x" + make_keystore("y", index=i)["pubkey"] for i in range(1, 9)]

    def reading() -> dict[str, Any] | None:
        head = json.loads(http_get(other.rest_url + "/zond/v1/node/syncing")[1])["data"]["head_slot"]
        got = ctl.chain_liveness(many, head, {"slots_per_epoch": int(SLOTS_PER_EPOCH)})
        return got if set(got.get("live", {})) >= set(pubkeys) else None

    got = wait_until(reading, 20, "A's keys live on B's beacon")
    assert got["known"] and got["keys"] == len(many) and got["not_on_chain"] == 0
    assert set(got["live"]) == set(pubkeys), "the outsider and the silent keys are not live"
    assert all(set(e) <= set(got["epochs"]) for e in got["live"].values())
    assert len(got["epochs"]) == 2 and got["epochs"][1] == got["head_epoch"]


def test_ctl_reading_is_unknown_when_the_beacon_does_not_answer(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    ctl = _load_ctl(tmp_path, monkeypatch, f"http://127.0.0.1:{free_port()}/zond/v1")
    got = ctl.chain_liveness([OUTSIDER], 40, {"slots_per_epoch": 4})
    assert got == {"known": False, "error": "validator index lookup: beacon node answered no answer"}
    assert ctl.chain_liveness(None, 40, {"slots_per_epoch": 4})["known"] is False
    assert ctl.chain_liveness([OUTSIDER], None, None)["known"] is False
    assert ctl.chain_liveness([], 40, {"slots_per_epoch": 4})["live"] == {}


def test_publish_is_world_readable_whatever_the_umask(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each host's validator user writes its own file; every beacon user must be able to read it."""
    import os
    import stat

    monkeypatch.setenv(gossip.ENV_GOSSIP_DIR, str(tmp_path))
    old = os.umask(0o077)
    try:
        assert gossip.publish(json.dumps({"duty": "attestation", "pubkey": OUTSIDER.upper().replace("0X", "0x"),
                                          "slot": 5, "target_epoch": 1}), "h1") is None
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "h1.jsonl").stat().st_mode) == 0o644
    assert gossip.seen_votes() == [{"pubkey": OUTSIDER, "slot": 5, "target_epoch": 1, "host": "None"}]
    assert gossip.seen_votes(max_slot=4) == [], "a vote is in the chain only once the head reached its slot"
    monkeypatch.setenv(gossip.ENV_GOSSIP_DIR, str(tmp_path / "missing"))
    assert "missing" in (gossip.publish("{}", "h1") or "")


def test_lab_binds_one_gossip_dir_and_names_it_in_the_env_file(tmp_path: Path) -> None:
    import stat

    from lab import overlay

    env = overlay.standin_dropins("gzond", 1.0, 4, 1_700_000_000)[overlay.STANDIN_ENV_FILE].decode()
    assert f"{gossip.ENV_GOSSIP_DIR}={overlay.GOSSIP_GUEST_DIR}" in env.splitlines()
    path = overlay.gossip_dir(tmp_path)
    assert path == tmp_path / "gossip" and stat.S_IMODE(path.stat().st_mode) == 0o1777
