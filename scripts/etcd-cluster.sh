#!/usr/bin/env bash
# Starts or stops a local 3-member etcd cluster on 127.0.0.1 for the etcd backend's tests.
#
#   scripts/etcd-cluster.sh start   # starts it, prints `export ETCD_ENDPOINTS=...` (also written to $STATE/env)
#   scripts/etcd-cluster.sh stop    # stops the members and removes the data directories
#   scripts/etcd-cluster.sh stop-member N / start-member N   # fault injection (N = 1, 2 or 3)
#   scripts/etcd-cluster.sh pause-member N / resume-member N # a hung member (SIGSTOP / SIGCONT): it accepts
#                                                            # connections but never answers
#
# Invariants: members use distinct client/peer ports and data directories under one temp dir, $ETCD_CLUSTER_STATE
# (default: under /dev/shm when it exists, so that etcd's per-commit fsyncs hit memory, not the CI disk, where one
# commit takes ~200 ms; otherwise under /tmp); every wait is bounded; it runs as root or not.
# Limits are raised so that one 100-event append (about 300 puts) fits in one atomic transaction:
# --max-txn-ops 10000, --max-request-bytes 10 MiB. The EtcdKeyValueStore in tests is configured to match.
# ETCD_PROGRESS_NOTIFY_INTERVAL (an etcd duration, such as 500ms) shortens etcd's watch progress notifications
# (10m by default) for tests of what a watch does with them.
set -euo pipefail

if [[ -d /dev/shm && -w /dev/shm ]]; then DEFAULT_ROOT=/dev/shm; else DEFAULT_ROOT=${TMPDIR:-/tmp}; fi
STATE=${ETCD_CLUSTER_STATE:-$DEFAULT_ROOT/eventstore-etcd-cluster}
BASE_PORT=${ETCD_BASE_PORT:-23790}
ETCD=${ETCD_BIN:-etcd}
NAMES=(m1 m2 m3)

client_port() { echo $((BASE_PORT + 10 * ($1 - 1))); }
peer_port() { echo $((BASE_PORT + 10 * ($1 - 1) + 1)); }

endpoints() {
  local list=()
  for i in 1 2 3; do list+=("http://127.0.0.1:$(client_port "$i")"); done
  (IFS=,; echo "${list[*]}")
}

initial_cluster() {
  local list=()
  for i in 1 2 3; do list+=("${NAMES[$((i - 1))]}=http://127.0.0.1:$(peer_port "$i")"); done
  (IFS=,; echo "${list[*]}")
}

# Closes every descriptor above stderr in this (sub)shell. A member is a daemon: it must not keep its launcher's
# descriptors open: a launcher that reads the script's output to its end, or waits for every copy of a descriptor it
# handed the script to close, would otherwise wait for the member instead of the script.
close_inherited_descriptors() {
  local fd fds=()
  if [[ -d /proc/$BASHPID/fd ]]; then
    for fd in /proc/$BASHPID/fd/*; do fds+=("${fd##*/}"); done
  else
    fds=($(seq 3 255))
  fi
  for fd in "${fds[@]}"; do
    if ((fd > 2)); then eval "exec $fd>&-" 2>/dev/null || true; fi
  done
}

start_member() {
  local i=$1 state=${2:-existing}
  local name=${NAMES[$((i - 1))]}
  local extra=()
  if [[ -n ${ETCD_PROGRESS_NOTIFY_INTERVAL:-} ]]; then
    extra+=(--experimental-watch-progress-notify-interval "$ETCD_PROGRESS_NOTIFY_INTERVAL")
  fi
  mkdir -p "$STATE/$name"
  (
    close_inherited_descriptors
    exec nohup "$ETCD" --name "$name" --data-dir "$STATE/$name/data" \
      --listen-client-urls "http://127.0.0.1:$(client_port "$i")" \
      --advertise-client-urls "http://127.0.0.1:$(client_port "$i")" \
      --listen-peer-urls "http://127.0.0.1:$(peer_port "$i")" \
      --initial-advertise-peer-urls "http://127.0.0.1:$(peer_port "$i")" \
      --initial-cluster "$(initial_cluster)" --initial-cluster-state "$state" \
      --initial-cluster-token eventstore-test \
      --max-txn-ops 10000 --max-request-bytes 10485760 "${extra[@]}" \
      --logger zap --log-outputs "$STATE/$name/etcd.log" \
      </dev/null >"$STATE/$name/stdout.log" 2>&1
  ) &
  echo $! >"$STATE/$name/pid"
}

stop_member() {
  local name=${NAMES[$(($1 - 1))]}
  local pidfile="$STATE/$name/pid"
  [[ -f $pidfile ]] || return 0
  local pid
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill -CONT "$pid" 2>/dev/null || true  # a paused member handles SIGTERM only once it runs again
    kill "$pid"
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

wait_healthy() {
  # Bounded: 30 s for every member to answer /health with a leader.
  for _ in $(seq 1 300); do
    local ok=0
    for i in 1 2 3; do
      [[ -f "$STATE/${NAMES[$((i - 1))]}/pid" ]] || { ok=$((ok + 1)); continue; }
      if curl -fsS -m 1 "http://127.0.0.1:$(client_port "$i")/health" 2>/dev/null | grep -q '"health":"true"'; then
        ok=$((ok + 1))
      fi
    done
    [[ $ok -eq 3 ]] && return 0
    sleep 0.1
  done
  echo "etcd cluster did not become healthy within 30 s; logs in $STATE/*/etcd.log" >&2
  return 1
}

case "${1:-}" in
  start)
    command -v "$ETCD" >/dev/null || { echo "etcd not found (apt-get install -y etcd-server)" >&2; exit 1; }
    if [[ -d $STATE ]]; then "$0" stop; fi
    for i in 1 2 3; do
      if curl -fsS -m 1 "http://127.0.0.1:$(client_port "$i")/health" >/dev/null 2>&1; then
        echo "port $(client_port "$i") already serves etcd (a cluster left running?); set ETCD_BASE_PORT" >&2
        exit 1
      fi
    done
    mkdir -p "$STATE"
    for i in 1 2 3; do start_member "$i" new; done
    wait_healthy
    echo "ETCD_ENDPOINTS=$(endpoints)" >"$STATE/env"
    echo "export ETCD_ENDPOINTS=$(endpoints)"
    ;;
  stop)
    for i in 1 2 3; do stop_member "$i"; done
    rm -rf "$STATE"
    ;;
  stop-member) stop_member "$2" ;;
  start-member) start_member "$2" existing; wait_healthy ;;
  pause-member) kill -STOP "$(cat "$STATE/${NAMES[$(($2 - 1))]}/pid")" ;;
  resume-member) kill -CONT "$(cat "$STATE/${NAMES[$(($2 - 1))]}/pid")" ;;
  endpoints) endpoints ;;
  *) echo "usage: $0 start|stop|stop-member N|start-member N|pause-member N|resume-member N|endpoints" >&2; exit 2 ;;
esac
