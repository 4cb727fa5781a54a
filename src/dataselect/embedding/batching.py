"""Length-sorted batching under a token budget."""

from __future__ import annotations

import numpy as np

MIN_FILL = 0.25  # a batch may close early once it holds this share of the budget ...
SHRINK = 0.95  # ... and the next sample is shorter than this share of its longest


def token_budget_batches(lengths: np.ndarray, batch_tokens: int, max_batch: int = 1024) -> list[np.ndarray]:
    """Group sample indices into batches of similar length.

    Samples are sorted by length, longest first (stable, so ties keep input order and the batches
    are the same every run). A batch grows while ``len(batch) * longest_in_batch <= batch_tokens``
    (its padded size) and it holds at most ``max_batch`` samples. In the sparse long tail a batch
    closes early once it is a quarter full and the next sample is over 5% shorter than its
    longest, which keeps padding low (a few percent on long-tailed pools) at little cost in batch
    size. A sample longer than the budget gets a batch of its own. Returns index arrays into
    ``lengths``.
    """
    lengths = np.asarray(lengths)
    if batch_tokens < 1:
        raise ValueError("batch_tokens must be positive")
    order = np.argsort(-lengths, kind="stable")
    batches, start, n = [], 0, len(order)
    while start < n:
        longest = max(int(lengths[order[start]]), 1)
        cap = max(1, min(max_batch, batch_tokens // longest, n - start))
        end = start + 1
        while end < start + cap:
            if (end - start) * longest >= MIN_FILL * batch_tokens and lengths[order[end]] < SHRINK * longest:
                break
            end += 1
        batches.append(order[start:end])
        start = end
    return batches


def padding_waste(lengths: np.ndarray, batches: list[np.ndarray]) -> float:
    """Fraction of padded token slots that are padding: 1 - real / (sum over batches of size * longest)."""
    lengths = np.asarray(lengths)
    padded = sum(len(b) * int(lengths[b].max()) for b in batches if len(b))
    return 0.0 if padded == 0 else 1.0 - float(lengths.sum()) / padded
