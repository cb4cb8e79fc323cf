"""A small pure-Python reader of DNS traffic in pcap and pcapng files (for ``mifdns record``).

Theory of operation: ``read_packets(path)`` walks the file's records (classic pcap with micro-
or nanosecond timestamps in either byte order, or pcapng's section/interface/enhanced/simple
packet blocks), strips the link layer (Ethernet with VLAN tags, Linux cooked v1 and v2 as
``tcpdump -i any`` writes them, raw IP, BSD loopback), then IPv4/IPv6 (extension headers
skipped; fragments are not reassembled and are skipped) and yields UDP datagrams and TCP
segments. ``dns_messages(packets, ports)`` turns them into DNS messages: a UDP payload is one
message; TCP segments are reassembled per direction by sequence number and split on the
two-byte length prefix (RFC 1035 section 4.2.2). Nothing here interprets DNS beyond that.

``tcpdump -i any`` sees a packet on the loopback twice (out and in): a message identical to
one seen on the same 5-tuple within 50 ms is dropped as such a duplicate.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace

__all__ = ["DnsMessage", "Packet", "PcapError", "dns_messages", "read_packets"]


class PcapError(ValueError):
    """The file is not a pcap/pcapng capture this reader understands."""


@dataclass(frozen=True)
class Packet:
    ts: float
    src: str
    dst: str
    sport: int
    dport: int
    proto: str  # "udp" | "tcp"
    payload: bytes
    seq: int = 0  # TCP only
    flags: int = 0  # TCP only (SYN 0x02, FIN 0x01, RST 0x04)
    iface: str | None = None  # pcapng if_name, or "#IFINDEX" from a Linux cooked v2 header


@dataclass(frozen=True)
class DnsMessage:
    ts: float
    src: str
    dst: str
    sport: int
    dport: int
    transport: str
    data: bytes
    iface: str | None = None


# -- files ---------------------------------------------------------------------------------------
def read_packets(path: str) -> Iterator[Packet]:
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 24:
        raise PcapError(f"{path}: too short to be a capture file")
    magic = data[:4]
    if magic == b"\x0a\x0d\x0d\x0a":
        yield from _pcapng(data, path)
        return
    for endian in ("<", ">"):
        (m,) = struct.unpack(endian + "I", magic)
        if m in (0xA1B2C3D4, 0xA1B23C4D):
            yield from _pcap(data, endian, 1e-9 if m == 0xA1B23C4D else 1e-6, path)
            return
    raise PcapError(f"{path}: not a pcap or pcapng file (magic {magic.hex()})")


def _pcap(data: bytes, e: str, unit: float, path: str) -> Iterator[Packet]:
    linktype = struct.unpack_from(e + "I", data, 20)[0] & 0x0FFFFFFF
    pos = 24
    while pos + 16 <= len(data):
        sec, frac, incl, _orig = struct.unpack_from(e + "IIII", data, pos)
        pos += 16
        frame = data[pos : pos + incl]
        pos += incl
        yield from _frame(linktype, frame, sec + frac * unit)


def _pcapng(data: bytes, path: str) -> Iterator[Packet]:
    pos = 0
    e = "<"
    ifaces: list[tuple[int, float, str | None]] = []  # (linktype, s per ts unit, if_name)
    while pos + 12 <= len(data):
        btype = struct.unpack_from(e + "I", data, pos)[0]
        if btype == 0x0A0D0D0A:  # section header: byte order for this section
            bom = data[pos + 8 : pos + 12]
            e = "<" if bom == b"\x4d\x3c\x2b\x1a" else ">" if bom == b"\x1a\x2b\x3c\x4d" else ""
            if not e:
                raise PcapError(f"{path}: bad pcapng byte-order magic at offset {pos}")
            ifaces = []
        blen = struct.unpack_from(e + "I", data, pos + 4)[0]
        if blen < 12 or pos + blen > len(data):
            break  # a truncated capture: keep what came before
        body = data[pos + 8 : pos + blen - 4]
        if btype == 1:  # interface description
            linktype = struct.unpack_from(e + "H", body, 0)[0]
            ifaces.append((linktype, *_if_options(body[8:], e)))
        elif btype == 6 and len(body) >= 20:  # enhanced packet
            iface, hi, lo, incl = struct.unpack_from(e + "IIII", body, 0)
            if iface < len(ifaces):
                linktype, unit, name = ifaces[iface]
                yield from _frame(linktype, body[20 : 20 + incl], ((hi << 32) | lo) * unit, name)
        elif btype == 3 and ifaces:  # simple packet (interface 0, no timestamp)
            orig = struct.unpack_from(e + "I", body, 0)[0]
            yield from _frame(ifaces[0][0], body[4 : 4 + orig], 0.0, ifaces[0][2])
        elif btype == 2 and len(body) >= 20:  # obsolete packet block
            iface, _drops, hi, lo, incl = struct.unpack_from(e + "HHIII", body, 0)
            if iface < len(ifaces):
                linktype, unit, name = ifaces[iface]
                yield from _frame(linktype, body[20 : 20 + incl], ((hi << 32) | lo) * unit, name)
        pos += blen


def _if_options(opts: bytes, e: str) -> tuple[float, str | None]:
    """(seconds per timestamp unit, if_name) from an interface description's options."""
    unit, name = 1e-6, None
    pos = 0
    while pos + 4 <= len(opts):
        code, length = struct.unpack_from(e + "HH", opts, pos)
        if code == 0:
            break
        value = opts[pos + 4 : pos + 4 + length]
        if code == 9 and length >= 1:  # if_tsresol
            v = value[0]
            unit = 2.0 ** -(v & 0x7F) if v & 0x80 else 10.0**-v
        elif code == 2:  # if_name
            name = value.rstrip(b"\0").decode("utf-8", "replace") or None
        pos += 4 + ((length + 3) & ~3)
    return unit, name


