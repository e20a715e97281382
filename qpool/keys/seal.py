"""Seal a key directory into one encrypted file, and open it again.

Why: qrysm keystores are "encrypted" with one SHAKE256 pass over the password (no work factor), so a
copied keystore plus a guessable password is a copied validator — and a copied validator that signs is a
slashing. Everything that leaves the generating machine is therefore sealed here first.

File layout (all of it authenticated; the header is the AES-GCM associated data, so changing a KDF
parameter, the salt or the nonce breaks the tag just like changing the ciphertext):

    magic  b"QPSEAL"        6 bytes
    version                 1 byte   (1)
    kdf id                  1 byte   (1 = scrypt)
    log2(n), r, p           3 bytes  scrypt parameters, stored so they can be raised later
    salt                   16 bytes  random per file
    nonce                  12 bytes  random per file
    ciphertext || tag               AES-256-GCM of a tar built in memory

The KDF runs before the tag can be checked, so the parameters read from a header are bounds-checked
first: a tampered header can neither make us derive with a weak KDF (below ``min_kdf_n``) nor make us
allocate gigabytes (above ``MAX_KDF_N`` / ``MAX_KDF_MEMORY``).

The payload tar is built and parsed in memory: no plaintext temp file is ever written. Only regular files
are sealed (modes kept, owners and times zeroed); on unseal anything that isn't a plain relative regular
file (symlinks, devices, absolute paths, ``..``) is refused.
"""

import io
import os
import secrets
import stat
import struct
import tarfile
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from qpool.keys.atomic import fsync_dir, write_atomic
from qpool.keys.errors import SealError

MAGIC = b"QPSEAL"
VERSION = 1
KDF_SCRYPT = 1
_HEADER = struct.Struct(">6sBBBBB16s12s")
HEADER_SIZE = _HEADER.size
TAG_SIZE = 16

DEFAULT_KDF_N = 2**17
DEFAULT_KDF_R = 8
DEFAULT_KDF_P = 1
# Accepted when opening a file. The floor is the default strength; tests pass a lower min_kdf_n.
MIN_KDF_N = 2**17
# Nothing, not even tests, goes below this: it would no longer be a password KDF worth the name.
HARD_MIN_KDF_N = 2**10
MAX_KDF_N = 2**20
MAX_KDF_R = 16
MAX_KDF_P = 4
MAX_KDF_MEMORY = 2**30  # scrypt needs about 128 * r * n bytes
MIN_PASSPHRASE_LEN = 12
_MAX_NAME_LEN = 255

Files = dict[str, tuple[int, bytes]]


def _check_kdf(n: int, r: int, p: int, min_n: int) -> None:
    """Refuse weak or absurd scrypt parameters, whether asked for by a caller or read from a header."""
    if n < 2 or n & (n - 1):
        raise SealError(f"scrypt n must be a power of two, got {n}")
    if not min_n <= n <= MAX_KDF_N:
        raise SealError(
            f"scrypt n=2**{n.bit_length() - 1} is outside the accepted range "
            f"2**{min_n.bit_length() - 1}..2**{MAX_KDF_N.bit_length() - 1} "
            "(tampered header, or sealed with settings this qpool refuses)"
        )
    if not 1 <= r <= MAX_KDF_R or not 1 <= p <= MAX_KDF_P:
        raise SealError(f"scrypt r={r}, p={p} outside the accepted range r 1..{MAX_KDF_R}, p 1..{MAX_KDF_P}")
    if 128 * r * n > MAX_KDF_MEMORY:
        raise SealError(f"scrypt n={n}, r={r} would need more than {MAX_KDF_MEMORY >> 20} MiB")


def _derive_key(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    """scrypt from `cryptography` (OpenSSL); 32 bytes for AES-256."""
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode("utf-8"))


