"""What a long step may use: a memory budget, a device, and whether to show progress.

The memory budget is the whole process's: ``--max-memory 1GB`` means peak RSS stays near 1 GB.
What the interpreter and libraries hold is set aside first -- a fixed 512 MiB (torch, FAISS and
pyarrow hold 330-400 MB here), or the process's RSS rounded up to 256 MiB when it is larger -- and
the rest is what a step may plan for. A fixed allowance, not the RSS of the moment, so that a
budget-limited sample (and the selection) is the same from one run of a command to the next. Every large
allocation -- a k-means training sample, centroid state, per-row arrays, streaming buffers, the
mapped shard being read -- is planned against it *before* it is made, and a plan that does not fit
is refused with one line naming the budget to raise.

Default budget: the smaller of 4 GiB and half the memory available when the run starts.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field

from dataselect.engines.executor import Executor, LocalExecutor, make_executor
from dataselect.errors import DataselectError

GiB = 1 << 30
MiB = 1 << 20
DEFAULT_CAP = 4 * GiB
SLACK = 64 * MiB  # small temporaries nobody plans for (Python objects, library scratch)
RUNTIME_ALLOWANCE = 512 * MiB  # the interpreter and libraries (see module docstring)
_RSS_STEP = 256 * MiB
_UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "kib": 1 << 10, "m": 1e6, "mb": 1e6, "mib": MiB,
          "g": 1e9, "gb": 1e9, "gib": GiB, "t": 1e12, "tb": 1e12, "tib": 1 << 40}
_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_bytes(text: str | int) -> int:
    """``"4GB"``, ``"512MiB"``, ``"1.5G"``, ``1000000`` -> bytes (decimal units; ``iB`` units binary)."""
    if isinstance(text, int):
        return text
    m = _RE.match(str(text))
    unit = m.group(2).lower() if m else None
    if not m or unit not in _UNITS:
        raise DataselectError(f"--max-memory {text!r}: expected a size like 4GB, 1.5GiB or 800MB")
    return int(float(m.group(1)) * _UNITS[unit])


def fmt_bytes(n: float) -> str:
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", 1024)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"


def available_memory() -> int:
    """MemAvailable from /proc/meminfo (bytes); total physical memory where that is missing."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import os

    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def current_rss() -> int:
    """Resident set size of this process now (bytes)."""
    try:
        with open("/proc/self/statm") as fh:
            import os

            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux: the peak so far is a safe over-estimate
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


@dataclass
class MemoryBudget:
    """A process-wide memory budget in bytes; ``source`` says where it came from (for messages)."""

    limit: int
    source: str = "--max-memory"

    @classmethod
    def resolve(cls, value: str | int | None = None) -> MemoryBudget:
        if value is None or value == "" or value == 0:
            limit = int(min(DEFAULT_CAP, available_memory() // 2))
            return cls(limit, "the default memory budget (the smaller of 4 GiB and half the available memory)")
        limit = parse_bytes(value)
        if limit <= 0:
            raise DataselectError(f"--max-memory {value!r}: must be positive")
        return cls(limit, f"--max-memory {fmt_bytes(limit)}")

    @staticmethod
    def runtime() -> int:
        """What is set aside for the interpreter and libraries (module docstring)."""
        return max(RUNTIME_ALLOWANCE, -(-current_rss() // _RSS_STEP) * _RSS_STEP)

    def free(self) -> int:
        """What may be planned: the limit less the runtime allowance and a small slack."""
        return self.limit - self.runtime() - SLACK

    def require(self, need: int, what: str, free: int | None = None) -> None:
        """Refuse, in one line, a plan of ``need`` bytes for ``what`` that the budget cannot hold."""
        free = self.free() if free is None else free
        if need > free:
            raise DataselectError(
                f"{what} needs {fmt_bytes(need)} but only {fmt_bytes(max(free, 0))} of {self.source} is free "
                f"(after {fmt_bytes(self.limit - free - SLACK)} for the runtime); raise --max-memory to at least "
                f"{fmt_bytes(self.limit + need - free)}{'' if self.source.startswith('--') else ' or lower k'}")


@dataclass
class Resources:
    """Device, memory budget, progress display and executor for a selection run.

    device : "auto" (CUDA when torch sees a GPU, else CPU), "cpu", "cuda" or "cuda:N"; on Ray, each
        worker's.
    memory : the process's :class:`MemoryBudget`; on Ray, each worker's too (reserved per actor, and every
        block a worker streams is planned against it by the driver).
    progress : show progress bars with rate and ETA on stderr.
    executor : where passes over the pool run (:mod:`dataselect.engines.executor`: this process, or Ray).
    """

    device: str = "auto"
    memory: MemoryBudget = field(default_factory=MemoryBudget.resolve)
    progress: bool = True
    executor: Executor = field(default_factory=LocalExecutor)

    @classmethod
    def make(cls, device: str | None = "auto", max_memory: str | int | None = None,
             progress: bool = True, engine: str = "local", address: str | None = None,
             workers: int = 0) -> Resources:
        device = device or "auto"
        if device not in ("auto", "cpu", "cuda") and not re.fullmatch(r"cuda:\d+", device):
            raise DataselectError(f"--device {device!r}: choose auto, cpu, cuda or cuda:N")
        memory = MemoryBudget.resolve(max_memory)
        return cls(device, memory, progress, make_executor(engine, address, workers, progress=progress,
                                                                memory=memory.limit))

    def torch_device(self):
        """The torch device this run computes on (CUDA only when asked or auto and available)."""
        import torch

        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise DataselectError(f"--device {self.device}: torch sees no CUDA GPU on this machine "
                                  "(use --device cpu or auto)")
        return torch.device(self.device)

    def describe(self) -> dict:
        """What the run used. A method that never imported torch (``random``, ``loss``) ran on the CPU."""
        used_torch = "torch" in sys.modules or self.device != "auto"
        return {"device": str(self.torch_device()) if used_torch else "cpu", "max_memory_bytes": self.memory.limit,
                "max_memory_source": self.memory.source, **self.executor.describe()}
