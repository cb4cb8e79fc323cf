"""Provisioning domains (RFC 7556): what one network attachment brings to DNS.

A :class:`PvdSpec` is the configuration of one PvD, immutable, as it comes from the config file,
``ctl attach`` or the resolvconf front end. A :class:`Pvd` is the registry's live record of it:
the spec plus what the host says about the interface (up, its prefixes), what an operator said
(administratively detached), and what was learned (NAT64 prefixes, captive state).
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass, field, replace

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class CaptiveState(str, enum.Enum):
    UNKNOWN = "unknown"
    CAPTIVE = "captive"
    OPEN = "open"


class PvdState(str, enum.Enum):
    ATTACHED = "attached"
    DETACHED = "detached"


@dataclass(frozen=True, slots=True)
class ServerAddr:
    """One upstream DNS server of a PvD.

    ``scope`` is the interface a link-local IPv6 server is reached through; it is always the
    PvD's own interface, filled in when the spec is built.
    """

    address: IPAddress
    port: int = 53
    scope: str | None = None
    host: str = field(init=False, compare=False, repr=False)  # str(address), precomputed
    family: int = field(init=False, compare=False, repr=False)
    _hash: int = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "host", self.address.compressed)
        object.__setattr__(self, "family", self.address.version)
        # hashed on every upstream answer (server health): ipaddress hashes in Python
        object.__setattr__(self, "_hash", hash((self.host, self.port, self.scope)))

    def __hash__(self) -> int:
        return self._hash

    def sockaddr(self) -> tuple[str, int]:
        return (self.host, self.port)

    def __str__(self) -> str:
        host = str(self.address)
        if self.scope and self.address.version == 6 and self.address.is_link_local:
            host = f"{host}%{self.scope}"
        if self.address.version == 6:
            return host if self.port == 53 else f"[{host}]:{self.port}"
        return host if self.port == 53 else f"{host}:{self.port}"


def split_host_port(text: str) -> tuple[str, str | None, bool]:
    """Split ``HOST``, ``HOST:PORT``, ``[HOST]`` or ``[HOST]:PORT`` into (host, port text or
    None, bracketed); raise ValueError. A bare IPv6 address (several colons) has no port."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"{text!r}: unbalanced '['")
        host, rest = text[1:end], text[end + 1 :]
        if not rest:
            return host, None, True
        if not rest.startswith(":"):
            raise ValueError(f"{text!r}: expected ':PORT' after ']'")
        return host, rest[1:], True
    if text.count(":") == 1:
        host, port = text.split(":")
        return host, port, False
    return text, None, False


def parse_port(port: str, text: str) -> int:
    """A port number 1-65535 in ASCII digits; ValueError naming ``text`` otherwise."""
    if not (port.isascii() and port.isdigit() and len(port) <= 5 and 0 < int(port) < 65536):
        raise ValueError(f"{text!r}: port must be 1-65535")
    return int(port)


def parse_server(text: str, interface: str | None = None) -> ServerAddr:
    """Parse ``ADDR``, ``ADDR:PORT``, ``[ADDR]:PORT`` or ``ADDR%IFACE``; raise ValueError."""
    text = text.strip()
    host, port_text, _ = split_host_port(text)
    port = 53 if port_text is None else parse_port(port_text, text)
    scope = None
    if "%" in host:
        host, scope = host.split("%", 1)
        if interface is not None and scope != interface:
            raise ValueError(f"{text!r}: scope %{scope} is not the PvD's interface {interface}")
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{text!r}: not an IP address") from None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped  # ::ffff:a.b.c.d is a.b.c.d (also for the loop checks)
    if addr.version == 6 and addr.is_link_local:
        scope = interface or scope
    else:
        scope = None
    return ServerAddr(addr, port, scope)


