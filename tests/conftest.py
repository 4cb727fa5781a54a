"""Shared fixtures: tiny real models (built once per session) and small pools in every format."""

from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tinymodel import build_llama

WORDS = ("the cat sat on a mat while water ran down the river and people said what is two plus three "
         "def return print import class sum list poem story capital city country number time").split()


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> str:
    return str(build_llama(tmp_path_factory.mktemp("models") / "tiny-llama"))


@pytest.fixture(scope="session")
def minilm() -> str:
    """The folder of the bundled encoder (``--model bundled-minilm``): all-MiniLM-L6-v2, 384 dims."""
    from dataselect.models import minilm_path

    return str(minilm_path())


def write_jsonl(path: Path, records) -> Path:
    path = Path(path)
    with open(path, "w") as fh:
        for r in records:
            fh.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
    return path


def make_records(n: int, seed: int = 0, long_tail: bool = True) -> list[dict]:
    """Records in all three formats with a long-tailed length mix and a few sources."""
    rng = random.Random(seed)
    recs = []
    for i in range(n):
        k = int(rng.paretovariate(1.2) * 4) if long_tail else 8
        q = " ".join(rng.choice(WORDS) for _ in range(min(k, 120)))
        a = " ".join(rng.choice(WORDS) for _ in range(min(2 * k, 200)))
        src = ["alpha", "beta", "gamma"][i % 3]
        if i % 3 == 0:
            recs.append({"id": f"id{i}", "source": src, "messages": [{"role": "user", "content": q},
                                                                    {"role": "assistant", "content": a}]})
        elif i % 3 == 1:
            recs.append({"id": f"id{i}", "source": src, "instruction": q, "input": "", "output": a})
        else:
            recs.append({"id": f"id{i}", "source": src, "prompt": q, "completion": a})
    return recs


@pytest.fixture
def small_pool(tmp_path) -> Path:
    return write_jsonl(tmp_path / "pool.jsonl", make_records(40))


def modes(n: int, dim: int, k: int, seed: int = 0):
    """(n, dim) unit vectors around k well-separated random centres, and each row's mode (n,)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, dim)).astype(np.float32) * 2
    mode = rng.integers(0, k, n)
    x = centres[mode] + 0.3 * rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True), mode


def run_cli(*args, expect: int = 0):
    """Run the CLI in-process; return (exit code, stderr text) and check the code."""
    import contextlib
    import io

    from dataselect.cli import main

    err = io.StringIO()
    code = 0
    with contextlib.redirect_stderr(err):
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code or 0
    assert code == expect, f"exit {code} (expected {expect}): {err.getvalue()[-2000:]}"
    return code, err.getvalue()
