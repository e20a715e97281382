"""The host scripts, executed.

Two techniques, production paths untouched in the rendered scripts:
- the lock scripts run UNCHANGED at their real paths inside a private mount namespace (`unshare -m`) with an
  overlay on /etc, so /etc/quantapool/VALIDATOR_LOCKED is the real path and this machine's /etc is untouched;
- the other scripts are relocated: the production-rendered text with its fixed prefixes (/etc/quantapool,
  /opt/quantapool, ...) rewritten into a temp root, and the commands they drive (systemctl, runuser,
  pgrep, chown, the validator binary, cloud-init) replaced by stubs on PATH that log their arguments.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import io
import json
import os
import re
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud_init import HostRenderInputs
from cloud_init import key_host as kh
from cloud_init.client_flags import ACCEPTED
from cloud_init.secrets_table import install_secret_script

from .hf_unitparse import long_flags
from .support import Rendered, make_config, need_tool, render_variant

PREFIXES = ("/etc/quantapool", "/opt/quantapool", "/var/lib/quantapool", "/usr/local/lib/quantapool",
            "/var/log/cloud-init-output.log")


@pytest.fixture(scope="module")
def host() -> Rendered:
    return render_variant("gqrl", "primary", False)


def relocate(text: str, root: Path) -> str:
    for prefix in PREFIXES:
        text = text.replace(prefix, f"{root}{prefix}")
    return text.replace("run_dir=/run\n", f"run_dir={root}/run\n")


def install(root: Path, name: str, text: str) -> Path:
    path = root / "scripts" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(relocate(text, root))
    path.chmod(0o755)
    return path


def stub(root: Path, name: str, body: str) -> None:
    path = root / "stubs" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/bin/bash\necho "{name} $*" >> "{root}/calls.log"\n{body}\n')
    path.chmod(0o755)


def run(root: Path, script: Path, *args: str, stdin: bytes = b"", env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    full_env = {"PATH": f"{root}/stubs:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", **(env or {})}
    res = subprocess.run([str(script), *args], input=stdin, capture_output=True, env=full_env, timeout=60,
                         check=False)
    return subprocess.CompletedProcess(res.args, res.returncode, res.stdout.decode(), res.stderr.decode())


def calls(root: Path) -> list[str]:
    log = root / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


# -- the lock, at its real path ----------------------------------------------------------------------

def in_private_etc(tmp_path: Path, shell: str) -> subprocess.CompletedProcess[str]:
    """Run `shell` with an overlay on /etc visible only to it (the real /etc is never written)."""
    need_tool("unshare")
    upper, work = tmp_path / "upper", tmp_path / "work"
    upper.mkdir()
    work.mkdir()
    setup = f"mount -t overlay overlay -o lowerdir=/etc,upperdir={upper},workdir={work} /etc || exit 97\n"
    res = subprocess.run(["unshare", "-m", "bash", "-c", setup + shell], capture_output=True, text=True,
                         timeout=60, check=False)
    if res.returncode == 97 or "unshare failed" in res.stderr:
        pytest.skip(f"REAL TOOL UNUSABLE: private mount namespace with overlay not permitted here ({res.stderr})")
    return res


def test_lock_check_refuses_while_lock_exists_at_the_real_path(host: Rendered, tmp_path: Path) -> None:
    check = tmp_path / "validator-lock-check"
    check.write_text(host.files[kh.LOCK_CHECK])  # unchanged: the production path is inside
    check.chmod(0o755)
    assert kh.LOCK_FILE in check.read_text()
    res = in_private_etc(tmp_path, f"""
        mkdir -p /etc/quantapool
        printf 'reason: test lock\\n' > {kh.LOCK_FILE}
        {check}; echo "locked_rc=$?"
        rm {kh.LOCK_FILE}
        {check}; echo "unlocked_rc=$?"
        ln -s /nonexistent {kh.LOCK_FILE}
        {check}; echo "dangling_rc=$?"
        rm {kh.LOCK_FILE}; chmod 0700 /etc/quantapool
        setpriv --reuid=65534 --regid=65534 --clear-groups {check}; echo "unsearchable_rc=$?"
        rm -rf /etc/quantapool
        {check}; echo "nodir_rc=$?"
    """)
    out = res.stdout
    assert "locked_rc=1" in out and "unlocked_rc=0" in out and "dangling_rc=1" in out, out + res.stderr
    assert "unsearchable_rc=1" in out and "nodir_rc=1" in out, "must fail closed when it cannot look"
    assert "LOCKED" in res.stderr and "lock: reason: test lock" in res.stderr


def test_lock_arm_creates_the_lock_and_then_the_check_refuses(host: Rendered, tmp_path: Path) -> None:
    arm, check = tmp_path / "arm", tmp_path / "check"
    arm.write_text(host.files[kh.LOCK_ARM])
    check.write_text(host.files[kh.LOCK_CHECK])
    arm.chmod(0o755)
    check.chmod(0o755)
    res = in_private_etc(tmp_path, f"""
        {arm}; echo "arm_rc=$?"
        {arm}; echo "rearm_rc=$?"
        cat {kh.LOCK_FILE}; stat -c 'mode=%a' {kh.LOCK_FILE}; ls -a /etc/quantapool | tr '\\n' ' '; echo
        {check}; echo "check_rc=$?"
    """)
    out = res.stdout
    assert "arm_rc=0" in out and "rearm_rc=0" in out and "check_rc=1" in out, out + res.stderr
    assert re.search(r"reason: re-armed at boot", out) and re.search(r"timestamp: \d{4}-\d\d-\d\dT", out)
    assert "mode=644" in out and ".VALIDATOR_LOCKED." not in out, "no temp file left behind"


def test_validator_unit_asserts_on_the_same_path_the_scripts_use(host: Rendered) -> None:
    unit = host.files[f"{kh.UNIT_DIR}/{kh.VALIDATOR_UNIT}"]
    assert f"AssertPathExists=!{kh.LOCK_FILE}\n" in unit
    for script in (kh.LOCK_CHECK, kh.LOCK_ARM, "/usr/local/sbin/qp-import-keys"):
        assert f"lock={kh.LOCK_FILE}\n" in host.files[script]


# -- qp-import-keys --------------------------------------------------------------------------------------

PUBKEYS = ["0x" + "ab" * 2592, "0x" + "cd" * 2592]
KEY_PASSWORD = b"keystore-pass-CANARY-1234"


def keys_tar(extra: dict[str, bytes] | None = None) -> bytes:
    members = {f"keystore-m_12381_3600_{i}_0_0-1700000000.json": json.dumps(
        {"pubkey": pk, "crypto": {"cipher": {"message": "CANARY-cipher-" + str(i)}}}).encode()
        for i, pk in enumerate(PUBKEYS)}
    members["keystore-password.txt"] = KEY_PASSWORD + b"\n"
    members.update(extra or {})
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture
def import_root(host: Rendered, tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path
    (root / "etc/quantapool").mkdir(parents=True)
    (root / "run").mkdir()
    (root / "var/lib/quantapool/validator").mkdir(parents=True)
    stub(root, "systemctl", 's="${QP_STUB_STATE:-inactive}"; echo "$s"; [ "$s" = active ] && exit 0; exit 3')
    stub(root, "pgrep", 'exit "${QP_STUB_PGREP:-1}"')
    stub(root, "chown", "exit 0")
    stub(root, "runuser", 'while [ "$1" != "--" ]; do shift; done; shift; exec "$@"')
    validator = root / "opt/quantapool/bin/validator"
    validator.parent.mkdir(parents=True)
    # The wallet is a file of public keys: `accounts import` adds the keystores' keys, `accounts list` prints
    # them as qrysm does (coloured), `accounts delete --delete-public-keys=a,b` removes them.
    validator.write_text(f"""#!/bin/bash
