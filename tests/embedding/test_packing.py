"""Packed sequences (issue 19): the same embeddings and losses as padded batches, fp32 on CPU."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import make_records, run_cli, write_jsonl
from dataselect.embedding.compute import Encoder
from dataselect.embedding.forward import block_causal_mask, pack_batch
from dataselect.embedding.model import load_model
from dataselect.embedding.text import Encoded, Formatter
from dataselect.pool import normalize_record
from dataselect.store import Store


@pytest.fixture(scope="module")
def model(tiny_llama):
    return load_model(tiny_llama, device="cpu", dtype="float32", with_lm_head=True)


def test_pack_batch_layout():
    seqs = [Encoded(np.arange(n, dtype=np.int32) + 10, np.arange(n) % 2 == 1, False) for n in (5, 3, 2, 4)]
    ids, owner, resp, pos = pack_batch(seqs, 0, capacity=7)
    # first fit in the order given: row 0 = 5 + 2, row 1 = 3 + 4
    assert owner.tolist() == [[0, 0, 0, 0, 0, 2, 2], [1, 1, 1, 3, 3, 3, 3]]
    assert pos.tolist() == [[0, 1, 2, 3, 4, 0, 1], [0, 1, 2, 0, 1, 2, 3]]
    mask = block_causal_mask(owner)[:, 0]
    assert mask[0, 5, 4].item() is False and mask[0, 6, 5].item() is True and mask[0, 4, 0].item() is True
    assert mask[1, 3, 2].item() is False and mask[1, 2, 3].item() is False


@pytest.mark.parametrize("pooling", ["rds+", "mean", "last"])
def test_packed_equals_padded(model, pooling):
    recs = make_records(40, seed=11)
    msgs = [normalize_record(r) for r in recs]
    fmt = Formatter(model.tokenizer, "tulu", 512)
    out = {}
    for batching in ("padded", "packed"):
        emb = Encoder(model, fmt, pooling, with_loss=True, with_ifd=True, batch_tokens=2048, batching=batching)
        out[batching] = emb(msgs)
    a, b = out["padded"], out["packed"]
    ea = a["embedding"].values.to_numpy().astype(np.float32)
    eb = b["embedding"].values.to_numpy().astype(np.float32)
    assert np.abs(ea - eb).max() <= 1e-3  # float16 storage: the values round to the same or a neighbour
    for col in ("loss_response", "loss_response_alone"):
        la, lb = a[col].to_numpy(), b[col].to_numpy()
        assert np.allclose(la, lb, rtol=1e-5, atol=1e-5, equal_nan=True), col
    assert a["n_response_tokens"].equals(b["n_response_tokens"]) and a["n_tokens"].equals(b["n_tokens"])


def test_packed_equals_padded_before_float16(model):
    """The pooled float32 vectors themselves, before the store's float16: within 1e-5."""
    from dataselect.embedding.forward import forward_batch

    fmt = Formatter(model.tokenizer, "tulu", 512)
    seqs = fmt.encode_many([normalize_record(r) for r in make_records(24, seed=4)])
    ea, sa, ca = forward_batch(model, seqs, "rds+", want_loss=True, batching="padded")
    eb, sb, cb = forward_batch(model, seqs, "rds+", want_loss=True, batching="packed")
    assert np.abs(ea - eb).max() <= 1e-5
    assert np.allclose(sa, sb, rtol=1e-5) and np.array_equal(ca, cb)


def test_batching_is_recorded_and_refused_where_impossible(tmp_path, tiny_llama):
    pool = write_jsonl(tmp_path / "p.jsonl", make_records(30))
    run_cli("embed", pool, "-m", tiny_llama, "-o", tmp_path / "packed", "-q", "--batching", "packed")
    run_cli("embed", pool, "-m", tiny_llama, "-o", tmp_path / "auto", "-q")
    assert Store(tmp_path / "packed").config.batching == "packed"
    assert Store(tmp_path / "auto").config.batching == "padded"  # auto on a CPU
    a, b = Store(tmp_path / "packed").embeddings(), Store(tmp_path / "auto").embeddings()
    assert np.abs(a - b).max() <= 1e-3
    _, err = run_cli("embed", pool, "-m", "bundled-minilm", "-o", tmp_path / "enc", "-q", "--batching", "packed", expect=2)
    assert "--batching packed" in err and not (tmp_path / "enc" / "manifest.json").exists()
