"""Every selector at the mission's scale: wall time and peak RSS, against a GEMM baseline from the same run.

Writes a synthetic pool store (default 5,800,000 x 4096 float16, ~45 GiB; clustered around 4,096
Zipf-sized modes, with a per-mode ``loss_response`` column so kmeans-sensitivity runs with its
defaults), 7 tasks x 100 queries, then runs ``dataselect run --method M --budget B`` for each method
as its own process. Each step has a time limit: a step that reaches it is interrupted and reported
with what it reached (last progress line: rate and ETA) and its peak RSS (VmHWM, polled).

The baseline is a numpy float32 GEMM of rds+'s shape (pool x dim times dim x 700), timed on a slice
and scaled to the pool; rds+'s throughput is reported as a ratio of it.

    python scripts/bench_scale.py --keep /work/bench [--rows 5800000] [--dim 4096] [--budget 2.5M]
        [--step-limit 1800] [--methods random,rds+,kmeans-sensitivity,hierarchical-kmeans]
        [--max-memory 4GB] [--device auto] [--workers 2] [--engines local,ray] [--ks-extra ...] [--hk-extra ...]
        [--rds-scorings float32,screened,exact]

``--engines local,ray`` runs each method once per engine, in the same run (the clustering cache beside
the store is cleared before every step, so no step reuses another's clustering); Ray steps start a
local Ray with one worker per CPU and report the peak RSS of the driver and of the largest worker.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

MODES = 4096
_GEN: dict = {}


def _setup(dim: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    _GEN["centres"] = rng.standard_normal((MODES, dim), dtype=np.float32)
    _GEN["bank"] = 0.45 * rng.standard_normal((8192, dim), dtype=np.float32)
    sizes = 1.0 / np.arange(1, MODES + 1) ** 0.8  # Zipf-like mode sizes
    _GEN["cdf"] = np.cumsum(sizes / sizes.sum())
    _GEN["mode_loss"] = rng.gamma(4.0, 0.3, MODES).astype(np.float32)


def _modes(lo: int, hi: int) -> np.ndarray:
    u = np.random.default_rng(lo).random(hi - lo)
    return np.minimum(np.searchsorted(_GEN["cdf"], u), MODES - 1)


def block(lo: int, hi: int) -> np.ndarray:
    """Rows lo..hi: a mode centre plus two noise vectors from a shared bank (cheap, deterministic in lo)."""
    import torch

    rng = np.random.default_rng(lo + 1)
    bank = _GEN["bank"]
    out = np.empty((hi - lo, bank.shape[1]), dtype=np.float16)
    mode = _modes(lo, hi)
    for a in range(0, hi - lo, 4096):
        b = min(a + 4096, hi - lo)
        j1, j2 = rng.integers(0, len(bank), (2, b - a))
        x = torch.from_numpy(_GEN["centres"][mode[a:b]])
        x += torch.from_numpy(bank[j1])
        x += 0.5 * torch.from_numpy(bank[j2])
        x /= torch.linalg.vector_norm(x, dim=1, keepdim=True)
        out[a:b] = x.half().numpy()
    return out


def losses(lo: int, hi: int) -> np.ndarray:
    noise = np.random.default_rng(lo + 2).gamma(2.0, 0.05, hi - lo).astype(np.float32)
    return _GEN["mode_loss"][_modes(lo, hi)] + noise


def gemm_seconds(rows: int, dim: int, nq: int, limit_s: float = 60.0) -> float:
    """Seconds for a float32 (rows x dim) @ (dim x nq) GEMM, timed on 65,536-row pieces and scaled."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((65536, dim), dtype=np.float32)
    q = rng.standard_normal((nq, dim), dtype=np.float32)
    a @ q.T
    done, t0 = 0, time.perf_counter()
    while done < rows and time.perf_counter() - t0 < limit_s:
        a @ q.T
        done += 65536
    return (time.perf_counter() - t0) * rows / done