echo "validator $*" >> "{root}/calls.log"
wallet="{root}/wallet-keys"; touch "$wallet"
for a in "$@"; do case "$a" in --keys-dir=*) ls "${{a#*=}}" > "{root}/keys-seen"
    for f in "${{a#*=}}"/keystore-*.json; do k="$(jq -r .pubkey "$f")"
      grep -qx "$k" "$wallet" || echo "$k" >> "$wallet"; done;;
  --delete-public-keys=*) [ -n "${{QP_STUB_KEEP_KEYS:-}}" ] && continue
    tr , '\\n' <<< "${{a#*=}}" > "{root}/deleted"; grep -vxF -f "{root}/deleted" "$wallet" > "$wallet.new" || true
    mv "$wallet.new" "$wallet";;
  --wallet-password-file=*) test -s "${{a#*=}}" || exit 9;; esac; done
case "$1 $2" in
  "accounts import") echo "Imported accounts 0xabababab... (full key would be here)";;
  "accounts list") while read -r k; do printf '\\n\\033[1;95m[validating public key]\\033[0m %s\\n' "$k"
    done < "$wallet";;
esac
""")
    validator.chmod(0o755)
    return root, install(root, "qp-import-keys", host.files["/usr/local/sbin/qp-import-keys"])


def test_import_refuses_while_unlocked(import_root: tuple[Path, Path]) -> None:
    root, script = import_root
    res = run(root, script, stdin=keys_tar())
    assert res.returncode == 1 and "REFUSING" in res.stderr and "unlocked" in res.stderr
    assert not any(c.startswith("validator") for c in calls(root))
    assert not list((root / "run").iterdir())


@pytest.mark.parametrize("state", ["active", "activating", "deactivating", "reloading"])
def test_import_refuses_while_validator_not_stopped(import_root: tuple[Path, Path], state: str) -> None:
    root, script = import_root
    (root / "etc/quantapool/VALIDATOR_LOCKED").write_text("locked\n")
    res = run(root, script, stdin=keys_tar(), env={"QP_STUB_STATE": state})
    assert res.returncode == 1 and f"qp-validator.service is '{state}'" in res.stderr
    assert not any(c.startswith("validator") for c in calls(root))


def test_import_refuses_while_validator_processes_run(import_root: tuple[Path, Path]) -> None:
    root, script = import_root
    (root / "etc/quantapool/VALIDATOR_LOCKED").write_text("locked\n")
    res = run(root, script, stdin=keys_tar(), env={"QP_STUB_PGREP": "0"})
    assert res.returncode == 1 and "processes of qp-validator" in res.stderr
    assert not any(c.startswith("validator") for c in calls(root))


def test_import_succeeds_locked_and_leaves_no_plaintext(import_root: tuple[Path, Path]) -> None:
    root, script = import_root
    (root / "etc/quantapool/VALIDATOR_LOCKED").write_text("locked\n")
    res = run(root, script, stdin=keys_tar())
    assert res.returncode == 0, res.stderr
    [call] = [c for c in calls(root) if c.startswith("validator accounts import")]
    names = [n for n, _ in long_flags(call.split()[1:])]
    assert call.split()[1:3] == ["accounts", "import"]
    assert set(names) == {"wallet-dir", "keys-dir", "wallet-password-file", "account-password-file",
                          "accept-terms-of-use"} <= ACCEPTED["validator"]
    assert sorted((root / "keys-seen").read_text().split()) == sorted(
        f"keystore-m_12381_3600_{i}_0_0-1700000000.json" for i in range(2)), "only keystores in --keys-dir"
    pw = root / "etc/quantapool/secrets/wallet-password"
    assert pw.stat().st_mode & 0o777 == 0o640 and len(pw.read_text()) >= 32
    assert "chown root:qp-validator" in "\n".join(calls(root))
    output = res.stdout + res.stderr
    assert "imported 2 keystore(s)" in output
    for secret in (PUBKEYS[0], KEY_PASSWORD.decode(), "CANARY-cipher", pw.read_text(), "full key would be"):
        assert secret not in output
    assert not list((root / "run").iterdir()), "plaintext directory must be removed"
    # idempotent: the same archive again works and keeps the wallet password
    before = pw.read_text()
    assert run(root, script, stdin=keys_tar()).returncode == 0 and pw.read_text() == before


def test_import_takes_base64_with_its_own_flag(import_root: tuple[Path, Path]) -> None:
    """The Pulumi step sends base64 text (`sudo qp-import-keys --base64`: no `base64 -d |` shell in front of
    sudo, the deploy identity runs only the tool); anything else on the command line is refused."""
    root, script = import_root
    (root / "etc/quantapool/VALIDATOR_LOCKED").write_text("locked\n")
    res = run(root, script, "--base64", stdin=base64.b64encode(keys_tar()))
    assert res.returncode == 0 and "imported 2 keystore(s)" in res.stdout, res.stderr
    assert run(root, script, "--base64", stdin=b"!!not base64!!").returncode == 1
    assert run(root, script, "--other", stdin=keys_tar()).returncode == 2


def test_import_removes_keys_no_longer_assigned_to_the_pair(import_root: tuple[Path, Path]) -> None:
    """Issue 12 item 2: a key moved to another pair leaves this (locked) host's wallet at the next import."""
    root, script = import_root
    (root / "etc/quantapool/VALIDATOR_LOCKED").write_text("locked\n")
    moved = "0x" + "ef" * 2592
    (root / "wallet-keys").write_text(f"{PUBKEYS[0]}\n{moved}\n")
    res = run(root, script, stdin=keys_tar())
    assert res.returncode == 0, res.stderr
    assert (root / "wallet-keys").read_text().split() == PUBKEYS, "exactly the pair's keys remain"
    [delete] = [c for c in calls(root) if c.startswith("validator accounts delete")]
    assert f"--delete-public-keys={moved}" in delete.split()
    assert {n for n, _ in long_flags(delete.split()[1:])} <= ACCEPTED["validator"]
    assert f"removed key {moved[:14]}..." in res.stdout and moved not in res.stdout + res.stderr
    # Nothing stale: no delete call at all.
    res = run(root, script, stdin=keys_tar())
    assert res.returncode == 0
    assert len([c for c in calls(root) if c.startswith("validator accounts delete")]) == 1


