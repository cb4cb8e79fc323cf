#!/usr/bin/env bash
# run.sh - the whole mifdns benchmark (issue 6) in one command.
#
# 1. Installs what is missing (dnsperf, dnsmasq-base, unbound, nsd, bind9-dnsutils) with apt-get,
#    a temporary policy-rc.d keeping Debian from starting services on port 53.
# 2. hit, miss, tcp, lat, mem: runs the referee, ../shared/bench/compare.sh (NSD upstream with a
#    synthetic zone, dnsmasq and Unbound as caching forwarders, interleaved rounds, servers and
#    dnsperf pinned to separate cores), with mifdns started from this checkout on the realistic
#    configuration: 3 PvDs and 50 routing domains, the benchmark's names on the one PvD (wifi, on
#    lo) whose default route leads to the NSD upstream.
# 3. purge: its own NSD and mifdns (same configuration, cache sized for 1M entries), 900k names
#    cached on wifi and 100k on lab, then per round: detach lab while a client keeps hit queries
#    in flight (bench/purge_probe.py), record the longest reply gap, re-attach and refill lab.
# 4. Prints the referee's table (medians, [min-max], CPU us/query, ratios to dnsmasq and Unbound)
#    and the purge table (median [min-max] over rounds), and checks them against the targets.
# Every process it starts is stopped by PID, in reverse order, on exit, failure or Ctrl-C
# (compare.sh does the same for its own).
#
# Usage: sudo bench/run.sh [options]
#   -t TESTS  comma list of hit,miss,tcp,lat,mem,purge (default: all six)
#   -r N      rounds (default 3)          -l SECS  seconds per dnsperf run (default 10)
#   -S CPU    server core (default 1)     -G CPU   dnsperf/upstream/client core (default 0)
#   -n        no apt-get                  -k       keep the work directory
#   -w DIR    work directory (default: mktemp -d /tmp/mifdns-bench.XXXXXX)
# Env: PYTHON (the interpreter that has this checkout's mifdns importable; default python3),
#      COMPARE (the referee; default ../shared/bench/compare.sh from the repository root).
set -euo pipefail

TESTS=hit,miss,tcp,lat,mem,purge; ROUNDS=3; SECS=10; SRV_CPU=1; GEN_CPU=0
INSTALL=1; KEEP=0; WORK=""
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit "${1:-0}"; }
while getopts "t:r:l:S:G:nkw:h" o; do
  case $o in
    t) TESTS=$OPTARG ;; r) ROUNDS=$OPTARG ;; l) SECS=$OPTARG ;; S) SRV_CPU=$OPTARG ;;
    G) GEN_CPU=$OPTARG ;; n) INSTALL=0 ;; k) KEEP=1 ;; w) WORK=$OPTARG ;; h) usage 0 ;; *) usage 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "run as root (port 53, SO_BINDTODEVICE, apt-get)" >&2; exit 2; }
has_test() { [[ ",$TESTS," == *",$1,"* ]]; }
REPO=$(cd "$(dirname "$0")/.." && pwd)
COMPARE=${COMPARE:-$REPO/../shared/bench/compare.sh}
PY=$(command -v "${PYTHON:-python3}")
UP_ADDR=127.0.0.2            # compare.sh's upstream; the purge phase reuses it after compare.sh
LISTEN=127.0.0.53

