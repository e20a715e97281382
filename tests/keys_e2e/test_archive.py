"""Backup archives offline: manifest checksums, tamper detection, history merging, the "older" rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from qpool import backups, interchange
from qpool.backups import (
    KEY_BUNDLE_MEMBER,
    MANIFEST,
    MERGED_MEMBER,
    build_archive,
    merge_interchanges,
    older_than_target,
    open_archive,
)
from qpool.cli import main
from qpool.errors import QpoolError
from qpool.keys.errors import SealError
from qpool.keys.seal import seal_files, unseal_bytes

FAST_N = 2**10
GVR = "0x" + "ab" * 32
PASS = "archive-passphrase-123"


def doc(entries: dict[str, list[tuple[int, int]]], blocks: dict[str, list[int]] | None = None,
        gvr: str = GVR) -> bytes:
    blocks = blocks or {}
    return json.dumps({
        "metadata": {"interchange_format_version": "5", "genesis_validators_root": gvr},
        "data": [{"pubkey": key,
                  "signed_attestations": [{"source_epoch": str(s), "target_epoch": str(t)} for s, t in atts],
                  "signed_blocks": [{"slot": str(slot)} for slot in blocks.get(key, [])]}
                 for key, atts in entries.items()],
    }).encode()


def members() -> dict[str, tuple[int, bytes]]:
    return {KEY_BUNDLE_MEMBER: (0o600, b"QPSEAL-not-really"),
            MERGED_MEMBER: (0o600, doc({"0xaa": [(1, 2), (2, 3)]}))}


def manifest() -> dict:
    return {"format": backups.FORMAT, "version": backups.FORMAT_VERSION, "stack": "s", "pair": "p1"}


def test_round_trip_lists_every_member_with_its_sha256() -> None:
    blob = build_archive(manifest(), members(), PASS, kdf_n=FAST_N)
    archive = open_archive(blob, PASS, min_kdf_n=FAST_N)
    assert set(archive.manifest["members"]) == {KEY_BUNDLE_MEMBER, MERGED_MEMBER}
    assert archive.history.max_target("0xaa") == 3


def test_flipped_byte_anywhere_is_refused() -> None:
    blob = build_archive(manifest(), members(), PASS, kdf_n=FAST_N)
    for offset in (40, len(blob) // 2, len(blob) - 1):  # header (salt), ciphertext, tag
        bad = bytearray(blob)
        bad[offset] ^= 0x80
        with pytest.raises(SealError, match="modified"):
            open_archive(bytes(bad), PASS, min_kdf_n=FAST_N)


def test_member_not_matching_the_manifest_is_refused() -> None:
    """Resealed with a changed member but the old manifest (e.g. a hand-edited archive): refused."""
    files = unseal_bytes(build_archive(manifest(), members(), PASS, kdf_n=FAST_N), PASS, min_kdf_n=FAST_N)
    files[MERGED_MEMBER] = (0o600, doc({"0xaa": [(1, 2)]}))
    with pytest.raises(QpoolError, match="fails its sha256"):
        open_archive(seal_files(files, PASS, kdf_n=FAST_N), PASS, min_kdf_n=FAST_N)
    files = unseal_bytes(build_archive(manifest(), members(), PASS, kdf_n=FAST_N), PASS, min_kdf_n=FAST_N)
    files["slashing/extra.json"] = (0o600, b"{}")
    with pytest.raises(QpoolError, match="does not match its manifest"):
        open_archive(seal_files(files, PASS, kdf_n=FAST_N), PASS, min_kdf_n=FAST_N)
    files = unseal_bytes(build_archive(manifest(), members(), PASS, kdf_n=FAST_N), PASS, min_kdf_n=FAST_N)
    del files[MANIFEST]
    with pytest.raises(QpoolError, match="no manifest"):
        open_archive(seal_files(files, PASS, kdf_n=FAST_N), PASS, min_kdf_n=FAST_N)


def test_merge_is_the_union_and_refuses_mixed_chains() -> None:
    a = doc({"0xaa": [(1, 2)], "0xbb": [(0, 1)]}, {"0xaa": [10]})
    b = doc({"0xaa": [(2, 3), (1, 2)]}, {"0xaa": [12]})
    merged = interchange.parse(merge_interchanges([a, b]), "merged")
    assert merged.attestations["0xaa"] == {(1, 2), (2, 3)} and merged.attestations["0xbb"] == {(0, 1)}
    assert merged.blocks["0xaa"] == {10, 12}
    for part in (a, b):
        assert not interchange.missing(interchange.parse(part, "part"), merged)
    with pytest.raises(QpoolError, match="genesis_validators_root"):
        merge_interchanges([a, doc({"0xaa": [(1, 2)]}, gvr="0x" + "cd" * 32)])


def test_older_history_is_refused_per_key_unless_the_target_has_none() -> None:
    archive = interchange.parse(doc({"0xaa": [(4, 5)], "0xbb": [(8, 9)]}), "archive")
    newer_target = interchange.parse(doc({"0xaa": [(5, 6)], "0xbb": [(1, 2)]}), "target")
    problems = older_than_target(archive, newer_target)
    assert len(problems) == 1 and "0xaa" in problems[0] and "5 < target's 6" in problems[0]
    assert older_than_target(archive, interchange.parse(doc({}), "empty")) == []
    assert older_than_target(archive, interchange.parse(doc({"0xaa": [(4, 5)]}), "same")) == []
    # A key the archive lacks entirely, but the target has signed with, is refused too.
    assert older_than_target(archive, interchange.parse(doc({"0xcc": [(1, 2)]}), "other key"))
    # Blocks count as well.
    target_blocks = interchange.parse(doc({"0xaa": [(4, 5)]}, {"0xaa": [99]}), "blocks")
    assert any("block slot" in p for p in older_than_target(archive, target_blocks))


def test_restore_cli_refuses_tampered_archive_and_wrong_passphrase_before_any_host(tmp_path: Path) -> None:
    """Both refusals happen while opening the file: no inventory exists here, so no host could be touched."""
    blob = build_archive(manifest(), members(), PASS)  # production KDF: the CLI accepts nothing weaker
    good = tmp_path / "a.qpbackup"
    good.write_bytes(blob)
    bad = tmp_path / "b.qpbackup"
    bad.write_bytes(blob[:-1] + bytes([blob[-1] ^ 1]))
    pw = tmp_path / "pw"
    pw.write_text(PASS + "\n")
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-passphrase-at-all\n")
    runner = CliRunner()
    for archive, passfile in ((bad, pw), (good, wrong)):
        res = runner.invoke(main, ["restore", "--stack", "nostack", "--host", "h", "--archive", str(archive),
                                   "--passphrase-file", str(passfile)], env={"QPOOL_INVENTORY": None})
        assert res.exit_code == 2 and "wrong passphrase, or the file was modified" in res.output, res.output


def test_key_bundle_needs_the_pulumi_cli_or_a_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backups.shutil, "which", lambda _name: None)
    with pytest.raises(QpoolError, match="--key-bundle"):
        backups.key_bundle_from_stack("testnet")
    with pytest.raises(QpoolError, match="not a `qpool keys seal` bundle"):
        backups.check_key_bundle(b"plain keystore json", "keys.json")
