"""The load-and-fault test bed of test_faults.py: PvDs whose servers share one address behind
different interfaces, a steady client load (:class:`Load`), fault windows (:class:`Faults`),
the judge of every query (:func:`judge`) and a tcpdump of where upstream queries left
(:class:`Capture`). See test_faults.py for what the tests assert."""

from __future__ import annotations

import contextlib
import itertools
import random
import selectors
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import dns.exception
import dns.message
import dns.rdatatype
from dnslib import QTYPE, RR, SOA, A  # type: ignore[import-untyped]
from splitdns_helpers import STUB, client_log, edes, is_own_probe, rcode, wait_for

from mifdns.harness import netns
from mifdns.harness.fakeupstream import query_from
from mifdns.harness.pcap import dns_messages, read_packets

CLIENT_TIMEOUT = 2.0  # per try; glibc waits 5 s, but the daemon answers SERVFAIL by UPSTREAM's end
CLIENT_RETRIES = 2
UDP_RATE = 400.0  # queries per second
TCP_RATE = 40.0
# shorter than the defaults (0.8 s / 3 s): a query stuck on a dead server is answered SERVFAIL
# well within the client's first timeout, and the test's seconds go into load, not waiting
UPSTREAM = {"timeout": 0.5, "total_timeout": 1.5}

# per PvD: its domain, its address block (A of h<n> is <block>.<n // 250>.<n % 250 + 1>) and
# the serial of its SOA, so that every answer says which server gave it
DOMAIN = {"corp": "corp.example", "wifi": "example.com", "lab": "lab.example"}
BLOCK = {"corp": "10.8", "wifi": "198.18", "lab": "10.77"}
SERIAL = {"corp": 1001, "wifi": 2002, "lab": 3003}
PUBLIC_CORP = "100.64"  # the internet's view of corp.example: never a right answer
ZONE_NAMES = 3000  # h0..h2999 per domain
HOT = 10  # h0..h9 are asked again and again (cache hits); fresh names start at h10
SERVER = "192.0.2.53"
SERVER2 = "192.0.2.54"
BROKEN = (
    "pvds:\n  - name: corp\n    interface: corp0\n    servers: ['10.1.0.300']\n    colour: blue\n"
)


def address(block: str, n: int) -> str:
    return f"{block}.{n // 250}.{n % 250 + 1}"


def zone(pvd: str) -> list[RR]:
    """What ``pvd``'s server knows. The Wi-Fi's server also has the public corp.example."""
    views = [(DOMAIN[pvd], BLOCK[pvd])] + ([(DOMAIN["corp"], PUBLIC_CORP)] if pvd == "wifi" else [])
    rrs = []
    for origin, block in views:
        times = (SERIAL[pvd], 3600, 600, 86400, 300)
        soa = SOA(f"ns.{origin}.", f"hostmaster.{origin}.", times)
        rrs.append(RR(f"{origin}.", QTYPE.SOA, rdata=soa, ttl=300))
        rrs += [RR(f"h{n}.{origin}.", QTYPE.A, rdata=A(address(block, n)), ttl=300)
                for n in range(ZONE_NAMES)]  # fmt: skip
    return rrs


def owner(qname: str) -> str | None:
    """The PvD a name belongs to (None: no PvD's)."""
    return next((p for p, d in DOMAIN.items() if qname.lower().endswith(f".{d}.")), None)


Got = tuple[str, list[str], int | None]  # rcode, answer rdata, SOA serial in authority


def expected(qname: str, qtype: str) -> Got:
    pvd = owner(qname)
    assert pvd is not None, qname
    label = qname.split(".")[0]
    if label.startswith("nx"):
        return "NXDOMAIN", [], SERIAL[pvd]
    if qtype == "AAAA":
        return "NOERROR", [], SERIAL[pvd]  # NODATA
    return "NOERROR", [address(BLOCK[pvd], int(label[1:]))], None


def got(msg: dns.message.Message) -> Got:
    rdata = sorted(rd.to_text() for rrset in msg.answer for rd in rrset)
    serial = next((rd.serial for rrset in msg.authority if rrset.rdtype == dns.rdatatype.SOA
                   for rd in rrset), None)  # fmt: skip
    return rcode(msg), rdata, serial


