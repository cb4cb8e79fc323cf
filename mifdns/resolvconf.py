"""A resolvconf(8) compatible front end: DHCP clients and VPN scripts feed PvDs unchanged.

``mifdns resolvconf -a RECORD < resolv.conf`` creates or replaces the runtime PvD named RECORD
(``IFACE[.PROTO]``, e.g. ``eth0.dhclient``, ``eth0.ip6.dhclient``, ``tun.wg0``) on the interface
the record names: ``nameserver`` lines become its servers, ``domain`` and ``search`` lines its
search + routing domains (both kept, as systemd-resolved's shim does: a per-network record is not
a libc file where the last line wins). Of the ``options``, ``trust-ad`` is taken as glibc takes
it: the AD bit of these nameservers is believed (the PvD's ``trust_ad``); the others are read and
ignored (mifdns talks EDNS and times its queries itself). Input without any ``nameserver`` removes the record: it can resolve nothing.
``-d RECORD...`` removes them (their cache partitions go with them; a record that is not there
is not an error). ``-x`` (exclusive; also ``IF_EXCLUSIVE`` in the environment) adds ``~.`` and
makes the PvD exclusive: while it exists, names no other PvD's domain claims go only to it (a
full-tunnel VPN's DNS does not leak). ``-p`` (private; ``IF_PRIVATE``) makes its domains
routing-only and never a default route. ``IF_EXCLUSIVE``/``IF_PRIVATE`` are read by ``-a`` when
the option is not on the command line: ``1 yes true on`` (any case) mean on, ``0 no false off``
and empty mean off, anything else is a usage error. ``-m METRIC`` is accepted and ignored
(routing is by domain, not by order); ``-f`` silences the note about an interface that does not
exist (yet). Nameservers left out of a feed (loopback off ``lo``, mifdns's own addresses) are
reported on stderr, one line each, after the feed is accepted; the exit status stays 0, as with
the real resolvconf. ``-u``, ``-I``, ``--enable-updates``... do nothing (changes apply at once);
``-l [PATTERN]`` prints the records in resolv.conf form (see :func:`format_records`),
``-i [PATTERN]`` their names, ``--version`` says it is mifdns, ``-h``/``--help`` the options.
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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .core.pvd import Domain, PvdSpec, ServerAddr, parse_server, unusable_server
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
                out.ignored.append(f"line {lineno}: nameserver takes one address")
                continue
            if args[0] not in out.servers:
                out.servers.append(args[0])
        elif key in ("domain", "search"):
            for d in args:
                if (
                    d.rstrip(".").lower() not in [s.rstrip(".").lower() for s in out.search]
                    and d != "."
                ):
                    out.search.append(d)
        elif key == "options":
            out.options += args
    return out


@dataclass
class Feed:
    """What a feed becomes."""

    spec: PvdSpec | None  # None: no usable nameserver, the record is removed
    ignored: list[str]  # one line per nameserver left out: "nameserver ADDR: why"


def spec_from_resolvconf(
    record: str,
    text: str,
    *,
    exclusive: bool = False,
    private: bool = False,
    skip: Callable[[ServerAddr], bool] = lambda server: False,
    exists: Callable[[str], bool] = _exists,
) -> PvdSpec | None:
    """The runtime PvD a feed describes, or None when it has no usable nameserver (the record
    then contributes nothing and is removed). See :func:`read_feed`."""
    return read_feed(
        record, text, exclusive=exclusive, private=private, skip=skip, exists=exists
    ).spec


def read_feed(
    record: str,
    text: str,
    *,
    exclusive: bool = False,
    private: bool = False,
    skip: Callable[[ServerAddr], bool] = lambda server: False,
    exists: Callable[[str], bool] = _exists,
) -> Feed:
    """The runtime PvD a feed describes, and what it leaves out. ``skip``: servers never
    to use (the daemon says which are mifdns itself: a feed pointing at mifdns would loop).
    Loopback servers are skipped too unless the record is on ``lo``: they cannot be reached
    through another link; and addresses that are no server's (unspecified, multicast,
    broadcast). A line that does not parse is left out, not the feed: a DHCP client does not
    look at the exit status, and the rest of what it says is still true (the old servers
    would stay otherwise). Each thing left out is one line of ``ignored``. Raises ConfigError
    for a bad record name only."""
    check_record(record)
    iface = interface_of(record, exists)
    conf = parse_resolv_conf(text)
    servers = []
    for s in conf.servers:
        try:
            srv = parse_server(s, iface)
        except ValueError as exc:
            conf.ignored.append(f"nameserver {exc}")
            continue
        why = unusable_server(srv.address)
        if why is not None:
            conf.ignored.append(f"nameserver {s}: {why}, not a server's")
            continue
        if skip(srv):
            conf.ignored.append(f"nameserver {s}: an address of mifdns itself (it would loop)")
            continue
        if srv.address.is_loopback and iface != "lo":
            conf.ignored.append(f"nameserver {s}: loopback, not reachable through {iface}")
            continue
        if srv not in servers:
            servers.append(srv)
    domains: list[Domain] = []
    for d in conf.search:
        try:
            dom = Domain.parse(("~" if private else "") + d)
        except ValueError as exc:
            conf.ignored.append(f"search {exc}")
            continue
        if dom not in domains:
            domains.append(dom)
    if not servers:
        return Feed(None, conf.ignored)
    default_route: bool | None = None
    if exclusive:
        domains.append(Domain("", routing_only=True))
        default_route = True
    elif private:
        default_route = False
    return Feed(
        PvdSpec(
            name=record,
            interface=iface,
            servers=tuple(servers),
            domains=tuple(domains),
            default_route=default_route,
            exclusive=exclusive,
            trust_ad="trust-ad" in conf.options,
            origin="resolvconf",
        ),
        conf.ignored,
    )


def check_record(record: str) -> None:
    """A record becomes a PvD name: ``A-Z a-z 0-9 _ . -``, 1-64 characters, not starting with
    ``.``, ``-`` or ``~`` (openresolv's rule)."""
    if not RECORD_RE.fullmatch(record or ""):
        raise ConfigError(
            [
                (
                    f"{record!r}: not a valid record name (IFACE[.PROTO]: 1-64 "
                    "characters of A-Z a-z 0-9 _ . -, not starting with . or -)"
                )
            ]
        )


USAGE = """\
usage: resolvconf [--socket PATH] -a IFACE[.PROTO] [-x] [-p] [-m METRIC] [-f] < resolv.conf
       resolvconf [--socket PATH] -d IFACE[.PROTO]... [-f]
       resolvconf [--socket PATH] -l [PATTERN] | -i [PATTERN]
       resolvconf -u | -I | --enable-updates | --disable-updates | --updates-are-enabled
       resolvconf --version | -V | --help | -h
The daemon is found by --socket, else $MIFDNS_CONTROL_SOCKET, else /run/mifdns/control.sock.
"""

HELP = (
    USAGE
    + """
mifdns's resolvconf(8) front end: each record is a PvD fed by a DHCP client or VPN script.

  -a RECORD          create or replace RECORD from the resolv.conf lines on stdin
                     (nameserver, domain, search; no usable nameserver removes it)
  -d RECORD...       remove the records (a missing record is not an error)
  -x                 with -a: exclusive, takes every name no other PvD claims (~.);
                     also IF_EXCLUSIVE=1
  -p                 with -a: private, domains routing-only, never a default route;
                     also IF_PRIVATE=1
  -m METRIC, -mN     accepted and ignored (routing is by domain)
  -f                 no note about an interface that does not exist (yet)
  -l [PATTERN]       print the records in resolv.conf form
  -i [PATTERN]       print the record names
  -u, -I, --enable-updates, --disable-updates, --updates-are-enabled
                     do nothing: changes apply at once
  --socket PATH      the daemon's control socket (also --socket=PATH)
  --version, -V      say which program this is
  --help, -h         this text
  --                 the rest are record names (or the pattern)

IF_EXCLUSIVE and IF_PRIVATE: 1, yes, true, on (any case) are on; 0, no, false, off or empty
are off. RECORD is IFACE[.PROTO]; a PATTERN without * ? [ matches records starting with it.
Exit status: 0 done, 1 refused or no daemon, 2 bad command line.
"""
)

ENV_ON = ("1", "yes", "true", "on")
ENV_OFF = ("", "0", "no", "false", "off")

NOOP_OPTIONS = frozenset(
    {"-u", "-I", "--enable-updates", "--disable-updates", "--updates-are-enabled"}
)


@dataclass
class Args:
    action: str | None = None  # add | delete | list | names | noop | version | help
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
    ``-a tun.wg0 -m 0 -x``). ``-h``/``--help`` anywhere asks for the help text."""
    a = Args()
    operands: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        nxt = argv[i + 1] if i + 1 < len(argv) else None
        if arg == "--":
            operands += argv[i + 1 :]
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
        elif arg in ("--help", "-h"):
            return Args(action="help")
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
        raise UsageError("expected -a, -d, -l, -i or -u (--help lists the options)")
    if a.action == "add":  # the flags mean something to -a only: a stale value never blocks -d
        a.exclusive = a.exclusive or _env_flag(environ, "IF_EXCLUSIVE")
        a.private = a.private or _env_flag(environ, "IF_PRIVATE")
    return a


def _env_flag(environ: dict[str, str] | os._Environ[str], name: str) -> bool:
    """openresolv's yes/no words; anything else is refused rather than guessed (``0`` used to
    turn the option on)."""
    value = environ.get(name, "").strip()
    if value.lower() in ENV_ON:
        return True
    if value.lower() in ENV_OFF:
        return False
    raise UsageError(
        f"{name}={value!r}: expected {', '.join(ENV_ON)} (on) or "
        f"{', '.join(ENV_OFF[1:])} or empty (off)"
    )


def _set_action(a: Args, action: str, weak: bool = False) -> None:
    if a.action is None or a.action == "noop":
        a.action = action
    elif not weak and a.action != action:
        raise UsageError(f"conflicting options: {a.action} and {action}")


def _matches(name: str, pattern: str | None) -> bool:
    if not pattern:
        return True
    import fnmatch

    return fnmatch.fnmatchcase(name, pattern if any(c in pattern for c in "*?[") else pattern + "*")


def format_records(pvds: list[dict[str, Any]]) -> str:
    """The records in resolv.conf form, as ``-l`` prints them (``pvds``: the daemon's PvD
    views). Each block is what the record was fed, so that feeding it back with the options its
    first line names (``-x``, ``-p``) makes the same PvD, as openresolv's ``-l`` prints the text
    it was given. resolv.conf has no word for a routing-only domain: a ``-p`` record's domains
    stand on its ``search`` line as they were fed, and a ``# routing-only:`` comment says that
    they route only (they are not searched); ``-x``'s ``~.`` is a ``# exclusive:`` comment."""
    out = []
    for p in pvds:
        domains = p.get("domains")
        if domains is None:  # an older daemon: search domains only
            domains = list(p.get("search_domains", []))
        names = [d.lstrip("~") for d in domains if d != "~."]
        routing_only = [d[1:] for d in domains if d.startswith("~") and d != "~."]
        exclusive = bool(p.get("exclusive"))
        private = bool(routing_only) or (not exclusive and p.get("default_route") is False)
        options = " ".join(o for o, on in (("-x", exclusive), ("-p", private)) if on)
        out.append(
            f"# resolv.conf from {p['name']}" + (f" (fed with {options})" if options else "") + "\n"
        )
        if exclusive:
            out.append("# exclusive: names no other PvD claims go only here (~.)\n")
        if routing_only:
            out.append("# routing-only: " + " ".join(routing_only) + "\n")
        if names:
            out.append("search " + " ".join(names) + "\n")
        out += [f"nameserver {s}\n" for s in p.get("servers", [])]
        if p.get("trust_ad"):
            out.append("options trust-ad\n")
        out.append("\n")
    return "".join(out)


