"""Hierarchical balanced k-means: water-filling against brute force, edge cases, balance on skewed pools."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import run_cli
from dataselect.pool_index.hierarchical import Hierarchy, build_hierarchy, closest_per_cluster, default_levels
from dataselect.selection import read_selection
from dataselect.selectors import build_selector
from dataselect.selectors.hierarchical_kmeans import leaf_targets, water_fill
from dataselect.store import Store
from dataselect.store.synthetic import store_from_array


def brute_fill(sizes, target):
    """One row at a time to the open child with the fewest taken (then most rows, then lowest index)."""
    take = [0] * len(sizes)
    for _ in range(min(target, sum(sizes))):
        i = min((i for i in range(len(sizes)) if take[i] < sizes[i]), key=lambda i: (take[i], -sizes[i], i))
        take[i] += 1
    return take


@pytest.mark.parametrize("seed", range(30))
def test_water_fill_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(0, 40, rng.integers(1, 9))
    for target in (0, 1, int(sizes.sum()) // 3, int(sizes.sum()) - 1, int(sizes.sum()), int(sizes.sum()) + 5):
        target = max(target, 0)
        got = water_fill(sizes, target, remainder="largest")
        assert got.tolist() == brute_fill(sizes.tolist(), target), (sizes, target)


def brute_tree(labels, budget):
    """Reference: recursive brute-force fill over an explicit tree built from the label arrays."""
    rows_of_leaf = {}
    for pos, c in enumerate(labels[0]):
        rows_of_leaf.setdefault(int(c), []).append(pos)

    def rows_under(level, c):  # level 0 = leaf clusters
        if level == 0:
            return len(rows_of_leaf.get(c, []))
        return sum(rows_under(level - 1, ch) for ch in range(len(labels[level])) if labels[level][ch] == c)

    out = {}

    def walk(level, c, share):
        if level == 0:
            out[c] = share
            return
        kids = [ch for ch in range(len(labels[level])) if labels[level][ch] == c]
        for ch, s in zip(kids, brute_fill([rows_under(level - 1, ch) for ch in kids], share), strict=True):
            walk(level - 1, ch, s)

    top_level = len(labels)
    tops = sorted(set(int(x) for x in labels[-1]))
    for c, s in zip(tops, brute_fill([rows_under(top_level - 1, c) for c in tops], budget), strict=True):
        walk(top_level - 1, c, s)
    return [out.get(c, 0) for c in range(max(labels[0]) + 1)]


def test_balanced_sampling_exact_counts_on_small_tree():
    rng = np.random.default_rng(0)
    leaf = rng.integers(0, 12, 300)  # 300 rows in 12 leaves
    mid = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 3, 3])  # 12 leaves -> 4 mid clusters
    top = np.array([0, 0, 1, 1])  # 4 mid -> 2 top
    h = Hierarchy([leaf, mid, top], np.zeros(300, np.float32), [12, 4, 2], np.arange(300), {})
    for budget in (1, 7, 50, 150, 299, 300):
        got = leaf_targets(h, budget, remainder="largest")
        assert got.sum() == budget
        assert got.tolist() == brute_tree([leaf, mid, top], budget), budget
        assert (got <= np.bincount(leaf, minlength=12)).all()


def test_closest_per_cluster():
    labels = np.array([1, 0, 1, 1, 0, 2])
    dist2 = np.array([0.5, 0.2, 0.1, 0.9, 0.3, 0.0], np.float32)
    assert closest_per_cluster(labels, dist2, 2).tolist() == [0, 1, 2, 4, 5]



def test_default_levels_follow_the_references_ratio():
    # ssl-data-curation: README 29,700 points -> 1,000 clusters, configs/2levels 100,000 -> 5,000 (n/20-n/30)
    for n, (lo, hi) in ((29_700, (990, 1485)), (100_000, (3333, 5000)), (5_800_000, (193_333, 290_000))):
        k1 = default_levels(n)[0]
        assert lo <= k1 <= hi and k1 == round(n / 25), (n, k1)
    assert default_levels(5_800_000) == [232_000, 23_200, 2_320, 232]
    assert default_levels(1000) == [40]
    assert default_levels(30) == [2]


def test_default_levels_through_the_selector_and_capped_by_memory(tmp_path, capsys):
    from dataselect.pool_index.kmeans import plan_memory
    from dataselect.resources import SLACK, MemoryBudget, Resources

    x, _ = modes_pool(2)
    store_from_array(tmp_path / "p", x[::5], shard_rows=500)  # 990 rows
    st = Store(tmp_path / "p")
    h = build_selector("hierarchical-kmeans", {"resamples": 0, "niter": 2}).hierarchy(st)
    assert h.ks == [40] and h.meta["default_levels"]["k1"] == 40  # round(990 / 25), as the reference's ratio
    assert not h.meta["default_levels"]["limited_by_memory"] and not h.meta["notes"]
    # a budget that holds the whole pool's 25 rows per centroid only for a smaller k
    tight = Resources.make("cpu", MemoryBudget.runtime() + SLACK + 180 * 2**10, progress=False)
    capsys.readouterr()
    h = build_hierarchy(st, resamples=0, niter=2, resources=tight, cache=False)
    k1 = h.ks[0]
    err = capsys.readouterr().err
    assert 2 <= k1 < 40 and h.meta["default_levels"]["limited_by_memory"] and h.meta["default_levels"]["k1"] == k1
    assert err.count("not the reference's n/25 = 40") == 1 and h.meta["notes"][0].startswith("hierarchical k-means")

    def holds(k):  # independently: the engine's plan for k keeps >= 25 rows per centroid
        n = st.n_rows
        try:
            plan = plan_memory(st, k, st.dim, 256 * k, tight.torch_device(), tight,
                               keep_rows=k * max(2, int(0.5 * n / k)), extra=40 * n)
        except Exception:
            return False
        return plan.sample_rows >= min(n, 25 * k)

    assert holds(k1) and not holds(k1 + 1)


def test_each_level_is_assigned_to_the_centroids_the_next_level_clusters(tmp_path):
    x, _ = modes_pool(3)
    store_from_array(tmp_path / "p", x, shard_rows=1000)
    st = Store(tmp_path / "p")
    h = build_hierarchy(st, [40, 6], resamples=2, sample_sizes=[10, 3], niter=5, cache=False)
    from dataselect.pool_index.sample import read_positions

    pool = read_positions(st, np.arange(st.n_rows))
    for points, cent, lab in ((pool, h.centroids[0], h.labels[0]), (h.centroids[0], h.centroids[1], h.labels[1])):
        d2 = ((points[:, None, :].astype(np.float64) - cent[None].astype(np.float64)) ** 2).sum(-1)
        best = d2.min(1)
        assert (d2[np.arange(len(points)), lab] <= best + 1e-4).all()  # the nearest centroid (ties aside)
    np.testing.assert_allclose(h.dist2, ((pool - h.centroids[0][h.labels[0]]) ** 2).sum(1), rtol=1e-3, atol=1e-4)


def modes_pool(seed=0, dim=16):
    """One huge mode (4000 rows) and 19 small ones (50 rows each)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((20, dim)).astype(np.float32) * 3
    mode = np.concatenate([np.zeros(4000, int), np.repeat(np.arange(1, 20), 50)])
    x = centres[mode] + 0.3 * rng.standard_normal((len(mode), dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True), mode


def entropy(labels, k):
    p = np.bincount(labels, minlength=k) / len(labels)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def test_far_more_balanced_than_random(tmp_path):
    x, mode = modes_pool()
    store_from_array(tmp_path / "p", x, shard_rows=1000)
    st = Store(tmp_path / "p")
    sel = build_selector("hierarchical-kmeans", {"k": "200,20", "resamples": 2}).select(st, 400, np.random.default_rng(0))
    rnd = build_selector("random", {}).select(st, 400, np.random.default_rng(0))
    h_sel, h_rnd = entropy(mode[sel.rows], 20), entropy(mode[rnd.rows], 20)
    assert h_sel > 2.5 and h_rnd < 1.6, (h_sel, h_rnd)  # log(20) = 3.0 is perfect balance
    assert len(set(sel.rows.tolist())) == 400
    assert all(p.count("/") == 1 for p in sel.extra["cluster_path"])


def test_budget_edges_determinism_and_cli(tmp_path):
    x, _ = modes_pool(1)
    store_from_array(tmp_path / "p", x, shard_rows=1000)
    st = Store(tmp_path / "p")
    sel = lambda b, s=0, **p: build_selector("hierarchical-kmeans", {"k": "30,5", **p}).select(  # noqa: E731
        st, b, np.random.default_rng(s))
    everything = sel(st.n_rows)
    assert sorted(everything.rows.tolist()) == list(range(st.n_rows))
    assert len(sel(1)) == 1
    assert sel(500).rows.tolist() == sel(500).rows.tolist()
    assert sel(500, leaf="closest").rows.tolist() != sel(500).rows.tolist()
    h = build_hierarchy(st, [30, 5], resamples=3)
    again = build_hierarchy(st, [30, 5], resamples=3)  # cached
    assert h.meta["niter"] == 50 and h.meta["resamples"] == 3
    assert all(np.array_equal(a, b) for a, b in zip(h.labels, again.labels, strict=True))
    run_cli("run", "--store", tmp_path / "p", "--method", "hierarchical-kmeans", "--budget", "10%", "--k", "30,5",
            "--leaf", "closest", "--out", tmp_path / "sel")
    table, meta = read_selection(tmp_path / "sel")
    assert table.num_rows == 495 and meta["params"]["k"] == [30, 5] and "cluster_path" in table.column_names


def test_a_costly_hierarchy_says_up_front_what_it_costs_and_which_flags_make_it_feasible(tmp_path, monkeypatch):
    """Issue 27: with its defaults at 5.8M x 4096 the hierarchy is weeks of arithmetic on a CPU (1 + 9 runs a
    level, each a k-means and, at level 1, an assignment of the pool), and it began without a word. Its
    arithmetic is recorded for every run, and said in one line before it starts, with what each lever
    would bring it to, when it exceeds COST_NOTE_S at this machine's GEMM rate."""
    import json

    from dataselect.pool_index import kmeans as engine
    from dataselect.pool_index.hierarchical import hierarchy_flops
    from dataselect.pool_index.kmeans import kmeans_flops

    # by hand: level 1 trains on 500 of 1000 rows (then a union of k x 20 = 200 points), assigns all 1000
    # after each run; level 2 clusters level 1's 10 centroids twice (a union of 2 x 3 = 6 points)
    runs = [(1000, 500, 10), (1000, 200, 10), (10, 10, 2), (10, 6, 2)]
    want = {s: sum(kmeans_flops(n, m, k, 8, 5, m)[s] for n, m, k in runs) for s in ("kmeans++", "lloyd", "assign")}
    assert hierarchy_flops(1000, 8, [10, 2], 500, [20, 3], resamples=1, niter=5) == pytest.approx(want)
    assert hierarchy_flops(1000, 8, [10, 2], 500, [20, 3], resamples=0, niter=5)["assign"] == 2.0 * (1000 * 10 + 10 * 2) * 8

    x, _ = modes_pool(1)
    store_from_array(tmp_path / "p", x, shard_rows=1000)
    args = ("run", "--store", tmp_path / "p", "--method", "hierarchical-kmeans", "--budget", "100", "--k", "30,5",
            "--resamples", "2", "--niter", "12", "-q")
    _, err = run_cli(*args, "--out", tmp_path / "a")
    assert "FLOP" not in err  # a second of work: nothing said
    cl = json.loads((tmp_path / "a" / "selection.json").read_text())["method_info"]["clustering"]
    n, d = Store(tmp_path / "p").n_rows, Store(tmp_path / "p").dim
    want = hierarchy_flops(n, d, [30, 5], cl["sample_rows"], cl["sample_sizes"], 2, 12)
    assert cl["cost_estimate"]["flop"] == {s: pytest.approx(v, rel=1e-3) for s, v in want.items()}
    monkeypatch.setattr(engine, "COST_NOTE_S", 0)
    _, err = run_cli(*args, "--cluster-seed", "1", "--out", tmp_path / "b")  # another seed: not the cached hierarchy
    line = next(ln for ln in err.splitlines() if "FLOP" in ln)
    assert f"k = 30,5 over {n:,} rows x {d} dims, 1 + 2 runs a level, 12 Lloyd updates a run" in line
    assert "for --k 30,5: --resamples 0 about" in line and "--niter 10 about" in line and "all of these about" in line
    assert "--reduce" not in line  # d <= 512: nothing to reduce
