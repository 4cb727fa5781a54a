"""Benchmark RDS+ selection on a synthetic store: GEMM efficiency, wall time, peak memory.

Writes a store of N x D float16 unit vectors (default 1M x 1024) and T tasks x Q queries (7 x 100),
then, in a fresh subprocess per ``--scoring`` (so its peak RSS is its own), runs the rds+ selector
end to end: streaming scoring plus round-robin. ``exact`` and ``screened`` must select the same rows
and scores; ``float32`` (reproducible float32 products, not exact ones) reports the share of its rows
that ``exact`` (or ``screened``) selected too.
The baseline is a plain numpy float32 GEMM of the same total shape (N x D times D x T*Q) from
memory, measured in the same run; the ratio is the baseline's time over the selection's.

    python scripts/bench_select.py [--rows 1000000] [--dim 1024] [--budget 100k] [--scorings float32,screened,exact]
        [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CHILD = r"""
import hashlib, json, resource, sys, time
from dataselect.budget import parse_budget
from dataselect.selectors import build_selector
from dataselect.store import Store
pool, q = Store(sys.argv[1]), Store(sys.argv[2])
sel = build_selector("rds+", {"scoring": sys.argv[4]})
t0 = time.perf_counter(); out = sel.select(pool, parse_budget(sys.argv[3], pool.n_rows), None, [q])
wall = time.perf_counter() - t0
digest = hashlib.sha256(out.rows.tobytes() + out.scores.tobytes() + "|".join(map(str, out.tasks)).encode()).hexdigest()
open(sys.argv[5], "wb").write(out.rows.tobytes())
print(json.dumps({"wall_s": wall, "picked": len(out), "digest": digest, "info": out.info,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def gemm_baseline(n: int, dim: int, nq: int, piece: int = 65536) -> float:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((piece, dim), dtype=np.float32)
    b = rng.standard_normal((nq, dim), dtype=np.float32)
    a @ b.T  # warm-up
    done, t0 = 0, time.perf_counter()
    while done < n:
        m = min(piece, n - done)
        a[:m] @ b.T
        done += m
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--tasks", type=int, default=7)
    ap.add_argument("--queries", type=int, default=100, help="queries per task")
    ap.add_argument("--budget", default="100k")
    ap.add_argument("--scorings", default="float32,screened,exact", help="rds+ --scoring values to time, each in its own process")
    ap.add_argument("--keep", type=Path, help="keep/reuse the synthetic stores in this folder")
    args = ap.parse_args()
    from dataselect.store.synthetic import store_from_array, unit_rows, write_store

    root = args.keep or Path(tempfile.mkdtemp(prefix="bench_select_"))
    pool_dir, q_dir = root / f"pool_{args.rows}x{args.dim}", root / f"q_{args.tasks}x{args.queries}x{args.dim}"
    rng = np.random.default_rng(0)
    if not (pool_dir / "manifest.json").exists():
        t0 = time.perf_counter()
        write_store(pool_dir, lambda lo, hi: unit_rows(rng, hi - lo, args.dim), args.rows, args.dim)
        print(f"wrote {args.rows:,} x {args.dim} store in {time.perf_counter() - t0:.1f}s")
    if not (q_dir / "manifest.json").exists():
        nq = args.tasks * args.queries
        store_from_array(q_dir, unit_rows(rng, nq, args.dim), kind="queries",
                         tasks=[f"task{i // args.queries}" for i in range(nq)])
    nq = args.tasks * args.queries
    flops = 2.0 * args.rows * args.dim * nq
    t_base = gemm_baseline(args.rows, args.dim, nq)
    res = {}
    for scoring in args.scorings.split(","):
        res[scoring] = json.loads(subprocess.run([sys.executable, "-c", CHILD, str(pool_dir), str(q_dir), args.budget,
                                                  scoring, str(root / f"rows_{scoring}.bin")],
                                                 capture_output=True, text=True, check=True).stdout)
    t_base2 = gemm_baseline(args.rows, args.dim, nq)  # again after, to bracket machine noise
    base = min(t_base, t_base2)
    print(f"pool {args.rows:,} x {args.dim} float16 ({args.rows * args.dim * 2 / 2**30:.2f} GiB), "
          f"{args.tasks} tasks x {args.queries} queries, budget {args.budget}")
    print(f"numpy fp32 GEMM baseline : {base:7.2f}s  {flops / base / 1e9:6.1f} GFLOP/s (in memory; before: "
          f"{t_base:.2f}s, after: {t_base2:.2f}s)")
    for scoring, r in res.items():
        print(f"rds+ --scoring {scoring:9s}: {r['wall_s']:7.2f}s end to end  x{base / r['wall_s']:.2f} of the GEMM  "
              f"peak RSS {r['peak_rss_mb']:.0f} MB  {r['picked']:,} rows  {json.dumps(r['info'])}")
    exactly = [s for s in res if s != "float32"]
    if len({res[s]["digest"] for s in exactly}) > 1:
        raise SystemExit("exact and screened selected different rows or scores")
    if len(exactly) > 1:
        print("exact and screened selected the same rows with the same scores")
    if "float32" in res and exactly:
        rows = {s: np.fromfile(root / f"rows_{s}.bin", np.int64) for s in ("float32", exactly[0])}
        print(f"float32 rows also selected by {exactly[0]}: "
              f"{len(np.intersect1d(*rows.values())) / max(len(rows['float32']), 1):.6f}")


if __name__ == "__main__":
    main()
