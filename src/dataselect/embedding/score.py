"""``dataselect score``: add loss columns to a store that was embedded without them.

Runs the store's own model (same name and revision, checked: :meth:`Encoder.from_store`) over the
pool rows of each shard and rewrites the shard with ``loss_response`` and ``n_response_tokens``
(and ``loss_response_alone`` with IFD) added; embeddings are kept as stored. Shards are rewritten
atomically one at a time and recorded in the manifest, so an interrupted run resumes where it
stopped. While scoring, the store is marked incomplete.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pyarrow as pa

from dataselect.embedding.compute import Encoder, check_revision
from dataselect.embedding.model import load_model
from dataselect.engines.executor import Executor, LocalExecutor, Needs, ShardTask, model_gpus, worker_device
from dataselect.errors import DataselectError, InputError
from dataselect.pool import normalize_record
from dataselect.pool.fetch import check_pool, records
from dataselect.pool.identity import HASH_COLUMN, Identities, has_hashes
from dataselect.pool.records import RecordError
from dataselect.progress import bar as progress_bar
from dataselect.store import Manifest, Store, StoreWriter


def row_messages(fetched) -> list[dict]:
    """A fetched pool record as the messages it was embedded from."""
    try:
        return normalize_record(fetched.record)
    except RecordError as exc:
        raise InputError(fetched.where, f"pool row {fetched.row} is not a valid record now ({exc})") from None


def loss_columns(with_ifd: bool) -> list[str]:
    """The columns ``score`` adds: the response NLL and its token count, and the response alone's NLL (IFD)."""
    return ["loss_response", "n_response_tokens"] + (["loss_response_alone"] if with_ifd else [])


class LossTask(ShardTask):
    """The loss columns of store shards: the store's own model (loaded once per worker, on the first
    shard: :meth:`Encoder.from_store`) over each shard's pool records, fetched and checked against the
    store. Returns {shard: {column: array}}."""

    def __init__(self, pool, *, with_ifd: bool = False, device: str = "auto", dtype: str = "auto",
                 batch_tokens: int = 0, allow_pickle: bool = False, gpus: float = 0.0):
        self.pool, self.with_ifd, self.device, self.dtype = pool, with_ifd, device, dtype
        self.batch_tokens, self.allow_pickle, self.gpus = batch_tokens, allow_pickle, gpus
        self.on_progress = None  # in this process only: (rows, tokens) per batch
        self._encoder = None

    @property
    def columns(self) -> list[str]:
        return loss_columns(self.with_ifd)

    @property
    def needs(self) -> Needs:
        return Needs(cpus=1.0, gpus=self.gpus)

    def __getstate__(self):
        return {**self.__dict__, "on_progress": None, "_encoder": None}

    def run(self, store, shards: list[int]) -> dict[int, dict[str, pa.Array]]:
        if self._encoder is None:
            self._encoder = Encoder.from_store(store, with_loss=True, with_ifd=self.with_ifd,
                                               device=worker_device(self.device, self.gpus),
                                               dtype=self.dtype, batch_tokens=self.batch_tokens,
                                               allow_pickle=self.allow_pickle)
        out = {}
        for i in shards:
            table = store.table(i, ["row", "id"] + ([HASH_COLUMN] if has_hashes(store) else []))
            identities = Identities.of_table(table, f"the store {store.path}")
            msgs = [row_messages(f) for f in records(self.pool, table.column("row").to_numpy(), identities)]
            cols = self._encoder(msgs, self.on_progress)
            out[i] = {name: cols[name] for name in self.columns}
        return out

    def merge(self, parts):
        return {i: cols for part in parts for i, cols in part.items()}


def score_store(store, pool, *, with_ifd: bool = False, device: str = "auto", dtype: str = "auto",
                batch_tokens: int = 0, progress: bool = True, allow_pickle: bool = False,
                executor: Executor | None = None, gpus_per_worker: float = 0.0) -> tuple[Manifest, int]:
    """Add loss columns to every shard of ``store`` lacking them, computed on ``executor`` (this process by
    default) and written here shard by shard as they come; returns (the updated manifest, rows scored
    now: 0 when every shard had them, without loading the model)."""
    executor = executor or LocalExecutor()
    path = Path(store)
    man = Manifest.load(path)
    if not man.complete and not man.scoring:
        raise DataselectError(f"{path}: store is incomplete; finish `dataselect embed` first")
    st = Store(path, allow_incomplete=True)
    check_pool(st, pool)
    want = loss_columns(with_ifd)
    todo = [i for i, s in enumerate(st.shards) if not set(want) <= set(s.loss_columns)]
    if not todo:
        return man, 0  # nothing loaded, no worker started
    task = LossTask(pool, with_ifd=with_ifd, device=device, dtype=dtype, batch_tokens=batch_tokens,
                    allow_pickle=allow_pickle, gpus=model_gpus(device, executor, gpus_per_worker))
    check_revision(st, load_model(st.config.model.name, with_lm_head=True, weights=False))  # before any write
    writer = StoreWriter(path, st.manifest)
    writer.begin_scoring()
    bar = progress_bar(sum(st.shards[i].rows_stored for i in todo), "score", enabled=progress)
    live = [0]

    def follow(rows: int, tokens: int) -> None:
        live[0] += rows
        bar.update(rows)

    if not executor.distributed:
        task.on_progress = follow
    for i, part in executor.imap_shards(task, st, todo):
        shard = st.shards[i]
        bar.update(shard.rows_stored - live[0])
        live[0] = 0
        table = st.table(i)
        columns = {name: table.column(name).combine_chunks() for name in table.column_names if name not in want}
        columns.update(part[i])
        del table
        writer.replace_shard(shard, columns, want)
    bar.close()
    cfg = st.config
    new = dataclasses.replace(cfg, with_loss=True, with_ifd=with_ifd or cfg.with_ifd,
                              raw={**cfg.raw, "with_loss": True, "with_ifd": with_ifd or cfg.with_ifd})
    return writer.finish(config=new), sum(st.shards[i].rows_stored for i in todo)


class RowLosses:
    """Mean response NLL of a few pool rows (e.g. k cluster representatives) under ``model_name``.

    ``scorer(rows)`` fetches those records from the pool (:func:`dataselect.pool.fetch.records`, each
    checked against the store) and makes one forward pass over them: the cost is len(rows) model
    calls, not n. The model is loaded once, on the first call (:meth:`Encoder.from_store`: the
    store's template and maximum length). Rows with no response token left get NaN. ``pool`` must be
    the file the store was embedded from.
    """

    def __init__(self, store: Store, model_name: str, pool, *, device: str = "auto", dtype: str = "auto"):
        check_pool(store, pool)
        self.store, self.model_name, self.pool, self.device, self.dtype = store, model_name, pool, device, dtype
        self._encoder = None

    def __call__(self, rows) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        if not len(rows):
            return np.zeros(0)
        identities = Identities.of_store(self.store, rows)
        msgs = [row_messages(f) for f in records(self.pool, rows, identities)]
        if self._encoder is None:
            self._encoder = Encoder.from_store(self.store, model=self.model_name, with_loss=True, device=self.device,
                                               dtype=self.dtype)
        cols = self._encoder(msgs)
        return cols["loss_response"].to_numpy(zero_copy_only=False).astype(np.float64)
