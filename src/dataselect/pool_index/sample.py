"""Rows of a store read onto a device: uniform samples, chosen positions, or all of it in blocks.

Everything streams shard by shard in one pass over sorted positions; on the CPU rows arrive as
float32, on CUDA as float16 (the store's own precision) so that a large sample fits on the GPU.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from dataselect.progress import bar
from dataselect.store import Store
from dataselect.torchcpu import half_to_float, single_torch_thread


def sample_positions(n: int, size: int, seed: int) -> np.ndarray:
    """Sorted positions of a uniform sample without replacement (all positions when size >= n)."""
    if size >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


def read_positions(store: Store, positions: np.ndarray) -> np.ndarray:
    """float32 embeddings at sorted store positions (0..n_rows-1), streaming the store once."""
    return load_rows(store, positions, torch.device("cpu")).numpy()


def rows_at(store: Store, positions: np.ndarray, shards: list[int] | None = None):
    """Yield (offset into ``positions``, (m, dim) float16 view of the mapped file) for sorted store
    ``positions`` (with ``shards``: counted from the first row of those shards, only they read), in one
    streamed pass: the one read of stored rows at given positions."""
    positions = np.asarray(positions, dtype=np.int64)
    at = start = 0
    for block in store.iter_blocks(("embedding",), shards=shards):
        b = len(block["embedding"])
        lo, hi = np.searchsorted(positions, [start, start + b])
        if hi > lo:
            yield at, block["embedding"][positions[lo:hi] - start]
            at += hi - lo
        start += b


def load_rows(store: Store, positions: np.ndarray, device: torch.device, progress: bool = False,
              shards: list[int] | None = None, dtype: str = "float32") -> torch.Tensor:
    """Embeddings at sorted store ``positions`` as a (len, dim) tensor on ``device`` (``shards``: see
    :func:`rows_at`).

    On the CPU float32 (``dtype="float16"``: the stored values as they are, in half the memory);
    float16 on CUDA (copied there block by block: the host never holds them all).
    """
    cpu = device.type == "cpu"
    half = not cpu or dtype == "float16"
    out = torch.empty((len(positions), store.dim), dtype=torch.float16 if half else torch.float32, device=device)
    with bar(len(positions), "read sample", enabled=progress and len(positions) > 0) as pbar, single_torch_thread():
        for at, rows in rows_at(store, positions, shards):
            if cpu and half:
                np.copyto(out[at:at + len(rows)].numpy(), rows)
            elif cpu:
                half_to_float(rows, out[at:at + len(rows)].numpy())
            else:
                out[at:at + len(rows)] = torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float16)).to(device)
            pbar.update(len(rows))
    return out


def gather_rows(store: Store, positions: np.ndarray) -> np.ndarray:
    """Rows at store ``positions`` in the order given (any order, no repeats) as (m, dim) float16 on the
    host, in one streamed pass."""
    positions = np.asarray(positions, dtype=np.int64)
    order = np.argsort(positions, kind="stable")
    out = np.empty((len(positions), store.dim), dtype=np.float16)
    for at, rows in rows_at(store, positions[order]):
        out[order[at:at + len(rows)]] = rows
    return out


def device_blocks(store: Store, device: torch.device, block_rows: int = 32768, shards: list[int] | None = None):
    """Yield (start position, (b, dim) tensor) over the whole store (or ``shards`` of it: positions then
    count from the first of them) on ``device``.

    On the CPU the float32 block is a reused buffer: use it before asking for the next one.
    """
    start = 0
    cpu = device.type == "cpu"
    buf = np.empty((block_rows, store.dim), dtype=np.float32) if cpu else None
    for block in store.iter_blocks(("embedding",), block_rows, shards):
        emb = block["embedding"]
        b = len(emb)
        if cpu:
            with single_torch_thread():
                half_to_float(emb, buf[:b])
            yield start, torch.from_numpy(buf[:b])
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # read-only mapped source: only copied
                yield start, torch.from_numpy(np.ascontiguousarray(emb)).to(device)
        start += b


def iter_float_blocks(store: Store, block_rows: int = 65536):
    """Yield (start position, float32 (b, dim) numpy block) over the whole store."""
    for start, block in device_blocks(store, torch.device("cpu"), block_rows):
        yield start, block.numpy()
