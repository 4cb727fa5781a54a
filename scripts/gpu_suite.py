"""Every GPU path in one prepared run: ≤ 8 minutes on one H100/H200, each part under its own time limit.

Builds its own inputs on the machine it runs on (random-weight Llama models of real shapes, synthetic
stores on the local disk), runs each GPU path, checks it against the CPU path or a reference computed
in the same run, and writes ``gpu_suite.json`` and ``gpu_suite.md`` under ``--out`` (default ``$OUT``,
else ./gpu-suite-out). Parts, in order (each a child process, SIGINTed at its limit; what it had
measured by then is kept and the part is marked ``cut``):

=============  ===========================================================================================
embed-1b       Llama-3.2-1B shape, bf16, random weights: padded vs packed batching (tok/s, MFU against the
embed-8b       chip's dense bf16 peak, padding waste), packed == padded (cosine per row ≥ 0.99, as bf16
               allows), and what ``--with-loss`` costs. The 8B part is the Llama-3.1-8B shape.
kmeans         the k-means engine on 1M x 1024, k = 4,096: torch on CUDA (k-means++ and 20 Lloyd updates:
               rates) vs FAISS on the CPU from the same initial centroids for a few Lloyd updates
               (inertia within 1 %, time per update ratio).
store          a synthetic clustered store with a loss column, as large as time and disk allow (target
               2M x 4096 float16, 16 GiB), 700 queries over 7 tasks; the disk's read rate with the page
               cache dropped (posix_fadvise), measured in the same run.
rds            rds+ on that store on the GPU (wall, GB/s against the disk read rate, 5.8M extrapolated), and
               on a 200k-row slice on the GPU and the CPU: the same selection.
hierarchical   ``dataselect run --method hierarchical-kmeans`` with its defaults, budget 43 % (2.5M of 5.8M),
sensitivity    and kmeans-sensitivity at 1 % (the paper's regime; k = 0.2 x budget): wall, peak RSS, GPU
               memory peak (nvidia-smi), or the progress and ETA reached at the limit.
ray            Ray, 1 worker vs local, rds+ scoring of the many-shard slice: the fixed cost. Skipped when
               Ray is not installed (its wheel, 79 MB, does not fit the lent device's 64 MiB carry).
=============  ===========================================================================================

    python scripts/gpu_suite.py                       # on a GPU box: the full suite (≤ 8 minutes)
    python scripts/gpu_suite.py --parts kmeans,rds    # some parts (rds and the clustering parts need store)
    python scripts/gpu_suite.py --dry-run             # every part on the CPU at tiny sizes (tests run this)

On one's own GPU box: ``pip install -e .`` into an environment with a CUDA torch, then the first
command. ``--work`` puts the models and stores elsewhere (default: a temporary folder, removed after).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))

PARTS = ("embed-1b", "embed-8b", "kmeans", "store", "rds", "hierarchical", "sensitivity", "ray")
LIMITS = {"embed-1b": 60, "embed-8b": 110, "kmeans": 60, "store": 80, "rds": 45, "hierarchical": 60,
          "sensitivity": 45, "ray": 30}  # seconds on the GPU; 450 in all
FULL = {"embed_rows": {"embed-1b": 3000, "embed-8b": 1200}, "kmeans": (1_000_000, 1024, 4096, 3),
        "store": (2_000_000, 4096, 50_000), "slice": (200_000, 10_000), "queries": 700}
DRY = {"embed_rows": {"embed-1b": 24, "embed-8b": 24}, "kmeans": (4000, 32, 32, 3),
       "store": (4000, 64, 500), "slice": (2000, 250), "queries": 70}
TINY_SHAPE = (64, 2, 176, 4, 512)  # hidden, layers, MLP width, heads, vocab: the dry run's stand-in for both
MIN_COSINE = 0.99  # packed vs padded, per row, in bf16
HK_BUDGET, KS_BUDGET = "43%", "1%"


class Record(dict):
    """A part's results, rewritten to its JSON file at every assignment so a cut part keeps what it measured."""

    def __init__(self, path: Path):
        super().__init__()
        self.path = path

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self, indent=1, default=float))
        tmp.replace(self.path)


