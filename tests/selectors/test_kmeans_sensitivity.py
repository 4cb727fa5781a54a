"""kmeans-sensitivity held to independent computations written from Axiotis et al. 2024 (arXiv 2402.17327v1).

Each test recomputes a rule of the paper by brute force (numpy over the stored embeddings) and compares
it with what the selector did: §5.1 (k'' = 0.2 x budget, centres rounded to their nearest row, those rows
selected, every row to its closest rounded centre), Algorithm 1 (p(e) ~ l(c_e) + Lambda_i |e - c_e|^z, s
i.i.d. draws weighted 1/(s p)), Lemma 8 / App. B.4 (Lambda_i = ln(n) max |l(x) - l(c_i)| / |x - c_i|^z).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import make_records, modes, run_cli, write_jsonl
from dataselect.errors import DataselectError
from dataselect.resources import SLACK, MemoryBudget, MiB, Resources
from dataselect.selection import read_selection
from dataselect.selectors import build_selector
from dataselect.selectors.kmeans_sensitivity import (
    coreset_probabilities,
    iid_sample,
    inclusion_probabilities,
    systematic_sample,
)
from dataselect.store import Store
from dataselect.store.synthetic import store_from_array


@pytest.fixture(scope="module")
def loss_store(tmp_path_factory):
    """Eight modes; a row's loss depends on its mode (mode 3 is 'hard') plus noise; a few rows have no loss."""
    x, mode = modes(3000, 16, 8, seed=2)
    rng = np.random.default_rng(5)
    loss = (np.where(mode == 3, 4.0, 0.5) + 0.2 * rng.random(3000)).astype(np.float32)
    loss[rng.choice(3000, 30, replace=False)] = np.nan  # no response token left
    path = tmp_path_factory.mktemp("ks") / "store"
    store_from_array(path, x, shard_rows=1000, extra={"loss_response": loss})
    store = Store(path)
    return store, store.take(store.rows())["embedding"].astype(np.float64), mode, loss.astype(np.float64)


def brute_rounding(store, emb, loss, k):
    """§5.1 by brute force: the cached k-means' centres, each replaced by the nearest finite-loss row."""
    from dataselect.pool_index import cluster_store

    cl = cluster_store(store, k, niter=20, init_sample=32)
    c = cl.centroids.astype(np.float64)
    d2 = ((emb[:, None, :] - c[None]) ** 2).sum(-1)  # (n, k)
    labels = d2.argmin(1)
    reps = []
    for i in range(k):
        members = np.nonzero((labels == i) & np.isfinite(loss))[0]
        if len(members):
            reps.append(int(members[np.argmin(d2[members, i])]))
    reps = np.array(reps)
    r2 = ((emb[:, None, :] - emb[reps][None]) ** 2).sum(-1)  # every row to its closest rounded centre
    return reps, r2.argmin(1), r2.min(1)


def test_k_is_a_fifth_of_the_budget_and_every_representative_is_selected(loss_store):
    store, emb, _, loss = loss_store
    for budget in (100, 240):
        sel = build_selector("kmeans-sensitivity", {"lam": 0.1}).select(store, budget, np.random.default_rng(0))
        k = round(0.2 * budget)
        assert sel.info["k"] == k and sel.info["clustering"]["k"] == k and len(sel) == budget
        reps, _, _ = brute_rounding(store, emb, loss, k)
        kinds = sel.extra["kind"]
        assert sorted(sel.rows[kinds == "representative"].tolist()) == sorted(reps.tolist())
        assert (kinds == "representative").sum() == k and (kinds == "drawn").sum() == budget - k
        assert np.isfinite(loss[sel.rows[kinds == "representative"]]).all()
        assert (sel.weights[kinds == "representative"] == 1).all()


