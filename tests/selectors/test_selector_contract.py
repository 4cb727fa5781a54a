"""The contract every registered selector keeps (issue 26): a sixth method is checked by being registered.

For each method in the registry, on a small store with losses (and query stores where the method
takes them): the same seed gives the same selection; exactly the budget of distinct rows of the pool
(budget 1 and budget n included, where the method allows them); parameters round-trip through
``get_params`` and ``build_selector``; the selection is a valid Selection (scores, weights, tasks
aligned).
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from conftest import modes
from dataselect.resources import Resources
from dataselect.selectors import REGISTRY, build_selector
from dataselect.store import Store
from dataselect.store.synthetic import store_from_array

N = 600
# what a method needs beyond its defaults to run on a 600-row store in seconds
SMALL = {"kmeans-sensitivity": {"k": 6}, "hierarchical-kmeans": {"k": [12, 3], "resamples": 1, "niter": 5}}


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("contract")
    x, mode = modes(N, 8, 6, seed=7)
    rng = np.random.default_rng(0)
    cols = {"loss_response": (0.5 + 0.3 * mode + rng.random(N)).astype(np.float32),
            "loss_response_alone": (1.0 + 0.3 * mode + rng.random(N)).astype(np.float32),
            "n_response_tokens": np.full(N, 10, dtype=np.int32)}
    store_from_array(root / "pool", x, shard_rows=250, extra=cols)
    store_from_array(root / "q", x[[0, 1, 300, 301]], kind="queries", tasks=["a", "a", "b", "b"])
    return Store(root / "pool"), [Store(root / "q")]


def _select(method, stores, budget, seed=0):
    pool, queries = stores
    sel = build_selector(method, dict(SMALL.get(method, {})))
    q = queries if type(sel).needs_queries else []  # methods that only take queries run target-free here
    return sel.select(pool, budget, np.random.default_rng(seed), q, Resources.make(progress=False))


METHODS = sorted(REGISTRY)


@pytest.mark.parametrize("method", METHODS)
def test_the_same_seed_gives_the_same_selection(stores, method):
    a, b = _select(method, stores, 50, seed=3), _select(method, stores, 50, seed=3)
    assert np.array_equal(a.rows, b.rows) and np.array_equal(a.scores, b.scores, equal_nan=True)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("budget", [1, 37, N])
def test_exactly_the_budget_of_distinct_pool_rows(stores, method, budget):
    pool = stores[0]
    small = SMALL.get(method, {})
    if method == "kmeans-sensitivity" and budget < small["k"]:
        pytest.skip("the k representatives are part of the selection: budget >= k")
    sel = _select(method, stores, budget)
    assert len(sel) == budget and len(np.unique(sel.rows)) == budget
    assert np.isin(sel.rows, pool.rows()).all()
    for arr in (sel.scores, sel.weights, sel.tasks):
        assert arr is None or len(arr) == budget
    if sel.weights is not None:
        assert np.all(np.asarray(sel.weights) > 0)


@pytest.mark.parametrize("method", METHODS)
def test_parameters_round_trip(method):
    sel = build_selector(method, dict(SMALL.get(method, {})))
    again = build_selector(method, sel.get_params())
    assert repr(again) == repr(sel)
    cls = type(sel)
    assert cls.name == method and (cls.__doc__ or "").strip() and cls.rule and cls.source
    assert set(sel.get_params()) == {d["name"][2:].replace("-", "_") for d in cls.describe_parameters()}


@pytest.mark.parametrize("method", METHODS)
def test_parameters_are_keywords_declared_once_and_checked_when_built(method):
    """Issue 26: a positional parameter was silently 'no parameter'; choices were declared three times."""
    from dataselect.errors import DataselectError

    cls = REGISTRY[method]
    with pytest.raises(TypeError):
        cls("positional")
    with pytest.raises(DataselectError, match=re.escape(f"method '{method}' has no parameter --bogus")):
        build_selector(method, {"bogus": "1"})
    for p in cls.params:  # every declared choice is accepted, and what is not declared is refused naming the flag
        for choice in p.choices:
            build_selector(method, {p.name: str(choice), **({} if p.name != "loss_model" else {"pool": "p"})})
        if p.type is not bool:
            with pytest.raises(DataselectError, match=p.flag):
                build_selector(method, {p.name: "surely-not-a-value" if p.type is not str or p.choices else []})


def test_registering_is_the_decorator_alone():
    """Issue 26: a method was registered twice (``@register`` and a BUILTIN table). The registry now reads
    the package's ``@register`` classes from their source: what it lists is what the modules register,
    and asking for ``random`` imports neither torch nor the other selectors' modules."""
    import importlib
    import pkgutil
    import subprocess
    import sys

    import dataselect.selectors as package
    from dataselect.selectors.base import _builtin

    for mod in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"dataselect.selectors.{mod.name}")
    registered = {name: cls.__module__.rsplit(".", 1)[1] for name, cls in REGISTRY._classes.items()
                  if cls.__module__.startswith("dataselect.selectors.")}
    assert _builtin() == registered and len(registered) == 5
    code = ("import sys; from dataselect.selectors import REGISTRY; cls = REGISTRY['random']; "
            "print(cls.name, 'torch' in sys.modules, sorted(m for m in sys.modules if m.startswith('dataselect.selectors.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split(" ", 2)
    assert out[0] == "random" and out[1] == "False", out
    assert "rds_plus" not in out[2] and "kmeans_sensitivity" not in out[2]
