"""One check per step action of the scenario format (docs/scenarios.md, "Steps"): each takes the
Checker, the Step and its ``where`` prefix, reports problems through the Checker, and may
normalize the step's parameters for the replayer (``upstream`` exchanges become Exchange
objects, behaviours are checked and renamed).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mifdns.harness.scenario import (
    ACTIONS,
    BEHAVIOURS,
    FLAG_NAMES,
    MAX_ADVANCE,
    TRANSPORTS,
    Map,
    Scenario,
    Step,
    answer_line,
    cache_matcher,
    norm_name,
    norm_rdata,
    parse_rr_line,
    plain,
    rcode_of,
    rdtype_of,
)
from mifdns.harness.scenario_check import (
    is_bool,
    is_count,
    is_ipv4,
    is_rdtype,
    is_seconds,
    is_text,
)

if TYPE_CHECKING:
    from mifdns.harness.scenario_check import Checker

__all__ = ["CHECKS"]


def _check_query(c: Checker, s: Step, where: str) -> None:
    try:
        norm_name(s.arg)
    except ValueError as exc:
        c.problem(s.line, where, str(exc))
        return
    c.params(s, where, {
        "type": is_rdtype,
        "transport": lambda v: None if v in TRANSPORTS else "must be udp or tcp",
        "edns": is_bool, "dnssec": is_bool, "timeout": is_seconds(30),
        "expect": lambda v: None if isinstance(v, dict) else "must be a mapping",
    })  # fmt: skip
    expect = s.params.get("expect")
    if not isinstance(expect, dict):
        return
    try:
        qtype = rdtype_of(s.params.get("type", "A"))
    except ValueError:
        return
    w = f"{where}.expect"
    c.keys(expect, ("rcode", "answers", "answer_section", "flags", "from", "asked", "cached",
                    "ede", "max_ttl", "min_ttl", "no_reply"), w, s.line)  # fmt: skip
    if "rcode" in expect:
        try:
            rcode_of(expect["rcode"])
        except ValueError as exc:
            c.problem(s.line, f"{w}.rcode", str(exc))
    for key in ("answers", "answer_section"):
        v = expect.get(key)
        if key not in expect:
            continue
        if not isinstance(v, list):
            c.problem(s.line, f"{w}.{key}", "must be a list (empty: no such records)")
            continue
        for i, item in enumerate(v):
            try:
                if key == "answers":
                    norm_rdata(qtype, item)
                else:
                    owner, _ttl, rt, rd = parse_rr_line(str(item))
                    answer_line(owner, rt, rd)
            except ValueError as exc:
                c.problem(s.line, f"{w}.{key}[{i}]", str(exc))
    if "flags" in expect:
        f = expect["flags"]
        names = list(f) if isinstance(f, (list, dict)) else str(f).split()
        for n in names:
            if str(n).lower() not in FLAG_NAMES:
                c.problem(s.line, f"{w}.flags", f"{n!r}: one of {', '.join(FLAG_NAMES)}")
        if isinstance(f, dict) and not all(isinstance(x, bool) for x in f.values()):
            c.problem(s.line, f"{w}.flags", "a mapping of flag: true/false")
    if "from" in expect:
        v = expect["from"]
        if v not in ("cache", "local"):
            c.net_ref(v, f"{w}.from", s.line)
    if "asked" in expect:
        v = expect["asked"]
        if not isinstance(v, list):
            c.problem(s.line, f"{w}.asked", "must be a list of networks (empty: none)")
        else:
            for i, n in enumerate(v):
                c.net_ref(n, f"{w}.asked[{i}]", s.line)
    for key in ("cached", "no_reply"):
        if key in expect and not isinstance(expect[key], bool):
            c.problem(s.line, f"{w}.{key}", "must be true or false")
    for key in ("ede", "max_ttl", "min_ttl"):
        if key in expect and is_count(expect[key]):
            c.problem(s.line, f"{w}.{key}", "must be a non-negative integer")


def _check_expect_cache(c: Checker, s: Step, where: str) -> None:
    c.params(s, where, {"within": is_seconds(10)})
    if not isinstance(s.arg, dict) or not s.arg:
        c.problem(s.line, where, "must map PvD names (or '*') to a list of entries or 'empty'")
        return
    for pvd, entries in s.arg.items():
        w = f"{where}.{pvd}"
        if pvd != "*":
            c.pvd_ref(pvd, w, s.line)
        if entries == "empty":
            continue
        if not isinstance(entries, list):
            c.problem(s.line, w, "must be a list of entries or 'empty'")
            continue
        for i, e in enumerate(entries):
            try:
                cache_matcher(e)
            except ValueError as exc:
                c.problem(s.line, f"{w}[{i}]", str(exc))


def _check_query_log(c: Checker, s: Step, where: str, *, many: bool) -> None:
    refs = s.arg if isinstance(s.arg, list) and many else [s.arg]
    for r in refs:
        c.net_ref(r, where, s.line)
    extra: dict[str, Callable[[Any], str | None]] = {
        "name": lambda v: _name_err(v),
        "type": is_rdtype,
        "since": c.since,
    }
    if many:
        extra["names"] = lambda v: (
            "must be a list of names" if not isinstance(v, list)
            else next((e for e in map(_name_err, v) if e), None))  # fmt: skip
    else:
        extra["count"] = is_count
        extra["transport"] = lambda v: None if v in TRANSPORTS else "must be udp or tcp"
    c.params(s, where, extra)
    if ("name" in s.params) == ("names" in s.params) and many:
        c.problem(s.line, where, "give name or names (one of them)")
    if not many and "name" not in s.params:
        c.problem(s.line, where, "missing key 'name'")


def _name_err(v: Any) -> str | None:
    try:
        norm_name(v)
        return None
    except ValueError as exc:
        return str(exc)


def _check_expect_pvd(c: Checker, s: Step, where: str) -> None:
    c.pvd_ref(s.arg, where, s.line)
    c.params(s, where, {
        "absent": is_bool, "within": is_seconds(10),
        **{k: lambda v: None for k in ("state", "captive", "nat64_prefixes", "servers",
                                       "domains", "interface", "default_route", "exclusive",
                                       "search_domains", "networks", "origin", "admin_detached")},
    })  # fmt: skip


def _check_link(c: Checker, s: Step, where: str) -> None:
    c.net_ref(s.arg, where, s.line, at_ok=False)
    allowed: dict[str, Callable[[Any], str | None]] = {"wait": is_bool}
    if s.action == "link_down":
        allowed["carrier"] = is_bool
    c.params(s, where, allowed)


def _check_rename(c: Checker, s: Step, where: str) -> None:
    c.net_ref(s.arg, where, s.line, at_ok=False)

    def ifname(v: Any) -> str | None:
        ok = isinstance(v, str) and 0 < len(v) <= 15 and not set(v) & set("/: \t")
        return None if ok else "an interface name: 1-15 characters, no '/', ':' or spaces"

    c.params(s, where, {"to": ifname, "wait": is_bool}, required=("to",))


def _check_pvd_cmd(c: Checker, s: Step, where: str) -> None:
    if s.action == "attach" and isinstance(s.arg, dict):
        from mifdns import config as cfgmod
        from mifdns.errors import ConfigError

        try:
            cfgmod.pvd_spec_from_mapping(plain(s.arg), where="spec")
        except ConfigError as exc:
            for p in exc.problems:
                c.problem(s.line, where, p)
    elif s.action == "flush" and s.arg is None:
        pass
    else:
        c.pvd_ref(s.arg, where, s.line)
    c.params(s, where, {})


def _check_resolvconf(c: Checker, s: Step, where: str) -> None:
    if not isinstance(s.arg, str) or not s.arg or any(ch.isspace() for ch in s.arg):
        c.problem(s.line, where, f"{s.arg!r}: expected a record name IFACE[.PROTO]")
    c.params(s, where, {"text": is_text, "delete": is_bool, "exclusive": is_bool,
                        "private": is_bool, "fails": is_bool})  # fmt: skip
    if ("text" in s.params) == bool(s.params.get("delete")):
        c.problem(s.line, where, "give text (resolvconf -a) or delete: true (resolvconf -d)")


def _check_captive(c: Checker, s: Step, where: str) -> None:
    c.net_ref(s.arg, where, s.line, at_ok=False)
    allowed: dict[str, Callable[[Any], str | None]] = {
        "tell": is_bool,
        "pvd": lambda v: None if isinstance(v, str) else "a PvD name",
    }
    if s.action == "captive_on":
        allowed["portal"] = lambda v: None if is_ipv4(v) else "an IPv4 address"
    c.params(s, where, allowed)
    tell = s.params.get("tell", True)
    net = c.networks.get(s.arg) if isinstance(s.arg, str) else None
    if tell and net is not None and "pvd" not in s.params and net.pvd_name is None:
        c.problem(s.line, where, f"network {s.arg} has no PvD: give pvd: NAME, or tell: false")


def _check_upstream(c: Checker, s: Step, where: str) -> None:
    c.net_ref(s.arg, where, s.line)
    c.params(s, where, {
        "set": lambda v: None if isinstance(v, dict) else "a mapping of behaviours",
        "add_zone": is_text,
        "add_records": lambda v: None,
        "remove_records": lambda v: None if isinstance(v, list) else "a list of 'NAME [TYPE]'",
        "exchanges": lambda v: None if isinstance(v, list) else "a list of exchanges",
        "clear_log": is_bool,
    })  # fmt: skip
    if isinstance(s.params.get("set"), dict):
        b = s.params["set"]
        c.keys(b, BEHAVIOURS + ("tcp",), f"{where}.set", s.line)
        if "tcp" in b:
            c.problem(s.line, f"{where}.set.tcp", "cannot change while running")
        checked: dict[str, Any] = {}
        c.behaviours(b, checked, f"{where}.set", s.line)
        s.params["set"] = checked
    if "add_zone" in s.params and isinstance(s.params["add_zone"], str):
        c.zone_text(s.params["add_zone"], f"{where}.add_zone", s.line)
    if "add_records" in s.params:
        c.records(s.params["add_records"], f"{where}.add_records", s.line)
    for i, r in enumerate(s.params.get("remove_records") or []):
        words = str(r).split()
        if not words or _name_err(words[0]) or (len(words) > 1 and is_rdtype(words[1])):
            c.problem(s.line, f"{where}.remove_records[{i}]", f"{r!r}: expected 'NAME [TYPE]'")
    exchanges = []
    for i, e in enumerate(s.params.get("exchanges") or []):
        x = c.exchange(e, f"{where}.exchanges[{i}]", s.line)
        if x is not None:
            exchanges.append(x)
    if "exchanges" in s.params:
        s.params["exchanges"] = exchanges


def _check_advance(c: Checker, s: Step, where: str) -> None:
    v = s.arg
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= MAX_ADVANCE:
        c.problem(
            s.line,
            where,
            f"{v!r}: seconds, more than 0 and at most {MAX_ADVANCE:g} (time passes for real)",
        )
    c.params(s, where, {})


def _check_reload(c: Checker, s: Step, where: str) -> None:
    c.params(s, where, {
        "without": lambda v: None if isinstance(v, list) else "a list of PvD names",
        "raw": is_text, "rejected": is_bool,
    })  # fmt: skip
    if s.arg is not None and not isinstance(s.arg, dict):
        c.problem(s.line, where, "must be the replacement config section (a mapping), or null")
        return
    if "raw" in s.params:
        if s.arg is not None or "without" in s.params:
            c.problem(s.line, where, "raw replaces the whole file: no config section or without")
        return
    if s.params.get("rejected"):
        return
    sc = Scenario(c.source, "", "", c.networks, {}, [])
    c.check_config(sc, s.arg if s.arg is not None else Map(), s.line, where,
                   without=s.params.get("without") or [])  # fmt: skip


def _check_ctl(c: Checker, s: Step, where: str) -> None:
    if (
        not isinstance(s.arg, list)
        or not s.arg
        or not all(isinstance(a, (str, int, float)) and not isinstance(a, bool) for a in s.arg)
    ):
        c.problem(
            s.line,
            where,
            "must be the list of `mifdns ctl` arguments, e.g. [explain, www.corp.example]",
        )
    c.params(s, where, {"expect": lambda v: None, "fails": is_bool})


CHECKS: dict[str, Callable[[Checker, Step, str], None]] = {
    "query": _check_query,
    "expect_cache": _check_expect_cache,
    "expect_no_query": lambda c, s, w: _check_query_log(c, s, w, many=True),
    "expect_query": lambda c, s, w: _check_query_log(c, s, w, many=False),
    "expect_pvd": _check_expect_pvd,
    "link_down": _check_link,
    "link_up": _check_link,
    "rename": _check_rename,
    "detach": _check_pvd_cmd,
    "attach": _check_pvd_cmd,
    "remove": _check_pvd_cmd,
    "flush": _check_pvd_cmd,
    "resolvconf": _check_resolvconf,
    "captive_on": _check_captive,
    "captive_login": _check_captive,
    "upstream": _check_upstream,
    "advance": _check_advance,
    "reload": _check_reload,
    "ctl": _check_ctl,
}

assert tuple(CHECKS) == ACTIONS, "scenario.ACTIONS and the step checks differ"
