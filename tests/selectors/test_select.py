"""Selectors, budgets, selections: RDS+ against a brute-force reference of the paper's code."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from dataselect.budget import parse_budget
from dataselect.errors import DataselectError
from dataselect.selection import read_selection
from dataselect.selection_run import RunSpec, run_selection
from dataselect.selectors import REGISTRY, build_selector
from dataselect.selectors.base import parse_extra_args
from dataselect.selectors.uniform import largest_remainder
from dataselect.store import Store
from dataselect.store.synthetic import store_from_array, unit_rows


def reference_rds(pool: np.ndarray, queries: np.ndarray, q_tasks: list[str], budget: int, aggregate="max",
                  mode="paper"):
    """Plain-Python RDS+ as in the paper's code: per-task sorted lists, round-robin pops, min score."""
    tasks = list(dict.fromkeys(q_tasks))
    ranked = {}
    for t in tasks:
        qs = queries[[i for i, x in enumerate(q_tasks) if x == t]].astype(np.float64)
        sims = pool.astype(np.float64) @ qs.T
        score = sims.max(1) if aggregate == "max" else sims.mean(1)
        ranked[t] = sorted(range(len(pool)), key=lambda r: (-score[r], r))
        ranked[t] = [(r, score[r]) for r in ranked[t]]
    picked, task_of = {}, {}
    if mode == "paper":
        while len(picked) < budget:
            for t in tasks:
                if len(picked) >= budget:
                    break
                r, s = ranked[t].pop(0)
                if r not in picked:
                    task_of[r] = t
                picked[r] = min(s, picked.get(r, math.inf))
    else:
        taken = set()
        while len(picked) < budget:
            for t in tasks:
                if len(picked) >= budget:
                    break
                while ranked[t] and ranked[t][0][0] in taken:
                    ranked[t].pop(0)
                if not ranked[t]:
                    continue
                r, s = ranked[t].pop(0)
                taken.add(r)
                picked[r], task_of[r] = s, t
    rows = list(picked)
    return rows, [picked[r] for r in rows], [task_of[r] for r in rows]


@pytest.fixture
def vec_stores(tmp_path):
    rng = np.random.default_rng(1)
    pool = unit_rows(rng, 300, 16).astype(np.float16)
    q = unit_rows(rng, 7, 16).astype(np.float16)
    tasks = ["a", "a", "b", "c", "c", "c", "b"]
    store_from_array(tmp_path / "pool", pool, shard_rows=64)
    store_from_array(tmp_path / "q", q, kind="queries", tasks=tasks)
    return tmp_path, pool, q, tasks


@pytest.mark.parametrize("mode", ["paper", "next-unique"])
@pytest.mark.parametrize("aggregate", ["max", "mean"])
@pytest.mark.parametrize("budget", [1, 2, 50, 299, 300])
def test_rds_matches_bruteforce(vec_stores, mode, aggregate, budget):
    tmp, pool, q, tasks = vec_stores
    sel = build_selector("rds+", {"aggregate": aggregate, "round_robin": mode}).select(
        Store(tmp / "pool"), budget, np.random.default_rng(0), [Store(tmp / "q")])
    # the reference works on the same float16 vectors the store holds
    rows, scores, task_of = reference_rds(pool.astype(np.float32), q.astype(np.float32), tasks, budget, aggregate, mode)
    assert sel.rows.tolist() == rows
    assert list(sel.tasks) == task_of
    np.testing.assert_allclose(sel.scores, scores, atol=1e-5)
    assert len(set(sel.rows.tolist())) == budget


def test_rds_ties_break_by_row_and_dedup_across_tasks(tmp_path):
    # rows 0..3 identical -> tied scores; both tasks have the same query -> every pop after the first is a duplicate
    pool = np.array([[1, 0], [1, 0], [1, 0], [1, 0], [0, 1], [0.6, 0.8]], dtype=np.float16)
    store_from_array(tmp_path / "p", pool)
    store_from_array(tmp_path / "q", np.array([[1, 0], [1, 0]], dtype=np.float16), kind="queries", tasks=["x", "y"])
    sel = build_selector("rds+", {}).select(Store(tmp_path / "p"), 3, None, [Store(tmp_path / "q")])
    # paper mode: x takes 0, y pops 0 (spent), x takes 1, y pops 1 (spent), x takes 2
    assert sel.rows.tolist() == [0, 1, 2] and list(sel.tasks) == ["x", "x", "x"]
    nu = build_selector("rds+", {"round_robin": "next-unique"}).select(
        Store(tmp_path / "p"), 3, None, [Store(tmp_path / "q")])
    assert nu.rows.tolist() == [0, 1, 2] and list(nu.tasks) == ["x", "y", "x"]


def test_budget_parsing():
    assert parse_budget("10k", 10**6) == 10_000
    assert parse_budget("2.5M", 10**7) == 2_500_000
    assert parse_budget("326k", 10**6) == 326_000
    assert parse_budget("1000", 5000) == 1000
    assert parse_budget("25%", 10) == 3  # 2.5 rounds half up
    with pytest.raises(DataselectError, match="larger than the pool"):
        parse_budget("11", 10)
    assert parse_budget("11", 10, allow_all=True) == 10
    for bad in ("abc", "0", "1.5", "150%", "-3"):
        with pytest.raises(DataselectError):
            parse_budget(bad, 100)


