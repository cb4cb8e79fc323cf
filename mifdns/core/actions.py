"""What the resolver asks of its adapter besides sending (``transaction.Send``)."""

from __future__ import annotations

from .transaction import Send, Transaction


class Reply:
    """Send ``data`` to ``client`` (as the listener gave it to ``handle_query``)."""

    __slots__ = ("client", "data")

    def __init__(self, client: object, data: bytes) -> None:
        self.client = client
        self.data = data


class Release:
    """``txn`` ended: forget its sockets."""

    __slots__ = ("txn",)

    def __init__(self, txn: Transaction) -> None:
        self.txn = txn


Action = Send | Reply | Release
