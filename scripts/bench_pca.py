"""PCA for ``--reduce pca:D``: the engine's float64 covariance + exact eigendecomposition against FAISS's
PCAMatrix, on the same sample in the same run (issue 27: "FAISS's PCAMatrix or a torch low-rank PCA;
measure which").

Each side fits D components on the same rows (a uniform sample of a store, as ``--reduce`` takes it,
or clustered synthetic rows), timed in its own subprocess so its peak RSS is its own. Agreement is
measured on held-out rows: the share of their variance each subspace keeps, and the principal angles
between the two subspaces (cosines: 1 = the same direction).

    python scripts/bench_pca.py [--store STORE] [--rows 100000] [--dim 4096] [--components 256] [--held 20000]
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
import json, resource, sys, time
import numpy as np
x = np.load(sys.argv[1], mmap_mode="r")
D, side = int(sys.argv[2]), sys.argv[3]
x = np.ascontiguousarray(x, dtype=np.float32)
import faiss, torch  # imported before the clock starts
from dataselect.pool_index.kmeans import Projection
t0 = time.perf_counter()
if side == "engine":
    p = Projection.fit(torch.from_numpy(x), D)
    mean, comp = np.asarray(p.mean, np.float64), np.asarray(p.components, np.float64)
else:
    pca = faiss.PCAMatrix(x.shape[1], D)
    pca.train(x)
    mean = faiss.vector_to_array(pca.mean).astype(np.float64)
    comp = faiss.vector_to_array(pca.PCAMat).reshape(-1, x.shape[1])[:D].astype(np.float64)
wall = time.perf_counter() - t0
np.savez(sys.argv[4], mean=mean, components=comp)
print(json.dumps({"fit_s": wall, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def synthetic(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """Unit rows around 512 Zipf-sized modes with correlated noise (a spectrum that decays, as real
    embeddings' does), float16 values as a store holds them."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((512, dim), dtype=np.float32)
    mix = rng.standard_normal((64, dim), dtype=np.float32) / np.sqrt(np.arange(1, 65, dtype=np.float32))[:, None]
    p = 1.0 / np.arange(1, 513) ** 0.8
    mode = rng.choice(512, n, p=p / p.sum())
    x = centres[mode] + 2.0 * rng.standard_normal((n, 64), dtype=np.float32) @ mix
    x += 0.3 * rng.standard_normal((n, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float16).astype(np.float32)


def from_store(path: Path, n: int) -> np.ndarray:
    import torch

    from dataselect.pool_index.sample import load_rows, sample_positions
    from dataselect.store import Store

    store = Store(path)
    return load_rows(store, sample_positions(store.n_rows, n, 0), torch.device("cpu")).numpy()


def kept(x: np.ndarray, mean: np.ndarray, comp: np.ndarray) -> float:
    xc = x.astype(np.float64) - mean
    return float(((xc @ comp.T) ** 2).sum() / (xc ** 2).sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", type=Path, help="take the rows from this store (default: synthetic)")
    ap.add_argument("--rows", type=int, default=100_000, help="fit rows (--reduce fits on at most 100,000)")
    ap.add_argument("--dim", type=int, default=4096, help="synthetic rows' dimension")
    ap.add_argument("--components", type=int, default=256)
    ap.add_argument("--held", type=int, default=20_000, help="held-out rows for the agreement figures")
    args = ap.parse_args()
    total = args.rows + args.held
    t0 = time.perf_counter()
    x = from_store(args.store, total) if args.store else synthetic(total, args.dim)
    x = x[np.random.default_rng(1).permutation(len(x))]
    fit, held = x[:args.rows], x[args.rows:]
    print(f"{len(fit):,} fit rows + {len(held):,} held out, {x.shape[1]} dims "
          f"({'store ' + str(args.store) if args.store else 'synthetic'}; read in {time.perf_counter() - t0:.0f}s), "
          f"D = {args.components}")
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "x.npy", fit)
        res = {}
        for side in ("engine", "faiss"):
            out = Path(tmp) / f"{side}.npz"
            res[side] = json.loads(subprocess.run([sys.executable, "-c", CHILD, str(Path(tmp) / "x.npy"),
                                                   str(args.components), side, str(out)],
                                                  capture_output=True, text=True, check=True).stdout)
            z = np.load(out)
            res[side]["mean"], res[side]["components"] = z["mean"], z["components"]
    e, f = res["engine"], res["faiss"]
    cos = np.linalg.svd(e["components"] @ f["components"].T, compute_uv=False)
    for name, r in (("engine (float64 covariance, exact eigh)", e), ("FAISS PCAMatrix", f)):
        print(f"{name:42s} fit {r['fit_s']:7.1f}s  peak RSS {r['peak_rss_mb']:7.0f} MB  "
              f"held-out variance kept {kept(held, r['mean'], r['components']):.4f}")
    print(f"fit time FAISS / engine: x{f['fit_s'] / e['fit_s']:.2f}")
    print(f"principal angles between the subspaces: cosine min {cos.min():.4f}, mean {cos.mean():.4f}, "
          f"{int((cos > 0.99).sum())} of {len(cos)} above 0.99")


if __name__ == "__main__":
    main()
