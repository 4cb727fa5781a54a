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
deterministic too. float64 costs 2.5-2.7x float32 per block here (700 queries, conversion included).

``scoring="screened"`` gets the same scores at float32 speed: float32 products with a proven error
bound screen the pool, and every score that could reach the selection is computed by the exact path
(:mod:`dataselect.pool_index.screen`; the rds+ selector settles which). ``scoring="float32"`` keeps the
float32 products themselves, multiplied in fixed tiles so that each depends only on its row and
query (reproducible, not exact; :mod:`dataselect.pool_index.tiles`).

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
from dataselect.pool_index.screen import Float32Blocks, pair_sims
from dataselect.pool_index.tiles import TILE_ROWS, Float32Tiles, float32_reproducible
from dataselect.store import Store
from dataselect.torchcpu import half_to_float, single_torch_thread

BLOCK_BYTES = 16 << 20
RESCORE_ROWS = 512  # rows rescored exactly at a time
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


def task_score(sims: np.ndarray, aggregate: str) -> np.ndarray:
    """(b, q) similarities of one task's queries -> (b,) float32: their max, or their mean summed in
    query order (one addition per query across the rows, so a row's sum never depends on how many
    rows share the call)."""
    if aggregate == "max":
        return sims.max(axis=1).astype(np.float32) if sims.shape[1] else np.full(len(sims), -np.inf, np.float32)
    total = np.zeros(len(sims), np.float64)
    for j in range(sims.shape[1]):
        total += sims[:, j]
    return (total / sims.shape[1]).astype(np.float32)


def reduce_tasks(sims: np.ndarray, starts: np.ndarray, aggregate: str) -> np.ndarray:
    """(b, q) similarities -> (b, T) float32 task scores (max or mean over each task's queries)."""
    if aggregate == "max":
        return np.maximum.reduceat(sims, starts, axis=1).astype(np.float32)
    ends = np.append(starts[1:], sims.shape[1])
    return np.stack([task_score(sims[:, s:e], aggregate) for s, e in zip(starts, ends, strict=True)], axis=1)


