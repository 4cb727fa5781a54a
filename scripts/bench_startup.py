"""Start-up cost of the command line: `dataselect --help` and `run --method random` on the demo store.

Compares, in the same run, against a bare `python -c pass` and `python -c "import torch"` (what every
command paid when selectors imported torch, FAISS and scikit-learn up front). Medians of N runs.

    python scripts/bench_startup.py [--store demo-out/pool_store] [--runs 7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def median_time(cmd: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", default="demo-out/pool_store", help="a pool store (make demo writes this one)")
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    if not (Path(args.store) / "manifest.json").is_file():
        sys.exit(f"{args.store}: no store; run `make demo` first or pass --store")
    exe = str(Path(sys.executable).with_name("dataselect"))
    with tempfile.TemporaryDirectory() as tmp:
        rows = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "python -c 'import torch'": [sys.executable, "-c", "import torch"],
            "dataselect --help": [exe, "--help"],
            "dataselect methods": [exe, "methods"],
            "dataselect run --method random": [exe, "run", "--store", args.store, "--method", "random", "--budget",
                                               "100", "--out", f"{tmp}/sel", "--overwrite", "-q"],
        }
        base = median_time(rows["python -c 'import torch'"], args.runs)
        print(f"{'command':<34s} {'median s':>9s} {'x import torch':>15s}")
        for name, cmd in rows.items():
            t = median_time(cmd, args.runs)
            print(f"{name:<34s} {t:9.3f} {t / base:15.2f}")


if __name__ == "__main__":
    main()
