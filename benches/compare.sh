#!/usr/bin/env bash
# Compares lb (both engines) with HAProxy and nginx under the same wrk load, in alternation, in one run,
# and prints medians and ratios against HAProxy. Every proxy runs single-threaded with keep-alive
# connections to the same two fast backends (examples/fast_backend.rs). Loopback only; bounded in time.
#
#   benches/compare.sh                 # 3 rounds x 10 s per proxy and concurrency
#   ROUNDS=5 SECONDS_PER_RUN=15 CONNS="64 1000" benches/compare.sh
#   LB_BASELINE=/path/to/older/lb benches/compare.sh   # also that binary's engines, in the same rounds
#   PLAIN=0 benches/compare.sh          # HTTPS only;  TLS=0: plain HTTP only
#   FLOOR=1 benches/compare.sh          # also examples/floor_relay.rs: the same system calls per
#                                       # request and no HTTP work, the floor under every user time
#
# Measured per proxy: requests/s and p50/p99 latency (wrk --latency), CPU time of the proxy processes
# per request (utime+stime from /proc, summed over master and workers, and utime alone), and the memory
# 10,000 idle keep-alive client connections add (RSS difference).
#
# HTTPS: lb (both engines), HAProxy and nginx (OpenSSL) with one ECDSA P-256 certificate, TLS 1.2 and
# 1.3 on (so TLS 1.3 is what wrk gets from each), the same cipher preference (TLS_AES_128_GCM_SHA256
# first), session tickets and caches on. wrk -c64 with
# keep-alive, and with `Connection: close` (a new TLS connection per request; wrk keeps the session,
# so these are resumed handshakes, as a returning browser's are); CPU per request, per new connection,
# and per handshake (new connection minus keep-alive request); memory per idle TLS connection.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
PLAIN=${PLAIN:-1}
TLS=${TLS:-1}
TLS_CONNS=${TLS_CONNS:-64}
CONNS=${CONNS:-"1 64 1000"}
IDLE_CONNS=${IDLE_CONNS:-10000}

# shellcheck source=benches/common.sh
. benches/common.sh
ensure_tools "wrk haproxy nginx openssl curl" "wrk haproxy nginx openssl curl"
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
# HAProxy reserves two descriptors per connection: its maxconn, and so the idle-connection count that
# every proxy gets, follow from the descriptor limit (20000 on the machines we run on: 9000 idle).
MAXCONN=$(( ($(ulimit -n) - 100) / 2 ))
if [ "$IDLE_CONNS" -gt $((MAXCONN - 500)) ]; then
    IDLE_CONNS=$((MAXCONN - 500))
    IDLE_CONNS=$((IDLE_CONNS / 1000 * 1000))
fi

build_lb_and_examples fast_backend idle_conns floor_relay

B1=19101 B2=19102
P_LB=19181 P_LBT=19182 P_HAPROXY=19183 P_NGINX=19184 P_BASE=19185 P_BASET=19186
T_LB=19191 T_LBT=19192 T_HAPROXY=19193 T_NGINX=19194
# One ECDSA P-256 certificate for every proxy (HAProxy wants certificate and key in one file).
openssl ecparam -name prime256v1 -genkey -noout -out "$work/key.pem" 2>/dev/null
openssl req -x509 -new -key "$work/key.pem" -out "$work/cert.pem" -days 30 -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost 2>/dev/null
cat "$work/cert.pem" "$work/key.pem" >"$work/haproxy.pem"
SUITES=TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256
LB_BASELINE=${LB_BASELINE:-}
FLOOR=${FLOOR:-0}
P_FLOOR=19187
target/release/examples/fast_backend $B1 $B2 >"$work/backends.log" 2>&1 &
pids+=($!)

# Starts one lb: name, binary, engine, port, and an HTTPS port (none for a baseline binary).
start_lb() {
    local name=$1 binary=$2 engine=$3 port=$4 tls_port=${5:-}
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
    if [ -n "$tls_port" ]; then
        cat >>"$work/$name.toml" <<EOF
[tls]
listen = "127.0.0.1:$tls_port"
certificates = [{ cert = "$work/cert.pem", key = "$work/key.pem" }]
EOF
    fi
    "$binary" "$work/$name.toml" >"$work/$name.log" 2>&1 &
    pids+=($!)
    echo $! >"$work/$name.pid"
}

