#!/usr/bin/env bash
# Media-relay benchmark: the SPG relay vs a bare C relay vs rtpengine, same calls and load, one run.
#
#   bench/relay/run.sh                                  # everything, default sweep
#   RELAY_BENCH_CALLS="500 1000 2000" RELAY_BENCH_SECONDS=3 bench/relay/run.sh
#   RELAY_BENCH_RELAYS="bare rtpengine" RELAY_BENCH_CARRIERS=rtp-extension bench/relay/run.sh
#
# A "call" here is ONE stream of 50 SRTP packets/s (RTP PT 0, 160-byte G.711 payload,
# AES_CM_128_HMAC_SHA1_80, 182 bytes of UDP payload; 198 with the RTP-extension carrier) through
# the relay, on loopback. relay-loadgen (crates/relay-bench) sends every stream from its own
# port (send_from), paced evenly (stream i of N starts i/N of a period after the first), and
# receives each on its own port (recv_on); it reports per step: offered and delivered packets/s,
# loss, streams that received nothing in the step's last second ("abandoned"), the worst
# stream's delivery ratio, and the added one-way delay (kernel receive timestamp minus send time)
# p50/p99/max. Each step: 1 s warm-up, RELAY_BENCH_SECONDS measured, 0.5 s drain (same load;
# a packet sent in the window that has not arrived by the end of the drain is lost).
#
# Relays under test, each pinned to CPU RELAY_BENCH_RELAY_CPU (0), the load generator to
# RELAY_BENCH_LOADGEN_CPU (1); each gets a fresh process per sweep:
#   direct       no relay: the load generator sends to its own receive sockets (its own ceiling
#                and baseline delay; read every relay's figures against it);
#   bare         bench/relay/bare_relay.c, one socket per call: port RELAY_BASE+i forwards to
#                RECV_BASE+i (epoll, recvmmsg/sendmmsg batches of up to 64);
#   bare-single  the same with one socket for all calls, destination by source port: the kernel
#                UDP path's ceiling;
#   rtpengine    rtpengine (Debian rtpengine-daemon) in userspace only (--table=-1), one worker
#                thread, one call per stream set up over its ng protocol (bench/relay/rtpengine_calls.py:
#                offer/answer, RTP/AVP on both sides, PT 0 only, ICE removed, no recording:
#                it relays the SRTP packets unchanged, which relay-loadgen checks);
#   voxgate      target/release/relay-bench-spg (the SPG relay with escrowed sessions, 4 relay
#                ports per call from RELAY_BASE; the gateways' sides on the shared port pair
#                unless "+dedicated"), for each I/O engine (uring: io_uring multishot receives and
#                sends; raw: epoll, sends batched on one raw socket; sockets: epoll, a send per
#                port) and each sampling mode (every, 1in16).
# Every relay is fed the same packets for a given carrier (RELAY_BENCH_CARRIERS: ipv4-option,
# i.e. the session_ID in IPv4 option 158, and/or rtp-extension, an RFC 8285 element): the
# bare relay and rtpengine ignore the session_ID but receive and forward the same datagrams.
# Rounds (RELAY_BENCH_ROUNDS) are interleaved: round 1 runs every relay and carrier, then round 2...;
# the tables give medians over rounds (bench/relay/summarize.py).
#
# Environment: CARGO_TARGET_DIR (default <repo>/target), RELAY_BENCH_CALLS (calls per step,
# "500 1000 1500 2000 2500 3000 3500 4000"), RELAY_BENCH_SECONDS (5), RELAY_BENCH_ROUNDS (3),
# RELAY_BENCH_CARRIERS ("ipv4-option rtp-extension"), RELAY_BENCH_RELAYS
# ("direct bare bare-single rtpengine voxgate"), RELAY_BENCH_VOXGATE_SAMPLING ("every 1in16"),
# RELAY_BENCH_VOXGATE_ENGINES ("uring raw uring+dedicated": the SPG relay's I/O engines, `[media] engine`;
# "+dedicated": a port pair per call side instead of the shared gateway port, `shared_port = false`),
# RELAY_BENCH_RELAY_CPU (0), RELAY_BENCH_LOADGEN_CPU (1), RELAY_BENCH_SEND_BASE (10000),
# RELAY_BENCH_RECV_BASE (16000), RELAY_BENCH_RELAY_BASE (22000), RELAY_BENCH_RTPE_PORTS
# ("28000 60999", rtpengine's media port range: 4 ports per call), RELAY_BENCH_NG_PORT (9223),
# RELAY_BENCH_SEED (1), RELAY_BENCH_QUIET_WAIT (120: before each sweep, wait up to this many
# seconds for both cores to be quiet, i.e. under RELAY_BENCH_QUIET_PCT (10) % of their time
# taken by other processes; the tables flag steps disturbed by other work all the same),
# RELAY_BENCH_SEND_MODE (auto: raw sendmmsg batches when root, else udp),
# RELAY_BENCH_CHRT (empty; e.g. "chrt -f 10" runs relay and load generator SCHED_FIFO, to
# shield them from other work on the machine), RELAY_BENCH_OUT (raw outputs; default a new
# /tmp/voxgate-relay-bench.XXXXXX).
# Needs: root (the IPv4 option 158 needs CAP_NET_RAW; raw sends), gcc, python3, util-linux
# (taskset), iproute2 (ss), rtpengine-daemon (for rtpengine), the Rust toolchain.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
mkdir -p "$target"
target="$(cd "$target" && pwd)"
export CARGO_TARGET_DIR="$target"

