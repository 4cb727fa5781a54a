"""Streaming pool reader.

A pool is a JSONL file (optionally ``.gz`` or ``.zst``), a Parquet file, a ``datasets``
``save_to_disk`` folder, or a folder of JSONL/Parquet files (read in name order). Records are read
one batch at a time, never the whole pool. Every record gets ``row``: its 0-based position among the
pool's records (blank JSONL lines are not records). Locations in messages are ``FILE:LINE`` (1-based
line) for JSONL and ``FILE:row N`` (0-based) for Parquet and ``datasets``.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import zlib
from collections.abc import Iterator
from pathlib import Path

import orjson
import pyarrow.parquet as pq

from dataselect.errors import DataselectError, InputError
from dataselect.pool.hub import HubPool, dataset_records
from dataselect.pool.identity import MAX_DEPTH, record_hash
from dataselect.pool.records import PoolRow, RecordError, normalize_record, record_id, record_source

JSONL_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz", ".jsonl.zst", ".json.zst", ".ndjson")
RECORD_COLUMNS = ("messages", "conversations", "instruction", "prompt", "prompt_text")
DEFAULT_MAX_RECORD_BYTES = 16 * 1024 * 1024
_BATCH = 4096


def _kind_of(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl"
    raise DataselectError(f"{path}: unknown pool format (expected .jsonl[.gz|.zst], .parquet, or a "
                          "datasets folder)")


def _is_datasets_dir(path: Path) -> bool:
    return any((path / marker).exists() for marker in ("dataset_info.json", "state.json", "dataset_dict.json"))


def _zstd_chunks(path: Path) -> Iterator[bytes]:
    """Decompressed chunks of a .zst file; a stream that ends inside a frame raises ``EOFError``."""
    import zstandard

    dobj = zstandard.ZstdDecompressor().decompressobj()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            while chunk:
                yield dobj.decompress(chunk)
                chunk = dobj.unused_data
                if chunk:
                    dobj = zstandard.ZstdDecompressor().decompressobj()  # next frame
    if not dobj.eof:
        raise EOFError("zstd stream ended in the middle of a frame")


def _raw_lines(path: Path, offset: int = 0) -> Iterator[bytes]:
    name = path.name.lower()
    if offset and _compressed(path):
        raise ValueError("compressed files cannot be entered at a byte offset")
    if name.endswith(".zst"):
        rest = b""
        for chunk in _zstd_chunks(path):
            parts = (rest + chunk).split(b"\n")
            rest = parts.pop()
            yield from (p + b"\n" for p in parts)
        if rest:
            yield rest
        return
    opener = gzip.open if name.endswith(".gz") else open
    with opener(path, "rb") as fh:
        if offset:
            fh.seek(offset)
        yield from fh


def _binary_lines(path: Path, offset: int = 0, line_no: int = 0) -> Iterator[tuple[int, int, bytes]]:
    """Yield (1-based line number, byte offset, raw line) for non-blank lines; compression errors name
    the line. ``offset``/``line_no``: start there (plain files only: a position a pass recorded)."""
    try:
        for line in _raw_lines(path, offset):
            line_no += 1
            if line.strip():
                yield line_no, offset, line
            offset += len(line)
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise InputError(f"{path}:{line_no + 1}", f"compressed stream is corrupt or cut short ({exc})") from None
    except Exception as exc:  # zstandard.ZstdError
        if type(exc).__name__ == "ZstdError":
            raise InputError(f"{path}:{line_no + 1}", f"zstd stream is corrupt or cut short ({exc})") from None
        raise


def parse_line(line: bytes, line_no: int, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES):
    """One JSONL line -> its record, or a :class:`RecordError` saying what is wrong with it."""
    if len(line) > max_record_bytes:
        return RecordError(f"line is {len(line) / 2**20:.1f} MiB, over the "
                           f"{max_record_bytes / 2**20:.0f} MiB record limit")
    try:  # orjson: 1.8x json.loads here; anything it refuses gets the careful path below
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        pass
    try:
        text = line.decode("utf-8-sig" if line_no == 1 else "utf-8")  # tolerate a byte-order mark
    except UnicodeDecodeError as exc:
        return RecordError(f"invalid UTF-8 at byte {exc.start} of the line")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        return RecordError(f"invalid JSON ({exc.msg} at column {exc.colno})")
    except RecursionError:
        return RecordError(f"JSON nested more than {MAX_DEPTH} levels deep")


def plain_jsonl_files(pool) -> list[Path] | None:
    """The files of a pool that is plain (uncompressed) JSONL, in reading order; else None."""
    if isinstance(pool, HubPool):
        return None
    path = Path(pool)
    if path.is_dir():
        if _is_datasets_dir(path):
            return None
        files = _folder_files(path)
    else:
        files = [path]
    ok = files and all(_kind_of(p) == "jsonl" and not _compressed(p) for p in files)
    return files if ok else None


def _folder_files(path: Path) -> list[Path]:
    """A pool folder's files in reading order (name order; hidden files are not pool files)."""
    return sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))


