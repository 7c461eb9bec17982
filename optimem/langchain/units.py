"""Messages → units: what compresses together, its identity, and its text as drawn on a page.

A unit is the smallest piece of a conversation that may move between text and pages: a human
message, a plain AI message, or an AI message with tool calls together with the ToolMessages that
answer them (a provider rejects a tool call without its result and a result without its call, so
they are never split). Reasoning blocks are not drawn on pages: they are the model's scratch work,
and providers do not take them back on old turns.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, ToolMessage

ROLE = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool", "function": "tool", "chat": "user",
        "AIMessageChunk": "assistant", "HumanMessageChunk": "user"}
_SKIP_BLOCKS = {"reasoning", "thinking", "redacted_thinking"}


@dataclass(frozen=True)
class Unit:
    messages: tuple[BaseMessage, ...]

    @property
    def role(self) -> str:
        return ROLE.get(self.messages[0].type, "user")

    @property
    def name(self) -> str | None:
        """Who spoke (the first message's `name`, as LangChain carries it), drawn in the page header."""
        name = self.messages[0].name
        return name if isinstance(name, str) and name.strip() else None

    def key(self) -> str:
        """Identity: the message ids when every message has one (LangGraph gives each an id), else a
        hash of the messages' content, so a unit is recognised again on the next call."""
        h = hashlib.sha1()
        for m in self.messages:
            if m.id:
                h.update(b"i" + m.id.encode())
            else:
                h.update(b"c" + _digest(m))
        return h.hexdigest()[:24]

    def text(self) -> str:
        """The unit as drawn on a page: its words, tool calls as `name(args)`, results after them."""
        return "\n".join(x for _, parts in self.parts() for x in parts)

    def parts(self) -> list[tuple[BaseMessage, list[str]]]:
        """Each message with its pieces of `text()` (joined by newlines, in order): where a long unit's
        drawn text falls in its messages."""
        out: list[tuple[BaseMessage, list[str]]] = []
        names: dict[str, str] = {}
        for m in self.messages:
            parts: list[str] = []
            if isinstance(m, ToolMessage):
                name = m.name or names.get(m.tool_call_id, "tool")
                out.append((m, [f"[{name} result] {content_text(m)}"]))
                continue
            body = content_text(m)
            if body:
                parts.append(body)
            for tc in getattr(m, "tool_calls", None) or []:
                names[tc.get("id") or ""] = tc.get("name", "tool")
                args = json.dumps(tc.get("args", {}), ensure_ascii=False, sort_keys=True)
                parts.append(f"[calls {tc.get('name', 'tool')}] {args}")
            out.append((m, parts))
        return out


def _digest(m: BaseMessage) -> bytes:
    payload = {"t": m.type, "c": m.content, "tc": getattr(m, "tool_calls", None) or None,
               "id": getattr(m, "tool_call_id", None)}
    return hashlib.sha1(json.dumps(payload, sort_keys=True, default=str, ensure_ascii=False).encode()).digest()


def content_text(m: BaseMessage) -> str:
    """A message's text content: text blocks joined, images as a marker, reasoning left out."""
    c = m.content
    if isinstance(c, str):
        return c
    out = []
    for b in c:
        if isinstance(b, str):
            out.append(b)
        elif isinstance(b, dict):
            kind = b.get("type")
            if kind == "text":
                out.append(str(b.get("text", "")))
            elif kind in _SKIP_BLOCKS:
                continue
            elif kind in ("image", "image_url"):
                out.append("[image]")
            elif kind in ("file", "audio", "video"):
                out.append(f"[{kind}]")
    return "\n".join(x for x in out if x)


def group_units(messages: Sequence[BaseMessage]) -> list[Unit]:
    """Split a conversation (system prompt already removed) into units, oldest first.

    ToolMessages join the latest AI message whose calls they answer; a ToolMessage with no such call
    (a history cut by someone else) becomes a unit of its own rather than being dropped.
    """
    units: list[list[BaseMessage]] = []
    open_calls: set[str] = set()
    for m in messages:
        if isinstance(m, ToolMessage):
            if units and m.tool_call_id in open_calls:
                units[-1].append(m)
                open_calls.discard(m.tool_call_id)
                continue
            units.append([m])
            continue
        units.append([m])
        open_calls = {tc.get("id") for tc in (getattr(m, "tool_calls", None) or []) if tc.get("id")} if isinstance(m, AIMessage) else set()
    return [Unit(tuple(u)) for u in units]


def pending_calls(unit: Unit) -> list[str]:
    """Tool call ids of the unit that have no result yet."""
    answered = {m.tool_call_id for m in unit.messages if isinstance(m, ToolMessage)}
    return [tc["id"] for m in unit.messages for tc in (getattr(m, "tool_calls", None) or []) if tc.get("id") not in answered]


_NOT_COUNTED = {"image", "image_url", *_SKIP_BLOCKS}


def strip_images(m: BaseMessage) -> BaseMessage:
    """The message as a text counter should see it: without image blocks (priced apart, by size and
    detail) and without reasoning blocks (the provider packages leave them out of the request they
    build, and langchain-openai's counter rejects them)."""
    if isinstance(m.content, str) or not any(isinstance(b, dict) and b.get("type") in _NOT_COUNTED for b in m.content):
        return m
    return m.model_copy(update={"content": [b for b in m.content if not (isinstance(b, dict) and b.get("type") in _NOT_COUNTED)]})


def image_blocks(m: BaseMessage) -> list[dict[str, Any]]:
    if isinstance(m.content, str):
        return []
    return [b for b in m.content if isinstance(b, dict) and b.get("type") in ("image", "image_url")]
