"""``dataselect export``: a selection + its pool -> JSONL ready for fine-tuning.

Plain JSONL pools: every record's byte offset is found with a numpy newline scan, then only the
selected lines are read, at their offsets, in output order; each keeps its own bytes, with the
provenance field spliced in. Other pools (compressed, Parquet, ``datasets``, hub) are streamed once:
selected records are appended to a scratch file as they are met and their offsets remembered, then
written in output order from it. Either way memory holds offsets, never the records, and the output
is written under a temporary name and renamed into place; ``.jsonl.gz`` is compressed. Every record
written is first checked against the identity the store recorded for its row (pool.identity): a pool
changed after embedding is refused at the first record that differs, naming its file and line.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import mmap
import os
import tempfile
from pathlib import Path

import numpy as np
import orjson

from dataselect.errors import DataselectError, InputError
from dataselect.outputs import claim, writing
from dataselect.pool import PoolReader, normalize_record, pool_fingerprint
from dataselect.pool.identity import Identities
from dataselect.pool.offsets import record_offsets
from dataselect.pool.reader import parse_line, plain_jsonl_files
from dataselect.pool.records import RecordError
from dataselect.selection import read_selection

ORDERS = ("selection", "pool")
FORMATS = ("original", "messages")


def export_selection(selection_dir, pool, out, *, order: str = "selection", fmt: str = "original",
                     bare: bool = False, overwrite: bool = False) -> int:
    """Write the selected records of ``pool`` to ``out``; returns the number written.

    Each line is the original record unchanged (``fmt="original"``) or ``{"id", "messages"}``
    (``fmt="messages"``), plus a ``dataselect`` field (score, task, rank, row, source, method,
    weight) unless ``bare``.
    """
    claim(Path(out), overwrite=overwrite, inputs=[pool, selection_dir], what="export")
    table, meta = read_selection(selection_dir)
    return export_table(table, meta, pool, out, order=order, fmt=fmt, bare=bare, overwrite=overwrite,
                        inputs=[selection_dir])


def export_table(table, meta: dict, pool, out, *, order: str = "selection", fmt: str = "original",
                 bare: bool = False, overwrite: bool = False, inputs=()) -> int:
    """:func:`export_selection` for a selection held in memory (``table``, ``meta``)."""
    if order not in ORDERS:
        raise DataselectError(f"--order {order!r}: choose from {', '.join(ORDERS)}")
    if fmt not in FORMATS:
        raise DataselectError(f"--format {fmt!r}: choose from {', '.join(FORMATS)}")
    out = Path(out)
    inputs = [pool, *inputs]
    claim(out, overwrite=overwrite, inputs=inputs, what="export")
    expected = meta["pool_store"]["pool_fingerprint"]
    if pool_fingerprint(pool) != expected:
        raise DataselectError(f"{pool} is not the pool this selection was made from (the store was embedded "
                              f"from {meta['pool_store']['pool_name']!r} with a different fingerprint)")
    rows = table.column("row").to_numpy()
    info = {c: table.column(c).to_pylist() for c in ("score", "task", "weight", "id")}
    identities = Identities.of_table(table, "the selection's store")
    files = plain_jsonl_files(pool)
    if files is not None:
        _export_plain(files, rows, info, meta, out, identities, order=order, fmt=fmt, bare=bare, overwrite=overwrite,
                      inputs=inputs)
        return len(rows)
    rank_of = {int(r): i for i, r in enumerate(rows)}
    offsets = np.full((len(rows), 2), -1, dtype=np.int64)
    seen_order = []
    reader = PoolReader(pool, check_duplicates=False)
    with tempfile.TemporaryFile(dir=out.parent if out.parent.exists() else None) as scratch:
        for row, where, rec in reader.raw(only=rank_of):
            rank = rank_of.get(row)
            if rank is None:
                continue
            if isinstance(rec, RecordError):
                raise InputError(where, f"selected row {row} is not a valid record now ({rec})")
            identities.check(row, where, rec)
            obj = _output_record(rec, row, rank, info, meta, fmt, bare, where)
            line = _jsonl_line(obj)
            offsets[rank] = (scratch.tell(), len(line))
            scratch.write(line)
            seen_order.append(rank)
        missing = np.nonzero(offsets[:, 0] < 0)[0]
        if len(missing):
            raise DataselectError(f"{pool}: selected row {int(rows[missing[0]])} is not in the pool "
                                  f"({len(missing)} selected rows missing)")
        scratch.flush()
        ranks = range(len(rows)) if order == "selection" else seen_order
        with (mmap.mmap(scratch.fileno(), 0, access=mmap.ACCESS_READ) as mm,
              _output(out, overwrite, inputs) as fh):
            for rank in ranks:
                off, length = offsets[rank]
                fh.write(mm[off:off + length])
    return len(rows)


@contextlib.contextmanager
def _output(out: Path, overwrite: bool, inputs):
    """The export file, open for writing (gzip for ``.gz``), swapped into place and synced on success."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with writing(out, overwrite=overwrite, inputs=inputs, what="export") as tmp:
        opener = gzip.open if out.name.endswith(".gz") else open
        with opener(tmp, "wb") as fh:
            yield fh
            if opener is open:
                fh.flush()
                os.fsync(fh.fileno())


