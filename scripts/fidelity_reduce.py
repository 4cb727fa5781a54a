"""What ``--reduce pca:D`` changes, against the full-dimension run on the same store (issue 27).

For each store and each clustering selector, the same selection is run in the full dimension and after
PCA to D dimensions, with several clustering seeds. Reported:

* variance kept: the share of the sample's variance the D components hold;
* level-1 agreement: adjusted mutual information of the reduced run's level-1 labels (hierarchical-kmeans)
  or k-means labels (kmeans-sensitivity) with the full run's, same seed; beside it the AMI of two full
  runs with different seeds, the agreement one can expect at all;
* cluster mix: total variation distance between the selected rows' distribution over the full run's
  clusters (its top level) for the reduced selection and for the full one; beside it the same between
  two full runs with different seeds;
* overlap: Jaccard of the reduced and the full selection; beside it two full runs with other seeds;
* time: the reduced run (the projection included the first time) against the full one.

Stores: the bundled causal LM's embeddings of the bundled 1,600-row sample pool (576 dims, real
semantics), and a synthetic clustered store (``--synthetic-rows`` x ``--synthetic-dim``, 64 modes).
``python scripts/fidelity_reduce.py`` writes docs-ready tables to stdout and ``--out`` as JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import adjusted_mutual_info_score

import dataselect as ds
from dataselect.bundled_demo import bundled_data
from dataselect.store import Store
from dataselect.store.synthetic import clustered_store


def labels_of(store: Store, sel, method: str) -> tuple[np.ndarray, np.ndarray]:
    """(level-1 labels over the store's rows, top-level labels) of the clustering the selection used."""
    from dataselect.pool_index.hierarchical import Hierarchy
    from dataselect.pool_index.kmeans import Clustering
    from dataselect.pool_index.reduce import reduced_of
    from dataselect.selectors.base import used_artefact

    pool = reduced_of(store, sel.meta)
    if method == "hierarchical-kmeans":
        h = Hierarchy.load(used_artefact(pool, sel.meta, "hierarchy"), pool)
        top = h.labels[0]
        for lab in h.labels[1:]:
            top = lab[top]
        return h.labels[0], top
    cl = Clustering.load(used_artefact(pool, sel.meta, "clustering"), pool)
    return cl.labels, cl.labels


def mix(rows: np.ndarray, store_rows: np.ndarray, top: np.ndarray) -> np.ndarray:
    pos = np.searchsorted(store_rows, rows)
    return np.bincount(top[pos], minlength=int(top.max()) + 1) / len(rows)


def tv(a: np.ndarray, b: np.ndarray) -> float:
    return 0.5 * float(np.abs(a - b).sum())


def jaccard(a, b) -> float:
    a, b = set(np.asarray(a).tolist()), set(np.asarray(b).tolist())
    return len(a & b) / len(a | b)


def run(store: Store, method: str, budget: int, dims: list[int], seeds: list[int], params: dict) -> list[dict]:
    rows = store.rows()
    out = []
    full = {}
    for seed in seeds:
        t0 = time.perf_counter()
        full[seed] = ds.select(store, method, budget=budget, seed=0, cluster_seed=seed, progress=False, **params)
        full[seed].secs = time.perf_counter() - t0
    for d in dims:
        for i, seed in enumerate(seeds):
            t0 = time.perf_counter()
            red = ds.select(store, method, budget=budget, seed=0, cluster_seed=seed, reduce=f"pca:{d}",
                            progress=False, **params)
            secs = time.perf_counter() - t0
            f, other = full[seed], full[seeds[(i + 1) % len(seeds)]]
            l1_f, top_f = labels_of(store, f, method)
            l1_r, _ = labels_of(store, red, method)
            l1_o, _ = labels_of(store, other, method)
            info = red.meta["method_info"]["reduce"]
            out.append({"method": method, "dim": d, "seed": seed, "variance_kept": info["variance_kept"],
                        "ami": adjusted_mutual_info_score(l1_f, l1_r), "ami_seeds": adjusted_mutual_info_score(l1_f, l1_o),
                        "tv": tv(mix(red.rows, rows, top_f), mix(f.rows, rows, top_f)),
                        "tv_seeds": tv(mix(other.rows, rows, top_f), mix(f.rows, rows, top_f)),
                        "jaccard": jaccard(red.rows, f.rows), "jaccard_seeds": jaccard(other.rows, f.rows),
                        "full_s": f.secs, "reduced_s": secs})
            r = out[-1]
            print(f"  {method} pca:{d} seed {seed}: variance {r['variance_kept']:.3f}  AMI {r['ami']:.3f} (seeds "
                  f"{r['ami_seeds']:.3f})  TV {r['tv']:.3f} (seeds {r['tv_seeds']:.3f})  Jaccard {r['jaccard']:.3f} "
                  f"(seeds {r['jaccard_seeds']:.3f})  {secs:.1f} s vs {f.secs:.1f} s", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=Path("fidelity-reduce"))
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--synthetic-rows", type=int, default=40_000)
    ap.add_argument("--synthetic-dim", type=int, default=768)
    ap.add_argument("--real-dims", default="32,64,128")
    ap.add_argument("--synthetic-dims", default="64,128,256")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    args.work.mkdir(parents=True, exist_ok=True)
    results = []
    real = args.work / "real"
    if not (real / "manifest.json").exists():
        ds.embed(bundled_data("sample_pool.jsonl"), model="bundled", out=real, with_loss=True, progress=True)
    synth = clustered_store(args.work / "synthetic", args.synthetic_rows, args.synthetic_dim, modes=64, seed=0,
                            with_loss=True)
    for name, path, dims, budget in (("real (bundled LM, 1,600 x 576)", real, args.real_dims, 400),
                                     (f"synthetic ({args.synthetic_rows:,} x {args.synthetic_dim})", synth,
                                      args.synthetic_dims, args.synthetic_rows // 4)):
        store = ds.open_store(path)
        print(name, flush=True)
        for method, params in (("hierarchical-kmeans", {}), ("kmeans-sensitivity", {})):
            for r in run(store, method, budget, [int(d) for d in dims.split(",")], seeds, params):
                results.append({"store": name, **r})
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    print("\n| store | method | D | variance kept | AMI (seeds) | cluster-mix TV (seeds) | Jaccard (seeds) | "
          "time reduced / full |\n|---|---|---|---|---|---|---|---|")
    keys = dict.fromkeys((r["store"], r["method"], r["dim"]) for r in results)
    for store, method, d in keys:
        rs = [r for r in results if (r["store"], r["method"], r["dim"]) == (store, method, d)]

        def rng(k, rs=rs):
            v = [r[k] for r in rs]
            return f"{min(v):.3f}-{max(v):.3f}"

        print(f"| {store} | {method} | {d} | {rng('variance_kept')} | {rng('ami')} ({rng('ami_seeds')}) | "
              f"{rng('tv')} ({rng('tv_seeds')}) | {rng('jaccard')} ({rng('jaccard_seeds')}) | "
              f"x{np.mean([r['reduced_s'] for r in rs]) / np.mean([r['full_s'] for r in rs]):.2f} |")


if __name__ == "__main__":
    main()
