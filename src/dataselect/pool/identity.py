"""Each record's identity, kept at embed time and checked whenever a record is read back from its pool.

``embed`` stores, per row, ``id`` and ``record_hash``: the xxh3-64 of the record as parsed (its
orjson serialisation, so whitespace and line endings do not count, every field and value does).
Every command that reads records of given rows back from the pool -- export, report, neighbors,
score, loss scoring of representatives -- compares each one with what the store recorded
and refuses, in one line naming the file and line, a record that differs: a pool edited, re-ordered
or swapped after embedding no longer passes its fingerprint (name, size, first and last MiB) alone.

Stores written before ``record_hash`` existed are checked by ``id``, where the record has one.
"""

from __future__ import annotations

import json

import numpy as np
import orjson
import xxhash

from dataselect.errors import InputError
from dataselect.pool.records import RecordError

HASH_COLUMN = "record_hash"
MAX_DEPTH = 254  # orjson's nesting limit; no real instruction record comes near it


def record_hash(rec) -> int:
    """xxh3-64 of the parsed record's serialisation (uint64 as a Python int).

    Raises :class:`RecordError` for a record nested deeper than ``MAX_DEPTH`` levels."""
    try:
        data = orjson.dumps(rec)
    except TypeError as exc:
        if "Recursion" in str(exc):
            raise RecordError(f"record is nested more than {MAX_DEPTH} levels deep") from None
        # integers beyond 64 bits: the standard library, deterministic all the same
        data = json.dumps(rec, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass")
    return xxhash.xxh3_64_intdigest(data)


class Identities:
    """What a store recorded of some pool rows: ``check(row, where, rec)`` refuses a record that differs.

    rows : (m,) pool row numbers; ids : (m,) their stored ids; hashes : (m,) uint64 or None (old store).
    """

    def __init__(self, rows, ids, hashes=None, source: str = "the store"):
        rows = np.asarray(rows, dtype=np.int64)
        self._id = dict(zip(rows.tolist(), [str(i) for i in ids], strict=True))
        self._hash = None if hashes is None else dict(zip(rows.tolist(), np.asarray(hashes, np.uint64).tolist(),
                                                          strict=True))
        self.source = source

    @classmethod
    def of_table(cls, table, source: str) -> Identities:
        """The identities an Arrow table of rows holds (a shard, a selection): ``row``, ``id`` and, when
        present, ``record_hash``."""
        hashes = table.column(HASH_COLUMN).to_numpy() if HASH_COLUMN in table.column_names else None
        return cls(table.column("row").to_numpy(), table.column("id").to_pylist(), hashes, source)

    @classmethod
    def of_store(cls, store, rows) -> Identities:
        """The identities ``store`` recorded for pool ``rows``."""
        rows = np.asarray(rows, dtype=np.int64)
        cols = ("id", HASH_COLUMN) if has_hashes(store) else ("id",)
        got = store.take(rows, cols)
        return cls(rows, got["id"], got.get(HASH_COLUMN), f"the store {store.path}")

    def check(self, row: int, where: str, rec) -> None:
        expected = self._id.get(int(row))
        if expected is None:
            return
        if self._hash is not None:
            if record_hash(rec) != self._hash[int(row)]:
                raise InputError(where, self._differs(row, expected, rec))
            return
        own = rec.get("id") if isinstance(rec, dict) else None
        if own is not None and str(own) != expected and not expected.startswith(f"{own}-"):
            raise InputError(where, self._differs(row, expected, rec))

    def _differs(self, row: int, expected: str, rec) -> str:
        own = rec.get("id") if isinstance(rec, dict) else None
        seen = f" (it holds id {own!r})" if own is not None and str(own) != expected else ""
        return (f"pool row {row} is not the record {self.source} embedded as id {expected!r}{seen}: the pool file "
                "changed since `dataselect embed` (edited, re-ordered or another file); use the original file, "
                "or embed this one")


def has_hashes(store) -> bool:
    """Whether every shard of ``store`` holds the ``record_hash`` column (stores since issue 24)."""
    return all(HASH_COLUMN in names for names in store.shard_columns())
