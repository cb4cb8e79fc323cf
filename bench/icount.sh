#!/usr/bin/env bash
# icount.sh PATH [K1 K2] - instructions per call of one core path (hit memo | hit | miss),
# from two callgrind runs of bench/micro_core.py --raw K1 and --raw K2 (set-up cancels out).
# Instruction counts do not move with neighbours' load, unlike timings. Needs valgrind.
set -euo pipefail
path=${1:?usage: icount.sh 'hit memo'|hit|miss [K1 K2]}; k1=${2:-200}; k2=${3:-1200}
cd "$(dirname "$0")/.."
py=$(python3 -c 'import os, sys; print(os.path.realpath(sys.executable))')
count() {
  valgrind --tool=callgrind --callgrind-out-file=/dev/null "$py" bench/micro_core.py \
    --only "$path" --raw "$1" 2>&1 | awk '/Collected :/ { print $4 }'
}
a=$(count "$k1"); b=$(count "$k2")
echo "$path: $(( (b - a) / (k2 - k1) )) instructions per call (callgrind, K=$k1/$k2)"
