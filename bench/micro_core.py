"""Micro-benchmark of the resolver core's query path, without sockets or an event loop.

    python bench/micro_core.py [--number N] [--config FILE]

Runs the real Resolver (routing, partitioned cache, tags) on the bench's realistic setup: 3 PvDs
and 50 routing domains, the benchmark names on PvD "wifi" through its default route (or the
PvDs of ``--config``). Prints microseconds per call (best of 5 repeats) for:

- ``hit memo``: a repeated query answered from the answer memo (the UDP hit path);
- ``hit``: a hit rendered from the cache (memo off): parse, route, lookup, render;
- ``miss``: a new name each time: parse, route, lookup, a transaction and its upstream query,
  then the upstream reply: validation, storage (TTL 0: not cached), the client's reply.

The numbers are the core's share of a query; the event loop and system calls come on top.
For instruction counts (stable on a noisy machine) run it under callgrind with a small -n:
``bench/icount.sh miss`` (callgrind, two runs of different length, the difference per call).
"""

from __future__ import annotations

import argparse
import gc
import struct
import timeit
from collections.abc import Callable

from mifdns import config as cfgmod
from mifdns.core import render, wire
from mifdns.core.registry import Registry
from mifdns.core.resolver import Release, Reply, Resolver, Send

# the realistic setup of bench/run.sh: wifi (default route, the benchmark's upstream), a VPN
# with 33 routing domains and 2 reverse networks, a lab network with 15 domains
_VPN = ", ".join(
    [f'"~corp{i}.example"' for i in range(30)]
    + ['"~corp.example"', '"~internal.example.com"', '"~vpn.example.net"']
)
_LAB = ", ".join([f'"~lab{i}.test.example"' for i in range(14)] + ['"~k8s.example.org"'])
REALISTIC = f"""
listen: ["127.0.0.53:53"]
netlink: false
pvds:
  - {{name: wifi, interface: lo, servers: ["127.0.0.2"], default_route: true,
     domains: ["home.arpa", "~lan"]}}
  - {{name: vpn, interface: vpn0, servers: ["10.99.0.53", "10.99.0.54"], exclusive: true,
     networks: ["10.99.0.0/16", "172.20.0.0/14"],
     domains: [{_VPN}]}}
  - {{name: lab, interface: eth9, servers: ["192.0.2.53"], domains: [{_LAB}]}}
"""


def _query(name: str, qid: int = 0x1234) -> bytes:
    """A dnsperf-like query: RD, one question, an OPT RR (EDNS 0, 4096 bytes)."""
    qname = wire.text_to_qname(name)
    return (
        struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 1)
        + qname
        + struct.pack("!HH", 1, 1)
        + render.opt_rr(4096)
    )


def _answer(query: bytes, ttl: int) -> bytes:
    """The upstream's answer to ``query`` (one A record; the query's OPT kept)."""
    info = wire.parse_query(query)
    end = info.question_end
    rr = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, ttl, 4) + bytes([10, 2, 0, 1])
    return (
        query[:2]
        + b"\x81\x80"
        + struct.pack("!HHHH", 1, 1, 0, 1)
        + query[12:end]
        + rr
        + query[end:]
    )


def build(config_text: str) -> Resolver:
    cfg = cfgmod.parse_config(config_text)
    from mifdns.aio.daemon import settings_from

    reg = Registry()
    res = Resolver(reg, settings_from(cfg))
    for spec in cfg.pvds:
        reg.add(spec, now=0.0)
    return res


def bench(res: Resolver, number: int, only: str | None, raw: int = 0) -> dict[str, float]:
    now = [10.0]
    out: dict[str, float] = {}
    client = object()
    hq = res.handle_query

    # fill the wifi partition with the 10k hit names
    for i in range(10_000):
        q = _query(f"h{i}.bench.example")
        hq(q, client, now[0], 65494)
        for act in res.outbox:
            if type(act) is Send:
                res.handle_reply(
                    act.txn, _answer(act.wire, 3600), (act.server.host, 53), False, now[0]
                )
        res.outbox.clear()
    res.outbox.clear()
    hits = [_query(f"h{i}.bench.example", qid=i) for i in range(10_000)]
    for q in hits:  # the first hit of each renders it and fills the answer memo
        hq(q, client, 11.0, 65494)

    def run(name: str, fn: Callable[[], None], n: int) -> None:
        if only and name != only:
            return
        gc.collect()
        if raw:  # a fixed number of calls, untimed: for instruction counts (see --raw)
            for _ in range(raw):
                fn()
            out[name] = float("nan")
            return
        out[name] = min(timeit.repeat(fn, number=n, repeat=5)) / n * 1e6

    it = iter(range(1 << 62))

    def hit_memo() -> None:
        hq(hits[next(it) % 10_000], client, 11.0, 65494)

    def hit_plain() -> None:
        res._memo.clear()
        hq(hits[next(it) % 10_000], client, 11.0, 65494)

    n_miss = max(1, number // 5)
    misses = [_query(f"m{i}.z.bench.example") for i in range(max(6 * n_miss, raw))]
    answers = [_answer(q, 0)[2:] for q in misses]  # the ID is patched in per attempt
    counter = iter(range(1 << 62))

    def miss() -> None:
        i = next(counter)
        hq(misses[i], client, 12.0, 65494)
        box, res.outbox = res.outbox, []
        for act in box:
            if type(act) is Send:
                res.handle_reply(
                    act.txn, act.wire[:2] + answers[i], (act.server.host, 53), False, 12.0
                )
        box, res.outbox = res.outbox, []
        for act in box:
            assert type(act) in (Reply, Release)
        res.next_timer()

    run("hit memo", hit_memo, number)
    run("hit", hit_plain, number)
    run("miss", miss, n_miss)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("-n", "--number", type=int, default=50_000)
    parser.add_argument("--config", help="a mifdns config file instead of the built-in setup")
    parser.add_argument("--only", choices=["hit memo", "hit", "miss"])
    parser.add_argument(
        "--raw",
        type=int,
        default=0,
        metavar="K",
        help="run the path K times untimed (instruction counts: run twice "
        "under callgrind with two K and divide the difference)",
    )
    args = parser.parse_args(argv)
    if args.config:
        with open(args.config) as f:
            text = f.read()
    else:
        text = REALISTIC
    res = build(text)
    for name, us in bench(res, args.number, args.only, args.raw).items():
        print(f"{name:36s} {us:8.2f} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
