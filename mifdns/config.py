"""Configuration: YAML in, typed and validated immutable objects out (STYLE.md habit 12).

The file is parsed at the edge and the resulting :class:`Config` is passed in; nothing reads it
globally. Theory of operation:

1. ``yaml.compose`` gives a node tree with line numbers (SafeLoader semantics: scalars resolve as
   PyYAML resolves YAML 1.1). :class:`_Plain` turns it into plain Python values and remembers, per
   key path (``pvds[1].servers[0]``), the line of the key and of the value.
2. :class:`_Loader` checks those values: the sections are walked generically from the dataclass
   fields and their metadata, the PvD entries from :data:`PVD_KEY_DOCS`. It collects every problem
   instead of stopping at the first. :func:`pvd_spec_from_mapping` runs the same PvD checks on a
   dict that never was YAML (``ctl attach`` with JSON), only without line numbers.
3. Any problem -> one :class:`ConfigError` listing them all in file order, one self-contained line
   each (``mifdns.yaml:14: pvds[1].servers[0]: '10.0.0.300': not an IP address``).

Every key carries a ``doc``; :func:`config_reference_markdown` renders them as docs/config.md
(regenerate with ``python -m mifdns.config > docs/config.md``; a unit test keeps them equal).
"""

from __future__ import annotations

import difflib
import functools
import ipaddress
import json
import math
import os
import re
import sys
import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields, is_dataclass, replace
from ipaddress import IPv4Address, IPv6Address
from typing import Any
from urllib.parse import urlsplit

import yaml

from mifdns.core.pvd import Dns64Spec, Domain, IPNetwork, PvdSpec, ServerAddr, parse_server
from mifdns.errors import ConfigError

__all__ = [
    "CacheConfig", "Config", "LimitsConfig", "ListenAddr", "MetricsConfig", "ResolvConfConfig",
    "UpstreamConfig", "ENV_VARS", "PVD_KEY_DOCS", "apply_env", "config_reference_markdown",
    "default_config", "load_config", "parse_config", "pvd_spec_from_mapping",
]  # fmt: skip

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
        host, port_text, bracketed = text, None, text.startswith("[")
        if bracketed:
            end = text.find("]")
            if end < 0:
                raise ValueError(f"{text!r}: unbalanced '['")
            host, rest = text[1:end], text[end + 1 :]
            if rest:
                if not rest.startswith(":"):
                    raise ValueError(f"{text!r}: expected ':PORT' after ']'")
                port_text = rest[1:]
        elif text.count(":") == 1:
            host, port_text = text.split(":")
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
        if not re.fullmatch(r"[0-9]{1,5}", port_text) or not 0 < int(port_text) < 65536:
            raise ValueError(f"{text!r}: port must be 1-65535")
        return cls(address, int(port_text))

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
        "past it, entries are evicted to make room.", 100_000, min=1, max=100_000_000)
    max_bytes: int = _key(
        "Most bytes of stored answers, all PvDs together (default 256 MiB); past it, entries are "
        "evicted to make room.", 256 * MiB, min=MiB, max=64 * 1024 * MiB)
    max_ttl: int = _key(
        "Longest time, in seconds, an answer is reused, whatever TTL its records carry.",
        86400, min=1, max=604800)
    negative_max_ttl: int = _key(
        "Longest time, in seconds, an NXDOMAIN or NODATA answer is reused (its RFC 2308 TTL, "
        "capped by this). 0: negative answers are not reused.", 900, min=0, max=86400)
    captive_max_ttl: int = _key(
        "Longest time, in seconds, an answer from a PvD behind a captive portal is reused, so "
        "that getting through the portal shows quickly. 0: not reused.", 30, min=0, max=3600)


