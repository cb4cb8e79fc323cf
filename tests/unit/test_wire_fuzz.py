"""Property tests of mifdns.core.wire: hostile bytes never raise anything but WireError, and what
the codec builds or patches parses the same with dnspython.

CI runs a few hundred examples per property. A long run (a million each, some hours):

    MIFDNS_FUZZ_EXAMPLES=1000000 python -m pytest tests/unit/test_wire_fuzz.py
"""

from __future__ import annotations

import os
import struct

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mifdns.core import wire
from mifdns.core.wire import WireError

EXAMPLES = int(os.environ.get("MIFDNS_FUZZ_EXAMPLES", "300"))
fuzz = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=EXAMPLES <= 300,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _corpus() -> list[bytes]:
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


CORPUS = _corpus()


@st.composite
def mutated(draw: st.DrawFn, most: int = 6) -> bytes:
    """A valid message with a few hostile edits: flips, pointers, cuts, insertions."""
    data = bytearray(draw(st.sampled_from(CORPUS)))
    for _ in range(draw(st.integers(1, most))):
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        op = draw(st.integers(0, 5))
        if op == 0:
            data[i] = draw(st.integers(0, 255))
        elif op == 1:
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == 2:
            del data[draw(st.integers(i, len(data))) :]
        elif op == 3:
            data[i:i] = draw(st.binary(min_size=1, max_size=4))
        elif op == 4:  # a compression pointer anywhere, to anywhere
            data[i : i + 2] = struct.pack("!H", 0xC000 | draw(st.integers(0, len(data) + 4)))
        elif len(data) >= 12:  # counts that lie
            struct.pack_into("!H", data, 4 + 2 * draw(st.integers(0, 3)), draw(st.integers(0, 6)))
    return bytes(data)


plausible = st.builds(
    lambda h, tail: struct.pack("!6H", *h) + tail,
    st.tuples(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), *[st.integers(0, 3)] * 4),
    st.binary(max_size=300),
)
hostile = st.one_of(st.binary(max_size=600), plausible, mutated())

label = st.one_of(
    st.binary(min_size=1, max_size=63),
    st.text("abcXYZ-_019", min_size=1, max_size=20).map(str.encode),
)
names = (
    st.lists(label, max_size=10)
    .map(lambda labels: b"".join(bytes((len(x),)) + x for x in labels) + b"\x00")
    .filter(lambda n: len(n) <= 255)
)


def _query_for(qname: bytes, flips: int) -> wire.Query:
    swapped = bytes(
        c ^ 0x20 if (flips >> (i % 30)) & 1 and 0x41 <= (c | 0x20) - 0x20 <= 0x5A else c
        for i, c in enumerate(qname)
    )
    return wire.parse_query(wire.build_query(1, swapped, 1))


@fuzz
@given(hostile)
def test_parsers_raise_only_wire_error(data: bytes) -> None:
    for parse in (wire.parse_query, wire.parse_response, wire.parse_header):
        try:
            parse(data)
        except WireError:
            pass


@fuzz
@given(hostile, st.integers(0, 4095))
def test_error_reply_is_none_or_a_valid_reply(data: bytes, rcode: int) -> None:
    out = wire.error_reply(data, rcode, opt=wire.opt_rr(1232) if rcode & 1 else b"")
    if out is None:
        assert len(data) < 12 or data[2] & 0x80
        return
    info = wire.parse_response(out)
    assert info.id == struct.unpack_from("!H", data)[0] and info.rcode == rcode
    if info.flags & 0x7800 != 5 << 11:  # dnspython insists on an UPDATE zone of type SOA
        assert dns.message.from_wire(out).rcode() == rcode


@fuzz
@given(
    st.one_of(mutated(2), hostile), st.integers(0, 1 << 30), st.integers(0, 1 << 31), st.booleans()
)
def test_cache_then_render_never_breaks(data: bytes, flips: int, elapsed: int, opt: bool) -> None:
    try:
        info = wire.parse_response(data)
        if info.tc or info.qtype == 0:
            return
        body, offsets, ttls = wire.make_cacheable(data, info)
    except WireError:
        return
    query = _query_for(info.qname, flips)
    out = wire.render_reply(
        body,
        offsets,
        ttls,
        elapsed,
        query,
        opt=wire.opt_rr(1232) if opt else b"",
        clear_ad=bool(flips & 1),
    )
    again = wire.parse_response(out)
    assert again.id == 1 and again.qname == query.qname
    if again.tc:
        return
    assert again.ancount == info.ancount and again.nscount == info.nscount
    assert len(again.ttl_offsets) == len(offsets)
    assert all(ttl == max(0, old - elapsed) for (_, ttl, _, _), old in zip(again.answers, ttls))
    try:
        ref = dns.message.from_wire(data)
    except dns.exception.DNSException:
        return
    got = dns.message.from_wire(out)  # what dnspython reads in, it reads out
    for ours, theirs in (
        (got.answer, ref.answer),
        (got.authority, ref.authority),
        (got.additional, ref.additional),
    ):
        assert [(rs.name, rs.rdtype, set(rs)) for rs in ours] == [
            (rs.name, rs.rdtype, set(rs)) for rs in theirs
        ]


