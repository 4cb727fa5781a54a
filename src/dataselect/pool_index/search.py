"""Nearest centroid of many rows: the kernel every k-means step spends its time in.

Three ways behind one class, all giving (label, squared L2 distance) per row:

* ``flat``  -- FAISS ``IndexFlatL2`` on the CPU: exact, BLAS distances with a fused argmin.
* ``hnsw``  -- FAISS ``IndexHNSWFlat`` built over the centroids: approximate, for large k on the CPU
  (tens of thousands of centroids); the returned distance is the exact one to the centroid found.
* ``ivf``   -- FAISS ``IndexIVFFlat`` over the centroids: the centroids grouped into ``nlist =
  4 sqrt(k)`` cells by a small k-means of their own, a row compared with the centroids of its
  ``nprobe`` nearest cells only. Approximate, for k of 10^4-10^6; cheap to rebuild for each Lloyd
  update (the cell k-means runs on the k centroids, not the pool), and the distance returned is the
  exact one to the centroid found. A step uses it only where it is cheaper than exact search
  (:func:`search_for`); elsewhere ``--assign ivf`` searches exactly.
* ``torch`` -- chunked matrix multiplies on the tensor's device (CPU or CUDA):
  ``|x - c|^2 = |x|^2 - 2 x.c + |c|^2``. On CUDA the inputs stay float16 and products accumulate in
  float32 (``out_dtype``), on the CPU everything is float32.

Rows are torch tensors (CPU tensors share memory with numpy, so FAISS reads them without a copy).
"""

from __future__ import annotations

import numpy as np
import torch

SEARCH_KINDS = ("flat", "hnsw", "ivf", "torch")
HNSW_M = 32
IVF_NPROBE = 16
PROBE_ROWS = 4096  # rows an IVF search is tried on before a step takes it (centroid_search)


# What an IVF search costs against exact search, in exact (BLAS) distance products, from
# scripts/bench_assign.py (docs/benchmarks.md, k = 10^4 and 10^5 at 256 dimensions, the same run):
# one IVF distance costs 7.6 exact ones (6.2e9 against 4.4e10-5.3e10 a second), and building the index
# is a 10-iteration k-means of the k centroids into nlist cells plus adding them, 11 k nlist products.
IVF_PRODUCT_COST = 7.6
IVF_BUILD_PASSES = 11


