"""The control socket (mifdns.aio.control) and its client (mifdns.ctl), on real unix sockets."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from typing import Any

import pytest
import pytest_asyncio

from mifdns import ctl
from mifdns.aio.control import MAX_LINE, ControlServer, MonitorHub
from mifdns.errors import ConfigError, ControlError, StartupError


@pytest.fixture
def sock_path(tmp_path: Any) -> Any:
    path = str(tmp_path / "run" / "mifdns" / "control.sock")
    if len(path) < 100:  # AF_UNIX paths are limited to 107 bytes
        yield path
        return
    short = tempfile.mkdtemp(prefix="mifdns-ctl-")
    yield os.path.join(short, "run", "control.sock")
    shutil.rmtree(short, ignore_errors=True)


class FakeDaemon:
    """A handler in the daemon's role: records requests, answers from a small script."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []

    async def __call__(self, req: dict[str, Any]) -> Any:
        self.requests.append(req)
        cmd = req["cmd"]
        if cmd == "echo":
            return req
        if cmd == "pvds":
            return [
                {
                    "name": "wifi",
                    "interface": "wlan0",
                    "state": "attached",
                    "servers": ["192.0.2.1"],
                    "domains": [],
                    "default_route": True,
                    "exclusive": False,
                    "captive": "open",
                    "nat64_prefixes": [],
                }
            ]
        if cmd == "detach":
            raise ControlError(f"no PvD named {req.get('name')!r}")
        if cmd == "attach":
            raise ConfigError(["pvd.servers[0]: 'x': not an IP address", "pvd.interface: missing"])
        if cmd == "boom":
            raise KeyError("surprise")
        if cmd == "slow":
            await asyncio.sleep(0.05)
            return "slow"
        return None


@pytest_asyncio.fixture
async def served(sock_path: str) -> Any:
    daemon = FakeDaemon()
    hub = MonitorHub()
    server = ControlServer(sock_path, daemon, hub)
    await server.start()
    yield server, daemon, hub
    await server.close()


async def _connect(path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_unix_connection(path)


async def _ask(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, line: bytes) -> Any:
    writer.write(line)
    await writer.drain()
    return json.loads(await asyncio.wait_for(reader.readline(), 5))


async def _until(predicate: Any, timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


# server


@pytest.mark.asyncio
async def test_socket_is_owner_only_and_answers_the_sync_client(served: Any) -> None:
    server, daemon, _ = served
    st = os.stat(server.path)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(server.path)).st_mode) & 0o777 == 0o755 & ~_umask()
    result = await asyncio.to_thread(ctl.request, server.path, {"cmd": "echo", "x": [1, "é"]})
    assert result == {"cmd": "echo", "x": [1, "é"]}
    assert daemon.requests == [{"cmd": "echo", "x": [1, "é"]}]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.asyncio
async def test_several_requests_on_one_connection_are_answered_in_order(served: Any) -> None:
    server, _, _ = served
    reader, writer = await _connect(server.path)
    writer.write(b'{"cmd":"slow"}\n{"cmd":"echo","n":1}\n\n{"cmd":"echo","n":2}\n')
    await writer.drain()
    answers = [json.loads(await asyncio.wait_for(reader.readline(), 5)) for _ in range(3)]
    assert answers == [
        {"ok": True, "result": "slow"},
        {"ok": True, "result": {"cmd": "echo", "n": 1}},
        {"ok": True, "result": {"cmd": "echo", "n": 2}},
    ]
    writer.close()


@pytest.mark.asyncio
async def test_malformed_lines_are_refused_and_the_connection_stays_usable(served: Any) -> None:
    server, daemon, _ = served
    reader, writer = await _connect(server.path)
    bad = await _ask(reader, writer, b"this is not json\n")
    assert bad["ok"] is False and bad["error"].startswith("bad request: not JSON")
    assert "\n" not in bad["error"]
    for line in (b"[1, 2]\n", b'{"cmd": 7}\n', b'{"name": "wifi"}\n', b"\xff\xfe\n"):
        answer = await _ask(reader, writer, line)
        assert answer["ok"] is False and answer["error"].startswith("bad request:"), line
    assert await _ask(reader, writer, b'{"cmd":"echo"}\n') == {
        "ok": True,
        "result": {"cmd": "echo"},
    }
    assert daemon.requests == [{"cmd": "echo"}]
    writer.close()


