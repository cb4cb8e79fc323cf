"""LinkMonitor's reconcile loop with a scripted dump (no namespaces needed): what is reported,
and that errors are retried and never stop it."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from typing import Any

import pytest

from mifdns.aio import links
from mifdns.aio.links import LinkMonitor, LinkView

NET = ipaddress.ip_network("10.1.0.0/24")
UP = LinkView(7, True, (("10.1.0.10", 24),), (NET,))


class Script:
    """Successive dump results; an exception instance is raised instead of returned."""

    def __init__(self, *steps: Any) -> None:
        self.steps = list(steps)
        self.calls = 0

    def __call__(self) -> dict[str, LinkView]:
        self.calls += 1
        step = self.steps.pop(0) if len(self.steps) > 1 else self.steps[0]
        if isinstance(step, BaseException):
            raise step
        return dict(step)


async def run(mon: LinkMonitor) -> None:
    mon._loop = asyncio.get_running_loop()
    await asyncio.wait_for(mon._reconcile(), 5)


@pytest.mark.asyncio
async def test_changed_interfaces_are_reported_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    mon = LinkMonitor(seen.append)
    mon.links = {"corp0": UP, "wlan0": UP}
    renamed = {"corpold": UP, "wlan0": UP}  # corp0 renamed: same ifindex, another name
    monkeypatch.setattr(links, "dump", Script(renamed))
    await run(mon)
    assert seen == ["corp0", "corpold"]
    assert not mon.usable("corp0") and mon.usable("corpold")
    assert mon.prefixes("corpold") == (NET,)


@pytest.mark.asyncio
async def test_a_failing_dump_is_retried_with_backoff_and_the_last_view_kept(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "mifdns.netlink")
    seen: list[str] = []
    mon = LinkMonitor(seen.append)
    mon.links = {"corp0": UP}
    monkeypatch.setattr(links, "RETRY", 0.01)
    script = Script(
        OSError(105, "No buffer space available"),
        RuntimeError("boom"),
        {"corp0": LinkView(7, False, (), ())},
    )
    monkeypatch.setattr(links, "dump", script)
    await run(mon)
    assert script.calls == 3 and mon.errors == 2
    assert seen == ["corp0"] and not mon.usable("corp0")
    assert "retrying in 0.0 s" in caplog.text and "works again" in caplog.text


@pytest.mark.asyncio
async def test_a_failing_handler_does_not_stop_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []

    def handler(name: str) -> None:
        seen.append(name)
        if name == "a0":
            raise ValueError("handler bug")

    mon = LinkMonitor(handler)
    monkeypatch.setattr(links, "dump", Script({"a0": UP, "b0": UP}))
    await run(mon)
    assert seen == ["a0", "b0"]


def test_usable_needs_up_and_a_non_link_local_address_unless_allowed() -> None:
    ll = LinkView(3, True, (("fe80::1", 64),), ())
    assert not ll.usable() and ll.usable(link_local_ok=True)
    assert not LinkView(3, False, (("10.0.0.1", 24),), ()).usable()
    assert LinkView(3, True, (("10.0.0.1", 24),), ()).usable()


def test_usable_for_a_family_needs_an_address_of_that_family() -> None:
    v4 = LinkView(3, True, (("10.0.0.1", 24), ("fe80::1", 64)), ())
    assert v4.usable(families=frozenset({4})) and v4.usable(families=frozenset({4, 6}))
    assert not v4.usable(families=frozenset({6}))  # only link-local IPv6
    assert v4.usable(link_local_ok=True, families=frozenset({6}))
    v6 = LinkView(3, True, (("2001:db8::1", 64),), ())
    assert v6.usable(families=frozenset({6})) and not v6.usable(families=frozenset({4}))
