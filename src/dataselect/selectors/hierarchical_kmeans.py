"""``hierarchical-kmeans``: balanced hierarchical sampling (Vo et al. 2024).

The pool is clustered into a hierarchy (see :mod:`dataselect.pool_index.hierarchical`). The budget is
then split top-down: at each node, its share goes to its children by water-filling -- the largest
cut c with sum_i min(c, size_i) <= share, so a child smaller than its share gives the rest to the
others -- and the remainder (fewer than the number of children still open) goes one row each to the
open children with the most rows (ties by cluster number). At the leaves (level-1 clusters), rows
are picked ``random`` (seeded) or ``closest`` to the centroid. The selection records each row's
``cluster_path`` ("top/.../leaf"), and is ordered by a seeded shuffle so every prefix is balanced too.
"""

from __future__ import annotations

import numpy as np

from dataselect.errors import DataselectError
from dataselect.pool_index.hierarchical import Hierarchy, build_hierarchy, default_levels
from dataselect.selection import Selection
from dataselect.selectors.base import Selector, check_choice, register


def water_fill(sizes: np.ndarray, target: int) -> np.ndarray:
    """Split ``target`` over groups of ``sizes`` as evenly as possible (see module docstring)."""
    sizes = np.asarray(sizes, dtype=np.int64)
    if target >= sizes.sum():
        return sizes.copy()
    lo, hi = 0, int(sizes.max())
    while hi - lo > 1:  # largest c with sum(min(c, sizes)) <= target
        mid = (lo + hi) // 2
        if np.minimum(mid, sizes).sum() <= target:
            lo = mid
        else:
            hi = mid
    c = hi if np.minimum(hi, sizes).sum() <= target else lo
    take = np.minimum(c, sizes)
    rest = int(target - take.sum())
    if rest:
        open_ = np.nonzero(sizes > c)[0]
        take[open_[np.lexsort((open_, -sizes[open_]))[:rest]]] += 1
    return take


def _groups(labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Members of each group: (order, start offsets (k+1,)) so group g is order[starts[g]:starts[g+1]]."""
    order = np.argsort(labels, kind="stable")
    return order, np.searchsorted(labels[order], np.arange(k + 1))


def leaf_targets(h: Hierarchy, budget: int) -> np.ndarray:
    """Rows to take from each level-1 cluster (balanced top-down)."""
    ks = [int(h.labels[0].max()) + 1] + [int(lab.max()) + 1 for lab in h.labels[1:]]
    counts = [np.bincount(h.labels[0], minlength=ks[0])]
    for lab, k in zip(h.labels[1:], ks[1:], strict=True):
        counts.append(np.bincount(lab, weights=counts[-1], minlength=k).astype(np.int64))
    targets = water_fill(counts[-1], budget)
    for level in range(len(ks) - 1, 0, -1):  # split each level-(level+1) cluster's share over its children
        order, starts = _groups(h.labels[level], ks[level])
        child = np.zeros(ks[level - 1], dtype=np.int64)
        for c in np.nonzero(targets)[0]:
            members = order[starts[c]:starts[c + 1]]
            child[members] = water_fill(counts[level - 1][members], int(targets[c]))
        targets = child
    return targets


@register
class HierarchicalKMeans(Selector):
    """Balanced sampling over a hierarchical k-means with resampling steps (Vo et al. 2024).

    Parameters
    ----------
    k : clusters per level, bottom to top, e.g. "20000,2000,200,50" (empty: by pool size, see
        dataselect.pool_index.hierarchical.default_levels).
    resamples : resampling-clustering steps per level.
    sample_sizes : points kept per cluster in resampling, one per level (empty: half the mean size).
    leaf : "random" or "closest" (to the leaf centroid).
    niter : k-means iterations; pca_dim : PCA before clustering (0: none); cluster_seed : clustering seed.
    """

    name = "hierarchical-kmeans"

    def __init__(self, *, k: list[int] | None = None, resamples: int = 3, sample_sizes: list[int] | None = None,
                 leaf: str = "random", niter: int = 20, pca_dim: int = 0, cluster_seed: int = 0):
        check_choice("leaf", leaf, ("random", "closest"))
        if resamples < 0 or niter < 1:
            raise DataselectError("--resamples must be >= 0 and --niter >= 1")
        self.k, self.resamples, self.sample_sizes = list(k or []), resamples, list(sample_sizes or [])
        self.leaf, self.niter, self.pca_dim, self.cluster_seed = leaf, niter, pca_dim, cluster_seed

    def hierarchy(self, pool) -> Hierarchy:
        return build_hierarchy(pool, self.k or default_levels(pool.n_rows), resamples=self.resamples,
                               sample_sizes=self.sample_sizes or None, niter=self.niter, seed=self.cluster_seed,
                               pca_dim=self.pca_dim)

    def select(self, pool, budget, rng, queries=()):
        rng = rng if rng is not None else np.random.default_rng(0)
        h = self.hierarchy(pool)
        targets = leaf_targets(h, budget)
        key = h.dist2 if self.leaf == "closest" else rng.random(len(h.dist2))
        order = np.lexsort((np.arange(len(key)), key, h.labels[0]))  # by leaf, then closeness / random key
        starts = np.searchsorted(h.labels[0][order], np.arange(len(targets) + 1))
        picked = np.concatenate([order[starts[c]:starts[c] + targets[c]] for c in np.nonzero(targets)[0]])
        picked = picked[rng.permutation(len(picked))]
        return Selection(rows=h.rows[picked], scores=(-h.dist2[picked]).astype(np.float32),
                         extra={"cluster_path": np.array(h.paths(picked), dtype=object)})
