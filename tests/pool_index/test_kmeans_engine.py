"""The k-means engine: k-means++ seeding, both backends, the memory budget, streamed assignment, HNSW."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import faiss
import numpy as np
import pytest
import torch

from conftest import run_cli
from dataselect.errors import DataselectError
from dataselect.pool_index import cluster_store
from dataselect.pool_index.kmeans import fit_kmeans, kmeans_plusplus, lloyd
from dataselect.pool_index.search import CentroidSearch
from dataselect.resources import MemoryBudget, Resources, parse_bytes
from dataselect.selection import read_selection
from dataselect.store import Store
from dataselect.store.synthetic import store_from_array, write_store


def blobs(n: int, dim: int, modes: int, seed: int = 0, spread: float = 0.3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((modes, dim)).astype(np.float32)
    return centres[rng.integers(0, modes, n)] + spread * rng.standard_normal((n, dim)).astype(np.float32)


def greedy_kmeans_pp(x: np.ndarray, k: int, rng: np.random.Generator) -> list[int]:
    """k-means++ as the papers' code describes it, written out plainly (float64, full distances).

    First centre uniform; then 2 + int(ln k) candidates drawn by D^2 (inverse CDF of the running
    squared distances); keep the candidate whose adoption leaves the smallest potential.
    """
    x = x.astype(np.float64)
    trials = 2 + int(np.log(k))
    first = int(rng.integers(len(x)))
    chosen, d2 = [first], ((x - x[first]) ** 2).sum(1)
    for _ in range(1, k):
        u = rng.random(trials) * d2.sum()
        cand = np.minimum(np.searchsorted(np.cumsum(d2), u), len(x) - 1)
        after = np.minimum(d2[None, :], np.stack([((x - x[c]) ** 2).sum(1) for c in cand]))
        best = int(np.argmin(after.sum(1)))
        chosen.append(int(cand[best]))
        d2 = after[best]
    return chosen


@pytest.mark.parametrize("k", [1, 7, 60])
def test_kmeans_plusplus_matches_the_greedy_rule(k):
    x = blobs(3000, 12, 25, seed=k)
    got = kmeans_plusplus(torch.from_numpy(x), k, np.random.default_rng(5))
    assert got.tolist() == greedy_kmeans_pp(x, k, np.random.default_rng(5))


def test_seeding_is_deterministic_and_seed_dependent():
    x = torch.from_numpy(blobs(2000, 8, 10))
    a = kmeans_plusplus(x, 20, np.random.default_rng(0))
    assert np.array_equal(a, kmeans_plusplus(x, 20, np.random.default_rng(0)))
    assert not np.array_equal(a, kmeans_plusplus(x, 20, np.random.default_rng(1)))
    assert len(set(a.tolist())) == 20


def inertia(x: np.ndarray, c: np.ndarray) -> float:
    index = faiss.IndexFlatL2(x.shape[1])
    index.add(np.ascontiguousarray(c, dtype=np.float32))
    return float(index.search(x, 1)[0].astype(np.float64).sum())


def test_backends_agree_with_faiss_kmeans():
    """Same seed -> same k-means++ seeds on both backends; final inertia within 1% of faiss.Kmeans."""
    x = blobs(6000, 24, 40, seed=3)
    fits = {kind: fit_kmeans(torch.from_numpy(x), 50, niter=20, seed=11, search=kind) for kind in ("flat", "torch")}
    assert np.array_equal(fits["flat"].seeds, fits["torch"].seeds)
    km = faiss.Kmeans(24, 50, niter=20, seed=11, max_points_per_centroid=10**9, min_points_per_centroid=1)
    km.train(x, init_centroids=x[fits["flat"].seeds])
    ref = inertia(x, km.centroids)
    for kind, fit in fits.items():
        assert abs(inertia(x, fit.centroids) / ref - 1) < 0.01, kind


def test_empty_cluster_keeps_its_centroid():
    x = torch.tensor([[0.0, 0.0], [0.1, 0.0], [10.0, 10.0]])
    init = torch.tensor([[0.0, 0.0], [10.0, 10.0], [100.0, 100.0]])  # the third attracts nobody
    for kind in ("flat", "torch"):
        c, _ = lloyd(x, init, 3, kind)
        assert torch.allclose(c[2], init[2]) and torch.allclose(c[0], torch.tensor([0.05, 0.0]))


def test_hnsw_assignment_is_nearly_exact():
    rng = np.random.default_rng(0)
    cent = torch.from_numpy(rng.standard_normal((3000, 32)).astype(np.float32))
    x = torch.from_numpy(blobs(4000, 32, 3000, seed=1))
    exact, d_exact = CentroidSearch(cent, "flat")(x)
    approx, d_approx = CentroidSearch(cent, "hnsw")(x)
    torch_lab, torch_d = CentroidSearch(cent, "torch")(x)
    assert (torch_lab == exact).float().mean() > 0.999
    assert (approx == exact).float().mean() > 0.95
    assert bool((d_approx >= d_exact - 1e-4).all())  # never nearer than the true nearest


def test_ivf_assignment_is_nearly_exact_and_selectors_take_it(tmp_path):
    """Issue 27: --assign ivf (FAISS IVF over the centroids) for large k; the distance is the exact one to
    the centroid it finds, and the choice is recorded."""
    # k-means centroids sit in the data: here 3,000 of its rows, around 200 modes (with centroids spread
    # evenly over the space, as isotropic noise, 16 of 76 cells find the nearest for only 84% of rows)
    data = torch.from_numpy(blobs(7000, 32, 200, seed=1))
    cent, x = data[:3000].contiguous(), data[3000:].contiguous()
    exact, d_exact = CentroidSearch(cent, "flat")(x)
    search = CentroidSearch(cent, "ivf")
    approx, d_approx = search(x)
    assert search.index.nlist == 76 and search.index.nprobe == 16  # min(4 sqrt(k), k / 39) cells
    assert (approx == exact).float().mean() > 0.95
    assert bool((d_approx >= d_exact - 1e-4).all())
    hit = approx == exact
    assert torch.allclose(d_approx[hit], d_exact[hit], rtol=1e-4, atol=1e-4)


def test_ivf_is_used_only_where_it_costs_less_than_exact_search(tmp_path):
    """Issue 27: --assign ivf builds the index for a step only where the measured cost model says it
    pays (docs/benchmarks.md, bench_assign: x1.3 and x1.0 with the build on 20,000 rows at k = 10^4
    and 10^5); elsewhere the step searches exactly, and selection.json records which each step used."""
    from dataselect.pool_index.hierarchical import build_hierarchy
    from dataselect.pool_index.search import search_for

    assert search_for("ivf", 20_000, 10_000) == "ivf"
    assert search_for("ivf", 2_500_000, 100_000) == "ivf"  # a Lloyd update at 25 rows per centroid
    assert search_for("ivf", 20_000, 2_000) == "flat"  # an upper hierarchy level's k
    assert search_for("ivf", 500, 100_000) == "flat"  # too few rows to pay for building it
    assert search_for("hnsw", 10, 10) == "hnsw" and search_for("torch", 10**6, 10**5) == "torch"
    store_from_array(tmp_path / "s", blobs(3000, 16, 20).astype(np.float32), shard_rows=1000)
    cl = cluster_store(Store(tmp_path / "s"), 40, niter=3, assign="ivf", cache=False)
    assert cl.meta["search"] == "ivf" and cl.meta["search_used"] == {"fit": "flat", "assign": "flat"}
    exact_cl = cluster_store(Store(tmp_path / "s"), 40, niter=3, cache=False)
    assert np.array_equal(cl.labels, exact_cl.labels)  # searched exactly: the exact clustering
    h = build_hierarchy(Store(tmp_path / "s"), [40, 5], resamples=1, niter=3, assign="ivf", cache=False)
    assert h.meta["search_used"] == [{"fit": ["flat", "flat"], "assign": ["flat", "flat"]},  # each run's
                                     {"fit": ["flat", "flat"], "assign": ["flat", "flat"]}]


def test_ivf_is_not_taken_where_rows_crowd_into_a_few_cells(tmp_path):
    """Issue 27: at 5.8M x 4096 (pca:256) --assign ivf ran a Lloyd update 5 times slower than exact search,
    as the cost model assumed evenly filled cells (nprobe k / nlist centroids scanned a row). The scan is
    now measured on rows like the step's before IVF is taken: where rows meet the crowded cells (here 512
    modes in 64 dimensions: about 1.6 times the even scan) the step searches exactly; where the cells fill
    evenly it still takes IVF. bench_assign prints both models against the measured times."""
    from dataselect.pool_index.search import ivf_scanned, probe_rows, search_for, search_kind

    crowded = torch.from_numpy(blobs(30_000, 64, 512, seed=0, spread=1.0))
    even = torch.from_numpy(np.random.default_rng(1).standard_normal((30_000, 16)).astype(np.float32))
    for x, want in ((crowded, "flat"), (even, "ivf")):
        cent, rows = x[:10_000].contiguous(), x[10_000:]
        assert search_for("ivf", len(rows), len(cent)) == "ivf"  # the even-cell model alone takes IVF for both
        scanned = ivf_scanned(CentroidSearch(cent, "ivf").index, probe_rows(rows).numpy())
        assert (scanned > 1.4 * 625) == (want == "flat"), scanned  # 625 = nprobe k / nlist, even cells
        assert search_kind("ivf", cent, len(rows), probe_rows(rows)) == want
        used: list[str] = []
        lloyd(rows, cent, 2, "ivf", used=used)  # each Lloyd update decides with its own centroids
        assert used == [want, want]
    fit = fit_kmeans(crowded[:2000], 8, niter=2, search="ivf")
    assert fit.searches == ["flat", "flat"] and fit.search_used == "flat"


def test_budget_parsing_and_refusal():
    assert parse_bytes("1GB") == 10**9 and parse_bytes("512MiB") == 512 * 2**20 and parse_bytes("1.5g") == 1.5e9
    with pytest.raises(DataselectError, match="--max-memory"):
        parse_bytes("lots")
    budget = MemoryBudget(10**6)
    with pytest.raises(DataselectError, match="raise --max-memory to at least"):
        budget.require(10**9, "a test plan")
    default = MemoryBudget.resolve(None)
    assert 0 < default.limit <= 4 * 2**30


def test_sample_shrinks_to_the_budget_and_says_so(tmp_path, capsys):
    store_from_array(tmp_path / "s", blobs(20000, 256, 30).astype(np.float32), shard_rows=2000)
    st = Store(tmp_path / "s")
    from dataselect.resources import SLACK

    # the rule of thumb wants 10,240 rows x 1 KiB; give the plan about 8 MiB
    tight = Resources.make("cpu", MemoryBudget.runtime() + SLACK + 8 * 2**20, progress=False)
    cl = cluster_store(st, 40, niter=3, resources=tight, cache=False)
    assert cl.meta["sample_limited_by_memory"] and cl.meta["sample_rows"] < cl.meta["sample_rows_wanted"] == 10240
    said = capsys.readouterr().err
    assert "memory budget holds" in said and "float16" not in said and "FAISS asks" not in said
    starved = cluster_store(st, 400, niter=1, resources=tight, cache=False)  # 5,624 rows: 14 per centroid
    assert starved.meta["sample_rows"] < 39 * 400 and "below the 39 per centroid FAISS asks for" in capsys.readouterr().err
    roomy = cluster_store(st, 40, niter=3, cache=False)
    assert not roomy.meta["sample_limited_by_memory"] and roomy.meta["sample_rows"] == 10240
    assert roomy.meta["device"] == "cpu" and roomy.meta["backend"] == "faiss" and roomy.meta["k_effective"] == 40


def test_a_sample_float32_would_cut_is_held_in_float16(tmp_path):
    """Issue 27: the stored values are float16, so a float16 sample is the same sample in half the
    memory (its rows widened to float32 block by block where computed on): where a float32 sample
    would be cut short and the widened blocks cost less than it gains, the plan holds more rows, and
    the clustering of a given sample is the float32 one's, bit for bit."""
    import torch

    from dataselect.pool_index.kmeans import plan_memory
    from dataselect.resources import SLACK

    store_from_array(tmp_path / "s", blobs(120_000, 32, 40).astype(np.float32), shard_rows=10_000)
    st, cpu = Store(tmp_path / "s"), torch.device("cpu")

    def plans(mib):
        res = Resources.make("cpu", MemoryBudget.runtime() + SLACK + mib * 2**20, progress=False)
        return res, [plan_memory(st, 100, 32, 100_000, cpu, res, half_ok=ok) for ok in (True, False)]

    tiny = plans(6)[1]  # too little memory to pay for the widened blocks: float32, cut short
    assert tiny[0].sample_dtype == "float32" and tiny[0].limited_by_budget
    mib = next(m for m in range(8, 40) if not plans(m)[1][0].limited_by_budget)
    tight, (half, full) = plans(mib)
    assert (half.sample_dtype, full.sample_dtype) == ("float16", "float32")
    assert half.sample_rows == 100_000 > full.sample_rows and full.limited_by_budget
    cl = cluster_store(st, 100, niter=2, sample_size=100_000, init_sample=8, resources=tight, cache=False)
    assert cl.meta["sample_dtype"] == "float16" and cl.meta["sample_rows"] == 100_000
    roomy = cluster_store(st, 100, niter=2, sample_size=100_000, init_sample=8, cache=False)
    assert roomy.meta["sample_dtype"] == "float32"
    assert np.array_equal(cl.centroids, roomy.centroids) and np.array_equal(cl.labels, roomy.labels)


