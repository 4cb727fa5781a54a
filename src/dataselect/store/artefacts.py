"""What is built from a store and kept beside it: clusterings, hierarchies, FAISS indexes, dedup results.

One cache, one format: ``STORE/artefacts/KIND-KEY/`` holds the artefact's own files and
``artefact.json`` (format ``dataselect-artefact/1``, kind, key, the effective parameters, the store
hash, what the build recorded). KEY hashes the kind, the effective parameters and the store hash, so
another parameter or another version of the store is another artefact; an artefact whose recorded
store hash is not the store's is refused as stale. A build goes to a temporary folder swapped in
atomically (:func:`dataselect.outputs.atomic_dir`, under the artefact's lock): a killed build leaves
no partial artefact, and ``dataselect`` recognises its artefacts as its own outputs.

Selections record the keys of the artefacts they used (``selection.json`` ``artefacts``), so that
``report``, ``explain`` and ``compare`` read those and never rebuild one.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from dataselect.errors import DataselectError
from dataselect.outputs import atomic_dir

FOLDER = "artefacts"
META = "artefact.json"
FORMAT = "dataselect-artefact/1"
KINDS = ("clustering", "hierarchy", "index", "dedup", "semdedup", "reduced")
_NAME = re.compile(r"([a-z]+)-([0-9a-f]{16})")

T = TypeVar("T")


@dataclass(frozen=True)
class Artefact:
    """One artefact on disk: ``kind``, ``key``, its folder ``path``, the ``params`` it was built with and
    what its build recorded (``info``)."""

    kind: str
    key: str
    path: Path
    params: dict
    info: dict


def is_artefact(path: Path) -> bool:
    """Whether ``path`` is an artefact folder dataselect wrote (its own marker, ``artefact.json``)."""
    try:
        return json.loads((Path(path) / META).read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


class Artefacts:
    """The artefact cache of one (complete) store."""

    def __init__(self, store):
        self.store = store
        self.root = Path(store.path) / FOLDER

    def key(self, kind: str, params: dict) -> str:
        text = json.dumps({"kind": kind, "params": params, "store": self.store.hash}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def folder(self, kind: str, key: str) -> Path:
        if kind not in KINDS or not re.fullmatch(r"[0-9a-f]{16}", str(key)):
            raise DataselectError(f"artefact {kind}-{key}: not a name dataselect writes")
        return self.root / f"{kind}-{key}"

    def get(self, kind: str, key: str) -> Artefact:
        """The artefact ``kind``/``key``, checked: refused in one line when it is gone or stale."""
        folder = self.folder(kind, key)
        if not (folder / META).is_file():
            raise DataselectError(f"{folder}: the {kind} this selection used is gone from the store (deleted, or the "
                                  "store was re-embedded); run the selection again to rebuild it")
        try:
            meta = json.loads((folder / META).read_text())
        except (OSError, ValueError) as exc:
            raise DataselectError(f"{folder / META}: unreadable ({exc}); delete {folder} and run again") from None
        if meta.get("format") != FORMAT or meta.get("kind") != kind or meta.get("key") != key:
            raise DataselectError(f"{folder / META}: is not the {kind} artefact {key}; delete {folder} and run again")
        if meta.get("store_hash") != self.store.hash:
            raise DataselectError(f"{folder} is stale: it was built for another version of the store (re-embedded or "
                                  f"re-scored since); delete it and run again to rebuild it")
        return Artefact(kind, key, folder, meta.get("params", {}), meta.get("info", {}))

    def get_or_build(self, kind: str, params: dict, build: Callable[[Path], tuple[T, dict]],
                     load: Callable[[Artefact], T]) -> tuple[T, Artefact]:
        """The artefact of ``kind`` with ``params`` for this store: ``load`` of the cached one, or else
        ``build(folder)`` (writes the artefact's files into ``folder``, returns (value, info to record)),
        swapped in atomically. Returns (value, artefact)."""
        key = self.key(kind, params)
        folder = self.folder(kind, key)
        if (folder / META).is_file():
            art = self.get(kind, key)
            return load(art), art
        self.root.mkdir(exist_ok=True)
        with atomic_dir(folder, overwrite=True) as tmp:
            value, info = build(tmp)
            meta = {"format": FORMAT, "kind": kind, "key": key, "params": params, "store_hash": self.store.hash,
                    "created": time.strftime("%Y-%m-%d %H:%M:%S"), "info": info}
            (tmp / META).write_text(json.dumps(meta, indent=2, default=str) + "\n")
        return value, Artefact(kind, key, folder, params, info)

    def find(self, kind: str, match: dict | None = None, refuse_stale: bool = False) -> list[Artefact]:
        """This store's artefacts of ``kind`` whose parameters include ``match``, newest first. Stale ones are
        left out; with ``refuse_stale``, when only stale ones match, the newest one's refusal is raised."""
        match = match or {}
        found, stale = [], []
        if not self.root.is_dir():
            return found
        for folder in self.root.iterdir():
            m = _NAME.fullmatch(folder.name)
            if not m or m.group(1) != kind:
                continue
            try:
                art = self.get(kind, m.group(2))
            except DataselectError as exc:
                try:
                    params = json.loads((folder / META).read_text()).get("params", {})
                except (OSError, ValueError, AttributeError):
                    params = {}
                if isinstance(params, dict) and all(params.get(k) == v for k, v in match.items()):
                    stale.append((folder.stat().st_mtime, exc))
                continue
            if all(art.params.get(k) == v for k, v in match.items()):
                found.append((folder.stat().st_mtime, art))
        if not found and stale and refuse_stale:
            raise max(stale, key=lambda p: p[0])[1]
        return [a for _, a in sorted(found, key=lambda p: -p[0])]
