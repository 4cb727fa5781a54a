"""Reports for every selector, compare and explain against hand-computed values, Chromium rendering."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from dataselect.reports import build_report, compare_selections, explain_row
from dataselect.selection import Selection, read_selection, write_selection
from dataselect.selection_run import RunSpec, run_selection
from dataselect.store import Store
from dataselect.store.synthetic import store_from_array, unit_rows

METHODS = {"random": {}, "rds+": {}, "kmeans-sensitivity": {"k": 8}, "hierarchical-kmeans": {"k": [20, 4]},
           "loss": {"score": "ppl", "pick": "middle"}}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    rng = np.random.default_rng(0)
    n = 600
    sources = [["web", "code", "math"][i % 3] for i in range(n)]
    loss = rng.gamma(2.0, 0.5, n).astype(np.float32)
    store_from_array(tmp / "pool", unit_rows(rng, n, 16), sources=sources, shard_rows=200,
                     extra={"loss_response": loss, "loss_response_alone": loss + 0.3})
    store_from_array(tmp / "q", unit_rows(rng, 5, 16), kind="queries", tasks=["a", "a", "b", "b", "b"])
    sels = {}
    for method, params in METHODS.items():
        out = tmp / f"sel-{method}"
        run_selection(RunSpec(method=method, store=str(tmp / "pool"), budget="60",
                              queries=[str(tmp / "q")] if method == "rds+" else [], params=params, out=str(out)))
        sels[method] = out
    return tmp, sels


@pytest.mark.parametrize("method", sorted(METHODS))
def test_report_has_every_figure_and_table(world, method):
    tmp, sels = world
    html_path = build_report(sels[method], tmp / f"{method}.html", png_dir=tmp / f"png-{method}")
    page = html_path.read_text()
    figures = ["tasks", "sources", "scores", "projection"] + (["clusters"] if "kmeans" in method else [])
    for name in figures:
        assert f"id='{name}'" in page and f"alt='{name}'" in page and (tmp / f"png-{method}" / f"{name}.png").stat().st_size > 1000
    assert page.count("<img ") == len(figures) and page.count("data:image/png;base64,") == len(figures)
    assert "id='examples'" in page and "id='run'" in page and page.count("<table>") >= 2
    assert "src='http" not in page  # self-contained
    if method == "rds+":
        assert page.count("<td>a</td>") == 5 and page.count("<td>b</td>") == 5  # top 5 per task


def test_compare_against_hand_computed(world):
    tmp, _ = world
    pool = Store(tmp / "pool")
    _, meta = read_selection(tmp / "sel-random")

    def make(name, rows, tasks):
        ids = pool.take(rows, ("id",))["id"]
        m = {**meta, "counts_per_task": {t: tasks.count(t) for t in set(tasks)}, "selected": len(rows)}
        sel = Selection(rows=np.array(rows), scores=np.zeros(len(rows)), tasks=np.array(tasks, dtype=object))
        write_selection(tmp / name, sel.table(ids), m, overwrite=True)

    make("A", list(range(0, 10)), ["x"] * 10)
    make("B", list(range(5, 15)), ["x"] * 4 + ["y"] * 6)
    res = compare_selections([tmp / "A", tmp / "B"], png=tmp / "cmp.png")
    assert (res["overlap"], res["only_a"], res["only_b"]) == (5, 5, 5)
    assert res["jaccard"][0][1] == res["jaccard"][1][0] == pytest.approx(5 / 15)
    assert res["tasks"] == {"x": (10, 4), "y": (0, 6)}
    # row i has source [web, code, math][i % 3]: rows 0..9 -> 4 web, 3 code, 3 math; rows 5..14 -> 3, 3, 4
    assert res["sources"] == {"web": (4, 3), "code": (3, 3), "math": (3, 4)}
    assert (tmp / "cmp.png").stat().st_size > 1000


def test_explain_against_hand_computed(world, capsys):
    tmp, sels = world
    pool, q = Store(tmp / "pool"), Store(tmp / "q")
    table, _ = read_selection(sels["rds+"])
    emb, Q = pool.embeddings(), q.embeddings()
    scores = np.stack([(emb @ Q[:2].T).max(1), (emb @ Q[2:].T).max(1)], axis=1)
    picked_row = table.column("row")[7].as_py()
    not_picked = next(r for r in range(600) if r not in set(table.column("row").to_pylist()))
    for row in (picked_row, not_picked):
        res = explain_row(sels["rds+"], row=row)
        assert res["picked"] == (row == picked_row)
        for t, name in enumerate(["a", "b"]):
            s = scores[:, t]
            rank = int((s > s[row]).sum() + ((s == s[row]) & (np.arange(600) < row)).sum())
            tasks = np.array(table.column("task").to_pylist())
            cutoff = table.column("score").to_numpy()[tasks == name].min()
            got = res["tasks"][name]
            assert got["score"] == pytest.approx(s[row], abs=1e-5)
            assert abs(got["rank"] - rank) <= 1  # float32 vs float64 ties aside
            assert got["cutoff"] == pytest.approx(cutoff)
        sims = emb[row] @ Q.T
        assert res["nearest_queries"][0]["sim"] == pytest.approx(sims.max(), abs=1e-5)
    assert explain_row(sels["rds+"], id=f"r{picked_row}")["row"] == picked_row
    run_cli("explain", sels["rds+"], "--row", picked_row)
    assert f"row {picked_row} (id r{picked_row}): PICKED by rds+" in capsys.readouterr().out
    run_cli("compare", sels["rds+"], sels["random"])
    assert "Jaccard" in capsys.readouterr().out


def _chromium() -> str | None:
    if shutil.which("chromium"):
        return shutil.which("chromium")
    try:  # the test set-up installs Debian's chromium when it is missing
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], capture_output=True, timeout=600)
        if not shutil.which("chromium"):
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, timeout=300)
            subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], capture_output=True, timeout=600)
    except (OSError, subprocess.SubprocessError):
        return None
    return shutil.which("chromium")


def test_report_renders_in_headless_chromium(world):
    if _chromium() is None:
        pytest.skip("Debian's chromium could not be installed here (apt-get install chromium failed)")
    tmp, sels = world
    html_path = build_report(sels["hierarchical-kmeans"], tmp / "render.html")
    png = tmp / "render.png"
    script = Path(__file__).parents[1] / "scripts" / "screenshot_report.py"
    subprocess.run([sys.executable, str(script), str(html_path), str(png), "--height", "2400"], check=True,
                   capture_output=True, timeout=180)
    from PIL import Image

    with Image.open(png) as im:
        assert im.size == (1200, 2400)
        colours = len(set(im.convert("RGB").resize((120, 240)).getdata()))
    assert colours > 50  # a rendered page with figures, not a blank one


# --- issue 16, item 7: report and friends ------------------------------------------------------------
def test_report_says_why_the_prompt_column_is_empty_and_tables_parameters(world):
    tmp, sels = world
    page = build_report(sels["hierarchical-kmeans"], tmp / "nopool.html").read_text()
    assert "The prompt column is empty: the report was built without --pool" in page
    run = page.split("id='run'")[1]
    assert "<td>--k</td><td>[20, 4]</td>" in run and "<td>--niter</td><td>50</td>" in run
    assert "{'" not in run  # no Python dict shown


def test_score_histogram_counts_rows(world):
    from dataselect.reports.build import fig_scores
    from dataselect.reports.data import open_selection, sample_positions

    tmp, sels = world
    op = open_selection(sels["rds+"])
    fig = fig_scores(op, sample_positions(op.pool.n_rows))
    ax = fig.axes[0]
    assert ax.get_ylabel() == "rows (count)"
    heights = [p.get_height() for p in ax.patches]
    assert sum(heights) == pytest.approx(op.pool.n_rows + op.table.num_rows)  # counts, not densities


def test_report_refuses_to_overwrite_without_flag(world):
    tmp, sels = world
    out = build_report(sels["random"], tmp / "twice.html")
    _, err = run_cli("report", sels["random"], "--out", out, expect=2)
    assert "--overwrite" in err
    run_cli("report", sels["random"], "--out", out, "--overwrite")


def test_explain_keeps_each_multiline_query_on_one_line(tmp_path):
    rng = np.random.default_rng(1)
    store_from_array(tmp_path / "pool", unit_rows(rng, 50, 8))
    texts = ["Question:\nwhat is 2+2?\n\nAnswer:", "Write a function\n  def f(x):\n", "plain"]
    store_from_array(tmp_path / "q", unit_rows(rng, 3, 8), kind="queries", tasks=["a", "a", "b"],
                     extra={"text": texts})
    run_selection(RunSpec(method="rds+", store=str(tmp_path / "pool"), budget="10", queries=[str(tmp_path / "q")],
                          out=str(tmp_path / "sel")))
    text = explain_row(tmp_path / "sel", row=0)["text"]
    listed = text.split("nearest queries:")[1].strip("\n").splitlines()
    assert len(listed) == 3
    assert any("Question: what is 2+2? Answer:" in ln for ln in listed)
    assert any("Write a function def f(x):" in ln for ln in listed)


def test_compare_columns_line_up(world):
    tmp, sels = world
    text = compare_selections([sels["rds+"], sels["random"]])["text"]
    table = text.split("\n")[3:]
    for block in ("task", "source"):
        rows = [ln for ln in table if ln.strip()]
        header = next(ln for ln in rows if ln.strip().startswith(block))
        body = rows[rows.index(header) + 1:]
        body = body[:next((i for i, ln in enumerate(body) if not ln.startswith("  ") or
                           ln.strip().startswith(("task", "source", "figure"))), len(body))]
        for ln in body:
            assert len(ln) == len(header), (header, ln)  # right-aligned numbers end under their header
            assert ln.rstrip()[-1].isdigit()


def test_ivfpq_index_on_a_small_store_prints_no_faiss_warnings(world, capfd):
    tmp, _ = world
    capfd.readouterr()
    _, said = run_cli("index", tmp / "pool", "--kind", "ivfpq", "--m", "4")
    assert "WARNING" not in capfd.readouterr().err  # FAISS writes to fd 2 directly
    assert said.count("\n") == 1 and "built ivfpq index" in said
