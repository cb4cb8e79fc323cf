"""``mifdns replay FILE|DIR...``: run scenarios against mifdns on real sockets in namespaces.

Theory of operation: for each scenario, ``Replay.run()`` builds the networks with the test
bed's ``Topology`` (the builder the demo and the integration tests use), starts one fake
upstream per server address of every network (``ScenarioUpstream``: recorded exchanges first,
then zone data, then FakeUpstream's behaviours) on one background ``ServerLoop``, writes the
merged mifdns config and runs ``python -m mifdns run`` in the topology's host namespace. Steps
then run in order on the calling thread: queries are real DNS messages sent to 127.0.0.53 from
the host namespace; lifecycle steps use the real interfaces and the real ``mifdns ctl`` and
``mifdns resolvconf`` command lines; checks read the upstreams' query logs and the daemon's
control socket. Each step passes or fails with a diff (``-`` expected and missing, ``+`` got and
unexpected). By default the first failing step ends the scenario (later steps would mostly
report its consequences); ``--keep-going`` runs them all.

Everything is torn down in ``finally`` blocks: the daemon (SIGTERM, then SIGKILL), the
upstreams, the loop thread, the namespaces (Topology.close, also from its atexit/SIGTERM safety
net on Ctrl-C) and the work directory. Namespace names are unique per Topology, so replays may
run in parallel (``-j``, or several processes).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mifdns.harness import netns
from mifdns.harness.fakeupstream import ServerLoop, query_from
from mifdns.harness.replay_env import LISTEN, Daemon, DaemonError, ScenarioUpstream
from mifdns.harness.replay_report import (
    ScenarioResult,
    StepFailed,
    StepResult,
    addrs,
    cache_diff,
    flagdiff,
    listdiff,
    plain_json,
    rdatas,
    scalar,
    subset_diff,
    tname,
    write_junit,
)
from mifdns.harness.scenario import (
    Scenario,
    ScenarioError,
    Step,
    answer_line,
    discover,
    load,
    norm_name,
    norm_rdata,
    parse_rr_line,
    rcode_of,
    rcode_text,
    rdtype_of,
)
from mifdns.harness.topology import Network, Topology, sweep_stale

__all__ = ["Replay", "ScenarioResult", "ScenarioUpstream", "StepResult", "main", "run_file"]

TOPOLOGY_PREFIX = "mifsc"
LINK_WAIT = 3.0  # seconds a link step waits for mifdns to (de)attach the PvDs on it


# -- the replay ----------------------------------------------------------------------------------
class Replay:
    """Runs one scenario. ``on_step(step, result)`` is called after every step."""

    def __init__(self, scenario: Scenario, *, keep_going: bool = False,
                 on_step: Callable[[Step, StepResult], None] | None = None,
                 stop: threading.Event | None = None) -> None:  # fmt: skip
        """``stop``: set by another thread (an interrupted ``replay -j N``): the replay ends
        before its next step, cleaning up as after a failure."""
        self.sc = scenario
        self.keep_going = keep_going
        self.on_step = on_step
        self.stop = stop
        self.topo: Topology | None = None
        self.loop: ServerLoop | None = None
        self.daemon: Daemon | None = None
        self.nets: dict[str, Network] = {}
        self.ups: list[ScenarioUpstream] = []
        self.marks: dict[str, dict[int, int]] = {}  # step id -> upstream log lengths

    # ---- lifecycle
    def run(self) -> ScenarioResult:
        sc = self.sc
        res = ScenarioResult(sc.name, sc.path, "passed", xfail=sc.xfail)
        t0 = time.monotonic()
        workdir = Path(tempfile.mkdtemp(prefix="mifsc-"))
        try:
            self._build(workdir)
            for i, step in enumerate(sc.steps):
                if self.stop is not None and self.stop.is_set():
                    res.status = "error"
                    res.error = "interrupted"
                    res.not_run = len(sc.steps) - i
                    break
                sr = self._step(step)
                res.steps.append(sr)
                if self.on_step is not None:
                    self.on_step(step, sr)
                if not sr.ok:
                    res.status = "failed"
                    if not self.keep_going:
                        res.not_run = len(sc.steps) - i - 1
                        break
                if self.daemon is not None and not self.daemon.alive():
                    res.status = "failed"
                    res.error = f"mifdns exited with status {self.daemon.proc.returncode}"  # type: ignore[union-attr]
                    res.not_run = len(sc.steps) - i - 1
                    break
        except (DaemonError, netns.HarnessError, OSError) as exc:
            res.status = "error"
            res.error = f"harness: {exc}"
        finally:
            if self.daemon is not None:
                res.daemon_log = self.daemon.stderr_tail()
            try:
                self._teardown()
            except (netns.HarnessError, OSError) as exc:
                res.status = "error"
                res.error = "; ".join(filter(None, [res.error, f"teardown: {exc}"]))
            finally:
                shutil.rmtree(workdir, ignore_errors=True)
            res.seconds = time.monotonic() - t0
        if sc.xfail and res.status != "error":
            res.status = "xpassed" if res.status == "passed" else "xfailed"
        return res

    def _build(self, workdir: Path) -> None:
        sc = self.sc
        self.topo = topo = Topology(TOPOLOGY_PREFIX)
        for net in sc.networks.values():
            self.nets[net.name] = topo.add_network(
                net.name, net.interface, host_addrs=net.host_addrs,
                server_addrs=net.server_addrs, up=net.up,
            )  # fmt: skip
        self.loop = ServerLoop(name=f"upstreams-{sc.name}")
        for net in sc.networks.values():
            tn = self.nets[net.name]
            for addr, listen in zip(net.server_ips(), tn.listen_addrs):
                udef = net.upstreams.get(addr, net.upstream)
                up = ScenarioUpstream(tn.ns, [listen], udef, network=net.name, address=addr)
                self.loop.call(up.start())
                self.ups.append(up)
        self.daemon = Daemon(topo, workdir)
        self.daemon.write_config(
            sc.mifdns_config(listen=f"{LISTEN}:53", control_socket=self.daemon.socket)
        )
        self.daemon.start()

    def _teardown(self) -> None:
        errors = []
        if self.daemon is not None:
            try:
                self.daemon.stop()
            except Exception as exc:  # noqa: BLE001 - keep tearing down
                errors.append(f"daemon: {exc}")
        if self.loop is not None:
            for up in self.ups:
                try:
                    self.loop.call(up.stop(), timeout=5)
                except Exception as exc:  # noqa: BLE001 - keep tearing down
                    errors.append(f"upstream {up.name}: {exc}")
            self.loop.close()
        if self.topo is not None:
            self.topo.close()
        if errors:
            raise netns.HarnessError("teardown: " + "; ".join(errors))

    # ---- steps
    def _step(self, step: Step) -> StepResult:
        sr = StepResult(step.index, step.label(), True, note=step.note)
        if step.id:
            self.marks[step.id] = self._log_lengths()
        t0 = time.monotonic()
        try:
            sr.summary = getattr(self, f"_do_{step.action}")(step) or ""
        except StepFailed as exc:
            sr.ok, sr.diff = False, exc.diff
        except (netns.HarnessError, OSError, subprocess.SubprocessError) as exc:
            sr.ok, sr.diff = False, [f"harness error: {exc}"]
        except Exception as exc:  # noqa: BLE001 - a refused request, a bug: report it
            sr.ok, sr.diff = False, [f"{type(exc).__name__}: {exc}"]
        sr.seconds = time.monotonic() - t0
        return sr

    # query ------------------------------------------------------------------------------------
    def _do_query(self, step: Step) -> str:
        import dns.exception
        import dns.rcode

        assert self.topo is not None and self.daemon is not None
        p = step.params
        rdtype = rdtype_of(p.get("type", "A"))
        expect: dict[str, Any] = p.get("expect") or {}
        before = self._counters()
        marks = self._log_lengths()
        msg = None
        try:
            msg = query_from(
                self.topo.host, LISTEN, str(step.arg), tname(rdtype),
                tcp=p.get("transport") == "tcp", timeout=float(p.get("timeout", 4)),
                payload=1232 if p.get("edns", True) else None,
                want_dnssec=bool(p.get("dnssec", False)),
            )  # fmt: skip
        except dns.exception.Timeout:
            pass
        self._settle()
        asked = self._asked(marks, norm_name(step.arg), tname(rdtype))
        after = self._counters()
        hits = after.get("cache_hits", 0) - before.get("cache_hits", 0)
        local = after.get("local", 0) - before.get("local", 0)
        nets = sorted({n for n, _ in asked})
        source = ", ".join(nets) if nets else ("cache" if hits else "local" if local else "-")
        if msg is None:
            summary = f"no reply (asked: {source})"
        else:
            answers = " ".join(rdatas(msg, rdtype)) or "-"
            via = f"asked {source}" if nets else f"from {source}"
            summary = f"{dns.rcode.to_text(msg.rcode())} {answers} ({via})"
        diff: list[str] = []
        if expect.get("no_reply"):
            if msg is not None:
                diff += scalar("reply", "none", summary)
            if diff:
                raise StepFailed(diff)
            return summary
        if msg is None:
            raise StepFailed([f"no reply within {p.get('timeout', 4)} s (asked: {source})"])
        if "rcode" in expect:
            want = rcode_text(rcode_of(expect["rcode"]))
            got = dns.rcode.to_text(msg.rcode())
            if want != got:
                diff += scalar("rcode", want, got)
        if "answers" in expect:
            want_l = sorted(norm_rdata(rdtype, a) for a in expect["answers"])
            diff += listdiff("answers", want_l, sorted(rdatas(msg, rdtype)))
        if "answer_section" in expect:
            want_l = sorted(answer_line(o, t, r) for o, _, t, r in
                            (parse_rr_line(x) for x in expect["answer_section"]))  # fmt: skip
            got_l = sorted(answer_line(rrset.name.to_text(), rrset.rdtype, rd.to_text())
                           for rrset in msg.answer for rd in rrset)  # fmt: skip
            diff += listdiff("answer_section", want_l, got_l)
        if "flags" in expect:
            diff += flagdiff(expect["flags"], msg.flags)
        if "from" in expect:
            want = str(expect["from"])
            if want == "cache":
                ok = not asked and hits > 0
            elif want == "local":
                ok = not asked and local > 0
            elif "@" in want:
                net, _, addr = want.partition("@")
                ok = (net, addr) in asked
            else:
                ok = want in nets
            if not ok:
                diff += scalar("from", want, source + addrs(asked))
        if "asked" in expect:
            want_nets = sorted({str(a).partition("@")[0] for a in expect["asked"]})
            want_addrs = {tuple(str(a).split("@", 1)) for a in expect["asked"] if "@" in str(a)}
            if want_nets != nets or not want_addrs <= asked:
                diff += scalar("asked", ", ".join(map(str, expect["asked"])) or "none",
                                (", ".join(nets) or "none") + addrs(asked))  # fmt: skip
        if "cached" in expect:
            got_cached = not asked and hits > 0
            if bool(expect["cached"]) != got_cached:
                diff += scalar("cached", str(expect["cached"]).lower(),
                                f"{str(got_cached).lower()} (asked: {source})")  # fmt: skip
        if "ede" in expect:
            codes = sorted(int(e.code) for e in msg.extended_errors())
            if int(expect["ede"]) not in codes:
                diff += scalar("ede", str(expect["ede"]),
                                ", ".join(f"{e.code} ({e.text})" for e in msg.extended_errors())
                                or "none")  # fmt: skip
        ttls = [rrset.ttl for rrset in msg.answer]
        if "max_ttl" in expect and any(t > int(expect["max_ttl"]) for t in ttls):
            diff += scalar("max_ttl", f"every answer TTL <= {expect['max_ttl']}", str(ttls))
        if "min_ttl" in expect and any(t < int(expect["min_ttl"]) for t in ttls):
            diff += scalar("min_ttl", f"every answer TTL >= {expect['min_ttl']}", str(ttls))
        if diff:
            raise StepFailed(diff + [f"(reply: {summary})"])
        return summary

    # checks -----------------------------------------------------------------------------------
    def _do_expect_cache(self, step: Step) -> str:
        assert self.daemon is not None
        deadline = time.monotonic() + float(step.params.get("within", 0))
        while True:
            listing = self.daemon.request({"cmd": "cache"})
            diff = cache_diff(step.arg, listing)
            if not diff or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        if diff:
            raise StepFailed(diff)
        return f"{len(listing)} entries"

    def _do_expect_no_query(self, step: Step) -> str:
        refs = step.arg if isinstance(step.arg, list) else [step.arg]
        names = step.params.get("names") or [step.params["name"]]
        qtype = step.params.get("type")
        diff = []
        for ref in refs:
            for name in names:
                seen = self._seen(ref, name, qtype, step.params.get("since"))
                if seen:
                    diff.append(f"{ref} saw {name}{' ' + qtype if qtype else ''}: "
                                + "; ".join(str(s) for s in seen[:3]))  # fmt: skip
        if diff:
            raise StepFailed(diff)
        return "not seen"

    def _do_expect_query(self, step: Step) -> str:
        p = step.params
        seen = self._seen(step.arg, p["name"], p.get("type"), p.get("since"),
                          p.get("transport"))  # fmt: skip
        if "count" in p:
            if len(seen) != p["count"]:
                raise StepFailed(scalar("count", str(p["count"]), str(len(seen))))
        elif not seen:
            what = p["name"] + (f" {p['type']}" if p.get("type") else "")
            raise StepFailed([f"{step.arg} never saw {what}"])
        return f"seen {len(seen)} times"

    def _do_expect_pvd(self, step: Step) -> str:
        assert self.daemon is not None
        p = dict(step.params)
        within = float(p.pop("within", 0))
        absent = p.pop("absent", False)
        deadline = time.monotonic() + within
        while True:
            pvds = {x["name"]: x for x in self.daemon.request({"cmd": "pvds"})}
            got = pvds.get(step.arg)
            if absent:
                diff = [] if got is None else [f"PvD {step.arg} exists: state {got.get('state')}"]
            elif got is None:
                diff = [f"no PvD named {step.arg} (PvDs: {', '.join(pvds) or 'none'})"]
            else:
                diff = subset_diff(p, got, "")
            if not diff or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        if diff:
            raise StepFailed(diff)
        return "absent" if absent else f"state {got.get('state')}"  # type: ignore[union-attr]

    # lifecycle ------------------------------------------------------------------------------
    def _do_link_down(self, step: Step) -> str:
        net = self.nets[step.arg]
        net.link_down(carrier=bool(step.params.get("carrier", False)))
        if step.params.get("wait", True):
            self._wait_pvds(net.ifname, attached=False)
        return f"{net.ifname} {net.operstate}"

    def _do_link_up(self, step: Step) -> str:
        net = self.nets[step.arg]
        net.link_up()
        if step.params.get("wait", True):
            self._wait_pvds(net.ifname, attached=True)
        return f"{net.ifname} {net.operstate}"

    def _do_rename(self, step: Step) -> str:
        net = self.nets[step.arg]
        old = net.ifname
        net.rename(step.params["to"])
        if step.params.get("wait", True):
            self._wait_pvds(old, attached=False)
            self._wait_pvds(net.ifname, attached=True)
        return f"{old} -> {net.ifname}"

    def _wait_pvds(self, ifname: str, *, attached: bool) -> None:
        assert self.daemon is not None
        deadline = time.monotonic() + LINK_WAIT
        while True:
            pvds = [p for p in self.daemon.request({"cmd": "pvds"}) if p["interface"] == ifname]
            wrong = [p for p in pvds if (p["state"] == "attached") != attached
                     and not (attached and p.get("admin_detached"))]  # fmt: skip
            if not wrong:
                return
            if time.monotonic() > deadline:
                state = "attached" if attached else "detached"
                raise StepFailed(
                    [
                        f"PvD {p['name']} on {ifname} not {state} within "
                        f"{LINK_WAIT:g} s (state {p['state']})"
                        for p in wrong
                    ]
                )
            time.sleep(0.02)

    def _ctl_ok(self, *args: str) -> Any:
        assert self.daemon is not None
        proc = self.daemon.ctl(*args)
        if proc.returncode != 0:
            why = proc.stderr.strip()
            raise StepFailed([f"mifdns ctl {' '.join(args)} exited {proc.returncode}: {why}"])
        try:
            return json.loads(proc.stdout) if proc.stdout.strip() else None
        except ValueError:
            raise StepFailed([f"mifdns ctl {' '.join(args)}: not JSON: {proc.stdout!r}"]) from None

    def _do_detach(self, step: Step) -> str:
        out = self._ctl_ok("detach", str(step.arg))
        return f"state {out.get('state')}" if isinstance(out, dict) else ""

    def _do_attach(self, step: Step) -> str:
        if isinstance(step.arg, dict):
            out = self._ctl_ok("attach", "--spec", json.dumps(step.arg))
        else:
            out = self._ctl_ok("attach", str(step.arg))
        return f"state {out.get('state')}" if isinstance(out, dict) else ""

    def _do_remove(self, step: Step) -> str:
        self._ctl_ok("remove", str(step.arg))
        return "removed"

    def _do_flush(self, step: Step) -> str:
        out = self._ctl_ok("flush", *([str(step.arg)] if step.arg else []))
        return f"{out.get('entries')} entries flushed" if isinstance(out, dict) else ""

    def _do_resolvconf(self, step: Step) -> str:
        assert self.daemon is not None
        p = step.params
        argv = ["resolvconf", "--socket", self.daemon.socket]
        if p.get("delete"):
            argv += ["-d", str(step.arg)]
        else:
            argv += ["-a", str(step.arg)]
            argv += ["-x"] if p.get("exclusive") else []
            argv += ["-p"] if p.get("private") else []
        proc = self.daemon.cli(argv, stdin=p.get("text", ""))
        failed = proc.returncode != 0
        if failed != bool(p.get("fails", False)):
            msg = f"mifdns {' '.join(argv[3:])}: exit {proc.returncode}"
            msg += "" if failed else ", expected a failure"
            msg += f": {proc.stderr.strip()}" if proc.stderr.strip() else ""
            raise StepFailed([msg])
        return f"exit {proc.returncode}"

    def _captive(self, step: Step, on: bool) -> str:
        net = self.sc.networks[step.arg]
        portal = step.params.get("portal")

        async def switch() -> None:
            for up in self._ups_of(step.arg):
                up.apply({**({"portal": portal} if portal else {}), "captive": on})

        assert self.loop is not None
        self.loop.call(switch())
        if step.params.get("tell", True):
            pvd = step.params.get("pvd") or net.pvd_name
            out = self._ctl_ok("captive", str(pvd), "captive" if on else "open")
            return f"upstream {'captive' if on else 'open'}; {pvd} {out.get('captive')}"
        return f"upstream {'captive' if on else 'open'}; mifdns not told"

    def _do_captive_on(self, step: Step) -> str:
        return self._captive(step, True)

    def _do_captive_login(self, step: Step) -> str:
        return self._captive(step, False)

    def _do_upstream(self, step: Step) -> str:
        p = step.params
        ups = self._ups_of(step.arg)

        async def change() -> None:
            for up in ups:
                if "set" in p:
                    up.apply(p["set"])
                if "add_zone" in p:
                    up.add_records(p["add_zone"])
                if "add_records" in p:
                    up.add_records(p["add_records"])
                for r in p.get("remove_records") or []:
                    words = str(r).split()
                    up.remove_records(words[0], words[1] if len(words) > 1 else None)
                if "exchanges" in p:
                    up.exchanges.extend(p["exchanges"])
                if p.get("clear_log"):
                    up.clear()

        assert self.loop is not None
        self.loop.call(change())
        if p.get("clear_log"):
            for marks in self.marks.values():  # earlier marks now point past the log's end
                for up in ups:
                    marks[id(up)] = 0
        return f"{len(ups)} server(s) changed"

    def _do_advance(self, step: Step) -> str:
        if self.stop is None:
            time.sleep(float(step.arg))
        elif self.stop.wait(float(step.arg)):  # interrupted: the next step check ends the run
            return "interrupted"
        return f"{step.arg} s passed"

    def _do_reload(self, step: Step) -> str:
        assert self.daemon is not None
        p = step.params
        if "raw" in p:
            self.daemon.write_config(str(p["raw"]))
        else:
            self.daemon.write_config(self.sc.mifdns_config(
                step.arg if step.arg is not None else {}, without=p.get("without") or [],
                listen=f"{LISTEN}:53", control_socket=self.daemon.socket))  # fmt: skip
        proc = self.daemon.ctl("reload")
        if p.get("rejected"):
            if proc.returncode == 0:
                raise StepFailed(["reload was accepted; expected it to be rejected"])
            return f"rejected: {proc.stderr.strip()}"
        if proc.returncode != 0:
            raise StepFailed([f"reload failed: {proc.stderr.strip()}"])
        out = json.loads(proc.stdout)
        changed = {k: v for k, v in out.items() if k in ("removed", "added", "changed") and v}
        return f"reloaded {changed or 'no PvD changes'}"

    def _do_ctl(self, step: Step) -> str:
        assert self.daemon is not None
        args = [str(a) for a in step.arg]
        proc = self.daemon.ctl(*args)
        if step.params.get("fails"):
            if proc.returncode == 0:
                raise StepFailed([f"mifdns ctl {' '.join(args)} succeeded; expected a failure"])
            return f"failed as expected: {proc.stderr.strip()}"
        if proc.returncode != 0:
            why = proc.stderr.strip()
            raise StepFailed([f"mifdns ctl {' '.join(args)} exited {proc.returncode}: {why}"])
        got = json.loads(proc.stdout) if proc.stdout.strip() else None
        if "expect" in step.params:
            diff = subset_diff(plain_json(step.params["expect"]), got, "")
            if diff:
                raise StepFailed(diff)
        return "ok"

    # ---- helpers
    def _ups_of(self, ref: str) -> list[ScenarioUpstream]:
        net, _, addr = ref.partition("@")
        return [u for u in self.ups if u.network == net and (not addr or u.address == addr)]

    def _log_lengths(self) -> dict[int, int]:
        return {id(u): len(u.log) for u in self.ups}

    def _settle(self) -> None:
        """Let the upstream loop log questions that arrived just before the reply did."""

        async def turns() -> None:
            for _ in range(3):
                await asyncio.sleep(0)

        assert self.loop is not None
        self.loop.call(turns())

    def _asked(self, marks: dict[int, int], name: str, qtype: str) -> set[tuple[str, str]]:
        out = set()
        for u in self.ups:
            for s in list(u.log)[marks.get(id(u), 0) :]:
                if s.qname == name and s.qtype == qtype:
                    out.add((u.network, u.address))
        return out

    def _seen(self, ref: str, name: str, qtype: str | None, since: str | None,
              transport: str | None = None) -> list[Any]:  # fmt: skip
        self._settle()
        want = norm_name(name)
        t = tname(rdtype_of(qtype)) if qtype else None
        marks = self.marks.get(since, {}) if since else {}
        out = []
        for u in self._ups_of(ref):
            for s in list(u.log)[marks.get(id(u), 0) :]:
                if s.qname == want and (t is None or s.qtype == t) and \
                        (transport is None or s.transport == transport):  # fmt: skip
                    out.append(s)
        return out

    def _counters(self) -> dict[str, int]:
        assert self.daemon is not None
        return dict(self.daemon.request({"cmd": "status"}).get("counters", {}))


# -- entry points --------------------------------------------------------------------------------
def run_file(path: str | os.PathLike[str], **kw: Any) -> ScenarioResult:
    """Load and replay one file (ScenarioError if it is invalid)."""
    return Replay(load(path), **kw).run()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="mifdns replay",
        description="Replay scenario files (docs/scenarios.md) against mifdns in network "
                    "namespaces (needs root). Exit status 0 only if every scenario passes "
                    "(an xfail scenario that fails counts as passing; one that passes, not).",
    )  # fmt: skip
    p.add_argument(
        "paths",
        nargs="*",
        metavar="FILE|DIR",
        help="scenario files, or directories of *.yaml (default: the library shipped with mifdns)",
    )
    p.add_argument("--junit", metavar="FILE", help="write a JUnit XML report")
    p.add_argument("-v", "--verbose", action="store_true", help="show every step")
    p.add_argument(
        "-k", metavar="TEXT", dest="filter", help="only scenarios whose name contains TEXT"
    )
    p.add_argument(
        "-j",
        "--jobs",
        type=int,
        default=1,
        metavar="N",
        help="replay N scenarios at once (default 1)",
    )
    p.add_argument("--keep-going", action="store_true", help="run every step even after one failed")
    p.add_argument(
        "--check", action="store_true", help="only load and validate the files (no root needed)"
    )
    args = p.parse_args(argv)

    from .scenario import library

    files = discover(args.paths or [library()])
    missing = [str(f) for f in files if not f.exists()]
    if missing or not files:
        print(
            f"mifdns replay: no such file or no scenarios: {', '.join(missing) or args.paths}",
            file=sys.stderr,
        )
        return 2
    scenarios: list[Scenario] = []
    load_errors: list[str] = []
    for f in files:
        try:
            sc = load(f)
        except ScenarioError as exc:
            load_errors += exc.problems
            continue
        if args.filter and args.filter not in sc.name:
            continue
        scenarios.append(sc)
    for e in load_errors:
        print(f"mifdns replay: {e}", file=sys.stderr)
    if not scenarios and not load_errors:
        print(f"mifdns replay: no scenario's name contains {args.filter!r}", file=sys.stderr)
        return 2
    if args.check:
        for sc in scenarios:
            print(
                f"ok {sc.name}: {len(sc.networks)} networks, {len(sc.steps)} steps"
                f"{' (xfail)' if sc.xfail else ''} [{sc.path}]"
            )
        return 1 if load_errors else 0
    ok, why = netns.available()
    if not ok:
        print(f"mifdns replay: cannot build network namespaces here: {why}", file=sys.stderr)
        return 2
    sweep_stale(TOPOLOGY_PREFIX)
    lock = threading.Lock()
    stop = threading.Event()

    def one(sc: Scenario) -> ScenarioResult:
        r = Replay(sc, keep_going=args.keep_going, stop=stop).run()
        with lock:
            print(r.report(verbose=args.verbose), flush=True)
        return r

    results: list[ScenarioResult] = []
    t0 = time.monotonic()
    restore = _interrupt_on(signal.SIGTERM, signal.SIGHUP)
    try:
        if args.jobs <= 1:
            results = [one(sc) for sc in scenarios]
        else:
            pool = concurrent.futures.ThreadPoolExecutor(args.jobs)
            try:
                results = list(pool.map(one, scenarios))
            finally:  # interrupted: running replays stop at their next step, queued ones never start
                stop.set()
                pool.shutdown(wait=True, cancel_futures=True)
    except KeyboardInterrupt as exc:
        signum = exc.args[0] if exc.args and isinstance(exc.args[0], int) else signal.SIGINT
        print(
            f"mifdns replay: interrupted ({signal.Signals(signum).name}); everything it created "
            "was removed",
            file=sys.stderr,
        )
        return 128 + signum
    finally:
        restore()
        if args.junit:
            write_junit(results, args.junit, load_errors)
    counts: dict[str, int] = {}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "nothing run"
    if load_errors:
        summary += f", {len({e.split(':')[0] for e in load_errors})} invalid files"
    print(f"== {summary} in {time.monotonic() - t0:.1f} s")
    return 0 if all(r.ok for r in results) and not load_errors else 1


def _interrupt_on(*signums: int) -> Callable[[], None]:
    """Make these signals interrupt the main thread as Ctrl-C does (KeyboardInterrupt, with
    the signal number as its argument), so a replay killed by SIGTERM tears down what it
    built (namespaces, daemons, work directories) on the way out. Returns the undo."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(signum)

    old = {n: signal.signal(n, interrupt) for n in signums}

    def restore() -> None:
        for n, handler in old.items():
            signal.signal(n, handler)

    return restore


if __name__ == "__main__":
    sys.exit(main())
