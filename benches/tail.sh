#!/usr/bin/env bash
# The tail at 64 keep-alive connections, and what lies behind it: lb (and, with LB_BASELINE, an older
# lb binary) against HAProxy with one thread, wrk -t1 -c64, several rounds in alternating order. Over
# the middle of each run it also counts, per request, what the proxy makes the machine do:
#   - polls: the proxy's epoll_wait calls (perf stat, counted in the kernel: tracing every call, as
#     `perf trace` does, slows the proxy so much that its batches grow several times over);
#   - preempted: the times the scheduler took the proxy off a core while it could still run;
#   - client wakes: the times wrk's thread was put on a core (it sleeps between bursts of responses);
#   - cpu us: the CPU time of the proxy, wrk and the backends together.
# It ends with the rounds in which lb's p99 was at or below HAProxy's, and the geometric mean of the
# two p99s' ratio over the rounds with its 95% interval (each round pairs the two a few seconds apart).
# Loopback only; bounded in time.
#
#   benches/tail.sh                          # 8 rounds x 8 s
#   ROUNDS=4 SECONDS_PER_RUN=10 LB_BASELINE=/path/to/lb benches/tail.sh
#   BACKENDS=nginx benches/tail.sh           # two nginx servers (one worker each) as the backends,
#                                            # instead of examples/fast_backend's two threads
#   PIN=client benches/tail.sh               # wrk alone on CPU 1; the proxies and backends on CPU 0
#   PIN=proxy benches/tail.sh                # the proxies alone on CPU 0; wrk and the backends on CPU 1
#   NGINX=1 benches/tail.sh                  # nginx (one worker) as a third proxy
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-8}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-8}
CONNS=${CONNS:-64}
LB_BASELINE=${LB_BASELINE:-}
BACKENDS=${BACKENDS:-fast}
PIN=${PIN:-none}
NGINX=${NGINX:-0}
# Pinned, the load generator never takes the proxy's core, nor the proxy the load generator's, as when
# clients come from other machines; unpinned, the scheduler places the four busy threads as it likes.
proxy_cpu=() backend_cpu=() client_cpu=()
[ "$PIN" = none ] || [ "$(nproc)" -ge 2 ] || { echo "PIN needs at least two CPUs" >&2; exit 2; }
case $PIN in
none) ;;
client) proxy_cpu=(taskset -c 0) backend_cpu=(taskset -c 0) client_cpu=(taskset -c 1) ;;
proxy) proxy_cpu=(taskset -c 0) backend_cpu=(taskset -c 1) client_cpu=(taskset -c 1) ;;
*) echo "PIN must be none, client or proxy" >&2; exit 2 ;;
esac
case $BACKENDS in fast | nginx) ;; *) echo "BACKENDS must be fast or nginx" >&2; exit 2 ;; esac
[ "$SECONDS_PER_RUN" -ge 4 ] || { echo "SECONDS_PER_RUN must be at least 4" >&2; exit 2; }

# shellcheck source=benches/common.sh
. benches/common.sh
ensure_tools "wrk haproxy perf curl" "wrk haproxy linux-perf curl"
if [ "$BACKENDS" = nginx ] || [ "$NGINX" = 1 ]; then ensure_tools nginx nginx; fi
build_lb_and_examples fast_backend

# nginx_backend PORT: an nginx server in the foreground, one worker, answering every request with the
# same 13-byte body fast_backend sends, keeping connections for the whole run.
nginx_backend() {
    cat <<EOF
daemon off;
worker_processes 1;
pid $work/nginx-$1.pid;
error_log $work/nginx-$1-error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    server {
        listen 127.0.0.1:$1;
        location / { default_type text/plain; return 200 "Hello, world!"; }
    }
}
EOF
}

