#!/usr/bin/env bash
# The tail at 64 keep-alive connections, and where it comes from: lb (and, with LB_BASELINE, an older
# lb binary) against HAProxy with one thread, wrk -t1 -c64, several rounds in alternating order; then
# the sizes of the event batches each proxy's epoll_wait returns under the same load (perf trace).
# Loopback only; bounded in time.
#
#   benches/tail.sh                          # 8 rounds x 5 s
#   ROUNDS=4 SECONDS_PER_RUN=10 LB_BASELINE=/path/to/lb benches/tail.sh
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-8}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-5}
CONNS=${CONNS:-64}
LB_BASELINE=${LB_BASELINE:-}

# shellcheck source=benches/common.sh
. benches/common.sh
ensure_tools "wrk haproxy perf" "wrk haproxy linux-perf"
build_lb_and_examples fast_backend


B1=19301 B2=19302 P_LB=19381 P_BASE=19382 P_HAPROXY=19383
target/release/examples/fast_backend $B1 $B2 >/dev/null 2>&1 &
pids+=($!)

lb_cfg $P_LB $B1 $B2 >"$work/lb.toml"
target/release/lb "$work/lb.toml" 2>/dev/null &
pids+=($!)
echo "lb $!" >>"$work/pids"
proxies="lb:$P_LB haproxy:$P_HAPROXY"
if [ -n "$LB_BASELINE" ]; then
    lb_cfg $P_BASE $B1 $B2 >"$work/base.toml"
    "$LB_BASELINE" "$work/base.toml" 2>/dev/null &
    pids+=($!)
    echo "baseline $!" >>"$work/pids"
    proxies="lb:$P_LB baseline:$P_BASE haproxy:$P_HAPROXY"
fi
haproxy_cfg 1 5000 $P_HAPROXY $B1 $B2 >"$work/haproxy.cfg"
haproxy -f "$work/haproxy.cfg" -db >/dev/null 2>&1 &
pids+=($!)
echo "haproxy $!" >>"$work/pids"
cat >"$work/pct.lua" <<'EOF'
done = function(summary, latency, requests)
  io.write(string.format("PCT %d %d %d %d\n", latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9)))
end
EOF
sleep 1

for round in $(seq "$ROUNDS"); do
    order=$(round_order "$round" "$proxies")
    for np in $order; do
        name=${np%%:*} port=${np##*:}
        out=$(wrk -t1 -c"$CONNS" -d"${SECONDS_PER_RUN}s" --latency -s "$work/pct.lua" "http://127.0.0.1:$port/")
        line="$name $(echo "$out" | awk '/Requests\/sec/ {print $2}') $(echo "$out" | grep '^PCT' | cut -d' ' -f2-)"
        echo "round $round  $line"
        echo "$line" >>"$work/rounds"
    done
done

echo
echo "== medians over $ROUNDS rounds, wrk -t1 -c$CONNS (latencies in microseconds)"
awk '
{ n = $1; c[n]++; for (i = 2; i <= 6; i++) v[n, i, c[n]] = $i; if (!(n in seen)) { seen[n] = 1; order[++k] = n } }
function med(n, i,   m, j, a, t, x, y) {
    m = c[n]; for (j = 1; j <= m; j++) a[j] = v[n, i, j] + 0
    for (x = 1; x <= m; x++) for (y = x + 1; y <= m; y++) if (a[y] < a[x]) { t = a[x]; a[x] = a[y]; a[y] = t }
    return a[int((m + 1) / 2)]
}
END {
    printf "%-10s %10s %8s %8s %8s %8s\n", "proxy", "req/s", "p50", "p90", "p99", "p99.9"
    for (j = 1; j <= k; j++) { n = order[j]; printf "%-10s %10.0f %8d %8d %8d %8d\n", n, med(n, 2), med(n, 3), med(n, 4), med(n, 5), med(n, 6) }
}' "$work/rounds"

echo
echo "== events per epoll_wait under the same load (perf trace, 2 s per proxy)"
while read -r name pid; do
    port=$P_LB
    [ "$name" = baseline ] && port=$P_BASE
    [ "$name" = haproxy ] && port=$P_HAPROXY
    wrk -t1 -c"$CONNS" -d5s "http://127.0.0.1:$port/" >/dev/null &
    load=$!
    sleep 1.5
    timeout 2 perf trace -e epoll_wait -p "$pid" -o "$work/trace-$name" >/dev/null 2>&1 || true
    wait $load
    grep -o '= [0-9]*$' "$work/trace-$name" | awk '{print $2}' | sort -n |
        awk -v n="$name" '{a[NR] = $1; s += $1} END { if (NR) printf "%-10s %6d polls, mean %5.1f events; p10 %d, p50 %d, p90 %d\n", n, NR, s / NR, a[int(NR * 0.1) + 1], a[int(NR * 0.5)], a[int(NR * 0.9)] }'
done <"$work/pids"
echo
echo "machine: $(nproc) cores, $(uname -r); $(date -u +%F)"
