"""Split DNS on a real multi-network host (RFC 6418 section 4.1): network namespaces joined by
veth links, one upstream server per network, mifdns in the host namespace.

Every test asserts twice: on what the client receives from 127.0.0.53, and on the query logs
of the upstream servers (who was asked, and who was not).
"""

from __future__ import annotations

import asyncio

import dns.message
import pytest
from splitdns_helpers import (
    CORP_ZONE,
    PUBLIC_ZONE,
    addrs,
    cached,
    client_log,
    config,
    corp_pvd,
    edes,
    is_own_probe,
    names_seen,
    rcode,
    start_dnsmasq,
    start_nsd,
    start_unbound,
    udp_socket,
    wait_for,
    wifi_pvd,
)

from mifdns.harness.topology import Topology

pytestmark = [pytest.mark.netns, pytest.mark.asyncio]


LL_SERVER = ["192.0.2.53/24", "2001:db8:1::53/64", "fe80::53/64"]


@pytest.fixture
def vpn_and_wifi(topology: Topology):
    """Two networks whose servers share 192.0.2.53 / 2001:db8:1::53 (the harness's default)."""
    return topology.add_network("corp", "corp0"), topology.add_network("wifi", "wlan0")


def explain(daemon, name, rdtype="A"):
    return [(c["pvd"], c["grade"]) for c in daemon.ctl("explain", name, rdtype)["candidates"]]


# -- routing ----------------------------------------------------------------------------------
async def test_private_names_reach_only_the_vpn_server_and_public_names_only_the_wifi_server(
    topology, vpn_and_wifi, upstream_factory, mifdns_factory
):
    corp, wifi = vpn_and_wifi
    up_corp = await upstream_factory(corp, CORP_ZONE)
    up_wifi = await upstream_factory(wifi, PUBLIC_ZONE)
    d = await mifdns_factory(topology, config(corp_pvd(), wifi_pvd()))

    assert addrs(await d.aquery("intranet.corp.example")) == ["10.8.0.81"]
    wiki = await d.aquery("wiki.corp.example")
    assert addrs(wiki, "CNAME") == ["intranet.corp.example."] and addrs(wiki) == ["10.8.0.81"]
    assert addrs(await d.aquery("www.corp.example", "AAAA"), "AAAA") == ["fd00:8::80"]
    missing = await d.aquery("nothere.corp.example")
    assert rcode(missing) == "NXDOMAIN"
    assert addrs(await d.aquery("www.example.com")) == ["203.0.113.1"]

    corp_names = {"intranet.corp.example.", "wiki.corp.example.", "www.corp.example.",
                  "nothere.corp.example."}  # fmt: skip
    assert set(names_seen(up_corp)) == corp_names
    assert names_seen(up_wifi) == ["www.example.com."]  # no corp.example name leaked to Wi-Fi
    # the queries left through the right links: each server saw them arrive on its own eth0
    # from the host's address there, and over UDP
    assert {(s.source[0], s.ns_iface, s.transport) for s in client_log(up_corp)} == {
        ("192.0.2.10", "eth0", "udp")
    }
    assert explain(d, "intranet.corp.example") == [("corp", 2)]
    assert explain(d, "www.example.com") == [("wifi", 0)]


