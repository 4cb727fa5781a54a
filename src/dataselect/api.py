"""The Python API: every command as a function, for notebooks and scripts.

>>> import dataselect as ds
>>> store = ds.embed("pool.jsonl", model="bundled", out="stores/pool")          # doctest: +SKIP
>>> queries = ds.embed("gsm8k.jsonl", model="bundled", out="stores/q", task="gsm8k")  # doctest: +SKIP
>>> sel = ds.select(store, method="rds+", queries=[queries], budget="10k")      # doctest: +SKIP
>>> sel.to_pandas().head()                                                       # doctest: +SKIP
>>> sel.save("sel/rds")                                                          # doctest: +SKIP
>>> ds.export(sel, pool="pool.jsonl", out="selected.jsonl")                      # doctest: +SKIP

Each function is a thin face of its operation (:mod:`dataselect.operations`): keyword arguments become
the operation's options (the function's signature is made from them, defaults included), and the
result is the operation's. The same checks, locks and atomic writes as the command; errors are
:class:`dataselect.errors.DataselectError`.
"""

from __future__ import annotations

import dataclasses
from inspect import Parameter as _Parameter  # `inspect` is ds.inspect here

from dataselect import operations as ops
from dataselect.errors import DataselectError
from dataselect.operations import SelectionResult, load_selection, methods
from dataselect.selection_run import RunSpec
from dataselect.store import open_store  # ds.open_store(path) -> a Store

__all__ = ["SelectionResult", "compare", "dedup", "demo", "embed", "explain", "export", "index", "inspect",
           "load_selection", "methods", "neighbors", "open_store", "queries", "report", "run", "score", "select",
           "verify"]


def _face(name: str, op, options: type[ops.Options], positional: tuple[str, ...] = (), result=None):
    """The API function of ``op``: positional ``positional`` and keyword arguments -> ``options`` -> ``op``
    (``result(value, options)`` turns its result into what the function returns)."""

    def call(*args, **kwargs):
        if len(args) > len(positional):
            raise DataselectError(f"{name}() takes {len(positional)} positional argument(s) "
                                  f"({', '.join(positional) or 'none'}); give the others by name")
        given = dict(zip(positional, args, strict=False))
        twice = sorted(set(given) & set(kwargs))
        if twice:
            raise DataselectError(f"{name}() got {', '.join(twice)} twice")
        o = options.of(f"{name}()", {**given, **kwargs})
        value = op(o)
        return result(value, o) if result else value

    call.__name__ = call.__qualname__ = name
    call.__module__ = __name__
    call.__signature__ = options.signature(positional)
    call.__doc__ = f"{(op.__doc__ or '').strip()}\n\nOptions: :class:`{options.__module__}.{options.__name__}`."
    return call


embed = _face("embed", *ops.COMMANDS["embed"], result=lambda man, o: open_store(o.out))
embed.__doc__ += " Returns the store (a :class:`~dataselect.store.Store`)."
score, inspect, verify, index, neighbors, dedup, queries, export, report, explain, demo = (
    _face(name, *ops.COMMANDS[name]) for name in ("score", "inspect", "verify", "index", "neighbors", "dedup",
                                                   "queries", "export", "report", "explain", "demo"))


def compare(*selections, **options) -> ops.Findings:
    """``dataselect compare``: two or more selection folders of one pool, then the options of
    :class:`~dataselect.operations.outputs.CompareOptions` by name (``queries``, ``png``, ``overwrite``,
    ``progress``). Returns :class:`~dataselect.operations.outputs.Findings`: overlap, per-task and
    per-source counts and each selection's quality figures."""
    if selections and "selections" in options:
        raise DataselectError("compare() got selections twice")
    values = {"selections": list(selections), **options} if selections else options
    return ops.compare(ops.CompareOptions.of("compare()", values))


_sig = ops.CompareOptions.signature(("selections",))  # selections first, then taken as *selections
compare.__signature__ = _sig.replace(parameters=[p.replace(kind=_Parameter.VAR_POSITIONAL) if p.name == "selections"
                                                 else p for p in _sig.parameters.values()])

_SPEC = [f.name for f in dataclasses.fields(RunSpec) if f.name not in ("params", "store", "method")]


def _spec(what: str, store, method: str, options: dict) -> RunSpec:
    """A :class:`RunSpec`: the names it has are its settings, every other name a parameter of the method."""
    settings = {k: v for k, v in options.items() if k in _SPEC}
    if "budget" not in settings:
        raise DataselectError(f"{what}: give budget= (rows: 1000, '10k', '2.5M', or a share: '25%')")
    dedup_ = settings.get("dedup")
    if dedup_ is not None:  # a Dedup result or its folder
        settings["dedup"] = str(getattr(dedup_, "path", None) or dedup_)
    if settings.get("max_memory") is not None:
        settings["max_memory"] = str(settings["max_memory"])
    if isinstance(settings.get("budget"), (int, float)) and not isinstance(settings["budget"], bool):
        settings["budget"] = str(settings["budget"])
    from dataselect.checks import as_path, as_paths

    settings["queries"] = [str(q) for q in as_paths(settings.get("queries", ()), "queries")]
    return RunSpec(store=str(as_path(store, "store")), method=method, **settings,
                   params={k: v for k, v in options.items() if k not in _SPEC})


def select(store, method: str = RunSpec.method, **options) -> SelectionResult:
    """Pick ``budget`` rows (``1000``, ``"10k"``, ``"2.5M"``, ``"25%"``) of the pool ``store`` with ``method``;
    nothing is written until :meth:`SelectionResult.save`.

    Options are :class:`~dataselect.selection_run.RunSpec`'s (``queries``: query stores or their paths; ``seed``,
    ``device``, ``max_memory``, ``engine``, ``address``, ``allow_all``, ``progress``; ``dedup``: a
    :class:`~dataselect.duplicates.Dedup` or its folder, to pick from its kept rows only); every other
    name is a parameter of the method (``dataselect methods``), e.g. ``aggregate="max"`` for rds+ or
    ``k=[1000, 100]`` for hierarchical-kmeans.
    """
    return ops.select(_spec("select()", store, method, options))


def run(store, method: str = RunSpec.method, **options) -> SelectionResult:
    """``dataselect run``: :func:`select`, then the selection folder written to ``out`` (its lock held from
    the start; ``overwrite`` replaces one dataselect wrote). Returns the saved selection."""
    return ops.run(_spec("run()", store, method, options))
