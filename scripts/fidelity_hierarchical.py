"""Side by side: our hierarchical k-means against facebookresearch/ssl-data-curation, same data per seed.

    python scripts/fidelity_hierarchical.py --reference PATH [--seeds 10] [--rows 20000] [--level2-repeats 0]

PATH is a checkout of https://github.com/facebookresearch/ssl-data-curation that you fetched yourself
(its licence is CC-BY-NC; nothing of it is copied here: it is imported from PATH at run time). Its
single-node functions (``src/hierarchical_kmeans_gpu.py``, ``src/hierarchical_sampling.py``) follow
the input tensor's device, so they run on CPU tensors; numpy 2 lacks ``np.Inf``, which it uses, so
the script sets ``np.Inf = np.inf`` before importing it.

Data (per seed): ``--rows`` x 32 points from 200 Gaussians (unit variance) whose sizes are
lognormal(0, 1), their means nested in 20 groups (group means N(0, 6^2 I), component means the
group mean + N(0, 2^2 I)); rounded to float16, the store's precision, so both sides see the same
numbers. Setting: k = 200, 20; 1 + 9 runs per level; ``closest`` resampling with 50 and 5 points per
cluster; 50 Lloyd updates; k-means++ (greedy, 2 + ln k trials). Both sides cluster the whole pool.

Printed, over seeds (mean +- sd, and in how many seeds ours is lower):

* level-1 inertia: pool rows to their level-1 centroid;
* level-2 inertia: level-1 centroids to their level-2 centroid (the k-means objective of level 2);
* level 2 alone: both sides' level 2 run on the *same* input (the reference's level-1 centroids),
  which separates a level-2 difference from one carried up from level 1;
* ``--level2-repeats N``: level 2 alone N times on one input (seed 0's reference level-1
  centroids), its inertia and the rows of its smallest top cluster, with Mann-Whitney p-values;
* per budget, the balance of the selection over the top level: max/min rows per top cluster
  (clusters that hold rows), and the entropy of the selection over the 200 true components
  (log 200 = 5.30 is perfect balance). Ours uses our sampler; the reference its own
  ``hierarchical_sampling`` (random leaf rows); "ref tree, our sampler" checks the samplers agree.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import random
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

KS = [200, 20]
SAMPLE_SIZES = [50, 5]
RESAMPLES = 9  # runs per level: 1 + 9 (the reference configs' n_resampling_steps: 10)
NITER = 50
BUDGETS = (1000, 5000)


def make_data(seed: int, n: int = 20_000, dim: int = 32, comps: int = 200, groups: int = 20):
    """(x (n, dim) float32 holding float16 values, true component of each row)."""
    rng = np.random.default_rng(seed)
    group_mean = rng.standard_normal((groups, dim)) * 6.0
    mean = group_mean[np.repeat(np.arange(groups), comps // groups)] + rng.standard_normal((comps, dim)) * 2.0
    w = rng.lognormal(0.0, 1.0, comps)
    sizes = np.maximum(1, np.round(w / w.sum() * n)).astype(np.int64)
    sizes[np.argmax(sizes)] += n - sizes.sum()
    comp = rng.permutation(np.repeat(np.arange(comps), sizes))
    x = mean[comp] + rng.standard_normal((n, dim))
    return x.astype(np.float16).astype(np.float32), comp


def load_reference(path: Path):
    if not (path / "src" / "hierarchical_kmeans_gpu.py").is_file():
        raise SystemExit(f"--reference {path}: no src/hierarchical_kmeans_gpu.py there (a ssl-data-curation checkout)")
    if not hasattr(np, "Inf"):
        np.Inf = np.inf  # the reference's kmeans_gpu.py uses the name numpy 2 removed
    sys.path.insert(0, str(path))
    from src import hierarchical_kmeans_gpu, hierarchical_sampling
    from src.clusters import HierarchicalCluster

    return hierarchical_kmeans_gpu, hierarchical_sampling, HierarchicalCluster


@contextlib.contextmanager
def quiet():
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


def seed_reference(seed: int) -> None:
    np.random.seed(seed)  # the reference draws from numpy's global state (random_state=None) and `random`
    random.seed(seed)
    torch.manual_seed(seed)


def run_ours(x: np.ndarray, seed: int, tmp: Path):
    from dataselect.pool_index.hierarchical import build_hierarchy
    from dataselect.store import Store
    from dataselect.store.synthetic import store_from_array

    store_from_array(tmp / f"pool-{seed}", x, shard_rows=5000)
    return build_hierarchy(Store(tmp / f"pool-{seed}"), KS, resamples=RESAMPLES, sample_sizes=SAMPLE_SIZES,
                           niter=NITER, seed=seed, cache=False)


def run_reference(hkm, x: np.ndarray, seed: int, ks=KS, sample_sizes=SAMPLE_SIZES):
    seed_reference(seed)
    with quiet():
        return hkm.hierarchical_kmeans_with_resampling(torch.from_numpy(x), ks, len(ks), sample_sizes,
                                                       n_resamples=RESAMPLES, sample_strategy="closest",
                                                       verbose=False)


def inertia(points: np.ndarray, centroids: np.ndarray, labels: np.ndarray) -> float:
    return float(((points.astype(np.float64) - centroids[labels]) ** 2).sum())


def entropy(labels: np.ndarray, k: int) -> float:
    p = np.bincount(labels, minlength=k) / len(labels)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def top_ratio(top_of_row: np.ndarray, picked: np.ndarray, k_top: int) -> float:
    holds = np.bincount(top_of_row, minlength=k_top) > 0
    got = np.bincount(top_of_row[picked], minlength=k_top)[holds]
    return float(got.max() / max(got.min(), 1))


def summary(name: str, ours: list[float], ref: list[float], lower_is_better: bool = True) -> str:
    o, r = np.array(ours), np.array(ref)
    wins = int((o < r).sum() if lower_is_better else (o > r).sum())
    return (f"| {name} | {o.mean():,.0f} ± {o.std(ddof=1):,.0f} | {r.mean():,.0f} ± {r.std(ddof=1):,.0f} | "
            f"{wins}/{len(o)} |")


def summary_f(name: str, ours: list[float], ref: list[float], lower_is_better: bool = True) -> str:
    o, r = np.array(ours), np.array(ref)
    wins = int((o < r).sum() if lower_is_better else (o > r).sum())
    return (f"| {name} | {o.mean():.2f} ± {o.std(ddof=1):.2f} | {r.mean():.2f} ± {r.std(ddof=1):.2f} | "
            f"{wins}/{len(o)} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference", type=Path, required=True, help="a ssl-data-curation checkout")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--rows", type=int, default=20_000)
    ap.add_argument("--level2-repeats", type=int, default=0,
                    help="also run level 2 alone this many times on seed 0's reference level-1 centroids "
                         "(--seeds 0: only that)")
    args = ap.parse_args()
    hkm, hs, HierarchicalCluster = load_reference(args.reference.resolve())
    from dataselect.pool_index.hierarchical import Hierarchy, cluster_level
    from dataselect.selectors.hierarchical_kmeans import leaf_targets

    rec: dict[str, list[float]] = {}

    def put(key: str, value: float) -> None:
        rec.setdefault(key, []).append(value)

    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            x, comp = make_data(seed, args.rows)
            h = run_ours(x, seed, Path(tmp))
            ref = run_reference(hkm, x, seed)
            rc1, rc2 = (r["centroids"].numpy().astype(np.float32) for r in ref)
            rl1, rl2 = (np.asarray(r["assignment"]) for r in ref)
            put("l1 ours", inertia(x, h.centroids[0], h.labels[0]))
            put("l1 ref", inertia(x, rc1, rl1))
            put("l2 ours", inertia(h.centroids[0], h.centroids[1], h.labels[1]))
            put("l2 ref", inertia(rc1, rc2, rl2))
            put("empty1 ours", float((np.bincount(h.labels[0], minlength=KS[0]) == 0).sum()))
            put("empty1 ref", float((np.bincount(rl1, minlength=KS[0]) == 0).sum()))
            # level 2 alone, on the reference's level-1 centroids for both sides
            c, lab = cluster_level(torch.from_numpy(rc1), KS[1], resamples=RESAMPLES, sample_size=SAMPLE_SIZES[1],
                                   niter=NITER, seed=seed + 1000)
            put("l2same ours", inertia(rc1, c, lab))
            r2 = run_reference(hkm, rc1, seed + 1000, KS[1:], SAMPLE_SIZES[1:])
            put("l2same ref", inertia(rc1, r2[0]["centroids"].numpy(), np.asarray(r2[0]["assignment"])))
            # balance
            ref_tree = Hierarchy([rl1.astype(np.int32), rl2.astype(np.int32)], np.zeros(len(x), np.float32), KS,
                                 np.arange(len(x)), {})
            seed_reference(seed)
            with quiet():
                ref_cl = HierarchicalCluster.from_dict(ref)
            for budget in BUDGETS:
                rng = np.random.default_rng(seed)
                ours_t = leaf_targets(h, budget, rng)
                mine = np.concatenate([rng.choice(np.nonzero(h.labels[0] == c)[0], t, replace=False)
                                       for c, t in enumerate(ours_t) if t])
                with quiet():
                    theirs = np.asarray(hs.hierarchical_sampling(ref_cl, budget, sampling_strategy="r"), dtype=np.int64)
                cross_t = leaf_targets(ref_tree, budget, np.random.default_rng(seed))
                put(f"ratio{budget} ours", top_ratio(h.labels[1][h.labels[0]], mine, KS[1]))
                put(f"ratio{budget} ref", top_ratio(rl2[rl1], theirs, KS[1]))
                cross_rows = np.repeat(np.arange(KS[0]), cross_t)  # leaf of each picked row
                got = np.bincount(rl2[cross_rows], minlength=KS[1])[np.bincount(rl2[rl1], minlength=KS[1]) > 0]
                put(f"ratio{budget} cross", float(got.max() / max(got.min(), 1)))
                for side, top in (("ours", h.labels[1][h.labels[0]]), ("ref", rl2[rl1])):
                    rows = np.bincount(top, minlength=KS[1])
                    put(f"short{budget} {side}", float(rows[rows > 0].min() < budget / KS[1]))
                put(f"ent{budget} ours", entropy(comp[mine], 200))
                put(f"ent{budget} ref", entropy(comp[theirs], 200))
            print(f"seed {seed}: level 2 inertia ours {rec['l2 ours'][-1]:,.0f} ref {rec['l2 ref'][-1]:,.0f}; "
                  f"same input ours {rec['l2same ours'][-1]:,.0f} ref {rec['l2same ref'][-1]:,.0f}; "
                  f"top max/min at {BUDGETS[-1]:,}: ours {rec[f'ratio{BUDGETS[-1]} ours'][-1]:.2f} "
                  f"ref {rec[f'ratio{BUDGETS[-1]} ref'][-1]:.2f}", flush=True)

    if args.seeds > 1:
        print_table(rec, args)
    if args.level2_repeats:
        level2_repeats(hkm, args.rows, args.level2_repeats)


def print_table(rec: dict, args) -> None:
    print(f"\n{args.rows:,} x 32, k = {KS}, 1 + {RESAMPLES} runs per level, closest resampling {SAMPLE_SIZES}, "
          f"{NITER} Lloyd updates, {args.seeds} seeds\n")
    print("| figure | ours | ssl-data-curation | seeds ours lower |")
    print("|---|---|---|---|")
    print(summary("level-1 inertia", rec["l1 ours"], rec["l1 ref"]))
    print(summary("level-2 inertia", rec["l2 ours"], rec["l2 ref"]))
    print(summary("level 2 alone, same input", rec["l2same ours"], rec["l2same ref"]))
    print(summary_f("empty level-1 clusters", rec["empty1 ours"], rec["empty1 ref"]))
    for budget in BUDGETS:
        print(summary_f(f"top max/min rows, budget {budget:,}", rec[f"ratio{budget} ours"],
                        rec[f"ratio{budget} ref"]))
        o, r = (100 * np.mean(rec[f"short{budget} {side}"]) for side in ("ours", "ref"))
        print(f"| seeds with a top cluster under {budget // KS[1]:,} rows, budget {budget:,} | {o:.0f}% | {r:.0f}% | |")
        c = np.array(rec[f"ratio{budget} cross"])
        print(f"| ... ref tree, our sampler, budget {budget:,} | {c.mean():.2f} ± {c.std(ddof=1):.2f} | | |")
        print(summary_f(f"entropy over true components, budget {budget:,}", rec[f"ent{budget} ours"],
                        rec[f"ent{budget} ref"], lower_is_better=False).replace("ours lower", "ours higher"))
    print("\n(last column: seeds where ours is lower; for entropy, where ours is higher)")


def level2_repeats(hkm, rows: int, repeats: int) -> None:
    """Level 2 alone, ``repeats`` seeds, both sides on the same input: seed 0's reference level-1 centroids."""
    from scipy.stats import mannwhitneyu

    from dataselect.pool_index.hierarchical import cluster_level

    x, _ = make_data(0, rows)
    ref = run_reference(hkm, x, 0, KS[:1], SAMPLE_SIZES[:1])
    c1 = ref[0]["centroids"].numpy().astype(np.float32)
    rows1 = np.bincount(np.asarray(ref[0]["assignment"]), minlength=KS[0])  # pool rows under each input point
    out = {"ours": [], "ref": []}
    for seed in range(repeats):
        c, lab = cluster_level(torch.from_numpy(c1), KS[1], resamples=RESAMPLES, sample_size=SAMPLE_SIZES[1],
                               niter=NITER, seed=seed)
        r = run_reference(hkm, c1, seed, KS[1:], SAMPLE_SIZES[1:])[0]
        for side, (cent, lab_) in (("ours", (c, lab)), ("ref", (r["centroids"].numpy(), np.asarray(r["assignment"])))):
            top_rows = np.bincount(lab_, weights=rows1, minlength=KS[1])
            out[side].append((inertia(c1, cent, lab_), top_rows[top_rows > 0].min()))
    o, r = np.array(out["ours"]), np.array(out["ref"])
    print(f"\nlevel 2 alone on the same {KS[0]} points, {repeats} seeds (Mann-Whitney U p-values):\n")
    print("| figure | ours | ssl-data-curation | p |")
    print("|---|---|---|---|")
    print(f"| level-2 inertia | {o[:, 0].mean():,.0f} ± {o[:, 0].std(ddof=1):,.0f} | "
          f"{r[:, 0].mean():,.0f} ± {r[:, 0].std(ddof=1):,.0f} | {mannwhitneyu(o[:, 0], r[:, 0]).pvalue:.2f} |")
    print(f"| rows in the smallest top cluster | {o[:, 1].mean():,.0f} ± {o[:, 1].std(ddof=1):,.0f} | "
          f"{r[:, 1].mean():,.0f} ± {r[:, 1].std(ddof=1):,.0f} | {mannwhitneyu(o[:, 1], r[:, 1]).pvalue:.2f} |")
    short = BUDGETS[-1] // KS[1]
    print(f"| seeds with a top cluster under {short} rows | {100 * (o[:, 1] < short).mean():.0f}% | "
          f"{100 * (r[:, 1] < short).mean():.0f}% | |")


if __name__ == "__main__":
    main()