@pytest.mark.asyncio
async def test_a_line_over_one_mib_is_refused_and_the_connection_closed(served: Any) -> None:
    server, daemon, _ = served
    reader, writer = await _connect(server.path)
    writer.write(b'{"cmd":"echo","pad":"' + b"x" * (MAX_LINE + 10) + b'"}\n')
    answer = json.loads(await asyncio.wait_for(reader.readline(), 5))
    assert answer["ok"] is False and "longer than" in answer["error"]
    assert await asyncio.wait_for(reader.read(), 5) == b""
    assert daemon.requests == []
    writer.close()
    assert await asyncio.to_thread(ctl.request, server.path, {"cmd": "echo"}) == {"cmd": "echo"}


@pytest.mark.asyncio
async def test_control_error_from_the_handler_is_ok_false_with_its_message(served: Any) -> None:
    server, _, _ = served
    with pytest.raises(ControlError, match=r"^no PvD named 'nope'$"):
        await asyncio.to_thread(ctl.request, server.path, {"cmd": "detach", "name": "nope"})


@pytest.mark.asyncio
async def test_multi_line_user_errors_reach_the_client_as_one_line(served: Any) -> None:
    server, _, _ = served
    with pytest.raises(ControlError) as info:
        await asyncio.to_thread(ctl.request, server.path, {"cmd": "attach", "spec": {}})
    assert str(info.value) == ("pvd.servers[0]: 'x': not an IP address; pvd.interface: missing")


@pytest.mark.asyncio
async def test_an_unexpected_exception_is_an_internal_error_and_the_server_goes_on(
    served: Any, caplog: Any
) -> None:
    server, _, _ = served
    reader, writer = await _connect(server.path)
    with caplog.at_level(logging.ERROR, logger="mifdns.control"):
        answer = await _ask(reader, writer, b'{"cmd":"boom"}\n')
    assert answer == {"ok": False, "error": "internal error: KeyError: 'surprise'"}
    assert any(r.exc_info and r.exc_info[0] is KeyError for r in caplog.records)
    assert (await _ask(reader, writer, b'{"cmd":"echo"}\n'))["ok"] is True
    writer.close()
    assert await asyncio.to_thread(ctl.request, server.path, {"cmd": "echo"}) == {"cmd": "echo"}


@pytest.mark.asyncio
async def test_a_stale_socket_file_is_replaced(sock_path: str) -> None:
    os.makedirs(os.path.dirname(sock_path))
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(sock_path)
    dead.close()  # the file stays; nobody listens: a crashed daemon's leftover
    server = ControlServer(sock_path, FakeDaemon(), MonitorHub())
    await server.start()
    try:
        assert await asyncio.to_thread(ctl.request, sock_path, {"cmd": "echo"}) == {"cmd": "echo"}
    finally:
        await server.close()
    assert not os.path.exists(sock_path)


@pytest.mark.asyncio
async def test_a_live_daemon_on_the_socket_is_a_startup_error(served: Any) -> None:
    server, _, _ = served
    second = ControlServer(server.path, FakeDaemon(), MonitorHub())
    with pytest.raises(StartupError, match=r"another mifdns is running \(control socket .*\)"):
        await second.start()
    await second.close()  # must not remove the first one's socket
    assert await asyncio.to_thread(ctl.request, server.path, {"cmd": "echo"}) == {"cmd": "echo"}


