"""Every record read back from a pool is the one that was embedded (issue 24.1-2; pool/identity.py)."""

from __future__ import annotations

import json

import pytest

from conftest import make_records, run_cli, write_jsonl
from dataselect.pool.identity import record_hash
from dataselect.selection import read_selection
from dataselect.store import Store

N = 2400
LINE = 1000  # bytes per line: the pool is over 2 MiB, so its fingerprint's first and last MiB miss the middle


def padded_pool(path, n: int = N):
    """A pool of equal-length lines (a padding field), so swapping two lines keeps the file's size."""
    lines = []
    for rec in make_records(n, seed=7, long_tail=False):
        rec["meta"] = ""
        rec["meta"] = "x" * (LINE - 1 - len(json.dumps(rec)))
        lines.append(json.dumps(rec))
    assert {len(x) for x in lines} == {LINE - 1}
    return write_jsonl(path, lines)


@pytest.fixture(scope="module")
def embedded(tmp_path_factory, tiny_llama):
    tmp = tmp_path_factory.mktemp("identity")
    pool = padded_pool(tmp / "pool.jsonl")
    assert pool.stat().st_size > 2 * (1 << 20)
    run_cli("embed", pool, "-m", tiny_llama, "-o", tmp / "store", "-q", "--max-length", "32")
    run_cli("run", "--store", tmp / "store", "--method", "random", "--budget", str(N - 10), "--out", tmp / "sel", "-q")
    return tmp, pool


def swapped(tmp, pool, a: int = 1100, b: int = 1120):
    """The pool with lines a and b swapped: both in the middle, outside the fingerprint's first and last MiB."""
    lines = pool.read_bytes().splitlines(keepends=True)
    lines[a], lines[b] = lines[b], lines[a]
    out = tmp / "swapped" / pool.name
    out.parent.mkdir(exist_ok=True)
    out.write_bytes(b"".join(lines))
    assert out.stat().st_size == pool.stat().st_size
    return out


def test_the_store_keeps_each_records_hash(embedded):
    tmp, pool = embedded
    store = Store(tmp / "store")
    hashes = store.column("record_hash")
    records = [json.loads(line) for line in pool.read_text().splitlines()]
    assert hashes.tolist() == [record_hash(r) for r in records]
    table, _ = read_selection(tmp / "sel")
    assert table.column("record_hash").to_pylist() == [int(hashes[r]) for r in table.column("row").to_pylist()]


def test_export_refuses_a_pool_whose_lines_were_swapped(embedded, tmp_path):
    """Issue 24.1: export exited 0 and wrote, for a selected row, the record of another (the swapped line)."""
    tmp, pool = embedded
    other = swapped(tmp, pool)
    table, _ = read_selection(tmp / "sel")
    assert {1100, 1120} & set(table.column("row").to_pylist())
    _, err = run_cli("export", tmp / "sel", "--pool", other, "--out", tmp_path / "out.jsonl", expect=2)
    assert f"{other}:11" in err and "is not the record" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out.jsonl").exists() and not list(tmp_path.iterdir())
    run_cli("export", tmp / "sel", "--pool", pool, "--out", tmp_path / "ok.jsonl")  # the original still exports


def test_export_refuses_an_edited_record_of_the_same_size(embedded, tmp_path):
    tmp, pool = embedded
    lines = pool.read_bytes().splitlines(keepends=True)
    lines[1200] = lines[1200].replace(b'"meta": "xx', b'"meta": "yx', 1)
    edited = tmp_path / "edited" / pool.name
    edited.parent.mkdir()
    edited.write_bytes(b"".join(lines))
    _, err = run_cli("export", tmp / "sel", "--pool", edited, "--out", tmp_path / "out.jsonl", expect=2)
    assert f"{edited}:1201" in err and "pool row 1200" in err


def test_report_with_another_pool_is_refused(embedded, tmp_path):
    """Issue 24.2: report --pool OTHER showed the other pool's prompts beside the selected ids, exit 0."""
    tmp, pool = embedded
    other = write_jsonl(tmp_path / "other.jsonl", make_records(50, seed=1))
    _, err = run_cli("report", tmp / "sel", "--pool", other, "--out", tmp_path / "r.html", expect=2)
    assert "is not the pool" in err and len(err.strip().splitlines()) == 1
    # the report shows the top-ranked rows: swap the first one's line with its neighbour's
    first = read_selection(tmp / "sel")[0].column("row")[0].as_py()
    _, err = run_cli("report", tmp / "sel", "--pool", swapped(tmp, pool, first, first + 1), "--out",
                     tmp_path / "r.html", expect=2)
    assert ("is not the record" in err or "is not the pool" in err) and not (tmp_path / "r.html").exists()


def test_neighbors_and_score_check_the_records_they_read(embedded, tmp_path):
    tmp, pool = embedded
    other = swapped(tmp, pool)
    _, err = run_cli("neighbors", tmp / "store", "--row", "1110", "-k", "2400", "--pool", other, expect=2)
    assert "is not the record" in err
    _, err = run_cli("score", tmp / "store", "--pool", other, expect=2)
    assert "is not the record" in err and f"{other}:11" in err
