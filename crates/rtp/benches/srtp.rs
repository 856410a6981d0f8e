//! SRTP throughput of voxgate's `SrtpSession`, side by side with libsrtp in the same run.
//!
//! `cargo bench -p voxgate-rtp --bench srtp [-- SUITE... protect|unprotect]` measures protect and unprotect
//! packets/s for a 172-byte RTP packet (12-byte header + 160-byte payload) per suite:
//!
//! - protect: the packet is copied into a work buffer, its sequence number (and timestamp) set to
//!   the next value (so the sender's index/reuse check runs), then `protect_rtp`.
//! - unprotect: `PRE_COUNT` packets (two ROC rollovers) are protected beforehand, outside the
//!   timed region; each timed pass copies them one by one into a work buffer and a fresh receiver
//!   session (created outside the timed region) runs `unprotect_rtp` on them in order.
//!
//! Every packet goes through header parsing, stream lookup, index estimation and the replay check.
//! A run lasts at least `VOXGATE_BENCH_SECS` (default 0.5 s); each figure is the median of
//! `VOXGATE_BENCH_RUNS` (default 7) runs after one warm-up run.
//!
//! libsrtp is measured by `bench/srtp/libsrtp_bench.c`, which does the same work and is driven
//! here over a pipe so that the runs interleave (voxgate, libsrtp+OpenSSL, libsrtp+NSS, voxgate,
//! ...) and share the machine's noise. The harness binaries are found through
//! `VOXGATE_LIBSRTP_BENCH=/path/a:/path/b`, or under `<target dir>/libsrtp-bench/bin/`, where
//! `bench/srtp/run.sh` builds them. That script also pins everything to one core.
//!
//! Under `cargo test --benches` (no `--bench` argument) it runs a quick smoke pass instead.

use std::hint::black_box;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

use voxgate_rtp::{MasterKey, SrtpPolicy, SrtpProfile, SrtpSession};

// Shared with bench/srtp/libsrtp_bench.c: keep both in step.
const HDR_LEN: usize = 12;
const PAYLOAD_LEN: usize = 160;
const PKT_LEN: usize = HDR_LEN + PAYLOAD_LEN;
const SSRC: u32 = 0xCAFE_BABE;
/// First sequence number of the protect benchmark.
const TX_SEQ0: u32 = 1;
/// First sequence number of the pre-protected sequence.
const PRE_SEQ0: u32 = 1000;
/// 2 * 65536: the receiver's ROC rolls over twice per pass.
const PRE_COUNT: usize = 131_072;
/// Bytes per pre-protected packet slot.
const STRIDE: usize = 256;
/// protect: packets between clock reads.
const CHUNK: u32 = 1024;
const REPLAY_WINDOW: usize = 128;

