#!/usr/bin/env bash
# User time per request at 64 keep-alive connections, sampled finely enough to compare builds: lb (and,
# with LB_BASELINE, an older lb binary) and nginx with one worker, behind the same two fast backends,
# wrk -t1 -c64, several rounds in alternating order. During each run `perf record -e cpu-clock` samples
# the proxy at 10 kHz for 8 s; the samples outside the kernel, over the requests served in those 8 s,
# are its user time per request. compare.sh reads utime from /proc, which the scheduler tick samples at
# 100 Hz: about 60 user ticks per lb run, so one run moves by ±10%. Here a run collects about 100 times
# as many samples. The sampling interrupts cost CPU themselves, so the figures sit above compare.sh's;
# they compare with each other. Loopback only; bounded in time.
#
#   benches/usertime.sh                          # 6 rounds x 10 s
#   ROUNDS=8 LB_BASELINE=/path/to/lb benches/usertime.sh
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-6}
LB_BASELINE=${LB_BASELINE:-}

# shellcheck source=benches/common.sh
. benches/common.sh
ensure_tools "wrk nginx perf curl" "wrk nginx linux-perf curl"
build_lb_and_examples fast_backend

B1=19831 B2=19832 P_LB=19841 P_BASE=19842 P_NGINX=19843
target/release/examples/fast_backend $B1 $B2 >/dev/null 2>&1 &
pids+=($!)

declare -A pid_of port_of
lb_cfg $P_LB $B1 $B2 >"$work/lb.toml"
target/release/lb "$work/lb.toml" 2>/dev/null &
pids+=($!)
pid_of[lb]=$! port_of[lb]=$P_LB
proxies="lb"
if [ -n "$LB_BASELINE" ]; then
    lb_cfg $P_BASE $B1 $B2 >"$work/base.toml"
    "$LB_BASELINE" "$work/base.toml" 2>/dev/null &
    pids+=($!)
    pid_of[baseline]=$! port_of[baseline]=$P_BASE
    proxies="lb baseline"
fi
nginx_conf 1 "$work" 4096 $P_NGINX $B1 $B2 >"$work/nginx.conf"
start_nginx "$work/nginx.conf" "$work"
sleep 1
pid_of[nginx]=$(pgrep -f "nginx: worker process" -P "$(cat "$work/nginx.pid")" | head -1)
port_of[nginx]=$P_NGINX
proxies="$proxies nginx"
for name in $proxies; do
    curl -sf -o /dev/null "http://127.0.0.1:${port_of[$name]}/" || { echo "$name does not answer" >&2; exit 1; }
done

: >"$work/rows.tsv"
for round in $(seq "$ROUNDS"); do
    for name in $(round_order "$round" "$proxies"); do
        wrk -t1 -c64 -d10s "http://127.0.0.1:${port_of[$name]}/" >"$work/wrk.out" &
        w=$!
        sleep 1
        perf record -q -e cpu-clock -F 10000 -p "${pid_of[$name]}" -o "$work/perf.data" -- sleep 8 >/dev/null 2>&1
        wait $w
        rps=$(awk '/Requests\/sec/ {print $2}' "$work/wrk.out")
        # Samples per shared object: the kernel's, and everything else (the proxy, libc, the vDSO).
        read -r user kernel < <(perf report -i "$work/perf.data" --sort dso -F overhead,sample,dso --stdio 2>/dev/null |
            awk '!/^#/ && NF >= 3 { if ($3 ~ /kernel/) k += $2; else u += $2 } END { print u + 0, k + 0 }')
        row=$(awk -v n="$name" -v u="$user" -v k="$kernel" -v rps="$rps" \
            'BEGIN { r = rps * 8; printf "%s\t64\t%.3f\t%.3f\t%.0f", n, u / 10000 / r * 1e6, (u + k) / 10000 / r * 1e6, rps }')
        echo "round $round  $row"
        echo "$row" >>"$work/rows.tsv"
    done
done

echo
echo "== medians over $ROUNDS rounds (user and CPU per request while sampled; ratios against nginx)"
printf '%-10s %12s %12s %10s %10s\n' proxy "user us/req" "cpu us/req" "req/s" "user/nginx"
nginx_user=$(median_of "$work/rows.tsv" nginx 64 3)
for name in $proxies; do
    user=$(median_of "$work/rows.tsv" "$name" 64 3)
    printf '%-10s %12s %12s %10s %10.2f\n' "$name" "$user" "$(median_of "$work/rows.tsv" "$name" 64 4)" \
        "$(median_of "$work/rows.tsv" "$name" 64 5)" "$(awk -v a="$user" -v b="$nginx_user" 'BEGIN { print a / b }')"
done
