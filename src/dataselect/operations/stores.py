"""Operations on stores: embed, score, inspect, verify, index, neighbors."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dataselect.embedding.options import EmbedOptions
from dataselect.errors import DataselectError
from dataselect.operations.options import EngineOptions, Options, PoolOptions
from dataselect.store.manifest import Manifest


# -- embed ------------------------------------------------------------------------------------------
@dataclass(kw_only=True)
class EmbedJob(EmbedOptions, PoolOptions, EngineOptions):
    """``dataselect embed``: the pool, the store folder ``out``, the embedding options
    (:class:`~dataselect.embedding.stage.EmbedOptions`) and the engine. ``task`` makes a query store
    whose records all belong to that task, ``tasks_from_records`` one whose records name their task."""

    out: Path = Path("store")
    tasks_from_records: bool = False

    def validate(self) -> None:
        from dataselect.checks import as_path

        self.out = as_path(self.out, "out")
        self.queries = self.queries or self.tasks_from_records or self.task is not None
        EmbedOptions.validate(self)


def embed(o: EmbedJob) -> Manifest:
    """Embed the pool into the store ``o.out`` holding its lock for the whole run, in this process or on
    Ray: the same store bytes either way. Resumes a partial store. Returns its manifest."""
    from dataselect.embedding.stage import EmbedStage
    from dataselect.outputs import lock

    o.validate()
    executor = o.executor()
    with lock(o.out):  # one writer per store, for the whole run
        return EmbedStage(o.source(), o.out, o, executor, gpus_per_worker=o.num_gpus_per_worker).run()


# -- score ------------------------------------------------------------------------------------------
@dataclass(kw_only=True)
class ScoreOptions(PoolOptions, EngineOptions):
    """``dataselect score``: the store, the pool it was embedded from, and how to compute its losses."""

    store: str | Path
    with_ifd: bool = False
    device: str = "auto"
    dtype: str = "auto"
    batch_tokens: int = 0
    progress: bool = True
    allow_pickle: bool = False


@dataclass
class Scored:
    manifest: Manifest
    rows_scored: int  # 0: every shard had its losses already (the model was not loaded)


def score(o: ScoreOptions) -> Scored:
    """Add per-sample losses (``loss_response``, ``n_response_tokens``; ``loss_response_alone`` with
    ``with_ifd``) to a store embedded without them: the store's own model over the pool's records, on
    the engine, the same columns either way. Resumable."""
    from dataselect.embedding.score import score_store
    from dataselect.outputs import lock

    o.validate()
    executor = o.executor()
    with lock(o.store):
        man, n = score_store(o.store, o.source(), with_ifd=o.with_ifd, device=o.device, dtype=o.dtype,
                             batch_tokens=o.batch_tokens, progress=o.progress, allow_pickle=o.allow_pickle,
                             executor=executor, gpus_per_worker=o.num_gpus_per_worker)
    return Scored(man, n)


# -- inspect, verify --------------------------------------------------------------------------------
@dataclass(kw_only=True)
class StoreOptions(Options):
    """A store folder."""

    store: str | Path


@dataclass
class StoreSummary:
    """A store's manifest, and its summary as ``dataselect inspect`` prints it."""

    path: Path
    manifest: Manifest

    def lines(self) -> list[str]:
        man, store = self.manifest, self.path
        cfg, c = man.config, man.counts
        out = [
            f"store      {store}  ({man.kind}, {'complete' if man.complete else 'INCOMPLETE'})",
            f"model      {cfg.model.name}  @ {cfg.model.revision}",
            f"pooling    {cfg.pooling}  template {cfg.template}  bos {cfg.bos}  batching {cfg.batching}  "
            f"max_length {cfg.max_length}",
            f"vectors    {c.get('rows_stored', 0):,} x {cfg.dim} {cfg.dtype}",
            f"rows       read {c.get('rows_read', 0):,}  stored {c.get('rows_stored', 0):,}  "
            f"skipped {c.get('rows_skipped', 0):,}  truncated {c.get('truncated', 0):,}",
            f"tokens     {c.get('tokens', 0):,}",
            f"loss       {'yes' if cfg.with_loss else 'no'}{' (+IFD)' if cfg.with_ifd else ''}",
            f"shards     {len(man.shards)}",
            f"pool       {cfg.pool.name} ({cfg.pool.format}, fingerprint {cfg.pool.fingerprint[:12]})",
        ]
        if cfg.task:
            out.append(f"task       {cfg.task}")
        for kind, n in man.skipped_per_reason.items():
            out.append(f"skipped    {n:,} x {kind}")
        if man.skipped_file:
            out.append(f"skipped    every row in {store / man.skipped_file}")
        for ex in man.skipped_examples[:5]:
            out.append(f"skipped    {ex['where']}: {ex['reason']}")
        return out


