"""Composing and patching DNS messages for the hot path: bytes in, bytes out, no sockets, no clock.

Theory of operation
-------------------
An upstream reply is stored once and rendered many times. After wire.parse_response() has
checked it, make_cacheable() strips the OPT RR and zeroes the ID; what is stored is those bytes,
the TTL offsets and the TTLs. render_reply() copies the stored bytes into one bytearray and
patches the ID, flags, the client's spelling of the question name and the aged TTLs in place,
then appends the reply's own OPT; over the client's UDP size it answers truncated() instead.

Patching in place is safe only because of the compression-pointer rules parse_response()
enforces (see "Compression pointers" in mifdns.core.wire): every pointer points strictly
backwards, and none lands in the header or in an RR's fixed fields, so rewriting a TTL or the
question's letter case never changes a name. When the OPT RR sits in the middle of the
additional section, make_cacheable() moves the pointers of the RRs after it that point past it
(owner names, and the rdata names of the types wire._NAME_AT lists, plus SOA).

The other builders (build_query, error_reply, local_reply, opt_rr, soa_rdata) compose messages
from scratch. What reads wire data here raises only WireError on bad input (error_reply()
returns None instead); builders trust their arguments (a bad argument is a programming error,
not hostile input).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from .wire import (
    _NAME_AT,
    AA,
    AD,
    CD,
    EDE_OPTION,
    OPT,
    QR,
    RA,
    RD,
    SOA,
    TC,
    Query,
    ResponseInfo,
    WireError,
    _plain_question,
    names_equal,
)

__all__ = [
    "build_query",
    "error_reply",
    "local_reply",
    "make_cacheable",
    "opt_rr",
    "patch_id",
    "render_reply",
    "soa_rdata",
    "truncated",
]

# bound once: the hot path pays no attribute lookup per call
_HEADER = struct.Struct("!6H")
_pack_header = _HEADER.pack
_HH = struct.Struct("!HH")
_unpack_hh = _HH.unpack_from
_pack_into_hh = _HH.pack_into
_RR = struct.Struct("!HHIH")  # type, class, ttl, rdlength
_unpack_rr = _RR.unpack_from
_pack_into_i = struct.Struct("!I").pack_into
_pack_into_h = struct.Struct("!H").pack_into
# a method of an imported name compiles to an attribute lookup per call (not LOAD_METHOD)
_name_at = _NAME_AT.get

_OPCODE_MASK = 0x7800
_ECHO = _OPCODE_MASK | RD | CD  # header bits an answer copies from the question


def build_query(
    txid: int,
    qname: bytes,
    qtype: int,
    qclass: int = 1,
    *,
    do: bool = False,
    cd: bool = False,
    udp_size: int = 1232,
    ad: bool = False,
) -> bytes:
    """An upstream query: RD=1, one question, an OPT RR (version 0, no options); ``udp_size``
    0: no OPT (plain DNS, for a server that rejects EDNS). ``ad``: AD=1, so that a validating
    server says whether the answer validated (RFC 6840 section 5.7)."""
    flags = RD | CD if cd else RD
    if ad:
        flags |= AD
    if not udp_size:
        return _pack_header(txid, flags, 1, 0, 0, 0) + qname + _HH.pack(qtype, qclass)
    header = _pack_header(txid, flags, 1, 0, 0, 1)
    opt = _QUERY_OPT.get((udp_size, do))
    if opt is None:
        opt = _QUERY_OPT[(udp_size, do)] = opt_rr(udp_size, do=do)
    return header + qname + _HH.pack(qtype, qclass) + opt


_QUERY_OPT: dict[tuple[int, bool], bytes] = {}  # (udp_size, do) -> OPT RR: a handful at most


def opt_rr(
    udp_size: int, *, do: bool = False, ede: tuple[int, str] | None = None, ext_rcode: int = 0
) -> bytes:
    """An OPT RR (EDNS version 0). ``ext_rcode`` is the FULL rcode (e.g. BADVERS=16): only its
    upper 8 bits are stored. ``ede`` = (info-code, text) adds an RFC 8914 option."""
    rdata = b""
    if ede is not None:
        text = ede[1].encode("utf-8")
        rdata = struct.pack("!HHH", EDE_OPTION, 2 + len(text), ede[0]) + text
    ttl = ((ext_rcode >> 4) & 0xFF) << 24 | (0x8000 if do else 0)
    return b"\x00" + _RR.pack(OPT, udp_size, ttl, len(rdata)) + rdata


def soa_rdata(
    mname: bytes, rname: bytes, serial: int, refresh: int, retry: int, expire: int, minimum: int
) -> bytes:
    """SOA rdata from uncompressed wire names and the five counters."""
    return mname + rname + struct.pack("!5I", serial, refresh, retry, expire, minimum)


_SHARED: dict[tuple[int, ...], tuple[int, ...]] = {}
_SHARED_MAX = 4096


def _shared(t: tuple[int, ...]) -> tuple[int, ...]:
    """One object for equal TTL and offset tuples: most cached answers share a few (one record,
    the zone's TTL), and a tuple with its ints costs ~60 bytes per cache entry."""
    got = _SHARED.get(t)
    if got is None:
        if len(_SHARED) >= _SHARED_MAX:
            _SHARED.clear()
        _SHARED[t] = got = t
    return got


def make_cacheable(
    data: bytes, info: ResponseInfo
) -> tuple[bytes, tuple[int, ...], tuple[int, ...]]:
    """(body, ttl_offsets, ttls): the response without its OPT RR and with ID 0.

    When the OPT is not the last RR, the compression pointers of the RRs after it that point
    past it are moved back (owner names, and rdata names of the types parse_response checks).
    WireError only if a pointer points into the OPT RR itself (legal, absurd).
    The tuples may be shared with other entries (they are immutable).
    """
    ttls = _shared(tuple(info.ttls))
    start, end = info.opt_start, info.opt_end
    if start is None or end is None:
        return b"\0\0" + data[2:], _shared(tuple(info.ttl_offsets)), ttls
    cut = end - start
    body = bytearray(data[:start])
    body += data[end:]
    body[0] = body[1] = 0
    _pack_into_h(body, 10, info.arcount - 1)
    if end < len(data):
        try:
            pos = start
            while pos < len(body):
                pos = _shift_pointers(body, pos, start, cut)
                rtype, _, _, rdlen = _unpack_rr(body, pos)
                rdata, pos = pos + 10, pos + 10 + rdlen
                at = _name_at(rtype)
                if at is not None:
                    _shift_pointers(body, rdata + at, start, cut)
                elif rtype == SOA:
                    _shift_pointers(body, _shift_pointers(body, rdata, start, cut), start, cut)
        except (IndexError, struct.error):  # parse_response validated it: cannot happen
            raise WireError("response is truncated") from None
    if end < len(data):  # RRs after the OPT moved back by its length
        offsets = _shared(tuple(o if o < start else o - cut for o in info.ttl_offsets))
    else:
        offsets = _shared(tuple(info.ttl_offsets))
    return bytes(body), offsets, ttls


def _shift_pointers(buf: bytearray, pos: int, start: int, cut: int) -> int:
    """Move pointers of the physical name at pos that point past the removed [start, start+cut)."""
    while True:
        n = buf[pos]
        if n == 0:
            return pos + 1
        if n < 64:
            pos += n + 1
            continue
        target = ((n & 0x3F) << 8) | buf[pos + 1]
        if target >= start:
            if target < start + cut:
                raise WireError("compression pointer into the OPT RR")
            target -= cut
            buf[pos], buf[pos + 1] = 0xC0 | (target >> 8), target & 0xFF
        return pos + 2


def render_reply(
    body: bytes,
    ttl_offsets: tuple[int, ...],
    ttls: tuple[int, ...],
    elapsed: int,
    query: Query,
    *,
    opt: bytes = b"",
    clear_ad: bool = False,
) -> bytes:
    """A stored body made into the reply to ``query``; truncated() if over query.udp_size.

    The caller guarantees the body answers query.key (so the names have the same length).
    RD and CD are copied from the query, RA is set, AA is cleared.
    """
    out = bytearray(body)
    # AA cleared: mifdns is not the authority, whatever the upstream was (as Unbound, dnsmasq)
    flags = ((out[2] << 8) | out[3]) & ~(RD | CD | AA) | (query.flags & (RD | CD)) | RA
    if clear_ad:
        flags &= ~AD
    _pack_into_hh(out, 0, query.id, flags)
    qname = query.qname
    out[12 : 12 + len(qname)] = qname
    for off, ttl in zip(ttl_offsets, ttls):
        ttl -= elapsed
        _pack_into_i(out, off, ttl if ttl > 0 else 0)  # noqa: FURB136 (hot path)
    if opt:
        _pack_into_h(out, 10, ((out[10] << 8) | out[11]) + 1)
        out += opt
    if len(out) > query.udp_size:
        return truncated(out, 16 + len(qname), opt)
    return bytes(out)


def truncated(reply: bytes | bytearray, question_end: int, opt: bytes = b"") -> bytes:
    """Header and question of ``reply`` with TC=1, then ``opt``; no records."""
    out = bytearray(reply[:question_end])
    out[2] |= TC >> 8
    out[4:12] = struct.pack("!4H", 1 if question_end > 12 else 0, 0, 0, 1 if opt else 0)
    out += opt
    return bytes(out)


def _set_ext_rcode(opt: bytes, rcode: int) -> bytes:
    if rcode > 15 and len(opt) >= 11:  # the OPT's TTL starts at 5; its first octet: ext rcode
        return opt[:5] + bytes((rcode >> 4 & 0xFF,)) + opt[6:]
    return opt


def error_reply(
    data: bytes, rcode: int, *, opt: bytes = b"", query: Query | None = None
) -> bytes | None:
    """An error reply to ``data`` echoing ID, opcode, RD, CD and (when parseable) the question.

    ``rcode`` is the full rcode (0..4095). When it is above 15 its upper 8 bits are written into
    ``opt``'s extended-rcode octet (opt_rr(ext_rcode=...) does the same); without ``opt`` an OPT
    is added. None for data shorter than a header or with QR set: never answer a response.
    """
    if len(data) < 12 or data[2] & 0x80:
        return None
    txid, flags = _unpack_hh(data, 0)
    question = b""
    if query is not None:
        if query.qname:
            question = query.qname + _HH.pack(query.qtype, query.qclass)
    elif data[4] or data[5]:
        try:
            question = data[12 : _plain_question(data)]
        except (WireError, IndexError):
            pass
    if rcode > 15 and not opt:
        opt = opt_rr(1232)
    opt = _set_ext_rcode(opt, rcode)
    flags = QR | (flags & _ECHO) | RA | (rcode & 0xF)
    return _pack_header(txid, flags, 1 if question else 0, 0, 0, 1 if opt else 0) + question + opt


def local_reply(
    query: Query,
    rcode: int,
    answers: Sequence[tuple[int, int, bytes]] = (),
    *,
    authority_soa: tuple[bytes, int, bytes] | None = None,
    opt: bytes = b"",
    aa: bool = True,
) -> bytes:
    """A reply built here: answers are (rtype, ttl, rdata) owned by the question name;
    authority_soa is (zone wire name, ttl, soa rdata) for negative answers."""
    flags = QR | (query.flags & _ECHO) | RA | (AA if aa else 0) | (rcode & 0xF)
    opt = _set_ext_rcode(opt, rcode)
    qname = query.qname
    counts = (1 if qname else 0, len(answers), 1 if authority_soa else 0, 1 if opt else 0)
    parts = [_pack_header(query.id, flags, *counts)]
    if qname:
        parts.append(qname + _HH.pack(query.qtype, query.qclass))
    for rtype, ttl, rdata in answers:
        parts.append(b"\xc0\x0c" + _RR.pack(rtype, query.qclass, ttl, len(rdata)) + rdata)
    if authority_soa is not None:
        zone, ttl, rdata = authority_soa
        parts.append(_owner(qname, zone) + _RR.pack(SOA, query.qclass, ttl, len(rdata)) + rdata)
    parts.append(opt)
    out = b"".join(parts)
    if len(out) > query.udp_size:
        return truncated(out, 16 + len(qname) if qname else 12, opt)
    return out


def _owner(qname: bytes, zone: bytes) -> bytes:
    """``zone`` as a pointer into the question when it is a suffix of it, else as is."""
    off = len(qname) - len(zone)
    if len(zone) > 2 and off >= 0 and names_equal(qname[off:], zone):
        pos = 0
        while pos < off:
            pos += qname[pos] + 1
        if pos == off:
            return bytes((0xC0 | (12 + off) >> 8, (12 + off) & 0xFF))
    return zone


def patch_id(data: bytes, new_id: int) -> bytes:
    """``data`` with its ID replaced."""
    if len(data) < 12:
        raise WireError("message shorter than a DNS header")
    return new_id.to_bytes(2, "big") + data[2:]
