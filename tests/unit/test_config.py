"""mifdns.config: YAML -> typed Config, every problem reported with file, line and key path."""

from __future__ import annotations

import ipaddress
import re
import textwrap
import typing
from dataclasses import fields, is_dataclass
from pathlib import Path

import pytest

from mifdns.config import (
    ENV_VARS,
    PVD_KEY_DOCS,
    Config,
    ListenAddr,
    apply_env,
    config_reference_markdown,
    default_config,
    load_config,
    parse_config,
    pvd_spec_from_mapping,
)
from mifdns.core.pvd import Dns64Spec, Domain, PvdSpec, ServerAddr, parse_server
from mifdns.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
SRC = "mifdns.yaml"


def problems(text: str) -> list[str]:
    """The problem lines of an invalid config (fails the test if it loads)."""
    with pytest.raises(ConfigError) as info:
        parse_config(textwrap.dedent(text), SRC)
    return info.value.problems


def one_problem(text: str) -> str:
    found = problems(text)
    assert len(found) == 1, found
    return found[0]


def load(text: str) -> Config:
    return parse_config(textwrap.dedent(text), SRC)


PVD = """\
pvds:
  - name: corp
    interface: tun0
"""


# ---------------------------------------------------------------------------- defaults


def test_defaults_listen_on_127_0_0_53_with_no_pvds():
    config = default_config()
    assert [str(a) for a in config.listen] == ["127.0.0.53:53"]
    assert config.control_socket == "/run/mifdns/control.sock"
    assert config.netlink is True and config.query_log is False
    assert config.pvds == ()
    assert config.cache.max_entries == 100_000 and config.cache.max_bytes == 256 * 1024 * 1024
    assert (config.cache.max_ttl, config.cache.negative_max_ttl) == (86400, 900)
    assert config.cache.captive_max_ttl == 30
    assert config.resolv_conf.manage is False and config.resolv_conf.path == "/etc/resolv.conf"
    assert config.metrics.listen is None and config.metrics.address is None
    assert (config.upstream.timeout, config.upstream.total_timeout) == (0.8, 3.0)
    assert (config.upstream.negative_wait, config.upstream.edns_udp_size) == (1.0, 1232)
    limits = config.limits
    assert (limits.max_inflight, limits.max_tcp_clients) == (4096, 256)
    assert (limits.max_tcp_queries_per_connection, limits.tcp_idle_timeout) == (128, 10.0)
    assert (limits.max_upstream_tcp, limits.ingress_batch) == (64, 64)


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n"])
def test_empty_file_means_defaults(text):
    config = parse_config(text, SRC)
    assert config == Config(source=SRC)


def test_empty_sections_mean_their_defaults():
    config = load("cache:\nupstream: {}\npvds:\n")
    assert config.cache == default_config().cache
    assert config.pvds == ()


