"""torch on the CPU beside BLAS: the fast float16 cast, and a guard that keeps torch's idle threads off
the cores a matrix multiply needs."""

from __future__ import annotations

import contextlib
import warnings

import numpy as np
import torch


def half_to_float(src: np.ndarray, dst: np.ndarray) -> None:
    """Copy a float16 array into a float32/64 one: torch's F16C-vectorised cast, ~15x numpy's on AVX2.

    Call it under :func:`single_torch_thread` when BLAS runs beside it: idle OpenMP workers of torch
    spin and steal the cores the next matrix multiply needs.
    """
    if src.dtype == np.float16:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # read-only mapped source: torch only reads it
            torch.from_numpy(dst).copy_(torch.from_numpy(np.ascontiguousarray(src)))
    else:
        np.copyto(dst, src)


@contextlib.contextmanager
def torch_threads(n: int):
    """torch's intra-op thread count set to ``n`` inside the block, restored after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def single_torch_thread():
    return torch_threads(1)
