"""``mifdns record``: turn real DNS exchanges into a scenario (docs/scenarios.md).

Two sources:

- ``--from-pcap FILE`` (repeatable): pcap or pcapng files of DNS over UDP/TCP (mifdns.harness.
  pcap reads them, no dependencies);
- ``--live --netns NS``: runs tcpdump in namespace NS while the recorder asks ``--query``
  questions of ``--server`` addresses from that namespace, runs ``--command``, or just listens
  (``--duration``, or until Ctrl-C) -- e.g. on the PvD interfaces of a running mifdns, which
  taps its upstream exchanges per PvD (``--by-interface``) -- then imports the capture.

Queries are paired with responses by (client, server, ports, transport, ID, question). The
servers' addresses (or, with ``--by-interface``, the capture interfaces) become networks; every
response becomes an exchange, wire-exact in base64 (consecutive repeats collapsed), and every
query that got no response a ``drop`` exchange, in capture order. The output
is a replayable skeleton: a query step per recorded question expecting what was recorded; or,
with ``--template``, the template scenario with the recorded exchanges put into its networks.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import ipaddress
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mifdns.harness.pcap import DnsMessage, PcapError, dns_messages, read_packets

__all__ = ["Recording", "build_scenario", "main", "pair_messages"]


@dataclass
class Pair:
    server: str
    client: str
    transport: str
    name: str
    qtype: str
    response: bytes | None
    query: bytes | None
    ts: float
    iface: str | None = None
    when: str = "any"


@dataclass
class Recording:
    pairs: list[Pair] = field(default_factory=list)
    unanswered: list[Pair] = field(default_factory=list)
    skipped: int = 0  # messages that did not parse
    sources: list[str] = field(default_factory=list)


def _parse(data: bytes) -> Any:
    import dns.message

    try:
        return dns.message.from_wire(data, ignore_trailing=True, question_only=False)
    except Exception:  # noqa: BLE001 - dnspython raises many kinds on bad input
        try:  # a response with records dnspython rejects: its question still pairs it
            return dns.message.from_wire(data, ignore_trailing=True, question_only=True)
        except Exception:  # noqa: BLE001 - as above: the message is skipped
            return None


def pair_messages(msgs: list[DnsMessage], *, ports: Sequence[int] = (53,), when: str = "any",
                  rec: Recording | None = None) -> Recording:  # fmt: skip
    """Queries and responses -> Pairs (a response without its query still counts)."""
    import dns.flags
    import dns.rdatatype

    rec = rec or Recording()
    open_q: dict[tuple[Any, ...], list[tuple[DnsMessage, Any]]] = {}
    for m in msgs:
        msg = _parse(m.data)
        if msg is None or len(msg.question) != 1:
            rec.skipped += 1
            continue
        q = msg.question[0]
        name = q.name.to_text().lower()
        qtype = dns.rdatatype.to_text(q.rdtype)
        is_response = bool(msg.flags & dns.flags.QR)
        if not is_response and m.dport in ports:
            key = (m.src, m.sport, m.dst, m.dport, m.transport, msg.id, name, qtype)
            open_q.setdefault(key, []).append((m, msg))
        elif is_response and m.sport in ports:
            key = (m.dst, m.dport, m.src, m.sport, m.transport, msg.id, name, qtype)
            waiting = open_q.get(key)
            query = waiting.pop(0)[0].data if waiting else None
            rec.pairs.append(Pair(m.src, m.dst, m.transport, name, qtype, m.data, query, m.ts,
                                  m.iface, when))  # fmt: skip
    for items in open_q.values():
        for m, msg in items:
            q = msg.question[0]
            rec.unanswered.append(Pair(m.dst, m.src, m.transport, q.name.to_text().lower(),
                                       dns.rdatatype.to_text(q.rdtype), None, m.data, m.ts,
                                       m.iface, when))  # fmt: skip
    return rec


# -- scenario building ---------------------------------------------------------------------------
class _Flow(dict):  # type: ignore[type-arg]
    """Written in YAML flow style: {name: x, type: A}."""


class _Block(dict):  # type: ignore[type-arg]
    """Written in block style whatever its size (a step)."""


class _Dumper(yaml.SafeDumper):  # type: ignore[misc]
    pass


def _str(dumper: yaml.SafeDumper, s: str) -> yaml.Node:
    if "\n" in s.rstrip("\n"):  # zone text and the like: kept line by line
        return dumper.represent_scalar("tag:yaml.org,2002:str", s, style="|")
    if (s.endswith("\n") or len(s) > 80) and " " in s:  # a paragraph: folded at the width
        return dumper.represent_scalar("tag:yaml.org,2002:str", s, style=">")
    return dumper.represent_scalar("tag:yaml.org,2002:str", s)


def _scalar(v: Any) -> bool:
    return v is None or isinstance(v, (str, int, float, bool)) and "\n" not in str(v)


def _flat(v: Any) -> bool:
    return _scalar(v) or isinstance(v, list) and all(_scalar(x) for x in v)


def _map(dumper: yaml.SafeDumper, v: dict[Any, Any]) -> yaml.Node:
    """Short mappings of scalars (or of one list) on one line: {rcode: NOERROR, from: x}."""
    flat = bool(v) and all(_flat(x) for x in v.values()) and len(str(v)) <= 72
    flow = isinstance(v, _Flow) or flat and (len(v) > 1 or not _scalar(next(iter(v.values()))))
    flow = flow and not isinstance(v, _Block)
    return dumper.represent_mapping("tag:yaml.org,2002:map", v.items(), flow_style=flow)


def _seq(dumper: yaml.SafeDumper, v: list[Any]) -> yaml.Node:
    flow = bool(v) and all(_scalar(x) for x in v) and len(str(v)) <= 72
    return dumper.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=flow)


_Dumper.add_representer(str, _str)
_Dumper.add_representer(dict, _map)
_Dumper.add_representer(_Flow, _map)
_Dumper.add_representer(_Block, _map)
_Dumper.add_representer(list, _seq)


def dump_yaml(data: Any) -> str:
    if isinstance(data, dict) and isinstance(data.get("steps"), list):
        data = {**data, "steps": [_Block(s) if isinstance(s, dict) else s for s in data["steps"]]}
    return str(yaml.dump(data, Dumper=_Dumper, sort_keys=False, width=88, allow_unicode=True))


def _summary(data: bytes) -> str:
    """One line for people: rcode, flags and the answer records."""
    import dns.flags
    import dns.rcode

    msg = _parse(data)
    if msg is None:
        return "(unparsable)"
    parts = [dns.rcode.to_text(msg.rcode()), dns.flags.to_text(msg.flags).lower()]
    for rrset in msg.answer:
        for rd in rrset:
            parts.append(f"{rrset.name} {rrset.ttl} {_t(rrset.rdtype)} {rd}")
    if not msg.answer and msg.authority:
        parts.append(f"(authority {msg.authority[0].name} {_t(msg.authority[0].rdtype)})")
    return "; ".join(parts)


def _t(rdtype: int) -> str:
    from mifdns.harness.scenario import tname

    return tname(rdtype)


def _net_addrs(addrs: list[str], clients: set[str]) -> tuple[list[str], list[str]]:
    """server_addrs and host_addrs for a network whose servers are ``addrs``: the recorded
    client address when it shares the server's /24 (/64), else .10 (::10) of that prefix."""
    servers, hosts = [], []
    for a in addrs:
        ip = ipaddress.ip_address(a)
        plen = 24 if ip.version == 4 else 64
        net = ipaddress.ip_network(f"{a}/{plen}", strict=False)
        servers.append(f"{a}/{plen}")
        if ip.is_link_local:
            continue
        same = sorted(c for c in clients if c != a and ipaddress.ip_address(c) in net)
        host = (
            same[0]
            if same
            else str(net.network_address + (10 if net.network_address + 10 != ip else 11))
        )
        if f"{host}/{plen}" not in hosts:
            hosts.append(f"{host}/{plen}")
    return servers, hosts


