"""Dimension reduction for clustering: the pool projected once onto its top principal components.

``--reduce pca:D`` (both clustering selectors): PCA is fitted on a uniform sample of the pool (at most
:data:`FIT_ROWS` rows, and what the memory budget holds), then every stored row is projected --
:class:`ProjectTask`, one shard per call on the run's executor (Ray workers under ``--engine ray``) --
and written by the driver, float16, as a store of its own (the same row numbers, ids, sources, token
counts and loss columns; only ``embedding`` is D-dimensional). That store is an artefact of the pool
(``STORE/artefacts/reduced-KEY/store``), built once and reused by every later selection with the same
D, and every k-means pass, k-means++ seeding and distance of the selector then runs on it: at 4096 ->
256 dimensions, 16 times less arithmetic and disk per pass. Distances in the reduced space are the
full space's less what the dropped components held (``variance_kept`` in the metadata says how much
that is). A deduplicated pool (a view of the store) is reduced through its store: the view's rows
of the reduced store.

PCA: the covariance of the centred sample in float64 and its exact eigendecomposition
(:class:`dataselect.pool_index.kmeans.Projection`).
"""

from __future__ import annotations

import dataclasses
import re
import time

import numpy as np

from dataselect.engines.executor import ShardTask
from dataselect.errors import DataselectError
from dataselect.store import Store

FIT_ROWS = 100_000
PROJECT_ROWS = 8192  # rows projected at a time: the pass's float32 temporaries stay a few hundred MB at 4096 dims
PCA_FILE = "pca.npz"
REDUCE_HELP = ('"none", or "pca:D": cluster in the top D principal components, the pool projected once and kept '
               "beside the store (float16)")


def parse_reduce(spec: str, dim: int | None = None) -> int:
    """The target dimension of ``spec`` ("none" -> 0, "pca:256" -> 256); one line otherwise."""
    spec = str(spec).strip().lower()
    if spec in ("", "none"):
        return 0
    m = re.fullmatch(r"pca:(\d+)", spec)
    if not m or int(m.group(1)) < 1:
        raise DataselectError(f"--reduce {spec!r}: give none or pca:D with D a positive number of dimensions "
                              "(e.g. pca:256)")
    d = int(m.group(1))
    if dim is not None and d >= dim:
        raise DataselectError(f"--reduce {spec}: {d} dimensions is not fewer than the store's {dim}")
    return d


def reduced_store(pool: Store, spec: str, resources=None) -> tuple[Store, dict]:
    """``pool`` in the reduced space of ``spec`` and what was done (for ``selection.json``): the pool
    itself and ``{}`` for "none"."""
    d = parse_reduce(spec, pool.dim)
    if not d:
        return pool, {}
    from dataselect.store.artefacts import Artefacts

    base = pool.base
    params = {"method": "pca", "dim": d, "fit_rows": min(base.n_rows, FIT_ROWS), "seed": 0}
    _, art = Artefacts(base).get_or_build("reduced", params, lambda folder: _build(base, d, params, folder,
                                                                                    resources), lambda a: None)
    # opened where it now is (it was built under a temporary name)
    return _open(pool, art.path), {"reduce": f"pca:{d}", "artefact": art.key, **art.info}


def _open(pool: Store, folder) -> Store:
    """The reduced store in artefact ``folder``, as ``pool`` is: whole, or the same rows when ``pool`` is a
    deduplicated view."""
    store = Store(folder / "store")
    return store.subset(pool.keep, pool.tag) if pool is not pool.base else store


def reduced_of(pool: Store, meta: dict) -> Store:
    """The store a selection's clustering lives in: the reduced store it recorded (``artefacts.reduced``,
    checked; as ``pool``'s view when ``pool`` is one), else ``pool`` itself."""
    from dataselect.store.artefacts import Artefacts

    key = (meta.get("artefacts") or {}).get("reduced")
    return _open(pool, Artefacts(pool.base).get("reduced", key).path) if key else pool


