"""One forward pass over a padded batch: pooled embeddings and, optionally, response losses.

The loss comes from the hidden states the pooling already uses: the LM head is applied only at
positions whose next token is a response token, in chunks, so a long batch's full-vocabulary logits
(a 128k vocabulary times 64k tokens) are never held at once.
"""

from __future__ import annotations

import functools
import inspect

import numpy as np
import torch

from dataselect.embedding.model import LoadedModel
from dataselect.embedding.pooling import pool_hidden
from dataselect.embedding.text import Encoded

LOGIT_BUDGET = {"cpu": 1 << 25, "cuda": 1 << 28}  # logits per chunk: 128 MiB on CPU, 1 GiB (fp32) on GPU


@functools.cache
def _takes_position_ids(model_type: type) -> bool:
    return "position_ids" in inspect.signature(model_type.forward).parameters


def pad_batch(seqs: list[Encoded], pad_id: int, side: str = "right", device=None):
    """Return (input_ids, attention_mask, response_mask, position_ids) tensors for ``seqs``."""
    longest = max(len(s.ids) for s in seqs)
    n = len(seqs)
    ids = np.full((n, longest), pad_id, dtype=np.int64)
    mask = np.zeros((n, longest), dtype=bool)
    resp = np.zeros((n, longest), dtype=bool)
    for i, s in enumerate(seqs):
        sl = slice(0, len(s.ids)) if side == "right" else slice(longest - len(s.ids), longest)
        ids[i, sl] = s.ids
        mask[i, sl] = True
        resp[i, sl] = s.response
    pos = np.clip(mask.cumsum(axis=1) - 1, 0, None)  # positions count real tokens only: padding side is invisible
    as_t = lambda a: torch.from_numpy(a).to(device)  # noqa: E731
    return as_t(ids), as_t(mask), as_t(resp), as_t(pos)


def response_nll(model: LoadedModel, hidden: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor,
                 resp: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Sum of next-token NLL over response tokens, and their count, per sequence -> two (B,) arrays.

    Token t+1 is predicted from the hidden state at t; it counts when t+1 is a real response token.
    """
    target_ok = resp[:, 1:] & mask[:, 1:] & mask[:, :-1]
    b_idx, t_idx = torch.nonzero(target_ok, as_tuple=True)
    sums = torch.zeros(ids.shape[0], dtype=torch.float64, device=hidden.device)
    counts = torch.bincount(b_idx, minlength=ids.shape[0])
    if len(b_idx):
        vocab = model.lm_head.out_features if hasattr(model.lm_head, "out_features") else model.config.vocab_size
        chunk = max(16, LOGIT_BUDGET.get(hidden.device.type, LOGIT_BUDGET["cpu"]) // max(int(vocab), 1))
        for lo in range(0, len(b_idx), chunk):
            bi, ti = b_idx[lo:lo + chunk], t_idx[lo:lo + chunk]
            logits = model.lm_head(hidden[bi, ti]).float()
            if model.logit_softcap:
                logits = torch.tanh(logits / model.logit_softcap) * model.logit_softcap
            target = ids[bi, ti + 1]
            nll = torch.logsumexp(logits, dim=-1) - logits.gather(1, target[:, None]).squeeze(1)
            sums.index_add_(0, bi, nll.double())
            del logits
    return sums.cpu().numpy(), counts.cpu().numpy()


@torch.inference_mode()
def forward_batch(model: LoadedModel, seqs: list[Encoded], pooling: str, *, want_loss: bool,
                  padding_side: str = "right") -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Run the base model once. Returns (embeddings (B, D) float32, nll sums (B,), response counts (B,))."""
    pad_id = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    ids, mask, resp, pos = pad_batch(seqs, pad_id, padding_side, model.device)
    kwargs = {"input_ids": ids, "attention_mask": mask.long()}
    if _takes_position_ids(type(model.base)):
        kwargs["position_ids"] = pos
    hidden = model.base(**kwargs).last_hidden_state
    emb = pool_hidden(hidden, mask, pooling).cpu().numpy()
    if not want_loss:
        return emb, None, None
    sums, counts = response_nll(model, hidden, ids, mask, resp)
    return emb, sums, counts
