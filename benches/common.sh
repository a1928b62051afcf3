# Shared by the benchmark scripts (sourced, not run): a scratch folder and cleanup, installing the
# tools, the HAProxy and nginx configurations every comparison uses (keep-alive to the same two
# backends), and turning wrk's output into numbers.

# A scratch folder, and the background processes started into `pids`: both go when the script exits
# (nginx, which daemonizes, by its pid file in the folder).
work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

need() { command -v "$1" >/dev/null 2>&1; }

# build_lb_and_examples EXAMPLE...: the release binary and the examples the script runs. The binary is
# built on its own: built together with the examples, it would get their dev-dependency's
# fault-injection feature (Cargo unifies features within one invocation).
build_lb_and_examples() {
    cargo build --release --quiet --bin lb
    local example args=()
    for example in "$@"; do args+=(--example "$example"); done
    cargo build --release --quiet "${args[@]}"
}

# ensure_tools "COMMANDS" "DEBIAN PACKAGES": installs the packages when a command is missing.
ensure_tools() {
    local missing=0 c
    for c in $1; do need "$c" || missing=1; done
    if [ "$missing" = 1 ]; then
        echo "== installing $2 from Debian's packages"
        apt-get update -qq
        # shellcheck disable=SC2086
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $2 >/dev/null
    fi
}

# haproxy_cfg THREADS MAXCONN PORT BACKEND1 BACKEND2 [TLS_PORT PEM SUITES]: HAProxy keeping connections
# to both backends (http-reuse always), round robin; with TLS_PORT, an HTTPS frontend too.
# lb_cfg PORT B1 B2: an lb configuration in front of two fast backends, no access log, probes an hour
# apart (they would show in the figures otherwise).
lb_cfg() {
    cat <<EOF
listen = "127.0.0.1:$1"
access_log = false
log_level = "warn"
[health_check]
interval = "1h"
[[backends]]
url = "http://127.0.0.1:$2"
[[backends]]
url = "http://127.0.0.1:$3"
EOF
}

haproxy_cfg() {
    local threads=$1 maxconn=$2 port=$3 b1=$4 b2=$5 tls_port=${6:-} pem=${7:-} suites=${8:-}
    echo "global"
    echo "    nbthread $threads"
    echo "    maxconn $maxconn"
    [ -n "$suites" ] && echo "    ssl-default-bind-ciphersuites $suites"
    cat <<EOF
defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 30s
    option http-keep-alive
    http-reuse always
frontend bench
    bind 127.0.0.1:$port
    default_backend servers
EOF
    if [ -n "$tls_port" ]; then
        cat <<EOF
frontend bench_tls
    bind 127.0.0.1:$tls_port ssl crt $pem alpn http/1.1
    default_backend servers
EOF
    fi
    cat <<EOF
backend servers
    balance roundrobin
    server s1 127.0.0.1:$b1
    server s2 127.0.0.1:$b2
EOF
}

# nginx_conf WORKERS DIR MAXCONN PORT BACKEND1 BACKEND2 [TLS_PORT CERT KEY SUITES]: nginx with an
# upstream keepalive pool to both backends; its pid and error log in DIR; with TLS_PORT, HTTPS too.
nginx_conf() {
    local workers=$1 dir=$2 maxconn=$3 port=$4 b1=$5 b2=$6 tls_port=${7:-} cert=${8:-} key=${9:-} suites=${10:-}
    local tls=""
    if [ -n "$tls_port" ]; then
        tls="
        listen 127.0.0.1:$tls_port ssl;
        ssl_certificate $cert;
        ssl_certificate_key $key;
        # Debian's nginx 1.22 leaves TLS 1.3 off unless asked.
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_prefer_server_ciphers on;
        ssl_conf_command Ciphersuites $suites;
        ssl_session_cache shared:SSL:10m;"
    fi
    cat <<EOF
worker_processes $workers;
pid $dir/nginx.pid;
error_log $dir/nginx-error.log warn;
worker_rlimit_nofile $(ulimit -n);
events { worker_connections $maxconn; }
http {
    access_log off;
    upstream servers {
        server 127.0.0.1:$b1;
        server 127.0.0.1:$b2;
        keepalive 1024;
    }
    server {
        listen 127.0.0.1:$port;$tls
        keepalive_requests 1000000;
        location / {
            proxy_pass http://servers;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
}

# Starts nginx on a configuration file (the error log of DIR from the start, where nginx allows it).
start_nginx() {
    local conf=$1 dir=$2
    nginx -c "$conf" -e "$dir/nginx-error.log" 2>/dev/null || nginx -c "$conf"
}

# await_http URL: waits up to 5 s for URL to answer with a success, else stops the script.
await_http() {
    local _
    for _ in $(seq 50); do curl -fso /dev/null "$1" && return 0; sleep 0.1; done
    echo "$1 does not answer" >&2
    exit 1
}

# wrk's latency (1.23ms, 456.00us, 1.20s) in microseconds.
to_us() {
    awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) print n; else if (v ~ /ms$/) print n * 1000; else if (v ~ /s$/) print n * 1000000; else print n }'
}

# The median of the numbers on standard input, one per line.
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# median_of FILE NAME KEY FIELD: the median of field FIELD over the tab-separated rows of FILE whose
# first two fields are NAME and KEY (a proxy and a concurrency or mode).
median_of() { awk -F'\t' -v n="$2" -v k="$3" -v f="$4" '$1 == n && $2 == k {print $f}' "$1" | median; }

# A / B to two decimals, or n/a when B is 0.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

# round_order ROUND LIST: LIST in odd rounds, reversed in even ones, so that drift in the machine's
# load hits every proxy alike.
round_order() {
    if [ $(($1 % 2)) -eq 0 ]; then echo "$2" | tr ' ' '\n' | tac | tr '\n' ' '; else echo "$2"; fi
}
