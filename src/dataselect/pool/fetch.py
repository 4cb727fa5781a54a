"""The records of given pool rows, read back from the pool and checked against what was embedded.

:func:`records` is the one way every command fetches records (export, report, neighbors, score, loss
scoring of representatives): each record is parsed, refused in one line naming its file and line
when it is no longer valid, and checked against the identity its store (or selection) recorded
(:mod:`dataselect.pool.identity`).

Plain JSONL pools are read at each record's byte offset (a numpy newline scan finds them; ``pread``,
not ``mmap``, so scattered reads of millions of lines do not grow the process to the pool's size),
in whatever order is asked. Other sources (compressed, Parquet, ``datasets``, hub) are streamed once;
``order="rows"`` then goes through a scratch file of the wanted records, so memory holds offsets,
never the records.
"""

from __future__ import annotations

import mmap
import os
import pickle
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dataselect.errors import DataselectError, InputError
from dataselect.pool.identity import Identities
from dataselect.pool.offsets import record_offsets
from dataselect.pool.reader import PoolReader, parse_line, plain_jsonl_files, pool_fingerprint
from dataselect.pool.records import RecordError

ORDERS = ("rows", "pool")


@dataclass
class Fetched:
    """One record read back: ``index`` (its position in the ``rows`` asked for), pool ``row``, ``where``
    (file:line), the parsed ``record``, and ``raw`` (the line's own bytes, plain JSONL only; else None)."""

    index: int
    row: int
    where: str
    record: object
    raw: bytes | None = None


def check_pool(store, pool) -> None:
    """Refuse a pool other than the one ``store`` was embedded from (its fingerprint)."""
    if pool_fingerprint(pool) != store.config.pool.fingerprint:
        raise DataselectError(f"{pool} is not the pool this store was embedded from ({store.config.pool.name!r}, "
                              f"for {store.path})")


def records(pool, rows, identities: Identities, *, order: str = "rows", scratch_dir=None) -> Iterator[Fetched]:
    """Yield the records of pool ``rows`` (distinct), in the order of ``rows`` or ascending pool order.

    Every record is checked with ``identities`` (refused in one line when the pool changed); a row the
    pool does not hold, or no longer holds as a valid record, is refused too.
    ``scratch_dir``: where a streamed source's scratch file goes (``order="rows"``; default: temp dir).
    """
    if order not in ORDERS:
        raise ValueError(f"order {order!r}: choose from {', '.join(ORDERS)}")
    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    files = plain_jsonl_files(pool)
    if files is not None:
        yield from _plain(files, rows, identities, order)
    elif order == "pool":
        yield from _streamed(pool, rows, identities)
    else:
        yield from _streamed_in_order(pool, rows, identities, scratch_dir)


def _invalid(where: str, row: int, rec: RecordError) -> InputError:
    return InputError(where, f"pool row {row} is not a valid record now ({rec}); the pool file changed since "
                             "`dataselect embed`")


def _missing(pool, rows: np.ndarray, missing) -> DataselectError:
    missing = np.asarray(missing)
    return DataselectError(f"{pool}: pool row {int(rows[missing[0]])} is not in the pool ({len(missing)} of the "
                           f"{len(rows):,} rows asked for are missing); the pool file changed since `dataselect embed`")


def _plain(files: list[Path], rows: np.ndarray, identities: Identities, order: str) -> Iterator[Fetched]:
    spans = [record_offsets(f) for f in files]
    counts = np.array([len(s[0]) for s in spans], dtype=np.int64)
    firsts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    bad = np.flatnonzero((rows < 0) | (rows >= int(counts.sum())))
    if len(bad):
        raise _missing(files[0] if len(files) == 1 else files[0].parent, rows, bad)
    index = np.arange(len(rows)) if order == "rows" else np.argsort(rows, kind="stable")
    # where each wanted line is, gathered with numpy in output order, then as Python lists
    file_of = np.searchsorted(firsts, rows[index], side="right") - 1
    local = rows[index] - firsts[file_of]
    where_in = [np.empty(len(index), np.int64) for _ in range(3)]
    for k, span in enumerate(spans):
        sel = file_of == k
        for dst, src in zip(where_in, span, strict=True):
            dst[sel] = src[local[sel]]
    todo = zip(index.tolist(), rows[index].tolist(), file_of.tolist(), *(a.tolist() for a in where_in), strict=True)
    handles = []
    try:
        for f in files:
            handles.append(open(f, "rb"))  # noqa: SIM115  (closed in finally)
        fds = [h.fileno() for h in handles]
        for i, row, k, start, length, line_no in todo:
            raw = os.pread(fds[k], length, start)
            where = f"{files[k]}:{line_no}"
            rec = parse_line(raw, line_no)
            if isinstance(rec, RecordError):
                raise _invalid(where, row, rec)
            identities.check(row, where, rec)
            yield Fetched(i, row, where, rec, raw)
    finally:
        for h in handles:
            h.close()


def _streamed(pool, rows: np.ndarray, identities: Identities) -> Iterator[Fetched]:
    position = {int(r): i for i, r in enumerate(rows.tolist())}
    if not position:
        return
    got: set[int] = set()
    for row, where, rec in PoolReader(pool, check_duplicates=False).raw(start_row=int(rows.min()), only=position):
        i = position.get(row)
        if i is None:
            continue
        if isinstance(rec, RecordError):
            raise _invalid(where, row, rec)
        identities.check(row, where, rec)
        yield Fetched(i, row, where, rec)
        got.add(row)
        if len(got) == len(position):
            return
    raise _missing(pool, rows, [i for r, i in position.items() if r not in got])


def _streamed_in_order(pool, rows: np.ndarray, identities: Identities, scratch_dir) -> Iterator[Fetched]:
    if not len(rows):
        return
    offsets = np.full((len(rows), 2), -1, dtype=np.int64)
    where_of: list[str] = [""] * len(rows)
    with tempfile.TemporaryFile(dir=scratch_dir) as scratch:
        for f in _streamed(pool, rows, identities):
            data = pickle.dumps(f.record, protocol=pickle.HIGHEST_PROTOCOL)  # exact: big ints, key order, types
            offsets[f.index] = (scratch.tell(), len(data))
            where_of[f.index] = f.where
            scratch.write(data)
        scratch.flush()
        with mmap.mmap(scratch.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            for i in range(len(rows)):
                off, length = offsets[i]
                yield Fetched(i, int(rows[i]), where_of[i], pickle.loads(mm[off:off + length]))
