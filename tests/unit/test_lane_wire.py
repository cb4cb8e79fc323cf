"""The miss lane's two C parsers against the core's, on generated and mutated messages.

``lane_parse`` (which client queries the C lane takes) must take only what ``wire.parse_query``
parses to the same name, type, flags and sizes, and that the resolver would forward (no meta
type, class IN, EDNS version 0). ``lane_answer`` (which upstream replies it answers itself)
must accept only what ``wire.parse_response`` accepts as a plain NOERROR with nothing to cache,
and build exactly the bytes the resolver renders for it. Hypothesis mutates valid messages
byte by byte, so the lie-telling counts, truncations and odd owners are covered too.
"""

from __future__ import annotations

import os

import dns.flags
import dns.message
import dns.rrset
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mifdns.core import render, wire

_udpbatch = pytest.importorskip("mifdns.aio._udpbatch", reason="the C loop is not built")
# dnspython draws message IDs with the random module inside the strategies: harmless here
pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")

EDNS_SIZE = 1232
LABEL = st.text(alphabet="abcXYZ019-_", min_size=1, max_size=12)
NAMES = st.lists(LABEL, min_size=1, max_size=4).map(lambda ls: ".".join(ls) + ".")
TYPES = st.sampled_from(["A", "AAAA", "MX", "TXT", "ANY", "AXFR", "OPT", "PTR", "HTTPS"])


@st.composite
def queries(draw: st.DrawFn) -> bytes:
    name = draw(NAMES)
    rdtype = draw(TYPES)
    use_edns = draw(st.sampled_from([False, 0, 1]))
    q = dns.message.make_query(
        name,
        rdtype,
        use_edns=use_edns,
        payload=draw(st.sampled_from([512, 600, 1232, 4096, 100])),
        want_dnssec=draw(st.booleans()) if use_edns is not False else False,
    )
    q.id = draw(st.integers(0, 0xFFFF))
    if draw(st.booleans()):
        q.flags |= dns.flags.CD
    if draw(st.booleans()):
        q.flags |= dns.flags.AD
    if not draw(st.booleans()):
        q.flags &= ~dns.flags.RD
    return bytes(q.to_wire())


