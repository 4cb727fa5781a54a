"""Loading a Hugging Face model for the embedding pass (by hub id or local path, offline when local)."""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from dataselect.errors import DataselectError

CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")


@dataclass
class LoadedModel:
    """The base model (last hidden layer), its LM head when loss is asked for, and the tokenizer."""

    base: torch.nn.Module
    lm_head: torch.nn.Module | None
    tokenizer: object
    config: object
    name: str
    revision: str
    causal: bool
    device: torch.device
    dtype: torch.dtype
    max_positions: int | None
    logit_softcap: float | None = None

    @property
    def dim(self) -> int:
        return int(self.config.hidden_size)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise DataselectError(f"--device {device!r}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DataselectError(f"--device {device}: no CUDA GPU is visible here")
    return dev


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto``: float32 on CPU (bf16 matmuls are hundreds of times slower on AVX2), bfloat16 on GPU."""
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in table:
        raise DataselectError(f"--dtype {dtype!r}: choose auto, float32, bfloat16 or float16")
    return table[dtype]


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def model_name(name: str) -> str:
    """The name a store records: a local folder by its resolved path (``tiny`` and ``../x/tiny`` are one
    model), the bundled model and hub ids as given."""
    from dataselect.models import NAMES

    return str(Path(name).resolve()) if name not in NAMES and Path(name).is_dir() else name


def model_revision(name: str, config) -> str:
    """The hub commit hash when loaded from the hub cache, else a hash of the local folder's files.

    For a local folder: sha256 over config.json, the tokenizer files and each weight file's name and
    the xxh3 of its contents (cached by path, size and mtime, so a checkpoint is read once): another
    checkpoint of the same size is another revision.
    """
    commit = getattr(config, "_commit_hash", None)
    if commit:
        return str(commit)
    from dataselect.models import file_digest

    path = Path(name)
    if not path.is_dir():
        return "unknown"
    h = hashlib.sha256()
    for p in sorted(path.iterdir()):
        if not p.is_file():
            continue
        if p.suffix in (".json", ".txt", ".model", ".jinja"):
            h.update(p.name.encode() + b"\0" + p.read_bytes())
        else:
            h.update(f"{p.name}\0{p.stat().st_size}\0{file_digest(p)}".encode())
    return "local-" + h.hexdigest()[:16]


def _looks_local(name: str) -> bool:
    """A name that can only be a local path: absolute, ./ ~ or ../, more than one '/', or whose first part
    is a folder here (a hub id is ``org/name``)."""
    if name.startswith(("/", ".", "~")) or name.count("/") > 1 or name.endswith("/") or os.sep in name.replace("/", ""):
        return True
    return "/" in name and Path(name.split("/")[0]).is_dir()


def load_model(name: str, *, device: str = "auto", dtype: str = "auto", with_lm_head: bool = False,
               revision: str | None = None, weights: bool = True, allow_pickle: bool = False) -> LoadedModel:
    """Load tokenizer and model. Encoders work for embeddings; ``with_lm_head`` needs a causal LM.

    ``weights=False`` loads config and tokenizer only (``base`` is None): what a driver that hands the
    model to remote workers needs to describe the store.
    """
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from dataselect.models import resolve_model

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    logging.getLogger("transformers").setLevel(logging.ERROR)
    path = resolve_model(name)
    if Path(path).is_dir():
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        files = [p.name for p in Path(path).iterdir()]
        pickled = [f for f in files if f.endswith(PICKLE_SUFFIXES)]
        if weights and pickled and not any(f.endswith(".safetensors") for f in files) and not allow_pickle:
            raise DataselectError(f"model {name!r} holds pickle weights ({pickled[0]}), which can run code when "
                                  "loaded; convert them to safetensors, or pass --allow-pickle if you trust the file")
    if not Path(path).exists() and _looks_local(str(path)):
        raise DataselectError(f"model folder {name!r} does not exist (a hub id looks like org/name)")
    try:
        config = AutoConfig.from_pretrained(path, revision=revision)
        tokenizer = AutoTokenizer.from_pretrained(path, revision=revision)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataselectError(f"cannot load model {name!r}: {first} (give a local folder, or make sure "
                              "the hub is reachable)") from None
    archs = list(getattr(config, "architectures", None) or [])
    causal = any(a.endswith(CAUSAL_SUFFIXES) for a in archs) or bool(getattr(config, "is_decoder", False))
    if with_lm_head and not causal:
        raise DataselectError(f"losses need a causal language model; {name!r} is "
                              f"{', '.join(archs) or config.model_type} (an encoder without an LM head), so it "
                              "cannot give them (--with-loss, score, --loss-model)")
    dev = resolve_device(device) if weights else torch.device("cpu")
    torch_dtype = resolve_dtype(dtype, dev)
    if not weights:
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        max_pos = getattr(config, "max_position_embeddings", None)
        return LoadedModel(base=None, lm_head=None, tokenizer=tokenizer, config=config, name=name,
                           revision=model_revision(path, config), causal=causal, device=dev, dtype=torch_dtype,
                           max_positions=int(max_pos) if max_pos else None)
    try:
        if with_lm_head:
            full = AutoModelForCausalLM.from_pretrained(path, revision=revision, dtype=torch_dtype,
                                                        use_safetensors=None if allow_pickle else True)
            base, head = full.base_model, full.get_output_embeddings()
        else:
            base, head = AutoModel.from_pretrained(path, revision=revision, dtype=torch_dtype,
                                                   use_safetensors=None if allow_pickle else True), None
    except (OSError, ValueError, RuntimeError) as exc:
        raise DataselectError(f"cannot load weights of {name!r}: {str(exc).splitlines()[0]}") from None
    base.eval().to(dev)
    if head is not None:
        head.eval().to(dev)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    max_pos = getattr(config, "max_position_embeddings", None)
    return LoadedModel(base=base, lm_head=head, tokenizer=tokenizer, config=config, name=name,
                       revision=model_revision(path, config), causal=causal, device=dev, dtype=torch_dtype,
                       max_positions=int(max_pos) if max_pos else None,
                       logit_softcap=getattr(config, "final_logit_softcapping", None))


def describe(model: LoadedModel) -> dict:
    """The model part of a store manifest."""
    return {"name": model.name, "revision": model.revision,
            "architecture": (getattr(model.config, "architectures", None) or [model.config.model_type])[0],
            "causal": model.causal, "hidden_size": model.dim,
            "vocab_size": int(getattr(model.config, "vocab_size", 0) or 0)}
