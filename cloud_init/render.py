"""Jinja2 environment and the quoting rules every template relies on.

Why custom quoting: values from stack config (graffiti, URLs, bootstrap records) end up in systemd
`ExecStart=` lines and shell scripts. systemd expands `%` specifiers and `$` variables and splits on
whitespace, so a graffiti such as `50% $fun` would silently change the command line. `systemd_arg` makes any
printable value one literal argument, or refuses it.
"""

from __future__ import annotations

import re
import shlex
from functools import cache
from pathlib import Path

import jinja2

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
#: The monitoring host's script templates stay with the monitoring package's data; one environment loads both.
MONITORING_TEMPLATE_DIR = Path(__file__).resolve().parent / "monitoring" / "scripts"

_SYSTEMD_SAFE = re.compile(r"^[A-Za-z0-9_@%+=:,./-]+$")


def systemd_arg(value: str) -> str:
    """One literal systemd command-line word (systemd.service(5) "Command lines").

    Safe words pass unchanged except `%` -> `%%`; anything else is double-quoted with `\\` and `"` escaped
    and `$` doubled. Control characters cannot be represented reliably and are refused.
    """
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise ValueError(f"{value!r}: control characters cannot go into a systemd command line")
    if value and _SYSTEMD_SAFE.match(value):
        return value.replace("%", "%%")
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%").replace("$", "$$")
    return f'"{escaped}"'


def shell_quote(value: str) -> str:
    """POSIX shell single-quoting (for values embedded in generated scripts)."""
    return shlex.quote(value)


@cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(TEMPLATE_DIR), str(MONITORING_TEMPLATE_DIR)]),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,  # noqa: S701 - we render config files and scripts, never HTML
    )
    env.filters["systemd_arg"] = systemd_arg
    env.filters["sh"] = shell_quote
    return env


def render(template: str, **context: object) -> str:
    """Render one template; StrictUndefined turns a missing variable into an error, not an empty string."""
    return environment().get_template(template).render(**context)