@fuzz
@given(
    st.integers(0, 0xFFFF),
    names,
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFF),
    st.booleans(),
    st.booleans(),
    st.integers(512, 0xFFFF),
)
def test_build_query_round_trips(
    txid: int, qname: bytes, qtype: int, qclass: int, do: bool, cd: bool, size: int
) -> None:
    data = wire.build_query(txid, qname, qtype, qclass, do=do, cd=cd, udp_size=size)
    q = wire.parse_query(data)
    assert (q.id, q.qname, q.key, q.qtype, q.qclass) == (txid, qname, qname.lower(), qtype, qclass)
    assert (q.do, q.cd, q.rd, q.edns, q.udp_size, q.edns_version) == (do, cd, True, True, size, 0)
    assert q.question_end == 16 + len(qname)
    ref = dns.message.from_wire(data)
    assert ref.question[0].name.to_wire() == qname and ref.payload == size


@fuzz
@given(names)
def test_name_text_forms_match_dnspython(qname: bytes) -> None:
    ref = dns.name.from_wire(qname, 0)[0]
    text = wire.qname_to_text(qname)
    assert text == ref.to_text()
    assert wire.text_to_qname(text) == qname
    assert wire.qname_labels(qname) == list(ref.labels[:-1])
    assert wire.qname_suffixes(qname)[-1] == b"\x00"
    assert wire.names_equal(qname, qname.upper()) and wire.names_equal(qname.lower(), qname)


records = st.tuples(
    st.sampled_from(["answer", "authority", "additional"]),
    st.lists(st.sampled_from(["www", "a", "Mixed", "x-1"]), max_size=3),
    st.integers(0, 0x7FFFFFFF),
    st.sampled_from(
        [
            ("A", "192.0.2.7"),
            ("AAAA", "2001:db8::7"),
            ("CNAME", "t.example.net."),
            ("NS", "ns.Example.com."),
            ("MX", "5 mx.example.com."),
            ("TXT", '"hello"'),
            ("PTR", "p.example."),
            ("SOA", "m.example. r.example. 1 2 3 4 60"),
        ]
    ),
)


@fuzz
@given(st.lists(records, max_size=8), st.booleans(), st.integers(0, 5), st.integers(0, 300))
def test_generated_responses_match_dnspython(
    recs: list[tuple[str, list[str], int, tuple[str, str]]], edns: bool, rcode: int, elapsed: int
) -> None:
    q = dns.message.make_query("www.Example.com.", "A", use_edns=0 if edns else False)
    r = dns.message.make_response(q)
    r.set_rcode(dns.rcode.Rcode(rcode))
    for section, labels, ttl, (rdtype, text) in recs:
        owner = ".".join(labels + ["Example.com."])
        r.find_rrset(
            getattr(r, section),
            dns.name.from_text(owner),
            dns.rdataclass.IN,
            dns.rdatatype.from_text(rdtype),
            create=True,
        ).add(dns.rdata.from_text(dns.rdataclass.IN, rdtype, text), ttl)
    data = r.to_wire()
    ref = dns.message.from_wire(data)
    info = wire.parse_response(data)
    assert (info.rcode, info.qname) == (ref.rcode(), ref.question[0].name.to_wire())
    flat = [(rs.rdtype, rs.ttl) for rs in ref.answer for _ in rs]
    assert [(t, ttl) for (t, ttl, _, _) in info.answers] == flat
    soas = [rs for rs in ref.authority if rs.rdtype == 6]
    assert info.soa_ttl == (min(soas[0].ttl, soas[0][0].minimum) if soas else None)
    body, offsets, ttls = wire.make_cacheable(data, info)
    query = wire.parse_query(q.to_wire())
    query.udp_size = 65535
    got = dns.message.from_wire(wire.render_reply(body, offsets, ttls, elapsed, query))
    assert got.id == q.id and got.edns < 0
    for ours, theirs in (
        (got.answer, ref.answer),
        (got.authority, ref.authority),
        (got.additional, ref.additional),
    ):
        assert [(rs.name, rs.rdtype, set(rs), max(0, rs.ttl - elapsed)) for rs in theirs] == [
            (rs.name, rs.rdtype, set(rs), rs.ttl) for rs in ours
        ]
