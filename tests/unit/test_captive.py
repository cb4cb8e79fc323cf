"""Captive portals per PvD: the RFC 8908 API parser, the DNS hijack probe, the state machine
that settles the three sources, and the routing/caching policy while captive -- in memory."""

from __future__ import annotations

import json

import pytest

from mifdns.core import captive as cap
from mifdns.core.captive import ApiStatus, CaptiveMachine, Verdict
from mifdns.core.pvd import CaptiveState, Domain
from mifdns.core.resolver import Settings

from .coredriver import Driver, answers, spec

CAPTIVE, OPEN, UNKNOWN = CaptiveState.CAPTIVE, CaptiveState.OPEN, CaptiveState.UNKNOWN
HIJACKED, CLEAN, UNSURE = Verdict(True, ("192.0.2.1",)), Verdict(False), Verdict(None)


# ------------------------------------------------------------------------------ RFC 8908 API
def test_api_status_with_every_field():
    body = json.dumps(
        {
            "captive": True,
            "user-portal-url": "https://portal.example/login",
            "venue-info-url": "https://flight.example/entertainment",
            "can-extend-session": True,
            "seconds-remaining": 326,
            "bytes-remaining": 65536,
            "unknown-key": [1, 2],
        }
    ).encode()
    st = cap.parse_api(body)
    assert st == ApiStatus(
        True,
        "https://portal.example/login",
        "https://flight.example/entertainment",
        True,
        326,
        65536,
    )
    assert st.to_json()["user-portal-url"] == "https://portal.example/login"


def test_api_status_minimal_and_wrongly_typed_optional_fields_are_dropped():
    st = cap.parse_api(
        b'{"captive": false, "seconds-remaining": "soon", '
        b'"user-portal-url": "javascript:alert(1)", "can-extend-session": 1}'
    )
    assert st == ApiStatus(False)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"<html>login</html>",
        b"[]",
        b'{"captive": "yes"}',
        b"{}",
        b'{"captive": true' + b" " * 70000 + b"}",
    ],
)
def test_api_answers_that_are_not_a_status_are_errors(body):
    with pytest.raises(cap.CaptiveApiError):
        cap.parse_api(body)


def test_host_of_skips_ip_literals():
    assert cap.host_of("https://Portal.Example:8443/api") == "portal.example"
    assert cap.host_of("https://192.0.2.1/api") is None
    assert cap.host_of("https://[2001:db8::1]/api") is None
    assert cap.host_of(None) is None


# ------------------------------------------------------------------------------ hijack probe
def test_probe_names_are_random_single_labels_and_one_under_invalid():
    names = cap.probe_names(bytes(range(48)))
    assert len(names) == cap.PROBE_LABELS + 1
    assert all(n.count(".") == 1 for n in names[:-1])
    assert names[-1].endswith(".invalid.")
    assert all(10 <= len(n.split(".")[0]) <= 15 for n in names)
    import os

    assert cap.probe_names(os.urandom(48)) != cap.probe_names(os.urandom(48))


def test_judge_hijacked_clean_and_inconclusive():
    lie = ("answer", ["192.0.2.1"])
    assert cap.judge([lie, lie, ("nxdomain", [])]).hijacked is True
    assert cap.judge([lie, lie, lie]).addresses == ("192.0.2.1",)
    assert cap.judge([("nxdomain", []), ("nxdomain", []), ("nodata", [])]).hijacked is False
    assert cap.judge([("timeout", []), ("failed", []), ("timeout", [])]).hijacked is None
    assert cap.judge([lie, ("timeout", []), ("nxdomain", [])]).hijacked is None
    assert cap.judge([("servfail", []), ("nxdomain", []), ("timeout", [])]).hijacked is False


# ------------------------------------------------------------------------------ the machine
def test_probe_detects_a_captive_network_without_being_told():
    m = CaptiveMachine("wifi", now=0.0)
    assert m.due(0.0) == (True, False)
    m.started_probe()
    t = m.on_probe(HIJACKED, 0.5)
    assert (t.old, t.new, t.source) == (UNKNOWN, CAPTIVE, "probe")
    assert m.state == CAPTIVE
    assert m.next_probe == pytest.approx(0.5 + cap.PROBE_CAPTIVE)  # probed often while captive
    assert m.to_json(1.0)["probe_addresses"] == ["192.0.2.1"]


def test_login_seen_by_the_probe_leaves_captive():
    m = CaptiveMachine("wifi", now=0.0)
    m.on_probe(HIJACKED, 0.0)
    t = m.on_probe(CLEAN, 10.0)
    assert (t.old, t.new) == (CAPTIVE, OPEN)
    assert m.next_probe == pytest.approx(10.0 + cap.PROBE_OTHER)


