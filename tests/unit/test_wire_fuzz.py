"""Property tests of mifdns.core.wire: hostile bytes never raise anything but WireError, and what
the codec builds or patches parses the same with dnspython.

Hostile input comes three ways: random bytes, valid messages with a few random edits
(``mutated``), and messages built to order (``crafted``) with the cases a parser must survive
aimed on purpose: compression loops (a pointer at itself, or forwards), pointers out of range
(past the end, 0x3FFF, into the header, into an RR's fixed fields), chains past 16 hops, labels
over 63 octets and names over 255 (plain or through compression), unknown label types, names
cut short, counts that lie (either way, up to 0xFFFF), RDLENGTHs that lie, OPT RRs out of place
and truncated headers. The same inputs go through the reply patcher (make_cacheable, then
render_reply) with the oracle in tests/fuzz/wirecheck.py.

CI runs a few hundred examples per property. The nightly run (``scripts/fuzz``) sets
MIFDNS_FUZZ_EXAMPLES; by hand:

    MIFDNS_FUZZ_EXAMPLES=100000 python -m pytest tests/unit/test_wire_fuzz.py
"""

from __future__ import annotations

import os
import re
import struct

import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from mifdns.core import render, wire
from mifdns.core.wire import WireError
from tests.fuzz.wirecheck import check_patch_path, corpus, parse_all, parse_each

EXAMPLES = int(os.environ.get("MIFDNS_FUZZ_EXAMPLES", "300"))
fuzz = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize="MIFDNS_FUZZ_EXAMPLES" not in os.environ,  # CI: the same examples each time
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


CORPUS = corpus()


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


# -- messages built to order -------------------------------------------------------------------
# A message is laid out from parts; then each compression pointer is aimed, since where it may
# point depends on the layout. Half the messages are "clean" (every pointer aimed backwards,
# counts and lengths true) so that they get past the parser to the patcher; the others aim
# anywhere and lie. The aims:
AIMS = (
    "self",  # a loop of one
    "forward",  # at what follows: a loop, or a walk that runs on
    "past-end",
    "max",  # 0x3FFF
    "header",
    "fixed",  # into an RR's type, class, TTL, RDLENGTH
    "name",  # at a name's start
    "prev-name",  # at the previous name: an owner per RR so aimed makes a chain
    "label",
    "rdata-end",  # at the last octets of an rdata: read as a label, it runs into what follows
    "pointer-low",  # at another pointer's second octet (a label length if < 64)
    "any",
)
LEGAL_AIMS = ("name", "prev-name", "prev-name", "label", "rdata-end", "pointer-low")
# the types with names in their rdata (3: MD), OPT, and opaque ones (16: TXT, 33: SRV)
RTYPES = (wire.A, wire.AAAA, wire.CNAME, wire.NS, wire.PTR, wire.MX, wire.DNAME, wire.SOA, wire.OPT)
RTYPES += (3, 16, 33)
TTLS = (300, 0, 0x7FFFFFFF, 0x80000000, 0x01000000, 0x00400000, 0x0100FF00)
long_labels = st.just([b"x" * 63] * 4)  # 257 octets


