#!/usr/bin/env bash
# Capture-audit benchmark: `voxgate audit` vs `tshark -q -z rtp,streams` on the same synthetic
# capture, in the same run.
#
#   bench/audit/run.sh                 # 1 GB capture
#   AUDIT_BENCH_GB=4 bench/audit/run.sh  # several GB (memory stays bounded: see max RSS)
#   AUDIT_BENCH_KEEP=1 bench/audit/run.sh  # keep the capture in $AUDIT_BENCH_DIR
#
# The capture (pcap, Ethernet/IPv4/UDP) holds AUDIT_BENCH_STREAMS (default 200) plain PCMU RTP
# streams of 50 packets/s (160-byte payload, 214-byte frames), 1% of packets dropped and up to
# 8 ms of arrival jitter on 1 packet in 10, interleaved as on a real link; it is written by the
# Python generator below (no SIP: both tools find the RTP by their heuristics, tshark with
# `--enable-heuristic rtp_udp`). Each tool reads it once to warm the page cache, then the timed
# run: wall time and max RSS by /usr/bin/time. voxgate runs twice: statistics and findings only
# (`--no-audio`, the work tshark does) and the default audit that also writes one WAV per
# stream. The last lines check that both tools agree on the packet and lost totals.
#
# Environment: AUDIT_BENCH_GB, AUDIT_BENCH_STREAMS, AUDIT_BENCH_DIR (default /tmp/voxgate-audit-bench),
# AUDIT_BENCH_KEEP. Needs tshark and python3. Run it with nothing heavy on the machine (`uptime`).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
gb="${AUDIT_BENCH_GB:-1}"
streams="${AUDIT_BENCH_STREAMS:-200}"
dir="${AUDIT_BENCH_DIR:-/tmp/voxgate-audit-bench}"
command -v tshark >/dev/null || { echo "run.sh: tshark not found (apt-get install tshark)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "run.sh: python3 not found" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "run.sh: /usr/bin/time not found (apt-get install time)" >&2; exit 1; }

cd "$root"
echo "==> building voxgate (release)"
cargo build --release -q -p voxgate
voxgate="${CARGO_TARGET_DIR:-$root/target}/release/voxgate"
mkdir -p "$dir"
cap="$dir/rtp-${gb}g.pcap"

if [ ! -s "$cap" ]; then
  echo "==> generating $cap ($gb GB, $streams streams)"
  python3 - "$cap" "$gb" "$streams" <<'PY'
import struct, sys, random
path, gb, nstreams = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
target = int(gb * 1e9)
rnd = random.Random(7)
# One G.711 mu-law "tone" payload per stream (plaintext audio, as a real call).
def payload(k):
    import math
    return bytes((0xff ^ (int(60 + 50 * math.sin((i + k) * 0.3)) & 0x7f)) for i in range(160))
frames = []
for s in range(nstreams):
    src = bytes([10, 1, s // 250, s % 250 + 1]); dst = bytes([10, 2, s // 250, s % 250 + 1])
    sport, dport = 20000 + 2 * s, 30000 + 2 * s
    rtp_hdr = bytearray(struct.pack('!BBHII', 0x80, 0, 0, 0, 0x1000 + s))
    udp = struct.pack('!HHHH', sport, dport, 8 + 12 + 160, 0)
    ip = bytearray(struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + 8 + 12 + 160, 0, 0, 64, 17, 0, src, dst))
    eth = b'\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00'
    frames.append([eth + bytes(ip) + udp, rtp_hdr, payload(s), rnd.randrange(65536), rnd.randrange(1 << 32)])
out = open(path, 'wb', buffering=1 << 22)
out.write(struct.pack('<IHHiIII', 0xa1b2c3d4, 2, 4, 0, 0, 65535, 1))
written, tick, t0 = 24, 0, 1_700_000_000.0
flen = 14 + 20 + 8 + 12 + 160
rec = struct.Struct('<IIII')
hdr = struct.Struct('!BBHII')
while written < target:
    base = t0 + tick * 0.020
    for s, f in enumerate(frames):
        seq = (f[3] + tick) & 0xffff
        ts = (f[4] + 160 * tick) & 0xffffffff
        if rnd.random() < 0.01:
            continue  # lost
        t = base + s * (0.020 / nstreams) + (rnd.random() * 0.008 if rnd.random() < 0.1 else 0.0)
        sec = int(t); usec = int((t - sec) * 1e6)
        out.write(rec.pack(sec, usec, flen, flen))
        out.write(f[0]); out.write(hdr.pack(0x80, 0, seq, ts, 0x1000 + s)); out.write(f[2])
        written += 16 + flen
    tick += 1
out.close()
print(f"{written / 1e9:.2f} GB, {tick} ticks of 20 ms ({tick * 0.02:.0f} s of {nstreams} calls)")
PY
fi
size=$(stat -c %s "$cap")
model="$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
echo "# date: $(date -u '+%Y-%m-%d %H:%M:%S UTC'); kernel: $(uname -sr); cpus: $(nproc); cpu: $model;" \
    "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# $(tshark --version 2>/dev/null | head -1); commit: $(git rev-parse --short HEAD 2>/dev/null || echo '?');" \
    "capture: $size bytes"
cat "$cap" > /dev/null  # page cache

timed() { # label, then the command; prints "label wall_seconds max_rss_kib cpu_seconds"
  local label="$1"; shift
  local tf; tf="$(mktemp)"
  /usr/bin/time -f '%e %M %U %S' -o "$tf" "$@" > "$dir/$label.out" 2> "$dir/$label.err" || { echo "$label failed:"; tail -5 "$dir/$label.err"; exit 1; }
  read -r secs rss user sys < "$tf"; rm -f "$tf"
  echo "$label $secs $rss $(awk -v u="$user" -v s="$sys" 'BEGIN { print u + s }')"
}

echo "==> timing"
r_stats=$(timed voxgate-no-audio "$voxgate" audit "$cap" --out "$dir/report-no-audio" --no-audio)
r_full=$(timed voxgate-audio "$voxgate" audit "$cap" --out "$dir/report-audio")
r_tshark=$(timed tshark tshark -q -z rtp,streams -r "$cap" --enable-heuristic rtp_udp)
# Wall time is what a user waits (it includes writing the WAVs to disk); CPU time (user + sys)
# is less disturbed by other load on the machine.
printf '%-18s %9s %10s %12s %9s %10s %12s\n' tool "wall s" "s per GB" "x tshark" "CPU s" "x tshark" "max RSS MiB"
ts=$(echo "$r_tshark" | cut -d' ' -f2)
tc=$(echo "$r_tshark" | cut -d' ' -f4)
for r in "$r_stats" "$r_full" "$r_tshark"; do
  read -r label secs rss cpu <<< "$r"
  awk -v l="$label" -v s="$secs" -v m="$rss" -v c="$cpu" -v b="$size" -v t="$ts" -v tc="$tc" \
    'BEGIN { printf "%-18s %9.2f %10.2f %12.1f %9.2f %10.1f %12.1f\n", l, s, s / (b / 1e9), t / s, c, tc / c, m / 1024 }'
done
# Agreement on totals (packets, lost) between tshark's table and report.json.
python3 - "$dir/tshark.out" "$dir/report-no-audio/report.json" <<'PY'
import json, sys
rows = [l.split() for l in open(sys.argv[1]) if ' 0x' in l]
tp = sum(int(r[8]) for r in rows); tl = sum(int(r[9]) for r in rows)
rep = json.load(open(sys.argv[2]))
vp = sum(s['packets'] for s in rep['streams']); vl = sum(s['lost'] for s in rep['streams'])
mj = max(abs(s['max_jitter_ms'] - float(r[16])) for s, r in zip(
    sorted(rep['streams'], key=lambda s: int(s['ssrc'], 16)), sorted(rows, key=lambda r: int(r[6], 16))))
print(f"streams: tshark {len(rows)}, voxgate {len(rep['streams'])}; packets: tshark {tp}, voxgate {vp}; "
      f"lost: tshark {tl}, voxgate {vl}; largest max-jitter difference {mj:.3f} ms")
PY
[ -n "${AUDIT_BENCH_KEEP:-}" ] || rm -rf "$dir/report-audio" "$dir/report-no-audio" "$cap"
