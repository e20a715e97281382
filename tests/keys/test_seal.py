"""Sealing key directories: round trips, tamper detection, unsafe archives, no plaintext on disk."""

import io
import os
import stat
import tarfile
import tempfile
from pathlib import Path

import pytest

from qpool.keys import seal as seal_mod
from qpool.keys.errors import SealError
from qpool.keys.seal import (
    HEADER_SIZE,
    seal_dir,
    seal_dir_to_file,
    tar_for_stream,
    unseal_bytes,
    unseal_file_to_dir,
)

PASS = "tests-only passphrase, long enough"
FAST = 2**10

EXPECTED = {
    "keystore-m_12381_238_0_0_0-1.json": (0o600, b'{"crypto": {"cipher": {"message": "00ff"}}}'),
    "password.txt": (0o400, b"correct horse battery staple"),
    "sub/deposit_data-1.json": (0o644, b"[]"),
    "empty": (0o640, b""),
}


def _seal_tar(payload: bytes, passphrase: str = PASS) -> bytes:
    """Seal an arbitrary tar exactly as the module would, to smuggle hostile archives past the tag."""
    salt, nonce = os.urandom(16), os.urandom(12)
    header = seal_mod._HEADER.pack(seal_mod.MAGIC, 1, 1, 10, 8, 1, salt, nonce)
    key = seal_mod._derive_key(passphrase, salt, FAST, 8, 1)
    return header + seal_mod.AESGCM(key).encrypt(nonce, payload, header)


def _tar_with(member: tarfile.TarInfo, content: bytes = b"x") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        tar.addfile(member, io.BytesIO(content) if member.isreg() else None)
    return buf.getvalue()


def test_round_trip_in_memory_preserves_modes_and_content(key_dir: Path) -> None:
    blob = seal_dir(key_dir, PASS, kdf_n=FAST)
    assert unseal_bytes(blob, PASS, min_kdf_n=FAST) == EXPECTED


def test_round_trip_through_files(key_dir: Path, tmp_path: Path) -> None:
    sealed = seal_dir_to_file(key_dir, tmp_path / "keys.sealed", PASS, kdf_n=FAST)
    assert stat.S_IMODE(sealed.stat().st_mode) == 0o600
    out = tmp_path / "restored"
    written = unseal_file_to_dir(sealed, out, PASS, min_kdf_n=FAST)
    assert sorted(p.relative_to(out).as_posix() for p in written) == sorted(EXPECTED)
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    assert stat.S_IMODE((out / "sub").stat().st_mode) == 0o700
    for name, (mode, content) in EXPECTED.items():
        assert (out / name).read_bytes() == content
        assert stat.S_IMODE((out / name).stat().st_mode) == mode


def test_each_seal_uses_fresh_salt_and_nonce(key_dir: Path) -> None:
    first, second = seal_dir(key_dir, PASS, kdf_n=FAST), seal_dir(key_dir, PASS, kdf_n=FAST)
    assert first[:6] == second[:6] == b"QPSEAL"
    assert first[11:HEADER_SIZE] != second[11:HEADER_SIZE]
    assert first[HEADER_SIZE:] != second[HEADER_SIZE:]


def test_wrong_passphrase_is_a_clear_error(key_dir: Path) -> None:
    blob = seal_dir(key_dir, PASS, kdf_n=FAST)
    with pytest.raises(SealError, match="wrong passphrase"):
        unseal_bytes(blob, PASS + "!", min_kdf_n=FAST)


