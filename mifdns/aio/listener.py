"""Client-facing sockets: UDP and TCP on every listen address.

UDP: a non-blocking socket watched with ``loop.add_reader``; each wake-up drains up to
``batch`` datagrams with ``recvfrom_into`` into one reusable buffer (asyncio's stock datagram
transport allocates 256 KiB per datagram, which costs more than the whole cache hit). Cache hits
are answered inline; the resolver's outbox is drained once per batch.

TCP (RFC 7766): several queries per connection, answered as they complete (out of order), an
idle timeout, a cap on connections and on queries in flight per connection; a frame longer than
the data sent is never waited for past the idle timeout. A connection at its in-flight cap is
not read from (back-pressure: the rest of its queries wait in our buffer and the kernel's) until
an answer goes out; a query is never dropped, since a TCP client does not retry it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from typing import Any, Callable, cast

log = logging.getLogger("mifdns.listener")

# on loopback the client may receive up to this much over UDP (systemd-resolved's stub does too);
# elsewhere 1232 avoids fragmentation (DNS flag day 2020)
LOOPBACK_UDP_MAX = 65494
NETWORK_UDP_MAX = 1232

HandleQuery = Callable[[bytes, object, float, "int | None"], "bytes | None"]

# an idle TCP connection with queries in flight is kept open while they may still be answered;
# past this many seconds without a byte either way it is closed all the same (a query that is
# never answered must not pin a connection slot for ever)
TCP_STUCK_AFTER = 60.0


class UdpListener:
    def __init__(
        self, loop: asyncio.AbstractEventLoop, address: str, port: int, handle: HandleQuery,
        after_batch: Callable[[], None], *, batch: int = 64,
    ) -> None:
        self.loop = loop
        self.address = address
        self.port = port
        self.handle = handle
        self.after_batch = after_batch
        self.batch = batch
        ip = ipaddress.ip_address(address)
        self.max_udp = LOOPBACK_UDP_MAX if ip.is_loopback else NETWORK_UDP_MAX
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self._buf = bytearray(65535)
        self.counters = {"received": 0, "sent": 0, "send_errors": 0}

    def start(self) -> None:
        s = self.sock
        s.setblocking(False)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if s.family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        except OSError:
            pass
        s.bind((self.address, self.port))
        self.loop.add_reader(s.fileno(), self._readable)

    def close(self) -> None:
        try:
            self.loop.remove_reader(self.sock.fileno())
        except (ValueError, OSError):
            pass
        self.sock.close()

    def send(self, data: bytes, addr: Any) -> None:
        try:
            self.sock.sendto(data, addr)
            self.counters["sent"] += 1
        except OSError:
            self.counters["send_errors"] += 1

    def _readable(self) -> None:
        buf = self._buf
        recv = self.sock.recvfrom_into
        sendto = self.sock.sendto
        handle = self.handle
        now = self.loop.time()
        max_udp = self.max_udp
        n_recv = n_sent = 0
        for _ in range(self.batch):
            try:
                n, addr = recv(buf)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                continue  # e.g. an ICMP error queued on the socket: read on
            n_recv += 1
            try:
                reply = handle(bytes(buf[:n]), (self, addr), now, max_udp)
            except Exception:  # garbage in never stops the service
                log.exception("query from %s crashed the handler", addr)
                continue
            if reply is not None:
                try:
                    sendto(reply, addr)
                    n_sent += 1
                except OSError:
                    self.counters["send_errors"] += 1
        self.counters["received"] += n_recv
        self.counters["sent"] += n_sent
        self.after_batch()


class TcpServer:
    """Accepts DNS-over-TCP clients on one address."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, address: str, port: int, handle: HandleQuery,
        after_batch: Callable[[], None], *, max_clients: int = 256,
        max_inflight: int = 128, idle_timeout: float = 10.0,
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
        self.server: asyncio.base_events.Server | None = None
        self.counters = {"accepted": 0, "refused_limit": 0, "idle_closed": 0,
                         "oversize": 0, "inflight_limit": 0, "responses_dropped": 0}

    async def start(self) -> None:
        self.server = await self.loop.create_server(
            lambda: TcpClient(self), self.address, self.port, reuse_address=True, backlog=256,
        )

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for c in list(self.clients):
            c.abort()
        if self.server is not None:
            try:
                await asyncio.wait_for(self.server.wait_closed(), 2)
            except (asyncio.TimeoutError, Exception):
                pass


