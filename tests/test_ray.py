"""The Ray engine on a local 2-CPU cluster: same store and selection as the local engine, worker deaths."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

from conftest import make_records, write_jsonl
from dataselect.embed.stage import EmbedOptions, EmbedStage
from dataselect.run import RunSpec, run_selection
from dataselect.selection import read_selection
from dataselect.store import Store

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}})
    yield
    ray.shutdown()


def opts(model, **kw):
    return EmbedOptions(model=model, shard_rows=40, batch_tokens=2048, progress=False, **kw)


def test_ray_store_and_selection_match_local(tmp_path, tiny_llama, ray_cluster):
    from dataselect.engines.ray_engine import RayEmbedStage

    pool = write_jsonl(tmp_path / "p.jsonl", make_records(200))
    local = EmbedStage(pool, tmp_path / "local", opts(tiny_llama)).run()
    remote = RayEmbedStage(pool, tmp_path / "ray", opts(tiny_llama), workers=2).run()
    assert remote["counts"] == local["counts"] and remote["complete"]
    a, b = Store(tmp_path / "local"), Store(tmp_path / "ray")
    assert np.array_equal(a.rows(), b.rows())
    assert np.abs(a.embeddings() - b.embeddings()).max() <= 1e-6
    q = write_jsonl(tmp_path / "q.jsonl", [{"prompt": "the cat sat", "task": "x"}, {"prompt": "def return", "task": "y"}])
    EmbedStage(q, tmp_path / "q", opts(tiny_llama, queries=True)).run()
    spec = dict(method="rds+", store=str(tmp_path / "ray"), queries=[str(tmp_path / "q")], budget="50")
    run_selection(RunSpec(**spec, out=str(tmp_path / "sel_local")))
    run_selection(RunSpec(**spec, out=str(tmp_path / "sel_ray"), engine="ray"))
    assert read_selection(tmp_path / "sel_local")[0].equals(read_selection(tmp_path / "sel_ray")[0])


def test_killed_worker_loses_and_duplicates_nothing(tmp_path, tiny_llama, ray_cluster):
    from dataselect.engines.ray_engine import RayEmbedStage

    class KillOnce(RayEmbedStage):
        killed = False

        def _write_one(self, man, bar):
            written = super()._write_one(man, bar)
            if not self.killed and self.inflight:
                pid = ray.get(self.actors[0].pid.remote())
                os.kill(pid, signal.SIGKILL)  # a worker dies with shards in flight
                KillOnce.killed = True
            return written

    pool = write_jsonl(tmp_path / "p.jsonl", make_records(240))
    man = KillOnce(pool, tmp_path / "ray", opts(tiny_llama), workers=2).run()
    assert KillOnce.killed and man["complete"]
    rows = Store(tmp_path / "ray").rows()
    assert sorted(rows.tolist()) == list(range(240)) and len(set(rows.tolist())) == 240
    ref = EmbedStage(pool, tmp_path / "local", opts(tiny_llama)).run()
    assert [s["sha256"] for s in man["shards"]] == [s["sha256"] for s in ref["shards"]]
