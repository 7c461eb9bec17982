"""An LCEL chain whose history lives in optimem and whose old turns reach the model as page images.

    python examples/lcel_history.py

For code built on `RunnableWithMessageHistory` (LangChain now recommends LangGraph persistence: see
examples/chat_agent.py for `create_agent` + a checkpointer + `OpticalMemoryMiddleware`). The
compressor reads the session from the config, so each session has its own pages.

Swap the fake model for any LangChain chat model (ChatAnthropic, ChatOpenAI, ...) and set the
provider so the budget is counted in that provider's image tokens.
"""

from __future__ import annotations

import json
from importlib import resources

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables.history import RunnableWithMessageHistory

from optimem.langchain import OpticalChatMessageHistory, OpticalCompressor


def build(model, store: str = "sqlite://", provider: str = "anthropic", budget: int = 6000):
    prompt = ChatPromptTemplate.from_messages(
        [("system", "You are a helpful assistant."), MessagesPlaceholder("history"), ("human", "{question}")]
    )
    histories: dict[str, OpticalChatMessageHistory] = {}

    def history(session_id: str) -> OpticalChatMessageHistory:
        return histories.setdefault(session_id, OpticalChatMessageHistory(session_id, store))

    chain = prompt | OpticalCompressor(provider=provider, budget=budget) | model
    return RunnableWithMessageHistory(chain, history, input_messages_key="question", history_messages_key="history"), history


def main() -> str:
    path = resources.files("optimem").joinpath("data/example_chat.jsonl")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()[1:121]]
    model = GenericFakeChatModel(messages=iter([AIMessage("Your booking reference is QX7-4431Z.")]))
    chain, history = build(model)
    history("demo").add_messages([HumanMessage(r["content"]) if r["role"] == "user" else AIMessage(r["content"]) for r in rows])
    answer = chain.invoke({"question": "What was my booking reference?"}, config={"configurable": {"session_id": "demo"}})
    print(answer.content)
    return answer.content


if __name__ == "__main__":
    main()
