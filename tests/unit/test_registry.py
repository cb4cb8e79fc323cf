"""The PvD registry's promises, checked over random sequences of lifecycle changes.

Whatever the order of adds, spec changes, removals, link and operator detaches, flushes,
captive-state and NAT64 changes:
- every PvD owns a tag no other PvD has, and a tag once given up is never seen again (answers
  learned under it can never come back);
- a detach, a purge, a resolution-changing spec change and leaving the captive state each
  give up the old tag, and the event that says so names it;
- attached/detached events match the PvD's state change exactly;
- the version moves on every change the resolver's memo depends on (routing, tags, state).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from mifdns.core.pvd import CaptiveState
from mifdns.core.registry import (
    PvdAttached,
    PvdChanged,
    PvdDetached,
    PvdPurged,
    Registry,
    RegistryError,
)

from .coredriver import spec

NAMES = ("wifi", "corp", "cell")
IFACES = ("wlan0", "tun0", "wwan0")
SERVERS = (("192.0.2.53",), ("198.51.100.53",), ("203.0.113.53", "192.0.2.54"))
DOMAINS = ((), ("corp.example",), ("~lab.example", "home.example"))
NAT64 = ((), (ipaddress.ip_network("64:ff9b::/96"),), (ipaddress.ip_network("2001:db8:64::/96"),))


@dataclass
class Seen:
    tag: int
    attached: bool


class RegistryMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.reg = Registry()
        self.now = 0.0
        self.retired: set[int] = set()
        self.seen: dict[str, Seen] = {}

    # ------------------------------------------------------------------ helpers
    def _do(self, change, *, moves: bool | None = None) -> list:
        """Apply ``change`` (a callable returning events) and check the events against what
        changed. ``moves``: whether the version must move (None: whenever anything changed)."""
        before = {
            p.name: (p.tag, p.attached, p.spec, p.captive, p.nat64_prefixes) for p in self.reg
        }
        version = self.reg.version
        self.now += 1
        try:
            events = change()
        except RegistryError:
            assert {
                p.name: (p.tag, p.attached, p.spec, p.captive, p.nat64_prefixes) for p in self.reg
            } == before  # a refused change changes nothing
            assert self.reg.version == version
            return []
        after = {p.name: (p.tag, p.attached) for p in self.reg}
        changed = before.keys() != after.keys() or any(
            (p.tag, p.attached, p.spec, p.captive, p.nat64_prefixes) != before[p.name]
            for p in self.reg
        )
        if moves is None:
            moves = changed
        if moves:
            assert self.reg.version > version
        for ev in events:
            if isinstance(ev, PvdDetached | PvdPurged):
                old = before[ev.name][0]
                assert ev.old_tag == old  # the event names the tag given up
                assert after.get(ev.name, (None,))[0] != old
            if isinstance(ev, PvdAttached):
                assert not before.get(ev.name, (0, False, 0, 0, 0))[1] and after[ev.name][1]
                assert ev.tag == after[ev.name][0]
        for name, (tag, attached) in after.items():
            was = before.get(name)
            if was is None:
                continue
            if was[1] and not attached:  # detached: one event, and the old tag is gone
                assert [e for e in events if isinstance(e, PvdDetached) and e.name == name], events
                assert tag != was[0]
            if attached and not was[1]:
                assert [e for e in events if isinstance(e, PvdAttached) and e.name == name]
            if tag != was[0]:
                self.retired.add(was[0])
        for name in before.keys() - after.keys():  # removed: its partition goes too
            assert [e for e in events if isinstance(e, PvdDetached) and e.name == name]
            self.retired.add(before[name][0])
        return events

    # ------------------------------------------------------------------ rules
    @rule(i=st.integers(0, 2), s=st.integers(0, 2), d=st.integers(0, 2), up=st.booleans())
    def add(self, i: int, s: int, d: int, up: bool) -> None:
        sp = spec(NAMES[i], IFACES[i], servers=SERVERS[s], domains=DOMAINS[d])
        self._do(lambda: self.reg.add(sp, now=self.now, link_up=up))

    @rule(
        i=st.integers(0, 2),
        j=st.integers(0, 2),
        s=st.integers(0, 2),
        d=st.integers(0, 2),
        excl=st.booleans(),
    )
    def upsert(self, i: int, j: int, s: int, d: int, excl: bool) -> None:
        sp = spec(NAMES[i], IFACES[j], servers=SERVERS[s], domains=DOMAINS[d], exclusive=excl)
        old = self.reg.find(NAMES[i])
        old_spec, was_attached = (old.spec, old.attached) if old is not None else (None, False)
        events = self._do(lambda: self.reg.upsert(sp, now=self.now, link_up=True))
        if old_spec is not None and was_attached:
            purged = [e for e in events if isinstance(e, PvdPurged)]
            # answers learned through other servers, domains or networks must go; the rest stay
            assert bool(purged) == old_spec.resolution_changed(sp), (old_spec, sp, events)

    @rule(i=st.integers(0, 2))
    def remove(self, i: int) -> None:
        self._do(lambda: self.reg.remove(NAMES[i]))

    @rule(i=st.integers(0, 2))
    def admin_detach(self, i: int) -> None:
        self._do(lambda: self.reg.admin_detach(NAMES[i]))

    @rule(i=st.integers(0, 2))
    def admin_attach(self, i: int) -> None:
        self._do(lambda: self.reg.admin_attach(NAMES[i], now=self.now))

    @rule(
        i=st.integers(0, 2),
        up=st.booleans(),
        prefixes=st.sampled_from([None, (), (ipaddress.ip_network("10.8.0.0/16"),)]),
    )
    def set_link(self, i: int, up: bool, prefixes) -> None:
        self._do(lambda: self.reg.set_link(IFACES[i], up=up, prefixes=prefixes, now=self.now))

    @rule(i=st.integers(0, 2))
    def purge(self, i: int) -> None:
        events = self._do(lambda: self.reg.purge(NAMES[i], cause="flush"))
        assert len(events) in (0, 1)

    @rule(i=st.integers(0, 2), state=st.sampled_from(list(CaptiveState)))
    def set_captive(self, i: int, state: CaptiveState) -> None:
        before = self.reg.find(NAMES[i])
        was_captive = before is not None and before.captive == CaptiveState.CAPTIVE
        events = self._do(lambda: self.reg.set_captive(NAMES[i], state))
        if was_captive and state != CaptiveState.CAPTIVE:  # what the portal said must go
            assert [e for e in events if isinstance(e, PvdPurged)]

    @rule(i=st.integers(0, 2), k=st.integers(0, 2))
    def set_nat64(self, i: int, k: int) -> None:
        self._do(lambda: self.reg.set_nat64(NAMES[i], NAT64[k]))

    # ------------------------------------------------------------------ invariants
    @invariant()
    def tags_are_unique_and_never_come_back(self) -> None:
        tags = [p.tag for p in self.reg]
        assert len(tags) == len(set(tags))
        assert not set(tags) & self.retired


RegistryMachine.TestCase.settings = settings(
    max_examples=300, stateful_step_count=40, deadline=None
)
TestRegistry = RegistryMachine.TestCase


def test_a_resolution_change_while_attached_purges_and_a_settings_change_does_not():
    reg = Registry()
    reg.add(spec("corp", "tun0", domains=["corp.example"]), now=0)
    tag = reg.get("corp").tag
    (ev,) = reg.upsert(spec("corp", "tun0", domains=["corp.example"], exclusive=True), now=1)
    assert isinstance(ev, PvdChanged) and reg.get("corp").tag == tag  # answers still hold
    (ev,) = reg.upsert(
        spec("corp", "tun0", servers=["198.51.100.53"], domains=["corp.example"]), now=2
    )
    assert isinstance(ev, PvdPurged) and ev.old_tag == tag and reg.get("corp").tag != tag


def test_set_link_per_pvd_detaches_only_those_it_cannot_serve():
    reg = Registry()
    reg.add(spec("v4", "eth0"), now=0)
    reg.add(spec("v6", "eth0", servers=["2001:db8::53"]), now=0)
    events = reg.set_link(
        "eth0",
        up={"v4": True, "v6": False},
        now=1,
        causes={"v6": "link eth0 has no IPv6 address (the PvD's servers are IPv6)"},
    )
    (ev,) = events
    assert isinstance(ev, PvdDetached) and ev.name == "v6" and "no IPv6 address" in ev.cause
    assert reg.get("v4").attached and not reg.get("v6").attached
    (ev,) = reg.set_link("eth0", up={"v4": True, "v6": True}, now=2)
    assert isinstance(ev, PvdAttached) and ev.cause == "link eth0 usable"


def test_entering_captive_purges_an_attached_pvd_and_leaving_it_too():
    reg = Registry()
    reg.add(spec("wifi", "wlan0"), now=0)
    tag = reg.get("wifi").tag
    changed, purged = reg.set_captive("wifi", CaptiveState.CAPTIVE)
    assert isinstance(changed, PvdChanged) and isinstance(purged, PvdPurged)
    assert purged.old_tag == tag and "entered captive state" in purged.cause
    assert isinstance(reg.set_captive("wifi", CaptiveState.OPEN)[1], PvdPurged)
    reg.admin_detach("wifi")
    (only,) = reg.set_captive("wifi", CaptiveState.CAPTIVE)  # detached: nothing to purge
    assert isinstance(only, PvdChanged)
