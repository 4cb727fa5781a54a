"""Write-then-rename helpers: no output is ever visible half-written.

Every file the package produces goes to a temporary name in the same directory and is renamed into
place with :func:`os.replace` once complete (rename is atomic on POSIX within one filesystem).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

TMP_PREFIX = ".tmp-"


def with_path(exc: OSError, path) -> OSError:
    """``exc`` naming ``path`` (pyarrow's write errors name no file, and may carry their errno only in text)."""
    if exc.filename is not None:
        return exc
    import re

    code = exc.errno
    if code is None:
        m = re.search(r"errno (\d+)", str(exc), re.IGNORECASE)
        code = int(m.group(1)) if m else None
    return OSError(code, os.strerror(code) if code else str(exc), str(path))


def _tmp_name(final: Path) -> Path:
    return final.with_name(f"{TMP_PREFIX}{final.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}")


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it to ``final`` only if the block succeeds."""
    final = Path(final)
    tmp = _tmp_name(final)
    try:
        yield tmp
        if tmp.is_file():
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, final)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        raise


def write_json(path: str | os.PathLike, obj) -> None:
    """Write ``obj`` as pretty JSON atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike, overwrite: bool = False, inputs=()) -> Iterator[Path]:
    """Build a directory under a temporary name and swap it in at ``final`` when the block succeeds.

    The rules of :mod:`dataselect.outputs` apply: an existing ``final`` is replaced only with
    ``overwrite=True`` and only when dataselect made it; ``final`` may not overlap ``inputs``; one
    writer at a time; a kill at any moment leaves the old or the new directory, never neither.
    """
    from dataselect.outputs import writing

    with writing(final, overwrite=overwrite, inputs=inputs, directory=True) as tmp:
        yield tmp


def remove_stale_tmp(directory: str | os.PathLike) -> int:
    """Delete leftovers of killed writers (``.tmp-*``) in ``directory``; returns how many."""
    n = 0
    for p in Path(directory).glob(TMP_PREFIX + "*"):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        n += 1
    return n
