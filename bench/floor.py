"""The floor of UDP forwarding in Python: the leanest forwarder around mifdns's C UDP loop.

    sudo ../shared/bench/compare.sh -n -t miss -r 3 -l 5 \
        'floor=127.0.0.53:53@python3 bench/floor.py'

Not a resolver: no routing, no cache, no PvDs, no timeouts, retries or health, no validation of
the reply beyond its ID. Client queries are read in ``recvmmsg`` batches by
``mifdns/aio/_udpbatch.c`` (as the daemon reads them); each gets a random ID and goes to the
upstream (``UPSTREAM_ADDR``/``UPSTREAM_PORT``, set by compare.sh; default 127.0.0.2:53) through
one of 8 connected sockets; each reply goes back to its client with the client's ID, one
``sendto`` each. What it costs per forwarded query is the I/O and event-loop floor any Python
forwarder on this loop pays; the daemon's cost above it is its own logic (docs/performance.md,
"Where the time goes now").
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
from collections.abc import Callable

from mifdns.aio import _udpbatch  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.53:53", help="ADDR:PORT (IPv4)")
    parser.add_argument("--sockets", type=int, default=8, help="upstream sockets")
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    upstream = (
        os.environ.get("UPSTREAM_ADDR", "127.0.0.2"),
        int(os.environ.get("UPSTREAM_PORT", "53")),
    )

    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.setblocking(False)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    listener.bind((host, int(port)))
    ups = []
    for _ in range(args.sockets):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setblocking(False)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        s.connect(upstream)
        ups.append(s)
    n = len(ups)
    pending: dict[tuple[int, int], tuple[object, bytes]] = {}
    rand16 = random.getrandbits  # speed over quality: this is a yardstick, not a resolver
    fd, sendto = listener.fileno(), listener.sendto

    def slow(data: bytes, addr: object) -> bytes | None:  # None: no immediate reply
        qid = rand16(16)
        s = ups[qid % n]
        key = (s.fileno(), qid)
        if key in pending or len(data) < 12:
            return None  # an ID in use: dropped (the client retries)
        pending[key] = (addr, data[:2])
        try:
            s.send(qid.to_bytes(2, "big") + data[2:])
        except OSError:
            del pending[key]
        return None

    def on_listener() -> None:
        _udpbatch.serve(fd, socket.AF_INET, None, 0.0, slow, 64)

    def reader(s: socket.socket) -> Callable[[], None]:
        sfd, recv = s.fileno(), s.recv

        def on_reply() -> None:
            for _ in range(64):
                try:
                    r = recv(65535)
                except BlockingIOError:
                    return
                except OSError:
                    continue
                got = pending.pop((sfd, int.from_bytes(r[:2], "big")), None)
                if got is not None:
                    try:
                        sendto(got[1] + r[2:], got[0])
                    except OSError:
                        pass

        return on_reply

    loop = asyncio.new_event_loop()
    loop.add_reader(fd, on_listener)
    for s in ups:
        loop.add_reader(s.fileno(), reader(s))
    try:
        loop.run_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
