"""What the resolver shows about itself: ``explain``, the cache listing, monitor events.

None of this runs on the query path unless someone watches (``Resolver.monitoring``);
dnspython is imported here for type names only.
"""

from __future__ import annotations

from typing import Any

import dns.rdatatype

from . import wire
from .cache import Cache
from .registry import Registry
from .routing import Decision, Router

_RCODES = {"nxdomain": "NXDOMAIN", "servfail": "SERVFAIL", "refused": "REFUSED"}


def explain(router: Router, name: str, qtype: int = wire.A) -> dict[str, Any]:
    """Which PvDs ``name`` goes to, with grades and reasons (``ctl explain``)."""
    key = wire.text_to_qname(name).lower()
    decision = router.route(key)
    if decision.local == "ipv4only" and qtype != wire.A:
        decision = router.table.ipv4only(qtype, key == decision.zone)
    return decision.to_json()


def cache_listing(
    cache: Cache, registry: Registry, now: float, pvd: str | None = None
) -> list[dict[str, Any]]:
    """Live cache entries, each with the PvD whose partition holds it (``ctl cache``)."""
    rows = []
    for part in cache.partitions():
        owner = registry.tag_owner(part.tag)
        if owner is None or (pvd is not None and owner.name != pvd):
            continue
        for (name, qtype, _qclass, flags), entry, covers in cache.items(part.tag, now):
            rows.append(
                {
                    "name": wire.qname_to_text(name),
                    "type": "*"
                    if covers
                    else dns.rdatatype.to_text(dns.rdatatype.RdataType.make(qtype)),
                    "pvd": owner.name,
                    "kind": entry.kind.value,
                    "ttl": entry.ttl_left(now),
                    "rcode": {0: "NOERROR", 3: "NXDOMAIN"}.get(entry.rcode, str(entry.rcode)),
                    "dnssec_ok": bool(flags & 1),
                }
            )
    rows.sort(key=lambda r: (r["pvd"], r["name"], r["type"]))
    return rows


def query_event(
    q: wire.Query,
    decision: Decision,
    pvd: str | None,
    source: str,
    kind: str,
    started: float,
    now: float,
    error: str | None = None,
    rcode: str | None = None,
) -> dict[str, Any]:
    """One monitor/query-log record. The adapter stamps the wall-clock ``time``; the keys are
    those mifdns.aio.control documents. ``rcode``: the answer's, when ``kind`` does not tell it
    (a local answer is NOERROR or NXDOMAIN)."""
    return {
        "event": "query",
        "name": wire.qname_to_text(q.qname),
        "type": dns.rdatatype.to_text(dns.rdatatype.RdataType.make(q.qtype)),
        "pvd": pvd,
        "cache": "hit" if source == "hit" else ("-" if source == "local" else "miss"),
        "kind": kind,
        "rcode": rcode or _RCODES.get(kind, "NOERROR"),
        "ms": round((now - started) * 1000, 3),
        "candidates": [
            {"pvd": c.pvd, "grade": c.grade, "reason": c.reason} for c in decision.candidates
        ],
        "local": decision.local if source == "local" else None,
        "refused": decision.ede[1] if decision.ede is not None else None,
        **({"error": error} if error else {}),
    }
