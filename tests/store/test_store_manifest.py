"""The typed manifest (store/manifest.py), the one read path and stores written by the previous release."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from dataselect.errors import DataselectError
from dataselect.store import Manifest, Store
from dataselect.store.synthetic import store_from_array
from dataselect.store.verify import verify_store

LEGACY = Path(__file__).parents[1] / "data" / "store-d0fb70a"  # written by dataselect at commit d0fb70a


@pytest.fixture
def legacy(tmp_path) -> Path:
    """A copy of the previous release's stores (commands may write artefacts and selections beside them)."""
    shutil.copytree(LEGACY, tmp_path / "old")
    return tmp_path / "old"


def test_stores_written_by_the_previous_release_open_and_verify(legacy):
    pool, queries = Store(legacy / "pool-store"), Store(legacy / "queries-store")
    assert (pool.n_rows, pool.dim, len(pool.shards), pool.kind) == (24, 64, 3, "pool")
    assert pool.config.bos == "auto" and pool.config.batching == "padded" and pool.config.with_loss
    assert queries.kind == "queries" and list(queries.column("task")) == ["math"] * 4
    assert np.isfinite(pool.column("loss_response")).all()
    for store in ("pool-store", "queries-store"):
        problems, summary = verify_store(legacy / store)
        assert problems == [] and summary["complete"]
        assert Manifest.load(legacy / store).computed_hash() == Manifest.load(legacy / store).store_hash


def test_the_previous_releases_stores_select_and_export_as_before(legacy, tmp_path):
    old = json.loads((legacy / "selection-random" / "selection.json").read_text())
    run_cli("run", "--store", legacy / "pool-store", "--method", "random", "--budget", "5", "--seed", old["seed"],
            "--out", tmp_path / "again", "-q")
    from dataselect.selection import read_selection

    again, _ = read_selection(tmp_path / "again")
    before, _ = read_selection(legacy / "selection-random")
    assert again.column("row").to_pylist() == before.column("row").to_pylist()
    run_cli("export", legacy / "selection-random", "--pool", legacy / "pool.jsonl", "--out", tmp_path / "x.jsonl")
    lines = (tmp_path / "x.jsonl").read_text().splitlines()
    assert [json.loads(x)["dataselect"]["row"] for x in lines] == before.column("row").to_pylist()
    for method in (["rds+", "--queries", legacy / "queries-store"], ["kmeans-sensitivity", "--k", "2"],
                   ["hierarchical-kmeans", "--k", "4,2", "--resamples", "1"], ["loss"]):
        out = tmp_path / f"sel-{method[0]}"
        run_cli("run", "--store", legacy / "pool-store", "--method", *method, "--budget", "6", "--out", out, "-q")
        assert read_selection(out)[0].num_rows == 6


def _edit(store: Path, change) -> None:
    man = json.loads((store / "manifest.json").read_text())
    change(man)
    (store / "manifest.json").write_text(json.dumps(man))


@pytest.mark.parametrize("change, message", [
    (lambda m: m["config"].update(dim="64"), "'dim' is '64', not a valid value"),
    (lambda m: m["config"].pop("pooling"), "has no 'pooling'"),
    (lambda m: m["shards"][0].update(rows_stored=-1), "do not add up"),
    (lambda m: m["shards"][0].update(first_row=True), "'first_row' is True"),
    (lambda m: m.update(kind="sideways"), "store kind 'sideways'"),
    (lambda m: m.update(skipped_file="../../etc/passwd"), "skipped_file"),
    (lambda m: m.update(shards={"a": 1}), "'shards' is"),
])
def test_a_manifest_that_does_not_hold_up_is_refused_in_one_line(tmp_path, change, message):
    store_from_array(tmp_path / "s", np.eye(4, dtype=np.float32))
    _edit(tmp_path / "s", change)
    with pytest.raises(DataselectError, match=message) as info:
        Store(tmp_path / "s")
    assert "manifest.json" in str(info.value) and "\n" not in str(info.value)


def test_older_manifests_are_upgraded_once_and_keep_their_hash(tmp_path):
    """A store from before --bos, chunks and packing: it tokenised with one BOS, its chunk was its shard."""
    store_from_array(tmp_path / "s", np.eye(4, dtype=np.float32), shard_rows=2)

    def strip(m):
        for key in ("bos", "batching", "chunk_rows", "dtype", "with_ifd", "task"):
            m["config"].pop(key, None)
        from dataselect.store.manifest import store_hash

        m["store_hash"] = store_hash(m["config"], m["shards"])

    _edit(tmp_path / "s", strip)
    man = Manifest.load(tmp_path / "s")
    assert (man.config.bos, man.config.batching, man.config.chunk_rows) == ("always", "padded", 2)
    assert man.computed_hash() == man.store_hash  # the hash covers the config as it was written
    assert verify_store(tmp_path / "s")[0] == []
    assert "bos" not in man.to_json()["config"]  # what is written back is what was read


def test_a_shard_of_another_size_than_recorded_is_refused_on_opening(tmp_path):
    store_from_array(tmp_path / "s", np.eye(4, dtype=np.float32))
    with open(tmp_path / "s" / "shard-00000.arrow", "ab") as fh:
        fh.write(b"\0" * 8)
    with pytest.raises(DataselectError, match="bytes, the manifest says"):
        Store(tmp_path / "s")
