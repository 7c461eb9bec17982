"""LangChain integration (langchain-core).

- `OpticalChatMessageHistory`: a `BaseChatMessageHistory` on optimem's stores (SQLite or Redis), so LCEL
  code with `RunnableWithMessageHistory` persists to optimem unchanged. Messages round-trip exactly
  (LangChain's own message dicts are kept in the turn metadata).
- `OpticalCompressor`: a Runnable from a message list to the compressed list for a target provider:
  system messages and recent turns stay text; older turns become `HumanMessage`s holding a page image
  (standard multimodal block: {"type": "image", "source_type": "base64", "mime_type": "image/png"})
  after a short text label; tiers and budget chosen by `policies` in the provider's image tokens
  (`optimem.providers`). Messages that already carry non-text content (images, tool calls) pass
  through unchanged and are counted. Nothing is dropped silently: the plan is attached to the output
  (`additional_kwargs["optimem"]` of the first message) and kept as `compressor.last_plan`.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, messages_from_dict, message_to_dict
from langchain_core.runnables import RunnableConfig, RunnableSerializable

from optimem.errors import InputError
from optimem.store import Store, open_store

_ROLE = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool", "function": "tool", "chat": "user"}


class OpticalChatMessageHistory(BaseChatMessageHistory):
    def __init__(self, session_id: str, store: Store | str | None = None) -> None:
        self.session_id = session_id
        self.store = store if isinstance(store, Store) else open_store(store)

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        out = []
        for t in self.store.get_turns(self.session_id):
            lc = t.metadata.get("lc")
            out.extend(messages_from_dict([lc]) if lc else [HumanMessage(t.content) if t.role == "user" else AIMessage(t.content)])
        return out

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        rows = [{"role": _ROLE.get(m.type, "user"), "content": _text_of(m), "metadata": {"lc": message_to_dict(m)}}
                for m in messages]
        if rows:
            self.store.append_turns(self.session_id, rows)

    def clear(self) -> None:
        self.store.delete_session(self.session_id)


def _text_of(m: BaseMessage) -> str:
    if isinstance(m.content, str):
        return m.content
    return "\n".join(b.get("text", "") if isinstance(b, dict) else str(b) for b in m.content)


def _has_non_text(m: BaseMessage) -> bool:
    if getattr(m, "tool_calls", None) or m.type == "tool":
        return True
    return not isinstance(m.content, str) and any(isinstance(b, dict) and b.get("type") != "text" for b in m.content)


class OpticalCompressor(RunnableSerializable[list[BaseMessage], list[BaseMessage]]):
    """Compress a conversation for `provider` under `budget` tokens of that provider."""

    provider: str = "anthropic"
    budget: int = 8000
    recent_turns: int = 6
    last_plan: Any = None

    model_config = {"arbitrary_types_allowed": True}

    def invoke(self, input: list[BaseMessage], config: RunnableConfig | None = None, **kwargs: Any) -> list[BaseMessage]:
        from optimem.planning import page_records
        from optimem.providers import get_provider, text_tokens
        from policies import Planner, Policy, TurnInfo
        from renderers import Turn, derive_tier, render_transcript

        if not isinstance(input, list) or not all(isinstance(m, BaseMessage) for m in input):
            raise InputError("OpticalCompressor takes a list of LangChain messages")
        provider = get_provider(self.provider)
        system = [m for m in input if isinstance(m, SystemMessage)]
        convo = [m for m in input if not isinstance(m, SystemMessage)]
        if not convo:
            return list(input)
        turns = [Turn(_ROLE.get(m.type, "user"), _text_of(m)) for m in convo]
        # non-text messages are kept as they are: pinned, and priced by their text (their images at
        # the provider's rate would need the image sizes, which messages do not always carry)
        infos = [TurnInfo(i, text_tokens(t.content) + (85 if _has_non_text(m) else 0), pinned=_has_non_text(m))
                 for i, (t, m) in enumerate(zip(turns, convo))]
        pages = render_transcript(turns)
        sealed = [p for p in pages if p.full]
        planner = Planner(provider.ladder(), Policy(recent_turns=self.recent_turns))
        planner.extend(infos, page_records(sealed, text_tokens=[p.text_tokens for p in sealed]))
        reserve = sum(text_tokens(_text_of(m)) for m in system)
        plan = planner.plan(max(self.budget - reserve, 1))
        self.last_plan = plan
        out: list[BaseMessage] = list(system)
        for seg in plan.segments:
            if seg.kind == "text":
                out.extend(convo[i] for i in seg.turns)
            elif seg.kind == "page":
                for p in seg.pages:
                    page = sealed[p]
                    img = derive_tier(page.image, seg.tier or "large")
                    buf = io.BytesIO()
                    img.save(buf, format="PNG")
                    label = (f"[Earlier conversation, turns {page.spans[0].turn}-{page.spans[-1].turn}, "
                             f"as a page image ({seg.tier})]")
                    out.append(HumanMessage(content=[
                        {"type": "text", "text": label},
                        {"type": "image", "source_type": "base64", "mime_type": "image/png",
                         "data": base64.b64encode(buf.getvalue()).decode()},
                    ]))
        report = {"provider": provider.name, "budget": self.budget, **plan.to_json(),
                  "dropped_turns": [t for s in plan.dropped for t in s.turns]}
        if out:
            out[0] = out[0].model_copy(update={"additional_kwargs": {**out[0].additional_kwargs, "optimem": report}})
        return out

    async def ainvoke(self, input: list[BaseMessage], config: RunnableConfig | None = None, **kwargs: Any) -> list[BaseMessage]:
        import asyncio

        return await asyncio.to_thread(self.invoke, input, config, **kwargs)


# -- the native path as a LangChain chat model ------------------------------------------------------
from langchain_core.language_models.chat_models import BaseChatModel  # noqa: E402
from langchain_core.outputs import ChatGeneration, ChatResult  # noqa: E402


class ChatDeepSeekOCR(BaseChatModel):
    """DeepSeek-OCR (run by optimem) with optical memory, as a LangChain chat model.

    The memory is the conversation: messages the memory has not seen yet are recorded, the last human
    message is answered through `OpticalMemory.chat` (old turns as vision tokens, recent ones as text),
    and both turns are stored. invoke / stream / batch / async come from `BaseChatModel`.
    """

    memory: Any
    budget: int = 8192
    max_new_tokens: int = 256

    model_config = {"arbitrary_types_allowed": True}

    @classmethod
    def from_pretrained(cls, path: str, session: str = "langchain", store: str | None = None, **kwargs: Any) -> "ChatDeepSeekOCR":
        from optimem.backends import DeepseekOCRBackend
        from optimem.memory import OpticalMemory

        return cls(memory=OpticalMemory(session, store, backend=DeepseekOCRBackend.from_pretrained(path)), **kwargs)

    @property
    def _llm_type(self) -> str:
        return "optimem-deepseek-ocr"

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        if not messages or not isinstance(messages[-1], HumanMessage):
            raise InputError("ChatDeepSeekOCR answers the last message, which must be a HumanMessage")
        mem = self.memory
        seen = mem.store.count_turns(mem.session)
        new = [m for m in messages[:-1]][seen:]
        if new:
            mem.add_many([{"role": _ROLE.get(m.type, "user"), "content": _text_of(m)} for m in new])
        reply = mem.chat(_text_of(messages[-1]), budget=self.budget, max_new_tokens=self.max_new_tokens)
        return ChatResult(generations=[ChatGeneration(message=AIMessage(reply))])


# -- LangChain 1.x agents ------------------------------------------------------------------------------
def optical_memory_middleware(compressor: OpticalCompressor):
    """Agent middleware (needs the optional `langchain` package: pip install "optimem[agents]") that
    compresses the agent's messages before every model call, leaving the agent's state untouched."""
    try:
        from langchain.agents.middleware import AgentMiddleware
    except ImportError:
        raise InputError('the agent middleware needs langchain >= 1.0: pip install "optimem[agents]"') from None

    class OpticalMemoryMiddleware(AgentMiddleware):
        def wrap_model_call(self, request, handler):
            return handler(request.override(messages=compressor.invoke(list(request.messages))))

        async def awrap_model_call(self, request, handler):
            return await handler(request.override(messages=await compressor.ainvoke(list(request.messages))))

    return OpticalMemoryMiddleware()
