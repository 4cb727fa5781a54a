"""--reduce pca:D (issue 27): the pool projected once onto its principal components, kept as a store
beside it, and both clustering selectors clustering in it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.decomposition import PCA

import dataselect as ds
from conftest import run_cli
from dataselect.pool_index.reduce import reduced_store
from dataselect.store import Store
from dataselect.store.synthetic import clustered_store, store_from_array, unit_rows


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    return Store(clustered_store(tmp_path_factory.mktemp("reduce") / "pool", 1500, 32, modes=12, seed=4,
                                 with_loss=True))


def test_the_reduced_store_is_the_pca_projection_of_every_row(pool):
    red, info = reduced_store(pool, "pca:6")
    assert red.dim == 6 and red.n_rows == pool.n_rows and np.array_equal(red.rows(), pool.rows())
    for col in ("id", "source", "loss_response", "n_tokens"):
        assert red.column(col).tolist() == pool.column(col).tolist()
    x = pool.embeddings().astype(np.float64)  # the fit sample is every row here (fewer than FIT_ROWS)
    ref = PCA(n_components=6, svd_solver="full").fit(x)
    want = ref.transform(x)
    got = red.embeddings().astype(np.float64)
    for j in range(6):  # a component is defined up to its sign
        sign = np.sign(got[:, j] @ want[:, j])
        assert np.abs(got[:, j] - sign * want[:, j]).max() < 2e-3  # float16 storage
    assert info["variance_kept"] == pytest.approx(ref.explained_variance_ratio_.sum(), abs=1e-4)
    again, info2 = reduced_store(pool, "pca:6")
    assert info2["artefact"] == info["artefact"] and again.hash == red.hash  # built once, then reused
    assert len(list((pool.path / "artefacts").glob("reduced-*"))) == 1


@pytest.mark.parametrize(("method", "kind"), [("hierarchical-kmeans", "hierarchy"), ("kmeans-sensitivity", "clustering")])
def test_both_clustering_selectors_cluster_in_the_reduced_space(pool, tmp_path, method, kind):
    out = tmp_path / "sel"
    run_cli("run", "--store", pool.path, "--method", method, "--budget", "150", "--reduce", "pca:8", "--out", out, "-q")
    meta = json.loads((out / "selection.json").read_text())
    reduced = meta["method_info"]["reduce"]
    assert reduced["reduce"] == "pca:8" and 0 < reduced["variance_kept"] < 1
    assert meta["artefacts"]["reduced"] == reduced["artefact"] and meta["selected"] == 150
    red = Store(pool.path / "artefacts" / f"reduced-{reduced['artefact']}" / "store")
    # the clustering was built on the reduced store (its own artefact), in 8 dimensions
    art = red.path / "artefacts" / f"{kind}-{meta['artefacts'][kind]}"
    assert art.is_dir()
    plain = ds.select(pool, method, budget=150, progress=False)
    assert plain.meta["artefacts"][kind] != meta["artefacts"][kind] and "reduced" not in plain.meta["artefacts"]
    run_cli("report", out, "-q")  # the cluster balance is read from the reduced store's artefact
    assert "id='clusters'" in (out / "report.html").read_text()


def test_kmeans_sensitivity_projects_its_queries_into_the_reduced_space(pool, tmp_path):
    rng = np.random.default_rng(0)
    store_from_array(tmp_path / "q", unit_rows(rng, 4, 32), kind="queries", tasks=["a", "a", "b", "b"])
    sel = ds.select(pool, "kmeans-sensitivity", budget=120, queries=[tmp_path / "q"], reduce="pca:8", progress=False)
    assert len(sel) == 120 and sel.meta["method_info"]["query_clusters_kept"] >= 1


def test_a_deduplicated_pool_is_reduced_through_its_store(pool, tmp_path):
    x = unit_rows(np.random.default_rng(1), 400, 16)
    x[200:260] = x[:60]  # 60 exact copies
    store_from_array(tmp_path / "p", x, shard_rows=150)
    run_cli("dedup", tmp_path / "p", "--method", "exact", "-q")
    run_cli("run", "--store", tmp_path / "p", "--dedup", "latest", "--method", "hierarchical-kmeans", "--budget", "100",
            "--reduce", "pca:4", "--out", tmp_path / "sel", "-q")
    picked = ds.load_selection(tmp_path / "sel").rows
    assert len(picked) == 100 and not np.isin(picked, np.arange(200, 260)).any()


@pytest.mark.parametrize(("spec", "message"), [("pca:0", "give none or pca:D"), ("pca:32", "not fewer than the store's 32"),
                                               ("svd:8", "give none or pca:D")])
def test_a_bad_reduce_is_one_line(pool, tmp_path, spec, message):
    _, err = run_cli("run", "--store", pool.path, "--method", "hierarchical-kmeans", "--budget", "50", "--reduce", spec,
                     "--out", tmp_path / "s", "-q", expect=2)
    assert message in err and "Traceback" not in err and not (tmp_path / "s").exists()
