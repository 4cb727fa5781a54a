"""``dataselect run``: store(s) -> selection folder.

Settings come from built-in defaults, then a YAML config (``--config``), then the command line;
a later source wins. A config looks like::

    method: rds+
    store: stores/pool
    queries: [stores/q_math, stores/q_code]
    budget: 10k
    seed: 0
    out: selections/rds
    params: {aggregate: max, round_robin: paper}
"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import yaml

from dataselect import __version__
from dataselect.budget import parse_budget
from dataselect.errors import DataselectError
from dataselect.resources import Resources
from dataselect.selection import write_selection
from dataselect.selectors import build_selector
from dataselect.store import open_store

CONFIG_KEYS = {"method", "store", "queries", "budget", "seed", "out", "params", "allow_all", "engine",
               "address", "device", "max_memory", "dedup"}


@dataclass
class RunSpec:
    """Everything a selection run needs; ``params`` are the method's own parameters."""

    method: str = "rds+"
    store: str | None = None
    queries: list[str] = field(default_factory=list)
    budget: str = "10%"
    seed: int = 0
    out: str = "selection"
    params: dict = field(default_factory=dict)
    allow_all: bool = False
    engine: str = "local"
    address: str | None = None
    device: str = "auto"
    max_memory: str | None = None
    dedup: str | None = None  # a dedup result of the store (`dataselect dedup`): its kept rows are the pool
    progress: bool = True  # the command line's and the API's, not a config setting
    overwrite: bool = False  # replace an existing selection folder (one dataselect wrote)

    def validate(self) -> None:
        """Types and choices of every setting, once, before any work (checks.py)."""
        from dataselect.checks import as_path, as_paths, check_seed

        check_seed(self.seed)
        if not isinstance(self.method, str):
            raise DataselectError(f"--method {self.method!r}: expected a method name (`dataselect methods`)")
        self.store = str(as_path(self.store, "--store"))
        self.queries = [str(q) for q in as_paths(self.queries, "--queries")]
        if isinstance(self.budget, bool) or not isinstance(self.budget, (str, int, float)):
            raise DataselectError(f"--budget {self.budget!r}: expected a count (1000, 10k, 2.5M) or a share (10%)")
        if not isinstance(self.params, dict):
            raise DataselectError(f"method parameters must be a mapping, got {type(self.params).__name__}")


