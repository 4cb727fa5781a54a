"""``loss``: perplexity or instruction-following difficulty (IFD) of each row's response.

Needs a store embedded with ``--with-loss`` (``--with-ifd`` for IFD), or one given losses later by
``dataselect score``. With ``L`` the mean NLL of the response tokens given the prompt and ``L0`` the
mean NLL of the response alone:

* ``ppl = exp(L)`` -- the perplexity baselines of Ivison et al. 2025 (top / middle / bottom);
* ``ifd = PPL(response | prompt) / PPL(response) = exp(L - L0)`` -- Cherry's instruction-following
  difficulty; rows with ``ifd >= 1`` (the prompt does not help) are dropped first, as in that work.

Rows without a score (no response token left after truncation) are never picked.
``pick``: ``top`` = highest first, ``bottom`` = lowest first, ``middle`` = the ``budget`` rows
centred on the median (ordered by closeness to it). Ties break by pool row number.
"""

from __future__ import annotations

import numpy as np

from dataselect.errors import DataselectError
from dataselect.selection import Selection
from dataselect.selectors.base import Selector, register
from dataselect.selectors.params import Param


def loss_scores(pool, score: str) -> tuple[np.ndarray, np.ndarray]:
    """Return (rows, scores) for the rows that have a valid score (ppl, or ifd < 1)."""
    need = ["loss_response"] + (["loss_response_alone"] if score == "ifd" else [])
    missing = [c for c in need if c not in pool.columns]
    if missing:
        hint = "--with-ifd" if score == "ifd" else "--with-loss"
        raise DataselectError(f"{pool.path}: store has no {', '.join(missing)} column; embed with {hint} or run "
                              f"`dataselect score {pool.path} --pool POOL{' --with-ifd' if score == 'ifd' else ''}`")
    rows = pool.rows()
    loss = pool.column("loss_response").astype(np.float64)
    if score == "ppl":
        values = np.exp(loss)
        ok = np.isfinite(values)
    else:
        values = np.exp(loss - pool.column("loss_response_alone").astype(np.float64))
        ok = np.isfinite(values) & (values < 1.0)
    return rows[ok], values[ok]


@register
class LossSelector(Selector):
    """Perplexity or IFD of the response (needs loss columns); pick top, middle or bottom."""

    name = "loss"
    needs_losses = True
    rule = "rank by perplexity exp(L) or IFD exp(L - L0) of the response; take the top, middle or bottom rows."
    source = "Ivison et al. 2025 (perplexity baselines); Li et al. 2024, Cherry (IFD)"

    params = (
        Param("score", "ppl", '"ppl" ranks by perplexity exp(L) of the response; "ifd" by exp(L - L0), the response\'s '
              'loss with the prompt over its loss alone (needs a store embedded with --with-ifd).',
              choices=("ppl", "ifd")),
        Param("pick", "top", 'which rows of that ranking to take: the "top" (highest), the "middle" or the "bottom".',
              choices=("top", "middle", "bottom")),
    )

    def pool_scores(self, pool, positions, queries=()):
        """The perplexity (or IFD) of as many pool rows as ``positions``, drawn with a fixed seed."""
        _, values = loss_scores(pool, self.score)
        return values[np.random.default_rng(0).permutation(len(values))[: len(positions)]]

    def select(self, pool, budget, rng, queries=(), resources=None):
        rows, values = loss_scores(pool, self.score)
        if budget > len(rows):
            why = " (rows with IFD >= 1 are dropped)" if self.score == "ifd" else ""
            raise DataselectError(f"only {len(rows):,} rows have a valid {self.score} score{why}; "
                                  f"the budget asks for {budget:,}")
        asc = np.lexsort((rows, values))  # ascending score, ties by row
        if self.pick == "bottom":
            order = asc[:budget]
        elif self.pick == "top":
            order = np.lexsort((rows, -values))[:budget]
        else:
            lo = (len(rows) - budget) // 2
            window = asc[lo:lo + budget]
            median = values[asc[len(asc) // 2]]
            order = window[np.lexsort((rows[window], np.abs(values[window] - median)))]
        return Selection(rows=rows[order], scores=values[order].astype(np.float32))
