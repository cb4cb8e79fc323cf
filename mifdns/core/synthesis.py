"""Local DNS64 synthesis (RFC 6147) for the resolver: a PvD with ``dns64.synthesize`` and a
NAT64 prefix answers AAAA questions that have no usable AAAA from the A answer of the same PvD,
and PTR questions under the prefix from the embedded IPv4 address's PTR.

A synthesis in progress is a :class:`~.inflight.Synth` job: it waits on the target's
transaction (coalesced with clients' identical questions) and then delivers to the
resolutions waiting on it. Functions of the resolver's state, kept apart from the query path.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from . import completion, dns64, render, wire
from .cache import Entry, Kind
from .inflight import Synth
from .pvd import IPNetwork
from .transaction import Outcome, Transaction

if TYPE_CHECKING:
    from .resolver import Resolver


def local_dns64(r: Resolver, txn: Transaction, now: float) -> Synth | Entry | None:
    """An AAAA answer from a PvD that synthesizes locally: drop AAAA in the excluded ranges;
    if no AAAA is left (NODATA, a bare CNAME chain, or only excluded ones), synthesize from
    the A answer of the same PvD. None: store the answer as it is."""
    pvd = r.registry.find(txn.pvd)
    if (
        pvd is None
        or pvd.tag != txn.tag
        or not pvd.spec.dns64.synthesize
        or not pvd.nat64_prefixes
        or txn.cd
    ):
        return None  # CD: a validating client synthesizes itself (RFC 6147 section 5.5)
    data, info = txn.response, txn.info
    assert data is not None and info is not None
    filtered = dns64.filter_excluded(data, info)
    if filtered is not None:
        txn.response, txn.info = data, info = filtered, wire.parse_response(filtered)
    if dns64.has_aaaa(info):
        return None
    key = (txn.qname, txn.qtype, txn.qclass, txn.do | (txn.cd << 1))
    job = Synth("aaaa", pvd.name, pvd.tag, key, txn.qname, negative=(data, info))
    got = start(r, job, now)
    return got if got is not None else _negative(r, job, now)


def start(r: Resolver, job: Synth, now: float) -> Synth | Entry | None:
    """Start ``job``: finish it now if the target's answer is cached in the PvD's partition,
    else wait on the target's transaction (coalesced). None: no transaction could start."""
    pvd = r.registry.find(job.pvd)
    if pvd is None or pvd.tag != job.tag:
        return None
    key = (job.target, wire.A if job.kind == "aaaa" else wire.PTR, job.key[2], job.key[3])
    hit = r.cache.lookup(job.tag, key, now)
    if hit is not None:
        body = hit.body
        return _entry(
            r, job, body, wire.parse_response(body), now, elapsed=max(0, int(now - hit.stored))
        )
    txn = r.inflight.get((job.tag, key))
    if txn is None:
        txn = r._launch(pvd, key, now)
        if txn is None:
            return None
    txn.waiters.append(job)
    r._synth[(job.tag, job.key)] = job
    return job


def done(r: Resolver, job: Synth, txn: Transaction, now: float) -> None:
    if r._synth.get((job.tag, job.key)) is job:
        del r._synth[(job.tag, job.key)]
    entry: Entry | None = None
    why = ""
    if txn.response is not None and txn.info is not None:
        entry = _entry(r, job, txn.response, txn.info, now)
    elif txn.outcome is not Outcome.CANCELLED and job.negative is not None:
        entry = _negative(r, job, now)  # no A answer: the AAAA NODATA stands (not cached)
    else:
        why = f"{job.kind} synthesis: {txn.outcome.value if txn.outcome else 'failed'}"
    for res in job.waiters:
        completion.deliver(r, res, job, job.pvd, entry, why, now)
    job.waiters = []


def _entry(
    r: Resolver, job: Synth, data: bytes, info: wire.ResponseInfo, now: float, elapsed: int = 0
) -> Entry:
    """The answer of a synthesis from the target's answer; stored under the job's key."""
    pvd = r.registry.find(job.pvd)
    prefixes = (
        dns64.v6_prefixes(pvd.nat64_prefixes) if pvd is not None and pvd.tag == job.tag else ()
    )
    qname, _, qclass, _ = job.key
    if job.kind == "ptr":
        out = dns64.synthesize_ptr_response(qname, qclass, job.target, data, info, elapsed)
    elif not prefixes or info.rcode != wire.NOERROR:
        out = None
    else:
        assert job.negative is not None
        out = dns64.synthesize_aaaa_response(
            qname, qclass, data, info, prefixes[0], job.negative[1].soa_ttl, elapsed
        )
    if out is None:
        return _negative(r, job, now, store=True)
    r.counters["synthesized"] += 1
    synth_info = wire.parse_response(out)
    return completion.store_response(
        r, job.pvd, job.tag, job.key, out, synth_info, now, synthesized=synth_info.ancount > 0
    )


def _negative(r: Resolver, job: Synth, now: float, store: bool = False) -> Entry:
    """The AAAA answer that had no usable AAAA, as the answer (stored only if the A answer
    confirmed there is nothing to synthesize from)."""
    assert job.negative is not None
    data, info = job.negative
    if store:
        return completion.store_response(r, job.pvd, job.tag, job.key, data, info, now)
    body, offsets, ttls = render.make_cacheable(data, info)
    kind = Kind.NODATA if not info.ancount else Kind.POSITIVE
    return Entry(body, offsets, ttls, now, now, kind, info.rcode)


def any_in_prefixes(data: bytes, info: wire.ResponseInfo, prefixes: tuple[IPNetwork, ...]) -> bool:
    for rtype, _ttl, off, length in info.answers:
        if rtype == wire.AAAA and length == 16:
            addr = ipaddress.IPv6Address(data[off : off + 16])
            if any(addr in p for p in prefixes):
                return True
    return False