def load_config(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise DataselectError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise DataselectError(f"{path}{line}: invalid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(data, dict):
        raise DataselectError(f"{path}:1: a config must be a mapping of settings")
    unknown = set(data) - CONFIG_KEYS
    if unknown:
        raise DataselectError(f"{path}: unknown setting(s) {', '.join(sorted(unknown))} "
                              f"(known: {', '.join(sorted(CONFIG_KEYS))})")
    if isinstance(data.get("queries"), str):  # paths in a config are relative to the working directory
        data["queries"] = [data["queries"]]
    return data


def merge_spec(config: dict, cli: dict) -> RunSpec:
    """Defaults < config < command line (``None`` on the command line means "not given")."""
    spec = RunSpec()
    for source in (config, cli):
        for key, val in source.items():
            if val is None or (key == "queries" and not val):
                continue
            if key == "params":
                spec.params = {**spec.params, **{k.replace("-", "_"): v for k, v in val.items()}}
            else:
                setattr(spec, key, val)
    if not spec.store:
        raise DataselectError("no pool store given: pass --store STORE or set 'store' in --config")
    return spec


def _relative(store, out) -> str:
    """The store's path from the selection folder, so that both can move together."""
    return os.path.relpath(Path(store).resolve(), Path(out).resolve())


def _task_counts(tasks) -> dict:
    if tasks is None:
        return {}
    return dict(Counter(t for t in tasks))


def compute_selection(spec: RunSpec, progress: bool = False) -> tuple[pa.Table, dict]:
    """Run the selector of ``spec`` -> (the selection table, its ``selection.json`` contents); writes nothing."""
    t0 = time.perf_counter()
    spec.validate()
    resources = Resources.make(spec.device, spec.max_memory, progress, engine=spec.engine, address=spec.address)
    pool = open_store(spec.store, kind="pool")
    dedup = None
    if spec.dedup:
        from dataselect.duplicates import load_dedup

        dedup = load_dedup(pool, spec.dedup)
        pool = dedup.apply(pool)
    queries = [open_store(q) for q in spec.queries]
    selector = build_selector(spec.method, spec.params)
    if queries and not (selector.needs_queries or selector.uses_queries):
        raise DataselectError(f"method {spec.method!r} does not use --queries; drop them, or choose rds+ or "
                              "kmeans-sensitivity (target-aware)")
    if selector.needs_queries and not queries:
        raise DataselectError(f"method {spec.method!r} needs --queries (query stores made with "
                              "`dataselect embed QUERIES --task NAME`)")
    budget = parse_budget(spec.budget, pool.n_rows, spec.allow_all)
    rng = np.random.default_rng(spec.seed)
    selection = selector.select(pool, budget, rng, queries, resources)
    from dataselect.pool.identity import HASH_COLUMN, has_hashes

    ids_sources = pool.take(selection.rows, ("id", "source", *((HASH_COLUMN,) if has_hashes(pool) else ())))
    wall = time.perf_counter() - t0
    meta = {
        "method": spec.method, "params": selector.get_params(), "seed": spec.seed,
        "budget": {"requested": str(spec.budget), "rows": budget}, "selected": len(selection),
        "pool_store": {"path": str(pool.path.resolve()), "store_hash": pool.base.hash, "rows": pool.n_rows,
                       "pool_fingerprint": pool.config.pool.fingerprint,
                       "pool_name": pool.config.pool.name},
        "query_stores": [{"path": str(q.path.resolve()), "store_hash": q.hash, "rows": q.n_rows} for q in queries],
        "counts_per_task": _task_counts(selection.tasks),
        "counts_per_source": dict(Counter("" if s is None else s for s in ids_sources["source"])),
        "engine": spec.engine, "resources": resources.describe(), "method_info": selection.info,
        "artefacts": {**({"dedup": dedup.key} if dedup else {}), **selection.artefacts},
        "dedup": None if dedup is None else {"key": dedup.key, "method": dedup.info.get("method"),
                                             "eps": dedup.info.get("eps"), "rule": dedup.info.get("rule"),
                                             "removed": dedup.removed, "rows_before": pool.base.n_rows},
        "version": __version__, "wall_s": round(wall, 3),
    }
    return selection.table(ids_sources["id"], ids_sources.get(HASH_COLUMN)), meta


def save_selection(table: pa.Table, meta: dict, out, overwrite: bool = False) -> Path:
    """Write a selection folder ``out``; its stores' paths are also recorded relative to it."""
    stores = [meta["pool_store"], *meta.get("query_stores", [])]
    for rec in stores:
        rec["relative_path"] = _relative(rec["path"], out)
    return write_selection(out, table, meta, overwrite=overwrite, inputs=[rec["path"] for rec in stores])


def run_selection(spec: RunSpec, overwrite: bool = False, progress: bool = False) -> tuple[Path, dict]:
    """Run ``spec``; write the selection folder ``spec.out``; return (folder, selection.json contents)."""
    folder, table, meta = select_and_save(spec, overwrite, progress)
    return folder, meta


def select_and_save(spec: RunSpec, overwrite: bool = False, progress: bool = False) -> tuple[Path, pa.Table, dict]:
    """Run ``spec`` and write the selection folder ``spec.out``: (folder, table, selection.json contents).

    The output's lock is held from the start, so a second run into the same folder is refused at
    once, naming the first, not after its own selection when saving."""
    from dataselect.outputs import claim, lock

    with lock(spec.out, reentrant=True):
        claim(Path(spec.out), overwrite=overwrite, what="selection")
        table, meta = compute_selection(spec, progress)
        return save_selection(table, meta, spec.out, overwrite=overwrite), table, meta