def test_any_flipped_byte_is_detected(key_dir: Path) -> None:
    blob = seal_dir(key_dir, PASS, kdf_n=FAST)
    body = len(blob) - HEADER_SIZE - 16
    positions = set(range(HEADER_SIZE))  # every header byte: magic, version, KDF params, salt, nonce
    positions |= {HEADER_SIZE + body * k // 64 for k in range(64)}  # spread over the ciphertext
    positions |= set(range(len(blob) - 16, len(blob)))  # every tag byte
    for pos in sorted(positions):
        tampered = bytearray(blob)
        tampered[pos] ^= 0x01
        with pytest.raises(SealError):
            unseal_bytes(bytes(tampered), PASS, min_kdf_n=FAST)


@pytest.mark.parametrize("cut", ["truncate", "extend", "tiny"])
def test_length_changes_are_detected(key_dir: Path, cut: str) -> None:
    blob = seal_dir(key_dir, PASS, kdf_n=FAST)
    changed = {"truncate": blob[:-1], "extend": blob + b"\0", "tiny": blob[:HEADER_SIZE]}[cut]
    with pytest.raises(SealError):
        unseal_bytes(changed, PASS, min_kdf_n=FAST)


def test_weak_kdf_in_header_is_refused_before_deriving(key_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blob = seal_dir(key_dir, PASS, kdf_n=FAST)

    def must_not_derive(*_args: object) -> bytes:
        raise AssertionError("KDF ran for a header that should have been refused")

    monkeypatch.setattr(seal_mod, "_derive_key", must_not_derive)
    with pytest.raises(SealError, match="outside the accepted range"):
        unseal_bytes(blob, PASS)  # default floor is the production strength, 2**17


@pytest.mark.parametrize(("offset", "value", "message"), [(8, 40, "outside"), (8, 90, "absurd"), (9, 200, "r=200")])
def test_absurd_kdf_in_header_is_refused_before_deriving(
    key_dir: Path, monkeypatch: pytest.MonkeyPatch, offset: int, value: int, message: str
) -> None:
    blob = bytearray(seal_dir(key_dir, PASS, kdf_n=FAST))
    blob[offset] = value
    monkeypatch.setattr(seal_mod, "_derive_key", lambda *_a: pytest.fail("KDF ran on an absurd header"))
    with pytest.raises(SealError, match=message):
        unseal_bytes(bytes(blob), PASS, min_kdf_n=FAST)


def test_seal_refuses_weak_parameters_and_short_passphrases(key_dir: Path) -> None:
    with pytest.raises(SealError, match="outside"):
        seal_dir(key_dir, PASS, kdf_n=2**8)
    with pytest.raises(SealError, match="power of two"):
        seal_dir(key_dir, PASS, kdf_n=3000)
    with pytest.raises(SealError, match="too short"):
        seal_dir(key_dir, "short", kdf_n=FAST)


def test_default_strength_is_scrypt_2_17() -> None:
    assert seal_mod.DEFAULT_KDF_N == 2**17
    assert seal_mod.MIN_KDF_N == 2**17


def _member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.size = 1 if kind == tarfile.REGTYPE else 0
    info.mode = 0o600
    return info


@pytest.mark.parametrize(
    ("member", "message"),
    [
        (_member("../evil"), "traversal"),
        (_member("a/../../evil"), "traversal"),
        (_member("/etc/cron.d/evil"), "absolute"),
        (_member("./x"), "traversal"),
        (_member("link", tarfile.SYMTYPE, "/etc/shadow"), "symlink"),
        (_member("hard", tarfile.LNKTYPE, "keystore.json"), "link"),
        (_member("dev", tarfile.CHRTYPE), "non-regular"),
        (_member("fifo", tarfile.FIFOTYPE), "non-regular"),
        (_member("dir", tarfile.DIRTYPE), "non-regular"),
    ],
    ids=lambda v: v.name if isinstance(v, tarfile.TarInfo) else "",
)
def test_unsafe_archive_members_are_rejected_and_nothing_is_written(
    tmp_path: Path, member: tarfile.TarInfo, message: str
) -> None:
    sealed = tmp_path / "hostile.sealed"
    sealed.write_bytes(_seal_tar(_tar_with(member)))
    with pytest.raises(SealError, match=message):
        unseal_bytes(sealed.read_bytes(), PASS, min_kdf_n=FAST)
    with pytest.raises(SealError, match=message):
        unseal_file_to_dir(sealed, tmp_path / "out", PASS, min_kdf_n=FAST)
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "evil").exists()


def test_garbage_payload_with_valid_tag_is_rejected() -> None:
    with pytest.raises(SealError, match="not a valid archive"):
        unseal_bytes(_seal_tar(b"definitely not a tar archive" * 40), PASS, min_kdf_n=FAST)


def test_no_plaintext_written_while_sealing_or_unsealing_to_memory(
    key_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, guard
) -> None:
    scratch = tmp_path / "tmpdir"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setattr(tempfile, "tempdir", None)
    out = tmp_path / "out"
    out.mkdir()
    sealed = seal_dir_to_file(key_dir, out / "keys.sealed", PASS, kdf_n=FAST)
    files = unseal_bytes(sealed.read_bytes(), PASS, min_kdf_n=FAST)
    assert files == EXPECTED
    assert list(scratch.iterdir()) == []
    assert [p.name for p in out.iterdir()] == ["keys.sealed"]
    for name, (_mode, content) in EXPECTED.items():
        if len(content) >= 8:
            guard.add(content, name)
    guard.add(PASS, "passphrase")
    guard.scan_tree(out)
    guard.assert_clean()


def test_existing_destination_is_not_overwritten_unless_asked(key_dir: Path, tmp_path: Path) -> None:
    dest = tmp_path / "keys.sealed"
    dest.write_bytes(b"previous backup")
    with pytest.raises(SealError, match="already exists"):
        seal_dir_to_file(key_dir, dest, PASS, kdf_n=FAST)
    assert dest.read_bytes() == b"previous backup"
    seal_dir_to_file(key_dir, dest, PASS, kdf_n=FAST, overwrite=True)
    assert unseal_bytes(dest.read_bytes(), PASS, min_kdf_n=FAST) == EXPECTED


def test_unseal_refuses_a_non_empty_destination(key_dir: Path, tmp_path: Path) -> None:
    sealed = seal_dir_to_file(key_dir, tmp_path / "keys.sealed", PASS, kdf_n=FAST)
    out = tmp_path / "out"
    out.mkdir()
    (out / "other-keystore.json").write_text("{}")
    with pytest.raises(SealError, match="not empty"):
        unseal_file_to_dir(sealed, out, PASS, min_kdf_n=FAST)
    assert [p.name for p in out.iterdir()] == ["other-keystore.json"]


def test_seal_refuses_symlinks_and_special_files(key_dir: Path) -> None:
    (key_dir / "link.json").symlink_to(key_dir / "password.txt")
    with pytest.raises(SealError, match="symlink"):
        seal_dir(key_dir, PASS, kdf_n=FAST)
    (key_dir / "link.json").unlink()
    os.mkfifo(key_dir / "fifo")
    with pytest.raises(SealError, match="non-regular"):
        seal_dir(key_dir, PASS, kdf_n=FAST)


def test_seal_refuses_an_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(SealError, match="nothing to seal"):
        seal_dir(tmp_path, PASS, kdf_n=FAST)


def test_tar_for_stream_is_deterministic_and_anonymous() -> None:
    files = {"b/keystore.json": (0o600, b"{}"), "a.txt": (0o4755, b"hello")}
    reordered = dict(reversed(list(files.items())))
    blob = tar_for_stream(files)
    assert blob == tar_for_stream(reordered)
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == ["a.txt", "b/keystore.json"]
        assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 and m.uname == "" and m.gname == "" for m in members)
        assert [m.mode for m in members] == [0o755, 0o600]  # permission bits only: no setuid
        assert tar.extractfile("a.txt").read() == b"hello"


@pytest.mark.parametrize("name", ["../x", "/abs", "a//b", ""])
def test_tar_for_stream_refuses_unsafe_names(name: str) -> None:
    with pytest.raises(SealError):
        tar_for_stream({name: (0o600, b"x")})
