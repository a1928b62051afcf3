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

cargo build --quiet --bin lb --example backends
work=$(mktemp -d)
cleanup() { kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

read -r port1 port2 < <(python3 -c 'import socket
s=[socket.socket() for _ in range(2)]
[x.bind(("127.0.0.1",0)) for x in s]
print(*[x.getsockname()[1] for x in s])')
target/debug/examples/backends "$port1" "$port2" >"$work/backends.log" 2>&1 &
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
node scripts/dashboard/dashboard.mjs "$admin" target/dashboard.png 2
echo "dashboard test passed"
