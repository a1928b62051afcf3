#!/usr/bin/env bash
# Compares lb (both engines) with HAProxy and nginx under the same wrk load, in alternation, in one run,
# and prints medians and ratios against HAProxy. Every proxy runs single-threaded with keep-alive
# connections to the same two fast backends (examples/fast_backend.rs). Loopback only; bounded in time.
#
#   benches/compare.sh                 # 3 rounds x 10 s per proxy and concurrency
#   ROUNDS=5 SECONDS_PER_RUN=15 CONNS="64 1000" benches/compare.sh
#   LB_BASELINE=/path/to/older/lb benches/compare.sh   # also that binary's engines, in the same rounds
#
# Measured per proxy: requests/s and p50/p99 latency (wrk --latency), CPU time of the proxy processes
# per request (utime+stime from /proc, summed over master and workers, and utime alone), and the memory 10,000 idle
# keep-alive client connections add (RSS difference).
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
CONNS=${CONNS:-"1 64 1000"}
IDLE_CONNS=${IDLE_CONNS:-10000}

need() { command -v "$1" >/dev/null 2>&1; }
if ! need wrk || ! need haproxy || ! need nginx; then
    echo "== installing wrk, haproxy, nginx from Debian's packages"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk haproxy nginx >/dev/null
fi
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
# HAProxy reserves two descriptors per connection: its maxconn, and so the idle-connection count that
# every proxy gets, follow from the descriptor limit (20000 on the machines we run on: 9000 idle).
MAXCONN=$(( ($(ulimit -n) - 100) / 2 ))
if [ "$IDLE_CONNS" -gt $((MAXCONN - 500)) ]; then
    IDLE_CONNS=$((MAXCONN - 500))
    IDLE_CONNS=$((IDLE_CONNS / 1000 * 1000))
fi

cargo build --release --quiet --bin lb --example fast_backend --example idle_conns
work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

B1=19101 B2=19102
P_LB=19181 P_LBT=19182 P_HAPROXY=19183 P_NGINX=19184 P_BASE=19185 P_BASET=19186
LB_BASELINE=${LB_BASELINE:-}
target/release/examples/fast_backend $B1 $B2 >"$work/backends.log" 2>&1 &
pids+=($!)

# Starts one lb: name, binary, engine, port.
start_lb() {
    local name=$1 binary=$2 engine=$3 port=$4
    cat >"$work/$name.toml" <<EOF
listen = "127.0.0.1:$port"
engine = "$engine"
access_log = false
log_level = "warn"
max_connections = $MAXCONN
[[backends]]
url = "http://127.0.0.1:$B1"
[[backends]]
url = "http://127.0.0.1:$B2"
EOF
    "$binary" "$work/$name.toml" >"$work/$name.log" 2>&1 &
    pids+=($!)
    echo $! >"$work/$name.pid"
}

start_proxies() {
    start_lb lb-event_loop target/release/lb event_loop $P_LB
    start_lb lb-threaded target/release/lb threaded $P_LBT
    if [ -n "$LB_BASELINE" ]; then
        start_lb base-event_loop "$LB_BASELINE" event_loop $P_BASE
        start_lb base-threaded "$LB_BASELINE" threaded $P_BASET
    fi

    cat >"$work/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn $MAXCONN
defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 30s
    option http-keep-alive
    http-reuse always
frontend bench
    bind 127.0.0.1:$P_HAPROXY
    default_backend servers
backend servers
    balance roundrobin
    server s1 127.0.0.1:$B1
    server s2 127.0.0.1:$B2
EOF
    haproxy -f "$work/haproxy.cfg" -db >"$work/haproxy.log" 2>&1 &
    pids+=($!)
    echo $! >"$work/haproxy.pid"

    cat >"$work/nginx.conf" <<EOF
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx-error.log warn;
worker_rlimit_nofile $(ulimit -n);
events { worker_connections $MAXCONN; }
http {
    access_log off;
    upstream servers {
        server 127.0.0.1:$B1;
        server 127.0.0.1:$B2;
        keepalive 1024;
    }
    server {
        listen 127.0.0.1:$P_NGINX;
        keepalive_requests 1000000;
        location / {
            proxy_pass http://servers;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
    nginx -c "$work/nginx.conf" -e "$work/nginx-error.log" 2>/dev/null || nginx -c "$work/nginx.conf"
    sleep 1
}

stop_proxies() {
    for name in lb-event_loop lb-threaded base-event_loop base-threaded haproxy; do
        kill "$(cat "$work/$name.pid")" 2>/dev/null || true
    done
    [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
    sleep 1
}

start_proxies

# Processes of a proxy (nginx: master and worker).
proxy_pids() {
    case $1 in
        nginx) pgrep -f "nginx: .*process" | tr '\n' ' ' ;;
        *) cat "$work/$1.pid" ;;
    esac
}
# utime and stime of a proxy's processes, in clock ticks: "USER SYSTEM".
cpu_ticks() {
    local u=0 s=0
    for p in $(proxy_pids "$1"); do
        read -r pu ps < <(awk '{print $14, $15}' "/proc/$p/stat")
        u=$((u + pu)) s=$((s + ps))
    done
    echo "$u $s"
}
rss_kib() { local t=0; for p in $(proxy_pids "$1"); do t=$((t + $(awk '/VmRSS/ {print $2}' "/proc/$p/status"))); done; echo $t; }
port_of() { case $1 in lb-event_loop) echo $P_LB ;; lb-threaded) echo $P_LBT ;; base-event_loop) echo $P_BASE ;; base-threaded) echo $P_BASET ;; haproxy) echo $P_HAPROXY ;; nginx) echo $P_NGINX ;; esac; }
HZ=$(getconf CLK_TCK)
to_us() { # wrk latency like 1.23ms / 456.00us / 1.20s -> microseconds
    awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) print n; else if (v ~ /ms$/) print n * 1000; else if (v ~ /s$/) print n * 1000000; else print n }'
}

