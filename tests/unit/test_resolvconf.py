"""The resolvconf(8) front end without a daemon: command lines as the real callers write them,
resolv.conf parsing, records -> PvD specs."""

from __future__ import annotations

import io
import sys
from typing import Any

import pytest

from mifdns.core.pvd import PvdSpec
from mifdns.errors import ConfigError, ControlError
from mifdns.resolvconf import (
    UsageError,
    format_records,
    interface_of,
    main,
    parse_args,
    parse_resolv_conf,
    read_feed,
    spec_from_resolvconf,
)


def only(*names: str):  # type: ignore[no-untyped-def]
    return lambda n: n in names


# -- command lines ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "argv, action, records, exclusive",
    [
        (["-a", "eth0.dhclient"], "add", ["eth0.dhclient"], False),  # dhclient (Debian hook)
        (["-d", "eth0.dhclient"], "delete", ["eth0.dhclient"], False),
        (["-a", "eth0"], "add", ["eth0"], False),  # dhcpcd's 20-resolv.conf
        (["-d", "eth0", "-f"], "delete", ["eth0"], False),
        (["-a", "tun0.openvpn"], "add", ["tun0.openvpn"], False),  # update-resolv-conf
        (["-a", "tun.wg0", "-m", "0", "-x"], "add", ["tun.wg0"], True),  # wg-quick
        (["-d", "tun.wg0", "-f"], "delete", ["tun.wg0"], False),
        (["-x", "-a", "wg0"], "add", ["wg0"], True),  # systemd's shim: -a is a flag
        (["-a", "-x", "wg0"], "add", ["wg0"], True),
        (["-d", "a.dhcp", "b.dhcp"], "delete", ["a.dhcp", "b.dhcp"], False),  # openresolv: several
    ],
)
def test_command_lines_of_the_real_callers(argv, action, records, exclusive):  # type: ignore[no-untyped-def]
    a = parse_args(argv, {})
    assert (a.action, a.records, a.exclusive) == (action, records, exclusive)


def test_exclusive_and_private_from_the_environment_as_openresolv_reads_them() -> None:
    assert parse_args(["-a", "wg0"], {"IF_EXCLUSIVE": "1"}).exclusive
    assert parse_args(["-a", "wg0"], {"IF_PRIVATE": "1"}).private


def test_socket_option_both_forms() -> None:
    assert parse_args(["--socket", "/x.sock", "-d", "a"], {}).socket == "/x.sock"
    assert parse_args(["--socket=/y.sock", "-d", "a"], {}).socket == "/y.sock"


@pytest.mark.parametrize("argv", [["-u"], ["-I"], ["--enable-updates"], ["--updates-are-enabled"]])
def test_update_options_do_nothing(argv):  # type: ignore[no-untyped-def]
    assert parse_args(argv, {}).action == "noop"


@pytest.mark.parametrize(
    "argv", [[], ["-a"], ["-a", "x", "y"], ["-z"], ["-a", "x", "-d", "y"], ["-m"]]
)
def test_bad_command_lines_are_usage_errors(argv):  # type: ignore[no-untyped-def]
    with pytest.raises(UsageError):
        parse_args(argv, {})


def test_list_with_pattern() -> None:
    a = parse_args(["-l", "eth0*"], {})
    assert (a.action, a.pattern) == ("list", "eth0*")
    assert parse_args(["-i"], {}).action == "names"


# -- which interface a record names ---------------------------------------------------------
@pytest.mark.parametrize(
    "record, existing, iface",
    [
        ("eth0.dhclient", ("eth0",), "eth0"),
        ("eth0.ip6.dhclient", ("eth0",), "eth0"),
        ("eth0.100.dhclient", ("eth0", "eth0.100"), "eth0.100"),  # a VLAN interface
        ("tun.wg0", ("wg0",), "wg0"),  # wg-quick with Debian's interface-order prefix
        ("tun.wg0", (), "wg0"),  # ... also before the interface exists
        ("wg0", (), "wg0"),
        ("wlan0.dhcp6", (), "wlan0"),
        ("lo.dnsmasq", ("lo",), "lo"),
    ],
)
def test_interface_of_a_record(record, existing, iface):  # type: ignore[no-untyped-def]
    assert interface_of(record, only(*existing)) == iface


