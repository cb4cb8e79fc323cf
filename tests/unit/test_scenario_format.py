"""The scenario format, its validator and schema, the recorder's pcap import, and the replayer's
comparisons -- everything of the harness that runs without sockets or namespaces."""

from __future__ import annotations

import base64
import json
import struct
import xml.etree.ElementTree as ET
from pathlib import Path

import dns.message
import dns.rdatatype
import pytest
import yaml

from mifdns.harness import record, replay, replay_env, replay_report, scenario
from mifdns.harness.pcap import dns_messages, read_packets
from mifdns.harness.scenario import ScenarioError, load, loads

REPO = Path(__file__).resolve().parents[2]
LIBRARY = REPO / "mifdns" / "scenarios"
RECORDINGS = REPO / "tests" / "scenarios" / "recordings"
SCHEMA = json.loads((REPO / "mifdns" / "harness" / "scenario.schema.json").read_text())
LIBRARY_FILES = sorted(LIBRARY.glob("*.yaml"))

MINIMAL = """
story: A minimal scenario.
networks:
  corp:
    interface: corp0
    pvd: {domains: ["~corp.example"]}
    upstream:
      records:
        www.corp.example: {A: 10.8.0.1}
  wifi: {}
steps:
  - query: www.corp.example
    expect: {rcode: NOERROR, answers: [10.8.0.1], from: corp}
"""


def problems_of(text: str, name: str = "s.yaml") -> list[str]:
    with pytest.raises(ScenarioError) as info:
        loads(text, name)
    return info.value.problems


# -- the library ----------------------------------------------------------------------------------
def test_the_library_is_there_and_every_story_is_one_paragraph():
    assert len(LIBRARY_FILES) >= 12
    for path in LIBRARY_FILES:
        sc = load(path)
        assert sc.story and "\n\n" not in sc.story, path
        assert len(sc.story.split()) >= 30, f"{path}: the story is too short to tell anything"


@pytest.mark.parametrize("path", LIBRARY_FILES, ids=lambda p: p.stem)
def test_library_scenario_is_valid_for_the_validator_and_the_schema(path: Path):
    load(path)
    jsonschema = pytest.importorskip("jsonschema")
    data = yaml.safe_load(path.read_text())
    errors = list(jsonschema.Draft202012Validator(SCHEMA).iter_errors(data))
    assert not errors, [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors]


def test_every_rfc6418_item_and_case_of_the_brief_has_a_scenario():
    tags = {t for p in LIBRARY_FILES for t in load(p).tags}
    for item in range(1, 7):
        assert f"rfc6418-4.1-{item}" in tags
    names = {p.stem for p in LIBRARY_FILES}
    for wanted in (
        "captive-portal-avoided",
        "captive-portal-login",
        "vpn-exclusive-down",
        "wifi-flapping",
        "dhcp-resolvconf",
        "reload-changes-server",
    ):
        assert wanted in names


def test_recorded_scenarios_say_where_they_were_recorded_from():
    recorded = [load(p) for p in LIBRARY_FILES if "recorded" in load(p).tags]
    servers = {sc.recorded["server"].split()[0] for sc in recorded}
    assert {"dnsmasq", "BIND"} <= servers
    for sc in recorded:
        assert sc.recorded["config"] and sc.recorded["how"] and sc.recorded["sources"], sc.name


def test_schema_knows_exactly_the_validators_actions_and_behaviours():
    actions = {next(iter(s["required"])) for s in SCHEMA["$defs"]["step"]["oneOf"]}
    assert actions == set(scenario.ACTIONS)
    assert set(SCHEMA["$defs"]["behaviours"]["properties"]) == set(scenario.BEHAVIOURS)
    expect_keys = set(SCHEMA["$defs"]["expect"]["properties"])
    assert expect_keys == {
        "rcode",
        "answers",
        "answer_section",
        "flags",
        "from",
        "asked",
        "cached",
        "ede",
        "max_ttl",
        "min_ttl",
        "no_reply",
    }


