# Shell helpers shared by the bench scripts (sourced, not run). They expect $SPID to hold the
# server's pid once started, and log what they saw under $OUT.

# Waits (at most 120 s) for http://127.0.0.1:PORT/health (or http://HOST:PORT/health) to
# answer 200; fails early when the server process has exited.
# Usage: wait_health PORT|HOST:PORT LOGFILE
wait_health() {
  local i addr=$1
  [ "${addr#*:}" = "$addr" ] && addr=127.0.0.1:$addr
  for i in $(seq 1 240); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$addr/health")" = 200 ] && return 0
    kill -0 "$SPID" 2>/dev/null || { echo "server exited; see $2" >&2; tail -5 "$2" >&2; return 1; }
    sleep 0.5
  done
  echo "server on $1 not healthy after 120 s; see $2" >&2
  return 1
}

# The CPU is shared with other tenants: waits up to 60 s for the 1-minute load to fall below
# 1.0 and appends what it saw to $OUT/load.txt. Usage: wait_quiet LABEL
wait_quiet() {
  local i l
  for i in $(seq 1 60); do
    l=$(cut -d' ' -f1 /proc/loadavg)
    awk -v l="$l" 'BEGIN{exit !(l<1.0)}' && break
    sleep 1
  done
  echo "$(date -u +%H:%M:%S) $1: load1=$(cut -d' ' -f1 /proc/loadavg) (waited ${i}s)" | tee -a "$OUT/load.txt"
}

# Starts a server command in the background, appending its output to LOGFILE, keeps its pid
# in $SPID and waits for its /health. Usage: start_bg PORT LOGFILE COMMAND [ARGS…]
# (prefix `env VAR=value` for environment settings).
start_bg() {
  local port=$1 log=$2
  shift 2
  "$@" >>"$log" 2>&1 &
  SPID=$!
  wait_health "$port" "$log"
}

# Servers a script keeps running together (it appends $SPID after each start_bg), and
# stop_pids stops them all (SIGTERM, then waits). Usage: trap stop_pids EXIT
PIDS=()
stop_pids() { local p; for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; PIDS=(); }

# Stops the server started last (SIGTERM, then waits for it).
stop_server() {
  if [ -n "${SPID:-}" ]; then kill "$SPID" 2>/dev/null || true; wait "$SPID" 2>/dev/null || true; SPID=; fi
}

# The machine, the commit and the time a run starts on, with the instruction sets the kernels
# choose from, for the summary in BENCHMARKS.md. Usage: describe_machine >"$OUT/machine.txt"
describe_machine() {
  echo "date: $(date -u)"
  echo "git: $(git rev-parse HEAD)"
  lscpu | grep 'Model name'
  echo "cores: $(nproc)"
  echo "flags: $(grep -o -w 'avx2\|avx_vnni\|avx512f\|avx512_vnni\|avx512_bf16\|amx_int8\|amx_bf16' /proc/cpuinfo | sort -u | tr '\n' ' ')"
}

# Namespaces brisk-n1 and brisk-n2 (root), each joined to this one by a veth pair (10.77.I.1
# here, 10.77.I.2 there) whose two ends are limited to $LINK_RATE (tbf; netem with $DELAY
# added, where the kernel has netem); traffic between them is forwarded here. netns_up sets
# HOSTS and NS (the command prefix that runs in namespace I).
netns_down() {
  local i
  for i in 1 2; do
    ip netns del "brisk-n$i" 2>/dev/null || true
    ip link del "brisk-v$i" 2>/dev/null || true
  done
}
netns_up() {
  local i
  netns_down
  sysctl -qw net.ipv4.ip_forward=1
  for i in 1 2; do
    ip netns add "brisk-n$i"
    ip link add "brisk-v$i" type veth peer name "brisk-w$i"
    ip link set "brisk-w$i" netns "brisk-n$i"
    ip addr add "10.77.$i.1/24" dev "brisk-v$i"
    ip link set "brisk-v$i" up
    ip netns exec "brisk-n$i" ip addr add "10.77.$i.2/24" dev "brisk-w$i"
    ip netns exec "brisk-n$i" ip link set "brisk-w$i" up
    ip netns exec "brisk-n$i" ip link set lo up
    ip netns exec "brisk-n$i" ip route add default via "10.77.$i.1"
    if [ -n "$DELAY" ]; then
      tc qdisc add dev "brisk-v$i" root netem delay "$DELAY" rate "$LINK_RATE"
      ip netns exec "brisk-n$i" tc qdisc add dev "brisk-w$i" root netem delay "$DELAY" rate "$LINK_RATE"
    else
      tc qdisc add dev "brisk-v$i" root tbf rate "$LINK_RATE" burst 256kb latency 100ms
      ip netns exec "brisk-n$i" tc qdisc add dev "brisk-w$i" root tbf rate "$LINK_RATE" burst 256kb latency 100ms
    fi
  done
  HOSTS=(10.77.1.2 10.77.2.2)
  NS=("ip netns exec brisk-n1" "ip netns exec brisk-n2")
}

# Where replicas 1 and 2 run: HOSTS (their addresses) and NS (the command prefix that runs in
# each one's namespace) — loopback, or with NETNS=1 the namespaces above, removed at exit
# (this sets the EXIT trap, which also stops $PIDS). Usage: replica_hosts
replica_hosts() {
  HOSTS=(127.0.0.1 127.0.0.1)
  NS=("" "")
  trap 'stop_pids; [ "$NETNS" = 1 ] && netns_down' EXIT
  if [ "$NETNS" = 1 ]; then netns_up; fi
}

# Starts replica I (1 or 2) as `BINARY serve --model $MODEL` with one compute thread on
# HOSTS[I-1]:PORT, in its namespace (see replica_hosts), with the further serve ARGS, logging
# to $OUT/replica-I.log; keeps its pid in $SPID and $PIDS and waits for its /health.
# Usage: start_replica_at I PORT BINARY [ARGS…]
start_replica_at() {
  local i=$1 port=$2 bin=$3 host=${HOSTS[$(($1 - 1))]}
  shift 3
  # shellcheck disable=SC2086
  ${NS[$((i - 1))]} env BRISK_THREADS=1 "$bin" serve --model "$MODEL" --host "$host" \
    --port "$port" "$@" >>"$OUT/replica-$i.log" 2>&1 &
  SPID=$!
  PIDS+=("$SPID")
  wait_health "$host:$port" "$OUT/replica-$i.log"
}
