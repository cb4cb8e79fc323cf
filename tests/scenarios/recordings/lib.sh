# Shared by record-*.sh (sourced, POSIX sh). Builds a client namespace and a server namespace
# joined by a veth pair, numbered like a replayed network (docs/scenarios.md): client
# 192.0.2.10 / 2001:db8:1::10 on "wlan0", server 192.0.2.53 / 2001:db8:1::53 on "eth0".
# Everything it creates is removed on exit, also on failure or Ctrl-C.

ID="mifrec$$"
CLIENT="$ID-client"
SERVER="$ID-server"
RUN="$(mktemp -d /tmp/mifrec.XXXXXX)"
SERVER_PID=""

cleanup() {
    [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
    ip netns del "$CLIENT" 2>/dev/null
    ip netns del "$SERVER" 2>/dev/null
    rm -rf "$RUN"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

make_link() {
    ip netns add "$CLIENT"
    ip netns add "$SERVER"
    ip link add wlan0 netns "$CLIENT" type veth peer name eth0 netns "$SERVER"
    ip -n "$SERVER" link set lo up
    ip -n "$SERVER" address add 192.0.2.53/24 dev eth0
    ip -n "$SERVER" address add 2001:db8:1::53/64 dev eth0 nodad
    ip -n "$SERVER" link set eth0 up
    ip -n "$CLIENT" link set lo up
    ip -n "$CLIENT" address add 192.0.2.10/24 dev wlan0
    ip -n "$CLIENT" address add 2001:db8:1::10/64 dev wlan0 nodad
    ip -n "$CLIENT" link set wlan0 up
}

# start_server CMD... : run a DNS server in the server namespace until stop_server; waits
# until it answers $PROBE (default ready.invalid) on 192.0.2.53.
start_server() {
    ip netns exec "$SERVER" "$@" &
    SERVER_PID=$!
    i=0
    until ip netns exec "$CLIENT" dig +time=1 +tries=1 @192.0.2.53 "${PROBE:-ready.invalid}" >/dev/null 2>&1; do
        i=$((i + 1))
        [ "$i" -gt 50 ] && { echo "the server did not come up" >&2; exit 1; }
        sleep 0.1
    done
}

stop_server() {
    kill "$SERVER_PID"
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
}

mifdns() {
    PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" python3 -m mifdns "$@"
}
