"""The embedding pass as a shard task: the same code embeds a shard in this process or on a Ray worker.

:class:`PoolShards` is the pool as the driver's validation pass found it: where each shard starts in
the files, which rows are invalid (and why), which rows got a content-derived id. It is what a worker
needs to read shard k on its own. :class:`EmbedTask` loads the model once per worker (``setup``) and
turns shards into their columns; its :meth:`EmbedTask.each` reads consecutive shards in one sequential
pass over the pool, so a local run reads the pool once, as before. The driver
(:class:`dataselect.embedding.stage.EmbedStage`) writes each shard as its result arrives.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from dataselect.engines.executor import Needs, ShardTask, worker_device
from dataselect.pool import HubPool, PoolReader, PoolRow


@dataclass
class PoolShards:
    """The pool cut into shards of ``shard_rows`` consecutive rows, as validated by the driver.

    ``invalid``: row -> (where, reason) of rows skipped; ``id_overrides``: row -> id for rows whose id
    depends on earlier rows (duplicate content); ``marks``: where shards start (``PoolReader.marks``).
    """

    pool: Path | HubPool
    shard_rows: int
    n_rows: int
    queries: bool = False
    task: str | None = None
    invalid: dict[int, tuple[str, str]] = field(default_factory=dict)
    id_overrides: dict[int, str] = field(default_factory=dict)
    marks: dict = field(default_factory=dict)

    @property
    def n_shards(self) -> int:
        return -(-self.n_rows // self.shard_rows)

    def end(self, k: int) -> int:
        """One past the last pool row of shard ``k``."""
        return min((k + 1) * self.shard_rows, self.n_rows)

    def reader(self) -> PoolReader:
        """A reader that seeks to shard starts; ids and errors come from the driver's pass, not from it."""
        reader = PoolReader(self.pool, require_response=not self.queries, task=self.task,
                            require_task=self.queries, check_duplicates=False)
        reader.marks = dict(self.marks)
        return reader


@dataclass
class ShardColumns:
    """One embedded shard: its columns, the rows it skipped, and where it ends in the pool."""

    shard: int
    end: int
    skipped: list[dict]
    columns: dict[str, pa.Array]

    @property
    def tokens(self) -> int:
        n = self.columns["n_tokens"]
        return int(n.to_numpy().sum()) if len(n) else 0


class EmbedTask(ShardTask):
    """Embeds shards of a :class:`PoolShards` with the run's options (``opts``: EmbedOptions, with
    ``batching`` already resolved by the driver so that every worker batches alike).

    In-process only (dropped when the task is pickled to a worker): ``journal``, which keeps each
    committed chunk of a shard so a killed run resumes inside it, and ``on_progress(rows, tokens)``.
    """

    def __init__(self, opts, max_length: int, gpus: float = 0.0):
        self.opts, self.max_length, self.gpus = opts, max_length, gpus
        self.journal = None
        self.on_progress = None
        self._embedder = None

    @property
    def needs(self) -> Needs:
        return Needs(cpus=1.0, gpus=self.gpus)

    def __getstate__(self):
        return {"opts": self.opts, "max_length": self.max_length, "gpus": self.gpus}

    def __setstate__(self, state):
        self.__init__(state["opts"], state["max_length"], state["gpus"])

    def setup(self) -> None:
        from dataselect.embedding.model import load_model
        from dataselect.embedding.stage import make_embedder

        o = self.opts
        model = load_model(o.model, device=worker_device(o.device, self.gpus), dtype=o.dtype, with_lm_head=o.with_loss, revision=o.revision,
                           allow_pickle=o.allow_pickle)
        self._embedder = make_embedder(model, o, self.max_length)

    def run(self, plan: PoolShards, shards: list[int]) -> list[ShardColumns]:
        return self.merge([part for _, part in self.each(plan, shards)])

    def merge(self, parts: list[list[ShardColumns]]) -> list[ShardColumns]:
        return [s for part in parts for s in part]

    def each(self, plan: PoolShards, shards: list[int]) -> Iterator[tuple[int, list[ShardColumns]]]:
        """Shard by shard (ascending ``shards``), in one sequential read of the pool."""
        if not shards:
            return
        want, S, last = set(shards), plan.shard_rows, max(shards)
        pending: list[PoolRow] = []
        for r in plan.reader().rows(start_row=min(shards) * S):
            k = r.row // S
            if pending and pending[0].row // S != k:
                yield pending[0].row // S, [self._shard(plan, pending)]
                pending = []
            if k > last:
                break
            if k in want:
                pending.append(r)
        if pending:
            yield pending[0].row // S, [self._shard(plan, pending)]

    def _shard(self, plan: PoolShards, rows: list[PoolRow]) -> ShardColumns:
        from dataselect.embedding.stage import chunk_spans, row_columns, shard_columns

        k = rows[0].row // plan.shard_rows
        skipped = [{"row": r.row, "where": plan.invalid[r.row][0], "reason": plan.invalid[r.row][1]}
                   for r in rows if r.row in plan.invalid]
        valid = [r for r in rows if r.row not in plan.invalid]
        for r in valid:
            r.id = plan.id_overrides.get(r.row, r.id)
        parts = self.journal.parts(k) if self.journal is not None else {}
        tables = []
        for key, lo, hi in chunk_spans([r.row for r in valid], self.opts.chunk_rows):
            group = valid[lo:hi]
            if key in parts:
                tables.append(parts[key])
                continue
            table = pa.table({**row_columns(group, plan.queries),
                              **self._embedder([r.messages for r in group], self.on_progress)})
            if self.journal is not None:
                self.journal.commit_part(k, key, shard_columns([table]))
            tables.append(table)
        cols = shard_columns(tables) if tables else {**row_columns([], plan.queries), **self._embedder([])}
        return ShardColumns(k, plan.end(k), skipped, cols)
