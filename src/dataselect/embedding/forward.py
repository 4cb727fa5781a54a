"""One forward pass over a batch: pooled embeddings and, optionally, response losses.

``padded``: one row per sample, padded to the longest, with an attention mask. ``packed``
(Prepacking, Zhao et al. 2024): several samples share a row, each with its own position ids
restarting at 0 and attention confined to itself -- a block-diagonal causal mask for SDPA/eager
attention, or, with flash-attention 2, one row and nothing but the restarted position ids (its
varlen kernel reads sample boundaries from them). Pooling and losses stay per sample, so both give
the same embeddings and losses up to float rounding (tested to 1e-5 in fp32).

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


def pack_batch(seqs: list[Encoded], pad_id: int, capacity: int, device=None):
    """Pack ``seqs`` into rows of at most ``capacity`` tokens (first fit, in the order given).

    Returns (input_ids (R, L), owner (R, L): the sample each token belongs to, -1 for padding,
    response_mask (R, L), position_ids (R, L) restarting at 0 in every sample).
    """
    rows: list[list[int]] = []
    room: list[int] = []
    for i, s in enumerate(seqs):
        n = len(s.ids)
        r = next((j for j, free in enumerate(room) if free >= n), None)
        if r is None:
            rows.append([])
            room.append(max(capacity, n))
            r = len(rows) - 1
        rows[r].append(i)
        room[r] -= n
    width = max(sum(len(seqs[i].ids) for i in row) for row in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    owner = np.full((len(rows), width), -1, dtype=np.int64)
    resp = np.zeros((len(rows), width), dtype=bool)
    pos = np.zeros((len(rows), width), dtype=np.int64)
    for r, row in enumerate(rows):
        at = 0
        for i in row:
            s = seqs[i]
            n = len(s.ids)
            ids[r, at:at + n], owner[r, at:at + n], resp[r, at:at + n] = s.ids, i, s.response
            pos[r, at:at + n] = np.arange(n)
            at += n
    as_t = lambda a: torch.from_numpy(a).to(device)  # noqa: E731
    return as_t(ids), as_t(owner), as_t(resp), as_t(pos)


def block_causal_mask(owner: torch.Tensor) -> torch.Tensor:
    """(R, L) owners -> (R, 1, L, L) bool: token i sees token j <= i of the same sample (padding sees itself)."""
    same = owner[:, :, None] == owner[:, None, :]
    causal = torch.ones(owner.shape[1], owner.shape[1], dtype=torch.bool, device=owner.device).tril()
    return (same & causal)[:, None]


def pool_segments(hidden: torch.Tensor, owner: torch.Tensor, n: int, method: str) -> torch.Tensor:
    """Per-sample pooling of packed hidden states (R, L, D) -> (n, D), the weights of :func:`pool_hidden`."""
    flat_owner = owner.reshape(-1)
    real = flat_owner >= 0
    h = hidden.reshape(-1, hidden.shape[-1])[real].float()
    who = flat_owner[real]
    lengths = torch.bincount(who, minlength=n)
    first = torch.cumsum(lengths, 0) - lengths  # tokens of a sample are contiguous, in order
    order = torch.argsort(who, stable=True)
    h, who = h[order], who[order]
    p = (torch.arange(len(who), device=who.device) - first[who] + 1).float()  # 1..L in each sample
    if method == "rds+":
        w = p
    elif method == "mean":
        w = torch.ones_like(p)
    else:
        w = (p == lengths[who].float()).float()
    w = w / torch.zeros(n, device=w.device).index_add_(0, who, w).clamp_min(1e-12)[who]
    out = torch.zeros(n, h.shape[1], dtype=torch.float32, device=h.device).index_add_(0, who, h * w[:, None])
    return torch.nn.functional.normalize(out, p=2, dim=-1)


def response_nll(model: LoadedModel, hidden: torch.Tensor, ids: torch.Tensor, owner: torch.Tensor,
                 resp: torch.Tensor, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Sum of next-token NLL over response tokens, and their count, per sample -> two (n,) arrays.

    ``owner`` (R, L) names the sample of every position (-1: padding). Token t+1 is predicted from
    the hidden state at t; it counts when t+1 is a response token of the same sample.
    """
    target_ok = resp[:, 1:] & (owner[:, 1:] == owner[:, :-1]) & (owner[:, 1:] >= 0)
    r_idx, t_idx = torch.nonzero(target_ok, as_tuple=True)
    b_idx = owner[r_idx, t_idx]
    sums = torch.zeros(n, dtype=torch.float64, device=hidden.device)
    counts = torch.bincount(b_idx, minlength=n)
    if len(b_idx):
        vocab = model.lm_head.out_features if hasattr(model.lm_head, "out_features") else model.config.vocab_size
        chunk = max(16, LOGIT_BUDGET.get(hidden.device.type, LOGIT_BUDGET["cpu"]) // max(int(vocab), 1))
        for lo in range(0, len(b_idx), chunk):
            bi, ri, ti = b_idx[lo:lo + chunk], r_idx[lo:lo + chunk], t_idx[lo:lo + chunk]
            logits = model.lm_head(hidden[ri, ti]).float()
            if model.logit_softcap:
                logits = torch.tanh(logits / model.logit_softcap) * model.logit_softcap
            target = ids[ri, ti + 1]
            nll = torch.logsumexp(logits, dim=-1) - logits.gather(1, target[:, None]).squeeze(1)
            sums.index_add_(0, bi, nll.double())
            del logits
    return sums.cpu().numpy(), counts.cpu().numpy()


# decoder families whose attention takes restarted position ids with a 4D mask (or flash varlen)
PACKABLE = ("llama", "mistral", "mixtral", "qwen2", "qwen3", "qwen2_moe", "qwen3_moe", "gemma", "gemma2", "gemma3_text",
            "olmo", "olmo2", "phi3", "granite", "starcoder2", "cohere", "deepseek_v3", "smollm3")


def can_pack(model: LoadedModel) -> bool:
    """Whether the model can take packed input (a causal LM of a family known to, taking position ids)."""
    config = getattr(model, "config", None) or model.base.config
    return bool(model.causal and getattr(config, "model_type", None) in PACKABLE)


@torch.inference_mode()
def forward_batch(model: LoadedModel, seqs: list[Encoded], pooling: str, *, want_loss: bool,
                  padding_side: str = "right", batching: str = "padded",
                  ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Run the base model once. Returns (embeddings (B, D) float32, nll sums (B,), response counts (B,))."""
    pad_id = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    n = len(seqs)
    if batching == "packed":
        flash = getattr(model.base.config, "_attn_implementation", "") == "flash_attention_2"
        capacity = sum(len(s.ids) for s in seqs) if flash else max(len(s.ids) for s in seqs)
        ids, owner, resp, pos = pack_batch(seqs, pad_id, capacity, model.device)
        kwargs = {"input_ids": ids, "position_ids": pos}
        if not flash:  # flash varlen takes the boundaries from the restarted position ids
            kwargs["attention_mask"] = block_causal_mask(owner)
        hidden = model.base(**kwargs).last_hidden_state
        emb = pool_segments(hidden, owner, n, pooling).cpu().numpy()
    else:
        ids, mask, resp, pos = pad_batch(seqs, pad_id, padding_side, model.device)
        kwargs = {"input_ids": ids, "attention_mask": mask.long()}
        if _takes_position_ids(type(model.base)):
            kwargs["position_ids"] = pos
        hidden = model.base(**kwargs).last_hidden_state
        emb = pool_hidden(hidden, mask, pooling).cpu().numpy()
        owner = torch.where(mask, torch.arange(n, device=mask.device)[:, None], -1)
    if not want_loss:
        return emb, None, None
    sums, counts = response_nll(model, hidden, ids, owner, resp, n)
    return emb, sums, counts
