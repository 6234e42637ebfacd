"""Connections: the listening socket, timeouts for slow clients, a cap on open connections, quiet logs.

Before this module, 1,100 clients that sent their bodies slowly held 1,100 file descriptors
forever on a server with a 1,024 limit: every good client was locked out, and the event loop
logged 1.5 million "Too many open files" traceback lines in 20 s (issue 18). uvicorn has no
timeout for a request that is still arriving, so `guarded_protocol` wraps its HTTP protocol:

- a request's headers must be complete within `header_timeout_s` of the connection opening (or of
  its first byte, on a kept-alive connection), else 408 and the connection closes;
- its body must be complete within `body_timeout_s` of its headers, else the connection closes;
- at most `max_connections` are open (kept below the process's file-descriptor limit, so accept()
  never fails): a connection beyond the cap closes the one that has been sending its request, or
  idling, for longest, and when every open connection is being answered, it is refused with 503.
  Slow clients therefore cannot hold the server: a good client's request arrives in milliseconds,
  so it is never the oldest one still arriving.

`RepeatFilter` rate-limits log lines that repeat (timeouts, accept errors), and `open_socket`
binds the address before the model loads, turning every start-up failure into one line.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import socket
import time
from dataclasses import dataclass
from typing import Any

from cnnlab.errors import CnnlabError

__all__ = ["ConnectionLimits", "guarded_protocol", "RepeatFilter", "open_socket", "connection_cap", "LOG"]

LOG = logging.getLogger("uvicorn.error")  # uvicorn's own handler and level print it like its other lines
FD_RESERVE = 64  # descriptors kept free for the model files, logs, threads and the listening socket
_REFUSED = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\nRetry-After: 1\r\n\r\n"
_TIMED_OUT = b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


@dataclass(frozen=True)
class ConnectionLimits:
    """How long a request may take to arrive, and how many connections may be open at once."""

    # 10 s: a browser or curl sends its headers in one packet, milliseconds after connecting;
    # only a stalled or hostile client needs longer.
    header_timeout_s: float = 10.0
    # 60 s: the largest body accepted (20 MB) at 2.7 Mbit/s, a slow mobile uplink; a few MB of
    # photos need seconds on any link.
    body_timeout_s: float = 60.0
    # 1,000: more than a one-model server on a few cores answers at once (~200 requests/s on 2
    # cores); `connection_cap` lowers it to fit the descriptor limit (704 under the common 1,024).
    max_connections: int = 1000
    # 128: asyncio accepts up to `backlog` connections in one go, before any can be refused, and
    # a connection closed to make room frees its descriptor only on the loop's next turn, so the
    # cap keeps two bursts' worth free. With uvicorn's 2,048, 1,100 reconnecting slow clients
    # still ran the process out of descriptors; a short queue also means a good client waits
    # behind fewer queued connections.
    backlog: int = 128


def connection_cap(wanted: int, backlog: int) -> int:
    """`wanted`, lowered to fit this process's file-descriptor limit, less FD_RESERVE and 2 accept bursts.

    >>> 1 <= connection_cap(10, 128) <= 10
    True
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, soft - FD_RESERVE - 2 * backlog))


