"""The metrics collector (mifdns.aio.metrics) over an unstarted daemon, and the core's stats.

No sockets: the collector reads the daemon's objects; the endpoint itself is exercised by
tests/integration/test_operations.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from mifdns import config as cfgmod
from mifdns.aio.daemon import Daemon
from mifdns.aio.metrics import DaemonCollector, _parse_head
from mifdns.core.stats import CAUSES, RTT_BOUNDS, Stats, cause_class


def scrape(daemon: Daemon) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    registry = CollectorRegistry()
    registry.register(DaemonCollector(daemon))
    out = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return (name, frozenset(labels.items()))


@pytest.fixture
def daemon() -> Any:
    d = Daemon(cfgmod.default_config())
    d.loop = asyncio.new_event_loop()
    now = d.loop.time()
    for spec in (
        {
            "name": "corp",
            "interface": "tun0",
            "servers": ["198.51.100.53"],
            "domains": ["~corp.example"],
            "exclusive": True,
        },
        {"name": "wifi", "interface": "wlan0", "servers": ["192.0.2.1", "192.0.2.2"]},
    ):
        d.resolver.apply(d.registry.add(cfgmod.pvd_spec_from_mapping(spec), now=now), now)
    yield d
    d.loop.close()


def test_cause_classes_are_a_closed_set() -> None:
    assert cause_class("link wlan0 not usable") == "link"
    assert cause_class("flushed by operator") == "operator"
    assert cause_class("removed by operator") == "operator"
    assert cause_class("resolvconf -d wlan0.dhcp") == "resolvconf"
    assert cause_class("left captive state (open)") == "captive"
    assert cause_class("NAT64 prefix changed") == "nat64"
    assert cause_class("servers, domains or networks changed") == "config"
    assert cause_class("removed from config (reload)") == "config"
    assert cause_class("something new") == "other"
    assert {cause_class(c) for c in ("x", "link a", "operator")} <= set(CAUSES)


def test_rtt_buckets_follow_prometheus_le_semantics() -> None:
    stats = Stats()
    for rtt in (0.001, 0.0011, 0.3, 99.0):
        stats.rtt("corp", rtt)
    h = stats.rtt_by_pvd["corp"]
    cumulative = dict(h.cumulative())
    assert cumulative["0.001"] == 1  # le is inclusive
    assert cumulative["0.0025"] == 2
    assert cumulative["0.5"] == 3
    assert cumulative["+Inf"] == h.count == 4
    assert list(cumulative)[:-1] == [repr(b) for b in RTT_BOUNDS]
    assert h.total == pytest.approx(99.3021)


def test_collector_serves_per_pvd_series_from_the_daemons_own_counters(daemon: Daemon) -> None:
    res = daemon.resolver
    now = daemon.loop.time()
    res.counters["queries"] += 10
    res.counters["cache_hits"] += 7
    res.counters["servfail"] += 1
    res.upstream_queries["corp"] = 3
    res.stats.rtt("corp", 0.004)
    res.stats.rtt("corp", 0.020)
    server = daemon.registry.get("wifi").spec.servers[0]
    res.health.record("wifi", server, None, now)
    res.health.record("wifi", server, None, now)  # two in a row: held back
    purged = res.apply(daemon.registry.purge("corp", cause="flushed by operator"), now)
    assert purged[0]["event"] == "purged"

    found = scrape(daemon)
    assert found[key("mifdns_queries_total")] == 10
    assert found[key("mifdns_cache_hits_total")] == 7
    assert found[key("mifdns_servfail_total")] == 1
    assert found[key("mifdns_upstream_queries_total", pvd="corp")] == 3
    assert found[key("mifdns_upstream_queries_total", pvd="wifi")] == 0  # present from the start
    assert found[key("mifdns_upstream_failures_total", pvd="wifi")] == 0
    assert found[key("mifdns_upstream_rtt_seconds_bucket", pvd="corp", le="0.005")] == 1
    assert found[key("mifdns_upstream_rtt_seconds_bucket", pvd="corp", le="0.025")] == 2
    assert found[key("mifdns_upstream_rtt_seconds_count", pvd="corp")] == 2
    assert found[key("mifdns_upstream_rtt_seconds_sum", pvd="corp")] == pytest.approx(0.024)
    assert found[key("mifdns_server_failures_total", pvd="wifi", server="192.0.2.1")] == 2
    assert found[key("mifdns_server_up", pvd="wifi", server="192.0.2.1")] == 0
    assert found[key("mifdns_server_up", pvd="wifi", server="192.0.2.2")] == 1
    assert found[key("mifdns_purges_total", pvd="corp", event="purged", cause="operator")] == 1
    assert (
        found[key("mifdns_purged_entries_total", pvd="corp", event="purged", cause="operator")] == 0
    )
    assert found[key("mifdns_cache_entries", pvd="corp")] == 0
    assert found[key("mifdns_pvd_attached", pvd="corp", interface="tun0")] == 1
    assert (
        found[
            key(
                "mifdns_pvd_info",
                pvd="corp",
                interface="tun0",
                state="attached",
                captive="unknown",
                default_route="false",
                exclusive="true",
                nat64_prefixes="",
            )
        ]
        == 1
    )
    assert found[key("mifdns_limit_hits_total", limit="inflight")] == 0
    assert found[key("mifdns_build_info", version=daemon.status()["version"])] == 1


def test_the_query_path_does_not_touch_the_collector(daemon: Daemon) -> None:
    """Scraping reads; it never turns on event building (``monitoring``) or changes counters."""
    before = dict(daemon.resolver.counters)
    scrape(daemon)
    scrape(daemon)
    assert daemon.resolver.monitoring is False
    assert daemon.resolver.counters == before


@pytest.mark.parametrize(
    "head, want",
    [
        (
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: text/plain\r\n\r\n",
            ("GET", "/metrics", "text/plain"),
        ),
        (b"HEAD / HTTP/1.0\r\n\r\n", ("HEAD", "/", "")),
        (b"garbage\r\n\r\n", ("", "", "")),
    ],
)
def test_request_heads_are_parsed_leniently(head: bytes, want: tuple[str, str, str]) -> None:
    assert _parse_head(head) == want


def test_metrics_listen_port_alone_means_loopback() -> None:
    assert cfgmod.parse_config("metrics: {listen: 9153}\n").metrics.listen == "127.0.0.1:9153"
    assert cfgmod.parse_config("metrics: {listen: ':9153'}\n").metrics.listen == "127.0.0.1:9153"
    env = cfgmod.apply_env(cfgmod.default_config(), {"MIFDNS_METRICS_LISTEN": "9153"})
    assert env.metrics.listen == "127.0.0.1:9153"
    assert (
        cfgmod.parse_config("metrics: {listen: '0.0.0.0:9153'}\n").metrics.listen == "0.0.0.0:9153"
    )
