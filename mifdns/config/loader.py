"""Checks: YAML values -> Config, every problem collected as one line with its key path.

See mifdns/config/__init__.py for the theory of operation.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields, is_dataclass, replace
from typing import Any
from urllib.parse import urlsplit

import yaml

from mifdns.core.pvd import (
    Dns64Spec,
    Domain,
    IPAddress,
    IPNetwork,
    PvdSpec,
    ServerAddr,
    parse_server,
    unusable_server,
)
from mifdns.errors import ConfigError

from .model import (
    _DNS64_KEYS,
    _FALSE,
    _NAME_RE,
    _PVD_KEYS,
    _TRUE,
    ENV_VARS,
    Config,
    ListenAddr,
    default_config,
)
from .values import (
    _Bad,
    _describe,
    _dns64_prefix,
    _hints,
    _join,
    _kind,
    _parent,
    _Plain,
    _scalar_type,
    _suggest,
    _unix_path,
    _valid_ifname,
)

# ------------------------------------------------------------------------------------ checks


_BAD = object()


class _Loader:
    """Checks plain values against the schema, collecting every problem."""

    def __init__(self, source: str = "", plain: _Plain | None = None) -> None:
        self.source = source
        self.plain = plain or _Plain()
        self.problems: list[tuple[int, str]] = list(self.plain.problems)

    # reporting

    def problem(self, path: str, message: str, *, at_key: bool = False) -> None:
        table = self.plain.key_lines if at_key else self.plain.lines
        probe = path
        while probe and probe not in table and probe not in self.plain.lines:
            probe = _parent(probe)  # a missing key: report at the nearest located parent
        line = table.get(probe) or self.plain.lines.get(probe, 0)
        self.problems.append((line, f"{path}: {message}" if path else message))

    def error(self) -> ConfigError | None:
        if not self.problems:
            return None
        lines = []
        for line, text in sorted(self.problems, key=lambda p: p[0]):
            where = (
                f"{self.source}:{line}: "
                if self.source and line
                else (f"{self.source}: " if self.source else "")
            )
            lines.append(where + text)
        return _config_error(lines, self.source)

    # typed values

    def expect(
        self,
        value: Any,
        base: type,
        path: str,
        *,
        optional: bool = False,
        meta: Mapping[str, Any] | None = None,
    ) -> Any:
        """``value`` as ``base`` (bool, int, float, str, list, dict) or _BAD after a problem."""
        meta = meta or {}
        if value is None and optional:
            return None
        ok = {
            bool: isinstance(value, bool),
            int: isinstance(value, int) and not isinstance(value, bool),
            float: isinstance(value, (int, float)) and not isinstance(value, bool),
            str: isinstance(value, str),
            list: isinstance(value, list),
            dict: isinstance(value, dict),
        }[base]
        if not ok:
            want = {
                bool: "a boolean (true or false)",
                int: "an integer",
                float: "a number",
                str: "a string",
                list: "a list",
                dict: "a mapping",
            }[base]
            if optional:
                want += " or null"
            hint = ""
            raw = self.plain.unquoted.get(path)
            if base is str and raw is not None and value is not None:
                hint = f' (YAML reads unquoted {raw} as {_kind(value)}; quote it: "{raw}")'
            self.problem(path, f"expected {want}, got {_describe(value)}{hint}")
            return _BAD
        if base is float:
            value = float(value)
            if not math.isfinite(value):
                self.problem(path, f"expected a finite number, got {value}")
                return _BAD
        if base in (int, float) and not _in_range(value, meta):
            self.problem(path, f"must be {_range_text(meta)}, got {value}")
            return _BAD
        if base is str and meta.get("nonempty") and not value:
            self.problem(path, "must not be empty")
            return _BAD
        return value

    def mapping(self, value: Any, path: str, known: list[str]) -> dict[str, Any] | None:
        """``value`` as a mapping with only ``known`` keys (null is empty), or None."""
        if value is None:
            return {}
        if self.expect(value, dict, path) is _BAD:
            return None
        for key in value:
            if not isinstance(key, str):
                self.problem(
                    _join(path, key), f"keys must be strings, got {_describe(key)}", at_key=True
                )
            elif key not in known:
                self.problem(_join(path, key), "unknown key" + _suggest(key, known), at_key=True)
        return {k: v for k, v in value.items() if isinstance(k, str) and k in known}

    def each(self, value: Any, path: str, parse: Any) -> list[Any]:
        """Parse each string of a list with ``parse`` (ValueError/_Bad -> problem); duplicates
        are problems too. Returns the good items."""
        if value is None or self.expect(value, list, path) is _BAD:
            return []
        out: list[Any] = []
        seen: dict[Any, int] = {}
        for i, item in enumerate(value):
            sub = f"{path}[{i}]"
            if self.expect(item, str, sub) is _BAD:
                continue
            try:
                parsed = parse(item)
            except (ValueError, _Bad) as exc:
                self.problem(sub, str(exc))
                continue
            if parsed in seen:
                self.problem(sub, f"{item!r}: duplicate of {path}[{seen[parsed]}]")
                continue
            seen[parsed] = i
            out.append(parsed)
        return out

    # sections

    def section(self, cls: type, value: Any, path: str) -> Any:
        keys = [f.name for f in fields(cls) if f.metadata.get("key", True)]
        data = self.mapping(value, path, keys)
        if data is None:
            return cls()
        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in data:
                continue
            sub = _join(path, f.name)
            hint = _hints(cls)[f.name]
            if "load" in f.metadata:
                parsed = getattr(self, "load_" + f.metadata["load"])(data[f.name], sub)
            elif isinstance(hint, type) and is_dataclass(hint):
                parsed = self.section(hint, data[f.name], sub)
            else:
                base, optional = _scalar_type(hint)
                parsed = self.expect(data[f.name], base, sub, optional=optional, meta=f.metadata)
            if parsed is not _BAD:
                kwargs[f.name] = parsed
        return cls(**kwargs)

    def load_listen(self, value: Any, path: str) -> Any:
        if self.expect(value, list, path) is _BAD:
            return _BAD
        addrs = self.each(value, path, ListenAddr.parse)
        if not value:
            self.problem(path, "must list at least one address")
        if not addrs or len(addrs) != len(value):
            return _BAD
        clash = listen_clash(addrs)
        if clash:
            self.problem(path, clash)
            return _BAD
        return tuple(addrs)

    def load_unix_path(self, value: Any, path: str) -> Any:
        if self.expect(value, str, path) is _BAD:
            return _BAD
        try:
            return _unix_path(value)
        except _Bad as exc:
            self.problem(path, str(exc))
            return _BAD

    def load_metrics_listen(self, value: Any, path: str) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)  # `listen: 9153`
        if value is None or self.expect(value, str, path, optional=True) is _BAD:
            return None if value is None else _BAD
        try:
            return _metrics_listen(value)
        except ValueError as exc:
            self.problem(path, str(exc))
            return _BAD

    def load_pvds(self, value: Any, path: str) -> Any:
        if value is None:
            return ()
        if self.expect(value, list, path) is _BAD:
            return _BAD
        specs: list[PvdSpec] = []
        first: dict[str, int] = {}
        for i, item in enumerate(value):
            sub = f"{path}[{i}]"
            spec = self.pvd(item, sub, origin="config")
            name = item.get("name") if isinstance(item, dict) else None
            if isinstance(name, str) and _NAME_RE.fullmatch(name):
                if name in first:
                    self.problem(
                        f"{sub}.name",
                        f"duplicate PvD name {name!r} (first at {path}[{first[name]}])",
                    )
                    continue
                first[name] = i
            if spec is not None:
                specs.append(spec)
        return tuple(specs)

    # one PvD

    def pvd(self, value: Any, path: str, *, origin: str) -> PvdSpec | None:
        before = len(self.problems)
        if self.expect(value, dict, path) is _BAD:
            return None
        data = self.mapping(value, path, _PVD_KEYS) or {}
        for required in ("name", "interface"):
            if required not in data:
                self.problem(path, f"missing required key {required!r}")
        name = self.expect(data["name"], str, f"{path}.name") if "name" in data else None
        if isinstance(name, str) and not _NAME_RE.fullmatch(name):
            self.problem(f"{path}.name", f"{name!r}: must be 1-64 characters of A-Z a-z 0-9 _ . -")
        ifname = data.get("interface")
        if ifname is not None or "interface" in data:
            ifname = self.expect(ifname, str, f"{path}.interface")
        if isinstance(ifname, str) and not _valid_ifname(ifname):
            self.problem(
                f"{path}.interface",
                f"{ifname!r}: not a Linux interface name (1-15 characters, no '/', ':' or "
                "whitespace)",
            )
            ifname = None
        scope = ifname if isinstance(ifname, str) else None
        kwargs: dict[str, Any] = {
            "servers": tuple(
                self.each(data.get("servers"), f"{path}.servers", lambda s: _server(s, scope))
            ),
            "domains": tuple(self.each(data.get("domains"), f"{path}.domains", _domain)),
            "networks": tuple(self.each(data.get("networks"), f"{path}.networks", _network)),
            "captive_domains": tuple(
                self.each(data.get("captive_domains"), f"{path}.captive_domains", _domain)
            ),
            "dns64": self.dns64(data.get("dns64"), f"{path}.dns64"),
            "default_route": self.expect(
                data.get("default_route"), bool, f"{path}.default_route", optional=True
            ),
            "exclusive": self.expect(data.get("exclusive", False), bool, f"{path}.exclusive"),
            "trust_ad": self.expect(data.get("trust_ad", False), bool, f"{path}.trust_ad"),
            "captive_portal": self.captive_portal(
                data.get("captive_portal"), f"{path}.captive_portal"
            ),
        }
        if len(self.problems) > before or not isinstance(name, str) or ifname is None:
            return None
        return PvdSpec(name=name, interface=ifname, origin=origin, **kwargs)

    def dns64(self, value: Any, path: str) -> Any:
        if value is None:
            return Dns64Spec()
        if isinstance(value, str):  # the short forms: auto | none | a prefix
            try:
                return Dns64Spec(prefix=_dns64_prefix(value))
            except _Bad as exc:
                self.problem(path, str(exc))
                return _BAD
        if not isinstance(value, dict):
            self.problem(
                path,
                f"expected a mapping or 'auto', 'none' or an IPv6 prefix, got {_describe(value)}",
            )
            return _BAD
        data = self.mapping(value, path, _DNS64_KEYS) or {}
        prefix = self.expect(data.get("prefix", "none"), str, f"{path}.prefix")
        if prefix is not _BAD:
            try:
                prefix = _dns64_prefix(prefix)
            except _Bad as exc:
                self.problem(f"{path}.prefix", str(exc))
                prefix = _BAD
        synthesize = self.expect(data.get("synthesize", False), bool, f"{path}.synthesize")
        if synthesize is True and prefix == "none":
            self.problem(f"{path}.synthesize", "needs a prefix ('auto' or a static prefix)")
        if prefix is _BAD or synthesize is _BAD:
            return _BAD
        return Dns64Spec(prefix=prefix, synthesize=synthesize)

    def captive_portal(self, value: Any, path: str) -> Any:
        if value is None or self.expect(value, str, path) is _BAD:
            return None
        try:
            url = urlsplit(value)
            ok = url.scheme == "https" and bool(url.hostname) and url.port != 0
        except ValueError:  # a bad [IPv6] host or port
            ok = False
        if not ok:
            self.problem(path, f"{value!r}: must be an https:// URI (RFC 8908)")
        return value

    # cross-checks of a whole config

    def cross_check(self, config: Config) -> None:
        up = config.upstream
        if up.timeout > up.total_timeout:
            self.problem(
                "upstream.timeout",
                f"{up.timeout} exceeds upstream.total_timeout ({up.total_timeout})",
            )
        if up.negative_wait > up.total_timeout:
            self.problem(
                "upstream.negative_wait",
                f"{up.negative_wait} exceeds upstream.total_timeout ({up.total_timeout})",
            )
        for i, spec in enumerate(config.pvds):
            looping = looping_servers(spec, config.listen)
            for j, server in enumerate(spec.servers):
                if server in looping:
                    self.problem(
                        f"pvds[{i}].servers[{j}]",
                        f"{server} is one of mifdns's own listen addresses (queries would loop)",
                    )


def looping_servers(
    spec: PvdSpec,
    listen: Sequence[ListenAddr],
    is_local: Callable[[IPAddress], bool] = lambda addr: False,
) -> list[ServerAddr]:
    """The servers of ``spec`` that are one of mifdns's own ``listen`` addresses: queries sent
    there would come back to mifdns (refused in the config file and at runtime). A wildcard
    listen address (0.0.0.0, ::) is every address of the host: loopback, and those ``is_local``
    says are the host's (only the daemon can ask the kernel)."""
    return [s for s in spec.servers if loops_back(s, listen, is_local)]


