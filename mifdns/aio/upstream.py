"""Upstream sockets: every query leaves through a socket bound to its PvD's interface.

UDP: a small pool of sockets per (interface, family), each bound with SO_BINDTODEVICE and to a
kernel-chosen random port, retired after ``REUSE`` queries so source ports keep changing. A reply
is handed to the transaction registered under its query ID on the socket it arrived on; the core
then checks ID, question and source. TCP (after TC, or when asked): one connection per attempt,
bound the same way, at most ``max_tcp`` at once.

Binding to a device needs CAP_NET_RAW (or root). Without it the daemon refuses to start
(``check_bind_capability``): silently sending through the default route would be the leak that
mifdns exists to prevent.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from typing import Callable

from ..core.pvd import ServerAddr
from ..core.transaction import Send, Transaction
from ..errors import StartupError

log = logging.getLogger("mifdns.upstream")

POOL = 8  # live sockets per (interface, family)
REUSE = 64  # queries per socket before it is retired
BATCH = 64  # datagrams drained per wake-up

OnReply = Callable[[Transaction, bytes, tuple[str, int], bool], None]
OnError = Callable[[Transaction, str], None]


def bind_to_device(sock: socket.socket, interface: str) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())


def check_bind_capability(interface: str = "lo") -> None:
    """Raise StartupError if this process may not bind sockets to interfaces."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        bind_to_device(s, interface)
    except PermissionError:
        raise StartupError(
            "cannot bind upstream sockets to an interface (SO_BINDTODEVICE): permission denied; "
            "mifdns needs CAP_NET_RAW (run as root, or grant AmbientCapabilities=CAP_NET_RAW); "
            "it will not send queries through an unbound socket"
        ) from None
    except OSError as exc:
        if exc.errno != errno.ENODEV:
            raise StartupError(f"SO_BINDTODEVICE failed: {exc.strerror}") from None
    finally:
        s.close()


def sockaddr(server: ServerAddr, interface: str) -> tuple:  # type: ignore[type-arg]
    if server.family == 6:
        scope = 0
        if server.address.is_link_local:
            try:
                scope = socket.if_nametoindex(interface)
            except OSError:
                scope = 0
        return (server.host, server.port, 0, scope)
    return (server.host, server.port)


class _UdpSock:
    __slots__ = ("sock", "pending", "uses", "key", "retired")

    def __init__(self, sock: socket.socket, key: tuple[str, int]) -> None:
        self.sock = sock
        self.pending: dict[int, Transaction] = {}
        self.uses = 0
        self.key = key
        self.retired = False


