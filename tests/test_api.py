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
    assert lines[0] == "400 576"
    assert lines[1] == "{'code': 20, 'math': 20}"
    assert lines[-2] == "True"  # rds+'s picks are less diverse than random's (Vendi score)
    assert lines[-1] == "<SelectionResult rds+: 40 of 400 rows, saved in sel/rds>"
    exported = [json.loads(x) for x in (tmp_path / "selected.jsonl").read_text().splitlines()]
    assert len(exported) == 40 and exported[0]["dataselect"]["method"] == "rds+"
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


@pytest.fixture(scope="module")
def vec_store(tmp_path_factory):
    import numpy as np

    from dataselect.store.synthetic import store_from_array, unit_rows

    tmp = tmp_path_factory.mktemp("api")
    rng = np.random.default_rng(0)
    store_from_array(tmp / "pool", unit_rows(rng, 300, 8), shard_rows=100)
    store_from_array(tmp / "q", unit_rows(rng, 4, 8), kind="queries", tasks=["a", "a", "b", "b"])
    return tmp


@pytest.mark.parametrize("seed", [-1, 2**70, 1.5, "3", True])
def test_a_bad_seed_is_one_error_from_python_and_the_cli(vec_store, seed, tmp_path):
    """Issue 24.6: seed -1 was a numpy traceback; 2**70 was accepted."""
    with pytest.raises(DataselectError, match="--seed .*must be an integer from 0 to 4,294,967,295"):
        ds.select(vec_store / "pool", method="random", budget=10, seed=seed, progress=False)
    if isinstance(seed, int) and not isinstance(seed, bool):
        _, err = run_cli("run", "--store", vec_store / "pool", "--method", "random", "--budget", "10",
                         "--seed", str(seed), "--out", tmp_path / "s", expect=2)
        assert "--seed" in err and len(err.strip().splitlines()) == 1


def test_python_arguments_of_the_wrong_kind_are_one_error(vec_store, tmp_path):
    """Issue 24.8: each of these was a TypeError or a walk over a string's characters."""
    pool, q = vec_store / "pool", vec_store / "q"
    sel = ds.select(pool, method="rds+", queries=str(q), budget=10, progress=False)  # one path, not its characters
    assert len(sel) == 10 and sel.meta["query_stores"][0]["path"] == str(q.resolve())
    cases = [
        (lambda: ds.select(None, method="random", budget=10), "store: expected a path or a store, got NoneType"),
        (lambda: ds.select(pool, method="hierarchical-kmeans", budget=10, k=-3), "--k"),
        (lambda: ds.select(pool, method="kmeans-sensitivity", budget=10, k=-1, variant="coreset"), "--k"),
        (lambda: ds.export(42, pool="x.jsonl", out=tmp_path / "o.jsonl"), "selection: expected a path or a store"),
        (lambda: ds.embed("pool.jsonl", model="bundled", out=tmp_path / "e", max_length="x"),
         "--max-length 'x': expected int"),
        (lambda: ds.embed("pool.jsonl", model="bundled", out=None), "out: expected a path"),
    ]
    for call, message in cases:
        with pytest.raises(DataselectError, match=re.escape(message)):
            call()


def test_a_missing_local_model_folder_is_said_so(tmp_path):
    pool = write_jsonl(tmp_path / "pool.jsonl", make_records(3))
    for name in (str(tmp_path / "no-such-model"), "./models/nothing", "../x"):
        with pytest.raises(DataselectError, match="model folder .* does not exist"):
            ds.embed(pool, model=name, out=tmp_path / "s", progress=False)
