"""One transaction against random upstream traffic: spoofed, stray, late, garbage, real.

A transaction must accept a reply only if its source is the server of the attempt in flight,
its ID is that attempt's, it came over the attempt's transport and its question is the one
asked; or if it is the answer (NOERROR/NXDOMAIN, not truncated) to an earlier UDP attempt given
up for a timeout, from that attempt's server with that attempt's ID and question. Anything else
leaves the transaction as it was (only ``ignored`` counts it). Whatever
arrives, the walk over the servers is bounded, a finished transaction never changes again,
and a truncated UDP answer moves to TCP on the same server.
"""

from __future__ import annotations

import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import hypothesis.strategies as st
from hypothesis import event as tally
from hypothesis import example, given, settings

from mifdns.core import wire
from mifdns.core.pvd import parse_server
from mifdns.core.transaction import Outcome, Send, Transaction

SERVERS = tuple(parse_server(s) for s in ("192.0.2.53", "198.51.100.53:5353", "2001:db8::53"))
QNAME = wire.text_to_qname("www.example.com")

event = st.one_of(
    st.tuples(
        st.just("reply"),
        st.integers(0, 3),  # the source: a server (3: a stranger)
        st.sampled_from(["right", "wrong", "old", "prev"]),  # the ID (first, previous attempt's)
        st.sampled_from(["same", "case", "other-name", "other-type"]),  # the question
        st.sampled_from([0, 2, 3, 5, 1, 4]),  # the rcode
        st.booleans(),  # TC
        st.booleans(),  # over TCP
        st.booleans(),
    ),  # garbage instead of a message
    st.tuples(st.just("wait"), st.sampled_from([0.1, 0.5, 1.0, 2.5])),
    # a clean answer to an earlier attempt (given up for a timeout, or ended otherwise), or one
    # spoiled in a single way
    st.tuples(
        st.just("late"),
        st.integers(0, 29),  # which earlier attempt
        st.sampled_from(["clean", "clean", "stranger", "servfail", "tc", "tcp", "other-name"]),
    ),
)


def message(txid: int, question: str, rcode: int, tc: bool) -> bytes:
    name = {
        "same": "www.example.com",
        "case": "WWW.Example.COM",
        "other-name": "evil.example.com",
        "other-type": "www.example.com",
    }[question]
    q = dns.message.make_query(name, "AAAA" if question == "other-type" else "A")
    r = dns.message.make_response(q)
    r.id = txid
    r.set_rcode(rcode)
    if tc:
        r.flags |= dns.flags.TC
    elif rcode == 0:
        r.answer.append(dns.rrset.from_text(name + ".", 60, "IN", "A", "192.0.2.80"))
    return r.to_wire()


