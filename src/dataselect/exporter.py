"""``dataselect export``: a selection + its pool -> JSONL ready for fine-tuning.

The selected records come from :func:`dataselect.pool.fetch.records`, in output order: plain JSONL
lines are read at their offsets and keep their own bytes, with the provenance field spliced in;
other pools are streamed once through a scratch file. Memory holds offsets, never the records, and
the output is written under a temporary name and renamed into place; ``.jsonl.gz`` is compressed.
Every record written is first checked against the identity the store recorded for its row
(pool.identity): a pool changed after embedding is refused at the first record that differs, naming
its file and line.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
from pathlib import Path

import orjson

from dataselect.errors import DataselectError, InputError
from dataselect.outputs import claim, writing
from dataselect.pool import normalize_record, pool_fingerprint
from dataselect.pool.fetch import records
from dataselect.pool.identity import Identities
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
    fetched = records(pool, rows, identities, order="rows" if order == "selection" else "pool",
                      scratch_dir=out.parent if out.parent.exists() else None)
    with _output(out, overwrite, inputs) as fh:
        pending: list[bytes] = []
        for f in fetched:
            line = (_original_line(f.raw, f.record, f.row, f.index, info, meta, bare)
                    if fmt == "original" and f.raw is not None else None)
            pending.append(line or _jsonl_line(_output_record(f.record, f.row, f.index, info, meta, fmt, bare,
                                                              f.where)))
            if len(pending) >= 4096:
                fh.write(b"".join(pending))
                pending.clear()
        fh.write(b"".join(pending))
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