def _mutate(draw: st.DrawFn, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(draw(st.integers(0, 3))):
        if not out:
            break
        i = draw(st.integers(0, len(out) - 1))
        op = draw(st.sampled_from(["set", "cut", "add"]))
        if op == "set":
            out[i] = draw(st.integers(0, 255))
        elif op == "cut":
            del out[i:]
        else:
            out[i:i] = bytes([draw(st.integers(0, 255))])
    return bytes(out)


_SLOW = [HealthCheck.too_slow]


def _examples(ci: int) -> int:
    """CI's count, or the nightly run's (scripts/fuzz sets MIFDNS_FUZZ_EXAMPLES)."""
    return int(os.environ.get("MIFDNS_FUZZ_EXAMPLES", ci))


@st.composite
def mutated_queries(draw: st.DrawFn) -> bytes:
    return _mutate(draw, draw(queries()))


@settings(max_examples=_examples(400), deadline=None, suppress_health_check=_SLOW)
@given(data=st.one_of(queries(), mutated_queries()), max_udp=st.sampled_from([65494, 1232]))
def test_the_lane_takes_only_queries_the_resolver_parses_the_same(data: bytes, max_udp: int):
    got = _udpbatch.lane_parse(data, max_udp)
    if got is None:
        return
    key, qtype, flags, edns, do, udp = got
    q = wire.parse_query(data)  # must not raise
    assert q.opcode == 0 and q.qclass == 1 and not q.edns_version
    assert qtype not in (41, 249, 250, 251, 252, 253, 254, 255)  # meta types: the resolver's
    assert (key, qtype, flags) == (q.key, q.qtype, q.flags)
    assert (bool(edns), bool(do)) == (q.edns, q.do)
    assert udp == min(q.udp_size, max_udp)


def _reply(draw: st.DrawFn, query: bytes) -> bytes:
    q = dns.message.from_wire(query)
    r = dns.message.make_response(q)
    rdtype = q.question[0].rdtype
    n = draw(st.integers(0, 70))
    if rdtype in (1, 28) and n:
        addrs = (
            [f"10.{i // 256}.{i % 256}.1" for i in range(n)]
            if rdtype == 1
            else [f"2001:db8::{i:x}" for i in range(n)]
        )
        ttl = draw(st.sampled_from([0, 0, 0, 5, 0x80000000]))
        r.answer.append(
            dns.rrset.from_text_list(
                q.question[0].name, ttl, "IN", dns.rdatatype.to_text(rdtype), addrs
            )
        )
    if draw(st.booleans()):
        r.flags |= dns.flags.AD
    if draw(st.booleans()):
        r.flags |= dns.flags.AA
    r.use_edns(draw(st.sampled_from([False, 0])), payload=draw(st.sampled_from([512, 1232, 4096])))
    data = bytes(r.to_wire(max_size=65535))
    return _mutate(draw, data) if draw(st.booleans()) else data


@st.composite
def exchanges(draw: st.DrawFn) -> tuple[bytes, bytes]:
    query = draw(queries())
    return query, _reply(draw, query)


def _resolver_renders(query: bytes, reply: bytes, flags: int, max_udp: int) -> bytes | None:
    """What the resolver sends the client for this reply, if it would take it as plain."""
    try:
        info = wire.parse_response(reply)
    except wire.WireError:
        return None
    q = wire.parse_query(query)
    q.udp_size = min(q.udp_size, max_udp)
    body, offsets, ttls = render.make_cacheable(reply, info)
    if body[3] & 0x20 and not flags & 1:  # completion.store_response: AD only from trust_ad
        body = body[:3] + bytes((body[3] & ~0x20,)) + body[4:]
    opt = render.opt_rr(EDNS_SIZE, do=q.do) if q.edns else b""
    return render.render_reply(body, offsets, ttls, 0, q, opt=opt, clear_ad=not (q.ad or q.do))


@settings(max_examples=_examples(600), deadline=None, suppress_health_check=_SLOW)
@given(ex=exchanges(), trust_ad=st.booleans(), max_udp=st.sampled_from([65494, 1232]))
@example(
    ex=(
        bytes.fromhex("12340100000100000000000001610000010001"),
        bytes.fromhex("12348180000100010000000001610000010001c00c000100010000000000040a000001"),
    ),
    trust_ad=False,
    max_udp=65494,
)
def test_the_lanes_answer_is_the_resolvers_byte_for_byte(
    ex: tuple[bytes, bytes], trust_ad: bool, max_udp: int
):
    query, reply = ex
    reply = query[:2] + reply[2:] if len(reply) >= 2 else reply  # the ID matched already
    got = _udpbatch.lane_answer(query, reply, EDNS_SIZE, 1 if trust_ad else 0, max_udp)
    if got is None:
        return
    info = wire.parse_response(reply)  # accepted by the lane: the core accepts it too
    assert info.rcode == wire.NOERROR and not info.tc and info.ancount
    assert all(t == 0 for t in info.ttls)  # nothing to cache
    assert got == _resolver_renders(query, reply, 1 if trust_ad else 0, max_udp)


def _exchange(name: str, ttl: int, **kw: object) -> tuple[bytes, bytes]:
    q = dns.message.make_query(name, "A", use_edns=0)
    q.id = 7
    r = dns.message.make_response(q)
    r.answer.append(dns.rrset.from_text(name, ttl, "IN", "A", "192.0.2.1"))
    for k, v in kw.items():
        setattr(r, k, v)
    return bytes(q.to_wire()), bytes(r.to_wire())


def test_plain_and_not_plain_replies() -> None:
    """The accepting side is reached (so the property above is not vacuous), and each
    thing the lane must leave to the resolver is left to it."""
    query, reply = _exchange("Www.Example.", 0)
    got = _udpbatch.lane_answer(query, reply, EDNS_SIZE, 0, 65494)
    assert got is not None and got == _resolver_renders(query, reply, 0, 65494)
    assert dns.message.from_wire(got).question[0].name.to_text() == "Www.Example."
    for why, (q2, r2) in {
        "a TTL to cache": _exchange("www.example.", 300),
        "NXDOMAIN": _exchange("www.example.", 0, flags=dns.flags.QR | dns.flags.RD | 3),
        "TC": _exchange("www.example.", 0, flags=dns.flags.QR | dns.flags.TC),
    }.items():
        assert _udpbatch.lane_answer(q2, r2, EDNS_SIZE, 0, 65494) is None, why
    cname = dns.message.make_response(dns.message.from_wire(query))
    cname.answer.append(dns.rrset.from_text("Www.Example.", 0, "IN", "CNAME", "x.example."))
    assert _udpbatch.lane_answer(query, cname.to_wire(), EDNS_SIZE, 0, 65494) is None
