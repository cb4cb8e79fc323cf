"""What happens when a transaction ends: store its answer, hand it to the resolutions waiting.

Theory of operation
-------------------
A transaction ends (``complete``) with an outcome. A probe's ends as a ``ProbeResult``. Otherwise
an answer (positive, NODATA or NXDOMAIN) becomes a cache entry under the tag the transaction was
started with (``store_response``: kind, TTL caps, the AD rule; stored only if that tag is still
the PvD's current one), unless a local DNS64 synthesis takes over the waiting resolutions. Each
waiting resolution gets the entry (``deliver``): the first positive answer wins at once; a
negative one or a failure is kept until the resolution has heard from every candidate, or its
``negative_wait`` ends; then ``finish_negative_or_fail`` answers with the best negative (NODATA
before NXDOMAIN), or REFUSED if every PvD asked refused, or SERVFAIL with an Extended DNS Error.

Functions of the resolver's state (``r``), split from resolver.py as lifecycle.py and
synthesis.py are; no I/O, no clock.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import render, synthesis, wire
from .actions import Release, Reply
from .cache import Entry, Key, Kind
from .inflight import ProbeResult, Resolution, Synth, _Probe
from .pvd import CaptiveState
from .routing import EDE_NO_REACHABLE_AUTHORITY
from .transaction import Outcome, Transaction

if TYPE_CHECKING:
    from .resolver import Resolver

EDE_NETWORK_ERROR = 23


def complete(r: Resolver, txn: Transaction, now: float) -> None:
    tkey = (txn.tag, (txn.qname, txn.qtype, txn.qclass, txn.do | (txn.cd << 1)))
    if r.inflight.get(tkey) is txn:
        del r.inflight[tkey]
    r.outbox.append(Release(txn))
    waiters = txn.waiters
    if waiters and type(waiters[0]) is _Probe:
        token = waiters[0].token
        r._probes.pop(token, None)
        r.probe_results.append(
            ProbeResult(
                token,
                txn.pvd,
                txn.tag,
                txn.qname,
                txn.qtype,
                txn.outcome.value if txn.outcome is not None else "cancelled",
                txn.response,
                txn.info,
            )
        )
        return
    outcome = txn.outcome
    entry: Entry | Synth | None = None
    why = ""
    if outcome in (Outcome.ANSWER, Outcome.NODATA, Outcome.NXDOMAIN):
        if txn.qtype == wire.AAAA and outcome is not Outcome.NXDOMAIN:
            entry = synthesis.local_dns64(r, txn, now)
        if entry is None:
            entry = store(r, txn, now)
    else:
        uf = r.upstream_failures
        uf[txn.pvd] = uf.get(txn.pvd, 0) + 1
        why = outcome.value if outcome is not None else "failed"
        if txn.errors:
            why += ": " + "; ".join(txn.errors[-3:])
    if isinstance(entry, Synth):  # the resolutions now wait for the synthesis instead
        for res in waiters:
            assert isinstance(res, Resolution)
            if not res.done and txn in res.pending:
                res.pending[res.pending.index(txn)] = entry
                entry.waiters.append(res)
        txn.waiters = []
        return
    for w in waiters:
        if type(w) is Synth:
            synthesis.done(r, w, txn, now)
        else:
            assert isinstance(w, Resolution)
            deliver(r, w, txn, txn.pvd, entry, why, now)
    # break the txn <-> resolution cycle so reference counting frees both at once, not the
    # cyclic collector (whose full passes over a large cache pause the loop)
    txn.waiters = []


def deliver(
    r: Resolver,
    res: Resolution,
    item: Transaction | Synth,
    pvd: str,
    entry: Entry | None,
    why: str,
    now: float,
) -> None:
    """One of the things ``res`` waits for is done: answer, or wait (bounded) for the rest.
    The first positive answer wins, except a synthesized one while another PvD may still
    answer natively; negatives wait for the others."""
    if item in res.pending:
        res.pending.remove(item)
    if res.done:
        return
    if entry is not None and positive(entry):
        if entry.kind is not Kind.SYNTHESIZED:
            answer(r, res, pvd, entry, now, source="upstream")
            return
        res.synthesized.append((pvd, entry))
    elif entry is not None:
        res.negatives.append((pvd, entry))
    else:
        res.failures.append((pvd, why or "failed"))
        if type(item) is Transaction and item.rejections:
            res.rejected = True
            if item.outcome is Outcome.REFUSED:
                res.refusals += 1
            if res.upstream_ede is None:
                res.upstream_ede = item.upstream_ede
    if not res.pending:
        finish_negative_or_fail(r, res, now)
    elif (res.negatives or res.synthesized) and res.wait_until is None:
        res.wait_until = now + r.settings.negative_wait
        r._push_timer(res.wait_until, res)


def store(r: Resolver, txn: Transaction, now: float) -> Entry:
    """Turn the transaction's response into a cache entry; store it if its tag is current."""
    data, info = txn.response, txn.info
    assert data is not None and info is not None
    key = (txn.qname, txn.qtype, txn.qclass, txn.do | (txn.cd << 1))
    return store_response(r, txn.pvd, txn.tag, key, data, info, now)