def test_no_step_parameter_is_named_like_an_action():
    # a step is recognized by its one action key: a parameter named like an action would
    # make the step ambiguous
    for step in SCHEMA["$defs"]["step"]["oneOf"]:
        action = step["required"][0]
        assert not (set(step["properties"]) - {action}) & set(scenario.ACTIONS), action


def test_discover_takes_directories_flat_and_skips_recordings():
    found = scenario.discover([LIBRARY])
    assert found == LIBRARY_FILES
    assert not any("recordings" in str(p) for p in found)


# -- validation errors: one line each, naming file, line and step ---------------------------------
@pytest.mark.parametrize(
    "change, expected",
    [
        (("story:", "stroy:"), "unknown key 'stroy' (did you mean 'story'?)"),
        (
            ("rcode: NOERROR", "rcode: NOERRO"),
            "s.yaml:12: steps[1] (query): expect.rcode: 'NOERRO' is not an rcode",
        ),
        (
            ("answers: [10.8.0.1]", "answers: [10.8.0.300]"),
            "steps[1] (query): expect.answers[0]: '10.8.0.300' is not valid A data",
        ),
        (("from: corp", "from: cellular"), "'cellular' is not a network of this scenario"),
        (
            ("  - query: www.corp.example\n", "  - query: www.corp.example\n    detach: corp\n"),
            "steps[1]: needs exactly one action",
        ),
        (("{A: 10.8.0.1}", "{AX: 10.8.0.1}"), "'AX' is not a record type"),
        (
            ("interface: corp0", "interface: corp0-interface-too-long"),
            "networks.corp.interface: 'corp0-interface-too-long': 1-15 characters",
        ),
        (
            ("wifi: {}", "wifi: {}\nconfig: {listen: ['127.0.0.1:53']}"),
            "config.listen: is set by the replayer; leave it out",
        ),
        (
            ("wifi: {}", "wifi: {pvd: {servers: [192.0.2.300]}}"),
            "networks.wifi.pvd.servers[0]: '192.0.2.300': not an IP address",
        ),
        (
            ("wifi: {}", "wifi: {pvd: {domians: [corp.example]}}"),
            "networks.wifi.pvd.domians: unknown key (did you mean 'domains'?)",
        ),
        (
            ("wifi: {}", "wifi: {}\nconfig: {pvds: [{name: wifi, servers: [192.0.2.300]}]}"),
            "config: the merged mifdns config is invalid: pvds[1].servers[0]",
        ),
        (
            ("wifi: {}", "wifi: {pvd: {domains: [a]}, interface: corp0}"),
            "networks.wifi.interface: 'corp0' is already network corp's",
        ),
    ],
)
def test_invalid_scenarios_get_one_line_errors(change, expected):
    text = MINIMAL.replace(*change)
    assert text != MINIMAL
    problems = problems_of(text)
    assert any(expected in p for p in problems), problems
    for p in problems:
        assert "\n" not in p and p.startswith("s.yaml"), p


def test_more_step_errors():
    steps = """
steps:
  - advance: 60
  - resolvconf: wlan0.dhcp
  - expect_no_query: wifi
    name: x.example
    since: later
  - query: x.example
    id: later
  - ctl: explain
  - upstream: wifi
    set: {servfial: true}
  - captive_on: nowhere
"""
    text = MINIMAL.split("steps:")[0] + steps
    problems = "\n".join(problems_of(text))
    assert "steps[1] (advance): 60: seconds, more than 0 and at most 10" in problems
    assert "steps[2] (resolvconf): give text (resolvconf -a) or delete: true" in problems
    assert "steps[3] (expect_no_query): since: 'later' is not the id of an earlier step" in problems
    assert "steps[5] (ctl): must be the list of `mifdns ctl` arguments" in problems
    assert "steps[6] (upstream): set: unknown key 'servfial' (did you mean 'servfail'?)" in problems
    assert "steps[7] (captive_on): 'nowhere' is not a network of this scenario" in problems