start_proxies() {
    start_lb lb-event_loop target/release/lb event_loop $P_LB $T_LB
    start_lb lb-threaded target/release/lb threaded $P_LBT $T_LBT
    if [ -n "$LB_BASELINE" ]; then
        start_lb base-event_loop "$LB_BASELINE" event_loop $P_BASE
        start_lb base-threaded "$LB_BASELINE" threaded $P_BASET
    fi

    haproxy_cfg 1 "$MAXCONN" $P_HAPROXY $B1 $B2 $T_HAPROXY "$work/haproxy.pem" "$SUITES" >"$work/haproxy.cfg"
    haproxy -f "$work/haproxy.cfg" -db >"$work/haproxy.log" 2>&1 &
    pids+=($!)
    echo $! >"$work/haproxy.pid"

    if [ "$FLOOR" = 1 ]; then
        target/release/examples/floor_relay $P_FLOOR 127.0.0.1:$B1 127.0.0.1:$B2 >"$work/floor.log" 2>&1 &
        pids+=($!)
        echo $! >"$work/floor.pid"
    fi

    nginx_conf 1 "$work" "$MAXCONN" $P_NGINX $B1 $B2 $T_NGINX "$work/cert.pem" "$work/key.pem" "$SUITES" >"$work/nginx.conf"
    start_nginx "$work/nginx.conf" "$work"
    sleep 1
}

stop_proxies() {
    for name in lb-event_loop lb-threaded base-event_loop base-threaded haproxy floor; do
        [ -f "$work/$name.pid" ] && kill "$(cat "$work/$name.pid")" 2>/dev/null || true
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
port_of() { case $1 in lb-event_loop) echo $P_LB ;; lb-threaded) echo $P_LBT ;; base-event_loop) echo $P_BASE ;; base-threaded) echo $P_BASET ;; haproxy) echo $P_HAPROXY ;; nginx) echo $P_NGINX ;; floor) echo $P_FLOOR ;; esac; }
HZ=$(getconf CLK_TCK)

tls_port_of() { case $1 in lb-event_loop) echo $T_LB ;; lb-threaded) echo $T_LBT ;; haproxy) echo $T_HAPROXY ;; nginx) echo $T_NGINX ;; esac; }

# One wrk run against a proxy: name, URL, connections, seconds, then wrk's extra arguments. Prints
# "req/s p50 p99 cpu-us/req user-us/req errors".
measure() {
    local name=$1 url=$2 conns=$3 seconds=$4
    shift 4
    local before after out rps total p50 p99 errors ub sb ua sa
    before=$(cpu_ticks "$name")
    out=$(wrk -t1 -c"$conns" -d"${seconds}s" --latency "$@" "$url" 2>&1)
    after=$(cpu_ticks "$name")
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    total=$(echo "$out" | awk '/requests in/ {print $1}')
    p50=$(to_us "$(echo "$out" | awk '$1 == "50%" {print $2}')")
    p99=$(to_us "$(echo "$out" | awk '$1 == "99%" {print $2}')")
    errors=$(echo "$out" | awk '/Non-2xx|Socket errors/ {print}' | tr '\n' ' ')
    read -r ub sb <<<"$before"
    read -r ua sa <<<"$after"
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$rps" "$p50" "$p99" \
        "$(awk -v a=$((ub + sb)) -v b=$((ua + sa)) -v hz="$HZ" -v n="$total" 'BEGIN { printf "%.2f", (b - a) * 1000000 / hz / n }')" \
        "$(awk -v a="$ub" -v b="$ua" -v hz="$HZ" -v n="$total" 'BEGIN { printf "%.2f", (b - a) * 1000000 / hz / n }')" \
        "$errors"
}