calls_list="${RELAY_BENCH_CALLS:-500 1000 1500 2000 2500 3000 3500 4000}"
calls_list="${calls_list//,/ }"
secs="${RELAY_BENCH_SECONDS:-5}"
rounds="${RELAY_BENCH_ROUNDS:-3}"
carriers="${RELAY_BENCH_CARRIERS:-ipv4-option rtp-extension}"
relays="${RELAY_BENCH_RELAYS:-direct bare bare-single rtpengine voxgate}"
vox_sampling="${RELAY_BENCH_VOXGATE_SAMPLING:-every 1in16}"
vox_engines="${RELAY_BENCH_VOXGATE_ENGINES:-uring raw uring+dedicated}"
relay_cpu="${RELAY_BENCH_RELAY_CPU:-0}"
loadgen_cpu="${RELAY_BENCH_LOADGEN_CPU:-1}"
send_base="${RELAY_BENCH_SEND_BASE:-10000}"
recv_base="${RELAY_BENCH_RECV_BASE:-16000}"
relay_base="${RELAY_BENCH_RELAY_BASE:-22000}"
read -r rtpe_min rtpe_max <<<"${RELAY_BENCH_RTPE_PORTS:-28000 60999}"
ng_port="${RELAY_BENCH_NG_PORT:-9223}"
seed="${RELAY_BENCH_SEED:-1}"
send_mode="${RELAY_BENCH_SEND_MODE:-auto}"
read -r -a chrt <<<"${RELAY_BENCH_CHRT:-}"
quiet_wait="${RELAY_BENCH_QUIET_WAIT:-120}"
quiet_pct="${RELAY_BENCH_QUIET_PCT:-10}"
export RELAY_BENCH_RELAY_CPU="$relay_cpu" RELAY_BENCH_LOADGEN_CPU="$loadgen_cpu" RELAY_BENCH_QUIET_PCT="$quiet_pct"
warmup=1
drain=0.5

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    sed -n '2,/^set -euo/p' "$0" | sed '$d'
    exit 0
fi

die() { echo "run.sh: $*" >&2; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || die "'$1' not found ($2)"; }
need taskset "apt-get install util-linux"
need gcc "apt-get install gcc"
need python3 "apt-get install python3"
need ss "apt-get install iproute2"
[[ $(id -u) -eq 0 ]] || echo "run.sh: warning: not root: the ipv4-option carrier and raw sends need CAP_NET_RAW" >&2
want_relay() { [[ " $relays " == *" $1 "* ]]; }
if want_relay rtpengine && ! command -v rtpengine >/dev/null 2>&1; then
    die "rtpengine not found (apt-get install rtpengine-daemon), or leave it out of RELAY_BENCH_RELAYS"
fi

max_calls=0
for n in $calls_list; do
    [[ "$n" =~ ^[0-9]+$ && "$n" -gt 0 ]] || die "bad call count '$n' in RELAY_BENCH_CALLS"
    ((n > max_calls)) && max_calls=$n