# -- resolv.conf text -------------------------------------------------------------------------
def test_parse_keeps_domain_and_search_and_ignores_comments_and_unknown_lines() -> None:
    conf = parse_resolv_conf(
        "# generated\n; also a comment\ndomain corp.example\nsearch a.example Corp.Example.\n"
        "nameserver 192.0.2.1 # inline\nnameserver 2001:db8::53\nnameserver 192.0.2.1\n"
        "sortlist 10.0.0.0/255.0.0.0\noptions rotate timeout:1\n"
    )
    assert conf.servers == ["192.0.2.1", "2001:db8::53"]
    assert conf.search == ["corp.example", "a.example"]
    assert conf.options == ["rotate", "timeout:1"]
    assert conf.ignored == []


def test_spec_from_a_dhclient_feed() -> None:
    spec = spec_from_resolvconf(
        "eth0.dhclient",
        "domain corp.example\nsearch corp.example\nnameserver 192.0.2.1\nnameserver fe80::1\n",
        exists=only("eth0"),
    )
    assert spec is not None
    assert (spec.name, spec.interface, spec.origin) == ("eth0.dhclient", "eth0", "resolvconf")
    assert [str(s) for s in spec.servers] == ["192.0.2.1", "fe80::1%eth0"]
    assert [str(d) for d in spec.domains] == ["corp.example"]
    assert spec.effective_default_route and not spec.exclusive
    assert not spec.trust_ad  # AD bits from a network's servers are cleared by default


def test_options_trust_ad_marks_the_servers_as_trusted_for_the_ad_bit() -> None:
    # glibc's meaning of the same words: believe the AD bit of these nameservers
    fed = "nameserver 10.3.0.53\noptions rotate trust-ad timeout:1\n"
    spec = spec_from_resolvconf("tun.wg0", fed, exists=only("wg0"))
    assert spec is not None and spec.trust_ad
    other = "nameserver 10.3.0.53\noptions edns0 trust-ad-not\n"
    spec = spec_from_resolvconf("tun.wg0", other, exists=only("wg0"))
    assert spec is not None and not spec.trust_ad


def test_exclusive_feed_takes_the_root_and_private_feed_is_routing_only() -> None:
    x = spec_from_resolvconf(
        "tun.wg0", "nameserver 10.0.0.1\nsearch vpn.example\n", exclusive=True, exists=only("wg0")
    )
    assert x is not None and x.interface == "wg0"
    assert [str(d) for d in x.domains] == ["vpn.example", "~."]
    assert x.exclusive and x.default_route is True
    p = spec_from_resolvconf(
        "tun0", "nameserver 10.0.0.1\nsearch corp.example\n", private=True, exists=only("tun0")
    )
    assert p is not None and [str(d) for d in p.domains] == ["~corp.example"]
    assert p.effective_default_route is False


def test_loopback_and_own_addresses_are_never_servers_of_a_network() -> None:
    spec = spec_from_resolvconf(
        "eth0.dhclient",
        "nameserver 127.0.0.53\nnameserver ::1\nnameserver 10.0.0.53\nnameserver 192.0.2.1\n",
        skip=lambda server: str(server.address) == "10.0.0.53",
        exists=only("eth0"),
    )
    assert spec is not None and [str(s) for s in spec.servers] == ["192.0.2.1"]
    assert (
        spec_from_resolvconf("eth0.dhclient", "nameserver 127.0.0.1\n", exists=only("eth0")) is None
    )
    on_lo = spec_from_resolvconf("lo.dnsmasq", "nameserver 127.0.0.1\n", exists=only("lo"))
    assert on_lo is not None and on_lo.interface == "lo"


