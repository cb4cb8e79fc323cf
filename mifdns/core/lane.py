"""The miss lane: which first attempts the UDP adapter may forward without the resolver.

Theory of operation
-------------------
A cache miss through the resolver costs ~20 us of Python (parse, route, transaction, reply
validation, render); the referee's miss benchmark wants about 3 (docs/performance.md). So the
adapter's C loop (``mifdns/aio/_lane.c``) forwards the *first UDP attempt* of a plain query
itself, and answers its reply itself when that is plain too. This module is the policy: it
says which queries may take that lane (``table``), and takes over whatever the lane hands back
(``adopt``) as an ordinary transaction of the resolver. The C side decides nothing a DNS
person would argue about; every rule is here or in the resolver.

``table`` maps every suffix of the router's table (the same keys ``RouteTable.route`` walks)
to a lane index or -1, and the default route likewise. A decision gets a lane when it is one
candidate PvD, attached, with its current tag, not captive and not watched for a returning
portal, whose first server (in the health table's order) is not held back and speaks EDNS.
AAAA and PTR stay with the resolver on a PvD with DNS64 (synthesis, RFC 6147 5.3.1). While
someone monitors queries there is no table (each query must be seen).

``adopt`` takes a handoff: the lane's attempt with the reply it got (not plain: an error, TC,
records to cache, another type, ...), None (it timed out) or b"" (its socket reported an
error: ICMP port unreachable). The resolver builds the
transaction it would have started, with the lane's attempt as its first (its ID, server and
send time), and feeds it the reply or the timeout: from there on it is the resolver's own
(next server, TCP, EDNS fallback, storage, DNS64, the failure rules). If the routing changed
meanwhile, the query starts again from the top. A timed-out attempt stays in the lane until
the total timeout; an answer to it then comes back as a *late* handoff, which ``late`` gives to
the transaction that adopted it (it takes it as one of its own earlier attempts' answers).

``absorb`` books what the lane did in the resolver's counters, RTT histograms and health.

No I/O: the adapter turns ``Lane.server`` into a socket address.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import wire
from .actions import Reply
from .inflight import Resolution
from .pvd import CaptiveState, ServerAddr

if TYPE_CHECKING:
    from .resolver import Resolver
    from .transaction import Transaction

TRUST_AD = 1  # the PvD trusts its servers' AD bit: ask with AD=1, pass it on
NO_AAAA = 2  # AAAA goes through the resolver (DNS64)
NO_PTR = 4  # PTR goes through the resolver (DNS64 reverse mapping)


@dataclass(frozen=True)
class Lane:
    pvd: str
    tag: int
    interface: str
    server: ServerAddr
    flags: int


@dataclass(frozen=True)
class Table:
    version: int  # the registry version it was built at
    routes: dict[bytes, int]
    default: int
    lanes: tuple[Lane, ...]

    def same(self, other: Table | None) -> bool:
        return (
            other is not None
            and other.version == self.version
            and other.default == self.default
            and other.lanes == self.lanes
            and other.routes == self.routes
        )


def table(r: Resolver, now: float) -> Table | None:
    """The lane table for the resolver's state at ``now``; None: no lane at all."""
    if r.monitoring:
        return None
    rt = r.router.table
    lanes: list[Lane] = []
    index: dict[tuple[str, int], int] = {}

    def lane_of(decision: Any) -> int:
        if decision.local is not None or len(decision.candidates) != 1:
            return -1
        cand = decision.candidates[0]
        got = index.get((cand.pvd, cand.tag))
        if got is not None:
            return got
        lane = _lane_for(r, cand.pvd, cand.tag, now)
        k = -1
        if lane is not None:
            k = len(lanes)
            lanes.append(lane)
        index[(cand.pvd, cand.tag)] = k
        return k

    routes = {suffix: lane_of(decision) for suffix, decision in rt.suffixes()}
    default = lane_of(rt.default)
    if not lanes:
        return None
    return Table(r.registry.version, routes, default, tuple(lanes))


def _lane_for(r: Resolver, name: str, tag: int, now: float) -> Lane | None:
    pvd = r.registry.find(name)
    if pvd is None or pvd.tag != tag or not pvd.attached:
        return None
    if pvd.captive == CaptiveState.CAPTIVE or name in r.portal_watch:
        return None
    spec = pvd.spec
    servers = spec.servers
    if not servers:
        return None
    health = r.health
    server = health.order(name, servers, now)[0] if len(servers) > 1 else servers[0]
    if health.held(name, server, now):
        return None
    if health.any_no_edns and server in health.plain(name, servers, now):
        return None
    flags = TRUST_AD if spec.trust_ad else 0
    if spec.dns64.prefix != "none" or spec.dns64.synthesize or pvd.nat64_prefixes:
        flags |= NO_AAAA | NO_PTR
    return Lane(name, tag, spec.interface, server, flags)


