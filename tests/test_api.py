"""The Python API (issue 16): docs/python.md's example runs as written, through the CLI's code paths."""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import pytest

import dataselect as ds
from conftest import make_records, run_cli, write_jsonl
from dataselect.errors import DataselectError

ROOT = Path(__file__).resolve().parents[1]


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


def test_docs_python_example_runs_as_written(tmp_path, monkeypatch):
    (block,) = python_blocks(ROOT / "docs" / "python.md")
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block, "docs/python.md", "exec"), {})
    lines = out.getvalue().splitlines()
    assert lines[0] == "1600 384"
    assert lines[1] == "{'code': 80, 'math': 80}"
    assert lines[-1] == "<SelectionResult rds+: 160 of 1,600 rows, saved in sel/rds>"
    exported = [json.loads(x) for x in (tmp_path / "selected.jsonl").read_text().splitlines()]
    assert len(exported) == 160 and exported[0]["dataselect"]["method"] == "rds+"
    # the saved folder is what `dataselect run` writes: the CLI reads it, and the same run agrees
    run_cli("explain", tmp_path / "sel" / "rds", "--row", "0")
    run_cli("run", "--store", tmp_path / "stores" / "pool", "--method", "rds+", "--queries",
            tmp_path / "stores" / "queries", "--budget", "10%", "--out", tmp_path / "sel" / "cli", "-q")
    a, b = ds.load_selection(tmp_path / "sel" / "rds"), ds.load_selection(tmp_path / "sel" / "cli")
    assert a.rows.tolist() == b.rows.tolist()
    assert a.to_arrow().column("score").equals(b.to_arrow().column("score"))


def test_api_errors_are_dataselect_errors(tmp_path, tiny_llama):
    pool = write_jsonl(tmp_path / "pool.jsonl", make_records(20))
    with pytest.raises(DataselectError, match="no option bogus"):
        ds.embed(pool, model=tiny_llama, out=tmp_path / "s", bogus=1)
    store = ds.embed(pool, model=tiny_llama, out=tmp_path / "s", progress=False, with_loss=True)
    with pytest.raises(DataselectError, match="has no parameter --kk"):
        ds.select(store, method="random", budget=3, kk=1)
    with pytest.raises(DataselectError, match="needs --queries"):
        ds.select(store, method="rds+", budget=3)
    sel = ds.select(tmp_path / "s", method="loss", budget=5, pick="middle", progress=False)
    assert len(sel) == 5 and sel.path is None and "not saved" in repr(sel)
    sel.save(tmp_path / "sel")
    with pytest.raises(DataselectError, match="exists"):
        sel.save(tmp_path / "sel")
    ds.export(tmp_path / "sel", pool=pool, out=tmp_path / "a.jsonl")
    ds.export(sel, pool=pool, out=tmp_path / "b.jsonl")
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    assert set(ds.methods()) == {"random", "rds+", "kmeans-sensitivity", "hierarchical-kmeans", "loss"}