def ivf_nlist(k: int) -> int:
    """Cells of the IVF index over ``k`` centroids: 4 sqrt(k), at least 39 centroids per cell (FAISS)."""
    return max(1, min(int(4 * np.sqrt(k)), k // 39))


def ivf_pays(rows: int, k: int, nprobe: int = IVF_NPROBE, scanned: float | None = None) -> bool:
    """Whether building an IVF index over ``k`` centroids and searching ``rows`` rows in it costs less
    than searching them exactly (the cost model above). ``scanned``: the centroids one row is compared
    with, as :func:`ivf_scanned` measured it (default: ``nprobe k / nlist``, the cells evenly filled)."""
    nlist = ivf_nlist(k)
    scanned = min(nprobe, nlist) * k / nlist if scanned is None else scanned
    ivf = IVF_PRODUCT_COST * rows * (nlist + scanned) + IVF_BUILD_PASSES * k * nlist
    return ivf < rows * k


def search_for(kind: str, rows: int, k: int) -> str:
    """The search a step of ``rows`` rows against ``k`` centroids uses by its size alone: ``ivf`` only
    where the cost model with evenly filled cells says it is cheaper than exact search, else exact
    ``flat``; other kinds unchanged. (:func:`centroid_search` then measures the scan before taking IVF.)"""
    return "flat" if kind == "ivf" and not ivf_pays(rows, k) else kind


def ivf_scanned(index, probe: np.ndarray) -> float:
    """Mean number of centroids an IVF ``index`` compares a row with, measured on the ``probe`` rows (m, d)
    float32: the sizes of each row's ``nprobe`` nearest cells, summed. Where rows crowd into the dense
    cells (a skewed pool: many centroids in few cells), this is many times ``nprobe k / nlist``."""
    sizes = np.array([index.invlists.list_size(i) for i in range(index.nlist)], dtype=np.int64)
    _, cells = index.quantizer.search(np.ascontiguousarray(probe, dtype=np.float32), index.nprobe)
    return float(sizes[np.maximum(cells, 0)].sum(1).mean()) if len(probe) else 0.0


def probe_rows(x, rows: int = PROBE_ROWS):
    """Up to ``rows`` rows of ``x`` evenly spaced through it (a sample in store order stays spread over
    the pool), as float32: what :func:`centroid_search` measures IVF's cost on."""
    step = max(1, -(-len(x) // rows))
    return x[::step].float() if torch.is_tensor(x) else torch.from_numpy(np.asarray(x[::step], dtype=np.float32))


def _ivf_if_it_pays(centroids: torch.Tensor, rows: int, probe, **kwargs) -> CentroidSearch | None:
    search = CentroidSearch(centroids, "ivf", **kwargs)
    if probe is not None:
        search.scanned = ivf_scanned(search.index, probe.detach().cpu().numpy())
        if not ivf_pays(rows, len(centroids), search.index.nprobe, search.scanned):
            return None
    return search


def search_kind(kind: str, centroids: torch.Tensor, rows: int, probe: torch.Tensor | None = None) -> str:
    """The search one step of ``rows`` rows against ``centroids`` uses. ``kind`` ``ivf`` (``--assign
    ivf``) is taken only where it costs less than exact search, in two tests: the cost model with
    evenly filled cells (:func:`search_for`, from the step's size alone), then -- the index built --
    with the scan measured on ``probe``, rows like the step's (:func:`ivf_scanned`); else exact
    ``flat``. Other kinds as asked. Decided by the driver, so every worker of a step searches alike."""
    kind = search_for(kind, rows, len(centroids))
    if kind != "ivf":
        return kind
    return "ivf" if _ivf_if_it_pays(centroids, rows, probe) is not None else "flat"


def centroid_search(centroids: torch.Tensor, kind: str, rows: int, probe: torch.Tensor | None = None,
                    **kwargs) -> CentroidSearch:
    """The :class:`CentroidSearch` of :func:`search_kind` (an IVF index built to decide is the one used)."""
    kind = search_for(kind, rows, len(centroids))
    if kind == "ivf":
        return _ivf_if_it_pays(centroids, rows, probe, **kwargs) or CentroidSearch(centroids, "flat", **kwargs)
    return CentroidSearch(centroids, kind, **kwargs)


def searches_used(kinds: list[str]) -> str:
    """Several steps' searches in a word: the one kind they all used, or ``ivf for 3 of 20 updates, else flat``."""
    if len(set(kinds)) <= 1:
        return kinds[0] if kinds else ""
    ivf = sum(k == "ivf" for k in kinds)
    other = sorted(set(kinds) - {"ivf"})
    return f"ivf for {ivf} of {len(kinds)} updates, else {', '.join(other)}"


def _chunk_rows(k: int, chunk_bytes: int) -> int:
    return int(max(256, min(1 << 16, chunk_bytes // (4 * max(k, 1)))))


class CentroidSearch:
    """Nearest of ``centroids`` (k, d) for rows of ``d`` dims.

    Parameters
    ----------
    centroids : (k, d) float32 tensor, on the device the rows will be on.
    kind : "flat", "hnsw", "ivf" or "torch" (see module docstring).
    chunk_bytes : the torch kind's distance block (rows x k float32) stays under this.
    ef_search : HNSW breadth of search (higher: more exact, slower).
    nprobe : IVF cells searched per row (higher: more exact, slower).
    """

    def __init__(self, centroids: torch.Tensor, kind: str = "flat", chunk_bytes: int = 64 << 20,
                 ef_search: int = 32, nprobe: int = IVF_NPROBE):
        if kind not in SEARCH_KINDS:
            raise ValueError(f"unknown centroid search {kind!r}")
        self.kind = kind
        self.scanned: float | None = None  # ivf: centroids compared per row, where measured (centroid_search)
        self.k, self.d = centroids.shape
        if kind == "torch":
            self.centroids = centroids.float()
            self.cc = (self.centroids * self.centroids).sum(1)
            self.half = self.centroids.half() if centroids.device.type == "cuda" else None
            self.rows_per_chunk = _chunk_rows(self.k, chunk_bytes)
            return
        import faiss

        c = np.ascontiguousarray(centroids.detach().cpu().numpy(), dtype=np.float32)
        if kind == "flat":
            self.index = faiss.IndexFlatL2(self.d)
        elif kind == "ivf":
            nlist = ivf_nlist(self.k)
            self.quantizer = faiss.IndexFlatL2(self.d)
            self.index = faiss.IndexIVFFlat(self.quantizer, self.d, nlist)
            self.index.cp.min_points_per_centroid = 1
            self.index.train(c)
            self.index.nprobe = min(nprobe, nlist)
        else:
            self.index = faiss.IndexHNSWFlat(self.d, HNSW_M)
            self.index.hnsw.efConstruction = 80
            self.index.hnsw.efSearch = ef_search
        self.index.add(c)

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(m, d) rows -> (labels (m,) int64, squared distances (m,) float32), on the rows' device."""
        if self.kind != "torch":
            d2, lab = self.index.search(np.ascontiguousarray(x.numpy(), dtype=np.float32), 1)
            return torch.from_numpy(lab[:, 0]), torch.from_numpy(np.maximum(d2[:, 0], 0))
        m = len(x)
        labels = torch.empty(m, dtype=torch.int64, device=x.device)
        dist2 = torch.empty(m, dtype=torch.float32, device=x.device)
        for lo in range(0, m, self.rows_per_chunk):
            xb = x[lo:lo + self.rows_per_chunk]
            if self.half is not None and xb.dtype == torch.float16:
                dots = torch.mm(xb, self.half.T, out_dtype=torch.float32)
                xx = torch.linalg.vector_norm(xb, dim=1, dtype=torch.float32).square_()
            else:
                xb = xb.float()
                dots = xb @ self.centroids.T
                xx = (xb * xb).sum(1)
            val, idx = dots.mul_(-2).add_(self.cc).min(1)
            labels[lo:lo + len(xb)] = idx
            dist2[lo:lo + len(xb)] = (val + xx).clamp_min_(0)
        return labels, dist2
