"""``dataselect queries TASK --from PATH``: the RDS+ paper's query sets, built as its code builds them.

Ivison et al. 2025 select for seven evaluation tasks, each represented by a few of its examples in
a task-specific format (hamishivi/automated-instruction-selection, ``minimal_multitask/data.py``,
classes ``GSM8kShots``, ``BBHShots``, ``MMLUShots``, ``TydiQAShots``, ``CodexEval``, ``AlpacaEval``,
``SquadEval``; the keys ``compute_influence_cosinesim --eval_dataset`` takes). Each builder here reads
the files users download for that task and writes one record per query::

    {"id": "gsm8k_shots-0", "task": "gsm8k_shots", "prompt_text": "<|user|>\\n...", "label_text": "...",
     "max_length": 2048}

``prompt_text`` is the prompt exactly as the paper writes it (chat wrapper, prefixes such as
``Answer:``); ``dataselect embed`` tokenises such a record as the paper's ``construct_test_sample``
does: the prompt with the tokenizer's special tokens, cut to ``max_length``; the label plus EOS
without them, cut to ``max_length``; joined. Records come in the paper's final query order (its
``Dataset.shuffle(seed=42)``), which the per-query round-robin of one task follows. Task names are
the paper's keys, so ``--queries`` given in alphabetical order takes tasks in the paper's order.

Where the paper's code is not deterministic, the builders choose, and say so: BBH prompt files are
read in sorted order (the paper: ``glob`` order); TyDiQA draws with ``random.Random(seed)`` (the
paper: Python's unseeded global generator).
"""

from __future__ import annotations

import gzip
import json
import random
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import numpy as np

from dataselect.errors import DataselectError

# builder name -> (paper key, queries kept, max_length)
TASKS = {
    "gsm8k": ("gsm8k_shots", 8, 2048),
    "bbh": ("bbh_shots", 81, 2048),
    "mmlu": ("mmlu_shots", 285, 512),
    "tydiqa": ("tydiqa_shots", 90, 2048),
    "humaneval": ("codex", 100, 512),
    "alpacaeval": ("alpacafarm", 50, 512),
    "squad": ("squad", 500, 512),
}
ALIASES = {key: name for name, (key, _, _) in TASKS.items()} | {"codex": "humaneval", "alpacafarm": "alpacaeval"}
SEED = 42


def tulu_user(content: str) -> str:
    """The paper's chat wrapper for one user turn (``create_prompt_with_tulu_chat_format``); content as is."""
    return "<|user|>\n" + content + "\n" + "<|assistant|>\n"


def paper_order(n: int, seed: int = SEED) -> np.ndarray:
    """The order of ``datasets.Dataset.shuffle(seed=seed)`` on n rows (a numpy Generator permutation)."""
    return np.random.default_rng(seed).permutation(n)


def _data(name: str) -> Path:
    return Path(str(resources.files("dataselect") / "data" / name))


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        raise DataselectError(f"{path}: not found ({what})")
    return path


def _json(path: Path):
    try:
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as fh:
            if path.name.endswith((".jsonl", ".jsonl.gz")):
                out = []
                for i, line in enumerate(fh, 1):
                    if line.strip():
                        try:
                            out.append(json.loads(line))
                        except json.JSONDecodeError as exc:
                            raise DataselectError(f"{path}:{i}: invalid JSON ({exc.msg})") from None
                return out
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise DataselectError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None


def _field(rec: dict, key: str, where: str):
    if not isinstance(rec, dict) or key not in rec:
        raise DataselectError(f"{where}: no field {key!r}")
    return rec[key]


# --- the seven builders: each returns (prompts, labels) before the final shuffle --------------------
def gsm8k(src: Path | None) -> tuple[list[str], list[str]]:
    """GSM8kShots: the 8 chain-of-thought exemplars of Wei et al. (Table 20), not the test set.
    ``--from`` may name a JSONL of other exemplars with ``question`` and ``cot_answer``."""
    path = src if src is not None else _data("gsm8k_cot_exemplars.jsonl")
    rows = _json(_need(path, "a JSONL of exemplars with question and cot_answer"))
    prefix = "Answer the following question.\n\nQuestion: "
    prompts = [tulu_user(prefix + _field(r, "question", str(path)).strip()) + "Answer:" for r in rows]
    return prompts, [_field(r, "cot_answer", str(path)) for r in rows]


def bbh(src: Path | None) -> tuple[list[str], list[str]]:
    """BBHShots: the 3 exemplars of every ``cot-prompts/*.txt`` (BIG-Bench-Hard); prompt = the task's
    instruction + "\\n\\nQ:" + question, no chat wrapper; label = the worked answer."""
    folder = _need(src, "the bbh folder (with cot-prompts/) or cot-prompts/ itself")
    folder = folder / "cot-prompts" if (folder / "cot-prompts").is_dir() else folder
    files = sorted(folder.glob("*.txt"))
    if not files:
        raise DataselectError(f"{folder}: no BBH cot-prompts *.txt files")
    prompts, labels = [], []
    for f in files:
        text = "".join(f.read_text(encoding="utf-8").splitlines(keepends=True)[2:])
        head, *questions = text.split("\n\nQ:")
        for i, q in enumerate(questions):
            parts = q.split("\nA: ")
            if len(parts) != 2:
                raise DataselectError(f"{f}: exemplar {i + 1} does not split into question and '\\nA: ' answer")
            prompts.append(head + "\n\nQ:" + parts[0])
            labels.append(parts[1])
    return prompts, labels


