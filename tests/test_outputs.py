"""Outputs: only dataselect's own are replaced, never an input, one writer at a time, never half-way."""

from __future__ import annotations

import json
import os
import threading

import numpy as np
import pytest

from conftest import make_records, run_cli, write_jsonl
from dataselect.outputs import lock, made_by_dataselect, recover, writing
from dataselect.store.synthetic import store_from_array, unit_rows


@pytest.fixture
def stores(tmp_path):
    rng = np.random.default_rng(0)
    sources = ["alpha$", "be$ta", "\x1b[31mred\x1b[0m", "plain"] * 100
    pool = store_from_array(tmp_path / "pool", unit_rows(rng, 400, 16), shard_rows=100, sources=sources)
    q = store_from_array(tmp_path / "q", unit_rows(rng, 6, 16), kind="queries", tasks=["a$"] * 3 + ["b"] * 3)
    return pool, q


def select(pool, q, out, *extra, expect=0):
    return run_cli("run", "--store", pool, "--method", "rds+", "--queries", q, "--budget", "40", "--out", out, "-q",
                   *extra, expect=expect)


def test_overwrite_never_replaces_what_dataselect_did_not_make(tmp_path, stores):
    pool, q = stores
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.txt").write_text("four years")
    _, err = select(pool, q, home, "--overwrite", expect=2)
    assert "not made by dataselect" in err and (home / "thesis.txt").read_text() == "four years"
    select(pool, q, tmp_path / "sel")
    select(pool, q, tmp_path / "sel", expect=2)  # exists: needs --overwrite
    select(pool, q, tmp_path / "sel", "--overwrite")  # ours: replaced
    assert made_by_dataselect(tmp_path / "sel") == "selection"


def test_an_output_may_not_be_or_hold_an_input(tmp_path, stores, tiny_llama):
    pool, q = stores
    _, err = select(pool, q, pool, "--overwrite", expect=2)
    assert "input" in err and (pool / "manifest.json").exists()
    _, err = select(pool, q, pool / "inside", expect=2)
    assert "overlap the input" in err
    folder = tmp_path / "poolfolder"
    folder.mkdir()
    write_jsonl(folder / "part.jsonl", make_records(12))
    _, err = run_cli("embed", folder, "-m", tiny_llama, "--out", folder, "--overwrite", "-q", expect=2)
    assert "input" in err and (folder / "part.jsonl").exists()


def test_report_and_compare_figures_follow_the_overwrite_rule(tmp_path, stores):
    pool, q = stores
    select(pool, q, tmp_path / "a")
    select(pool, q, tmp_path / "b", "--seed", "1")
    precious = write_jsonl(tmp_path / "pool.jsonl", make_records(5))
    before = precious.read_bytes()
    run_cli("report", tmp_path / "a", "--out", precious, expect=2)
    _, err = run_cli("report", tmp_path / "a", "--out", precious, "--overwrite", expect=2)
    assert "not made by dataselect" in err and precious.read_bytes() == before
    run_cli("compare", tmp_path / "a", tmp_path / "b", "--png", precious, expect=2)
    assert precious.read_bytes() == before
    run_cli("report", tmp_path / "a", "--out", tmp_path / "r.html")  # '$' in sources and tasks: shown literally
    run_cli("report", tmp_path / "a", "--out", tmp_path / "r.html", expect=2)
    run_cli("report", tmp_path / "a", "--out", tmp_path / "r.html", "--overwrite")
    run_cli("compare", tmp_path / "a", tmp_path / "b", "--png", tmp_path / "c.png")
    run_cli("compare", tmp_path / "a", tmp_path / "b", "--png", tmp_path / "c.png", "--overwrite")
    assert made_by_dataselect(tmp_path / "r.html") == "report" and made_by_dataselect(tmp_path / "c.png") == "figure"


