#!/usr/bin/env bash
# Workers: lb with workers = 1 and workers = 2 (the shared EPOLLEXCLUSIVE listener, and reuse_port),
# HAProxy with nbthread 2 and nginx with worker_processes 2, under the same wrk -t2 load, in
# alternation, in one run; medians and ratios against HAProxy nbthread 2. Every proxy keeps
# connections to the same two fast backends (examples/fast_backend.rs). Loopback only; bounded in time.
#
#   benches/workers.sh                          # 3 rounds x 10 s per proxy at 64 and 1000 connections
#   ROUNDS=5 SECONDS_PER_RUN=15 CONNS="64" benches/workers.sh
#
# Measured per proxy: requests/s, p50/p99 latency (wrk --latency), CPU time of the proxy's processes
# per request (utime+stime from /proc), and for lb the share of requests each worker served (from
# /metrics, lb_worker_requests_total): "split" is the busiest worker's share of the run's requests.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
CONNS=${CONNS:-"64 1000"}

# shellcheck source=benches/common.sh
. benches/common.sh
ensure_tools "wrk haproxy nginx curl" "wrk haproxy nginx curl"
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
MAXCONN=$(( ($(ulimit -n) - 100) / 2 ))

build_lb_and_examples fast_backend

B1=19201 B2=19202
target/release/examples/fast_backend $B1 $B2 >"$work/backends.log" 2>&1 &
pids+=($!)

declare -A PORT=([lb-w1]=19281 [lb-w2]=19282 [lb-w2-reuseport]=19283 [haproxy-t2]=19284 [nginx-w2]=19285)
declare -A ADMIN=([lb-w1]=19291 [lb-w2]=19292 [lb-w2-reuseport]=19293)

start_lb() {
    local name=$1 settings=$2
    cat >"$work/$name.toml" <<EOF
listen = "127.0.0.1:${PORT[$name]}"
access_log = false
log_level = "warn"
max_connections = $MAXCONN
$settings
[admin]
listen = "127.0.0.1:${ADMIN[$name]}"
[[backends]]
url = "http://127.0.0.1:$B1"
[[backends]]
url = "http://127.0.0.1:$B2"
EOF
    target/release/lb "$work/$name.toml" >"$work/$name.log" 2>&1 &
    pids+=($!)
    echo $! >"$work/$name.pid"
}
start_lb lb-w1 "workers = 1"
start_lb lb-w2 "workers = 2"
start_lb lb-w2-reuseport "workers = 2
reuse_port = true"

haproxy_cfg 2 "$MAXCONN" "${PORT[haproxy-t2]}" $B1 $B2 >"$work/haproxy.cfg"
haproxy -f "$work/haproxy.cfg" -db >"$work/haproxy.log" 2>&1 &
pids+=($!)
echo $! >"$work/haproxy-t2.pid"

nginx_conf 2 "$work" "$MAXCONN" "${PORT[nginx-w2]}" $B1 $B2 >"$work/nginx.conf"
start_nginx "$work/nginx.conf" "$work"
sleep 1

proxies="lb-w1 lb-w2 lb-w2-reuseport haproxy-t2 nginx-w2"
for name in $proxies; do
    curl -sf -o /dev/null "http://127.0.0.1:${PORT[$name]}/" || { echo "$name does not answer"; exit 1; }
done

proxy_pids() {
    case $1 in
        nginx-w2) pgrep -f "nginx: .*process" | tr '\n' ' ' ;;
        *) cat "$work/$1.pid" ;;
    esac
}
cpu_ticks() {
    local t=0
    for p in $(proxy_pids "$1"); do
        t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat")))
    done
    echo $t
}
# Requests each lb worker has served so far, space-separated.
worker_requests() {
    curl -sf "http://127.0.0.1:${ADMIN[$1]}/metrics" | awk '/^lb_worker_requests_total/ {print $2}' | tr '\n' ' '
}
HZ=$(getconf CLK_TCK)

# One wrk -t2 run: prints "req/s p50 p99 cpu-us/req split errors".
measure() {
    local name=$1 conns=$2 before after out rps total p50 p99 errors w_before w_after split
    before=$(cpu_ticks "$name")
    w_before=""
    [ -n "${ADMIN[$name]:-}" ] && w_before=$(worker_requests "$name")
    out=$(wrk -t2 -c"$conns" -d"${SECONDS_PER_RUN}s" --latency "http://127.0.0.1:${PORT[$name]}/" 2>&1)
    after=$(cpu_ticks "$name")
    split="-"
    if [ -n "$w_before" ]; then
        w_after=$(worker_requests "$name")
        split=$(awk -v a="$w_before" -v b="$w_after" 'BEGIN {
            n = split(a, x, " "); split(b, y, " "); total = 0; most = 0
            for (i = 1; i <= n; i++) { d = y[i] - x[i]; total += d; if (d > most) most = d }
            if (total > 0) printf "%.2f", most / total; else print "-" }')
    fi
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    total=$(echo "$out" | awk '/requests in/ {print $1}')
    p50=$(to_us "$(echo "$out" | awk '$1 == "50%" {print $2}')")
    p99=$(to_us "$(echo "$out" | awk '$1 == "99%" {print $2}')")
    errors=$(echo "$out" | awk '/Non-2xx|Socket errors/ {print}' | tr '\n' ' ')
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$rps" "$p50" "$p99" \
        "$(awk -v a="$before" -v b="$after" -v hz="$HZ" -v n="$total" 'BEGIN { printf "%.2f", (b - a) * 1000000 / hz / n }')" \
        "$split" "$errors"
}

results="$work/results.tsv"
: >"$results"
for round in $(seq "$ROUNDS"); do
    order=$(round_order "$round" "$proxies")
    for conns in $CONNS; do
        for name in $order; do
            line=$(measure "$name" "$conns")
            printf '%s\t%s\t%s\n' "$name" "$conns" "$line" >>"$results"
            IFS=$'\t' read -r rps p50 p99 cpu split errors <<<"$line"
            printf 'round %s  %-16s c=%-5s %10s req/s  p50 %8sus  p99 %8sus  cpu %6sus/req  split %s %s\n' \
                "$round" "$name" "$conns" "$rps" "$p50" "$p99" "$cpu" "$split" "$errors"
        done
    done
done

echo
echo "== medians over $ROUNDS rounds, wrk -t2 (ratios against HAProxy nbthread 2 at the same concurrency)"
printf '%-16s %6s %12s %10s %10s %12s %8s %10s %10s\n' proxy conns "req/s" "p50 us" "p99 us" "cpu us/req" split "rps/HAP" "cpu/HAP"
for conns in $CONNS; do
    hap_rps=$(median_of "$results" haproxy-t2 "$conns" 3)
    hap_cpu=$(median_of "$results" haproxy-t2 "$conns" 6)
    for name in $proxies; do
        med() { median_of "$results" "$name" "$conns" "$1"; }
        rps=$(med 3); p50=$(med 4); p99=$(med 5); cpu=$(med 6); split=$(med 7)
        printf '%-16s %6s %12s %10s %10s %12s %8s %10s %10s\n' "$name" "$conns" "$rps" "$p50" "$p99" "$cpu" "$split" \
            "$(ratio "$rps" "$hap_rps")" "$(ratio "$cpu" "$hap_cpu")"
    done
done
echo "(split: the busiest lb worker's share of the requests; 0.50 is even)"
echo
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), $(uname -r); $(date -u +%F)"
