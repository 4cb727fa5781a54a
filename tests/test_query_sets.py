"""`dataselect queries`: the RDS+ paper's seven query sets, token for token (issue 18, item 2).

Each test writes a small fixture in the task's download format, builds the expected prompts and
labels from the paper's rules as read in hamishivi/automated-instruction-selection
(minimal_multitask/data.py; strings written out here, not taken from dataselect), orders them with
the paper's own call (datasets' Dataset.shuffle(seed=42)) and tokenises them as its
construct_test_sample does. dataselect's records, read back through the pool reader and the
embedding formatter, must give the same token ids.
"""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import datasets
import pytest

from conftest import run_cli
from dataselect.embedding.text import Formatter
from dataselect.pool import PoolReader
from dataselect.query_sets import build_queries
from dataselect.store import Store


def paper_tokens(tok, prompt: str, label: str, max_length: int) -> list[int]:
    """construct_test_sample: prompt and label tokenised apart, then joined."""
    p = tok(prompt, max_length=max_length, truncation=True)["input_ids"]
    lab = tok(label + tok.eos_token, max_length=max_length, truncation=True, add_special_tokens=False)["input_ids"]
    return list(p) + list(lab)


def paper_order(items: list, keep: int) -> list:
    """Dataset.shuffle(seed=42).select(range(min(keep, n))), the paper's last step for every task."""
    idx = datasets.Dataset.from_dict({"i": list(range(len(items)))}).shuffle(seed=42)["i"]
    return [items[i] for i in idx[:min(keep, len(items))]]


def ours(tmp_path, task, src, tok) -> list[list[int]]:
    out = tmp_path / f"{task}.jsonl"
    run_cli("queries", task, *(["--from", src] if src else []), "--out", out)
    rows = list(PoolReader(out, require_response=False, require_task=True))
    assert all(r.error is None for r in rows)
    fmt = Formatter(tok, "tulu", 2048, bos="auto")
    return [e.ids.tolist() for e in fmt.encode_many([r.messages for r in rows])], rows


def check(tmp_path, task, src, tok, expected: list[tuple[str, str]], keep: int, max_length: int, key: str):
    got, rows = ours(tmp_path, task, src, tok)
    want = [paper_tokens(tok, p, lab, max_length) for p, lab in paper_order(expected, keep)]
    assert got == want
    assert {r.task for r in rows} == {key}


@pytest.fixture(scope="module")
def tok(tiny_llama):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_llama)


U, A = "<|user|>\n", "\n<|assistant|>\n"


def test_gsm8k_is_the_8_exemplars(tmp_path, tok):
    from dataselect.bundled_demo import bundled_data

    ex = [json.loads(x) for x in bundled_data("gsm8k_cot_exemplars.jsonl").read_text().splitlines()]
    assert len(ex) == 8 and ex[0]["question"].startswith("There are 15 trees in the grove.")
    expected = [(U + "Answer the following question.\n\nQuestion: " + e["question"].strip() + A + "Answer:",
                 e["cot_answer"]) for e in ex]
    check(tmp_path, "gsm8k", None, tok, expected, 8, 2048, "gsm8k_shots")


def test_bbh_three_exemplars_per_task_no_chat_wrapper(tmp_path, tok):
    folder = tmp_path / "bbh" / "cot-prompts"
    folder.mkdir(parents=True)
    expected = []
    for name in ("web_of_lies", "boolean_expressions"):  # created out of order: read sorted
        instr = f"Evaluate {name}."
        qs = [(f" question {i} of {name}?\nOptions:\n(A) yes", f"Let's think step by step.\nStep {i}. So the answer is (A).")
              for i in range(3)]
        body = instr + "".join(f"\n\nQ:{q}\nA: {a}" for q, a in qs)
        (folder / f"{name}.txt").write_text(f"canary line {name}\n-----\n" + body)
    for name in ("boolean_expressions", "web_of_lies"):
        for i in range(3):
            expected.append((f"Evaluate {name}.\n\nQ: question {i} of {name}?\nOptions:\n(A) yes",
                             f"Let's think step by step.\nStep {i}. So the answer is (A)."))
    check(tmp_path, "bbh", tmp_path / "bbh", tok, expected, 81, 2048, "bbh_shots")