def test_inconclusive_probe_changes_nothing_and_retries():
    m = CaptiveMachine("wifi", now=0.0)
    assert m.on_probe(UNSURE, 0.0) is None
    assert m.state == UNKNOWN and m.next_probe == pytest.approx(cap.PROBE_RETRY)
    # the view says what happened, not "not probed yet"
    assert m.to_json(1.0)["reason"] == f"hijack probe {UNSURE.note}"
    m.on_probe(CLEAN, 2.0)
    reason = m.to_json(3.0)["reason"]
    m.on_probe(UNSURE, 4.0)  # once there is evidence, an inconclusive probe leaves it alone
    assert m.state == OPEN and m.to_json(5.0)["reason"] == reason


def test_operator_open_takes_effect_at_once_and_the_pvd_is_probed_again():
    m = CaptiveMachine("wifi", now=0.0)
    m.on_probe(HIJACKED, 0.0)
    t = m.on_operator(OPEN, 1.0)
    assert (t.old, t.new, t.source) == (CAPTIVE, OPEN, "operator")
    assert m.probe is None and m.next_probe == 1.0  # the old lies are forgotten; look again
    assert m.on_probe(CLEAN, 1.1) is None and m.state == OPEN  # the login was real


def test_dns_that_still_lies_after_the_operator_said_open_is_captive_again():
    m = CaptiveMachine("wifi", now=0.0)
    m.on_probe(HIJACKED, 0.0)
    m.on_operator(OPEN, 1.0)
    t = m.on_probe(HIJACKED, 1.1)
    assert (t.old, t.new, t.source) == (OPEN, CAPTIVE, "probe")
    assert m.next_probe == pytest.approx(1.1 + cap.PROBE_CAPTIVE)


def test_operator_captive_stands_against_a_clean_probe_until_it_changes_its_mind():
    m = CaptiveMachine("wifi", now=0.0)
    m.on_probe(CLEAN, 0.0)
    assert m.on_operator(CAPTIVE, 1.0).new == CAPTIVE  # a portal that does not rewrite DNS
    assert m.on_probe(CLEAN, 5.0) is None and m.state == CAPTIVE
    t = m.on_probe(HIJACKED, 9.0)  # the probe changed its mind: the operator's word is gone
    assert t is None and m.operator is None and m.state == CAPTIVE
    assert m.on_probe(CLEAN, 12.0).new == OPEN


def test_operator_unknown_forgets_everything_and_probes_again():
    m = CaptiveMachine("wifi", "https://portal.example/api", now=0.0)
    m.on_probe(HIJACKED, 0.0)
    t = m.on_operator(UNKNOWN, 5.0)
    assert (t.old, t.new) == (CAPTIVE, UNKNOWN)
    assert m.probe is None and m.due(5.0) == (True, True)


def test_api_wins_over_a_clean_probe_and_login_through_the_api_leaves_captive():
    m = CaptiveMachine("wifi", "https://portal.example/api", now=0.0)
    assert m.due(0.0) == (True, True)
    m.on_probe(CLEAN, 0.1)  # the portal does not rewrite DNS, only HTTP
    assert m.state == OPEN
    m.started_poll()
    t = m.on_api(ApiStatus(True, "https://login.portal.example/"), 0.2)
    assert (t.old, t.new, t.source) == (OPEN, CAPTIVE, "api")
    assert m.portal_hosts == ("portal.example", "login.portal.example")
    assert m.next_poll == pytest.approx(0.2 + cap.POLL_CAPTIVE)
    t = m.on_api(ApiStatus(False, seconds_remaining=20), 5.0)
    assert (t.old, t.new) == (CAPTIVE, OPEN)
    assert m.next_poll == pytest.approx(5.0 + 20)  # look again when the session ends
    assert m.next_probe == 5.0  # a login signal: probe again at once


def test_api_saying_open_does_not_outweigh_dns_lies():
    m = CaptiveMachine("wifi", "https://portal.example/api", now=0.0)
    m.on_api(ApiStatus(True), 0.0)
    m.on_probe(HIJACKED, 0.1)
    m.on_api(ApiStatus(False), 3.0)  # login: evidence forgotten, state from the API
    assert m.state == OPEN and m.probe is None
    assert m.on_probe(HIJACKED, 3.1).new == CAPTIVE  # but the DNS still lies


def test_failed_api_poll_keeps_the_last_answer_and_backs_off():
    m = CaptiveMachine("wifi", "https://portal.example/api", now=0.0)
    m.on_api(ApiStatus(True), 0.0)
    delays = []
    for i in range(6):
        now = 10.0 * (i + 1)
        assert m.on_api(None, now, "timeout") is None
        delays.append(m.next_poll - now)
    assert m.state == CAPTIVE and m.api_error == "timeout"
    assert delays == sorted(delays) and delays[-1] == cap.POLL_RETRY[-1]


