"""A throw-away multi-network host built from network namespaces and veth pairs.

Theory of operation::

    host ns  (mifdns runs here; lo up, so 127.0.0.53 works)
      IFNAME (192.0.2.10/24, 2001:db8:1::10/64) ==veth== eth0 in network ns "corp"
      IFNAME2 (192.0.2.10/24 too: overlap is fine)  ==veth== eth0 in network ns "wifi"
                                                       (192.0.2.53, 2001:db8:1::53, fe80::53)

Every Topology gets a unique id (prefix + pid + counter + random), so namespace names never
clash between parallel tests; interface names live inside the topology's own host namespace,
so callers pick them freely (<= 15 chars). Each network's far side is its own namespace, so two
networks may use the same subnet and the same server address: only a socket bound to the
interface (SO_BINDTODEVICE), as mifdns's upstream sockets are, tells them apart.

Kernel settings applied in every namespace we create, and why:
- ipv6 accept_dad=0 (all/default): addresses, the automatic fe80:: ones included, are usable
  at once instead of being "tentative" for a second or more. Explicit addresses also get nodad.
- ipv4 rp_filter=0 (all/default): new namespaces inherit the initial namespace's IPv4 settings,
  and strict reverse-path filtering drops replies arriving on the second of two interfaces that
  share a subnet (the FIB lookup of the source points at the first one).
Note: an administrative link down makes the kernel delete the interface's IPv6 addresses
(keep_addr_on_down=0); ``Network.link_up()`` restores ``host_addrs``.

Cleanup: ``close()`` is idempotent and tolerant of partial construction: it kills processes it
started and any process still inside our namespaces, then deletes the namespaces (which takes
the veths with them). An atexit hook and a SIGTERM/SIGHUP handler (installed only where the
handler is still the default) close live topologies if the run is interrupted; Ctrl-C
(KeyboardInterrupt) reaches atexit. ``sweep_stale()`` removes namespaces left by dead runs.
"""

from __future__ import annotations

import atexit
import fcntl
import ipaddress
import itertools
import os
import re
import secrets
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterable, Sequence
from typing import Any, Self

from mifdns.harness import netns
from mifdns.harness.netns import HarnessError

__all__ = ["DEFAULT_HOST_ADDRS", "DEFAULT_SERVER_ADDRS", "Network", "Topology", "sweep_stale"]

DEFAULT_HOST_ADDRS = ("192.0.2.10/24", "2001:db8:1::10/64")
DEFAULT_SERVER_ADDRS = ("192.0.2.53/24", "2001:db8:1::53/64")
SERVER_IFNAME = "eth0"

_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_counter = itertools.count(1)
_live: set[Topology] = set()
_live_lock = threading.Lock()
_hooks_installed = False

_NS_SYSCTLS = (
    ("net.ipv6.conf.all.accept_dad", 0),
    ("net.ipv6.conf.default.accept_dad", 0),
    ("net.ipv4.conf.all.rp_filter", 0),
    ("net.ipv4.conf.default.rp_filter", 0),
)


def _iface(addr: str) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    try:
        return ipaddress.ip_interface(addr)
    except ValueError:
        raise HarnessError(f"not an address with prefix length: {addr!r}") from None


def _addr_cmd(verb: str, addr: str, dev: str) -> str:
    i = _iface(addr)
    extra = " nodad" if i.version == 6 and verb in ("add", "replace") else ""
    return f"address {verb} {i.with_prefixlen} dev {dev}{extra}"


