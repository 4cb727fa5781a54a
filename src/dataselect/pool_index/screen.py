"""Float32 screening for RDS+ scores (``--scoring screened``): float32 matrix products, exact float64
scores where they matter. (``--scoring float32``, the float32 products themselves, made reproducible:
:mod:`dataselect.pool_index.tiles`.)

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

from dataselect.torchcpu import half_to_float

U = 2.0 ** -24
SCORINGS = ("float32", "screened", "exact")


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
