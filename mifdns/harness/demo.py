"""``mifdns demo``: the main job end to end, on simulated networks, in under a minute.

Builds a host namespace with three networks behind veth links (Wi-Fi, a corporate VPN and a lab
network whose DNS server has the *same address* as the Wi-Fi's), one dnslib upstream per network,
runs the real daemon in the host namespace, sends real queries to 127.0.0.53 and prints, for each
question, the answer, the network whose server saw it (so the interface it left by), and whether
it came from the cache. Then it detaches the VPN and shows its answers purged and its exclusive
domain refused rather than leaked to the Wi-Fi. Everything it creates is removed at the end, on
error and on Ctrl-C.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

import yaml

log = logging.getLogger("mifdns.demo")

WIFI_ZONE = {
    "www.example.com": {"A": "203.0.113.80"},
    "intranet.corp.example": {"A": "203.0.113.66"},  # the public horizon's view
}
CORP_ZONE = {
    "intranet.corp.example": {"A": "198.51.100.80"},
    "wiki.corp.example": {"A": "198.51.100.81"},
    "80.100.51.198.in-addr.arpa": {"PTR": "intranet.corp.example."},
}
LAB_ZONE = {"printer.lab.example": {"A": "192.0.2.99"}}


class Demo:
    def __init__(self, out: Any = sys.stdout) -> None:
        from .fakeupstream import ServerLoop
        from .topology import Topology

        self.out = out
        self.topo = Topology("mifdemo")
        self.loop = ServerLoop("demo-upstreams")
        self.work = tempfile.mkdtemp(prefix="mifdns-demo-")
        self.sock = os.path.join(self.work, "control.sock")
        self.proc: subprocess.Popen[bytes] | None = None
        self.ups: dict[str, Any] = {}
        self.ifname: dict[str, str] = {}

    # ------------------------------------------------------------------ set-up
    def build(self) -> None:
        from .fakeupstream import FakeUpstream

        t = self.topo
        nets = {
            "wifi": t.add_network(
                "wifi", "wlan0", host_addrs=["192.0.2.10/24"], server_addrs=["192.0.2.53/24"]
            ),
            "corp": t.add_network(
                "corp", "tun0", host_addrs=["198.51.100.10/24"], server_addrs=["198.51.100.53/24"]
            ),
            # the lab's server has the same address as the Wi-Fi's (overlapping ranges)
            "lab": t.add_network(
                "lab", "eth1", host_addrs=["192.0.2.10/24"], server_addrs=["192.0.2.53/24"]
            ),
        }
        zones = {"wifi": WIFI_ZONE, "corp": CORP_ZONE, "lab": LAB_ZONE}
        for name, net in nets.items():
            up = FakeUpstream(net.ns, net.listen_addrs, zone=zones[name], name=name)
            self.loop.call(up.start())
            self.ups[name] = up
            self.ifname[name] = net.ifname
        config = {
            "listen": ["127.0.0.53:53"],
            "control_socket": self.sock,
            "pvds": [
                {
                    "name": "wifi",
                    "interface": "wlan0",
                    "servers": ["192.0.2.53"],
                    "default_route": True,
                },
                {
                    "name": "corp",
                    "interface": "tun0",
                    "servers": ["198.51.100.53"],
                    "domains": ["~corp.example"],
                    "exclusive": True,
                },
                {
                    "name": "lab",
                    "interface": "eth1",
                    "servers": ["192.0.2.53"],
                    "domains": ["~lab.example"],
                },
            ],
        }
        path = os.path.join(self.work, "mifdns.yaml")
        with open(path, "w") as f:
            yaml.safe_dump(config, f, sort_keys=False)
        # the child gets its own copy of the descriptor; ours is not needed once it has started
        with open(os.path.join(self.work, "mifdns.log"), "wb") as daemon_log:
            self.proc = t.popen_host(
                [sys.executable, "-m", "mifdns", "run", "--config", path],
                stdin=subprocess.DEVNULL,
                stdout=daemon_log,
                stderr=daemon_log,
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("mifdns exited; its log:\n" + self._daemon_log())
            if os.path.exists(self.sock):
                try:
                    self.ask("localhost.", "A", timeout=0.3)
                    return
                except Exception:  # not up yet
                    log.debug("mifdns not answering yet", exc_info=True)
            time.sleep(0.05)
        raise RuntimeError("mifdns did not come up in 10 s; its log:\n" + self._daemon_log())

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        for up in self.ups.values():
            try:
                self.loop.call(up.stop(), timeout=5)
            except Exception:  # cleaning up regardless
                log.debug("stopping a fake upstream failed", exc_info=True)
        self.loop.close()
        self.topo.close()
        shutil.rmtree(self.work, ignore_errors=True)

    def _daemon_log(self) -> str:
        try:
            with open(os.path.join(self.work, "mifdns.log")) as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    # ------------------------------------------------------------------ actions
    def ask(self, name: str, rdtype: str = "A", timeout: float = 3.0) -> Any:
        from .fakeupstream import query_from

        return query_from(self.topo.host, "127.0.0.53", name, rdtype, timeout=timeout, payload=1232)

    def ctl(self, cmd: str, **args: Any) -> Any:
        from ..ctl import request

        return request(self.sock, {"cmd": cmd, **args})

    def row(self, name: str, rdtype: str = "A") -> None:
        import dns.rcode

        for up in self.ups.values():
            up.clear()
        msg = self.ask(name, rdtype)
        seen = [n for n, up in self.ups.items() if up.saw(name)]
        ede = [o.text for o in msg.options if o.otype == 15]
        if msg.answer:
            answer = ", ".join(rd.to_text() for rrset in msg.answer for rd in rrset)
        else:
            answer = dns.rcode.to_text(msg.rcode())
        via = ", ".join(f"{n} via {self.ifname[n]}" for n in seen) or "-"
        if seen:
            source = "upstream"
        elif msg.rcode() == dns.rcode.SERVFAIL:
            source = "refused here"
        elif name.rstrip(".").endswith("localhost"):
            source = "answered locally"
        else:
            source = "cache"
        self.print(f"  {name + ' ' + rdtype:34s} {answer[:30]:30s} {via:16s} {source}")
        for text in ede:
            self.print(f"      extended error: {text}")

    def print(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    # ------------------------------------------------------------------ the tour
    def run(self) -> None:
        p = self.print
        p("mifdns demo: one host, three networks, one resolver at 127.0.0.53")
        p("  wifi  wlan0  server 192.0.2.53     default route")
        p("  corp  tun0   server 198.51.100.53  ~corp.example, exclusive (a VPN)")
        p("  lab   eth1   server 192.0.2.53     ~lab.example (same server address as wifi!)")
        p()
        head = f"  {'question':34s} {'answer':30s} {'asked':16s} source"
        p(head)
        p("  " + "-" * (len(head) - 2))
        self.row("www.example.com")
        self.row("intranet.corp.example")  # the VPN's view, not the public one
        self.row("80.100.51.198.in-addr.arpa", "PTR")  # reverse of the VPN's network
        self.row("printer.lab.example")  # same server address, other link
        self.row("intranet.corp.example")  # now from corp's cache partition
        self.row("localhost")
        p()
        ex = self.ctl("explain", name="intranet.corp.example", type="A")
        cands = "; ".join(
            f"{c['pvd']} (grade {c['grade']}: {c['reason']})" for c in ex["candidates"]
        )
        p(f"  why intranet.corp.example went to corp: {cands}")
        p()
        cache = self.ctl("cache", pvd=None)
        p(
            "  cache partitions: "
            + ", ".join(
                f"{pvd}: {sum(1 for r in cache if r['pvd'] == pvd)}"
                for pvd in ("wifi", "corp", "lab")
            )
        )
        p()
        p("The VPN goes away (mifdns ctl detach corp):")
        res = self.ctl("detach", name="corp")
        purged = [e for e in self.ctl("status")["purges"] if e["pvd"] == "corp"]
        n = purged[-1]["entries"] if purged else "?"
        p(f"  corp is {res['state']}; purged {n} cache entries learned through it")
        self.row("intranet.corp.example")  # exclusive: refused, not leaked to wifi
        p("  -> the public Wi-Fi server never saw the private name: no leak, no stale answer")
        p()
        p("The VPN comes back (mifdns ctl attach corp):")
        self.ctl("attach", name="corp")
        self.row("intranet.corp.example")
        p()
        p("Done. Everything the demo created (namespaces, links, processes) is removed now.")


TOUR = ("rfc6418-5-detach-purge", "captive-portal-login", "rfc6418-6-dns64")


def tour(names: tuple[str, ...] = TOUR, out: Any = sys.stdout) -> bool:
    """Replay a few library scenarios (recorded from real servers) with a step-by-step table."""
    from .replay import Replay
    from .scenario import library, load

    ok = True
    for name in names:
        sc = load(library() / f"{name}.yaml")
        story = " ".join(sc.story.split())
        first = story.split(". ")[0].rstrip(".") + "."
        print(f"\nScenario {name}: {first}", file=out, flush=True)

        def show(step: Any, result: Any) -> None:
            mark = "ok  " if result.ok else "FAIL"
            line = f"  {mark} {result.label[:40]:40s} {result.summary[:60]}"
            print(line, file=out, flush=True)
            if result.note:
                print(f"         why: {' '.join(result.note.split())[:90]}", file=out, flush=True)

        res = Replay(sc, on_step=show).run()
        ok = ok and res.ok
        print(f"  => {res.status} in {res.seconds:.1f} s", file=out, flush=True)
    return ok


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="mifdns demo", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--no-tour",
        action="store_true",
        help="skip replaying library scenarios after the live part",
    )
    args = parser.parse_args(argv)
    from .netns import available

    ok, why = available()
    if not ok:
        print(f"mifdns demo: needs root and network namespaces ({why})", file=sys.stderr)
        return 1
    try:
        demo = Demo()
        try:
            demo.build()
            demo.run()
        finally:
            demo.close()
        if args.no_tour:
            return 0
        print(
            "\nPart 2: scenarios from the library, replayed on fresh simulated networks "
            "(mifdns replay)"
        )
        return 0 if tour() else 1
    except KeyboardInterrupt:
        print("\ninterrupted; cleaning up", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the demo reports, never tracebacks
        print(f"mifdns demo: failed: {exc}", file=sys.stderr)
        return 1
