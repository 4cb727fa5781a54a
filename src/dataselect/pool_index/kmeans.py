"""FAISS k-means over a store, with the full pool assigned streaming and the result cached on disk.

``cluster_store`` trains ``faiss.Kmeans`` on a uniform sample of ``k * max_points_per_centroid`` rows
(FAISS's own cap), optionally after a ``faiss.PCAMatrix`` reduction to ``pca_dim``, then assigns every
row shard by shard (nearest centroid by L2, which on unit vectors orders like cosine). The result
(centroids, per-row label and squared distance) is cached in ``STORE/clusterings/KEY/`` where KEY
hashes the parameters and the store hash, so a second selector run does not cluster again; a cache
whose recorded store hash differs from the store's is refused.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from dataselect.atomic import atomic_dir
from dataselect.errors import DataselectError
from dataselect.pool_index.sample import iter_float_blocks, read_positions, sample_positions
from dataselect.store import Store


def kmeans_fit(x: np.ndarray, k: int, *, niter: int = 20, seed: int = 0, spherical: bool = False,
               max_points_per_centroid: int = 256) -> np.ndarray:
    """Centroids (k, dim) float32 of ``x`` (n, dim) with ``faiss.Kmeans``; k is capped at n."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    k = int(min(k, len(x)))
    km = faiss.Kmeans(x.shape[1], k, niter=niter, seed=seed, spherical=spherical, verbose=False,
                      max_points_per_centroid=max_points_per_centroid, min_points_per_centroid=1)
    km.train(x)
    return km.centroids.copy()


def assign(x: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid of each row: (labels int64 (n,), squared L2 distances float32 (n,))."""
    index = faiss.IndexFlatL2(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    d2, lab = index.search(np.ascontiguousarray(x, dtype=np.float32), 1)
    return lab[:, 0], d2[:, 0]


@dataclass
class Clustering:
    """A clustering of a store. Arrays are in store order (position i is pool row ``rows[i]``).

    centroids : (k, d) float32, in the PCA space when ``pca_dim`` was set.
    labels : (n,) int32 cluster of each row.
    dist2 : (n,) float32 squared distance of each row to its centroid.
    rows : (n,) int64 pool row numbers.
    """

    centroids: np.ndarray
    labels: np.ndarray
    dist2: np.ndarray
    rows: np.ndarray
    meta: dict
    pca: faiss.PCAMatrix | None = None

    @property
    def k(self) -> int:
        return len(self.centroids)

    def sizes(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=self.k)

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Map (n, dim) vectors into the space the centroids live in."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        return self.pca.apply(x) if self.pca is not None else x

    @classmethod
    def load(cls, folder, store: Store) -> Clustering:
        folder = Path(folder)
        meta = json.loads((folder / "meta.json").read_text())
        if meta["store_hash"] != store.hash:
            raise DataselectError(f"{folder} is stale: it was made for another version of the store; delete it "
                                  "and run again to re-cluster")
        pca = faiss.read_VectorTransform(str(folder / "pca.faiss")) if (folder / "pca.faiss").exists() else None
        return cls(np.load(folder / "centroids.npy"), np.load(folder / "labels.npy"), np.load(folder / "dist2.npy"),
                   store.rows(), meta, pca)


def cluster_store(store: Store, k: int, *, niter: int = 20, seed: int = 0, spherical: bool = False,
                  max_points_per_centroid: int = 256, pca_dim: int = 0, cache: bool = True) -> Clustering:
    """Cluster the store (see module docstring); returns the cached clustering when there is one."""
    n = store.n_rows
    if not 1 <= k <= n:
        raise DataselectError(f"--k {k}: must be between 1 and the pool size ({n:,})")
    if pca_dim and not 0 < pca_dim < store.dim:
        raise DataselectError(f"--pca-dim {pca_dim}: must be between 1 and the dimension {store.dim}")
    params = {"k": k, "niter": niter, "seed": seed, "spherical": spherical,
              "max_points_per_centroid": max_points_per_centroid, "pca_dim": pca_dim}
    key = hashlib.sha256(json.dumps({**params, "store": store.hash}, sort_keys=True).encode()).hexdigest()[:16]
    folder = store.path / "clusterings" / key
    if cache and (folder / "meta.json").is_file():
        return Clustering.load(folder, store)
    train = read_positions(store, sample_positions(n, k * max_points_per_centroid, seed))
    pca = None
    if pca_dim:
        pca = faiss.PCAMatrix(store.dim, pca_dim)
        pca.train(train)
        train = pca.apply(train)
    centroids = kmeans_fit(train, k, niter=niter, seed=seed, spherical=spherical,
                           max_points_per_centroid=max_points_per_centroid)
    del train
    labels = np.empty(n, dtype=np.int32)
    dist2 = np.empty(n, dtype=np.float32)
    index = faiss.IndexFlatL2(centroids.shape[1])
    index.add(centroids)
    for start, block in iter_float_blocks(store):
        x = pca.apply(block) if pca is not None else block
        d2, lab = index.search(x, 1)
        labels[start:start + len(block)] = lab[:, 0]
        dist2[start:start + len(block)] = d2[:, 0]
    meta = {**params, "store_hash": store.hash, "n": n}
    clustering = Clustering(centroids, labels, dist2, store.rows(), meta, pca)
    if cache:
        with atomic_dir(folder, overwrite=True) as tmp:
            np.save(tmp / "centroids.npy", centroids)
            np.save(tmp / "labels.npy", labels)
            np.save(tmp / "dist2.npy", dist2)
            if pca is not None:
                faiss.write_VectorTransform(pca, str(tmp / "pca.faiss"))
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return clustering
