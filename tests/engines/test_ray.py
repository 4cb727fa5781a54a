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
from dataselect.selection import read_selection
from dataselect.selection_run import RunSpec, run_selection
from dataselect.store import Store

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}})
    yield
    ray.shutdown()


def dies_once(base: type, shard: int, marker: str) -> type:
    """``base`` (a shard task) whose call on ``shard`` SIGKILLs its Ray worker mid-task the first time
    (``marker``, a file, records that it did); later calls run as ``base``. Register this module for
    pickling by value first (workers cannot import tests/)."""

    class DiesOnce(base):
        def run(self, store, shards):
            if shards == [shard] and not os.path.exists(marker):
                Path(marker).write_text("killed")
                os.kill(os.getpid(), signal.SIGKILL)  # mid-task: nothing of the shard came back
            return super().run(store, shards)

    return DiesOnce


def on_ray(pool, out, options):
    """The embedding stage with its shards on 2 Ray workers."""
    from dataselect.engines.executor import make_executor

    return EmbedStage(pool, out, options, make_executor("ray", workers=2))


def opts(model, **kw):
    return EmbedOptions(model=model, shard_rows=40, batch_tokens=2048, progress=False, **kw)


def test_ray_store_and_selection_match_local(tmp_path, tiny_llama, ray_cluster):
    pool = write_jsonl(tmp_path / "p.jsonl", make_records(200))
    local = EmbedStage(pool, tmp_path / "local", opts(tiny_llama)).run()
    remote = on_ray(pool, tmp_path / "ray", opts(tiny_llama)).run()
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
    lines = [json.dumps(r) for r in make_records(90)]
    lines[5] = '{"prompt": "broken'
    lines[50] = json.dumps({"messages": [{"role": "user", "content": "no answer"}]})
    twin = json.dumps({"prompt": "same text", "completion": "same answer"})
    lines[10], lines[70] = twin, twin  # duplicate content without ids: the second gets HASH-ROW
    pool = write_jsonl(tmp_path / "p.jsonl", lines)
    local = EmbedStage(pool, tmp_path / "local", opts(tiny_llama, skip_invalid=True)).run()
    remote = on_ray(pool, tmp_path / "ray", opts(tiny_llama, skip_invalid=True)).run()
    assert remote.counts == local.counts and local.counts["rows_skipped"] == 2
    assert remote.skipped_examples == local.skipped_examples
    assert [s.sha256 for s in remote.shards] == [s.sha256 for s in local.shards]


def test_ray_resumes_a_partial_store(tmp_path, tiny_llama, ray_cluster):
    pool = write_jsonl(tmp_path / "p.jsonl", make_records(160))
    part = on_ray(pool, tmp_path / "ray", opts(tiny_llama, max_shards=2)).run()
    assert not part.complete and len(part.shards) == 2
    done = on_ray(pool, tmp_path / "ray", opts(tiny_llama)).run()
    ref = EmbedStage(pool, tmp_path / "local", opts(tiny_llama)).run()
    assert done.complete and done.store_hash == ref.store_hash


def _worker_pids() -> list[int]:
    """Processes of the shard task actors (Ray titles them after the actor's class)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and b"_ShardWorker" in (proc / "cmdline").read_bytes():
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def test_killed_worker_loses_and_duplicates_nothing(tmp_path, tiny_llama, ray_cluster):
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
    man = on_ray(pool, tmp_path / "ray", opts(tiny_llama)).run()
    killer.join()
    assert killed and man.complete
    rows = Store(tmp_path / "ray").rows()
    assert sorted(rows.tolist()) == list(range(400)) and len(set(rows.tolist())) == 400
    ref = EmbedStage(pool, tmp_path / "local", opts(tiny_llama)).run()
    assert [s.sha256 for s in man.shards] == [s.sha256 for s in ref.shards]


def _twin_stores(tmp_path):
    """The same synthetic pool (losses included) and query store in two folders: one per engine, so that
    neither finds the other's cached clustering."""
    from conftest import modes
    from dataselect.store.synthetic import store_from_array

    x, mode = modes(1600, 16, 8, seed=3)
    loss = (0.5 + mode * 0.3 + np.random.default_rng(1).random(1600)).astype(np.float32)
    q = x[[1, 2, 3, 500, 501]]
    for side in ("local", "ray"):
        store_from_array(tmp_path / side / "pool", x, shard_rows=400, extra={"loss_response": loss})
        store_from_array(tmp_path / side / "q", q, kind="queries", tasks=["a", "a", "a", "b", "b"])


