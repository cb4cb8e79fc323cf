"""The resolver core end to end in memory: routing, partitioned cache, ties, purge."""

from dataclasses import replace

import dns.edns
import dns.flags
import dns.message
import dns.rcode

from mifdns.core.memo import AGING_HORIZON
from mifdns.core.pvd import CaptiveState, Domain
from mifdns.core.resolver import Settings

from .coredriver import Driver, answers, spec


def vpn_and_wifi(**vpn_kw):
    d = Driver(
        [
            spec("wifi", "wlan0", domains=["home.example"]),
            spec(
                "corp",
                "tun0",
                servers=["198.51.100.53"],
                domains=["~corp.example"],
                networks=(__import__("ipaddress").ip_network("10.8.0.0/16"),),
                **vpn_kw,
            ),
        ]
    )
    d.worlds["wifi"].records = {
        "www.example.com": {"A": ["203.0.113.80"]},
        "intranet.corp.example": {"A": ["203.0.113.66"]},  # the public horizon
    }
    d.worlds["corp"].records = {
        "intranet.corp.example": {"A": ["10.8.0.5"]},
        "5.0.8.10.in-addr.arpa": {"PTR": ["intranet.corp.example."]},
    }
    return d


def test_private_name_goes_only_to_its_pvd():
    d = vpn_and_wifi()
    r = d.query("intranet.corp.example")
    assert answers(r) == ["10.8.0.5"]
    assert d.worlds["corp"].seen == [("intranet.corp.example.", "A")]
    assert d.worlds["wifi"].seen == []


def test_public_name_goes_to_default_route_not_to_routing_only_vpn():
    d = vpn_and_wifi()
    assert answers(d.query("www.example.com")) == ["203.0.113.80"]
    assert d.worlds["corp"].seen == []


def test_reverse_name_inside_network_routes_to_that_pvd():
    d = vpn_and_wifi()
    r = d.query("5.0.8.10.in-addr.arpa", "PTR")
    assert answers(r) == ["intranet.corp.example."]
    assert d.worlds["wifi"].seen == []


def test_unclaimed_private_reverse_zone_is_answered_locally():
    d = vpn_and_wifi()
    r = d.query("1.1.168.192.in-addr.arpa", "PTR")
    assert r.rcode() == dns.rcode.NXDOMAIN
    assert d.worlds["wifi"].seen == [] and d.worlds["corp"].seen == []


def test_localhost_and_invalid_are_never_forwarded():
    d = vpn_and_wifi()
    assert answers(d.query("localhost")) == ["127.0.0.1"]
    assert answers(d.query("foo.localhost", "AAAA")) == ["::1"]
    assert d.query("x.invalid").rcode() == dns.rcode.NXDOMAIN
    assert d.worlds["wifi"].seen == []


def test_detach_purges_only_that_partition():
    d = vpn_and_wifi()
    d.query("intranet.corp.example")
    d.query("www.example.com")
    assert {r["pvd"] for r in d.cache()} == {"wifi", "corp"}
    recs = d.apply(d.registry.admin_detach("corp"))
    assert recs[0]["purged"] == 1
    assert [r["pvd"] for r in d.cache()] == ["wifi"]


def test_answer_is_never_served_across_pvds_after_detach():
    d = vpn_and_wifi()
    assert answers(d.query("intranet.corp.example")) == ["10.8.0.5"]
    d.apply(d.registry.admin_detach("corp"))
    # corp is routing-only and not exclusive: the name now falls to the default route
    assert answers(d.query("intranet.corp.example")) == ["203.0.113.66"]
    assert d.worlds["wifi"].seen == [("intranet.corp.example.", "A")]


def test_exclusive_domain_is_refused_while_its_pvd_is_detached():
    d = vpn_and_wifi(exclusive=True)
    d.apply(d.registry.admin_detach("corp"))
    r = d.query("intranet.corp.example")
    assert r.rcode() == dns.rcode.SERVFAIL
    assert d.worlds["wifi"].seen == []
    ede = [o for o in r.options if o.otype == 15]
    assert ede and "exclusive" in ede[0].text


