"""FAISS indexes and k-means over stores, and the k-means sensitivity selector."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import make_records, run_cli, write_jsonl
from dataselect.errors import DataselectError
from dataselect.pool_index import PoolIndex, build_index, cluster_store
from dataselect.pool_index.kmeans import Clustering
from dataselect.selection import read_selection
from dataselect.store import Store
from dataselect.store.artefacts import Artefacts
from dataselect.store.synthetic import store_from_array


def clustered(n: int, dim: int, modes: int, seed: int = 0, spread: float = 0.3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((modes, dim)).astype(np.float32)
    x = centres[rng.integers(0, modes, n)] + spread * rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def cstore(tmp_path_factory):
    path = tmp_path_factory.mktemp("idx") / "store"
    store_from_array(path, clustered(6000, 32, 20), shard_rows=1000)
    return Store(path)


def test_index_kinds_roundtrip_and_recall(cstore):
    rng = np.random.default_rng(1)
    queries = cstore.take(rng.choice(cstore.n_rows, 50, replace=False))["embedding"]
    build_index(cstore, "flat")
    _, exact = PoolIndex.load(cstore, "flat").search(queries, 10)
    brute = np.argsort(-(queries @ cstore.embeddings().T), axis=1, kind="stable")[:, :10]
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact, brute, strict=True)]) > 0.99
    for kind, kw, floor in [("ivf", {"nlist": 40, "nprobe": 8}, 0.95), ("hnsw", {}, 0.95),
                            ("ivfpq", {"nlist": 20, "m": 16, "nprobe": 10}, 0.5)]:
        build_index(cstore, kind, **kw)
        idx = PoolIndex.load(cstore, kind)
        assert idx.index.ntotal == cstore.n_rows and idx.meta["kind"] == kind
        _, got = idx.search(queries, 10)
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, exact, strict=True)])
        assert recall >= floor, (kind, recall)


def test_stale_index_and_clustering_are_refused(tmp_path):
    store_from_array(tmp_path / "s", clustered(500, 8, 4), shard_rows=100)
    st = Store(tmp_path / "s")
    build_index(st, "flat")
    cl = cluster_store(st, 5)
    store_from_array(tmp_path / "s", clustered(500, 8, 4, seed=5), shard_rows=100)  # re-embedded: new hash
    st2 = Store(tmp_path / "s")
    with pytest.raises(DataselectError, match="is stale"):
        PoolIndex.load(st2, "flat")
    with pytest.raises(DataselectError, match="is stale"):
        Clustering.load(Artefacts(st2).get("clustering", cl.key), st2)
    assert cluster_store(st2, 5).meta["store_hash"] == st2.hash != cl.meta["store_hash"]


def test_kmeans_deterministic_cached_and_pca(cstore):
    a = cluster_store(cstore, 20, seed=3, cache=False)
    b = cluster_store(cstore, 20, seed=3, cache=False)
    assert np.array_equal(a.labels, b.labels) and np.array_equal(a.centroids, b.centroids)
    c = cluster_store(cstore, 20, seed=3)  # writes the cache
    d = cluster_store(cstore, 20, seed=3)  # reads it
    assert np.array_equal(c.labels, d.labels) and np.array_equal(a.labels, c.labels)
    # labels and distances are the nearest-centroid assignment of every row
    x = cstore.embeddings()
    d2 = ((x[:, None, :] - a.centroids[None]) ** 2).sum(-1)
    assert np.array_equal(a.labels, d2.argmin(1))
    np.testing.assert_allclose(a.dist2, d2.min(1), atol=1e-4)
    p = cluster_store(cstore, 10, pca_dim=8, cache=False)
    assert p.centroids.shape == (10, 8) and p.projection is not None and len(p.labels) == cstore.n_rows


def test_selector_through_cli_and_query_mode(tmp_path):
    rng = np.random.default_rng(0)
    store_from_array(tmp_path / "p", clustered(2000, 16, 10, seed=2), shard_rows=500)
    q = clustered(2000, 16, 10, seed=2)[:3]  # queries from the first rows' modes
    store_from_array(tmp_path / "q", q, kind="queries", tasks=["t"] * 3)
    _, err = run_cli("run", "--store", tmp_path / "p", "--method", "kmeans-sensitivity", "--budget", "100",
                     "--k", "20", "--variant", "coreset", "--out", tmp_path / "sel")
    table, meta = read_selection(tmp_path / "sel")
    assert table.num_rows == 100 and meta["params"]["k"] == 20 and "cluster" in table.column_names
    run_cli("run", "--store", tmp_path / "p", "--method", "kmeans-sensitivity", "--budget", "100", "--k", "20",
            "--variant", "coreset", "--queries", tmp_path / "q", "--query-clusters", "2", "--out", tmp_path / "selq")
    tq, _ = read_selection(tmp_path / "selq")
    st = Store(tmp_path / "p")
    cl = cluster_store(st, 20, init_sample=32)
    picked_clusters = set(tq.column("cluster").to_pylist())
    qlab = set(cl.labels[:3].tolist())
    assert picked_clusters <= set(range(20)) and len(picked_clusters) <= max(2, len(qlab) + 2)
    assert len(picked_clusters & qlab) >= 1
    del rng


def test_neighbors_by_row_and_text(tmp_path, tiny_llama, capsys):
    pool = write_jsonl(tmp_path / "p.jsonl", make_records(30))
    run_cli("embed", pool, "-m", tiny_llama, "-o", tmp_path / "s", "-q")
    run_cli("neighbors", tmp_path / "s", "--row", "4", "-k", "3", "--pool", pool)
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if ln.strip().startswith(("0", "1", "-0"))]
    assert len(lines) == 3 and "row 4 " not in "".join(lines)
    run_cli("neighbors", tmp_path / "s", "--text", "the cat sat on a mat", "-k", "2")
    assert "nearest to text 'the cat sat on a mat'" in capsys.readouterr().out
