"""Float32 RDS+ scores (issue 27): the bound holds, screened == exact bit for bit, and float32 scores
depend on the row alone."""

from __future__ import annotations

import numpy as np
import pytest

from dataselect.pool_index import tiles
from dataselect.pool_index.screen import Float32Blocks, pair_sims
from dataselect.pool_index.similarity import reduce_tasks, score_tasks, task_scores
from dataselect.pool_index.tiles import TILE_ROWS, Float32Tiles, float32_reproducible
from dataselect.selectors import build_selector
from dataselect.store import Store
from dataselect.store.queries import query_matrix
from dataselect.store.synthetic import store_from_array, unit_rows


def near_ties(rng, bases: int, copies: int, dim: int) -> np.ndarray:
    """Rows in families: a base row, exact copies of it, and copies one float16 step away in a few
    components, so that many exact scores differ by less than float32 rounding."""
    base = unit_rows(rng, bases, dim).astype(np.float16)
    rows = [base]
    for _ in range(copies):
        x = base.copy()
        cols = rng.integers(0, dim, size=(bases, 3))
        for j in range(3):
            v = x[np.arange(bases), cols[:, j]]
            x[np.arange(bases), cols[:, j]] = np.nextafter(v, rng.choice([-1, 1], bases).astype(np.float16) * np.inf)
        rows.append(x if rng.random() < 0.7 else base)
    out = np.concatenate(rows).astype(np.float32)
    return out[rng.permutation(len(out))]


@pytest.fixture(scope="module")
def tie_world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("screen")
    rng = np.random.default_rng(5)
    store_from_array(tmp / "pool", near_ties(rng, 40, 30, 256), shard_rows=157)
    q = unit_rows(rng, 12, 256)
    store_from_array(tmp / "q1", q, kind="queries", tasks=["t"] * 12)
    store_from_array(tmp / "q3", q, kind="queries", tasks=["a"] * 5 + ["b"] * 4 + ["c"] * 3)
    return tmp


@pytest.mark.parametrize("dim", [64, 4096])
def test_the_bound_holds_for_every_pair(dim):
    rng = np.random.default_rng(dim)
    x = (unit_rows(rng, 300, dim) * rng.uniform(0.1, 8, (300, 1)).astype(np.float32)).astype(np.float16)
    Q = unit_rows(rng, 50, dim).astype(np.float16).astype(np.float64)
    sims, bound, _ = Float32Blocks(dim, Q, len(x))(x)
    exact = x.astype(np.float64) @ Q.T
    assert np.all(np.abs(sims - exact) <= bound[:, None])
    # and for the task scores, as float32: a max and a mean over a task's queries
    starts = np.array([0, 20])
    for agg in ("max", "mean"):
        gap = np.abs(reduce_tasks(sims, starts, agg).astype(np.float64) - reduce_tasks(exact, starts, agg))
        assert np.all(gap <= bound[:, None])
    assert bound.max() < 2e-3 * np.linalg.norm(x.astype(np.float64), axis=1).max()


def test_pair_similarities_are_exact_both_ways():
    rng = np.random.default_rng(2)
    x = unit_rows(rng, 60, 128).astype(np.float16).astype(np.float32)
    Q = unit_rows(rng, 9, 128).astype(np.float16).astype(np.float64)
    want = x.astype(np.float64) @ Q.T
    few = (np.array([3, 3, 50, 7]), np.array([0, 8, 2, 2]))
    assert np.array_equal(pair_sims(x, Q.astype(np.float32), Q, *few), want[few])  # pair by pair
    dense = np.nonzero(np.ones((60, 9), bool))
    assert np.array_equal(pair_sims(x, Q.astype(np.float32), Q, *dense), want[dense])  # one GEMM


def test_float32_alone_would_change_these_selections(tie_world):
    """The world has teeth: ranking by the float32 products themselves orders rows differently."""
    pool = Store(tie_world / "pool")
    Q, starts, _ = query_matrix(pool, [Store(tie_world / "q3")])
    _, exact = score_tasks(pool, Q, starts)
    emb = pool.embeddings().astype(np.float16)
    screened = reduce_tasks(Float32Blocks(pool.dim, Q, len(emb))(emb)[0], starts, "max")
    assert not np.array_equal(screened, exact)
    orders = [np.lexsort((np.arange(len(s)), -s)) for s in (screened[:, 0], exact[:, 0])]
    assert not np.array_equal(*orders)


CASES = [("q1", "max", "paper"), ("q1", "mean", "paper"), ("q1", "max", "next-unique"),
         ("q3", "max", "paper"), ("q3", "mean", "paper"), ("q3", "max", "next-unique"), ("q3", "mean", "next-unique")]


@pytest.mark.parametrize("queries,aggregate,rule", CASES)
@pytest.mark.parametrize("budget", [1, 37, 400, 1240])
def test_screened_selects_what_exact_selects(tie_world, queries, aggregate, rule, budget):
    pool, q = Store(tie_world / "pool"), Store(tie_world / queries)
    got = {}
    for scoring in ("exact", "screened"):
        sel = build_selector("rds+", {"scoring": scoring, "aggregate": aggregate, "round_robin": rule}).select(
            pool, budget, None, [q])
        got[scoring] = (sel.rows.tolist(), sel.scores.tobytes(), list(sel.tasks), sel.info)
        assert sel.info["scoring"] == scoring
    assert got["exact"][:3] == got["screened"][:3]