B1=19301 B2=19302 P_LB=19381 P_BASE=19382 P_HAPROXY=19383 P_NGINX=19384
backends=""
if [ "$BACKENDS" = nginx ]; then
    for port in $B1 $B2; do
        nginx_backend $port >"$work/nginx-$port.conf"
        "${backend_cpu[@]}" nginx -c "$work/nginx-$port.conf" -e "$work/nginx-$port-error.log" >/dev/null 2>&1 &
        pids+=($!)
        await_http "http://127.0.0.1:$port/"
        # The worker serves; the master only waits.
        backends="$backends $(pgrep -P "$!" | tr '\n' ' ')"
    done
else
    "${backend_cpu[@]}" target/release/examples/fast_backend $B1 $B2 >/dev/null 2>&1 &
    backends=$!
    pids+=("$backends")
fi

lb_cfg $P_LB $B1 $B2 >"$work/lb.toml"
"${proxy_cpu[@]}" target/release/lb "$work/lb.toml" 2>/dev/null &
pids+=($!)
proxies="lb:$P_LB:$!"
if [ -n "$LB_BASELINE" ]; then
    lb_cfg $P_BASE $B1 $B2 >"$work/base.toml"
    "${proxy_cpu[@]}" "$LB_BASELINE" "$work/base.toml" 2>/dev/null &
    pids+=($!)
    proxies="$proxies baseline:$P_BASE:$!"
fi
haproxy_cfg 1 5000 $P_HAPROXY $B1 $B2 >"$work/haproxy.cfg"
"${proxy_cpu[@]}" haproxy -f "$work/haproxy.cfg" -db >/dev/null 2>&1 &
pids+=($!)
proxies="$proxies haproxy:$P_HAPROXY:$!"
if [ "$NGINX" = 1 ]; then
    nginx_conf 1 "$work" 5000 $P_NGINX $B1 $B2 >"$work/nginx.conf"
    "${proxy_cpu[@]}" nginx -c "$work/nginx.conf" -g "daemon off;" >/dev/null 2>&1 &
    pids+=($!)
    await_http "http://127.0.0.1:$P_NGINX/"
    # Its worker serves and is what the counters follow.
    proxies="$proxies nginx:$P_NGINX:$(pgrep -P "$!" | head -1)"
fi
cat >"$work/pct.lua" <<'EOF'
done = function(summary, latency, requests)
  io.write(string.format("PCT %d %d %d %d\n", latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9)))
end
EOF
sleep 1

