"""The resolver: vet a query, route it, answer from the PvDs' caches or ask their servers.

Theory of operation
-------------------
The resolver owns the registry's router, the cache, the server health table and the in-flight
transactions; it performs no I/O and reads no clock. The adapter calls:

- ``handle_query(data, client, now, max_udp)`` for every client message. It returns the reply
  bytes at once (cache hit, local answer, error), or ``None`` when transactions were started;
- ``handle_reply(txn, data, source, tcp, now)`` for every upstream message for a transaction;
- ``handle_send_error(txn, reason, now)`` when a send or a TCP exchange failed;
- ``handle_timers(now)`` when ``next_timer()`` is due;
- ``apply(events, now)`` with the registry's events (detach, purge...).

and after each call drains ``outbox``: ``Send`` (to an upstream), ``Reply`` (to a client),
``Release`` (a transaction ended: forget its socket registration).

A client query becomes a :class:`Resolution` over the routing candidates. Each candidate PvD
is looked up in its own cache partition; the misses get one :class:`Transaction` each, shared
by every resolution waiting on the same (tag, question): identical questions are coalesced.
The first positive answer wins; a negative answer waits up to ``negative_wait`` for the other
candidates, so a fast NXDOMAIN from one network cannot hide an answer from another. Each
transaction's answer is cached under the tag it was started with, and only if that tag is
still the PvD's current one: an answer fetched before a detach or purge is never stored.
What happens when a transaction ends is in completion.py; what a detach or purge does, in
lifecycle.py.
"""

from __future__ import annotations

import heapq
import ipaddress
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import completion, dns64, introspect, lifecycle, render, synthesis, wire
from .actions import Action, Release, Reply
from .cache import Cache, Entry, Key, Kind
from .completion import best_negative, positive
from .health import Health
from .inflight import ProbeResult, Resolution, Synth, _Probe
from .local import is_nxdomain, local_answer
from .memo import AGING_HORIZON, AnswerMemo, ReadyTable
from .pvd import Pvd
from .registry import Event, Registry
from .routing import EDE_NO_REACHABLE_AUTHORITY, Candidate, Decision, Router, wire_to_text
from .stats import Stats
from .transaction import Send, Transaction

EDE_OTHER = 0
EDE_NOT_SUPPORTED = 21

TIMERS_COMPACT_MIN = 1024  # timer heap entries before stale ones are swept out


@dataclass(frozen=True, slots=True)
class Settings:
    """What the resolver core needs from the configuration (built by the daemon)."""

    max_entries: int = 100_000
    max_bytes: int = 256 << 20
    max_ttl: int = 86400
    negative_max_ttl: int = 900
    captive_max_ttl: int = 30
    timeout: float = 0.8
    total_timeout: float = 3.0
    negative_wait: float = 1.0
    edns_udp_size: int = 1232
    max_inflight: int = 4096


class _RandomIds:
    """Query IDs from a buffered os.urandom (one system call per 2048 IDs)."""

    def __init__(self) -> None:
        self._buf = b""
        self._pos = 0

    def __call__(self) -> int:
        if self._pos >= len(self._buf):
            self._buf = os.urandom(4096)
            self._pos = 0
        v = self._buf[self._pos] << 8 | self._buf[self._pos + 1]
        self._pos += 2
        return v