def test_yaml_problems_are_reported_with_their_line():
    assert problems_of("story: x\nnetworks: {a: {}}\nnetworks: {b: {}}\nsteps: []\n") == [
        "s.yaml:3: duplicate key 'networks'"
    ]
    (p,) = problems_of("story: [unclosed\n")
    assert p.startswith("s.yaml:2: invalid YAML")
    (p,) = problems_of("- just a list\n")
    assert "expected a mapping" in p


def test_bad_recorded_responses_are_caught_at_load():
    base = MINIMAL.replace("        www.corp.example: {A: 10.8.0.1}\n", "").replace(
        "      records:\n", "      exchanges:\n        - {EX}\n"
    )
    cases = {
        "{query: x.example A, response: {wire: 'not base64!'}}": "wire is not valid base64",
        "{query: x.example A, response: {wire: AAAA}}": "wire is not a DNS message",
        "{response: {rcode: NOERROR}}": "needs a query",
        "{query: x.example A, response: {drop: true, rcode: NOERROR}}": "drop: true stands alone",
        "{query: x.example A, response: {answer: ['x.example 300 IN A 1.2.3']}}": "cannot build the response",
        "{query: x.example A, when: later, response: {drop: true}}": "'later': one of any",
    }
    for ex, expected in cases.items():
        problems = problems_of(base.replace("{EX}", ex))
        assert any(expected in p for p in problems), (ex, problems)


# -- the model --------------------------------------------------------------------------------------
def test_mifdns_config_merges_network_pvds_with_the_config_section():
    sc = loads(
        MINIMAL.replace(
            "wifi: {}",
            "wifi: {server_addrs: ['192.0.2.53/24', 'fe80::53/64']}\n  lab: {pvd: false}",
        )
        + """
config:
  cache: {max_ttl: 60}
  pvds:
    - {name: corp, exclusive: true}
    - {name: extra, interface: lab, servers: [192.0.2.99]}
"""
    )
    cfg = sc.mifdns_config(listen="127.0.0.53:53", control_socket="/x.sock")
    assert cfg["listen"] == ["127.0.0.53:53"] and cfg["control_socket"] == "/x.sock"
    assert cfg["cache"] == {"max_ttl": 60}
    by_name = {p["name"]: p for p in cfg["pvds"]}
    assert list(by_name) == ["corp", "wifi", "extra"]
    assert by_name["corp"] == {
        "name": "corp",
        "interface": "corp0",
        "domains": ["~corp.example"],
        "servers": ["192.0.2.53", "2001:db8:1::53"],
        "exclusive": True,
    }
    assert by_name["wifi"]["servers"] == ["192.0.2.53", "fe80::53"]
    assert by_name["wifi"]["interface"] == "wifi"
    without = sc.mifdns_config(
        {"pvds": [{"name": "corp", "servers": ["192.0.2.54"]}]}, without=["wifi"]
    )
    assert [p["name"] for p in without["pvds"]] == ["corp"]
    assert without["pvds"][0]["servers"] == ["192.0.2.54"]
    assert "cache" not in without


def test_a_config_written_out_in_full_replaces_the_default_network_pvds():
    sc = loads(
        MINIMAL
        + """
config:
  pvds:
    - {name: vpn, interface: corp0, servers: [192.0.2.53], domains: ["~corp.example"]}
    - {name: home, interface: wifi, servers: [192.0.2.53]}
"""
    )
    names = [p["name"] for p in sc.mifdns_config()["pvds"]]
    assert names == ["corp", "vpn", "home"]  # corp has an explicit `pvd:`, wifi does not


def test_steps_keep_their_arguments_notes_and_labels():
    sc = loads(
        MINIMAL.replace(
            "    expect:",
            "    type: aaaa\n    transport: tcp\n    note: hi\n    id: first\n    expect:",
        ).replace("answers: [10.8.0.1]", "answers: ['2001:db8::1']")
    )
    (st,) = sc.steps
    assert (st.index, st.action, st.arg, st.note, st.id) == (
        1,
        "query",
        "www.corp.example",
        "hi",
        "first",
    )
    assert st.label() == "query www.corp.example aaaa tcp"