done
steps_csv="$(echo $calls_list | tr ' ' ',')"
for b in "$send_base" "$recv_base" "$relay_base"; do
    ((b + max_calls <= 65535)) || die "port base $b + $max_calls calls is beyond 65535"
done
if want_relay rtpengine && (((rtpe_max - rtpe_min + 1) < 4 * max_calls)); then
    die "rtpengine needs 4 ports per call: RELAY_BENCH_RTPE_PORTS $rtpe_min-$rtpe_max is too small for $max_calls calls"
fi

out="${RELAY_BENCH_OUT:-$(mktemp -d /tmp/voxgate-relay-bench.XXXXXX)}"
mkdir -p "$out"
results="$out/results.jsonl"
relay_stats="$out/relay-stats.jsonl"
: >"$results"
: >"$relay_stats"
echo "run.sh: raw outputs in $out" >&2

# Thousands of sockets per process.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# --- 1. build --------------------------------------------------------------------------------
(cd "$root" && cargo build --release -p relay-bench >&2)
loadgen="$target/release/relay-loadgen"
spg="$target/release/relay-bench-spg"
bare="$target/relay-bench/bare_relay"
mkdir -p "$target/relay-bench"
if [[ ! -x "$bare" || "$here/bare_relay.c" -nt "$bare" ]]; then
    gcc -O2 -Wall -Wextra -o "$bare" "$here/bare_relay.c"
fi

