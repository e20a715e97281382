"""What every qpool operation runs with: the inventory, the stack file, I/O, clocks and the SSH client.

Its own module so that the read-only status code (qpool/status.py) and the operations that change hosts
(qpool/operations.py) share it without importing each other.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qpool.inventory import Inventory
from qpool.remote import Ssh

Report = Callable[[str], None]
Confirm = Callable[[str], bool]


@dataclass
class Context:
    inventory: Inventory
    config_file: Path
    report: Report = print
    confirm: Confirm = lambda _msg: True
    hcloud: Any = None  # hcloud.Client when HCLOUD_FENCING_TOKEN is available
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.time
    journal_dir: Path | None = None
    ssh: Ssh = field(init=False)

    def __post_init__(self) -> None:
        self.ssh = Ssh(self.inventory)