def test_cache_hit_ages_ttl_and_does_not_ask_again():
    d = vpn_and_wifi()
    d.query("www.example.com")
    d.now += 100
    r = d.query("www.example.com")
    assert r.answer[0].ttl == 200
    assert len(d.worlds["wifi"].seen) == 1


def test_nxdomain_covers_every_type_in_its_partition_only():
    d = Driver([spec("a", "eth0", default_route=True), spec("b", "eth1", domains=["~b.example"])])
    assert d.query("nope.example.org").rcode() == dns.rcode.NXDOMAIN
    r = d.query("nope.example.org", "AAAA")
    assert r.rcode() == dns.rcode.NXDOMAIN
    assert r.question[0].rdtype == 28
    assert len(d.worlds["a"].seen) == 1


def test_negative_ttl_is_soa_minimum_capped():
    d = Driver([spec("a", "eth0")], Settings(negative_max_ttl=30))
    d.worlds["a"].soa_min = 600
    d.query("missing.example")
    [row] = d.cache()
    assert row["kind"] == "nxdomain" and row["ttl"] == 30


def test_fast_nxdomain_does_not_hide_positive_from_tied_pvd():
    d = Driver(
        [
            spec("a", "eth0", domains=["~shared.example"]),
            spec("b", "eth1", servers=["198.51.100.53"], domains=["~shared.example"]),
        ]
    )
    d.worlds["b"].records = {"h.shared.example": {"A": ["198.51.100.7"]}}
    r = d.query("h.shared.example")
    assert answers(r) == ["198.51.100.7"]
    kinds = {row["pvd"]: row["kind"] for row in d.cache()}
    assert kinds == {"a": "nxdomain", "b": "positive"}
    # and from the cache: the positive still wins over the cached negative
    assert answers(d.query("h.shared.example")) == ["198.51.100.7"]


def test_negative_waits_bounded_for_a_silent_tied_pvd():
    d = Driver(
        [
            spec("a", "eth0", domains=["~s.example"]),
            spec("b", "eth1", servers=["198.51.100.53"], domains=["~s.example"]),
        ],
        Settings(negative_wait=0.5),
    )
    d.worlds["b"].mode = "drop"
    start = d.now
    r = d.query("x.s.example")
    assert r.rcode() == dns.rcode.NXDOMAIN
    assert d.reply_at["c1"] - start <= 0.5 + 1e-9


def test_all_servers_failing_gives_servfail_within_budget():
    d = Driver(
        [spec("a", "eth0", servers=["192.0.2.53", "192.0.2.54"])],
        Settings(timeout=0.5, total_timeout=2.0),
    )
    d.worlds["a"].mode = "drop"
    start = d.now
    r = d.query("www.example.com")
    assert r.rcode() == dns.rcode.SERVFAIL
    assert d.reply_at["c1"] - start <= 2.0 + 1e-9
    servers = {str(s.server) for s in d.dropped}
    assert servers == {"192.0.2.53", "192.0.2.54"}


def _ede(msg: dns.message.Message) -> list[tuple[int, str]]:
    return [(o.code, o.text) for o in msg.options if o.otype == dns.edns.EDE]


def test_servers_that_all_refuse_give_the_client_refused_with_their_reasons():
    d = Driver([spec("a", "eth0", servers=["192.0.2.53", "192.0.2.54"])])
    d.worlds["a"].mode = "refused"
    r = d.query("www.example.com")
    assert r.rcode() == dns.rcode.REFUSED
    [(code, text)] = _ede(r)
    assert code == 22  # No Reachable Authority: "or they potentially refused to reply"
    assert "192.0.2.53: REFUSED" in text and "192.0.2.54: REFUSED" in text
    assert len(d.worlds["a"].seen) == 2  # each server once: refusing again now is no news
    assert d.resolver.counters["upstream_refused"] == 1
    assert d.resolver.counters["servfail"] == d.resolver.counters["refused"] == 0


