"""The Ray engine on a local 2-CPU cluster: same store and selection as the local engine, worker deaths."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import make_records, write_jsonl
from dataselect.embedding.stage import EmbedOptions, EmbedStage
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
    assert remote.counts == local.counts and remote.complete
    a, b = Store(tmp_path / "local"), Store(tmp_path / "ray")
    assert np.array_equal(a.rows(), b.rows())
    assert np.abs(a.embeddings() - b.embeddings()).max() <= 1e-6
    q = write_jsonl(tmp_path / "q.jsonl", [{"prompt": "the cat sat", "task": "x"}, {"prompt": "def return", "task": "y"}])
    EmbedStage(q, tmp_path / "q", opts(tiny_llama, queries=True)).run()
    spec = dict(method="rds+", store=str(tmp_path / "ray"), queries=[str(tmp_path / "q")], budget="50")
    run_selection(RunSpec(**spec, out=str(tmp_path / "sel_local")))
    run_selection(RunSpec(**spec, out=str(tmp_path / "sel_ray"), engine="ray"))
    assert read_selection(tmp_path / "sel_local")[0].equals(read_selection(tmp_path / "sel_ray")[0])
    # one task: the paper's per-query round-robin, candidates scored per shard and merged
    q1 = write_jsonl(tmp_path / "q1.jsonl", [{"prompt": "the cat sat"}, {"prompt": "def return"}, {"prompt": "sum"}])
    EmbedStage(q1, tmp_path / "q1", opts(tiny_llama, task="only", queries=True)).run()
    spec = dict(method="rds+", store=str(tmp_path / "ray"), queries=[str(tmp_path / "q1")], budget="60")
    run_selection(RunSpec(**spec, out=str(tmp_path / "one_local")))
    run_selection(RunSpec(**spec, out=str(tmp_path / "one_ray"), engine="ray"))
    one = read_selection(tmp_path / "one_local")[0]
    assert one.equals(read_selection(tmp_path / "one_ray")[0]) and "query" in one.column_names


def test_ray_skips_and_duplicate_content_like_local(tmp_path, tiny_llama, ray_cluster):
    from dataselect.engines.ray_engine import RayEmbedStage

    lines = [json.dumps(r) for r in make_records(90)]
    lines[5] = '{"prompt": "broken'
    lines[50] = json.dumps({"messages": [{"role": "user", "content": "no answer"}]})
    twin = json.dumps({"prompt": "same text", "completion": "same answer"})
    lines[10], lines[70] = twin, twin  # duplicate content without ids: the second gets HASH-ROW
    pool = write_jsonl(tmp_path / "p.jsonl", lines)
    local = EmbedStage(pool, tmp_path / "local", opts(tiny_llama, skip_invalid=True)).run()
    remote = RayEmbedStage(pool, tmp_path / "ray", opts(tiny_llama, skip_invalid=True), workers=2).run()
    assert remote.counts == local.counts and local.counts["rows_skipped"] == 2
    assert remote.skipped_examples == local.skipped_examples
    assert [s.sha256 for s in remote.shards] == [s.sha256 for s in local.shards]


def test_ray_resumes_a_partial_store(tmp_path, tiny_llama, ray_cluster):
    from dataselect.engines.ray_engine import RayEmbedStage

    pool = write_jsonl(tmp_path / "p.jsonl", make_records(160))
    part = RayEmbedStage(pool, tmp_path / "ray", opts(tiny_llama, max_shards=2), workers=2).run()
    assert not part.complete and len(part.shards) == 2
    done = RayEmbedStage(pool, tmp_path / "ray", opts(tiny_llama), workers=2).run()
    ref = EmbedStage(pool, tmp_path / "local", opts(tiny_llama)).run()
    assert done.complete and done.store_hash == ref.store_hash


def _worker_pids() -> list[int]:
    """Processes of Ray Data model actors (Ray titles them after the map function's class)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and b"ShardEmbedder" in (proc / "cmdline").read_bytes():
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def test_killed_worker_loses_and_duplicates_nothing(tmp_path, tiny_llama, ray_cluster):
    from dataselect.engines.ray_engine import RayEmbedStage

    pool = write_jsonl(tmp_path / "p.jsonl", make_records(400))
    killed = []

    def kill_one_worker_mid_run():
        deadline = time.time() + 120
        while time.time() < deadline and not list((tmp_path / "ray").glob("shard-*.arrow")):
            time.sleep(0.02)
        pids = _worker_pids()
        if pids:
            os.kill(pids[0], signal.SIGKILL)  # a model worker dies with shards still to do
            killed.append(pids[0])

    killer = threading.Thread(target=kill_one_worker_mid_run)
    killer.start()
    man = RayEmbedStage(pool, tmp_path / "ray", opts(tiny_llama), workers=2).run()
    killer.join()
    assert killed and man.complete
    rows = Store(tmp_path / "ray").rows()
    assert sorted(rows.tolist()) == list(range(400)) and len(set(rows.tolist())) == 400
    ref = EmbedStage(pool, tmp_path / "local", opts(tiny_llama)).run()
    assert [s.sha256 for s in man.shards] == [s.sha256 for s in ref.shards]
