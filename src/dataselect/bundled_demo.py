"""``dataselect demo``: the whole pipeline on the bundled causal LM, demo pool and query sets.

demo pool (400 rows: math, code, factual QA, writing, advice) -> embed with per-row losses (the
bundled SmolLM2-135M-Instruct, once per row) -> query sets (math, code) -> each of the five methods
with its defaults -> ``compare`` of them side by side (overlap, rows per task and source, coverage and
diversity) -> export of the RDS+ selection -> a summary. About two minutes on 2 cores, the bundled
model's one-time conversion included. Every output is the demo's own and is remade on each run.

With an encoder (``--model bundled-minilm``) there are no losses, so ``loss`` and kmeans-sensitivity's
loss variant are left out (said in the summary).
"""

from __future__ import annotations

import importlib.resources
import json
from collections import Counter
from pathlib import Path

from dataselect.embedding.stage import EmbedOptions, EmbedStage
from dataselect.exporter import export_selection
from dataselect.selection_run import RunSpec, run_selection

METHODS = ("random", "rds+", "kmeans-sensitivity", "hierarchical-kmeans", "loss")


def bundled_data(name: str) -> Path:
    """Path of a bundled data file: ``sample_pool.jsonl``, ``demo_pool.jsonl`` or ``sample_queries.jsonl``."""
    return Path(str(importlib.resources.files("dataselect") / "data" / name))


def run_demo(out, budget: str = "80", model: str = "bundled", progress: bool = True,
             pool: str | Path | None = None) -> str:
    """Run the demo into ``out``; return the summary it prints. ``pool``: another pool file (default the
    bundled demo pool)."""
    from dataselect.embedding.model import load_model
    from dataselect.progress import note
    from dataselect.reports import compare_selections
    from dataselect.selectors import get_selector

    out = Path(out)
    pool = Path(pool) if pool else bundled_data("demo_pool.jsonl")
    queries = bundled_data("sample_queries.jsonl")
    causal = load_model(model, weights=False).causal  # config and tokenizer only
    # the demo's own stores are remade each time: a demo-out from an older dataselect may differ
    EmbedStage(pool, out / "pool_store", EmbedOptions(model=model, with_loss=causal, progress=progress,
                                                      overwrite=True)).run()
    EmbedStage(queries, out / "query_store", EmbedOptions(model=model, queries=True, progress=progress,
                                                          overwrite=True)).run()
    methods = [m for m in METHODS if causal or not get_selector(m).needs_losses]
    metas, folders = {}, []
    for method in methods:
        if progress:
            note(f"demo: selecting {budget} rows with {method}")
        spec = RunSpec(method=method, store=str(out / "pool_store"), budget=budget,
                       queries=[str(out / "query_store")] if get_selector(method).needs_queries else [],
                       out=str(out / "selections" / method))
        folder, metas[method] = run_selection(spec, overwrite=True, progress=progress)
        folders.append(folder)
    compared = compare_selections(folders, queries=[out / "query_store"], progress=progress)
    export_path = out / "selected.jsonl"
    export_selection(out / "selections" / "rds+", pool, export_path, overwrite=True)
    return summarize(export_path, metas, compared, skipped=[m for m in METHODS if m not in methods])


def summarize(export_path: Path, metas: dict, compared: dict, skipped=(), top: int = 3) -> str:
    """What each method picked per source (and RDS+ per task, with its top examples), then the comparison."""
    from dataselect.reports.data import text_table

    rds = metas["rds+"]
    first = next(iter(metas.values()))
    lines = [f"{len(metas)} methods each picked {first['budget']['rows']:,} of {first['pool_store']['rows']:,} pool "
             f"rows (selections in {export_path.parent / 'selections'}); RDS+'s export -> {export_path}"]
    if skipped:
        lines.append(f"left out: {', '.join(skipped)} (they need losses, and this model has no LM head)")
    sources = sorted({s for m in metas.values() for s in m.get("counts_per_source", {})})
    lines.append("\nrows per source:")
    lines += text_table(["source", *metas], [[s, *(m.get("counts_per_source", {}).get(s, 0) for m in metas.values())]
                                             for s in sources])
    records = [json.loads(line) for line in export_path.read_text().splitlines()]
    by_task: dict[str, list] = {}
    for r in records:
        by_task.setdefault(r["dataselect"]["task"], []).append(r)
    for task, recs in by_task.items():
        mix = ", ".join(f"{s} {n}" for s, n in Counter(r["dataselect"]["source"] for r in recs).most_common())
        lines.append(f"\nRDS+ task {task!r}: {rds['counts_per_task'].get(task, len(recs))} rows  ({mix})")
        for r in recs[:top]:
            lines.append(f"   {r['dataselect']['score']:.3f}  {_prompt_text(r).splitlines()[0][:90]}")
    names = dict(zip(compared["labels"], metas, strict=True))
    lines.append("\ncompare (" + ", ".join(f"{lab} = {m}" for lab, m in names.items()) + "):")
    text = compared["text"].splitlines()
    lines += text[next(i for i, ln in enumerate(text) if ln.startswith(("Jaccard", "overlap"))):]
    return "\n".join(lines)


def _prompt_text(rec: dict) -> str:
    if "messages" in rec:
        return next(m["content"] for m in rec["messages"] if m["role"] == "user")
    return rec.get("instruction") or rec.get("prompt") or ""