def guarded_protocol(base: type[asyncio.Protocol], limits: ConnectionLimits) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol class `base` (h11 or httptools) with `limits` enforced.

    It relies only on what both of uvicorn's protocols have: `connections` (the server's open
    connections), `transport`, and `cycle` (the request being handled, with `more_body` and
    `response_complete`).

    >>> from uvicorn.protocols.http.h11_impl import H11Protocol
    >>> guarded_protocol(H11Protocol, ConnectionLimits()).__name__
    'GuardedH11Protocol'
    """
    # Each `base` method is reached through Any: uvicorn's protocols declare attributes mypy cannot see.
    parent: Any = base

    class Guarded(parent):  # type: ignore[misc]
        def connection_made(self, transport: asyncio.Transport) -> None:
            super().connection_made(transport)
            self._timer: asyncio.TimerHandle | None = None
            self._phase, self._since = "idle", time.monotonic()
            self._arm("headers", limits.header_timeout_s)
            if _open(self.connections) > limits.max_connections:
                self._make_room()

        def data_received(self, data: bytes) -> None:
            if self._phase == "idle":  # the first byte of a new request on a kept-alive connection
                self._arm("headers", limits.header_timeout_s)
            super().data_received(data)
            self._follow_request()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._set_phase("idle")  # uvicorn's keep-alive timeout closes it if nothing follows
            self._follow_request()   # a pipelined request may already be under way

        def connection_lost(self, exc: Exception | None) -> None:
            self._set_phase("closed")
            super().connection_lost(exc)

        def _follow_request(self) -> None:
            cycle = self.cycle
            if cycle is None or cycle.response_complete or self._phase in ("app", "closed"):
                return
            if self._phase in ("idle", "headers"):  # headers complete: uvicorn started a request
                self._arm("body", limits.body_timeout_s)
            if self._phase == "body" and not cycle.more_body:
                self._set_phase("app")  # the whole request is here; the answer takes what it takes

        def _arm(self, phase: str, seconds: float) -> None:
            self._set_phase(phase)
            self._timer = asyncio.get_running_loop().call_later(seconds, self._timed_out, phase, seconds)

        def _set_phase(self, phase: str) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._phase, self._since = phase, time.monotonic()

        def _timed_out(self, phase: str, seconds: float) -> None:
            LOG.warning("closed a connection from %s: its request %s did not arrive within %g s",
                        _peer(self.client), phase, seconds)
            self._close(_TIMED_OUT)

        def _close(self, answer: bytes) -> None:
            arriving = self._phase in ("headers", "body")  # an idle kept-alive connection just closes
            self._set_phase("closed")
            if self.transport.is_closing():
                return
            if arriving and (self.cycle is None or self.cycle.response_complete or not self.cycle.response_started):
                self.transport.write(answer)
            self.transport.close()

        def _make_room(self) -> None:
            # Close whoever has been arriving or idling longest; a client being answered is left alone.
            waiting = [c for c in self.connections if getattr(c, "_phase", "app") in ("idle", "headers", "body")
                       and c is not self]
            if not waiting:
                LOG.warning("refused a connection from %s: %d connections are open, the limit (503)",
                            _peer(self.client), limits.max_connections)
                self._close(_REFUSED)
                return
            oldest = min(waiting, key=lambda c: c._since)
            LOG.warning("closed a connection from %s to make room (%d open, the limit): it was %s for %.1f s",
                        _peer(oldest.client), limits.max_connections,
                        {"idle": "idle", "headers": "sending headers", "body": "sending its body"}[oldest._phase],
                        time.monotonic() - oldest._since)
            oldest._close(_REFUSED)

    Guarded.__name__ = Guarded.__qualname__ = f"Guarded{base.__name__}"
    return Guarded


def _open(connections: set[Any]) -> int:
    # Closed connections stay in the set until asyncio calls connection_lost, a loop iteration later.
    return sum(not c.transport.is_closing() for c in connections)


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "a client"


class RepeatFilter(logging.Filter):
    """Let through at most `per_minute` lines of each kind a minute; the first keeps its traceback.

    A kind is the logger and the message's template ("closed a connection from %s ..."), so a
    flood of one failure costs a few lines a minute instead of millions; the next line let
    through says how many were held back.

    >>> f = RepeatFilter(per_minute=2)
    >>> records = [logging.LogRecord("x", logging.WARNING, "", 0, "slow %s", (i,), None) for i in range(5)]
    >>> [f.filter(r) for r in records]
    [True, True, False, False, False]
    """

    def __init__(self, per_minute: int = 10) -> None:
        super().__init__()
        self.per_minute = per_minute
        self._seen: dict[tuple[str, str], list[float]] = {}   # kind -> [window start, shown, held back]

    def filter(self, record: logging.LogRecord) -> bool:
        kind, now = (record.name, str(record.msg)), time.monotonic()
        window = self._seen.get(kind)
        if window is None or now - window[0] >= 60:
            held = int(window[2]) if window else 0
            self._seen[kind] = [now, 1, 0]
            if held:
                record.msg = f"{record.msg} ({held:,} more like this in the last minute were not logged)"
            return True
        if window[1] >= self.per_minute:
            window[2] += 1
            return False
        window[1] += 1
        if record.exc_info and record.exc_info[1] is not None:  # the first one showed the traceback
            record.msg = f"{record.msg} ({type(record.exc_info[1]).__name__}: {record.exc_info[1]})"
            record.exc_info, record.exc_text = None, None
        return True


def open_socket(host: str, port: int, backlog: int = ConnectionLimits.backlog) -> socket.socket:
    """A socket bound to `host`:`port`, or a one-line error naming the argument and the fix.

    >>> sock = open_socket("127.0.0.1", 0); sock.getsockname()[0]; sock.close()
    '127.0.0.1'
    >>> open_socket("127.0.0.1", 70000)
    Traceback (most recent call last):
    cnnlab.errors.CnnlabError: --port 70000 is not a TCP port; give a number from 1 to 65535 (the default is 8000)
    """
    if not 0 <= port <= 65535:  # 0 (any free port) is for tests; the CLI refuses it earlier
        raise CnnlabError(f"--port {port} is not a TCP port; give a number from 1 to 65535 (the default is 8000)")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, UnicodeError) as exc:
        raise CnnlabError(f"--host {host!r} is not a known address ({getattr(exc, 'strerror', None) or exc}); "
                          f"give an address of this machine such as 127.0.0.1 or 0.0.0.0") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # restart at once after a stop (TIME_WAIT)
    try:
        sock.bind(address)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise CnnlabError(_bind_error(host, port, exc)) from None
    return sock


def _bind_error(host: str, port: int, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return f"--port {port} is already in use on {host} (another server?); stop it or choose another --port"
    if exc.errno == errno.EACCES:
        return f"--port {port} needs administrator rights (ports below 1024); choose --port 1024 or above"
    if exc.errno == errno.EADDRNOTAVAIL:
        return (f"--host {host} is not an address of this machine; give one of its addresses, 127.0.0.1 "
                f"(this machine only) or 0.0.0.0 (all)")
    return f"cannot listen on --host {host} --port {port} ({exc.strerror or exc}); choose another address or port"
