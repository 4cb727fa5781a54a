"""FAISS indexes over a store's vectors (inner product = cosine on L2-normalised RDS+ embeddings).

Kinds: ``flat`` (exact), ``ivf`` (IVF-Flat; ``nlist`` lists, ``nprobe`` probed), ``ivfpq`` (IVF with
product quantisation: ``m`` sub-quantisers of 8 bits), ``hnsw`` (``m`` links per node). IVF kinds are
trained on a uniform sample of the store; vectors are added shard by shard, never all in memory.
An index is saved in ``STORE/index-KIND/`` (``index.faiss`` + ``index.json``) and records the store
hash: an index whose store changed is refused. FAISS ids are store positions; ``search`` returns
pool row numbers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from dataselect.atomic import atomic_dir
from dataselect.errors import DataselectError
from dataselect.pool_index.sample import iter_float_blocks, read_positions, sample_positions
from dataselect.store import Store

INDEX_KINDS = ("flat", "ivf", "ivfpq", "hnsw")


def default_nlist(n: int) -> int:
    """~4 sqrt(n) lists (FAISS's guideline), at least 1 and at most n / 39 so each list can be trained."""
    return int(max(1, min(4 * np.sqrt(n), n // 39 or 1)))


def pq_bits(n: int) -> int:
    """Bits per PQ code: 8 (FAISS's default), fewer on small stores so that each of the 2**bits
    centroids of every sub-quantiser has FAISS's 39 training points (else FAISS warns m times)."""
    return int(min(8, max(1, np.floor(np.log2(max(n // 39, 2))))))


def _make(kind: str, dim: int, nlist: int, m: int, nbits: int = 8) -> faiss.Index:
    ip = faiss.METRIC_INNER_PRODUCT
    if kind == "flat":
        return faiss.IndexFlatIP(dim)
    if kind == "hnsw":
        return faiss.IndexHNSWFlat(dim, m or 32, ip)
    quantizer = faiss.IndexFlatIP(dim)
    if kind == "ivf":
        return faiss.IndexIVFFlat(quantizer, dim, nlist, ip)
    m = m or max(1, dim // 16)
    if dim % m:
        raise DataselectError(f"--m {m}: ivfpq needs m dividing the dimension {dim}")
    return faiss.IndexIVFPQ(quantizer, dim, nlist, m, nbits, ip)


@dataclass
class PoolIndex:
    """A loaded index: ``index`` (faiss), ``rows`` (store position -> pool row), ``meta``."""

    index: faiss.Index
    rows: np.ndarray
    meta: dict

    def search(self, queries: np.ndarray, k: int = 10, nprobe: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(q, dim) float32 -> (scores (q, k), pool rows (q, k)); missing neighbours have row -1."""
        if hasattr(self.index, "nprobe"):
            self.index.nprobe = nprobe or self.meta["params"]["nprobe"]
        scores, pos = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        rows = np.where(pos >= 0, self.rows[np.maximum(pos, 0)], -1)
        return scores, rows

    @classmethod
    def load(cls, store: Store, kind: str) -> PoolIndex:
        folder = store.path / f"index-{kind}"
        if not (folder / "index.json").is_file():
            raise DataselectError(f"{store.path}: no {kind} index; build it with `dataselect index {store.path} "
                                  f"--kind {kind}`")
        meta = json.loads((folder / "index.json").read_text())
        if meta["store_hash"] != store.hash:
            raise DataselectError(f"{folder} is stale: it was built for another version of the store "
                                  "(re-embedded or re-scored since); rebuild it with `dataselect index`")
        return cls(faiss.read_index(str(folder / "index.faiss")), store.rows(), meta)


def build_index(store: Store, kind: str = "flat", *, nlist: int = 0, m: int = 0, nprobe: int = 16,
                train_size: int = 200_000, seed: int = 0, overwrite: bool = True) -> Path:
    """Build and save an index of ``kind`` beside the store; returns its folder."""
    if kind not in INDEX_KINDS:
        raise DataselectError(f"--kind {kind!r}: choose from {', '.join(INDEX_KINDS)}")
    n = store.n_rows
    nlist = nlist or default_nlist(n)
    if kind in ("ivf", "ivfpq") and nlist * 39 > n:
        raise DataselectError(f"--nlist {nlist}: {n:,} rows train at most {max(n // 39, 1):,} lists (39 rows each, "
                              "FAISS's minimum); lower --nlist or leave it at 0 (automatic)")
    nbits = pq_bits(n)
    index = _make(kind, store.dim, nlist, m, nbits)
    if not index.is_trained:
        need = max(nlist * 39, 39 * (2 ** nbits) if kind == "ivfpq" else 0)
        index.train(read_positions(store, sample_positions(n, min(n, max(train_size, need)), seed)))
    for _, block in iter_float_blocks(store):
        index.add(block)
    folder = store.path / f"index-{kind}"
    meta = {"kind": kind, "params": {"nlist": nlist, "m": m, "nprobe": nprobe, "train_size": train_size,
                                     "seed": seed, **({"pq_bits": nbits} if kind == "ivfpq" else {})},
            "store_hash": store.hash, "ntotal": int(index.ntotal), "dim": store.dim}
    with atomic_dir(folder, overwrite=overwrite) as tmp:
        faiss.write_index(index, str(tmp / "index.faiss"))
        (tmp / "index.json").write_text(json.dumps(meta, indent=2) + "\n")
    return folder
