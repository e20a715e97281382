"""The QuantaPool topology on Hetzner Cloud: a thin wiring of the components (see README)."""

from components.stack import build_stack

build_stack()
