"""Which PvDs a question goes to, with a grade and a reason for each.

Theory of operation
-------------------
A :class:`RouteTable` is compiled from the registry whenever ``registry.version`` moves. It maps
*wire-format name suffixes* (lower case, e.g. ``b"\\x04corp\\x07example\\x00"``) to a prebuilt,
immutable :class:`Decision`. Routing a question walks the suffixes of its name from the longest
to the root (each suffix of a wire name is itself a wire name: no copying of labels, no parsing)
and returns the first decision found, or the default-route decision. On the hot path that is a
handful of slices and dict lookups and no allocation beyond them.

Grades (what ``Candidate.grade`` means):
- ``n >= 1``: a routing or search domain of the PvD matched with ``n`` labels, or the question is a
  reverse name inside one of the PvD's networks, whose reverse zone has ``n`` labels (for a prefix
  that is not on an octet/nibble boundary, the zones of the next boundary that cover it);
- ``0``: no domain matched; the PvD is a default route (``default_route``, or ``~.``).
Higher grade wins; PvDs tied at the best grade are all candidates.

Rules, in the order they apply:
1. Special-use names answered locally, never forwarded (RFC 6761, RFC 7686, RFC 8880):
   ``localhost``/``*.localhost``, ``invalid``, ``onion``, ``ipv4only.arpa`` (A only: its AAAA goes
   to the attached PvDs with DNS64 configured, default routes first, as NAT64 discovery needs, and
   is NODATA when there is none; see ``RouteTable.ipv4only``). They win over any PvD domain.
2. The longest suffix that has an exclusive PvD or an attached PvD decides. Besides domains and
   networks, a PvD claims the reverse zones of its NAT64 prefixes (PTR of synthesized addresses)
   and, while it is captive, its ``captive_domains`` and its portal's own host names (the API
   URI's host and the user-portal-url's, ``Router.set_portal_hosts``). If an exclusive PvD
   holds it, only attached exclusive PvDs at that suffix are candidates; if none is attached the
   question is refused (SERVFAIL + Extended DNS Error), so the name never leaks elsewhere.
   Detached non-exclusive PvDs are invisible: the walk goes on to shorter suffixes.
3. The reverse zones of private, loopback, link-local and documentation ranges (RFC 6303) are
   answered locally (NXDOMAIN) unless a PvD claims them or a parent of them.
4. Otherwise the attached default-route PvDs are candidates. Captive PvDs are left out while a
   non-captive default route exists (their answers are lies for general names).
5. No candidate at all: SERVFAIL with an Extended DNS Error (22, "No Reachable Authority").
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from .pvd import CaptiveState, IPNetwork, Pvd
from .registry import Registry

# Extended DNS Error codes (RFC 8914) used here
EDE_PROHIBITED = 18
EDE_NO_REACHABLE_AUTHORITY = 22


@dataclass(frozen=True, slots=True)
class Candidate:
    pvd: str
    grade: int
    reason: str
    tag: int = 0  # the PvD's cache partition when the table was built


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with a question. Exactly one of the three shapes:

    - ``local`` set: answer locally; the value names the rule (``localhost``, ``invalid``,
      ``onion``, ``ipv4only``, ``rfc6303 ZONE``);
    - ``candidates`` non-empty: ask these PvDs (all tied at the best grade);
    - neither: refuse with SERVFAIL and the Extended DNS Error ``ede`` (code, text).
    """

    candidates: tuple[Candidate, ...] = ()
    local: str | None = None
    ede: tuple[int, str] | None = None
    zone: bytes = b"\x00"  # the matched suffix (wire), for locally answered zones

    def to_json(self) -> dict[str, object]:
        return {
            "candidates": [
                {"pvd": c.pvd, "grade": c.grade, "reason": c.reason} for c in self.candidates
            ],
            "local": self.local,
            "refused": None if self.ede is None else self.ede[1],
        }


