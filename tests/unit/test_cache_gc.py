"""The cache stays out of the cyclic garbage collector's sight (see mifdns/core/cache.py).

With the tables and entries tracked, every full collection walked every cached entry (~300 ms
of blocked event loop at 1M entries, bench/gc_pause.py). These tests hold the property and the
invariant it rests on: nothing in the cache can refer back into a cycle.
"""

from __future__ import annotations

import gc
import sys

import pytest

from mifdns.core.cache import Cache, Entry, Kind

pytestmark = pytest.mark.skipif(sys.implementation.name != "cpython", reason="CPython's collector")


def entry(i: int, now: float = 0.0, ttl: int = 300) -> Entry:
    return Entry(bytes(20) + i.to_bytes(4, "big"), (12,), (ttl,), now, now + ttl, Kind.POSITIVE, 0)


def key(i: int) -> tuple[bytes, int, int, int]:
    return (b"\x01n" + str(i).encode() + b"\x00", 1, 1, 0)


def test_tables_and_entries_are_untracked_whatever_collects_meanwhile():
    c = Cache(max_entries=5000)
    seen_tracked: list[int] = []
    collections: list[int] = []

    def watch(phase: str, info: dict[str, int]) -> None:
        if phase == "start":  # no collection may ever see a table (it would walk all of it)
            collections.append(1)
            seen_tracked.extend(
                p.tag
                for p in c.partitions()  # (a new, empty one may be)
                if (p.entries and gc.is_tracked(p.entries)) or (p.nx and gc.is_tracked(p.nx))
            )

    old = gc.get_threshold()
    gc.callbacks.append(watch)
    gc.set_threshold(1)  # a young collection at nearly every allocation
    try:
        for i in range(6000):  # past max_entries: evictions too
            c.insert(1 + i % 2, "p", key(i), entry(i))
        c.insert(3, "q", key(1), entry(1), covers_name=True)  # the NXDOMAIN side table
    finally:
        gc.set_threshold(*old)
        gc.callbacks.remove(watch)
    assert len(collections) > 1000 and seen_tracked == []
    assert c.count == 5000  # the bound held
    for part in c.partitions():
        assert not gc.is_tracked(part.entries) and not gc.is_tracked(part.nx)
        for e in list(part.entries.values()) + list(part.nx.values()):
            assert not gc.is_tracked(e)
    assert gc.isenabled()  # the insert turned the collector back on


def test_an_insert_leaves_a_disabled_collector_disabled():
    c = Cache()
    gc.disable()
    try:
        c.insert(1, "p", key(1), entry(1))
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_an_entry_refers_to_nothing_that_could_close_a_cycle():
    c = Cache()
    e = entry(7)
    c.insert(1, "p", key(7), e)
    e.used = 5.0  # the fields the cache and the resolver change later
    e.dead = True
    atomic = (bytes, int, float, bool, Kind, type(None))
    for ref in gc.get_referents(e):
        if ref is Entry:  # its class
            continue
        if isinstance(ref, tuple):
            assert all(isinstance(x, int) for x in ref), ref
        else:
            assert isinstance(ref, atomic), type(ref)
    assert set(Entry.__slots__) == {
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
    }  # a new field: check it here


def test_purged_and_evicted_entries_are_freed_by_reference_counting():
    import weakref

    c = Cache(max_entries=1)

    class Stamp(float):  # a "stored" time we can watch (a float takes no weak references)
        pass

    stored = Stamp(0.0)
    ref = weakref.ref(stored)
    c.insert(1, "p", key(1), Entry(bytes(24), (12,), (300,), stored, 300.0, Kind.POSITIVE, 0))
    del stored
    gc.disable()
    try:
        c.insert(1, "p", key(2), entry(2))  # evicts the first
        assert ref() is None  # freed at once, without a collection
    finally:
        gc.enable()
