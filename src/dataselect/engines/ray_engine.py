"""The Ray engine: embedding spread over model actors (one per GPU, or CPU workers), scoring over shards.

Embedding: the driver reads and validates the pool exactly as the local engine does, cuts it into the
same shards, and hands each shard's records to a pool of model actors through Ray's object store (at
most two shards in flight per actor). An actor that dies is restarted by Ray and its task retried
(``max_restarts``/``max_task_retries``), and the driver writes each shard once, when its result
arrives: no row is lost or written twice. Shards, manifest and resume are those of the local engine,
so every later command works unchanged.

Scoring (``run --method rds+ --engine ray``): each shard is scored by a Ray task that returns its
rows' per-task scores; the round-robin merge runs on the driver, giving the local engine's selection.
"""

from __future__ import annotations

import os

import numpy as np

from dataselect.embed.model import load_model
from dataselect.embed.stage import EmbedOptions, EmbedStage, effective_max_length, make_embedder
from dataselect.errors import DataselectError

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


class _ShardEmbedder:
    """A model actor: loads the model once, then embeds whole shards."""

    def __init__(self, opts: EmbedOptions, max_length: int, gpu: bool):
        import torch

        cpus = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
        if cpus > 0:
            torch.set_num_threads(cpus)
        model = load_model(opts.model, device="cuda" if gpu else "cpu", dtype=opts.dtype,
                           with_lm_head=opts.with_loss, revision=opts.revision)
        self.embedder = make_embedder(model, opts, max_length)

    def embed(self, messages):
        return self.embedder(messages)

    def pid(self) -> int:
        return os.getpid()


class RayEmbedStage(EmbedStage):
    """:class:`EmbedStage` whose shards are computed by Ray actors (see module docstring)."""

    def __init__(self, pool, out, options: EmbedOptions, *, address: str | None = None, workers: int = 0,
                 num_gpus_per_worker: float = 0.0):
        super().__init__(pool, out, options)
        self.address, self.workers, self.gpus = address, workers, num_gpus_per_worker

    def _load_model(self):
        o = self.opts
        info = load_model(o.model, revision=o.revision, with_lm_head=o.with_loss, weights=False)
        self.max_length = effective_max_length(info, o)
        self.batch_tokens = o.batch_tokens or (65536 if self.gpus else 16384)
        ray = init_ray(self.address)
        res = ray.cluster_resources()
        gpus = self.gpus or (1.0 if res.get("GPU", 0) >= 1 else 0.0)
        n = self.workers or (int(res.get("GPU", 0) // gpus) if gpus else max(1, min(8, int(res.get("CPU", 1)))))
        actor = ray.remote(_ShardEmbedder).options(num_cpus=1, num_gpus=gpus, max_restarts=-1, max_task_retries=-1)
        self.ray, self.actors = ray, [actor.remote(o, self.max_length, bool(gpus)) for _ in range(n)]
        self.inflight: dict = {}
        self._next = 0
        return info

    def _shard_ready(self, man, rows, bar) -> int:
        valid, skipped = self._split(rows)
        bar.update(len(skipped))
        actor = self.actors[self._next % len(self.actors)]
        self._next += 1
        ref = actor.embed.remote(self.ray.put([r.messages for r in valid]))
        self.inflight[ref] = (rows, valid, skipped)
        written = 0
        while len(self.inflight) >= 2 * len(self.actors):
            written += self._write_one(man, bar)
        return written

    def _write_one(self, man, bar) -> int:
        done, _ = self.ray.wait(list(self.inflight), num_returns=1)
        rows, valid, skipped = self.inflight.pop(done[0])
        cols = self.ray.get(done[0])
        tokens = int(cols["n_tokens"].to_numpy().sum())
        self._progress(bar)(len(valid), tokens)
        return self._write_shard(man, rows, valid, skipped, cols)

    def _drain(self, man, bar) -> None:
        while self.inflight:
            self._write_one(man, bar)


def ray_embed(pool, out, opts: EmbedOptions, *, address=None, workers=0, num_gpus_per_worker=0.0) -> dict:
    return RayEmbedStage(pool, out, opts, address=address, workers=workers,
                         num_gpus_per_worker=num_gpus_per_worker).run()


def _score_shard(store_path: str, shard: int, Q: np.ndarray, starts: np.ndarray, aggregate: str):
    from dataselect.scoring import score_tasks
    from dataselect.store import Store

    return score_tasks(Store(store_path), Q, starts, aggregate, shards=[shard])


def ray_select(selector, pool, budget, rng, queries, address=None):
    """Score shards as Ray tasks, merge on the driver (rds+ only; other methods run locally)."""
    from dataselect.scoring import query_matrix
    from dataselect.selectors.rds_plus import RDSPlus

    if not isinstance(selector, RDSPlus):
        raise DataselectError(f"--engine ray runs rds+ scoring; run {selector.name} with --engine local")
    Q, starts, names = query_matrix(pool, queries)
    ray = init_ray(address)
    task = ray.remote(_score_shard).options(num_cpus=1, max_retries=3)
    q_ref = ray.put(Q)
    parts = ray.get([task.remote(str(pool.path), i, q_ref, starts, selector.aggregate) for i in range(len(pool.shards))])
    rows = np.concatenate([r for r, _ in parts]) if parts else np.zeros(0, np.int64)
    scores = np.concatenate([s for _, s in parts]) if parts else np.zeros((0, len(names)), np.float32)
    return selector.select_from_scores(rows, scores, names, budget)
