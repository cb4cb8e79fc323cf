"""A resolvconf(8) compatible front end: DHCP clients and VPN scripts feed PvDs unchanged.

``mifdns resolvconf -a RECORD < resolv.conf`` creates or replaces the runtime PvD named RECORD
(``IFACE[.PROTO]``, e.g. ``eth0.dhclient``, ``eth0.ip6.dhclient``, ``tun.wg0``) on the interface
the record names: ``nameserver`` lines become its servers, ``domain`` and ``search`` lines its
search + routing domains (both kept, as systemd-resolved's shim does: a per-network record is not
a libc file where the last line wins). ``options`` lines are read and ignored (mifdns talks EDNS
itself). Input without any ``nameserver`` removes the record: it can resolve nothing.
``-d RECORD...`` removes them (their cache partitions go with them; a record that is not there
is not an error). ``-x`` (exclusive; also ``IF_EXCLUSIVE`` in the environment) adds ``~.`` and
makes the PvD exclusive: while it exists, names no other PvD's domain claims go only to it (a
full-tunnel VPN's DNS does not leak). ``-p`` (private; ``IF_PRIVATE``) makes its domains
routing-only and never a default route. ``-m METRIC`` is accepted and ignored (routing is by
domain, not by order); ``-f`` silences the note about an interface that does not exist (yet).
``-u``, ``-I``, ``--enable-updates``... do nothing (changes apply at once); ``-l [PATTERN]``
prints the records in resolv.conf form, ``-i [PATTERN]`` their names, ``--version`` says it is
mifdns.
Installed as a ``resolvconf`` symlink the program behaves the same (``cli.main`` checks argv[0]).

Which interface a record names: the longest dotted prefix that is an existing interface
(``eth0.100.dhclient`` -> ``eth0.100``), else the longest dotted suffix that is one (wg-quick's
``tun.wg0``: Debian's interface-order prefix, then the interface), else ``tun.X`` -> ``X``,
else the part before the first dot.
"""

from __future__ import annotations

import os
import re
import socket
import sys
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from .core.pvd import Domain, PvdSpec, parse_server
from .errors import ConfigError, ControlError

RECORD_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
# wg-quick prefixes the interface with the first "X*" line of /etc/resolvconf/interface-order,
# which is "tun*" in Debian's stock file.
INTERFACE_ORDER_PREFIXES = ("tun", "tap")


def _exists(ifname: str) -> bool:
    if not ifname or len(ifname) > 15:
        return False
    try:
        socket.if_nametoindex(ifname)
        return True
    except OSError:
        return False


def interface_of(record: str, exists: Callable[[str], bool] = _exists) -> str:
    """The interface a record names (see the module docstring for the rule)."""
    parts = record.split(".")
    for n in range(len(parts), 0, -1):  # eth0.100.dhclient -> eth0.100
        if exists(".".join(parts[:n])):
            return ".".join(parts[:n])
    for n in range(1, len(parts)):  # tun.wg0 -> wg0
        if exists(".".join(parts[n:])):
            return ".".join(parts[n:])
    if len(parts) > 1 and parts[0] in INTERFACE_ORDER_PREFIXES:
        return parts[1]
    return parts[0]


@dataclass
class ResolvConf:
    """What one resolv.conf-format feed says."""

    servers: list[str] = field(default_factory=list)
    search: list[str] = field(default_factory=list)  # domain + search, in order, deduplicated
    options: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # notes on what was left out, and why


def parse_resolv_conf(text: str) -> ResolvConf:
    """Parse resolv.conf-format text. Comments start with ``#`` or ``;``; unknown keywords
    (``sortlist``, ``lookup``...) are ignored as libc ignores them."""
    out = ResolvConf()
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].split(";", 1)[0].strip()
        if not line:
            continue
        words = line.split()
        key, args = words[0], words[1:]
        if key == "nameserver":
            if len(args) != 1:
                out.problems.append(f"line {lineno}: nameserver takes one address")
                continue
            if args[0] not in out.servers:
                out.servers.append(args[0])
        elif key in ("domain", "search"):
            for d in args:
                if d.rstrip(".").lower() not in [s.rstrip(".").lower() for s in out.search] \
                        and d != ".":
                    out.search.append(d)
        elif key == "options":
            out.options += args
    return out


