"""Cumulative per-PvD figures kept for the metrics endpoint, cheap enough to keep always.

Theory of operation
-------------------
The resolver feeds two things here, both off the cache-hit path:

- every upstream round-trip time it already measures for server health (``rtt``): one bisect
  over a fixed tuple of bucket bounds and two additions per sample, per PvD;
- every purge it performs (``purge``): one counter pair per (PvD, event, cause class).

Nothing here is read on the query path; the metrics adapter (mifdns.aio.metrics) reads it at
scrape time. Counters only grow: a PvD that goes away keeps its series (Prometheus sees a
counter that stops moving, never one that goes backwards). Their number is bounded by the
number of PvD names ever seen, times the closed set of :data:`CAUSES` for purges.
"""

from __future__ import annotations

from bisect import bisect_left

# Upper bounds, in seconds, of the upstream RTT histogram buckets ("le" in Prometheus terms):
# from a LAN resolver (~1 ms) to a VPN across an ocean (~300 ms) to a retry-worthy wait.
RTT_BOUNDS: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

# Purge causes as a closed set of label values (the free-text cause stays in ``purge_log``):
CAUSES = ("link", "operator", "config", "resolvconf", "captive", "nat64", "other")


def cause_class(cause: str) -> str:
    """Map a registry/daemon cause text to one of :data:`CAUSES`."""
    text = cause.lower()
    if text.startswith("link "):
        return "link"  # "link wlan0 not usable", "link tun0 usable"
    if "operator" in text:
        return "operator"  # "flushed by operator", "detached by operator", "removed by ..."
    if "resolvconf" in text:
        return "resolvconf"  # "resolvconf -d wlan0.dhcp", "resolvconf -a ... without ..."
    if "captive" in text:
        return "captive"  # "left captive state (open)"
    if "nat64" in text:
        return "nat64"  # "NAT64 prefix changed"
    if "config" in text or "changed" in text:
        return "config"  # "removed from config (reload)", "servers, domains or networks changed"
    return "other"


class RttHistogram:
    """Non-cumulative bucket counts (the last one is +Inf), their sum and count."""

    __slots__ = ("buckets", "count", "total")

    def __init__(self) -> None:
        self.buckets = [0] * (len(RTT_BOUNDS) + 1)
        self.total = 0.0
        self.count = 0

    def cumulative(self) -> list[tuple[str, int]]:
        """``[(le, count of samples <= le)]`` ending with ``("+Inf", count)``."""
        out, running = [], 0
        for bound, n in zip((*(repr(b) for b in RTT_BOUNDS), "+Inf"), self.buckets):
            running += n
            out.append((bound, running))
        return out


class Stats:
    def __init__(self) -> None:
        self.rtt_by_pvd: dict[str, RttHistogram] = {}
        # (pvd, event "detached"/"purged", cause class) -> [purges, entries purged]
        self.purges: dict[tuple[str, str, str], list[int]] = {}

    def rtt(self, pvd: str, seconds: float) -> None:
        h = self.rtt_by_pvd.get(pvd)
        if h is None:
            h = self.rtt_by_pvd[pvd] = RttHistogram()
        h.buckets[bisect_left(RTT_BOUNDS, seconds)] += 1
        h.total += seconds
        h.count += 1

    def add_rtts(self, pvd: str, buckets: tuple[int, ...], total: float, count: int) -> None:
        """``count`` RTTs at once, already counted into ``buckets`` (one per RTT_BOUNDS and
        +Inf, as ``rtt`` counts them) and summed to ``total`` (the miss lane's)."""
        h = self.rtt_by_pvd.get(pvd)
        if h is None:
            h = self.rtt_by_pvd[pvd] = RttHistogram()
        for i, n in enumerate(buckets[: len(h.buckets)]):
            h.buckets[i] += n
        h.total += total
        h.count += count

    def purge(self, pvd: str, event: str, cause: str, entries: int) -> None:
        key = (pvd, event, cause_class(cause))
        row = self.purges.get(key)
        if row is None:
            row = self.purges[key] = [0, 0]
        row[0] += 1
        row[1] += entries