class Upstreams:
    def __init__(
        self, loop: asyncio.AbstractEventLoop, on_reply: OnReply, on_error: OnError,
        *, max_tcp: int = 64, after_io: Callable[[], None] = lambda: None,
    ) -> None:
        self.loop = loop
        self.on_reply = on_reply
        self.on_error = on_error
        self.after_io = after_io  # the daemon drains the resolver's outbox after a batch
        self.max_tcp = max_tcp
        self._pools: dict[tuple[str, int], list[_UdpSock]] = {}
        self._where: dict[Transaction, _UdpSock] = {}
        self._tcp: dict[Transaction, asyncio.Task[None]] = {}
        self._buf = bytearray(65535)
        self.counters = {"udp_sent": 0, "tcp_sent": 0, "send_errors": 0, "tcp_limit": 0,
                         "stray": 0}

    # ------------------------------------------------------------------ sending
    def send(self, send: Send) -> None:
        txn = send.txn
        self._forget(txn)
        if send.tcp:
            if len(self._tcp) >= self.max_tcp:
                self.counters["tcp_limit"] += 1
                self.loop.call_soon(self._error_later, txn, "upstream TCP connection limit")
                return
            self.counters["tcp_sent"] += 1
            task = self.loop.create_task(self._tcp_exchange(send))
            self._tcp[txn] = task
            return
        try:
            us = self._socket_for(txn.interface, send.server.family, send.txid)
            us.sock.sendto(send.wire, sockaddr(send.server, txn.interface))
        except OSError as exc:
            self.counters["send_errors"] += 1
            self.loop.call_soon(self._error_later, txn, f"send: {exc.strerror or exc}")
            return
        us.pending[send.txid] = txn
        us.uses += 1
        self._where[txn] = us
        self.counters["udp_sent"] += 1
        if us.uses >= REUSE:
            self._retire(us)

    def release(self, txn: Transaction) -> None:
        self._forget(txn)

    def close(self) -> None:
        for task in self._tcp.values():
            task.cancel()
        self._tcp.clear()
        for pool in self._pools.values():
            for us in pool:
                self._close(us)
        self._pools.clear()
        for us in set(self._where.values()):
            self._close(us)
        self._where.clear()

    # ------------------------------------------------------------------ internals
    def _error_later(self, txn: Transaction, reason: str) -> None:
        if not txn.done:
            self.on_error(txn, reason)
            self.after_io()

    def _forget(self, txn: Transaction) -> None:
        us = self._where.pop(txn, None)
        if us is not None:
            if us.pending.get(txn.txid) is txn:
                del us.pending[txn.txid]
            else:  # the txid changed since (a retry): find it
                for k, v in list(us.pending.items()):
                    if v is txn:
                        del us.pending[k]
            if us.retired and not us.pending:
                self._close(us)
        task = self._tcp.pop(txn, None)
        if task is not None and not task.done():
            task.cancel()

    def _socket_for(self, interface: str, family: int, txid: int) -> _UdpSock:
        key = (interface, family)
        pool = self._pools.setdefault(key, [])
        for us in pool:
            if txid not in us.pending:
                if len(pool) >= POOL or not us.pending:
                    pool.remove(us)
                    pool.append(us)  # round robin
                    return us
        us = self._open(interface, family)
        pool.append(us)
        return us

    def _open(self, interface: str, family: int) -> _UdpSock:
        af = socket.AF_INET6 if family == 6 else socket.AF_INET
        sock = socket.socket(af, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            bind_to_device(sock, interface)
            sock.bind(("::" if family == 6 else "0.0.0.0", 0))  # random port from the kernel
        except OSError:
            sock.close()
            raise
        us = _UdpSock(sock, (interface, family))
        self.loop.add_reader(sock.fileno(), self._readable, us)
        return us

    def _retire(self, us: _UdpSock) -> None:
        pool = self._pools.get(us.key, [])
        if us in pool:
            pool.remove(us)
        us.retired = True
        if not us.pending:
            self._close(us)

    def _close(self, us: _UdpSock) -> None:
        try:
            self.loop.remove_reader(us.sock.fileno())
        except (ValueError, OSError):
            pass
        us.sock.close()

    def _readable(self, us: _UdpSock) -> None:
        buf = self._buf
        recv = us.sock.recvfrom_into
        handled = False
        for _ in range(BATCH):
            try:
                n, addr = recv(buf)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
            if n < 12:
                self.counters["stray"] += 1
                continue
            txn = us.pending.get(buf[0] << 8 | buf[1])
            if txn is None:
                self.counters["stray"] += 1
                continue
            self.on_reply(txn, bytes(buf[:n]), addr, False)
            handled = True
        if handled:
            self.after_io()
        if us.retired and not us.pending and us.sock.fileno() >= 0:
            self._close(us)

    async def _tcp_exchange(self, send: Send) -> None:
        txn = send.txn
        family = socket.AF_INET6 if send.server.family == 6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            bind_to_device(sock, txn.interface)
            await self.loop.sock_connect(sock, sockaddr(send.server, txn.interface))
            peer = sock.getpeername()
            await self.loop.sock_sendall(sock, len(send.wire).to_bytes(2, "big") + send.wire)
            header = await _recv_exactly(self.loop, sock, 2)
            data = await _recv_exactly(self.loop, sock, int.from_bytes(header, "big"))
        except asyncio.CancelledError:
            raise
        except (OSError, EOFError) as exc:
            if self._tcp.get(txn) is asyncio.current_task():
                del self._tcp[txn]
                reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
                self.on_error(txn, f"tcp: {reason}")
                self.after_io()
            return
        finally:
            sock.close()
        if self._tcp.get(txn) is asyncio.current_task():
            del self._tcp[txn]
            self.on_reply(txn, data, peer, True)
            self.after_io()


async def _recv_exactly(loop: asyncio.AbstractEventLoop, sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = await loop.sock_recv(sock, n - len(buf))
        if not chunk:
            raise EOFError("connection closed")
        buf += chunk
    return bytes(buf)
