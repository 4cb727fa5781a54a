"""The k-means engine both clustering selectors use: k-means++ and Lloyd on a sample, streamed assignment.

Steps, each under the run's memory budget (:mod:`dataselect.resources`) and with a progress bar:

1. **Sample.** ``sample_size`` rows drawn uniformly (default: k-means' rule of thumb, ``256 k``
   rows, as FAISS caps its training set), shrunk to what the budget holds -- said in one line and
   recorded in the metadata when that happens.
2. **k-means++** (:func:`kmeans_plusplus`) on the sample: greedy D^2 seeding as scikit-learn and
   ssl-data-curation do it -- at each step ``2 + ln k`` candidates are drawn with probability
   proportional to the squared distance to the nearest chosen centre, and the one that lowers the
   potential most is kept. Exact triangle-inequality pruning skips rows no candidate can move, so
   seeding 20,000 centres costs minutes, not hours. On a distributed executor its parts are held by
   the workers for every round (:mod:`dataselect.pool_index.seeding`), with the same seeds.
3. **Lloyd** (:func:`lloyd`): exactly ``niter`` updates, centroids as means (``index_add``); an
   empty cluster keeps its centroid, as in ssl-data-curation. Each update sums the training rows
   store shard by store shard and adds the shards in order (:func:`fit_store_rows`), so on a
   distributed executor the sums are :class:`LloydTask` calls on its workers with the same result.
4. **Assignment** of every pool row, streamed shard by shard (:func:`assign_store`); only per-row
   label and squared distance are kept (8 bytes a row).

Backends (:mod:`dataselect.pool_index.search`): FAISS on the CPU (``flat``, or ``hnsw`` over the
centroids for large k), torch matrix multiplies on CUDA (or on the CPU, where tests check it
against FAISS). The seeding code is shared, so the same seed gives the same k-means++ seeds on
every CPU backend.

``cluster_store`` keeps the result as a ``clustering`` artefact beside the store
(:mod:`dataselect.store.artefacts`: keyed by the effective parameters and the store hash; a stale
one is refused); ``Clustering.key`` names it, and selections record it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import xxhash

from dataselect.engines.executor import Executor, LocalExecutor, ShardTask
from dataselect.errors import DataselectError
from dataselect.pool_index.sample import device_blocks, load_rows, sample_positions
from dataselect.pool_index.search import CentroidSearch, centroid_search, probe_rows, search_kind, searches_used
from dataselect.pool_index.seeding import STEP_ROWS, default_trials, kmeans_plusplus, row_chunks
from dataselect.progress import bar, note
from dataselect.resources import MiB, Resources, fmt_bytes
from dataselect.store import Store
from dataselect.store.artefacts import Artefact, Artefacts
from dataselect.torchcpu import single_torch_thread

POINTS_PER_CENTROID = 256  # k-means' rule of thumb for the training sample (FAISS's own cap)
MIN_POINTS_PER_CENTROID = 39  # FAISS warns below this
ASSIGN_KINDS = ("exact", "hnsw", "ivf")
BACKENDS = ("auto", "faiss", "torch")


COST_NOTE_S = 600  # a clustering estimated to take longer than this says so, with its cost, before it starts


def kmeans_flops(n: int, sample_rows: int, k: int, d: int, niter: int, init_rows: int,
                 trials: int | None = None) -> dict[str, float]:
    """Floating-point operations of one clustering, by step: greedy k-means++ (each of the k centres
    tries ``trials`` candidates against the ``init_rows`` seeding rows), ``niter`` Lloyd updates of the
    ``sample_rows`` training rows, and the assignment of all ``n`` rows (2 per multiply-add)."""
    trials = trials or default_trials(k)
    return {"kmeans++": 2.0 * k * trials * init_rows * d, "lloyd": 2.0 * niter * sample_rows * k * d,
            "assign": 2.0 * n * k * d}


def duration(seconds: float) -> str:
    """``seconds`` in the largest unit that leaves at least 2 of it (days, hours, minutes, s)."""
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:,.0f} {unit}"
    return f"{seconds:.0f} s"


def cost_estimate(what: str, flops: dict[str, float], ways: list[str] | None = None,
                  rate: float | None = None) -> dict:
    """A clustering's cost at this machine's GEMM rate: ``{"flop": {step: FLOP}, "gflop_per_s", "seconds"}``.

    Longer than ``COST_NOTE_S``: said in one line before the work starts, ``what`` first, then the
    FLOP by step, the time, and ``ways`` (what would make it feasible)."""
    rate = rate or gemm_rate()
    total = sum(flops.values())
    secs = total / rate
    if secs > COST_NOTE_S:
        steps = ", ".join(f"{name} {v:.1e}" for name, v in flops.items())
        note(f"{what} is {total:.1e} FLOP ({steps}): about {duration(secs)} at this machine's {rate / 1e9:.0f} "
             "GFLOP/s" + "".join(f"; {w}" for w in ways or ()))
    return {"flop": {name: float(f"{v:.3e}") for name, v in flops.items()}, "gflop_per_s": round(rate / 1e9, 1),
            "seconds": round(secs, 1)}


def gemm_rate(seconds: float = 0.05) -> float:
    """This machine's float32 matrix-multiply rate now (FLOP/s), from a 512^3 product repeated for
    ``seconds``: what the distance kernels run at."""
    a = np.random.default_rng(0).standard_normal((512, 512), dtype=np.float32)
    a @ a
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ a
        reps += 1
    return 2.0 * 512**3 * reps / (time.perf_counter() - t0)


def lloyd_rows(x: torch.Tensor) -> int:
    """Rows per distance block of a Lloyd update on ``x``'s device (the same on every worker)."""
    return STEP_ROWS * 4 if x.device.type == "cpu" else 1 << 18


