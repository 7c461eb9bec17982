"""The native DeepSeek-OCR prompt built from a plan: token ids with image placeholders, and the
vision-token embeddings that fill them.

Layout (the reference's "deepseek" conversation template, with pages spliced where they belong):

    <BOS>
    for each item of the context, oldest first:
      a page  -> "<image>" x placeholder_count(tier)  "\\n"
      a user, system or tool turn -> "<|User|>: " + label + content + "\\n\\n"
                   (label: "" for user, "System: " / "Tool: " for the others)
      an assistant turn -> "<|Assistant|>: " + content + "<｜end▁of▁sentence｜>"
    the new message, if any -> "<|User|>: " + message + "\\n\\n"
    "<|Assistant|>:"                                  (generation starts here)

Every "<image>" is the single token 128815; `build_inputs_embeds` overwrites those rows, in order,
with each page's [placeholders, hidden] embeddings (grid rows, row newlines, view separator).
"""

from __future__ import annotations

from typing import Any

from renderers.tokens import BOS_ID, EOS_ID, IMAGE_TOKEN_ID

USER, ASSISTANT = "<|User|>", "<|Assistant|>"
_LABEL = {"user": "", "system": "System: ", "tool": "Tool: "}


def prompt_pieces(ctx: Any) -> list[tuple[str, Any]]:
    """The prompt as ("text", str) and ("page", ContextPage) pieces, in order."""
    from optimem.memory import ContextPage

    pieces: list[tuple[str, Any]] = []
    for item in ctx.items:
        if isinstance(item, ContextPage):
            pieces.append(("page", item))
            pieces.append(("text", "\n"))
        elif item.role == "assistant":
            pieces.append(("text", f"{ASSISTANT}: {item.content}"))
            pieces.append(("eos", None))
        else:
            pieces.append(("text", f"{USER}: {_LABEL.get(item.role, '')}{item.content}\n\n"))
    if ctx.new_message is not None:
        pieces.append(("text", f"{USER}: {ctx.new_message}\n\n"))
    pieces.append(("text", f"{ASSISTANT}:"))
    return pieces


def build_inputs(ctx: Any, model: Any) -> dict[str, Any]:
    """{"input_ids": [...], "image_embeds": [tensor per page]} for `model.generate`."""
    ids = [BOS_ID]
    embeds = []
    tok = model.tokenizer
    for kind, val in prompt_pieces(ctx):
        if kind == "page":
            ids.extend([IMAGE_TOKEN_ID] * val.tokens)
            if val.embeds is None:
                raise ValueError(f"page {val.index} has no vision tokens: build the context with encode=True")
            embeds.append(val.embeds)
        elif kind == "eos":
            ids.append(EOS_ID)
        else:
            ids.extend(tok.encode(val, add_special_tokens=False).ids)
    return {"input_ids": ids, "image_embeds": embeds}