class Network:
    """One network attachment: a veth with ``ifname`` in the host ns and ``eth0`` in ``ns``."""

    def __init__(
        self,
        topology: Topology,
        name: str,
        ns: str,
        ifname: str,
        host_addrs: Sequence[str],
        server_addrs: Sequence[str],
    ) -> None:
        self.topology = topology
        self.name = name
        self.ns = ns
        self.ifname = ifname
        self.host_addrs = list(host_addrs)
        self.server_addrs = list(server_addrs)
        self.server_ifname = SERVER_IFNAME
        self.removed = False
        self.metric = 1000 + len(topology.networks)

    def __repr__(self) -> str:
        return f"<Network {self.name} {self.ifname}<->{self.ns}:{self.server_ifname}>"

    # -- addresses, for configs and clients ---------------------------------------------
    @property
    def server_ips(self) -> list[str]:
        """Server addresses as a host-side client writes them (fe80::53%IFNAME for link-local)."""
        out = []
        for a in self.server_addrs:
            ip_ = _iface(a).ip
            out.append(f"{ip_}%{self.ifname}" if ip_.is_link_local else str(ip_))
        return out

    @property
    def listen_addrs(self) -> list[str]:
        """Server addresses as the server side binds them (fe80::53%eth0 for link-local)."""
        out = []
        for a in self.server_addrs:
            ip_ = _iface(a).ip
            out.append(f"{ip_}%{self.server_ifname}" if ip_.is_link_local else str(ip_))
        return out

    def server_ip(self, version: int = 4) -> str:
        """The first global server address of IP ``version`` (4 or 6)."""
        for a in self.server_addrs:
            ip_ = _iface(a).ip
            if ip_.version == version and not ip_.is_link_local:
                return str(ip_)
        raise HarnessError(f"network {self.name} has no IPv{version} server address")

    @property
    def host_ifindex(self) -> int:
        with netns.entered(self.topology.host):
            return socket.if_nametoindex(self.ifname)

    # -- changes ---------------------------------------------------------------------------
    def _host_ip(self, lines: Sequence[str]) -> None:
        self._check_present()
        netns.ip_batch(self.topology.host, lines)

    def _check_present(self) -> None:
        if self.removed:
            raise HarnessError(f"network {self.name}: its link was removed")

    def link_down(self, *, carrier: bool = False) -> None:
        """Take the host side down (administratively: IFF_UP cleared, IPv6 addresses flushed).

        ``carrier=True`` instead downs the far end, like a pulled cable: the host side keeps
        IFF_UP and its addresses but loses carrier (NO-CARRIER, operstate DOWN).
        """
        if carrier:
            self._check_present()
            netns.ip(self.ns, "link", "set", self.server_ifname, "down")
        else:
            self._host_ip([f"link set {self.ifname} down"])
        self.wait_operstate(("DOWN", "LOWERLAYERDOWN"))

    def link_up(self) -> None:
        """Bring both ends up, (re)install the addresses and routes the kernel dropped, and
        flush both neighbour tables: packets sent while the link was down sit queued in
        INCOMPLETE entries and would otherwise reach the server late (and ARP retries only
        every second)."""
        self._check_present()
        netns.ip_batch(self.ns, self._far_side_lines() + [f"neigh flush dev {SERVER_IFNAME}"])
        lines = [f"link set {self.ifname} up"]
        lines += [_addr_cmd("replace", a, self.ifname) for a in self.host_addrs]
        lines += self._host_route_lines()
        lines.append(f"neigh flush dev {self.ifname}")
        self._host_ip(lines)
        self.wait_operstate(("UP",))
        self._wait_link_local()

    def _host_route_lines(self) -> list[str]:
        """Device routes for server prefixes that are not on-link through ``host_addrs`` (a
        VPN-like network: tun address 198.18.0.2/32, server 198.51.100.53). The metric is
        unique per network, so the same prefix may be routed to several networks."""
        on_link = [_iface(a).network for a in self.host_addrs]
        lines = []
        for a in self.server_addrs:
            srv = _iface(a)
            if srv.ip.is_link_local or any(srv.ip in net for net in on_link):
                continue
            lines.append(f"route replace {srv.network} dev {self.ifname} metric {self.metric}")
        return lines

    def _far_side_lines(self) -> list[str]:
        """``ip -batch`` lines that (re)configure eth0 in the network namespace."""
        lines = [f"link set {SERVER_IFNAME} up"]
        lines += [_addr_cmd("replace", a, SERVER_IFNAME) for a in self.server_addrs]
        for version in (4, 6):
            gw = next(
                (
                    _iface(a).ip
                    for a in self.host_addrs
                    if _iface(a).version == version and not _iface(a).ip.is_link_local
                ),
                None,
            )
            if gw is not None:
                dst = "0.0.0.0/0" if version == 4 else "::/0"
                lines.append(f"route replace {dst} via {gw} dev {SERVER_IFNAME} onlink")
        return lines

    def _wait_link_local(self, timeout: float = 2.0) -> None:
        # With DAD off the automatic fe80:: address still appears only once carrier is seen.
        deadline = time.monotonic() + timeout
        while True:
            out = netns.ip(
                self.topology.host,
                "-6",
                "-o",
                "address",
                "show",
                "dev",
                self.ifname,
                "scope",
                "link",
            )
            if out.strip() and "tentative" not in out:
                return
            if time.monotonic() > deadline:
                raise HarnessError(f"{self.ifname}: no usable IPv6 link-local address: {out!r}")
            time.sleep(0.01)

    @property
    def operstate(self) -> str:
        """The host side's RFC 2863 operstate as the kernel reports it (UP, DOWN, ...)."""
        self._check_present()
        out = netns.ip(self.topology.host, "-o", "link", "show", "dev", self.ifname)
        m = re.search(r" state (\S+)", out)
        return m.group(1) if m else "UNKNOWN"

    def wait_operstate(self, states: Sequence[str], timeout: float = 3.0) -> str:
        """Wait until the operstate is one of ``states``. Carrier changes reach operstate
        through the kernel's linkwatch work, which may lag by up to a second."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.operstate
            if state in states:
                return state
            if time.monotonic() > deadline:
                raise HarnessError(f"{self.ifname}: operstate {state}, wanted {'/'.join(states)}")
            time.sleep(0.01)

    def add_addr(self, addr: str) -> None:
        """Add an address (with prefix length) to the host side; IPv6 without DAD."""
        self._host_ip([_addr_cmd("add", addr, self.ifname)])
        if addr not in self.host_addrs:
            self.host_addrs.append(addr)

    def del_addr(self, addr: str) -> None:
        """Delete an address from the host side."""
        self._host_ip([_addr_cmd("del", addr, self.ifname)])
        want = _iface(addr)
        self.host_addrs = [a for a in self.host_addrs if _iface(a) != want]

    def rename(self, newname: str) -> None:
        """Rename the host-side interface. The kernel refuses to rename a running interface, so
        an up link goes down, is renamed, and comes back up (addresses restored)."""
        _check_ifname(newname)
        self._check_present()
        with netns.entered(self.topology.host):
            was_up = _is_up(self.ifname)
        lines = [f"link set {self.ifname} down"] if was_up else []
        lines.append(f"link set {self.ifname} name {newname}")
        self._host_ip(lines)
        self.ifname = newname
        if was_up:
            self.link_up()

    def remove(self) -> None:
        """Delete the veth pair (the far namespace stays until the topology closes)."""
        if self.removed:
            return
        netns.ip(self.topology.host, "link", "del", self.ifname)
        self.removed = True


def _is_up(ifname: str) -> bool:
    # Called inside the host namespace; SIOCGIFFLAGS through a throw-away socket.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH14x", ifname.encode(), 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s.fileno(), 0x8913, req))[1]
    return bool(flags & 0x1)


def _check_ifname(ifname: str) -> None:
    if not ifname or len(ifname) > 15 or "/" in ifname or any(c.isspace() for c in ifname):
        raise HarnessError(f"bad interface name {ifname!r} (1-15 chars, no '/' or spaces)")


class Topology:
    """A host namespace plus networks. Use as a context manager; ``close()`` is idempotent."""

    def __init__(self, prefix: str | None = None) -> None:
        prefix = prefix or "mif"
        if not re.fullmatch(r"[A-Za-z][A-Za-z_]*", prefix):  # letters: the pid follows
            raise HarnessError(f"bad topology prefix {prefix!r} (letters and _ only)")
        self.id = f"{prefix}{os.getpid()}-{next(_counter)}{secrets.token_hex(2)}"
        self.host = f"{self.id}-host"
        self.networks: dict[str, Network] = {}
        self._namespaces: list[str] = []
        self._procs: list[subprocess.Popen[Any]] = []
        self._closed = False
        self._lock = threading.RLock()  # RLock: the signal safety net may re-enter
        _register(self)
        try:
            self._new_ns(self.host)
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        return f"<Topology {self.id} networks={list(self.networks)}>"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            self.close()
        except HarnessError as err:
            if exc_type is None:
                raise
            warnings.warn(f"{err} (while handling {exc_type})", stacklevel=2)

    @property
    def namespaces(self) -> list[str]:
        """Every namespace this topology created (host first)."""
        return list(self._namespaces)

    def _new_ns(self, ns: str) -> None:
        if self._closed:
            raise HarnessError("topology is closed")
        netns.ip(None, "netns", "add", ns)
        self._namespaces.append(ns)
        for key, value in _NS_SYSCTLS:
            netns.sysctl(ns, key, value)
        netns.ip(ns, "link", "set", "lo", "up")

    def add_network(
        self,
        name: str,
        ifname: str,
        *,
        host_addrs: Iterable[str] = DEFAULT_HOST_ADDRS,
        server_addrs: Iterable[str] = DEFAULT_SERVER_ADDRS,
        up: bool = True,
    ) -> Network:
        """Create a network: its namespace, a veth (``ifname`` here, ``eth0`` there), addresses,
        both ends up (host side only if ``up``), and default routes back to the host."""
        if not _NAME_RE.match(name):
            raise HarnessError(f"bad network name {name!r}")
        if name in self.networks:
            raise HarnessError(f"network {name!r} already exists")
        _check_ifname(ifname)
        host_addrs, server_addrs = list(host_addrs), list(server_addrs)
        for a in host_addrs + server_addrs:
            _iface(a)
        ns = f"{self.id}-{name}"
        self._new_ns(ns)
        net = Network(self, name, ns, ifname, host_addrs, server_addrs)
        netns.ip(
            self.host,
            "link",
            "add",
            ifname,
            "type",
            "veth",
            "peer",
            "name",
            SERVER_IFNAME,
            "netns",
            ns,
        )
        self.networks[name] = net

        netns.ip_batch(ns, net._far_side_lines())

        near = [f"link set {ifname} up"] if up else []
        near += [_addr_cmd("add", a, ifname) for a in host_addrs]
        near += net._host_route_lines() if up else []
        netns.ip_batch(self.host, near)
        if up:
            net.wait_operstate(("UP",))
            net._wait_link_local()
        return net

    def network(self, name: str) -> Network:
        return self.networks[name]

    # -- processes ---------------------------------------------------------------------------
    def run(self, ns: str, argv: Sequence[str], **kw: Any) -> subprocess.CompletedProcess[Any]:
        return netns.run(ns, argv, **kw)

    def popen(self, ns: str, argv: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        """Start a process in ``ns``; it is terminated when the topology closes."""
        proc = netns.popen(ns, argv, **kw)
        self._procs.append(proc)
        return proc

    def run_host(self, argv: Sequence[str], **kw: Any) -> subprocess.CompletedProcess[Any]:
        return netns.run(self.host, argv, **kw)

    def popen_host(self, argv: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        return self.popen(self.host, argv, **kw)

    # -- teardown ---------------------------------------------------------------------------
    def close(self) -> None:
        """Remove everything this topology created. Safe to call twice or after a failure."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        errors: list[str] = []
        for proc in self._procs:
            _stop_process(proc, errors)
        for ns in reversed(self._namespaces):
            _kill_pids_in(ns, errors)
            _delete_ns(ns, errors)
        _unregister(self)
        if errors:
            raise HarnessError("topology cleanup: " + "; ".join(errors))


