"""From messages to token ids: the text format a sample is embedded (and scored) in.

``tulu`` (default; what the RDS+ paper used with base models, the open-instruct format)::

    <|system|>\\n{content.strip()}\\n
    <|user|>\\n{content.strip()}\\n
    <|assistant|>\\n{content.strip()}{EOS}\\n
    <|tool|>\\n{content.strip()}\\n   (tool results; see dataselect.pool.records)

joined, stripped, and tokenised. ``bos="auto"`` (default) tokenises with the tokenizer's own
special tokens, as the RDS+ paper's code does (``tokenizer(text)``): Llama tokenizers put their BOS
in front, tokenizers that add none (Qwen) get none. ``bos="always"`` tokenises without them and puts
exactly one BOS id in front (when the tokenizer has a BOS token). Encoder models (no causal LM) have
no EOS and get their own special tokens (``[CLS] ... [SEP]`` for BERT) either way.

``chat`` renders with the tokenizer's own chat template and tokenises it as rendered.

Response tokens (the ones a loss counts): the tokens of each assistant turn's content and the EOS
right after it. Role markers (``<|assistant|>\\n``), system and user turns, BOS, the newline after
EOS and any chat-template tokens are masked. A token counts when its character span lies inside an
assistant content span (tokens straddling the boundary count if they start inside).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TEMPLATES = ("tulu", "chat")
BOS_MODES = ("auto", "always")
_TAGS = {"system": "<|system|>\n", "user": "<|user|>\n", "assistant": "<|assistant|>\n", "tool": "<|tool|>\n"}


@dataclass
class Encoded:
    """One tokenised sequence: ``ids`` (int32), ``response`` (bool, same length), ``truncated``."""

    ids: np.ndarray
    response: np.ndarray
    truncated: bool


def render_tulu(messages: list[dict], eos: str) -> tuple[str, list[tuple[int, int]]]:
    """Return the Tulu-format text and the (start, end) character spans of assistant content + EOS."""
    parts, spans, pos = [], [], 0
    for m in messages:
        tag = _TAGS[m["role"]]
        content = m["content"].strip()
        if m["role"] == "assistant":
            piece = tag + content + eos + "\n"
            spans.append((pos + len(tag), pos + len(tag) + len(content) + len(eos)))
        else:
            piece = tag + content + "\n"
        parts.append(piece)
        pos += len(piece)
    text = "".join(parts)
    stripped = text.rstrip()  # leading text is a tag, so only the end can change
    return stripped, [(a, min(b, len(stripped))) for a, b in spans]


def render_chat(messages: list[dict], tokenizer) -> tuple[str, list[tuple[int, int]]]:
    """Render with the tokenizer's chat template; assistant spans found by searching their content in order."""
    if not getattr(tokenizer, "chat_template", None):
        from dataselect.errors import DataselectError

        raise DataselectError("--template chat: this tokenizer has no chat template; use --template tulu")
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    spans, pos = [], 0
    for m in messages:
        content = m["content"].strip()
        start = text.find(content, pos) if content else -1
        if start < 0:
            continue
        end = start + len(content)
        if tokenizer.eos_token and text.startswith(tokenizer.eos_token, end):
            end += len(tokenizer.eos_token)
        if m["role"] == "assistant":
            spans.append((start, end))
        pos = end
    return text, spans


