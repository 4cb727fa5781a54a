"""kmeans-sensitivity against the guarantee of Axiotis et al. 2024 (Theorem 2), over seeds.

Theorem 2: when the loss is (z, Lambda)-well-behaved on the clusters (Assumption 1), Algorithm 1's
weighted sample estimates the pool's total loss, sum_e w(e) l(e) ~ sum_D l(e), with an error that
shrinks with the clustering cost -- far below a uniform sample's of the same size when the data is
clustered and the loss follows the clusters. This script measures exactly that on one synthetic pool
(the same data for every configuration and seed): the relative error of the weighted loss sum

    | sum_selected w l - sum_pool l | / sum_pool l

for a uniform sample (weights n / b), and for `kmeans-sensitivity` with --lam auto (Lemma 8) and
--lam 0.1 (§5.2.1), each with systematic draws (the default) and --draws iid (Algorithm 1 as
written), and reports mean and sd over seeds, the share of seeds sensitivity beats uniform, the
distinct rows iid draws delivered, and the Lambda that Lemma 8's estimate gave.

The pool: ``--modes`` Gaussian modes of lognormal sizes on the unit sphere (dim ``--dim``); a row's
loss is its mode's loss (gamma) plus a term smooth in the embedding (Hoelder with z = 2 within a
mode), plus small noise, so Assumption 1 holds approximately.

    python scripts/fidelity_sensitivity.py [--rows 20000] [--dim 32] [--modes 100] [--budgets 1000,5000] [--seeds 10]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def make_pool(path: Path, n: int, dim: int, modes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    from dataselect.store.synthetic import store_from_array

    rng = np.random.default_rng(seed)
    sizes = rng.lognormal(0.0, 1.0, modes)
    mode = rng.choice(modes, n, p=sizes / sizes.sum())
    centres = rng.standard_normal((modes, dim)) * 1.5
    x = centres[mode] + 0.35 * rng.standard_normal((n, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    mode_loss = rng.gamma(3.0, 0.5, modes)
    direction = rng.standard_normal(dim)
    direction /= np.linalg.norm(direction)
    loss = mode_loss[mode] + 0.5 * (x @ direction) ** 2 + 0.05 * rng.random(n)
    store_from_array(path, x.astype(np.float32), shard_rows=5000, extra={"loss_response": loss.astype(np.float32)})
    return x, loss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--modes", type=int, default=100)
    ap.add_argument("--budgets", default="1000,5000")
    ap.add_argument("--seeds", type=int, default=10)
    args = ap.parse_args()

    from dataselect.resources import Resources
    from dataselect.selectors import build_selector
    from dataselect.store import Store

    root = Path(tempfile.mkdtemp(prefix="fidelity_sensitivity_"))
    _, loss = make_pool(root / "pool", args.rows, args.dim, args.modes)
    store = Store(root / "pool")
    total = float(loss.astype(np.float32).astype(np.float64).sum())
    loss32 = loss.astype(np.float32).astype(np.float64)
    res = Resources.make("cpu", progress=False)
    configs = {"sensitivity lam=auto systematic": {"lam": "auto"},
               "sensitivity lam=auto iid": {"lam": "auto", "draws": "iid"},
               "sensitivity lam=0.1 systematic": {"lam": 0.1},
               "sensitivity lam=0.1 iid": {"lam": 0.1, "draws": "iid"}}
    print(f"pool {args.rows:,} x {args.dim}, {args.modes} modes; relative error of the weighted loss sum over "
          f"{args.seeds} seeds (mean +- sd); 'beats' = seeds with a smaller error than uniform at the same seed")
    for budget in [int(b) for b in args.budgets.split(",")]:
        uni = []
        for seed in range(args.seeds):
            rows = np.random.default_rng(seed).choice(args.rows, budget, replace=False)
            uni.append(abs(loss32[rows].sum() * args.rows / budget - total) / total)
        uni = np.array(uni)
        print(f"\nbudget {budget:,} (k = {round(0.2 * budget):,} clusters)")
        print("| method | rel. error | beats uniform | rows | Lambda (median over clusters) | s / seed |")
        print("|---|---|---|---|---|---|")
        print(f"| uniform | {uni.mean():.4f} +- {uni.std():.4f} | - | {budget:,} | - | - |")
        for name, params in configs.items():
            err, rows_n, lam, secs = [], [], [], []
            selector = build_selector("kmeans-sensitivity", params)
            for seed in range(args.seeds):
                t0 = time.perf_counter()
                sel = selector.select(store, budget, np.random.default_rng(seed), resources=res)
                secs.append(time.perf_counter() - t0)
                est = float((sel.weights.astype(np.float64) * loss32[sel.rows]).sum())
                err.append(abs(est - total) / total)
                rows_n.append(len(sel))
                lam.append(sel.info["lam_per_cluster"]["median"] if params["lam"] == "auto" else params["lam"])
            err = np.array(err)
            print(f"| {name} | {err.mean():.4f} +- {err.std():.4f} | {(err < uni).sum()}/{args.seeds} | "
                  f"{np.mean(rows_n):,.0f} | {np.mean(lam):.3g} | {np.mean(secs[1:] or secs):.2f} |")


if __name__ == "__main__":
    main()
