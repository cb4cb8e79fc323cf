"""Micro-benchmark of the hot-path wire codec (mifdns.core.wire) against dnspython.

    python bench/micro_wire.py [--number N]

Prints ns per call (best of 5 repeats). The budget of a whole UDP cache hit is ~5 us of CPU, of
which ~4 us is the event loop and the system calls: see DESIGN.md, "Performance model".
"""

from __future__ import annotations

import argparse
import timeit
from collections.abc import Callable

import dns.message
import dns.rrset

from mifdns.core import render, wire


def _messages() -> tuple[bytes, bytes, bytes]:
    plain = dns.message.make_query("www.Example.com.", "A", use_edns=False)
    plain.id = 4242
    edns = dns.message.make_query("www.Example.com.", "A", use_edns=0, payload=1232)
    edns.id = 4243
    reply = dns.message.make_response(edns)
    reply.answer.append(dns.rrset.from_text("www.Example.com.", 300, "IN", "A", "192.0.2.1"))
    return plain.to_wire(), edns.to_wire(), reply.to_wire()


def _time(fn: Callable[[], object], number: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e9


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=200_000)
    args = parser.parse_args(argv)
    n = args.number
    plain, edns, reply = _messages()
    query = wire.parse_query(plain)
    info = wire.parse_response(reply)
    body, offsets, ttls = render.make_cacheable(reply, info)
    opt = render.opt_rr(1232)
    equery = wire.parse_query(edns)

    def miss() -> object:
        i = wire.parse_response(reply)
        return render.make_cacheable(reply, i)

    def dnspython() -> object:
        return dns.message.from_wire(reply).to_wire()

    cases: list[tuple[str, Callable[[], object], int]] = [
        ("parse_query (no EDNS)", lambda: wire.parse_query(plain), n),
        ("parse_query (EDNS)", lambda: wire.parse_query(edns), n),
        ("render_reply (1 A)", lambda: render.render_reply(body, offsets, ttls, 7, query), n),
        (
            "render_reply (1 A, +OPT)",
            lambda: render.render_reply(body, offsets, ttls, 7, equery, opt=opt),
            n,
        ),
        ("parse_response + make_cacheable", miss, n),
        ("dnspython from_wire + to_wire", dnspython, max(1, n // 20)),
    ]
    for label, fn, number in cases:
        print(f"{label:36s} {_time(fn, number):9.0f} ns/call")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
