"""Nothing read from metadata is trusted: shard names, dims, row counts, bytes (issue: safe by construction)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import make_records, run_cli, write_jsonl
from dataselect.errors import DataselectError
from dataselect.store import Store
from dataselect.store.synthetic import store_from_array, unit_rows


@pytest.fixture
def vec_store(tmp_path):
    rng = np.random.default_rng(0)
    pool = store_from_array(tmp_path / "pool", unit_rows(rng, 400, 16), shard_rows=100)
    queries = store_from_array(tmp_path / "q", unit_rows(rng, 6, 16), kind="queries", tasks=["a"] * 3 + ["b"] * 3)
    return pool, queries


def edit_manifest(store, change) -> None:
    path = store / "manifest.json"
    man = json.loads(path.read_text())
    change(man)
    path.write_text(json.dumps(man))


def flip_bytes(path, at_fraction: float = 0.6, count: int = 64) -> None:
    data = bytearray(path.read_bytes())
    at = int(len(data) * at_fraction)
    data[at:at + count] = bytes((b ^ 0x5A) for b in data[at:at + count])
    path.write_bytes(bytes(data))


def test_shard_name_from_the_manifest_cannot_leave_the_store(tmp_path, vec_store):
    pool, _ = vec_store
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "important.arrow").write_bytes(b"precious")
    edit_manifest(pool, lambda m: m["shards"][1].update(file="../victim/important.arrow"))
    with pytest.raises(DataselectError, match="not one dataselect writes"):
        Store(pool)
    _, err = run_cli("score", pool, "--pool", tmp_path / "nothing.jsonl", expect=2)
    assert (victim / "important.arrow").read_bytes() == b"precious"


def test_a_linked_shard_that_resolves_outside_is_refused(tmp_path, vec_store):
    pool, _ = vec_store
    outside = tmp_path / "elsewhere.arrow"
    (pool / "shard-00001.arrow").rename(outside)
    (pool / "shard-00001.arrow").symlink_to(outside)
    with pytest.raises(DataselectError, match="resolves outside the store"):
        Store(pool)


def test_flipped_bytes_are_detected_on_read(tmp_path, vec_store):
    pool, q = vec_store
    run_cli("run", "--store", pool, "--method", "rds+", "--queries", q, "--budget", "50", "--out", tmp_path / "a",
            "-q")
    flip_bytes(pool / "shard-00002.arrow")
    _, err = run_cli("run", "--store", pool, "--method", "rds+", "--queries", q, "--budget", "50",
                     "--out", tmp_path / "b", "-q", expect=2)
    assert "checksum mismatch in column" in err and "shard-00002.arrow" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "b").exists()
    _, err = run_cli("verify", pool, expect=2)
    assert "shard-00002.arrow: sha256 differs" in err and "xxh3 differs" in err


def test_edited_dim_and_row_counts_are_refused(vec_store):
    pool, _ = vec_store
    edit_manifest(pool, lambda m: m["config"].update(dim=8))
    with pytest.raises(DataselectError, match="manifest says 8 float16"):
        Store(pool)
    edit_manifest(pool, lambda m: (m["config"].update(dim=16), m["shards"][0].update(rows_stored=150)))
    with pytest.raises(DataselectError, match="rows 0..100 with 150 stored do not add up"):
        Store(pool)


def test_truncated_shard_is_one_line(tmp_path, vec_store):
    pool, q = vec_store
    path = pool / "shard-00003.arrow"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    _, err = run_cli("run", "--store", pool, "--method", "random", "--budget", "5", "--out", tmp_path / "s",
                     expect=2)
    assert "truncated or corrupt" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_verify_passes_a_good_store_and_names_every_problem(tmp_path, vec_store, capsys):
    pool, _ = vec_store
    run_cli("verify", pool)
    assert "ok (4 shards, 400 rows" in capsys.readouterr().out
    flip_bytes(pool / "shard-00000.arrow")
    (pool / "shard-00003.arrow").unlink()
    _, err = run_cli("verify", pool, expect=2)
    assert "shard-00000.arrow: sha256 differs" in err and "shard-00003.arrow: missing" in err
    assert any(f"{n} problem(s)" in err for n in (2, 3, 4))  # flipped bytes may also read as a NaN


def test_embed_rerun_repairs_a_corrupt_shard(tmp_path, tiny_llama):
    pool = write_jsonl(tmp_path / "pool.jsonl", make_records(30, seed=4))
    run_cli("embed", pool, "-m", tiny_llama, "-o", tmp_path / "s", "--shard-rows", "10", "-q")
    before = (tmp_path / "s" / "shard-00001.arrow").read_bytes()
    flip_bytes(tmp_path / "s" / "shard-00001.arrow")
    run_cli("embed", pool, "-m", tiny_llama, "-o", tmp_path / "s", "--shard-rows", "10", "-q")
    assert (tmp_path / "s" / "shard-00001.arrow").read_bytes() == before
    run_cli("verify", tmp_path / "s")


def test_a_checkpoint_with_other_weights_of_the_same_size_is_another_revision(tmp_path, tiny_llama):
    """Same folder, weights replaced in place by others of the same size: stores must not mix them."""
    import shutil

    from safetensors.torch import load_file, save_file

    from dataselect.embedding.model import model_revision

    model = tmp_path / "model"
    shutil.copytree(tiny_llama, model)
    pool = write_jsonl(tmp_path / "p.jsonl", make_records(12))
    q = write_jsonl(tmp_path / "q.jsonl", [{"prompt": "a cat", "task": "t"}])
    run_cli("embed", pool, "-m", model, "-o", tmp_path / "s", "-q")
    before = model_revision(str(model), None)
    weights = model / "model.safetensors"
    tensors = load_file(weights)
    name = next(iter(tensors))
    tensors[name] = tensors[name] + 0.5
    size = weights.stat().st_size
    save_file(tensors, weights, metadata={"format": "pt"})
    assert weights.stat().st_size == size and model_revision(str(model), None) != before
    run_cli("embed", q, "-m", model, "-o", tmp_path / "qs", "-q", "--tasks-from-records")
    _, err = run_cli("run", "--store", tmp_path / "s", "--method", "rds+", "--queries", tmp_path / "qs",
                     "--budget", "3", "--out", tmp_path / "sel", expect=2)
    assert "model revision" in err


def test_pickle_checkpoints_need_consent(tmp_path, tiny_llama):
    import shutil

    import torch
    from safetensors.torch import load_file

    pickled = tmp_path / "pickled"  # an older checkpoint: torch.save'd weights (transformers 5 writes safetensors)
    shutil.copytree(tiny_llama, pickled)
    torch.save(load_file(pickled / "model.safetensors"), pickled / "pytorch_model.bin")
    (pickled / "model.safetensors").unlink()
    pool = write_jsonl(tmp_path / "p.jsonl", make_records(8))
    _, err = run_cli("embed", pool, "-m", pickled, "-o", tmp_path / "s", "-q", expect=2)
    assert "pickle weights" in err and "--allow-pickle" in err and len(err.strip().splitlines()) == 1
    run_cli("embed", pool, "-m", pickled, "-o", tmp_path / "s", "-q", "--allow-pickle")


def test_one_model_however_its_path_is_written(tmp_path, tiny_llama, monkeypatch):
    from pathlib import Path

    pool = write_jsonl(tmp_path / "p.jsonl", make_records(12))
    q = write_jsonl(tmp_path / "q.jsonl", [{"prompt": "a cat", "task": "t"}])
    run_cli("embed", pool, "-m", tiny_llama, "-o", tmp_path / "s", "-q")
    monkeypatch.chdir(Path(tiny_llama).parent)
    run_cli("embed", q, "-m", Path(tiny_llama).name, "-o", tmp_path / "qs", "-q", "--tasks-from-records")
    run_cli("run", "--store", tmp_path / "s", "--method", "rds+", "--queries", tmp_path / "qs", "--budget", "3",
            "--out", tmp_path / "sel", "-q")


def test_methods_that_ignore_queries_refuse_them(tmp_path, vec_store):
    pool, q = vec_store
    for method in ("random", "hierarchical-kmeans", "loss"):
        _, err = run_cli("run", "--store", pool, "--method", method, "--queries", q, "--budget", "5",
                         "--out", tmp_path / method, expect=2)
        assert "does not use --queries" in err


def test_a_query_file_of_blank_lines_makes_no_store(tmp_path, tiny_llama):
    q = tmp_path / "q.jsonl"
    q.write_text("\n\n   \n\n")
    _, err = run_cli("embed", q, "-m", tiny_llama, "-o", tmp_path / "qs", "--task", "t", "-q", expect=2)
    assert "no records" in err and not (tmp_path / "qs" / "manifest.json").exists()


def poison(store, shard: int, position: int, value: float) -> None:
    """Put ``value`` (NaN or inf) into one embedding of a shard, with every checksum made to match:
    a store as a release without finite checks could have written it."""
    import pyarrow as pa

    from dataselect.store.manifest import store_hash
    from dataselect.store.writer import column_xxh3, embedding_array, file_sha256, file_xxh3

    path = store / f"shard-{shard:05d}.arrow"
    table = pa.ipc.open_file(pa.BufferReader(path.read_bytes())).read_all()  # in memory: the file is rewritten
    emb = table.column("embedding").combine_chunks()
    x = emb.values.to_numpy().reshape(len(emb), -1).copy()
    x[position, 3] = value
    table = table.set_column(table.schema.get_field_index("embedding"), "embedding", embedding_array(x))
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
        w.write_table(table)

    def update(m):
        s = m["shards"][shard]
        s.update(bytes=path.stat().st_size, sha256=file_sha256(path), xxh3=file_xxh3(path),
                 xxh3_columns=column_xxh3(path))
        m["store_hash"] = store_hash(m["config"], m["shards"])

    edit_manifest(store, update)


@pytest.mark.parametrize("method", ["rds+", "kmeans-sensitivity", "hierarchical-kmeans", "random"])
def test_every_selector_refuses_a_store_with_nan_or_inf(tmp_path, vec_store, method):
    """Issue 24.3: rds+ ranked an inf row first; the clustering methods crashed with a torch traceback."""
    pool, q = vec_store
    poison(pool, 1, 5, np.nan)
    poison(pool, 2, 7, np.inf)
    extra = {"rds+": ["--queries", q], "kmeans-sensitivity": ["--variant", "coreset"],
             "hierarchical-kmeans": ["--k", "8,2"], "random": []}[method]
    # random reads no embedding (nor loss): its selection is right whatever the vectors hold
    _, err = run_cli("run", "--store", pool, "--method", method, *extra, "--budget", "20", "--out", tmp_path / "s",
                     "-q", expect=0 if method == "random" else 2)
    if method == "random":
        return
    assert "NaN or inf in embedding" in err and "pool rows 105" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "s").exists()


def test_verify_reports_nan_and_inf(vec_store):
    pool, _ = vec_store
    poison(pool, 1, 5, np.nan)
    _, err = run_cli("verify", pool, expect=2)
    assert "shard-00001.arrow: NaN or inf in embedding of 1 row (pool rows 105)" in err


def test_a_query_store_with_inf_is_refused(tmp_path, vec_store):
    pool, q = vec_store
    poison(q, 0, 2, -np.inf)
    _, err = run_cli("run", "--store", pool, "--method", "rds+", "--queries", q, "--budget", "20",
                     "--out", tmp_path / "s", expect=2)
    assert "NaN or inf in embedding" in err


def test_writer_refuses_non_finite_embeddings_and_losses(tmp_path):
    x = np.ones((10, 4), np.float32)
    x[3, 1] = np.nan
    with pytest.raises(DataselectError, match=r"NaN or inf in embedding of 1 row \(pool rows 3\)"):
        store_from_array(tmp_path / "a", x)
    assert not list((tmp_path / "a").glob("shard-*"))
    loss = np.ones(10, np.float32)
    loss[4] = np.inf
    with pytest.raises(DataselectError, match="NaN or inf in loss_response"):
        store_from_array(tmp_path / "b", np.ones((10, 4), np.float32), extra={"loss_response": loss})


def test_embed_refuses_a_model_that_gives_nan(tmp_path):
    """Issue 24.3: a model whose final norm holds a NaN gave an all-NaN store; embed exited 0 and verify said ok."""
    import torch
    from transformers import AutoModelForCausalLM

    from tinymodel import build_llama

    path = build_llama(tmp_path / "nan-llama")
    model = AutoModelForCausalLM.from_pretrained(path)
    with torch.no_grad():
        model.model.norm.weight[0] = float("nan")
    model.save_pretrained(path)
    pool = write_jsonl(tmp_path / "pool.jsonl", make_records(12))
    _, err = run_cli("embed", pool, "-m", path, "-o", tmp_path / "st", "-q", expect=2)
    assert "NaN or inf in embedding of 12 rows" in err and "--dtype float32" in err
    assert len(err.strip().splitlines()) == 1
    assert not list((tmp_path / "st").glob("shard-*.arrow"))
