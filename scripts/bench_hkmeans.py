"""Benchmark hierarchical k-means + balanced sampling: wall time and peak RSS per level.

On a synthetic clustered store (default 1M x 1024 float16; a few dense modes plus a uniform
background), builds the hierarchy without cache and samples a budget. Level 1 is k-means (k-means++,
Lloyd) on ``--sample-size`` sampled rows plus streamed assignment of the whole pool (once per
resampling run); upper levels cluster centroids in memory.

    python scripts/bench_hkmeans.py [--rows 1000000] [--dim 1024] [--k 1000,100,20] [--resamples 1] [--niter 20]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--k", default="1000,100,20")
    ap.add_argument("--resamples", type=int, default=1)
    ap.add_argument("--niter", type=int, default=20)
    ap.add_argument("--sample-size", type=int, default=64_000, help="level-1 training rows")
    ap.add_argument("--budget", type=int, default=100_000)
    ap.add_argument("--keep", type=Path)
    args = ap.parse_args()
    from dataselect.pool_index.hierarchical import build_hierarchy
    from dataselect.selectors.hierarchical_kmeans import leaf_targets
    from dataselect.store import Store
    from dataselect.store.synthetic import clustered_store

    root = args.keep or Path(tempfile.mkdtemp(prefix="bench_hk_"))
    path = root / f"clustered_{args.rows}x{args.dim}"
    clustered_store(path, args.rows, args.dim)
    store = Store(path)
    ks = [int(k) for k in args.k.split(",")]
    t0 = time.perf_counter()
    h = build_hierarchy(store, ks, resamples=args.resamples, niter=args.niter, sample_size=args.sample_size,
                        cache=False)
    t_tree = time.perf_counter() - t0
    targets = leaf_targets(h, args.budget)
    t_sample = time.perf_counter() - t0 - t_tree
    print(f"pool {args.rows:,} x {args.dim}, levels k={ks}, resamples={args.resamples}, "
          f"sample {h.meta['sample_rows']:,} rows for level 1")
    for t in h.meta["timings"]:
        print(f"level {t['level']}: {t['seconds']:8.1f}s   RSS {t['rss_mb']:.0f} MB")
    print(f"balanced sampling of {int(targets.sum()):,} rows: {t_sample:.2f}s   total {t_tree + t_sample:.1f}s   "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
