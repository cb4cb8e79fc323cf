"""Shared bits of the split-DNS integration tests (test_split_dns, test_transport,
test_hostile_input): zones, PvD config builders, and small readers of dnspython messages.

Not a conftest: the fixtures stay in conftest.py (the test bed's); this module holds plain
helpers imported by name.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import subprocess
import time
from collections.abc import Callable
from typing import Any

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype

from mifdns.harness import netns

CORP_ZONE = """
$ORIGIN corp.example.
@        300 IN SOA ns hostmaster 1 3600 600 86400 120
www      300 IN A     10.8.0.80
www      300 IN AAAA  fd00:8::80
intranet 300 IN A     10.8.0.81
wiki     300 IN CNAME intranet
"""

# the public view, as the Wi-Fi's resolver (the internet) sees it: www.corp.example is the
# company's public web site there, intranet.corp.example does not exist
PUBLIC_ZONE = """
corp.example.     300 IN SOA ns.corp.example. hostmaster.corp.example. 1 3600 600 86400 120
www.corp.example. 300 IN A   203.0.113.80
example.com.      300 IN SOA ns.example.com. hostmaster.example.com. 1 3600 600 86400 120
www.example.com.  300 IN A   203.0.113.1
"""


def corp_pvd(**over: Any) -> dict[str, Any]:
    """The VPN: routing-only domain corp.example, not a default route."""
    spec = {"name": "corp", "interface": "corp0", "servers": ["192.0.2.53"],
            "domains": ["~corp.example"]}  # fmt: skip
    spec.update(over)
    return spec


def wifi_pvd(**over: Any) -> dict[str, Any]:
    """The Wi-Fi: the default route."""
    spec = {"name": "wifi", "interface": "wlan0", "servers": ["192.0.2.53"]}
    spec.update(over)
    return spec


def config(*pvds: dict[str, Any], **top: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {"pvds": list(pvds)}
    cfg.update(top)
    return cfg


def addrs(msg: dns.message.Message, rdtype: str = "A") -> list[str]:
    t = dns.rdatatype.from_text(rdtype)
    return sorted(rd.to_text() for rrset in msg.answer if rrset.rdtype == t for rd in rrset)


def rcode(msg: dns.message.Message) -> str:
    return dns.rcode.to_text(msg.rcode())


def edes(msg: dns.message.Message) -> list[tuple[int, str]]:
    """The Extended DNS Errors (RFC 8914) of a reply: [(info-code, extra-text)]."""
    out = []
    for opt in msg.options:
        if opt.otype == dns.edns.EDE:
            out.append((int(opt.code), opt.text or ""))
    return out


def truncated(msg: dns.message.Message) -> bool:
    return bool(msg.flags & dns.flags.TC)


def cache_rows(daemon: Any, pvd: str | None = None) -> list[dict[str, Any]]:
    rows = daemon.ctl("cache") if pvd is None else daemon.ctl("cache", "--pvd", pvd)
    assert isinstance(rows, list)
    return rows


def cached(daemon: Any) -> set[tuple[str, str, str, str]]:
    """{(pvd, name, type, kind)} from ``mifdns ctl --json cache``."""
    return {(r["pvd"], r["name"], r["type"], r["kind"]) for r in cache_rows(daemon)}


def is_own_probe(qname: str) -> bool:
    """mifdns's own questions (captive-portal hijack probe: random single labels and a name
    under .invalid; NAT64 discovery: ipv4only.arpa). Every name the tests ask has two or more
    labels and is none of these."""
    return qname.count(".") == 1 or qname.endswith(".invalid.") or qname == "ipv4only.arpa."


def client_log(upstream: Any) -> list[Any]:
    """The upstream's query log without mifdns's own probes: what clients' queries caused."""
    return [s for s in list(upstream.log) if not is_own_probe(s.qname)]


def names_seen(upstream: Any) -> list[str]:
    return [s.qname for s in client_log(upstream)]


async def wait_for(pred: Callable[[], bool], timeout: float = 5.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or pred}")
        await asyncio.sleep(0.02)


# -- raw client sockets in the host namespace ---------------------------------------------------
def udp_socket(ns: str, timeout: float = 2.0) -> socket.socket:
    s = netns.socket_in(ns, socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    return s


def tcp_connect(ns: str, addr: tuple[str, int], timeout: float = 3.0) -> socket.socket:
    s = netns.socket_in(ns, socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(addr)
    return s


def frame(wire: bytes) -> bytes:
    return struct.pack("!H", len(wire)) + wire


def recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"closed after {len(buf)} of {n} bytes")
        buf += chunk
    return buf


def recv_frame(sock: socket.socket) -> bytes:
    (size,) = struct.unpack("!H", recv_exact(sock, 2))
    return recv_exact(sock, size)


def many_a(prefix: str, n: int) -> list[str]:
    """n distinct A rdata values: prefix + .i (prefix like "10.9.1")."""
    return [f"{prefix}.{i}" for i in range(1, n + 1)]


# -- real Debian servers in a network's namespace ---------------------------------------------
def _wait_answering(topology: Any, net: Any, name: str, proc: Any, log: Any,
                    timeout: float = 10.0) -> None:  # fmt: skip
    from mifdns.harness.fakeupstream import query_from

    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"{proc.args} exited {proc.returncode}: {log()}")
        try:
            query_from(topology.host, net.server_ip(4), name, ifname=net.ifname, timeout=0.2)
            return
        except (dns.exception.DNSException, OSError):
            if time.monotonic() > deadline:
                raise AssertionError(f"{proc.args} does not answer {name}: {log()}") from None
            time.sleep(0.05)


