"""``dataselect embed``: pool -> sharded store, resumable.

The pool is cut into shards of ``shard_rows`` consecutive pool rows (shard k holds rows
[k*S, (k+1)*S) that are valid), and shards into chunks of ``chunk_rows`` pool rows. Within a chunk,
samples are sorted by length and batched under a token budget; results are written back in pool
order. Each chunk is committed as a part file before the next starts; a finished shard is written
atomically from its chunks and recorded in the manifest. A killed run resumes from its committed
chunks and produces the same files as an uninterrupted run (batches depend only on a chunk's rows).
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path

import pyarrow as pa

from dataselect.embedding.compute import Encoder, resolve_batching
from dataselect.embedding.model import describe, load_model, model_name
from dataselect.embedding.options import EmbedOptions
from dataselect.embedding.task import EmbedTask, PoolShards
from dataselect.embedding.text import Formatter
from dataselect.engines.executor import model_gpus
from dataselect.errors import DataselectError, InputError
from dataselect.outputs import check_inputs, made_by_dataselect, sweep_partial_builds
from dataselect.pool import HubPool, PoolReader, PoolRow, pool_fingerprint, pool_source
from dataselect.pool.identity import HASH_COLUMN
from dataselect.pool.records import content_id
from dataselect.progress import bar as progress_bar
from dataselect.store.manifest import MANIFEST, Manifest, ModelRef, PoolRef, StoreConfig
from dataselect.store.writer import StoreWriter


class EmbedStage:
    """Embed ``pool`` into the store folder ``out`` (see module docstring). ``run()`` returns the manifest."""

    def __init__(self, pool, out, options: EmbedOptions, executor=None, gpus_per_worker: float = 0.0):
        from dataselect.engines.executor import LocalExecutor

        options.validate()
        self.opts = options
        self.out = Path(out)
        self.executor = executor or LocalExecutor()
        self.gpus_per_worker = gpus_per_worker
        self.pool = pool_source(pool)  # a local path, or a HubPool (datasets)
        # the validation pass marks where every shard starts, so later reads seek instead of scanning
        self.reader = PoolReader(self.pool, require_response=not options.queries, task=options.task,
                                 require_task=options.queries, mark_every=options.shard_rows)
        self.pool_path = self.reader.path

    # -- set-up ------------------------------------------------------------------------------------
    def _identity(self, model) -> StoreConfig:
        o = self.opts
        hub = isinstance(self.pool, HubPool)
        return StoreConfig(
            model=ModelRef(model_name(o.model), model.revision), pooling=o.pooling, template=o.template,
            bos=o.bos, batching=self.batching, max_length=self.max_length, dim=model.dim, dtype="float16",
            with_loss=o.with_loss, with_ifd=o.with_ifd, shard_rows=o.shard_rows, chunk_rows=o.chunk_rows,
            task=o.task,
            pool=PoolRef(str(self.pool) if hub else self.pool_path.name, self.reader.format,
                         pool_fingerprint(self.pool),
                         {"name": self.pool.name, "split": self.pool.split, "config": self.pool.config} if hub else None))

    def _prepare_dir(self, config: StoreConfig) -> Manifest | None:
        """Return the existing manifest to resume from, or None for a fresh store."""
        out = self.out
        check_inputs(out, [] if isinstance(self.pool, HubPool) else [self.pool_path], "store")
        if out.exists() and self.opts.overwrite:
            if made_by_dataselect(out) not in ("store", "empty"):
                raise DataselectError(f"{out} exists and is not a dataselect store; refusing to replace it even "
                                      "with --overwrite (move it away, or choose another --out)")
            shutil.rmtree(out)
        if not out.exists():
            out.mkdir(parents=True)
            return None
        if not (out / MANIFEST).exists():
            if any(out.iterdir()):
                raise DataselectError(f"{out} is not empty and holds no store; pass --overwrite or choose "
                                      "another --out")
            return None
        old = Manifest.load(out)
        diffs = old.config.differences(config)
        if diffs:
            raise DataselectError(f"{out} holds a store made differently ({diffs[0]}); use another --out, "
                                  "or --overwrite to replace it")
        sweep_partial_builds(out, locked_output=True)  # the caller holds the store's lock
        return old

    # -- the run -----------------------------------------------------------------------------------
    def run(self) -> Manifest:
        o = self.opts
        t0 = time.perf_counter()
        model = self._load_model()
        self.model = model
        config = self._identity(model)
        total = self._validate()
        old = self._prepare_dir(config)
        writer = (StoreWriter(self.out, old) if old else
                  StoreWriter.create(self.out, "queries" if o.queries else "pool", config, describe(model)))
        self.writer = writer
        writer.write_skipped(self.invalid)
        recorded = len(writer.manifest.shards)
        done = writer.whole_shards()
        if old is not None and old.complete and len(done) == recorded:
            return old
        writer.manifest.complete = False  # a changed or missing shard is embedded again
        writer.save()
        rows_done = sum(s.end_row - s.first_row for s in writer.manifest.shards)
        bar = progress_bar(total, "embed", enabled=o.progress, initial=rows_done)
        self._tokens, self._t_start = 0, time.perf_counter()
        finished = self._embed_shards(done, bar, self._task())
        bar.close()
        if not finished:
            return writer.manifest
        wall = time.perf_counter() - t0
        return writer.finish(timings={"wall_s": round(wall, 3), "tokens_per_s_this_run": round(self._tokens / max(
            time.perf_counter() - self._t_start, 1e-9), 1)})

    def _load_model(self):
        """The model's config and tokenizer (the workers load the weights): what the store's identity,
        maximum length and batching depend on, resolved once here so that every worker embeds alike."""
        o = self.opts
        info = load_model(o.model, revision=o.revision, with_lm_head=o.with_loss, weights=False)
        self.max_length = effective_max_length(info, o)
        self.gpus = model_gpus(o.device, self.executor, self.gpus_per_worker)
        on_gpu = self.gpus > 0
        self.batching = resolve_batching(info, o.batching, gpu=on_gpu)
        self.batch_tokens = o.batch_tokens or (65536 if on_gpu else 16384)  # as each worker's Encoder resolves it
        return info

    def _task(self) -> EmbedTask:
        task = EmbedTask(dataclasses.replace(self.opts, batching=self.batching), self.max_length, self.gpus)
        if not self.executor.distributed:  # in this process: keep every chunk, follow every batch
            task.journal, task.on_progress = self.writer, self._progress
        return task

    def _embed_shards(self, done: dict, bar, task: EmbedTask) -> bool:
        """Embed every shard not in ``done`` on the executor, writing each as it arrives; False when
        stopped early by --max-shards."""
        o = self.opts
        plan = PoolShards(self.pool, o.shard_rows, self.n_pool, o.queries, o.task, self.invalid, self.id_overrides,
                          self.reader.marks)
        left = [k for k in range(plan.n_shards) if k * o.shard_rows not in done]
        todo = left[: o.max_shards or None]
        self._bar, self._live = bar, [0, 0]  # rows and tokens counted batch by batch (in this process)
        for k, result in self.executor.imap_shards(task, plan, todo):
            (shard,) = result
            rows, tokens = plan.end(k) - k * o.shard_rows, shard.tokens
            self._tokens += tokens - self._live[1]
            bar.update(rows - self._live[0])
            self._live = [0, 0]
            self._show_rate(bar)
            self.writer.commit_shard(k, shard.end, shard.skipped, shard.columns)
        return len(todo) == len(left)

    def _validate(self) -> int:
        """Read the whole pool once before any output is made; return its row count.

        A bad row stops the run here, with nothing written (unless --skip-invalid). Parsing is cheap
        next to the model, and failing in the first minute beats failing after hours of GPU time.
        """
        n, first_bad = 0, None
        self.invalid: dict[int, tuple[str, str]] = {}  # row -> (where, reason)
        self.id_overrides: dict[int, str] = {}  # rows whose id depends on earlier rows (duplicate content)
        for r in self.reader.rows():
            n += 1
            if r.error is not None:
                self.invalid[r.row] = (r.where, r.error)
                if first_bad is None:
                    first_bad = r
                    if not self.opts.skip_invalid:
                        break
            elif isinstance(r.record, dict) and r.record.get("id") is None and r.id != content_id(r.messages):
                self.id_overrides[r.row] = r.id
        if first_bad is not None and not self.opts.skip_invalid:
            raise InputError(first_bad.where, first_bad.error + " (pass --skip-invalid to skip and count such rows)")
        if n == len(self.invalid):
            where = f"{self.reader.files[0]}:1"
            raise InputError(where, "no records to embed" + (f" ({n:,} rows, all invalid)" if n else
                                                             " (the input holds only blank lines or nothing)"))
        self.reader.seen_ids.clear()
        self.n_pool = n
        return n

    def _progress(self, rows: int, tokens: int) -> None:
        self._live[0] += rows
        self._live[1] += tokens
        self._tokens += tokens
        self._bar.update(rows)
        self._show_rate(self._bar)

    def _show_rate(self, bar) -> None:
        rate = self._tokens / max(time.perf_counter() - self._t_start, 1e-9)
        bar.set_postfix_str(f"{rate:,.0f} tok/s", refresh=False)


def chunk_spans(rows: list[int], chunk_rows: int) -> list[tuple[int, int, int]]:
    """(chunk, lo, hi) for ascending pool ``rows``: rows[lo:hi] fall in chunk ``row // chunk_rows``, the
    unit embedded together.

    Every engine embeds the same chunks, so batches -- and so the bytes of a shard -- are the same
    whether a run was interrupted or not, and locally or on Ray."""
    spans, lo = [], 0
    while lo < len(rows):
        key, hi = rows[lo] // chunk_rows, lo + 1
        while hi < len(rows) and rows[hi] // chunk_rows == key:
            hi += 1
        spans.append((key, lo, hi))
        lo = hi
    return spans


def shard_columns(tables: list[pa.Table]) -> dict[str, pa.Array]:
    """One shard's columns from its chunk tables (contiguous arrays: the same bytes however produced)."""
    table = pa.concat_tables(tables)
    return {c: table.column(c).combine_chunks() for c in table.column_names}


