"""Where each record of a plain JSONL file starts, found with numpy instead of a Python line loop.

A record is a non-blank line (as :class:`dataselect.pool.PoolReader` counts them). The file is
read in chunks into one reused buffer (memory stays at the chunk size, however big the pool) and
scanned for newlines; a line is blank when it holds only whitespace (checked in Python only for the
rare lines that start with whitespace).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

_CHUNK = 1 << 26  # 64 MiB of the file per numpy pass
_WS = b" \t\r\n\f\v"


def record_offsets(path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(start byte, length without the newline, 1-based line number) of every record of ``path``."""
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        z = np.zeros(0, np.int64)
        return z, z, z
    buf = np.empty(min(_CHUNK, size), dtype=np.uint8)
    newlines, heads = [], []  # newline positions; the first byte of the line after each
    with open(path, "rb") as fh:
        lo, pending = 0, False  # pending: the last chunk ended in a newline, its next line starts here
        while lo < size:
            got = fh.readinto(memoryview(buf))
            chunk = buf[:got]
            if pending:
                heads[-1][-1] = chunk[0]
            nl = np.flatnonzero(chunk == 10)
            head = np.full(len(nl), 32, dtype=np.uint8)  # a space: no line follows (end of file)
            inside = nl + 1 < got
            head[inside] = chunk[nl[inside] + 1]
            newlines.append(nl + lo)
            heads.append(head)
            pending = bool(len(nl)) and int(nl[-1]) == got - 1
            lo += got
        ends = np.concatenate(newlines).astype(np.int64)
        if not len(ends) or ends[-1] != size - 1:
            ends = np.append(ends, size)  # a last line without a newline
        starts = np.concatenate([[0], ends[:-1] + 1]).astype(np.int64)
        first = np.frombuffer(os.pread(fh.fileno(), 1, 0), np.uint8)
        line_heads = np.concatenate([first, *heads])[:len(starts)]
        lengths = ends - starts
        line_heads[lengths == 0] = 32
        maybe_blank = np.flatnonzero(np.isin(line_heads, np.frombuffer(_WS, np.uint8)))
        blank = np.zeros(len(starts), dtype=bool)
        for i in maybe_blank.tolist():
            blank[i] = not os.pread(fh.fileno(), int(lengths[i]), int(starts[i])).strip()
    keep = ~blank
    return starts[keep], lengths[keep], (np.flatnonzero(keep) + 1).astype(np.int64)