def test_control_characters_reach_the_terminal_escaped(tmp_path, stores, capsys):
    pool, q = stores
    select(pool, q, tmp_path / "a")
    select(pool, q, tmp_path / "b", "--seed", "2")
    run_cli("compare", tmp_path / "a", tmp_path / "b")
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\\x1b[31mred" in out


def test_a_second_writer_is_refused_naming_the_holder(tmp_path, stores):
    pool, q = stores
    out = tmp_path / "sel"
    with lock(out):
        _, err = select(pool, q, out, expect=2)
    assert f"pid {os.getpid()}" in err and "being written" in err
    select(pool, q, out)  # free again


def test_concurrent_writers_never_both_succeed(tmp_path):
    out = tmp_path / "o.txt"
    results = []
    barrier = threading.Barrier(2)

    def write(text):
        barrier.wait()
        try:
            with writing(out, overwrite=True) as tmp:
                tmp.write_text(text)
                threading.Event().wait(0.3)
            results.append(text)
        except Exception as exc:
            results.append(type(exc).__name__)

    threads = [threading.Thread(target=write, args=(t,)) for t in ("one", "two")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results)[0] == "DataselectError" and out.read_text() in results


def half_swapped(out, role_states):
    """Leave ``out`` as a kill would during replacement: the given .tmp-NAME.ROLE.* entries exist."""
    for role, text in role_states:
        d = out.with_name(f".tmp-{out.name}.{role}.999999.deadbeef")
        d.mkdir()
        (d / "selection.json").write_text(json.dumps({"was": text}))
        (d / "selection.arrow").write_text("")


@pytest.mark.parametrize("state, expect", [
    ([("old", "old"), ("ready", "new")], "new"),  # killed after moving the old aside: roll forward
    ([("old", "old"), ("new", "half")], "old"),  # killed before the new one was complete: roll back
    ([("ready", "new")], "new"),  # first write, killed before its rename
])
def test_a_killed_replacement_is_finished_or_rolled_back(tmp_path, state, expect):
    out = tmp_path / "sel"
    half_swapped(out, state)
    with lock(out):
        done = recover(out)
    assert json.loads((out / "selection.json").read_text())["was"] == expect and done
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_killed_writers_leave_no_temporary_files_behind(tmp_path, stores):
    pool, q = stores
    out = tmp_path / "exported.jsonl"
    for i in range(3):  # what killed exports leave
        out.with_name(f".tmp-{out.name}.new.{900000 + i}.cafe{i:04d}").write_bytes(b"x" * 1000)
    select(pool, q, tmp_path / "sel")
    (tmp_path / "sel" / "x").write_text("")
    with writing(out) as tmp:
        tmp.write_text('{"dataselect": {}}\n')
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-")] == []


def test_selection_of_a_changed_store_is_refused(tmp_path, stores):
    pool, q = stores
    select(pool, q, tmp_path / "sel")
    run_cli("explain", tmp_path / "sel", "--row", "3")
    store_from_array(pool, unit_rows(np.random.default_rng(9), 400, 16), shard_rows=100)  # re-embedded
    for args in (["explain", tmp_path / "sel", "--row", "3"], ["report", tmp_path / "sel", "--out", tmp_path / "r.html"],
                 ["compare", tmp_path / "sel", tmp_path / "sel"]):
        _, err = run_cli(*args, expect=2)
        assert "changed since this selection was made" in err


def test_selection_paths_resolve_from_anywhere(tmp_path, stores, monkeypatch):
    pool, q = stores
    monkeypatch.chdir(tmp_path)
    select("pool", "q", "sel")
    monkeypatch.chdir("/")
    run_cli("explain", tmp_path / "sel", "--row", "3")


def test_lone_surrogates_are_invalid_rows(tmp_path, tiny_llama):
    recs = [json.dumps(r) for r in make_records(10)]
    recs[4] = '{"prompt": "bad \\ud800 text", "completion": "ok"}'
    recs[7] = '{"id": "\\udfff", "prompt": "fine", "completion": "ok"}'
    pool = write_jsonl(tmp_path / "pool.jsonl", recs)
    _, err = run_cli("embed", pool, "-m", tiny_llama, "-o", tmp_path / "s", "-q", expect=2)
    assert "pool.jsonl:5" in err and "surrogate" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "s" / "manifest.json").exists()
    run_cli("embed", pool, "-m", tiny_llama, "-o", tmp_path / "s", "-q", "--skip-invalid")
    man = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert man["counts"]["rows_skipped"] == 2 and man["counts"]["rows_stored"] == 8


