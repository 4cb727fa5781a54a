"""SemDeDup against the reference code (facebookresearch/SemDeDup), same data both sides, over seeds.

The reference removes, in each k-means cluster, the rows whose largest similarity to an earlier row is
strictly above 1 - eps: rows sorted by the distance to the centroid the clustering's search recorded
(``keep hard``: farthest first, a stable sort), S = X X^T with its diagonal zeroed, M = the column
maxima of triu(S, 1), removed where M > 1 - eps (semdedup.py, sort_clusters.py). :func:`transcription`
writes that out from its description (no code of it is copied) and is run on the clusters
``dataselect dedup`` used. With ``--reference-git`` (a git directory of the reference, by default the
library's mirror where it exists) the reference's own functions are run too: the repository is
extracted at run time into a temporary directory and imported from there, with a stub for
``submitit`` (only ``helpers.Checkpointable``, the base class it needs); nothing of it is kept.
Reported per seed and eps:

* ``ours``: rows ``--rule reference --keep hard`` removes; ``same``: whether the transcription removes
  exactly those rows, given the clustering's recorded distances (what the reference sorts by);
* ``ref-M``: rows decided differently from ours by the reference's ``SemDeDupJob.semdedup`` (its M,
  then ``M > 1 - eps`` as ``_process_shard`` applies it), run on each cluster's rows in our recorded
  rank order (0: exactly our rows);
* ``ref-rank``: the same, with the rows ranked by the reference's ``sort_clusters.rank_within_cluster``
  (spherical, keep hard) from our clustering's assignments and recorded squared distances d^2, given as
  the similarity 1 - d^2/2 (exact in float64, so the conversion reorders nothing); ``moved``: rows at
  another rank position than ours;
* ``ref-ip``: the same again, ranked by ``rank_within_cluster`` from the inner product x . c (float32)
  with the centroid, the value the reference's spherical faiss search records; ``moved`` as before.
  d^2 = |x|^2 + |c|^2 - 2 x . c orders rows as x . c does only where |x| = 1 exactly, and the store's
  float16 rows are unit only to about 2e-4, so near-equal distances order differently;
* ``cos-order``: the transcription again, sorted by 1 - x . c instead (as ``ref-ip``);
  ``jaccard`` of its removed set with ours;
* ``groups``: rows the default ``--rule groups`` (connected components) removes, and how many rows
  the two rules decide differently.

    python scripts/fidelity_semdedup.py [--rows 20000] [--dim 64] [--k 20] [--seeds 5] [--reference-git DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import subprocess
import sys
import tarfile
import tempfile
import time
import types
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

MIRROR = Path("/work/.mirror/facebookresearch+SemDeDup/repo")
REFERENCE_NAMES = ("semdedup", "sort_clusters", "constants", "utils", "submitit")


def transcription(x: np.ndarray, labels: np.ndarray, dist_to_cent: np.ndarray, eps: float) -> np.ndarray:
    """The reference's removed rows (module docstring); ``dist_to_cent``: larger is farther."""
    removed = []
    xf = torch.from_numpy(np.asarray(x, dtype=np.float32))
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        if len(members) < 2:
            continue  # a cluster of one is kept
        order = sorted(range(len(members)), key=lambda i: float(dist_to_cent[members[i]]), reverse=True)
        reps = xf[members[order]]
        sim = reps @ reps.T
        sim.fill_diagonal_(0.0)
        m = torch.max(torch.triu(sim, diagonal=1), dim=0)[0]
        removed += members[order][(m > 1 - eps).numpy()].tolist()
    return np.sort(np.array(removed, dtype=np.int64))


