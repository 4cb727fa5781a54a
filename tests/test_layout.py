"""The store has one read path and one write path (issue 25): nothing outside store/ maps a shard or
writes a manifest."""

from __future__ import annotations

import re
from pathlib import Path

SRC = Path(__file__).parent.parent / "src" / "dataselect"


def test_only_the_store_package_opens_shards_or_writes_manifests():
    found = []
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC).as_posix()
        if rel.startswith("store/"):
            continue
        text = path.read_text()
        for pattern in (r"ipc\.open_file", r"memory_map", r"write_json\([^)\n]*(?:MANIFEST|manifest)",
                        r"write_text\([^)\n]*(?:MANIFEST|manifest)"):
            for m in re.finditer(pattern, text):
                line = text[:m.start()].count("\n") + 1
                if rel == "selection.py" and ("memory_map" in pattern or "open_file" in pattern):
                    continue  # selection.arrow: a selection, not a shard
                found.append(f"{rel}:{line}: {m.group(0)}")
    assert found == []


def test_nothing_outside_the_selectors_branches_on_a_method_name():
    """Issue 26: reports/build.py and explain.py branched on method names; they call selector hooks now."""
    names = r"(?:random|loss|rds\+|kmeans-sensitivity|hierarchical-kmeans)"
    found = []
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC).as_posix()
        if rel.startswith(("selectors/", "embedding/")):  # embedding: --pooling rds+, not a selector
            continue
        for m in re.finditer(rf"(?:==|!=|\bin)\s*\(?\s*[\"']{names}[\"']", path.read_text()):
            found.append(f"{rel}: {m.group(0)}")
    assert found == []