def test_a_refusal_and_a_failure_elsewhere_is_still_servfail():
    d = Driver(
        [
            spec("a", "eth0", servers=["192.0.2.53"], default_route=True),
            spec("b", "eth1", servers=["198.51.100.53"], default_route=True),
        ]
    )
    d.worlds["a"].mode = "refused"
    d.worlds["b"].mode = "servfail"
    r = d.query("www.example.com")
    assert r.rcode() == dns.rcode.SERVFAIL
    [(code, text)] = _ede(r)
    # 22 (No Reachable Authority), not 23 (Network Error): both servers answered
    assert code == 22 and "a: refused" in text and "b: failed" in text and "SERVFAIL" in text


def test_an_upstreams_own_extended_error_is_passed_on_with_its_servfail():
    d = Driver([spec("a", "eth0", servers=["192.0.2.53"])])
    d.worlds["a"].mode = "servfail"
    d.worlds["a"].ede = (6, "signature expired")  # DNSSEC Bogus, as a validating resolver says
    r = d.query("www.example.com")
    assert r.rcode() == dns.rcode.SERVFAIL
    [(code, text)] = _ede(r)
    assert code == 6 and "192.0.2.53: SERVFAIL (EDE 6: signature expired)" in text


def test_servers_that_cannot_be_reached_give_network_error():
    d = Driver(
        [spec("a", "eth0", servers=["192.0.2.53"])], Settings(timeout=0.5, total_timeout=1.0)
    )
    d.worlds["a"].mode = "drop"
    [(code, _)] = _ede(d.query("www.example.com"))
    assert code == 23


def test_one_pvd_refusing_does_not_hide_another_pvds_answer():
    d = Driver(
        [
            spec("a", "eth0", servers=["192.0.2.53"], default_route=True),
            spec("b", "eth1", servers=["198.51.100.53"], default_route=True),
        ]
    )
    d.worlds["a"].mode = "refused"
    d.worlds["b"].records = {"www.example.com": {"A": ["203.0.113.7"]}}
    assert answers(d.query("www.example.com")) == ["203.0.113.7"]


def test_truncated_upstream_answer_is_fetched_over_tcp():
    d = vpn_and_wifi()
    d.worlds["wifi"].mode = "truncate"
    r = d.query("www.example.com")
    assert answers(r) == ["203.0.113.80"]


def test_identical_questions_are_coalesced():
    d = vpn_and_wifi()
    d.query("www.example.com", client="c1", pump=False)
    d.query("www.example.com", client="c2", pump=False)
    d.pump()
    assert len(d.worlds["wifi"].seen) == 1
    assert sorted(c for c, _ in d.replies) == ["c1", "c2"]


def test_reply_with_wrong_id_or_source_is_ignored():
    d = vpn_and_wifi()
    import dns.message

    q = dns.message.make_query("www.example.com", "A")
    d.resolver.handle_query(q.to_wire(), "c", d.now)
    [send] = d.resolver.outbox
    good = d.worlds["wifi"].respond(send.wire, False)
    spoof = bytes([good[0] ^ 1]) + good[1:]
    d.resolver.handle_reply(send.txn, spoof, send.server.sockaddr(), False, d.now)
    d.resolver.handle_reply(send.txn, good, ("203.0.113.1", 53), False, d.now)
    assert not send.txn.done
    d.resolver.handle_reply(send.txn, good, send.server.sockaddr(), False, d.now)
    assert send.txn.done