class _Layout:
    """A message being laid out: where its names, labels, pointers, fixed fields and rdata are."""

    def __init__(self, draw: st.DrawFn, clean: bool) -> None:
        self.draw = draw
        self.clean = clean
        self.buf = bytearray(12)
        self.names: list[int] = []
        self.labels: list[int] = []
        self.pointers: list[tuple[int, int, str, int]] = []  # (at, name start, aim, selector)
        self.fixed: list[int] = []
        self.rdata: list[tuple[int, int]] = []

    def name(self, end: str | None = None) -> None:
        draw, buf = self.draw, self.buf
        start = len(buf)
        self.names.append(start)
        long = draw(st.integers(0, 9)) == 7
        for lab in draw(long_labels if long else st.lists(label, max_size=3)):
            self.labels.append(len(buf))
            buf += bytes((len(lab),)) + lab
        if end is None:
            ends = ("root", "pointer") if self.clean else ("root", "pointer", "unknown", "cut")
            end = draw(st.sampled_from(ends))
        if end == "root":
            buf.append(0)
        elif end == "pointer":
            aim = draw(st.sampled_from(LEGAL_AIMS if self.clean else AIMS))
            self.pointers.append((len(buf), start, aim, draw(st.integers(0, 0xFFFF))))
            buf += b"\xc0\x00"
        elif end == "unknown":  # 0x40 (extended) and 0x80 (reserved) label types
            buf.append(draw(st.integers(0x40, 0xBF)))
        # "cut": no end, what follows is read as more labels

    def rr(self) -> None:
        draw = self.draw
        rtype = draw(st.sampled_from(RTYPES))
        if rtype == wire.OPT and draw(st.integers(0, 5)) != 3:
            self.names.append(len(self.buf))
            self.buf.append(0)
        else:
            self.name()
        fixed = len(self.buf)
        self.fixed.append(fixed)
        rclass = 1 if self.clean else draw(st.sampled_from([1, 1, 3, 255, 1232, 0xFFFF]))
        ttl = draw(st.one_of(st.sampled_from(TTLS), st.integers(0, 0xFFFFFFFF)))
        self.buf += struct.pack("!HHIH", rtype, rclass, ttl, 0)
        start = len(self.buf)
        if rtype in (wire.A, wire.AAAA):
            size = 4 if rtype == wire.A else 16
            self.buf += draw(st.binary(min_size=size, max_size=size))
        elif rtype in (wire.CNAME, wire.NS, wire.PTR, wire.DNAME, wire.MX, 3):
            if rtype == wire.MX:
                self.buf += b"\x00\x0a"
            self.name()
        elif rtype == wire.SOA:
            self.name()
            self.name()
            self.buf += struct.pack("!5I", 1, 2, 3, 4, draw(st.sampled_from(TTLS)))
        elif rtype == wire.OPT and draw(st.integers(0, 3)) != 2:  # options, or junk
            value = draw(st.binary(max_size=8))
            self.buf += struct.pack("!HH", 10, len(value)) + value
        else:
            self.buf += draw(st.binary(max_size=24))
        end = len(self.buf)
        self.rdata.append((start, end))
        lie = 0 if self.clean else draw(st.sampled_from([0, 0, 0, 0, -1, 1, -4, 7, 0x10000]))
        struct.pack_into("!H", self.buf, fixed + 8, min(max(end - start + lie, 0), 0xFFFF))

    def aim(self) -> None:
        buf = self.buf
        size = len(buf)
        for at, name, kind, k in self.pointers:
            before = [n for n in self.names if n < name]
            if kind == "self":
                target = at
            elif kind == "forward":
                target = at + 2 + k % 16
            elif kind == "past-end":
                target = size + k % 64
            elif kind == "max":
                target = 0x3FFF
            elif kind == "header":
                target = k % 12
            elif kind == "fixed" and self.fixed:
                target = self.fixed[k % len(self.fixed)] + (k >> 8) % 10
            elif kind == "name":
                target = self.names[k % len(self.names)]
            elif kind == "prev-name" and before:
                target = before[-1]
            elif kind == "label" and self.labels:
                target = self.labels[k % len(self.labels)]
            elif kind == "rdata-end" and self.rdata:
                start, end = self.rdata[k % len(self.rdata)]
                target = max(start, end - 1 - (k >> 8) % 4)
            elif kind == "pointer-low":
                target = self.pointers[k % len(self.pointers)][0] + 1
            else:
                target = 12 if kind == "prev-name" else k % size
            if self.clean and not 12 <= target < name:
                target = before[-1] if before else 12
            struct.pack_into("!H", buf, at, 0xC000 | (target & 0x3FFF))


@st.composite
def crafted(draw: st.DrawFn, qr: bool | None = None) -> bytes:
    """A message with hostile structure aimed on purpose (see AIMS); QR as asked, else either."""
    clean = draw(st.booleans())
    m = _Layout(draw, clean)
    qd = 1 if clean else draw(st.sampled_from([1, 1, 1, 1, 1, 1, 1, 0, 2]))
    for _ in range(qd):
        if clean or draw(st.integers(0, 3)) != 2:
            m.names.append(12)
            m.buf += draw(names)
        else:  # compressed or worse: never legal in a question
            m.name()
        m.buf += draw(st.sampled_from([b"\x00\x01\x00\x01", b"\x00\x1c\x00\x01", b"\x00\xff"]))
    n = draw(st.integers(0, 6))
    for _ in range(n):
        m.rr()
    if draw(st.integers(0, 4)) == 3:  # a chain: each owner points at the previous name
        for _ in range(draw(st.integers(1, 20))):
            m.names.append(len(m.buf))
            m.pointers.append((len(m.buf), len(m.buf), "prev-name", 0))
            m.buf += b"\xc0\x00" + struct.pack("!HHIH", wire.A, 1, 300, 4) + b"\x7f\x00\x00\x01"
            n += 1
    m.aim()
    an = draw(st.integers(0, n))
    ns = draw(st.integers(0, n - an))
    counts = [qd, an, ns, n - an - ns]
    if not clean:
        lies = st.sampled_from([0, 0, 0, 0, 0, 0, 1, -1, 2, 0x10000])  # 0x10000: say 0xFFFF
        counts = [min(max(c + draw(lies), 0), 0xFFFF) for c in counts]
    flags = draw(st.integers(0, 0xFFFF))
    if qr is not None:
        flags = flags | wire.QR if qr else flags & ~wire.QR
    if draw(st.integers(0, 3)) != 2:
        flags &= ~wire.TC  # mostly: a TC=1 response is never cached
    struct.pack_into("!6H", m.buf, 0, draw(st.integers(0, 0xFFFF)), flags, *counts)
    data = bytes(m.buf)
    if not clean:
        tail = draw(st.integers(0, 7))
        if tail == 5:  # cut anywhere, the header included
            data = data[: draw(st.integers(0, len(data)))]
        elif tail == 6:
            data += draw(st.binary(min_size=1, max_size=8))
    return data


