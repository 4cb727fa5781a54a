"""Deduplication (issue 29): exact and semantic groups against brute force, one kept per group, the eps
curve from one pass, and `run --dedup` never selecting a removed row, for every method."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

import dataselect as ds
from conftest import make_records, run_cli, write_jsonl
from dataselect.duplicates import dedup_store
from dataselect.duplicates.semantic import semantic_pass
from dataselect.errors import DataselectError
from dataselect.selectors import REGISTRY
from dataselect.store import Store
from dataselect.store.synthetic import store_from_array

N, D = 600, 16
SMALL = {"kmeans-sensitivity": {"k": 6}, "hierarchical-kmeans": {"k": [12, 3], "resamples": 1, "niter": 5}}


def near_duplicates(seed: int = 0) -> np.ndarray:
    """200 distinct unit rows and 400 copies of them at noise 0 (exact), 0.02, 0.1 and 0.3 (none)."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((200, D))
    noise = rng.choice([0.0, 0.02, 0.1, 0.3], (400, 1))
    x = np.concatenate([base, base[rng.integers(0, 200, 400)] + noise * rng.standard_normal((400, D))])
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)


@pytest.fixture(scope="module")
def pool_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("dedup")
    x = near_duplicates()
    rng = np.random.default_rng(1)
    cols = {"loss_response": (1 + rng.random(N)).astype(np.float32),
            "loss_response_alone": (2 + rng.random(N)).astype(np.float32),
            "n_response_tokens": np.full(N, 10, dtype=np.int32)}
    store_from_array(root / "pool", x, shard_rows=128, extra=cols)
    store_from_array(root / "q", x[[0, 1, 2, 3]].astype(np.float32), kind="queries", tasks=["a", "a", "b", "b"])
    return Store(root / "pool"), root / "q"


def brute_groups(x: np.ndarray, eps: float, labels: np.ndarray | None = None) -> np.ndarray:
    """Connected components of all pairs with cosine > 1 - eps (within equal ``labels``)."""
    xf = x.astype(np.float32)
    sims = xf @ xf.T
    pair = np.triu(sims > 1 - eps, 1)
    if labels is not None:
        pair &= labels[:, None] == labels[None, :]
    i, j = np.nonzero(pair)
    return connected_components(coo_matrix((np.ones(len(i)), (i, j)), shape=(len(x),) * 2), directed=False)[1]


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    pairs = set(zip(a.tolist(), b.tolist(), strict=True))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


@pytest.mark.parametrize("eps", [0.001, 0.01, 0.05])
def test_semantic_groups_equal_brute_force_all_pairs(pool_store, eps):
    store, _ = pool_store
    d = dedup_store(store, method="semantic", eps=eps, k=1)
    assert same_partition(d.group, brute_groups(near_duplicates(), eps))
    assert d.removed == N - len(np.unique(d.group)) > 0


def test_semantic_groups_within_clusters_equal_brute_force(pool_store):
    store, _ = pool_store
    p = semantic_pass(store, k=4, keep="hard")
    for eps in (0.01, 0.05):
        _, group = p.decide(eps)
        assert same_partition(group, brute_groups(near_duplicates(), eps, p.label))


@pytest.mark.parametrize("keep", ["hard", "easy", "random", "first"])
def test_exactly_one_row_kept_per_group(pool_store, keep):
    store, _ = pool_store
    d = dedup_store(store, method="semantic", eps=0.05, k=2, keep=keep)
    rows = store.rows()
    kept = d.kept
    for g in np.unique(d.group):
        members = d.group == g
        assert kept[members].sum() == 1 and rows[members & kept][0] == g
    assert np.all(d.duplicate_of[~kept] == d.group[~kept])


def test_keep_hard_keeps_the_row_farthest_from_the_centroid(pool_store):
    store, _ = pool_store
    p = semantic_pass(store, k=1, keep="hard")
    from dataselect.pool_index.kmeans import cluster_store  # the pass's own clustering (a cache hit)

    cl = cluster_store(store, 1, spherical=True)
    assert cl.key == p.info["clustering"]
    dist = np.linalg.norm(near_duplicates().astype(np.float64) - cl.centroids[0], axis=1)
    _, group = p.decide(0.05)
    for g in np.unique(group):
        members = np.flatnonzero(group == g)
        if len(members) > 1:
            assert dist[g] >= dist[members].max() - 1e-3


def test_exact_finds_identical_embeddings_as_brute_force(pool_store):
    store, _ = pool_store
    d = dedup_store(store, method="exact")
    x = near_duplicates()
    _, first = np.unique(x.view(np.uint8).reshape(N, -1), axis=0, return_inverse=True)
    assert same_partition(d.group, first.reshape(-1))
    assert np.array_equal(d.kept, d.group == store.rows())  # keep first: the lowest row of each group