class Questions:
    """The question stream: round-robin over ``pvds``; 70% a name not asked before (a miss),
    15% a hot name, 10% a name that does not exist, 5% AAAA of a fresh name (NODATA)."""

    def __init__(self, pvds: list[str], seed: int = 6) -> None:
        self._rng = random.Random(seed)
        self._pvds = itertools.cycle(pvds)
        self._fresh = {p: itertools.count(HOT) for p in pvds}
        self._nx = itertools.count()
        self._lock = threading.Lock()

    def next(self) -> tuple[str, str]:
        with self._lock:
            pvd = next(self._pvds)
            dom, r = DOMAIN[pvd], self._rng.random()
            if r < 0.70:
                return f"h{next(self._fresh[pvd]) % ZONE_NAMES}.{dom}.", "A"
            if r < 0.85:
                return f"h{self._rng.randrange(HOT)}.{dom}.", "A"
            if r < 0.95:
                return f"nx{next(self._nx)}.{dom}.", "A"
            return f"h{next(self._fresh[pvd]) % ZONE_NAMES}.{dom}.", "AAAA"


@dataclass
class Asked:
    """One client query: when it was first sent, how many sends, when it ended, the reply."""

    qname: str
    qtype: str
    transport: str
    sent: float
    tries: int = 1
    done: float | None = None
    reply: dns.message.Message | None = None