def lloyd_partial(x: torch.Tensor, find: CentroidSearch, k: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """One group of rows (a shard's training rows) against the centroids ``find`` searches: (float32
    sums (k, d), counts (k,), inertia as float64). Blocks are counted from the group's first row, so the
    result depends on the group alone, wherever it is computed."""
    sums = torch.zeros((k, x.shape[1]), dtype=torch.float32, device=x.device)
    counts = torch.zeros(k, dtype=torch.int64, device=x.device)
    total = 0.0
    widen = x.dtype == torch.float16 and x.device.type == "cpu"  # a float16 sample (plan_memory)
    for lo, hi in row_chunks(len(x), lloyd_rows(x)):
        d2s = []  # a float16 sample is widened STEP_ROWS at a time (FAISS blocks queries by 4096: same distances)
        for a, b in row_chunks(hi - lo, STEP_ROWS if widen else hi - lo):
            xb = x[lo + a:lo + b].float() if widen else x[lo + a:lo + b]
            lab, d2 = find(xb)
            sums.index_add_(0, lab, xb.float())
            counts += torch.bincount(lab, minlength=k)
            d2s.append(d2)
        total += float(torch.cat(d2s).sum(dtype=torch.float64))
    return sums, counts, total


def lloyd(x: torch.Tensor, centroids: torch.Tensor, niter: int, search: str = "flat", spherical: bool = False,
          progress: bool = False, chunk_bytes: int = 64 << 20, groups: list[tuple[int, int]] | None = None,
          step=None, used: list[str] | None = None) -> tuple[torch.Tensor, float]:
    """``niter`` Lloyd updates from ``centroids`` (k, d) float32 on ``x``'s device.

    Each update sums the rows of each group (``groups``: (lo, hi) row ranges of ``x``, the training rows
    of one store shard each; default one group) on its own (:func:`lloyd_partial`), then the groups in
    order. ``step(centroids, search) -> (sums, counts, inertia)`` computes the same sums elsewhere (a
    :class:`LloydTask` per shard on the executor's workers) with the same result. ``search`` ``ivf`` is
    taken per update only where it pays for these centroids (:func:`centroid_search`, its scan measured
    on rows spread through ``x``); ``used`` (a list) receives each update's search.

    Returns (centroids, inertia of the last assignment). Empty clusters keep their centroid.
    """
    k = len(centroids)
    c = centroids.clone()
    groups = groups if groups is not None else [(0, len(x))]
    inertia = float("nan")
    probe = probe_rows(x) if search == "ivf" else None
    used = used if used is not None else []
    with bar(niter, "k-means", unit="iter", enabled=progress) as pbar:
        for _ in range(niter):
            if step is not None:  # the workers build the search: here only which one (an IVF built to decide)
                used.append(search_kind(search, c, len(x), probe))
                sums, counts, inertia = step(c, used[-1])
                sums, counts = sums.to(c.device), counts.to(c.device)
            else:
                find = centroid_search(c, search, len(x), probe, chunk_bytes=chunk_bytes)
                used.append(find.kind)
                sums, counts, inertia = add_partials(lloyd_partial(x[lo:hi], find, k) for lo, hi in groups if hi > lo)
            full = counts > 0
            if sums is not None:
                c[full] = sums[full] / counts[full, None]
            if spherical:
                c /= torch.linalg.vector_norm(c, dim=1, keepdim=True).clamp_min_(1e-12)
            pbar.update(1)
            pbar.set_postfix(inertia=f"{inertia:.4g}")
    return c, inertia


def add_partials(parts) -> tuple[torch.Tensor | None, torch.Tensor | None, float]:
    """The groups' (sums, counts, inertia), added in group order."""
    sums = counts = None
    total = 0.0
    for s, n, t in parts:
        sums = s if sums is None else sums.add_(s.to(sums.device))
        counts = n if counts is None else counts.add_(n.to(counts.device))
        total += t
    return sums, counts, total


def shard_starts(store: Store) -> np.ndarray:
    """(shards + 1,) int64: the store position each shard starts at, and the store's row count last."""
    return np.concatenate([[0], np.cumsum([s.rows_stored for s in store.shards])]).astype(np.int64)


def shard_groups(store: Store, positions: np.ndarray) -> tuple[list[int], list[tuple[int, int]]]:
    """The store shards holding some of the sorted ``positions``, and each one's (lo, hi) range of them."""
    starts = shard_starts(store)
    cuts = np.searchsorted(positions, starts)
    found = [(i, int(cuts[i]), int(cuts[i + 1])) for i in range(len(store.shards)) if cuts[i + 1] > cuts[i]]
    return [i for i, _, _ in found], [(lo, hi) for _, lo, hi in found]


@dataclass
class LloydTask(ShardTask):
    """The Lloyd sums of the training rows (sorted store ``positions``) in some shards, against
    ``centroids``: one :func:`lloyd_partial` per shard, in shard order. A worker reads only its
    shards' rows."""

    centroids: np.ndarray
    positions: np.ndarray
    search: str
    device: str = "cpu"

    def setup(self) -> None:
        self._device = torch.device(self.device)
        self._find = CentroidSearch(torch.as_tensor(self.centroids, device=self._device), self.search)

    def run(self, store: Store, shards: list[int]) -> list:
        starts = shard_starts(store)
        out = []
        for i in shards:
            lo, hi = np.searchsorted(self.positions, starts[i:i + 2])
            x = load_rows(store, self.positions[lo:hi] - starts[i], self._device, shards=[i])
            s, n, t = lloyd_partial(x, self._find, len(self.centroids))
            out.append((s.cpu(), n.cpu(), t))
        return out

    def merge(self, parts):
        return [p for part in parts for p in part]

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k not in ("_find", "_device")}


