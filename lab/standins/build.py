"""Build the stand-in client executables: one self-contained file per client.

Each output is a zipapp with a ``#!/usr/bin/python3`` shebang holding the stdlib-only modules of this
package plus a ``__main__.py`` that starts the right client. That keeps the sources as normal, testable
modules while the lab's release mirror serves (and sha256-checks) a single file per binary, as it would a
real release. Entries have fixed timestamps and order, so the same sources always give the same bytes
(and the same sha256).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import re
import sys
import zipfile
from pathlib import Path

SHEBANG = b"#!/usr/bin/python3\n"
PACKAGE = "qp_standins"
# The runtime modules (stdlib only). build.py and keystore_fixture.py are operator/test side only.
MODULES = ("__init__", "beacon", "chain", "cli", "execution", "flagsets", "gossip", "jwtauth", "netio", "runtime",
           "pool", "pool_abi", "slashing_db", "validator", "wallet")
CLIENTS = {"gzond": "execution", "gqrl": "execution", "beacon-chain": "beacon", "validator": "validator"}
_EPOCH = (1980, 1, 1, 0, 0, 0)
CLIENT_FLAGS = Path(__file__).resolve().parents[2] / "cloud_init" / "client_flags.py"
#: The build `lab up` pins (served at the mirror's root). Other releases (build_release) are served under
#: `<mirror>/<release>/`, so a test can bump the pins to a second build with other sha256s (issue 11).
DEFAULT_RELEASE = "lab"
_RELEASE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")

_MAIN = """import sys

from {package}.{module} import main

sys.exit(main(sys.argv[1:], {client!r}))
"""


def _entry(name: str, data: bytes) -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo(name, date_time=_EPOCH)
    info.compress_type = zipfile.ZIP_STORED  # no zlib needed on the lab host
    info.external_attr = 0o644 << 16
    return info, data


def check_release(release: str) -> str:
    """A release name is one path segment of the mirror (no traversal, no separators)."""
    if not _RELEASE_RE.match(release):
        raise ValueError(f"stand-in release {release!r}: use letters, digits, '.', '_' or '-' (max 32)")
    return release


def archive_bytes(client: str, release: str = DEFAULT_RELEASE) -> bytes:
    """The executable's bytes for one client (shebang + zip archive).

    A release other than the default is recorded in ``qp_standins/release.py``: the clients report it in
    their version strings (``web3_clientVersion``, ``<client>_info{version}``, beacon ``node/version``) and
    the bytes, hence the sha256, differ from every other release."""
    if client not in CLIENTS:
        raise ValueError(f"unknown client {client!r}: expected one of {', '.join(sorted(CLIENTS))}")
    src = Path(__file__).resolve().parent
    entries = [_entry(f"{PACKAGE}/{mod}.py", (src / f"{mod}.py").read_bytes()) for mod in MODULES]
    # The flag names have one copy in the project (stdlib only): the stand-ins accept exactly those.
    entries.append(_entry(f"{PACKAGE}/client_flags.py", CLIENT_FLAGS.read_bytes()))
    if check_release(release) != DEFAULT_RELEASE:
        entries.append(_entry(f"{PACKAGE}/release.py", f"RELEASE = {release!r}\n".encode()))
    entries.append(_entry("__main__.py", _MAIN.format(package=PACKAGE, module=CLIENTS[client],
                                                      client=client).encode()))
    buf = io.BytesIO()
    buf.write(SHEBANG)
    with zipfile.ZipFile(buf, "w") as zf:
        for info, data in entries:
            zf.writestr(info, data)
    return buf.getvalue()


def build(out_dir: Path, release: str = DEFAULT_RELEASE) -> dict[str, Path]:
    """Write ``gzond``, ``gqrl``, ``beacon-chain`` and ``validator`` (mode 0755) into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Path] = {}
    for client in CLIENTS:
        path = out_dir / client
        tmp = out_dir / f".{client}.tmp"
        tmp.write_bytes(archive_bytes(client, release))
        os.chmod(tmp, 0o755)  # noqa: S103 - an installable executable, like a release binary
        os.replace(tmp, path)
        result[client] = path
    return result


def build_release(mirror_root: Path, release: str) -> dict[str, Path]:
    """A second (third, ...) build for the lab's release mirror: ``<mirror_root>/<release>/<client>``.

    The lab overlay pins a client to it when the stack file's pin names that release as its version."""
    return build(mirror_root / check_release(release), release)


def main(argv: list[str] | None = None) -> int:
    """``python -m lab.standins.build OUT_DIR [--release R]``: build and print ``sha256  path`` lines."""
    parser = argparse.ArgumentParser(description="Build the lab stand-in client executables.")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--release", default=DEFAULT_RELEASE,
                        help=f"release name the clients report (default {DEFAULT_RELEASE!r}: the lab's first build)")
    args = parser.parse_args(argv)
    for path in build(args.out_dir, args.release).values():
        print(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
