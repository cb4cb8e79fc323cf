"""How long the cyclic garbage collector stops the daemon when the cache is large.

    python bench/gc_pause.py [--entries N]

Fills the real ``Cache`` with N entries (1M by default; wire bodies of a typical A answer)
under the daemon's collector settings (``gc.freeze`` after start-up, young threshold 20,000),
once with stored entries taken out of the collector's sight (what mifdns does, see
``mifdns/core/cache.py``) and once with them tracked, in fresh processes. Prints the longest
young/middle collection during the fill, and the time of two full collections afterwards (the
loop is blocked for all of it; the first also untracks the key tuples, once each).
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time


def one(entries: int, untracked: bool) -> dict[str, float]:
    from mifdns.aio.daemon import GC_YOUNG_THRESHOLD
    from mifdns.core import cache as cachemod
    from mifdns.core.cache import Cache, Entry, Kind

    if not untracked:
        cachemod.untrack = lambda obj: None
    c = Cache(max_entries=entries + 1, max_bytes=1 << 40)
    gc.collect()
    gc.freeze()
    _, g1, g2 = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, g1, g2)
    worst = {0: 0.0, 1: 0.0, 2: 0.0}
    started = [0.0]

    def cb(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            g = info["generation"]
            worst[g] = max(worst[g], (time.perf_counter() - started[0]) * 1000)

    gc.callbacks.append(cb)
    body = bytes(12) + b"\x01a\x05bench\x07example\x00\x00\x01\x00\x01" + bytes(16)
    t0 = time.perf_counter()
    for i in range(entries):
        e = Entry(body + i.to_bytes(4, "big"), (40,), (300,), 0.0, 300.0, Kind.POSITIVE, 0)
        c.insert(1 + i % 3, "p", (b"\x01n%d\x00" % i, 1, 1, 0), e)
    fill = time.perf_counter() - t0
    gc.callbacks.remove(cb)
    fulls = []
    for _ in range(2):  # the first one also untracks the key tuples (once per tuple)
        t0 = time.perf_counter()
        gc.collect()
        fulls.append((time.perf_counter() - t0) * 1000)
    return {
        "fill_s": round(fill, 2),
        "young_max_ms": round(worst[0], 1),
        "middle_max_ms": round(worst[1], 1),
        "full_ms": round(fulls[0], 1),
        "full2_ms": round(fulls[1], 1),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--one", choices=["untracked", "tracked"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.entries, args.one == "untracked")))
        return 0
    print(
        f"{'cache entries':>14} {'entries':>8} {'fill s':>7} {'young max ms':>13} "
        f"{'middle max ms':>14} {'full GC ms':>11} {'next full ms':>13}"
    )
    for mode in ("untracked", "tracked"):
        out = subprocess.run(
            [sys.executable, __file__, "--entries", str(args.entries), "--one", mode],
            check=True,
            capture_output=True,
            text=True,
        )
        r = json.loads(out.stdout)
        print(
            f"{mode:>14} {args.entries:>8} {r['fill_s']:>7} {r['young_max_ms']:>13} "
            f"{r['middle_max_ms']:>14} {r['full_ms']:>11} {r['full2_ms']:>13}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