@dataclass(frozen=True, slots=True)
class ResolvConfConfig:
    """Whether and where mifdns writes resolv.conf."""

    manage: bool = _key(
        "Rewrite `resolv_conf.path` so that it points at mifdns and carries the attached PvDs' "
        "search domains. false: the file is left alone.", False)
    path: str = _key("The resolv.conf file written when `resolv_conf.manage` is true.",
                     "/etc/resolv.conf", nonempty=True)


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """The Prometheus endpoint."""

    listen: str | None = _key(
        "ADDR:PORT of an HTTP endpoint serving Prometheus metrics at `/metrics`, e.g. "
        "`127.0.0.1:9153` or `[::1]:9153`; a port alone (`9153`) means `127.0.0.1:PORT`, so it "
        "stays on loopback unless an address says otherwise; null: off.", None,
        type="string (ADDR:PORT or PORT) or null", load="metrics_listen")

    @property
    def address(self) -> ListenAddr | None:
        return ListenAddr.parse(self.listen, None) if self.listen else None


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    """How long to wait for upstream servers, and what to tell them."""

    timeout: float = _key(
        "Seconds to wait for one server's reply before trying the PvD's next server.",
        0.8, gt=0, max=30)
    total_timeout: float = _key(
        "Seconds a query may spend on upstream servers in all; then it is answered SERVFAIL "
        "(stub clients give up at 5 s). At least `upstream.timeout`.", 3.0, gt=0, max=60)
    negative_wait: float = _key(
        "Seconds a negative answer (NXDOMAIN, NODATA) from one of several tied PvDs waits for the "
        "others, so that a fast negative from one network cannot hide a positive from another. "
        "At most `upstream.total_timeout`.", 1.0, min=0, max=60)
    edns_udp_size: int = _key(
        "EDNS UDP payload size advertised to upstream servers (1232: DNS Flag Day 2020).",
        1232, min=512, max=4096)


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    """Bounds of every queue and table: past a bound, work is turned away and counted, never
    queued without end."""

    max_inflight: int = _key(
        "Most upstream transactions in flight at once; past it, queries that need an upstream "
        "are turned away and counted.", 4096, min=1, max=1_000_000)
    max_tcp_clients: int = _key(
        "Most client TCP connections open at once; past it, new connections are turned away.",
        256, min=1, max=65535)
    max_tcp_queries_per_connection: int = _key(
        "Most pipelined queries in flight on one client TCP connection (RFC 7766); past it, "
        "further queries on that connection wait.", 128, min=1, max=65535)
    tcp_idle_timeout: float = _key(
        "Seconds an idle client TCP connection stays open.", 10.0, gt=0, max=3600)
    max_upstream_tcp: int = _key(
        "Most TCP connections to upstream servers at once (used for truncated answers).",
        64, min=1, max=65535)
    ingress_batch: int = _key(
        "Most datagrams read per socket wake-up before the event loop runs other work.",
        64, min=1, max=4096)


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration. Built by :func:`load_config` / :func:`parse_config`, then passed
    in; never global."""

    listen: tuple[ListenAddr, ...] = _key(
        "Addresses to answer on, UDP and TCP on each: `ADDR`, `ADDR:PORT` or `[IPv6]:PORT` "
        "(port 53 when omitted). At least one.",
        (ListenAddr(IPv4Address("127.0.0.53"), 53),),
        type="list of strings", load="listen", show=["127.0.0.53:53"])
    control_socket: str = _key(
        "Unix socket that `mifdns ctl` talks to.", "/run/mifdns/control.sock",
        load="unix_path")
    netlink: bool = _key(
        "Follow link and address changes from the kernel: a PvD is attached only while its "
        "interface is up with a usable address. false: interfaces are not watched and "
        "configured PvDs count as attached.", True)
    cache: CacheConfig = _key("The answer cache.", factory=CacheConfig)
    resolv_conf: ResolvConfConfig = _key("resolv.conf management.", factory=ResolvConfConfig)
    metrics: MetricsConfig = _key("Prometheus metrics.", factory=MetricsConfig)
    upstream: UpstreamConfig = _key("Upstream timeouts and EDNS.", factory=UpstreamConfig)
    limits: LimitsConfig = _key("Bounds of queues and tables.", factory=LimitsConfig)
    query_log: bool = _key("Log every query with its routing decision and outcome.", False)
    pvds: tuple[PvdSpec, ...] = _key(
        "Static PvDs, one mapping each (keys below). More come at run time from "
        "`mifdns ctl attach` and `mifdns resolvconf`.", (), type="list of mappings",
        load="pvds", show=[])
    source: str = _key("The file the config came from (not a key).", "", key=False)


def default_config() -> Config:
    """The built-in defaults: listen on 127.0.0.53:53, no static PvDs."""
    return Config()


# ------------------------------------------------------------------------------ PvD key table

# PvdSpec lives in the core; its YAML keys are documented here: key -> (type, default, doc).
PVD_KEY_DOCS: dict[str, tuple[str, str, str]] = {
    "name": ("string", "required",
             "Unique name: 1-64 characters of `A-Z a-z 0-9 _ . -`."),
    "interface": ("string", "required",
                  "The network interface; queries to this PvD's servers leave only through it. "
                  "A Linux interface name: 1-15 characters, no `/`, `:` or whitespace."),
    "servers": ("list of strings", "[]",
                "DNS servers: `ADDR`, `ADDR:PORT` or `[IPv6]:PORT`. A link-local IPv6 server is "
                "reached through `interface` (a `%SCOPE`, if written, must name it). May be "
                "empty: servers can come later."),
    "domains": ("list of strings", "[]",
                "`~name`: routing only (names under it go to this PvD); `name`: routing and "
                "search; `~.`: this PvD takes every name (the default route)."),
    "default_route": ("boolean or null", "null",
                      "Whether names outside every PvD's domains may go to this PvD. null: yes "
                      "unless it has a routing-only (`~`) domain (the systemd-resolved rule)."),
    "exclusive": ("boolean", "false",
                  "Names under this PvD's domains never go to another PvD, even while it is "
                  "detached (they fail with an Extended DNS Error instead)."),
    "networks": ("list of strings", "[]",
                 "CIDR networks whose reverse names (in-addr.arpa, ip6.arpa) go to this PvD, "
                 "besides the interface's own prefixes. Host bits must be zero."),
    "dns64": ("mapping or string", "{prefix: none, synthesize: false}",
              "NAT64 / DNS64 settings; the short forms `auto`, `none` and a prefix string set "
              "`prefix` alone."),
    "dns64.prefix": ("string", "none",
                     "`auto` (discover it, RFC 7050), `none`, or a static IPv6 NAT64 prefix of "
                     "an RFC 6052 length: /32, /40, /48, /56, /64 or /96."),
    "dns64.synthesize": ("boolean", "false",
                         "Synthesize AAAA records from A records here (RFC 6147) when the PvD's "
                         "servers do not. Needs a prefix (`auto` or static)."),
    "captive_portal": ("string or null", "null",
                       "The RFC 8910 captive-portal API URI (https) when known."),
    "captive_domains": ("list of strings", "[]",
                        "Names that always go to this PvD while it is captive (the portal's)."),
}
_PVD_KEYS = [k for k in PVD_KEY_DOCS if "." not in k]
_DNS64_KEYS = [k.split(".", 1)[1] for k in PVD_KEY_DOCS if k.startswith("dns64.")]

# Environment overrides (for the container sidecar): variable -> (key path, accepted values).
ENV_VARS: dict[str, tuple[str, str]] = {
    "MIFDNS_LISTEN": ("listen", "comma-separated `ADDR[:PORT]` list"),
    "MIFDNS_CONTROL_SOCKET": ("control_socket", "a path"),
    "MIFDNS_NETLINK": ("netlink", "`true` or `false` (also 1/0, yes/no, on/off)"),
    "MIFDNS_QUERY_LOG": ("query_log", "`true` or `false` (also 1/0, yes/no, on/off)"),
    "MIFDNS_METRICS_LISTEN": ("metrics.listen",
                              "`ADDR:PORT`, `PORT` (loopback), or `none` / `off` to turn off"),
}
_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}
_NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_RFC6052_LENGTHS = (32, 40, 48, 56, 64, 96)
_SUN_PATH_MAX = 107  # sizeof(sockaddr_un.sun_path) - 1 on Linux
_MAX_NODES = 200_000  # a config is small; this stops alias bombs


# ------------------------------------------------------------------------------ value helpers


class _Bad(Exception):
    """A value failed its check; the message is the problem text."""


def _describe(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__} ({value})"


def _kind(value: object) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number"}.get(type(value), "a date")


def _join(path: str, key: object) -> str:
    text = key if isinstance(key, str) else _describe(key)
    return f"{path}.{text}" if path else str(text)


def _parent(path: str) -> str:
    match = re.search(r"(\.[^.\[\]]*|\[\d+\])$", path)
    return path[: match.start()] if match else ""


def _suggest(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _valid_ifname(name: str) -> bool:
    # Linux dev_valid_name(): 1-15 bytes, not "." or "..", no '/', ':' or whitespace.
    return (0 < len(name.encode()) < 16 and name not in (".", "..")
            and not any(c in "/:" or c.isspace() for c in name))


def _unix_path(text: str) -> str:
    if not text:
        raise _Bad("must not be empty")
    size = len(os.fsencode(text))
    if size > _SUN_PATH_MAX:
        raise _Bad(f"{text!r} is too long for a Unix socket path ({size} bytes, at most "
                   f"{_SUN_PATH_MAX})")
    return text


def _dns64_prefix(text: str) -> str:
    if text.lower() in ("auto", "none"):
        return text.lower()
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise _Bad(f"{text!r}: expected 'auto', 'none' or an IPv6 prefix") from None
    if net.version != 6:
        raise _Bad(f"{text!r}: a NAT64 prefix is IPv6")
    if net.prefixlen not in _RFC6052_LENGTHS:
        raise _Bad(f"{text!r}: an RFC 6052 prefix is /32, /40, /48, /56, /64 or /96")
    try:
        ipaddress.ip_network(text)
    except ValueError:
        raise _Bad(f"{text!r}: host bits set (the prefix is {net})") from None
    if net.prefixlen == 96 and (int(net.network_address) >> 56) & 0xFF:
        raise _Bad(f"{text!r}: bits 64-71 of an RFC 6052 prefix must be zero")
    return str(net)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _scalar_type(hint: Any) -> tuple[type, bool]:
    """(base type, optional) of ``int``, ``str | None`` and the like."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0], True
    return hint, False


