#!/bin/sh
# Records a real captive portal's DNS: dnsmasq (Debian package dnsmasq-base) in a network
# namespace, first as the portal (dnsmasq-captive.conf), then after login (dnsmasq-open.conf),
# asked the same questions by `mifdns record --live` (tcpdump in the client namespace).
# Writes captive-dnsmasq-portal.pcap, captive-dnsmasq-open.pcap and captive-dnsmasq.server,
# then runs import-captive.sh. Needs root. Usage: tests/scenarios/recordings/record-captive.sh
set -eu
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/../../.." && pwd)"
. "$HERE/lib.sh"

ask() {  # ask PCAP: capture the questions to PCAP
    mifdns record --live --netns "$CLIENT" --interface wlan0 --server 192.0.2.53 \
        --query "www.example.com A" --query "www.example.com AAAA" \
        --query "mail.example.org A" --query "portal.hotel.example A" \
        --query "nx.example.com A" --pcap-out "$1" --out /dev/null
}

make_link
echo "dnsmasq $(dnsmasq --version | sed -n '1s/^Dnsmasq version \([^ ]*\).*/\1/p')" \
     "(Debian package dnsmasq-base $(dpkg-query -W -f='${Version}' dnsmasq-base))" \
     > "$HERE/captive-dnsmasq.server"

start_server dnsmasq --keep-in-foreground --conf-file="$HERE/dnsmasq-captive.conf" \
    --pid-file="$RUN/dnsmasq.pid" --log-facility=- --log-queries
ask "$HERE/captive-dnsmasq-portal.pcap"
stop_server

start_server dnsmasq --keep-in-foreground --conf-file="$HERE/dnsmasq-open.conf" \
    --pid-file="$RUN/dnsmasq.pid" --log-facility=- --log-queries
ask "$HERE/captive-dnsmasq-open.pcap"
stop_server

"$HERE/import-captive.sh"
