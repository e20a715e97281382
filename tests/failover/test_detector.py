"""The double-sign detector and history check on synthetic data: they must be able to fail.

Why: the lab scenarios all report zero double signs and zero lost history; that proves something only if
the detector does flag every slashable pair and every missing vote when they are there.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from . import detector

KEY = "0x" + "aa" * 8
OTHER_KEY = "0x" + "bb" * 8


def rec(host: str, source: int, target: int, root: str = "", key: str = KEY, slot: int = 0) -> detector.Signed:
    return detector.Signed(host=host, pubkey=key, slot=slot or target * 4, source_epoch=source,
                           target_epoch=target, signing_root=root or f"0x{source:02x}{target:02x}{host}",
                           ts="2026-01-01T00:00:00.000Z")


def test_clean_history_has_no_findings() -> None:
    records = [rec("a", 0, 1), rec("a", 1, 2), rec("b", 2, 3), rec("b", 3, 4), rec("a", 0, 1, key=OTHER_KEY)]
    assert detector.find_double_signs(records) == []


def test_double_vote_is_found() -> None:
    found = detector.find_double_signs([rec("a", 1, 2, root="0x01"), rec("b", 1, 2, root="0x02")])
    assert [f.kind for f in found] == ["double-vote"]


def test_same_duty_on_two_hosts_is_found() -> None:
    found = detector.find_double_signs([rec("a", 1, 2, root="0x01"), rec("b", 1, 2, root="0x01")])
    assert [f.kind for f in found] == ["two-signers-same-duty"]


@pytest.mark.parametrize(("outer", "inner"), [((1, 5), (2, 4)), ((2, 4), (1, 5))])
def test_surround_vote_is_found_either_order(outer: tuple[int, int], inner: tuple[int, int]) -> None:
    found = detector.find_double_signs([rec("a", *outer), rec("b", *inner)])
    assert [f.kind for f in found] == ["surround-vote"]


def test_different_keys_never_conflict() -> None:
    assert detector.find_double_signs([rec("a", 1, 2, root="0x01"), rec("b", 1, 2, root="0x02", key=OTHER_KEY)]) == []


@dataclass
class DiskHost:
    """Just what the detector uses of a LabHost: its name, overlay dirs and bind-mounted volumes."""

    name: str
    merged: Path
    upper: Path
    binds: dict[Path, str] = field(default_factory=dict)


def make_host(tmp: Path, name: str, logged: list[detector.Signed], db_votes: list[tuple[int, int]]) -> DiskHost:
    volume = tmp / name / "volume"
    vdir = volume / "validator"
    vdir.mkdir(parents=True)
    (tmp / name / "merged").mkdir()
    lines = [json.dumps({"ts": r.ts, "host": r.host, "pubkey": r.pubkey, "duty": "attestation", "slot": r.slot,
                         "source_epoch": r.source_epoch, "target_epoch": r.target_epoch,
                         "signing_root": r.signing_root}) for r in logged]
    (vdir / "signing-log.jsonl").write_text("\n".join(lines) + "\n" + '{"torn": ')
    with sqlite3.connect(vdir / "validator.db") as conn:
        conn.execute("CREATE TABLE attestations(pubkey TEXT, source_epoch INTEGER, target_epoch INTEGER, "
                     "signing_root TEXT)")
        conn.executemany("INSERT INTO attestations VALUES(?,?,?,NULL)", [(KEY, s, t) for s, t in db_votes])
    return DiskHost(name, tmp / name / "merged", tmp / name / "upper", {volume: "/var/lib/quantapool"})


def test_history_check_finds_lost_votes_and_gate_coverage(tmp_path: Path) -> None:
    old = make_host(tmp_path, "old", [rec("old", 0, 1), rec("old", 1, 2), rec("old", 2, 3)], [(0, 1), (1, 2), (2, 3)])
    new = make_host(tmp_path, "new", [rec("new", 3, 4)], [(0, 1), (3, 4)])
    hosts = [old, new]
    assert len(detector.scan(hosts).records) == 4, "both logs read from disk, torn line ignored"  # type: ignore[arg-type]
    hist = detector.check_history(new, hosts)  # type: ignore[arg-type]
    assert sorted(r.target_epoch for r in hist.lost) == [2, 3]
    gated = detector.check_history(new, hosts, gate_epoch=3)  # type: ignore[arg-type]
    assert [r.target_epoch for r in gated.lost] == [3]
    assert [r.target_epoch for r in gated.covered_by_gate] == [2]
    allowed = detector.check_history(new, hosts, allowed={(KEY, 1, 2), (KEY, 2, 3)})  # type: ignore[arg-type]
    assert allowed.lost == []
