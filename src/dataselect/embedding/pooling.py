"""Pooling of a model's last hidden layer into one vector per sample.

``rds+`` (the default) is the position-weighted mean of Ivison et al. 2025, "Large-Scale Data
Selection for Instruction Tuning" (the SGPT weighting of Muennighoff 2022). For a sample with ``L``
real (non-padding) tokens whose last-layer hidden states are ``h_1 .. h_L`` (counted from 1 in
reading order, whatever side the padding is on)::

    w_i = i / (L (L + 1) / 2)            so that  sum_i w_i = 1
    e   = sum_i w_i h_i
    rds+(x) = e / ||e||_2

``mean`` uses ``w_i = 1 / L`` and ``last`` uses ``h_L``; both are L2-normalised too.
"""

from __future__ import annotations

import torch

from dataselect.embedding.options import POOLINGS


def pool_hidden(hidden: torch.Tensor, mask: torch.Tensor, method: str = "rds+") -> torch.Tensor:
    """Pool ``hidden`` (B, T, D) over the real tokens in ``mask`` (B, T, bool) -> (B, D) float32, unit norm.

    Padding positions are excluded with ``torch.where`` rather than multiplied by zero, so NaNs that
    some attention kernels leave in fully-masked padding rows never leak into the result.
    """
    if method not in POOLINGS:
        raise ValueError(f"unknown pooling {method!r}; choose from {', '.join(POOLINGS)}")
    mask = mask.bool()
    h = torch.where(mask.unsqueeze(-1), hidden.float(), torch.zeros((), dtype=torch.float32, device=hidden.device))
    pos = mask.cumsum(dim=1) * mask  # 1..L on real tokens, 0 on padding
    if method == "rds+":
        w = pos.float()
    elif method == "mean":
        w = mask.float()
    else:  # last real token
        w = (pos == pos.amax(dim=1, keepdim=True)).float() * mask
    w = w / w.sum(dim=1, keepdim=True).clamp_min(1e-12)
    out = torch.einsum("btd,bt->bd", h, w)
    return torch.nn.functional.normalize(out, p=2, dim=-1)
