#!/usr/bin/env bash
# Runs SQLite's program (sqlite_events.c, WAL mode, synchronous=FULL) and EventStoreBench back to back, in pairs,
# and prints each workload's figures and their ratio per pair: the same-run ratios docs/PERFORMANCE.md quotes.
# On a shared machine repeated runs differ by 20-40%, so only ratios from the same pair mean anything.
#
# Usage: Benchmarks/compare-with-sqlite.sh [pairs]        (default 3; run from the package root)
# Needs gcc and libsqlite3-dev. SQLITE_BENCH names the C program (default ../shared/bench/sqlite_events.c).
set -euo pipefail

pairs=${1:-3}
if ! [[ "$pairs" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 [pairs]   (pairs: a positive integer, not '$pairs')" >&2
  exit 2
fi
source_file=${SQLITE_BENCH:-../shared/bench/sqlite_events.c}
if [[ ! -f "$source_file" ]]; then
  echo "no SQLite benchmark at $source_file (set SQLITE_BENCH to sqlite_events.c)" >&2
  exit 2
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
gcc -O2 "$source_file" -lsqlite3 -lpthread -o "$work/sqlite_events"
swift build -c release --product EventStoreBench >&2
ours=$(swift build -c release --product EventStoreBench --show-bin-path)/EventStoreBench

for pair in $(seq 1 "$pairs"); do
  mkdir "$work/sqlite" "$work/ours"
  "$work/sqlite_events" "$work/sqlite" all full >"$work/sqlite.txt"
  "$ours" all --dir "$work/ours" --json >"$work/ours.json" 2>/dev/null
  rm -rf "$work/sqlite" "$work/ours"
  echo "pair $pair ($(cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo '?') load):"
  # SQLite prints "single: N appends/s", "batch: N events/s", "read stream: N events/s (...)", ...
  awk '
    FNR == NR {
      name = $0; sub(/:.*/, "", name)
      rate = $0; sub(/^[^:]*: */, "", rate); sub(/ .*/, "", rate)
      map["single"] = "append-single"; map["batch"] = "append-batch"; map["concurrent"] = "append-concurrent"
      map["read stream"] = "read-stream"; map["read all"] = "read-all"
      if (name in map) sqlite[map[name]] = rate
      next
    }
    {
      workload = $0; sub(/.*"workload":"/, "", workload); sub(/".*/, "", workload)
      rate = $0; sub(/.*"events_per_sec":/, "", rate); sub(/[,}].*/, "", rate)
      rss = $0; sub(/.*"peak_rss_mb":/, "", rss); sub(/[,}].*/, "", rss)
      if (workload in sqlite && sqlite[workload] > 0) {
        printf "  %-18s %12d vs SQLite %12d  = %5.2fx   (peak RSS %s MB)\n", workload, rate, sqlite[workload],
          rate / sqlite[workload], rss
      } else {
        printf "  %-18s %12d (no SQLite figure)\n", workload, rate
      }
    }
  ' "$work/sqlite.txt" "$work/ours.json"
done