def fit_store_rows(store: Store, positions: np.ndarray, x: torch.Tensor, k: int, *, executor: Executor,
                   projected: bool = False, **kwargs) -> KMeansFit:
    """:func:`fit_kmeans` of ``x``, the store's rows at sorted ``positions``, with each Lloyd update summed
    shard by shard: in this process from ``x``, or -- on a distributed executor, and unless ``x`` was
    projected (the projection is the driver's) -- as :class:`LloydTask` calls on its workers, which
    read their shards' rows themselves and are kept for every update. The same centroids either way."""
    shards, groups = shard_groups(store, positions)
    step = None
    if executor.distributed and not projected:
        device = str(x.device)

        def step(c: torch.Tensor, search: str):
            task = LloydTask(c.detach().cpu().numpy().astype(np.float32), positions, search, device)
            return add_partials(executor.map_shards(task, store, shards))

    with executor.keep_workers():
        fit = fit_kmeans(x, k, groups=groups, step=step, executor=executor, **kwargs)
    fit.lloyd_on = "workers" if step is not None else "driver"
    fit.seeding_on = "workers" if executor.distributed else "driver"
    return fit


@dataclass
class KMeansFit:
    """k-means of an in-memory set: centroids (k, d) float32, seed indices (k,), inertia, seconds."""

    centroids: np.ndarray
    seeds: np.ndarray
    inertia: float
    seconds: dict = field(default_factory=dict)
    lloyd_on: str = "driver"  # or "workers": the updates' sums were LloydTask calls on the executor
    searches: list = field(default_factory=list)  # each Lloyd update's centroid search (--assign ivf: where it paid)
    seeding_on: str = "driver"  # or "workers": k-means++'s parts were held by the executor's workers

    @property
    def search_used(self) -> str:
        """The updates' searches in a word: ``flat``, ``ivf``, or ``ivf for 3 of 20 updates, else flat``."""
        return searches_used(self.searches)


