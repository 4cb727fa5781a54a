"""``dataselect report``: one self-contained HTML page (figures embedded) about a selection.

Sections: rows per task; per source against the pool's mix; score distributions of selected vs a
pool sample; a 2-D PCA projection of a pool sample with the selected rows; for clustering selectors,
cluster-size balance before and after; quality figures (coverage, diversity, lengths, losses, near
duplicates: :mod:`dataselect.reports.quality`) beside the pool's, with their glossary; the top
examples per task with their nearest query; the run's parameters and timings. Plots use samples
(20k rows), so selections of millions stay cheap.
"""

from __future__ import annotations

import html
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from dataselect.outputs import claim, writing
from dataselect.reports.data import (
    Opened,
    data_uri,
    open_selection,
    png_bytes,
    sample_positions,
    source_counts,
)
from dataselect.store.queries import query_matrix, query_texts
from dataselect.textsafe import printable

matplotlib.rcParams["text.parse_math"] = False  # a '$' in a source or task name is text, not math

SECTIONS = ("tasks", "sources", "scores", "projection", "clusters", "quality", "examples", "run")


def fig_tasks(op: Opened):
    counts = op.meta.get("counts_per_task") or {"(no task)": op.table.num_rows}
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.bar([printable(t, False) for t in counts], list(counts.values()), color="#4c72b0")
    ax.set_ylabel("rows picked")
    ax.set_title("Rows picked per task")
    return fig


def fig_sources(op: Opened):
    pool = source_counts(op.pool)
    picked = op.meta.get("counts_per_source") or {}
    names = sorted(set(pool) | set(picked), key=lambda s: -pool.get(s, 0))[:20]
    n_pool, n_sel = max(sum(pool.values()), 1), max(sum(picked.values()), 1)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(6, len(names) * 0.7), 3.5))
    ax.bar(x - 0.2, [pool.get(s, 0) / n_pool for s in names], 0.4, label="pool", color="#bbbbbb")
    ax.bar(x + 0.2, [picked.get(s, 0) / n_sel for s in names], 0.4, label="selected", color="#dd8452")
    ax.set_xticks(x, [printable(s, False) or "(none)" for s in names], rotation=30, ha="right")
    ax.set_ylabel("share of rows")
    ax.set_title("Source mix: pool vs selected")
    ax.legend()
    return fig


def pool_score_sample(op: Opened, positions: np.ndarray) -> np.ndarray | None:
    """Scores of sampled pool rows on the method's own scale, where the method has one."""
    from dataselect.selectors import build_selector

    return build_selector(op.meta["method"], op.meta["params"]).pool_scores(op.pool, positions, op.queries)


def fig_scores(op: Opened, positions: np.ndarray):
    sel = op.column("score")
    sel = sel[np.isfinite(sel)]
    pool = pool_score_sample(op, positions)
    fig, ax = plt.subplots(figsize=(6, 3))
    bins = np.histogram_bin_edges(np.concatenate([sel, pool]) if pool is not None else sel, bins=40)
    if pool is not None:
        ax.hist(pool, bins=bins, alpha=0.5, label=f"pool sample ({len(pool):,} rows)", color="#bbbbbb")
    ax.hist(sel, bins=bins, alpha=0.6, label=f"selected ({len(sel):,} rows)", color="#dd8452")
    ax.set_xlabel(f"score ({op.meta['method']})")
    ax.set_ylabel("rows (count)")
    ax.set_title("Score distribution")
    ax.legend()
    return fig


def fig_projection(op: Opened, positions: np.ndarray):
    from sklearn.decomposition import PCA

    rows = op.pool.rows()
    pool_emb = op.pool.take(rows[positions])["embedding"]
    sel_rows = op.column("row")
    sel_rows = sel_rows[sample_positions(len(sel_rows), 5000, seed=1)]
    pca = PCA(n_components=2, random_state=0).fit(pool_emb)
    a, b = pca.transform(pool_emb), pca.transform(op.pool.take(sel_rows)["embedding"])
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.scatter(a[:, 0], a[:, 1], s=3, c="#bbbbbb", label="pool sample", alpha=0.6)
    ax.scatter(b[:, 0], b[:, 1], s=5, c="#dd8452", label="selected", alpha=0.8)
    ax.set_title("PCA of embeddings (samples)")
    ax.legend(markerscale=3)
    return fig


def cluster_balance(op: Opened) -> tuple[np.ndarray, np.ndarray] | None:
    """(pool rows per cluster, selected rows per cluster) for clustering selectors, else None; read from
    the artefact the selection recorded, never rebuilt (gone or stale: said in one line, no figure)."""
    from dataselect.errors import DataselectError
    from dataselect.progress import note
    from dataselect.selectors import build_selector

    try:
        return build_selector(op.meta["method"], op.meta["params"]).cluster_balance(op.pool, op.table, op.meta)
    except DataselectError as exc:
        note(f"report: no cluster balance: {exc}")
        return None