def test_largest_remainder():
    assert largest_remainder(np.array([50, 30, 20]), 10).tolist() == [5, 3, 2]
    assert largest_remainder(np.array([1, 1, 1]), 2).sum() == 2
    take = largest_remainder(np.array([7, 2, 1]), 10)
    assert take.tolist() == [7, 2, 1]


def test_random_selector_uniform_and_stratified(tmp_path):
    rng = np.random.default_rng(0)
    sources = ["a"] * 600 + ["b"] * 300 + ["c"] * 100
    store_from_array(tmp_path / "p", unit_rows(rng, 1000, 8), sources=sources, shard_rows=128)
    st = Store(tmp_path / "p")
    sel = build_selector("random", {}).select(st, 100, np.random.default_rng(5), [])
    again = build_selector("random", {}).select(st, 100, np.random.default_rng(5), [])
    assert sel.rows.tolist() == again.rows.tolist() and len(set(sel.rows.tolist())) == 100
    strat = build_selector("random", {"stratify": "source"}).select(st, 100, np.random.default_rng(5), [])
    got = np.array(sources)[strat.rows]
    assert [(got == s).sum() for s in "abc"] == [60, 30, 10]


def test_selector_parameters_are_validated():
    with pytest.raises(DataselectError, match="has no parameter --bogus"):
        build_selector("rds+", {"bogus": "1"})
    with pytest.raises(DataselectError, match="--aggregate 'median': choose from max, mean"):
        build_selector("rds+", {"aggregate": "median"})
    with pytest.raises(DataselectError, match="unknown method 'nope'"):
        build_selector("nope", {})
    assert parse_extra_args(["--round-robin", "next-unique", "--k=5", "--spherical", "--no-pca"]) == {
        "round_robin": "next-unique", "k": "5", "spherical": "true", "pca": "false"}
    assert {"random", "rds+"} <= set(REGISTRY)


def test_run_writes_selection_and_is_deterministic(vec_stores):
    tmp, *_ = vec_stores
    spec = RunSpec(method="rds+", store=str(tmp / "pool"), queries=[str(tmp / "q")], budget="10%", out=str(tmp / "s1"))
    _, meta = run_selection(spec)
    table, meta2 = read_selection(tmp / "s1")
    assert meta == meta2 and meta["budget"]["rows"] == 30 and sum(meta["counts_per_task"].values()) == 30
    assert table.column_names[:6] == ["row", "id", "rank", "score", "task", "weight"]
    assert table.column("id").to_pylist() == [f"r{r}" for r in table.column("row").to_pylist()]
    with pytest.raises(DataselectError, match="already exists"):
        run_selection(spec)
    spec.out = str(tmp / "s2")
    run_selection(spec)
    assert read_selection(tmp / "s2")[0].equals(table)
    with pytest.raises(DataselectError, match="needs --queries"):
        run_selection(RunSpec(method="rds+", store=str(tmp / "pool"), budget="5", out=str(tmp / "s3")))


def test_same_selection_with_different_thread_counts(vec_stores):
    tmp, *_ = vec_stores
    code = textwrap.dedent(f"""
        import numpy as np
        from dataselect.selectors import build_selector
        from dataselect.store import Store
        sel = build_selector("rds+", {{}}).select(Store({str(tmp / 'pool')!r}), 120, None, [Store({str(tmp / 'q')!r})])
        print(sel.rows.tolist(), sel.scores.tobytes().hex())
    """)
    outs = []
    for threads in ("1", "2"):
        env = {"OMP_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads, "PATH": "/usr/bin:/bin"}
        outs.append(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                   check=True).stdout)
    assert outs[0] == outs[1]


def test_scoring_memory_does_not_grow_with_pool_embeddings(tmp_path):
    """A pool whose embeddings are ~4x the data-segment limit is scored within that limit."""
    n, dim = 160_000, 1024  # 328 MB of float16 embeddings
    rng = np.random.default_rng(0)
    from dataselect.store.synthetic import write_store

    write_store(tmp_path / "big", lambda lo, hi: rng.standard_normal((hi - lo, dim), dtype=np.float32) / 32,
                n, dim, shard_rows=20_000)
    store_from_array(tmp_path / "q", unit_rows(rng, 20, dim), kind="queries", tasks=["a"] * 10 + ["b"] * 10)
    code = textwrap.dedent(f"""
        import resource, sys
        import numpy as np
        from dataselect.selectors import build_selector
        from dataselect.store import Store
        pool, q = Store({str(tmp_path / 'big')!r}), Store({str(tmp_path / 'q')!r})
        selector = build_selector("rds+", {{}})  # imports the selector's modules (torch) before the limit
        np.ones((256, 256), np.float32) @ np.ones((256, 256), np.float32)  # BLAS allocates its fixed buffers
        from dataselect.pool_index.tiles import float32_reproducible
        assert float32_reproducible(pool.dim, 20)  # once per process and shape, and so are torch's buffers
        vmdata = int([l for l in open('/proc/self/status') if l.startswith('VmData')][0].split()[1]) * 1024
        limit = vmdata + 80 * 2**20  # 80 MiB above what is already mapped as data
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
        sel = selector.select(pool, 1000, None, [q])
        emb_bytes = pool.n_rows * pool.dim * 2
        print(len(sel), emb_bytes / (80 * 2**20))
    """)
    # one malloc arena: a helper thread's own arena (up to 64 MiB reserved) is not what this test measures
    env = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "1", "PATH": "/usr/bin:/bin"}
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    count, ratio = res.stdout.split()
    assert int(count) == 1000 and float(ratio) > 3.5
