"""What the wire fuzzers check, shared by the hypothesis properties (tests/unit/test_wire_fuzz.py)
and the atheris harness (tests/fuzz/fuzz_wire.py): a seed corpus and the reply patcher's oracle.

Imports nothing but mifdns.core.wire, mifdns.core.render and dnspython, so atheris can
instrument those two first.
"""

from __future__ import annotations

import struct

import dns.edns
import dns.exception
import dns.message
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rrset

from mifdns.core import render, wire
from mifdns.core.wire import WireError

# the RFC 1035 types with a (compressible) name as rdata that dnspython reads as opaque octets
# (MD, MF, MB, MG, MR): when make_cacheable() moves a pointer in one, dnspython sees other octets
OPAQUE_TO_DNSPYTHON = {
    t
    for t in wire._NAME_AT
    if dns.rdata.get_rdata_class(dns.rdataclass.IN, t) is dns.rdata.GenericRdata
}


def corpus() -> list[bytes]:
    """Valid queries and responses, with EDNS or not, compressed; an OPT in mid-section."""
    out = []
    for kw in (
        {"use_edns": False},
        {"use_edns": 0, "want_dnssec": True},
        {"use_edns": 0, "options": [dns.edns.GenericOption(dns.edns.OptionType.COOKIE, b"c" * 8)]},
    ):
        q = dns.message.make_query("www.Example.com.", "A", **kw)
        out.append(q.to_wire())
        r = dns.message.make_response(q)
        r.answer.append(dns.rrset.from_text("www.Example.com.", 300, "IN", "CNAME", "a.ex.net."))
        r.answer.append(dns.rrset.from_text("a.ex.net.", 60, "IN", "A", "192.0.2.1", "192.0.2.2"))
        r.authority.append(dns.rrset.from_text("ex.net.", 600, "IN", "NS", "ns.ex.net."))
        r.additional.append(dns.rrset.from_text("ns.ex.net.", 600, "IN", "AAAA", "2001:db8::1"))
        out.append(r.to_wire())
        n = dns.message.make_response(q)
        n.set_rcode(dns.rcode.NXDOMAIN)
        n.authority.append(
            dns.rrset.from_text(
                "example.com.", 900, "IN", "SOA", "ns.example.com. h.example.com. 1 2 3 4 300"
            )
        )
        n.additional.append(dns.rrset.from_text("mx.example.com.", 5, "IN", "MX", "10 ns.ex.net."))
        out.append(n.to_wire())
    # an OPT in the middle of the additional section, followed by a pointer past it
    qd = wire.text_to_qname("www.example.com.") + b"\x00\x01\x00\x01"
    opt = b"\x00\x00\x29\x04\xd0\x00\x00\x80\x00\x00\x00"
    after = 12 + len(qd) + len(opt)
    out.append(
        struct.pack("!6H", 9, 0x8180, 1, 0, 0, 3)
        + qd
        + opt
        + b"\x03ns2\xc0\x10\x00\x01\x00\x01\x00\x00\x02\x58\x00\x04\x05\x06\x07\x08"
        + struct.pack("!HHHIH", 0xC000 | after, 28, 1, 500, 16)
        + b"\x20\x01" * 8
        + b"\x04mail\xc0\x10\x00\x05\x00\x01\x00\x00\x00\x10\x00\x02"
        + struct.pack("!H", 0xC000 | after)
    )
    return out


def parse_each(data: bytes) -> None:
    """The three parsers on ``data``: WireError is the only way out."""
    for parse in (wire.parse_query, wire.parse_response, wire.parse_header):
        try:
            parse(data)
        except WireError:
            pass


def parse_all(data: bytes) -> None:
    """Every entry point that reads client or upstream bytes: WireError is the only way out."""
    parse_each(data)
    try:
        info = wire.parse_response(data)
    except WireError:
        pass
    else:
        wire.ede_of(data, info)  # an upstream's Extended DNS Error: never raises
    opt = render.opt_rr(1232) if wire.had_opt(data) else b""  # never raises (FORMERR's OPT)
    for rcode in (wire.FORMERR, wire.BADVERS):
        out = render.error_reply(data, rcode, opt=opt)
        if out is not None:
            wire.parse_response(out)


def query_for(qname: bytes, flips: int) -> wire.Query:
    """A client's query for ``qname`` in another letter case (bits of ``flips``)."""
    swapped = bytes(
        c ^ 0x20 if (flips >> (i % 30)) & 1 and 0x41 <= (c | 0x20) - 0x20 <= 0x5A else c
        for i, c in enumerate(qname)
    )
    q = wire.parse_query(render.build_query(flips & 0xFFFF, swapped, 1))
    q.udp_size = (1232, 512, 65535, 1232)[(flips >> 16) & 3]
    return q