def test_import_removes_many_keys_in_batches_under_the_argument_limit(import_root: tuple[Path, Path]) -> None:
    root, script = import_root
    (root / "etc/quantapool/VALIDATOR_LOCKED").write_text("locked\n")
    stale = [f"0x{i:04x}" + "ef" * 2590 for i in range(23)]
    (root / "wallet-keys").write_text("\n".join([*PUBKEYS, *stale]) + "\n")
    res = run(root, script, stdin=keys_tar())
    assert res.returncode == 0, res.stderr
    deletes = [c for c in calls(root) if c.startswith("validator accounts delete")]
    assert len(deletes) == 3 and all(len(c) < 128 * 1024 for c in deletes)
    assert (root / "wallet-keys").read_text().split() == PUBKEYS


def test_import_removes_nothing_when_the_listing_does_not_show_the_imported_keys(
        import_root: tuple[Path, Path]) -> None:
    """A listing that does not match the archive (e.g. truncated keys in a changed client) must never turn
    the pair's own keys into "stale" ones."""
    root, script = import_root
    (root / "etc/quantapool/VALIDATOR_LOCKED").write_text("locked\n")
    (root / "wallet-keys").write_text("0xabababab\n0xcdcdcdcd\n")  # what a truncating listing would show
    validator = root / "opt/quantapool/bin/validator"
    validator.write_text(validator.read_text().replace('grep -qx "$k" "$wallet" || echo "$k" >> "$wallet"', ":"))
    res = run(root, script, stdin=keys_tar())
    assert res.returncode == 1 and "lacks 2 of the imported key(s); nothing removed" in res.stderr
    assert not [c for c in calls(root) if c.startswith("validator accounts delete")]


