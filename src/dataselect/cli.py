"""The ``dataselect`` command line (also installed as ``select``; see the README about shells).

A thin face of :mod:`dataselect.operations`: each command parses its arguments into the operation's
options (every default read from the options class) and prints the operation's result.

Every command reports a user error as one line on stderr with exit code 2; ``--debug`` shows the
traceback. Ctrl-C or SIGTERM stops cleanly (exit 130); re-running the same command resumes.
"""

from __future__ import annotations

import errno
import importlib
import json
import signal
import sys
import traceback
from pathlib import Path
from typing import Annotated, Optional

import typer

from dataselect import operations as ops
from dataselect.errors import EXIT_INTERRUPTED, EXIT_USAGE, DataselectError
from dataselect.selection_run import RunSpec
from dataselect.textsafe import printable

E, S, IX, NB = ops.EmbedJob, ops.ScoreOptions, ops.IndexOptions, ops.NeighborsOptions  # defaults: read, not retyped
DD, Q, X, R, C, DM = (ops.DedupOptions, ops.QueriesOptions, ops.ExportOptions, ops.ReportOptions, ops.CompareOptions,
                      ops.DemoOptions)


class _Command(typer.core.TyperCommand):
    """Usage lines name arguments as ``POOL`` (some typer versions print ``{POOL}``, and ``{X...}...`` for a
    list argument)."""

    def collect_usage_pieces(self, ctx) -> list[str]:
        pieces = []
        for p in super().collect_usage_pieces(ctx):
            if p.startswith("{") and p.endswith("}..."):
                p = p[1:-4]
            pieces.append(p[1:-1] if p.startswith("{") and p.endswith("}") else p)
        return pieces


app = typer.Typer(add_completion=False, no_args_is_help=False, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="Pick the best instruction-tuning data from large pools (RDS+, k-means, loss).")
_STATE = {"debug": False}


@app.callback()
def _root(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False):
    _STATE["debug"] = debug


def _echo(msg: str) -> None:
    typer.echo(printable(msg), err=True)


# options of every command that runs model workers (embed, score)
Engine = Annotated[str, typer.Option(metavar="local|ray", help="local, or ray to spread over GPUs/machines.")]
Address = Annotated[Optional[str], typer.Option(metavar="ADDRESS", help="Ray cluster address (default: start Ray "
                                                 "locally).")]
Workers = Annotated[int, typer.Option(metavar="N", help="Ray engine: number of model workers (0: one per GPU, else "
                                      "per CPU).")]
GpusPerWorker = Annotated[float, typer.Option(metavar="GPUS", help="Ray engine: GPUs per worker.")]


