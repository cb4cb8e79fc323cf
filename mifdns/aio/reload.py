"""Reloading the config file (SIGHUP, ``ctl reload``): the new file applied as a diff.

Part of the daemon (daemon.py), split out for size: it changes the daemon's state only
through ``Daemon.apply``, the registry and the listeners' settings.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import replace
from time import monotonic
from typing import TYPE_CHECKING, Any

from .. import config as cfgmod
from ..errors import ConfigError, ControlError, StartupError

if TYPE_CHECKING:
    from .daemon import Daemon

log = logging.getLogger("mifdns")


class ReloadRejected(ControlError):
    """The config file is invalid; the running config stays (already logged in full)."""


async def reload(d: Daemon) -> dict[str, Any]:
    """Re-read the config file and apply it as a diff (SIGHUP, ``ctl reload``).

    An invalid file changes nothing (the errors are check-config's). PvDs are compared file
    to file: one gone from the file is removed (its partition purged); one added is added;
    one whose entry changed is updated (purged if its servers, domains, networks, interface
    or DNS64 changed: answers from the old servers must not outlive them; other changes keep
    the cache); one whose entry did not change is left alone, runtime changes included.
    A PvD missing from the registry (``ctl remove``) comes back."""
    from .daemon import settings_from  # daemon.py imports this module

    path = d.config.source
    if not path:
        raise ControlError("no config file to reload (the daemon runs on built-in defaults)")
    try:
        new = cfgmod.apply_env(cfgmod.load_config(path), os.environ)
    except ConfigError as exc:
        log.error("reload rejected, running config stays in force:\n%s", exc)
        raise ReloadRejected(
            "reload rejected, running config stays in force: " + "; ".join(str(exc).splitlines())
        ) from None
    loops = d._check_loops(new)
    if loops:
        log.error("reload rejected, running config stays in force: %s", "; ".join(loops))
        raise ReloadRejected("reload rejected, running config stays in force: " + "; ".join(loops))
    assert d.links is not None
    now = monotonic()
    old = {p.name: p for p in d.config.pvds}
    fresh = {p.name: p for p in new.pvds}
    changes: dict[str, list[str]] = {"removed": [], "added": [], "changed": [], "unchanged": []}
    for name in old:
        if (
            name not in fresh
            and name in d.registry
            and d.registry.get(name).spec.origin == "config"
        ):
            d.apply(d.registry.remove(name, cause="removed from config (reload)"), now)
            changes["removed"].append(name)
    for name, spec in fresh.items():
        if name not in d.registry:
            d.apply(d.registry.add(spec, now=now, link_up=d._usable(spec)[0]), now)
            d._on_link(spec.interface)
            changes["added"].append(name)
        elif old.get(name) != spec and d.registry.get(name).spec != spec:
            previous = d.registry.get(name).spec.interface
            d.apply(d.registry.upsert(spec, now=now, link_up=d._usable(spec)[0]), now)
            d._on_link(spec.interface)
            if previous != spec.interface:
                d._on_link(previous)
            changes["changed"].append(name)
        else:
            changes["unchanged"].append(name)
    notes = []
    if changes["removed"] and not fresh:
        notes.append(f"{path} names no PvDs any more: every PvD from the file is gone")
        log.warning("reload: %s", notes[-1])
    if new.listen != d.config.listen or new.control_socket != d.config.control_socket:
        notes.append("listen/control_socket changes need a restart")
    if new.netlink != d.config.netlink:
        notes.append("netlink changes need a restart")
    if new.metrics != d.config.metrics:
        notes.append("metrics changes need a restart")
    if settings_from(new) != d.resolver.settings:
        d.resolver.settings = settings_from(new)
        d.resolver.cache.max_entries = new.cache.max_entries
        d.resolver.cache.max_bytes = new.cache.max_bytes
    if d.upstreams is not None:
        d.upstreams.max_tcp = new.limits.max_upstream_tcp
        d.upstreams.queries_per_port = new.upstream.queries_per_port
    if d.lane is not None:  # made with the settings at start
        d.lane.tune(new.upstream.queries_per_port)
    lim = new.limits  # the listeners read these on every batch, connection or frame
    for udp in d.udp:
        udp.batch = lim.ingress_batch
        if udp.queue_bytes != lim.ingress_queue_bytes:
            udp.set_queue_bytes(lim.ingress_queue_bytes)
    for tcp in d.tcp:
        tcp.max_clients = lim.max_tcp_clients
        tcp.max_inflight = lim.max_tcp_queries_per_connection
        tcp.idle_timeout = lim.tcp_idle_timeout
    running = d.config  # what needs a restart stays as it runs (status shows it)
    d.config = replace(
        new,
        listen=running.listen,
        control_socket=running.control_socket,
        netlink=running.netlink,
        metrics=running.metrics,
    )
    if new.resolv_conf != running.resolv_conf:
        if d.resolv_conf is not None:
            d.resolv_conf.restore()
            d.resolv_conf = None
        try:
            d._resolv_conf_take_over(d.config)
        except StartupError as exc:
            log.error("%s", exc)
            notes.append(str(exc))
    rec = {"event": "reload", "time": time.time(), **changes, "notes": notes}
    d.hub.publish(rec)
    log.info("reloaded %s: %s", path, {k: v for k, v in changes.items() if v})
    return rec
