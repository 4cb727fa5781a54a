"""``dataselect verify STORE``: every check a store can be given, reported all at once.

For each shard listed in the manifest: the name is one the writer produces and resolves inside the
store, the file exists with the recorded size, sha256 and xxh3 match what was recorded at write time,
the Arrow schema and row count match the manifest, and no embedding or loss is NaN or inf. Then the
store hash is recomputed. Nothing is modified.
"""

from __future__ import annotations

from pathlib import Path

from dataselect.errors import DataselectError
from dataselect.store.manifest import load_manifest, shard_path, store_hash
from dataselect.store.writer import LOSS_COLUMNS, file_sha256, file_xxh3, scan_columns


def verify_store(path) -> tuple[list[str], dict]:
    """Return (problems, summary) for the store at ``path``; no problems means every check passed."""
    from dataselect.store.reader import check_shard

    path = Path(path)
    man = load_manifest(path)
    problems: list[str] = []
    dim = man["config"].get("dim")
    for s in man.get("shards", []):
        try:
            p = shard_path(path, s.get("file"))
        except DataselectError as exc:
            problems.append(str(exc))
            continue
        if not p.is_file():
            problems.append(f"{p}: missing")
            continue
        if p.stat().st_size != s.get("bytes"):
            problems.append(f"{p}: {p.stat().st_size:,} bytes, the manifest says {s.get('bytes')!r}")
        if file_sha256(p) != s.get("sha256"):
            problems.append(f"{p}: sha256 differs from the one recorded when it was written")
        if "xxh3" in s and file_xxh3(p) != s["xxh3"]:
            problems.append(f"{p}: xxh3 differs from the one recorded when it was written")
        try:
            check_shard(p, s, dim)
        except DataselectError as exc:
            problems.append(str(exc))
            continue
        _, problem = scan_columns(p, [], ("embedding", *LOSS_COLUMNS))
        if problem:
            problems.append(f"{p}: {problem}")
    if man.get("complete") and store_hash(man["config"], man["shards"]) != man.get("store_hash"):
        problems.append(f"{path}: store hash does not match the manifest's config and shards (manifest edited)")
    summary = {"shards": len(man.get("shards", [])), "rows": sum(int(s.get("rows_stored", 0)) for s in man["shards"]),
               "complete": bool(man.get("complete"))}
    return problems, summary
