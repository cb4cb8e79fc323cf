#!/bin/sh
# Puts the exchanges of the stored dnsmasq captures into the captive-portal scenarios of the
# library (their steps, stories and other networks are kept). No root needed.
set -eu
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/../../.." && pwd)"
SERVER="$(cat "$HERE/captive-dnsmasq.server")"
for scenario in captive-portal-avoided captive-portal-login captive-portal-detected; do
    PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" python3 -m mifdns record \
        --from-pcap "$HERE/captive-dnsmasq-portal.pcap" --when captive \
        --from-pcap "$HERE/captive-dnsmasq-open.pcap" --when open \
        --network hotel=192.0.2.53 \
        --meta "server=$SERVER" \
        --meta "config=tests/scenarios/recordings/dnsmasq-captive.conf before login, dnsmasq-open.conf after" \
        --meta "how=tests/scenarios/recordings/record-captive.sh: dnsmasq in a network namespace, asked by mifdns record --live (tcpdump)" \
        --template "$REPO/mifdns/scenarios/$scenario.yaml" \
        --out "$REPO/mifdns/scenarios/$scenario.yaml"
done
