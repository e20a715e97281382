"""Stand-in values for encrypted secrets when the program runs offline (plan/render).

The real values are only readable by Pulumi with the stack's secrets provider. Offline review still runs
the whole program, so each present secret gets a random value of the right shape; it is marked secret
like the real one and therefore only ever shown as `[secret]`.
"""

from __future__ import annotations

import secrets


def standin_values(present: set[str]) -> dict[str, str]:
    return {key: f"offline-standin-{secrets.token_hex(16)}" for key in sorted(present)}