# ---------------------------------------------------------------------------- YAML -> values


class _Plain:
    """Turn a composed YAML node tree into plain values, recording lines per key path."""

    def __init__(self) -> None:
        self.lines: dict[str, int] = {}  # path -> line of the value
        self.key_lines: dict[str, int] = {}  # path -> line of the key
        self.unquoted: dict[str, str] = {}  # path -> text of a plain scalar that is not a str
        self.problems: list[tuple[int, str]] = []
        self._constructor = yaml.SafeLoader("")  # only its constructor methods are used
        self._nodes = 0
        self._stack: set[int] = set()
        self._from_merge: set[str] = set()  # paths whose value came from a merge key
        self._merged: dict[int, int] = {}  # id(mapping node) -> how many pairs it merged

    def convert(self, node: yaml.Node, path: str) -> Any:
        self._nodes += 1
        if self._nodes > _MAX_NODES:
            raise _Bad(f"more than {_MAX_NODES} values (alias expansion?)")
        line = node.start_mark.line + 1
        self.lines[path] = line
        if id(node) in self._stack:
            self.problems.append((line, f"{path or 'document'}: recursive alias"))
            return None
        try:
            if isinstance(node, yaml.ScalarNode):
                value = self._constructor.construct_object(node)
                if node.style is None and not isinstance(value, str):
                    self.unquoted[path] = node.value
                return value
            self._stack.add(id(node))
            try:
                if isinstance(node, yaml.SequenceNode) and node.tag.endswith(":seq"):
                    return [self.convert(n, f"{path}[{i}]") for i, n in enumerate(node.value)]
                if isinstance(node, yaml.MappingNode) and node.tag.endswith(":map"):
                    return self._mapping(node, path)
            finally:
                self._stack.discard(id(node))
            raise yaml.YAMLError(f"unsupported tag {node.tag!r}")
        except yaml.YAMLError as exc:
            what = getattr(exc, "problem", None) or str(exc)
            self.problems.append((line, f"{path or 'document'}: {what}"))
            return None

    def _mapping(self, node: yaml.MappingNode, path: str) -> dict[Any, Any]:
        if id(node) not in self._merged:  # an aliased node comes here again, already flattened
            explicit = sum(1 for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge")
            self._constructor.flatten_mapping(node)  # YAML merge keys (<<): merged pairs first,
            self._merged[id(node)] = len(node.value) - explicit  # the mapping's own override
        merged = self._merged[id(node)]
        out: dict[Any, Any] = {}
        for index, (key_node, value_node) in enumerate(node.value):
            key_line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                self.problems.append((key_line, f"{path or 'document'}: keys must be strings"))
                continue
            key = self._constructor.construct_object(key_node)
            sub = _join(path, key)
            if key in out and index >= merged and sub not in self._from_merge:
                first = self.key_lines[sub]
                self.problems.append((key_line, f"{sub}: duplicate key (first at line {first})"))
                continue
            if index < merged:
                self._from_merge.add(sub)
            else:
                self._from_merge.discard(sub)
            self.key_lines[sub] = key_line
            out[key] = self.convert(value_node, sub)
        return out


# ------------------------------------------------------------------------------------ checks


_BAD = object()


class _Loader:
    """Checks plain values against the schema, collecting every problem."""

    def __init__(self, source: str = "", plain: _Plain | None = None) -> None:
        self.source = source
        self.plain = plain or _Plain()
        self.problems: list[tuple[int, str]] = list(self.plain.problems)

    # reporting

    def problem(self, path: str, message: str, *, at_key: bool = False) -> None:
        table = self.plain.key_lines if at_key else self.plain.lines
        probe = path
        while probe and probe not in table and probe not in self.plain.lines:
            probe = _parent(probe)  # a missing key: report at the nearest located parent
        line = table.get(probe) or self.plain.lines.get(probe, 0)
        self.problems.append((line, f"{path}: {message}" if path else message))

    def error(self) -> ConfigError | None:
        if not self.problems:
            return None
        lines = []
        for line, text in sorted(self.problems, key=lambda p: p[0]):
            where = f"{self.source}:{line}: " if self.source and line else (
                f"{self.source}: " if self.source else "")
            lines.append(where + text)
        return _config_error(lines, self.source)

    # typed values

    def expect(self, value: Any, base: type, path: str, *, optional: bool = False,
               meta: Mapping[str, Any] | None = None) -> Any:
        """``value`` as ``base`` (bool, int, float, str, list, dict) or _BAD after a problem."""
        meta = meta or {}
        if value is None and optional:
            return None
        ok = {
            bool: isinstance(value, bool),
            int: isinstance(value, int) and not isinstance(value, bool),
            float: isinstance(value, (int, float)) and not isinstance(value, bool),
            str: isinstance(value, str),
            list: isinstance(value, list),
            dict: isinstance(value, dict),
        }[base]
        if not ok:
            want = {bool: "a boolean (true or false)", int: "an integer", float: "a number",
                    str: "a string", list: "a list", dict: "a mapping"}[base]
            if optional:
                want += " or null"
            hint = ""
            raw = self.plain.unquoted.get(path)
            if base is str and raw is not None and value is not None:
                hint = f" (YAML reads unquoted {raw} as {_kind(value)}; quote it: \"{raw}\")"
            self.problem(path, f"expected {want}, got {_describe(value)}{hint}")
            return _BAD
        if base is float:
            value = float(value)
            if not math.isfinite(value):
                self.problem(path, f"expected a finite number, got {value}")
                return _BAD
        if base in (int, float) and not _in_range(value, meta):
            self.problem(path, f"must be {_range_text(meta)}, got {value}")
            return _BAD
        if base is str and meta.get("nonempty") and not value:
            self.problem(path, "must not be empty")
            return _BAD
        return value

    def mapping(self, value: Any, path: str, known: list[str]) -> dict[str, Any] | None:
        """``value`` as a mapping with only ``known`` keys (null is empty), or None."""
        if value is None:
            return {}
        if self.expect(value, dict, path) is _BAD:
            return None
        for key in value:
            if not isinstance(key, str):
                self.problem(_join(path, key), f"keys must be strings, got {_describe(key)}",
                             at_key=True)
            elif key not in known:
                self.problem(_join(path, key), "unknown key" + _suggest(key, known), at_key=True)
        return {k: v for k, v in value.items() if isinstance(k, str) and k in known}

    def each(self, value: Any, path: str, parse: Any) -> list[Any]:
        """Parse each string of a list with ``parse`` (ValueError/_Bad -> problem); duplicates
        are problems too. Returns the good items."""
        if value is None or self.expect(value, list, path) is _BAD:
            return []
        out: list[Any] = []
        seen: dict[Any, int] = {}
        for i, item in enumerate(value):
            sub = f"{path}[{i}]"
            if self.expect(item, str, sub) is _BAD:
                continue
            try:
                parsed = parse(item)
            except (ValueError, _Bad) as exc:
                self.problem(sub, str(exc))
                continue
            if parsed in seen:
                self.problem(sub, f"{item!r}: duplicate of {path}[{seen[parsed]}]")
                continue
            seen[parsed] = i
            out.append(parsed)
        return out

    # sections

    def section(self, cls: type, value: Any, path: str) -> Any:
        keys = [f.name for f in fields(cls) if f.metadata.get("key", True)]
        data = self.mapping(value, path, keys)
        if data is None:
            return cls()
        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in data:
                continue
            sub = _join(path, f.name)
            hint = _hints(cls)[f.name]
            if "load" in f.metadata:
                parsed = getattr(self, "load_" + f.metadata["load"])(data[f.name], sub)
            elif isinstance(hint, type) and is_dataclass(hint):
                parsed = self.section(hint, data[f.name], sub)
            else:
                base, optional = _scalar_type(hint)
                parsed = self.expect(data[f.name], base, sub, optional=optional, meta=f.metadata)
            if parsed is not _BAD:
                kwargs[f.name] = parsed
        return cls(**kwargs)

    def load_listen(self, value: Any, path: str) -> Any:
        if self.expect(value, list, path) is _BAD:
            return _BAD
        addrs = self.each(value, path, ListenAddr.parse)
        if not value:
            self.problem(path, "must list at least one address")
        return tuple(addrs) if addrs and len(addrs) == len(value) else _BAD

    def load_unix_path(self, value: Any, path: str) -> Any:
        if self.expect(value, str, path) is _BAD:
            return _BAD
        try:
            return _unix_path(value)
        except _Bad as exc:
            self.problem(path, str(exc))
            return _BAD

    def load_metrics_listen(self, value: Any, path: str) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)  # `listen: 9153`
        if value is None or self.expect(value, str, path, optional=True) is _BAD:
            return None if value is None else _BAD
        try:
            return _metrics_listen(value)
        except ValueError as exc:
            self.problem(path, str(exc))
            return _BAD

    def load_pvds(self, value: Any, path: str) -> Any:
        if value is None:
            return ()
        if self.expect(value, list, path) is _BAD:
            return _BAD
        specs: list[PvdSpec] = []
        first: dict[str, int] = {}
        for i, item in enumerate(value):
            sub = f"{path}[{i}]"
            spec = self.pvd(item, sub, origin="config")
            name = item.get("name") if isinstance(item, dict) else None
            if isinstance(name, str) and _NAME_RE.fullmatch(name):
                if name in first:
                    self.problem(f"{sub}.name", f"duplicate PvD name {name!r} "
                                 f"(first at {path}[{first[name]}])")
                    continue
                first[name] = i
            if spec is not None:
                specs.append(spec)
        return tuple(specs)

    # one PvD

    def pvd(self, value: Any, path: str, *, origin: str) -> PvdSpec | None:
        before = len(self.problems)
        if self.expect(value, dict, path) is _BAD:
            return None
        data = self.mapping(value, path, _PVD_KEYS) or {}
        for required in ("name", "interface"):
            if required not in data:
                self.problem(path, f"missing required key {required!r}")
        name = self.expect(data["name"], str, f"{path}.name") if "name" in data else None
        if isinstance(name, str) and not _NAME_RE.fullmatch(name):
            self.problem(f"{path}.name", f"{name!r}: must be 1-64 characters of A-Z a-z 0-9 _ . -")
        ifname = data.get("interface")
        if ifname is not None or "interface" in data:
            ifname = self.expect(ifname, str, f"{path}.interface")
        if isinstance(ifname, str) and not _valid_ifname(ifname):
            self.problem(
                f"{path}.interface",
                f"{ifname!r}: not a Linux interface name (1-15 characters, no '/', ':' or "
                "whitespace)",
            )
            ifname = None
        scope = ifname if isinstance(ifname, str) else None
        kwargs: dict[str, Any] = {
            "servers": tuple(self.each(data.get("servers"), f"{path}.servers",
                                       lambda s: _server(s, scope))),
            "domains": tuple(self.each(data.get("domains"), f"{path}.domains", _domain)),
            "networks": tuple(self.each(data.get("networks"), f"{path}.networks", _network)),
            "captive_domains": tuple(self.each(data.get("captive_domains"),
                                               f"{path}.captive_domains", _domain)),
            "dns64": self.dns64(data.get("dns64"), f"{path}.dns64"),
            "default_route": self.expect(data.get("default_route"), bool,
                                         f"{path}.default_route", optional=True),
            "exclusive": self.expect(data.get("exclusive", False), bool, f"{path}.exclusive"),
            "captive_portal": self.captive_portal(data.get("captive_portal"),
                                                  f"{path}.captive_portal"),
        }
        if len(self.problems) > before or not isinstance(name, str) or ifname is None:
            return None
        return PvdSpec(name=name, interface=ifname, origin=origin, **kwargs)

    def dns64(self, value: Any, path: str) -> Any:
        if value is None:
            return Dns64Spec()
        if isinstance(value, str):  # the short forms: auto | none | a prefix
            try:
                return Dns64Spec(prefix=_dns64_prefix(value))
            except _Bad as exc:
                self.problem(path, str(exc))
                return _BAD
        if not isinstance(value, dict):
            self.problem(path, "expected a mapping or 'auto', 'none' or an IPv6 prefix, "
                         f"got {_describe(value)}")
            return _BAD
        data = self.mapping(value, path, _DNS64_KEYS) or {}
        prefix = self.expect(data.get("prefix", "none"), str, f"{path}.prefix")
        if prefix is not _BAD:
            try:
                prefix = _dns64_prefix(prefix)
            except _Bad as exc:
                self.problem(f"{path}.prefix", str(exc))
                prefix = _BAD
        synthesize = self.expect(data.get("synthesize", False), bool, f"{path}.synthesize")
        if synthesize is True and prefix == "none":
            self.problem(f"{path}.synthesize", "needs a prefix ('auto' or a static prefix)")
        if prefix is _BAD or synthesize is _BAD:
            return _BAD
        return Dns64Spec(prefix=prefix, synthesize=synthesize)

    def captive_portal(self, value: Any, path: str) -> Any:
        if value is None or self.expect(value, str, path) is _BAD:
            return None
        try:
            url = urlsplit(value)
            ok = url.scheme == "https" and bool(url.hostname) and url.port != 0
        except ValueError:  # a bad [IPv6] host or port
            ok = False
        if not ok:
            self.problem(path, f"{value!r}: must be an https:// URI (RFC 8908)")
        return value

    # cross-checks of a whole config

    def cross_check(self, config: Config) -> None:
        up = config.upstream
        if up.timeout > up.total_timeout:
            self.problem("upstream.timeout", f"{up.timeout} exceeds upstream.total_timeout "
                         f"({up.total_timeout})")
        if up.negative_wait > up.total_timeout:
            self.problem("upstream.negative_wait", f"{up.negative_wait} exceeds "
                         f"upstream.total_timeout ({up.total_timeout})")
        own = {(la.address, la.port) for la in config.listen}
        for i, spec in enumerate(config.pvds):
            for j, server in enumerate(spec.servers):
                if (server.address, server.port) in own:
                    self.problem(f"pvds[{i}].servers[{j}]", f"{server} is one of mifdns's own "
                                 "listen addresses (queries would loop)")


