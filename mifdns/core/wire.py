"""Hand-written DNS wire codec for the hot path: bytes in, bytes out, no sockets, no clock.

Theory of operation
-------------------
A cache hit never parses a whole message. parse_query() reads the header and the one question
with struct.unpack_from and a label walk (compression is not legal in a query's question), keeps
the name as sent (``qname``) and lower-cased (``key``, the cache key), and walks further RRs only
to find the OPT record. An upstream reply goes once through parse_response(), which validates
every owner name and the names inside the rdata of the RFC 1035 types, and records where each
TTL sits. make_cacheable() strips the OPT RR and zeroes the ID; what is stored is those bytes,
the TTL offsets and the TTLs. render_reply() copies the stored bytes into one bytearray and
patches the ID, flags, the client's spelling of the question name and the aged TTLs in place,
then appends the reply's own OPT.

Compression pointers follow dnspython's rules: each must point strictly before the previous
target (the first: before the name's start), so a walk always ends, and a name may take at most
16 of them. A per-message memo of the names already checked (offset -> expanded length and hops)
lets the usual owner name, a pointer to the question, cost one dict lookup. Because stored bytes
get patched, a response is also refused if a pointer lands in the header or in an RR's fixed
fields (its TTL would change the name), and make_cacheable() moves the pointers that point past
an OPT RR it cuts out of the middle of the additional section.

Every public function that reads wire data raises only WireError on bad input: reads past the
end (IndexError, struct.error) are turned into WireError at the entry points. Builders trust
their arguments (a bad argument is a programming error, not hostile input).
"""

from __future__ import annotations

import struct
from bisect import bisect_right
from collections.abc import Sequence

from mifdns.errors import MifdnsError

__all__ = [
    "Query",
    "ResponseInfo",
    "WireError",
    "build_query",
    "error_reply",
    "local_reply",
    "make_cacheable",
    "names_equal",
    "opt_rr",
    "parse_header",
    "parse_query",
    "parse_response",
    "patch_id",
    "qname_labels",
    "qname_suffixes",
    "qname_to_text",
    "render_reply",
    "soa_rdata",
    "text_to_qname",
    "truncated",
]

QR, AA, TC, RD, RA, AD, CD = 0x8000, 0x0400, 0x0200, 0x0100, 0x0080, 0x0020, 0x0010
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED, BADVERS = 0, 1, 2, 3, 4, 5, 16
A, NS, CNAME, SOA, PTR, MX, AAAA, DNAME, OPT = 1, 2, 5, 6, 12, 15, 28, 39, 41
IXFR, AXFR, ANY = 251, 252, 255
EDE_OPTION = 15  # RFC 8914 Extended DNS Error

_HEADER = struct.Struct("!6H")
_unpack_header = _HEADER.unpack_from
_pack_header = _HEADER.pack
_HH = struct.Struct("!HH")
_unpack_hh = _HH.unpack_from
_RR = struct.Struct("!HHIH")  # type, class, ttl, rdlength
_unpack_rr = _RR.unpack_from
_unpack_i = struct.Struct("!I").unpack_from
_pack_into_i = struct.Struct("!I").pack_into
_pack_into_h = struct.Struct("!H").pack_into
_pack_into_hh = _HH.pack_into
_new = object.__new__

_MAX_HOPS = 16  # compression pointers per name, as dnspython (2.8+)
_OPCODE_MASK = 0x7800
_ECHO = _OPCODE_MASK | RD | CD  # header bits an answer copies from the question
# rdata holding one (possibly compressed) name at this offset: the RFC 1035 types, plus DNAME
_NAME_AT = {NS: 0, 3: 0, 4: 0, CNAME: 0, 7: 0, 8: 0, 9: 0, PTR: 0, MX: 2, DNAME: 0}
_TEXT_SAFE = bytes(range(0x21, 0x7F)).translate(None, b'"().;\\@$')


class WireError(MifdnsError, ValueError):
    """A malformed message. ``rcode`` is what to answer the sender (FORMERR unless said)."""

    def __init__(self, msg: str, rcode: int = FORMERR) -> None:
        super().__init__(msg)
        self.rcode = rcode


class _Short(WireError):
    """Data ends before the counts say it should (tolerated in a TC=1 response)."""


