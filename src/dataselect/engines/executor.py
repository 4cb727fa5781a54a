"""One interface for passes over a store's shards: run locally, or spread over a Ray cluster.

A pass over the pool is a :class:`ShardTask`: it declares what one call needs (:class:`Needs`: CPUs,
GPUs, memory), has ``setup()`` (once per worker: load a model, move centroids to the device) and
``run(store, shards)`` (its result for those shards), and ``merge(parts)`` (the parts of disjoint
shard groups, in shard order, into the result of the whole store). An :class:`Executor` runs a task
over a store: :class:`LocalExecutor` in this process, as one call over every shard (so the store's
read-ahead and checks stream across shards as before), ``RayExecutor``
(:mod:`dataselect.engines.ray_engine`, the only module that knows about Ray) as one call per shard on
workers, each worker doing its setup once. Every task gives the same result either way: a test runs
each one both ways.

A computation whose state must stay where it was computed across many calls -- k-means++ seeding,
one round per centre -- is *held* instead (:meth:`Executor.hold`): split into parts, each an object
one worker keeps, called method by method.

Which executor a run uses is :attr:`dataselect.resources.Resources.executor` (``--engine``,
``--address``); a selector never knows.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

R = TypeVar("R")
ENGINES = ("local", "ray")


@dataclass(frozen=True)
class Needs:
    """What one call of a task needs on its worker: CPUs, GPUs, memory in bytes (0: no reservation)."""

    cpus: float = 1.0
    gpus: float = 0.0
    memory: int = 0

    @classmethod
    def on(cls, device: str | None) -> Needs:
        """One CPU, and one GPU when the task computes on a CUDA device."""
        return cls(cpus=1.0, gpus=1.0 if str(device or "").startswith("cuda") else 0.0)


def model_gpus(device: str, executor: Executor, per_worker: float = 0.0) -> float:
    """GPUs each model worker takes: ``per_worker`` (default one) when ``device`` is CUDA, or ``auto``
    and the executor's workers can see a GPU; none otherwise."""
    on_gpu = str(device).startswith("cuda") or (device == "auto" and executor.gpus() > 0)
    return (per_worker or 1.0) if on_gpu else 0.0


def worker_device(device: str, gpus: float) -> str:
    """The device a worker loads its model on: CUDA for ``auto`` when it was given a GPU."""
    return "cuda" if gpus and device == "auto" else device


class ShardTask(ABC, Generic[R]):
    """One pass over some shards of a store (module docstring). Instances are pickled to workers: keep
    their state small (a query matrix, centroids), and build heavy things in :meth:`setup`."""

    @property
    def needs(self) -> Needs:
        """What one call needs: one CPU, and one GPU when the task's ``device`` (if it has one) is CUDA."""
        return Needs.on(getattr(self, "device", None))

    def setup(self) -> None:
        """Called once per worker before its first :meth:`run`."""

    @abstractmethod
    def run(self, store, shards: list[int]) -> R:
        """The result for ``shards`` (store shard indexes, ascending) of ``store``."""

    @abstractmethod
    def merge(self, parts: list[R]) -> R:
        """The results of disjoint shard groups, in shard order, as one result."""

    def each(self, store, shards: list[int]) -> Iterator[tuple[int, R]]:
        """(shard, result of that shard alone) for each of ``shards`` in order. Tasks whose shards are read
        faster together (a sequential pass over a pool file) override this."""
        for k in shards:
            yield k, self.run(store, [k])


class Held(ABC):
    """The parts of a stateful computation, each an object one worker keeps across calls
    (:meth:`Executor.hold`): k-means++ seeding, whose rows' distances live where they are computed."""

    @abstractmethod
    def call(self, method: str, *args, only: list[int] | None = None) -> list:
        """``method(*args)`` of each part's object (of the parts in ``only``, default all), their results in
        part order. A part rebuilt after its worker died replays every call it had had (the objects'
        methods are deterministic, so a rebuilt part is the part it was)."""


class _LocalHeld(Held):
    def __init__(self, factory, shared, parts: int):
        self.objects = [factory.build(p, shared) for p in range(parts)]

    def call(self, method, *args, only=None):
        return [getattr(self.objects[p], method)(*args) for p in (range(len(self.objects)) if only is None else only)]


class Executor(ABC):
    """Runs shard tasks over a store."""

    name = "executor"
    distributed = False

    @abstractmethod
    def map_shards(self, task: ShardTask[R], store, shards: list[int] | None = None) -> R:
        """``task``'s merged result over ``shards`` of ``store`` (all of them by default)."""

    @abstractmethod
    def imap_shards(self, task: ShardTask[R], source, shards: list[int]) -> Iterator[tuple[int, R]]:
        """(shard, result) for each of ``shards`` of ``source``, as each is ready (on a cluster, not in
        shard order): for passes whose driver commits every shard as it comes (embedding, scoring)."""

    @abstractmethod
    def gpus(self) -> int:
        """How many GPUs this executor's workers can use."""

    def parts(self, needs: Needs | None = None) -> int:
        """How many parts a held computation (:meth:`hold`) whose workers have ``needs`` is split into
        here: one in this process."""
        return 1

    @contextlib.contextmanager
    def hold(self, factory, shared, parts: int):
        """The :class:`Held` parts ``factory.build(part, shared)`` for part in range(``parts``): objects kept
        across calls, each given ``shared`` (a read-only array every part reads). In this process: built
        here; on a cluster, one per worker."""
        yield _LocalHeld(factory, shared, parts)

    def keep_workers(self):
        """A context in which workers outlive one call: a pass repeated with new state (Lloyd rounds) sets
        its workers up once, not once per round. A no-op in this process."""
        return contextlib.nullcontext(self)

    def describe(self) -> dict:
        return {"engine": self.name}


class LocalExecutor(Executor):
    """Runs a task in this process: one call over every shard asked for."""

    name = "local"

    def map_shards(self, task, store, shards=None):
        todo = list(range(len(store.shards))) if shards is None else list(shards)
        task.setup()
        return task.merge([task.run(store, todo)])

    def imap_shards(self, task, source, shards):
        task.setup()
        yield from task.each(source, list(shards))

    def gpus(self) -> int:
        import torch

        return torch.cuda.device_count()


def make_executor(engine: str = "local", address: str | None = None, workers: int = 0,
                  progress: bool = False, memory: int = 0) -> Executor:
    """The executor of ``--engine`` (``ray``: a local Ray by default, the cluster at ``address``).
    ``memory``: bytes each Ray worker reserves when its task declares none (the run's --max-memory)."""
    if engine == "local" or engine is None:
        return LocalExecutor()
    if engine == "ray":
        from dataselect.engines.ray_engine import RayExecutor

        return RayExecutor(address=address, workers=workers, progress=progress, memory=memory)
    from dataselect.errors import DataselectError

    raise DataselectError(f"--engine {engine!r}: choose {' or '.join(ENGINES)}")
