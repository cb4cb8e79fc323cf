"""Checks a scenario file's data and builds the model (mifdns.harness.scenario), collecting every
problem as one line: ``FILE:LINE: where: message``. The top level, networks, upstreams and
recorded exchanges are checked here; each step action has its check in scenario_steps.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml

from mifdns.harness.scenario import (
    BEHAVIOURS,
    DEFAULT_HOST_ADDRS,
    DEFAULT_SERVER_ADDRS,
    FORMAT_VERSION,
    HARNESS_KEYS,
    NET_RE,
    PVD_RE,
    TRANSPORTS,
    WHEN,
    Exchange,
    Map,
    NetworkDef,
    Scenario,
    Step,
    UpstreamDef,
    norm_name,
    norm_rdata,
    plain,
    rdtype_of,
    response_template,
    wire_question,
)

__all__ = ["Checker"]


class _Bad(Exception):
    pass


class Checker:
    """Collects every problem of one file as ``FILE:LINE: where: message`` lines."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[str] = []
        self.networks: dict[str, NetworkDef] = {}
        self.step_ids: set[str] = set()

    def problem(self, line: int, where: str, msg: str) -> None:
        loc = f"{self.source}:{line}" if line else self.source
        where = where.replace(").", "): ", 1)  # steps[3] (query): expect.rcode
        self.problems.append(f"{loc}: {where}: {msg}" if where else f"{loc}: {msg}")

    @staticmethod
    def line_of(value: Any, default: int) -> int:
        return getattr(value, "line", 0) or default

    def keys(self, m: dict[str, Any], allowed: Iterable[str], where: str, line: int,
             required: Iterable[str] = ()) -> bool:  # fmt: skip
        ok = True
        allowed = list(allowed)
        for k in m:
            if k not in allowed:
                hint = _suggest(str(k), allowed)
                self.problem(line, where, f"unknown key {k!r}{hint}")
                ok = False
        for k in required:
            if k not in m:
                self.problem(line, where, f"missing key {k!r}")
                ok = False
        return ok

    # ---- top level
    def scenario(self, data: Any) -> Scenario | None:
        if not isinstance(data, dict):
            self.problem(0, "", "expected a mapping (story, networks, config, steps)")
            return None
        line = self.line_of(data, 0)
        top = ("format", "name", "story", "xfail", "recorded", "tags", "networks", "config",
               "steps")  # fmt: skip
        self.keys(data, top, "", line, required=("story", "networks", "steps"))
        fmt = data.get("format", FORMAT_VERSION)
        if fmt != FORMAT_VERSION:
            self.problem(line, "format", f"{fmt!r}: this mifdns reads format 1")
        name = data.get("name") or Path(self.source).stem
        if not isinstance(name, str):
            self.problem(line, "name", "must be a string")
            name = str(name)
        story = data.get("story")
        if "story" in data and (not isinstance(story, str) or not story.strip()):
            self.problem(line, "story", "must be a non-empty paragraph of text")
        xfail = data.get("xfail")
        if xfail is not None and (not isinstance(xfail, str) or not xfail.strip()):
            self.problem(line, "xfail", "must be the reason, as a non-empty string")
        tags = data.get("tags") or []
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            self.problem(line, "tags", "must be a list of strings")
            tags = []
        networks = self.networks_section(data.get("networks"), line)
        config = data.get("config") or Map()
        if not isinstance(config, dict):
            self.problem(line, "config", "must be a mapping (the mifdns config under test)")
            config = Map()
        steps_data = data.get("steps")
        steps: list[Step] = []
        if "steps" in data:
            if not isinstance(steps_data, list) or not steps_data:
                self.problem(line, "steps", "must be a non-empty list of steps")
            else:
                steps = self.steps_section(steps_data, line)
        sc = Scenario(
            self.source,
            name,
            str(story or "").strip(),
            networks,
            config,
            steps,
            xfail=xfail,
            recorded=plain(data.get("recorded")),
            tags=list(tags),
        )
        self.check_config(sc, config, self.line_of(config, line), "config")
        return sc

    def check_config(self, sc: Scenario, section: dict[str, Any], line: int, where: str,
                     without: Iterable[str] = ()) -> None:  # fmt: skip
        from mifdns import config as cfgmod
        from mifdns.errors import ConfigError

        for k in HARNESS_KEYS:
            if k in section:
                self.problem(line, f"{where}.{k}", "is set by the replayer; leave it out")
        pvds = section.get("pvds")
        named = isinstance(pvds, list) and all(isinstance(p, dict) and "name" in p for p in pvds)
        if pvds is not None and not named:
            self.problem(line, f"{where}.pvds", "must be a list of mappings, each with a name")
            return
        if not sc.networks:
            return
        merged = sc.mifdns_config(section, without=without, control_socket="/tmp/x.sock")
        try:
            cfgmod.parse_config(yaml.safe_dump(merged, sort_keys=False), "")
        except ConfigError as exc:
            for p in exc.problems:
                p = re.sub(r"^:\d+(:\d+)?: ", "", p)
                net = self._network_of(merged, p)
                if net is not None:  # a key the network's own ``pvd:`` gave: say so, there
                    network, path, rest = net
                    self.problem(network.line, f"networks.{network.name}.pvd.{path}", rest)
                else:
                    self.problem(line, where, f"the merged mifdns config is invalid: {p}")

    def _network_of(self, merged: dict[str, Any], problem: str) -> tuple[Any, str, str] | None:
        """(network, path under its pvd, message) if ``problem`` (about the merged config) is
        about a key that a network's ``pvd:`` mapping set, else None."""
        m = re.match(r"^pvds\[(\d+)\]\.([A-Za-z0-9_]+)([^:]*): (.*)$", problem)
        pvds = merged.get("pvds") or []
        if m is None or int(m.group(1)) >= len(pvds):
            return None
        name = pvds[int(m.group(1))].get("name")
        for net in self.networks.values():
            if net.pvd_name == name and net.pvd is not None and m.group(2) in net.pvd:
                return net, m.group(2) + m.group(3), m.group(4)
        return None

    # ---- networks
    def networks_section(self, data: Any, line: int) -> dict[str, NetworkDef]:
        if not isinstance(data, dict) or not data:
            self.problem(line, "networks", "must be a non-empty mapping of network names")
            return {}
        out: dict[str, NetworkDef] = {}
        ifnames: dict[str, str] = {}
        pvd_names: dict[str, str] = {}
        for name, nd in data.items():
            where = f"networks.{name}"
            nline = self.line_of(nd, line)
            if not isinstance(name, str) or not NET_RE.match(name) or len(name) > 40:
                self.problem(
                    nline,
                    where,
                    "network names are 1-40 of A-Z a-z 0-9 _ . - (not starting with . or -)",
                )
                continue
            net = self.network(name, nd if nd is not None else Map(), where, nline)
            if net is None:
                continue
            if net.interface in ifnames:
                self.problem(
                    nline,
                    f"{where}.interface",
                    f"{net.interface!r} is already network {ifnames[net.interface]}'s",
                )
            ifnames[net.interface] = name
            if net.pvd_name is not None:
                if net.pvd_name in pvd_names:
                    self.problem(
                        nline,
                        f"{where}.pvd",
                        f"PvD name {net.pvd_name!r} is already network {pvd_names[net.pvd_name]}'s",
                    )
                pvd_names[net.pvd_name] = name
            out[name] = net
        self.networks = out
        return out

    def network(self, name: str, nd: Any, where: str, line: int) -> NetworkDef | None:
        if not isinstance(nd, dict):
            self.problem(line, where, "must be a mapping")
            return None
        self.keys(nd, ("interface", "host_addrs", "server_addrs", "up", "pvd", "upstream",
                       "upstreams", "note"), where, line)  # fmt: skip
        ifname = nd.get("interface", name)
        if not isinstance(ifname, str) or not ifname or len(ifname) > 15 or "/" in ifname \
                or ":" in ifname or any(ch.isspace() for ch in ifname):  # fmt: skip
            self.problem(line, f"{where}.interface",
                         f"{ifname!r}: 1-15 characters, no '/', ':' or spaces"
                         + (" (the network's name is too long to be one: give interface)"
                            if "interface" not in nd else ""))  # fmt: skip
            ifname = "invalid0"
        host = self.addr_list(nd.get("host_addrs", list(DEFAULT_HOST_ADDRS)),
                              f"{where}.host_addrs", line)  # fmt: skip
        servers = self.addr_list(nd.get("server_addrs", list(DEFAULT_SERVER_ADDRS)),
                                 f"{where}.server_addrs", line)  # fmt: skip
        up = nd.get("up", True)
        if not isinstance(up, bool):
            self.problem(line, f"{where}.up", "must be true or false")
            up = True
        pvd = self.network_pvd(nd.get("pvd", Map()), name, f"{where}.pvd", line)
        upstream = self.upstream(nd.get("upstream") or Map(), f"{where}.upstream", line)
        per: dict[str, UpstreamDef] = {}
        ups = nd.get("upstreams") or {}
        if not isinstance(ups, dict):
            self.problem(line, f"{where}.upstreams", "must map server addresses to upstreams")
            ups = {}
        ips = [str(ipaddress.ip_interface(a).ip) for a in servers]
        for addr, ud in ups.items():
            key = str(addr)
            if key not in ips:
                self.problem(
                    self.line_of(ud, line),
                    f"{where}.upstreams.{key}",
                    f"not one of this network's server addresses {ips}",
                )
                continue
            per[key] = self.upstream(ud or Map(), f"{where}.upstreams.{key}",
                                     self.line_of(ud, line))  # fmt: skip
        return NetworkDef(name, ifname, host, servers, up, pvd, "pvd" in nd, upstream, per, line)

    def addr_list(self, value: Any, where: str, line: int) -> list[str]:
        if not isinstance(value, list) or not value:
            self.problem(line, where, "must be a non-empty list of ADDRESS/PREFIXLEN")
            return []
        out = []
        for i, a in enumerate(value):
            if not isinstance(a, str) or "/" not in a:
                self.problem(
                    line, f"{where}[{i}]", f"{a!r}: expected ADDRESS/PREFIXLEN (quote it in YAML)"
                )
                continue
            try:
                ipaddress.ip_interface(a)
            except ValueError:
                self.problem(line, f"{where}[{i}]", f"{a!r}: not an address with prefix length")
                continue
            out.append(a)
        return out

    def network_pvd(self, value: Any, net: str, where: str, line: int) -> dict[str, Any] | None:
        if value is False or value is None:
            return None
        if isinstance(value, str):
            value = {"name": value}
        if not isinstance(value, dict):
            self.problem(line, where, "must be a PvD name, a mapping of PvD keys, or false")
            return None
        out = dict(value)
        out.setdefault("name", net)
        if not isinstance(out["name"], str) or not PVD_RE.match(out["name"]):
            self.problem(line, f"{where}.name", f"{out['name']!r}: 1-64 of A-Z a-z 0-9 _ . -")
        return out

    def upstream(self, ud: Any, where: str, line: int) -> UpstreamDef:
        u = UpstreamDef()
        if not isinstance(ud, dict):
            self.problem(line, where, "must be a mapping")
            return u
        line = self.line_of(ud, line)
        self.keys(ud, ("zone", "records", "exchanges", "tcp", "note") + BEHAVIOURS, where, line)
        zone = ud.get("zone")
        if zone is not None:
            if not isinstance(zone, str):
                self.problem(line, f"{where}.zone", "must be zone-file text")
            else:
                self.zone_text(zone, f"{where}.zone", line)
                u.zone = zone
        records = ud.get("records")
        if records is not None and self.records(records, f"{where}.records", line):
            u.records = plain(records)
        self.behaviours(ud, u, where, line)
        ex = ud.get("exchanges") or []
        if not isinstance(ex, list):
            self.problem(line, f"{where}.exchanges", "must be a list")
            ex = []
        for i, e in enumerate(ex):
            x = self.exchange(e, f"{where}.exchanges[{i}]", self.line_of(e, line))
            if x is not None:
                u.exchanges.append(x)
        return u

    def behaviours(self, ud: dict[str, Any], u: Any, where: str, line: int) -> None:
        """Upstream behaviours, on an UpstreamDef (network) or a dict (the `upstream` step)."""

        def put(key: str, value: Any) -> None:
            if isinstance(u, dict):
                u[key] = value
            else:
                setattr(u, key, value)

        for key in ("drop", "servfail", "refused", "truncate_udp", "tcp"):
            if key in ud:
                if not isinstance(ud[key], bool):
                    self.problem(line, f"{where}.{key}", "must be true or false")
                else:
                    put(key, ud[key])
        if "delay" in ud:
            d = ud["delay"]
            if isinstance(d, bool) or not isinstance(d, (int, float)) or not 0 <= d <= 30:
                self.problem(line, f"{where}.delay", "must be seconds, 0 to 30")
            else:
                put("delay", float(d))
        for key, lo, hi in (("drop_first", 0, 1000), ("ttl", 0, 2**31 - 1)):
            if key in ud and ud[key] is not None:
                v = ud[key]
                if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                    self.problem(line, f"{where}.{key}", f"must be an integer, {lo} to {hi}")
                else:
                    put(key, v)
        if "ttl" in ud and ud["ttl"] is None:
            put("ttl", None)
        if "dns64" in ud:
            v = ud["dns64"]
            if v is not None:
                try:
                    net = ipaddress.IPv6Network(str(v))
                    if net.prefixlen not in (32, 40, 48, 56, 64, 96):
                        raise ValueError
                except ValueError:
                    self.problem(
                        line, f"{where}.dns64", f"{v!r}: an IPv6 prefix of length 32/40/48/56/64/96"
                    )
                    v = None
            put("dns64", v)
        if "portal" in ud:
            if not self.ipv4(ud["portal"]):
                self.problem(line, f"{where}.portal", f"{ud['portal']!r}: not an IPv4 address")
            else:
                put("portal", ud["portal"])
        if "captive" in ud:
            v = ud["captive"]
            if isinstance(v, bool):
                put("captive", v)
            elif self.ipv4(v):
                put("captive", True)
                put("portal", v)
            else:
                self.problem(
                    line, f"{where}.captive", "must be true, false or the portal's IPv4 address"
                )

    @staticmethod
    def ipv4(v: Any) -> bool:
        return is_ipv4(v)

    def zone_text(self, text: str, where: str, line: int) -> None:
        from dnslib import RR  # type: ignore[import-untyped]

        try:
            RR.fromZone(text)
        except Exception as exc:  # noqa: BLE001 - dnslib raises assorted errors
            self.problem(line, where, f"cannot parse the zone text: {exc}")

    def records(self, value: Any, where: str, line: int) -> bool:
        if not isinstance(value, dict):
            self.problem(line, where, "must map names to {TYPE: rdata or [rdata...]}")
            return False
        ok = True
        for name, types in value.items():
            w = f"{where}.{name}"
            try:
                norm_name(name)
            except ValueError as exc:
                self.problem(line, w, str(exc))
                ok = False
                continue
            if not isinstance(types, dict):
                self.problem(self.line_of(types, line), w, "must map record types to rdata")
                ok = False
                continue
            for t, vals in types.items():
                try:
                    rt = rdtype_of(t)
                    for v in [vals] if not isinstance(vals, list) else vals:
                        norm_rdata(rt, v)
                except ValueError as exc:
                    self.problem(self.line_of(types, line), f"{w}.{t}", str(exc))
                    ok = False
        return ok

    def exchange(self, e: Any, where: str, line: int) -> Exchange | None:
        if not isinstance(e, dict):
            self.problem(line, where, "must be a mapping with query and response")
            return None
        if not self.keys(e, ("query", "response", "when", "server", "note", "times"), where,
                         line, required=("response",)):  # fmt: skip
            return None
        times = e.get("times")
        if times is not None and (isinstance(times, bool) or not isinstance(times, int)
                                  or times < 1):  # fmt: skip
            self.problem(line, f"{where}.times", "must be a count, 1 or more")
            return None
        when = e.get("when", "any")
        if when not in WHEN:
            self.problem(line, f"{where}.when", f"{when!r}: one of {', '.join(WHEN)}")
            return None
        resp = e["response"]
        if not isinstance(resp, dict):
            self.problem(
                line,
                f"{where}.response",
                "must be a mapping (wire: BASE64, or rcode/flags/answer/authority/additional)",
            )
            return None
        drop = resp.get("drop", False)
        if not isinstance(drop, bool) or drop and set(resp) - {"drop", "note"}:
            self.problem(line, f"{where}.response", "drop: true stands alone (no response)")
            return None
        try:
            if drop:
                template = b""
                wire_q = None
            elif "wire" in resp:
                if set(resp) - {"wire", "note"}:
                    raise _Bad("wire cannot be combined with presentation keys")
                raw = resp["wire"]
                if not isinstance(raw, str):
                    raise _Bad("wire must be base64 text")
                try:
                    template = base64.b64decode("".join(raw.split()), validate=True)
                except (binascii.Error, ValueError):
                    raise _Bad("wire is not valid base64") from None
                try:
                    wire_q = wire_question(template)
                except Exception as exc:  # noqa: BLE001 - dnspython's own error kinds vary
                    raise _Bad(f"wire is not a DNS message: {exc}") from None
            else:
                bad = set(resp) - {"rcode", "flags", "answer", "authority", "additional",
                                   "note"}  # fmt: skip
                if bad:
                    raise _Bad(f"unknown key(s) {', '.join(map(repr, sorted(bad)))}")
                template = b""
                wire_q = None
        except _Bad as exc:
            self.problem(line, f"{where}.response", str(exc))
            return None
        q = e.get("query")
        transport = None
        try:
            if q is None:
                if wire_q is None:
                    raise ValueError("needs a query (a wire response carries its own question)")
                name, qtype, qclass = wire_q
            else:
                if isinstance(q, str):
                    words = q.split()
                    q = {"name": words[0], "type": words[1] if len(words) > 1 else "A"}
                if not isinstance(q, dict):
                    raise ValueError("must be 'NAME TYPE' or {name, type, class, transport}")
                bad = set(q) - {"name", "type", "class", "transport"}
                if bad or "name" not in q:
                    raise ValueError("keys are name (required), type, class, transport")
                name = norm_name(q["name"])
                qtype = rdtype_of(q.get("type", "A"))
                qclass = {"IN": 1, "CH": 3, "HS": 4}.get(str(q.get("class", "IN")).upper(), 0)
                if not qclass:
                    raise ValueError(f"class {q.get('class')!r}: IN, CH or HS")
                transport = q.get("transport")
                if transport is not None and transport not in TRANSPORTS:
                    raise ValueError(f"transport {transport!r}: udp or tcp")
        except ValueError as exc:
            self.problem(line, f"{where}.query", str(exc))
            return None
        if not template and not drop:
            try:
                template = response_template(name, qtype, qclass, resp)
            except Exception as exc:  # noqa: BLE001 - dnspython's own error kinds vary
                self.problem(line, f"{where}.response", f"cannot build the response: {exc}")
                return None
        server = e.get("server")
        return Exchange(
            name,
            qtype,
            qclass,
            transport,
            when,
            template,
            str(server) if server is not None else None,
            e.get("note"),
            drop,
            times,
        )

    # ---- steps
    def steps_section(self, data: list[Any], line: int) -> list[Step]:
        # ids first, so `since` may name a later-declared id only if it comes earlier in time
        out: list[Step] = []
        for i, sd in enumerate(data, 1):
            sline = self.line_of(sd, line)
            where = f"steps[{i}]"
            if not isinstance(sd, dict):
                self.problem(sline, where, "must be a mapping with one action key")
                continue
            actions = [k for k in sd if k in CHECKS]
            if len(actions) != 1:
                found = ", ".join(map(str, sd)) or "nothing"
                self.problem(
                    sline, where, f"needs exactly one action ({', '.join(CHECKS)}); found {found}"
                )
                continue
            action = actions[0]
            where = f"steps[{i}] ({action})"
            params = {k: v for k, v in sd.items() if k not in (action, "note", "id")}
            note = sd.get("note")
            if note is not None and not isinstance(note, str):
                self.problem(sline, f"{where}.note", "must be text")
            sid = sd.get("id")
            if sid is not None:
                if not isinstance(sid, str) or not sid:
                    self.problem(sline, f"{where}.id", "must be a non-empty string")
                elif sid in self.step_ids:
                    self.problem(sline, f"{where}.id", f"{sid!r} is already used")
                else:
                    self.step_ids.add(sid)
            step = Step(i, action, sd[action], params, note, sid, sline)
            CHECKS[action](self, step, where)
            out.append(step)
        return out

    # helpers for step checks
    def net_ref(self, v: Any, where: str, line: int, *, at_ok: bool = True) -> bool:
        if not isinstance(v, str):
            self.problem(line, where, f"{v!r}: expected a network name")
            return False
        net, _, addr = v.partition("@")
        if net not in self.networks:
            self.problem(
                line,
                where,
                f"{net!r} is not a network of this scenario ({', '.join(self.networks) or 'none'})",
            )
            return False
        if addr:
            if not at_ok:
                self.problem(line, where, "expected a network name without @ADDRESS")
                return False
            if addr not in self.networks[net].server_ips():
                self.problem(line, where, f"{addr!r} is not a server address of network {net}")
                return False
        return True

    def pvd_ref(self, v: Any, where: str, line: int) -> bool:
        if not isinstance(v, str) or not PVD_RE.match(v):
            self.problem(line, where, f"{v!r}: expected a PvD name")
            return False
        return True

    def params(self, step: Step, where: str, allowed: dict[str, Callable[[Any], str | None]],
               required: Iterable[str] = ()) -> None:  # fmt: skip
        self.keys(step.params, list(allowed), where, step.line, required)
        for k, check in allowed.items():
            if k in step.params:
                err = check(step.params[k])
                if err:
                    self.problem(step.line, f"{where}.{k}", err)

    def since(self, v: Any) -> str | None:
        if v not in self.step_ids:
            return f"{v!r} is not the id of an earlier step"
        return None


def _suggest(key: str, known: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(key, known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def is_ipv4(v: Any) -> bool:
    if not isinstance(v, str):
        return False
    try:
        ipaddress.IPv4Address(v)
        return True
    except ValueError:
        return False


def is_bool(v: Any) -> str | None:
    return None if isinstance(v, bool) else "must be true or false"


def is_text(v: Any) -> str | None:
    return None if isinstance(v, str) else "must be text"


def is_seconds(hi: float) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        ok = not isinstance(v, bool) and isinstance(v, (int, float)) and 0 <= v <= hi
        return None if ok else f"must be seconds, 0 to {hi:g}"

    return check


def is_rdtype(v: Any) -> str | None:
    try:
        rdtype_of(v)
        return None
    except ValueError as exc:
        return str(exc)


def is_count(v: Any) -> str | None:
    ok = isinstance(v, int) and not isinstance(v, bool) and v >= 0
    return None if ok else "must be a count (0 or more)"


from mifdns.harness.scenario_steps import CHECKS  # the step checks use Checker: last
