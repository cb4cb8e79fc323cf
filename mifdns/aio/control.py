"""The control socket: newline-delimited JSON over a unix stream socket (``mifdns ctl``).

Theory of operation
-------------------
A client sends one JSON object per line, ``{"cmd": "...", ...args}``, and gets one line back per
request, in order: ``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "one line"}``.
This module owns only the transport; what a command means is the daemon's ``handler``, an async
callable that takes the request dict and returns a JSON-able result, or raises
:class:`~mifdns.errors.ControlError` (any :class:`~mifdns.errors.MifdnsError`, in fact) for a
user error. Anything else it raises is a bug: it is logged with its traceback, answered as
``internal error: <type>: <msg>``, and the connection goes on.

``{"cmd": "monitor"}`` is handled here, not by the handler: the connection becomes a stream, the
answer ``{"ok": true, "result": "monitoring"}`` and then one JSON object per line per event
published on the :class:`MonitorHub`, until the client closes. Publishing never blocks: each
subscriber has a bounded queue; when it is full the event is dropped and counted, and the
subscriber later reads ``{"event": "dropped", "count": N}`` where the gap was.

Events the daemon publishes (all carry ``"event"`` and ``"time"``, Unix seconds; the ``mifdns ctl
monitor`` formatter reads these keys and prints any other event as ``key=value`` pairs):

- ``query``: ``name``, ``type``, ``pvd`` (the answering PvD or null), ``cache`` (hit, miss,
  or ``-`` for local answers), ``kind`` (positive/nxdomain/nodata/synthesized/captive/local/
  servfail, or refused: every server asked refused it), ``rcode``, ``ms``, ``candidates`` ([{pvd, grade, reason}]), ``local`` and
  ``refused`` (reason or null).
- ``attached``: ``pvd``, ``cause``. ``detached`` and ``purged``: ``pvd``, ``cause``,
  ``purged`` (cache entries dropped), ``cancelled`` (queries in flight). ``changed``: ``pvd``,
  ``what``. ``reload``: ``added``, ``removed``, ``changed``, ``unchanged``, ``notes``.
  Others (captive, NAT64 discovery) are free-form.

Every line is bounded (1 MiB); the number of clients is bounded (``max_clients``); the socket is
owner-only (0600) from the moment it exists, and it is never listening before it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import errno
import ipaddress
import json
import logging
import os
import socket
import stat
from collections.abc import Awaitable, Callable
from typing import Any

from ..errors import MifdnsError, StartupError

log = logging.getLogger("mifdns.control")

Handler = Callable[[dict[str, Any]], Awaitable[Any]]

MAX_LINE = 1 << 20  # bytes per request line
QUEUE_SIZE = 1000  # events buffered per monitor subscriber
BATCH = 256  # events written per wake-up of a monitor connection


class Subscription(asyncio.Queue):  # type: ignore[type-arg]
    """A monitor subscriber's bounded queue that remembers what it had to drop.

    ``get()`` returns ``{"event": "dropped", "count": N}`` once the backlog is drained, unless a
    newer event came first, in which case :meth:`MonitorHub.publish` queued the notice ahead of it.
    """

    def __init__(self, maxsize: int) -> None:
        super().__init__(maxsize)
        self.dropped = 0  # dropped since the last notice

    def _notice(self) -> dict[str, Any]:
        n, self.dropped = self.dropped, 0
        return {"event": "dropped", "count": n}

    async def get(self) -> Any:
        if self.dropped and self.empty():
            return self._notice()
        return await super().get()

    def get_nowait(self) -> Any:
        if self.dropped and self.empty():
            return self._notice()
        return super().get_nowait()

    def offer(self, event: dict[str, Any]) -> bool:
        """Queue ``event`` without blocking; False (and counted) when full."""
        if self.full() or (self.dropped and self.qsize() >= self.maxsize - 1):
            self.dropped += 1  # (after a gap: wait for room for the notice and the event)
            return False
        if self.dropped:
            self.put_nowait(self._notice())
        self.put_nowait(event)
        return True


class MonitorHub:
    """Fan-out of daemon events to ``monitor`` connections."""

    def __init__(self, queue_size: int = QUEUE_SIZE) -> None:
        self.queue_size = queue_size
        self._subscribers: list[Subscription] = []
        self.published = 0
        self.dropped = 0  # total over all subscribers, for status counters

    @property
    def active(self) -> bool:
        """True while anyone listens: the daemon builds per-query events only then."""
        return bool(self._subscribers)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def publish(self, event: dict[str, Any]) -> None:
        self.published += 1
        for q in self._subscribers:
            if not q.offer(event):
                self.dropped += 1

    def subscribe(self) -> Subscription:
        q = Subscription(self.queue_size)
        self._subscribers.append(q)
        return q

    def unsubscribe(self, q: asyncio.Queue) -> None:  # type: ignore[type-arg]
        with contextlib.suppress(ValueError):
            self._subscribers.remove(q)  # type: ignore[arg-type]


_IP_TYPES = (
    ipaddress.IPv4Address,
    ipaddress.IPv6Address,
    ipaddress.IPv4Network,
    ipaddress.IPv6Network,
    ipaddress.IPv4Interface,
    ipaddress.IPv6Interface,
)


def _json_default(obj: Any) -> Any:
    """Enums, sets and IP objects, as the core keeps them; anything else is a daemon bug."""
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=str)
    if isinstance(obj, _IP_TYPES):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def encode(message: Any) -> bytes:
    return json.dumps(message, default=_json_default, separators=(",", ":")).encode() + b"\n"


def _one_line(text: str) -> str:
    return "; ".join(part.strip() for part in str(text).splitlines() if part.strip()) or "error"


class ControlServer:
    """Serves the control protocol on a unix socket at ``path``."""

    def __init__(
        self, path: str, handler: Handler, hub: MonitorHub, *, max_clients: int = 32
    ) -> None:
        self.path = path
        self.handler = handler
        self.hub = hub
        self.max_clients = max_clients
        self.refused_clients = 0
        self._server: asyncio.AbstractServer | None = None
        self._clients: set[asyncio.Task[Any]] = set()
        self._inode: tuple[int, int] | None = None

    # lifecycle

    async def start(self) -> None:
        parent = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(parent, mode=0o755, exist_ok=True)
        except OSError as exc:
            raise StartupError(
                f"cannot create {parent} for the control socket: {exc.strerror or exc}"
            ) from None
        self._remove_stale()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            # Linux gives the socket file the mode of the socket inode (minus umask) at bind time:
            # owner-only from creation, and nobody can connect before listen() anyway.
            os.fchmod(sock.fileno(), 0o600)
            sock.bind(self.path)
            os.chmod(self.path, 0o600)
            st = os.stat(self.path)
            self._inode = (st.st_dev, st.st_ino)
            sock.setblocking(False)
            self._server = await asyncio.start_unix_server(
                self._serve_client, sock=sock, limit=MAX_LINE + 1
            )
        except OSError as exc:
            sock.close()
            raise StartupError(
                f"cannot listen on control socket {self.path}: {exc.strerror or exc}"
            ) from None
        log.info("control socket listening on %s", self.path)

    def _remove_stale(self) -> None:
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StartupError(f"control socket {self.path}: {exc.strerror or exc}") from None
        if not stat.S_ISSOCK(st.st_mode):
            raise StartupError(
                f"control socket {self.path} exists and is not a socket; refusing to remove it"
            )
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(1.0)
        try:
            probe.connect(self.path)
        except (ConnectionRefusedError, FileNotFoundError):
            pass  # stale: nobody listens
        except OSError as exc:
            if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT):
                raise StartupError(f"control socket {self.path}: {exc.strerror or exc}") from None
        else:
            raise StartupError(f"another mifdns is running (control socket {self.path})")
        finally:
            probe.close()
        log.info("removing stale control socket %s", self.path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        clients = list(self._clients)
        for task in clients:
            task.cancel()
        if clients:
            await asyncio.gather(*clients, return_exceptions=True)
        if server is not None:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        self._unlink()

    def _unlink(self) -> None:
        """Remove the socket file, but only if it is still ours (not a successor's)."""
        if self._inode is None:
            return
        try:
            st = os.lstat(self.path)
            if (st.st_dev, st.st_ino) == self._inode:
                os.unlink(self.path)
        except OSError:
            pass
        self._inode = None

    # one connection

    async def _serve_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if len(self._clients) >= self.max_clients:
            self.refused_clients += 1
            with contextlib.suppress(Exception):
                writer.write(
                    encode(
                        {
                            "ok": False,
                            "error": f"too many control clients (at most {self.max_clients})",
                        }
                    )
                )
                await writer.drain()
            await self._close_writer(writer)
            return
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        try:
            await self._requests(reader, writer)
        except ConnectionError:
            pass  # the client went away
        except asyncio.CancelledError:
            pass  # close(): we are shutting down
        except Exception:
            log.exception("control connection failed")
        finally:
            self._clients.discard(task)
            await self._close_writer(writer)

    async def _requests(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                line = await reader.readline()
            except ValueError:  # the line overran the limit
                writer.write(
                    encode(
                        {
                            "ok": False,
                            "error": f"bad request: line longer than {MAX_LINE} bytes; closing",
                        }
                    )
                )
                await writer.drain()
                return
            if not line:
                return
            if not line.strip():
                continue
            try:
                req = json.loads(line)
            except (ValueError, UnicodeDecodeError) as exc:
                response = {"ok": False, "error": f"bad request: not JSON: {_one_line(str(exc))}"}
            else:
                if not isinstance(req, dict) or not isinstance(req.get("cmd"), str):
                    response = {
                        "ok": False,
                        "error": 'bad request: expected a JSON object with a "cmd" string',
                    }
                elif req["cmd"] == "monitor":
                    await self._monitor(reader, writer)
                    return
                else:
                    response = await self._dispatch(req)
            writer.write(self._encode_response(response))
            await writer.drain()

    async def _dispatch(self, req: dict[str, Any]) -> dict[str, Any]:
        try:
            result = await self.handler(req)
        except MifdnsError as exc:
            return {"ok": False, "error": _one_line(str(exc))}
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("control command %r failed", req.get("cmd"))
            return {"ok": False, "error": _internal(exc)}
        return {"ok": True, "result": result}

    @staticmethod
    async def _close_writer(writer: asyncio.StreamWriter) -> None:
        """Close, giving a client that does not read one second before the transport is aborted."""
        writer.close()
        try:
            await asyncio.wait_for(writer.wait_closed(), 1.0)
        except (TimeoutError, asyncio.CancelledError):
            writer.transport.abort()
        except Exception:  # the peer reset us: it is gone, that is all
            log.debug("closing a control connection failed", exc_info=True)

    @staticmethod
    def _encode_response(response: dict[str, Any]) -> bytes:
        try:
            return encode(response)
        except (TypeError, ValueError) as exc:
            log.exception("control result of %s cannot be encoded", type(response.get("result")))
            return encode({"ok": False, "error": _internal(exc)})

    async def _monitor(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        q = self.hub.subscribe()
        gone = asyncio.ensure_future(_until_eof(reader))
        try:
            writer.write(encode({"ok": True, "result": "monitoring"}))
            await writer.drain()
            while True:
                get = asyncio.ensure_future(q.get())
                await asyncio.wait({get, gone}, return_when=asyncio.FIRST_COMPLETED)
                if not get.done():
                    get.cancel()
                    return
                events = [get.result()]
                while len(events) < BATCH and not (q.empty() and not q.dropped):
                    events.append(q.get_nowait())
                writer.write(b"".join(_encode_event(e) for e in events))
                await writer.drain()
        finally:
            self.hub.unsubscribe(q)
            gone.cancel()


async def _until_eof(reader: asyncio.StreamReader) -> None:
    """Read and ignore whatever a monitoring client sends, until it closes."""
    with contextlib.suppress(ConnectionError, ValueError):
        while await reader.read(4096):
            pass


def _encode_event(event: Any) -> bytes:
    try:
        return encode(event)
    except (TypeError, ValueError) as exc:
        log.warning("monitor event cannot be encoded: %s", exc)
        return encode({"event": "unencodable", "error": str(exc)})


def _internal(exc: BaseException) -> str:
    return _one_line(f"internal error: {type(exc).__name__}: {exc}")
