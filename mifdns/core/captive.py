"""Captive-portal state of one PvD, from three sources, and the hijack probe that feeds one.

Theory of operation
-------------------
A captive portal's DNS answers are lies (every name -> the portal) that must not outlive the
login or leak into other networks. Each PvD gets a :class:`CaptiveMachine` that settles its
state, ``unknown``, ``captive`` or ``open``, from three sources:

- **api**: the RFC 8908 captive-portal API (its URI from config, ``ctl`` or the resolvconf
  front end, RFC 8910), polled over the PvD's own interface by the adapter
  (mifdns.aio.captive_probe) and parsed here (:func:`parse_api`): ``captive: true/false``,
  ``user-portal-url`` and friends. A failed poll says nothing (the last answer stands).
- **probe**: the DNS hijack probe. Random single-label names and a random name under the
  reserved ``invalid`` TLD (RFC 6761) cannot exist; a network whose DNS answers them with
  addresses rewrites DNS, which is what captive portals do (browsers' intranet-redirect
  detectors use the same trick). :func:`probe_names` makes the names, :func:`judge` reads the
  answers: hijacked, clean, or inconclusive (timeouts, SERVFAIL: says nothing).
- **operator**: ``mifdns ctl captive NAME captive|open|unknown``.

The state is settled in this order (:meth:`CaptiveMachine._evaluate`):

1. the operator said ``captive``: captive (being careful is always allowed);
2. the probe saw DNS lies: captive. A DNS that answers names that cannot exist is never trusted
   for general names while the lies go on, whoever says otherwise;
3. the operator said ``open``: open;
4. the API answered: what it says;
5. the probe saw no lies: open; otherwise unknown.

An operator's word stands until an automatic source *changes its mind* (reports a value other
than the one it reported before), so a session that expires later is noticed. A login signal
(the operator's ``open``, the API going from captive to not captive) throws away the probe's
earlier evidence and probes again at once: if the portal's DNS stopped lying, the PvD stays
open; if it still lies, it is captive again within a round trip. ``unknown`` from the operator
forgets everything and starts over (probe and poll at once).

The addresses the lies pointed at the last time the probe saw some (``portal_addresses``) are
kept after a login. While the PvD is not captive, the resolver caps an answer that points there
and reports it; ``on_sighting`` then makes a probe due at once (at most every
SIGHTING_INTERVAL), so a portal that comes back when a session expires is noticed at its first
lie, not at the next 10-minute probe.

Every input returns a :class:`Transition` when the state changes (else None); the adapter
applies it to the registry (leaving ``captive`` purges the PvD's partition there) and asks for
the PvD to be probed again. The machine also keeps the schedule: ``due(now)`` says whether a
probe or a poll is due and ``next_deadline()`` when the next one is. While captive it probes
and polls often (to notice the login fast); otherwise rarely (to notice a portal that comes
back). Nothing here reads a clock or touches a socket.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from mifdns.errors import MifdnsError

from .pvd import CaptiveState

#: seconds between hijack probes while captive / otherwise, and after an inconclusive probe
PROBE_CAPTIVE = 3.0
PROBE_OTHER = 600.0
PROBE_RETRY = 30.0
#: seconds between hijack probes started because an answer pointed at the portal (at most)
SIGHTING_INTERVAL = 30.0
#: seconds between API polls while captive / otherwise, and after a failed poll (doubling)
POLL_CAPTIVE = 5.0
POLL_OTHER = 60.0
POLL_RETRY = (5.0, 10.0, 30.0, 60.0)
#: the hijack probe: this many random single labels, plus one random name under this TLD
PROBE_LABELS = 2
RESERVED_TLD = "invalid"
API_MAX_BYTES = 64 * 1024  # an RFC 8908 answer is a few hundred bytes
_LETTERS = "abcdefghijklmnopqrstuvwxyz"


class CaptiveApiError(MifdnsError):
    """The captive-portal API answered something that is not an RFC 8908 status."""


@dataclass(frozen=True, slots=True)
class ApiStatus:
    """An RFC 8908 section 5 status. Only ``captive`` is required."""

    captive: bool
    user_portal_url: str | None = None
    venue_info_url: str | None = None
    can_extend_session: bool | None = None
    seconds_remaining: int | None = None
    bytes_remaining: int | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"captive": self.captive}
        for key in (
            "user_portal_url",
            "venue_info_url",
            "can_extend_session",
            "seconds_remaining",
            "bytes_remaining",
        ):
            value = getattr(self, key)
            if value is not None:
                out[key.replace("_", "-")] = value
        return out


def parse_api(body: bytes | str) -> ApiStatus:
    """Parse an RFC 8908 API answer (``application/captive+json``); CaptiveApiError if it is
    not JSON, not an object, or has no boolean ``captive``. Unknown keys are ignored; known
    keys of the wrong type are dropped (RFC 8908 section 5: clients ignore what they do not
    understand)."""
    if len(body) > API_MAX_BYTES:
        raise CaptiveApiError(f"answer larger than {API_MAX_BYTES} bytes")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CaptiveApiError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise CaptiveApiError("not a JSON object")
    captive = data.get("captive")
    if not isinstance(captive, bool):
        raise CaptiveApiError("no boolean 'captive' key")

    def url(key: str) -> str | None:
        value = data.get(key)
        if not isinstance(value, str):
            return None
        try:
            parts = urlsplit(value)
        except ValueError:
            return None
        return value if parts.scheme in ("https", "http") and parts.hostname else None

    def count(key: str) -> int | None:
        value = data.get(key)
        return (
            value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None
        )

    extend = data.get("can-extend-session")
    return ApiStatus(
        captive=captive,
        user_portal_url=url("user-portal-url"),
        venue_info_url=url("venue-info-url"),
        can_extend_session=extend if isinstance(extend, bool) else None,
        seconds_remaining=count("seconds-remaining"),
        bytes_remaining=count("bytes-remaining"),
    )


def host_of(uri: str | None) -> str | None:
    """The DNS host name of a URI; None for an IP literal, a bad URI or none."""
    if not uri:
        return None
    try:
        host = urlsplit(uri).hostname
    except ValueError:
        return None
    if not host:
        return None
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        return host.rstrip(".").lower() or None


# ------------------------------------------------------------------------------ hijack probe
def probe_names(entropy: bytes) -> tuple[str, ...]:
    """Names that cannot exist: ``PROBE_LABELS`` random single labels of 10-15 letters and one
    random label under ``.invalid``. ``entropy``: at least 48 random bytes (os.urandom)."""
    if len(entropy) < 16 * (PROBE_LABELS + 1):
        raise ValueError("probe_names needs 16 random bytes per name")
    names = []
    for i in range(PROBE_LABELS + 1):
        chunk = entropy[16 * i : 16 * (i + 1)]
        size = 10 + chunk[0] % 6
        label = "".join(_LETTERS[b % 26] for b in chunk[1 : 1 + size])
        names.append(f"{label}." if i < PROBE_LABELS else f"{label}.{RESERVED_TLD}.")
    return tuple(names)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What one hijack probe says: ``hijacked`` True (DNS is rewritten), False (clean) or None
    (inconclusive), and the addresses the lies pointed at (the portal)."""

    hijacked: bool | None
    addresses: tuple[str, ...] = ()
    note: str = ""