def _in_range(value: float, meta: Mapping[str, Any]) -> bool:
    return (("min" not in meta or value >= meta["min"]) and ("gt" not in meta or value > meta["gt"])
            and ("max" not in meta or value <= meta["max"]))


def _range_text(meta: Mapping[str, Any], *, doc: bool = False) -> str:
    if "min" in meta and "max" in meta:
        low, high = meta["min"], meta["max"]
        return f"{low} to {high}" if doc else f"between {low} and {high}"
    parts = [f"greater than {meta['gt']}"] if "gt" in meta else []
    parts += [f"at least {meta['min']}"] if "min" in meta else []
    parts += [f"at most {meta['max']}"] if "max" in meta else []
    return " and ".join(parts)


def _metrics_listen(text: str) -> str:
    """``metrics.listen`` in canonical form; a bare port means loopback."""
    text = text.strip()
    if re.fullmatch(r":?[0-9]{1,5}", text):
        text = "127.0.0.1:" + text.lstrip(":")
    return str(ListenAddr.parse(text, None))


def _server(text: str, interface: str | None) -> ServerAddr:
    server = parse_server(text, interface)
    if server.address.is_unspecified or server.address.is_multicast:
        raise _Bad(f"{text!r}: not a unicast address")
    return server


def _domain(text: str) -> Domain:
    domain = Domain.parse(text)
    try:
        domain.labels
    except UnicodeEncodeError:
        raise _Bad(f"{text!r}: not ASCII; write an internationalized name in its xn-- form") from None
    return domain