def test_presentation_responses_become_wire_templates():
    sc = loads(
        MINIMAL.replace("        www.corp.example: {A: 10.8.0.1}\n", "").replace(
            "      records:\n",
            """      exchanges:
        - query: {name: WWW.corp.example, type: A, transport: udp}
          when: captive
          response:
            rcode: NXDOMAIN
            flags: [aa]
            authority: ["corp.example. 60 IN SOA ns hostmaster 1 2 3 4 5"]
""",
        )
    )
    (ex,) = sc.networks["corp"].upstream.exchanges
    assert (ex.name, ex.qtype, ex.transport, ex.when) == ("www.corp.example.", 1, "udp", "captive")
    msg = dns.message.from_wire(ex.template)
    assert msg.rcode() == 3 and msg.authority[0].ttl == 60
    assert dns.flags.to_text(msg.flags) == "QR AA"
    assert ex.matches("www.corp.example.", 1, 1, "udp", True)
    assert not ex.matches("www.corp.example.", 1, 1, "tcp", True)
    assert not ex.matches("www.corp.example.", 1, 1, "udp", False)


# -- the fake upstream's recorded exchanges (no sockets: the decision logic only) -----------------
def _query(name: str, qtype: str = "A", qid: int = 0x1234) -> bytes:
    q = dns.message.make_query(name, qtype)
    q.id = qid
    return q.to_wire()


def test_exchanges_are_served_in_order_counted_and_then_fall_through():
    sc = loads(
        MINIMAL.replace("        www.corp.example: {A: 10.8.0.1}\n", "").replace(
            "      records:\n",
            """      exchanges:
        - {query: a.example A, response: {drop: true}, times: 2}
        - {query: a.example A, response: {answer: ["a.example 5 IN A 192.0.2.7"]}, times: 1}
        - {query: b.example A, response: {answer: ["b.example 5 IN A 192.0.2.8"]}}
""",
        )
    )
    up = replay_env.ScenarioUpstream(
        None, ["192.0.2.53"], sc.networks["corp"].upstream, network="corp", address="192.0.2.53"
    )
    picks = [up._pick(_query("a.example"), "udp") for _ in range(4)]
    assert [p.drop if p else None for p in picks] == [True, True, False, None]
    b = [up._pick(_query("b.example"), "udp") for _ in range(3)]
    assert b[0] is b[1] is b[2] is not None  # the last one repeats
    assert up._pick(_query("c.example"), "udp") is None
    assert up._pick(b"garbage", "udp") is None


def test_patch_puts_the_query_id_and_name_spelling_into_the_recorded_response():
    from dnslib import DNSRecord

    resp = dns.message.make_response(dns.message.from_wire(_query("www.example.com", qid=7)))
    req = DNSRecord.parse(_query("WwW.Example.COM", qid=0xBEEF))
    orig = resp.to_wire()
    out = replay_env._patch(orig, req)
    assert out[:2] == b"\xbe\xef"
    assert dns.message.from_wire(out).question[0].name.to_text() == "WwW.Example.COM."
    qend = 12 + len("www.example.com") + 2
    assert len(out) == len(orig) and out[2:12] == orig[2:12] and out[qend:] == orig[qend:]


# -- comparisons and reports ----------------------------------------------------------------------
def test_list_diff_marks_missing_and_unexpected():
    assert replay_report.listdiff("answers", ["a", "b"], ["a", "b"]) == []
    assert replay_report.listdiff("answers", ["a", "b"], ["a", "c"]) == [
        "answers:",
        "    a",
        "  - b",
        "  + c",
    ]
    assert replay_report.listdiff("answers", [], ["x"])[-2:] == ["  + x", "  - (none)"]


def test_subset_diff_for_ctl_json():
    got = {"candidates": [{"pvd": "corp", "grade": 2, "reason": "x"}], "local": None}
    assert replay_report.subset_diff({"candidates": [{"pvd": "corp"}]}, got, "") == []
    assert replay_report.subset_diff({"candidates": [{"pvd": "wifi"}]}, got, "")[0] == "candidates:"
    assert replay_report.subset_diff({"candidates": []}, got, "")  # lengths differ
    assert (
        replay_report.subset_diff({"servers": ["192.0.2.54"]}, {"servers": ["192.0.2.54"]}, "")
        == []
    )
    assert replay_report.subset_diff({"x": 1}, {}, "") == ["x:", "  - 1", "  + (missing)"]


