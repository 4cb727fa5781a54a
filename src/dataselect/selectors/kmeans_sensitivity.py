"""``kmeans-sensitivity``: clustering-based sensitivity sampling (Axiotis et al. 2024, arXiv 2402.17327v1).

The default is the paper's procedure: its Algorithm 1 (§3.2.1) as its experiments run it (§5.1).
Section numbers below are the paper's. With b = ``--budget``:

1. **Warm start** (§5.2.2, off by default): ``--warm-start F`` first takes round(F b) rows uniformly
   at random. §5.2.2 trains the model whose loss is used on them; here the loss comes from the
   store (or ``--loss-model``), so they only join the selection.
2. **Clusters** (§5.1): k''-means with k'' = ``--k-fraction`` (0.2) x b clusters on the embeddings
   (the LLM run of §5.2.1: 4,500 clusters for 45,000 rows). §5.1 uses scikit-learn's k-means; ours is
   the shared engine (:mod:`dataselect.pool_index.kmeans`: k-means++ and ``--niter`` Lloyd updates
   on a sample). Where the memory budget cannot hold k'' clusters with 39 training rows each, k''
   is capped: said in one line, recorded in ``selection.json`` (``k_capped``).
3. **Representatives** (§5.1): each centre is replaced by its nearest pool row with a finite loss
   (outside the warm start); their loss l(r_i) is queried -- k'' model calls, not n -- and they are
   part of the selection. Every row e is then assigned to its closest representative c_e (one
   streamed pass), which defines the clusters C_i of Algorithm 1 with centres c_i = r_i.
4. **Sensitivities** (Algorithm 1, line 3): ``lt(e) = l(c_e) + Lambda_i |e - c_e|^z`` (z = 2, k-means;
   ``--z 1``, k-median), p(e) = lt(e) / sum lt over the rows still to draw from.
5. **Lambda** (Assumption 1, Lemma 8, App. B.4). ``--lam auto`` (default): one Lambda_i per cluster,
   Lemma 8's upper bound ``ln(n) * max_j |l(x_j) - l(c_i)| / |x_j - c_i|^z`` over ``--lam-probes`` t
   rows x_j drawn uniformly from C_i (default 0: Lemma 8's t = ln(100 k) / ln(1 / (1 - p)) with p = 1/2,
   i.e. ceil(log2(100 k))). Probe losses are read from the store's loss column, or computed for the
   k t probes with ``--loss-model`` (a forward pass over those records, never the pool). Probes
   exclude c_i itself and rows at distance 0 from it (there the ratio is undefined); a cluster with
   no usable probe takes the median Lambda of the others. ``--lam 0.1`` (any finite number >= 0) is
   one constant for every cluster instead: 0.1 is the constant of the LLM experiment (§5.2.1; App.
   C.1 sweeps 0.05-500 and reports quality dropping at 500, towards diversity sampling).
6. **Draws**: the remaining s = b - warm start - k' rows are drawn from the other rows (each
   representative and warm-start row is in the selection already and stands for itself: weight 1).
   ``--draws iid`` is Algorithm 1 exactly (lines 3-4): s i.i.d. draws from p, a row drawn t times
   weighs ``t / (s p)``; fewer than s distinct rows can result, and the shortfall is said and recorded.
   ``--draws systematic`` (default) delivers exactly s distinct rows: randomised systematic sampling
   with probability proportional to size (Madow 1949; Hartley & Rao 1962) -- inclusion probabilities
   pi(e) = min(1, c p(e)) with c such that sum pi = s (rows reaching 1 are taken for sure), rows in a
   random order, one uniform start, every point u + j of the cumulative pi picks a row. Each row's
   inclusion probability is exactly pi(e), so weights 1/pi(e) give the Horvitz-Thompson estimator,
   exactly unbiased for pool sums, with a fixed size and one O(n) pass. (Pareto sampling is only
   approximately pi-ps; conditional Poisson needs an iterative fit of its probabilities.)

In both schemes ``sum over the selection of weight * f`` estimates ``sum over the pool of f`` for any
per-row quantity f. selection.arrow records each row's ``kind`` (``warm-start``, ``representative``,
``drawn``), its ``cluster`` (index of its representative), ``draws`` (times drawn), ``p`` (its
per-draw probability; NaN for rows not drawn) and ``score`` = lt(e). Rows are ordered warm start,
representatives (by cluster), then drawn rows (systematic: the random order; iid: first draw).

``--variant coreset`` is the lightweight k-means coreset instead (Bachem et al. 2018; no loss, no
representatives): ``p(e) = 1/2 |e - c|^2 / sum |e' - c'|^2 + 1/2 / (k' |C|)`` with the k-means
centroids, and the same draws and weights.

With ``--queries`` (target-aware mode, dataselect's extension): each cluster's relevance to a task is
the highest cosine between its centre and the task's queries; only the representatives and rows of
the union over tasks of each task's ``--query-clusters`` most relevant clusters (default k/10) are
used, widened by the next most relevant clusters while they hold fewer rows than the budget.
"""