class Query:
    """A client's query, as parse_query() found it.

    ``udp_size`` is the largest reply render_reply() may send: 512 without EDNS, else
    max(512, advertised). A TCP listener sets it to 65535 before rendering.
    """

    id: int
    flags: int
    opcode: int
    qname: bytes
    key: bytes
    qtype: int
    qclass: int
    question_end: int
    edns: bool
    udp_size: int
    edns_version: int
    do: bool
    rd: bool
    cd: bool
    ad: bool
    __slots__ = tuple(__annotations__)  # the annotations are the field list

    def __repr__(self) -> str:
        return (
            f"Query(id={self.id}, {qname_to_text(self.qname)!r}, qtype={self.qtype}, "
            f"flags={self.flags:#06x}, edns={self.edns}, udp_size={self.udp_size})"
        )


class ResponseInfo:
    """Where things are in an upstream response, as parse_response() found them.

    TTLs with the top bit set read as 0 (RFC 2181 section 8). ``rcode`` is the header rcode
    combined with the OPT's extended rcode.
    """

    id: int
    flags: int
    rcode: int
    tc: bool
    aa: bool
    qname: bytes
    qtype: int
    qclass: int
    question_end: int
    ancount: int
    nscount: int
    arcount: int
    ttl_offsets: list[int]
    ttls: list[int]  # the TTL at each of ttl_offsets (top bit set: 0)
    answers: list[tuple[int, int, int, int]]  # (rtype, ttl, rdata_offset, rdlength)
    min_answer_ttl: int | None
    soa_ttl: int | None
    opt_start: int | None
    opt_end: int | None
    __slots__ = tuple(__annotations__)  # the annotations are the field list


def parse_header(data: bytes) -> tuple[int, int]:
    """(id, flags) of any message; WireError if it is shorter than a header."""
    if len(data) < 12:
        raise WireError("message shorter than a DNS header")
    return _unpack_hh(data, 0)


def parse_query(data: bytes) -> Query:
    """Parse a client's query; WireError (FORMERR) if it is malformed.

    Opcode 0 needs exactly one question. Another opcode may have none (qname b"", qtype and
    qclass 0) so the caller can answer NOTIMP. EDNS versions other than 0 are the caller's
    business (BADVERS). Bytes after the last RR are ignored.
    """
    try:
        txid, flags, qd, an, ns, ar = _unpack_header(data, 0)
        if flags & QR:
            raise WireError("QR bit set in a query")
        opcode = (flags >> 11) & 0xF
        if qd == 1 or (qd and opcode):
            pos = 12
            n = data[12]
            while n:
                if n > 63:
                    raise WireError("compression pointer or bad label in the question")
                pos += n + 1
                if pos > 266:
                    raise WireError("question name longer than 255 octets")
                n = data[pos]
            pos += 1
            qname = data[12:pos]
            qtype, qclass = _unpack_hh(data, pos)
            pos += 4
            qend = pos
            if qd > 1:  # only for opcode != 0: skip the rest, the caller answers NOTIMP
                known: dict[int, int] = {}
                for _ in range(qd - 1):
                    pos = _skip_name(data, pos, known) + 4
                if pos > len(data):
                    raise WireError("question section is truncated")
        elif qd == 0 and opcode:
            qname, qtype, qclass, pos = b"", 0, 0, 12
            qend = pos
        else:
            raise WireError(f"QDCOUNT is {qd}, not 1")
        q = _new(Query)
        if an or ns or ar:
            if ar == 1 and not (an or ns) and data[pos] == 0:  # the usual lone OPT: fast path
                rtype, rclass, ttl, rdlen = _unpack_rr(data, pos + 1)
                if pos + 11 + rdlen > len(data):
                    raise WireError("RR data runs past the end of the query")
                if rtype == OPT and rdlen:
                    _check_options(data, pos + 11, pos + 11 + rdlen)
                opt = (rclass, ttl) if rtype == OPT else None
            else:
                opt = _query_opt(data, pos, an, ns, ar)
            if opt is None:
                q.edns, q.udp_size, q.edns_version, q.do = False, 512, 0, False
            else:
                q.edns, q.udp_size = True, opt[0] if opt[0] > 512 else 512  # noqa: FURB136 (hot)
                q.edns_version, q.do = (opt[1] >> 16) & 0xFF, (opt[1] & 0x8000) != 0
        else:
            q.edns, q.udp_size, q.edns_version, q.do = False, 512, 0, False
    except (IndexError, struct.error):
        raise WireError("query is truncated") from None
    q.id, q.flags, q.opcode, q.qname, q.key = txid, flags, opcode, qname, qname.lower()
    q.qtype, q.qclass, q.question_end = qtype, qclass, qend
    q.rd, q.cd, q.ad = (flags & RD) != 0, (flags & CD) != 0, (flags & AD) != 0
    return q


