"""``dataselect demo``: the whole pipeline on the bundled pool, query sets and model.

pool -> embed (pool and queries) -> run rds+ -> export -> summary. Runs offline on a 2-core CPU in
about a minute; re-running reuses the stores (embedding resumes and finds them complete).
"""

from __future__ import annotations

import importlib.resources
import json
from collections import Counter
from pathlib import Path

from dataselect.embedding.stage import EmbedOptions, EmbedStage
from dataselect.exporter import export_selection
from dataselect.selection_run import RunSpec, run_selection


def bundled_data(name: str) -> Path:
    """Path of a bundled data file: ``sample_pool.jsonl`` or ``sample_queries.jsonl``."""
    return Path(str(importlib.resources.files("dataselect") / "data" / name))


def run_demo(out, budget: str = "200", model: str = "bundled", progress: bool = True) -> str:
    out = Path(out)
    pool, queries = bundled_data("sample_pool.jsonl"), bundled_data("sample_queries.jsonl")
    # the demo's own stores are remade each time: a demo-out from an older dataselect may differ
    EmbedStage(pool, out / "pool_store", EmbedOptions(model=model, progress=progress, overwrite=True)).run()
    EmbedStage(queries, out / "query_store", EmbedOptions(model=model, queries=True, progress=progress,
                                                          overwrite=True)).run()
    spec = RunSpec(method="rds+", store=str(out / "pool_store"), queries=[str(out / "query_store")],
                   budget=budget, out=str(out / "selection"))
    _, meta = run_selection(spec, overwrite=True)
    export_path = out / "selected.jsonl"
    export_selection(out / "selection", pool, export_path, overwrite=True)
    return summarize(export_path, meta)


def summarize(export_path: Path, meta: dict, top: int = 3) -> str:
    """Counts per task and source, and the top examples of each task (first line of the prompt)."""
    records = [json.loads(line) for line in export_path.read_text().splitlines()]
    by_task: dict[str, list] = {}
    for r in records:
        by_task.setdefault(r["dataselect"]["task"], []).append(r)
    lines = [f"RDS+ picked {len(records)} of {meta['pool_store']['rows']} pool rows -> {export_path}"]
    for task, recs in by_task.items():
        sources = Counter(r["dataselect"]["source"] for r in recs)
        mix = ", ".join(f"{s} {n}" for s, n in sources.most_common())
        lines.append(f"\ntask {task!r}: {len(recs)} rows  ({mix})")
        for r in recs[:top]:
            prompt = _prompt_text(r).splitlines()[0][:90]
            lines.append(f"   {r['dataselect']['score']:.3f}  {prompt}")
    return "\n".join(lines)


def _prompt_text(rec: dict) -> str:
    if "messages" in rec:
        return next(m["content"] for m in rec["messages"] if m["role"] == "user")
    return rec.get("instruction") or rec.get("prompt") or ""
