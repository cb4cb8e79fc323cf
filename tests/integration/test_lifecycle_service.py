"""Running as a service: reload (SIGHUP and ``ctl reload``), the managed resolv.conf, graceful
SIGTERM, and the privilege drop of ``mifdns run --user``."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import stat
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import dns.message
import dns.rcode
import pytest
import pytest_asyncio
import yaml
from conftest import DaemonError
from splitdns_helpers import STUB, frame, recv_frame, tcp_connect
from test_lifecycle import (
    CORP_HOST,
    CORP_ZONE,
    WIFI_HOST,
    WIFI_SERVER,
    WIFI_ZONE,
    addrs,
    cache_names,
    config,
    pvd,
    wait_for,
)

pytestmark = [pytest.mark.netns, pytest.mark.asyncio]

CORP_SERVER2 = ["10.1.0.53/24", "2001:db8:1::53/64", "10.1.0.54/24"]


@pytest_asyncio.fixture
async def env2(topology: Any, upstream_factory: Any) -> Any:
    """corp with two server addresses (a second upstream with another view on .54) and wifi."""
    corp = topology.add_network("corp", "corp0", host_addrs=CORP_HOST, server_addrs=CORP_SERVER2)
    wifi = topology.add_network("wifi", "wlan0", host_addrs=WIFI_HOST, server_addrs=WIFI_SERVER)
    up_corp = await upstream_factory(corp, CORP_ZONE, listen=["10.1.0.53", "2001:db8:1::53"])
    up_corp2 = await upstream_factory(
        corp, {"www.corp.example": {"A": "198.51.100.8"}}, listen=["10.1.0.54"]
    )
    up_wifi = await upstream_factory(wifi, WIFI_ZONE)
    return corp, wifi, up_corp, up_corp2, up_wifi


def stable(pvds: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    keys = (
        "name",
        "interface",
        "state",
        "servers",
        "domains",
        "networks",
        "exclusive",
        "default_route",
        "origin",
    )
    return [tuple(str(p[k]) for k in keys) for p in pvds]


def rewrite(daemon: Any, cfg: dict[str, Any] | str) -> None:
    text = (
        cfg
        if isinstance(cfg, str)
        else yaml.safe_dump(dict(cfg, control_socket=daemon.control_socket), sort_keys=False)
    )
    daemon.config_path.write_text(text)


# ------------------------------------------------------------------------------ reload
async def test_broken_reload_is_rejected_with_check_config_errors_and_changes_nothing(
    topology: Any, env2: Any, mifdns_factory: Any
) -> None:
    daemon = await mifdns_factory(topology, config())
    daemon.query("www.corp.example")
    before = daemon.ctl("pvds")
    rewrite(
        daemon,
        "listen: ['127.0.0.53:53']\npvds:\n  - name: corp\n    interface: corp0\n"
        "    servers: ['10.1.0.300']\n    colour: blue\n",
    )
    check = topology.run_host(
        [sys.executable, "-m", "mifdns", "check-config", str(daemon.config_path)],
        env=daemon.env(),
        check=False,
    )
    assert check.returncode == 1
    expected = [line.removeprefix("mifdns: ") for line in check.stderr.splitlines()]
    assert len(expected) == 2 and all(str(daemon.config_path) in e for e in expected)

    with pytest.raises(Exception) as err:
        daemon.ctl("reload")
    for line in expected:
        assert line in str(err.value)
    assert "running config stays in force" in str(err.value)

    daemon.send_signal(signal.SIGHUP)  # the same through the signal: logged, nothing changes
    wait_for(lambda: "reload rejected" in daemon.stderr())
    assert daemon.proc.poll() is None
    assert stable(daemon.ctl("pvds")) == stable(before)
    assert "www.corp.example" in cache_names(daemon, "corp")
    assert addrs(daemon.query("www.corp.example")) == ["198.51.100.7"]


async def test_reloading_a_file_emptied_by_mistake_warns_that_every_pvd_is_gone(
    topology: Any, env2: Any, mifdns_factory: Any
) -> None:
    """An empty file is valid (the defaults), so the reload applies; it must not pass quietly."""
    daemon = await mifdns_factory(topology, config())
    rewrite(daemon, "")
    rec = daemon.ctl("reload")
    assert sorted(rec["removed"]) == ["corp", "wifi"]
    assert any("names no PvDs any more" in n for n in rec["notes"])
    wait_for(lambda: "WARNING mifdns: reload: " in daemon.stderr())
    assert daemon.ctl("pvds") == []


@pytest.mark.parametrize("how", ["SIGHUP", "ctl reload"])
async def test_reload_purges_only_the_pvd_whose_servers_changed_and_removes_a_dropped_one(
    topology: Any, env2: Any, mifdns_factory: Any, how: str
) -> None:
    _, _, up_corp, up_corp2, up_wifi = env2
    daemon = await mifdns_factory(topology, config())
    assert addrs(daemon.query("www.corp.example")) == ["198.51.100.7"]
    assert addrs(daemon.query("www.example.com")) == ["203.0.113.1"]

    cfg = config()
    cfg["pvds"][0]["servers"] = ["10.1.0.54"]
    cfg["pvds"][1]["exclusive"] = True  # a change that does not touch answers: cache kept
    rewrite(daemon, cfg)
    if how == "SIGHUP":
        daemon.send_signal(signal.SIGHUP)
        wait_for(lambda: pvd(daemon, "corp")["servers"] == ["10.1.0.54"])
    else:
        rec = daemon.ctl("reload")
        assert rec["changed"] == ["corp", "wifi"] and rec["removed"] == []
    assert cache_names(daemon, "corp") == set()
    assert "www.example.com" in cache_names(daemon, "wifi")
    assert pvd(daemon, "wifi")["exclusive"]
    assert addrs(daemon.query("www.corp.example")) == ["198.51.100.8"]  # the new server's view
    assert up_corp2.count("www.corp.example") == 1
    assert addrs(daemon.query("www.example.com")) == ["203.0.113.1"]
    assert up_wifi.count("www.example.com") == 1  # still cached

    cfg["pvds"] = cfg["pvds"][:1]
    rewrite(daemon, cfg)
    rec = daemon.ctl("reload")
    assert rec["removed"] == ["wifi"] and rec["unchanged"] == ["corp"]
    assert pvd(daemon, "wifi") is None
    assert "wifi" not in {e["pvd"] for e in daemon.ctl("cache")}
    assert "www.corp.example" in cache_names(daemon, "corp")  # untouched by this reload
    assert up_corp.count("www.corp.example") == 1


# ------------------------------------------------------------------------------ resolv.conf
@pytest.fixture
def etc(tmp_path: Path) -> Path:
    """A systemd-resolved style host: etc/resolv.conf -> ../run/stub-resolv.conf (relative)."""
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "stub-resolv.conf").write_text("nameserver 127.0.0.53\noptions edns0\n")
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "resolv.conf").symlink_to("../run/stub-resolv.conf")
    return tmp_path / "etc"


def search_line(path: Path) -> str | None:
    for line in path.read_text().splitlines():
        if line.startswith("search "):
            return line
    return None


async def test_managed_resolv_conf_follows_attach_detach_and_the_symlink_comes_back(
    topology: Any, env2: Any, mifdns_factory: Any, etc: Path
) -> None:
    corp, *_ = env2
    path = etc / "resolv.conf"
    cfg = config(resolv_conf={"manage": True, "path": str(path)})
    cfg["pvds"][1]["domains"] = ["home.example"]
    daemon = await mifdns_factory(topology, cfg)

    assert not path.is_symlink() and stat.S_IMODE(path.stat().st_mode) == 0o644
    text = path.read_text()
    assert "nameserver 127.0.0.53\n" in text and "options edns0 trust-ad\n" in text
    assert search_line(path) == "search corp.example home.example"
    backup = etc / "resolv.conf.mifdns-orig"
    assert os.readlink(backup) == "../run/stub-resolv.conf"

    corp.link_down()
    wait_for(lambda: search_line(path) == "search home.example")
    corp.link_up()
    wait_for(lambda: search_line(path) == "search corp.example home.example")
    daemon.ctl("detach", "corp")
    assert search_line(path) == "search home.example"
    leftovers = [
        p.name for p in etc.iterdir() if p.name not in ("resolv.conf", "resolv.conf.mifdns-orig")
    ]
    assert leftovers == []  # no temporary files left behind

    assert await daemon.stop() == 0
    assert path.is_symlink() and os.readlink(path) == "../run/stub-resolv.conf"
    assert not os.path.lexists(backup)
    assert path.read_text() == "nameserver 127.0.0.53\noptions edns0\n"


# ------------------------------------------------------------------------------ SIGTERM
@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
async def test_sigterm_answers_the_query_in_flight_restores_resolv_conf_removes_the_socket(
    topology: Any, env2: Any, mifdns_factory: Any, tmp_path: Path, tcp: bool
) -> None:
    _, _, _, _, up_wifi = env2
    path = tmp_path / "resolv.conf"
    path.write_text("nameserver 192.0.2.1\n")
    path.chmod(0o640)
    daemon = await mifdns_factory(topology, config(resolv_conf={"manage": True, "path": str(path)}))
    assert "127.0.0.53" in path.read_text()
    up_wifi.set(delay=0.4)
    pending = asyncio.ensure_future(daemon.aquery("slow.example.com.", timeout=3, tcp=tcp))
    await asyncio.to_thread(wait_for, lambda: up_wifi.saw("slow.example.com"))
    t0 = time.monotonic()
    daemon.send_signal(signal.SIGTERM)
    answer = await pending
    assert answer.rcode() == dns.rcode.NXDOMAIN  # the upstream's real answer, not a SERVFAIL
    assert time.monotonic() - t0 < 1.5
    assert await daemon.stop() == 0
    assert path.read_text() == "nameserver 192.0.2.1\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert not os.path.exists(daemon.control_socket)
    assert "shutting down" in daemon.stderr()


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
async def test_sigterm_gives_a_query_that_cannot_finish_servfail_not_silence(
    topology: Any, env2: Any, mifdns_factory: Any, tcp: bool
) -> None:
    """A client whose question is still unanswered after the 1.5 s drain gets SERVFAIL, so it
    tries its next server at once instead of after its own timeout."""
    _, _, _, _, up_wifi = env2
    daemon = await mifdns_factory(topology, config())
    up_wifi.set(drop=True)
    pending = asyncio.ensure_future(daemon.aquery("stuck.example.com.", timeout=6, tcp=tcp))
    await asyncio.to_thread(wait_for, lambda: up_wifi.saw("stuck.example.com"))
    t0 = time.monotonic()
    daemon.send_signal(signal.SIGTERM)
    answer = await pending
    assert answer.rcode() == dns.rcode.SERVFAIL
    assert 1.4 < time.monotonic() - t0 < 3.0
    assert await daemon.stop() == 0


# ------------------------------------------------------------------------------ --user
@pytest.fixture
def runtime_dir() -> Any:
    """A world-searchable directory (pytest's tmp dirs are 0700: nobody could not reach them)."""
    d = tempfile.mkdtemp(prefix="mifdns-priv-")
    os.chmod(d, 0o755)
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


def proc_status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


async def test_user_drop_keeps_net_raw_and_binds_new_upstream_sockets(
    topology: Any, env2: Any, mifdns_factory: Any, runtime_dir: Path, upstream_factory: Any
) -> None:
    sock = runtime_dir / "run" / "control.sock"  # run/ is created for nobody
    cfg = config(control_socket=str(sock))
    daemon = await mifdns_factory(
        topology, cfg, command=[sys.executable, "-m", "mifdns", "run", "--user", "nobody"]
    )
    await asyncio.to_thread(
        wait_for, lambda: sock.exists() and "now running as" in daemon.stderr(), 10
    )
    st = proc_status(daemon.pid)
    assert st["Uid"].split() == ["65534"] * 4 and st["Gid"].split()[0] == "65534"
    assert int(st["CapEff"], 16) == (1 << 10) | (1 << 13)  # NET_BIND_SERVICE, NET_RAW
    assert int(st["CapBnd"], 16) == (1 << 10) | (1 << 13)
    assert st["NoNewPrivs"] == "1"
    # every query opens a new upstream socket bound to its interface: after the drop
    assert addrs(daemon.query("www.corp.example")) == ["198.51.100.7"]
    assert "www.corp.example" in cache_names(daemon, "corp")  # lazily imported code works
    assert daemon.ctl("explain", "www.corp.example")["candidates"][0]["pvd"] == "corp"
    # and a network that appears later works too
    vpn = topology.add_network(
        "vpn", "wg0", host_addrs=["10.3.0.10/24"], server_addrs=["10.3.0.53/24"]
    )
    await upstream_factory(vpn, {"intranet.vpn.example": {"A": "10.3.3.3"}})
    daemon.ctl(
        "attach",
        "--name",
        "vpn",
        "--interface",
        "wg0",
        "--server",
        "10.3.0.53",
        "--domain",
        "vpn.example",
    )
    wait_for(lambda: pvd(daemon, "vpn")["state"] == "attached")
    assert addrs(daemon.query("intranet.vpn.example")) == ["10.3.3.3"]
    assert await daemon.stop() == 0
    assert not sock.exists()  # removed by the unprivileged daemon


# ------------------------------------------------------------------------------ contracts
async def test_reload_applies_every_limit_at_once_and_says_what_needs_a_restart(
    topology: Any, env2: Any, mifdns_factory: Any
) -> None:
    daemon = await mifdns_factory(topology, config())
    cfg = config(
        limits={
            "max_tcp_clients": 1,
            "tcp_idle_timeout": 30,
            "ingress_batch": 16,
            "max_tcp_queries_per_connection": 2,
        },
        metrics={"listen": "127.0.0.1:19153"},
    )
    rewrite(daemon, cfg)
    rec = daemon.ctl("reload")
    assert rec["notes"] == ["metrics changes need a restart"]
    st = daemon.ctl("status")
    assert st["limits"]["max_tcp_clients"] == 1 and st["limits"]["ingress_batch"] == 16
    assert st["limits"]["max_tcp_queries_per_connection"] == 2
    assert st["metrics"] is None or not st["metrics"]  # still off, as it runs
    # the new limit holds now: one TCP client; a second one takes the slot of the first,
    # which is idle (it asked nothing)
    first = tcp_connect(topology.host, STUB, timeout=5)
    second = None
    try:
        await asyncio.sleep(0.2)
        assert daemon.ctl("status")["tcp_clients"] == 1
        second = tcp_connect(topology.host, STUB, timeout=5)
        second.sendall(frame(dns.message.make_query("www.example.com", "A").to_wire()))
        assert dns.message.from_wire(recv_frame(second)).rcode() == 0
        with pytest.raises((OSError, ConnectionError)):
            first.sendall(frame(dns.message.make_query("www.example.com", "A").to_wire()))
            recv_frame(first)  # closed to make room: no answer
        st = daemon.ctl("status")
        assert st["tcp_clients"] <= 1 and st["limits"]["hits"]["tcp_evicted"] == 1
    finally:
        first.close()
        if second is not None:
            second.close()


async def test_a_spec_never_overwrites_a_configured_pvd_nor_points_at_mifdns_itself(
    topology: Any, env2: Any, mifdns_factory: Any
) -> None:
    daemon = await mifdns_factory(topology, config())
    before = stable(daemon.ctl("pvds"))
    with pytest.raises(DaemonError, match="PvD from config.*ctl update"):
        daemon.ctl("attach", "corp", "--interface", "wlan0")
    for argv in (
        ("attach", "--name", "loop", "--interface", "lo", "--server", "127.0.0.53"),
        ("update", "wifi", "--server", "127.0.0.53"),
    ):
        with pytest.raises(DaemonError, match="is mifdns itself"):
            daemon.ctl(*argv)
    assert stable(daemon.ctl("pvds")) == before
    assert addrs(daemon.query("www.corp.example")) == ["198.51.100.7"]
