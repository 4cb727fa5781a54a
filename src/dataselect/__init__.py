"""dataselect: pick the best instruction-tuning data from pools of millions of samples.

Data flows one way: pool -> embed -> store -> index -> select -> export.

The Python API (``import dataselect as ds``): one function per command (``ds.embed``, ``ds.score``,
``ds.dedup``, ``ds.run``, ``ds.export``, ``ds.report``, ...; see :mod:`dataselect.api`), plus
``ds.select`` (a selection computed, not saved), ``ds.open_store`` and ``ds.load_selection``. They are imported on first use, so ``import dataselect`` (and the command
line) stays fast.
"""

__version__ = "0.1.0"

_API = ("SelectionResult", "compare", "dedup", "demo", "embed", "explain", "export", "index", "inspect",
        "load_selection", "methods", "neighbors", "open_store", "queries", "report", "run", "score", "select",
        "verify")
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        from dataselect import api

        return getattr(api, name)
    raise AttributeError(f"module 'dataselect' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
