"""`OpticalMemoryMiddleware`: the compressor inside a LangChain 1.x agent (`create_agent`).

Before every model call the agent's messages are compressed for the model's provider; the agent's
state keeps the full text (the checkpointer persists it as usual). The thread is the one the agent
runs in (`config["configurable"]["thread_id"]`, which the checkpointer needs anyway), so each thread
has its own pages in optimem's store. The system prompt and the tools bound to the model are counted
in the budget. Needs the optional `langchain` package: pip install "optimem[agents]".
"""

from __future__ import annotations

from typing import Any

from optimem.errors import InputError
from optimem.langchain.compressor import OpticalCompressor

try:
    from langchain.agents.middleware import AgentMiddleware
except ImportError:  # pragma: no cover - exercised only without the optional package
    AgentMiddleware = None  # type: ignore[assignment,misc]


def _thread_of(request: Any) -> tuple[str | None, Any]:
    """The run's thread id and config: from the runtime's execution info, else LangGraph's config."""
    config = None
    try:
        from langgraph.config import get_config

        config = get_config()
    except (ImportError, RuntimeError):
        config = None
    info = getattr(getattr(request, "runtime", None), "execution_info", None)
    thread = getattr(info, "thread_id", None)
    if thread is None and config is not None:
        thread = (config.get("configurable") or {}).get("thread_id")
    return thread, config


if AgentMiddleware is not None:

    class OpticalMemoryMiddleware(AgentMiddleware):
        """Agent middleware compressing each model call's messages with `compressor`."""

        def __init__(self, compressor: OpticalCompressor) -> None:
            super().__init__()
            if not isinstance(compressor, OpticalCompressor):
                raise InputError("OpticalMemoryMiddleware takes an OpticalCompressor")
            self.compressor = compressor

        def _args(self, request: Any) -> dict[str, Any]:
            thread, config = _thread_of(request)
            return {"system": request.system_message, "tools": list(request.tools or []), "thread_id": thread,
                    "config": config}

        def wrap_model_call(self, request, handler):
            res = self.compressor.compress(list(request.messages), **self._args(request))
            return handler(request.override(messages=res.messages))

        async def awrap_model_call(self, request, handler):
            res = await self.compressor.acompress(list(request.messages), **self._args(request))
            return await handler(request.override(messages=res.messages))


def optical_memory_middleware(compressor: OpticalCompressor):
    """`OpticalMemoryMiddleware(compressor)`, with a clear error when `langchain` is not installed."""
    if AgentMiddleware is None:
        raise InputError('the agent middleware needs langchain >= 1.0: pip install "optimem[agents]"')
    return OpticalMemoryMiddleware(compressor)
