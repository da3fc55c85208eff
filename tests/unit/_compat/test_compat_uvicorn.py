"""uvicorn's httptools protocol, bounded: a real uvicorn server in this process, hostile clients on sockets."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from typing import Any

import httpx
import pytest
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

import sweeps._compat
from sweeps._compat.uvicorn import TESTED_UVICORN, bounded_protocol, uvicorn_options

ANSWERS = {
    "headers_too_large": 431,
    "header_timeout": 408,
    "too_many_connections": 503,
    "malformed": 400,
}


def answer(kind: str) -> tuple[int, bytes]:
    return ANSWERS[kind], json.dumps({"error_code": kind.upper(), "message": kind}).encode()


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["path"] == "/slow":
        await asyncio.sleep(3.0)
    reply = json.dumps({"path": scope["path"], "body_bytes": len(body)}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(reply)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": reply})


@contextmanager
def server(max_header_bytes: int = 1024, header_timeout_s: float = 0.5, max_connections: int = 4) -> Iterator[str]:
    """A uvicorn server with the bounded protocol on a free port; yields its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    protocol = bounded_protocol(max_header_bytes, header_timeout_s, max_connections, answer)
    config = uvicorn.Config(app, http=protocol, lifespan="off", log_level="critical", timeout_keep_alive=30)
    instance = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(instance.serve(sockets=[sock])), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not instance.started and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        instance.should_exit = True
        thread.join(10)
        sock.close()


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def read_answer(sock: socket.socket) -> tuple[int, dict[str, Any]]:
    """Status and JSON body of the next answer on `sock`."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"closed without an answer after {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lengths = [line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")]
    length = int(lengths[0])
    while len(body) < length:
        body += sock.recv(65536)
    return int(head.split()[1]), json.loads(body[:length])


def refused(sock: socket.socket) -> tuple[int, str, bool]:
    """Status and error code of a refusal, and whether the server closed the connection after it."""
    status, body = read_answer(sock)
    return status, body["error_code"], is_closed(sock)


def is_closed(sock: socket.socket, wait_s: float = 5.0) -> bool:
    """Whether the server closed `sock` (end of stream within `wait_s`)."""
    sock.settimeout(wait_s)
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_the_tested_uvicorn_gets_the_bounded_protocol() -> None:
    options = uvicorn_options(1024, 1.0, 10, answer)
    assert set(options) == {"http"}
    assert issubclass(options["http"], HttpToolsProtocol)
    assert TESTED_UVICORN == "0.54.*"


def test_an_untested_uvicorn_falls_back_to_h11_with_a_header_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sweeps._compat, "installed_version", lambda package: "0.99.0")
    assert uvicorn_options(2048, 1.0, 10, answer) == {"http": "h11", "h11_max_incomplete_event_size": 2048}


def test_ordinary_requests_and_keep_alive_pass() -> None:
    with server() as url, httpx.Client(base_url=url) as http:
        for _ in range(3):
            response = http.post("/x", content=b"a" * 100_000)  # a body far beyond the header limit
            assert response.json() == {"path": "/x", "body_bytes": 100_000}


def test_headers_over_the_limit_are_431_json_and_the_server_stays_up() -> None:
    with server(max_header_bytes=2048) as url:
        for size in (3000, 5_000_000):
            with connect(url) as sock:
                # the server may answer and close before everything is sent
                with suppress(BrokenPipeError, ConnectionResetError):
                    sock.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * size + b"\r\n\r\n")
                assert refused(sock) == (431, "HEADERS_TOO_LARGE", True)
        with connect(url) as sock:  # headers just within the limit, body in the same packet
            head = b"POST /ok HTTP/1.1\r\nhost: x\r\ncontent-length: 5000\r\n"
            pad = b"x-pad: " + b"a" * (2048 - len(head) - 11) + b"\r\n\r\n"
            sock.sendall(head + pad + b"b" * 5000)
            assert read_answer(sock) == (200, {"path": "/ok", "body_bytes": 5000})
        assert httpx.get(f"{url}/after").status_code == 200


def test_a_client_sending_a_header_byte_a_second_is_cut_off_with_408() -> None:
    with server(header_timeout_s=1.0) as url, connect(url) as sock:
        start = time.monotonic()
        request = b"GET /health HTTP/1.1\r\nhost: x\r\nx-slow: " + b"a" * 100
        sent = 0
        try:
            while sent < len(request):
                sock.sendall(request[sent : sent + 1])
                sent += 1
                time.sleep(0.25)
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert refused(sock) == (408, "HEADER_TIMEOUT", True)
        assert sent < len(request), "the client was cut off before it finished"
        assert time.monotonic() - start < 10


def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout() -> None:
    with server(header_timeout_s=0.5) as url, connect(url) as sock:
        assert refused(sock) == (408, "HEADER_TIMEOUT", True)


def test_idle_connections_beyond_the_bound_give_way_and_a_fresh_client_is_served() -> None:
    with server(max_connections=5, header_timeout_s=30.0) as url, ExitStack() as stack:
        idle = [stack.enter_context(connect(url)) for _ in range(20)]
        for sock in idle:
            sock.sendall(b"GET / HTTP/1.1\r\n")  # headers started, never finished
        time.sleep(0.5)
        response = httpx.get(f"{url}/fresh")
        assert response.json()["path"] == "/fresh"
        closed = [is_closed(sock, wait_s=0.5) for sock in idle]
        assert sum(closed) >= 20 - 5 + 1  # the oldest gave way, one more for the fresh client
        assert closed[-3:] == [False, False, False]  # the newest are the last to go


def test_when_every_connection_has_a_request_in_flight_a_new_one_is_503_json() -> None:
    with server(max_connections=2) as url, ExitStack() as stack:
        busy = [stack.enter_context(connect(url)) for _ in range(2)]
        for sock in busy:
            sock.sendall(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
        time.sleep(0.3)
        with connect(url) as extra:
            assert refused(extra) == (503, "TOO_MANY_CONNECTIONS", True)
        for sock in busy:
            assert read_answer(sock)[0] == 200


def test_a_malformed_request_is_a_json_400() -> None:
    with server() as url, connect(url) as sock:
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        assert refused(sock) == (400, "MALFORMED", True)
