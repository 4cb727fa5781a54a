"""Hierarchical k-means with resampling steps (Vo et al. 2024, "Automatic Data Curation for
Self-Supervised Learning: A Clustering-Based Approach").

Level 1 clusters the pool embeddings (FAISS k-means trained on a sample, every row assigned shard by
shard -- nothing holds pool x k distances); level l+1 clusters the centroids of level l. At every
level, after k-means, ``resamples`` resampling-clustering steps follow: take the ``sample_size``
points of each cluster closest to its centroid, run k-means again on the union of those points, and
reassign all points to the new centroids. Dense regions then no longer pull many centroids: the
top-level clusters spread evenly over concepts instead of following density.

Level 1 uses FAISS (pool scale, random initialisation from a sample). Upper levels cluster at most
k1 centroids in memory and use scikit-learn's ``KMeans`` with k-means++ initialisation, as the
paper does: with random initialisation the many centroids of a dense region would also dominate the
top level.
"""

from __future__ import annotations

import hashlib
import json
import resource
import time
from dataclasses import dataclass

import faiss
import numpy as np

from dataselect.atomic import atomic_dir
from dataselect.errors import DataselectError
from dataselect.pool_index.kmeans import assign, cluster_store, kmeans_fit
from dataselect.pool_index.sample import iter_float_blocks, read_positions
from dataselect.store import Store