def store_response(
    r: Resolver,
    pvd_name: str,
    tag: int,
    key: Key,
    data: bytes,
    info: wire.ResponseInfo,
    now: float,
    synthesized: bool = False,
) -> Entry:
    s = r.settings
    body, offsets, ttls = render.make_cacheable(data, info)
    pvd = r.registry.find(pvd_name)
    if info.rcode == wire.NXDOMAIN:
        kind, ttl, cap = Kind.NXDOMAIN, info.soa_ttl, s.negative_max_ttl
    elif info.ancount:
        kind, ttl, cap = Kind.POSITIVE, info.min_answer_ttl, s.max_ttl
        if synthesized or (
            pvd is not None
            and pvd.nat64_prefixes
            and key[1] == wire.AAAA
            and synthesis.any_in_prefixes(data, info, pvd.nat64_prefixes)
        ):
            kind = Kind.SYNTHESIZED
    else:
        kind, ttl, cap = Kind.NODATA, info.soa_ttl, s.negative_max_ttl
    if pvd is not None and pvd.captive == CaptiveState.CAPTIVE:
        kind = Kind.CAPTIVE
        cap = min(cap, s.captive_max_ttl)
    elif r.portal_watch and kind is Kind.POSITIVE and pvd is not None:
        watch = r.portal_watch.get(pvd_name)
        if watch is not None and key[0] not in watch[1] and _points_at(data, info, watch[0]):
            # a portal seen here before may be back (a session expired while open): its
            # answer lives no longer than a captive one, and the adapter probes again
            kind = Kind.CAPTIVE
            cap = min(cap, s.captive_max_ttl)
            r.portal_sightings.append(pvd_name)
    ttl = 0 if ttl is None else min(ttl, cap)
    if ttls and max(ttls) > cap:
        ttls = tuple(min(t, cap) for t in ttls)
    if body[3] & 0x20 and (
        pvd is None or not pvd.spec.trust_ad or kind is Kind.SYNTHESIZED or kind is Kind.CAPTIVE
    ):
        # AD only from servers the PvD says validate, over a path it trusts (trust_ad);
        # never on synthesized or captive answers: mifdns validates nothing itself
        body = body[:3] + bytes((body[3] & ~0x20,)) + body[4:]
    entry = Entry(body, offsets, ttls, now, now + ttl, kind, info.rcode)
    if ttl > 0 and pvd is not None and pvd.attached and pvd.tag == tag:
        covers = kind == Kind.NXDOMAIN and info.ancount == 0
        r.cache.insert(tag, pvd.name, key, entry, covers_name=covers)
    return entry


def answer(r: Resolver, res: Resolution, pvd: str, entry: Entry, now: float, source: str) -> None:
    res.done = True
    if r.monitoring:
        r._event_query(res.query, res.decision, pvd, source, entry.kind.value, res.started, now)
    r.outbox.append(Reply(res.client, r._render(entry, res.query, now)))


def finish_negative_or_fail(
    r: Resolver, res: Resolution, now: float, immediate: bool = False
) -> bytes | None:
    if res.synthesized or res.negatives:
        pvd, entry = res.synthesized[0] if res.synthesized else best_negative(res.negatives)
        if immediate:
            res.done = True
            return r._render(entry, res.query, now)
        answer(r, res, pvd, entry, now, source="upstream")
        return None
    res.done = True
    why = "; ".join(f"{p}: {w}" for p, w in res.failures) or "no answer"
    if res.failures and res.refusals == len(res.failures):
        # every PvD asked has servers up that declined: say so (as dnsmasq and resolved
        # do), so the client does not take it for a failure worth retrying
        r.counters["upstream_refused"] += 1
        reply = r._error(res.query, None, wire.REFUSED, (EDE_NO_REACHABLE_AUTHORITY, why[:200]))
    else:
        # the servers' own reason if one gave it (DNSSEC bogus, say); else 22 if a server
        # answered with an error (reachable, but no answer), 23 if none could be reached
        code = (
            res.upstream_ede[0]
            if res.upstream_ede is not None
            else EDE_NO_REACHABLE_AUTHORITY
            if res.rejected
            else EDE_NETWORK_ERROR
        )
        reply = r._servfail(res.query, None, (code, why[:200]))
    if r.monitoring:
        kind = "refused" if reply is not None and reply[3] & 0xF == wire.REFUSED else "servfail"
        r._event_query(res.query, res.decision, None, "upstream", kind, res.started, now, error=why)
    if immediate:
        return reply
    if reply is not None:
        r.outbox.append(Reply(res.client, reply))
    return None


def _points_at(data: bytes, info: wire.ResponseInfo, addresses: frozenset[bytes]) -> bool:
    """Whether an A or AAAA record in the answer section holds one of ``addresses``."""
    for rtype, _ttl, off, length in info.answers:
        if (rtype == wire.A or rtype == wire.AAAA) and data[off : off + length] in addresses:
            return True
    return False


def positive(entry: Entry) -> bool:
    """NOERROR with records in the answer section (whatever the kind: a captive PvD's NODATA
    has kind ``captive`` and is still negative)."""
    body = entry.body
    return entry.rcode == wire.NOERROR and (body[6] or body[7]) != 0


def best_negative(negatives: list[tuple[str, Entry]]) -> tuple[str, Entry]:
    """NODATA (the name exists somewhere) before NXDOMAIN; otherwise the first that came."""
    for pvd, entry in negatives:
        if entry.rcode == wire.NOERROR:
            return pvd, entry
    return negatives[0]