/// Targets from the issue: voxgate / libsrtp+OpenSSL, in both directions.
fn target_ratio(profile: SrtpProfile) -> Option<f64> {
    match profile {
        SrtpProfile::AesCm128HmacSha1_80 => Some(1.5),
        SrtpProfile::AeadAes128Gcm => Some(3.0),
        _ => None,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Dir {
    Protect,
    Unprotect,
}

impl Dir {
    fn name(self) -> &'static str {
        match self {
            Dir::Protect => "protect",
            Dir::Unprotect => "unprotect",
        }
    }
}

/// One timed run.
#[derive(Clone, Copy)]
struct Run {
    packets: u64,
    /// CPU time of the measuring thread.
    seconds: f64,
    /// Wall-clock time of the same run.
    wall: f64,
}

impl Run {
    fn pps(self) -> f64 {
        self.packets as f64 / self.seconds
    }
}

/// Runs are timed by the thread's CPU time, as in the C harness: the machine is shared, and a
/// wall clock would also count the time other processes hold the core. The wall-clock time is
/// reported beside it.
fn cpu_now() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

fn template() -> [u8; PKT_LEN] {
    let mut p = [0u8; PKT_LEN];
    p[0] = 0x80; // V=2
    p[1] = 0x00; // PT 0 (PCMU): 20 ms = 160 bytes
    p[8..12].copy_from_slice(&SSRC.to_be_bytes());
    for (i, b) in p[HDR_LEN..].iter_mut().enumerate() {
        *b = (i as u32 * 31 + 7) as u8;
    }
    p
}

/// Packet number n: sequence number seq0 + n (mod 2^16), timestamp 160 * n.
#[inline(always)]
fn set_seq_ts(pkt: &mut [u8], seq0: u32, n: u32) {
    pkt[2..4].copy_from_slice(&(seq0.wrapping_add(n) as u16).to_be_bytes());
    pkt[4..8].copy_from_slice(&n.wrapping_mul(160).to_be_bytes());
}

/// Master key k[i] = 0x10 + i, master salt s[i] = 0xA0 + i (as the C harness).
fn session(profile: SrtpProfile) -> SrtpSession {
    let key: Vec<u8> = (0..profile.key_len()).map(|i| 0x10 + i as u8).collect();
    let salt: Vec<u8> = (0..profile.salt_len()).map(|i| 0xA0 + i as u8).collect();
    let mk = MasterKey::new(profile, &key, &salt).expect("master key");
    SrtpSession::new(SrtpPolicy::new(mk).with_replay_window(REPLAY_WINDOW)).expect("session")
}

/// voxgate's side.
struct Ours {
    profile: SrtpProfile,
    tmpl: [u8; PKT_LEN],
    tx: SrtpSession,
    tx_next: u32,
    pre: Vec<u8>,
    pre_len: Vec<usize>,
}

impl Ours {
    fn new(profile: SrtpProfile) -> Self {
        let tmpl = template();
        let mut pre = vec![0u8; PRE_COUNT * STRIDE];
        let mut pre_len = Vec::with_capacity(PRE_COUNT);
        let mut pre_tx = session(profile);
        for (n, slot) in pre.chunks_exact_mut(STRIDE).enumerate() {
            slot[..PKT_LEN].copy_from_slice(&tmpl);
            set_seq_ts(slot, PRE_SEQ0, n as u32);
            let len = pre_tx.protect_rtp(slot, PKT_LEN).expect("pre-protect");
            pre_len.push(len);
        }
        Ours {
            profile,
            tmpl,
            tx: session(profile),
            tx_next: 0,
            pre,
            pre_len,
        }
    }

    /// The first packet a fresh sender protects, for the byte-for-byte cross-check.
    fn sample(&self) -> Vec<u8> {
        let mut tx = session(self.profile);
        let mut work = self.tmpl.to_vec();
        set_seq_ts(&mut work, TX_SEQ0, 0);
        tx.protect_rtp_vec(&mut work).expect("protect");
        work
    }

    fn run(&mut self, dir: Dir, secs: f64) -> Run {
        match dir {
            Dir::Protect => self.run_protect(secs),
            Dir::Unprotect => self.run_unprotect(secs),
        }
    }

    fn run_protect(&mut self, secs: f64) -> Run {
        let mut work = [0u8; PKT_LEN + 64];
        let mut sink = 0u8;
        let mut packets = 0u64;
        let mut n = self.tx_next;
        let w0 = Instant::now();
        let t0 = cpu_now();
        let mut elapsed;
        loop {
            for _ in 0..CHUNK {
                work[..PKT_LEN].copy_from_slice(&self.tmpl);
                set_seq_ts(&mut work, TX_SEQ0, n);
                let len = match self.tx.protect_rtp(&mut work, PKT_LEN) {
                    Ok(len) => len,
                    Err(e) => panic!("protect_rtp({}) failed: {e}", self.profile.name()),
                };
                sink ^= work[len - 1];
                n = n.wrapping_add(1);
            }
            packets += CHUNK as u64;
            elapsed = cpu_now() - t0;
            if elapsed >= secs {
                break;
            }
        }
        let wall = w0.elapsed().as_secs_f64();
        black_box(sink);
        self.tx_next = n;
        Run {
            packets,
            seconds: elapsed,
            wall,
        }
    }

    fn run_unprotect(&mut self, secs: f64) -> Run {
        let mut work = [0u8; STRIDE];
        let mut sink = 0u8;
        let mut packets = 0u64;
        let mut total = 0.0;
        let mut wall = 0.0;
        while total < secs {
            let mut rx = session(self.profile);
            let w0 = Instant::now();
            let t0 = cpu_now();
            for (slot, &len) in self.pre.chunks_exact(STRIDE).zip(&self.pre_len) {
                work[..len].copy_from_slice(&slot[..len]);
                match rx.unprotect_rtp(&mut work, len) {
                    Ok(PKT_LEN) => {}
                    other => panic!("unprotect_rtp({}) -> {other:?}", self.profile.name()),
                }
                sink ^= work[PKT_LEN - 1];
            }
            total += cpu_now() - t0;
            wall += w0.elapsed().as_secs_f64();
            packets += PRE_COUNT as u64;
            // The last packet must decrypt to the template's payload.
            assert_eq!(
                work[HDR_LEN..PKT_LEN],
                self.tmpl[HDR_LEN..],
                "unprotect produced a wrong payload"
            );
            drop(rx);
        }
        black_box(sink);
        Run {
            packets,
            seconds: total,
            wall,
        }
    }
}

/// A libsrtp harness process (bench/srtp/libsrtp_bench.c in --serve mode).
struct Peer {
    label: String,
    version: String,
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Peer {
    fn spawn(path: &Path) -> Result<Peer, String> {
        let mut child = Command::new(path)
            .arg("--serve")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        let mut peer = Peer {
            label: String::new(),
            version: String::new(),
            child,
            stdin,
            stdout,
        };
        let info = peer.request("info")?;
        peer.label = field(&info, "label").unwrap_or("?").to_string();
        peer.version = info
            .split_once("version=")
            .map_or("?", |(_, v)| v)
            .to_string();
        Ok(peer)
    }

    fn request(&mut self, line: &str) -> Result<String, String> {
        writeln!(self.stdin, "{line}").map_err(|e| format!("{}: {e}", self.label))?;
        self.stdin
            .flush()
            .map_err(|e| format!("{}: {e}", self.label))?;
        let mut reply = String::new();
        self.stdout
            .read_line(&mut reply)
            .map_err(|e| format!("{}: {e}", self.label))?;
        let reply = reply.trim_end().to_string();
        if reply.is_empty() || reply.starts_with("error") {
            return Err(format!(
                "libsrtp harness {}: {line:?} -> {reply:?}",
                self.label
            ));
        }
        Ok(reply)
    }

    fn sample(&mut self, suite: &str) -> Result<Vec<u8>, String> {
        let reply = self.request(&format!("sample {suite}"))?;
        let hex = reply.rsplit(' ').next().unwrap_or("");
        (0..hex.len() / 2)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|e| e.to_string()))
            .collect()
    }

    fn run(&mut self, suite: &str, dir: Dir, secs: f64) -> Result<Run, String> {
        let reply = self.request(&format!("run {suite} {} {secs}", dir.name()))?;
        let packets = field(&reply, "packets").and_then(|v| v.parse().ok());
        let seconds = field(&reply, "seconds").and_then(|v| v.parse().ok());
        let wall = field(&reply, "wall").and_then(|v| v.parse().ok());
        match (packets, seconds, wall) {
            (Some(packets), Some(seconds), Some(wall)) => Ok(Run {
                packets,
                seconds,
                wall,
            }),
            _ => Err(format!("bad reply from {}: {reply}", self.label)),
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.stdin.flush();
        let _ = self.child.wait();
    }
}

fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split(' ')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

/// Where the harness binaries are: `VOXGATE_LIBSRTP_BENCH`, else what run.sh builds.
fn peer_paths() -> Vec<PathBuf> {
    if let Some(v) = std::env::var_os("VOXGATE_LIBSRTP_BENCH") {
        return std::env::split_paths(&v)
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
    }
    let mut targets: Vec<PathBuf> = Vec::new();
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        targets.push(PathBuf::from(t));
    }
    // <target>/release/deps/srtp-<hash>
    if let Some(t) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().nth(3).map(Path::to_path_buf))
    {
        targets.push(t);
    }
    for t in targets {
        let bin = t.join("libsrtp-bench").join("bin");
        let found: Vec<PathBuf> = ["libsrtp_bench_openssl", "libsrtp_bench_nss"]
            .iter()
            .map(|n| bin.join(n))
            .filter(|p| p.is_file())
            .collect();
        if !found.is_empty() {
            return found;
        }
    }
    Vec::new()
}

