#!/usr/bin/env bash
# What routing costs end to end: lb with one pool against lb with 10 routes (nine that do not match,
# then the one that does, so every request walks the whole list), same two fast backends, wrk -t1,
# in alternation; medians and the CPU-per-request ratio. Loopback only; bounded in time.
#
#   benches/routes.sh                       # 5 rounds x 10 s at 64 connections
#   ROUNDS=3 SECONDS_PER_RUN=5 CONNS=256 benches/routes.sh
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-5}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
CONNS=${CONNS:-64}

# shellcheck source=benches/common.sh
. benches/common.sh
ensure_tools "wrk" "wrk"
build_lb_and_examples fast_backend


B1=19501 B2=19502 P_ONE=19581 P_ROUTES=19582
target/release/examples/fast_backend $B1 $B2 >/dev/null 2>&1 &
pids+=($!)

common="access_log = false
log_level = \"warn\"
[health_check]
interval = \"1h\""
cat >"$work/one.toml" <<EOF
listen = "127.0.0.1:$P_ONE"
$common
[[backends]]
url = "http://127.0.0.1:$B1"
[[backends]]
url = "http://127.0.0.1:$B2"
EOF
{
    echo "listen = \"127.0.0.1:$P_ROUTES\""
    echo "$common"
    echo "[[backends]]"
    echo "url = \"http://127.0.0.1:$B1\""
    echo "[[pools]]"
    echo "name = \"app\""
    echo "backends = [{ url = \"http://127.0.0.1:$B1\" }, { url = \"http://127.0.0.1:$B2\" }]"
    for i in $(seq 1 9); do
        echo "[[routes]]"
        if [ $((i % 2)) -eq 0 ]; then echo "host = \"service$i.example.com\""; else echo "path_prefix = \"/section$i/\""; fi
        echo "pool = \"default\""
    done
    echo "[[routes]]"
    echo "host = \"*.example.com\""
    echo "path_prefix = \"/\""
    echo "pool = \"app\""
} >"$work/routes.toml"
for name in one routes; do
    target/release/lb "$work/$name.toml" >"$work/$name.log" 2>&1 &
    pids+=($!)
    echo $! >"$work/$name.pid"
done
sleep 1
port_of() { case $1 in one) echo $P_ONE ;; routes) echo $P_ROUTES ;; esac; }
for name in one routes; do
    curl -sf -o /dev/null -H "Host: www.example.com" "http://127.0.0.1:$(port_of $name)/" || { echo "$name does not answer"; exit 1; }
done
HZ=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$(cat "$work/$1.pid")/stat"; }

results="$work/results.tsv"
: >"$results"
for round in $(seq "$ROUNDS"); do
    order="one routes"
    [ $((round % 2)) -eq 0 ] && order="routes one"
    for name in $order; do
        before=$(ticks "$name")
        out=$(wrk -t1 -c"$CONNS" -d"${SECONDS_PER_RUN}s" --latency -H "Host: www.example.com" "http://127.0.0.1:$(port_of "$name")/" 2>&1)
        after=$(ticks "$name")
        rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
        total=$(echo "$out" | awk '/requests in/ {print $1}')
        p99=$(to_us "$(echo "$out" | awk '$1 == "99%" {print $2}')")
        cpu=$(awk -v a="$before" -v b="$after" -v hz="$HZ" -v n="$total" 'BEGIN { printf "%.3f", (b - a) * 1000000 / hz / n }')
        printf '%s\t%s\t%s\t%s\n' "$name" "$rps" "$p99" "$cpu" >>"$results"
        printf 'round %s  %-7s %10s req/s  p99 %7sus  cpu %6sus/req\n' "$round" "$name" "$rps" "$p99" "$cpu"
    done
done

echo
echo "== medians over $ROUNDS rounds, wrk -t1 -c$CONNS"
printf '%-8s %12s %10s %12s %10s\n' setup "req/s" "p99 us" "cpu us/req" "cpu/one"
one_cpu=$(awk -F'\t' '$1 == "one" {print $4}' "$results" | median)
for name in one routes; do
    med() { awk -F'\t' -v n="$name" -v f="$1" '$1 == n {print $f}' "$results" | median; }
    printf '%-8s %12s %10s %12s %10s\n' "$name" "$(med 2)" "$(med 3)" "$(med 4)" \
        "$(awk -v a="$(med 4)" -v b="$one_cpu" 'BEGIN { printf "%.3f", a / b }')"
done
echo "(one: one pool; routes: 10 routes, every request matching the last)"
