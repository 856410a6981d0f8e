#!/usr/bin/env bash
# SIP proxy benchmark: `voxgate proxy` vs Kamailio 5.6, side by side in one run.
#
#   bench/sip/run.sh                      # build voxgate (release), then every measurement, 3 rounds
#   SIP_BENCH_ROUNDS=5 SIP_BENCH_CALLS=50000 bench/sip/run.sh
#   bench/sip/run.sh --only kamailio      # skip voxgate (e.g. before the proxy exists)
#   bench/sip/run.sh --only voxgate
#
# What is measured, over UDP on loopback, SIPp uac -> proxy -> SIPp uas (the scenarios are
# tests/fixtures/sipp/*.xml, Kamailio's configuration is bench/sip/kamailio.cfg):
#   - calls without authentication (voxgate: authenticate_calls = false; Kamailio without WITH_AUTH):
#     INVITE, 100, 180, 200, ACK, BYE, 200, through a stateful, record-routing proxy;
#   - calls with digest authentication (407, ACK, INVITE with credentials, then the same);
#   - REGISTER with digest authentication (401, REGISTER with credentials, 200), SIP_BENCH_USERS users
#     registered in turn, each with a fresh Call-ID;
#   - SIPp uac -> SIPp uas directly, without a proxy: the ceiling SIPp itself allows on this machine.
# Each measurement is a fixed number of calls (SIP_BENCH_CALLS, SIP_BENCH_REGS) offered at a high rate
# (SIP_BENCH_RATE) with at most SIP_BENCH_LIMIT calls open at once, so SIPp runs as fast as the proxy
# answers. Throughput = successful calls / time from the start to the last successful call (SIPp's
# statistics file, dumped every 100 ms, microsecond timestamps; calls that fail only by a 32 s timeout
# do not stretch it); failed % = failed / (successful + failed) over all rounds. Every
# proxy gets a fresh process per measurement, pinned to SIP_BENCH_PROXY_CPU; SIPp uac and uas are
# pinned to SIP_BENCH_SIPP_CPU (the same for both proxies). The measurements are interleaved
# (round 1: every configuration, round 2: every configuration, ...) and the table gives the median.
# Proxy CPU = user + system CPU time of the proxy (all its threads; for Kamailio all its processes)
# per 1,000 successful calls: what the work cost, whatever limited the rate.
#
# Environment: CARGO_TARGET_DIR (default <repo>/target), SIP_BENCH_ROUNDS (3), SIP_BENCH_CALLS (20000),
# SIP_BENCH_REGS (20000), SIP_BENCH_USERS (1000), SIP_BENCH_RATE (20000 calls/s offered),
# SIP_BENCH_LIMIT (400 open calls), SIP_BENCH_PAUSE (10: ms between the ACK and the BYE; with 0 the
# BYE can overtake the ACK inside a multi-process proxy such as Kamailio, and the uas, which requires
# the ACK, fails the call), SIP_BENCH_PROXY_CPU (0), SIP_BENCH_SIPP_CPU (1),
# SIP_BENCH_KAM_CHILDREN (4 UDP worker processes), SIP_BENCH_PORT (15000: ports PORT+10..PORT+30 are
# used, below the ephemeral range), SIP_BENCH_TIMEOUT (300 s per measurement), SIP_BENCH_OUT (the
# directory for raw outputs; default a new /tmp/voxgate-sip-bench.XXXXXX).
# Needs: sip-tester (SIPp), kamailio (installed with apt-get when missing and run as root),
# util-linux (taskset), iproute2 (ss), the Rust toolchain.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
fixtures="$root/tests/fixtures/sipp"
target="${CARGO_TARGET_DIR:-$root/target}"
mkdir -p "$target"
target="$(cd "$target" && pwd)"
export CARGO_TARGET_DIR="$target"

