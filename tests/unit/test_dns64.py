"""DNS64 / NAT64 per PvD: RFC 6052 helpers, RFC 7050 discovery, RFC 6147 local synthesis and
PTR, the synthesized mark and the tie preference, ipv4only.arpa (RFC 8880) -- all in memory."""

from __future__ import annotations

import ipaddress

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from mifdns.core import dns64, wire
from mifdns.core.dns64 import Net6
from mifdns.core.pvd import Dns64Spec
from mifdns.core.resolver import Settings

from .coredriver import Driver, answers, spec

V6 = ipaddress.IPv6Address
V4 = ipaddress.IPv4Address


# ------------------------------------------------------------------------------ RFC 6052
# RFC 6052 section 2.4, the table of examples: 192.0.2.33 under each prefix length
RFC6052_EXAMPLES = [
    ("2001:db8::/32", "2001:db8:c000:221::"),
    ("2001:db8:100::/40", "2001:db8:1c0:2:21::"),
    ("2001:db8:122::/48", "2001:db8:122:c000:2:2100::"),
    ("2001:db8:122:300::/56", "2001:db8:122:3c0:0:221::"),
    ("2001:db8:122:344::/64", "2001:db8:122:344:c0:2:2100:0"),
    ("2001:db8:122:344::/96", "2001:db8:122:344::c000:221"),
    ("64:ff9b::/96", "64:ff9b::c000:221"),
]


@pytest.mark.parametrize("prefix,expected", RFC6052_EXAMPLES)
def test_embed_and_extract_follow_the_rfc6052_examples(prefix, expected):
    net = Net6(prefix)
    assert dns64.embed(net, "192.0.2.33") == V6(expected)
    assert dns64.extract(V6(expected), net.prefixlen) == V4("192.0.2.33")
    assert dns64.extract_from(V6(expected), [Net6("2001:db8:ffff::/48"), net]) == V4("192.0.2.33")


def test_extract_from_an_address_outside_the_prefixes_is_none():
    assert dns64.extract_from(V6("2001:db8::1"), [dns64.WELL_KNOWN_PREFIX]) is None


@pytest.mark.parametrize("bad", ["2001:db8::/33", "2001:db8::/80", "2001:db8:0:0:ff00::/96"])
def test_check_prefix_refuses_lengths_and_u_octets_rfc6052_does_not_allow(bad):
    with pytest.raises(ValueError):
        dns64.check_prefix(Net6(bad))


def test_excluded_range_is_ipv4_mapped_by_default():
    assert dns64.is_excluded(V6("::ffff:192.0.2.1"))
    assert not dns64.is_excluded(V6("2001:db8::1"))


# ------------------------------------------------------------------------------ RFC 7050
@pytest.mark.parametrize("prefix,_", RFC6052_EXAMPLES)
def test_discovery_finds_the_prefix_at_every_rfc6052_length(prefix, _):
    net = Net6(prefix)
    addrs = [dns64.embed(net, "192.0.0.170"), dns64.embed(net, "192.0.0.171")]
    assert dns64.prefixes_from_addresses(addrs) == (net,)


def test_discovery_returns_every_prefix_in_answer_order():
    a, b = Net6("64:ff9b::/96"), Net6("2001:db8:64::/48")
    addrs = [
        dns64.embed(a, "192.0.0.170"),
        dns64.embed(b, "192.0.0.170"),
        dns64.embed(a, "192.0.0.171"),
        dns64.embed(b, "192.0.0.171"),
    ]
    assert dns64.prefixes_from_addresses(addrs) == (a, b)


def test_discovery_ignores_addresses_without_a_well_known_address():
    assert dns64.prefixes_from_addresses([V6("2001:db8::1"), V6("64:ff9b::c000:201")]) == ()


def test_ambiguous_position_is_settled_by_the_secondary_well_known_address():
    # a /64 prefix whose own bits 32..63 spell 192.0.0.170: 170 appears at /32 and at /64;
    # only at /64 does the other answer hold 171 under the same prefix bits
    net = Net6("2001:db8:c000:aa::/64")
    addrs = [dns64.embed(net, "192.0.0.170"), dns64.embed(net, "192.0.0.171")]
    assert dns64.extract(addrs[0], 32) == V4("192.0.0.170")  # the trap is real
    assert dns64.prefixes_from_addresses(addrs) == (net,)


