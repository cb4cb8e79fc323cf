"""Replays every scenario of the library shipped in the package (mifdns/scenarios/*.yaml).

A scenario with ``xfail: "reason"`` is a strict xfail: it must fail, and a pass fails the run,
so the marker goes when the feature lands. An invalid file is a failing test whose message is
the validator's one-line problems. Replays need root and network namespaces: without them the
tests are skipped loudly, except under CI=true, where they fail (as the integration tests do).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mifdns.harness import netns
from mifdns.harness.scenario import ScenarioError, library, load

_probe: tuple[bool, str] | None = None


class ScenarioFailed(Exception):
    pass


def _netns_ok() -> tuple[bool, str]:
    global _probe
    if _probe is None:
        reason = os.environ.get("MIFDNS_NETNS_UNAVAILABLE")
        _probe = (False, f"simulated: {reason}") if reason else netns.available()
        if _probe[0]:
            from mifdns.harness.replay import TOPOLOGY_PREFIX
            from mifdns.harness.topology import sweep_stale

            sweep_stale(TOPOLOGY_PREFIX)
    return _probe


def _params() -> list[object]:
    out = []
    for path in sorted(library().glob("*.yaml")):
        marks = [pytest.mark.netns]
        try:
            xfail = load(path).xfail
        except ScenarioError:
            xfail = None  # reported by the test itself
        if xfail:
            marks.append(pytest.mark.xfail(reason=xfail, strict=True, raises=ScenarioFailed))
        out.append(pytest.param(path, id=path.stem, marks=marks))
    return out


@pytest.mark.parametrize("path", _params())
def test_scenario(path: Path) -> None:
    try:
        scenario = load(path)
    except ScenarioError as exc:
        pytest.fail(str(exc), pytrace=False)
    ok, why = _netns_ok()
    if not ok:
        msg = f"needs root + network namespaces: {why}"
        if os.environ.get("CI", "").strip().lower() in ("true", "1", "yes"):
            pytest.fail(f"{msg} (CI=true: the scenarios must run here)", pytrace=False)
        pytest.skip(msg)
    from mifdns.harness.replay import Replay

    result = Replay(scenario).run()
    if result.status == "error":  # the harness broke: never an expected failure
        pytest.fail(result.report(verbose=True), pytrace=False)
    if result.status not in ("passed", "xpassed"):
        raise ScenarioFailed(result.report(verbose=True))


def test_library_is_not_empty() -> None:
    assert len(list(library().glob("*.yaml"))) >= 15
