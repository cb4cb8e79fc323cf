"""The test bed: network namespaces, simulated networks and fake upstream DNS servers.

Used by the integration tests, ``mifdns demo`` and the scenario replayer::

    from mifdns.harness import Topology, FakeUpstream, ServerLoop, query_from

    with Topology() as topo:
        corp = topo.add_network("corp", "corp0")          # 192.0.2.10 here, 192.0.2.53 there
        loop = ServerLoop()
        up = FakeUpstream(corp.ns, corp.listen_addrs, records={"www.corp.example": {"A": ...}})
        loop.call(up.start())
        query_from(topo.host, "192.0.2.53", "www.corp.example", ifname="corp0")

Needs root (``netns.available()`` says why not). Names are imported lazily, so importing one
part (say ``netns``) does not pull in dnslib.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "CommandError",
    "FakeUpstream",
    "HarnessError",
    "Network",
    "Seen",
    "ServerLoop",
    "Topology",
    "available",
    "entered",
    "query_from",
    "socket_in",
    "sweep_stale",
]

_WHERE = {
    "CommandError": "netns",
    "HarnessError": "netns",
    "available": "netns",
    "entered": "netns",
    "socket_in": "netns",
    "Network": "topology",
    "Topology": "topology",
    "sweep_stale": "topology",
    "FakeUpstream": "fakeupstream",
    "Seen": "fakeupstream",
    "ServerLoop": "fakeupstream",
    "query_from": "fakeupstream",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
