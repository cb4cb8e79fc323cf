"""A resolvconf(8) compatible front end: DHCP clients and VPN scripts feed PvDs unchanged.

``mifdns resolvconf -a IFACE[.PROTO] < resolv.conf`` creates or replaces the runtime PvD named
``IFACE[.PROTO]`` on interface IFACE: ``nameserver`` lines become its servers, ``search`` and
``domain`` its search + routing domains. ``-d`` removes it (its cache partition goes with it).
``-x`` (exclusive, as systemd-resolved's shim reads it) makes it the host's only default route
while it exists: the PvD gets ``~.`` and ``exclusive``. ``-p`` (private, openresolv) makes its
domains routing-only. ``-u`` is accepted and does nothing (mifdns applies changes at once);
``-l`` prints what was fed, in resolv.conf form. Installed as a ``resolvconf`` symlink, the
program behaves the same (``argv[0]`` is checked).
"""

from __future__ import annotations

import socket
import sys
from typing import Any

from .core.pvd import Domain, PvdSpec, parse_server
from .errors import ConfigError, ControlError


def interface_of(record: str) -> str:
    """``wlan0.dhclient`` -> ``wlan0``; ``eth0.100.dhclient`` -> ``eth0.100`` when that VLAN
    interface exists. Tries the longest existing name, else the part before the first dot."""
    parts = record.split(".")
    for n in range(len(parts), 0, -1):
        cand = ".".join(parts[:n])
        try:
            socket.if_nametoindex(cand)
            return cand
        except OSError:
            continue
    return parts[0]


def parse_resolv_conf(text: str) -> tuple[list[str], list[str], list[str]]:
    """-> (nameservers, search domains, problems). Unknown lines are ignored, as libc does."""
    servers: list[str] = []
    search: list[str] = []
    problems: list[str] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].split(";", 1)[0].strip()
        if not line:
            continue
        words = line.split()
        key, args = words[0], words[1:]
        if key == "nameserver":
            if len(args) != 1:
                problems.append(f"line {lineno}: nameserver takes one address")
                continue
            servers.append(args[0])
        elif key == "domain" and args:
            search = [args[0]]  # libc: the last of domain/search wins
        elif key == "search":
            search = list(args)
    return servers, search, problems


def spec_from_resolvconf(record: str, text: str, *, exclusive: bool = False,
                         private: bool = False) -> PvdSpec:
    if not record or any(c.isspace() or c in "/" for c in record) or len(record) > 64:
        raise ConfigError([f"{record!r}: not a valid IFACE[.PROTO] record name"])
    iface = interface_of(record)
    servers_txt, search, problems = parse_resolv_conf(text)
    servers = []
    for s in servers_txt:
        try:
            servers.append(parse_server(s, iface))
        except ValueError as exc:
            problems.append(f"nameserver {exc}")
    domains = []
    for d in search:
        try:
            dom = Domain.parse(("~" if private else "") + d)
        except ValueError as exc:
            problems.append(f"search {exc}")
            continue
        if dom not in domains:
            domains.append(dom)
    if problems:
        raise ConfigError(problems, source=f"resolvconf {record}")
    if exclusive:
        domains.append(Domain("", routing_only=True))
    return PvdSpec(
        name=record,
        interface=iface,
        servers=tuple(dict.fromkeys(servers)),
        domains=tuple(domains),
        default_route=True if exclusive else None,
        exclusive=exclusive,
        origin="resolvconf",
    )


USAGE = """usage: mifdns resolvconf [--socket PATH] -a IFACE[.PROTO] [-x] [-p] [-m METRIC] < resolv.conf
       mifdns resolvconf [--socket PATH] -d IFACE[.PROTO] [-f]
       mifdns resolvconf -u | -l [PATTERN] | -I | -i
"""


def main(argv: list[str]) -> int:
    from .ctl import default_socket, request

    sock = default_socket()
    action: str | None = None
    record = ""
    exclusive = private = force = False
    args = list(argv)
    i = 0
    pattern = None
    try:
        while i < len(args):
            a = args[i]
            if a == "--socket":
                sock = args[i + 1]
                i += 2
                continue
            if a.startswith("--socket="):
                sock = a.split("=", 1)[1]
            elif a in ("-a", "-d"):
                action = "add" if a == "-a" else "delete"
                record = args[i + 1]
                i += 1
            elif a == "-x":
                exclusive = True
            elif a == "-p":
                private = True
            elif a == "-f":
                force = True
            elif a == "-m":
                i += 1  # metric: accepted, unused (routing is by domain, not by order)
            elif a in ("-u", "-I", "-i", "--enable-updates", "--disable-updates"):
                action = action or "noop"
            elif a == "-l":
                action = "list"
                if i + 1 < len(args) and not args[i + 1].startswith("-"):
                    pattern = args[i + 1]
                    i += 1
            elif a in ("-h", "--help"):
                sys.stdout.write(USAGE)
                return 0
            else:
                sys.stderr.write(f"mifdns resolvconf: unknown option {a!r}\n{USAGE}")
                return 2
            i += 1
    except IndexError:
        sys.stderr.write(f"mifdns resolvconf: option needs an argument\n{USAGE}")
        return 2
    if action is None:
        sys.stderr.write(USAGE)
        return 2
    if action == "noop":
        return 0
    try:
        if action == "list":
            pvds: Any = request(sock, {"cmd": "pvds"})
            for p in pvds:
                if p.get("origin") != "resolvconf":
                    continue
                if pattern and not p["name"].startswith(pattern.rstrip("*")):
                    continue
                sys.stdout.write(f"# {p['name']}\n")
                for s in p.get("servers", []):
                    sys.stdout.write(f"nameserver {s}\n")
                if p.get("search_domains"):
                    sys.stdout.write("search " + " ".join(p["search_domains"]) + "\n")
            return 0
        if action == "add":
            text = sys.stdin.read() if not sys.stdin.isatty() else ""
            spec_from_resolvconf(record, text, exclusive=exclusive, private=private)  # vet here
            request(sock, {"cmd": "resolvconf", "action": "add", "record": record, "text": text,
                           "exclusive": exclusive, "private": private})
            return 0
        request(sock, {"cmd": "resolvconf", "action": "delete", "record": record})
        return 0
    except ConfigError as exc:
        for p in exc.problems:
            sys.stderr.write(f"mifdns resolvconf: {record}: {p}\n")
        return 1
    except ControlError as exc:
        if force and action == "delete":
            return 0
        sys.stderr.write(f"mifdns resolvconf: {exc}\n")
        return 1
