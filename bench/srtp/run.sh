#!/usr/bin/env bash
# SRTP benchmark: voxgate-rtp vs libsrtp 2.8.0 + OpenSSL vs Debian's libsrtp2 (NSS), in one run.
#
#   bench/srtp/run.sh            # build what is missing, then run the comparison pinned to one core
#   BENCH_CPU=0 bench/srtp/run.sh
#   bench/srtp/run.sh --build-only
#
# Environment: CARGO_TARGET_DIR (default <repo>/target), BENCH_CPU (core to pin to, default 1),
# VOXGATE_BENCH_RUNS (timed runs per measurement, default 7), VOXGATE_BENCH_SECS (seconds per
# timed run, default 0.5).
#
# No libsrtp source is kept in this repository. It comes from the crates.io package ezk-srtp
# 0.1.0 (which bundles libsrtp 2.8.0 under libsrtp/), fetched with cargo itself through a
# throwaway manifest under the target dir, and is built there with ./configure --enable-openssl
# (libsrtp's default optimised build, -O3). Needs: a C compiler, make, libssl-dev,
# libsrtp2-dev (Debian's 2.5.0, NSS backend), pkg-config, util-linux (taskset).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
mkdir -p "$target"
target="$(cd "$target" && pwd)"
export CARGO_TARGET_DIR="$target"
out="$target/libsrtp-bench"
cpu="${BENCH_CPU:-1}"
build_only=0
[[ "${1:-}" == "--build-only" ]] && build_only=1

need() { command -v "$1" >/dev/null 2>&1 || { echo "run.sh: '$1' not found ($2)" >&2; exit 1; }; }
need cc "apt-get install build-essential"
need make "apt-get install make"
need pkg-config "apt-get install pkg-config"
need taskset "apt-get install util-linux"
if [[ ! -f /usr/include/openssl/evp.h ]]; then
    echo "run.sh: OpenSSL headers missing (apt-get install libssl-dev)" >&2; exit 1
fi
if ! pkg-config --exists libsrtp2; then
    echo "run.sh: Debian's libsrtp2 missing (apt-get install libsrtp2-dev)" >&2; exit 1
fi

# --- 1. libsrtp 2.8.0 source, via cargo, from the ezk-srtp crate ----------------------------
ossl_prefix="$out/libsrtp-openssl"
if [[ ! -f "$ossl_prefix/lib/libsrtp2.a" ]]; then
    fetch="$out/fetch"
    mkdir -p "$fetch/src"
    cat >"$fetch/Cargo.toml" <<'TOML'
# Throwaway manifest written by bench/srtp/run.sh: only used to fetch libsrtp's source.
[package]
name = "libsrtp-source-fetch"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
ezk-srtp = "=0.1.0"

[workspace]
TOML
    : >"$fetch/src/lib.rs"
    echo "==> fetching ezk-srtp 0.1.0 (bundles libsrtp 2.8.0) with cargo"
    cargo fetch --manifest-path "$fetch/Cargo.toml"
    manifest="$(cargo metadata --manifest-path "$fetch/Cargo.toml" --format-version 1 \
        | grep -o '"manifest_path":"[^"]*/ezk-srtp-0\.1\.0/Cargo\.toml"' | head -n1 \
        | sed 's/^"manifest_path":"//; s/"$//')"
    if [[ -z "$manifest" ]]; then
        echo "run.sh: could not locate ezk-srtp 0.1.0 with cargo metadata" >&2; exit 1
    fi
    srcdir="$(dirname "$manifest")/libsrtp"
    grep -q 'VERSION 2.8.0' "$srcdir/CMakeLists.txt" || { echo "run.sh: $srcdir is not libsrtp 2.8.0" >&2; exit 1; }
    build="$out/libsrtp-2.8.0-build"
    rm -rf "$build"
    cp -R "$srcdir" "$build"
    echo "==> building libsrtp 2.8.0 with OpenSSL in $build"
    (
        cd "$build"
        # Default CFLAGS: configure picks its release flags (-O3 -fexpensive-optimizations -funroll-loops).
        ./configure --enable-openssl --prefix="$ossl_prefix" >configure.log 2>&1 \
            || { tail -n 30 configure.log; exit 1; }
        make -j"$(nproc)" libsrtp2.a >make.log 2>&1 || { tail -n 30 make.log; exit 1; }
        make install >>make.log 2>&1 || { tail -n 30 make.log; exit 1; }
    )
    grep -q '^#define OPENSSL 1' "$build/crypto/include/config.h" \
        || { echo "run.sh: libsrtp was not configured with OpenSSL" >&2; exit 1; }
fi

# --- 2. the C harness, twice -----------------------------------------------------------------
mkdir -p "$out/bin"
cflags=(-O2 -std=c11 -Wall -Wextra -D_GNU_SOURCE)
ossl_bin="$out/bin/libsrtp_bench_openssl"
nss_bin="$out/bin/libsrtp_bench_nss"
if [[ ! -x "$ossl_bin" || "$here/libsrtp_bench.c" -nt "$ossl_bin" ]]; then
    echo "==> compiling libsrtp_bench.c against libsrtp 2.8.0 + OpenSSL"
    cc "${cflags[@]}" -DBENCH_LABEL='"openssl"' -I"$ossl_prefix/include" \
        "$here/libsrtp_bench.c" -o "$ossl_bin" "$ossl_prefix/lib/libsrtp2.a" -lcrypto
fi
if [[ ! -x "$nss_bin" || "$here/libsrtp_bench.c" -nt "$nss_bin" ]]; then
    echo "==> compiling libsrtp_bench.c against Debian's libsrtp2 (NSS)"
    # shellcheck disable=SC2046
    cc "${cflags[@]}" -DBENCH_LABEL='"nss"' $(pkg-config --cflags libsrtp2) \
        "$here/libsrtp_bench.c" -o "$nss_bin" $(pkg-config --libs libsrtp2)
fi
if ! ldd "$nss_bin" | grep -q libnss3; then
    echo "run.sh: warning: $nss_bin does not load libnss3 (is Debian's libsrtp2 built on NSS?)" >&2
fi
if ldd "$ossl_bin" | grep -q libsrtp2; then
    echo "run.sh: $ossl_bin links a shared libsrtp2, expected the static OpenSSL build" >&2; exit 1
fi
[[ $build_only == 1 ]] && { echo "$ossl_bin:$nss_bin"; exit 0; }

# --- 3. the comparison, pinned to one core --------------------------------------------------
cd "$root"
echo "==> building the Rust bench"
cargo bench -p voxgate-rtp --bench srtp --no-run
echo "==> running pinned to CPU $cpu: ours, libsrtp+OpenSSL, libsrtp+NSS interleaved"
echo "# date: $(date -u '+%Y-%m-%d %H:%M:%S UTC'); kernel: $(uname -sr); cpus: $(nproc);" \
    "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# rustc: $(rustc --version); cc: $(cc --version | head -n1); $(openssl version 2>/dev/null || true)"
echo "# libsrtp+OpenSSL: $ossl_bin (static libsrtp2.a) -> $(ldd "$ossl_bin" | awk '/libcrypto/ {print $3}')"
echo "# libsrtp+NSS:     $nss_bin -> $(ldd "$nss_bin" | awk '/libsrtp2|libnss3/ {print $3}' | tr '\n' ' ')"
VOXGATE_LIBSRTP_BENCH="$ossl_bin:$nss_bin" \
    taskset -c "$cpu" cargo bench -p voxgate-rtp --bench srtp