def test_probabilities_follow_algorithm_1_with_the_rounded_centres(loss_store):
    store, emb, _, loss = loss_store
    budget, k = 200, 40
    sel = build_selector("kmeans-sensitivity", {"lam": 0.1}).select(store, budget, np.random.default_rng(3))
    reps, nearest, d2 = brute_rounding(store, emb, loss, k)
    lt = loss[reps][nearest] + 0.1 * d2  # l(c_e) + Lambda |e - c_e|^2, c_e the closest rounded centre
    np.testing.assert_allclose(sel.scores, lt[sel.rows], rtol=1e-4, atol=1e-5)
    # p over the rows still to draw from (not a representative), as Algorithm 1's normalised numerator
    pop = np.setdiff1d(np.arange(len(emb)), reps)
    drawn = sel.extra["kind"] == "drawn"
    np.testing.assert_allclose(sel.extra["p"][drawn], lt[sel.rows[drawn]] / lt[pop].sum(), rtol=1e-4)
    # systematic pi-ps: pi = min(1, c p) summing to s, weights 1/pi
    p = lt[pop] / lt[pop].sum()
    s = budget - k
    assert (s * p < 1).all()  # no certainties in this pool, so pi = s p exactly
    np.testing.assert_allclose(sel.weights[drawn], 1 / (s * sel.extra["p"][drawn]), rtol=1e-4)


def lemma8_brute(emb, loss, reps, nearest, d2, n, z=2.0):
    lam = []
    for i, r in enumerate(reps):
        ratios = [abs(loss[x] - loss[r]) / d2[x] ** (z / 2) for x in np.nonzero(nearest == i)[0]
                  if x != r and d2[x] > 0 and np.isfinite(loss[x])]
        lam.append(math.log(n) * max(ratios) if ratios else np.nan)
    lam = np.array(lam)
    lam[np.isnan(lam)] = np.median(lam[~np.isnan(lam)])
    return lam


@pytest.mark.parametrize("z", [2.0, 1.0])
def test_lambda_auto_is_lemma_8s_bound_per_cluster(loss_store, z):
    """With probes >= every cluster's size, Lemma 8's max runs over the whole cluster: brute force it."""
    store, emb, _, loss = loss_store
    budget, k = 100, 20
    sel = build_selector("kmeans-sensitivity", {"lam_probes": 5000, "z": z}).select(store, budget, np.random.default_rng(0))
    reps, nearest, d2 = brute_rounding(store, emb, loss, k)
    lam = lemma8_brute(emb, loss, reps, nearest, d2, len(emb), z)
    lt = loss[reps][nearest] + lam[nearest] * d2 ** (z / 2)
    np.testing.assert_allclose(sel.scores, lt[sel.rows], rtol=2e-3)
    info = sel.info["lam_per_cluster"]
    assert info["max"] == pytest.approx(lam.max(), rel=2e-3) and info["min"] == pytest.approx(lam.min(), rel=2e-3)
    assert sel.info["lam"] == "auto"


def test_lambda_probes_are_few_per_cluster_and_default_to_lemma_8s_count(loss_store):
    store, _, _, _ = loss_store
    sel = build_selector("kmeans-sensitivity", {}).select(store, 100, np.random.default_rng(0))
    t = math.ceil(math.log2(100 * 20))  # Lemma 8 with p = 1/2: ln(100 k) / ln 2
    assert sel.info["lam_probes_per_cluster"] == t
    assert sel.info["lam_probes_used"] <= 20 * t


def test_iid_draws_are_algorithm_1_exactly(loss_store):
    store, _, _, _ = loss_store
    budget, k = 200, 40
    sel = build_selector("kmeans-sensitivity", {"lam": 0.1, "draws": "iid"}).select(store, budget, np.random.default_rng(4))
    drawn = sel.extra["kind"] == "drawn"
    s = budget - k
    assert sel.info["draws_made"] == sel.extra["draws"][drawn].sum() == s
    assert len(sel) == k + drawn.sum() <= budget
    np.testing.assert_allclose(sel.weights[drawn], sel.extra["draws"][drawn] / (s * sel.extra["p"][drawn]), rtol=1e-5)


