"""LangChain integration (langchain-core; the agent middleware also needs `langchain`).

- `OpticalMemoryMiddleware` (middleware.py): compresses every model call of a `create_agent` agent;
  pages per LangGraph thread in optimem's store.
- `OpticalCompressor` (compressor.py): a Runnable from messages to the request a provider receives,
  old units as page images priced in that provider's tokens.
- `OpticalChatMessageHistory` (history.py): a chat history on optimem's stores, for
  `RunnableWithMessageHistory` code.
- `ChatDeepSeekOCR` (chat_model.py): the native DeepSeek-OCR path as a chat model.
"""

from optimem.langchain.chat_model import ChatDeepSeekOCR
from optimem.langchain.compressor import Compressed, OpticalCompressor
from optimem.langchain.history import OpticalChatMessageHistory

__all__ = ["ChatDeepSeekOCR", "Compressed", "OpticalChatMessageHistory", "OpticalCompressor", "OpticalMemoryMiddleware",
           "optical_memory_middleware"]


def __getattr__(name: str):
    # lazy: the middleware imports `langchain`, an optional package
    if name in ("OpticalMemoryMiddleware", "optical_memory_middleware"):
        from optimem.langchain import middleware

        return getattr(middleware, name)
    raise AttributeError(name)