@pytest.mark.parametrize("method, params, with_queries", [
    ("random", {}, False),
    ("loss", {}, False),
    ("rds+", {}, True),
    ("kmeans-sensitivity", {"k": "8"}, False),
    ("kmeans-sensitivity", {"k": "8", "variant": "coreset"}, True),
    ("kmeans-sensitivity", {"k": "8", "reduce": "pca:8"}, True),  # issue 27: the reduced store on the workers
    ("hierarchical-kmeans", {"k": "16,4", "resamples": "1", "niter": "5"}, False),
])
def test_every_method_on_ray_selects_what_it_selects_locally(tmp_path, ray_cluster, method, params, with_queries):
    """Issue 26: `--engine ray` ran rds+ only; every other method was refused."""
    _twin_stores(tmp_path)
    got = {}
    for side in ("local", "ray"):
        spec = RunSpec(method=method, store=str(tmp_path / side / "pool"), budget="120", seed=4, params=dict(params),
                       queries=[str(tmp_path / side / "q")] if with_queries else [], engine=side,
                       out=str(tmp_path / side / "sel"))
        run_selection(spec)
        got[side] = read_selection(tmp_path / side / "sel")
    a, b = got["local"][0], got["ray"][0]
    assert a.column_names == b.column_names and a.num_rows == b.num_rows == 120
    for name in a.column_names:  # NaN-aware: kmeans-sensitivity's p is NaN for representatives
        x, y = a.column(name).to_numpy(zero_copy_only=False), b.column(name).to_numpy(zero_copy_only=False)
        assert np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), name
    assert got["ray"][1]["resources"]["engine"] == "ray"


def test_the_python_api_embeds_on_ray_byte_for_byte(tmp_path, tiny_llama, ray_cluster):
    """Issue 26: api.embed took no engine, so Python users could not embed on Ray."""
    import dataselect as ds

    pool = write_jsonl(tmp_path / "p.jsonl", make_records(100))
    kw = dict(model=tiny_llama, progress=False, shard_rows=40, batch_tokens=2048)
    a = ds.embed(pool, out=tmp_path / "local", **kw)
    b = ds.embed(pool, out=tmp_path / "ray", engine="ray", workers=2, **kw)
    assert a.hash == b.hash and len(a.shards) == 3
    for s in a.shards:
        assert (tmp_path / "local" / s.file).read_bytes() == (tmp_path / "ray" / s.file).read_bytes()


@pytest.mark.parametrize("kind", ["assign", "score", "lloyd"])
def test_a_worker_killed_inside_a_shard_task_is_retried_with_the_same_result(tmp_path, ray_cluster, kind):
    """Issue 26: a Ray worker SIGKILLed in the middle of a k-means assignment pass, an rds+ scoring pass
    or a Lloyd update: Ray restarts the actor, the shard is run again, and the merged result equals an
    undisturbed local pass. The workers are kept from one call to the next (keep_workers, as Lloyd
    rounds keep them): a restarted actor fetches the task it is asked for, not the first one it ran."""
    import sys

    from conftest import modes
    from dataselect.engines.executor import LocalExecutor
    from dataselect.engines.ray_engine import RayExecutor
    from dataselect.pool_index.kmeans import AssignTask, LloydTask
    from dataselect.pool_index.similarity import ScoreTask
    from dataselect.store.synthetic import store_from_array

    base = {"assign": AssignTask, "score": ScoreTask, "lloyd": LloydTask}[kind]
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/
    x, _ = modes(1200, 16, 6, seed=2)
    store_from_array(tmp_path / "s", x, shard_rows=200)
    st = Store(tmp_path / "s")
    marker = str(tmp_path / "killed")
    args = {"assign": (x[:6].copy(), "flat"), "score": (x[[0, 1, 700]].copy(), np.array([0, 2])),
            "lloyd": (x[:6].copy(), np.arange(0, 1200, 3), "flat")}[kind]
    before = (x[6:12].copy(),) + args[1:]  # another task first: a restarted actor must not fall back to it
    want, want_before = LocalExecutor().map_shards(base(*args), st), LocalExecutor().map_shards(base(*before), st)
    ex = RayExecutor(workers=2)
    with ex.keep_workers():
        first = ex.map_shards(base(*before), st)
        got = ex.map_shards(dies_once(base, 2, marker)(*args), st)
    assert Path(marker).exists(), "the worker was not killed"
    for expected, result in ((want_before, first), (want, got)):
        for a, b in zip(expected, result, strict=True):
            for u, v in zip(a if kind == "lloyd" else [a], b if kind == "lloyd" else [b], strict=True):
                assert np.array_equal(np.asarray(u), np.asarray(v))


