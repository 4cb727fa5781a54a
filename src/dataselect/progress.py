"""Progress bars (rate and ETA) and one-line notes on stderr, for every long step."""

from __future__ import annotations

import sys

from tqdm.auto import tqdm


def bar(total: int, desc: str, unit: str = "row", enabled: bool = True, **kw) -> tqdm:
    """A tqdm bar on stderr showing count, rate and ETA; silent when ``enabled`` is false."""
    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, unit_scale=unit == "row",
                dynamic_ncols=True, leave=False, file=sys.stderr, mininterval=0.5, **kw)


def note(message: str) -> None:
    """One line for the user on stderr (between progress bars, never inside one)."""
    tqdm.write(f"dataselect: note: {message}", file=sys.stderr)
