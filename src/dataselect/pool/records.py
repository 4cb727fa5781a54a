"""Record formats and their normalisation to chat messages.

Accepted record shapes (the first that matches wins):

* ``messages``: ``[{"role": "system"|"user"|"assistant", "content": str}, ...]`` (open-instruct, Tulu)
* ``conversations``: ShareGPT ``[{"from": "system"|"human"|"gpt", "value": str}, ...]``
* Alpaca: ``instruction`` (+ optional ``input``) and ``output``
* ``prompt`` / ``completion``

Each becomes a list of ``{"role", "content"}`` dicts. ``id`` is kept when present (string or
integer; two records with the same id are an error), otherwise a stable hash of the messages is
used (an exact duplicate of an earlier record gets ``HASH-ROW``); ``source`` (or ``dataset``) is kept.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant",
                  "assistant": "assistant", "chatgpt": "assistant", "bing": "assistant", "bard": "assistant"}


class RecordError(ValueError):
    """A record that cannot be normalised; the reader adds file and line to the message."""


@dataclass
class PoolRow:
    """One pool record: ``row`` is its 0-based position among the pool's records."""

    row: int
    id: str
    messages: list[dict[str, str]]
    source: str | None = None
    task: str | None = None
    where: str = ""
    record: Any = field(default=None, repr=False)
    error: str | None = None


def content_id(messages: list[dict[str, str]]) -> str:
    """Stable id of a record without one: first 16 hex digits of sha256 over its canonical messages."""
    canon = json.dumps(messages, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()[:16]


def _str_field(rec: dict, key: str, required: bool = True) -> str:
    val = rec.get(key)
    if val is None:
        if required:
            raise RecordError(f"field '{key}' is missing")
        return ""
    if not isinstance(val, str):
        raise RecordError(f"field '{key}' must be a string, got {type(val).__name__}")
    return val


def _turns(items: Any, key: str, role_key: str, text_key: str, role_map: dict[str, str]) -> list[dict]:
    if not isinstance(items, list):
        raise RecordError(f"'{key}' must be a list of turns, got {type(items).__name__}")
    if not items:
        raise RecordError(f"'{key}' is empty")
    out = []
    for i, turn in enumerate(items):
        if not isinstance(turn, dict):
            raise RecordError(f"{key}[{i}] must be an object, got {type(turn).__name__}")
        role = turn.get(role_key)
        if not isinstance(role, str) or role.lower() not in role_map:
            raise RecordError(f"{key}[{i}] has unknown role {role!r} (expected one of "
                              f"{', '.join(sorted(set(role_map)))})")
        text = turn.get(text_key)
        if not isinstance(text, str):
            raise RecordError(f"{key}[{i}].{text_key} must be a string, got {type(text).__name__}")
        out.append({"role": role_map[role.lower()], "content": text})
    return out


def _as_is(rec: dict, require_response: bool) -> list[dict]:
    """``prompt_text``/``label_text``: text in its final form, tokenised as it is, prompt and label
    apart, each cut to ``max_length`` tokens (the RDS+ paper's queries; ``dataselect queries`` writes
    them). The messages carry ``as_is`` = that length."""
    prompt = _str_field(rec, "prompt_text")
    label = _str_field(rec, "label_text", required=require_response)
    limit = rec.get("max_length", 0)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise RecordError(f"'max_length' must be a non-negative integer, got {limit!r}")
    msgs = [{"role": "user", "content": prompt, "as_is": limit}]
    if label or "label_text" in rec:
        msgs.append({"role": "assistant", "content": label, "as_is": limit})
    return msgs


def normalize_record(rec: Any, require_response: bool = True) -> list[dict[str, str]]:
    """Return the record as chat messages, or raise :class:`RecordError` saying what is wrong.

    With ``require_response`` (pools), a record must have an assistant turn with non-empty content;
    query sets may hold prompts only.
    """
    if not isinstance(rec, dict):
        raise RecordError(f"record must be a JSON object, got {type(rec).__name__}")
    if "prompt_text" in rec:
        msgs = _as_is(rec, require_response)
    elif "messages" in rec:
        msgs = _turns(rec["messages"], "messages", "role", "content", {r: r for r in ROLES})
    elif "conversations" in rec:
        msgs = _turns(rec["conversations"], "conversations", "from", "value", SHAREGPT_ROLES)
    elif "instruction" in rec:
        instruction = _str_field(rec, "instruction")
        extra = _str_field(rec, "input", required=False)
        user = instruction if not extra.strip() else f"{instruction}\n\n{extra}"
        msgs = [{"role": "user", "content": user}]
        output = _str_field(rec, "output", required=require_response)
        if output or "output" in rec:
            msgs.append({"role": "assistant", "content": output})
    elif "prompt" in rec:
        msgs = [{"role": "user", "content": _str_field(rec, "prompt")}]
        completion = _str_field(rec, "completion", required=require_response)
        if completion or "completion" in rec:
            msgs.append({"role": "assistant", "content": completion})
    else:
        keys = ", ".join(sorted(map(str, rec))[:8]) or "none"
        raise RecordError(f"unknown record format (keys: {keys}); expected 'messages', 'conversations', "
                          "'instruction'/'output' or 'prompt'/'completion'")
    if not any(m["content"].strip() for m in msgs if m["role"] != "assistant"):
        raise RecordError("record has no non-empty system or user turn")
    if require_response and not any(m["role"] == "assistant" and m["content"].strip() for m in msgs):
        raise RecordError("record has no assistant turn with content")
    return msgs


def record_id(rec: dict, messages: list[dict[str, str]]) -> str:
    """The record's own ``id`` (string or integer), else :func:`content_id`."""
    rid = rec.get("id")
    if rid is None:
        return content_id(messages)
    if isinstance(rid, bool) or not isinstance(rid, (str, int)):
        raise RecordError(f"field 'id' must be a string or integer, got {type(rid).__name__}")
    rid = str(rid)
    if not rid:
        raise RecordError("field 'id' is empty")
    return rid


def record_source(rec: dict) -> str | None:
    for key in ("source", "dataset"):
        val = rec.get(key)
        if isinstance(val, str) and val:
            return val
    return None