def mmlu(src: Path | None) -> tuple[list[str], list[str]]:
    """MMLUShots: the 5 dev questions of every subject, zero-shot; subjects in sorted order, one
    random pop per subject per pass (``random.Random(42)``). Cells read by pandas as the paper does."""
    import pandas as pd

    root = _need(src, "the MMLU data folder with dev/ and test/")
    subjects = sorted(f.name[:-len("_test.csv")] for f in _need(root / "test", "MMLU test/ folder").iterdir()
                      if f.name.endswith("_test.csv"))
    if not subjects:
        raise DataselectError(f"{root / 'test'}: no *_test.csv files")
    per_subject = {}
    for s in subjects:
        df = pd.read_csv(_need(root / "dev" / f"{s}_dev.csv", "MMLU dev file"), header=None)
        items = []
        for i in range(df.shape[0]):
            k = df.shape[1] - 2
            text = str(df.iloc[i, 0]) + "".join("\n{}. {}".format("ABCD"[j], df.iloc[i, j + 1]) for j in range(k))
            header = "The following are multiple choice questions (with answers) about {}.\n\n".format(
                "".join(" " + w for w in s.split("_")))
            items.append((tulu_user(header + text + "\nAnswer:") + "The answer is:", str(df.iloc[i, -1])))
        per_subject[s] = items
    rng = random.Random(SEED)
    prompts, labels = [], []
    while len(prompts) < TASKS["mmlu"][1] and all(per_subject.values()):
        for s in per_subject:
            rng.shuffle(per_subject[s])
            p, lab = per_subject[s].pop()
            prompts.append(p)
            labels.append(lab)
    return prompts, labels


def _squad_format(path: Path, what: str) -> list[dict]:
    data = _json(_need(path, what))
    out = []
    for article in _field(data, "data", str(path)):
        for para in article["paragraphs"]:
            for qa in para["qas"]:
                out.append({"lang": qa["id"].split("-")[0], "context": para["context"], "question": qa["question"],
                            "answers": qa["answers"]})
    return out


def tydiqa(src: Path | None, seed: int = SEED) -> tuple[list[str], list[str]]:
    """TydiQAShots: one *train* example per language (languages of the dev file, sorted), drawn after
    the 10 dev examples per language the paper also draws; 1-shot prompts with the passage."""
    root = _need(src, "the TyDiQA folder with tydiqa-goldp-v1.1-dev.json and -train.json")
    dev = _squad_format(root / "tydiqa-goldp-v1.1-dev.json", "TyDiQA GoldP dev file")
    langs = sorted({e["lang"] for e in dev})
    templates = json.loads(_data("tydiqa_templates.json").read_text(encoding="utf-8"))
    rng = random.Random(seed)
    for lang in langs:  # consumed as the paper consumes them, then unused
        of_lang = [e for e in dev if e["lang"] == lang]
        if len(of_lang) > 10:
            rng.sample(of_lang, 10)
    train = _squad_format(root / "tydiqa-goldp-v1.1-train.json", "TyDiQA GoldP train file")
    prompts, labels = [], []
    for lang in langs:
        if lang not in templates:
            raise DataselectError(f"TyDiQA language {lang!r} has no prompt template (known: {', '.join(templates)})")
        (ex,) = rng.sample([e for e in train if e["lang"] == lang], 1)
        t = templates[lang]
        content = t["instruction"] + "\n\n" + t["passage"] + " " + ex["context"] + "\n" + t["question"] + " " + \
            ex["question"] + "\n"
        prompts.append(tulu_user(content) + t["answer"])
        labels.append(ex["answers"][0]["text"])
    return prompts, labels


def humaneval(src: Path | None) -> tuple[list[str], list[str]]:
    """CodexEval: ``HumanEval_dev.jsonl.gz`` problems with HumanEvalPack instructions when
    ``humanevalpack.jsonl`` sits beside it; label = the canonical solution."""
    root = _need(src, "the codex_humaneval folder or the HumanEval .jsonl.gz file")
    path = root / "HumanEval_dev.jsonl.gz" if root.is_dir() else root
    problems = _json(_need(path, "HumanEval problems"))
    hep = path.parent / "humanevalpack.jsonl"
    instructions = ({r["task_id"].replace("Python", "HumanEval"): r["instruction"] for r in _json(hep)}
                    if hep.exists() else None)
    prompts, labels = [], []
    for p in problems:
        if instructions is not None:
            prompts.append(tulu_user(instructions[p["task_id"]]) + "Here is the function:\n\n```python\n" + p["prompt"])
        else:
            prompts.append(tulu_user("Complete the following python function.\n\n\n" + p["prompt"])
                           + "Here is the completed function:\n\n\n")
        labels.append(p["canonical_solution"])
    return prompts, labels


