"""A dedup result: for every stored row, kept or the row it duplicates, and its group; kept beside the store.

``dedup.npz`` holds, in store order, ``row`` (int64 pool row), ``duplicate_of`` (int64: -1 for a
kept row, else the kept row of its group) and ``group`` (int64: the kept row of the row's group, so a
row alone is its own group). Exactly one row of each group is kept. ``Dedup.apply(store)`` is the
store narrowed to the kept rows (:class:`~dataselect.store.reader.StoreView`), which every selector
then picks from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dataselect.errors import DataselectError
from dataselect.store.artefacts import Artefact, Artefacts

FILE = "dedup.npz"


@dataclass
class Dedup:
    """rows, duplicate_of, group : (n,) int64 in store order (module docstring); ``info`` what the build
    recorded (method, eps, keep, rule, the eps curve, timings); ``key`` the artefact it is kept as."""

    rows: np.ndarray
    duplicate_of: np.ndarray
    group: np.ndarray
    info: dict = field(default_factory=dict)
    key: str = ""
    path: Path | None = None

    @property
    def kept(self) -> np.ndarray:
        """(n,) bool: the rows a selector may pick."""
        return self.duplicate_of < 0

    @property
    def removed(self) -> int:
        return int((~self.kept).sum())

    def apply(self, store):
        """``store`` narrowed to the kept rows; refused when the dedup was made for another store version."""
        if self.info.get("store_hash") not in (None, store.base.hash):
            raise DataselectError(f"{self.path or 'this dedup'} was made for another version of {store.path} "
                                  "(re-embedded since); run `dataselect dedup` again")
        end = max((s.end_row for s in store.shards), default=0)
        keep = np.zeros(end, dtype=bool)
        keep[self.rows[self.kept]] = True
        return store.base.subset(keep, f"dedup-{self.key}")

    def save(self, folder: Path) -> dict:
        np.savez(folder / FILE, row=self.rows, duplicate_of=self.duplicate_of, group=self.group)
        return self.info

    @classmethod
    def load(cls, artefact: Artefact, store) -> Dedup:
        path = artefact.path / FILE
        try:
            with np.load(path) as z:
                rows, dup, grp = (z[c].astype(np.int64) for c in ("row", "duplicate_of", "group"))
        except (OSError, ValueError, KeyError) as exc:
            raise DataselectError(f"{path}: unreadable dedup result ({exc}); delete {artefact.path} and run "
                                  "`dataselect dedup` again") from None
        if len(rows) != store.base.n_rows or not np.array_equal(rows, store.base.rows()):
            raise DataselectError(f"{path}: its rows are not the store's ({len(rows):,} vs {store.base.n_rows:,}); "
                                  f"delete {artefact.path} and run `dataselect dedup` again")
        return cls(rows, dup, grp, artefact.info, artefact.key, artefact.path)


def groups_from_roots(rows: np.ndarray, label: np.ndarray, rank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(duplicate_of, group) when rows with equal ``label`` form one group and, in each, the row of the
    lowest ``rank`` is kept. All arrays (n,) in store order."""
    order = np.lexsort((rank, label))
    first = np.ones(len(order), dtype=bool)
    first[1:] = label[order][1:] != label[order][:-1]
    keeper = np.empty(len(order), dtype=np.int64)
    keeper[order] = rows[order][np.maximum.accumulate(np.where(first, np.arange(len(order)), 0))]
    return np.where(keeper == rows, -1, keeper), keeper


def load_dedup(store, ref) -> Dedup:
    """The dedup artefact ``ref`` of ``store``: its folder (as ``dataselect dedup`` printed it), ``dedup-KEY``,
    KEY, or ``latest`` (the newest). Only a name is taken from ``ref``: the artefact is looked up inside the
    store."""
    if str(ref) == "latest":
        found = Artefacts(store.base).find("dedup", refuse_stale=True)
        if not found:
            raise DataselectError(f"--dedup latest: {store.path} has no dedup result; run `dataselect dedup "
                                  f"{store.path}` first")
        return Dedup.load(found[0], store)
    name = Path(str(ref)).name
    key = name[len("dedup-"):] if name.startswith("dedup-") else name
    arts = Artefacts(store.base)
    try:
        folder = arts.folder("dedup", key)
    except DataselectError:
        raise DataselectError(f"--dedup {ref}: not a dedup result (expected the folder `dataselect dedup` printed, "
                              f"under {arts.root})") from None
    given = Path(str(ref))
    if given.parent != Path(".") and given.exists() and given.resolve() != folder.resolve():
        raise DataselectError(f"--dedup {ref}: is not a dedup result of the store {store.path} (its are under "
                              f"{arts.root})")
    return Dedup.load(arts.get("dedup", key), store)
