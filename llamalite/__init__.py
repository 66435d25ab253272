"""llamalite: run LLaMA-family GGUF models on the CPU."""
from .errors import (ChatTemplateError, CheckpointError, ContextOverflowError, GGUFError,
                     GrammarError, InvalidArgumentError, LlamaliteError, UnsupportedModelError)
from .grammar import LlamaGrammar
from .llama import (LLAMA_POOLING_TYPE_CLS, LLAMA_POOLING_TYPE_LAST, LLAMA_POOLING_TYPE_MEAN,
                    LLAMA_POOLING_TYPE_NONE, LLAMA_POOLING_TYPE_RANK,
                    LLAMA_POOLING_TYPE_UNSPECIFIED, Llama, LlamaState, LlamaTokenizer)
from .sampling import (LLAMA_DEFAULT_SEED, LogitsProcessor, LogitsProcessorList, StoppingCriteria,
                       StoppingCriteriaList)

__version__ = "0.1.0"

__all__ = ["ChatTemplateError", "CheckpointError", "ContextOverflowError", "GGUFError",
           "GrammarError", "InvalidArgumentError", "LLAMA_DEFAULT_SEED", "LLAMA_POOLING_TYPE_CLS",
           "LLAMA_POOLING_TYPE_LAST", "LLAMA_POOLING_TYPE_MEAN", "LLAMA_POOLING_TYPE_NONE",
           "LLAMA_POOLING_TYPE_RANK", "LLAMA_POOLING_TYPE_UNSPECIFIED", "Llama", "LlamaGrammar",
           "LlamaState", "LlamaTokenizer", "LlamaliteError", "LogitsProcessor",
           "LogitsProcessorList", "StoppingCriteria", "StoppingCriteriaList", "UnsupportedModelError", "__version__"]
