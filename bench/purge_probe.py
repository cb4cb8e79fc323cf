"""How long does detaching a PvD hold the event loop? Measured from outside, by a client.

    python bench/purge_probe.py --server 127.0.0.53 --control CTL.SOCK --pvd lab

Keeps ``--inflight`` cache-hit queries outstanding against the daemon (one sent per reply, so
replies arrive every few tens of microseconds), asks the daemon over its control socket to
detach ``--pvd`` after ``--before`` seconds, goes on for ``--after`` seconds, and prints one
JSON object:

- ``max_gap_ms_detach``: the longest time without any reply in the window from the detach
  request to ``--after`` later: the event loop's longest stall caused by the detach (purging
  the PvD's partition, cancelling its queries, freeing the purged entries a chunk at a time),
  plus the client's own resolution (``median_gap_ms``);
- ``max_gap_ms_quiet``: the same before the detach: the noise floor (scheduling, neighbours);
- ``replies``, ``resent`` (queries re-sent after 0.5 s without any reply), ``detach_ms`` (the
  control round trip), ``purged`` (entries the daemon purged) and the daemon's own
  ``loop_stalls`` (its longest apply and collect steps since start, from ``ctl status``).

The hit names must be cached already (``h0..h9999.bench.example`` by default: warm them first).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import socket
import statistics
import struct
import threading
import time
from typing import Any

from mifdns.ctl import request


def _query(name: str, qid: int) -> bytes:
    qname = b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\0"
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + qname + b"\x00\x01\x00\x01"


def probe(args: argparse.Namespace) -> dict[str, Any]:
    queries = [_query(f"h{i}.bench.example", i & 0xFFFF) for i in range(args.names)]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect((args.server, args.port))
    sock.settimeout(0.5)
    result: dict[str, Any] = {}

    def detach() -> None:
        time.sleep(args.before)
        result["t_detach"] = time.monotonic()
        answer = request(args.control, {"cmd": "detach", "name": args.pvd})
        result["detach_ms"] = round((time.monotonic() - result["t_detach"]) * 1000, 3)
        result["state"] = answer.get("state") if isinstance(answer, dict) else None

    gc.disable()  # the client's own collections would show up as gaps
    stamps: list[float] = []
    resent = 0
    i = 0
    for _ in range(args.inflight):
        sock.send(queries[i % len(queries)])
        i += 1
    t0 = time.monotonic()
    thread = threading.Thread(target=detach, daemon=True)
    thread.start()
    end = t0 + args.before + args.after
    now = t0
    while now < end:
        try:
            sock.recv(4096)
        except TimeoutError:
            resent += args.inflight
            for _ in range(args.inflight):
                sock.send(queries[i % len(queries)])
                i += 1
            now = time.monotonic()
            continue
        now = time.monotonic()
        stamps.append(now)
        sock.send(queries[i % len(queries)])
        i += 1
    thread.join(10)
    gc.enable()
    sock.close()
    td = result.get("t_detach", end)
    quiet = [b - a for a, b in itertools.pairwise(stamps) if t0 + 0.05 < a and b < td]
    during = [b - a for a, b in itertools.pairwise(stamps) if b > td]
    status = request(args.control, {"cmd": "status"})
    purged = [p for p in status.get("purges", []) if p.get("pvd") == args.pvd]
    return {
        "max_gap_ms_detach": round(max(during, default=0) * 1000, 3),
        "max_gap_ms_quiet": round(max(quiet, default=0) * 1000, 3),
        "median_gap_ms": round(statistics.median(quiet or [0]) * 1000, 4),
        "replies": len(stamps),
        "resent": resent,
        "detach_ms": result.get("detach_ms"),
        "state": result.get("state"),
        "purged": purged[-1]["entries"] if purged else None,
        "loop_stalls": status.get("loop_stalls"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--server", default="127.0.0.53")
    parser.add_argument("--port", type=int, default=53)
    parser.add_argument("--control", required=True, help="the daemon's control socket")
    parser.add_argument("--pvd", required=True, help="the PvD to detach")
    parser.add_argument("--before", type=float, default=0.5)
    parser.add_argument("--after", type=float, default=2.0)
    parser.add_argument("--inflight", type=int, default=32)
    parser.add_argument("--names", type=int, default=10_000)
    args = parser.parse_args(argv)
    print(json.dumps(probe(args)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
