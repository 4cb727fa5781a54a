"""``dataselect neighbors``: the nearest pool records to a text or a row."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dataselect.errors import DataselectError
from dataselect.pool import normalize_record, pool_source
from dataselect.pool.fetch import check_pool, records
from dataselect.pool.identity import Identities
from dataselect.pool.records import RecordError
from dataselect.pool_index import PoolIndex, build_index
from dataselect.store import Store, open_store


def embed_texts(store: Store, texts: list[str], device: str = "auto") -> np.ndarray:
    """Embed prompts exactly as the store's queries would be (:meth:`Encoder.from_store`)."""
    from dataselect.embedding.compute import Encoder

    cols = Encoder.from_store(store, device=device)([[{"role": "user", "content": t}] for t in texts])
    emb = cols["embedding"].values.to_numpy().reshape(len(texts), -1).astype(np.float32)
    return emb / np.linalg.norm(emb, axis=1, keepdims=True)


def first_lines(pool, store: Store, rows) -> dict[int, str]:
    """First line of the first user turn of each wanted pool row, each record checked against what
    ``store`` recorded of it (refused in one line when the pool changed).

    ``pool``: a path, a hub id, or a :class:`dataselect.pool.HubPool`."""
    pool = pool_source(pool)
    check_pool(store, pool)
    rows = np.unique(np.asarray(list(rows), dtype=np.int64))
    out = {}
    for f in records(pool, rows, Identities.of_store(store, rows), order="pool"):
        try:
            messages = normalize_record(f.record, require_response=False)
        except RecordError:
            messages = []
        user = next((m["content"] for m in messages if m["role"] != "assistant"), "")
        out[f.row] = (user.strip().splitlines() or [""])[0][:100]
    return out


@dataclass
class Neighbors:
    """The nearest pool records to a text or a row, best first: ``rows`` (pool rows), ``scores`` (inner
    products of unit vectors), ``ids``, and ``first_lines`` (row -> the first line of its first user turn;
    empty without a pool)."""

    query: str
    kind: str
    rows: list[int]
    scores: list[float]
    ids: list[str]
    first_lines: dict[int, str] = field(default_factory=dict)
    with_pool: bool = False

    def text(self) -> str:
        out = [f"nearest to {self.query} ({self.kind} index):"]
        for s, r, rid in zip(self.scores, self.rows, self.ids, strict=True):
            out.append(f"  {s:7.4f}  row {r:<8d} {rid:<20s} {self.first_lines.get(int(r), '')}")
        if not self.with_pool:
            out.append("  (pass --pool POOL to see each record's first line)")
        return "\n".join(out)


def find_neighbors(store, *, text: str | None = None, row: int | None = None, k: int = 10, kind: str = "flat",
                   pool=None) -> Neighbors:
    st = open_store(store, kind="pool")
    if (text is None) == (row is None):
        raise DataselectError("give exactly one of --text or --row")
    pool = pool_source(pool) if pool is not None else None
    if pool is not None:
        check_pool(st, pool)
    query = embed_texts(st, [text]) if text is not None else st.take([row])["embedding"]
    if kind == "flat":
        build_index(st, "flat")  # exact: built on first use, found after
    index = PoolIndex.load(st, kind)
    scores, rows = index.search(query, k + (row is not None))
    pairs = [(float(s), int(r)) for s, r in zip(scores[0], rows[0], strict=True) if r >= 0 and r != row][:k]
    ids = list(st.take([r for _, r in pairs], ("id",))["id"]) if pairs else []
    lines_of = first_lines(pool, st, [r for _, r in pairs]) if pool is not None else {}
    return Neighbors("text " + repr(text[:60]) if text is not None else f"row {row}", kind, [r for _, r in pairs],
                     [s for s, _ in pairs], ids, lines_of, pool is not None)
