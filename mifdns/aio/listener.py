"""The UDP listener: client queries over UDP on one listen address, in batches.

A non-blocking socket watched with ``loop.add_reader``; each wake-up handles a batch of up to
``batch`` datagrams. A query whose bytes after the ID are in the resolver's ready table (its
answer memo, ``Resolver.ready_table``, fetched once per batch) is answered here with its ID and
the stored reply (its TTLs aged first once its second has passed, ``core.memo.age``), without
calling into the resolver; the others go to ``handle``. Cache hits
and immediate answers go out inline; the resolver's outbox is drained once per batch. Two
loops do this, with the same behaviour:

- ``mifdns.aio._udpbatch`` (C, built when a compiler is there): the batch is read with one
  ``recvmmsg`` and answered with one ``sendmmsg`` (CPython's socket module has neither);
- the Python loop: ``recvfrom(65535)`` and ``sendto`` per datagram (asyncio's stock datagram
  transport asks for 256 KiB per datagram: above glibc's mmap threshold, two page faults, more
  than the whole cache hit; 64 KiB comes from the heap and is shrunk in place, a little cheaper
  than recvfrom_into plus a copy).

``MIFDNS_UDP_BATCH=python`` forces the Python loop; ``UdpListener.engine`` says which one runs.

A wildcard listen address (0.0.0.0, ::) asks the kernel where each query was sent
(IP_PKTINFO / IPV6_RECVPKTINFO) and sends the reply from that address: otherwise the kernel
picks the source by routing, and on a host with several addresses a client that asked one of
them gets the reply from another and drops it (RFC 1035 s4.2.1: replies come from the address
the query was sent to). A later reply (after a miss) carries the same: the client is then
``(listener, address, source)`` instead of ``(listener, address)``.

``HandleQuery`` is the resolver's entry point as both listeners call it; the TCP listener is
in ``tcp_listener.py``.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import os
import socket
from collections.abc import Callable
from time import monotonic
from typing import Any

from ..core.memo import ReadyTable as Table
from ..core.memo import age

log = logging.getLogger("mifdns.listener")

# on loopback the client may receive up to this much over UDP (systemd-resolved's stub does too);
# elsewhere 1232 avoids fragmentation (DNS flag day 2020)
LOOPBACK_UDP_MAX = 65494
NETWORK_UDP_MAX = 1232

HandleQuery = Callable[[bytes, object, float, "int | None"], "bytes | None"]

INGRESS_BYTES = 4 << 20  # UDP receive queue per listening socket

ReadyTable = Callable[["int | None"], "Table | None"]

try:
    if os.environ.get("MIFDNS_UDP_BATCH", "") == "python":
        raise ImportError("MIFDNS_UDP_BATCH=python")
    from . import _udpbatch  # type: ignore[attr-defined]
except ImportError:  # not built (no C compiler at install time), or turned off
    _udpbatch = None
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)  # Linux; not in the socket module
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)  # Linux values; Python 3.11 lacks IP_PKTINFO
IPV6_RECVPKTINFO = getattr(socket, "IPV6_RECVPKTINFO", 49)
IPV6_PKTINFO = getattr(socket, "IPV6_PKTINFO", 50)
_ANCILLARY = socket.CMSG_SPACE(64)  # room for one in_pktinfo or in6_pktinfo, with slack


def listen_error(where: Any, exc: OSError) -> str:
    """Why binding listen address ``where`` (a config ListenAddr) failed, for a person."""
    address = getattr(where, "address", None)
    port = getattr(where, "port", 53)
    if exc.errno == errno.EADDRINUSE:
        return (
            "address already in use (another DNS server on it? systemd-resolved's stub listens "
            "on 127.0.0.53:53: DNSStubListener=no turns it off)"
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return "no interface of this host has that address (add it, or listen elsewhere)"
    if exc.errno == errno.EACCES and port < 1024:
        return (
            f"permission denied: port {port} needs root or CAP_NET_BIND_SERVICE "
            "(AmbientCapabilities=CAP_NET_BIND_SERVICE)"
        )
    if exc.errno == errno.EINVAL and isinstance(address, ipaddress.IPv6Address):
        if address.is_link_local and not address.scope_id:
            return f"a link-local address needs its interface: write [{address}%IFNAME]:{port}"
        if address.is_link_local:
            bare = str(address).partition("%")[0]
            return f"{bare} is not an address of interface {address.scope_id}"
    return exc.strerror or str(exc)


class UdpListener:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        address: str,
        port: int,
        handle: HandleQuery,
        after_batch: Callable[[], None],
        *,
        batch: int = 64,
        queue_bytes: int = INGRESS_BYTES,
        ready: ReadyTable | None = None,
        count_ready: Callable[[int], None] | None = None,
        engine: str | None = None,
    ) -> None:
        """``ready``/``count_ready``: the resolver's ``ready_table`` and ``count_ready`` (both
        or neither). ``engine``: "c" or "python" (default: C when it is built)."""
        self.loop = loop
        self.queue_bytes = queue_bytes
        self.address = address
        self.port = port
        self.handle = handle
        self.after_batch = after_batch
        self.batch = batch
        ip = ipaddress.ip_address(address)
        self.max_udp = LOOPBACK_UDP_MAX if ip.is_loopback else NETWORK_UDP_MAX
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.pktinfo = ip.is_unspecified  # reply from the address each query was sent to
        self._pktinfo_level = socket.IPPROTO_IPV6 if ip.version == 6 else socket.IPPROTO_IP
        self._pktinfo_type = IPV6_PKTINFO if ip.version == 6 else IP_PKTINFO
        # ingress_drops: datagrams the kernel dropped because our receive queue was full (the
        # ingress queue's bound); read from /proc/net/udp by refresh_drops()
        # replayed: answered from the ready table without the resolver; aged: of those, the
        # ones whose TTLs the loop aged first (core/memo.py)
        self.counters = {
            "received": 0,
            "sent": 0,
            "send_errors": 0,
            "ingress_drops": 0,
            "replayed": 0,
            "aged": 0,
        }
        self.ready = ready
        self.count_ready = count_ready
        if engine is None:
            engine = "c" if _udpbatch is not None else "python"
        if engine == "c" and _udpbatch is None:
            raise ValueError("the C UDP loop (mifdns.aio._udpbatch) is not built")
        self.engine = engine
        self._now = 0.0
        self._fd_family = (-1, int(family))
        self.lane: Any = None  # the miss lane (lane.py), set by the daemon; C loop only

    def start(self) -> None:
        s = self.sock
        s.setblocking(False)
        # no SO_REUSEADDR: UDP has no TIME_WAIT to step over, and with it a second daemon (or
        # anything else) could bind the same address and take a share of the clients' queries
        if s.family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        self.set_queue_bytes(self.queue_bytes)
        if self.pktinfo:
            if s.family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
            else:
                s.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        s.bind((self.address, self.port))
        self._fd_family = (s.fileno(), int(s.family))
        self.loop.add_reader(s.fileno(), self._readable_c if self.engine == "c" else self._readable)

    def close(self) -> None:
        try:
            self.loop.remove_reader(self.sock.fileno())
        except (ValueError, OSError):
            pass
        self.sock.close()

    @property
    def queue_granted(self) -> int:
        """The receive queue the kernel granted (it doubles the request for its bookkeeping)."""
        try:
            return self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2
        except OSError:
            return 0

    def set_queue_bytes(self, n: int) -> None:
        """The ingress queue: past it the kernel drops (and counts) datagrams. Without
        CAP_NET_ADMIN the kernel caps it at net.core.rmem_max (see ``queue_granted``)."""
        self.queue_bytes = n
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, n)
        except OSError:
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, n)
            except OSError:
                log.warning("cannot set the UDP receive queue of %s to %d bytes", self.address, n)

    def refresh_drops(self) -> int:
        """Read the kernel's drop count for this socket (receive queue full) into counters."""
        try:
            inode = os.fstat(self.sock.fileno()).st_ino
            table = "/proc/net/udp6" if self.sock.family == socket.AF_INET6 else "/proc/net/udp"
            with open(table) as f:
                next(f)
                for line in f:
                    cols = line.split()
                    if len(cols) >= 13 and cols[9] == str(inode):
                        self.counters["ingress_drops"] = int(cols[12])
                        break
        except (OSError, ValueError, StopIteration):
            pass
        return self.counters["ingress_drops"]

    def send(self, data: bytes, addr: Any, source: bytes | None = None) -> None:
        """A reply to ``addr``; ``source``: the pktinfo it leaves from (wildcard listeners)."""
        if self._sendmsg(data, addr, source):
            self.counters["sent"] += 1
        else:
            self.counters["send_errors"] += 1

    def _sendmsg(self, data: bytes, addr: Any, source: bytes | None) -> bool:
        try:
            if source is None:
                self.sock.sendto(data, addr)
            else:
                self.sock.sendmsg(
                    [data], [(self._pktinfo_level, self._pktinfo_type, source)], 0, addr
                )
            return True
        except OSError:
            return False

    def _reply_source(self, ancdata: list[tuple[int, int, bytes]]) -> bytes | None:
        """The pktinfo a reply is sent with, from the one its query came with (as the C
        loop's ``reply_source``): IPv4 from the local address the kernel reports, any
        interface; IPv6 from the destination address, on the interface it arrived on."""
        for level, kind, data in ancdata:
            if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(data) >= 12:
                return bytes(4) + data[4:8] + bytes(4)  # ifindex 0, ipi_spec_dst, ipi_addr
            if level == socket.IPPROTO_IPV6 and kind == IPV6_PKTINFO and len(data) >= 20:
                return data[:20]
        return None

    def _readable_c(self) -> None:
        self._now = now = monotonic()  # the core's clock (see daemon.py)
        ready = self.ready(self.max_udp) if self.ready is not None else None
        assert _udpbatch is not None
        serve = _udpbatch.serve
        fd, family = self._fd_family  # socket.family converts to an enum on every read
        left = self.batch
        n_recv = n_ready = n_sent = n_err = n_aged = 0
        while left > 0:  # ``batch`` may exceed what one call reads (BATCH_MAX)
            ask = min(left, _udpbatch.BATCH_MAX)
            try:
                got, replayed, sent, err, aged = serve(
                    fd, family, ready, now, self._slow, ask, self.pktinfo, self.lane, self.max_udp
                )
            except MemoryError:
                log.error("out of memory answering a batch of UDP queries")
                break
            n_recv += got
            n_ready += replayed
            n_sent += sent
            n_err += err
            n_aged += aged
            if got < ask:
                break
            left -= got
        if n_aged:
            self.counters["aged"] += n_aged
        self._end_batch(n_recv, n_ready, n_sent, n_err)

    def _end_batch(self, n_recv: int, n_ready: int, n_sent: int, n_err: int) -> None:
        c = self.counters
        c["received"] += n_recv
        c["sent"] += n_sent
        c["send_errors"] += n_err
        if n_ready:
            c["replayed"] += n_ready
            assert self.count_ready is not None
            self.count_ready(n_ready)
        self.after_batch()

    def _slow(self, data: bytes, addr: Any, source: bytes | None = None) -> bytes | None:
        """A datagram not answered from the ready table: ask the resolver (at ``_now``).
        ``source``: the pktinfo its reply leaves from (wildcard listeners), or None."""
        client = (self, addr) if source is None else (self, addr, source)
        try:
            return self.handle(data, client, self._now, self.max_udp)
        except Exception:  # garbage in never stops the service
            log.exception("query from %s crashed the handler", addr)
            return None

    def _readable(self) -> None:
        if self.pktinfo:
            self._readable_pktinfo()
            return
        recv = self.sock.recvfrom
        sendto = self.sock.sendto
        self._now = now = monotonic()  # the core's clock (see daemon.py)
        ready = self.ready(self.max_udp) if self.ready is not None else None
        n_recv = n_sent = n_ready = n_err = n_aged = 0
        for _ in range(self.batch):
            try:
                data, addr = recv(65535)  # below malloc's mmap threshold: no page faults
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                continue  # e.g. an ICMP error queued on the socket: read on
            n_recv += 1
            hit = ready.get(data[2:]) if ready is not None else None
            if hit is not None and now < hit[1]:
                n_ready += 1
                reply: bytes | None = data[:2] + hit[0]
            elif hit is not None and (fresh := age(hit, now)) is not None:
                assert ready is not None
                ready[data[2:]] = fresh  # as the C loop does: the next second replays it
                n_ready += 1
                n_aged += 1
                reply = data[:2] + fresh[0]
            else:
                reply = self._slow(data, addr)
            if reply is not None:
                try:
                    sendto(reply, addr)
                    n_sent += 1
                except OSError:
                    n_err += 1
        if n_aged:
            self.counters["aged"] += n_aged
        self._end_batch(n_recv, n_ready, n_sent, n_err)

    def _readable_pktinfo(self) -> None:
        """The Python loop for a wildcard address: recvmsg/sendmsg with the pktinfo, no ready
        table (the C loop replays there; this is the fallback without a compiler)."""
        recvmsg = self.sock.recvmsg
        self._now = monotonic()
        n_recv = n_sent = n_err = 0
        for _ in range(self.batch):
            try:
                data, ancdata, _flags, addr = recvmsg(65535, _ANCILLARY)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                continue
            n_recv += 1
            source = self._reply_source(ancdata)
            reply = self._slow(data, addr, source)
            if reply is not None:
                if self._sendmsg(reply, addr, source):
                    n_sent += 1
                else:
                    n_err += 1
        self._end_batch(n_recv, 0, n_sent, n_err)
