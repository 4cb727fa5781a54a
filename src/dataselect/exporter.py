"""``dataselect export``: a selection + its pool -> JSONL ready for fine-tuning.

The pool is streamed once. Selected records are appended to a scratch file as they are met (pool
order) and their byte offsets remembered; the output is then written in selection order (or pool
order) from that scratch file, so memory holds offsets, never the records. The output is written
under a temporary name and renamed into place; ``.jsonl.gz`` is compressed.
"""

from __future__ import annotations

import gzip
import json
import mmap
import os
import tempfile
from pathlib import Path

import numpy as np

from dataselect.errors import DataselectError, InputError
from dataselect.outputs import claim, writing
from dataselect.pool import PoolReader, normalize_record, pool_fingerprint
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
    rank_of = {int(r): i for i, r in enumerate(rows)}
    info = {c: table.column(c).to_pylist() for c in ("score", "task", "weight", "id")}
    offsets = np.full((len(rows), 2), -1, dtype=np.int64)
    seen_order = []
    reader = PoolReader(pool, check_duplicates=False)
    with tempfile.TemporaryFile(dir=out.parent if out.parent.exists() else None) as scratch:
        for row, where, rec in reader.raw():
            rank = rank_of.get(row)
            if rank is None:
                continue
            if isinstance(rec, RecordError):
                raise InputError(where, f"selected row {row} is not a valid record now ({rec})")
            obj = _output_record(rec, row, rank, info, meta, fmt, bare, where)
            line = (json.dumps(obj, ensure_ascii=False) + "\n").encode("utf-8")
            offsets[rank] = (scratch.tell(), len(line))
            scratch.write(line)
            seen_order.append(rank)
        missing = np.nonzero(offsets[:, 0] < 0)[0]
        if len(missing):
            raise DataselectError(f"{pool}: selected row {int(rows[missing[0]])} is not in the pool "
                                  f"({len(missing)} selected rows missing)")
        scratch.flush()
        ranks = range(len(rows)) if order == "selection" else seen_order
        out.parent.mkdir(parents=True, exist_ok=True)
        with (mmap.mmap(scratch.fileno(), 0, access=mmap.ACCESS_READ) as mm,
              writing(out, overwrite=overwrite, inputs=inputs, what="export") as tmp):
            opener = gzip.open if out.name.endswith(".gz") else open
            with opener(tmp, "wb") as fh:
                for rank in ranks:
                    off, length = offsets[rank]
                    fh.write(mm[off:off + length])
                if opener is open:
                    fh.flush()
                    os.fsync(fh.fileno())
    return len(rows)


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
        source = rec.get("source") or rec.get("dataset")
        obj["dataselect"] = {"rank": rank, "row": row, "score": info["score"][rank], "task": info["task"][rank],
                             "weight": info["weight"][rank], "source": source, "method": meta["method"]}
    return obj
