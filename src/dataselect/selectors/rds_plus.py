"""``rds+``: representation-based data selection (Ivison et al. 2025).

Each pool row's score for a query is the cosine similarity (a dot product of L2-normalised RDS+
embeddings). By default (``--scoring float32``) it is a float32 product computed so that it depends
only on the row and the query (:mod:`dataselect.pool_index.tiles`); ``exact`` computes it exactly
(:mod:`dataselect.pool_index.similarity`) and ``screened`` gets the exact scores at float32 speed where
they matter. Either way identical rows tie and ties go to the lower pool row number, as the paper's
stable sorts do.

``paper`` (default; as the paper's code, hamishivi/automated-instruction-selection):

* one task, ``--aggregate max`` (``get_top_influences.py --selection_method max``): per-query
  round-robin. Queries take turns in order; each pops its own best row it has not popped yet. A row
  another query already took is not added again and that turn is spent. A row's score is the
  popping query's similarity.
* several tasks (``get_top_aggregated_influences.py``): a task's score for a row is the max (or
  mean) over the task's queries; tasks take turns in order of first appearance in the query stores,
  each popping its next-ranked row; a row already taken spends the turn and keeps the lowest score
  any task popped it with. Stops as soon as the budget is met, mid-round if need be.

``next-unique``: every turn takes a new row; a task whose next row is already taken moves on to its
first row not yet taken; the row's score is the taking task's. With one task this is the top
``budget`` rows by the task's max (or mean) score -- dataselect's rule before it followed the
paper's per-query round-robin.

With one task and ``--aggregate mean`` both are the top rows by mean score: the *highest* mean
cosine, as the paper's ``get_top_influences.py --selection_method mean_max``. The script's
``mean_min`` sorts ascending because it also serves influence scores, where lower means more
helpful; for RDS+ cosine similarities higher means more similar, so ``mean`` here is ``mean_max``.
"""

from __future__ import annotations

import numpy as np

from dataselect.engines.executor import LocalExecutor
from dataselect.errors import DataselectError
from dataselect.pool_index.screen import SCORINGS
from dataselect.pool_index.similarity import (
    AGGREGATES,
    RescoreTask,
    ScoreTask,
    TaskScores,
    TopRowsTask,
    score_block,
    score_tasks,
)
from dataselect.pool_index.tiles import float32_kernel, float32_reproducible
from dataselect.progress import note
from dataselect.selection import Selection
from dataselect.selectors.base import Selector, register
from dataselect.selectors.params import Param
from dataselect.store.queries import query_matrix, query_texts

ROUND_ROBIN = ("paper", "next-unique")
PROBE_SHARE = 0.05  # of the shards, scored first to place each task's cut-off
SCREEN_SHARE = 0.5  # above this share of products recomputed exactly, the rest is scored exactly
SHARDS_PER_CALL = 16  # shards scored per executor call (at 50,000-row shards, 800,000 rows of results)


def probe_shards(pool) -> list[int]:
    """About 5% of the shards (at least one), evenly spread, so a pool sorted by source is sampled whole."""
    n = len(pool.shards)
    if n == 0:
        return []
    return sorted(set(np.linspace(0, n - 1, max(1, round(PROBE_SHARE * n))).round().astype(int).tolist()))


def task_orders(scores: np.ndarray, top: int | None = None) -> np.ndarray:
    """(N, T) scores -> (T, L) positions by descending score, ties by ascending position.

    ``top``: only each task's first ``L >= top`` positions (a partition, then a sort of those), which
    are the first ``L`` of the full order; by default every row (``L = N``)."""
    n = scores.shape[0]
    dtype = np.int32 if n < 2**31 else np.int64
    if top is None or top >= n:
        return np.stack([np.argsort(-scores[:, t], kind="stable").astype(dtype) for t in range(scores.shape[1])])
    heads = []
    for t in range(scores.shape[1]):
        s = scores[:, t]
        kth = np.partition(s, n - top)[n - top]  # the top-th largest score: every row at or above it
        head = np.flatnonzero(s >= kth)
        heads.append(head[np.lexsort((head, -s[head]))].astype(dtype))
    length = min(len(h) for h in heads)
    return np.stack([h[:length] for h in heads])