def test_iid_sample_makes_exactly_s_draws_in_proportion_to_p():
    p = np.array([0.5, 0.25, 0.125, 0.125])
    counts = np.zeros(4)
    for seed in range(200):
        rows, t = iid_sample(p, 40, np.random.default_rng(seed))
        assert t.sum() == 40 and len(set(rows.tolist())) == len(rows)
        counts[rows] += t
    np.testing.assert_allclose(counts / counts.sum(), p, atol=0.02)


def test_inclusion_probabilities_cap_at_one_and_sum_to_s():
    p = np.array([0.6, 0.2, 0.1, 0.05, 0.05])
    pi = inclusion_probabilities(p, 3)
    # 3 x 0.6 >= 1: certainty; the rest share 2 in proportion: 0.2 / 0.4 * 2 = 1 -> certainty too
    np.testing.assert_allclose(pi, [1.0, 1.0, 0.5, 0.25, 0.25])
    rows = systematic_sample(pi, np.random.default_rng(0))
    assert len(rows) == 3 and {0, 1} <= set(rows.tolist())


def test_systematic_sample_has_exact_inclusion_probabilities():
    rng = np.random.default_rng(7)
    p = rng.dirichlet(np.full(60, 1.0))
    pi = inclusion_probabilities(p, 12)
    hits = np.zeros(60)
    trials = 4000
    for seed in range(trials):
        rows = systematic_sample(pi, np.random.default_rng(seed))
        assert len(rows) == 12 == len(set(rows.tolist()))
        hits[rows] += 1
    np.testing.assert_allclose(hits / trials, pi, atol=4 * np.sqrt(0.25 / trials))


@pytest.mark.parametrize("draws", ["systematic", "iid"])
def test_weights_estimate_the_population_over_200_seeds(draws):
    """Sum of w over the drawn rows ~ rows drawn from (within 3%); weighted mean of f ~ population mean."""
    rng = np.random.default_rng(1)
    n, s = 3000, 200
    f = rng.gamma(2.0, 1.0, n)  # any per-row quantity
    p = rng.gamma(0.7, 1.0, n)
    p /= p.sum()
    counts, means = [], []
    for seed in range(200):
        g = np.random.default_rng(seed)
        if draws == "iid":
            rows, t = iid_sample(p, s, g)
            w = t / (s * p[rows])
        else:
            pi = inclusion_probabilities(p, s)
            rows = systematic_sample(pi, g)
            w = 1 / pi[rows]
        counts.append(w.sum())
        means.append((w * f[rows]).sum() / n)
    assert abs(np.mean(counts) - n) < 0.03 * n
    se = np.std(means) / np.sqrt(len(means))
    assert abs(np.mean(means) - f.mean()) < 3 * se, (np.mean(means), f.mean(), se)


def test_selector_weights_estimate_pool_sums_over_seeds(loss_store):
    """End to end: representatives weigh 1, drawn rows' weights sum to the rows they are drawn from."""
    store, _, _, loss = loss_store
    budget, k = 200, 40
    n = store.n_rows
    sel0 = build_selector("kmeans-sensitivity", {"lam": 0.1})
    counts = []
    for seed in range(40):
        sel = sel0.select(store, budget, np.random.default_rng(seed))
        counts.append(sel.weights[sel.extra["kind"] == "drawn"].sum())
        assert sel.weights.sum() == pytest.approx(k + counts[-1], rel=1e-5)
    assert abs(np.mean(counts) - (n - k)) < 0.03 * (n - k)


def test_warm_start_takes_its_share_uniformly_first(loss_store):
    store, _, _, _ = loss_store
    sel = build_selector("kmeans-sensitivity", {"lam": 0.1, "warm_start": 0.2}).select(store, 200,
                                                                                       np.random.default_rng(0))
    kinds = sel.extra["kind"].tolist()
    assert kinds[:40] == ["warm-start"] * 40 and kinds[40:80] == ["representative"] * 40
    assert kinds[80:] == ["drawn"] * 120 and len(set(sel.rows.tolist())) == 200
    assert sel.info["warm_start_rows"] == 40


