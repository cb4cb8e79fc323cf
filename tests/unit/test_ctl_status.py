"""``mifdns ctl status`` as people read it: the daemon's ``status`` result, formatted."""

from __future__ import annotations

from mifdns import ctl

STATUS = {
    "version": "0.1.0",
    "pid": 42,
    "uptime_s": 65,
    "listen": ["127.0.0.53:53"],
    "config": None,
    "counters": {"queries": 10, "cache_hits": 1, "cache_misses": 8, "servfail": 1, "local": 1},
    "inflight": 2,
    "metrics": None,
    "query_log": True,
    "monitor": {"subscribers": 2, "dropped": 0},
    "upstream_queries": {"corp": 9, "wifi": 3},
    "upstream_failures": {"corp": 1},
    "pvds": [
        {
            "name": "corp",
            "state": "attached",
            "interface": "tun0",
            "origin": "config",
            "servers": ["198.51.100.53", "198.51.100.54"],
            "server_health": {
                "198.51.100.53": {"srtt_ms": 12.34, "failures": 0, "answers": 1, "held_back_s": 0},
                "198.51.100.54": {"srtt_ms": None, "failures": 3, "answers": 0, "held_back_s": 4.0},
            },
            "domains": ["~corp.example"],
            "networks": ["10.8.0.0/16"],
            "default_route": False,
            "exclusive": True,
            "captive": "open",
            "nat64_prefixes": [],
            "cache_entries": 5,
            "upstream_queries": 9,
            "upstream_failures": 1,
        }
    ],
    "lifecycle": [
        {
            "event": "purged",
            "pvd": "corp",
            "cause": "flushed by operator",
            "purged": 7,
            "time": 1.7e9,
        }
    ],
}


def test_servers_show_their_health_from_server_health() -> None:
    text = ctl.format_status(STATUS)
    assert "198.51.100.53 (srtt 12.3 ms, 0 failures, 1 answer)" in text
    assert "198.51.100.54 (no answer yet, 3 failures, held back 4 s)" in text
    assert "Upstream queries: 9 sent, 1 transactions failed" in text


def test_head_summarises_queries_and_observability() -> None:
    lines = ctl.format_status(STATUS).splitlines()
    assert lines[0] == "mifdns 0.1.0, up 1min 5s, pid 42"
    text = "\n".join(lines)
    for needle in (
        "Config: built-in defaults",
        "Queries: 10 (1 cache hit (10%), 8 misses, 1 SERVFAIL, 1 local), 2 in flight",
        "Metrics: off",
        "Query log: on",
        "Monitors: 2 watching, 0 events dropped",
        "Upstream, per PvD:",
        "upstream_queries: corp=9 wifi=3",
        "upstream_failures: corp=1",
        "Recent events:",
        "purged corp: flushed by operator, purged 7 entries",
    ):
        assert needle in text, needle


def test_an_older_daemon_without_the_new_fields_still_formats() -> None:
    old = {"listen": ["127.0.0.53:53"], "pvds": [{"name": "x", "servers": ["192.0.2.1"]}]}
    text = ctl.format_status(old)
    assert "192.0.2.1" in text and "Queries" not in text and "Metrics" not in text
