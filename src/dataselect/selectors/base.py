"""The selector interface and registry.

A selector is a small class (scikit-learn style): its parameters are declared once, as
:class:`~dataselect.selectors.params.Param` entries of ``params`` (type, default, choices or range,
meaning); the base ``__init__`` takes them as keywords, converts and validates each, stores it as an
attribute and calls :meth:`Selector.validate` for checks across parameters; ``select`` does the work.
Adding a selector is one new module in this package with a class decorated by :func:`register`: the
registry finds it by reading the package's source (:func:`_builtin`), without importing it.

The registry imports a selector's module when the selector is first asked for, so ``run --method
random`` never pays for torch, FAISS or scikit-learn.
"""

from __future__ import annotations

import ast
import importlib
import typing
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import ClassVar

import numpy as np

from dataselect.errors import DataselectError
from dataselect.resources import Resources
from dataselect.selection import Selection
from dataselect.selectors.params import Param
from dataselect.store import Store


def _builtin() -> dict[str, str]:
    """Method name -> module of this package that registers it, read from the modules' source without
    importing them: every class decorated with ``@register`` and its ``name = "..."``. So registering is
    the decorator alone, and ``run --method random`` still never imports torch, FAISS or scikit-learn."""
    if _BUILTIN:
        return _BUILTIN
    for path in sorted(Path(__file__).parent.glob("*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if not (isinstance(node, ast.ClassDef)
                    and any(isinstance(d, ast.Name) and d.id == "register" for d in node.decorator_list)):
                continue
            for stmt in node.body:
                target = stmt.targets[0] if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 else \
                    getattr(stmt, "target", None)
                if isinstance(target, ast.Name) and target.id == "name" and isinstance(stmt.value, ast.Constant):
                    _BUILTIN[stmt.value.value] = path.stem
    return _BUILTIN


_BUILTIN: dict[str, str] = {}


class _Registry(Mapping):
    """Method name -> selector class; built-in modules are imported when first needed."""

    def __init__(self) -> None:
        self._classes: dict[str, type[Selector]] = {}

    def _load(self, name: str) -> None:
        if name not in self._classes and name in _builtin():
            importlib.import_module(f"dataselect.selectors.{_builtin()[name]}")

    def __getitem__(self, name: str) -> type[Selector]:
        self._load(name)
        return self._classes[name]

    def __contains__(self, name: object) -> bool:
        return name in self._classes or name in _builtin()

    def __iter__(self) -> Iterator[str]:
        for name in _builtin():
            self._load(name)
        return iter(sorted(self._classes))

    def __len__(self) -> int:
        return len(set(self._classes) | set(_builtin()))

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
    params: ClassVar[tuple[Param, ...]] = ()  # the parameters, declared once (selectors/params.py)
    needs_queries: ClassVar[bool] = False
    uses_queries: ClassVar[bool] = False  # takes --queries without needing them (target-aware mode)
    needs_losses: ClassVar[bool] = False  # with its default parameters, needs a store with loss columns
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


    def __init__(self, **params):
        """Keyword parameters only, each converted and validated by its :class:`Param` declaration (strings
        from the command line or typed values), then :meth:`validate` for checks across parameters."""
        declared = self.parameters()
        for key in params:
            if key not in declared:
                valid = ", ".join(p.flag for p in self.params) or "none"
                raise DataselectError(f"method {self.name!r} has no parameter --{key.replace('_', '-')} "
                                      f"(its parameters: {valid})")
        for name, p in declared.items():
            if name in params:
                value = p.convert(params[name])
            else:
                value = list(p.default) if isinstance(p.default, list) else p.default
            setattr(self, name, value)
        self.validate()

    def pool_scores(self, pool: Store, positions: np.ndarray, queries: typing.Sequence[Store] = ()) -> np.ndarray | None:
        """Scores of the pool rows at store ``positions`` (a sample) on this method's own scale, for the report's
        score histogram beside the selected rows' scores; None: the method has no such scale."""
        return None

    def explain(self, pool: Store, row: int, embedding: np.ndarray, queries: typing.Sequence[Store], table, meta: dict,
                n_queries: int = 3) -> tuple[dict, list[str]]:
        """Facts particular to this method about one pool ``row`` (its ``embedding``, (1, dim)) in a selection it
        made (``table``, ``meta``), and lines saying them; ``dataselect explain`` adds them to the common ones."""
        return {}, []

    def validate(self) -> None:  # noqa: B027  (a hook: most selectors have nothing to add)
        """Checks that involve several parameters (called once, when the selector is built)."""

    @classmethod
    def parameters(cls) -> dict[str, Param]:
        return {p.name: p for p in cls.params}

    @classmethod
    def parameter_docs(cls) -> dict[str, str]:
        """Meaning of each parameter (from its declaration)."""
        return {p.name: p.meaning for p in cls.params}

    @classmethod
    def describe_parameters(cls) -> list[dict]:
        """One entry per parameter: ``name`` (as a flag), ``values`` (valid values), ``default`` (the
        effective default, with what an automatic default resolves to) and ``meaning``."""
        return [p.describe() for p in cls.params]

    def get_params(self) -> dict:
        return {n: getattr(self, n) for n in self.parameters()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"


def register(cls: type[Selector]) -> type[Selector]:
    """Class decorator: make ``cls`` available as ``--method cls.name``."""
    REGISTRY.add(cls)
    return cls


def get_selector(name: str) -> type[Selector]:
    if name not in REGISTRY:
        raise DataselectError(f"unknown method {name!r}; choose from {', '.join(sorted(REGISTRY))} "
                              "(`dataselect methods` lists them with their parameters)")
    return REGISTRY[name]


def build_selector(method: str, params: dict) -> Selector:
    """Instantiate a registered selector from string or typed parameters, with clear errors."""
    return get_selector(method)(**{key.replace("-", "_"): raw for key, raw in params.items()})


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
