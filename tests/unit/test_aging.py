"""The TTL aging of ready-table entries (core/memo.py), in C (the C UDP loop's, exposed as
``_udpbatch.age``) and in Python (``memo.age``, the Python loop's): for any entry, sane or
hostile, both give the same aged entry byte for byte, or both refuse it (None)."""

from __future__ import annotations

from typing import Any

from hypothesis import event, given, settings
from hypothesis import strategies as st

from mifdns.core import memo

from .test_udp_batch import need

_HOSTILE_INT = st.sampled_from([-1, 0, 1, 0xFFFFFFFF, 0x100000000, 1 << 63, -(1 << 63), 1 << 80])
_HOSTILE = st.one_of(_HOSTILE_INT, st.just("5"), st.just(5.0), st.just(True), st.none())
_HOSTILE_TIME = st.one_of(
    st.sampled_from([float("nan"), float("inf"), -float("inf"), 2.0**32, 2.0**33, 1e300]),
    st.integers(0, 100),
)


@st.composite
def _aging_entries(draw: st.DrawFn) -> tuple[tuple[Any, ...], float]:
    """Mostly what the resolver offers (a reply, TTL offsets inside it, TTLs, times in order),
    with one part made hostile in about a third of the cases."""
    tail = draw(st.binary(min_size=4, max_size=64))
    n = draw(st.integers(0, 6))
    offsets: list[Any] = [draw(st.integers(2, len(tail) - 2)) for _ in range(n)]
    values: list[Any] = [draw(st.integers(0, 0xFFFFFFFF)) for _ in range(n)]
    stored: Any = draw(st.floats(0, 1e9))
    expires: Any = stored + draw(st.floats(0.001, 1e6))
    now = stored + draw(st.floats(-5, (expires - stored) * 1.25))
    spoil = draw(st.sampled_from(["none"] * 6 + ["offset", "value", "length", "time", "late"]))
    if spoil == "offset" and n:
        near_end = st.integers(len(tail) - 2, len(tail) + 2)  # message offsets: ID included
        offsets[draw(st.integers(0, n - 1))] = draw(
            st.one_of(_HOSTILE, st.integers(-4, 80), near_end)
        )
    elif spoil == "value" and n:
        values[draw(st.integers(0, n - 1))] = draw(_HOSTILE)
    elif spoil == "length":
        values.append(draw(st.integers(0, 9)))
    elif spoil == "time":
        if draw(st.booleans()):
            stored = draw(_HOSTILE_TIME)
        else:
            expires = draw(_HOSTILE_TIME)
    elif spoil == "late":
        now = stored + draw(st.sampled_from([2.0**32 - 1, 2.0**32, 2.0**32 + 1]))
        expires = now + 1.0
    return (tail, 0.0, stored, expires, tuple(offsets), tuple(values)), now


@settings(max_examples=3000, deadline=None)
@given(_aging_entries())
def test_c_and_python_aging_agree_on_any_entry(case: tuple[tuple[Any, ...], float]) -> None:
    need("c")
    from mifdns.aio import _udpbatch

    hit, now = case
    got = memo.age(hit, now)
    event("aged" if got is not None else "refused")
    assert _udpbatch.age(hit, now) == got


def test_python_aging_counts_down_and_stops_at_zero_and_at_expiry() -> None:
    tail = b"AB" + (100).to_bytes(4, "big") + b"CD" + (7).to_bytes(4, "big") + b"EF"
    hit = (tail, 0.0, 1000.0, 1030.0, (4, 10), (100, 7))
    aged = memo.age(hit, 1010.75)
    assert aged == (
        b"AB" + (90).to_bytes(4, "big") + b"CD" + bytes(4) + b"EF",
        1011.0,  # valid for the rest of this second
        1000.0,
        1030.0,
        (4, 10),
        (100, 7),
    )
    assert memo.age(hit, 1029.5)[1] == 1030.0  # never valid past expiry  # type: ignore[index]
    assert memo.age(hit, 1030.0) is None  # expired: the resolver decides
