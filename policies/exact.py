"""Content that blurs badly in a page image and should stay text: long numbers, IDs, hashes, URLs, code.

The peers' reports agree on what optical compression loses first: UUIDs and IDs (Glyph), code with
its indentation (house-code's 59%), long digit strings. `detect_exact` flags a turn holding such
content so a policy can keep it as text within a share of the budget.
"""

from __future__ import annotations

import re

_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("uuid", re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b")),
    ("hash", re.compile(r"\b(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{12,}\b")),
    ("url", re.compile(r"\bhttps?://\S+|\bwww\.\S+\.\S+")),
    ("number", re.compile(r"\d[\d,._ -]{6,}\d")),
    ("id", re.compile(r"\b(?=[A-Z0-9-]*\d)(?=[A-Z0-9-]*[A-Z])[A-Z0-9][A-Z0-9-]{5,}\b")),
    ("email", re.compile(r"\b[\w.+-]+@[\w-]+\.[\w.-]+\b")),
    ("code", re.compile(r"^\s*(```|~~~)|^( {4}|\t)\S.*[;{}()=]", re.MULTILINE)),
)


def detect_exact(text: str) -> tuple[str, ...]:
    """The kinds of blur-sensitive content found in `text` (empty when none): uuid, hash, url,
    number, id, email, code."""
    return tuple(name for name, pat in _PATTERNS if pat.search(text))