/// Median, min, max packets/s (CPU time), median packets/s by the wall clock, and the share of
/// the wall-clock time the measuring thread was on the CPU.
struct Summary {
    median: f64,
    min: f64,
    max: f64,
    wall_median: f64,
    cpu_share: f64,
}

impl Summary {
    fn of(runs: &[Run]) -> Summary {
        let mut v: Vec<f64> = runs.iter().map(|r| r.pps()).collect();
        v.sort_by(f64::total_cmp);
        let mut w: Vec<f64> = runs.iter().map(|r| r.packets as f64 / r.wall).collect();
        w.sort_by(f64::total_cmp);
        let cpu: f64 = runs.iter().map(|r| r.seconds).sum();
        let wall: f64 = runs.iter().map(|r| r.wall).sum();
        Summary {
            median: v[v.len() / 2],
            min: v[0],
            max: v[v.len() - 1],
            wall_median: w[w.len() / 2],
            cpu_share: cpu / wall,
        }
    }

    fn line(&self, imp: &str, suite: &str, dir: Dir, runs: usize) -> String {
        format!(
            "srtp_bench impl={imp} suite={suite} dir={} pps={:.0} min={:.0} max={:.0} wall_pps={:.0} cpu_share={:.2} runs={runs}",
            dir.name(),
            self.median,
            self.min,
            self.max,
            self.wall_median,
            self.cpu_share
        )
    }
}

