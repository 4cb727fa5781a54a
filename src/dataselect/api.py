"""The Python API: the command line's steps as functions, for notebooks and scripts.

>>> import dataselect as ds
>>> store = ds.embed("pool.jsonl", model="bundled", out="stores/pool")          # doctest: +SKIP
>>> queries = ds.embed("gsm8k.jsonl", model="bundled", out="stores/q", task="gsm8k")  # doctest: +SKIP
>>> sel = ds.select(store, method="rds+", queries=[queries], budget="10k")      # doctest: +SKIP
>>> sel.to_pandas().head()                                                       # doctest: +SKIP
>>> sel.save("sel/rds")                                                          # doctest: +SKIP
>>> ds.export(sel, pool="pool.jsonl", out="selected.jsonl")                      # doctest: +SKIP

Each function runs the same code as its command (``dataselect embed``, ``run``, ``export``), with the
same checks, locks and atomic writes; errors are :class:`dataselect.errors.DataselectError`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa

from dataselect.errors import DataselectError
from dataselect.store import Store, open_store

__all__ = ["SelectionResult", "dedup", "embed", "export", "load_selection", "methods", "open_store", "score", "select"]


def embed(pool, *, model: str = "bundled", out="store", task: str | None = None, tasks_from_records: bool = False,
          split: str | None = None, subset: str | None = None, streaming: bool = False,
          overwrite: bool = False, progress: bool = True, engine: str = "local", address: str | None = None,
          workers: int = 0, **options) -> Store:
    """Embed ``pool`` (a file, folder or ``datasets`` folder) into the store ``out``; return the store.

    ``task`` makes a query store whose records all belong to that task; ``tasks_from_records`` one
    whose records name their task. ``split``/``subset``/``streaming`` read ``pool`` with
    ``datasets.load_dataset`` (a hub id such as ``"allenai/tulu-3-sft-mixture"`` needs none of
    them: its ``train`` split is read). ``options`` are ``dataselect embed``'s other options with
    underscores (``max_length=1024``, ``with_loss=True``, ``device="cuda"``, ...). Resumes a partial
    store like the command. ``engine="ray"`` embeds on Ray (``address``: a cluster; ``workers``: model
    actors, 0 for one per GPU or CPU) with the same store bytes as the local engine.
    """
    from dataselect.embedding.stage import EmbedOptions, embed_store

    fields = {f.name for f in dataclasses.fields(EmbedOptions)} - {"model", "task", "queries", "overwrite",
                                                                   "progress"}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise DataselectError(f"embed() has no option {', '.join(unknown)} (options: {', '.join(sorted(fields))})")
    opts = EmbedOptions(model=model, task=task, queries=tasks_from_records or task is not None,
                        overwrite=overwrite, progress=progress, **options)
    from dataselect.checks import as_path
    from dataselect.pool import pool_source

    out = as_path(out, "out")
    embed_store(pool_source(pool, split, subset, streaming), Path(out), opts, engine=engine, address=address,
                workers=workers)
    return open_store(out)


def score(store, *, pool, split: str | None = None, with_ifd: bool = False, device: str = "auto",
          dtype: str = "auto", batch_tokens: int = 0, engine: str = "local", address: str | None = None,
          workers: int = 0, num_gpus_per_worker: float = 0.0, progress: bool = True, allow_pickle: bool = False):
    """Add per-sample losses (``loss_response``, ``n_response_tokens``; ``loss_response_alone`` with
    ``with_ifd``) to a store embedded without them, as ``dataselect score``: the store's own model over
    the records of ``pool`` (the pool it was embedded from), in this process or on Ray
    (``engine="ray"``), the same columns either way. Resumable. Returns (manifest, rows scored now)."""
    from dataselect.embedding.score import score_store
    from dataselect.engines.executor import make_executor
    from dataselect.outputs import lock
    from dataselect.pool import pool_source

    executor = make_executor(engine, address=address, workers=workers)
    with lock(store):
        return score_store(store, pool_source(pool, split), with_ifd=with_ifd, device=device, dtype=dtype,
                           batch_tokens=batch_tokens, progress=progress, allow_pickle=allow_pickle,
                           executor=executor, gpus_per_worker=num_gpus_per_worker)


@dataclasses.dataclass
class SelectionResult:
    """A selection: ``table`` (one row per picked pool row, in selection order) and ``meta`` (what
    ``selection.json`` holds). ``path`` is its folder once saved or loaded.

    Columns: ``row`` (int64 pool row), ``id``, ``rank`` (0 = picked first), ``score`` (float32),
    ``task`` (may be null), ``weight`` (float32 importance weight, 1 where the method has none), and
    method-specific ones (``cluster``, ``cluster_path``).
    """

    table: pa.Table
    meta: dict
    path: Path | None = None

    def __len__(self) -> int:
        return self.table.num_rows

    def __repr__(self) -> str:
        where = f", saved in {self.path}" if self.path else ", not saved"
        return f"<SelectionResult {self.meta['method']}: {len(self):,} of {self.meta['pool_store']['rows']:,} rows{where}>"

    @property
    def rows(self):
        """(n,) int64 pool row numbers in selection order."""
        return self.table.column("row").to_numpy()

    def to_arrow(self) -> pa.Table:
        return self.table

    def to_pandas(self):
        """A pandas DataFrame of the table (needs pandas)."""
        return self.table.to_pandas()

    def save(self, folder, overwrite: bool = False) -> Path:
        """Write ``folder`` (``selection.arrow`` + ``selection.json``) atomically, as ``dataselect run`` does."""
        from dataselect.run import save_selection

        self.path = save_selection(self.table, self.meta, folder, overwrite=overwrite)
        return self.path


def select(store, method: str = "rds+", *, budget, queries: Sequence = (), seed: int = 0, device: str = "auto",
           max_memory: str | int | None = None, engine: str = "local", address: str | None = None,
           allow_all: bool = False, progress: bool = True, dedup=None, **params) -> SelectionResult:
    """Pick ``budget`` rows (``1000``, ``"10k"``, ``"2.5M"``, ``"25%"``) of the pool ``store`` with ``method``.

    ``queries``: query stores (or their paths) for target-aware methods. ``dedup``: a :class:`Dedup`
    (from :func:`dedup`) or its folder: the method picks from its kept rows only. ``params`` are the method's
    parameters (``dataselect methods``), e.g. ``aggregate="max"`` for rds+ or ``k=[1000, 100]`` for
    hierarchical-kmeans. Nothing is written: call :meth:`SelectionResult.save`.
    """
    from dataselect.checks import as_path, as_paths
    from dataselect.run import RunSpec, compute_selection

    spec = RunSpec(method=method, store=str(as_path(store, "store")),
                   queries=[str(q) for q in as_paths(queries, "queries")],
                   budget=budget if isinstance(budget, bool) else str(budget), seed=seed, params=dict(params),
                   allow_all=allow_all, engine=engine,
                   address=address, device=device, max_memory=None if max_memory is None else str(max_memory),
                   dedup=None if dedup is None else str(getattr(dedup, "path", None) or dedup))
    table, meta = compute_selection(spec, progress=progress)
    return SelectionResult(table, meta)


def dedup(store, *, method: str = "semantic", eps: float = 0.01, keep: str | None = None, rule: str = "groups",
          pool=None, eps_sweep=(), k: int = 0, seed: int = 0, device: str = "auto",
          max_memory: str | int | None = None, engine: str = "local", address: str | None = None,
          progress: bool = True):
    """Find the duplicates of the pool ``store`` (``exact`` or ``semantic``: SemDeDup at ``eps``) and keep the
    result beside it; returns a :class:`~dataselect.duplicates.Dedup` (``.kept``, ``.removed``, ``.info["curve"]``)
    to pass as ``select(..., dedup=...)``. See :func:`dataselect.duplicates.dedup_store`."""
    from dataselect.checks import as_path
    from dataselect.duplicates import dedup_store
    from dataselect.resources import Resources

    st = open_store(as_path(store, "store"), kind="pool")
    resources = Resources.make(device, max_memory, progress, engine=engine, address=address)
    return dedup_store(st, method=method, eps=eps, keep=keep, rule=rule, pool=pool, eps_sweep=eps_sweep, k=k,
                       seed=seed, resources=resources)


def load_selection(folder) -> SelectionResult:
    """A selection folder written by ``dataselect run`` or :meth:`SelectionResult.save`."""
    from dataselect.selection import read_selection

    table, meta = read_selection(folder)
    return SelectionResult(table, meta, Path(folder))


def export(selection, *, pool, out="selected.jsonl", order: str = "selection", format: str = "original",
           bare: bool = False, overwrite: bool = False, split: str | None = None) -> Path:
    """Write the selected records of ``pool`` as JSONL (``.jsonl.gz`` compressed); returns ``out``.

    ``selection``: a :class:`SelectionResult` (saved or not) or a selection folder.
    """
    from dataselect.checks import as_path
    from dataselect.exporter import export_selection, export_table
    from dataselect.pool import pool_source

    pool = pool_source(pool, split)
    if isinstance(selection, SelectionResult):
        inputs = [selection.path] if selection.path else []
        export_table(selection.table, selection.meta, pool, Path(out), order=order, fmt=format, bare=bare,
                     overwrite=overwrite, inputs=inputs)
    else:
        export_selection(as_path(selection, "selection"), pool, Path(out), order=order, fmt=format, bare=bare,
                         overwrite=overwrite)
    return Path(out)


def methods() -> dict[str, dict]:
    """Each selector's rule, source and parameters (name, valid values, default, meaning)."""
    from dataselect.selectors import REGISTRY

    return {name: {"rule": cls.rule, "source": cls.source, "needs_queries": cls.needs_queries,
                   "parameters": cls.describe_parameters()} for name, cls in REGISTRY.items()}