def test_a_fifo_as_pool_is_refused_at_once(tmp_path, stores):
    pool, q = stores
    select(pool, q, tmp_path / "sel")
    fifo = tmp_path / "pool.fifo"
    os.mkfifo(fifo)
    for args in (["export", tmp_path / "sel", "--pool", fifo, "--out", tmp_path / "x.jsonl"],
                 ["score", pool, "--pool", fifo], ["embed", fifo, "-o", tmp_path / "s2"]):
        _, err = run_cli(*args, expect=2)
        assert "not a regular file" in err


def test_run_during_embed_says_it_is_being_written(tmp_path, stores):
    pool, _ = stores
    man = json.loads((pool / "manifest.json").read_text())
    man["complete"] = False
    (pool / "manifest.json").write_text(json.dumps(man))
    with lock(pool):
        _, err = run_cli("run", "--store", pool, "--method", "random", "--budget", "5", "--out", tmp_path / "s",
                         expect=2)
    assert "still being written" in err
    _, err = run_cli("run", "--store", pool, "--method", "random", "--budget", "5", "--out", tmp_path / "s",
                     expect=2)
    assert "was interrupted" in err


def test_a_failed_write_names_the_file(tmp_path):
    """pyarrow's write errors name no file; dataselect's message must (here a file-size limit stands in
    for a full disk: both fail inside the same write call)."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(f"""
        import resource, signal, sys
        import numpy as np
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        from dataselect.store.synthetic import store_from_array
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
        from dataselect.cli import main
        try:
            store_from_array({str(tmp_path / 's')!r}, np.ones((4000, 64), np.float32), shard_rows=2000)
        except OSError as exc:
            print("FILENAME", exc.filename, exc.errno)
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "FILENAME" in res.stdout and "shard-00000.arrow" in res.stdout and "None" not in res.stdout, res


def test_recovery_touches_only_its_own_temporary_files(tmp_path):
    """Another output whose name starts the same (sel.v2) keeps its in-flight temp files."""
    out = tmp_path / "sel"
    theirs = tmp_path / f".tmp-sel.v2.new.{os.getpid()}.abcdef12"
    theirs.mkdir()
    alive_legacy = tmp_path / f".tmp-sel.{os.getpid()}.abcdef12"  # an older writer still running
    alive_legacy.write_text("")
    dead = tmp_path / ".tmp-sel.new.999999.abcdef12"
    dead.write_text("")
    with lock(out):
        recover(out)
    assert theirs.exists() and alive_legacy.exists() and not dead.exists()


def test_a_link_to_an_output_shares_its_lock(tmp_path, small_pool, tiny_llama):
    """Issue 24.9: a second embed through a symlink to the store being written ran beside the first."""
    store = tmp_path / "store"
    (tmp_path / "alias").symlink_to(store, target_is_directory=True)
    with lock(store):
        _, err = run_cli("embed", small_pool, "-m", tiny_llama, "-o", tmp_path / "alias", "-q", expect=2)
    assert "being written" in err and f"pid {os.getpid()}" in err
    with lock(tmp_path / "alias"), pytest.raises(Exception, match="being written"), lock(store):
        pass