def make_pool(n: int, dim: int, seed: int) -> np.ndarray:
    """n/4 distinct unit rows and 3n/4 copies of them at noise 0 (exact), 0.01, 0.03, 0.1 and 0.3."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n // 4, dim))
    noise = rng.choice([0.0, 0.01, 0.03, 0.1, 0.3], (n - n // 4, 1))
    x = np.concatenate([base, base[rng.integers(0, n // 4, n - n // 4)] + noise * rng.standard_normal((n - n // 4, dim))])
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)


class Reference:
    """The reference's functions, imported from a copy of ``git_dir``'s HEAD extracted into ``folder``."""

    def __init__(self, git_dir: Path, folder: Path):
        tree = folder / "SemDeDup"
        tree.mkdir()
        if (git_dir / "semdedup.py").exists():  # a checkout rather than a git directory
            git_dir = git_dir / ".git"
        tar = subprocess.run(["git", "--git-dir", str(git_dir), "archive", "--format=tar", "HEAD"],
                             check=True, capture_output=True).stdout
        with tarfile.open(fileobj=io.BytesIO(tar)) as t:
            t.extractall(tree, filter="data")
        self.commit = subprocess.run(["git", "--git-dir", str(git_dir), "rev-parse", "--short", "HEAD"],
                                     check=True, capture_output=True, text=True).stdout.strip()
        saved = {name: sys.modules.pop(name) for name in REFERENCE_NAMES if name in sys.modules}
        stub = types.ModuleType("submitit")  # SLURM launcher; the classes only subclass this
        stub.helpers = SimpleNamespace(Checkpointable=type("Checkpointable", (), {}))
        sys.modules["submitit"] = stub
        path = list(sys.path)
        sys.path[:0] = [str(tree), str(tree / "clustering")]
        try:
            import semdedup
            import sort_clusters
        finally:
            sys.path[:] = path
            for name in REFERENCE_NAMES:
                sys.modules.pop(name, None)
            sys.modules.update(saved)
        self.job = semdedup.SemDeDupJob(SimpleNamespace(seed=0), 0)
        self.rank_within_cluster = sort_clusters.rank_within_cluster
        self.folder = folder

    def m(self, x: np.ndarray, ranked: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(rows, M) of the clusters ``ranked`` (each its rows in rank order): ``SemDeDupJob.semdedup``
        on each cluster of two or more rows, as ``_process_shard`` calls it (a cluster of one is kept)."""
        rows, ms = [], []
        for ids in ranked:
            if len(ids) < 2:
                continue
            cluster = np.array([[str(i), str(i), "0", "0"] for i in ids])  # path, index, dist, label
            with contextlib.redirect_stdout(io.StringIO()):  # it prints a step time per cluster
                ms.append(self.job.semdedup(cluster, torch.tensor(x[ids].astype(np.float32)), "cpu"))
            rows.append(ids)
        return np.concatenate(rows), torch.cat(ms)

    def ranking(self, x: np.ndarray, labels: np.ndarray, sim_to_cent: np.ndarray, centroids: np.ndarray,
                name: str) -> list[np.ndarray]:
        """Each cluster's rows in the order ``sort_clusters.rank_within_cluster`` saves (spherical, keep
        hard), read back from its ``cluster_C.npy`` as ``_process_shard`` reads them."""
        import pandas as pd

        out = self.folder / name
        df = pd.DataFrame({"paths_list": [str(i) for i in range(len(x))], "nearest_cent": labels,
                           "dist_to_cent": sim_to_cent})
        ids = [int(c) for c in np.unique(labels)]
        with contextlib.redirect_stderr(io.StringIO()):  # its tqdm bar
            self.rank_within_cluster(x.astype(np.float32), df, centroids, "cosine", True, True, ids, str(out))
        return [np.load(out / f"cluster_{c}.npy")[:, 1].astype(np.int64) for c in ids]


def differing(removed_mask: np.ndarray, rows: np.ndarray, m: torch.Tensor, eps: float) -> int:
    """Rows the reference's ``M > 1 - eps`` decides differently from ``removed_mask`` (rows not in a
    cluster of two or more are kept by both)."""
    ref = np.zeros_like(removed_mask)
    ref[rows] = (m > 1 - eps).numpy()
    return int((ref != removed_mask).sum())


