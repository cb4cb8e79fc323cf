"""``mifdns`` command line: ``main(argv) -> int``; never a traceback for a user error."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time

from . import __version__
from .errors import ConfigError, MifdnsError

DEFAULT_CONFIG = "/etc/mifdns/mifdns.yaml"


def _load(path: str | None):  # type: ignore[no-untyped-def]
    from . import config as cfgmod

    if path is None:
        if os.path.exists(DEFAULT_CONFIG):
            path = DEFAULT_CONFIG
        else:
            return cfgmod.apply_env(cfgmod.default_config(), os.environ)
    return cfgmod.apply_env(cfgmod.load_config(path), os.environ)


async def serve(
    config,
    shutdown: asyncio.Event | None = None,
    *,  # type: ignore[no-untyped-def]
    user=None,
) -> None:
    """Run the daemon until ``shutdown`` is set (or SIGTERM/SIGINT). SIGHUP reloads.

    ``user`` (a ``privileges.Account``): become that user once the sockets are bound. Stopping
    is graceful (``Daemon.stop``); a failed start undoes what it did (resolv.conf, sockets)."""
    from .aio.daemon import Daemon, sd_notify
    from .aio.reload import ReloadRejected

    daemon = Daemon(config)
    loop = asyncio.get_running_loop()
    stop = shutdown or asyncio.Event()
    log = logging.getLogger("mifdns")

    def on_hup() -> None:
        async def do() -> None:
            sd_notify(f"RELOADING=1\nMONOTONIC_USEC={time.monotonic_ns() // 1000}")
            try:
                await daemon.reload()
            except ReloadRejected:
                pass  # logged in full by the daemon
            except MifdnsError as exc:
                log.error("SIGHUP: %s", exc)
            finally:
                sd_notify("READY=1\nSTATUS=answering")

        loop.create_task(do())

    installed = []

    def install(sig: int, handler) -> None:  # type: ignore[no-untyped-def]
        try:
            loop.add_signal_handler(sig, handler)
            installed.append(sig)
        except (RuntimeError, ValueError, NotImplementedError):
            pass  # not the main thread (tests drive serve() directly)

    # stop requests are honoured from the start (and stay caught while stopping, so a second
    # SIGTERM cannot cut the restore of resolv.conf short); reloads once the daemon runs
    install(signal.SIGTERM, stop.set)
    install(signal.SIGINT, stop.set)
    try:
        await daemon.start()
        if user is not None:
            from .aio.privileges import drop

            drop(user, chown=(config.control_socket,) if config.control_socket else ())
        install(signal.SIGHUP, on_hup)
        sd_notify("READY=1\nSTATUS=answering")
        await stop.wait()
    finally:
        sd_notify("STOPPING=1")
        log.info("shutting down")
        try:
            await daemon.stop()
        finally:
            for sig in installed:  # stopped: a late signal must not kill the exiting process
                loop.remove_signal_handler(sig)
                signal.signal(sig, signal.SIG_IGN)


def _cmd_run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    config = _load(args.config)
    account = None
    if args.user:
        from .aio import privileges

        account = privileges.lookup(args.user)
        privileges.prepare(
            account,
            resolv_conf=config.resolv_conf.path if config.resolv_conf.manage else None,
            control_socket=config.control_socket or None,
        )
    loop_factory = None
    if os.environ.get("MIFDNS_UVLOOP", "1") != "0":
        try:
            import uvloop  # type: ignore[import-not-found]

            # only the daemon's loop: installing uvloop's policy would also hand pyroute2's
            # worker-thread loop to uvloop, which cannot open AF_NETLINK sockets
            loop_factory = uvloop.new_event_loop
        except ImportError:
            pass
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve(config, user=account))
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from . import config as cfgmod

    cfg = cfgmod.load_config(args.path)
    print(
        f"{args.path}: OK ({len(cfg.pvds)} PvDs: {', '.join(p.name for p in cfg.pvds) or 'none'})"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mifdns",
        description="Split-DNS stub resolver for hosts on several networks at once.",
    )
    p.add_argument("--version", action="version", version=f"mifdns {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    r = sub.add_parser("run", help="run the daemon in the foreground")
    r.add_argument(
        "--config",
        metavar="PATH",
        help=f"config file (default {DEFAULT_CONFIG} if present, else built-ins)",
    )
    r.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    r.add_argument(
        "--user",
        metavar="USER",
        help="started as root: become USER once the sockets are bound, keeping "
        "CAP_NET_RAW and CAP_NET_BIND_SERVICE",
    )
    c = sub.add_parser("check-config", help="validate a config file (exit 0 or 1)")
    c.add_argument("path")
    sub.add_parser("ctl", help="talk to a running daemon (mifdns ctl --help)", add_help=False)
    sub.add_parser("resolvconf", help="resolvconf(8) compatible front end", add_help=False)
    sub.add_parser(
        "demo", help="simulated networks in namespaces, end to end (needs root)", add_help=False
    )
    sub.add_parser(
        "replay", help="replay scenario files against mifdns (needs root)", add_help=False
    )
    sub.add_parser(
        "record", help="record upstream exchanges into a scenario skeleton", add_help=False
    )
    return p


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
        if os.path.basename(sys.argv[0]) == "resolvconf":
            argv = ["resolvconf", *argv]
    try:
        if argv and argv[0] == "ctl":
            from .ctl import main as ctl_main

            return ctl_main(argv[1:])
        if argv and argv[0] == "resolvconf":
            from .resolvconf import main as rc_main

            return rc_main(argv[1:])
        if argv and argv[0] == "demo":
            from .harness.demo import main as demo_main

            return demo_main(argv[1:])
        if argv and argv[0] == "replay":
            from .harness.replay import main as replay_main

            return replay_main(argv[1:])
        if argv and argv[0] == "record":
            from .harness.record import main as record_main

            return record_main(argv[1:])
        args = build_parser().parse_args(argv)
        if args.command == "run":
            return _cmd_run(args)
        if args.command == "check-config":
            return _cmd_check(args)
        build_parser().print_help()
        return 2
    except ConfigError as exc:
        for line in str(exc).splitlines():
            print(f"mifdns: {line}", file=sys.stderr)
        return 1
    except MifdnsError as exc:
        print(f"mifdns: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
