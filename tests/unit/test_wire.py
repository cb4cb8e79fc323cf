"""mifdns.core.wire against dnspython, and against hostile input."""

from __future__ import annotations

import struct
import time
from typing import Any

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from mifdns.core import render, wire
from mifdns.core.wire import WireError

# --------------------------------------------------------------------------- helpers


def header(
    txid: int = 0x1234, flags: int = 0, qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0
) -> bytes:
    return struct.pack("!6H", txid, flags, qd, an, ns, ar)


def question(name: str = "www.example.com.", qtype: int = 1, qclass: int = 1) -> bytes:
    return wire.text_to_qname(name) + struct.pack("!HH", qtype, qclass)


def rr(owner: bytes, rtype: int, ttl: int, rdata: bytes, rclass: int = 1) -> bytes:
    return owner + struct.pack("!HHIH", rtype, rclass, ttl, len(rdata)) + rdata


def raw_opt(udp: int = 1232, ttl: int = 0, rdata: bytes = b"") -> bytes:
    return rr(b"\x00", wire.OPT, ttl, rdata, rclass=udp)


def make_query(
    name: str = "www.Example.com.", rdtype: str = "A", *, txid: int = 4242, **kw: object
) -> bytes:
    q = dns.message.make_query(name, rdtype, **kw)  # type: ignore[arg-type]
    q.id = txid
    return q.to_wire()


def response_for(
    qwire: bytes,
    *records: tuple[str, str, int, str, str],
    rcode: int = 0,
    edns: bool = True,
    **edns_kw: object,
) -> dns.message.Message:
    q = dns.message.from_wire(qwire)
    r = dns.message.make_response(q)
    if not edns:
        r.use_edns(False)
    elif edns_kw:
        r.use_edns(0, **edns_kw)  # type: ignore[arg-type]
    r.set_rcode(dns.rcode.Rcode(rcode))
    for section, name, ttl, rdtype, text in records:
        getattr(r, section).append(dns.rrset.from_text(name, ttl, "IN", rdtype, *text.split("|")))
    return r


CNAME_CHAIN = (
    ("answer", "www.Example.com.", 300, "CNAME", "web.example.net."),
    ("answer", "web.example.net.", 120, "CNAME", "edge.cdn.example.org."),
    ("answer", "edge.cdn.example.org.", 60, "A", "192.0.2.1|192.0.2.2"),
    ("authority", "cdn.example.org.", 3600, "NS", "ns1.cdn.example.org.|ns2.cdn.example.org."),
    ("additional", "ns1.cdn.example.org.", 3600, "A", "192.0.2.53"),
    ("additional", "ns2.cdn.example.org.", 3600, "AAAA", "2001:db8::53"),
)
NXDOMAIN_SOA = (
    (
        "authority",
        "example.com.",
        900,
        "SOA",
        "ns1.example.com. hostmaster.example.com. 2024010101 7200 3600 1209600 300",
    ),
)


def dns_rr_list(m: dns.message.Message) -> list[tuple[str, int, int]]:
    """(name, type, ttl) of every RR except OPT, in wire order."""
    out: list[tuple[str, int, int]] = []
    for section in (m.answer, m.authority, m.additional):
        for rrset in section:
            out.extend((rrset.name.to_text(), rrset.rdtype, rrset.ttl) for _ in rrset)
    return out


# --------------------------------------------------------------------------- parse_query


@pytest.mark.parametrize(
    "kw",
    [
        {"use_edns": False},
        {"use_edns": 0, "payload": 4096, "want_dnssec": True},
        {"use_edns": 0, "payload": 100},
        {
            "use_edns": 0,
            "options": [dns.edns.GenericOption(dns.edns.OptionType.COOKIE, b"\x01" * 8)],
        },
        {"use_edns": 0, "flags": dns.flags.RD | dns.flags.CD | dns.flags.AD},
        {"use_edns": False, "flags": 0},
    ],
)
def test_parse_query_matches_dnspython(kw: dict[str, Any]) -> None:
    data = make_query("WwW.ExAmple.COM.", "AAAA", **kw)
    ref = dns.message.from_wire(data)
    q = wire.parse_query(data)
    assert (q.id, q.flags, q.opcode) == (ref.id, ref.flags, ref.opcode())
    assert q.qname == ref.question[0].name.to_wire()
    assert q.key == ref.question[0].name.canonicalize().to_wire()
    assert (q.qtype, q.qclass) == (ref.question[0].rdtype, ref.question[0].rdclass)
    assert q.question_end == 12 + len(q.qname) + 4
    assert q.edns == (ref.edns >= 0)
    assert q.udp_size == (max(512, ref.payload) if ref.edns >= 0 else 512)
    assert q.do == bool(ref.ednsflags & dns.flags.DO)
    assert (q.rd, q.cd, q.ad) == tuple(
        bool(ref.flags & f) for f in (dns.flags.RD, dns.flags.CD, dns.flags.AD)
    )
    assert wire.qname_to_text(q.qname) == "WwW.ExAmple.COM."


