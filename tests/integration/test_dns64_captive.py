"""DNS64 and captive portals scoped to the PvD they come from, on real namespaces (issue 4).

Each network is a namespace behind a veth link with its own DNS server: the dnslib fake (in its
dns64 and captive modes), or real Debian servers (Unbound and BIND 9 doing DNS64, dnsmasq
answering every name with the portal's address). mifdns runs in the host namespace and is
driven only through DNS on 127.0.0.53 and ``mifdns ctl --json``.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dns.exception
import dns.message
import dns.rcode
import dns.rdatatype
import pytest
from conftest import DaemonError

from mifdns.harness import netns
from mifdns.harness.fakeupstream import FakeUpstream, query_from
from mifdns.harness.topology import Network, Topology

pytestmark = [pytest.mark.netns, pytest.mark.asyncio]

PORTAL = "192.0.2.53"  # the captive network's server: its DNS and its portal web server
CELL_ADDRS = {
    "host_addrs": ["192.0.2.10/24", "2001:db8:1::10/64"],
    "server_addrs": ["192.0.2.53/24", "2001:db8:1::53/64"],
}
WIFI_ADDRS = CELL_ADDRS
OTHER_ADDRS = {
    "host_addrs": ["198.51.100.10/24", "2001:db8:2::10/64"],
    "server_addrs": ["198.51.100.53/24", "2001:db8:2::53/64"],
}

ZONE = """
example.         300 IN SOA ns.example. hostmaster.example. 1 3600 600 86400 60
v4only.example.  300 IN A    192.0.2.80
dual.example.    300 IN A    192.0.2.81
dual.example.    300 IN AAAA 2001:db8:7::81
mapped.example.  300 IN A    192.0.2.82
mapped.example.  300 IN AAAA ::ffff:c000:252
alias.example.   300 IN CNAME v4only.example.
80.2.0.192.in-addr.arpa. 300 IN PTR v4only.example.
"""
PUBLIC = """
example.com.      300 IN SOA ns.example.com. hostmaster.example.com. 1 3600 600 86400 60
www.example.com.  300 IN A   203.0.113.1
www.example.com.  300 IN AAAA 2001:db8:cafe::1
login.hotel.example. 300 IN A 203.0.113.7
"""


# ------------------------------------------------------------------------------ helpers
def pvd(name: str, net: Network, **over: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": name,
        "interface": net.ifname,
        "servers": [net.server_ip(4)],
        "default_route": True,
    }
    spec.update(over)
    return spec


def config(*pvds: dict[str, Any]) -> dict[str, Any]:
    return {"pvds": list(pvds)}


def addrs(msg: dns.message.Message, rdtype: str = "A") -> list[str]:
    t = dns.rdatatype.from_text(rdtype)
    return sorted(rd.to_text() for rrset in msg.answer if rrset.rdtype == t for rd in rrset)


def pvd_view(daemon: Any, name: str) -> dict[str, Any]:
    (view,) = [p for p in daemon.ctl("pvds") if p["name"] == name]
    return view


def cache_kinds(daemon: Any, pvd: str | None = None) -> dict[tuple[str, str, str], str]:
    rows = daemon.ctl("cache") if pvd is None else daemon.ctl("cache", "--pvd", pvd)
    return {(r["pvd"], r["name"], r["type"]): r["kind"] for r in rows}


async def wait_for(pred: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = await asyncio.to_thread(pred)
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or pred}")
        await asyncio.sleep(0.05)


def is_probe(qname: str) -> bool:
    return qname.count(".") == 1 or qname.endswith(".invalid.") or qname == "ipv4only.arpa."


def client_names(up: FakeUpstream) -> list[str]:
    return [s.qname for s in list(up.log) if not is_probe(s.qname)]


def reverse(addr: str) -> str:
    import ipaddress

    return ipaddress.ip_address(addr).reverse_pointer + "."


# ------------------------------------------------------------------------------ DNS64
@pytest.fixture
def cell(topology: Topology) -> Network:
    return topology.add_network("cell", "wwan0", **CELL_ADDRS)


async def test_nat64_prefix_is_discovered_through_the_pvd_and_synthesized_aaaa_are_marked(
    topology, cell, upstream_factory, mifdns_factory
):
    up = await upstream_factory(cell, ZONE, dns64="64:ff9b::/96")
    d = await mifdns_factory(topology, config(pvd("cell", cell, dns64="auto")))

    await wait_for(
        lambda: pvd_view(d, "cell")["nat64_prefixes"] == ["64:ff9b::/96"],
        what="NAT64 prefix discovery",
    )
    # discovery went through the PvD's own server, over its own link
    (seen,) = [s for s in up.log if s.qname == "ipv4only.arpa."]
    assert seen.qtype == "AAAA" and seen.ns_iface == "eth0" and seen.source[0] == "192.0.2.10"
    assert pvd_view(d, "cell")["nat64_discovery"]["note"].startswith("found 64:ff9b::/96")

    synth = await d.aquery("v4only.example", "AAAA")
    assert addrs(synth, "AAAA") == ["64:ff9b::c000:250"]
    native = await d.aquery("dual.example", "AAAA")
    assert addrs(native, "AAAA") == ["2001:db8:7::81"]
    kinds = cache_kinds(d)
    assert kinds[("cell", "v4only.example.", "AAAA")] == "synthesized"
    assert kinds[("cell", "dual.example.", "AAAA")] == "positive"
    # the discovery answer itself is not cached: it is mifdns's own question
    assert not any(name == "ipv4only.arpa." for _, name, _ in kinds)

    # RFC 8880: ipv4only.arpa A is answered locally, AAAA through the DNS64 PvD
    before = len(up.log)
    assert addrs(await d.aquery("ipv4only.arpa", "A")) == ["192.0.0.170", "192.0.0.171"]
    assert len(up.log) == before
    v6 = await d.aquery("ipv4only.arpa", "AAAA")
    assert addrs(v6, "AAAA") == ["64:ff9b::c000:aa", "64:ff9b::c000:ab"]

    # none of it is served after the PvD detaches
    d.ctl("detach", "cell")
    assert not any(p == "cell" for p, _, _ in cache_kinds(d))
    after = await d.aquery("v4only.example", "AAAA")
    assert addrs(after, "AAAA") == [] and after.rcode() == dns.rcode.SERVFAIL
    assert pvd_view(d, "cell")["nat64_prefixes"] == []
    # and it is discovered again when the PvD comes back
    d.ctl("attach", "cell")
    await wait_for(
        lambda: pvd_view(d, "cell")["nat64_prefixes"] == ["64:ff9b::/96"],
        what="rediscovery after attach",
    )


async def test_native_aaaa_from_one_network_beats_a_synthesized_one_from_another(
    topology, cell, upstream_factory, mifdns_factory
):
    wifi = topology.add_network("wifi", "wlan0", **OTHER_ADDRS)
    await upstream_factory(cell, ZONE + "both.example. 300 IN A 192.0.2.90\n", dns64="64:ff9b::/96")
    up_wifi = await upstream_factory(
        wifi, "both.example. 300 IN AAAA 2001:db8:9::90\nonlyv4.example. 300 IN A 192.0.2.91\n"
    )
    d = await mifdns_factory(topology, config(pvd("cell", cell, dns64="auto"), pvd("wifi", wifi)))
    await wait_for(lambda: pvd_view(d, "cell")["nat64_prefixes"], what="discovery")
    up_wifi.delay = 0.3  # the synthesized answer comes first; it must wait for the native one
    got = await d.aquery("both.example", "AAAA")
    assert addrs(got, "AAAA") == ["2001:db8:9::90"]
    kinds = cache_kinds(d)
    assert kinds[("cell", "both.example.", "AAAA")] == "synthesized"
    assert kinds[("wifi", "both.example.", "AAAA")] == "positive"
    up_wifi.delay = 0
    again = await d.aquery("both.example", "AAAA")  # from the two partitions
    assert addrs(again, "AAAA") == ["2001:db8:9::90"]


async def test_prefix_change_is_rediscovered_when_the_ttl_runs_out_and_purges_the_pvd(
    topology, cell, upstream_factory, mifdns_factory
):
    up = await upstream_factory(cell, ZONE, dns64="64:ff9b::/96", ttl=3)
    d = await mifdns_factory(topology, config(pvd("cell", cell, dns64="auto")))
    await wait_for(lambda: pvd_view(d, "cell")["nat64_prefixes"] == ["64:ff9b::/96"])
    assert addrs(await d.aquery("v4only.example", "AAAA"), "AAAA") == ["64:ff9b::c000:250"]
    assert cache_kinds(d)[("cell", "v4only.example.", "AAAA")] == "synthesized"
    asked = sum(1 for s in up.log if s.qname == "ipv4only.arpa.")

    up.set(dns64="2001:db8:64::/96")  # the network renumbers its NAT64
    await wait_for(
        lambda: pvd_view(d, "cell")["nat64_prefixes"] == ["2001:db8:64::/96"],
        timeout=15,
        what="rediscovery at TTL expiry",
    )
    assert sum(1 for s in up.log if s.qname == "ipv4only.arpa.") > asked
    assert ("cell", "v4only.example.", "AAAA") not in cache_kinds(d)
    purges = d.ctl("status")["purges"]
    assert any(p["pvd"] == "cell" and "NAT64 prefix changed" in p["cause"] for p in purges)
    assert addrs(await d.aquery("v4only.example", "AAAA"), "AAAA") == ["2001:db8:64::c000:250"]


async def test_failed_discovery_is_asked_again_when_the_link_gains_an_address(
    topology, cell, upstream_factory, mifdns_factory
):
    """The DNS64 server is IPv6 and the link has only its IPv4 address yet (after a flap,
    SLAAC still to come); the PvD's other server, IPv4, keeps it attached but answers nothing
    (ICMP port unreachable). Discovery fails and backs off (2, 5, 15, 60, 300 s). The IPv6
    address arriving asks again at once, not at the next backoff slot; answers cached before
    that are purged when the prefix is found (they were stored as native)."""
    await upstream_factory(cell, ZONE, dns64="64:ff9b::/96")
    cell.del_addr("2001:db8:1::10/64")
    servers = ["2001:db8:1::53", "192.0.2.53:5353"]
    d = await mifdns_factory(topology, config(pvd("cell", cell, servers=servers, dns64="auto")))

    def second_failure() -> bool:
        disc = pvd_view(d, "cell")["nat64_discovery"]
        return "failed" in (disc["note"] or "") and (disc["next_in_s"] or 0) > 2.5

    await wait_for(second_failure, timeout=10, what="two failed discoveries")
    waiting = pvd_view(d, "cell")["nat64_discovery"]["next_in_s"]
    t0 = time.monotonic()
    cell.add_addr("2001:db8:1::10/64")
    await wait_for(
        lambda: pvd_view(d, "cell")["nat64_prefixes"] == ["64:ff9b::/96"],
        timeout=waiting - 1.0,
        what="discovery right after the address came",
    )
    assert time.monotonic() - t0 < waiting - 1.0
    purges = d.ctl("status")["purges"]
    assert any(p["pvd"] == "cell" and "NAT64 prefix found" in p["cause"] for p in purges)


async def test_an_ipv6_only_dns64_server_attaches_and_is_asked_when_the_ipv6_address_comes(
    topology, cell, upstream_factory, mifdns_factory
):
    """With only IPv6 servers, a link with only its IPv4 address leaves the PvD detached (no
    query can reach them); the IPv6 address arriving attaches it and discovery runs at once."""
    await upstream_factory(cell, ZONE, dns64="64:ff9b::/96")
    cell.del_addr("2001:db8:1::10/64")
    d = await mifdns_factory(
        topology, config(pvd("cell", cell, servers=["2001:db8:1::53"], dns64="auto"))
    )
    view = pvd_view(d, "cell")
    assert view["state"] == "detached" and not view["link_usable"]
    cell.add_addr("2001:db8:1::10/64")
    await wait_for(
        lambda: pvd_view(d, "cell")["nat64_prefixes"] == ["64:ff9b::/96"],
        timeout=5,
        what="attach and discovery once the IPv6 address came",
    )
    got = await d.aquery("v4only.example", "AAAA")
    assert addrs(got, "AAAA") == ["64:ff9b::c000:250"]


async def test_ctl_update_merges_dns64_options_into_the_pvds_own(
    topology, cell, upstream_factory, mifdns_factory
):
    """ "Options given are merged": --dns64-synthesize keeps the PvD's prefix, a new prefix
    keeps its synthesize, and `none` turns synthesis off with it."""
    await upstream_factory(cell, ZONE)
    d = await mifdns_factory(topology, config(pvd("cell", cell, dns64="64:ff9b::/96")))

    def dns64() -> dict[str, Any]:
        return pvd_view(d, "cell")["dns64"]

    d.ctl("update", "cell", "--dns64-synthesize")
    assert dns64() == {"prefix": "64:ff9b::/96", "synthesize": True}
    assert addrs(await d.aquery("v4only.example", "AAAA"), "AAAA") == ["64:ff9b::c000:250"]
    d.ctl("update", "cell", "--dns64", "2001:db8:64::/96")
    assert dns64() == {"prefix": "2001:db8:64::/96", "synthesize": True}
    d.ctl("update", "cell", "--no-dns64-synthesize")
    assert dns64() == {"prefix": "2001:db8:64::/96", "synthesize": False}
    d.ctl("update", "cell", "--dns64-synthesize")
    d.ctl("update", "cell", "--dns64", "none")
    assert dns64() == {"prefix": "none", "synthesize": False}
    with pytest.raises(DaemonError, match="needs a prefix"):
        d.ctl("update", "cell", "--dns64-synthesize")


async def test_local_synthesis_and_ptr_from_a_plain_resolver(
    topology, cell, upstream_factory, mifdns_factory
):
    up = await upstream_factory(cell, ZONE)  # no DNS64 at all
    d = await mifdns_factory(
        topology, config(pvd("cell", cell, dns64={"prefix": "64:ff9b::/96", "synthesize": True}))
    )
    assert pvd_view(d, "cell")["nat64_prefixes"] == ["64:ff9b::/96"]  # static: set at attach

    got = await d.aquery("v4only.example", "AAAA")
    assert addrs(got, "AAAA") == ["64:ff9b::c000:250"]
    assert got.answer[0].ttl <= 60  # min(A TTL 300, the NODATA's SOA minimum 60)
    assert [(s.qname, s.qtype) for s in up.log if s.qname == "v4only.example."] == [
        ("v4only.example.", "AAAA"),
        ("v4only.example.", "A"),
    ]
    kinds = cache_kinds(d, "cell")
    assert kinds[("cell", "v4only.example.", "AAAA")] == "synthesized"
    assert kinds[("cell", "v4only.example.", "A")] == "positive"

    cname = await d.aquery("alias.example", "AAAA")
    assert addrs(cname, "CNAME") == ["v4only.example."]
    assert addrs(cname, "AAAA") == ["64:ff9b::c000:250"]
    assert addrs(await d.aquery("dual.example", "AAAA"), "AAAA") == ["2001:db8:7::81"]
    # ::ffff:0:0/96 counts as absent (RFC 6147 5.1.4)
    assert addrs(await d.aquery("mapped.example", "AAAA"), "AAAA") == ["64:ff9b::c000:252"]
    # never on NXDOMAIN
    gone = await d.aquery("gone.example", "AAAA")
    assert gone.rcode() == dns.rcode.NXDOMAIN
    assert not up.saw("gone.example", "A")

    # PTR of a synthesized address: the embedded IPv4 address's in-addr.arpa name, same PvD
    ptr = await d.aquery(reverse("64:ff9b::c000:250"), "PTR")
    assert addrs(ptr, "CNAME") == ["80.2.0.192.in-addr.arpa."]
    assert addrs(ptr, "PTR") == ["v4only.example."]
    assert up.saw("80.2.0.192.in-addr.arpa", "PTR")
    assert not any(s.qname.endswith("ip6.arpa.") for s in up.log)
    assert cache_kinds(d)[("cell", reverse("64:ff9b::c000:250"), "PTR")] == "synthesized"
    assert d.ctl("explain", reverse("64:ff9b::c000:250"), "PTR")["candidates"][0]["pvd"] == "cell"


def _start_real_dns64(kind: str, topology: Topology, net: Network, workdir: Path) -> Any:
    """Unbound or BIND 9 with DNS64 64:ff9b::/96 on the network's server address, forwarding
    everything to a fake authoritative server on 127.0.0.1:5353 in the same namespace."""
    workdir.mkdir()
    if kind == "unbound":
        conf = workdir / "unbound.conf"
        conf.write_text(
            "\n".join(
                [
                    "server:",
                    f"  interface: {net.server_ip(4)}",
                    "  port: 53",
                    "  access-control: 0.0.0.0/0 allow",
                    "  do-daemonize: no",
                    '  username: ""',
                    '  chroot: ""',
                    f'  directory: "{workdir}"',
                    '  pidfile: ""',
                    "  use-syslog: no",
                    f'  logfile: "{workdir}/unbound.log"',
                    "  verbosity: 1",
                    "  do-ip6: no",
                    '  module-config: "dns64 iterator"',
                    "  dns64-prefix: 64:ff9b::/96",
                    "  do-not-query-localhost: no",
                    "  qname-minimisation: no",
                    "  num-threads: 1",
                    "  so-reuseport: no",
                    "forward-zone:",
                    '  name: "."',
                    "  forward-addr: 127.0.0.1@5353",
                    "remote-control:",
                    "  control-enable: no",
                ]
            )
            + "\n"
        )
        argv = ["unbound", "-d", "-c", str(conf)]
    else:
        conf = workdir / "named.conf"
        conf.write_text(f"""
