"""The lab's persisted state under concurrent use: the program's mocks ask for generated values from
several threads at once, and every later run must get exactly the same values (else `lab apply` sees a
spurious change, e.g. the backup-shipping key's step replaced on a no-op apply)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from lab.state import KEYS_FILE, SEED_FILE, LabState


def test_concurrent_first_uses_keep_every_key_and_one_seed(tmp_path: Path) -> None:
    names = [f"key-{i}" for i in range(24)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        first = dict(zip(names, pool.map(lambda n: LabState(tmp_path).ed25519_openssh(n), names), strict=True))
    stored = json.loads((tmp_path / KEYS_FILE).read_text())
    assert sorted(stored) == sorted(names), "a concurrent write dropped a key from the state file"
    again = {n: LabState(tmp_path).ed25519_openssh(n) for n in names}
    assert again == first, "a key's text changed between runs"
    assert (tmp_path / SEED_FILE).stat().st_mode & 0o777 == 0o600
    assert not list(tmp_path.glob(".*.tmp")), "temporary files left behind"


def test_move_key_moves_one_keystore_between_pair_directories_of_the_bundle(tmp_path: Path) -> None:
    """For the key-moved fault-matrix row: the key leaves p1's directory, arrives in p2's re-encrypted under p2's
    password (one password per directory), the bundle is resealed under the same passphrase."""
    import base64

    from lab.standins.keystore_fixture import decrypt_secret
    from qpool.keys.seal import unseal_bytes

    state = LabState(tmp_path)
    before = state.lab_secrets(["p1", "p2"])
    p1, p2 = state.pair_pubkeys("p1"), state.pair_pubkeys("p2")
    moved = p1[1]
    state.move_key(moved, "p1", "p2")
    after = state.lab_secrets(["p1", "p2"])
    assert after["validatorKeysPassphrase"] == before["validatorKeysPassphrase"]
    assert after["validatorKeys"] != before["validatorKeys"]
    assert state.pair_pubkeys("p1") == [p1[0]] and state.pair_pubkeys("p2") == sorted([*p2, moved])
    files = unseal_bytes(base64.b64decode(after["validatorKeys"]), after["validatorKeysPassphrase"])
    password = files["p2/password.txt"][1].decode()
    for name, (_mode, content) in files.items():
        if name.startswith("p2/keystore-"):
            decrypt_secret(json.loads(content), password)  # every p2 keystore opens with p2's one password
    assert not any(json.loads(c)["pubkey"] in moved for n, (_m, c) in files.items() if n.startswith("p1/keystore-"))