# --- 2. processes ------------------------------------------------------------------------------
relay_pid=""
rtpe_calls=0
cleanup() {
    if [[ -n "$relay_pid" ]]; then
        if ((rtpe_calls > 0)); then
            python3 "$here/rtpengine_calls.py" delete --ng "127.0.0.1:$ng_port" --count "$rtpe_calls" >/dev/null 2>&1 || true
        fi
        kill "$relay_pid" 2>/dev/null || true
        wait "$relay_pid" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ports_free() { # base count -> fails when one of the ports is bound
    ! ss -Hlun 2>/dev/null | awk -v lo="$1" -v hi="$(($1 + $2 - 1))" '
        { n = split($4, a, ":"); p = a[n] + 0; if (p >= lo && p <= hi) { found = 1; exit } }
        END { exit !found }'
}

stop_relay() { # stats-label
    [[ -z "$relay_pid" ]] && return 0
    kill -TERM "$relay_pid" 2>/dev/null || true
    wait "$relay_pid" 2>/dev/null || true
    relay_pid=""
}

wait_ready() { # file pid what
    local i
    for ((i = 0; i < 600; i++)); do
        grep -qx ready "$1" 2>/dev/null && return 0
        kill -0 "$2" 2>/dev/null || { echo "run.sh: $3 exited before it was ready" >&2; return 1; }
        sleep 0.1
    done
    echo "run.sh: $3 not ready after 60 s" >&2
    return 1
}

# Waits (up to quiet_wait seconds) until, over 2 s, no core spent quiet_pct % or more of its
# time on tasks (user + system): other work on the machine (builds...) skews every figure.
wait_quiet() {
    local start=$SECONDS line
    while :; do
        line=$(
            { grep '^cpu[0-9]' /proc/stat; sleep 2; grep '^cpu[0-9]' /proc/stat; } | awk -v lim="$quiet_pct" '
                { t = 0; for (i = 2; i <= 9; i++) t += $i; k = $2 + $3 + $4
                  if ($1 in T) { dt = t - T[$1]; p = dt > 0 ? 100 * (k - K[$1]) / dt : 0
                                 s = s sprintf(" %s %.0f%%", $1, p); if (p >= lim) busy = 1 }
                  T[$1] = t; K[$1] = k }
                END { print (busy ? "busy" : "quiet") s }'
        )
        [[ "$line" == quiet* ]] && return 0
        if ((SECONDS - start >= quiet_wait)); then
            echo "run.sh: machine still busy (${line#busy}), going on; the tables flag disturbed steps" >&2
            return 0
        fi
        ((SECONDS - start < 3)) && echo "run.sh: waiting for other work to finish (${line#busy})" >&2
    done
}

# The load generator over the current relay: label relay carrier round scenario [--direct]
run_loadgen() {
    local label="$1 $2 $3" scenario="$4" dir="$5"
    shift 5
    local pidarg=()
    [[ -n "$relay_pid" ]] && pidarg=(--relay-pid "$relay_pid")
    wait_quiet
    "${chrt[@]}" taskset -c "$loadgen_cpu" "$loadgen" --scenario "$scenario" --calls "$steps_csv" \
        --seconds "$secs" --warmup "$warmup" --drain "$drain" --send-mode "$send_mode" \
        --label "$label" "${pidarg[@]}" "$@" >"$dir/loadgen.jsonl" 2>"$dir/loadgen.log" || {
        echo "run.sh: relay-loadgen failed for $label:" >&2
        tail -n 5 "$dir/loadgen.log" >&2
        return 1
    }
    cat "$dir/loadgen.jsonl" >>"$results"
    sed -n 's/^relay-loadgen: \([0-9]* streams:\)/    \1/p' "$dir/loadgen.log" >&2
}

make_scenario() { # carrier file [extra args]
    local carrier="$1" file="$2"
    shift 2
    "$loadgen" make-scenario --streams "$max_calls" --send-base "$send_base" --relay-base "$relay_base" \
        --recv-base "$recv_base" --carrier "$carrier" --seed "$seed" --out "$file" "$@"
}

run_direct() { # carrier round
    local dir="$out/direct-$1-r$2"
    mkdir -p "$dir"
    make_scenario "$1" "$dir/scenario.json"
    echo "run.sh: round $2, $1, direct (no relay)" >&2
    run_loadgen direct "$1" "$2" "$dir/scenario.json" "$dir" --direct
}

run_bare() { # carrier round single(0|1)
    local name=bare extra=() mode=()
    [[ "$3" == 1 ]] && name=bare-single && extra=(--single) && mode=(--single --send-base "$send_base")
    local dir="$out/$name-$1-r$2"
    mkdir -p "$dir"
    make_scenario "$1" "$dir/scenario.json" "${extra[@]}"
    ports_free "$relay_base" "$max_calls" || die "ports $relay_base.. are taken"
    "${chrt[@]}" taskset -c "$relay_cpu" "$bare" --listen-base "$relay_base" --count "$max_calls" \
        --dst-base "$recv_base" "${mode[@]}" >"$dir/relay.out" 2>"$dir/relay.err" &
    relay_pid=$!
    wait_ready "$dir/relay.out" "$relay_pid" bare_relay || { cat "$dir/relay.err" >&2; exit 1; }
    echo "run.sh: round $2, $1, $name (pid $relay_pid)" >&2
    run_loadgen "$name" "$1" "$2" "$dir/scenario.json" "$dir" || true
    stop_relay
    # The relay's own counters, as one JSON line with the run's label.
    grep '^{' "$dir/relay.err" | tail -n 1 | sed "s/^{/{\"label\":\"$name $1 $2\",/" >>"$relay_stats" || true
}

run_rtpengine() { # carrier round
    local dir="$out/rtpengine-$1-r$2"
    mkdir -p "$dir"
    make_scenario "$1" "$dir/scenario0.json"
    ports_free "$ng_port" 1 || die "UDP port $ng_port is taken (set RELAY_BENCH_NG_PORT)"
    # Userspace only (--table=-1), one worker thread, no config file (so no recording, no
    # Redis), media timeouts far beyond a run, calls removed at once when deleted.
    "${chrt[@]}" taskset -c "$relay_cpu" rtpengine --config-file=none --foreground --log-stderr --log-level=5 \
        --table=-1 --interface=127.0.0.1 --listen-ng="127.0.0.1:$ng_port" \
        --port-min="$rtpe_min" --port-max="$rtpe_max" --num-threads=1 --media-num-threads=1 \
        --timeout=86400 --silent-timeout=86400 --final-timeout=0 --offer-timeout=86400 --delete-delay=0 \
        >"$dir/relay.out" 2>"$dir/relay.err" &
    relay_pid=$!
    local i
    for ((i = 0; i < 100; i++)); do
        python3 "$here/rtpengine_calls.py" ping --ng "127.0.0.1:$ng_port" 2>/dev/null && break
        kill -0 "$relay_pid" 2>/dev/null || { tail -n 20 "$dir/relay.err" >&2; die "rtpengine exited"; }
        sleep 0.2
    done
    python3 "$here/rtpengine_calls.py" create --ng "127.0.0.1:$ng_port" --scenario "$dir/scenario0.json" \
        --count "$max_calls" --map-out "$dir/map.txt" || { tail -n 20 "$dir/relay.err" >&2; die "could not create the rtpengine calls"; }
    rtpe_calls=$max_calls
    make_scenario "$1" "$dir/scenario.json" --relay-map "$dir/map.txt"
    echo "run.sh: round $2, $1, rtpengine $(rtpengine --version 2>&1 | awk '{print $2}') (pid $relay_pid)" >&2
    run_loadgen rtpengine "$1" "$2" "$dir/scenario.json" "$dir" || true
    python3 "$here/rtpengine_calls.py" delete --ng "127.0.0.1:$ng_port" --count "$max_calls" 2>>"$dir/loadgen.log" || true
    rtpe_calls=0
    stop_relay
}

run_voxgate() { # carrier round sampling engine
    local name="voxgate-$4-$3" dir="$out/voxgate-$4-$3-$1-r$2"
    if [[ ! -x "$spg" ]]; then
        echo "run.sh: round $2, $1, $name: skipped ($spg not built yet: the SPG relay bench binary does not exist)" >&2
        return 0
    fi
    mkdir -p "$dir"
    ports_free "$relay_base" $((4 * max_calls)) || die "ports $relay_base.. are taken"
    local engine="${4%+dedicated}" ports=()
    [[ "$4" == *+dedicated ]] && ports=(--dedicated-ports)
    "${chrt[@]}" taskset -c "$relay_cpu" "$spg" --calls "$max_calls" --sampling "$3" --carrier "$1" --engine "$engine" "${ports[@]}" \
        --relay-base "$relay_base" --send-base "$send_base" --recv-base "$recv_base" \
        --scenario-out "$dir/scenario.json" >"$dir/relay.out" 2>"$dir/relay.err" &
    relay_pid=$!
    wait_ready "$dir/relay.out" "$relay_pid" relay-bench-spg || { tail -n 20 "$dir/relay.err" >&2; relay_pid=""; return 0; }
    echo "run.sh: round $2, $1, $name (pid $relay_pid)" >&2
    run_loadgen "$name" "$1" "$2" "$dir/scenario.json" "$dir" || true
    stop_relay
    grep '^{' "$dir/relay.out" | tail -n 1 | sed "s/^{/{\"label\":\"$name $1 $2\",/" >>"$relay_stats" || true
}

# --- 3. the rounds (interleaved) -----------------------------------------------------------------
{
    echo "# date: $(date -u '+%Y-%m-%d %H:%M:%S UTC'); kernel: $(uname -sr); cpus: $(nproc); load average: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "# cpu: $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)"
    echo "# voxgate commit: $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?'); rustc: $(rustc --version 2>/dev/null); gcc: $(gcc --version | head -n1)"
    echo "# rtpengine: $(rtpengine --version 2>&1 | head -n1 || echo none)"
    echo "# calls per step: $calls_list; $secs s measured per step (+$warmup s warm-up, +$drain s drain); rounds: $rounds"
    echo "# relay on CPU $relay_cpu, load generator on CPU $loadgen_cpu${chrt:+ under ${chrt[*]}}; send mode: $send_mode"
} | tee "$out/env.txt" >&2

for ((round = 1; round <= rounds; round++)); do
    for carrier in $carriers; do
        want_relay direct && run_direct "$carrier" "$round"
        want_relay bare && run_bare "$carrier" "$round" 0
        want_relay bare-single && run_bare "$carrier" "$round" 1
        want_relay rtpengine && run_rtpengine "$carrier" "$round"
        if want_relay voxgate; then
            for e in $vox_engines; do
                for s in $vox_sampling; do
                    run_voxgate "$carrier" "$round" "$s" "$e"
                done
            done
        fi
    done
done

# --- 4. the tables -------------------------------------------------------------------------------
{
    cat "$out/env.txt"
    echo
    python3 "$here/summarize.py" "$results" "$relay_stats"
    echo
    echo "Raw outputs: $out (results.jsonl: one JSON line per step; per run: scenario, loadgen.log, relay.err)."
} | tee "$out/table.md"