async def test_split_horizon_follows_the_longest_matching_suffix(
    topology, vpn_and_wifi, upstream_factory, mifdns_factory
):
    corp, wifi = vpn_and_wifi
    lab = topology.add_network("lab", "lab0")
    # three views of the same names: the lab's own, the company's (stale for the lab), public
    up_corp = await upstream_factory(corp, CORP_ZONE + "printer.lab 300 IN A 10.8.0.99\n")
    up_lab = await upstream_factory(lab, {"printer.lab.corp.example": {"A": "10.77.0.9"}})
    up_wifi = await upstream_factory(wifi, PUBLIC_ZONE)
    lab_pvd = {"name": "lab", "interface": "lab0", "servers": ["192.0.2.53"],
               "domains": ["~lab.corp.example"]}  # fmt: skip
    d = await mifdns_factory(topology, config(corp_pvd(), wifi_pvd(), lab_pvd))

    assert addrs(await d.aquery("printer.lab.corp.example")) == ["10.77.0.9"]
    assert addrs(await d.aquery("PRINTER.Lab.Corp.Example")) == ["10.77.0.9"]  # case-blind
    assert addrs(await d.aquery("www.corp.example")) == ["10.8.0.80"]  # not the public view
    assert addrs(await d.aquery("www.example.com")) == ["203.0.113.1"]

    assert set(names_seen(up_lab)) == {"printer.lab.corp.example."}
    assert set(names_seen(up_corp)) == {"www.corp.example."}
    assert names_seen(up_wifi) == ["www.example.com."]
    assert explain(d, "printer.lab.corp.example") == [("lab", 3)]
    assert explain(d, "x.y.corp.example") == [("corp", 2)]
    assert explain(d, "corp.example.net") == [("wifi", 0)]  # a suffix match is label-aligned


async def test_reverse_lookups_go_to_the_pvd_whose_network_holds_the_address(
    topology, upstream_factory, mifdns_factory
):
    corp = topology.add_network(
        "corp", "corp0", host_addrs=["10.8.0.10/24", "fd00:8::10/64"],
        server_addrs=["10.8.0.53/24", "fd00:8::53/64"],
    )  # fmt: skip
    wifi = topology.add_network(
        "wifi", "wlan0", host_addrs=["192.168.1.10/24"], server_addrs=["192.168.1.53/24"]
    )
    up_corp = await upstream_factory(corp, {
        "80.0.8.10.in-addr.arpa": {"PTR": "www.corp.example."},
        "4.3.9.10.in-addr.arpa": {"PTR": "db.corp.example."},
        "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.9.0.0.0.0.0.d.f.ip6.arpa": {
            "PTR": "v6.corp.example."},
    })  # fmt: skip
    up_wifi = await upstream_factory(wifi, {
        "53.1.168.192.in-addr.arpa": {"PTR": "router.home.example."},
        "8.8.8.8.in-addr.arpa": {"PTR": "dns.google."},
    })  # fmt: skip
    d = await mifdns_factory(topology, config(
        corp_pvd(servers=["10.8.0.53"], networks=["10.9.0.0/16", "fd00:9::/48"]),
        wifi_pvd(servers=["192.168.1.53"]),
    ))  # fmt: skip

    async def ptr(name):
        return addrs(await d.aquery(name, "PTR"), "PTR")

    assert await ptr("80.0.8.10.in-addr.arpa") == ["www.corp.example."]  # the link's prefix
    assert await ptr("4.3.9.10.in-addr.arpa") == ["db.corp.example."]  # a configured network
    assert await ptr(
        "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.9.0.0.0.0.0.d.f.ip6.arpa"
    ) == ["v6.corp.example."]
    assert await ptr("53.1.168.192.in-addr.arpa") == ["router.home.example."]  # Wi-Fi's prefix
    assert await ptr("8.8.8.8.in-addr.arpa") == ["dns.google."]  # public: the default route
    # a private range nobody claims is answered here (RFC 6303) and asked of no one
    local = await d.aquery("1.0.16.172.in-addr.arpa", "PTR")
    assert rcode(local) == "NXDOMAIN"

    assert len(names_seen(up_corp)) == 3 and all(
        name.endswith((".8.10.in-addr.arpa.", ".9.10.in-addr.arpa.", "d.f.ip6.arpa."))
        for name in names_seen(up_corp)
    )
    assert set(names_seen(up_wifi)) == {"53.1.168.192.in-addr.arpa.", "8.8.8.8.in-addr.arpa."}
    assert explain(d, "4.3.9.10.in-addr.arpa", "PTR") == [("corp", 4)]  # 9.10.in-addr.arpa
    assert d.ctl("explain", "1.0.16.172.in-addr.arpa", "PTR")["local"].startswith("rfc6303")