def ranked_round_robin(rule, scores: np.ndarray, budget: int):
    """``rule`` (a round-robin below) on the task orders of ``scores``, sorting only as deep as it goes:
    returns (orders, positions, scores, task indices, depth)."""
    n, T = scores.shape
    top = 2 * -(-budget // max(T, 1)) + 64
    while True:
        orders = task_orders(scores, top)
        pos, sc, task, depth = rule(orders, scores, budget)
        if orders.shape[1] == n or (len(pos) == budget and depth.max() < orders.shape[1]):
            return orders, pos, sc, task, depth
        top *= 4


def round_robin_paper(orders: np.ndarray, scores: np.ndarray, budget: int):
    """Paper round-robin. Returns (positions, scores, task indices) of the picked rows, in pick order,
    and how deep each task went in its order (T,): the turns it played."""
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
    return picked, lowest[picked], turn_task[first], np.bincount(turn_task, minlength=T)


def round_robin_per_query(rows: np.ndarray, scores: np.ndarray, budget: int):
    """The paper's single-task rule (get_top_influences.py, ``max``): queries take turns in order, each
    popping its best row not yet popped *by it*; a row another query already took is not added again
    and that turn is spent. ``rows``/``scores``: (q, m) candidates per query, best first.

    Returns (picked rows, their scores from the popping query, query indices) in pick order, or None
    when ``m`` candidates per query were too few to reach ``budget`` (score more candidates).
    """
    nq, m = rows.shape
    seq = rows.T.reshape(-1)  # round-major: round r, query j at r * nq + j
    _, first = np.unique(seq, return_index=True)
    if len(first) < budget:
        return None
    first = np.sort(first)[:budget]
    return seq[first], scores.T.reshape(-1)[first], first % nq


def round_robin_next_unique(orders: np.ndarray, scores: np.ndarray, budget: int):
    """Each turn takes the task's best row not yet taken. Returns what :func:`round_robin_paper` does."""
    T, n = orders.shape
    taken = np.zeros(scores.shape[0], dtype=bool)
    ptr = [0] * T
    depth = np.zeros(T, dtype=np.int64)
    picked, picked_task = [], []
    while len(picked) < budget and min(ptr) < n:
        for t in range(T):
            order, p = orders[t], ptr[t]
            while p < n and taken[order[p]]:
                p += 1
            ptr[t] = p
            depth[t] = min(n, p + 1)
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
    return picked, scores[picked, picked_task], picked_task, depth


def task_cuts(orders: np.ndarray, scores: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """(T,) float64: the score of the deepest row each task's round-robin looked at (+inf: none)."""
    cuts = np.full(len(depth), np.inf)
    for t, d in enumerate(depth):
        if d:
            cuts[t] = scores[orders[t, d - 1], t]
    return cuts


@register
class RDSPlus(Selector):
    """Cosine similarity of RDS+ embeddings to target-task queries, round-robin over tasks."""

    name = "rds+"
    rule = ("cosine of RDS+ embeddings to each task's queries, max (or mean) over the task's queries; tasks take "
            "rows round-robin.")
    source = "Ivison et al. 2025 (RDS+); hamishivi/automated-instruction-selection get_top_influences.py"
    needs_queries = True

    params = (
        Param("aggregate", "max", '"max" (paper) or "mean" over a task\'s queries.', choices=AGGREGATES),
        Param("round_robin", "paper", '"paper": the paper\'s code -- one task: per-query round-robin, a row taken '
              'already spends the turn; several tasks: round-robin over tasks by their max score. "next-unique": '
              'every turn takes a new row (one task: the top rows by max score).', choices=ROUND_ROBIN),
        Param("scoring", "float32", '"float32": float32 products in fixed tiles, each score a function of its '
              'row alone (identical rows tie; the same selection at any thread count or block size), checked '
              'on the machine first (else "screened"). "screened": float32 products, and every score that could '
              'reach the selection recomputed exactly -- the same selection and scores as "exact" (float64 '
              'products). On a GPU: "exact".', choices=SCORINGS),
        Param("block_rows", 0, "pool rows scored per matrix multiply.", low=0, auto="sized to ~16 MiB"),
    )

    def select_tasks(self, pool, budget: int, matrix, resources=None) -> Selection:
        """Round-robin over tasks (several tasks, or ``mean``, or ``next-unique``) from the task scores of
        every pool row. With ``scoring="screened"`` they come from a float32 pass
        (:mod:`dataselect.pool_index.screen`): a few shards spread over the pool first, which place each
        task's likely cut-off; then the rest, computing exactly in the same pass every score above it.
        Whatever screened score could still reach the selection given its bound is then recomputed
        exactly (:meth:`settle`), so the selection is the exact pass's, score for score."""
        Q, starts, names = matrix
        T = len(starts)
        device = resources.torch_device() if resources is not None else None
        executor = resources.executor if resources is not None else LocalExecutor()
        if resources is not None:
            resources.memory.require(pool.n_rows * (24 + 13 * T), f"rds+ scores of {pool.n_rows:,} rows for {T} tasks")
        scoring = self.scoring_on(device, pool.dim, len(Q))
        screened = scoring == "screened"

        def task(**kw):
            return ScoreTask(Q, starts, self.aggregate, self.block_rows, str(device) if device is not None else None,
                             bool(resources and resources.progress), **kw)

        info = {"scoring": scoring, **self.kernel_info(scoring)}
        got = TaskScores.empty(pool.n_rows, T)  # filled shard by shard: no part is ever copied twice
        offsets = np.cumsum([0] + [s.rows_stored for s in pool.shards])

        def score(shards: list[int], scoring_task) -> None:
            for lo in range(0, len(shards), SHARDS_PER_CALL):  # a call's result is at most a share of the pool
                group = shards[lo:lo + SHARDS_PER_CALL]
                part = executor.map_shards(scoring_task, pool, group)
                for k, start in zip(group, np.cumsum([0] + [pool.shards[k].rows_stored for k in group]), strict=False):
                    got.fill(int(offsets[k]), TaskScores(*(a[start:start + pool.shards[k].rows_stored] for a in part)))

        every = list(range(len(pool.shards)))
        if not screened:
            score(every, task(scoring=scoring))
        else:
            probe = probe_shards(pool)
            score(probe, task(scoring="screened"))
            at = np.concatenate([np.arange(offsets[k], offsets[k + 1]) for k in probe]) if probe else np.zeros(0, int)
            first = TaskScores(got.rows[at], got.scores[at], got.final[at], got.bound[at])
            floors, share = self.screen_floors(first, budget * len(at) / max(pool.n_rows, 1), Q, starts)
            del first, at
            info.update(probe_shards=len(probe), screen_share=round(share, 4))
            # a screen that would recompute most scores anyway is slower than computing them
            score(sorted(set(every) - set(probe)),
                  task(scoring="screened", floors=floors) if share <= SCREEN_SHARE else task())
            info["exact_in_pass"] = int(got.final.sum())
        sel, settle = self.settle(pool, got, Q, starts, names, budget, executor)
        info.update(settle)
        sel.info = info
        return sel

    def screen_floors(self, first: TaskScores, budget: float, Q, starts) -> tuple[np.ndarray, float]:
        """Each task's lowest screened score worth computing exactly in the pass, placed by the round-robin
        on the probe shards with the budget scaled to them (and deeper, for the sample's noise); and the
        share of (row, query) products that puts in the exact pass."""
        n, T = first.scores.shape
        floors = np.full(T, -np.inf)
        if n == 0:
            return floors, 1.0
        orders, *_, depth = ranked_round_robin(self.round_robin_fn, first.scores, int(min(n, max(1, np.ceil(budget)))))
        slack = 2 * float(first.bound.max())
        sizes = np.diff(np.append(starts, len(Q)))
        share = 0.0
        for t, d in enumerate(depth):
            deeper = int(min(n, np.ceil(1.1 * d + 4 * np.sqrt(d) + 8)))  # the probe's noise, and some
            if deeper < n:
                floors[t] = float(first.scores[orders[t, deeper - 1], t]) - slack
            share += sizes[t] / len(Q) * float(np.mean(first.scores[:, t] + first.bound >= floors[t]))
        return floors, share

    def scoring_on(self, device, dim: int, n_queries: int) -> str:
        """The scoring that runs on ``device``: a GPU multiplies exactly in float64 at its own speed;
        ``float32`` only where this machine's BLAS makes it reproducible at this shape (else screened)."""
        if device is not None and device.type == "cuda":
            return "exact"
        if self.scoring == "float32" and not float32_reproducible(dim, n_queries):
            note(f"rds+: float32 products are not reproducible on this machine at {dim} x {n_queries} (a row's "
                 "score would depend on where it sits in a block); scoring screened instead")
            return "screened"
        return self.scoring

    @staticmethod
    def kernel_info(scoring: str) -> dict:
        """What multiplied in float32 (selection.json), where the float32 products are the scores."""
        return {"float32_kernel": float32_kernel()[0]} if scoring == "float32" else {}

    @property
    def round_robin_fn(self):
        return round_robin_paper if self.round_robin == "paper" else round_robin_next_unique

    def settle(self, pool, got: TaskScores, Q, starts, names, budget: int, executor) -> tuple[Selection, dict]:
        """The round-robin on ``got``, recomputing exactly every screened score that could reach it, until
        none can: then every non-exact score s of task t has s + bound < the deepest score t looked at,
        and so does its exact value, so the exact pass would look at the same rows, all exact here."""
        scores, exact, rows = got.scores, got.final, got.rows  # final: exact, or not screened
        passes = recomputed = 0
        while True:
            orders, pos, sc, task, depth = ranked_round_robin(self.round_robin_fn, scores, budget)
            cuts = task_cuts(orders, scores, depth)
            need = np.zeros_like(exact)
            for t in range(len(cuts)):
                need[:, t] = ~exact[:, t] & (scores[:, t] + got.bound >= cuts[t])
            todo = np.flatnonzero(need.any(axis=1))
            if not len(todo):
                break
            shards = np.unique(pool.shard_of(rows[todo])).tolist()
            idx, t, value = executor.map_shards(RescoreTask(Q, starts, self.aggregate, rows[todo], need[todo]),
                                                pool, shards)
            if len(idx) != int(need.sum()):
                raise DataselectError(f"{pool.path}: rescoring found {len(idx):,} of {int(need.sum()):,} scores; the "
                                      "store changed while it was read")
            scores[todo[idx], t] = value
            exact[todo[idx], t] = True
            passes, recomputed = passes + 1, recomputed + len(idx)
        sel = Selection(rows=rows[pos], scores=sc, tasks=np.array(names, dtype=object)[task])
        return sel, {"recomputed_after": recomputed, "recompute_passes": passes}

    def per_query(self, n_tasks: int) -> bool:
        """Whether the paper's per-query round-robin applies (one task, max, paper)."""
        return n_tasks == 1 and self.aggregate == "max" and self.round_robin == "paper"

    def select_per_query(self, candidates, n_rows: int, n_queries: int, budget: int, name: str,
                         resources=None) -> Selection:
        """Per-query round-robin from ``candidates(m)`` -> each query's m best (rows, scores).

        Starts with twice the rows each query pops when no two queries share a row; a pass that runs
        short (queries that share many rows) is repeated with 4x as many candidates.
        """
        m = min(n_rows, 2 * -(-budget // n_queries) + 16)
        passes = 0
        while True:
            if resources is not None:
                resources.memory.require(3 * n_queries * m * 16, f"rds+ per-query candidates ({n_queries} queries x "
                                         f"{m:,} rows)")
            rows, scores = candidates(m)
            passes += 1
            picked = round_robin_per_query(rows, scores, budget)
            if picked is not None or m >= n_rows:
                break
            m = min(n_rows, 4 * m)
        r, sc, q = picked
        info = {"rule": "per-query round-robin (one task, max)", "candidates_per_query": int(m), "passes": passes}
        return Selection(rows=r, scores=sc, tasks=np.full(len(r), name, dtype=object), info=info,
                         extra={"query": q.astype(np.int64)})

    def pool_scores(self, pool, positions, queries=()):
        """The max (or mean) query similarity of sampled pool rows: the scale of the selected rows' scores."""
        if not queries:
            return None
        Q, starts, _ = query_matrix(pool, queries)
        emb = pool.take(pool.rows()[positions])["embedding"]
        return score_block(emb, Q, starts, self.aggregate).max(axis=1)

    def explain(self, pool, row, embedding, queries, table, meta, n_queries=3):
        """The row's score per task, its rank in each task's ordering (0 = best; ties by row), each task's
        cut-off (the lowest score among the rows that task took), and its nearest queries."""
        if not queries:
            return {}, []
        Q, starts, names = query_matrix(pool, queries)
        mine = score_block(embedding, Q, starts, self.aggregate)[0]
        rows, scores = score_tasks(pool, Q, starts, self.aggregate)
        tasks = np.asarray(table.column("task").to_pylist(), dtype=object)
        picked = table.column("score").to_numpy()
        facts, lines = {"tasks": {}}, []
        for t, name in enumerate(names):
            s = scores[:, t]
            rank = int((s > mine[t]).sum() + ((s == mine[t]) & (rows < row)).sum())
            taken = picked[tasks == name]
            cutoff = float(taken.min()) if len(taken) else None
            facts["tasks"][name] = {"score": float(mine[t]), "rank": rank, "cutoff": cutoff}
            lines.append(f"  task {name}: score {mine[t]:.4f}, rank {rank:,} of {len(rows):,}, cut-off "
                         + (f"{cutoff:.4f}" if cutoff is not None else "-"))
        texts, qtask = query_texts(queries, names)
        sims = (embedding @ Q.T)[0]
        best = np.argsort(-sims, kind="stable")[:n_queries]
        facts["nearest_queries"] = [{"task": str(qtask[j]), "sim": float(sims[j]), "text": str(texts[j])} for j in best]
        lines.append("  nearest queries:")
        # one line per query: a multi-line query shows as one line, its line breaks as spaces
        lines += [f"    {q['sim']:.4f}  [{q['task']}] {' '.join(q['text'].split())[:100]}"
                  for q in facts["nearest_queries"]]
        return facts, lines

    def select(self, pool, budget, rng, queries=(), resources=None):
        matrix = Q, starts, names = query_matrix(pool, queries)
        if self.per_query(len(names)):
            device = resources.torch_device() if resources is not None else None
            progress = bool(resources and resources.progress)

            executor = resources.executor if resources is not None else LocalExecutor()
            scoring = self.scoring_on(device, pool.dim, len(Q))

            def candidates(m):
                return executor.map_shards(TopRowsTask(Q, m, self.block_rows, str(device) if device is not None
                                                       else None, progress, scoring), pool)
            sel = self.select_per_query(candidates, pool.n_rows, len(Q), budget, names[0], resources)
            sel.info.update(scoring=scoring, **self.kernel_info(scoring))
            return sel
        return self.select_tasks(pool, budget, matrix, resources)
