"""Where dataselect may write: its own outputs only, one writer at a time, never half-way.

Every command's output path goes through :func:`claim` and :func:`writing`:

* **Ownership.** An output that is, contains or sits inside one of the command's inputs is refused.
  An existing output is replaced only with ``--overwrite``, and only when dataselect made it,
  recognised by its own marker (:func:`made_by_dataselect`): a store's ``manifest.json``, a
  selection's ``selection.json`` + ``selection.arrow``, an index's ``index.json``, a report's
  generator tag, a figure's PNG metadata, an export's provenance field. Anything else is refused in
  one line, ``--overwrite`` or not.
* **One writer.** :func:`writing` holds an exclusive ``flock`` on ``PARENT/.dataselect-lock.NAME``,
  PARENT and NAME those of the output's real path (a link to an output shares its lock), for the
  whole write; a second writer is refused in one line naming the holder (pid, command, start). The
  lock file is removed by its holder on release (a waiter that opened it meanwhile sees it gone
  and takes a fresh one), so no lock file outlives its writer.
* **Crash-safe replacement.** A new output is built under ``.tmp-NAME.new.*``, renamed to
  ``.tmp-NAME.ready.*`` once complete, then swapped in: the old output is moved to
  ``.tmp-NAME.old.*``, the ready one to NAME, and the old one deleted. A kill at any moment leaves
  either the old or the new output reachable: the next writer of NAME (under the lock) rolls a
  half-done swap forward (a ``ready`` one exists) or back (only an ``old`` one), and deletes every
  other ``.tmp-NAME.*`` left by killed writers.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import json
import os
import re
import shutil
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

from dataselect.errors import DataselectError

TMP = ".tmp-"
LOCK = ".dataselect-lock."
HTML_MARK = "<meta name='generator' content='dataselect'"
PNG_MARK = b"dataselect"


def made_by_dataselect(path: Path) -> str | None:
    """What dataselect output ``path`` is ("store", "selection", "index", "artefact", "report",
    "figure", "export", "empty" folder), or None when dataselect did not make it (or cannot tell)."""
    path = Path(path)
    if path.is_symlink():
        return None
    if path.is_dir():
        names = {p.name for p in path.iterdir()}
        if not names:
            return "empty"
        from dataselect.store.manifest import is_store

        if is_store(path):
            return "store"
        if {"selection.json", "selection.arrow"} <= names:
            return "selection"
        if "index.json" in names:
            return "index"
        from dataselect.store.artefacts import is_artefact

        if is_artefact(path):
            return "artefact"
        return None
    if not path.is_file():
        return None
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
        if path.suffix == ".html" and HTML_MARK.encode() in head:
            return "report"
        if path.suffix == ".png" and head.startswith(b"\x89PNG") and PNG_MARK in head:
            return "figure"
        if path.name.endswith((".jsonl", ".jsonl.gz")):
            opener = gzip.open if path.name.endswith(".gz") else open
            with opener(path, "rt", encoding="utf-8") as fh:
                first = fh.readline()
            if "dataselect" in json.loads(first):
                return "export"
    except (OSError, ValueError, EOFError):
        return None
    return None


def _overlaps(a: Path, b: Path) -> bool:
    return a == b or a in b.parents or b in a.parents


def check_inputs(out, inputs: Iterable = (), what: str = "output") -> None:
    """Refuse an output that is, contains or sits inside one of ``inputs``."""
    target = Path(out).resolve()
    for inp in inputs:
        if inp is None or not isinstance(inp, (str, os.PathLike)):  # e.g. a hub pool: nothing local to protect
            continue
        src = Path(inp).resolve()
        if _overlaps(target, src):
            raise DataselectError(f"{out}: the {what} would {'replace' if target == src else 'overlap'} the input "
                                  f"{inp}; choose an --out outside the inputs")


def claim(out, *, overwrite: bool, inputs: Iterable = (), what: str = "output") -> Path:
    """Check that dataselect may write ``out`` (module docstring); returns it as a Path."""
    out = Path(out)
    check_inputs(out, inputs, what)
    if out.exists() or out.is_symlink():
        kind = made_by_dataselect(out)
        if kind == "empty":
            return out
        if not overwrite:
            raise DataselectError(f"{out} already exists; pass --overwrite to replace it")
        if kind is None:
            raise DataselectError(f"{out} exists and was not made by dataselect; refusing to replace it even with "
                                  "--overwrite (move it away, or choose another --out)")
    return out


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _lock_path(out) -> Path:
    """The lock file of output ``out``: named after its real path, so a link to an output shares its lock."""
    real = Path(os.path.realpath(out))
    return real.parent / f"{LOCK}{real.name}"


_HELD: set[Path] = set()  # locks taken with reentrant=True: taking one of them again in this process is a no-op


@contextlib.contextmanager
def lock(out, reentrant: bool = False, wait: bool = False) -> Iterator[None]:
    """Hold the exclusive lock of output ``out`` (module docstring); the lock file is removed on release.

    ``reentrant``: the command holds its output's lock from its first step to its write, and the
    write's own ``lock(out)`` inside it then passes (``run`` does this). ``wait``: block until the
    holder releases it instead of refusing (a shared cache another process is filling)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    path = _lock_path(out)
    if path in _HELD:
        yield
        return
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 1024, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise DataselectError(f"{out} is being written by {holder}; wait for it to finish or choose another "
                                  "--out") from None
        try:  # the file may have been removed by its last holder between our open and our lock: retry
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        command = " ".join(["dataselect", *sys.argv[1:]])[:200]
        info = f"dataselect pid {os.getpid()} (`{command}`, since {time.strftime('%Y-%m-%d %H:%M:%S')})"
        os.ftruncate(fd, 0)
        os.pwrite(fd, info.encode(), 0)
        if reentrant:
            _HELD.add(path)
        yield
    finally:
        _HELD.discard(path)
        with contextlib.suppress(OSError):
            os.unlink(path)  # while still holding it: a waiter that opened it sees it gone and retries
        os.close(fd)


