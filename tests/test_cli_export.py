"""End to end through the CLI: embed -> run -> export, configs, and export round-trips."""

from __future__ import annotations

import gzip
import json

import pytest

from conftest import make_records, run_cli, write_jsonl
from dataselect.pool import normalize_record
from dataselect.selection import read_selection


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, tiny_llama):
    tmp = tmp_path_factory.mktemp("e2e")
    pool = write_jsonl(tmp / "pool.jsonl", make_records(60, seed=3))
    run_cli("embed", pool, "-m", tiny_llama, "-o", tmp / "store", "-q", "--shard-rows", "25")
    q = write_jsonl(tmp / "q.jsonl", [{"prompt": "what is two plus three", "task": "math"},
                                      {"prompt": "def return print", "task": "code"},
                                      {"prompt": "poem story", "task": "writing"}])
    run_cli("embed", q, "-m", tiny_llama, "-o", tmp / "qstore", "-q", "--tasks-from-records")
    return tmp, pool


def test_run_and_export_roundtrip(pipeline):
    tmp, pool = pipeline
    _, err = run_cli("run", "--store", tmp / "store", "--method", "rds+", "--queries", tmp / "qstore", "--budget", "20",
                     "--out", tmp / "sel", "--round-robin", "next-unique")
    assert "selected 20 of 60 rows with rds+" in err
    table, meta = read_selection(tmp / "sel")
    assert meta["params"]["round_robin"] == "next-unique" and set(meta["counts_per_task"]) == {"math", "code", "writing"}
    run_cli("export", tmp / "sel", "--pool", pool, "--out", tmp / "out.jsonl")
    originals = [json.loads(line) for line in pool.read_text().splitlines()]
    exported = [json.loads(line) for line in (tmp / "out.jsonl").read_text().splitlines()]
    rows = table.column("row").to_pylist()
    assert len(exported) == 20
    for rank, (row, rec) in enumerate(zip(rows, exported, strict=True)):
        prov = rec.pop("dataselect")
        assert rec == originals[row]  # the original record, unchanged
        assert prov["rank"] == rank and prov["row"] == row and prov["source"] == originals[row]["source"]
    run_cli("export", tmp / "sel", "--pool", pool, "--out", tmp / "o.jsonl.gz", "--order", "pool", "--bare",
            "--format", "messages")
    with gzip.open(tmp / "o.jsonl.gz", "rt") as fh:
        msgs = [json.loads(line) for line in fh]
    assert [m["id"] for m in msgs] == [f"id{r}" for r in sorted(rows)]
    assert msgs[0]["messages"] == normalize_record(originals[sorted(rows)[0]]) and "dataselect" not in msgs[0]


def test_export_refuses_other_pool_and_existing_output(pipeline):
    tmp, pool = pipeline
    run_cli("run", "--store", tmp / "store", "--method", "random", "--budget", "5", "--out", tmp / "r", "--seed", "3")
    other = write_jsonl(tmp / "other.jsonl", make_records(60, seed=4))
    _, err = run_cli("export", tmp / "r", "--pool", other, "--out", tmp / "x.jsonl", expect=2)
    assert "is not the pool this selection was made from" in err
    run_cli("export", tmp / "r", "--pool", pool, "--out", tmp / "x.jsonl")
    _, err = run_cli("export", tmp / "r", "--pool", pool, "--out", tmp / "x.jsonl", expect=2)
    assert "already exists" in err


def test_config_file_with_overrides(pipeline, tmp_path):
    tmp, _ = pipeline
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"method: rds+\nstore: {tmp / 'store'}\nqueries: [{tmp / 'qstore'}]\nbudget: 10\n"
                   f"out: {tmp_path / 'from_cfg'}\nparams:\n  aggregate: mean\n")
    run_cli("run", "--config", cfg)
    _, meta = read_selection(tmp_path / "from_cfg")
    assert meta["budget"]["rows"] == 10 and meta["params"]["aggregate"] == "mean"
    run_cli("run", "--config", cfg, "--budget", "25%", "--aggregate", "max", "--out", tmp_path / "over")
    _, meta = read_selection(tmp_path / "over")
    assert meta["budget"]["rows"] == 15 and meta["params"]["aggregate"] == "max"
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: rds+\nbudgett: 5\n")
    _, err = run_cli("run", "--config", bad, expect=2)
    assert "unknown setting(s) budgett" in err


def test_run_errors_are_one_line(pipeline):
    tmp, _ = pipeline
    _, err = run_cli("run", "--store", tmp / "store", "--method", "rds+", "--budget", "500", "--queries", tmp / "qstore",
                     "--out", tmp / "big", expect=2)
    assert err.strip().splitlines() == ["dataselect: error: --budget 500 (500 rows) is larger than the pool "
                                        "(60 rows); pass --allow-all to select the whole pool"]
    _, err = run_cli("run", "--store", tmp / "store", "--method", "random", "--budget", "5", "--k", "3", "--out", tmp / "k",
                     expect=2)
    assert "has no parameter --k" in err
    _, err = run_cli("run", "--store", tmp / "qstore", "--method", "random", "--budget", "1", "--out", tmp / "k", expect=2)
    assert "is a queries store, expected a pool store" in err


def test_methods_lists_registry(capsys):
    run_cli("methods")
    out = capsys.readouterr().out
    assert "rds+  (needs --queries)" in out and "--round-robin paper|next-unique  (default: paper)" in out and "random" in out


def test_console_scripts_installed():
    import subprocess
    import sys
    from pathlib import Path

    for name in ("dataselect", "select"):
        exe = Path(sys.executable).parent / name  # installed beside the interpreter running the tests
        assert exe.is_file(), f"console script {name} not installed"
        out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=True).stdout
        assert "embed" in out and "run" in out


def test_shipped_presets_are_valid():
    from pathlib import Path

    from dataselect.selection_run import load_config
    from dataselect.selectors import build_selector

    presets = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))
    assert len(presets) >= 4
    for path in presets:
        cfg = load_config(path)
        build_selector(cfg["method"], cfg.get("params", {}))  # known method, valid parameters
