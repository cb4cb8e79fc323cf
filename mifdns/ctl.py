"""``mifdns ctl``: the client of the control socket (see :mod:`mifdns.aio.control`).

:func:`request` and :func:`stream` are the protocol; :func:`main` is the command line; the
``format_*`` functions turn results into text for people and are pure, so tests feed them sample
data. They read results with ``.get`` throughout: the daemon may add fields, and old or new
daemons may lack some.

Exit codes: 0 ok, 1 the daemon refused the command, 2 usage, 3 the daemon is unreachable.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import yaml

from .ctl_format import (
    format_cache,
    format_event,
    format_explain,
    format_pvd,  # noqa: F401 - re-exported: ctl.format_* is the formatting API
    format_pvds,
    format_result,
    format_status,
)
from .errors import ControlError

DEFAULT_SOCKET = "/run/mifdns/control.sock"
SOCKET_ENV = "MIFDNS_CONTROL_SOCKET"

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3


class DaemonUnreachable(ControlError):
    """No answer from the daemon: nothing listens, permission denied, timeout, connection lost."""


class UsageError(Exception):
    """The command line is wrong in a way argparse cannot see (exit code 2)."""


# the protocol


def default_socket() -> str:
    return os.environ.get(SOCKET_ENV) or DEFAULT_SOCKET


def request(path: str, req: dict[str, Any], timeout: float = 10.0) -> Any:
    """Send one request and return its result; raise ControlError (DaemonUnreachable when the
    daemon cannot be reached) with a one-line message."""
    with _connect(path, timeout) as sock:
        line = _exchange(sock, path, req, timeout).readline()
    return _result(path, line)


class _Lines:
    """Reads answer lines, turning socket errors into DaemonUnreachable."""

    def __init__(
        self, sock: socket.socket, path: str, timeout: float, pending: OSError | None = None
    ) -> None:
        self._file = sock.makefile("rb")
        self.path, self.timeout, self.pending = path, timeout, pending

    def readline(self) -> bytes:
        try:
            line = self._file.readline()
        except TimeoutError:
            raise DaemonUnreachable(
                f"mifdns at {self.path} did not answer within {self.timeout:g} s"
            ) from None
        except OSError as exc:
            line, self.pending = b"", self.pending or exc
        if not line and self.pending is not None:
            raise DaemonUnreachable(
                f"lost the connection to mifdns at {self.path}: {_reason(self.pending)}"
            )
        return line

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._file)


def _exchange(sock: socket.socket, path: str, req: dict[str, Any], timeout: float) -> _Lines:
    """Send ``req``; a daemon that refuses us (too many clients) may close before reading it,
    and what it said before closing is still worth reading."""
    try:
        sock.sendall(_encode(req))
    except OSError as exc:
        return _Lines(sock, path, timeout, exc)
    return _Lines(sock, path, timeout)


def stream(path: str, req: dict[str, Any], timeout: float = 10.0) -> Iterator[dict[str, Any]]:
    """Send a streaming request (``monitor``) and yield each event until the daemon closes.

    The first answer line is checked like :func:`request`'s; ``timeout`` applies to it only.
    """
    with _connect(path, timeout) as sock:
        lines = _exchange(sock, path, req, timeout)
        _result(path, lines.readline())
        sock.settimeout(None)
        try:
            for line in lines:
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if isinstance(event, dict):
                    yield event
        except OSError:
            return


def _connect(path: str, timeout: float) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
    except OSError as exc:
        sock.close()
        hint = (
            "the socket is for the daemon's user only, mode 0600: run as root or as that user"
            if isinstance(exc, PermissionError)
            else "is the daemon running? see --socket"
        )
        raise DaemonUnreachable(f"cannot reach mifdns at {path}: {_reason(exc)} ({hint})") from None
    return sock


def _reason(exc: OSError) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = exc.strerror or str(exc) or type(exc).__name__
    return text[:1].lower() + text[1:]


def _encode(req: dict[str, Any]) -> bytes:
    return json.dumps(req, separators=(",", ":")).encode() + b"\n"


def _result(path: str, line: bytes) -> Any:
    if not line:
        raise DaemonUnreachable(f"mifdns at {path} closed the connection without answering")
    try:
        answer = json.loads(line)
    except ValueError as exc:
        raise ControlError(f"malformed answer from mifdns at {path}: {exc}") from None
    if not isinstance(answer, dict) or "ok" not in answer:
        raise ControlError(f'malformed answer from mifdns at {path}: no "ok" field')
    if answer["ok"]:
        return answer.get("result")
    error = " ".join(str(answer.get("error") or "unspecified error").split())
    raise ControlError(error)


# the command line


def _words(text: str) -> list[str]:
    """``--server a,b`` == ``--server a --server b``; ``--network ''`` gives an empty list."""
    return [w.strip() for w in text.split(",") if w.strip()]


def _add_spec_options(p: argparse.ArgumentParser, *, update: bool) -> None:
    g = p.add_argument_group(
        "PvD settings" + (" to change (lists replace the old ones)" if update else "")
    )
    g.add_argument("--interface", metavar="IF", help="the interface queries leave through")
    g.add_argument(
        "--server",
        dest="servers",
        action="extend",
        type=_words,
        metavar="S",
        help="DNS server ADDR, ADDR:PORT or [ADDR]:PORT (repeat, or comma-separate)",
    )
    g.add_argument(
        "--domain",
        dest="domains",
        action="extend",
        type=_words,
        metavar="D",
        help="search + routing domain; '~D' for routing only (repeatable)",
    )
    g.add_argument(
        "--network",
        dest="networks",
        action="extend",
        type=_words,
        metavar="CIDR",
        help="reverse zone routed to this PvD (repeatable)",
    )
    dr = g.add_mutually_exclusive_group()
    dr.add_argument(
        "--default-route",
        dest="default_route",
        action="store_const",
        const=True,
        help="names no PvD claims may go here",
    )
    dr.add_argument(
        "--no-default-route",
        dest="default_route",
        action="store_const",
        const=False,
        help="only its own domains go here",
    )
    ex = g.add_mutually_exclusive_group()
    ex.add_argument(
        "--exclusive",
        dest="exclusive",
        action="store_const",
        const=True,
        help="its domains never go to another PvD",
    )
    ex.add_argument(
        "--no-exclusive",
        dest="exclusive",
        action="store_const",
        const=False,
        help="its domains may fall through (the default)",
    )
    g.add_argument(
        "--trust-ad",
        action=argparse.BooleanOptionalAction,
        help="pass on its servers' AD bit (validating servers over a path you trust); "
        "--no-trust-ad clears it (the default)",
    )
    g.add_argument(
        "--dns64",
        metavar="auto|none|PREFIX",
        help="NAT64 prefix: RFC 7050 discovery, none, or e.g. 64:ff9b::/96",
    )
    g.add_argument(
        "--dns64-synthesize",
        action=argparse.BooleanOptionalAction,
        help="synthesize AAAA locally (needs a NAT64 prefix: --dns64 auto|PREFIX, or the "
        "PvD's own); --no-dns64-synthesize stops it",
    )
    g.add_argument(
        "--captive-portal", metavar="URI", help="RFC 8910 captive-portal API URI ('none' to clear)"
    )
    g.add_argument(
        "--captive-domain",
        dest="captive_domains",
        action="extend",
        type=_words,
        metavar="D",
        help="name that goes to this PvD while it is captive (repeatable)",
    )
    sp = p.add_mutually_exclusive_group()
    sp.add_argument(
        "--spec", metavar="TEXT", help="the PvD as a JSON or YAML mapping, in config-file form"
    )
    sp.add_argument("--spec-file", metavar="PATH", help="the same, read from a file")


_SPEC_OPTIONS = (
    "interface",
    "servers",
    "domains",
    "default_route",
    "exclusive",
    "trust_ad",
    "networks",
    "dns64",
    "captive_portal",
    "captive_domains",
)


def spec_from_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options given, as a (partial) PvD in config-file form; keys in config order."""
    spec: dict[str, Any] = {}
    for key in _SPEC_OPTIONS:
        value = getattr(args, key, None)
        if value is None:
            continue
        if key == "dns64":
            prefix = value.strip().lower() if value.strip().lower() in ("auto", "none") else value
            if args.dns64_synthesize is not None:
                value = {"prefix": prefix, "synthesize": args.dns64_synthesize}
            else:
                value = prefix
        elif key == "captive_portal" and value.strip().lower() in ("", "none", "null"):
            value = None
        spec[key] = value
    if args.dns64_synthesize is not None and "dns64" not in spec:
        # merged with the PvD's prefix by ``update``; ``attach`` has none to merge with
        spec["dns64"] = {"synthesize": args.dns64_synthesize}
    return spec