def _query_opt(data: bytes, pos: int, an: int, ns: int, ar: int) -> tuple[int, int] | None:
    """Walk a query's RRs; return the OPT's (class = payload size, ttl) if there is one."""
    known: dict[int, int] = {}
    opt = None
    size = len(data)
    for i in range(an + ns + ar):
        owner = pos
        pos = _skip_name(data, pos, known)
        rtype, rclass, ttl, rdlen = _unpack_rr(data, pos)
        pos += 10 + rdlen
        if pos > size:
            raise WireError("RR data runs past the end of the query")
        if rtype == OPT:
            _check_opt(data, owner, pos - rdlen, pos, i >= an + ns, opt is not None)
            opt = (rclass, ttl)
    return opt


def _check_opt(
    data: bytes, owner: int, start: int, end: int, in_additional: bool, seen: bool
) -> None:
    if not in_additional or seen or data[owner]:
        raise WireError("bad OPT RR: outside the additional section, twice, or not at the root")
    _check_options(data, start, end)


def _check_options(data: bytes, start: int, end: int) -> None:
    while start + 4 <= end:  # each option: code, length, value
        start += 4 + ((data[start + 2] << 8) | data[start + 3])
    if start != end:
        raise WireError("bad OPT RR: options overrun its rdata")


def _skip_name(data: bytes, pos: int, known: dict[int, int], fixed: Sequence[int] = ()) -> int:
    """Validate the possibly compressed name at pos; return the offset just past it.

    ``known`` maps the offset of a name already checked to its expanded size | hops << 16.
    ``fixed`` lists where the fixed part (type .. rdlength) of each RR so far starts: a pointer
    in there, or into the header, would change meaning when render_reply() patches the bytes.
    """
    start = limit = pos
    size = 1  # expanded length, counting the root octet
    hops = end = 0
    bound = 0  # after a jump: the pointer's offset; what the name reads must lie before it
    trail: list[tuple[int, int, int]] | None = None  # (target, size, hops) at each jump
    while True:
        n = data[pos]
        if bound:
            # a name reached through a pointer is an earlier name: it must end before the
            # pointer and must not read an RR's type, class, TTL or length, which the reply
            # patcher rewrites (TTL aging would change the name, length octets included)
            last = pos + (n if n < 64 else 1 if n >= 192 else 0)
            if last >= bound:
                raise WireError("compressed name runs past the pointer that leads to it")
            if fixed and pos < fixed[-1] + 10:
                i = bisect_right(fixed, last)
                if i and pos < fixed[i - 1] + 10:
                    raise WireError("compressed name runs into an RR's type, class, TTL, length")
        if n == 0:
            break
        if n < 64:
            pos += n + 1
            size += n + 1
            if size > 255:
                raise WireError("name longer than 255 octets")
        elif n >= 192:
            target = ((n & 0x3F) << 8) | data[pos + 1]
            if not end:
                end = pos + 2
            if target >= limit:
                raise WireError("compression pointer does not point backwards")
            hops += 1
            k = known.get(target)
            if k is not None:
                size += (k & 0xFFFF) - 1
                hops += k >> 16
                if size > 255:
                    raise WireError("name longer than 255 octets")
                if hops > _MAX_HOPS:
                    raise WireError("compression pointer chain too long")
                break
            if hops > _MAX_HOPS:
                raise WireError("compression pointer chain too long")
            if target < 12:
                raise WireError("compression pointer into the header")
            if fixed and target < fixed[-1] + 10:
                i = bisect_right(fixed, target)
                if i and target < fixed[i - 1] + 10:
                    raise WireError("compression pointer into an RR's type, class, TTL, length")
            if trail is None:
                trail = []
            trail.append((target, size, hops))
            bound = pos
            limit = pos = target
        else:
            raise WireError(f"unsupported label type {n:#x}")
    known[start] = size | hops << 16
    if trail:
        for target, before, at in trail:
            known[target] = (size - before + 1) | (hops - at) << 16
    return end or pos + 1