# -- layers --------------------------------------------------------------------------------------
def _frame(linktype: int, frame: bytes, ts: float, iface: str | None = None) -> Iterator[Packet]:
    ethertype, pos = None, 0
    if linktype == 1:  # Ethernet
        if len(frame) < 14:
            return
        ethertype, pos = struct.unpack_from(">H", frame, 12)[0], 14
        while ethertype in (0x8100, 0x88A8) and len(frame) >= pos + 4:
            ethertype, pos = struct.unpack_from(">H", frame, pos + 2)[0], pos + 4
    elif linktype == 113:  # Linux cooked v1
        if len(frame) < 16:
            return
        ethertype, pos = struct.unpack_from(">H", frame, 14)[0], 16
    elif linktype == 276:  # Linux cooked v2
        if len(frame) < 20:
            return
        ethertype, pos = struct.unpack_from(">H", frame, 0)[0], 20
        iface = iface or f"#{struct.unpack_from('>I', frame, 4)[0]}"
    elif linktype in (101, 12, 14):  # raw IP
        ethertype = 0x0800 if frame[:1] and frame[0] >> 4 == 4 else 0x86DD
    elif linktype == 228:
        ethertype = 0x0800
    elif linktype == 229:
        ethertype = 0x86DD
    elif linktype == 0:  # BSD loopback: host-order address family
        if len(frame) < 4:
            return
        fam = struct.unpack_from("<I", frame, 0)[0]
        fam = fam if fam < 256 else struct.unpack_from(">I", frame, 0)[0]
        ethertype, pos = (0x0800 if fam == 2 else 0x86DD), 4
    else:
        return
    if ethertype == 0x0800:
        packets = _ipv4(frame[pos:], ts)
    elif ethertype == 0x86DD:
        packets = _ipv6(frame[pos:], ts)
    else:
        return
    for pk in packets:
        yield pk if iface is None else replace(pk, iface=iface)


def _ipv4(p: bytes, ts: float) -> Iterator[Packet]:
    if len(p) < 20 or p[0] >> 4 != 4:
        return
    ihl = (p[0] & 0x0F) * 4
    total = struct.unpack_from(">H", p, 2)[0]
    frag = struct.unpack_from(">H", p, 6)[0]
    if frag & 0x3FFF:  # MF set or an offset: a fragment
        return
    src = str(ipaddress.IPv4Address(p[12:16]))
    dst = str(ipaddress.IPv4Address(p[16:20]))
    yield from _transport(p[9], p[ihl : total if total >= ihl else len(p)], src, dst, ts)


