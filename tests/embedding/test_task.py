"""The embedding pass as a shard task (embedding/task.py): a worker that embeds shards one by one, out
of order and without the driver's chunk journal, writes the store a local run writes."""

from __future__ import annotations

import json

from conftest import make_records, write_jsonl
from dataselect.embedding.stage import EmbedOptions, EmbedStage
from dataselect.engines.executor import LocalExecutor


class Scattered(LocalExecutor):
    """A distributed executor's contract in this process: the task pickled away from the driver (no
    journal, no progress callback), one call per shard, results in reverse shard order."""

    name = "scattered"
    distributed = True

    def imap_shards(self, task, source, shards):
        import pickle

        worker = pickle.loads(pickle.dumps(task))
        assert worker.journal is None and worker.on_progress is None
        worker.setup()
        for k in reversed(list(shards)):
            yield k, worker.run(pickle.loads(pickle.dumps(source)), [k])


def test_shards_embedded_apart_and_out_of_order_give_the_local_store(tmp_path, tiny_llama):
    """Issue 26: embedding is a shard task of the executor, so every engine runs the same code."""
    lines = [json.dumps(r) for r in make_records(130)]
    lines[7] = '{"prompt": "broken'
    twin = json.dumps({"prompt": "same text", "completion": "same answer"})
    lines[12], lines[95] = twin, twin  # the second gets an id derived from its row: the driver's, not the worker's
    pool = write_jsonl(tmp_path / "p.jsonl", lines)

    def opts(**kw):
        return EmbedOptions(model=tiny_llama, shard_rows=40, chunk_rows=16, batch_tokens=2048, progress=False,
                            skip_invalid=True, **kw)

    local = EmbedStage(pool, tmp_path / "local", opts()).run()
    apart = EmbedStage(pool, tmp_path / "apart", opts(), Scattered()).run()
    assert len(local.shards) == 4 and local.counts["rows_skipped"] == 1
    assert apart.counts == local.counts and apart.skipped_examples == local.skipped_examples
    assert [s.sha256 for s in apart.shards] == [s.sha256 for s in local.shards]
    assert apart.store_hash == local.store_hash
    # stopped after 2 shards and resumed: the same store again
    part = EmbedStage(pool, tmp_path / "resumed", opts(max_shards=2), Scattered()).run()
    assert not part.complete and len(part.shards) == 2
    done = EmbedStage(pool, tmp_path / "resumed", opts(), Scattered()).run()
    assert done.complete and done.store_hash == local.store_hash