def held_by(out) -> str | None:
    """Who holds the lock of ``out`` right now (None when nobody does)."""
    path = _lock_path(out)
    if not path.exists():
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return os.pread(fd, 1024, 0).decode("utf-8", "replace").strip() or "another process"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _temps(out: Path) -> list[tuple[str, Path]]:
    """Temporary entries of ``out``'s writers: ``.tmp-NAME.ROLE.PID.HEX8``, and older writers'
    ``.tmp-NAME.PID.HEX8`` when that process is gone. Exact names only: ``sel.v2``'s are not ``sel``'s."""
    ours = re.compile(rf"{re.escape(TMP + out.name)}\.(new|ready|old)\.\d+\.[0-9a-f]{{8}}")
    legacy = re.compile(rf"{re.escape(TMP + out.name)}\.(\d+)\.[0-9a-f]{{8}}")
    found = []
    if out.parent.is_dir():
        for p in out.parent.iterdir():
            if m := ours.fullmatch(p.name):
                found.append((m.group(1), p))
            elif (m := legacy.fullmatch(p.name)) and not _pid_alive(int(m.group(1))):
                found.append(("legacy", p))
    return found


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def recover(out) -> list[str]:
    """Finish or roll back a replacement of ``out`` that a kill interrupted, then delete leftovers of
    killed writers. Call it holding :func:`lock`. Returns what was done, for the caller to report."""
    out = Path(out)
    done = []
    temps = _temps(out)
    if not (out.exists() or out.is_symlink()):
        ready = sorted(p for role, p in temps if role == "ready")
        old = sorted(p for role, p in temps if role == "old")
        if ready:
            os.replace(ready[-1], out)
            done.append(f"finished replacing {out} (a writer was killed mid-swap)")
        elif old:
            os.replace(old[-1], out)
            done.append(f"restored {out} (a replacement was killed before the new output was complete)")
        temps = _temps(out)
    for _, p in temps:
        _remove(p)
    if temps:
        done.append(f"removed {len(temps)} temporary file(s) of killed writers of {out}")
    return done


