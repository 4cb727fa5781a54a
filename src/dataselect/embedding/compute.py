"""From a shard's messages to its Arrow columns: tokenise, batch by length, forward, pool, losses."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa

from dataselect.embedding.batching import token_budget_batches
from dataselect.embedding.forward import forward_batch
from dataselect.embedding.model import LoadedModel
from dataselect.embedding.text import Encoded, Formatter
from dataselect.errors import DataselectError
from dataselect.store.writer import embedding_array

ENCODE_CHUNK = 1024


class Encoder:
    """Compute the store columns of a list of samples (one shard's worth) in one pass of the model.

    Columns: ``embedding`` (fixed_size_list<float16>), ``n_tokens`` (int32), ``truncated`` (bool);
    with losses also ``loss_response`` (float32 mean NLL of response tokens given the prompt, NaN when
    none is left), ``n_response_tokens`` (int32), and with IFD ``loss_response_alone`` (the response
    without the prompt; its sequences are batched together with the full ones).
    """

    def __init__(self, model: LoadedModel, formatter: Formatter, pooling: str, *, with_loss: bool = False,
                 with_ifd: bool = False, padding_side: str = "right", batch_tokens: int = 0,
                 batching: str = "padded"):
        self.model = model
        self.formatter = formatter
        self.pooling = pooling
        self.with_loss = with_loss or with_ifd
        self.with_ifd = with_ifd
        self.padding_side = padding_side
        self.batching = batching  # "padded" or "packed" (resolved by the caller)
        self.batch_tokens = batch_tokens or (65536 if model.device.type == "cuda" else 16384)

    @classmethod
    def from_store(cls, store, *, model: str | None = None, with_loss: bool = False, with_ifd: bool = False,
                   device: str = "auto", dtype: str = "auto", batch_tokens: int = 0,
                   allow_pickle: bool = False) -> Encoder:
        """An encoder that computes rows exactly as ``store`` was embedded: its model, at the revision
        the store records (refused in one line when the model has changed since), its template, BOS
        handling, maximum length, pooling and batching (packed where the store was packed).

        ``model``: another model whose losses are wanted on the store's rows (``--loss-model``); its
        revision is its own, and only the store's text settings apply.
        """
        from dataselect.embedding.model import load_model

        cfg = store.config
        name = model or cfg.model.name
        loaded = load_model(name, device=device, dtype=dtype, with_lm_head=with_loss or with_ifd,
                            allow_pickle=allow_pickle)
        if name == cfg.model.name:
            check_revision(store, loaded)
        formatter = Formatter(loaded.tokenizer, cfg.template, cfg.max_length, causal=loaded.causal, bos=cfg.bos)
        batching = resolve_batching(loaded, cfg.batching if name == cfg.model.name else "padded")
        return cls(loaded, formatter, cfg.pooling, with_loss=with_loss, with_ifd=with_ifd, batch_tokens=batch_tokens,
                   batching=batching)

    def _encode(self, messages: list[list[dict]], response_only: bool = False) -> list[Encoded]:
        out: list[Encoded] = []
        for lo in range(0, len(messages), ENCODE_CHUNK):
            out += self.formatter.encode_many(messages[lo:lo + ENCODE_CHUNK], response_only=response_only)
        return out

    def __call__(self, messages: list[list[dict]],
                 progress: Callable[[int, int], None] | None = None) -> dict[str, pa.Array]:
        n = len(messages)
        seqs = self._encode(messages)
        all_seqs = seqs + (self._encode(messages, response_only=True) if self.with_ifd else [])
        lengths = np.array([len(s.ids) for s in all_seqs], dtype=np.int64)
        emb = np.zeros((n, self.model.dim), dtype=np.float32)
        nll = np.full(len(all_seqs), np.nan, dtype=np.float64)
        cnt = np.zeros(len(all_seqs), dtype=np.int64)
        for batch in token_budget_batches(lengths, self.batch_tokens):
            e, sums, counts = forward_batch(self.model, [all_seqs[i] for i in batch], self.pooling,
                                            want_loss=self.with_loss, padding_side=self.padding_side,
                                            batching=self.batching)
            main = batch < n
            emb[batch[main]] = e[main]
            if self.with_loss:
                cnt[batch] = counts
                nll[batch] = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
            if progress:
                progress(int(main.sum()), int(lengths[batch].sum()))
        cols = {"embedding": embedding_array(emb),
                "n_tokens": pa.array(lengths[:n].astype(np.int32)),
                "truncated": pa.array(np.array([s.truncated for s in seqs], dtype=bool))}
        if self.with_loss:
            cols["loss_response"] = pa.array(nll[:n].astype(np.float32))
            cols["n_response_tokens"] = pa.array(cnt[:n].astype(np.int32))
        if self.with_ifd:
            cols["loss_response_alone"] = pa.array(nll[n:].astype(np.float32))
        return cols


def check_revision(store, model) -> None:
    """Refuse, in one line, the store's model when it has changed since the store was embedded."""
    cfg = store.config
    if model.revision != cfg.model.revision:
        raise DataselectError(f"model {cfg.model.name!r} is now at revision {model.revision}, but {store.path} was "
                              f"embedded at {cfg.model.revision}; what it computes would not match the store's rows")


def resolve_batching(model, requested: str, gpu: bool | None = None) -> str:
    """``auto`` -> ``packed`` when the model can take packed input on a GPU, else ``padded``."""
    from dataselect.embedding.forward import can_pack

    gpu = model.device.type == "cuda" if gpu is None else gpu
    if requested == "packed" and not can_pack(model):
        raise DataselectError(f"--batching packed: {getattr(model.config, 'model_type', 'this model')} cannot "
                              "take packed input here (a causal LM of a known family is needed); use --batching "
                              "padded or auto")
    if requested == "auto":
        return "packed" if can_pack(model) and gpu else "padded"
    return requested
