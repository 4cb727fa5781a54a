"""``dataselect explain SELECTION --row N | --id ID``: why a row was, or was not, picked."""

from __future__ import annotations

import numpy as np

from dataselect.errors import DataselectError
from dataselect.pool_index.similarity import score_block, score_tasks
from dataselect.report.data import open_selection, query_texts
from dataselect.store.queries import query_matrix


def explain_row(selection, row: int | None = None, id: str | None = None, n_queries: int = 3) -> dict:
    """Facts about one pool row in a selection; ``text`` holds them as lines for people.

    For ``rds+``: the row's score per task, its rank in each task's ordering (0 = best; ties by row),
    each task's cut-off (the lowest score among rows that task took), and the nearest queries.
    """
    op = open_selection(selection)
    if (row is None) == (id is None):
        raise DataselectError("give exactly one of --row or --id")
    if id is not None:
        ids = op.pool.column("id")
        hit = np.nonzero(ids == id)[0]
        if not len(hit):
            raise DataselectError(f"id {id!r} is not in the pool store {op.pool.path}")
        row = int(op.pool.rows()[hit[0]])
    info = op.pool.take([row], ("id", "embedding"))
    sel_rows = op.column("row")
    where = np.nonzero(sel_rows == row)[0]
    out = {"row": int(row), "id": str(info["id"][0]), "picked": bool(len(where)), "method": op.meta["method"]}
    if len(where):
        i = int(where[0])
        out.update({"rank": i, "score": float(op.column("score")[i]), "task": op.column("task")[i],
                    "weight": float(op.column("weight")[i])})
        for extra in ("cluster", "cluster_path"):
            if extra in op.table.column_names:
                out[extra] = op.table.column(extra)[i].as_py()
    lines = [f"row {row} (id {out['id']}): {'PICKED' if out['picked'] else 'not picked'} by {out['method']}"]
    if out["picked"]:
        lines.append(f"  selection rank {out['rank']:,} of {len(sel_rows):,}, score {out['score']:.4f}"
                     + (f", task {out['task']}" if out["task"] else "") + f", weight {out['weight']:.4g}"
                     + (f", cluster {out.get('cluster', out.get('cluster_path'))}" if "cluster" in out
                        or "cluster_path" in out else ""))
    if op.meta["method"] == "rds+" and op.queries:
        agg = op.meta["params"].get("aggregate", "max")
        Q, starts, names = query_matrix(op.pool, op.queries)
        mine = score_block(info["embedding"], Q, starts, agg)[0]
        rows, scores = score_tasks(op.pool, Q, starts, agg)
        tasks = op.column("task")
        out["tasks"] = {}
        for t, name in enumerate(names):
            s = scores[:, t]
            rank = int((s > mine[t]).sum() + ((s == mine[t]) & (rows < row)).sum())
            taken = op.column("score")[tasks == name]
            cutoff = float(taken.min()) if len(taken) else None
            out["tasks"][name] = {"score": float(mine[t]), "rank": rank, "cutoff": cutoff}
            lines.append(f"  task {name}: score {mine[t]:.4f}, rank {rank:,} of {len(rows):,}, cut-off "
                         + (f"{cutoff:.4f}" if cutoff is not None else "-"))
        texts, qtask = query_texts(op.queries, names)
        sims = (info["embedding"] @ Q.T)[0]
        best = np.argsort(-sims, kind="stable")[:n_queries]
        out["nearest_queries"] = [{"task": str(qtask[j]), "sim": float(sims[j]), "text": str(texts[j])} for j in best]
        lines.append("  nearest queries:")
        # one line per query: a multi-line query shows as one line, its line breaks as spaces
        lines += [f"    {q['sim']:.4f}  [{q['task']}] {' '.join(q['text'].split())[:100]}" for q in out["nearest_queries"]]
    out["text"] = "\n".join(lines)
    return out
