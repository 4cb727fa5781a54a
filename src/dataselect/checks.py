"""Type and range checks of values that reach dataselect from Python as well as from the command line.

The CLI parses its options with typer; the Python API passes values through unparsed. Both go through
these checks once, before any work, so a wrong value is the same one-line
:class:`~dataselect.errors.DataselectError` from either side (exit 2 on the command line).
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path

import numpy as np

from dataselect.errors import DataselectError

SEED_MAX = 2**32 - 1  # numpy's legacy seeding, torch and the paper scripts' random.Random all take this range


def check_seed(seed) -> int:
    """An integer seed in [0, 2**32 - 1]."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX:
        raise DataselectError(f"--seed {seed!r}: must be an integer from 0 to {SEED_MAX:,}")
    return seed


def as_path(obj, what: str) -> Path:
    """A path, or a Store (its folder), for the argument ``what``."""
    from dataselect.store import Store

    if isinstance(obj, Store):
        return obj.path
    if isinstance(obj, (str, os.PathLike)) and str(obj):
        return Path(obj)
    raise DataselectError(f"{what}: expected a path or a store, got {type(obj).__name__} {obj!r}")


def as_paths(objs, what: str) -> list[Path]:
    """One path-or-store, or a sequence of them (a single string is one path, not its characters)."""
    from dataselect.store import Store

    if objs is None:
        return []
    if isinstance(objs, (str, os.PathLike, Store)):
        return [as_path(objs, what)]
    try:
        items = list(objs)
    except TypeError:
        raise DataselectError(f"{what}: expected paths or stores, got {type(objs).__name__} {objs!r}") from None
    return [as_path(o, what) for o in items]


def typed(flag: str, value, target):
    """``value`` (given from Python, not parsed from text) as the type ``target`` names: int, float (an
    int is taken), bool, str, or a list of one of them (a single value is a list of one); other targets
    pass it through. One line naming ``flag`` otherwise."""
    if typing.get_origin(target) is list:
        inner = (typing.get_args(target) or (str,))[0]
        items = [value] if isinstance(value, (int, float, str)) and not isinstance(value, bool) else value
        try:
            items = list(items)
        except TypeError:
            raise DataselectError(f"{flag} {value!r}: expected a list of {inner.__name__}") from None
        return [typed(flag, v, inner) for v in items]
    if target not in (int, float, bool, str):
        return value
    if target is int and isinstance(value, np.integer):
        return int(value)
    if target is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, target) or (target is int and isinstance(value, bool)):
        raise DataselectError(f"{flag} {value!r}: expected {target.__name__}")
    return value


def check_fields(obj) -> None:
    """Each field of the dataclass ``obj`` has the type its annotation names (:func:`typed`, whose value it
    keeps; ``None`` where the annotation is Optional; a union of several kinds is left to the code that
    reads it); one line naming the option otherwise."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        want = hints[f.name]
        args = typing.get_args(want)
        optional = typing.get_origin(want) in (typing.Union, getattr(types, "UnionType", None)) and type(None) in args
        value = getattr(obj, f.name)
        if value is None and optional:
            continue
        kinds = [a for a in args if a is not type(None)]
        if typing.get_origin(want) in (typing.Union, getattr(types, "UnionType", None)) and len(kinds) > 1:
            continue  # several kinds accepted (str | Path, str | int): the operation resolves which
        target = kinds[0] if optional else want
        setattr(obj, f.name, typed(f"--{f.name.replace('_', '-')}", value, target))
