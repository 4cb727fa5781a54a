"""``manifest.json``: what made a store, and which shards hold which pool rows.

Layout::

    {"format": "dataselect-store/1", "kind": "pool" | "queries",
     "config": {model, pooling, template, max_length, dim, dtype, with_loss, with_ifd, shard_rows,
                pool: {path, format, fingerprint}, task},
     "shards": [{"file", "first_row", "end_row", "rows_stored", "rows_skipped", "bytes", "sha256"}],
     "counts": {"rows_read", "rows_stored", "rows_skipped", "truncated", "tokens"},
     "skipped_examples": [{"row", "where", "reason"}],   # the first 20, in pool order
     "complete": bool, "store_hash": sha256 over config and shard hashes (when complete),
     "created_with": "dataselect X.Y.Z", "timings": {...}}

``config`` is the identity of a store: a resumed run must ask for the same config, and selections
record ``store_hash`` so that stale indexes and clusterings are refused.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from dataselect.errors import DataselectError

MANIFEST = "manifest.json"
FORMAT = "dataselect-store/1"
MAX_SKIPPED_EXAMPLES = 20
SKIPPED = "skipped.jsonl"  # every row --skip-invalid skipped: {"row", "where", "reason"}, pool order


def reason_kind(reason: str) -> str:
    """A skip reason without its particulars, to count rows per kind of problem:
    ``conversations[3] has unknown role 'x' (expected ...)`` -> ``conversations[i] has unknown role 'x'``."""
    kind = re.sub(r"\[\d+\]", "[i]", reason)
    kind = re.sub(r"\s*\(.*\)\s*$", "", kind)
    # numbers standing alone (counts, positions), not those inside a name: "UTF-8", "\\ud800", "item2" stay
    return re.sub(r"(?<![\w\\-])\d+(?:\.\d+)?(?![\w-])", "N", kind).strip() or reason


SHARD_NAME = re.compile(r"shard-\d{5}\.arrow")


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


def load_manifest(directory) -> dict:
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise DataselectError(f"{directory}: not a dataselect store (no {MANIFEST})")
    try:
        man = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataselectError(f"{path}:{exc.lineno}: manifest is not valid JSON ({exc.msg})") from None
    if man.get("format") != FORMAT:
        raise DataselectError(f"{path}: unknown store format {man.get('format')!r} (expected {FORMAT})")
    return man


def store_hash(config: dict, shards: list[dict]) -> str:
    h = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for s in shards:
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
