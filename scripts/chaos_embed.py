"""Kill `dataselect embed` with SIGKILL at random moments, resume each time, and compare the result
with an uninterrupted run: every shard byte-identical, every pool row present exactly once.

    python scripts/chaos_embed.py [--kills 10] [--rows 20000] [--seed 0]

Prints e.g. ``kills survived: 10/10, rows lost: 0, rows duplicated: 0``. The test suite runs a
3-kill version (tests/test_reliability.py).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def embed_cmd(pool: Path, model: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "dataselect", "embed", str(pool), "--model", str(model), "--out", str(out),
            "--shard-rows", "100", "--batch-tokens", "2048", "-q"]


def store_rows(out: Path) -> list[int]:
    rows = []
    for shard in json.loads((out / "manifest.json").read_text())["shards"]:
        with pa.memory_map(str(out / shard["file"])) as mm:
            rows += pa.ipc.open_file(mm).read_all().column("row").to_pylist()
    return rows


def run_chaos(work: Path, kills: int = 10, rows: int = 20000, seed: int = 0, verbose: bool = True) -> dict:
    from conftest import make_records, write_jsonl
    from tinymodel import build_llama

    work.mkdir(parents=True, exist_ok=True)
    model = build_llama(work / "model")
    pool = write_jsonl(work / "pool.jsonl", make_records(rows, seed=seed))
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
    t0 = time.perf_counter()
    subprocess.run(embed_cmd(pool, model, work / "reference"), check=True, env=env, capture_output=True)
    full_time = time.perf_counter() - t0
    rng = random.Random(seed)
    survived = 0
    for i in range(kills):
        man = work / "chaos" / "manifest.json"
        before = man.stat().st_mtime_ns if man.exists() else 0
        proc = subprocess.Popen(embed_cmd(pool, model, work / "chaos"), env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        # kill at a random moment once this run has started writing (start-up is not what we test)
        while proc.poll() is None and not (man.exists() and man.stat().st_mtime_ns != before):
            time.sleep(0.01)
        delay = rng.uniform(0.0, 0.15) * full_time
        time.sleep(delay)
        killed = proc.poll() is None
        if killed:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        shards = len(json.loads(man.read_text())["shards"]) if man.exists() else 0
        if verbose:
            print(f"kill {i + 1}: {delay:5.2f}s into writing ({'killed' if killed else 'had finished'}), "
                  f"{shards} of {-(-rows // 100)} shards recorded")
        survived += 1
    done = subprocess.run(embed_cmd(pool, model, work / "chaos"), env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"resume failed: {done.stderr}")
    ref_man = json.loads((work / "reference" / "manifest.json").read_text())
    identical = all((work / "chaos" / s["file"]).read_bytes() == (work / "reference" / s["file"]).read_bytes()
                    for s in ref_man["shards"])
    got = store_rows(work / "chaos")
    expected = set(store_rows(work / "reference"))
    result = {"kills": kills, "survived": survived if identical else 0, "rows_lost": len(expected - set(got)),
              "rows_duplicated": len(got) - len(set(got)), "shards_identical": identical,
              "leftover_tmp": len(list((work / "chaos").glob(".tmp-*")))}
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        r = run_chaos(Path(tmp), args.kills, args.rows, args.seed)
    print(f"kills survived: {r['survived']}/{r['kills']}, rows lost: {r['rows_lost']}, "
          f"rows duplicated: {r['rows_duplicated']}, shards byte-identical: {r['shards_identical']}")


if __name__ == "__main__":
    main()