def test_cache_diff():
    listing = [
        {
            "name": "www.corp.example.",
            "type": "A",
            "pvd": "corp",
            "kind": "positive",
            "ttl": 5,
            "rcode": "NOERROR",
        },
        {
            "name": "nx.corp.example.",
            "type": "*",
            "pvd": "corp",
            "kind": "nxdomain",
            "ttl": 5,
            "rcode": "NXDOMAIN",
        },
    ]
    ok = {
        "corp": ["www.corp.example A positive", "nx.corp.example AAAA nxdomain"],
        "wifi": "empty",
        "*": [{"name": "gone.example", "absent": True}],
    }
    assert replay_report.cache_diff(ok, listing) == []
    bad = replay_report.cache_diff(
        {"corp": ["www.corp.example A captive"], "*": "empty", "wifi": ["x.example"]}, listing
    )
    text = "\n".join(bad)
    assert "  - www.corp.example. A captive" in text and "(cache has: www.corp.example." in text
    assert "*:" in text and "x.example." in text


def test_flag_diff():
    flags = dns.flags.QR | dns.flags.RA | dns.flags.RD
    assert replay_report.flagdiff(["ra"], flags) == []
    assert replay_report.flagdiff({"aa": False, "tc": False}, flags) == []
    assert replay_report.flagdiff({"aa": True}, flags) == ["flags:", "  - aa=set", "  + qr ra rd"]


def test_report_and_junit(tmp_path: Path):
    ok = replay_report.ScenarioResult(
        "good",
        "good.yaml",
        "passed",
        [replay_report.StepResult(1, "query x A", True, summary="NOERROR")],
    )
    bad = replay_report.ScenarioResult(
        "bad",
        "bad.yaml",
        "failed",
        [replay_report.StepResult(1, "query x A", False, ["rcode:", "  - A", "  + B"])],
        not_run=2,
        daemon_log="line one",
    )
    xf = replay_report.ScenarioResult("xf", "xf.yaml", "xfailed", xfail="not built")
    text = bad.report()
    assert "FAIL   1 query x A" in text and "  - A" in text and "2 later steps not run" in text
    assert text.splitlines()[-1].startswith("FAIL bad: 0/3 steps passed")
    assert "query x A" not in ok.report() and "query x A  -> NOERROR" in ok.report(True)
    out = tmp_path / "j.xml"
    replay_report.write_junit([ok, bad, xf], str(out), ["broken.yaml:3: steps[1]: oops"])
    suite = ET.parse(out).getroot()
    assert (
        suite.get("tests"),
        suite.get("failures"),
        suite.get("errors"),
        suite.get("skipped"),
    ) == ("4", "1", "1", "1")
    assert suite.find("testcase[@name='bad']/failure").get("message").startswith("step 1 query")


