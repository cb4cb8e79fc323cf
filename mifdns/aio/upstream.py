"""Upstream sockets: every query leaves through a socket bound to its PvD's interface.

UDP: connected sockets with kernel-chosen random source ports (RFC 5452 section 9.2), bound
with SO_BINDTODEVICE. A socket ("port") is opened for an attempt and closed as soon as no
attempt waits on it; attempts to the same server through the same interface that are in flight
at the same time share it, up to ``queries_per_port`` attempts per port (then a fresh one is
opened). So a lone query gets a port of its own, as with Unbound, while under load the socket
set-up (socket, SO_BINDTODEVICE, connect, epoll_ctl, close: ~12 us) is paid once per that many
queries, as dnsmasq shares its random sockets. A port never stays open without a query waiting
on it, and never carries more than ``queries_per_port`` IDs: an off-path attacker who finds an
open port (SAD DNS, CVE-2020-25705) still has to match the ID and question of a query in flight.
``queries_per_port: 1`` gives every attempt its own port.
Connecting does two jobs: the kernel drops datagrams from any other source (the core still
checks ID, question and source), and ICMP errors (port or host unreachable) come back as a
socket error, so a server that is down fails its attempts at once instead of after a timeout.
The ports sit in a private epoll set whose own descriptor is the only one the event loop
watches: registering a socket is one epoll_ctl and closing it unregisters it. TCP (after TC, or
when asked): one connection per attempt, bound the same way, at most ``max_tcp`` at once.

Binding to a device needs CAP_NET_RAW (or root). Without it the daemon refuses to start
(``check_bind_capability``): silently sending through the default route would be the leak that
mifdns exists to prevent.
"""

from __future__ import annotations

import _socket
import asyncio
import errno
import logging
import resource
import select
import socket
from collections.abc import Callable

from ..core.pvd import ServerAddr
from ..core.transaction import Send, Transaction
from ..errors import StartupError

log = logging.getLogger("mifdns.upstream")

ROUNDS = 64  # polls of the ports' epoll set per wake-up (one datagram per ready port each)
READY_MAX = 256  # attempts' sockets served per wake-up of the epoll set
_NONBLOCK = socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC
# errors a connected UDP socket reports for its peer (from ICMP), on a send or a receive
_PEER_ERRORS = frozenset(
    {errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN, errno.EPROTO}
)
WANT_FILES = 65536  # open-file limit asked for: every query in flight holds a socket

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


