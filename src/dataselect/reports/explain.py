"""``dataselect explain SELECTION --row N | --id ID``: why a row was, or was not, picked."""

from __future__ import annotations

import numpy as np

from dataselect.errors import DataselectError
from dataselect.reports.data import open_selection


def explain_row(selection, row: int | None = None, id: str | None = None, n_queries: int = 3) -> dict:
    """Facts about one pool row in a selection; ``text`` holds them as lines for people.

    Then what its method adds (:meth:`Selector.explain`; ``rds+``: the row's score per task, its rank
    in each task's ordering, each task's cut-off and the nearest queries).
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
    from dataselect.selectors import build_selector

    facts, more = build_selector(op.meta["method"], op.meta["params"]).explain(
        op.pool, int(row), info["embedding"], op.queries, op.table, op.meta, n_queries)
    out.update(facts)
    lines += more
    out["text"] = "\n".join(lines)
    return out
