"""The miss lane's adapter: the C lane (``_lane.c``) driven by the core's table (core/lane.py).

The UDP listeners offer the lane every query their ready table did not answer (inside
``_udpbatch.serve``); what it forwards, it answers from ``poll`` when the reply is plain, and
hands everything else back here, where the core adopts it (``core.lane.adopt``). This module:

- keeps the lane's table current: after every batch (``refresh``, from the daemon's flush) it
  rebuilds it when the registry moved or a second has passed (the health table's order),
  and installs it when it differs;
- books what the lane did into the resolver (``core.lane.absorb``) before each new table and
  every second;
- reads the lane's replies (its epoll descriptor is a reader of the loop) and, while attempts
  are out, looks for timed-out ones every ``TICK`` seconds.

On by default where the extension is built; ``MIFDNS_MISS_LANE=0`` in the daemon's
environment turns it off (see ``available``); ``ctl status`` shows ``udp_lane``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable
from time import monotonic
from typing import Any

from ..core import lane as core_lane
from ..core.resolver import Resolver
from ..core.stats import RTT_BOUNDS
from ..core.transaction import Transaction

try:
    from . import _udpbatch  # type: ignore[attr-defined]
except ImportError:
    _udpbatch = None

log = logging.getLogger("mifdns.lane")

TICK = 0.05  # how often timed-out attempts are looked for, while any is out
REFRESH = 1.0  # the table is rebuilt at least this often (server health moves)
KEEP_TABLES = 64  # generations kept for handoffs (a table lives >= REFRESH or a registry change)


def available() -> bool:
    """On unless ``MIFDNS_MISS_LANE=0`` (or the C extension is missing, or the Python batch
    loop was asked for with ``MIFDNS_UDP_BATCH=python``)."""
    return (
        _udpbatch is not None
        and hasattr(_udpbatch, "Lane")
        and os.environ.get("MIFDNS_MISS_LANE", "1") != "0"
        and os.environ.get("MIFDNS_UDP_BATCH", "") != "python"
    )


class MissLane:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        resolver: Resolver,
        listener_of: Callable[[int], Any],
        flush: Callable[[], None],
        *,
        per_port: int = 16,
    ) -> None:
        """``listener_of(fd)``: the UDP listener with that socket (a client is
        ``(listener, address)``); ``flush``: the daemon's, after handoffs."""
        assert _udpbatch is not None
        s = resolver.settings
        self.loop = loop
        self.resolver = resolver
        self.listener_of = listener_of
        self.flush = flush
        self.lane = _udpbatch.Lane(
            capacity=max(1, s.max_inflight),
            per_port=per_port,
            timeout=s.timeout,
            total_timeout=s.total_timeout,
            edns_size=s.edns_udp_size,
            rtt_bounds=tuple(RTT_BOUNDS),
        )
        self.table: core_lane.Table | None = None
        self.gen = 0
        self._built_at = -1e9
        self._version = -1
        self._health = -1
        self._ignored = 0  # the lane's ignored replies booked so far
        self._monitoring = False
        # the tables of recent generations: a handoff names the lane by (generation, index)
        self._tables: dict[int, core_lane.Table] = {}
        self._tick: asyncio.TimerHandle | None = None
        # (id, sent at) of a timed-out attempt the lane keeps for a late answer -> its adopter
        self._late: dict[tuple[int, float], Transaction] = {}
        self._closed = False
        self._stopping = False
        loop.add_reader(self.lane.fileno(), self._on_replies)

    # ------------------------------------------------------------------ the table
    def refresh(self, now: float | None = None) -> None:
        """Rebuild the table if the registry moved or REFRESH passed; book the counts."""
        r = self.resolver
        if self._closed:
            return
        r.lane_pending = self.lane.pending
        if self._stopping:
            return
        if (self.lane.pending or self.lane.waiting) and self._tick is None:
            self._tick = self.loop.call_later(TICK, self._on_tick)
        if now is None:
            now = monotonic()
        monitoring = r.monitoring
        if (
            r.registry.version == self._version
            and r.health.version == self._health
            and now - self._built_at < REFRESH
            and monitoring == self._monitoring
        ):
            return
        self._book(now)
        self._built_at = now
        self._version = r.registry.version
        self._health = r.health.version
        self._monitoring = monitoring
        table = core_lane.table(r, now)
        if table is None:
            if self.table is not None:
                self.lane.disable()
            self.table = None
            return
        if table.same(self.table):
            return
        lanes = [_c_lane(ln) for ln in table.lanes]
        self.gen += 1
        try:
            self.lane.configure(
                self.gen,
                table.routes,
                table.default,
                lanes,
                r.cache.parts_by_tag,
                r.inflight,
                r._synth,
            )
        except (ValueError, OSError) as exc:
            log.warning("miss lane off until the next change: %s", exc)
            self.lane.disable()
            self.table = None
            return
        self.table = table
        self._tables[self.gen] = table
        for old in [g for g in self._tables if g <= self.gen - KEEP_TABLES]:
            del self._tables[old]

    def tune(self, per_port: int) -> None:
        """After a reload: the resolver's new timeouts, EDNS size and in-flight limit (capped
        at the capacity the lane was made with), and ``upstream.queries_per_port``."""
        s = self.resolver.settings
        self.lane.tune(
            s.timeout, s.total_timeout, s.edns_udp_size, max(1, s.max_inflight), per_port
        )

    def book(self) -> None:
        """Book the lane's counts into the resolver now (``ctl status``, metrics)."""
        self._book(monotonic())

    def _book(self, now: float) -> None:
        if self.table is not None:
            core_lane.absorb(self.resolver, self.table.lanes, self.lane.drain(), now)
        ignored = int(self.lane.counters()["ignored"])
        if ignored != self._ignored:  # spoofed, stray or late: as the resolver counts them
            self.resolver.counters["ignored_replies"] += ignored - self._ignored
            self._ignored = ignored

    # ------------------------------------------------------------------ replies, timeouts
    def _on_replies(self) -> None:
        self.refresh()  # a reply after a detach must not meet the old table
        self._adopt(self.lane.poll())

    def _on_tick(self) -> None:
        self._tick = None
        now = monotonic()
        self._adopt(self.lane.expire(now))  # its flush may have re-armed the tick
        late = self._late  # in the order they timed out, about that of their send times
        total = self.resolver.settings.total_timeout
        while late and next(iter(late))[1] + total < now:
            del late[next(iter(late))]
        if (self.lane.pending or self.lane.waiting) and not self._closed and self._tick is None:
            self._tick = self.loop.call_later(TICK, self._on_tick)

    def _adopt(self, handoffs: list[tuple[Any, ...]]) -> None:
        if handoffs:
            now = monotonic()
            r = self.resolver
            for data, addr, lfd, k, gen, txid, sent, reply, late in handoffs:
                table = self._tables.get(gen)
                ln = table.lanes[k] if table is not None and 0 <= k < len(table.lanes) else None
                try:
                    if late:  # an answer to an attempt that timed out and was adopted
                        core_lane.late(r, self._late.pop((txid, sent), None), ln, reply, now)
                        continue
                    listener = self.listener_of(lfd)
                    if listener is None:
                        continue  # closed meanwhile: nobody to answer
                    txn = core_lane.adopt(
                        r, ln, data, (listener, addr), listener.max_udp, txid, sent, reply, now
                    )
                    if reply is None and txn is not None and not txn.done:
                        self._late[(txid, sent)] = txn  # the lane waits for a late answer
                except Exception:  # one bad handoff must not stop the others
                    log.exception("taking over a query from the miss lane")
        self.resolver.lane_pending = self.lane.pending
        self.flush()

    # ------------------------------------------------------------------ stop
    def stop(self) -> None:
        """Stopping: take no new queries; the attempts out are still answered."""
        self._stopping = True
        self.lane.disable()

    @property
    def pending(self) -> int:
        return int(self.lane.pending)

    def hand_over(self) -> None:
        """Hand every attempt still out to the resolver (which cancels them at stop)."""
        self._adopt(self.lane.expire(float("inf")))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._book(monotonic())
        if self._tick is not None:
            self._tick.cancel()
        try:
            self.loop.remove_reader(self.lane.fileno())
        except (ValueError, OSError):
            pass
        self.lane.close()

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.lane.counters())
        out["lanes"] = [ln.pvd for ln in self.table.lanes] if self.table is not None else []
        return out


def _c_lane(ln: core_lane.Lane) -> tuple[Any, ...]:
    srv = ln.server
    addr = srv.address
    family = socket.AF_INET6 if addr.version == 6 else socket.AF_INET
    scope = 0
    if srv.scope:
        try:
            scope = socket.if_nametoindex(srv.scope)
        except OSError:
            scope = 0
    return (int(family), addr.packed, srv.port, scope, ln.interface.encode(), ln.flags, ln.tag)