def _response(
    qname: str,
    rdtype: str,
    rrs: list[tuple[str, int, str, list[str]]] = (),
    rcode: int = 0,
    soa: tuple[int, int] | None = None,
) -> tuple[bytes, wire.ResponseInfo]:
    q = dns.message.make_query(qname, rdtype)
    r = dns.message.make_response(q)
    r.set_rcode(rcode)
    for owner, ttl, t, values in rrs:
        r.answer.append(dns.rrset.from_text_list(owner, ttl, "IN", t, values))
    if soa is not None:
        r.authority.append(
            dns.rrset.from_text(
                "example.", soa[0], "IN", "SOA", f"ns.example. h.example. 1 2 3 4 {soa[1]}"
            )
        )
    data = r.to_wire()
    return data, wire.parse_response(data)


def test_discover_reads_an_answer_and_refreshes_when_its_ttl_runs_out():
    data, info = _response(
        "ipv4only.arpa.",
        "AAAA",
        [("ipv4only.arpa.", 120, "AAAA", ["64:ff9b::c000:aa", "64:ff9b::c000:ab"])],
    )
    d = dns64.discover("answer", data, info, now=1000.0)
    assert d.prefixes == (Net6("64:ff9b::/96"),)
    assert d.next_at == 1120.0


def test_discover_nodata_means_no_dns64_and_failure_keeps_what_is_known():
    data, info = _response("ipv4only.arpa.", "AAAA", soa=(3600, 300))
    assert dns64.discover("nodata", data, info, now=0.0).prefixes == ()
    failed = [dns64.discover("timeout", None, None, now=0.0, failures=n) for n in range(8)]
    assert all(d.prefixes is None for d in failed)
    delays = [d.next_at for d in failed]
    assert delays == sorted(delays) and delays[0] >= 1 and delays[-1] <= 300


def test_discover_with_ttl_zero_does_not_storm():
    data, info = _response(
        "ipv4only.arpa.", "AAAA", [("ipv4only.arpa.", 0, "AAAA", ["64:ff9b::c000:aa"])]
    )
    assert dns64.discover("answer", data, info, now=0.0).next_at >= dns64.MIN_REFRESH


# ------------------------------------------------------------------------------ reverse names
def test_ptr_target_maps_an_ip6_arpa_name_under_the_prefix_to_in_addr_arpa():
    name = wire.text_to_qname(V6("64:ff9b::c000:221").reverse_pointer)
    assert dns64.ptr_target(name, [dns64.WELL_KNOWN_PREFIX]) == wire.text_to_qname(
        "33.2.0.192.in-addr.arpa."
    )
    assert dns64.ptr_target(name, [Net6("2001:db8::/96")]) is None
    short = wire.text_to_qname("b.9.f.f.4.6.0.0.ip6.arpa.")
    assert dns64.ptr_target(short, [dns64.WELL_KNOWN_PREFIX]) is None


def test_reverse_to_address_refuses_names_that_are_not_32_nibbles():
    assert dns64.reverse_to_address(wire.text_to_qname("x." * 32 + "ip6.arpa.")) is None
    assert dns64.reverse_to_address(wire.text_to_qname("1.2.0.192.in-addr.arpa.")) is None


# ------------------------------------------------------------------------------ builders
def test_synthesized_answer_keeps_the_cname_chain_and_caps_the_ttl():
    data, info = _response(
        "www.example.",
        "A",
        [
            ("www.example.", 300, "CNAME", ["v4.example."]),
            ("v4.example.", 900, "A", ["192.0.2.1", "192.0.2.2"]),
        ],
    )
    out = dns64.synthesize_aaaa_response(
        wire.text_to_qname("www.example."), 1, data, info, dns64.WELL_KNOWN_PREFIX, negative_ttl=60
    )
    msg = dns.message.from_wire(out)
    assert msg.question[0].rdtype == dns.rdatatype.AAAA
    cname, aaaa = msg.answer
    assert cname.rdtype == dns.rdatatype.CNAME and cname.ttl == 300
    assert sorted(rd.to_text() for rd in aaaa) == ["64:ff9b::c000:201", "64:ff9b::c000:202"]
    assert aaaa.ttl == 60
    no_a, no_a_info = _response(
        "www.example.", "A", [("www.example.", 300, "CNAME", ["v4.example."])]
    )
    assert (
        dns64.synthesize_aaaa_response(
            wire.text_to_qname("www.example."), 1, no_a, no_a_info, dns64.WELL_KNOWN_PREFIX, 60
        )
        is None
    )