def test_parse_query_keeps_edns_version_for_badvers() -> None:
    q = wire.parse_query(make_query(use_edns=1))
    assert (q.edns, q.edns_version) == (True, 1)


def test_parse_query_walks_and_skips_answer_and_authority() -> None:
    data = (
        header(an=1, ns=1, ar=1)
        + question()
        + rr(b"\xc0\x0c", 1, 60, b"\x01\x02\x03\x04")
        + rr(b"\x03foo\xc0\x10", 2, 60, b"\x00")
        + raw_opt(1400, 0x8000)
    )
    q = wire.parse_query(data)
    assert (q.edns, q.udp_size, q.do) == (True, 1400, True)


def test_parse_query_other_opcode_without_question() -> None:
    q = wire.parse_query(header(flags=4 << 11, qd=0))  # NOTIFY, no question
    assert (q.opcode, q.qname, q.key, q.qtype, q.qclass, q.question_end) == (4, b"", b"", 0, 0, 12)
    q = wire.parse_query(header(flags=5 << 11, qd=2) + question() + question("b.", 6))
    assert q.opcode == 5 and q.qname == wire.text_to_qname("www.example.com.")


def test_parse_header() -> None:
    assert wire.parse_header(header(0xBEEF, 0x8180)) == (0xBEEF, 0x8180)
    with pytest.raises(WireError):
        wire.parse_header(b"\x00" * 11)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x12",
        header()[:11],
        header(),  # QDCOUNT 1, no question
        header(flags=wire.QR) + question(),  # a response
        header(qd=0),  # opcode 0, no question
        header(qd=2) + question() + question(),
        header(qd=5) + question(),  # the count lies
        header() + b"\x03www\xc0\x0c\x00\x01\x00\x01",  # pointer in the question
        header() + b"\xc0\x0c\x00\x01\x00\x01",  # self-pointing question
        header() + b"\x40" + b"a" * 64 + b"\x00\x00\x01\x00\x01",  # label of 64
        header() + b"\x80abc\x00\x00\x01\x00\x01",  # extended label type
        header() + (b"\x3f" + b"a" * 63) * 4 + b"\x00\x00\x01\x00\x01",  # name of 257
        header() + b"\x03www\x07example",  # name cut short
        header() + wire.text_to_qname("example.") + b"\x00\x01",  # no QCLASS
        header(ar=2) + question() + raw_opt() + raw_opt(),  # OPT twice
        header(ar=1) + question() + rr(b"\x01a\x00", wire.OPT, 0, b""),  # OPT not at the root
        header(an=1) + question() + raw_opt(),  # OPT in the answer section
        header(ar=1) + question() + raw_opt(rdata=b"\x00\x0a\x00\x08abc"),  # option overruns
        header(ar=1) + question() + raw_opt()[:-1],  # OPT cut short
        header(ar=1) + question() + raw_opt(rdata=b"ab")[:-1],  # rdlength past the end
        header(an=1000) + question(),  # ANCOUNT lies
        header(an=1) + question() + rr(b"\xc0\x30", 1, 0, b"\x00" * 4),  # forward pointer
        header(an=1) + question() + rr(b"\xc0\xff", 1, 0, b"\x00" * 4),  # pointer past the end
    ],
)
def test_parse_query_rejects_malformed(data: bytes) -> None:
    with pytest.raises(WireError) as exc:
        wire.parse_query(data)
    assert exc.value.rcode == wire.FORMERR
    assert type(exc.value).__name__ in ("WireError", "_Short")


def test_parse_query_accepts_a_255_octet_name() -> None:
    name = (b"\x3f" + b"a" * 63) * 3 + b"\x3d" + b"b" * 61 + b"\x00"
    assert len(name) == 255
    assert wire.parse_query(header() + name + b"\x00\x01\x00\x01").qname == name


# --------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    "text",
    [
        ".",
        "com.",
        "www.Example.COM.",
        r"a\.b.example.",
        r"sp\032ace.x.",
        r"q\"uo\(te\).\@\$\;.",
        r"\000\255\127.bin.",
        "*.wild.example.",
        "xn--bcher-kva.example.",
    ],
)
def test_names_match_dnspython(text: str) -> None:
    ref = dns.name.from_text(text)
    ref_wire = ref.to_wire() or b""
    assert wire.text_to_qname(text) == ref_wire
    assert wire.qname_to_text(ref_wire) == ref.to_text()
    assert wire.qname_labels(ref_wire) == list(ref.labels[:-1])


def test_text_to_qname_relative_and_idna() -> None:
    assert wire.text_to_qname("corp.example") == wire.text_to_qname("corp.example.")
    assert wire.text_to_qname("bücher.example") == b"\x0dxn--bcher-kva\x07example\x00"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "a..b.",
        "..",
        "a" * 64 + ".",
        ".".join(["abcd"] * 52),
        "bad\\",
        r"bad\25",
        r"bad\256.",
        "\udcff.x.",
    ],
)
def test_text_to_qname_rejects(text: str) -> None:
    with pytest.raises(WireError):
        wire.text_to_qname(text)


