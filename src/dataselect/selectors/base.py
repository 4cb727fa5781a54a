"""The selector interface and registry.

A selector is a small class (scikit-learn style): parameters are keyword arguments of ``__init__``
with type annotations and defaults, validated there; ``select`` does the work. Adding a selector is
one new module with a class decorated by :func:`register`, plus its line in :data:`BUILTIN`.

The registry imports a selector's module when the selector is first asked for, so ``run --method
random`` never pays for torch, FAISS or scikit-learn.
"""

from __future__ import annotations

import importlib
import inspect
import re
import types
import typing
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from typing import ClassVar

import numpy as np

from dataselect.checks import typed
from dataselect.errors import DataselectError
from dataselect.resources import Resources
from dataselect.selection import Selection
from dataselect.store import Store

# method name -> module under dataselect.selectors that registers it (imported on first use)
BUILTIN = {
    "random": "uniform",
    "rds+": "rds_plus",
    "kmeans-sensitivity": "kmeans_sensitivity",
    "hierarchical-kmeans": "hierarchical_kmeans",
    "loss": "loss",
}


class _Registry(Mapping):
    """Method name -> selector class; built-in modules are imported when first needed."""

    def __init__(self) -> None:
        self._classes: dict[str, type[Selector]] = {}

    def _load(self, name: str) -> None:
        if name not in self._classes and name in BUILTIN:
            importlib.import_module(f"dataselect.selectors.{BUILTIN[name]}")

    def __getitem__(self, name: str) -> type[Selector]:
        self._load(name)
        return self._classes[name]

    def __contains__(self, name: object) -> bool:
        return name in self._classes or name in BUILTIN

    def __iter__(self) -> Iterator[str]:
        for name in BUILTIN:
            self._load(name)
        return iter(sorted(self._classes))

    def __len__(self) -> int:
        return len(set(self._classes) | set(BUILTIN))

    def add(self, cls: type[Selector]) -> None:
        if cls.name in self._classes:
            raise ValueError(f"selector {cls.name!r} registered twice")
        self._classes[cls.name] = cls


REGISTRY = _Registry()