def score_block(emb: np.ndarray, Q: np.ndarray, starts: np.ndarray, aggregate: str = "max",
                buffers: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """(b, dim) embeddings -> (b, T) float32 task scores: max (or mean) cosine over each task's queries."""
    return reduce_tasks(exact_sims(emb, Q, buffers), starts, aggregate)


@dataclass
class TaskScores:
    """Task scores of pool rows: ``rows`` (N,) int64 ascending, ``scores`` (N, T) float32, ``final``
    (N, T) bool (the score is the one a selection uses: exact, or under ``scoring="float32"`` the
    reproducible float32 one; else a float32 screen of the exact one) and ``bound`` (N,) float64 (how
    far a screen can be from the exact score; 0 where nothing is screened)."""

    rows: np.ndarray
    scores: np.ndarray
    final: np.ndarray
    bound: np.ndarray

    def __iter__(self):  # rows, scores, final, bound = task_scores(...)
        return iter((self.rows, self.scores, self.final, self.bound))

    @classmethod
    def empty(cls, n: int, T: int) -> TaskScores:
        return cls(np.zeros(n, np.int64), np.zeros((n, T), np.float32), np.zeros((n, T), bool), np.zeros(n))

    def fill(self, at: int, part: TaskScores) -> None:
        """Copy ``part`` (consecutive rows) in from position ``at``."""
        end = at + len(part.rows)
        self.rows[at:end], self.scores[at:end], self.final[at:end], self.bound[at:end] = part

    @classmethod
    def concat(cls, parts: list[TaskScores]) -> TaskScores:
        """Parts of disjoint shard groups, in shard order (a shard task's merge), as one."""
        return parts[0] if len(parts) == 1 else cls(*(np.concatenate(a) for a in zip(*parts, strict=True)))


def task_scores(pool: Store, Q: np.ndarray, starts: np.ndarray, aggregate: str = "max", block_rows: int = 0,
                shards: list[int] | None = None, device=None, progress: bool = False, scoring: str = "exact",
                floors: np.ndarray | None = None) -> TaskScores:
    """Stream the pool (or some of its shards) into per-task scores, in pool order.

    ``scoring="exact"``: every product in float64 (module docstring), on the CPU or a CUDA ``device``.
    ``"float32"`` (CPU): reproducible float32 products (:class:`~dataselect.pool_index.tiles.Float32Tiles`).
    ``"screened"`` (CPU): float32 products (:mod:`dataselect.pool_index.screen`); where a row's
    screened score plus its bound reaches ``floors[t]`` (a task's lowest score that may still be
    selected; None: nowhere), task t's score is recomputed exactly in the same pass.
    """
    if aggregate not in AGGREGATES:
        raise DataselectError(f"--aggregate {aggregate!r}: choose from {', '.join(AGGREGATES)}")
    from dataselect.progress import bar

    T = len(starts)
    ends = np.append(starts[1:], len(Q))
    n = rows_in(pool, shards)
    gpu = device is not None and torch.device(device).type == "cuda"
    screened = scoring == "screened" and not gpu
    out = TaskScores(np.empty(n, np.int64), np.empty((n, T), np.float32), np.full((n, T), not screened),
                     np.zeros(n, np.float64))
    if screened:
        block_rows = block_rows or block_rows_for(pool.dim, Q.shape[0])
        screen, Q64 = Float32Blocks(pool.dim, Q, block_rows), np.asarray(Q, dtype=np.float64)
    else:
        sims, block_rows = block_scorer(pool.dim, Q, block_rows, device, scoring)
    at = 0
    with single_torch_thread(), bar(n, "score", enabled=progress) as pbar:
        for block in pool.iter_blocks(("row", "embedding"), block_rows, shards):
            b = len(block["row"])
            out.rows[at:at + b] = block["row"]
            if not screened:
                out.scores[at:at + b] = reduce_tasks(sims(block["embedding"]), starts, aggregate)
            else:
                s32, bound, x = screen(block["embedding"])
                scores = reduce_tasks(s32, starts, aggregate)
                out.scores[at:at + b], out.bound[at:at + b] = scores, bound
                if floors is not None:
                    need = scores + bound[:, None] >= floors[None, :]
                    for t in range(T):
                        sel = np.flatnonzero(need[:, t])
                        if len(sel):
                            out.scores[at + sel, t] = exact_task_scores(x, s32, scores[:, t], bound, sel,
                                                                        screen.Q32, Q64, starts[t], ends[t],
                                                                        aggregate)
                            out.final[at + sel, t] = True
            at += b
            pbar.update(b)
    return out


def exact_task_scores(x: np.ndarray, s32: np.ndarray, screened: np.ndarray, bound: np.ndarray, sel: np.ndarray,
                      Q32: np.ndarray, Q64: np.ndarray, lo: int, hi: int, aggregate: str) -> np.ndarray:
    """Exact scores of block rows ``sel`` for the task of queries ``lo:hi``, from the block's float32
    rows ``x``, screened similarities ``s32`` and task scores ``screened``.

    ``max``: only the queries whose screened similarity is within twice the bound of the row's screened
    max can hold the exact max (any other is below it even exactly), so only those pairs are computed
    -- usually one or two per row instead of every query of the task. ``mean`` needs every query.
    """
    if aggregate != "max":
        return task_score(x[sel].astype(np.float64) @ Q64[lo:hi].T, aggregate)
    r, c = np.nonzero(s32[sel, lo:hi] >= (screened[sel] - 2 * bound[sel])[:, None])
    sims = pair_sims(x, Q32, Q64, sel[r], lo + c)
    first = np.flatnonzero(np.r_[True, r[1:] != r[:-1]])  # every row has one: its screened argmax
    return np.maximum.reduceat(sims, first).astype(np.float32)


def score_tasks(pool: Store, Q: np.ndarray, starts: np.ndarray, aggregate: str = "max",
                block_rows: int = 0, shards: list[int] | None = None, device=None,
                progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Exact task scores of every row: (rows (N,) int64, scores (N, T) float32) in pool order.

    ``device``: a CUDA ``torch.device`` streams float16 blocks to the GPU and multiplies there (the
    same exact float64 products); None or CPU uses numpy BLAS.
    """
    got = task_scores(pool, Q, starts, aggregate, block_rows, shards, device, progress)
    return got.rows, got.scores


def rescore(store: Store, Q: np.ndarray, starts: np.ndarray, aggregate: str, rows: np.ndarray, need: np.ndarray,
            shards: list[int] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact scores of some (row, task) pairs: ``rows`` (r,) ascending pool rows, ``need`` (r, T) bool.

    Returns (index into ``rows``, task, exact float32 score) of every needed pair in ``shards``."""
    ends = np.append(starts[1:], len(Q))
    Q64 = np.asarray(Q, dtype=np.float64)
    got: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    with single_torch_thread():
        for block in store.iter_blocks(("row", "embedding"), RESCORE_ROWS, shards):  # float64 rows: 16 MiB at 4096
            br = np.asarray(block["row"], np.int64)
            if not len(br):
                continue
            lo, hi = np.searchsorted(rows, br[0]), np.searchsorted(rows, br[-1], side="right")
            if lo == hi:
                continue
            pos = np.searchsorted(br, rows[lo:hi])
            hit = br[np.minimum(pos, len(br) - 1)] == rows[lo:hi]
            idx, pos = np.arange(lo, hi)[hit], pos[hit]
            X = np.empty((len(pos), store.dim), np.float64)
            half_to_float(np.ascontiguousarray(block["embedding"][pos]), X)
            for t in range(len(starts)):
                sel = np.flatnonzero(need[idx, t])
                if len(sel):
                    got.append((idx[sel], np.full(len(sel), t, np.int64),
                                task_score(X[sel] @ Q64[starts[t]:ends[t]].T, aggregate)))
    if not got:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    return tuple(np.concatenate(x) for x in zip(*got, strict=True))


def block_scorer(dim: int, Q: np.ndarray, block_rows: int = 0, device=None, scoring: str = "exact"):
    """A function (b, dim) float16 rows -> (b, q) similarities, on the CPU or a CUDA device, and the
    block size to feed it: exact float64 ones, or with ``scoring="float32"`` on the CPU reproducible
    float32 ones (:class:`~dataselect.pool_index.tiles.Float32Tiles`, on the threads torch had when
    this was called)."""
    gpu = device is not None and torch.device(device).type == "cuda"
    block_rows = block_rows or (1 << 16 if gpu else block_rows_for(dim, Q.shape[0]))
    if gpu:
        return _gpu_sims(Q, torch.device(device)), block_rows
    if scoring == "float32":  # whole tiles: a block's last tile is padded, so blocks are sized in tiles
        if not float32_reproducible(dim, len(Q)):  # a worker unlike the driver's machine (cached: once a process)
            raise DataselectError(f"float32 products are not reproducible on this machine at {dim} x {len(Q)}; "
                                  "run rds+ with --scoring screened (or exact)")
        block_rows = -(-block_rows // TILE_ROWS) * TILE_ROWS
        return Float32Tiles(dim, Q, block_rows), block_rows
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
                       device=None, progress: bool = False, scoring: str = "exact") -> tuple[np.ndarray, np.ndarray]:
    """Each query's ``m`` best pool rows by exact cosine, best first, ties to the lower row number.

    Returns ``rows`` and ``scores`` (float64), both (q, m) (``m`` clipped to the rows scanned). The pool
    is streamed once; memory holds about 3 q m candidates. ``scoring="screened"`` (CPU) multiplies in
    float32 and computes exactly only the pairs whose screened score plus its bound reaches the
    query's current m-th best exact score, so the candidates and scores are those of ``"exact"``.
    """
    from dataselect.progress import bar

    nq = len(Q)
    n = rows_in(pool, shards)
    m = max(1, min(m, n))
    gpu = device is not None and torch.device(device).type == "cuda"
    if scoring == "screened" and not gpu:
        block_rows = block_rows or block_rows_for(pool.dim, nq)
        screen, Q64 = Float32Blocks(pool.dim, Q, block_rows), np.asarray(Q, dtype=np.float64)

        def candidates(emb, thresh):
            s32, bound, x = screen(emb)
            i, q = np.nonzero(s32 + bound[:, None] >= thresh)
            exact = pair_sims(x, screen.Q32, Q64, i, q)
            keep = exact > thresh[q]
            return i[keep], q[keep], exact[keep]
    else:
        score, block_rows = block_scorer(pool.dim, Q, block_rows, device, scoring)

        def candidates(emb, thresh):
            sims = score(emb)  # (b, nq) exact
            i, q = np.nonzero(sims > thresh)
            return i, q, sims[i, q]
    thresh = np.full(nq, -np.inf)
    kept = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64))
    parts, held = [kept], 0
    limit = max(2 * m * nq, 1 << 20)
    with single_torch_thread(), bar(n, "score queries", enabled=progress) as pbar:
        for block in pool.iter_blocks(("row", "embedding"), block_rows, shards):
            i, q, sims = candidates(block["embedding"], thresh)
            parts.append((q.astype(np.int64), np.asarray(block["row"], np.int64)[i], sims))
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
    """RDS+ task scores of some shards (:func:`task_scores`): a :class:`TaskScores`."""

    Q: np.ndarray
    starts: np.ndarray
    aggregate: str = "max"
    block_rows: int = 0
    device: str | None = None
    progress: bool = False
    scoring: str = "exact"
    floors: np.ndarray | None = None

    def run(self, store: Store, shards: list[int]) -> TaskScores:
        return task_scores(store, self.Q, self.starts, self.aggregate, self.block_rows, shards=shards,
                           device=self.device, progress=self.progress, scoring=self.scoring, floors=self.floors)

    def merge(self, parts):
        return TaskScores.concat(parts)


@dataclass
class RescoreTask(ShardTask):
    """Exact scores of some (row, task) pairs of some shards (:func:`rescore`)."""

    Q: np.ndarray
    starts: np.ndarray
    aggregate: str
    rows: np.ndarray
    need: np.ndarray

    def run(self, store: Store, shards: list[int]):
        return rescore(store, self.Q, self.starts, self.aggregate, self.rows, self.need, shards)

    def merge(self, parts):
        return tuple(np.concatenate(x) for x in zip(*parts, strict=True))


@dataclass
class TopRowsTask(ShardTask):
    """Each query's ``m`` best rows of some shards (:func:`top_rows_per_query`), merged exactly."""

    Q: np.ndarray
    m: int
    block_rows: int = 0
    device: str | None = None
    progress: bool = False
    scoring: str = "exact"

    def run(self, store: Store, shards: list[int]):
        return top_rows_per_query(store, self.Q, self.m, self.block_rows, shards=shards, device=self.device,
                                  progress=self.progress, scoring=self.scoring)

    def merge(self, parts):
        return parts[0] if len(parts) == 1 else merge_top_rows(parts, self.m)
