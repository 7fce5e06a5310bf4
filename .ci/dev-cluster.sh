#!/usr/bin/env bash
# `make cluster`: a Redis of its own and two development nodes on it, on the
# first free ports from 8081 (nodes), 9091 (their internal listeners) and
# 6390 (Redis), so the cross-node path can be seen in two browser tabs.
# Ctrl-C stops everything it started. Both nodes use the same dev file
# (.fanout-dev.json), so a token of one works on the other.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release/fanout
[ -x "$bin" ] || { echo "cluster: $bin is missing (make build)" >&2; exit 1; }
command -v redis-server >/dev/null || { echo "cluster: redis-server is missing" >&2; exit 1; }

in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
taken=()
free_port() {
  local p=$1
  while in_use "$p" || [[ " ${taken[*]} " == *" $p "* ]]; do p=$((p + 1)); done
  taken+=("$p")
  echo "$p"
}

pids=()
stop() {
  trap - INT TERM EXIT
  echo
  echo "stopping"
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  exit 0
}
trap stop INT TERM EXIT

redis_port=$(free_port 6390)
n1=$(free_port 8081)
n2=$(free_port $((n1 + 1)))
i1=$(free_port 9091)
i2=$(free_port $((i1 + 1)))
logs=target/cluster
mkdir -p "$logs"

redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
  >"$logs/redis.log" 2>&1 &
pids+=($!)

wait_ready() {
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1" && printf 'GET /readyz HTTP/1.0\r\n\r\n' >&3 \
        && head -1 <&3 | grep -q ' 200') 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  echo "cluster: a node did not become ready; see $logs/" >&2
  return 1
}

start_node() { # id listen internal
  "$bin" serve --dev --node-id "$1" --listen "127.0.0.1:$2" --internal-addr "127.0.0.1:$3" \
    --redis-url "redis://127.0.0.1:$redis_port" --log warn >"$logs/$1.log" 2>&1 &
  pids+=($!)
  wait_ready "$3"
}
# One after the other: the first creates the dev file, the second reads it.
start_node n1 "$n1" "$i1"
start_node n2 "$n2" "$i2"

cat <<MSG

fanout: two nodes on one Redis (127.0.0.1:$redis_port)

  node n1:  http://127.0.0.1:$n1/
  node n2:  http://127.0.0.1:$n2/

Open one in each tab with different names, join the same room: messages
and notifications cross from one node to the other through Redis.
API key and secret: .fanout-dev.json. Logs: $logs/. Ctrl-C stops everything.
MSG
wait -n "${pids[@]}" || true
echo "cluster: a process exited on its own; see $logs/" >&2
exit 1