def _stop_process(proc: subprocess.Popen[Any], errors: list[str]) -> None:
    try:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(2)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(2)
    except Exception as exc:  # noqa: BLE001 - keep cleaning up
        errors.append(f"pid {proc.pid}: {exc}")


def _kill_pids_in(ns: str, errors: list[str]) -> None:
    """Processes still in a namespace we are deleting were started for it: end them."""
    out = subprocess.run(["ip", "netns", "pids", ns], check=False, capture_output=True, text=True)
    pids = [int(p) for p in out.stdout.split() if p.isdigit() and int(p) != os.getpid()]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = []
        for pid in pids:
            try:
                os.kill(pid, sig)
                alive.append(pid)
            except ProcessLookupError:
                pass
            except OSError as exc:
                errors.append(f"kill {pid}: {exc}")
        deadline = time.monotonic() + 2
        while alive and time.monotonic() < deadline:
            alive = [p for p in alive if _pid_alive(p)]
            time.sleep(0.02)
        pids = alive


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def _delete_ns(ns: str, errors: list[str]) -> None:
    proc = subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True, text=True)
    if proc.returncode != 0 and netns.exists(ns):
        # Last resort: detach the bind mount and unlink the name ourselves.
        path = os.path.join(netns.NETNS_RUN_DIR, ns)
        subprocess.run(["umount", "-l", path], check=False, capture_output=True)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            errors.append(f"netns {ns}: {proc.stderr.strip()}; {exc}")