@pytest.mark.parametrize("server", ["192.0.2.53", "2001:db8:1::53"])
async def test_two_pvds_whose_servers_share_one_address_each_reach_their_own(
    server, topology, vpn_and_wifi, upstream_factory, mifdns_factory
):
    corp, wifi = vpn_and_wifi
    up_corp = await upstream_factory(corp, CORP_ZONE)
    up_wifi = await upstream_factory(wifi, PUBLIC_ZONE)
    d = await mifdns_factory(
        topology, config(corp_pvd(servers=[server]), wifi_pvd(servers=[server]))
    )
    for _ in range(2):  # the second round comes from the cache partitions
        assert addrs(await d.aquery("www.corp.example")) == ["10.8.0.80"]
        assert addrs(await d.aquery("www.example.com")) == ["203.0.113.1"]
    assert names_seen(up_corp) == ["www.corp.example."]
    assert names_seen(up_wifi) == ["www.example.com."]
    # the same host address on two links
    assert client_log(up_corp)[0].source[0] == client_log(up_wifi)[0].source[0]
    assert cached(d) == {
        ("corp", "www.corp.example.", "A", "positive"),
        ("wifi", "www.example.com.", "A", "positive"),
    }


async def test_link_local_server_fe80_53_is_reached_on_each_interface(
    topology, upstream_factory, mifdns_factory
):
    corp = topology.add_network("corp", "corp0", server_addrs=LL_SERVER)
    wifi = topology.add_network("wifi", "wlan0", server_addrs=LL_SERVER)
    up_corp = await upstream_factory(corp, CORP_ZONE)
    up_wifi = await upstream_factory(wifi, PUBLIC_ZONE)
    d = await mifdns_factory(
        topology, config(corp_pvd(servers=["fe80::53"]), wifi_pvd(servers=["fe80::53%wlan0"]))
    )
    servers = {p["name"]: p["servers"] for p in d.ctl("pvds")}
    assert servers == {"corp": ["fe80::53%corp0"], "wifi": ["fe80::53%wlan0"]}

    assert addrs(await d.aquery("www.corp.example")) == ["10.8.0.80"]
    assert addrs(await d.aquery("www.example.com")) == ["203.0.113.1"]
    assert addrs(await d.aquery("www.corp.example", tcp=True)) == ["10.8.0.80"]  # cache, TCP
    for up, name in ((up_corp, "www.corp.example."), (up_wifi, "www.example.com.")):
        (seen,) = client_log(up)
        assert seen.qname == name
        # sent from the host's own fe80:: address on that link, to the link-local server
        assert seen.source[0].startswith("fe80::") and seen.source[0].endswith("%eth0")
    # TCP to a link-local server is scoped to the interface too (after a truncated answer)
    up_corp.truncate_udp = True
    assert addrs(await d.aquery("intranet.corp.example")) == ["10.8.0.81"]
    assert [s.transport for s in client_log(up_corp)] == ["udp", "udp", "tcp"]
    assert names_seen(up_wifi) == ["www.example.com."]


# -- negative answers across PvDs ---------------------------------------------------------------
async def test_fast_nxdomain_from_one_network_does_not_hide_an_answer_from_another(
    topology, vpn_and_wifi, upstream_factory, mifdns_factory
):
    eth, wifi = vpn_and_wifi  # two default routes: wired Ethernet and Wi-Fi
    # the name exists only behind Ethernet, whose server is slow; Wi-Fi says NXDOMAIN at once
    up_eth = await upstream_factory(eth, {"nas.home.example": {"A": "192.168.7.7"}}, delay=0.3)
    up_wifi = await upstream_factory(wifi, PUBLIC_ZONE)
    eth_pvd = {"name": "eth", "interface": "corp0", "servers": ["192.0.2.53"]}
    d = await mifdns_factory(topology, config(eth_pvd, wifi_pvd()))
    assert explain(d, "nas.home.example") == [("eth", 0), ("wifi", 0)]

    r = await d.aquery("nas.home.example")
    assert rcode(r) == "NOERROR" and addrs(r) == ["192.168.7.7"]
    assert up_wifi.count("nas.home.example") == 1 and up_eth.count("nas.home.example") == 1
    # each network's answer is kept in its own partition, the NXDOMAIN too
    assert cached(d) == {
        ("eth", "nas.home.example.", "A", "positive"),
        ("wifi", "nas.home.example.", "*", "nxdomain"),
    }
    again = await d.aquery("nas.home.example")  # both cached: the positive wins
    assert addrs(again) == ["192.168.7.7"]
    assert up_wifi.count("nas.home.example") == 1 and up_eth.count("nas.home.example") == 1
    # a name that exists nowhere still gets its NXDOMAIN (after hearing from both)
    assert rcode(await d.aquery("nowhere.home.example")) == "NXDOMAIN"