def spec_from_resolvconf(
    record: str, text: str, *, exclusive: bool = False, private: bool = False,
    skip: Collection[str] = (), exists: Callable[[str], bool] = _exists,
) -> PvdSpec | None:
    """The runtime PvD a feed describes, or None when it has no usable nameserver (the record
    then contributes nothing and is removed). ``skip``: server addresses never to use (the
    daemon's own listen addresses: a feed pointing at mifdns would loop). Loopback servers are
    skipped too unless the record is on ``lo``: they cannot be reached through another link.
    Raises ConfigError with one line per problem."""
    check_record(record)
    iface = interface_of(record, exists)
    conf = parse_resolv_conf(text)
    problems = list(conf.problems)
    servers = []
    for s in conf.servers:
        try:
            srv = parse_server(s, iface)
        except ValueError as exc:
            problems.append(f"nameserver {exc}")
            continue
        if str(srv.address) in skip or (srv.address.is_loopback and iface != "lo"):
            conf.ignored.append(f"nameserver {s}: loopback or mifdns itself")
            continue
        if srv not in servers:
            servers.append(srv)
    domains: list[Domain] = []
    for d in conf.search:
        try:
            dom = Domain.parse(("~" if private else "") + d)
        except ValueError as exc:
            problems.append(f"search {exc}")
            continue
        if dom not in domains:
            domains.append(dom)
    if problems:
        raise ConfigError(problems, source=f"resolvconf {record}")
    if not servers:
        return None
    default_route: bool | None = None
    if exclusive:
        domains.append(Domain("", routing_only=True))
        default_route = True
    elif private:
        default_route = False
    return PvdSpec(
        name=record,
        interface=iface,
        servers=tuple(servers),
        domains=tuple(domains),
        default_route=default_route,
        exclusive=exclusive,
        origin="resolvconf",
    )


def check_record(record: str) -> None:
    """A record becomes a PvD name: ``A-Z a-z 0-9 _ . -``, 1-64 characters, not starting with
    ``.``, ``-`` or ``~`` (openresolv's rule)."""
    if not RECORD_RE.fullmatch(record or ""):
        raise ConfigError([(f"{record!r}: not a valid record name (IFACE[.PROTO]: 1-64 "
                            "characters of A-Z a-z 0-9 _ . -, not starting with . or -)")])


USAGE = """\
usage: resolvconf [--socket PATH] -a IFACE[.PROTO] [-x] [-p] [-m METRIC] < resolv.conf
       resolvconf [--socket PATH] -d IFACE[.PROTO]... [-f]
       resolvconf [--socket PATH] -l [PATTERN] | -i [PATTERN]
       resolvconf -u | -I | --enable-updates | --disable-updates | --updates-are-enabled
The daemon is found by --socket, else $MIFDNS_CONTROL_SOCKET, else /run/mifdns/control.sock.
"""

NOOP_OPTIONS = frozenset({"-u", "-I", "--enable-updates", "--disable-updates",
                          "--updates-are-enabled"})


@dataclass
class Args:
    action: str | None = None  # add | delete | list | names | noop
    records: list[str] = field(default_factory=list)
    exclusive: bool = False
    private: bool = False
    force: bool = False
    socket: str | None = None
    pattern: str | None = None


class UsageError(Exception):
    pass


