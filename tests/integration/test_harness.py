"""The test bed itself, on real namespaces: topologies, fake upstreams, the fixtures' gate."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from mifdns.harness import netns
from mifdns.harness.fakeupstream import FakeUpstream, ServerLoop, query_from, synthesize_aaaa
from mifdns.harness.netns import HarnessError
from mifdns.harness.topology import Topology

pytestmark = pytest.mark.netns

LL = ["192.0.2.53/24", "2001:db8:1::53/64", "fe80::53/64"]
CORP = """
$ORIGIN corp.example.
@      300 IN SOA ns hostmaster 1 3600 600 86400 120
www    300 IN A     198.51.100.7
www    300 IN AAAA  2001:db8:7::7
alias  300 IN CNAME www
v4only 300 IN A     198.51.100.8
v4cname 300 IN CNAME v4only
deep.under.tree 300 IN TXT "x"
7.100.51.198.in-addr.arpa. 300 IN PTR www.corp.example.
"""


def addrs(msg: dns.message.Message, rdtype: str = "A") -> list[str]:
    t = dns.rdatatype.from_text(rdtype)
    return sorted(rd.to_text() for rrset in msg.answer if rrset.rdtype == t for rd in rrset)


def ns_names() -> set[str]:
    return {line.split()[0] for line in netns.ip(None, "netns", "list").splitlines() if line}


@pytest.fixture
def two_nets(topology: Topology):
    corp = topology.add_network("corp", "corp0", server_addrs=LL)
    wifi = topology.add_network("wifi", "wlan0", server_addrs=LL)
    return corp, wifi


# -- topology + upstreams ----------------------------------------------------------------------
@pytest.mark.asyncio
async def test_same_server_address_on_two_networks_reaches_each_own_upstream(
    topology, two_nets, upstream_factory
):
    corp, wifi = two_nets
    up_corp = await upstream_factory(corp, {"www.example.com": {"A": "198.51.100.1"}})
    up_wifi = await upstream_factory(wifi, {"www.example.com": {"A": "203.0.113.1"}})
    for server in ("192.0.2.53", "2001:db8:1::53"):
        via_corp = query_from(topology.host, server, "www.example.com", ifname="corp0")
        via_wifi = query_from(topology.host, server, "www.example.com", ifname="wlan0")
        assert addrs(via_corp) == ["198.51.100.1"], server
        assert addrs(via_wifi) == ["203.0.113.1"], server
    assert up_corp.count("www.example.com", "A") == 2
    assert up_wifi.count("WWW.example.com.", "A") == 2
    assert {s.source[0] for s in up_corp.log} == {"192.0.2.10", "2001:db8:1::10"}
    assert {s.ns_iface for s in up_corp.log} == {"eth0"}


@pytest.mark.asyncio
async def test_link_local_server_is_reachable_per_interface(topology, two_nets, upstream_factory):
    corp, wifi = two_nets
    assert corp.server_ips[-1] == "fe80::53%corp0"
    assert corp.listen_addrs[-1] == "fe80::53%eth0"
    up_corp = await upstream_factory(corp, {"printer.local.example": {"A": "198.51.100.2"}})
    up_wifi = await upstream_factory(wifi, {"printer.local.example": {"A": "203.0.113.2"}})
    r1 = query_from(topology.host, "fe80::53%corp0", "printer.local.example")
    r2 = query_from(topology.host, "fe80::53%wlan0", "printer.local.example", tcp=True)
    assert addrs(r1) == ["198.51.100.2"]
    assert addrs(r2) == ["203.0.113.2"]
    (seen,) = up_corp.log
    assert seen.source[0].startswith("fe80::") and seen.source[0].endswith("%eth0")
    assert up_wifi.log[0].transport == "tcp"


@pytest.mark.asyncio
async def test_zone_answers_authoritatively_with_soa_on_negatives(
    topology, two_nets, upstream_factory
):
    corp, _ = two_nets
    await upstream_factory(corp, CORP)

    def ask(name, rdtype="A"):
        return query_from(topology.host, "192.0.2.53", name, rdtype, ifname="corp0")

    r = ask("alias.corp.example")
    assert r.flags & dns.flags.AA
    assert [rrset.rdtype for rrset in r.answer] == [dns.rdatatype.CNAME, dns.rdatatype.A]
    assert addrs(r) == ["198.51.100.7"]

    nx = ask("missing.corp.example")
    assert nx.rcode() == dns.rcode.NXDOMAIN
    assert nx.authority[0].rdtype == dns.rdatatype.SOA and nx.authority[0].name.to_text() == (
        "corp.example."
    )
    nodata = ask("v4only.corp.example", "AAAA")
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer
    assert nodata.authority[0].rdtype == dns.rdatatype.SOA
    ent = ask("under.tree.corp.example")  # empty non-terminal: NODATA, not NXDOMAIN
    assert ent.rcode() == dns.rcode.NOERROR and not ent.answer

    ptr = ask("7.100.51.198.in-addr.arpa", "PTR")
    assert addrs(ptr, "PTR") == ["www.corp.example."]
    v4only = ask("ipv4only.arpa")
    assert addrs(v4only) == ["192.0.0.170", "192.0.0.171"]


@pytest.mark.asyncio
async def test_truncate_udp_then_tcp_gets_the_full_answer(topology, two_nets, upstream_factory):
    corp, _ = two_nets
    up = await upstream_factory(corp, CORP, truncate_udp=True)
    udp = query_from(topology.host, "192.0.2.53", "www.corp.example", ifname="corp0")
    assert udp.flags & dns.flags.TC and not udp.answer
    tcp = query_from(topology.host, "192.0.2.53", "www.corp.example", ifname="corp0", tcp=True)
    assert not tcp.flags & dns.flags.TC and addrs(tcp) == ["198.51.100.7"]
    assert [s.transport for s in up.log] == ["udp", "tcp"]


@pytest.mark.asyncio
async def test_tcp_serves_several_queries_on_one_connection(topology, two_nets, upstream_factory):
    corp, _ = two_nets
    up = await upstream_factory(corp, CORP)
    sock = netns.socket_in(topology.host, socket.AF_INET, socket.SOCK_STREAM)
    with sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"corp0")
        sock.settimeout(3)
        sock.connect(("192.0.2.53", 53))
        names = ("www.corp.example", "v4only.corp.example")
        queries = [dns.message.make_query(n, "A") for n in names]
        wires = [q.to_wire() for q in queries]
        sock.sendall(b"".join(struct.pack("!H", len(w)) + w for w in wires))  # pipelined
        replies = []
        for _ in queries:
            (size,) = struct.unpack("!H", _recv_exact(sock, 2))
            replies.append(dns.message.from_wire(_recv_exact(sock, size)))
    by_id = {r.id: r for r in replies}
    assert addrs(by_id[queries[0].id]) == ["198.51.100.7"]
    assert addrs(by_id[queries[1].id]) == ["198.51.100.8"]
    assert len({s.source for s in up.log}) == 1  # one connection


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


@pytest.mark.asyncio
async def test_captive_mode_answers_every_a_with_the_portal(topology, two_nets, upstream_factory):
    _, wifi = two_nets
    up = await upstream_factory(wifi, CORP, captive="198.18.0.1")
    for name in ("www.corp.example", "anything.at.all.example"):
        r = query_from(topology.host, "192.0.2.53", name, ifname="wlan0")
        assert r.rcode() == dns.rcode.NOERROR and addrs(r) == ["198.18.0.1"]
    aaaa = query_from(topology.host, "192.0.2.53", "www.corp.example", "AAAA", ifname="wlan0")
    assert aaaa.rcode() == dns.rcode.NOERROR and not aaaa.answer
    up.captive = None  # the portal opens
    r = query_from(topology.host, "192.0.2.53", "www.corp.example", ifname="wlan0")
    assert addrs(r) == ["198.51.100.7"]


@pytest.mark.asyncio
async def test_dns64_synthesizes_aaaa_from_a_and_for_ipv4only_arpa(
    topology, two_nets, upstream_factory
):
    corp, _ = two_nets
    await upstream_factory(corp, CORP, dns64="64:ff9b::/96")

    def ask(name, rdtype="AAAA"):
        return query_from(topology.host, "2001:db8:1::53", name, rdtype, ifname="corp0")

    assert addrs(ask("ipv4only.arpa"), "AAAA") == ["64:ff9b::c000:aa", "64:ff9b::c000:ab"]
    assert addrs(ask("v4only.corp.example"), "AAAA") == ["64:ff9b::c633:6408"]
    assert addrs(ask("v4cname.corp.example"), "AAAA") == ["64:ff9b::c633:6408"]
    assert addrs(ask("www.corp.example"), "AAAA") == ["2001:db8:7::7"]  # real AAAA wins
    assert ask("missing.corp.example").rcode() == dns.rcode.NXDOMAIN


def test_synthesize_aaaa_follows_rfc6052_layouts():
    assert synthesize_aaaa("64:ff9b::/96", "192.0.2.33") == "64:ff9b::c000:221"
    # RFC 6052 section 2.4 examples
    assert synthesize_aaaa("2001:db8::/32", "192.0.2.33") == "2001:db8:c000:221::"
    assert synthesize_aaaa("2001:db8:100::/40", "192.0.2.33") == "2001:db8:1c0:2:21::"
    assert synthesize_aaaa("2001:db8:122:300::/56", "192.0.2.33") == "2001:db8:122:3c0:0:221::"
    assert synthesize_aaaa("2001:db8:122:344::/64", "192.0.2.33") == "2001:db8:122:344:c0:2:2100:0"


@pytest.mark.asyncio
async def test_misbehaviours_can_be_switched_at_runtime(topology, two_nets, upstream_factory):
    corp, _ = two_nets
    up = await upstream_factory(corp, CORP)

    def ask(timeout=2.0):
        return query_from(
            topology.host, "192.0.2.53", "www.corp.example", ifname="corp0", timeout=timeout
        )

    up.servfail = True
    assert ask().rcode() == dns.rcode.SERVFAIL
    up.set(servfail=False, refused=True)
    assert ask().rcode() == dns.rcode.REFUSED
    up.set(refused=False, ttl=5)
    assert ask().answer[0].ttl == 5
    up.set(ttl=None, delay=0.3)
    t0 = time.monotonic()
    ask()
    assert time.monotonic() - t0 >= 0.3
    up.set(delay=0, drop=True)
    with pytest.raises(dns.exception.Timeout):
        ask(timeout=0.3)
    assert up.count("www.corp.example") == 5  # dropped questions are still logged
    with pytest.raises(TypeError):
        up.set(no_such_behaviour=True)


@pytest.mark.asyncio
async def test_spoofed_replies_are_sent_as_asked(topology, two_nets, upstream_factory):
    corp, _ = two_nets
    up = await upstream_factory(corp, CORP, wrong_id=True)
    q = dns.message.make_query("www.corp.example", "A")
    sock = netns.socket_in(topology.host, socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"corp0")
        sock.settimeout(2)

        def exchange(n: int) -> list[dns.message.Message]:
            sock.sendto(q.to_wire(), ("192.0.2.53", 53))
            out = []
            for _ in range(n):
                data, src = sock.recvfrom(65535)
                out.append((dns.message.from_wire(data), src))
            return out

        ((bad, _),) = exchange(1)
        assert bad.id != q.id
        up.set(wrong_id=False, wrong_question=True, spoof_first=True)
        (bad, _), (good, _) = exchange(2)
        assert bad.question[0].name.to_text() == "wrong-question.invalid."
        assert q.is_response(good) and not q.is_response(bad)
        up.set(wrong_question=False, wrong_source="2001:db8:1::53", spoof_first=False)
    sock6 = netns.socket_in(topology.host, socket.AF_INET6, socket.SOCK_DGRAM)
    with sock6:
        sock6.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"corp0")
        sock6.settimeout(2)
        corp.server_addrs.append("2001:db8:1::54/64")
        netns.ip(corp.ns, "address", "add", "2001:db8:1::54/64", "dev", "eth0", "nodad")
        up.set(wrong_source="2001:db8:1::54")
        sock6.sendto(q.to_wire(), ("2001:db8:1::53", 53))
        data, src = sock6.recvfrom(65535)
        assert src[0] == "2001:db8:1::54" and q.is_response(dns.message.from_wire(data))


@pytest.mark.asyncio
async def test_link_down_makes_the_server_unreachable(topology, two_nets, upstream_factory):
    corp, _ = two_nets
    await upstream_factory(corp, CORP)

    def reachable(server: str) -> bool:
        try:
            query_from(topology.host, server, "www.corp.example", ifname="corp0", timeout=0.5)
            return True
        except (dns.exception.Timeout, OSError):
            return False

    assert reachable("192.0.2.53") and reachable("2001:db8:1::53")
    corp.link_down()
    assert corp.operstate == "DOWN"
    assert not reachable("192.0.2.53") and not reachable("2001:db8:1::53")
    corp.link_up()  # IPv6 addresses were flushed by the kernel: link_up restores them
    assert reachable("192.0.2.53") and reachable("2001:db8:1::53")
    corp.link_down(carrier=True)
    assert corp.operstate in ("DOWN", "LOWERLAYERDOWN")
    assert not reachable("192.0.2.53")
    corp.link_up()
    assert reachable("192.0.2.53")


@pytest.mark.asyncio
async def test_off_link_servers_are_routed_through_their_network(topology, upstream_factory):
    # Two VPN-like networks: point-to-point host addresses, the same off-link server.
    vpn1 = topology.add_network(
        "vpn1",
        "tun0",
        host_addrs=["198.18.0.2/32", "2001:db8:f::2/128"],
        server_addrs=["198.51.100.53/24", "2001:db8:53::53/64"],
    )
    vpn2 = topology.add_network(
        "vpn2", "tun1", host_addrs=["198.18.1.2/32"], server_addrs=["198.51.100.53/24"]
    )
    await upstream_factory(vpn1, {"intranet.example": {"A": "198.51.100.80"}})
    await upstream_factory(vpn2, {"intranet.example": {"A": "198.51.100.81"}})
    for _ in range(2):  # the second round after a link flap (routes restored)
        r1 = query_from(topology.host, "198.51.100.53", "intranet.example", ifname="tun0")
        r1v6 = query_from(topology.host, "2001:db8:53::53", "intranet.example", ifname="tun0")
        r2 = query_from(topology.host, "198.51.100.53", "intranet.example", ifname="tun1")
        assert addrs(r1) == addrs(r1v6) == ["198.51.100.80"] and addrs(r2) == ["198.51.100.81"]
        vpn1.link_down()
        vpn1.link_up()


def test_addresses_rename_and_remove_on_the_host_side(topology: Topology):
    net = topology.add_network("corp", "corp0")
    index = net.host_ifindex

    def host_addrs(ifname: str) -> str:
        return netns.ip(topology.host, "-br", "address", "show", "dev", ifname)

    net.add_addr("198.51.100.10/24")
    net.del_addr("192.0.2.10/24")
    assert "198.51.100.10/24" in host_addrs("corp0") and "192.0.2.10/" not in host_addrs("corp0")
    assert net.host_addrs == ["2001:db8:1::10/64", "198.51.100.10/24"]
    net.rename("tun7")
    assert net.ifname == "tun7" and net.host_ifindex == index
    assert "2001:db8:1::10/64" in host_addrs("tun7")
    net.remove()
    with pytest.raises(HarnessError):
        net.link_up()
    assert "tun7" not in netns.ip(topology.host, "-br", "link")


# -- cleanup ----------------------------------------------------------------------------------
def test_close_leaves_no_namespace_behind_even_when_the_body_raises():
    with pytest.raises(RuntimeError, match="boom"), Topology() as topo:
        topo.add_network("a", "a0")
        names = topo.namespaces
        proc = topo.popen_host(["sleep", "60"])
        assert set(names) <= ns_names()
        raise RuntimeError("boom")
    assert not set(names) & ns_names()
    assert proc.poll() is not None
    topo.close()  # idempotent


def test_close_cleans_up_after_a_half_built_network():
    topo = Topology()
    topo.add_network("a", "dup0")
    with pytest.raises(HarnessError, match="dup0"):
        topo.add_network("b", "dup0")  # namespace made, then the veth fails
    names = topo.namespaces
    assert len(names) == 3
    topo.close()
    assert not set(names) & ns_names()


def test_close_ends_processes_left_inside_the_namespaces():
    with Topology() as topo:
        net = topo.add_network("a", "a0")
        # started behind the topology's back, as a daemon of a crashed test might be
        stray = subprocess.Popen(["ip", "netns", "exec", net.ns, "sleep", "60"])
        try:
            deadline = time.monotonic() + 10  # under load `ip netns exec` takes a while to enter
            while str(stray.pid) not in netns.run(None, ["ip", "netns", "pids", net.ns]).stdout:
                assert time.monotonic() < deadline, "the stray process never entered the namespace"
                time.sleep(0.02)
        except BaseException:
            stray.kill()
            raise
    try:
        assert stray.wait(5) is not None
    finally:
        if stray.poll() is None:
            stray.kill()


def test_topologies_get_unique_names():
    with Topology() as t1, Topology() as t2:
        assert t1.host != t2.host
        n1 = t1.add_network("corp", "corp0")
        n2 = t2.add_network("corp", "corp0")  # same ifname, different host namespaces
        assert n1.ns != n2.ns


# -- standalone fake upstream, background loop -------------------------------------------------
def test_standalone_fake_upstream_prints_its_query_log(topology: Topology, tmp_path: Path):
    net = topology.add_network("corp", "corp0")
    zone = tmp_path / "corp.zone"
    zone.write_text(CORP)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mifdns.harness.fakeupstream",
            "--netns",
            net.ns,
            "--listen",
            "192.0.2.53",
            "--zone",
            str(zone),
            "--dns64",
            "64:ff9b::/96",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        ready = proc.stdout.readline()
        assert ready.startswith("# ready"), ready + proc.stderr.read()
        r = query_from(topology.host, "192.0.2.53", "v4only.corp.example", "AAAA", ifname="corp0")
        assert addrs(r, "AAAA") == ["64:ff9b::c633:6408"]
        line = proc.stdout.readline()
        assert line.startswith("udp 192.0.2.10#") and line.split()[-2:] == [
            "v4only.corp.example.",
            "AAAA",
        ]
    finally:
        proc.terminate()
        proc.wait(5)
    assert proc.returncode == 0


def test_fake_upstream_on_a_server_loop_from_sync_code(topology: Topology):
    net = topology.add_network("corp", "corp0")
    loop = ServerLoop()
    up = FakeUpstream(net.ns, net.listen_addrs, records={"a.example": {"A": "198.51.100.3"}})
    try:
        loop.call(up.start())
        r = query_from(topology.host, "192.0.2.53", "a.example", ifname="corp0")
        assert addrs(r) == ["198.51.100.3"]
    finally:
        loop.call(up.stop())
        loop.close()


# -- fixtures -----------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_mifdns_factory_runs_a_daemon_in_the_host_namespace(
    topology, mifdns_factory, tmp_path
):
    # Stand-ins for mifdns (its daemon is tested elsewhere): first one that dies at once...
    with pytest.raises(Exception, match=r"exited with 3 before answering[^$]*went wrong"):
        await mifdns_factory(topology, {}, command=["sh", "-c", "echo went wrong >&2; exit 3"])
    # ...then the fake upstream answering on 127.0.0.53 as mifdns would ("--config F" ignored).
    zone = tmp_path / "local.zone"
    zone.write_text("localhost. 0 IN A 127.0.0.1\n")
    fake = f"{sys.executable} -m mifdns.harness.fakeupstream --listen 127.0.0.53 --zone {zone}"
    daemon = await mifdns_factory(
        topology, {"netlink": False}, command=["sh", "-c", f"exec {fake}", "-"]
    )
    cfg = (tmp_path / "mifdns-1" / "mifdns.yaml").read_text()
    assert "127.0.0.53:53" in cfg and "control_socket" in cfg and "netlink: false" in cfg
    assert addrs(daemon.query("localhost.")) == ["127.0.0.1"]
    assert addrs(daemon.query("localhost.", tcp=True)) == ["127.0.0.1"]
    assert (await daemon.aquery("nothing.example")).rcode() == dns.rcode.NXDOMAIN
    assert daemon.pid > 0
    assert await daemon.stop() == 0


# -- the gate ---------------------------------------------------------------------------------
@pytest.mark.parametrize("ci", ["", "true"])
def test_gate_skips_loudly_without_namespaces_and_fails_under_ci(ci: str, tmp_path: Path):
    env = dict(os.environ, MIFDNS_NETNS_UNAVAILABLE="no netns here", CI=ci)
    proc = subprocess.run(  # noqa: PLW1510 - the exit status is the point
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-rs",
            f"{__file__}::test_topologies_get_unique_names",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).parents[2],
        timeout=120,
    )
    out = proc.stdout + proc.stderr
    assert "needs root + network namespaces: simulated by MIFDNS_NETNS_UNAVAILABLE" in out, out
    assert "WARNING: 1 network-namespace integration tests" in out, out
    if ci:
        assert proc.returncode == 1 and "1 error" in out, out  # failed in setup
    else:
        assert proc.returncode == 0 and "1 skipped" in out, out