def _case(parts: list[bytes], counts: tuple[int, int, int, int] = (1, 1, 0, 0)) -> bytes:
    """A response asking www.example.com A, then ``parts`` (an offset of 33 is the first)."""
    head = struct.pack("!6H", 0x5EED, 0x8180, *counts)
    return head + wire.text_to_qname("www.example.com.") + b"\x00\x01\x00\x01" + b"".join(parts)


_A = struct.pack("!HHIH", 1, 1, 300, 4) + b"\xc0\x00\x02\x01"
_CHAIN = [b"\xc0\x0c" + _A] + [struct.pack("!H", 0xC000 | 33 + 16 * i) + _A for i in range(17)]
# each listed case, so every run of the properties below tries it whatever it generates
LISTED = {
    "compression loop, a pointer at itself": _case([b"\xc0\x21" + _A]),
    "compression loop, two pointers": _case([b"\xc0\x23\xc0\x21" + _A]),
    "compression loop in the question": _case([], (1, 0, 0, 0))[:12] + b"\xc0\x0c\x00\x01\x00\x01",
    "pointer past the end": _case([b"\xc0\xff" + _A]),
    "pointer at 0x3fff": _case([b"\xff\xff" + _A]),
    "pointer into the header": _case([b"\xc0\x02" + _A]),
    "pointer into an RR's TTL": _case([b"\xc0\x0c" + _A, b"\xc0\x27" + _A], (1, 2, 0, 0)),
    "chain of 17 hops": _case(_CHAIN, (1, 18, 0, 0)),
    "label of 64 octets": _case([b"\x40" + b"x" * 64 + b"\x00" + _A]),
    "label type 0x80": _case([b"\x80\x01" + _A]),
    "name of 256 octets": _case([b"\x3f" + b"x" * 63] * 3 + [b"\x3e" + b"x" * 62 + b"\x00" + _A]),
    "name over 255 through compression": _case(
        [b"\x3f" + b"x" * 63] * 3 + [b"\x2e" + b"x" * 46 + b"\xc0\x0c" + _A]
    ),
    "label length past the end": _case([b"\x3fxyz"]),
    "ANCOUNT says more": _case([b"\xc0\x0c" + _A], (1, 5, 0, 0)),
    "ANCOUNT says fewer": _case([b"\xc0\x0c" + _A], (1, 0, 0, 0)),
    "ARCOUNT 0xffff": _case([b"\xc0\x0c" + _A], (1, 1, 0, 0xFFFF)),
    "QDCOUNT 0xffff": _case([b"\xc0\x0c" + _A], (0xFFFF, 1, 0, 0)),
    "RDLENGTH past the end": _case([b"\xc0\x0c" + _A[:8] + b"\x01\x00" + _A[10:]]),
    **{f"header cut to {n} octets": _case([b"\xc0\x0c" + _A])[:n] for n in (0, 1, 2, 5, 11)},
    # found by the nightly run: the pointer in an MD's rdata moves when the OPT before it goes
    # (dnspython reads MD as opaque octets, so the oracle compares its name only)
    "pointer in an MD after an OPT in mid-section": bytes.fromhex(
        "000080000001000000000002000001000100002900010000012c000c000a00080000000000000000"
        "00000300010000012c0002c028"
    ),
}