def unusable_server(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why ``addr`` cannot be a DNS server's address, or None. A query to the unspecified
    address goes to this host (through ``lo``, whatever the socket is bound to); to a multicast
    or broadcast address, to everyone on the link."""
    if addr.is_unspecified:
        return "the unspecified address"
    if addr.is_multicast:
        return "a multicast address"
    if addr == _BROADCAST:
        return "the broadcast address"
    return None


_BROADCAST = ipaddress.IPv4Address("255.255.255.255")


@dataclass(frozen=True, slots=True)
class Domain:
    """A domain of a PvD. ``routing_only`` is the ``~name`` form (routing, not search)."""

    name: str  # lower case, no trailing dot; "" is the root ("~." = default route for all names)
    routing_only: bool = False

    @classmethod
    def parse(cls, text: str) -> Domain:
        text = text.strip()
        routing_only = text.startswith("~")
        name = text[1:] if routing_only else text
        name = name.strip().rstrip(".").lower() if name not in (".",) else ""
        if name:
            labels = name.split(".")
            if any(not lab or len(lab) > 63 for lab in labels) or len(name) > 253:
                raise ValueError(f"{text!r}: not a valid domain name")
            if not name.isascii():
                raise ValueError(
                    f"{text!r}: not ASCII; write an internationalized name in its xn-- form"
                )
            if "*" in labels:
                raise ValueError(
                    f"{text!r}: no wildcards; a domain already covers every name under it"
                )
            bad = next((c for c in name if not (c.isalnum() or c in "-_.")), None)
            if bad is not None:
                raise ValueError(
                    f"{text!r}: {bad!r} has no place in a domain name "
                    "(letters, digits, '-' and '_' only)"
                )
        elif not routing_only:
            raise ValueError(f"{text!r}: the root can only be a routing domain ('~.')")
        return cls(name, routing_only)

    @property
    def labels(self) -> tuple[bytes, ...]:
        return (
            tuple(lab.encode("ascii", "strict") for lab in self.name.split("."))
            if self.name
            else ()
        )

    def __str__(self) -> str:
        return ("~" if self.routing_only else "") + (self.name or ".")


@dataclass(frozen=True, slots=True)
class Dns64Spec:
    """``prefix``: "none", "auto" (RFC 7050 discovery) or a NAT64 prefix; ``synthesize``: local
    RFC 6147 synthesis when the PvD's servers do not synthesize."""

    prefix: str = "none"
    synthesize: bool = False

    def static_prefix(self) -> IPNetwork | None:
        if self.prefix in ("none", "auto"):
            return None
        return ipaddress.ip_network(self.prefix)


@dataclass(frozen=True, slots=True)
class PvdSpec:
    """The configuration of one PvD (a config entry, ``ctl attach`` spec or resolvconf feed)."""

    name: str
    interface: str
    servers: tuple[ServerAddr, ...] = ()
    domains: tuple[Domain, ...] = ()
    default_route: bool | None = (
        None  # None: auto, like systemd-resolved (see effective_default_route)
    )
    exclusive: bool = False
    # pass this PvD's AD bits on (its servers validate and the path to them is trusted)
    trust_ad: bool = False
    networks: tuple[IPNetwork, ...] = ()
    dns64: Dns64Spec = field(default_factory=Dns64Spec)
    captive_portal: str | None = None
    captive_domains: tuple[Domain, ...] = ()
    origin: str = "config"  # config | runtime | resolvconf

    @property
    def effective_default_route(self) -> bool:
        """Explicit ``default_route`` wins; unset means: a default route unless the PvD has
        routing-only (``~``) domains, the rule systemd-resolved uses for links."""
        if self.default_route is not None:
            return self.default_route
        return not any(d.routing_only for d in self.domains)

    @property
    def search_domains(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.domains if not d.routing_only and d.name)

    def resolution_changed(self, other: PvdSpec) -> bool:
        """True when answers learned under ``self`` may be wrong under ``other``."""
        return (
            self.interface != other.interface
            or self.servers != other.servers
            or self.domains != other.domains
            or self.networks != other.networks
            or self.dns64 != other.dns64
            or self.trust_ad != other.trust_ad  # entries may hold AD bits no longer trusted
        )

    def with_(self, **changes: object) -> PvdSpec:
        return replace(self, **changes)  # type: ignore[arg-type]


@dataclass(slots=True)
class Pvd:
    """The registry's live record of one PvD. Mutated only by :class:`Registry`."""

    spec: PvdSpec
    tag: int  # cache partition tag; a new tag each time the PvD (re)attaches or is purged
    admin_down: bool = False  # `ctl detach NAME`: stays detached until `ctl attach NAME`
    link_up: bool = True  # the interface is up with an address that reaches the servers
    link_prefixes: tuple[IPNetwork, ...] = ()  # the interface's own prefixes (from netlink)
    nat64_prefixes: tuple[IPNetwork, ...] = ()
    captive: CaptiveState = CaptiveState.UNKNOWN
    attached_since: float | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def attached(self) -> bool:
        return not self.admin_down and self.link_up

    @property
    def state(self) -> PvdState:
        return PvdState.ATTACHED if self.attached else PvdState.DETACHED

    @property
    def networks(self) -> tuple[IPNetwork, ...]:
        return self.spec.networks + tuple(
            p for p in self.link_prefixes if p not in self.spec.networks
        )
