"""Benchmark `dataselect dedup --method semantic` against a brute-force within-cluster pass, in the same run.

Writes the synthetic clustered store of bench_scale.py (default 1M x 1024 float16), then

* ``dataselect dedup STORE --eps 0.01 --eps-sweep 0.001,0.01,0.05,0.1`` as its own process (wall, peak
  RSS, the progress and ETA reached at ``--step-limit``): k-means (k = one cluster per 1,000 rows),
  similarity blocks within clusters, the maximum spanning forest;
* baseline: the reference code's computation on the same clusters (that run's clustering, read back):
  per cluster the full m x m float32 similarity matrix with torch, its upper triangle's column maxima,
  nothing kept; the clusters' rows held in memory. Timed in this process under the same limit.

    python scripts/bench_dedup.py --keep /work/bench [--rows 1000000] [--dim 1024] [--max-memory 4GB] [--step-limit 1800]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def brute_force(store_path: Path, limit_s: float) -> dict:
    """The reference computation within each cluster of the dedup run's clustering (see module docstring)."""
    import torch

    from dataselect.duplicates.semantic import _gather
    from dataselect.pool_index.kmeans import Clustering
    from dataselect.store import Store
    from dataselect.store.artefacts import Artefacts

    store = Store(store_path)
    art = Artefacts(store).find("clustering")[0]
    cl = Clustering.load(art, store)
    order = np.argsort(cl.labels, kind="stable")
    t0 = time.perf_counter()
    x = _gather(store, order)
    t_read = time.perf_counter() - t0
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(cl.labels[order])) + 1, [len(order)]])
    done = 0
    for s, e in zip(bounds[:-1], bounds[1:], strict=True):
        xc = torch.from_numpy(x[s:e]).float()
        torch.triu(xc @ xc.T, diagonal=1).max(0)
        done += e - s
        if time.perf_counter() - t0 > limit_s:
            break
    wall = time.perf_counter() - t0
    return {"wall_s": round(wall, 1), "read_s": round(t_read, 1), "rows_done": int(done),
            "eta_s": round(wall * len(order) / max(done, 1), 1), "k": int(cl.k),
            "largest_cluster": int(np.diff(bounds).max())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--keep", type=Path, required=True, help="folder for the store (reused when present)")
    ap.add_argument("--max-memory", default=None)
    ap.add_argument("--step-limit", type=float, default=1800)
    ap.add_argument("--workers", type=int, default=2, help="store writer processes")
    args = ap.parse_args()
    from bench_scale import _setup, block, run_step
    from dataselect.store.synthetic import write_store

    args.keep.mkdir(parents=True, exist_ok=True)
    pool = args.keep / f"scale_{args.rows}x{args.dim}"
    _setup(args.dim)
    if not (pool / "manifest.json").exists():
        t0 = time.perf_counter()
        write_store(pool, block, args.rows, args.dim, workers=args.workers, progress=True)
        print(f"wrote {args.rows:,} x {args.dim} store in {time.perf_counter() - t0:.0f}s", flush=True)
    for folder in (pool / "artefacts").glob("*"):  # cluster and compare afresh
        shutil.rmtree(folder)
    cmd = ["dedup", str(pool), "--eps", "0.01", "--eps-sweep", "0.001,0.01,0.05,0.1"]
    if args.max_memory:
        cmd += ["--max-memory", args.max_memory]
    res = run_step(cmd, args.step_limit, args.keep / "log_dedup.txt")
    log = (args.keep / "log_dedup.txt").read_text(errors="replace")
    curve = [ln.strip() for ln in log.splitlines() if ln.strip().startswith(("eps ", "e.g."))]
    print(f"pool {args.rows:,} x {args.dim}, max memory {args.max_memory or 'default'}")
    state = "TIME LIMIT" if res["timed_out"] else f"exit {res['exit']}"
    print(f"dataselect dedup semantic : {res['wall_s']:8.1f}s  peak RSS {res['peak_rss_gib']:.2f} GiB  [{state}]")
    if res["timed_out"] or res["exit"]:
        print(f"   reached: {res['last_progress'] or res['last_line']}")
        return
    arts = sorted((pool / "artefacts").glob("semdedup-*"))
    info = json.loads((arts[0] / "artefact.json").read_text())["info"]
    print(f"   clustering {info['seconds']['cluster']:.1f}s, pairs + forest {info['seconds']['pairs']:.1f}s, "
          f"k={info['k_effective']}, forest edges {info['forest_edges']:,}")
    for ln in curve:
        print(f"   {ln}")
    from dataselect.resources import available_memory

    if args.rows * args.dim * 2 > available_memory() // 2:
        print("brute force within clusters: skipped (the reference holds the whole pool in memory: "
              f"{args.rows * args.dim * 2 / 2**30:.0f} GiB)")
        return
    base = brute_force(pool, args.step_limit)
    print(f"brute force within clusters: {base['wall_s']:8.1f}s  (read {base['read_s']:.1f}s; "
          f"{base['rows_done']:,} rows; ETA {base['eta_s']:.0f}s; largest cluster {base['largest_cluster']:,})")
    print(f"pairs pass vs brute force : x{base['eta_s'] / info['seconds']['pairs']:.2f} "
          "(the dedup pass also finds every pair >= 0.9 and the forest, the baseline only the maxima)")


if __name__ == "__main__":
    main()
