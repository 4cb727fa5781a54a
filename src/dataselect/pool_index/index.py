"""FAISS indexes over a store's vectors (inner product = cosine on L2-normalised RDS+ embeddings).

Kinds: ``flat`` (exact), ``ivf`` (IVF-Flat; ``nlist`` lists, ``nprobe`` probed), ``ivfpq`` (IVF with
product quantisation: ``m`` sub-quantisers of 8 bits), ``hnsw`` (``m`` links per node). IVF kinds are
trained on a uniform sample of the store; vectors are added shard by shard, never all in memory.
An index is kept as an ``index`` artefact beside the store (:mod:`dataselect.store.artefacts`:
``index.faiss``, keyed by its kind, parameters and the store hash; one whose store changed is
refused). FAISS ids are store positions; ``search`` returns
pool row numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from dataselect.errors import DataselectError
from dataselect.pool_index.sample import iter_float_blocks, read_positions, sample_positions
from dataselect.store import Store
from dataselect.store.artefacts import Artefact, Artefacts

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
        """The newest index of ``kind`` built over this version of the store."""
        found = Artefacts(store).find("index", {"kind": kind}, refuse_stale=True)
        if not found:
            raise DataselectError(f"{store.path}: no {kind} index; build it with `dataselect index {store.path} "
                                  f"--kind {kind}`")
        return cls.from_artefact(found[0], store)

    @classmethod
    def from_artefact(cls, artefact: Artefact, store: Store) -> PoolIndex:
        try:
            index = faiss.read_index(str(artefact.path / "index.faiss"))
        except RuntimeError as exc:
            raise DataselectError(f"{artefact.path}: unreadable FAISS index ({str(exc).splitlines()[0]}); delete it "
                                  "and build it again") from None
        if index.ntotal != store.n_rows or index.d != store.dim:
            raise DataselectError(f"{artefact.path}: index holds {index.ntotal:,} x {index.d} vectors, the store "
                                  f"{store.n_rows:,} x {store.dim}; delete it and build it again")
        return cls(index, store.rows(), artefact.info)


def build_index(store: Store, kind: str = "flat", *, nlist: int = 0, m: int = 0, nprobe: int = 16,
                train_size: int = 200_000, seed: int = 0) -> Path:
    """Build an index of ``kind`` beside the store (or find the one built with these parameters);
    returns its folder."""
    if kind not in INDEX_KINDS:
        raise DataselectError(f"--kind {kind!r}: choose from {', '.join(INDEX_KINDS)}")
    n = store.n_rows
    nlist = nlist or default_nlist(n)
    if kind in ("ivf", "ivfpq") and nlist * 39 > n:
        raise DataselectError(f"--nlist {nlist}: {n:,} rows train at most {max(n // 39, 1):,} lists (39 rows each, "
                              "FAISS's minimum); lower --nlist or leave it at 0 (automatic)")
    nbits = pq_bits(n)
    params = {"kind": kind, "nlist": nlist, "m": m, "nprobe": nprobe, "train_size": train_size, "seed": seed,
              **({"pq_bits": nbits} if kind == "ivfpq" else {})}

    def build(folder: Path):
        index = _make(kind, store.dim, nlist, m, nbits)
        if not index.is_trained:
            need = max(nlist * 39, 39 * (2 ** nbits) if kind == "ivfpq" else 0)
            index.train(read_positions(store, sample_positions(n, min(n, max(train_size, need)), seed)))
        for _, block in iter_float_blocks(store):
            index.add(block)
        faiss.write_index(index, str(folder / "index.faiss"))
        meta = {"kind": kind, "params": params, "ntotal": int(index.ntotal), "dim": store.dim}
        return index, meta

    _, art = Artefacts(store).get_or_build("index", params, build, lambda a: None)
    return art.path
