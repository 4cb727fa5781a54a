"""``rds+``: representation-based data selection (Ivison et al. 2025).

Each pool row's score for a task is the cosine similarity (a dot product of L2-normalised RDS+
embeddings) to that task's query examples, reduced by ``max`` (the paper's choice) or ``mean``
over the task's queries. Each task ranks the pool by its score, ties broken by pool row number.
Rows are then taken round-robin over tasks (in order of first appearance in the query stores):

``paper`` (default; as the paper's code): in each round, every task in turn pops its next-ranked
row. A row already taken is not added again -- that turn is spent -- and the row keeps the lowest
score any task gave it when popping it. Stops as soon as the budget is met, mid-round if need be.

``next-unique``: every turn takes a new row; a task whose next row is already taken moves on to its
first row not yet taken. The row's score is the taking task's score.

With one task both reduce to "top ``budget`` rows by score".
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from dataselect.scoring import AGGREGATES, query_matrix, score_tasks
from dataselect.selection import Selection
from dataselect.selectors.base import Selector, check_choice, register

ROUND_ROBIN = ("paper", "next-unique")


def task_orders(scores: np.ndarray) -> np.ndarray:
    """(N, T) scores -> (T, N) positions sorted by descending score, ties by ascending position."""
    dtype = np.int32 if scores.shape[0] < 2**31 else np.int64
    return np.stack([np.argsort(-scores[:, t], kind="stable").astype(dtype) for t in range(scores.shape[1])])


def round_robin_paper(orders: np.ndarray, scores: np.ndarray, budget: int):
    """Paper round-robin. Returns (positions, scores, task indices) of the picked rows, in pick order."""
    T, n = orders.shape
    rounds = -(-budget // T)
    while True:
        seq = orders[:, :rounds].T.reshape(-1)  # round-major: round r, task t at r*T + t
        uniq, first = np.unique(seq, return_index=True)
        if len(uniq) >= budget or rounds >= n:
            break
        rounds = min(n, rounds * 2)
    first = np.sort(first)[:budget]
    cut = int(first[-1]) + 1  # turns played before the budget was met
    seq = seq[:cut]
    turn_task = np.arange(cut) % T
    popped = scores[seq, turn_task]
    lowest = np.full(scores.shape[0], np.inf, dtype=np.float32)
    np.minimum.at(lowest, seq, popped)
    picked = seq[first]
    return picked, lowest[picked], turn_task[first]


def round_robin_next_unique(orders: np.ndarray, scores: np.ndarray, budget: int):
    """Each turn takes the task's best row not yet taken."""
    T, n = orders.shape
    taken = np.zeros(n, dtype=bool)
    ptr = [0] * T
    picked, picked_task = [], []
    while len(picked) < budget:
        for t in range(T):
            order, p = orders[t], ptr[t]
            while p < n and taken[order[p]]:
                p += 1
            ptr[t] = p
            if p == n:
                continue
            r = int(order[p])
            taken[r] = True
            picked.append(r)
            picked_task.append(t)
            if len(picked) == budget:
                break
    picked = np.array(picked, dtype=np.int64)
    picked_task = np.array(picked_task, dtype=np.int64)
    return picked, scores[picked, picked_task], picked_task


@register
class RDSPlus(Selector):
    """Cosine similarity of RDS+ embeddings to target-task queries, round-robin over tasks.

    Parameters
    ----------
    aggregate : "max" (paper) or "mean" over a task's queries.
    round_robin : "paper" or "next-unique" (see module docstring).
    block_rows : pool rows scored per matrix multiply (0: sized to ~16 MiB).
    """

    name = "rds+"
    rule = ("cosine of RDS+ embeddings to each task's queries, max (or mean) over the task's queries; tasks take "
            "rows round-robin.")
    source = "Ivison et al. 2025 (RDS+); hamishivi/automated-instruction-selection get_top_influences.py"
    needs_queries = True

    def __init__(self, *, aggregate: Literal["max", "mean"] = "max", round_robin: Literal["paper", "next-unique"] = "paper", block_rows: int = 0):
        check_choice("aggregate", aggregate, AGGREGATES)
        check_choice("round_robin", round_robin, ROUND_ROBIN)
        self.aggregate = aggregate
        self.round_robin = round_robin
        self.block_rows = int(block_rows)

    def score(self, pool, queries, resources=None):
        """Return (rows (N,), scores (N, T) float32, task names)."""
        Q, starts, names = query_matrix(pool, queries)
        device = resources.torch_device() if resources is not None else None
        if resources is not None:
            resources.memory.require(pool.n_rows * (8 + 8 * len(starts)), f"rds+ scores of {pool.n_rows:,} rows "
                                     f"for {len(starts)} tasks")
        rows, scores = score_tasks(pool, Q, starts, self.aggregate, self.block_rows, device=device,
                                   progress=bool(resources and resources.progress))
        return rows, scores, names

    def select_from_scores(self, rows, scores, names, budget) -> Selection:
        orders = task_orders(scores)
        rr = round_robin_paper if self.round_robin == "paper" else round_robin_next_unique
        pos, sc, task = rr(orders, scores, budget)
        return Selection(rows=rows[pos], scores=sc, tasks=np.array(names, dtype=object)[task])

    def select(self, pool, budget, rng, queries=(), resources=None):
        rows, scores, names = self.score(pool, queries, resources)
        return self.select_from_scores(rows, scores, names, budget)
