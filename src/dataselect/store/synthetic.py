"""Stores written straight from vectors, for benchmarks and tests at sizes no model could embed here.

The files are real stores (same writer, manifest and checks as ``dataselect embed``), marked with
model name ``synthetic``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa

from dataselect.store.manifest import MANIFEST, ModelRef, PoolRef, ShardEntry, StoreConfig
from dataselect.store.writer import LOSS_COLUMNS, StoreWriter, embedding_array, shard_name, write_shard


def unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


_JOB: dict = {}  # what forked writer processes need (set before the pool starts)


def _write_one(job: tuple[int, int, int]) -> dict:
    k, lo, hi = job
    out, blocks, tasks, sources, extra = (_JOB[key] for key in ("out", "blocks", "tasks", "sources", "extra"))
    emb = blocks(lo, hi)
    cols = {"row": pa.array(np.arange(lo, hi, dtype=np.int64)),
            "id": pa.array([f"r{i}" for i in range(lo, hi)], pa.string()),
            "source": pa.array(sources[lo:hi] if sources else [None] * (hi - lo), pa.string())}
    if tasks is not None:
        cols["task"] = pa.array(tasks[lo:hi], pa.string())
    cols["embedding"] = embedding_array(emb)
    cols["n_tokens"] = pa.array(np.full(hi - lo, 100, dtype=np.int32))
    cols["truncated"] = pa.array(np.zeros(hi - lo, dtype=bool))
    for name, arr in (extra or {}).items():
        cols[name] = pa.array(np.asarray(arr(lo, hi) if callable(arr) else arr[lo:hi]))
    info = write_shard(out / shard_name(k), cols)
    return ShardEntry(file=shard_name(k), first_row=lo, end_row=hi, rows_stored=hi - lo, tokens=100 * (hi - lo),
                      loss_columns=[c for c in LOSS_COLUMNS if c in cols], **info)


def write_store(out, blocks: Callable[[int, int], np.ndarray], n_rows: int, dim: int,
                *, shard_rows: int = 50_000, kind: str = "pool", tasks: list[str] | None = None,
                sources: list[str] | None = None, extra: dict | None = None,
                model: str = "synthetic", workers: int = 1, progress: bool = False) -> Path:
    """Write a store of ``n_rows`` vectors. ``blocks(lo, hi)`` returns rows lo..hi as (hi-lo, dim).

    ``tasks`` (query stores) and ``sources`` give per-row strings; ``extra`` adds scalar columns
    (e.g. ``loss_response``), each an array or a function ``(lo, hi) -> values``. ``workers > 1``
    writes shards in forked processes: ``blocks`` must then depend on (lo, hi) alone, not on state
    shared between calls.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = StoreConfig(model=ModelRef(model, "synthetic"), pooling="rds+", template="tulu", max_length=2048, dim=dim,
                         with_loss=bool(extra), shard_rows=shard_rows, chunk_rows=shard_rows,
                         pool=PoolRef(f"{out.name}.jsonl", "synthetic", f"synthetic-{out.name}"))
    writer = StoreWriter.create(out, kind, config, {"name": model})
    jobs = [(k, lo, min(lo + shard_rows, n_rows)) for k, lo in enumerate(range(0, n_rows, shard_rows))]
    _JOB.update(out=out, blocks=blocks, tasks=tasks, sources=sources, extra=extra)
    from dataselect.progress import bar

    with bar(n_rows, "write store", enabled=progress) as pbar:
        if workers > 1:
            import multiprocessing

            with multiprocessing.get_context("fork").Pool(workers) as pool:
                for shard in pool.imap(_write_one, jobs):
                    writer.record_shard(shard)
                    pbar.update(shard.rows_stored)
        else:
            for job in jobs:
                writer.record_shard(_write_one(job))
    writer.finish()
    return out


def store_from_array(out, emb: np.ndarray, **kwargs) -> Path:
    """Write an in-memory (n, dim) array as a store."""
    return write_store(out, lambda lo, hi: emb[lo:hi], len(emb), emb.shape[1], **kwargs)


def clustered_store(out, n_rows: int, dim: int, modes: int = 64, seed: int = 0, with_loss: bool = False) -> Path:
    """A store of unit vectors around ``modes`` random centres (unit-variance noise); reused if present.

    ``with_loss`` adds a ``loss_response`` column that depends on the row's mode (plus noise).
    """
    out = Path(out)
    if (out / MANIFEST).exists():
        return out
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((modes, dim)).astype(np.float32)

    mode_loss = rng.gamma(4.0, 0.3, modes).astype(np.float32)
    mode = rng.integers(0, modes, n_rows)

    def block(lo: int, hi: int) -> np.ndarray:
        x = centres[mode[lo:hi]] + rng.standard_normal((hi - lo, dim), dtype=np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    extra = {"loss_response": mode_loss[mode] + rng.gamma(2.0, 0.05, n_rows).astype(np.float32)} if with_loss else None
    return write_store(out, block, n_rows, dim, extra=extra)
