"""A fake upstream DNS server for the test bed: authoritative data plus misbehaviours.

Theory of operation: ``FakeUpstream`` binds UDP and TCP sockets on given addresses inside a
network namespace (``netns.socket_in``) and serves them on the asyncio loop that runs
``start()``. Every question is logged (``.log``) before the behaviours decide what happens:

    drop -> nothing;  delay -> answer later;  refused / servfail -> that rcode;
    truncate_udp -> UDP gets TC=1 and no records (TCP gets the full answer);
    captive=IP -> every A is IP, everything else NODATA;  otherwise the zone answers
    (AA, CNAMEs chased in-zone, NXDOMAIN/NODATA with the SOA in authority), then
    dns64=PREFIX synthesizes AAAA from A (RFC 6147) and ttl=N overrides every TTL;
    wrong_id / wrong_question / wrong_source=ADDR (UDP: sent from another local address)
    spoil the reply; only the spoiled reply is sent, or with spoof_first it is followed by
    the right one. no_edns: a query with an OPT gets FORMERR without one (a server from
    before EDNS); ad: answers claim AD=1 (authenticated data), validated or not.

Behaviours are plain attributes, changed at any time (``up.servfail = True``); ``set()``
checks names. Tests that also block (synchronous queries, subprocesses) should run the server
on a ``ServerLoop`` (a loop in a background thread) so it keeps answering meanwhile.

The zone is the zone-file text or dict given (``records``/``zone``), plus ipv4only.arpa A
192.0.0.170/171 (RFC 7050) unless the data defines it. Without an SOA for a name, negative
answers carry a made-up SOA for the name's last two labels (negative TTL 60).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import ipaddress
import socket
import sys
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Self, TypeVar

from dnslib import (  # type: ignore[import-untyped]
    AAAA,
    CLASS,
    EDNS0,
    QTYPE,
    RCODE,
    RR,
    SOA,
    A,
    DNSError,
    DNSHeader,
    DNSQuestion,
    DNSRecord,
)

from mifdns.harness import netns

__all__ = ["FakeUpstream", "Seen", "ServerLoop", "query_from", "synthesize_aaaa"]

T = TypeVar("T")
_BEHAVIOURS = frozenset(
    [
        "delay",
        "drop",
        "servfail",
        "refused",
        "truncate_udp",
        "captive",
        "dns64",
        "wrong_id",
        "wrong_question",
        "wrong_source",
        "spoof_first",
        "ttl",
        "no_edns",
        "ad",
    ]
)
_IPV4ONLY = "ipv4only.arpa."
_IPV4ONLY_A = ("192.0.0.170", "192.0.0.171")
_OPT = QTYPE.OPT
_SOL_IPV6 = getattr(socket, "SOL_IPV6", 41)
_IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)  # Linux value; Python < 3.13 lacks the name


@dataclass(frozen=True)
class Seen:
    """One question as the server received it."""

    qname: str  # lower case, trailing dot
    qtype: str  # "A", "AAAA", "TYPE65534"
    transport: str  # "udp" | "tcp"
    source: tuple[str, int]  # client address (fe80::x%eth0 for link-local) and port
    ns_iface: str | None  # interface it arrived on, in the server's namespace ("eth0")

    def __str__(self) -> str:
        return (
            f"{self.transport} {self.source[0]}#{self.source[1]} {self.ns_iface} "
            f"{self.qname} {self.qtype}"
        )


def _norm(name: object) -> str:
    s = str(name).lower()
    return s if s.endswith(".") else s + "."


def _qtype_name(n: int) -> str:
    return QTYPE.forward.get(n) or f"TYPE{n}"


def synthesize_aaaa(prefix: str, v4: str) -> str:
    """Embed an IPv4 address in a NAT64 prefix (RFC 6052 section 2.2; /32../96)."""
    net = ipaddress.IPv6Network(prefix)
    plen = net.prefixlen
    if plen not in (32, 40, 48, 56, 64, 96):
        raise ValueError(f"NAT64 prefix length must be 32/40/48/56/64/96: {prefix}")
    b = bytearray(net.network_address.packed)
    v4b = ipaddress.IPv4Address(v4).packed
    pos = plen // 8
    for byte in v4b:
        if pos == 8:  # bits 64..71 (the "u" octet) stay zero
            pos += 1
        b[pos] = byte
        pos += 1
    return str(ipaddress.IPv6Address(bytes(b)))


class Zone:
    """Records keyed by (owner, type), with the names that exist (empty non-terminals too)."""

    def __init__(self) -> None:
        self.rrs: dict[tuple[str, int], list[RR]] = {}
        self.names: set[str] = set()

    def add_rr(self, rr: RR) -> None:
        owner = _norm(rr.rname)
        self.rrs.setdefault((owner, rr.rtype), []).append(rr)
        labels = owner.split(".")
        for i in range(len(labels) - 1):
            self.names.add(".".join(labels[i:]) or ".")

    def add(self, data: str | Mapping[str, Any] | Iterable[RR] | None, ttl: int = 300) -> None:
        """Zone-file text, {name: {TYPE: rdata | [rdata...]}}, or dnslib RRs."""
        if data is None:
            return
        if isinstance(data, str):
            rrs: Iterable[RR] = RR.fromZone(data, ttl=ttl)
        elif isinstance(data, Mapping):
            lines = []
            for name, types in data.items():
                for rtype, values in types.items():
                    for v in [values] if isinstance(values, str) else values:
                        lines.append(f"{_norm(name)} {ttl} IN {rtype.upper()} {v}")
            rrs = RR.fromZone("\n".join(lines)) if lines else []
        else:
            rrs = data
        for rr in rrs:
            self.add_rr(rr)

    def remove(self, name: str, qtype: str | None = None) -> None:
        owner = _norm(name)
        for key in [k for k in self.rrs if k[0] == owner]:
            if qtype is None or key[1] == getattr(QTYPE, qtype.upper()):
                del self.rrs[key]

    def get(self, name: str, rtype: int) -> list[RR]:
        return self.rrs.get((name, rtype), [])

    def soa_for(self, name: str) -> tuple[RR, bool]:
        """The SOA of the closest enclosing zone, and whether it is real (from the data)."""
        labels = name.split(".")
        for i in range(len(labels) - 1):
            rrs = self.rrs.get((".".join(labels[i:]), QTYPE.SOA))
            if rrs:
                return rrs[0], True
        apex = ".".join(labels[-3:]) if len(labels) > 2 else name
        rdata = SOA(f"ns.{apex}", f"hostmaster.{apex}", (1, 3600, 600, 86400, 60))
        return RR(apex, QTYPE.SOA, CLASS.IN, 60, rdata), False


class FakeUpstream:
    """An authoritative fake DNS server in namespace ``ns`` on ``listen`` addresses, port 53."""

    def __init__(
        self,
        ns: str | None,
        listen: Iterable[str],
        *,
        port: int = 53,
        records: str | Mapping[str, Any] | Iterable[RR] | None = None,
        zone: str | Mapping[str, Any] | Iterable[RR] | None = None,
        tcp: bool = True,
        name: str | None = None,
        on_query: Callable[[Seen], None] | None = None,
        **behaviour: Any,
    ) -> None:
        self.ns = ns
        self.listen = [a.split("/")[0] for a in listen]
        self.port = port
        self.tcp = tcp
        self.name = name or (ns or "fake")
        self.on_query = on_query
        self.zone = Zone()
        self.zone.add(zone)
        self.zone.add(records)
        if not self.zone.get(_IPV4ONLY, QTYPE.A):
            self.zone.add({_IPV4ONLY: {"A": list(_IPV4ONLY_A)}}, ttl=3600)
        self.log: list[Seen] = []
        self.delay: float = 0.0
        self.drop = False
        self.servfail = False
        self.refused = False
        self.truncate_udp = False
        self.captive: str | None = None
        self.dns64: str | None = None
        self.wrong_id = False
        self.wrong_question = False
        self.wrong_source: str | None = None
        self.spoof_first = False
        self.ttl: int | None = None
        self.no_edns = False
        self.ad = False
        self.set(**behaviour)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._udp: list[tuple[socket.socket, str | None]] = []
        self._servers: list[asyncio.Server] = []
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._spoof_socks: dict[str, socket.socket] = {}
        self._ifnames: dict[int, str] = {}

    def __repr__(self) -> str:
        return f"<FakeUpstream {self.name} {self.listen} port {self.port}>"

    def set(self, **behaviour: Any) -> None:
        """Change behaviours (names as in the module docstring); unknown names raise."""
        unknown = set(behaviour) - _BEHAVIOURS
        if unknown:
            raise TypeError(f"unknown FakeUpstream behaviour(s): {', '.join(sorted(unknown))}")
        if behaviour.get("dns64"):
            synthesize_aaaa(behaviour["dns64"], "192.0.0.170")  # validate now
        for key, value in behaviour.items():
            setattr(self, key, value)

    def add_records(self, data: str | Mapping[str, Any] | Iterable[RR], ttl: int = 300) -> None:
        self.zone.add(data, ttl=ttl)

    def remove_records(self, name: str, qtype: str | None = None) -> None:
        self.zone.remove(name, qtype)

    # -- query log ---------------------------------------------------------------------------
    def saw(self, name: str, qtype: str | None = None, transport: str | None = None) -> bool:
        return self.count(name, qtype, transport) > 0

    def count(self, name: str, qtype: str | None = None, transport: str | None = None) -> int:
        want = _norm(name)
        return sum(
            1
            for s in list(self.log)
            if s.qname == want
            and (qtype is None or s.qtype == qtype.upper())
            and (transport is None or s.transport == transport)
        )

    def clear(self) -> None:
        self.log.clear()

    # -- lifecycle ---------------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Bind every address (UDP, and TCP unless tcp=False) on the running loop."""
        if self._loop is not None:
            raise RuntimeError(f"{self!r} already started")
        self._loop = loop = asyncio.get_running_loop()
        try:
            with netns.entered(self.ns):
                self._ifnames = dict(socket.if_nameindex())
                plan = [(a, *_sockaddr(a, self.port)) for a in self.listen]
            for addr, family, sa in plan:
                iface = _iface_of(addr) or self._iface_for_addr(addr)
                udp = self._bind(family, socket.SOCK_DGRAM, sa)
                self._udp.append((udp, iface))
                loop.add_reader(udp.fileno(), self._on_udp, udp, iface)
                if self.tcp:
                    tcp = self._bind(family, socket.SOCK_STREAM, sa)
                    try:
                        tcp.listen(64)
                        handler = functools.partial(self._on_tcp, iface=iface)
                        server = await asyncio.start_server(handler, sock=tcp)
                    except BaseException:
                        tcp.close()
                        raise
                    self._servers.append(server)
        except BaseException:
            await self._stop()
            raise

    async def stop(self) -> None:
        """Close every socket and connection. Callable from any loop or thread's loop."""
        loop = self._loop
        if loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not loop and loop.is_running():
            fut = asyncio.run_coroutine_threadsafe(self._stop(), loop)
            await asyncio.wrap_future(fut)
        else:
            await self._stop()

    async def _stop(self) -> None:
        loop, self._loop = self._loop, None
        for sock, _ in self._udp:
            if loop is not None:
                loop.remove_reader(sock.fileno())
            sock.close()
        self._udp.clear()
        for server in self._servers:
            server.close()
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
        for sock in self._spoof_socks.values():
            sock.close()
        self._spoof_socks.clear()

    def _bind(self, family: int, type: int, sa: Any) -> socket.socket:
        with netns.entered(self.ns):
            return _bound(family, type, sa)

    def _iface_for_addr(self, addr: str) -> str | None:
        try:
            ip_ = ipaddress.ip_address(addr)
        except ValueError:
            return None
        if ip_.is_unspecified:
            return None
        out = netns.ip(self.ns, "-o", "address", "show", "to", str(ip_), check=False)
        return out.split()[1] if out.strip() else None

    def _track(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- UDP ---------------------------------------------------------------------------------
    def _on_udp(self, sock: socket.socket, iface: str | None) -> None:
        cmsg_space = socket.CMSG_SPACE(64)
        for _ in range(64):
            try:
                data, anc, _flags, src = sock.recvmsg(65535, cmsg_space)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            arrived = self._pktinfo_iface(anc) or iface
            self._track(self._answer_udp(sock, data, src, arrived))

    def _pktinfo_iface(self, anc: list[tuple[int, int, bytes]]) -> str | None:
        for level, kind, data in anc:
            if level == socket.IPPROTO_IP and kind == _IP_PKTINFO:
                return self._ifname(int.from_bytes(data[:4], sys.byteorder))
            if level == _SOL_IPV6 and kind == socket.IPV6_PKTINFO:
                return self._ifname(int.from_bytes(data[16:20], sys.byteorder))
        return None

    def _ifname(self, index: int) -> str:
        if index not in self._ifnames:
            with netns.entered(self.ns):
                self._ifnames = dict(socket.if_nameindex())
        return self._ifnames.get(index, str(index))

    def _client(self, src: Any) -> tuple[str, int]:
        host = str(src[0]).split("%")[0]
        if len(src) == 4 and src[3]:
            host = f"{host}%{self._ifname(src[3])}"
        return host, int(src[1])

    async def _answer_udp(
        self, sock: socket.socket, data: bytes, src: Any, iface: str | None
    ) -> None:
        for reply, spoof_from in await self._replies(data, "udp", src, iface):
            try:
                if spoof_from:
                    self._spoof_sock(spoof_from).sendto(reply, src)
                else:
                    sock.sendto(reply, src)
            except OSError:
                pass

    def _spoof_sock(self, addr: str) -> socket.socket:
        # Must be a local address of the same family as the query's (else nothing is sent).
        if addr not in self._spoof_socks:
            with netns.entered(self.ns):
                fam, sa = _sockaddr(addr, self.port)
                self._spoof_socks[addr] = _bound(fam, socket.SOCK_DGRAM, sa)
        return self._spoof_socks[addr]

    # -- TCP ---------------------------------------------------------------------------------
    async def _on_tcp(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, iface: str | None
    ) -> None:
        self._writers.add(writer)
        src = writer.get_extra_info("peername")
        pending: set[asyncio.Task[None]] = set()
        try:
            while True:
                size = int.from_bytes(await reader.readexactly(2), "big")
                data = await reader.readexactly(size)
                task = self._track(self._answer_tcp(writer, data, src, iface))
                pending.add(task)
                task.add_done_callback(pending.discard)
        except (asyncio.IncompleteReadError, ConnectionError):
            if pending:  # the client half-closed: still answer what it asked
                await asyncio.wait(pending, timeout=self.delay + 5)
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _answer_tcp(
        self, writer: asyncio.StreamWriter, data: bytes, src: Any, iface: str | None
    ) -> None:
        for reply, _spoof_from in await self._replies(data, "tcp", src, iface):
            if writer.is_closing():
                return
            writer.write(len(reply).to_bytes(2, "big") + reply)
        with contextlib.suppress(ConnectionError):
            await writer.drain()

    # -- answers -----------------------------------------------------------------------------
    async def _replies(
        self, data: bytes, transport: str, src: Any, iface: str | None
    ) -> list[tuple[bytes, str | None]]:
        try:
            req = DNSRecord.parse(data)
        except Exception:  # noqa: BLE001 - dnslib raises assorted errors on garbage
            if len(data) < 12:
                return []
            hdr = DNSHeader(id=int.from_bytes(data[:2], "big"), qr=1, rcode=RCODE.FORMERR)
            return [(DNSRecord(hdr).pack(), None)]
        if len(req.questions) != 1 or req.header.qr:
            return [(self._error(req, RCODE.FORMERR).pack(), None)]
        seen = Seen(
            _norm(req.q.qname), _qtype_name(req.q.qtype), transport, self._client(src), iface
        )
        self.log.append(seen)
        if self.on_query is not None:
            self.on_query(seen)
        if self.drop:
            return []
        if self.delay:
            await asyncio.sleep(self.delay)
            if self.drop:
                return []
        reply = self._reply(req, transport)
        good = reply.pack()
        if transport == "udp" and len(good) > _udp_limit(req):
            good = self._truncated(req).pack()
        if not (self.wrong_id or self.wrong_question or self.wrong_source):
            return [(good, None)]
        spoilt = DNSRecord.parse(good)
        if self.wrong_id:
            spoilt.header.id = (req.header.id + 1) & 0xFFFF
        if self.wrong_question:
            spoilt.questions = [DNSQuestion("wrong-question.invalid.", req.q.qtype)]
        bad = (spoilt.pack(), self.wrong_source if transport == "udp" else None)
        return [bad, (good, None)] if self.spoof_first else [bad]

    def _error(self, req: DNSRecord, rcode: int) -> DNSRecord:
        r = DNSRecord(
            DNSHeader(id=req.header.id, qr=1, ra=1, rd=req.header.rd, rcode=rcode),
            questions=list(req.questions),
        )
        _copy_edns(req, r)
        return r

    def _truncated(self, req: DNSRecord) -> DNSRecord:
        r = self._error(req, RCODE.NOERROR)
        r.header.tc = 1
        r.header.aa = 1
        return r

    def _reply(self, req: DNSRecord, transport: str) -> DNSRecord:
        if req.header.opcode != 0:
            return self._error(req, RCODE.NOTIMP)
        if self.no_edns and any(rr.rtype == _OPT for rr in req.ar):
            return DNSRecord(
                DNSHeader(id=req.header.id, qr=1, ra=1, rd=req.header.rd, rcode=RCODE.FORMERR),
                questions=list(req.questions),
            )
        if self.refused:
            return self._error(req, RCODE.REFUSED)
        if self.servfail:
            return self._error(req, RCODE.SERVFAIL)
        if transport == "udp" and self.truncate_udp:
            return self._truncated(req)
        qname, qtype = _norm(req.q.qname), req.q.qtype
        rcode, answer, auth = self._resolve(qname, qtype)
        r = self._error(req, rcode)
        r.header.aa = 1
        r.header.ad = int(self.ad)
        for rr in answer:
            r.add_answer(self._ttl(rr))
        for rr in auth:
            r.add_auth(self._ttl(rr))
        return r

    def _ttl(self, rr: RR) -> RR:
        ttl = rr.ttl if self.ttl is None else int(self.ttl)
        return RR(rr.rname, rr.rtype, rr.rclass, ttl, rr.rdata)

    def _resolve(self, qname: str, qtype: int) -> tuple[int, list[RR], list[RR]]:
        if self.captive:
            if qtype == QTYPE.A:
                return RCODE.NOERROR, [RR(qname, QTYPE.A, CLASS.IN, 60, A(self.captive))], []
            return RCODE.NOERROR, [], [self.zone.soa_for(qname)[0]]
        answer: list[RR] = []
        name, chased = qname, set()
        while True:
            rrs = self.zone.get(name, qtype)
            if rrs:
                return RCODE.NOERROR, answer + rrs, []
            cname = self.zone.get(name, QTYPE.CNAME) if qtype != QTYPE.CNAME else []
            if cname and name not in chased:
                chased.add(name)
                answer += cname
                name = _norm(cname[0].rdata.label)
                continue
            break
        soa, real = self.zone.soa_for(name)
        if name in self.zone.names:
            if qtype == QTYPE.AAAA and self.dns64:
                synth = self._dns64(name, soa)
                if synth:
                    return RCODE.NOERROR, answer + synth, []
            return RCODE.NOERROR, answer, [soa]
        if answer and not real:  # CNAME out of our data: the chain is all we know
            return RCODE.NOERROR, answer, []
        return RCODE.NXDOMAIN, answer, [soa]

    def _dns64(self, name: str, soa: RR) -> list[RR]:
        assert self.dns64 is not None
        out = []
        for rr in self.zone.get(name, QTYPE.A):
            ttl = min(rr.ttl, soa.ttl, soa.rdata.times[4])
            v6 = synthesize_aaaa(self.dns64, str(rr.rdata))
            out.append(RR(name, QTYPE.AAAA, CLASS.IN, ttl, AAAA(v6)))
        return out


def _copy_edns(req: DNSRecord, reply: DNSRecord) -> None:
    if any(rr.rtype == _OPT for rr in req.ar):
        reply.add_ar(EDNS0(udp_len=1232))


def _udp_limit(req: DNSRecord) -> int:
    for rr in req.ar:
        if rr.rtype == _OPT:
            return max(512, int(rr.rclass))
    return 512


def _sockaddr(addr: str, port: int) -> tuple[int, Any]:
    """(family, sockaddr) for "192.0.2.53", "2001:db8::53", "fe80::53%eth0" (inside the ns)."""
    host, _, scope = addr.partition("%")
    ip_ = ipaddress.ip_address(host)
    if ip_.version == 4:
        return socket.AF_INET, (host, port)
    scope_id = 0
    if scope:
        scope_id = int(scope) if scope.isdigit() else socket.if_nametoindex(scope)
    return socket.AF_INET6, (host, port, 0, scope_id)


def _iface_of(addr: str) -> str | None:
    _, _, scope = addr.partition("%")
    return scope or None


def _bound(family: int, type: int, sa: Any) -> socket.socket:
    sock = socket.socket(family, type)
    try:
        if type == socket.SOCK_STREAM:  # not for UDP: two UDP binds would share the port
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(_SOL_IPV6, socket.IPV6_V6ONLY, 1)
            if type == socket.SOCK_DGRAM:
                sock.setsockopt(_SOL_IPV6, socket.IPV6_RECVPKTINFO, 1)
        elif type == socket.SOCK_DGRAM:
            sock.setsockopt(socket.IPPROTO_IP, _IP_PKTINFO, 1)
        sock.bind(sa)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class ServerLoop:
    """An event loop in a daemon thread, so fake servers answer while the caller blocks."""

    def __init__(self, name: str = "fakeupstream") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def call(self, coro: Awaitable[T], timeout: float | None = 30) -> T:
        """Run ``coro`` on the background loop and wait for it (from a non-loop thread)."""
        return asyncio.run_coroutine_threadsafe(_wrap(coro), self.loop).result(timeout)

    async def acall(self, coro: Awaitable[T]) -> T:
        """Run ``coro`` on the background loop and await it from another loop."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(_wrap(coro), self.loop))

    def close(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self.loop.close()


async def _wrap(coro: Awaitable[T]) -> T:
    return await coro


# -- client ----------------------------------------------------------------------------------
def query_from(
    ns: str | None,
    server: str,
    qname: str,
    rdtype: str = "A",
    *,
    ifname: str | None = None,
    tcp: bool = False,
    port: int = 53,
    timeout: float = 2.0,
    want_dnssec: bool = False,
    payload: int | None = None,
    message: Any = None,
) -> Any:
    """Ask ``server`` (may be "fe80::53%IFNAME") from namespace ``ns``; returns a
    dns.message.Message. ``ifname`` binds the socket to that interface (SO_BINDTODEVICE).

    Blocks the calling thread, which spends the whole exchange inside ``ns`` (so scope names
    resolve there): never call it on the loop that runs the server being asked.
    """
    import dns.message
    import dns.query

    q = message or dns.message.make_query(qname, rdtype, want_dnssec=want_dnssec, payload=payload)
    with netns.entered(ns):
        family, sa = _sockaddr(server, port)
        where = sa[0] if family == socket.AF_INET else f"{sa[0]}%{sa[3]}" if sa[3] else sa[0]
        sock = socket.socket(family, socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM)
        with sock:
            if ifname:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
            if tcp:
                sock.settimeout(timeout)
                sock.connect(sa)
                sock.setblocking(False)
                return dns.query.tcp(q, where, timeout, port, sock=sock)
            sock.setblocking(False)
            return dns.query.udp(q, where, timeout, port, sock=sock)


# -- standalone ------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m mifdns.harness.fakeupstream",
        description="Run a fake upstream DNS server (query log on stdout).",
    )
    p.add_argument("--netns", help="network namespace to listen in (default: this one)")
    p.add_argument("--listen", action="append", required=True, help="address (repeatable)")
    p.add_argument("--port", type=int, default=53)
    p.add_argument("--zone", action="append", default=[], help="zone file (repeatable)")
    p.add_argument("--captive", metavar="IPV4")
    p.add_argument("--dns64", metavar="PREFIX")
    p.add_argument("--delay", type=float, default=0.0)
    p.add_argument("--ttl", type=int)
    p.add_argument("--servfail", action="store_true")
    p.add_argument("--truncate-udp", action="store_true")
    p.add_argument("--no-tcp", action="store_true")
    args = p.parse_args(argv)
    text = ""
    for path in args.zone:
        with open(path) as f:
            text += f.read() + "\n"

    def show(seen: Seen) -> None:
        print(seen, flush=True)

    up = FakeUpstream(
        args.netns,
        args.listen,
        port=args.port,
        records=text or None,
        tcp=not args.no_tcp,
        on_query=show,
        captive=args.captive,
        dns64=args.dns64,
        delay=args.delay,
        ttl=args.ttl,
        servfail=args.servfail,
        truncate_udp=args.truncate_udp,
    )

    async def serve() -> None:
        import signal

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with up:
            print(f"# ready: {' '.join(up.listen)} port {up.port}", flush=True)
            await stop.wait()

    try:
        asyncio.run(serve())
    except (OSError, netns.HarnessError, DNSError, ValueError) as exc:
        print(f"fakeupstream: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