def judge(results: Sequence[tuple[str, Sequence[str]]]) -> Verdict:
    """Read the answers to :func:`probe_names`: (outcome, addresses) per name, outcome as the
    resolver's (answer, nodata, nxdomain, timeout, failed, ...). Hijacked when at least two
    names came back with addresses; clean when none did and at least one was denied (NXDOMAIN
    or NODATA); otherwise inconclusive."""
    lies = [addrs for outcome, addrs in results if outcome == "answer" and addrs]
    denied = sum(1 for outcome, _ in results if outcome in ("nxdomain", "nodata"))
    addresses = tuple(dict.fromkeys(a for addrs in lies for a in addrs))
    if len(lies) >= 2:
        return Verdict(
            True,
            addresses,
            f"{len(lies)} of {len(results)} names that cannot "
            f"exist resolved (to {', '.join(addresses)})",
        )
    if not lies and denied:
        return Verdict(False, (), f"{denied} of {len(results)} names that cannot exist denied")
    failed = len(results) - len(lies) - denied
    return Verdict(
        None, addresses, f"inconclusive ({len(lies)} resolved, {denied} denied, {failed} failed)"
    )


# ------------------------------------------------------------------------------ the machine
@dataclass(frozen=True, slots=True)
class Transition:
    """The state of ``pvd`` changed from ``old`` to ``new`` because of ``source``."""

    pvd: str
    old: CaptiveState
    new: CaptiveState
    source: str  # api | probe | operator | reset
    reason: str


