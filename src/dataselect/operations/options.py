"""The options of an operation: one dataclass per command, each field's type and default declared once.

The command line reads its defaults from these classes (``= ScoreOptions.with_ifd``) and the Python
API its signature (:meth:`Options.signature`), so neither types a default again. Fields are
keyword-only; :meth:`Options.validate` checks every type once, before any work, with the one-line
message of :func:`dataselect.checks.check_fields`; an operation's own ``validate`` adds its checks.
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass
from pathlib import Path

from dataselect.errors import DataselectError


@dataclass(kw_only=True)
class Options:
    """Base of every operation's options."""

    def validate(self) -> None:
        from dataselect.checks import check_fields

        check_fields(self)

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def of(cls, what: str, values: dict):
        """The options from keyword arguments; a name the operation does not take is refused in one line
        (``what``: the caller, e.g. ``score()``)."""
        unknown = sorted(set(values) - set(cls.names()))
        if unknown:
            raise DataselectError(f"{what} has no option {', '.join(unknown)} (options: {', '.join(cls.names())})")
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in values
                   and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        if missing:
            raise DataselectError(f"{what} needs {', '.join(missing)}")
        return cls(**values)

    @classmethod
    def pick(cls, values: dict, **override):
        """The options from a mapping holding more names than the operation takes (a command's locals)."""
        return cls(**{k: v for k, v in {**values, **override}.items() if k in cls.names()})

    @classmethod
    def signature(cls, positional: tuple[str, ...] = ()) -> inspect.Signature:
        """The Python signature of the API function that takes these options."""
        params = []
        for f in dataclasses.fields(cls):
            default = (f.default if f.default is not dataclasses.MISSING else
                       f.default_factory() if f.default_factory is not dataclasses.MISSING else inspect.Parameter.empty)
            kind = inspect.Parameter.POSITIONAL_OR_KEYWORD if f.name in positional else inspect.Parameter.KEYWORD_ONLY
            params.append(inspect.Parameter(f.name, kind, default=default, annotation=f.type))
        engine = {f.name for f in dataclasses.fields(EngineOptions)}  # where it runs: last
        params.sort(key=lambda p: (p.kind, positional.index(p.name) if p.name in positional else 0, p.name in engine))
        return inspect.Signature(params)


@dataclass(kw_only=True)
class EngineOptions(Options):
    """Where the passes over the pool run: this process, or Ray (a local Ray, or the cluster at ``address``)
    with ``workers`` actors (0: as many as the cluster holds) of ``num_gpus_per_worker`` GPUs each."""

    engine: str = "local"
    address: str | None = None
    workers: int = 0
    num_gpus_per_worker: float = 0.0

    def executor(self, memory: int = 0, progress: bool = False):
        from dataselect.engines.executor import make_executor

        return make_executor(self.engine, address=self.address, workers=self.workers, progress=progress,
                             memory=memory)


@dataclass(kw_only=True)
class PoolOptions(Options):
    """A pool: a file or folder, a ``datasets`` folder, or a hub id (``split``, ``subset``, ``streaming``:
    read with ``datasets.load_dataset``)."""

    pool: str | Path
    split: str | None = None
    subset: str | None = None
    streaming: bool = False

    def source(self):
        from dataselect.pool import pool_source

        return pool_source(self.pool, self.split, self.subset, self.streaming)