rounds="${SIP_BENCH_ROUNDS:-3}"
calls="${SIP_BENCH_CALLS:-20000}"
regs="${SIP_BENCH_REGS:-20000}"
users="${SIP_BENCH_USERS:-1000}"
rate="${SIP_BENCH_RATE:-20000}"
limit="${SIP_BENCH_LIMIT:-400}"
pause_ms="${SIP_BENCH_PAUSE:-10}"
proxy_cpu="${SIP_BENCH_PROXY_CPU:-0}"
sipp_cpu="${SIP_BENCH_SIPP_CPU:-1}"
kam_children="${SIP_BENCH_KAM_CHILDREN:-4}"
base_port="${SIP_BENCH_PORT:-15000}"
timeout_s="${SIP_BENCH_TIMEOUT:-300}"
password="secret"
domain="a.example"
uac_port=$((base_port + 10))
kam_port=$((base_port + 20))
uas_port=$((base_port + 30))
buff=4194304 # SIPp socket buffers (its default, 64 KiB, drops bursts even without a proxy)

only=""
while (($#)); do
    case "$1" in
    --only) only="$2"; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
    *) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
want() { [[ -z "$only" || "$only" == "$1" ]]; }

# --- 0. tools --------------------------------------------------------------------------------
install_pkg() { # tool package
    command -v "$1" >/dev/null 2>&1 && return 0
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "run.sh: installing $2" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y "$2" >&2 ||
            { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y "$2" >&2; }
    fi
    command -v "$1" >/dev/null 2>&1 || { echo "run.sh: '$1' not found (apt-get install -y $2)" >&2; exit 1; }
}
install_pkg sipp sip-tester
want kamailio && { install_pkg kamailio kamailio; }
install_pkg taskset util-linux
install_pkg ss iproute2

out="${SIP_BENCH_OUT:-$(mktemp -d /tmp/voxgate-sip-bench.XXXXXX)}"
mkdir -p "$out"
echo "run.sh: raw outputs in $out" >&2

# --- 1. build --------------------------------------------------------------------------------
voxgate="$target/release/voxgate"
if want voxgate; then
    (cd "$root" && cargo build --release -p voxgate >&2)
fi

# --- 2. inputs ---------------------------------------------------------------------------------
users_csv="$out/users.csv"
{
    echo "SEQUENTIAL"
    for ((i = 0; i < users; i++)); do
        u=$(printf 'user%04d' "$i")
        echo "$u;[authentication username=$u password=$password];"
    done
} >"$users_csv"

voxgate_config() { # authenticate_calls -> file
    local f="$out/voxgate-$1.toml"
    {
        cat <<EOF
# Written by bench/sip/run.sh.
[[listen]]
transport = "udp"
address = "127.0.0.1:0"

[auth]
algorithms = ["md5"]            # SIPp only does MD5
authenticate_calls = $1
# Every call comes from 127.0.0.1: keep a stray failure from locking the benchmark out.
max_failures_per_source = 1000000
max_failures_per_account = 1000000

[[domain]]
name = "$domain"
encryption = "off"

  [[domain.user]]
  name = "uas"
  contact = "sip:uas@127.0.0.1:$uas_port"
EOF
        for ((i = 0; i < users; i++)); do
            printf '\n  [[domain.user]]\n  name = "user%04d"\n  password = "%s"\n' "$i" "$password"
        done
    } >"$f"
    echo "$f"
}

# --- 3. processes ------------------------------------------------------------------------------
proxy_pid=""
proxy_addr=""
uas_pid=""
cleanup() {
    [[ -n "$uas_pid" ]] && kill "$uas_pid" 2>/dev/null || true
    [[ -n "$proxy_pid" ]] && kill "$proxy_pid" 2>/dev/null || true
    wait 2>/dev/null || true
}
trap cleanup EXIT

wait_udp_port() { # port seconds
    local i
    for ((i = 0; i < $2 * 10; i++)); do
        ss -Hlun "sport = :$1" 2>/dev/null | grep -q . && return 0
        sleep 0.1
    done
    return 1
}

port_free() { ! ss -Hlun "sport = :$1" 2>/dev/null | grep -q .; }

