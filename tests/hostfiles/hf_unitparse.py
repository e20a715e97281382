"""A small reader for systemd unit files, enough to check what the renderer wrote.

`exec_argv` applies systemd's command-line rules (systemd.service(5)): words split on whitespace, double
quotes group, backslash escapes inside quotes, `%%` -> `%`, `$$` -> `$`; `${VAR}` is left as is (systemd
substitutes it at start). It is deliberately independent of cloud_init.render so a quoting bug is caught.
"""

from __future__ import annotations


def logical_lines(text: str) -> list[str]:
    out: list[str] = []
    buf = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith(("#", ";"))):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        out.append(buf + line)
        buf = ""
    return out


def sections(text: str) -> dict[str, list[tuple[str, str]]]:
    result: dict[str, list[tuple[str, str]]] = {}
    current = ""
    for line in logical_lines(text):
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
            result.setdefault(current, [])
            continue
        key, _, value = line.partition("=")
        result.setdefault(current, []).append((key.strip(), value.strip()))
    return result


def values(text: str, section: str, key: str) -> list[str]:
    return [v for k, v in sections(text).get(section, []) if k == key]


def exec_argv(command: str) -> list[str]:
    words: list[str] = []
    cur = ""
    in_word = False
    quote = False
    i = 0
    while i < len(command):
        ch = command[i]
        if quote:
            if ch == "\\" and i + 1 < len(command):
                cur += command[i + 1]
                i += 2
                continue
            if ch == '"':
                quote = False
            else:
                cur += ch
        elif ch == '"':
            quote = True
            in_word = True
        elif ch.isspace():
            if in_word:
                words.append(cur)
                cur, in_word = "", False
        else:
            cur += ch
            in_word = True
        i += 1
    assert not quote, f"unterminated quote in {command!r}"
    if in_word:
        words.append(cur)
    return [w.replace("%%", "\0").replace("$$", "$").replace("\0", "%") for w in words]


def long_flags(argv: list[str]) -> list[tuple[str, str | None]]:
    """(name, value) of every `--name[=value]` word."""
    out = []
    for word in argv:
        if word.startswith("--"):
            name, eq, value = word[2:].partition("=")
            out.append((name, value if eq else None))
    return out
