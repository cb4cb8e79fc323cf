"""Live PvD lifecycle on real namespaces: links, addresses, renames, admin detach, reverse zones.

Each test builds two networks (corp0 and wlan0, distinct subnets so their reverse zones differ),
one fake upstream per network, and a mifdns process in the topology's host namespace. Latency
figures come from the daemon's own lifecycle records (wall clock), compared with the wall clock
just before the ``ip`` command, so the time spent spawning ``mifdns ctl`` does not count.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import dns.rcode
import pytest
import pytest_asyncio

from mifdns.harness import netns

pytestmark = [pytest.mark.netns, pytest.mark.asyncio]

CORP_HOST = ["10.1.0.10/24", "2001:db8:1::10/64"]
CORP_SERVER = ["10.1.0.53/24", "2001:db8:1::53/64"]
WIFI_HOST = ["10.2.0.10/24", "2001:db8:2::10/64"]
WIFI_SERVER = ["10.2.0.53/24", "2001:db8:2::53/64"]

CORP_ZONE = {
    "www.corp.example": {"A": "198.51.100.7"},
    "www.example.com": {"A": "198.51.100.1"},
    "10.0.1.10.in-addr.arpa": {"PTR": "laptop.corp.example."},
}
WIFI_ZONE = {
    "www.example.com": {"A": "203.0.113.1"},
    "www.corp.example": {"A": "203.0.113.66"},  # the other horizon: must never be used
}


def addrs(msg: Any) -> list[str]:
    return sorted(rd.to_text() for rrset in msg.answer for rd in rrset)


def wait_for(pred: Callable[[], Any], timeout: float = 3.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def pvd(daemon: Any, name: str) -> dict[str, Any] | None:
    return next((p for p in daemon.ctl("pvds") if p["name"] == name), None)


def cache_names(daemon: Any, name: str) -> set[str]:
    return {e["name"].rstrip(".").lower() for e in daemon.ctl("cache", "--pvd", name)}


def lifecycle_after(daemon: Any, t0: float, event: str, name: str) -> dict[str, Any] | None:
    for rec in daemon.ctl("status")["lifecycle"]:
        if rec["event"] == event and rec["pvd"] == name and rec["time"] >= t0:
            return rec
    return None


def config(**extra: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "listen": ["127.0.0.53:53"],
        "pvds": [
            {
                "name": "corp",
                "interface": "corp0",
                "servers": ["10.1.0.53"],
                "domains": ["corp.example"],
                "default_route": False,
            },
            {"name": "wifi", "interface": "wlan0", "servers": ["10.2.0.53"]},
        ],
    }
    cfg.update(extra)
    return cfg


@pytest.fixture
def nets(topology: Any) -> tuple[Any, Any]:
    corp = topology.add_network("corp", "corp0", host_addrs=CORP_HOST, server_addrs=CORP_SERVER)
    wifi = topology.add_network("wifi", "wlan0", host_addrs=WIFI_HOST, server_addrs=WIFI_SERVER)
    return corp, wifi


@pytest_asyncio.fixture
async def env(topology: Any, nets: Any, upstream_factory: Any, mifdns_factory: Any) -> Any:
    corp, wifi = nets
    up_corp = await upstream_factory(corp, CORP_ZONE)
    up_wifi = await upstream_factory(wifi, WIFI_ZONE)
    daemon = await mifdns_factory(topology, config())
    return daemon, corp, wifi, up_corp, up_wifi


async def test_link_down_detaches_and_purges_within_a_second_and_up_reattaches(env: Any) -> None:
    daemon, corp, _, up_corp, up_wifi = env
    assert addrs(daemon.query("www.corp.example")) == ["198.51.100.7"]
    assert "www.corp.example" in cache_names(daemon, "corp")

    t0 = time.time()
    corp.link_down()
    rec = wait_for(lambda: lifecycle_after(daemon, t0, "detached", "corp"))
    latency = rec["time"] - t0
    print(
        f"\ndetach latency after `ip link set corp0 down`: {latency * 1000:.0f} ms "
        f"(purged {rec['purged']})"
    )
    assert latency < 1.0
    assert rec["purged"] >= 1
    assert pvd(daemon, "corp")["state"] == "detached"
    assert cache_names(daemon, "corp") == set()
    # detached: a corp name has no PvD (corp is not exclusive, wifi is the default route, but the
    # cached corp answer is gone and the wifi horizon answers instead)
    assert addrs(daemon.query("www.corp.example")) == ["203.0.113.66"]

    t1 = time.time()
    corp.link_up()
    rec = wait_for(lambda: lifecycle_after(daemon, t1, "attached", "corp"))
    print(f"re-attach latency after `ip link set corp0 up`: {(rec['time'] - t1) * 1000:.0f} ms")
    assert rec["time"] - t1 < 1.0
    before = up_corp.count("www.corp.example", "A")
    assert addrs(daemon.query("www.corp.example")) == ["198.51.100.7"]
    assert up_corp.count("www.corp.example", "A") == before + 1  # refetched: the cache was purged
    assert up_wifi.count("www.corp.example", "A") == 1


async def test_carrier_loss_detaches_within_a_second(env: Any) -> None:
    daemon, corp, _, _, _ = env
    daemon.query("www.corp.example")
    t0 = time.time()
    corp.link_down(carrier=True)  # far end down: NO-CARRIER, IFF_UP and addresses stay
    rec = wait_for(lambda: lifecycle_after(daemon, t0, "detached", "corp"))
    print(f"\ndetach latency after carrier loss: {(rec['time'] - t0) * 1000:.0f} ms")
    assert rec["time"] - t0 < 1.0
    assert cache_names(daemon, "corp") == set()
    corp.link_up()
    wait_for(lambda: pvd(daemon, "corp")["state"] == "attached")


async def test_last_usable_address_removed_detaches_and_purges(env: Any) -> None:
    daemon, corp, _, _, _ = env
    daemon.query("www.corp.example")
    corp.del_addr("2001:db8:1::10/64")
    await asyncio.sleep(0.3)
    p = pvd(daemon, "corp")
    assert p["state"] == "attached"  # the IPv4 address its server needs is still there
    assert p["networks"] == ["10.1.0.0/24"]
    assert "www.corp.example" in cache_names(daemon, "corp")  # a prefix change keeps the cache

    t0 = time.time()
    corp.del_addr("10.1.0.10/24")  # only the fe80:: link-local address is left
    rec = wait_for(lambda: lifecycle_after(daemon, t0, "detached", "corp"))
    assert rec["time"] - t0 < 1.0
    assert "not usable" in rec["cause"]
    assert cache_names(daemon, "corp") == set()

    corp.add_addr("10.1.0.10/24")
    wait_for(lambda: pvd(daemon, "corp")["state"] == "attached")
    assert addrs(daemon.query("www.corp.example")) == ["198.51.100.7"]


async def test_a_link_without_an_address_of_the_servers_family_does_not_attach_them(
    topology: Any, nets: Any, upstream_factory: Any, mifdns_factory: Any
) -> None:
    """corp's only server is IPv6: with only an IPv4 address on corp0 it cannot be reached, so
    corp is detached (its names fail at once with a reason, instead of each query timing out),
    until the IPv6 address comes. wifi's IPv4 server on wlan0 is unaffected by IPv6 going."""
    corp, wifi = nets
    await upstream_factory(corp, CORP_ZONE)
    await upstream_factory(wifi, WIFI_ZONE)
    cfg = config()
    cfg["pvds"][0].update(servers=["2001:db8:1::53"], exclusive=True)
    corp.del_addr("2001:db8:1::10/64")
    wifi.del_addr("2001:db8:2::10/64")
    daemon = await mifdns_factory(topology, cfg)
    assert pvd(daemon, "corp")["state"] == "detached"
    assert pvd(daemon, "wifi")["state"] == "attached"

    t0 = time.time()
    corp.add_addr("2001:db8:1::10/64")
    rec = wait_for(lambda: lifecycle_after(daemon, t0, "attached", "corp"))
    assert rec["time"] - t0 < 1.0
    assert addrs(daemon.query("www.corp.example")) == ["198.51.100.7"]

    t0 = time.time()
    corp.del_addr("2001:db8:1::10/64")  # IPv4 10.1.0.10 stays: no use to an IPv6 server
    rec = wait_for(lambda: lifecycle_after(daemon, t0, "detached", "corp"))
    assert rec["cause"] == "link corp0 has no IPv6 address (the PvD's servers are IPv6)"
    assert cache_names(daemon, "corp") == set()
    assert daemon.query("www.corp.example").rcode() == dns.rcode.SERVFAIL  # exclusive: no leak
    assert addrs(daemon.query("www.example.com")) == ["203.0.113.1"]