def _export_plain(files: list[Path], rows: np.ndarray, info: dict, meta: dict, out: Path, identities: Identities, *,
                  order: str, fmt: str, bare: bool, overwrite: bool, inputs) -> None:
    """Plain JSONL pools: find every record's byte offset with numpy, then read, annotate and write only
    the selected lines, in the output's order, each read at its offset."""
    spans = [record_offsets(f) for f in files]
    counts = np.array([len(s[0]) for s in spans], dtype=np.int64)
    firsts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    total = int(counts.sum())
    bad = np.flatnonzero((rows < 0) | (rows >= total))
    if len(bad):
        raise DataselectError(f"{files[0] if len(files) == 1 else files[0].parent}: selected row "
                              f"{int(rows[bad[0]])} is not in the pool ({len(bad)} selected rows missing)")
    ranks = np.arange(len(rows)) if order == "selection" else np.argsort(rows, kind="stable")
    # everything about each selected line, gathered with numpy in output order, then as Python lists
    file_of = np.searchsorted(firsts, rows[ranks], side="right") - 1
    local = rows[ranks] - firsts[file_of]
    where_in = [np.empty(len(ranks), np.int64) for _ in range(3)]
    for k, span in enumerate(spans):
        sel = file_of == k
        for dst, src in zip(where_in, span, strict=True):
            dst[sel] = src[local[sel]]
    todo = zip(ranks.tolist(), rows[ranks].tolist(), file_of.tolist(), *(a.tolist() for a in where_in), strict=True)
    handles = []
    try:  # pread, not mmap: reading millions of scattered lines must not grow the process to the pool's size
        for f in files:
            handles.append(open(f, "rb"))  # noqa: SIM115  (closed in finally)
        fds = [h.fileno() for h in handles]
        with _output(out, overwrite, inputs) as fh:
            pending: list[bytes] = []
            for rank, row, k, start, length, line_no in todo:
                raw = os.pread(fds[k], length, start)
                rec = parse_line(raw, line_no)
                if isinstance(rec, RecordError):
                    raise InputError(f"{files[k]}:{line_no}", f"selected row {row} is not a valid record now ({rec})")
                identities.check(row, f"{files[k]}:{line_no}", rec)
                line = _original_line(raw, rec, row, rank, info, meta, bare) if fmt == "original" else None
                pending.append(line or _jsonl_line(_output_record(rec, row, rank, info, meta, fmt, bare,
                                                                  f"{files[k]}:{line_no}")))
                if len(pending) >= 4096:
                    fh.write(b"".join(pending))
                    pending.clear()
            fh.write(b"".join(pending))
    finally:
        for h in handles:
            h.close()


def _jsonl_line(obj) -> bytes:
    """One JSONL line, UTF-8: orjson (2.2x json.dumps here), json for what orjson refuses (big ints)."""
    try:
        return orjson.dumps(obj, option=orjson.OPT_APPEND_NEWLINE)
    except TypeError:
        return (json.dumps(obj, ensure_ascii=False) + "\n").encode("utf-8")


def _provenance(rec, row, rank, info, meta) -> dict:
    source = rec.get("source") or rec.get("dataset")
    return {"rank": rank, "row": row, "score": info["score"][rank], "task": info["task"][rank],
            "weight": info["weight"][rank], "source": source, "method": meta["method"]}


def _original_line(raw: bytes, rec, row, rank, info, meta, bare) -> bytes | None:
    """The record's own bytes with the provenance field spliced in before its closing brace (key
    order, number formats and escapes exactly as in the pool); None when that is not possible."""
    if not isinstance(rec, dict) or "dataselect" in rec:
        return None
    body = raw.strip()
    if body.startswith(b"\xef\xbb\xbf"):
        body = body[3:].strip()
    if not body.endswith(b"}"):
        return None
    if bare:
        return body + b"\n"
    sep = b"," if rec else b""
    return body[:-1].rstrip() + sep + b'"dataselect":' + orjson.dumps(_provenance(rec, row, rank, info, meta)) + b"}\n"


def _output_record(rec, row, rank, info, meta, fmt, bare, where):
    if fmt == "messages":
        try:
            msgs = normalize_record(rec)
        except RecordError as exc:
            raise InputError(where, str(exc)) from None
        obj = {"id": info["id"][rank], "messages": msgs}
    else:
        obj = dict(rec)
    if not bare:
        obj["dataselect"] = _provenance(rec, row, rank, info, meta)
    return obj