def test_load_config_records_the_file_it_came_from(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("query_log: true\n")
    config = load_config(str(path))
    assert config.query_log is True and config.source == str(path)


def test_example_config_loads_cleanly():
    config = load_config(str(ROOT / "config" / "mifdns.yaml"))
    by_name = {p.name: p for p in config.pvds}
    assert list(by_name) == ["wifi", "corp", "cellular"]
    assert by_name["wifi"].effective_default_route is True
    corp = by_name["corp"]
    assert corp.exclusive and not corp.effective_default_route
    assert corp.domains == (Domain("corp.example", routing_only=True),)
    assert corp.networks == (ipaddress.ip_network("10.8.0.0/16"),)
    assert by_name["cellular"].dns64 == Dns64Spec(prefix="auto")
    assert all(p.origin == "config" for p in config.pvds)


# ------------------------------------------------------------------- the reference document


def reference_keys() -> list[str]:
    return re.findall(r"^\| `([a-z0-9_\[\].]+)` \|", config_reference_markdown(), re.MULTILINE)


def test_docs_config_md_is_the_generated_reference():
    committed = (ROOT / "docs" / "config.md").read_text()
    assert committed == config_reference_markdown(), (
        "docs/config.md is stale: run `python -m mifdns.config > docs/config.md`"
    )


def test_reference_documents_every_field_of_every_section():
    def paths(cls: type, prefix: str) -> list[str]:
        out = []
        for f in fields(cls):
            if not f.metadata.get("key", True):
                continue
            assert f.metadata.get("doc"), f"{cls.__name__}.{f.name} has no doc"
            path = f"{prefix}{f.name}"
            out.append(path)
            hint = typing.get_type_hints(cls)[f.name]
            if is_dataclass(hint):
                out += paths(hint, path + ".")
        return out

    expected = paths(Config, "") + [f"pvds[].{k}" for k in PVD_KEY_DOCS]
    assert sorted(reference_keys()) == sorted(expected)
    assert "source" not in reference_keys()


def test_pvd_key_table_covers_exactly_the_pvd_spec_fields():
    spec_fields = {f.name for f in fields(PvdSpec)} - {"origin"}  # origin is set, not a key
    assert {k for k in PVD_KEY_DOCS if "." not in k} == spec_fields
    assert {k.split(".")[1] for k in PVD_KEY_DOCS if "." in k} == {
        f.name for f in fields(Dns64Spec)
    }


# A non-default value for every key in the reference, and where it must land in the Config.
# Adding a key to the schema makes the next test fail until it is listed here.
SAMPLES = {
    "listen": ('["127.0.0.1:5353", "[::1]:5353"]', lambda c: [str(a) for a in c.listen],
               ["127.0.0.1:5353", "[::1]:5353"]),
    "control_socket": ("/tmp/m.sock", lambda c: c.control_socket, "/tmp/m.sock"),
    "netlink": ("false", lambda c: c.netlink, False),
    "cache.max_entries": ("7", lambda c: c.cache.max_entries, 7),
    "cache.max_bytes": ("2097152", lambda c: c.cache.max_bytes, 2097152),
    "cache.max_ttl": ("60", lambda c: c.cache.max_ttl, 60),
    "cache.negative_max_ttl": ("0", lambda c: c.cache.negative_max_ttl, 0),
    "cache.captive_max_ttl": ("5", lambda c: c.cache.captive_max_ttl, 5),
    "resolv_conf.manage": ("true", lambda c: c.resolv_conf.manage, True),
    "resolv_conf.path": ("/tmp/resolv.conf", lambda c: c.resolv_conf.path, "/tmp/resolv.conf"),
    "metrics.listen": ('"127.0.0.1:9153"', lambda c: c.metrics.listen, "127.0.0.1:9153"),
    "upstream.timeout": ("0.5", lambda c: c.upstream.timeout, 0.5),
    "upstream.total_timeout": ("4", lambda c: c.upstream.total_timeout, 4.0),
    "upstream.negative_wait": ("0.25", lambda c: c.upstream.negative_wait, 0.25),
    "upstream.edns_udp_size": ("1400", lambda c: c.upstream.edns_udp_size, 1400),
    "upstream.queries_per_port": ("1", lambda c: c.upstream.queries_per_port, 1),
    "limits.max_inflight": ("10", lambda c: c.limits.max_inflight, 10),
    "limits.max_tcp_clients": ("11", lambda c: c.limits.max_tcp_clients, 11),
    "limits.max_tcp_queries_per_connection": (
        "12", lambda c: c.limits.max_tcp_queries_per_connection, 12),
    "limits.tcp_idle_timeout": ("2.5", lambda c: c.limits.tcp_idle_timeout, 2.5),
    "limits.max_upstream_tcp": ("13", lambda c: c.limits.max_upstream_tcp, 13),
    "limits.ingress_batch": ("14", lambda c: c.limits.ingress_batch, 14),
    "limits.ingress_queue_bytes": ("131072", lambda c: c.limits.ingress_queue_bytes, 131072),
    "query_log": ("true", lambda c: c.query_log, True),
    "pvds[].name": ("x", lambda c: c.pvds[0].name, "x"),
    "pvds[].interface": ("eth1", lambda c: c.pvds[0].interface, "eth1"),
    "pvds[].servers": ('["192.0.2.1"]', lambda c: [str(s) for s in c.pvds[0].servers],
                       ["192.0.2.1"]),
    "pvds[].domains": ('["~a.example"]', lambda c: [str(d) for d in c.pvds[0].domains],
                       ["~a.example"]),
    "pvds[].default_route": ("true", lambda c: c.pvds[0].default_route, True),
    "pvds[].exclusive": ("true", lambda c: c.pvds[0].exclusive, True),
    "pvds[].trust_ad": ("true", lambda c: c.pvds[0].trust_ad, True),
    "pvds[].networks": ('["192.0.2.0/24"]', lambda c: [str(n) for n in c.pvds[0].networks],
                        ["192.0.2.0/24"]),
    "pvds[].dns64.prefix": ('"64:ff9b::/96"', lambda c: c.pvds[0].dns64.prefix, "64:ff9b::/96"),
    "pvds[].dns64.synthesize": ("true", lambda c: c.pvds[0].dns64.synthesize, True),
    "pvds[].captive_portal": ("https://portal.example/api", lambda c: c.pvds[0].captive_portal,
                              "https://portal.example/api"),
    "pvds[].captive_domains": ('["portal.example"]',
                               lambda c: [str(d) for d in c.pvds[0].captive_domains],
                               ["portal.example"]),
}  # fmt: skip
SECTIONS = {"cache", "resolv_conf", "metrics", "upstream", "limits", "pvds", "pvds[].dns64"}


def test_every_documented_key_is_loaded_into_the_config_and_nothing_else_is():
    assert set(reference_keys()) - SECTIONS == set(SAMPLES)
    top: dict[str, str] = {}
    sections: dict[str, dict[str, str]] = {}
    pvd: dict[str, str] = {}
    dns64: dict[str, str] = {}
    for path, (value, _, _) in SAMPLES.items():
        if path.startswith("pvds[].dns64."):
            dns64[path.rsplit(".", 1)[1]] = value
        elif path.startswith("pvds[]."):
            pvd[path.split(".", 1)[1]] = value
        elif "." in path:
            section, key = path.split(".")
            sections.setdefault(section, {})[key] = value
        else:
            top[path] = value
    lines = [f"{k}: {v}" for k, v in top.items()]
    for section, keys in sections.items():
        lines += [f"{section}:"] + [f"  {k}: {v}" for k, v in keys.items()]
    lines += ["pvds:", "  - dns64:"] + [f"      {k}: {v}" for k, v in dns64.items()]
    lines += [f"    {k}: {v}" for k, v in pvd.items()]
    config = parse_config("\n".join(lines) + "\n", SRC)
    defaults = default_config()
    for path, (_, get, expected) in SAMPLES.items():
        assert get(config) == expected, path
        if not path.startswith("pvds"):
            assert get(defaults) != expected, f"{path}: sample must differ from the default"


def test_every_documented_environment_variable_is_applied():
    assert set(ENV_VARS) == {
        "MIFDNS_LISTEN", "MIFDNS_CONTROL_SOCKET", "MIFDNS_NETLINK", "MIFDNS_QUERY_LOG",
        "MIFDNS_METRICS_LISTEN",
    }  # fmt: skip
    for var in ENV_VARS:
        assert f"`{var}`" in config_reference_markdown()


# --------------------------------------------------------------------------- error classes


def test_bad_server_address_names_file_line_and_key_path():
    text = PVD + "  - name: lab\n    interface: eth0\n    servers: ['10.0.0.300']\n"
    assert one_problem(text) == (
        "mifdns.yaml:6: pvds[1].servers[0]: '10.0.0.300': not an IP address"
    )


def test_duplicate_pvd_name_points_at_the_first():
    text = PVD + "  - {name: lab, interface: eth0}\n  - name: corp\n    interface: eth1\n"
    assert one_problem(text) == (
        "mifdns.yaml:5: pvds[2].name: duplicate PvD name 'corp' (first at pvds[0])"
    )


def test_missing_required_key_is_reported_at_the_entry():
    text = "pvds:\n  - name: corp\n    servers: []\n"
    assert one_problem(text) == "mifdns.yaml:2: pvds[0]: missing required key 'interface'"


def test_non_integer_value_is_quoted_in_the_error():
    assert one_problem("cache:\n  max_entries: lots\n") == (
        "mifdns.yaml:2: cache.max_entries: expected an integer, got 'lots'"
    )


def test_unknown_key_suggests_the_closest_known_key():
    assert one_problem("lisen: ['127.0.0.53']\n") == (
        "mifdns.yaml:1: lisen: unknown key (did you mean 'listen'?)"
    )


def test_unknown_key_in_a_section_and_in_a_pvd_is_reported_at_the_key_line():
    found = problems("cache:\n  max_entires: 5\n" + PVD + "    exclusiv: true\n")
    assert found == [
        "mifdns.yaml:2: cache.max_entires: unknown key (did you mean 'max_entries'?)",
        "mifdns.yaml:6: pvds[0].exclusiv: unknown key (did you mean 'exclusive'?)",
    ]


def test_unknown_key_with_nothing_close_has_no_suggestion():
    assert one_problem("zzz: 1\n") == "mifdns.yaml:1: zzz: unknown key"


@pytest.mark.parametrize("text, got", [("- a\n- b\n", "a list"), ("42\n", "42"),
                                       ("hello\n", "'hello'")])  # fmt: skip
def test_top_level_must_be_a_mapping(text, got):
    assert one_problem(text) == (
        f"mifdns.yaml:1: expected a mapping of keys at the top level, got {got}"
    )


def test_wrong_section_type_is_reported():
    assert one_problem("cache: 5\n") == "mifdns.yaml:1: cache: expected a mapping, got 5"
    assert one_problem("pvds: {name: x}\n") == "mifdns.yaml:1: pvds: expected a list, got a mapping"


def test_unreadable_file_is_one_line_with_the_os_error(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(str(missing))
    assert info.value.problems == [f"{missing}: cannot read: No such file or directory"]
    assert info.value.source == str(missing)
    with pytest.raises(ConfigError) as info:
        load_config(str(tmp_path))
    assert info.value.problems == [f"{tmp_path}: cannot read: Is a directory"]


def test_non_utf8_file_is_one_line(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"query_log: true\n# caf\xe9\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert info.value.problems == [f"{path}:2: not UTF-8 text"]


def test_yaml_syntax_error_is_one_line_with_line_and_column():
    found = problems("listen: ['127.0.0.53'\ncache: {max_ttl: 5}\n")
    assert len(found) == 1
    assert re.fullmatch(r"mifdns\.yaml:2:\d+: invalid YAML: .+", found[0]), found
    bad_indent = problems("cache:\n  max_ttl: 5\n bad: 1\n")
    assert re.fullmatch(r"mifdns\.yaml:3:2: invalid YAML: .+", bad_indent[0]), bad_indent


def test_every_problem_is_reported_at_once_in_file_order():
    text = """\
    listen: ["127.0.0.1:99999"]
    lisen: x
    cache: {max_entries: 0, max_ttl: soon}
    netlink: "yes"
    pvds:
      - name: "a b"
        interface: "way-too-long-ifname"
        servers: ["10.0.0.300", "1.2.3.4:0"]
        networks: ["10.8.0.1/16"]
    """
    found = problems(text)
    assert found == [
        "mifdns.yaml:1: listen[0]: '127.0.0.1:99999': port must be 1-65535",
        "mifdns.yaml:2: lisen: unknown key (did you mean 'listen'?)",
        "mifdns.yaml:3: cache.max_entries: must be between 1 and 100000000, got 0",
        "mifdns.yaml:3: cache.max_ttl: expected an integer, got 'soon'",
        "mifdns.yaml:4: netlink: expected a boolean (true or false), got 'yes'",
        "mifdns.yaml:6: pvds[0].name: 'a b': must be 1-64 characters of A-Z a-z 0-9 _ . -",
        (
            "mifdns.yaml:7: pvds[0].interface: 'way-too-long-ifname': not a Linux interface name "
            "(1-15 characters, no '/', ':' or whitespace)"
        ),
        "mifdns.yaml:8: pvds[0].servers[0]: '10.0.0.300': not an IP address",
        "mifdns.yaml:8: pvds[0].servers[1]: '1.2.3.4:0': port must be 1-65535",
        (
            "mifdns.yaml:9: pvds[0].networks[0]: '10.8.0.1/16': host bits set "
            "(the network is 10.8.0.0/16)"
        ),
    ]


def test_str_of_the_error_is_the_problem_lines_without_a_traceback():
    with pytest.raises(ConfigError) as info:
        parse_config("cache: {max_entries: lots}\nzzz: 1\n", SRC)
    assert str(info.value) == "\n".join(info.value.problems)
    assert info.value.source == SRC


@pytest.mark.parametrize("path, value, message", [
    ("cache.max_entries", "0", "must be between 1 and 100000000, got 0"),
    ("cache.max_ttl", "9999999", "must be between 1 and 604800, got 9999999"),
    ("cache.negative_max_ttl", "-1", "must be between 0 and 86400, got -1"),
    ("upstream.timeout", "0", "must be greater than 0 and at most 30, got 0.0"),
    ("upstream.edns_udp_size", "100", "must be between 512 and 4096, got 100"),
    ("upstream.queries_per_port", "0", "must be between 1 and 256, got 0"),
    ("limits.tcp_idle_timeout", "-2.5", "must be greater than 0 and at most 3600, got -2.5"),
    ("limits.max_tcp_clients", "70000", "must be between 1 and 65535, got 70000"),
    ("upstream.timeout", ".nan", "expected a finite number, got nan"),
    ("upstream.timeout", "1s", "expected a number, got '1s'"),
    ("cache.max_entries", "1.5", "expected an integer, got 1.5"),
    ("cache.max_entries", "true", "expected an integer, got true"),
])  # fmt: skip
def test_numbers_outside_their_range_say_the_range(path, value, message):
    section, key = path.split(".")
    assert one_problem(f"{section}:\n  {key}: {value}\n") == f"mifdns.yaml:2: {path}: {message}"


@pytest.mark.parametrize("value, got", [('"yes"', "'yes'"), ("1", "1"), ("null", "null")])
def test_boolean_keys_reject_everything_but_booleans(value, got):
    assert one_problem(f"netlink: {value}\n") == (
        f"mifdns.yaml:1: netlink: expected a boolean (true or false), got {got}"
    )


def test_yaml_1_1_booleans_are_booleans():
    assert load("netlink: no\nquery_log: on\n").netlink is False
    assert load("query_log: yes\n").query_log is True


def test_unquoted_yaml_boolean_where_a_string_is_expected_says_to_quote_it():
    text = "pvds:\n  - name: no\n    interface: eth0\n"
    assert one_problem(text) == (
        "mifdns.yaml:2: pvds[0].name: expected a string, got false "
        '(YAML reads unquoted no as a boolean; quote it: "no")'
    )


def test_duplicate_yaml_key_is_an_error():
    assert one_problem("netlink: true\nquery_log: true\nnetlink: false\n") == (
        "mifdns.yaml:3: netlink: duplicate key (first at line 1)"
    )


def test_non_string_key_is_an_error():
    assert one_problem("1: x\n") == "mifdns.yaml:1: 1: keys must be strings, got 1"


@pytest.mark.parametrize("text", [
    "listen: !!python/object:os.system x\n",
    "cache: !custom {max_ttl: 5}\n",
    "a: &a [*a]\n",
    "a: &a {b: *a}\n",
])  # fmt: skip
def test_hostile_or_odd_yaml_is_a_config_error_not_a_traceback(text):
    assert problems(text)


def test_alias_bomb_is_refused():
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 8)]
    found = problems("\n".join(lines) + "\n")
    assert found == ["mifdns.yaml: more than 200000 values (alias expansion?)"]


def test_yaml_anchors_and_merge_keys_work():
    config = load("pvds:\n  - &w {name: a, interface: eth0}\n  - &m {<<: *w, name: b}\n")
    assert [(p.name, p.interface) for p in config.pvds] == [("a", "eth0"), ("b", "eth0")]
    text = "x: &m {<<: {max_ttl: 5}, max_entries: 9}\ncache: *m\n"
    assert one_problem(text) == "mifdns.yaml:1: x: unknown key"  # the alias is merged once
    assert one_problem("cache: {<<: {max_ttl: 5}, max_ttl: 6, max_ttl: 7}\n") == (
        "mifdns.yaml:1: cache.max_ttl: duplicate key (first at line 1)"
    )


# -------------------------------------------------------------------------------- listen


@pytest.mark.parametrize("text, address, port", [
    ("127.0.0.53", "127.0.0.53", 53),
    ("127.0.0.53:53", "127.0.0.53", 53),
    ("127.0.0.1:5353", "127.0.0.1", 5353),
    ("::1", "::1", 53),
    ("[::1]", "::1", 53),
    ("[::1]:5353", "::1", 5353),
    (" [fe80::1%lo]:53 ", "fe80::1%lo", 53),
])  # fmt: skip
def test_listen_addr_parses_addr_and_addr_port_forms(text, address, port):
    parsed = ListenAddr.parse(text)
    assert (str(parsed.address), parsed.port) == (address, port)
    assert ListenAddr.parse(str(parsed)) == parsed


def test_listen_addr_canonical_form_always_has_the_port():
    assert str(ListenAddr.parse("127.0.0.53")) == "127.0.0.53:53"
    assert str(ListenAddr.parse("::1")) == "[::1]:53"
    assert ListenAddr.parse("[::1]:853").sockaddr() == ("::1", 853)


@pytest.mark.parametrize("text, message", [
    ("localhost:53", "'localhost:53': not an IP address"),
    ("127.0.0.1:0", "'127.0.0.1:0': port must be 1-65535"),
    ("127.0.0.1:http", "'127.0.0.1:http': port must be 1-65535"),
    ("[::1", "'[::1': unbalanced '['"),
    ("[::1]53", "'[::1]53': expected ':PORT' after ']'"),
    ("[127.0.0.1]:53", "'[127.0.0.1]:53': brackets are for IPv6 addresses only"),
])  # fmt: skip
def test_listen_addr_rejects_bad_forms(text, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        ListenAddr.parse(text)


@pytest.mark.parametrize("port", ["\uff15\uff13", "0053535", "65536", "-1", ""])
def test_listen_and_server_addresses_share_one_port_rule(port):
    """Both forms go through split_host_port/parse_port: full-width digits, six digits and
    out-of-range ports are refused the same way."""
    for parse in (ListenAddr.parse, parse_server):
        with pytest.raises(ValueError, match="port must be 1-65535"):
            parse(f"192.0.2.1:{port}")
        with pytest.raises(ValueError, match="port must be 1-65535"):
            parse(f"[2001:db8::1]:{port}")


def test_listen_list_must_not_be_empty_nor_repeat_an_address():
    assert one_problem("listen: []\n") == "mifdns.yaml:1: listen: must list at least one address"
    assert one_problem("listen: ['127.0.0.53', '127.0.0.53:53']\n") == (
        "mifdns.yaml:1: listen[1]: '127.0.0.53:53': duplicate of listen[0]"
    )


def test_a_wildcard_listen_address_excludes_others_of_its_family_and_port():
    """The kernel would refuse the second bind (no SO_REUSEADDR): say so at check time."""
    assert one_problem("listen: ['127.0.0.53', '0.0.0.0']\n") == (
        "mifdns.yaml:1: listen: 127.0.0.53:53 and the wildcard 0.0.0.0:53 cannot both be "
        "listened on (the wildcard answers on every address of the host)"
    )
    assert one_problem("listen: ['[::]:53', '[2001:db8::1]:53']\n").startswith(
        "mifdns.yaml:1: listen: [2001:db8::1]:53 and the wildcard [::]:53"
    )
    ok = load("listen: ['0.0.0.0', '[::]', '127.0.0.53:5353']\nnetlink: false\n")
    assert [str(a) for a in ok.listen] == ["0.0.0.0:53", "[::]:53", "127.0.0.53:5353"]


def test_metrics_listen_needs_a_port_and_is_stored_canonically():
    assert load("metrics: {listen: '[::1]:9153'}\n").metrics.listen == "[::1]:9153"
    assert load("metrics: {listen: '[::1]:9153'}\n").metrics.address == ListenAddr.parse(
        "[::1]:9153"
    )
    assert one_problem("metrics:\n  listen: 127.0.0.1\n") == (
        "mifdns.yaml:2: metrics.listen: '127.0.0.1': missing ':PORT'"
    )


def test_control_socket_must_fit_a_unix_socket_address():
    long = "/run/" + "x" * 120
    assert one_problem(f"control_socket: {long}\n") == (
        f"mifdns.yaml:1: control_socket: {long!r} is too long for a Unix socket path "
        "(125 bytes, at most 107)"
    )


def test_timeout_above_total_timeout_is_an_error():
    assert one_problem("upstream:\n  timeout: 5\n") == (
        "mifdns.yaml:2: upstream.timeout: 5.0 exceeds upstream.total_timeout (3.0)"
    )


def test_pvd_server_that_is_our_own_listen_address_is_a_loop():
    text = PVD + "    servers: ['127.0.0.53']\n"
    assert one_problem(text) == (
        "mifdns.yaml:4: pvds[0].servers[0]: 127.0.0.53 is one of mifdns's own listen "
        "addresses (queries would loop)"
    )


# ------------------------------------------------------------------------------- PvD keys


def test_pvd_with_only_name_and_interface_is_valid_with_defaults():
    (spec,) = load(PVD).pvds
    assert spec == PvdSpec(name="corp", interface="tun0", origin="config")


def test_servers_accept_addr_port_and_bracketed_ipv6_port():
    text = PVD + "    servers: ['198.51.100.53', '198.51.100.54:5353', '[2001:db8::53]:5353']\n"
    (spec,) = load(text).pvds
    assert spec.servers == (
        ServerAddr(ipaddress.ip_address("198.51.100.53"), 53),
        ServerAddr(ipaddress.ip_address("198.51.100.54"), 5353),
        ServerAddr(ipaddress.ip_address("2001:db8::53"), 5353),
    )


def test_link_local_server_gets_the_interface_as_scope():
    text = PVD + "    servers: ['fe80::1', '[fe80::2%tun0]:5353', '2001:db8::1']\n"
    (spec,) = load(text).pvds
    assert [s.scope for s in spec.servers] == ["tun0", "tun0", None]
    assert str(spec.servers[0]) == "fe80::1%tun0"


def test_link_local_server_scoped_to_another_interface_is_an_error():
    text = PVD + "    servers: ['fe80::1%eth0']\n"
    assert one_problem(text) == (
        "mifdns.yaml:4: pvds[0].servers[0]: 'fe80::1%eth0': scope %eth0 is not the PvD's "
        "interface tun0"
    )


@pytest.mark.parametrize(
    "server, why",
    [
        ("0.0.0.0", "the unspecified address"),
        ("224.0.0.251", "a multicast address"),
        ("::", "the unspecified address"),
        ("255.255.255.255", "the broadcast address"),
    ],
)
def test_server_must_be_unicast(server, why):
    assert one_problem(PVD + f"    servers: ['{server}']\n") == (
        f"mifdns.yaml:4: pvds[0].servers[0]: '{server}': not a unicast address ({why})"
    )


def test_a_server_is_a_loop_if_mifdns_listens_on_it_or_on_a_wildcard_and_it_is_local():
    import ipaddress

    from mifdns.config import ListenAddr, looping_servers
    from mifdns.core.pvd import Domain, PvdSpec, parse_server

    def spec(*servers: str) -> PvdSpec:
        return PvdSpec(
            name="p",
            interface="eth0",
            servers=tuple(parse_server(s, "eth0") for s in servers),
            domains=(Domain.parse("example"),),
        )

    explicit = [ListenAddr.parse("127.0.0.53")]
    assert looping_servers(spec("127.0.0.53", "127.0.0.53:5353"), explicit) == [
        parse_server("127.0.0.53")
    ]
    assert looping_servers(spec("[::ffff:127.0.0.53]"), explicit) == [parse_server("127.0.0.53")]
    wild = [ListenAddr.parse("0.0.0.0:53")]
    host = {ipaddress.ip_address("203.0.113.2")}
    got = looping_servers(
        spec("203.0.113.2", "127.0.0.1", "198.51.100.1", "2001:db8::1"), wild, host.__contains__
    )
    assert [str(s) for s in got] == ["203.0.113.2", "127.0.0.1"]  # not another host, not IPv6
    assert looping_servers(spec("203.0.113.2:5353"), wild, host.__contains__) == []  # port


def test_repeated_server_is_an_error():
    assert one_problem(PVD + "    servers: ['192.0.2.1', '192.0.2.1:53']\n") == (
        "mifdns.yaml:4: pvds[0].servers[1]: '192.0.2.1:53': duplicate of pvds[0].servers[0]"
    )


def test_pvd_without_servers_is_valid():
    (spec,) = load(PVD + "    servers: []\n").pvds
    assert spec.servers == ()


def test_domains_keep_routing_only_and_search_forms():
    (spec,) = load(PVD + "    domains: ['~corp.example', 'Corp.Example.', '~.']\n").pvds
    assert spec.domains == (
        Domain("corp.example", True), Domain("corp.example", False), Domain("", True),
    )  # fmt: skip
    assert spec.search_domains == ("corp.example",)


@pytest.mark.parametrize("domain, message", [
    ("a..b", "'a..b': not a valid domain name"),
    (".", "'.': the root can only be a routing domain ('~.')"),
    ("bücher.example", ("'bücher.example': not ASCII; write an internationalized name in its "
                        "xn-- form")),
    ("*.corp.example", ("'*.corp.example': no wildcards; a domain already covers every name "
                        "under it")),
    ("corp example", ("'corp example': ' ' has no place in a domain name (letters, digits, '-' "
                      "and '_' only)")),
])  # fmt: skip
def test_bad_domains_are_errors(domain, message):
    assert one_problem(PVD + f"    domains: ['{domain}']\n") == (
        f"mifdns.yaml:4: pvds[0].domains[0]: {message}"
    )


def test_network_with_host_bits_set_names_the_network():
    assert one_problem(PVD + "    networks: ['10.8.0.1/16']\n") == (
        "mifdns.yaml:4: pvds[0].networks[0]: '10.8.0.1/16': host bits set "
        "(the network is 10.8.0.0/16)"
    )
    assert one_problem(PVD + "    networks: ['10.8/16']\n") == (
        "mifdns.yaml:4: pvds[0].networks[0]: '10.8/16': not a network (CIDR such as 10.8.0.0/16)"
    )


def test_networks_accept_ipv4_and_ipv6():
    (spec,) = load(PVD + "    networks: ['10.8.0.0/16', '2001:db8:8::/48']\n").pvds
    assert spec.networks == (
        ipaddress.ip_network("10.8.0.0/16"), ipaddress.ip_network("2001:db8:8::/48"),
    )  # fmt: skip


@pytest.mark.parametrize("ifname", ["tun0", "wlp0s20f3", "eth0.100", "veth-a_b", "x" * 15])
def test_valid_linux_interface_names(ifname):
    (spec,) = load(f"pvds:\n  - name: a\n    interface: '{ifname}'\n").pvds
    assert spec.interface == ifname


@pytest.mark.parametrize("ifname", ["x" * 16, "a/b", "eth0:1", "a b", "..", ""])
def test_invalid_linux_interface_names(ifname):
    assert one_problem(f"pvds:\n  - name: a\n    interface: '{ifname}'\n") == (
        f"mifdns.yaml:3: pvds[0].interface: {ifname!r}: not a Linux interface name "
        "(1-15 characters, no '/', ':' or whitespace)"
    )


@pytest.mark.parametrize("name", ["", "a b", "x" * 65, "corp/vpn"])
def test_invalid_pvd_names(name):
    assert one_problem(f"pvds:\n  - name: '{name}'\n    interface: eth0\n") == (
        f"mifdns.yaml:2: pvds[0].name: {name!r}: must be 1-64 characters of A-Z a-z 0-9 _ . -"
    )


def test_default_route_is_true_false_or_null_for_auto():
    assert load(PVD + "    default_route: null\n").pvds[0].default_route is None
    assert load(PVD + "    default_route: false\n").pvds[0].default_route is False
    assert one_problem(PVD + "    default_route: auto\n") == (
        "mifdns.yaml:4: pvds[0].default_route: expected a boolean (true or false) or null, "
        "got 'auto'"
    )


@pytest.mark.parametrize("text, expected", [
    ("dns64: auto", Dns64Spec("auto")),
    ("dns64: none", Dns64Spec("none")),
    ("dns64: '64:ff9b::/96'", Dns64Spec("64:ff9b::/96")),
    ("dns64: 64:ff9b::/96", Dns64Spec("64:ff9b::/96")),
    ("dns64: null", Dns64Spec()),
    ("dns64: {prefix: auto}", Dns64Spec("auto")),
    ("dns64: {prefix: auto, synthesize: true}", Dns64Spec("auto", True)),
    ("dns64: {prefix: '2001:db8:64::/64', synthesize: true}", Dns64Spec("2001:db8:64::/64", True)),
    ("dns64: {}", Dns64Spec()),
])  # fmt: skip
def test_dns64_short_and_long_forms(text, expected):
    (spec,) = load(PVD + f"    {text}\n").pvds
    assert spec.dns64 == expected


@pytest.mark.parametrize("text, path, message", [
    ("dns64: '64:ff9b::/80'", "dns64",
     "'64:ff9b::/80': an RFC 6052 prefix is /32, /40, /48, /56, /64 or /96"),
    ("dns64: {prefix: '192.0.2.0/24'}", "dns64.prefix", "'192.0.2.0/24': a NAT64 prefix is IPv6"),
    ("dns64: {prefix: '64:ff9b::1/96'}", "dns64.prefix",
     "'64:ff9b::1/96': host bits set (the prefix is 64:ff9b::/96)"),
    ("dns64: {prefix: '64:ff9b:0:0:ff00::/96'}", "dns64.prefix",
     "'64:ff9b:0:0:ff00::/96': bits 64-71 of an RFC 6052 prefix must be zero"),
    ("dns64: {prefix: sometimes}", "dns64.prefix",
     "'sometimes': expected 'auto', 'none' or an IPv6 prefix"),
    ("dns64: {synthesize: true}", "dns64.synthesize",
     "needs a prefix ('auto' or a static prefix)"),
    ("dns64: {prefix: auto, synth: true}", "dns64.synth",
     "unknown key (did you mean 'synthesize'?)"),
    ("dns64: true", "dns64",
     "expected a mapping or 'auto', 'none' or an IPv6 prefix, got true"),
])  # fmt: skip
def test_dns64_errors(text, path, message):
    assert one_problem(PVD + f"    {text}\n") == f"mifdns.yaml:4: pvds[0].{path}: {message}"


def test_captive_portal_is_an_https_uri_or_null():
    (spec,) = load(PVD + "    captive_portal: https://portal.example/api\n").pvds
    assert spec.captive_portal == "https://portal.example/api"
    assert load(PVD + "    captive_portal: null\n").pvds[0].captive_portal is None


@pytest.mark.parametrize("uri", ["http://portal.example/", "https://", "https://[::1",
                                 "portal.example", "https://portal.example:0/"])  # fmt: skip
def test_captive_portal_that_is_not_an_https_uri_is_an_error(uri):
    assert one_problem(PVD + f"    captive_portal: '{uri}'\n") == (
        f"mifdns.yaml:4: pvds[0].captive_portal: {uri!r}: must be an https:// URI (RFC 8908)"
    )


def test_captive_domains_are_domains():
    (spec,) = load(PVD + "    captive_domains: [portal.example]\n").pvds
    assert spec.captive_domains == (Domain("portal.example"),)
    assert one_problem(PVD + "    captive_domains: ['a..b']\n") == (
        "mifdns.yaml:4: pvds[0].captive_domains[0]: 'a..b': not a valid domain name"
    )


def test_list_keys_reject_a_bare_string():
    assert one_problem(PVD + "    servers: 192.0.2.1\n") == (
        "mifdns.yaml:4: pvds[0].servers: expected a list, got '192.0.2.1'"
    )


# -------------------------------------------------------------------- pvd_spec_from_mapping


def test_pvd_spec_from_mapping_builds_a_runtime_spec():
    spec = pvd_spec_from_mapping({
        "name": "vpn2", "interface": "wg0", "servers": ["fe80::53"],
        "domains": ["~lab.example"], "dns64": "auto",
    })  # fmt: skip
    assert spec.origin == "runtime"
    assert spec.servers == (ServerAddr(ipaddress.ip_address("fe80::53"), 53, "wg0"),)
    assert spec.dns64 == Dns64Spec("auto")
    assert pvd_spec_from_mapping({"name": "a", "interface": "b"}, origin="resolvconf").origin == (
        "resolvconf"
    )


def test_pvd_spec_from_mapping_reports_every_problem_under_where():
    with pytest.raises(ConfigError) as info:
        pvd_spec_from_mapping({"interface": "wg0", "servers": ["x"], "bogus": 1}, where="attach")
    assert info.value.problems == [
        "attach.bogus: unknown key",
        "attach: missing required key 'name'",
        "attach.servers[0]: 'x': not an IP address",
    ]
    assert info.value.source == ""


def test_pvd_spec_from_mapping_rejects_a_non_mapping():
    with pytest.raises(ConfigError) as info:
        pvd_spec_from_mapping(["corp"])  # type: ignore[arg-type]
    assert info.value.problems == ["pvd: expected a mapping, got a list"]


def test_pvd_spec_from_mapping_does_not_accept_origin_as_a_key():
    with pytest.raises(ConfigError) as info:
        pvd_spec_from_mapping({"name": "a", "interface": "b", "origin": "config"})
    assert info.value.problems == ["pvd.origin: unknown key"]


# ------------------------------------------------------------------- environment overrides


def test_env_overrides_each_variable():
    env = {
        "MIFDNS_LISTEN": "127.0.0.1:5353, [::1]:5353",
        "MIFDNS_CONTROL_SOCKET": "/tmp/ctl.sock",
        "MIFDNS_NETLINK": "false",
        "MIFDNS_QUERY_LOG": "ON",
        "MIFDNS_METRICS_LISTEN": "0.0.0.0:9153",
        "UNRELATED": "x",
    }
    config = apply_env(load(PVD), env)
    assert [str(a) for a in config.listen] == ["127.0.0.1:5353", "[::1]:5353"]
    assert config.control_socket == "/tmp/ctl.sock"
    assert config.netlink is False and config.query_log is True
    assert config.metrics.listen == "0.0.0.0:9153"
    assert [p.name for p in config.pvds] == ["corp"] and config.source == SRC


def test_env_without_variables_changes_nothing_and_empty_means_unset():
    config = load(PVD)
    assert apply_env(config, {}) == config
    assert apply_env(config, {"MIFDNS_LISTEN": "", "MIFDNS_NETLINK": " "}) == config


def test_env_metrics_listen_can_turn_metrics_off():
    config = load("metrics: {listen: '127.0.0.1:9153'}\n")
    assert apply_env(config, {"MIFDNS_METRICS_LISTEN": "off"}).metrics.listen is None


@pytest.mark.parametrize("var, value, message", [
    ("MIFDNS_LISTEN", "127.0.0.1,nope", "MIFDNS_LISTEN: 'nope': not an IP address"),
    ("MIFDNS_LISTEN", ",", "MIFDNS_LISTEN: ',': no address"),
    ("MIFDNS_LISTEN", "::1,[::1]:53", "MIFDNS_LISTEN: '::1,[::1]:53': [::1]:53 is listed twice"),
    ("MIFDNS_LISTEN", "0.0.0.0,127.0.0.1", ("MIFDNS_LISTEN: '0.0.0.0,127.0.0.1': 127.0.0.1:53 "
     "and the wildcard 0.0.0.0:53 cannot both be listened on (the wildcard answers on every "
     "address of the host)")),
    ("MIFDNS_NETLINK", "maybe", "MIFDNS_NETLINK: expected true or false, got 'maybe'"),
    ("MIFDNS_QUERY_LOG", "2", "MIFDNS_QUERY_LOG: expected true or false, got '2'"),
    ("MIFDNS_METRICS_LISTEN", "127.0.0.1", "MIFDNS_METRICS_LISTEN: '127.0.0.1': missing ':PORT'"),
    ("MIFDNS_CONTROL_SOCKET", "/" + "x" * 200,
     "MIFDNS_CONTROL_SOCKET: '/" + "x" * 200 + "' is too long for a Unix socket path "
     "(201 bytes, at most 107)"),
])  # fmt: skip
def test_bad_env_value_names_the_variable(var, value, message):
    with pytest.raises(ConfigError) as info:
        apply_env(default_config(), {var: value})
    assert info.value.problems == [message]
    assert info.value.source == "environment"


def test_all_bad_env_variables_are_reported_together():
    with pytest.raises(ConfigError) as info:
        apply_env(default_config(), {"MIFDNS_NETLINK": "x", "MIFDNS_QUERY_LOG": "y"})
    assert len(info.value.problems) == 2