def test_hard_mode_is_drawn_more_often(loss_store):
    store, _, mode, _ = loss_store
    sel = build_selector("kmeans-sensitivity", {"lam": 0.1}).select(store, 400, np.random.default_rng(0))
    drawn = sel.extra["kind"] == "drawn"
    assert np.mean(mode[sel.rows[drawn]] == 3) > 2.5 * np.mean(mode == 3)


def test_coreset_variant_draws_with_the_lightweight_coreset(loss_store):
    store, _, _, _ = loss_store
    sel = build_selector("kmeans-sensitivity", {"variant": "coreset"}).select(store, 100, np.random.default_rng(0))
    from dataselect.pool_index import cluster_store

    cl = cluster_store(store, 20, niter=20, init_sample=32)
    p = coreset_probabilities(cl.labels, cl.dist2, cl.k)
    assert (sel.extra["kind"] == "drawn").all() and len(sel) == 100
    np.testing.assert_allclose(sel.extra["p"], p[sel.rows], rtol=1e-5)


def test_k_is_capped_where_the_memory_budget_cannot_hold_it(tmp_path):
    x, _ = modes(20000, 64, 8, seed=1)
    store_from_array(tmp_path / "s", x, shard_rows=5000, extra={"loss_response": np.ones(20000, np.float32)})
    store = Store(tmp_path / "s")
    res = Resources.make("cpu", MemoryBudget.runtime() + SLACK + 8 * MiB, progress=False)
    selector = build_selector("kmeans-sensitivity", {"lam": 0.1})
    k, info = selector.resolve_k(store, 10000, res)
    assert info["k_wanted"] == 2000 and k < 2000 and info["k_capped"]["effective"] == k
    assert "39 rows per centroid" in info["k_capped"]["reason"]
    assert selector.resolve_k(store, 10000, Resources.make("cpu", "4GB", progress=False))[0] == 2000


@pytest.mark.parametrize("lam", ["nan", "inf", "-inf", "-1", "-0.5", "x"])
def test_bad_lambda_is_refused_in_one_line(tmp_path, lam):
    x, _ = modes(300, 8, 4)
    store_from_array(tmp_path / "s", x, shard_rows=300, extra={"loss_response": np.ones(300, np.float32)})
    _, err = run_cli("run", "--store", tmp_path / "s", "--method", "kmeans-sensitivity", "--lam", lam, "--budget", "10",
                     "--out", tmp_path / "sel", expect=2)
    assert "--lam" in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "sel").exists()
    with pytest.raises(DataselectError, match="--lam"):
        build_selector("kmeans-sensitivity", {"lam": float(lam) if lam != "x" else lam})


@pytest.mark.parametrize("params", [{"k_fraction": 0}, {"k_fraction": 1.5}, {"warm_start": 1.0},
                                    {"warm_start": -0.1}, {"lam_probes": -1}, {"k": -3}, {"niter": 0}])
def test_bad_parameters_are_refused(params):
    with pytest.raises(DataselectError):
        build_selector("kmeans-sensitivity", params)


def test_k_above_the_budget_is_refused(loss_store):
    store, _, _, _ = loss_store
    with pytest.raises(DataselectError, match="k must be <= --budget"):
        build_selector("kmeans-sensitivity", {"k": 50}).select(store, 20, np.random.default_rng(0))


def test_cli_run_records_kinds_and_the_rule(loss_store, tmp_path):
    store, _, _, _ = loss_store
    run_cli("run", "--store", store.path, "--method", "kmeans-sensitivity", "--budget", "100", "--out", tmp_path / "sel",
            "-q")
    table, meta = read_selection(tmp_path / "sel")
    info = meta["method_info"]
    assert info["k"] == 20 and info["lam"] == "auto" and info["draws"] == "systematic" and info["z"] == 2.0
    assert table.column("kind").to_pylist().count("representative") == 20 and table.num_rows == 100


