"""The clustering selectors' rules held to independent computations written from the papers.

kmeans-sensitivity: Axiotis et al. 2024 -- p(e) ~ l(C_e) + lam |e - c_e|^z with l the loss of the
row nearest each centre, i.i.d. draws with replacement, weight = draws / (m p).
hierarchical-kmeans: Vo et al. 2024 / ssl-data-curation -- water-filling cut, remainder +1 to a
random choice among the clusters above the cut.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import make_records, run_cli, write_jsonl
from dataselect.errors import DataselectError
from dataselect.selection import read_selection
from dataselect.selectors import build_selector
from dataselect.selectors.hierarchical_kmeans import best_cut, water_fill
from dataselect.selectors.kmeans_sensitivity import (
    coreset_probabilities,
    draw_with_replacement,
    estimate_lam,
    loss_probabilities,
)
from dataselect.store import Store
from dataselect.store.synthetic import store_from_array


def modes(n: int, dim: int, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, dim)).astype(np.float32) * 2
    mode = rng.integers(0, k, n)
    x = centres[mode] + 0.3 * rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True), mode


def test_loss_probabilities_are_the_papers_formula():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 300)
    dist2 = rng.random(300)
    loss = np.array([0.5, 2.0, 1.0, 0.1, 3.0])
    for lam, z in [(0.0, 2.0), (1.7, 2.0), (0.4, 1.0)]:
        p = loss_probabilities(labels, dist2, loss, lam, z)
        v = [loss[labels[i]] + lam * np.sqrt(dist2[i]) ** z for i in range(300)]
        np.testing.assert_allclose(p, np.array(v) / sum(v), rtol=1e-12)
    with pytest.raises(DataselectError):
        loss_probabilities(labels, dist2, -loss, 1.0)


def test_coreset_probabilities_are_the_lightweight_coreset():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 6, 200)
    labels[labels == 5] = 4  # cluster 5 empty
    dist2 = rng.random(200).astype(np.float32)
    p = coreset_probabilities(labels, dist2, 6)
    cost, nonempty = float(dist2.astype(np.float64).sum()), len(set(labels.tolist()))
    for i in range(200):
        size = int((labels == labels[i]).sum())
        assert p[i] == pytest.approx(0.5 * float(dist2[i]) / cost + 0.5 / (nonempty * size), rel=1e-9)


def test_draws_reach_exactly_budget_distinct_rows():
    p = np.random.default_rng(0).dirichlet(np.full(500, 0.3))  # skewed: many repeats
    for seed in range(5):
        rows, draws, m = draw_with_replacement(p, 120, np.random.default_rng(seed))
        assert len(rows) == len(set(rows.tolist())) == 120 and draws.sum() == m and (draws >= 1).all()
        assert draws[-1] == 1  # the m-th draw brought the 120th distinct row, in first-draw order
    heavy = int(np.argmax(p))
    rows, draws, m = draw_with_replacement(p, 200, np.random.default_rng(9))
    assert draws[rows == heavy][0] == pytest.approx(m * p[heavy], rel=0.5)  # drawn about m p times


def test_draws_refuse_an_unreachable_budget():
    p = np.array([1.0 - 1e-12, *([1e-12 / 9] * 9)])
    with pytest.raises(DataselectError, match="lower --budget"):
        draw_with_replacement(p, 10, np.random.default_rng(0))


def test_weighted_estimator_is_unbiased_over_seeds():
    """(1/n) sum over the selection of weight * f estimates the pool mean of f (Hansen-Hurwitz)."""
    rng = np.random.default_rng(1)
    n = 3000
    f = rng.gamma(2.0, 1.0, n)  # any per-row quantity
    p = rng.dirichlet(np.full(n, 2.0))
    estimates = []
    for seed in range(300):
        rows, draws, m = draw_with_replacement(p, 200, np.random.default_rng(seed))
        estimates.append(float((draws / (m * p[rows]) * f[rows]).sum() / n))
    est = np.array(estimates)
    se = est.std() / np.sqrt(len(est))
    assert abs(est.mean() - f.mean()) < 4 * se + 1e-3 * f.mean(), (est.mean(), f.mean(), se)


def test_lam_estimate_is_the_median_local_ratio():
    rng = np.random.default_rng(3)
    emb = rng.standard_normal((40, 5)).astype(np.float32)
    loss = rng.gamma(2.0, 1.0, 40)
    for z in (2.0, 1.0):
        ratios = []
        for i in range(40):
            d = [float(np.linalg.norm(emb[i] - emb[j])) if j != i else np.inf for j in range(40)]
            j = int(np.argmin(d))
            ratios.append(abs(loss[i] - loss[j]) / d[j] ** z)
        assert estimate_lam(emb, loss, z) == pytest.approx(float(np.median(ratios)), rel=1e-4)


@pytest.fixture(scope="module")
def loss_store(tmp_path_factory):
    """Eight modes; the loss of a row depends on its mode (mode 3 is 'hard')."""
    x, mode = modes(4000, 16, 8, seed=2)
    loss = np.where(mode == 3, 4.0, 0.5).astype(np.float32) + 0.01 * np.arange(4000, dtype=np.float32) / 4000
    path = tmp_path_factory.mktemp("ls") / "store"
    store_from_array(path, x, shard_rows=1000, extra={"loss_response": loss})
    return Store(path), mode, loss


def test_selector_follows_the_rule_with_representative_losses(loss_store):
    store, mode, loss = loss_store
    sel = build_selector("kmeans-sensitivity", {"k": 8, "lam": 0.0}).select(store, 400, np.random.default_rng(0))
    info = sel.info
    assert info["loss_source"] == "store column loss_response" and info["representatives_scored"] == 8
    # lam = 0: p(e) = l(rep of e's cluster) / sum -> the hard mode (8x the loss) is drawn ~8x as often per row
    share_hard = float(np.mean(mode[sel.rows] == 3))
    pool_hard = float(np.mean(mode == 3))
    assert share_hard > 2.5 * pool_hard, (share_hard, pool_hard)
    # recompute p independently for the picked rows from the clustering and the losses of the representatives
    from dataselect.pool_index import cluster_store

    cl = cluster_store(store, 8, niter=20, init_sample=32)
    rep_loss = {}
    for c in range(8):
        members = np.nonzero(cl.labels == c)[0]
        rep_loss[c] = float(loss[members[np.argmin(cl.dist2[members])]])
    v = np.array([rep_loss[c] for c in cl.labels])
    np.testing.assert_allclose(sel.scores, (v / v.sum())[sel.rows], rtol=1e-5)
    draws = sel.extra["draws"]
    np.testing.assert_allclose(sel.weights, draws / (info["draws"] * (v / v.sum())[sel.rows]), rtol=1e-4)


def test_default_lam_is_estimated_and_recorded(loss_store, tmp_path):
    store, _, _ = loss_store
    run_cli("run", "--store", store.path, "--method", "kmeans-sensitivity", "--k", "8", "--budget", "100",
            "--out", tmp_path / "sel", "-q")
    _, meta = read_selection(tmp_path / "sel")
    info = meta["method_info"]
    assert info["lam"] == info["lam_estimated"] > 0 and info["z"] == 2.0 and info["variant"] == "loss"


def test_no_loss_is_one_clear_line(tmp_path):
    x, _ = modes(500, 8, 4)
    store_from_array(tmp_path / "s", x, shard_rows=250)
    _, err = run_cli("run", "--store", tmp_path / "s", "--method", "kmeans-sensitivity", "--k", "4", "--budget", "10",
                     "--out", tmp_path / "sel", expect=2)
    assert "--with-loss" in err and "--loss-model" in err and "--variant coreset" in err and len(err.splitlines()) == 1


def test_loss_model_scores_only_the_representatives(tmp_path, tiny_llama):
    """Losses computed for the k representatives equal the ones `embed --with-loss` stores for those rows."""
    pool = write_jsonl(tmp_path / "pool.jsonl", make_records(60, seed=3))
    run_cli("embed", pool, "-m", tiny_llama, "-o", tmp_path / "plain", "-q")
    run_cli("embed", pool, "-m", tiny_llama, "-o", tmp_path / "lossy", "--with-loss", "-q")
    plain, lossy = Store(tmp_path / "plain"), Store(tmp_path / "lossy")
    a = build_selector("kmeans-sensitivity", {"k": 5, "lam": 0.5, "loss_model": tiny_llama, "pool": str(pool)}
                       ).select(plain, 20, np.random.default_rng(0))
    b = build_selector("kmeans-sensitivity", {"k": 5, "lam": 0.5}).select(lossy, 20, np.random.default_rng(0))
    assert a.info["representatives_scored"] == 5 and "scored with" in a.info["loss_source"]
    assert a.rows.tolist() == b.rows.tolist()
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-4)


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
    assert (km.variant, km.lam, km.z) == ("loss", -1.0, 2.0)


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
    assert "arXiv 2402.17327" in out and "hierarchical_sampling.py" in out and "--lam NUMBER  (default: -1.0" in out