def test_a_feed_without_nameservers_is_no_pvd() -> None:
    assert spec_from_resolvconf("eth0.dhclient", "", exists=only("eth0")) is None
    assert (
        spec_from_resolvconf("eth0.dhclient", "search corp.example\n", exists=only("eth0")) is None
    )


@pytest.mark.parametrize("record", ["", "-x", ".eth0", "a/b", "a b", "x" * 65, "eth0*"])
def test_bad_record_names_are_refused(record):  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError):
        spec_from_resolvconf(record, "nameserver 192.0.2.1\n", exists=only())


def test_bad_lines_are_left_out_one_note_each_and_the_rest_of_the_feed_counts() -> None:
    """A DHCP client ignores the exit status: rejecting the whole renewal for one bad line
    would leave the old servers in place without a word."""
    feed = read_feed(
        "eth0",
        "nameserver 10.0.0.300\nnameserver a b\nsearch bad..name corp.example *.example "
        "bücher.example\nnameserver 192.0.2.7\n",
        exists=only("eth0"),
    )
    assert feed.spec is not None and [str(s) for s in feed.spec.servers] == ["192.0.2.7"]
    assert [str(d) for d in feed.spec.domains] == ["corp.example"]
    assert len(feed.ignored) == 5
    assert "line 2: nameserver takes one address" in feed.ignored[0]
    assert "10.0.0.300" in feed.ignored[1] and "bad..name" in feed.ignored[2]
    assert "no wildcards" in feed.ignored[3] and "not ASCII" in feed.ignored[4]
    only_bad = read_feed("eth0", "nameserver 1.2.3\n", exists=only("eth0"))
    assert only_bad.spec is None and len(only_bad.ignored) == 1  # nothing usable: removed


@pytest.mark.parametrize(
    "server, why",
    [
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.251", "multicast"),
        ("ff02::fb", "multicast"),
        ("255.255.255.255", "broadcast"),
    ],
)
def test_addresses_that_are_no_servers_are_left_out(server, why):  # type: ignore[no-untyped-def]
    """A query to 0.0.0.0 goes to this host through lo whatever the socket is bound to; one to
    a multicast or broadcast address, to everyone on the link."""
    feed = read_feed("wg0", f"nameserver {server}\nnameserver 198.18.0.1\n", exists=only("wg0"))
    assert feed.spec is not None and [str(s) for s in feed.spec.servers] == ["198.18.0.1"]
    assert len(feed.ignored) == 1 and why in feed.ignored[0]


def test_an_ipv4_mapped_server_is_its_ipv4_address() -> None:
    spec = spec_from_resolvconf("wg0", "nameserver ::ffff:198.18.0.1\n", exists=only("wg0"))
    assert spec is not None and [str(s) for s in spec.servers] == ["198.18.0.1"]


# -- the environment's yes and no -------------------------------------------------------------
@pytest.mark.parametrize(
    "value, on",
    [
        ("1", True),
        ("yes", True),
        ("TRUE", True),
        ("On", True),
        (" 1 ", True),
        ("0", False),
        ("no", False),
        ("False", False),
        ("OFF", False),
        ("", False),
    ],
)
def test_if_exclusive_and_if_private_zero_means_off(value, on):  # type: ignore[no-untyped-def]
    assert parse_args(["-a", "wg0"], {"IF_EXCLUSIVE": value}).exclusive is on
    assert parse_args(["-a", "wg0"], {"IF_PRIVATE": value}).private is on


