"""``kmeans-sensitivity``: clustering-based sensitivity sampling (Axiotis et al. 2024, arXiv 2402.17327).

1. k-means on the pool embeddings (:mod:`dataselect.pool_index.kmeans`; cached per store and parameters).
2. Sensitivities, by ``variant``:

   ``loss`` (default; the paper's rule). Each cluster C has a representative r_C, the pool row
   nearest its centre c (the paper rounds centres to their closest data point), and its model loss
   l(C) = l(r_C) -- k model evaluations in all, not n. A row e of cluster C is drawn with

       p(e) = v(e) / sum_e' v(e'),    v(e) = l(C) + lam * |e - c|^z

   (z = 2 for k-means, 1 for k-median; lam the Hoelder constant of the loss in the embedding).
   Losses are the store's ``loss_response`` (``embed --with-loss``) at the representatives, or
   computed for just those k rows with ``--loss-model MODEL --pool POOL``.

   ``coreset``: the lightweight k-means coreset, no loss:
   ``p(e) = 1/2 |e - c|^2 / sum |e' - c'|^2 + 1/2 * 1 / (k' |C|)`` (k' = non-empty clusters).

3. Draws are i.i.d. with replacement, in proportion to p, until ``budget`` distinct rows have been
   drawn (m draws in all); a row drawn t times gets the weight ``t / (m p(e))``, so
   ``(1/n) sum_selected weight * f`` estimates the pool mean of any per-row quantity f (Hansen-Hurwitz).
   The selection is ordered by first draw; ``score`` is p(e), ``draws`` is t.

Where the paper leaves a choice open (its Algorithm 1 and experiment section were not available to
us as text; the rule above is as the paper's abstract, reviews and the issue describe it):

* lam: ``--lam`` sets it. The default (``-1``) estimates it from the k representatives already
  scored, with no further model calls: the median, over representatives, of
  ``|l(r_i) - l(r_j)| / |r_i - r_j|^z`` with r_j the nearest other representative -- a local
  Hoelder ratio at the clustering's own scale. The estimate is recorded in ``selection.json``.
* Representatives with no finite loss (no response token left after truncation) take the mean loss
  of the others; with a store loss column, the nearest row *with* a finite loss represents C.
* Distances are to the centroid c, not to r_C (the guarantee is stated for the clustering cost).
* Default k: ``sqrt(n)`` clamped to [8, 4096]; seeding on 32 rows per centroid (``--init-sample``).

With ``--queries`` (target-aware mode): each cluster's relevance to a task is the highest cosine
between its centroid and the task's queries; sampling is restricted to the union over tasks of each
task's ``query_clusters`` most relevant clusters (default k/10), widened by the next most relevant
clusters if they hold fewer rows than the budget. p is renormalised over those rows and weights use
the candidate count in place of n.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from dataselect.errors import DataselectError
from dataselect.pool_index.kmeans import Clustering, cluster_store
from dataselect.scoring import query_matrix
from dataselect.selection import Selection
from dataselect.selectors.base import Selector, check_choice, register

VARIANTS = ("loss", "coreset")
MAX_DRAWS_PER_ROW = 50  # with-replacement draws stop (with an error) after budget * this many


def default_k(n: int) -> int:
    return int(min(n, max(8, min(4096, round(np.sqrt(n))))))


def coreset_probabilities(labels: np.ndarray, dist2: np.ndarray, k: int) -> np.ndarray:
    """Lightweight-coreset p(e) (module docstring, ``coreset``); sums to one."""
    n = len(labels)
    sizes = np.bincount(labels, minlength=k)
    nonempty = int((sizes > 0).sum())
    dist2 = np.maximum(dist2.astype(np.float64), 0.0)
    cost = dist2.sum()
    cost_share = dist2 / cost if cost > 0 else np.full(n, 1.0 / n)
    return 0.5 * cost_share + 0.5 / (nonempty * sizes[labels])


def loss_probabilities(labels: np.ndarray, dist2: np.ndarray, cluster_loss: np.ndarray, lam: float,
                       z: float = 2.0) -> np.ndarray:
    """The paper's p(e) = (l(C_e) + lam |e - c_e|^z) / sum (module docstring, ``loss``); sums to one."""
    if np.any(cluster_loss < 0) or lam < 0:
        raise DataselectError("kmeans-sensitivity: losses and --lam must be >= 0")
    dist = np.maximum(dist2.astype(np.float64), 0.0) ** (z / 2)
    v = cluster_loss.astype(np.float64)[labels] + lam * dist
    total = v.sum()
    return v / total if total > 0 else np.full(len(v), 1.0 / len(v))


def representatives(clustering: Clustering, eligible: np.ndarray | None = None) -> np.ndarray:
    """Store position of each cluster's row nearest its centre (-1 for a cluster with no eligible row)."""
    d = clustering.dist2.astype(np.float64)
    if eligible is not None:
        d = np.where(eligible, d, np.inf)
    n, k = len(d), clustering.k
    order = np.lexsort((np.arange(n), d, clustering.labels))  # by cluster, then distance, then position
    lab = clustering.labels[order]
    starts = np.minimum(np.searchsorted(lab, np.arange(k)), n - 1)
    nearest = order[starts]
    found = (lab[starts] == np.arange(k)) & np.isfinite(d[nearest])
    return np.where(found, nearest, -1)


