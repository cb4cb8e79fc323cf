#!/bin/sh
# Records a real DNS64 resolver: BIND 9 (Debian package bind9) in a network namespace with
# `dns64 64:ff9b::/96` (named-dns64.conf) serving example.net.zone, asked over IPv4 and IPv6
# by `mifdns record --live` (tcpdump in the client namespace). Writes dns64-bind.pcap and
# dns64-bind.server, then runs import-dns64.sh. Needs root.
# Usage: tests/scenarios/recordings/record-dns64.sh
set -eu
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/../../.." && pwd)"
. "$HERE/lib.sh"

make_link
echo "BIND $(named -v | sed -n 's/^BIND \([^ ]*\).*/\1/p')" \
     "(Debian package bind9 $(dpkg-query -W -f='${Version}' bind9))" > "$HERE/dns64-bind.server"
sed -e "s|@RUN@|$RUN|g" -e "s|@HERE@|$HERE|g" "$HERE/named-dns64.conf" > "$RUN/named.conf"
named-checkconf "$RUN/named.conf"
PROBE=ns.example.net start_server named -g -c "$RUN/named.conf"

mifdns record --live --netns "$CLIENT" --interface wlan0 \
    --server 192.0.2.53 --server 2001:db8:1::53 \
    --query "v4only.example.net AAAA" --query "v4only.example.net A" \
    --query "dual.example.net AAAA" --query "dual.example.net A" \
    --query "split.example.net AAAA" --query "split.example.net A" \
    --query "ipv4only.arpa AAAA" --query "nx.example.net AAAA" \
    --pcap-out "$HERE/dns64-bind.pcap" --out /dev/null
stop_server

"$HERE/import-dns64.sh"