def test_import_fails_loudly_when_a_removal_did_not_happen(import_root: tuple[Path, Path]) -> None:
    root, script = import_root
    (root / "etc/quantapool/VALIDATOR_LOCKED").write_text("locked\n")
    moved = "0x" + "ef" * 2592
    (root / "wallet-keys").write_text(f"{moved}\n")
    res = run(root, script, stdin=keys_tar(), env={"QP_STUB_KEEP_KEYS": "1"})  # the delete keeps the key
    assert res.returncode == 1 and "still in the wallet after its removal" in res.stderr


def test_import_refuses_unexpected_members_and_missing_password(import_root: tuple[Path, Path]) -> None:
    root, script = import_root
    (root / "etc/quantapool/VALIDATOR_LOCKED").write_text("locked\n")
    res = run(root, script, stdin=keys_tar({"deposit_data-1.json": b"[]"}))
    assert res.returncode == 1 and "unexpected member 'deposit_data-1.json'" in res.stderr
    res = run(root, script, stdin=keys_tar({"keystore-password.txt": b""}))
    assert res.returncode == 1 and "keystore-password.txt missing or empty" in res.stderr
    assert not any(c.startswith("validator") for c in calls(root))
    assert not list((root / "run").iterdir())


def test_import_refuses_new_password_for_existing_wallet(import_root: tuple[Path, Path]) -> None:
    root, script = import_root
    (root / "etc/quantapool/VALIDATOR_LOCKED").write_text("locked\n")
    wallet = root / "var/lib/quantapool/validator/wallet/direct"
    wallet.mkdir(parents=True)
    res = run(root, script, stdin=keys_tar())
    assert res.returncode == 1 and "restore it; not creating a new one" in res.stderr
    assert not (root / "etc/quantapool/secrets/wallet-password").exists()