fn env_num<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn proc_field(file: &str, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
}

struct Row {
    suite: &'static str,
    target: Option<f64>,
    dir: Dir,
    ours: f64,
    peers: Vec<Option<f64>>,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let bench_mode = args.iter().any(|a| a == "--bench");
    // Filters: suite names (or parts of them) and/or a direction ("protect", "unprotect").
    let dirs: Vec<Dir> = [Dir::Protect, Dir::Unprotect]
        .into_iter()
        .filter(|d| {
            !args.iter().any(|a| a == "protect" || a == "unprotect")
                || args.contains(&d.name().to_string())
        })
        .collect();
    let filters: Vec<&String> = args
        .iter()
        .filter(|a| !a.starts_with('-') && *a != "protect" && *a != "unprotect")
        .collect();
    let profiles: Vec<SrtpProfile> = SrtpProfile::ALL
        .into_iter()
        .filter(|p| filters.is_empty() || filters.iter().any(|f| p.name().contains(f.as_str())))
        .collect();

    if !bench_mode {
        // `cargo test --benches`: a quick smoke pass of our side only.
        for p in profiles {
            let mut ours = Ours::new(p);
            let a = ours.run(Dir::Protect, 0.001);
            let b = ours.run(Dir::Unprotect, 0.001);
            println!(
                "srtp bench smoke {}: protect {} packets, unprotect {} packets: ok",
                p.name(),
                a.packets,
                b.packets
            );
        }
        return;
    }

    let runs: usize = env_num("VOXGATE_BENCH_RUNS", 7).clamp(1, 64);
    let secs: f64 = env_num("VOXGATE_BENCH_SECS", 0.5_f64).clamp(0.01, 10.0);
    let cpu = proc_field("/proc/cpuinfo", "model name").unwrap_or_else(|| "?".into());
    let affinity = proc_field("/proc/self/status", "Cpus_allowed_list").unwrap_or_default();
    println!("# SRTP benchmark: {HDR_LEN}-byte header + {PAYLOAD_LEN}-byte payload, replay window {REPLAY_WINDOW}");
    println!(
        "# cpu: {cpu}; allowed cpus: {affinity}; runs: {runs} x >= {secs} s of thread CPU time (median), 1 warm-up"
    );
    if affinity.contains(',') || affinity.contains('-') {
        println!("# note: not pinned to one core; bench/srtp/run.sh runs this under taskset -c 1");
    }

    let mut peers: Vec<Peer> = Vec::new();
    for path in peer_paths() {
        match Peer::spawn(&path) {
            Ok(p) => {
                println!("# peer: {} = {} ({})", p.label, p.version, path.display());
                peers.push(p);
            }
            Err(e) => println!("# peer {} not usable: {e}", path.display()),
        }
    }
    // Column order: OpenSSL first, then NSS, then anything else.
    peers.sort_by_key(|p| match p.label.as_str() {
        "openssl" => 0,
        "nss" => 1,
        _ => 2,
    });
    if peers.is_empty() {
        println!("# no libsrtp harness found: only voxgate is measured. For the comparison run");
        println!("#   bench/srtp/run.sh");
        println!(
            "# (builds libsrtp 2.8.0 + OpenSSL and the C harness against it and against Debian's"
        );
        println!("# libsrtp2/NSS), or set VOXGATE_LIBSRTP_BENCH=/path/libsrtp_bench_openssl:/path/libsrtp_bench_nss");
    } else if !peers.iter().any(|p| p.label == "openssl") {
        println!("# warning: no libsrtp+OpenSSL harness: NSS figures alone are not the reference (about 4x slower)");
    }

