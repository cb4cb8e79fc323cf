"""The TCP listener: DNS over TCP (RFC 7766) on one listen address, for clients.

Several queries per connection, answered as they complete (out of order), an idle timeout, a
cap on connections and on queries in flight per connection; a frame longer than the data sent
is never waited for past the idle timeout, and a frame trickling in byte by byte does not keep
a connection alive: only a whole query or an answer counts as activity (slowloris, RFC 7766
section 10). At the connection cap a new connection takes the slot of the connection idle the
longest (no query in flight, nothing waiting to be sent), as RFC 7766 section 6.2.3 allows;
only when every connection is busy is the new one refused. A connection at its in-flight cap is not read from
(back-pressure: the rest of its queries wait in our buffer and the kernel's) until an answer
goes out; a query is never dropped, since a TCP client does not retry it.

TCP runs on raw non-blocking sockets driven by ``loop.add_reader`` like the UDP listener
(``listener.py``), not on asyncio's transports (a protocol callback chain, a buffer copy and a
write buffer per message cost ~3x the cache hit). Theory of operation, per connection:

- readable: ``recv_into`` one buffer shared by the server (a connection keeps only the tail of
  a frame that has not fully arrived, usually nothing), split frames, answer hits inline;
- an answer goes out with ``sock.send`` at once; what the kernel does not take waits in the
  connection's out-buffer, sent by a writer callback. Past ``OUT_HIGH`` bytes waiting, no
  further frame is handled and the connection is not read until the client has read its
  answers down to ``OUT_LOW`` (it cannot make us buffer without end by never reading);
- at ``max_inflight`` unanswered queries the connection is not read either (frames already
  read wait with the tail) until an answer frees a slot;
- EOF from the client (half-close): the queries in flight are still answered, then the
  connection is closed (RFC 7766 section 6.2.3);
- idle: no whole query in and no answer out for ``idle_timeout`` closes it, unless queries are
  in flight (then ``TCP_STUCK_AFTER``). One timer per connection, re-armed lazily when it fires, so traffic
  never touches the timer heap.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import socket
from collections.abc import Callable
from time import monotonic

from .listener import HandleQuery

log = logging.getLogger("mifdns.listener")  # one logger for both listeners

# an idle TCP connection with queries in flight is kept open while they may still be answered;
# past this many seconds without a byte either way it is closed all the same (a query that is
# never answered must not pin a connection slot for ever)
TCP_STUCK_AFTER = 60.0

FRAME_MAX = 2 + 65535  # a length prefix and the largest DNS message
OUT_HIGH = 64 << 10  # answers waiting for a client that does not read: stop reading it...
OUT_LOW = 16 << 10  # ... until it has read this far down
ACCEPT_BATCH = 32  # connections accepted per wake-up
ACCEPT_RETRY = 0.1  # out of file descriptors: stop accepting for this long


class TcpServer:
    """Accepts DNS-over-TCP clients on one address."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        address: str,
        port: int,
        handle: HandleQuery,
        after_batch: Callable[[], None],
        *,
        max_clients: int = 256,
        max_inflight: int = 128,
        idle_timeout: float = 10.0,
    ) -> None:
        self.loop = loop
        self.address = address
        self.port = port
        self.handle = handle
        self.after_batch = after_batch
        self.max_clients = max_clients
        self.max_inflight = max_inflight
        self.idle_timeout = idle_timeout
        self.clients: set[TcpClient] = set()
        self.server: _Acceptor | None = None
        self.sock: socket.socket | None = None
        # one receive buffer for every connection: room for a frame's tail and a full frame
        self._rbuf = bytearray(2 * FRAME_MAX)
        self._rview = memoryview(self._rbuf)
        self.counters = {
            "accepted": 0,
            "refused_limit": 0,
            "evicted": 0,
            "idle_closed": 0,
            "oversize": 0,
            "inflight_limit": 0,
            "responses_dropped": 0,
            "write_blocked": 0,
            "read_paused": 0,
            "accept_errors": 0,
        }

    async def start(self) -> None:
        ip = ipaddress.ip_address(self.address)
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((self.address, self.port))
            sock.listen(256)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self.sock = sock
        self.server = _Acceptor(self)
        self.loop.add_reader(sock.fileno(), self._accept)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for c in list(self.clients):
            c.abort()

    def _accept(self) -> None:
        sock = self.sock
        if sock is None:
            return
        clients = self.clients
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _addr = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self.counters["accept_errors"] += 1
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # out of descriptors: the backlog waits (the kernel holds it) instead of
                    # this callback spinning; the open connections free some as they close
                    log.warning(
                        "TCP accept: %s; pausing accepts for %.1f s", exc.strerror, ACCEPT_RETRY
                    )
                    self.loop.remove_reader(sock.fileno())
                    self.loop.call_later(ACCEPT_RETRY, self._resume_accepting)
                return
            if len(clients) >= self.max_clients and not self._evict_idlest():
                self.counters["refused_limit"] += 1
                conn.close()
                continue
            try:
                conn.setblocking(False)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                conn.close()
                continue
            client = TcpClient(self, conn)
            clients.add(client)
            self.counters["accepted"] += 1
            client.start()

    def _evict_idlest(self) -> bool:
        """At the cap: close the connection idle the longest (no query in flight, no answer
        waiting to go out) to make room; False if every connection is busy."""
        idlest: TcpClient | None = None
        for c in self.clients:
            if c.inflight == 0 and c.out is None and (idlest is None or c.active < idlest.active):
                idlest = c
        if idlest is None:
            return False
        self.counters["evicted"] += 1
        idlest.abort()
        return True

    def _resume_accepting(self) -> None:
        if self.sock is not None and self.server is not None:
            self.loop.add_reader(self.sock.fileno(), self._accept)