def _write_text(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _read_text(path: str) -> str:
    with open(path) as f:
        return f.read()


@pytest.mark.asyncio
async def test_a_file_that_is_not_a_socket_is_left_alone(sock_path: str) -> None:
    os.makedirs(os.path.dirname(sock_path))
    await asyncio.to_thread(_write_text, sock_path, "precious")
    with pytest.raises(StartupError, match="not a socket"):
        await ControlServer(sock_path, FakeDaemon(), MonitorHub()).start()
    assert await asyncio.to_thread(_read_text, sock_path) == "precious"


@pytest.mark.asyncio
async def test_close_drops_idle_clients_and_removes_the_socket(sock_path: str) -> None:
    server = ControlServer(sock_path, FakeDaemon(), MonitorHub())
    await server.start()
    reader, writer = await _connect(sock_path)
    await _ask(reader, writer, b'{"cmd":"echo"}\n')
    await asyncio.wait_for(server.close(), 5)
    assert not os.path.exists(sock_path)
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


@pytest.mark.asyncio
async def test_clients_beyond_max_clients_are_refused(sock_path: str) -> None:
    server = ControlServer(sock_path, FakeDaemon(), MonitorHub(), max_clients=1)
    await server.start()
    try:
        r1, w1 = await _connect(sock_path)
        await _ask(r1, w1, b'{"cmd":"echo"}\n')  # the first client holds the only slot
        with pytest.raises(ControlError, match="too many control clients"):
            await asyncio.to_thread(ctl.request, sock_path, {"cmd": "echo"})
        w1.close()
        await _until(lambda: not server._clients)
        assert await asyncio.to_thread(ctl.request, sock_path, {"cmd": "echo"}) == {"cmd": "echo"}
    finally:
        await server.close()


# monitor


@pytest.mark.asyncio
async def test_monitor_events_reach_every_subscriber_and_leavers_are_cleaned_up(
    served: Any,
) -> None:
    server, daemon, hub = served
    assert not hub.active
    conns = [await _connect(server.path) for _ in range(2)]
    for reader, writer in conns:
        assert await _ask(reader, writer, b'{"cmd":"monitor"}\n') == {
            "ok": True,
            "result": "monitoring",
        }
    await _until(lambda: hub.subscribers == 2)
    assert hub.active
    events = [{"event": "query", "name": f"n{i}.example.", "time": 1.0} for i in range(3)]
    for e in events:
        hub.publish(e)
    for reader, _ in conns:
        got = [json.loads(await asyncio.wait_for(reader.readline(), 5)) for _ in events]
        assert got == events
    assert daemon.requests == []  # monitor is the server's own business
    conns[0][1].close()  # disconnects mid-stream
    await _until(lambda: hub.subscribers == 1)
    hub.publish({"event": "detach", "pvd": "wifi"})
    assert json.loads(await asyncio.wait_for(conns[1][0].readline(), 5))["pvd"] == "wifi"
    conns[1][1].close()
    await _until(lambda: not hub.active)


@pytest.mark.asyncio
async def test_ctl_stream_yields_published_events(served: Any) -> None:
    server, _, hub = served
    received: list[dict[str, Any]] = []

    def consume() -> None:
        for event in ctl.stream(server.path, {"cmd": "monitor"}):
            received.append(event)
            if len(received) == 2:
                return

    task = asyncio.ensure_future(asyncio.to_thread(consume))
    await _until(lambda: hub.active)
    hub.publish({"event": "attach", "pvd": "corp"})
    hub.publish({"event": "detach", "pvd": "corp", "purged": 3})
    await asyncio.wait_for(task, 5)
    assert [e["event"] for e in received] == ["attach", "detach"]
    await _until(lambda: not hub.active)


@pytest.mark.asyncio
async def test_a_slow_subscriber_loses_events_counted_and_never_blocks_publish() -> None:
    hub = MonitorHub(queue_size=5)
    slow, fast = hub.subscribe(), hub.subscribe()
    for i in range(12):
        hub.publish({"event": "query", "n": i})  # never awaits: must not block
        if fast.qsize():
            fast.get_nowait()
    assert slow.qsize() == 5
    assert hub.dropped == 7
    got = [await slow.get() for _ in range(6)]
    assert [e["n"] for e in got[:5]] == [0, 1, 2, 3, 4]
    assert got[5] == {"event": "dropped", "count": 7}
    assert slow.empty() and slow.dropped == 0
    # a new event after a gap gets the notice queued in front of it
    for i in range(7):
        hub.publish({"event": "query", "n": 100 + i})
    slow.get_nowait()
    hub.publish({"event": "query", "n": 107})  # one free slot: no room for notice + event
    slow.get_nowait()
    hub.publish({"event": "query", "n": 200})
    rest = [slow.get_nowait() for _ in range(slow.qsize())]
    assert rest[-2:] == [{"event": "dropped", "count": 3}, {"event": "query", "n": 200}]
    hub.unsubscribe(slow)
    hub.unsubscribe(fast)
    hub.unsubscribe(fast)  # idempotent
    assert not hub.active


@pytest.mark.asyncio
async def test_a_monitor_that_does_not_read_does_not_stall_the_daemon(served: Any) -> None:
    server, _, hub = served
    reader, writer = await _connect(server.path)
    assert (await _ask(reader, writer, b'{"cmd":"monitor"}\n'))["ok"] is True
    await _until(lambda: hub.active)
    big = {"event": "query", "pad": "x" * 4000}
    for _ in range(5000):  # ~20 MB: far beyond socket buffers and the queue
        hub.publish(big)
    await asyncio.sleep(0.05)
    assert hub.dropped > 0
    assert await asyncio.to_thread(ctl.request, server.path, {"cmd": "echo"}) == {"cmd": "echo"}
    writer.close()


# ctl.main


def test_no_daemon_is_exit_3_with_one_line(tmp_path: Any, capsys: Any) -> None:
    path = str(tmp_path / "nothing.sock")
    assert ctl.main(["--socket", path, "status"]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"mifdns ctl: cannot reach mifdns at {path}: ")
    assert "(is the daemon running? see --socket)" in err


def test_permission_denied_says_so_not_that_the_daemon_is_down(tmp_path: Any) -> None:
    """A user who may not open the socket is told why, not sent looking for a dead daemon.
    As root, the child loses CAP_DAC_OVERRIDE (setpriv) so the socket's mode applies."""
    path = str(tmp_path / "ctl.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen()
    os.chmod(path, 0)
    argv = [sys.executable, "-m", "mifdns", "ctl", "--socket", path, "status"]
    if os.geteuid() == 0:
        argv = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *argv]
    try:
        got = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    finally:
        listener.close()
    assert got.returncode == 3
    assert got.stderr == (
        f"mifdns ctl: cannot reach mifdns at {path}: permission denied (the socket is for the "
        "daemon's user only, mode 0600: run as root or as that user)\n"
    )


def test_the_socket_comes_from_the_environment(
    monkeypatch: Any, tmp_path: Any, capsys: Any
) -> None:
    path = str(tmp_path / "env.sock")
    monkeypatch.setenv("MIFDNS_CONTROL_SOCKET", path)
    assert ctl.default_socket() == path
    assert ctl.main(["pvds"]) == 3
    assert path in capsys.readouterr().err
    monkeypatch.delenv("MIFDNS_CONTROL_SOCKET")
    assert ctl.default_socket() == "/run/mifdns/control.sock"


@pytest.mark.asyncio
async def test_json_output_parses_and_refusals_are_exit_1(served: Any, capsys: Any) -> None:
    server, daemon, _ = served
    assert await asyncio.to_thread(ctl.main, ["--socket", server.path, "--json", "pvds"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out) == await daemon({"cmd": "pvds"})
    # options after the command work too
    assert await asyncio.to_thread(ctl.main, ["pvds", "--socket", server.path, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["name"] == "wifi"
    assert await asyncio.to_thread(ctl.main, ["--socket", server.path, "pvds"]) == 0
    assert "wlan0" in capsys.readouterr().out
    assert await asyncio.to_thread(ctl.main, ["--socket", server.path, "detach", "x"]) == 1
    assert capsys.readouterr().err == "mifdns ctl: no PvD named 'x'\n"


@pytest.mark.parametrize(
    "argv",
    [
        ["--timeout", "2.5", "--socket", "/s", "--json", "status"],
        ["status", "--timeout", "2.5", "--socket", "/s", "--json"],
        ["--socket", "/s", "status", "--json", "--timeout", "2.5"],
        ["--timeout", "9", "status", "--timeout", "2.5", "--socket", "/s", "--json"],
    ],
)
def test_timeout_socket_and_json_work_before_and_after_the_command(
    argv: list[str], monkeypatch: Any, capsys: Any
) -> None:
    sent: list[tuple[str, dict[str, Any], float]] = []

    def fake_request(path: str, req: dict[str, Any], timeout: float = 10.0) -> Any:
        sent.append((path, req, timeout))
        return {"listen": []}

    monkeypatch.setattr(ctl, "request", fake_request)
    assert ctl.main(argv) == 0
    assert sent == [("/s", {"cmd": "status"}, 2.5)]
    assert json.loads(capsys.readouterr().out) == {"listen": []}


def test_timeout_defaults_to_ten_seconds_and_must_be_positive(capsys: Any) -> None:
    assert ctl.build_parser().parse_args(["status"]).timeout == 10.0
    assert ctl.build_parser().parse_args(["--timeout", "3", "status"]).timeout == 3.0
    for bad in ("0", "-1", "nan", "soon"):
        assert ctl.main(["status", "--timeout", bad]) == 2
        assert "--timeout" in capsys.readouterr().err


@pytest.mark.asyncio
async def test_every_command_sends_its_request(served: Any, capsys: Any) -> None:
    server, daemon, _ = served
    cases = [
        (["status"], {"cmd": "status"}),
        (["reload"], {"cmd": "reload"}),
        (["remove", "vpn"], {"cmd": "remove", "name": "vpn"}),
        (["flush"], {"cmd": "flush", "name": None}),
        (["flush", "wifi"], {"cmd": "flush", "name": "wifi"}),
        (["cache"], {"cmd": "cache", "pvd": None}),
        (["cache", "--pvd", "corp"], {"cmd": "cache", "pvd": "corp"}),
        (["explain", "a.corp.example"], {"cmd": "explain", "name": "a.corp.example", "type": "A"}),
        (
            ["explain", "a.corp.example", "aaaa"],
            {"cmd": "explain", "name": "a.corp.example", "type": "AAAA"},
        ),
        (["captive", "wifi", "open"], {"cmd": "captive", "name": "wifi", "state": "open"}),
        (["attach", "wifi"], {"cmd": "attach", "name": "wifi"}),
    ]
    for argv, expected in cases:
        daemon.requests.clear()
        code = await asyncio.to_thread(ctl.main, ["--socket", server.path, *argv])
        assert daemon.requests == [expected], argv
        assert code == (1 if argv[0] == "attach" else 0), argv
    capsys.readouterr()


def _request(argv: list[str]) -> dict[str, Any]:
    args = ctl.build_parser().parse_args(argv)
    return args.build(args)


def test_attach_options_build_a_config_form_spec() -> None:
    req = _request(
        [
            "attach",
            "--name",
            "corp",
            "--interface",
            "tun0",
            "--server",
            "198.51.100.53",
            "--server",
            "[2001:db8::53]:5353,10.0.0.1",
            "--domain",
            "~corp.example",
            "--domain",
            "corp.example",
            "--network",
            "10.8.0.0/16",
            "--no-default-route",
            "--exclusive",
            "--trust-ad",
            "--dns64",
            "64:ff9b::/96",
            "--dns64-synthesize",
            "--captive-portal",
            "https://portal.example/api",
            "--captive-domain",
            "portal.example",
        ]
    )
    assert req == {
        "cmd": "attach",
        "spec": {
            "name": "corp",
            "interface": "tun0",
            "servers": ["198.51.100.53", "[2001:db8::53]:5353", "10.0.0.1"],
            "domains": ["~corp.example", "corp.example"],
            "default_route": False,
            "exclusive": True,
            "trust_ad": True,
            "networks": ["10.8.0.0/16"],
            "dns64": {"prefix": "64:ff9b::/96", "synthesize": True},
            "captive_portal": "https://portal.example/api",
            "captive_domains": ["portal.example"],
        },
    }


def test_attach_leaves_unset_options_to_the_daemon() -> None:
    assert _request(["attach", "hotel", "--interface", "wlan0", "--dns64", "AUTO"]) == {
        "cmd": "attach",
        "spec": {"name": "hotel", "interface": "wlan0", "dns64": "auto"},
    }
    assert _request(["attach", "--name", "x", "--interface", "eth0", "--default-route"]) == {
        "cmd": "attach",
        "spec": {"name": "x", "interface": "eth0", "default_route": True},
    }


def test_dns64_synthesize_alone_is_a_change_of_its_own() -> None:
    """Merged with the PvD's prefix by the daemon (test_dns64_captive checks the merge)."""
    assert _request(["update", "cell", "--dns64-synthesize"])["changes"] == {
        "dns64": {"synthesize": True}
    }
    assert _request(["update", "cell", "--no-dns64-synthesize"])["changes"] == {
        "dns64": {"synthesize": False}
    }
    assert _request(["update", "cell", "--dns64", "auto", "--dns64-synthesize"])["changes"] == {
        "dns64": {"prefix": "auto", "synthesize": True}
    }


def test_attach_spec_text_in_json_or_yaml_and_from_a_file(tmp_path: Any) -> None:
    spec = {"name": "vpn", "interface": "tun1", "servers": ["10.1.0.53"], "exclusive": True}
    assert _request(["attach", "--spec", json.dumps(spec)]) == {"cmd": "attach", "spec": spec}
    yaml_text = "name: vpn\ninterface: tun1\nservers: [10.1.0.53]\nexclusive: true\n"
    assert _request(["attach", "--spec", yaml_text]) == {"cmd": "attach", "spec": spec}
    f = tmp_path / "vpn.yaml"
    f.write_text("- " + yaml_text.replace("\n", "\n  ").rstrip() + "\n")  # pasted from pvds:
    assert _request(["attach", "--spec-file", str(f)]) == {"cmd": "attach", "spec": spec}
    no_name = tmp_path / "noname.json"
    no_name.write_text(json.dumps({"interface": "tun1"}))
    assert _request(["attach", "vpn", "--spec-file", str(no_name)]) == {
        "cmd": "attach",
        "spec": {"interface": "tun1", "name": "vpn"},
    }


def test_update_sends_only_the_changes() -> None:
    assert _request(
        [
            "update",
            "corp",
            "--server",
            "10.0.0.2",
            "--no-exclusive",
            "--no-trust-ad",
            "--captive-portal",
            "none",
            "--network",
            "",
        ]
    ) == {
        "cmd": "update",
        "name": "corp",
        "changes": {
            "servers": ["10.0.0.2"],
            "exclusive": False,
            "trust_ad": False,
            "networks": [],
            "captive_portal": None,
        },
    }
    assert _request(["update", "corp", "--spec", "{default_route: true}"]) == {
        "cmd": "update",
        "name": "corp",
        "changes": {"default_route": True},
    }


@pytest.mark.parametrize(
    "argv",
    [
        ["attach"],
        ["attach", "--name", "x"],
        ["attach", "x", "--server", "1.1.1.1"],
        ["attach", "a", "--name", "b", "--interface", "eth0"],
        ["attach", "--name", "x", "--interface", "eth0", "--dns64-synthesize"],
        ["attach", "--spec", "name: [unclosed"],
        ["attach", "--spec", "just a string"],
        ["attach", "--spec", "{name: a}", "--interface", "eth0"],
        ["attach", "--spec", "{name: a}", "--spec-file", "/x"],
        ["attach", "b", "--spec", "{name: a, interface: eth0}"],
        ["attach", "--spec-file", "/nonexistent/spec.yaml"],
        ["attach", "--default-route", "--no-default-route", "--name", "x", "--interface", "e"],
        ["update", "corp"],
        ["update"],
        ["captive", "wifi", "maybe"],
        ["explain"],
        ["frobnicate"],
        [],
    ],
)
def test_usage_errors_are_exit_2_before_any_connection(
    argv: list[str], tmp_path: Any, capsys: Any
) -> None:
    assert ctl.main(["--socket", str(tmp_path / "none.sock"), *argv]) == 2
    err = capsys.readouterr().err
    assert "cannot reach" not in err and "Traceback" not in err
    assert "error:" in err


def test_help_is_exit_0(capsys: Any) -> None:
    assert ctl.main(["--help"]) == 0
    assert ctl.main(["attach", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--spec-file" in out and "--dns64-synthesize" in out


# formatting


STATUS = {
    "listen": ["127.0.0.53:53"],
    "uptime_s": 3725.2,
    "counters": {
        "queries": 10,
        "cache_hits": 7,
        "upstream_queries": {"corp": 2, "wifi": 1},
        "purges": 1,
    },
    "pvds": [
        {
            "name": "corp",
            "state": "attached",
            "interface": "tun0",
            "servers": [
                {"address": "198.51.100.53", "srtt_ms": 12.34, "failures": 1},
                "2001:db8::53",
            ],
            "domains": ["~corp.example"],
            "networks": ["10.8.0.0/16"],
            "default_route": False,
            "exclusive": True,
            "captive": "unknown",
            "nat64_prefixes": ["64:ff9b::/96"],
            "cache_entries": 3,
        },
        {"name": "wifi", "state": "detached"},
    ],
    "cache": {"entries": 3, "bytes": 2048, "per_pvd": {"corp": 3}},
    "purges": [{"pvd": "wifi", "entries": 42, "cause": "link wlan0 down", "time": 1.7e9}],
    "limits": {"max_entries": 100000},
}


def test_format_status_shows_every_block() -> None:
    text = ctl.format_status(STATUS)
    for needle in (
        "up 1h 2min 5s",
        "127.0.0.53:53",
        "3 entries, 2.0 KiB (corp 3)",
        "PvD corp: attached",
        "198.51.100.53 (srtt 12.3 ms, 1 failure)",
        "2001:db8::53",
        "Default route: no",
        "Exclusive: yes",
        "64:ff9b::/96",
        "PvD wifi: detached",
        "Counters:",
        "upstream_queries: corp=2 wifi=1",
        "Recent purges:",
        "42 entries",
        "link wlan0 down",
        "max_entries: 100000",
    ):
        assert needle in text, needle


@pytest.mark.parametrize(
    "fmt, sample",
    [
        (ctl.format_status, {}),
        (ctl.format_status, {"pvds": [{}], "purges": [{}], "cache": {}, "counters": {"a": {}}}),
        (ctl.format_status, None),
        (ctl.format_pvds, []),
        (ctl.format_pvds, [{}]),
        (
            ctl.format_pvds,
            [{"name": "x", "servers": [{"address": "192.0.2.1"}], "cache_entries": 1}],
        ),
        (ctl.format_pvds, {"unexpected": "shape"}),
        (ctl.format_cache, []),
        (ctl.format_cache, [{}]),
        (ctl.format_explain, {}),
        (ctl.format_explain, {"candidates": [{}]}),
        (ctl.format_event, {}),
        (ctl.format_event, {"event": "query"}),
        (ctl.format_event, {"event": "dropped"}),
        (ctl.format_event, "not a dict"),
        (ctl.format_result, None),
        (ctl.format_result, {"purged": 3, "nested": {"a": [1, 2]}}),
        (ctl.format_result, [1, {"a": 1}]),
    ],
)
def test_formatters_survive_missing_keys_and_odd_shapes(fmt: Any, sample: Any) -> None:
    assert isinstance(fmt(sample), str)


def test_format_pvds_is_a_table() -> None:
    lines = ctl.format_pvds([STATUS["pvds"][0], {"name": "wifi", "state": "detached"}])
    header, corp, wifi = lines.splitlines()
    assert header.split()[:4] == ["NAME", "STATE", "INTERFACE", "DEFAULT"]
    assert corp.split()[:4] == ["corp", "attached", "tun0", "no"]
    assert "198.51.100.53,2001:db8::53" in corp
    assert wifi.split()[:3] == ["wifi", "detached", "-"]


def test_format_cache_keeps_the_given_order() -> None:
    text = ctl.format_cache(
        [
            {"name": "b.example.", "type": "A", "pvd": "wifi", "kind": "positive", "ttl": 30},
            {"name": "a.example.", "type": "AAAA", "pvd": "corp", "kind": "synthesized", "ttl": 5},
        ]
    )
    lines = text.splitlines()
    assert lines[0].split() == ["NAME", "TYPE", "PVD", "KIND", "TTL"]
    assert lines[1].split() == ["b.example.", "A", "wifi", "positive", "30"]
    assert lines[2].split() == ["a.example.", "AAAA", "corp", "synthesized", "5"]
    assert lines[-1] == "2 entries"


def test_format_explain_lines() -> None:
    text = ctl.format_explain(
        {
            "candidates": [
                {"pvd": "wifi", "grade": 0, "reason": "default route"},
                {"pvd": "lte", "grade": 0, "reason": "default route"},
            ],
            "local": None,
            "refused": None,
        }
    )
    assert text.splitlines() == ["wifi  grade 0  default route", "lte   grade 0  default route"]
    assert (
        ctl.format_explain({"candidates": [], "local": "localhost"})
        == "answered locally: localhost"
    )
    assert (
        ctl.format_explain(
            {"candidates": [], "local": None, "refused": "corp is exclusive and detached"}
        )
        == "refused: corp is exclusive and detached"
    )


def test_format_event_lines() -> None:
    query = ctl.format_event(
        {
            "event": "query",
            "time": 1.7e9 + 0.12,
            "name": "a.corp.example.",
            "type": "A",
            "pvd": "corp",
            "cache": "miss",
            "kind": "positive",
            "ms": 12.34,
            "candidates": [{"pvd": "corp", "grade": 2, "reason": "routing domain corp.example"}],
        }
    )
    assert re.fullmatch(
        r"\d\d:\d\d:\d\d\.120 query a\.corp\.example\. A -> corp "
        r"\(miss, positive, 12\.3 ms\) candidates: "
        r"corp\[2 routing domain corp\.example\]",
        query,
    ), query
    detach = ctl.format_event(
        {"event": "detach", "time": 1.7e9, "pvd": "wifi", "cause": "link wlan0 down", "purged": 42}
    )
    assert re.fullmatch(
        r"\d\d:\d\d:\d\d\.000 detach wifi: link wlan0 down, "
        r"purged 42 entries",
        detach,
    ), detach
    local = ctl.format_event(
        {"event": "query", "time": 0, "name": "localhost.", "type": "A", "local": "localhost"}
    )
    assert local.endswith("query localhost. A -> local (localhost)")
    other = ctl.format_event(
        {"event": "nat64", "time": 0, "pvd": "lte", "prefixes": ["64:ff9b::/96"]}
    )
    assert other.endswith("nat64 lte: prefixes=64:ff9b::/96")


@pytest.mark.asyncio
async def test_monitor_command_prints_json_lines(served: Any, capsys: Any) -> None:
    server, _, hub = served
    task = asyncio.ensure_future(
        asyncio.to_thread(ctl.main, ["--socket", server.path, "--json", "monitor"])
    )
    await _until(lambda: hub.active)
    hub.publish({"event": "attach", "pvd": "corp", "time": 1.0})
    await asyncio.sleep(0.1)
    await server.close()  # the daemon goes away: the stream ends, exit 3
    assert await asyncio.wait_for(task, 5) == 3
    captured = capsys.readouterr()
    assert [json.loads(line) for line in captured.out.splitlines()] == [
        {"event": "attach", "pvd": "corp", "time": 1.0}
    ]
    assert "ended the monitor stream" in captured.err
