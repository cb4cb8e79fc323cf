"""The control commands: what ``mifdns ctl`` and ``mifdns resolvconf`` ask the daemon.

The control server (control.py) reads one JSON request per line and awaits
``Daemon.handle_control``, which hands it to ``handle_control`` here. A command reads the
daemon's state, or changes it only through the daemon's lifecycle operations (``Daemon.apply``
for registry events, ``Daemon.upsert`` for a runtime PvD, ``Daemon.reload``); sockets,
timers and links stay the daemon's. Input is vetted here (a name, a record type, a spec that would
send queries back to mifdns); every refusal is a ControlError with a one-line message, and the
registry's and the config loader's errors are turned into one.

The JSON views live here too: ``pvd_json`` (one PvD) and ``status`` (which also feeds the
metrics endpoint, through ``Daemon.status``).
"""

from __future__ import annotations

import os
import time
from time import monotonic
from typing import TYPE_CHECKING, Any

from .. import config as cfgmod
from ..core import wire
from ..core.pvd import CaptiveState, Pvd, PvdSpec
from ..core.registry import RegistryError
from ..errors import ConfigError, ControlError

if TYPE_CHECKING:
    from .daemon import Daemon


async def handle_control(daemon: Daemon, req: dict[str, Any]) -> Any:
    """One request (``{"cmd": ..., ...}``) in, its JSON-ready answer out."""
    cmd = req.get("cmd")
    now = monotonic()
    reg = daemon.registry
    try:
        if cmd == "status":
            return status(daemon)
        if cmd == "pvds":
            return [pvd_json(daemon, p) for p in reg]
        if cmd == "cache":
            pvd = _optional_str(req, "pvd")
            if pvd is not None:
                reg.get(pvd)
            return daemon.resolver.cache_listing(now, pvd)
        if cmd == "explain":
            name = req.get("name")
            if not isinstance(name, str) or not name:
                raise ControlError("explain needs a name")
            rdtype = _rdtype(req.get("type") or "A")  # checks its type itself
            try:
                return daemon.resolver.explain(name, rdtype)
            except wire.WireError as exc:
                raise ControlError(f"{name!r}: {exc}") from None
        if cmd == "detach":
            name = _name(req)
            daemon.apply(reg.admin_detach(name))
            return pvd_json(daemon, reg.get(name))
        if cmd == "attach":
            if "spec" in req:
                spec = cfgmod.pvd_spec_from_mapping(req["spec"], where="spec", origin="runtime")
                current = reg.find(spec.name)
                if current is not None and current.spec.origin != "runtime":
                    raise ControlError(
                        f"attach: {spec.name!r} is a PvD from {current.spec.origin}; a spec "
                        "attaches a new runtime PvD (change this one with 'ctl update')"
                    )
                _refuse_own_servers(daemon, spec, "attach")
                return pvd_json(daemon, daemon.upsert(spec))
            name = _name(req)
            daemon.apply(reg.admin_attach(name, now=now))
            return pvd_json(daemon, reg.get(name))
        if cmd == "update":
            name = _name(req)
            current = reg.get(name).spec
            changes = req.get("changes") or {}
            if not isinstance(changes, dict):
                raise ControlError("update: 'changes' must be an object")
            before = spec_to_mapping(current)
            merged = {**before, **changes, "name": name}
            merged["dns64"] = _merged_dns64(before["dns64"], changes)
            spec = cfgmod.pvd_spec_from_mapping(merged, where="update", origin=current.origin)
            _refuse_own_servers(daemon, spec, "update")
            return pvd_json(daemon, daemon.upsert(spec))
        if cmd == "remove":
            name = _name(req)
            daemon.apply(reg.remove(name, cause="removed by operator"))
            return {"removed": name}
        if cmd == "flush":
            name = _optional_str(req, "name")
            names = [name] if name else [p.name for p in reg]
            total = 0
            for n in names:
                total += sum(
                    r.get("purged", 0)
                    for r in daemon.apply(reg.purge(n, cause="flushed by operator"))
                )
            return {"flushed": names, "entries": total}
        if cmd == "captive":
            name = _name(req)
            try:
                state = CaptiveState(req.get("state"))
            except ValueError:
                raise ControlError("captive state must be captive, open or unknown") from None
            if daemon.prober is not None:
                daemon.prober.operator(name, state)
            else:
                daemon.apply(reg.set_captive(name, state))
            return pvd_json(daemon, reg.get(name))
        if cmd == "reload":
            return await daemon.reload()
        if cmd == "resolvconf":
            return _resolvconf(daemon, req)
    except RegistryError as exc:
        raise ControlError(str(exc)) from None
    except ConfigError as exc:
        raise ControlError("; ".join(exc.problems)) from None
    raise ControlError(f"unknown command {cmd!r}")


