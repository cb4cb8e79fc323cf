"""Value helpers and the YAML node walker that remembers the line of every key path."""

from __future__ import annotations

import difflib
import functools
import ipaddress
import os
import re
import types
import typing
from typing import Any

import yaml

from .model import (
    _MAX_NODES,
    _RFC6052_LENGTHS,
    _SUN_PATH_MAX,
)

# ------------------------------------------------------------------------------ value helpers


class _Bad(Exception):
    """A value failed its check; the message is the problem text."""


def _describe(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__} ({value})"


def _kind(value: object) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number"}.get(type(value), "a date")


def _join(path: str, key: object) -> str:
    text = key if isinstance(key, str) else _describe(key)
    return f"{path}.{text}" if path else str(text)


def _parent(path: str) -> str:
    match = re.search(r"(\.[^.\[\]]*|\[\d+\])$", path)
    return path[: match.start()] if match else ""


def _suggest(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _valid_ifname(name: str) -> bool:
    # Linux dev_valid_name(): 1-15 bytes, not "." or "..", no '/', ':' or whitespace.
    return (
        0 < len(name.encode()) < 16
        and name not in (".", "..")
        and not any(c in "/:" or c.isspace() for c in name)
    )


def _unix_path(text: str) -> str:
    if not text:
        raise _Bad("must not be empty")
    size = len(os.fsencode(text))
    if size > _SUN_PATH_MAX:
        raise _Bad(
            f"{text!r} is too long for a Unix socket path ({size} bytes, at most {_SUN_PATH_MAX})"
        )
    return text


def _dns64_prefix(text: str) -> str:
    if text.lower() in ("auto", "none"):
        return text.lower()
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise _Bad(f"{text!r}: expected 'auto', 'none' or an IPv6 prefix") from None
    if net.version != 6:
        raise _Bad(f"{text!r}: a NAT64 prefix is IPv6")
    if net.prefixlen not in _RFC6052_LENGTHS:
        raise _Bad(f"{text!r}: an RFC 6052 prefix is /32, /40, /48, /56, /64 or /96")
    try:
        ipaddress.ip_network(text)
    except ValueError:
        raise _Bad(f"{text!r}: host bits set (the prefix is {net})") from None
    if net.prefixlen == 96 and (int(net.network_address) >> 56) & 0xFF:
        raise _Bad(f"{text!r}: bits 64-71 of an RFC 6052 prefix must be zero")
    return str(net)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _scalar_type(hint: Any) -> tuple[type, bool]:
    """(base type, optional) of ``int``, ``str | None`` and the like."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0], True
    return hint, False


# ---------------------------------------------------------------------------- YAML -> values


class _Plain:
    """Turn a composed YAML node tree into plain values, recording lines per key path."""

    def __init__(self) -> None:
        self.lines: dict[str, int] = {}  # path -> line of the value
        self.key_lines: dict[str, int] = {}  # path -> line of the key
        self.unquoted: dict[str, str] = {}  # path -> text of a plain scalar that is not a str
        self.problems: list[tuple[int, str]] = []
        self._constructor = yaml.SafeLoader("")  # only its constructor methods are used
        self._nodes = 0
        self._stack: set[int] = set()
        self._from_merge: set[str] = set()  # paths whose value came from a merge key
        self._merged: dict[int, int] = {}  # id(mapping node) -> how many pairs it merged

    def convert(self, node: yaml.Node, path: str) -> Any:
        self._nodes += 1
        if self._nodes > _MAX_NODES:
            raise _Bad(f"more than {_MAX_NODES} values (alias expansion?)")
        line = node.start_mark.line + 1
        self.lines[path] = line
        if id(node) in self._stack:
            self.problems.append((line, f"{path or 'document'}: recursive alias"))
            return None
        try:
            if isinstance(node, yaml.ScalarNode):
                value = self._constructor.construct_object(node)
                if node.style is None and not isinstance(value, str):
                    self.unquoted[path] = node.value
                return value
            self._stack.add(id(node))
            try:
                if isinstance(node, yaml.SequenceNode) and node.tag.endswith(":seq"):
                    return [self.convert(n, f"{path}[{i}]") for i, n in enumerate(node.value)]
                if isinstance(node, yaml.MappingNode) and node.tag.endswith(":map"):
                    return self._mapping(node, path)
            finally:
                self._stack.discard(id(node))
            raise yaml.YAMLError(f"unsupported tag {node.tag!r}")
        except yaml.YAMLError as exc:
            what = getattr(exc, "problem", None) or str(exc)
            self.problems.append((line, f"{path or 'document'}: {what}"))
            return None

    def _mapping(self, node: yaml.MappingNode, path: str) -> dict[Any, Any]:
        if id(node) not in self._merged:  # an aliased node comes here again, already flattened
            explicit = sum(1 for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge")
            self._constructor.flatten_mapping(node)  # YAML merge keys (<<): merged pairs first,
            self._merged[id(node)] = len(node.value) - explicit  # the mapping's own override
        merged = self._merged[id(node)]
        out: dict[Any, Any] = {}
        for index, (key_node, value_node) in enumerate(node.value):
            key_line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                self.problems.append((key_line, f"{path or 'document'}: keys must be strings"))
                continue
            key = self._constructor.construct_object(key_node)
            sub = _join(path, key)
            if key in out and index >= merged and sub not in self._from_merge:
                first = self.key_lines[sub]
                self.problems.append((key_line, f"{sub}: duplicate key (first at line {first})"))
                continue
            if index < merged:
                self._from_merge.add(sub)
            else:
                self._from_merge.discard(sub)
            self.key_lines[sub] = key_line
            out[key] = self.convert(value_node, sub)
        return out