def test_over_budget_request_is_one_line_exit_2(tmp_path):
    store_from_array(tmp_path / "s", blobs(3000, 64, 10), shard_rows=1000)
    _, err = run_cli("run", "--store", tmp_path / "s", "--method", "hierarchical-kmeans", "--k", "500,50",
                     "--budget", "100", "--out", tmp_path / "sel", "--max-memory", "100MB", "-q", expect=2)
    lines = [ln for ln in err.strip().splitlines() if ln]
    assert len(lines) == 1 and "raise --max-memory to at least" in lines[0] and "Traceback" not in err
    assert not (tmp_path / "sel").exists()


def test_torch_backend_through_the_cli_records_effective_parameters(tmp_path):
    store_from_array(tmp_path / "s", blobs(3000, 16, 10), shard_rows=1000)
    run_cli("run", "--store", tmp_path / "s", "--method", "kmeans-sensitivity", "--variant", "coreset", "--k", "12",
            "--backend", "torch", "--device", "cpu", "--budget", "50", "--out", tmp_path / "sel", "-q")
    _, meta = read_selection(tmp_path / "sel")
    info = meta["method_info"]["clustering"]
    assert info["backend"] == "torch" and info["device"] == "cpu" and info["k_effective"] == 12
    assert info["sample_rows"] == 3000 and set(info["seconds"]) >= {"kmeans++", "lloyd", "assign"}
    assert meta["resources"]["max_memory_bytes"] > 0


