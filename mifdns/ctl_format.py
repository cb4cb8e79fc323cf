"""Text for people from ``mifdns ctl`` results: pure functions, fed sample data by the tests.

They read results with ``.get`` throughout: the daemon may add fields, and old or new daemons
may lack some.
"""

from __future__ import annotations

import time
from typing import Any

# formatting for people


def _yn(value: Any) -> str:
    if value is None:
        return "auto"
    return "yes" if value else "no"


def _list(value: Any, empty: str = "-") -> str:
    if value is None or value == []:
        return empty
    if isinstance(value, (list, tuple)):
        return " ".join(_server_addr(v) for v in value) or empty
    return str(value)


def _server_addr(server: Any) -> str:
    if isinstance(server, dict):
        return str(server.get("address") or server.get("server") or "?")
    return str(server)


def _server_text(server: Any) -> str:
    """``198.51.100.53 (srtt 12.3 ms, 2 failures)``; servers may be strings or objects."""
    if not isinstance(server, dict):
        return str(server)
    extra = []
    srtt_ms = server.get("srtt_ms")
    if srtt_ms is None and isinstance(server.get("srtt"), (int, float)):
        srtt_ms = server["srtt"] * 1000.0  # seconds
    if isinstance(srtt_ms, (int, float)):
        extra.append(f"srtt {srtt_ms:.1f} ms")
    elif "srtt_ms" in server and not server.get("answers"):
        extra.append("no answer yet")
    if server.get("failures") is not None:
        n = server["failures"]
        extra.append(f"{n} failure{'' if n == 1 else 's'}")
    if isinstance(server.get("answers"), int) and server["answers"]:
        extra.append(_count(server["answers"], "answer"))
    held = server.get("held_back_s")
    if isinstance(held, (int, float)) and held > 0:
        extra.append(f"held back {held:g} s")
    return _server_addr(server) + (f" ({', '.join(extra)})" if extra else "")


def _with_health(pvd: dict[str, Any]) -> list[Any]:
    """The PvD's servers, each merged with its ``server_health`` entry when there is one."""
    health = pvd.get("server_health")
    servers = pvd.get("servers") or []
    if not isinstance(health, dict) or not isinstance(servers, list):
        return servers if isinstance(servers, list) else [servers]
    return [
        {"address": s, **health[s]} if isinstance(s, str) and isinstance(health.get(s), dict) else s
        for s in servers
    ]


def _clock(t: Any, *, millis: bool = False) -> str:
    if not isinstance(t, (int, float)):
        return str(t) if t is not None else "-"
    seconds, ms = divmod(round(t * 1000), 1000)
    stamp = time.strftime("%H:%M:%S", time.localtime(seconds))
    if millis:
        stamp += f".{ms:03d}"
    if not millis and abs(time.time() - t) > 86400:
        stamp = time.strftime("%Y-%m-%d ", time.localtime(t)) + stamp
    return stamp


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return "?"
    s = int(seconds)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    parts = [f"{d}d"] if d else []
    if d or h:
        parts.append(f"{h}h")
    if d or h or m:
        parts.append(f"{m}min")
    parts.append(f"{s}s")
    return " ".join(parts)


def _size(n: Any) -> str:
    if not isinstance(n, (int, float)):
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""  # unreachable


def _fields(pairs: list[tuple[str, Any]], indent: int = 2) -> list[str]:
    """``resolvectl``-style block: labels right-aligned, multi-line values continued."""
    width = max((len(k) for k, _ in pairs), default=0)
    lines = []
    for key, value in pairs:
        values = value if isinstance(value, list) and value else [value]
        for i, v in enumerate(values):
            label = f"{key}:" if i == 0 else ""
            lines.append(f"{' ' * indent}{label:>{width + 1}} {v}".rstrip())
    return lines


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[str(c) for c in row] for row in [headers, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells)


