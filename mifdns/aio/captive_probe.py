"""mifdns's own questions per PvD: NAT64 discovery and captive-portal detection (the I/O side).

Theory of operation
-------------------
The logic lives in the core (mifdns.core.dns64 ``discover``, mifdns.core.captive
``CaptiveMachine``/``judge``); this module only drives it:

- DNS questions go through ``Resolver.probe(pvd, name, type, now)``: the resolver's own
  transaction machinery, so they leave through that PvD's servers and interface, are validated
  like any answer, and are cancelled with the PvD. Completions come back as ``ProbeResult``s
  that the daemon drains (``Daemon.flush``) into :meth:`Prober.on_probe_result`.
- The RFC 8908 API is fetched with a plain HTTP/1.0 GET (asyncio streams, stdlib TLS with the
  system's trust store, certificate and host name checked) over a TCP socket bound to the PvD's
  interface with SO_BINDTODEVICE; the API's host name, if it is one, is resolved through the
  PvD too (the portal's DNS is the one that knows it).
- Registry changes (``set_nat64``, ``set_captive``) go back through the daemon's ``apply``,
  which purges partitions and logs, like every other registry event.

Per attached PvD: on attach, a static ``dns64.prefix`` is set at once and ``auto`` starts
discovery (again when the answer's TTL runs out; after failures with backoff); the hijack probe
runs and the API (if known) is polled, then as the machine schedules them. On detach everything
learned is dropped (a network seen again may be another one). Spec changes (``ctl update``,
reload, resolvconf) restart what they affect. One loop timer covers every deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from time import monotonic
from typing import Any
from urllib.parse import urlsplit

from ..core import captive as cap
from ..core import dns64, wire
from ..core.inflight import ProbeResult
from ..core.pvd import CaptiveState, Pvd, PvdSpec
from ..core.registry import Event, PvdAttached, PvdChanged, PvdDetached, PvdPurged, Registry
from ..core.resolver import Resolver
from .upstream import bind_to_device

log = logging.getLogger("mifdns.probe")

HTTP_TIMEOUT = 10.0  # one API fetch, connect to last byte
RETRY_CANCELLED = 1.0  # a probe cancelled by a purge is asked again this much later


@dataclass
class _PvdProbes:
    """What the prober knows and has in flight for one PvD."""

    spec: PvdSpec
    machine: cap.CaptiveMachine
    active: bool = False  # attached: timers run
    dns64_token: int | None = None
    dns64_next: float | None = None
    dns64_failures: int = 0
    dns64_note: str = ""
    dns64_at: float | None = None
    hijack: dict[int, int] = field(default_factory=dict)  # token -> index in hijack_results
    hijack_results: list[tuple[str, list[str]]] = field(default_factory=list)
    poll: asyncio.Task[None] | None = None
    portal_addresses: tuple[str, ...] = ()  # what the resolver was told (``_sync_portal``)


class Prober:
    def __init__(
        self,
        resolver: Resolver,
        registry: Registry,
        loop: asyncio.AbstractEventLoop,
        apply: Callable[[list[Event]], Any],
        flush: Callable[[], None],
    ) -> None:
        self.resolver = resolver
        self.registry = registry
        self.loop = loop
        self._apply = apply
        self._flush = flush
        self._pvds: dict[str, _PvdProbes] = {}
        self._tokens: dict[int, str] = {}  # probe token -> PvD name (DNS64 and hijack)
        self._waiting: dict[int, asyncio.Future[ProbeResult]] = {}  # API host lookups
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._closed = False

    # ================================================================== inputs
    def on_events(self, events: list[Event], now: float) -> None:
        """Registry events, after the resolver acted on them (called by ``Daemon._apply``)."""
        for ev in events:
            pvd = self.registry.find(ev.name)
            if isinstance(ev, PvdAttached):
                if pvd is not None and pvd.attached:
                    self._attached(pvd, now)
            elif isinstance(ev, PvdDetached):
                if pvd is None:
                    self._forget(ev.name)
                elif not pvd.attached:
                    self._detached(pvd, now)
            elif isinstance(ev, (PvdPurged, PvdChanged)) and pvd is not None and pvd.attached:
                self._maybe_changed(pvd, now)
                if isinstance(ev, PvdChanged) and ev.what == "networks":
                    self._addresses_changed(pvd, now)
        self._arm()

    def on_probe_result(self, result: ProbeResult) -> None:
        """A ``Resolver.probe`` completed (drained by ``Daemon.flush``)."""
        fut = self._waiting.pop(result.token, None)
        if fut is not None:
            if not fut.done():
                fut.set_result(result)
            return
        name = self._tokens.pop(result.token, None)
        st = self._pvds.get(name) if name is not None else None
        if st is None:
            return
        now = monotonic()
        if result.token == st.dns64_token:
            self._dns64_done(st, result, now)
        elif result.token in st.hijack:
            self._hijack_done(st, result, now)
        self._arm()

    def on_sightings(self, names: list[str]) -> None:
        """Answers on these PvDs pointed at the address of a portal seen there before, while
        they were not captive (``Resolver.portal_sightings``, drained by ``Daemon.flush``):
        the portal may be back, so probe at once (rate-limited by the machine)."""
        now = monotonic()
        for name in dict.fromkeys(names):
            st = self._pvds.get(name)
            if st is not None and st.active and st.machine.on_sighting(now):
                log.info(
                    "an answer on %s pointed at its captive portal (%s): probing again",
                    name,
                    ", ".join(st.machine.portal_addresses),
                )
        self._arm()

    def operator(self, name: str, state: CaptiveState) -> None:
        """``ctl captive NAME STATE``."""
        pvd = self.registry.get(name)
        now = monotonic()
        st = self._state(pvd, now)
        t = st.machine.on_operator(state, now)
        if t is None and pvd.captive != st.machine.state:
            # the machine already agreed (or the PvD is detached): make the registry agree
            self._apply(self.registry.set_captive(name, st.machine.state))
        self._transition(st, t, now)
        self._sync_portal(st)
        self._arm()

    # ================================================================== views
    def info(self, name: str) -> dict[str, Any]:
        """Extra ``ctl pvds`` fields for one PvD."""
        st = self._pvds.get(name)
        if st is None:
            return {}
        now = monotonic()
        return {
            "captive_detail": st.machine.to_json(now),
            "nat64_discovery": {
                "note": st.dns64_note or None,
                "asked_s_ago": None if st.dns64_at is None else round(now - st.dns64_at, 1),
                "next_in_s": None
                if st.dns64_next is None or not st.active
                else round(max(0.0, st.dns64_next - now), 1),
            }
            if st.spec.dns64.prefix == "auto"
            else None,
        }

    async def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        tasks = [st.poll for st in self._pvds.values() if st.poll is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        for fut in self._waiting.values():
            fut.cancel()

    # ================================================================== lifecycle
    def _state(self, pvd: Pvd, now: float) -> _PvdProbes:
        st = self._pvds.get(pvd.name)
        if st is None:
            st = self._pvds[pvd.name] = _PvdProbes(
                pvd.spec, cap.CaptiveMachine(pvd.name, pvd.spec.captive_portal, now=now)
            )
            self.resolver.set_portal_hosts(pvd.name, st.machine.portal_hosts)
        return st

    def _attached(self, pvd: Pvd, now: float) -> None:
        st = self._state(pvd, now)
        st.active = True
        st.spec = pvd.spec
        st.machine.set_api_uri(pvd.spec.captive_portal, now)
        self._transition(st, st.machine.reset(now, "attached: probing"), now)
        self.resolver.set_portal_hosts(pvd.name, st.machine.portal_hosts)
        self._sync_portal(st)
        self._restart_dns64(st, pvd, now)

    def _detached(self, pvd: Pvd, now: float) -> None:
        st = self._pvds.get(pvd.name)
        if st is None:
            return
        self._stop(st)
        if pvd.nat64_prefixes and pvd.spec.dns64.prefix == "auto":
            self._apply(self.registry.set_nat64(pvd.name, ()))  # it may be another network next
        t = st.machine.reset(now, "detached")
        st.machine.next_probe = st.machine.next_poll = None
        self._transition(st, t, now)
        self._sync_portal(st)

    def _forget(self, name: str) -> None:
        st = self._pvds.pop(name, None)
        if st is not None:
            self._stop(st)
        self.resolver.set_portal_hosts(name, ())
        self.resolver.set_portal_addresses(name, ())

    def _sync_portal(self, st: _PvdProbes) -> None:
        """Tell the resolver where this PvD's portal pointed its lies (see ``on_sightings``)."""
        if st.portal_addresses != st.machine.portal_addresses:
            st.portal_addresses = st.machine.portal_addresses
            self.resolver.set_portal_addresses(st.spec.name, st.portal_addresses)

    def _stop(self, st: _PvdProbes) -> None:
        st.active = False
        for token in [st.dns64_token, *st.hijack]:
            if token is not None:
                self._tokens.pop(token, None)
        st.dns64_token = None
        st.dns64_next = None
        st.hijack.clear()
        st.hijack_results.clear()
        if st.poll is not None:
            st.poll.cancel()
            st.poll = None

    def _maybe_changed(self, pvd: Pvd, now: float) -> None:
        st = self._pvds.get(pvd.name)
        if st is None or not st.active:
            self._attached(pvd, now)
            return
        old, new = st.spec, pvd.spec
        if old == new:
            return
        st.spec = new
        if old.captive_portal != new.captive_portal:
            st.machine.set_api_uri(new.captive_portal, now)
            self.resolver.set_portal_hosts(pvd.name, st.machine.portal_hosts)
        if (old.interface, old.servers, old.domains, old.default_route) != (
            new.interface,
            new.servers,
            new.domains,
            new.default_route,
        ):
            st.machine.probe_again(now)
        if old.dns64 != new.dns64 or old.interface != new.interface or old.servers != new.servers:
            self._restart_dns64(st, pvd, now)

    def _addresses_changed(self, pvd: Pvd, now: float) -> None:
        """The PvD's link gained or lost addresses: a discovery that failed (its servers were
        unreachable, e.g. an IPv6-only server before the IPv6 address came) is asked again
        now instead of at its backoff slot (up to 300 s away)."""
        st = self._pvds.get(pvd.name)
        if (
            st is not None
            and st.active
            and st.dns64_failures
            and st.dns64_token is None
            and pvd.spec.dns64.prefix == "auto"
        ):
            st.dns64_failures = 0
            st.dns64_next = now

    # ================================================================== NAT64 discovery
    def _restart_dns64(self, st: _PvdProbes, pvd: Pvd, now: float) -> None:
        if st.dns64_token is not None:
            self._tokens.pop(st.dns64_token, None)
            st.dns64_token = None
        st.dns64_failures = 0
        st.dns64_next = None
        mode = pvd.spec.dns64
        static = mode.static_prefix()
        if static is not None:
            st.dns64_note = f"static prefix {static}"
            self._apply(self.registry.set_nat64(pvd.name, (static,)))
        elif mode.prefix == "auto":
            st.dns64_note = "discovering"
            st.dns64_next = now
        elif pvd.nat64_prefixes:
            self._apply(self.registry.set_nat64(pvd.name, ()))

    def _dns64_start(self, st: _PvdProbes, now: float) -> None:
        st.dns64_next = None
        st.dns64_at = now
        token = self.resolver.probe(st.spec.name, dns64.IPV4ONLY, wire.AAAA, now)
        st.dns64_token = token
        self._tokens[token] = st.spec.name

    def _dns64_done(self, st: _PvdProbes, result: ProbeResult, now: float) -> None:
        st.dns64_token = None
        pvd = self.registry.find(st.spec.name)
        if pvd is None or not pvd.attached or not st.active:
            return
        if result.outcome == "cancelled":  # purged meanwhile: ask again shortly
            st.dns64_next = now + RETRY_CANCELLED
            return
        d = dns64.discover(result.outcome, result.response, result.info, now, st.dns64_failures)
        st.dns64_note = d.note
        st.dns64_next = d.next_at
        if d.prefixes is None:
            st.dns64_failures += 1
            log.info("NAT64 discovery on %s: %s", pvd.name, d.note)
            return
        st.dns64_failures = 0
        if d.prefixes != pvd.nat64_prefixes:
            log.info("NAT64 discovery on %s: %s", pvd.name, d.note)
            self._apply(self.registry.set_nat64(pvd.name, d.prefixes))

    # ================================================================== captive portal
    def _hijack_start(self, st: _PvdProbes, now: float) -> None:
        st.machine.started_probe()
        st.hijack.clear()
        names = cap.probe_names(os.urandom(16 * (cap.PROBE_LABELS + 1)))
        st.hijack_results = [("pending", []) for _ in names]
        for i, name in enumerate(names):
            token = self.resolver.probe(st.spec.name, name, wire.A, now)
            st.hijack[token] = i
            self._tokens[token] = st.spec.name

    def _hijack_done(self, st: _PvdProbes, result: ProbeResult, now: float) -> None:
        i = st.hijack.pop(result.token)
        st.hijack_results[i] = (result.outcome, result.addresses())
        if st.hijack or not st.active:
            return
        results, st.hijack_results = st.hijack_results, []
        if any(outcome == "cancelled" for outcome, _ in results):
            st.machine.next_probe = now + RETRY_CANCELLED
            return
        verdict = cap.judge(results)
        log.debug("hijack probe on %s: %s", st.spec.name, verdict.note)
        self._transition(st, st.machine.on_probe(verdict, now), now)
        self._sync_portal(st)

    def _poll_start(self, st: _PvdProbes) -> None:
        st.machine.started_poll()
        st.poll = self.loop.create_task(self._poll(st))

    async def _poll(self, st: _PvdProbes) -> None:
        uri = st.machine.api_uri
        status: cap.ApiStatus | None = None
        error = None
        try:
            assert uri is not None
            status = await asyncio.wait_for(self._fetch(st, uri), HTTP_TIMEOUT)
        except asyncio.CancelledError:
            raise
        except (
            TimeoutError,
            cap.CaptiveApiError,
            OSError,
            ssl.SSLError,
            ValueError,
            EOFError,
        ) as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        except Exception as exc:  # a poll never kills the daemon: log and go on
            log.exception("captive-portal API %s on %s", uri, st.spec.name)
            error = f"{type(exc).__name__}: {exc}"
        finally:
            if st.poll is asyncio.current_task():
                st.poll = None
        if self._closed or not st.active or uri != st.machine.api_uri:
            return
        now = monotonic()
        if error is not None:
            log.info("captive-portal API %s on %s: %s", uri, st.spec.name, error)
        before = st.machine.portal_hosts
        t = st.machine.on_api(status, now, error)
        if st.machine.portal_hosts != before:
            self.resolver.set_portal_hosts(st.spec.name, st.machine.portal_hosts)
        self._transition(st, t, now)
        self._arm()
        self._flush()

    async def _fetch(self, st: _PvdProbes, uri: str) -> cap.ApiStatus:
        parts = urlsplit(uri)
        host = parts.hostname
        if not host or parts.scheme not in ("https", "http"):
            raise ValueError(f"not an http(s) URI: {uri}")
        https = parts.scheme == "https"
        port = parts.port or (443 if https else 80)
        try:
            addrs = [str(ipaddress.ip_address(host))]
        except ValueError:
            addrs = await self._lookup(st.spec.name, host)
            if not addrs:
                raise OSError(f"{host}: no address through {st.spec.name}") from None
        last: BaseException | None = None
        for addr in addrs:
            try:
                sock = await self._connect(st.spec.interface, addr, port)
            except OSError as exc:
                last = exc
                continue
            return await _http_get(sock, parts, host, https)
        assert last is not None
        raise last

    async def _lookup(self, pvd: str, host: str) -> list[str]:
        """A and AAAA of ``host`` through ``pvd`` (its servers, its interface)."""
        now = monotonic()
        futs = []
        for qtype in (wire.A, wire.AAAA):
            fut: asyncio.Future[ProbeResult] = self.loop.create_future()
            self._waiting[self.resolver.probe(pvd, host, qtype, now)] = fut
            futs.append(fut)
        self._flush()
        results = await asyncio.gather(*futs)
        return [a for r in results for a in r.addresses()]

    async def _connect(self, interface: str, addr: str, port: int) -> socket.socket:
        family = socket.AF_INET6 if ":" in addr else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            bind_to_device(sock, interface)
            await self.loop.sock_connect(sock, (addr, port))
        except BaseException:
            sock.close()
            raise
        return sock

    def _transition(self, st: _PvdProbes, t: cap.Transition | None, now: float) -> None:
        if t is None:
            return
        log.info("captive state of %s: %s -> %s (%s)", t.pvd, t.old.value, t.new.value, t.reason)
        pvd = self.registry.find(t.pvd)
        if pvd is None:
            return
        self._apply(self.registry.set_captive(t.pvd, t.new))  # leaving captive purges
        if t.old == CaptiveState.CAPTIVE and pvd.attached and st.active:
            self._restart_dns64(st, pvd, now)  # what was learned behind the portal may be wrong

    # ================================================================== the timer
    def _arm(self) -> None:
        if self._closed:
            return
        when: float | None = None
        for st in self._pvds.values():
            if not st.active:
                continue
            for t in (
                st.dns64_next if st.dns64_token is None else None,
                st.machine.next_probe if not st.hijack else None,
                st.machine.next_poll if st.poll is None else None,
            ):
                if t is not None and (when is None or t < when):
                    when = t
        if when == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = when
        if when is not None:
            self._timer = self.loop.call_at(when, self._tick)

    def _tick(self) -> None:
        self._timer = None
        self._timer_at = None
        now = monotonic()
        for st in list(self._pvds.values()):
            if not st.active:
                continue
            pvd = self.registry.find(st.spec.name)
            if pvd is None or not pvd.attached:
                continue
            if st.dns64_token is None and st.dns64_next is not None and st.dns64_next <= now:
                self._dns64_start(st, now)
            probe, poll = st.machine.due(now)
            if probe and not st.hijack:
                if _default_route(pvd):
                    self._hijack_start(st, now)
                else:  # a VPN is no captive portal: no random names through it
                    st.machine.started_probe()
            if poll and st.poll is None:
                self._poll_start(st)
        self._arm()
        self._flush()


