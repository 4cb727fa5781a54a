"""``dataselect score``: add loss columns to a store that was embedded without them.

Runs the store's own model (same name and revision, checked) over the pool rows of each shard and
rewrites the shard with ``loss_response`` and ``n_response_tokens`` (and ``loss_response_alone``
with IFD) added; embeddings are kept as stored. Shards are rewritten atomically one at a time and
recorded in the manifest, so an interrupted run resumes where it stopped. While scoring, the store is
marked incomplete.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from dataselect.atomic import write_json
from dataselect.embedding.compute import RowEmbedder
from dataselect.embedding.model import load_model
from dataselect.embedding.text import Formatter
from dataselect.errors import DataselectError, InputError
from dataselect.pool import PoolReader, pool_fingerprint
from dataselect.pool.identity import Identities
from dataselect.progress import bar as progress_bar
from dataselect.store.manifest import MANIFEST, load_manifest, shard_path, store_hash
from dataselect.store.writer import write_shard


def score_store(store, pool, *, with_ifd: bool = False, device: str = "auto", dtype: str = "auto",
                batch_tokens: int = 0, progress: bool = True, allow_pickle: bool = False) -> tuple[dict, int]:
    """Add loss columns to every shard of ``store`` lacking them; returns (the updated manifest, rows
    scored now: 0 when every shard had them, without loading the model)."""
    store = Path(store)
    man = load_manifest(store)
    cfg = man["config"]
    if not man.get("complete") and not man.get("scoring"):
        raise DataselectError(f"{store}: store is incomplete; finish `dataselect embed` first")
    if pool_fingerprint(pool) != cfg["pool"]["fingerprint"]:
        raise DataselectError(f"{pool} is not the pool this store was embedded from ({cfg['pool']['name']!r})")
    want = ["loss_response", "n_response_tokens"] + (["loss_response_alone"] if with_ifd else [])
    todo = [s for s in man["shards"] if not set(want) <= set(s.get("loss_columns", []))]
    if not todo:
        return man, 0
    model = load_model(cfg["model"]["name"], device=device, dtype=dtype, with_lm_head=True, allow_pickle=allow_pickle)
    if model.revision != cfg["model"]["revision"]:
        raise DataselectError(f"model {cfg['model']['name']!r} is now at revision {model.revision}, but the store "
                              f"was embedded at {cfg['model']['revision']}; losses would not match the embeddings")
    formatter = Formatter(model.tokenizer, cfg["template"], cfg["max_length"], causal=model.causal,
                          bos=cfg.get("bos", "always"))
    embedder = RowEmbedder(model, formatter, cfg["pooling"], with_loss=True, with_ifd=with_ifd,
                           batch_tokens=batch_tokens)
    man["complete"], man["scoring"] = False, True
    write_json(store / MANIFEST, man)
    reader = PoolReader(pool, check_duplicates=False)
    bar = progress_bar(sum(s["rows_stored"] for s in todo), "score", enabled=progress)
    for shard in todo:
        path = shard_path(store, shard["file"])
        with pa.memory_map(str(path)) as mm:
            table = pa.ipc.open_file(mm).read_all()
        wanted = set(table.column("row").to_pylist())
        identities = Identities.of_table(table, f"the store {store}")
        msgs = []
        for r in reader.rows(start_row=shard["first_row"]):
            if r.row >= shard["end_row"]:
                break
            if r.row in wanted:
                if r.error:
                    raise InputError(r.where, r.error)
                identities.check(r.row, r.where, r.record)
                msgs.append(r.messages)
        if len(msgs) != table.num_rows:
            raise DataselectError(f"{pool}: rows {shard['first_row']}..{shard['end_row']} no longer match {path}")
        cols = embedder(msgs, lambda rows, tokens: bar.update(rows))
        columns = {name: table.column(name) for name in table.column_names if name not in want}
        columns.update({name: cols[name] for name in want})
        shard.update(write_shard(path, {k: v.combine_chunks() if isinstance(v, pa.ChunkedArray) else v
                                        for k, v in columns.items()}))
        shard["loss_columns"] = want
        write_json(store / MANIFEST, man)
    bar.close()
    cfg["with_loss"], cfg["with_ifd"] = True, with_ifd or cfg.get("with_ifd", False)
    man.pop("scoring")
    man["complete"] = True
    man["store_hash"] = store_hash(cfg, man["shards"])
    write_json(store / MANIFEST, man)
    return man, sum(s["rows_stored"] for s in todo)


class RowLosses:
    """Mean response NLL of a few pool rows (e.g. k cluster representatives) under ``model_name``.

    ``scorer(rows)`` makes one pass over the pool file to collect those records and one forward pass
    over them: the cost is len(rows) model calls, not n. The model is loaded once, on the first call.
    Rows with no response token left get NaN. ``store`` gives the template and maximum length the
    rows were embedded with; ``pool`` must be the file it was embedded from.
    """

    def __init__(self, store, model_name: str, pool, *, device: str = "auto", dtype: str = "auto"):
        self.store, self.cfg = store, store.config
        if pool_fingerprint(pool) != self.cfg["pool"]["fingerprint"]:
            raise DataselectError(f"{pool} is not the pool this store was embedded from ({self.cfg['pool']['name']!r})")
        self.model_name, self.pool, self.device, self.dtype = model_name, pool, device, dtype
        self._embedder = None

    def _records(self, rows: np.ndarray) -> dict[int, list]:
        wanted = set(rows.tolist())
        identities = Identities.of_store(self.store, sorted(wanted))
        found: dict[int, list] = {}
        for r in PoolReader(self.pool, check_duplicates=False).rows():
            if r.row in wanted:
                if r.error:
                    raise InputError(r.where, r.error)
                identities.check(r.row, r.where, r.record)
                found[r.row] = r.messages
                if len(found) == len(wanted):
                    break
        missing = wanted - set(found)
        if missing:
            raise DataselectError(f"{self.pool}: rows {sorted(missing)[:5]} are not in the pool file")
        return found

    def __call__(self, rows) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        if not len(rows):
            return np.zeros(0)
        found = self._records(rows)
        if self._embedder is None:
            model = load_model(self.model_name, device=self.device, dtype=self.dtype, with_lm_head=True)
            cfg = self.cfg
            formatter = Formatter(model.tokenizer, cfg["template"], cfg["max_length"], causal=model.causal,
                                  bos=cfg.get("bos", "always"))
            self._embedder = RowEmbedder(model, formatter, cfg["pooling"], with_loss=True)
        cols = self._embedder([found[int(r)] for r in rows])
        return cols["loss_response"].to_numpy(zero_copy_only=False).astype(np.float64)