def _plain_question(data: bytes) -> int:
    """Offset just past QCLASS of an uncompressed question at 12."""
    pos = 12
    n = data[12]
    while n:
        if n > 63:
            raise WireError("compression pointer or bad label in the question")
        pos += n + 1
        if pos > 266:
            raise WireError("question name longer than 255 octets")
        n = data[pos]
    if pos + 5 > len(data):
        raise _Short("question is truncated")
    return pos + 5


def parse_response(data: bytes) -> ResponseInfo:
    """Parse an upstream response; WireError if anything in it is malformed.

    The question name must be uncompressed (render_reply() patches it in place). A response with
    TC=1 whose records are cut short is not an error: the info says tc and holds what could be
    read (retry over TCP; never cache or render it).
    """
    if len(data) < 12:
        raise WireError("message shorter than a DNS header")
    txid, flags, qd, an, ns, ar = _unpack_header(data, 0)
    if not flags & QR:
        raise WireError("not a response (QR=0)")
    info = _new(ResponseInfo)
    info.id, info.flags, info.rcode = txid, flags, flags & 0xF
    info.tc, info.aa = bool(flags & TC), bool(flags & AA)
    info.ancount, info.nscount, info.arcount = an, ns, ar
    info.ttl_offsets = offsets = []
    info.ttls = ttls = []
    info.answers = answers = []
    info.min_answer_ttl = info.soa_ttl = info.opt_start = info.opt_end = None
    try:
        if qd == 1:
            pos = _plain_question(data)
            info.qname = data[12 : pos - 4]
            info.qtype, info.qclass = _unpack_hh(data, pos - 4)
            known = {12: pos - 16}
        elif qd == 0:
            info.qname, info.qtype, info.qclass, pos, known = b"", 0, 0, 12, {}
        else:
            raise WireError(f"QDCOUNT is {qd} in a response")
    except (IndexError, struct.error):
        raise WireError("response question is truncated") from None
    info.question_end = pos
    size = len(data)
    fixed: list[int] = []
    try:
        for i in range(an + ns + ar):
            owner = pos
            # the usual owners inline: the root (OPT), or one pointer to a name already checked
            # (the question's, mostly); the same checks and bookkeeping as _skip_name
            c = data[pos]
            if c == 0:
                known[pos] = 1
                pos += 1
            elif c >= 192 and (k := known.get((c & 0x3F) << 8 | data[pos + 1])) is not None \
                    and k >> 16 < _MAX_HOPS:
                known[pos] = k + 0x10000  # one more hop, the same expanded size
                pos += 2
            else:
                pos = _skip_name(data, pos, known, fixed)
            fixed.append(pos)
            rtype, rclass, ttl, rdlen = _unpack_rr(data, pos)
            rdata = pos + 10
            end = rdata + rdlen
            if end > size:
                raise _Short("RR data runs past the end of the response")
            if rtype == OPT:
                if i < an + ns or info.opt_start is not None or c:
                    raise WireError(
                        "bad OPT RR: outside the additional section, twice, or not at the root")
                if rdlen:
                    _check_options(data, rdata, end)
                info.rcode |= (ttl >> 24) << 4
                info.opt_start, info.opt_end = owner, end
                pos = end
                continue
            if ttl > 0x7FFFFFFF:
                ttl = 0
            offsets.append(pos + 4)
            ttls.append(ttl)
            at = _NAME_AT.get(rtype)
            if at is not None:
                if _skip_name(data, rdata + at, known, fixed) != end:
                    raise WireError(f"bad rdata for type {rtype}")
            elif rtype == SOA:
                rname = _skip_name(data, rdata, known, fixed)
                if _skip_name(data, rname, known, fixed) + 20 != end:
                    raise WireError("bad SOA rdata")
                if info.soa_ttl is None and an <= i < an + ns:
                    minimum = _unpack_i(data, end - 4)[0]
                    if minimum > 0x7FFFFFFF:
                        minimum = 0
                    info.soa_ttl = min(ttl, minimum)
            elif rclass == 1 and ((rtype == A and rdlen != 4) or (rtype == AAAA and rdlen != 16)):
                raise WireError(f"bad rdata length {rdlen} for type {rtype}")
            if i < an:
                answers.append((rtype, ttl, rdata, rdlen))
                if info.min_answer_ttl is None or ttl < info.min_answer_ttl:
                    info.min_answer_ttl = ttl
            pos = end
    except (IndexError, struct.error, _Short):
        if flags & TC:
            return info
        raise WireError("response is truncated") from None
    if pos != size:
        raise WireError(f"{size - pos} bytes after the last RR")
    return info


