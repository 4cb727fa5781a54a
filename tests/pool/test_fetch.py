"""pool/fetch.py: the one way records of given pool rows are read back, checked against the store."""

from __future__ import annotations

import gzip
import json

import pytest

from conftest import make_records, write_jsonl
from dataselect.errors import DataselectError, InputError
from dataselect.pool.fetch import records
from dataselect.pool.identity import Identities, record_hash


def _identities(recs, rows):
    return Identities(rows, [recs[r]["id"] for r in rows], [record_hash(recs[r]) for r in rows])


@pytest.mark.parametrize("order", ["rows", "pool"])
def test_plain_and_streamed_pools_give_the_same_records_in_the_order_asked(tmp_path, order):
    recs = make_records(60)
    plain = write_jsonl(tmp_path / "p.jsonl", recs)
    packed = tmp_path / "p.jsonl.gz"
    with gzip.open(packed, "wt") as fh:
        fh.write(plain.read_text())
    rows = [41, 3, 17, 59, 0, 28]
    expect = rows if order == "rows" else sorted(rows)
    for pool in (plain, packed):
        got = list(records(pool, rows, _identities(recs, rows), order=order))
        assert [f.row for f in got] == expect
        assert [f.record for f in got] == [recs[r] for r in expect]
        assert [rows[f.index] for f in got] == expect
        assert all(f.where.endswith(f":{f.row + 1}") for f in got)
        assert all((f.raw is not None) == (pool == plain) for f in got)


def test_a_record_that_changed_is_refused_naming_its_line(tmp_path):
    recs = make_records(20)
    ids = _identities(recs, list(range(20)))
    changed = [dict(r) for r in recs]
    changed[7]["output" if "output" in changed[7] else "completion" if "completion" in changed[7] else "id"] = "edited"
    pool = write_jsonl(tmp_path / "p.jsonl", changed)
    with pytest.raises(InputError) as info:
        list(records(pool, [2, 7], ids))
    assert f"{pool}:8" in str(info.value) and "pool row 7" in str(info.value)


def test_rows_the_pool_does_not_hold_are_refused(tmp_path):
    recs = make_records(10)
    pool = write_jsonl(tmp_path / "p.jsonl", recs)
    with pytest.raises(DataselectError, match="pool row 12 is not in the pool"):
        list(records(pool, [1, 12], Identities([1], [recs[1]["id"]])))
    packed = tmp_path / "p.jsonl.gz"
    with gzip.open(packed, "wt") as fh:
        fh.write("\n".join(json.dumps(r) for r in recs) + "\n")
    with pytest.raises(DataselectError, match="pool row 12 is not in the pool"):
        list(records(packed, [1, 12], Identities([1], [recs[1]["id"]])))