def test_captive_pvd_is_skipped_for_default_names_while_another_default_exists():
    d = Driver([spec("hotel", "wlan0"), spec("lte", "wwan0", servers=["198.51.100.53"])])
    d.apply(d.registry.set_captive("hotel", CaptiveState.CAPTIVE))
    d.worlds["lte"].records = {"www.example.com": {"A": ["203.0.113.80"]}}
    assert answers(d.query("www.example.com")) == ["203.0.113.80"]
    assert d.worlds["hotel"].seen == []


def _reply_to(d, client):
    return next(dns.message.from_wire(data) for c, data in d.replies if c == client)


def test_purge_drops_the_answer_in_flight_and_asks_again_under_the_new_tag():
    d = vpn_and_wifi()
    d.query("www.example.com", client="c1", pump=False)
    d.query("www.example.com", client="c2", pump=False)  # coalesced on the same transaction
    recs = d.apply(d.registry.purge("wifi", cause="test"))
    assert recs[0]["cancelled"] == 1 and recs[0]["reasked"] == 2
    d.pump()
    # both clients get the answer of the question asked again, not SERVFAIL
    assert answers(_reply_to(d, "c1")) == answers(_reply_to(d, "c2")) == ["203.0.113.80"]
    assert d.worlds["wifi"].seen == [("www.example.com.", "A")] * 2
    assert len(d.cache("wifi")) == 1  # stored once: the old transaction's answer was dropped


def test_changed_pvd_whose_domains_no_longer_claim_the_name_fails_the_question():
    d = vpn_and_wifi()
    d.query("intranet.corp.example", client="c1", pump=False)
    corp = d.registry.get("corp").spec
    d.apply(d.registry.upsert(replace(corp, domains=(Domain("other.example", True),)), now=d.now))
    d.pump()
    r = _reply_to(d, "c1")
    assert r.rcode() == dns.rcode.SERVFAIL  # the client asks again and is routed anew
    assert d.worlds["corp"].seen == [("intranet.corp.example.", "A")]


def test_detach_fails_the_questions_in_flight():
    d = vpn_and_wifi()
    d.query("intranet.corp.example", client="c1", pump=False)
    d.apply(d.registry.admin_detach("corp"))
    d.pump()
    assert _reply_to(d, "c1").rcode() == dns.rcode.SERVFAIL
    assert d.cache("corp") == []


def test_max_entries_evicts_least_recently_used():
    d = Driver([spec("a", "eth0")], Settings(max_entries=2))
    d.worlds["a"].records = {f"h{i}.example": {"A": [f"192.0.2.{i}"]} for i in range(3)}
    d.query("h0.example")
    d.query("h1.example")
    d.now += 1
    d.query("h0.example")  # h0 is now more recent than h1
    d.query("h2.example")
    names = sorted(r["name"] for r in d.cache())
    assert names == ["h0.example.", "h2.example."]


def test_explain_shows_grades_and_reasons():
    d = vpn_and_wifi()
    e = d.resolver.explain("a.corp.example")
    assert e["candidates"] == [{"pvd": "corp", "grade": 2, "reason": "routing domain corp.example"}]
    e = d.resolver.explain("www.example.com")
    assert [c["pvd"] for c in e["candidates"]] == ["wifi"]
    assert d.resolver.explain("localhost")["local"] == "localhost"


def test_garbage_never_raises():
    d = vpn_and_wifi()
    for junk in (b"", b"\x00", b"\x12\x34" + b"\xff" * 10, b"\x00" * 12, bytes(range(256))):
        d.resolver.handle_query(junk, "c", d.now)


def test_zone_transfer_refused_and_bad_edns_version_badvers():
    import dns.message

    d = vpn_and_wifi()
    assert d.query("corp.example", "AXFR").rcode() == dns.rcode.REFUSED
    q = dns.message.make_query("www.example.com", "A", use_edns=1)
    r = dns.message.from_wire(d.resolver.handle_query(q.to_wire(), "c", d.now))
    assert r.rcode() == dns.rcode.BADVERS


