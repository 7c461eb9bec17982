"""A terminal chat agent (LangChain 1.x `create_agent`) whose old turns reach the model as page images.

    python examples/chat_agent.py --provider anthropic      # plug in your model in make_model()
    python examples/chat_agent.py --native /models/DeepSeek-OCR

The agent's state (the full conversation) is persisted by a LangGraph checkpointer per thread, as any
LangChain agent; `OpticalMemoryMiddleware` compresses every model call for the provider's budget,
with the thread's pages kept in optimem's store. An empty line ends the chat.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from optimem.langchain import ChatDeepSeekOCR, OpticalChatMessageHistory, OpticalCompressor


def make_model():
    """Return your chat model here, e.g. `from langchain_anthropic import ChatAnthropic; return ChatAnthropic(...)`."""
    raise SystemExit("edit make_model() in examples/chat_agent.py to return a LangChain chat model, or use --native")


def build_agent(model: Any, *, provider: str, budget: int, store: str, tools: list | None = None,
                checkpointer: Any = None):
    """`create_agent` + a checkpointer + the optical memory middleware."""
    from langchain.agents import create_agent
    from langgraph.checkpoint.memory import InMemorySaver

    from optimem.langchain import OpticalMemoryMiddleware

    compressor = OpticalCompressor(provider=provider, budget=budget, store=store)
    return create_agent(model, tools=tools or [], system_prompt="You are a helpful assistant.",
                        middleware=[OpticalMemoryMiddleware(compressor)], checkpointer=checkpointer or InMemorySaver())


def user_lines(read=input):
    """What the user types, line by line, until an empty line or the end of input."""
    while True:
        try:
            line = read("you> ").strip()
        except EOFError:
            return
        if not line:
            return
        yield line


def agent_loop(agent: Any, thread: str, read=input, write=print) -> int:
    turns = 0
    config = {"configurable": {"thread_id": thread}}
    for line in user_lines(read):
        result = agent.invoke({"messages": [{"role": "user", "content": line}]}, config)
        write(f"assistant> {result['messages'][-1].content}")
        turns += 1
    return turns


def chat_loop(model, history: OpticalChatMessageHistory, compressor: OpticalCompressor | None,
              read=input, write=print) -> int:
    """Without an agent: the history in optimem's store, compressed before each call."""
    from langchain_core.messages import HumanMessage, SystemMessage

    turns = 0
    for line in user_lines(read):
        history.add_message(HumanMessage(line))
        messages = [SystemMessage("You are a helpful assistant."), *history.messages]
        config = {"configurable": {"thread_id": history.session_id}}
        reply = model.invoke(compressor.invoke(messages, config) if compressor else messages, config)
        history.add_message(reply)
        write(f"assistant> {reply.content}")
        turns += 1
    return turns


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--provider", default="anthropic")
    ap.add_argument("--budget", type=int, default=8000)
    ap.add_argument("--store", default="sqlite:///chat_agent.db")
    ap.add_argument("--session", default="agent")
    ap.add_argument("--native", metavar="DEEPSEEK_OCR_DIR", default=None)
    args = ap.parse_args(argv)
    if args.native:  # the native model keeps its own optical memory, per thread
        model = ChatDeepSeekOCR.from_pretrained(args.native, session=args.session, store=args.store)
        history = OpticalChatMessageHistory(args.session + "-view", args.store)
        return chat_loop(model, history, None)
    agent = build_agent(make_model(), provider=args.provider, budget=args.budget, store=args.store)
    return agent_loop(agent, args.session)


if __name__ == "__main__":
    sys.exit(0 if main() >= 0 else 1)
