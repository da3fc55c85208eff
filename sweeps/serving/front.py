"""The HTTP front: what Ray Serve's proxy refuses before a request reaches a replica.

Ray Serve's proxy parses HTTP with uvicorn and, left alone, bounds neither the size of a
request's headers, nor the time a client takes to send them, nor the number of open
connections; it also answers its own failures (a full queue, a replica that cannot answer) in
plain text. Ray calls the function named in `RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH` inside
the proxy process before its HTTP server starts; `proxy_setup` is that function. It reads
`FrontLimits` from the environment (`SWEEPS_SERVE_FRONT`, JSON), installs the bounded uvicorn
protocol (`sweeps._compat.uvicorn`) and returns one ASGI middleware, `JsonFront`, which

- refuses a declared `Content-Length` over `max_body_bytes` with 413 before the body is read or
  sent anywhere (the replica still counts chunked bodies itself);
- rewrites any error the proxy itself answers in plain text (503 when the queue is full, 408,
  500) as the MLflow-style JSON body every other error has.

This module is imported in the proxy process: it must stay light (no MLflow, no model code).
`front_env(settings)` is what a process starting Ray adds to its environment (`Endpoint` does).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import asdict, astuple, dataclass
from typing import TYPE_CHECKING, Any

from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sweeps._compat.ray_serve import proxy_callback_env, use_uvicorn_options
from sweeps._compat.uvicorn import uvicorn_options
from sweeps.errors import (
    BadRequest,
    HeadersTooLarge,
    PayloadTooLarge,
    ProtocolError,
    RequestTimeout,
    ServiceUnavailable,
)

if TYPE_CHECKING:  # the proxy process imports this module: sweeps.config would pull in scikit-learn
    from sweeps.config import ServeConfig

__all__ = ["CALLBACK", "ENV_LIMITS", "FrontLimits", "JsonFront", "front_env", "proxy_setup", "refusal"]

log = logging.getLogger(__name__)

CALLBACK = "sweeps.serving.front:proxy_setup"
ENV_LIMITS = "SWEEPS_SERVE_FRONT"
_MAX_MESSAGE = 4096
_ERROR_CODES = {404: "ENDPOINT_NOT_FOUND", 408: "REQUEST_TIMEOUT", 413: "RESOURCE_LIMIT_EXCEEDED",
                503: "TEMPORARILY_UNAVAILABLE"}  # fmt: skip


@dataclass(frozen=True)
class FrontLimits:
    """The HTTP front's bounds, from `ServeConfig`'s fields of the same names."""

    max_header_bytes: int = 64 * 1024
    header_timeout_s: float = 10.0
    max_connections: int = 1000
    max_body_bytes: int = 8 * 1024 * 1024

    @classmethod
    def of(cls, settings: ServeConfig) -> FrontLimits:
        return cls(settings.max_header_bytes, settings.header_timeout_s, settings.max_connections,
                   settings.max_body_bytes)  # fmt: skip

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> FrontLimits:
        """The limits in `SWEEPS_SERVE_FRONT`; the defaults when it is unset or unreadable (said once)."""
        raw = environ.get(ENV_LIMITS)
        if not raw:
            return cls()
        try:
            given = json.loads(raw)
            limits = cls(int(given["max_header_bytes"]), float(given["header_timeout_s"]),
                         int(given["max_connections"]), int(given["max_body_bytes"]))  # fmt: skip
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("%s is not valid (%r); the HTTP front uses its defaults", ENV_LIMITS, exc)
            return cls()
        if min(astuple(limits)) <= 0:
            log.warning("%s must hold positive limits, got %s; the HTTP front uses its defaults", ENV_LIMITS, raw)
            return cls()
        return limits


def front_env(settings: ServeConfig) -> dict[str, str]:
    """Environment for a process that starts Ray: the proxy callback and this endpoint's limits."""
    return {**proxy_callback_env(CALLBACK), ENV_LIMITS: json.dumps(asdict(FrontLimits.of(settings)))}