async def test_nxdomain_learned_on_wifi_does_not_hide_a_vpn_name_once_the_vpn_attaches(
    topology, vpn_and_wifi, upstream_factory, mifdns_factory
):
    corp, wifi = vpn_and_wifi
    up_corp = await upstream_factory(corp, CORP_ZONE)
    up_wifi = await upstream_factory(wifi, PUBLIC_ZONE)
    d = await mifdns_factory(topology, config(wifi_pvd()))
    before = await d.aquery("intranet.corp.example")  # no VPN yet: the internet says no
    assert rcode(before) == "NXDOMAIN"
    assert ("wifi", "intranet.corp.example.", "*", "nxdomain") in cached(d)

    d.ctl("attach", "--name", "corp", "--interface", "corp0", "--server", "192.0.2.53",
          "--domain", "~corp.example")  # fmt: skip
    after = await d.aquery("intranet.corp.example")
    assert rcode(after) == "NOERROR" and addrs(after) == ["10.8.0.81"]
    assert up_corp.count("intranet.corp.example") == 1
    assert up_wifi.count("intranet.corp.example") == 1  # asked once, before the VPN came


# -- exclusive domains ---------------------------------------------------------------------------
async def test_exclusive_domain_does_not_leak_while_its_pvd_is_detached(
    topology, vpn_and_wifi, upstream_factory, mifdns_factory
):
    corp, wifi = vpn_and_wifi
    up_corp = await upstream_factory(corp, CORP_ZONE)
    up_wifi = await upstream_factory(wifi, PUBLIC_ZONE)
    d = await mifdns_factory(topology, config(corp_pvd(exclusive=True), wifi_pvd()))
    assert addrs(await d.aquery("www.corp.example")) == ["10.8.0.80"]

    assert d.ctl("detach", "corp")["state"] == "detached"
    for name, rdtype in (("www.corp.example", "A"), ("intranet.corp.example", "AAAA"),
                         ("deep.er.corp.example", "TXT"), ("corp.example", "SOA")):  # fmt: skip
        r = await d.aquery(name, rdtype, payload=1232)  # EDNS: room for the EDE option
        assert rcode(r) == "SERVFAIL", (name, r)
        ((code, text),) = edes(r)
        assert code == 22 and "corp" in text  # No Reachable Authority, naming the PvD
        tcp = await d.aquery(name, rdtype, tcp=True)
        assert rcode(tcp) == "SERVFAIL"
    explained = d.ctl("explain", "www.corp.example")
    assert explained["candidates"] == [] and "detached" in explained["refused"]
    assert not any(n.endswith("corp.example.") for n in names_seen(up_wifi))  # nothing leaked
    assert names_seen(up_corp) == ["www.corp.example."]  # only the query before the detach
    assert addrs(await d.aquery("www.example.com")) == ["203.0.113.1"]  # the rest still works

    d.ctl("attach", "corp")
    assert addrs(await d.aquery("intranet.corp.example")) == ["10.8.0.81"]
    assert up_corp.count("intranet.corp.example") == 1


