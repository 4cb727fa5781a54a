"""Pool reader: every input format, normalisation, ids, rows, and bad input located by file and line."""

from __future__ import annotations

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import make_records, run_cli, write_jsonl
from dataselect.errors import DataselectError, InputError
from dataselect.pool import PoolReader, normalize_record, pool_fingerprint
from dataselect.pool.records import RecordError, content_id


def test_normalise_all_record_shapes():
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"}]
    assert normalize_record({"messages": msgs}) == msgs
    share = {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]}
    assert normalize_record(share) == msgs[1:]
    alpaca = normalize_record({"instruction": "Add", "input": "2 and 3", "output": "5"})
    assert alpaca == [{"role": "user", "content": "Add\n\n2 and 3"}, {"role": "assistant", "content": "5"}]
    assert normalize_record({"instruction": "Add", "input": "", "output": "5"})[0]["content"] == "Add"
    pc = normalize_record({"prompt": "p", "completion": "c"})
    assert pc == [{"role": "user", "content": "p"}, {"role": "assistant", "content": "c"}]
    assert normalize_record({"prompt": "only a prompt"}, require_response=False) == [
        {"role": "user", "content": "only a prompt"}]


@pytest.mark.parametrize("rec,fragment", [
    ({"messages": []}, "'messages' is empty"),
    ({"messages": "hi"}, "must be a list"),
    ({"messages": [{"role": "user", "content": "q"}]}, "no assistant turn"),
    ({"messages": [{"role": "wizard", "content": "q"}, {"role": "assistant", "content": "a"}]}, "unknown role"),
    ({"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "a"}]}, "must be a string"),
    ({"instruction": 5, "output": "x"}, "'instruction' must be a string"),
    ({"text": "hello"}, "unknown record format"),
    ([1, 2], "must be a JSON object"),
])
def test_bad_records_say_what_is_wrong(rec, fragment):
    with pytest.raises(RecordError, match=fragment):
        normalize_record(rec)


def _read_all(path, **kw):
    return list(PoolReader(path, **kw))


def test_jsonl_rows_ids_sources(tmp_path):
    recs = make_records(9)
    del recs[4]["id"]
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in recs[:5]) + "\n\n" + "\n".join(json.dumps(r) for r in recs[5:]) + "\n")
    rows = _read_all(path)
    assert [r.row for r in rows] == list(range(9))  # blank lines are not records
    assert rows[0].id == "id0" and rows[0].source == "alpha"
    assert rows[4].id == content_id(rows[4].messages) and len(rows[4].id) == 16
    assert rows[6].where == f"{path}:8"  # 1-based line, blank line counted
    assert all(r.error is None for r in rows)


def test_compressed_parquet_datasets_and_folders_agree(tmp_path):
    import datasets
    import zstandard

    recs = make_records(30)
    plain = write_jsonl(tmp_path / "p.jsonl", recs)
    with gzip.open(tmp_path / "p.jsonl.gz", "wt") as fh:
        fh.write(plain.read_text())
    (tmp_path / "p.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(plain.read_bytes()))
    msgs_recs = [{"id": r["id"], "messages": normalize_record(r)} for r in recs]
    pq.write_table(pa.Table.from_pylist(msgs_recs), tmp_path / "p.parquet")
    datasets.Dataset.from_list(msgs_recs).save_to_disk(str(tmp_path / "ds"))
    folder = tmp_path / "folder"
    folder.mkdir()
    write_jsonl(folder / "a.jsonl", recs[:10])
    write_jsonl(folder / "b.jsonl", recs[10:])
    expected = [(r.row, r.id, r.messages) for r in _read_all(plain)]
    for p in ["p.jsonl.gz", "p.jsonl.zst", "p.parquet", "ds", "folder"]:
        got = [(r.row, r.id, r.messages) for r in _read_all(tmp_path / p)]
        assert got == expected and len(got) == 30, p
    # resuming mid-pool reads the same rows, also across files of a folder
    assert [r.row for r in PoolReader(folder).rows(start_row=12)] == list(range(12, 30))
    assert [r.id for r in PoolReader(tmp_path / "p.parquet").rows(start_row=25)] == [f"id{i}" for i in range(25, 30)]


def test_bad_input_is_flagged_with_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "a", "completion": \n'
                    '{"prompt": "x", "completion": "y", "id": "dup"}\n{"prompt": "z", "completion": "w", "id": "dup"}\n')
    rows = _read_all(path)
    assert rows[0].error is None
    assert rows[1].error.startswith("invalid JSON") and rows[1].where == f"{path}:2"
    assert rows[2].error is None
    assert "duplicate id 'dup'" in rows[3].error


def test_truncated_gzip_names_line(tmp_path):
    data = gzip.compress(("\n".join(json.dumps(r) for r in make_records(200)) + "\n").encode())
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"cut\.jsonl\.gz:\d+: compressed stream is corrupt or cut short"):
        _read_all(path)


def test_empty_file_and_unknown_format(tmp_path):
    (tmp_path / "e.jsonl").write_text("")
    with pytest.raises(InputError, match=r"e\.jsonl:1: file is empty"):
        PoolReader(tmp_path / "e.jsonl")
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(DataselectError, match="unknown pool format"):
        PoolReader(tmp_path / "x.csv")


def test_parquet_wrong_schema(tmp_path):
    pq.write_table(pa.table({"text": ["a", "b"]}), tmp_path / "w.parquet")
    with pytest.raises(InputError, match=r"w\.parquet:row 0: Parquet schema has none of the columns"):
        _read_all(tmp_path / "w.parquet")


def test_fingerprint_changes_with_content(tmp_path):
    p = write_jsonl(tmp_path / "p.jsonl", make_records(5))
    before = pool_fingerprint(p)
    assert pool_fingerprint(p) == before
    p.write_text(p.read_text().replace("id1", "id9"))
    assert pool_fingerprint(p) != before


@pytest.mark.parametrize("depth", [300, 5000])
def test_a_deeply_nested_row_is_one_bad_row(tmp_path, depth, tiny_llama):
    """Issue 24.5: a row nested 5,000 levels deep gave a RecursionError traceback, --skip-invalid or not."""
    good = {"id": "a", "prompt": "two plus three", "completion": "five"}
    deep = '{"x": ' + "[" * depth + "]" * depth + ', "prompt": "p", "completion": "c"}'
    pool = write_jsonl(tmp_path / "pool.jsonl", [good, deep, {**good, "id": "b"}])
    _, err = run_cli("embed", pool, "-m", tiny_llama, "-o", tmp_path / "s", "-q", expect=2)
    assert f"{pool}:2:" in err and "nested more than 254 levels deep" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "s").exists()
    run_cli("embed", pool, "-m", tiny_llama, "-o", tmp_path / "s", "-q", "--skip-invalid")
    from dataselect.store import Store

    st = Store(tmp_path / "s")
    assert st.n_rows == 2 and st.manifest.counts["rows_skipped"] == 1


def test_skip_reason_kinds_keep_names_and_drop_particulars():
    """Issue 24: skip-reason counts read "invalid UTF-N" and "\\udN"."""
    from dataselect.store.manifest import reason_kind

    assert reason_kind("invalid UTF-8 at byte 12 of the line") == "invalid UTF-8 at byte N of the line"
    assert reason_kind("a lone surrogate \\ud800 at 3") == "a lone surrogate \\ud800 at N"
    assert reason_kind("conversations[3] has unknown role 'x' (expected user)") == "conversations[i] has unknown role 'x'"
    assert reason_kind("line is 3.2 MiB, over the 16 MiB record limit") == "line is N MiB, over the N MiB record limit"
