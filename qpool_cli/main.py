"""The `qpool` command: qpool's operator commands with the lab's group added.

Why a module of its own: lab builds on qpool (it deploys and operates through qpool's code), so qpool
cannot register lab's group without an import circle. This module is the one place that sees both, the
way staking-deposit-cli registers one module per command; the console script points here.
"""

from __future__ import annotations

from lab.cli import lab
from qpool.cli import main

main.add_command(lab)

__all__ = ["main"]

if __name__ == "__main__":
    main()