def _body(error: ProtocolError) -> bytes:
    return json.dumps(error.to_json()).encode()


def refusal(kind: str, limits: FrontLimits) -> tuple[int, bytes]:
    """Status and JSON body for a request the front refuses before it reaches the app."""
    error: ProtocolError
    if kind == "headers_too_large":
        error = HeadersTooLarge(
            f"The request line and headers must be at most {limits.max_header_bytes} bytes "
            "(serve.max_header_bytes), got more."
        )
    elif kind == "header_timeout":
        error = RequestTimeout(
            f"The request headers must arrive within {limits.header_timeout_s:g} s (serve.header_timeout_s) "
            "of the connection or of their first byte; they did not."
        )
    elif kind == "too_many_connections":
        error = ServiceUnavailable(
            f"The server has {limits.max_connections} connections open (serve.max_connections), all with a "
            "request in flight; retry shortly."
        )
    else:
        error = BadRequest("The request is not valid HTTP/1.1.", error_code="MALFORMED_REQUEST")
    return error.status, _body(error)


class JsonFront:
    """ASGI middleware in the proxy: oversize declared bodies refused with 413; plain-text errors made JSON."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                declared = value.strip()
                if not declared.isdigit() or len(declared) > 19 or int(declared) > self.max_body_bytes:
                    await self._refuse_length(send, value)
                    return
        await self.app(scope, receive, _JsonErrors(send))

    async def _refuse_length(self, send: Send, value: bytes) -> None:
        shown = value[:40].decode("latin-1")
        error: ProtocolError
        if value.strip().isdigit():
            error = PayloadTooLarge(
                f"The request body must be at most {self.max_body_bytes} bytes (serve.max_body_bytes), got "
                f"{shown}; split the rows over several requests."
            )
        else:
            error = BadRequest(f"Content-Length must be an integer, got {shown!r}.")
        # The body is not read: close the connection rather than read and discard it.
        await _send_json(send, error.status, _body(error), [(b"connection", b"close")])


async def _send_json(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    headers = [*headers, (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class _JsonErrors:
    """A `send` that passes answers through, except error answers that are not JSON: those it rewrites."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self._start: Message | None = None
        self._chunks: list[bytes] = []
        self._size = 0

    async def __call__(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start" and message["status"] >= 400 and not _is_json(message):
            self._start = message  # held until its body is complete
            return
        if kind != "http.response.body" or self._start is None:
            await self._send(message)
            return
        chunk = bytes(message.get("body", b""))
        if self._size < _MAX_MESSAGE:
            self._chunks.append(chunk[: _MAX_MESSAGE - self._size])
            self._size += len(self._chunks[-1])
        if message.get("more_body", False):
            return
        status = int(self._start["status"])
        text = b"".join(self._chunks).decode("utf-8", "replace").strip() or f"HTTP {status}"
        body = json.dumps({"error_code": _ERROR_CODES.get(status, "INTERNAL_ERROR" if status >= 500 else
                                                          "BAD_REQUEST"), "message": text}).encode()  # fmt: skip
        kept = [(n, v) for n, v in self._start.get("headers", []) if n.lower() not in (b"content-type",
                                                                                       b"content-length")]  # fmt: skip
        self._start = None
        await _send_json(self._send, status, body, kept)


def _is_json(start: Message) -> bool:
    for name, value in start.get("headers", []):
        if bytes(name).lower() == b"content-type":
            return bytes(value).lower().startswith(b"application/json")
    return False


def proxy_setup() -> list[Middleware]:
    """Ray Serve's proxy callback: bound the HTTP server about to start, return the JSON middleware."""
    limits = FrontLimits.from_env(os.environ)

    def answer(kind: str) -> tuple[int, bytes]:
        return refusal(kind, limits)

    options: dict[str, Any] = uvicorn_options(
        limits.max_header_bytes, limits.header_timeout_s, limits.max_connections, answer
    )
    if use_uvicorn_options(options):
        log.info("HTTP front bounded: %s", limits)
    return [Middleware(JsonFront, max_body_bytes=limits.max_body_bytes)]
