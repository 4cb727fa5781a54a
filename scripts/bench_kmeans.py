"""Benchmark the kmeans-sensitivity selector against plain FAISS and scikit-learn clustering.

On a synthetic store (default 1M x 1024 float16, clustered), measured in the same run:

* selector: `kmeans-sensitivity` with its defaults (k = 0.2 x budget as the paper's §5.1, k-means++
  seeding, 20 Lloyd updates on 256 k sampled rows, streamed assignment, the representatives' rounding
  pass, Lemma 8's Lambda from the store's loss column, systematic pi-ps draws), run in a subprocess
  with no clustering cache so its peak RSS is its own;
* baseline: one `faiss.Kmeans` train (FAISS's own random initialisation) on the same number of
  sample points plus one assignment pass of the whole pool (target: selector <= 2x this);
* scikit-learn: `MiniBatchKMeans` fit on the same sample and `predict` over the whole pool (ratio).

    python scripts/bench_kmeans.py [--rows 1000000] [--dim 1024] [--budget 100000] [--k 0 (default: 0.2 x budget)] [--keep DIR] [--skip-sklearn]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
import numpy as np
from dataselect.selectors import build_selector
from dataselect.store import Store
pool = Store(sys.argv[1])
t0 = time.perf_counter()
sel = build_selector("kmeans-sensitivity", {"k": int(sys.argv[2])}).select(pool, int(sys.argv[3]), np.random.default_rng(0))
info = sel.info["clustering"]
print(json.dumps({"wall_s": time.perf_counter() - t0, "picked": len(sel), "seconds": info["seconds"],
                  "sample_rows": info["sample_rows"], "k": info["k_effective"],
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--k", type=int, default=0, help="clusters (0: the selector's default, 0.2 x budget)")
    ap.add_argument("--budget", type=int, default=100_000)
    ap.add_argument("--keep", type=Path)
    ap.add_argument("--skip-sklearn", action="store_true")
    args = ap.parse_args()
    import faiss

    from dataselect.pool_index.sample import iter_float_blocks, read_positions, sample_positions
    from dataselect.selectors.kmeans_sensitivity import rule_k
    from dataselect.store import Store
    from dataselect.store.synthetic import clustered_store

    root = args.keep or Path(tempfile.mkdtemp(prefix="bench_kmeans_"))
    path = root / f"clustered_loss_{args.rows}x{args.dim}"
    clustered_store(path, args.rows, args.dim, with_loss=True)
    shutil.rmtree(path / "artefacts", ignore_errors=True)
    store = Store(path)
    args.k = args.k or rule_k(args.budget)
    n_train = min(args.rows, args.k * 256)

    t0 = time.perf_counter()
    x = read_positions(store, sample_positions(args.rows, n_train, 0))
    km = faiss.Kmeans(args.dim, args.k, niter=20, seed=0, verbose=False, max_points_per_centroid=256)
    km.train(x)
    t_train = time.perf_counter() - t0
    for _, b in iter_float_blocks(store):
        km.index.search(b, 1)
    t_faiss = time.perf_counter() - t0

    res = json.loads(subprocess.run([sys.executable, "-c", CHILD, str(path), str(args.k), str(args.budget)],
                                    capture_output=True, text=True, check=True).stdout)
    print(f"pool {args.rows:,} x {args.dim}, k={args.k}, {n_train:,} training points, budget {args.budget:,}")
    print(f"faiss train + assign     : {t_faiss:7.1f}s  (train {t_train:.1f}s)")
    print(f"kmeans-sensitivity       : {res['wall_s']:7.1f}s  x{res['wall_s'] / t_faiss:.2f} of faiss   "
          f"peak RSS {res['peak_rss_mb']:.0f} MB  (k={res['k']}, {res['sample_rows']:,} sample rows, {res['seconds']})")
    if not args.skip_sklearn:
        from sklearn.cluster import MiniBatchKMeans

        t0 = time.perf_counter()
        mb = MiniBatchKMeans(n_clusters=args.k, random_state=0, batch_size=4096, n_init=1, max_iter=20)
        mb.fit(x)
        for _, b in iter_float_blocks(store):
            mb.predict(b)
        t_sk = time.perf_counter() - t0
        print(f"sklearn MiniBatchKMeans  : {t_sk:7.1f}s  (selector is x{t_sk / res['wall_s']:.2f} faster)")


if __name__ == "__main__":
    main()
