"""Validator keys: generation through qrysm's deposit CLI, sealing at rest, and streaming as tar.

Keystores written by qrysm's deposit CLI are protected by a single unstretched SHAKE256 pass over the
password, so they are treated as plaintext here: they only ever leave the generating machine sealed
(AES-256-GCM under scrypt) or inside an SSH stream.
"""

from qpool.keys.errors import KeysError, SealError
from qpool.keys.generate import GeneratedKeys, generate_keys
from qpool.keys.seal import (
    seal_dir,
    seal_dir_to_file,
    tar_for_stream,
    unseal_bytes,
    unseal_file_to_dir,
)

__all__ = [
    "GeneratedKeys",
    "KeysError",
    "SealError",
    "generate_keys",
    "seal_dir",
    "seal_dir_to_file",
    "tar_for_stream",
    "unseal_bytes",
    "unseal_file_to_dir",
]
