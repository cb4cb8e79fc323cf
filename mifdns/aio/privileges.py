"""Dropping root after the sockets are bound: ``mifdns run --user USER``.

Theory of operation
-------------------
Started as root, the daemon binds its listeners, its control socket and its netlink socket, then
becomes USER (uid, gid and USER's groups) and keeps exactly two capabilities:

- CAP_NET_RAW: every new upstream socket is bound to its PvD's interface with SO_BINDTODEVICE.
  Linux < 5.7 requires CAP_NET_RAW for that; since 5.7 binding a socket that is not bound yet is
  allowed without it, re-binding still is not. Kept so that mifdns works on both.
- CAP_NET_BIND_SERVICE: the same set the systemd unit grants (listening on another port 53
  address needs a restart anyway).

Steps (in the thread that runs the event loop: capabilities belong to a thread, and only this
one opens sockets; glibc applies the uid change to every thread, the others end with none):

1. PR_CAPBSET_DROP every other capability from the bounding set (root has CAP_SETPCAP);
2. PR_SET_KEEPCAPS 1, so the permitted set survives the uid change;
3. initgroups, setresgid, setresuid (real, effective and saved: no way back to 0);
4. capset: permitted = effective = the two kept, inheritable empty (the kernel cleared the
   effective set at the uid change);
5. PR_SET_KEEPCAPS 0 and PR_SET_NO_NEW_PRIVS 1;
6. check: setuid(0) must fail and CapEff must be exactly the two kept.

Anything that fails raises StartupError: a daemon that meant to drop root must not run as root.
"""

from __future__ import annotations

import ctypes
import logging
import os
import pwd
import stat
from dataclasses import dataclass

from ..errors import StartupError

log = logging.getLogger("mifdns")

CAP_SETPCAP = 8
CAP_NET_BIND_SERVICE = 10
CAP_NET_RAW = 13
KEEP = (CAP_NET_BIND_SERVICE, CAP_NET_RAW)

# Modules the daemon imports lazily (control commands, error paths). They are imported before the
# drop: a Python installed where USER cannot read (a virtualenv under /root) would otherwise fail
# on the first ``ctl explain`` after it.
WARM_IMPORTS = (
    "json",
    "fnmatch",
    "traceback",
    "linecache",
    "dns.rdatatype",
    "dns.name",
    "dns.message",
    "mifdns.resolvconf",
    "mifdns.aio.resolvconf_writer",
)

PR_SET_KEEPCAPS = 8
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]


def lookup(user: str) -> Account:
    """USER as a name or a numeric uid -> Account; StartupError if there is no such user."""
    try:
        pw = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except (KeyError, OverflowError):
        raise StartupError(f"--user {user}: no such user") from None
    groups = {pw.pw_gid}
    try:
        groups |= set(os.getgrouplist(pw.pw_name, pw.pw_gid))
    except OSError:
        pass
    return Account(pw.pw_name, pw.pw_uid, pw.pw_gid, tuple(sorted(groups)))


