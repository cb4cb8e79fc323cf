"""Hand-written DNS wire reader for the hot path: bytes in, parsed views out, no sockets.

Theory of operation
-------------------
A cache hit never parses a whole message. parse_query() reads the header and the one question
with struct.unpack_from and a label walk (compression is not legal in a query's question), keeps
the name as sent (``qname``) and lower-cased (``key``, the cache key), and walks further RRs only
to find the OPT record. An upstream reply goes once through parse_response(), which validates
every owner name and the names inside the rdata of the RFC 1035 types, and records where each
TTL sits. What is done with those offsets (storing, patching, rendering) is mifdns.core.render.

Compression pointers
--------------------
Pointers follow dnspython's rules: each must point strictly before the previous target (the
first: before the name's start), so a walk always ends, and a name may take at most 16 of them.
A per-message memo of the names already checked (offset -> expanded length and hops) lets the
usual owner name, a pointer to the question, cost one dict lookup. Because stored bytes get
patched (render.render_reply), a response is also refused if a pointer lands in the header or in
an RR's fixed fields (its TTL would change the name); render.make_cacheable() relies on these
rules when it moves the pointers that point past an OPT RR it cuts out of the middle of the
additional section.

Every public function that reads wire data raises only WireError on bad input: reads past the
end (IndexError, struct.error) are turned into WireError at the entry points.
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
    "names_equal",
    "parse_header",
    "parse_query",
    "parse_response",
    "qname_labels",
    "qname_suffixes",
    "qname_to_text",
    "text_to_qname",
]

QR, AA, TC, RD, RA, AD, CD = 0x8000, 0x0400, 0x0200, 0x0100, 0x0080, 0x0020, 0x0010
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED, BADVERS = 0, 1, 2, 3, 4, 5, 16
A, NS, CNAME, SOA, PTR, MX, AAAA, DNAME, OPT = 1, 2, 5, 6, 12, 15, 28, 39, 41
IXFR, AXFR, ANY = 251, 252, 255
EDE_OPTION = 15  # RFC 8914 Extended DNS Error

_unpack_header = struct.Struct("!6H").unpack_from
_unpack_hh = struct.Struct("!HH").unpack_from
_unpack_rr = struct.Struct("!HHIH").unpack_from  # type, class, ttl, rdlength
_unpack_i = struct.Struct("!I").unpack_from
_new = object.__new__

_MAX_HOPS = 16  # compression pointers per name, as dnspython (2.8+)
# rdata holding one (possibly compressed) name at this offset: the RFC 1035 types, plus DNAME.
# render.make_cacheable() moves pointers in exactly the names checked here, so it shares this.
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

    ``udp_size`` is the largest reply render.render_reply() may send: 512 without EDNS, else
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


def ede_of(data: bytes, info: ResponseInfo) -> tuple[int, str] | None:
    """The first Extended DNS Error (RFC 8914) in a parsed response's OPT: (info-code, text)."""
    if info.opt_start is None or info.opt_end is None:
        return None
    pos = info.opt_start + 11  # root name, type, class, TTL, rdlength
    end = info.opt_end
    while pos + 4 <= end:
        code, length = _unpack_hh(data, pos)
        if code == EDE_OPTION and length >= 2 and pos + 4 + length <= end:
            text = data[pos + 6 : pos + 4 + length].decode("utf-8", "replace")
            return (data[pos + 4] << 8) | data[pos + 5], text
        pos += 4 + length
    return None


def had_opt(data: bytes) -> bool:
    """Whether a query that ``parse_query`` rejected still carried one well-formed OPT RR, so
    that its FORMERR carries an OPT too (RFC 6891 section 7). False on anything unreadable."""
    try:
        _, _, qd, an, ns, ar = _unpack_header(data, 0)
        if not ar:
            return False
        pos = 12
        known: dict[int, int] = {}
        for _ in range(qd):
            pos = _skip_name(data, pos, known) + 4
        if pos > len(data):
            return False
        return _query_opt(data, pos, an, ns, ar) is not None
    except (WireError, IndexError, struct.error):
        return False


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
    in there, or into the header, would change meaning when render.render_reply() patches the
    bytes.
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

    The question name must be uncompressed (render.render_reply() patches it in place). A
    response with TC=1 whose records are cut short is not an error: the info says tc and holds
    what could be read (retry over TCP; never cache or render it).
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
            elif (
                c >= 192
                and (k := known.get((c & 0x3F) << 8 | data[pos + 1])) is not None
                and k >> 16 < _MAX_HOPS
            ):
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
                        "bad OPT RR: outside the additional section, twice, or not at the root"
                    )
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