def _merged_dns64(current: dict[str, Any], changes: dict[str, Any]) -> Any:
    """``update``'s dns64: merged like the other options, one level down. A prefix alone
    keeps the PvD's ``synthesize`` (except ``none``, which has nothing to synthesize with);
    ``synthesize`` alone keeps its prefix."""
    if "dns64" not in changes:
        return current
    change = changes["dns64"]
    if isinstance(change, str):
        if change.strip().lower() == "none":
            return {"prefix": "none", "synthesize": False}
        return {**current, "prefix": change}
    if isinstance(change, dict):
        return {**current, **change}
    return change  # not a mapping nor a prefix: the config's checks say what is wrong


def _refuse_own_servers(daemon: Daemon, spec: PvdSpec, cmd: str) -> None:
    """The check the config loader makes: a server that is mifdns itself (``Daemon.looping_servers``)
    would send its queries back to mifdns."""
    looping = daemon.looping_servers(spec)
    if looping:
        raise ControlError(
            f"{cmd}: {looping[0]} is mifdns itself (one of its listen addresses, or an address of "
            "this host while it listens on a wildcard address): queries would loop"
        )


def _resolvconf(daemon: Daemon, req: dict[str, Any]) -> Any:
    """``mifdns resolvconf -a/-d``: records are runtime PvDs of origin "resolvconf"; a
    record never replaces or removes a PvD of another origin."""
    from ..resolvconf import check_record, read_feed

    record = req.get("record")
    if not isinstance(record, str) or not record:
        raise ControlError("resolvconf: missing record (IFACE[.PROTO])")
    check_record(record)
    current = daemon.registry.find(record)
    if current is not None and current.spec.origin != "resolvconf":
        raise ControlError(
            f"resolvconf: {record!r} is a PvD from {current.spec.origin}, "
            "not a resolvconf record; use another record name"
        )
    action = req.get("action")
    if action not in ("add", "delete"):
        raise ControlError("resolvconf: action must be add or delete")
    spec, ignored = None, []
    if action == "add":
        feed = read_feed(
            record,
            _optional_str(req, "text") or "",
            exclusive=_flag(req, "exclusive"),
            private=_flag(req, "private"),
            skip=daemon.is_mifdns,
        )
        spec, ignored = feed.spec, feed.ignored
    if spec is not None:
        # ignored: the nameservers left out, for the front end to report
        return {**pvd_json(daemon, daemon.upsert(spec)), "ignored": ignored}
    if current is not None:
        cause = (
            f"resolvconf -d {record}"
            if action == "delete"
            else f"resolvconf -a {record} without a usable nameserver"
        )
        daemon.apply(daemon.registry.remove(record, cause=cause))
    return {"removed": record if current is not None else None, "ignored": ignored}


# ================================================================== views
def pvd_json(daemon: Daemon, p: Pvd) -> dict[str, Any]:
    now = monotonic()
    spec = p.spec
    return {
        "name": p.name,
        "interface": spec.interface,
        "state": p.state.value,
        "servers": [str(s) for s in spec.servers],
        "domains": [str(d) for d in spec.domains],
        "search_domains": list(spec.search_domains),
        "networks": [str(n) for n in p.networks],
        "default_route": spec.effective_default_route,
        "exclusive": spec.exclusive,
        "trust_ad": spec.trust_ad,
        "captive": p.captive.value,
        "nat64_prefixes": [str(n) for n in p.nat64_prefixes],
        "captive_portal": spec.captive_portal,
        "captive_domains": [str(d) for d in spec.captive_domains],
        **(daemon.prober.info(p.name) if daemon.prober is not None else {}),
        "dns64": {"prefix": spec.dns64.prefix, "synthesize": spec.dns64.synthesize},
        "origin": spec.origin,
        "admin_detached": p.admin_down,
        "link_usable": p.link_up,
        "cache_entries": daemon.resolver.cache.size_of(p.tag),
        "upstream_queries": daemon.resolver.upstream_queries.get(p.name, 0),
        "upstream_failures": daemon.resolver.upstream_failures.get(p.name, 0),
        "server_health": {
            str(s): daemon.resolver.health.stats(p.name, s).to_json(now) for s in spec.servers
        },
    }