def may_write_dir(path: str, account: Account) -> bool:
    """Whether ``account`` may create and rename files in directory ``path`` (mode bits only;
    ACLs and the ancestors' search bits are not looked at)."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    if account.uid == 0:
        return True
    if st.st_uid == account.uid:
        need = stat.S_IWUSR | stat.S_IXUSR
    elif st.st_gid in account.groups:
        need = stat.S_IWGRP | stat.S_IXGRP
    else:
        need = stat.S_IWOTH | stat.S_IXOTH
    return st.st_mode & need == need


def _reachable(path: str, account: Account) -> bool:
    """Whether ``account`` may search every directory from / down to ``path``."""
    if account.uid == 0:
        return True
    parts = os.path.abspath(path).split(os.sep)
    for i in range(1, len(parts) + 1):
        d = os.sep.join(parts[:i]) or os.sep
        try:
            st = os.stat(d)
        except OSError:
            return False
        bit = (
            stat.S_IXUSR
            if st.st_uid == account.uid
            else stat.S_IXGRP
            if st.st_gid in account.groups
            else stat.S_IXOTH
        )
        if not st.st_mode & bit:
            return False
    return True


def prepare(account: Account, *, resolv_conf: str | None, control_socket: str | None) -> None:
    """Checks made before starting, while nothing has been touched yet.

    - A managed resolv.conf is rewritten (and finally restored) by rename in its directory:
      after the drop, USER must be able to write there, or mifdns refuses to start.
    - The control socket is removed at exit: its directory is created for USER if missing;
      if it exists and USER may not write it, the socket file stays behind (a warning; the
      next start replaces it)."""
    if os.geteuid() != 0:
        raise StartupError(
            f"--user {account.name}: mifdns must be started as root to drop to another user"
        )
    if resolv_conf:
        d = os.path.dirname(os.path.abspath(resolv_conf))
        if not may_write_dir(d, account):
            raise StartupError(
                f"--user {account.name}: resolv_conf.manage rewrites {resolv_conf} by rename "
                f"in {d}, which {account.name} may not write. Point resolv_conf.path at a file "
                f"in a directory {account.name} owns (e.g. /run/mifdns/resolv.conf, with "
                "/etc/resolv.conf a symlink to it) or run without --user"
            )
    if not _reachable(os.path.dirname(os.__file__), account):
        log.warning(
            "the Python library %s is not readable by %s: modules not loaded before "
            "the drop cannot be imported after it; install mifdns where %s can read it",
            os.path.dirname(os.__file__),
            account.name,
            account.name,
        )
    if control_socket:
        d = os.path.dirname(os.path.abspath(control_socket))
        if not os.path.exists(d):
            try:
                os.makedirs(d, mode=0o755)
                os.chown(d, account.uid, account.gid)
            except OSError as exc:
                raise StartupError(
                    f"cannot create {d} for the control socket: {exc.strerror or exc}"
                ) from None
        elif not may_write_dir(d, account):
            log.warning(
                "%s is not writable by %s: the control socket will stay behind at exit",
                d,
                account.name,
            )


# ---------------------------------------------------------------------- the drop
class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _prctl(libc: ctypes.CDLL, option: int, arg: int) -> int:
    rc = libc.prctl(
        ctypes.c_int(option),
        ctypes.c_ulong(arg),
        ctypes.c_ulong(0),
        ctypes.c_ulong(0),
        ctypes.c_ulong(0),
    )
    if rc < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(rc)


def _capset(libc: ctypes.CDLL, caps: tuple[int, ...]) -> None:
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for cap in caps:
        word, bit = divmod(cap, 32)
        data[word].effective |= 1 << bit
        data[word].permitted |= 1 << bit
    if libc.capset(ctypes.byref(header), data) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 40


def effective_caps(pid: int | str = "self") -> int:
    """The effective capability set of a process, as a bit mask (from /proc)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def drop(account: Account, *, chown: tuple[str, ...] = ()) -> None:
    """Become ``account`` keeping CAP_NET_RAW and CAP_NET_BIND_SERVICE (see the docstring)."""
    if os.geteuid() != 0:
        raise StartupError(
            f"--user {account.name}: mifdns must be started as root to drop to another user"
        )
    import importlib

    for mod in WARM_IMPORTS:
        try:
            importlib.import_module(mod)
        except ImportError:
            pass
    libc = _libc()
    for path in chown:  # files the daemon owns from now on (the control socket)
        try:
            os.chown(path, account.uid, account.gid)
        except OSError as exc:
            log.warning("cannot hand %s to %s: %s", path, account.name, exc.strerror)
    try:
        for cap in range(_last_cap() + 1):
            if cap not in KEEP:
                _prctl(libc, PR_CAPBSET_DROP, cap)
        _prctl(libc, PR_SET_KEEPCAPS, 1)
        os.setgroups(list(account.groups))
        os.setresgid(account.gid, account.gid, account.gid)
        os.setresuid(account.uid, account.uid, account.uid)
        _capset(libc, KEEP)
        _prctl(libc, PR_SET_KEEPCAPS, 0)
        _prctl(libc, PR_SET_NO_NEW_PRIVS, 1)
    except OSError as exc:
        raise StartupError(
            f"--user {account.name}: dropping privileges failed: {exc.strerror or exc}"
        ) from None
    if account.uid != 0:
        try:
            os.setuid(0)
        except PermissionError:
            pass
        else:
            raise StartupError(f"--user {account.name}: could regain root after the drop")
    want = sum(1 << c for c in KEEP)
    have = effective_caps()
    if have != want:
        raise StartupError(
            f"--user {account.name}: effective capabilities are {have:#x}, expected {want:#x}"
        )
    log.info(
        "now running as %s (uid %d, gid %d) with CAP_NET_RAW and CAP_NET_BIND_SERVICE",
        account.name,
        account.uid,
        account.gid,
    )