class Resolver:
    def __init__(
        self,
        registry: Registry,
        settings: Settings = Settings(),
        *,
        rand16: Callable[[], int] | None = None,
    ) -> None:
        self.registry = registry
        self.settings = settings
        self.router = Router(registry)
        self.cache = Cache(max_entries=settings.max_entries, max_bytes=settings.max_bytes)
        self.health = Health()
        self.stats = Stats()  # cumulative per-PvD figures for metrics, read at scrape time
        self.inflight: dict[tuple[int, Key], Transaction] = {}
        self.outbox: list[Action] = []
        self._timers: list[tuple[float, int, object]] = []
        self._timers_compact_at = TIMERS_COMPACT_MIN
        self._seq = 0
        self._rand = rand16 or _RandomIds()
        self._opt = render.opt_rr(settings.edns_udp_size)
        self._opt_do = render.opt_rr(settings.edns_udp_size, do=True)
        self.monitoring = False  # when True, ``events`` collects one dict per decision
        self.events: list[dict[str, Any]] = []
        self.counters: dict[str, int] = dict.fromkeys(
            (
                "queries",
                "cache_hits",
                "cache_misses",
                "local",
                "servfail",
                "refused",
                "formerr",
                "notimp",
                "badvers",
                "nxdomain",
                "coalesced",
                "limit_inflight",
                "purged_entries",
                "purges",
                "ignored_replies",
                "upstream_queries",
                "probes",
                "synthesized",
                "upstream_refused",
                # the miss lane (lane.py): first attempts forwarded by the adapter's C loop,
                # of those answered there, and handed back (a reply not plain, or a timeout)
                "lane_forwarded",
                "lane_answered",
                "lane_adopted",
                "lane_timeouts",
            ),
            0,
        )
        self.lane_pending = 0  # the miss lane's attempts in flight (the adapter keeps it)
        self.probe_results: list[ProbeResult] = []  # drained by the adapter, like ``outbox``
        # captive portals seen before, per PvD: (the addresses their lies pointed at, the
        # portal's own host names); an answer pointing there while the PvD is not captive is
        # capped and named in ``portal_sightings`` (drained by the adapter: probe again)
        self.portal_watch: dict[str, tuple[frozenset[bytes], frozenset[bytes]]] = {}
        self.portal_sightings: list[str] = []
        self._portal_addrs: dict[str, frozenset[bytes]] = {}
        self._probes: dict[int, Transaction] = {}  # token -> its transaction (never coalesced)
        self._probe_seq = 0
        self._synth: dict[tuple[int, Key], Synth] = {}  # (tag, key) -> synthesis in progress
        self.upstream_queries: dict[str, int] = {}
        self.upstream_failures: dict[str, int] = {}
        self.purge_log: list[dict[str, Any]] = []
        self.memo = AnswerMemo()  # see memo.py
        self._memo = self.memo.table  # read on every query: one attribute, not two

    # ================================================================== client side
    def handle_query(
        self, data: bytes, client: object, now: float, max_udp: int | None = 65494
    ) -> bytes | None:
        """``max_udp``: the listener's cap on the client's EDNS size; None for TCP (no cap)."""
        c = self.counters
        c["queries"] += 1
        memo = self._memo.get(data[2:])
        if memo is not None:
            hit, version, until, tail, cap, mq, renew = memo
            if (
                version == self.registry.version
                and cap == max_udp
                and not hit.dead
                and not self.monitoring
            ):
                if now < until:
                    c["cache_hits"] += 1
                    return data[:2] + tail
                # only aged (its TTLs moved a second): render the entry again, without the
                # parse and the route, if the one partition asked still serves this entry
                if renew is not None and self.cache.lookup(renew[0], renew[1], now) is hit:
                    c["cache_hits"] += 1
                    return data[:2] + self._memoize(data, hit, mq, now, max_udp, renew)[2:]
        try:
            q = wire.parse_query(data)
        except wire.WireError as exc:
            c["formerr"] += 1
            return render.error_reply(data, exc.rcode, opt=self._opt if wire.had_opt(data) else b"")
        q.udp_size = 65535 if max_udp is None else min(q.udp_size, max_udp)
        if q.opcode != 0:
            c["notimp"] += 1
            return render.error_reply(data, wire.NOTIMP, query=q, opt=self._opt_for(q))
        if q.edns and q.edns_version != 0:
            c["badvers"] += 1
            return render.error_reply(
                data, wire.BADVERS, query=q, opt=render.opt_rr(self.settings.edns_udp_size)
            )
        qtype = q.qtype
        if qtype == wire.AXFR or qtype == wire.IXFR or q.qclass not in (1, 255):
            c["refused"] += 1
            return render.error_reply(data, wire.REFUSED, query=q, opt=self._opt_for(q))
        if qtype in (253, 254):  # MAILB, MAILA
            c["notimp"] += 1
            return render.error_reply(data, wire.NOTIMP, query=q, opt=self._opt_for(q))
        if qtype in (41, 249, 250):  # OPT, TKEY, TSIG: meta-types, never data (RFC 6895 s3.1)
            # asked of an upstream they come back FORMERR, which would count against the server
            c["formerr"] += 1
            return render.error_reply(data, wire.FORMERR, query=q, opt=self._opt_for(q))

        decision = self.router.route(q.key)
        if decision.local is not None:
            if decision.local == "ipv4only" and qtype != wire.A:
                # RFC 8880: AAAA goes to the PvDs with DNS64 (that is how discovery works)
                decision = self.router.table.ipv4only(qtype, q.key == decision.zone)
            if decision.local is not None:
                c["local"] += 1
                if self.monitoring:
                    self._event_query(
                        q,
                        decision,
                        None,
                        "local",
                        "local",
                        now,
                        now,
                        rcode="NXDOMAIN" if is_nxdomain(q, decision) else "NOERROR",
                    )
                return self._local(q, decision)
        cands = decision.candidates
        if not cands:
            if self.monitoring:
                self._event_query(q, decision, None, "local", "servfail", now, now)
            return self._servfail(q, data, decision.ede or (EDE_OTHER, "no route"))

        key: Key = (q.key, qtype, q.qclass, q.do | (q.cd << 1))
        lookup = self.cache.lookup
        if len(cands) == 1:
            entry = lookup(cands[0].tag, key, now)
            if entry is not None:
                c["cache_hits"] += 1
                if self.monitoring:
                    self._event_query(q, decision, cands[0].pvd, "hit", entry.kind.value, now, now)
                    return self._render(entry, q, now)
                return self._memoize(data, entry, q, now, max_udp, (cands[0].tag, key))
        else:
            negatives: list[tuple[str, Entry]] = []
            synthesized: list[tuple[str, Entry]] = []
            missing: list[Candidate] = []
            for cand in cands:
                entry = lookup(cand.tag, key, now)
                if entry is None:
                    missing.append(cand)
                elif not positive(entry):
                    negatives.append((cand.pvd, entry))
                elif entry.kind is Kind.SYNTHESIZED:
                    synthesized.append((cand.pvd, entry))  # a native AAAA elsewhere wins
                else:
                    c["cache_hits"] += 1
                    if self.monitoring:
                        self._event_query(q, decision, cand.pvd, "hit", entry.kind.value, now, now)
                        return self._render(entry, q, now)
                    return self._memoize(data, entry, q, now, max_udp)
            if not missing:
                c["cache_hits"] += 1
                pvd, entry = synthesized[0] if synthesized else best_negative(negatives)
                if self.monitoring:
                    self._event_query(q, decision, pvd, "hit", entry.kind.value, now, now)
                return self._render(entry, q, now)
            cands = tuple(missing)
            res = Resolution(q, client, decision, key, now)
            res.negatives = negatives
            res.synthesized = synthesized
            return self._start(res, cands, now)
        return self._start(Resolution(q, client, decision, key, now), cands, now)

    def _memoize(
        self,
        data: bytes,
        entry: Entry,
        q: wire.Query,
        now: float,
        max_udp: int | None,
        renew: tuple[int, Key] | None = None,
    ) -> bytes:
        """Render a hit and remember it in the answer memo (see memo.py). ``renew`` (the
        partition and key of a single-candidate hit): once the TTLs aged, the entry is rendered
        again from the memo's query if that partition still returns it (several candidates: the
        full path, since another candidate may have gained an answer meanwhile)."""
        reply = self._render(entry, q, now)
        # valid until the entry expires or its TTLs age by another second, whichever is first
        stored = entry.stored
        until = min(entry.expires, stored + (int(now - stored) if now > stored else 0) + 1)
        # a listener may age it on its own (memo.py) if it came from one partition and carries
        # its records (a truncated reply has none, so no TTLs where the offsets point), for
        # AGING_HORIZON: then the resolver looks again (the entry is still cached and marked
        # recently used, or it is fetched again)
        aging = (
            (stored, min(entry.expires, now + AGING_HORIZON), entry.ttl_offsets, entry.ttls)
            if renew is not None and not reply[2] & 2
            else None
        )
        self.memo.remember(
            data, (entry, self.registry.version, until, reply[2:], max_udp, q, renew), aging
        )
        return reply

    def ready_table(self, max_udp: int | None) -> ReadyTable | None:
        """The answer memo as a UDP listener with cap ``max_udp`` replays it without calling
        ``handle_query`` (see memo.py); asked for once per batch, it reports what it answered
        with ``count_ready``. None while someone monitors queries (each must then be seen)."""
        if self.monitoring:
            return None
        return self.memo.ready_table(max_udp, self.registry.version)

    def count_ready(self, n: int) -> None:
        """``n`` queries were answered from ``ready_table``: count them as queries and hits."""
        c = self.counters
        c["queries"] += n
        c["cache_hits"] += n

    def _start(self, res: Resolution, cands: tuple[Any, ...], now: float) -> bytes | None:
        self.counters["cache_misses"] += 1
        q = res.query
        for cand in cands:
            tkey = (cand.tag, res.key)
            txn: Transaction | Synth | None = self.inflight.get(tkey)
            if txn is None and self._synth:
                txn = self._synth.get(tkey)
            if txn is not None:
                self.counters["coalesced"] += 1
            else:
                if len(self.inflight) + self.lane_pending >= self.settings.max_inflight:
                    self.counters["limit_inflight"] += 1
                    res.failures.append((cand.pvd, "in-flight limit reached"))
                    continue
                pvd = self.registry.find(cand.pvd)
                if pvd is None or pvd.tag != cand.tag:
                    res.failures.append((cand.pvd, "PvD changed"))
                    continue
                if q.qtype == wire.PTR and pvd.spec.dns64.synthesize and pvd.nat64_prefixes:
                    target = dns64.ptr_target(q.key, dns64.v6_prefixes(pvd.nat64_prefixes))
                    if target is not None:  # RFC 6147 5.3.1: ask the embedded IPv4's name
                        got = synthesis.start(
                            self, Synth("ptr", pvd.name, pvd.tag, res.key, target), now
                        )
                        if isinstance(got, Synth):
                            got.waiters.append(res)
                            res.pending.append(got)
                        elif got is None:
                            res.failures.append((cand.pvd, "no servers"))
                        elif positive(got):
                            res.synthesized.append((pvd.name, got))
                        else:
                            res.negatives.append((pvd.name, got))
                        continue
                txn = self._launch(pvd, res.key, now)
                if txn is None:
                    res.failures.append((cand.pvd, "no servers"))
                    continue
            txn.waiters.append(res)
            res.pending.append(txn)
        if not res.pending:
            return completion.finish_negative_or_fail(self, res, now, immediate=True)
        if res.synthesized:  # a cached synthesized AAAA waits (bounded) for a native one
            res.wait_until = now + self.settings.negative_wait
            self._push_timer(res.wait_until, res)
        return None

    def _launch(self, pvd: Pvd, key: Key, now: float, *, shared: bool = True) -> Transaction | None:
        """Start a transaction for ``key`` on ``pvd``; ``shared``: registered in ``inflight`` so
        identical questions coalesce on it. None if the PvD has no servers."""
        txn = self._transaction(pvd, key, now, now)
        send = txn.start(now)
        if send is None:
            return None
        if shared:
            self.inflight[(pvd.tag, key)] = txn
        self._send(send)
        return txn

    def _transaction(self, pvd: Pvd, key: Key, started: float, now: float) -> Transaction:
        """A transaction for ``key`` on ``pvd``, begun at ``started`` (the miss lane's attempts
        began before the resolver sees them): servers in health order at ``now``, AD asked if
        the PvD trusts it, the servers known to reject EDNS asked without."""
        s = self.settings
        spec = pvd.spec
        servers = spec.servers
        qname, qtype, qclass, flags = key
        txn = Transaction(
            pvd.name,
            pvd.tag,
            spec.interface,
            self.health.order(pvd.name, servers, now) if len(servers) > 1 else servers,
            qname,
            qtype,
            qclass,
            flags & 1 == 1,
            flags & 2 == 2,
            started,
            s.timeout,
            s.total_timeout,
            self._rand,
            s.edns_udp_size,
        )
        if spec.trust_ad:
            txn.ad = True
        if self.health.any_no_edns:
            txn.plain = self.health.plain(pvd.name, servers, now)
        return txn

    # ================================================================== mifdns's own questions
    def probe(self, pvd: str, qname: bytes | str, qtype: int, now: float) -> int:
        """Ask one question of one PvD, through its servers and interface, for mifdns itself
        (NAT64 discovery, the captive-portal hijack probe, the portal API's address).

        Returns a token; the completion comes back as a :class:`ProbeResult` with that token in
        ``probe_results`` (always exactly one, also when the PvD is detached or has no servers,
        or is purged meanwhile: outcome ``cancelled`` / ``no-servers``). A probe is never
        coalesced with clients' questions and its answer is never cached."""
        key = qname if isinstance(qname, bytes) else wire.text_to_qname(qname)
        key = key.lower()
        self._probe_seq += 1
        token = self._probe_seq
        self.counters["probes"] += 1
        p = self.registry.find(pvd)
        if p is None or not p.attached:
            self.probe_results.append(ProbeResult(token, pvd, 0, key, qtype, "cancelled"))
            return token
        txn = self._launch(p, (key, qtype, 1, 0), now, shared=False)
        if txn is None:
            self.probe_results.append(ProbeResult(token, pvd, p.tag, key, qtype, "no-servers"))
            return token
        txn.waiters.append(_Probe(token))
        self._probes[token] = txn
        return token

    def set_portal_hosts(self, pvd: str, hosts: tuple[str, ...]) -> None:
        """The captive portal's own host names of ``pvd`` (API URI, user-portal-url): routed
        to it while it is captive (see routing rule 2)."""
        if self.router.portal_hosts.get(pvd, ()) != hosts:
            self.router.set_portal_hosts(pvd, hosts)
            self.memo.forget()
        self._watch(pvd)

    def set_portal_addresses(self, pvd: str, addresses: tuple[str, ...]) -> None:
        """Where the captive portal's lies on ``pvd`` pointed (the hijack probe saw them).
        While the PvD is not captive, an A/AAAA answer from it that points there (other than
        for the portal's own host names) is cached as ``captive`` for at most
        ``captive_max_ttl`` and ``pvd`` goes into ``portal_sightings``: the portal may be
        back. ``()`` forgets them."""
        packed = set()
        for a in addresses:
            try:
                packed.add(ipaddress.ip_address(a).packed)
            except ValueError:
                continue
        if packed:
            self._portal_addrs[pvd] = frozenset(packed)
        else:
            self._portal_addrs.pop(pvd, None)
        self._watch(pvd)

    def _watch(self, pvd: str) -> None:
        addrs = self._portal_addrs.get(pvd)
        if not addrs:
            self.portal_watch.pop(pvd, None)
            return
        hosts = set()
        for h in self.router.portal_hosts.get(pvd, ()):
            try:
                hosts.add(wire.text_to_qname(h).lower())
            except wire.WireError:
                continue
        self.portal_watch[pvd] = (addrs, frozenset(hosts))

    # ================================================================== upstream side
    def handle_reply(
        self, txn: Transaction, data: bytes, source: tuple[str, int], tcp: bool, now: float
    ) -> None:
        before = txn.ignored
        send = txn.on_reply(data, source, tcp, now)
        if txn.ignored != before:
            self.counters["ignored_replies"] += 1
        self._after_step(txn, send, now)

    def handle_send_error(self, txn: Transaction, reason: str, now: float) -> None:
        self._after_step(txn, txn.on_error(now, reason), now)

    def next_timer(self) -> float | None:
        timers = self._timers
        while timers and _stale(timers[0]):
            heapq.heappop(timers)
        return timers[0][0] if timers else None

    def handle_timers(self, now: float) -> None:
        timers = self._timers
        while timers and timers[0][0] <= now:
            item = heapq.heappop(timers)
            if _stale(item):
                continue
            obj = item[2]
            if isinstance(obj, Transaction):
                self._after_step(obj, obj.on_timeout(now), now)
            elif isinstance(obj, Resolution):
                completion.finish_negative_or_fail(self, obj, now)

    def _send(self, send: Send) -> None:
        self.outbox.append(send)
        self.counters["upstream_queries"] += 1
        uq = self.upstream_queries
        uq[send.txn.pvd] = uq.get(send.txn.pvd, 0) + 1
        self._push_timer(send.txn.deadline, send.txn)

    def _push_timer(self, when: float, obj: object) -> None:
        self._seq += 1
        timers = self._timers
        heapq.heappush(timers, (when, self._seq, obj))
        if len(timers) > self._timers_compact_at:
            # most entries are deadlines of transactions answered since (dropped lazily, when
            # they reach the top): drop them in one pass, so that an answered transaction, its
            # resolution and its answer are freed now rather than a timeout later
            timers[:] = [t for t in timers if not _stale(t)]
            heapq.heapify(timers)
            self._timers_compact_at = max(TIMERS_COMPACT_MIN, 2 * len(timers))

    def _after_step(self, txn: Transaction, send: Send | None, now: float) -> None:
        for server, rtt in txn.samples:
            self.health.record(txn.pvd, server, rtt, now)
            if rtt is not None:
                self.stats.rtt(txn.pvd, rtt)
        txn.samples.clear()
        if txn.rejected_edns:
            for server in txn.rejected_edns:
                self.health.no_edns(txn.pvd, server, now)
            txn.rejected_edns = ()
        if send is not None:
            self._send(send)
            return
        if txn.done:
            completion.complete(self, txn, now)

    # ================================================================== replies
    def _opt_for(self, q: wire.Query, ede: tuple[int, str] | None = None) -> bytes:
        if not q.edns:
            return b""
        if ede is not None:
            return render.opt_rr(self.settings.edns_udp_size, do=q.do, ede=ede)
        return self._opt_do if q.do else self._opt

    def _render(self, entry: Entry, q: wire.Query, now: float) -> bytes:
        if entry.rcode == wire.NXDOMAIN:
            self.counters["nxdomain"] += 1
        elapsed = int(now - entry.stored) if now > entry.stored else 0
        out = render.render_reply(
            entry.body,
            entry.ttl_offsets,
            entry.ttls,
            elapsed,
            q,
            opt=self._opt_for(q),
            clear_ad=not (q.ad or q.do),
        )
        if entry.rcode == wire.NXDOMAIN and len(out) >= 16 + len(q.qname):
            # an NXDOMAIN stored for one type answers every type: put the asked type back
            pos = 12 + len(q.qname)
            if out[pos : pos + 2] != q.qtype.to_bytes(2, "big") and out[5] == 1:
                out = out[:pos] + q.qtype.to_bytes(2, "big") + out[pos + 2 :]
        return out

    def _servfail(self, q: wire.Query, data: bytes | None, ede: tuple[int, str]) -> bytes | None:
        self.counters["servfail"] += 1
        return self._error(q, data, wire.SERVFAIL, ede)

    def _error(
        self, q: wire.Query, data: bytes | None, rcode: int, ede: tuple[int, str]
    ) -> bytes | None:
        if data is None:  # answering later: rebuild the header the reply echoes
            data = q.id.to_bytes(2, "big") + q.flags.to_bytes(2, "big") + b"\x00\x01" + bytes(6)
        return render.error_reply(data, rcode, query=q, opt=self._opt_for(q, ede))

    def _local(self, q: wire.Query, decision: Decision) -> bytes:
        if is_nxdomain(q, decision):
            self.counters["nxdomain"] += 1
        return local_answer(q, decision, self._opt_for(q))

    # ================================================================== lifecycle
    def apply(self, events: list[Event], now: float) -> list[dict[str, Any]]:
        """Act on registry events: purge partitions, cancel transactions. Returns a log record per
        event (for the monitor, the log and ``ctl status``). See lifecycle.py."""
        return lifecycle.apply(self, events, now)

    def cancel_all(self, now: float) -> int:
        """Stopping: answer every waiting client now (see lifecycle.py)."""
        return lifecycle.cancel_all(self, now)

    # ================================================================== introspection
    def explain(self, name: str, qtype: int = wire.A) -> dict[str, Any]:
        return introspect.explain(self.router, name, qtype)

    def cache_listing(self, now: float, pvd: str | None = None) -> list[dict[str, Any]]:
        return introspect.cache_listing(self.cache, self.registry, now, pvd)

    def _event_query(
        self,
        q: wire.Query,
        decision: Decision,
        pvd: str | None,
        source: str,
        kind: str,
        started: float,
        now: float,
        error: str | None = None,
        rcode: str | None = None,
    ) -> None:
        self.events.append(
            introspect.query_event(q, decision, pvd, source, kind, started, now, error, rcode)
        )


def _stale(item: tuple[float, int, object]) -> bool:
    when, _, obj = item
    if isinstance(obj, Transaction):
        return obj.done or obj.deadline != when
    if isinstance(obj, Resolution):
        return obj.done or obj.wait_until != when
    return False


__all__ = [
    "Resolver",
    "Settings",
    "Reply",
    "Release",
    "Send",
    "Resolution",
    "wire_to_text",
    "EDE_NO_REACHABLE_AUTHORITY",
]
