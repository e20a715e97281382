"""The QuantaPool topology on Hetzner Cloud: a thin wiring of the components (see README)."""

from components.stack import build_stack
from qpool.keys.host_bundle import host_key_tars_b64

# The sealed key bundle is opened by the operator package's code, handed in here: components stay below qpool.
build_stack(open_key_bundle=host_key_tars_b64)
