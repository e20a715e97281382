"""Metric names and job selectors used by a PromQL expression (a small lexer, enough for our queries).

Why not a regex over the whole text: label names (`by (host)`), function names (`rate(`), keywords, label
values and durations all look like identifiers. The lexer drops strings, `{...}` matchers, `[...]` ranges and
the label lists after by/without/on/ignoring/group_left/group_right, then keeps the identifiers that are not
followed by `(` and are not keywords.
"""

from __future__ import annotations

import re

KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
                      "bool", "offset", "inf", "nan", "atan2", "topk", "bottomk", "quantile", "count_values"})
_LABEL_LIST = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'')
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_JOB = re.compile(r'\bjob\s*(=~|!=|!~|=)\s*"([^"]*)"')


def metric_names(expr: str) -> set[str]:
    text = re.sub(r"\$__\w+|\$\w+", "x", expr)  # Grafana variables
    braces = re.sub(r"\{[^}]*\}", " ", _STRING.sub('""', text))
    text = re.sub(r"\[[^\]]*\]", " ", braces)
    text = _LABEL_LIST.sub(" ", text)
    text = re.sub(r"\boffset\s+\w+", " ", text)
    names = set()
    for m in _IDENT.finditer(text):
        word = m.group(0)
        prev = text[m.start() - 1] if m.start() else " "
        if prev.isdigit() or prev == ".":
            continue  # part of a number such as 1e9
        rest = text[m.end():].lstrip()
        if rest.startswith("(") or word.lower() in KEYWORDS:
            continue
        names.add(word)
    return names


def job_selectors(expr: str) -> set[str]:
    """Job names matched with job="..." (equality only)."""
    return {value for op, value in _JOB.findall(expr) if op == "="}
