"""Selection-quality figures (issue 28) against an independent brute-force computation."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from conftest import run_cli
from dataselect.reports.quality import NEAR, measure, pool_clusters, vendi_score
from dataselect.store import Store
from dataselect.store.synthetic import store_from_array, unit_rows


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("quality")
    rng = np.random.default_rng(3)
    x = unit_rows(rng, 500, 24)
    x[100:110] = x[0]  # ten exact copies of row 0
    x[200] = x[201] + 0.001 * rng.standard_normal(24).astype(np.float32)  # a near copy
    x[200] /= np.linalg.norm(x[200])
    sources = [["web", "code", "math", "chat"][i % 4] if i % 7 else "web" for i in range(500)]
    loss = rng.gamma(2.0, 0.5, 500).astype(np.float32)
    store_from_array(tmp / "pool", x, sources=sources, shard_rows=128, extra={"loss_response": loss})
    store_from_array(tmp / "q", unit_rows(rng, 7, 24), kind="queries", tasks=["a"] * 3 + ["b"] * 4)
    return tmp, x, sources, loss


def brute(pool, x, rows, Q, qtasks, sources, loss, centroids):
    S = x[rows].astype(np.float64)
    S /= np.linalg.norm(S, axis=1, keepdims=True)  # cosines
    n = len(S)
    K = S @ S.T
    lam = np.clip(np.linalg.eigvalsh(K / n), 0, None)  # the n x n spectrum (the code takes d x d when n > d)
    lam = lam[lam > 1e-12]
    off = K.copy()
    np.fill_diagonal(off, -np.inf)
    Q = Q / np.linalg.norm(Q, axis=1, keepdims=True)
    best = (Q.astype(np.float64) @ S.T).max(axis=1)
    cov = {t: (best[qtasks == t].mean(), np.percentile(best[qtasks == t], 10)) for t in dict.fromkeys(qtasks)}
    counts = np.array(list(Counter(sources[r] for r in rows).values()), float)
    p = counts / counts.sum()
    labels = np.argmax(S @ centroids.T.astype(np.float64), axis=1)
    return {"vendi": math.exp(-(lam * np.log(lam)).sum()), "mean_cosine": (K.sum() - np.trace(K)) / (n * (n - 1)),
            "near": float((off.max(axis=1) > NEAR).mean()), "coverage": cov, "entropy": -(p * np.log2(p)).sum(),
            "reached": len(np.unique(labels)) / len(centroids), "loss": np.percentile(loss[rows], [10, 50, 90])}


def test_quality_equals_brute_force(world):
    tmp, _, sources, loss = world
    pool, q = Store(tmp / "pool"), Store(tmp / "q")
    x = pool.embeddings()  # as stored (float16)
    Q, qtasks = q.embeddings(), np.array(q.column("task").tolist())
    index = pool_clusters(pool)
    centroids = index.reconstruct_n(0, index.ntotal)
    rng = np.random.default_rng(0)
    picks = [np.sort(rng.choice(500, 90, replace=False)),
             np.array([0, *range(100, 110), 200, 201, 300, 301, 302]),  # copies: near duplicates
             np.arange(0, 500, 7)]  # one source only
    got = measure(pool, picks, [q])
    assert len(got) == 4 and got[-1].rows == 500  # the pool itself last
    for rows, g in zip([*picks, np.arange(500)], got, strict=True):
        want = brute(pool, x, rows, Q, qtasks, sources, loss, centroids)
        if len(rows) <= 1000:  # the Vendi and near-duplicate sample is the whole selection
            assert g.vendi == pytest.approx(want["vendi"], rel=1e-6)
            assert g.near_duplicates == pytest.approx(want["near"])
        assert g.mean_cosine == pytest.approx(want["mean_cosine"], abs=1e-6)
        for t, (mean, p10) in want["coverage"].items():
            assert g.coverage[t] == pytest.approx((mean, p10), abs=1e-6)
        assert g.source_entropy == pytest.approx(want["entropy"], abs=1e-12)
        assert g.clusters_reached == pytest.approx(want["reached"])
        assert g.loss == pytest.approx(tuple(want["loss"]), rel=1e-6)
    assert got[1].near_duplicates == pytest.approx(13 / 16)  # 11 copies of row 0 and the pair 200/201
    assert got[2].source_entropy == 0.0 and got[0].near_duplicates == 0.0
    assert got[-1].coverage["a"][0] >= max(g.coverage["a"][0] for g in got)  # nothing covers more than the pool


def test_vendi_of_identical_and_of_orthogonal_rows():
    assert vendi_score(np.tile([[0.6, 0.8]], (5, 1))) == pytest.approx(1.0)
    assert vendi_score(np.eye(7)) == pytest.approx(7.0)
    assert vendi_score(np.eye(3).repeat(2, axis=0)) == pytest.approx(3.0)  # 3 distinct, each twice


def test_compare_measures_every_selection_side_by_side(world, capsys):
    tmp, *_ = world
    for seed in (1, 2, 3):
        run_cli("run", "--store", tmp / "pool", "--method", "random", "--budget", "50", "--seed", seed,
                "--out", tmp / f"r{seed}", "-q")
    capsys.readouterr()
    run_cli("compare", tmp / "r1", tmp / "r2", tmp / "r3", "--queries", tmp / "q", "-q")
    out = capsys.readouterr().out
    assert "Jaccard overlap of each pair" in out and "coverage a (mean / p10)" in out
    header = next(ln for ln in out.splitlines() if ln.strip().startswith("figure"))
    assert header.split() == ["figure", "A", "B", "C", "pool"]
    import dataselect as ds

    found = ds.compare(tmp / "r1", tmp / "r2", tmp / "r3", queries=[tmp / "q"])
    rows = [set(ds.load_selection(tmp / f"r{s}").rows.tolist()) for s in (1, 2, 3)]
    assert found.facts["jaccard"][0][2] == pytest.approx(len(rows[0] & rows[2]) / len(rows[0] | rows[2]))
    assert len(found.facts["quality"]) == 3 and found.facts["pool_quality"]["rows"] == 500


def test_report_shows_quality_and_its_glossary(world):
    tmp, *_ = world
    run_cli("run", "--store", tmp / "pool", "--method", "rds+", "--queries", tmp / "q", "--budget", "40",
            "--out", tmp / "rds", "-q")
    run_cli("report", tmp / "rds", "-q")
    page = (tmp / "rds" / "report.html").read_text()
    assert "id='quality'" in page and "coverage b (mean / p10)" in page and "Glossary" in page
    from dataselect.reports.quality import GLOSSARY

    assert all(f"<dt>{k}</dt>" in page for k in GLOSSARY)
