"""What the report pieces share: opening a selection with its stores, sampling, figure encoding."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from dataselect.errors import DataselectError
from dataselect.selection import read_selection
from dataselect.store import Store, open_store
from dataselect.store.manifest import MANIFEST

PLOT_SAMPLE = 20_000


@dataclass
class Opened:
    """A selection with its table, metadata and the stores it was made from; ``pool`` is the deduplicated
    pool (``dedup`` the result it applied) when the selection was made with ``--dedup``."""

    path: Path
    table: pa.Table
    meta: dict
    pool: Store
    queries: list[Store]
    dedup: object = None

    def column(self, name: str) -> np.ndarray:
        return np.asarray(self.table.column(name).to_pylist(), dtype=object) if name in ("task", "id") \
            else self.table.column(name).to_numpy()


def locate_store(selection, rec: dict, what: str) -> Path:
    """Where the store a selection was made from is now: its absolute path, else the same path relative
    to the selection folder (stores and selections moved together). Names every path tried."""
    tried = [Path(rec["path"])]
    if rec.get("relative_path"):
        tried.append(Path(selection) / rec["relative_path"])
    for cand in tried:
        if (cand / MANIFEST).is_file():
            return cand
    raise DataselectError(f"{selection}: {what} not found; tried {' and '.join(str(t) for t in tried)} "
                          "(moved or deleted since the selection was made?)")


def open_selection(path) -> Opened:
    table, meta = read_selection(path)
    pool = open_store(locate_store(path, meta["pool_store"], "its pool store"), kind="pool")
    queries = [open_store(locate_store(path, q, "its query store")) for q in meta.get("query_stores", [])]
    for store, rec in [(pool, meta["pool_store"]), *zip(queries, meta.get("query_stores", []), strict=True)]:
        if store.hash != rec.get("store_hash"):
            raise DataselectError(f"{path}: the store {store.path} changed since this selection was made "
                                  "(re-embedded or re-scored); its ranks and counts would be wrong -- run the "
                                  "selection again")
    dedup = None
    if meta.get("dedup"):  # the selection picked from the deduplicated pool: so do its figures
        from dataselect.duplicates import load_dedup

        dedup = load_dedup(pool, meta["dedup"]["key"])
        pool = dedup.apply(pool)
    return Opened(Path(path), table, meta, pool, queries, dedup)


def text_table(headers: list[str], rows: list[list], indent: str = "  ") -> list[str]:
    """Lines of a plain-text table: the first column left-aligned, the others right-aligned, every column
    as wide as its widest cell (numbers formatted with thousands separators)."""
    cells = [[f"{c:,}" if isinstance(c, int) else str(c) for c in r] for r in [headers, *rows]]
    widths = [max(len(r[j]) for r in cells) for j in range(len(headers))]
    return [indent + "  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths, strict=True)))
            for r in cells]


def sample_positions(n: int, size: int = PLOT_SAMPLE, seed: int = 0) -> np.ndarray:
    return np.arange(n) if n <= size else np.sort(np.random.default_rng(seed).choice(n, size, replace=False))


def png_bytes(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": "dataselect"})
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def source_counts(store: Store, rows: np.ndarray | None = None) -> dict[str, int]:
    """Rows per source in the store (or among ``rows``), '' for none; reads only the source column."""
    src = store.column("source") if "source" in store.columns else np.array([None] * store.n_rows, dtype=object)
    if rows is not None:
        pos = np.searchsorted(store.rows(), rows)
        src = src[pos]
    names, counts = np.unique(np.array(["" if s is None else s for s in src], dtype=object), return_counts=True)
    return dict(zip(names.tolist(), counts.tolist(), strict=True))