def fit_kmeans(x: torch.Tensor, k: int, *, niter: int = 20, seed: int = 0, n_local_trials: int | None = None,
               init_sample: int = 0, search: str = "flat", spherical: bool = False,
               progress: bool = False, groups: list[tuple[int, int]] | None = None, step=None,
               executor: Executor | None = None) -> KMeansFit:
    """k-means++ seeding then ``niter`` Lloyd updates on ``x`` (n, d); k is capped at n.

    ``init_sample``: seed on a uniform subsample of ``init_sample * k`` rows of ``x`` (0: on all of
    ``x``, as ssl-data-curation does). Seeding reads its input once per centre, so on a CPU at large
    k a subsample is many times faster; Lloyd always runs on all of ``x``. ``groups``, ``step``: see
    :func:`lloyd` (rows of a store: :func:`fit_store_rows`); the seeding counts its blocks per group
    too, and runs its parts on ``executor`` (:func:`kmeans_plusplus`: the same seeds anywhere).
    """
    k = int(min(k, len(x)))
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    groups = groups if groups is not None else [(0, len(x))]
    if init_sample and init_sample * k < len(x):
        sub = np.sort(rng.choice(len(x), init_sample * k, replace=False))
        cuts = np.searchsorted(sub, [b for g in groups for b in g]).reshape(-1, 2)  # each group's share of it
        seeds = sub[kmeans_plusplus(x[torch.as_tensor(sub, device=x.device)], k, rng, n_local_trials, progress,
                                    groups=[tuple(c) for c in cuts.tolist()], executor=executor)]
    else:
        seeds = kmeans_plusplus(x, k, rng, n_local_trials, progress, groups=groups, executor=executor)
    t1 = time.perf_counter()
    init = x[torch.as_tensor(seeds, device=x.device)].float()
    if spherical:
        init /= torch.linalg.vector_norm(init, dim=1, keepdim=True).clamp_min_(1e-12)
    used: list[str] = []
    if search == "torch":
        cent, inertia = lloyd(x, init, niter, search, spherical, progress, groups=groups, step=step, used=used)
    else:
        with single_torch_thread():  # FAISS's OpenMP threads need the cores
            cent, inertia = lloyd(x, init, niter, search, spherical, progress, groups=groups, step=step, used=used)
    return KMeansFit(cent.cpu().numpy(), seeds, inertia,
                     {"kmeans++": round(t1 - t0, 3), "lloyd": round(time.perf_counter() - t1, 3)}, searches=used)


@dataclass
class Projection:
    """PCA to fewer dimensions: ``(x - mean) @ components.T`` (components (d_out, d_in))."""

    mean: np.ndarray
    components: np.ndarray

    @classmethod
    def fit(cls, x: torch.Tensor, dim: int) -> Projection:
        mean = x.float().mean(0)
        cov = torch.zeros((x.shape[1], x.shape[1]), dtype=torch.float64, device=x.device)
        for lo, hi in row_chunks(len(x), STEP_ROWS):
            xc = (x[lo:hi].float() - mean).double()
            cov += xc.T @ xc
        _, vecs = torch.linalg.eigh(cov)
        comp = vecs[:, -dim:].flip(1).T.float()
        return cls(mean.cpu().numpy(), comp.cpu().numpy())

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.as_tensor(self.mean, device=x.device)
        comp = torch.as_tensor(self.components, device=x.device)
        return (x.float() - mean) @ comp.T

    def save(self, path: Path) -> None:
        np.savez(path, mean=self.mean, components=self.components)

    @classmethod
    def load(cls, path: Path) -> Projection:
        """The projection :meth:`save` wrote; an unreadable file is one line naming it."""
        try:
            with np.load(path) as z:
                return cls(z["mean"], z["components"])
        except (OSError, ValueError, KeyError) as exc:
            raise DataselectError(f"{path}: PCA projection is unreadable ({exc}); delete its folder and run again") \
                from None


