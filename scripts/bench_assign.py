"""Nearest-centroid assignment at large k on the CPU: exact FAISS vs HNSW and IVF over the centroids.

Centroids are k rows of a clustered synthetic pool (as k-means centroids sit in the data); queries
are other rows. Reports, in the same run: exact (IndexFlatL2) time, HNSW build + search time for
several efSearch values, the speed-up, and accuracy = share of rows given their exact nearest
centroid (plus the mean relative excess of the squared distance where it differs).

    python scripts/bench_assign.py [--k 20000] [--dim 1024] [--rows 50000] [--ef 32,64,128] [--nprobe 8,16,32]
                                   [--modes 512] [--zipf 0]

``--zipf S`` draws rows from the modes with weights 1 / rank^S (0: evenly; bench_scale's store is
S = 0.8 over 4,096 modes), so that many centroids crowd a few dense regions. For IVF it also prints
the centroids a row is compared with (measured on 4,096 rows, ``ivf_scanned``), against the
``nprobe k / nlist`` of evenly filled cells, each cost model's prediction of build + search against
exact search, and what one IVF distance cost in exact ones (the model's ``IVF_PRODUCT_COST``).

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
    ap.add_argument("--modes", type=int, default=512)
    ap.add_argument("--zipf", type=float, default=0.0)
    args = ap.parse_args()
    from dataselect.pool_index.search import IVF_BUILD_PASSES, IVF_PRODUCT_COST, CentroidSearch, ivf_scanned, probe_rows

    rng = np.random.default_rng(0)
    modes = rng.standard_normal((args.modes, args.dim), dtype=np.float32)
    weights = 1.0 / np.arange(1, args.modes + 1) ** args.zipf
    pick = rng.choice(args.modes, args.k + args.rows, p=weights / weights.sum())
    x = modes[pick] + rng.standard_normal((args.k + args.rows, args.dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    cent, q = torch.from_numpy(x[:args.k]), torch.from_numpy(x[args.k:])
    t0 = time.perf_counter()
    exact, d_exact = CentroidSearch(cent, "flat")(q)
    t_exact = time.perf_counter() - t0
    print(f"k={args.k:,} centroids x {args.dim} dims, {args.rows:,} rows, {args.modes} modes, zipf {args.zipf}")
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
        cells = ""
        if kind == "ivf":
            nlist, nprobe = search.index.nlist, search.index.nprobe
            scanned, even = ivf_scanned(search.index, probe_rows(q).numpy()), nprobe * args.k / nlist
            rate = args.rows * args.k / t_exact  # exact products a second
            cost = t_search * rate / (args.rows * (nlist + scanned))  # one IVF distance, in exact products

            def model(s: float, nlist: int = nlist) -> float:  # exact / (build + search), as search.py's cost model predicts it
                return args.rows * args.k / (IVF_PRODUCT_COST * args.rows * (nlist + s)
                                             + IVF_BUILD_PASSES * args.k * nlist)

            cells = (f"\n    nlist {nlist}: scanned {scanned:,.0f} centroids a row (even cells: {even:,.0f}, "
                     f"x{scanned / even:.1f}); one IVF distance = {cost:.1f} exact; model x{model(scanned):.2f} "
                     f"with the measured scan, x{model(even):.2f} with even cells")
        print(f"{label}: build {t_build:6.2f}s  search {t_search:6.2f}s  {args.rows / t_search:9,.0f} rows/s  "
              f"x{t_exact / t_search:5.1f} faster (search), x{t_exact / (t_build + t_search):5.1f} (build + search), "
              f"exact nearest for {same:.2%} (others {excess:.2%} farther){cells}")

if __name__ == "__main__":
    main()