def _popen(topology: Any, net: Any, argv: list[str], out: Any) -> Any:
    """Start ``argv`` in the network's namespace (ended by the topology when it closes)."""
    with open(out, "w") as f:
        return topology.popen(
            net.ns, argv, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )


def _read(path: Any) -> str:
    try:
        return str(path.read_text(errors="replace"))
    except FileNotFoundError:
        return ""


def start_nsd(topology: Any, net: Any, workdir: Any, zones: dict[str, str]) -> Any:
    """NSD, authoritative for ``zones`` ({origin: zone text}), on the network's IPv4 server
    address. Runs in the foreground; the topology ends it when it closes. Returns a handle
    with ``log()``."""
    workdir.mkdir()
    conf = [
        "server:", f"  ip-address: {net.server_ip(4)}", "  port: 53", f'  zonesdir: "{workdir}"',
        f'  pidfile: "{workdir}/nsd.pid"', f'  xfrdfile: "{workdir}/xfrd.state"',
        f'  zonelistfile: "{workdir}/zone.list"', '  database: ""', '  username: ""',
        '  chroot: ""', f'  logfile: "{workdir}/nsd.log"', "  do-ip6: no",
        "remote-control:", "  control-enable: no",
    ]  # fmt: skip
    for i, (origin, text) in enumerate(zones.items()):
        (workdir / f"z{i}.zone").write_text(text)
        conf += ["zone:", f"  name: {origin}", f"  zonefile: z{i}.zone"]
    (workdir / "nsd.conf").write_text("\n".join(conf) + "\n")
    proc = _popen(
        topology, net, ["nsd", "-d", "-c", str(workdir / "nsd.conf")], workdir / "nsd.out"
    )
    handle = RealServer(proc, workdir / "nsd.log", workdir / "nsd.out")
    _wait_answering(topology, net, next(iter(zones)), proc, handle.log)
    return handle


def start_dnsmasq(topology: Any, net: Any, workdir: Any, args: list[str], probe: str) -> Any:
    """dnsmasq with no upstream and no /etc/hosts, logging every query to a file."""
    workdir.mkdir()
    logfile = workdir / "dnsmasq.log"
    argv = ["dnsmasq", "-k", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
            f"--listen-address={net.server_ip(4)}", "--bind-interfaces", "--user=root",
            f"--pid-file={workdir}/dnsmasq.pid", "--log-queries", f"--log-facility={logfile}",
            *args]  # fmt: skip
    proc = _popen(topology, net, argv, workdir / "dnsmasq.out")
    handle = RealServer(proc, logfile, workdir / "dnsmasq.out")
    _wait_answering(topology, net, probe, proc, handle.log)
    return handle


def start_unbound(topology: Any, net: Any, workdir: Any, local: list[str], probe: str) -> Any:
    """Unbound, a recursive server, with ``local`` unbound.conf server lines (local-zone,
    local-data), logging every query."""
    workdir.mkdir()
    conf = [
        "server:", f"  interface: {net.server_ip(4)}", "  port: 53",
        "  access-control: 0.0.0.0/0 allow", "  do-daemonize: no", '  username: ""',
        '  chroot: ""', f'  directory: "{workdir}"', f'  pidfile: "{workdir}/unbound.pid"',
        f'  logfile: "{workdir}/unbound.log"', "  use-syslog: no", "  log-queries: yes",
        "  verbosity: 1", "  do-ip6: no", *[f"  {line}" for line in local],
        "remote-control:", "  control-enable: no",
    ]  # fmt: skip
    (workdir / "unbound.conf").write_text("\n".join(conf) + "\n")
    proc = _popen(
        topology,
        net,
        ["unbound", "-d", "-c", str(workdir / "unbound.conf")],
        workdir / "unbound.out",
    )
    handle = RealServer(proc, workdir / "unbound.log", workdir / "unbound.out")
    _wait_answering(topology, net, probe, proc, handle.log)
    return handle


class RealServer:
    def __init__(self, proc: Any, logfile: Any, outfile: Any) -> None:
        self.proc = proc
        self.logfile = logfile
        self.outfile = outfile

    def log(self) -> str:
        return _read(self.logfile) + _read(self.outfile)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)


async def settle(*upstreams: Any, quiet: float = 0.25, limit: float = 2.0) -> None:
    """Let mifdns's own start-up probes (captive-portal hijack check, NAT64 discovery) finish:
    wait until the upstreams have seen some and no new one came for ``quiet`` seconds (at most
    ``limit``). Tests that break a server on purpose do it after this, so the probes do not
    teach the server health table about the breakage before the test's own query."""
    deadline = time.monotonic() + limit
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        n = sum(1 for up in upstreams for s in list(up.log) if is_own_probe(s.qname))
        if n != last:
            last, since = n, time.monotonic()
        elif n and time.monotonic() - since >= quiet:
            return
        await asyncio.sleep(0.05)


def counter(daemon: Any, name: str) -> int:
    return int(daemon.ctl("status")["counters"].get(name, 0))


# -- a running daemon with one corporate PvD (hostile-input and limit tests) --------------------
STUB = ("127.0.0.53", 53)


async def start_corp(
    topology: Any, corp_net: Any, upstream_factory: Any, mifdns_factory: Any, **top: Any
) -> tuple[Any, Any]:
    up = await upstream_factory(corp_net, CORP_ZONE)
    d = await mifdns_factory(topology, config(corp_pvd(), **top))
    return up, d


async def still_serving(d: Any) -> None:
    """The daemon is alive, answers over UDP and TCP, and logged no traceback."""
    assert d.proc.poll() is None, d.stderr()
    assert addrs(await d.aquery("www.corp.example")) == ["10.8.0.80"]
    assert addrs(await d.aquery("intranet.corp.example", tcp=True)) == ["10.8.0.81"]
    assert "Traceback" not in d.stderr(), d.stderr()
