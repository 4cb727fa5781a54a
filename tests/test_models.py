"""The bundled models by name (issue 28): the causal LM converted once into the cache, checked on each use."""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import make_records, run_cli, write_jsonl
from dataselect.embedding.model import model_revision
from dataselect.errors import DataselectError
from dataselect.models import MARKER, converted_folder, file_digest, resolve_model, smollm2_gguf, smollm2_path


def test_a_damaged_conversion_is_refused_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = converted_folder()
    folder.mkdir(parents=True)
    # the right GGUF, but a weight file that is not what the conversion wrote
    marker = {"gguf_xxh3": file_digest(smollm2_gguf()), "dtype": "float16", "files": {"model.safetensors": "0" * 16}}
    (folder / MARKER).write_text(json.dumps(marker))
    (folder / "model.safetensors").write_bytes(b"not the weights")
    with pytest.raises(DataselectError, match="damaged or from another GGUF.*remove that folder"):
        smollm2_path(progress=False)
    write_jsonl(tmp_path / "p.jsonl", make_records(3))
    _, err = run_cli("embed", tmp_path / "p.jsonl", "-m", "bundled", "-o", tmp_path / "s", "-q", expect=2)
    assert "damaged" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "s").exists() and (folder / "model.safetensors").read_bytes() == b"not the weights"
    # a marker that lists no weights vouches for nothing
    (folder / MARKER).write_text(json.dumps({**marker, "files": {}}))
    with pytest.raises(DataselectError, match="damaged or from another GGUF"):
        smollm2_path(progress=False)


def test_the_gguf_identity_is_part_of_the_model_revision(tmp_path):
    real = smollm2_path(progress=False)  # converts on first use (about a minute), then reuses
    assert resolve_model("bundled") == str(real) and resolve_model("org/other") == "org/other"
    marker = json.loads((real / MARKER).read_text())
    assert marker["gguf"] == "SmolLM2-135M-Instruct.Q4_1.gguf" and marker["dtype"] == "float16"
    assert set(marker["files"]) >= {"config.json", "model.safetensors", "tokenizer.json"}
    twin = tmp_path / "twin"
    twin.mkdir()
    for p in real.iterdir():
        (twin / p.name).symlink_to(p) if p.suffix == ".safetensors" else shutil.copy(p, twin / p.name)
    assert model_revision(str(twin), None) == model_revision(str(real), None)
    (twin / MARKER).write_text(json.dumps({**marker, "gguf_xxh3": "another-gguf"}))
    assert model_revision(str(twin), None) != model_revision(str(real), None)