def test_qname_suffixes_and_labels() -> None:
    key = wire.text_to_qname("a.b.c.")
    assert wire.qname_suffixes(key) == [key, key[2:], key[4:], b"\x00"]
    assert wire.qname_labels(b"\x00") == []
    for bad in (b"", b"\x05ab", b"\x01a"):
        with pytest.raises(WireError):
            wire.qname_labels(bad)
        with pytest.raises(WireError):
            wire.qname_suffixes(bad)
        with pytest.raises(WireError):
            wire.qname_to_text(bad or b"\x40")


def test_names_equal() -> None:
    assert wire.names_equal(b"\x03WwW\x00", b"\x03www\x00")
    assert not wire.names_equal(b"\x03www\x00", b"\x03wwx\x00")
    assert not wire.names_equal(b"\x01\xc1\x00", b"\x01\xe1\x00")  # ASCII-only folding


# --------------------------------------------------------------------------- build_query


@pytest.mark.parametrize("do,cd,size", [(False, False, 1232), (True, True, 4096)])
def test_build_query_parses_back(do: bool, cd: bool, size: int) -> None:
    qname = wire.text_to_qname("Mixed.Case.example.")
    data = render.build_query(777, qname, 28, do=do, cd=cd, udp_size=size)
    ref = dns.message.from_wire(data)
    assert ref.id == 777 and ref.flags == dns.flags.RD | (dns.flags.CD if cd else 0)
    assert ref.question[0].name.to_wire() == qname and ref.question[0].rdtype == 28
    assert (ref.edns, ref.payload, bool(ref.ednsflags & dns.flags.DO)) == (0, size, do)
    assert not ref.options and not (ref.answer or ref.authority)
    q = wire.parse_query(data)
    assert (q.qname, q.qtype, q.qclass, q.do, q.cd, q.udp_size) == (qname, 28, 1, do, cd, size)


# --------------------------------------------------------------------------- parse_response


def check_against_dnspython(data: bytes) -> wire.ResponseInfo:
    ref = dns.message.from_wire(data)
    info = wire.parse_response(data)
    assert (info.id, info.flags, info.rcode) == (ref.id, ref.flags, ref.rcode())
    assert (info.tc, info.aa) == (bool(ref.flags & dns.flags.TC), bool(ref.flags & dns.flags.AA))
    assert info.qname == ref.question[0].name.to_wire()
    assert (info.qtype, info.qclass) == (ref.question[0].rdtype, ref.question[0].rdclass)
    assert info.question_end == 12 + len(info.qname) + 4
    rrs = dns_rr_list(ref)
    n_answer = sum(len(r) for r in ref.answer)
    assert info.ancount == n_answer
    assert info.nscount == sum(len(r) for r in ref.authority)
    assert info.arcount == sum(len(r) for r in ref.additional) + (ref.edns >= 0)
    assert [t for (_, t, _) in rrs[:n_answer]] == [a[0] for a in info.answers]
    assert [ttl for (_, _, ttl) in rrs[:n_answer]] == [a[1] for a in info.answers]
    assert info.min_answer_ttl == (min(a[1] for a in info.answers) if info.answers else None)
    assert len(info.ttl_offsets) == len(rrs)
    # every offset is a TTL field: rewrite them all and dnspython must see the new TTL everywhere
    patched = bytearray(data)
    for off in info.ttl_offsets:
        struct.pack_into("!I", patched, off, 4242)
    again = dns.message.from_wire(bytes(patched))
    assert {ttl for (_, _, ttl) in dns_rr_list(again)} <= {4242}
    assert (again.edns, again.ednsflags, again.payload) == (ref.edns, ref.ednsflags, ref.payload)
    if ref.edns >= 0:
        assert info.opt_start is not None and info.opt_end is not None
        assert (
            data[info.opt_start] == 0
            and data[info.opt_start + 1 : info.opt_start + 3] == b"\x00\x29"
        )
    else:
        assert info.opt_start is None and info.opt_end is None
    return info


def test_parse_response_cname_chain_with_compression() -> None:
    q = make_query(use_edns=0, want_dnssec=True)
    data = response_for(q, *CNAME_CHAIN, payload=1232).to_wire()
    info = check_against_dnspython(data)
    assert info.min_answer_ttl == 60 and info.soa_ttl is None
    rtype, ttl, off, length = info.answers[0]
    assert (rtype, ttl) == (5, 300)
    target = dns.name.from_wire(data, off)[0]  # the compressed CNAME target, as dnspython reads it
    assert target.to_text() == "web.example.net." and off + length == info.answers[1][2] - 10 - 2
    assert sorted(data[a[2] : a[2] + a[3]] for a in info.answers[2:]) == [
        bytes([192, 0, 2, 1]),
        bytes([192, 0, 2, 2]),
    ]


def test_parse_response_nxdomain_soa_ttl_is_min_of_ttl_and_minimum() -> None:
    q = make_query("nope.example.com.", use_edns=0)
    info = check_against_dnspython(response_for(q, *NXDOMAIN_SOA, rcode=3).to_wire())
    assert (info.rcode, info.answers, info.min_answer_ttl, info.soa_ttl) == (3, [], None, 300)
    low = (("authority", "example.com.", 30, "SOA", "a. b. 1 2 3 4 300"),)
    assert check_against_dnspython(response_for(q, *low, rcode=3).to_wire()).soa_ttl == 30


