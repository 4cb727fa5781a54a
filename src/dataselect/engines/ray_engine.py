"""The Ray engine: shard tasks on Ray actors, each set up once (a model loaded, centroids on the device).

Every pass over the pool is a shard task of :mod:`dataselect.engines.executor`: embedding (the model
loaded once per actor, one GPU each, or CPU workers), loss scoring, and every selector's passes
(``run --engine ray``, any method). :class:`RayExecutor` starts as many actors as the cluster holds for
the task's declared needs, hands them one shard per call, and gives the results back to the driver:
merged in shard order (``map_shards``), or one by one as they come (``imap_shards``: the embedding
driver writes each shard as it arrives). An actor that dies is restarted and its shard run again, so a
killed worker costs that shard's time, never a row. Workers read the pool and the store by path: on a
cluster, both must be on a file system every node sees.

This is the only module that imports Ray.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os

from dataselect.engines.executor import Executor, Held, LocalExecutor, Needs
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


def _check_memory(ray, memory: int) -> None:
    """Refuse, in one line, a per-worker memory reservation no node of the cluster can hold (Ray would
    wait for such a node for ever)."""
    from dataselect.resources import fmt_bytes

    largest = max((node.get("Resources", {}).get("memory", 0) for node in ray.nodes() if node.get("Alive")), default=0)
    if memory > largest:
        raise DataselectError(f"--max-memory {fmt_bytes(memory)} per Ray worker, but the largest node of the cluster "
                              f"offers Ray {fmt_bytes(largest)} for workers; lower --max-memory")


def _use_ray_cpus() -> None:
    """Torch in a Ray actor computes on the CPUs Ray gave it (``OMP_NUM_THREADS``, set by Ray)."""
    cpus = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    if cpus > 0:
        import torch

        torch.set_num_threads(cpus)


def _actor_options(needs, memory: int) -> dict:
    """Ray options of an actor of ``needs`` reserving ``memory`` bytes (0: none), restarted when it dies
    and its calls retried."""
    options = {"num_cpus": needs.cpus, "max_restarts": -1, "max_task_retries": -1}
    if needs.gpus:
        options["num_gpus"] = needs.gpus
    if memory:
        options["memory"] = memory
    return options


class _ShardWorker:
    """A Ray actor of shard tasks: each task is set up once per actor (fetched on its first call here, so an
    actor that Ray restarts fetches the task it is asked for again), then one shard per call."""

    def __init__(self, store):
        _use_ray_cpus()
        self.store = store  # unpickled here: reopened by path (a view keeps its rows)
        self.task, self.task_key = None, None

    def run(self, task_box: list, key: int, shard: int):
        if key != self.task_key:  # a new task (the next Lloyd round): its state replaces the last one's
            import ray

            self.task = None
            self.task = ray.get(task_box[0])  # boxed: Ray would fetch a bare reference for every call
            self.task.setup()
            self.task_key = key
        return shard, self.task.run(self.store, [shard])


class _PartWorker:
    """A Ray actor keeping one part of a held computation (:meth:`RayExecutor.hold`). It counts the
    calls it applied; a call that expects more (the actor was restarted and lost its part) is
    answered ``("behind", applied)``, and the driver replays the calls it missed."""

    def __init__(self, factory, part: int):
        _use_ray_cpus()
        self.factory, self.part = factory, part
        self.obj, self.applied = None, 0

    def _object(self, box: list):
        """The part, built on the first call (``box``: the shared rows' reference, passed with every call
        rather than to the constructor, so a restarted actor needs nothing the driver no longer holds)."""
        if self.obj is None:
            import ray

            self.obj = self.factory.build(self.part, ray.get(box[0]))
        return self.obj

    def call(self, box: list, method: str, args: tuple, expect: int):
        obj = self._object(box)
        if self.applied != expect:
            return "behind", self.applied
        out = getattr(obj, method)(*args)
        self.applied += 1
        return "ok", out

    def replay(self, box: list, calls: list) -> int:
        obj = self._object(box)
        for method, args in calls:
            getattr(obj, method)(*args)
            self.applied += 1
        return self.applied


class _RayHeld(Held):
    """:class:`dataselect.engines.executor.Held` on Ray actors: one per part, calls to the parts in parallel,
    each part's calls kept to rebuild it."""

    def __init__(self, ray, actors: list, box: list):
        self.ray, self.actors, self.box = ray, actors, box
        self.log: list[list] = [[] for _ in actors]

    def call(self, method, *args, only=None):
        targets = list(range(len(self.actors))) if only is None else list(only)
        pending = {p: self.actors[p].call.remote(self.box, method, args, len(self.log[p])) for p in targets}
        out = {}
        for p, ref in pending.items():
            status, value = self.ray.get(ref)
            while status == "behind":  # restarted: replay what it missed, then ask again
                self.ray.get(self.actors[p].replay.remote(self.box, self.log[p][value:]))
                status, value = self.ray.get(self.actors[p].call.remote(self.box, method, args, len(self.log[p])))
            out[p] = value
        for p in targets:
            self.log[p].append((method, args))
        return [out[p] for p in targets]