class _Acceptor:
    """``TcpServer.server``: closing it stops accepting; open connections go on."""

    def __init__(self, srv: TcpServer) -> None:
        self.srv = srv

    def close(self) -> None:
        srv = self.srv
        sock, srv.sock, srv.server = srv.sock, None, None
        if sock is not None:
            try:
                srv.loop.remove_reader(sock.fileno())
            except (ValueError, OSError, RuntimeError):
                pass
            sock.close()


class TcpClient:
    """One client connection; the ``client`` handed to the resolver, answered by ``send``."""

    __slots__ = (
        "active",
        "closed",
        "closing",
        "eof",
        "fd",
        "idle",
        "inflight",
        "loop",
        "out",
        "paused",
        "reading",
        "resuming",
        "sock",
        "srv",
        "tail",
    )

    def __init__(self, server: TcpServer, sock: socket.socket) -> None:
        self.srv = server
        self.sock = sock
        self.fd = sock.fileno()
        self.loop = server.loop
        self.tail = b""  # bytes read but not handled yet: a frame's start, or frames at the cap
        self.out: bytearray | None = None  # answers the kernel did not take yet
        self.inflight = 0
        self.closed = False
        self.eof = False  # the client half-closed (or reset)
        self.paused = False  # at the in-flight cap: not reading, frames wait in ``tail``
        self.resuming = False  # a _resume is scheduled
        self.reading = False  # our reader callback is registered
        self.closing = False  # close once ``out`` is sent
        self.active = server.loop.time()  # last whole query received or answer sent
        self.idle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._set_reading(True)
        self.idle = self.loop.call_at(self.active + self.srv.idle_timeout, self._on_idle)

    # ------------------------------------------------------------------ reading
    def _readable(self) -> None:
        srv = self.srv
        tail = self.tail
        start = len(tail)
        if start:
            srv._rbuf[:start] = tail
            view = srv._rview[start:]
        else:
            view = srv._rview
        try:
            n = self.sock.recv_into(view)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # reset by the peer
            self._close()
            return
        if n == 0:
            self._on_eof()
            return
        self._parse(start + n)

    def _parse(self, fill: int) -> None:
        """Handle the frames in the server's buffer up to ``fill``; keep the rest in ``tail``."""
        srv = self.srv
        buf = srv._rbuf
        handle = srv.handle
        now = monotonic()  # the core's clock (see daemon.py)
        pos = 0
        handled = False
        while fill - pos >= 2:
            length = buf[pos] << 8 | buf[pos + 1]
            if length < 12:
                srv.counters["oversize"] += 1
                self._close()
                return
            end = pos + 2 + length
            if end > fill:
                break
            if self.inflight >= srv.max_inflight:
                srv.counters["inflight_limit"] += 1
                self.paused = True  # the frame waits in ``tail`` until an answer frees a slot
                break
            out = self.out
            if out is not None and len(out) > OUT_HIGH:
                break  # the client does not read its answers: the rest waits until it does
            msg = bytes(buf[pos + 2 : end])
            pos = end
            if msg[2] & 0x80:  # a response (QR=1): never answered, so never in flight
                srv.counters["responses_dropped"] += 1
                continue
            self.inflight += 1
            handled = True
            try:
                reply = handle(msg, self, now, None)
            except Exception:
                log.exception("TCP query crashed the handler")
                self.inflight -= 1
                continue
            if reply is not None:
                self.send(reply)
                if self.closed:
                    return
        self.tail = bytes(buf[pos:fill]) if pos < fill else b""
        if self.paused or self.out is not None:
            self._update_reading()
        if handled:
            self.active = self.loop.time()  # whole queries, not bytes, keep it open
            srv.after_batch()

    def _waiting(self) -> bool:
        """A whole frame waits in ``tail`` (held back by the in-flight cap or the out-buffer)."""
        tail = self.tail
        return len(tail) >= 2 and len(tail) >= 2 + (tail[0] << 8 | tail[1])

    def _on_eof(self) -> None:
        # half-close: answer what is in flight, then close (RFC 7766 section 6.2.3)
        self.eof = True
        self._update_reading()
        if self.inflight == 0 and not self._waiting():
            self._close_when_sent()

    # ------------------------------------------------------------------ writing
    def send(self, data: bytes) -> None:
        """Send one answer (called inline for hits, from the daemon's flush for the rest)."""
        if self.inflight:
            self.inflight -= 1
        if self.closed:
            return
        msg = len(data).to_bytes(2, "big") + data
        out = self.out
        if out is None:
            try:
                n = self.sock.send(msg)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError:
                self._close()
                return
            if n < len(msg):
                self.out = bytearray(msg[n:])
                self.srv.counters["write_blocked"] += 1
                self.loop.add_writer(self.fd, self._writable)
        else:
            out += msg
            if len(out) > OUT_HIGH and self.reading:
                self._update_reading()
        self.active = self.loop.time()
        if self.paused:
            if self.inflight < self.srv.max_inflight and not self.resuming:
                self.resuming = True  # parse the waiting frames on the next loop turn: never
                self.loop.call_soon(self._resume)  # re-enter the resolver from here
        elif self.eof and self.inflight == 0 and not self._waiting():
            self._close_when_sent()

    def _writable(self) -> None:
        out = self.out
        if out is None or self.closed:
            return
        try:
            n = self.sock.send(out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close()
            return
        del out[:n]
        if out:  # a client reading its answers a byte at a time does not keep it open either
            if len(out) <= OUT_LOW and not self.reading:
                self._unblock()
            return
        self.out = None
        self.active = self.loop.time()
        self.loop.remove_writer(self.fd)
        if self.closing:
            self._close()
        else:
            self._unblock()

    def _unblock(self) -> None:
        """The client read its answers: handle the frames held back, then read again."""
        if self._waiting() and not self.resuming:
            self._resume()
        else:
            self._update_reading()

    # ------------------------------------------------------------------ flow control
    def _update_reading(self) -> None:
        out = self.out
        self._set_reading(
            not (self.closed or self.eof or self.paused or self.closing)
            and (out is None or len(out) <= (OUT_LOW if not self.reading else OUT_HIGH))
        )

    def _set_reading(self, on: bool) -> None:
        if on == self.reading:
            return
        self.reading = on
        if on:
            self.loop.add_reader(self.fd, self._readable)
        else:
            self.srv.counters["read_paused"] += 1
            self.loop.remove_reader(self.fd)

    def _resume(self) -> None:
        self.resuming = False
        if self.closed:
            return
        self.paused = False
        tail = self.tail
        if tail:
            self.srv._rbuf[: len(tail)] = tail
            self._parse(len(tail))
            if self.closed or self.paused or self._waiting():
                return
        if self.eof:
            if self.inflight == 0 and not self._waiting():
                self._close_when_sent()
        else:
            self._update_reading()

    # ------------------------------------------------------------------ closing
    def _close_when_sent(self) -> None:
        if self.out is None:
            self._close()
        else:
            self.closing = True
            self._set_reading(False)

    def abort(self) -> None:
        self._close()

    def _close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.srv.clients.discard(self)
        loop = self.loop
        if self.reading:
            self.reading = False
            loop.remove_reader(self.fd)
        if self.out is not None:
            self.out = None
            loop.remove_writer(self.fd)
        if self.idle is not None:
            self.idle.cancel()
            self.idle = None
        self.tail = b""
        self.sock.close()

    def _on_idle(self) -> None:
        self.idle = None
        if self.closed:
            return
        now = self.loop.time()
        timeout = self.srv.idle_timeout
        if now < self.active + timeout:  # traffic since: sleep until the new deadline
            self.idle = self.loop.call_at(self.active + timeout, self._on_idle)
            return
        if self.inflight and now - self.active < TCP_STUCK_AFTER:
            self.idle = self.loop.call_at(now + timeout, self._on_idle)
            return
        self.srv.counters["idle_closed"] += 1
        self._close()  # nothing moved for a whole timeout: answers still waiting go too
