"""The scenario format: networks, their upstream servers, the mifdns config under test, and a
timeline of steps, in one YAML file (docs/scenarios.md; JSON Schema: scenario.schema.json).

This module holds the model (what the replayer executes), ``load``/``loads``, and the DNS text
helpers the format's values are read with. ``load`` reads the YAML with a loader that remembers
the line of every mapping and refuses duplicate keys, then hands the data to
``scenario_check.Checker``, which checks every section by hand so that each problem is one line
naming the file, the line, the step and the key path::

    x.yaml:42: steps[3] (query): expect.rcode: 'NOERRO' is not an rcode

Everything that can be checked without a network is checked there, once: step arguments,
names and types, rdata in expectations (parsed with dnspython), recorded responses (decoded and
rendered to wire templates), and the mifdns config the scenario runs with (merged exactly as the
replayer merges it, then checked by mifdns.config). The replayer then only executes.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "ACTIONS",
    "CACHE_KINDS",
    "Exchange",
    "NetworkDef",
    "Scenario",
    "ScenarioError",
    "Step",
    "UpstreamDef",
    "cache_matcher",
    "discover",
    "load",
    "loads",
    "parse_rr_line",
]

FORMAT_VERSION = 1
DEFAULT_HOST_ADDRS = ("192.0.2.10/24", "2001:db8:1::10/64")
DEFAULT_SERVER_ADDRS = ("192.0.2.53/24", "2001:db8:1::53/64")
DEFAULT_PORTAL = "192.0.2.1"
MAX_ADVANCE = 10.0  # seconds one `advance` step may sleep (real time)
CACHE_KINDS = ("positive", "nxdomain", "nodata", "synthesized", "captive")
TRANSPORTS = ("udp", "tcp")
WHEN = ("any", "captive", "open")
HARNESS_KEYS = ("listen", "control_socket")  # config keys the replayer sets itself
ACTIONS = ("query", "expect_cache", "expect_no_query", "expect_query", "expect_pvd", "link_down",
           "link_up", "rename", "detach", "attach", "remove", "flush", "resolvconf", "captive_on",
           "captive_login", "upstream", "advance", "reload", "ctl")  # fmt: skip
FLAG_NAMES = ("qr", "aa", "tc", "rd", "ra", "ad", "cd")
BEHAVIOURS = ("delay", "drop", "drop_first", "servfail", "refused", "truncate_udp", "ttl",
              "dns64", "captive", "portal")  # fmt: skip

NET_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
PVD_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class ScenarioError(Exception):
    """A scenario file is invalid; ``problems`` holds one line per problem (file:line: ...)."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


# -- YAML with line numbers ----------------------------------------------------------------------
class Map(dict):  # type: ignore[type-arg]
    """A mapping that knows the line it started on."""

    line = 0


class _Seq(list):  # type: ignore[type-arg]
    line = 0


class _Duplicate(Exception):
    def __init__(self, line: int, key: object) -> None:
        self.line, self.key = line, key


class _Loader(yaml.SafeLoader):  # type: ignore[misc]
    pass


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> Map:
    loader.flatten_mapping(node)
    out = Map()
    out.line = node.start_mark.line + 1
    for knode, vnode in node.value:
        key = loader.construct_object(knode, deep=True)
        if key in out:
            raise _Duplicate(knode.start_mark.line + 1, key)
        out[key] = loader.construct_object(vnode, deep=True)
    return out


def _construct_seq(loader: _Loader, node: yaml.SequenceNode) -> _Seq:
    out = _Seq(loader.construct_object(n, deep=True) for n in node.value)
    out.line = node.start_mark.line + 1
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_seq)


