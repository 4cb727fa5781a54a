"""Shard tasks (engines/executor.py): split per shard and merged, each gives what one call over the store gives."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from conftest import modes
from dataselect.engines.executor import LocalExecutor, make_executor
from dataselect.errors import DataselectError
from dataselect.store import Store
from dataselect.store.synthetic import store_from_array


class PerShard(LocalExecutor):
    """What a distributed executor does, in this process: one call per shard, then merge."""

    name = "per-shard"

    def map_shards(self, task, store, shards=None):
        todo = list(range(len(store.shards))) if shards is None else list(shards)
        task.setup()
        return task.merge([task.run(store, [i]) for i in todo])


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    x, _ = modes(900, 8, 5, seed=1)
    path = tmp_path_factory.mktemp("ex") / "s"
    store_from_array(path, x, shard_rows=200)  # 5 shards, the last one short
    return Store(path), x


def _tasks(x):
    from dataselect.pool_index.kmeans import AssignTask, LloydTask
    from dataselect.pool_index.similarity import RescoreTask, ScoreTask, TopRowsTask

    Q = x[[0, 1, 400]].astype(np.float32)
    sample = np.sort(np.random.default_rng(0).choice(len(x), 300, replace=False))
    return [AssignTask(x[:5].copy(), "flat"), AssignTask(x[:7].copy(), "torch"),
            ScoreTask(Q, np.array([0, 2]), "max"), ScoreTask(Q, np.array([0]), "mean"), TopRowsTask(Q, 30),
            LloydTask(x[:6].astype(np.float32), sample, "flat"),
            ScoreTask(Q, np.array([0, 2]), "max", scoring="screened", floors=np.array([0.5, -np.inf])),
            TopRowsTask(Q, 30, scoring="screened"),
            RescoreTask(Q, np.array([0, 2]), "mean", sample, np.random.default_rng(1).random((300, 2)) < 0.5)]


def _same(a, b) -> None:
    if dataclasses.is_dataclass(a):
        _same(dataclasses.astuple(a), dataclasses.astuple(b))
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for u, v in zip(a, b, strict=True):
            _same(u, v)
    elif hasattr(a, "numpy"):
        assert np.array_equal(a.numpy(), b.numpy())
    else:
        assert np.array_equal(a, b)


@pytest.mark.parametrize("which", range(9))
def test_every_shard_task_merges_to_the_whole_store_result(store, which):
    st, x = store
    task = _tasks(x)[which]
    whole, split = LocalExecutor().map_shards(task, st), PerShard().map_shards(_tasks(x)[which], st)
    _same(whole, split)
    if which == 5:
        assert len(whole) == 5  # Lloyd: one partial per shard
    elif which == 8:
        assert len(whole[0]) == int(_tasks(x)[8].need.sum())  # every needed score, once
    else:
        rows = whole.rows if dataclasses.is_dataclass(whole) else whole[0]
        assert len(rows) in (st.n_rows, 3)


def test_unknown_engine_is_refused_in_one_line():
    with pytest.raises(DataselectError, match="--engine 'spark': choose local or ray"):
        make_executor("spark")
