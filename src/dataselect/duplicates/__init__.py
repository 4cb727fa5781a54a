"""Deduplication before any selector: ``exact`` (identical records or embeddings) and ``semantic`` (SemDeDup).

:func:`dedup_store` writes a ``dedup`` artefact beside the store (:mod:`dataselect.duplicates.result`: for
every row, kept or the row it duplicates, and its group); ``run --dedup`` / ``select(dedup=...)``
narrow the pool to its kept rows before the selector runs. The semantic pass (clusters, similarity
blocks, a maximum spanning forest) is its own ``semdedup`` artefact, so another ``--eps`` or rule
reuses it (:mod:`dataselect.duplicates.semantic`).
"""

from __future__ import annotations

import time

import numpy as np

from dataselect.duplicates.exact import embedding_hashes, equal_components, text_hashes
from dataselect.duplicates.result import Dedup, groups_from_roots, load_dedup
from dataselect.duplicates.semantic import FLOOR_EPS, KEEPS, RULES, ranking_key, semantic_pass
from dataselect.errors import DataselectError
from dataselect.selectors.params import Param
from dataselect.store.artefacts import Artefacts

METHODS = ("exact", "semantic")
ROWS_PER_CLUSTER = 1000  # the default k: one cluster per this many rows
PARAMS = {p.name: p for p in (  # declared once: the checks, and their one-line refusals, come from Param
    Param("method", "semantic", "exact or semantic (SemDeDup).", choices=METHODS),
    Param("eps", 0.01, "pairs with cosine > 1 - eps are duplicates.", low=0, high=1, low_open=True, high_open=True),
    Param("keep", "hard", "which row of a group stays.", choices=KEEPS),
    Param("rule", "groups", "connected components, or the reference code's rule.", choices=RULES),
    Param("k", 0, f"clusters (0: one per {ROWS_PER_CLUSTER:,} rows).", low=0),
)}

__all__ = ["KEEPS", "METHODS", "PARAMS", "RULES", "Dedup", "dedup_store", "load_dedup"]


def dedup_store(store, *, method: str = "semantic", eps: float = 0.01, keep: str | None = None, rule: str = "groups",
                pool=None, eps_sweep=(), k: int = 0, seed: int = 0, niter: int = 20, resources=None) -> Dedup:
    """Find the duplicates of ``store`` (an open pool store) and keep the result as a ``dedup`` artefact.

    method : ``exact`` (identical embeddings; and identical records when ``pool`` is given) or
        ``semantic`` (SemDeDup at ``eps``: pairs with cosine > 1 - eps are duplicates).
    keep : which row of a group stays (``hard``, ``easy``: semantic only; ``random``, ``first``); default
        ``hard`` (the paper's) for semantic, ``first`` for exact.
    rule : ``groups`` (connected components, one kept each) or ``reference`` (the reference code's).
    eps_sweep : more eps values whose removed counts go into ``info["curve"]`` (no extra pass).
    Returns the :class:`Dedup`; ``info`` holds the curve, counts, example pairs and timings.
    """
    from dataselect.resources import Resources

    method, eps, rule, k = (PARAMS[name].convert(v) for name, v in
                            (("method", method), ("eps", eps), ("rule", rule), ("k", k)))
    sweep = tuple(PARAMS["eps"].convert(e) for e in eps_sweep)
    keep = PARAMS["keep"].convert(keep or ("hard" if method == "semantic" else "first"))
    if method == "exact" and keep in ("hard", "easy"):
        raise DataselectError(f"--keep {keep}: ranks rows by their distance to a cluster centroid, which only "
                              "--method semantic has; use --keep first or random with exact")
    resources = resources or Resources.make(progress=False)
    t0 = time.perf_counter()
    rows = store.rows()
    if method == "exact":
        fingerprint = None if pool is None else store.config.pool.fingerprint
        params = {"method": "exact", "keep": keep, "seed": seed, "pool": fingerprint}

        def build(folder):
            hashes = [embedding_hashes(store, resources.progress)]
            if pool is not None:
                hashes.append(text_hashes(store, pool, resources.progress))
            rank = ranking_key(keep, np.zeros(len(rows)), seed)  # first: store order, which is row order
            dup, grp = groups_from_roots(rows, equal_components(*hashes), rank)
            d = Dedup(rows, dup, grp, _info(store, rows, params, dup, grp, t0, compared="embeddings and records"
                                            if pool is not None else "embeddings"))
            return d, d.save(folder)
    else:
        k = k or max(1, store.n_rows // ROWS_PER_CLUSTER)
        floor = max(FLOOR_EPS, eps, *sweep)
        p = semantic_pass(store, k=k, keep=keep, seed=seed, niter=niter, floor_eps=floor, resources=resources)
        params = {"method": "semantic", "eps": float(eps), "keep": keep, "rule": rule, "pass": p.key}

        def build(folder):
            dup, grp = p.decide(eps, rule)
            removed = {float(eps): int((dup >= 0).sum())}
            removed.update({e: int((p.decide(e, rule)[0] >= 0).sum()) for e in set(sweep) - set(removed)})
            curve = {str(e): removed[e] for e in sorted(removed)}
            d = Dedup(rows, dup, grp, _info(store, rows, params, dup, grp, t0, curve=curve, k=k, floor_eps=floor,
                                            semdedup=p.info))
            return d, d.save(folder)

    d, art = Artefacts(store).get_or_build("dedup", params, build, lambda a: Dedup.load(a, store))
    d.key, d.path = art.key, art.path
    d.info = art.info or d.info
    return d


def _info(store, rows: np.ndarray, params: dict, dup: np.ndarray, grp: np.ndarray, t0: float, **more) -> dict:
    removed = dup >= 0
    return {**params, "store_hash": store.hash, "rows": int(len(dup)), "removed": int(removed.sum()),
            "kept": int((~removed).sum()), "groups": int(len(np.unique(grp[removed]))),
            "examples": _examples(store, rows, dup), "seconds": round(time.perf_counter() - t0, 3), **more}


def _examples(store, rows: np.ndarray, dup: np.ndarray, n: int = 5, sample: int = 2000) -> list[dict]:
    """Up to ``n`` removed rows with the lowest similarity to the row kept for them: the borderline cases."""
    gone = np.flatnonzero(dup >= 0)
    if not len(gone):
        return []
    if len(gone) > sample:
        gone = np.sort(np.random.default_rng(0).choice(gone, sample, replace=False))
    a = store.take(rows[gone])["embedding"]
    b = store.take(dup[gone])["embedding"]
    sims = (a * b).sum(1)
    pick = np.argsort(sims, kind="stable")[:n]
    return [{"row": int(rows[gone[i]]), "duplicate_of": int(dup[gone[i]]), "cosine": round(float(sims[i]), 5)}
            for i in pick]
