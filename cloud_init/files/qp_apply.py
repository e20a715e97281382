#!/usr/bin/env python3
"""qp-apply: the deploy identity's only way to change a host's configuration (sudoers lists it, no shell).

    bundle | confirm BUNDLE DIGEST | host-tools | exporter      (tars: base64 on stdin)

Why and limits: docs/operations.md "Two identities". QP_BUNDLE_ROOT / QP_APPLY_RUN_DIR re-root it for tests.
"""
import base64
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile

S = "/usr/local/sbin/"
DELIVERIES = {  # what each whole-tree delivery may write, and its installer
    "host-tools": (("/usr/local/sbin/qp-validator-ctl", "/etc/quantapool/", "/etc/systemd/system/qp-"),
                   [S + "qp-validator-ctl", "setup"]),
    "exporter": (("/opt/quantapool/exporter/", "/etc/quantapool/contract-exporter.yaml",
                  "/etc/systemd/system/qp-contract-exporter.service", S + "qp-install-exporter"),
                 [S + "qp-install-exporter"]),
}


class ApplyError(Exception):
    pass


def on_host(path):
    return os.path.join(os.environ.get("QP_BUNDLE_ROOT", "/"), path.lstrip("/"))


def extract(target, allowed):
    """Files (root-owned, the member's mode, atomic) and directories only; nothing leaves `target`."""
    if sys.stdin.isatty():
        raise ApplyError("pipe the base64 tar in")
    try:
        tar = tarfile.open(fileobj=io.BytesIO(base64.b64decode(b"".join(sys.stdin.buffer.read().split()),  # noqa: SIM115
                                                               validate=True)), mode="r:")
    except (ValueError, tarfile.TarError) as exc:
        raise ApplyError(f"stdin is not a base64 tar: {exc}") from None
    for m in tar.getmembers():
        name = m.name[2:] if m.name.startswith("./") else m.name
        parts = name.rstrip("/").split("/")
        if not name or name.startswith("/") or ".." in parts or "" in parts:
            raise ApplyError(f"refusing tar member {m.name!r}: absolute or leaving the target")
        if not (m.isfile() or m.isdir()):
            raise ApplyError(f"refusing tar member {m.name!r}: only regular files and directories")
        if allowed and m.isfile() and not ("/" + name).startswith(allowed):
            raise ApplyError(f"refusing tar member {m.name!r}: this delivery writes only {', '.join(allowed)}")
        dest = os.path.join(target, *parts)
        if m.isdir():
            os.makedirs(dest, 0o755, exist_ok=True)
            continue
        os.makedirs(os.path.dirname(dest), 0o755, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".qp-apply.", dir=os.path.dirname(dest))
        try:
            with os.fdopen(fd, "wb") as f:
                shutil.copyfileobj(tar.extractfile(m), f)
            os.chmod(tmp, m.mode & 0o7777)
            os.replace(tmp, dest)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


def main(argv):
    run = lambda cmd: subprocess.run(cmd, check=False).returncode  # noqa: E731
    try:
        if argv == ["bundle"]:  # private staging dir (0700, root), the bundle's own applier, always removed
            staged = tempfile.mkdtemp(prefix="qp-bundle.", dir=os.environ.get("QP_APPLY_RUN_DIR", "/run"))
            try:
                extract(staged, ())
                return run([sys.executable, os.path.join(staged, ".qp-bundle/apply.py"), "apply", staged])
            finally:
                shutil.rmtree(staged, ignore_errors=True)
        if len(argv) == 3 and argv[0] == "confirm":
            if not (re.fullmatch(r"[a-z][a-z0-9-]*", argv[1]) and re.fullmatch(r"[0-9a-f]{64}", argv[2])):
                raise ApplyError("usage: confirm BUNDLE-NAME SHA256")
            return run([sys.executable, on_host("/var/lib/quantapool/bundles/qp-bundle-apply.py"), *argv])
        if len(argv) == 1 and argv[0] in DELIVERIES:
            allowed, then = DELIVERIES[argv[0]]
            extract(on_host("/"), allowed)
            return run([on_host(then[0]), *then[1:]])
        raise ApplyError("usage: qp-apply bundle | confirm BUNDLE DIGEST | host-tools | exporter")
    except (ApplyError, OSError) as exc:
        print(f"qp-apply {' '.join(argv[:1])}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