def _tree(data: Any, indent: int = 2) -> list[str]:
    """Nested dicts as indented ``key: value`` lines; flat sub-dicts on one line."""
    lines: list[str] = []
    if not isinstance(data, dict):
        return [" " * indent + str(data)]
    for key, value in data.items():
        if (
            isinstance(value, dict)
            and value
            and all(not isinstance(v, (dict, list)) for v in value.values())
        ):
            lines.append(f"{' ' * indent}{key}: " + " ".join(f"{k}={v}" for k, v in value.items()))
        elif isinstance(value, dict):
            lines.append(f"{' ' * indent}{key}:" + ("" if value else " -"))
            lines.extend(_tree(value, indent + 2))
        elif isinstance(value, list):
            lines.append(f"{' ' * indent}{key}: {_list(value)}")
        else:
            lines.append(f"{' ' * indent}{key}: {value}")
    return lines


def format_pvd(pvd: dict[str, Any]) -> str:
    """One PvD as a block (``status``, and the result of ``attach``/``update``)."""
    state = pvd.get("state", "?")
    if pvd.get("admin_down") or pvd.get("administratively_detached"):
        state += " (administratively)"
    head = f"PvD {pvd.get('name', '?')}: {state}"
    if pvd.get("origin"):
        head += f"  [{pvd['origin']}]"
    pairs: list[tuple[str, Any]] = [("Interface", pvd.get("interface", "-"))]
    pairs.append(("DNS servers", [_server_text(s) for s in _with_health(pvd)] or "-"))
    pairs.append(("Domains", _list(pvd.get("domains"))))
    if pvd.get("networks") is not None:
        pairs.append(("Networks", _list(pvd.get("networks"))))
    pairs.append(("Default route", _yn(pvd.get("default_route"))))
    pairs.append(("Exclusive", _yn(pvd.get("exclusive", False))))
    if pvd.get("trust_ad"):
        pairs.append(("Trusts AD", "yes (AD bits from its servers are passed on)"))
    if pvd.get("dns64") not in (None, "none", {}):
        dns64 = pvd["dns64"]
        pairs.append(
            (
                "DNS64",
                dns64
                if not isinstance(dns64, dict)
                else " ".join(f"{k}={v}" for k, v in dns64.items()),
            )
        )
    pairs.append(("NAT64 prefixes", _list(pvd.get("nat64_prefixes"))))
    captive = str(pvd.get("captive", "unknown"))
    if pvd.get("captive_portal"):
        captive += f" (portal {pvd['captive_portal']})"
    pairs.append(("Captive", captive))
    if pvd.get("captive_domains"):
        pairs.append(("Captive domains", _list(pvd["captive_domains"])))
    if pvd.get("cache_entries") is not None:
        pairs.append(("Cache entries", pvd["cache_entries"]))
    if pvd.get("upstream_queries") is not None:
        text = f"{pvd['upstream_queries']} sent"
        if pvd.get("upstream_failures"):
            text += f", {pvd['upstream_failures']} transactions failed"
        pairs.append(("Upstream queries", text))
    return "\n".join([head, *_fields(pairs)])