async def test_interface_prefixes_become_the_pvds_networks_for_reverse_lookups(env: Any) -> None:
    daemon, _, _, up_corp, up_wifi = env
    p = pvd(daemon, "corp")
    assert p["networks"] == ["10.1.0.0/24", "2001:db8:1::/64"]
    explained = daemon.ctl("explain", "10.0.1.10.in-addr.arpa", "PTR")
    assert [c["pvd"] for c in explained["candidates"]] == ["corp"]
    assert "10.1.0.0/24" in explained["candidates"][0]["reason"]
    r = daemon.query("10.0.1.10.in-addr.arpa", "PTR")
    assert addrs(r) == ["laptop.corp.example."]
    assert up_corp.count("10.0.1.10.in-addr.arpa", "PTR") == 1
    assert up_wifi.count("10.0.1.10.in-addr.arpa", "PTR") == 0
    # the wifi side's reverse zone is wifi's
    ip6 = daemon.ctl(
        "explain", "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.2.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa", "PTR"
    )
    assert [c["pvd"] for c in ip6["candidates"]] == ["wifi"]


async def test_deleted_interface_detaches_and_a_recreated_one_is_followed_by_name(
    topology: Any, env: Any, upstream_factory: Any
) -> None:
    daemon, corp, _, up_corp, _ = env
    assert addrs(daemon.query("www.corp.example")) == ["198.51.100.7"]  # opens corp0 sockets
    old_index = corp.host_ifindex
    t0 = time.time()
    corp.remove()
    rec = wait_for(lambda: lifecycle_after(daemon, t0, "detached", "corp"))
    assert rec["time"] - t0 < 1.0
    assert pvd(daemon, "corp")["networks"] == []

    # a new corp0 (new ifindex) on another network with its own server at the same address
    corp2 = topology.add_network("corp2", "corp0", host_addrs=CORP_HOST, server_addrs=CORP_SERVER)
    assert corp2.host_ifindex != old_index
    up2 = await upstream_factory(corp2, {"www.corp.example": {"A": "198.51.100.99"}})
    wait_for(lambda: pvd(daemon, "corp")["state"] == "attached")
    # answered by the new network: sockets bound to the old ifindex were retired
    assert addrs(daemon.query("www.corp.example")) == ["198.51.100.99"]
    assert up2.count("www.corp.example", "A") == 1
    assert up_corp.count("www.corp.example", "A") == 1