def _compressed(path: Path) -> bool:
    return path.name.lower().endswith((".gz", ".zst"))


def _require_record_columns(where: str, what: str, names) -> None:
    names = list(names)
    if not any(c in names for c in RECORD_COLUMNS):
        raise InputError(where, f"{what} has none of the columns {', '.join(RECORD_COLUMNS)} "
                         f"(columns: {', '.join(names[:10])})")


class PoolReader:
    """Iterate a pool's records as :class:`PoolRow`, validated and normalised to messages.

    Parameters
    ----------
    path : a file or folder (see module docstring).
    require_response : pools need an assistant turn; query sets may be prompts only.
    task : task name given to every record (query sets); else records carry a ``task`` field when
        ``require_task`` is set.
    check_duplicates : refuse (or, when skipping, skip) a second record with an id already seen.
    max_record_bytes : a longer JSONL line is refused rather than tokenised.
    mark_every : remember where every ``mark_every``-th row starts while reading (plain JSONL: byte
        offset), so that a later ``rows(start_row)`` from a marked row seeks instead of scanning from
        the first line. ``marks`` can be handed to another reader of the same pool (Ray read tasks).

    Invalid records come out with ``error`` set (and empty messages); the caller decides whether that
    stops the run or counts as skipped, so no row ever disappears unaccounted.
    """

    def __init__(self, path, *, require_response: bool = True, task: str | None = None,
                 require_task: bool = False, check_duplicates: bool = True,
                 max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES, mark_every: int = 0):
        self.hub = path if isinstance(path, HubPool) else None
        self.mark_every = mark_every
        self.marks: dict[int, tuple[int, int, int, int]] = {}  # row -> (file, byte offset, lines before, row in file)
        self.path = Path(str(path)) if self.hub else regular_pool_path(path)
        self.require_response = require_response
        self.task = task
        self.require_task = require_task
        self.check_duplicates = check_duplicates
        self.max_record_bytes = max_record_bytes
        self.seen_ids: set[bytes] = set()
        if self.hub is not None:
            self.format, self.files = "hub", [self.path]
            _require_record_columns(f"{self.hub}:row 0", "dataset", self.hub.columns())
            return
        if self.path.is_dir():
            if _is_datasets_dir(self.path):
                self.format, self.files = "datasets", [self.path]
            else:
                self.files = _folder_files(self.path)
                if not self.files:
                    raise DataselectError(f"{self.path}: folder holds no pool files")
                kinds = {_kind_of(p) for p in self.files}
                self.format = kinds.pop() if len(kinds) == 1 else "mixed"
        else:
            self.format, self.files = _kind_of(self.path), [self.path]
        if self.format != "datasets":
            for p in self.files:
                if p.stat().st_size == 0:
                    raise InputError(f"{p}:1", "file is empty")

    # -- raw records -------------------------------------------------------------------------------
    def _raw_jsonl(self, path: Path, start: int, file_index: int = 0, base_row: int = 0,
                   seek: tuple[int, int, int] | None = None, only=None) -> Iterator[tuple[str, object]]:
        offset, lines_before, first = seek or (0, 0, 0)
        markable = self.mark_every and not _compressed(path)
        for i, (line_no, off, line) in enumerate(_binary_lines(path, offset, lines_before), start=first):
            if markable and (base_row + i) % self.mark_every == 0:
                self.marks[base_row + i] = (file_index, off, line_no - 1, i)
            if i < start:
                continue
            where = f"{path}:{line_no}"
            if only is not None and base_row + i not in only:
                yield where, None  # not wanted: not parsed
                continue
            yield where, parse_line(line, line_no, self.max_record_bytes)

    def _raw_parquet(self, path: Path, start: int) -> Iterator[tuple[str, object]]:
        try:
            pf = pq.ParquetFile(path)
        except Exception as exc:
            raise InputError(f"{path}:row 0", f"not a readable Parquet file ({exc})") from None
        _require_record_columns(f"{path}:row 0", "Parquet schema", pf.schema_arrow.names)
        # enter at the row group holding ``start`` (positions from the file's metadata, nothing read)
        row, group = 0, 0
        while group < pf.num_row_groups and row + pf.metadata.row_group(group).num_rows <= start:
            row += pf.metadata.row_group(group).num_rows
            group += 1
        for batch in pf.iter_batches(batch_size=_BATCH, row_groups=range(group, pf.num_row_groups)):
            if row + batch.num_rows <= start:
                row += batch.num_rows
                continue
            for rec in batch.to_pylist():
                if row >= start:
                    yield f"{path}:row {row}", rec
                row += 1

    def _raw_datasets(self, path: Path, start: int) -> Iterator[tuple[str, object]]:
        import datasets

        try:
            ds = datasets.load_from_disk(str(path))
        except Exception as exc:
            raise InputError(f"{path}:row 0", f"not a readable datasets folder ({exc})") from None
        if isinstance(ds, datasets.DatasetDict):
            if "train" not in ds:
                raise DataselectError(f"{path}: DatasetDict without a 'train' split (splits: {', '.join(ds)})")
            ds = ds["train"]
        _require_record_columns(f"{path}:row 0", "dataset", ds.column_names)
        yield from dataset_records(ds, start, str(path))

    def _raw_hub(self, path: Path, start: int) -> Iterator[tuple[str, object]]:
        yield from self.hub.records(start)

    def raw(self, start_row: int = 0, only=None) -> Iterator[tuple[int, str, object]]:
        """Yield (row, where, record-or-RecordError) from ``start_row`` on, skipping earlier rows cheaply:
        from the nearest mark at or before ``start_row`` when there is one (see ``mark_every``).
        ``only``: a container of rows wanted; JSONL lines of other rows are not parsed (record None)."""
        marked = [r for r in self.marks if r <= start_row]
        mark = self.marks[max(marked)] if start_row and marked else None
        first_file = mark[0] if mark else 0
        row = max(marked) - mark[3] if mark else 0  # pool row of the marked file's first record
        for index, path in enumerate(self.files):
            if index < first_file:
                continue
            kind = self.format if self.format in ("datasets", "hub") else _kind_of(path)
            n_before = row
            local_start = max(0, start_row - row)
            if kind == "jsonl":
                seek = mark[1:] if mark and index == first_file else None
                gen = self._raw_jsonl(path, local_start, index, row, seek, only)
            else:
                gen = {"parquet": self._raw_parquet, "datasets": self._raw_datasets,
                       "hub": self._raw_hub}[kind](path, local_start)
            row = n_before + local_start
            for where, rec in gen:
                yield row, where, rec
                row += 1
            if row == n_before + local_start and local_start:
                row = n_before + self._count_file(path, kind)

    # -- validated rows ----------------------------------------------------------------------------
    def __iter__(self) -> Iterator[PoolRow]:
        return self.rows()

    def rows(self, start_row: int = 0) -> Iterator[PoolRow]:
        """Yield every record from ``start_row`` as a :class:`PoolRow`; invalid ones have ``error`` set."""
        for row, where, rec in self.raw(start_row):
            yield self._validate(row, where, rec)

    def _validate(self, row: int, where: str, rec) -> PoolRow:
        if isinstance(rec, RecordError):
            return PoolRow(row=row, id="", messages=[], where=where, error=str(rec))
        try:
            msgs = normalize_record(rec, require_response=self.require_response)
            _check_unicode(msgs, *(rec.get(k) for k in ("id", "source", "dataset", "task")))
            rid = record_id(rec, msgs)
            digest = record_hash(rec)
            task = self.task
            if task is None and self.require_task:
                task = rec.get("task")
                if not isinstance(task, str) or not task:
                    raise RecordError("query record has no 'task' field; give --task NAME or add a "
                                      "'task' string to every record")
            if self.check_duplicates:
                key = hashlib.blake2b(rid.encode("utf-8"), digest_size=8).digest()
                if key in self.seen_ids:
                    if isinstance(rec, dict) and rec.get("id") is not None:
                        raise RecordError(f"duplicate id {rid!r} (an earlier record has the same id)")
                    rid = f"{rid}-{row}"  # exact duplicate content without ids: keep both, ids stay unique
                    key = hashlib.blake2b(rid.encode("utf-8"), digest_size=8).digest()
                self.seen_ids.add(key)
        except RecordError as exc:
            return PoolRow(row=row, id="", messages=[], where=where, error=str(exc), record=rec)
        return PoolRow(row=row, id=rid, messages=msgs, source=record_source(rec), task=task,
                       where=where, record=rec, record_hash=digest)

    def remember_ids(self, ids) -> None:
        """Mark ids as seen (used when resuming: ids of shards already written)."""
        for rid in ids:
            self.seen_ids.add(hashlib.blake2b(rid.encode("utf-8"), digest_size=8).digest())

    # -- counting ----------------------------------------------------------------------------------
    def _count_file(self, path: Path, kind: str) -> int:
        if kind == "parquet":
            try:
                return pq.ParquetFile(path).metadata.num_rows
            except Exception as exc:
                raise InputError(f"{path}:row 0", f"not a readable Parquet file ({exc})") from None
        if kind == "datasets":
            return sum(1 for _ in self._raw_datasets(path, 0))
        if kind == "hub":
            return sum(1 for _ in self._raw_hub(path, 0))
        return sum(1 for _ in _binary_lines(path))