def loops_back(
    server: ServerAddr,
    listen: Sequence[ListenAddr],
    is_local: Callable[[IPAddress], bool] = lambda addr: False,
) -> bool:
    """Whether ``server`` is mifdns itself (see :func:`looping_servers`)."""
    a, port = server.address, server.port
    for la in listen:
        if la.port != port:
            continue
        if la.address == a:
            return True
        wildcard = la.address.is_unspecified and la.address.version == a.version
        if wildcard and (a.is_loopback or is_local(a)):
            return True
    return False


def _in_range(value: float, meta: Mapping[str, Any]) -> bool:
    return (
        ("min" not in meta or value >= meta["min"])
        and ("gt" not in meta or value > meta["gt"])
        and ("max" not in meta or value <= meta["max"])
    )


def _range_text(meta: Mapping[str, Any], *, doc: bool = False) -> str:
    if "min" in meta and "max" in meta:
        low, high = meta["min"], meta["max"]
        return f"{low} to {high}" if doc else f"between {low} and {high}"
    parts = [f"greater than {meta['gt']}"] if "gt" in meta else []
    parts += [f"at least {meta['min']}"] if "min" in meta else []
    parts += [f"at most {meta['max']}"] if "max" in meta else []
    return " and ".join(parts)


def listen_clash(addrs: Sequence[ListenAddr]) -> str | None:
    """Why these listen addresses cannot all be bound, or None: one listed twice, or a wildcard
    (0.0.0.0, ::) with another address of its family on the same port (the wildcard holds
    them all already)."""
    seen: set[tuple[str, int]] = set()
    for la in addrs:
        key = (str(la.address), la.port)
        if key in seen:
            return f"{la} is listed twice"
        seen.add(key)
    for la in addrs:
        if la.address.is_unspecified:
            for other in addrs:
                if (
                    other is not la
                    and other.port == la.port
                    and other.address.version == la.address.version
                ):
                    return (
                        f"{other} and the wildcard {la} cannot both be listened on "
                        f"(the wildcard answers on every address of the host)"
                    )
    return None