def test_replay_check_mode_validates_without_root(tmp_path: Path, capsys):
    assert replay.main(["--check", str(LIBRARY)]) == 0
    assert capsys.readouterr().out.count("\nok ") + 1 >= len(LIBRARY_FILES)
    bad = tmp_path / "bad.yaml"
    bad.write_text(MINIMAL.replace("rcode: NOERROR", "rcode: NOPE"))
    assert replay.main(["--check", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:12: steps[1] (query): expect.rcode: 'NOPE' is not an rcode" in err
    assert replay.main(["--check", str(tmp_path / "missing.yaml")]) == 2


# -- pcap / pcapng reading and pairing --------------------------------------------------------------
def _udp4(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    import ipaddress

    udp = struct.pack(">HHHH", sport, dport, 8 + len(payload), 0) + payload
    ip = struct.pack(
        ">BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(udp),
        1,
        0,
        64,
        17,
        0,
        ipaddress.IPv4Address(src).packed,
        ipaddress.IPv4Address(dst).packed,
    )
    return ip + udp


def _tcp6(
    src: str, dst: str, sport: int, dport: int, seq: int, flags: int, payload: bytes
) -> bytes:
    import ipaddress

    tcp = struct.pack(">HHIIBBHHH", sport, dport, seq, 0, 5 << 4, flags, 65535, 0, 0) + payload
    ip = struct.pack(
        ">IHBB16s16s",
        6 << 28,
        len(tcp),
        6,
        64,
        ipaddress.IPv6Address(src).packed,
        ipaddress.IPv6Address(dst).packed,
    )
    return ip + tcp


def _exchange(name: str, qid: int, addr: str) -> tuple[bytes, bytes]:
    q = dns.message.make_query(name, "A")
    q.id = qid
    r = dns.message.make_response(q)
    r.answer.append(dns.rrset.from_text(name, 300, "IN", "A", addr))
    return q.to_wire(), r.to_wire()


def test_pcap_ethernet_ipv4_udp_and_loopback_duplicates(tmp_path: Path):
    q, r = _exchange("www.example.com.", 77, "192.0.2.1")
    eth = b"\x00" * 12 + b"\x08\x00"
    frames = [
        eth + _udp4("192.0.2.10", "192.0.2.53", 40000, 53, q),
        eth + _udp4("192.0.2.10", "192.0.2.53", 40000, 53, q),  # a -i any loopback copy
        eth + _udp4("192.0.2.53", "192.0.2.10", 53, 40000, r),
        eth + _udp4("192.0.2.10", "192.0.2.99", 40001, 8080, b"not dns at all"),
    ]
    data = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    for i, f in enumerate(frames):
        data += struct.pack("<IIII", 1_700_000_000, i * 10, len(f), len(f)) + f
    path = tmp_path / "x.pcap"
    path.write_bytes(data)
    msgs = dns_messages(read_packets(str(path)))
    assert [(m.src, m.dst, m.transport) for m in msgs] == [
        ("192.0.2.10", "192.0.2.53", "udp"),
        ("192.0.2.53", "192.0.2.10", "udp"),
    ]
    rec = record.pair_messages(msgs)
    (p,) = rec.pairs
    assert (p.server, p.name, p.qtype, p.response, p.query) == (
        "192.0.2.53",
        "www.example.com.",
        "A",
        r,
        q,
    )


def test_pcapng_sll2_ipv6_tcp_reassembly_with_split_and_retransmitted_segments(tmp_path: Path):
    q, r = _exchange("big.example.net.", 99, "198.51.100.7")
    c, s = "2001:db8:1::10", "2001:db8:1::53"
    framed_q = struct.pack(">H", len(q)) + q
    framed_r = struct.pack(">H", len(r)) + r
    segs = [
        _tcp6(c, s, 41000, 53, 1000, 0x02, b""),  # SYN
        _tcp6(s, c, 53, 41000, 5000, 0x12, b""),  # SYN-ACK
        _tcp6(c, s, 41000, 53, 1001, 0x18, framed_q),
        _tcp6(s, c, 53, 41000, 5001 + 10, 0x18, framed_r[10:]),  # out of order
        _tcp6(s, c, 53, 41000, 5001, 0x18, framed_r[:10]),
        _tcp6(s, c, 53, 41000, 5001, 0x18, framed_r[:10]),
    ]  # retransmitted

    def block(btype: int, body: bytes) -> bytes:
        body += b"\x00" * (-len(body) % 4)
        return struct.pack("<II", btype, len(body) + 12) + body + struct.pack("<I", len(body) + 12)

    shb = struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)
    name = b"wlan0"
    opts = struct.pack("<HH", 2, len(name)) + name + b"\x00" * 3 + struct.pack("<HH", 0, 0)
    out = block(0x0A0D0D0A, shb) + block(1, struct.pack("<HHI", 276, 0, 0) + opts)
    for seg in segs:
        sll2 = struct.pack(">HHIHBB8s", 0x86DD, 0, 7, 1, 0, 6, b"\x00" * 8)
        frame = sll2 + seg
        out += block(6, struct.pack("<IIIII", 0, 0, 1000, len(frame), len(frame)) + frame)
    path = tmp_path / "x.pcapng"
    path.write_bytes(out)
    msgs = dns_messages(read_packets(str(path)))
    assert [(m.transport, m.data, m.iface) for m in msgs] == [
        ("tcp", q, "wlan0"),
        ("tcp", r, "wlan0"),
    ]
    (p,) = record.pair_messages(msgs).pairs
    assert (p.server, p.transport, p.iface) == (s, "tcp", "wlan0")


def test_not_a_capture_is_a_clear_error(tmp_path: Path):
    from mifdns.harness.pcap import PcapError

    bad = tmp_path / "x.pcap"
    bad.write_bytes(b"GIF89a" + b"\x00" * 40)
    with pytest.raises(PcapError, match="not a pcap or pcapng file"):
        list(read_packets(str(bad)))


# -- the recorder ---------------------------------------------------------------------------------
def test_the_stored_recordings_reimport_to_the_library_exchanges():
    """The library's recorded exchanges are exactly what the stored captures of the real
    servers give (so they were not edited by hand, and the pcap reader reads tcpdump's
    output)."""
    cases = [
        (
            "captive-portal-login",
            [("captive-dnsmasq-portal.pcap", "captive"), ("captive-dnsmasq-open.pcap", "open")],
            {"hotel": ["192.0.2.53"]},
        ),
        (
            "rfc6418-6-dns64",
            [("dns64-bind.pcap", "any")],
            {"cell": ["192.0.2.53", "2001:db8:1::53"]},
        ),
    ]
    for name, pcaps, networks in cases:
        rec = record.Recording()
        for pcap, when in pcaps:
            msgs = dns_messages(read_packets(str(RECORDINGS / pcap)))
            record.pair_messages(msgs, when=when, rec=rec)
        assert not rec.unanswered and not rec.skipped
        built = record.build_scenario(rec, networks=networks)
        want = yaml.safe_load((LIBRARY / f"{name}.yaml").read_text())
        (net,) = networks
        got_ex = yaml.safe_load(record.dump_yaml(built))["networks"][net]["upstream"]["exchanges"]
        assert got_ex == want["networks"][net]["upstream"]["exchanges"], name


def test_dns64_recording_holds_real_synthesis():
    sc = load(LIBRARY / "rfc6418-6-dns64.yaml")
    answers = {}
    for ex in sc.networks["cell"].upstream.exchanges:
        msg = dns.message.from_wire(ex.template)
        answers[(ex.name, dns.rdatatype.to_text(ex.qtype))] = sorted(
            rd.to_text() for rrset in msg.answer for rd in rrset
        )
    assert answers[("v4only.example.net.", "AAAA")] == ["64:ff9b::c633:640a"]
    assert answers[("dual.example.net.", "AAAA")] == ["2001:db8:20::20"]
    assert answers[("ipv4only.arpa.", "AAAA")] == ["64:ff9b::c000:aa", "64:ff9b::c000:ab"]


def test_record_cli_writes_a_valid_replayable_skeleton(tmp_path: Path, capsys):
    out = tmp_path / "skeleton.yaml"
    assert (
        record.main(
            [
                "--from-pcap",
                str(RECORDINGS / "captive-dnsmasq-portal.pcap"),
                "--when",
                "captive",
                "--from-pcap",
                str(RECORDINGS / "captive-dnsmasq-open.pcap"),
                "--when",
                "open",
                "--name",
                "hotel",
                "--meta",
                "server=dnsmasq",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert "10 responses" in capsys.readouterr().err
    sc = load(out)
    assert sc.name == "hotel" and sc.recorded["server"] == "dnsmasq"
    (net,) = sc.networks.values()
    assert net.server_addrs == ["192.0.2.53/24"] and net.host_addrs == ["192.0.2.10/24"]
    assert net.upstream.captive and {x.when for x in net.upstream.exchanges} == {"captive", "open"}
    actions = [s.action for s in sc.steps]
    assert actions.index("captive_login") > actions.index("query")
    first = sc.steps[0]
    assert first.params["expect"]["answers"] == ["192.0.2.1"]


def test_unanswered_queries_become_drop_exchanges():
    q, r = _exchange("slow.example.", 5, "192.0.2.5")
    q2 = bytearray(q)
    q2[0:2] = b"\x00\x06"
    msgs = [
        record.DnsMessage(1.0, "192.0.2.10", "192.0.2.53", 4000, 53, "udp", q),
        record.DnsMessage(2.0, "192.0.2.10", "192.0.2.53", 4001, 53, "udp", bytes(q2)),
        record.DnsMessage(2.1, "192.0.2.53", "192.0.2.10", 53, 4001, "udp", b"\x00\x06" + r[2:]),
    ]
    rec = record.pair_messages(msgs)
    built = record.build_scenario(rec)
    ex = built["networks"]["net1"]["upstream"]["exchanges"]
    assert [e["response"].get("drop", False) for e in ex] == [True, False]
    loads(record.dump_yaml(built))  # and it is a valid scenario


def test_record_needs_a_source(capsys):
    assert record.main(["--out", "-"]) == 2
    assert "give --from-pcap FILE or --live --netns NS" in capsys.readouterr().err


def test_wire_in_recorded_scenarios_is_base64_of_whole_messages():
    sc = yaml.safe_load((LIBRARY / "captive-portal-avoided.yaml").read_text())
    for ex in sc["networks"]["hotel"]["upstream"]["exchanges"]:
        msg = dns.message.from_wire(base64.b64decode(ex["response"]["wire"]))
        assert msg.question[0].name.to_text() == ex["query"]["name"]


def test_by_interface_makes_a_network_per_link_and_skips_the_loopback_side():
    q, r = _exchange("www.example.com.", 9, "203.0.113.80")
    msgs = []
    for iface, server, client in (
        ("corp0", "192.0.2.53", "192.0.2.10"),
        ("wlan0", "192.0.2.53", "192.0.2.10"),
        ("lo", "127.0.0.53", "127.0.0.1"),
    ):
        msgs += [
            record.DnsMessage(1.0, client, server, 4000, 53, "udp", q, iface),
            record.DnsMessage(1.1, server, client, 53, 4000, "udp", r, iface),
        ]
    built = record.build_scenario(record.pair_messages(msgs), by_interface=True)
    assert list(built["networks"]) == ["corp0", "wlan0"]
    assert built["networks"]["wlan0"]["server_addrs"] == ["192.0.2.53/24"]


def test_record_reports_an_unreadable_capture_in_one_line(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "no.pcap"
    assert record.main(["--from-pcap", str(missing), "--out", "-"]) == 1
    err = capsys.readouterr().err
    assert err == f"mifdns record: cannot read {missing}: No such file or directory\n"
    assert record.main(["--from-pcap", str(tmp_path), "--out", "-"]) == 1  # a directory
    assert capsys.readouterr().err.endswith(": Is a directory\n")


@pytest.mark.parametrize("argv, says", [
    (["--live", "--netns", "lo-ns", "--server", "192.0.2.1", "--query", "www.example BOGUS"],
     "--query 'www.example BOGUS': 'BOGUS' is not a record type"),
    (["--live", "--netns", "lo-ns", "--server", "192.0.2.1", "--query", "a b c"],
     "expected NAME [TYPE]"),
    (["--live", "--netns", "no-such-namespace-here"],
     "no network namespace 'no-such-namespace-here'"),
])  # fmt: skip
def test_record_refuses_what_it_cannot_capture_before_capturing(argv, says, tmp_path, capsys):
    """Usage errors (exit 2) before tcpdump starts: not a skeleton scenario and exit 0."""
    out = tmp_path / "s.yaml"
    assert record.main([*argv, "--out", str(out)]) == 2
    assert says in capsys.readouterr().err
    assert not out.exists()
