"""dataselect: pick the best instruction-tuning data from pools of millions of samples.

Data flows one way: pool -> embed -> store -> index -> select -> export.

The Python API (``import dataselect as ds``): ``ds.embed``, ``ds.score``, ``ds.dedup``, ``ds.select``, ``ds.export``,
``ds.open_store``, ``ds.load_selection``, ``ds.methods`` (see :mod:`dataselect.api`). They are
imported on first use, so ``import dataselect`` (and the command line) stays fast.
"""

__version__ = "0.1.0"

_API = ("SelectionResult", "dedup", "embed", "export", "load_selection", "methods", "open_store", "score", "select")
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        from dataselect import api

        return getattr(api, name)
    raise AttributeError(f"module 'dataselect' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
