"""A terminal chat agent with optical memory, for any LangChain chat model.

    python examples/chat_agent.py --provider anthropic      # plug in your model in make_model()
    python examples/chat_agent.py --native /models/DeepSeek-OCR

History is kept in optimem's store; before each call the compressor turns old turns into page images
priced in the provider's tokens. An empty line ends the chat.
"""

from __future__ import annotations

import argparse
import sys

from langchain_core.messages import HumanMessage, SystemMessage

from optimem.langchain import ChatDeepSeekOCR, OpticalChatMessageHistory, OpticalCompressor


def make_model():
    """Return your chat model here, e.g. `from langchain_anthropic import ChatAnthropic; return ChatAnthropic(...)`."""
    raise SystemExit("edit make_model() in examples/chat_agent.py to return a LangChain chat model, or use --native")


def chat_loop(model, history: OpticalChatMessageHistory, compressor: OpticalCompressor | None,
              read=input, write=print) -> int:
    turns = 0
    while True:
        try:
            line = read("you> ").strip()
        except EOFError:
            break
        if not line:
            break
        history.add_message(HumanMessage(line))
        messages = [SystemMessage("You are a helpful assistant."), *history.messages]
        reply = model.invoke(compressor.invoke(messages) if compressor else messages)
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
    if args.native:  # the native model keeps its own optical memory
        model = ChatDeepSeekOCR.from_pretrained(args.native, session=args.session, store=args.store)
        history = OpticalChatMessageHistory(args.session + "-view", args.store)
        return chat_loop(model, history, None)
    return chat_loop(make_model(), OpticalChatMessageHistory(args.session, args.store),
                     OpticalCompressor(provider=args.provider, budget=args.budget))


if __name__ == "__main__":
    sys.exit(0 if main() >= 0 else 1)
