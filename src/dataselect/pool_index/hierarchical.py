"""Hierarchical k-means with resampling steps (Vo et al. 2024), as facebookresearch/ssl-data-curation does it.

Level 1 clusters the pool embeddings; level l+1 clusters the centroids of level l. At every level:

1. k-means on the level's points: k-means++ seeding (greedy, ``2 + ln k`` trials) and exactly
   ``niter`` Lloyd updates (reference: 50, ``hierarchical_kmeans_gpu.py``); empty clusters keep
   their centroid and stay in the next level's input.
2. ``resamples`` resampling steps (reference: ``n_resampling_steps: 10`` = the first run plus 9):
   take ``sample_size`` points of each cluster -- the ones ``closest`` to its centroid, or at
   ``random`` (reference ``sampling_strategy`` ``c`` / ``r``) -- run a fresh k-means (k-means++ and
   ``niter`` updates) on their union, and reassign *all* the level's points to the new centroids.
   The level's centroids are those of the last run. ``sample_size`` defaults to half the mean
   cluster size of the level (the reference configs' advice); a size <= 1 turns resampling off.

At level 1 the k-means input is a uniform sample of the pool sized by the memory budget (the
reference uses the whole pool, which it spreads over many GPUs), the pool is assigned shard by
shard after every run, and a resampling union larger than the budget holds is cut to fewer points
per cluster (said in one line, recorded in the metadata). Upper levels hold at most k1 centroids.

Default levels (:func:`plan_default_levels`): k1 = n/25, the reference's ratio (its README clusters
29,700 points into 1,000, ``configs/2levels_random_embeddings.yaml`` 100,000 into 5,000), then /10
per level. Where the memory budget cannot hold a level-1 training sample of 25 rows per centroid
for that k, k1 is the largest k it can: said in one line, recorded as ``default_levels`` in the
metadata. docs/fidelity.md compares this code with the reference's side by side.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from dataselect.errors import DataselectError
from dataselect.pool_index.kmeans import (
    POINTS_PER_CENTROID,
    assign_store,
    cost_estimate,
    default_trials,
    duration,
    fit_kmeans,
    fit_store_rows,
    gemm_rate,
    kmeans_flops,
    max_k,
    plan_memory,
    resolve_search,
    sample_note,
)
from dataselect.pool_index.sample import load_rows, sample_positions
from dataselect.pool_index.search import centroid_search, probe_rows, search_kind
from dataselect.progress import bar, note
from dataselect.resources import Resources, current_rss
from dataselect.store import Store
from dataselect.store.artefacts import Artefact, Artefacts

RESAMPLE_STRATEGIES = ("closest", "random")


REFERENCE_ROWS_PER_CLUSTER = 25  # level 1 of ssl-data-curation's examples: n/20 to n/30 rows per cluster


def default_levels(n: int, k1: int = 0) -> list[int]:
    """k1 (default n/25, the reference's level-1 ratio, clamped to [2, n]); each next level divides by 10
    while that leaves >= 10; at most 4 levels."""
    ks = [int(k1 or min(n, max(2, round(n / REFERENCE_ROWS_PER_CLUSTER))))]
    while len(ks) < 4 and ks[-1] // 10 >= 10:
        ks.append(ks[-1] // 10)
    return ks


def _level1_plan(store: Store, k: int, sample_size: int, sample_per_cluster: int, device, resources: Resources):
    """The engine's memory plan for level 1 with k clusters (raises DataselectError when it cannot fit)."""
    n = store.n_rows
    return plan_memory(store, k, store.dim, sample_size or k * POINTS_PER_CENTROID, device, resources,
                       keep_rows=k * max(sample_per_cluster, 1), extra=40 * n)


def plan_default_levels(store: Store, device, resources: Resources, sample_size: int = 0) -> tuple[list[int], dict]:
    """Default levels: :func:`default_levels`, with k1 lowered where the memory budget cannot hold it.

    k1 = n/25 is kept when the engine's plan fits and its level-1 training sample holds the
    reference's 25 rows per centroid; otherwise k1 is the largest k that does (the plan shrinks with
    k), said in one line and recorded. Returns (ks, record for the hierarchy metadata).
    """
    n = store.n_rows
    wanted = default_levels(n)[0]
    k1 = max(2, max_k(store, store.dim, device, resources, wanted, per_centroid=REFERENCE_ROWS_PER_CLUSTER,
                      plan_for=lambda k: _level1_plan(store, k, sample_size, max(2, int(0.5 * n / k)), device,
                                                      resources)))
    record = {"rule": f"k1 = n/{REFERENCE_ROWS_PER_CLUSTER} (ssl-data-curation's level-1 ratio), then /10 per "
                      "level while >= 10, at most 4 levels", "k1_reference": wanted, "k1": k1,
              "limited_by_memory": k1 < wanted, "note": None}
    if k1 < wanted:
        record["note"] = (f"hierarchical k-means: level 1 gets k={k1:,}, not the reference's n/"
                          f"{REFERENCE_ROWS_PER_CLUSTER} = {wanted:,}: the memory budget holds a training sample of "
                          f"{REFERENCE_ROWS_PER_CLUSTER} rows per centroid only up to that k; raise --max-memory "
                          "or pass --k")
    return default_levels(n, k1), record


def closest_per_cluster(labels: np.ndarray, dist2: np.ndarray, size: int) -> np.ndarray:
    """Sorted positions of the ``size`` points of each cluster closest to its centroid (ties by position)."""
    order = np.lexsort((np.arange(len(labels)), dist2, labels))
    lab = labels[order]
    rank_in_cluster = np.arange(len(lab)) - np.searchsorted(lab, lab, side="left")
    return np.sort(order[rank_in_cluster < size])


def random_per_cluster(labels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted positions of ``min(size, |C|)`` points drawn without replacement from each cluster C."""
    return closest_per_cluster(labels, rng.random(len(labels)), size)


@dataclass
class Hierarchy:
    """labels[0]: (n_rows,) level-1 cluster of each pool row (store order); labels[l]: (k_l,) parent
    of each level-l cluster at level l+1. dist2: (n_rows,) squared distance of each row to its level-1
    centroid. ``rows``: pool row numbers in store order. centroids[l]: (k_l, d) float32 centroids of
    level l+1 (those of the level's last k-means run; level l+2 clusters them)."""

    labels: list[np.ndarray]
    dist2: np.ndarray
    ks: list[int]
    rows: np.ndarray
    meta: dict
    centroids: list[np.ndarray] = field(default_factory=list)
    key: str = ""  # the artefact it is kept as ("" when not kept)

    def save(self, folder) -> dict:
        """Write the arrays into ``folder``; returns the metadata to record with them."""
        for i, (lab, cen) in enumerate(zip(self.labels, self.centroids, strict=True)):
            np.save(folder / f"labels-{i}.npy", lab)
            np.save(folder / f"centroids-{i}.npy", cen)
        np.save(folder / "dist2.npy", self.dist2)
        return self.meta

    @classmethod
    def load(cls, artefact: Artefact, store: Store, levels: int | None = None) -> Hierarchy:
        folder, meta = artefact.path, artefact.info
        levels = levels or len(meta.get("ks", []))
        try:
            labels = [np.load(folder / f"labels-{i}.npy") for i in range(levels)]
            cents = [np.load(folder / f"centroids-{i}.npy") for i in range(levels)]
            dist2 = np.load(folder / "dist2.npy")
        except (OSError, ValueError) as exc:
            raise DataselectError(f"{folder}: cached hierarchy is unreadable ({exc}); delete it and run again") from None
        if not labels or len(labels[0]) != store.n_rows or len(dist2) != store.n_rows:
            raise DataselectError(f"{folder}: cached hierarchy does not match the store; delete it and run again")
        return cls(labels, dist2, meta["ks"], store.rows(), meta, cents, artefact.key)

    def paths(self, positions: np.ndarray) -> list[str]:
        """'top/.../leaf' cluster path of each store position."""
        cols = [self.labels[0][positions]]
        for lab in self.labels[1:]:
            cols.append(lab[cols[-1]])
        return ["/".join(str(int(c)) for c in reversed(t)) for t in zip(*cols, strict=True)]


def _default_sample_sizes(n: int, ks: list[int]) -> list[int]:
    return [max(2, int(0.5 * m / k)) for m, k in zip([n, *ks[:-1]], ks, strict=True)]


def hierarchy_flops(n: int, d: int, ks: list[int], sample_rows: int, sample_sizes: list[int], resamples: int,
                    niter: int, init_sample: int = 0) -> dict[str, float]:
    """Floating-point operations of :func:`build_hierarchy`, by step: :func:`kmeans_flops` summed over
    every run of every level. Level 1 trains on ``sample_rows`` rows and assigns all ``n`` after each
    run, its resampling unions (``k x sample_sizes[0]`` points) cut to ``sample_rows``; level l+1
    clusters level l's k centroids."""
    total = dict.fromkeys(("kmeans++", "lloyd", "assign"), 0.0)
    points = n
    for level, (k, s) in enumerate(zip(ks, sample_sizes, strict=True)):
        cap = min(sample_rows, points) if level == 0 else points
        for m in [cap] + [min(cap, k * s)] * (resamples if s > 1 else 0):
            init = min(m, init_sample * k) if init_sample else m
            for step, v in kmeans_flops(points, m, k, d, niter, init).items():
                total[step] += v
        points = k
    return total


def hierarchy_cost(n: int, d: int, ks: list[int], sample_rows: int, sample_sizes: list[int], resamples: int,
                   niter: int, init_sample: int = 0) -> dict:
    """:func:`hierarchy_flops` at this machine's GEMM rate (:func:`cost_estimate`); when long, the line
    said up front gives what each lever would bring it to, for the same k."""
    rate = gemm_rate()
    given = {"d": d, "resamples": resamples, "niter": niter, "init_sample": init_sample}

    def flops(**change) -> dict[str, float]:
        return hierarchy_flops(n, ks=ks, sample_rows=sample_rows, sample_sizes=sample_sizes, **{**given, **change})

    def secs(**change) -> float:
        return sum(flops(**change).values()) / rate

    levers = {}
    if d > 512:
        levers["--reduce pca:256"] = {"d": 256}
    if resamples:
        levers["--resamples 0"] = {"resamples": 0}
    if niter > 10:
        levers["--niter 10"] = {"niter": 10}
    if not init_sample or init_sample > 32:
        levers["--init-sample 32"] = {"init_sample": 32}
    ways = [f"{flag} about {duration(secs(**change))}" for flag, change in levers.items()]
    if len(levers) > 1:
        every = {key: v for change in levers.values() for key, v in change.items()}
        ways.append(f"all of these about {duration(secs(**every))}")
    ways = [f"for --k {','.join(map(str, ks))}: " + ", ".join(ways)] if ways else []
    runs = f"1 + {resamples} runs a level" if resamples else "1 run a level"
    return cost_estimate(f"hierarchical-kmeans: k = {','.join(map(str, ks))} over {n:,} rows x {d} dims, "
                         f"{runs}, {niter} Lloyd updates a run,",
                         flops(), ways, rate)


def build_hierarchy(store: Store, ks: list[int] | None = None, *, resamples: int = 9, sample_sizes: list[int] | None = None,
                    strategy: str = "closest", niter: int = 50, seed: int = 0, sample_size: int = 0,
                    init_sample: int = 0, backend: str = "auto", assign: str = "exact",
                    resources: Resources | None = None, cache: bool = True) -> Hierarchy:
    """Cluster ``store`` into a hierarchy with ``ks[l]`` clusters at level l+1 (see module docstring).

    ``ks`` empty: :func:`plan_default_levels`. ``sample_sizes[l]``: points kept per cluster in level
    l+1's resampling steps. ``sample_size``: level-1 training rows (0: 256 k1, within the memory
    budget). ``init_sample``: see :func:`dataselect.pool_index.kmeans.fit_kmeans`.
    """
    resources = resources or Resources.make(progress=False)
    n = store.n_rows
    device = resources.torch_device()
    levels = None
    if not ks:
        ks, levels = plan_default_levels(store, device, resources, sample_size)
        if levels["note"]:
            note(levels["note"])  # said on every run: the plan, not the cache, decides it
    if not ks or any(k < 1 for k in ks) or ks[0] > n or any(b > a for a, b in zip(ks, ks[1:], strict=False)):
        raise DataselectError(f"--k {','.join(map(str, ks))}: cluster counts must be >= 1, not increase with the "
                              f"level, and the first must not exceed the pool ({n:,} rows)")
    if strategy not in RESAMPLE_STRATEGIES:
        raise DataselectError(f"--resample {strategy!r}: choose from {', '.join(RESAMPLE_STRATEGIES)}")
    sample_sizes = list(sample_sizes or _default_sample_sizes(n, ks))
    if len(sample_sizes) != len(ks):
        raise DataselectError(f"--sample-sizes needs one value per level ({len(ks)})")
    search = resolve_search(backend, assign, device)
    # per pool row beyond the engine's own: the sort that picks each cluster's closest points (~40 B)
    plan = _level1_plan(store, ks[0], sample_size, sample_sizes[0], device, resources)
    params = {"ks": ks, "resamples": resamples, "sample_sizes": sample_sizes, "strategy": strategy,
              "niter": niter, "seed": seed, "sample_rows": plan.sample_rows, "init_sample": init_sample,
              "n_local_trials": [default_trials(k) for k in ks], "search": search}

    def compute() -> Hierarchy:
        progress = resources.progress
        cost = hierarchy_cost(n, store.dim, ks, plan.sample_rows, sample_sizes, resamples, niter, init_sample)
        timings: list[dict] = []
        notes: list[str] = [levels["note"]] if levels and levels["note"] else []
        if plan.limited_by_budget:
            notes.append(sample_note(f"hierarchical k-means level 1 (k={ks[0]:,})", plan, ks[0]))
            note(notes[-1])

        # the searches each run of each level used (--assign ivf: only where it pays, its samples and
        # centroids differing from run to run)
        used: list[dict] = [{"fit": [], "assign": []}]

        def fit(positions: np.ndarray, x: torch.Tensor, k: int, run_seed: int):  # level 1: rows of the store
            f = fit_store_rows(store, positions, x, k, executor=resources.executor, niter=niter, seed=run_seed,
                               init_sample=init_sample, search=search, progress=progress)
            used[0]["fit"].append(f.search_used)
            used[0]["assign"].append(search_kind(search, torch.as_tensor(f.centroids), n,
                                                 probe_rows(x) if search == "ivf" else None))
            return f

        # Level 1: the pool, through a budgeted sample and streamed assignment.
        t0 = time.perf_counter()
        s1 = sample_sizes[0]
        steps = 1 + (resamples if s1 > 1 else 0)
        rng = np.random.default_rng(seed)
        with bar(steps, "level 1 runs", unit="run", enabled=progress) as pbar:
            positions = sample_positions(n, plan.sample_rows, seed)
            x = load_rows(store, positions, device, progress, dtype=plan.sample_dtype)
            centroids = fit(positions, x, ks[0], seed).centroids
            del x
            labels0, dist2 = assign_store(store, centroids, search=used[0]["assign"][-1], device=device,
                                          block_rows=plan.block_rows,
                                          progress=progress, desc="assign pool", executor=resources.executor)
            pbar.update(1)
            for r in range(steps - 1):
                s = s1
                if ks[0] * s > plan.sample_rows:  # the union must fit where the training sample did
                    s = max(1, plan.sample_rows // ks[0])
                    if r == 0:
                        notes.append(f"level 1 resampling keeps {s} points per cluster, not {s1}: the memory budget "
                                     f"holds {plan.sample_rows:,} rows; raise --max-memory to keep more")
                        note(notes[-1])
                pos = (closest_per_cluster(labels0, dist2, s) if strategy == "closest"
                       else random_per_cluster(labels0, s, rng))
                x = load_rows(store, pos, device, dtype=plan.sample_dtype)
                centroids = fit(pos, x, ks[0], seed + 1 + r).centroids
                del x, pos
                labels0, dist2 = assign_store(store, centroids, search=used[0]["assign"][-1], device=device,
                                              block_rows=plan.block_rows, progress=progress, desc="assign pool", executor=resources.executor)
                pbar.update(1)
        timings.append(_lap(1, t0))

        # Upper levels: the previous level's centroids, in memory.
        labels = [labels0.astype(np.int32)]
        cents = [np.asarray(centroids, dtype=np.float32)]
        points = torch.as_tensor(centroids, device=device)
        for level, k in enumerate(ks[1:], start=1):
            t0 = time.perf_counter()
            used.append({"fit": [], "assign": []})
            cent, lab = cluster_level(points, k, resamples=resamples, sample_size=sample_sizes[level], strategy=strategy,
                                      niter=niter, seed=seed + 1000 * level, rng=rng, search=search,
                                      init_sample=init_sample, progress=progress, used=used[-1])
            labels.append(lab.astype(np.int32))
            cents.append(cent)
            points = torch.as_tensor(cent, device=device)
            timings.append(_lap(level + 1, t0))
        meta = {**params, "store_hash": store.hash, "n": n, "ks_effective": [int(len(lab_)) and int(lab_.max()) + 1 for lab_ in labels],
                "sample_rows_wanted": plan.wanted_rows, "sample_limited_by_memory": plan.limited_by_budget,
                "sample_dtype": plan.sample_dtype, "device": plan.device,
                "backend": "torch" if search == "torch" else "faiss", "notes": notes,
                "search_used": used,
                "default_levels": levels,
                "cost_estimate": cost,
                "timings": timings}
        return Hierarchy(labels, dist2, ks, store.rows(), meta, cents)

    if not cache:
        return compute()

    def build(folder):
        h = compute()
        return h, h.save(folder)

    hierarchy, art = Artefacts(store).get_or_build("hierarchy", params, build,
                                                   lambda a: Hierarchy.load(a, store, len(ks)))
    hierarchy.key = art.key
    return hierarchy


def cluster_level(points: torch.Tensor, k: int, *, resamples: int = 9, sample_size: int = 0,
                  strategy: str = "closest", niter: int = 50, seed: int = 0, rng: np.random.Generator | None = None,
                  search: str = "flat", init_sample: int = 0, progress: bool = False,
                  used: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One upper level: k-means of ``points`` (in memory) then the resampling runs (module docstring).
    ``used`` ({"fit": [], "assign": []}) receives each run's searches (:func:`search_kind`).

    Returns (centroids (k, d) float32, label of each point (n,)).
    """
    rng = rng if rng is not None else np.random.default_rng(seed)
    used = used if used is not None else {"fit": [], "assign": []}
    probe = probe_rows(points) if search == "ivf" else None

    def fit(x: torch.Tensor, run_seed: int) -> torch.Tensor:
        f = fit_kmeans(x, k, niter=niter, seed=run_seed, init_sample=init_sample, search=search, progress=progress)
        used["fit"].append(f.search_used)
        return torch.as_tensor(f.centroids, device=points.device)

    def assign(cent: torch.Tensor):
        find = centroid_search(cent, search, len(points), probe)
        used["assign"].append(find.kind)
        return find(points)

    cent = fit(points, seed)
    lab, d2 = assign(cent)
    for r in range(resamples if sample_size > 1 else 0):
        lab_np, d2_np = lab.cpu().numpy(), d2.cpu().numpy()
        pos = (closest_per_cluster(lab_np, d2_np, sample_size) if strategy == "closest"
               else random_per_cluster(lab_np, sample_size, rng))
        cent = fit(points[torch.as_tensor(pos, device=points.device)], seed + 1 + r)
        lab, d2 = assign(cent)
    return cent.cpu().numpy().astype(np.float32), lab.cpu().numpy()


def _lap(level: int, t0: float) -> dict:
    return {"level": level, "seconds": round(time.perf_counter() - t0, 3),
            "rss_mb": round(current_rss() / 2**20, 1)}