def test_meta_types_as_qtype_get_formerr_here_and_never_reach_a_server():
    d = vpn_and_wifi()
    for qtype in ("OPT", "TKEY", "TSIG"):
        r = d.query("www.example.com", qtype)
        assert r.rcode() == dns.rcode.FORMERR and r.question[0].rdtype.name == qtype
    assert d.worlds["wifi"].seen == [] and d.worlds["corp"].seen == []
    assert d.query("www.example.com", "TYPE65534").rcode() != dns.rcode.FORMERR  # unknown: asked


def test_repeated_query_from_the_memo_ages_its_ttl_and_keeps_its_entry_recent():
    d = Driver([spec("a", "eth0")], Settings(max_entries=2))
    d.worlds["a"].records = {f"h{i}.example": {"A": [f"192.0.2.{i}"]} for i in range(3)}
    t0 = d.now
    ttl0 = d.query("h0.example").answer[0].ttl  # a miss: fetched and stored
    assert d.query("h0.example").answer[0].ttl == ttl0  # a hit, remembered in the answer memo
    d.query("h1.example")  # h1 is now the most recently used entry
    for _ in range(3):  # the same query bytes again, TTLs aged by whole seconds
        d.now += 1.5
        assert d.query("h0.example").answer[0].ttl == ttl0 - int(d.now - t0)
    d.query("h2.example")  # evicts the least recently used: h1, since the memo touched h0
    assert sorted(r["name"] for r in d.cache()) == ["h0.example.", "h2.example."]
    assert d.worlds["a"].seen.count(("h0.example.", "A")) == 1


def _wire(name: str, qid: int) -> bytes:
    q = dns.message.make_query(name, "A", use_edns=0)
    q.id = qid
    return q.to_wire()


def test_ready_table_replays_the_memo_and_empties_on_every_registry_change(monkeypatch):
    d = vpn_and_wifi()
    res = d.resolver
    d.query("www.example.com")  # a miss: stored
    table = res.ready_table(65494)
    assert table == {}
    hit = res.handle_query(_wire("www.example.com", 7), "c", d.now, 65494)  # memoized
    key = _wire("www.example.com", 9)[2:]
    tail, until, stored, expires, offsets, ttls = table[key]  # with how to age it (memo.py)
    assert hit[2:] == tail and d.now < until <= d.now + 1
    assert stored == d.now and ttls == (300,)
    assert expires == d.now + AGING_HORIZON  # then the resolver looks again (memo.py)
    assert hit[offsets[0] : offsets[0] + 4] == (300).to_bytes(4, "big")
    assert res.ready_table(1232) == {}  # another listener cap: its own table
    res.handle_query(_wire("intranet.corp.example", 8), "c", d.now, 65494)
    d.pump()
    res.handle_query(_wire("intranet.corp.example", 8), "c", d.now, 65494)
    assert len(res.ready_table(65494)) == 2
    before = dict(res.counters)
    res.count_ready(5)
    assert res.counters["queries"] == before["queries"] + 5
    assert res.counters["cache_hits"] == before["cache_hits"] + 5
    res.monitoring = True  # every query must be seen: no table
    assert res.ready_table(65494) is None
    res.monitoring = False
    assert key in res.ready_table(65494)  # nothing changed meanwhile
    d.apply(d.registry.purge("corp", cause="test"))  # any registry change: emptied
    assert res.ready_table(65494) == {} and table == {}  # the same dict, emptied
    res.handle_query(_wire("www.example.com", 7), "c", d.now, 65494)
    assert key in table
    res.set_portal_hosts("wifi", ("portal.example",))  # a routing change outside the registry
    assert table == {}
    res.handle_query(_wire("www.example.com", 7), "c", d.now, 65494)
    d.query("intranet.corp.example")  # cached again on corp
    monkeypatch.setattr("mifdns.core.memo.MEMO_MAX", 1)  # the memo is full: emptied with it
    res.handle_query(_wire("intranet.corp.example", 8), "c", d.now, 65494)
    assert key not in table and len(table) == 1


