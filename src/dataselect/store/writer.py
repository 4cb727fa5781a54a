"""Writing a store: shards (Arrow IPC files, each written under a temporary name and renamed into place),
part files of the shard in progress, and the manifest, through one :class:`StoreWriter`."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np
import pyarrow as pa

from dataselect.errors import DataselectError
from dataselect.outputs import atomic_path, with_path, write_json
from dataselect.store.manifest import (
    MANIFEST,
    MAX_SKIPPED_EXAMPLES,
    SKIPPED,
    Manifest,
    ShardEntry,
    StoreConfig,
    reason_kind,
)


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


PART_NAME = re.compile(r"shard-\d{5}\.part-\d{6}\.arrow")


def part_name(shard: int, chunk: int) -> str:
    return f"{shard_name(shard)[:-len('.arrow')]}.part-{chunk:06d}.arrow"


class StoreWriter:
    """The one write path of a store: every shard, part file and manifest update goes through it.

    The caller holds the store's lock (:func:`dataselect.outputs.lock`) for the writer's life. The
    manifest is rewritten atomically after every step, so a kill leaves a store that resumes:
    ``whole_shards`` keeps what is intact, ``parts`` returns the committed chunks of the shard in
    progress. Used by ``embed`` (local and Ray), ``score`` and the synthetic writer.
    """

    def __init__(self, directory, manifest: Manifest):
        self.path, self.manifest = Path(directory), manifest

    @classmethod
    def create(cls, directory, kind: str, config: StoreConfig, model: dict) -> StoreWriter:
        from dataselect import __version__

        return cls(directory, Manifest(kind=kind, config=config, model=model,
                                       created_with=f"dataselect {__version__}"))

    def save(self) -> None:
        write_json(self.path / MANIFEST, self.manifest.to_json())

    # -- resume ---------------------------------------------------------------------------------------
    def whole_shards(self) -> dict[int, ShardEntry]:
        """Keep the shards whose files are whole (size and xxh3 as recorded); first row -> entry. A store
        that loses one is incomplete again (the missing shard is written anew)."""
        from dataselect.store.reader import shard_problems

        man = self.manifest
        kept = [s for s in man.shards if not shard_problems(self.path, s, man.config.dim, digests=True)]
        if len(kept) != len(man.shards):
            man.complete = False
        man.shards = sorted(kept, key=lambda s: s.first_row)
        return {s.first_row: s for s in kept}

    def parts(self, k: int) -> dict[int, pa.Table]:
        """Chunks of shard ``k`` committed by an earlier, killed run, each checked against its xxh3; the
        first missing or damaged one and those after it are left out (embedded again)."""
        state = self.manifest.parts or {}
        if state.get("shard") != k:
            return {}
        found = {}
        for part in state.get("chunks", []):
            path = self.path / str(part.get("file"))
            if not PART_NAME.fullmatch(path.name) or not path.is_file() or file_xxh3(path) != part.get("xxh3"):
                break
            with pa.memory_map(str(path)) as mm:
                found[part["chunk"]] = pa.ipc.open_file(mm).read_all()
        return found

    # -- writing --------------------------------------------------------------------------------------
    def commit_part(self, k: int, chunk: int, columns: dict[str, pa.Array]) -> None:
        """Write one embedded chunk of shard ``k`` as a part file and record it (the unit of resume)."""
        name = part_name(k, chunk)
        info = write_shard(self.path / name, columns)
        state = self.manifest.parts if (self.manifest.parts or {}).get("shard") == k else {"shard": k, "chunks": []}
        state["chunks"] = [c for c in state["chunks"] if c["chunk"] != chunk] + [
            {"chunk": chunk, "file": name, "rows": len(columns["row"]), "xxh3": info["xxh3"]}]
        self.manifest.parts = state
        self.save()

    def commit_shard(self, k: int, end: int, skipped: list[dict], columns: dict[str, pa.Array]) -> ShardEntry:
        """Write shard ``k`` (pool rows ``k * shard_rows .. end - 1``, ``skipped`` the invalid ones among
        them), record it, then remove every part file."""
        name = shard_name(k)
        info = write_shard(self.path / name, columns)
        entry = ShardEntry(
            file=name, first_row=k * self.manifest.config.shard_rows, end_row=end, rows_stored=len(columns["row"]),
            rows_skipped=len(skipped),
            truncated=int(np.sum(columns["truncated"].to_numpy(zero_copy_only=False))) if "truncated" in columns else 0,
            tokens=int(columns["n_tokens"].to_numpy().sum()) if "n_tokens" in columns else 0,
            loss_columns=[c for c in ("loss_response", "n_response_tokens", "loss_response_alone") if c in columns],
            **info)
        man = self.manifest
        # the first skip reasons in pool order, whatever order shards finish in
        man.skipped_examples = sorted(man.skipped_examples + skipped, key=lambda e: e["row"])[:MAX_SKIPPED_EXAMPLES]
        self.record_shard(entry)
        man.parts = None
        self.save()
        for p in self.path.glob("shard-*.part-*.arrow"):
            if PART_NAME.fullmatch(p.name):
                p.unlink(missing_ok=True)
        return entry

    def record_shard(self, entry: ShardEntry) -> None:
        """Record a shard file already written with :func:`write_shard` (the synthetic writer's workers)."""
        man = self.manifest
        man.shards = sorted([s for s in man.shards if s.first_row != entry.first_row] + [entry],
                            key=lambda s: s.first_row)
        man.counts = self._counts()
        self.save()

    def replace_shard(self, entry: ShardEntry, columns: dict[str, pa.Array], loss_columns: list[str]) -> None:
        """Rewrite a shard with new columns (``score``: the same rows with losses added)."""
        info = write_shard(self.path / entry.file, columns)
        for key, value in info.items():
            setattr(entry, key, value)
        entry.loss_columns = list(loss_columns)
        self.save()

    def begin_scoring(self) -> None:
        self.manifest.complete, self.manifest.scoring = False, True
        self.save()

    def write_skipped(self, invalid: dict[int, tuple[str, str]]) -> None:
        """Every invalid row of the pool (row -> (where, reason), known after validation) to
        ``STORE/skipped.jsonl``, atomically, and the manifest's record of it: the file and the rows per
        kind of problem."""
        man = self.manifest
        if not invalid:
            man.skipped_file, man.skipped_per_reason = None, {}
            return
        kinds: dict[str, int] = {}
        with atomic_path(self.path / SKIPPED) as tmp, open(tmp, "w", encoding="utf-8") as fh:
            for row, (where, reason) in sorted(invalid.items()):
                fh.write(json.dumps({"row": row, "where": where, "reason": reason}, ensure_ascii=False) + "\n")
                kind = reason_kind(reason)
                kinds[kind] = kinds.get(kind, 0) + 1
        man.skipped_file = SKIPPED
        man.skipped_per_reason = dict(sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0])))

    def finish(self, config: StoreConfig | None = None, timings: dict | None = None) -> Manifest:
        """Mark the store complete (``config``: its new config, e.g. with losses) and record its hash."""
        man = self.manifest
        if config is not None:
            man.config = config
        man.scoring, man.parts, man.complete = False, None, True
        man.counts = self._counts()
        man.store_hash = man.computed_hash()
        if timings is not None:
            man.timings = timings
        self.save()
        return man

    def _counts(self) -> dict:
        shards = self.manifest.shards
        return {"rows_read": sum(s.end_row - s.first_row for s in shards),
                **{k: sum(getattr(s, k) for s in shards) for k in ("rows_stored", "rows_skipped", "truncated", "tokens")}}