class Load:
    """Steady UDP and TCP client load on 127.0.0.53 from namespace ``ns`` (see the module
    docstring). A context manager: leaving it stops sending and waits for the last replies."""

    def __init__(self, ns: str, questions: Questions, udp_rate: float = UDP_RATE,
                 tcp_rate: float = TCP_RATE, sockets: int = 8) -> None:  # fmt: skip
        self.ns = ns
        self.questions = questions
        self.udp_rate = udp_rate
        self.tcp_rate = tcp_rate
        self.sockets = sockets
        self.asked: list[Asked] = []
        self.strays = 0  # replies to no pending query (a second reply after a retry)
        self.started = 0.0
        self.stopped = 0.0
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._udp, name="load-udp", daemon=True),
            threading.Thread(target=self._tcp, name="load-tcp", daemon=True),
        ]
        self._errors: list[BaseException] = []

    def __enter__(self) -> Self:
        self.started = time.monotonic()
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if not self.stopped:
            self.stopped = time.monotonic()
        self._stop.set()
        for t in self._threads:
            t.join(CLIENT_TIMEOUT * (CLIENT_RETRIES + 1) + 5)
        assert not any(t.is_alive() for t in self._threads), "load threads did not end"
        if self._errors:
            raise self._errors[0]

    def _udp(self) -> None:
        try:
            self._udp_loop()
        except BaseException as exc:  # noqa: BLE001 - reported by stop()
            self._errors.append(exc)

    def _udp_loop(self) -> None:
        rng = random.Random(53)
        socks = []
        sel = selectors.DefaultSelector()
        with contextlib.ExitStack() as stack:
            for i in range(self.sockets):
                s = stack.enter_context(netns.socket_in(self.ns, socket.AF_INET, socket.SOCK_DGRAM))
                s.connect(STUB)
                s.setblocking(False)
                sel.register(s, selectors.EVENT_READ, i)
                socks.append(s)
            stack.callback(sel.close)
            pending: dict[tuple[int, int], tuple[Asked, bytes, float]] = {}
            interval, next_send, seq, next_scan = 1 / self.udp_rate, time.monotonic(), 0, 0.0
            while True:
                now = time.monotonic()
                sending = not self._stop.is_set()
                if not sending and not pending:
                    return
                if sending and now - next_send > 0.5:
                    next_send = now  # after a stall of the test process: no burst to catch up
                while sending and next_send <= now:
                    qname, qtype = self.questions.next()
                    i = seq % len(socks)
                    seq += 1
                    qid = rng.randrange(65536)
                    while (i, qid) in pending:
                        qid = rng.randrange(65536)
                    q = dns.message.make_query(qname, qtype, payload=1232)  # EDNS: room for EDE
                    q.id = qid
                    wire = q.to_wire()
                    asked = Asked(qname, qtype, "udp", now)
                    self.asked.append(asked)
                    pending[(i, qid)] = (asked, wire, now + CLIENT_TIMEOUT)
                    with contextlib.suppress(OSError):  # not sent: the retry sends it
                        socks[i].send(wire)
                    next_send += interval
                if now >= next_scan:
                    next_scan = now + 0.05
                    for key, (asked, wire, deadline) in list(pending.items()):
                        if deadline > now:
                            continue
                        if asked.tries > CLIENT_RETRIES:
                            asked.done = now  # lost
                            del pending[key]
                            continue
                        asked.tries += 1
                        pending[key] = (asked, wire, now + CLIENT_TIMEOUT)
                        with contextlib.suppress(OSError):
                            socks[key[0]].send(wire)
                wait = min(next_send - now if sending else 0.05, 0.05)
                for ready, _ in sel.select(max(wait, 0.0)):
                    self._drain(ready.data, socks[ready.data], pending)

    def _drain(self, i: int, sock: socket.socket,
               pending: dict[tuple[int, int], tuple[Asked, bytes, float]]) -> None:  # fmt: skip
        while True:
            try:
                data = sock.recv(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # e.g. ECONNREFUSED: nobody listened for a moment; retries cover it
                continue
            entry = pending.get((i, int.from_bytes(data[:2], "big"))) if len(data) >= 2 else None
            if entry is None:
                self.strays += 1
                continue
            asked = entry[0]
            try:
                msg = dns.message.from_wire(data)
            except dns.exception.DNSException:
                msg = None  # judged wrong below: keep it as a reply without a question
            if msg is not None and (
                len(msg.question) != 1
                or msg.question[0].name.to_text().lower() != asked.qname.lower()
                or dns.rdatatype.to_text(msg.question[0].rdtype) != asked.qtype
            ):
                self.strays += 1  # not the answer to this question: keep waiting
                continue
            # garbage with the right ID ends the query as an empty message: judged wrong
            asked.reply = msg if msg is not None else dns.message.Message()
            asked.done = time.monotonic()
            del pending[(i, int.from_bytes(data[:2], "big"))]

    def _tcp(self) -> None:
        try:
            interval = 1 / self.tcp_rate
            while not self._stop.is_set():
                t0 = time.monotonic()
                qname, qtype = self.questions.next()
                asked = Asked(qname, qtype, "tcp", t0)
                self.asked.append(asked)
                for attempt in range(CLIENT_RETRIES + 1):
                    asked.tries = attempt + 1
                    try:
                        asked.reply = query_from(self.ns, STUB[0], qname, qtype, tcp=True,
                                                 timeout=CLIENT_TIMEOUT, payload=1232)  # fmt: skip
                        break
                    except (dns.exception.DNSException, OSError, EOFError):
                        continue
                asked.done = time.monotonic()
                self._stop.wait(max(0.0, interval - (asked.done - t0)))
        except BaseException as exc:  # noqa: BLE001 - reported by stop()
            self._errors.append(exc)


@dataclass
class Window:
    pvd: str
    what: str
    start: float
    end: float


class Faults:
    """The fault windows of a test: while one is open on a PvD, that PvD's names may get a
    deliberate SERVFAIL."""

    def __init__(self) -> None:
        self.windows: list[Window] = []

    @contextlib.contextmanager
    def window(self, pvd: str, what: str, grace: float = 0.1) -> Iterator[None]:
        """Open from entry to exit + ``grace`` (queries already on their way to a fault end a
        little after it)."""
        w = Window(pvd, what, time.monotonic(), float("inf"))
        self.windows.append(w)
        try:
            yield
        finally:
            w.end = time.monotonic() + grace

    def during(self, pvd: str, start: float, end: float) -> Window | None:
        """The latest window of ``pvd`` that overlaps [start, end], if any."""
        hits = [w for w in self.windows if w.pvd == pvd and w.start <= end and start <= w.end]
        return max(hits, key=lambda w: w.start, default=None)


@dataclass(repr=False)
class Report:
    right: Counter[str] = field(default_factory=Counter)  # per PvD
    deliberate: Counter[str] = field(default_factory=Counter)  # per window ("pvd: what")
    reasons: Counter[str] = field(default_factory=Counter)  # of the deliberate ones, by EDE
    right_after_faults: Counter[str] = field(default_factory=Counter)  # per PvD
    retried: Counter[str] = field(default_factory=Counter)  # per transport
    wrong: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    summary: str = ""

    def __repr__(self) -> str:
        return self.summary


def judge(load: Load, faults: Faults) -> Report:
    """Sort every query of ``load`` as the module docstring says."""
    rep = Report()
    last_fault = max((w.end for w in faults.windows), default=load.started)
    t0 = load.started
    for a in load.asked:
        pvd = owner(a.qname)
        assert pvd is not None and a.done is not None, a
        when = f"{a.transport} {a.qname} {a.qtype} at {a.sent - t0:.2f}-{a.done - t0:.2f} s"
        if a.reply is None:
            rep.lost.append(f"{when}: no reply after {a.tries} tries")
            continue
        if a.tries > 1:
            rep.retried[a.transport] += 1
        answer, want = got(a.reply), expected(a.qname, a.qtype)
        if answer == want:
            rep.right[pvd] += 1
            if a.sent > last_fault:
                rep.right_after_faults[pvd] += 1
            continue
        window = faults.during(pvd, a.sent, a.done)
        reasons = edes(a.reply)
        if (
            answer[0] in ("SERVFAIL", "REFUSED")
            and window is not None
            and any(code in (22, 23) and pvd in text for code, text in reasons)
        ):
            rep.deliberate[f"{pvd}: {window.what}"] += 1
            rep.reasons.update(_why(code, text) for code, text in reasons)
            continue
        rep.wrong.append(f"{when}: got {answer} EDE {reasons}, want {want}")
    seconds = (load.stopped or time.monotonic()) - t0
    udp = sum(1 for a in load.asked if a.transport == "udp")
    rep.summary = (
        f"{len(load.asked)} queries in {seconds:.1f} s ({udp / seconds:.0f}/s UDP, "
        f"{(len(load.asked) - udp) / seconds:.0f}/s TCP); right {dict(rep.right)}, "
        f"right after the last fault {dict(rep.right_after_faults)}; deliberate SERVFAIL "
        f"{dict(rep.deliberate)} (EDE {dict(rep.reasons)}); needed a retry "
        f"{dict(rep.retried)}; stray replies {load.strays}; wrong {len(rep.wrong)}; "
        f"lost {len(rep.lost)}"
    )
    return rep


def _why(code: int, text: str) -> str:
    """An EDE in short: "22 detached", "23 cancelled", "23 failed", "23 timeout"."""
    if code == 22:
        return "22 detached" if "detached" in text else f"22 {text}"
    return f"{code} {text.split(':')[1].strip()}" if text.count(":") else f"{code} {text}"


def assert_served(rep: Report) -> None:
    """Every query answered, every answer its own PvD's (or a deliberate SERVFAIL)."""
    print(f"\n{rep}")
    assert not rep.lost, f"{len(rep.lost)} queries lost, e.g. {rep.lost[:5]}\n{rep}"
    assert not rep.wrong, f"{len(rep.wrong)} wrong replies, e.g. {rep.wrong[:5]}\n{rep}"


# -- where queries left -----------------------------------------------------------------------
class Capture:
    """tcpdump on every interface of the host namespace but lo: upstream queries as they left,
    with the interface each one left through."""

    def __init__(self, topology: Any, workdir: Path) -> None:
        self.topology = topology
        self.pcap = workdir / "upstream.pcap"
        self.err = workdir / "tcpdump.err"
        self.proc: Any = None

    async def start(self) -> None:
        self._spawn()
        await wait_for(self._listening, 5.0, "tcpdump to listen")
        assert self.proc.poll() is None, self.err.read_text()

    def _spawn(self) -> None:
        argv = ["tcpdump", "-i", "any", "-n", "-U", "--immediate-mode", "-Z", "root",
                "-w", str(self.pcap), "port 53 and not net 127.0.0.0/8"]  # fmt: skip
        with open(self.err, "wb") as err:  # the topology ends it if the test does not
            self.proc = self.topology.popen_host(argv, stdout=err, stderr=err)

    def _listening(self) -> bool:
        return "listening on" in self.err.read_text() or self.proc.poll() is not None

    def stop(self) -> list[tuple[str, str]]:
        """[(interface, qname)] of every query that left the host namespace (not lo)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(5)
        ifnames = {f"#{net.host_ifindex}": net.ifname for net in self.topology.networks.values()}
        out = []
        for m in dns_messages(read_packets(str(self.pcap)), ports=(53,)):
            if m.dport != 53 or len(m.data) < 12 or m.data[2] & 0x80:
                continue  # replies
            qname = dns.message.from_wire(m.data).question[0].name.to_text().lower()
            out.append((ifnames.get(str(m.iface), str(m.iface)), qname))
        return out


def assert_no_leak(ups: dict[str, list[Any]], capture: list[tuple[str, str]],
                   iface: dict[str, str]) -> None:  # fmt: skip
    """Each upstream saw only its own PvD's names; each query left through its PvD's
    interface (mifdns's own probes aside)."""
    for pvd, servers in ups.items():
        for up in servers:
            strays = [str(s) for s in client_log(up) if owner(s.qname) != pvd]
            assert not strays, f"{up!r} ({pvd}) got other PvDs' names: {strays[:10]}"
    pvd_of = {v: k for k, v in iface.items()}
    left = Counter(i for i, _ in capture)
    wrong = [(i, q) for i, q in capture if not is_own_probe(q) and owner(q) != pvd_of.get(i)]
    assert not wrong, f"queries left through the wrong interface: {wrong[:10]} ({left})"
    for pvd, servers in ups.items():  # the capture saw the traffic (it is not vacuous)
        if any(client_log(up) for up in servers):
            assert left[iface[pvd]], f"tcpdump saw nothing leave {iface[pvd]}: {left}"
    print(f"upstream queries by interface (tcpdump): {dict(left)}")


# -- the test bed -------------------------------------------------------------------------------
IFACE = {"corp": "corp0", "wifi": "wlan0", "lab": "lab0"}


def pvd_spec(name: str, **over: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": name, "interface": IFACE[name], "servers": [SERVER]}
    if name != "wifi":
        spec.update(domains=[f"~{DOMAIN[name]}"], exclusive=True)
    spec.update(over)
    return spec


def make_config(*pvds: dict[str, Any]) -> dict[str, Any]:
    return {"pvds": list(pvds), "upstream": dict(UPSTREAM)}


def pvd_json(d: Any, name: str) -> dict[str, Any] | None:
    return next((p for p in d.ctl("pvds") if p["name"] == name), None)


def state(d: Any, name: str) -> dict[str, Any]:
    p = pvd_json(d, name)
    assert p is not None, f"no PvD {name}"
    return p


def alive(d: Any) -> None:
    assert d.proc.poll() is None, d.stderr()
    assert "Traceback" not in d.stderr(), d.stderr()


async def bed(topology: Any, upstream_factory: Any, *, corp_servers: int = 1,
              lab: bool = False) -> tuple[dict[str, Any], dict[str, list[Any]]]:  # fmt: skip
    """Networks corp0, wlan0 (and lab0), every server on 192.0.2.53 (corp: also .54)."""
    corp_addrs = ["192.0.2.53/24", "192.0.2.54/24"][:corp_servers] + ["2001:db8:1::53/64"]
    nets = {"corp": topology.add_network("corp", "corp0", server_addrs=corp_addrs),
            "wifi": topology.add_network("wifi", "wlan0")}  # fmt: skip
    if lab:
        nets["lab"] = topology.add_network("lab", "lab0")
    ups: dict[str, list[Any]] = {}
    for name, net in nets.items():
        addrs = [SERVER, SERVER2][:corp_servers] if name == "corp" else [SERVER]
        ups[name] = [await upstream_factory(net, zone(name), listen=[a]) for a in addrs]
    return nets, ups


# -- the tests --------------------------------------------------------------------------------
