#!/usr/bin/env bash
# Soak test (not run in CI): ten minutes of mixed load through a release `lb` while its backends are
# restarted, sampling the balancer's file descriptors and memory every 10 seconds.
#
#   scripts/soak.sh              # 600 s
#   SOAK_SECONDS=120 scripts/soak.sh
#
# Load: keep-alive GETs (wrk, 50 connections), new-connection GETs (wrk with Connection: close,
# 4 connections), and POSTs with JSON bodies (curl, in a loop). Every 60 s one of the two backends is
# killed and started again 5 s later. Reports requests, client-visible errors, and the balancer's
# descriptors and RSS over time. Loopback only; everything stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."

SOAK_SECONDS=${SOAK_SECONDS:-600}
need() { command -v "$1" >/dev/null 2>&1; }
if ! need wrk || ! need curl; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk curl >/dev/null
fi
cargo build --release --quiet --bin lb --example fast_backend
work=$(mktemp -d)
pids=()
b1="" b2=""
cleanup() {
    for p in "${pids[@]}" $b1 $b2; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

B1=19201 B2=19202 LB=19280 ADMIN=19290
start_backend() { target/release/examples/fast_backend "$1" >/dev/null 2>&1 & echo $!; }
b1=$(start_backend $B1); b2=$(start_backend $B2)
cat >"$work/lb.toml" <<EOF
listen = "127.0.0.1:$LB"
access_log = false
log_level = "warn"
retries = 2
[health_check]
interval = "1s"
timeout = "500ms"
rise = 2
fall = 2
[admin]
listen = "127.0.0.1:$ADMIN"
[[backends]]
url = "http://127.0.0.1:$B1"
[[backends]]
url = "http://127.0.0.1:$B2"
EOF
target/release/lb "$work/lb.toml" 2>"$work/lb.log" &
lb=$!
pids+=("$lb")
sleep 1

wrk -t1 -c50 -d"${SOAK_SECONDS}s" "http://127.0.0.1:$LB/" >"$work/wrk-keepalive.txt" 2>&1 &
pids+=($!)
wrk -t1 -c4 -d"${SOAK_SECONDS}s" -H "Connection: close" "http://127.0.0.1:$LB/" >"$work/wrk-close.txt" 2>&1 &
pids+=($!)
(
    end=$((SECONDS + SOAK_SECONDS))
    ok=0 failed=0
    while [ $SECONDS -lt $end ]; do
        code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' \
            -X POST -d '{"soak":true,"n":12345}' "http://127.0.0.1:$LB/" || echo 000)
        if [ "$code" = 200 ]; then ok=$((ok + 1)); else failed=$((failed + 1)); fi
        sleep 0.05
    done
    echo "$ok $failed" >"$work/posts.txt"
) &
pids+=($!)

printf '%6s %6s %9s %12s %8s\n' "time_s" "fds" "rss_kib" "requests" "errors"
start=$SECONDS
next_restart=60
while [ $((SECONDS - start)) -lt "$SOAK_SECONDS" ]; do
    sleep 10
    t=$((SECONDS - start))
    fds=$(ls /proc/$lb/fd | wc -l)
    rss=$(awk '/VmRSS/ {print $2}' /proc/$lb/status)
    stats=$(curl -s "http://127.0.0.1:$ADMIN/stats" || echo '{}')
    requests=$(echo "$stats" | grep -o '"total_requests":[0-9]*' | cut -d: -f2)
    errors=$(echo "$stats" | grep -o '"error_count":[0-9]*' | cut -d: -f2 | awk '{s += $1} END {print s + 0}')
    printf '%6s %6s %9s %12s %8s\n' "$t" "$fds" "$rss" "${requests:-?}" "$errors"
    echo "$t $fds $rss" >>"$work/samples.txt"
    if [ "$t" -ge "$next_restart" ] && [ $((t + 10)) -lt "$SOAK_SECONDS" ]; then
        # Alternate: kill one backend, bring it back 5 s later on the same port.
        if [ $(((next_restart / 60) % 2)) -eq 1 ]; then
            kill "$b1"; sleep 5; b1=$(start_backend $B1)
        else
            kill "$b2"; sleep 5; b2=$(start_backend $B2)
        fi
        echo "       (restarted a backend at ${t}s)"
        next_restart=$((next_restart + 60))
    fi
done
wait "${pids[@]:1}" 2>/dev/null || true

echo
echo "== keep-alive GETs";      grep -E "requests in|Non-2xx|Socket errors" "$work/wrk-keepalive.txt" || true
echo "== new-connection GETs";  grep -E "requests in|Non-2xx|Socket errors" "$work/wrk-close.txt" || true
read -r posts_ok posts_failed <"$work/posts.txt"
echo "== POSTs: $posts_ok ok, $posts_failed failed"
awk 'NR == 1 {minf = maxf = $2; minr = maxr = $3}
     {if ($2 < minf) minf = $2; if ($2 > maxf) maxf = $2; if ($3 < minr) minr = $3; if ($3 > maxr) maxr = $3}
     END {printf "== lb descriptors %d..%d, RSS %d..%d KiB over %d samples\n", minf, maxf, minr, maxr, NR}' "$work/samples.txt"
echo "== lb warnings: $(grep -c WARN "$work/lb.log" || true), errors: $(grep -c ERROR "$work/lb.log" || true)"