def test_parse_response_extended_rcode_and_ede() -> None:
    q = make_query(use_edns=0)
    r = response_for(
        q,
        payload=1232,
        options=[dns.edns.EDEOption(dns.edns.EDECode.NETWORK_ERROR, "upstream down")],
    )
    r.set_rcode(dns.rcode.BADVERS)
    info = check_against_dnspython(r.to_wire())
    assert info.rcode == dns.rcode.BADVERS == wire.BADVERS


def test_parse_response_without_edns_and_without_question() -> None:
    check_against_dnspython(
        response_for(make_query(use_edns=False), *CNAME_CHAIN, edns=False).to_wire()
    )
    info = wire.parse_response(header(flags=0x8001, qd=0))
    assert (info.qname, info.qtype, info.question_end, info.rcode) == (b"", 0, 12, 1)


def test_parse_response_high_bit_ttl_reads_as_zero() -> None:
    data = header(flags=0x8180, an=1) + question() + rr(b"\xc0\x0c", 1, 0x80000001, b"\x01" * 4)
    info = wire.parse_response(data)
    assert info.answers[0][1] == 0 and info.min_answer_ttl == 0
    assert render.make_cacheable(data, info)[2] == (0,)


def test_parse_response_tc_with_partial_records_is_not_an_error() -> None:
    full = response_for(make_query(use_edns=0), *CNAME_CHAIN, payload=1232).to_wire()
    data = bytearray(full[:60])
    data[2] |= 0x02
    info = wire.parse_response(bytes(data))
    assert info.tc and info.qname == wire.text_to_qname("www.Example.com.")
    with pytest.raises(WireError):
        wire.parse_response(full[:60])  # the same without TC


def rsp(*records: bytes, an: int = 0, ns: int = 0, ar: int = 0, qd: bytes | None = None) -> bytes:
    qd = question() if qd is None else qd
    return header(flags=0x8180, an=an, ns=ns, ar=ar, qd=1 if qd else 0) + qd + b"".join(records)


A4 = b"\x01\x02\x03\x04"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        header(flags=0x8000)[:11],
        header(flags=0x8000),  # short / header only
        header(flags=0),
        header(flags=0, qd=0),  # not a response
        rsp(qd=b"")[:12] + b"\x00\x02" + rsp(qd=b"")[14:],  # QDCOUNT 2
        header(flags=0x8000) + b"\xc0\x0c\x00\x01\x00\x01",  # compressed question
        rsp(an=1000),  # ANCOUNT lies
        rsp(rr(b"\xc0\x21", 1, 0, A4), an=1),  # self-pointing owner
        rsp(rr(b"\x01a\xc0\x21", 1, 0, A4), an=1),  # loop through a label
        rsp(rr(b"\x01a\xc0\x33", 1, 0, A4), rr(b"\xc0\x21", 1, 0, A4), an=2),  # forward then back
        rsp(
            rr(b"\x00", 0xFF00, 0, b"\xc0\x2e\xc0\x2c"), rr(b"\xc0\x2c", 1, 0, A4), an=2
        ),  # 2-cycle
        rsp(rr(b"\xc0\xff", 1, 0, A4), an=1),  # pointer past the end
        rsp(rr(b"\xc3\xff", 1, 0, A4), an=1),  # far past the end
        rsp(rr(b"\xc0", 1, 0, A4), an=1),  # half a pointer
        rsp(rr(b"\x40" + b"a" * 64 + b"\x00", 1, 0, A4), an=1),  # label of 64
        rsp(rr(b"\x80\x00", 1, 0, A4), an=1),  # label type 0x80
        rsp(rr((b"\x3f" + b"a" * 63) * 3 + b"\x3e" + b"a" * 62 + b"\x00", 1, 0, A4), an=1),  # 256
        rsp(
            rr(
                b"\x3f" + b"a" * 63 + b"\x3f" + b"b" * 63 + b"\xc0\x0c", 1, 0, A4
            ),  # long by pointers
            rr(b"\x3f" + b"c" * 63 + b"\x3f" + b"d" * 63 + b"\xc0\x21", 1, 0, A4),
            an=2,
        ),
        rsp(rr(b"\xc0\x0c", 1, 0, A4)[:-1], an=1),  # rdlength past the end
        rsp(rr(b"\xc0\x0c", 1, 0, A4)[:8], an=1),  # RR fixed part cut
        rsp(rr(b"\xc0\x0c", 1, 0, A4), b"\x00", an=1),  # trailing byte
        rsp(raw_opt(), raw_opt(), ar=2),  # OPT twice
        rsp(raw_opt(), an=1),  # OPT in the answers
        rsp(rr(b"\xc0\x0c", wire.OPT, 0, b""), ar=1),  # OPT not at the root
        rsp(raw_opt(rdata=b"\x00\x0f\x00\x09\x00"), ar=1),  # option overruns
        rsp(rr(b"\xc0\x04", 1, 0, A4), an=1),  # into the header
        rsp(rr(b"\xc0\x0c", 1, 0, b"\x00" * 4), rr(b"\xc0\x27", 1, 0, A4), an=2),  # into a TTL
        rsp(rr(b"\xc0\x0c", 5, 0, b"\xc0\x25"), an=1),  # rdata to own type
        rsp(rr(b"\xc0\x0c", 1, 0, b"\x01\x02\x03"), an=1),  # A of 3 octets
        rsp(rr(b"\xc0\x0c", 28, 0, A4), an=1),  # AAAA of 4 octets
        rsp(rr(b"\xc0\x0c", 5, 0, b"\x03abc"), an=1),  # CNAME target cut
        rsp(rr(b"\xc0\x0c", 5, 0, b"\xc0\x0c\x00"), an=1),  # CNAME with slack
        rsp(rr(b"\xc0\x0c", 5, 0, b"\xc0\x30"), an=1),  # CNAME forward ptr
        rsp(rr(b"\xc0\x0c", 15, 0, b"\x00"), an=1),  # MX too short
        rsp(rr(b"\xc0\x0c", 6, 0, b"\x00\x00" + b"\x00" * 19), ns=1),  # SOA too short
    ],
)
def test_parse_response_rejects_malformed(data: bytes) -> None:
    with pytest.raises(WireError):
        wire.parse_response(data)