def reduced_projection(pool: Store, reduced: dict):
    """The map of full-dimension vectors (queries) into the reduced space of ``reduced`` (what
    :func:`reduced_store` returned), or None when there is no reduction."""
    if not reduced:
        return None
    import torch

    from dataselect.pool_index.kmeans import Projection
    from dataselect.store.artefacts import Artefacts

    proj = Projection.load(Artefacts(pool.base).get("reduced", reduced["artefact"]).path / PCA_FILE)
    return lambda x: proj(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()


def _variance_kept(x, proj, step: int = 8192) -> float:
    """Share of the sample's variance the components hold, summed block by block (no float64 copy of x)."""
    import torch

    mean = torch.as_tensor(proj.mean)
    total = kept = 0.0
    for lo in range(0, len(x), step):
        total += float(((x[lo:lo + step].float() - mean).double() ** 2).sum())
        kept += float((proj(x[lo:lo + step]).double() ** 2).sum())
    return kept / total if total > 0 else 1.0


@dataclasses.dataclass
class ProjectTask(ShardTask):
    """The projection pass of ``--reduce``: every row of a shard through the PCA (``mean`` (D_in,),
    ``components`` (D, D_in) float32), :data:`PROJECT_ROWS` at a time, in reproducible float32 tiles
    (:mod:`dataselect.pool_index.tiles`; torch's ``mm`` where this machine fails their check), as float16. ``run`` returns the
    shard's columns as they are stored, with ``embedding`` (rows, D) in their place: what the driver
    writes as that shard of the reduced store. One shard per call; any worker computes the same bytes."""

    mean: np.ndarray
    components: np.ndarray

    def run(self, store: Store, shards: list[int]) -> dict[int, dict]:
        """{shard: its columns, ``embedding`` projected} for each of ``shards``."""
        return {i: self._project(store, i) for i in shards}

    def _project(self, store: Store, shard: int) -> dict:
        import torch

        from dataselect.pool_index.kmeans import Projection
        from dataselect.pool_index.tiles import Float32Tiles, float32_reproducible
        from dataselect.store.writer import embedding_array

        table = store.table(shard)
        low = np.empty((table.num_rows, len(self.components)), dtype=np.float16)
        if float32_reproducible(store.dim, len(self.components)):  # a row's bytes do not depend on the worker
            tiles = Float32Tiles(store.dim, self.components, PROJECT_ROWS, shift=self.mean)
            project = tiles.__call__
        else:
            proj = Projection(self.mean, self.components)

            def project(x):
                return proj(torch.from_numpy(x.astype(np.float32))).numpy()
        at = 0
        for chunk in table.column("embedding").chunks:  # each a view of the mapped file: nothing copied whole
            emb = chunk.flatten().to_numpy(zero_copy_only=False).reshape(-1, store.dim)  # float16
            for lo in range(0, len(emb), PROJECT_ROWS):
                part = project(emb[lo:lo + PROJECT_ROWS])
                torch.from_numpy(low[at:at + len(part)]).copy_(torch.from_numpy(part))  # torch's cast: 16x numpy's
                at += len(part)
        cols = {name: table.column(name).combine_chunks() for name in table.column_names if name != "embedding"}
        cols["embedding"] = embedding_array(low)
        return {name: cols[name] for name in table.column_names}  # the shard's own column order

    def merge(self, parts: list[dict]) -> dict:
        return {i: cols for part in parts for i, cols in part.items()}


def _build(base: Store, d: int, params: dict, folder, resources) -> tuple[None, dict]:
    import torch

    from dataselect.pool_index.kmeans import Projection
    from dataselect.pool_index.sample import load_rows, sample_positions
    from dataselect.progress import bar
    from dataselect.resources import Resources, fmt_bytes
    from dataselect.store.writer import StoreWriter, write_shard

    resources = resources or Resources.make(progress=False)
    need = params["fit_rows"] * base.dim * 4 * 2 + base.dim * base.dim * 8 * 2  # sample, its centred block, covariance
    resources.memory.require(need, f"fitting PCA to {d} dimensions on {params['fit_rows']:,} rows")
    t0 = time.perf_counter()
    positions = sample_positions(base.n_rows, params["fit_rows"], params["seed"])
    x = load_rows(base, positions, torch.device("cpu"), progress=resources.progress)
    proj = Projection.fit(x, d)
    kept = _variance_kept(x, proj)
    del x
    t_fit = time.perf_counter() - t0
    out = folder / "store"
    out.mkdir()
    config = dataclasses.replace(base.config, dim=d, raw={**base.config.raw, "dim": d} if base.config.raw else {})
    writer = StoreWriter.create(out, base.kind, config, {**base.manifest.model, "reduced_from": base.hash,
                                                         "reduce": f"pca:{d}"})
    task = ProjectTask(proj.mean, proj.components)
    executor = resources.executor
    with bar(base.n_rows, f"project to {d} dims", enabled=resources.progress) as pbar:
        for i, part in executor.imap_shards(task, base, list(range(len(base.shards)))):
            shard = base.shards[i]
            info = write_shard(out / shard.file, part[i])  # the driver is the store's one writer
            writer.record_shard(dataclasses.replace(shard, **info))
            pbar.update(shard.rows_stored)
    writer.finish()
    proj.save(folder / PCA_FILE)
    info = {"variance_kept": round(kept, 6), "fit_seconds": round(t_fit, 3),
            "project_seconds": round(time.perf_counter() - t0 - t_fit, 3), "fit_memory": fmt_bytes(need)}
    return None, info