def row_columns(valid: list[PoolRow], queries: bool) -> dict[str, pa.Array]:
    """The per-row identity columns of a shard (row, id, record hash, source; task and prompt text in query
    stores). The record hash is what later reads of the pool check each record against (pool.identity)."""
    cols = {"row": pa.array([r.row for r in valid], pa.int64()), "id": pa.array([r.id for r in valid], pa.string()),
            HASH_COLUMN: pa.array([r.record_hash for r in valid], pa.uint64()),
            "source": pa.array([r.source for r in valid], pa.string())}
    if queries:
        cols["task"] = pa.array([r.task for r in valid], pa.string())
        cols["text"] = pa.array([_prompt(r.messages) for r in valid], pa.string())
    return cols


def effective_max_length(model, o: EmbedOptions) -> int:
    """--max-length, capped by the model's position table (encoders such as MiniLM see 512 tokens)."""
    return min(o.max_length, model.max_positions or o.max_length)


def make_embedder(model, o: EmbedOptions, max_length: int) -> Encoder:
    formatter = Formatter(model.tokenizer, o.template, max_length, causal=model.causal, bos=o.bos)
    return Encoder(model, formatter, o.pooling, with_loss=o.with_loss, with_ifd=o.with_ifd,
                       padding_side=o.padding_side, batch_tokens=o.batch_tokens,
                       batching=resolve_batching(model, o.batching))


def _prompt(messages: list[dict], limit: int = 500) -> str:
    """A query's prompt text, kept in query stores so reports can show the nearest query."""
    return next((m["content"] for m in messages if m["role"] == "user"), messages[0]["content"])[:limit]


def embed(pool, out, **kwargs) -> Manifest:
    """Functional form: ``embed(pool, out, model=..., pooling=..., ...)`` -> the store's manifest."""
    return EmbedStage(pool, out, EmbedOptions(**kwargs)).run()


__all__ = ["EmbedOptions", "EmbedStage", "embed"]