class Formatter:
    """Turns messages into :class:`Encoded` sequences for one tokenizer, template and length limit."""

    def __init__(self, tokenizer, template: str = "tulu", max_length: int = 2048, causal: bool = True,
                 bos: str = "auto"):
        if template not in TEMPLATES:
            raise ValueError(f"unknown template {template!r}; choose from {', '.join(TEMPLATES)}")
        if bos not in BOS_MODES:
            raise ValueError(f"unknown bos mode {bos!r}; choose from {', '.join(BOS_MODES)}")
        self.bos = bos
        if not getattr(tokenizer, "is_fast", False):
            from dataselect.errors import DataselectError

            raise DataselectError("a fast (Rust) tokenizer is needed for token offsets; this model ships "
                                  "only a slow one")
        self.tokenizer = tokenizer
        self.template = template
        self.max_length = max_length
        self.causal = causal
        self.bos_id = tokenizer.bos_token_id if causal else None
        self.eos = (tokenizer.eos_token or "") if causal else ""

    def render(self, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
        if self.template == "chat":
            return render_chat(messages, self.tokenizer)
        return render_tulu(messages, self.eos)

    def encode_as_is(self, msgs: list[dict], response_only: bool = False) -> Encoded:
        """A ``prompt_text``/``label_text`` record, as the RDS+ paper builds its queries
        (``construct_test_sample``): the prompt tokenised with the tokenizer's special tokens
        (``bos="always"``: exactly one BOS instead) and cut to ``max_length``; the label plus EOS
        tokenised without them and cut to ``max_length``; the two joined. The label is the response."""
        tok = self.tokenizer
        limit = int(msgs[0].get("as_is") or 0) or self.max_length
        label = msgs[1]["content"] if len(msgs) > 1 else None
        prompt = msgs[0]["content"]
        if response_only:
            prompt_ids, full_prompt = [], 0
        elif self.bos == "auto" or not self.causal:  # the paper's call
            prompt_ids = tok(prompt, max_length=limit, truncation=True)["input_ids"]
            full_prompt = len(tok(prompt)["input_ids"])
        else:
            prompt_ids = [self.bos_id] * (self.bos_id is not None) + tok(prompt, add_special_tokens=False)["input_ids"]
            full_prompt, prompt_ids = len(prompt_ids), prompt_ids[:limit]
        label_ids, full_label = [], 0
        if label is not None:
            label_ids = tok(label + self.eos, max_length=limit, truncation=True, add_special_tokens=False)["input_ids"]
            full_label = len(tok(label + self.eos, add_special_tokens=False)["input_ids"])
        truncated = full_prompt > len(prompt_ids) or full_label > len(label_ids)
        prompt_ids, label_ids = list(prompt_ids), list(label_ids)
        resp = np.array([False] * len(prompt_ids) + [True] * len(label_ids), dtype=bool)
        return Encoded(ids=np.asarray(prompt_ids + label_ids, dtype=np.int32), response=resp, truncated=truncated)

    def encode_many(self, message_lists: list[list[dict]], response_only: bool = False) -> list[Encoded]:
        """Tokenise a batch of samples. ``response_only`` keeps just the assistant turns (for IFD)."""
        if any(msgs and "as_is" in msgs[0] for msgs in message_lists):
            plain = [i for i, msgs in enumerate(message_lists) if not (msgs and "as_is" in msgs[0])]
            done = dict(zip(plain, self.encode_many([message_lists[i] for i in plain], response_only), strict=True)
                        ) if plain else {}
            return [done[i] if i in done else self.encode_as_is(msgs, response_only)
                    for i, msgs in enumerate(message_lists)]
        rendered = []
        for msgs in message_lists:
            if response_only:
                msgs = [m for m in msgs if m["role"] == "assistant"]
            rendered.append(self.render(msgs))
        texts = [t for t, _ in rendered]
        # the tokenizer's own special tokens: encoders always; causal LMs with bos="auto" (tulu)
        special = self.template == "tulu" and (not self.causal or self.bos == "auto")
        enc = self.tokenizer(texts, add_special_tokens=special, return_offsets_mapping=True,
                             return_attention_mask=False, truncation=False)
        out = []
        for (_, spans), ids, offsets in zip(rendered, enc["input_ids"], enc["offset_mapping"], strict=True):
            ids = np.asarray(ids, dtype=np.int64)
            resp = np.zeros(len(ids), dtype=bool)
            if spans:
                starts = np.fromiter((o[0] for o in offsets), dtype=np.int64, count=len(ids))
                ends = np.fromiter((o[1] for o in offsets), dtype=np.int64, count=len(ids))
                real = ends > starts
                for a, b in spans:
                    resp |= real & (starts >= a) & (starts < b)
            if self.bos_id is not None and self.template == "tulu" and self.bos == "always":
                if len(ids) and ids[0] == self.bos_id:  # a tokenizer that adds BOS by itself
                    ids, resp = ids[1:], resp[1:]
                ids = np.concatenate([[self.bos_id], ids])
                resp = np.concatenate([[False], resp])
            truncated = len(ids) > self.max_length
            if truncated:
                ids, resp = ids[: self.max_length], resp[: self.max_length]
            out.append(Encoded(ids=ids.astype(np.int32), response=resp, truncated=truncated))
        return out