def kernel_gemm_seconds(rows: int, dim: int, nq: int, limit_s: float = 60.0) -> tuple[str, float]:
    """(name, seconds) for the same GEMM through the float32 multiply ``--scoring float32`` uses
    (oneDNN's linear where torch has it), in its 2048-row tiles, timed and scaled as :func:`gemm_seconds`."""
    import torch

    from dataselect.pool_index.tiles import TILE_ROWS, float32_kernel

    name, fn = float32_kernel()
    rng = np.random.default_rng(0)
    a = torch.from_numpy(rng.standard_normal((TILE_ROWS, dim), dtype=np.float32))
    q = torch.from_numpy(rng.standard_normal((nq, dim), dtype=np.float32))
    fn(a, q)
    done, t0 = 0, time.perf_counter()
    while done < rows and time.perf_counter() - t0 < limit_s:
        fn(a, q)
        done += TILE_ROWS
    return name, (time.perf_counter() - t0) * rows / done


def last_progress(text: str) -> str:
    """The last state of every progress bar in ``text`` (outer ones carry the overall ETA)."""
    last: dict[str, str] = {}
    for part in re.split(r"[\r\n]", text.replace("\x1b[A", "")):
        part = part.strip()
        if "%|" in part:
            last[part.split(":")[0]] = part
    return " | ".join(last.values())


def _worker_peaks() -> dict[int, int]:
    """VmHWM of every Ray shard-task worker process alive now (pid -> bytes)."""
    out = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if b"_ShardWorker" not in (proc / "cmdline").read_bytes():
                continue
            hwm = [ln for ln in (proc / "status").read_text().splitlines() if ln.startswith("VmHWM")]
            out[int(proc.name)] = int(hwm[0].split()[1]) * 1024 if hwm else 0
        except OSError:
            continue
    return out


def run_step(args: list[str], limit_s: float, log: Path, poll=None) -> dict:
    """Run ``dataselect ARGS`` as its own process; poll its peak RSS (and Ray workers'); interrupt it at the limit."""
    code = "import sys; from dataselect.cli import main; main(sys.argv[1:])"
    return run_process([sys.executable, "-c", code, *args], limit_s, log, poll)


