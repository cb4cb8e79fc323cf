"""Prometheus metrics: a collector that reads the daemon at scrape time, and its HTTP endpoint.

Theory of operation
-------------------
Nothing here runs on the query path. The resolver already keeps every figure the endpoint
serves (counters, per-PvD upstream queries and failures, server health, cache sizes, purge and
RTT statistics in ``resolver.stats``); :class:`DaemonCollector` turns them into metric families
when Prometheus asks, and only then.

The endpoint is a small asyncio HTTP/1.0 server on the event loop's thread (not
``prometheus_client.start_http_server``'s thread): a scrape then reads the daemon's dicts
between two event-loop callbacks, never while the loop mutates them, with no lock on the hot
path. A scrape costs the loop about a millisecond per few dozen PvDs. It answers ``GET /metrics``
(and ``HEAD``; ``/`` points there), honours OpenMetrics content negotiation through
prometheus_client's ``choose_encoder``, and is bounded: a few clients at once, a request head of
at most 8 KiB read within 5 seconds, one request per connection.

Off by default; ``metrics.listen`` (or ``MIFDNS_METRICS_LISTEN``) turns it on. The address is
what the operator wrote: loopback unless they chose otherwise.

Metric names and labels are documented in docs/metrics.md; keep them in sync.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import CollectorRegistry

from ..errors import StartupError

if TYPE_CHECKING:
    from ..config import ListenAddr
    from .daemon import Daemon

log = logging.getLogger("mifdns.metrics")

MAX_CLIENTS = 8
MAX_HEAD = 8192
READ_TIMEOUT = 5.0

# resolver counters served as mifdns_responses_total{outcome=...} / mifdns_rejected_total{...}
REJECTED = ("formerr", "notimp", "badvers", "refused")


class DaemonCollector:
    """A prometheus_client custom collector over a running :class:`Daemon`."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def describe(self) -> list[Metric]:
        return []  # names are dynamic enough; nothing else shares this collector's registry

    def collect(self) -> Iterator[Metric]:
        d = self.daemon
        res = d.resolver
        status = d.status()
        c = status["counters"]

        info = InfoMetricFamily("mifdns_build", "mifdns version.")
        info.add_metric([], {"version": str(status.get("version", ""))})
        yield info
        yield GaugeMetricFamily(
            "mifdns_uptime_seconds",
            "Seconds since the daemon started.",
            value=status.get("uptime_s", 0),
        )

        # client side (whole daemon: the hit path does not attribute queries to PvDs)
        yield _counter("mifdns_queries", "Client queries received.", c.get("queries", 0))
        yield _counter(
            "mifdns_cache_hits", "Client queries answered from the cache.", c.get("cache_hits", 0)
        )
        yield _counter(
            "mifdns_cache_misses",
            "Client queries that needed at least one upstream transaction.",
            c.get("cache_misses", 0),
        )
        yield _counter(
            "mifdns_coalesced",
            "Questions joined to an identical one in flight.",
            c.get("coalesced", 0),
        )
        yield _counter("mifdns_servfail", "SERVFAIL answers sent to clients.", c.get("servfail", 0))
        yield _counter(
            "mifdns_upstream_refused",
            "REFUSED answers passed on to clients: every server asked refused.",
            c.get("upstream_refused", 0),
        )
        yield _counter("mifdns_nxdomain", "NXDOMAIN answers sent to clients.", c.get("nxdomain", 0))
        yield _counter(
            "mifdns_local_answers",
            "Queries answered locally (localhost, RFC 6303 zones, ipv4only.arpa).",
            c.get("local", 0),
        )
        rejected = CounterMetricFamily(
            "mifdns_rejected", "Queries turned away at the door, by reason.", labels=["reason"]
        )
        for reason in REJECTED:
            rejected.add_metric([reason], c.get(reason, 0))
        yield rejected

        # per PvD
        pvds = [p for p in status.get("pvds", []) if isinstance(p, dict)]
        uq = CounterMetricFamily(
            "mifdns_upstream_queries",
            "Queries sent to upstream servers (retries and mifdns's own probes included), by PvD.",
            labels=["pvd"],
        )
        for name, n in sorted(_with_zeros(status.get("upstream_queries", {}), pvds).items()):
            uq.add_metric([name], n)
        yield uq
        uf = CounterMetricFamily(
            "mifdns_upstream_failures",
            "Upstream transactions that ended without an answer (every server timed out or "
            "failed), by PvD.",
            labels=["pvd"],
        )
        for name, n in sorted(_with_zeros(status.get("upstream_failures", {}), pvds).items()):
            uf.add_metric([name], n)
        yield uf

        hist = HistogramMetricFamily(
            "mifdns_upstream_rtt_seconds",
            "Round-trip time of upstream queries that were answered, by PvD.",
            labels=["pvd"],
        )
        for name, h in sorted(res.stats.rtt_by_pvd.items()):
            hist.add_metric([name], h.cumulative(), sum_value=h.total)
        yield hist

        attached = GaugeMetricFamily(
            "mifdns_pvd_attached",
            "1 while the PvD is attached (routed to), else 0.",
            labels=["pvd", "interface"],
        )
        pinfo = InfoMetricFamily("mifdns_pvd", "PvD attributes (value 1).")
        entries = GaugeMetricFamily(
            "mifdns_cache_entries", "Cache entries, by PvD.", labels=["pvd"]
        )
        srtt = GaugeMetricFamily(
            "mifdns_server_srtt_seconds",
            "Smoothed RTT of an upstream server (absent until it answers).",
            labels=["pvd", "server"],
        )
        sfail = CounterMetricFamily(
            "mifdns_server_failures",
            "Queries to an upstream server that timed out or failed.",
            labels=["pvd", "server"],
        )
        sans = CounterMetricFamily(
            "mifdns_server_answers",
            "Replies accepted from an upstream server.",
            labels=["pvd", "server"],
        )
        sdown = GaugeMetricFamily(
            "mifdns_server_up",
            "0 while an upstream server is held back after consecutive failures, else 1.",
            labels=["pvd", "server"],
        )
        per_pvd = status.get("cache", {}).get("per_pvd", {})
        for p in pvds:
            name = p["name"]
            attached.add_metric(
                [name, str(p.get("interface", ""))], 1 if p.get("state") == "attached" else 0
            )
            pinfo.add_metric(
                [],
                {
                    "pvd": name,
                    "interface": str(p.get("interface", "")),
                    "state": str(p.get("state", "")),
                    "captive": str(p.get("captive", "")),
                    "default_route": _bool(p.get("default_route")),
                    "exclusive": _bool(p.get("exclusive")),
                    "nat64_prefixes": ",".join(p.get("nat64_prefixes") or []),
                },
            )
            entries.add_metric([name], per_pvd.get(name, p.get("cache_entries", 0)))
            for server, h in (p.get("server_health") or {}).items():
                if h.get("srtt_ms") is not None:
                    srtt.add_metric([name, server], h["srtt_ms"] / 1000.0)
                sfail.add_metric([name, server], h.get("failures", 0))
                sans.add_metric([name, server], h.get("answers", 0))
                sdown.add_metric([name, server], 0 if h.get("held_back_s", 0) > 0 else 1)
        yield from (attached, pinfo, entries, srtt, sfail, sans, sdown)

        purges = CounterMetricFamily(
            "mifdns_purges",
            "Cache partitions dropped, by PvD, event (detached: the PvD "
            "detached; purged: it stayed attached) and cause class.",
            labels=["pvd", "event", "cause"],
        )
        purged = CounterMetricFamily(
            "mifdns_purged_entries",
            "Cache entries dropped by purges, by PvD, event and cause.",
            labels=["pvd", "event", "cause"],
        )
        for (name, event, cause), (n, m) in sorted(res.stats.purges.items()):
            purges.add_metric([name, event, cause], n)
            purged.add_metric([name, event, cause], m)
        yield purges
        yield purged

        # bounds and resources
        cache = status.get("cache", {})
        yield GaugeMetricFamily(
            "mifdns_cache_size_entries", "Cache entries, all PvDs.", value=cache.get("entries", 0)
        )
        yield GaugeMetricFamily(
            "mifdns_cache_size_bytes",
            "Bytes of cached answers, all PvDs.",
            value=cache.get("bytes", 0),
        )
        yield GaugeMetricFamily(
            "mifdns_cache_max_entries", "cache.max_entries.", value=cache.get("max_entries", 0)
        )
        limits = CounterMetricFamily(
            "mifdns_limit_hits",
            "Work turned away because a bound was reached, by limit (cache_evictions: entries "
            "evicted to stay under cache.max_entries / max_bytes).",
            labels=["limit"],
        )
        for limit, n in sorted(status.get("limits", {}).get("hits", {}).items()):
            limits.add_metric([limit], n)
        yield limits
        yield GaugeMetricFamily(
            "mifdns_inflight_transactions",
            "Upstream transactions in flight.",
            value=status.get("inflight", 0),
        )
        yield GaugeMetricFamily(
            "mifdns_tcp_clients", "Client TCP connections open.", value=status.get("tcp_clients", 0)
        )
        yield GaugeMetricFamily(
            "mifdns_monitor_subscribers", "`mifdns ctl monitor` clients.", value=d.hub.subscribers
        )
        yield _counter(
            "mifdns_monitor_dropped_events",
            "Monitor events dropped because a subscriber fell behind.",
            d.hub.dropped,
        )


