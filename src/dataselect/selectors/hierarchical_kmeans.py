"""``hierarchical-kmeans``: balanced hierarchical sampling (Vo et al. 2024, facebookresearch/ssl-data-curation).

The pool is clustered into a hierarchy (see :mod:`dataselect.pool_index.hierarchical`). The budget is
then split top-down (reference: ``src/hierarchical_sampling.py``). At each node its share goes to
its children by water-filling: the largest cut c with ``sum_i min(c, size_i) <= share`` (sizes
count pool rows under each child), every child gets ``min(c, size_i)``, and the remainder -- fewer
rows than there are children above the cut -- goes +1 each to children drawn at random, without
replacement, among those with ``size_i > c`` (``remainder random``, the reference's rule; seeded by
``--seed``). ``remainder largest`` gives it to the largest such children instead (deterministic).
At the leaves (level-1 clusters) rows are picked at ``random`` (the reference's default ``r``) or
``closest`` to the centroid (``c``). The selection records each row's ``cluster_path``
("top/.../leaf") and is ordered by a seeded shuffle, so every prefix is balanced too.
"""

from __future__ import annotations

import numpy as np

from dataselect.pool_index.hierarchical import RESAMPLE_STRATEGIES, Hierarchy, build_hierarchy
from dataselect.pool_index.reduce import REDUCE_HELP, parse_reduce, reduced_of, reduced_store
from dataselect.selection import Selection
from dataselect.selectors.base import Selector, register, used_artefact
from dataselect.selectors.params import Param

REMAINDERS = ("random", "largest")


def best_cut(sizes: np.ndarray, target: int) -> int:
    """The largest integer c with ``sum(min(c, sizes)) <= target`` (``max(sizes)`` when all fit)."""
    sizes = np.asarray(sizes, dtype=np.int64)
    if target >= sizes.sum():
        return int(sizes.max(initial=0))
    lo, hi = 0, int(sizes.max())  # invariant: f(lo) <= target < f(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if np.minimum(mid, sizes).sum() <= target:
            lo = mid
        else:
            hi = mid
    return lo


def water_fill(sizes: np.ndarray, target: int, rng: np.random.Generator | None = None,
               remainder: str = "random") -> np.ndarray:
    """Split ``target`` over groups of ``sizes`` as evenly as possible (see module docstring)."""
    sizes = np.asarray(sizes, dtype=np.int64)
    if target >= sizes.sum():
        return sizes.copy()
    c = best_cut(sizes, target)
    take = np.minimum(c, sizes)
    rest = int(target - take.sum())
    if rest:
        open_ = np.nonzero(sizes > c)[0]
        if remainder == "random":
            rng = rng if rng is not None else np.random.default_rng(0)
            take[rng.choice(open_, rest, replace=False)] += 1
        else:
            take[open_[np.lexsort((open_, -sizes[open_]))[:rest]]] += 1
    return take


