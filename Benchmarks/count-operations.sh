#!/usr/bin/env bash
# Counts swift_retain, swift_release (and their _n forms) and malloc calls per event (per append for the
# single-event workloads) in EventStoreBench's append workloads, with Linux uprobes. Unlike timings these counts are
# the same in every run however noisy the host, so they show what a change to the write path saves
# (docs/PERFORMANCE.md, tenth session).
#
# Usage: Benchmarks/count-operations.sh [workload...]   (default: append-single append-concurrent append-batch;
#                                                         run from the package root, as root, with perf installed)
set -euo pipefail

if ! command -v perf >/dev/null; then
  echo "needs perf (apt-get install linux-perf)" >&2
  exit 2
fi
workloads=("$@")
if [[ ${#workloads[@]} -eq 0 ]]; then workloads=(append-single append-concurrent append-batch); fi
for workload in "${workloads[@]}"; do
  case "$workload" in
    append-single | append-concurrent | append-batch) ;;
    *) echo "unknown workload '$workload' (append-single, append-concurrent or append-batch)" >&2; exit 2 ;;
  esac
done

swift build -c release --product EventStoreBench >&2
bench=$(swift build -c release --product EventStoreBench --show-bin-path)/EventStoreBench
swift_core=$(ldd "$bench" | awk '/libswiftCore/ {print $3}')
libc=$(ldd "$bench" | awk '/libc\.so/ {print $3}')
if [[ -z "$swift_core" || -z "$libc" ]]; then
  echo "could not find libswiftCore and libc among $bench's libraries" >&2
  exit 2
fi
# Adding a probe that exists already fails; that is fine.
for symbol in swift_retain swift_release swift_retain_n swift_release_n; do
  perf probe -q -x "$swift_core" -a "$symbol" 2>/dev/null || true
done
perf probe -q -x "$libc" -a malloc 2>/dev/null || true
events=probe_libswiftCore:swift_retain,probe_libswiftCore:swift_release,probe_libswiftCore:swift_retain_n
events+=,probe_libswiftCore:swift_release_n,probe_libc:malloc

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for workload in "${workloads[@]}"; do
  mkdir "$work/store"
  perf stat -x, -e "$events" -o "$work/stat.csv" "$bench" "$workload" --dir "$work/store" --json >"$work/result.json"
  rm -rf "$work/store"
  # Per event: the JSON line's "events" is the number of appends for the single-event workloads. The counts include
  # opening the store and building the benchmark's events, a small share of each workload.
  operations=$(grep -o '"events":[0-9]*' "$work/result.json" | cut -d: -f2)
  awk -F, -v n="$operations" -v w="$workload" '
    /probe_/ { name = $3; sub(/.*:/, "", name); count[name] = $1 }
    END {
      rc = count["swift_retain"] + count["swift_release"] + count["swift_retain_n"] + count["swift_release_n"]
      printf "%-18s %8.1f retains+releases and %6.2f mallocs per event (%d events)\n", w, rc / n, count["malloc"] / n, n
    }' "$work/stat.csv"
done
