"""FAISS over a store: nearest-neighbour indexes and k-means (shared by the clustering selectors)."""

from dataselect.pool_index.index import INDEX_KINDS, PoolIndex, build_index
from dataselect.pool_index.kmeans import Clustering, cluster_store

__all__ = ["INDEX_KINDS", "Clustering", "PoolIndex", "build_index", "cluster_store"]
