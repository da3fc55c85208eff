"""The HTTP front, through Ray Serve's own proxy code path: its callback, its uvicorn server, our limits.

No Ray cluster: Ray's `configure_http_middlewares` and `start_asgi_http_server` (what the proxy
actor runs) are called in this process, with a stand-in for the proxy's ASGI app.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import httpx
import pytest
import uvicorn
from ray.serve._private import http_util
from ray.serve.config import HTTPOptions
from starlette.types import Receive, Scope, Send

from sweeps._compat.ray_serve import PROXY_CALLBACK_KNOB
from sweeps.config import ServeConfig
from sweeps.serving.front import CALLBACK, ENV_LIMITS, FrontLimits, front_env, refusal

LIMITS = FrontLimits(max_header_bytes=4096, header_timeout_s=1.0, max_connections=8, max_body_bytes=10_000)


async def stand_in(scope: Scope, receive: Receive, send: Send) -> None:
    """What Serve's proxy answers: plain text for its own failures, the app's JSON otherwise."""
    if scope["type"] != "http":
        return
    if scope["path"] == "/busy":
        text = b"Request dropped due to backpressure (num_queued_requests=1, max_queued_requests=1)."
        await send({"type": "http.response.start", "status": 503, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": text[:20], "more_body": True})
        await send({"type": "http.response.body", "body": text[20:]})
        return
    if scope["path"] == "/metrics":  # text that is not an error passes untouched
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"sweeps_model_loaded 1.0\n"})
        return
    status = 404 if scope["path"] == "/missing" else 200
    body = json.dumps({"error_code": "ENDPOINT_NOT_FOUND", "message": "x"} if status == 404 else {"ok": True})
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body.encode()})


@contextmanager
def proxy_server(monkeypatch: pytest.MonkeyPatch, limits: FrontLimits = LIMITS) -> Iterator[str]:
    """Serve's proxy HTTP server as the proxy actor builds it, with our callback configured."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setattr(uvicorn, "Config", uvicorn.Config)  # the callback replaces it; undone after the test
    monkeypatch.setattr(http_util, PROXY_CALLBACK_KNOB, CALLBACK)  # as constants.py reads the environment
    monkeypatch.setenv(ENV_LIMITS, json.dumps(vars(limits)))
    options = http_util.configure_http_middlewares(HTTPOptions(host="127.0.0.1", port=port))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    started = asyncio.run_coroutine_threadsafe(
        http_util.start_asgi_http_server(stand_in, options, event_loop=loop), loop
    )
    task, server = started.result(timeout=10)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        asyncio.run_coroutine_threadsafe(asyncio.wait_for(asyncio.shield(task), 10), loop).result(timeout=15)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def raw(url: str, request: bytes) -> tuple[int, dict[str, Any]]:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        with suppress(BrokenPipeError, ConnectionResetError):  # answered and closed before all was sent
            sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def test_a_huge_header_is_431_json_and_the_server_keeps_serving(monkeypatch: pytest.MonkeyPatch) -> None:
    with proxy_server(monkeypatch) as url:
        status, body = raw(url, b"GET /health HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 5_000_000 + b"\r\n\r\n")
        assert (status, body["error_code"]) == (431, "RESOURCE_LIMIT_EXCEEDED")
        assert body["message"] == (
            "The request line and headers must be at most 4096 bytes (serve.max_header_bytes), got more."
        )
        assert httpx.get(f"{url}/health").json() == {"ok": True}


def test_a_slow_header_is_cut_off_with_408_json(monkeypatch: pytest.MonkeyPatch) -> None:
    with proxy_server(monkeypatch) as url:
        status, body = raw(url, b"GET /health HTTP/1.1\r\nhost: x\r\n")  # never finished
        assert (status, body["error_code"]) == (408, "REQUEST_TIMEOUT")
        assert "within 1 s (serve.header_timeout_s)" in body["message"]


def test_a_declared_body_over_the_limit_is_413_before_it_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    with proxy_server(monkeypatch) as url:
        status, body = raw(url, b"POST /invocations HTTP/1.1\r\nhost: x\r\ncontent-length: 99999999\r\n\r\n{")
        assert (status, body["error_code"]) == (413, "RESOURCE_LIMIT_EXCEEDED")
        assert body["message"].startswith("The request body must be at most 10000 bytes (serve.max_body_bytes)")
        length = b"9" * 5000  # beyond any integer the parser reads: not HTTP
        status, body = raw(url, b"POST /invocations HTTP/1.1\r\nhost: x\r\ncontent-length: " + length + b"\r\n\r\n")
        assert (status, body["error_code"]) == (400, "MALFORMED_REQUEST")
        assert httpx.post(f"{url}/invocations", content=b"{}" * 100).json() == {"ok": True}


def test_plain_text_errors_of_the_proxy_become_json(monkeypatch: pytest.MonkeyPatch) -> None:
    with proxy_server(monkeypatch) as url:
        busy = httpx.get(f"{url}/busy")
        assert (busy.status_code, busy.headers["content-type"]) == (503, "application/json")
        assert busy.json() == {
            "error_code": "TEMPORARILY_UNAVAILABLE",
            "message": "Request dropped due to backpressure (num_queued_requests=1, max_queued_requests=1).",
        }
        assert int(busy.headers["content-length"]) == len(busy.content)
        assert httpx.get(f"{url}/missing").json() == {"error_code": "ENDPOINT_NOT_FOUND", "message": "x"}
        metrics = httpx.get(f"{url}/metrics")
        assert (metrics.status_code, metrics.text) == (200, "sweeps_model_loaded 1.0\n")


def test_limits_travel_from_the_config_to_the_proxy_through_the_environment() -> None:
    settings = ServeConfig(max_header_bytes=2048, header_timeout_s=2.5, max_connections=30, max_body_bytes=4096)
    env = front_env(settings)
    assert env[PROXY_CALLBACK_KNOB] == CALLBACK
    assert FrontLimits.from_env(env) == FrontLimits(2048, 2.5, 30, 4096)
    assert FrontLimits.from_env({}) == FrontLimits() == FrontLimits.of(ServeConfig())


@pytest.mark.parametrize("raw_value", ["not json", "{}", '{"max_header_bytes": 0, "header_timeout_s": 1, '
                                       '"max_connections": 1, "max_body_bytes": 1}'])  # fmt: skip
def test_unreadable_limits_fall_back_to_the_defaults_with_a_warning(
    raw_value: str, caplog: pytest.LogCaptureFixture
) -> None:
    assert FrontLimits.from_env({ENV_LIMITS: raw_value}) == FrontLimits()
    assert f"{ENV_LIMITS} " in caplog.text
    assert "the HTTP front uses its defaults" in caplog.text


def test_every_refusal_is_mlflow_shaped_json() -> None:
    for kind, status in [("headers_too_large", 431), ("header_timeout", 408), ("too_many_connections", 503),
                         ("malformed", 400)]:  # fmt: skip
        got, body = refusal(kind, LIMITS)
        assert got == status
        assert set(json.loads(body)) == {"error_code", "message"}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("serve.max_header_bytes=100", r"serve.max_header_bytes: Input should be greater than or equal to 1024"),
        ("serve.max_header_bytes=2000000", r"serve.max_header_bytes: Input should be less than or equal to 1048576"),
        ("serve.header_timeout_s=0", r"serve.header_timeout_s: Input should be greater than 0 \(got 0\)"),
        ("serve.max_connections=1", r"serve.max_connections: Input should be greater than or equal to 2 \(got 1\)"),
        ("serve.trusted_formats=[]", r"serve.trusted_formats: Tuple should have at least 1 item"),
        ("serve.trusted_formats=[dill]", r"serve.trusted_formats.0: Input should be 'skops', 'pickle' or 'cloud"),
    ],
)
def test_serve_limits_and_trust_settings_are_checked_with_the_field_named(override: str, message: str) -> None:
    from sweeps.config import load_config
    from sweeps.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        load_config(overrides=[override])
