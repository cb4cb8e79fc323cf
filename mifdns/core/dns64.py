"""NAT64 prefixes per PvD: discovery (RFC 7050), address synthesis (RFC 6052, RFC 6147), PTR.

Theory of operation
-------------------
An AAAA record synthesized by a network's DNS64 points at that network's NAT64: it is valid only
there. mifdns therefore learns each PvD's NAT64 prefixes and uses them in three places:

- **Discovery** (``dns64.prefix: auto``): the daemon asks ``ipv4only.arpa AAAA`` through the
  PvD's own servers and interface (``Resolver.probe``) and hands the result to :func:`discover`,
  which extracts every prefix (:func:`prefixes_from_addresses`: the well-known IPv4 addresses
  192.0.0.170/171 searched at every RFC 6052 position, the second address used to settle an
  ambiguous position) and says when to ask again (the answer's TTL, RFC 7050 section 5).
- **Marking**: the resolver tags an AAAA answer whose address falls in the PvD's prefixes as
  ``synthesized`` (cache kind), so ties prefer a native AAAA from another PvD.
- **Local synthesis** (``dns64.synthesize: true``, RFC 6147): on an AAAA NODATA (never NXDOMAIN)
  the resolver asks A through the same PvD and builds the AAAA answer with
  :func:`synthesize_aaaa_response`; AAAA in the excluded ranges (:data:`EXCLUDED_AAAA`) count as
  absent (:func:`filter_excluded`). PTR questions for addresses under the prefix are asked as the
  embedded IPv4 address's in-addr.arpa name (:func:`ptr_target`) and answered with a CNAME to it
  plus its records (:func:`synthesize_ptr_response`).

Everything here is pure: wire bytes and addresses in, wire bytes and addresses out. The builders
read responses that ``wire.parse_response`` already validated, and write uncompressed names, so
their output goes through ``wire.parse_response`` and ``render.make_cacheable`` like any
upstream answer.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from . import wire

IPv4 = ipaddress.IPv4Address
IPv6 = ipaddress.IPv6Address
Net6 = ipaddress.IPv6Network

#: RFC 7050 section 2.2: the well-known IPv4 addresses ipv4only.arpa has.
WKA_PRIMARY = IPv4("192.0.0.170")
WKA_SECONDARY = IPv4("192.0.0.171")
WKAS = (WKA_PRIMARY, WKA_SECONDARY)
#: RFC 6052 section 2.2: the prefix lengths an IPv4-embedded IPv6 address may use.
RFC6052_LENGTHS = (32, 40, 48, 56, 64, 96)
WELL_KNOWN_PREFIX = Net6("64:ff9b::/96")
#: RFC 6147 section 5.1.4: AAAA in these ranges are treated as absent (::ffff/96 by default).
EXCLUDED_AAAA: tuple[Net6, ...] = (Net6("::ffff:0:0/96"),)
#: RFC 6147 section 5.1.7: the synthesized TTL cap when the AAAA NODATA carried no SOA.
NO_SOA_TTL = 600
#: RFC 7050 section 5: refresh no sooner than this (a TTL of 0 must not turn into a query storm),
#: and no later than this (so a renumbered NAT64 is noticed within the hour).
MIN_REFRESH = 5.0
MAX_REFRESH = 3600.0
NO_DNS64_REFRESH = 60.0  # after NODATA/NXDOMAIN: at least this long before asking again
#: retry delays after a failed discovery (no answer, SERVFAIL): doubling up to the last.
RETRY_DELAYS = (2.0, 5.0, 15.0, 60.0, 300.0)

IPV4ONLY = wire.text_to_qname("ipv4only.arpa.")
_IP6_ARPA = b"\x03ip6\x04arpa\x00"
_IN_ADDR_ARPA = b"\x07in-addr\x04arpa\x00"
_RR = struct.Struct("!HHIH")
_HEX = "0123456789abcdef"


# ------------------------------------------------------------------------------ RFC 6052
def check_prefix(prefix: Net6) -> None:
    """ValueError unless ``prefix`` is a usable RFC 6052 prefix (length, zero u-octet)."""
    if prefix.prefixlen not in RFC6052_LENGTHS:
        raise ValueError(f"{prefix}: an RFC 6052 prefix is /32, /40, /48, /56, /64 or /96")
    if _u_octet(prefix.network_address.packed):
        raise ValueError(f"{prefix}: bits 64-71 of an RFC 6052 prefix must be zero")


def _u_octet(packed: bytes) -> int:
    return packed[8]


def _v4_positions(prefixlen: int) -> list[int]:
    """Byte offsets of the four IPv4 octets in an address of this format (skipping octet 8)."""
    pos = prefixlen // 8
    out: list[int] = []
    while len(out) < 4:
        if pos == 8:
            pos += 1
        out.append(pos)
        pos += 1
    return out


_POSITIONS = {n: _v4_positions(n) for n in RFC6052_LENGTHS}


def embed(prefix: Net6, v4: IPv4 | str) -> IPv6:
    """The IPv4-embedded IPv6 address of ``v4`` under ``prefix`` (RFC 6052 section 2.2)."""
    b = bytearray(prefix.network_address.packed)
    for pos, octet in zip(_POSITIONS[prefix.prefixlen], IPv4(v4).packed):
        b[pos] = octet
    return IPv6(bytes(b))


def extract(address: IPv6, prefixlen: int) -> IPv4:
    """The IPv4 address embedded in ``address`` for a prefix of this length."""
    packed = address.packed
    return IPv4(bytes(packed[p] for p in _POSITIONS[prefixlen]))


def extract_from(address: IPv6, prefixes: Iterable[Net6]) -> IPv4 | None:
    """The IPv4 address embedded in ``address`` if it lies under one of ``prefixes``."""
    for prefix in prefixes:
        if address in prefix:
            return extract(address, prefix.prefixlen)
    return None


def v6_prefixes(prefixes: Iterable[object]) -> tuple[Net6, ...]:
    """The IPv6 networks among ``prefixes`` (a PvD's NAT64 prefixes are typed as any network)."""
    return tuple(p for p in prefixes if isinstance(p, Net6))


def is_excluded(address: IPv6, excluded: Sequence[Net6] = EXCLUDED_AAAA) -> bool:
    return any(address in net for net in excluded)


# ------------------------------------------------------------------------------ RFC 7050
def prefixes_from_addresses(addresses: Iterable[IPv6]) -> tuple[Net6, ...]:
    """Every NAT64 prefix the AAAA answers for ``ipv4only.arpa`` reveal (RFC 7050 section 3).

    Each address is searched for a well-known IPv4 address at every RFC 6052 position whose
    u-octet (bits 64-71) is zero. One match gives the prefix. Several matches in one address are
    settled by the other well-known address: the right position is the one where the other
    AAAA, under the same prefix bits, holds the other WKA; if that does not settle it, the
    longest candidate is used (the /96 of the well-known prefix is by far the most common).
    The result keeps the order of the answer, without duplicates.
    """
    addrs = list(addresses)
    found: dict[Net6, None] = {}
    per_addr: list[list[tuple[Net6, IPv4]]] = []
    for addr in addrs:
        packed = addr.packed
        cands = []
        if packed[8] == 0:
            for n in sorted(RFC6052_LENGTHS, reverse=True):
                v4 = extract(addr, n)
                if v4 in WKAS:
                    cands.append((_mask(addr, n), v4))
        per_addr.append(cands)
    seen_pairs = {(p, v4) for cands in per_addr for p, v4 in cands}
    for cands in per_addr:
        if not cands:
            continue
        if len(cands) == 1:
            found.setdefault(cands[0][0], None)
            continue
        confirmed = [p for p, v4 in cands if (p, _other(v4)) in seen_pairs]
        found.setdefault(confirmed[0] if confirmed else cands[0][0], None)
    return tuple(found)


def _mask(addr: IPv6, n: int) -> Net6:
    return Net6((int(addr) >> (128 - n) << (128 - n), n))


def _other(v4: IPv4) -> IPv4:
    return WKA_SECONDARY if v4 == WKA_PRIMARY else WKA_PRIMARY


def aaaa_addresses(data: bytes, info: wire.ResponseInfo) -> list[IPv6]:
    """The AAAA addresses (class IN) in a parsed response's answer section."""
    return [
        IPv6(data[off : off + 16])
        for rtype, _ttl, off, length in info.answers
        if rtype == wire.AAAA and length == 16
    ]


@dataclass(frozen=True, slots=True)
class Discovery:
    """What one ``ipv4only.arpa AAAA`` exchange says.

    ``prefixes`` is None when the exchange says nothing (no answer, SERVFAIL: keep what is known
    and retry at ``next_at``); otherwise the prefixes to use from now on, possibly none (NODATA,
    NXDOMAIN or no well-known address: this network has no DNS64). ``note`` is for people.
    """

    prefixes: tuple[Net6, ...] | None
    next_at: float
    note: str


def discover(
    outcome: str, data: bytes | None, info: wire.ResponseInfo | None, now: float, failures: int = 0
) -> Discovery:
    """Interpret one discovery exchange. ``outcome`` is the transaction's (answer, nodata,
    nxdomain, timeout, failed, ...); ``failures`` counts the failed exchanges before this one."""
    if outcome == "answer" and data is not None and info is not None:
        prefixes = prefixes_from_addresses(aaaa_addresses(data, info))
        ttl = info.min_answer_ttl or 0
        refresh = min(max(float(ttl), MIN_REFRESH), MAX_REFRESH)
        if prefixes:
            return Discovery(
                prefixes, now + refresh, f"found {', '.join(map(str, prefixes))} (TTL {ttl})"
            )
        return Discovery((), now + refresh, "AAAA answer without a well-known address")
    if outcome in ("nodata", "nxdomain"):
        ttl = info.soa_ttl if info is not None and info.soa_ttl is not None else 0
        refresh = min(max(float(ttl), NO_DNS64_REFRESH), MAX_REFRESH)
        return Discovery((), now + refresh, f"no DNS64 ({outcome})")
    delay = RETRY_DELAYS[min(failures, len(RETRY_DELAYS) - 1)]
    return Discovery(None, now + delay, f"discovery failed ({outcome}); retry in {delay:g}s")


# ------------------------------------------------------------------------------ reverse names
def reverse_to_address(key: bytes) -> IPv6 | None:
    """The address of a full-length ``ip6.arpa`` wire name (32 nibble labels), else None."""
    if len(key) != 64 + len(_IP6_ARPA) or not key.endswith(_IP6_ARPA):
        return None
    nibbles = []
    for i in range(0, 64, 2):
        if key[i] != 1:
            return None
        c = chr(key[i + 1]).lower()
        if c not in _HEX:
            return None
        nibbles.append(c)
    return IPv6(int("".join(reversed(nibbles)), 16))


def in_addr_name(v4: IPv4) -> bytes:
    """``192.0.2.1`` -> the wire name of ``1.2.0.192.in-addr.arpa.``."""
    out = bytearray()
    for octet in reversed(v4.packed):
        label = str(octet).encode()
        out.append(len(label))
        out += label
    return bytes(out) + _IN_ADDR_ARPA


def ptr_target(key: bytes, prefixes: Sequence[Net6]) -> bytes | None:
    """For an ip6.arpa name of an address under one of ``prefixes``: the in-addr.arpa wire name
    of the embedded IPv4 address (RFC 6147 section 5.3.1). None otherwise."""
    if not prefixes:
        return None
    addr = reverse_to_address(key)
    if addr is None:
        return None
    v4 = extract_from(addr, prefixes)
    return None if v4 is None else in_addr_name(v4)


# ------------------------------------------------------------------------------ wire building
def read_name(data: bytes, pos: int) -> tuple[bytes, int]:
    """(uncompressed name, position after it) of a name in an already validated message."""
    out = bytearray()
    end = -1
    hops = 0
    while True:
        n = data[pos]
        if n >= 0xC0:
            if end < 0:
                end = pos + 2
            hops += 1
            if hops > 32:
                raise wire.WireError("compression loop")
            pos = ((n & 0x3F) << 8) | data[pos + 1]
            continue
        out += data[pos : pos + n + 1]
        if n == 0:
            return bytes(out), (end if end >= 0 else pos + 1)
        pos += n + 1


# (owner, type, class, ttl, rdata): one record with every name in it uncompressed
Record = tuple[bytes, int, int, int, bytes]
_ONE_NAME = {wire.CNAME, wire.DNAME, wire.PTR, wire.NS}
_NO_NAMES = {wire.A, wire.AAAA, 16}  # TXT


def records(data: bytes, info: wire.ResponseInfo, section: str = "answer") -> list[Record]:
    """The records of one section (answer/authority) of a validated response, names
    uncompressed. Only the types a synthesized answer carries are kept: CNAME, DNAME, PTR, NS
    and SOA (their names decompressed), A, AAAA and TXT; others are skipped (their rdata could
    hold compression pointers into a message they no longer belong to, and signatures cannot
    cover what is synthesized here anyway)."""
    pos = info.question_end
    out: list[Record] = []
    first, count = (0, info.ancount) if section == "answer" else (info.ancount, info.nscount)
    for i in range(first + count):
        owner, pos = read_name(data, pos)
        rtype, rclass, ttl, rdlen = _RR.unpack_from(data, pos)
        rdata_at = pos + 10
        pos = rdata_at + rdlen
        if i < first or rtype == wire.OPT:
            continue
        ttl = 0 if ttl > 0x7FFFFFFF else ttl
        if rtype in _ONE_NAME:
            rdata = read_name(data, rdata_at)[0]
        elif rtype == wire.SOA:
            mname, at = read_name(data, rdata_at)
            rname, at = read_name(data, at)
            rdata = mname + rname + data[at : at + 20]
        elif rtype in _NO_NAMES:
            rdata = data[rdata_at:pos]
        else:
            continue
        out.append((owner, rtype, rclass, ttl, rdata))
    return out


def build_response(
    qname: bytes,
    qtype: int,
    qclass: int,
    rcode: int,
    answer: Sequence[Record],
    authority: Sequence[Record] = (),
) -> bytes:
    """A response (ID 0, QR RD RA) with uncompressed names, ready for ``wire.parse_response``."""
    flags = wire.QR | wire.RD | wire.RA | (rcode & 0xF)
    parts = [
        struct.pack("!6H", 0, flags, 1, len(answer), len(authority), 0),
        qname,
        struct.pack("!HH", qtype, qclass),
    ]
    for owner, rtype, rclass, ttl, rdata in (*answer, *authority):
        parts.append(owner + _RR.pack(rtype, rclass, max(0, ttl), len(rdata)) + rdata)
    return b"".join(parts)


def synthesize_aaaa_response(
    qname: bytes,
    qclass: int,
    a_data: bytes,
    a_info: wire.ResponseInfo,
    prefix: Net6,
    negative_ttl: int | None,
    elapsed: int = 0,
) -> bytes | None:
    """The AAAA answer synthesized from an A answer (RFC 6147 section 5.1.7).

    The A answer's CNAME/DNAME chain is kept; each A record becomes an AAAA under ``prefix``
    with TTL min(A TTL, ``negative_ttl``), where ``negative_ttl`` is the AAAA NODATA's negative
    TTL (RFC 2308: the SOA minimum, capped by the SOA's own TTL), or 600 s when it carried no
    SOA. ``elapsed``: seconds the A answer has spent in the cache. None if there is no A record.
    """
    cap = NO_SOA_TTL if negative_ttl is None else negative_ttl
    answer: list[Record] = []
    synthesized = 0
    for owner, rtype, rclass, ttl, rdata in records(a_data, a_info):
        ttl = max(0, ttl - elapsed)
        if rtype == wire.A and len(rdata) == 4:
            v6 = embed(prefix, IPv4(rdata)).packed
            answer.append((owner, wire.AAAA, rclass, min(ttl, cap), v6))
            synthesized += 1
        elif rtype in (wire.CNAME, wire.DNAME):
            answer.append((owner, rtype, rclass, ttl, rdata))
    if not synthesized:
        return None
    return build_response(qname, wire.AAAA, qclass, wire.NOERROR, answer)


def filter_excluded(
    data: bytes, info: wire.ResponseInfo, excluded: Sequence[Net6] = EXCLUDED_AAAA
) -> bytes | None:
    """An AAAA answer without its records in the excluded ranges (RFC 6147 section 5.1.4).

    None when nothing is excluded (use the answer as it is); a NODATA-shaped answer (only the
    CNAME chain left) when every AAAA was excluded: the caller then synthesizes.
    """
    addrs = aaaa_addresses(data, info)
    if not any(is_excluded(a, excluded) for a in addrs):
        return None
    keep = [
        r for r in records(data, info) if r[1] != wire.AAAA or not is_excluded(IPv6(r[4]), excluded)
    ]
    return build_response(info.qname, info.qtype, info.qclass, wire.NOERROR, keep)


def has_aaaa(info: wire.ResponseInfo) -> bool:
    return any(rtype == wire.AAAA for rtype, _ttl, _off, _len in info.answers)


def synthesize_ptr_response(
    qname: bytes, qclass: int, target: bytes, data: bytes, info: wire.ResponseInfo, elapsed: int = 0
) -> bytes:
    """The answer to a PTR question for an address under the NAT64 prefix: a CNAME from the
    ip6.arpa name to the embedded IPv4 address's in-addr.arpa name (``target``), then what the
    PvD answered for that name: its PTR records, or its negative answer (rcode and SOA)."""
    answer = [
        (owner, rtype, rclass, max(0, ttl - elapsed), rdata)
        for owner, rtype, rclass, ttl, rdata in records(data, info)
    ]
    authority = [
        (owner, rtype, rclass, max(0, ttl - elapsed), rdata)
        for owner, rtype, rclass, ttl, rdata in records(data, info, "authority")
        if rtype == wire.SOA
    ]
    ttls = [r[3] for r in answer] or [r[3] for r in authority] or [NO_SOA_TTL]
    cname = (qname, wire.CNAME, qclass, min(min(ttls), NO_SOA_TTL), target)
    return build_response(qname, wire.PTR, qclass, info.rcode & 0xF, [cname, *answer], authority)


__all__ = [
    "EXCLUDED_AAAA",
    "IPV4ONLY",
    "RFC6052_LENGTHS",
    "WELL_KNOWN_PREFIX",
    "WKA_PRIMARY",
    "WKA_SECONDARY",
    "Discovery",
    "aaaa_addresses",
    "build_response",
    "check_prefix",
    "discover",
    "embed",
    "extract",
    "extract_from",
    "filter_excluded",
    "has_aaaa",
    "in_addr_name",
    "is_excluded",
    "prefixes_from_addresses",
    "ptr_target",
    "read_name",
    "records",
    "reverse_to_address",
    "synthesize_aaaa_response",
    "synthesize_ptr_response",
    "v6_prefixes",
]
