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
