"""Writing one shard: an Arrow IPC file, written under a temporary name and renamed into place."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa

from dataselect.atomic import atomic_path


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


def write_shard(path, columns: dict[str, pa.Array]) -> dict:
    """Write ``columns`` as one record batch to ``path`` atomically; return its size and sha256."""
    path = Path(path)
    batch = pa.RecordBatch.from_pydict(columns)
    with atomic_path(path) as tmp:
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, batch.schema) as writer:
            writer.write_batch(batch)
        digest = file_sha256(tmp)
    return {"bytes": path.stat().st_size, "sha256": digest}