def test_a_deduplicated_pool_selects_on_ray_what_it_selects_locally(tmp_path, ray_cluster):
    """Ray workers reopen a store view (run --dedup) with its kept rows, not the whole store (issue 29)."""
    import dataselect as ds
    from dataselect.store.synthetic import store_from_array

    rng = np.random.default_rng(0)
    base = rng.standard_normal((100, 8))
    x = np.concatenate([base, base[rng.integers(0, 100, 100)] + 0.01 * rng.standard_normal((100, 8))])
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)
    store_from_array(tmp_path / "pool", x, shard_rows=40)
    store_from_array(tmp_path / "q", x[[0, 1, 2]], kind="queries", tasks=["a", "a", "b"])
    d = ds.dedup(tmp_path / "pool", eps=0.01, k=1, progress=False)
    picks = [ds.select(tmp_path / "pool", "rds+", budget=60, queries=[tmp_path / "q"], dedup=d, engine=engine,
                       progress=False).rows for engine in ("local", "ray")]
    assert d.removed > 0 and np.array_equal(picks[0], picks[1])
    assert not set(picks[1].tolist()) & set(np.flatnonzero(~d.kept).tolist())


def test_semantic_dedup_on_ray_workers_equals_local(tmp_path, ray_cluster):
    """The within-cluster similarity blocks run as PairsTask calls on Ray workers (issue 29)."""
    from dataselect.duplicates import dedup_store
    from dataselect.engines.executor import make_executor
    from dataselect.resources import Resources
    from dataselect.store.synthetic import store_from_array

    rng = np.random.default_rng(1)
    base = rng.standard_normal((300, 8))
    x = np.concatenate([base, base[rng.integers(0, 300, 300)] + 0.05 * rng.standard_normal((300, 8))])
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)
    results = []
    for engine in ("local", "ray"):  # two copies: the pass is cached per store
        store = Store(store_from_array(tmp_path / engine, x, shard_rows=100))
        res = Resources.make(progress=False)
        res.executor = make_executor(engine, workers=2)
        results.append(dedup_store(store, eps=0.02, k=4, eps_sweep=(0.01, 0.05), resources=res))
    local, ray_ = results
    assert ray_.info["semdedup"]["batches"] > 1  # spread over calls, not one
    assert local.removed > 0 and np.array_equal(local.group, ray_.group)
    assert local.info["curve"] == ray_.info["curve"]