def names_equal(a: bytes, b: bytes) -> bool:
    """Case-insensitive equality of uncompressed wire names (bytes.lower() is ASCII-only)."""
    return len(a) == len(b) and a.lower() == b.lower()


def qname_labels(key: bytes) -> list[bytes]:
    """The labels of an uncompressed wire name, left to right, without the root."""
    labels = []
    pos = 0
    try:
        n = key[0]
        while n:
            labels.append(key[pos + 1 : pos + 1 + n])
            pos += n + 1
            n = key[pos]
    except IndexError:
        raise WireError("name is truncated") from None
    return labels


def qname_suffixes(key: bytes) -> list[bytes]:
    """Every suffix of an uncompressed wire name, longest first, the root (b"\\0") last.

    Handy for a suffix map keyed by wire names: no label joining on the routing path.
    """
    out = []
    pos = 0
    try:
        while key[pos]:
            out.append(key[pos:])
            pos += key[pos] + 1
        out.append(key[pos:])
    except IndexError:
        raise WireError("name is truncated") from None
    return out


def qname_to_text(qname: bytes) -> str:
    """Presentation form ("www.Example.com.") with dnspython's escapes; b"" gives ""."""
    if not qname:
        return ""
    parts = []
    pos = 0
    try:
        n = qname[0]
        while n:
            label = qname[pos + 1 : pos + 1 + n]
            if n > 63 or len(label) != n:
                raise WireError("not an uncompressed wire name")
            if label.translate(None, _TEXT_SAFE):
                parts.append("".join(map(_escape, label)))
            else:
                parts.append(label.decode("ascii"))
            pos += n + 1
            n = qname[pos]
    except IndexError:
        raise WireError("name is truncated") from None
    return ".".join(parts) + "."


def _escape(c: int) -> str:
    if c in _TEXT_SAFE:
        return chr(c)
    return "\\" + chr(c) if 0x20 < c < 0x7F else f"\\{c:03d}"


def text_to_qname(name: str) -> bytes:
    """Wire form of a presentation name (always absolute); \\X and \\DDD escapes, IDNA."""
    if name == ".":
        return b"\x00"
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise WireError(f"bad name {name!r}: {exc}") from None
    out = bytearray()
    label = bytearray()
    i, size = 0, len(name)
    while i < size:
        c = name[i]
        if c == "\\":
            digits = name[i + 1 : i + 4]
            if len(digits) == 3 and digits.isdigit() and int(digits) < 256:
                label.append(int(digits))
                i += 4
                continue
            if i + 1 >= size or name[i + 1].isdigit():
                raise WireError(f"bad escape in name {name!r}")
            label += name[i + 1].encode("ascii")
            i += 2
            continue
        i += 1
        if c == ".":
            if not label:
                raise WireError(f"empty label in name {name!r}")
            _add_label(out, label, name)
            label = bytearray()
        else:
            label += c.encode("ascii")
    if label:
        _add_label(out, label, name)
    if not out:
        raise WireError("empty name")
    out.append(0)
    if len(out) > 255:
        raise WireError(f"name {name!r} is longer than 255 octets")
    return bytes(out)


def _add_label(out: bytearray, label: bytearray, name: str) -> None:
    if len(label) > 63:
        raise WireError(f"label longer than 63 octets in {name!r}")
    out.append(len(label))
    out += label


def build_query(
    txid: int,
    qname: bytes,
    qtype: int,
    qclass: int = 1,
    *,
    do: bool = False,
    cd: bool = False,
    udp_size: int = 1232,
) -> bytes:
    """An upstream query: RD=1, one question, an OPT RR (version 0, no options)."""
    header = _pack_header(txid, RD | CD if cd else RD, 1, 0, 0, 1)
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
                at = _NAME_AT.get(rtype)
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