start_voxgate() { # authenticate_calls dir
    local cfg i
    cfg=$(voxgate_config "$1")
    taskset -c "$proxy_cpu" "$voxgate" proxy --config "$cfg" >"$2/proxy.stdout" 2>"$2/proxy.log" &
    proxy_pid=$!
    for ((i = 0; i < 300; i++)); do
        grep -qx ready "$2/proxy.stdout" 2>/dev/null && break
        kill -0 "$proxy_pid" 2>/dev/null || { cat "$2/proxy.log" >&2; echo "run.sh: voxgate proxy exited" >&2; exit 1; }
        sleep 0.1
    done
    grep -qx ready "$2/proxy.stdout" || { echo "run.sh: voxgate proxy not ready after 30 s" >&2; exit 1; }
    proxy_addr=$(awk '$1 == "listening" && $2 == "udp" { print $3; exit }' "$2/proxy.stdout")
}

start_kamailio() { # with_auth(0|1) dir
    local defs=(-A "UAS_URI=\"sip:uas@127.0.0.1:$uas_port\"" -A "PASSWORD=\"$password\"" -A "DOMAIN=\"$domain\"")
    [[ "$1" == 1 ]] && defs+=(-A WITH_AUTH)
    port_free "$kam_port" || { echo "run.sh: UDP port $kam_port is taken (set SIP_BENCH_PORT)" >&2; exit 1; }
    taskset -c "$proxy_cpu" kamailio -f "$here/kamailio.cfg" -l "udp:127.0.0.1:$kam_port" -n "$kam_children" \
        -DD -E -w "$2" -Y "$2" -m 1024 -M 32 -b "$buff" "${defs[@]}" >"$2/proxy.stdout" 2>"$2/proxy.log" &
    proxy_pid=$!
    wait_udp_port "$kam_port" 30 || { cat "$2/proxy.log" >&2; echo "run.sh: kamailio did not start" >&2; exit 1; }
    sleep 0.5 # let the workers fork
    proxy_addr="127.0.0.1:$kam_port"
}

proxy_cpu_ticks() { # pid -> utime+stime of it and its children processes (ticks)
    local total=0 p
    for p in "$1" $(ps --ppid "$1" -o pid= 2>/dev/null); do
        [[ -r /proc/$p/stat ]] || continue
        # fields after the ")" of comm: state=1 ... utime=12 stime=13
        total=$((total + $(sed 's/^.*) //' "/proc/$p/stat" | awk '{ print $12 + $13 }')))
    done
    echo "$total"
}

stop_proxy() {
    [[ -z "$proxy_pid" ]] && return 0
    kill "$proxy_pid" 2>/dev/null || true
    wait "$proxy_pid" 2>/dev/null || true
    proxy_pid=""
}

start_uas() { # dir
    port_free "$uas_port" || { echo "run.sh: UDP port $uas_port is taken (set SIP_BENCH_PORT)" >&2; exit 1; }
    # -default_behaviors -abortunexp: a proxy that lost the uas's 180/200 retransmits the INVITE;
    # SIPp would abort the call on it (unexpected message) where a real UA answers again. The uas
    # is only a sink here; failures are counted at the uac.
    taskset -c "$sipp_cpu" sipp -sf "$fixtures/uas.xml" -i 127.0.0.1 -bind_local -p "$uas_port" -t u1 \
        -default_behaviors all,-abortunexp -buff_size "$buff" -nostdin -trace_stat -stf "$1/uas.csv" -fd 1 -trace_err -error_file "$1/uas.errors.log" \
        -timeout "${timeout_s}s" >"$1/uas.out" 2>&1 &
    uas_pid=$!
    wait_udp_port "$uas_port" 10 || { echo "run.sh: SIPp uas did not start" >&2; exit 1; }
}

stop_uas() {
    [[ -z "$uas_pid" ]] && return 0
    local i
    kill -USR1 "$uas_pid" 2>/dev/null || true # SIPp: finish the open calls (timewait), write the stats, exit
    for ((i = 0; i < 100; i++)); do
        kill -0 "$uas_pid" 2>/dev/null || break
        sleep 0.1
    done
    kill "$uas_pid" 2>/dev/null || true
    wait "$uas_pid" 2>/dev/null || true
    uas_pid=""
}