# ---------------------------------------------------------------------------------------------------
@app.command(cls=_Command)
def embed(
    pool: Annotated[str, typer.Argument(metavar="POOL", help="Pool or query file: .jsonl[.gz|.zst], .parquet, a "
                                        "folder of them, a datasets folder, or a hub dataset id (owner/name).")],
    model: Annotated[str, typer.Option("--model", "-m", metavar="MODEL", help="Hugging Face hub id or local folder; bundled (the default: SmolLM2-135M-Instruct, a causal LM) or bundled-minilm (an encoder, no losses).")] = E.model,
    out: Annotated[Path, typer.Option("--out", "-o", metavar="FOLDER", help="Store folder to write (resumed if it exists).")] = E.out,
    pooling: Annotated[str, typer.Option(metavar="rds+|mean|last", help="rds+ (position-weighted mean), mean or last.")] = E.pooling,
    template: Annotated[str, typer.Option(metavar="tulu|chat", help="tulu (open-instruct format) or chat (tokenizer's template).")] = E.template,
    bos: Annotated[str, typer.Option(metavar="auto|always", help="auto: the tokenizer's own special tokens, as the "
                                     "paper's code (Llama: one BOS; Qwen: none); always: exactly one BOS.")] = E.bos,
    max_length: Annotated[int, typer.Option(metavar="TOKENS", help="Tokens kept per sample; longer ones are truncated and counted.")] = E.max_length,
    batch_tokens: Annotated[int, typer.Option(metavar="TOKENS", help="Padded tokens per batch (0: 16384 on CPU, 65536 on GPU).")] = E.batch_tokens,
    shard_rows: Annotated[int, typer.Option(metavar="ROWS", help="Pool rows per shard file.")] = E.shard_rows,
    chunk_rows: Annotated[int, typer.Option(metavar="ROWS", help="Rows embedded together and committed as one "
                                            "part of a shard: the unit of resume (a kill loses at most one).")] = E.chunk_rows,
    with_loss: Annotated[bool, typer.Option("--with-loss", help="Also store response NLL (causal LMs).")] = E.with_loss,
    with_ifd: Annotated[bool, typer.Option("--with-ifd", help="Also store NLL of the response alone (IFD).")] = E.with_ifd,
    task: Annotated[Optional[str], typer.Option(metavar="NAME", help="Make a query store; every record belongs to this task.")] = E.task,
    tasks_from_records: Annotated[bool, typer.Option(
        "--tasks-from-records", help="Make a query store; each record names its task in a 'task' field.")] = E.tasks_from_records,
    device: Annotated[str, typer.Option(metavar="auto|cpu|cuda[:N]", help="auto, cpu, cuda, cuda:1 ...")] = E.device,
    dtype: Annotated[str, typer.Option(metavar="auto|float32|bfloat16|float16", help="auto (fp32 on CPU, bf16 on GPU), float32, bfloat16, float16.")] = E.dtype,
    revision: Annotated[Optional[str], typer.Option(metavar="REV", help="Model revision on the hub.")] = E.revision,
    batching: Annotated[str, typer.Option(metavar="auto|packed|padded", help="packed: several samples per row, "
                                          "attention confined to each (no padding); auto: packed when the model "
                                          "can take it on a GPU, else padded.")] = E.batching,
    padding_side: Annotated[str, typer.Option(metavar="right|left", help="right or left; embeddings do not depend on it.")] = E.padding_side,
    skip_invalid: Annotated[bool, typer.Option("--skip-invalid", help="Skip bad rows: every one listed in STORE/skipped.jsonl (row, file:line, reason), counted per reason in the manifest.")] = E.skip_invalid,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing store in --out.")] = E.overwrite,
    allow_pickle: Annotated[bool, typer.Option("--allow-pickle", help="Load pickle (.bin) weights, which can run code; "
                                               "only for checkpoints you trust.")] = E.allow_pickle,
    max_shards: Annotated[Optional[int], typer.Option(metavar="N", help="Stop after writing this many shards (resume later).")] = E.max_shards,
    engine: Engine = E.engine,
    address: Address = E.address,
    workers: Workers = E.workers,
    num_gpus_per_worker: GpusPerWorker = E.num_gpus_per_worker,
    split: Annotated[Optional[str], typer.Option(metavar="SPLIT", help="Read POOL with datasets.load_dataset and "
                                                  "this split (default train for a hub id).")] = E.split,
    subset: Annotated[Optional[str], typer.Option(metavar="NAME", help="The dataset's configuration (subset) "
                                                  "for datasets.load_dataset.")] = E.subset,
    streaming: Annotated[bool, typer.Option("--streaming", help="Stream the dataset instead of caching it on "
                                            "disk (datasets).")] = E.streaming,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
):
    """Embed a pool (or a query set) into a sharded Arrow store with RDS+ pooling."""
    man = ops.embed(E.pick(locals(), progress=not quiet))
    c = man.counts
    state = "complete" if man.complete else "partial (re-run to resume)"
    _echo(f"embedded {c.get('rows_stored', 0):,} rows ({c.get('rows_skipped', 0):,} skipped, "
          f"{c.get('truncated', 0):,} truncated, {c.get('tokens', 0):,} tokens) into {out} [{state}]")
    if man.skipped_file:
        kinds = "; ".join(f"{n:,} x {k}" for k, n in man.skipped_per_reason.items())
        _echo(f"skipped rows per reason: {kinds}; every one (row, file:line, reason) in {out / man.skipped_file}")


