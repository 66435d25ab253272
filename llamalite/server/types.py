"""Request bodies: OpenAI's fields plus llama-cpp-python's extras (top_k,
min_p, repeat_penalty, mirostat_*, grammar, logit_bias_type). Defaults are
llama-cpp-python's server's. Fields OpenAI clients send that change nothing
here (user, n=1, best_of=1) are accepted; unknown fields are ignored, as
OpenAI's API ignores them."""
from __future__ import annotations

from typing import Any, Dict, List, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

Stop = Optional[Union[str, List[str]]]


class _Sampling(BaseModel):
    """What completions and chat completions share."""
    model_config = ConfigDict(protected_namespaces=())

    model: Optional[str] = Field(None, description="the model (default: the first served)")
    temperature: float = Field(0.8, ge=0.0, le=2.0)
    top_p: float = Field(0.95, ge=0.0, le=1.0)
    min_p: float = Field(0.05, ge=0.0, le=1.0)
    top_k: int = Field(40, ge=0)
    typical_p: float = Field(1.0, ge=0.0, le=1.0)
    stop: Stop = None
    stream: bool = False
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    repeat_penalty: float = Field(1.1, ge=0.0)
    logit_bias: Optional[Dict[str, float]] = Field(
        None, description="token id (or, with logit_bias_type 'tokens', token text) -> bias")
    logit_bias_type: Optional[Literal["input_ids", "tokens"]] = None
    seed: Optional[int] = None
    mirostat_mode: int = Field(0, ge=0, le=2)
    mirostat_tau: float = Field(5.0, ge=0.0, le=10.0)
    mirostat_eta: float = Field(0.1, ge=0.001, le=1.0)
    grammar: Optional[str] = Field(None, description="a GBNF grammar the output must follow")
    n: int = Field(1, ge=1, le=1, description="one choice per request")
    user: Optional[str] = None


class CompletionRequest(_Sampling):
    prompt: Union[str, List[int], List[str]] = Field(
        "", description="text, token ids, or a list holding one text")
    suffix: Optional[str] = Field(None, description="text after the insertion point "
                                                    "(fill-in-the-middle)")
    max_tokens: Optional[int] = Field(16, ge=0, description="0 or null: up to the context")
    echo: bool = False
    logprobs: Optional[int] = Field(None, ge=0, le=20)
    best_of: int = Field(1, ge=1, le=1)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: Optional[Union[str, List[Dict[str, Any]]]] = None


class ChatCompletionRequest(_Sampling):
    messages: List[ChatMessage] = Field(min_length=1)
    max_tokens: Optional[int] = Field(None, ge=0, description="null: up to the context")
    max_completion_tokens: Optional[int] = Field(None, ge=0, description="max_tokens' newer name")
    logprobs: bool = False
    top_logprobs: Optional[int] = Field(None, ge=0, le=20)
    response_format: Optional[Dict[str, Any]] = None
    tools: Optional[List[Dict[str, Any]]] = None
    tool_choice: Optional[Union[str, Dict[str, Any]]] = None
    functions: Optional[List[Dict[str, Any]]] = None
    function_call: Optional[Union[str, Dict[str, Any]]] = None


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model: Optional[str] = None
    input: Union[str, List[str]] = Field(description="a text or a list of texts")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Optional[int] = Field(None, ge=1, description="must be the model's own size")
    user: Optional[str] = None


class TokenizeRequest(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model: Optional[str] = None
    input: str


class DetokenizeRequest(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model: Optional[str] = None
    tokens: List[int]
