"""SemDeDup against the reference code's rule (facebookresearch/SemDeDup), same data both sides, over seeds.

The reference removes, in each k-means cluster, the rows whose largest similarity to an earlier row is
strictly above 1 - eps: rows sorted by the distance to the centroid the clustering's search recorded
(``keep hard``: farthest first, a stable sort), S = X X^T with its diagonal zeroed, M = the column
maxima of triu(S, 1), removed where M > 1 - eps (semdedup.py, sort_clusters.py). :func:`transcription`
writes that out from its description (no code of it is copied) and is run on the clusters
``dataselect dedup`` used. Reported per seed and eps:

* ``ours``: rows ``--rule reference --keep hard`` removes; ``same``: whether the transcription removes
  exactly those rows, given the clustering's recorded distances (what the reference sorts by);
* ``cos-order``: the transcription again, sorted by a recomputed cosine distance instead; it differs
  only where rows tie (exact duplicates), whose order the float rounding of either search decides;
  ``jaccard`` of its removed set with ours;
* ``groups``: rows the default ``--rule groups`` (the paper's connected components) removes, and how
  many rows the two rules decide differently.

    python scripts/fidelity_semdedup.py [--rows 20000] [--dim 64] [--k 20] [--seeds 5]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch


def transcription(x: np.ndarray, labels: np.ndarray, dist_to_cent: np.ndarray, eps: float) -> np.ndarray:
    """The reference's removed rows (module docstring); ``dist_to_cent``: larger is farther."""
    removed = []
    xf = torch.from_numpy(np.asarray(x, dtype=np.float32))
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        if len(members) < 2:
            continue  # a cluster of one is kept
        order = sorted(range(len(members)), key=lambda i: float(dist_to_cent[members[i]]), reverse=True)
        reps = xf[members[order]]
        sim = reps @ reps.T
        sim.fill_diagonal_(0.0)
        m = torch.max(torch.triu(sim, diagonal=1), dim=0)[0]
        removed += members[order][(m > 1 - eps).numpy()].tolist()
    return np.sort(np.array(removed, dtype=np.int64))


def make_pool(n: int, dim: int, seed: int) -> np.ndarray:
    """n/4 distinct unit rows and 3n/4 copies of them at noise 0 (exact), 0.01, 0.03, 0.1 and 0.3."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n // 4, dim))
    noise = rng.choice([0.0, 0.01, 0.03, 0.1, 0.3], (n - n // 4, 1))
    x = np.concatenate([base, base[rng.integers(0, n // 4, n - n // 4)] + noise * rng.standard_normal((n - n // 4, dim))])
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)


def main() -> None:
    from dataselect.duplicates import dedup_store
    from dataselect.pool_index.kmeans import cluster_store
    from dataselect.store import Store
    from dataselect.store.synthetic import store_from_array

    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=20_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--seeds", type=int, default=5)
    args = ap.parse_args()
    print(f"{'seed':>4} {'eps':>6} {'ours':>6} {'same':>5} {'cos-order':>9} {'jaccard':>7} {'groups':>6} {'rules differ':>12}")
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            x = make_pool(args.rows, args.dim, seed)
            store = Store(store_from_array(Path(tmp) / f"s{seed}", x, shard_rows=5000))
            for eps in (0.001, 0.01, 0.05, 0.1):
                ours = dedup_store(store, eps=eps, k=args.k, seed=seed, keep="hard", rule="reference")
                groups = dedup_store(store, eps=eps, k=args.k, seed=seed, keep="hard")
                cl = cluster_store(store, args.k, niter=20, seed=seed, spherical=True)  # the pass's (cached)
                removed = np.flatnonzero(~ours.kept)
                same = np.array_equal(removed, transcription(x, cl.labels, cl.dist2, eps))
                cent = torch.from_numpy(cl.centroids.astype(np.float32))
                cos_dist = 1 - (torch.from_numpy(x.astype(np.float32)) * cent[cl.labels]).sum(1).numpy()
                other = transcription(x, cl.labels, cos_dist, eps)
                jac = len(np.intersect1d(removed, other)) / max(len(np.union1d(removed, other)), 1)
                differ = int((ours.kept != groups.kept).sum())
                print(f"{seed:>4} {eps:>6} {len(removed):>6} {str(same):>5} {len(other):>9} {jac:>7.4f} "
                      f"{groups.removed:>6} {differ:>12}")


if __name__ == "__main__":
    main()