def _metrics_listen(text: str) -> str:
    """``metrics.listen`` in canonical form; a bare port means loopback."""
    text = text.strip()
    if re.fullmatch(r":?[0-9]{1,5}", text):
        text = "127.0.0.1:" + text.lstrip(":")
    return str(ListenAddr.parse(text, None))


def _server(text: str, interface: str | None) -> ServerAddr:
    server = parse_server(text, interface)
    why = unusable_server(server.address)
    if why is not None:
        raise _Bad(f"{text!r}: not a unicast address ({why})")
    return server


def _domain(text: str) -> Domain:
    return Domain.parse(text)


def _network(text: str) -> IPNetwork:
    try:
        return ipaddress.ip_network(text.strip())
    except ValueError:
        pass
    try:
        net = ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise _Bad(f"{text!r}: not a network (CIDR such as 10.8.0.0/16)") from None
    raise _Bad(f"{text!r}: host bits set (the network is {net})")


def _config_error(problems: list[str], source: str) -> ConfigError:
    # Each problem line already says where it is (file:line: key path), so the exception is built
    # without ConfigError's "source: " prefix, and source is set after.
    error = ConfigError(problems)
    error.source = source
    return error


# --------------------------------------------------------------------------------- entry points


def parse_config(text: str, source: str = "<string>") -> Config:
    """Parse and check a YAML config; raise :class:`ConfigError` listing every problem."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        what = exc.problem or exc.context or "invalid YAML"
        raise _config_error([f"{where}: invalid YAML: {what}"], source) from None
    except yaml.YAMLError as exc:
        raise _config_error([f"{source}: invalid YAML: {exc}"], source) from None
    if root is None:
        return replace(default_config(), source=source)
    plain = _Plain()
    try:
        data = plain.convert(root, "")
    except _Bad as exc:
        raise _config_error([f"{source}: {exc}"], source) from None
    loader = _Loader(source, plain)
    if data is not None and not isinstance(data, dict):
        loader.problem("", f"expected a mapping of keys at the top level, got {_describe(data)}")
        data = None  # check nothing more; the problem is raised below
    config: Config = loader.section(Config, data, "")
    loader.cross_check(config)
    error = loader.error()
    if error is not None:
        raise error
    return replace(config, source=source)


def load_config(path: str) -> Config:
    """Read and check a config file; an empty file means the defaults."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise _config_error([f"{path}: cannot read: {exc.strerror or exc}"], path) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise _config_error([f"{path}:{line}: not UTF-8 text"], path) from None
    return parse_config(text, path)


