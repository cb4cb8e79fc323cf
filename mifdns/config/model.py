"""The configuration model: typed, immutable, one ``doc`` per key (STYLE.md habit 12)."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import MISSING, dataclass, field
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from mifdns.core.pvd import PvdSpec, parse_port, split_host_port

MiB = 1024 * 1024


def _key(doc: str, default: Any = MISSING, *, factory: Any = MISSING, **meta: Any) -> Any:
    """A config key: its default, its ``doc`` and checks (min, max, gt, type, load) as metadata."""
    return field(default=default, default_factory=factory, metadata={"doc": doc, **meta})


# ---------------------------------------------------------------------------------------- types


@dataclass(frozen=True, slots=True)
class ListenAddr:
    """An address mifdns answers on, UDP and TCP."""

    address: IPv4Address | IPv6Address = _key("The IP address (an IPv6 one may carry %SCOPE).")
    port: int = _key("The UDP and TCP port.", 53, min=1, max=65535)

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError(f"port must be 1-65535, got {self.port}")

    @classmethod
    def parse(cls, text: str, default_port: int | None = 53) -> ListenAddr:
        """Parse ``ADDR``, ``ADDR:PORT``, ``[IPv6]`` or ``[IPv6]:PORT``; raise ValueError.

        ``default_port=None`` makes the port mandatory."""
        text = text.strip()
        host, port_text, bracketed = split_host_port(text)
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"{text!r}: not an IP address") from None
        if bracketed and address.version == 4:
            raise ValueError(f"{text!r}: brackets are for IPv6 addresses only")
        if port_text is None:
            if default_port is None:
                raise ValueError(f"{text!r}: missing ':PORT'")
            return cls(address, default_port)
        return cls(address, parse_port(port_text, text))

    def sockaddr(self) -> tuple[str, int]:
        return (str(self.address), self.port)

    def __str__(self) -> str:
        if self.address.version == 6:
            return f"[{self.address}]:{self.port}"
        return f"{self.address}:{self.port}"


@dataclass(frozen=True, slots=True)
class CacheConfig:
    """Bounds of the answer cache, all PvD partitions together."""

    max_entries: int = _key(
        "Most cached entries (answers, negative answers, synthesized AAAA), all PvDs together; "
        "past it, entries are evicted to make room.",
        100_000,
        min=1,
        max=100_000_000,
    )
    max_bytes: int = _key(
        "Most bytes of stored answers, all PvDs together (default 256 MiB); past it, entries are "
        "evicted to make room.",
        256 * MiB,
        min=MiB,
        max=64 * 1024 * MiB,
    )
    max_ttl: int = _key(
        "Longest time, in seconds, an answer is reused, whatever TTL its records carry.",
        86400,
        min=1,
        max=604800,
    )
    negative_max_ttl: int = _key(
        "Longest time, in seconds, an NXDOMAIN or NODATA answer is reused (its RFC 2308 TTL, "
        "capped by this). 0: negative answers are not reused.",
        900,
        min=0,
        max=86400,
    )
    captive_max_ttl: int = _key(
        "Longest time, in seconds, an answer from a PvD behind a captive portal is reused, so "
        "that getting through the portal shows quickly. 0: not reused.",
        30,
        min=0,
        max=3600,
    )


@dataclass(frozen=True, slots=True)
class ResolvConfConfig:
    """Whether and where mifdns writes resolv.conf."""

    manage: bool = _key(
        "Rewrite `resolv_conf.path` so that it points at mifdns and carries the attached PvDs' "
        "search domains. false: the file is left alone.",
        False,
    )
    path: str = _key(
        "The resolv.conf file written when `resolv_conf.manage` is true.",
        "/etc/resolv.conf",
        nonempty=True,
    )


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """The Prometheus endpoint."""

    listen: str | None = _key(
        "ADDR:PORT of an HTTP endpoint serving Prometheus metrics at `/metrics`, e.g. "
        "`127.0.0.1:9153` or `[::1]:9153`; a port alone (`9153`) means `127.0.0.1:PORT`, so it "
        "stays on loopback unless an address says otherwise; null: off.",
        None,
        type="string (ADDR:PORT or PORT) or null",
        load="metrics_listen",
    )

    @property
    def address(self) -> ListenAddr | None:
        return ListenAddr.parse(self.listen, None) if self.listen else None


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    """How long to wait for upstream servers, and what to tell them."""

    timeout: float = _key(
        "Seconds to wait for one server's reply before trying the PvD's next server (a reply "
        "that comes later is still taken while the query lasts).",
        0.8,
        gt=0,
        max=30,
    )
    total_timeout: float = _key(
        "Seconds a query may spend on upstream servers in all; then it is answered SERVFAIL "
        "(stub clients give up at 5 s). At least `upstream.timeout`.",
        3.0,
        gt=0,
        max=60,
    )
    negative_wait: float = _key(
        "Seconds a negative answer (NXDOMAIN, NODATA) from one of several tied PvDs waits for the "
        "others, so that a fast negative from one network cannot hide a positive from another. "
        "At most `upstream.total_timeout`.",
        1.0,
        min=0,
        max=60,
    )
    edns_udp_size: int = _key(
        "EDNS UDP payload size advertised to upstream servers (1232: DNS Flag Day 2020).",
        1232,
        min=512,
        max=4096,
    )
    queries_per_port: int = _key(
        "Most queries in flight at the same time that share one UDP source port to one server "
        "(a port is closed as soon as no query waits on it; a lone query always gets a fresh "
        "random port). 1: a fresh port for every attempt, at ~12 us more CPU per cache miss.",
        16,
        min=1,
        max=256,
    )


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    """Bounds of every queue and table: past a bound, work is turned away and counted, never
    queued without end."""

    max_inflight: int = _key(
        "Most upstream transactions in flight at once; past it, queries that need an upstream "
        "are turned away and counted.",
        4096,
        min=1,
        max=1_000_000,
    )
    max_tcp_clients: int = _key(
        "Most client TCP connections open at once; past it, a new connection takes the place of "
        "the one idle the longest (no query in flight), or is turned away if every one is busy.",
        256,
        min=1,
        max=65535,
    )
    max_tcp_queries_per_connection: int = _key(
        "Most pipelined queries in flight on one client TCP connection (RFC 7766); past it, "
        "further queries on that connection wait.",
        128,
        min=1,
        max=65535,
    )
    tcp_idle_timeout: float = _key(
        "Seconds a client TCP connection stays open without a whole query in or an answer out "
        "(bytes of an unfinished query do not count).",
        10.0,
        gt=0,
        max=3600,
    )
    max_upstream_tcp: int = _key(
        "Most TCP connections to upstream servers at once (used for truncated answers).",
        64,
        min=1,
        max=65535,
    )
    ingress_batch: int = _key(
        "Most datagrams read per socket wake-up before the event loop runs other work.",
        64,
        min=1,
        max=4096,
    )
    ingress_queue_bytes: int = _key(
        "Receive queue of each UDP listening socket (the ingress queue): queries that arrive "
        "while it is full are dropped by the kernel and counted (`udp_ingress_drops`). Set "
        "with SO_RCVBUFFORCE, or capped at net.core.rmem_max without CAP_NET_ADMIN; "
        "`ctl status` shows what the kernel granted.",
        4 << 20,
        min=65536,
        max=1 << 30,
    )


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration. Built by :func:`load_config` / :func:`parse_config`, then passed
    in; never global."""

    listen: tuple[ListenAddr, ...] = _key(
        "Addresses to answer on, UDP and TCP on each: `ADDR`, `ADDR:PORT` or `[IPv6]:PORT` "
        "(port 53 when omitted). At least one. A wildcard (`0.0.0.0`, `[::]`) answers on every "
        "address of the host, each UDP reply from the address its query was sent to; it cannot "
        "be combined with a specific address of the same family and port.",
        (ListenAddr(IPv4Address("127.0.0.53"), 53),),
        type="list of strings",
        load="listen",
        show=["127.0.0.53:53"],
    )
    control_socket: str = _key(
        "Unix socket that `mifdns ctl` talks to.", "/run/mifdns/control.sock", load="unix_path"
    )
    netlink: bool = _key(
        "Follow link and address changes from the kernel: a PvD is attached only while its "
        "interface is up with a usable address (of a family of its servers). false: "
        "interfaces are not watched and configured PvDs count as attached.",
        True,
    )
    cache: CacheConfig = _key("The answer cache.", factory=CacheConfig)
    resolv_conf: ResolvConfConfig = _key("resolv.conf management.", factory=ResolvConfConfig)
    metrics: MetricsConfig = _key("Prometheus metrics.", factory=MetricsConfig)
    upstream: UpstreamConfig = _key("Upstream timeouts and EDNS.", factory=UpstreamConfig)
    limits: LimitsConfig = _key("Bounds of queues and tables.", factory=LimitsConfig)
    query_log: bool = _key("Log every query with its routing decision and outcome.", False)
    pvds: tuple[PvdSpec, ...] = _key(
        "Static PvDs, one mapping each (keys below). More come at run time from "
        "`mifdns ctl attach` and `mifdns resolvconf`.",
        (),
        type="list of mappings",
        load="pvds",
        show=[],
    )
    source: str = _key("The file the config came from (not a key).", "", key=False)


