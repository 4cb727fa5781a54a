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

from dataselect.embedding.compute import Encoder
from dataselect.errors import DataselectError, InputError
from dataselect.pool import normalize_record
from dataselect.pool.fetch import check_pool, records
from dataselect.pool.identity import Identities
from dataselect.pool.records import RecordError
from dataselect.progress import bar as progress_bar
from dataselect.store import Manifest, Store, StoreWriter


def row_messages(fetched) -> list[dict]:
    """A fetched pool record as the messages it was embedded from."""
    try:
        return normalize_record(fetched.record)
    except RecordError as exc:
        raise InputError(fetched.where, f"pool row {fetched.row} is not a valid record now ({exc})") from None


def score_store(store, pool, *, with_ifd: bool = False, device: str = "auto", dtype: str = "auto",
                batch_tokens: int = 0, progress: bool = True, allow_pickle: bool = False) -> tuple[Manifest, int]:
    """Add loss columns to every shard of ``store`` lacking them; returns (the updated manifest, rows
    scored now: 0 when every shard had them, without loading the model)."""
    path = Path(store)
    man = Manifest.load(path)
    if not man.complete and not man.scoring:
        raise DataselectError(f"{path}: store is incomplete; finish `dataselect embed` first")
    st = Store(path, allow_incomplete=True)
    check_pool(st, pool)
    want = ["loss_response", "n_response_tokens"] + (["loss_response_alone"] if with_ifd else [])
    todo = [i for i, s in enumerate(st.shards) if not set(want) <= set(s.loss_columns)]
    if not todo:
        return man, 0
    encoder = Encoder.from_store(st, with_loss=True, with_ifd=with_ifd, device=device, dtype=dtype,
                                 batch_tokens=batch_tokens, allow_pickle=allow_pickle)
    writer = StoreWriter(path, st.manifest)
    writer.begin_scoring()
    bar = progress_bar(sum(st.shards[i].rows_stored for i in todo), "score", enabled=progress)
    for i in todo:
        shard = st.shards[i]
        table = st.table(i)
        identities = Identities.of_table(table, f"the store {path}")
        msgs = [row_messages(f) for f in records(pool, table.column("row").to_numpy(), identities)]
        cols = encoder(msgs, lambda rows, tokens: bar.update(rows))
        columns = {name: table.column(name).combine_chunks() for name in table.column_names if name not in want}
        columns.update({name: cols[name] for name in want})
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