def _network(text: str) -> IPNetwork:
    try:
        return ipaddress.ip_network(text.strip())
    except ValueError:
        pass
    try:
        net = ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise _Bad(f"{text!r}: not a network (CIDR such as 10.8.0.0/16)") from None
    raise _Bad(f"{text!r}: host bits set (the network is {net})")


def _config_error(problems: list[str], source: str) -> ConfigError:
    # Each problem line already says where it is (file:line: key path), so the exception is built
    # without ConfigError's "source: " prefix, and source is set after.
    error = ConfigError(problems)
    error.source = source
    return error


# --------------------------------------------------------------------------------- entry points


def parse_config(text: str, source: str = "<string>") -> Config:
    """Parse and check a YAML config; raise :class:`ConfigError` listing every problem."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        what = exc.problem or exc.context or "invalid YAML"
        raise _config_error([f"{where}: invalid YAML: {what}"], source) from None
    except yaml.YAMLError as exc:
        raise _config_error([f"{source}: invalid YAML: {exc}"], source) from None
    if root is None:
        return replace(default_config(), source=source)
    plain = _Plain()
    try:
        data = plain.convert(root, "")
    except _Bad as exc:
        raise _config_error([f"{source}: {exc}"], source) from None
    loader = _Loader(source, plain)
    if data is not None and not isinstance(data, dict):
        loader.problem("", f"expected a mapping of keys at the top level, got {_describe(data)}")
        data = None  # check nothing more; the problem is raised below
    config: Config = loader.section(Config, data, "")
    loader.cross_check(config)
    error = loader.error()
    if error is not None:
        raise error
    return replace(config, source=source)


def load_config(path: str) -> Config:
    """Read and check a config file; an empty file means the defaults."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise _config_error([f"{path}: cannot read: {exc.strerror or exc}"], path) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise _config_error([f"{path}:{line}: not UTF-8 text"], path) from None
    return parse_config(text, path)


