"""SemDeDup (Abbas et al. 2023) on the store's embeddings, in one pass that serves every eps.

1. **Clusters**: spherical k-means with the k-means engine (:func:`~dataselect.pool_index.kmeans.cluster_store`,
   a ``clustering`` artefact; its assignment pass runs on the run's executor).
2. **Ranking** inside each cluster, by ``keep``: ``hard`` farthest from the centroid first (the paper's
   default), ``easy`` nearest first, ``random`` (seeded), ``first`` lowest pool row first.
3. **Similarity blocks** inside each cluster (rows in rank order, ``BLOCK`` x ``BLOCK`` float32 products
   with torch, on the run's device; batches of clusters are :class:`PairsTask` calls on the run's
   executor, so ``--engine ray`` spreads them over workers): for every row, its maximum similarity to an earlier-ranked row of its
   cluster (``prev_sim``, and which row), and every pair at or above ``1 - floor_eps``, reduced as it goes
   to a maximum spanning forest (SciPy's minimum spanning tree on ``2 - sim``). A forest keeps exactly
   the connectivity of every threshold above its floor, so the groups at any ``eps <= floor_eps`` are its
   connected components over edges ``> 1 - eps``: a later ``--eps`` or a whole ``--eps-sweep`` needs no
   new pass.

A pair is a duplicate at ``eps`` when its cosine is strictly above ``1 - eps`` (compared in float32, as the
reference code compares), and two rules decide what is removed:

* ``groups`` (default, as the paper describes): connected components of the pairs ``> 1 - eps``;
  exactly one row per component is kept, the best-ranked.
* ``reference`` (the reference code's and NeMo Curator's): a row is removed when its maximum similarity
  to an earlier-ranked row is ``> 1 - eps``, whether or not that row is kept (facebookresearch/SemDeDup,
  ``semdedup.py``: ``M > 1 - eps`` over the column maxima of the upper triangle, rows in rank order). A component can then keep
  several rows (a ~ b ~ c with a and c not similar, ranked a, c, b: a and c are kept), and a row can be
  removed for a row that was itself removed (ranked a, b, c: c goes because of b). ``groups`` keeps
  exactly one row of a component, a, in either order.

Clusters larger than ``max_cluster_rows`` (default: what ``--max-memory`` holds when the pass is built) are split into pieces
in rank order, as the reference code does above 10^7 rows; pairs across pieces are not compared, and
that is said in one line and recorded.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components, minimum_spanning_tree

from dataselect.duplicates.result import groups_from_roots
from dataselect.engines.executor import ShardTask
from dataselect.pool_index.sample import gather_rows
from dataselect.progress import bar, note
from dataselect.store.artefacts import Artefact, Artefacts

RULES = ("groups", "reference")
KEEPS = ("hard", "easy", "random", "first")  # the keys of RANKINGS
FLOOR_EPS = 0.1  # the pass keeps the pairs every eps up to this needs
BLOCK = 4096
_EDGE_LIMIT = 4_000_000  # pending pairs of one cluster before they are folded into its forest
PASS_FILE, FOREST_FILE = "rows.npz", "forest.npz"


@dataclass
class SemanticPass:
    """What one pass found (module docstring); arrays (n,) in store order except the forest's.

    rows : pool rows; label : cluster; rank : position in the global (cluster, keep-ranking) order;
    prev_sim : max similarity to an earlier-ranked row of the cluster (-inf for a cluster's first row);
    prev : store position of that row (-1); edge_a, edge_b, edge_sim : the maximum spanning forest of
    the pairs >= 1 - floor_eps (store positions, float32 similarity).
    """

    rows: np.ndarray
    label: np.ndarray
    rank: np.ndarray
    prev_sim: np.ndarray
    prev: np.ndarray
    edge_a: np.ndarray
    edge_b: np.ndarray
    edge_sim: np.ndarray
    floor_eps: float
    key: str = ""
    info: dict = field(default_factory=dict)

    def decide(self, eps: float, rule: str = "groups") -> tuple[np.ndarray, np.ndarray]:
        """(duplicate_of, group) at ``eps`` under ``rule`` (pool rows; -1 = kept)."""
        n = len(self.rows)
        if rule == "groups":
            on = self.edge_sim > 1 - eps  # float32 against float32(1 - eps), as torch compares in the reference
            graph = coo_matrix((np.ones(int(on.sum()), dtype=np.int8), (self.edge_a[on], self.edge_b[on])), shape=(n, n))
            comp = connected_components(graph, directed=False)[1]
            return groups_from_roots(self.rows, comp, self.rank)
        removed = self.prev_sim > 1 - eps
        root = np.where(removed, self.prev, np.arange(n))
        while True:  # follow each chain of removals to the kept row it starts from
            nxt = root[root]
            if np.array_equal(nxt, root):
                break
            root = nxt
        keeper = self.rows[root]
        return np.where(removed, keeper, -1), keeper

    def save(self, folder: Path) -> dict:
        np.savez(folder / PASS_FILE, row=self.rows, label=self.label, rank=self.rank, prev_sim=self.prev_sim,
                 prev=self.prev)
        np.savez(folder / FOREST_FILE, a=self.edge_a, b=self.edge_b, sim=self.edge_sim)
        return {"floor_eps": self.floor_eps, "rows": len(self.rows), "forest_edges": len(self.edge_a)}

    @classmethod
    def load(cls, artefact: Artefact, store) -> SemanticPass:
        t, f = _read(artefact.path / PASS_FILE), _read(artefact.path / FOREST_FILE)
        rows = t["row"].astype(np.int64)
        if len(rows) != store.n_rows:
            from dataselect.errors import DataselectError

            raise DataselectError(f"{artefact.path}: holds {len(rows):,} rows, the store {store.n_rows:,}; "
                                  f"delete it and run `dataselect dedup` again")
        return cls(rows, t["label"], t["rank"], t["prev_sim"], t["prev"], f["a"], f["b"], f["sim"],
                   float(artefact.info["floor_eps"]), artefact.key, artefact.info)


def _read(path: Path) -> dict:
    try:
        with np.load(path) as z:
            return {c: z[c] for c in z.files}
    except (OSError, ValueError) as exc:
        from dataselect.errors import DataselectError

        raise DataselectError(f"{path}: unreadable dedup pass ({exc}); delete {path.parent} and run again") from None


RANKINGS = {  # sort key inside a cluster from (squared distance to the centroid, seed): lower is kept
    "hard": lambda d2, seed: -d2,
    "easy": lambda d2, seed: d2,
    "random": lambda d2, seed: np.random.default_rng(seed).random(len(d2)),
    "first": lambda d2, seed: np.arange(len(d2), dtype=np.float64),
}


def ranking_key(keep: str, dist2: np.ndarray, seed: int) -> np.ndarray:
    """Sort key inside a cluster: lower is ranked earlier (and kept)."""
    return RANKINGS[keep](np.asarray(dist2, dtype=np.float64), seed)


def semantic_pass(store, *, k: int, keep: str, seed: int = 0, niter: int = 20, floor_eps: float = FLOOR_EPS,
                  max_cluster_rows: int = 0, resources=None) -> SemanticPass:
    """The pass over ``store`` (module docstring), kept as a ``semdedup`` artefact and reused."""
    from dataselect.resources import Resources

    resources = resources or Resources.make(progress=False)
    device = resources.torch_device()
    # the gathered rows (float16) and one block's float32 copies and products stay within the budget
    fits = max(BLOCK, int((resources.memory.free() - 6 * BLOCK * BLOCK * 4) * 0.5 // (store.dim * 2 + 64)))
    # the key holds what was asked for (0: as memory allows), never the free memory of the moment, so a
    # later --eps in another process finds this pass; the rows a batch held are recorded in its info
    params = {"k": k, "keep": keep, "seed": seed, "niter": niter, "floor_eps": floor_eps,
              "max_cluster_rows": max_cluster_rows}

    def build(folder: Path):
        p = _run_pass(store, params, min(max_cluster_rows or fits, fits), device, resources, folder)
        return p, p.save(folder) | p.info

    result, art = Artefacts(store).get_or_build("semdedup", params, build, lambda a: SemanticPass.load(a, store))
    result.key = art.key
    return result


def _run_pass(store, params: dict, cap: int, device, resources, folder: Path) -> SemanticPass:
    """The pass, with clusters split at ``cap`` rows and batches of at most ``cap`` rows (fewer under Ray);
    scratch files go in ``folder``."""
    from dataselect.pool_index.kmeans import cluster_store

    t0 = time.perf_counter()
    n = store.n_rows
    cl = cluster_store(store, min(params["k"], n), niter=params["niter"], seed=params["seed"], spherical=True,
                       resources=resources)
    t1 = time.perf_counter()
    key = ranking_key(params["keep"], cl.dist2, params["seed"])
    order = np.lexsort((np.arange(n), key, cl.labels))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    pieces, split = _pieces(cl.labels[order], cap)
    if split:
        note(f"{split} cluster(s) exceed {cap:,} rows (what --max-memory holds): each is split into pieces in "
             "rank order, and pairs across pieces are not compared")
    # under Ray, enough batches to keep several workers busy
    batch_cap = min(cap, max(1, -(-n // 16))) if resources.executor.distributed else cap
    batches = list(_batches(pieces, batch_cap))
    scratch = None
    if len(batches) > 1 and shutil.disk_usage(folder).free > 1.2 * n * store.dim * 2:
        scratch = folder / "scratch"  # one pass sorts the rows by batch, instead of one pass per batch
        _bucket(store, order, batches, scratch, resources.progress)
    elif len(batches) > 1:
        note(f"the similarity step reads the store {len(batches)} times (once per batch of clusters that "
             "--max-memory holds): too little free disk beside the store to sort its rows by cluster first")
    task = PairsTask(order, batches, 1 - params["floor_eps"], str(device), resources.progress,
                     None if scratch is None else str(scratch))
    pos, best, arg, ea, eb, es = resources.executor.map_shards(task, store, list(range(len(batches))))
    if scratch is not None:
        shutil.rmtree(scratch)
    prev_sim = np.full(n, -np.inf, dtype=np.float32)
    prev = np.full(n, -1, dtype=np.int64)
    prev_sim[pos], prev[pos] = best, arg
    p = SemanticPass(store.rows(), cl.labels.astype(np.int32), rank, prev_sim, prev, ea, eb, es.astype(np.float32),
                     params["floor_eps"])
    p.info = {"clustering": cl.key, "k_effective": int(cl.k), "max_cluster_rows": cap,
              "clusters_split": split, "batches": len(batches),
              "sorted_by_cluster": scratch is not None,
              "seconds": {"cluster": round(t1 - t0, 3), "pairs": round(time.perf_counter() - t1, 3)}}
    return p


def _pieces(labels_sorted: np.ndarray, cap: int) -> tuple[list[tuple[int, int]], int]:
    """Runs of equal label in rank order, as (start, end) pieces of at most ``cap`` rows."""
    if not len(labels_sorted):
        return [], 0
    cuts = np.flatnonzero(np.diff(labels_sorted)) + 1
    bounds = np.concatenate([[0], cuts, [len(labels_sorted)]])
    pieces, split = [], 0
    for s, e in zip(bounds[:-1], bounds[1:], strict=True):
        split += e - s > cap
        pieces += [(int(a), int(min(a + cap, e))) for a in range(s, e, cap)]
    return pieces, int(split)


def _batches(pieces: list[tuple[int, int]], cap: int):
    """Consecutive pieces grouped so that each group's rows (gathered together) are at most ``cap``."""
    group, rows = [], 0
    for p in pieces:
        if group and rows + p[1] - p[0] > cap:
            yield group
            group, rows = [], 0
        group.append(p)
        rows += p[1] - p[0]
    if group:
        yield group


def _bucket(store, order: np.ndarray, batches: list, folder: Path, progress: bool) -> None:
    """One streamed pass: each batch's rows, in store order, to ``folder/batch-U.f16`` (raw float16)."""
    folder.mkdir()
    batch_of = np.full(store.n_rows, -1, dtype=np.int64)
    for u, batch in enumerate(batches):
        batch_of[order[batch[0][0]:batch[-1][1]]] = u
    files = [open(folder / f"batch-{u:05d}.f16", "wb") for u in range(len(batches))]  # noqa: SIM115
    try:
        at = 0
        with bar(store.n_rows, "sort by cluster", enabled=progress) as pbar:
            for block in store.iter_blocks(("embedding",)):
                emb = block["embedding"]
                b = batch_of[at:at + len(emb)]
                srt = np.argsort(b, kind="stable")
                cuts = np.flatnonzero(np.diff(b[srt])) + 1
                for s, e in zip(np.r_[0, cuts], np.r_[cuts, len(srt)], strict=True):
                    if e > s and b[srt[s]] >= 0:
                        files[b[srt[s]]].write(np.ascontiguousarray(emb[srt[s:e]]).tobytes())
                at += len(emb)
                pbar.update(len(emb))
    finally:
        for f in files:
            f.close()


@dataclass
class PairsTask(ShardTask):
    """The similarity blocks of some cluster batches, on the run's executor (local, or Ray workers).

    Its units are cluster batches (``batches[u]``: (start, end) pieces of ``order``, the store positions
    in rank order), not store shards: each call reads its batch's rows (from its scratch file, or in one
    streamed read of the store) and returns (positions, prev_sim, prev, forest a, forest b, forest sim),
    one entry per piece; :meth:`merge` concatenates them.
    """

    order: np.ndarray
    batches: list
    floor: float
    device: str = "cpu"
    progress: bool = False
    scratch: str | None = None  # folder of the batches' rows sorted out of the store (:func:`_bucket`)

    def rows(self, store, u: int) -> np.ndarray:
        """Batch ``u``'s rows as (m, d) float16 in rank order."""
        lo, hi = self.batches[u][0][0], self.batches[u][-1][1]
        want = self.order[lo:hi]
        if self.scratch is None:
            return gather_rows(store, want)
        by_position = np.fromfile(Path(self.scratch) / f"batch-{u:05d}.f16", dtype=np.float16).reshape(-1, store.dim)
        return by_position[np.searchsorted(np.sort(want), want)]

    def run(self, store, shards: list[int]):
        parts = []
        rows = sum(self.batches[u][-1][1] - self.batches[u][0][0] for u in shards)
        with bar(rows, "semdedup", enabled=self.progress) as pbar:
            for u in shards:
                batch = self.batches[u]
                lo = batch[0][0]
                x = self.rows(store, u)  # (rows of the batch, d) float16, rank order
                for a, b in batch:
                    parts.append(_cluster_pairs(x[a - lo:b - lo], self.order[a:b], self.floor,
                                                torch.device(self.device)))
                    pbar.update(b - a)
        return self.merge(parts)

    def merge(self, parts):
        if not parts:
            return (np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, np.int64), np.zeros(0, np.int64),
                    np.zeros(0, np.int64), np.zeros(0, np.float32))
        return tuple(np.concatenate(c) for c in zip(*parts, strict=True))


