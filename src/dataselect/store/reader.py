"""Reading a store memory-mapped, shard by shard, without loading it whole.

Blocks are zero-copy numpy views of the mapped Arrow buffers; a shard's mapping is released as soon
as nothing refers to its views, so scanning a store keeps at most one shard (plus whatever the
caller keeps) resident.

Nothing in ``manifest.json`` is believed without a check. Opening a store accepts only shard names
the writer produces (``shard-NNNNN.arrow``), resolved inside the store folder, and checks every
shard's Arrow schema (an ``embedding`` of ``dim`` float16 values) and row count against the
manifest. The first time a shard is read, its bytes are checked against the xxh3-64 recorded at
write time (about 30 GiB/s, a few percent of a pass over the store); ``dataselect verify`` also
checks the sha256 of every shard and the store hash.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa

from dataselect.errors import DataselectError
from dataselect.store.manifest import Manifest, ShardEntry, shard_path
from dataselect.store.writer import LOSS_COLUMNS, file_sha256, file_xxh3, scan_columns


def _column_numpy(batch: pa.RecordBatch, name: str, dim: int) -> np.ndarray:
    col = batch.column(name)
    if name == "embedding":
        values = col.values.to_numpy(zero_copy_only=True)
        return values[col.offset * dim:(col.offset + len(col)) * dim].reshape(len(col), dim)
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        return np.asarray(col.to_pylist(), dtype=object)
    if (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)) and col.null_count == 0:
        # a view of the Arrow buffer; Array.to_numpy would import pandas (0.15 s of every command)
        dtype = np.dtype(col.type.to_pandas_dtype())
        return np.frombuffer(col.buffers()[1], dtype=dtype, count=len(col), offset=col.offset * dtype.itemsize)
    return col.to_numpy(zero_copy_only=False)


def shard_problems(directory, entry: ShardEntry, dim: int, *, digests: bool = False, sha256: bool = False,
                   finite: bool = False) -> list[str]:
    """What is wrong with shard ``entry`` of the store in ``directory`` (empty: it is whole). The one
    answer to "is this shard whole?", at three depths:

    * always: a name the writer produces, resolving inside the store; the file exists with the
      recorded size; its Arrow schema holds ``row`` and an ``embedding`` of ``dim`` float16 values, and
      ``rows_stored`` rows (opening a store, every command);
    * ``digests``: the file's xxh3 (or sha256, for shards written before xxh3) as recorded (resuming a
      write: a damaged shard is written again);
    * ``sha256`` and ``finite``: the sha256 as well, and no NaN or inf embedding or loss (``verify``).
    """
    directory = Path(directory)
    try:
        path = shard_path(directory, entry.file)
    except DataselectError as exc:
        return [str(exc)]
    if not path.is_file():
        return [f"{path}: missing (listed in the manifest)"]
    problems = []
    size = path.stat().st_size
    if size != entry.bytes:
        problems.append(f"{path}: {size:,} bytes, the manifest says {entry.bytes:,}: the shard is truncated or "
                        f"corrupt, or the manifest was changed; run `dataselect verify {directory}`")
    if digests and not sha256:
        if entry.xxh3 is not None and file_xxh3(path) != entry.xxh3:
            problems.append(f"{path}: xxh3 differs from the one recorded when it was written")
        elif entry.xxh3 is None and file_sha256(path) != entry.sha256:
            problems.append(f"{path}: sha256 differs from the one recorded when it was written")
    if sha256:
        if file_sha256(path) != entry.sha256:
            problems.append(f"{path}: sha256 differs from the one recorded when it was written")
        if entry.xxh3 is not None and file_xxh3(path) != entry.xxh3:
            problems.append(f"{path}: xxh3 differs from the one recorded when it was written")
    try:
        with pa.memory_map(str(path)) as mm:
            reader = pa.ipc.open_file(mm)
            schema = reader.schema
            rows = sum(reader.get_batch(i).num_rows for i in range(reader.num_record_batches))
    except (pa.ArrowInvalid, OSError) as exc:
        return problems + [f"{path}: not a readable Arrow shard (truncated or corrupt: "
                           f"{str(exc).splitlines()[0]}); run `dataselect verify {directory}`"]
    emb = schema.field("embedding").type if "embedding" in schema.names else None
    if (emb is None or not pa.types.is_fixed_size_list(emb) or emb.list_size != dim
            or not pa.types.is_float16(emb.value_type)):
        problems.append(f"{path}: embedding column is {emb}, but the manifest says {dim} float16 values per "
                        "row; the manifest or the shard was changed")
    if entry.rows_stored != rows or "row" not in schema.names:
        problems.append(f"{path}: holds {rows:,} rows but the manifest says {entry.rows_stored!r}; the manifest or "
                        "the shard was changed")
    if finite and not problems:
        _, problem = scan_columns(path, [], ("embedding", *LOSS_COLUMNS))
        if problem:
            problems.append(f"{path}: {problem}")
    return problems


class Store:
    """A complete (or in-progress, with ``allow_incomplete``) embedding store.

    The only read path of a store: every read is of a checked shard (:func:`shard_problems` on
    opening, the columns' xxh3 and finiteness on first read).

    Attributes: ``manifest`` (:class:`~dataselect.store.manifest.Manifest`), ``config``
    (:class:`~dataselect.store.manifest.StoreConfig`), ``dim`` (int), ``n_rows`` (rows stored),
    ``kind`` ("pool"|"queries"), ``shards`` (:class:`~dataselect.store.manifest.ShardEntry` list),
    ``hash`` (the store hash).
    """

    def __init__(self, path, allow_incomplete: bool = False):
        self.path = Path(path)
        self.allow_incomplete = allow_incomplete
        self.manifest = Manifest.load(self.path)
        if not self.manifest.complete and not allow_incomplete:
            from dataselect.outputs import held_by

            holder = held_by(self.path)
            if holder:
                raise DataselectError(f"{self.path}: store is still being written by {holder}; wait for it to finish")
            raise DataselectError(f"{self.path}: store is incomplete (`dataselect embed` or `dataselect score` "
                                  "was interrupted); re-run the same command to finish it")
        self.config = self.manifest.config
        self.dim = self.config.dim
        self.kind = self.manifest.kind
        self.shards = self.manifest.shards
        self.hash = self.manifest.store_hash
        self._verified: set[tuple[str, str]] = set()
        for s in self.shards:
            problems = shard_problems(self.path, s, self.dim)
            if problems:
                raise DataselectError(problems[0])
        self.n_rows = sum(s.rows_stored for s in self.shards)
        self._starts = np.array([s.first_row for s in self.shards], dtype=np.int64)

    def _verify(self, shard: dict, columns) -> None:
        """Check the columns about to be read against the xxh3 recorded when the shard was written, and
        embeddings and losses for NaN and inf, in one pass (once per shard and column; shards written
        before per-column digests are checked by ``verify``)."""
        name = shard.file
        recorded = shard.xxh3_columns
        digest = [c for c in columns if isinstance(recorded, dict) and (name, c) not in self._verified]
        finite = [c for c in columns if (c == "embedding" or c in LOSS_COLUMNS) and (name, "finite:" + c) not in
                  self._verified]
        if not digest and not finite:
            return
        got, problem = scan_columns(self.path / name, digest, finite)
        for c in digest:
            if c in got and got[c] != recorded.get(c):
                raise DataselectError(f"{self.path / name}: checksum mismatch in column {c!r} -- the shard changed or "
                                      f"is corrupt since it was written; run `dataselect verify {self.path}`, and "
                                      "re-embed to repair it")
        if problem:
            raise DataselectError(f"{self.path / name}: {problem}; no selection can use this store -- "
                                  "re-embed those rows (`dataselect verify` lists every shard)")
        self._verified.update([(name, c) for c in digest] + [(name, "finite:" + c) for c in finite])

    def __len__(self) -> int:
        return self.n_rows

    def __reduce__(self):  # a Ray worker reopens the store by path, with every check of opening it
        return (type(self), (str(self.path), self.allow_incomplete))

    @property
    def base(self) -> Store:
        """The whole store (a :class:`StoreView` is some rows of it)."""
        return self

    def subset(self, keep: np.ndarray, tag: str) -> StoreView:
        """This store narrowed to the pool rows where ``keep`` (bool, indexed by pool row number) is true.

        ``tag`` names the subset (a dedup artefact's key); see :class:`StoreView`."""
        return StoreView(self, keep, tag)

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r}, kind={self.kind}, rows={self.n_rows}, dim={self.dim})"

    @property
    def columns(self) -> list[str]:
        return self._names(self.shards[0]) if self.shards else []

    def shard_columns(self) -> list[list[str]]:
        """The column names of every shard (a store resumed across releases can differ between shards)."""
        return [self._names(s) for s in self.shards]

    def _names(self, shard: ShardEntry) -> list[str]:
        with pa.memory_map(str(self.path / shard.file)) as mm:
            return pa.ipc.open_file(mm).schema.names

    def _batches(self, shard: dict, columns=(), verified: bool = False) -> Iterator[pa.RecordBatch]:
        if not verified:
            self._verify(shard, columns)
        mm = pa.memory_map(str(self.path / shard.file))
        reader = pa.ipc.open_file(mm)
        for i in range(reader.num_record_batches):
            yield reader.get_batch(i)

    def table(self, shard: int, columns=None) -> pa.Table:
        """Shard ``shard`` (an index into ``shards``) as one Arrow table of ``columns`` (all by default),
        checked against its recorded digests first; the table views the mapped file."""
        entry = self.shards[shard]
        names = self._names(entry) if columns is None else list(columns)
        return pa.Table.from_batches([b.select(names) for b in self._batches(entry, names)])

    def iter_blocks(self, columns=("row", "embedding"), block_rows: int | None = None,
                    shards: list[int] | None = None) -> Iterator[dict[str, np.ndarray]]:
        """Yield dicts of numpy arrays, shard by shard (``block_rows`` splits shards further).

        ``embedding`` comes as a zero-copy (n, dim) float16 view of the mapped file; copy what you keep.
        ``shards`` restricts the scan to those shard indexes (one Ray task scores one shard).
        """
        todo = self.shards if shards is None else [self.shards[i] for i in shards]
        # Shard i+1 is checked (and so read into the page cache) in a thread while shard i is used;
        # no shard's data is handed out before its check has passed.
        with ThreadPoolExecutor(1, thread_name_prefix="verify") as pool:
            pending = pool.submit(self._verify, todo[0], columns) if todo else None
            for i, shard in enumerate(todo):
                pending.result()
                pending = pool.submit(self._verify, todo[i + 1], columns) if i + 1 < len(todo) else None
                for batch in self._batches(shard, columns, verified=True):
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

    def shard_of(self, rows) -> np.ndarray:
        """The index of the shard each pool row number falls in (-1 before the first)."""
        return np.searchsorted(self._starts, np.asarray(rows, dtype=np.int64), side="right") - 1

    def take(self, rows, columns=("embedding",)) -> dict[str, np.ndarray]:
        """Random access by pool row number -> arrays in the order of ``rows`` (embedding as float32)."""
        rows = np.asarray(rows, dtype=np.int64)
        shard_of = self.shard_of(rows)
        parts: dict[str, list] = {c: [] for c in columns}
        for si in np.unique(shard_of):
            want = np.nonzero(shard_of == si)[0]
            if si < 0:
                raise DataselectError(f"row {int(rows[want[0]])} is not in {self.path}")
            for batch in self._batches(self.shards[si], ("row", *columns)):
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


