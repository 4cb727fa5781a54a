"""Selection quality a user can see without fine-tuning, measured on the store's own embeddings.

For a selection S of a pool P (unit-norm embeddings, so a dot product is a cosine), and query sets:

* **coverage** per task: for each query q, ``best(q) = max_{s in S} cos(q, s)``; the mean over the
  task's queries and its 10th percentile (the worst-served queries);
* **diversity**: the Vendi score of a fixed sample of S, the mean pairwise cosine over all of S, the
  share of the pool's clusters S reaches, and the entropy of S's source mix;
* **lengths and losses**: 10th / 50th / 90th percentiles of tokens per row and response loss;
* **near duplicates**: the share of a sample of S whose nearest other row of S is above cosine 0.99.

:data:`GLOSSARY` gives each formula as the report prints it. Everything is one sequential pass over
the pool store (block by block, any number of selections at once: ``compare`` measures all of its
selections in the same pass) and a second for the near-duplicate search, plus a random read of the
cluster-fit sample; memory is a few blocks. The whole pool is measured as one more "selection" beside
them: its coverage is the best any selection can reach, its other figures the baseline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

SAMPLE = 1000  # selected rows in the Vendi and near-duplicate sample
NEAR = 0.99  # cosine above which two rows are near duplicates
FIT_PER_CLUSTER = 64  # pool rows per cluster in the cluster-fit sample
MAX_CLUSTERS = 256
BLOCK = 16_384

GLOSSARY = {
    "coverage": "per task: mean over its queries q of best(q) = max over selected rows s of cos(q, s); p10 is the "
                "10th percentile of best(q) (the worst-served tenth of the queries)",
    "vendi": f"Vendi score exp(-sum_i l_i log l_i), l_i the eigenvalues of K/n with K_ij = cos(s_i, s_j) over a "
             f"fixed sample of n = min(|S|, {SAMPLE}) selected rows (seed 0): the effective number of distinct rows, "
             "1 when all are identical, n when all are orthogonal",
    "mean cosine": "mean of cos(s_i, s_j) over all pairs i != j of selected rows, = (|sum_i s_i|^2 - n) / (n (n - 1)) "
                   "for unit rows: lower is more spread out",
    "clusters reached": f"share of the pool's C clusters holding at least one selected row; C = min({MAX_CLUSTERS}, "
                        f"ceil(sqrt(N))), spherical k-means (FAISS, seed 0) fitted on {FIT_PER_CLUSTER} C pool rows, "
                        "every selected row assigned to its nearest centroid",
    "source entropy": "-sum_src p(src) log2 p(src) over the selection's source shares, in bits; log2 of the number "
                      "of sources when they are even",
    "tokens": "10th / 50th / 90th percentile of tokens per row (prompt and response as embedded)",
    "loss": "10th / 50th / 90th percentile of the mean response NLL (stores with losses)",
    "near duplicates": f"share of a sample of min(|S|, {SAMPLE}) selected rows (seed 0) whose nearest other selected "
                       f"row has cosine > {NEAR}",
}


@dataclass
class Quality:
    """The figures of one selection (:data:`GLOSSARY`)."""

    rows: int
    coverage: dict[str, tuple[float, float]] = field(default_factory=dict)  # task -> (mean, p10)
    vendi: float = float("nan")
    vendi_rows: int = 0
    mean_cosine: float = float("nan")
    clusters_reached: float = float("nan")
    clusters: int = 0
    source_entropy: float = float("nan")
    tokens: tuple[float, float, float] | None = None
    loss: tuple[float, float, float] | None = None
    near_duplicates: float = float("nan")

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def vendi_score(x: np.ndarray) -> float:
    """Vendi score of the rows of ``x`` (n, d) with cosine similarity: eigenvalues of K/n, K = X X^T, taken
    from the smaller of X X^T and X^T X (the same non-zero spectrum)."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    if n == 0:
        return float("nan")
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    gram = x @ x.T if n <= x.shape[1] else x.T @ x
    lam = np.clip(np.linalg.eigvalsh(gram / n), 0.0, None)
    lam = lam[lam > 1e-12]
    return float(np.exp(-(lam * np.log(lam)).sum()))