def wire_name(text: str) -> bytes:
    """``corp.example`` -> ``b"\\x04corp\\x07example\\x00"`` (lower case)."""
    text = text.strip().rstrip(".").lower()
    if not text:
        return b"\x00"
    out = bytearray()
    for label in text.split("."):
        raw = label.encode("ascii")
        out.append(len(raw))
        out += raw
    out.append(0)
    return bytes(out)


def wire_to_text(name: bytes) -> str:
    labels = []
    i = 0
    while i < len(name) and name[i]:
        n = name[i]
        labels.append(name[i + 1 : i + 1 + n].decode("ascii", "backslashreplace"))
        i += 1 + n
    return ".".join(labels) + "."


def label_count(name: bytes) -> int:
    count = 0
    i = 0
    while i < len(name) and name[i]:
        count += 1
        i += 1 + name[i]
    return count


def reverse_zones(net: IPNetwork) -> list[str]:
    """The reverse zones that exactly cover ``net``: one zone on an octet (IPv4) or nibble (IPv6)
    boundary, or the zones of the next boundary when the prefix length falls between two."""
    step = 8 if net.version == 4 else 4
    boundary = -(-net.prefixlen // step) * step  # round up
    if boundary - net.prefixlen > 7:  # never expands past 128 zones
        boundary = net.prefixlen - net.prefixlen % step
    subnets: Iterable[IPNetwork] = (
        net.subnets(new_prefix=boundary) if boundary > net.prefixlen else [net]
    )
    zones = []
    for sub in subnets:
        ptr = sub.network_address.reverse_pointer  # full-length reverse name
        labels = ptr.split(".")
        keep = boundary // step  # address labels that belong to the zone
        suffix_len = 2  # in-addr.arpa / ip6.arpa
        total_addr_labels = len(labels) - suffix_len
        zones.append(".".join(labels[total_addr_labels - keep :]))
    return zones


# RFC 6303 (plus RFC 7793 and the documentation ranges): answered locally unless a PvD claims them.
_RFC6303_NETS = [
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "0.0.0.0/8",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "192.0.2.0/24",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "255.255.255.255/32",
    "100.64.0.0/10",
    "::/128",
    "::1/128",
    "fd00::/8",
    "fe80::/10",
    "2001:db8::/32",
]
RFC6303_ZONES: tuple[str, ...] = tuple(
    z for n in _RFC6303_NETS for z in reverse_zones(ipaddress.ip_network(n))
)
ALWAYS_LOCAL: dict[str, str] = {
    "localhost": "localhost",
    "invalid": "invalid",
    "onion": "onion",
    "ipv4only.arpa": "ipv4only",
}


class RouteTable:
    """Compiled routing state for one registry version. Immutable once built."""

    def __init__(
        self, registry: Registry, portal_hosts: dict[str, tuple[str, ...]] | None = None
    ) -> None:
        self.version = registry.version
        self._map: dict[bytes, Decision] = {}
        self._portal_hosts = portal_hosts or {}
        self._default = self._build_default(registry)
        self._ipv4only_aaaa = self._build_ipv4only(registry)
        self._build(registry)

    def ipv4only(self, qtype: int, exact: bool) -> Decision:
        """Where a non-A question under ``ipv4only.arpa`` goes (``exact``: the name itself).
        AAAA of the name: the PvDs with DNS64 (answered locally with NODATA when there is none);
        other types keep going to the default routes."""
        if qtype == 28 and exact:
            return self._ipv4only_aaaa
        return self._default

    def _build_ipv4only(self, registry: Registry) -> Decision:
        dns64 = [p for p in registry.attached() if p.spec.dns64.prefix != "none"]
        if not dns64:
            return Decision(local="ipv4only", zone=wire_name("ipv4only.arpa"))
        defaults = [p for p in dns64 if _is_default_route(p)] or dns64
        return Decision(
            candidates=tuple(
                Candidate(p.name, 0, f"DNS64 ({p.spec.dns64.prefix}): RFC 7050 discovery", p.tag)
                for p in sorted(defaults, key=lambda p: p.name)
            )
        )

    # ------------------------------------------------------------------ the hot path
    def route(self, key: bytes) -> Decision:
        """Route a lower-case wire name (as in ``wire.Query.key``)."""
        get = self._map.get
        pos = 0
        n = len(key)
        while pos < n:
            length = key[pos]
            if length == 0:
                break
            found = get(key[pos:] if pos else key)
            if found is not None:
                return found
            pos += length + 1
        return self._default

    @property
    def default(self) -> Decision:
        return self._default

    def suffixes(self) -> list[tuple[bytes, Decision]]:
        """Every suffix ``route`` looks up, with its decision (the miss lane walks the same)."""
        return list(self._map.items())

    # ------------------------------------------------------------------ building
    def _build_default(self, registry: Registry) -> Decision:
        # an exclusive PvD holding "~." owns every name no domain claims (a full-tunnel VPN,
        # `resolvconf -x`): only it is asked, and nothing is asked while it is detached
        owners = [p for p in registry if p.spec.exclusive and _has_root(p)]
        if owners:
            live = [p for p in owners if p.attached]
            if not live:
                names = ", ".join(sorted(p.name for p in owners))
                return Decision(
                    ede=(EDE_NO_REACHABLE_AUTHORITY, f"exclusive default route {names} is detached")
                )
            return Decision(
                candidates=tuple(
                    Candidate(p.name, 0, "exclusive default route (~.)", p.tag)
                    for p in sorted(live, key=lambda p: p.name)
                )
            )
        defaults = [p for p in registry.attached() if _is_default_route(p)]
        open_defaults = [p for p in defaults if p.captive != CaptiveState.CAPTIVE]
        chosen = open_defaults or defaults
        if not chosen:
            return Decision(ede=(EDE_NO_REACHABLE_AUTHORITY, "no attached PvD is a default route"))
        cands = []
        for p in sorted(chosen, key=lambda p: p.name):
            reason = "default route"
            if p.captive == CaptiveState.CAPTIVE:
                reason += " (captive, no other default route)"
            cands.append(Candidate(p.name, 0, reason, p.tag))
        return Decision(candidates=tuple(cands))

    def _build(self, registry: Registry) -> None:
        # suffix -> list of (pvd, reason) for every PvD that claims it, attached or not
        claims: dict[bytes, list[tuple[Pvd, str]]] = {}
        for pvd in registry:
            for dom in pvd.spec.domains:
                if not dom.name:
                    continue  # "~." is handled as a default route
                kind = "routing domain" if dom.routing_only else "domain"
                claims.setdefault(wire_name(dom.name), []).append((pvd, f"{kind} {dom.name}"))
            for net in pvd.networks:
                for zone in reverse_zones(net):
                    claims.setdefault(wire_name(zone), []).append(
                        (pvd, f"network {net} (reverse zone {zone})")
                    )
            for prefix in pvd.nat64_prefixes:
                for zone in reverse_zones(prefix):
                    claims.setdefault(wire_name(zone), []).append(
                        (pvd, f"NAT64 prefix {prefix} (reverse zone {zone})")
                    )
            if pvd.captive == CaptiveState.CAPTIVE:
                for dom in pvd.spec.captive_domains:
                    if dom.name:
                        claims.setdefault(wire_name(dom.name), []).append(
                            (pvd, f"captive portal domain {dom.name}")
                        )
                for host in _portal_hosts(pvd, self._portal_hosts.get(pvd.name, ())):
                    claims.setdefault(wire_name(host), []).append(
                        (pvd, f"captive portal host {host}")
                    )
        for suffix, owners in claims.items():
            decision = self._decide(suffix, owners)
            if decision is not None:
                self._map[suffix] = decision
        # RFC 6303 zones no PvD claims (neither the zone nor a parent of it)
        claimed = set(claims)
        for zone in RFC6303_ZONES:
            wz = wire_name(zone)
            if wz in self._map or any(_is_suffix(c, wz) for c in claimed):
                continue
            self._map[wz] = Decision(local=f"rfc6303 {zone}", zone=wz)
        for name, rule in ALWAYS_LOCAL.items():
            wz = wire_name(name)
            self._map[wz] = Decision(local=rule, zone=wz)
        # special-use names win over PvD domains *below* them as well
        for suffix in list(self._map):
            for name in ALWAYS_LOCAL:
                wz = wire_name(name)
                if suffix != wz and _is_suffix(wz, suffix) and name != "ipv4only.arpa":
                    self._map[suffix] = self._map[wz]

    @staticmethod
    def _decide(suffix: bytes, owners: list[tuple[Pvd, str]]) -> Decision | None:
        grade = label_count(suffix)
        exclusive = [(p, r) for p, r in owners if p.spec.exclusive]
        if exclusive:
            live = [(p, r) for p, r in exclusive if p.attached]
            if not live:
                names = ", ".join(sorted({p.name for p, _ in exclusive}))
                return Decision(
                    ede=(
                        EDE_NO_REACHABLE_AUTHORITY,
                        (
                            f"{wire_to_text(suffix)} belongs to exclusive PvD {names}, "
                            "which is detached"
                        ),
                    )
                )
            chosen = live
        else:
            chosen = [(p, r) for p, r in owners if p.attached]
            if not chosen:
                return None
        seen: dict[str, Candidate] = {}
        for p, r in sorted(chosen, key=lambda pr: pr[0].name):
            seen.setdefault(p.name, Candidate(p.name, grade, r, p.tag))
        return Decision(candidates=tuple(seen.values()))


def _portal_hosts(pvd: Pvd, learned: tuple[str, ...]) -> list[str]:
    """The portal's own host names: the configured API URI's host, and those learned from the
    API (user-portal-url); IP literals and bad names are left out."""
    hosts = list(learned)
    if pvd.spec.captive_portal:
        try:
            host = urlsplit(pvd.spec.captive_portal).hostname
        except ValueError:
            host = None
        if host:
            hosts.insert(0, host)
    out = []
    for host in hosts:
        host = host.rstrip(".").lower()
        try:
            ipaddress.ip_address(host)
            continue
        except ValueError:
            pass
        labels = host.split(".")
        if host and host not in out and all(0 < len(lab) < 64 and lab.isascii() for lab in labels):
            out.append(host)
    return out


def _has_root(pvd: Pvd) -> bool:
    return any(d.routing_only and not d.name for d in pvd.spec.domains)


def _is_default_route(pvd: Pvd) -> bool:
    return pvd.spec.effective_default_route or _has_root(pvd)


def _is_suffix(parent: bytes, child: bytes) -> bool:
    """True if wire name ``parent`` equals ``child`` or is an ancestor of it (label-aligned)."""
    if parent == child:
        return True
    pos = 0
    while pos < len(child) and child[pos]:
        pos += child[pos] + 1
        if child[pos:] == parent:
            return True
    return False


class Router:
    """Keeps a RouteTable current with the registry (rebuilt lazily when its version moves)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.portal_hosts: dict[str, tuple[str, ...]] = {}  # learned: PvD name -> host names
        self._table = RouteTable(registry)

    def set_portal_hosts(self, pvd: str, hosts: tuple[str, ...]) -> None:
        """Host names of ``pvd``'s captive portal learned at run time (from its API)."""
        if hosts:
            self.portal_hosts[pvd] = hosts
        else:
            self.portal_hosts.pop(pvd, None)
        self._table = RouteTable(self.registry, self.portal_hosts)

    @property
    def table(self) -> RouteTable:
        if self._table.version != self.registry.version:
            self._table = RouteTable(self.registry, self.portal_hosts)
        return self._table

    def route(self, key: bytes) -> Decision:
        table = self._table
        if table.version != self.registry.version:
            table = self.table
        return table.route(key)
