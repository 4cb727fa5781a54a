"""``dataselect verify STORE``: every check a store can be given, reported all at once.

For each shard listed in the manifest, :func:`dataselect.store.reader.shard_problems` at its deepest:
name, size, sha256 and xxh3 as recorded at write time, Arrow schema and row count as the manifest
says, no NaN or inf embedding or loss. Then the store hash is recomputed. Nothing is modified.
"""

from __future__ import annotations

from pathlib import Path

from dataselect.store.manifest import Manifest
from dataselect.store.reader import shard_problems


def verify_store(path) -> tuple[list[str], dict]:
    """Return (problems, summary) for the store at ``path``; no problems means every check passed."""
    path = Path(path)
    man = Manifest.load(path)
    problems: list[str] = []
    for s in man.shards:
        problems += shard_problems(path, s, man.config.dim, sha256=True, finite=True)
    if man.complete and man.computed_hash() != man.store_hash:
        problems.append(f"{path}: store hash does not match the manifest's config and shards (manifest edited)")
    summary = {"shards": len(man.shards), "rows": man.rows_stored, "complete": man.complete}
    return problems, summary