def fig_clusters(pool_sizes: np.ndarray, picked: np.ndarray):
    order = np.argsort(-pool_sizes, kind="stable")
    fig, ax = plt.subplots(figsize=(6.5, 3))
    ax.plot(pool_sizes[order] / pool_sizes.sum(), label="pool", color="#888888")
    ax.plot(picked[order] / max(picked.sum(), 1), label="selected", color="#dd8452")
    ax.set_xlabel("cluster (largest in the pool first)")
    ax.set_ylabel("share of rows")
    ax.set_title("Cluster-size balance before and after")
    ax.legend()
    return fig


def top_examples(op: Opened, per_task: int = 5, pool=None) -> list[dict]:
    """The best-ranked rows of each task, with their nearest query (and prompt text with ``pool``)."""
    tasks = op.column("task")
    rows, scores = op.column("row"), op.column("score")
    picks = []
    for task in dict.fromkeys(t for t in tasks if t is not None) or [None]:
        idx = np.nonzero(tasks == task)[0][:per_task] if task is not None else np.arange(min(per_task, len(rows)))
        picks += [(int(i), task) for i in idx]
    nearest = {}
    if op.queries and picks:
        Q, starts, names = query_matrix(op.pool, op.queries)
        texts, qtask = query_texts(op.queries, names)
        emb = op.pool.take(rows[[i for i, _ in picks]])["embedding"]
        sims = emb @ Q.T
        for j, (i, task) in enumerate(picks):
            mask = qtask == task if task is not None else np.ones(len(qtask), bool)
            best = np.nonzero(mask)[0][np.argmax(sims[j, mask])]
            nearest[i] = (float(sims[j, best]), str(texts[best])[:120])
    text = {}
    if pool is not None:
        from dataselect.nearest import first_lines

        text = first_lines(pool, op.pool, rows[[i for i, _ in picks]])
    ids = op.column("id")
    return [{"task": task or "", "rank": i, "row": int(rows[i]), "id": ids[i], "score": float(scores[i]),
             "text": text.get(int(rows[i]), ""), "nearest_query": nearest.get(i, (None, ""))[1],
             "query_sim": nearest.get(i, (None, ""))[0]} for i, task in picks]


