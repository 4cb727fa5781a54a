"""A selector's parameters, declared once: type, default, choices or range, and meaning.

``dataselect methods``, the Python API's ``methods()``, the README's table, CLI parsing and validation
all read the same :class:`Param` declarations (``Selector.params``): nothing is typed twice, and a
value is checked once, when the selector is built, before any work.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

from dataselect.errors import DataselectError

_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


@dataclass(frozen=True)
class Param:
    """One parameter of a selector.

    name : the Python name (``--name-with-dashes`` on the command line).
    default : its default (a list default is copied per selector).
    meaning : one or two sentences for ``dataselect methods``.
    kind : ``int``, ``float``, ``str``, ``bool`` or ``list`` (of ``int``); default: the default's type.
    choices : the only values allowed (``str``), or named values allowed besides numbers (``float``,
        e.g. ``lam``: ``auto`` or a number).
    low, high : inclusive numeric range (``low_open``/``high_open``: exclusive); for lists, of each item.
    auto : what the default means when it is a placeholder (``0`` = "k-fraction x budget").
    """

    name: str
    default: Any
    meaning: str
    kind: type | None = None
    choices: tuple = ()
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    auto: str = ""

    @property
    def type(self) -> type:
        if self.kind is not None:
            return self.kind
        return type(self.default) if self.default is not None else str

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def values_text(self) -> str:
        """What ``dataselect methods`` shows as valid values: ``max|mean``, ``INT``, ``auto|NUMBER``, ``INT,INT,...``."""
        t = self.type
        if t is str:
            return "|".join(map(str, self.choices)) if self.choices else "TEXT"
        if t is bool:
            return "true|false"
        if t is list:
            return "INT,INT,..."
        number = "INT" if t is int else "NUMBER"
        if self.choices and t is float and all(isinstance(c, str) for c in self.choices):
            return "|".join([*self.choices, number])
        if self.choices:
            return "|".join(str(c) for c in self.choices)
        return number

    def default_text(self) -> str:
        value = self.default
        if value is None or value == [] or value == "":
            shown = "empty"
        elif isinstance(value, bool):
            shown = str(value).lower()
        else:
            shown = str(value)
        return f"{shown} = {self.auto}" if self.auto else shown

    def describe(self) -> dict:
        return {"name": self.flag, "values": self.values_text(), "default": self.default_text(), "meaning": self.meaning}

    # -- conversion and validation ------------------------------------------------------------------------------
    def _refuse(self, raw, expected: str) -> DataselectError:
        return DataselectError(f"{self.flag} {raw!r}: {expected}")

    def convert(self, raw):
        """``raw`` (a string from the command line or a config, or a typed value) as this parameter's value,
        validated; refused in one line naming the flag."""
        t = self.type
        if t is list:
            return self._list(raw)
        if t is bool:
            if isinstance(raw, bool):
                return raw
            if isinstance(raw, str) and raw.strip().lower() in _TRUE + _FALSE:
                return raw.strip().lower() in _TRUE
            raise self._refuse(raw, "expected true or false")
        if t is str:
            value = raw if isinstance(raw, str) else os.fspath(raw) if isinstance(raw, os.PathLike) else None
            if value is None or (self.choices and value not in self.choices):
                expected = f"choose from {', '.join(map(str, self.choices))}" if self.choices else "expected text"
                raise self._refuse(raw, expected)
            return value
        if self.choices and isinstance(raw, str) and raw in self.choices and all(isinstance(c, str) for c in
                                                                                  self.choices):
            return raw  # a named value of a numeric parameter (lam: auto)
        value = self._number(raw, t)
        if self.choices and not all(isinstance(c, str) for c in self.choices) and value not in self.choices:
            raise self._refuse(raw, f"choose {' or '.join(map(str, self.choices))}")
        self._check_range(raw, value)
        return value

    def _number(self, raw, t: type):
        names = [c for c in self.choices if isinstance(c, str)]
        expected = ("an integer" if t is int else "a number") + (f" or {' or '.join(names)}" if names else "")
        if isinstance(raw, bool):
            raise self._refuse(raw, f"expected {expected}")
        try:
            if t is int:
                if isinstance(raw, str):
                    f = float(raw.strip())
                    if not f.is_integer():
                        raise ValueError
                    return int(f)
                if isinstance(raw, float) and not raw.is_integer():
                    raise ValueError
                return int(raw)
            value = float(raw)
        except (TypeError, ValueError, OverflowError):
            raise self._refuse(raw, f"expected {expected}") from None
        if not math.isfinite(value):
            raise self._refuse(raw, f"expected a finite number{' or ' + ' or '.join(names) if names else ''}")
        return value

    def _check_range(self, raw, value) -> None:
        lo_bad = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        hi_bad = self.high is not None and (value >= self.high if self.high_open else value > self.high)
        if lo_bad or hi_bad:
            lo = "" if self.low is None else f"{'>' if self.low_open else '>='} {self.low:g}"
            hi = "" if self.high is None else f"{'<' if self.high_open else '<='} {self.high:g}"
            raise self._refuse(raw, f"must be {' and '.join(x for x in (lo, hi) if x)}")

    def _list(self, raw) -> list[int]:
        if raw is None or raw == "":
            return []
        items = raw.split(",") if isinstance(raw, str) else list(raw) if isinstance(raw, (list, tuple)) else None
        if items is None:
            raise self._refuse(raw, "expected integers separated by commas")
        out = []
        for item in items:
            if isinstance(item, str) and not item.strip():
                continue
            try:
                value = int(item) if not isinstance(item, str) else int(item.strip())
            except (TypeError, ValueError):
                raise self._refuse(raw, "expected integers separated by commas") from None
            if isinstance(item, bool) or (isinstance(item, float) and not item.is_integer()):
                raise self._refuse(raw, "expected integers separated by commas")
            self._check_range(raw, value)
            out.append(value)
        return out