from __future__ import annotations

import math

import numpy as np

from dataselect.errors import DataselectError
from dataselect.pool_index import kmeans as engine
from dataselect.pool_index.hierarchical import closest_per_cluster, random_per_cluster
from dataselect.pool_index.kmeans import Clustering, cluster_store, max_k
from dataselect.pool_index.reduce import REDUCE_HELP, parse_reduce, reduced_of, reduced_projection, reduced_store
from dataselect.progress import note
from dataselect.resources import Resources
from dataselect.selection import Selection
from dataselect.selectors.base import Selector, register, used_artefact
from dataselect.selectors.params import Param
from dataselect.store.queries import query_matrix

VARIANTS = ("loss", "coreset")
DRAWS = ("systematic", "iid")
NAN_ROUNDS = 3  # with --loss-model: rounds of replacing representatives whose loss comes back NaN


def rule_k(budget: int, fraction: float = 0.2) -> int:
    """§5.1: k'' = fraction x the number of rows to select (at least 1)."""
    return max(1, int(round(fraction * budget)))


def default_probes(k: int) -> int:
    """Lemma 8's probes per cluster, t = ln(100 k) / ln(1 / (1 - p)), with p = 1/2."""
    return max(1, math.ceil(math.log2(100 * max(k, 1))))


def parse_lam(lam) -> float | None:
    """``"auto"`` -> None (estimate per cluster); else a finite number >= 0, refused in one line otherwise."""
    if isinstance(lam, str) and lam.strip().lower() == "auto":
        return None
    try:
        value = float(lam)
    except (TypeError, ValueError):
        raise DataselectError(f"--lam {lam!r}: must be auto or a number >= 0") from None
    if not math.isfinite(value) or value < 0:
        raise DataselectError(f"--lam {lam!r}: must be auto or a finite number >= 0")
    return value


def coreset_probabilities(labels: np.ndarray, dist2: np.ndarray, k: int) -> np.ndarray:
    """Lightweight-coreset p(e) (module docstring, ``coreset``); sums to one."""
    n = len(labels)
    sizes = np.bincount(labels, minlength=k)
    nonempty = int((sizes > 0).sum())
    dist2 = np.maximum(dist2.astype(np.float64), 0.0)
    cost = dist2.sum()
    cost_share = dist2 / cost if cost > 0 else np.full(n, 1.0 / n)
    return 0.5 * cost_share + 0.5 / (nonempty * sizes[labels])


def sensitivities(labels: np.ndarray, dist2: np.ndarray, centre_loss: np.ndarray, lam, z: float = 2.0) -> np.ndarray:
    """Algorithm 1's numerator ``lt(e) = l(c_e) + Lambda_{C_e} |e - c_e|^z`` (n,) float64.

    labels (n,) cluster of each row; dist2 (n,) squared distance to its centre; centre_loss (k,);
    lam: one number, or (k,) per-cluster values.
    """
    centre_loss = np.asarray(centre_loss, dtype=np.float64)
    lam = np.broadcast_to(np.asarray(lam, dtype=np.float64), centre_loss.shape)
    if np.any(~np.isfinite(centre_loss)) or np.any(centre_loss < 0) or np.any(~np.isfinite(lam)) or np.any(lam < 0):
        raise DataselectError("kmeans-sensitivity: losses and Lambda must be finite and >= 0")
    dist = np.maximum(dist2.astype(np.float64), 0.0) ** (z / 2)
    return centre_loss[labels] + lam[labels] * dist