def resolve_search(backend: str, assign: str, device: torch.device) -> str:
    """The centroid search kind for a backend choice, assignment mode and device."""
    if backend not in BACKENDS:
        raise DataselectError(f"--backend {backend!r}: choose from {', '.join(BACKENDS)}")
    if assign not in ASSIGN_KINDS:
        raise DataselectError(f"--assign {assign!r}: choose from {', '.join(ASSIGN_KINDS)}")
    if backend == "faiss" and device.type != "cpu":
        raise DataselectError("--backend faiss runs on the CPU (faiss-cpu); use --backend torch with --device cuda")
    if backend == "torch" or (backend == "auto" and device.type != "cpu"):
        if assign != "exact":
            raise DataselectError(f"--assign {assign} is a FAISS CPU option; on the torch backend assignment is exact")
        return "torch"
    return "flat" if assign == "exact" else assign


@dataclass
class AssignTask(ShardTask):
    """Nearest centroid of every row of some shards: (labels int32, squared distances float32), in store
    order. ``device`` is a torch device name; the search over the centroids is built once per worker."""

    centroids: np.ndarray
    search: str
    device: str = "cpu"
    projection: Projection | None = None
    block_rows: int = 32768
    progress: bool = False
    desc: str = "assign"

    def setup(self) -> None:
        self._device = torch.device(self.device)
        self._find = CentroidSearch(torch.as_tensor(self.centroids, device=self._device), self.search)

    def run(self, store: Store, shards: list[int]) -> tuple[np.ndarray, np.ndarray]:
        n = sum(store.shards[i].rows_stored for i in shards)
        labels = np.empty(n, dtype=np.int32)
        dist2 = np.empty(n, dtype=np.float32)
        at = 0
        with bar(n, self.desc, enabled=self.progress) as pbar:
            for lo, block in device_blocks(store, self._device, self.block_rows, shards):
                xb = self.projection(block) if self.projection is not None else block
                lab, d2 = self._find(xb)
                labels[lo:lo + len(block)] = lab.cpu().numpy()
                dist2[lo:lo + len(block)] = d2.cpu().numpy()
                at = lo + len(block)
                pbar.update(len(block))
        assert at == n
        return labels, dist2

    def merge(self, parts):
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k not in ("_find", "_device")}


