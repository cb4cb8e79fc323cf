"""What registry events do to the resolver's state (STYLE: a PvD's partition dies with it).

A ``PvdDetached`` or ``PvdPurged`` event carries the tag the PvD had: its cache partition is
dropped whole (``Cache.purge``) and every transaction started under that tag is cancelled, so
nothing learned there is stored or served afterwards. When the PvD is still attached under a new
tag (its servers or domains changed: ``PvdPurged``), the clients waiting on a cancelled
transaction whose question still routes to it are asked again there instead of failed; the
others get their answer from the remaining candidates, or SERVFAIL. Functions of the
resolver's state, kept apart from the query path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import completion
from .cache import Key
from .inflight import Resolution
from .pvd import Pvd
from .registry import Event, PvdAttached, PvdChanged, PvdDetached, PvdPurged
from .transaction import Transaction

if TYPE_CHECKING:
    from .resolver import Resolver


def apply(r: Resolver, events: list[Event], now: float) -> list[dict[str, Any]]:
    """Act on registry events: purge partitions, cancel transactions. Returns a log record per
    event (for the monitor, the log and ``ctl status``)."""
    out: list[dict[str, Any]] = []
    for ev in events:
        rec: dict[str, Any] = {
            "event": type(ev).__name__.removeprefix("Pvd").lower(),
            "pvd": ev.name,
            "time": now,
        }
        if isinstance(ev, (PvdDetached, PvdPurged)):
            n = r.cache.purge(ev.old_tag)
            again = r.registry.find(ev.name) if isinstance(ev, PvdPurged) else None
            cancelled, reasked = _cancel_tag(r, ev.old_tag, now, again)
            rec.update(cause=ev.cause, purged=n, cancelled=cancelled)
            if reasked:
                rec["reasked"] = reasked
            r.counters["purges"] += 1
            r.counters["purged_entries"] += n
            r.purge_log.append({"pvd": ev.name, "entries": n, "cause": ev.cause, "time": now})
            r.stats.purge(ev.name, rec["event"], ev.cause, n)
            del r.purge_log[:-100]
            if isinstance(ev, PvdDetached) and ev.name not in r.registry:
                r.health.forget(ev.name)
        elif isinstance(ev, PvdAttached):
            rec["cause"] = ev.cause
        elif isinstance(ev, PvdChanged):
            rec["what"] = ev.what
        out.append(rec)
    return out


def _cancel_tag(r: Resolver, tag: int, now: float, again: Pvd | None = None) -> tuple[int, int]:
    """Cancel the transactions of ``tag``. ``again``: the PvD, still attached under a new
    tag (its servers or domains changed): the clients' questions that still route to it are
    asked again there, not failed. (cancelled, questions asked again)"""
    doomed = [t for k, t in r.inflight.items() if k[0] == tag]
    doomed += [t for t in r._probes.values() if t.tag == tag]
    reasked = 0
    for txn in doomed:
        movers: list[Resolution] = []
        if again is not None and again.attached and again.tag != tag:
            for w in txn.waiters:
                if (
                    type(w) is Resolution
                    and not w.done
                    and any(c.pvd == again.name for c in r.router.route(w.key[0]).candidates)
                ):
                    movers.append(w)
            if movers:
                txn.waiters = [w for w in txn.waiters if w not in movers]
        txn.cancel()
        completion.complete(r, txn, now)
        if movers and again is not None:
            reasked += len(movers)
            _reask(r, again, txn, movers, now)
    return len(doomed), reasked


def _reask(r: Resolver, pvd: Pvd, old: Transaction, movers: list[Resolution], now: float) -> None:
    key: Key = (old.qname, old.qtype, old.qclass, old.do | (old.cd << 1))
    txn = r.inflight.get((pvd.tag, key))
    if txn is None and (
        len(r.inflight) >= r.settings.max_inflight or (txn := r._launch(pvd, key, now)) is None
    ):
        for res in movers:  # as if the old transaction had failed
            completion.deliver(r, res, old, pvd.name, None, "PvD changed", now)
        return
    for res in movers:
        res.pending[res.pending.index(old)] = txn
        txn.waiters.append(res)


def cancel_all(r: Resolver, now: float) -> int:
    """The daemon is stopping: end every transaction and every resolution still waiting, so
    each client gets an answer now (SERVFAIL, or what the other candidates gave) instead of
    silence until its own timeout. Returns the transactions cancelled."""
    doomed = list(r.inflight.values()) + list(r._probes.values())
    for txn in doomed:
        txn.cancel()
        completion.complete(r, txn, now)
    for _, _, obj in list(r._timers):  # negative answers waiting (bounded) for a better one
        if type(obj) is Resolution and not obj.done:
            completion.finish_negative_or_fail(r, obj, now)
    return len(doomed)