def format_status(result: Any) -> str:
    if not isinstance(result, dict):
        return format_result(result)
    head = "mifdns"
    if result.get("version"):
        head += f" {result['version']}"
    if result.get("uptime_s") is not None:
        head += f", up {_duration(result['uptime_s'])}"
    if result.get("pid") is not None:
        head += f", pid {result['pid']}"
    pairs: list[tuple[str, Any]] = [("Listen", _list(result.get("listen")))]
    if "config" in result:
        pairs.append(("Config", result.get("config") or "built-in defaults"))
    counters = result.get("counters")
    if isinstance(counters, dict) and "queries" in counters:
        pairs.append(("Queries", _query_summary(counters, result.get("inflight"))))
    cache = result.get("cache")
    if isinstance(cache, dict):
        text = f"{cache.get('entries', '?')} entries"
        if cache.get("bytes") is not None:
            text += f", {_size(cache['bytes'])}"
        per = cache.get("per_pvd")
        if isinstance(per, dict) and per:
            text += " (" + ", ".join(f"{k} {v}" for k, v in per.items()) + ")"
        pairs.append(("Cache", text))
    if result.get("control_socket"):
        pairs.append(("Control", result["control_socket"]))
    if "metrics" in result:
        pairs.append(("Metrics", result.get("metrics") or "off"))
    if "query_log" in result:
        pairs.append(("Query log", "on" if result.get("query_log") else "off"))
    monitor = result.get("monitor")
    if isinstance(monitor, dict):
        pairs.append(
            (
                "Monitors",
                (
                    f"{monitor.get('subscribers', 0)} watching, "
                    f"{monitor.get('dropped', 0)} events dropped"
                ),
            )
        )
    blocks = ["\n".join([head, *_fields(pairs)])]
    pvds = result.get("pvds") or []
    if pvds:
        blocks.extend(format_pvd(p) if isinstance(p, dict) else str(p) for p in pvds)
    else:
        blocks.append("No PvDs.")
    per_pvd = {
        k: result[k]
        for k in ("upstream_queries", "upstream_failures")
        if isinstance(result.get(k), dict) and result[k]
    }
    if per_pvd:
        blocks.append("\n".join(["Upstream, per PvD:", *_tree(per_pvd)]))
    if result.get("counters"):
        blocks.append("\n".join(["Counters:", *_tree(result["counters"])]))
    purges = result.get("purges") or []
    if purges:
        rows = [
            [
                _clock(p.get("time")),
                p.get("pvd", "?"),
                f"{p.get('entries', '?')} entries",
                p.get("cause", ""),
            ]
            for p in purges
            if isinstance(p, dict)
        ]
        table = _table(["TIME", "PVD", "PURGED", "CAUSE"], rows)
        blocks.append("Recent purges:\n" + "\n".join("  " + ln for ln in table.splitlines()))
    if result.get("limits"):
        blocks.append("\n".join(["Limits:", *_tree(result["limits"])]))
    events = [e for e in result.get("lifecycle") or [] if isinstance(e, dict)][-10:]
    if events:
        blocks.append("\n".join(["Recent events:", *("  " + format_event(e) for e in events)]))
    return "\n\n".join(blocks)