def test_new_api_uri_polls_at_once():
    m = CaptiveMachine("wifi", now=0.0)
    assert m.due(0.0)[1] is False
    m.set_api_uri("https://portal.example/api", 3.0)
    assert m.due(3.0)[1] is True


# ------------------------------------------------------------------------------ policy
def wifi_and_cell() -> Driver:
    d = Driver(
        [
            spec(
                "wifi",
                "wlan0",
                captive_domains=(Domain.parse("hotel.example"),),
                captive_portal="https://portal.hotel-wifi.example/api",
            ),
            spec("cell", "wwan0", servers=["198.51.100.53"]),
        ]
    )
    d.worlds["wifi"].records = {
        "www.example.com": {"A": ["192.0.2.1"]},
        "portal.hotel-wifi.example": {"A": ["192.0.2.1"]},
        "login.hotel.example": {"A": ["192.0.2.1"]},
        "auth.portal-cdn.example": {"A": ["192.0.2.1"]},
    }
    d.worlds["cell"].records = {
        "www.example.com": {"A": ["203.0.113.80"]},
        "portal.hotel-wifi.example": {"A": ["203.0.113.99"]},
        "login.hotel.example": {"A": ["203.0.113.98"]},
        "auth.portal-cdn.example": {"A": ["203.0.113.97"]},
    }
    return d


def test_general_names_avoid_a_captive_pvd_while_another_default_route_exists():
    d = wifi_and_cell()
    d.apply(d.registry.set_captive("wifi", CAPTIVE))
    assert answers(d.query("www.example.com")) == ["203.0.113.80"]
    assert d.worlds["wifi"].seen == []
    why = d.resolver.explain("www.example.com")["candidates"]
    assert [c["pvd"] for c in why] == ["cell"]


def test_captive_pvd_is_used_when_it_is_the_only_default_route_and_answers_are_capped():
    d = Driver([spec("wifi", "wlan0")])
    d.worlds["wifi"].records = {"www.example.com": {"A": ["192.0.2.1"]}}
    d.worlds["wifi"].ttl = 3600
    d.apply(d.registry.set_captive("wifi", CAPTIVE))
    r = d.query("www.example.com")
    assert answers(r) == ["192.0.2.1"] and r.answer[0].ttl == Settings().captive_max_ttl
    (row,) = d.cache()
    assert row["kind"] == "captive" and row["ttl"] <= Settings().captive_max_ttl


def test_portal_hosts_and_captive_domains_go_to_the_captive_pvd():
    d = wifi_and_cell()
    d.resolver.set_portal_hosts("wifi", ("auth.portal-cdn.example",))
    d.apply(d.registry.set_captive("wifi", CAPTIVE))
    assert answers(d.query("portal.hotel-wifi.example")) == ["192.0.2.1"]  # the API URI's host
    assert answers(d.query("login.hotel.example")) == ["192.0.2.1"]  # captive_domains
    assert answers(d.query("auth.portal-cdn.example")) == ["192.0.2.1"]  # user-portal-url's
    assert d.worlds["cell"].seen == []
    reasons = d.resolver.explain("auth.portal-cdn.example")["candidates"]
    assert reasons[0]["reason"] == "captive portal host auth.portal-cdn.example"


def test_portal_hosts_are_not_special_while_open():
    d = wifi_and_cell()
    d.resolver.set_portal_hosts("wifi", ("auth.portal-cdn.example",))
    cands = d.resolver.explain("auth.portal-cdn.example")["candidates"]
    assert sorted(c["pvd"] for c in cands) == ["cell", "wifi"]


def test_leaving_captive_purges_the_portal_answers():
    d = wifi_and_cell()
    d.apply(d.registry.set_captive("wifi", CAPTIVE))
    assert answers(d.query("login.hotel.example")) == ["192.0.2.1"]
    assert [r["kind"] for r in d.cache("wifi")] == ["captive"]
    recs = d.apply(d.registry.set_captive("wifi", OPEN))
    assert any(r.get("purged") == 1 for r in recs)
    assert d.cache("wifi") == []
    d.worlds["wifi"].records["login.hotel.example"] = {"A": ["203.0.113.98"]}  # logged in
    assert answers(d.query("login.hotel.example")) == ["203.0.113.98"]


def test_captive_nodata_does_not_hide_an_answer_from_a_tied_pvd():
    d = Driver(
        [
            spec("wifi", "wlan0", domains=["shared.example"]),
            spec("cell", "wwan0", servers=["198.51.100.53"], domains=["shared.example"]),
        ]
    )
    d.worlds["wifi"].records = {"a.shared.example": {"TXT": ['"x"']}}
    d.worlds["cell"].records = {"a.shared.example": {"A": ["203.0.113.5"]}}
    d.apply(d.registry.set_captive("wifi", CAPTIVE))
    assert answers(d.query("a.shared.example")) == ["203.0.113.5"]
    assert {r["pvd"]: r["kind"] for r in d.cache()} == {"wifi": "captive", "cell": "positive"}
    # from the cache: wifi's captive NODATA is still a negative, cell's answer wins
    assert answers(d.query("a.shared.example")) == ["203.0.113.5"]