async def test_renamed_interface_leaves_its_pvd_and_the_name_is_followed(env: Any) -> None:
    daemon, corp, _, _, _ = env
    daemon.query("www.corp.example")
    t0 = time.time()
    corp.rename("corpold")
    rec = wait_for(lambda: lifecycle_after(daemon, t0, "detached", "corp"))
    assert rec["time"] - t0 < 1.0
    assert cache_names(daemon, "corp") == set()
    await asyncio.sleep(0.2)
    assert pvd(daemon, "corp")["state"] == "detached"  # corpold is not corp0
    corp.rename("corp0")
    wait_for(lambda: pvd(daemon, "corp")["state"] == "attached")
    assert addrs(daemon.query("www.corp.example")) == ["198.51.100.7"]


async def test_admin_detach_stays_detached_whatever_the_link_does(env: Any) -> None:
    daemon, corp, _, _, _ = env
    daemon.query("www.corp.example")
    assert daemon.ctl("detach", "corp")["state"] == "detached"
    assert cache_names(daemon, "corp") == set()
    corp.link_down()
    corp.link_up()
    await asyncio.sleep(0.3)
    p = pvd(daemon, "corp")
    assert p["state"] == "detached" and p["admin_detached"] and p["link_usable"]
    assert daemon.ctl("attach", "corp")["state"] == "attached"
    assert addrs(daemon.query("www.corp.example")) == ["198.51.100.7"]


async def test_link_events_for_unrelated_interfaces_and_bursts_never_stop_the_daemon(
    topology: Any, env: Any
) -> None:
    daemon = env[0]
    daemon.query("www.corp.example")
    # a burst: 40 veth pairs created, addressed, brought up and deleted
    lines = []
    for i in range(40):
        lines += [
            f"link add vb{i} type veth peer name vc{i}",
            f"link set vb{i} up",
            f"address add 10.9.{i}.1/24 dev vb{i}",
        ]
    lines += [f"link del vb{i}" for i in range(40)]
    netns.ip_batch(topology.host, lines)
    await asyncio.sleep(0.3)
    assert pvd(daemon, "corp")["state"] == "attached"
    assert "www.corp.example" in cache_names(daemon, "corp")  # nothing of corp's changed
    assert daemon.query("www.example.com").rcode() == dns.rcode.NOERROR
    assert daemon.proc.poll() is None


async def test_moving_a_pvd_to_a_down_interface_detaches_it_and_back_reattaches(
    env: Any,
) -> None:
    """``ctl update --interface`` onto a link that is down is a detach like any other: the
    partition goes (before, the PvD lost its tag silently and the old answers stayed in the
    cache as garbage), and moving back onto a usable link is an attach (probes start)."""
    daemon, _, wifi, up_corp, _ = env
    assert addrs(daemon.query("www.corp.example")) == ["198.51.100.7"]
    wifi.link_down()
    wait_for(lambda: pvd(daemon, "wifi")["state"] == "detached")
    t0 = time.time()
    daemon.ctl("update", "corp", "--interface", "wlan0")
    rec = wait_for(lambda: lifecycle_after(daemon, t0, "detached", "corp"))
    assert rec["purged"] >= 1
    assert pvd(daemon, "corp")["state"] == "detached"
    assert "www.corp.example" not in {e["name"].rstrip(".") for e in daemon.ctl("cache")}
    t1 = time.time()
    daemon.ctl("update", "corp", "--interface", "corp0")
    wait_for(lambda: lifecycle_after(daemon, t1, "attached", "corp"))
    before = up_corp.count("www.corp.example", "A")
    assert addrs(daemon.query("www.corp.example")) == ["198.51.100.7"]
    assert up_corp.count("www.corp.example", "A") == before + 1  # asked again: purged
