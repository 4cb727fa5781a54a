"""`dataselect demo` on the real bundled causal LM, end to end on a few rows (issue 28)."""

from __future__ import annotations

import json

from conftest import run_cli
from dataselect.bundled_demo import METHODS, bundled_data


def test_demo_runs_every_method_on_the_bundled_causal_lm_and_reruns_over_an_older_folder(tmp_path, capsys):
    """The real SmolLM2 (converted from its GGUF on first use): embed with losses, all five methods, compare,
    export. `make demo` twice, or after an upgrade changed how stores are made, works (its own outputs)."""
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(bundled_data("demo_pool.jsonl").read_text().splitlines(keepends=True)[:40]))
    demo = tmp_path / "demo"
    run_cli("embed", bundled_data("sample_queries.jsonl"), "-o", demo / "query_store", "-q", "--tasks-from-records",
            "--bos", "always")
    capsys.readouterr()
    run_cli("demo", "--out", demo, "-q", "--budget", "10", "--pool", pool)
    printed = capsys.readouterr().out
    manifest = json.loads((demo / "pool_store" / "manifest.json").read_text())
    assert manifest["model"]["name"] == "bundled" and manifest["model"]["architecture"] == "LlamaForCausalLM"
    assert manifest["model"]["causal"] and manifest["model"]["hidden_size"] == 576
    assert json.loads((demo / "query_store" / "manifest.json").read_text())["config"]["bos"] == "auto"
    for method in METHODS:
        meta = json.loads((demo / "selections" / method / "selection.json").read_text())
        assert meta["selected"] == 10, method
    exported = [json.loads(x) for x in (demo / "selected.jsonl").read_text().splitlines()]
    assert len(exported) == 10 and {r["dataselect"]["task"] for r in exported} == {"math", "code"}
    # rds+ on a real causal LM's states: the math task picks math rows, the code task code rows
    assert all(r["dataselect"]["source"] == f"synth-{r['dataselect']['task']}" for r in exported)
    assert "rows per source:" in printed and "coverage math (mean / p10)" in printed
    assert "A = random, B = rds+, C = kmeans-sensitivity, D = hierarchical-kmeans, E = loss" in printed