def test_mmlu_dev_questions_with_pandas_cells(tmp_path, tok):
    root = tmp_path / "mmlu"
    (root / "dev").mkdir(parents=True)
    (root / "test").mkdir()
    rows = {"abstract_algebra": [f"Q{i} of algebra,{i},{i + 1},{i + 2},{i + 3},B" for i in range(5)],
            "college_physics": [f"Q{i} of physics,0.5,None,x,{i},C" for i in range(5)]}
    for s, lines in rows.items():
        (root / "dev" / f"{s}_dev.csv").write_text("\n".join(lines) + "\n")
        (root / "test" / f"{s}_test.csv").write_text("unused,a,b,c,d,A\n")
    cells = {"abstract_algebra": lambda i: [str(i), str(i + 1), str(i + 2), str(i + 3)],  # int column: '3'
             "college_physics": lambda i: ["0.5", "nan", "x", str(i)]}  # 'None' is NA to pandas: 'nan'
    per = {}
    for s in rows:
        about = "The following are multiple choice questions (with answers) about " + \
            " " + " ".join(s.split("_")) + ".\n\n"  # format_subject: a space before every word: two spaces
        per[s] = [(U + about + f"Q{i} of {s.split('_')[1]}" + "".join(f"\n{c}. {v}" for c, v in zip("ABCD", cells[s](i), strict=True))
                   + "\nAnswer:" + A + "The answer is:", "B" if s == "abstract_algebra" else "C") for i in range(5)]
    rng, expected = random.Random(42), []
    while all(per.values()):
        for s in per:
            rng.shuffle(per[s])
            expected.append(per[s].pop())
    assert "about  abstract algebra." in expected[0][0] or "about  college physics." in expected[0][0]
    check(tmp_path, "mmlu", root, tok, expected, 285, 512, "mmlu_shots")


def _squad_json(path: Path, items: list[tuple[str, str, str, str]]):
    data = {"data": [{"paragraphs": [{"context": ctx, "qas": [{"id": qid, "question": q, "answers": [{"text": a}]}]}]}
                     for qid, ctx, q, a in items]}
    path.write_text(json.dumps(data, ensure_ascii=False))


def test_tydiqa_one_train_example_per_language(tmp_path, tok):
    root = tmp_path / "tydiqa"
    root.mkdir()
    dev = [(f"english-{i}", f"dev ctx {i}", f"dev q {i}", "x") for i in range(12)] + \
          [(f"finnish-{i}", f"kappale {i}", f"kysymys {i}", "y") for i in range(3)]
    train = [(f"finnish-t{i}", f"Finnish passage {i}.", f"Mikä {i}?", f"vastaus {i}") for i in range(4)] + \
            [(f"english-t{i}", f"English passage {i}.", f"What {i}?", f"answer {i}") for i in range(5)]
    _squad_json(root / "tydiqa-goldp-v1.1-dev.json", dev)
    _squad_json(root / "tydiqa-goldp-v1.1-train.json", train)
    rng = random.Random(42)
    rng.sample([d for d in dev if d[0].startswith("english")], 10)  # english has 12 > 10: drawn, unused
    templates = {"english": ("Answer the following question based on the information in the given passage.",
                             "Passage:", "Question:", "Answer:"),
                 "finnish": ("Vastaa seuraavaan kysymykseen annetun kappaleen tiedon perusteella.", "Kappale:",
                             "Kysymys:", "Vastaus:")}
    expected = []
    for lang in ("english", "finnish"):
        (_, ctx, q, a), = rng.sample([t for t in train if t[0].startswith(lang)], 1)
        ins, p, qq, aa = templates[lang]
        expected.append((U + ins + "\n\n" + p + " " + ctx + "\n" + qq + " " + q + "\n" + A + aa, a))
    check(tmp_path, "tydiqa", root, tok, expected, 90, 2048, "tydiqa_shots")


@pytest.mark.parametrize("with_pack", [True, False])
def test_humaneval_with_and_without_humanevalpack(tmp_path, tok, with_pack):
    root = tmp_path / "codex_humaneval"
    root.mkdir()
    probs = [{"task_id": f"HumanEval/{i}", "prompt": f"def f{i}(x):\n    \"\"\"doc {i}\"\"\"\n",
              "canonical_solution": f"    return x + {i}\n"} for i in range(5)]
    with gzip.open(root / "HumanEval_dev.jsonl.gz", "wt") as fh:
        fh.writelines(json.dumps(p) + "\n" for p in probs)
    if with_pack:
        (root / "humanevalpack.jsonl").write_text("".join(
            json.dumps({"task_id": f"Python/{i}", "instruction": f"Write f{i} that adds {i}."}) + "\n" for i in range(5)))
        expected = [(U + f"Write f{i} that adds {i}." + A + "Here is the function:\n\n```python\n" + p["prompt"],
                     p["canonical_solution"]) for i, p in enumerate(probs)]
    else:
        expected = [(U + "Complete the following python function.\n\n\n" + p["prompt"] + A +
                     "Here is the completed function:\n\n\n", p["canonical_solution"]) for p in probs]
    check(tmp_path, "humaneval", root, tok, expected, 100, 512, "codex")


def test_alpacaeval_shuffled_first_50(tmp_path, tok):
    data = [{"instruction": f"  Tell me about thing {i}. ", "output": f" Thing {i} is fine.\n"} for i in range(60)]
    (tmp_path / "alpaca_eval_dev.json").write_text(json.dumps(data))
    random.seed(42)
    shuffled = list(data)
    random.shuffle(shuffled)
    expected = [(U + d["instruction"].strip() + A, d["output"].strip()) for d in shuffled[:50]]
    check(tmp_path, "alpacaeval", tmp_path / "alpaca_eval_dev.json", tok, expected, 50, 512, "alpacafarm")