def test_exact_with_the_pool_compares_normalised_text(tmp_path, minilm):
    recs = make_records(30, seed=3)
    dup = [dict(recs[i], id=f"copy{i}") for i in (0, 1, 2)]  # same content, another id, more whitespace
    dup[1]["instruction"] = "  " + dup[1]["instruction"].replace(" ", "   ") + " \n"
    pool = write_jsonl(tmp_path / "pool.jsonl", recs + dup)
    run_cli("embed", pool, "--model", minilm, "--out", tmp_path / "store", "--quiet")
    store = ds.open_store(tmp_path / "store")
    only_emb = ds.dedup(store, method="exact", progress=False)
    both = ds.dedup(store, method="exact", pool=pool, progress=False)
    assert both.removed == 3 and set(both.duplicate_of[both.duplicate_of >= 0].tolist()) == {0, 1, 2}
    emb = store.embeddings(np.float16)
    _, same_vector = np.unique(emb.view(np.uint8).reshape(len(emb), -1), axis=0, return_inverse=True)
    assert same_partition(only_emb.group, same_vector.reshape(-1))  # without the pool: embeddings alone
    assert only_emb.info["compared"] == "embeddings" and both.info["compared"] == "embeddings and records"


def test_reference_rule_is_available_and_differs_as_documented(tmp_path):
    # a ~ b ~ c, a and c not similar; ranked (keep first) a, c, b
    a = np.array([1.0, 0.0])
    b = np.array([np.cos(0.12), np.sin(0.12)])
    c = np.array([np.cos(0.24), np.sin(0.24)])
    far = np.array([[-1.0, 0.0]])
    x = np.concatenate([[a, c, b], far]).astype(np.float16)
    store = Store(store_from_array(tmp_path / "s", x))
    eps = 1 - np.cos(0.13)  # a-b and b-c pass, a-c does not
    groups = dedup_store(store, method="semantic", eps=eps, k=1, keep="first")
    ref = dedup_store(store, method="semantic", eps=eps, k=1, keep="first", rule="reference")
    assert groups.kept.tolist() == [True, False, False, True]  # one kept of the component {a, b, c}
    assert ref.kept.tolist() == [True, True, False, True]  # c is kept: its only earlier-ranked neighbour is b


