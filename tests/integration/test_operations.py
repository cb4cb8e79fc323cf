"""Operations on a live daemon: ``ctl status``, ``ctl monitor``, the metrics endpoint, the
query log. Real clients (dig, dnspython) ask from the topology's host namespace.

Every test builds two networks: corp0 (a VPN-like PvD, routing domain corp.example, two
servers of which the first never answers) and wlan0 (the default route).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families

from mifdns.harness import netns

pytestmark = [pytest.mark.netns, pytest.mark.asyncio]

CORP_HOST = ["10.1.0.10/24"]
CORP_SERVER = ["10.1.0.53/24", "10.1.0.54/24"]
WIFI_HOST = ["10.2.0.10/24"]
WIFI_SERVER = ["10.2.0.53/24"]
DEAD, LIVE = "10.1.0.54", "10.1.0.53"
METRICS = ("127.0.0.1", 9153)

CORP_ZONE = {
    "www.corp.example": {"A": "198.51.100.7"},
    "git.corp.example": {"A": "198.51.100.8"},
    "wiki.corp.example": {"A": "198.51.100.9"},
}
WIFI_ZONE = {
    "www.example.com": {"A": "203.0.113.1"},
    "news.example.com": {"A": "203.0.113.2"},
}


def config(**extra: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "listen": ["127.0.0.53:53"],
        "upstream": {"timeout": 0.3},
        "pvds": [
            {
                "name": "corp",
                "interface": "corp0",
                "servers": [DEAD, LIVE],
                "domains": ["~corp.example"],
                "exclusive": True,
                "networks": ["10.8.0.0/16"],
            },
            {"name": "wifi", "interface": "wlan0", "servers": ["10.2.0.53"]},
        ],
    }
    cfg.update(extra)
    return cfg


def wait_for(pred: Callable[[], Any], timeout: float = 5.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def dig(daemon: Any, name: str, rdtype: str = "A") -> list[str]:
    """A real stub client in the host namespace: dig +short (bind9-dnsutils, installed by
    `scripts/setup --bench`), else dnspython."""
    if shutil.which("dig") is None:
        return sorted(rd.to_text() for rrset in daemon.query(name, rdtype).answer for rd in rrset)
    out = netns.run(
        daemon.topology.host, ["dig", "@127.0.0.53", name, rdtype, "+short", "+tries=1", "+time=3"]
    )
    return sorted(out.stdout.split())


def pvd(status: dict[str, Any], name: str) -> dict[str, Any]:
    return next(p for p in status["pvds"] if p["name"] == name)


def settle(daemon: Any, quiet: float = 0.8) -> None:
    """Let the daemon's own attach-time probes (captive-portal hijack check, whichever PvDs get
    them) finish: wait until no probe starts and nothing is sent upstream for ``quiet`` seconds
    (more than one upstream timeout). Then warm corp up: its dead first server fails once (at
    the latest now) and ranks behind the live one, so later figures are deltas of client
    queries alone."""

    def mark() -> tuple[int, int, int]:
        st = daemon.ctl("status")
        return st["counters"]["probes"], st["counters"]["upstream_queries"], st["inflight"]

    deadline = time.monotonic() + 10
    last, since = mark(), time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - since < quiet:
        time.sleep(0.1)
        now = mark()
        if now != last:
            last, since = now, time.monotonic()
    assert daemon.query("wiki.corp.example").answer
    corp = pvd(daemon.ctl("status"), "corp")
    assert corp["server_health"][DEAD]["failures"] >= 1
    assert corp["server_health"][LIVE]["srtt_ms"] is not None


@pytest_asyncio.fixture
async def env(topology: Any, upstream_factory: Any) -> Any:
    corp = topology.add_network("corp", "corp0", host_addrs=CORP_HOST, server_addrs=CORP_SERVER)
    wifi = topology.add_network("wifi", "wlan0", host_addrs=WIFI_HOST, server_addrs=WIFI_SERVER)
    up_corp = await upstream_factory(corp, CORP_ZONE, listen=[LIVE])
    up_dead = await upstream_factory(corp, CORP_ZONE, listen=[DEAD], drop=True)
    up_wifi = await upstream_factory(wifi, WIFI_ZONE)
    return up_corp, up_dead, up_wifi


# ------------------------------------------------------------------------------ ctl status


async def test_status_shows_each_pvd_its_servers_health_and_the_counters(
    topology: Any, env: Any, mifdns_factory: Any
) -> None:
    _, up_dead, _ = env
    daemon = await mifdns_factory(topology, config())
    settle(daemon)
    before = daemon.ctl("status")
    assert dig(daemon, "www.corp.example") == ["198.51.100.7"]  # a miss
    assert dig(daemon, "www.corp.example") == ["198.51.100.7"]  # a hit
    assert dig(daemon, "www.example.com") == ["203.0.113.1"]
    assert up_dead.count("www.corp.example", "A") == 0  # the live server ranks first now
    daemon.ctl("flush", "wifi")

    st = daemon.ctl("status")
    assert st["listen"] == ["127.0.0.53:53"]
    corp = pvd(st, "corp")
    assert corp["state"] == "attached" and corp["interface"] == "corp0"
    assert corp["servers"] == [DEAD, LIVE]
    dead, live = corp["server_health"][DEAD], corp["server_health"][LIVE]
    assert dead["failures"] >= 1 and dead["srtt_ms"] is None and dead["answers"] == 0
    assert live["srtt_ms"] > 0
    assert live["answers"] == pvd(before, "corp")["server_health"][LIVE]["answers"] + 1
    assert corp["domains"] == ["~corp.example"]
    assert "10.8.0.0/16" in corp["networks"] and "10.1.0.0/24" in corp["networks"]
    assert corp["default_route"] is False and corp["exclusive"] is True
    assert corp["nat64_prefixes"] == [] and corp["captive"] in ("open", "unknown")
    assert corp["cache_entries"] == 2  # wiki (settle) and www
    assert corp["upstream_queries"] == pvd(before, "corp")["upstream_queries"] + 1
    wifi = pvd(st, "wifi")
    assert wifi["default_route"] is True and wifi["cache_entries"] == 0  # flushed
    c, c0 = st["counters"], before["counters"]
    assert c["queries"] - c0["queries"] == 3
    assert c["cache_hits"] - c0["cache_hits"] == 1
    assert c["cache_misses"] - c0["cache_misses"] == 2
    assert c["servfail"] == c0["servfail"]
    assert st["upstream_queries"]["corp"] == corp["upstream_queries"]
    assert st["upstream_queries"]["wifi"] == before["upstream_queries"]["wifi"] + 1
    assert st["cache"]["per_pvd"] == {"corp": 2, "wifi": 0}
    flush = [p for p in st["purges"] if p["pvd"] == "wifi"]
    assert flush and flush[-1]["entries"] == 1 and flush[-1]["cause"] == "flushed by operator"
    assert abs(flush[-1]["time"] - time.time()) < 60  # wall clock, not the loop's clock
    assert set(st["limits"]["hits"]) >= {"inflight", "tcp_clients", "upstream_tcp"}

    text = daemon.ctl_text("status")
    for needle in (
        "PvD corp: attached",
        "Interface: corp0",
        f"{DEAD} (no answer yet, {dead['failures']} failure",
        f"{LIVE} (srtt ",
        f"0 failures, {live['answers']} answer",
        "Domains: ~corp.example",
        "Networks: ",
        "10.8.0.0/16",
        "Default route: no",
        "Exclusive: yes",
        "NAT64 prefixes: -",
        "Captive: ",
        "Cache entries: 2",
        f"Upstream queries: {corp['upstream_queries']} sent",
        "PvD wifi: attached",
        "Queries: ",
        "cache hit",
        "SERVFAIL",
        "upstream_queries: ",
        f"corp={corp['upstream_queries']}",
        f"wifi={st['upstream_queries']['wifi']}",
        "Recent purges:",
        "1 entries",
        "flushed by operator",
        "Limits:",
        "hits: ",
        "inflight=0",
        "Recent events:",
    ):
        assert needle in text, f"{needle!r} not in:\n{text}"


async def test_status_exit_code_is_the_health_check(
    topology: Any, env: Any, mifdns_factory: Any
) -> None:
    daemon = await mifdns_factory(topology, config())
    argv = [sys.executable, "-m", "mifdns", "ctl", "--socket", daemon.control_socket, "status"]
    assert netns.run(topology.host, argv, check=False, env=daemon.env()).returncode == 0
    await daemon.stop()
    gone = netns.run(topology.host, argv, check=False, env=daemon.env())
    assert gone.returncode == 3 and "cannot reach mifdns" in gone.stderr


async def test_raw_control_requests_with_wrong_types_get_a_one_line_error_not_a_traceback(
    topology: Any, env: Any, mifdns_factory: Any
) -> None:
    """The control protocol is JSON lines anyone with the socket can write (not only ctl): a
    field of the wrong type is a user error naming the field, never an internal error, and a
    string where a boolean belongs is not taken as true."""
    from mifdns import ctl
    from mifdns.errors import ControlError

    daemon = await mifdns_factory(topology, config())
    bad = [
        ({"cmd": "flush", "name": {"a": 1}}, "'name' must be a string"),
        ({"cmd": "flush", "name": ["corp"]}, "'name' must be a string"),
        ({"cmd": "cache", "pvd": [1]}, "'pvd' must be a string"),
        (
            {"cmd": "resolvconf", "action": "add", "record": "lo.x", "exclusive": "no"},
            "'exclusive' must be true or false",
        ),
        ({"cmd": "resolvconf", "action": "add", "record": "lo.x", "text": 5}, "'text' must be"),
    ]
    for req, message in bad:
        with pytest.raises(ControlError) as info:
            await asyncio.to_thread(ctl.request, daemon.control_socket, req)
        assert message in str(info.value) and "internal error" not in str(info.value), req
    assert daemon.ctl("explain", "www.corp.example", "65535")["candidates"]  # a type by number
    assert "Traceback" not in daemon.stderr(), daemon.stderr()


# ------------------------------------------------------------------------------ ctl monitor


def start_monitor(daemon: Any, as_json: bool) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "mifdns", "ctl", "--socket", daemon.control_socket]
    argv += ["--json", "monitor"] if as_json else ["monitor"]
    return daemon.topology.popen_host(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=daemon.env()
    )


def stop_monitor(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGINT)  # ctl monitor: Ctrl-C ends it with exit 0
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    return out


async def test_monitor_streams_decisions_and_lifecycle_to_several_watchers(
    topology: Any, env: Any, mifdns_factory: Any
) -> None:
    daemon = await mifdns_factory(topology, config())
    settle(daemon)
    dig(daemon, "git.corp.example")  # before anyone watches: no event for it anywhere
    monitors = [
        start_monitor(daemon, True),
        start_monitor(daemon, True),
        start_monitor(daemon, False),
    ]
    try:
        wait_for(lambda: daemon.ctl("status")["monitor"]["subscribers"] == 3)
        assert dig(daemon, "www.corp.example") == ["198.51.100.7"]  # miss (and one timeout)
        assert dig(daemon, "www.corp.example") == ["198.51.100.7"]  # hit
        assert dig(daemon, "www.example.com") == ["203.0.113.1"]
        flushed = daemon.ctl("flush", "corp")
        daemon.ctl("detach", "wifi")
        daemon.ctl("attach", "wifi")
        daemon.ctl("captive", "wifi", "captive")
        daemon.ctl("captive", "wifi", "open")  # leaving the captive state purges
        daemon.ctl("reload")
        await asyncio.sleep(0.3)
    finally:
        outputs = [stop_monitor(m) for m in monitors]
    assert flushed["entries"] == 3  # wiki, git and www

    streams = [[json.loads(line) for line in out.splitlines()] for out in outputs[:2]]
    assert streams[0] == streams[1]  # every watcher sees the same events
    events = streams[0]
    queries = [e for e in events if e["event"] == "query"]
    assert "git.corp.example." not in {q["name"] for q in queries}
    miss, hit, wifi_q = queries[:3]
    assert miss["name"] == "www.corp.example." and miss["type"] == "A"
    assert miss["pvd"] == "corp" and miss["cache"] == "miss" and miss["kind"] == "positive"
    assert miss["candidates"] == [
        {"pvd": "corp", "grade": 2, "reason": miss["candidates"][0]["reason"]}
    ]
    assert "corp.example" in miss["candidates"][0]["reason"]
    assert miss["ms"] > 0
    assert hit["pvd"] == "corp" and hit["cache"] == "hit" and hit["ms"] < miss["ms"]
    assert wifi_q["pvd"] == "wifi" and wifi_q["candidates"][0]["grade"] == 0
    assert all(isinstance(e["time"], float) for e in events)

    def one(kind: str, name: str, **match: Any) -> dict[str, Any]:
        found = [
            e
            for e in events
            if e["event"] == kind
            and e.get("pvd") == name
            and all(e.get(k) == v for k, v in match.items())
        ]
        assert found, f"no {kind} {name} {match} in {events}"
        return found[0]

    assert one("purged", "corp", cause="flushed by operator")["purged"] == 3
    assert one("detached", "wifi", cause="detached by operator")["purged"] == 1
    one("attached", "wifi", cause="attached by operator")
    captive = [
        e["what"]
        for e in events
        if e["event"] == "changed" and e["pvd"] == "wifi" and e["what"].startswith("captive ")
    ]  # the probe's changes come in between
    went = next(i for i, what in enumerate(captive) if what.endswith(" -> captive"))
    assert captive[went + 1] == "captive captive -> open"
    one("purged", "wifi", cause="left captive state (open)")
    reload = next(e for e in events if e["event"] == "reload")
    assert reload["unchanged"] == ["corp", "wifi"]

    human = outputs[2].splitlines()
    assert any(
        "query www.corp.example. A -> corp (miss, positive" in ln and "candidates: corp[2 " in ln
        for ln in human
    ), human
    assert any("query www.corp.example. A -> corp (hit, positive" in ln for ln in human), human
    assert any(" purged corp: flushed by operator, purged 3 entries" in ln for ln in human), human
    assert any(" detached wifi: detached by operator, purged 1 entry" in ln for ln in human)
    assert any(" reload" in ln for ln in human), human
    # nobody watches any more: the daemon stops building events
    wait_for(lambda: daemon.ctl("status")["monitor"]["subscribers"] == 0)


# ------------------------------------------------------------------------------ metrics


def http_get(
    ns: str, path: str = "/metrics", accept: str | None = None
) -> tuple[int, dict[str, str], str]:
    sock = netns.socket_in(ns, socket.AF_INET, socket.SOCK_STREAM)
    with sock:
        sock.settimeout(5)
        sock.connect(METRICS)
        head = f"GET {path} HTTP/1.1\r\nHost: localhost\r\n"
        if accept:
            head += f"Accept: {accept}\r\n"
        sock.sendall((head + "\r\n").encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    raw_head, _, body = data.partition(b"\r\n\r\n")
    lines = raw_head.decode().split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    return int(lines[0].split()[1]), headers, body.decode()


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(found: dict[Any, float], name: str, **labels: str) -> float:
    return found[(name, frozenset(labels.items()))]


async def test_metrics_endpoint_serves_per_pvd_prometheus_text_and_counts_purges(
    topology: Any, env: Any, mifdns_factory: Any
) -> None:
    daemon = await mifdns_factory(topology, config(metrics={"listen": "9153"}))  # loopback
    settle(daemon)
    base = samples(http_get(topology.host)[2])
    for name in ("www.corp.example", "git.corp.example"):
        daemon.query(name)
    daemon.query("www.corp.example")  # a hit
    daemon.query("www.example.com")
    flushed = daemon.ctl("flush", "corp")["entries"]
    assert flushed == 3  # wiki (settle), www, git
    daemon.ctl("detach", "wifi")

    code, headers, body = http_get(topology.host)
    assert code == 200 and headers["content-type"].startswith("text/plain")
    found = samples(body)

    def delta(name: str, **labels: str) -> float:
        return value(found, name, **labels) - base.get((name, frozenset(labels.items())), 0)

    assert delta("mifdns_queries_total") == 4
    assert delta("mifdns_cache_hits_total") == 1
    assert delta("mifdns_cache_misses_total") == 3
    assert delta("mifdns_servfail_total") == 0
    assert delta("mifdns_upstream_queries_total", pvd="corp") == 2
    assert delta("mifdns_upstream_queries_total", pvd="wifi") == 1
    assert delta("mifdns_upstream_rtt_seconds_count", pvd="corp") == 2
    assert delta("mifdns_upstream_rtt_seconds_bucket", pvd="corp", le="+Inf") == 2
    assert delta("mifdns_upstream_rtt_seconds_bucket", pvd="corp", le="0.25") == 2
    assert value(found, "mifdns_upstream_rtt_seconds_count", pvd="wifi") >= 1
    assert 0 < delta("mifdns_upstream_rtt_seconds_sum", pvd="corp") < 0.5
    assert value(found, "mifdns_server_failures_total", pvd="corp", server=DEAD) >= 1
    assert delta("mifdns_server_failures_total", pvd="corp", server=DEAD) == 0
    assert delta("mifdns_server_answers_total", pvd="corp", server=LIVE) == 2
    assert value(found, "mifdns_server_up", pvd="corp", server=LIVE) == 1
    assert 0 < value(found, "mifdns_server_srtt_seconds", pvd="corp", server=LIVE) < 0.25
    assert (
        value(found, "mifdns_purged_entries_total", pvd="corp", event="purged", cause="operator")
        == flushed
    )
    assert value(found, "mifdns_purges_total", pvd="corp", event="purged", cause="operator") == 1
    assert (
        value(found, "mifdns_purged_entries_total", pvd="wifi", event="detached", cause="operator")
        == 1
    )
    assert delta("mifdns_purges_total", pvd="wifi", event="detached", cause="operator") == 1
    assert value(found, "mifdns_cache_entries", pvd="corp") == 0
    assert value(found, "mifdns_pvd_attached", pvd="wifi", interface="wlan0") == 0
    assert value(found, "mifdns_pvd_attached", pvd="corp", interface="corp0") == 1
    assert value(found, "mifdns_limit_hits_total", limit="inflight") == 0
    assert value(found, "mifdns_monitor_subscribers") == 0
    info = [k for k in found if k[0] == "mifdns_pvd_info"]
    assert {dict(k[1])["pvd"] for k in info} == {"corp", "wifi"}

    # OpenMetrics when asked for it; 404 elsewhere; the address is in ctl status
    code, headers, body = http_get(topology.host, accept="application/openmetrics-text")
    assert headers["content-type"].startswith("application/openmetrics-text")
    assert body.rstrip().endswith("# EOF")
    assert http_get(topology.host, "/nope")[0] == 404
    assert daemon.ctl("status")["metrics"] == "http://127.0.0.1:9153/metrics"


async def test_metrics_are_off_by_default(topology: Any, env: Any, mifdns_factory: Any) -> None:
    daemon = await mifdns_factory(topology, config())
    assert daemon.ctl("status")["metrics"] is None
    with pytest.raises(ConnectionRefusedError):
        http_get(topology.host)


# ------------------------------------------------------------------------------ query log


def query_log_lines(daemon: Any) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for line in daemon.stderr().splitlines()
        if line.startswith('{"event":"query"')
    ]


async def test_query_log_on_writes_one_json_line_per_query_with_pvd_and_reason(
    topology: Any, env: Any, mifdns_factory: Any
) -> None:
    # --log-level warning: the query log is on because the config says so, whatever the level
    daemon = await mifdns_factory(
        topology,
        config(query_log=True),
        command=[sys.executable, "-m", "mifdns", "run", "--log-level", "warning"],
    )
    wait_for(lambda: os.path.exists(daemon.control_socket))
    settle(daemon)
    assert dig(daemon, "www.corp.example") == ["198.51.100.7"]
    assert dig(daemon, "www.corp.example") == ["198.51.100.7"]
    daemon.query("nothing.example.com")

    def logged() -> list[dict[str, Any]]:  # without the fixture's readiness probe
        return [e for e in query_log_lines(daemon) if e["name"] != "localhost."]

    lines = wait_for(lambda: len(logged()) >= 4 and logged())
    lines = [e for e in lines if e["name"] != "wiki.corp.example."]  # settle's
    miss, hit, nx = lines[:3]
    assert miss["event"] == "query" and miss["pvd"] == "corp" and miss["cache"] == "miss"
    assert "corp.example" in miss["candidates"][0]["reason"]
    assert hit["cache"] == "hit" and hit["pvd"] == "corp"
    assert nx["name"] == "nothing.example.com." and nx["pvd"] == "wifi"
    assert nx["kind"] == "nxdomain" and nx["rcode"] == "NXDOMAIN"
    assert nx["candidates"] == [
        {"pvd": "wifi", "grade": 0, "reason": nx["candidates"][0]["reason"]}
    ]
    assert all(isinstance(e["time"], float) and isinstance(e["ms"], float) for e in lines)


async def test_query_log_off_never_logs_even_while_a_monitor_watches(
    topology: Any, env: Any, mifdns_factory: Any
) -> None:
    daemon = await mifdns_factory(topology, config())
    settle(daemon)
    monitor = start_monitor(daemon, True)
    try:
        wait_for(lambda: daemon.ctl("status")["monitor"]["subscribers"] == 1)
        dig(daemon, "www.corp.example")
        dig(daemon, "www.corp.example")
        daemon.query("www.example.com")
        await asyncio.sleep(0.3)
    finally:
        watched = stop_monitor(monitor)
    assert sum(1 for line in watched.splitlines() if '"event":"query"' in line) == 3
    daemon.query("news.example.com")
    assert daemon.ctl("status")["query_log"] is False
    assert '{"event":"query"' not in daemon.stderr()
    assert query_log_lines(daemon) == []
