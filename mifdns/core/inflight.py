"""What the resolver keeps while questions are in flight: client resolutions, local DNS64
synthesis jobs, and probes mifdns asks for itself (NAT64 discovery, captive-portal checks)."""

from __future__ import annotations

import ipaddress

from . import wire
from .cache import Entry, Key
from .routing import Decision
from .transaction import Transaction


class Resolution:
    """One client question being answered from one or more PvDs.

    ``pending`` holds what it still waits for: transactions, and synthesis jobs (:class:`Synth`).
    ``synthesized``: positive answers marked synthesized, held back (like ``negatives``) for a
    bounded time while another PvD may still give a native one.
    """

    __slots__ = (
        "query",
        "client",
        "decision",
        "pending",
        "negatives",
        "failures",
        "started",
        "done",
        "wait_until",
        "key",
        "synthesized",
        "refusals",
        "rejected",
        "upstream_ede",
    )

    def __init__(self, query: wire.Query, client: object, decision: Decision, key: Key, now: float):
        self.query = query
        self.client = client
        self.decision = decision
        self.key = key
        self.pending: list[Transaction | Synth] = []
        self.negatives: list[tuple[str, Entry]] = []
        self.synthesized: list[tuple[str, Entry]] = []
        self.failures: list[tuple[str, str]] = []
        self.refusals = 0  # failures that were every server of a PvD refusing the question
        self.rejected = False  # some server answered with an error rcode (so it was reachable)
        self.upstream_ede: tuple[int, str] | None = None  # the first EDE such an answer carried
        self.started = now
        self.done = False
        self.wait_until: float | None = None


class Synth:
    """A local DNS64 synthesis in progress on one PvD (RFC 6147): an AAAA question whose answer
    had no usable AAAA, waiting for the A answer of the same name (``kind`` "aaaa"), or a PTR
    question under the NAT64 prefix waiting for the embedded IPv4 address's in-addr.arpa PTR
    (``kind`` "ptr", ``target`` that name). Resolutions wait on it as on a transaction; it waits
    on the transaction for ``target`` (coalesced with clients' identical questions)."""

    __slots__ = ("key", "kind", "negative", "pvd", "tag", "target", "waiters")

    def __init__(
        self,
        kind: str,
        pvd: str,
        tag: int,
        key: Key,
        target: bytes,
        negative: tuple[bytes, wire.ResponseInfo] | None = None,
    ) -> None:
        self.kind = kind
        self.pvd = pvd
        self.tag = tag
        self.key = key
        self.target = target
        self.negative = negative  # the AAAA answer without usable AAAA: the fallback answer
        self.waiters: list[Resolution] = []


class ProbeResult:
    """The completion of :meth:`Resolver.probe`: one question asked of one PvD for mifdns itself
    (NAT64 discovery, the captive-portal hijack probe, the portal API's host). Collected in
    ``Resolver.probe_results`` for the adapter to drain. ``outcome`` is the transaction's
    (answer, nodata, nxdomain, failed, timeout, cancelled, no-servers); ``response`` and
    ``info`` are set for the first three."""

    __slots__ = ("info", "outcome", "pvd", "qname", "qtype", "response", "tag", "token")

    def __init__(
        self,
        token: int,
        pvd: str,
        tag: int,
        qname: bytes,
        qtype: int,
        outcome: str,
        response: bytes | None = None,
        info: wire.ResponseInfo | None = None,
    ) -> None:
        self.token = token
        self.pvd = pvd
        self.tag = tag
        self.qname = qname
        self.qtype = qtype
        self.outcome = outcome
        self.response = response
        self.info = info

    def addresses(self) -> list[str]:
        """The A and AAAA addresses in the answer section."""
        data, info = self.response, self.info
        if data is None or info is None:
            return []
        out = []
        for rtype, _ttl, off, length in info.answers:
            if (rtype, length) in ((wire.A, 4), (wire.AAAA, 16)):
                out.append(str(ipaddress.ip_address(data[off : off + length])))
        return out

    def __repr__(self) -> str:
        return (
            f"ProbeResult({self.token}, {self.pvd}, {wire.qname_to_text(self.qname)!r}, "
            f"{self.qtype}, {self.outcome})"
        )


class _Probe:
    __slots__ = ("token",)

    def __init__(self, token: int) -> None:
        self.token = token
