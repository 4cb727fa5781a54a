"""Float32 RDS+ scores: reproducible float32 products (``float32``), and float32 screening with exact
float64 scores where they matter (``screened``).

``float32`` (:class:`Float32Tiles`): every block is multiplied in tiles of ``TILE_ROWS`` rows, always
full (a short one is padded with zeros), by torch's matrix multiply. A tile's shape never changes, so
the multiply runs the same instructions for every tile, and with MKL a row's products do not depend
on where in the tile it sits, nor on the thread count: each value depends only on the row and the
query. Identical rows tie, and a selection does not change with ``--block-rows`` or threads. That
property belongs to the BLAS, not to float32, so :func:`float32_reproducible` checks it on the
running machine (rows shifted within tiles, one thread against several) before a pass uses it; where
it fails the selector screens instead (numpy's OpenBLAS fails it: its kernels treat a row
differently by its position modulo the kernel's width). Scores are float32 dot products, within
the bound below of the exact ones, not the exact ones: near-ties may order differently from
``exact``.

``screened``:

A float32 dot product of a stored row x (float16 values, exact in float32) with a query q differs
from the exact one by at most

    delta(x) = (gamma_d (1 + u) + u + 2**-22) * ||x|| * max_q ||q||,    u = 2**-24, gamma_d = d u / (1 - d u)

for *any* order of summation (Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed.,
eq. 3.5: ``|fl(x.y) - x.y| <= gamma_d |x|.|y|``, with ``|x|.|y| <= ||x|| ||y||``). The ``u`` term is
the query's rounding to float32; ``2**-22`` covers rounding both the screened and the exact score to
float32 and the float64 mean over a task's queries. ``||x||`` is computed in float32 too and enlarged
by ``1 / (1 - 2 gamma_d)``, so the bound holds with every rounding counted, whatever BLAS does.

A score that can still reach the selection given its bound is recomputed exactly (the exact kernels
of :mod:`dataselect.pool_index.similarity`), so the selection and every score in it are those of the
all-float64 pass, bit for bit; the float32 values only decide which rows cannot matter. On 2 cores
a float32 block costs 0.37x a float64 one (GEMM and conversion), and the norms 2% of it.
"""

from __future__ import annotations

import numpy as np
import torch

from dataselect.torchcpu import half_to_float, torch_threads

U = 2.0 ** -24
SCORINGS = ("float32", "screened", "exact")
TILE_ROWS = 2048  # rows per float32 multiply: a multiple of every kernel width, 0.7 ms of 2 cores at 4096 x 700


def gamma(n: int) -> float:
    return n * U / (1.0 - n * U)


class Float32Blocks:
    """(b, dim) float16 rows -> (float32 similarities (b, q), bound (b,) float64, the rows as float32).

    The returned arrays are views of buffers reused by the next call: copy what you keep.
    """

    def __init__(self, dim: int, Q: np.ndarray, block_rows: int):
        self.Q32 = np.ascontiguousarray(np.asarray(Q, dtype=np.float32))
        Q64 = np.asarray(Q, dtype=np.float64)
        qmax = float(np.sqrt((Q64 * Q64).sum(axis=1)).max()) if len(Q64) else 0.0
        g = gamma(dim)
        self.norm_fix = 1.0 / (1.0 - 2 * g)  # the float32 norm is within a relative d u of the exact one
        self.scale = (g * (1.0 + U) + U + 2.0 ** -22) * qmax * (1.0 + 2.0 ** -20)
        self.x = np.empty((block_rows, dim), np.float32)
        self.sims = np.empty((block_rows, len(Q64)), np.float32)

    def __call__(self, emb: np.ndarray):
        b = len(emb)
        x, sims = self.x[:b], self.sims[:b]
        half_to_float(emb, x)
        np.matmul(x, self.Q32.T, out=sims)
        norm = torch.linalg.vector_norm(torch.from_numpy(x), dim=1).numpy().astype(np.float64) * self.norm_fix
        return sims, self.scale * norm + 2.0 ** -60, x


def pair_sims(x: np.ndarray, Q32: np.ndarray, Q64: np.ndarray, i: np.ndarray, q: np.ndarray,
              chunk: int = 64) -> np.ndarray:
    """Exact float64 similarities of the pairs (row ``i`` of ``x``, query ``q``), (p,) float64.

    ``x`` and ``Q32`` hold float16 values as float32, ``Q64`` the same queries as float64. Rows with
    most of their pairs asked for are multiplied with every query in float64 (a GEMM); the others pair
    by pair: a product of two float16 values is exact in float32 (22 of its 24 bits), and the sum is
    taken in float64. Both are exact (module docstring of :mod:`dataselect.pool_index.similarity`), so
    which one a pair takes never shows.
    """
    out = np.empty(len(i), np.float64)
    if len(i) == 0:
        return out
    rows, inv = np.unique(i, return_inverse=True)
    if 4 * len(i) >= len(rows) * len(Q64):
        return (x[rows].astype(np.float64) @ Q64.T)[inv, q]
    for lo in range(0, len(i), chunk):  # chunks small enough that the products stay in cache
        part = slice(lo, lo + chunk)
        out[part] = (x[i[part]] * Q32[q[part]]).sum(axis=1, dtype=np.float64)
    return out


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
    """(b, dim) float16 rows -> (b, q) float32 similarities, each one a function of its row and query
    alone (module docstring): ``TILE_ROWS``-row tiles through :func:`float32_kernel` on ``threads``
    threads (default: torch's count when built), whatever ``b``.

    The returned array is a view of a buffer of ``block_rows`` rows reused by the next call: copy what you keep.
    """

    def __init__(self, dim: int, Q: np.ndarray, block_rows: int, threads: int | None = None):
        self.Q32 = torch.from_numpy(np.ascontiguousarray(np.asarray(Q, dtype=np.float32)))
        self.kernel, self.fn = float32_kernel()
        self.threads = threads or torch.get_num_threads()
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
        bound = Float32Blocks(dim, Q, 256)(x[head])[1]
        _CHECKED[key] = bool(same and np.all(np.abs(ref[head] - exact) <= bound[:, None]))
    return _CHECKED[key]