def check_member_name(name: str) -> None:
    """Allow only plain relative paths, so a bundle can never write outside its target directory."""
    if not name or len(name) > _MAX_NAME_LEN or "\x00" in name or "\\" in name:
        raise SealError(f"unsafe path in key bundle: {name!r}")
    if name.startswith("/"):
        raise SealError(f"absolute path in key bundle: {name!r}")
    if any(part in ("", ".", "..") for part in name.split("/")):
        raise SealError(f"path traversal in key bundle: {name!r}")


def tar_for_stream(files: Files) -> bytes:
    """Build a deterministic ustar archive of regular files in memory.

    Deterministic (sorted names, mtime 0, uid/gid 0, no owner names) so the same keys give the same
    bytes: a checksum of what was streamed over SSH means something, and nothing about the operator's
    machine (user name, clock) leaks to the host. Only permission bits of the mode are kept.
    """
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name in sorted(files):
            check_member_name(name)
            mode, content = files[name]
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mode = mode & 0o777
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.type = tarfile.REGTYPE
            try:
                tar.addfile(info, io.BytesIO(content))
            except ValueError as exc:
                raise SealError(f"cannot archive {name!r}: {exc}") from exc
    return buf.getvalue()


def _untar(payload: bytes) -> Files:
    """Parse the decrypted tar in memory, refusing anything but plain relative regular files."""
    files: Files = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(payload), mode="r:") as tar:
            for member in tar:
                check_member_name(member.name)
                if not member.isreg():
                    kind = "symlink" if member.issym() else "link" if member.islnk() else "non-regular file"
                    raise SealError(f"{kind} in key bundle: {member.name!r}")
                if member.name in files:
                    raise SealError(f"duplicate path in key bundle: {member.name!r}")
                extracted = tar.extractfile(member)
                if extracted is None:  # pragma: no cover - isreg() members always have data
                    raise SealError(f"unreadable entry in key bundle: {member.name!r}")
                files[member.name] = (member.mode & 0o777, extracted.read())
    except tarfile.TarError as exc:
        raise SealError(f"key bundle is not a valid archive: {exc}") from exc
    return files


def collect_dir(src: Path) -> Files:
    """Read every regular file under *src* into memory; refuse symlinks and special files.

    Refusing (rather than skipping) keeps the bundle honest: a symlinked keystore would otherwise
    silently go missing from the backup.
    """
    if src.is_symlink() or not src.is_dir():
        raise SealError(f"{src} is not a directory")
    files: Files = {}
    for root, dirnames, filenames in os.walk(src, followlinks=False):
        root_path = Path(root)
        for dirname in dirnames:
            if (root_path / dirname).is_symlink():
                raise SealError(f"refusing to seal symlinked directory {root_path / dirname}")
        for filename in filenames:
            path = root_path / filename
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                raise SealError(f"refusing to seal symlink {path}")
            if not stat.S_ISREG(st.st_mode):
                raise SealError(f"refusing to seal non-regular file {path}")
            files[path.relative_to(src).as_posix()] = (stat.S_IMODE(st.st_mode), path.read_bytes())
    if not files:
        raise SealError(f"nothing to seal: {src} has no files")
    return files


def seal_files(files: Files, passphrase: str, *, kdf_n: int = DEFAULT_KDF_N) -> bytes:
    """Seal an in-memory file map (see module docstring for the format)."""
    if len(passphrase) < MIN_PASSPHRASE_LEN:
        raise SealError(f"passphrase too short: use at least {MIN_PASSPHRASE_LEN} characters")
    _check_kdf(kdf_n, DEFAULT_KDF_R, DEFAULT_KDF_P, HARD_MIN_KDF_N)
    salt = secrets.token_bytes(16)
    nonce = secrets.token_bytes(12)
    header = _HEADER.pack(MAGIC, VERSION, KDF_SCRYPT, kdf_n.bit_length() - 1, DEFAULT_KDF_R, DEFAULT_KDF_P, salt, nonce)
    key = _derive_key(passphrase, salt, kdf_n, DEFAULT_KDF_R, DEFAULT_KDF_P)
    return header + AESGCM(key).encrypt(nonce, tar_for_stream(files), header)


