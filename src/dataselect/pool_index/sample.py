"""Uniform row samples of a store, read shard by shard (sorted positions, one pass)."""

from __future__ import annotations

import numpy as np

from dataselect.scoring import half_to_float
from dataselect.store import Store


def sample_positions(n: int, size: int, seed: int) -> np.ndarray:
    """Sorted positions of a uniform sample without replacement (all positions when size >= n)."""
    if size >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


def read_positions(store: Store, positions: np.ndarray) -> np.ndarray:
    """float32 embeddings at sorted store positions (0..n_rows-1), streaming the store once."""
    out = np.empty((len(positions), store.dim), dtype=np.float32)
    at = start = 0
    for block in store.iter_blocks(("embedding",)):
        b = len(block["embedding"])
        lo, hi = np.searchsorted(positions, [start, start + b])
        if hi > lo:
            half_to_float(block["embedding"][positions[lo:hi] - start], out[at:at + hi - lo])
            at += hi - lo
        start += b
    return out


def iter_float_blocks(store: Store, block_rows: int = 65536):
    """Yield (start position, float32 (b, dim) block) over the whole store."""
    start = 0
    buf = np.empty((block_rows, store.dim), dtype=np.float32)
    for block in store.iter_blocks(("embedding",), block_rows):
        b = len(block["embedding"])
        half_to_float(block["embedding"], buf[:b])
        yield start, buf[:b]
        start += b
