"""Property tests of the client-facing listeners: hostile datagrams and TCP byte streams, on real
loopback sockets, never stop them.

The UDP and TCP listeners run in-process (as in test_listener.py) in front of ``Stub``, a
resolver stand-in built on the wire codec the daemon uses: it parses the query (FORMERR from
error_reply when it cannot), then answers from a "cache" entry made with make_cacheable and
render_reply, so a hostile query's name also goes through the reply patcher. Some answers are
held back and sent later, the way the daemon answers a miss.

Each example checks: no exception reaches the loop's exception handler or the listener's log;
every query the listener must answer gets exactly one answer, and only those (the TCP framing
is modelled by ``expected_answers``); the shared receive buffer, each connection's leftover and
out-buffer stay within their bounds; every connection is gone once its client is (an idle one
by the idle timeout); and a valid query is still answered afterwards.

CI runs a few dozen examples (a few seconds). MIFDNS_LISTENER_FUZZ_EXAMPLES sets how many
(``scripts/fuzz -l``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import dns.message
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from mifdns.aio import tcp_listener
from mifdns.aio.listener import UdpListener
from mifdns.aio.tcp_listener import TcpClient, TcpServer
from mifdns.core import render, wire
from mifdns.core.wire import WireError
from tests.unit.test_wire_fuzz import crafted, hostile

EXAMPLES = int(os.environ.get("MIFDNS_LISTENER_FUZZ_EXAMPLES", "30"))
fuzz = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize="MIFDNS_LISTENER_FUZZ_EXAMPLES" not in os.environ,  # CI: the same each time
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
MAX_INFLIGHT = 3
IDLE = 0.1  # seconds: a half-open connection is closed this soon
WAIT = 2.0  # seconds: far longer than anything here takes on loopback (a failure, not a pause)
OUT_BOUND = tcp_listener.OUT_HIGH + (MAX_INFLIGHT + 1) * tcp_listener.FRAME_MAX


def query(name: str = "probe.fuzz.", qid: int = 0xF022, edns: bool = False) -> bytes:
    q = dns.message.make_query(name, "A", use_edns=0 if edns else False)
    q.id = qid
    return q.to_wire()


class Blob(bytes):
    """Bytes that print short when long (a falsifying example of 64 KiB helps nobody)."""

    def __repr__(self) -> str:
        if len(self) <= 200:
            return bytes.__repr__(self)
        return f"Blob({len(self)} octets, {self[:40].hex()}...{self[-8:].hex()})"


def must_answer(data: bytes) -> bool:
    """The stub answers every message long enough for a header with QR=0, and nothing else."""
    return len(data) >= 12 and not data[2] & 0x80


class Stub:
    """A resolver stand-in: answers at once, or holds every ``hold_every``-th query."""

    def __init__(self) -> None:
        self.held: list[tuple[Any, bytes]] = []
        self.hold_every = 0
        self.seen = 0
        # like the resolver's ready table: UDP replies the listener replays without asking;
        # some with how to age them (always past "until", so the C loop ages them), a few with
        # offsets that point outside the reply (it must then ask instead)
        self.table: dict[bytes, tuple[Any, ...]] = {}
        self.aging: tuple[tuple[int, ...], tuple[int, ...]] | None = None

    def handle(self, data: bytes, client: object, now: float, max_udp: int | None) -> bytes | None:
        reply = self.answer(data, max_udp)
        self.seen += 1
        if reply is not None and self.hold_every and self.seen % self.hold_every == 0:
            self.held.append((client, reply))
            return None
        if reply is not None and reply[:2] == data[:2] and max_udp is not None:
            if len(self.table) > 10_000:
                self.table.clear()
            if self.aging is None or len(data) % 3 == 0:
                self.table[data[2:]] = (reply[2:], float("inf"))
            else:
                offsets, ttls = self.aging
                if len(data) % 5 == 0:  # hostile: past the end, inside the ID, negative
                    offsets = (len(reply) - 3, 1, -8)[: len(ttls)] + offsets[3:]
                self.table[data[2:]] = (
                    reply[2:],
                    float("-inf"),
                    now - len(data) % 7,
                    float("inf"),
                    offsets,
                    ttls,
                )
        return reply

    def ready(self, max_udp: int | None) -> dict[bytes, tuple[Any, ...]]:
        return self.table

    def count_ready(self, n: int) -> None:
        pass

    def answer(self, data: bytes, max_udp: int | None) -> bytes | None:
        self.aging = None
        try:
            q = wire.parse_query(data)
        except WireError as exc:
            return render.error_reply(data, exc.rcode)
        opt = render.opt_rr(1232) if q.edns else b""
        size = q.udp_size
        if q.opcode or not q.qname:
            return render.error_reply(data, wire.NOTIMP, query=q, opt=opt)
        if q.edns and q.edns_version:
            return render.error_reply(data, wire.BADVERS, query=q, opt=opt)
        # an upstream's answer for this name (some of them too big for 512 octets), cached
        rdata = b"\xc0\x00\x02\x01"
        q.udp_size = 65535
        upstream = render.local_reply(q, wire.NOERROR, [(wire.A, 300, rdata)] * (len(data) % 40))
        info = wire.parse_response(upstream)
        body, offsets, ttls = render.make_cacheable(upstream, info)
        q.udp_size = 65535 if max_udp is None else min(size, max_udp)
        out = render.render_reply(body, offsets, ttls, 1, q, opt=opt, clear_ad=not q.do)
        self.aging = None if out[2] & 2 else (offsets, ttls)  # truncated: nothing to age
        return out

    def after_batch(self) -> None:
        pass

    def release(self) -> None:
        """Send what was held (the daemon's flush)."""
        todo, self.held = self.held, []
        for client, reply in todo:
            if isinstance(client, TcpClient):
                client.send(reply)
            else:
                udp, addr = client
                udp.send(reply, addr)


class Bed:
    """A loop with both listeners on loopback; records whatever goes wrong in it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.errors: list[str] = []
        self.loop.set_exception_handler(lambda _loop, ctx: self.errors.append(repr(ctx)))
        self.log = _Recorder(self.errors)
        logging.getLogger("mifdns.listener").addHandler(self.log)
        self.stub = Stub()
        port = _free_port()
        self.udp = UdpListener(
            self.loop,
            "127.0.0.1",
            port,
            self.stub.handle,
            self.stub.after_batch,
            ready=self.stub.ready,
            count_ready=self.stub.count_ready,
        )
        self.tcp = TcpServer(
            self.loop, "127.0.0.1", port, self.stub.handle, self.stub.after_batch,
            max_clients=16, max_inflight=MAX_INFLIGHT, idle_timeout=IDLE,
        )  # fmt: skip
        self.udp.start()
        self.loop.run_until_complete(self.tcp.start())

    def run(self, coro: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self.errors.clear()
        self.loop.run_until_complete(asyncio.wait_for(coro(), 4 * WAIT))
        assert not self.errors, self.errors

    def close(self) -> None:
        self.loop.run_until_complete(self.tcp.close())
        self.udp.close()
        self.loop.close()
        logging.getLogger("mifdns.listener").removeHandler(self.log)

    def check_bounds(self) -> None:
        srv = self.tcp
        assert len(srv._rbuf) == 2 * tcp_listener.FRAME_MAX
        assert len(srv.clients) <= srv.max_clients
        for c in srv.clients:
            assert len(c.tail) <= 2 * tcp_listener.FRAME_MAX
            assert c.out is None or len(c.out) <= OUT_BOUND
            assert c.inflight <= MAX_INFLIGHT

    async def releasing(self) -> None:
        """Answer the held queries every few milliseconds until cancelled."""
        while True:
            self.stub.release()
            await asyncio.sleep(0.002)


class _Recorder(logging.Handler):
    def __init__(self, into: list[str]) -> None:
        super().__init__(logging.ERROR)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(self.format(record))


def _free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1."""
    while True:
        with socket.socket() as t:
            t.bind(("127.0.0.1", 0))
            port = int(t.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                try:
                    u.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port


async def settle(cond: Callable[[], bool], what: str) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + WAIT
    while not cond():
        assert loop.time() < end, what
        await asyncio.sleep(0.005)


# -- what clients send ---------------------------------------------------------------------------
valid = st.builds(
    query,
    st.sampled_from(["www.example.", "A.b.C.", "x" * 63 + ".example.", "\\000.\\255."]),
    st.integers(0, 0xFFFF),
    st.booleans(),
)
payload = st.one_of(valid, hostile, crafted(), crafted(qr=False))
datagram = st.one_of(
    payload,
    st.just(b""),
    st.binary(min_size=1, max_size=11),  # shorter than a header
    st.integers(1500, 65507).map(lambda n: (query()[:12] + b"\x3f" * n)[:n]),  # big, then cut
).map(Blob)


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    """One piece of a TCP stream: a frame, or a lie about one."""
    kind = draw(st.sampled_from(["frame"] * 8 + ["huge", "short", "liar", "raw", "big"]))
    if kind == "frame":
        data = draw(payload)
        return struct.pack("!H", min(len(data), 0xFFFF)) + data[:0xFFFF]
    if kind == "huge":  # 65535 announced, a little sent
        return b"\xff\xff" + draw(st.binary(max_size=40))
    if kind == "short":  # a length too small for a header: the listener closes the connection
        n = draw(st.integers(0, 11))
        return struct.pack("!H", n) + draw(st.binary(min_size=n, max_size=n))
    if kind == "liar":  # a length that is not the payload's
        data = draw(payload)
        return struct.pack("!H", draw(st.integers(12, 0xFFFF))) + data
    if kind == "big":  # the largest frame there is
        return b"\xff\xff" + (query() + b"\x00" * 0xFFFF)[:0xFFFF]
    return draw(st.binary(min_size=1, max_size=64))


@st.composite
def connections(draw: st.DrawFn) -> tuple[bytes, list[int], str]:
    """(the bytes a client sends, where its sends are cut, how it ends)."""
    stream = b"".join(draw(st.lists(frames(), min_size=1, max_size=6)))
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(stream) - 1)), max_size=8))))
    ending = draw(st.sampled_from(["half-close"] * 4 + ["close", "reset", "half-open"]))
    return Blob(stream), cuts, ending