def raise_file_limit(want: int = WANT_FILES) -> int:
    """Raise the soft RLIMIT_NOFILE towards ``want`` (never above the hard limit); return it."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        target = want if hard == resource.RLIM_INFINITY else min(want, hard)
        if soft != resource.RLIM_INFINITY and soft < target:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            return target
        return soft
    except (ValueError, OSError) as exc:
        log.warning("cannot raise the open-file limit: %s", exc)
        return -1


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


class _Port:
    """One connected UDP socket (random port) to one server through one interface, and the
    attempts waiting on it, by query ID."""

    __slots__ = ("closed", "fd", "key", "pending", "sock", "source", "uses")

    def __init__(self, sock: _socket.socket, key: tuple[str, str, int]) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.key = key
        # connected: the kernel delivers only datagrams from the server, so the source of
        # every datagram is known without asking recvfrom for it (and building its tuple)
        self.source = (key[1], key[2])
        self.pending: dict[int, Transaction] = {}
        self.uses = 0
        self.closed = False


class Upstreams:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        on_reply: OnReply,
        on_error: OnError,
        *,
        max_tcp: int = 64,
        queries_per_port: int = 16,
        after_io: Callable[[], None] = lambda: None,
    ) -> None:
        self.loop = loop
        self.on_reply = on_reply
        self.on_error = on_error
        self.after_io = after_io  # the daemon drains the resolver's outbox after a batch
        self.max_tcp = max_tcp
        self.queries_per_port = queries_per_port
        self._where: dict[Transaction, tuple[_Port, int]] = {}  # the attempt in flight
        # earlier UDP attempts the core still takes an answer for (given up for a timeout, see
        # core/transaction.py): their ports stay registered until the transaction ends
        self._old: dict[Transaction, list[tuple[_Port, int]]] = {}
        self._by_fd: dict[int, _Port] = {}
        self._current: dict[tuple[str, str, int], _Port] = {}  # the port new attempts join
        self._ifnames: dict[str, bytes] = {}
        self._ep = select.epoll()
        loop.add_reader(self._ep.fileno(), self._ready)
        self._tcp: dict[Transaction, asyncio.Task[None]] = {}
        self.counters = {
            "udp_sent": 0,
            "udp_ports": 0,
            "tcp_sent": 0,
            "send_errors": 0,
            "tcp_limit": 0,
            "stray": 0,
            "icmp_errors": 0,
        }
        raise_file_limit()

    # ------------------------------------------------------------------ sending
    def send(self, send: Send) -> None:
        txn = send.txn
        where = self._where.pop(txn, None)
        if where is not None:
            earlier = txn.earlier
            if earlier and earlier[-1][0] == where[1]:  # timed out; its answer may still come
                self._old.setdefault(txn, []).append(where)
            else:
                self._unregister(txn, where)
        task = self._tcp.pop(txn, None)
        if task is not None and not task.done():
            task.cancel()
        if send.tcp:
            if len(self._tcp) >= self.max_tcp:
                self.counters["tcp_limit"] += 1
                self.loop.call_soon(self._error_later, txn, "upstream TCP connection limit")
                return
            self.counters["tcp_sent"] += 1
            task = self.loop.create_task(self._tcp_exchange(send))
            self._tcp[txn] = task
            return
        server = send.server
        txid = send.txid
        key = (txn.interface, server.host, server.port)
        port = self._current.get(key)
        if port is None or port.uses >= self.queries_per_port or txid in port.pending:
            port = self._open(key, send)
            if port is None:
                return
        port.pending[txid] = txn
        port.uses += 1
        try:
            port.sock.send(send.wire)
        except OSError as exc:
            del port.pending[txid]
            self.counters["send_errors"] += 1
            self.loop.call_soon(self._error_later, txn, f"send: {exc.strerror or exc}")
            if not port.pending:
                self._close(port)
            elif exc.errno in _PEER_ERRORS:
                # an ICMP error queued on the socket came out of this send: it concerns every
                # attempt on the port (all to this server), which would otherwise wait for
                # their timeouts; no new attempt joins the port
                if self._current.get(port.key) is port:
                    del self._current[port.key]
                self.loop.call_soon(self._fail_port, port, exc)
            return
        self._where[txn] = (port, txid)
        self.counters["udp_sent"] += 1

    def _open(self, key: tuple[str, str, int], send: Send) -> _Port | None:
        """A new port for ``key``: it becomes the one new attempts join (the previous one
        takes no more and closes when its last attempt ends)."""
        txn, server = send.txn, send.server
        af = socket.AF_INET6 if server.family == 6 else socket.AF_INET
        try:
            # the C socket type: socket.socket's Python __init__ and close cost ~2 us per miss
            sock = _socket.socket(af, socket.SOCK_DGRAM | _NONBLOCK)
        except OSError as exc:  # EMFILE/ENFILE under load: this attempt fails, nothing leaks
            self.counters["send_errors"] += 1
            self.loop.call_soon(self._error_later, txn, f"socket: {exc.strerror or exc}")
            return None
        ifname = self._ifnames.get(txn.interface)
        if ifname is None:
            ifname = self._ifnames[txn.interface] = txn.interface.encode()
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname)
            # connect() binds a random port (RFC 5452 9.2) and filters other sources
            sock.connect(
                sockaddr(server, txn.interface)
                if af == socket.AF_INET6
                else (server.host, server.port)
            )
            self._ep.register(sock.fileno(), select.EPOLLIN)
        except OSError as exc:
            sock.close()
            self.counters["send_errors"] += 1
            self.loop.call_soon(self._error_later, txn, f"send: {exc.strerror or exc}")
            return None
        port = _Port(sock, key)
        self._by_fd[port.fd] = port
        self._current[key] = port
        self.counters["udp_ports"] += 1
        return port

    def release(self, txn: Transaction) -> None:
        self._forget(txn)

    def close(self) -> None:
        for task in self._tcp.values():
            task.cancel()
        self._tcp.clear()
        for port in list(self._by_fd.values()):
            self._close(port)
        self._where.clear()
        self._old.clear()
        self._by_fd.clear()
        self._current.clear()
        try:
            self.loop.remove_reader(self._ep.fileno())
        except (ValueError, OSError, RuntimeError):
            pass
        self._ep.close()

    @property
    def open_sockets(self) -> int:
        return len(self._by_fd)

    # ------------------------------------------------------------------ internals
    def _error_later(self, txn: Transaction, reason: str) -> None:
        if not txn.done:
            self.on_error(txn, reason)
            self.after_io()

    def _forget(self, txn: Transaction) -> None:
        where = self._where.pop(txn, None)
        if where is not None:
            self._unregister(txn, where)
        old = self._old.pop(txn, None)
        if old is not None:
            for where in old:
                self._unregister(txn, where)
        task = self._tcp.pop(txn, None)
        if task is not None and not task.done():
            task.cancel()

    def _unregister(self, txn: Transaction, where: tuple[_Port, int]) -> None:
        port, txid = where
        pending = port.pending
        if pending.get(txid) is txn:
            del pending[txid]
            if not pending:
                self._close(port)  # no port stays open without a query waiting on it

    def _close(self, port: _Port) -> None:
        if port.closed:
            return
        port.closed = True
        if self._by_fd.get(port.fd) is port:
            del self._by_fd[port.fd]
        if self._current.get(port.key) is port:
            del self._current[port.key]
        port.sock.close()  # also leaves the epoll set (the last reference to the file is gone)

    def _ready(self) -> None:
        """The epoll set has readable ports: read one datagram from each ready port, and poll
        again, until nothing is ready (or ROUNDS rounds: the event loop calls again). Reading
        a port until it would block ends each read with an EAGAIN exception (~2 us in Python);
        a poll that finds nothing costs one system call for all the ports."""
        handled = False
        by_fd = self._by_fd
        poll = self._ep.poll
        on_reply = self.on_reply
        for _ in range(ROUNDS):
            ready = poll(0, READY_MAX)
            if not ready:
                break
            for fd, _ in ready:
                port = by_fd.get(fd)
                if port is None:
                    continue
                try:
                    data = port.sock.recv(65535)  # one allocation, shrunk in place
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError as exc:
                    if self._port_failed(port, exc):
                        handled = True
                    continue
                txn = port.pending.get(data[0] << 8 | data[1]) if len(data) >= 12 else None
                if txn is None or txn.outcome is not None:  # unknown ID, or already answered
                    self.counters["stray"] += 1
                    continue
                on_reply(txn, data, port.source, False)
                handled = True
        if handled:
            self.after_io()

    def _fail_port(self, port: _Port, exc: OSError) -> None:
        if not port.closed and self._port_failed(port, exc):
            self.after_io()

    def _port_failed(self, port: _Port, exc: OSError) -> bool:
        """An ICMP error (port or host unreachable) on a port: every attempt to that server
        through that interface fails now, not after its timeout, on this port and on the
        others still open to it (the kernel rate-limits ICMP errors, so the other ports may
        never get theirs); the core moves each on to the PvD's next server. True if the core
        was given something."""
        self.counters["icmp_errors"] += 1
        handled = False
        doomed = (
            [
                txn
                for p in list(self._by_fd.values())
                if p.key == port.key
                for txn in p.pending.values()
            ]
            if exc.errno in _PEER_ERRORS
            else []
        )
        for txn in dict.fromkeys(doomed or list(port.pending.values())):
            where = self._where.get(txn)
            if where is None or (where[0].key != port.key if doomed else where[0] is not port):
                # only an earlier attempt of it was there: that one is over, the current one
                # (to another server, or on another port) goes on
                for old in [w for w in self._old.get(txn, ()) if w[0].key == port.key]:
                    self._old[txn].remove(old)
                    self._unregister(txn, old)
                continue
            self._forget(txn)
            if not txn.done:
                self.on_error(txn, f"udp: {exc.strerror or exc}")
                handled = True
        return handled

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
