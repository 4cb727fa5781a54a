"""Real pools as they come (issue 17): tool calls, history, system fields, every bad row, hub datasets."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import make_records, run_cli, write_jsonl
from dataselect.embedding.text import render_tulu
from dataselect.pool import HubPool, PoolReader, normalize_record, pool_source
from dataselect.store import Store

GLAIVE = {  # ShareGPT with tool calls, as glaive / LLaMA-Factory store it
    "conversations": [
        {"from": "human", "value": "Find me a recipe with chicken."},
        {"from": "function_call", "value": "{\"name\": \"search_recipes\", \"arguments\": {\"ingredients\": [\"chicken\"]}}"},
        {"from": "observation", "value": "{\"recipes\": [\"chicken curry\"]}"},
        {"from": "gpt", "value": "Try chicken curry."},
    ],
    "tools": "[{\"name\": \"search_recipes\", \"parameters\": {\"ingredients\": \"list\"}}]",
    "system": "You are a helpful assistant with access to functions.",
}
OPENAI = {  # OpenAI chat format with tool_calls and a tool message
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\": \"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "18C, sunny"},
        {"role": "assistant", "content": "18C and sunny."},
    ],
}
ALPACA_HISTORY = {  # LLaMA-Factory alpaca with history and system
    "instruction": "And in Celsius?", "input": "", "output": "About 37 C.",
    "system": "You are a doctor.",
    "history": [["What is normal body temperature?", "About 98.6 F."]],
}


def test_sharegpt_tool_calls_are_kept_and_rendered():
    msgs = normalize_record(GLAIVE)
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "tool", "assistant"]
    assert msgs[0]["content"] == (GLAIVE["system"] + " <functions>" + GLAIVE["tools"] + "</functions>")
    assert msgs[2]["content"] == "<function_calls>" + GLAIVE["conversations"][1]["value"] + "</function_calls>"
    text, spans = render_tulu(msgs, "</s>")
    assert "<|tool|>\n{\"recipes\": [\"chicken curry\"]}\n<|assistant|>\nTry chicken curry.</s>" in text
    responses = [text[a:b] for a, b in spans]
    assert responses[0].startswith("<function_calls>") and responses[1] == "Try chicken curry.</s>"
    assert not any("chicken curry\"]}" in r for r in responses)  # a tool result is not the model's response


def test_openai_tool_calls_and_tool_messages():
    msgs = normalize_record(OPENAI)
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "tool", "assistant"]
    calls = json.loads(msgs[2]["content"].removeprefix("<function_calls>").removesuffix("</function_calls>"))
    assert calls == [{"name": "weather", "arguments": "{\"city\": \"Paris\"}"}]


def test_alpaca_history_and_system_are_turns():
    msgs = normalize_record(ALPACA_HISTORY)
    assert msgs == [{"role": "system", "content": "You are a doctor."},
                    {"role": "user", "content": "What is normal body temperature?"},
                    {"role": "assistant", "content": "About 98.6 F."},
                    {"role": "user", "content": "And in Celsius?"},
                    {"role": "assistant", "content": "About 37 C."}]
    with pytest.raises(ValueError, match=r"history\[0\]"):
        normalize_record({**ALPACA_HISTORY, "history": [["only one"]]})


def test_real_shaped_pool_embeds_without_skips(tmp_path, tiny_llama):
    pool = write_jsonl(tmp_path / "p.jsonl", [GLAIVE, OPENAI, ALPACA_HISTORY] * 5 + make_records(10))
    _, err = run_cli("embed", pool, "-m", tiny_llama, "-o", tmp_path / "s", "-q")
    st = Store(tmp_path / "s")
    assert st.n_rows == 25 and st.manifest.counts["rows_skipped"] == 0
    n = st.column("n_tokens")
    assert n[0] > 40 and n[2] > n[2 + 15]  # history and tools counted as tokens


def test_every_bad_row_goes_to_a_file_with_counts_per_reason(tmp_path, tiny_llama):
    lines = [json.dumps(r) for r in make_records(30)]
    bad = {3: "{not json", 7: json.dumps({"conversations": [{"from": "alien", "value": "x"}]}),
           11: json.dumps({"prompt": "q"}), 19: json.dumps({"conversations": [{"from": "robot", "value": "y"}]}),
           23: "[1, 2]", 29: "{oops"}
    for i, line in bad.items():
        lines[i] = line
    pool = write_jsonl(tmp_path / "p.jsonl", lines)
    _, err = run_cli("embed", pool, "-m", tiny_llama, "-o", tmp_path / "s", "-q", "--skip-invalid")
    skipped = [json.loads(x) for x in (tmp_path / "s" / "skipped.jsonl").read_text().splitlines()]
    assert [s["row"] for s in skipped] == sorted(bad)
    assert [s["where"] for s in skipped] == [f"{pool}:{i + 1}" for i in sorted(bad)]
    man = Store(tmp_path / "s").manifest
    assert man.skipped_per_reason == {"invalid JSON": 2, "conversations[i] has unknown role 'alien'": 1,
                                        "conversations[i] has unknown role 'robot'": 1,
                                        "field 'completion' is missing": 1,
                                        "record must be a JSON object, got list": 1}
    assert "2 x invalid JSON" in err and "skipped.jsonl" in err
    assert man.counts["rows_stored"] + man.counts["rows_skipped"] == 30
    _, out = run_cli("inspect", tmp_path / "s")


# --- hub datasets, offline through the same datasets call on local data files -----------------------
@pytest.fixture
def hub_folder(tmp_path):
    recs = make_records(37, seed=5) + [GLAIVE, OPENAI, ALPACA_HISTORY]
    folder = tmp_path / "hubds"
    (folder / "data").mkdir(parents=True)
    write_jsonl(folder / "data" / "train-00000-of-00001.jsonl", recs)
    write_jsonl(tmp_path / "same.jsonl", recs)
    return folder, tmp_path / "same.jsonl"


def test_pool_source_names():
    assert isinstance(pool_source("allenai/tulu-3-sft-mixture"), HubPool)
    assert pool_source("allenai/tulu-3-sft-mixture").split == "train"
    assert not isinstance(pool_source("pool.jsonl"), HubPool)


@pytest.mark.parametrize("streaming", [False, True])
def test_hub_pool_reads_like_the_local_file(hub_folder, tmp_path, tiny_llama, streaming):
    folder, same = hub_folder
    hub = ["--split", "train"] + (["--streaming"] if streaming else [])
    run_cli("embed", folder, *hub, "-m", tiny_llama, "-o", tmp_path / "hub", "-q", "--shard-rows", "16")
    run_cli("embed", same, "-m", tiny_llama, "-o", tmp_path / "local", "-q", "--shard-rows", "16")
    a, b = Store(tmp_path / "hub"), Store(tmp_path / "local")
    assert np.array_equal(a.rows(), b.rows()) and list(a.column("id")) == list(b.column("id"))
    assert np.array_equal(a.embeddings(), b.embeddings())
    pool = a.config.pool
    assert pool.format == "hub" and pool.hub["split"] == "train" and pool.fingerprint.startswith("hf-")
    assert [r.row for r in PoolReader(HubPool(str(folder), "train", streaming=streaming)).rows(start_row=30)] == \
        list(range(30, 40))
    # export reads the same split; a different pool is refused
    run_cli("run", "--store", tmp_path / "hub", "--method", "random", "--budget", "7", "--out", tmp_path / "sel", "-q")
    run_cli("export", tmp_path / "sel", "--pool", folder, "--split", "train", "--out", tmp_path / "x.jsonl")
    assert len((tmp_path / "x.jsonl").read_text().splitlines()) == 7
    _, err = run_cli("export", tmp_path / "sel", "--pool", same, "--out", tmp_path / "y.jsonl", expect=2)
    assert "not the pool" in err


def test_hub_pool_resumes(hub_folder, tmp_path, tiny_llama):
    folder, _ = hub_folder
    args = ("embed", folder, "--split", "train", "-m", tiny_llama, "-o", tmp_path / "hub", "-q", "--shard-rows", "16")
    run_cli(*args, "--max-shards", "1")
    assert not Store.__init__ or not json.loads((tmp_path / "hub" / "manifest.json").read_text())["complete"]
    run_cli(*args)
    run_cli("embed", folder, "--split", "train", "-m", tiny_llama, "-o", tmp_path / "whole", "-q", "--shard-rows", "16")
    sa, sb = (json.loads((tmp_path / d / "manifest.json").read_text())["shards"] for d in ("hub", "whole"))
    assert [s["sha256"] for s in sa] == [s["sha256"] for s in sb]


def test_unknown_hub_dataset_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    _, err = run_cli("embed", "no-such-owner/no-such-dataset", "-o", tmp_path / "s", "-q", expect=2)
    assert "no-such-owner/no-such-dataset[train]" in err and not (tmp_path / "s").exists()


# --- shard reads seek (issue 17, item 6) --------------------------------------------------------------
def _pool_lines(n: int) -> list[str]:
    return [json.dumps({"id": f"r{i}", "prompt": f"question {i} " * 3, "completion": f"answer {i}"}) for i in range(n)]


def test_marked_reads_equal_a_full_scan_across_files_and_blank_lines(tmp_path):
    folder = tmp_path / "pool"
    folder.mkdir()
    lines = _pool_lines(250)
    (folder / "a.jsonl").write_text("\n".join(lines[:95]) + "\n\n\n")  # blank lines are not records
    (folder / "b.jsonl").write_text("\n" + "\n".join(lines[95:]) + "\n")
    full = [(r.row, r.where, r.id) for r in PoolReader(folder).rows()]
    marked = PoolReader(folder, mark_every=40, check_duplicates=False)
    assert len(list(marked.rows())) == 250 and sorted(marked.marks) == list(range(0, 250, 40))
    for start in (0, 40, 80, 95, 120, 200, 240, 249):
        got = [(r.row, r.where, r.id) for r in marked.rows(start_row=start)]
        assert got == full[start:], start
    other = PoolReader(folder, check_duplicates=False)
    other.marks = dict(marked.marks)  # handed to another reader, as Ray read tasks get them
    assert [(r.row, r.where, r.id) for r in other.rows(start_row=160)] == full[160:]


def test_parquet_enters_at_the_row_group(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    recs = [json.loads(x) for x in _pool_lines(300)]
    pq.write_table(pa.Table.from_pylist(recs), tmp_path / "p.parquet", row_group_size=64)
    full = [(r.row, r.id) for r in PoolReader(tmp_path / "p.parquet").rows()]
    for start in (0, 63, 64, 130, 299):
        assert [(r.row, r.id) for r in PoolReader(tmp_path / "p.parquet").rows(start_row=start)] == full[start:]


def test_reading_the_last_shard_costs_about_the_first(tmp_path):
    import time

    n, S = 200_000, 20_000
    (tmp_path / "big.jsonl").write_text("\n".join(_pool_lines(n)) + "\n")
    reader = PoolReader(tmp_path / "big.jsonl", mark_every=S)
    for _ in reader.raw():
        pass

    def shard_time(k: int) -> float:
        t0 = time.perf_counter()
        for row, _, _ in reader.raw(start_row=k * S):
            if row >= (k + 1) * S - 1:
                break
        return time.perf_counter() - t0

    first = min(shard_time(0) for _ in range(3))
    last = min(shard_time(n // S - 1) for _ in range(3))
    assert last <= 2 * first, (first, last)


# --- resume inside a shard (issue 17, item 5) ----------------------------------------------------------
def test_kill_inside_a_shard_keeps_committed_chunks_and_resumes_to_the_same_bytes(tmp_path, tiny_llama):
    import os
    import signal
    import subprocess
    import sys
    import time

    pool = write_jsonl(tmp_path / "p.jsonl", make_records(1500, seed=2))
    common = ["-m", tiny_llama, "-q", "--chunk-rows", "50"]  # one 50k-row shard of 30 chunks
    run_cli("embed", pool, "-o", tmp_path / "whole", *common)
    cmd = [sys.executable, "-m", "dataselect", "embed", str(pool), "-o", str(tmp_path / "cut"), *common]
    proc = subprocess.Popen(cmd, stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    man_path, parts = tmp_path / "cut" / "manifest.json", []
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        try:
            parts = (json.loads(man_path.read_text()).get("parts") or {}).get("chunks", [])
        except (OSError, ValueError):
            parts = []
        if len(parts) >= 3:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed inside its shard"
    man = json.loads(man_path.read_text())
    assert man["shards"] == [] and len(man["parts"]["chunks"]) >= 3  # work kept though no shard finished
    run_cli("embed", pool, "-o", tmp_path / "cut", *common)
    a, b = (json.loads((tmp_path / d / "manifest.json").read_text()) for d in ("whole", "cut"))
    assert [s["sha256"] for s in a["shards"]] == [s["sha256"] for s in b["shards"]]
    assert "parts" not in b and not list((tmp_path / "cut").glob("*.part-*"))


# --- the text side at scale (issue 17, item 7) ---------------------------------------------------------
@pytest.mark.parametrize("order", ["selection", "pool"])
def test_plain_jsonl_export_fast_path_equals_the_general_path(tmp_path, tiny_llama, monkeypatch, order):
    import dataselect.pool.fetch as fetch

    lines = [json.dumps(r) for r in make_records(120, seed=8)]
    lines[5:5] = ["", "   "]  # blank lines are not records
    pool = write_jsonl(tmp_path / "p.jsonl", lines)
    run_cli("embed", pool, "-m", tiny_llama, "-o", tmp_path / "s", "-q")
    run_cli("run", "--store", tmp_path / "s", "--method", "random", "--budget", "50", "--out", tmp_path / "sel", "-q")
    run_cli("export", tmp_path / "sel", "--pool", pool, "--out", tmp_path / "fast.jsonl", "--order", order)
    monkeypatch.setattr(fetch, "plain_jsonl_files", lambda pool: None)  # force the streaming path
    run_cli("export", tmp_path / "sel", "--pool", pool, "--out", tmp_path / "general.jsonl", "--order", order)
    got = [json.loads(x) for x in (tmp_path / "fast.jsonl").read_text().splitlines()]
    assert got == [json.loads(x) for x in (tmp_path / "general.jsonl").read_text().splitlines()]
    # the fast path keeps each record's own bytes and adds the provenance field at its end
    src = {json.loads(x)["id"]: x for x in lines if x.strip()}
    for line in (tmp_path / "fast.jsonl").read_text().splitlines()[:5]:
        rid = json.loads(line)["id"]
        assert line.startswith(src[rid][:-1] + ', "dataselect":') or line.startswith(src[rid][:-1] + ',"dataselect":')
    assert len(got) == 50 and all(g["id"] == f"id{g['dataselect']['row']}" for g in got)


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 8, 1 << 26])
def test_record_offsets_match_the_line_reader(tmp_path, monkeypatch, chunk):
    import dataselect.pool.offsets as offsets
    from dataselect.pool.reader import _binary_lines

    monkeypatch.setattr(offsets, "_CHUNK", chunk)  # chunk boundaries anywhere, even inside "\r\n"
    cases = [b'\xef\xbb\xbf{"a":1}\n\n   \n{"b":2}\r\n \t{"c":3}\n{"d":4}', b'{"a":1}\n', b'\n\n{"x":1}\n\n',
             b'{"a":1}\n{"b":22}\n {"c":3}\n', b"\n"]
    for i, data in enumerate(cases):
        p = tmp_path / f"{i}.jsonl"
        p.write_bytes(data)
        starts, lengths, lines = offsets.record_offsets(p)
        want = [(off, len(line.rstrip(b"\n")), n) for n, off, line in _binary_lines(p)]
        assert list(zip(starts.tolist(), lengths.tolist(), lines.tolist(), strict=True)) == want, data


def test_python_api_reads_hub_pools_too(hub_folder, tmp_path, tiny_llama):
    import dataselect as ds

    folder, _ = hub_folder
    store = ds.embed(folder, split="train", model=tiny_llama, out=tmp_path / "s", progress=False)
    assert store.config.pool.format == "hub" and store.n_rows == 40
    sel = ds.select(store, method="random", budget=6, progress=False)
    ds.export(sel, pool=folder, split="train", out=tmp_path / "x.jsonl")
    assert len((tmp_path / "x.jsonl").read_text().splitlines()) == 6
    from dataselect.nearest import first_lines

    lines = first_lines(pool_source(folder, "train"), store, sel.rows.tolist())
    assert len(lines) == 6 and all(lines.values())
