"""Text from users' data made safe to show: control characters (terminal escape sequences) escaped."""

from __future__ import annotations


def printable(text: str, keep_newlines: bool = True) -> str:
    """``text`` with every non-printable character shown as its escape (``\\x1b``), lines kept."""
    if text.isprintable():
        return text
    lines = text.split("\n") if keep_newlines else [text]
    return "\n".join("".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in line)
                     for line in lines)