async def test_non_exclusive_domain_falls_back_to_the_default_route_while_detached(
    topology, vpn_and_wifi, upstream_factory, mifdns_factory
):
    # the contrast to the test above: without `exclusive` the public view is what remains
    corp, wifi = vpn_and_wifi
    up_corp = await upstream_factory(corp, CORP_ZONE)
    up_wifi = await upstream_factory(wifi, PUBLIC_ZONE)
    d = await mifdns_factory(topology, config(corp_pvd(), wifi_pvd()))
    assert addrs(await d.aquery("www.corp.example")) == ["10.8.0.80"]
    d.ctl("detach", "corp")
    assert addrs(await d.aquery("www.corp.example")) == ["203.0.113.80"]
    assert names_seen(up_wifi) == ["www.corp.example."]
    assert names_seen(up_corp) == ["www.corp.example."]


# -- detach purge ---------------------------------------------------------------------------------
async def test_detach_purges_every_answer_learned_on_that_pvd_and_nothing_else(
    topology, vpn_and_wifi, upstream_factory, mifdns_factory
):
    corp, wifi = vpn_and_wifi
    up_corp = await upstream_factory(corp, CORP_ZONE)
    await upstream_factory(wifi, PUBLIC_ZONE)
    d = await mifdns_factory(topology, config(corp_pvd(), wifi_pvd()))
    await d.aquery("www.corp.example")  # positive
    await d.aquery("nothere.corp.example")  # NXDOMAIN
    await d.aquery("intranet.corp.example", "AAAA")  # NODATA
    await d.aquery("www.example.com")  # Wi-Fi
    corp_rows = {
        ("corp", "www.corp.example.", "A", "positive"),
        ("corp", "nothere.corp.example.", "*", "nxdomain"),
        ("corp", "intranet.corp.example.", "AAAA", "nodata"),
    }
    wifi_rows = {("wifi", "www.example.com.", "A", "positive")}
    assert cached(d) == corp_rows | wifi_rows
    assert all(0 < r["ttl"] <= 300 for r in d.ctl("cache"))
    assert {r["name"] for r in d.ctl("cache", "--pvd", "corp")} == {n for _, n, _, _ in corp_rows}

    d.ctl("detach", "corp")
    assert cached(d) == wifi_rows
    assert d.ctl("cache", "--pvd", "corp") == []
    status = d.ctl("status")
    assert status["counters"]["purged_entries"] == 3
    assert status["purges"][-1]["pvd"] == "corp" and status["purges"][-1]["entries"] == 3
    assert "purged 3 cache entries" in d.stderr()

    # back again: nothing old is served, the VPN's server is asked anew
    d.ctl("attach", "corp")
    assert cached(d) == wifi_rows
    assert addrs(await d.aquery("www.corp.example")) == ["10.8.0.80"]
    assert up_corp.count("www.corp.example") == 2


async def test_nxdomain_from_wifi_is_dropped_when_wifi_detaches(
    topology, vpn_and_wifi, upstream_factory, mifdns_factory
):
    _, wifi = vpn_and_wifi
    up_wifi = await upstream_factory(wifi, PUBLIC_ZONE)
    d = await mifdns_factory(topology, config(wifi_pvd()))
    assert rcode(await d.aquery("new.example.com")) == "NXDOMAIN"
    up_wifi.add_records({"new.example.com": {"A": "203.0.113.9"}})
    assert rcode(await d.aquery("new.example.com")) == "NXDOMAIN"  # cached (SOA minimum 120)
    assert rcode(await d.aquery("new.example.com", "AAAA")) == "NXDOMAIN"  # covers every type
    assert up_wifi.count("new.example.com") == 1

    d.ctl("detach", "wifi")
    assert cached(d) == set()
    # no network left: SERVFAIL (with the reason), not the NXDOMAIN learned on Wi-Fi
    refused = await d.aquery("new.example.com", payload=1232)
    assert rcode(refused) == "SERVFAIL" and [c for c, _ in edes(refused)] == [22]
    d.ctl("attach", "wifi")
    assert addrs(await d.aquery("new.example.com")) == ["203.0.113.9"]
    assert up_wifi.count("new.example.com") == 2


