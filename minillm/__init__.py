"""minillm — a from-scratch teaching engine for fast LLM inference.

The public API (see the docs' API reference):

>>> import minillm
>>> model = minillm.GPT(minillm.GPTConfig.preset("tiny"))
>>> minillm.generate(model, [[1, 2, 3]], max_new_tokens=4, temperature=0).shape
(1, 7)
"""

from .config import GPTConfig
from .generate import generate, stream
from .nn.gpt import GPT

__version__ = "0.1.0"

__all__ = ["GPT", "GPTConfig", "generate", "stream", "__version__"]


def __getattr__(name: str):
    # File functions live in minillm.io; import lazily so `import minillm` stays light.
    if name in ("save", "load", "load_gpt2", "save_gpt2"):
        from . import io

        return getattr(io, name)
    raise AttributeError(f"module 'minillm' has no attribute {name!r}")
