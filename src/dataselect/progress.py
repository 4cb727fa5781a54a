"""Progress bars (rate and ETA) and one-line notes on stderr, for every long step.

On a terminal a bar redraws in place and is cleared when its step ends. In a log (stderr not a
terminal) each update is a line of its own, at most every 10 seconds, and the final state stays:
a log shows how far each step got and how fast, and the next line never runs into a bar.
"""

from __future__ import annotations

import sys

from tqdm.auto import tqdm


class _Lines:
    """A stream for tqdm in logs: its carriage-return redraws become whole lines."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> int:
        for part in text.replace("\r", "\n").split("\n"):
            if part.strip():
                self.stream.write(part.rstrip() + "\n")
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def bar(total: int, desc: str, unit: str = "row", enabled: bool = True, **kw) -> tqdm:
    """A tqdm bar on stderr showing count, rate and ETA; silent when ``enabled`` is false."""
    tty = sys.stderr.isatty()
    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, unit_scale=unit == "row",
                dynamic_ncols=tty, leave=not tty, file=sys.stderr if tty else _Lines(sys.stderr),
                mininterval=0.5 if tty else 10, **{"ncols": None if tty else 100, **kw})


def note(message: str) -> None:
    """One line for the user on stderr (between progress bars, never inside one)."""
    tqdm.write(f"dataselect: note: {message}", file=sys.stderr)