async def test_link_going_down_detaches_the_pvd_and_purges_its_answers(
    topology, vpn_and_wifi, upstream_factory, mifdns_factory
):
    corp, wifi = vpn_and_wifi
    up_corp = await upstream_factory(corp, CORP_ZONE)
    up_wifi = await upstream_factory(wifi, PUBLIC_ZONE)
    d = await mifdns_factory(topology, config(corp_pvd(exclusive=True), wifi_pvd()))
    await d.aquery("www.corp.example")
    await d.aquery("www.example.com")
    assert {r["pvd"] for r in d.ctl("cache")} == {"corp", "wifi"}

    corp.link_down()  # the VPN goes away (netlink tells mifdns)

    def state(name):
        return next(p["state"] for p in d.ctl("pvds") if p["name"] == name)

    await wait_for(lambda: state("corp") == "detached", what="corp detached")
    assert {r["pvd"] for r in d.ctl("cache")} == {"wifi"}
    r = await d.aquery("www.corp.example", payload=1232)
    assert rcode(r) == "SERVFAIL" and [c for c, _ in edes(r)] == [22]
    assert not any(n.endswith("corp.example.") for n in names_seen(up_wifi))

    corp.link_up()
    await wait_for(lambda: state("corp") == "attached", what="corp attached")
    assert addrs(await d.aquery("www.corp.example")) == ["10.8.0.80"]
    assert up_corp.count("www.corp.example") == 2


# -- real servers -------------------------------------------------------------------------------
NSD_CORP = """$ORIGIN corp.example.
$TTL 300
@        IN SOA ns hostmaster 1 3600 600 86400 120
@        IN NS  ns
ns       IN A   10.8.0.53
www      IN A   10.8.0.80
intranet IN A   10.8.0.81
"""
NSD_REVERSE = """$ORIGIN 8.10.in-addr.arpa.
$TTL 300
@        IN SOA ns.corp.example. hostmaster.corp.example. 1 3600 600 86400 120
@        IN NS  ns.corp.example.
80.0     IN PTR www.corp.example.
"""