def chain_response(hops: int, owners: int) -> bytes:
    """A chain of pointers, each to the one before (the first to the question), in an rdata;
    ``owners`` A records owned by a pointer to its top: their names take ``hops`` pointers."""
    qd = question()
    chain_at = 12 + len(qd) + 1 + 10
    chain = b"\xc0\x0c" + b"".join(
        struct.pack("!H", 0xC000 | (chain_at + 2 * i)) for i in range(hops - 2)
    )
    top = struct.pack("!H", 0xC000 | (chain_at + 2 * (hops - 2)))
    return rsp(rr(b"\x00", 0xFF00, 0, chain), *[rr(top, 1, 0, A4)] * owners, an=owners + 1, qd=qd)


def test_pointer_chains_of_16_hops_at_most_like_dnspython() -> None:
    ok, bad = chain_response(16, 3), chain_response(17, 3)
    assert dns.message.from_wire(ok).answer[1].name.to_text() == "www.example.com."
    assert len(wire.parse_response(ok).answers) == 4
    with pytest.raises(dns.name.PointerChainTooLong):
        dns.message.from_wire(bad)
    with pytest.raises(WireError):
        wire.parse_response(bad)
    with pytest.raises(WireError):
        wire.parse_query(b"\x00\x01\x00\x00" + bad[4:])  # as the answer section of a query


def test_many_owners_on_a_long_chain_cost_linear_time() -> None:
    data = chain_response(16, 5000)
    started = time.perf_counter()
    assert len(wire.parse_response(data).answers) == 5001
    assert time.perf_counter() - started < 1.0  # ~10 ms; no memo would walk 16 hops each


# --------------------------------------------------------------------------- make_cacheable


def test_make_cacheable_strips_a_trailing_opt() -> None:
    q = make_query(use_edns=0, want_dnssec=True)
    data = response_for(q, *CNAME_CHAIN, payload=1232, ednsflags=dns.flags.DO).to_wire()
    info = wire.parse_response(data)
    body, offsets, ttls = render.make_cacheable(data, info)
    ref, got = dns.message.from_wire(data), dns.message.from_wire(body)
    assert got.id == 0 and got.edns < 0 and got.flags == ref.flags
    assert dns_rr_list(got) == dns_rr_list(ref)
    assert ttls == tuple(ttl for (_, _, ttl) in dns_rr_list(ref))
    assert offsets == tuple(info.ttl_offsets)
    assert all(struct.unpack_from("!I", body, o)[0] == t for o, t in zip(offsets, ttls))


def test_make_cacheable_without_opt_only_zeroes_the_id() -> None:
    data = response_for(make_query(use_edns=False), *CNAME_CHAIN, edns=False).to_wire()
    body, offsets, ttls = render.make_cacheable(data, wire.parse_response(data))
    assert body == b"\0\0" + data[2:] and len(offsets) == len(ttls) == 8


def opt_in_the_middle() -> bytes:
    """Additional section: glue A, OPT, then RRs whose pointers point past the OPT."""
    qd = question("www.example.com.")
    base = 12 + len(qd)
    ns_rr = rr(b"\x07example\x03com\x00", 2, 3600, b"\x03ns1\xc0\x10")  # ns1.example.com
    glue = rr(b"\x03ns1\xc0\x10", 1, 3600, A4)
    opt = raw_opt(1232, 0x8000, b"\x00\x0a\x00\x08" + b"c" * 8)
    after = base + len(ns_rr) + len(glue) + len(opt)
    ns2 = rr(b"\x03ns2\xc0\x10", 1, 600, b"\x05\x06\x07\x08")  # ns2 at `after`
    ptr = bytes((0xC0 | after >> 8, after & 0xFF))
    ns2_aaaa = rr(ptr, 28, 500, b"\x20\x01" + b"\x00" * 14)  # owner -> ns2 (after OPT)
    mail = rr(b"\x04mail" + ptr, 5, 400, b"\x02mx" + ptr)  # CNAME rdata -> ns2 too
    return rsp(ns_rr, glue, opt, ns2, ns2_aaaa, mail, ns=1, ar=5, qd=qd)


