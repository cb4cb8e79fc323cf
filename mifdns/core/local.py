"""Answers mifdns gives itself, never forwarded (RFC 6761, RFC 6303, RFC 7686, RFC 8880).

``routing.RouteTable`` decides *that* a name is answered here (``Decision.local`` names the
rule and ``Decision.zone`` the zone); this module builds the reply.
"""

from __future__ import annotations

from . import render, wire
from .routing import Decision

LOCAL_SOA = (3600, 1200, 604800, 10800)  # refresh, retry, expire, minimum (RFC 6303 section 3)
IPV4ONLY = (bytes([192, 0, 0, 170]), bytes([192, 0, 0, 171]))  # RFC 8880
NOBODY = b"\x06nobody\x07invalid\x00"


def local_answer(q: wire.Query, decision: Decision, opt: bytes) -> bytes:
    """localhost and *.localhost: 127.0.0.1 / ::1 (NODATA for other types); ipv4only.arpa: its
    two A records (NODATA for other types); the apex of an RFC 6303 zone: its SOA or NODATA;
    everything else under these zones (invalid, onion, private reverse zones): NXDOMAIN."""
    rule = decision.local or ""
    zone = decision.zone
    soa = (zone, LOCAL_SOA[3], render.soa_rdata(zone, NOBODY, 1, *LOCAL_SOA))
    if rule == "localhost":
        if q.qtype == wire.A:
            return render.local_reply(q, 0, [(wire.A, 0, bytes([127, 0, 0, 1]))], opt=opt)
        if q.qtype == wire.AAAA:
            return render.local_reply(q, 0, [(wire.AAAA, 0, bytes(15) + b"\x01")], opt=opt)
        return render.local_reply(q, 0, [], authority_soa=soa, opt=opt)
    if rule == "ipv4only":  # only A records; other types are NODATA
        apex = q.key == zone
        ans = [(wire.A, 86400, a) for a in IPV4ONLY] if apex and q.qtype == wire.A else []
        rc = 0 if apex else wire.NXDOMAIN
        return render.local_reply(q, rc, ans, authority_soa=None if ans else soa, opt=opt)
    if rule.startswith("rfc6303") and q.key == zone:
        if q.qtype == wire.SOA:
            return render.local_reply(q, 0, [(wire.SOA, soa[1], soa[2])], opt=opt)
        return render.local_reply(q, 0, [], authority_soa=soa, opt=opt)
    return render.local_reply(q, wire.NXDOMAIN, [], authority_soa=soa, opt=opt)


def is_nxdomain(q: wire.Query, decision: Decision) -> bool:
    """Whether :func:`local_answer` answers NXDOMAIN (for the resolver's counters)."""
    rule = decision.local or ""
    if rule == "localhost":
        return False
    if rule == "ipv4only" or rule.startswith("rfc6303"):
        return q.key != decision.zone
    return True
