"""The exceptions llamalite raises. Each also subclasses the builtin a user
would catch for that kind of mistake."""


class LlamaliteError(Exception):
    """Base of every llamalite error."""


class InvalidArgumentError(LlamaliteError, ValueError):
    """A value handed to llamalite is out of range or inconsistent (a shape,
    a size, a count); the message names it."""


class GGUFError(LlamaliteError, ValueError):
    """A GGUF file is malformed, truncated or hostile; the message names the
    field and byte offset."""


class UnsupportedModelError(LlamaliteError, NotImplementedError):
    """An architecture, tensor type or feature llamalite does not run."""


class ContextOverflowError(LlamaliteError, ValueError):
    """A prompt plus the tokens asked for do not fit the context window."""


class ChatTemplateError(LlamaliteError, ValueError):
    """A chat template does not compile, raised (raise_exception), ran past
    its time or size budget, or reached for what the sandbox forbids; the
    message says which."""


class CheckpointError(LlamaliteError, ValueError):
    """A Hugging Face checkpoint to convert (config, safetensors, tokenizer
    files) is missing a part, malformed or hostile; the message names the
    file and the tensor or key."""


class GrammarError(LlamaliteError, ValueError):
    """A GBNF grammar or a JSON schema cannot be used: a syntax error (with
    its line and column), an undefined or left-recursive rule, or a schema
    feature a grammar cannot express."""
