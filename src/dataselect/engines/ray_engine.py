"""The Ray engine: embedding spread over model actors (one per GPU, or CPU workers), scoring over shards.

Embedding: the driver validates the pool exactly as the local engine does (so row numbers, skips and
errors are the same) and cuts it into the same shards. Ray Data then reads the pool: a datasource
with one read task per shard still to embed, each reading and normalising that shard's rows. A Ray
Data row is one whole shard (its records as an Arrow IPC payload), so ``map_batches(batch_size=1)``
hands each model actor (one per GPU, or CPU workers) exactly one shard per call: never a shard split
or two merged, and its length-sorted batches are those of the local engine. Ray Data
restarts an actor that dies and retries its shard; the driver writes each shard once, when its block
arrives, so no row is lost or written twice. Shards, manifest and resume are those of the local
engine, so every later command works unchanged.

Every other pass over the pool (``run --engine ray``, any method) is a shard task of
:mod:`dataselect.engines.executor` run by :class:`RayExecutor`: actors set up once (centroids on the
device, the query matrix), one shard per call, results merged on the driver -- the local engine's
selection, for every method.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import os

import pyarrow as pa

from dataselect.embedding.model import load_model
from dataselect.embedding.stage import (
    EmbedOptions,
    EmbedStage,
    effective_max_length,
    embed_chunked,
    make_embedder,
    row_columns,
)
from dataselect.engines.executor import Executor, LocalExecutor
from dataselect.errors import DataselectError
from dataselect.pool import PoolReader, PoolRow

HF_ENV = ("HF_HOME", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE", "TOKENIZERS_PARALLELISM")


def init_ray(address: str | None = None):
    """Join the cluster at ``address``, or start Ray on this machine (the default)."""
    try:
        import ray
    except ModuleNotFoundError:
        raise DataselectError("--engine ray needs Ray: pip install 'dataselect[ray]'") from None
    if not ray.is_initialized():
        env = {k: os.environ[k] for k in HF_ENV if k in os.environ}
        kwargs = {"runtime_env": {"env_vars": env}} if env else {}
        try:
            if address:
                ray.init(address=address, ignore_reinit_error=True, log_to_driver=False, **kwargs)
            else:
                ray.init(include_dashboard=False, ignore_reinit_error=True, log_to_driver=False, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise DataselectError(f"cannot start or join Ray at {address or 'this machine'}: {exc}") from None
    return ray


def read_shard(spec: dict, k: int):
    """Ray Data read task: pool rows of shard ``k`` as one Arrow block (messages as JSON text).

    Errors and content-derived ids that depend on earlier rows come from the driver's validation pass.
    """
    S, queries = spec["shard_rows"], spec["queries"]
    reader = PoolReader(spec["pool"], require_response=not queries, task=spec["task"], require_task=queries,
                        check_duplicates=False)
    reader.marks = spec.get("marks", {})  # where each shard starts, from the driver's validation pass
    rows: list[PoolRow] = []
    for r in reader.rows(start_row=k * S):
        if r.row >= (k + 1) * S:
            break
        rows.append(r)
    valid = [r for r in rows if r.row not in spec["invalid"]]
    for r in valid:
        r.id = spec["id_overrides"].get(r.row, r.id)
    cols = row_columns(valid, queries)
    cols["messages"] = pa.array([json.dumps(r.messages, ensure_ascii=False) for r in valid], pa.string())
    yield pa.table({"shard": [k], "payload": [to_ipc(pa.table(cols))]})


def to_ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def from_ipc(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()


class ShardEmbedder:
    """A model actor of the Ray Data actor pool: loads the model once, embeds one shard per call."""

    def __init__(self, opts: EmbedOptions, max_length: int, gpu: bool):
        import torch

        cpus = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
        if cpus > 0:
            torch.set_num_threads(cpus)
        model = load_model(opts.model, device="cuda" if gpu else "cpu", dtype=opts.dtype,
                           with_lm_head=opts.with_loss, revision=opts.revision, allow_pickle=opts.allow_pickle)
        self.embedder = make_embedder(model, opts, max_length)
        self.chunk_rows = opts.chunk_rows

    def __call__(self, batch: pa.Table) -> pa.Table:
        shard = from_ipc(batch.column("payload")[0].as_py())
        messages = [json.loads(m) for m in shard.column("messages").to_pylist()]
        cols = {name: shard.column(name).combine_chunks() for name in shard.column_names if name != "messages"}
        cols.update(embed_chunked(self.embedder, cols["row"].to_pylist(), messages, self.chunk_rows))
        return pa.table({"shard": batch.column("shard"), "result": [to_ipc(pa.table(cols))]})


def _reader(spec: dict, k: int):
    def read_pool_shard():  # a named function: Ray labels read tasks by the function's __name__
        return read_shard(spec, k)

    return read_pool_shard


def shard_datasource(spec: dict, shards: list[int]):
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    class PoolShards(Datasource):
        def estimate_inmemory_data_size(self):
            return None

        def get_read_tasks(self, parallelism, per_task_row_limit=None, data_context=None):
            try:
                meta = BlockMetadata(num_rows=None, size_bytes=None, exec_stats=None, input_files=None)
            except TypeError:  # Ray < 2.40 also wants the schema
                meta = BlockMetadata(num_rows=None, size_bytes=None, exec_stats=None, input_files=None, schema=None)
            return [ReadTask(_reader(spec, k), meta) for k in shards]

    return PoolShards()


class RayEmbedStage(EmbedStage):
    """:class:`EmbedStage` whose shards are read and embedded by Ray Data (see module docstring)."""

    def __init__(self, pool, out, options: EmbedOptions, *, address: str | None = None, workers: int = 0,
                 num_gpus_per_worker: float = 0.0):
        super().__init__(pool, out, options)
        self.address, self.workers, self.gpus = address, workers, num_gpus_per_worker

    def _load_model(self):
        o = self.opts
        info = load_model(o.model, revision=o.revision, with_lm_head=o.with_loss, weights=False)
        self.max_length = effective_max_length(info, o)
        self.batch_tokens = o.batch_tokens or (65536 if self.gpus else 16384)
        from dataselect.embedding.compute import resolve_batching

        gpu_here = bool(self.gpus) or (o.device != "cpu" and _cluster_gpus(self.address))
        self.batching = resolve_batching(info, o.batching, gpu=gpu_here)
        return info

    def _embed_shards(self, done, bar) -> bool:
        o = self.opts
        S = o.shard_rows
        n_shards = -(-self.n_pool // S)
        todo = [k for k in range(n_shards) if k * S not in done][: o.max_shards or None]
        if not todo:
            return True
        ray = init_ray(self.address)
        from ray import data as ray_data

        ctx = ray_data.DataContext.get_current()
        ctx.enable_progress_bars = False  # ours counts rows and tokens
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        res = ray.cluster_resources()
        gpus = self.gpus or (1.0 if res.get("GPU", 0) >= 1 else 0.0)
        n = self.workers or (int(res.get("GPU", 0) // gpus) if gpus else max(1, min(8, int(res.get("CPU", 1)))))
        spec = {"pool": self.pool, "shard_rows": S, "queries": o.queries, "task": o.task,
                "invalid": self.invalid, "id_overrides": self.id_overrides, "marks": self.reader.marks}
        # reading a shard is light work: no CPU reservation, so model actors holding every CPU cannot starve it
        no_cpu = ({"num_cpus": 0} if "num_cpus" in inspect.signature(ray_data.read_datasource).parameters
                  else {"ray_remote_args": {"num_cpus": 0}})  # named parameter in newer Ray, a dict in 2.35
        ds = ray_data.read_datasource(shard_datasource(spec, todo), override_num_blocks=len(todo), **no_cpu)
        # the actors embed exactly as the driver recorded (batching resolved once, here)
        actor_opts = dataclasses.replace(o, batching=self.batching)
        out = ds.map_batches(ShardEmbedder, fn_constructor_args=(actor_opts, self.max_length, bool(gpus)), batch_size=1,
                             batch_format="pyarrow", compute=ray_data.ActorPoolStrategy(size=n),
                             zero_copy_batch=True, max_restarts=-1, max_task_retries=-1,
                             **({"num_gpus": gpus} if gpus else {"num_cpus": 1}))  # older Ray refuses both
        seen = set()
        for item in out.iter_rows():
            k = int(item["shard"])
            if k in seen:
                raise RuntimeError(f"shard {k} came back twice from Ray")
            seen.add(k)
            self._write_ray_block(k, from_ipc(item["result"]), bar)
        missing = set(todo) - seen
        if missing:
            raise RuntimeError(f"Ray returned no result for shards {sorted(missing)}")
        return len(todo) == len([k for k in range(n_shards) if k * S not in done])

    def _write_ray_block(self, k, block, bar) -> None:
        S = self.opts.shard_rows
        end = min((k + 1) * S, self.n_pool)
        skipped = [{"row": row, "where": w, "reason": r} for row, (w, r) in sorted(self.invalid.items())
                   if k * S <= row < end]
        cols = {name: block.column(name).combine_chunks() for name in block.column_names}
        tokens = int(cols["n_tokens"].to_numpy().sum()) if len(cols["n_tokens"]) else 0
        bar.update(len(skipped))
        self._progress(bar)(len(cols["row"]), tokens)
        self.writer.commit_shard(k, end, skipped, cols)


def _cluster_gpus(address) -> bool:
    """Whether the Ray cluster has GPUs (the actors then run there)."""
    ray = init_ray(address)
    return ray.cluster_resources().get("GPU", 0) >= 1


class _ShardWorker:
    """A Ray actor holding one shard task: set up once, then one shard per call."""

    def __init__(self, task, store):
        cpus = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
        if cpus > 0:
            import torch

            torch.set_num_threads(cpus)
        self.task, self.store = task, store  # unpickled here: reopened by path (a view keeps its rows)
        task.setup()

    def run(self, shard: int):
        return self.task.run(self.store, [shard])


class RayExecutor(Executor):
    """Runs shard tasks on Ray: ``workers`` actors (default: as many as the cluster's CPUs or GPUs hold
    for the task's needs, at most the shards), each set up once; one call per shard, results merged on
    the driver in shard order. An actor that dies is restarted and its shard retried."""

    name = "ray"
    distributed = True

    def __init__(self, address: str | None = None, workers: int = 0, progress: bool = False):
        self.address, self.workers, self.progress = address, workers, progress

    def describe(self) -> dict:
        return {"engine": "ray", "address": self.address or "local", "workers": self.workers or "auto"}

    def map_shards(self, task, store, shards=None):
        todo = list(range(len(store.shards))) if shards is None else list(shards)
        if not todo:
            return LocalExecutor().map_shards(task, store, [])
        ray = init_ray(self.address)
        from ray.util import ActorPool

        from dataselect.progress import bar

        if dataclasses.is_dataclass(task) and "progress" in {f.name for f in dataclasses.fields(task)}:
            task = dataclasses.replace(task, progress=False)  # the driver shows progress over shards
        needs = task.needs
        res = ray.cluster_resources()
        fit = int(res.get("GPU", 0) // needs.gpus) if needs.gpus else int(res.get("CPU", 1) // max(needs.cpus, 0.01))
        n = max(1, min(len(todo), self.workers or fit or 1))
        options = {"num_cpus": needs.cpus, "max_restarts": -1, "max_task_retries": -1}
        if needs.gpus:
            options["num_gpus"] = needs.gpus
        if needs.memory:
            options["memory"] = needs.memory
        worker = ray.remote(_ShardWorker).options(**options)
        task_ref = ray.put(task)
        actors = [worker.remote(task_ref, store) for _ in range(n)]
        try:
            parts = []
            with bar(len(todo), f"{type(task).__name__} on ray", unit="shard", enabled=self.progress) as pbar:
                for part in ActorPool(actors).map(lambda a, i: a.run.remote(i), todo):
                    parts.append(part)
                    pbar.update(1)
        finally:
            for a in actors:
                ray.kill(a)
        return task.merge(parts)
