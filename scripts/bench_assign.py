"""Nearest-centroid assignment at large k on the CPU: exact FAISS vs HNSW and IVF over the centroids.

Centroids are k rows of a clustered synthetic pool (as k-means centroids sit in the data); queries
are other rows. Reports, in the same run: exact (IndexFlatL2) time, HNSW build + search time for
several efSearch values, the speed-up, and accuracy = share of rows given their exact nearest
centroid (plus the mean relative excess of the squared distance where it differs).

    python scripts/bench_assign.py [--k 20000] [--dim 1024] [--rows 50000] [--ef 32,64,128] [--nprobe 8,16,32]

Build times count: k-means rebuilds the index for every Lloyd update, so build + search is what an
update pays against the exact search.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--k", type=int, default=20000)
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--rows", type=int, default=50000)
    ap.add_argument("--ef", default="32,64,128")
    ap.add_argument("--nprobe", default="8,16,32")
    args = ap.parse_args()
    from dataselect.pool_index.search import CentroidSearch

    rng = np.random.default_rng(0)
    modes = rng.standard_normal((512, args.dim), dtype=np.float32)
    x = modes[rng.integers(0, 512, args.k + args.rows)] + rng.standard_normal((args.k + args.rows, args.dim),
                                                                                 dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    cent, q = torch.from_numpy(x[:args.k]), torch.from_numpy(x[args.k:])
    t0 = time.perf_counter()
    exact, d_exact = CentroidSearch(cent, "flat")(q)
    t_exact = time.perf_counter() - t0
    print(f"k={args.k:,} centroids x {args.dim} dims, {args.rows:,} rows")
    print(f"exact (FAISS IndexFlatL2)  : {t_exact:7.2f}s  {args.rows / t_exact:9,.0f} rows/s")
    runs = [(f"HNSW efSearch={ef:<4d}        ", "hnsw", {"ef_search": ef}) for ef in map(int, filter(None, args.ef.split(",")))]
    runs += [(f"IVF nprobe={p:<3d}            ", "ivf", {"nprobe": p}) for p in map(int, filter(None, args.nprobe.split(",")))]
    for label, kind, kw in runs:
        t0 = time.perf_counter()
        search = CentroidSearch(cent, kind, **kw)
        t_build = time.perf_counter() - t0
        lab, d2 = search(q)
        t_search = time.perf_counter() - t0 - t_build
        same = float((lab == exact).float().mean())
        excess = float(((d2 - d_exact) / d_exact.clamp_min(1e-12))[lab != exact].mean()) if same < 1 else 0.0
        cells = f" (nlist {search.index.nlist})" if kind == "ivf" else ""
        print(f"{label}: build {t_build:6.2f}s  search {t_search:6.2f}s  {args.rows / t_search:9,.0f} rows/s  "
              f"x{t_exact / t_search:5.1f} faster (search), x{t_exact / (t_build + t_search):5.1f} (build + search), "
              f"exact nearest for {same:.2%} (others {excess:.2%} farther){cells}")

if __name__ == "__main__":
    main()