def estimate_lam(rep_emb: np.ndarray, rep_loss: np.ndarray, z: float = 2.0) -> float:
    """Median over representatives of |l_i - l_j| / |r_i - r_j|^z, r_j the nearest other one (module docstring)."""
    m = len(rep_emb)
    if m < 2:
        return 0.0
    x = torch.as_tensor(rep_emb, dtype=torch.float32)
    nearest = np.empty(m, dtype=np.int64)
    dist = np.empty(m, dtype=np.float64)
    for lo in range(0, m, 1024):  # (1024, m) distance blocks
        d2 = torch.cdist(x[lo:lo + 1024], x).square_()
        d2[torch.arange(len(d2)), torch.arange(lo, lo + len(d2))] = float("inf")
        val, idx = d2.min(1)
        nearest[lo:lo + len(d2)], dist[lo:lo + len(d2)] = idx.numpy(), val.double().numpy()
    ratio = np.abs(rep_loss - rep_loss[nearest]) / np.maximum(dist, 1e-12) ** (z / 2)
    return float(np.median(ratio))


def draw_with_replacement(p: np.ndarray, budget: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int]:
    """i.i.d. draws in proportion to ``p`` until ``budget`` distinct indices appear.

    Returns (distinct indices in order of first draw, times each was drawn, total draws m).
    """
    cdf = np.cumsum(p, dtype=np.float64)
    seq = np.zeros(0, dtype=np.int64)
    limit = MAX_DRAWS_PER_ROW * budget
    while True:
        need = max(1024, 2 * (budget - len(np.unique(seq))))
        u = rng.random(need) * cdf[-1]
        seq = np.concatenate([seq, np.minimum(np.searchsorted(cdf, u, side="right"), len(p) - 1)])
        uniq, first = np.unique(seq, return_index=True)
        if len(uniq) >= budget:
            break
        if len(seq) > limit:
            raise DataselectError(f"kmeans-sensitivity: {len(seq):,} draws found only {len(uniq):,} distinct rows of "
                                  f"the {budget:,} asked; the budget is too close to the rows with non-negligible "
                                  "probability -- lower --budget")
    cut = int(np.sort(first)[budget - 1]) + 1  # the draw that brought the budget-th distinct row
    seq = seq[:cut]
    uniq, first, counts = np.unique(seq, return_index=True, return_counts=True)
    order = np.argsort(first, kind="stable")
    return uniq[order], counts[order], cut