def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def r3(x: float) -> float:
    return round(float(x), 3)


# --------------------------------------------------------------------------------------------- parts

def part_embed(rec: Record, ctx: dict) -> None:
    import numpy as np
    import torch

    from bench_embed import SHAPES, batching_run, build_model, build_pool, flops_per_token, gpu_peak
    from dataselect.embedding.batching import padding_waste, token_budget_batches
    from dataselect.store import Store

    shape = ctx["part"].split("-")[1]
    hidden, layers, inter, heads, vocab = TINY_SHAPE if ctx["dry"] else SHAPES[shape]
    dev, dtype = ctx["device"], ("bfloat16" if ctx["gpu"] else "float32")
    work = ctx["work"] / ctx["part"]
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    rec["shape"] = {"hidden": hidden, "layers": layers, "mlp": inter, "heads": heads, "vocab": vocab, "dtype": dtype}
    t0 = time.perf_counter()
    model = str(build_model(work / "model", hidden, layers, inter, vocab, heads, device=dev,
                            dtype=torch.bfloat16 if ctx["gpu"] else None))
    rec["build_model_s"] = r3(time.perf_counter() - t0)
    rows = ctx["sizes"]["embed_rows"][ctx["part"]]
    pool, warm = build_pool(work / "pool.jsonl", rows), build_pool(work / "warm.jsonl", max(8, rows // 10), seed=1)
    name, peak = gpu_peak()
    rec["gpu"] = name
    walls = {}
    try:
        for b in ("padded", "packed"):
            batching_run(model, warm, work / f"warm-{b}", dev, dtype, b)  # kernels, caches, allocator
            wall, tokens, stage = batching_run(model, pool, work / f"emb-{b}", dev, dtype, b)
            walls[b] = wall
            lengths = Store(work / f"emb-{b}").column("n_tokens").astype(np.int64)
            ctx_len = float((lengths * (lengths + 1) / 2).sum() / lengths.sum())  # mean tokens attended
            fpt = flops_per_token(hidden, layers, inter, heads, ctx_len)
            out = {"tok_s": round(tokens / wall), "wall_s": r3(wall), "tokens": int(tokens),
                   "gflop_per_token": r3(fpt / 1e9), "mfu": r3(fpt * tokens / wall / peak) if peak else None}
            if b == "padded":
                out["padding_waste"] = r3(padding_waste(lengths, token_budget_batches(lengths, stage.batch_tokens)))
            rec[b] = out
        rec["packed_over_padded"] = r3(walls["padded"] / walls["packed"])
        a, b = (Store(work / f"emb-{x}") for x in ("padded", "packed"))
        cos = np.concatenate([(x["embedding"].astype(np.float32) * y["embedding"].astype(np.float32)).sum(1)
                              for x, y in zip(a.iter_blocks(("embedding",)), b.iter_blocks(("embedding",)), strict=True)])
        rec["packed_vs_padded"] = {"min_cosine": r3(cos.min()), "mean_cosine": round(float(cos.mean()), 5),
                                   "ok": bool(cos.min() >= MIN_COSINE)}
        loss_batching = "packed" if ctx["gpu"] else "padded"
        wall, _, _ = batching_run(model, pool, work / "emb-loss", dev, dtype, loss_batching, with_loss=True)
        rec["with_loss"] = {"batching": loss_batching, "wall_s": r3(wall), "cost": r3(wall / walls[loss_batching])}
    finally:
        shutil.rmtree(work, ignore_errors=True)  # an 8B model is 16 GB of the disk the store needs


def part_kmeans(rec: Record, ctx: dict) -> None:
    import torch

    from dataselect.pool_index.kmeans import fit_kmeans, lloyd
    from dataselect.torchcpu import single_torch_thread

    n, d, k, iters = ctx["sizes"]["kmeans"]
    dev = torch.device(ctx["device"])
    g = torch.Generator(device=dev).manual_seed(0)
    centres = torch.randn(256, d, device=dev, generator=g)
    x = centres[torch.randint(0, 256, (n,), device=dev, generator=g)]
    x += 0.7 * torch.randn(n, d, device=dev, generator=g)
    x = (x / torch.linalg.vector_norm(x, dim=1, keepdim=True)).half()
    rec["shape"] = {"rows": n, "dim": d, "k": k}
    sync()
    t0 = time.perf_counter()
    fit = fit_kmeans(x, k, niter=20, seed=0, search="torch")
    sync()
    secs = fit.seconds
    rec["torch"] = {"device": str(dev), "wall_s": r3(time.perf_counter() - t0), **secs, "inertia": fit.inertia,
                    "kmeans++_centres_per_s": round(k / max(secs["kmeans++"], 1e-9)),
                    "lloyd_rows_per_s": round(20 * n / max(secs["lloyd"], 1e-9))}
    init = x[torch.as_tensor(fit.seeds, device=dev)].float()
    sync()
    t0 = time.perf_counter()
    _, inertia_t = lloyd(x, init, iters, "torch")
    sync()
    t_torch = time.perf_counter() - t0
    rec["same_init"] = {"updates": iters, "torch_s_per_update": r3(t_torch / iters), "torch_inertia": inertia_t}
    xc, ic = x.cpu(), init.cpu()
    t0 = time.perf_counter()
    with single_torch_thread():  # FAISS's OpenMP threads need the cores
        _, inertia_f = lloyd(xc, ic, iters, "flat")
    t_faiss = time.perf_counter() - t0
    rel = abs(inertia_t - inertia_f) / max(abs(inertia_f), 1e-12)
    rec["same_init"] = {**rec["same_init"], "faiss_cpu_s_per_update": r3(t_faiss / iters), "faiss_inertia": inertia_f,
                        "inertia_rel_diff": float(rel), "ok": bool(rel < 0.01),
                        "speedup": r3(t_faiss / max(t_torch, 1e-9))}


def part_store(rec: Record, ctx: dict) -> None:
    import numpy as np

    from bench_scale import _setup, block, losses
    from dataselect.store.synthetic import store_from_array, unit_rows, write_store

    target, dim, shard_rows = ctx["sizes"]["store"]
    work, workers = ctx["work"], os.cpu_count() or 1
    _setup(dim)
    for name in ("store", "queries", "slice", "probe"):
        shutil.rmtree(work / name, ignore_errors=True)
    t0 = time.perf_counter()  # a probe of one shard per writer gives the rate, and so the size time allows
    write_store(work / "probe", block, shard_rows * workers, dim, shard_rows=shard_rows,
                extra={"loss_response": losses}, workers=workers)
    rate = shard_rows * workers / (time.perf_counter() - t0)
    shutil.rmtree(work / "probe")
    free = shutil.disk_usage(work).free
    room = min(rate * max(ctx["left_s"]() - 25, 5) * 0.8, free * 0.6 / (2 * dim))
    rows = int(max(shard_rows * workers, min(target, room)) // shard_rows * shard_rows)
    rec["write_rows_per_s_probe"] = round(rate)
    t0 = time.perf_counter()
    write_store(work / "store", block, rows, dim, shard_rows=shard_rows, extra={"loss_response": losses},
                workers=workers)
    wall = time.perf_counter() - t0
    rec["store"] = {"rows": rows, "dim": dim, "gib": r3(rows * dim * 2 / 2**30), "target_rows": target,
                    "write_s": r3(wall)}
    store_from_array(work / "queries", unit_rows(np.random.default_rng(1), ctx["sizes"]["queries"], dim),
                     kind="queries", tasks=[f"task{i * 7 // ctx['sizes']['queries']}"
                                            for i in range(ctx["sizes"]["queries"])])
    rec["disk_read"] = disk_read_rate(sorted((work / "store").glob("*.arrow")), limit_s=20)
    from dataselect.store import Store

    n_slice, slice_shard = ctx["sizes"]["slice"]
    big = Store(work / "store")
    n_slice = min(n_slice, big.n_rows)
    emb = np.concatenate([b["embedding"] for b in big.iter_blocks(("embedding",), shards=list(
        range(-(-n_slice // shard_rows))))])[:n_slice]
    store_from_array(work / "slice", emb, shard_rows=slice_shard)
    rec["slice"] = {"rows": n_slice, "shards": -(-n_slice // slice_shard)}


def disk_read_rate(files: list[Path], limit_s: float) -> dict:
    """GB/s reading ``files`` after dropping them from the page cache (what a first pass over a store meets)."""
    done, t0 = 0, time.perf_counter()
    buf = bytearray(64 << 20)
    for f in files:
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
            os.posix_fadvise(fh.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
            while n := fh.readinto(buf):
                done += n
        if time.perf_counter() - t0 > limit_s:
            break
    wall = time.perf_counter() - t0
    return {"gb": r3(done / 1e9), "gb_per_s": r3(done / 1e9 / wall), "page_cache_dropped": True}


def part_rds(rec: Record, ctx: dict) -> None:
    import numpy as np

    import dataselect as ds
    from dataselect.store import Store

    work, dev = ctx["work"], ctx["device"]
    big = Store(work / "store")
    gb = big.n_rows * big.dim * 2 / 1e9
    t0 = time.perf_counter()
    sel = ds.select(big, "rds+", budget="10%", queries=[work / "queries"], device=dev, progress=False)
    wall = time.perf_counter() - t0
    rec["pool"] = {"device": dev, "rows": big.n_rows, "dim": big.dim, "queries": ctx["sizes"]["queries"],
                   "wall_s": r3(wall), "gb_per_s": r3(gb / wall), "picked": len(sel),
                   "at_5_8m_s": r3(wall * 5.8e6 / big.n_rows)}
    stored = json.loads((work / "rec-store.json").read_text()) if (work / "rec-store.json").exists() else {}
    if "disk_read" in stored:
        rec["pool"] = {**rec["pool"], "vs_disk_read": r3(gb / wall / stored["disk_read"]["gb_per_s"])}
    picks = {}
    for device in ("cpu", dev):
        t0 = time.perf_counter()
        picks[device] = ds.select(work / "slice", "rds+", budget="10%", queries=[work / "queries"], device=device,
                                  progress=False)
        rec[f"slice_{device}_s"] = r3(time.perf_counter() - t0)
    a, b = picks["cpu"], picks[dev]
    rec["slice_same_selection"] = bool(np.array_equal(a.rows, b.rows)
                                       and np.array_equal(a.table.column("score").to_numpy(),
                                                          b.table.column("score").to_numpy()))


def part_select_cli(rec: Record, ctx: dict) -> None:
    from bench_scale import run_step
    from dataselect.store import Store

    work, method = ctx["work"], {"hierarchical": "hierarchical-kmeans", "sensitivity": "kmeans-sensitivity"}[ctx["part"]]
    shutil.rmtree(work / "store" / "artefacts", ignore_errors=True)  # cluster afresh, never reuse
    budget = HK_BUDGET if method == "hierarchical-kmeans" else KS_BUDGET
    gpu = GpuMemory() if ctx["gpu"] else None
    res = run_step(["run", "--store", str(work / "store"), "--method", method, "--budget", budget,
                    "--out", str(work / f"sel-{method}"), "--overwrite", "--device", ctx["device"]],
                   max(ctx["left_s"]() - 8, 5), work / f"log-{method}.txt", poll=gpu)
    n = Store(work / "store").n_rows
    rec["run"] = {"method": method, "budget": budget, "rows": n, **res,
                  "gpu_memory_peak_gib": gpu.peak_gib if gpu else None,
                  "at_5_8m_s": None if res["timed_out"] or res["exit"] else r3(res["wall_s"] * 5.8e6 / n)}
    if res["timed_out"]:
        rec["cut"] = True
    elif res["exit"]:
        raise SystemExit(f"dataselect run --method {method} failed: {res['last_line']}")


class GpuMemory:
    """Polls nvidia-smi for the GPU memory in use above what was in use before (the peak, GiB)."""

    def __init__(self):
        self.base = self.used()
        self.peak_gib = 0.0

    @staticmethod
    def used() -> float:
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=5).stdout
            return float(out.split()[0]) / 1024
        except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
            return 0.0

    def __call__(self, pid: int) -> None:
        self.peak_gib = max(self.peak_gib, round(self.used() - self.base, 2))


def part_ray(rec: Record, ctx: dict) -> None:
    if importlib.util.find_spec("ray") is None:
        rec["skipped"] = "ray is not installed here (its wheel, 79 MB, exceeds a lent device's 64 MiB carry)"
        return
    import numpy as np

    from dataselect.engines.executor import make_executor
    from dataselect.resources import Resources
    from dataselect.selectors import build_selector
    from dataselect.store import Store

    pool, q = Store(ctx["work"] / "slice"), Store(ctx["work"] / "queries")
    walls, rows = {}, {}
    for engine in ("local", "ray", "ray-warm"):
        executor = make_executor("local" if engine == "local" else "ray", workers=1)
        res = Resources.make(ctx["device"], progress=False)
        res.executor = executor
        t0 = time.perf_counter()
        sel = build_selector("rds+", {}).select(pool, pool.n_rows // 10, np.random.default_rng(0), [q], res)
        walls[engine] = time.perf_counter() - t0
        rows[engine] = sel.rows
    rec["shards"] = len(pool.shards)
    rec["local_s"], rec["ray_1_worker_s"], rec["ray_again_s"] = (r3(walls[e]) for e in ("local", "ray", "ray-warm"))
    rec["fixed_cost_s"] = r3(walls["ray"] - walls["local"])
    rec["same_selection"] = bool(np.array_equal(rows["local"], rows["ray"]))


RUN = {"embed-1b": part_embed, "embed-8b": part_embed, "kmeans": part_kmeans, "store": part_store, "rds": part_rds,
       "hierarchical": part_select_cli, "sensitivity": part_select_cli, "ray": part_ray}
NEEDS_STORE = {"rds", "hierarchical", "sensitivity", "ray"}


# -------------------------------------------------------------------------------------------- driver

def child(args) -> None:
    import torch

    gpu = torch.cuda.is_available() and not args.dry_run
    deadline = time.monotonic() + args.limit
    sizes = DRY if args.dry_run else FULL
    if args.dry_run and args.dry_store_rows:
        sizes = {**sizes, "store": (args.dry_store_rows, *sizes["store"][1:])}
    ctx = {"part": args.part, "dry": args.dry_run, "gpu": gpu, "device": "cuda" if gpu else "cpu",
           "work": args.work, "sizes": sizes,
           "left_s": lambda: deadline - time.monotonic()}
    rec = Record(args.work / f"rec-{args.part}.json")
    rec["device"] = torch.cuda.get_device_name() if gpu else "cpu"
    with contextlib.suppress(KeyboardInterrupt):  # the driver's time limit: what was recorded stays
        RUN[args.part](rec, ctx)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="every part on the CPU at tiny sizes")
    ap.add_argument("--parts", default=",".join(PARTS))
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "gpu-suite-out"))
    ap.add_argument("--work", type=Path, help="models and stores go here (default: a temporary folder)")
    ap.add_argument("--scale-limits", type=float, default=1.0, help="multiply every part's time limit")
    ap.add_argument("--dry-store-rows", type=int, default=0, help="dry run: rows of the synthetic store")
    ap.add_argument("--part", help=argparse.SUPPRESS)
    ap.add_argument("--limit", type=float, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.part:
        return child(args)
    parts = [p for p in args.parts.split(",") if p]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        sys.exit(f"gpu_suite: unknown part {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    keep = args.work is not None
    args.work = args.work or Path(tempfile.mkdtemp(prefix="gpu_suite_"))
    args.work.mkdir(parents=True, exist_ok=True)
    from bench_scale import run_process

    src = str(HERE.parent / "src")  # the parts' own children (`dataselect run`) import the package from here too
    os.environ["PYTHONPATH"] = os.pathsep.join([src, *filter(None, [os.environ.get("PYTHONPATH")])])
    results, t_all = {}, time.perf_counter()
    try:
        for part in parts:
            if part in NEEDS_STORE and not (args.work / "store" / "manifest.json").exists():
                results[part] = {"status": "skipped", "why": "no store: the store part did not finish"}
                print(f"{part:13s} skipped (no store)", flush=True)
                continue
            limit = (LIMITS[part] if not args.dry_run else 300) * args.scale_limits
            (args.work / f"rec-{part}.json").unlink(missing_ok=True)
            cmd = [sys.executable, str(Path(__file__).resolve()), "--part", part, "--limit", str(limit),
                   "--work", str(args.work), "--dry-store-rows", str(args.dry_store_rows)] + (
                       ["--dry-run"] if args.dry_run else [])
            res = run_process(cmd, limit + 5, args.work / f"log-{part}.txt", grace_s=15)
            rec_path = args.work / f"rec-{part}.json"
            got = json.loads(rec_path.read_text()) if rec_path.exists() else {}
            log = (args.work / f"log-{part}.txt").read_text(errors="replace").strip()
            status = "cut" if res["timed_out"] or got.get("cut") else "failed" if res["exit"] else "ok"
            checks = [v["ok"] for v in got.values() if isinstance(v, dict) and "ok" in v]
            checks += [v for k, v in got.items() if k.startswith("same_") or k.endswith("same_selection")]
            if status == "ok" and not all(checks):
                status = "check failed"
            results[part] = {"status": status, "wall_s": res["wall_s"], "peak_rss_gib": res["peak_rss_gib"], **got}
            if status == "failed":
                results[part]["error"] = log.splitlines()[-1][-400:] if log else ""
                (args.out / f"log-{part}.txt").write_text(log[-200_000:])
            print(f"{part:13s} {status:12s} {res['wall_s']:7.1f}s  {json.dumps(got, default=float)[:300]}", flush=True)
    finally:
        if not keep:
            shutil.rmtree(args.work, ignore_errors=True)
    summary = {"dry_run": args.dry_run, "wall_s": round(time.perf_counter() - t_all, 1), "parts": results}
    (args.out / "gpu_suite.json").write_text(json.dumps(summary, indent=1, default=float))
    (args.out / "gpu_suite.md").write_text(markdown(summary))
    print(f"wrote {args.out / 'gpu_suite.json'} and gpu_suite.md ({summary['wall_s']:.0f}s)")
    bad = [p for p, r in results.items() if r["status"] in ("failed", "check failed")]
    if bad:
        sys.exit(f"gpu_suite: {', '.join(bad)} failed; see {args.out}")


def markdown(summary: dict) -> str:
    """One table: part, status, wall, and its figures flattened to ``key=value``."""

    def flat(d: dict, prefix: str = "") -> list[str]:
        out = []
        for k, v in d.items():
            if (not prefix and k in ("status", "wall_s", "peak_rss_gib")) or k in ("last_progress", "last_line"):
                continue
            if isinstance(v, dict):
                out += flat(v, f"{prefix}{k}.")
            else:
                out.append(f"{prefix}{k}={v}")
        return out

    lines = [f"gpu_suite ({'dry run, CPU' if summary['dry_run'] else 'GPU'}), {summary['wall_s']:.0f} s", "",
             "| part | status | wall s | figures |", "| --- | --- | --- | --- |"]
    for part, r in summary["parts"].items():
        figures = "; ".join(flat(r)) + (f"; reached: {r['run']['last_progress']}"
                                        if r.get("run", {}).get("timed_out") else "")
        lines.append(f"| {part} | {r['status']} | {r.get('wall_s', '')} | {figures.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