def pvd_spec_from_mapping(data: Any, *, where: str = "pvd", origin: str = "runtime") -> PvdSpec:
    """Check one PvD spec given as a mapping (``ctl attach`` with JSON or YAML) exactly like a
    ``pvds[i]`` entry; problems name ``where`` as the key path."""
    loader = _Loader()
    spec = loader.pvd(data, where, origin=origin)
    error = loader.error()
    if error is not None:
        raise error
    assert spec is not None  # no problem, so a spec
    return spec


def apply_env(config: Config, environ: Mapping[str, str]) -> Config:
    """Apply the ``MIFDNS_*`` overrides of :data:`ENV_VARS`; empty variables count as unset."""
    problems: list[str] = []
    changes: dict[str, Any] = {}

    def flag(var: str) -> bool | None:
        text = environ[var].strip().lower()
        if text in _TRUE | _FALSE:
            return text in _TRUE
        problems.append(f"{var}: expected true or false, got {environ[var]!r}")
        return None

    present = [v for v in ENV_VARS if environ.get(v, "").strip()]
    for var in present:
        text = environ[var].strip()
        try:
            if var == "MIFDNS_LISTEN":
                addrs = [ListenAddr.parse(t) for t in text.split(",") if t.strip()]
                if not addrs:
                    raise _Bad(f"{text!r}: no address")
                if len(set(addrs)) != len(addrs):
                    raise _Bad(f"{text!r}: an address is listed twice")
                changes["listen"] = tuple(addrs)
            elif var == "MIFDNS_CONTROL_SOCKET":
                changes["control_socket"] = _unix_path(text)
            elif var == "MIFDNS_METRICS_LISTEN":
                off = text.lower() in ("none", "off")
                listen = None if off else _metrics_listen(text)
                changes["metrics"] = replace(config.metrics, listen=listen)
            elif (value := flag(var)) is not None:
                changes[ENV_VARS[var][0]] = value
        except (ValueError, _Bad) as exc:
            problems.append(f"{var}: {exc}")
    if problems:
        raise _config_error(problems, "environment")
    return replace(config, **changes)


