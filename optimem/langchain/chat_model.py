"""`ChatDeepSeekOCR`: DeepSeek-OCR run by optimem, with optical memory, as a LangChain chat model.

The memory is the conversation: per thread (`configurable.thread_id` or `session_id` of the call's
config, else the model's default session) an `OpticalMemory` session records the messages it has not
seen, the last human message is answered through `OpticalMemory.chat` (old turns as vision tokens,
recent ones as text), and both turns are stored. invoke / stream / batch / async come from
`BaseChatModel`; `stream` yields the reply piece by piece as the native decoder produces it.
"""

from __future__ import annotations

import threading
from typing import Any

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import ConfigDict, PrivateAttr

from optimem.errors import InputError, ModelError
from optimem.langchain.units import ROLE, content_text


class ChatDeepSeekOCR(BaseChatModel):
    memory: Any  # the default session's OpticalMemory; other threads share its store and backend
    budget: int = 8192
    max_new_tokens: int = 256

    model_config = ConfigDict(arbitrary_types_allowed=True)
    _sessions: dict[str, Any] = PrivateAttr(default_factory=dict)
    _guard: Any = PrivateAttr(default_factory=threading.Lock)

    @classmethod
    def from_pretrained(cls, path: str, session: str = "langchain", store: str | None = None, **kwargs: Any) -> "ChatDeepSeekOCR":
        from optimem.backends import DeepseekOCRBackend
        from optimem.memory import OpticalMemory

        return cls(memory=OpticalMemory(session, store, backend=DeepseekOCRBackend.from_pretrained(path)), **kwargs)

    @property
    def _llm_type(self) -> str:
        return "optimem-deepseek-ocr"

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        raise ModelError("ChatDeepSeekOCR cannot call tools: DeepSeek-OCR was not trained for tool use. Use it "
                         "without tools, or use a tool-calling chat model with OpticalCompressor / the middleware")

    def memory_for(self, thread: str | None):
        """The thread's memory (the default session when `thread` is None)."""
        if thread is None or thread == self.memory.session:
            return self.memory
        with self._guard:
            mem = self._sessions.get(thread)
            if mem is None:
                from optimem.memory import OpticalMemory

                base = self.memory
                mem = self._sessions[thread] = OpticalMemory(thread, base.store, render=base.render,
                                                             policy=base.policy, backend=base.backend)
            return mem

    # the thread comes from the call's config; BaseChatModel hands `_generate` only keyword arguments
    def invoke(self, input: Any, config: Any = None, **kwargs: Any) -> Any:
        return super().invoke(input, config, **_thread_kw(config, kwargs))

    async def ainvoke(self, input: Any, config: Any = None, **kwargs: Any) -> Any:
        return await super().ainvoke(input, config, **_thread_kw(config, kwargs))

    def stream(self, input: Any, config: Any = None, **kwargs: Any):
        return super().stream(input, config, **_thread_kw(config, kwargs))

    async def astream(self, input: Any, config: Any = None, **kwargs: Any):
        async for chunk in super().astream(input, config, **_thread_kw(config, kwargs)):
            yield chunk

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        mem = self._prepare(messages, kwargs)
        reply = mem.chat(content_text(messages[-1]), budget=self.budget, max_new_tokens=self.max_new_tokens)
        return ChatResult(generations=[ChatGeneration(message=AIMessage(reply))])

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None,
                **kwargs: Any):
        """The reply piece by piece as the native decoder produces it (`OpticalMemory.stream`)."""
        mem = self._prepare(messages, kwargs)
        if not hasattr(mem, "stream"):  # a memory without streaming decode: one chunk
            yield ChatGenerationChunk(message=AIMessageChunk(content=mem.chat(
                content_text(messages[-1]), budget=self.budget, max_new_tokens=self.max_new_tokens)))
            return
        for piece in mem.stream(content_text(messages[-1]), budget=self.budget, max_new_tokens=self.max_new_tokens):
            if run_manager is not None:
                run_manager.on_llm_new_token(piece)
            yield ChatGenerationChunk(message=AIMessageChunk(content=piece))

    def _prepare(self, messages: list[BaseMessage], kwargs: dict[str, Any]):
        """The thread's memory, with the messages it has not seen recorded (all but the last)."""
        if not messages or not isinstance(messages[-1], HumanMessage):
            raise InputError("ChatDeepSeekOCR answers the last message, which must be a HumanMessage")
        thread = kwargs.pop("optimem_thread", None)
        mem = self.memory_for(str(thread) if thread is not None else None)
        seen = mem.store.count_turns(mem.session)
        new = list(messages[:-1])[seen:]
        if new:
            mem.add_many([{"role": ROLE.get(m.type, "user") if m.type != "tool" else "tool", "content": content_text(m)}
                          for m in new])
        return mem


def _thread_kw(config: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    conf = (config or {}).get("configurable") or {}
    thread = conf.get("thread_id") or conf.get("session_id")
    return {**kwargs, "optimem_thread": thread} if thread is not None else kwargs
