"""The options of one embedding run (no torch here: the command line and the options of every operation
import this)."""

from __future__ import annotations

from dataclasses import dataclass

from dataselect.checks import check_fields
from dataselect.embedding.text import BOS_MODES, TEMPLATES
from dataselect.errors import DataselectError

POOLINGS = ("rds+", "mean", "last")
BATCHINGS = ("auto", "packed", "padded")


@dataclass
class EmbedOptions:
    """Options of one embedding run; the fields marked identity go into the manifest's ``config``."""

    model: str = "bundled"
    pooling: str = "rds+"
    template: str = "tulu"
    bos: str = "auto"  # auto: the tokenizer's own special tokens (as the paper); always: exactly one BOS
    max_length: int = 2048
    batch_tokens: int = 0  # 0: 16384 on CPU, 65536 on GPU
    shard_rows: int = 50_000
    chunk_rows: int = 2048  # rows embedded together and committed as one part of a shard (the unit of resume)
    with_loss: bool = False
    with_ifd: bool = False
    device: str = "auto"
    dtype: str = "auto"
    revision: str | None = None
    padding_side: str = "right"
    batching: str = "auto"  # auto: packed when the model can take it, else padded
    task: str | None = None  # query stores: task of every record
    queries: bool = False  # a query store (records need a task; prompts alone are fine)
    skip_invalid: bool = False
    overwrite: bool = False
    allow_pickle: bool = False
    progress: bool = True
    max_shards: int | None = None  # stop cleanly after writing this many shards (time-boxed runs)

    def validate(self) -> None:
        check_fields(self)
        if self.pooling not in POOLINGS:
            raise DataselectError(f"--pooling {self.pooling!r}: choose from {', '.join(POOLINGS)}")
        if self.bos not in BOS_MODES:
            raise DataselectError(f"--bos {self.bos!r}: choose from {', '.join(BOS_MODES)}")
        if self.template not in TEMPLATES:
            raise DataselectError(f"--template {self.template!r}: choose from {', '.join(TEMPLATES)}")
        if self.max_length < 2:
            raise DataselectError("--max-length must be at least 2")
        if self.shard_rows < 1:
            raise DataselectError("--shard-rows must be positive")
        if self.chunk_rows < 1:
            raise DataselectError("--chunk-rows must be positive")
        if self.batch_tokens < 0:
            raise DataselectError("--batch-tokens must be positive")
        if self.batching not in BATCHINGS:
            raise DataselectError(f"--batching {self.batching!r}: choose from {', '.join(BATCHINGS)}")
        if self.padding_side not in ("left", "right"):
            raise DataselectError("--padding-side must be left or right")
        if self.with_ifd and not self.with_loss:
            self.with_loss = True
