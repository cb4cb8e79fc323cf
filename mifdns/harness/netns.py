"""Run code, sockets and commands inside named network namespaces.

Theory of operation: setns(2) with CLONE_NEWNET switches the network namespace of the *calling
thread* only. ``entered(ns)`` opens the target (/run/netns/NAME) and the thread's current
namespace (/proc/thread-self/ns/net, not /proc/self, which names the main thread's), switches,
and switches back on exit. A socket keeps the namespace it was created in for its whole life,
so ``socket_in()`` creates it inside and returns it usable from anywhere (any thread, any event
loop). Name lookups that depend on the namespace (if_nametoindex, "%eth0" scope ids) must be
done inside ``entered()`` too.

Never ``await`` inside ``entered()``: the event loop would run unrelated code in the namespace.

Commands run through ``ip netns exec NS ...`` (``run``/``popen``), or ``ip -n NS ...`` for
``ip`` itself (``ip()``/``ip_batch()``), which avoids the mount-namespace dance of ``exec``.
Python 3.11 has no os.setns, so libc's setns is called through ctypes.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import secrets
import shutil
import socket
import subprocess
from collections.abc import Iterator, Sequence
from typing import Any

__all__ = [
    "NETNS_RUN_DIR",
    "CommandError",
    "HarnessError",
    "available",
    "entered",
    "exists",
    "ip",
    "ip_batch",
    "popen",
    "run",
    "socket_in",
    "sysctl",
]

NETNS_RUN_DIR = "/run/netns"
_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


class HarnessError(RuntimeError):
    """The test bed could not do what was asked (namespace, link, address, process)."""


class CommandError(HarnessError):
    """A command run by the harness failed; the message carries its stderr."""

    def __init__(self, argv: Sequence[str], returncode: int, stderr: str) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr
        super().__init__(f"{' '.join(self.argv)} exited {returncode}: {stderr.strip()}")


def _ns_path(ns: str) -> str:
    return ns if "/" in ns else os.path.join(NETNS_RUN_DIR, ns)


def exists(ns: str) -> bool:
    """True if the named namespace exists (its /run/netns entry is there)."""
    return os.path.exists(_ns_path(ns))


def _setns(fd: int) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextlib.contextmanager
def entered(ns: str | None) -> Iterator[None]:
    """Run the block with the current thread inside namespace ``ns`` (None: stay where we are).

    ``ns`` is a name under /run/netns or a path (e.g. /proc/PID/ns/net).
    """
    if ns is None:
        yield
        return
    try:
        target = os.open(_ns_path(ns), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise HarnessError(f"network namespace {ns!r} does not exist") from None
    try:
        original = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(target)
            try:
                yield
            finally:
                # If this fails the thread is stranded in the wrong namespace: let it raise.
                _setns(original)
        finally:
            os.close(original)
    finally:
        os.close(target)


def socket_in(ns: str | None, family: int, type: int, proto: int = 0) -> socket.socket:
    """A new socket that lives in namespace ``ns`` (it stays there after we come back)."""
    with entered(ns):
        return socket.socket(family, type, proto)


def sysctl(ns: str | None, key: str, value: object) -> None:
    """Write a net.* sysctl inside ``ns`` ("net.ipv4.conf.all.rp_filter" or a /proc/sys path).

    /proc/sys/net resolves to the namespace of the thread that opens the file.
    """
    path = key if key.startswith("/") else "/proc/sys/" + key.replace(".", "/")
    with entered(ns), open(path, "w") as f:
        f.write(str(value))


def _check(argv: Sequence[str], proc: subprocess.CompletedProcess[str]) -> None:
    if proc.returncode != 0:
        raise CommandError(argv, proc.returncode, proc.stderr or "")


def ip(ns: str | None, *args: str, check: bool = True) -> str:
    """Run ``ip [-n NS] ARGS...`` and return its stdout; raise CommandError on failure."""
    argv = ["ip"] + (["-n", ns] if ns else []) + list(args)
    proc = subprocess.run(
        argv, check=False, capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    if check:
        _check(argv, proc)
    return proc.stdout


def ip_batch(ns: str | None, lines: Sequence[str]) -> None:
    """Run several ``ip`` commands in one process (``ip -batch -``); stops at the first error."""
    if not lines:
        return
    argv = ["ip"] + (["-n", ns] if ns else []) + ["-batch", "-"]
    text = "\n".join(lines) + "\n"
    proc = subprocess.run(argv, check=False, input=text, capture_output=True, text=True)
    _check(argv, proc)


def _exec_argv(ns: str | None, argv: Sequence[str]) -> list[str]:
    return (["ip", "netns", "exec", ns] if ns else []) + [str(a) for a in argv]


def run(ns: str | None, argv: Sequence[str], **kw: Any) -> subprocess.CompletedProcess[Any]:
    """``ip netns exec NS ARGV...`` to completion.

    Defaults: text=True, output captured unless stdout/stderr are given, check=True (raising
    CommandError, which carries stderr). Other keywords go to subprocess.run.
    """
    check = kw.pop("check", True)
    kw.setdefault("text", True)
    if "stdout" not in kw and "stderr" not in kw and "capture_output" not in kw:
        kw["capture_output"] = True
    full = _exec_argv(ns, argv)
    proc = subprocess.run(full, check=False, **kw)
    if check and proc.returncode != 0:
        err = proc.stderr if isinstance(proc.stderr, str) else (proc.stderr or b"").decode()
        raise CommandError(full, proc.returncode, err)
    return proc


def popen(ns: str | None, argv: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
    """``ip netns exec NS ARGV...`` in the background. ip execs ARGV, so the pid is ARGV's."""
    return subprocess.Popen(_exec_argv(ns, argv), **kw)


def available() -> tuple[bool, str]:
    """Can this process build the test bed? Tries it: root, a namespace, a veth pair, setns."""
    if os.geteuid() != 0:
        return False, f"not root (euid {os.geteuid()})"
    if shutil.which("ip") is None:
        return False, "the `ip` command (iproute2) is not installed"
    name = f"mifprobe{os.getpid()}-{secrets.token_hex(3)}"
    try:
        ip(None, "netns", "add", name)
    except (OSError, HarnessError) as exc:
        return False, f"cannot create a network namespace: {exc}"
    try:
        ip(name, "link", "add", "mifprobe0", "type", "veth", "peer", "name", "mifprobe1")
        ip(name, "link", "set", "mifprobe0", "up")
        with entered(name):
            socket.if_nametoindex("mifprobe1")
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"mifprobe0")
        return True, "ok"
    except (OSError, HarnessError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.errno == errno.EPERM else exc
        return False, f"network namespace works but veth/setns does not: {reason}"
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)
