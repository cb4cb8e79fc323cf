"""Collects every tests/scenarios/*.yaml as one test that replays it (mifdns.harness.replay).

A scenario with ``xfail: "reason"`` becomes a strict xfail: it must fail (a pass is reported
as XPASS(strict) and fails the run, so the marker goes when the feature lands). An invalid file
is a failing test whose message is the validator's one-line problems. Replays need root and
network namespaces: without them the tests are skipped loudly, except under CI=true, where they
fail (as the integration tests do).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from mifdns.harness import netns
from mifdns.harness.scenario import Scenario, ScenarioError, load

HERE = Path(__file__).resolve().parent
_probe: tuple[bool, str] | None = None


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


def pytest_collect_file(parent: pytest.Collector, file_path: Path) -> pytest.Collector | None:
    if file_path.suffix in (".yaml", ".yml") and file_path.parent == HERE:
        return ScenarioFile.from_parent(parent, path=file_path)
    return None


class ScenarioFile(pytest.File):
    def collect(self) -> Any:
        try:
            sc: Scenario | None = load(self.path)
            error = None
        except ScenarioError as exc:
            sc, error = None, str(exc)
        name = sc.name if sc is not None else self.path.stem
        yield ScenarioItem.from_parent(self, name=name, scenario=sc, error=error)


class ScenarioFailed(Exception):
    pass


class ScenarioItem(pytest.Item):
    def __init__(self, *, scenario: Scenario | None, error: str | None, **kw: Any) -> None:
        super().__init__(**kw)
        self.scenario = scenario
        self.error = error
        self.add_marker(pytest.mark.netns)
        if scenario is not None and scenario.xfail:
            self.add_marker(pytest.mark.xfail(reason=scenario.xfail, strict=True,
                                              raises=ScenarioFailed))  # fmt: skip

    def runtest(self) -> None:
        if self.error is not None:
            raise ScenarioFailed(self.error)
        ok, why = _netns_ok()
        if not ok:
            msg = f"needs root + network namespaces: {why}"
            if os.environ.get("CI", "").strip().lower() in ("true", "1", "yes"):
                pytest.fail(f"{msg} (CI=true: the scenarios must run here)", pytrace=False)
            pytest.skip(msg)
        from mifdns.harness.replay import Replay

        assert self.scenario is not None
        result = Replay(self.scenario).run()
        self.user_properties.append(("seconds", round(result.seconds, 2)))
        if result.status == "error":  # the harness broke: never an expected failure
            raise ScenarioError([result.report(verbose=True)])
        if result.status not in ("passed", "xpassed"):
            raise ScenarioFailed(result.report(verbose=True))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, (ScenarioFailed, ScenarioError)):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, f"scenario {self.name}"
