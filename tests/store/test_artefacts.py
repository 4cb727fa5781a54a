"""The artefact cache beside a store (store/artefacts.py) and what selections record of it (issue 25)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from conftest import modes, run_cli
from dataselect.errors import DataselectError
from dataselect.store import Store
from dataselect.store.artefacts import FOLDER, Artefacts
from dataselect.store.synthetic import store_from_array


def _store(path, seed=0, n=1200):
    x, _ = modes(n, 16, 6, seed=seed)
    loss = np.random.default_rng(seed).gamma(2.0, 0.5, n).astype(np.float32)
    store_from_array(path, x, shard_rows=500, extra={"loss_response": loss})
    return Store(path)


def _build(kind, store):
    """The real builder of each artefact kind -> (its key, a value to compare)."""
    if kind == "clustering":
        from dataselect.pool_index import cluster_store

        cl = cluster_store(store, 6, niter=5)
        return cl.key, cl.labels
    if kind == "hierarchy":
        from dataselect.pool_index.hierarchical import build_hierarchy

        h = build_hierarchy(store, [12, 3], resamples=1, niter=5)
        return h.key, h.labels[0]
    from dataselect.pool_index import PoolIndex, build_index

    folder = build_index(store, "flat")
    return folder.name.split("-", 1)[1], PoolIndex.load(store, "flat").search(store.take([5])["embedding"], 3)[1]


KINDS = ("clustering", "hierarchy", "index")


@pytest.mark.parametrize("kind", KINDS)
def test_a_second_build_is_a_cache_hit(tmp_path, kind, monkeypatch):
    store = _store(tmp_path / "s")
    key, value = _build(kind, store)
    assert (tmp_path / "s" / FOLDER / f"{kind}-{key}" / "artefact.json").is_file()

    def no_build(*a, **k):
        raise AssertionError("rebuilt an artefact that is cached")

    import faiss

    import dataselect.pool_index.hierarchical as hier
    import dataselect.pool_index.kmeans as km

    monkeypatch.setattr(km, "fit_kmeans", no_build)
    monkeypatch.setattr(hier, "fit_kmeans", no_build)
    monkeypatch.setattr(faiss, "IndexFlatIP", no_build)
    key2, value2 = _build(kind, Store(tmp_path / "s"))
    assert key2 == key and np.array_equal(value2, value)


@pytest.mark.parametrize("kind", KINDS)
def test_an_artefact_of_another_version_of_the_store_is_refused(tmp_path, kind):
    store = _store(tmp_path / "s")
    key, _ = _build(kind, store)
    _store(tmp_path / "s", seed=1)  # the store rewritten in place: other vectors, another store hash
    with pytest.raises(DataselectError, match="stale: it was built for another version of the store"):
        Artefacts(Store(tmp_path / "s")).get(kind, key)
    assert Artefacts(Store(tmp_path / "s")).find(kind) == []  # nor found


@pytest.mark.parametrize("kind", KINDS)
def test_a_killed_build_leaves_no_partial_artefact(tmp_path, kind):
    store = _store(tmp_path / "s")
    code = (
        "import os, signal, sys\n"
        "from dataselect.store import Store\n"
        "from dataselect.store.artefacts import Artefacts\n"
        "def build(folder):\n"
        "    (folder / 'half.npy').write_bytes(b'x' * 1000)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        f"Artefacts(Store(sys.argv[1])).get_or_build({kind!r}, {{'p': 1}}, build, lambda a: None)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "s")], capture_output=True)
    assert proc.returncode == -9
    cache = Artefacts(store)
    key = cache.key(kind, {"p": 1})
    assert not cache.folder(kind, key).exists()
    with pytest.raises(DataselectError, match="gone from the store"):
        cache.get(kind, key)
    leftovers = [p.name for p in (tmp_path / "s" / FOLDER).iterdir() if p.name.startswith(".tmp-")]
    assert leftovers, "the killed build's temporary folder should be there to sweep"

    def build(folder):
        (folder / "whole.npy").write_bytes(b"y")
        return "built", {"ok": True}

    value, art = cache.get_or_build(kind, {"p": 1}, build, lambda a: "loaded")
    assert value == "built" and (art.path / "whole.npy").is_file() and not (art.path / "half.npy").exists()
    assert not [p for p in (tmp_path / "s" / FOLDER).iterdir() if p.name.startswith(".tmp-")]
    assert cache.get_or_build(kind, {"p": 1}, build, lambda a: "loaded")[0] == "loaded"


@pytest.mark.parametrize("method, params", [
    ("kmeans-sensitivity", ["--k", "12"]),
    ("hierarchical-kmeans", ["--k", "12,3", "--resamples", "1", "--niter", "5"]),
])
def test_report_reads_the_selections_clustering_and_never_reclusters(tmp_path, method, params, monkeypatch):
    """Issue 25: report rebuilt the selector's clustering under the default memory budget; a selection made
    under another --max-memory then got another clustering's cluster balance (and paid a k-means)."""
    store = _store(tmp_path / "s", n=3000)
    run_cli("run", "--store", tmp_path / "s", "--method", method, "--budget", "200", "--max-memory", "3GB",
            "--out", tmp_path / "sel", "-q", *params)
    from dataselect.reports.build import cluster_balance
    from dataselect.reports.data import open_selection
    from dataselect.selection import read_selection

    table, meta = read_selection(tmp_path / "sel")
    kind = "clustering" if method == "kmeans-sensitivity" else "hierarchy"
    key = meta["artefacts"][kind]
    art = Artefacts(store).get(kind, key)
    before = sorted(p.name for p in (tmp_path / "s" / FOLDER).iterdir())

    def no_kmeans(*a, **k):
        raise AssertionError("the report ran k-means or an assignment pass")

    import dataselect.pool_index.hierarchical as hier
    import dataselect.pool_index.kmeans as km

    for mod, name in ((km, "fit_kmeans"), (km, "assign_store"), (hier, "fit_kmeans"), (hier, "assign_store")):
        monkeypatch.setattr(mod, name, no_kmeans)
    sizes, picked = cluster_balance(open_selection(tmp_path / "sel"))  # default memory budget
    rows = table.column("row").to_numpy()
    if kind == "clustering":
        from dataselect.pool_index.kmeans import Clustering

        cl = Clustering.load(art, store)
        labels = cl.labels[np.searchsorted(cl.rows, rows)]
        assert np.array_equal(labels, table.column("cluster").to_numpy())  # the selection's own clustering
        assert np.array_equal(sizes, cl.sizes()) and np.array_equal(picked, np.bincount(labels, minlength=cl.k))
    else:
        from dataselect.pool_index.hierarchical import Hierarchy

        h = Hierarchy.load(art, store)
        assert h.paths(np.searchsorted(h.rows, rows)) == table.column("cluster_path").to_pylist()
        assert sizes.sum() == store.n_rows and picked.sum() == len(rows)
    assert sorted(p.name for p in (tmp_path / "s" / FOLDER).iterdir()) == before
    run_cli("report", tmp_path / "sel", "--out", tmp_path / "r.html")
    assert "Cluster balance" in (tmp_path / "r.html").read_text()


def test_a_selection_whose_artefact_is_gone_is_reported_in_one_line(tmp_path):
    import shutil

    _store(tmp_path / "s", n=2000)
    run_cli("run", "--store", tmp_path / "s", "--method", "kmeans-sensitivity", "--budget", "100", "--k", "10",
            "--out", tmp_path / "sel", "-q")
    shutil.rmtree(tmp_path / "s" / FOLDER)
    _, err = run_cli("report", tmp_path / "sel", "--out", tmp_path / "r.html")
    lines = [ln for ln in err.splitlines() if "cluster" in ln]
    assert len(lines) == 1 and "gone from the store" in lines[0] and "Traceback" not in err
    assert "Cluster balance" not in (tmp_path / "r.html").read_text()