def _with_listed(**other):  # type: ignore[no-untyped-def]
    def add(prop):  # type: ignore[no-untyped-def]
        for data in LISTED.values():
            prop = example(data=data, **other)(prop)
        return prop

    return add


def _outcome(exc: WireError) -> str:
    return re.sub(r"0x[0-9a-f]+|\d+", "N", str(exc))


@fuzz
@given(st.one_of(crafted(), crafted(qr=False)))
@_with_listed()
def test_crafted_messages_raise_only_wire_error(data: bytes) -> None:
    parse_all(data)
    try:
        q = wire.parse_query(data)
    except WireError as exc:
        event(f"query refused: {_outcome(exc)}")
        return
    event("query accepted")
    if q.qname:  # a hostile question name is a cache key and a routing key: a plain name
        assert wire.text_to_qname(wire.qname_to_text(q.qname)) == q.qname
        assert wire.qname_suffixes(q.key)[0] == q.key


@fuzz
@given(crafted(qr=True), st.integers(0, 1 << 30), st.integers(0, 1 << 31), st.booleans())
@_with_listed(flips=0x2A, elapsed=1, opt=True)
def test_crafted_responses_cache_and_render_or_are_refused(
    data: bytes, flips: int, elapsed: int, opt: bool
) -> None:
    try:
        wire.parse_response(data)
    except WireError as exc:
        event(f"refused: {_outcome(exc)}")
        return
    event(check_patch_path(data, flips, elapsed, opt))


@fuzz
@given(hostile)
def test_parsers_raise_only_wire_error(data: bytes) -> None:
    parse_each(data)


@fuzz
@given(hostile, st.integers(0, 4095))
def test_error_reply_is_none_or_a_valid_reply(data: bytes, rcode: int) -> None:
    out = render.error_reply(data, rcode, opt=render.opt_rr(1232) if rcode & 1 else b"")
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
    event(check_patch_path(data, flips, elapsed, opt))


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
    data = render.build_query(txid, qname, qtype, qclass, do=do, cd=cd, udp_size=size)
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
    body, offsets, ttls = render.make_cacheable(data, info)
    query = wire.parse_query(q.to_wire())
    query.udp_size = 65535
    got = dns.message.from_wire(render.render_reply(body, offsets, ttls, elapsed, query))
    assert got.id == q.id and got.edns < 0
    for ours, theirs in (
        (got.answer, ref.answer),
        (got.authority, ref.authority),
        (got.additional, ref.additional),
    ):
        assert [(rs.name, rs.rdtype, set(rs), max(0, rs.ttl - elapsed)) for rs in theirs] == [
            (rs.name, rs.rdtype, set(rs), rs.ttl) for rs in ours
        ]


def test_name_running_into_a_ttl_is_refused() -> None:
    # the second owner points at the last octet of the first A record's rdata (7): a label of
    # 7 octets (its own pointer, type, class, the TTL's first octet); the next length octet is
    # the TTL's second: 0x00 at 0x01000000 seconds, 0xff (a pointer) one second later
    head = struct.pack("!6H", 0, 0x8180, 1, 2, 0, 0) + b"\x00\x00\x01\x00\x01"  # ". A IN"
    first = b"\xc0\x0c" + struct.pack("!HHIH", wire.A, 1, 300, 4) + bytes([192, 0, 2, 7])
    rdata_end = len(head) + len(first) - 1
    second = struct.pack("!HHHIH", 0xC000 | rdata_end, wire.A, 1, 0x01000000, 4)
    data = head + first + second + bytes([192, 0, 2, 8])
    with pytest.raises(WireError, match="runs past the pointer"):
        wire.parse_response(data)  # accepted, aging the TTL would rewrite the name


def test_rdata_name_reading_an_earlier_ttl_is_refused() -> None:
    # the second CNAME's target points at the first owner's pointer octet 0x0c: a label of 12
    # octets over the first RR's type, class, TTL, RDLENGTH and rdata (found by the crafted
    # property in strict mode, shrunk by hypothesis)
    data = bytes.fromhex(
        "0000 8000 0001 0000 0000 0002 00 0001 0001"  # ". A IN"
        "c00c 0005 0001 0000012c 0001 00"  # . CNAME .
        "00 0005 0001 0000012c 0002 c012"  # . CNAME -> 12 octets from offset 19
    )
    dns.message.from_wire(data)  # dnspython accepts it
    with pytest.raises(WireError, match="runs into an RR's type, class, TTL"):
        wire.parse_response(data)  # accepted, aging the TTL would change the CNAME target