def _count(n: Any, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


def _query_summary(c: dict[str, Any], inflight: Any) -> str:
    """``120 (100 cache hits (83%), 20 misses, 1 SERVFAIL), 2 in flight``."""
    total = c.get("queries", 0)
    hits = c.get("cache_hits", 0)
    parts = [
        _count(hits, "cache hit")
        + (
            f" ({100 * hits / total:.0f}%)"
            if isinstance(total, int) and total and isinstance(hits, int)
            else ""
        )
    ]
    parts.append(_count(c.get("cache_misses", 0), "miss", "misses"))
    parts.append(f"{c.get('servfail', 0)} SERVFAIL")
    if c.get("local"):
        parts.append(f"{c['local']} local")
    text = f"{total} ({', '.join(parts)})"
    if isinstance(inflight, int):
        text += f", {inflight} in flight"
    return text


def format_pvds(result: Any) -> str:
    if not isinstance(result, list):
        return format_result(result)
    if not result:
        return "No PvDs."
    pvds = [p for p in result if isinstance(p, dict)]
    with_cache = any(p.get("cache_entries") is not None for p in pvds)
    headers = [
        "NAME",
        "STATE",
        "INTERFACE",
        "DEFAULT",
        "EXCL",
        "CAPTIVE",
        "NAT64",
        "SERVERS",
        "DOMAINS",
    ] + (["CACHE"] if with_cache else [])
    rows = []
    for p in pvds:
        state = p.get("state", "?")
        if p.get("admin_down"):
            state += "(admin)"
        row = [
            p.get("name", "?"),
            state,
            p.get("interface", "-"),
            _yn(p.get("default_route")),
            _yn(p.get("exclusive", False)),
            p.get("captive", "unknown"),
            _list(p.get("nat64_prefixes")).replace(" ", ","),
            _list(p.get("servers")).replace(" ", ","),
            _list(p.get("domains")).replace(" ", ","),
        ]
        if with_cache:
            row.append(p.get("cache_entries", "-"))
        rows.append(row)
    return _table(headers, rows)


def format_cache(result: Any) -> str:
    if not isinstance(result, list):
        return format_result(result)
    if not result:
        return "The cache is empty."
    rows = [
        [
            e.get("name", "?"),
            e.get("type", "?"),
            e.get("pvd", "?"),
            e.get("kind", "?"),
            e.get("ttl", "?"),
        ]
        for e in result
        if isinstance(e, dict)
    ]
    n = len(rows)
    return (
        _table(["NAME", "TYPE", "PVD", "KIND", "TTL"], rows)
        + f"\n\n{n} entr{'y' if n == 1 else 'ies'}"
    )


def format_explain(result: Any) -> str:
    if not isinstance(result, dict):
        return format_result(result)
    lines = []
    if result.get("local"):
        lines.append(f"answered locally: {result['local']}")
    if result.get("refused"):
        lines.append(f"refused: {result['refused']}")
    candidates = [c for c in result.get("candidates") or [] if isinstance(c, dict)]
    if candidates:
        width = max(len(str(c.get("pvd", "?"))) for c in candidates)
        gwidth = max(len(str(c.get("grade", "?"))) for c in candidates)
        for c in candidates:
            pvd, grade = str(c.get("pvd", "?")), str(c.get("grade", "?"))
            lines.append(f"{pvd:<{width}}  grade {grade:<{gwidth}}  {c.get('reason', '')}".rstrip())
    elif not lines:
        lines.append("no candidate PvD")
    return "\n".join(lines)


def _candidates(cands: Any) -> str:
    if not isinstance(cands, list):
        return ""
    return " ".join(
        f"{c.get('pvd', '?')}[{c.get('grade', '?')} {c.get('reason', '')}]".replace(" ]", "]")
        for c in cands
        if isinstance(c, dict)
    )


def format_event(event: Any) -> str:
    """One ``monitor`` event as one line (the event keys are listed in mifdns.aio.control)."""
    if not isinstance(event, dict):
        return str(event)
    kind = str(event.get("event", "?"))
    stamp = _clock(event.get("time", time.time()), millis=True)
    if kind == "query":
        line = f"{stamp} query {event.get('name', '?')} {event.get('type', '?')} -> "
        if event.get("local"):
            line += f"local ({event['local']})"
        elif event.get("refused"):
            line += f"refused ({event['refused']})"
        else:
            detail = [str(event[k]) for k in ("cache", "kind") if event.get(k)]
            if event.get("rcode") and event.get("kind") in (None, "servfail", "refused", "error"):
                detail.append(str(event["rcode"]))
            if isinstance(event.get("ms"), (int, float)):
                detail.append(f"{event['ms']:.1f} ms")
            line += str(event.get("pvd") or "-")
            if detail:
                line += f" ({', '.join(detail)})"
        cands = _candidates(event.get("candidates"))
        return line + (f" candidates: {cands}" if cands else "")
    if kind == "dropped":
        return f"{stamp} dropped {event.get('count', '?')} events (this monitor fell behind)"
    pvd = event.get("pvd") or event.get("name")
    line = f"{stamp} {kind}" + (f" {pvd}" if pvd else "")
    parts = []
    if event.get("cause"):
        parts.append(str(event["cause"]))
    purged = event.get("purged", event.get("entries"))
    if purged is not None:
        parts.append(f"purged {purged} entr{'y' if purged == 1 else 'ies'}")
    shown = {"event", "time", "pvd", "name", "cause", "purged", "entries"}
    parts.extend(
        f"{k}={_list(v) if isinstance(v, list) else v}" for k, v in event.items() if k not in shown
    )
    return line + (": " + ", ".join(parts) if parts else "")


def format_result(result: Any) -> str:
    """Any other result: nothing for null, a PvD block for a PvD, else ``key: value`` lines."""
    if result is None:
        return ""
    if isinstance(result, dict):
        if "name" in result and "state" in result and "interface" in result:
            return format_pvd(result)
        return "\n".join(_tree(result, 0))
    if isinstance(result, list):
        return "\n".join(
            format_result(r) if isinstance(r, (dict, list)) else str(r) for r in result
        )
    return str(result)