_PARTIAL = re.compile(rf"{re.escape(TMP)}(.+)\.new\.(\d+)\.[0-9a-f]{{8}}")


def sweep_partial_builds(folder: Path, *, locked_output: bool = False) -> int:
    """Delete, in ``folder``, temporary entries no live writer can own. One rule, two places:

    * beside outputs (the default): the partial builds (``.tmp-NAME.new.PID.*``) of killed writers of
      any output -- their process is gone and nobody holds NAME's lock. Never a ``ready`` or ``old``
      entry: those are finished by :func:`recover` of their own output.
    * inside an output whose lock the caller holds (``locked_output``: a store being written): every
      ``.tmp-*`` entry, since no other writer can be inside it.

    Returns how many were removed."""
    removed = 0
    if not folder.is_dir():
        return 0
    for p in folder.iterdir():
        if locked_output:
            if p.name.startswith(TMP):
                _remove(p)
                removed += 1
            continue
        m = _PARTIAL.fullmatch(p.name)
        if m and not _pid_alive(int(m.group(2))) and held_by(folder / m.group(1)) is None:
            _remove(p)
            removed += 1
    return removed


def _tmp(out: Path, role: str) -> Path:
    return out.with_name(f"{TMP}{out.name}.{role}.{os.getpid()}.{uuid.uuid4().hex[:8]}")


@contextlib.contextmanager
def writing(out, *, overwrite: bool = False, inputs: Iterable = (), what: str = "output",
            directory: bool = False) -> Iterator[Path]:
    """Claim and lock ``out``, yield a temporary path to build it at, and swap it in crash-safely.

    ``directory``: the temporary path is created as an empty folder; otherwise it is a file name.
    """
    out = Path(out)
    with lock(out):
        recover(out)
        sweep_partial_builds(out.parent)  # a killed export's .tmp-x.new.* beside us goes now, not when x is rewritten
        claim(out, overwrite=overwrite, inputs=inputs, what=what)
        tmp = _tmp(out, "new")
        if directory:
            tmp.mkdir()
        try:
            try:
                yield tmp
            except OSError as exc:
                raise with_path(exc, out) from exc
            if tmp.is_file():
                with open(tmp, "rb") as fh:
                    os.fsync(fh.fileno())
            ready = _tmp(out, "ready")
            os.replace(tmp, ready)
        except BaseException:
            _remove(tmp)
            raise
        old = None
        if out.exists() or out.is_symlink():
            old = _tmp(out, "old")
            os.replace(out, old)
        os.replace(ready, out)
        if old is not None:
            _remove(old)


def with_path(exc: OSError, path) -> OSError:
    """``exc`` naming ``path`` (pyarrow's write errors name no file, and may carry their errno only in text)."""
    if exc.filename is not None:
        return exc
    code = exc.errno
    if code is None:
        m = re.search(r"errno (\d+)", str(exc), re.IGNORECASE)
        code = int(m.group(1)) if m else None
    return OSError(code, os.strerror(code) if code else str(exc), str(path))


@contextlib.contextmanager
def atomic_path(final) -> Iterator[Path]:
    """Yield a temporary path beside ``final`` (``.tmp-NAME.new.PID.*``); rename it to ``final`` only if
    the block succeeds. For files inside an output the caller already holds the lock of (a store's
    shards and manifest); a killed writer's leftovers go with :func:`sweep_partial_builds`."""
    final = Path(final)
    tmp = _tmp(final, "new")
    try:
        yield tmp
        if tmp.is_file():
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, final)
    except BaseException:
        _remove(tmp)
        raise


def write_json(path, obj) -> None:
    """Write ``obj`` as pretty JSON atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


@contextlib.contextmanager
def atomic_dir(final, overwrite: bool = False, inputs=()) -> Iterator[Path]:
    """:func:`writing` of a directory: built under a temporary name, swapped in when the block succeeds."""
    with writing(final, overwrite=overwrite, inputs=inputs, directory=True) as tmp:
        yield tmp
