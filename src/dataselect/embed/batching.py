"""Length-sorted batching under a token budget."""

from __future__ import annotations

import numpy as np


def token_budget_batches(lengths: np.ndarray, batch_tokens: int, max_batch: int = 1024) -> list[np.ndarray]:
    """Group sample indices into batches of similar length.

    Samples are sorted by length, longest first (stable, so ties keep input order and the batches
    are the same every run). A batch grows while ``len(batch) * longest_in_batch <= batch_tokens``
    (the padded size) and it holds at most ``max_batch`` samples; a sample longer than the budget gets
    a batch of its own. Returns index arrays into ``lengths``.
    """
    lengths = np.asarray(lengths)
    if batch_tokens < 1:
        raise ValueError("batch_tokens must be positive")
    order = np.argsort(-lengths, kind="stable")
    batches, start = [], 0
    n = len(order)
    while start < n:
        longest = max(int(lengths[order[start]]), 1)
        size = max(1, min(max_batch, batch_tokens // longest, n - start))
        batches.append(order[start:start + size])
        start += size
    return batches


def padding_waste(lengths: np.ndarray, batches: list[np.ndarray]) -> float:
    """Fraction of padded token slots that are padding: 1 - real / (sum over batches of size * longest)."""
    lengths = np.asarray(lengths)
    padded = sum(len(b) * int(lengths[b].max()) for b in batches if len(b))
    return 0.0 if padded == 0 else 1.0 - float(lengths.sum()) / padded
