"""An in-memory driver for the resolver core: fake upstream "worlds" per PvD, no sockets.

Every Send in the outbox is answered (or not) by the world of the PvD whose transaction sent
it, so tests can run the whole query path -- routing, cache, transactions, ties, purge --
with time passed in by hand.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset

from mifdns.core.pvd import Domain, PvdSpec, parse_server
from mifdns.core.registry import Registry
from mifdns.core.resolver import Release, Reply, Resolver, Settings
from mifdns.core.transaction import Send


def spec(name: str, iface: str, servers=("192.0.2.53",), domains=(), **kw) -> PvdSpec:
    return PvdSpec(
        name=name,
        interface=iface,
        servers=tuple(parse_server(s, iface) for s in servers),
        domains=tuple(Domain.parse(d) for d in domains),
        **kw,
    )


@dataclass
class World:
    """Zone data one PvD's servers answer from: name -> {type: [rdata text]}."""

    records: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    ttl: int = 300
    soa_min: int = 60
    mode: str = "answer"  # answer | drop | servfail | refused | truncate
    no_edns: bool = False  # a query with an OPT gets FORMERR without one (before EDNS)
    bare_errors: bool = False  # error replies are a bare header (no question section)
    edns_seen: list[bool] = field(default_factory=list)  # whether each query had an OPT
    ad: bool = False  # answers claim AD=1 (authenticated data), validated or not
    ede: tuple[int, str] | None = None  # an Extended DNS Error on error answers
    seen: list[tuple[str, str]] = field(default_factory=list)
    asked_ad: list[bool] = field(default_factory=list)  # AD in each query that got an answer

    def respond(self, query_wire: bytes, tcp: bool) -> bytes | None:
        q = dns.message.from_wire(query_wire)
        qn, qt = q.question[0].name, q.question[0].rdtype
        self.seen.append((qn.to_text().lower(), dns.rdatatype.to_text(qt)))
        self.edns_seen.append(q.edns >= 0)
        if self.no_edns and q.edns >= 0:
            r = dns.message.make_response(q)
            r.use_edns(False)
            r.set_rcode(dns.rcode.FORMERR)
            return self._bare(r) if self.bare_errors else r.to_wire()
        if self.mode == "drop":
            return None
        r = dns.message.make_response(q)
        if self.mode in ("servfail", "refused"):
            r.set_rcode(dns.rcode.from_text(self.mode))
            if self.ede is not None:
                r.use_edns(0, options=[dns.edns.EDEOption(*self.ede)])
            return self._bare(r) if self.bare_errors else r.to_wire()
        if self.mode == "truncate" and not tcp:
            r.flags |= dns.flags.TC
            return r.to_wire()
        if self.ad:
            r.flags |= dns.flags.AD
        self.asked_ad.append(bool(q.flags & dns.flags.AD))
        key = qn.to_text().lower().rstrip(".")
        node = self.records.get(key)
        if node is None:
            r.set_rcode(dns.rcode.NXDOMAIN)
            r.authority.append(self._soa())
        elif dns.rdatatype.to_text(qt) in node:
            r.answer.append(
                dns.rrset.from_text_list(qn, self.ttl, "IN", qt, node[dns.rdatatype.to_text(qt)])
            )
        else:
            r.authority.append(self._soa())
        return r.to_wire()

    @staticmethod
    def _bare(r: dns.message.Message) -> bytes:
        """The 12-byte header alone: ID, flags and rcode, every count 0."""
        return r.id.to_bytes(2, "big") + (r.flags | r.rcode()).to_bytes(2, "big") + bytes(8)

    def _soa(self) -> dns.rrset.RRset:
        return dns.rrset.from_text(
            "example.", 3600, "IN", "SOA", f"ns.example. h.example. 1 2 3 4 {self.soa_min}"
        )


_DEFAULT_SETTINGS = Settings()  # frozen: one instance serves every Driver


class Driver:
    def __init__(self, specs: list[PvdSpec], settings: Settings = _DEFAULT_SETTINGS) -> None:
        self.registry = Registry()
        self.now = 1000.0
        ids = iter(range(1, 1 << 30))
        self.resolver = Resolver(self.registry, settings, rand16=lambda: next(ids) & 0xFFFF)
        self.worlds: dict[str, World] = {}
        self.replies: list[tuple[object, bytes]] = []
        self.reply_at: dict[object, float] = {}
        self.dropped: list[Send] = []
        for s in specs:
            self.worlds[s.name] = World()
            self.apply(self.registry.add(s, now=self.now))

    def apply(self, events) -> list[dict]:
        return self.resolver.apply(events, self.now)

    def query(
        self,
        name: str,
        rdtype: str = "A",
        *,
        want_dnssec: bool = False,
        client: object = "c1",
        pump: bool = True,
        ad: bool = False,
    ) -> dns.message.Message | None:
        q = dns.message.make_query(name, rdtype, use_edns=0, want_dnssec=want_dnssec)
        if ad:
            q.flags |= dns.flags.AD
        out = self.resolver.handle_query(q.to_wire(), client, self.now)
        if out is not None:
            return dns.message.from_wire(out)
        if pump:
            self.pump()
            for c, data in list(self.replies):
                if c == client:
                    self.replies.remove((c, data))
                    return dns.message.from_wire(data)
        return None

    def pump(self, until: float | None = None) -> None:
        """Deliver sends to the worlds and advance time over timers until nothing is left."""
        for _ in range(1000):
            box, self.resolver.outbox = self.resolver.outbox, []
            for act in box:
                if isinstance(act, Reply):
                    self.replies.append((act.client, act.data))
                    self.reply_at[act.client] = self.now
                elif isinstance(act, Send):
                    world = self.worlds[act.txn.pvd]
                    data = world.respond(act.wire, act.tcp)
                    if data is None:
                        self.dropped.append(act)
                        continue
                    self.resolver.handle_reply(
                        act.txn, data, act.server.sockaddr(), act.tcp, self.now
                    )
            if self.resolver.outbox:
                continue
            nxt = self.resolver.next_timer()
            if nxt is None or (until is not None and nxt > until):
                return
            self.now = max(self.now, nxt)
            self.resolver.handle_timers(self.now)

    def cache(self, pvd: str | None = None) -> list[dict]:
        return self.resolver.cache_listing(self.now, pvd)


def answers(msg: dns.message.Message) -> list[str]:
    return sorted(rd.to_text() for rrset in msg.answer for rd in rrset)


__all__ = ["Driver", "World", "spec", "answers", "Release", "Callable"]