@register
class KMeansSensitivity(Selector):
    """Sensitivity sampling on k-means clusters, with the model's loss and importance weights (Axiotis et al. 2024).

    Parameters
    ----------
    variant : "loss" (the paper: p ~ l(C) + lam |e - c|^z) or "coreset" (lightweight k-means coreset).
    lam : Hoelder constant lam of the loss over distances (-1.0: estimated from the representatives, see the module docstring).
    z : distance power, 2 (k-means) or 1 (k-median).
    loss_model : model that scores the k representatives when the store has no loss column.
    pool : the pool file the store was embedded from (needed with --loss-model).
    k : clusters (0: sqrt(n) clamped to [8, 4096]).
    niter : Lloyd updates.
    spherical : normalise centroids (cosine k-means).
    pca_dim : reduce to this many dimensions with PCA before clustering (0: no PCA).
    sample_size : k-means training rows (0: 256 per centroid, within the memory budget).
    init_sample : k-means++ seeding on this many rows per centroid (0 seeds on the whole training sample).
    cluster_seed : seed of the clustering (kept apart from --seed so a re-sample reuses the cache).
    query_clusters : with --queries, clusters kept per task (0: k/10).
    backend : "auto" (torch on CUDA, FAISS on CPU), "faiss" or "torch".
    assign : "exact" or "hnsw" (FAISS HNSW over the centroids: approximate, faster at large k on CPU).
    """

    name = "kmeans-sensitivity"
    uses_queries = True
    rule = ("k-means; the loss l(C) of the row nearest each centre; draw rows i.i.d. with p(e) ~ l(C) + lam |e - c|^z "
            "until budget distinct rows; weight = draws / (m p). --variant coreset: p = 1/2 d^2/cost + 1/2 / (k' |C|).")
    source = ("Axiotis et al. 2024, 'Data-Efficient Learning via Clustering-Based Sensitivity Sampling' (ICML, "
              "arXiv 2402.17327), Algorithm 1; lam's default estimate is dataselect's choice (see docs)")

    def __init__(self, *, variant: Literal["loss", "coreset"] = "loss", lam: float = -1.0, z: float = 2.0, loss_model: str = "",
                 pool: str = "", k: int = 0, niter: int = 20, spherical: bool = False, pca_dim: int = 0,
                 sample_size: int = 0, init_sample: int = 32, cluster_seed: int = 0, query_clusters: int = 0,
                 backend: Literal["auto", "faiss", "torch"] = "auto", assign: Literal["exact", "hnsw"] = "exact"):
        check_choice("variant", variant, VARIANTS)
        if z not in (1.0, 2.0):
            raise DataselectError(f"--z {z}: choose 2 (k-means) or 1 (k-median)")
        if lam < 0 and lam != -1:
            raise DataselectError(f"--lam {lam}: must be >= 0, or -1 to estimate it")
        if (k < 0 or niter < 1 or pca_dim < 0 or sample_size < 0 or init_sample < 0 or query_clusters < 0):
            raise DataselectError("kmeans-sensitivity: k, pca_dim, sample_size, init_sample and query_clusters must "
                                  "be >= 0; niter >= 1")
        if loss_model and not pool:
            raise DataselectError("--loss-model needs --pool POOL: the records of the k representatives are read "
                                  "from it")
        self.variant, self.lam, self.z, self.loss_model, self.pool = variant, lam, z, loss_model, pool
        self.k, self.niter, self.spherical, self.pca_dim = k, niter, spherical, pca_dim
        self.sample_size, self.init_sample, self.cluster_seed = sample_size, init_sample, cluster_seed
        self.query_clusters, self.backend, self.assign = query_clusters, backend, assign

    def cluster(self, pool, resources=None) -> Clustering:
        return cluster_store(pool, self.k or default_k(pool.n_rows), niter=self.niter, seed=self.cluster_seed,
                             spherical=self.spherical, sample_size=self.sample_size, pca_dim=self.pca_dim,
                             init_sample=self.init_sample, backend=self.backend, assign=self.assign,
                             resources=resources)

    def cluster_losses(self, clustering: Clustering, pool, resources=None) -> tuple[np.ndarray, dict]:
        """Loss l(C) of each cluster's representative (module docstring), and what was used."""
        if "loss_response" in pool.columns and not self.loss_model:
            loss = pool.column("loss_response").astype(np.float64)
            reps = representatives(clustering, np.isfinite(loss))
            rep_loss = np.where(reps >= 0, loss[np.maximum(reps, 0)], np.nan)
            source = "store column loss_response"
        else:
            from dataselect.embedding.score import row_losses

            reps = representatives(clustering)
            valid = reps >= 0
            rep_loss = np.full(len(reps), np.nan)
            rep_loss[valid] = row_losses(pool, clustering.rows[reps[valid]], self.loss_model, self.pool,
                                         device=resources.device if resources else "auto")
            source = f"{valid.sum():,} representatives scored with {self.loss_model}"
        finite = np.isfinite(rep_loss)
        if not finite.any():
            raise DataselectError("kmeans-sensitivity: no cluster representative has a finite loss (no response "
                                  "tokens?); use --variant coreset")
        filled = np.where(finite, rep_loss, rep_loss[finite].mean())
        info = {"loss_source": source, "representatives_scored": int(finite.sum()),
                "representatives_without_loss": int((~finite).sum())}
        if self.lam == -1:
            emb = clustering.transform(pool.take(clustering.rows[reps[finite]])["embedding"])
            info["lam_estimated"] = estimate_lam(emb, rep_loss[finite], self.z)
        return filled, info

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

    def select(self, pool, budget, rng, queries=(), resources=None):
        rng = rng if rng is not None else np.random.default_rng(0)
        if self.variant == "loss" and not self.loss_model and "loss_response" not in pool.columns:
            raise DataselectError(f"kmeans-sensitivity needs the model's loss: {pool.path} has no loss column. Embed "
                                  "with --with-loss (or run `dataselect score`), pass --loss-model MODEL --pool POOL "
                                  "to score only the k cluster representatives, or use --variant coreset")
        cl = self.cluster(pool, resources)
        info = {"clustering": cl.meta, "variant": self.variant}
        if self.variant == "coreset":
            p = coreset_probabilities(cl.labels, cl.dist2, cl.k)
        else:
            cluster_loss, loss_info = self.cluster_losses(cl, pool, resources)
            lam = loss_info.get("lam_estimated", self.lam)
            p = loss_probabilities(cl.labels, cl.dist2, cluster_loss, lam, self.z)
            info.update(loss_info, lam=lam, z=self.z)
        cand = np.arange(len(p))
        if queries:
            keep = self.candidate_clusters(cl, pool, queries, budget)
            cand = np.nonzero(keep[cl.labels])[0]
            p = p[cand] / p[cand].sum()
        picked, draws, m = draw_with_replacement(p, budget, rng)
        info["draws"] = m
        weights = draws / (m * p[picked])
        pos = cand[picked]
        return Selection(rows=cl.rows[pos], scores=p[picked].astype(np.float32), weights=weights.astype(np.float32),
                         extra={"cluster": cl.labels[pos].astype(np.int32), "draws": draws.astype(np.int32)},
                         info=info)