# sched PID...: the CPU time (ns) and the times put on a core, summed over the processes' threads, and
# their involuntary context switches: "cpu slices preempted".
sched() {
    local t cpu=0 slices=0 preempted=0 a b c n pid
    for pid in "$@"; do for t in /proc/"$pid"/task/*; do
        read -r a b c <"$t/schedstat" || continue
        cpu=$((cpu + a)) slices=$((slices + c))
        n=$(awk '/^nonvoluntary_ctxt_switches/ {print $2}' "$t/status")
        preempted=$((preempted + n))
    done; done
    echo "$cpu $slices $preempted"
}

# One run against one proxy; the counters cover its middle, SECONDS_PER_RUN - 2 seconds.
window=$((SECONDS_PER_RUN - 2))
run() {
    local name=$1 port=$2 pid=$3 load p0 p1 w0 w1 b0 b1 polls out
    "${client_cpu[@]}" wrk -t1 -c"$CONNS" -d"${SECONDS_PER_RUN}s" --latency -s "$work/pct.lua" \
        "http://127.0.0.1:$port/" >"$work/wrk.out" &
    load=$!
    sleep 1
    read -r -a p0 <<<"$(sched "$pid")"
    read -r -a w0 <<<"$(sched "$load")"
    # shellcheck disable=SC2086
    read -r -a b0 <<<"$(sched $backends)"
    polls=$(perf stat -x, -e syscalls:sys_enter_epoll_wait -p "$pid" -- sleep "$window" 2>&1 |
        awk -F, '/epoll_wait/ {print $1}')
    read -r -a p1 <<<"$(sched "$pid")"
    read -r -a w1 <<<"$(sched "$load")"
    # shellcheck disable=SC2086
    read -r -a b1 <<<"$(sched $backends)"
    wait "$load"
    out=$(cat "$work/wrk.out")
    # Requests in the window, estimated from the run's rate.
    echo "$name $(echo "$out" | awk '/Requests\/sec/ {print $2}') $(echo "$out" | grep '^PCT' | cut -d' ' -f2-)" \
        "${polls:-0} $((p1[2] - p0[2])) $((w1[1] - w0[1])) $(((p1[0] - p0[0]) + (w1[0] - w0[0]) + (b1[0] - b0[0])))" |
        awk -v win="$window" '{ n = $2 * win; printf "%s %.0f %d %d %d %d %.1f %.1f %.1f %.2f\n",
            $1, $2, $3, $4, $5, $6, 1000 * $7 / n, 1000 * $8 / n, 1000 * $9 / n, $10 / 1000 / n }'
}

for round in $(seq "$ROUNDS"); do
    for entry in $(round_order "$round" "$proxies"); do
        IFS=: read -r name port pid <<<"$entry"
        line=$(run "$name" "$port" "$pid")
        echo "round $round  $line"
        echo "$line" >>"$work/rounds"
    done
done

echo
echo "== medians over $ROUNDS rounds, wrk -t1 -c$CONNS, $BACKENDS backends, PIN=$PIN; latencies in microseconds; per 1,000 requests:"
echo "   polls (epoll_wait), preempted (the proxy taken off a core), client wakes (wrk put on a core);"
echo "   cpu us: CPU time per request of the proxy, wrk and the backends together"
awk '
{ n = $1; c[n]++; for (i = 2; i <= 11; i++) v[n, i, c[n]] = $i; if (!(n in seen)) { seen[n] = 1; order[++k] = n } }
function med(n, i,   m, j, a, t, x, y) {
    m = c[n]; for (j = 1; j <= m; j++) a[j] = v[n, i, j] + 0
    for (x = 1; x <= m; x++) for (y = x + 1; y <= m; y++) if (a[y] < a[x]) { t = a[x]; a[x] = a[y]; a[y] = t }
    return (m % 2) ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2
}
END {
    printf "%-10s %8s %6s %6s %6s %6s %7s %9s %12s %7s\n", "proxy", "req/s", "p50", "p90", "p99", "p99.9",
        "polls", "preempted", "client wakes", "cpu us"
    for (j = 1; j <= k; j++) { n = order[j]
        printf "%-10s %8.0f %6d %6d %6d %6d %7.1f %9.1f %12.1f %7.2f\n", n, med(n, 2), med(n, 3), med(n, 4),
            med(n, 5), med(n, 6), med(n, 7), med(n, 8), med(n, 9), med(n, 10) }
    if (c["lb"] && c["haproxy"]) {
        for (r = 1; r <= c["lb"]; r++) {
            below += (v["lb", 5, r] + 0 <= v["haproxy", 5, r] + 0)
            # Each round pairs the two proxies a few seconds apart: the ratio of their p99s, in logs.
            x = log(v["lb", 5, r] / v["haproxy", 5, r]); sum += x; sumsq += x * x
        }
        printf "lb p99 at or below HAProxy in %d of %d rounds\n", below, c["lb"]
        m = c["lb"]; mean = sum / m
        # Quantile of t with m - 1 degrees of freedom (two-sided 95%), 1.96 past 30.
        split("12.71 4.30 3.18 2.78 2.57 2.45 2.36 2.31 2.26 2.23 2.20 2.18 2.16 2.14 2.13 2.12 2.11 2.10 2.09 2.09 2.08 2.07 2.07 2.06 2.06 2.06 2.05 2.05 2.05 2.04", t, " ")
        q = (m - 1 <= 30) ? t[m - 1] : 1.96
        half = (m > 1) ? q * sqrt((sumsq - m * mean * mean) / (m - 1) / m) : 0
        printf "lb p99 / HAProxy p99: geometric mean over the rounds %.3f (95%% interval %.3f to %.3f)\n",
            exp(mean), exp(mean - half), exp(mean + half)
    }
}' "$work/rounds"
echo
echo "machine: $(nproc) cores, $(uname -r); $(date -u +%F)"
