"""Out-of-core similarity scoring of a pool store against target-task queries.

The pool is streamed shard by shard (memory-mapped) in blocks of ``block_rows``; each block is
converted to float32 and multiplied with the query matrix (queries x dim), and the per-query
similarities are reduced to per-task scores at once. Only ``pool x tasks`` float32 scores are kept.

Peak memory, for a pool of N rows, dim D, Q queries over T tasks and blocks of B rows::

    N*T*4 (scores) + N*8 (row numbers) + B*D*4 (float32 block) + B*Q*4 (similarities) + Q*D*4
    + one shard's mapped pages while it is read

-- it does not grow with N*D: the embeddings themselves are never all in memory.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Sequence

import numpy as np
import torch

from dataselect.errors import DataselectError
from dataselect.store import Store

BLOCK_BYTES = 16 << 20
AGGREGATES = ("max", "mean")


def check_compatible(pool: Store, other: Store, what: str = "query store") -> None:
    """Refuse a store embedded differently from the pool (model, revision, pooling, template, dims)."""
    a, b = pool.config, other.config
    checks = [("model", a["model"]["name"], b["model"]["name"]),
              ("model revision", a["model"]["revision"], b["model"]["revision"]),
              ("pooling", a["pooling"], b["pooling"]), ("template", a["template"], b["template"]),
              ("dimensions", a["dim"], b["dim"])]
    for label, x, y in checks:
        if x != y:
            raise DataselectError(f"{what} {other.path} was embedded with {label} {y!r} but the pool store "
                                  f"{pool.path} with {x!r}; embed both the same way")


def query_matrix(pool: Store, queries: Sequence[Store]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Stack query embeddings grouped by task.

    Returns ``Q`` (q, dim) float32 with each task's queries contiguous, ``starts`` (T,) the first
    index of each task in ``Q``, and the task names in order of first appearance.
    """
    if not queries:
        raise DataselectError("this method needs query stores: --queries STORE [STORE ...]")
    embs, tasks = [], []
    for q in queries:
        if q.kind != "queries":
            raise DataselectError(f"{q.path}: is a {q.kind} store; make query stores with `dataselect embed "
                                  "QUERIES --task NAME`")
        check_compatible(pool, q)
        if q.n_rows == 0:
            raise DataselectError(f"{q.path}: query store holds no queries")
        embs.append(q.embeddings())
        tasks += list(q.column("task"))
    emb = np.concatenate(embs)
    names = list(dict.fromkeys(tasks))
    task_idx = np.array([names.index(t) for t in tasks])
    order = np.argsort(task_idx, kind="stable")
    starts = np.searchsorted(task_idx[order], np.arange(len(names)))
    return np.ascontiguousarray(emb[order]), starts, names


def half_to_float(src: np.ndarray, dst: np.ndarray) -> None:
    """Copy a float16 array into a float32 one: torch's F16C-vectorised cast, ~15x numpy's on AVX2.

    Call it under :func:`single_torch_thread` when BLAS runs beside it: idle OpenMP workers of torch
    spin and steal the cores the next matrix multiply needs.
    """
    if src.dtype == np.float16:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # read-only mapped source: torch only reads it
            torch.from_numpy(dst).copy_(torch.from_numpy(np.ascontiguousarray(src)))
    else:
        np.copyto(dst, src)


@contextlib.contextmanager
def single_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def block_rows_for(dim: int, n_queries: int) -> int:
    return int(max(1024, min(BLOCK_BYTES // (4 * dim), BLOCK_BYTES // (4 * max(n_queries, 1)))))


def score_block(emb: np.ndarray, Q: np.ndarray, starts: np.ndarray, aggregate: str = "max",
                buffers: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """(b, dim) embeddings -> (b, T) task scores: max (or mean) cosine over each task's queries.

    ``buffers`` (a float32 (>=b, dim) array and a float32 (>=b, q) array) are reused between calls:
    converting into, and multiplying into, memory that is already mapped avoids the kernel zeroing
    fresh pages for every block, which costs as much as a fifth of the multiply.
    """
    b = len(emb)
    if buffers is None:
        buffers = (np.empty((b, Q.shape[1]), np.float32), np.empty((b, Q.shape[0]), np.float32))
    x, sims = buffers[0][:b], buffers[1][:b]
    half_to_float(emb, x)
    np.matmul(x, Q.T, out=sims)
    if aggregate == "max":
        return np.maximum.reduceat(sims, starts, axis=1)
    sizes = np.diff(np.append(starts, Q.shape[0]))
    return np.add.reduceat(sims, starts, axis=1) / sizes


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
    n = pool.n_rows if shards is None else sum(pool.shards[i]["rows_stored"] for i in shards)
    rows = np.empty(n, dtype=np.int64)
    scores = np.empty((n, T), dtype=np.float32)
    gpu = device is not None and torch.device(device).type == "cuda"
    block_rows = block_rows or (1 << 16 if gpu else block_rows_for(pool.dim, Q.shape[0]))
    if gpu:
        score = _gpu_scorer(Q, starts, aggregate, torch.device(device))
    else:
        buffers = (np.empty((block_rows, pool.dim), np.float32), np.empty((block_rows, Q.shape[0]), np.float32))

        def score(emb):
            return score_block(emb, Q, starts, aggregate, buffers)
    at = 0
    with single_torch_thread(), bar(n, "score", enabled=progress) as pbar:
        for block in pool.iter_blocks(("row", "embedding"), block_rows, shards):
            b = len(block["row"])
            rows[at:at + b] = block["row"]
            scores[at:at + b] = score(block["embedding"])
            at += b
            pbar.update(b)
    return rows, scores


def _gpu_scorer(Q: np.ndarray, starts: np.ndarray, aggregate: str, device: torch.device):
    """Block scorer on a GPU: float16 rows in, float32 products and per-task reduction there."""
    q = torch.as_tensor(Q, dtype=torch.float32, device=device)
    bounds = list(zip(starts.tolist(), [*starts[1:].tolist(), len(Q)], strict=True))

    def score(emb: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # read-only mapped source: only copied
            x = torch.from_numpy(np.ascontiguousarray(emb)).to(device, non_blocking=False).float()
        sims = x @ q.T
        reduce = (lambda s: s.amax(1)) if aggregate == "max" else (lambda s: s.mean(1))
        return torch.stack([reduce(sims[:, lo:hi]) for lo, hi in bounds], 1).cpu().numpy()

    return score