# ---------------------------------------------------------------------------------- reference


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _type_name(f: Any, hint: Any) -> str:
    if "type" in f.metadata:
        return str(f.metadata["type"])
    base, optional = _scalar_type(hint)
    name = {bool: "boolean", int: "integer", float: "number", str: "string"}.get(base, "mapping")
    return name + (" or null" if optional else "")


def _default_text(f: Any) -> str:
    if "show" in f.metadata:
        return f"`{json.dumps(f.metadata['show'])}`"
    default = f.default if f.default is not MISSING else f.default_factory()
    if is_dataclass(default):
        return "see below"
    if isinstance(default, bool) or default is None:
        return f"`{json.dumps(default)}`"
    if isinstance(default, int) and default >= MiB and default % MiB == 0:
        return f"`{default}` ({default // MiB} MiB)"
    return f"`{default}`"


def _doc_text(f: Any) -> str:
    doc = str(f.metadata["doc"])
    if any(k in f.metadata for k in ("min", "max", "gt")):
        doc += f" Range: {_range_text(f.metadata, doc=True)}."
    return doc


def _table(rows: list[tuple[str, str, str, str]]) -> list[str]:
    out = ["| Key | Type | Default | Description |", "|---|---|---|---|"]
    out += [f"| `{p}` | {_cell(t)} | {_cell(d)} | {_cell(doc)} |" for p, t, d, doc in rows]
    return out


