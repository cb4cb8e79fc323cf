"""Which PvDs exist, which are attached, and which cache partition each one owns.

Theory of operation
-------------------
A PvD is *attached* while it is configured, not administratively detached, and its link is
usable (the netlink adapter says so; without netlink every link counts as usable). Only
attached PvDs are routed to.

Every PvD owns one cache partition, named by an integer *tag*. The tag is replaced whenever
what was learned through the PvD may no longer hold: on detach, on a change of servers, domains
or networks, on a flush, on entering or leaving the captive state. The old tag comes back in the
event so the resolver can drop that partition and cancel that tag's transactions; a transaction
that completes under a tag that is no longer current is discarded. Nothing is inferred from answers:
the tag is set by whoever fetched the answer.

Methods never call back: they return a list of events, which the caller drains in one place
(STYLE.md habit 2).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from .pvd import CaptiveState, IPNetwork, Pvd, PvdSpec


@dataclass(frozen=True, slots=True)
class PvdAttached:
    name: str
    tag: int
    cause: str


@dataclass(frozen=True, slots=True)
class PvdDetached:
    name: str
    old_tag: int
    cause: str


@dataclass(frozen=True, slots=True)
class PvdPurged:
    """The PvD stays attached but everything learned under ``old_tag`` must go."""

    name: str
    old_tag: int
    cause: str


@dataclass(frozen=True, slots=True)
class PvdChanged:
    """Routing-relevant attributes changed (domains, captive state, NAT64 prefixes...)."""

    name: str
    what: str


Event = PvdAttached | PvdDetached | PvdPurged | PvdChanged


class RegistryError(KeyError):
    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "registry error"


class Registry:
    def __init__(self) -> None:
        self._pvds: dict[str, Pvd] = {}
        self._tags = itertools.count(1)
        self.version = 0  # bumped on every change that can alter routing

    # ------------------------------------------------------------------ queries
    def __iter__(self) -> Iterator[Pvd]:
        return iter(list(self._pvds.values()))

    def __contains__(self, name: object) -> bool:
        return name in self._pvds

    def __len__(self) -> int:
        return len(self._pvds)

    def get(self, name: str) -> Pvd:
        try:
            return self._pvds[name]
        except KeyError:
            raise RegistryError(f"no PvD named {name!r}") from None

    def find(self, name: str) -> Pvd | None:
        return self._pvds.get(name)

    def attached(self) -> list[Pvd]:
        return [p for p in self._pvds.values() if p.attached]

    def on_interface(self, ifname: str) -> list[Pvd]:
        return [p for p in self._pvds.values() if p.spec.interface == ifname]

    def tag_owner(self, tag: int) -> Pvd | None:
        for p in self._pvds.values():
            if p.tag == tag:
                return p
        return None

    # ------------------------------------------------------------------ changes
    def add(self, spec: PvdSpec, *, now: float, link_up: bool = True) -> list[Event]:
        if spec.name in self._pvds:
            raise RegistryError(f"a PvD named {spec.name!r} already exists")
        pvd = Pvd(spec=spec, tag=next(self._tags), link_up=link_up)
        self._pvds[spec.name] = pvd
        self.version += 1
        if pvd.attached:
            pvd.attached_since = now
            return [PvdAttached(spec.name, pvd.tag, f"added ({spec.origin})")]
        return []

    def upsert(self, spec: PvdSpec, *, now: float, link_up: bool | None = None) -> list[Event]:
        """Add a PvD, or replace the spec of an existing one (purging it if answers may change)."""
        pvd = self._pvds.get(spec.name)
        if pvd is None:
            return self.add(spec, now=now, link_up=True if link_up is None else link_up)
        old = pvd.spec
        was = pvd.attached
        pvd.spec = spec
        self.version += 1
        events: list[Event] = []
        if old.resolution_changed(spec):
            if old.interface != spec.interface and link_up is not None:
                pvd.link_up = link_up  # a new interface: its link state, not the old one's
                pvd.link_prefixes = ()
            if spec.dns64 != old.dns64:
                pvd.nat64_prefixes = ()
            if was and pvd.attached:
                events.append(self._retag(pvd, "servers, domains or networks changed"))
            elif not was:
                pvd.tag = next(self._tags)
            # moved to an interface whose link is down (or up): detached (attached) like any
            # link change, with its events: the partition goes, the probes start
            link = "usable" if pvd.link_up else "not usable"
            events += self._after_state_change(
                pvd, was, now=now, cause=f"moved to {spec.interface} (link {link})"
            )
        else:
            events.append(PvdChanged(spec.name, "settings"))
        return events

    def remove(self, name: str, *, cause: str = "removed") -> list[Event]:
        pvd = self.get(name)
        del self._pvds[name]
        self.version += 1
        return [PvdDetached(name, pvd.tag, cause)]  # also when detached: its partition goes

    def admin_detach(self, name: str) -> list[Event]:
        pvd = self.get(name)
        if pvd.admin_down:
            return []
        was = pvd.attached
        pvd.admin_down = True
        return self._after_state_change(pvd, was, now=None, cause="detached by operator")

    def admin_attach(self, name: str, *, now: float) -> list[Event]:
        pvd = self.get(name)
        was = pvd.attached
        pvd.admin_down = False
        return self._after_state_change(pvd, was, now=now, cause="attached by operator")

    def set_link(
        self,
        ifname: str,
        *,
        up: bool | Mapping[str, bool],
        prefixes: tuple[IPNetwork, ...] | None = None,
        now: float,
        cause: str = "",
        causes: Mapping[str, str] | None = None,
    ) -> list[Event]:
        """The netlink adapter reports the state of ``ifname``: usable or not (for every PvD
        on it, or per PvD name: a link with only an IPv4 address serves no PvD whose servers
        are IPv6), why (``cause``, or per PvD ``causes``), and its prefixes."""
        events: list[Event] = []
        for pvd in self.on_interface(ifname):
            was = pvd.attached
            changed_prefixes = prefixes is not None and prefixes != pvd.link_prefixes
            usable = up if isinstance(up, bool) else up.get(pvd.name, False)
            pvd.link_up = usable
            if prefixes is not None:
                pvd.link_prefixes = prefixes
            if changed_prefixes:
                self.version += 1
            reason = (
                cause
                or (causes or {}).get(pvd.name)
                or (f"link {ifname} usable" if usable else f"link {ifname} not usable")
            )
            events += self._after_state_change(pvd, was, now=now, cause=reason)
            if changed_prefixes and was == pvd.attached:
                events.append(PvdChanged(pvd.name, "networks"))
        return events

    def purge(self, name: str, *, cause: str) -> list[Event]:
        pvd = self.get(name)
        return [self._retag(pvd, cause)]

    def set_captive(self, name: str, state: CaptiveState) -> list[Event]:
        pvd = self.get(name)
        if pvd.captive == state:
            return []
        old = pvd.captive
        pvd.captive = state
        self.version += 1
        events: list[Event] = [PvdChanged(name, f"captive {old.value} -> {state.value}")]
        if old == CaptiveState.CAPTIVE:
            events.append(self._retag(pvd, f"left captive state ({state.value})"))
        elif state == CaptiveState.CAPTIVE and pvd.attached:
            # what was cached before the portal was noticed (right after the attach, or after
            # a session expired while open) may be its lies, stored as ordinary answers
            events.append(self._retag(pvd, f"entered captive state (was {old.value})"))
        return events

    def set_nat64(self, name: str, prefixes: tuple[IPNetwork, ...]) -> list[Event]:
        pvd = self.get(name)
        if pvd.nat64_prefixes == prefixes:
            return []
        had = pvd.nat64_prefixes
        pvd.nat64_prefixes = prefixes
        self.version += 1
        events: list[Event] = [PvdChanged(name, "nat64 prefixes")]
        # what the partition holds was marked under the old prefixes (an AAAA inside a NAT64
        # prefix is "synthesized"): answers cached before the first prefix was discovered
        # would stay "positive" and beat a native AAAA from a tied PvD. Detached: a detach
        # already gave it a new, empty partition.
        if pvd.attached:
            events.append(self._retag(pvd, "NAT64 prefix changed" if had else "NAT64 prefix found"))
        return events

    # ------------------------------------------------------------------ internals
    def _retag(self, pvd: Pvd, cause: str) -> PvdPurged:
        old = pvd.tag
        pvd.tag = next(self._tags)
        self.version += 1
        return PvdPurged(pvd.name, old, cause)

    def _after_state_change(
        self, pvd: Pvd, was_attached: bool, *, now: float | None, cause: str
    ) -> list[Event]:
        if was_attached == pvd.attached:
            return []
        self.version += 1
        if pvd.attached:
            pvd.attached_since = now
            return [PvdAttached(pvd.name, pvd.tag, cause)]
        old = pvd.tag
        pvd.tag = next(self._tags)  # whatever was learned before the detach never comes back
        pvd.attached_since = None
        return [PvdDetached(pvd.name, old, cause)]