def _table(headers: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
h1{font-size:1.5em}h2{font-size:1.15em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}td,th{border:1px solid #ddd;padding:.25em .5em;
text-align:left;vertical-align:top}th{background:#f4f4f4}img{max-width:100%}.figs{display:flex;flex-wrap:wrap;gap:1em}
.note{color:#666;font-size:.85em}"""


def dedup_section(op: Opened) -> str:
    """The dedup result the selection picked from: what it removed at each eps and its borderline pairs."""
    d = op.dedup
    info, rows = d.info, max(d.info.get("rows", 0), 1)
    what = (f"semantic (SemDeDup), eps {info.get('eps')}, rule {info.get('rule')}, keep {info.get('keep')}"
            if info.get("method") == "semantic" else f"exact ({info.get('compared')}), keep {info.get('keep')}")
    html_parts = [f"<h2 id='dedup'>Deduplication</h2><p class='note'>The method picked from the {info['kept']:,} "
                  f"rows kept of {info['rows']:,}: {html.escape(what)}; {d.removed:,} removed in "
                  f"{info['groups']:,} groups ({html.escape(str(d.path))}).</p>"]
    curve = info.get("curve") or {}
    if curve:
        html_parts.append(_table(["eps", "rows removed", "share of the pool"],
                                 [[e, f"{n:,}", f"{n / rows:.2%}"] for e, n in curve.items()]))
    examples = info.get("examples") or []
    if examples:
        ids = op.pool.base.take(np.array([e["row"] for e in examples] + [e["duplicate_of"] for e in examples]),
                                ("id",))["id"]
        html_parts.append("<p class='note'>Removed rows least similar to the row kept for them (the borderline "
                          "cases at this eps):</p>")
        html_parts.append(_table(["removed row", "id", "kept row", "id", "cosine"],
                                 [[e["row"], ids[i], e["duplicate_of"], ids[len(examples) + i], f"{e['cosine']:.4f}"]
                                  for i, e in enumerate(examples)]))
    return "".join(html_parts)


def quality_section(op: Opened, queries=(), progress: bool = False) -> str:
    """The selection's quality figures beside the whole pool's, and the glossary defining each."""
    from dataselect.reports.quality import GLOSSARY, measure, quality_rows
    from dataselect.store import open_store

    qstores = [open_store(q) for q in queries] if queries else op.queries
    selected, whole = measure(op.pool, [op.column("row")], qstores, progress=progress)
    note = (f"Coverage of the queries in {', '.join(str(q.path) for q in qstores)}." if qstores else
            "No coverage: the selection used no query store; give one with --queries.")
    glossary = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in GLOSSARY.items())
    return (f"<h2 id='quality'>Quality</h2><p class='note'>Measured on the store's embeddings, without fine-tuning. "
            f"{html.escape(note)}</p>" + _table(["figure", "selected", "pool"], quality_rows([selected, whole])) +
            f"<details><summary>Glossary</summary><dl class='note'>{glossary}</dl></details>")


def build_report(selection, out=None, png_dir=None, pool=None, overwrite: bool = False, queries=(),
                 progress: bool = False) -> Path:
    """Write the report of ``selection`` to ``out`` (default SELECTION/report.html); returns the path.

    ``queries``: query stores for the coverage figures (default: those the selection was made with).
    An existing report or figure is replaced only with ``overwrite`` (and only one dataselect made).
    """
    t0 = time.perf_counter()
    op = open_selection(selection)
    out = Path(out) if out else op.path / "report.html"
    # the stores are inputs too: a report or figure is never written into one
    inputs = [pool, op.path / "selection.json", op.path / "selection.arrow", op.pool.path, *(q.path for q in op.queries)]
    claim(out, overwrite=overwrite, inputs=inputs, what="report")
    if png_dir:
        for name in ("tasks", "sources", "scores", "projection", "clusters"):
            claim(Path(png_dir) / f"{name}.png", overwrite=overwrite, inputs=inputs, what="figure")
    positions = sample_positions(op.pool.n_rows)
    figs = {"tasks": fig_tasks(op), "sources": fig_sources(op), "scores": fig_scores(op, positions),
            "projection": fig_projection(op, positions)}
    balance = cluster_balance(op)
    if balance is not None:
        figs["clusters"] = fig_clusters(*balance)
    pngs = {name: png_bytes(fig) for name, fig in figs.items()}
    if png_dir:
        Path(png_dir).mkdir(parents=True, exist_ok=True)
        for name, data in pngs.items():
            with writing(Path(png_dir) / f"{name}.png", overwrite=overwrite, inputs=inputs, what="figure") as tmp:
                tmp.write_bytes(data)
    examples = top_examples(op, pool=pool)
    m = op.meta
    parts = [f"<h1>Selection report: {html.escape(m['method'])}, {m['selected']:,} of "
             f"{m['pool_store']['rows']:,} rows</h1>",
             f"<p class='note'>{html.escape(str(op.path))} &middot; pool store {html.escape(m['pool_store']['path'])}"
             f" &middot; seed {m['seed']}</p>"]
    titles = {"tasks": "Rows per task", "sources": "Sources", "scores": "Scores", "projection": "Projection",
              "clusters": "Cluster balance"}
    for name, data in pngs.items():
        parts.append(f"<h2 id='{name}'>{titles[name]}</h2><img alt='{name}' src='{data_uri(data)}'>")
    if balance is not None:
        sizes, picked = balance
        parts.append(_table(["clusters", "pool rows per cluster (min / median / max)",
                             "picked per cluster (min / median / max)"],
                            [[len(sizes), f"{sizes.min()} / {int(np.median(sizes))} / {sizes.max()}",
                              f"{picked.min()} / {int(np.median(picked))} / {picked.max()}"]]))
    parts.append(quality_section(op, queries, progress))
    parts.append("<h2 id='examples'>Top examples per task</h2>")
    if pool is None:
        parts.append("<p class='note'>The prompt column is empty: the report was built without --pool. "
                     "Run <code>dataselect report SELECTION --pool POOL</code> to show each example's prompt.</p>")
    parts.append(_table(["task", "rank", "row", "id", "score", "prompt", "nearest query", "query sim"],
                        [[e["task"], e["rank"], e["row"], e["id"], f"{e['score']:.4f}", e["text"],
                          e["nearest_query"], "" if e["query_sim"] is None else f"{e['query_sim']:.4f}"]
                         for e in examples]))
    if op.dedup is not None:
        parts.append(dedup_section(op))
    run_rows = [["method", m["method"]],
                *[[f"--{k.replace('_', '-')}", "empty" if v in (None, "", []) else v] for k, v in m["params"].items()],
                ["seed", m["seed"]],
                ["budget", f"{m['budget']['requested']} = {m['budget']['rows']:,} rows"],
                ["pool store", f"{m['pool_store']['path']} ({m['pool_store']['rows']:,} rows)"],
                ["query stores", ", ".join(q["path"] for q in m.get("query_stores", [])) or "none"],
                ["rows per task", ", ".join(f"{t}: {n:,}" for t, n in (m.get("counts_per_task") or {}).items()) or "-"], ["selection wall time", f"{m['wall_s']:.2f} s"],
                ["report built in", f"{time.perf_counter() - t0:.2f} s"], ["dataselect", m.get("version", "")]]
    parts.append("<h2 id='run'>Run</h2>" + _table(["", ""], run_rows))
    page = (f"<!doctype html><html><head><meta charset='utf-8'><meta name='generator' content='dataselect'><title>dataselect report</title>"
            f"<style>{CSS}</style></head><body>{''.join(parts)}</body></html>")
    out.parent.mkdir(parents=True, exist_ok=True)
    with writing(out, overwrite=overwrite, inputs=inputs, what="report") as tmp:
        tmp.write_text(page, encoding="utf-8")
    return out