def run_process(cmd: list[str], limit_s: float, log: Path, poll=None, grace_s: float = 60) -> dict:
    """Run ``cmd`` with stderr to ``log``; poll its peak RSS (and Ray workers'); SIGINT it at the limit.

    ``poll(pid)``, if given, is called every half second (e.g. to read the GPU memory the process holds).
    """
    t0 = time.perf_counter()
    with open(log, "w") as err:
        proc = subprocess.Popen(cmd, stderr=err, stdout=subprocess.DEVNULL)
        peak, timed_out, workers = 0, False, {}
        while proc.poll() is None:
            if poll is not None:
                poll(proc.pid)
            for pid, hwm in _worker_peaks().items():
                workers[pid] = max(workers.get(pid, 0), hwm)
            try:
                with open(f"/proc/{proc.pid}/status") as fh:
                    hwm = [ln for ln in fh if ln.startswith("VmHWM")]
                peak = max(peak, int(hwm[0].split()[1]) * 1024) if hwm else peak
            except OSError:
                pass
            if time.perf_counter() - t0 > limit_s:
                timed_out = True
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(grace_s)
                except subprocess.TimeoutExpired:
                    proc.kill()
                break
            time.sleep(0.5)
        proc.wait()
    text = log.read_text(errors="replace")
    return {"wall_s": round(time.perf_counter() - t0, 1), "peak_rss_gib": round(peak / 2**30, 2),
            "ray_workers": len(workers), "worker_peak_rss_gib": round(max(workers.values(), default=0) / 2**30, 2),
            "exit": proc.returncode, "timed_out": timed_out, "last_progress": last_progress(text),
            "last_line": text.strip().splitlines()[-1][-300:] if text.strip() else ""}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=5_800_000)
    ap.add_argument("--dim", type=int, default=4096)
    ap.add_argument("--budget", default="2.5M")
    ap.add_argument("--methods", default="random,rds+,kmeans-sensitivity,hierarchical-kmeans")
    ap.add_argument("--step-limit", type=float, default=1800, help="seconds per selector run")
    ap.add_argument("--max-memory", default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="store writer processes")
    ap.add_argument("--extra", default="", help="extra run flags for every clustering method, e.g. '--assign hnsw'")
    ap.add_argument("--keep", type=Path, required=True, help="folder for the stores (reused when present)")
    ap.add_argument("--ks-extra", default=None, help="run flags for kmeans-sensitivity only (default: --extra)")
    ap.add_argument("--hk-extra", default=None, help="run flags for hierarchical-kmeans only (default: --extra)")
    ap.add_argument("--engines", default="local", help="local, ray or local,ray (each method once per engine)")
    ap.add_argument("--rds-scorings", default="float32", help="rds+ --scoring values, each its own step "
                    "(exact,screened: both, and whether they select the same rows and scores)")
    ap.add_argument("--reduce-compare", default="", metavar="SPEC",
                    help="also run each clustering method with --reduce SPEC (e.g. pca:128), the projection included")
    args = ap.parse_args()
    from dataselect.store.synthetic import store_from_array, unit_rows, write_store

    args.keep.mkdir(parents=True, exist_ok=True)
    pool = args.keep / f"scale_{args.rows}x{args.dim}"
    queries = args.keep / f"scale_q_7x100x{args.dim}"
    _setup(args.dim)
    if not (pool / "manifest.json").exists():
        t0 = time.perf_counter()
        write_store(pool, block, args.rows, args.dim, extra={"loss_response": losses}, workers=args.workers,
                    progress=True)
        wall = time.perf_counter() - t0
        gib = args.rows * args.dim * 2 / 2**30
        print(f"wrote {args.rows:,} x {args.dim} store ({gib:.1f} GiB) in {wall:.0f}s: {args.rows / wall:,.0f} rows/s, "
              f"{gib / wall * 1024:.0f} MiB/s", flush=True)
    if not (queries / "manifest.json").exists():
        store_from_array(queries, unit_rows(np.random.default_rng(1), 700, args.dim), kind="queries",
                         tasks=[f"task{i // 100}" for i in range(700)])
    base = gemm_seconds(args.rows, args.dim, 700)
    flops = 2.0 * args.rows * args.dim * 700
    print(f"numpy fp32 GEMM baseline (rds+ shape, {args.rows:,} x {args.dim} x 700): {base:.0f}s, "
          f"{flops / base / 1e9:.0f} GFLOP/s", flush=True)
    kernel, kbase = kernel_gemm_seconds(args.rows, args.dim, 700)
    print(f"the same GEMM through rds+'s float32 kernel ({kernel}): {kbase:.0f}s, {flops / kbase / 1e9:.0f} GFLOP/s "
          f"(x{base / kbase:.2f} numpy's)", flush=True)
    results = {}
    import shutil

    clustering = ("kmeans-sensitivity", "hierarchical-kmeans")
    scorings = args.rds_scorings.split(",")
    steps = [(m, e, "", x) for m in args.methods.split(",") for e in args.engines.split(",")
             for x in (scorings if m == "rds+" else [""])]  # (method, engine, reduce, rds+ scoring)
    if args.reduce_compare:
        steps = [s for m in args.methods.split(",") for s in
                 [t for t in steps if t[0] == m] + ([(m, "local", args.reduce_compare, "")] if m in clustering else [])]
    for method, engine, reduce, scoring in steps:
        name = (method if engine == "local" else f"{method} [ray]") + (f" --reduce {reduce}" if reduce else "") \
            + (f" --scoring {scoring}" if scoring and len(scorings) > 1 else "")
        out = args.keep / f"sel_{method}_{engine}{'_' + reduce.replace(':', '') if reduce else ''}" \
            f"{'_' + scoring if scoring and len(scorings) > 1 else ''}"
        cmd = ["run", "--store", str(pool), "--method", method, "--budget", args.budget, "--out", str(out),
               "--overwrite", "--device", args.device, "--engine", engine]
        if args.max_memory:
            cmd += ["--max-memory", args.max_memory]
        if method == "rds+":
            cmd += ["--queries", str(queries), "--scoring", scoring]
        if method in ("kmeans-sensitivity", "hierarchical-kmeans"):
            shutil.rmtree(pool / "artefacts", ignore_errors=True)  # every step clusters afresh
            own = args.ks_extra if method == "kmeans-sensitivity" else args.hk_extra
            cmd += (args.extra if own is None else own).split() + (["--reduce", reduce] if reduce else [])
        res = run_step(cmd, args.step_limit, args.keep / f"log_{method}_{engine}.txt")
        if method == "rds+" and not res["timed_out"] and res["exit"] == 0:
            meta = json.loads((out / "selection.json").read_text())
            res["vs_gemm"] = round(base / meta["wall_s"], 2)
            res["vs_kernel_gemm"] = round(kbase / meta["wall_s"], 2)
        if engine == "ray" and f"{method}" in results and not res["exit"] and not results[method]["exit"]:
            res["vs_local"] = round(results[method]["wall_s"] / res["wall_s"], 2)
            a, b = (args.keep / f"sel_{method}_{e}" / "selection.arrow" for e in ("local", "ray"))
            res["same_selection"] = a.read_bytes() == b.read_bytes()
        if reduce and method in results and not res["exit"] and not results[method]["exit"]:
            res["vs_full"] = round(results[method]["wall_s"] / res["wall_s"], 2)
            sel = json.loads((out / "selection.json").read_text())
            res["reduce"] = sel["method_info"].get("reduce")
        if scoring and len(scorings) > 1 and scoring == scorings[-1] and not res["exit"]:
            outs = [args.keep / f"sel_{method}_{engine}_{x}" for x in scorings]
            if all((o / "selection.arrow").exists() for o in outs):
                from dataselect.selection import read_selection

                tables = [read_selection(o)[0].select(["row", "score", "task"]) for o in outs]
                res["same_as_other_scorings"] = all(t.equals(tables[0]) for t in tables)
        results[name] = res
        state = "TIME LIMIT" if res["timed_out"] else f"exit {res['exit']}"
        extra = (f"  x{res['vs_gemm']} of GEMM baseline (x{res['vs_kernel_gemm']} of the kernel's)"
                 if "vs_gemm" in res else "")
        if "same_as_other_scorings" in res:
            extra += f"  same rows and scores as the other scorings: {res['same_as_other_scorings']}"
        if "vs_full" in res:
            extra += (f"  x{res['vs_full']} faster than the full dimension (variance kept "
                      f"{res['reduce']['variance_kept']:.3f}, projection {res['reduce']['project_seconds']:.0f} s)")
        if "vs_local" in res:
            extra += (f"  x{res['vs_local']} of local, {res['ray_workers']} workers (peak RSS "
                      f"{res['worker_peak_rss_gib']:.2f} GiB each at most), same selection: {res['same_selection']}")
        print(f"{name:26s} {res['wall_s']:8.1f}s  peak RSS {res['peak_rss_gib']:.2f} GiB  [{state}]{extra}",
              flush=True)
        if res["timed_out"] or res["exit"]:
            print(f"{'':26s} reached: {res['last_progress'] or res['last_line']}", flush=True)
    (args.keep / "bench_scale.json").write_text(json.dumps({"baseline_gemm_s": base, "kernel_gemm_s": kbase, "results": results}, indent=2))


if __name__ == "__main__":
    main()