def alpacaeval(src: Path | None) -> tuple[list[str], list[str]]:
    """AlpacaEval: ``alpaca_eval_dev.json`` shuffled with ``random.seed(42)``, the first 50."""
    data = _json(_need(src, "alpaca_eval_dev.json"))
    random.Random(SEED).shuffle(data)  # the paper seeds the global generator with 42, then shuffles
    data = data[:TASKS["alpacaeval"][1]]
    return ([tulu_user(_field(e, "instruction", str(src)).strip()) for e in data],
            [_field(e, "output", str(src)).strip() for e in data])


def squad(src: Path | None) -> tuple[list[str], list[str]]:
    """SquadEval: SQuAD v1.1 *train* (context + "\\n\\n" + question; label = the first answer). Reads a
    ``datasets`` folder (``save_to_disk``), Parquet or JSON(L) files of the hub's ``squad`` train split,
    or, without ``--from``, the hub's ``squad`` itself, as the paper does (``load_dataset("squad")``)."""
    import datasets

    if src is None:  # the paper's own call; needs the hub
        from dataselect.pool.hub import HubPool

        ds = HubPool("squad", "train").load()
    elif _need(src, "SQuAD train: a datasets folder or parquet/json files").is_dir():
        ds = datasets.load_from_disk(str(src))
        ds = ds["train"] if isinstance(ds, datasets.DatasetDict) else ds
    else:
        kind = "parquet" if src.suffix == ".parquet" else "json"
        datasets.disable_progress_bars()  # a few MB read in a second; its bars would break the one-line errors
        ds = datasets.load_dataset(kind, data_files=str(src), split="train")
    prompts = [tulu_user(c + "\n\n" + q) for c, q in zip(ds["context"], ds["question"], strict=True)]
    return prompts, [a["text"][0] for a in ds["answers"]]


BUILDERS: dict[str, Callable] = {"gsm8k": gsm8k, "bbh": bbh, "mmlu": mmlu, "tydiqa": tydiqa,
                                 "humaneval": humaneval, "alpacaeval": alpacaeval, "squad": squad}


EXPECTED = {
    "gsm8k": "a JSONL of exemplars with 'question' and 'cot_answer'",
    "bbh": "BIG-Bench-Hard's cot-prompts/ folder of UTF-8 .txt prompt files",
    "mmlu": "the MMLU data folder with dev/ and test/ CSV files",
    "tydiqa": "the TyDiQA GoldP v1.1 folder (SQuAD-format JSON: {'data': [{'paragraphs': ...}]})",
    "humaneval": "HumanEval's problems (.jsonl.gz or JSONL with 'prompt' and 'canonical_solution')",
    "alpacaeval": "alpaca_eval_dev.json: a JSON list of records with 'instruction' and 'output'",
    "squad": "SQuAD v1.1 train as a datasets folder, or parquet/JSON with context, question and answers",
}


def build_queries(task: str, src=None, seed: int = SEED) -> list[dict]:
    """The paper's query set for ``task`` (a builder name or the paper's key), in its final order."""
    name = ALIASES.get(task, task)
    if name not in TASKS:
        raise DataselectError(f"unknown task {task!r}; choose from {', '.join(TASKS)} (or the paper's keys "
                              f"{', '.join(k for k, _, _ in TASKS.values())})")
    key, keep, max_length = TASKS[name]
    src = Path(src) if src is not None else None
    if src is None and name not in ("gsm8k", "squad"):
        raise DataselectError(f"{name}: give the task's data with --from (see `dataselect queries --help`)")
    try:
        prompts, labels = BUILDERS[name](src, seed) if name == "tydiqa" else BUILDERS[name](src)
    except DataselectError:
        raise
    except Exception as exc:  # whatever a junk download makes a parser raise is bad input
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise DataselectError(f"{src}: not {name} data dataselect can read ({type(exc).__name__}: {first}); "
                              f"expected {EXPECTED[name]}") from None
    if not prompts:
        raise DataselectError(f"{src}: no {name} examples found; expected {EXPECTED[name]}")
    order = paper_order(len(prompts))[:keep]
    return [{"id": f"{key}-{i}", "task": key, "prompt_text": prompts[j], "label_text": labels[j],
             "max_length": max_length} for i, j in enumerate(order.tolist())]


def write_queries(task: str, out, src=None, seed: int = SEED, overwrite: bool = False) -> tuple[Path, int]:
    """Build ``task``'s query set and write it to ``out`` (JSONL) atomically; returns (out, count)."""
    from dataselect.outputs import claim, writing

    out = Path(out)
    claim(out, overwrite=overwrite, inputs=[src], what="query file")
    records = build_queries(task, src, seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    with writing(out, overwrite=overwrite, inputs=[src], what="query file") as tmp, \
            open(tmp, "w", encoding="utf-8") as fh:
        for r in records:
            r["dataselect"] = {"query_set": r["task"], "made_by": "dataselect queries", "seed": seed}
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    return out, len(records)