class Selector(ABC):
    """Base class of selectors.

    Subclasses set ``name`` (the ``--method`` value), ``needs_queries`` and implement :meth:`select`.
    The class docstring's first line is what ``dataselect methods`` shows.
    """

    name: ClassVar[str]
    needs_queries: ClassVar[bool] = False
    uses_queries: ClassVar[bool] = False  # takes --queries without needing them (target-aware mode)
    rule: ClassVar[str] = ""  # one or two sentences: how rows are picked
    source: ClassVar[str] = ""  # where the rule comes from (paper section, reference file)

    @abstractmethod
    def select(self, pool: Store, budget: int, rng: np.random.Generator,
               queries: typing.Sequence[Store] = (), resources: Resources | None = None) -> Selection:
        """Pick ``budget`` distinct rows of ``pool`` (``1 <= budget <= len(pool)``).

        ``resources``: device, memory budget and progress display (defaults: auto, default budget).
        """

    def cluster_balance(self, pool: Store, table, meta: dict) -> tuple[np.ndarray, np.ndarray] | None:
        """For clustering selectors: (pool rows per cluster, selected rows per cluster) of a selection
        this selector made (``table``, ``meta``: its selection.arrow and selection.json), read from the
        artefact the selection recorded (:func:`used_artefact`), never rebuilt. None: no clusters."""
        return None


    @classmethod
    def parameters(cls) -> dict[str, inspect.Parameter]:
        sig = inspect.signature(cls.__init__)
        return {n: p for n, p in sig.parameters.items() if n != "self" and p.kind == p.KEYWORD_ONLY}

    @classmethod
    def parameter_docs(cls) -> dict[str, str]:
        """Meaning of each parameter, from the ``Parameters`` section of the class docstring."""
        docs: dict[str, str] = {}
        lines = (inspect.getdoc(cls) or "").splitlines()
        current = None
        in_params = False
        for line in lines:
            if line.strip() == "Parameters":
                in_params = True
                continue
            if not in_params or set(line.strip()) == {"-"}:
                continue
            head, sep, text = line.partition(" : ")
            if sep and not line.startswith(" ") and head.strip().isidentifier():
                current = head.strip()
                docs[current] = text.strip()
            elif current and line.startswith(" "):
                docs[current] += " " + line.strip()
            elif not line.strip():
                current = None
        return docs

    @classmethod
    def describe_parameters(cls) -> list[dict]:
        """One entry per parameter: ``name`` (as a flag), ``values`` (valid values), ``default`` (the
        effective default, with what an automatic default resolves to) and ``meaning``.

        Valid values come from the annotation (``Literal`` choices, or the type); what an automatic
        default means comes from the docstring's ``(DEFAULT: what it means)`` note.
        """
        hints = typing.get_type_hints(cls.__init__)
        meanings = cls.parameter_docs()
        out = []
        for name, p in cls.parameters().items():
            meaning = meanings.get(name, "")
            shown = _default_text(p.default)
            m = re.search(r"\(" + re.escape(shown) + r": ([^()]*(?:\([^()]*\)[^()]*)*)\)", meaning)
            default = shown
            if m:
                default = f"{shown} = {m.group(1).strip()}"
                meaning = (meaning[:m.start()].rstrip() + meaning[m.end():]).strip()
            out.append({"name": "--" + name.replace("_", "-"), "values": _values_text(hints.get(name, str)),
                        "default": default, "meaning": meaning})
        return out

    def get_params(self) -> dict:
        return {n: getattr(self, n) for n in self.parameters()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"


def _default_text(value) -> str:
    if value is None or value == [] or value == "":
        return "empty"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _values_text(annotation) -> str:
    """``Literal["max", "mean"]`` -> ``max|mean``; ``int`` -> ``INT``; ``list[int] | None`` -> ``INT,INT,...``."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return "|".join(str(a) for a in args)
    if origin in (typing.Union, getattr(types, "UnionType", None)):
        return "|".join(_values_text(a) for a in args)
    if origin is list:
        inner = _values_text(args[0]) if args else "TEXT"
        return f"{inner},{inner},..."
    return {bool: "true|false", int: "INT", float: "NUMBER", str: "TEXT"}.get(annotation, "TEXT")


def register(cls: type[Selector]) -> type[Selector]:
    """Class decorator: make ``cls`` available as ``--method cls.name``."""
    REGISTRY.add(cls)
    return cls


def get_selector(name: str) -> type[Selector]:
    if name not in REGISTRY:
        raise DataselectError(f"unknown method {name!r}; choose from {', '.join(sorted(REGISTRY))} "
                              "(`dataselect methods` lists them with their parameters)")
    return REGISTRY[name]


def check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise DataselectError(f"--{name.replace('_', '-')} {value!r}: choose from {', '.join(map(str, choices))}")


def _convert(cls: type[Selector], name: str, raw, annotation):
    hints = typing.get_type_hints(cls.__init__)
    target = hints.get(name, str)
    args = [a for a in typing.get_args(target) if a is not type(None)]
    if args and typing.get_origin(target) in (typing.Union, getattr(types, "UnionType", None)):
        literal = [a for a in args if typing.get_origin(a) is typing.Literal]
        if literal and len(args) > 1:  # e.g. Literal["auto"] | float: a named value or a number
            if raw in typing.get_args(literal[0]):
                return raw
            target = next(a for a in args if a not in literal)
        else:
            target = args[0]
    if typing.get_origin(target) is typing.Literal:
        check_choice(name, raw, typing.get_args(target))
        return raw
    if not isinstance(raw, str):
        return typed(f"--{name.replace('_', '-')}", raw, target)
    try:
        if target is bool:
            low = raw.lower()
            if low not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(raw)
            return low in ("true", "1", "yes")
        if target in (int, float):
            return target(float(raw)) if target is int and raw.replace(".", "", 1).isdigit() else target(raw)
        if typing.get_origin(target) is list:
            inner = typing.get_args(target)[0]
            return [inner(x) for x in raw.split(",") if x]
    except ValueError:
        raise DataselectError(f"--{name.replace('_', '-')} {raw!r}: expected {getattr(target, '__name__', target)}") from None
    return raw


def build_selector(method: str, params: dict) -> Selector:
    """Instantiate a registered selector from string or typed parameters, with clear errors."""
    cls = get_selector(method)
    allowed = cls.parameters()
    kwargs = {}
    for key, raw in params.items():
        name = key.replace("-", "_")
        if name not in allowed:
            valid = ", ".join("--" + p.replace("_", "-") for p in allowed) or "none"
            raise DataselectError(f"method {method!r} has no parameter --{key.replace('_', '-')} "
                                  f"(its parameters: {valid})")
        kwargs[name] = _convert(cls, name, raw, allowed[name].annotation)
    return cls(**kwargs)


def parse_extra_args(args: list[str]) -> dict:
    """``['--k', '100', '--leaf=closest', '--spherical']`` -> ``{'k': '100', 'leaf': 'closest', 'spherical': 'true'}``."""
    out, i = {}, 0
    while i < len(args):
        tok = args[i]
        if not tok.startswith("--"):
            raise DataselectError(f"unexpected argument {tok!r}")
        key = tok[2:]
        if "=" in key:
            key, val = key.split("=", 1)
            i += 1
        elif i + 1 < len(args) and not args[i + 1].startswith("--"):
            val = args[i + 1]
            i += 2
        elif key.startswith("no-"):
            key, val = key[3:], "false"
            i += 1
        else:
            val = "true"
            i += 1
        out[key.replace("-", "_")] = val
    return out


def used_artefact(pool: Store, meta: dict, kind: str):
    """The artefact of ``kind`` a selection recorded (``meta``: its selection.json), checked; refused in one
    line when the selection records none or it is gone or stale."""
    from dataselect.store.artefacts import Artefacts

    key = (meta.get("artefacts") or {}).get(kind)
    if not key:
        raise DataselectError(f"the selection records no {kind} (made by an older dataselect); run it again to "
                              f"report its clusters")
    return Artefacts(pool).get(kind, key)
