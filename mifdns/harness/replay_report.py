"""What a replay reports: step and scenario results, the diffs their checks produce (``-``
expected and missing, ``+`` got and unexpected, two spaces: as expected), and JUnit XML."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any

from mifdns.harness.scenario import cache_matcher, norm_name, norm_rdata
from mifdns.harness.scenario import tname as scenario_tname

__all__ = ["ScenarioResult", "StepFailed", "StepResult", "write_junit"]


# -- results ---------------------------------------------------------------------------------------
@dataclass
class StepResult:
    index: int
    label: str
    ok: bool
    diff: list[str] = field(default_factory=list)
    seconds: float = 0.0
    note: str | None = None
    summary: str = ""  # what happened, one line (for -v and the demo's table)


@dataclass
class ScenarioResult:
    name: str
    path: str
    status: str  # passed | failed | error | xfailed | xpassed
    steps: list[StepResult] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None
    daemon_log: str = ""
    xfail: str | None = None
    not_run: int = 0

    @property
    def ok(self) -> bool:
        return self.status in ("passed", "xfailed")

    def report(self, verbose: bool = False) -> str:
        lines = []
        for st in self.steps:
            if verbose or not st.ok:
                mark = "ok  " if st.ok else "FAIL"
                extra = f"  -> {st.summary}" if st.summary and verbose else ""
                lines.append(
                    f"  {mark} {st.index:3d} {st.label}{extra}  ({st.seconds * 1000:.0f} ms)"
                )
                if not st.ok and st.note:
                    lines.append(f"           note: {st.note}")
                lines += [f"           {d}" for d in st.diff]
        if self.not_run:
            lines.append(f"  ({self.not_run} later steps not run; --keep-going runs them)")
        if self.error:
            lines += ["  " + ln for ln in self.error.splitlines()]
        if self.daemon_log and self.status in ("failed", "error"):
            lines.append("  ---- mifdns stderr (last lines) ----")
            lines += ["  | " + ln for ln in self.daemon_log.splitlines()]
        head = {"passed": "PASS", "failed": "FAIL", "error": "ERROR", "xfailed": "XFAIL",
                "xpassed": "XPASS"}[self.status]  # fmt: skip
        n_ok = sum(st.ok for st in self.steps)
        tail = f" (expected to fail: {self.xfail})" if self.xfail else ""
        lines.append(f"{head} {self.name}: {n_ok}/{len(self.steps) + self.not_run} steps passed "
                     f"in {self.seconds:.1f} s [{self.path}]{tail}")  # fmt: skip
        return "\n".join(lines)


class StepFailed(Exception):
    def __init__(self, diff: list[str]) -> None:
        self.diff = diff
        super().__init__("; ".join(diff))


# -- comparisons -------------------------------------------------------------------------------
def tname(rdtype: int) -> str:
    return scenario_tname(rdtype)


def rdatas(msg: Any, rdtype: int) -> list[str]:
    return [norm_rdata(rdtype, rd.to_text()) for rrset in msg.answer if rrset.rdtype == rdtype
            for rd in rrset]  # fmt: skip


def addrs(asked: set[tuple[str, str]]) -> str:
    return f" ({', '.join(sorted(f'{n}@{a}' for n, a in asked))})" if asked else ""


def scalar(key: str, want: str, got: str) -> list[str]:
    return [f"{key}:", f"  - {want}", f"  + {got}"]


def listdiff(key: str, want: list[str], got: list[str]) -> list[str]:
    if want == got:
        return []
    out = [f"{key}:"]
    rest = list(got)
    for w in want:
        if w in rest:
            rest.remove(w)
            out.append(f"    {w}")
        else:
            out.append(f"  - {w}")
    out += [f"  + {g}" for g in rest]
    if not want and not got:
        out.append("    (none)")
    if not want:
        out.append("  - (none)")
    if not got:
        out.append("  + (none)")
    return out


def flagdiff(spec: Any, flags: int) -> list[str]:
    import dns.flags

    got = {f.lower() for f in dns.flags.to_text(flags).split()}
    if isinstance(spec, dict):
        want = {str(k).lower(): bool(v) for k, v in spec.items()}
    else:
        names = spec if isinstance(spec, list) else str(spec).split()
        want = {str(k).lower(): True for k in names}
    wrong = [f"{k}={'set' if v else 'clear'}" for k, v in want.items() if (k in got) != v]
    if not wrong:
        return []
    return scalar("flags", ", ".join(wrong), " ".join(sorted(got)) or "(none set)")


def _cache_row(r: dict[str, Any]) -> str:
    return f"{r.get('name')} {r.get('type')} {r.get('kind')} ttl={r.get('ttl')}"


def cache_diff(spec: dict[str, Any], listing: list[dict[str, Any]]) -> list[str]:
    diff: list[str] = []
    for pvd, entries in spec.items():
        rows = [r for r in listing if pvd == "*" or r.get("pvd") == pvd]
        shown = "; ".join(_cache_row(r) + ("" if pvd != "*" else f" [{r.get('pvd')}]")
                          for r in rows[:8]) or "nothing"  # fmt: skip
        if entries == "empty":
            if rows:
                diff += [f"{pvd}:", "  - (empty)", f"  + {shown}"]
            continue
        for e in entries:
            m = cache_matcher(e)
            found = [r for r in rows if _row_matches(m, r)]
            what = " ".join(str(m[k]) for k in ("name", "type", "kind", "rcode") if k in m)
            if m.get("absent") and found:
                diff += [f"{pvd}: {what} should be absent", f"  + {_cache_row(found[0])}"]
            elif not m.get("absent") and not found:
                diff += [f"{pvd}:", f"  - {what}", f"  + (cache has: {shown})"]
    return diff


def _row_matches(m: dict[str, Any], r: dict[str, Any]) -> bool:
    try:
        if norm_name(str(r.get("name"))) != m["name"]:
            return False
    except ValueError:
        return False
    if "type" in m and r.get("type") not in (m["type"], "*"):
        return False
    if "kind" in m and r.get("kind") != m["kind"]:
        return False
    return "rcode" not in m or r.get("rcode") == m["rcode"]


def plain_json(v: Any) -> Any:
    return json.loads(json.dumps(v, default=str))


def subset_diff(want: Any, got: Any, path: str) -> list[str]:
    """Every key of ``want`` must match in ``got``; lists match element-wise in any order and
    must have the same length; scalars compare equal (names without regard to a final dot)."""
    where = path or "result"
    if isinstance(want, dict):
        if not isinstance(got, dict):
            return scalar(where, json.dumps(want), json.dumps(got))
        out = []
        for k, v in want.items():
            if k not in got:
                out += scalar(f"{path}.{k}".lstrip("."), json.dumps(v), "(missing)")
            else:
                out += subset_diff(v, got[k], f"{path}.{k}".lstrip("."))
        return out
    if isinstance(want, list):
        if not isinstance(got, list) or len(got) != len(want):
            return scalar(where, json.dumps(want), json.dumps(got))
        rest = list(got)
        for w in want:
            hit = next((g for g in rest if not subset_diff(w, g, path)), None)
            if hit is None:
                return scalar(where, json.dumps(want), json.dumps(got))
            rest.remove(hit)
        return []
    if want == got or (isinstance(want, str) and isinstance(got, str)
                       and want.rstrip(".").lower() == got.rstrip(".").lower()
                       and want.rstrip(".") != "" and "." in want):  # fmt: skip
        return []
    return scalar(where, json.dumps(want), json.dumps(got))


# -- JUnit -----------------------------------------------------------------------------------------
def write_junit(results: list[ScenarioResult], path: str, load_errors: list[str]) -> None:
    suite = ET.Element("testsuite", name="mifdns-scenarios", tests=str(len(results) +
                       len(load_errors)))  # fmt: skip
    failures = errors = skipped = 0
    total = 0.0
    for r in results:
        case = ET.SubElement(suite, "testcase", classname="scenarios", name=r.name,
                             file=r.path, time=f"{r.seconds:.3f}")  # fmt: skip
        total += r.seconds
        text = r.report(verbose=True)
        if r.status == "failed" or r.status == "xpassed":
            failures += 1
            first = next((s for s in r.steps if not s.ok), None)
            msg = (
                (f"step {first.index} {first.label}: " + " ".join(first.diff))[:500]
                if first
                else "unexpected pass (xfail is strict)"
                if r.status == "xpassed"
                else "failed"
            )
            ET.SubElement(case, "failure", message=msg).text = text
        elif r.status == "error":
            errors += 1
            ET.SubElement(case, "error", message=(r.error or "error")[:500]).text = text
        elif r.status == "xfailed":
            skipped += 1
            ET.SubElement(case, "skipped", type="xfail", message=f"xfail: {r.xfail}").text = text
        ET.SubElement(case, "system-out").text = text
    for err in load_errors:
        case = ET.SubElement(suite, "testcase", classname="scenarios", name=err.split(":")[0])
        ET.SubElement(case, "error", message=err[:500]).text = err
        errors += 1
    suite.set("failures", str(failures))
    suite.set("errors", str(errors))
    suite.set("skipped", str(skipped))
    suite.set("time", f"{total:.3f}")
    ET.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)