def _groups(labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Members of each group: (order, start offsets (k+1,)) so group g is order[starts[g]:starts[g+1]]."""
    order = np.argsort(labels, kind="stable")
    return order, np.searchsorted(labels[order], np.arange(k + 1))


def leaf_targets(h: Hierarchy, budget: int, rng: np.random.Generator | None = None,
                 remainder: str = "random") -> np.ndarray:
    """Rows to take from each level-1 cluster (balanced top-down)."""
    # clusters per level: level l's count is the length of its parent array (empty clusters included)
    ks = [len(lab) for lab in h.labels[1:]] + [int(h.labels[-1].max()) + 1]
    counts = [np.bincount(h.labels[0], minlength=ks[0])]  # pool rows under each cluster, per level
    for lab, k in zip(h.labels[1:], ks[1:], strict=True):
        counts.append(np.bincount(lab, weights=counts[-1], minlength=k).astype(np.int64))
    targets = water_fill(counts[-1], budget, rng, remainder)
    for level in range(len(ks) - 1, 0, -1):  # split each level-(level+1) cluster's share over its children
        order, starts = _groups(h.labels[level], ks[level])
        child = np.zeros(ks[level - 1], dtype=np.int64)
        for c in np.nonzero(targets)[0]:
            members = order[starts[c]:starts[c + 1]]
            child[members] = water_fill(counts[level - 1][members], int(targets[c]), rng, remainder)
        targets = child
    return targets


@register
class HierarchicalKMeans(Selector):
    """Balanced sampling over a hierarchical k-means with resampling steps (Vo et al. 2024)."""

    name = "hierarchical-kmeans"
    rule = ("hierarchical k-means (k-means++, 50 Lloyd updates, 1 + 9 resampling runs per level), then the budget "
            "split top-down by water-filling, the remainder +1 to random clusters above the cut; random rows per leaf.")
    source = ("Vo et al. 2024, 'Automatic Data Curation for Self-Supervised Learning'; facebookresearch/ssl-data-"
              "curation src/hierarchical_kmeans_gpu.py, scripts/run_distributed_kmeans.py, src/hierarchical_sampling.py")

    params = (
        Param("k", [], 'clusters per level, bottom to top, e.g. "20000,2000,200,20".', kind=list, low=1,
              auto="n/25 at level 1, the reference's ratio -- its README clusters 29,700 points into 1,000, its "
              "two-level config 100,000 into 5,000 -- lowered, in one line and in the metadata, to the largest k "
              "whose training sample of 25 rows per centroid the memory budget holds; then /10 per level while "
              ">= 10, at most 4 levels"),
        Param("resamples", 9, "resampling steps per level after the first k-means (reference: 10 runs = 1 + 9).",
              low=0),
        Param("sample_sizes", [], "points kept per cluster in resampling, one per level.", kind=list, low=0,
              auto="half the mean cluster size of the level, the reference configs' advice"),
        Param("resample", "closest", '"closest" (reference default "c") or "random" points per cluster in resampling.',
              choices=RESAMPLE_STRATEGIES),
        Param("leaf", "random", '"random" (reference default "r") or "closest" rows within a leaf cluster.',
              choices=("random", "closest")),
        Param("remainder", "random", '"random" (reference) or "largest": who gets the rows left after the '
              'water-filling cut.', choices=REMAINDERS),
        Param("niter", 50, "Lloyd updates per k-means (reference: 50).", low=1),
        Param("sample_size", 0, "level-1 training rows.", low=0, auto="256 per centroid, within the memory budget"),
        Param("init_sample", 0, "k-means++ on this many rows per centroid.", low=0,
              auto="all of the k-means input, as the reference"),
        Param("cluster_seed", 0, "seed of the clustering (kept apart from --seed so a re-sample reuses the cache).",
              low=0, high=2**32 - 1),
        Param("backend", "auto", '"auto" (torch on CUDA, FAISS on CPU), "faiss" or "torch".',
              choices=("auto", "faiss", "torch")),
        Param("assign", "exact", '"exact", "hnsw" (FAISS HNSW over the centroids) or "ivf" (FAISS IVF over the '
              'centroids, 16 of 4 sqrt(k) cells searched): approximate, faster at large k on CPU.',
              choices=("exact", "hnsw", "ivf")),
        Param("reduce", "none", REDUCE_HELP + ".", kind=str),
    )

    def validate(self) -> None:
        parse_reduce(self.reduce)

    def hierarchy(self, pool, resources=None) -> Hierarchy:
        return build_hierarchy(pool, self.k or None, resamples=self.resamples,
                               sample_sizes=self.sample_sizes or None, strategy=self.resample, niter=self.niter,
                               seed=self.cluster_seed, sample_size=self.sample_size, init_sample=self.init_sample,
                               backend=self.backend, assign=self.assign, resources=resources)

    def cluster_balance(self, pool, table, meta: dict) -> tuple[np.ndarray, np.ndarray]:
        """(pool rows per top-level cluster, selected rows per top-level cluster), from the hierarchy the
        selection recorded."""
        pool = reduced_of(pool, meta)
        h = Hierarchy.load(used_artefact(pool, meta, "hierarchy"), pool)
        top = h.labels[0]
        for lab in h.labels[1:]:
            top = lab[top]
        k = int(top.max()) + 1
        picked = np.array([int(p.split("/")[0]) for p in table.column("cluster_path").to_pylist()], dtype=np.int64)
        return np.bincount(top, minlength=k), np.bincount(picked, minlength=k)

    def select(self, pool, budget, rng, queries=(), resources=None):
        rng = rng if rng is not None else np.random.default_rng(0)
        pool, reduced = reduced_store(pool, self.reduce, resources)
        h = self.hierarchy(pool, resources)
        targets = leaf_targets(h, budget, rng, self.remainder)
        key = h.dist2 if self.leaf == "closest" else rng.random(len(h.dist2))
        order = np.lexsort((np.arange(len(key)), key, h.labels[0]))  # by leaf, then closeness / random key
        starts = np.searchsorted(h.labels[0][order], np.arange(len(targets) + 1))
        picked = np.concatenate([order[starts[c]:starts[c] + targets[c]] for c in np.nonzero(targets)[0]])
        picked = picked[rng.permutation(len(picked))]
        return Selection(rows=h.rows[picked], scores=(-h.dist2[picked]).astype(np.float32),
                         extra={"cluster_path": np.array(h.paths(picked), dtype=object)},
                         info={"clustering": h.meta, **({"reduce": reduced} if reduced else {})},
                         artefacts={**({"hierarchy": h.key} if h.key else {}),
                                    **({"reduced": reduced["artefact"]} if reduced else {})})