# -- safety net ------------------------------------------------------------------------------
def _register(topo: Topology) -> None:
    global _hooks_installed
    with _live_lock:
        _live.add(topo)
        if _hooks_installed:
            return
        _hooks_installed = True
    atexit.register(_close_all)
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(sig) is signal.SIG_DFL:
                signal.signal(sig, _on_signal)


def _unregister(topo: Topology) -> None:
    with _live_lock:
        _live.discard(topo)


def _close_all() -> None:
    with _live_lock:
        topos = list(_live)
    for t in topos:
        try:
            t.close()
        except Exception as exc:  # noqa: BLE001 - last-chance cleanup: report, go on
            print(f"mifdns harness: cleanup of {t.id} failed: {exc}", file=sys.stderr)


def _on_signal(signum: int, frame: object) -> None:
    _close_all()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def sweep_stale(prefix: str = "mif") -> list[str]:
    """Delete namespaces named by Topology(prefix) whose creating process is gone."""
    removed: list[str] = []
    try:
        names = os.listdir(netns.NETNS_RUN_DIR)
    except FileNotFoundError:
        return removed
    pat = re.compile(rf"^{re.escape(prefix)}(\d+)-\d+[0-9a-f]{{4}}-")
    for name in names:
        m = pat.match(name)
        if not m or int(m.group(1)) == os.getpid() or _pid_alive(int(m.group(1))):
            continue
        errors: list[str] = []
        _kill_pids_in(name, errors)
        _delete_ns(name, errors)
        removed.append(name)
    return removed
