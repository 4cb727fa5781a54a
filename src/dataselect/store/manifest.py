"""``manifest.json``: what made a store, and which shards hold which pool rows.

Three typed objects, read by :func:`Manifest.load` (the only reader of the JSON) and written by
:class:`dataselect.store.writer.StoreWriter` (the only writer):

* :class:`StoreConfig` -- the identity of a store: model (name, revision), pooling, template, bos,
  batching, max_length, dim, dtype, with_loss, with_ifd, shard_rows, chunk_rows, task, and the
  pool (name, format, fingerprint, hub). A resumed run must ask for the same config, and
  selections and artefacts record the store hash so that stale ones are refused.
* :class:`ShardEntry` -- one shard file: ``file`` (``shard-NNNNN.arrow``), the pool rows
  ``[first_row, end_row)`` it covers, ``rows_stored`` / ``rows_skipped`` / ``truncated`` /
  ``tokens``, ``bytes``, ``sha256`` and ``xxh3`` of the file, ``xxh3_columns`` (column -> xxh3 of its
  Arrow buffers, checked on every read) and ``loss_columns``.
* :class:`Manifest` -- ``format`` ("dataselect-store/1"), ``kind`` ("pool" | "queries"), the config,
  ``model`` (what the model is: architecture, hidden size, vocabulary), the shards, ``counts``
  (rows_read, rows_stored, rows_skipped, truncated, tokens), ``skipped_examples`` (the first 20
  skipped rows: row, where, reason), ``skipped_file`` (``skipped.jsonl``: every skipped row) and
  ``skipped_per_reason``, ``complete``, ``store_hash`` (sha256 over the config and shard hashes,
  when complete), ``parts`` (the chunks of the shard in progress, while embedding), ``scoring``
  (true while ``dataselect score`` rewrites shards), ``created_with`` and ``timings``.

Older manifests are upgraded once, in :func:`Manifest.load`: stores made before ``--bos`` existed
tokenised with exactly one BOS (``bos="always"``), before chunks their chunk was the shard, before
packing their batching was ``padded``. The store hash is always computed over the config as it was
written, so an upgraded store keeps its hash.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from dataselect.errors import DataselectError

MANIFEST = "manifest.json"
FORMAT = "dataselect-store/1"
KINDS = ("pool", "queries")
MAX_SKIPPED_EXAMPLES = 20
SKIPPED = "skipped.jsonl"  # every row --skip-invalid skipped: {"row", "where", "reason"}, pool order
SHARD_NAME = re.compile(r"shard-\d{5}\.arrow")
# what stores written before a field existed did (see the module docstring)
LEGACY_DEFAULTS = {"bos": "always", "batching": "padded", "dtype": "float16", "with_loss": False, "with_ifd": False,
                   "task": None}


def reason_kind(reason: str) -> str:
    """A skip reason without its particulars, to count rows per kind of problem:
    ``conversations[3] has unknown role 'x' (expected ...)`` -> ``conversations[i] has unknown role 'x'``."""
    kind = re.sub(r"\[\d+\]", "[i]", reason)
    kind = re.sub(r"\s*\(.*\)\s*$", "", kind)
    # numbers standing alone (counts, positions), not those inside a name: "UTF-8", "\\ud800", "item2" stay
    return re.sub(r"(?<![\w\\-])\d+(?:\.\d+)?(?![\w-])", "N", kind).strip() or reason


def shard_path(directory, name) -> Path:
    """The path of shard ``name`` of the store in ``directory``, refusing any name the writer does not
    produce (``shard-NNNNN.arrow``) and any file that resolves outside the store (a link)."""
    directory = Path(directory)
    if not isinstance(name, str) or not SHARD_NAME.fullmatch(name):
        raise DataselectError(f"{directory / MANIFEST}: shard file name {name!r} is not one dataselect writes; "
                              "refusing to use it")
    path = directory / name
    if path.exists() and path.resolve().parent != directory.resolve():
        raise DataselectError(f"{path}: shard resolves outside the store ({path.resolve()}); refusing it")
    return path


def is_store(path) -> bool:
    """Whether the folder ``path`` holds a dataselect store (its manifest's format marker; nothing else read)."""
    try:
        return str(json.loads((Path(path) / MANIFEST).read_text()).get("format", "")).startswith("dataselect-store")
    except (OSError, ValueError, AttributeError):
        return False


def _need(where: str, obj: dict, key: str, kind, default=dataclasses.MISSING):
    """``obj[key]`` checked to be of ``kind`` (a type or tuple), or ``default`` when absent."""
    if key not in obj or obj[key] is None and default is None:
        if default is dataclasses.MISSING:
            raise DataselectError(f"{where}: has no {key!r}; the manifest was edited or is not dataselect's")
        return default
    value = obj[key]
    if not isinstance(value, kind) or (kind is int or kind == (int,)) and isinstance(value, bool):
        raise DataselectError(f"{where}: {key!r} is {value!r}, not a valid value; the manifest was edited")
    return value


@dataclass(frozen=True)
class ModelRef:
    name: str
    revision: str


@dataclass(frozen=True)
class PoolRef:
    """The pool a store was embedded from: its file name (or hub id), reader format and fingerprint."""

    name: str
    format: str
    fingerprint: str
    hub: dict | None = None


@dataclass(frozen=True)
class StoreConfig:
    """The identity of a store (module docstring). ``raw`` is the JSON as written, which the store hash covers."""

    model: ModelRef
    pooling: str
    template: str
    max_length: int
    dim: int
    pool: PoolRef
    shard_rows: int
    chunk_rows: int
    bos: str = "always"
    batching: str = "padded"
    dtype: str = "float16"
    with_loss: bool = False
    with_ifd: bool = False
    task: str | None = None
    raw: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_json(cls, obj, where: str = MANIFEST) -> StoreConfig:
        where = f"{where} config"
        if not isinstance(obj, dict):
            raise DataselectError(f"{where}: is not an object; the manifest was edited")
        model = _need(where, obj, "model", dict)
        pool = _need(where, obj, "pool", dict)
        dim = _need(where, obj, "dim", int)
        shard_rows = _need(where, obj, "shard_rows", int)
        if dim < 1 or shard_rows < 1:
            raise DataselectError(f"{where}: dim {dim!r} and shard_rows {shard_rows!r} must be positive")
        hub = pool.get("hub")
        return cls(model=ModelRef(str(_need(where, model, "name", str)), str(model.get("revision", ""))),
                   pooling=_need(where, obj, "pooling", str), template=_need(where, obj, "template", str),
                   max_length=_need(where, obj, "max_length", int), dim=dim,
                   pool=PoolRef(_need(where, pool, "name", str), _need(where, pool, "format", str),
                                _need(where, pool, "fingerprint", str), hub if isinstance(hub, dict) else None),
                   shard_rows=shard_rows, chunk_rows=_need(where, obj, "chunk_rows", int, shard_rows),
                   **{k: _need(where, obj, k, type(v) if v is not None else str, v) for k, v in LEGACY_DEFAULTS.items()},
                   raw=obj)

    def to_json(self) -> dict:
        """The JSON form of a new config (a loaded one keeps ``raw``, what it was written as)."""
        if self.raw:
            return self.raw
        pool = {"name": self.pool.name, "format": self.pool.format, "fingerprint": self.pool.fingerprint}
        if self.pool.hub:
            pool["hub"] = self.pool.hub
        return {"model": {"name": self.model.name, "revision": self.model.revision}, "pooling": self.pooling,
                "template": self.template, "bos": self.bos, "batching": self.batching, "max_length": self.max_length,
                "dim": self.dim, "dtype": self.dtype, "with_loss": self.with_loss, "with_ifd": self.with_ifd,
                "shard_rows": self.shard_rows, "chunk_rows": self.chunk_rows, "task": self.task, "pool": pool}

    def upgraded(self) -> dict:
        """Every field, with what older stores did where they lack one (to compare with a new run's config)."""
        return {**self.to_json(), **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                                     if f.name in LEGACY_DEFAULTS or f.name == "chunk_rows"}}

    def differences(self, other: StoreConfig) -> list[str]:
        """What ``other`` (a new run's config) asks for differently, one line per field."""
        return config_differences(self.upgraded(), other.upgraded())