def test_make_cacheable_strips_an_opt_in_the_middle_and_moves_pointers() -> None:
    data = opt_in_the_middle()
    ref = dns.message.from_wire(data)
    info = wire.parse_response(data)
    assert info.opt_end is not None and info.opt_end < len(data)
    body, offsets, ttls = render.make_cacheable(data, info)
    got = dns.message.from_wire(body)
    assert got.edns < 0 and got.id == 0
    assert len(body) == len(data) - (info.opt_end - (info.opt_start or 0))
    assert [r.to_text() for r in got.additional] == [r.to_text() for r in ref.additional]
    assert ttls == (3600, 3600, 600, 500, 400)
    assert [struct.unpack_from("!I", body, o)[0] for o in offsets] == list(ttls)
    assert wire.parse_response(b"\x80\x00" + body[2:]).arcount == 4


def test_make_cacheable_refuses_a_pointer_into_the_opt() -> None:
    qd = question()
    opt_at = 12 + len(qd)
    data = rsp(raw_opt(), rr(bytes((0xC0, opt_at)), 1, 0, A4), ar=2, qd=qd)  # owner = OPT's root
    info = wire.parse_response(data)
    with pytest.raises(WireError):
        render.make_cacheable(data, info)


# --------------------------------------------------------------------------- render_reply


def cached(
    *records: tuple[str, str, int, str, str], rcode: int = 0, name: str = "www.example.com."
) -> tuple[bytes, tuple[int, ...], tuple[int, ...]]:
    data = response_for(
        make_query(name, use_edns=0), *records, rcode=rcode, payload=4096, ednsflags=dns.flags.DO
    ).to_wire()
    patched = bytearray(data)
    patched[2] |= 0x01 | 0x00  # keep RD from upstream
    patched[3] |= 0x20  # AD from upstream
    return render.make_cacheable(bytes(patched), wire.parse_response(bytes(patched)))


def test_render_reply_patches_id_case_ttls_and_flags() -> None:
    body, offsets, ttls = cached(*CNAME_CHAIN)
    client = make_query("WWW.eXample.COM.", txid=999, use_edns=0, flags=0)  # RD=0
    q = wire.parse_query(client)
    out = render.render_reply(body, offsets, ttls, 100, q, opt=render.opt_rr(1232))
    m = dns.message.from_wire(out)
    assert m.id == 999 and m.question[0].name.to_text() == "WWW.eXample.COM."
    assert m.answer[0].name.to_text() == "WWW.eXample.COM."  # answers follow the question's case
    assert not m.flags & dns.flags.RD and m.flags & dns.flags.RA and m.flags & dns.flags.AD
    assert [ttl for (_, _, ttl) in dns_rr_list(m)] == [200, 20, 0, 0, 3500, 3500, 3500, 3500]
    assert m.edns == 0 and m.payload == 1232
    assert render.render_reply(body, offsets, ttls, 10**6, q) and all(
        ttl == 0
        for (_, _, ttl) in dns_rr_list(
            dns.message.from_wire(render.render_reply(body, offsets, ttls, 10**6, q))
        )
    )
    cleared = dns.message.from_wire(render.render_reply(body, offsets, ttls, 0, q, clear_ad=True))
    assert not cleared.flags & dns.flags.AD


def test_render_reply_copies_rd_and_cd() -> None:
    body, offsets, ttls = cached(*CNAME_CHAIN)
    q = wire.parse_query(
        make_query("www.example.com.", use_edns=0, flags=dns.flags.RD | dns.flags.CD)
    )
    m = dns.message.from_wire(render.render_reply(body, offsets, ttls, 0, q))
    assert m.flags & dns.flags.RD and m.flags & dns.flags.CD and m.edns < 0


def test_render_reply_clears_the_upstreams_aa_flag() -> None:
    data = bytearray(response_for(make_query("www.example.com.", use_edns=0), *CNAME_CHAIN)
                     .to_wire())  # fmt: skip
    data[2] |= 0x04  # the upstream was authoritative
    assert dns.message.from_wire(bytes(data)).flags & dns.flags.AA
    body, offsets, ttls = render.make_cacheable(bytes(data), wire.parse_response(bytes(data)))
    q = wire.parse_query(make_query("www.example.com.", use_edns=0))
    assert not dns.message.from_wire(render.render_reply(body, offsets, ttls, 0, q)).flags & (
        dns.flags.AA
    )


def big_answer() -> tuple[str, str, int, str, str]:
    return ("answer", "www.example.com.", 60, "A", "|".join(f"10.0.0.{i}" for i in range(40)))


