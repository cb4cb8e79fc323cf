"""Fixtures for integration tests on real network namespaces.

- ``topology``: a fresh ``Topology`` per test, closed (everything removed) at teardown.
- ``upstream_factory``: ``await upstream_factory(network, zone=..., **behaviour)`` starts a
  ``FakeUpstream`` on the network's server addresses. It runs on a background-thread loop
  (``server_loop``), so it keeps answering while the test blocks in ``daemon.query()``.
- ``mifdns_factory``: ``await mifdns_factory(topology, config)`` runs
  ``python -m mifdns run --config FILE`` in the topology's host namespace and returns a
  ``Daemon`` handle (``query``, ``aquery``, ``ctl``, ``ctl_text``, ``stderr``, ``pid``).

Tests that use these fixtures, or carry ``@pytest.mark.netns``, need root and network
namespaces. Without them they are skipped loudly (and a warning closes the terminal summary),
except under CI=true, where they fail: the suite must run there.
MIFDNS_NETNS_UNAVAILABLE=reason simulates a machine without namespaces (tests of this gate).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml

import mifdns
from mifdns.harness import netns
from mifdns.harness.fakeupstream import FakeUpstream, ServerLoop, query_from
from mifdns.harness.topology import Network, Topology, sweep_stale

HERE = Path(__file__).resolve().parent
REPO_ROOT = Path(mifdns.__file__).resolve().parent.parent
NETNS_FIXTURES = frozenset({"topology", "server_loop", "upstream_factory", "mifdns_factory"})


def _probe() -> tuple[bool, str]:
    simulated = os.environ.get("MIFDNS_NETNS_UNAVAILABLE")
    if simulated:
        return False, f"simulated by MIFDNS_NETNS_UNAVAILABLE: {simulated}"
    return netns.available()


# Module-level check, once per session: root + namespaces + veth actually work.
NETNS_OK, NETNS_REASON = _probe()
if NETNS_OK:
    sweep_stale()  # namespaces left by runs that were SIGKILLed
_gated: list[str] = []


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def _require_netns(nodeid: str) -> None:
    if NETNS_OK:
        return
    msg = f"needs root + network namespaces: {NETNS_REASON}"
    _gated.append(nodeid)
    if _in_ci():
        pytest.fail(f"{msg} (CI=true: the integration suite must run here)", pytrace=False)
    pytest.skip(msg)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents and NETNS_FIXTURES & set(
            getattr(item, "fixturenames", ())
        ):
            item.add_marker(pytest.mark.netns)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if NETNS_OK or not _gated:
        return
    verb = "FAILED" if _in_ci() else "SKIPPED"
    terminalreporter.write_sep(
        "!",
        f"WARNING: {len(_gated)} network-namespace integration tests {verb}: "
        f"needs root + network namespaces: {NETNS_REASON}",
        yellow=True,
        bold=True,
    )


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"rep_{report.when}", report)


def _test_failed(request: pytest.FixtureRequest) -> bool:
    return any(
        getattr(getattr(request.node, f"rep_{when}", None), "failed", False)
        for when in ("setup", "call")
    )


@pytest.fixture(autouse=True)
def _netns_gate(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("netns") is not None:
        _require_netns(request.node.nodeid)


@pytest.fixture
def corp_net(topology: Topology) -> Network:
    """One corporate network behind corp0 (hostile-input and limit tests)."""
    return topology.add_network("corp", "corp0")


@pytest.fixture
def topology(request: pytest.FixtureRequest) -> Iterator[Topology]:
    _require_netns(request.node.nodeid)
    with Topology() as topo:
        yield topo


@pytest.fixture
def server_loop(topology: Topology) -> Iterator[ServerLoop]:
    """A background event loop for fake servers (depends on topology: torn down before it)."""
    loop = ServerLoop()
    yield loop
    loop.close()


@pytest_asyncio.fixture
async def upstream_factory(topology: Topology, server_loop: ServerLoop) -> AsyncIterator[Any]:
    started: list[FakeUpstream] = []

    async def factory(
        network: Network,
        zone: Any = None,
        *,
        listen: Sequence[str] | None = None,
        port: int = 53,
        **behaviour: Any,
    ) -> FakeUpstream:
        up = FakeUpstream(
            network.ns,
            listen or network.listen_addrs,
            port=port,
            zone=zone,
            name=network.name,
            **behaviour,
        )
        await server_loop.acall(up.start())
        started.append(up)
        return up

    yield factory
    for up in reversed(started):
        await up.stop()


class DaemonError(RuntimeError):
    """The daemon under test did not start, or a control command failed."""


def _split_hostport(spec: str) -> tuple[str, int]:
    if spec.startswith("["):
        host, _, rest = spec[1:].partition("]")
        return host, int(rest.lstrip(":") or 53)
    if spec.count(":") == 1:
        host, port = spec.split(":")
        return host, int(port)
    return spec, 53


class Daemon:
    """A mifdns process in a topology's host namespace."""

    def __init__(
        self,
        topology: Topology,
        config: dict[str, Any],
        workdir: Path,
        sockdir: Path,
        command: Sequence[str] | None = None,
    ) -> None:
        self.topology = topology
        cfg = dict(config)
        cfg.setdefault("listen", ["127.0.0.53:53"])
        cfg.setdefault("control_socket", str(sockdir / "control.sock"))
        self.config = cfg
        self.control_socket = cfg["control_socket"]
        self.server, self.port = _split_hostport(str(cfg["listen"][0]))
        # a wildcard listener is asked on loopback (a reply to 0.0.0.0 comes from 127.0.0.1)
        self.server = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.server, self.server)
        self.config_path = workdir / "mifdns.yaml"
        self.config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        self.stderr_path = workdir / "mifdns.stderr"
        self.stdout_path = workdir / "mifdns.stdout"
        self.argv = list(command or [sys.executable, "-m", "mifdns", "run"])
        self.argv += ["--config", str(self.config_path)]
        self.proc: subprocess.Popen[bytes] | None = None
        self.returncode: int | None = None

    def __repr__(self) -> str:
        return f"<Daemon pid={self.pid} {self.server}:{self.port}>"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @staticmethod
    def env() -> dict[str, str]:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        return env

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stdout(self) -> str:
        try:
            return self.stdout_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _spawn(self) -> subprocess.Popen[bytes]:
        with open(self.stderr_path, "wb") as err, open(self.stdout_path, "wb") as out:
            return self.topology.popen_host(
                self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=self.env()
            )

    async def start(self, ready_timeout: float = 10.0, wait_control: bool = True) -> None:
        """Start and wait until a UDP query for localhost. is answered (any rcode) and, if
        ``wait_control``, the control socket exists."""
        wait_control = wait_control and bool(self.control_socket)
        self.proc = self._spawn()
        deadline = time.monotonic() + ready_timeout
        answered = False
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise DaemonError(
                    f"mifdns exited with {self.proc.returncode} before answering "
                    f"({' '.join(self.argv)}); stderr:\n{self.stderr()}"
                )
            if not answered:
                try:
                    await self.aquery("localhost.", "A", timeout=0.2)
                    answered = True
                except Exception:  # noqa: BLE001 - not up yet, whatever the error
                    await asyncio.sleep(0.05)
                    continue
            if wait_control and not os.path.exists(self.control_socket):
                await asyncio.sleep(0.05)  # DNS is up; give the control socket its turn
                continue
            return
        rc = self.proc.poll()
        await self.stop()
        waited_for = f"control socket {self.control_socket}" if answered else "DNS answer"
        raise DaemonError(
            f"mifdns not ready within {ready_timeout:.0f}s: no {waited_for} "
            f"(on {self.server}:{self.port}, exit status {rc}); stderr:\n{self.stderr()}"
        )

    async def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds. Returns the exit status."""
        proc = self.proc
        if proc is None or self.returncode is not None:
            return self.returncode
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            if proc.poll() is None:
                proc.kill()
                await asyncio.to_thread(proc.wait)
        self.returncode = proc.returncode
        return self.returncode

    def send_signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    # -- clients ---------------------------------------------------------------------------
    def query(
        self,
        name: str,
        rdtype: str = "A",
        *,
        tcp: bool = False,
        timeout: float = 3,
        want_dnssec: bool = False,
        payload: int | None = None,
        message: Any = None,
    ) -> Any:
        """Ask the daemon from a socket in the host namespace; returns dns.message.Message.

        Blocks; fake upstreams from ``upstream_factory`` keep running on their own loop.
        """
        return query_from(
            self.topology.host,
            self.server,
            name,
            rdtype,
            port=self.port,
            tcp=tcp,
            timeout=timeout,
            want_dnssec=want_dnssec,
            payload=payload,
            message=message,
        )

    async def aquery(self, name: str, rdtype: str = "A", **kw: Any) -> Any:
        """``query`` in a worker thread, for concurrent queries from an async test."""
        return await asyncio.to_thread(self.query, name, rdtype, **kw)

    def _ctl(self, args: Sequence[str], as_json: bool, timeout: float) -> str:
        argv = [sys.executable, "-m", "mifdns", "ctl", "--socket", str(self.control_socket)]
        argv += (["--json"] if as_json else []) + [str(a) for a in args]
        proc = netns.run(self.topology.host, argv, check=False, timeout=timeout, env=self.env())
        if proc.returncode != 0:
            raise DaemonError(
                f"mifdns ctl {' '.join(map(str, args))} exited {proc.returncode}: "
                f"{proc.stderr.strip()}"
            )
        return str(proc.stdout)

    def ctl(self, *args: Any, timeout: float = 15) -> Any:
        """``mifdns ctl --json ARGS`` in the host namespace, parsed (dict or list)."""
        out = self._ctl(args, True, timeout)
        try:
            return json.loads(out)
        except ValueError as exc:
            raise DaemonError(f"mifdns ctl {' '.join(map(str, args))}: not JSON ({exc}): {out!r}")

    def ctl_text(self, *args: Any, timeout: float = 15) -> str:
        return self._ctl(args, False, timeout)


@pytest_asyncio.fixture
async def mifdns_factory(
    topology: Topology, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Any]:
    daemons: list[Daemon] = []
    # AF_UNIX paths are limited to 107 bytes; tmp_path can be longer than that.
    sockdir = tmp_path
    if len(str(tmp_path / "mifdns-N" / "control.sock")) > 100:
        sockdir = Path(tempfile.mkdtemp(prefix="mifdns-ctl-"))

    async def factory(
        topo: Topology,
        config: dict[str, Any],
        *,
        ready_timeout: float = 10.0,
        command: Sequence[str] | None = None,
    ) -> Daemon:
        n = len(daemons)
        workdir = tmp_path / f"mifdns-{n}"
        workdir.mkdir()
        subdir = sockdir / f"mifdns-{n}" if sockdir is not tmp_path else workdir
        subdir.mkdir(exist_ok=True)
        daemon = Daemon(topo, config, workdir, subdir, command)
        daemons.append(daemon)
        await daemon.start(ready_timeout, wait_control=command is None)
        return daemon

    yield factory
    failed = _test_failed(request)
    for daemon in daemons:
        rc = await daemon.stop()
        if failed or rc not in (0, -signal.SIGTERM, None):
            print(
                f"\n----- mifdns pid {daemon.proc.pid if daemon.proc else '?'} "
                f"exit {rc} stderr ({daemon.stderr_path}) -----\n{daemon.stderr()}"
            )
    if sockdir is not tmp_path:
        shutil.rmtree(sockdir, ignore_errors=True)
