"""The resolvconf(8) front end, fed exactly as ISC dhclient's Debian hook and wg-quick feed it:
through ``mifdns resolvconf`` and through a ``resolvconf`` symlink to the ``mifdns`` script."""

from __future__ import annotations

import os
import sysconfig
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml
from conftest import DaemonError
from test_lifecycle import (
    CORP_HOST,
    CORP_SERVER,
    CORP_ZONE,
    WIFI_HOST,
    WIFI_SERVER,
    WIFI_ZONE,
    addrs,
    cache_names,
    pvd,
    wait_for,
)

pytestmark = [pytest.mark.netns, pytest.mark.asyncio]

VPN_HOST = ["10.3.0.10/24"]
VPN_SERVER = ["10.3.0.53/24"]
VPN_ZONE = {
    "www.example.com": {"A": "192.0.2.77"},  # the VPN's view of a public name
    "intranet.vpn.example": {"A": "10.3.3.3"},
}

# Debian's /etc/dhcp/dhclient-enter-hooks.d/resolvconf (make_resolv_conf, BOUND|RENEW|...)
DHCLIENT_BOUND = r"""
R=""
if [ "$new_domain_name" ] ; then
	R="${R}domain $new_domain_name
"
fi
if [ "$new_domain_search" ] ; then
	R="${R}search $new_domain_search
"
fi
for nameserver in $new_domain_name_servers ; do
	R="${R}nameserver $nameserver
"
done
[ ! "$interface" ] || echo -n "$R" | $RESOLVCONF -a "${interface}.dhclient"
"""
# ... and its exit hook on EXPIRE|FAIL|RELEASE|STOP
DHCLIENT_RELEASE = '$RESOLVCONF -d "${interface}.dhclient"'
# the BOUND6 branch: DHCPv6 servers under IFACE.ip6.dhclient
DHCLIENT_BOUND6 = r"""
R=""
for nameserver in $new_dhcp6_name_servers ; do
	R="${R}nameserver $nameserver
"
done
[ ! "$interface" ] || echo -n "$R" | $RESOLVCONF -a "${interface}.ip6.dhclient"
"""

# wg-quick(8) set_dns / unset_dns, with resolvconf_iface_prefix() = "tun." (Debian's
# /etc/resolvconf/interface-order has "tun*" as its first "X*" line)
WG_QUICK_UP = r"""
DNS=(10.3.0.53); DNS_SEARCH=(vpn.example); INTERFACE=wg0
{ printf 'nameserver %s\n' "${DNS[@]}"
  [[ ${#DNS_SEARCH[@]} -eq 0 ]] || printf 'search %s\n' "${DNS_SEARCH[*]}"
} | resolvconf -a "tun.$INTERFACE" -m 0 -x
"""
WG_QUICK_DOWN = 'INTERFACE=wg0; resolvconf -d "tun.$INTERFACE" -f'


def mifdns_script() -> str:
    path = os.path.join(sysconfig.get_path("scripts"), "mifdns")
    if not os.path.exists(path):
        pytest.skip(f"the mifdns console script is not installed at {path}")
    return path


@pytest.fixture
def symlink_bin(tmp_path: Path) -> Path:
    """A directory with ``resolvconf -> .../bin/mifdns``, as a package would install it."""
    d = tmp_path / "sbin"
    d.mkdir()
    (d / "resolvconf").symlink_to(mifdns_script())
    return d