def seal_dir(src: Path, passphrase: str, *, kdf_n: int = DEFAULT_KDF_N) -> bytes:
    """Seal the regular files under *src* into one authenticated, encrypted blob."""
    return seal_files(collect_dir(Path(src)), passphrase, kdf_n=kdf_n)


def seal_dir_to_file(
    src: Path, dest: Path, passphrase: str, *, kdf_n: int = DEFAULT_KDF_N, overwrite: bool = False
) -> Path:
    """Seal *src* into *dest* (0600, atomic). Refuses to replace an existing file unless asked to.

    Not overwriting by default: the file being replaced may be the only backup of other keys.
    """
    dest = Path(dest)
    if (dest.exists() or dest.is_symlink()) and not overwrite:
        raise SealError(f"{dest} already exists; refusing to overwrite a sealed bundle")
    blob = seal_dir(Path(src), passphrase, kdf_n=kdf_n)
    write_atomic(dest, blob, 0o600)
    return dest


def unseal_bytes(blob: bytes, passphrase: str, *, min_kdf_n: int = MIN_KDF_N) -> Files:
    """Open a sealed blob into ``{relative path: (mode, content)}`` without touching the disk."""
    if len(blob) < HEADER_SIZE + TAG_SIZE:
        raise SealError("not a qpool sealed file (too short)")
    header = blob[:HEADER_SIZE]
    magic, version, kdf_id, log2_n, r, p, salt, nonce = _HEADER.unpack(header)
    if magic != MAGIC:
        raise SealError("not a qpool sealed file (bad magic)")
    if version != VERSION:
        raise SealError(f"sealed file version {version} is not supported (this qpool reads {VERSION})")
    if kdf_id != KDF_SCRYPT:
        raise SealError(f"sealed file uses unknown KDF id {kdf_id}")
    if log2_n >= 64:
        raise SealError(f"scrypt n=2**{log2_n} is absurd (tampered header)")
    _check_kdf(1 << log2_n, r, p, max(min_kdf_n, HARD_MIN_KDF_N))
    key = _derive_key(passphrase, salt, 1 << log2_n, r, p)
    try:
        payload = AESGCM(key).decrypt(nonce, blob[HEADER_SIZE:], header)
    except InvalidTag:
        raise SealError("cannot open sealed file: wrong passphrase, or the file was modified") from None
    return _untar(payload)


def unseal_file_to_dir(src: Path, dest_dir: Path, passphrase: str, *, min_kdf_n: int = MIN_KDF_N) -> list[Path]:
    """Open *src* into *dest_dir* (new or empty; 0700), each file written atomically with its mode.

    Everything is decrypted and validated in memory before the first file is written, so a bad bundle
    leaves no partial key directory behind.
    """
    files = unseal_bytes(Path(src).read_bytes(), passphrase, min_kdf_n=min_kdf_n)
    dest_dir = Path(dest_dir)
    if dest_dir.is_symlink():
        raise SealError(f"{dest_dir} is a symlink; refusing to unseal into it")
    if dest_dir.exists():
        if not dest_dir.is_dir():
            raise SealError(f"{dest_dir} exists and is not a directory")
        if any(dest_dir.iterdir()):
            raise SealError(f"{dest_dir} is not empty; refusing to mix key sets")
    else:
        dest_dir.mkdir(parents=True, mode=0o700)
    dest_dir.chmod(0o700)
    root = dest_dir.resolve()
    written: list[Path] = []
    for name in sorted(files):
        mode, content = files[name]
        target = root / name
        if not target.resolve().is_relative_to(root):  # belt and braces after check_member_name
            raise SealError(f"path escapes the target directory: {name!r}")
        for parent in reversed(target.relative_to(root).parents[:-1]):
            directory = root / parent
            if not directory.exists():
                directory.mkdir(mode=0o700)
                fsync_dir(directory.parent)
        write_atomic(target, content, mode)
        written.append(target)
    return written