def _rdata_names(rtype: int, rdata: int) -> list[int]:
    at = wire._NAME_AT.get(rtype)
    if at is not None:
        return [rdata + at]
    return [rdata] if rtype == wire.SOA else []


def _name_reads(data: bytes, pos: int) -> tuple[set[int], int]:
    """(offsets the name at pos reads, compression included; offset just past it physically)."""
    seen: set[int] = set()
    end = 0
    for _ in range(300):
        n = data[pos]
        seen.add(pos)
        if n == 0:
            return seen, end or pos + 1
        if n >= 192:
            seen.add(pos + 1)
            end = end or pos + 2
            pos = ((n & 0x3F) << 8) | data[pos + 1]
        else:
            seen.update(range(pos + 1, pos + 1 + n))
            pos += n + 1
    raise AssertionError("parse_response accepted a name that does not end")


def reads_patched_bytes(data: bytes, info: wire.ResponseInfo) -> bool:
    """True if a name of an accepted response reads bytes that make_cacheable() or
    render_reply() change: a TTL, or an OPT RR that is cut out. parse_response() must refuse
    such a response (a name that, after a jump, ran on into a TTL used to be accepted, and
    aging the TTL rewrote the name: tests/unit/test_wire_fuzz.py::test_name_running_into_*).
    """
    patched = {o + i for o in info.ttl_offsets for i in range(4)}
    if info.opt_start is not None and info.opt_end is not None:
        patched.update(range(info.opt_start, info.opt_end))
    pos = info.question_end
    for _ in range(info.ancount + info.nscount + info.arcount):
        owner, pos = _name_reads(data, pos)
        rtype, _, _, rdlen = struct.unpack_from("!HHIH", data, pos)
        rdata = pos + 10
        pos = rdata + rdlen
        names = [owner]
        for at in _rdata_names(rtype, rdata):
            got, after = _name_reads(data, at)
            names.append(got)
            if rtype == wire.SOA:
                names.append(_name_reads(data, after)[0])
        if rtype == wire.OPT:
            names = []
        if any(n & patched for n in names):
            return True
    return False


def check_patch_path(data: bytes, flips: int, elapsed: int, opt: bool) -> str:
    """Cache ``data`` (as an upstream response) and render it for a client's query of the same
    name; assert the reply is well formed and says what the response said. Returns what
    happened (for hypothesis.event and the harness's statistics).
    """
    try:
        info = wire.parse_response(data)
    except WireError:
        return "refused"
    if info.tc or info.qtype == 0:
        return "not cacheable (TC or no question)"
    try:
        body, offsets, ttls = render.make_cacheable(data, info)
    except WireError:  # legal only for a pointer into an OPT RR that is not the last RR
        assert info.opt_end is not None and info.opt_end < len(data), data.hex()
        return "pointer into the OPT"
    query = query_for(info.qname, flips)
    out = render.render_reply(
        body,
        offsets,
        ttls,
        elapsed,
        query,
        opt=render.opt_rr(1232) if opt else b"",
        clear_ad=bool(flips & 1),
    )
    assert not reads_patched_bytes(data, info), f"a name reads a patched byte: {data.hex()}"
    try:
        again = wire.parse_response(out)
    except WireError as exc:
        raise AssertionError(f"rendered reply does not parse ({exc}): {data.hex()}") from None
    assert again.id == query.id and again.qname == query.qname, data.hex()
    if again.tc:
        assert len(out) <= max(query.udp_size, 16 + len(query.qname) + 11), data.hex()
        return "rendered, truncated"
    assert len(out) <= query.udp_size, data.hex()
    assert (again.ancount, again.nscount) == (info.ancount, info.nscount), data.hex()
    assert len(again.ttl_offsets) == len(offsets), data.hex()
    aged = [max(0, old - elapsed) for old in ttls[: len(again.answers)]]
    assert [ttl for (_, ttl, _, _) in again.answers] == aged, data.hex()
    try:
        ref = dns.message.from_wire(data)
    except dns.exception.DNSException:
        return "rendered (dnspython refuses the input)"
    got = dns.message.from_wire(out)  # what dnspython reads in, it reads out
    for ours, theirs in (
        (got.answer, ref.answer),
        (got.authority, ref.authority),
        (got.additional, ref.additional),
    ):
        assert [_comparable(rs) for rs in ours] == [_comparable(rs) for rs in theirs], data.hex()
    return "rendered, dnspython agrees"


def _comparable(rs: dns.rrset.RRset) -> tuple[object, ...]:
    if rs.rdtype in OPAQUE_TO_DNSPYTHON:  # our own parse of the reply checked these names
        return (rs.name, rs.rdtype)
    return (rs.name, rs.rdtype, set(rs))