def representatives(labels: np.ndarray, dist2: np.ndarray, k: int, eligible: np.ndarray | None = None) -> np.ndarray:
    """Position of each cluster's eligible row nearest its centre, (k,) int64 (-1: no eligible row); ties by position."""
    pos = np.arange(len(labels)) if eligible is None else np.nonzero(eligible)[0]
    nearest = pos[closest_per_cluster(labels[pos], dist2[pos], 1)]
    reps = np.full(k, -1, dtype=np.int64)
    reps[labels[nearest]] = nearest
    return reps


def draw_probes(labels: np.ndarray, dist2: np.ndarray, t: int, rng: np.random.Generator,
                eligible: np.ndarray | None = None) -> np.ndarray:
    """Up to ``t`` positions per cluster, uniformly without replacement among its eligible rows at distance > 0."""
    ok = dist2 > 0
    if eligible is not None:
        ok &= eligible
    pos = np.nonzero(ok)[0]
    return pos[random_per_cluster(labels[pos], t, rng)]


def lemma8_lambda(labels: np.ndarray, dist2: np.ndarray, centre_loss: np.ndarray, probes: np.ndarray,
                  probe_loss: np.ndarray, n: int, z: float = 2.0) -> tuple[np.ndarray, int]:
    """Lemma 8 / App. B.4: Lambda_i = ln(n) max over cluster i's probes of |l(x) - l(c_i)| / |x - c_i|^z.

    Returns ((k,) Lambda, number of clusters without a usable probe, which take the median of the others).
    """
    k = len(centre_loss)
    keep = np.isfinite(probe_loss) & (dist2[probes] > 0)
    probes, probe_loss = probes[keep], probe_loss[keep]
    lab = labels[probes]
    ratio = np.abs(probe_loss - centre_loss[lab]) / dist2[probes].astype(np.float64) ** (z / 2)
    best = np.full(k, -np.inf)
    np.maximum.at(best, lab, ratio)
    lam = math.log(max(n, 2)) * best
    missing = ~np.isfinite(lam)
    lam[missing] = float(np.median(lam[~missing])) if (~missing).any() else 0.0
    return lam, int(missing.sum())


def inclusion_probabilities(p: np.ndarray, s: int) -> np.ndarray:
    """pi = min(1, c p) with c such that sum pi = s (0 < s <= number of rows with p > 0), float64."""
    p = np.asarray(p, dtype=np.float64)
    order = np.argsort(-p, kind="stable")
    ps = p[order]
    tail = np.cumsum(ps[::-1])[::-1]  # tail[j] = sum of ps[j:]
    # the first j rows are certainties when (s - j) ps[j] / tail[j] >= 1 for each of them
    pi = np.empty_like(ps)
    j = 0
    while j < s and (s - j) * ps[j] >= tail[j]:
        j += 1
    pi[:j] = 1.0
    pi[j:] = (s - j) * ps[j:] / tail[j] if j < len(ps) and tail[j] > 0 else 0.0
    out = np.empty_like(pi)
    out[order] = np.minimum(pi, 1.0)
    return out


