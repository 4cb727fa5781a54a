"""Losses from the embedding pass: equal to the model's own loss, same embeddings, `score`, `loss` selector."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import make_records, run_cli, write_jsonl
from dataselect.embedding.stage import EmbedOptions, EmbedStage
from dataselect.embedding.text import Formatter
from dataselect.errors import DataselectError
from dataselect.pool import PoolReader
from dataselect.selectors import build_selector
from dataselect.store import Store
from dataselect.store.synthetic import store_from_array, unit_rows
from tinymodel import build_llama

CHAT = ("{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}{% if m['role'] == 'assistant' %}"
        "{{ eos_token }}{% endif %}\n{% endfor %}")


def embed(pool, out, model, **kw):
    return EmbedStage(pool, out, EmbedOptions(model=model, progress=False, **kw)).run()


def direct_losses(model_path, pool, template, response_only=False):
    """Mean response NLL per row with the model's own forward and labels, one unpadded sequence at a time."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path).eval()
    fmt = Formatter(tok, template, max_length=512)
    out = []
    for row in PoolReader(pool):
        enc = fmt.encode_many([row.messages], response_only=response_only)[0]
        ids = torch.tensor(enc.ids, dtype=torch.long)[None]
        labels = torch.where(torch.tensor(enc.response)[None], ids, torch.tensor(-100))
        with torch.no_grad():
            out.append(float(model(input_ids=ids, labels=labels).loss))
    return np.array(out)


@pytest.fixture(scope="module")
def chat_llama(tmp_path_factory):
    return str(build_llama(tmp_path_factory.mktemp("chat") / "m", seed=1, chat_template=CHAT))


@pytest.mark.parametrize("template,side", [("tulu", "right"), ("tulu", "left"), ("chat", "right"), ("chat", "left")])
def test_loss_equals_model_forward_with_labels(tmp_path, chat_llama, template, side):
    recs = make_records(14, seed=2)
    recs[0] = {"id": "multi", "messages": [{"role": "system", "content": "be brief"},
                                           {"role": "user", "content": "what is two plus three"},
                                           {"role": "assistant", "content": "five"},
                                           {"role": "user", "content": "and the cat"},
                                           {"role": "assistant", "content": "sat on a mat"}]}
    pool = write_jsonl(tmp_path / "p.jsonl", recs)
    embed(pool, tmp_path / "s", chat_llama, template=template, with_ifd=True, padding_side=side, batch_tokens=600)
    st = Store(tmp_path / "s")
    np.testing.assert_allclose(st.column("loss_response"), direct_losses(chat_llama, pool, template), atol=1e-4)
    np.testing.assert_allclose(st.column("loss_response_alone"),
                               direct_losses(chat_llama, pool, template, response_only=True), atol=1e-4)
    assert (st.column("n_response_tokens") > 0).all()


def test_embeddings_identical_with_and_without_loss(tmp_path, tiny_llama):
    pool = write_jsonl(tmp_path / "p.jsonl", make_records(20))
    embed(pool, tmp_path / "plain", tiny_llama)
    embed(pool, tmp_path / "loss", tiny_llama, with_loss=True)
    a = Store(tmp_path / "plain").embeddings(np.float16)
    b = Store(tmp_path / "loss").embeddings(np.float16)
    assert np.array_equal(a, b)
    assert "loss_response" in Store(tmp_path / "loss").columns and "loss_response" not in Store(tmp_path / "plain").columns


def test_score_adds_losses_later_and_resumes(tmp_path, tiny_llama):
    pool = write_jsonl(tmp_path / "p.jsonl", make_records(30))
    embed(pool, tmp_path / "s", tiny_llama, shard_rows=10)
    embed(pool, tmp_path / "ref", tiny_llama, shard_rows=10, with_ifd=True)
    run_cli("score", tmp_path / "s", "--pool", pool, "--with-ifd", "-q")
    st, ref = Store(tmp_path / "s"), Store(tmp_path / "ref")
    for col in ("loss_response", "loss_response_alone", "n_response_tokens"):
        np.testing.assert_allclose(st.column(col), ref.column(col), atol=1e-5)
    assert np.array_equal(st.embeddings(np.float16), ref.embeddings(np.float16))
    run_cli("score", tmp_path / "s", "--pool", pool, "--with-ifd", "-q")  # nothing left to do
    other = write_jsonl(tmp_path / "o.jsonl", make_records(30, seed=9))
    _, err = run_cli("score", tmp_path / "s", "--pool", other, expect=2)
    assert "is not the pool this store was embedded from" in err


def test_loss_selector_picks_expected_rows(tmp_path):
    loss = np.array([0.5, 2.0, 1.0, 3.0, np.nan, 1.5, 0.1, 2.5], dtype=np.float32)
    alone = np.array([1.0, 1.0, 2.0, 2.0, 1.0, 1.0, 1.0, 3.0], dtype=np.float32)
    store_from_array(tmp_path / "s", unit_rows(np.random.default_rng(0), 8, 4),
                     extra={"loss_response": loss, "loss_response_alone": alone})
    st = Store(tmp_path / "s")
    pick = lambda **p: build_selector("loss", p).select(st, p.pop("budget", 3), None).rows.tolist()  # noqa: E731
    assert pick(score="ppl", pick="top") == [3, 7, 1]
    assert pick(score="ppl", pick="bottom") == [6, 0, 2]
    assert pick(score="ppl", pick="middle") == [5, 2, 1]  # valid sorted: 6,0,2,5,1,7,3 -> centre window 2,5,1
    sel = build_selector("loss", {"score": "ifd", "pick": "top"}).select(st, 3, None)
    # ifd = exp(loss - alone): row0 e^-0.5, row2 e^-1, row6 e^-0.9, row7 e^-0.5; rows 1, 3, 5 (ifd >= 1)
    # and the NaN row 4 are dropped; rows 0 and 7 tie and break by row number
    assert sel.rows.tolist() == [0, 7, 6]
    np.testing.assert_allclose(sel.scores, np.exp([-0.5, -0.5, -0.9]), rtol=1e-6)
    with pytest.raises(DataselectError, match="only 4 rows have a valid ifd score"):
        build_selector("loss", {"score": "ifd"}).select(st, 5, None)


def test_loss_selector_needs_loss_columns(tmp_path):
    store_from_array(tmp_path / "s", unit_rows(np.random.default_rng(0), 5, 4))
    with pytest.raises(DataselectError, match="store has no loss_response column; embed with --with-loss"):
        build_selector("loss", {}).select(Store(tmp_path / "s"), 2, None)


def test_score_on_a_store_with_losses_does_nothing(tmp_path, tiny_llama):
    """Issue 24: `score` on a store that already has losses recomputed every one (here the model is
    moved away: a run that loaded it would fail)."""
    import shutil

    from conftest import make_records, run_cli, write_jsonl

    model = tmp_path / "m"
    shutil.copytree(tiny_llama, model)
    pool = write_jsonl(tmp_path / "pool.jsonl", make_records(12))
    run_cli("embed", pool, "-m", model, "-o", tmp_path / "s", "--with-loss", "-q")
    before = (tmp_path / "s" / "manifest.json").read_bytes()
    shutil.rmtree(model)
    _, err = run_cli("score", tmp_path / "s", "--pool", pool, "-q")
    assert "already has losses for all 12 rows; nothing to score" in err
    assert (tmp_path / "s" / "manifest.json").read_bytes() == before
