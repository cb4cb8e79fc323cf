"""Link state from netlink: which interfaces are up and which addresses they carry.

Subscribe first, then dump, then reconcile (systemd-resolved's ``manager_rtnl_listen``): a raw
NETLINK_ROUTE socket joined to the link and address groups wakes us on any change; a short
debounce later pyroute2 dumps links and addresses (in a worker thread: ~2 ms) and the new view
is compared with the old one, interface by interface (mark and sweep, by *name*, so a renamed
or re-created interface is followed). Every interface whose view changed is reported to the
daemon, which turns it into attach/detach events. Measured end to end (``ip link set down`` to
the detach and purge): 25-45 ms. Errors never stop the daemon: a failed dump keeps the last view
and is retried (0.5 s, doubling up to 30 s); lost events (ENOBUFS) just cause a fresh dump; a
failing handler is logged and the other interfaces are still reported.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass

from ..core.pvd import IPAddress, IPNetwork

log = logging.getLogger("mifdns.netlink")

RTMGRP_LINK = 0x1
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV6_IFADDR = 0x100
IFF_UP = 0x1
IFF_LOWER_UP = 0x10000
IFA_F_TENTATIVE = 0x40
IFA_F_DADFAILED = 0x08
DEBOUNCE = 0.02  # coalesce a burst (link down flushes every address: one event each)
RETRY = 0.5  # first retry after a failed dump; doubled up to RETRY_MAX
RETRY_MAX = 30.0


@dataclass(frozen=True)
class LinkView:
    index: int
    up: bool
    addresses: tuple[tuple[str, int], ...] = ()  # (local address, prefixlen), usable ones only
    nets: tuple[IPNetwork, ...] = ()  # on-link prefixes (IFA_ADDRESS/len), no link-local/loopback

    def prefixes(self) -> tuple[IPNetwork, ...]:
        return self.nets

    def usable(self, link_local_ok: bool = False, families: frozenset[int] | None = None) -> bool:
        """Up with an address (of one of ``families``, 4 and 6, if given); an IPv6 link-local
        address counts only if ``link_local_ok``."""
        if not self.up:
            return False
        for addr, _ in self.addresses:
            ip = ipaddress.ip_address(addr)
            if families is not None and ip.version not in families:
                continue
            if not (ip.version == 6 and ip.is_link_local) or link_local_ok:
                return True
        return False


class StaticLinks:
    """``netlink: false``: every interface counts as usable; no prefixes are learned."""

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def usable(
        self, ifname: str, link_local_ok: bool = False, families: frozenset[int] | None = None
    ) -> bool:
        return True

    def prefixes(self, ifname: str) -> tuple[IPNetwork, ...]:
        return ()

    def view(self, ifname: str) -> LinkView | None:
        return None


def is_local(addr: IPAddress) -> bool:
    """Whether ``addr`` is an address of this host (its namespace): whether a socket can be
    bound to it. False if the kernel binds any address (``ip_nonlocal_bind``): then the test
    says nothing."""
    family = socket.AF_INET6 if addr.version == 6 else socket.AF_INET
    try:
        with open(f"/proc/sys/net/ipv{addr.version}/ip_nonlocal_bind") as f:
            if f.read().strip() not in ("", "0"):
                return False
    except OSError:
        pass
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        try:
            s.bind((str(addr), 0))
        except OSError:
            return False
    return True


def dump() -> dict[str, LinkView]:
    """Links and addresses, one netlink dump each (pyroute2, blocking: run it in a thread)."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        links = list(ipr.get_links())
        addrs = list(ipr.get_addr())
    by_index: dict[int, list[tuple[str, int]]] = {}
    nets: dict[int, list[IPNetwork]] = {}
    for a in addrs:
        flags = a.get_attr("IFA_FLAGS") or a["flags"]
        if flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED):
            continue
        # IFA_LOCAL is our address; IFA_ADDRESS is the peer's on a point-to-point link, and the
        # prefix length belongs to it (``ip addr add 10.8.0.2 peer 10.8.0.1/32``)
        peer = a.get_attr("IFA_ADDRESS")
        local = a.get_attr("IFA_LOCAL") or peer
        if not local:
            continue
        idx, plen = a["index"], a["prefixlen"]
        by_index.setdefault(idx, []).append((local, plen))
        try:
            net = ipaddress.ip_network(f"{peer or local}/{plen}", strict=False)
        except ValueError:
            continue
        if not (
            net.network_address.is_link_local or net.network_address.is_loopback
        ) and net not in nets.setdefault(idx, []):
            nets[idx].append(net)
    out = {}
    for link in links:
        name = link.get_attr("IFLA_IFNAME")
        flags = link["flags"]
        oper = link.get_attr("IFLA_OPERSTATE")
        # IFF_UP and carrier; "UNKNOWN" operstate (tun, wireguard, dummy) counts as carrier
        up = bool(flags & IFF_UP) and (bool(flags & IFF_LOWER_UP) or oper == "UNKNOWN")
        idx = link["index"]
        out[name] = LinkView(
            idx,
            up,
            tuple(sorted(by_index.get(idx, []))),
            tuple(sorted(nets.get(idx, []), key=_net_key)),
        )
    return out


