"""optimem: long memory for LLM chat agents through optical context compression.

Old turns are rendered to page images (`renderers`), given a resolution tier by age and budget
(`policies`), encoded by DeepSeek-OCR's DeepEncoder into vision tokens and spliced into the decoder's
context next to the recent turns, which stay text. Heavy imports (torch, transformers) stay lazy so
that the CLI and the pure-Python parts start fast.
"""

from optimem.errors import OptimemError

__version__ = "0.1.0"
__all__ = ["DeepseekOCR2Backend", "DeepseekOCRBackend", "LayoutBackend", "OpticalMemory", "OptimemError", "__version__", "open_store"]


def __getattr__(name: str):
    # lazy: `import optimem` stays cheap
    if name == "OpticalMemory":
        from optimem.memory import OpticalMemory

        return OpticalMemory
    if name in ("DeepseekOCRBackend", "DeepseekOCR2Backend", "LayoutBackend"):
        from optimem import backends

        return getattr(backends, name)
    if name == "open_store":
        from optimem.store import open_store

        return open_store
    raise AttributeError(name)