@app.command(cls=_Command)
def score(
    store: Annotated[Path, typer.Argument(metavar="STORE", help="Store folder (from `dataselect embed`).")],
    pool: Annotated[str, typer.Option("--pool", metavar="POOL", help="The pool the store was embedded from.")],
    split: Annotated[Optional[str], typer.Option(metavar="SPLIT", help="The pool's split, for a datasets or hub "
                                                  "pool (default train).")] = S.split,
    with_ifd: Annotated[bool, typer.Option("--with-ifd", help="Also the NLL of the response alone (IFD).")] = S.with_ifd,
    device: Annotated[str, typer.Option(metavar="auto|cpu|cuda[:N]", help="auto, cpu, cuda, ...")] = S.device,
    dtype: Annotated[str, typer.Option(metavar="auto|float32|bfloat16|float16", help="auto, float32, bfloat16, float16.")] = S.dtype,
    batch_tokens: Annotated[int, typer.Option(metavar="TOKENS", help="Padded tokens per batch (0: by device).")] = S.batch_tokens,
    engine: Engine = S.engine,
    address: Address = S.address,
    workers: Workers = S.workers,
    num_gpus_per_worker: GpusPerWorker = S.num_gpus_per_worker,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    allow_pickle: Annotated[bool, typer.Option("--allow-pickle", help="Load pickle (.bin) weights, which can run "
                                               "code; only for checkpoints you trust.")] = S.allow_pickle,
):
    """Add per-sample losses to a store embedded without --with-loss (resumable)."""
    got = ops.score(S.pick(locals(), progress=not quiet))
    man, scored = got.manifest, got.rows_scored
    if scored:
        _echo(f"scored {scored:,} rows of {store}")
    else:
        _echo(f"{store} already has losses for all {man.rows_stored:,} rows; nothing to score")


@app.command(cls=_Command)
def index(
    store: Annotated[Path, typer.Argument(metavar="STORE", help="Store folder.")],
    kind: Annotated[str, typer.Option(metavar="flat|ivf|ivfpq|hnsw", help="flat (exact), ivf, ivfpq or hnsw.")] = IX.kind,
    nlist: Annotated[int, typer.Option(metavar="N", help="IVF lists (0: about 4 sqrt(n)).")] = IX.nlist,
    m: Annotated[int, typer.Option(metavar="N", help="ivfpq: sub-quantisers (0: dim/16); hnsw: links per node (0: 32).")] = IX.m,
    nprobe: Annotated[int, typer.Option(metavar="N", help="IVF lists probed at search time.")] = IX.nprobe,
    train_size: Annotated[int, typer.Option(metavar="ROWS", help="Rows sampled to train IVF kinds.")] = IX.train_size,
    seed: Annotated[int, typer.Option(metavar="N", help="Seed of the training sample.")] = IX.seed,
):
    """Build a FAISS index over a store (kept beside it in STORE/artefacts/index-KEY)."""
    _echo(f"built {kind} index -> {ops.index(IX.pick(locals()))}")


@app.command(cls=_Command)
def neighbors(
    store: Annotated[Path, typer.Argument(metavar="STORE", help="Pool store.")],
    text: Annotated[Optional[str], typer.Option(metavar="TEXT", help="Find pool records near this text (embedded like a query).")] = NB.text,
    row: Annotated[Optional[int], typer.Option(metavar="ROW", help="Find pool records near this pool row.")] = NB.row,
    k: Annotated[int, typer.Option("--k", "-k", metavar="N", help="How many neighbours.")] = NB.k,
    kind: Annotated[str, typer.Option(metavar="flat|ivf|ivfpq|hnsw", help="Index to use (flat is exact; built on first use).")] = NB.kind,
    pool: Annotated[Optional[Path], typer.Option(metavar="POOL", help="The pool file, to print each record's first line.")] = NB.pool,
):
    """Show the nearest pool records to a text or a row: the everyday way to look into a pool."""
    typer.echo(printable(ops.neighbors(NB.pick(locals())).text()))


@app.command(cls=_Command)
def inspect(store: Annotated[Path, typer.Argument(help="Store folder.")],
            as_json: Annotated[bool, typer.Option("--json", help="Print the whole manifest as JSON.")] = False):
    """Print a store's manifest summary and counts."""
    summary = ops.inspect(ops.StoreOptions(store=store))
    typer.echo(json.dumps(summary.manifest.to_json(), indent=2) if as_json else "\n".join(summary.lines()))


@app.command(cls=_Command)
def verify(store: Annotated[Path, typer.Argument(help="Store folder.")]):
    """Check every shard of a store (names, sizes, sha256, xxh3, schema, row counts) and its hash."""
    got = ops.verify(ops.StoreOptions(store=store))
    for line in got.problems:
        _echo(f"dataselect: {line}")
    if not got.ok:
        raise DataselectError(got.message())
    typer.echo(got.message())