def _rows(cls: type, prefix: str) -> list[tuple[str, str, str, str]]:
    return [(_join(prefix, f.name), _type_name(f, _hints(cls)[f.name]), _default_text(f),
             _doc_text(f)) for f in fields(cls) if f.metadata.get("key", True)]


def config_reference_markdown() -> str:
    """The config reference (docs/config.md), generated from the field docs above."""
    out = [
        "# Configuration reference",
        "",
        "<!-- Generated by `python -m mifdns.config > docs/config.md`; do not edit by hand. -->",
        "",
        "mifdns reads one YAML file: `mifdns run --config PATH`, else `/etc/mifdns/mifdns.yaml`"
        " if present, else the defaults below. An empty file means the defaults too.",
        "`mifdns check-config PATH` reports every problem at once, one line each, with the file,"
        " the line and the key path: `mifdns.yaml:14: pvds[1].servers[0]: '10.0.0.300': not an"
        " IP address`. Unknown keys are errors. Booleans follow YAML 1.1 as PyYAML reads it"
        " (`yes`/`no`/`on`/`off` are booleans, so quote such names).",
        "See `config/mifdns.yaml` for a commented example.",
        "",
        "## Top level",
        "",
    ]
    out += _table(_rows(Config, ""))
    for f in fields(Config):
        hint = _hints(Config)[f.name]
        if isinstance(hint, type) and is_dataclass(hint):
            out += ["", f"## {f.name}", "", " ".join((hint.__doc__ or "").split()), ""]
            out += _table(_rows(hint, f.name))
    out += ["", "## pvds[]", "",
            "Each entry of `pvds` is one provisioning domain (RFC 7556). `mifdns ctl attach` "
            "takes a spec with the same keys (as JSON or YAML).", ""]
    out += _table(
        [(f"pvds[].{k}", t, d if d == "required" else f"`{d}`", doc)
         for k, (t, d, doc) in PVD_KEY_DOCS.items()]
    )
    out += ["", "## Environment overrides", "",
            "For containers: `mifdns run` applies these on top of the file (or of the defaults)."
            " An empty variable counts as unset; a bad value is an error naming the variable.", "",
            "| Variable | Overrides | Value |", "|---|---|---|"]
    out += [f"| `{v}` | `{k}` | {_cell(val)} |" for v, (k, val) in ENV_VARS.items()]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.stdout.write(config_reference_markdown())
