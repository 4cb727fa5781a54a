"""RDS+ similarity kernels: out-of-core scoring of a pool store against target-task queries.

The pool is streamed shard by shard (memory-mapped) in blocks of ``block_rows``; each block is
converted to float64 and multiplied with the query matrix (queries x dim), and the per-query
similarities are reduced to per-task scores at once. Only ``pool x tasks`` float32 scores are kept.

Scores are exact. Stored embeddings are float16, so every component is a multiple of 2**-24 and
every product of a pool and a query component a multiple of 2**-48; for unit vectors the sum of
the products' magnitudes is at most about 1, so every partial sum, in any order, is a multiple of
2**-48 below 2**5 -- exactly representable in float64's 53 bits. The dot products therefore do not
depend on how BLAS blocks or threads the multiply: identical embeddings get identical scores
wherever they fall in a block, and a selection does not change with ``OMP_NUM_THREADS`` or
``--block-rows`` (ties are then broken by pool row). Rounding the exact value to float32 is
deterministic too. float64 costs 1.2-1.8x float32 per block here (few to 1,000 queries).

Peak memory, for a pool of N rows, dim D, Q queries over T tasks and blocks of B rows::

    N*T*4 (scores) + N*8 (row numbers) + B*D*8 (float64 block) + B*Q*8 (similarities) + Q*D*8
    + one shard's mapped pages while it is read

-- it does not grow with N*D: the embeddings themselves are never all in memory.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from dataselect.engines.executor import ShardTask
from dataselect.errors import DataselectError
from dataselect.store import Store
from dataselect.torchcpu import half_to_float, single_torch_thread

BLOCK_BYTES = 16 << 20
AGGREGATES = ("max", "mean")


def rows_in(pool: Store, shards: list[int] | None = None) -> int:
    """Rows stored in ``shards`` of ``pool`` (all of them by default)."""
    return pool.n_rows if shards is None else sum(pool.shards[i].rows_stored for i in shards)


def block_rows_for(dim: int, n_queries: int) -> int:
    return int(max(1024, min(BLOCK_BYTES // (8 * dim), BLOCK_BYTES // (8 * max(n_queries, 1)))))


def exact_sims(emb: np.ndarray, Q: np.ndarray, buffers: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """(b, dim) embeddings x (q, dim) queries -> (b, q) float64 dot products, exact (module docstring).

    ``buffers`` (a float64 (>=b, dim) array and a float64 (>=b, q) array) are reused between calls:
    converting into, and multiplying into, memory that is already mapped avoids the kernel zeroing
    fresh pages for every block, which costs as much as a fifth of the multiply.
    """
    b = len(emb)
    if buffers is None:
        buffers = (np.empty((b, Q.shape[1]), np.float64), np.empty((b, Q.shape[0]), np.float64))
    x, sims = buffers[0][:b], buffers[1][:b]
    half_to_float(emb, x)
    np.matmul(x, np.asarray(Q, dtype=np.float64).T, out=sims)
    return sims


def reduce_tasks(sims: np.ndarray, starts: np.ndarray, aggregate: str) -> np.ndarray:
    """(b, q) similarities -> (b, T) float32 task scores (max or mean over each task's queries)."""
    if aggregate == "max":
        return np.maximum.reduceat(sims, starts, axis=1).astype(np.float32)
    sizes = np.diff(np.append(starts, sims.shape[1]))
    return (np.add.reduceat(sims, starts, axis=1) / sizes).astype(np.float32)


def score_block(emb: np.ndarray, Q: np.ndarray, starts: np.ndarray, aggregate: str = "max",
                buffers: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """(b, dim) embeddings -> (b, T) float32 task scores: max (or mean) cosine over each task's queries."""
    return reduce_tasks(exact_sims(emb, Q, buffers), starts, aggregate)


def score_tasks(pool: Store, Q: np.ndarray, starts: np.ndarray, aggregate: str = "max",
                block_rows: int = 0, shards: list[int] | None = None, device=None,
                progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Stream the pool (or some of its shards): returns (rows (N,) int64, scores (N, T) float32) in pool order.

    ``device``: a CUDA ``torch.device`` streams float16 blocks to the GPU and multiplies there in
    float32 (same scores as the CPU path up to float rounding); None or CPU uses numpy BLAS.
    """
    if aggregate not in AGGREGATES:
        raise DataselectError(f"--aggregate {aggregate!r}: choose from {', '.join(AGGREGATES)}")
    from dataselect.progress import bar

    T = len(starts)
    n = rows_in(pool, shards)
    rows = np.empty(n, dtype=np.int64)
    scores = np.empty((n, T), dtype=np.float32)
    sims, block_rows = block_scorer(pool.dim, Q, block_rows, device)
    at = 0
    with single_torch_thread(), bar(n, "score", enabled=progress) as pbar:
        for block in pool.iter_blocks(("row", "embedding"), block_rows, shards):
            b = len(block["row"])
            rows[at:at + b] = block["row"]
            scores[at:at + b] = reduce_tasks(sims(block["embedding"]), starts, aggregate)
            at += b
            pbar.update(b)
    return rows, scores


def block_scorer(dim: int, Q: np.ndarray, block_rows: int = 0, device=None):
    """A function (b, dim) float16 rows -> (b, q) exact float64 similarities, on the CPU or a CUDA
    device, and the block size to feed it."""
    gpu = device is not None and torch.device(device).type == "cuda"
    block_rows = block_rows or (1 << 16 if gpu else block_rows_for(dim, Q.shape[0]))
    if gpu:
        return _gpu_sims(Q, torch.device(device)), block_rows
    buffers = (np.empty((block_rows, dim), np.float64), np.empty((block_rows, Q.shape[0]), np.float64))
    return (lambda emb: exact_sims(emb, Q, buffers)), block_rows


def _gpu_sims(Q: np.ndarray, device: torch.device):
    """Block similarities on a GPU: float16 rows in, exact float64 products there (as on the CPU)."""
    q = torch.as_tensor(np.asarray(Q, dtype=np.float64), device=device)

    def sims(emb: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # read-only mapped source: only copied
            x = torch.from_numpy(np.ascontiguousarray(emb)).to(device, non_blocking=False).double()
        return (x @ q.T).cpu().numpy()

    return sims


def _compact(q: np.ndarray, r: np.ndarray, s: np.ndarray, nq: int, m: int):
    """Keep each query's ``m`` best (score descending, ties by lower row): sorted by query, then rank."""
    order = np.lexsort((r, -s, q))
    q, r, s = q[order], r[order], s[order]
    first = np.searchsorted(q, np.arange(nq))
    rank = np.arange(len(q)) - first[q]
    keep = rank < m
    q, r, s = q[keep], r[keep], s[keep]
    counts = np.bincount(q, minlength=nq)
    thresh = np.full(nq, -np.inf)
    full = counts >= m
    if full.any():
        ends = np.searchsorted(q, np.arange(nq), side="right") - 1
        thresh[full] = s[ends[full]]
    return q, r, s, thresh


def top_rows_per_query(pool: Store, Q: np.ndarray, m: int, block_rows: int = 0, shards: list[int] | None = None,
                       device=None, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Each query's ``m`` best pool rows by exact cosine, best first, ties to the lower row number.

    Returns ``rows`` and ``scores`` (float64), both (q, m) (``m`` clipped to the rows scanned). The pool
    is streamed once; memory holds about 3 q m candidates.
    """
    from dataselect.progress import bar

    nq = len(Q)
    n = rows_in(pool, shards)
    m = max(1, min(m, n))
    score, block_rows = block_scorer(pool.dim, Q, block_rows, device)
    thresh = np.full(nq, -np.inf)
    kept = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64))
    parts, held = [kept], 0
    limit = max(2 * m * nq, 1 << 20)
    with single_torch_thread(), bar(n, "score queries", enabled=progress) as pbar:
        for block in pool.iter_blocks(("row", "embedding"), block_rows, shards):
            sims = score(block["embedding"])  # (b, nq) exact
            i, q = np.nonzero(sims > thresh)
            parts.append((q.astype(np.int64), np.asarray(block["row"], np.int64)[i], sims[i, q]))
            held += len(q)
            if held > limit:
                *kept, thresh = _compact(*(np.concatenate(x) for x in zip(*parts, strict=True)), nq, m)
                parts, held = [tuple(kept)], len(kept[0])
            pbar.update(len(block["row"]))
    q, r, s, _ = _compact(*(np.concatenate(x) for x in zip(*parts, strict=True)), nq, m)
    return r.reshape(nq, m), s.reshape(nq, m)


def merge_top_rows(parts: list[tuple[np.ndarray, np.ndarray]], m: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge :func:`top_rows_per_query` results of disjoint shards into each query's ``m`` best."""
    nq = parts[0][0].shape[0]
    q = np.concatenate([np.repeat(np.arange(nq), r.shape[1]) for r, _ in parts])
    r = np.concatenate([r.reshape(-1) for r, _ in parts])
    s = np.concatenate([s.reshape(-1) for _, s in parts])
    m = min(m, len(r) // nq)
    _, r, s, _ = _compact(q, r, s, nq, m)
    return r.reshape(nq, m), s.reshape(nq, m)


@dataclass
class ScoreTask(ShardTask):
    """RDS+ task scores of some shards (:func:`score_tasks`): (rows (N,), scores (N, T) float32)."""

    Q: np.ndarray
    starts: np.ndarray
    aggregate: str = "max"
    block_rows: int = 0
    device: str | None = None
    progress: bool = False

    def run(self, store: Store, shards: list[int]):
        return score_tasks(store, self.Q, self.starts, self.aggregate, self.block_rows, shards=shards,
                           device=self.device, progress=self.progress)

    def merge(self, parts):
        if len(parts) == 1:
            return parts[0]
        return np.concatenate([r for r, _ in parts]), np.concatenate([s for _, s in parts])


@dataclass
class TopRowsTask(ShardTask):
    """Each query's ``m`` best rows of some shards (:func:`top_rows_per_query`), merged exactly."""

    Q: np.ndarray
    m: int
    block_rows: int = 0
    device: str | None = None
    progress: bool = False

    def run(self, store: Store, shards: list[int]):
        return top_rows_per_query(store, self.Q, self.m, self.block_rows, shards=shards, device=self.device,
                                  progress=self.progress)

    def merge(self, parts):
        return parts[0] if len(parts) == 1 else merge_top_rows(parts, self.m)