@app.command(cls=_Command, context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def run(
    ctx: typer.Context,
    store: Annotated[Optional[Path], typer.Option("--store", "-s", metavar="STORE", help="Pool store (from `dataselect embed`).")] = None,
    method: Annotated[Optional[str], typer.Option("--method", metavar="METHOD", help="Selector: random, rds+, kmeans-sensitivity, hierarchical-kmeans or loss "
                                                      f"(see `dataselect methods`). Default: {RunSpec.method}.")] = None,
    budget: Annotated[Optional[str], typer.Option(metavar="ROWS", help=f"Rows to select: 1000, 10k, 2.5M or 25%. Default: {RunSpec.budget}.")] = None,
    queries: Annotated[Optional[list[Path]], typer.Option(metavar="STORE...", help="Query store(s) for target-aware methods: --queries Q1 Q2 or --queries Q1 --queries Q2.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", metavar="FOLDER", help=f"Selection folder to write. Default: {RunSpec.out}.")] = None,
    seed: Annotated[Optional[int], typer.Option(metavar="N", help=f"Random seed (default {RunSpec.seed}).")] = None,
    config: Annotated[Optional[Path], typer.Option(metavar="YAML", help="YAML preset; flags given here override it.")] = None,
    allow_all: Annotated[bool, typer.Option("--allow-all", help="Allow a budget as large as the pool.")] = False,
    engine: Annotated[Optional[str], typer.Option(metavar="local|ray", help="local, or ray: every pass over the pool runs as shard tasks on Ray workers.")] = None,
    address: Annotated[Optional[str], typer.Option(metavar="ADDRESS", help="Ray cluster address (default: local Ray).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing selection folder.")] = False,
    device: Annotated[Optional[str], typer.Option(metavar="auto|cpu|cuda[:N]", help="auto (CUDA when there is a GPU), cpu, cuda, cuda:N.")] = None,
    max_memory: Annotated[Optional[str], typer.Option(metavar="BYTES",
        help="Memory budget of the whole process, e.g. 4GB (default: the smaller of 4 GiB and half the "
             "available memory).")] = None,
    dedup: Annotated[Optional[Path], typer.Option(metavar="DEDUP", help="A dedup result of the store (the folder "
                                                  "`dataselect dedup` printed, or latest): pick from its kept rows "
                                                  "only.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
):
    """Select rows from a pool store. Method parameters go as --name value (see `dataselect methods`)."""
    from dataselect.selection_run import load_config, merge_spec
    from dataselect.selectors.base import parse_extra_args

    cfg = load_config(config) if config else {}
    cli = {"method": method, "store": str(store) if store else None, "budget": budget, "seed": seed,
           "queries": [str(q) for q in queries or []], "out": str(out) if out else None,
           "allow_all": allow_all or None, "engine": engine, "address": address, "device": device,
           "max_memory": max_memory, "dedup": str(dedup) if dedup else None,
           "params": parse_extra_args(list(ctx.args)), "overwrite": overwrite, "progress": not quiet}
    spec = merge_spec(cfg, cli)  # None: not given here; defaults < config < command line
    result = ops.run(spec)
    folder, meta = result.path, result.meta
    per_task = ", ".join(f"{t}: {n:,}" for t, n in meta["counts_per_task"].items())
    _echo(f"selected {meta['selected']:,} of {meta['pool_store']['rows']:,} rows with {spec.method} in "
          f"{meta['wall_s']:.1f}s -> {folder}" + (f"  ({per_task})" if per_task else ""))
    if meta.get("dedup"):
        _echo(f"  from the deduplicated pool: {meta['dedup']['removed']:,} of {meta['dedup']['rows_before']:,} rows "
              f"removed as duplicates ({meta['dedup']['key']})")


@app.command(cls=_Command)
def dedup(
    store: Annotated[Path, typer.Argument(metavar="STORE", help="Pool store (from `dataselect embed`).")],
    method: Annotated[str, typer.Option(metavar="exact|semantic", help="exact: identical embeddings (and records, "
                                        "with --pool); semantic: SemDeDup on the embeddings.")] = DD.method,
    eps: Annotated[float, typer.Option(metavar="EPS", help="semantic: pairs with cosine > 1 - EPS are duplicates.")] = DD.eps,
    keep: Annotated[Optional[str], typer.Option(metavar="hard|easy|random|first", help="Which row of a group stays: "
                                                "hard (farthest from its cluster centroid, the paper's; semantic "
                                                "default), easy, random, first (exact default).")] = DD.keep,
    rule: Annotated[str, typer.Option(metavar="groups|reference", help="groups: connected components of the pairs, "
                                      "one row kept each (the paper); reference: the reference code's rule.")] = DD.rule,
    pool: Annotated[Optional[str], typer.Option(metavar="POOL", help="exact: the pool the store was embedded from, "
                                                "to compare records' normalised text too.")] = DD.pool,
    eps_sweep: Annotated[Optional[str], typer.Option(metavar="E1,E2,...", help="semantic: print the rows removed at "
                                                     "each eps (one pass), e.g. 0.001,0.01,0.05,0.1.")] = None,
    k: Annotated[int, typer.Option(metavar="N", help="semantic: clusters (0: one per 1,000 rows).")] = DD.k,
    seed: Annotated[int, typer.Option(metavar="N", help="Seed of k-means and of --keep random.")] = DD.seed,
    device: Annotated[str, typer.Option(metavar="auto|cpu|cuda[:N]", help="Where the similarity blocks run.")] = DD.device,
    max_memory: Annotated[Optional[str], typer.Option(metavar="BYTES", help="Memory budget, e.g. 4GB.")] = DD.max_memory,
    engine: Annotated[str, typer.Option(metavar="local|ray", help="Where the k-means assignment pass runs.")] = DD.engine,
    address: Annotated[Optional[str], typer.Option(metavar="ADDRESS", help="Ray cluster address.")] = DD.address,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
):
    """Find duplicates before selecting: writes a dedup result beside the store, for `run --dedup`."""
    sweep = tuple(e for e in eps_sweep.split(",") if e.strip()) if eps_sweep else DD.eps_sweep  # each checked as --eps
    d = ops.dedup(DD.pick(locals(), eps_sweep=sweep, progress=not quiet))
    info = d.info
    what = f"eps {info['eps']}, rule {info['rule']}" if method == "semantic" else f"compared {info['compared']}"
    _echo(f"{d.removed:,} of {info['rows']:,} rows are duplicates ({info['groups']:,} groups; {what}; "
          f"keep {info['keep']}) -> {d.path}")
    for e, n in (info.get("curve") or {}).items():
        _echo(f"  eps {e:<8} removes {n:>12,} rows ({n / max(info['rows'], 1):.2%})")
    for ex in info.get("examples", [])[:3]:
        _echo(f"  e.g. row {ex['row']:,} duplicates row {ex['duplicate_of']:,} (cosine {ex['cosine']:.4f})")
    _echo(f"select from the rest: dataselect run --store {store} --dedup {d.path} ...")



@app.command(cls=_Command)
def methods():
    """List the selectors: their rule, its source, and every parameter's values, default and meaning."""
    for name, m in ops.methods().items():
        typer.echo(f"{name}{'  (needs --queries)' if m['needs_queries'] else ''}")
        typer.echo(f"    {m['summary'].replace('``', '')}")
        if m["rule"]:
            typer.echo(f"    rule:   {m['rule']}")
        if m["source"]:
            typer.echo(f"    source: {m['source']}")
        for p in m["parameters"]:
            typer.echo(f"    {p['name']} {p['values']}  (default: {p['default']})")
            if p["meaning"]:
                typer.echo(f"        {p['meaning'].replace('``', '')}")
        typer.echo("")


@app.command(cls=_Command)
def queries(
    task: Annotated[str, typer.Argument(metavar="TASK", help="gsm8k, bbh, mmlu, tydiqa, humaneval, alpacaeval or "
                                        "squad (or the paper's keys: gsm8k_shots, bbh_shots, ...).")],
    src: Annotated[Optional[Path], typer.Option(
        "--from", metavar="PATH", help="The task's files: bbh: the bbh (or cot-prompts) folder; mmlu: the folder with "
        "dev/ and test/; tydiqa: the folder with tydiqa-goldp-v1.1-{dev,train}.json; humaneval: the codex_humaneval "
        "folder (HumanEval_dev.jsonl.gz, humanevalpack.jsonl); alpacaeval: alpaca_eval_dev.json; squad: SQuAD "
        "train (datasets folder, parquet or json; none: the hub's squad, as the paper); gsm8k: none needed (Wei et al.'s 8 exemplars ship with "
        "dataselect).")] = Q.src,
    out: Annotated[Path, typer.Option("--out", "-o", metavar="FILE", help="Query file to write (JSONL).")] = Q.out,
    seed: Annotated[int, typer.Option(metavar="N", help="Seed where the paper's code draws at random (42 as "
                                      "the paper; TyDiQA's draw is unseeded there).")] = Q.seed,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a query file dataselect wrote.")] = Q.overwrite,
):
    """Build one of the RDS+ paper's seven query sets, as its code builds them; then embed it."""
    got = ops.queries(Q.pick(locals()))
    path, n = got.path, got.rows
    _echo(f"wrote {n:,} {task} queries to {path}; embed them with `dataselect embed {path} --model MODEL "
          f"--tasks-from-records --out STORE`")


@app.command(cls=_Command)
def export(
    selection: Annotated[Path, typer.Argument(metavar="SELECTION", help="Selection folder (from `dataselect run`).")],
    pool: Annotated[str, typer.Option("--pool", metavar="POOL", help="The pool the store was embedded from.")],
    split: Annotated[Optional[str], typer.Option(metavar="SPLIT", help="The pool's split, for a datasets or hub "
                                                  "pool (default train).")] = X.split,
    out: Annotated[Path, typer.Option("--out", "-o", metavar="FILE", help="Output .jsonl or .jsonl.gz.")] = X.out,
    order: Annotated[str, typer.Option(metavar="selection|pool", help="selection (rank order) or pool (pool order).")] = X.order,
    fmt: Annotated[str, typer.Option("--format", metavar="original|messages", help="original records, or normalised messages.")] = X.format,
    bare: Annotated[bool, typer.Option("--bare", help="No 'dataselect' provenance field.")] = X.bare,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output file.")] = X.overwrite,
):
    """Write the selected pool records as JSONL, ready for fine-tuning."""
    got = ops.export(X.pick(locals(), format=fmt))
    _echo(f"exported {got.records:,} records to {got.path}")


@app.command(cls=_Command)
def report(
    selection: Annotated[Path, typer.Argument(metavar="SELECTION", help="Selection folder.")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", metavar="FILE", help="HTML file (default SELECTION/report.html).")] = R.out,
    png: Annotated[Optional[Path], typer.Option("--png", metavar="FOLDER", help="Also write the figures as PNG files here.")] = R.png,
    pool: Annotated[Optional[Path], typer.Option(metavar="POOL", help="The pool file, to show example prompts.")] = R.pool,
    queries: Annotated[Optional[list[Path]], typer.Option("--queries", metavar="STORE", help="Query stores for the coverage figures (default: those the selection was made with).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing report or figures.")] = R.overwrite,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
):
    """Write a self-contained HTML report (figures embedded) about a selection: what it picked, quality figures."""
    _echo(f"report -> {ops.report(R.pick(locals(), queries=queries or [], progress=not quiet))}")


@app.command(cls=_Command)
def compare(
    selections: Annotated[list[Path], typer.Argument(metavar="SELECTION...", help="Two or more selection folders of one pool.")],
    queries: Annotated[Optional[list[Path]], typer.Option("--queries", metavar="STORE", help="Query stores for the coverage figures (default: those the selections were made with).")] = None,
    png: Annotated[Optional[Path], typer.Option("--png", metavar="FILE", help="Write a per-source figure to this PNG file.")] = C.png,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --png figure.")] = C.overwrite,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
):
    """Overlap, per-task and per-source counts, and quality figures (coverage, diversity) of selections."""
    typer.echo(printable(ops.compare(C.pick(locals(), queries=queries or [], progress=not quiet)).text))


@app.command(cls=_Command)
def explain(
    selection: Annotated[Path, typer.Argument(metavar="SELECTION", help="Selection folder.")],
    row: Annotated[Optional[int], typer.Option(metavar="ROW", help="Pool row number.")] = ops.ExplainOptions.row,
    id: Annotated[Optional[str], typer.Option("--id", metavar="ID", help="Record id.")] = ops.ExplainOptions.id,
):
    """Why a row was (or was not) picked: its scores, ranks, the cut-offs, the nearest queries."""
    typer.echo(printable(ops.explain(ops.ExplainOptions.pick(locals())).text))


@app.command(cls=_Command)
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", metavar="FOLDER", help="Folder for the demo's stores and outputs.")] = DM.out,
    budget: Annotated[str, typer.Option(metavar="ROWS", help="Rows to select.")] = DM.budget,
    model: Annotated[str, typer.Option(metavar="MODEL", help="Model (default: the bundled causal LM, SmolLM2-135M-Instruct).")] = DM.model,
    pool: Annotated[Optional[Path], typer.Option(metavar="POOL", help="Another pool file (default: the bundled 400-row demo pool).")] = DM.pool,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
):
    """Embed the bundled pool with losses, select with each of the five methods, compare them, export."""
    typer.echo(ops.demo(DM.pick(locals(), progress=not quiet)).text)


# ---------------------------------------------------------------------------------------------------
def _on_sigterm(signum, frame):
    raise KeyboardInterrupt


def _click_classes(name: str) -> tuple[type, ...]:
    """``name`` (UsageError, Exit, ...) from every click the installed typer may raise.

    typer < 0.14 raises the separately installed click's exceptions; newer typer ships its own copy
    (``typer._click``) and its own ``Exit``/``Abort`` (``typer.exceptions``). Catching only one of
    them turns a usage error into a traceback.
    """
    found = []
    for module in ("click.exceptions", "typer._click.exceptions", "typer.exceptions"):
        try:
            cls = getattr(importlib.import_module(module), name, None)
        except ImportError:
            continue
        if isinstance(cls, type) and cls not in found:
            found.append(cls)
    return tuple(found)


def _usage_line(exc) -> str:
    """One line for a usage error: what was wrong, and which --help to read."""
    ctx = getattr(exc, "ctx", None)
    path = ctx.command_path if ctx is not None else "dataselect"
    msg = " ".join(exc.format_message().split())
    if ctx is not None and ctx.parent is None and msg.startswith("Missing command"):
        return (f"dataselect: error: missing command (one of: {', '.join(app_command_names())}); "
                "see 'dataselect --help'")
    return f"dataselect: error: {msg} (see '{path} --help')"


def app_command_names() -> list[str]:
    return [c.name or c.callback.__name__.replace("_", "-") for c in app.registered_commands]


def _expand_multi_values(args: list[str]) -> list[str]:
    """``run --queries Q1 Q2`` -> ``run --queries Q1 --queries Q2`` (the repeated form works too).

    ``run`` has no positional arguments, so every bare word after ``--queries`` names a query store.
    """
    command = next((a for a in args if not a.startswith("-")), None)
    if command != "run":
        return args
    out, i = [], 0
    while i < len(args):
        tok = args[i]
        out.append(tok)
        i += 1
        if tok == "--queries":
            first = True
            while i < len(args) and not args[i].startswith("-"):
                if not first:
                    out.append("--queries")
                out.append(args[i])
                first = False
                i += 1
    return out


def main(argv: list[str] | None = None) -> None:
    """Console entry point: runs the app, turning user errors into one line and exit code 2."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    args = _expand_multi_values(list(sys.argv[1:] if argv is None else argv))
    _STATE["debug"] = "--debug" in args
    exit_cls, abort_cls = _click_classes("Exit"), _click_classes("Abort")
    usage_cls, click_cls = _click_classes("UsageError"), _click_classes("ClickException")
    try:
        # typer turns KeyboardInterrupt into Exit(130) and, outside standalone mode, returns exit codes
        code = app(args=args, prog_name="dataselect", standalone_mode=False)
        if isinstance(code, int) and not isinstance(code, bool) and code:
            raise KeyboardInterrupt if code == EXIT_INTERRUPTED else SystemExit(code)
    except exit_cls as exc:
        sys.exit(exc.exit_code)
    except usage_cls as exc:
        if _STATE["debug"]:
            traceback.print_exc()
        _echo(_usage_line(exc))
        sys.exit(EXIT_USAGE)
    except click_cls as exc:  # e.g. a file option that cannot be opened
        if _STATE["debug"]:
            traceback.print_exc()
        _echo(f"dataselect: error: {exc.format_message()}")
        sys.exit(EXIT_USAGE)
    except (KeyboardInterrupt, *abort_cls):
        _echo("\ndataselect: interrupted. Everything completed so far is kept; run the same command "
              "again to resume.")
        sys.exit(EXIT_INTERRUPTED)
    except DataselectError as exc:
        if _STATE["debug"]:
            traceback.print_exc()
        _echo(f"dataselect: error: {exc}")
        sys.exit(EXIT_USAGE)
    except OSError as exc:  # disk full, permissions, a vanished file: the user's to fix, not a bug
        if _STATE["debug"]:
            traceback.print_exc()
        what = f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
        hint = ("; free some space and run the same command again to resume" if exc.errno == errno.ENOSPC
                else "")
        _echo(f"dataselect: error: {what}{hint}")
        sys.exit(EXIT_USAGE)
