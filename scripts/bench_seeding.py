"""k-means++ seeding in this process against its parts held by Ray workers, in the same run.

Greedy k-means++ takes one round per centre; on Ray each round is two calls to the parts (locate the
drawn rows, then evaluate the candidates), so what Ray adds is a fixed cost per round. On one machine
both sides use the same cores (local: torch's threads; Ray: one thread per worker), so that cost is
(Ray time - local time) / k. The seeds must be the same: the script checks it.

    python scripts/bench_seeding.py [--rows 200000] [--dim 64] [--k 500] [--shard-rows 25000] [--workers 2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--k", type=int, default=500)
    ap.add_argument("--shard-rows", type=int, default=25_000)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    import ray

    from dataselect.engines.ray_engine import RayExecutor
    from dataselect.pool_index.seeding import kmeans_plusplus

    rng = np.random.default_rng(0)
    modes = rng.standard_normal((256, args.dim)).astype(np.float32)
    x = torch.from_numpy(modes[rng.integers(0, 256, args.rows)]
                         + 0.5 * rng.standard_normal((args.rows, args.dim)).astype(np.float32))
    groups = [(lo, min(args.rows, lo + args.shard_rows)) for lo in range(0, args.rows, args.shard_rows)]
    ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
    t0 = time.perf_counter()
    local = kmeans_plusplus(x, args.k, np.random.default_rng(1), groups=groups)
    t_local = time.perf_counter() - t0
    t0 = time.perf_counter()
    held = kmeans_plusplus(x, args.k, np.random.default_rng(1), groups=groups,
                           executor=RayExecutor(workers=args.workers))
    t_ray = time.perf_counter() - t0
    per_round = (t_ray - t_local) / args.k
    print(f"{args.rows:,} x {args.dim}, k = {args.k:,}, {len(groups)} shards, {args.workers} Ray workers")
    print(f"local (this process)   : {t_local:8.2f} s")
    print(f"Ray, parts on workers  : {t_ray:8.2f} s  (x{t_local / t_ray:.2f} the local speed)")
    print(f"Ray's fixed cost       : {per_round * 1000:8.2f} ms a round (two calls to the parts; the same cores both sides)")
    print(f"same seeds             : {bool(np.array_equal(local, held))}")


if __name__ == "__main__":
    main()