def _check_unicode(msgs, *fields) -> None:
    """Text that cannot be UTF-8 (an unpaired surrogate such as "\\ud800" from a JSON escape) makes the row invalid."""
    for i, text in enumerate([m["content"] for m in msgs] + [f for f in fields if isinstance(f, str)]):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            what = f"message {i} content" if i < len(msgs) else "id, source or task"
            raise RecordError(f"{what} holds an unpaired surrogate {text[exc.start]!r} (not valid Unicode)") from None


def regular_pool_path(path) -> Path:
    """``path`` as a Path if it is a regular file or a folder; a FIFO, socket or device would hang or
    mislead every reader, so it is refused up front."""
    path = Path(path)
    if not path.exists():
        raise DataselectError(f"{path}: no such file or folder")
    if not (path.is_file() or path.is_dir()):
        raise DataselectError(f"{path}: not a regular file or folder (a pipe, socket or device); give the pool "
                              "as a file or folder")
    return path


def pool_fingerprint(path) -> str:
    """A quick identity of a pool: sha256 over each file's name, size, first and last MiB.

    Cheap on a 10 GB pool and catches edits, appends, truncation and a different file; it is what
    stores and selections record to refuse exporting against the wrong pool. A hub pool's is its
    ``datasets`` builder hash (:meth:`HubPool.fingerprint`).
    """
    if isinstance(path, HubPool):
        return path.fingerprint()
    path = regular_pool_path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    h = hashlib.sha256()
    for p in files:
        size = p.stat().st_size
        h.update(f"{p.relative_to(path) if path.is_dir() else p.name}\0{size}\0".encode())
        with open(p, "rb") as fh:
            h.update(fh.read(1 << 20))
            if size > 2 << 20:
                fh.seek(size - (1 << 20))
                h.update(fh.read(1 << 20))
    return h.hexdigest()
