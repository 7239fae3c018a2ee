"""How the proxy serves HTTP: uvicorn, with the limits its httptools protocol lacks.

    serve(settings, "proxy.__main__:app_from_env", log_config)

- **Header size**: a request line and headers over ``--max-header-bytes`` get 431 and the
  connection is closed. httptools buffers a header until it ends, with no bound of its own (a
  100 MB value grew the process by 400 MB), so the bytes are counted as they arrive.
- **Header-read timeout**: a request whose headers are not complete ``--header-timeout``
  seconds after the connection opened (or after the request's first byte, on a kept-alive
  connection) gets 408 and is closed, so connections trickling a byte at a time do not pile up.
  A new connection that sent nothing is closed without a word, as an idle kept-alive one is.
- **Connection cap**: beyond ``--max-connections`` in a worker, a new connection closes the
  idle connection (waiting for a request's headers) that has waited longest; when every
  connection is busy with a request, the new one gets 503 ``server-busy`` at once. Either way
  the worker answers instead of running out of file descriptors, whose limit is checked at
  start.
- **Lingering close**: a response sent before the request's body was read (413, 401) closes
  the connection only once the client has finished sending, within a bound (Apache's and
  nginx's lingering close): clients that write the whole body before reading, like Python's
  urllib, see the answer instead of a connection reset.
- **Shutdown with ``--workers N``**: the listening socket stops accepting the moment the
  supervisor is told to stop, so new connections are refused at once instead of waiting in
  the kernel's queue of a socket no worker reads any more.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import resource
import signal
import socket
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from types import FrameType
from typing import Any, cast

import uvicorn
from uvicorn._types import ASGI3Application, ASGIReceiveCallable, ASGISendCallable, ASGISendEvent
from uvicorn._types import Scope as UvicornScope
from uvicorn.config import STARTUP_FAILURE
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)
from uvicorn.server import ServerState
from uvicorn.supervisors.multiprocess import Multiprocess

from proxy.errors import HeadersTooLarge, ProblemError, RequestTimeout, ServerBusy
from proxy.settings import Settings, SettingsError, named

# nginx's lingering_time: how long a client may go on sending a body already answered.
LINGER_SECONDS = 30.0
# File descriptors a worker needs besides its clients': the upstream pool (200, app.py),
# Redis, the metrics files, the interpreter's own.
FD_RESERVE = 512


@dataclass(frozen=True, slots=True)
class Limits:
    max_header_bytes: int = 16 * 1024
    header_timeout: float = 10.0
    max_connections: int = 1000

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        return cls(settings.max_header_bytes, settings.header_timeout, settings.max_connections)


def answer(error: ProblemError, default_headers: Iterable[tuple[bytes, bytes]] = ()) -> bytes:
    """A problem as a whole HTTP/1.1 response that closes its connection."""
    body = json.dumps(error.as_json(), ensure_ascii=False, separators=(",", ":")).encode()
    headers = [*default_headers, (b"content-type", b"application/problem+json"),
               (b"content-length", str(len(body)).encode()), (b"connection", b"close"),
               *((name.lower().encode(), value.encode()) for name, value in error.headers.items())]
    lines = b"".join(name + b": " + value + b"\r\n" for name, value in headers)
    return STATUS_LINE[error.status] + lines + b"\r\n" + body


class Protocol(HttpToolsProtocol):
    """One client connection: uvicorn's httptools protocol within :class:`Limits`."""

    def __init__(self, config: uvicorn.Config, server_state: ServerState,
                 app_state: dict[str, Any], _loop: asyncio.AbstractEventLoop | None = None,
                 *, limits: Limits = Limits()) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits
        self.header_bytes = 0  # of the request being read, while its headers are incomplete
        self.headers_since: float | None = None  # when they began; None once they are complete
        self.header_timer: asyncio.TimerHandle | None = None
        self.linger_timer: asyncio.TimerHandle | None = None
        self.lingering = False  # answered; the rest of the request's body is read and dropped
        self.waiting_since = 0.0  # when the connection last began waiting for a request

    # Connections

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]  # uvicorn's own annotation
        self.waiting_since = self.loop.time()
        if len(self.connections) > self.limits.max_connections and not self._close_idlest():
            self._refuse(ServerBusy(
                f"the proxy has {self.limits.max_connections} connections, each running a request"))
            return
        self.headers_since = self.loop.time()
        self.header_timer = self.loop.call_later(self.limits.header_timeout, self._check_headers)

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self.header_timer, self.linger_timer):
            if timer is not None:
                timer.cancel()
        super().connection_lost(exc)

    def idle(self) -> bool:
        """Waiting for a request (or lingering after one): nothing is lost by closing it."""
        return ((self.cycle is None or self.cycle.response_complete)
                and not self.transport.is_closing())

    def _close_idlest(self) -> bool:
        idle = [c for c in self.connections if c is not self and isinstance(c, Protocol)
                and c.idle()]
        if not idle:
            return False
        min(idle, key=lambda c: c.waiting_since).transport.close()
        return True

    def _refuse(self, error: ProblemError) -> None:
        if self.cycle is None or self.cycle.response_complete:  # not in the middle of an answer
            self.transport.write(answer(error, self.server_state.default_headers))
        self.transport.close()

    # Reading a request's headers

    def _check_headers(self) -> None:
        """The connection's one timer (one per request would cost more than the rest of
        this class): due when the headers being read are late, otherwise set again."""
        wait = self.limits.header_timeout
        if self.headers_since is not None:
            wait = self.headers_since + self.limits.header_timeout - self.loop.time()
            if wait <= 0:
                self._headers_late()
                return
        self.header_timer = self.loop.call_later(wait, self._check_headers)

    def _headers_late(self) -> None:
        if not self.header_bytes:  # not a byte of a request: closed as an idle connection is
            self.transport.close()
            return
        self._refuse(RequestTimeout(
            f"the request's headers did not arrive within {self.limits.header_timeout:g} seconds"))

    def data_received(self, data: bytes) -> None:
        if self.lingering:
            return  # the rest of a body already answered
        super().data_received(data)
        if self.headers_since is not None and not self.transport.is_closing():
            # Still in a request's headers. (A pipelined request that began in this chunk is
            # charged the end of the previous one too: at most one read, in a rare case.)
            self.header_bytes += len(data)
            if self.header_bytes > self.limits.max_header_bytes:
                self._refuse(HeadersTooLarge(
                    f"the request line and headers are over {self.limits.max_header_bytes} bytes"))

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.header_bytes = 0
        self.headers_since = self.loop.time()

    def on_headers_complete(self) -> None:
        self.headers_since = None
        super().on_headers_complete()

    # Answering before the body was read

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        super()._start_asgi_task(cycle, self._closing_early(cycle, app))

    def _closing_early(self, cycle: RequestResponseCycle,
                       app: ASGI3Application) -> ASGI3Application:
        """``app``, but an answer that starts before the request's body has all arrived says
        ``Connection: close`` and leaves the closing to :meth:`on_response_complete`."""

        async def closing_early(scope: UvicornScope, receive: ASGIReceiveCallable,
                                send: ASGISendCallable) -> None:
            async def watched(message: ASGISendEvent) -> None:
                if cycle.more_body:
                    if message["type"] == "http.response.start":
                        cycle.keep_alive = False  # uvicorn writes Connection: close
                    elif message["type"] == "http.response.body" and not message.get("more_body"):
                        cycle.keep_alive = True  # uvicorn would close now, unread bytes and all
                        self.lingering = True
                await send(message)

            await app(scope, receive, watched)

        return closing_early

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self.waiting_since = self.loop.time()
        if self.lingering and not self.transport.is_closing():
            self._unset_keepalive_if_required()
            self.transport.write_eof()  # the answer, then FIN; the client's EOF closes it
            self.linger_timer = self.loop.call_later(LINGER_SECONDS, self.transport.close)