def hook(
    topology: Any,
    daemon: Any,
    script: str,
    *,
    shell: str = "sh",
    path: Path | None = None,
    resolvconf: str = "resolvconf",
    **env: str,
) -> Any:
    """Run a hook script in the host namespace, finding the daemon as a real host would: by
    MIFDNS_CONTROL_SOCKET (the systemd unit's default path is used without it)."""
    full = dict(
        daemon.env(), MIFDNS_CONTROL_SOCKET=str(daemon.control_socket), RESOLVCONF=resolvconf, **env
    )
    if path is not None:
        full["PATH"] = f"{path}:{full.get('PATH', '/usr/bin:/bin')}"
    proc = topology.run_host([shell, "-c", script], env=full, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc


@pytest_asyncio.fixture
async def nets3(topology: Any, upstream_factory: Any) -> Any:
    corp = topology.add_network("corp", "corp0", host_addrs=CORP_HOST, server_addrs=CORP_SERVER)
    wifi = topology.add_network("wifi", "wlan0", host_addrs=WIFI_HOST, server_addrs=WIFI_SERVER)
    vpn = topology.add_network("vpn", "wg0", host_addrs=VPN_HOST, server_addrs=VPN_SERVER)
    ups = {
        "corp": await upstream_factory(corp, CORP_ZONE),
        "wifi": await upstream_factory(wifi, WIFI_ZONE),
        "vpn": await upstream_factory(vpn, VPN_ZONE),
    }
    return corp, wifi, vpn, ups


WIFI_ONLY = {"pvds": [{"name": "wifi", "interface": "wlan0", "servers": ["10.2.0.53"]}]}


@pytest.mark.parametrize("entry", ["mifdns resolvconf", "resolvconf symlink"])
async def test_dhclient_hook_feeds_a_pvd_that_renewals_keep_and_release_purges(
    topology: Any, nets3: Any, mifdns_factory: Any, symlink_bin: Path, entry: str
) -> None:
    _, _, _, ups = nets3
    daemon = await mifdns_factory(topology, WIFI_ONLY)
    rc = f"{mifdns_script()} resolvconf" if entry == "mifdns resolvconf" else "resolvconf"
    lease = {
        "interface": "corp0",
        "new_domain_name": "corp.example",
        "new_domain_search": "corp.example",
        "new_domain_name_servers": "10.1.0.53",
    }
    hook(topology, daemon, DHCLIENT_BOUND, path=symlink_bin, resolvconf=rc, **lease)

    p = pvd(daemon, "corp0.dhclient")
    assert p is not None and p["interface"] == "corp0" and p["state"] == "attached"
    assert p["origin"] == "resolvconf" and p["servers"] == ["10.1.0.53"]
    assert p["search_domains"] == ["corp.example"]
    assert addrs(daemon.query("www.corp.example")) == ["198.51.100.7"]
    assert ups["wifi"].count("www.corp.example") == 0

    hook(topology, daemon, DHCLIENT_BOUND, path=symlink_bin, resolvconf=rc, **lease)  # RENEW
    assert "www.corp.example" in cache_names(daemon, "corp0.dhclient")  # kept

    hook(
        topology,
        daemon,
        DHCLIENT_BOUND6,
        path=symlink_bin,
        resolvconf=rc,
        interface="corp0",
        new_dhcp6_name_servers="2001:db8:1::53",
    )
    p6 = pvd(daemon, "corp0.ip6.dhclient")
    assert p6["interface"] == "corp0" and p6["servers"] == ["2001:db8:1::53"]

    hook(topology, daemon, DHCLIENT_RELEASE, path=symlink_bin, resolvconf=rc, interface="corp0")
    hook(
        topology,
        daemon,
        DHCLIENT_RELEASE.replace(".dhclient", ".ip6.dhclient"),
        path=symlink_bin,
        resolvconf=rc,
        interface="corp0",
    )
    assert pvd(daemon, "corp0.dhclient") is None and pvd(daemon, "corp0.ip6.dhclient") is None
    assert "corp0.dhclient" not in {e["pvd"] for e in daemon.ctl("cache")}
    # corp.example now has no PvD of its own: the wifi horizon answers
    assert addrs(daemon.query("www.corp.example")) == ["203.0.113.66"]
    purges = daemon.ctl("status")["purges"]
    assert any(p["pvd"] == "corp0.dhclient" and "resolvconf -d" in p["cause"] for p in purges)


async def test_wg_quick_feed_makes_the_vpn_the_exclusive_default_route_until_down(
    topology: Any, nets3: Any, mifdns_factory: Any, symlink_bin: Path
) -> None:
    _, _, _, ups = nets3
    cfg = {
        "pvds": [
            {
                "name": "corp",
                "interface": "corp0",
                "servers": ["10.1.0.53"],
                "domains": ["corp.example"],
                "default_route": False,
            },
            {"name": "wifi", "interface": "wlan0", "servers": ["10.2.0.53"]},
        ]
    }
    daemon = await mifdns_factory(topology, cfg)
    assert addrs(daemon.query("www.example.com")) == ["203.0.113.1"]  # wifi, before the VPN

    hook(topology, daemon, WG_QUICK_UP, shell="bash", path=symlink_bin)
    p = pvd(daemon, "tun.wg0")
    assert p["interface"] == "wg0" and p["state"] == "attached"
    assert p["exclusive"] and p["default_route"]
    assert p["domains"] == ["vpn.example", "~."]
    assert addrs(daemon.query("www.example.com")) == ["192.0.2.77"]  # the VPN's view now
    assert addrs(daemon.query("intranet.vpn.example")) == ["10.3.3.3"]
    assert addrs(daemon.query("www.corp.example")) == ["198.51.100.7"]  # corp keeps its domain
    assert ups["wifi"].count("www.example.com") == 1  # only the query before the VPN
    listing = hook(topology, daemon, "resolvconf -l", path=symlink_bin).stdout
    assert "# resolv.conf from tun.wg0" in listing and "nameserver 10.3.0.53" in listing

    hook(topology, daemon, WG_QUICK_DOWN, shell="bash", path=symlink_bin)
    assert pvd(daemon, "tun.wg0") is None
    assert addrs(daemon.query("www.example.com")) == ["203.0.113.1"]  # wifi again, not cached
    hook(topology, daemon, WG_QUICK_DOWN, shell="bash", path=symlink_bin)  # again: -f, quiet


async def test_resolvconf_never_touches_a_configured_pvd_and_finds_the_socket_by_option(
    topology: Any, nets3: Any, mifdns_factory: Any
) -> None:
    daemon = await mifdns_factory(topology, WIFI_ONLY)
    argv = [mifdns_script(), "resolvconf", "--socket", str(daemon.control_socket)]
    env = {k: v for k, v in daemon.env().items() if k != "MIFDNS_CONTROL_SOCKET"}
    proc = topology.run_host(
        argv + ["-a", "wifi"], input="nameserver 10.2.0.99\n", env=env, check=False
    )
    assert proc.returncode == 1 and "not a resolvconf record" in proc.stderr
    proc = topology.run_host(argv + ["-d", "wifi"], env=env, check=False)
    assert proc.returncode == 1
    assert pvd(daemon, "wifi")["servers"] == ["10.2.0.53"]
    # a feed whose only server is mifdns itself is no PvD at all (it would loop)
    proc = topology.run_host(
        argv + ["-a", "lo.dnsmasq"], input="nameserver 127.0.0.53\n", env=env, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert pvd(daemon, "lo.dnsmasq") is None
    # no daemon: a one-line error, exit 1
    proc = topology.run_host(
        [mifdns_script(), "resolvconf", "--socket", "/nonexistent.sock", "-d", "x"],
        env=env,
        check=False,
    )
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
    wait_for(lambda: daemon.proc.poll() is None)


async def test_networkmanager_dispatcher_script_feeds_and_removes_a_connection(
    topology: Any, nets3: Any, mifdns_factory: Any
) -> None:
    script = str(Path(__file__).resolve().parents[2] / "packaging" / "mifdns-dispatcher")
    daemon = await mifdns_factory(topology, WIFI_ONLY)
    rc = f"{mifdns_script()} resolvconf"
    hook(
        topology,
        daemon,
        f'"{script}" corp0 up',
        resolvconf=rc,
        IP4_NAMESERVERS="10.1.0.53",
        IP6_NAMESERVERS="",
        IP4_DOMAINS="corp.example",
    )
    p = pvd(daemon, "corp0.nm")
    assert p["interface"] == "corp0" and p["servers"] == ["10.1.0.53"]
    assert p["search_domains"] == ["corp.example"]
    assert addrs(daemon.query("www.corp.example")) == ["198.51.100.7"]
    hook(
        topology,
        daemon,
        f'"{script}" wg0 vpn-up',
        resolvconf=rc,
        VPN_IP4_NAMESERVERS="10.3.0.53",
        VPN_IP4_DOMAINS="vpn.example",
    )
    assert addrs(daemon.query("intranet.vpn.example")) == ["10.3.3.3"]
    hook(topology, daemon, f'"{script}" wg0 vpn-down', resolvconf=rc)
    hook(topology, daemon, f'"{script}" corp0 down', resolvconf=rc)
    assert {p["name"] for p in daemon.ctl("pvds")} == {"wifi"}


async def test_with_a_wildcard_listen_address_every_host_address_is_mifdns_itself(
    topology: Any, nets3: Any, mifdns_factory: Any
) -> None:
    """Listening on [::]:53, a server that is any IPv6 address of this host (here the host's
    own Wi-Fi address) would send the queries back to mifdns: a feed leaves it out and says
    so, ctl refuses it, and so does a config reload."""
    daemon = await mifdns_factory(topology, {**WIFI_ONLY, "listen": ["127.0.0.53:53", "[::]:53"]})
    own = WIFI_HOST[1].split("/")[0]
    argv = [mifdns_script(), "resolvconf", "--socket", str(daemon.control_socket)]
    proc = topology.run_host(
        argv + ["-a", "wlan0.dhcp"],
        input=f"nameserver {own}\nnameserver 10.2.0.53\nnameserver 2001:db8:2::53\n",
        env=daemon.env(),
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("an address of mifdns itself") == 1, proc.stderr
    assert pvd(daemon, "wlan0.dhcp")["servers"] == ["10.2.0.53", "2001:db8:2::53"]
    for server in (own, "::1", "[::ffff:127.0.0.53]"):
        with pytest.raises(DaemonError, match="is mifdns itself"):
            daemon.ctl("update", "wifi", "--server", server)
    daemon.ctl("update", "wifi", "--server", "10.2.0.53")  # another host: fine
    cfg = yaml.safe_load(daemon.config_path.read_text())
    cfg["pvds"][0]["servers"] = [own]
    daemon.config_path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(DaemonError, match="would loop"):
        daemon.ctl("reload")
    assert addrs(await daemon.aquery("www.example.com")) == ["203.0.113.1"]