def load_spec(text: str, what: str) -> dict[str, Any]:
    """A PvD mapping from JSON or YAML text (a one-item list, as pasted from ``pvds:``, is fine)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UsageError(f"{what}: not valid JSON or YAML{where}: {problem}") from None
    if isinstance(data, list) and len(data) == 1:
        data = data[0]
    if not isinstance(data, dict):
        raise UsageError(
            f"{what}: expected a mapping of PvD settings "
            f"(name, interface, servers, ...), got {type(data).__name__}"
        )
    return data


def _spec_text(args: argparse.Namespace) -> dict[str, Any] | None:
    if args.spec is not None:
        return load_spec(args.spec, "--spec")
    if args.spec_file is not None:
        try:
            with open(args.spec_file, encoding="utf-8") as f:
                return load_spec(f.read(), args.spec_file)
        except OSError as exc:
            raise UsageError(f"{args.spec_file}: cannot read: {_reason(exc)}") from None
        except UnicodeDecodeError:
            raise UsageError(f"{args.spec_file}: not UTF-8 text") from None
    return None


def _build_attach(args: argparse.Namespace) -> dict[str, Any]:
    options = spec_from_options(args)
    given = _spec_text(args)
    if given is not None:
        if options or args.spec_name is not None:
            raise UsageError("--spec/--spec-file cannot be combined with other PvD options")
        if args.name is not None and given.setdefault("name", args.name) != args.name:
            raise UsageError(f"NAME {args.name!r} differs from the spec's name {given['name']!r}")
        return {"cmd": "attach", "spec": given}
    if args.name and args.spec_name and args.name != args.spec_name:
        raise UsageError(f"NAME {args.name!r} and --name {args.spec_name!r} differ")
    name = args.spec_name or args.name
    if not options and args.spec_name is None:
        if name is None:
            raise UsageError(
                "attach needs NAME (a known PvD), or --name and --interface (a new "
                "one), or --spec/--spec-file"
            )
        return {"cmd": "attach", "name": name}
    if name is None:
        raise UsageError("a new PvD needs --name (or NAME)")
    if "interface" not in options:
        raise UsageError("a new PvD needs --interface (to re-attach a known PvD, give only NAME)")
    if args.dns64_synthesize and args.dns64 is None:
        raise UsageError("--dns64-synthesize needs --dns64 auto|PREFIX for a new PvD")
    return {"cmd": "attach", "spec": {"name": name, **options}}


def _build_update(args: argparse.Namespace) -> dict[str, Any]:
    options = spec_from_options(args)
    given = _spec_text(args)
    if given is not None and options:
        raise UsageError("--spec/--spec-file cannot be combined with other PvD options")
    changes = given if given is not None else options
    if not changes:
        raise UsageError("update needs at least one change (see --help)")
    return {"cmd": "update", "name": args.name, "changes": changes}


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds: {text!r}")
    return value


def _add_common_options(p: argparse.ArgumentParser, *, after: bool) -> None:
    """The options taken before the command and, again, after it (``after``: a value given there
    wins; one not given there leaves the one before the command, or the default, alone)."""
    keep = argparse.SUPPRESS
    p.add_argument(
        "--socket",
        metavar="PATH",
        default=keep if after else None,
        help=f"control socket (default: ${SOCKET_ENV} or {DEFAULT_SOCKET})",
    )
    p.add_argument(
        "--json",
        action="store_true",
        default=keep if after else False,
        help="print the daemon's JSON result",
    )
    p.add_argument(
        "--timeout",
        type=_seconds,
        default=keep if after else 10.0,
        metavar="SECONDS",
        help="how long to wait for an answer (default: 10)",
    )


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    _add_common_options(common, after=True)
    parser = argparse.ArgumentParser(
        prog="mifdns ctl", description="Inspect and steer a running mifdns daemon."
    )
    _add_common_options(parser, after=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(
        name: str,
        help: str,
        build: Callable[[argparse.Namespace], dict[str, Any]],
        fmt: Callable[[Any], str] | None = None,
        description: str | None = None,
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=description or help, parents=[common])
        p.set_defaults(build=build, format=fmt or format_result, parser=p)
        return p

    command(
        "status",
        "daemon, PvDs, cache, counters and recent purges",
        lambda a: {"cmd": "status"},
        format_status,
    )
    command("pvds", "list PvDs", lambda a: {"cmd": "pvds"}, format_pvds)
    p = command("attach", "re-attach a known PvD, or attach a new runtime PvD", _build_attach)
    p.add_argument("name", nargs="?", metavar="NAME", help="the PvD to (re-)attach")
    p.add_argument("--name", dest="spec_name", metavar="N", help="name of a new PvD")
    _add_spec_options(p, update=False)
    p = command("update", "change settings of a PvD", _build_update)
    p.add_argument("name", metavar="NAME")
    _add_spec_options(p, update=True)
    p = command(
        "detach",
        "detach a PvD administratively (until 'attach NAME')",
        lambda a: {"cmd": "detach", "name": a.name},
    )
    p.add_argument("name", metavar="NAME")
    p = command("remove", "remove a PvD of any origin and purge its cache",
                lambda a: {"cmd": "remove", "name": a.name},
                description="Remove a PvD, whatever its origin (config, runtime, resolvconf): it "
                            "is detached, its cache purged, its queries in flight cancelled, and "
                            "'attach NAME' no longer knows it. A PvD from the config file comes "
                            "back at the next reload or restart; a resolvconf record at its next "
                            "'resolvconf -a'.")  # fmt: skip
    p.add_argument("name", metavar="NAME")
    p = command(
        "flush",
        "drop cached answers (of one PvD, or all)",
        lambda a: {"cmd": "flush", "name": a.name},
    )
    p.add_argument("name", nargs="?", metavar="NAME")
    p = command(
        "cache", "list cache entries", lambda a: {"cmd": "cache", "pvd": a.pvd}, format_cache
    )
    p.add_argument("--pvd", metavar="NAME", help="only this PvD's entries")
    p = command(
        "explain",
        "show which PvDs a name would go to, and why",
        lambda a: {"cmd": "explain", "name": a.name, "type": a.type.upper()},
        format_explain,
    )
    p.add_argument("name", metavar="NAME")
    p.add_argument("type", nargs="?", default="A", metavar="TYPE", help="query type (default A)")
    p = command(
        "captive",
        "set a PvD's captive-portal state",
        lambda a: {"cmd": "captive", "name": a.name, "state": a.state},
    )
    p.add_argument("name", metavar="NAME")
    p.add_argument("state", choices=("captive", "open", "unknown"))
    command("reload", "re-read the configuration file", lambda a: {"cmd": "reload"})
    command(
        "monitor", "stream queries and PvD events until interrupted", lambda a: {"cmd": "monitor"}
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        try:
            req = args.build(args)
        except UsageError as exc:
            args.parser.error(str(exc))  # prints usage, raises SystemExit(2)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    path = args.socket or default_socket()
    try:
        if args.command == "monitor":
            return _monitor(path, req, args.json, args.timeout)
        result = request(path, req, args.timeout)
        text = json.dumps(result, indent=2) if args.json else args.format(result)
        if text:
            print(text)
    except DaemonUnreachable as exc:
        return _fail(exc, EXIT_UNREACHABLE)
    except ControlError as exc:
        return _fail(exc, EXIT_REFUSED)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        _quiet_stdout()
    return EXIT_OK


def _monitor(path: str, req: dict[str, Any], as_json: bool, timeout: float) -> int:
    try:
        for event in stream(path, req, timeout):
            line = json.dumps(event, separators=(",", ":")) if as_json else format_event(event)
            print(line, flush=True)
    except KeyboardInterrupt:
        return EXIT_OK
    print(f"mifdns ctl: mifdns at {path} ended the monitor stream", file=sys.stderr)
    return EXIT_UNREACHABLE


def _fail(exc: Exception, code: int) -> int:
    print(f"mifdns ctl: {exc}", file=sys.stderr)
    return code


def _quiet_stdout() -> None:
    """After EPIPE (``mifdns ctl cache | head``), keep the interpreter's final flush quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