def expected_answers(stream: bytes) -> tuple[int, bool]:
    """(answers the listener owes for ``stream``, whether it closes the connection on a short
    frame): the listener's framing, modelled."""
    pos = answers = 0
    while len(stream) - pos >= 2:
        length = stream[pos] << 8 | stream[pos + 1]
        if length < 12:
            return answers, True
        if pos + 2 + length > len(stream):
            break
        answers += must_answer(stream[pos + 2 : pos + 2 + length])
        pos += 2 + length
    return answers, False


# -- UDP -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bed() -> Iterator[Bed]:
    b = Bed()
    yield b
    b.close()


@fuzz
@given(
    datagrams=st.lists(datagram, min_size=1, max_size=12), hold_every=st.sampled_from([0, 0, 2, 3])
)
def test_hostile_datagrams_are_answered_or_dropped_and_the_listener_goes_on(
    bed: Bed, datagrams: list[bytes], hold_every: int
) -> None:
    bed.stub.hold_every = hold_every
    # half of them again: repeats are replayed from the ready table, or aged there (C loop)
    bed.run(lambda: _udp_exchange(bed, datagrams + datagrams[: len(datagrams) // 2]))


async def _udp_exchange(bed: Bed, datagrams: list[bytes]) -> None:
    loop = asyncio.get_running_loop()
    to = ("127.0.0.1", bed.udp.port)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
        c.setblocking(False)
        for d in datagrams:
            c.sendto(d, to)
            await asyncio.sleep(0)  # the listener reads it now: its queue never overflows
        bed.stub.release()
        bed.stub.hold_every = 0
        c.sendto(query(), to)  # the probe: answered last, after everything above
        want = sorted(struct.unpack_from("!H", d)[0] for d in datagrams if must_answer(d))
        got = []
        while True:
            reply = await asyncio.wait_for(loop.sock_recv(c, 65535), WAIT)
            assert len(reply) >= 12 and reply[2] & 0x80, reply
            if reply[:2] == b"\xf0\x22" and b"\x05probe\x04fuzz" in reply:
                break
            got.append(struct.unpack_from("!H", reply)[0])
    assert sorted(got) == want  # one answer per query, none for the rest
    event(f"UDP {len(want)} of {len(datagrams)} answered")
    event("some replayed" if bed.udp.counters["replayed"] else "none replayed yet")
    event("some aged" if bed.udp.counters["aged"] else "none aged yet")


# -- TCP -----------------------------------------------------------------------------------------
@fuzz
@given(
    conns=st.lists(connections(), min_size=1, max_size=4), hold_every=st.sampled_from([0, 0, 2, 3])
)
def test_hostile_tcp_streams_never_stop_the_listener_nor_grow_its_buffers(
    bed: Bed, conns: list[tuple[bytes, list[int], str]], hold_every: int
) -> None:
    bed.stub.hold_every = hold_every
    bed.run(lambda: _tcp_exchange(bed, conns))


async def _tcp_exchange(bed: Bed, conns: list[tuple[bytes, list[int], str]]) -> None:
    idle_before = bed.tcp.counters["idle_closed"]
    releaser = asyncio.create_task(bed.releasing())
    try:
        results = await asyncio.gather(*(_tcp_client(bed, *c) for c in conns))
        # every connection goes once its client has: closed, reset, or idle (half-open)
        await settle(lambda: not bed.tcp.clients, f"connections left: {bed.tcp.clients}")
    finally:
        releaser.cancel()
    bed.stub.release()
    bed.stub.hold_every = 0
    bed.check_bounds()
    # a connection closed as idle while its client was sending means this process stalled
    # for longer than IDLE (a loaded machine): its answers are lost, not a listener's fault
    half_open = sum(ending == "half-open" for _, _, ending in conns)
    stalled = bed.tcp.counters["idle_closed"] - idle_before > half_open
    for (_, _, ending), (got, owed, closes) in zip(conns, results):
        event(f"TCP {ending}, " + ("closed on a short frame" if closes else f"{owed} answers owed"))
        if got is None:  # not read
            continue
        if closes or stalled:  # closed on a short frame: answers may go with the reset
            assert got <= owed
        else:
            assert got == owed, (got, owed)
    await _tcp_probe(bed)


async def _tcp_client(
    bed: Bed, stream: bytes, cuts: list[int], ending: str
) -> tuple[int | None, int, bool]:
    """Send ``stream`` in pieces and end as told: (answers read (None: not read), answers owed,
    whether the listener closes the connection on a short frame)."""
    loop = asyncio.get_running_loop()
    s = socket.socket()
    s.setblocking(False)
    await loop.sock_connect(s, ("127.0.0.1", bed.tcp.port))
    local = s.getsockname()
    reader = asyncio.create_task(_read_all(s)) if ending == "half-close" else None
    sent = 0
    try:
        for a, b in zip([0, *cuts], [*cuts, len(stream)]):
            await asyncio.wait_for(loop.sock_sendall(s, stream[a:b]), WAIT)
            sent = b
            await asyncio.sleep(0)  # the listener reads this piece before the next comes
            bed.check_bounds()
    except ConnectionError:  # the listener closed it (a short frame): nothing more goes in
        pass
    owed, closes = expected_answers(stream[:sent])
    if ending == "half-close":  # RFC 7766: answers still come, then the listener closes
        try:
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
    elif ending == "reset":
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    elif ending == "half-open":  # gone without a word: the idle timeout closes it
        await settle(lambda: all(_peer(c) != local for c in bed.tcp.clients), "idle close")
    if reader is None:
        s.close()
        return None, owed, closes
    data = await reader
    s.close()
    got = pos = 0
    while len(data) - pos >= 2:
        length = data[pos] << 8 | data[pos + 1]
        reply = data[pos + 2 : pos + 2 + length]
        assert len(reply) == length >= 12 and reply[2] & 0x80, data[pos:].hex()
        pos += 2 + length
        got += 1
    assert pos == len(data) or closes, "an answer cut short"
    return got, owed, closes


def _peer(c: TcpClient) -> Any:
    try:
        return c.sock.getpeername()
    except OSError:
        return None


async def _read_all(s: socket.socket) -> bytes:
    loop = asyncio.get_running_loop()
    out = bytearray()
    while True:
        try:
            chunk = await asyncio.wait_for(loop.sock_recv(s, 65536), WAIT)
        except ConnectionResetError:
            return bytes(out)
        if not chunk:
            return bytes(out)
        out += chunk


async def _tcp_probe(bed: Bed) -> None:
    loop = asyncio.get_running_loop()
    with socket.socket() as s:
        s.setblocking(False)
        await loop.sock_connect(s, ("127.0.0.1", bed.tcp.port))
        q = query(qid=0x7E57)
        await loop.sock_sendall(s, struct.pack("!H", len(q)) + q)
        s.shutdown(socket.SHUT_WR)
        data = await _read_all(s)
    assert data[2:4] == b"\x7e\x57" and len(data) == 2 + struct.unpack_from("!H", data)[0]
    assert dns.message.from_wire(data[2:]).question[0].name.to_text() == "probe.fuzz."