    let mut rows: Vec<Row> = Vec::new();
    for profile in profiles {
        let suite = profile.name();
        let mut ours = Ours::new(profile);
        let sample = ours.sample();
        for peer in &mut peers {
            peer.request(&format!("setup {suite}"))
                .unwrap_or_else(|e| panic!("{e}"));
            let theirs = peer.sample(suite).unwrap_or_else(|e| panic!("{e}"));
            assert!(
                theirs == sample,
                "{suite}: libsrtp+{} protects the first packet differently: not the same work",
                peer.label
            );
        }
        for &dir in &dirs {
            // Warm-up, then interleaved timed runs.
            ours.run(dir, secs);
            for peer in &mut peers {
                peer.run(suite, dir, secs).unwrap_or_else(|e| panic!("{e}"));
            }
            let mut our_runs = Vec::with_capacity(runs);
            let mut peer_runs: Vec<Vec<Run>> = vec![Vec::with_capacity(runs); peers.len()];
            for _ in 0..runs {
                our_runs.push(ours.run(dir, secs));
                for (peer, acc) in peers.iter_mut().zip(&mut peer_runs) {
                    acc.push(peer.run(suite, dir, secs).unwrap_or_else(|e| panic!("{e}")));
                }
            }
            let med = Summary::of(&our_runs);
            println!("{}", med.line("voxgate", suite, dir, runs));
            let med = med.median;
            let mut row = Row {
                suite,
                target: target_ratio(profile),
                dir,
                ours: med,
                peers: Vec::new(),
            };
            for (peer, acc) in peers.iter().zip(&peer_runs) {
                let sum = Summary::of(acc);
                println!(
                    "{}",
                    sum.line(&format!("libsrtp+{}", peer.label), suite, dir, runs)
                );
                let pm = sum.median;
                println!(
                    "srtp_bench_ratio suite={suite} dir={} vs=libsrtp+{} ratio={:.2}",
                    dir.name(),
                    peer.label,
                    med / pm
                );
                row.peers.push(Some(pm));
            }
            rows.push(row);
        }
    }
    print_table(&rows, &peers);
}

fn print_table(rows: &[Row], peers: &[Peer]) {
    let ossl = peers.iter().position(|p| p.label == "openssl");
    let mut header = format!(
        "\n| {:<23} | {:<9} | {:>14} |",
        "suite", "direction", "voxgate pkt/s"
    );
    let mut rule = format!(
        "|{}|{}|{}:|",
        "-".repeat(25),
        "-".repeat(11),
        "-".repeat(15)
    );
    for p in peers {
        header += &format!(" {:>21} |", format!("libsrtp+{} pkt/s", p.label_name()));
        rule += &format!("{}:|", "-".repeat(22));
    }
    for p in peers {
        header += &format!(" {:>12} |", format!("vs {}", p.label_name()));
        rule += &format!("{}:|", "-".repeat(13));
    }
    header += " target (vs OpenSSL) |";
    rule += &format!("{}|", "-".repeat(21));
    println!("{header}\n{rule}");
    for r in rows {
        let mut line = format!(
            "| {:<23} | {:<9} | {:>14.0} |",
            r.suite,
            r.dir.name(),
            r.ours
        );
        for p in &r.peers {
            line += &match p {
                Some(v) => format!(" {v:>21.0} |"),
                None => format!(" {:>21} |", "n/a"),
            };
        }
        for p in &r.peers {
            line += &match p {
                Some(v) => format!(" {:>11.2}x |", r.ours / v),
                None => format!(" {:>12} |", "n/a"),
            };
        }
        let verdict = match (r.target, ossl.and_then(|i| r.peers[i])) {
            (None, _) => "-".to_string(),
            (Some(t), None) => format!(">= {t}x: n/a"),
            (Some(t), Some(v)) => {
                let met = r.ours / v >= t;
                format!(">= {t}x: {}", if met { "met" } else { "MISSED" })
            }
        };
        line += &format!(" {verdict:<19} |");
        println!("{line}");
    }
}

impl Peer {
    fn label_name(&self) -> &str {
        match self.label.as_str() {
            "openssl" => "OpenSSL",
            "nss" => "NSS",
            other => other,
        }
    }
}