@settings(max_examples=1000, deadline=None)
@given(n_servers=st.integers(1, 3), events=st.lists(event, max_size=30))
@example(  # found by this test: over TCP, a timed-out UDP attempt's ID was taken
    n_servers=1,
    events=[
        ("wait", 1.0),
        ("reply", 0, "right", "same", 0, True, False, False),
        ("late", 0, "tcp"),
    ],
)
def test_only_the_reply_to_the_attempt_in_flight_or_a_timed_out_one_is_taken(n_servers, events):
    ids = iter(range(1000, 100000, 7))
    now = 0.0
    txn = Transaction(
        "wifi",
        1,
        "wlan0",
        SERVERS[:n_servers],
        QNAME,
        wire.A,
        1,
        False,
        False,
        now,
        1.0,
        5.0,
        lambda: next(ids),
    )
    send = txn.start(now)
    assert isinstance(send, Send) and send.txid == txn.txid and not send.tcp
    old_ids = [txn.txid]
    sent = [(txn.txid, txn.server)]  # every attempt: (ID, server)
    given_up: list[tuple[int, object]] = []  # UDP attempts that timed out: (ID, server)
    for ev in events:
        if ev[0] == "late":
            earlier = [a for a in sent if a[0] != txn.txid]
            if not earlier:
                continue
            _, pick, spoil = ev
            txid, server = earlier[pick % len(earlier)]
            data = message(
                txid,
                "other-name" if spoil == "other-name" else "case",
                2 if spoil == "servfail" else 0,
                spoil == "tc",
            )
            source = ("203.0.113.66", 53) if spoil == "stranger" else (server.host, server.port)
            before = (txn.outcome, txn.response, txn.ignored)
            send = txn.on_reply(data, source, spoil == "tcp", now)
            late = before[0] is None and spoil == "clean" and (txid, server) in given_up
            tally("late answer taken" if late else "late answer ignored")
            assert send is None
            if late:
                assert txn.outcome is Outcome.ANSWER and txn.response == data
            else:
                assert (txn.outcome, txn.response, txn.ignored) == (*before[:2], before[2] + 1)
            continue
        state = (txn.txid, txn.server, txn.tcp, txn.tries, txn.outcome, txn.response)
        deadline = txn.deadline
        if ev[0] == "wait":
            now += ev[1]
            send = txn.on_timeout(now)
            if state[4] is None and not state[2] and now >= deadline:
                given_up.append((state[0], state[1]))
        else:
            _, src, which, question, rcode, tc, tcp, garbage = ev
            txid = {
                "right": txn.txid,
                "wrong": (txn.txid + 1) & 0xFFFF,
                "old": old_ids[0],
                "prev": old_ids[-2] if len(old_ids) > 1 else old_ids[0],
            }[which]
            data = (
                txid.to_bytes(2, "big") + b"\x81\x80garbage"
                if garbage
                else message(txid, question, rcode, tc)
            )
            source = (
                SERVERS[src].host if src < n_servers else "203.0.113.66",
                SERVERS[src].port if src < n_servers else 53,
            )
            ignored = txn.ignored
            send = txn.on_reply(data, source, tcp, now)
            matches = (
                not state[4]
                and src < n_servers
                and SERVERS[src] == state[1]
                and tcp == state[2]
                and txid == state[0]
            )
            late = (
                not state[4]
                and not matches
                and src < n_servers
                and not tcp
                and (txid, SERVERS[src]) in given_up
                and not garbage
                and question in ("same", "case")
                and rcode in (0, 3)
                and not tc
            )
            if late:  # the answer to an attempt given up for a timeout: taken
                assert txn.outcome in (Outcome.ANSWER, Outcome.NODATA, Outcome.NXDOMAIN)
                assert txn.response == data and send is None
                assert txn.ignored == ignored
                continue
            taken = matches and not garbage and question in ("same", "case")
            if state[4] is not None or not matches or (not garbage and not taken):
                # not the attempt's reply (or the transaction is over): nothing moved
                assert (
                    txn.txid,
                    txn.server,
                    txn.tcp,
                    txn.tries,
                    txn.outcome,
                    txn.response,
                ) == state
                assert txn.ignored == ignored + 1 and send is None
                continue
            if taken and rcode in (0, 3) and not (tc and not tcp):
                assert txn.outcome in (Outcome.ANSWER, Outcome.NODATA, Outcome.NXDOMAIN)
                assert txn.response == data and send is None
            if taken and tc and not tcp:  # truncated over UDP: the same server over TCP
                assert send is not None and send.tcp and send.server == state[1]
        if state[4] is not None:  # finished: never changes again
            assert (txn.outcome, txn.response, txn.tries) == (state[4], state[5], state[3])
            assert send is None
        if send is not None:
            assert send.txid == txn.txid and send.server == txn.server
            old_ids.append(txn.txid)
            sent.append((txn.txid, txn.server))
        assert txn.tries <= 3 * n_servers + 3  # the walk is bounded
    if txn.outcome is None:  # past the total budget, the next timeout ends it
        assert txn.on_timeout(now + 10.0) is None
        assert txn.outcome in (Outcome.TIMEOUT, Outcome.FAILED)
