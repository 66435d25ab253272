"""The server's settings: every one a command-line flag (`--n_ctx 4096`) and
an environment variable (`N_CTX=4096`), as llama-cpp-python's server names
them; `--config FILE` serves several models from one JSON or YAML file.

A config file holds the server settings and a list of models:

    {"host": "0.0.0.0", "port": 8000, "api_key": null,
     "models": [{"model": "smollm2-135m-instruct", "model_alias": "smol"},
                {"model": "/models/qwen.gguf", "model_alias": "qwen", "n_ctx": 4096}]}

Flags and variables given beside it override its server settings.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from .. import models
from ..errors import InvalidArgumentError


class ModelSettings(BaseModel):
    """One model to serve, and how to load it."""
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str = Field(models.DEFAULT_MODEL,
                       description="a GGUF file or a catalogue name "
                                   f"({', '.join(models.CATALOG)})")
    model_alias: Optional[str] = Field(None, description="the name clients ask for in `model`; "
                                                         "null: --model as given")
    n_ctx: int = Field(2048, ge=1, description="the context window, in tokens")
    n_threads: Optional[int] = Field(None, ge=1, description="threads; null: the physical cores")
    n_batch: int = Field(512, ge=1, description="prompt tokens per forward call")
    chat_format: Optional[str] = Field(None, description="the chat format; null: the model's "
                                                         "own template")
    pooling_type: int = Field(1, ge=0, le=3,
                              description="how /v1/embeddings pools token vectors: 0 none, "
                                          "1 mean, 2 first token, 3 last token")
    seed: int = Field(-1, description="random seed (-1: a fresh one per request)")

    @property
    def alias(self) -> str:
        return self.model_alias or self.model


class ServerSettings(BaseModel):
    """Where and how the HTTP server listens."""
    model_config = ConfigDict(extra="forbid")

    host: str = Field("127.0.0.1", description="the address to listen on")
    port: int = Field(8000, ge=0, le=65535, description="the port to listen on")
    api_key: Optional[str] = Field(None, description="when set, every /v1 and /extras request "
                                                     "needs `Authorization: Bearer KEY`")


class ConfigFile(ServerSettings):
    """The shape of a --config file."""
    models: List[ModelSettings] = Field(min_length=1)


class Settings(BaseSettings, ModelSettings, ServerSettings):
    """Serve one model (--model), or several from a --config file. Every flag
    is also an environment variable of the same name (N_CTX=4096, API_KEY=...)."""
    model_config = SettingsConfigDict(cli_prog_name="python -m llamalite.server",
                                      cli_implicit_flags=True, protected_namespaces=(),
                                      extra="ignore")

    config: Optional[str] = Field(None, description="a JSON or YAML file with the server "
                                                    "settings and several models")

    def served(self) -> tuple[ServerSettings, List[ModelSettings]]:
        """The server settings and the models, from the flags or the config file."""
        server_fields = set(ServerSettings.model_fields)
        if self.config is None:
            return (ServerSettings(**self.model_dump(include=server_fields)),
                    [ModelSettings(**self.model_dump(include=set(ModelSettings.model_fields)))])
        given_model_fields = self.model_fields_set & set(ModelSettings.model_fields)
        if given_model_fields:
            flags = ", ".join(f"--{name}" for name in sorted(given_model_fields))
            raise InvalidArgumentError(f"{flags} cannot be given with --config: the file "
                                       "lists the models")
        file = read_config(self.config)
        overrides = self.model_dump(include=self.model_fields_set & server_fields)
        server = ServerSettings(**{**file.model_dump(include=server_fields), **overrides})
        return server, file.models


def read_config(path: str) -> ConfigFile:
    """A --config file (JSON, or YAML by its .yaml/.yml suffix), validated."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as e:
        raise InvalidArgumentError(f"cannot read the config file {path}: {e.strerror}") from None
    try:
        if file.suffix.lower() in (".yaml", ".yml"):
            import yaml
            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
        return ConfigFile.model_validate(data)
    except ValidationError as e:
        raise InvalidArgumentError(f"config file {path}: {validation_summary(e)}") from None
    except Exception as e:  # JSON or YAML syntax: name the file and the parser's words
        raise InvalidArgumentError(f"config file {path} is not valid "
                                   f"{'YAML' if file.suffix.lower() in ('.yaml', '.yml') else 'JSON'}: "
                                   f"{e}") from None


def validation_summary(error: ValidationError, flags: bool = False) -> str:
    """Pydantic's errors as one line: `where: what; where: what` (where as
    `--flag` with flags)."""
    parts = []
    for e in error.errors():
        where = ".".join(str(p) for p in e["loc"]) or "body"
        parts.append(f"{'--' if flags else ''}{where}: {e['msg']}")
    return "; ".join(parts)