def _ipv6(p: bytes, ts: float) -> Iterator[Packet]:
    if len(p) < 40 or p[0] >> 4 != 6:
        return
    plen = struct.unpack_from(">H", p, 4)[0]
    nxt = p[6]
    src = str(ipaddress.IPv6Address(p[8:24]))
    dst = str(ipaddress.IPv6Address(p[24:40]))
    rest = p[40 : 40 + plen] if plen else p[40:]
    while nxt in (0, 43, 60, 51):  # hop-by-hop, routing, destination options, AH
        if len(rest) < 8:
            return
        hlen = (rest[1] + 2) * 4 if nxt == 51 else (rest[1] + 1) * 8
        nxt, rest = rest[0], rest[hlen:]
    if nxt == 44:  # fragment
        return
    yield from _transport(nxt, rest, src, dst, ts)


def _transport(proto: int, p: bytes, src: str, dst: str, ts: float) -> Iterator[Packet]:
    if proto == 17 and len(p) >= 8:
        sport, dport, ulen = struct.unpack_from(">HHH", p, 0)
        end = ulen if 8 <= ulen <= len(p) else len(p)
        yield Packet(ts, src, dst, sport, dport, "udp", p[8:end])
    elif proto == 6 and len(p) >= 20:
        sport, dport, seq = struct.unpack_from(">HHI", p, 0)
        off = (p[12] >> 4) * 4
        yield Packet(ts, src, dst, sport, dport, "tcp", p[off:], seq, p[13])


# -- DNS messages --------------------------------------------------------------------------------
class _Stream:
    """One direction of a TCP connection: bytes in sequence order, then length-framed."""

    def __init__(self) -> None:
        self.next: int | None = None
        self.pending: dict[int, bytes] = {}
        self.buf = b""

    def add(self, seq: int, payload: bytes, syn: bool) -> None:
        if syn:
            self.next = (seq + 1) & 0xFFFFFFFF
            return
        if not payload:
            return
        if self.next is None:  # the capture started mid-connection
            self.next = seq
        self.pending.setdefault(seq, payload)
        progressed = True
        while progressed:
            progressed = False
            for s in list(self.pending):
                d = (self.next - s) & 0xFFFFFFFF  # how far `next` is past this segment's start
                if d >= 0x80000000:
                    continue  # still in the future: a gap before it
                data = self.pending.pop(s)
                if d < len(data):
                    self.buf += data[d:]
                    self.next = (self.next + len(data) - d) & 0xFFFFFFFF
                    progressed = True
                # else: all of it came before (a retransmission or a loopback copy)

    def messages(self) -> Iterator[bytes]:
        while len(self.buf) >= 2:
            n = struct.unpack_from(">H", self.buf, 0)[0]
            if len(self.buf) < 2 + n:
                return
            msg, self.buf = self.buf[2 : 2 + n], self.buf[2 + n :]
            yield msg


def dns_messages(packets: Iterable[Packet], ports: Iterable[int] = (53,)) -> list[DnsMessage]:
    """DNS messages to or from ``ports`` in capture order (see the module docstring)."""
    ports = set(ports)
    out: list[DnsMessage] = []
    streams: dict[tuple[str, int, str, int], _Stream] = {}
    recent: dict[tuple[str, int, str, int, str, bytes], float] = {}
    for pk in packets:
        if pk.sport not in ports and pk.dport not in ports:
            continue
        found: list[bytes]
        if pk.proto == "udp":
            found = [pk.payload] if len(pk.payload) >= 12 else []
        else:
            st = streams.setdefault((pk.src, pk.sport, pk.dst, pk.dport), _Stream())
            st.add(pk.seq, pk.payload, bool(pk.flags & 0x02))
            found = [m for m in st.messages() if len(m) >= 12]
            if pk.flags & 0x05:  # FIN/RST: a new connection may reuse the ports
                streams.pop((pk.src, pk.sport, pk.dst, pk.dport), None)
        for data in found:
            key = (pk.src, pk.sport, pk.dst, pk.dport, pk.proto, data)
            if pk.proto == "udp" and key in recent and pk.ts - recent[key] < 0.05:
                continue  # the second copy of a loopback packet under `tcpdump -i any`
            recent[key] = pk.ts
            out.append(DnsMessage(pk.ts, pk.src, pk.dst, pk.sport, pk.dport, pk.proto, data,
                                  pk.iface))  # fmt: skip
    return out