def systematic_sample(pi: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Randomised systematic pi-ps sampling: exactly round(sum pi) distinct positions, each with probability pi."""
    s = int(round(float(pi.sum())))
    sure = np.nonzero(pi >= 1.0)[0]
    rest = np.nonzero(pi < 1.0)[0]
    m = s - len(sure)
    if m <= 0:
        return rng.permutation(sure)[:s]
    perm = rest[rng.permutation(len(rest))]
    cum = np.cumsum(pi[perm])
    cum *= m / cum[-1]  # absorb float rounding: the points u + j, j < m, all fall inside
    points = rng.random() + np.arange(m)
    picked = perm[np.minimum(np.searchsorted(cum, points, side="right"), len(perm) - 1)]
    if len(np.unique(picked)) != m:  # only if a pi within rounding of 1 straddled two points
        raise DataselectError("kmeans-sensitivity: systematic sampling hit a rounding tie; run again with another --seed")
    out = np.concatenate([sure, picked])
    return out[rng.permutation(len(out))]


def iid_sample(p: np.ndarray, s: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Algorithm 1, line 4: ``s`` i.i.d. draws from ``p`` -> (distinct positions in first-draw order, times drawn)."""
    cdf = np.cumsum(p, dtype=np.float64)
    seq = np.minimum(np.searchsorted(cdf, rng.random(s) * cdf[-1], side="right"), len(p) - 1)
    uniq, first, counts = np.unique(seq, return_index=True, return_counts=True)
    order = np.argsort(first, kind="stable")
    return uniq[order], counts[order]


@register
class KMeansSensitivity(Selector):
    """Sensitivity sampling on k-means clusters with the model's loss, as Axiotis et al. 2024 (Algorithm 1, §5.1)."""

    name = "kmeans-sensitivity"
    needs_losses = True  # --variant loss (the paper's); --variant coreset or --loss-model do without
    uses_queries = True
    rule = ("k'' = 0.2 x budget clusters; each centre replaced by its nearest row, whose loss is queried and which is "
            "selected; the rest drawn with p(e) ~ l(c_e) + Lambda_i |e - c_e|^z, Lambda_i Lemma 8's bound (--lam auto) or "
            "a constant; exactly budget rows by systematic pi-ps (weights 1/pi), or --draws iid (weights t/(s p)).")
    source = ("Axiotis et al. 2024, 'Data-Efficient Learning via Clustering-Based Sensitivity Sampling' (ICML, "
              "arXiv 2402.17327v1): Algorithm 1 (§3.2.1), Lemma 8 (§3.2.3, App. B.4), §5.1, §5.2")

    params = (
        Param("variant", "loss", '"loss" (the paper: p ~ l(c_e) + Lambda |e - c_e|^z) or "coreset" (lightweight '
              'k-means coreset).', choices=VARIANTS),
        Param("k", 0, "clusters, whose representatives are selected.", low=0,
              auto="k-fraction x budget, §5.1; capped where the memory budget cannot hold it"),
        Param("k_fraction", 0.2, "share of the budget that k'' clusters take when --k is 0 (the paper: 0.2, §5.1).",
              low=0, low_open=True, high=1),
        Param("lam", "auto", "Hoelder constant Lambda; a number: one constant, the LLM experiment's 0.1 (§5.2.1).",
              kind=float, choices=("auto",), low=0,
              auto="per cluster, Lemma 8's upper bound from probes"),
        Param("lam_probes", 0, "rows per cluster whose loss --lam auto queries.", low=0,
              auto="Lemma 8's count for p = 1/2, log2 of 100 k rounded up"),
        Param("z", 2.0, "distance power, 2 (k-means) or 1 (k-median).", choices=(1.0, 2.0)),
        Param("draws", "systematic", '"systematic" (exactly budget distinct rows, pi-ps, weights 1/pi) or "iid" '
              '(Algorithm 1: s draws, weights t/(s p)).', choices=DRAWS),
        Param("warm_start", 0.0, "share of the budget taken uniformly first (§5.2.2 uses 0.2).", low=0, high=1,
              high_open=True),
        Param("loss_model", "", "model that scores the representatives and probes when the store has no loss column."),
        Param("pool", "", "the pool file the store was embedded from (needed with --loss-model)."),
        Param("niter", 20, "Lloyd updates.", low=1),
        Param("spherical", False, "normalise centroids (cosine k-means)."),
        Param("reduce", "none", REDUCE_HELP + "; the distances of the sensitivities are then the reduced space's.",
              kind=str),
        Param("sample_size", 0, "k-means training rows.", low=0, auto="256 per centroid, within the memory budget"),
        Param("init_sample", 32, "k-means++ seeding on this many rows per centroid (0 seeds on the whole training "
              "sample).", low=0),
        Param("cluster_seed", 0, "seed of the clustering (kept apart from --seed so a re-sample reuses the cache).",
              low=0, high=2**32 - 1),
        Param("query_clusters", 0, "with --queries, clusters kept per task.", low=0, auto="k/10"),
        Param("backend", "auto", '"auto" (torch on CUDA, FAISS on CPU), "faiss" or "torch".',
              choices=("auto", "faiss", "torch")),
        Param("assign", "exact", '"exact", "hnsw" (FAISS HNSW over the centroids) or "ivf" (FAISS IVF over the '
              'centroids, 16 of 4 sqrt(k) cells searched): approximate, faster at large k on CPU.',
              choices=("exact", "hnsw", "ivf")),
    )

    def validate(self) -> None:
        self._lam = parse_lam(self.lam)
        parse_reduce(self.reduce)
        if self.loss_model and not self.pool:
            raise DataselectError("--loss-model needs --pool POOL: the records of the representatives are read "
                                  "from it")

    # -- clustering ---------------------------------------------------------------------------------------------

    def resolve_k(self, pool, budget: int, resources: Resources | None = None) -> tuple[int, dict]:
        """k'' for this budget (module docstring, step 2) and what decided it, for ``selection.json``."""
        resources = resources or Resources.make(progress=False)
        if self.k:
            if self.variant == "loss" and self.k > budget:
                raise DataselectError(f"--k {self.k}: the representatives of the k clusters are part of the selection, "
                                      f"so k must be <= --budget ({budget:,})")
            return self.k, {"k": self.k, "k_rule": "--k"}
        wanted = min(rule_k(budget, self.k_fraction), pool.n_rows)
        info = {"k_rule": f"{self.k_fraction} x budget (§5.1)", "k_wanted": wanted}
        fit = max_k(pool, pool.dim, resources.torch_device(), resources, wanted)
        if fit < 1:
            raise DataselectError(f"kmeans-sensitivity: {resources.memory.source} cannot hold even one cluster "
                                  "with its training sample; raise --max-memory")
        if fit < wanted:
            reason = (f"{resources.memory.source} holds a k-means training sample of 39 rows per centroid for at most "
                      f"{fit:,} clusters")
            note(f"kmeans-sensitivity: k capped at {fit:,} (the rule asks {wanted:,}): {reason}; raise --max-memory "
                 "or pass --reduce pca:256 to cluster in fewer dimensions")
            info["k_capped"] = {"wanted": wanted, "effective": fit, "reason": reason}
        info["k"] = fit
        return fit, info

    def cost(self, pool, k: int, reduced: dict) -> dict:
        """The clustering's arithmetic and its time at this machine's GEMM rate (:func:`engine.cost_estimate`:
        said up front in one line, with what would make it feasible, when it is long)."""
        n, d = pool.n_rows, pool.dim
        sample = min(n, self.sample_size or k * engine.POINTS_PER_CENTROID)
        init = min(sample, self.init_sample * k) if self.init_sample else sample
        ways = [f"--reduce pca:256 divides it by {d / 256:.0f}"] if d > 512 and not reduced else []
        ways += [f"a smaller --k (k-means++ grows as k^2: k = {max(1, k // 10):,} costs 1/100 of it)"]
        if self.assign == "exact":
            ways.append("--assign ivf can speed up the searches at large k (where its cost model says it pays)")
        return engine.cost_estimate(f"kmeans-sensitivity: k = {k:,} over {n:,} rows x {d} dims",
                                    engine.kmeans_flops(n, sample, k, d, self.niter, init), ways)

    def cluster(self, pool, k: int, resources=None) -> Clustering:
        """The k-means clustering (cached in the store) that the representatives round."""
        return cluster_store(pool, k, niter=self.niter, seed=self.cluster_seed, spherical=self.spherical,
                             sample_size=self.sample_size, init_sample=self.init_sample,
                             backend=self.backend, assign=self.assign, resources=resources)

    def _rounded(self, pool, base: Clustering, eligible: np.ndarray, loss: np.ndarray | None, scorer, resources
                 ) -> tuple[Clustering, np.ndarray, np.ndarray, dict]:
        """Step 3: (clustering around the representatives, their positions, their losses, what was used).
        Losses come from ``loss`` (the store's column) or, when it is None, from ``scorer``."""
        reps = representatives(base.labels, base.dist2, base.k, eligible)
        info: dict = {}
        if scorer is not None:
            rep_loss = np.full(base.k, np.nan)
            eligible = eligible.copy()
            scored = 0
            for _ in range(NAN_ROUNDS):  # a representative whose loss is NaN (no response token) is replaced
                todo = np.nonzero((reps >= 0) & ~np.isfinite(rep_loss))[0]
                if not len(todo):
                    break
                rep_loss[todo] = scorer(base.rows[reps[todo]])
                scored += len(todo)
                bad = todo[~np.isfinite(rep_loss[todo])]
                eligible[reps[bad]] = False
                reps[bad] = representatives(base.labels, base.dist2, base.k, eligible)[bad]
            info["loss_source"] = f"{scored:,} representatives scored with {self.loss_model}"
        else:
            rep_loss = np.where(reps >= 0, loss[np.maximum(reps, 0)], np.nan)
            info["loss_source"] = "store column loss_response"
        found = (reps >= 0) & np.isfinite(rep_loss)
        if not found.any():
            raise DataselectError("kmeans-sensitivity: no cluster has a row with a finite loss (no response tokens?); "
                                  "use --variant coreset")
        info["representatives"] = int(found.sum())
        if (~found).any():
            info["clusters_without_representative"] = int((~found).sum())
            note(f"kmeans-sensitivity: {(~found).sum():,} of {base.k:,} clusters have no row with a finite loss; "
                 "their rows go to the nearest other representative")
        rep_loss = rep_loss[found]
        if np.any(rep_loss < 0):
            raise DataselectError("kmeans-sensitivity: the loss column holds negative values; it must be a "
                                  "non-negative loss (mean response NLL)")
        return base.rounded(pool, reps[found], resources), reps[found], rep_loss, info

    def _lambda(self, pool, cl: Clustering, rep_loss: np.ndarray, loss: np.ndarray | None, scorer,
                rng: np.random.Generator) -> tuple[np.ndarray, dict]:
        """Step 5: one Lambda per cluster (Lemma 8) or the constant --lam; probe losses as in :meth:`_rounded`."""
        if self._lam is not None:
            return np.full(cl.k, self._lam), {"lam": self._lam}
        t = self.lam_probes or default_probes(cl.k)
        eligible = None if loss is None else np.isfinite(loss)
        probes = draw_probes(cl.labels, cl.dist2, t, rng, eligible)
        probe_loss = loss[probes] if loss is not None else scorer(cl.rows[probes])
        lam, missing = lemma8_lambda(cl.labels, cl.dist2, rep_loss, probes, probe_loss, pool.n_rows, self.z)
        info = {"lam": "auto", "lam_probes_per_cluster": t, "lam_probes_used": int(np.isfinite(probe_loss).sum()),
                "lam_clusters_without_probe": missing,
                "lam_per_cluster": {"min": float(lam.min()), "median": float(np.median(lam)),
                                    "mean": float(lam.mean()), "max": float(lam.max())}}
        return lam, info

    def candidate_clusters(self, clustering, pool, queries, budget, project=None) -> np.ndarray:
        """The clusters nearest each task's queries (``project``: into the reduced space of --reduce)."""
        Q, starts, _ = query_matrix(pool, queries)
        if project is not None:
            Q = project(Q)
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

    def cluster_balance(self, pool, table, meta: dict) -> tuple[np.ndarray, np.ndarray]:
        """(pool rows per cluster, selected rows per cluster) of the clustering the selection drew from
        (the rounded one; the k-means one for the coreset variant), as the selection recorded it."""
        pool = reduced_of(pool, meta)
        cl = Clustering.load(used_artefact(pool, meta, "clustering"), pool)
        labels = np.asarray(table.column("cluster").to_numpy())
        return cl.sizes(), np.bincount(labels, minlength=cl.k)

    # -- selection ----------------------------------------------------------------------------------------------

    def select(self, pool, budget, rng, queries=(), resources=None):
        if rng is None:
            raise DataselectError("kmeans-sensitivity draws at random: pass rng (numpy Generator)")
        if self.variant == "loss" and not self.loss_model and "loss_response" not in pool.columns:
            raise DataselectError(f"kmeans-sensitivity needs the model's loss: {pool.path} has no loss column. Embed "
                                  "with --with-loss (or run `dataselect score`), pass --loss-model MODEL --pool POOL "
                                  "to score only the representatives, or use --variant coreset")
        full = pool
        pool, reduced = reduced_store(pool, self.reduce, resources)
        n = pool.n_rows
        n_warm = int(round(self.warm_start * budget))
        k, info = self.resolve_k(pool, budget, resources)
        if reduced:
            info["reduce"] = reduced
        info["cost_estimate"] = self.cost(pool, k, reduced)
        if self.variant == "loss" and n_warm + k > budget:
            raise DataselectError(f"--warm-start {self.warm_start} takes {n_warm:,} rows and the k={k:,} representatives "
                                  f"are selected too: together more than --budget {budget:,}; lower one of them")
        info["variant"] = self.variant
        warm = np.sort(rng.choice(n, n_warm, replace=False)) if n_warm else np.zeros(0, dtype=np.int64)
        taken = np.zeros(n, dtype=bool)
        taken[warm] = True
        base = self.cluster(pool, k, resources)
        info["clustering"] = base.meta
        if self.variant == "coreset":
            cl, reps = base, np.zeros(0, dtype=np.int64)
            score = coreset_probabilities(cl.labels, cl.dist2, cl.k)
        else:
            eligible = ~taken
            loss = scorer = None
            if self.loss_model:
                from dataselect.embedding.score import RowLosses

                scorer = RowLosses(pool, self.loss_model, self.pool, device=resources.device if resources else "auto")
            else:  # the store's column, read once for representatives and probes
                loss = pool.column("loss_response").astype(np.float64)
                eligible &= np.isfinite(loss)
            cl, reps, rep_loss, rep_info = self._rounded(pool, base, eligible, loss, scorer, resources)
            info.update(rep_info)
            lam, lam_info = self._lambda(pool, cl, rep_loss, loss, scorer, rng)
            info.update(lam_info, z=self.z)
            score = sensitivities(cl.labels, cl.dist2, rep_loss, lam, self.z)
        if queries:
            keep = self.candidate_clusters(cl, full, queries, budget, reduced_projection(full, reduced))
            reps = reps[keep[cl.labels[reps]]]
            info["query_clusters_kept"] = int(keep.sum())
        taken[reps] = True
        candidates = ~taken if not queries else ~taken & keep[cl.labels]
        pop = np.nonzero(candidates)[0]
        s = budget - n_warm - len(reps)
        if s > len(pop):
            raise DataselectError(f"kmeans-sensitivity: {len(pop):,} rows are left to draw {s:,} from; lower --budget")
        p = score[pop]
        p = p / p.sum() if p.sum() > 0 else np.full(len(pop), 1.0 / max(len(pop), 1))
        if s == 0:
            drawn, draws, weight = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0)
        elif self.draws == "iid":
            drawn, draws = iid_sample(p, s, rng)
            weight = draws / (s * p[drawn])
            if len(drawn) < s:
                note(f"kmeans-sensitivity --draws iid: {s:,} draws gave {len(drawn):,} distinct rows (Algorithm 1 "
                     "draws with replacement); the selection has fewer rows than --budget")
        else:
            pi = inclusion_probabilities(p, s)
            drawn = systematic_sample(pi, rng)
            draws, weight = np.ones(len(drawn), dtype=np.int64), 1.0 / pi[drawn]
            info["certainty_rows"] = int((pi >= 1.0).sum())
        info.update(draws=self.draws, draws_made=int(draws.sum()), drawn_rows=len(drawn), warm_start_rows=n_warm,
                    population=len(pop))
        pos = np.concatenate([warm, reps, pop[drawn]]).astype(np.int64)
        kinds = np.array(["warm-start"] * n_warm + ["representative"] * len(reps) + ["drawn"] * len(drawn), dtype=object)
        p_col = np.concatenate([np.full(n_warm + len(reps), np.nan), p[drawn]])
        return Selection(rows=cl.rows[pos], scores=score[pos].astype(np.float32),
                         artefacts={**({"clustering": cl.key} if cl.key else {}),
                                    **({"reduced": reduced["artefact"]} if reduced else {})},
                         weights=np.concatenate([np.ones(n_warm + len(reps)), weight]).astype(np.float32),
                         extra={"kind": kinds, "cluster": cl.labels[pos].astype(np.int32),
                                "draws": np.concatenate([np.ones(n_warm + len(reps), dtype=np.int64), draws]).astype(np.int32),
                                "p": p_col.astype(np.float32)},
                         info=info)

