"""Operations that write or show what was selected: export, report, compare, explain, demo."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dataselect.operations.options import Options, PoolOptions
from dataselect.operations.selections import SelectionResult


@dataclass(kw_only=True)
class ExportOptions(PoolOptions):
    """``dataselect export``: the selected records of the pool, as JSONL (``.jsonl.gz`` compressed).
    ``selection``: a selection folder or a :class:`SelectionResult` (saved or not); ``order``:
    ``selection`` (rank order) or ``pool``; ``format``: ``original`` records or normalised ``messages``;
    ``bare``: no ``dataselect`` provenance field."""

    selection: str | Path | SelectionResult
    out: str | Path = Path("selected.jsonl")
    order: str = "selection"
    format: str = "original"
    bare: bool = False
    overwrite: bool = False


@dataclass
class Exported:
    """The JSONL file written, and how many records it holds."""

    path: Path
    records: int


def export(o: ExportOptions) -> Exported:
    """Write the selected records (each checked against the store it was selected from)."""
    from dataselect.checks import as_path
    from dataselect.exporter import export_selection, export_table

    o.validate()
    pool, out = o.source(), Path(o.out)
    if isinstance(o.selection, SelectionResult):
        sel = o.selection
        n = export_table(sel.table, sel.meta, pool, out, order=o.order, fmt=o.format, bare=o.bare,
                         overwrite=o.overwrite, inputs=[sel.path] if sel.path else [])
    else:
        n = export_selection(as_path(o.selection, "selection"), pool, out, order=o.order, fmt=o.format, bare=o.bare,
                             overwrite=o.overwrite)
    return Exported(out, n)


@dataclass(kw_only=True)
class ReportOptions(Options):
    """``dataselect report``: a self-contained HTML report of a selection (``out``: default
    SELECTION/report.html), ``png``: a folder for its figures too, ``pool``: to show example prompts,
    ``queries``: query stores for the coverage figures (default: those the selection was made with)."""

    selection: str | Path
    out: str | Path | None = None
    png: str | Path | None = None
    pool: str | Path | None = None
    queries: list[str | Path] = field(default_factory=list)
    overwrite: bool = False
    progress: bool = False


def report(o: ReportOptions) -> Path:
    """Write the report; returns its path."""
    from dataselect.checks import as_paths
    from dataselect.reports import build_report

    o.validate()
    return build_report(o.selection, o.out, o.png, o.pool, overwrite=o.overwrite,
                        queries=as_paths(o.queries, "--queries"), progress=o.progress)


@dataclass(kw_only=True)
class CompareOptions(Options):
    """``dataselect compare``: two or more selection folders of one pool; ``queries``: query stores for the
    coverage figures (default: those the selections were made with); ``png``: a per-source figure."""

    selections: list[str | Path]
    queries: list[str | Path] = field(default_factory=list)
    png: str | Path | None = None
    overwrite: bool = False
    progress: bool = False


@dataclass
class Findings:
    """What ``compare`` or ``explain`` found: ``facts`` (compare: overlap, Jaccard, per-task and per-source
    differences; explain: the row's scores, ranks, cut-offs, nearest queries) and ``text`` as printed."""

    facts: dict
    text: str

    @classmethod
    def of(cls, got: dict) -> Findings:
        return cls({k: v for k, v in got.items() if k != "text"}, got["text"])


def compare(o: CompareOptions) -> Findings:
    """Overlap, per-task and per-source counts, and the quality figures of each selection."""
    from dataselect.checks import as_paths
    from dataselect.reports import compare_selections

    o.validate()
    return Findings.of(compare_selections(as_paths(o.selections, "selections"), o.png, overwrite=o.overwrite,
                                          queries=as_paths(o.queries, "--queries"), progress=o.progress))


@dataclass(kw_only=True)
class ExplainOptions(Options):
    """``dataselect explain``: one pool row of a selection, by ``row`` or by ``id`` (exactly one)."""

    selection: str | Path
    row: int | None = None
    id: str | None = None


def explain(o: ExplainOptions) -> Findings:
    """Why the row was (or was not) picked."""
    from dataselect.reports import explain_row

    o.validate()
    return Findings.of(explain_row(o.selection, row=o.row, id=o.id))


@dataclass(kw_only=True)
class DemoOptions(Options):
    """``dataselect demo``: the bundled demo pool (or ``pool``) and query sets, embedded with ``model`` (the
    bundled causal LM, with losses), selected by each of the five methods, compared, exported and
    summarised under ``out``."""

    out: str | Path = Path("demo-out")
    budget: str = "80"
    model: str = "bundled"
    pool: str | Path | None = None
    progress: bool = True


@dataclass
class DemoSummary:
    """The demo's folder (stores, selection, export) and what it picked, as printed."""

    folder: Path
    text: str


def demo(o: DemoOptions) -> DemoSummary:
    from dataselect.bundled_demo import run_demo

    o.validate()
    return DemoSummary(Path(o.out), run_demo(o.out, budget=o.budget, model=o.model, progress=o.progress,
                                             pool=o.pool))