@pytest.mark.parametrize("name", ["IF_EXCLUSIVE", "IF_PRIVATE"])
def test_an_unknown_yes_no_word_is_a_usage_error_naming_the_variable(  # type: ignore[no-untyped-def]
    name, monkeypatch, capsys
):
    with pytest.raises(UsageError, match=f"{name}='maybe'.*yes.*off"):
        parse_args(["-a", "wg0"], {name: "maybe"})
    monkeypatch.setenv(name, "maybe")
    assert main(["-a", "wg0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"resolvconf: {name}='maybe': expected 1, yes, true, on (on)")
    assert "Traceback" not in err


def test_the_environment_never_blocks_a_removal_or_overrides_the_command_line() -> None:
    assert parse_args(["-d", "wg0"], {"IF_EXCLUSIVE": "maybe"}).action == "delete"
    assert parse_args(["-a", "wg0", "-x"], {"IF_EXCLUSIVE": "maybe"}).exclusive


# -- -l: what the records hold ----------------------------------------------------------------
def view(spec: PvdSpec) -> dict[str, Any]:
    """The fields of the daemon's PvD view that -l reads."""
    return {
        "name": spec.name,
        "origin": spec.origin,
        "servers": [str(s) for s in spec.servers],
        "domains": [str(d) for d in spec.domains],
        "search_domains": list(spec.search_domains),
        "default_route": spec.effective_default_route,
        "exclusive": spec.exclusive,
        "trust_ad": spec.trust_ad,
    }


def fed_back(block: str, record: str) -> PvdSpec | None:
    first = block.splitlines()[0]
    return spec_from_resolvconf(
        record,
        block,
        exclusive="-x" in first,
        private="-p" in first,
        exists=only("tun0", "wg0", "eth0"),
    )


@pytest.mark.parametrize(
    "record, text, exclusive, private",
    [
        ("tun0.vpn", "search split.example other.example\nnameserver 10.0.0.1\n", False, True),
        ("tun0.vpn", "nameserver 10.0.0.1\n", False, True),
        ("tun.wg0", "search vpn.example\nnameserver 10.3.0.53\n", True, False),
        ("tun.wg0", "search vpn.example\nnameserver 10.3.0.53\n", True, True),
        (
            "eth0.dhclient",
            "domain corp.example\nnameserver 192.0.2.1\nnameserver fe80::1\n",
            False,
            False,
        ),
        ("tun.wg0", "nameserver 10.3.0.53\noptions edns0 trust-ad\n", True, False),
    ],
)
def test_listing_a_record_and_feeding_it_back_makes_the_same_pvd(  # type: ignore[no-untyped-def]
    record, text, exclusive, private
):
    spec = spec_from_resolvconf(
        record, text, exclusive=exclusive, private=private, exists=only("tun0", "wg0", "eth0")
    )
    assert spec is not None
    block = format_records([view(spec)])
    assert block.startswith(f"# resolv.conf from {record}")
    assert fed_back(block, record) == spec


def test_a_private_feed_lists_its_routing_only_domains() -> None:
    spec = spec_from_resolvconf(
        "tun0.vpn", "search split.example\nnameserver 10.0.0.1\n", private=True, exists=only("tun0")
    )
    assert spec is not None
    assert format_records([view(spec)]) == (
        "# resolv.conf from tun0.vpn (fed with -p)\n"
        "# routing-only: split.example\n"
        "search split.example\n"
        "nameserver 10.0.0.1\n\n"
    )


# -- the command line end to end, against a fake daemon -------------------------------------
class FakeDaemon:
    def __init__(self, answer: Any = None, refusal: str | None = None) -> None:
        self.answer, self.refusal, self.requests = answer, refusal, []  # type: ignore[var-annotated]

    def __call__(self, path: str, req: dict[str, Any], timeout: float = 10.0) -> Any:
        self.requests.append(req)
        if self.refusal is not None:
            raise ControlError(self.refusal)
        return self.answer


def run(monkeypatch, argv, stdin="", daemon=None):  # type: ignore[no-untyped-def]
    monkeypatch.setattr("mifdns.ctl.request", daemon or FakeDaemon({"removed": None}))
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    for name in ("IF_EXCLUSIVE", "IF_PRIVATE"):
        monkeypatch.delenv(name, raising=False)
    return main(argv)


def test_a_dropped_loopback_nameserver_is_reported_and_the_feed_still_succeeds(  # type: ignore[no-untyped-def]
    monkeypatch, capsys
):
    daemon = FakeDaemon(
        {
            "removed": None,
            "ignored": ["nameserver 127.0.0.1: loopback, not reachable through nosuchif9"],
        }
    )
    assert run(monkeypatch, ["-a", "nosuchif9.x"], "nameserver 127.0.0.1\n", daemon) == 0
    assert capsys.readouterr().err == (
        "mifdns resolvconf: ignored nameserver 127.0.0.1: loopback, not reachable through "
        "nosuchif9\n"
    )


def test_a_nameserver_the_daemon_drops_as_its_own_address_is_reported(  # type: ignore[no-untyped-def]
    monkeypatch, capsys
):
    daemon = FakeDaemon(
        {
            "removed": "lo.dnsmasq",
            "ignored": ["nameserver 127.0.0.53: an address of mifdns itself (it would loop)"],
        }
    )
    assert run(monkeypatch, ["-a", "lo.dnsmasq"], "nameserver 127.0.0.53\n", daemon) == 0
    assert capsys.readouterr().err == (
        "mifdns resolvconf: ignored nameserver 127.0.0.53: an address of mifdns itself (it "
        "would loop)\n"
    )
    feed = read_feed(
        "lo.dnsmasq",
        "nameserver 127.0.0.53\nnameserver 127.0.0.1\n",
        skip=lambda server: str(server.address) == "127.0.0.53",
        exists=only("lo"),
    )
    assert feed.ignored == ["nameserver 127.0.0.53: an address of mifdns itself (it would loop)"]


@pytest.mark.parametrize("option", ["--help", "-h"])
def test_help_lists_every_option_and_exits_0(option, monkeypatch, capsys):  # type: ignore[no-untyped-def]
    assert run(monkeypatch, ["-a", "x", option]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    for opt in [
        "-a",
        "-d",
        "-x",
        "-p",
        "-m",
        "-f",
        "-l",
        "-i",
        "-u",
        "-I",
        "--enable-updates",
        "--disable-updates",
        "--updates-are-enabled",
        "--socket",
        "--version",
        "-V",
        "--help",
        "-h",
        "--",
        "IF_EXCLUSIVE",
        "IF_PRIVATE",
    ]:
        assert f" {opt}" in out, opt


def test_a_refusal_is_one_line_with_one_prefix_and_no_note_before_it(  # type: ignore[no-untyped-def]
    monkeypatch, capsys
):
    daemon = FakeDaemon(
        refusal="resolvconf: 'corp' is a PvD from config, not a resolvconf "
        "record; use another record name"
    )
    assert run(monkeypatch, ["-a", "corp"], "nameserver 192.0.2.1\n", daemon) == 1
    assert capsys.readouterr().err == (
        "resolvconf: 'corp' is a PvD from config, not a resolvconf record; use another record "
        "name\n"
    )


def test_the_missing_interface_note_follows_an_accepted_feed(monkeypatch, capsys):  # type: ignore[no-untyped-def]
    daemon = FakeDaemon({"name": "nosuchif9.x", "servers": ["192.0.2.1"]})
    assert run(monkeypatch, ["-a", "nosuchif9.x"], "nameserver 192.0.2.1\n", daemon) == 0
    assert capsys.readouterr().err == (
        "resolvconf: note: no interface nosuchif9 (yet): nosuchif9.x stays detached until it "
        "appears\n"
    )
    assert run(monkeypatch, ["-a", "nosuchif9.x", "-f"], "nameserver 192.0.2.1\n", daemon) == 0
    assert capsys.readouterr().err == ""


def test_list_prints_a_private_records_domains(monkeypatch, capsys):  # type: ignore[no-untyped-def]
    spec = spec_from_resolvconf(
        "tun0.vpn", "search split.example\nnameserver 10.0.0.1\n", private=True, exists=only("tun0")
    )
    assert spec is not None
    assert run(monkeypatch, ["-l"], daemon=FakeDaemon([view(spec)])) == 0
    out = capsys.readouterr().out
    assert "# routing-only: split.example\n" in out and "search split.example\n" in out
