"""Record formats and their normalisation to chat messages.

Accepted record shapes (the first that matches wins):

* ``messages``: ``[{"role": "system"|"user"|"assistant"|"tool", "content": str}, ...]`` (open-instruct,
  Tulu, OpenAI); an assistant message may carry OpenAI ``tool_calls`` (its content may then be null);
  ``function`` and ``ipython`` messages are tool results too.
* ``conversations``: ShareGPT ``[{"from": "system"|"human"|"gpt"|"function_call"|"observation"|"tool",
  "value": str}, ...]`` (glaive / LLaMA-Factory tool calls)
* Alpaca: ``instruction`` (+ optional ``input``) and ``output``, with optional ``history`` (earlier
  turns, ``[[prompt, response], ...]`` as LLaMA-Factory stores multi-turn data)
* ``prompt`` / ``completion``
* ``prompt_text`` / ``label_text``: text in its final form (``dataselect queries``)

Alpaca and ShareGPT records may carry a ``system`` field (the first turn), and a ``tools`` field
(tool definitions, string or JSON). Tool use is kept, never dropped: open-instruct's Tulu template
has no tool role and silently drops such turns, so dataselect follows open-instruct's own tool
rendering (its OLMo templates) inside the Tulu format: tool definitions are appended to the system
turn as ``<functions>...</functions>``; a tool call (ShareGPT ``function_call``, OpenAI
``tool_calls``) is an assistant turn ending in ``<function_calls>...</function_calls>`` (the calls as
JSON); a tool result (``observation``, ``tool``, ``function``) is a turn of its own, role ``tool``,
rendered ``<|tool|>\n...`` and, like user turns, not part of the response.

Each becomes a list of ``{"role", "content"}`` dicts. ``id`` is kept when present (string or
integer; two records with the same id are an error), otherwise a stable hash of the messages is
used (an exact duplicate of an earlier record gets ``HASH-ROW``); ``source`` (or ``dataset``) is kept.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

ROLES = ("system", "user", "assistant", "tool")
MESSAGE_ROLES = {"system": "system", "user": "user", "assistant": "assistant", "tool": "tool", "function": "tool",
                 "ipython": "tool", "observation": "tool"}
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant",
                  "assistant": "assistant", "chatgpt": "assistant", "bing": "assistant", "bard": "assistant",
                  "function_call": "assistant", "observation": "tool", "tool": "tool", "function": "tool"}
CALL_ROLES = {"function_call"}  # ShareGPT tags whose value is a tool call (JSON text)


def function_calls(calls: str) -> str:
    return "<function_calls>" + calls + "</function_calls>"


def _json_text(value) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


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
    record_hash: int = 0  # xxh3-64 of the parsed record (pool.identity), set for valid rows


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
        calls = turn.get("tool_calls")
        if calls is not None:  # OpenAI: the assistant's tool calls, content may be null
            if not isinstance(calls, list) or not all(isinstance(c, dict) for c in calls):
                raise RecordError(f"{key}[{i}].tool_calls must be a list of objects")
            named = [c.get("function", c) for c in calls]
            text = (text or "") + function_calls(json.dumps(named, ensure_ascii=False))
        if not isinstance(text, str):
            raise RecordError(f"{key}[{i}].{text_key} must be a string, got {type(text).__name__}")
        if role.lower() in CALL_ROLES:
            text = function_calls(text)
        out.append({"role": role_map[role.lower()], "content": text})
    return out


def _system_and_tools(rec: dict, msgs: list[dict]) -> list[dict]:
    """A record-level ``system`` field becomes the first turn (unless the turns start with one);
    ``tools`` definitions are appended to the system turn, as open-instruct's OLMo templates do."""
    system = rec.get("system")
    if system is not None and not isinstance(system, str):
        raise RecordError(f"field 'system' must be a string, got {type(system).__name__}")
    if system and not (msgs and msgs[0]["role"] == "system"):
        msgs = [{"role": "system", "content": system}, *msgs]
    tools = rec.get("tools")
    if tools not in (None, "", [], {}):
        block = "<functions>" + _json_text(tools) + "</functions>"
        if msgs and msgs[0]["role"] == "system":
            msgs = [{"role": "system", "content": (msgs[0]["content"] + " " if msgs[0]["content"] else "") + block},
                    *msgs[1:]]
        else:
            msgs = [{"role": "system", "content": block}, *msgs]
    return msgs


def _history(rec: dict) -> list[dict]:
    """Alpaca ``history``: earlier turns as ``[[prompt, response], ...]`` (LLaMA-Factory)."""
    hist = rec.get("history")
    if hist is None:
        return []
    if not isinstance(hist, list):
        raise RecordError(f"field 'history' must be a list of [prompt, response] pairs, got {type(hist).__name__}")
    out = []
    for i, pair in enumerate(hist):
        if (not isinstance(pair, (list, tuple)) or len(pair) != 2
                or not all(isinstance(x, str) for x in pair)):
            raise RecordError(f"history[{i}] must be a [prompt, response] pair of strings")
        out += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
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
    # Parquet and datasets give every record every column of the pool, null where it has none
    rec = {k: v for k, v in rec.items() if v is not None}
    if "prompt_text" in rec:
        msgs = _as_is(rec, require_response)
    elif "messages" in rec:
        msgs = _system_and_tools(rec, _turns(rec["messages"], "messages", "role", "content", MESSAGE_ROLES))
    elif "conversations" in rec:
        msgs = _system_and_tools(rec, _turns(rec["conversations"], "conversations", "from", "value", SHAREGPT_ROLES))
    elif "instruction" in rec:
        instruction = _str_field(rec, "instruction")
        extra = _str_field(rec, "input", required=False)
        user = instruction if not extra.strip() else f"{instruction}\n\n{extra}"
        msgs = [*_history(rec), {"role": "user", "content": user}]
        output = _str_field(rec, "output", required=require_response)
        if output or "output" in rec:
            msgs.append({"role": "assistant", "content": output})
        msgs = _system_and_tools(rec, msgs)
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