def pvd_spec_from_mapping(data: Any, *, where: str = "pvd", origin: str = "runtime") -> PvdSpec:
    """Check one PvD spec given as a mapping (``ctl attach`` with JSON or YAML) exactly like a
    ``pvds[i]`` entry; problems name ``where`` as the key path."""
    loader = _Loader()
    spec = loader.pvd(data, where, origin=origin)
    error = loader.error()
    if error is not None:
        raise error
    assert spec is not None  # no problem, so a spec
    return spec


def apply_env(config: Config, environ: Mapping[str, str]) -> Config:
    """Apply the ``MIFDNS_*`` overrides of :data:`ENV_VARS`; empty variables count as unset."""
    problems: list[str] = []
    changes: dict[str, Any] = {}

    def flag(var: str) -> bool | None:
        text = environ[var].strip().lower()
        if text in _TRUE | _FALSE:
            return text in _TRUE
        problems.append(f"{var}: expected true or false, got {environ[var]!r}")
        return None

    present = [v for v in ENV_VARS if environ.get(v, "").strip()]
    for var in present:
        text = environ[var].strip()
        try:
            if var == "MIFDNS_LISTEN":
                addrs = [ListenAddr.parse(t) for t in text.split(",") if t.strip()]
                if not addrs:
                    raise _Bad(f"{text!r}: no address")
                clash = listen_clash(addrs)
                if clash:
                    raise _Bad(f"{text!r}: {clash}")
                changes["listen"] = tuple(addrs)
            elif var == "MIFDNS_CONTROL_SOCKET":
                changes["control_socket"] = _unix_path(text)
            elif var == "MIFDNS_METRICS_LISTEN":
                off = text.lower() in ("none", "off")
                listen = None if off else _metrics_listen(text)
                changes["metrics"] = replace(config.metrics, listen=listen)
            elif (value := flag(var)) is not None:
                changes[ENV_VARS[var][0]] = value
        except (ValueError, _Bad) as exc:
            problems.append(f"{var}: {exc}")
    if problems:
        raise _config_error(problems, "environment")
    return replace(config, **changes)