def test_no_soa_caps_the_synthesized_ttl_at_600_seconds():
    data, info = _response("v4.example.", "A", [("v4.example.", 7200, "A", ["192.0.2.1"])])
    out = dns64.synthesize_aaaa_response(
        wire.text_to_qname("v4.example."), 1, data, info, dns64.WELL_KNOWN_PREFIX, None
    )
    assert dns.message.from_wire(out).answer[0].ttl == 600


def test_filter_excluded_drops_mapped_addresses():
    data, info = _response(
        "m.example.", "AAAA", [("m.example.", 60, "AAAA", ["::ffff:192.0.2.1", "2001:db8::1"])]
    )
    out = dns64.filter_excluded(data, info)
    assert [rd.to_text() for rd in dns.message.from_wire(out).answer[0]] == ["2001:db8::1"]
    native, ninfo = _response("n.example.", "AAAA", [("n.example.", 60, "AAAA", ["2001:db8::1"])])
    assert dns64.filter_excluded(native, ninfo) is None


def test_ptr_response_is_a_cname_to_the_in_addr_name_then_its_records():
    target = wire.text_to_qname("1.2.0.192.in-addr.arpa.")
    data, info = _response(
        "1.2.0.192.in-addr.arpa.", "PTR", [("1.2.0.192.in-addr.arpa.", 300, "PTR", ["v4.example."])]
    )
    qname = wire.text_to_qname(V6("64:ff9b::c000:201").reverse_pointer)
    msg = dns.message.from_wire(dns64.synthesize_ptr_response(qname, 1, target, data, info))
    assert [(r.rdtype, r[0].to_text()) for r in msg.answer] == [
        (dns.rdatatype.CNAME, "1.2.0.192.in-addr.arpa."),
        (dns.rdatatype.PTR, "v4.example."),
    ]


# ------------------------------------------------------------------------------ the resolver
PREFIX = "64:ff9b::/96"


def synth_driver(**kw) -> Driver:
    d = Driver([spec("cell", "wwan0", dns64=Dns64Spec(PREFIX, synthesize=True), **kw)])
    d.apply(d.registry.set_nat64("cell", (Net6(PREFIX),)))
    d.worlds["cell"].records = {
        "v4.example": {"A": ["192.0.2.1"]},
        "dual.example": {"A": ["192.0.2.2"], "AAAA": ["2001:db8::2"]},
        "mapped.example": {"A": ["192.0.2.3"], "AAAA": ["::ffff:192.0.2.3"]},
        "1.2.0.192.in-addr.arpa": {"PTR": ["v4.example."]},
    }
    return d


def kinds(d: Driver, pvd: str | None = None) -> dict[tuple[str, str], str]:
    return {(r["name"], r["type"]): r["kind"] for r in d.cache(pvd)}


def test_local_synthesis_on_nodata_asks_a_through_the_same_pvd():
    d = synth_driver()
    r = d.query("v4.example", "AAAA")
    assert answers(r) == ["64:ff9b::c000:201"]
    assert d.worlds["cell"].seen == [("v4.example.", "AAAA"), ("v4.example.", "A")]
    assert kinds(d)[("v4.example.", "AAAA")] == "synthesized"
    assert kinds(d)[("v4.example.", "A")] == "positive"
    # TTL = min(A TTL 300, the NODATA's SOA minimum 60)
    assert r.answer[0].ttl == 60
    assert answers(d.query("v4.example", "AAAA")) == ["64:ff9b::c000:201"]  # from the cache
    assert len(d.worlds["cell"].seen) == 2


def test_native_aaaa_is_not_synthesized_and_excluded_aaaa_count_as_absent():
    d = synth_driver()
    assert answers(d.query("dual.example", "AAAA")) == ["2001:db8::2"]
    assert kinds(d)[("dual.example.", "AAAA")] == "positive"
    assert answers(d.query("mapped.example", "AAAA")) == ["64:ff9b::c000:203"]
    assert kinds(d)[("mapped.example.", "AAAA")] == "synthesized"


