"""RDS+ as the paper's code runs it (issue 18): per-query round-robin for one task, exact ties."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from dataselect.selection import read_selection
from dataselect.selection_run import RunSpec, run_selection
from dataselect.selectors import build_selector
from dataselect.store import Store
from dataselect.store.synthetic import store_from_array, unit_rows


def paper_single_task(S: np.ndarray, K: int) -> tuple[list[int], list[float]]:
    """get_top_influences.py --selection_method max, as written there (spec in the test's words):
    every query sorts the pool by its score with Python's stable sort (reverse=True keeps ties in
    row order); queries take turns in index order, each popping its next row; a row already picked
    is dropped and the turn is spent; rounds finish, then the list is cut to K."""
    Q, N = S.shape
    lists = [sorted(range(N), key=lambda j, q=q: S[q][j], reverse=True) for q in range(Q)]
    ptr = [0] * Q
    out, score, seen = [], [], set()
    while len(out) < K:
        for q in range(Q):
            j = lists[q][ptr[q]]
            ptr[q] += 1
            if j not in seen:
                seen.add(j)
                out.append(j)
                score.append(S[q][j])
    return out[:K], score[:K]


@pytest.fixture(scope="module")
def dup_world(tmp_path_factory):
    """A pool with exact duplicates (and near ones), one task of 5 queries, two of them identical."""
    tmp = tmp_path_factory.mktemp("rdsp")
    rng = np.random.default_rng(7)
    base = unit_rows(rng, 300, 48)
    emb = np.concatenate([base, base[:40], base[10:30], base[:5]])  # 65 exact duplicates
    emb = emb[rng.permutation(len(emb))]
    store_from_array(tmp / "pool", emb, shard_rows=97)
    q = unit_rows(rng, 4, 48)
    q = np.concatenate([q, q[1:2]])
    store_from_array(tmp / "q", q, kind="queries", tasks=["t"] * 5)
    E = Store(tmp / "pool").embeddings().astype(np.float64)  # the float16 values, as stored
    Qs = Store(tmp / "q").embeddings().astype(np.float64)
    return tmp, Qs @ E.T


@pytest.mark.parametrize("scoring", ["float32", "screened", "exact"])
@pytest.mark.parametrize("budget", [1, 7, 50, 123, 200, 365])
def test_single_task_is_the_papers_per_query_round_robin(dup_world, budget, scoring):
    tmp, S = dup_world
    want, want_scores = paper_single_task(S, budget)
    sel = build_selector("rds+", {"scoring": scoring}).select(Store(tmp / "pool"), budget, None, [Store(tmp / "q")])
    assert sel.rows.tolist() == want
    if scoring == "float32":  # float32 products of these 48 components: within 1e-6 of the exact ones
        assert np.abs(sel.scores - np.asarray(want_scores)).max() < 1e-6
    else:
        assert np.array_equal(sel.scores, np.asarray(want_scores, dtype=np.float32))
    assert set(sel.tasks) == {"t"}


def test_queries_sharing_rows_need_more_candidates(tmp_path):
    """Five copies of one query: every round adds one row, so the first candidate pass runs short."""
    rng = np.random.default_rng(3)
    store_from_array(tmp_path / "pool", unit_rows(rng, 400, 16), shard_rows=150)
    store_from_array(tmp_path / "q", np.repeat(unit_rows(rng, 1, 16), 5, axis=0), kind="queries", tasks=["t"] * 5)
    S = Store(tmp_path / "q").embeddings().astype(np.float64) @ Store(tmp_path / "pool").embeddings().astype(np.float64).T
    sel = build_selector("rds+", {}).select(Store(tmp_path / "pool"), 90, None, [Store(tmp_path / "q")])
    assert sel.rows.tolist() == paper_single_task(S, 90)[0]
    assert sel.info["passes"] >= 2


def test_top_by_max_stays_an_option(dup_world):
    tmp, S = dup_world
    sel = build_selector("rds+", {"round_robin": "next-unique"}).select(Store(tmp / "pool"), 60, None,
                                                                       [Store(tmp / "q")])
    best = S.max(axis=0)
    want = sorted(range(S.shape[1]), key=lambda j: best[j], reverse=True)[:60]
    assert sel.rows.tolist() == want


def test_selection_records_the_rule_and_the_query(dup_world):
    tmp, _ = dup_world
    _, meta = run_selection(RunSpec(method="rds+", store=str(tmp / "pool"), queries=[str(tmp / "q")],
                                    budget="20", out=str(tmp / "sel")))
    table, _ = read_selection(tmp / "sel")
    assert meta["method_info"]["rule"].startswith("per-query round-robin")
    # query 4 is a copy of query 1: its first pop is a row query 1 took, so that turn is spent
    assert table.column("query").to_pylist()[:5] == [0, 1, 2, 3, 0]


@pytest.mark.parametrize("scoring", ["float32", "exact"])
def test_identical_embeddings_get_identical_scores(tmp_path, scoring):
    from dataselect.pool_index.similarity import task_scores

    rng = np.random.default_rng(11)
    base = unit_rows(rng, 100, 1024)
    store_from_array(tmp_path / "pool", np.concatenate([base, base[::-1], base[:33]]), shard_rows=90)
    pool = Store(tmp_path / "pool")
    Q = unit_rows(rng, 9, 1024).astype(np.float16).astype(np.float32)
    emb = pool.embeddings()
    for block_rows in (1, 7, 64, 0):
        scores = task_scores(pool, Q, np.array([0]), "max", block_rows, scoring=scoring).scores
        assert len(scores) == 233
        keys = {}
        for e, s in zip(emb, scores[:, 0], strict=True):
            keys.setdefault(e.tobytes(), set()).add(float(s))
        assert all(len(v) == 1 for v in keys.values())


@pytest.mark.parametrize("tasks", [["t"] * 5, ["a", "a", "b", "b", "c"]])
def test_selection_does_not_depend_on_threads_or_block_size(dup_world, tmp_path, tasks):
    src, _ = dup_world
    store_from_array(tmp_path / "q", Store(src / "q").embeddings(), kind="queries", tasks=tasks)
    # one process per thread count (BLAS reads it at start-up), every block size inside it
    code = textwrap.dedent(f"""
        from dataselect.selectors import build_selector
        from dataselect.store import Store
        for scoring in ("float32", "exact", "screened"):
            for block_rows in (3, 64, 0):
                sel = build_selector("rds+", {{"block_rows": block_rows, "scoring": scoring}}).select(
                    Store({str(src / 'pool')!r}), 300, None, [Store({str(tmp_path / 'q')!r})])
                assert sel.info["scoring"] == scoring
                print(scoring == "float32", sel.rows.tolist(), sel.scores.tobytes().hex(), list(sel.tasks))
    """)
    outs = []
    for threads in ("1", "2"):
        env = {"OMP_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads, "MKL_NUM_THREADS": threads,
               "PATH": "/usr/bin:/bin"}
        outs += subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                               check=True).stdout.splitlines()
    assert len(outs) == 18 and len(set(outs)) == 2  # float32's selection, and exact's (screened's too)


# --- 3. BOS as the tokenizer does it (the paper calls tokenizer(text) with its defaults) ---------------
@pytest.fixture(scope="module")
def qwen_like(tmp_path_factory):
    """A tiny Llama whose tokenizer adds no BOS by itself (as Qwen's); the default tiny one adds it."""
    from tinymodel import build_llama

    return str(build_llama(tmp_path_factory.mktemp("models") / "no-bos", add_bos=False))


@pytest.mark.parametrize("which", ["tiny_llama", "qwen_like"])
def test_bos_auto_is_the_tokenizers_own(which, request):
    from transformers import AutoTokenizer

    from dataselect.embedding.text import Formatter, render_tulu

    path = request.getfixturevalue(which)
    tok = AutoTokenizer.from_pretrained(path)
    msgs = [{"role": "user", "content": "what is two plus three"}, {"role": "assistant", "content": "five"}]
    text, _ = render_tulu(msgs, tok.eos_token)
    paper = tok(text, max_length=2048, truncation=True)["input_ids"]  # the paper's call
    auto = Formatter(tok, "tulu", 2048, bos="auto").encode_many([msgs])[0]
    always = Formatter(tok, "tulu", 2048, bos="always").encode_many([msgs])[0]
    assert auto.ids.tolist() == paper
    assert always.ids.tolist() == [tok.bos_token_id] + tok(text, add_special_tokens=False)["input_ids"]
    assert (auto.ids.tolist() == always.ids.tolist()) == (which == "tiny_llama")
    assert tok.decode(auto.ids[auto.response]).replace(" ", "") == "five</s>"


def test_bos_is_recorded_and_must_match(tmp_path, qwen_like):
    from conftest import make_records, run_cli, write_jsonl

    pool = write_jsonl(tmp_path / "p.jsonl", make_records(30))
    q = write_jsonl(tmp_path / "q.jsonl", make_records(3, seed=9))
    run_cli("embed", pool, "-m", qwen_like, "-o", tmp_path / "auto", "-q")
    run_cli("embed", pool, "-m", qwen_like, "-o", tmp_path / "always", "-q", "--bos", "always")
    run_cli("embed", q, "-m", qwen_like, "-o", tmp_path / "q", "-q", "--task", "t")
    a, b = Store(tmp_path / "auto"), Store(tmp_path / "always")
    assert a.config.bos == "auto" and b.config.bos == "always"
    assert (a.column("n_tokens") + 1 == b.column("n_tokens")).all()  # one BOS more
    cos = (a.embeddings() * b.embeddings()).sum(1)
    assert cos.min() < 0.999  # the BOS changes the embedding: it matters which one the paper used
    _, err = run_cli("run", "--store", tmp_path / "always", "--method", "rds+", "--queries", tmp_path / "q",
                     "--budget", "5", "--out", tmp_path / "sel", expect=2)
    assert "--bos" in err
    _, err = run_cli("embed", pool, "-m", qwen_like, "-o", tmp_path / "auto", "-q", "--bos", "always", expect=2)
    assert "made differently" in err
