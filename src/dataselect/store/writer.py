"""Writing one shard: an Arrow IPC file, written under a temporary name and renamed into place."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pyarrow as pa

from dataselect.atomic import atomic_path, with_path
from dataselect.errors import DataselectError


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
    return scan_columns(path, columns)[0]


def scan_columns(path: Path, columns=None, finite=()) -> tuple[dict[str, str], str | None]:
    """One pass over a shard file: the xxh3 of ``columns`` (all when None) and what is NaN or inf in the
    ``finite`` columns (embedding, losses; see :func:`nonfinite_problem`), or None."""
    import xxhash

    with pa.memory_map(str(path)) as mm:
        reader = pa.ipc.open_file(mm)
        present = reader.schema.names
        names = present if columns is None else [c for c in columns if c in present]
        finite = [c for c in finite if c in present]
        digests = {name: xxhash.xxh3_64() for name in names}
        problem = None
        for i in range(reader.num_record_batches):
            batch = reader.get_batch(i)
            for name in names:
                for array in _arrays(batch.column(name)):
                    for buf in array.buffers():
                        if buf is not None:
                            digests[name].update(buf)
            if finite and problem is None:
                problem = nonfinite_problem(_numpy_columns({c: batch.column(c) for c in
                                                            ("row", *finite, "n_response_tokens") if c in present}))
        return {name: d.hexdigest() for name, d in digests.items()}, problem


def _arrays(array: pa.Array):
    yield array
    if pa.types.is_fixed_size_list(array.type) or pa.types.is_list(array.type):
        yield from _arrays(array.values)


_EXPONENT = np.uint16(0x7C00)  # float16: all exponent bits set = inf or NaN
LOSS_COLUMNS = ("loss_response", "loss_response_alone")


def nonfinite_rows(emb: np.ndarray) -> np.ndarray:
    """Positions of the rows of a (n, dim) float16 array that hold a NaN or inf, in blocks (no full-size temporary)."""
    emb = np.asarray(emb)
    if emb.dtype != np.float16:
        return np.nonzero(~np.isfinite(emb).all(axis=1))[0]
    bad = []
    step = max(1, (1 << 18) // max(emb.shape[1], 1))  # under 1 MiB of temporaries: the check runs beside scoring
    for lo in range(0, len(emb), step):
        hit = (emb[lo:lo + step].view(np.uint16) & _EXPONENT) == _EXPONENT
        if hit.any():
            bad.append(lo + np.nonzero(hit.any(axis=1))[0])
    return np.concatenate(bad) if bad else np.zeros(0, dtype=np.int64)


def bad_loss_rows(loss: np.ndarray, tokens: np.ndarray | None) -> np.ndarray:
    """Positions of losses that are inf, or NaN although the row has response tokens (NaN is kept for
    rows with no response token left: there is no loss to compute)."""
    loss = np.asarray(loss, dtype=np.float64)
    bad = np.isinf(loss)
    if tokens is not None:
        bad |= np.isnan(loss) & (np.asarray(tokens) > 0)
    return np.nonzero(bad)[0]


def nonfinite_problem(columns: dict[str, np.ndarray]) -> str | None:
    """What is not finite in a shard's columns (``embedding`` (n, dim), loss columns, ``row``), or None."""
    rows = columns.get("row")
    found = []
    if "embedding" in columns:
        bad = nonfinite_rows(columns["embedding"])
        if len(bad):
            found.append(("embedding", bad))
    for name in LOSS_COLUMNS:
        if name in columns:
            bad = bad_loss_rows(columns[name], columns.get("n_response_tokens"))
            if len(bad):
                found.append((name, bad))
    if not found:
        return None
    parts = []
    for name, bad in found:
        shown = [int(rows[i]) if rows is not None else int(i) for i in bad[:5]]
        parts.append(f"{name} of {len(bad):,} row{'s' if len(bad) > 1 else ''} (pool rows "
                     f"{', '.join(map(str, shown))}{', ...' if len(bad) > 5 else ''})")
    return "NaN or inf in " + "; ".join(parts)


def _numpy_columns(columns: dict[str, pa.Array]) -> dict[str, np.ndarray]:
    out = {}
    for name, arr in columns.items():
        arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
        if name == "embedding":  # a view of the Arrow buffer, never a copy (this runs beside scoring)
            dim, values = arr.type.list_size, arr.values
            flat = np.frombuffer(values.buffers()[1], dtype=np.float16, count=len(values), offset=values.offset * 2)
            out[name] = flat[arr.offset * dim:(arr.offset + len(arr)) * dim].reshape(len(arr), dim)
        elif name in ("row", "n_response_tokens", *LOSS_COLUMNS):
            out[name] = arr.to_numpy(zero_copy_only=arr.null_count == 0 and not pa.types.is_boolean(arr.type))
    return out


def write_shard(path, columns: dict[str, pa.Array]) -> dict:
    """Write ``columns`` as one record batch to ``path`` atomically; return its size, sha256, the
    xxh3 of the file and of each column. Refuses (nothing written) columns holding NaN or inf
    embeddings or losses: no store dataselect writes has them."""
    path = Path(path)
    problem = nonfinite_problem(_numpy_columns(columns))
    if problem:
        raise DataselectError(f"{path}: {problem} -- the model produced non-finite values (NaN weights, or "
                              "float16 overflow: try --dtype float32); nothing of this shard was written")
    batch = pa.RecordBatch.from_pydict(columns)
    with atomic_path(path) as tmp:
        try:
            with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, batch.schema) as writer:
                writer.write_batch(batch)
        except OSError as exc:
            raise with_path(exc, path) from exc
        digest, fast, per_column = file_sha256(tmp), file_xxh3(tmp), column_xxh3(tmp)
    return {"bytes": path.stat().st_size, "sha256": digest, "xxh3": fast, "xxh3_columns": per_column}