class RayExecutor(Executor):
    """Runs shard tasks on Ray: ``workers`` actors (default: as many as the cluster's CPUs or GPUs hold
    for the task's needs, at most the shards), each set up once; one call per shard, results merged on
    the driver in shard order. An actor that dies is restarted and its shard retried."""

    name = "ray"
    distributed = True

    def __init__(self, address: str | None = None, workers: int = 0, progress: bool = False, memory: int = 0):
        self.address, self.workers, self.progress, self.memory = address, workers, progress, memory
        self._kept: dict | None = None  # inside keep_workers(): (source, needs) -> (source, actors)
        self._tasks = 0

    @contextlib.contextmanager
    def keep_workers(self):
        kept, self._kept = self._kept, {} if self._kept is None else self._kept
        try:
            yield self
        finally:
            if kept is None:
                for _, actors in self._kept.values():
                    for a in actors:
                        init_ray(self.address).kill(a)
                self._kept = None

    def describe(self) -> dict:
        return {"engine": "ray", "address": self.address or "local", "workers": self.workers or "auto",
                "worker_memory_bytes": self.memory or None}

    def map_shards(self, task, store, shards=None):
        todo = list(range(len(store.shards))) if shards is None else list(shards)
        if not todo:
            return LocalExecutor().map_shards(task, store, [])
        from dataselect.progress import bar

        parts = {}
        shown = self.progress and self._kept is None  # repeated passes (Lloyd rounds) show their own progress
        with bar(len(todo), f"{type(task).__name__} on ray", unit="shard", enabled=shown) as pbar:
            for k, part in self.imap_shards(task, store, todo):
                parts[k] = part
                pbar.update(1)
        return task.merge([parts[k] for k in todo])

    def imap_shards(self, task, source, shards):
        todo = list(shards)
        if not todo:
            return
        ray = init_ray(self.address)
        from ray.util import ActorPool

        if dataclasses.is_dataclass(task) and "progress" in {f.name for f in dataclasses.fields(task)}:
            task = dataclasses.replace(task, progress=False)  # the driver shows progress over shards
        actors = self._actors(ray, task.needs, source, len(todo))
        self._tasks += 1
        box, key = [ray.put(task)], self._tasks
        try:
            seen = set()
            for k, part in ActorPool(actors).map_unordered(lambda a, i: a.run.remote(box, key, i), todo):
                if k in seen:
                    raise RuntimeError(f"shard {k} came back twice from Ray")
                seen.add(k)
                yield k, part
        finally:
            if self._kept is None:
                for a in actors:
                    ray.kill(a)

    def _actors(self, ray, needs, source, n_shards: int) -> list:
        """Actors for tasks of ``needs`` over ``source``: started now, or the ones kept from the last call
        (inside :meth:`keep_workers`)."""
        key = (id(source), needs)
        if self._kept is not None and key in self._kept:
            return self._kept[key][1]
        memory = needs.memory or self.memory  # the task's own need, else the run's budget (--max-memory), per worker
        n = max(1, min(n_shards, self._fit(ray, needs, memory)))
        worker = ray.remote(_ShardWorker).options(**_actor_options(needs, memory))
        actors = [worker.remote(source) for _ in range(n)]
        if self._kept is not None:
            self._kept[key] = (source, actors)  # the source is held too, so its id stays its own
        return actors

    def gpus(self) -> int:
        return int(init_ray(self.address).cluster_resources().get("GPU", 0))

    def _fit(self, ray, needs, memory: int) -> int:
        """Actors of ``needs`` (each reserving ``memory``) to start: ``workers``, else as many as the cluster
        holds at once (a budget no node can hold is refused in one line)."""
        res = ray.cluster_resources()
        fit = int(res.get("GPU", 0) // needs.gpus) if needs.gpus else int(res.get("CPU", 1) // max(needs.cpus, 0.01))
        if memory:
            _check_memory(ray, memory)
            fit = min(fit, int(res.get("memory", 0) // memory))
        return max(1, self.workers or fit or 1)

    def parts(self, needs: Needs | None = None) -> int:
        """One part of a held computation per worker of ``needs`` (default one CPU): ``workers``, else as
        many as the cluster holds at once (as for shard tasks), so that every part's actor starts."""
        needs = needs or Needs()
        return self._fit(init_ray(self.address), needs, needs.memory or self.memory)

    @contextlib.contextmanager
    def hold(self, factory, shared, parts: int):
        """One actor per part, each building its part from ``shared`` (put once into Ray's object store,
        read there without a copy on each node); an actor that dies is restarted and its part rebuilt by
        replaying its logged calls."""
        import numpy as np

        ray = init_ray(self.address)
        needs = Needs.on(getattr(factory, "device", None))
        if hasattr(shared, "detach"):
            shared = shared.detach().cpu().numpy()
        box = [ray.put(np.asarray(shared))]
        if self.memory:
            _check_memory(ray, self.memory)
        worker = ray.remote(_PartWorker).options(**_actor_options(needs, self.memory))
        actors = [worker.remote(factory, p) for p in range(parts)]
        try:
            yield _RayHeld(ray, actors, box)
        finally:
            for a in actors:
                ray.kill(a)
