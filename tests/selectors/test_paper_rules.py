"""The clustering selectors' rules held to independent computations written from the papers.

kmeans-sensitivity's rules are in tests/test_kmeans_sensitivity.py.
hierarchical-kmeans: Vo et al. 2024 / ssl-data-curation -- water-filling cut, remainder +1 to a
random choice among the clusters above the cut.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import modes, run_cli
from dataselect.selectors import build_selector
from dataselect.selectors.hierarchical_kmeans import best_cut, water_fill
from dataselect.store import Store
from dataselect.store.synthetic import store_from_array


def brute_cut(sizes, target):
    return max(c for c in range(0, max(sizes) + 1) if sum(min(c, s) for s in sizes) <= target)


@pytest.mark.parametrize("seed", range(20))
def test_water_filling_cut_and_random_remainder(seed):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(0, 30, rng.integers(1, 10))
    for target in (0, 1, int(sizes.sum()) // 2, max(int(sizes.sum()) - 1, 0)):
        c = brute_cut(sizes.tolist(), target)
        assert best_cut(sizes, target) == c
        take = water_fill(sizes, target, np.random.default_rng(seed))
        assert take.sum() == target and (take <= sizes).all()
        extra = take - np.minimum(c, sizes)
        assert set(extra.tolist()) <= {0, 1} and (extra[sizes <= c] == 0).all()


def test_random_remainder_spreads_evenly_over_the_clusters_above_the_cut():
    sizes = np.array([10, 10, 3, 10, 10, 2])
    # cut 6: 6+6+3+6+6+2 = 29 <= 30 < 33; remainder 1 -> one of the four clusters of size 10
    hits = np.zeros(len(sizes))
    trials = 2000
    for s in range(trials):
        hits += water_fill(sizes, 30, np.random.default_rng(s)) - np.minimum(6, sizes)
    assert hits[[2, 5]].sum() == 0
    np.testing.assert_allclose(hits[[0, 1, 3, 4]] / trials, 0.25, atol=4 * np.sqrt(0.25 * 0.75 / trials))
    # "largest" (the old rule) always gives it to the first largest
    assert water_fill(sizes, 30, remainder="largest").tolist() == [7, 6, 3, 6, 6, 2]


def test_hierarchical_defaults_are_the_references():
    sel = build_selector("hierarchical-kmeans", {})
    assert (sel.niter, sel.resamples, sel.resample, sel.leaf, sel.remainder) == (50, 9, "closest", "random", "random")
    km = build_selector("kmeans-sensitivity", {})
    assert (km.variant, km.lam, km.z, km.k_fraction, km.draws, km.warm_start) == ("loss", "auto", 2.0, 0.2,
                                                                                   "systematic", 0.0)


def test_resampling_strategies_differ_and_are_deterministic(tmp_path):
    x, _ = modes(3000, 16, 12, seed=4)
    store_from_array(tmp_path / "s", x, shard_rows=1000)
    st = Store(tmp_path / "s")
    pick = lambda **p: build_selector("hierarchical-kmeans", {"k": "60,6", "resamples": 2, **p}).select(  # noqa: E731
        st, 300, np.random.default_rng(0))
    a, b = pick(resample="closest"), pick(resample="random")
    assert a.rows.tolist() == pick(resample="closest").rows.tolist()
    assert a.rows.tolist() != b.rows.tolist()
    assert a.info["clustering"]["strategy"] == "closest" and b.info["clustering"]["strategy"] == "random"


def test_methods_states_rule_source_and_every_parameter(capsys):
    from dataselect.selectors import REGISTRY

    run_cli("methods")
    out = capsys.readouterr().out
    for name, cls in REGISTRY.items():
        assert cls.rule and cls.source and name in out
        docs = cls.parameter_docs()
        for p in cls.parameters():
            assert docs.get(p), f"{name} --{p} has no meaning in its docstring"
    assert "arXiv 2402.17327" in out and "hierarchical_sampling.py" in out and "--lam auto|NUMBER  (default: auto" in out