def test_squad_train_context_then_question(tmp_path, tok):
    rows = {"id": [str(i) for i in range(30)], "title": ["t"] * 30,
            "context": [f"Context {i} " + "word " * (i * 20) for i in range(30)],  # the longest exceed 512 tokens
            "question": [f"What is {i}?" for i in range(30)],
            "answers": [{"text": [f"{i}", "other"], "answer_start": [0, 1]} for i in range(30)]}
    datasets.Dataset.from_dict(rows).to_parquet(str(tmp_path / "squad_train.parquet"))
    expected = [(U + c + "\n\n" + q + A, a["text"][0]) for c, q, a in
                zip(rows["context"], rows["question"], rows["answers"], strict=True)]
    check(tmp_path, "squad", tmp_path / "squad_train.parquet", tok, expected, 500, 512, "squad")


def test_query_file_embeds_and_drives_rds(tmp_path, tiny_llama):
    from conftest import make_records, write_jsonl

    run_cli("queries", "gsm8k", "--out", tmp_path / "q.jsonl")
    run_cli("embed", tmp_path / "q.jsonl", "-m", tiny_llama, "-o", tmp_path / "qs", "-q", "--tasks-from-records")
    qs = Store(tmp_path / "qs")
    assert qs.n_rows == 8 and set(qs.column("task")) == {"gsm8k_shots"}
    pool = write_jsonl(tmp_path / "p.jsonl", make_records(50))
    run_cli("embed", pool, "-m", tiny_llama, "-o", tmp_path / "ps", "-q")
    run_cli("run", "--store", tmp_path / "ps", "--method", "rds+", "--queries", tmp_path / "qs", "--budget", "10",
            "--out", tmp_path / "sel", "-q")
    # our own output: replaced only with --overwrite; the source is never overwritten
    _, err = run_cli("queries", "gsm8k", "--out", tmp_path / "q.jsonl", expect=2)
    assert "--overwrite" in err
    run_cli("queries", "gsm8k", "--out", tmp_path / "q.jsonl", "--overwrite")
    (tmp_path / "mine.jsonl").write_text('{"a": 1}\n')
    _, err = run_cli("queries", "gsm8k", "--out", tmp_path / "mine.jsonl", "--overwrite", expect=2)
    assert "not made by dataselect" in err


def test_unknown_task_and_missing_data_are_one_line(tmp_path):
    _, err = run_cli("queries", "nosuch", "--out", tmp_path / "q.jsonl", expect=2)
    assert "gsm8k, bbh, mmlu" in err
    _, err = run_cli("queries", "mmlu", "--out", tmp_path / "q.jsonl", expect=2)
    assert "--from" in err
    _, err = run_cli("queries", "bbh", "--from", tmp_path / "nothing", "--out", tmp_path / "q.jsonl", expect=2)
    assert "not found" in err and not (tmp_path / "q.jsonl").exists()


def test_squad_without_from_reads_the_hub_and_says_so_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    _, err = run_cli("queries", "squad", "--out", tmp_path / "q.jsonl", expect=2)
    assert "squad[train]" in err and err.count("\n") == 1 and not (tmp_path / "q.jsonl").exists()


def test_build_queries_api_matches_cli(tmp_path):
    recs = build_queries("gsm8k_shots")
    assert [r["id"] for r in recs] == [f"gsm8k_shots-{i}" for i in range(8)]


def _junk(tmp_path, case: str):
    import os

    if case == "bbh-binary":
        (tmp_path / "cot-prompts").mkdir()
        (tmp_path / "cot-prompts" / "x.txt").write_bytes(os.urandom(3000) + b"\xff\xfe")
        return "bbh", tmp_path
    if case == "tydiqa-data-5":
        for part in ("dev", "train"):
            (tmp_path / f"tydiqa-goldp-v1.1-{part}.json").write_text('{"data": 5}')
        return "tydiqa", tmp_path
    files = {"alpacaeval-binary": ("alpacaeval", "a.json", b"\xa6\x00\xff" * 100),
             "alpacaeval-object": ("alpacaeval", "a.json", b'{"a": 1}'),
             "squad-empty": ("squad", "s.json", b""),
             "squad-no-columns": ("squad", "s.json", b'{"x": 1}\n'),
             "squad-junk-parquet": ("squad", "s.parquet", b"PAR1" + b"\x01" * 500)}
    task, name, data = files[case]
    (tmp_path / name).write_bytes(data)
    return task, tmp_path / name


@pytest.mark.parametrize("case", ["bbh-binary", "tydiqa-data-5", "alpacaeval-binary", "alpacaeval-object",
                                  "squad-empty", "squad-no-columns", "squad-junk-parquet"])
def test_junk_downloads_are_one_line(tmp_path, case):
    """Issue 24.7: seven junk downloads gave seven different tracebacks."""
    src = tmp_path / "src"
    src.mkdir()
    task, path = _junk(src, case)
    _, err = run_cli("queries", task, "--from", path, "--out", tmp_path / "q.jsonl", expect=2)
    assert f"not {task} data dataselect can read" in err or f"no {task} examples" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "q.jsonl").exists()
