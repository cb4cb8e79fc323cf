"""The scenario's environment on the test bed: the fake upstream that serves a network's recorded
exchanges and zone (``ScenarioUpstream``), and the mifdns daemon under test (``Daemon``).

Theory of operation (ScenarioUpstream): FakeUpstream logs every question, then decides what to
do; this subclass picks the recorded exchange for the question first (``_pick``: exchanges
matching name, type, class, transport and the upstream's captive mode, each used ``times`` times
in order, the last one forever unless it is counted), before any delay, and hands the choice to
``_reply`` in the same asyncio task through a context variable. A ``drop`` exchange (or
``drop_first``) makes FakeUpstream log the question and send nothing; refused/servfail/
truncate_udp still win over a recorded answer; anything without an exchange gets the zone.
"""

from __future__ import annotations

import contextvars
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from mifdns.harness import netns
from mifdns.harness.fakeupstream import FakeUpstream, query_from
from mifdns.harness.scenario import Exchange, UpstreamDef
from mifdns.harness.topology import Topology

__all__ = ["LISTEN", "READY_TIMEOUT", "Daemon", "DaemonError", "ScenarioUpstream"]

LISTEN = "127.0.0.53"
READY_TIMEOUT = 15.0


# -- the upstream ----------------------------------------------------------------------------------
class _Raw:
    """Wire bytes where FakeUpstream expects a dnslib record (it only calls .pack())."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def pack(self) -> bytes:
        return self.data


class ScenarioUpstream(FakeUpstream):
    """A FakeUpstream that serves recorded exchanges before its zone, and can drop the first N
    questions. ``captive`` holds the portal address while captive (FakeUpstream's meaning)."""

    def __init__(self, ns: str, listen: Sequence[str], udef: UpstreamDef, *, network: str,
                 address: str) -> None:  # fmt: skip
        super().__init__(
            ns, listen, zone=udef.zone, records=udef.records, tcp=udef.tcp,
            name=f"{network}@{address}", delay=udef.delay, drop=udef.drop,
            servfail=udef.servfail, refused=udef.refused, truncate_udp=udef.truncate_udp,
            ttl=udef.ttl, dns64=udef.dns64, captive=udef.portal if udef.captive else None,
        )  # fmt: skip
        self.network = network
        self.address = address
        self.portal = udef.portal
        self.drop_first = udef.drop_first
        self.exchanges: list[Exchange] = list(udef.exchanges)
        self._served: dict[tuple[str, int, int], int] = {}

    def apply(self, behaviour: dict[str, Any]) -> None:
        """Scenario behaviour names (docs/scenarios.md) -> FakeUpstream attributes."""
        b = dict(behaviour)
        if "portal" in b:
            self.portal = b.pop("portal")
            if self.captive:
                self.captive = self.portal
        if "captive" in b:
            self.captive = self.portal if b.pop("captive") else None
        if "drop_first" in b:
            self.drop_first = b.pop("drop_first")
        self.set(**b)

    async def _replies(self, data: bytes, transport: str, src: Any, iface: str | None) -> Any:
        # Runs in its own task per message: the exchange chosen here reaches _reply (called
        # by FakeUpstream._replies in the same task) through a context variable.
        ex = self._pick(data, transport) if self.exchanges else None
        _EXCHANGE.set((ex, transport))
        drop = ex is not None and ex.drop
        if self.drop_first > 0 and len(data) >= 12:
            self.drop_first -= 1
            drop = True
        if drop:
            saved, self.drop = self.drop, True
            try:  # logged, then dropped: FakeUpstream returns before its first await
                return await super()._replies(data, transport, src, iface)
            finally:
                self.drop = saved
        return await super()._replies(data, transport, src, iface)

    def _pick(self, data: bytes, transport: str) -> Exchange | None:
        """The exchange that answers this query (and count it as served), or None."""
        from dnslib import DNSRecord  # type: ignore[import-untyped]

        try:
            req = DNSRecord.parse(data)
        except Exception:  # noqa: BLE001 - dnslib raises assorted errors on garbage
            return None
        if len(req.questions) != 1 or req.header.qr or req.header.opcode != 0:
            return None
        name = str(req.q.qname).lower()
        name = name if name.endswith(".") else name + "."
        key = (name, int(req.q.qtype), int(req.q.qclass))
        found = [x for x in self.exchanges if x.matches(*key, transport, self.captive is not None)]
        if not found:
            return None
        n = self._served.get(key, 0)
        self._served[key] = n + 1
        for x in found:  # each is used `times` times (default once), in order
            n -= x.times or 1
            if n < 0:
                return x
        last = found[-1]
        return last if last.times is None else None  # the last repeats, unless counted

    def _reply(self, req: Any, transport: str) -> Any:
        ex, _ = _EXCHANGE.get()
        modes = self.refused or self.servfail or transport == "udp" and self.truncate_udp
        if ex is not None and not ex.drop and not modes and req.header.opcode == 0:
            return _Raw(_patch(ex.template, req))
        return super()._reply(req, transport)


_EXCHANGE: contextvars.ContextVar[tuple[Exchange | None, str]] = contextvars.ContextVar(
    "exchange", default=(None, "")
)


def _patch(template: bytes, req: Any) -> bytes:
    """The recorded response with the query's ID and its spelling of the question name."""
    out = bytearray(template)
    out[0:2] = int(req.header.id).to_bytes(2, "big")
    qname = b"".join(bytes([len(lab)]) + bytes(lab) for lab in req.q.qname.label) + b"\0"
    end = 12 + len(qname)
    if len(out) >= end and out[12:end].lower() == qname.lower():
        out[12:end] = qname
    return bytes(out)


# -- the daemon under test -----------------------------------------------------------------------
class DaemonError(RuntimeError):
    pass


class Daemon:
    """``python -m mifdns run`` in the topology's host namespace."""

    def __init__(self, topo: Topology, workdir: Path) -> None:
        self.topo = topo
        self.workdir = workdir
        self.config_path = workdir / "mifdns.yaml"
        self.socket = str(workdir / "control.sock")
        self.stderr_path = workdir / "mifdns.stderr"
        self.proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def env() -> dict[str, str]:
        import mifdns

        root = str(Path(mifdns.__file__).resolve().parent.parent)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        env.pop("MIFDNS_CONTROL_SOCKET", None)
        env.pop("MIFDNS_LISTEN", None)
        return env

    def write_config(self, config: dict[str, Any] | str) -> None:
        text = config if isinstance(config, str) else yaml.safe_dump(config, sort_keys=False)
        self.config_path.write_text(text)

    def start(self) -> None:
        with open(self.stderr_path, "wb") as err:
            self.proc = self.topo.popen_host(
                [sys.executable, "-m", "mifdns", "run", "--config", str(self.config_path)],
                stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=self.env(),
            )  # fmt: skip
        deadline = time.monotonic() + READY_TIMEOUT
        answered = False
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise DaemonError(f"mifdns exited with status {self.proc.returncode} at start:"
                                  f"\n{self.stderr_tail()}")  # fmt: skip
            if not answered:
                try:
                    query_from(self.topo.host, LISTEN, "localhost.", "A", timeout=0.2)
                    answered = True
                except Exception:  # noqa: BLE001 - not answering yet, whatever the reason
                    time.sleep(0.03)
                    continue
            if os.path.exists(self.socket):
                return
            time.sleep(0.02)
        raise DaemonError(f"mifdns not ready within {READY_TIMEOUT:g} s:\n{self.stderr_tail()}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> int | None:
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        return proc.returncode

    def stderr_tail(self, lines: int = 25) -> str:
        try:
            text = self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def request(self, req: dict[str, Any]) -> Any:
        """A control request in-process (reads: cache, pvds, status)."""
        from mifdns.ctl import request

        return request(self.socket, req, timeout=10)

    def cli(
        self, argv: Sequence[str], *, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``python -m mifdns ARGV`` in the host namespace (ctl, resolvconf: the real CLIs)."""
        return netns.run(self.topo.host, [sys.executable, "-m", "mifdns", *argv], check=False,
                         input=stdin, timeout=30, env=self.env())  # fmt: skip

    def ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.cli(["ctl", "--socket", self.socket, "--json", *args])
