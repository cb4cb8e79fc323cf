"""The resolver's two promises, checked over random sequences of queries and lifecycle changes.

Each PvD's fake servers answer every name with an address that says which PvD answered and
in which *generation*: the generation moves whenever the PvD detaches, is purged, flushed or
re-attached, so an answer that carries an old generation was learned before and must never be
served again. Whatever happens in between (hits from the cache and the answer memo, time
passing, ties between PvDs, detaches, re-attaches, purges):
- every answer comes from a PvD the name is routed to at that moment (never across PvDs);
- every answer comes from its PvD's current generation (nothing outlives a detach or purge);
- the UDP listeners' ready table holds nothing that breaks either promise while it is valid.
"""

from __future__ import annotations

import dns.message
import dns.rcode
import dns.rrset
import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, rule

from .coredriver import Driver, World, spec

PVDS = ("wifi", "corp", "lab")
NAMES = (
    "www.example.com",
    "intranet.corp.example",
    "git.lab.example",
    "nx.corp.example",
    "api.example.com",
    "nx.example.com",
    "x.git.lab.example",
)


class GenerationWorld(World):
    """Answers any A question with 10.<pvd>.<generation>.1 (names starting nx: NXDOMAIN)."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index
        self.generation = 0

    def respond(self, query_wire: bytes, tcp: bool) -> bytes | None:
        q = dns.message.from_wire(query_wire)
        r = dns.message.make_response(q)
        name = q.question[0].name
        if name.labels[0].startswith(b"nx"):
            r.set_rcode(dns.rcode.NXDOMAIN)
            r.authority.append(self._soa())
        else:
            r.answer.append(
                dns.rrset.from_text(
                    name, self.ttl, "IN", "A", f"10.{self.index}.{self.generation % 256}.1"
                )
            )
        return r.to_wire()


class ResolverMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.d = Driver(
            [
                spec("wifi", "wlan0"),
                spec("corp", "tun0", servers=["198.51.100.53"], domains=["~corp.example"]),
                spec(
                    "lab", "eth9", servers=["203.0.113.53"], domains=["lab.example", "~example.com"]
                ),  # ties with wifi on example.com
            ]
        )
        for i, name in enumerate(PVDS):
            self.d.worlds[name] = GenerationWorld(i)
            self.d.worlds[name].ttl = 5
        self.table = self.d.resolver.ready_table(65494)

    def _new_generation(self, name: str) -> None:
        self.d.worlds[name].generation += 1

    def _check_answer(self, qname: str, msg: dns.message.Message, allowed: set[str]) -> None:
        for rrset in msg.answer:
            for rd in rrset:
                _, pvd_i, gen, _ = str(rd).split(".")
                pvd = PVDS[int(pvd_i)]
                assert pvd in allowed, (qname, pvd, allowed)  # never across PvDs
                current = self.d.worlds[pvd].generation % 256
                assert int(gen) == current, (qname, pvd, gen, current)  # nothing stale

    # ------------------------------------------------------------------ rules
    @rule(i=st.integers(0, len(NAMES) - 1))
    def query(self, i: int) -> None:
        name = NAMES[i]
        routed = self.d.resolver.explain(name)
        allowed = {c["pvd"] for c in routed["candidates"]}
        msg = self.d.query(name)
        assert msg is not None
        if not allowed:
            assert msg.rcode() in (dns.rcode.SERVFAIL, dns.rcode.NXDOMAIN) and not msg.answer
            return
        self._check_answer(name, msg, allowed)
        # the ready table, as a listener gets it at the start of a batch: while valid, what it
        # would replay keeps both promises
        table = self.d.resolver.ready_table(65494)
        assert table is self.table  # the same dict: listeners hold it
        for tail, until, *aging in list(table.values()):
            # a C loop replays it until "until", and ages it on until "expires" if it may
            if self.d.now < (aging[1] if aging else until):
                replay = dns.message.from_wire(b"\0\0" + tail)
                qn = replay.question[0].name.to_text().rstrip(".")
                ok = {c["pvd"] for c in self.d.resolver.explain(qn)["candidates"]}
                self._check_answer(qn, replay, ok)

    @rule(i=st.integers(0, 2))
    def detach(self, i: int) -> None:
        self.d.apply(self.d.registry.admin_detach(PVDS[i]))
        self._new_generation(PVDS[i])

    @rule(i=st.integers(0, 2))
    def attach(self, i: int) -> None:
        self.d.apply(self.d.registry.admin_attach(PVDS[i], now=self.d.now))

    @rule(i=st.integers(0, 2), up=st.booleans())
    def link(self, i: int, up: bool) -> None:
        iface = ("wlan0", "tun0", "eth9")[i]
        was = self.d.registry.get(PVDS[i]).attached
        self.d.apply(self.d.registry.set_link(iface, up=up, now=self.d.now))
        if was and not self.d.registry.get(PVDS[i]).attached:
            self._new_generation(PVDS[i])

    @rule(i=st.integers(0, 2))
    def flush(self, i: int) -> None:
        self.d.apply(self.d.registry.purge(PVDS[i], cause="flush"))
        self._new_generation(PVDS[i])

    @rule(dt=st.sampled_from([0.0, 0.3, 1.0, 2.5, 6.0]))
    def wait(self, dt: float) -> None:
        self.d.now += dt


ResolverMachine.TestCase.settings = settings(
    max_examples=200, stateful_step_count=40, deadline=None
)
TestResolverPromises = ResolverMachine.TestCase