# ------------------------------------------------------------------------------ a portal back
def test_portal_addresses_outlive_a_login_and_a_sighting_probes_at_once():
    m = CaptiveMachine("wifi", now=0.0)
    m.started_probe()
    m.on_probe(HIJACKED, 0.5)
    m.on_operator(OPEN, 10.0)  # login: the probe's evidence is forgotten, the portal is not
    assert m.probe_addresses == () and m.portal_addresses == ("192.0.2.1",)
    m.started_probe()
    assert m.on_sighting(10.1) is False  # a probe is running: it will tell
    m.on_probe(CLEAN, 10.2)
    assert m.state == OPEN and m.next_probe == pytest.approx(10.2 + cap.PROBE_OTHER)
    assert m.on_sighting(20.0) is True and m.due(20.0)[0]  # not in 10 minutes: now
    m.started_probe()
    m.on_probe(CLEAN, 20.1)  # a false alarm (the portal's address serves something real)
    assert m.on_sighting(30.0) is False  # at most one such probe per SIGHTING_INTERVAL
    assert m.on_sighting(20.0 + cap.SIGHTING_INTERVAL) is True
    assert m.to_json(51.0)["sighted_s_ago"] == pytest.approx(1.0)
    assert m.to_json(51.0)["portal_addresses"] == ["192.0.2.1"]


def test_no_sighting_probe_while_captive_and_a_reset_forgets_the_portal():
    m = CaptiveMachine("wifi", now=0.0)
    m.on_probe(HIJACKED, 0.0)
    assert m.state == CAPTIVE and m.on_sighting(1.0) is False  # probed often anyway
    m.reset(2.0, "attached: probing")  # another attachment may be another network
    assert m.portal_addresses == () and m.sighted_at is None


def test_entering_captive_purges_what_was_cached_before():
    d = wifi_and_cell()
    assert answers(d.query("www.example.com"))  # cached while the state was unknown
    assert d.cache("wifi")
    recs = d.apply(d.registry.set_captive("wifi", CAPTIVE))
    assert any(r.get("purged") == 1 for r in recs)
    assert d.cache("wifi") == []


def test_an_answer_pointing_at_a_known_portal_while_open_is_capped_and_reported():
    d = Driver([spec("wifi", "wlan0", domains=["hotel.example"])])
    w = d.worlds["wifi"]
    w.ttl = 3600
    w.records = {
        "mail.hotel.example": {"A": ["192.0.2.1"]},  # the portal's address: a lie
        "lie.hotel.example": {"A": ["192.0.2.1"]},
        "www.hotel.example": {"A": ["192.0.2.80"]},
        "portal.hotel.example": {"A": ["192.0.2.1"]},  # the portal's own host: true
        "v6.hotel.example": {"AAAA": ["2001:db8::1"]},
    }
    d.apply(d.registry.set_captive("wifi", OPEN))
    r = d.resolver
    assert answers(d.query("mail.hotel.example")) == ["192.0.2.1"]
    assert r.portal_sightings == []  # no portal seen here yet: an ordinary answer

    r.set_portal_hosts("wifi", ("portal.hotel.example",))
    r.set_portal_addresses("wifi", ("192.0.2.1", "2001:db8::1", "not an address"))
    assert answers(d.query("www.hotel.example")) == ["192.0.2.80"]
    assert answers(d.query("portal.hotel.example")) == ["192.0.2.1"]
    assert r.portal_sightings == []  # elsewhere, or the portal's own host name
    assert answers(d.query("lie.hotel.example")) == ["192.0.2.1"]
    assert answers(d.query("v6.hotel.example", "AAAA")) == ["2001:db8::1"]
    assert r.portal_sightings == ["wifi", "wifi"]
    kinds = {(row["name"], row["kind"], row["ttl"] <= 30) for row in d.cache("wifi")}
    assert kinds == {
        ("mail.hotel.example.", "positive", False),
        ("www.hotel.example.", "positive", False),
        ("portal.hotel.example.", "positive", False),
        ("lie.hotel.example.", "captive", True),
        ("v6.hotel.example.", "captive", True),
    }

    d.apply(d.registry.set_captive("wifi", CAPTIVE))  # the probe it started found the portal
    assert d.cache("wifi") == []  # every lie cached while open is gone
    r.set_portal_addresses("wifi", ())
    assert r.portal_watch == {}
