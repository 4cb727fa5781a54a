"""Reproducible float32 products of float16 rows: ``--scoring float32`` (rds+) and the ``--reduce`` projection.

Rows are multiplied in tiles of ``TILE_ROWS`` rows, always whole (a short one is padded with zeros),
by oneDNN's float32 linear (torch's ``mm``, MKL, where a torch lacks it). A tile's shape never
changes, so the multiply runs the same instructions for every tile, and these kernels treat every
row of a tile alike and do not split a row's sum across threads: each value depends only on the row
and the matrix row it meets, not on where the row sits nor on the thread count. Identical rows get
identical products, and a result does not change with block sizes or threads. That property
belongs to the BLAS, not to float32, so :func:`float32_reproducible` checks it on the running
machine, at the shape, before a pass relies on it (numpy's OpenBLAS fails it: its kernels treat a
row differently by its position modulo the kernel's width; MKL fails it at a few odd shapes).
Products are float32 dot products, within float32's error bound of the exact ones
(:mod:`dataselect.pool_index.screen`), not the exact ones.

On this 2-core AVX-512 CPU, oneDNN runs at 1.87x numpy's OpenBLAS (which uses its AVX2 kernels
here), MKL's ``mm`` at 0.85x (docs/benchmarks.md).
"""

from __future__ import annotations

import numpy as np
import torch

from dataselect.pool_index.screen import Float32Blocks
from dataselect.torchcpu import half_to_float, torch_threads

TILE_ROWS = 2048  # rows per float32 multiply: a multiple of every kernel width, 0.7 ms of 2 cores at 4096 x 700


def aligned(shape: tuple[int, int], dtype=np.float32) -> np.ndarray:
    """A zeroed C-contiguous array whose first element sits on a 64-byte boundary."""
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    raw = np.zeros(size + 64, np.uint8)
    at = -raw.ctypes.data % 64
    return raw[at:at + size].view(dtype).reshape(shape)


def _onednn_linear(x: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, W, None, "none", [], "")


def _torch_mm(x: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    return torch.mm(x, W.T)


def float32_kernel():
    """(name, fn) of the float32 multiply ``fn(x (r, d), W (q, d)) -> (r, q)``: oneDNN's linear where
    this torch has it and its float32 matmuls are left at full precision (1.9x numpy's OpenBLAS on
    these cores, AVX-512), else torch's own ``mm`` (MKL; 0.85x)."""
    mkldnn = torch.backends.mkldnn
    precision = getattr(getattr(mkldnn, "matmul", None), "fp32_precision", "none")
    if mkldnn.is_available() and precision in ("none", "ieee") and hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        try:
            _onednn_linear(torch.zeros(2, 2), torch.zeros(1, 2))
            return "onednn", _onednn_linear
        except RuntimeError:
            pass
    return "mm", _torch_mm


class Float32Tiles:
    """(b, dim) float16 (or float32) rows ``x`` -> (b, q) float32 ``(x - shift) @ Q.T``, each value a
    function of its row alone (module docstring): ``TILE_ROWS``-row tiles through
    :func:`float32_kernel` on ``threads`` threads (default: torch's count when built), whatever ``b``.

    Parameters
    ----------
    dim : the rows' dimension.
    Q : (q, dim) the matrix the rows meet (queries; a PCA's components).
    block_rows : the most rows a call usually gets (its output buffer; a larger call grows it).
    shift : (dim,) subtracted from every row, in float32, before the multiply (a PCA's mean); none by default.

    The returned array is a view of a buffer reused by the next call: copy what you keep.
    """

    def __init__(self, dim: int, Q: np.ndarray, block_rows: int, threads: int | None = None,
                 shift: np.ndarray | None = None):
        self.Q32 = torch.from_numpy(np.ascontiguousarray(np.asarray(Q, dtype=np.float32)))
        self.kernel, self.fn = float32_kernel()
        self.threads = threads or torch.get_num_threads()
        self.shift = None if shift is None else np.asarray(shift, dtype=np.float32)
        self.x = aligned((TILE_ROWS, dim))
        self.sims = np.empty((max(block_rows, 1), len(Q)), np.float32)

    def __call__(self, emb: np.ndarray) -> np.ndarray:
        b = len(emb)
        if b > len(self.sims):
            self.sims = np.empty((b, self.sims.shape[1]), np.float32)
        x, out = torch.from_numpy(self.x), self.sims[:b]
        with torch_threads(self.threads):
            for lo in range(0, b, TILE_ROWS):
                n = min(TILE_ROWS, b - lo)
                half_to_float(emb[lo:lo + n], self.x[:n])
                if self.shift is not None:
                    self.x[:n] -= self.shift
                if n < TILE_ROWS:
                    self.x[n:] = 0
                out[lo:lo + n] = self.fn(x, self.Q32)[:n].numpy()
        return out


_CHECKED: dict[tuple[int, int, int], bool] = {}


def float32_reproducible(dim: int, n_queries: int, threads: int | None = None) -> bool:
    """Whether :class:`Float32Tiles` gives every row the same products wherever it sits in a tile and
    whatever the thread count (1 or ``threads``), on this machine, at this shape -- rows shifted by 1,
    7 and 61 positions, and a second tile's rows, must match bit for bit -- and products within
    float32's error bound of the exact ones (a multiply that rounds through bfloat16 or TF32 fails).
    Once per shape and process."""
    threads = threads or torch.get_num_threads()
    key = (dim, n_queries, threads)
    if key not in _CHECKED:
        rng = np.random.default_rng(0)
        x = rng.standard_normal((TILE_ROWS + 61, dim), dtype=np.float32)
        x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)
        Q = rng.standard_normal((max(n_queries, 1), dim), dtype=np.float32)
        Q = (Q / np.linalg.norm(Q, axis=1, keepdims=True)).astype(np.float16)
        ref = Float32Tiles(dim, Q, len(x), threads)(x).copy()
        same = np.array_equal(Float32Tiles(dim, Q, len(x), 1)(x), ref)
        for shift in (1, 7, 61):
            same = same and np.array_equal(Float32Tiles(dim, Q, len(x), threads)(np.roll(x, shift, 0)),
                                           np.roll(ref, shift, 0))
        head = slice(0, 256)
        exact = x[head].astype(np.float64) @ Q.astype(np.float64).T
        bound = Float32Blocks(dim, Q, 256)(x[head])[1]  # float32's proven error bound
        _CHECKED[key] = bool(same and np.all(np.abs(ref[head] - exact) <= bound[:, None]))
    return _CHECKED[key]
