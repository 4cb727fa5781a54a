"""Cost of checksum verification on read: an rds+ scoring pass with and without it, same shards, same run.

Makes two views of one store whose shard files are hard links to the same bytes: ``checked`` (the
manifest records per-column xxh3, so every shard's embedding column is verified as it is streamed)
and ``unchecked`` (no digests recorded). Runs a full rds+ pass (7 tasks x 100 queries) over each
in its own process, alternating, ``--repeats`` times, and prints the ratio. A store larger than RAM
is read from disk on every pass, as in real use.

    python scripts/bench_verify.py STORE QUERY_STORE [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

CHILD = r"""
import json, sys, time
from dataselect.pool_index.similarity import score_tasks
from dataselect.store import Store
from dataselect.store.queries import query_matrix
pool, q = Store(sys.argv[1]), Store(sys.argv[2])
t0 = time.perf_counter()
Q, starts, _ = query_matrix(pool, [q])
score_tasks(pool, Q, starts)
print(json.dumps({"score_s": time.perf_counter() - t0}))
"""


def view(store: Path, out: Path, with_digests: bool) -> Path:
    from dataselect.store.writer import column_xxh3

    out.mkdir(exist_ok=True)
    man = json.loads((store / "manifest.json").read_text())
    for s in man["shards"]:
        link = out / s["file"]
        if not link.exists():
            os.link(store / s["file"], link)
        if with_digests and "xxh3_columns" not in s:
            s["xxh3_columns"] = column_xxh3(link)
        if not with_digests:
            s.pop("xxh3_columns", None)
    (out / "manifest.json").write_text(json.dumps(man))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("store", type=Path)
    ap.add_argument("queries", type=Path)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    t0 = time.perf_counter()
    checked = view(args.store, args.store.parent / f"{args.store.name}_checked", True)
    unchecked = view(args.store, args.store.parent / f"{args.store.name}_unchecked", False)
    print(f"views ready in {time.perf_counter() - t0:.0f}s (digests computed once where missing)", flush=True)
    times: dict[str, list[float]] = {"unchecked": [], "checked": []}
    for _ in range(args.repeats):
        for name, path in (("unchecked", unchecked), ("checked", checked)):
            res = subprocess.run([sys.executable, "-c", CHILD, str(path), str(args.queries)], capture_output=True,
                                 text=True, check=True)
            times[name].append(json.loads(res.stdout)["score_s"])
            print(f"{name:10s} rds+ scoring pass {times[name][-1]:7.1f}s", flush=True)
    a, b = min(times["unchecked"]), min(times["checked"])
    print(f"verification cost: {b - a:+.1f}s on a {a:.1f}s pass = {100 * (b - a) / a:+.1f}% (best of {args.repeats})")


if __name__ == "__main__":
    main()