async def test_real_nsd_dnsmasq_and_unbound_sharing_one_address_each_serve_their_own_names(
    topology, tmp_path, mifdns_factory
):
    """NSD (authoritative, the VPN), dnsmasq (the Wi-Fi's forwarder) and Unbound (a lab's
    recursive server) all listen on 192.0.2.53, each behind its own link."""
    corp = topology.add_network("corp", "corp0")
    wifi = topology.add_network("wifi", "wlan0")
    lab = topology.add_network("lab", "lab0")
    start_nsd(topology, corp, tmp_path / "nsd",
              {"corp.example": NSD_CORP, "8.10.in-addr.arpa": NSD_REVERSE})  # fmt: skip
    dnsmasq = start_dnsmasq(topology, wifi, tmp_path / "dnsmasq", [
        "--local-ttl=300", "--local=/example.com/", "--host-record=www.example.com,203.0.113.1",
        "--local=/corp.example/", "--host-record=www.corp.example,203.0.113.80",
    ], probe="www.example.com")  # fmt: skip
    unbound = start_unbound(topology, lab, tmp_path / "unbound", [
        'local-zone: "lab.example." static',
        'local-data: "printer.lab.example. 300 IN A 10.77.0.9"',
    ], probe="printer.lab.example")  # fmt: skip
    probes = (dnsmasq.log(), unbound.log())
    d = await mifdns_factory(topology, config(
        corp_pvd(networks=["10.8.0.0/16"], exclusive=True), wifi_pvd(),
        {"name": "lab", "interface": "lab0", "servers": ["192.0.2.53"],
         "domains": ["~lab.example"]},
    ))  # fmt: skip

    assert addrs(await d.aquery("www.corp.example")) == ["10.8.0.80"]  # NSD, not the public view
    assert addrs(await d.aquery("intranet.corp.example")) == ["10.8.0.81"]
    nx = await d.aquery("nothere.corp.example")
    assert rcode(nx) == "NXDOMAIN" and nx.authority[0].name.to_text() == "corp.example."
    ptr = await d.aquery("80.0.8.10.in-addr.arpa", "PTR")
    assert addrs(ptr, "PTR") == ["www.corp.example."]
    assert addrs(await d.aquery("www.example.com")) == ["203.0.113.1"]  # dnsmasq
    assert addrs(await d.aquery("printer.lab.example")) == ["10.77.0.9"]  # Unbound

    # what each server logged: only its own names (dnsmasq: "query[A] NAME from ADDR",
    # Unbound: "info: ADDR NAME. A IN"), after the probes that checked they were up
    def dnsmasq_queries():
        lines = [ln.split(": ", 1)[1] for ln in dnsmasq.log()[len(probes[0]):].splitlines()
                 if ": query[" in ln]  # fmt: skip
        return [ln for ln in lines if not is_own_probe(ln.split()[1] + ".")]

    unbound_queries = [ln.split("info: ", 1)[1] for ln in unbound.log()[len(probes[1]):]
                       .splitlines() if ln.endswith(" IN")]  # fmt: skip
    unbound_queries = [ln for ln in unbound_queries if not is_own_probe(ln.split()[1])]
    assert dnsmasq_queries() == ["query[A] www.example.com from 192.0.2.10"]
    assert unbound_queries == ["192.0.2.10 printer.lab.example. A IN"]

    before = cached(d)
    assert {(p, n) for p, n, _, _ in before} == {
        ("corp", "www.corp.example."), ("corp", "intranet.corp.example."),
        ("corp", "nothere.corp.example."), ("corp", "80.0.8.10.in-addr.arpa."),
        ("wifi", "www.example.com."), ("lab", "printer.lab.example."),
    }  # fmt: skip
    d.ctl("detach", "corp")
    assert cached(d) == {row for row in before if row[0] != "corp"}
    r = await d.aquery("www.corp.example", payload=1232)
    assert rcode(r) == "SERVFAIL" and [c for c, _ in edes(r)] == [22]
    assert dnsmasq_queries() == ["query[A] www.example.com from 192.0.2.10"]  # nothing leaked


async def test_concurrent_queries_for_two_pvds_sharing_a_server_address_never_cross(
    topology, vpn_and_wifi, upstream_factory, mifdns_factory
):
    corp, wifi = vpn_and_wifi
    n = 100
    up_corp = await upstream_factory(corp, {f"h{i}.corp.example": {"A": f"10.8.1.{i}"}
                                            for i in range(n)})  # fmt: skip
    up_wifi = await upstream_factory(wifi, {f"h{i}.example.com": {"A": f"203.0.113.{i}"}
                                            for i in range(n)})  # fmt: skip
    await mifdns_factory(topology, config(corp_pvd(), wifi_pvd()))
    expected = {}
    queries = []
    for i in range(n):
        for j, (name, addr) in enumerate(
            ((f"h{i}.corp.example", f"10.8.1.{i}"), (f"h{i}.example.com", f"203.0.113.{i}"))
        ):
            q = dns.message.make_query(name, "A")
            q.id = 2 * i + j
            expected[q.id] = (name + ".", addr)
            queries.append(q.to_wire())

    def burst() -> dict[int, dns.message.Message]:
        got = {}
        with udp_socket(topology.host, timeout=3) as s:
            for wire in queries:  # all at once: 200 transactions in flight on two links
                s.sendto(wire, ("127.0.0.53", 53))
            while len(got) < len(queries):
                r = dns.message.from_wire(s.recv(65535))
                got[r.id] = r
        return got

    got = await asyncio.to_thread(burst)
    for qid, (name, addr) in expected.items():
        assert got[qid].question[0].name.to_text() == name and addrs(got[qid]) == [addr]
    assert sorted(names_seen(up_corp)) == sorted(f"h{i}.corp.example." for i in range(n))
    assert sorted(names_seen(up_wifi)) == sorted(f"h{i}.example.com." for i in range(n))
