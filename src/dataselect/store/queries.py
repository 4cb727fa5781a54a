"""Query stores beside a pool store: embedded the same way, stacked by task."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dataselect.errors import DataselectError
from dataselect.store.reader import Store


def check_compatible(pool: Store, other: Store, what: str = "query store") -> None:
    """Refuse a store embedded differently from the pool (model, revision, pooling, template, dims)."""
    a, b = pool.config, other.config
    checks = [("model", a.model.name, b.model.name), ("model revision", a.model.revision, b.model.revision),
              ("pooling", a.pooling, b.pooling), ("template", a.template, b.template),
              ("BOS handling (--bos)", a.bos, b.bos), ("dimensions", a.dim, b.dim)]
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


def query_texts(queries: Sequence[Store], names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Prompt text and task of every query, in the row order of :func:`dataselect.store.queries.query_matrix`."""
    texts = np.concatenate([q.column("text") if "text" in q.columns else np.array([""] * q.n_rows, dtype=object)
                            for q in queries])
    tasks = np.concatenate([q.column("task") for q in queries])
    order = np.argsort([names.index(t) for t in tasks], kind="stable")
    return texts[order], tasks[order]
