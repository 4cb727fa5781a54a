"""Embedding stage on real tiny models: pooling formula, invariances, resume, stores, refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import make_records, run_cli, write_jsonl
from dataselect.embedding.batching import padding_waste, token_budget_batches
from dataselect.embedding.pooling import pool_hidden
from dataselect.embedding.stage import EmbedOptions, EmbedStage
from dataselect.embedding.text import Formatter, render_tulu
from dataselect.errors import DataselectError
from dataselect.pool import normalize_record
from dataselect.store import Store


def embed(pool, out, model, **kw):
    kw.setdefault("progress", False)
    return EmbedStage(pool, out, EmbedOptions(model=model, **kw)).run()


def test_tulu_text_format():
    msgs = [{"role": "system", "content": " sys "}, {"role": "user", "content": "Q?\n"},
            {"role": "assistant", "content": " A. "}, {"role": "user", "content": "more"},
            {"role": "assistant", "content": "B"}]
    text, spans = render_tulu(msgs, "</s>")
    assert text == "<|system|>\nsys\n<|user|>\nQ?\n<|assistant|>\nA.</s>\n<|user|>\nmore\n<|assistant|>\nB</s>"
    assert [text[a:b] for a, b in spans] == ["A.</s>", "B</s>"]


def test_exactly_one_bos_and_response_mask(tiny_llama):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    fmt = Formatter(tok, "tulu", max_length=512, bos="always")
    msgs = [{"role": "user", "content": "what is two plus three"}, {"role": "assistant", "content": "five"}]
    enc = fmt.encode_many([msgs])[0]
    assert enc.ids[0] == tok.bos_token_id and (enc.ids == tok.bos_token_id).sum() == 1
    resp_text = tok.decode(enc.ids[enc.response])
    assert resp_text.replace(" ", "") == "five</s>"
    short = Formatter(tok, "tulu", max_length=5).encode_many([msgs])[0]
    assert short.truncated and len(short.ids) == 5


def test_pooling_formula_against_numpy(tmp_path, tiny_llama):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    recs = make_records(12)
    pool = write_jsonl(tmp_path / "p.jsonl", recs)
    embed(pool, tmp_path / "s", tiny_llama)
    stored = Store(tmp_path / "s").take(np.arange(12))["embedding"]
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    for i in (0, 5, 11):
        text, _ = render_tulu(normalize_record(recs[i]), tok.eos_token)
        ids = [tok.bos_token_id] + tok(text, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            h = model(torch.tensor([ids]), output_hidden_states=True).hidden_states[-1][0].numpy()
        L = len(ids)
        w = np.arange(1, L + 1) / (L * (L + 1) / 2)
        e = (w[:, None] * h).sum(0)
        e /= np.linalg.norm(e)
        np.testing.assert_allclose(stored[i], e, atol=2e-3)


def test_pool_hidden_ignores_padding_and_nans():
    torch.manual_seed(0)
    h = torch.randn(1, 4, 8)
    right = torch.cat([h, torch.full((1, 2, 8), float("nan"))], dim=1)
    left = torch.cat([torch.full((1, 2, 8), float("nan")), h], dim=1)
    mr = torch.tensor([[1, 1, 1, 1, 0, 0]]).bool()
    ml = torch.tensor([[0, 0, 1, 1, 1, 1]]).bool()
    for method in ("rds+", "mean", "last"):
        a, b = pool_hidden(right, mr, method), pool_hidden(left, ml, method)
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(pool_hidden(h, torch.ones(1, 4).bool(), "last"),
                               torch.nn.functional.normalize(h[:, -1], dim=-1))


def test_padding_side_and_batch_composition_do_not_change_embeddings(tmp_path, tiny_llama):
    pool = write_jsonl(tmp_path / "p.jsonl", make_records(30))
    embed(pool, tmp_path / "right", tiny_llama, batch_tokens=4096)
    embed(pool, tmp_path / "left", tiny_llama, batch_tokens=4096, padding_side="left")
    embed(pool, tmp_path / "single", tiny_llama, batch_tokens=1)  # every sample alone
    ref = Store(tmp_path / "right").take(np.arange(30))["embedding"]
    for other in ("left", "single"):
        emb = Store(tmp_path / other).take(np.arange(30))["embedding"]
        cos = (ref * emb).sum(1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(emb, axis=1)
        assert cos.min() > 1 - 1e-3, other


def test_token_budget_batches_sorted_and_low_waste():
    rng = np.random.default_rng(0)
    lengths = (rng.pareto(1.2, 5000) * 40 + 10).astype(int).clip(max=2048)
    batches = token_budget_batches(lengths, 16384)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(5000))
    assert all(len(b) * lengths[b].max() <= 16384 or len(b) == 1 for b in batches)
    assert padding_waste(lengths, batches) < 0.05


def test_store_layout_and_manifest(tmp_path, tiny_llama):
    import pyarrow as pa

    pool = write_jsonl(tmp_path / "p.jsonl", make_records(25))
    man = embed(pool, tmp_path / "s", tiny_llama, shard_rows=10)
    assert [s.file for s in man.shards] == ["shard-00000.arrow", "shard-00001.arrow", "shard-00002.arrow"]
    assert [(s.first_row, s.end_row) for s in man.shards] == [(0, 10), (10, 20), (20, 25)]
    assert man.complete and man.counts["rows_stored"] == 25 and man.config.dim == 64
    with pa.memory_map(str(tmp_path / "s" / "shard-00001.arrow")) as mm:
        t = pa.ipc.open_file(mm).read_all()
    assert t.schema.field("embedding").type == pa.list_(pa.float16(), 64)
    assert t.schema.field("row").type == pa.int64() and t.schema.field("n_tokens").type == pa.int32()
    assert t.column("row").to_pylist() == list(range(10, 20))
    st = Store(tmp_path / "s")
    blocks = list(st.iter_blocks(("row", "embedding"), block_rows=4))
    assert sum(len(b["row"]) for b in blocks) == 25
    assert not blocks[0]["embedding"].flags.owndata  # zero-copy view of the mapped file
    norms = np.linalg.norm(st.embeddings(), axis=1)
    np.testing.assert_allclose(norms, 1, atol=2e-3)
    assert st.take([24, 3])["embedding"].shape == (2, 64)
    assert list(st.take([24, 3], ("id",))["id"]) == ["id24", "id3"]


def test_resume_after_interruption_gives_identical_shards(tmp_path, tiny_llama):
    pool = write_jsonl(tmp_path / "p.jsonl", make_records(50))
    full = embed(pool, tmp_path / "full", tiny_llama, shard_rows=12)
    part = embed(pool, tmp_path / "part", tiny_llama, shard_rows=12, max_shards=2)
    assert not part.complete and len(part.shards) == 2
    with pytest.raises(DataselectError, match="incomplete"):
        Store(tmp_path / "part")
    (tmp_path / "part" / ".tmp-shard-00002.arrow.123.abc").write_bytes(b"half-written")
    resumed = embed(pool, tmp_path / "part", tiny_llama, shard_rows=12)
    assert [s.sha256 for s in resumed.shards] == [s.sha256 for s in full.shards]
    assert resumed.store_hash == full.store_hash
    for s in full.shards:
        assert (tmp_path / "part" / s.file).read_bytes() == (tmp_path / "full" / s.file).read_bytes()
    assert not list((tmp_path / "part").glob(".tmp-*"))


def test_different_config_is_refused(tmp_path, tiny_llama):
    pool = write_jsonl(tmp_path / "p.jsonl", make_records(6))
    embed(pool, tmp_path / "s", tiny_llama)
    with pytest.raises(DataselectError, match="pooling: store has 'rds\\+', this run asks for 'mean'"):
        embed(pool, tmp_path / "s", tiny_llama, pooling="mean")
    embed(pool, tmp_path / "s", tiny_llama, pooling="mean", overwrite=True)
    assert Store(tmp_path / "s").config.pooling == "mean"


def test_skip_invalid_counts_every_row(tmp_path, tiny_llama):
    lines = [json.dumps(r) for r in make_records(8)]
    lines[2] = '{"prompt": "broken'
    lines[5] = json.dumps({"messages": [{"role": "user", "content": "no answer"}]})
    pool = write_jsonl(tmp_path / "p.jsonl", lines)
    with pytest.raises(DataselectError, match=r"p\.jsonl:3: invalid JSON"):
        embed(pool, tmp_path / "s", tiny_llama)
    man = embed(pool, tmp_path / "s2", tiny_llama, skip_invalid=True)
    c = man.counts
    assert (c["rows_read"], c["rows_stored"], c["rows_skipped"]) == (8, 6, 2)
    assert [e["where"] for e in man.skipped_examples] == [f"{pool}:3", f"{pool}:6"]
    assert 2 not in Store(tmp_path / "s2").rows()


def test_query_stores(tmp_path, tiny_llama):
    q = write_jsonl(tmp_path / "q.jsonl", [{"prompt": "what is two plus three"}, {"prompt": "a poem"}])
    man = embed(q, tmp_path / "qs", tiny_llama, task="math", queries=True)
    assert man.kind == "queries"
    assert list(Store(tmp_path / "qs").column("task")) == ["math", "math"]
    tagged = write_jsonl(tmp_path / "t.jsonl", [{"prompt": "x", "task": "a"}, {"prompt": "y"}])
    with pytest.raises(DataselectError, match=r"t\.jsonl:2: query record has no 'task' field"):
        embed(tagged, tmp_path / "ts", tiny_llama, queries=True)


def test_encoder_model_embeds_but_refuses_loss(tmp_path, minilm):
    pool = write_jsonl(tmp_path / "p.jsonl", make_records(5))
    man = embed(pool, tmp_path / "s", "bundled-minilm")
    assert man.config.dim == 384 and man.config.max_length == 512
    with pytest.raises(DataselectError, match="losses need a causal language model"):
        embed(pool, tmp_path / "s2", minilm, with_loss=True)


def test_cli_embed_and_inspect(tmp_path, tiny_llama, capsys):
    pool = write_jsonl(tmp_path / "p.jsonl", make_records(7))
    _, err = run_cli("embed", pool, "--model", tiny_llama, "--out", tmp_path / "s", "-q")
    assert "embedded 7 rows (0 skipped" in err
    run_cli("inspect", tmp_path / "s")
    assert "7 x 64 float16" in capsys.readouterr().out
    _, err = run_cli("embed", tmp_path / "missing.jsonl", "--model", tiny_llama, "--out", tmp_path / "x", expect=2)
    assert err.strip().splitlines()[-1].startswith("dataselect: error: ") and "no such file" in err