def test_nxdomain_is_never_synthesized():
    d = synth_driver()
    r = d.query("nowhere.example", "AAAA")
    assert r.rcode() == dns.rcode.NXDOMAIN
    assert d.worlds["cell"].seen == [("nowhere.example.", "AAAA")]


def test_nodata_for_both_types_stays_nodata():
    d = synth_driver()
    d.worlds["cell"].records["txt.example"] = {"TXT": ['"x"']}
    r = d.query("txt.example", "AAAA")
    assert r.rcode() == dns.rcode.NOERROR and not r.answer
    assert kinds(d)[("txt.example.", "AAAA")] == "nodata"


def test_a_already_cached_synthesizes_without_asking():
    d = synth_driver()
    d.query("v4.example", "A")
    d.worlds["cell"].seen.clear()
    assert answers(d.query("v4.example", "AAAA")) == ["64:ff9b::c000:201"]
    assert d.worlds["cell"].seen == [("v4.example.", "AAAA")]


def test_concurrent_identical_aaaa_questions_share_one_synthesis():
    d = synth_driver()
    q = dns.message.make_query("v4.example", "AAAA")
    for client in ("c1", "c2", "c3"):
        assert d.resolver.handle_query(q.to_wire(), client, d.now) is None
    d.pump()
    assert sorted(c for c, _ in d.replies) == ["c1", "c2", "c3"]
    assert d.worlds["cell"].seen.count(("v4.example.", "A")) == 1


def test_ptr_under_the_prefix_is_answered_from_the_embedded_ipv4_name():
    d = synth_driver()
    name = V6("64:ff9b::c000:201").reverse_pointer
    r = d.query(name, "PTR")
    assert [rd.to_text() for rrset in r.answer for rd in rrset] == [
        "1.2.0.192.in-addr.arpa.",
        "v4.example.",
    ]
    assert d.worlds["cell"].seen == [("1.2.0.192.in-addr.arpa.", "PTR")]
    assert kinds(d)[(name + ".", "PTR")] == "synthesized"
    assert d.resolver.explain(name, dns.rdatatype.PTR)["candidates"][0]["pvd"] == "cell"


def test_synthesized_entries_go_with_the_partition():
    d = synth_driver()
    d.query("v4.example", "AAAA")
    d.apply(d.registry.admin_detach("cell"))
    assert d.cache() == []


def test_prefix_change_purges_the_partition():
    d = synth_driver()
    d.query("v4.example", "AAAA")
    recs = d.apply(d.registry.set_nat64("cell", (Net6("2001:db8:64::/96"),)))
    assert any(r.get("purged") for r in recs)
    assert answers(d.query("v4.example", "AAAA")) == ["2001:db8:64::c000:201"]


def test_forgetting_the_prefix_of_a_detached_pvd_purges_nothing_more():
    """The detach purged the partition; clearing the prefix afterwards (the prober does, so a
    next network is probed afresh) must not log a second, empty purge."""
    d = synth_driver()
    d.query("v4.example", "AAAA")
    d.apply(d.registry.admin_detach("cell"))
    tag = d.registry.get("cell").tag
    recs = d.apply(d.registry.set_nat64("cell", ()))
    assert not any("purged" in r for r in recs) and d.registry.get("cell").tag == tag


# -- marking and ties
def two_defaults() -> Driver:
    d = Driver(
        [
            spec("cell", "wwan0", dns64=Dns64Spec("auto")),
            spec("wifi", "wlan0", servers=["198.51.100.53"]),
        ]
    )
    d.apply(d.registry.set_nat64("cell", (Net6(PREFIX),)))
    d.worlds["cell"].records = {
        "both.example": {"AAAA": ["64:ff9b::c000:201"]},
        "v4.example": {"AAAA": ["64:ff9b::c000:202"]},
    }
    d.worlds["wifi"].records = {
        "both.example": {"AAAA": ["2001:db8::1"]},
        "v4.example": {"A": ["192.0.2.2"]},
    }
    return d


def test_answer_inside_the_pvds_prefix_is_marked_synthesized():
    d = two_defaults()
    d.query("v4.example", "AAAA")
    assert kinds(d, "cell")[("v4.example.", "AAAA")] == "synthesized"
    assert kinds(d, "wifi")[("v4.example.", "AAAA")] == "nodata"


