"""``kmeans-sensitivity``: clustering-based sensitivity sampling (Axiotis et al. 2024).

1. k-means on the pool embeddings (FAISS; cached per store and parameters).
2. Every row x with centre c(x) in cluster C(x) gets the probability

       p(x) = 1/2 * d(x, c(x))^2 / sum_y d(y, c(y))^2  +  1/2 * 1 / (k' |C(x)|)

   -- the paper's sensitivity proxy: half its share of the clustering cost, half the uniform share
   of its cluster (k' = non-empty clusters). Both halves sum to one over the pool, so p does too.
3. ``budget`` rows are drawn without replacement with Efraimidis-Spirakis keys ``log(u) / p(x)``
   (u uniform in (0,1); the largest keys win), which draws successively in proportion to p.
4. Each row's importance weight ``1 / (n p(x))`` is stored so fine-tuning can weight the loss; the
   weighted mean of any per-row quantity over the selection estimates its pool mean.

Default k: ``sqrt(n)`` clamped to [8, 4096] -- clusters of about sqrt(n) rows balance the two halves
of p: small enough that the cost term finds outliers within a concept, large enough that the uniform
term is not just noise.

With ``--queries`` (target-aware mode): each cluster's relevance to a task is the highest cosine
between its centroid and the task's queries; sampling is restricted to the union over tasks of each
task's ``query_clusters`` most relevant clusters (default k/10), widened by the next most relevant
clusters if they hold fewer rows than the budget. Probabilities are renormalised over those rows and
weights are ``1 / (n_candidates p(x))``.
"""

from __future__ import annotations

import numpy as np

from dataselect.errors import DataselectError
from dataselect.pool_index.kmeans import cluster_store
from dataselect.scoring import query_matrix
from dataselect.selection import Selection
from dataselect.selectors.base import Selector, register


def default_k(n: int) -> int:
    return int(min(n, max(8, min(4096, round(np.sqrt(n))))))


def sensitivity_probabilities(labels: np.ndarray, dist2: np.ndarray, k: int) -> np.ndarray:
    """p(x) of the module docstring for rows with cluster ``labels`` and squared distances ``dist2``."""
    n = len(labels)
    sizes = np.bincount(labels, minlength=k)
    nonempty = int((sizes > 0).sum())
    dist2 = np.maximum(dist2.astype(np.float64), 0.0)
    cost = dist2.sum()
    cost_share = dist2 / cost if cost > 0 else np.full(n, 1.0 / n)
    return 0.5 * cost_share + 0.5 / (nonempty * sizes[labels])


def weighted_sample(p: np.ndarray, budget: int, rng: np.random.Generator) -> np.ndarray:
    """Efraimidis-Spirakis sampling without replacement: indices of the ``budget`` largest log(u)/p, in key order."""
    u = rng.random(len(p))
    keys = np.log(np.maximum(u, np.finfo(np.float64).tiny)) / p
    top = np.argpartition(-keys, budget - 1)[:budget] if budget < len(p) else np.arange(len(p))
    return top[np.argsort(-keys[top], kind="stable")]


@register
class KMeansSensitivity(Selector):
    """Sensitivity sampling on FAISS k-means clusters, with importance weights (Axiotis et al. 2024).

    Parameters
    ----------
    k : clusters (0: sqrt(n) clamped to [8, 4096]).
    niter : k-means iterations.
    spherical : normalise centroids (cosine k-means).
    pca_dim : reduce to this many dimensions with PCA before clustering (0: no PCA).
    max_points_per_centroid : training sample is k times this (FAISS's cap).
    cluster_seed : seed of the clustering (kept apart from --seed so a re-sample reuses the cache).
    query_clusters : with --queries, clusters kept per task (0: k/10).
    """

    name = "kmeans-sensitivity"

    def __init__(self, *, k: int = 0, niter: int = 20, spherical: bool = False, pca_dim: int = 0,
                 max_points_per_centroid: int = 256, cluster_seed: int = 0, query_clusters: int = 0):
        if k < 0 or niter < 1 or pca_dim < 0 or max_points_per_centroid < 1 or query_clusters < 0:
            raise DataselectError("kmeans-sensitivity: k, pca_dim and query_clusters must be >= 0; niter and "
                                  "max_points_per_centroid >= 1")
        self.k, self.niter, self.spherical, self.pca_dim = k, niter, spherical, pca_dim
        self.max_points_per_centroid, self.cluster_seed, self.query_clusters = (
            max_points_per_centroid, cluster_seed, query_clusters)

    def cluster(self, pool):
        return cluster_store(pool, self.k or default_k(pool.n_rows), niter=self.niter, seed=self.cluster_seed,
                             spherical=self.spherical, max_points_per_centroid=self.max_points_per_centroid,
                             pca_dim=self.pca_dim)

    def candidate_clusters(self, clustering, pool, queries, budget) -> np.ndarray:
        Q, starts, _ = query_matrix(pool, queries)
        cent = clustering.centroids / np.maximum(np.linalg.norm(clustering.centroids, axis=1, keepdims=True), 1e-12)
        qs = clustering.transform(Q)
        qs /= np.maximum(np.linalg.norm(qs, axis=1, keepdims=True), 1e-12)
        rel = np.maximum.reduceat(cent @ qs.T, starts, axis=1)  # (k, tasks)
        m = self.query_clusters or max(1, clustering.k // 10)
        keep = np.zeros(clustering.k, dtype=bool)
        for t in range(rel.shape[1]):
            keep[np.argsort(-rel[:, t], kind="stable")[:m]] = True
        sizes = clustering.sizes()
        for c in np.argsort(-rel.max(axis=1), kind="stable"):  # widen until the budget fits
            if sizes[keep].sum() >= budget:
                break
            keep[c] = True
        return keep

    def select(self, pool, budget, rng, queries=()):
        rng = rng if rng is not None else np.random.default_rng(0)
        cl = self.cluster(pool)
        p = sensitivity_probabilities(cl.labels, cl.dist2, cl.k)
        cand = np.arange(len(p))
        if queries:
            keep = self.candidate_clusters(cl, pool, queries, budget)
            cand = np.nonzero(keep[cl.labels])[0]
            p = p[cand] / p[cand].sum()
        picked = weighted_sample(p, budget, rng)
        weights = 1.0 / (len(cand) * p[picked])
        pos = cand[picked]
        return Selection(rows=cl.rows[pos], scores=p[picked].astype(np.float32), weights=weights.astype(np.float32),
                         extra={"cluster": cl.labels[pos].astype(np.int32)})