@dataclass
class ShardEntry:
    """One shard file of a store (module docstring)."""

    file: str
    first_row: int
    end_row: int
    rows_stored: int
    bytes: int
    sha256: str
    rows_skipped: int = 0
    truncated: int = 0
    tokens: int = 0
    xxh3: str | None = None
    xxh3_columns: dict | None = None
    loss_columns: list = field(default_factory=list)

    @classmethod
    def from_json(cls, obj, where: str) -> ShardEntry:
        if not isinstance(obj, dict):
            raise DataselectError(f"{where}: a shard entry is not an object; the manifest was edited")
        file = obj.get("file")
        if not isinstance(file, str) or not SHARD_NAME.fullmatch(file):
            raise DataselectError(f"{where}: shard file name {file!r} is not one dataselect writes; refusing to use it")
        where = f"{where} shard {file}"
        entry = cls(file=file, **{k: _need(where, obj, k, int) for k in ("first_row", "end_row", "rows_stored", "bytes")},
                    sha256=_need(where, obj, "sha256", str),
                    **{k: _need(where, obj, k, int, 0) for k in ("rows_skipped", "truncated", "tokens")},
                    xxh3=_need(where, obj, "xxh3", str, None), xxh3_columns=_need(where, obj, "xxh3_columns", dict, None),
                    loss_columns=list(_need(where, obj, "loss_columns", list, [])))
        if not 0 <= entry.first_row <= entry.end_row or not 0 <= entry.rows_stored <= entry.end_row - entry.first_row:
            raise DataselectError(f"{where}: rows {entry.first_row}..{entry.end_row} with {entry.rows_stored} stored "
                                  "do not add up; the manifest was edited")
        return entry

    def to_json(self) -> dict:
        out = dataclasses.asdict(self)
        return {k: v for k, v in out.items() if v is not None}