def _cluster_pairs(x: np.ndarray, pos: np.ndarray, floor: float, device):
    """One cluster piece ``x`` (m, d) in rank order at store positions ``pos`` -> (pos, each row's best
    similarity to an earlier-ranked row and that row's position, and the piece's maximum spanning forest
    of pairs >= ``floor``: store positions a, b and similarity)."""
    m = len(x)
    fa, fb, fs = np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    pa_, pb_, ps_ = [fa], [fb], [fs]
    pending = 0
    best_all = np.full(m, -np.inf, dtype=np.float32)
    arg_all = np.full(m, -1, dtype=np.int64)
    for i in range(0, m, BLOCK):
        xi = torch.as_tensor(x[i:i + BLOCK], device=device).float()
        best = torch.full((len(xi),), -float("inf"), device=device)
        arg = torch.full((len(xi),), -1, dtype=torch.int64, device=device)
        for j in range(0, i + 1, BLOCK):
            xj = torch.as_tensor(x[j:j + BLOCK], device=device).float()
            s = xi @ xj.T  # (bi, bj): s[r, c] = sim(row i + r, row j + c)
            if j == i:  # only earlier-ranked rows: c < r
                s = s.masked_fill(torch.ones_like(s, dtype=torch.bool).triu(), -float("inf"))
            v, a = s.max(1)
            better = v > best
            best, arg = torch.where(better, v, best), torch.where(better, a + j, arg)
            r, c = torch.nonzero(s >= floor, as_tuple=True)
            if len(r):
                pa_.append((r + i).cpu().numpy())
                pb_.append((c + j).cpu().numpy())
                ps_.append(s[r, c].cpu().numpy().astype(np.float32))
                pending += len(r)
            if pending > _EDGE_LIMIT:
                fa, fb, fs = _forest(np.concatenate(pa_), np.concatenate(pb_), np.concatenate(ps_), m)
                pa_, pb_, ps_, pending = [fa], [fb], [fs], 0
        best_all[i:i + BLOCK] = best.cpu().numpy()
        arg_all[i:i + BLOCK] = arg.cpu().numpy()
    fa, fb, fs = _forest(np.concatenate(pa_), np.concatenate(pb_), np.concatenate(ps_), m)
    got = arg_all >= 0
    return pos[got], best_all[got], pos[arg_all[got]], pos[fa], pos[fb], fs


def _forest(a: np.ndarray, b: np.ndarray, s: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The maximum spanning forest of the pairs (a, b, sim) over ``m`` nodes (each pair given once)."""
    if not len(a):
        return a.astype(np.int64), b.astype(np.int64), s.astype(np.float32)
    w = 2.0 - s.astype(np.float64)  # > 0: SciPy takes a zero as "no edge"
    t = minimum_spanning_tree(coo_matrix((w, (a, b)), shape=(m, m)).tocsr()).tocoo()
    return t.row.astype(np.int64), t.col.astype(np.int64), (2.0 - t.data).astype(np.float32)
