"""Pools on the Hugging Face hub (or any ``datasets.load_dataset`` source), read through ``datasets``.

``dataselect embed allenai/tulu-3-sft-mixture --split train`` reads the split with
``datasets.load_dataset(name, config, split=split)``: downloaded once into the ``datasets`` cache and
memory-mapped from there, so a pool larger than memory is fine; ``--streaming`` reads it as a stream
instead (no cache on disk; a resumed run reads the stream again up to where it stopped). A local
folder of data files given with ``--split`` goes through the same call, which is how the tests run
it offline. Rows are numbered in the split's order, validated and fingerprinted like local files.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from dataselect.errors import DataselectError

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_BATCH = 4096


@dataclass(frozen=True)
class HubPool:
    """A ``datasets`` source: hub id (or local data folder), config, split; ``streaming`` to not cache."""

    name: str
    split: str = "train"
    config: str | None = None
    streaming: bool = False

    def __str__(self) -> str:
        return f"{self.name}[{self.split}]" + (f" ({self.config})" if self.config else "")

    def load(self):
        import datasets

        try:
            return datasets.load_dataset(self.name, self.config, split=self.split, streaming=self.streaming)
        except (FileNotFoundError, ValueError) as exc:
            raise DataselectError(f"{self}: cannot load with datasets ({str(exc).splitlines()[0]})") from None
        except Exception as exc:  # network and hub errors come in many types
            raise DataselectError(f"{self}: cannot load with datasets ({type(exc).__name__}: "
                                  f"{str(exc).splitlines()[0] if str(exc) else ''})") from None

    def fingerprint(self) -> str:
        """Identity of the split's data: the ``datasets`` builder's hash (hub revision and data files;
        for local files their paths and modification times) with name, config and split."""
        import datasets

        try:
            builder = datasets.load_dataset_builder(self.name, self.config)
        except Exception as exc:
            raise DataselectError(f"{self}: cannot resolve with datasets ({str(exc).splitlines()[0]})") from None
        key = f"{self.name}\0{self.config}\0{self.split}\0{builder.hash}"
        return "hf-" + hashlib.sha256(key.encode()).hexdigest()

    def records(self, start: int = 0) -> Iterator[tuple[str, dict]]:
        """(where, record) from row ``start`` on; ``where`` is ``NAME[SPLIT]:row N``."""
        ds = self.load()
        if self.streaming:
            for j, rec in enumerate(ds.skip(start) if start else ds):
                yield f"{self}:row {start + j}", rec
            return
        yield from dataset_records(ds, start, str(self))

    def columns(self) -> list[str]:
        ds = self.load()
        return list(ds.column_names or (ds.features or {}))


def dataset_records(ds, start: int, label: str) -> Iterator[tuple[str, dict]]:
    """(``LABEL:row N``, record) of an in-memory-mapped ``datasets.Dataset`` from row ``start``, read
    a batch of columns at a time."""
    for lo in range(start, len(ds), _BATCH):
        batch = ds[lo:lo + _BATCH]
        cols = list(batch)
        for j in range(len(batch[cols[0]])):
            yield f"{label}:row {lo + j}", {c: batch[c][j] for c in cols}


def pool_source(pool, split: str | None = None, config: str | None = None, streaming: bool = False):
    """What the user named as the pool: a local path, or a :class:`HubPool` when ``split`` is given or
    ``pool`` is an ``owner/name`` id with no such local path."""
    if isinstance(pool, HubPool):
        return pool
    text = str(pool)
    if split is not None or streaming or config is not None or (not Path(text).exists() and HUB_ID.match(text)):
        return HubPool(text, split or "train", config, streaming)
    return Path(text)