def test_no_loss_is_one_clear_line(tmp_path):
    x, _ = modes(500, 8, 4)
    store_from_array(tmp_path / "s", x, shard_rows=250)
    _, err = run_cli("run", "--store", tmp_path / "s", "--method", "kmeans-sensitivity", "--budget", "20",
                     "--out", tmp_path / "sel", expect=2)
    assert "--with-loss" in err and "--loss-model" in err and "--variant coreset" in err and len(err.splitlines()) == 1


def test_loss_model_scores_only_representatives_and_probes(tmp_path, tiny_llama):
    """Losses computed for the representatives and probes equal the ones `embed --with-loss` stores."""
    pool = write_jsonl(tmp_path / "pool.jsonl", make_records(60, seed=3))
    run_cli("embed", pool, "-m", tiny_llama, "-o", tmp_path / "plain", "-q")
    run_cli("embed", pool, "-m", tiny_llama, "-o", tmp_path / "lossy", "--with-loss", "-q")
    plain, lossy = Store(tmp_path / "plain"), Store(tmp_path / "lossy")
    for lam in ("0.5", "auto"):
        params = {"lam": lam, "lam_probes": 3}
        a = build_selector("kmeans-sensitivity", {**params, "loss_model": tiny_llama, "pool": str(pool)}
                           ).select(plain, 20, np.random.default_rng(0))
        b = build_selector("kmeans-sensitivity", params).select(lossy, 20, np.random.default_rng(0))
        assert a.info["representatives"] == 4 and "representatives scored with" in a.info["loss_source"]
        assert a.rows.tolist() == b.rows.tolist()
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-3)


def test_a_costly_clustering_says_up_front_what_it_costs_and_what_makes_it_feasible(tmp_path, monkeypatch):
    """Issue 27: at --budget 2.5M the rule's k = 500,000 would run for days without a word. The arithmetic
    of the clustering is recorded for every run, and said in one line before it starts when it exceeds
    COST_NOTE_S at this machine's GEMM rate."""
    import json

    from conftest import run_cli
    from dataselect.pool_index import kmeans as engine
    from dataselect.pool_index.kmeans import default_trials, kmeans_flops
    from dataselect.store.synthetic import clustered_store

    assert kmeans_flops(1000, 500, 10, 8, 20, 320, trials=3) == {
        "kmeans++": 2.0 * 10 * 3 * 320 * 8, "lloyd": 2.0 * 20 * 500 * 10 * 8, "assign": 2.0 * 1000 * 10 * 8}
    pool = clustered_store(tmp_path / "pool", 2000, 16, modes=8, seed=2, with_loss=True)
    _, err = run_cli("run", "--store", pool, "--method", "kmeans-sensitivity", "--budget", "100", "--out", tmp_path / "a",
                     "-q")
    assert "FLOP" not in err  # a few seconds of work: nothing said
    meta = json.loads((tmp_path / "a" / "selection.json").read_text())
    k = meta["method_info"]["k"]
    want = kmeans_flops(2000, min(2000, 256 * k), k, 16, 20, min(2000, 32 * k), default_trials(k))
    assert meta["method_info"]["cost_estimate"]["flop"] == {s: pytest.approx(v, rel=1e-3) for s, v in want.items()}
    monkeypatch.setattr(engine, "COST_NOTE_S", 0)
    _, err = run_cli("run", "--store", pool, "--method", "kmeans-sensitivity", "--budget", "100", "--out", tmp_path / "b",
                     "-q")
    line = next(ln for ln in err.splitlines() if "FLOP" in ln)
    assert f"k = {k:,} over 2,000 rows x 16 dims" in line and "a smaller --k" in line and "--assign ivf" in line