class TcpClient(asyncio.BufferedProtocol):
    """One client connection. ``client`` identity handed to the resolver for replies."""

    def __init__(self, server: TcpServer) -> None:
        self.srv = server
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray(65537 + 2)
        self.view = memoryview(self.buf)
        self.fill = 0
        self.inflight = 0
        self.closed = False
        self.eof = False
        self.paused = False  # at the in-flight cap: not reading, frames wait in ``buf``
        self.resuming = False  # a _resume is scheduled
        self.idle: asyncio.TimerHandle | None = None
        self.active = server.loop.time()  # last byte received or answer sent

    # -- asyncio protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # duck-typed: uvloop's TCPTransport has the whole Transport API but does not derive
        # from asyncio.Transport (an isinstance check here killed every TCP client under uvloop)
        self.transport = cast(asyncio.Transport, transport)
        srv = self.srv
        if len(srv.clients) >= srv.max_clients:
            srv.counters["refused_limit"] += 1
            self.closed = True
            self.transport.abort()
            return
        srv.clients.add(self)
        srv.counters["accepted"] += 1
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        self._arm_idle()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.view[self.fill :]

    def buffer_updated(self, nbytes: int) -> None:
        self.fill += nbytes
        self.active = self.srv.loop.time()
        self._arm_idle()
        self._parse()

    def eof_received(self) -> bool:
        # half-close: answer what is in flight, then close (RFC 7766 section 6.2.3)
        self.eof = True
        if self.inflight == 0 and not self.paused and self.transport is not None:
            self.transport.close()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.srv.clients.discard(self)
        if self.idle is not None:
            self.idle.cancel()

    # -- framing
    def _parse(self) -> None:
        buf = self.buf
        pos = 0
        now = self.srv.loop.time()
        handled = False
        while self.fill - pos >= 2 and not self.closed:
            length = buf[pos] << 8 | buf[pos + 1]
            if length < 12:
                self.srv.counters["oversize"] += 1
                self.abort()
                return
            if self.fill - pos - 2 < length:
                break
            if self.inflight >= self.srv.max_inflight:
                self.srv.counters["inflight_limit"] += 1
                self._pause()  # the frame stays in buf until an answer frees a slot
                break
            msg = bytes(buf[pos + 2 : pos + 2 + length])
            pos += 2 + length
            if msg[2] & 0x80:  # a response (QR=1): never answered, so never in flight
                self.srv.counters["responses_dropped"] += 1
                continue
            self.inflight += 1
            handled = True
            try:
                reply = self.srv.handle(msg, self, now, None)
            except Exception:
                log.exception("TCP query crashed the handler")
                self.inflight -= 1
                continue
            if reply is not None:
                self.send(reply)
        if pos:
            remaining = self.fill - pos
            buf[:remaining] = buf[pos : self.fill]
            self.fill = remaining
        if handled:
            self.srv.after_batch()

    def send(self, data: bytes) -> None:
        self.inflight = max(0, self.inflight - 1)
        if self.closed or self.transport is None:
            return
        self.transport.write(len(data).to_bytes(2, "big") + data)
        self.active = self.srv.loop.time()
        if self.paused:
            if self.inflight < self.srv.max_inflight and not self.resuming:
                self.resuming = True  # parse the waiting frames on the next loop turn: never
                self.srv.loop.call_soon(self._resume)  # re-enter the resolver from here
        elif self.eof and self.inflight == 0:
            self.transport.close()  # flushes what was written, then closes

    def _pause(self) -> None:
        self.paused = True
        if self.transport is not None:
            self.transport.pause_reading()  # a no-op if it is not reading

    def _resume(self) -> None:
        self.resuming = False
        if self.closed or self.transport is None:
            return
        self.paused = False
        self._parse()
        if self.paused:
            return
        if self.eof:
            if self.inflight == 0:
                self.transport.close()
        else:
            self.transport.resume_reading()  # a no-op if it is reading

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def _arm_idle(self) -> None:
        if self.idle is not None:
            self.idle.cancel()
        self.idle = self.srv.loop.call_later(self.srv.idle_timeout, self._on_idle)

    def _on_idle(self) -> None:
        if self.inflight and self.srv.loop.time() - self.active < TCP_STUCK_AFTER:
            self._arm_idle()
            return
        self.srv.counters["idle_closed"] += 1
        if self.transport is not None:
            self.transport.close()
