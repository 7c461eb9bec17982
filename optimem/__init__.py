"""optimem: long memory for LLM chat agents through optical context compression.

Old turns are rendered to page images (`renderers`), given a resolution tier by age and budget
(`policies`), encoded by DeepSeek-OCR's DeepEncoder into vision tokens and spliced into the decoder's
context next to the recent turns, which stay text. Heavy imports (torch, transformers) stay lazy so
that the CLI and the pure-Python parts start fast.
"""

from optimem.errors import OptimemError

__version__ = "0.1.0"
__all__ = ["OptimemError", "__version__"]
