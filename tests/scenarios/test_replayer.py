"""The replayer itself, on real namespaces: a wrong expectation fails with a diff, xfail is
strict, the command line writes JUnit, and nothing is left behind on failure or Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from mifdns.harness import netns
from mifdns.harness.replay import Replay, run_file
from mifdns.harness.scenario import library, loads

HERE = Path(__file__).resolve().parent
pytestmark = pytest.mark.netns

SMALL = """
story: >
  Two networks; a private name goes to its own network, and the other one never sees it.
networks:
  corp:
    interface: corp0
    pvd: {domains: ["~corp.example"]}
    upstream: {records: {www.corp.example: {A: 10.8.0.1}}}
  wifi:
    interface: wlan0
    upstream: {records: {www.example.com: {A: 203.0.113.80}}}
steps:
  - query: www.corp.example
    expect: {answers: [10.8.0.1], from: corp}
  - query: www.example.com
    expect: {answers: [203.0.113.80], asked: [wifi]}
"""


@pytest.fixture(autouse=True)
def _gate() -> None:
    simulated = os.environ.get("MIFDNS_NETNS_UNAVAILABLE")
    ok, why = (False, f"simulated: {simulated}") if simulated else netns.available()
    if not ok:
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail(f"needs root + network namespaces: {why}", pytrace=False)
        pytest.skip(f"needs root + network namespaces: {why}")


def _ours() -> set[str]:
    out = netns.ip(None, "netns", "list")
    return {ln.split()[0] for ln in out.splitlines() if ln.startswith(f"mifsc{os.getpid()}-")}


def test_a_copy_with_one_expected_answer_changed_fails_with_a_diff(tmp_path: Path):
    original = (library() / "rfc6418-1-private-name.yaml").read_text()
    changed = original.replace("answers: [10.8.0.80]", "answers: [10.8.0.81]", 1)
    assert changed != original
    copy = tmp_path / "changed.yaml"
    copy.write_text(changed)
    result = run_file(copy)
    assert result.status == "failed"
    (bad,) = [s for s in result.steps if not s.ok]
    assert bad.label == "query intranet.corp.example A"
    assert bad.diff[:3] == ["answers:", "  - 10.8.0.81", "  + 10.8.0.80"]
    assert result.not_run > 0
    assert not _ours()


def test_keep_going_runs_every_step_and_reports_each_failure():
    sc = loads(SMALL.replace("[10.8.0.1]", "[10.8.0.2]").replace("asked: [wifi]", "asked: [corp]"))
    result = Replay(sc, keep_going=True).run()
    assert [s.ok for s in result.steps] == [False, False]
    assert result.steps[1].diff[:3] == ["asked:", "  - corp", "  + wifi (wifi@192.0.2.53)"]
    assert result.report().count("FAIL ") == 3  # two steps and the summary


def test_xfail_is_strict():
    passing = loads("xfail: not built yet\n" + SMALL)
    assert Replay(passing).run().status == "xpassed"
    failing = loads("xfail: not built yet\n" + SMALL.replace("[10.8.0.1]", "[10.8.0.9]"))
    result = Replay(failing).run()
    assert result.status == "xfailed" and result.ok


def test_command_line_exit_status_and_junit(tmp_path: Path):
    good = tmp_path / "good.yaml"
    good.write_text(SMALL)
    bad = tmp_path / "bad.yaml"
    bad.write_text(SMALL.replace("[203.0.113.80]", "[203.0.113.81]"))
    junit = tmp_path / "out.xml"
    env = dict(os.environ, PYTHONPATH=str(HERE.parents[1]))
    proc = subprocess.run([sys.executable, "-m", "mifdns", "replay", str(good), str(bad),
                           "--junit", str(junit), "-j", "2"], check=False, capture_output=True, text=True,
                          env=env, timeout=120)  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert "PASS good" in proc.stdout and "FAIL bad" in proc.stdout
    assert "  - 203.0.113.81" in proc.stdout and "  + 203.0.113.80" in proc.stdout
    suite = ET.parse(junit).getroot()
    assert (suite.get("tests"), suite.get("failures")) == ("2", "1")
    proc = subprocess.run([sys.executable, "-m", "mifdns", "replay", str(good)], check=False,
                          capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
    assert proc.returncode == 0 and proc.stdout.splitlines()[-1].startswith("== 1 passed")


@pytest.mark.parametrize(
    "sig, jobs",
    [(signal.SIGINT, 1), (signal.SIGTERM, 1), (signal.SIGTERM, 2)],
    ids=["ctrl-c", "sigterm", "sigterm-j2"],
)
def test_ctrl_c_or_sigterm_removes_everything(tmp_path: Path, sig: int, jobs: int):
    """Namespaces, daemons and work directories go, also with -j N (replays in threads, where
    the signal cannot reach them: they stop at their next step)."""
    slow = tmp_path / "slow.yaml"
    slow.write_text(SMALL + "  - advance: 10\n")
    other = tmp_path / "other.yaml"
    other.write_text(SMALL + "  - advance: 10\n")
    env = dict(os.environ, PYTHONPATH=str(HERE.parents[1]), TMPDIR=str(tmp_path))
    proc = subprocess.Popen(
        [sys.executable, "-m", "mifdns", "replay", "-j", str(jobs), str(slow), str(other)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    prefix = f"mifsc{proc.pid}-"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # wait until the daemon answers inside the topology
        names = netns.ip(None, "netns", "list")
        host = next(
            (
                ln.split()[0]
                for ln in names.splitlines()
                if ln.startswith(prefix) and ln.split()[0].endswith("-host")
            ),
            None,
        )
        if host and netns.ip(None, "netns", "pids", host).split():
            break
        time.sleep(0.1)
    time.sleep(1.0)  # into the `advance`
    t0 = time.monotonic()
    proc.send_signal(sig)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + sig, err
    assert "interrupted" in err
    assert time.monotonic() - t0 < 8  # not after the `advance: 10`
    left = [ln for ln in netns.ip(None, "netns", "list").splitlines() if ln.startswith(prefix)]
    assert not left
    assert not list(tmp_path.glob("mifsc-*"))  # the work directories