def default_levels(n: int) -> list[int]:
    """k1 = n/256 clamped to [2, 20000]; each next level divides by 10 while that leaves >= 10; <= 4 levels."""
    ks = [int(min(20000, max(2, round(n / 256))))]
    while len(ks) < 4 and ks[-1] // 10 >= 10:
        ks.append(ks[-1] // 10)
    return ks


def closest_per_cluster(labels: np.ndarray, dist2: np.ndarray, size: int) -> np.ndarray:
    """Sorted positions of the ``size`` points of each cluster closest to its centroid."""
    order = np.lexsort((np.arange(len(labels)), dist2, labels))
    lab = labels[order]
    first = np.searchsorted(lab, lab, side="left")
    rank_in_cluster = np.arange(len(lab)) - first
    return np.sort(order[rank_in_cluster < size])


@dataclass
class Hierarchy:
    """labels[0]: (n_rows,) level-1 cluster of each pool row (store order); labels[l]: (k_l,) parent
    of each level-l cluster at level l+1. dist2: (n_rows,) squared distance of each row to its level-1
    centroid. ``rows``: pool row numbers in store order."""

    labels: list[np.ndarray]
    dist2: np.ndarray
    ks: list[int]
    rows: np.ndarray
    meta: dict

    def paths(self, positions: np.ndarray) -> list[str]:
        """'top/.../leaf' cluster path of each store position."""
        cols = [self.labels[0][positions]]
        for lab in self.labels[1:]:
            cols.append(lab[cols[-1]])
        return ["/".join(str(int(c)) for c in reversed(t)) for t in zip(*cols, strict=True)]


def kmeans_pp(x: np.ndarray, k: int, *, niter: int, seed: int) -> np.ndarray:
    """Centroids of an in-memory set with k-means++ initialisation (scikit-learn); k capped at len(x)."""
    from sklearn.cluster import KMeans

    k = int(min(k, len(x)))
    km = KMeans(n_clusters=k, init="k-means++", n_init=1, max_iter=max(niter, 50), random_state=seed)
    return km.fit(np.ascontiguousarray(x, dtype=np.float32)).cluster_centers_.astype(np.float32)


def _assign_store(store: Store, centroids: np.ndarray, pca) -> tuple[np.ndarray, np.ndarray]:
    index = faiss.IndexFlatL2(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    labels = np.empty(store.n_rows, dtype=np.int32)
    dist2 = np.empty(store.n_rows, dtype=np.float32)
    for start, block in iter_float_blocks(store):
        d2, lab = index.search(pca.apply(block) if pca is not None else block, 1)
        labels[start:start + len(block)] = lab[:, 0]
        dist2[start:start + len(block)] = d2[:, 0]
    return labels, dist2


def build_hierarchy(store: Store, ks: list[int], *, resamples: int = 3, sample_sizes: list[int] | None = None,
                    niter: int = 20, seed: int = 0, max_points_per_centroid: int = 256, pca_dim: int = 0,
                    cache: bool = True) -> Hierarchy:
    """Cluster ``store`` into a hierarchy with ``ks[l]`` clusters at level l+1 (see module docstring).

    ``sample_sizes[l]``: points kept per cluster in level l+1's resampling steps (default: half the
    mean cluster size of that level, at least 2).
    """
    n = store.n_rows
    if not ks or any(k < 1 for k in ks) or ks[0] > n or any(b > a for a, b in zip(ks, ks[1:], strict=False)):
        raise DataselectError(f"--k {','.join(map(str, ks))}: cluster counts must be >= 1, not increase with the "
                              f"level, and the first must not exceed the pool ({n:,} rows)")
    sizes_in = [n, *ks[:-1]]
    sample_sizes = sample_sizes or [max(2, int(0.5 * m / k)) for m, k in zip(sizes_in, ks, strict=True)]
    if len(sample_sizes) != len(ks):
        raise DataselectError("--sample-sizes needs one value per level")
    params = {"ks": ks, "resamples": resamples, "sample_sizes": sample_sizes, "niter": niter, "seed": seed,
              "max_points_per_centroid": max_points_per_centroid, "pca_dim": pca_dim}
    key = "hk-" + hashlib.sha256(json.dumps({**params, "store": store.hash}, sort_keys=True).encode()).hexdigest()[:16]
    folder = store.path / "clusterings" / key
    if cache and (folder / "meta.json").is_file():
        meta = json.loads((folder / "meta.json").read_text())
        if meta["store_hash"] != store.hash:
            raise DataselectError(f"{folder} is stale: it was made for another version of the store")
        labels = [np.load(folder / f"labels-{i}.npy") for i in range(len(ks))]
        return Hierarchy(labels, np.load(folder / "dist2.npy"), ks, store.rows(), meta)

    clock = [time.perf_counter()]
    timings = []

    def lap(level: int) -> None:
        now = time.perf_counter()
        timings.append({"level": level, "seconds": round(now - clock[0], 3),
                        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)})
        clock[0] = now

    base = cluster_store(store, ks[0], niter=niter, seed=seed, max_points_per_centroid=max_points_per_centroid,
                         pca_dim=pca_dim, cache=cache)
    labels0, dist2, centroids = base.labels, base.dist2, base.centroids
    for r in range(resamples):
        pos = closest_per_cluster(labels0, dist2, sample_sizes[0])
        x = base.transform(read_positions(store, pos))
        centroids = kmeans_fit(x, ks[0], niter=niter, seed=seed + 1 + r, max_points_per_centroid=max_points_per_centroid)
        labels0, dist2 = _assign_store(store, centroids, base.pca)
    lap(1)
    labels = [labels0.astype(np.int32)]
    points = centroids
    for level, k in enumerate(ks[1:], start=1):
        cent = kmeans_pp(points, k, niter=niter, seed=seed + 100 * level)
        lab, d2 = assign(points, cent)
        for r in range(resamples):
            pos = closest_per_cluster(lab, d2, sample_sizes[level])
            cent = kmeans_pp(points[pos], k, niter=niter, seed=seed + 100 * level + 1 + r)
            lab, d2 = assign(points, cent)
        labels.append(lab.astype(np.int32))
        points = cent
        lap(level + 1)
    ks_real = [int(labels[0].max()) + 1] + [len(lab_) and int(lab_.max()) + 1 for lab_ in labels[1:]]
    meta = {**params, "store_hash": store.hash, "n": n, "ks_effective": ks_real, "timings": timings}
    hierarchy = Hierarchy(labels, dist2, ks, store.rows(), meta)
    if cache:
        with atomic_dir(folder, overwrite=True) as tmp:
            for i, lab in enumerate(labels):
                np.save(tmp / f"labels-{i}.npy", lab)
            np.save(tmp / "dist2.npy", dist2)
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return hierarchy