# KiB of RSS one idle keep-alive connection adds to a freshly started proxy: name, port, and "tls".
idle_cost() {
    local name=$1 port=$2 mode=${3:-} scheme=http before after opened idle_pid
    [ "$mode" = tls ] && scheme=https
    curl -skf -o /dev/null "$scheme://127.0.0.1:$port/" || true
    before=$(rss_kib "$name")
    target/release/examples/idle_conns "127.0.0.1:$port" "$IDLE_CONNS" 8 $mode >"$work/idle-$name.out" &
    idle_pid=$!
    for _ in $(seq 1200); do grep -q ready "$work/idle-$name.out" 2>/dev/null && break; sleep 0.1; done
    sleep 1
    after=$(rss_kib "$name")
    opened=$(awk '{print $2}' "$work/idle-$name.out")
    wait $idle_pid || true
    printf '%-14s RSS %8s KiB -> %8s KiB with %s idle %s connections\n' "$name" "$before" "$after" "$opened" "${mode:-plain}" >&2
    awk -v a="$before" -v b="$after" -v n="$opened" 'BEGIN { if (n > 0) printf "%.2f", (b - a) / n; else print "n/a" }'
}

proxies="lb-event_loop lb-threaded haproxy nginx"
[ -n "$LB_BASELINE" ] && proxies="$proxies base-event_loop base-threaded"
# The floor relay is measured under load only: it holds a backend connection per client connection,
# so its idle-connection memory means nothing.
load_proxies=$proxies
[ "$FLOOR" = 1 ] && load_proxies="$proxies floor"
for name in $load_proxies; do
    curl -sf -o /dev/null "http://127.0.0.1:$(port_of "$name")/" || { echo "$name does not answer"; exit 1; }
done

if [ "$PLAIN" = 1 ]; then
    results="$work/results.tsv"
    : >"$results"
    for round in $(seq "$ROUNDS"); do
        order=$(round_order "$round" "$load_proxies")
        for conns in $CONNS; do
            for name in $order; do
                line=$(measure "$name" "http://127.0.0.1:$(port_of "$name")/" "$conns" "$SECONDS_PER_RUN")
                printf '%s\t%s\t%s\n' "$name" "$conns" "$line" >>"$results"
                IFS=$'\t' read -r rps p50 p99 cpu_us user_us errors <<<"$line"
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
        per=$(idle_cost "$name" "$(port_of "$name")")
        printf '%s\t%s\n' "$name" "$per" >>"$memory"
    done

    echo
    echo "== medians over $ROUNDS rounds (ratios against HAProxy at the same concurrency)"
    printf '%-14s %6s %12s %10s %10s %12s %12s %10s %10s\n' proxy conns "req/s" "p50 us" "p99 us" "cpu us/req" "user us/req" "rps/HAP" "cpu/HAP"
    for conns in $CONNS; do
        hap_rps=$(median_of "$results" haproxy "$conns" 3)
        hap_cpu=$(median_of "$results" haproxy "$conns" 6)
        for name in $load_proxies; do
            med() { median_of "$results" "$name" "$conns" "$1"; }
            rps=$(med 3); p50=$(med 4); p99=$(med 5); cpu=$(med 6); user=$(med 7)
            printf '%-14s %6s %12s %10s %10s %12s %12s %10s %10s\n' "$name" "$conns" "$rps" "$p50" "$p99" "$cpu" "$user" \
                "$(ratio "$rps" "$hap_rps")" "$(ratio "$cpu" "$hap_cpu")"
        done
    done
    hap_mem=$(awk -F'\t' '$1 == "haproxy" {print $2}' "$memory")
    echo
    printf '%-14s %18s %10s\n' proxy "KiB per idle conn" "vs HAProxy"
    while IFS=$'\t' read -r name per; do
        printf '%-14s %18s %10s\n' "$name" "$per" "$(ratio "$per" "$hap_mem")"
    done <"$memory"
fi