def test_clustering_respects_a_data_segment_limit(tmp_path):
    """At the rule of thumb the training sample alone would be 2x the process's data limit; the
    budget sizes it down and the run completes inside the limit."""
    n, dim, k = 60_000, 512, 200  # rule of thumb: 51,200 rows x 512 x 4 B = 100 MiB of float32 sample
    rng = np.random.default_rng(0)
    write_store(tmp_path / "big", lambda lo, hi: rng.standard_normal((hi - lo, dim), dtype=np.float32) / 22,
                n, dim, shard_rows=10_000)
    code = textwrap.dedent(f"""
        import json, resource
        import numpy as np, torch
        from dataselect.pool_index import cluster_store
        from dataselect.resources import RUNTIME_ALLOWANCE, SLACK, Resources
        from dataselect.store import Store
        store = Store({str(tmp_path / 'big')!r})
        import faiss
        torch.ones(64, 64) @ torch.ones(64, 64); np.ones((64, 64)) @ np.ones((64, 64))
        ix = faiss.IndexFlatL2(64); ix.add(np.ones((1024, 64), np.float32)); ix.search(np.ones((20000, 64), np.float32), 1)
        for _ in store.iter_blocks(("embedding",)):
            pass
        # (libraries reserve fixed scratch buffers on first use: FAISS ~144 MiB once queries
        # exceed a few thousand rows, Arrow's allocator ~40 MiB)
        vmdata = int([l for l in open('/proc/self/status') if l.startswith('VmData')][0].split()[1]) * 1024
        limit = vmdata + 50 * 2**20  # half the naive sample
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
        res = Resources.make("cpu", RUNTIME_ALLOWANCE + SLACK + 40 * 2**20, progress=False)
        cl = cluster_store(store, {k}, niter=2, init_sample=8, resources=res, cache=False)
        print(json.dumps({{"rows": cl.meta["sample_rows"], "wanted": cl.meta["sample_rows_wanted"],
                          "labels": int(len(cl.labels))}}))
    """)
    env = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["labels"] == n and out["wanted"] == k * 256 and out["rows"] < out["wanted"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_paths_match_cpu(tmp_path):
    from dataselect.pool_index.similarity import score_tasks

    x = blobs(5000, 64, 20)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    store_from_array(tmp_path / "s", x, shard_rows=1000)
    st = Store(tmp_path / "s")
    Q = x[:30].copy()
    starts = np.array([0, 10, 20])
    _, cpu = score_tasks(st, Q, starts)
    _, gpu = score_tasks(st, Q, starts, device="cuda")
    np.testing.assert_allclose(cpu, gpu, atol=1e-5)
    a = cluster_store(st, 20, niter=5, resources=Resources.make("cuda", progress=False), cache=False)
    b = cluster_store(st, 20, niter=5, resources=Resources.make("cpu", progress=False), cache=False)
    assert abs(a.meta["pool_inertia"] / b.meta["pool_inertia"] - 1) < 0.02


def test_the_plan_does_not_drift_with_the_process_size(tmp_path):
    """A budget-limited sample must not change with a few MB of RSS, or the same command and seed
    would cluster a different sample (and miss the cache) from one run to the next. Run in a fresh
    interpreter, below the runtime allowance, as a command is."""
    store_from_array(tmp_path / "s", blobs(20000, 256, 30).astype(np.float32), shard_rows=2000)
    code = textwrap.dedent(f"""
        import numpy as np, torch
        from dataselect.pool_index.kmeans import plan_memory
        from dataselect.resources import RUNTIME_ALLOWANCE, SLACK, Resources
        from dataselect.store import Store
        st = Store({str(tmp_path / 's')!r})
        res = Resources.make("cpu", RUNTIME_ALLOWANCE + SLACK + 8 * 2**20, progress=False)
        before = plan_memory(st, 40, 256, 10240, torch.device("cpu"), res)
        ballast = np.ones(50 * 2**20, np.uint8)  # the process grows by 50 MB
        after = plan_memory(st, 40, 256, 10240, torch.device("cpu"), res)
        print(before.limited_by_budget, before.sample_rows, after.sample_rows)
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    limited, a, b = res.stdout.split()
    assert limited == "True" and a == b


def test_lloyd_summed_on_workers_gives_the_in_process_centroids(tmp_path):
    """Issue 26: Lloyd ran on the driver's sample only, so k-means could not leave the process. Its sums
    are now LloydTask calls, one per shard, on a distributed executor's workers (each reading its own
    shards' rows), and give exactly the centroids the in-process update gives."""
    import pickle

    from dataselect.engines.executor import LocalExecutor
    from dataselect.pool_index.kmeans import fit_store_rows
    from dataselect.pool_index.sample import load_rows

    calls = []

    class Workers(LocalExecutor):  # a distributed executor's contract, in this process
        distributed = True

        def map_shards(self, task, store, shards=None):
            worker = pickle.loads(pickle.dumps(task))
            worker.setup()
            calls.append(list(shards))
            return worker.merge([worker.run(pickle.loads(pickle.dumps(store)), [i]) for i in reversed(shards)][::-1])

    x = blobs(3000, 16, 12, seed=4)
    store_from_array(tmp_path / "s", x, shard_rows=700)
    st = Store(tmp_path / "s")
    positions = np.sort(np.random.default_rng(2).choice(3000, 1800, replace=False))
    rows = load_rows(st, positions, torch.device("cpu"))
    here = fit_store_rows(st, positions, rows, 12, executor=LocalExecutor(), niter=6, seed=3)
    there = fit_store_rows(st, positions, rows, 12, executor=Workers(), niter=6, seed=3)
    assert len(calls) == 6 and calls[0] == [0, 1, 2, 3, 4]
    assert np.array_equal(here.centroids, there.centroids) and here.inertia == there.inertia
    assert np.array_equal(here.seeds, there.seeds)
    plain = fit_kmeans(rows, 12, niter=6, seed=3)  # one group: the same clustering, rounding aside
    assert abs(plain.inertia / here.inertia - 1) < 1e-5