def _with_zeros(counts: dict[str, int], pvds: list[dict[str, Any]]) -> dict[str, int]:
    """Every PvD gets a series from the start (at 0), so rate() and absent-free alerts work;
    a PvD that went away keeps its last value (a counter never goes backwards)."""
    return {**{p["name"]: 0 for p in pvds}, **counts}


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _bool(value: Any) -> str:
    return "true" if value else "false"


class MetricsServer:
    """``GET /metrics`` over HTTP on ``address``, served from the event loop."""

    def __init__(self, daemon: Daemon, address: ListenAddr) -> None:
        self.address = address
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(DaemonCollector(daemon))
        self.scrapes = 0
        self._server: asyncio.AbstractServer | None = None
        self._clients: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        host, port = str(self.address.address), self.address.port
        try:
            self._server = await asyncio.start_server(
                self._serve, host, port, limit=MAX_HEAD, reuse_address=True
            )
        except OSError as exc:
            raise StartupError(
                f"cannot serve metrics on {self.address}: {exc.strerror or exc}"
            ) from None
        log.info("metrics on http://%s/metrics", self.address)

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for task in list(self._clients):
            task.cancel()
        if self._clients:
            await asyncio.gather(*self._clients, return_exceptions=True)
        if server is not None:
            with contextlib.suppress(Exception):
                await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        try:
            if len(self._clients) >= MAX_CLIENTS:
                await self._respond(writer, 503, "text/plain", b"busy\n")
                return
            if task is not None:
                self._clients.add(task)
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
            except (
                asyncio.IncompleteReadError,
                asyncio.LimitOverrunError,
                ValueError,
                TimeoutError,
            ):
                await self._respond(writer, 400, "text/plain", b"bad request\n")
                return
            method, path, accept = _parse_head(head)
            if method not in ("GET", "HEAD"):
                await self._respond(writer, 405, "text/plain", b"GET only\n")
            elif path.split("?", 1)[0] in ("/metrics", "/metrics/"):
                encoder, content_type = choose_encoder(accept)
                try:
                    body = encoder(self.registry)
                except Exception:  # a bug here must not take the daemon down
                    log.exception("collecting metrics failed")
                    await self._respond(writer, 500, "text/plain", b"collecting failed\n")
                    return
                self.scrapes += 1
                await self._respond(writer, 200, content_type, body, head_only=method == "HEAD")
            elif path == "/":
                await self._respond(
                    writer,
                    200,
                    "text/html; charset=utf-8",
                    b'<html><body><a href="/metrics">/metrics</a></body></html>\n',
                    head_only=method == "HEAD",
                )
            else:
                await self._respond(writer, 404, "text/plain", b"not found; try /metrics\n")
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            if task is not None:
                self._clients.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    @staticmethod
    async def _respond(
        writer: asyncio.StreamWriter,
        code: int,
        content_type: str,
        body: bytes,
        head_only: bool = False,
    ) -> None:
        reason = {
            200: "OK",
            400: "Bad Request",
            404: "Not Found",
            405: "Method Not Allowed",
            500: "Internal Server Error",
            503: "Service Unavailable",
        }[code]
        head = (
            f"HTTP/1.0 {code} {reason}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        writer.write(head if head_only else head + body)
        await writer.drain()


def _parse_head(head: bytes) -> tuple[str, str, str]:
    """``(method, path, Accept header)`` of a request head; empty strings where missing."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split()
    method, path = (parts[0], parts[1]) if len(parts) >= 2 else ("", "")
    accept = ""
    for line in lines[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == "accept":
            accept = value.strip()
    return method, path, accept