# -- qp-install-secret -----------------------------------------------------------------------------------

def test_install_secret_refuses_unknown_and_empty(host: Rendered, tmp_path: Path) -> None:
    script = install(tmp_path, "qp-install-secret", host.files[kh.INSTALL_SECRET])
    res = run(tmp_path, script, "grafana-admin-password", stdin=b"x")
    assert res.returncode == 1 and "unknown secret name" in res.stderr and "accepts: backup-ship-key, jwt" in res.stderr
    res = run(tmp_path, script, "../../etc/passwd", stdin=b"x")
    assert res.returncode == 1 and "unknown secret name" in res.stderr
    res = run(tmp_path, script, stdin=b"x")
    assert res.returncode == 1 and "usage" in res.stderr


def test_install_secret_writes_atomically_with_mode_and_owner(tmp_path: Path) -> None:
    import grp
    try:
        gid = grp.getgrnam("prometheus").gr_gid
    except KeyError:
        pytest.skip("REAL TOOL MISSING: group 'prometheus' (apt-get install prometheus-alertmanager)")
    script = install(tmp_path, "qp-install-secret", install_secret_script("monitoring"))
    secret = b"https://discord.example/api/webhooks/CANARY-999"
    res = run(tmp_path, script, "alertmanager-discord-webhook", stdin=b"")
    assert res.returncode == 1 and "empty input" in res.stderr
    target = tmp_path / "etc/quantapool/secrets/alertmanager-discord-webhook"
    assert not target.exists()
    res = run(tmp_path, script, "alertmanager-discord-webhook", stdin=secret)
    assert res.returncode == 0, res.stderr
    st = target.stat()
    assert target.read_bytes() == secret and st.st_mode & 0o777 == 0o640 and st.st_gid == gid and st.st_uid == 0
    assert "CANARY" not in res.stdout + res.stderr
    assert sorted(p.name for p in target.parent.iterdir()) == ["alertmanager-discord-webhook"], "no temp left"
    assert (target.parent.stat().st_mode & 0o777) == 0o711


def test_install_secret_refuses_missing_group(host: Rendered, tmp_path: Path) -> None:
    import grp
    try:
        grp.getgrnam("qp-jwt")
        pytest.skip("this machine has a qp-jwt group; the missing-group path cannot be shown here")
    except KeyError:
        pass
    script = install(tmp_path, "qp-install-secret", host.files[kh.INSTALL_SECRET])
    res = run(tmp_path, script, "jwt", stdin=b"ab" * 32)
    assert res.returncode == 1 and "group 'qp-jwt'" in res.stderr
    assert not (tmp_path / "etc/quantapool/secrets/jwt.hex").exists()


# -- qp-set-host-env -------------------------------------------------------------------------------------

@pytest.mark.parametrize("arg", ["QP_PUBLIC_IPV4=256.1.1.1", "QP_PUBLIC_IPV4=1.2.3", "QP_PUBLIC_IPV4=01.2.3.4",
                                 "QP_PUBLIC_IPV4=1.2.3.4;reboot", "QP_PUBLIC_IPV4=1.2.3.4\nEVIL=1",
                                 "QP_PUBLIC_IPV4=", "OTHER=1.2.3.4", "1.2.3.4"])
