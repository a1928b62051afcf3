#!/usr/bin/env bash
# Browser test of the admin dashboard: starts demo backends and lb (admin on a free port), drives the
# page in headless Chromium with playwright-core, and saves a screenshot to target/dashboard.png.
# Installs Debian's chromium and the npm package when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null 2>&1; then
    echo "== installing chromium"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
if [ ! -d scripts/dashboard/node_modules/playwright-core ]; then
    echo "== installing playwright-core"
    (cd scripts/dashboard && npm ci --no-audit --no-fund --loglevel=error)
fi

# The test profile: after `cargo test` (as in CI) everything is built already; the dev profile would
# compile every dependency again.
cargo build --quiet --profile test --bin lb --example backends
work=$(mktemp -d)
cleanup() { kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

# Port 0: the backends pick free ports and print them (probing for free ports first would race).
target/debug/examples/backends 0 0 >"$work/backends.log" 2>&1 &
for _ in $(seq 100); do
    [ "$(grep -c 'listening on' "$work/backends.log")" -ge 2 ] && break
    sleep 0.1
done
ports=$(grep -o 'listening on http://127.0.0.1:[0-9]*' "$work/backends.log" | sed 's/.*://')
port1=$(echo "$ports" | sed -n 1p)
port2=$(echo "$ports" | sed -n 2p)
[ -n "$port1" ] && [ -n "$port2" ] || { cat "$work/backends.log"; echo "demo backends did not start"; exit 1; }
cat >"$work/lb.toml" <<TOML
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[[backends]]
url = "http://127.0.0.1:$port1"
[[backends]]
url = "http://127.0.0.1:$port2"
TOML
target/debug/lb "$work/lb.toml" >"$work/lb.log" 2>&1 &
for _ in $(seq 100); do
    grep -q "dashboard on http://" "$work/lb.log" && break
    sleep 0.1
done
admin=$(grep -o "dashboard on http://[^ ]*" "$work/lb.log" | sed 's/dashboard on //')
listen=$(grep -o "listening on [0-9.:]*" "$work/lb.log" | sed 's/listening on //')
[ -n "$admin" ] && [ -n "$listen" ] || { cat "$work/lb.log"; echo "lb did not start"; exit 1; }

# Some traffic, so the chart and counters have something to show.
for _ in $(seq 40); do curl -s -o /dev/null "http://$listen/" || true; done
( for _ in $(seq 300); do curl -s -o /dev/null "http://$listen/" || true; sleep 0.02; done ) &

mkdir -p target
if ! node scripts/dashboard/dashboard.mjs "$admin" target/dashboard.png 2; then
    echo "--- lb log (without access lines)"; grep -v '" 200 ' "$work/lb.log" | head -30
    echo "--- backends log"; tail -10 "$work/backends.log"
    exit 1
fi
echo "dashboard test passed"