def default_config() -> Config:
    """The built-in defaults: listen on 127.0.0.53:53, no static PvDs."""
    return Config()


# ------------------------------------------------------------------------------ PvD key table

# PvdSpec lives in the core; its YAML keys are documented here: key -> (type, default, doc).
PVD_KEY_DOCS: dict[str, tuple[str, str, str]] = {
    "name": ("string", "required", "Unique name: 1-64 characters of `A-Z a-z 0-9 _ . -`."),
    "interface": (
        "string",
        "required",
        (
            "The network interface; queries to this PvD's servers leave only through it. "
            "A Linux interface name: 1-15 characters, no `/`, `:` or whitespace."
        ),
    ),
    "servers": (
        "list of strings",
        "[]",
        (
            "DNS servers: `ADDR`, `ADDR:PORT` or `[IPv6]:PORT`. A link-local IPv6 server is "
            "reached through `interface` (a `%SCOPE`, if written, must name it). A unicast "
            "address that is not mifdns itself (one of its listen addresses; with a wildcard "
            "listen address, any address of the host). May be empty: servers can come later."
        ),
    ),
    "domains": (
        "list of strings",
        "[]",
        (
            "`~name`: routing only (names under it go to this PvD); `name`: routing and "
            "search; `~.`: this PvD takes every name (the default route). Names are ASCII "
            "(`xn--` for internationalized ones): letters, digits, `-` and `_`; no `*`."
        ),
    ),
    "default_route": (
        "boolean or null",
        "null",
        (
            "Whether names outside every PvD's domains may go to this PvD. null: yes "
            "unless it has a routing-only (`~`) domain (the systemd-resolved rule)."
        ),
    ),
    "exclusive": (
        "boolean",
        "false",
        (
            "Names under this PvD's domains never go to another PvD, even while it is "
            "detached (they fail with an Extended DNS Error instead)."
        ),
    ),
    "trust_ad": (
        "boolean",
        "false",
        (
            "Pass on the AD bit (authenticated data) of this PvD's servers to clients that "
            "ask for it (AD or DO in the query). Only for validating servers reached over a "
            "path you trust (RFC 6840 section 5.7): mifdns validates nothing itself, so by "
            "default it clears AD in every answer."
        ),
    ),
    "networks": (
        "list of strings",
        "[]",
        (
            "CIDR networks whose reverse names (in-addr.arpa, ip6.arpa) go to this PvD, "
            "besides the interface's own prefixes. Host bits must be zero."
        ),
    ),
    "dns64": (
        "mapping or string",
        "{prefix: none, synthesize: false}",
        (
            "NAT64 / DNS64 settings; the short forms `auto`, `none` and a prefix string set "
            "`prefix` alone."
        ),
    ),
    "dns64.prefix": (
        "string",
        "none",
        (
            "`auto` (discover it, RFC 7050), `none`, or a static IPv6 NAT64 prefix of "
            "an RFC 6052 length: /32, /40, /48, /56, /64 or /96."
        ),
    ),
    "dns64.synthesize": (
        "boolean",
        "false",
        (
            "Synthesize AAAA records from A records here (RFC 6147) when the PvD's "
            "servers do not. Needs a prefix (`auto` or static)."
        ),
    ),
    "captive_portal": (
        "string or null",
        "null",
        "The RFC 8910 captive-portal API URI (https) when known.",
    ),
    "captive_domains": (
        "list of strings",
        "[]",
        "Names that always go to this PvD while it is captive (the portal's).",
    ),
}
_PVD_KEYS = [k for k in PVD_KEY_DOCS if "." not in k]
_DNS64_KEYS = [k.split(".", 1)[1] for k in PVD_KEY_DOCS if k.startswith("dns64.")]

# Environment overrides (for the container sidecar): variable -> (key path, accepted values).
ENV_VARS: dict[str, tuple[str, str]] = {
    "MIFDNS_LISTEN": ("listen", "comma-separated `ADDR[:PORT]` list"),
    "MIFDNS_CONTROL_SOCKET": ("control_socket", "a path"),
    "MIFDNS_NETLINK": ("netlink", "`true` or `false` (also 1/0, yes/no, on/off)"),
    "MIFDNS_QUERY_LOG": ("query_log", "`true` or `false` (also 1/0, yes/no, on/off)"),
    "MIFDNS_METRICS_LISTEN": (
        "metrics.listen",
        "`ADDR:PORT`, `PORT` (loopback), or `none` / `off` to turn off",
    ),
}
_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}
_NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_RFC6052_LENGTHS = (32, 40, 48, 56, 64, 96)
_SUN_PATH_MAX = 107  # sizeof(sockaddr_un.sun_path) - 1 on Linux
_MAX_NODES = 200_000  # a config is small; this stops alias bombs
