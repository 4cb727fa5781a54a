"""A selection: which pool rows were picked, in what order, with what score.

On disk a selection is a folder, written atomically:

* ``selection.arrow``: columns ``row`` (int64, pool row number), ``id`` (string), ``rank`` (int64,
  0 = picked first), ``score`` (float32), ``task`` (string, may be null), ``weight`` (float32,
  importance weight; 1 where the method has none), ``record_hash`` (uint64, the record's identity as
  embedded: export checks every record it writes against it; absent for stores from before it),
  plus any method-specific columns (e.g. ``cluster_path``).
* ``selection.json``: method, parameters, seed, budget, the stores' hashes and pool fingerprint,
  the keys of the artefacts it used (``artefacts``: kind -> key), package version, wall time,
  counts per task and per source.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from dataselect.errors import DataselectError
from dataselect.outputs import atomic_dir

ARROW = "selection.arrow"
META = "selection.json"


@dataclass
class Selection:
    """What a selector returns. All arrays have length n (the number picked), in selection order.

    rows : (n,) int64 pool row numbers, no duplicates.
    scores : (n,) float32 (higher = picked earlier for score-based methods).
    tasks : (n,) object array of task names, or None.
    weights : (n,) float32 importance weights, or None (= all ones).
    extra : further (n,) columns to store, e.g. ``cluster_path``.
    info : what the method wants recorded in ``selection.json`` (effective parameters, timings).
    artefacts : kind -> key of the artefacts beside the store it used (``selection.json`` ``artefacts``:
        report, explain and compare read those, never rebuild them).
    """

    rows: np.ndarray
    scores: np.ndarray
    tasks: np.ndarray | None = None
    weights: np.ndarray | None = None
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    artefacts: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        self.rows = np.asarray(self.rows, dtype=np.int64)
        self.scores = np.asarray(self.scores, dtype=np.float32)
        n = len(self.rows)
        if len(np.unique(self.rows)) != n:
            raise AssertionError("a selection must not hold a row twice")
        for name, arr in [("scores", self.scores), ("tasks", self.tasks), ("weights", self.weights),
                          *self.extra.items()]:
            if arr is not None and len(arr) != n:
                raise AssertionError(f"selection column {name} has {len(arr)} entries for {n} rows")

    def __len__(self) -> int:
        return len(self.rows)

    def table(self, ids: np.ndarray, record_hashes: np.ndarray | None = None) -> pa.Table:
        """The ``selection.arrow`` table; ``ids`` and ``record_hashes`` are what the store recorded of each row."""
        n = len(self.rows)
        cols = {
            "row": pa.array(self.rows, pa.int64()),
            "id": pa.array(list(ids), pa.string()),
            "rank": pa.array(np.arange(n, dtype=np.int64)),
            "score": pa.array(self.scores, pa.float32()),
            "task": pa.array(list(self.tasks) if self.tasks is not None else [None] * n, pa.string()),
            "weight": pa.array(self.weights if self.weights is not None else np.ones(n), pa.float32()),
        }
        if record_hashes is not None:
            cols["record_hash"] = pa.array(np.asarray(record_hashes, dtype=np.uint64), pa.uint64())
        for name, arr in self.extra.items():
            cols[name] = pa.array(arr.tolist() if getattr(arr, "dtype", None) is np.dtype(object) else arr)
        return pa.table(cols)


def write_selection(out, table: pa.Table, meta: dict, overwrite: bool = False, inputs=()) -> Path:
    """Write ``selection.arrow`` and ``selection.json`` into the folder ``out`` atomically."""
    with atomic_dir(out, overwrite=overwrite, inputs=inputs) as tmp:
        with pa.OSFile(str(tmp / ARROW), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
            w.write_table(table)
        (tmp / META).write_text(json.dumps(meta, indent=2) + "\n")
    return Path(out)


def read_selection(path) -> tuple[pa.Table, dict]:
    """Return (table, meta) of a selection folder."""
    path = Path(path)
    if not (path / ARROW).is_file() or not (path / META).is_file():
        raise DataselectError(f"{path}: not a selection folder (needs {ARROW} and {META})")
    with pa.memory_map(str(path / ARROW)) as mm:
        table = pa.ipc.open_file(mm).read_all()
    try:
        meta = json.loads((path / META).read_text())
    except json.JSONDecodeError as exc:
        raise DataselectError(f"{path / META}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    return table, meta
