"""What one model call receives: the plan, then its items oldest first (pages at their tier, turns
as raw text), and the chat template that turns them into a prompt.

The template is DeepSeek-OCR's "deepseek" conversation format, with pages spliced where they belong:

    <BOS>
    for each item of the context, oldest first:
      a page  -> "<image>" x placeholder_count(tier)  "\\n"
      a user, system or tool turn -> "<|User|>: " + label + [name + ": "] + content + "\\n\\n"
                   (label: "" for user, "System: " / "Tool: " for the others; the speaker's name
                    when the turn has one)
      an assistant turn -> "<|Assistant|>: " + [name + ": "] + content + "<｜end▁of▁sentence｜>"
    the new message, if any -> "<|User|>: " + message + "\\n\\n"
    "<|Assistant|>:"                                  (generation starts here)

`optimem.prompt` turns these pieces into token ids and the vision-token rows that fill the pages'
placeholders; the pieces are here, beside the items, so that one place says what the model sees.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from optimem.policies import Plan

    from optimem.pages import PageViews

from optimem.records import spoken_text

USER, ASSISTANT = "<|User|>", "<|Assistant|>"
_LABEL = {"user": "", "system": "System: ", "tool": "Tool: "}


@dataclass(frozen=True)
class ContextTurn:
    id: int
    role: str
    content: str
    tokens: int  # as the prompt carries it (the speaker's name included)
    name: str | None = None  # who spoke, when the conversation names its speakers
    # a long turn's tail: `content` is its normalised text from this character on, the earlier part
    # is on the pages just before it (0: the whole turn, as written)
    start: int = 0


@dataclass(eq=False)
class ContextPage:
    index: int
    tier: str
    turns: range
    tokens: int  # placeholder tokens in the model's context
    text_tokens: int
    content_hash: str
    views: PageViews | None = field(repr=False, default=None)
    embeds: Any = field(repr=False, default=None)  # [tokens, hidden] with a model backend

    def master(self):
        """The page as rendered (the largest tier's resolution); views derive from it."""
        return self._views().master(self.index, self.content_hash)

    def image(self):
        """The page as the backend's encoder sees it at this tier (cached per page and tier)."""
        return self._views().view(self.index, self.content_hash, self.tier)

    @property
    def png(self) -> bytes:
        """The stored master PNG."""
        return self._views().png(self.index)

    def _views(self) -> PageViews:
        if self.views is None:
            raise ValueError(f"page {self.index} was built without page views; get it from OpticalMemory.context()")
        return self.views


@dataclass
class Context:
    plan: Plan
    items: list[ContextPage | ContextTurn]  # what the model receives, oldest first
    new_message: str | None = None

    @property
    def pages(self) -> list[ContextPage]:
        return [i for i in self.items if isinstance(i, ContextPage)]

    @property
    def turns(self) -> list[ContextTurn]:
        return [i for i in self.items if isinstance(i, ContextTurn)]

    def images(self) -> list[Any]:
        """Every shown page's tier image, in order (`ContextPage.image()`), the missing ones derived
        in parallel."""
        pages = self.pages
        if not pages:
            return []
        return pages[0]._views().many([(p.index, p.content_hash, p.tier) for p in pages])

    def pieces(self) -> Iterator[tuple[str, Any]]:
        """The prompt after BOS as ("text", str), ("page", ContextPage) and ("eos", None) pieces."""
        for item in self.items:
            if isinstance(item, ContextPage):
                yield "page", item
                yield "text", "\n"
            elif item.role == "assistant":
                yield "text", f"{ASSISTANT}: {spoken_text(item.content, item.name)}"
                yield "eos", None
            else:
                yield "text", f"{USER}: {_LABEL.get(item.role, '')}{spoken_text(item.content, item.name)}\n\n"
        if self.new_message is not None:
            yield "text", f"{USER}: {self.new_message}\n\n"
        yield "text", f"{ASSISTANT}:"


__all__ = ["ASSISTANT", "Context", "ContextPage", "ContextTurn", "USER"]
