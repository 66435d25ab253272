"""llamalite: run LLaMA-family GGUF models on the CPU."""
from .errors import (ChatTemplateError, ContextOverflowError, GGUFError, InvalidArgumentError,
                     LlamaliteError, UnsupportedModelError)

__version__ = "0.1.0"

__all__ = ["ChatTemplateError", "ContextOverflowError", "GGUFError", "InvalidArgumentError",
           "LlamaliteError", "UnsupportedModelError", "__version__"]