def assign_store(store: Store, centroids: np.ndarray, *, search: str, device: torch.device,
                 projection: Projection | None = None, block_rows: int = 32768, progress: bool = False,
                 desc: str = "assign", executor: Executor | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid of every stored row, streamed shard by shard on ``executor`` (default: this
    process): (labels (n,) int32, squared distances (n,) float32)."""
    task = AssignTask(np.asarray(centroids, dtype=np.float32) if not torch.is_tensor(centroids)
                      else centroids.detach().cpu().numpy().astype(np.float32), search, str(device), projection,
                      block_rows, progress, desc)
    labels, dist2 = (executor or LocalExecutor()).map_shards(task, store)
    assert len(labels) == store.n_rows
    return labels, dist2


@dataclass
class Plan:
    """Memory plan of one clustering: how many sample rows fit, and what the rule of thumb wanted."""

    sample_rows: int
    wanted_rows: int
    block_rows: int
    host_bytes: int
    device: str
    limited_by_budget: bool
    sample_dtype: str = "float32"  # on the CPU: float16 when a float32 sample would be cut short


def plan_memory(store: Store, k: int, d_cluster: int, wanted: int, device: torch.device,
                resources: Resources, keep_rows: int = 0, extra: int = 0, half_ok: bool = True) -> Plan:
    """Size the training sample and streaming blocks from the memory budget (see module docstring).

    Host memory: per-row state (labels, distances, row numbers: 16 B/row, plus ``keep_rows`` more
    int64 positions), centroid state (4 k d float32: centroids, their start, the Lloyd sums and one
    shard's partial sums), the k-means++ state (13 B per sample row), a
    streaming block (float32 copy plus k distances a row), one mapped shard of float16, and -- on
    the CPU -- the float32 sample itself, or (``half_ok``) a float16 one where float32 would cut the
    sample short. On CUDA the sample lives in GPU memory as float16.
    """
    d = store.dim
    n = store.n_rows
    shard_rows = max((s.rows_stored for s in store.shards), default=0)
    budget = resources.memory
    free = budget.free()
    block_rows = int(max(256, min(32768, min(64 * MiB, free // 8) // (4 * (d + k)))))  # <= 1/8 of what is free
    fixed = (extra + 16 * n + 8 * keep_rows + 4 * 4 * k * max(d, d_cluster) + block_rows * 4 * (d + k) + shard_rows * d * 2)
    per_row = 13 + (4 * max(d, d_cluster) if device.type == "cpu" else 0)
    dtype = "float32" if device.type == "cpu" else "float16"
    widened = 2 * STEP_ROWS * d * 4  # a float16 sample's rows widened to float32 where computed on
    if half_ok and device.type == "cpu" and d_cluster == d and \
            (free - fixed) // per_row < min(wanted, n, (free - fixed - widened) // (13 + 2 * d)):
        # the stored values are float16: a float16 sample is the same sample in half the memory, each
        # block widened to float32 where it is computed on -- nearly twice the rows where a float32
        # sample would be cut short (and more than the widened blocks cost)
        per_row, dtype, fixed = 13 + 2 * d, "float16", fixed + widened
    minimum = fixed + per_row * k
    budget.require(minimum, f"clustering {n:,} rows into k={k:,} clusters ({d}-dim)", free)
    fit = (free - fixed) // per_row if device.type == "cpu" else wanted
    if device.type == "cuda":
        gpu_free, _ = torch.cuda.mem_get_info(device)
        fit = int(min(fit, 0.8 * gpu_free // (2 * d + 16)))
    rows = int(min(wanted, n, fit))
    return Plan(rows, int(min(wanted, n)), block_rows, fixed + per_row * rows, str(device), rows < min(wanted, n),
                dtype)


def max_k(store: Store, d_cluster: int, device: torch.device, resources: Resources, wanted: int,
          per_centroid: int = MIN_POINTS_PER_CENTROID, plan_for=None) -> int:
    """The largest k <= ``wanted`` (0 when none) whose plan fits the memory budget with a training sample
    of at least ``per_centroid`` rows per centroid (or the whole pool): what a caller may cap a rule's k
    to. ``plan_for(k)``: the caller's own plan (default: :func:`plan_memory` of a plain clustering)."""
    plan_for = plan_for or (lambda k: plan_memory(store, k, d_cluster, k * POINTS_PER_CENTROID, device, resources))

    def fits(k: int) -> bool:
        try:
            plan = plan_for(k)
        except DataselectError:
            return False
        return plan.sample_rows >= min(store.n_rows, per_centroid * k)

    if fits(wanted):
        return wanted
    lo, hi = 0, wanted  # fits(lo) (or lo == 0) and not fits(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


@dataclass
class Clustering:
    """A clustering of a store. Arrays are in store order (position i is pool row ``rows[i]``).

    centroids : (k, d) float32, in the PCA space when ``pca_dim`` was set.
    labels : (n,) int32 cluster of each row.
    dist2 : (n,) float32 squared distance of each row to its centroid.
    rows : (n,) int64 pool row numbers.
    meta : effective parameters (k, sample size, device, backend, timings).
    """

    centroids: np.ndarray
    labels: np.ndarray
    dist2: np.ndarray
    rows: np.ndarray
    meta: dict
    projection: Projection | None = None
    key: str = ""  # the artefact it is kept as ("" when not kept)

    @property
    def k(self) -> int:
        return len(self.centroids)

    def sizes(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=self.k)

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Map (n, dim) vectors into the space the centroids live in."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        return self.projection(torch.from_numpy(x)).numpy() if self.projection is not None else x

    def rounded(self, store: Store, positions: np.ndarray, resources: Resources | None = None) -> Clustering:
        """The clustering whose centres are the rows at store ``positions`` (k', one per new centre): every
        row assigned afresh to its nearest such row, streamed; a centre row's own label is its centre.
        Axiotis et al. 2024 §5.1 replace each centre by its closest data point this way. Kept as an
        artefact of its own when this clustering is one."""
        positions = np.asarray(positions, dtype=np.int64)
        if not self.key:
            return self._round(store, positions, resources)

        def build(folder: Path):
            cl = self._round(store, positions, resources)
            return cl, cl.save(folder)

        params = {"rounded_from": self.key, "centres": xxhash.xxh3_64_hexdigest(positions.tobytes())}
        cl, art = Artefacts(store).get_or_build("clustering", params, build, lambda a: Clustering.load(a, store))
        cl.key = art.key
        return cl

    def _round(self, store: Store, positions: np.ndarray, resources: Resources | None) -> Clustering:
        resources = resources or Resources.make(progress=False)
        centres = self.transform(store.take(self.rows[positions])["embedding"])
        device = resources.torch_device()
        search = resolve_search(self.meta.get("backend", "auto") if device.type == "cpu" else "torch",
                                {"hnsw": "hnsw", "ivf": "ivf"}.get(self.meta.get("search"), "exact"), device)
        plan = plan_memory(store, len(centres), centres.shape[1], 0, device, resources)
        search = search_kind(search, torch.as_tensor(centres), store.n_rows,
                             probe_rows(centres) if search == "ivf" else None)
        labels, dist2 = assign_store(store, centres, search=search, device=device, projection=self.projection,
                                     block_rows=plan.block_rows, progress=resources.progress,
                                     desc="assign to rounded centres", executor=resources.executor)
        labels[positions] = np.arange(len(positions), dtype=np.int32)
        dist2[positions] = 0.0
        meta = {**self.meta, "k_effective": len(centres), "rounded_centres": True, "rounded_from": self.key,
                "search_used": {**self.meta.get("search_used", {}), "rounded": search},
                "pool_inertia": float(dist2.astype(np.float64).sum())}
        return Clustering(centres, labels, np.maximum(dist2, 0.0), self.rows, meta, self.projection)

    def save(self, folder: Path) -> dict:
        """Write the arrays into ``folder``; returns the metadata to record with them."""
        np.save(folder / "centroids.npy", self.centroids)
        np.save(folder / "labels.npy", self.labels)
        np.save(folder / "dist2.npy", self.dist2)
        if self.projection is not None:
            self.projection.save(folder / "pca.npz")
        return self.meta

    @classmethod
    def load(cls, artefact: Artefact, store: Store) -> Clustering:
        folder, meta = artefact.path, artefact.info
        try:
            labels, dist2 = np.load(folder / "labels.npy"), np.load(folder / "dist2.npy")
            centroids = np.load(folder / "centroids.npy")
            proj = Projection.load(folder / "pca.npz") if (folder / "pca.npz").exists() else None
        except (OSError, ValueError, KeyError) as exc:
            raise DataselectError(f"{folder}: cached clustering is unreadable ({exc}); delete it and run again") from None
        if len(labels) != store.n_rows or len(dist2) != store.n_rows or len(centroids) != meta.get("k_effective") \
                or (len(labels) and (labels.min() < 0 or labels.max() >= len(centroids))):
            raise DataselectError(f"{folder}: cached clustering does not match the store ({store.n_rows:,} rows); "
                                  "delete it and run again")
        return cls(centroids, labels, dist2, store.rows(), meta, proj, artefact.key)


def sample_note(what: str, plan: Plan, k: int) -> str:
    held = "float16 " if plan.sample_dtype == "float16" and plan.device == "cpu" else ""
    few = (f", below the {MIN_POINTS_PER_CENTROID} per centroid FAISS asks for"
           if plan.sample_rows < MIN_POINTS_PER_CENTROID * k else "")
    return (f"{what}: the memory budget holds a {plan.sample_rows:,}-row {held}training sample "
            f"({plan.sample_rows / k:.0f} per centroid{few}), not the {plan.wanted_rows:,} rows of the rule of "
            f"thumb ({POINTS_PER_CENTROID} per centroid); raise --max-memory for a larger sample")


def cluster_store(store: Store, k: int, *, niter: int = 20, seed: int = 0, spherical: bool = False,
                  sample_size: int = 0, pca_dim: int = 0, n_local_trials: int | None = None, init_sample: int = 0,
                  backend: str = "auto", assign: str = "exact", resources: Resources | None = None,
                  cache: bool = True) -> Clustering:
    """Cluster the store (see module docstring); returns the cached clustering when there is one."""
    resources = resources or Resources.make(progress=False)
    n = store.n_rows
    if not 1 <= k <= n:
        raise DataselectError(f"--k {k}: must be between 1 and the pool size ({n:,})")
    if pca_dim and not 0 < pca_dim < store.dim:
        raise DataselectError(f"--pca-dim {pca_dim}: must be between 1 and the dimension {store.dim}")
    if sample_size < 0 or niter < 1:
        raise DataselectError("--sample-size must be >= 0 and --niter >= 1")
    device = resources.torch_device()
    search = resolve_search(backend, assign, device)
    wanted = sample_size or k * POINTS_PER_CENTROID
    seed_copy = 4 * init_sample * k * store.dim if device.type == "cpu" else 0  # the seeding subsample
    plan = plan_memory(store, k, pca_dim or store.dim, wanted, device, resources, extra=seed_copy)
    params = {"k": k, "niter": niter, "seed": seed, "spherical": spherical, "sample_rows": plan.sample_rows,
              "pca_dim": pca_dim, "n_local_trials": n_local_trials or default_trials(k), "init_sample": init_sample,
              "search": search}
    if not cache:
        return _cluster(store, k, params, plan, proj_dim=pca_dim, niter=niter, seed=seed, spherical=spherical,
                        n_local_trials=n_local_trials, init_sample=init_sample, search=search, device=device,
                        resources=resources)

    def build(folder: Path):
        cl = _cluster(store, k, params, plan, proj_dim=pca_dim, niter=niter, seed=seed, spherical=spherical,
                      n_local_trials=n_local_trials, init_sample=init_sample, search=search, device=device,
                      resources=resources)
        return cl, cl.save(folder)

    clustering, art = Artefacts(store).get_or_build("clustering", params, build, lambda a: Clustering.load(a, store))
    clustering.key = art.key
    return clustering


def _cluster(store: Store, k: int, params: dict, plan, *, proj_dim: int, niter: int, seed: int, spherical: bool,
             n_local_trials, init_sample: int, search: str, device, resources: Resources) -> Clustering:
    n, pca_dim = store.n_rows, proj_dim
    if plan.limited_by_budget:
        note(sample_note(f"k-means with k={k:,}", plan, k))
    t0 = time.perf_counter()
    positions = sample_positions(n, plan.sample_rows, seed)
    x = load_rows(store, positions, device, progress=resources.progress, dtype=plan.sample_dtype)
    proj = None
    if pca_dim:
        proj = Projection.fit(x, pca_dim)
        x = proj(x).to(x.dtype)
    t_sample = time.perf_counter() - t0
    fit = fit_store_rows(store, positions, x, k, executor=resources.executor, projected=proj is not None,
                         niter=niter, seed=seed, n_local_trials=n_local_trials, init_sample=init_sample,
                         search=search, spherical=spherical, progress=resources.progress)
    probe = probe_rows(x) if search == "ivf" else None  # rows like the pool's, for the assignment's choice
    del x
    t1 = time.perf_counter()
    searches = {"fit": fit.search_used,
                "assign": search_kind(search, torch.as_tensor(fit.centroids), n, probe)}
    labels, dist2 = assign_store(store, fit.centroids, search=searches["assign"], device=device, projection=proj,
                                 block_rows=plan.block_rows, progress=resources.progress, executor=resources.executor)
    meta = {**params, "store_hash": store.hash, "n": n, "k_effective": len(fit.centroids),
            "sample_rows_wanted": plan.wanted_rows, "sample_limited_by_memory": plan.limited_by_budget,
            "sample_dtype": plan.sample_dtype, "planned_host_bytes": plan.host_bytes, "planned_host": fmt_bytes(plan.host_bytes),
            "device": plan.device, "backend": "torch" if search == "torch" else "faiss",
            "lloyd_on": fit.lloyd_on, "seeding_on": fit.seeding_on, "search_used": searches,
            "sample_inertia": fit.inertia, "pool_inertia": float(dist2.astype(np.float64).sum()),
            "seconds": {"sample": round(t_sample, 3), **fit.seconds, "assign": round(time.perf_counter() - t1, 3)}}
    return Clustering(fit.centroids, labels, dist2, store.rows(), meta, proj)