def entropy_bits(counts) -> float:
    c = np.asarray([v for v in counts if v > 0], dtype=np.float64)
    if c.sum() == 0:
        return float("nan")
    p = c / c.sum()
    return float(-(p * np.log2(p)).sum() + 0.0)


def _percentiles(x: np.ndarray) -> tuple[float, float, float] | None:
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    return tuple(float(v) for v in np.percentile(x, [10, 50, 90])) if len(x) else None


def pool_clusters(pool, seed: int = 0):
    """A FAISS index over the pool's C spherical k-means centroids (:data:`GLOSSARY`), or None for a pool of
    fewer than 2 rows."""
    import faiss

    n = pool.n_rows
    c = min(MAX_CLUSTERS, math.ceil(math.sqrt(n)))
    if c < 2:
        return None
    rows = pool.rows()
    fit = rows if n <= FIT_PER_CLUSTER * c else np.sort(np.random.default_rng(seed).choice(rows, FIT_PER_CLUSTER * c,
                                                                                          replace=False))
    x = np.ascontiguousarray(pool.take(fit)["embedding"], dtype=np.float32)
    km = faiss.Kmeans(x.shape[1], c, niter=20, seed=seed, spherical=True, verbose=False,
                      min_points_per_centroid=1, max_points_per_centroid=FIT_PER_CLUSTER * 4)
    km.train(x)
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(km.centroids)
    return index