def test_no_lock_file_outlives_its_writer(tmp_path, stores):
    """Issue 24: `.dataselect-lock.NAME` files were left in every output's parent folder."""
    pool, q = stores
    select(pool, q, tmp_path / "sel")
    run_cli("report", tmp_path / "sel", "--out", tmp_path / "r.html")
    with lock(tmp_path / "x"):
        assert (tmp_path / ".dataselect-lock.x").exists()
    assert not list(tmp_path.glob(".dataselect-lock.*"))
    assert not list(pool.glob(".dataselect-lock.*")) and not list(pool.parent.glob(".dataselect-lock.*"))


def test_a_lock_removed_by_its_holder_is_not_shared(tmp_path):
    """The race the removal opens: a waiter that opened the file before it was removed must not hold
    a lock on the removed file while a third takes a new one."""
    import fcntl

    out = tmp_path / "o"
    path = tmp_path / ".dataselect-lock.o"
    with lock(out):
        stale = os.open(path, os.O_RDWR)  # opened while held, as a waiter would
    fcntl.flock(stale, fcntl.LOCK_EX | fcntl.LOCK_NB)  # succeeds on the removed inode ...
    with lock(out):  # ... and the next writer takes a fresh file: the two are told apart by inode
        assert os.fstat(stale).st_ino != os.stat(path).st_ino
    os.close(stale)


def test_report_and_compare_never_write_into_a_store(tmp_path, stores):
    """Issue 24: `report --out STORE/report.html` and `compare --png STORE/...` wrote into an input folder."""
    pool, q = stores
    select(pool, q, tmp_path / "a")
    select(pool, q, tmp_path / "b", "--round-robin", "next-unique")
    before = sorted(p.name for p in pool.iterdir())
    _, err = run_cli("report", tmp_path / "a", "--out", pool / "report.html", expect=2)
    assert "report.html" in err and len(err.strip().splitlines()) == 1
    run_cli("compare", tmp_path / "a", tmp_path / "b", "--png", q / "cmp.png", expect=2)
    assert sorted(p.name for p in pool.iterdir()) == before and not (q / "cmp.png").exists()


def test_a_second_run_into_the_same_output_is_told_who_holds_it_at_once(tmp_path, stores):
    """Issue 24: two overlapping `run --out same`: the slower failed at save with 'already exists'."""
    import subprocess
    import sys
    import time

    pool, q = stores
    out = tmp_path / "sel"
    code = ("import sys, time; from dataselect.outputs import lock\n"
            f"with lock({str(out)!r}):\n    print('held', flush=True); time.sleep(30)\n")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        t0 = time.perf_counter()
        _, err = select(pool, q, out, expect=2)
        assert f"pid {holder.pid}" in err and "being written" in err and time.perf_counter() - t0 < 10
    finally:
        holder.kill()
        holder.wait()
    select(pool, q, out)


def test_progress_in_a_log_is_whole_lines(capsys):
    """Issue 24: in non-terminal logs bars stayed at 0% and the next line was glued to them."""
    from dataselect.progress import bar

    with bar(3, "step") as b:
        for _ in range(3):
            b.update(1)
    print("next line", file=__import__("sys").stderr)
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert "\r" not in err and lines[-1] == "next line"
    assert any("step" in x and "100%" in x and ("3/3" in x or "3.00/3.00" in x) for x in lines[:-1])


def test_a_killed_writers_partial_build_is_swept_by_the_next_writer_in_its_folder(tmp_path):
    """Issue 24: a killed export's `.tmp-*.new.*` stayed until the same output was written again."""
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    partial = tmp_path / f".tmp-big.jsonl.new.{dead.pid}.0123abcd"
    partial.write_text("half an export")
    ready = tmp_path / f".tmp-other.new_but_ready.{dead.pid}.0123abcd"
    ready.write_text("not a partial build")
    alive = tmp_path / f".tmp-mine.new.{os.getpid()}.0123abcd"
    alive.write_text("a live writer's")
    with writing(tmp_path / "small.txt") as tmp:
        tmp.write_text("x")
    assert not partial.exists() and ready.exists() and alive.exists()