def test_screening_computes_few_scores_exactly(tmp_path):
    """On a pool of 40 shards the probe places each task's cut-off, and the pass computes exactly only
    what lies near or above it: a small share of the scores for a small budget."""
    rng = np.random.default_rng(8)
    store_from_array(tmp_path / "pool", unit_rows(rng, 8000, 64), shard_rows=200)
    store_from_array(tmp_path / "q", unit_rows(rng, 6, 64), kind="queries", tasks=["a", "a", "b", "b", "c", "c"])
    pool, q = Store(tmp_path / "pool"), Store(tmp_path / "q")
    sel = build_selector("rds+", {"scoring": "screened"}).select(pool, 200, None, [q])
    want = build_selector("rds+", {"scoring": "exact"}).select(pool, 200, None, [q])
    assert sel.rows.tolist() == want.rows.tolist() and sel.scores.tobytes() == want.scores.tobytes()
    info = sel.info
    assert info["probe_shards"] == 2
    assert info["exact_in_pass"] + info["recomputed_after"] < 0.1 * 8000 * 3
    assert info["recomputed_after"] > 0  # the probe shards' rows near the cut, computed afterwards


def test_a_screen_that_would_recompute_most_scores_computes_them_exactly(tmp_path):
    rng = np.random.default_rng(9)
    store_from_array(tmp_path / "pool", unit_rows(rng, 3000, 32), shard_rows=100)
    store_from_array(tmp_path / "q", unit_rows(rng, 4, 32), kind="queries", tasks=["a", "a", "b", "b"])
    pool, q = Store(tmp_path / "pool"), Store(tmp_path / "q")
    sel = build_selector("rds+", {"scoring": "screened"}).select(pool, 2900, None, [q])
    want = build_selector("rds+", {"scoring": "exact"}).select(pool, 2900, None, [q])
    assert sel.rows.tolist() == want.rows.tolist() and sel.scores.tobytes() == want.scores.tobytes()
    assert sel.info["screen_share"] > 0.5
    assert sel.info["exact_in_pass"] >= 0.9 * (3000 - 200) * 2  # the shards after the probe: all exact


def test_float32_tiles_give_a_row_the_same_products_anywhere():
    """A row's float32 products are the same wherever it sits in a block or a tile (the last, padded,
    one included) and at one thread or two; and within the screening bound of the exact ones."""
    rng = np.random.default_rng(3)
    dim = 512
    assert float32_reproducible(dim, 40)
    x = unit_rows(rng, TILE_ROWS + 300, dim).astype(np.float16)
    Q = unit_rows(rng, 40, dim).astype(np.float16)
    ref = Float32Tiles(dim, Q, len(x))(x).copy()
    perm = rng.permutation(len(x))
    assert np.array_equal(Float32Tiles(dim, Q, len(x), threads=1)(x[perm]), ref[perm])
    for b in (1, 5, 333):
        got = np.concatenate([Float32Tiles(dim, Q, b)(x[lo:lo + b]).copy() for lo in range(0, len(x), b)])
        assert np.array_equal(got, ref)
    _, bound, _ = Float32Blocks(dim, Q, len(x))(x)
    exact = x.astype(np.float64) @ Q.astype(np.float64).T
    assert np.all(np.abs(ref - exact) <= bound[:, None]) and not np.array_equal(ref, exact.astype(np.float32))


@pytest.mark.parametrize("queries", ["q1", "q3"])
def test_float32_scores_tie_identical_rows(tie_world, queries):
    """The near-tie world: float32 scores are not the exact ones, but every copy of a row gets its score,
    at any block size, so a selection ranks copies by row number as the exact one does."""
    pool = Store(tie_world / "pool")
    Q, starts, _ = query_matrix(pool, [Store(tie_world / queries)])
    emb = pool.embeddings().astype(np.float16)
    got = [task_scores(pool, Q, starts, block_rows=b, scoring="float32").scores for b in (7, 100, 0)]
    assert all(np.array_equal(g, got[0]) for g in got)
    by_row: dict[bytes, set] = {}
    for e, s in zip(emb, got[0], strict=True):
        by_row.setdefault(e.tobytes(), set()).add(s.tobytes())
    assert max(len(v) for v in by_row.values()) == 1 and len(by_row) < len(emb)
    assert not np.array_equal(got[0], score_tasks(pool, Q, starts)[1])


def test_float32_falls_back_to_screened_where_the_machine_cannot_reproduce_it(tie_world, monkeypatch, capsys):
    """Where the check fails (numpy's OpenBLAS does on this machine; MKL at some odd shapes), the
    selector says so in one line and screens: the selection is the exact one."""
    pool, q = Store(tie_world / "pool"), Store(tie_world / "q3")
    key = (pool.dim, 12, tiles.torch.get_num_threads())
    monkeypatch.setitem(tiles._CHECKED, key, False)
    sel = build_selector("rds+", {}).select(pool, 400, None, [q])
    want = build_selector("rds+", {"scoring": "exact"}).select(pool, 400, None, [q])
    assert sel.info["scoring"] == "screened"
    assert sel.rows.tolist() == want.rows.tolist() and sel.scores.tobytes() == want.scores.tobytes()
    assert "not reproducible on this machine" in capsys.readouterr().err


def test_a_pass_refuses_float32_where_its_machine_cannot_reproduce_it(tie_world, monkeypatch):
    """A worker's pass checks for itself (a Ray worker may be another machine than the driver's)."""
    from dataselect.errors import DataselectError

    pool = Store(tie_world / "pool")
    Q, starts, _ = query_matrix(pool, [Store(tie_world / "q3")])
    monkeypatch.setitem(tiles._CHECKED, (pool.dim, len(Q), tiles.torch.get_num_threads()), False)
    with pytest.raises(DataselectError, match="--scoring screened"):
        task_scores(pool, Q, starts, scoring="float32")
