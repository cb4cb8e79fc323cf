"""The container sidecar path, tested without a container engine (none runs here).

What the image does (see the Dockerfile) is reproduced piece by piece in a fresh network
namespace, the pod's:

- the pod sandbox: a holder process (``sh``, then ``sleep``) owns a private mount namespace, as
  the pause container owns the pod's namespaces;
- the mounted config: ``/etc/mifdns/mifdns.yaml`` exists only inside that mount namespace (an
  overlay on /etc), and ``/run`` is a fresh tmpfs with ``/run/mifdns`` owned by the user;
- the ENTRYPOINT: ``mifdns run`` with no arguments (as ``python -m mifdns run``: the same
  ``main``), an environment holding nothing but ``MIFDNS_*`` (plus PATH and PYTHONPATH), as
  uid/gid 65534 with exactly CAP_NET_RAW and CAP_NET_BIND_SERVICE (ambient capabilities stand
  in for the image's file capabilities: same effective set);
- the HEALTHCHECK: ``mifdns ctl status`` run inside the pod's mount and network namespaces
  (nsenter, as ``docker exec`` does), as the same user.

The pod has two network attachments: eth0 (the cluster network: pod address 198.18.0.1, the
cluster DNS at 198.18.0.53) and net1 (a Multus-style second attachment to a corporate network,
its DNS at 10.1.0.53). Clients in the cluster network's namespace ask mifdns at the pod address.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.exception
import pytest
import pytest_asyncio
import yaml

import mifdns
from mifdns.harness import netns
from mifdns.harness.fakeupstream import query_from

pytestmark = [pytest.mark.netns, pytest.mark.asyncio]

REPO_ROOT = Path(mifdns.__file__).resolve().parent.parent

POD_IP = "198.18.0.1"
CLUSTER_DNS = "198.18.0.53"
UID = 65534  # nobody: stands in for the image's unprivileged user
CAPS = "-all,+net_raw,+net_bind_service"
CAP_EFF = (1 << 10) | (1 << 13)  # CAP_NET_BIND_SERVICE, CAP_NET_RAW

MOUNTED_CONFIG = {  # what a ConfigMap would mount at /etc/mifdns/mifdns.yaml
    "pvds": [
        {"name": "cluster", "interface": "eth0", "servers": [CLUSTER_DNS]},
        {
            "name": "corp",
            "interface": "net1",
            "servers": ["10.1.0.53"],
            "domains": ["~corp.example"],
            "exclusive": True,
        },
    ],
}
CLUSTER_ZONE = {
    "www.example.com": {"A": "203.0.113.1"},
    "www.corp.example": {"A": "203.0.113.66"},
}  # the public view: never used
CORP_ZONE = {"www.corp.example": {"A": "10.8.0.80"}}


class Sidecar:
    """mifdns started the way the image starts it, in the topology's host (pod) namespace."""

    def __init__(
        self,
        topology: Any,
        workdir: Path,
        pydir: Path,
        env: dict[str, str],
        caps: str = CAPS,
        extra: str = "",
    ) -> None:
        self.topology = topology
        self.caps = caps
        self.extra = extra  # more setpriv options
        self.workdir = workdir
        self.py = pydir / "py"  # the interpreter's prefix, bind-mounted where uid 65534 can read
        self.env = env
        self.holder: subprocess.Popen[bytes] | None = None
        self.pid = 0

    @property
    def python(self) -> str:
        return str(self.py / os.path.relpath(os.path.realpath(sys.executable), sys.prefix))

    def base_env(self) -> list[str]:
        site = self.py / os.path.relpath(_site_packages(), sys.prefix)
        # LD_LIBRARY_PATH: the interpreter's RUNPATH names the original prefix
        return [
            "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
            f"PYTHONPATH={site}:{REPO_ROOT}",
            f"LD_LIBRARY_PATH={self.py / 'lib'}",
        ]

    def start(self, timeout: float = 10.0) -> None:
        w = self.workdir
        (w / "etc-up").mkdir()
        (w / "etc-work").mkdir()
        (w / "mifdns.yaml").write_text(yaml.safe_dump(MOUNTED_CONFIG, sort_keys=False))
        env = " ".join(_q(v) for v in self.base_env() + [f"{k}={v}" for k, v in self.env.items()])
        script = f"""set -e
mount -t overlay overlay -o lowerdir=/etc,upperdir={w}/etc-up,workdir={w}/etc-work /etc
mkdir -p /etc/mifdns && cp {w}/mifdns.yaml /etc/mifdns/mifdns.yaml
chmod 755 /etc/mifdns && chmod 644 /etc/mifdns/mifdns.yaml
mount -t tmpfs -o mode=755 tmpfs /run
mkdir -p /run/mifdns && chown {UID}:{UID} /run/mifdns
mount --bind {sys.prefix} {self.py}
env -i {env} setpriv --reuid={UID} --regid={UID} --clear-groups --inh-caps={self.caps} \
    --ambient-caps={self.caps} --bounding-set={self.caps} {self.extra} \
    {self.python} -m mifdns run 2>{w}/mifdns.stderr &
echo $! > {w}/pid
wait $! || true
exec sleep 100000
"""
        with open(w / "holder.stderr", "wb") as err:
            self.holder = self.topology.popen_host(
                ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.holder.poll() is not None:
                raise AssertionError(f"the pod holder exited: {self.stderr('holder.stderr')}")
            if not self.pid and (w / "pid").exists() and (w / "pid").read_text().strip():
                self.pid = int((w / "pid").read_text())
            if self.pid and not self.running():
                raise AssertionError(f"mifdns exited at start:\n{self.stderr()}")
            if self.pid and self.health().returncode == 0:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"mifdns not ready within {timeout}s:\n{self.stderr()}")
            time.sleep(0.1)

    def running(self) -> bool:
        try:
            state = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, IndexError):
            return False
        return state != "Z"

    def stderr(self, name: str = "mifdns.stderr") -> str:
        try:
            return (self.workdir / name).read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def health(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The image's HEALTHCHECK: ``mifdns ctl status`` inside the pod, as the image's user."""
        assert self.holder is not None
        argv = [
            "nsenter",
            f"--target={self.holder.pid}",
            "--mount",
            "--net",
            "--",
            "env",
            "-i",
            *self.base_env(),
            "MIFDNS_CONTROL_SOCKET=/run/mifdns/control.sock",
            "setpriv",
            f"--reuid={UID}",
            f"--regid={UID}",
            "--clear-groups",
            self.python,
            "-m",
            "mifdns",
            "ctl",
            *args,
            "status",
        ]
        return subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)

    def stop(self) -> None:
        if self.pid and self.running():
            os.kill(self.pid, signal.SIGTERM)
            deadline = time.monotonic() + 5
            while self.running() and time.monotonic() < deadline:
                time.sleep(0.02)
            if self.running():
                os.kill(self.pid, signal.SIGKILL)

    def close(self) -> None:
        self.stop()
        if self.holder is not None and self.holder.poll() is None:
            self.holder.terminate()
            self.holder.wait(5)


def _q(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def _site_packages() -> str:
    import prometheus_client

    return str(Path(prometheus_client.__file__).resolve().parent.parent)


@pytest.fixture
def pydir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="mifdns-py-"))
    d.chmod(0o755)
    (d / "py").mkdir()
    yield d
    shutil.rmtree(d, ignore_errors=True)  # the bind mount died with the pod's mount namespace


@pytest_asyncio.fixture
async def pod(topology: Any, upstream_factory: Any) -> Any:
    cluster = topology.add_network(
        "cluster", "eth0", host_addrs=[f"{POD_IP}/24"], server_addrs=[f"{CLUSTER_DNS}/24"]
    )
    corp = topology.add_network(
        "corp", "net1", host_addrs=["10.1.0.10/24"], server_addrs=["10.1.0.53/24"]
    )
    await upstream_factory(cluster, CLUSTER_ZONE)
    up_corp = await upstream_factory(corp, CORP_ZONE)
    return cluster, up_corp


@pytest.fixture
def sidecar_factory(topology: Any, tmp_path: Path, pydir: Path) -> Iterator[Any]:
    started: list[Sidecar] = []

    def factory(env: dict[str, str], **kw: str) -> Sidecar:
        workdir = tmp_path / f"pod-{len(started)}"
        workdir.mkdir()
        sc = Sidecar(topology, workdir, pydir, env, **kw)
        started.append(sc)
        sc.start()
        return sc

    yield factory
    for sc in started:
        sc.close()


def http_get(ns: str, host: str, port: int, path: str) -> str:
    sock = netns.socket_in(ns, socket.AF_INET, socket.SOCK_STREAM)
    with sock:
        sock.settimeout(5)
        sock.connect((host, port))
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data.decode()


def addrs(msg: Any) -> list[str]:
    return sorted(rd.to_text() for rrset in msg.answer for rd in rrset)


async def test_entrypoint_with_env_and_mounted_config_answers_on_the_pod_address(
    topology: Any, pod: Any, sidecar_factory: Any
) -> None:
    cluster, up_corp = pod
    sc = sidecar_factory(
        {
            "MIFDNS_LISTEN": f"127.0.0.53:53,{POD_IP}:53",
            "MIFDNS_CONTROL_SOCKET": "/run/mifdns/control.sock",
            "MIFDNS_METRICS_LISTEN": f"{POD_IP}:9153",
            "MIFDNS_QUERY_LOG": "true",
        }
    )
    # unprivileged, with exactly the two capabilities
    status = Path(f"/proc/{sc.pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines())
    assert fields["Uid"].split()[:2] == [str(UID), str(UID)]
    assert int(fields["CapEff"].strip(), 16) == CAP_EFF

    # a client in another namespace (the cluster network) asks at the pod address
    r = query_from(cluster.ns, POD_IP, "www.corp.example")
    assert addrs(r) == ["10.8.0.80"]  # through net1, from the corporate DNS
    assert up_corp.count("www.corp.example", "A") == 1
    assert addrs(query_from(cluster.ns, POD_IP, "www.example.com")) == ["203.0.113.1"]
    # the app container shares the pod's namespace: loopback answers too
    assert addrs(query_from(topology.host, "127.0.0.53", "www.corp.example")) == ["10.8.0.80"]

    # the health check, and what it reports
    human = sc.health()
    assert human.returncode == 0, human.stderr
    assert "PvD corp: attached" in human.stdout and "Interface: net1" in human.stdout
    st = json.loads(sc.health("--json").stdout)
    assert st["listen"] == ["127.0.0.53:53", f"{POD_IP}:53"]
    assert st["config"] == "/etc/mifdns/mifdns.yaml"
    assert st["control_socket"] == "/run/mifdns/control.sock"
    assert st["query_log"] is True and st["metrics"] == f"http://{POD_IP}:9153/metrics"
    assert {p["name"]: p["state"] for p in st["pvds"]} == {
        "cluster": "attached",
        "corp": "attached",
    }

    # Prometheus scrapes the pod address from the cluster network
    scraped = http_get(cluster.ns, POD_IP, 9153, "/metrics")
    assert scraped.startswith("HTTP/1.0 200 ")
    assert 'mifdns_upstream_queries_total{pvd="corp"}' in scraped

    # the query log went to stderr, one JSON object per query
    logged = [
        json.loads(line) for line in sc.stderr().splitlines() if line.startswith('{"event":"query"')
    ]
    assert any(e["name"] == "www.corp.example." and e["pvd"] == "corp" for e in logged)

    # the daemon is gone: the health check fails
    sc.stop()
    gone = sc.health()
    assert gone.returncode == 3, gone
    assert "cannot reach mifdns" in gone.stderr


async def test_without_a_listen_override_the_sidecar_stays_on_loopback(
    topology: Any, pod: Any, sidecar_factory: Any
) -> None:
    cluster, _ = pod
    sc = sidecar_factory({"MIFDNS_CONTROL_SOCKET": "/run/mifdns/control.sock"})  # the image's ENV
    assert addrs(query_from(topology.host, "127.0.0.53", "www.corp.example")) == ["10.8.0.80"]
    with pytest.raises((dns.exception.Timeout, ConnectionRefusedError, OSError)):
        query_from(cluster.ns, POD_IP, "www.corp.example", timeout=1.0)
    st = json.loads(sc.health("--json").stdout)
    assert st["listen"] == ["127.0.0.53:53"] and st["metrics"] is None
    assert st["query_log"] is False
    assert '{"event":"query"' not in sc.stderr()


async def test_restricted_profile_without_any_capability_works_on_linux_5_7_and_later(
    topology: Any, pod: Any, sidecar_factory: Any
) -> None:
    """Kubernetes' "restricted" profile: every capability dropped, no_new_privs
    (allowPrivilegeEscalation: false, so file capabilities would not apply), and port 53 made
    unprivileged with the namespaced sysctl net.ipv4.ip_unprivileged_port_start=53. Since Linux
    5.7 SO_BINDTODEVICE on a fresh socket needs no CAP_NET_RAW, so every upstream socket is
    still bound to its PvD's interface."""
    release = tuple(int(x) for x in os.uname().release.split(".")[:2])
    if release < (5, 7):
        pytest.skip(f"Linux {os.uname().release}: SO_BINDTODEVICE needs CAP_NET_RAW before 5.7")
    cluster, up_corp = pod
    netns.sysctl(topology.host, "net.ipv4.ip_unprivileged_port_start", 53)
    sc = sidecar_factory(
        {
            "MIFDNS_LISTEN": f"127.0.0.53:53,{POD_IP}:53",
            "MIFDNS_CONTROL_SOCKET": "/run/mifdns/control.sock",
        },
        caps="-all",
        extra="--no-new-privs",
    )
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{sc.pid}/status").read_text().splitlines()
    )
    assert int(fields["CapEff"].strip(), 16) == 0 and int(fields["CapBnd"].strip(), 16) == 0
    assert fields["NoNewPrivs"].strip() == "1"
    assert addrs(query_from(cluster.ns, POD_IP, "www.corp.example")) == ["10.8.0.80"]
    assert up_corp.count("www.corp.example", "A") == 1  # through net1: the socket was bound
    assert sc.health().returncode == 0
