"""One question asked of one PvD: server choice, retries, UDP -> TCP, reply validation.

Theory of operation
-------------------
A transaction belongs to one PvD and one cache tag. It walks the PvD's servers in the order the
resolver gives (healthy and fast first). Each attempt gets a fresh random query ID. The adapter
sends what ``start``/``on_reply``/``on_timeout`` return, through a socket bound to the PvD's
interface, and feeds back every datagram that arrives for it; ``on_reply`` accepts a reply only
if its source, ID and question match the attempt in flight (anything else is ignored and
counted: spoofing and stray replies cannot complete a transaction).

Per attempt: no reply within ``timeout`` -> next server. TC over UDP -> the same server over
TCP. FORMERR or NOTIMP without an OPT to our EDNS query -> the same server again without EDNS
(RFC 6891 section 7; once per server and transaction; the resolver remembers such a server, see
health.py, and says so in ``plain`` when it starts a transaction). SERVFAIL, REFUSED, NOTIMP, FORMERR or
garbage -> next server. NOERROR/NXDOMAIN -> done. An attempt given up for a timeout still counts:
its answer (NOERROR/NXDOMAIN from that server, with that ID and question) is taken if it comes
before the transaction ends, so a server slower than ``timeout`` is not asked in vain. The
walk cycles through the servers until ``total_timeout`` from the start, then the transaction
ends as TIMEOUT or FAILED (REFUSED if every attempt was refused: the servers are up and
declined the question, which the client should hear as such). Outcomes are a closed enum (``Outcome``), mapped to client rcodes in
one place in the resolver.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Callable, Sequence

from . import render, wire
from .pvd import ServerAddr


class Outcome(enum.Enum):
    ANSWER = "answer"  # NOERROR with records in the answer section
    NODATA = "nodata"  # NOERROR, empty answer section
    NXDOMAIN = "nxdomain"
    FAILED = "failed"  # every attempt got SERVFAIL/REFUSED/garbage or a network error
    REFUSED = "refused"  # every attempt was answered REFUSED (passed on to the client)
    TIMEOUT = "timeout"  # the budget ran out with attempts unanswered
    CANCELLED = "cancelled"  # the PvD detached or was purged while in flight
    NO_SERVERS = "no-servers"


class Send:
    """Ask the adapter to send ``wire`` to ``server`` (over TCP if ``tcp``)."""

    __slots__ = ("txn", "server", "wire", "tcp", "txid")

    def __init__(self, txn: Transaction, server: ServerAddr, data: bytes, tcp: bool, txid: int):
        self.txn = txn
        self.server = server
        self.wire = data
        self.tcp = tcp
        self.txid = txid


class Transaction:
    __slots__ = (
        "pvd",
        "tag",
        "interface",
        "servers",
        "qname",
        "qtype",
        "qclass",
        "do",
        "cd",
        "udp_size",
        "timeout",
        "started",
        "final",
        "deadline",
        "index",
        "tries",
        "txid",
        "tcp",
        "server",
        "outcome",
        "response",
        "info",
        "waiters",
        "samples",
        "sent_at",
        "errors",
        "_rand",
        "ignored",
        "refusals",
        "earlier",
        "plain",
        "rejected_edns",
        "fallbacks",
        "ad",
        "rejections",
        "upstream_ede",
    )

    def __init__(  # positional on the hot path (keywords cost ~1 us per miss)
        self,
        pvd: str,
        tag: int,
        interface: str,
        servers: Sequence[ServerAddr],
        qname: bytes,
        qtype: int,
        qclass: int,
        do: bool,
        cd: bool,
        now: float,
        timeout: float,
        total_timeout: float,
        rand16: Callable[[], int],
        udp_size: int = 1232,
    ) -> None:
        self.pvd = pvd
        self.tag = tag
        self.interface = interface
        self.servers = servers
        self.qname = qname
        self.qtype = qtype
        self.qclass = qclass
        self.do = do
        self.cd = cd
        self.udp_size = udp_size
        self.timeout = timeout
        self.started = now
        self.final = now + total_timeout
        self.deadline = now
        self.index = -1
        self.tries = 0
        self.txid = 0
        self.tcp = False
        self.server: ServerAddr | None = None
        self.outcome: Outcome | None = None
        self.response: bytes | None = None
        self.info: wire.ResponseInfo | None = None
        self.waiters: list[object] = []
        self.samples: list[tuple[ServerAddr, float | None]] = []  # (server, rtt or None=failed)
        self.sent_at = now
        self.errors: list[str] = []
        self._rand = rand16
        self.ignored = 0  # replies that did not match (spoofed, stray, late)
        self.refusals = 0  # attempts answered REFUSED
        # UDP attempts given up for a timeout (txid, server, sent at): their answers still count
        self.earlier: list[tuple[int, ServerAddr, float]] = []
        # servers asked without OPT: known to reject EDNS (the resolver's health table says so
        # at the start), or found to in this transaction
        self.plain: tuple[ServerAddr, ...] = ()
        self.rejected_edns: tuple[ServerAddr, ...] = ()  # found here; drained by the resolver
        self.fallbacks = 0  # attempts repeated without EDNS
        self.ad = False  # ask with AD=1 (the PvD trusts its servers' AD bits)
        self.rejections = 0  # attempts a server answered with an error rcode (it is reachable)
        self.upstream_ede: tuple[int, str] | None = None  # the first EDE such an answer carried

    @property
    def done(self) -> bool:
        return self.outcome is not None

    # ------------------------------------------------------------------ inputs
    def start(self, now: float) -> Send | None:
        if not self.servers:
            self.outcome = Outcome.NO_SERVERS
            return None
        return self._next_server(now)

    def adopt_attempt(self, server: ServerAddr, txid: int, sent: float) -> None:
        """Instead of ``start``: a first UDP attempt already sent to ``server`` with ``txid``
        at ``sent`` (by the miss lane), recorded as ``_send`` records its own."""
        self.index = list(self.servers).index(server)
        self.tries = 1
        self.server = server
        self.tcp = False
        self.txid = txid
        self.sent_at = sent
        self.deadline = min(sent + self.timeout, self.final)

    def on_reply(self, data: bytes, source: tuple[str, int], tcp: bool, now: float) -> Send | None:
        """A datagram or TCP message arrived for this transaction. Returns the next send, if any;
        check ``done`` afterwards."""
        server = self.server
        if self.done or server is None:
            self.ignored += 1
            return None
        current = tcp == self.tcp and _same_source(source, server)
        if not current and (tcp or not self.earlier):
            self.ignored += 1
            return None
        try:
            info = wire.parse_response(data)
        except wire.WireError:
            if current and len(data) >= 2 and int.from_bytes(data[:2], "big") == self.txid:
                return self._fail_attempt(now, "malformed reply")
            self.ignored += 1
            return None
        rcode = info.rcode
        if (
            info.qtype != self.qtype
            or info.qclass != self.qclass
            or (info.qname != self.qname and not wire.names_equal(info.qname, self.qname))
        ) and not (
            # an error with no question section (QDCOUNT 0: old servers answer EDNS this way,
            # RFC 1035 does not make errors echo it), to the current attempt's ID and source
            info.qname == b""
            and current
            and info.id == self.txid
            and rcode != wire.NOERROR
            and rcode != wire.NXDOMAIN
            and not (info.ancount or info.nscount)
        ):
            self.ignored += 1
            return None
        if not (current and info.id == self.txid):
            if tcp:  # over TCP only the reply to the attempt in flight; earlier ones were UDP
                self.ignored += 1
                return None
            # perhaps the answer to an attempt given up for a timeout: taken if it is one
            for txid, was, sent_at in self.earlier:
                if txid == info.id and _same_source(source, was):
                    break
            else:
                self.ignored += 1
                return None
            if info.tc or (rcode != wire.NOERROR and rcode != wire.NXDOMAIN):
                self.ignored += 1  # that attempt was given up already; the current one goes on
                return None
            self.samples.append((was, now - sent_at))
            self._take(data, info)
            return None
        rtt = now - self.sent_at
        if info.tc and not tcp:
            self.samples.append((server, rtt))
            return self._send(server, now, tcp=True)
        if rcode == wire.NOERROR or rcode == wire.NXDOMAIN:
            self.samples.append((server, rtt))
            self._take(data, info)
            return None
        if (
            (rcode == wire.FORMERR or rcode == wire.NOTIMP)
            and info.opt_start is None
            and self.udp_size
            and server not in self.plain
        ):
            # a server that does not know EDNS (RFC 6891 section 7): ask it again without
            self.samples.append((server, rtt))
            self.plain += (server,)
            self.rejected_edns += (server,)
            self.fallbacks += 1
            self.errors.append(f"{server}: {RCODE_NAMES[rcode]} to EDNS")
            return self._send(server, now, tcp=self.tcp)
        if rcode == wire.REFUSED:
            self.refusals += 1
        self.rejections += 1
        if self.upstream_ede is None:
            self.upstream_ede = wire.ede_of(data, info)
        reason = RCODE_NAMES.get(rcode, f"rcode {rcode}")
        if self.upstream_ede is not None:
            reason += f" (EDE {self.upstream_ede[0]}: {self.upstream_ede[1]})"[:120]
        return self._fail_attempt(now, reason)

    def _take(self, data: bytes, info: wire.ResponseInfo) -> None:
        self.response = data
        self.info = info
        if info.rcode == wire.NXDOMAIN:
            self.outcome = Outcome.NXDOMAIN
        elif info.ancount:
            self.outcome = Outcome.ANSWER
        else:
            self.outcome = Outcome.NODATA

    def on_timeout(self, now: float) -> Send | None:
        if self.done or now < self.deadline:
            return None
        return self._fail_attempt(now, "timeout", timed_out=True)

    def on_error(self, now: float, reason: str) -> Send | None:
        """The adapter could not send, or the TCP connection failed."""
        if self.done:
            return None
        return self._fail_attempt(now, reason)

    def cancel(self) -> None:
        if not self.done:
            self.outcome = Outcome.CANCELLED

    # ------------------------------------------------------------------ internals
    def _fail_attempt(self, now: float, reason: str, timed_out: bool = False) -> Send | None:
        assert self.server is not None
        self.samples.append((self.server, None))
        self.errors.append(f"{self.server}: {reason}")
        if now >= self.final:
            self.outcome = Outcome.TIMEOUT if timed_out else self._failed()
            return None
        if not timed_out and self.tries - self.fallbacks >= len(self.servers):
            # every server was tried and this one answered with an error: asking again now would
            # only hammer them; timeouts, by contrast, are retried until the budget runs out
            self.outcome = self._failed()
            return None
        return self._next_server(now)

    def _failed(self) -> Outcome:
        refused = self.refusals and self.refusals == len(self.errors)
        return Outcome.REFUSED if refused else Outcome.FAILED

    def _next_server(self, now: float) -> Send | None:
        self.index = (self.index + 1) % len(self.servers)
        if self.tries >= 3 * len(self.servers) + 3:  # bound the walk even with instant failures
            all_timeouts = all(e.endswith("timeout") for e in self.errors)
            self.outcome = Outcome.TIMEOUT if all_timeouts and self.errors else self._failed()
            return None
        return self._send(self.servers[self.index], now, tcp=False)

    def _send(self, server: ServerAddr, now: float, *, tcp: bool) -> Send:
        if self.server is not None and not self.tcp and self.deadline <= now:
            # a UDP attempt that timed out: its answer may still come (see the top)
            self.earlier.append((self.txid, self.server, self.sent_at))
        self.tries += 1
        self.server = server
        self.tcp = tcp
        self.txid = self._rand()
        self.sent_at = now
        self.deadline = min(now + self.timeout * (2 if tcp else 1), self.final)
        data = render.build_query(
            self.txid,
            self.qname,
            self.qtype,
            self.qclass,
            do=self.do,
            cd=self.cd,
            udp_size=0 if self.plain and server in self.plain else self.udp_size,
            ad=self.ad,
        )
        return Send(self, server, data, tcp, self.txid)


RCODE_NAMES = {
    wire.FORMERR: "FORMERR",
    wire.SERVFAIL: "SERVFAIL",
    wire.NOTIMP: "NOTIMP",
    wire.REFUSED: "REFUSED",
    wire.BADVERS: "BADVERS",
}


def _same_source(source: tuple[str, int], server: ServerAddr) -> bool:
    if source[1] != server.port:
        return False
    host = source[0]
    if "%" in host:
        host = host.split("%", 1)[0]
    if host == server.host:
        return True
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped == server.address
    return addr == server.address