def adopt(
    r: Resolver,
    lane: Lane | None,
    data: bytes,
    client: object,
    max_udp: int | None,
    txid: int,
    sent: float,
    reply: bytes | None,
    now: float,
) -> Transaction | None:
    """Take over the lane's attempt for the query ``data`` from ``client`` (see the top).
    ``lane`` None: the adapter no longer knows which lane it took; the query starts again.
    Returns the transaction that adopted the attempt (a late answer to a timed-out attempt goes
    to ``late``), or None if the query started again."""
    try:
        q = wire.parse_query(data)
    except wire.WireError:  # the lane takes only what parses: cannot happen
        return None
    q.udp_size = 65535 if max_udp is None else min(q.udp_size, max_udp)
    key = (q.key, q.qtype, q.qclass, q.do | (q.cd << 1))
    decision = r.router.route(q.key)
    pvd = r.registry.find(lane.pvd) if lane is not None else None
    servers = pvd.spec.servers if pvd is not None else ()
    cands = decision.candidates
    if (
        lane is None
        or pvd is None
        or decision.local is not None
        or len(cands) != 1
        or cands[0].pvd != lane.pvd
        or cands[0].tag != lane.tag
        or pvd.tag != lane.tag
        or not pvd.attached
        or lane.server not in servers
    ):
        # the routing moved while the attempt was out: ask again from the top (the lane
        # counted this query already)
        r.counters["queries"] -= 1
        got = r.handle_query(data, client, now, max_udp)
        if got is not None:
            r.outbox.append(Reply(client, got))
        return None
    txn = r._transaction(pvd, key, sent, now)
    txn.adopt_attempt(lane.server, txid, sent)
    tkey = (lane.tag, key)
    if tkey not in r.inflight:
        r.inflight[tkey] = txn
    res = Resolution(q, client, decision, key, sent)
    txn.waiters.append(res)
    res.pending.append(txn)
    r.counters["lane_adopted"] += 1
    # from here the attempt times out as any of the resolver's (a reply that is ignored; a
    # handoff at stop, before its time: cancelled with the rest)
    r._push_timer(txn.deadline, txn)
    if reply is not None and not reply:  # the socket reported an error (ICMP unreachable)
        r.handle_send_error(txn, "connection refused (ICMP)", now)
        return txn
    if reply is None:
        if now >= txn.deadline:
            r.counters["lane_timeouts"] += 1
            r._after_step(txn, txn.on_timeout(now), now)
        return txn
    r.handle_reply(txn, reply, (lane.server.host, lane.server.port), False, now)
    return txn


def late(r: Resolver, txn: Transaction | None, lane: Lane | None, reply: bytes, now: float) -> None:
    """A reply to a lane attempt that timed out and was adopted by ``txn``: the transaction
    takes it as it takes a late answer to one of its own earlier attempts (if it still waits;
    ``txn`` None or done: ignored, and counted as such)."""
    if txn is None or lane is None or txn.done:
        r.counters["ignored_replies"] += 1
        return
    r.handle_reply(txn, reply, (lane.server.host, lane.server.port), False, now)


def absorb(
    r: Resolver,
    lanes: tuple[Lane, ...],
    drained: list[tuple[int, int, tuple[int, ...], float]],
    now: float,
) -> None:
    """Book what the lane did since the last call: ``drained[k]`` is lane k's (queries
    forwarded, answered by the lane, RTT histogram buckets, RTT sum of those answered)."""
    c = r.counters
    uq = r.upstream_queries
    for lane, (forwarded, answered, buckets, rtt_sum) in zip(lanes, drained):
        if forwarded:
            c["queries"] += forwarded
            c["cache_misses"] += forwarded
            c["upstream_queries"] += forwarded
            c["lane_forwarded"] += forwarded
            uq[lane.pvd] = uq.get(lane.pvd, 0) + forwarded
        if answered:
            c["lane_answered"] += answered
            r.stats.add_rtts(lane.pvd, buckets, rtt_sum, answered)
            r.health.record(lane.pvd, lane.server, rtt_sum / answered, now)