proxies="lb-event_loop lb-threaded haproxy nginx"
[ -n "$LB_BASELINE" ] && proxies="$proxies base-event_loop base-threaded"
for name in $proxies; do
    curl -sf -o /dev/null "http://127.0.0.1:$(port_of "$name")/" || { echo "$name does not answer"; exit 1; }
done

results="$work/results.tsv"
: >"$results"
for round in $(seq "$ROUNDS"); do
    # Alternate the order every round so that drift in the machine's load hits every proxy alike.
    order=$proxies
    [ $((round % 2)) -eq 0 ] && order=$(echo "$proxies" | tr ' ' '\n' | tac | tr '\n' ' ')
    for conns in $CONNS; do
        for name in $order; do
            threads=1
            before=$(cpu_ticks "$name")
            out=$(wrk -t$threads -c"$conns" -d"${SECONDS_PER_RUN}s" --latency "http://127.0.0.1:$(port_of "$name")/" 2>&1)
            after=$(cpu_ticks "$name")
            rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
            total=$(echo "$out" | awk '/requests in/ {print $1}')
            p50=$(to_us "$(echo "$out" | awk '$1 == "50%" {print $2}')")
            p99=$(to_us "$(echo "$out" | awk '$1 == "99%" {print $2}')")
            errors=$(echo "$out" | awk '/Non-2xx|Socket errors/ {print}' | tr '\n' ' ')
            read -r ub sb <<<"$before"
            read -r ua sa <<<"$after"
            cpu_us=$(awk -v a=$((ub + sb)) -v b=$((ua + sa)) -v hz="$HZ" -v n="$total" 'BEGIN { printf "%.2f", (b - a) * 1000000 / hz / n }')
            user_us=$(awk -v a="$ub" -v b="$ua" -v hz="$HZ" -v n="$total" 'BEGIN { printf "%.2f", (b - a) * 1000000 / hz / n }')
            printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$conns" "$rps" "$p50" "$p99" "$cpu_us" "$user_us" "$errors" >>"$results"
            printf 'round %s  %-14s c=%-5s %10s req/s  p50 %8sus  p99 %8sus  cpu %6sus/req (user %5s) %s\n' \
                "$round" "$name" "$conns" "$rps" "$p50" "$p99" "$cpu_us" "$user_us" "$errors"
        done
    done
done

echo
echo "== memory of $IDLE_CONNS idle keep-alive client connections (freshly started proxies)"
# Fresh processes: after the load runs their pools are already grown, which would hide the cost.
stop_proxies
start_proxies
memory="$work/memory.tsv"
: >"$memory"
for name in $proxies; do
    curl -sf -o /dev/null "http://127.0.0.1:$(port_of "$name")/" || true
    before=$(rss_kib "$name")
    target/release/examples/idle_conns "127.0.0.1:$(port_of "$name")" "$IDLE_CONNS" 8 >"$work/idle-$name.out" &
    idle_pid=$!
    for _ in $(seq 1200); do grep -q ready "$work/idle-$name.out" 2>/dev/null && break; sleep 0.1; done
    sleep 1
    after=$(rss_kib "$name")
    opened=$(awk '{print $2}' "$work/idle-$name.out")
    wait $idle_pid || true
    per=$(awk -v a="$before" -v b="$after" -v n="$opened" 'BEGIN { if (n > 0) printf "%.2f", (b - a) / n; else print "n/a" }')
    printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$before" "$after" "$opened" "$per" >>"$memory"
    printf '%-14s RSS %8s KiB -> %8s KiB with %s idle connections: %s KiB per connection\n' "$name" "$before" "$after" "$opened" "$per"
done

echo
echo "== medians over $ROUNDS rounds (ratios against HAProxy at the same concurrency)"
printf '%-14s %6s %12s %10s %10s %12s %12s %10s %10s\n' proxy conns "req/s" "p50 us" "p99 us" "cpu us/req" "user us/req" "rps/HAP" "cpu/HAP"
for conns in $CONNS; do
    hap_rps=$(awk -F'\t' -v c="$conns" '$1 == "haproxy" && $2 == c {print $3}' "$results" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    hap_cpu=$(awk -F'\t' -v c="$conns" '$1 == "haproxy" && $2 == c {print $6}' "$results" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    for name in $proxies; do
        med() { awk -F'\t' -v n="$name" -v c="$conns" -v f="$1" '$1 == n && $2 == c {print $f}' "$results" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
        rps=$(med 3); p50=$(med 4); p99=$(med 5); cpu=$(med 6); user=$(med 7)
        printf '%-14s %6s %12s %10s %10s %12s %12s %10s %10s\n' "$name" "$conns" "$rps" "$p50" "$p99" "$cpu" "$user" \
            "$(awk -v a="$rps" -v b="$hap_rps" 'BEGIN { printf "%.2f", a / b }')" \
            "$(awk -v a="$cpu" -v b="$hap_cpu" 'BEGIN { printf "%.2f", a / b }')"
    done
done
hap_mem=$(awk -F'\t' '$1 == "haproxy" {print $5}' "$memory")
echo
printf '%-14s %18s %10s\n' proxy "KiB per idle conn" "vs HAProxy"
while IFS=$'\t' read -r name _ _ _ per; do
    printf '%-14s %18s %10s\n' "$name" "$per" "$(awk -v a="$per" -v b="$hap_mem" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }')"
done <"$memory"
echo
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r); $(date -u +%F)"