def _default_route(pvd: Pvd) -> bool:
    """Captive portals sit on access networks: only default routes get the hijack probe."""
    spec = pvd.spec
    return spec.effective_default_route or any(d.routing_only and not d.name for d in spec.domains)


async def _http_get(sock: socket.socket, parts: Any, host: str, https: bool) -> cap.ApiStatus:
    """GET the API (RFC 8908 section 4) on a connected socket; parse its status."""
    ctx = ssl.create_default_context() if https else None
    reader, writer = await asyncio.open_connection(
        sock=sock, ssl=ctx, server_hostname=host if https else None, limit=cap.API_MAX_BYTES
    )
    try:
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        hostport = parts.netloc.rsplit("@", 1)[-1]
        writer.write(
            (
                f"GET {target} HTTP/1.0\r\nHost: {hostport}\r\n"
                "Accept: application/captive+json\r\nUser-Agent: mifdns\r\n"
                "Connection: close\r\n\r\n"
            ).encode("ascii")
        )
        await writer.drain()
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            raise cap.CaptiveApiError("HTTP header too large") from None
        lines = head.decode("latin-1").split("\r\n")
        status = lines[0].split()
        if len(status) < 2 or not status[0].startswith("HTTP/") or status[1] != "200":
            raise cap.CaptiveApiError(f"HTTP status {' '.join(status[1:]) or '?'}")
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        ctype = headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype and ctype not in ("application/captive+json", "application/json"):
            raise cap.CaptiveApiError(f"content type {ctype}, not application/captive+json")
        length = headers.get("content-length", "")
        if length.isdigit():
            if int(length) > cap.API_MAX_BYTES:
                raise cap.CaptiveApiError(f"answer of {length} bytes is too large")
            body = await reader.readexactly(int(length))
        else:
            body = await reader.read(cap.API_MAX_BYTES + 1)
            while body and len(body) <= cap.API_MAX_BYTES:
                more = await reader.read(cap.API_MAX_BYTES + 1 - len(body))
                if not more:
                    break
                body += more
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    return cap.parse_api(body)


__all__ = ["Prober"]
