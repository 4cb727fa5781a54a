"""Looking into a pool: nearest records to a text or a row (``dataselect neighbors``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dataselect.errors import DataselectError
from dataselect.pool import PoolReader, pool_fingerprint, pool_source
from dataselect.pool.identity import Identities
from dataselect.pool_index import PoolIndex, build_index
from dataselect.store import Store, open_store


def embed_texts(store: Store, texts: list[str], device: str = "auto") -> np.ndarray:
    """Embed prompts exactly as the store's queries would be (same model, template, pooling)."""
    from dataselect.embedding.compute import RowEmbedder
    from dataselect.embedding.model import load_model
    from dataselect.embedding.text import Formatter

    cfg = store.config
    model = load_model(cfg["model"]["name"], device=device)
    fmt = Formatter(model.tokenizer, cfg["template"], cfg["max_length"], causal=model.causal,
                          bos=cfg.get("bos", "always"))
    cols = RowEmbedder(model, fmt, cfg["pooling"])([[{"role": "user", "content": t}] for t in texts])
    emb = cols["embedding"].values.to_numpy().reshape(len(texts), -1).astype(np.float32)
    return emb / np.linalg.norm(emb, axis=1, keepdims=True)


def first_lines(pool, store: Store, rows) -> dict[int, str]:
    """First line of the first user turn of each wanted pool row (one pass over the pool), each record
    checked against what ``store`` recorded of it (refused in one line when the pool changed).

    ``pool``: a path, a hub id, or a :class:`dataselect.pool.HubPool`."""
    pool = pool_source(pool)
    if pool_fingerprint(pool) != store.config["pool"]["fingerprint"]:
        raise DataselectError(f"{pool} is not the pool {store.path} was embedded from "
                              f"({store.config['pool']['name']!r})")
    want, out = set(int(r) for r in rows), {}
    identities = Identities.of_store(store, sorted(want))
    for row in PoolReader(pool, check_duplicates=False):
        if row.row in want and row.error is None:
            identities.check(row.row, row.where, row.record)
            user = next((m["content"] for m in row.messages if m["role"] != "assistant"), "")
            out[row.row] = (user.strip().splitlines() or [""])[0][:100]
            if len(out) == len(want):
                break
    return out


def neighbors(store, *, text: str | None = None, row: int | None = None, k: int = 10, kind: str = "flat",
              pool=None) -> str:
    st = open_store(store, kind="pool")
    if (text is None) == (row is None):
        raise DataselectError("give exactly one of --text or --row")
    pool = pool_source(pool) if pool is not None else None
    if pool is not None and pool_fingerprint(pool) != st.config["pool"]["fingerprint"]:
        raise DataselectError(f"{pool} is not the pool this store was embedded from")
    query = embed_texts(st, [text]) if text is not None else st.take([row])["embedding"]
    if kind == "flat" and not (Path(st.path) / "index-flat" / "index.json").exists():
        build_index(st, "flat")
    index = PoolIndex.load(st, kind)
    scores, rows = index.search(query, k + (row is not None))
    pairs = [(s, r) for s, r in zip(scores[0], rows[0], strict=True) if r >= 0 and r != row][:k]
    ids = st.take([r for _, r in pairs], ("id",))["id"] if pairs else []
    lines_of = first_lines(pool, st, [r for _, r in pairs]) if pool is not None else {}
    head = f"nearest to {'text ' + repr(text[:60]) if text is not None else f'row {row}'} ({kind} index):"
    out = [head]
    for (s, r), rid in zip(pairs, ids, strict=True):
        out.append(f"  {s:7.4f}  row {r:<8d} {rid:<20s} {lines_of.get(int(r), '')}")
    if pool is None:
        out.append("  (pass --pool POOL to see each record's first line)")
    return "\n".join(out)