options {{
    directory "{workdir}";
    pid-file none;
    listen-on port 53 {{ {net.server_ip(4)}; }};
    listen-on-v6 {{ none; }};
    recursion yes;
    allow-query {{ any; }};
    allow-recursion {{ any; }};
    forwarders {{ 127.0.0.1 port 5353; }};
    forward only;
    dnssec-validation no;
    qname-minimization off;
    dns64 64:ff9b::/96 {{ clients {{ any; }}; }};
}};
controls {{ }};
""")
        argv = ["named", "-g", "-c", str(conf)]
    with open(workdir / "server.out", "w") as out:
        proc = topology.popen(
            net.ns, argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    deadline = time.monotonic() + 15
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"{kind} exited: {(workdir / 'server.out').read_text()}")
        try:
            r = query_from(
                topology.host,
                net.server_ip(4),
                "v4only.example",
                "AAAA",
                ifname=net.ifname,
                timeout=0.3,
            )
            if r.answer:
                return proc
        except (OSError, dns.exception.DNSException):
            pass  # not answering yet
        if time.monotonic() > deadline:
            raise AssertionError(f"{kind} does not answer: {(workdir / 'server.out').read_text()}")
        time.sleep(0.1)


@pytest.mark.parametrize("server", ["unbound", "bind9"])
async def test_prefix_discovered_from_a_real_dns64_resolver(
    server, topology, cell, server_loop, tmp_path, mifdns_factory
):
    auth = FakeUpstream(cell.ns, ["127.0.0.1"], port=5353, zone=ZONE, name="auth")
    await server_loop.acall(auth.start())
    try:
        await asyncio.to_thread(_start_real_dns64, server, topology, cell, tmp_path / server)
        d = await mifdns_factory(topology, config(pvd("cell", cell, dns64="auto")))
        await wait_for(
            lambda: pvd_view(d, "cell")["nat64_prefixes"] == ["64:ff9b::/96"],
            what=f"discovery from {server}",
        )
        assert addrs(await d.aquery("v4only.example", "AAAA"), "AAAA") == ["64:ff9b::c000:250"]
        assert addrs(await d.aquery("dual.example", "AAAA"), "AAAA") == ["2001:db8:7::81"]
        kinds = cache_kinds(d)
        assert kinds[("cell", "v4only.example.", "AAAA")] == "synthesized"
        assert kinds[("cell", "dual.example.", "AAAA")] == "positive"
        d.ctl("detach", "cell")
        assert cache_kinds(d) == {}
    finally:
        await auth.stop()


# ------------------------------------------------------------------------------ captive portals
@pytest.fixture
def hotel(topology: Topology) -> tuple[Network, Network]:
    """A captive Wi-Fi (192.0.2.0/24, its portal and DNS at 192.0.2.53) and another default
    route (a cellular network, 198.51.100.0/24)."""
    wifi = topology.add_network("wifi", "wlan0", **WIFI_ADDRS)
    cell = topology.add_network("cell", "wwan0", **OTHER_ADDRS)
    return wifi, cell


def _dnsmasq_portal(topology: Topology, net: Network, workdir: Path) -> Any:
    """dnsmasq as hotel captive portals run it: every name -> the portal's address."""
    workdir.mkdir()
    argv = [
        "dnsmasq",
        "-k",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        f"--listen-address={net.server_ip(4)}",
        "--bind-interfaces",
        "--user=root",
        f"--pid-file={workdir}/dnsmasq.pid",
        f"--address=/#/{PORTAL}",
        "--local-ttl=300",
        "--log-queries",
        f"--log-facility={workdir}/dnsmasq.log",
    ]
    with open(workdir / "dnsmasq.out", "w") as out:
        proc = topology.popen(
            net.ns, argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    deadline = time.monotonic() + 10
    while True:
        try:
            query_from(topology.host, net.server_ip(4), "x.example", ifname=net.ifname, timeout=0.2)
            return proc
        except (OSError, dns.exception.DNSException):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError((workdir / "dnsmasq.out").read_text()) from None
            time.sleep(0.05)


@pytest.mark.parametrize("portal_dns", ["fake", "dnsmasq"])
async def test_captive_network_is_detected_by_probe_and_avoided_then_released_at_login(
    portal_dns, topology, hotel, upstream_factory, mifdns_factory, tmp_path
):
    wifi, cell = hotel
    up_cell = await upstream_factory(cell, PUBLIC)
    if portal_dns == "fake":
        up_wifi = await upstream_factory(wifi, PUBLIC, captive=PORTAL)
    else:
        proc = await asyncio.to_thread(_dnsmasq_portal, topology, wifi, tmp_path / "dnsmasq")
    d = await mifdns_factory(
        topology, config(pvd("wifi", wifi, captive_domains=["hotel.example"]), pvd("cell", cell))
    )

    # detected without being told: the hijack probe's impossible names came back with addresses
    view = await wait_for(
        lambda: (v := pvd_view(d, "wifi"))["captive"] == "captive" and v, what="captive detection"
    )
    detail = view["captive_detail"]
    assert detail["probe"] == "hijacked" and detail["probe_addresses"] == [PORTAL]
    assert pvd_view(d, "cell")["captive"] != "captive"

    # general names avoid the portal while another default route exists
    for _ in range(3):
        got = await d.aquery("www.example.com")
        assert addrs(got) == ["203.0.113.1"]
    if portal_dns == "fake":
        assert "www.example.com." not in client_names(up_wifi)
    assert [c["pvd"] for c in d.ctl("explain", "www.example.com")["candidates"]] == ["cell"]

    # the portal's own names still go to it, cached as kind captive with a short TTL
    login = await d.aquery("login.hotel.example")
    assert addrs(login) == [PORTAL]
    rows = [r for r in d.ctl("cache", "--pvd", "wifi") if r["name"] == "login.hotel.example."]
    assert [r["kind"] for r in rows] == ["captive"] and rows[0]["ttl"] <= 30
    assert "login.hotel.example." not in client_names(up_cell)

    # login: the portal stops lying and the user (or a dispatcher script) says so
    if portal_dns == "fake":
        up_wifi.set(captive=None)
    else:
        proc.terminate()
        proc.wait(5)
        up_wifi = await upstream_factory(wifi, PUBLIC)
    d.ctl("captive", "wifi", "open")
    assert pvd_view(d, "wifi")["captive"] == "open"
    assert not any(p == "wifi" for p, _, _ in cache_kinds(d))  # the lies were purged
    for name in ("login.hotel.example", "www.example.com"):
        for _ in range(3):
            got = await d.aquery(name)
            assert PORTAL not in addrs(got), name
            assert got.rcode() == dns.rcode.NOERROR
    # probed again after the login, and the probe agrees
    await wait_for(
        lambda: pvd_view(d, "wifi")["captive_detail"]["probe"] == "clean", what="probe after login"
    )
    assert pvd_view(d, "wifi")["captive"] == "open"


async def test_a_session_that_expires_while_open_is_noticed_by_the_first_lie(
    topology, hotel, upstream_factory, mifdns_factory
):
    """Open after a login, the portal comes back (the session expired): the first answer that
    points at the portal's address seen before starts a probe at once, instead of waiting for
    the 10-minute one, and the lies cached meanwhile are dropped."""
    wifi, cell = hotel
    await upstream_factory(cell, PUBLIC)
    up_wifi = await upstream_factory(wifi, PUBLIC + "intra.hotel.example. 300 IN A 192.0.2.99\n")
    up_wifi.set(captive=PORTAL)
    d = await mifdns_factory(
        topology, config(pvd("wifi", wifi, domains=["~hotel.example"]), pvd("cell", cell))
    )
    await wait_for(lambda: pvd_view(d, "wifi")["captive"] == "captive", what="detection")
    up_wifi.set(captive=None)
    d.ctl("captive", "wifi", "open")
    await wait_for(
        lambda: pvd_view(d, "wifi")["captive_detail"]["probe"] == "clean", what="probe after login"
    )
    detail = pvd_view(d, "wifi")["captive_detail"]
    assert detail["portal_addresses"] == [PORTAL]  # remembered after the login
    assert addrs(await d.aquery("intra.hotel.example")) == ["192.0.2.99"]

    up_wifi.set(captive=PORTAL)  # the session expired: every name -> the portal again
    first = await d.aquery("mail.hotel.example")
    assert addrs(first) == [PORTAL]  # one lie gets through: nothing could know yet
    view = await wait_for(
        lambda: (v := pvd_view(d, "wifi"))["captive"] == "captive" and v,
        what="captive again well before the 10-minute probe",
    )
    assert view["captive_detail"]["probe"] == "hijacked"
    assert view["captive_detail"]["sighted_s_ago"] is not None
    # the lie and everything else cached while open is gone; what is cached now is captive
    assert not any(k != "captive" for (p, _, _), k in cache_kinds(d).items() if p == "wifi")


async def test_saying_open_while_the_portal_dns_still_lies_serves_no_portal_answer(
    topology, hotel, upstream_factory, mifdns_factory
):
    wifi, cell = hotel
    await upstream_factory(cell, PUBLIC)
    await upstream_factory(wifi, PUBLIC, captive=PORTAL)
    d = await mifdns_factory(topology, config(pvd("wifi", wifi), pvd("cell", cell)))
    await wait_for(lambda: pvd_view(d, "wifi")["captive"] == "captive", what="detection")
    d.ctl("captive", "wifi", "open")  # nobody logged in: the DNS still answers every name
    view = await wait_for(
        lambda: (v := pvd_view(d, "wifi"))["captive"] == "captive" and v,
        what="captive again after the re-probe",
    )
    assert view["captive_detail"]["probe"] == "hijacked"
    for _ in range(5):
        assert addrs(await d.aquery("www.example.com")) == ["203.0.113.1"]
    assert not any(k != "captive" for (p, _, _), k in cache_kinds(d).items() if p == "wifi")


# -- the RFC 8908 API ---------------------------------------------------------------------------
def _make_cert(workdir: Path, host: str) -> tuple[Path, Path]:
    cert, key = workdir / "portal.crt", workdir / "portal.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "2",
            "-subj",
            f"/CN={host}",
            "-addext",
            f"subjectAltName=DNS:{host}",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


class PortalApi:
    """An RFC 8908 API server (HTTPS) in a network's namespace; ``status`` is what it says."""

    def __init__(self, status: dict[str, Any]) -> None:
        self.status = status
        self.hits: list[str] = []
        self.server: asyncio.base_events.Server | None = None

    async def start(self, ns: str, addr: str, port: int, cert: Path, key: Path) -> None:
        import socket

        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert, key)
        sock = netns.socket_in(ns, socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((addr, port))
        sock.listen(16)
        sock.setblocking(False)
        self.server = await asyncio.start_server(self._serve, sock=sock, ssl=ctx)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            self.hits.append(head.decode("latin-1").split("\r\n")[0])
            body = json.dumps(self.status).encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/captive+json\r\n"
                b"Cache-Control: private\r\nContent-Length: %d\r\nConnection: close"
                b"\r\n\r\n%s" % (len(body), body)
            )
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            pass  # a client that went away; the test sees it in ``hits``
        finally:
            writer.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


