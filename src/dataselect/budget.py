"""Budgets: ``10k``, ``326k``, ``2.5M``, ``1000``, ``25%``."""

from __future__ import annotations

import math
import re

from dataselect.errors import DataselectError

_UNITS = {"": 1, "k": 1_000, "m": 1_000_000, "b": 1_000_000_000}
_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMbB%]?)\s*$")


def parse_budget(text: str | int, pool_size: int, allow_all: bool = False) -> int:
    """Number of rows to select from a pool of ``pool_size`` rows.

    A budget over the pool size is an error unless ``allow_all`` (then it is clipped to the pool).
    Percentages round to the nearest row; ``2.5M`` must come out a whole number of rows.
    """
    m = _RE.match(str(text))
    if not m:
        raise DataselectError(f"--budget {text!r}: expected a count like 1000, 10k, 2.5M or a share like 25%")
    value, unit = float(m.group(1)), m.group(2).lower()
    if unit == "%":
        if value > 100:
            raise DataselectError(f"--budget {text}: a share cannot exceed 100%")
        n = int(math.floor(pool_size * value / 100 + 0.5))
    else:
        exact = value * _UNITS[unit]
        if abs(exact - round(exact)) > 1e-6:
            raise DataselectError(f"--budget {text}: is not a whole number of rows")
        n = int(round(exact))
    if n < 1:
        raise DataselectError(f"--budget {text}: selects no rows")
    if n > pool_size:
        if not allow_all:
            raise DataselectError(f"--budget {text} ({n:,} rows) is larger than the pool ({pool_size:,} rows); "
                                  "pass --allow-all to select the whole pool")
        n = pool_size
    return n