def test_set_host_env_rejects(host: Rendered, tmp_path: Path, arg: str) -> None:
    script = install(tmp_path, "qp-set-host-env", host.files["/usr/local/sbin/qp-set-host-env"])
    res = run(tmp_path, script, arg)
    assert res.returncode == 1, res.stdout
    assert not (tmp_path / "etc/quantapool/host.env").exists()


def test_set_host_env_writes_and_is_idempotent(host: Rendered, tmp_path: Path) -> None:
    script = install(tmp_path, "qp-set-host-env", host.files["/usr/local/sbin/qp-set-host-env"])
    res = run(tmp_path, script, "QP_PUBLIC_IPV4=203.0.113.42")
    assert res.returncode == 0, res.stderr
    env = tmp_path / "etc/quantapool/host.env"
    assert "QP_PUBLIC_IPV4=203.0.113.42\n" in env.read_text() and env.stat().st_mode & 0o777 == 0o644
    assert "unchanged" in run(tmp_path, script, "QP_PUBLIC_IPV4=203.0.113.42").stdout


# -- qp-wait-ready ---------------------------------------------------------------------------------------

def test_wait_ready_prints_log_tail_on_error(host: Rendered, tmp_path: Path) -> None:
    script = install(tmp_path, "qp-wait-ready", host.files["/usr/local/sbin/qp-wait-ready"])
    log = tmp_path / "var/log/cloud-init-output.log"
    log.parent.mkdir(parents=True)
    log.write_text("".join(f"line {i}\n" for i in range(100)) + "qp-install-clients: REFUSING client\n")
    stub(tmp_path, "cloud-init", '[ "$2" = "--wait" ] && exit 1; echo "status: error"; exit 1')
    res = run(tmp_path, script)
    assert res.returncode == 1 and "REFUSING client" in res.stderr and "line 51" in res.stderr
    assert "line 50\n" not in res.stderr, "only the last 50 lines"
    stub(tmp_path, "cloud-init", 'echo "status: done"; exit 0')
    assert run(tmp_path, script).returncode == 0


# -- qp-start-clients ------------------------------------------------------------------------------------

@pytest.fixture
def start_root(host: Rendered, tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path
    for path in ("etc/quantapool/secrets/jwt.hex", "etc/quantapool/host.env"):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text("x\n")
    for name in ("gqrl", "beacon-chain"):
        exe = root / "opt/quantapool/bin" / name
        exe.parent.mkdir(parents=True, exist_ok=True)
        exe.write_text("#!/bin/sh\n")
        exe.chmod(0o755)
    stub(root, "sleep", "exit 0")
    stub(root, "journalctl", "echo 'journal line'")
    return root, install(root, "qp-start-clients", host.files["/usr/local/sbin/qp-start-clients"])


def test_start_clients_starts_only_execution_and_beacon(start_root: tuple[Path, Path]) -> None:
    root, script = start_root
    stub(root, "systemctl", '[ "$1" = is-active ] && echo active; exit 0')
    res = run(root, script)
    assert res.returncode == 0, res.stderr
    log = calls(root)
    assert "systemctl enable --now qp-execution.service qp-beacon.service" in log
    assert not any("validator" in c for c in log)


def test_start_clients_fails_when_a_client_does_not_stay_up(start_root: tuple[Path, Path]) -> None:
    root, script = start_root
    stub(root, "systemctl", '[ "$1" = is-active ] && [ "$2" = qp-beacon.service ] && { echo activating; exit 3; }\n'
                            '[ "$1" = is-active ] && echo active; exit 0')
    res = run(root, script)
    assert res.returncode == 1 and "qp-beacon.service is 'activating'" in res.stderr and "journal line" in res.stderr


def test_start_clients_requires_jwt_and_host_env(start_root: tuple[Path, Path]) -> None:
    root, script = start_root
    stub(root, "systemctl", "exit 0")
    (root / "etc/quantapool/host.env").unlink()
    res = run(root, script)
    assert res.returncode == 1 and "qp-set-host-env" in res.stderr and not calls(root)


# -- qp-install-clients ----------------------------------------------------------------------------------

@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[tuple[str, Path, list[str]]]:
    served = tmp_path / "mirror"
    served.mkdir()
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a: object, **kw: object) -> None:
            super().__init__(*a, directory=str(served), **kw)  # type: ignore[arg-type]

        def log_message(self, *_: object) -> None:
            requests.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", served, requests
    server.shutdown()


