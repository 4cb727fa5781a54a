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

from collections.abc import Sequence

import numpy as np

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


def block_rows_for(dim: int, n_queries: int) -> int:
    return int(max(1024, min(BLOCK_BYTES // (4 * dim), BLOCK_BYTES // (4 * max(n_queries, 1)))))


def score_block(emb: np.ndarray, Q: np.ndarray, starts: np.ndarray, aggregate: str = "max") -> np.ndarray:
    """(b, dim) embeddings -> (b, T) task scores: max (or mean) cosine over each task's queries."""
    sims = emb.astype(np.float32, copy=False) @ Q.T
    if aggregate == "max":
        return np.maximum.reduceat(sims, starts, axis=1)
    sizes = np.diff(np.append(starts, Q.shape[0]))
    return np.add.reduceat(sims, starts, axis=1) / sizes


def score_tasks(pool: Store, Q: np.ndarray, starts: np.ndarray, aggregate: str = "max",
                block_rows: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Stream the pool: returns (rows (N,) int64, scores (N, T) float32) in pool order."""
    if aggregate not in AGGREGATES:
        raise DataselectError(f"--aggregate {aggregate!r}: choose from {', '.join(AGGREGATES)}")
    n, T = pool.n_rows, len(starts)
    rows = np.empty(n, dtype=np.int64)
    scores = np.empty((n, T), dtype=np.float32)
    block_rows = block_rows or block_rows_for(pool.dim, Q.shape[0])
    at = 0
    for block in pool.iter_blocks(("row", "embedding"), block_rows):
        b = len(block["row"])
        rows[at:at + b] = block["row"]
        scores[at:at + b] = score_block(block["embedding"], Q, starts, aggregate)
        at += b
    return rows, scores
