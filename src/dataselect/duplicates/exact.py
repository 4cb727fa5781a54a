"""Exact duplicates: identical embeddings (xxh3 of the float16 bytes) and, given the pool, identical
records (xxh3 of the rendered text, normalised: Unicode NFC, whitespace runs as one space, per role).

Two rows are in one group when either hash is equal (transitively: connected components).
"""

from __future__ import annotations

import unicodedata

import numpy as np
import orjson
import xxhash
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from dataselect.pool.records import normalize_record
from dataselect.progress import bar


def embedding_hashes(store, progress: bool = False) -> np.ndarray:
    """(n,) uint64: xxh3-64 of each row's float16 embedding bytes, in store order."""
    out = np.empty(store.n_rows, dtype=np.uint64)
    at = 0
    with bar(store.n_rows, "hash embeddings", enabled=progress) as pbar:
        for block in store.iter_blocks(("embedding",)):
            emb = np.ascontiguousarray(block["embedding"])
            out[at:at + len(emb)] = [xxhash.xxh3_64_intdigest(r.tobytes()) for r in emb]
            at += len(emb)
            pbar.update(len(emb))
    return out


def text_key(messages: list[dict]) -> bytes:
    """The normalised rendered text of a record's messages (what two identical records share)."""
    turns = [[m.get("role", ""), " ".join(unicodedata.normalize("NFC", str(m.get("content", ""))).split())]
             for m in messages]
    return orjson.dumps(turns)


def text_hashes(store, pool, progress: bool = False) -> np.ndarray:
    """(n,) uint64: xxh3-64 of each stored row's normalised record text, read back from ``pool`` (checked
    against the identities the store recorded)."""
    from dataselect.pool.fetch import check_pool, records
    from dataselect.pool.identity import Identities

    check_pool(store, pool)
    rows = store.rows()
    out = np.empty(len(rows), dtype=np.uint64)
    with bar(len(rows), "hash records", enabled=progress) as pbar:
        for f in records(pool, rows, Identities.of_store(store, rows), order="pool"):
            out[f.index] = xxhash.xxh3_64_intdigest(text_key(normalize_record(f.record, require_response=False)))
            pbar.update(1)
    return out


def equal_components(*hashes: np.ndarray) -> np.ndarray:
    """(n,) int64 component label: rows are joined when any of the ``hashes`` arrays is equal for them."""
    n = len(hashes[0])
    src, dst = [], []
    for h in hashes:
        _, first, inverse = np.unique(h, return_index=True, return_inverse=True)
        src.append(np.arange(n))
        dst.append(first[inverse.reshape(-1)])
    graph = coo_matrix((np.ones(n * len(hashes), dtype=np.int8), (np.concatenate(src), np.concatenate(dst))),
                       shape=(n, n))
    return connected_components(graph, directed=False)[1].astype(np.int64)
