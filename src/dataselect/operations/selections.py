"""Operations that select: select (compute), run (compute and save), dedup, methods, queries.

The options of a selection are :class:`dataselect.selection_run.RunSpec` (settings a ``--config`` YAML can
also give; ``params`` are the method's own, declared by the selector).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from dataselect.operations.options import EngineOptions, Options
from dataselect.selection_run import RunSpec


@dataclass
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
        from dataselect.selection_run import save_selection

        self.path = save_selection(self.table, self.meta, folder, overwrite=overwrite)
        return self.path


def select(spec: RunSpec) -> SelectionResult:
    """The selection ``spec`` asks for, computed; nothing is written (:meth:`SelectionResult.save`)."""
    from dataselect.selection_run import compute_selection

    table, meta = compute_selection(spec, progress=spec.progress)
    return SelectionResult(table, meta)


def run(spec: RunSpec) -> SelectionResult:
    """``dataselect run``: the selection computed and written to ``spec.out`` (its lock held from the start,
    so a second run into the same folder is refused at once)."""
    from dataselect.selection_run import select_and_save

    folder, table, meta = select_and_save(spec, overwrite=spec.overwrite, progress=spec.progress)
    return SelectionResult(table, meta, Path(folder))


def load_selection(folder) -> SelectionResult:
    """A selection folder written by ``dataselect run`` or :meth:`SelectionResult.save`."""
    from dataselect.selection import read_selection

    table, meta = read_selection(folder)
    return SelectionResult(table, meta, Path(folder))


# -- dedup ------------------------------------------------------------------------------------------
@dataclass(kw_only=True)
class DedupOptions(EngineOptions):
    """``dataselect dedup`` (see :func:`dataselect.duplicates.dedup_store` for each option's meaning)."""

    store: str | Path
    method: str = "semantic"
    eps: float = 0.01
    keep: str | None = None
    rule: str = "groups"
    pool: str | Path | None = None
    eps_sweep: tuple = ()
    k: int = 0
    seed: int = 0
    device: str = "auto"
    max_memory: str | int | None = None
    progress: bool = True


def dedup(o: DedupOptions):
    """Find the pool store's duplicates and keep the result beside it: a
    :class:`~dataselect.duplicates.Dedup` (``.kept``, ``.removed``, ``.info["curve"]``, ``.path``) to
    select from (``run --dedup``, ``select(dedup=...)``)."""
    from dataselect.checks import as_path
    from dataselect.duplicates import dedup_store
    from dataselect.resources import Resources
    from dataselect.store import open_store

    o.validate()
    st = open_store(as_path(o.store, "store"), kind="pool")
    resources = Resources.make(o.device, o.max_memory, o.progress, engine=o.engine, address=o.address,
                               workers=o.workers)
    return dedup_store(st, method=o.method, eps=o.eps, keep=o.keep, rule=o.rule, pool=o.pool,
                       eps_sweep=list(o.eps_sweep), k=o.k, seed=o.seed, resources=resources)


# -- methods, queries -------------------------------------------------------------------------------
def methods() -> dict[str, dict]:
    """Each selector's rule, source, whether it needs queries, and its parameters (name, values, default,
    meaning): what ``dataselect methods`` prints."""
    from dataselect.selectors import REGISTRY

    return {name: {"rule": cls.rule, "source": cls.source, "needs_queries": cls.needs_queries,
                   "summary": ((inspect.getdoc(cls) or "").splitlines() or [""])[0],
                   "parameters": cls.describe_parameters()} for name, cls in sorted(REGISTRY.items())}


@dataclass(kw_only=True)
class QueriesOptions(Options):
    """``dataselect queries``: one of the RDS+ paper's query sets (``task``) from its files (``src``: see
    the command's help), written as JSONL to ``out``; ``seed`` where the paper's code draws at random."""

    task: str
    src: str | Path | None = None
    out: str | Path = Path("queries.jsonl")
    seed: int = 42
    overwrite: bool = False


@dataclass
class QueryFile:
    """The query file written: its task and number of queries."""

    path: Path
    task: str
    rows: int


def queries(o: QueriesOptions) -> QueryFile:
    """Build the query set as the paper's code builds it and write it; embed it next (``tasks_from_records``)."""
    from dataselect.query_sets import write_queries

    o.validate()
    path, n = write_queries(o.task, o.out, o.src, seed=o.seed, overwrite=o.overwrite)
    return QueryFile(Path(path), o.task, n)