# A SIPp statistics file -> "successful failed elapsed_seconds retransmissions", from its last
# line, except the elapsed time: from the start to the first dump (every 100 ms) that counts the
# final number of successful calls, so that calls that fail by timeout (32 s) do not stretch it.
sipp_stats() {
    awk -F';' '
        NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
        {
            ok = $col["SuccessfulCall(C)"] + 0
            if (ok > best) { best = ok; split($col["CurrentTime"], c, "\t"); t = c[3] }
            last = $0
        }
        END {
            split(last, f, ";")
            split(f[col["StartTime"]], s, "\t")
            if (best == 0) { split(f[col["CurrentTime"]], c, "\t"); t = c[3] }
            printf "%d %d %.6f %d\n", f[col["SuccessfulCall(C)"]], f[col["FailedCall(C)"]], t - s[3], f[col["Retransmissions(C)"]]
        }' "$1"
}

# Datagrams the kernel dropped on the proxy's UDP socket (receive buffer full): /proc/net/udp.
udp_drops() { # port
    awk -v p="$(printf ':%04X' "$1")" '$2 ~ p"$" { d += $NF } END { print d + 0 }' /proc/net/udp
}

results="$out/results.txt"
echo "# name round successful failed elapsed_s calls_per_s retrans uas_failed proxy_cpu_ms proxy_udp_drops" >"$results"

measure() { # name(proxy/kind) round
    local name="$1" round="$2" proxy kind scenario count dir extra=() before after ticks drops
    proxy="${name%%/*}"
    kind="${name#*/}"
    dir="$out/$proxy-$kind-r$round"
    mkdir -p "$dir"
    case "$kind" in
    calls) scenario=uac.xml; count=$calls ;;
    calls-auth) scenario=uac_auth.xml; count=$calls; extra=(-auth_uri "uas@$domain") ;;
    register) scenario=register_auth.xml; count=$regs; extra=(-auth_uri "$domain") ;;
    esac
    case "$proxy" in
    voxgate) start_voxgate "$([[ $kind == calls ]] && echo false || echo true)" "$dir" ;;
    kamailio) start_kamailio "$([[ $kind == calls ]] && echo 0 || echo 1)" "$dir" ;;
    direct) proxy_addr="127.0.0.1:$uas_port" ;;
    esac
    [[ "$kind" == register ]] || start_uas "$dir"
    before=0
    [[ -n "$proxy_pid" ]] && before=$(proxy_cpu_ticks "$proxy_pid")
    taskset -c "$sipp_cpu" sipp -sf "$fixtures/$scenario" -s uas -key domain "$domain" -inf "$users_csv" "${extra[@]}" \
        -i 127.0.0.1 -bind_local -p "$uac_port" -t u1 -m "$count" -r "$rate" -l "$limit" -d "$pause_ms" -buff_size "$buff" \
        -nostdin -trace_stat -stf "$dir/uac.csv" -fd 100ms -trace_err -error_file "$dir/uac.errors.log" \
        -trace_screen -screen_file "$dir/uac.screen.log" -timeout "${timeout_s}s" \
        "$proxy_addr" >"$dir/uac.out" 2>&1 || true
    after=0
    drops=0
    [[ -n "$proxy_pid" ]] && after=$(proxy_cpu_ticks "$proxy_pid") && drops=$(udp_drops "${proxy_addr##*:}")
    stop_uas
    stop_proxy
    local s f e r uas_failed=0 cps cpu_ms
    read -r s f e r < <(sipp_stats "$dir/uac.csv")
    [[ -f "$dir/uas.csv" ]] && uas_failed=$(sipp_stats "$dir/uas.csv" | awk '{ print $2 }')
    cps=$(awk -v s="$s" -v e="$e" 'BEGIN { printf "%.0f", (e > 0 ? s / e : 0) }')
    ticks=$((after - before))
    cpu_ms=$(awk -v t="$ticks" -v hz="$(getconf CLK_TCK)" -v s="$s" 'BEGIN { printf "%.1f", (s > 0 ? t * 1000 / hz / s * 1000 : 0) }')
    [[ "$proxy" == direct ]] && cpu_ms="-"
    echo "$name $round $s $f $e $cps $r $uas_failed $cpu_ms $drops" >>"$results"
    printf 'run.sh: round %s %-22s %6s calls/s, %s ok, %s failed, %s retrans, uas failed %s, proxy CPU %s ms/1000, UDP drops %s\n' \
        "$round" "$name" "$cps" "$s" "$f" "$r" "$uas_failed" "$cpu_ms" "$drops" >&2
}

