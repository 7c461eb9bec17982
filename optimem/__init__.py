"""optimem: long memory for LLM chat agents through optical context compression.

Old turns are rendered to page images (`optimem.renderers`), given a resolution tier by age and
budget (`optimem.policies`), encoded by DeepSeek-OCR's DeepEncoder into vision tokens and spliced
into the decoder's context next to the recent turns, which stay text. Heavy imports (torch,
transformers) stay lazy so that the CLI and the pure-Python parts start fast.
"""

from importlib import import_module

from optimem.errors import OptimemError

__version__ = "0.1.0"
__all__ = ["DeepseekOCR2Backend", "DeepseekOCRBackend", "DocumentMemory", "LayoutBackend", "NoModelBackend",
           "OpticalMemory", "OptimemError", "__version__", "open_store"]

# name -> the module that defines it, imported on first use: `import optimem` stays cheap, and the
# package face adds no import edges (importing a room, optimem.renderers, never pulls in the memory)
_LAZY = {"OpticalMemory": "optimem.memory", "DocumentMemory": "optimem.docqa", "open_store": "optimem.store",
         "DeepseekOCRBackend": "optimem.backends", "DeepseekOCR2Backend": "optimem.backends",
         "LayoutBackend": "optimem.backends", "NoModelBackend": "optimem.backends"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'optimem' has no attribute {name!r}")
