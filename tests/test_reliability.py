"""Reliability: bad-input corpus, interrupts, disk full, kills mid-write, refusals, chaos (3 kills)."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import make_records, run_cli, write_jsonl
from dataselect.selection import read_selection
from dataselect.store import Store
from dataselect.store.synthetic import store_from_array, unit_rows

BAD = Path(__file__).parent / "data" / "bad"
EXPECTED = json.loads((BAD / "expected.json").read_text())
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}


def _embed_args(path, model, out, queries=False, skip=False):
    return ["embed", path, "-m", model, "-o", out, "-q"] + (["--tasks-from-records"] if queries else []) + (
        ["--skip-invalid"] if skip else [])


def test_corpus_is_large_enough():
    assert len(EXPECTED) >= 30


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bad_input_gives_one_line_exit_2_and_no_output(name, tmp_path, tiny_llama):
    case = EXPECTED[name]
    out = tmp_path / "store"
    _, err = run_cli(*_embed_args(BAD / name, tiny_llama, out, case["queries"]), expect=2)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dataselect: error: "), err
    assert case["message"] in lines[0]
    if case["where"]:
        assert f"{BAD / case['where']}" in lines[0] or f"{BAD / case['where']}:" in lines[0]
    assert "Traceback" not in err
    assert not out.exists(), "bad input must leave no output behind"
    if case["skippable"]:
        run_cli(*_embed_args(BAD / name, tiny_llama, out, case["queries"], skip=True))
        man = json.loads((out / "manifest.json").read_text())
        c = man["counts"]
        assert c["rows_skipped"] >= 1 and c["rows_read"] == c["rows_stored"] + c["rows_skipped"]
        assert case["message"] in man["skipped_examples"][0]["reason"]
    else:
        run_cli(*_embed_args(BAD / name, tiny_llama, out, case["queries"], skip=True), expect=2)


def test_50mb_line_is_refused_and_skippable(tmp_path, tiny_llama):
    path = tmp_path / "huge.jsonl"
    with open(path, "w") as fh:
        fh.write(json.dumps({"prompt": "a", "completion": "b"}) + "\n")
        fh.write(json.dumps({"prompt": "x" * (50 << 20), "completion": "y"}) + "\n")
    _, err = run_cli(*_embed_args(path, tiny_llama, tmp_path / "s"), expect=2)
    assert f"{path}:2: line is 50.0 MiB, over the 16 MiB record limit" in err
    run_cli(*_embed_args(path, tiny_llama, tmp_path / "s", skip=True))
    assert json.loads((tmp_path / "s" / "manifest.json").read_text())["counts"]["rows_skipped"] == 1


def test_debug_shows_traceback(tmp_path, tiny_llama):
    _, err = run_cli("--debug", *_embed_args(BAD / "malformed_json.jsonl", tiny_llama, tmp_path / "s"), expect=2)
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("dataselect: error:")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_stops_cleanly_and_resumes(tmp_path, tiny_llama, sig):
    pool = write_jsonl(tmp_path / "p.jsonl", make_records(3000))
    cmd = [sys.executable, "-m", "dataselect", "embed", str(pool), "-m", tiny_llama, "-o", str(tmp_path / "s"),
           "--shard-rows", "100", "--batch-tokens", "1024"]
    # as in a terminal's foreground: a child of a background job would inherit SIGINT ignored
    proc = subprocess.Popen(cmd, env=ENV, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 60
    while not (tmp_path / "s" / "shard-00000.arrow").exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "run the same command again to resume" in err and "Traceback" not in err
    done = subprocess.run(cmd + ["-q"], env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert Store(tmp_path / "s").n_rows == 3000


def test_disk_full_then_resume(tmp_path, tiny_llama, monkeypatch):
    import dataselect.store.writer as stage

    pool = write_jsonl(tmp_path / "p.jsonl", make_records(40))
    real, calls = stage.write_shard, []

    def full_disk(path, columns):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path, columns)

    monkeypatch.setattr(stage, "write_shard", full_disk)
    args = ["embed", pool, "-m", tiny_llama, "-o", tmp_path / "s", "-q", "--shard-rows", "10"]
    _, err = run_cli(*args, expect=2)
    assert "No space left on device" in err and "free some space and run the same command again to resume" in err
    monkeypatch.setattr(stage, "write_shard", real)
    run_cli(*args)
    run_cli("embed", pool, "-m", tiny_llama, "-o", tmp_path / "ref", "-q", "--shard-rows", "10")
    for i in range(4):
        name = f"shard-{i:05d}.arrow"
        assert (tmp_path / "s" / name).read_bytes() == (tmp_path / "ref" / name).read_bytes()


def test_refusals(tmp_path, tiny_llama):
    pool = write_jsonl(tmp_path / "p.jsonl", make_records(20))
    q = write_jsonl(tmp_path / "q.jsonl", [{"prompt": "a cat", "task": "t"}])
    run_cli("embed", pool, "-m", tiny_llama, "-o", tmp_path / "s", "-q")
    run_cli("embed", q, "-m", tiny_llama, "-o", tmp_path / "q_mean", "-q", "--tasks-from-records", "--pooling", "mean")
    _, err = run_cli("run", "--store", tmp_path / "s", "--method", "rds+", "--queries", tmp_path / "q_mean",
                     "--budget", "5", "--out", tmp_path / "sel", expect=2)
    assert "was embedded with pooling 'mean' but the pool store" in err
    run_cli("embed", q, "-m", "bundled-minilm", "-o", tmp_path / "q_other", "-q", "--tasks-from-records")
    _, err = run_cli("run", "--store", tmp_path / "s", "--method", "rds+", "--queries", tmp_path / "q_other",
                     "--budget", "5", "--out", tmp_path / "sel", expect=2)
    assert "was embedded with model" in err
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    _, err = run_cli("embed", pool, "-m", tiny_llama, "-o", tmp_path / "busy", "-q", expect=2)
    assert "is not empty and holds no store; pass --overwrite" in err
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"
    run_cli("run", "--store", tmp_path / "s", "--method", "random", "--budget", "5", "--out", tmp_path / "r")
    _, err = run_cli("run", "--store", tmp_path / "s", "--method", "random", "--budget", "5", "--out", tmp_path / "r",
                     expect=2)
    assert "already exists; pass --overwrite to replace it" in err


def _kill_during(cmd: list[str], delays: list[float], check) -> None:
    for delay in delays:
        proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        check()


def test_killed_commands_leave_nothing_half_written(tmp_path):
    rng = np.random.default_rng(0)
    n = 300_000
    store_from_array(tmp_path / "s", unit_rows(rng, n, 64).astype(np.float16), shard_rows=50_000)
    pool = write_jsonl(tmp_path / "p.jsonl", ({"id": f"r{i}", "prompt": f"p{i}", "completion": "c"} for i in range(n)))
    man = json.loads((tmp_path / "s" / "manifest.json").read_text())
    from dataselect.pool import pool_fingerprint

    man["config"]["pool"]["fingerprint"] = pool_fingerprint(pool)  # pair the synthetic store with this pool
    (tmp_path / "s" / "manifest.json").write_text(json.dumps(man))
    base = [sys.executable, "-m", "dataselect"]

    def check_selection():
        sel = tmp_path / "sel"
        if sel.exists():
            table, meta = read_selection(sel)
            assert table.num_rows == meta["selected"] == 150_000
        assert not [p for p in tmp_path.iterdir() if p.name.startswith("sel") and p.name != "sel"]

    _kill_during(base + ["run", "--store", str(tmp_path / "s"), "--method", "random", "--budget", "50%", "--out",
                         str(tmp_path / "sel")], [1.5, 3.0, 4.5], check_selection)
    subprocess.run(base + ["run", "--store", str(tmp_path / "s"), "--method", "random", "--budget", "50%",
                           "--out", str(tmp_path / "sel"), "--overwrite"], env=ENV, check=True, capture_output=True)

    def check_export():
        out = tmp_path / "out.jsonl"
        if out.exists():
            lines = out.read_text().splitlines()
            assert len(lines) == 150_000 and all(json.loads(lines[-1]))

    _kill_during(base + ["export", str(tmp_path / "sel"), "--pool", str(pool), "--out", str(tmp_path / "out.jsonl")],
                 [2.0, 4.0, 6.0], check_export)

    def check_index():
        folder = tmp_path / "s" / "index-flat"
        if folder.exists():
            assert (folder / "index.faiss").is_file() and (folder / "index.json").is_file()

    _kill_during(base + ["index", str(tmp_path / "s")], [1.5, 3.0], check_index)


def test_chaos_three_kills(tmp_path):
    sys.path.insert(0, str(Path(__file__).parents[1] / "scripts"))
    from chaos_embed import run_chaos

    r = run_chaos(tmp_path, kills=3, rows=600, seed=1, verbose=False)
    assert r == {"kills": 3, "survived": 3, "rows_lost": 0, "rows_duplicated": 0, "shards_identical": True,
                 "leftover_tmp": 0}