async def test_captive_portal_api_says_captive_then_open_after_login(
    topology, hotel, upstream_factory, mifdns_factory, server_loop, tmp_path, monkeypatch
):
    wifi, cell = hotel
    cert, key = _make_cert(tmp_path, "portal.wifi.example")
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the daemon trusts the portal's certificate
    api = PortalApi(
        {
            "captive": True,
            "user-portal-url": "https://login.portal-cdn.example/",
            "seconds-remaining": 0,
        }
    )
    await server_loop.acall(api.start(wifi.ns, PORTAL, 8443, cert, key))
    try:
        # this portal intercepts HTTP but does not rewrite DNS: only the API can tell
        wifi_zone = (
            PUBLIC
            + f"""
portal.wifi.example.     60 IN A {PORTAL}
login.portal-cdn.example. 60 IN A {PORTAL}
"""
        )
        up_wifi = await upstream_factory(wifi, wifi_zone)
        up_cell = await upstream_factory(
            cell,
            PUBLIC
            + """
portal-cdn.example. 300 IN SOA ns.portal-cdn.example. h.portal-cdn.example. 1 3600 600 86400 60
login.portal-cdn.example. 300 IN A 203.0.113.50
""",
        )
        uri = "https://portal.wifi.example:8443/captive-api"
        d = await mifdns_factory(
            topology, config(pvd("wifi", wifi, captive_portal=uri), pvd("cell", cell))
        )
        view = await wait_for(
            lambda: (v := pvd_view(d, "wifi"))["captive"] == "captive" and v,
            what="captive state from the API",
        )
        detail = view["captive_detail"]
        assert detail["api"]["captive"] is True and detail["probe"] == "clean"
        assert detail["portal_hosts"] == ["portal.wifi.example", "login.portal-cdn.example"]
        assert api.hits and api.hits[0].startswith("GET /captive-api HTTP/1.")
        # the API's host was resolved through the Wi-Fi's own server
        assert up_wifi.saw("portal.wifi.example", "A")
        assert not up_cell.saw("portal.wifi.example")

        # the portal's hosts go to the portal's network; everything else avoids it
        assert addrs(await d.aquery("login.portal-cdn.example")) == [PORTAL]
        assert addrs(await d.aquery("www.example.com")) == ["203.0.113.1"]
        assert "www.example.com." not in client_names(up_wifi)
        assert not up_cell.saw("login.portal-cdn.example")

        # login done: the API says so; the PvD is open, its partition purged, no portal answer
        api.status = {"captive": False}
        await wait_for(
            lambda: pvd_view(d, "wifi")["captive"] == "open", timeout=15, what="open after login"
        )
        assert not any(p == "wifi" for p, _, _ in cache_kinds(d))
        got = await d.aquery("login.portal-cdn.example")
        assert addrs(got) in (["203.0.113.50"], [PORTAL])  # both default routes may answer
        assert (
            d.ctl("explain", "login.portal-cdn.example")["candidates"][0]["reason"]
            == "default route"
        )
    finally:
        await server_loop.acall(api.stop())