@dataclass
class Manifest:
    """A store's manifest (module docstring). ``Manifest.load(folder)`` is the only reader of the JSON."""

    kind: str
    config: StoreConfig
    model: dict
    shards: list[ShardEntry] = field(default_factory=list)
    counts: dict = field(default_factory=dict)
    skipped_examples: list = field(default_factory=list)
    skipped_file: str | None = None
    skipped_per_reason: dict = field(default_factory=dict)
    complete: bool = False
    store_hash: str = ""
    parts: dict | None = None
    scoring: bool = False
    created_with: str = ""
    timings: dict = field(default_factory=dict)

    @classmethod
    def load(cls, directory) -> Manifest:
        path = Path(directory) / MANIFEST
        if not path.is_file():
            raise DataselectError(f"{directory}: not a dataselect store (no {MANIFEST})")
        try:
            obj = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise DataselectError(f"{path}:{exc.lineno}: manifest is not valid JSON ({exc.msg})") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise DataselectError(f"{path}: cannot read the manifest ({exc})") from None
        if not isinstance(obj, dict) or obj.get("format") != FORMAT:
            got = obj.get("format") if isinstance(obj, dict) else type(obj).__name__
            raise DataselectError(f"{path}: unknown store format {got!r} (expected {FORMAT})")
        where = str(path)
        kind = obj.get("kind", "pool")
        if kind not in KINDS:
            raise DataselectError(f"{path}: store kind {kind!r} is not one of {', '.join(KINDS)}")
        shards = _need(where, obj, "shards", list, [])
        skipped_file = obj.get("skipped_file")
        if skipped_file not in (None, SKIPPED):
            raise DataselectError(f"{path}: skipped_file {skipped_file!r} is not the file dataselect writes ({SKIPPED})")
        parts = obj.get("parts")
        return cls(kind=kind, config=StoreConfig.from_json(obj.get("config"), where),
                   model=_need(where, obj, "model", dict, {}),
                   shards=[ShardEntry.from_json(s, where) for s in shards],
                   counts=_need(where, obj, "counts", dict, {}), skipped_examples=_need(where, obj, "skipped_examples", list, []),
                   skipped_file=skipped_file, skipped_per_reason=_need(where, obj, "skipped_per_reason", dict, {}),
                   complete=bool(obj.get("complete")), store_hash=_need(where, obj, "store_hash", str, ""),
                   parts=parts if isinstance(parts, dict) else None, scoring=bool(obj.get("scoring")),
                   created_with=str(obj.get("created_with", "")), timings=_need(where, obj, "timings", dict, {}))

    def to_json(self) -> dict:
        out = {"format": FORMAT, "kind": self.kind, "config": self.config.to_json(), "model": self.model,
               "shards": [s.to_json() for s in self.shards], "counts": self.counts,
               "skipped_examples": self.skipped_examples, "skipped_file": self.skipped_file,
               "skipped_per_reason": self.skipped_per_reason, "complete": self.complete,
               "created_with": self.created_with}
        if self.store_hash:
            out["store_hash"] = self.store_hash
        if self.parts:
            out["parts"] = self.parts
        if self.scoring:
            out["scoring"] = True
        if self.timings:
            out["timings"] = self.timings
        return out

    def computed_hash(self) -> str:
        return store_hash(self.config.to_json(), self.shards)

    @property
    def rows_stored(self) -> int:
        return sum(s.rows_stored for s in self.shards)


def store_hash(config: dict, shards: list) -> str:
    """sha256 over a config's JSON and each shard's file, rows and sha256 (entries or their JSON)."""
    h = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for s in shards:
        s = s.to_json() if isinstance(s, ShardEntry) else s
        h.update(f"{s['file']}:{s['first_row']}:{s['end_row']}:{s['sha256']}".encode())
    return h.hexdigest()


def config_differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Human-readable differences between two store configs (nested keys joined with dots)."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: store has {a!r}, this run asks for {b!r}")
    return out