def test_render_reply_truncates_over_512_without_edns() -> None:
    body, offsets, ttls = cached(big_answer())
    assert len(body) > 512
    q = wire.parse_query(make_query("Www.example.com.", use_edns=False))
    out = render.render_reply(body, offsets, ttls, 0, q)
    m = dns.message.from_wire(out)
    assert m.flags & dns.flags.TC and not m.answer and m.edns < 0
    assert m.question[0].name.to_text() == "Www.example.com." and m.id == q.id
    assert len(out) == 12 + len(q.qname) + 4


def test_render_reply_truncates_with_opt_and_fits_large_edns() -> None:
    body, offsets, ttls = cached(big_answer())
    small = wire.parse_query(make_query(use_edns=0, payload=512))
    m = dns.message.from_wire(
        render.render_reply(body, offsets, ttls, 0, small, opt=render.opt_rr(1232))
    )
    assert m.flags & dns.flags.TC and m.edns == 0 and not m.answer
    large = wire.parse_query(make_query(use_edns=0, payload=4096))
    m = dns.message.from_wire(
        render.render_reply(body, offsets, ttls, 0, large, opt=render.opt_rr(1232))
    )
    assert not m.flags & dns.flags.TC and len(m.answer[0]) == 40


def test_render_reply_of_a_negative_answer() -> None:
    body, offsets, ttls = cached(*NXDOMAIN_SOA, rcode=3, name="nope.example.com.")
    q = wire.parse_query(make_query("NOPE.example.com.", use_edns=False))
    m = dns.message.from_wire(render.render_reply(body, offsets, ttls, 50, q))
    assert m.rcode() == 3 and m.authority[0].ttl == 850


# --------------------------------------------------------------------------- error_reply


def test_error_reply_echoes_id_opcode_rd_cd_and_question() -> None:
    data = make_query("Odd.Example.", "MX", txid=77, use_edns=0, flags=dns.flags.RD | dns.flags.CD)
    out = render.error_reply(data, wire.SERVFAIL)
    assert out is not None
    m = dns.message.from_wire(out)
    assert (m.id, m.rcode(), m.opcode()) == (77, 2, 0)
    assert m.flags & dns.flags.RD and m.flags & dns.flags.CD and m.flags & dns.flags.QR
    assert m.question[0].name.to_text() == "Odd.Example." and m.question[0].rdtype == 15
    q = wire.parse_query(data)
    assert render.error_reply(data, wire.SERVFAIL, query=q) == out


def test_error_reply_for_unparseable_question_and_other_opcode() -> None:
    data = header(flags=wire.RD) + b"\xc0\x0c\x00\x01\x00\x01"
    out = render.error_reply(data, wire.FORMERR)
    assert out is not None and out[4:6] == b"\x00\x00" and len(out) == 12
    m = dns.message.from_wire(out)
    assert m.rcode() == 1 and m.id == 0x1234 and m.flags & dns.flags.RD
    notify = header(flags=4 << 11, qd=0)
    out = render.error_reply(notify, wire.NOTIMP, query=wire.parse_query(notify))
    assert out is not None and dns.message.from_wire(out).opcode() == 4


def test_error_reply_never_answers_responses_or_runts() -> None:
    assert render.error_reply(b"\x00" * 11, 1) is None
    assert render.error_reply(header(flags=wire.QR), 1) is None


def test_error_reply_badvers_goes_into_the_opt() -> None:
    data = make_query(use_edns=1)
    for opt in (render.opt_rr(1232, ext_rcode=wire.BADVERS), render.opt_rr(1232), b""):
        out = render.error_reply(data, wire.BADVERS, opt=opt)
        assert out is not None
        m = dns.message.from_wire(out)
        assert m.rcode() == dns.rcode.BADVERS and m.edns == 0


def test_error_reply_with_ede() -> None:
    out = render.error_reply(
        make_query(use_edns=0),
        wire.REFUSED,
        opt=render.opt_rr(1232, ede=(20, "no network for corp.example")),
    )
    assert out is not None
    m = dns.message.from_wire(out)
    assert m.rcode() == 5
    assert m.options[0].code == 20 and m.options[0].text == "no network for corp.example"


# --------------------------------------------------------------------------- local_reply


def test_local_reply_answers_owned_by_the_question() -> None:
    q = wire.parse_query(make_query("LocalHost.", "A", txid=5, use_edns=0))
    out = render.local_reply(q, 0, [(1, 0, bytes([127, 0, 0, 1]))], opt=render.opt_rr(1232))
    m = dns.message.from_wire(out)
    assert m.id == 5 and m.flags & dns.flags.AA and m.flags & dns.flags.RD
    assert m.answer[0].name.to_text() == "LocalHost." and m.answer[0][0].to_text() == "127.0.0.1"
    assert m.edns == 0