def build_scenario(rec: Recording, *, networks: dict[str, list[str]] | None = None,
                   by_interface: bool = False, name: str | None = None,
                   meta: dict[str, Any] | None = None,
                   template: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """The scenario mapping (YAML-ready) for a recording."""
    networks = dict(networks or {})
    by_addr = {a: n for n, addrs in networks.items() for a in addrs}
    order: list[str] = []  # network names in order of first appearance
    groups: dict[str, list[Pair]] = {}
    addrs_of: dict[str, list[str]] = {n: list(a) for n, a in networks.items()}
    clients: dict[str, set[str]] = {}
    for p in sorted(rec.pairs + rec.unanswered, key=lambda p: p.ts):
        if by_interface:
            if p.iface == "lo" or ipaddress.ip_address(p.server.split("%")[0]).is_loopback:
                continue  # the clients' side of a tapped mifdns (127.0.0.53), not an upstream
            net = re.sub(r"[^A-Za-z0-9_.-]", "_", p.iface or "unknown").lstrip(".-") or "if"
        elif networks:
            net = by_addr.get(p.server.split("%")[0], "")
            if not net:
                continue  # a server nobody asked for
        else:
            net = by_addr.setdefault(p.server.split("%")[0], f"net{len(order) + 1}")
        if net not in groups:
            order.append(net)
            groups[net] = []
        groups[net].append(p)
        addrs_of.setdefault(net, [])
        if p.server.split("%")[0] not in addrs_of[net]:
            addrs_of[net].append(p.server.split("%")[0])
        clients.setdefault(net, set()).add(p.client.split("%")[0])
    nets_out: dict[str, Any] = {}
    for net in order:
        pairs = groups[net]
        both = {(p.name, p.qtype) for p in pairs if p.transport == "tcp"} & \
               {(p.name, p.qtype) for p in pairs if p.transport == "udp"}  # fmt: skip
        exchanges: list[dict[str, Any]] = []
        last: dict[tuple[Any, ...], bytes] = {}
        for p in pairs:
            q = _Flow(name=p.name, type=p.qtype)
            if (p.name, p.qtype) in both:
                q["transport"] = p.transport
            key = (p.name, p.qtype, q.get("transport"), p.when)
            body = p.response[2:] if p.response is not None else b"(none)"
            if last.get(key) == body:
                continue  # the same answer again: the last exchange repeats anyway
            last[key] = body
            ex: dict[str, Any] = {"query": q}
            if p.when != "any":
                ex["when"] = p.when
            ex["server"] = p.server
            if p.response is None:
                ex["note"] = "no response was recorded"
                ex["response"] = _Flow(drop=True)
            else:
                ex["note"] = _summary(p.response)
                ex["response"] = {"wire": base64.b64encode(p.response).decode()}
            exchanges.append(ex)
        servers, hosts = _net_addrs(addrs_of[net], clients.get(net, set()))
        entry: dict[str, Any] = {"interface": net[:15]}
        if any(ipaddress.ip_address(a.split("/")[0]).is_loopback for a in servers):
            entry["note"] = "recorded on a loopback address; replayed at 192.0.2.53"
            servers, hosts = ["192.0.2.53/24"], ["192.0.2.10/24"]
        entry["server_addrs"] = servers
        if hosts:
            entry["host_addrs"] = hosts
        upstream: dict[str, Any] = {}
        if any(p.when == "captive" for p in pairs):
            upstream["captive"] = True
        upstream["exchanges"] = exchanges
        entry["upstream"] = upstream
        nets_out[net] = entry
    first = min((p.ts for p in rec.pairs if p.ts), default=0.0)
    day = datetime.datetime.fromtimestamp(first, datetime.UTC).date() if first else \
        datetime.date.today()  # fmt: skip
    recorded = {"tool": "mifdns record", "date": day.isoformat(), "sources": rec.sources,
                **(meta or {})}  # fmt: skip
    if template is not None:
        return _into_template(template, nets_out, recorded)
    return {
        "format": 1,
        **({"name": name} if name else {}),
        "story": "TODO: one paragraph: the network, what happens, what mifdns must do. Recorded "
        f"by mifdns record from {', '.join(rec.sources) or 'a capture'}.",
        "recorded": recorded,
        "networks": nets_out,
        "steps": _skeleton_steps(nets_out, order, groups),
    }


def _into_template(template: dict[str, Any], nets: dict[str, Any],
                   recorded: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    out = dict(template)
    tnets = dict(out.get("networks") or {})
    for name, entry in nets.items():
        if name in tnets:
            t = dict(tnets[name] or {})
            up = dict(t.get("upstream") or {})
            up["exchanges"] = entry["upstream"]["exchanges"]
            if entry["upstream"].get("captive") and "captive" not in up:
                up["captive"] = True
            if "server_addrs" not in t:
                t = {k: v for k, v in t.items() if k != "upstream"}
                t["server_addrs"] = entry["server_addrs"]
            t["upstream"] = up
            tnets[name] = t
        else:
            tnets[name] = entry
    out["networks"] = tnets
    rec = dict(out.get("recorded") or {})
    rec.update(recorded)
    out["recorded"] = rec
    order = ["format", "name", "story", "xfail", "recorded", "tags", "networks", "config", "steps"]
    return {k: out[k] for k in order if k in out} | {k: v for k, v in out.items() if k not in order}


def _skeleton_steps(nets: dict[str, Any], order: list[str],
                    groups: dict[str, list[Pair]]) -> list[dict[str, Any]]:  # fmt: skip
    """A query per recorded question expecting its first recorded answer: captive ones first,
    then a login, then the rest."""
    import dns.rcode

    steps: list[dict[str, Any]] = []
    for phase in ("captive", "other"):
        seen: set[tuple[str, str]] = set()
        for net in order:
            for p in groups[net]:
                if (p.when == "captive") != (phase == "captive") or (p.name, p.qtype) in seen:
                    continue
                seen.add((p.name, p.qtype))
                msg = _parse(p.response or b"")
                if msg is None:
                    continue
                if msg.rcode() not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
                    continue  # what mifdns makes of an upstream's failure is not recorded
                expect: dict[str, Any] = {"rcode": dns.rcode.to_text(msg.rcode())}
                import dns.rdatatype

                t = dns.rdatatype.from_text(p.qtype)
                expect["answers"] = [rd.to_text() for rrset in msg.answer
                                     if rrset.rdtype == t for rd in rrset]  # fmt: skip
                expect["from"] = net
                step: dict[str, Any] = {"query": p.name}
                if p.qtype != "A":
                    step["type"] = p.qtype
                step["expect"] = _Flow(expect)
                steps.append(step)
        if phase == "captive" and steps:
            cap = [n for n in order if any(p.when == "captive" for p in groups[n])]
            for n in cap:
                steps.append({"captive_login": n, "note": "the portal lets us through"})
    if not steps:
        steps.append({"advance": 0.1, "note": "nothing was recorded"})
    return steps


# -- live capture ----------------------------------------------------------------------------------
def _ifnames(ns: str | None) -> dict[str, str]:
    from mifdns.harness import netns

    out = netns.ip(ns, "-o", "link", "show", check=False)
    names = {}
    for line in out.splitlines():
        m = re.match(r"^(\d+):\s+([^:@\s]+)", line)
        if m:
            names[f"#{m.group(1)}"] = m.group(2)
    return names


def live_capture(args: argparse.Namespace, pcap: str) -> None:
    from mifdns.harness import netns
    from mifdns.harness.fakeupstream import query_from

    flt = "port " + " or port ".join(str(p) for p in args.port)
    if args.server:
        hosts = " or ".join("host " + s.split("%")[0] for s in args.server)
        flt = f"({flt}) and ({hosts})"
    argv = [
        "tcpdump",
        "-i",
        args.interface or "any",
        "--immediate-mode",
        "-U",
        "-Z",
        "root",
        "-n",
        "-s",
        "0",
        "-w",
        pcap,
        flt,
    ]  # immediate: else the last block stays in the ring
    proc = netns.popen(args.netns, argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       text=True)  # fmt: skip
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line and proc.poll() is not None:
                raise RecordError(f"tcpdump exited {proc.returncode} in {args.netns}")
            if "listening on" in line:
                break
        time.sleep(0.2)  # the capture socket is open; let it settle
        for spec in args.query:
            words = spec.split()
            qname, qtype = words[0], (words[1] if len(words) > 1 else "A")
            for server in args.server:
                try:
                    r = query_from(args.netns, server, qname, qtype, tcp=args.tcp, timeout=3,
                                   port=args.port[0])  # fmt: skip
                    print(f"  {qname} {qtype} @{server}: {_summary(r.to_wire())}", file=sys.stderr)
                except Exception as exc:  # noqa: BLE001 - a failed question is reported, the capture goes on
                    print(f"  {qname} {qtype} @{server}: {exc}", file=sys.stderr)
        for cmd in args.command:
            netns.run(args.netns, ["sh", "-c", cmd], check=False, capture_output=False)
        if not args.query and not args.command:
            print(f"capturing for {args.duration or 'ever (Ctrl-C to stop)'} s ...",
                  file=sys.stderr)  # fmt: skip
            try:
                if args.duration:
                    time.sleep(args.duration)
                else:
                    while True:
                        time.sleep(3600)
            except KeyboardInterrupt:
                pass
        time.sleep(0.3)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class RecordError(Exception):
    pass


# -- command line ------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mifdns record",
        description="Record DNS exchanges (from pcap/pcapng files, or live with tcpdump in a "
                    "network namespace) into a scenario (docs/scenarios.md).",
    )  # fmt: skip
    src = p.add_argument_group("sources")
    src.add_argument(
        "--from-pcap",
        action="append",
        default=[],
        metavar="FILE",
        help="a pcap or pcapng file (repeatable)",
    )
    src.add_argument("--live", action="store_true", help="capture with tcpdump in --netns")
    src.add_argument("--netns", metavar="NS", help="namespace to capture and query in (--live)")
    src.add_argument("--interface", metavar="IF", help="tcpdump interface (default: any)")
    src.add_argument(
        "--server",
        action="append",
        default=[],
        metavar="ADDR",
        help="only this server's traffic (repeatable); --live asks it --query",
    )
    src.add_argument(
        "--query",
        action="append",
        default=[],
        metavar="'NAME [TYPE]'",
        help="a question to ask every --server (--live; repeatable)",
    )
    src.add_argument("--tcp", action="store_true", help="ask --query questions over TCP")
    src.add_argument(
        "--command",
        action="append",
        default=[],
        metavar="CMD",
        help="a shell command to run in --netns while capturing (repeatable)",
    )
    src.add_argument(
        "--duration",
        type=float,
        metavar="S",
        help="without --query/--command: capture this long (default: until Ctrl-C)",
    )
    src.add_argument("--pcap-out", metavar="FILE", help="keep the live capture here")
    src.add_argument(
        "--port",
        type=int,
        action="append",
        metavar="N",
        help="DNS server port (default 53; repeatable)",
    )
    out = p.add_argument_group("output")
    out.add_argument(
        "--out", required=True, metavar="FILE", help="scenario file to write ('-': stdout)"
    )
    out.add_argument("--when", action="append", default=[], choices=("any", "captive", "open"),
                     help="mark the exchanges of the Nth --from-pcap (or all, if given once; "
                          "--live: this capture) as served only while the upstream is captive "
                          "or open")  # fmt: skip
    out.add_argument("--network", action="append", default=[], metavar="NAME=ADDR[,ADDR]",
                     help="name the network of these server addresses (repeatable; then only "
                          "these servers are kept)")  # fmt: skip
    out.add_argument(
        "--by-interface",
        action="store_true",
        help="one network per capture interface (a tap on mifdns's PvD links)",
    )
    out.add_argument("--name", help="the scenario's name")
    out.add_argument(
        "--meta",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a 'recorded' metadata field (where, server, version, config...)",
    )
    out.add_argument(
        "--template",
        metavar="FILE",
        help="a scenario whose networks receive the recorded exchanges",
    )
    return p


def _bad_query(spec: str) -> str | None:
    """Why ``--query`` text (``NAME [TYPE]``) cannot be asked, or None."""
    import dns.exception
    import dns.name
    import dns.rdatatype

    words = spec.split()
    if not 1 <= len(words) <= 2:
        return "expected NAME [TYPE]"
    try:
        dns.name.from_text(words[0])
        if len(words) == 2:
            dns.rdatatype.from_text(words[1])
    except dns.rdatatype.UnknownRdatatype:
        return f"{words[1]!r} is not a record type"
    except dns.exception.DNSException as exc:
        return f"{words[0]!r} is not a domain name ({exc})"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.port = args.port or [53]
    if not args.live and not args.from_pcap:
        print("mifdns record: give --from-pcap FILE or --live --netns NS", file=sys.stderr)
        return 2
    if args.live and not args.netns:
        print("mifdns record: --live needs --netns NS", file=sys.stderr)
        return 2
    if args.live and args.query and not args.server:
        print("mifdns record: --query needs --server ADDR", file=sys.stderr)
        return 2
    for spec in args.query:
        why = _bad_query(spec)
        if why is not None:
            print(f"mifdns record: --query {spec!r}: {why}", file=sys.stderr)
            return 2
    if args.live:
        from mifdns.harness import netns

        if not os.path.exists(os.path.join(netns.NETNS_RUN_DIR, args.netns)):
            print(
                f"mifdns record: no network namespace {args.netns!r} (see `ip netns list`)",
                file=sys.stderr,
            )
            return 2
    networks: dict[str, list[str]] = {}
    for spec in args.network:
        name, _, addrs = spec.partition("=")
        if not name or not addrs:
            print(f"mifdns record: --network {spec!r}: expected NAME=ADDR[,ADDR]", file=sys.stderr)
            return 2
        networks[name] = [a.strip() for a in addrs.split(",") if a.strip()]
    meta: dict[str, Any] = {}
    for spec in args.meta:
        k, _, v = spec.partition("=")
        meta[k] = v
    rec = Recording()
    servers = {s.split("%")[0] for s in args.server}
    whens = args.when or ["any"]
    try:
        inputs: list[tuple[str, str]] = []
        tmpdir = None
        if args.live:
            if args.pcap_out:
                pcap = args.pcap_out
            else:
                tmpdir = tempfile.mkdtemp(prefix="mifrec-")
                pcap = os.path.join(tmpdir, "live.pcap")
            live_capture(args, pcap)
            inputs.append((pcap, whens[0]))
            rec.sources.append(
                f"live capture in netns {args.netns}"
                + (f" on {args.interface}" if args.interface else "")
            )
        for i, path in enumerate(args.from_pcap):
            if len(whens) > 1 and i >= len(whens):
                raise RecordError(f"{len(args.from_pcap)} --from-pcap but {len(whens)} --when")
            when = whens[i] if len(whens) > 1 else whens[0]
            inputs.append((path, when))
            rec.sources.append(os.path.basename(path) + (f" ({when})" if when != "any" else ""))
        names = _ifnames(args.netns) if args.live and args.by_interface else {}
        for path, when in inputs:
            try:
                msgs = dns_messages(read_packets(path), args.port)
            except OSError as exc:
                raise RecordError(f"cannot read {path}: {_why(exc)}") from None
            if servers:
                msgs = [m for m in msgs if m.src in servers or m.dst in servers]
            if names:
                msgs = [_rename(m, names) for m in msgs]
            pair_messages(msgs, ports=args.port, when=when, rec=rec)
        if tmpdir:
            import shutil

            shutil.rmtree(tmpdir, ignore_errors=True)
        template = None
        if args.template:
            try:
                template = yaml.safe_load(Path(args.template).read_text())
            except OSError as exc:
                raise RecordError(f"cannot read {args.template}: {_why(exc)}") from None
            except yaml.YAMLError as exc:
                raise RecordError(f"{args.template}: invalid YAML: {exc}") from None
            if not isinstance(template, dict):
                raise RecordError(f"{args.template}: not a scenario mapping")
        scenario = build_scenario(rec, networks=networks, by_interface=args.by_interface,
                                  name=args.name, meta=meta, template=template)  # fmt: skip
    except OSError as exc:  # tcpdump, ip netns, the temporary directory
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"mifdns record: {where}{_why(exc)}", file=sys.stderr)
        return 1
    except (PcapError, RecordError) as exc:
        print(f"mifdns record: {exc}", file=sys.stderr)
        return 1
    text = dump_yaml(scenario)
    header = (
        "# The recorded exchanges were written by `mifdns record --template`; the rest is kept "
        "as\n# written. See docs/scenarios.md.\n"
        if args.template
        else "# Written by `mifdns record`: complete the story and the steps (docs/scenarios.md).\n"
    )
    if args.out == "-":
        sys.stdout.write(header + text)
    else:
        try:
            Path(args.out).write_text(header + text)
        except OSError as exc:
            print(f"mifdns record: cannot write {args.out}: {_why(exc)}", file=sys.stderr)
            return 1
    n_ex = sum(len(n["upstream"]["exchanges"]) for n in scenario["networks"].values()
               if isinstance(n, dict) and "exchanges" in (n.get("upstream") or {}))  # fmt: skip
    print(f"mifdns record: {len(rec.pairs)} responses ({len(rec.unanswered)} queries without "
          f"one, {rec.skipped} unparsable) -> {n_ex} exchanges in {len(scenario['networks'])} "
          f"networks -> {args.out}", file=sys.stderr)  # fmt: skip
    return 0


def _why(exc: OSError) -> str:
    """``[Errno 2] No such file or directory: '/x'`` -> ``No such file or directory``."""
    return exc.strerror or str(exc) or type(exc).__name__


def _rename(m: DnsMessage, names: dict[str, str]) -> DnsMessage:
    from dataclasses import replace

    return replace(m, iface=names.get(m.iface or "", m.iface))


if __name__ == "__main__":
    sys.exit(main())
