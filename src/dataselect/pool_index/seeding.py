"""Greedy k-means++ seeding, split into parts that workers keep across the k rounds.

Each round draws ``T`` candidates by D^2 and keeps the one that lowers the potential most
(:func:`kmeans_plusplus`). Its state -- each row's squared distance ``D`` to its nearest chosen centre,
and which centre that is -- lives in :class:`SeedingPart` objects, one per part of the rows; the
driver keeps only what is per block of :data:`SUM_BLOCK` rows (the sums of ``D``) and draws. A round
is two calls: the owners of the drawn blocks find the candidate rows in them (``locate``), then every
part adopts the last round's winner and returns, per block, how much each new candidate would lower
its rows' ``D`` (``evaluate``). On one process there is one part; on a distributed executor
(:meth:`dataselect.engines.executor.Executor.hold`) one per worker, kept for every round and rebuilt
by replaying its calls if its worker dies.

Everything a part computes is counted from the first row of its groups (a store shard's training
rows each: ``groups``) -- distance blocks of :data:`STEP_ROWS`, sum blocks of :data:`SUM_BLOCK`, the
choice between all rows and the rows a candidate can move -- and block sums are float64 added in row
order (``bincount``). So the seeds do not depend on how the groups are split into parts: local and Ray
give the same centres.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from dataselect.progress import bar

STEP_ROWS = 16384  # rows per distance block on the CPU, here and in Lloyd
SUM_BLOCK = 4096  # rows per partial sum of the potential
REFRESH = 1024  # rounds between recomputing the block sums from D (no drift from the updates)


def default_trials(k: int) -> int:
    return 2 + int(np.log(k)) if k > 1 else 1


def _blocks(n: int) -> int:
    return -(-n // SUM_BLOCK)


def row_chunks(n: int, rows: int):
    """(lo, hi) ranges of ``rows`` rows (the last shorter) over ``n`` rows."""
    for lo in range(0, n, rows):
        yield lo, min(n, lo + rows)


def _as_tensor(x) -> torch.Tensor:
    if torch.is_tensor(x):
        return x
    with warnings.catch_warnings():  # a read-only shared array (Ray's object store): only ever read
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(x)


def _block_sums(values: np.ndarray, blocks: np.ndarray, nb: int) -> np.ndarray:
    """(nb, T) float64 sums of the rows of ``values`` (m, T) float32 per block of :data:`SUM_BLOCK` rows,
    ``blocks`` (m,) giving each row's block, ascending. numpy's ``add.reduceat`` (one thread, a fixed
    order): the same sums on any worker."""
    out = np.zeros((nb, values.shape[1]))
    if not len(blocks):
        return out
    starts = np.searchsorted(blocks, np.arange(nb))
    ends = np.append(starts[1:], len(blocks))
    full = ends > starts
    out[full] = np.add.reduceat(values, starts[full], axis=0, dtype=np.float64)
    return out


class SeedingPart:
    """The k-means++ state of some groups of rows of ``x`` (``groups``: (lo, hi) ranges, in order): their
    distances ``D`` to the nearest chosen centre, which centre that is, the chosen centres themselves,
    and the last evaluation's distances until the driver says which candidate won.

    Blocks (of :data:`SUM_BLOCK` rows) are numbered over this part's groups, each group starting a new
    block, from ``block0`` (the blocks of the parts before it): the driver's numbering.
    """

    def __init__(self, x, groups: list[tuple[int, int]], device: str = "cpu", block0: int = 0):
        self.x = _as_tensor(x)
        self.groups = [(int(lo), int(hi)) for lo, hi in groups]
        self.dev = torch.device(device)
        self.step = STEP_ROWS if self.dev.type == "cpu" else 1 << 18
        self.rows = [self.x[lo:hi].to(self.dev) for lo, hi in self.groups]
        self.xx = [self._norms(r) for r in self.rows]
        self.block_ids = [torch.arange(len(r)) // SUM_BLOCK for r in self.rows]
        self.first_block = block0 + np.concatenate([[0], np.cumsum([_blocks(len(r)) for r in self.rows])]).astype(np.int64)
        self.D = self.near = None
        self.cent: torch.Tensor | None = None
        self.cc: torch.Tensor | None = None
        self.t = 0
        self._last = None  # (candidate rows (T, d), their norms, per group (rows or None, dist))

    def _norms(self, r: torch.Tensor) -> torch.Tensor:
        out = torch.empty(len(r), dtype=torch.float32, device=self.dev)
        for lo, hi in row_chunks(len(r), self.step):
            out[lo:hi] = torch.linalg.vector_norm(r[lo:hi], dim=1, dtype=torch.float32).square_()
        return out

    def _dist(self, g: int, c: torch.Tensor, c2: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
        """Squared distances (m, len(c)) of group ``g``'s rows (``rows``: those only) to ``c``."""
        r, xx = self.rows[g], self.xx[g]
        m = len(r) if rows is None else len(rows)
        out = torch.empty((m, len(c)), dtype=torch.float32, device=self.dev)
        for lo, hi in row_chunks(m, self.step):
            xb = (r[lo:hi] if rows is None else r[rows[lo:hi]]).float()
            xxb = xx[lo:hi] if rows is None else xx[rows[lo:hi]]
            out[lo:hi] = (xxb[:, None] - 2 * (xb @ c.T) + c2[None, :]).clamp_min_(0)
        return out

    def _centre(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.x[int(i)].to(self.dev).float()[None, :]
        return c, (c * c).sum(1)

    def _catch_up(self, adopt: tuple[int, int] | None) -> None:
        """``adopt`` = (t, j): candidate ``j`` of the last evaluation became centre number ``t`` (the
        driver's choice), adopted here now unless it already was."""
        if adopt is not None and self.t == adopt[0]:
            self.adopt(adopt[1])

    def sums(self, adopt: tuple[int, int] | None = None) -> np.ndarray:
        """(blocks,) float64: the sum of ``D`` over each block, added in row order (``adopt`` first)."""
        self._catch_up(adopt)
        return np.concatenate([_block_sums(d.cpu().numpy()[:, None], ids.numpy(), _blocks(len(d)))[:, 0]
                               for ids, d in zip(self.block_ids, self.D, strict=True)]) if self.D else np.zeros(0)

    def start(self, first: int) -> np.ndarray:
        """The first centre is row ``first`` of ``x``: every ``D`` is the distance to it. Returns :meth:`sums`."""
        c, c2 = self._centre(first)
        self.cent, self.cc = c, c2
        self.D = [self._dist(g, c, c2, None)[:, 0] for g in range(len(self.rows))]
        self.near = [torch.zeros(len(r), dtype=torch.int32, device=self.dev) for r in self.rows]
        self.t, self._last = 1, None
        return self.sums()

    def locate(self, draws: list[tuple[int, float]], adopt: tuple[int, int] | None = None) -> dict[int, int]:
        """{draw: row of ``x``} for the (block, rest) ``draws`` in this part's blocks (others are another
        part's): the row at which the running sum of that block's ``D`` (float64) first reaches ``rest``
        (``adopt`` first)."""
        self._catch_up(adopt)
        out = {}
        for j, (b, rest) in enumerate(draws):
            g = int(np.searchsorted(self.first_block, b, side="right")) - 1
            if not 0 <= g < len(self.rows) or b >= self.first_block[g + 1]:
                continue
            lo = (b - int(self.first_block[g])) * SUM_BLOCK
            within = torch.cumsum(self.D[g][lo:lo + SUM_BLOCK].double(), 0)
            at = int(torch.searchsorted(within, torch.tensor([rest], dtype=torch.float64, device=within.device))
                     .clamp_(max=len(within) - 1))
            out[j] = self.groups[g][0] + lo + at
        return out

    def evaluate(self, candidates: np.ndarray, adopt: tuple[int, int] | None = None) -> np.ndarray:
        """(``adopt`` first, see :meth:`_catch_up`.) For the new ``candidates`` (rows of ``x``), how much
        each would lower ``D``: (T, blocks)
        float64, each block's float32 gains added in row order. Rows no candidate can come nearer to --
        ``|cand - c(x)|^2 >= 4 D(x)`` for every candidate, c(x) the row's centre -- add nothing and are
        skipped (where they are most of a group)."""
        self._catch_up(adopt)
        cx = self.x[torch.as_tensor(np.asarray(candidates, dtype=np.int64))].to(self.dev).float()
        c2 = (cx * cx).sum(1)
        dcc = (c2[:, None] - 2 * (cx @ self.cent.T) + self.cc[None, :]).clamp_min_(0)  # (T, t)
        reach = dcc.min(0).values
        kept, gains = [], []
        for g in range(len(self.rows)):
            D = self.D[g]
            movable = reach[self.near[g]] < 4 * D
            rows = None if bool(movable.float().mean() > 0.5) else torch.nonzero(movable).flatten()
            dist = self._dist(g, cx, c2, rows)
            cur = D if rows is None else D[rows]
            gain = (cur[:, None] - torch.minimum(dist, cur[:, None])).cpu().numpy()  # (m, T)
            ids = self.block_ids[g] if rows is None else self.block_ids[g][rows.cpu()]
            gains.append(_block_sums(gain, ids.numpy(), _blocks(len(D))).T)
            kept.append((rows, dist))
        self._last = (cx, c2, kept)
        return np.concatenate(gains, axis=1) if gains else np.zeros((len(cx), 0))

    def adopt(self, j: int) -> None:
        """Candidate ``j`` of the last :meth:`evaluate` becomes centre number ``t``: the rows it is nearer to
        take it as their nearest."""
        cx, c2, kept = self._last
        for g, (rows, dist) in enumerate(kept):
            cur = self.D[g] if rows is None else self.D[g][rows]
            better = torch.nonzero(dist[:, j] < cur).flatten()
            moved = better if rows is None else rows[better]
            self.D[g][moved] = dist[better, j]
            self.near[g][moved] = self.t
        self.cent = torch.cat([self.cent, cx[j:j + 1]])
        self.cc = torch.cat([self.cc, c2[j:j + 1]])
        self.t += 1
        self._last = None


@dataclass(frozen=True)
class SeedingParts:
    """What builds the :class:`SeedingPart` of each part on its worker (``x``: the shared rows)."""

    groups: tuple  # per part: its (lo, hi) groups
    device: str = "cpu"

    def blocks(self, part: int) -> int:
        return sum(_blocks(hi - lo) for lo, hi in self.groups[part])

    def build(self, part: int, x) -> SeedingPart:
        return SeedingPart(x, list(self.groups[part]), self.device, sum(self.blocks(p) for p in range(part)))


def split_groups(groups: list[tuple[int, int]], parts: int) -> list[list[tuple[int, int]]]:
    """``groups`` in at most ``parts`` contiguous runs of about equal rows (none empty)."""
    parts = max(1, min(parts, len(groups)))
    sizes = np.array([hi - lo for lo, hi in groups], dtype=np.float64)
    ends = np.cumsum(sizes)  # a cut after group j leaves ends[j] rows before it: the one nearest each share
    cuts = np.abs(ends[None, :] - (np.arange(1, parts) * sizes.sum() / parts)[:, None]).argmin(1) + 1
    bounds = sorted(set([0, *cuts.clip(1, len(groups) - 1).tolist(), len(groups)]))
    return [groups[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


def kmeans_plusplus(x: torch.Tensor, k: int, rng: np.random.Generator, n_local_trials: int | None = None,
                    progress: bool = False, groups: list[tuple[int, int]] | None = None,
                    executor=None) -> np.ndarray:
    """Greedy k-means++ seeding: indices (k,) into ``x`` (n, d) of the chosen centres, in order.

    The first centre is ``rng.integers(n)``. Then, for each next centre, ``u = rng.random(T) * pot``
    picks T candidates (T = ``n_local_trials``, default ``2 + int(ln k)``) by inverse CDF of the
    squared distances D (a block of :data:`SUM_BLOCK` rows by the block sums, then the row inside it);
    the candidate whose adoption gives the smallest potential ``sum(min(D, d(cand)^2))`` wins (first on
    ties). Distances are squared L2 from float32 products; sums are float64.

    ``groups``: (lo, hi) row ranges of ``x`` that each count their blocks from their first row (a store
    shard's training rows each; default one group). ``executor``: where the parts run (module
    docstring; default this process, one part) -- the same seeds either way.
    """
    from dataselect.engines.executor import LocalExecutor, Needs

    n = len(x)
    k = int(min(k, n))
    T = int(n_local_trials or default_trials(k))
    groups = [(0, n)] if groups is None else [(int(a), int(b)) for a, b in groups if b > a]
    executor = executor or LocalExecutor()
    parts = executor.parts(Needs.on(str(x.device)))
    layout = SeedingParts(tuple(tuple(p) for p in split_groups(groups, parts)), str(x.device))
    owner = np.repeat(np.arange(len(layout.groups)), [layout.blocks(p) for p in range(len(layout.groups))])
    chosen = np.empty(k, dtype=np.int64)
    chosen[0] = int(rng.integers(n))
    with executor.hold(layout, x, len(layout.groups)) as parts, \
            bar(k, "k-means++", unit="centre", enabled=progress) as pbar:
        sums = np.concatenate(parts.call("start", int(chosen[0])))
        pbar.update(1)
        won = None  # (t, j): candidate j of round t won; each part adopts it on its next call
        for t in range(1, k):
            if t % REFRESH == 0:
                sums = np.concatenate(parts.call("sums", won))
            pot = float(sums.sum())
            if pot <= 0:  # every row sits on a centre already: draw uniformly
                cand = rng.integers(n, size=T)
            else:
                u = rng.random(T) * pot
                cum = np.cumsum(sums)
                b = np.minimum(np.searchsorted(cum, u), len(sums) - 1)
                rest = u - np.where(b > 0, cum[np.maximum(b - 1, 0)], 0.0)
                draws = [(int(bj), float(rj)) for bj, rj in zip(b, rest, strict=True)]
                cand = np.empty(T, dtype=np.int64)
                for found in parts.call("locate", draws, won, only=sorted(set(owner[b].tolist()))):
                    for j, row in found.items():
                        cand[j] = row
            gains = np.concatenate(parts.call("evaluate", cand, won), axis=1)  # (T, blocks)
            best = int(np.argmax(gains.sum(1)))
            won = (t, best)
            sums = sums - gains[best]
            chosen[t] = cand[best]
            pbar.update(1)
    return chosen
