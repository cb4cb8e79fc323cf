#!/bin/sh
# Puts the exchanges of the stored BIND DNS64 capture into the DNS64 scenarios of the library
# (their steps, stories and other networks are kept). No root needed.
set -eu
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/../../.." && pwd)"
SERVER="$(cat "$HERE/dns64-bind.server")"
for scenario in rfc6418-6-dns64 dns64-synthesized-kind dns64-discovery dns64-native-preferred; do
    PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" python3 -m mifdns record \
        --from-pcap "$HERE/dns64-bind.pcap" \
        --network cell=192.0.2.53,2001:db8:1::53 \
        --meta "server=$SERVER" \
        --meta "config=tests/scenarios/recordings/named-dns64.conf with example.net.zone" \
        --meta "how=tests/scenarios/recordings/record-dns64.sh: named in a network namespace, asked by mifdns record --live (tcpdump)" \
        --template "$REPO/mifdns/scenarios/$scenario.yaml" \
        --out "$REPO/mifdns/scenarios/$scenario.yaml"
done