class StoreView(Store):
    """Some rows of a store (a deduplicated pool), read through the same path as the whole of it.

    Every read -- ``iter_blocks``, ``column``, ``take``, ``table`` and the shard tasks built on them --
    sees only the kept rows, so every selector picks from them without knowing; ``n_rows`` and each
    shard's ``rows_stored`` count kept rows. ``hash`` combines the store's hash and ``tag``, so what is
    built on a view (clusterings, indexes) is its own artefact; ``base`` is the whole store.
    """

    def __init__(self, base: Store, keep: np.ndarray, tag: str):
        self.__dict__.update(base.__dict__)
        keep = np.asarray(keep, dtype=bool)
        end = max((s.end_row for s in base.shards), default=0)
        if len(keep) < end:
            keep = np.concatenate([keep, np.zeros(end - len(keep), dtype=bool)])
        self._base, self.tag, self._keep = base, str(tag), keep
        self.shards = [dataclasses.replace(s, rows_stored=int(keep[s.first_row:s.end_row].sum())) for s in base.shards]
        self.n_rows = sum(s.rows_stored for s in self.shards)
        self.hash = hashlib.sha256(f"{base.hash}/{self.tag}".encode()).hexdigest()

    def __repr__(self) -> str:
        return f"StoreView({str(self.path)!r}, {self.tag}, rows={self.n_rows} of {self._base.n_rows}, dim={self.dim})"

    def __reduce__(self):
        return (_reopen_view, (str(self.path), np.packbits(self._keep), len(self._keep), self.tag))

    @property
    def base(self) -> Store:
        return self._base

    @property
    def keep(self) -> np.ndarray:
        """Which pool rows the view holds (bool, indexed by pool row number)."""
        return self._keep

    def _batches(self, shard, columns=(), verified: bool = False) -> Iterator[pa.RecordBatch]:
        for batch in super()._batches(shard, columns, verified):
            keep = self._keep[batch.column("row").to_numpy()]
            if keep.all():
                yield batch
            elif keep.any():
                yield batch.filter(pa.array(keep))


def _reopen_view(path: str, bits: np.ndarray, n: int, tag: str) -> StoreView:
    return Store(path).subset(np.unpackbits(bits, count=n).astype(bool), tag)


def open_store(path, kind: str | None = None) -> Store:
    """Open a complete store; ``kind`` ("pool"/"queries") is checked when given."""
    store = Store(path)
    if kind and store.kind != kind:
        raise DataselectError(f"{path}: is a {store.kind} store, expected a {kind} store")
    return store
