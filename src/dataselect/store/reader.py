"""Reading a store memory-mapped, shard by shard, without loading it whole.

Blocks are zero-copy numpy views of the mapped Arrow buffers; a shard's mapping is released as soon
as nothing refers to its views, so scanning a store keeps at most one shard (plus whatever the
caller keeps) resident.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa

from dataselect.errors import DataselectError
from dataselect.store.manifest import load_manifest


def _column_numpy(batch: pa.RecordBatch, name: str, dim: int) -> np.ndarray:
    col = batch.column(name)
    if name == "embedding":
        values = col.values.to_numpy(zero_copy_only=True)
        return values[col.offset * dim:(col.offset + len(col)) * dim].reshape(len(col), dim)
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        return np.asarray(col.to_pylist(), dtype=object)
    return col.to_numpy(zero_copy_only=False)


class Store:
    """A complete (or in-progress, with ``allow_incomplete``) embedding store.

    Attributes: ``manifest`` (dict), ``dim`` (int), ``n_rows`` (rows stored), ``kind``
    ("pool"|"queries"), ``shards`` (manifest entries), ``hash`` (the store hash).
    """

    def __init__(self, path, allow_incomplete: bool = False):
        self.path = Path(path)
        self.manifest = load_manifest(self.path)
        if not self.manifest.get("complete") and not allow_incomplete:
            raise DataselectError(f"{self.path}: store is incomplete (`dataselect embed` or `dataselect score` "
                                  "was interrupted); re-run the same command to finish it")
        cfg = self.manifest["config"]
        self.config = cfg
        self.dim = int(cfg["dim"])
        self.kind = self.manifest.get("kind", "pool")
        self.shards = self.manifest["shards"]
        self.n_rows = sum(s["rows_stored"] for s in self.shards)
        self.hash = self.manifest.get("store_hash", "")
        self._starts = np.array([s["first_row"] for s in self.shards], dtype=np.int64)
        for s in self.shards:
            if not (self.path / s["file"]).is_file():
                raise DataselectError(f"{self.path / s['file']}: shard listed in the manifest is missing")

    def __len__(self) -> int:
        return self.n_rows

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r}, kind={self.kind}, rows={self.n_rows}, dim={self.dim})"

    @property
    def columns(self) -> list[str]:
        if not self.shards:
            return []
        with pa.memory_map(str(self.path / self.shards[0]["file"])) as mm:
            return pa.ipc.open_file(mm).schema.names

    def _batches(self, shard: dict) -> Iterator[pa.RecordBatch]:
        mm = pa.memory_map(str(self.path / shard["file"]))
        reader = pa.ipc.open_file(mm)
        for i in range(reader.num_record_batches):
            yield reader.get_batch(i)

    def iter_blocks(self, columns=("row", "embedding"), block_rows: int | None = None,
                    shards: list[int] | None = None) -> Iterator[dict[str, np.ndarray]]:
        """Yield dicts of numpy arrays, shard by shard (``block_rows`` splits shards further).

        ``embedding`` comes as a zero-copy (n, dim) float16 view of the mapped file; copy what you keep.
        ``shards`` restricts the scan to those shard indexes (one Ray task scores one shard).
        """
        for shard in (self.shards if shards is None else [self.shards[i] for i in shards]):
            for batch in self._batches(shard):
                arrays = {c: _column_numpy(batch, c, self.dim) for c in columns}
                n = batch.num_rows
                step = block_rows or n or 1
                for lo in range(0, n, step):
                    yield {c: a[lo:lo + step] for c, a in arrays.items()}
                del arrays, batch

    def column(self, name: str) -> np.ndarray:
        """One scalar column over the whole store, in pool order (e.g. ``row``, ``loss_response``)."""
        if name not in self.columns:
            raise DataselectError(f"{self.path}: store has no column {name!r} (columns: {', '.join(self.columns)})")
        parts = [b[name].copy() if b[name].dtype != object else b[name] for b in self.iter_blocks((name,))]
        if not parts:
            return np.zeros(0)
        return np.concatenate(parts)

    def rows(self) -> np.ndarray:
        """Pool row numbers of all stored rows (int64, ascending)."""
        return self.column("row").astype(np.int64)

    def take(self, rows, columns=("embedding",)) -> dict[str, np.ndarray]:
        """Random access by pool row number -> arrays in the order of ``rows`` (embedding as float32)."""
        rows = np.asarray(rows, dtype=np.int64)
        shard_of = np.searchsorted(self._starts, rows, side="right") - 1
        parts: dict[str, list] = {c: [] for c in columns}
        for si in np.unique(shard_of):
            want = np.nonzero(shard_of == si)[0]
            if si < 0:
                raise DataselectError(f"row {int(rows[want[0]])} is not in {self.path}")
            for batch in self._batches(self.shards[si]):
                brows = batch.column("row").to_numpy()
                pos = np.searchsorted(brows, rows[want])
                ok = (pos < len(brows)) & (brows[np.minimum(pos, len(brows) - 1)] == rows[want])
                if not ok.all():
                    raise DataselectError(f"row {int(rows[want][~ok][0])} is not stored in {self.path} "
                                          "(skipped as invalid, or out of range)")
                for c in columns:
                    vals = _column_numpy(batch, c, self.dim)[pos]
                    parts[c].append((want, vals.astype(np.float32) if c == "embedding" else vals))
        result = {}
        for c in columns:
            if not parts[c]:
                shape = (0, self.dim) if c == "embedding" else (0,)
                result[c] = np.zeros(shape, dtype=np.float32 if c == "embedding" else object)
                continue
            sample = parts[c][0][1]
            out = np.empty((len(rows), *sample.shape[1:]), dtype=sample.dtype)
            for want, vals in parts[c]:
                out[want] = vals
            result[c] = out
        return result

    def embeddings(self, dtype=np.float32) -> np.ndarray:
        """All embeddings in memory as (n_rows, dim) -- only for stores known to be small (queries)."""
        parts = [b["embedding"].astype(dtype) for b in self.iter_blocks(("embedding",))]
        return np.concatenate(parts) if parts else np.zeros((0, self.dim), dtype=dtype)


def open_store(path, kind: str | None = None) -> Store:
    """Open a complete store; ``kind`` ("pool"/"queries") is checked when given."""
    store = Store(path)
    if kind and store.kind != kind:
        raise DataselectError(f"{path}: is a {store.kind} store, expected a {kind} store")
    return store