def _unit(emb: np.ndarray) -> np.ndarray:
    """Rows as float32 of norm 1 (stored float16 rows are within about 1e-3 of it): dot products are cosines."""
    x = emb.astype(np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class _Tally:
    """One selection's running sums over the pass. ``member`` and ``sampled`` mark its rows and its sample's
    by pool row number, so a block finds its share by indexing, not by a search of the whole selection."""

    def __init__(self, rows: np.ndarray, sample: np.ndarray, n_queries: int, clusters: int, end_row: int):
        self.rows, self.sample = rows, sample
        self.member = np.zeros(end_row, dtype=bool)
        self.member[rows] = True
        self.sampled = np.zeros(end_row, dtype=bool)
        self.sampled[sample] = True
        self.total = None
        self.sample_emb: dict[int, np.ndarray] = {}
        self.best = np.full(n_queries, -np.inf)
        self.reached = np.zeros(clusters, dtype=bool)
        self.sources: dict = {}
        self.tokens: list = []
        self.loss: list = []
        self.near = np.full(len(sample), -np.inf)
        self.S = np.zeros((0, 0), np.float32)  # the sample's embeddings, once the first pass has them


def measure(pool, selections: list[np.ndarray], queries: list = (), progress: bool = False,
            with_pool: bool = True) -> list[Quality]:
    """The :class:`Quality` of each selection (an array of pool row numbers) of ``pool``, then (``with_pool``)
    the whole pool's.

    ``queries``: query stores (coverage per task). Two passes over the pool: one for sums, coverage,
    clusters, sources, lengths and losses (the near-duplicate sample's own embeddings are collected in it),
    one for the near-duplicate search of each sample against its whole selection.
    """
    from dataselect.progress import bar
    from dataselect.store.queries import query_matrix

    Q, starts, tasks = query_matrix(pool, queries) if queries else (np.zeros((0, pool.dim), np.float32), [], [])
    Q = _unit(Q)
    bounds = list(starts) + [len(Q)]
    index = pool_clusters(pool)
    clusters = index.ntotal if index is not None else 0
    end_row = max((s.end_row for s in pool.shards), default=0)
    tallies = []
    for rows in [*selections, pool.rows()] if with_pool else selections:
        rows = np.unique(np.asarray(rows, dtype=np.int64))
        sample = rows if len(rows) <= SAMPLE else np.sort(np.random.default_rng(0).choice(rows, SAMPLE, replace=False))
        tallies.append(_Tally(rows, sample, len(Q), clusters, end_row))
    cols = ["row", "embedding"] + [c for c in ("source", "n_tokens", "loss_response") if c in pool.columns]
    with bar(pool.n_rows, "quality", enabled=progress) as pbar:
        for block in pool.iter_blocks(tuple(cols), block_rows=BLOCK):
            brows = block["row"].astype(np.int64)
            for t in tallies:
                hit = t.member[brows]
                if not hit.any():
                    continue
                emb = _unit(block["embedding"][hit])
                s = emb.astype(np.float64).sum(axis=0)
                t.total = s if t.total is None else t.total + s
                if len(Q):
                    np.maximum(t.best, (Q @ emb.T).max(axis=1), out=t.best)
                if index is not None:
                    _, lab = index.search(np.ascontiguousarray(emb), 1)
                    t.reached[lab[:, 0]] = True
                if "source" in block:
                    src, counts = np.unique(np.array(["" if v is None else v for v in block["source"][hit]],
                                                     dtype=object), return_counts=True)
                    for name, c in zip(src, counts, strict=True):
                        t.sources[name] = t.sources.get(name, 0) + int(c)
                if "n_tokens" in block:
                    t.tokens.append(block["n_tokens"][hit].astype(np.float64))
                if "loss_response" in block:
                    t.loss.append(block["loss_response"][hit].astype(np.float64))
                at = t.sampled[brows[hit]]
                for r, e in zip(brows[hit][at], emb[at], strict=True):
                    t.sample_emb[int(r)] = e
            pbar.update(len(brows))
    for t in tallies:  # second pass: each sample row's nearest other selected row
        t.S = np.stack([t.sample_emb[int(r)] for r in t.sample]) if len(t.sample) else np.zeros((0, pool.dim), np.float32)
    with bar(pool.n_rows, "near duplicates", enabled=progress) as pbar:
        for block in pool.iter_blocks(("row", "embedding"), block_rows=BLOCK):
            brows = block["row"].astype(np.int64)
            for t in tallies:
                hit = t.member[brows]
                if not hit.any() or not len(t.S):
                    continue
                sims = t.S @ _unit(block["embedding"][hit]).T
                sims[t.sample[:, None] == brows[hit][None, :]] = -np.inf  # not itself
                np.maximum(t.near, sims.max(axis=1), out=t.near)
            pbar.update(len(brows))
    out = []
    for t in tallies:
        n = len(t.rows)
        q = Quality(rows=n, clusters=clusters)
        if n:
            q.coverage = {name: (float(t.best[a:b].mean()), float(np.percentile(t.best[a:b], 10)))
                          for name, a, b in zip(tasks, bounds[:-1], bounds[1:], strict=True)}
            q.vendi, q.vendi_rows = vendi_score(t.S), len(t.S)
            q.mean_cosine = float((t.total @ t.total - n) / (n * (n - 1))) if n > 1 else float("nan")
            q.clusters_reached = float(t.reached.mean()) if clusters else float("nan")
            q.source_entropy = entropy_bits(t.sources.values()) if t.sources else float("nan")
            q.tokens = _percentiles(np.concatenate(t.tokens)) if t.tokens else None
            q.loss = _percentiles(np.concatenate(t.loss)) if t.loss else None
            q.near_duplicates = float((t.near > NEAR).mean()) if n > 1 else 0.0
        out.append(q)
    return out


def _triple(v) -> str:
    return "-" if v is None else " / ".join(f"{x:.3g}" for x in v)



def quality_rows(qs: list[Quality]) -> list[list[str]]:
    """Table rows (figure, then one cell per selection) of :func:`measure`'s results."""
    tasks = list(dict.fromkeys(t for q in qs for t in q.coverage))
    rows = [[f"coverage {t} (mean / p10)"] + [f"{q.coverage[t][0]:.4f} / {q.coverage[t][1]:.4f}" if t in q.coverage
                                              else "-" for q in qs] for t in tasks]
    rows += [["vendi (sample)"] + [f"{q.vendi:.2f} of {q.vendi_rows:,}" for q in qs],
             ["mean cosine"] + [f"{q.mean_cosine:.4f}" for q in qs],
             [f"clusters reached (of {qs[0].clusters})"] + [f"{q.clusters_reached:.1%}" if q.clusters else "-"
                                                            for q in qs],
             ["source entropy (bits)"] + [f"{q.source_entropy:.3f}" for q in qs],
             ["tokens p10/p50/p90"] + [_triple(q.tokens) for q in qs]]
    if any(q.loss is not None for q in qs):
        rows.append(["loss p10/p50/p90"] + [_triple(q.loss) for q in qs])
    rows.append([f"near duplicates (cos > {NEAR})"] + [f"{q.near_duplicates:.1%}" for q in qs])
    return rows