def reference_transcription():
    """scripts/fidelity_semdedup.py's transcription of the reference code's rule (one copy, there)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "scripts" / "fidelity_semdedup.py"
    spec = importlib.util.spec_from_file_location("fidelity_semdedup", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.transcription


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reference_rule_removes_what_the_reference_code_removes(tmp_path, seed):
    """Fidelity (docs/fidelity.md): on the same clusters and recorded centroid distances, --rule reference
    --keep hard removes exactly the rows a transcription of the reference code removes, for several eps."""
    from dataselect.pool_index.kmeans import cluster_store

    x = near_duplicates(seed)
    store = Store(store_from_array(tmp_path / "s", x, shard_rows=128))
    for eps in (0.001, 0.01, 0.05, 0.1):
        d = dedup_store(store, method="semantic", eps=eps, k=5, seed=seed, keep="hard", rule="reference")
        cl = cluster_store(store, 5, niter=20, seed=seed, spherical=True)  # the clustering the pass used (cached)
        want = reference_transcription()(x, cl.labels, cl.dist2, eps)
        assert np.array_equal(np.flatnonzero(~d.kept), want), eps
        assert len(want) > 0


def test_a_similarity_of_exactly_1_minus_eps_is_not_a_duplicate(pool_store):
    """The reference code removes where M > 1 - eps, strictly (issue 29 left > or >= open; >= was built):
    a row whose best similarity to an earlier row equals float32(1 - eps) is kept, under both rules."""
    store, _ = pool_store
    p = semantic_pass(store, k=4, keep="hard")
    i = int(np.flatnonzero((p.prev_sim < 0.999) & (p.prev_sim > 0.95))[0])
    s = float(p.prev_sim[i])
    eps = 1 - s  # exact in float64, so float32(1 - eps) == prev_sim[i]
    assert np.float32(1 - eps) == p.prev_sim[i]
    for rule in ("reference", "groups"):
        at, _ = p.decide(eps, rule)
        above, _ = p.decide(eps * (1 + 1e-4), rule)
        assert at[i] == -1 and above[i] >= 0, rule


def test_eps_sweep_comes_from_one_pass(pool_store):
    store, _ = pool_store
    sweep = (0.001, 0.01, 0.05, 0.1)
    d = dedup_store(store, method="semantic", eps=0.01, k=3, eps_sweep=sweep)
    passes = list((store.path / "artefacts").glob("semdedup-*"))
    for e in sweep:
        assert dedup_store(store, method="semantic", eps=e, k=3).removed == d.info["curve"][str(e)]
    assert list((store.path / "artefacts").glob("semdedup-*")) == passes  # no new pass for another eps
    curve = [d.info["curve"][str(e)] for e in sweep]
    assert curve == sorted(curve) and curve[0] < curve[-1]


@pytest.mark.parametrize("method", sorted(REGISTRY))
def test_run_dedup_never_selects_a_removed_row(pool_store, method):
    store, q = pool_store
    d = dedup_store(store, method="semantic", eps=0.05, k=2)
    removed = set(store.rows()[~d.kept].tolist())
    queries = [q] if REGISTRY[method].needs_queries or REGISTRY[method].uses_queries else []
    sel = ds.select(store.path, method, budget=100, queries=queries, dedup=d, progress=False, **SMALL.get(method, {}))
    assert len(sel) == 100 and not removed & set(sel.rows.tolist())
    assert sel.meta["dedup"]["key"] == d.key and sel.meta["artefacts"]["dedup"] == d.key
    assert sel.meta["pool_store"]["rows"] == d.kept.sum()


def test_run_dedup_on_the_command_line_and_report(pool_store, tmp_path):
    store, q = pool_store
    code, err = run_cli("dedup", store.path, "--eps", "0.05", "--k", "2", "--eps-sweep", "0.01,0.05", "--quiet")
    folder = err.split("-> ")[1].split()[0]
    assert "eps 0.05" in err and "removes" in err
    run_cli("run", "--store", store.path, "--method", "random", "--budget", "50", "--dedup", folder,
            "--out", tmp_path / "sel", "--quiet")
    meta = json.loads((tmp_path / "sel" / "selection.json").read_text())
    d = ds.load_selection(tmp_path / "sel")
    assert meta["dedup"]["removed"] > 0 and len(d) == 50
    run_cli("report", tmp_path / "sel", "--out", tmp_path / "report.html")
    page = (tmp_path / "report.html").read_text()
    assert "<h2 id='dedup'>Deduplication</h2>" in page and "rows removed" in page and "borderline" in page


def test_a_dedup_of_another_store_is_refused_in_one_line(pool_store, tmp_path):
    store, _ = pool_store
    other = Store(store_from_array(tmp_path / "other", near_duplicates(seed=5)))
    d = dedup_store(other, method="exact")
    _, err = run_cli("run", "--store", store.path, "--method", "random", "--budget", "5", "--dedup", d.path,
                     "--out", tmp_path / "sel", expect=2)
    assert "not a dedup result of the store" in err and "Traceback" not in err
    _, err = run_cli("run", "--store", store.path, "--method", "random", "--budget", "5", "--dedup", "dedup-nothere",
                     "--out", tmp_path / "sel", expect=2)
    assert "not a dedup result" in err


def test_bad_parameters_are_one_line(pool_store):
    store, _ = pool_store
    for kwargs, msg in [({"method": "fuzzy"}, "--method"), ({"eps": 1.5}, "--eps"), ({"keep": "best"}, "--keep"),
                        ({"method": "exact", "keep": "hard"}, "only --method semantic"), ({"rule": "x"}, "--rule")]:
        with pytest.raises(DataselectError, match=msg):
            dedup_store(store, **kwargs)
    _, err = run_cli("dedup", store.path, "--eps-sweep", "0.01,abc", "--quiet", expect=2)
    assert "--eps 'abc'" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_view_pickles_to_the_same_rows(pool_store):
    store, _ = pool_store
    view = dedup_store(store, method="semantic", eps=0.05, k=2).apply(store)
    again = pickle.loads(pickle.dumps(view))
    assert again.n_rows == view.n_rows < store.n_rows and again.hash == view.hash != store.hash
    assert np.array_equal(again.rows(), view.rows())
    assert sum(s.rows_stored for s in again.shards) == again.n_rows


def test_many_batches_sorted_by_cluster_give_the_one_batch_result(pool_store, tmp_path):
    """Where the memory budget holds only some clusters at a time, the pass sorts the rows by batch in one
    read (scratch files inside the artefact's build, removed after) instead of reading the store once per
    batch, with the same result as one batch."""
    from dataselect.pool_index.kmeans import cluster_store

    x = near_duplicates()
    twin = Store(store_from_array(tmp_path / "twin", x, shard_rows=128))
    whole = semantic_pass(twin, k=6, keep="hard")
    largest = int(np.bincount(cluster_store(twin, 6, spherical=True).labels).max())
    store, _ = pool_store
    parts = semantic_pass(store, k=6, keep="hard", max_cluster_rows=largest)  # no cluster split, several batches
    assert whole.info["batches"] == 1 and parts.info["batches"] > 1 and parts.info["sorted_by_cluster"]
    assert parts.info["clusters_split"] == 0
    for name in ("prev_sim", "prev", "rank"):
        assert np.array_equal(getattr(whole, name), getattr(parts, name)), name
    for eps in (0.01, 0.05):
        assert np.array_equal(whole.decide(eps)[1], parts.decide(eps)[1])
    assert not list(store.path.rglob("scratch")) and not list(store.path.rglob("*.f16"))


def test_the_pass_is_reused_whatever_memory_is_free(pool_store):
    """The pass's cache key held the rows that fitted the free memory at the time, so a later `dedup --eps`
    in another process (other free memory, another default budget) made the whole pass again."""
    from dataselect.resources import Resources

    store, _ = pool_store
    a = semantic_pass(store, k=3, keep="easy", resources=Resources.make(max_memory="3GB", progress=False))
    b = semantic_pass(store, k=3, keep="easy", resources=Resources.make(max_memory="2GB", progress=False))
    assert a.key == b.key and a.info["clusters_split"] == 0
