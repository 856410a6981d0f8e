#!/usr/bin/env bash
# Lawful-interception mediation benchmark (crates/li/benches/mediation.rs), pinned to one core.
#
#   bench/li/run.sh                          # 10,000 calls x 2 streams x 50 packets, both suites
#   bench/li/run.sh --calls 2000 --suite cm  # arguments go to the bench (--help lists them)
#   BENCH_CPU=0 bench/li/run.sh
#
# Builds the bench in release (cargo's bench profile), prints the machine, then runs it with
# `taskset -c $BENCH_CPU` (default 1): a table of the stages (unseal, attempt, key_update,
# mediation, srtp, srtp+g711) with medians of 5 runs timed by the thread's CPU time, the
# machine-readable `li_bench` lines, and the verdict against 500,000 packets/s.
#
# Environment: CARGO_TARGET_DIR (default <repo>/target), BENCH_CPU. Needs util-linux (taskset).
# Run it with nothing heavy on the machine (check `uptime`): the CPU-time clock hides time
# stolen by other processes, not the cache and memory bandwidth they share with this one.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cpu="${BENCH_CPU:-1}"

command -v taskset >/dev/null 2>&1 || { echo "run.sh: 'taskset' not found (apt-get install util-linux)" >&2; exit 1; }

cd "$root"
echo "==> building the bench (release)"
cargo bench -p voxgate-li --bench mediation --no-run
echo "==> running pinned to CPU $cpu"
model="$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
echo "# date: $(date -u '+%Y-%m-%d %H:%M:%S UTC'); kernel: $(uname -sr); cpus: $(nproc); cpu: $model;" \
    "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# rustc: $(rustc --version); commit: $(git rev-parse --short HEAD 2>/dev/null || echo '?')" \
    "$(git diff --quiet HEAD -- crates/li crates/rtp 2>/dev/null || echo '(crates/li or crates/rtp modified)')"
taskset -c "$cpu" cargo bench -p voxgate-li --bench mediation -- "$@"