def parse_args(argv: list[str], environ: dict[str, str] | os._Environ[str]) -> Args:
    """resolvconf's command line, as openresolv, Debian's resolvconf and systemd's shim accept
    it: ``-a``/``-d`` take the record right after them (openresolv, Debian) or anywhere as the
    operand (systemd: ``resolvconf -x -a wg0``); options may follow the record (wg-quick:
    ``-a tun.wg0 -m 0 -x``)."""
    a = Args(exclusive=bool(environ.get("IF_EXCLUSIVE")), private=bool(environ.get("IF_PRIVATE")))
    operands: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        nxt = argv[i + 1] if i + 1 < len(argv) else None
        if arg == "--":
            operands += argv[i + 1:]
            break
        if arg == "--socket" or arg.startswith("--socket="):
            if "=" in arg:
                a.socket = arg.split("=", 1)[1]
            elif nxt is None:
                raise UsageError("--socket needs a path")
            else:
                a.socket, i = nxt, i + 1
        elif arg in ("-a", "-d"):
            _set_action(a, "add" if arg == "-a" else "delete")
            if nxt is not None and not nxt.startswith("-"):
                a.records.append(nxt)
                i += 1
        elif arg == "-x":
            a.exclusive = True
        elif arg == "-p":
            a.private = True
        elif arg == "-f":
            a.force = True
        elif arg == "-m":
            if nxt is None:
                raise UsageError("-m needs a metric")
            i += 1  # metric: accepted and unused
        elif arg.startswith("-m") and arg[2:].isdigit():
            pass
        elif arg in ("-l", "-i"):
            _set_action(a, "list" if arg == "-l" else "names")
            if nxt is not None and not nxt.startswith("-"):
                a.pattern, i = nxt, i + 1
        elif arg in ("--version", "-V"):
            _set_action(a, "version", weak=True)
        elif arg in NOOP_OPTIONS:
            _set_action(a, "noop", weak=True)
        elif arg.startswith("-") and arg != "-":
            raise UsageError(f"unknown option {arg!r}")
        else:
            operands.append(arg)
        i += 1
    if a.action in ("add", "delete"):
        a.records += operands
        if not a.records:
            raise UsageError(f"-{a.action[0]} needs a record name (IFACE[.PROTO])")
        if a.action == "add" and len(a.records) != 1:
            raise UsageError("-a takes one record name")
    elif a.action in ("list", "names") and operands and a.pattern is None:
        a.pattern = operands[0]
    if a.action is None:
        raise UsageError("expected -a, -d, -l, -i or -u")
    if a.action == "version":
        return a
    return a


def _set_action(a: Args, action: str, weak: bool = False) -> None:
    if a.action is None or a.action == "noop":
        a.action = action
    elif not weak and a.action != action:
        raise UsageError(f"conflicting options: {a.action} and {action}")


def _matches(name: str, pattern: str | None) -> bool:
    if not pattern:
        return True
    import fnmatch

    return fnmatch.fnmatchcase(name, pattern if any(c in pattern for c in "*?[") else
                               pattern + "*")


def main(argv: list[str]) -> int:
    from .ctl import default_socket, request

    try:
        args = parse_args(argv, os.environ)
    except UsageError as exc:
        sys.stderr.write(f"resolvconf: {exc}\n{USAGE}")
        return 2
    if args.action == "noop":
        return 0
    if args.action == "version":
        from . import __version__

        sys.stdout.write(f"mifdns {__version__} (resolvconf front end)\n")
        return 0
    sock = args.socket or default_socket()
    record = args.records[0] if args.records else ""
    try:
        if args.action in ("list", "names"):
            pvds: Any = request(sock, {"cmd": "pvds"})
            mine = [p for p in pvds if p.get("origin") == "resolvconf"
                    and _matches(p["name"], args.pattern)]
            if args.action == "names":
                if mine:
                    sys.stdout.write(" ".join(p["name"] for p in mine) + "\n")
                return 0
            for p in mine:
                sys.stdout.write(f"# resolv.conf from {p['name']}\n")
                if p.get("search_domains"):
                    sys.stdout.write("search " + " ".join(p["search_domains"]) + "\n")
                for s in p.get("servers", []):
                    sys.stdout.write(f"nameserver {s}\n")
                sys.stdout.write("\n")
            return 0
        if args.action == "add":
            if sys.stdin is None or sys.stdin.isatty():
                sys.stderr.write("resolvconf: -a reads resolv.conf lines on stdin\n")
                return 1
            text = sys.stdin.read()
            spec = spec_from_resolvconf(record, text, exclusive=args.exclusive,
                                        private=args.private)  # vetted here, decided there
            if spec is not None and not args.force and not _exists(spec.interface):
                sys.stderr.write(f"resolvconf: note: no interface {spec.interface} (yet): "
                                 f"{record} stays detached until it appears\n")
            request(sock, {"cmd": "resolvconf", "action": "add", "record": record, "text": text,
                           "exclusive": args.exclusive, "private": args.private})
            return 0
        for rec in args.records:  # a record that is not there is already what -d wants
            check_record(rec)
            request(sock, {"cmd": "resolvconf", "action": "delete", "record": rec})
        return 0
    except ConfigError as exc:
        for p in exc.problems:
            sys.stderr.write(f"resolvconf: {record}: {p}\n")
        return 1
    except ControlError as exc:
        sys.stderr.write(f"resolvconf: {exc}\n")
        return 1