class CaptiveMachine:
    """The captive-portal state of one PvD. See the module docstring."""

    def __init__(self, pvd: str, api_uri: str | None = None, *, now: float = 0.0) -> None:
        self.pvd = pvd
        self.api_uri = api_uri
        self.state = CaptiveState.UNKNOWN
        self.api: ApiStatus | None = None
        self.api_error: str | None = None
        self.api_at: float | None = None
        self.api_failures = 0
        self.probe: bool | None = None
        self.probe_note = ""
        self.probe_addresses: tuple[str, ...] = ()
        # where the lies pointed the last time the probe saw some: kept after a login, so an
        # answer pointing there later (the session expired) can be noticed (``on_sighting``)
        self.portal_addresses: tuple[str, ...] = ()
        self.sighted_at: float | None = None
        self.probe_at: float | None = None
        self.operator: CaptiveState | None = None
        self.changed_at = now
        self.reason = "not probed yet"
        self.next_probe: float | None = now
        self.next_poll: float | None = now if api_uri else None

    # ------------------------------------------------------------------ inputs
    def on_probe(self, verdict: Verdict, now: float) -> Transition | None:
        self.probe_at = now
        self.probe_note = verdict.note
        if verdict.hijacked is None:
            if self.probe is None and self.state == CaptiveState.UNKNOWN:
                self.reason = f"hijack probe {verdict.note}"  # not "not probed yet"
            self._schedule_probe(now, PROBE_RETRY)
            return None
        changed = verdict.hijacked != self.probe
        self.probe = verdict.hijacked
        self.probe_addresses = verdict.addresses
        if verdict.hijacked and verdict.addresses:
            self.portal_addresses = verdict.addresses
        if changed:
            self.operator = None  # new evidence overrides what the operator said before
        what = "DNS rewritten" if verdict.hijacked else "DNS not rewritten"
        t = self._settle(now, "probe", f"hijack probe: {what}: {verdict.note}")
        self._schedule_probe(now)
        return t

    def on_api(
        self, status: ApiStatus | None, now: float, error: str | None = None
    ) -> Transition | None:
        """A poll of the API finished: ``status``, or None and ``error``."""
        self.api_at = now
        if status is None:
            self.api_error = error or "no answer"
            self.api_failures += 1
            self.next_poll = now + POLL_RETRY[min(self.api_failures, len(POLL_RETRY)) - 1]
            return None
        self.api_error = None
        self.api_failures = 0
        changed = self.api is None or status.captive != self.api.captive
        login = self.api is not None and self.api.captive and not status.captive
        self.api = status
        if changed:
            self.operator = None
        if login:
            self._forget_probe(now)
        t = self._settle(
            now, "api", f"captive-portal API says captive: {'true' if status.captive else 'false'}"
        )
        self._schedule_poll(now)
        return t

    def on_operator(self, state: CaptiveState, now: float) -> Transition | None:
        if state == CaptiveState.UNKNOWN:
            return self.reset(now, "operator: state unknown, probing again", source="operator")
        self.operator = state
        if state == CaptiveState.OPEN:
            self._forget_probe(now)
        return self._settle(now, "operator", f"operator says {state.value}")

    def set_api_uri(self, uri: str | None, now: float) -> None:
        if uri == self.api_uri:
            return
        self.api_uri = uri
        self.api = None
        self.api_error = None
        self.api_failures = 0
        self.next_poll = now if uri else None

    def reset(self, now: float, reason: str, source: str = "reset") -> Transition | None:
        """Forget every source (a new attachment, or the operator's ``unknown``); probe and
        poll at once."""
        self.api = None
        self.api_error = None
        self.api_failures = 0
        self.probe = None
        self.probe_addresses = ()
        self.portal_addresses = ()
        self.sighted_at = None
        self.probe_note = ""
        self.operator = None
        self.next_probe = now
        self.next_poll = now if self.api_uri else None
        return self._settle(now, source, reason)

    def on_sighting(self, now: float) -> bool:
        """An answer from the PvD pointed at ``portal_addresses`` while it is not captive: the
        portal may be back (a session expired). Probe at once, unless captive, a probe is
        running, or one was started this way less than SIGHTING_INTERVAL seconds ago. True if
        a probe is now due."""
        if self.state == CaptiveState.CAPTIVE or self.next_probe is None:
            return False
        if self.sighted_at is not None and now - self.sighted_at < SIGHTING_INTERVAL:
            return False
        self.sighted_at = now
        self.next_probe = now
        return True

    def probe_again(self, now: float) -> None:
        """Probe (and poll) at once, e.g. after leaving the captive state."""
        self.next_probe = now
        if self.api_uri:
            self.next_poll = now

    # ------------------------------------------------------------------ schedule
    def due(self, now: float) -> tuple[bool, bool]:
        """(probe due, poll due). The caller starts them and calls ``started_*``."""
        probe = self.next_probe is not None and self.next_probe <= now
        poll = self.next_poll is not None and self.next_poll <= now and bool(self.api_uri)
        return probe, poll

    def started_probe(self) -> None:
        self.next_probe = None  # rescheduled by on_probe

    def started_poll(self) -> None:
        self.next_poll = None  # rescheduled by on_api

    def next_deadline(self) -> float | None:
        times = [t for t in (self.next_probe, self.next_poll) if t is not None]
        return min(times) if times else None

    # ------------------------------------------------------------------ views
    @property
    def portal_hosts(self) -> tuple[str, ...]:
        """The portal's own host names: routed to this PvD while it is captive."""
        hosts = [host_of(self.api_uri)]
        if self.api is not None:
            hosts.append(host_of(self.api.user_portal_url))
        return tuple(dict.fromkeys(h for h in hosts if h))

    def to_json(self, now: float) -> dict[str, Any]:
        def ago(t: float | None) -> float | None:
            return None if t is None else round(now - t, 1)

        return {
            "state": self.state.value,
            "reason": self.reason,
            "since_s": ago(self.changed_at),
            "api_uri": self.api_uri,
            "api": None if self.api is None else self.api.to_json(),
            "api_error": self.api_error,
            "api_polled_s_ago": ago(self.api_at),
            "probe": {True: "hijacked", False: "clean", None: "unknown"}[self.probe],
            "probe_note": self.probe_note,
            "probe_addresses": list(self.probe_addresses),
            "portal_addresses": list(self.portal_addresses),
            "sighted_s_ago": ago(self.sighted_at),
            "probed_s_ago": ago(self.probe_at),
            "operator": None if self.operator is None else self.operator.value,
            "portal_hosts": list(self.portal_hosts),
        }

    # ------------------------------------------------------------------ internals
    def _evaluate(self) -> CaptiveState:
        if self.operator == CaptiveState.CAPTIVE or self.probe is True:
            return CaptiveState.CAPTIVE
        if self.operator == CaptiveState.OPEN:
            return CaptiveState.OPEN
        if self.api is not None:
            return CaptiveState.CAPTIVE if self.api.captive else CaptiveState.OPEN
        if self.probe is False:
            return CaptiveState.OPEN
        return CaptiveState.UNKNOWN

    def _forget_probe(self, now: float) -> None:
        """A login signal: the lies seen before may be over; look again at once."""
        self.probe = None
        self.probe_addresses = ()
        self.probe_note = "probing again after a login signal"
        self.next_probe = now

    def _settle(self, now: float, source: str, reason: str) -> Transition | None:
        new = self._evaluate()
        if new == self.state:
            return None
        old, self.state = self.state, new
        self.changed_at = now
        self.reason = reason
        if old == CaptiveState.CAPTIVE or new == CaptiveState.CAPTIVE:
            self._schedule_probe(now)
            self._schedule_poll(now)
        if old == CaptiveState.CAPTIVE:
            self.probe_again(now)  # login done: look again at once (the partition was purged)
        return Transition(self.pvd, old, new, source, reason)

    def _schedule_probe(self, now: float, delay: float | None = None) -> None:
        if delay is None:
            delay = PROBE_CAPTIVE if self.state == CaptiveState.CAPTIVE else PROBE_OTHER
        nxt = now + delay
        if self.next_probe is None or self.next_probe > nxt or self.next_probe <= now:
            self.next_probe = nxt

    def _schedule_poll(self, now: float) -> None:
        if not self.api_uri:
            self.next_poll = None
            return
        delay = POLL_CAPTIVE if self.state == CaptiveState.CAPTIVE else POLL_OTHER
        if self.api is not None and self.api.seconds_remaining is not None and not self.api.captive:
            delay = min(delay, max(POLL_CAPTIVE, float(self.api.seconds_remaining)))
        nxt = now + delay
        if self.next_poll is None or self.next_poll > nxt or self.next_poll <= now:
            self.next_poll = nxt


__all__ = [
    "ApiStatus",
    "CaptiveApiError",
    "CaptiveMachine",
    "Transition",
    "Verdict",
    "host_of",
    "judge",
    "parse_api",
    "probe_names",
]
