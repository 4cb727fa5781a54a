"""``dataselect compare A B [C ...]``: how different are selections of the same pool, and how good?

Overlap (Jaccard, each pair), rows per task and per source side by side, and the quality figures of
:mod:`dataselect.reports.quality` for each selection, measured in one pass over the pool store.
"""

from __future__ import annotations

import string
from pathlib import Path

import numpy as np

from dataselect.errors import DataselectError
from dataselect.outputs import writing
from dataselect.reports.data import open_selection, png_bytes, source_counts, text_table
from dataselect.textsafe import printable


def _labels(n: int) -> list[str]:
    return list(string.ascii_uppercase[:n]) if n <= 26 else [f"S{i + 1}" for i in range(n)]


def compare_selections(selections, png=None, overwrite: bool = False, queries=(), progress: bool = False) -> dict:
    """Compare two or more selection folders of one pool.

    Returns a dict with ``labels`` (A, B, ...), ``sizes``, ``jaccard`` (pairwise matrix, list of lists),
    ``tasks`` ({task: counts per selection}), ``sources`` ({source: counts}), ``quality`` (one
    :meth:`~dataselect.reports.quality.Quality.as_dict` per selection), ``queries`` (the query stores the
    coverage used: ``queries`` given, else every store the selections were made with) and ``text``; for
    exactly two selections also ``size_a``, ``size_b``, ``overlap``, ``only_a``, ``only_b``.
    """
    from dataselect.reports.quality import measure, quality_rows
    from dataselect.store import open_store

    selections = list(selections)
    if len(selections) < 2:
        raise DataselectError("compare needs at least two selection folders")
    opened = [open_selection(s) for s in selections]
    prints = {o.meta["pool_store"]["pool_fingerprint"] for o in opened}
    if len(prints) > 1:
        raise DataselectError(f"{', '.join(map(str, selections))} were made from different pools; nothing to compare")
    labels = _labels(len(opened))
    rows = [o.column("row") for o in opened]
    n = len(rows)
    jac = [[1.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            inter = len(np.intersect1d(rows[i], rows[j]))
            union = len(rows[i]) + len(rows[j]) - inter
            jac[i][j] = jac[j][i] = inter / union if union else 1.0
    tasks: dict[str, list[int]] = {}
    for i, o in enumerate(opened):
        for t, c in (o.meta.get("counts_per_task") or {}).items():
            tasks.setdefault(t, [0] * n)[i] = c
    counts = [source_counts(o.pool, r) for o, r in zip(opened, rows, strict=True)]
    names = sorted({s for c in counts for s in c}, key=lambda s: -sum(c.get(s, 0) for c in counts))
    sources = {s: tuple(c.get(s, 0) for c in counts) for s in names}
    # coverage: the query stores given, else every one the selections were made with (each once)
    if queries:
        qstores = [open_store(q) for q in queries]
    else:
        seen, qstores = set(), []
        for o in opened:
            for q in o.queries:
                if Path(q.path).resolve() not in seen:
                    seen.add(Path(q.path).resolve())
                    qstores.append(q)
    pool = opened[0].pool
    same_pool = all(o.pool.hash == pool.hash for o in opened)
    if same_pool:
        quality = measure(pool, rows, qstores, progress=progress)
    else:  # made from different dedup views of one pool: the whole pool is the baseline
        pool = pool.base
        quality = measure(pool, rows, qstores, progress=progress)
    res = {"labels": labels, "sizes": [len(r) for r in rows], "jaccard": jac,
           "tasks": {t: tuple(v) for t, v in tasks.items()}, "sources": sources,
           "quality": [q.as_dict() for q in quality[:-1]],
           "pool_quality": quality[-1].as_dict(), "queries": [str(q.path) for q in qstores]}
    lines = [f"{lab}: {s} ({o.meta['method']}, {len(r):,} rows)"
             for lab, s, o, r in zip(labels, selections, opened, rows, strict=True)]
    if n == 2:
        overlap = len(np.intersect1d(rows[0], rows[1]))
        res.update(size_a=len(rows[0]), size_b=len(rows[1]), overlap=overlap, only_a=len(rows[0]) - overlap,
                   only_b=len(rows[1]) - overlap)
        lines.append(f"overlap {overlap:,}  only A {res['only_a']:,}  only B {res['only_b']:,}  "
                     f"Jaccard {jac[0][1]:.4f}")
    else:
        lines.append("Jaccard overlap of each pair:")
        lines += text_table(["", *labels], [[lab, *(f"{v:.3f}" for v in jac[i])] for i, lab in enumerate(labels)])
    if tasks:
        lines += text_table(["task", *labels], [[printable(t), *v] for t, v in res["tasks"].items()])
    lines += text_table(["source", *labels], [[printable(s) or "(none)", *v] for s, v in sources.items()])
    lines.append("quality (measured on the store's embeddings" +
                 (f"; coverage of the queries in {', '.join(str(q.path) for q in qstores)})" if qstores else
                  "; no query store, so no coverage)"))
    lines += text_table(["figure", *labels, "pool"], quality_rows(quality))
    lines.append("  (each figure defined with its formula in docs/quality.md and in every report's glossary)")
    res["text"] = "\n".join(lines)
    if png:
        _figure(png, labels, opened, sources, jac, overwrite, selections)
    return res


def _figure(png, labels, opened, sources, jac, overwrite, selections) -> None:
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["text.parse_math"] = False  # a '$' in a source or task name is text, not math
    import matplotlib.pyplot as plt

    names = list(sources)[:20]
    x = np.arange(len(names))
    width = 0.8 / len(labels)
    fig, ax = plt.subplots(figsize=(max(6, 0.25 * len(names) * len(labels) + 2), 3.5))
    for i, (lab, o) in enumerate(zip(labels, opened, strict=True)):
        ax.bar(x - 0.4 + width * (i + 0.5), [sources[s][i] for s in names], width, label=f"{lab} ({o.meta['method']})")
    ax.set_xticks(x, [printable(s, False) or "(none)" for s in names], rotation=30, ha="right")
    title = f"Rows per source; Jaccard {jac[0][1]:.3f}" if len(labels) == 2 else "Rows per source"
    ax.set_title(title)
    ax.legend()
    inputs = [*selections, *(o.pool.path for o in opened), *(q.path for o in opened for q in o.queries)]
    with writing(png, overwrite=overwrite, inputs=inputs, what="figure") as tmp:
        tmp.write_bytes(png_bytes(fig))
