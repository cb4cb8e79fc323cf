"""The answer cache, partitioned by PvD tag.

Theory of operation
-------------------
Every entry lives in exactly one partition, the one of the tag of the transaction that fetched
it (see registry.py). A lookup names the partitions it may use (the tags of the PvDs the question
routes to), so an answer can never be served across PvDs: there is no shared lookup path.

Entries hold the upstream's reply as wire bytes (OPT removed, ID zeroed), the offsets and
original values of its TTL fields, and when it was stored: a hit is a dict lookup plus a copy
with the ID, the client's letter case and aged TTLs patched in (render.render_reply). No message
is parsed on a hit.

NXDOMAIN whose answer section is empty covers every type of the name in that partition
(RFC 2308 section 5); it is kept in a per-partition side table consulted after an exact miss.

Purge is structural (``dns_scope_free`` in systemd-resolved): ``purge(tag)`` unlinks the
partition in O(1) and puts it on a graveyard; ``collect(budget)`` frees graveyard entries a
chunk at a time, so dropping 100k entries never blocks the event loop. Purged entries are
unreachable at once: no lookup names a dead tag.

Bounds: ``max_entries`` and ``max_bytes`` for the whole cache. Each partition is an OrderedDict
in recency order; the global least-recently-used entry is the oldest of the partitions' heads,
so eviction costs O(number of partitions), which is small.

Garbage collector: the partitions' tables, their keys and their entries are kept out of the
cyclic collector's sight (``PyObject_GC_UnTrack``). A key is a tuple of bytes and ints; an Entry
refers only to bytes, tuples of ints, numbers and a Kind; a table refers only to keys and
entries. None of them can refer back to anything that refers to them, so no reference cycle can
pass through the cache, and reference counting alone frees what it drops. A table is untracked
again after every insert (CPython tracks a dict again when it receives an instance of a class;
key tuples of atomic values are untracked by the collector itself). Otherwise every collection
that reaches the old generations walks every cached entry: with 1M entries a full collection
blocked the event loop for ~300 ms (bench/gc_pause.py). CPython only; elsewhere everything
stays tracked.
"""

from __future__ import annotations

import enum
import gc
import sys
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


def _untracker() -> Callable[[object], None]:
    if sys.implementation.name != "cpython":
        return lambda obj: None
    try:
        import ctypes

        fn = ctypes.pythonapi.PyObject_GC_UnTrack
    except (ImportError, AttributeError):  # pragma: no cover - CPython always has both
        return lambda obj: None
    fn.argtypes = [ctypes.py_object]
    fn.restype = None
    return fn


untrack = _untracker()

# a rough per-entry overhead (key tuple, Entry object, dict slot) added to the body size
ENTRY_OVERHEAD = 320


class Kind(str, enum.Enum):
    POSITIVE = "positive"
    NXDOMAIN = "nxdomain"
    NODATA = "nodata"
    SYNTHESIZED = "synthesized"
    CAPTIVE = "captive"


# key: (lower-case wire qname, qtype, qclass, flags) ; flags = DO | CD << 1
Key = tuple[bytes, int, int, int]


class Entry:
    __slots__ = (
        "body",
        "ttl_offsets",
        "ttls",
        "stored",
        "expires",
        "kind",
        "rcode",
        "used",
        "size",
        "dead",
    )

    def __init__(
        self,
        body: bytes,
        ttl_offsets: tuple[int, ...],
        ttls: tuple[int, ...],
        stored: float,
        expires: float,
        kind: Kind,
        rcode: int,
    ) -> None:
        self.body = body
        self.ttl_offsets = ttl_offsets
        self.ttls = ttls
        self.stored = stored
        self.expires = expires
        self.kind = kind
        self.rcode = rcode
        self.used = stored
        self.size = len(body) + ENTRY_OVERHEAD
        self.dead = False  # evicted, replaced or expired out of the cache (purges move the
        # registry version instead: see Resolver's answer memo)

    def ttl_left(self, now: float) -> int:
        return max(0, int(self.expires - now))


@dataclass(slots=True)
class Partition:
    tag: int
    pvd: str
    entries: OrderedDict[Key, Entry]
    nx: dict[tuple[bytes, int, int], Entry]  # (name, qclass, flags) -> NXDOMAIN covering all types
    bytes: int = 0