if [ "$TLS" = 1 ]; then
    echo
    echo "== HTTPS: keep-alive and a new TLS connection per request, wrk -c$TLS_CONNS"
    tls_proxies="lb-event_loop lb-threaded haproxy nginx"
    for name in $tls_proxies; do
        curl -skf -o /dev/null "https://127.0.0.1:$(tls_port_of "$name")/" || { echo "$name does not answer HTTPS"; exit 1; }
    done
    tls_results="$work/tls.tsv"
    : >"$tls_results"
    for round in $(seq "$ROUNDS"); do
        order=$(round_order "$round" "$tls_proxies")
        for mode in keepalive close; do
            for name in $order; do
                url="https://127.0.0.1:$(tls_port_of "$name")/"
                if [ "$mode" = close ]; then
                    line=$(measure "$name" "$url" "$TLS_CONNS" "$SECONDS_PER_RUN" -H "Connection: close")
                else
                    line=$(measure "$name" "$url" "$TLS_CONNS" "$SECONDS_PER_RUN")
                fi
                printf '%s\t%s\t%s\n' "$name" "$mode" "$line" >>"$tls_results"
                IFS=$'\t' read -r rps p50 p99 cpu_us user_us errors <<<"$line"
                printf 'round %s  %-14s %-9s %10s req/s  p50 %8sus  p99 %8sus  cpu %7sus/req (user %6s) %s\n' \
                    "$round" "$name" "$mode" "$rps" "$p50" "$p99" "$cpu_us" "$user_us" "$errors"
            done
        done
    done

    echo
    echo "== memory of $IDLE_CONNS idle TLS connections (freshly started proxies)"
    stop_proxies
    start_proxies
    tls_memory="$work/tls-memory.tsv"
    : >"$tls_memory"
    for name in $tls_proxies; do
        per=$(idle_cost "$name" "$(tls_port_of "$name")" tls)
        printf '%s\t%s\n' "$name" "$per" >>"$tls_memory"
    done

    echo
    echo "== HTTPS medians over $ROUNDS rounds; ratios against the better of HAProxy and nginx"
    printf '%-14s %11s %9s %10s %11s %10s %10s %10s %9s %9s %9s %9s\n' proxy "ka req/s" "ka p99" "ka cpu/req" "new conn/s" "cpu/conn" "cpu/hshk" "idle KiB" "cpu/req x" "cpu/conn x" "hshk x" "idle x"
    tmed() { median_of "$tls_results" "$1" "$2" "$3"; }
    best() { # the lower of HAProxy's and nginx's value of a per-proxy figure: $1 = a command printing it for a name
        local h n; h=$($1 haproxy); n=$($1 nginx)
        awk -v h="$h" -v n="$n" 'BEGIN { print (h < n ? h : n) }'
    }
    ka_cpu() { tmed "$1" keepalive 6; }
    conn_cpu() { tmed "$1" close 6; }
    hshk_cpu() { awk -v c="$(conn_cpu "$1")" -v k="$(ka_cpu "$1")" 'BEGIN { printf "%.2f", c - k }'; }
    idle_kib() { awk -F'\t' -v n="$1" '$1 == n {print $2}' "$tls_memory"; }
    best_ka=$(best ka_cpu); best_conn=$(best conn_cpu); best_hshk=$(best hshk_cpu); best_idle=$(best idle_kib)
    for name in $tls_proxies; do
        printf '%-14s %11s %9s %10s %11s %10s %10s %10s %9s %9s %9s %9s\n' "$name" \
            "$(tmed "$name" keepalive 3)" "$(tmed "$name" keepalive 5)" "$(ka_cpu "$name")" \
            "$(tmed "$name" close 3)" "$(conn_cpu "$name")" "$(hshk_cpu "$name")" "$(idle_kib "$name")" \
            "$(ratio "$(ka_cpu "$name")" "$best_ka")" "$(ratio "$(conn_cpu "$name")" "$best_conn")" \
            "$(ratio "$(hshk_cpu "$name")" "$best_hshk")" "$(ratio "$(idle_kib "$name")" "$best_idle")"
    done
    echo "(ka: keep-alive; cpu in us of utime + stime; cpu/hshk = cpu per new connection - cpu per keep-alive request)"
fi
echo
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r); $(date -u +%F)"
