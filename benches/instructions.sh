#!/usr/bin/env bash
# User-space instructions per proxied request, counted by callgrind so that the figure repeats on a
# noisy machine: each lb binary given (default: this tree's release build) serves 2,000 and then, in a
# fresh process, 12,000 requests over one keep-alive curl connection to two fast backends; the
# difference of the two totals over 10,000 is the cost of one request, start-up and shutdown cancelled
# out. Two requests: curl's minimal head, and a browser-like head of eight fields. A third row, "wrk64",
# is the cost under load: wrk -t1 -c64 (wrk's minimal head) for 10 s against lb under callgrind, which
# slows lb so much that every batch is full, as under real load; its total less that of a run serving
# only the readiness request, over the requests wrk completed (runs agree within about 1%).
#
#   benches/instructions.sh                       # target/release/lb
#   benches/instructions.sh /tmp/lb-before target/release/lb
#   KEEP=/tmp/cg benches/instructions.sh          # keeps the profiles for callgrind_annotate
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=benches/common.sh
. benches/common.sh
ensure_tools "valgrind curl wrk" "valgrind curl wrk"
target=${CARGO_TARGET_DIR:-target}
build_lb_and_examples fast_backend
[ $# -gt 0 ] || set -- "$target/release/lb"
KEEP=${KEEP:-}
[ -z "$KEEP" ] || mkdir -p "$KEEP"

B1=19401 B2=19402 PORT=19481
"$target/release/examples/fast_backend" $B1 $B2 >/dev/null 2>&1 &
pids+=($!)
lb_cfg $PORT $B1 $B2 >"$work/lb.toml"

browser=(
    -H "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
    -H "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    -H "Accept-Language: en-US,en;q=0.5"
    -H "Accept-Encoding: gzip, deflate, br"
    -H "Referer: http://127.0.0.1:$PORT/index.html"
    -H "Cookie: session=4f2a9c1e8b7d6a5f; theme=dark; lang=en"
    -H "Upgrade-Insecure-Requests: 1"
)

# total LB KIND COUNT: the instructions one lb process under callgrind executes serving COUNT requests.
total() {
    local lb=$1 kind=$2 count=$3 out="$work/callgrind.out" pid i
    rm -f "$out"
    valgrind --tool=callgrind --callgrind-out-file="$out" "$lb" "$work/lb.toml" 2>/dev/null &
    pid=$!
    # Ready when one request gets through (the same one in every run, so it cancels out).
    for i in $(seq 200); do
        curl -s -o /dev/null "http://127.0.0.1:$PORT/ready" && break
        sleep 0.1
    done
    if [ "$kind" = wrk64 ]; then
        [ "$count" = 0 ] || wrk -t1 -c64 -d10s "http://127.0.0.1:$PORT/" >"$work/wrk.out"
    elif [ "$kind" = browser ]; then
        curl -s -o /dev/null "${browser[@]}" "http://127.0.0.1:$PORT/static/page/[1-$count]"
    else
        curl -s -o /dev/null "http://127.0.0.1:$PORT/static/page/[1-$count]"
    fi
    kill -TERM "$pid"
    wait "$pid" || true
    [ -z "$KEEP" ] || cp "$out" "$KEEP/$(basename "$lb")-$(echo "$lb" | md5sum | cut -c1-6)-$kind-$count.out"
    awk '/^(summary|totals):/ {print $2; exit}' "$out"
}

printf '%-40s %-8s %12s\n' binary request "instr/req"
for lb in "$@"; do
    for kind in curl browser; do
        small=$(total "$lb" "$kind" 2000)
        large=$(total "$lb" "$kind" 12000)
        printf '%-40s %-8s %12d\n' "$lb" "$kind" $(((large - small) / 10000))
    done
    idle=$(total "$lb" wrk64 0)
    loaded=$(total "$lb" wrk64 1)
    served=$(awk '/requests in/ {print $1}' "$work/wrk.out")
    printf '%-40s %-8s %12d\n' "$lb" wrk64 $(((loaded - idle) / served))
done