class Cache:
    def __init__(self, *, max_entries: int = 100_000, max_bytes: int = 256 << 20) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._parts: dict[int, Partition] = {}
        self._graveyard: list[dict[object, Entry]] = []
        self.count = 0
        self.bytes = 0
        self.evictions = 0
        self.garbage = 0  # entries unlinked by a purge, not yet freed

    # ------------------------------------------------------------------ hot path
    @property
    def parts_by_tag(self) -> dict[int, Partition]:
        """tag -> partition, live (the miss lane checks a key is not cached before it
        forwards; read only)."""
        return self._parts

    def lookup(self, tag: int, key: Key, now: float) -> Entry | None:
        part = self._parts.get(tag)
        if part is None:
            return None
        entry = part.entries.get(key)
        if entry is not None:
            if entry.expires > now:
                entry.used = now
                part.entries.move_to_end(key)
                return entry
            self._unlink(part, part.entries, key, entry)
        if part.nx:
            nxkey = (key[0], key[2], key[3])
            entry = part.nx.get(nxkey)
            if entry is not None:
                if entry.expires > now:
                    return entry
                self._unlink(part, part.nx, nxkey, entry)
        return None

    # ------------------------------------------------------------------ changes
    def insert(
        self, tag: int, pvd: str, key: Key, entry: Entry, *, covers_name: bool = False
    ) -> None:
        """Store ``entry`` under ``tag``. ``covers_name``: an NXDOMAIN for every type of the name."""
        part = self._parts.get(tag)
        if part is None:
            part = self._parts[tag] = Partition(tag, pvd, OrderedDict(), {})
            untrack(part.entries)  # an empty table is tracked from birth
            untrack(part.nx)
        table: dict = part.nx if covers_name else part.entries  # type: ignore[type-arg]
        k: object = (key[0], key[2], key[3]) if covers_name else key
        old = table.get(k)
        if old is not None:
            self._unlink(part, table, k, old)
        # see the module's docstring: no cycle can pass through these. The insert tracks the
        # table again (CPython does so when a dict receives an instance of a class); no
        # collection may run before it is untracked, or that one walks the whole table
        collecting = gc.isenabled()
        if collecting:
            gc.disable()
        table[k] = entry
        untrack(entry)
        untrack(table)
        if collecting:
            gc.enable()
        self.count += 1
        self.bytes += entry.size
        part.bytes += entry.size
        if self.count > self.max_entries or self.bytes > self.max_bytes:
            self._evict()

    def purge(self, tag: int) -> int:
        """Unlink the partition of ``tag`` in O(1); return how many entries it held."""
        part = self._parts.pop(tag, None)
        if part is None:
            return 0
        n = len(part.entries) + len(part.nx)
        self.count -= n
        self.bytes -= part.bytes
        if part.entries:
            self._graveyard.append(part.entries)  # type: ignore[arg-type]
        self.garbage += len(part.entries)
        return n

    def collect(self, budget: int = 5000) -> int:
        """Free up to ``budget`` purged entries; return how many were freed."""
        freed = 0
        while self._graveyard and freed < budget:
            d = self._graveyard[-1]
            take = min(budget - freed, len(d))
            popitem = d.popitem
            for _ in range(take):
                popitem()
            freed += take
            if not d:
                self._graveyard.pop()
        self.garbage -= freed
        return freed

    def flush_all(self) -> int:
        return sum(self.purge(tag) for tag in list(self._parts))

    # ------------------------------------------------------------------ listing
    def partitions(self) -> list[Partition]:
        return list(self._parts.values())

    def size_of(self, tag: int) -> int:
        part = self._parts.get(tag)
        return 0 if part is None else len(part.entries) + len(part.nx)

    def items(self, tag: int, now: float) -> list[tuple[Key, Entry, bool]]:
        """Live entries of a partition: (key, entry, covers_name)."""
        part = self._parts.get(tag)
        if part is None:
            return []
        out: list[tuple[Key, Entry, bool]] = [
            (k, e, False) for k, e in part.entries.items() if e.expires > now
        ]
        out += [((n, 0, c, f), e, True) for (n, c, f), e in part.nx.items() if e.expires > now]
        return out

    # ------------------------------------------------------------------ internals
    def _unlink(self, part: Partition, table: dict, key: object, entry: Entry) -> None:  # type: ignore[type-arg]
        del table[key]
        entry.dead = True
        self.count -= 1
        self.bytes -= entry.size
        part.bytes -= entry.size

    def _evict(self) -> None:
        while (self.count > self.max_entries or self.bytes > self.max_bytes) and self.count > 0:
            victim: Partition | None = None
            oldest = float("inf")
            for part in self._parts.values():
                if part.entries:
                    head = next(iter(part.entries.values()))
                    if head.used < oldest:
                        oldest, victim = head.used, part
                elif part.nx:
                    # side-table entries are never refreshed by use: evict the oldest stored
                    head = next(iter(part.nx.values()))
                    if head.used < oldest:
                        oldest, victim = head.used, part
            if victim is None:
                return
            if victim.entries:
                _key, entry = victim.entries.popitem(last=False)
            else:
                nk = next(iter(victim.nx))
                entry = victim.nx.pop(nk)
            entry.dead = True
            self.count -= 1
            self.bytes -= entry.size
            victim.bytes -= entry.size
            self.evictions += 1