def _pinned_host(base: str, served: Path, *, zero: str | None = None, wrong: str | None = None) -> HostRenderInputs:
    cfg = make_config("gzond")
    pins = {}
    for role, name in (("execution", "gzond"), ("beacon", "beacon-chain"), ("validator", "validator")):
        data = f"#!/bin/sh\necho {name}\n".encode()
        (served / f"{name}-v0.2.2").write_bytes(data)
        sha = hashlib.sha256(data).hexdigest()
        if role == zero:
            sha = "0" * 64
        if role == wrong:
            sha = hashlib.sha256(b"other").hexdigest()
        pins[role] = cfg.clients.pins()[role].model_copy(update={"url": f"{base}/{name}-{{version}}", "sha256": sha})
    nfs = []
    for nf in cfg.clients.network_files:
        (served / nf.name).write_bytes(b"network " + nf.name.encode())
        nfs.append(nf.model_copy(update={"url": f"{base}/{nf.name}",
                                         "sha256": hashlib.sha256(b"network " + nf.name.encode()).hexdigest()}))
    clients = cfg.clients.model_copy(update={**pins, "network_files": tuple(nfs)})
    cfg = cfg.model_copy(update={"clients": clients})
    return HostRenderInputs(cfg, cfg.key_hosts()[0], "ssh-ed25519 AAAA x", None)


def _install_clients(tmp_path: Path, inputs: HostRenderInputs) -> Path:
    manifest = tmp_path / "etc/quantapool/clients.json"
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_text(kh.clients_manifest(inputs))
    return install(tmp_path, "qp-install-clients", kh.scripts(inputs)["/usr/local/sbin/qp-install-clients"])


def test_install_clients_refuses_unvetted_pin_before_downloading(tmp_path: Path, mirror: tuple) -> None:
    need_tool("curl")
    base, served, requests = mirror
    script = _install_clients(tmp_path, _pinned_host(base, served, zero="beacon"))
    res = run(tmp_path, script)
    assert res.returncode == 1
    assert "REFUSING client 'beacon-chain'" in res.stderr and "quantapool:clients.beacon.sha256" in res.stderr
    assert requests == [] and not (tmp_path / "opt/quantapool/bin").exists()


def test_install_clients_verifies_installs_and_is_idempotent(tmp_path: Path, mirror: tuple) -> None:
    need_tool("curl")
    base, served, requests = mirror
    script = _install_clients(tmp_path, _pinned_host(base, served))
    res = run(tmp_path, script)
    assert res.returncode == 0, res.stderr
    bin_dir = tmp_path / "opt/quantapool/bin"
    for name in ("gzond", "beacon-chain", "validator"):
        link = bin_dir / name
        assert os.readlink(link) == f"{name}-v0.2.2" and os.access(link, os.X_OK)
        assert (bin_dir / f"{name}-v0.2.2").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "etc/quantapool/network/config.yml").read_bytes() == b"network config.yml"
    assert not [p for p in bin_dir.iterdir() if p.name.startswith(".")], "no temp files left"
    count = len(requests)
    again = run(tmp_path, script)
    assert again.returncode == 0 and len(requests) == count, "verified files are not downloaded again"
    assert "present and verified" in again.stdout


def test_install_clients_refuses_checksum_mismatch(tmp_path: Path, mirror: tuple) -> None:
    need_tool("curl")
    base, served, _ = mirror
    script = _install_clients(tmp_path, _pinned_host(base, served, wrong="validator"))
    res = run(tmp_path, script)
    assert res.returncode == 1 and "checksum mismatch" in res.stderr
    bin_dir = tmp_path / "opt/quantapool/bin"
    assert not (bin_dir / "validator-v0.2.2").exists() and not (bin_dir / "validator").exists()
    assert not [p for p in bin_dir.iterdir() if p.name.startswith(".download")]