def plain(value: Any) -> Any:
    """Map/_Seq back to dict/list (for configs written out and JSON comparisons)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


# -- the model ---------------------------------------------------------------------------------
@dataclass
class Exchange:
    """One recorded question -> response pair, served before zone data."""

    name: str  # lower case, trailing dot
    qtype: int
    qclass: int = 1
    transport: str | None = None  # None: either
    when: str = "any"  # any | captive | open (the upstream's captive mode)
    template: bytes = b""  # the response, wire format; ID and question case patched per query
    server: str | None = None  # where it was recorded from (informational)
    note: str | None = None
    drop: bool = False  # no response at all (a lost datagram, an unanswered recorded query)
    times: int | None = None  # served this many times; None: 1, and the last one forever

    def matches(self, name: str, qtype: int, qclass: int, transport: str, captive: bool) -> bool:
        if (name, qtype, qclass) != (self.name, self.qtype, self.qclass):
            return False
        if self.transport is not None and self.transport != transport:
            return False
        return self.when == "any" or (self.when == "captive") == captive


@dataclass
class UpstreamDef:
    """What one fake upstream server serves and how it misbehaves."""

    zone: str | None = None
    records: dict[str, Any] | None = None
    exchanges: list[Exchange] = field(default_factory=list)
    captive: bool = False
    portal: str = DEFAULT_PORTAL
    dns64: str | None = None
    delay: float = 0.0
    drop: bool = False
    drop_first: int = 0
    servfail: bool = False
    refused: bool = False
    truncate_udp: bool = False
    ttl: int | None = None
    tcp: bool = True


@dataclass
class NetworkDef:
    name: str
    interface: str
    host_addrs: list[str]
    server_addrs: list[str]
    up: bool = True
    pvd: dict[str, Any] | None = None  # None: no PvD from this network
    pvd_given: bool = False  # the file says `pvd:` (else the default PvD, which yields to config)
    upstream: UpstreamDef = field(default_factory=UpstreamDef)
    upstreams: dict[str, UpstreamDef] = field(default_factory=dict)  # per server address
    line: int = 0

    @property
    def pvd_name(self) -> str | None:
        return None if self.pvd is None else str(self.pvd["name"])

    def server_ips(self) -> list[str]:
        return [str(ipaddress.ip_interface(a).ip) for a in self.server_addrs]

    def servers_of(self, key: str | None) -> list[str]:
        """Server IPs served by upstream ``key`` (an address) or by the default one (None)."""
        if key is not None:
            return [key]
        return [ip for ip in self.server_ips() if ip not in self.upstreams]


@dataclass
class Step:
    index: int  # 1-based, as reports show it
    action: str
    arg: Any
    params: dict[str, Any]
    note: str | None = None
    id: str | None = None
    line: int = 0

    def label(self) -> str:
        arg = self.arg
        if self.action == "query":
            extra = f" {self.params.get('type', 'A')}"
            if self.params.get("transport", "udp") != "udp":
                extra += f" {self.params['transport']}"
            return f"query {arg}{extra}"
        if self.action == "resolvconf":
            return f"resolvconf {'-d' if self.params.get('delete') else '-a'} {arg}"
        if isinstance(arg, (dict, list)) or arg is None:
            if self.action == "ctl" and isinstance(arg, list):
                return "ctl " + " ".join(map(str, arg))
            return self.action
        return f"{self.action} {arg}"


@dataclass
class Scenario:
    path: str
    name: str
    story: str
    networks: dict[str, NetworkDef]
    config: dict[str, Any]
    steps: list[Step]
    xfail: str | None = None
    recorded: Any = None
    tags: list[str] = field(default_factory=list)

    def network_of_pvd(self, pvd: str) -> NetworkDef | None:
        for net in self.networks.values():
            if net.pvd_name == pvd:
                return net
        return None

    def mifdns_config(
        self, section: dict[str, Any] | None = None, *, without: Iterable[str] = (),
        listen: str = "127.0.0.53:53", control_socket: str = "/run/mifdns/control.sock",
    ) -> dict[str, Any]:  # fmt: skip
        """The config mifdns runs with: ``section`` (default: the scenario's ``config``) with
        its ``pvds`` merged into the networks' PvDs by name, minus ``without``, plus the keys
        the harness owns (``listen``, ``control_socket``). A network without a ``pvd`` key gets
        no PvD of its own when ``pvds`` has one for its interface under another name."""
        base = plain(self.config if section is None else section)
        cfg = {k: v for k, v in base.items() if k not in HARNESS_KEYS and k != "pvds"}
        explicit = {p["name"]: p for p in base.get("pvds") or [] if isinstance(p, dict)}
        pvds: list[dict[str, Any]] = []
        claimed = {p.get("interface") for p in explicit.values()}
        for net in self.networks.values():
            if net.pvd is None:
                continue
            if not net.pvd_given and net.pvd_name not in explicit and net.interface in claimed:
                continue  # config.pvds has this interface's PvD under another name
            spec: dict[str, Any] = {"name": net.pvd_name, "interface": net.interface,
                                    "servers": net.server_ips()}  # fmt: skip
            spec.update(plain(net.pvd))
            spec.update(explicit.pop(spec["name"], {}))
            pvds.append(spec)
        pvds += list(explicit.values())
        drop = set(without)
        cfg["pvds"] = [p for p in pvds if p.get("name") not in drop]
        cfg["listen"] = [listen]
        cfg["control_socket"] = control_socket
        return cfg


# -- discovery -----------------------------------------------------------------------------------
def library() -> Path:
    """The scenario library shipped with the package (``mifdns replay`` with no arguments)."""
    return Path(__file__).resolve().parent.parent / "scenarios"


def discover(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Files named on the command line, and *.yaml / *.yml directly inside named directories
    (sorted; subdirectories such as recordings/ are not entered)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(q for q in p.iterdir() if q.suffix in (".yaml", ".yml") and q.is_file())
        else:
            out.append(p)
    return out


def load(path: str | os.PathLike[str]) -> Scenario:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError([f"{p}: cannot read: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError:
        raise ScenarioError([f"{p}: not UTF-8 text"]) from None
    return loads(text, str(p))


def loads(text: str, source: str = "<scenario>") -> Scenario:
    try:
        data = yaml.load(text, Loader=_Loader)  # a SafeLoader subclass
    except _Duplicate as exc:
        raise ScenarioError([f"{source}:{exc.line}: duplicate key {exc.key!r}"]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}" if mark else source
        raise ScenarioError([f"{where}: invalid YAML: {exc.problem or exc.context}"]) from None
    except yaml.YAMLError as exc:
        raise ScenarioError([f"{source}: invalid YAML: {exc}"]) from None
    from mifdns.harness.scenario_check import Checker

    c = Checker(source)
    scenario = c.scenario(data)
    if c.problems:
        raise ScenarioError(c.problems)
    assert scenario is not None
    return scenario


# -- DNS text helpers (dnspython) ----------------------------------------------------------------
def rdtype_of(text: Any) -> int:
    import dns.rdatatype

    if isinstance(text, bool) or not isinstance(text, (str, int)):
        raise ValueError(f"{text!r} is not a record type")  # noqa: TRY004 - a bad value
    try:
        return int(dns.rdatatype.from_text(str(text)))
    except Exception:  # noqa: BLE001 - dnspython's own error kinds vary
        raise ValueError(f"{text!r} is not a record type") from None


def rcode_of(text: Any) -> int:
    import dns.rcode

    if isinstance(text, bool) or not isinstance(text, (str, int)):
        raise ValueError(f"{text!r} is not an rcode")  # noqa: TRY004 - a bad value
    try:
        return int(dns.rcode.from_text(str(text)))
    except Exception:  # noqa: BLE001 - dnspython's own error kinds vary
        raise ValueError(f"{text!r} is not an rcode") from None


def norm_name(text: Any) -> str:
    """A DNS name in lower case with a trailing dot ('.' for the root)."""
    import dns.name

    if not isinstance(text, str) or not text:
        raise ValueError(f"{text!r} is not a domain name")
    try:
        return dns.name.from_text(text).to_text().lower()
    except Exception as exc:  # noqa: BLE001 - dnspython's own error kinds vary
        raise ValueError(f"{text!r} is not a domain name: {exc}") from None


def norm_rdata(rdtype: int, text: Any) -> str:
    """Rdata in canonical presentation form (so 2001:0db8::1 == 2001:db8::1)."""
    import dns.rdata

    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise ValueError(f"{text!r} is not record data")  # noqa: TRY004 - a bad value
    import dns.name

    try:  # names in rdata are absolute, with or without their final dot
        rd = dns.rdata.from_text(
            _IN, _rt(rdtype), str(text), origin=dns.name.root, relativize=False
        )
    except Exception as exc:  # noqa: BLE001 - dnspython's own error kinds vary
        raise ValueError(f"{text!r} is not valid {tname(rdtype)} data: {exc}") from None
    return rd.to_text().lower() if rdtype in _NAME_RDATA else rd.to_text()


def tname(rdtype: int) -> str:
    import dns.rdatatype

    return dns.rdatatype.to_text(_rt(rdtype))


def _rt(rdtype: int) -> Any:
    import dns.rdatatype

    return dns.rdatatype.RdataType.make(rdtype)


def rcode_text(rcode: int) -> str:
    import dns.rcode

    return dns.rcode.to_text(dns.rcode.Rcode.make(rcode))


_IN: Any = 1  # dns.rdataclass.IN


_NAME_RDATA = {2, 5, 12, 39}  # NS, CNAME, PTR, DNAME: names compare case-insensitively


def parse_rr_line(line: str) -> tuple[str, int | None, int, str]:
    """``OWNER [TTL] [CLASS] TYPE RDATA`` -> (owner, ttl, rdtype, rdata text)."""
    import dns.rdataclass
    import dns.rdatatype

    words = str(line).split(None, 1)
    if len(words) < 2:
        raise ValueError(f"{line!r}: expected OWNER [TTL] [CLASS] TYPE RDATA")
    owner, rest = words
    ttl = None
    parts = rest.split(None, 1)
    while parts:
        w = parts[0]
        if w.isdigit() and ttl is None:
            ttl = int(w)
        elif w.upper() in ("IN", "CH", "HS") or w.upper().startswith("CLASS"):
            dns.rdataclass.from_text(w)
        else:
            break
        parts = parts[1].split(None, 1) if len(parts) > 1 else []
    if not parts:
        raise ValueError(f"{line!r}: no record type")
    rdtype = rdtype_of(parts[0])
    rdata = parts[1] if len(parts) > 1 else ""
    return norm_name(owner), ttl, rdtype, rdata


def answer_line(owner: str, rdtype: int, rdata: str) -> str:
    """The canonical ``owner. TYPE rdata`` form expectations and results are compared in."""
    return f"{norm_name(owner)} {tname(rdtype)} {norm_rdata(rdtype, rdata)}"


def response_template(name: str, qtype: int, qclass: int, spec: dict[str, Any]) -> bytes:
    """A response in presentation form -> wire bytes (ID 0)."""
    import dns.flags
    import dns.message
    import dns.name
    import dns.rcode
    import dns.rdata
    import dns.rdataclass
    import dns.rrset

    q = dns.message.make_query(name, _rt(qtype), dns.rdataclass.RdataClass.make(qclass))
    q.flags = 0
    r = dns.message.make_response(q)
    flags = spec.get("flags", ["aa", "rd", "ra"])
    if isinstance(flags, str):
        flags = flags.split()
    value = dns.flags.QR
    for f in flags:
        value |= dns.flags.from_text(str(f).upper())
    r.flags = value
    r.set_rcode(dns.rcode.Rcode.make(rcode_of(spec.get("rcode", "NOERROR"))))
    for section in ("answer", "authority", "additional"):
        for line in spec.get(section) or []:
            owner, ttl, rdtype, rdata = parse_rr_line(line)
            rd = dns.rdata.from_text(
                _IN, _rt(rdtype), rdata, origin=dns.name.root, relativize=False
            )
            rrset = dns.rrset.from_rdata(owner, 300 if ttl is None else ttl, rd)
            target = r.find_rrset(getattr(r, section), rrset.name, rrset.rdclass,
                                  rrset.rdtype, create=True)  # fmt: skip
            target.union_update(rrset)  # type: ignore[no-untyped-call]
    return r.to_wire()


def wire_question(data: bytes) -> tuple[str, int, int]:
    import dns.message

    msg = dns.message.from_wire(data, ignore_trailing=True)
    if len(msg.question) != 1:
        raise ValueError("the recorded response has no (single) question")
    q = msg.question[0]
    return q.name.to_text().lower(), int(q.rdtype), int(q.rdclass)


def cache_matcher(e: Any) -> dict[str, Any]:
    """'NAME [TYPE] [KIND]' or {name, type, kind, rcode, absent} -> a normalized matcher."""
    if isinstance(e, str):
        words = e.split()
        m: dict[str, Any] = {"name": words[0]}
        for w in words[1:]:
            if w.lower() in CACHE_KINDS:
                m["kind"] = w.lower()
            elif w.lower() == "absent":
                m["absent"] = True
            else:
                m["type"] = w
        e = m
    if not isinstance(e, dict) or "name" not in e:
        raise ValueError("an entry is 'NAME [TYPE] [KIND]' or {name, type, kind, rcode, absent}")
    bad = set(e) - {"name", "type", "kind", "rcode", "absent"}
    if bad:
        raise ValueError(f"unknown key(s) {', '.join(map(repr, sorted(bad)))}")
    out: dict[str, Any] = {"name": norm_name(e["name"])}
    if e.get("type") is not None:
        out["type"] = tname(rdtype_of(e["type"]))
    if e.get("kind") is not None:
        if e["kind"] not in CACHE_KINDS:
            raise ValueError(f"kind {e['kind']!r}: one of {', '.join(CACHE_KINDS)}")
        out["kind"] = e["kind"]
    if e.get("rcode") is not None:
        out["rcode"] = rcode_text(rcode_of(e["rcode"]))
    if "absent" in e:
        if not isinstance(e["absent"], bool):
            raise ValueError("absent must be true or false")
        out["absent"] = e["absent"]
    return out
