"""OpenAI's error JSON, `{"error": {"message", "type", "param", "code"}}`,
for every way a request can fail. Each failure ends its own request only."""
from __future__ import annotations

import logging
from typing import Optional

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import ChatTemplateError, ContextOverflowError, LlamaliteError

log = logging.getLogger("llamalite.server")


class APIError(Exception):
    """A request the server refuses, with its HTTP status and OpenAI's fields."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error",
                 param: Optional[str] = None, code: Optional[str] = None):
        super().__init__(message)
        self.status, self.message = status, message
        self.type, self.param, self.code = type, param, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(status_code=self.status, content=self.body())


def model_not_found(name: str, served: list) -> APIError:
    return APIError(404, f"The model `{name}` does not exist; this server has "
                         f"{', '.join(f'`{s}`' for s in served)}",
                    param="model", code="model_not_found")


def invalid_api_key() -> APIError:
    return APIError(401, "Incorrect or missing API key: send `Authorization: Bearer <key>` "
                         "with the key the server was started with", code="invalid_api_key")


def from_llama(error: Exception, param: Optional[str] = None) -> APIError:
    """What a Llama call raised, as the error a client should see: the
    caller's mistakes are 400s naming the numbers; anything else is ours (500)."""
    if isinstance(error, ContextOverflowError):
        return APIError(400, str(error), param=param, code="context_length_exceeded")
    if isinstance(error, NotImplementedError):   # UnsupportedModelError: grammar, tools, ...
        return APIError(400, str(error), code="unsupported")
    if isinstance(error, (ChatTemplateError, LlamaliteError, ValueError, TypeError)):
        return APIError(400, str(error), param=param)
    log.error("request failed", exc_info=error)
    return APIError(500, f"internal error: {type(error).__name__}: {error}",
                    type="server_error")


def _where(loc: tuple) -> str:
    parts = [str(p) for p in loc if p != "body"]
    return ".".join(parts) or "body"


async def on_invalid_body(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 naming each wrong field, or 400 when the body is not JSON at all."""
    errors = exc.errors()
    bad_json = [e for e in errors if e.get("type") == "json_invalid"]
    if bad_json:
        detail = bad_json[0].get("ctx", {}).get("error", "")
        return APIError(400, f"The body is not valid JSON{': ' + detail if detail else ''}",
                        code="invalid_json").response()
    message = "; ".join(f"{_where(e['loc'])}: {e['msg']}" for e in errors)
    first = _where(errors[0]["loc"]) if errors else None
    return APIError(422, message, param=first, code="invalid_value").response()


async def on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """Starlette's own refusals (unknown path, wrong method) in the same shape."""
    codes = {404: "not_found", 405: "method_not_allowed"}
    return APIError(exc.status_code, str(exc.detail),
                    code=codes.get(exc.status_code)).response()


async def on_api_error(request: Request, exc: APIError) -> JSONResponse:
    return exc.response()
