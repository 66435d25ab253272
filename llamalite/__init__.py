"""llamalite: run LLaMA-family GGUF models on the CPU."""
from .errors import (ContextOverflowError, GGUFError, InvalidArgumentError, LlamaliteError,
                     UnsupportedModelError)

__version__ = "0.1.0"

__all__ = ["ContextOverflowError", "GGUFError", "InvalidArgumentError", "LlamaliteError",
           "UnsupportedModelError", "__version__"]