def test_memo_never_outlives_a_purge_or_the_entry():
    d = vpn_and_wifi()
    d.query("www.example.com")
    d.query("www.example.com")  # remembered
    d.apply(d.registry.purge("wifi", cause="test"))
    assert answers(d.query("www.example.com")) == ["203.0.113.80"]
    assert d.worlds["wifi"].seen.count(("www.example.com.", "A")) == 2  # asked again
    d.now += 10**6  # far past the TTL
    assert answers(d.query("www.example.com")) == ["203.0.113.80"]
    assert d.worlds["wifi"].seen.count(("www.example.com.", "A")) == 3


def test_monitor_events_carry_the_rcode_the_client_got():
    d = vpn_and_wifi()
    d.resolver.monitoring = True
    for name, rdtype in (
        ("x.invalid", "A"),
        ("localhost", "A"),
        ("1.0.168.192.in-addr.arpa", "PTR"),
        ("www.example.com", "A"),
        ("www.example.com", "A"),
        ("nope.example.org", "A"),
        ("nope.example.org", "A"),
        ("ipv4only.arpa", "A"),
    ):
        d.resolver.events.clear()
        r = d.query(name, rdtype)
        (ev,) = [e for e in d.resolver.events if e["event"] == "query"]
        assert ev["rcode"] == dns.rcode.to_text(r.rcode()), (name, ev)


def test_an_untrusted_pvds_ad_bit_never_reaches_a_client():
    """mifdns validates nothing: a network's server claiming AD (a hotspot, a captive portal)
    must not make local software believe its answer was validated (glibc trusts AD from
    mifdns with ``options trust-ad``)."""
    d = Driver([spec("wifi", "wlan0")])
    d.worlds["wifi"].records = {"www.example.com": {"A": ["203.0.113.80"]}}
    d.worlds["wifi"].ad = True
    for kw in ({"ad": True}, {"want_dnssec": True}, {}):
        r = d.query("www.example.com", **kw)
        assert answers(r) == ["203.0.113.80"] and not r.flags & dns.flags.AD, kw
    assert not any(d.worlds["wifi"].asked_ad)  # and it was asked without AD


def test_a_trusted_pvds_ad_bit_reaches_clients_that_ask_for_it():
    d = Driver([spec("vpn", "tun0", trust_ad=True)])
    d.worlds["vpn"].records = {"www.example.com": {"A": ["203.0.113.80"]}}
    d.worlds["vpn"].ad = True
    assert d.query("www.example.com", ad=True).flags & dns.flags.AD
    assert d.query("www.example.com", want_dnssec=True).flags & dns.flags.AD
    assert not d.query("www.example.com").flags & dns.flags.AD  # did not ask (RFC 6840 5.8)
    # asked with AD=1, so the validating server says whether it validated (RFC 6840 5.7)
    assert d.worlds["vpn"].asked_ad[0] is True


def test_turning_trust_ad_off_drops_answers_cached_with_ad():
    d = Driver([spec("vpn", "tun0", trust_ad=True)])
    d.worlds["vpn"].records = {"www.example.com": {"A": ["203.0.113.80"]}}
    d.worlds["vpn"].ad = True
    assert d.query("www.example.com", ad=True).flags & dns.flags.AD
    old = d.registry.find("vpn").spec
    d.apply(d.registry.upsert(replace(old, trust_ad=False), now=d.now))
    assert not d.query("www.example.com", ad=True).flags & dns.flags.AD


