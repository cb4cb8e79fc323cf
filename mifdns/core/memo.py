"""The answer memo: replies already rendered for repeated query bytes (the hit path).

Theory of operation
-------------------
A hit rendered from the cache is remembered under the query's bytes after the ID, with the
entry, the registry version, the instant it stops being valid (the entry expires or its TTLs
age by another second, whichever is first), the reply after the ID and the listener's cap on
the client's EDNS size. A repeat of the same bytes is answered with its own ID spliced in; the
resolver's ``handle_query`` checks the version, the cap and the entry before it does. Every
attach, detach, purge and routing change moves the registry version, so a memo can never
outlive its partition or its route.

The **ready table** is the memo as a UDP listener replays it itself, without calling the
resolver: one table per listener cap, query bytes after the ID -> (reply after the ID, valid
until), or, for a hit from a single partition whose reply carries its records (not truncated),
(reply, valid until, stored, expires, TTL offsets, TTLs as stored). The listener asks for it
once per batch of datagrams (``ready_table``); a new registry version empties it then. Nothing
changes the registry while a batch runs.

With the last four, a listener may *age* the entry past "valid until" without the resolver,
as ``render.render_reply`` would render it again: each TTL at its offset becomes
max(TTL - int(now - stored), 0), and "valid until" moves to the next second, never past
"expires" (``age`` below; the C loop has the same in ``mifdns/aio/_udpbatch.c``, and a
differential test holds the two together). "expires" here is the entry's expiry or ``AGING_HORIZON`` after the resolver rendered
it, whichever is first: then the resolver looks again, so a name asked now and then costs
Python once per horizon, the cache still sees it used (its LRU order), and an entry the cache
evicted meanwhile is served at most that long more (its answer is still true). A registry
version change ends it at once. The resolver's own memo path (TCP, monitoring) renders again
once a second and serves only entries the cache still holds.

Both are bounded by ``MEMO_MAX`` and emptied whole when full.
"""

from __future__ import annotations

import struct

from . import wire
from .cache import Entry, Key

MEMO_MAX = 65536  # answer memo entries; cleared whole when full
# how long a listener may age an entry on its own before the resolver looks at it again
AGING_HORIZON = 30.0

# (entry, registry version, valid until, reply after the ID, listener cap, the parsed query,
#  the (partition tag, key) a single-candidate hit came from, for renewal)
Record = tuple[Entry, int, float, bytes, int | None, wire.Query, tuple[int, Key] | None]
# (stored, expires, TTL offsets from the start of the message, TTLs as stored): see above
Aging = tuple[float, float, tuple[int, ...], tuple[int, ...]]
ReadyTable = dict[
    bytes, tuple[bytes, float] | tuple[bytes, float, float, float, tuple[int, ...], tuple[int, ...]]
]


_PACK_TTL = struct.Struct("!I").pack_into


Aged = tuple[bytes, float, float, float, tuple[int, ...], tuple[int, ...]]


def age(hit: tuple[object, ...], now: float) -> Aged | None:
    """The aged copy of a 6-tuple ready-table entry at ``now`` (see above), for the listener
    to store back and send; None if it cannot be aged: expired (the resolver decides), a part
    of the wrong type, an offset outside the reply or a value that is not a TTL."""
    if len(hit) != 6:
        return None
    tail, _, stored, expires, offsets, values = hit
    if not (
        isinstance(tail, bytes)
        and type(stored) is float
        and type(expires) is float
        and type(offsets) is tuple
        and type(values) is tuple
        and len(offsets) == len(values)
        and now < expires
        and now - stored < 4294967296.0  # no TTL could have lasted that long
    ):
        return None
    elapsed = int(now - stored) if now > stored else 0
    buf = bytearray(tail)
    last = len(buf) - 4
    for off, value in zip(offsets, values, strict=True):
        if type(off) is not int or type(value) is not int:
            return None
        off -= 2  # the stored reply starts after the ID
        if off < 0 or off > last or value < 0 or value > 0xFFFFFFFF:
            return None
        _PACK_TTL(buf, off, value - elapsed if value > elapsed else 0)
    return (bytes(buf), min(stored + elapsed + 1.0, expires), stored, expires, offsets, values)


class AnswerMemo:
    __slots__ = ("_ready", "_ready_version", "table")

    def __init__(self) -> None:
        self.table: dict[bytes, Record] = {}  # the resolver reads it directly on the hit path
        self._ready: dict[int | None, ReadyTable] = {}
        self._ready_version = -1

    def remember(self, data: bytes, record: Record, aging: Aging | None = None) -> None:
        """Remember ``record`` (see ``Record``) for the query ``data``; ``aging``: how a
        listener may age its reply in the ready table (see above), None if it may not."""
        table = self.table
        if len(table) >= MEMO_MAX:
            self.forget()
        key = data[2:]
        table[key] = record
        ready = self._ready.get(record[4])
        if ready is not None:
            ready[key] = (record[3], record[2]) if aging is None else (record[3], record[2], *aging)

    def forget(self) -> None:
        """Drop everything (a routing change the registry version does not show, or full)."""
        self.table.clear()
        for table in self._ready.values():
            table.clear()  # in place: the listeners hold these dicts

    def ready_table(self, max_udp: int | None, version: int) -> ReadyTable:
        """The ready table for a listener with cap ``max_udp``, valid at registry ``version``."""
        if self._ready_version != version:
            for table in self._ready.values():
                table.clear()
            self._ready_version = version
        found = self._ready.get(max_udp)
        if found is None:
            found = self._ready[max_udp] = {}
        return found