# ---------------------------------------------------------------- cleanup
PIDS=()
POLICY_CREATED=0
cleanup() {
  local rc=$? i pid
  trap - EXIT INT TERM
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do kill -TERM "${PIDS[$i]}" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  [ "$POLICY_CREATED" = 1 ] && rm -f /usr/sbin/policy-rc.d
  if [ -n "${WORK:-}" ] && [ -d "$WORK" ]; then
    if [ "$KEEP" = 1 ] || [ "$rc" != 0 ]; then echo "work dir kept: $WORK" >&2; else rm -rf "$WORK"; fi
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- install
need=()
command -v dnsperf >/dev/null || need+=(dnsperf)
command -v dnsmasq >/dev/null || need+=(dnsmasq-base)
command -v unbound >/dev/null || need+=(unbound)
command -v nsd >/dev/null || need+=(nsd)
command -v dig >/dev/null || need+=(bind9-dnsutils)
# to build the C UDP loop (mifdns/aio/_udpbatch.c) when this checkout lacks it
if ! (cd "$REPO" && "$PY" -c 'import mifdns.aio._udpbatch') 2>/dev/null; then
  command -v gcc >/dev/null || need+=(gcc libc6-dev)
  "$PY" -c 'import os, sysconfig, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' || need+=(python3-dev)
fi
if [ ${#need[@]} -gt 0 ]; then
  [ "$INSTALL" = 1 ] || { echo "missing: ${need[*]} (and -n given)" >&2; exit 2; }
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; POLICY_CREATED=1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  [ "$POLICY_CREATED" = 1 ] && { rm -f /usr/sbin/policy-rc.d; POLICY_CREATED=0; }
fi
[ -f "$COMPARE" ] || { echo "the referee is missing: $COMPARE" >&2; exit 2; }
# this checkout's mifdns, whatever the directory the referee starts it in
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
(cd / && "$PY" -c 'import mifdns') 2>/dev/null || { echo "$PY cannot import mifdns from $REPO" >&2; exit 2; }
if ! (cd / && "$PY" -c 'import mifdns.aio._udpbatch') 2>/dev/null; then
  (cd "$REPO" && "$PY" setup.py -q build_ext --inplace) >/dev/null 2>&1 \
    || echo "warning: the C UDP loop did not build; mifdns runs its Python loop (slower hits)" >&2
fi
echo "mifdns UDP loop: $(cd / && "$PY" -c 'from mifdns.aio import listener as l; print("c (recvmmsg/sendmmsg)" if l._udpbatch else "python")')"

[ -n "$WORK" ] || WORK=$(mktemp -d /tmp/mifdns-bench.XXXXXX)
mkdir -p "$WORK"

# ---------------------------------------------------------------- the realistic configuration
# wifi: the default route (the benchmark's names, upstream NSD); vpn: 33 routing domains and two
# reverse networks, exclusive; lab: 15 routing domains, and x.w.bench.example for the purge test.
# 2 + 33 + 15 = 50 routing domains. vpn and lab have servers nobody asks in the compare tests.
write_config() {  # file control-socket lab-servers
  local vpn lab i
  vpn='"~corp.example", "~internal.example.com", "~vpn.example.net"'
  for i in $(seq 0 29); do vpn+=", \"~corp$i.example\""; done
  lab='"~k8s.example.org"'
  for i in $(seq 0 13); do lab+=", \"~lab$i.test.example\""; done
  cat > "$1" <<EOF
listen: ["$LISTEN:53"]
control_socket: $2
netlink: false
cache: {max_entries: 1200000, max_bytes: 4294967296}
pvds:
  - name: wifi
    interface: lo
    servers: ["$UP_ADDR"]
    default_route: true
    domains: ["home.arpa", "~lan"]
  - name: vpn
    interface: lo
    servers: ["127.0.0.1:5399"]
    exclusive: true
    networks: ["10.99.0.0/16", "172.20.0.0/14"]
    domains: [$vpn]
  - name: lab
    interface: lo
    servers: [$3]
    domains: [$lab, "~x.w.bench.example"]
EOF
}
write_config "$WORK/mifdns.yaml" "$WORK/ctl.sock" '"127.0.0.1:5398"'
"$PY" -m mifdns check-config "$WORK/mifdns.yaml" >/dev/null
MIFDNS_CMD="$PY -m mifdns run --config $WORK/mifdns.yaml --log-level warning"

# ---------------------------------------------------------------- hit, miss, tcp, lat, mem
ref_tests=()
for t in hit miss tcp lat mem; do has_test "$t" && ref_tests+=("$t"); done
if [ ${#ref_tests[@]} -gt 0 ]; then
  (IFS=,; echo "== referee: compare.sh -t ${ref_tests[*]} -r $ROUNDS -l $SECS" >&2)
  (cd "$REPO" && IFS=, && bash "$COMPARE" -n -r "$ROUNDS" -l "$SECS" -S "$SRV_CPU" -G "$GEN_CPU" \
     -t "${ref_tests[*]}" "mifdns=$LISTEN:53@$MIFDNS_CMD") | tee "$WORK/compare.out"
fi

# ---------------------------------------------------------------- purge
if has_test purge; then
  echo "== purge: detach a PvD holding 100k of 1M cached entries ($ROUNDS rounds)" >&2
  P="$WORK/purge"; mkdir -p "$P"
  {
    printf '$ORIGIN bench.example.\n$TTL 3600\n'
    printf '@ IN SOA ns.bench.example. hostmaster.bench.example. 1 3600 600 86400 3600\n@ IN NS ns\nns IN A %s\n' "$UP_ADDR"
    awk 'BEGIN { for (i = 0; i < 10000; i++) printf "h%d IN A 10.0.%d.%d\n", i, int(i / 256), i % 256 }'
    printf '*.w 3600 IN A 10.1.0.1\n'
  } > "$P/bench.example.zone"
  cat > "$P/nsd.conf" <<EOF
server:
    ip-address: $UP_ADDR@53
    do-ip6: no
    server-count: 1
    username: ""
    chroot: ""
    database: ""
    zonesdir: "$P"
    pidfile: "$P/nsd.pid"
    xfrdfile: "$P/nsd.xfrd"
    zonelistfile: "$P/nsd.zonelist"
    xfrdir: "$P"
    logfile: "$P/nsd.log"
    verbosity: 0
    rrl-ratelimit: 0
    rrl-whitelist-ratelimit: 0
    minimal-responses: yes
remote-control:
    control-enable: no
zone:
    name: bench.example
    zonefile: bench.example.zone
EOF
  write_config "$P/mifdns.yaml" "$P/ctl.sock" "\"$UP_ADDR\""
  awk 'BEGIN { for (i = 0; i < 10000; i++) printf "h%d.bench.example A\n", i }' > "$P/q_hit.txt"
  awk 'BEGIN { for (i = 0; i < 900000; i++) printf "n%d.w.bench.example A\n", i }' > "$P/q_wifi.txt"
  awk 'BEGIN { for (i = 0; i < 100000; i++) printf "n%d.x.w.bench.example A\n", i }' > "$P/q_lab.txt"
  answers() {  # addr name (an address in the answer: dig +short prints its errors, too)
    for _ in $(seq 100); do
      dig +short +time=1 +tries=1 @"$1" "$2" 2>/dev/null | grep -qE '^[0-9a-fA-F:.]+$' && return 0
      sleep 0.1
    done
    echo "no answer from $1 for $2" >&2; return 1
  }
  fill() { taskset -c "$GEN_CPU" dnsperf -s "$LISTEN" -d "$1" -n 1 -q 500 -t 5 2>&1 | grep -E 'completed|lost' >&2; }
  ctl() { "$PY" -m mifdns ctl --socket "$P/ctl.sock" --json "$@"; }
  taskset -c "$GEN_CPU" nsd -d -c "$P/nsd.conf" > "$P/nsd.out" 2>&1 & PIDS+=($!)
  answers "$UP_ADDR" h0.bench.example
  taskset -c "$SRV_CPU" "$PY" -m mifdns run --config "$P/mifdns.yaml" --log-level warning \
    > "$P/mifdns.log" 2>&1 & PIDS+=($!)
  answers "$LISTEN" h0.bench.example
  echo "filling: 10k hit names, 900k on wifi, 100k on lab" >&2
  fill "$P/q_hit.txt"; fill "$P/q_wifi.txt"; fill "$P/q_lab.txt"
  : > "$P/results.jsonl"
  for ((r = 0; r < ROUNDS; r++)); do
    ctl status > "$P/status.json"
    "$PY" - "$P/status.json" <<'EOF' >&2
import json, sys
s = json.load(open(sys.argv[1]))
print(f"round start: cache {s['cache']['entries']} entries, per PvD {s['cache']['per_pvd']}")
EOF
    taskset -c "$GEN_CPU" "$PY" "$REPO/bench/purge_probe.py" --server "$LISTEN" \
      --control "$P/ctl.sock" --pvd lab | tee -a "$P/results.jsonl" >&2
    ctl attach lab >/dev/null
    sleep 0.5  # the last chunks of the purged partition are freed in the background
    fill "$P/q_lab.txt"
  done
  "$PY" - "$P/results.jsonl" <<'EOF' | tee "$WORK/purge.out"
import json, statistics as st, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
def col(k): return [r[k] for r in rows if r.get(k) is not None]
def show(label, vals, unit="ms"):
    if vals:
        print(f"  {label:44s} {st.median(vals):9.2f} [{min(vals):.2f}-{max(vals):.2f}] {unit}")
print(f"\n== purge  (median of {len(rows)} rounds, [min-max])")
show("entries purged per detach", col("purged"), "entries")
show("longest reply gap during the detach", col("max_gap_ms_detach"))
show("longest reply gap before it (noise floor)", col("max_gap_ms_quiet"))
show("median reply gap (client resolution)", col("median_gap_ms"))
show("detach request round trip", col("detach_ms"))
last = rows[-1].get("loop_stalls") or {} if rows else {}
print(f"  daemon's longest steps since start: apply {last.get('apply_ms')} ms, "
      f"collect chunk {last.get('collect_ms')} ms, GC pause {last.get('gc_ms')} ms, "
      f"full GC pause {last.get('gc_full_ms')} ms (the 1M fill included)")
worst = max(col("max_gap_ms_detach") or [0])
print(f"  target: event loop blocked <= 30 ms -> {'met' if worst <= 30 else 'MISSED'} "
      f"(worst round {worst:.1f} ms)")
EOF
fi

# ---------------------------------------------------------------- targets
if [ -f "$WORK/compare.out" ]; then
  "$PY" - "$WORK/compare.out" <<'EOF'
import re, sys
text = open(sys.argv[1]).read()
def row(test, target="mifdns"):
    m = re.search(rf"== {test} .*?\n(.*?)(?:\n\n|\Z)", text, re.S)
    if not m:
        return None
    for line in m.group(1).splitlines():
        if line.split() and line.split()[0] == target:
            return line.split()
    return None
print("\n== targets (issue 6; ratios are same-run medians from the referee's table)")
def ratio(test, col_from_end):
    r = row(test)
    try:
        return float(r[col_from_end]) if r else None
    except (ValueError, IndexError):
        return None
checks = []
hit = row("hit")
if hit:
    checks.append(("UDP hit >= 1.0x dnsmasq", ratio("hit", -2), 1.0))
    checks.append(("UDP hit >= 0.8x Unbound", ratio("hit", -1), 0.8))
if row("miss"):
    checks.append(("UDP miss >= 1.2x dnsmasq", ratio("miss", -2), 1.2))
if row("tcp"):
    checks.append(("TCP hit >= 1.0x Unbound", ratio("tcp", -1), 1.0))
for label, got, want in checks:
    print(f"  {label:28s} {('%.2f' % got) if got is not None else '-':>6s}  "
          f"{'met' if got is not None and got >= want else 'MISSED'}")
lat = {t: row("lat", t) for t in ("mifdns", "dnsmasq")}
if all(lat.values()):
    # columns: target QPS [min-max] lat_avg p50 p99 cpu lost
    p50 = float(lat["mifdns"][4]) / float(lat["dnsmasq"][4])
    p99 = float(lat["mifdns"][5]) / float(lat["dnsmasq"][5])
    for label, v in (("latency p50 <= 1.2x dnsmasq", p50), ("latency p99 <= 1.2x dnsmasq", p99)):
        print(f"  {label:28s} {v:6.2f}  {'met' if v <= 1.2 else 'MISSED'}")
m = {t: re.search(rf"^  {t} .*\(\+(\d+) B/name\)", text, re.M) for t in ("mifdns", "unbound")}
if all(m.values()):
    a, b = int(m["mifdns"].group(1)), int(m["unbound"].group(1))
    print(f"  {'memory <= Unbound per name':28s} {a:4d} B vs {b} B  {'met' if a <= b else 'MISSED'}")
EOF
fi