class Supervisor(Multiprocess):
    """uvicorn's supervisor of ``--workers N``, closing the door as soon as it is told to stop.

    The workers share the supervisor's listening socket, and it stays open until they have all
    finished their requests: the kernel kept completing new connections that no worker would
    accept, and they hung until the end. ``shutdown()`` on the socket stops it listening in every
    process at once, so a new connection is refused while the workers finish."""

    def __init__(self, config: uvicorn.Config, sockets: list[socket.socket]) -> None:
        super().__init__(config, sockets)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._stop_listening)

    def _stop_listening(self, sig: int, frame: FrameType | None) -> None:
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self.signal_queue.append(sig)


def reserve_descriptors(settings: Settings) -> None:
    """Raise this process's (and so its workers') open-file limit to what ``--max-connections``
    needs, as far as the hard limit allows; stop the start if it cannot."""
    needed = settings.max_connections + FD_RESERVE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    except (ValueError, OSError) as exc:  # above the hard limit, or the kernel's
        raise SettingsError(
            f"{named('max_connections')}={settings.max_connections} needs {needed} open files "
            f"per worker; the limit is {hard} (ulimit -Hn)") from exc


def serve(settings: Settings, app: str, log_config: dict[str, Any]) -> None:
    """Run ``app`` (a factory's import string) as uvicorn.run does, with the proxy's protocol
    and, for several workers, its supervisor (after :func:`reserve_descriptors`)."""
    protocol = functools.partial(Protocol, limits=Limits.of(settings))
    config = uvicorn.Config(
        app, factory=True, host=settings.host, port=settings.port, workers=settings.workers,
        log_config=log_config, access_log=False, ws="none",
        http=cast("type[asyncio.Protocol]", protocol))  # called as the class would be
    if settings.workers > 1:
        with contextlib.suppress(KeyboardInterrupt):
            Supervisor(config, sockets=[config.bind_socket()]).run()
        return
    server = uvicorn.Server(config)
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    if not server.started:
        sys.exit(STARTUP_FAILURE)