def test_local_reply_negative_with_soa_compressed_against_the_question() -> None:
    q = wire.parse_query(make_query("x.10.in-addr.arpa.", "PTR", use_edns=False))
    zone = wire.text_to_qname("10.in-addr.arpa.")
    soa = render.soa_rdata(zone, wire.text_to_qname("nobody.invalid."), 1, 3600, 1200, 604800, 10)
    out = render.local_reply(q, wire.NXDOMAIN, authority_soa=(zone, 10, soa), aa=False)
    m = dns.message.from_wire(out)
    assert m.rcode() == 3 and not m.flags & dns.flags.AA
    assert m.authority[0].name.to_text() == "10.in-addr.arpa."
    assert m.authority[0][0].to_text() == "10.in-addr.arpa. nobody.invalid. 1 3600 1200 604800 10"
    assert len(out) < 12 + len(q.qname) + 4 + len(zone) + 10 + len(soa)  # the owner is a pointer
    assert wire.parse_response(out).soa_ttl == 10
    other = wire.text_to_qname("example.")
    out = render.local_reply(
        q, 3, authority_soa=(other, 5, render.soa_rdata(other, other, 1, 1, 1, 1, 1))
    )
    assert dns.message.from_wire(out).authority[0].name.to_text() == "example."


def test_local_reply_badvers_and_truncation() -> None:
    q = wire.parse_query(make_query(use_edns=1))
    m = dns.message.from_wire(render.local_reply(q, wire.BADVERS, opt=render.opt_rr(1232)))
    assert m.rcode() == dns.rcode.BADVERS
    q = wire.parse_query(make_query(use_edns=False))
    many = [(16, 0, b"\xff" + b"x" * 255)] * 3
    m = dns.message.from_wire(render.local_reply(q, 0, many))
    assert m.flags & dns.flags.TC and not m.answer


def test_patch_id() -> None:
    data = make_query()
    assert dns.message.from_wire(render.patch_id(data, 0xABCD)).id == 0xABCD
    with pytest.raises(WireError):
        render.patch_id(b"\x00", 1)


def test_wire_error_is_a_value_error_with_an_rcode() -> None:
    err = WireError("x", wire.NOTIMP)
    assert isinstance(err, ValueError) and err.rcode == 4 and WireError("y").rcode == 1


# --------------------------------------------------------------------------- corners


def test_query_repr_names_the_question() -> None:
    assert "'www.Example.com.'" in repr(wire.parse_query(make_query()))
    assert wire.qname_to_text(b"") == ""


def test_parse_query_other_opcode_with_cut_extra_questions() -> None:
    with pytest.raises(WireError):
        wire.parse_query(header(flags=5 << 11, qd=2) + question() + b"\x00\x00\x06")


def test_parse_query_with_records_but_no_opt() -> None:
    data = header(an=1, ar=1) + question() + rr(b"\xc0\x0c", 1, 5, A4) + rr(b"\x00", 1, 5, A4)
    q = wire.parse_query(data)
    assert (q.edns, q.udp_size, q.do, q.edns_version) == (False, 512, False, 0)
    q = wire.parse_query(header(ar=1) + question() + rr(b"\x00", 1, 5, A4))  # lone, not OPT
    assert (q.edns, q.udp_size) == (False, 512)


def test_parse_response_refuses_a_question_over_255_octets() -> None:
    with pytest.raises(WireError):
        wire.parse_response(header(flags=0x8000) + (b"\x3f" + b"a" * 63) * 5 + b"\x00" * 5)


def test_soa_minimum_with_the_top_bit_reads_as_zero() -> None:
    soa = render.soa_rdata(b"\x00", b"\x00", 1, 2, 3, 4, 0x80000000)
    data = rsp(rr(b"\x00", 6, 300, soa), ns=1)
    assert wire.parse_response(data).soa_ttl == 0


def test_make_cacheable_moves_pointers_in_an_soa_after_the_opt() -> None:
    qd = question("www.example.com.")
    opt = raw_opt()
    after = 12 + len(qd) + len(opt)
    ptr = bytes((0xC0 | after >> 8, after & 0xFF))
    data = rsp(
        opt,
        rr(b"\x04zone\x00", 2, 60, b"\x00"),
        rr(b"\x00", 6, 60, render.soa_rdata(ptr, b"\x01h" + ptr, 1, 2, 3, 4, 5)),
        ar=3,
        qd=qd,
    )
    ref = dns.message.from_wire(data)
    body, _, _ = render.make_cacheable(data, wire.parse_response(data))
    got = dns.message.from_wire(body)
    assert [r.to_text() for r in got.additional] == [r.to_text() for r in ref.additional]
    assert got.additional[1][0].mname.to_text() == "zone."


def test_local_reply_without_question_and_soa_not_on_a_label_boundary() -> None:
    notify = wire.parse_query(header(flags=4 << 11, qd=0))
    out = render.local_reply(notify, wire.NOTIMP, aa=False)
    assert dns.message.from_wire(out).rcode() == wire.NOTIMP and out[4:6] == b"\x00\x00"
    q = wire.parse_query(make_query(r"a\001b.example.", use_edns=False))
    zone = b"\x01b" + wire.text_to_qname("example.")  # a suffix of the bytes, not of the name
    soa = render.soa_rdata(zone, zone, 1, 1, 1, 1, 1)
    out = render.local_reply(q, 3, authority_soa=(zone, 5, soa))
    assert dns.message.from_wire(out).authority[0].name.to_text() == "b.example."