def _net_key(net: IPNetwork) -> tuple[int, int, int]:
    return (net.version, int(net.network_address), net.prefixlen)


class LinkMonitor:
    def __init__(self, on_change: Callable[[str], None]) -> None:
        self.on_change = on_change
        self.links: dict[str, LinkView] = {}
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._again = False
        self.errors = 0
        self.overruns = 0
        self.reconciles = 0

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        try:  # subscribe first ...
            s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            s.bind((0, RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR))
            s.setblocking(False)
            self._sock = s
            self._loop.add_reader(s.fileno(), self._readable)
        except OSError as exc:
            log.error("netlink subscription failed (%s); link changes will not be followed", exc)
        try:  # ... then dump
            self.links = await asyncio.to_thread(dump)
        except Exception as exc:  # noqa: BLE001 - never fatal
            self.errors += 1
            log.error("netlink dump failed: %s (retrying)", exc)
            self._pending = self._loop.call_later(RETRY, self._kick)

    async def stop(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
        if self._task is not None:
            self._task.cancel()
        if self._sock is not None and self._loop is not None:
            try:
                self._loop.remove_reader(self._sock.fileno())
            except (ValueError, OSError):
                pass
            self._sock.close()

    def view(self, ifname: str) -> LinkView | None:
        return self.links.get(ifname)

    def usable(
        self, ifname: str, link_local_ok: bool = False, families: frozenset[int] | None = None
    ) -> bool:
        v = self.links.get(ifname)
        return v is not None and v.usable(link_local_ok, families)

    def prefixes(self, ifname: str) -> tuple[IPNetwork, ...]:
        v = self.links.get(ifname)
        return v.prefixes() if v is not None else ()

    def _readable(self) -> None:
        assert self._sock is not None and self._loop is not None
        while True:  # the content does not matter: any message means "look again"
            try:
                if not self._sock.recv(65536):
                    break
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:  # ENOBUFS: events were lost; the dump catches up
                self.overruns += 1
                log.info("netlink: %s; re-reading links and addresses", exc.strerror or exc)
                break
        if self._pending is None:
            self._pending = self._loop.call_later(DEBOUNCE, self._kick)

    def _kick(self) -> None:
        self._pending = None
        if self._task is not None and not self._task.done():
            self._again = True
            return
        assert self._loop is not None
        self._task = self._loop.create_task(self._reconcile())

    async def _reconcile(self) -> None:
        failures = 0
        while True:
            self._again = False
            try:
                new = await asyncio.to_thread(dump)
            except Exception as exc:  # noqa: BLE001 - never fatal: keep the last view, retry
                self.errors += 1
                delay = min(RETRY * 2**failures, RETRY_MAX)
                failures += 1
                log.error("netlink dump failed: %s (retrying in %.1f s)", exc, delay)
                await asyncio.sleep(delay)
                continue
            if failures:
                log.info("netlink dump works again")
            failures = 0
            self.reconciles += 1
            old, self.links = self.links, new
            for name in sorted(set(old) | set(new)):
                if old.get(name) != new.get(name):
                    try:
                        self.on_change(name)
                    except Exception:  # a handler bug must not stop the monitoring
                        log.exception("link change handler failed for %s", name)
            if not self._again:
                return