def feed_notes(
    feed: Feed, result: Any, *, force: bool = False, exists: Callable[[str], bool] = _exists
) -> list[str]:
    """What to tell the caller once the daemon took the feed (``result``: its answer): the
    nameservers it left out (it decides: it knows its own addresses, we do not), and a missing
    interface unless ``force``."""
    ignored = result.get("ignored") if isinstance(result, dict) else None
    notes = [f"ignored {n}" for n in ignored or []]
    if feed.spec is None:
        return notes
    if not force and not exists(feed.spec.interface):
        notes.append(
            f"note: no interface {feed.spec.interface} (yet): {feed.spec.name} stays "
            "detached until it appears"
        )
    return notes


def _refusal(exc: ControlError) -> str:
    """The daemon's message without its own ``resolvconf:`` prefix: ours comes first."""
    return str(exc).removeprefix("resolvconf: ")


def main(argv: list[str]) -> int:
    from .ctl import default_socket, request

    try:
        args = parse_args(argv, os.environ)
    except UsageError as exc:
        sys.stderr.write(f"resolvconf: {exc}\n{USAGE}")
        return 2
    if args.action == "help":
        sys.stdout.write(HELP)
        return 0
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
            mine = [
                p
                for p in pvds
                if p.get("origin") == "resolvconf" and _matches(p["name"], args.pattern)
            ]
            if args.action == "names":
                if mine:
                    sys.stdout.write(" ".join(p["name"] for p in mine) + "\n")
                return 0
            sys.stdout.write(format_records(mine))
            return 0
        if args.action == "add":
            if sys.stdin is None or sys.stdin.isatty():
                sys.stderr.write("resolvconf: -a reads resolv.conf lines on stdin\n")
                return 1
            text = sys.stdin.read()
            feed = read_feed(
                record, text, exclusive=args.exclusive, private=args.private
            )  # vetted here, decided there
            result = request(
                sock,
                {
                    "cmd": "resolvconf",
                    "action": "add",
                    "record": record,
                    "text": text,
                    "exclusive": args.exclusive,
                    "private": args.private,
                },
            )
            for note in feed_notes(feed, result, force=args.force):  # only once accepted
                # "mifdns": a dropped nameserver is our choice, not resolvconf's; say whose
                prefix = "mifdns resolvconf: " if note.startswith("ignored ") else "resolvconf: "
                sys.stderr.write(prefix + note + "\n")
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
        sys.stderr.write(f"resolvconf: {_refusal(exc)}\n")
        return 1
