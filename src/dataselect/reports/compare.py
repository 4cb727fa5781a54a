"""``dataselect compare A B``: how different are two selections of the same pool?"""

from __future__ import annotations

import numpy as np

from dataselect.errors import DataselectError
from dataselect.outputs import writing
from dataselect.reports.data import open_selection, png_bytes, source_counts, text_table
from dataselect.textsafe import printable


def compare_selections(a, b, png=None, overwrite: bool = False) -> dict:
    """Overlap, Jaccard, and per-task / per-source counts of selections ``a`` and ``b``.

    Returns a dict with ``size_a``, ``size_b``, ``overlap``, ``jaccard``, ``only_a``, ``only_b``,
    ``tasks`` ({task: (count in a, count in b)}), ``sources`` ({source: (a, b)}) and ``text``.
    """
    A, B = open_selection(a), open_selection(b)
    fa, fb = A.meta["pool_store"]["pool_fingerprint"], B.meta["pool_store"]["pool_fingerprint"]
    if fa != fb:
        raise DataselectError(f"{a} and {b} were made from different pools; nothing to compare")
    ra, rb = A.column("row"), B.column("row")
    overlap = int(len(np.intersect1d(ra, rb)))
    union = len(ra) + len(rb) - overlap
    tasks = {}
    for name, op in (("a", A), ("b", B)):
        for t, n in (op.meta.get("counts_per_task") or {}).items():
            tasks.setdefault(t, [0, 0])[0 if name == "a" else 1] = n
    sa, sb = source_counts(A.pool, ra), source_counts(B.pool, rb)
    sources = {s: (sa.get(s, 0), sb.get(s, 0)) for s in sorted(set(sa) | set(sb), key=lambda s: -(sa.get(s, 0) + sb.get(s, 0)))}
    res = {"size_a": len(ra), "size_b": len(rb), "overlap": overlap, "jaccard": overlap / union if union else 1.0,
           "only_a": len(ra) - overlap, "only_b": len(rb) - overlap,
           "tasks": {t: tuple(v) for t, v in tasks.items()}, "sources": sources}
    lines = [f"A: {a} ({A.meta['method']}, {len(ra):,} rows)", f"B: {b} ({B.meta['method']}, {len(rb):,} rows)",
             f"overlap {overlap:,}  only A {res['only_a']:,}  only B {res['only_b']:,}  Jaccard {res['jaccard']:.4f}"]
    if tasks:
        lines += text_table(["task", "A", "B"], [[printable(t), x, y] for t, (x, y) in res["tasks"].items()])
    lines += text_table(["source", "A", "B"], [[printable(s) or "(none)", x, y] for s, (x, y) in sources.items()])
    res["text"] = "\n".join(lines)
    if png:
        import matplotlib

        matplotlib.use("Agg")
        matplotlib.rcParams["text.parse_math"] = False  # a '$' in a source or task name is text, not math
        import matplotlib.pyplot as plt

        names = list(sources)[:20]
        x = np.arange(len(names))
        fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(names)), 3.5))
        ax.bar(x - 0.2, [sources[s][0] for s in names], 0.4, label=f"A ({A.meta['method']})")
        ax.bar(x + 0.2, [sources[s][1] for s in names], 0.4, label=f"B ({B.meta['method']})")
        ax.set_xticks(x, [printable(s, False) or "(none)" for s in names], rotation=30, ha="right")
        ax.set_title(f"Rows per source; overlap {overlap:,}, Jaccard {res['jaccard']:.3f}")
        ax.legend()
        with writing(png, overwrite=overwrite, inputs=[a, b, A.pool.path, B.pool.path, *(q.path for q in A.queries + B.queries)],
                     what="figure") as tmp:
            tmp.write_bytes(png_bytes(fig))
    return res