def _moved(ours: list[np.ndarray], theirs: list[np.ndarray]) -> int:
    """Rows at another position in ``theirs`` than in ``ours`` (the same clusters, each in rank order)."""
    return int(sum((a != b).sum() for a, b in zip(ours, theirs, strict=True)))


def main() -> None:
    from dataselect.duplicates import dedup_store
    from dataselect.duplicates.semantic import semantic_pass
    from dataselect.pool_index.kmeans import cluster_store
    from dataselect.store import Store
    from dataselect.store.synthetic import store_from_array

    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=20_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--reference-git", default=str(MIRROR) if MIRROR.exists() else "",
                    help="git directory (or checkout) of facebookresearch/SemDeDup; '' skips the reference code")
    args = ap.parse_args()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        ref = None
        if args.reference_git:
            ref = Reference(Path(args.reference_git), Path(tmp))
            print(f"reference code: facebookresearch/SemDeDup at {ref.commit}, from {args.reference_git}")
        else:
            print("reference code: not run (no --reference-git); the ref-* and moved columns are '-'")
        print(f"{'seed':>4} {'eps':>6} {'ours':>6} {'same':>5} {'ref-M':>5} {'ref-rank':>8} {'moved':>5} {'ref-ip':>6} {'moved':>5} "
              f"{'cos-order':>9} {'jaccard':>7} {'groups':>6} {'rules differ':>12}")
        for seed in range(args.seeds):
            x = make_pool(args.rows, args.dim, seed)
            store = Store(store_from_array(Path(tmp) / f"s{seed}", x, shard_rows=5000))
            m_ours = m_rank = m_ip = moved = moved_ip = None
            for eps in (0.001, 0.01, 0.05, 0.1):
                ours = dedup_store(store, eps=eps, k=args.k, seed=seed, keep="hard", rule="reference")
                groups = dedup_store(store, eps=eps, k=args.k, seed=seed, keep="hard")
                # the pass's clustering and its recorded rank order (both cached: no new pass)
                cl = cluster_store(store, args.k, niter=20, seed=seed, spherical=True)
                removed = np.flatnonzero(~ours.kept)
                if ref is not None and m_ours is None:
                    p = semantic_pass(store, k=args.k, keep="hard", seed=seed)
                    order = np.argsort(p.rank)  # store positions in (cluster, rank) order
                    ranked = [order[p.label[order] == c] for c in np.unique(p.label)]
                    m_ours = ref.m(x, ranked)
                    theirs = ref.ranking(x, cl.labels, 1 - cl.dist2.astype(np.float64) / 2, cl.centroids,
                                         f"ranked-{seed}")
                    m_rank, moved = ref.m(x, theirs), _moved(ranked, theirs)
                    ip = (x.astype(np.float32) * cl.centroids.astype(np.float32)[cl.labels]).sum(1)
                    by_ip = ref.ranking(x, cl.labels, ip, cl.centroids, f"ip-{seed}")
                    m_ip, moved_ip = ref.m(x, by_ip), _moved(ranked, by_ip)
                same = np.array_equal(removed, transcription(x, cl.labels, cl.dist2, eps))
                cent = torch.from_numpy(cl.centroids.astype(np.float32))
                cos_dist = 1 - (torch.from_numpy(x.astype(np.float32)) * cent[cl.labels]).sum(1).numpy()
                other = transcription(x, cl.labels, cos_dist, eps)
                jac = len(np.intersect1d(removed, other)) / max(len(np.union1d(removed, other)), 1)
                differ = int((ours.kept != groups.kept).sum())
                if ref is not None:
                    d_m, d_rank, d_ip = (differing(~ours.kept, *m, eps) for m in (m_ours, m_rank, m_ip))
                else:
                    d_m = d_rank = d_ip = moved = moved_ip = "-"
                print(f"{seed:>4} {eps:>6} {len(removed):>6} {str(same):>5} {d_m:>5} {d_rank:>8} {moved:>5} {d_ip:>6} {moved_ip:>5} "
                      f"{len(other):>9} {jac:>7.4f} {groups.removed:>6} {differ:>12}")
    print(f"{time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
