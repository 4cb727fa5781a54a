"""``random``: uniform sampling without replacement, optionally stratified by source."""

from __future__ import annotations

import numpy as np

from dataselect.errors import DataselectError
from dataselect.selection import Selection
from dataselect.selectors.base import Selector, register
from dataselect.selectors.params import Param


def largest_remainder(counts: np.ndarray, budget: int) -> np.ndarray:
    """Split ``budget`` over groups in proportion to ``counts`` (Hamilton's method), capped by counts."""
    counts = np.asarray(counts, dtype=np.int64)
    quota = budget * counts / counts.sum()
    take = np.minimum(np.floor(quota).astype(np.int64), counts)
    room = counts - take
    order = np.argsort(-(quota - take), kind="stable")
    missing = budget - int(take.sum())
    for g in order:  # one extra each, largest remainder first; quota - floor < 1 so one pass suffices
        if missing == 0:
            break
        if room[g] > 0:
            take[g] += 1
            missing -= 1
    return take


@register
class RandomSelector(Selector):
    """Uniform random rows, without replacement (seeded); ``--stratify source`` keeps the source mix.

    The score of a row is its uniform random key (the selection order is by key).
    """

    name = "random"
    rule = "uniform without replacement (seeded); --stratify source keeps each source's share of the pool."
    source = "the baseline of every data selection paper"

    params = (
        Param("stratify", "none", '"none" samples the whole pool uniformly. With "source", each source gets a share of '
              'the budget in proportion to its size (largest remainder), sampled uniformly inside it.',
              choices=("none", "source")),
    )

    def select(self, pool, budget, rng, queries=(), resources=None):
        rows = pool.rows()
        n = len(rows)
        if self.stratify == "none":
            pick = rng.choice(n, size=budget, replace=False)
        else:
            if "source" not in pool.columns:
                raise DataselectError(f"{pool.path}: --stratify source needs a 'source' column")
            src = pool.column("source")
            src = np.array(["" if s is None else s for s in src], dtype=object)
            names, inverse, counts = np.unique(src, return_inverse=True, return_counts=True)
            take = largest_remainder(counts, budget)
            parts = [rng.choice(np.nonzero(inverse == g)[0], size=int(t), replace=False)
                     for g, t in enumerate(take) if t]
            pick = rng.permutation(np.concatenate(parts))
        keys = np.sort(rng.random(budget))[::-1].astype(np.float32)
        return Selection(rows=rows[pick], scores=keys)
