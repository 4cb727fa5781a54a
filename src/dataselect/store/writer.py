"""Writing one shard: an Arrow IPC file, written under a temporary name and renamed into place."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pyarrow as pa

from dataselect.atomic import atomic_path, with_path


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.arrow"


def embedding_array(emb: np.ndarray) -> pa.FixedSizeListArray:
    """(n, dim) array -> ``fixed_size_list<float16>[dim]`` without a Python loop."""
    emb = np.ascontiguousarray(emb, dtype=np.float16)
    return pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), emb.shape[1])


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def file_xxh3(path: Path) -> str:
    """xxh3-64 of a file's bytes (about 30 GiB/s here: cheap enough to check on every read)."""
    import mmap

    import xxhash

    with open(path, "rb") as fh:
        if os.fstat(fh.fileno()).st_size == 0:
            return xxhash.xxh3_64(b"").hexdigest()
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            return xxhash.xxh3_64(mm).hexdigest()


def column_xxh3(path: Path, columns=None) -> dict[str, str]:
    """xxh3-64 of each column's Arrow buffers in the shard file at ``path`` (all columns, or ``columns``).

    Reading only some columns of a mapped shard touches only their pages; so does checking them.
    """
    import xxhash

    with pa.memory_map(str(path)) as mm:
        reader = pa.ipc.open_file(mm)
        names = reader.schema.names if columns is None else [c for c in columns if c in reader.schema.names]
        digests = {name: xxhash.xxh3_64() for name in names}
        for i in range(reader.num_record_batches):
            batch = reader.get_batch(i)
            for name in names:
                for array in _arrays(batch.column(name)):
                    for buf in array.buffers():
                        if buf is not None:
                            digests[name].update(buf)
        return {name: d.hexdigest() for name, d in digests.items()}


def _arrays(array: pa.Array):
    yield array
    if pa.types.is_fixed_size_list(array.type) or pa.types.is_list(array.type):
        yield from _arrays(array.values)


def write_shard(path, columns: dict[str, pa.Array]) -> dict:
    """Write ``columns`` as one record batch to ``path`` atomically; return its size, sha256, the
    xxh3 of the file and of each column."""
    path = Path(path)
    batch = pa.RecordBatch.from_pydict(columns)
    with atomic_path(path) as tmp:
        try:
            with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, batch.schema) as writer:
                writer.write_batch(batch)
        except OSError as exc:
            raise with_path(exc, path) from exc
        digest, fast, per_column = file_sha256(tmp), file_xxh3(tmp), column_xxh3(tmp)
    return {"bytes": path.stat().st_size, "sha256": digest, "xxh3": fast, "xxh3_columns": per_column}
