"""Text side at the mission's size: the pool validation pass and `export`, in rows/s.

Writes a synthetic Tulu-like JSONL pool (multi-turn `messages`, ids, sources; ~1.3 KB per row), then
times, each with a time limit (rows reached, rate and ETA are reported when it is hit):

* validation: `PoolReader.rows()` over the whole pool, the pass `embed` makes before writing;
* export: `dataselect export` of a selection of `--selected` random rows (a synthetic store and
  selection over the same pool), with the id check only and with every record's hash checked.

The baseline, in the same run: reading the file's lines and `json.loads` alone (the least any
validator must do). Ratios are printed against it.

    python scripts/bench_text.py --rows 5800000 --selected 2500000 --keep /tmp/btext [--step-limit 900]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sys
import time
from pathlib import Path

import numpy as np

WORDS = ("the of and to in is you that it he was for on are as with his they at be this have from or one had by "
         "word but not what all were we when your can said there use an each which she do how their if will up "
         "other about out many then them these so some her would make like him into time has look two more write "
         "go see number no way could people my than first water been call who oil its now find long down day did").split()


def write_pool(path: Path, n: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    t0 = time.perf_counter()
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            turns = []
            for _ in range(rng.choice((1, 1, 1, 2, 3))):
                turns.append({"role": "user", "content": " ".join(rng.choices(WORDS, k=rng.randint(10, 60)))})
                turns.append({"role": "assistant", "content": " ".join(rng.choices(WORDS, k=rng.randint(30, 200)))})
            fh.write(json.dumps({"id": f"tulu-{i}", "source": f"src{i % 17}", "messages": turns}) + "\n")
            if i % 500_000 == 0 and i:
                print(f"  wrote {i:,} rows ({i / (time.perf_counter() - t0):,.0f} rows/s)", file=sys.stderr)


def selected_hashes(pool: Path, rows: np.ndarray) -> np.ndarray:
    """What embed would have stored as record_hash for ``rows`` (one pass over the pool)."""
    import orjson

    from dataselect.pool.identity import record_hash

    where = {int(r): i for i, r in enumerate(rows)}
    out = np.zeros(len(rows), dtype=np.uint64)
    with open(pool, "rb") as fh:
        for i, line in enumerate(fh):
            j = where.get(i)
            if j is not None:
                out[j] = record_hash(orjson.loads(line))
    return out


def timed(label: str, it, total: int, limit: float) -> tuple[int, float, bool]:
    t0 = time.perf_counter()
    n = 0
    for _ in it:
        n += 1
        if n % 100_000 == 0 and time.perf_counter() - t0 > limit:
            dt = time.perf_counter() - t0
            print(f"{label}: stopped at the {limit:.0f} s limit: {n:,} of {total:,} rows, {n / dt:,.0f} rows/s, "
                  f"ETA {(total - n) / (n / dt):,.0f} s")
            return n, dt, False
    return n, time.perf_counter() - t0, True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=5_800_000)
    ap.add_argument("--selected", type=int, default=2_500_000)
    ap.add_argument("--keep", type=Path, required=True)
    ap.add_argument("--step-limit", type=float, default=900)
    args = ap.parse_args()
    from dataselect.pool import PoolReader

    args.keep.mkdir(parents=True, exist_ok=True)
    pool = args.keep / f"tulu_like_{args.rows}.jsonl"
    if not pool.exists():
        write_pool(pool, args.rows)
    size = pool.stat().st_size
    print(f"pool {pool} : {args.rows:,} rows, {size / 2**30:.2f} GiB")

    def baseline():
        with open(pool, "rb") as fh:
            for line in fh:
                yield json.loads(line)

    n, dt, _ = timed("baseline", baseline(), args.rows, args.step_limit)
    base = n / dt
    print(f"baseline (lines + json.loads) : {n:,} rows in {dt:.1f} s = {base:,.0f} rows/s")
    n, dt, done = timed("validation", PoolReader(pool).rows(), args.rows, args.step_limit)
    print(f"validation (PoolReader.rows)  : {n:,} rows in {dt:.1f} s = {n / dt:,.0f} rows/s  "
          f"x{n / dt / base:.2f} of baseline{'' if done else ' (cut at the limit)'}")

    import pyarrow as pa

    from dataselect.exporter import export_table
    from dataselect.selection_run import compute_selection  # noqa: F401  (same modules as the CLI)

    rng = np.random.default_rng(0)
    rows = np.sort(rng.choice(args.rows, size=args.selected, replace=False))
    rng.shuffle(rows)
    from dataselect.pool import pool_fingerprint

    meta = {"method": "random", "pool_store": {"pool_fingerprint": pool_fingerprint(pool), "pool_name": pool.name}}
    table = pa.table({"row": pa.array(rows, pa.int64()), "id": pa.array([f"tulu-{r}" for r in rows.tolist()]),
                      "rank": pa.array(np.arange(len(rows))), "score": pa.array(np.zeros(len(rows), np.float32)),
                      "task": pa.array([None] * len(rows), pa.string()),
                      "weight": pa.array(np.ones(len(rows), np.float32))})
    out = args.keep / "exported.jsonl"
    t0 = time.perf_counter()
    hashes = selected_hashes(pool, rows)
    print(f"(setup, untimed: record hashes of the selected rows in {time.perf_counter() - t0:.1f} s)")
    for label, tab in (("export, id check only (stores without record_hash)", table),
                       ("export, record_hash checked per record", table.append_column(
                           "record_hash", pa.array(hashes, pa.uint64())))):
        if out.exists():
            out.unlink()
        t0 = time.perf_counter()
        export_table(tab, meta, pool, out)
        dt = time.perf_counter() - t0
        print(f"{label}: {args.selected:,} rows in {dt:.1f} s = {args.selected / dt:,.0f} selected rows/s, "
              f"{args.rows / dt:,.0f} pool rows/s  x{args.rows / dt / base:.2f} of baseline (pool rows)")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")
    os.environ.get("KEEP") or out.unlink()


if __name__ == "__main__":
    main()
