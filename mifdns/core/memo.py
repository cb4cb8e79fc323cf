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
until). The listener asks for it once per batch of datagrams (``ready_table``); a new registry
version empties it then. Nothing changes the registry while a batch runs. An entry evicted
from the cache for room may still be replayed until its "valid until" (at most a second, and
never past its TTL): the answer is still true.

Both are bounded by ``MEMO_MAX`` and emptied whole when full.
"""

from __future__ import annotations

from . import wire
from .cache import Entry, Key

MEMO_MAX = 65536  # answer memo entries; cleared whole when full

# (entry, registry version, valid until, reply after the ID, listener cap, the parsed query,
#  the (partition tag, key) a single-candidate hit came from, for renewal)
Record = tuple[Entry, int, float, bytes, int | None, wire.Query, tuple[int, Key] | None]
ReadyTable = dict[bytes, tuple[bytes, float]]


class AnswerMemo:
    __slots__ = ("_ready", "_ready_version", "table")

    def __init__(self) -> None:
        self.table: dict[bytes, Record] = {}  # the resolver reads it directly on the hit path
        self._ready: dict[int | None, ReadyTable] = {}
        self._ready_version = -1

    def remember(self, data: bytes, record: Record) -> None:
        """Remember ``record`` (see ``Record``) for the query ``data``."""
        table = self.table
        if len(table) >= MEMO_MAX:
            self.forget()
        key = data[2:]
        table[key] = record
        ready = self._ready.get(record[4])
        if ready is not None:
            ready[key] = (record[3], record[2])

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
