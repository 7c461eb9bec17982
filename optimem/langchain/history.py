"""`OpticalChatMessageHistory`: a `BaseChatMessageHistory` on optimem's stores (SQLite or Redis).

For code built on `RunnableWithMessageHistory` (deprecated upstream in favour of LangGraph
persistence, still widely used). Messages round-trip exactly: LangChain's own message dicts are kept
in the turn metadata.
"""

from __future__ import annotations

from collections.abc import Sequence

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, message_to_dict, messages_from_dict

from optimem.langchain.units import ROLE, content_text
from optimem.store import Store, open_store


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
        rows = [{"role": ROLE.get(m.type, "user"), "content": content_text(m), "metadata": {"lc": message_to_dict(m)}}
                for m in messages]
        if rows:
            self.store.append_turns(self.session_id, rows)

    def clear(self) -> None:
        self.store.delete_session(self.session_id)