def test_formerr_to_a_query_with_an_opt_carries_an_opt():
    """RFC 6891 section 7: a reply to a request with an OPT includes one, also FORMERR (here:
    no question), unless the OPT itself is the malformed part."""
    d = Driver([spec("wifi", "wlan0")])
    q = dns.message.make_query("www.example.com", "A", use_edns=0)
    q.question = []
    r = dns.message.from_wire(d.resolver.handle_query(q.to_wire(), "c", d.now))
    assert r.rcode() == dns.rcode.FORMERR and r.edns == 0
    plain = dns.message.make_query("www.example.com", "A")
    plain.question = []
    r = dns.message.from_wire(d.resolver.handle_query(plain.to_wire(), "c", d.now))
    assert r.rcode() == dns.rcode.FORMERR and r.edns == -1
    # two OPTs: the OPT is the malformed part, so the FORMERR has none
    wire = q.to_wire()
    two = wire[:11] + b"\x02" + wire[12:] + wire[12:]
    r = dns.message.from_wire(d.resolver.handle_query(two, "c", d.now))
    assert r.rcode() == dns.rcode.FORMERR and r.edns == -1


def test_a_server_that_rejects_edns_is_asked_without_it_for_a_while():
    """RFC 6891 section 7 fallback, remembered per server (health.NO_EDNS_MEMORY): the next
    questions skip the failed EDNS round trip; after the memory runs out EDNS is tried again."""
    from mifdns.core.health import NO_EDNS_MEMORY

    d = vpn_and_wifi()
    corp = d.worlds["corp"]
    corp.no_edns = True
    assert answers(d.query("intranet.corp.example")) == ["10.8.0.5"]
    assert corp.edns_seen == [True, False]
    d.query("5.0.8.10.in-addr.arpa", "PTR")
    assert corp.edns_seen == [True, False, False]  # at once without EDNS
    assert d.worlds["wifi"].edns_seen == [] and not d.worlds["wifi"].no_edns
    d.query("www.example.com")
    assert d.worlds["wifi"].edns_seen == [True]  # the other PvD's server is not affected
    d.now += NO_EDNS_MEMORY + 1
    corp.no_edns = False  # upgraded meanwhile
    d.query("x.corp.example")
    assert corp.edns_seen[-1] is True and len(corp.edns_seen) == 4


def test_error_replies_without_a_question_section_count():
    """Old servers answer EDNS with FORMERR as a bare header (QDCOUNT 0): matched on ID and
    source, it still triggers the fallback (it was ignored, and the query timed out); a bare
    REFUSED is passed on at once."""
    d = vpn_and_wifi()
    corp = d.worlds["corp"]
    corp.no_edns = corp.bare_errors = True
    t0 = d.now
    assert answers(d.query("intranet.corp.example")) == ["10.8.0.5"]
    assert corp.edns_seen == [True, False] and d.now == t0  # no timeout waited for
    corp.mode = "refused"
    got = d.query("other.corp.example")
    assert got.rcode() == dns.rcode.REFUSED and d.now == t0


def test_stopping_answers_every_waiting_client_now():
    """At shutdown: a question still in flight gets SERVFAIL, and a negative answer waiting
    for a silent tied PvD is sent as it is; nothing is left in flight."""
    d = Driver(
        [
            spec("a", "eth0", domains=["~s.example"]),
            spec("b", "eth1", servers=["198.51.100.53"], domains=["~s.example"]),
            spec("c", "eth2", servers=["203.0.113.53"], default_route=True),
        ]
    )
    d.worlds["b"].mode = "drop"
    d.worlds["c"].mode = "drop"
    assert d.query("x.s.example", client="tied", pump=False) is None
    assert d.query("www.example.com", client="lone", pump=False) is None
    d.pump(until=d.now)  # a's NXDOMAIN arrives; b and c stay silent
    assert d.replies == []
    d.resolver.cancel_all(d.now)
    d.pump(until=d.now)
    got = {c: dns.message.from_wire(w).rcode() for c, w in d.replies}
    assert got == {"tied": dns.rcode.NXDOMAIN, "lone": dns.rcode.SERVFAIL}
    assert not d.resolver.inflight