def test_native_aaaa_from_another_pvd_beats_a_synthesized_one_that_came_first():
    d = two_defaults()
    # cell is asked (and answers) first: its synthesized AAAA must wait for wifi's native one
    assert answers(d.query("both.example", "AAAA")) == ["2001:db8::1"]
    # both are cached now, each in its partition; the native one still wins from the cache
    assert answers(d.query("both.example", "AAAA")) == ["2001:db8::1"]


def test_synthesized_aaaa_wins_over_a_negative_and_waits_only_so_long():
    d = two_defaults()
    assert answers(d.query("v4.example", "AAAA")) == ["64:ff9b::c000:202"]
    d2 = two_defaults()
    d2.worlds["wifi"].mode = "drop"
    start = d2.now
    assert answers(d2.query("v4.example", "AAAA")) == ["64:ff9b::c000:202"]
    assert d2.reply_at["c1"] - start == pytest.approx(Settings().negative_wait)


def test_a_synthesized_aaaa_cached_before_the_prefix_was_discovered_is_not_kept_as_native():
    """The network's DNS64 answers before discovery finishes (right after an attach, or while
    discovery backs off): stored then, its AAAA looked native. Finding the first prefix
    must not leave it so: it would beat a tied PvD's native AAAA from the cache."""
    d = two_defaults()
    d.apply(d.registry.set_nat64("cell", ()))  # not discovered yet
    d.worlds["wifi"].mode = "drop"  # only cell answers now
    assert answers(d.query("both.example", "AAAA")) == ["64:ff9b::c000:201"]
    assert kinds(d, "cell")[("both.example.", "AAAA")] == "positive"
    recs = d.apply(d.registry.set_nat64("cell", (Net6(PREFIX),)))
    assert any(r.get("purged") for r in recs)
    d.worlds["wifi"].mode = "answer"
    assert answers(d.query("both.example", "AAAA")) == ["2001:db8::1"]
    assert kinds(d, "cell")[("both.example.", "AAAA")] == "synthesized"


# -- ipv4only.arpa (RFC 8880)
def test_ipv4only_a_is_local_and_aaaa_goes_only_to_pvds_with_dns64():
    d = two_defaults()
    d.worlds["cell"].records["ipv4only.arpa"] = {"AAAA": ["64:ff9b::c000:aa", "64:ff9b::c000:ab"]}
    assert answers(d.query("ipv4only.arpa", "A")) == ["192.0.0.170", "192.0.0.171"]
    assert answers(d.query("ipv4only.arpa", "AAAA")) == ["64:ff9b::c000:aa", "64:ff9b::c000:ab"]
    assert d.worlds["wifi"].seen == []
    assert [c["pvd"] for c in d.resolver.explain("ipv4only.arpa", 28)["candidates"]] == ["cell"]


def test_ipv4only_aaaa_without_any_dns64_is_nodata_locally():
    d = Driver([spec("wifi", "wlan0")])
    r = d.query("ipv4only.arpa", "AAAA")
    assert r.rcode() == dns.rcode.NOERROR and not r.answer
    assert d.worlds["wifi"].seen == []


# -- probes
def test_probe_asks_one_pvd_and_comes_back_as_a_result_not_cached():
    d = two_defaults()
    d.worlds["cell"].records["ipv4only.arpa"] = {"AAAA": ["64:ff9b::c000:aa"]}
    token = d.resolver.probe("cell", dns64.IPV4ONLY, wire.AAAA, d.now)
    d.pump()
    (res,) = d.resolver.probe_results
    assert res.token == token and res.outcome == "answer" and res.pvd == "cell"
    assert res.addresses() == ["64:ff9b::c000:aa"]
    d2 = dns64.discover(res.outcome, res.response, res.info, d.now)
    assert d2.prefixes == (Net6(PREFIX),)
    assert d.cache() == [] and d.worlds["wifi"].seen == []


def test_probe_in_flight_is_cancelled_by_a_detach():
    d = two_defaults()
    d.worlds["cell"].mode = "drop"
    d.resolver.probe("cell", "x.example", wire.A, d.now)
    d.resolver.outbox.clear()
    d.apply(d.registry.admin_detach("cell"))
    assert [r.outcome for r in d.resolver.probe_results] == ["cancelled"]
    assert d.resolver._probes == {}
