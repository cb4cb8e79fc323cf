"""The daemon: wires the sans-I/O core to the asyncio adapters.

It owns the core's clock (``time.monotonic()``, not ``loop.time()``: uvloop's has a coarse
clock's millisecond resolution, too coarse for upstream RTTs of a LAN), hands every input to
the core with ``now``, and drains the core's outbox in one place (``flush``): replies to clients,
sends to upstreams, released transactions, one timer for the core's next deadline, and
registry events turned into purges, log lines and monitor events. The control commands and
their JSON views are in commands.py; they change the daemon's state only through ``apply``,
``upsert`` and ``reload``.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import socket
import time
from collections.abc import Sequence
from time import monotonic
from typing import Any

from .. import config as cfgmod
from ..core.pvd import Pvd, PvdSpec, ServerAddr
from ..core.registry import Event, Registry
from ..core.resolver import Release, Reply, Resolver, Settings
from ..core.transaction import Send, Transaction
from ..errors import StartupError
from . import commands
from . import reload as reloading
from .captive_probe import Prober
from .control import ControlServer, MonitorHub
from .lane import MissLane
from .lane import available as lane_available
from .links import LinkMonitor, StaticLinks, is_local
from .listener import UdpListener, listen_error
from .resolvconf_writer import ResolvConfWriter
from .tcp_listener import TcpClient, TcpServer
from .upstream import Upstreams, check_bind_capability

log = logging.getLogger("mifdns")

GC_YOUNG_THRESHOLD = 20_000  # allocations between young-generation collections (default 700)


def settings_from(config: cfgmod.Config) -> Settings:
    c, u, lim = config.cache, config.upstream, config.limits
    return Settings(
        max_entries=c.max_entries,
        max_bytes=c.max_bytes,
        max_ttl=c.max_ttl,
        negative_max_ttl=c.negative_max_ttl,
        captive_max_ttl=c.captive_max_ttl,
        timeout=u.timeout,
        total_timeout=u.total_timeout,
        negative_wait=u.negative_wait,
        edns_udp_size=u.edns_udp_size,
        max_inflight=lim.max_inflight,
    )


class Daemon:
    def __init__(self, config: cfgmod.Config) -> None:
        self.config = config
        self.registry = Registry()
        self.resolver = Resolver(self.registry, settings_from(config))
        self.hub = MonitorHub()
        self.udp: list[UdpListener] = []
        self.tcp: list[TcpServer] = []
        self.control: ControlServer | None = None
        self.upstreams: Upstreams | None = None
        self.lane: MissLane | None = None
        self.links: LinkMonitor | StaticLinks | None = None
        self.prober: Prober | None = None  # NAT64 discovery, captive-portal detection
        self.resolv_conf: ResolvConfWriter | None = None
        self.metrics: Any = None  # a metrics.MetricsServer while metrics.listen is set
        self.loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._gc: asyncio.TimerHandle | None = None
        self.started_wall = time.time()
        self.started = 0.0
        self.lifecycle: list[dict[str, Any]] = []
        self.query_log = logging.getLogger("mifdns.query")
        # the longest the event loop was held by lifecycle work: applying registry events
        # (purge, cancel, re-route) and freeing a chunk of purged entries (ms, since start)
        # and the longest pause of the garbage collector (young, and full: ``gc_full_ms``)
        self.stalls = {"apply_ms": 0.0, "collect_ms": 0.0, "gc_ms": 0.0, "gc_full_ms": 0.0}
        self._gc_started = 0.0

    # ================================================================== start / stop
    async def start(self) -> None:
        loop = self.loop = asyncio.get_running_loop()
        self.started = monotonic()
        cfg = self.config
        check_bind_capability()
        loops = self._check_loops(cfg)
        if loops:
            raise StartupError("; ".join(loops))
        self.upstreams = Upstreams(
            loop,
            self._on_upstream_reply,
            self._on_upstream_error,
            max_tcp=cfg.limits.max_upstream_tcp,
            queries_per_port=cfg.upstream.queries_per_port,
            after_io=self.flush,
        )
        self.prober = Prober(self.resolver, self.registry, loop, self.apply, self.flush)
        # links first: a PvD is attached only if its interface is usable
        self.links = LinkMonitor(self._on_link) if cfg.netlink else StaticLinks()
        await self.links.start()
        now = monotonic()
        for spec in cfg.pvds:
            self.apply(
                self.registry.add(
                    spec,
                    now=now,
                    link_up=self._usable(spec)[0],
                ),
                now,
            )
            self._on_link(spec.interface)
        for la in cfg.listen:
            addr = str(la.address)
            udp = UdpListener(
                loop,
                addr,
                la.port,
                self.resolver.handle_query,
                self.flush,
                ready=self.resolver.ready_table,
                count_ready=self.resolver.count_ready,
                batch=cfg.limits.ingress_batch,
                queue_bytes=cfg.limits.ingress_queue_bytes,
            )
            try:
                udp.start()
            except OSError as exc:
                udp.close()
                raise StartupError(
                    f"cannot listen on {la} (UDP): {listen_error(la, exc)}"
                ) from None
            self.udp.append(udp)
            tcp = TcpServer(
                loop,
                addr,
                la.port,
                self.resolver.handle_query,
                self.flush,
                max_clients=cfg.limits.max_tcp_clients,
                max_inflight=cfg.limits.max_tcp_queries_per_connection,
                idle_timeout=cfg.limits.tcp_idle_timeout,
            )
            try:
                await tcp.start()
            except OSError as exc:
                raise StartupError(
                    f"cannot listen on {la} (TCP): {listen_error(la, exc)}"
                ) from None
            self.tcp.append(tcp)
        if lane_available() and any(u.engine == "c" and not u.pktinfo for u in self.udp):
            by_fd = {u.sock.fileno(): u for u in self.udp}
            self.lane = MissLane(
                loop,
                self.resolver,
                by_fd.get,
                self.flush,
                per_port=cfg.upstream.queries_per_port,
            )
            for u in self.udp:
                if u.engine == "c" and not u.pktinfo:
                    u.lane = self.lane.lane
            self.lane.refresh()
        if cfg.control_socket:
            self.control = ControlServer(cfg.control_socket, self.handle_control, self.hub)
            await self.control.start()
        if cfg.metrics.address is not None:
            from .metrics import MetricsServer  # prometheus_client is imported only when used

            self.metrics = MetricsServer(self, cfg.metrics.address)
            await self.metrics.start()
        if self.query_log.level == logging.NOTSET:  # query_log: true logs at any --log-level
            self.query_log.setLevel(logging.INFO)
        if not self.query_log.handlers:
            # one JSON object per line on stderr, no log prefix: journald, docker and kubectl logs
            # take it as is; rotation is the platform's job
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter("%(message)s"))
            self.query_log.addHandler(handler)
            self.query_log.propagate = False
        self._gc = loop.call_later(0.05, self._collect)
        _tune_gc()
        gc.callbacks.append(self._gc_pause)
        # last: resolv.conf points at us only once we answer and can be controlled
        self._resolv_conf_take_over(cfg)
        log.info(
            "listening on %s; PvDs: %s",
            ", ".join(str(a) for a in cfg.listen),
            ", ".join(f"{p.name} ({p.state.value})" for p in self.registry) or "none",
        )

    async def stop(self) -> None:
        """Graceful stop: stop listening, give resolv.conf back, answer what is in flight
        (bounded: 1.5 s), then close the rest. Each step runs even if an earlier one failed."""
        loop = self.loop
        if self.prober is not None:
            try:
                await self.prober.close()
            except Exception:
                log.exception("stopping the probes")
        for u in self.udp:  # stop reading; the socket stays open to send in-flight answers
            _quietly(loop.remove_reader if loop else None, u.sock.fileno())
        for t in self.tcp:  # no new connections; open ones keep being answered
            if t.server is not None:
                _quietly(t.server.close)
        # the original resolv.conf comes back as soon as we stop listening
        if self.resolv_conf is not None:
            _quietly(self.resolv_conf.restore)
        if self.lane is not None:  # no new queries; the attempts out are still answered
            _quietly(self.lane.stop)
        deadline = monotonic() + 1.5
        lane = self.lane
        while (
            (self.resolver.inflight or (lane is not None and lane.pending))
            and loop
            and monotonic() < deadline
        ):
            await asyncio.sleep(0.02)
        if lane is not None:
            _quietly(lane.hand_over)
        # what is still unanswered gets SERVFAIL now: a client fails over at once instead of
        # waiting for its own timeout
        _quietly(self.resolver.cancel_all, monotonic())
        self.flush_quietly()
        if self.lane is not None:
            _quietly(self.lane.close)
        for u in self.udp:
            _quietly(u.close)
        for t in self.tcp:
            try:
                await t.close()
            except Exception:  # keep stopping
                log.exception("closing a TCP listener")
        if self.control is not None:
            try:
                await self.control.close()
            except Exception:
                log.exception("closing the control socket")
        if self.metrics is not None:
            try:
                await self.metrics.close()
            except Exception:
                log.exception("closing the metrics endpoint")
        if self.links is not None:
            try:
                await self.links.stop()
            except Exception:
                log.exception("stopping the link monitor")
        if self.upstreams is not None:
            _quietly(self.upstreams.close)
        for h in (self._timer, self._gc):
            if h is not None:
                h.cancel()
        if self._gc_pause in gc.callbacks:
            gc.callbacks.remove(self._gc_pause)

    def flush_quietly(self) -> None:
        try:
            if self.loop is not None:
                self.flush()
        except Exception:
            log.exception("flushing answers at stop")

    # ================================================================== the query path
    def _on_upstream_reply(
        self, txn: Transaction, data: bytes, source: tuple[str, int], tcp: bool
    ) -> None:
        self.resolver.handle_reply(txn, data, source, tcp, monotonic())

    def _on_upstream_error(self, txn: Transaction, reason: str) -> None:
        self.resolver.handle_send_error(txn, reason, monotonic())

    def flush(self) -> None:
        """Drain the core's outbox and re-arm its timer. Called after every batch of input."""
        res = self.resolver
        while res.probe_results and self.prober is not None:  # mifdns's own questions
            results, res.probe_results = res.probe_results, []
            for result in results:
                self.prober.on_probe_result(result)
        if res.portal_sightings:  # answers that pointed at a captive portal seen before
            names, res.portal_sightings = res.portal_sightings, []
            if self.prober is not None:
                self.prober.on_sightings(names)
        if res.outbox:
            box, res.outbox = res.outbox, []
            ups = self.upstreams
            for act in box:
                if type(act) is Reply:
                    client = act.client
                    if type(client) is tuple:  # UDP: (listener, address[, source])
                        if len(client) == 2:
                            client[0].send(act.data, client[1])
                        else:
                            client[0].send(act.data, client[1], client[2])
                    else:
                        assert isinstance(client, TcpClient)
                        client.send(act.data)
                elif type(act) is Send:
                    assert ups is not None
                    ups.send(act)
                elif type(act) is Release:
                    assert ups is not None
                    ups.release(act.txn)
        if res.events:
            events, res.events = res.events, []
            wall = time.time()
            for ev in events:
                ev["time"] = wall
                self.hub.publish(ev)
                if self.config.query_log:
                    self.query_log.info("%s", _json(ev))
        res.monitoring = self.hub.active or self.config.query_log
        if self.lane is not None:
            self.lane.refresh()
        when = res.next_timer()
        # re-arm only for an earlier deadline: a timer armed for one that has gone since (its
        # transaction was answered) fires early, finds nothing due and re-arms here; re-arming
        # on every change would cost a TimerHandle per answer under load
        at = self._timer_at
        if when is not None and (at is None or when < at):
            if self._timer is not None:
                self._timer.cancel()
            assert self.loop is not None
            self._timer_at = when
            self._timer = self.loop.call_at(when, self._on_timer)

    def _gc_pause(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        elif self._gc_started:
            self._slowest(
                "gc_full_ms" if info.get("generation") == 2 else "gc_ms", self._gc_started
            )

    def _slowest(self, what: str, t0: float) -> None:
        ms = (time.perf_counter() - t0) * 1000
        if ms > self.stalls[what]:
            self.stalls[what] = round(ms, 3)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self.resolver.handle_timers(monotonic())
        self.flush()

    def _collect(self) -> None:
        """Free purged cache entries a chunk at a time, so a purge never blocks the loop."""
        assert self.loop is not None
        t0 = time.perf_counter()
        freed = self.resolver.cache.collect(5000)
        if freed:
            self._slowest("collect_ms", t0)
        self._gc = self.loop.call_later(
            0 if freed and self.resolver.cache.garbage else 0.25, self._collect
        )

    # ================================================================== lifecycle
    def apply(self, events: list[Event], now: float | None = None) -> list[dict[str, Any]]:
        """Registry events into the resolver (purges, re-routes), the lifecycle log, the
        monitor and the prober; returns the lifecycle records."""
        if not events:
            return []
        if now is None:
            now = monotonic()
        t0 = time.perf_counter()
        records = self.resolver.apply(events, now)
        self._slowest("apply_ms", t0)
        for rec in records:
            rec["time"] = time.time()
            self.lifecycle.append(rec)
            self.hub.publish(rec)
            msg = f"{rec['event']} {rec['pvd']}"
            if "cause" in rec:
                msg += f": {rec['cause']}"
            if "purged" in rec:
                msg += f"; purged {rec['purged']} cache entries"
                if rec.get("cancelled"):
                    msg += f", cancelled {rec['cancelled']} queries"
            if "what" in rec:
                msg += f": {rec['what']}"
            log.info("%s", msg)
        del self.lifecycle[:-200]
        if self.prober is not None:  # discovery on attach, probes again after a purge...
            self.prober.on_events(events, now)
        if self.loop is not None:
            self.flush()
        self._resolv_conf_refresh()
        return records

    def _on_link(self, ifname: str) -> None:
        """The link monitor says something about ``ifname`` changed (or a PvD on it was set up).
        PvDs follow interfaces by name: a renamed interface leaves its PvDs, a re-created one
        (new ifindex) takes them back. Upstream sockets live for one attempt only, and a detach
        cancels the attempts, so no socket stays bound to an ifindex that went away."""
        assert self.links is not None
        up, causes = {}, {}
        for p in self.registry.on_interface(ifname):
            up[p.name], causes[p.name] = self._usable(p.spec)
        self.apply(
            self.registry.set_link(
                ifname,
                up=up,
                prefixes=self.links.prefixes(ifname),
                now=monotonic(),
                causes=causes,
            )
        )

    def looping_servers(
        self, spec: PvdSpec, listen: Sequence[cfgmod.ListenAddr] | None = None
    ) -> list[ServerAddr]:
        """The servers of ``spec`` that are mifdns itself: one of its ``listen`` addresses or,
        while it listens on a wildcard address, any address of this host (the config's
        ``looping_servers``, asking the kernel which addresses are this host's)."""
        listen = self.config.listen if listen is None else listen
        return cfgmod.looping_servers(spec, listen, is_local)

    def is_mifdns(self, server: ServerAddr) -> bool:
        """Whether ``server`` is mifdns itself (see ``looping_servers``)."""
        return cfgmod.loops_back(server, self.config.listen, is_local)

    def _check_loops(self, config: cfgmod.Config) -> list[str]:
        """One line per configured server that is mifdns itself (see ``looping_servers``)."""
        return [
            f"pvd {spec.name}: server {s} is an address of this host and mifdns listens on a "
            "wildcard address (queries would loop)"
            for spec in config.pvds
            for s in self.looping_servers(spec, config.listen)
        ]

    def _usable(self, spec: PvdSpec) -> tuple[bool, str]:
        """Whether the PvD's interface can reach its servers, and why: up with an address of
        a family of its servers (of any family if it has none: it answers nothing anyway). An
        IPv6 link-local address counts only if one of them is link-local."""
        assert self.links is not None
        ifname, servers = spec.interface, spec.servers
        ll = any(s.address.version == 6 and s.address.is_link_local for s in servers)
        families = frozenset(s.address.version for s in servers) or None
        if self.links.usable(ifname, ll, families):
            return True, f"link {ifname} usable"
        if families is not None and self.links.usable(ifname, ll):
            only = "IPv4" if families == {4} else "IPv6"
            return False, f"link {ifname} has no {only} address (the PvD's servers are {only})"
        return False, f"link {ifname} not usable"

    def upsert(self, spec: PvdSpec) -> Pvd:
        """Add or replace a runtime PvD (``ctl attach``/``update``, ``resolvconf -a``); its
        interface, and the one it leaves, are looked at again."""
        assert self.links is not None
        current = self.registry.find(spec.name)
        if current is not None and current.spec == spec:  # a DHCP renewal: nothing changed
            return current
        previous = current.spec.interface if current is not None else None
        self.apply(self.registry.upsert(spec, now=monotonic(), link_up=self._usable(spec)[0]))
        self._on_link(spec.interface)
        if previous is not None and previous != spec.interface:
            self._on_link(previous)
        return self.registry.get(spec.name)

    async def reload(self) -> dict[str, Any]:
        """Re-read the config file and apply it as a diff (SIGHUP, ``ctl reload``; reload.py)."""
        return await reloading.reload(self)

    # ================================================================== resolv.conf
    def _resolv_conf_take_over(self, cfg: cfgmod.Config) -> None:
        if not cfg.resolv_conf.manage:
            return
        writer = ResolvConfWriter(
            cfg.resolv_conf.path, [(str(la.address), la.port) for la in cfg.listen]
        )
        try:
            writer.take_over()
        except OSError as exc:
            raise StartupError(
                f"resolv_conf.manage: cannot take over {writer.path}: {exc.strerror or exc}"
            ) from None
        self.resolv_conf = writer
        self._resolv_conf_refresh()

    def _resolv_conf_refresh(self) -> None:
        """Rewrite the managed resolv.conf if the attached PvDs' search domains changed."""
        if self.resolv_conf is None or not self.resolv_conf.active:
            return
        domains = [d for p in self.registry if p.attached for d in p.spec.search_domains]
        self.resolv_conf.update(domains)

    # ================================================================== control
    async def handle_control(self, req: dict[str, Any]) -> Any:
        """The control server's entry point; the commands are in commands.py."""
        return await commands.handle_control(self, req)

    def status(self) -> dict[str, Any]:
        """``ctl status`` (the metrics endpoint reads it too)."""
        return commands.status(self)


def _tune_gc() -> None:
    """After start-up: move what exists now (modules, config, tables) out of the collector's
    sight for good (``gc.freeze``), and collect the youngest generation less often. Each query
    allocates a few dozen objects that die young; at the default threshold (700) they trigger a
    young collection every ~20 queries and push survivors towards the full collections, which
    walk every cached entry (~30 ms per 100k)."""
    gc.collect()
    gc.freeze()
    _, g1, g2 = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, g1, g2)


def _quietly(fn: Any, *args: Any) -> None:
    """Run one shutdown step; log its failure and go on with the next."""
    if fn is None:
        return
    try:
        fn(*args)
    except Exception:
        log.exception("during shutdown")


def _json(obj: Any) -> str:
    import json

    return json.dumps(obj, separators=(",", ":"), default=str)


def sd_notify(state: str) -> None:
    """Tell systemd (Type=notify) about our state, if it is listening."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    if path.startswith("@"):
        path = "\0" + path[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(path)
            s.sendall(state.encode())
    except OSError as exc:
        log.warning("sd_notify failed: %s", exc)
