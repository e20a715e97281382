"""Operator-facing errors of the key tooling (one clear line each; the CLI exits 2)."""

from qpool.errors import QpoolError


class KeysError(QpoolError):
    """Key generation could not produce a complete, verified key set; nothing usable was left behind."""


class SealError(QpoolError):
    """A sealed key bundle could not be written or opened (wrong passphrase, tampering, unsafe content)."""