def test_a_killed_driver_reruns_from_what_was_committed(tmp_path, ray_cluster):
    """Issue 26: the driver of a Ray selection SIGKILLed after its clustering was committed (the k-means
    artefact) but before the selection was written: the rerun takes the committed clustering as it is,
    leaves no partial artefact or selection behind, and selects what an undisturbed run selects."""
    import subprocess
    import sys

    _twin_stores(tmp_path)
    victim = tmp_path / "ray" / "pool"
    out = tmp_path / "ray" / "sel"
    code = "import sys; from dataselect.cli import main; main(sys.argv[1:])"
    proc = subprocess.Popen([sys.executable, "-c", code, "run", "--store", str(victim), "--method",
                             "kmeans-sensitivity", "--k", "8", "--budget", "120", "--seed", "4", "--engine", "ray",
                             "--out", str(out), "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    committed = []
    while time.monotonic() < deadline and proc.poll() is None and not committed:
        committed = list((victim / "artefacts").glob("clustering-*/artefact.json"))
        time.sleep(0.02)
    assert committed and proc.poll() is None, "the run ended before its clustering was committed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "selection.json").exists()
    before = {p: p.stat().st_mtime_ns for p in (victim / "artefacts").rglob("*") if p.is_file()}
    run_selection(RunSpec(method="kmeans-sensitivity", store=str(victim), budget="120", seed=4,
                          params={"k": "8"}, engine="ray", out=str(out)))
    for p, mtime in before.items():  # what was committed before the kill is used as it is
        if p.parent == committed[0].parent:
            assert p.stat().st_mtime_ns == mtime, p
    meta = json.loads((out / "selection.json").read_text())
    used = json.loads((victim / "artefacts" / f"clustering-{meta['artefacts']['clustering']}" / "artefact.json")
                      .read_text())["params"]  # the rounded clustering, built from the committed one
    assert used.get("rounded_from", meta["artefacts"]["clustering"]) == committed[0].parent.name.split("-", 1)[1]
    assert not [p for p in (victim / "artefacts").iterdir() if p.name.startswith(".tmp")]
    run_selection(RunSpec(method="kmeans-sensitivity", store=str(tmp_path / "local" / "pool"), budget="120",
                          seed=4, params={"k": "8"}, out=str(tmp_path / "local" / "sel")))
    a, b = (read_selection(tmp_path / side / "sel")[0] for side in ("ray", "local"))
    assert np.array_equal(a.column("row").to_numpy(), b.column("row").to_numpy())


def test_loss_scoring_on_ray_equals_local_even_when_a_worker_dies(tmp_path, tiny_llama, ray_cluster, monkeypatch):
    """Issue 26: `dataselect score` ran only in the driver's process. On Ray its shards are scored by
    workers; one SIGKILLed mid-shard is restarted, the shard scored again, and the store ends with the
    bytes a local run writes."""
    import sys

    import dataselect as ds
    from dataselect.embedding.score import LossTask

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    pool = write_jsonl(tmp_path / "p.jsonl", make_records(100))
    for side in ("local", "ray"):
        EmbedStage(pool, tmp_path / side, opts(tiny_llama)).run()
    ds.score(tmp_path / "local", pool=pool, with_ifd=True, progress=False)
    from dataselect.embedding import score as score_module
    from dataselect.engines.executor import make_executor

    marker = str(tmp_path / "killed")
    monkeypatch.setattr(score_module, "LossTask", dies_once(LossTask, 1, marker))  # the driver builds its task
    # from this name
    man, n = score_module.score_store(tmp_path / "ray", pool, with_ifd=True, progress=False,
                                      executor=make_executor("ray", workers=2))
    assert Path(marker).exists(), "the worker was not killed"
    local = Store(tmp_path / "local").manifest
    assert n == 100 and man.complete and man.store_hash == local.store_hash
    assert [s.sha256 for s in man.shards] == [s.sha256 for s in local.shards]


def test_max_memory_is_reserved_per_ray_worker(tmp_path, ray_cluster):
    """Issue 26: under Ray, --max-memory was silently the driver's alone. Each worker now reserves it
    (Ray places workers where it fits), and a budget no node can hold is refused in one line instead
    of waiting for ever."""
    from conftest import run_cli

    _twin_stores(tmp_path)
    pool = tmp_path / "ray" / "pool"
    args = ["run", "--store", str(pool), "--method", "kmeans-sensitivity", "--k", "8", "--budget", "120",
            "--engine", "ray", "-q"]
    _, err = run_cli(*args, "--max-memory", "100TB", "--out", str(tmp_path / "huge"), expect=2)
    assert "GiB per Ray worker, but the largest node of the cluster offers Ray" in err and "Traceback" not in err
    assert not (tmp_path / "huge" / "selection.json").exists()
    # 4 GB, not 1 GB: the driver plans against its own RSS, which in a full test run is already near 1 GiB
    run_cli(*args, "--max-memory", "4GB", "--out", str(tmp_path / "sel"))
    meta = json.loads((tmp_path / "sel" / "selection.json").read_text())
    assert meta["resources"]["worker_memory_bytes"] == 4 * 10**9
    # a held computation's parts (k-means++) start only as many actors as the reservations fit: one
    # part per CPU would leave the second actor waiting for memory for ever
    from dataselect.engines.ray_engine import RayExecutor

    room = int(ray.cluster_resources()["memory"])
    assert RayExecutor(memory=room // 2 + 1).parts() == 1 and RayExecutor(memory=room // 3).parts() == 2


def test_the_projection_pass_runs_on_ray_workers_with_local_bytes_even_when_one_dies(tmp_path, ray_cluster,
                                                                                     monkeypatch):
    """Issues 26/27: --reduce's projection of every row ran in the driver alone. It is a shard task
    (ProjectTask): Ray workers project their shards (1 thread each, the driver 2 here), the driver writes
    each as it comes, and a worker SIGKILLed mid-shard is restarted: the reduced store has the bytes a
    local build writes."""
    import sys

    from conftest import modes
    from dataselect.pool_index import reduce as reduce_module
    from dataselect.resources import Resources
    from dataselect.store.synthetic import store_from_array

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    x, _ = modes(1200, 256, 6, seed=5)
    for side in ("local", "ray"):
        store_from_array(tmp_path / side / "pool", x, shard_rows=400)  # one name: the same pool
    local, _ = reduce_module.reduced_store(Store(tmp_path / "local" / "pool"), "pca:32", Resources.make(progress=False))
    marker = str(tmp_path / "killed")
    monkeypatch.setattr(reduce_module, "ProjectTask", dies_once(reduce_module.ProjectTask, 1, marker))
    remote, info = reduce_module.reduced_store(Store(tmp_path / "ray" / "pool"), "pca:32",
                                               Resources.make(progress=False, engine="ray", workers=2))
    assert Path(marker).exists(), "the worker was not killed"
    assert remote.dim == 32 and len(remote.shards) == 3 and remote.hash == local.hash
    assert [s.sha256 for s in remote.shards] == [s.sha256 for s in local.shards]
    assert not [p for p in (tmp_path / "ray" / "pool" / "artefacts").iterdir() if p.name.startswith(".tmp")]


def test_kmeans_plusplus_held_by_ray_workers_seeds_as_local_even_when_one_dies(tmp_path, ray_cluster, monkeypatch):
    """Issue 26: greedy k-means++ ran in the driver alone (one round per centre, its state every row's
    distance). Its parts are now held by Ray workers across the k rounds (Executor.hold): each keeps its
    shards' rows' distances; a worker SIGKILLed mid-round is restarted, rebuilt by replaying its calls,
    and the seeds are the local ones."""
    import sys
    from dataclasses import dataclass

    import torch

    from conftest import modes
    from dataselect.engines.ray_engine import RayExecutor
    from dataselect.pool_index import seeding

    marker = str(tmp_path / "killed")

    class DyingPart(seeding.SeedingPart):
        def evaluate(self, candidates, adopt=None):
            self._catch_up(adopt)  # the last winner adopted (if a locate call has not done it already)
            if self.t == 12 and self.groups[0][0] > 0 and not os.path.exists(marker):
                Path(marker).write_text("killed")
                os.kill(os.getpid(), signal.SIGKILL)  # mid-round: the part's distances are lost
            return super().evaluate(candidates, adopt)

    @dataclass(frozen=True)
    class DyingParts(seeding.SeedingParts):
        def build(self, part, x):
            return DyingPart(x, list(self.groups[part]), self.device, sum(self.blocks(p) for p in range(part)))

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    x = torch.from_numpy(modes(6000, 16, 12, seed=7)[0])
    groups = [(lo, min(6000, lo + 1300)) for lo in range(0, 6000, 1300)]  # shards of 1,300 rows, the last short
    want = seeding.kmeans_plusplus(x, 40, np.random.default_rng(3), groups=groups)
    held = seeding.kmeans_plusplus(x, 40, np.random.default_rng(3), groups=groups, executor=RayExecutor(workers=2))
    assert np.array_equal(held, want) and len(set(want.tolist())) == 40
    monkeypatch.setattr(seeding, "SeedingParts", DyingParts)
    got = seeding.kmeans_plusplus(x, 40, np.random.default_rng(3), groups=groups, executor=RayExecutor(workers=2))
    assert Path(marker).exists(), "the worker was not killed"
    assert np.array_equal(got, want)
    assert seeding.split_groups(groups, 2) == [groups[:2], groups[2:]]  # two parts of about equal rows
