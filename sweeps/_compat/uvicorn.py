"""uvicorn's httptools protocol, fenced and bounded: header size, header time and open connections.

Ray Serve's HTTP proxy runs uvicorn with its defaults, which on a machine with httptools means
`HttpToolsProtocol`: no limit on the size of a request's headers (they pile up in memory while
the parser waits for their end), no limit on how long a client may take to send them (the
keep-alive timeout is cancelled by every byte received), and no limit on open connections.
`bounded_protocol` subclasses it, using its internals (`parser`, `cycle`, `connections`, the
parser callbacks), which is why this lives here, checked against `TESTED_UVICORN`:

- headers (request line included) over `max_header_bytes` are answered 431 and the connection
  closed, without feeding the excess to the parser, so memory stays bounded;
- a request whose headers are not complete `header_timeout_s` after its first byte (or after the
  connection opened) is answered 408 and closed: a client sending a byte a second is cut off;
- with more than `max_connections` open, the connection idle the longest (no request in flight:
  waiting for headers, or kept alive between requests) is closed to make room; when none is
  idle, the new connection is answered 503 and closed. A flood of idle connections then
  displaces itself, and a fresh client still gets its answer;
- a request the parser rejects is answered 400, like uvicorn does, but in the caller's format.

After a refusal the connection is closed the way nginx's lingering close does it: the answer is
sent, the write side shut, and whatever the client still sends is read and dropped for
`LINGER_S` before the socket is closed. Closing at once with unread bytes would make the kernel
send a reset that can destroy the answer before the client reads it.

`answer(kind)` gives the status and JSON body for each refusal ("headers_too_large",
"header_timeout", "too_many_connections", "malformed"). On another uvicorn, or without
httptools, `uvicorn_options` falls back to uvicorn's public options: the h11 parser with
`h11_max_incomplete_event_size` (headers bounded, plain-text 400), after one warning.
"""

from __future__ import annotations

import asyncio
import http
from collections.abc import Callable
from typing import Any, ClassVar

from sweeps._compat import check_version

__all__ = ["TESTED_UVICORN", "Answer", "bounded_protocol", "uvicorn_options"]

TESTED_UVICORN = "0.54.*"
LINGER_S = 1.0
Answer = Callable[[str], tuple[int, bytes]]


def _response(status: int, body: bytes) -> bytes:
    phrase = http.HTTPStatus(status).phrase
    head = (
        f"HTTP/1.1 {status} {phrase}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


def bounded_protocol(
    max_header_bytes: int, header_timeout_s: float, max_connections: int, answer: Answer
) -> type[asyncio.Protocol]:
    """A subclass of uvicorn's `HttpToolsProtocol` that keeps these bounds (raises ImportError without httptools)."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class BoundedHttpToolsProtocol(HttpToolsProtocol):
        # Connections with no request in flight, the one idle longest first (dicts keep insertion order).
        idle: ClassVar[dict[BoundedHttpToolsProtocol, None]] = {}

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._header_bytes = 0
            self._awaiting_headers = True
            self._header_timer: asyncio.TimerHandle | None = None
            self._lingering = False

        # -- connections ---------------------------------------------------------------------

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self.idle[self] = None
            self._start_header_timer()
            if len(self.connections) > max_connections:
                oldest = next(iter(self.idle))
                if oldest is not self:
                    oldest._close()
                else:  # nothing idle to give way: every other connection has a request in flight
                    self._refuse("too_many_connections")

        def connection_lost(self, exc: Exception | None) -> None:
            self._forget()
            super().connection_lost(exc)

        def _forget(self) -> None:
            self.idle.pop(self, None)
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _close(self) -> None:
            self._forget()
            if not self.transport.is_closing():
                self.transport.close()

        def _refuse(self, kind: str) -> None:
            status, body = answer(kind)
            self._forget()
            if self.transport.is_closing() or self._lingering:
                return
            self._lingering = True
            self.transport.write(_response(status, body))
            if self.transport.can_write_eof():
                self.transport.write_eof()
            self.loop.call_later(LINGER_S, self._close)

        # -- header size and time ------------------------------------------------------------

        def _start_header_timer(self) -> None:
            self._header_timer = self.loop.call_later(header_timeout_s, self._header_timeout)

        def _header_timeout(self) -> None:
            self._header_timer = None
            if self._awaiting_headers:
                self._refuse("header_timeout")

        def data_received(self, data: bytes) -> None:
            if self._lingering or self.transport.is_closing():
                return  # a refused connection: what the client still sends is dropped
            if not self._awaiting_headers:
                super().data_received(data)
                return
            if self._header_timer is None:
                self._start_header_timer()
            room = max_header_bytes - self._header_bytes
            if len(data) <= room:
                self._header_bytes += len(data)
                super().data_received(data)
                return
            super().data_received(data[:room])  # may end the headers; the rest is then body
            if self._awaiting_headers:
                self._refuse("headers_too_large")
            elif not self.transport.is_closing():
                super().data_received(data[room:])

        def on_headers_complete(self) -> None:
            self._awaiting_headers = False
            self._forget()  # a request is in flight: not idle, no header timer
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._awaiting_headers = True  # what comes next is the next request's headers
            self._header_bytes = 0

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and self._awaiting_headers:
                self.idle[self] = None  # kept alive: idle from now on

        def send_400_response(self, msg: str) -> None:
            self._refuse("malformed")

    return BoundedHttpToolsProtocol


def uvicorn_options(
    max_header_bytes: int, header_timeout_s: float, max_connections: int, answer: Answer
) -> dict[str, Any]:
    """`uvicorn.Config` options that keep the bounds: the bounded protocol, or h11's public header limit."""
    if check_version("uvicorn", TESTED_UVICORN, "the h11 parser with a header size limit only"):
        try:
            return {"http": bounded_protocol(max_header_bytes, header_timeout_s, max_connections, answer)}
        except ImportError:
            pass
    return {"http": "h11", "h11_max_incomplete_event_size": max_header_bytes}
