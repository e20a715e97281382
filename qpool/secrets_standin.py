"""Stand-in values for encrypted secrets when the program runs offline (plan/render).

The real values are only readable by Pulumi with the stack's secrets provider. Offline review still runs
the whole program, so each present secret gets a random value of the right shape; it is marked secret
like the real one and therefore only ever shown as `[secret]`.
"""

from __future__ import annotations

import base64
import json
import secrets

from qpool.keys.seal import seal_files


def standin_values(present: set[str], pairs: tuple[str, ...] = ("p1",)) -> dict[str, str]:
    values = {key: f"offline-standin-{secrets.token_hex(16)}" for key in sorted(present)}
    if "validatorKeys" in values:
        # The program unseals the bundle: give it a real sealed bundle (one directory per pair) whose
        # "keystores" hold no key material, so the plan exercises the same path. A passphrase kept out of the
        # stack (supplied at `pulumi up` by QPOOL_KEYS_PASSPHRASE) gets a stand-in too.
        passphrase = values.setdefault("validatorKeysPassphrase", f"offline-standin-{secrets.token_hex(16)}")
        members: dict[str, tuple[int, bytes]] = {}
        for pair in pairs:
            members[f"{pair}/keystore-offline-standin.json"] = (
                0o600, json.dumps({"pubkey": f"offline-standin-{pair}"}).encode())
            members[f"{pair}/password.txt"] = (0o600, secrets.token_hex(16).encode())
        bundle = seal_files(members, passphrase)
        values["validatorKeys"] = base64.b64encode(bundle).decode()
    return values