def inspect(o: StoreOptions) -> StoreSummary:
    """A store's manifest (complete or not), with its summary."""
    o.validate()
    return StoreSummary(Path(o.store), Manifest.load(o.store))


@dataclass
class Verified:
    """What ``dataselect verify`` found: one line per problem (none: the store is sound)."""

    path: Path
    problems: list[str]
    summary: dict  # shards, rows, complete

    @property
    def ok(self) -> bool:
        return not self.problems

    def message(self) -> str:
        s = self.summary
        if self.problems:
            return f"{self.path}: {len(self.problems)} problem(s) found in {s['shards']} shards"
        return (f"{self.path}: ok ({s['shards']} shards, {s['rows']:,} rows; sizes, sha256, xxh3, schemas and row "
                f"counts checked{', store hash matches' if s['complete'] else ', store incomplete'})")


def verify(o: StoreOptions) -> Verified:
    """Check every shard of a store (names, sizes, sha256, xxh3, schema, row counts) and its hash."""
    from dataselect.store.verify import verify_store

    o.validate()
    problems, summary = verify_store(o.store)
    return Verified(Path(o.store), problems, summary)


# -- index, neighbors -------------------------------------------------------------------------------
@dataclass(kw_only=True)
class IndexOptions(StoreOptions):
    """``dataselect index``: a FAISS index of the store's vectors, kept beside it (artefacts/index-KEY).
    ``nlist``: IVF lists (0: about 4 sqrt(n)); ``m``: ivfpq sub-quantisers (0: dim/16) or hnsw links (0: 32);
    ``train_size``: rows sampled to train IVF kinds."""

    kind: str = "flat"
    nlist: int = 0
    m: int = 0
    nprobe: int = 16
    train_size: int = 200_000
    seed: int = 0


def index(o: IndexOptions) -> Path:
    """Build (or find) the index; returns its folder."""
    from dataselect.pool_index import build_index
    from dataselect.store import open_store

    o.validate()
    return build_index(open_store(o.store), o.kind, nlist=o.nlist, m=o.m, nprobe=o.nprobe, train_size=o.train_size,
                       seed=o.seed)


@dataclass(kw_only=True)
class NeighborsOptions(StoreOptions):
    """``dataselect neighbors``: the ``k`` nearest pool records to a ``text`` (embedded as a query) or to a
    pool ``row`` (exactly one), by the ``kind`` index; ``pool`` to show each record's first line."""

    text: str | None = None
    row: int | None = None
    k: int = 10
    kind: str = "flat"
    pool: str | Path | None = None

    def validate(self) -> None:
        super().validate()
        if (self.text is None) == (self.row is None):
            raise DataselectError("give exactly one of --text or --row")


def neighbors(o: NeighborsOptions):
    """The nearest records: a :class:`dataselect.nearest.Neighbors` (``rows``, ``scores``, ``ids``,
    ``first_lines``; ``text()`` as the command prints it)."""
    from dataselect.nearest import find_neighbors

    o.validate()
    return find_neighbors(o.store, text=o.text, row=o.row, k=o.k, kind=o.kind, pool=o.pool)