# --- 4. the rounds (interleaved) -----------------------------------------------------------------
names=()
want voxgate && names+=(voxgate/calls)
want kamailio && names+=(kamailio/calls)
want voxgate && names+=(voxgate/calls-auth)
want kamailio && names+=(kamailio/calls-auth)
want voxgate && names+=(voxgate/register)
want kamailio && names+=(kamailio/register)
names+=(direct/calls)
for ((round = 1; round <= rounds; round++)); do
    for n in "${names[@]}"; do
        measure "$n" "$round"
    done
done

# --- 5. the table --------------------------------------------------------------------------------
# median calls/s, total failed %, median proxy CPU per 1000 calls for one name
summary() {
    awk -v n="$1" '
        $1 == n { r[++k] = $6; ok += $3; bad += $4; ubad += $8; c[k] = $9; drops += $10 }
        END {
            if (k == 0) { print "- - - - -"; exit }
            for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) {
                if (r[j] < r[i]) { t = r[i]; r[i] = r[j]; r[j] = t }
                if (c[j] + 0 < c[i] + 0) { t = c[i]; c[i] = c[j]; c[j] = t }
            }
            m = (k % 2) ? r[(k + 1) / 2] : (r[k / 2] + r[k / 2 + 1]) / 2
            cm = (k % 2) ? c[(k + 1) / 2] : (c[k / 2] + c[k / 2 + 1]) / 2
            printf "%.0f %.2f %s %d-%d %d\n", m, (ok + bad > 0 ? 100 * bad / (ok + bad) : 0), (c[1] == "-" ? "-" : sprintf("%.1f", cm)), r[1], r[k], drops
        }' "$results"
}

{
    echo
    echo "SIP proxy throughput, UDP on loopback, SIPp uac -> proxy -> SIPp uas; median of $rounds interleaved rounds,"
    echo "$calls calls ($regs REGISTERs over $users users) per measurement, offered at $rate/s with at most $limit open;"
    echo "proxy pinned to CPU $proxy_cpu, SIPp to CPU $sipp_cpu; Kamailio $(kamailio -v 2>/dev/null | awk 'NR == 1 { print $3 }') with $kam_children UDP workers."
    echo
    echo "| scenario | voxgate calls/s | failed | CPU ms/1000 | UDP drops | Kamailio calls/s | failed | CPU ms/1000 | UDP drops | voxgate/Kamailio |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for kind in calls calls-auth register; do
        case "$kind" in
        calls) label="INVITE-BYE call, no auth" ;;
        calls-auth) label="INVITE-BYE call, digest (407)" ;;
        register) label="REGISTER, digest (401)" ;;
        esac
        read -r vm vf vc vrange vd < <(summary "voxgate/$kind")
        read -r km kf kc krange kd < <(summary "kamailio/$kind")
        ratio=$(awk -v a="$vm" -v b="$km" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.2f", a / b }')
        fmt() { [[ "$1" == "-" ]] && echo "-" || echo "$1 ($2)"; }
        echo "| $label | $(fmt "$vm" "$vrange") | ${vf}% | $vc | $vd | $(fmt "$km" "$krange") | ${kf}% | $kc | $kd | $ratio |"
    done
    read -r dm df _ drange _ < <(summary "direct/calls")
    echo "| no proxy (SIPp uac -> uas) | $dm ($drange) | ${df}% | - | - | | | | | |"
    echo
    echo "calls/s: successful calls / time to the last successful one, median (min-max); failed: failed / attempted"
    echo "calls over all rounds; CPU: the proxy's user+system time per 1000 successful calls; UDP drops: datagrams the"
    echo "kernel dropped on the proxy's socket (receive buffer full), all rounds. Kamailio may grow its receive buffer"
    echo "to $buff bytes (-b); the OS default is $(cat /proc/sys/net/core/rmem_default 2>/dev/null || echo '?') bytes."
    echo "Raw outputs: $out (results.txt, per run: uac.csv, uas.csv, proxy.log)."
} | tee "$out/table.md"
