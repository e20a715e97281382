"""urfave/cli-like argument parsing for the stand-ins (stdlib only).

The real clients are Go programs built on urfave/cli: ``--name value``, ``--name=value``, single or double
dash, bare booleans (``--name=false`` allowed) and the exact error text "flag provided but not defined:
-name" for anything unknown. Reproducing that matters because the project's systemd units are checked in
the lab by starting these binaries with the very same command lines.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

_TRUE = {"1", "t", "T", "true", "TRUE", "True"}
_FALSE = {"0", "f", "F", "false", "FALSE", "False"}


class UsageError(Exception):
    """Bad command line; the message is printed verbatim to stderr and the process exits 1."""


@dataclass
class Parsed:
    """Result of parsing: flag values (last one wins), every value per flag, and positional words."""

    values: dict[str, str | bool] = field(default_factory=dict)
    multi: dict[str, list[str]] = field(default_factory=dict)
    positional: list[str] = field(default_factory=list)
    help: bool = False
    version: bool = False

    def get(self, name: str, default: str | None = None) -> str | None:
        """String value of a value-flag, or ``default`` when it was not given."""
        value = self.values.get(name)
        if value is None or isinstance(value, bool):
            return default
        return value

    def flag(self, name: str) -> bool:
        """True when a boolean flag was given (and not set to false)."""
        return self.values.get(name) is True

    def has(self, name: str) -> bool:
        """True when the flag appeared on the command line at all."""
        return name in self.values

    def get_int(self, name: str, default: int) -> int:
        """Integer value of a flag; a non-number is a usage error naming the flag."""
        raw = self.get(name)
        if raw is None:
            return default
        try:
            return int(raw, 10)
        except ValueError:
            raise UsageError(f'invalid value "{raw}" for flag -{name}: parse error') from None


def parse(argv: list[str], kinds: dict[str, str]) -> Parsed:
    """Parse ``argv`` against a flag table (name -> ``bool``/``value``); raise UsageError like urfave/cli."""
    out = Parsed()
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            out.positional.extend(argv[i:])
            break
        if not arg.startswith("-") or arg == "-":
            out.positional.append(arg)
            continue
        body = arg[2:] if arg.startswith("--") else arg[1:]
        name, has_eq, inline = body.partition("=")
        if name in ("help", "h"):
            out.help = True
            continue
        if name == "version" and name not in kinds:
            out.version = True
            continue
        kind = kinds.get(name)
        if kind is None or not name:
            raise UsageError(f"flag provided but not defined: -{name}")
        if kind == "bool":
            if not has_eq:
                value: str | bool = True
            elif inline in _TRUE:
                value = True
            elif inline in _FALSE:
                value = False
            else:
                raise UsageError(f'invalid boolean value "{inline}" for -{name}: parse error')
        else:
            if has_eq:
                value = inline
            elif i < len(argv):
                value = argv[i]
                i += 1
            else:
                raise UsageError(f"flag needs an argument: -{name}")
            out.multi.setdefault(name, []).append(value)
        out.values[name] = value
    return out


def usage_exit(message: str) -> int:
    """Print a usage error the way urfave/cli does and return the exit code 1."""
    print(message, file=sys.stderr)
    return 1