def status(daemon: Daemon) -> dict[str, Any]:
    res = daemon.resolver
    if daemon.lane is not None:
        daemon.lane.book()  # what the C lane did since its last table, into the counters
    counters = dict(res.counters)
    for u in daemon.udp:
        u.refresh_drops()
        for k, v in u.counters.items():
            counters[f"udp_{k}"] = counters.get(f"udp_{k}", 0) + v
    for t in daemon.tcp:
        for k, v in t.counters.items():
            counters[f"tcp_{k}"] = counters.get(f"tcp_{k}", 0) + v
    if daemon.upstreams is not None:
        for k, v in daemon.upstreams.counters.items():
            counters[f"upstream_{k}"] = v
        counters["upstream_udp_open"] = daemon.upstreams.open_sockets  # ports open now
    if daemon.lane is not None:  # the miss lane's sockets are upstream sockets too
        lane_counts = daemon.lane.lane.counters()
        counters["upstream_icmp_errors"] = (
            counters.get("upstream_icmp_errors", 0) + lane_counts["socket_errors"]
        )
    counters["cache_evictions"] = res.cache.evictions
    lim = daemon.config.limits
    return {
        "version": _version(),
        "pid": os.getpid(),
        "listen": [str(a) for a in daemon.config.listen],
        "config": daemon.config.source or None,
        "uptime_s": round(monotonic() - daemon.started, 1),
        "counters": counters,
        # the UDP listeners' loop: "c" (recvmmsg/sendmmsg batches) or "python"
        "udp_engine": daemon.udp[0].engine if daemon.udp else None,
        # the miss lane (aio/lane.py): None when off (no C loop, MIFDNS_MISS_LANE=0)
        "udp_lane": daemon.lane.status() if daemon.lane is not None else None,
        "upstream_queries": dict(res.upstream_queries),
        "upstream_failures": dict(res.upstream_failures),
        "pvds": [pvd_json(daemon, p) for p in daemon.registry],
        "cache": {
            "entries": res.cache.count,
            "bytes": res.cache.bytes,
            "max_entries": res.cache.max_entries,
            "max_bytes": res.cache.max_bytes,
            "per_pvd": {p.name: res.cache.size_of(p.tag) for p in daemon.registry},
            "awaiting_free": res.cache.garbage,
        },
        # purge_log times are the core's (monotonic): shown as wall-clock, like lifecycle
        "purges": [
            {**p, "time": round(time.time() - (monotonic() - p["time"]), 3)}
            for p in res.purge_log[-20:]
        ],
        "inflight": len(res.inflight),
        "tcp_clients": sum(len(t.clients) for t in daemon.tcp),
        "loop_stalls": dict(daemon.stalls),
        "limits": {
            "max_inflight": lim.max_inflight,
            "max_tcp_clients": lim.max_tcp_clients,
            "max_tcp_queries_per_connection": lim.max_tcp_queries_per_connection,
            "max_upstream_tcp": lim.max_upstream_tcp,
            "tcp_idle_timeout": lim.tcp_idle_timeout,
            "ingress_batch": lim.ingress_batch,
            "ingress_queue_bytes": lim.ingress_queue_bytes,
            # what the kernel granted per UDP socket (less without CAP_NET_ADMIN)
            "ingress_queue_granted": min((u.queue_granted for u in daemon.udp), default=0),
            "hits": {
                "ingress_drops": counters.get("udp_ingress_drops", 0),
                "inflight": res.counters["limit_inflight"],
                "tcp_clients": counters.get("tcp_refused_limit", 0),
                "tcp_evicted": counters.get("tcp_evicted", 0),
                "tcp_pipelined": counters.get("tcp_inflight_limit", 0),
                "upstream_tcp": counters.get("upstream_tcp_limit", 0),
                "tcp_idle_closed": counters.get("tcp_idle_closed", 0),
                "cache_evictions": res.cache.evictions,
            },
        },
        "lifecycle": daemon.lifecycle[-20:],
        "control_socket": daemon.config.control_socket or None,
        "metrics": (
            f"http://{daemon.metrics.address}/metrics" if daemon.metrics is not None else None
        ),
        "query_log": daemon.config.query_log,
        "monitor": {"subscribers": daemon.hub.subscribers, "dropped": daemon.hub.dropped},
    }


def spec_to_mapping(spec: PvdSpec) -> dict[str, Any]:
    """A PvdSpec back in config-file form (for ``ctl update``)."""
    return {
        "name": spec.name,
        "interface": spec.interface,
        "servers": [str(s).replace(f"%{spec.interface}", "") for s in spec.servers],
        "domains": [str(d) for d in spec.domains],
        "default_route": spec.default_route,
        "exclusive": spec.exclusive,
        "trust_ad": spec.trust_ad,
        "networks": [str(n) for n in spec.networks],
        "dns64": {"prefix": spec.dns64.prefix, "synthesize": spec.dns64.synthesize},
        "captive_portal": spec.captive_portal,
        "captive_domains": [str(d) for d in spec.captive_domains],
    }


def _optional_str(req: dict[str, Any], key: str) -> str | None:
    value = req.get(key)
    if value is not None and not isinstance(value, str):
        raise ControlError(f"{req.get('cmd')}: {key!r} must be a string")
    return value


def _flag(req: dict[str, Any], key: str) -> bool:
    """A boolean field (absent: false). "no" is not false in JSON, and not true either."""
    value = req.get(key, False)
    if not isinstance(value, bool):
        raise ControlError(f"{req.get('cmd')}: {key!r} must be true or false")
    return value


def _name(req: dict[str, Any]) -> str:
    name = req.get("name")
    if not isinstance(name, str) or not name:
        raise ControlError(f"{req.get('cmd')} needs a PvD name")
    return name


def _rdtype(text: Any) -> int:
    import dns.exception
    import dns.rdatatype

    text = str(text).strip()
    if text.isdigit() and int(text) <= 65535:  # a number, as dig takes one (TYPE65535 too)
        return int(text)
    try:
        return int(dns.rdatatype.from_text(text))
    except (dns.exception.DNSException, ValueError):  # unknown mnemonic; TYPE99999
        raise ControlError(f"unknown record type {text!r}") from None


def _version() -> str:
    from .. import __version__

    return __version__
