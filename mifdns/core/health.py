"""Upstream server health: smoothed RTT and failures per (PvD, server).

A server whose last attempt failed is tried after the servers whose last attempt worked. One
that fails ``DEAD_AFTER`` attempts in a row is held back for a back-off that doubles up
to ``MAX_BACKOFF``; until then it is tried only after the healthy servers of its PvD, so a query
never waits a whole timeout on a server known dead while another one works. When the back-off
ends it is probed again by ordinary traffic (it moves back to its RTT rank).

A server that answered an EDNS query with FORMERR or NOTIMP and no OPT (it predates EDNS, RFC
6891 section 7) is asked without EDNS for ``NO_EDNS_MEMORY`` seconds (Unbound keeps the same in
its infrastructure cache for 900 s): its next questions do not pay the failed EDNS round trip
first. Then it is asked with EDNS again (it may have been upgraded).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .pvd import ServerAddr

DEAD_AFTER = 2
BASE_BACKOFF = 2.0
MAX_BACKOFF = 60.0
UNKNOWN_RTT = 0.05
NO_EDNS_MEMORY = 900.0


@dataclass(slots=True)
class ServerStats:
    srtt: float | None = None
    failures: int = 0  # consecutive
    total_failures: int = 0
    answers: int = 0
    dead_until: float = 0.0
    no_edns_until: float = 0.0

    def to_json(self, now: float) -> dict[str, object]:
        return {
            "srtt_ms": None if self.srtt is None else round(self.srtt * 1000, 2),
            "failures": self.total_failures,
            "consecutive_failures": self.failures,
            "answers": self.answers,
            "held_back_s": round(max(0.0, self.dead_until - now), 1),
            "no_edns_s": round(max(0.0, self.no_edns_until - now), 1),
        }


class Health:
    def __init__(self) -> None:
        self._stats: dict[tuple[str, ServerAddr], ServerStats] = {}
        # the servers whose stats say "asked without EDNS until" (see the top); usually empty
        self._no_edns: set[tuple[str, ServerAddr]] = set()
        # moves when a server fails, recovers or is found to reject EDNS (the miss lane's
        # table is rebuilt then: core/lane.py)
        self.version = 0

    def stats(self, pvd: str, server: ServerAddr) -> ServerStats:
        key = (pvd, server)
        st = self._stats.get(key)
        if st is None:
            st = self._stats[key] = ServerStats()
        return st

    def order(self, pvd: str, servers: tuple[ServerAddr, ...], now: float) -> list[ServerAddr]:
        if len(servers) < 2:
            return list(servers)

        def rank(item: tuple[int, ServerAddr]) -> tuple[bool, bool, float, int]:
            i, s = item
            st = self._stats.get((pvd, s))
            if st is None:
                return (False, False, UNKNOWN_RTT, i)
            held = st.dead_until > now
            # a server whose last attempt failed goes after those whose last attempt worked,
            # whatever its RTT was before: the next question must not wait a whole timeout on it
            return (held, st.failures > 0, st.srtt if st.srtt is not None else UNKNOWN_RTT, i)

        return [s for _, s in sorted(enumerate(servers), key=rank)]

    def held(self, pvd: str, server: ServerAddr, now: float) -> bool:
        """Whether ``server`` is held back (failed DEAD_AFTER times in a row, backing off)."""
        st = self._stats.get((pvd, server))
        return st is not None and st.dead_until > now

    def record(self, pvd: str, server: ServerAddr, rtt: float | None, now: float) -> None:
        st = self.stats(pvd, server)
        if rtt is None:
            self.version += 1  # the order may change: the miss lane's table follows
            st.failures += 1
            st.total_failures += 1
            if st.failures >= DEAD_AFTER:
                backoff = min(MAX_BACKOFF, BASE_BACKOFF * 2 ** (st.failures - DEAD_AFTER))
                st.dead_until = now + backoff
            return
        st.answers += 1
        if st.failures or st.dead_until:
            self.version += 1
        st.failures = 0
        st.dead_until = 0.0
        st.srtt = rtt if st.srtt is None else 0.7 * st.srtt + 0.3 * rtt

    @property
    def any_no_edns(self) -> bool:
        return bool(self._no_edns)

    def no_edns(self, pvd: str, server: ServerAddr, now: float) -> None:
        """``server`` rejected EDNS: ask it without for ``NO_EDNS_MEMORY`` seconds."""
        self.version += 1
        self.stats(pvd, server).no_edns_until = now + NO_EDNS_MEMORY
        self._no_edns.add((pvd, server))

    def plain(self, pvd: str, servers: Sequence[ServerAddr], now: float) -> tuple[ServerAddr, ...]:
        """Those of ``servers`` to ask without EDNS (empty at once if no server rejected it)."""
        known = self._no_edns
        if not known:
            return ()
        out = []
        for s in servers:
            key = (pvd, s)
            if key in known:
                if self._stats[key].no_edns_until > now:
                    out.append(s)
                else:
                    known.discard(key)
        return tuple(out)

    def forget(self, pvd: str) -> None:
        for key in [k for k in self._stats if k[0] == pvd]:
            del self._stats[key]
            self._no_edns.discard(key)
