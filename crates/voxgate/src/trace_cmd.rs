//! `voxgate trace`: the timing watermark (`voxgate_trace`) on live traffic and captures.
//!
//! - `embed`: a UDP relay that delays the packets the watermark selects (upstream direction:
//!   from anyone but `--to`, forwarded to `--to`; what `--to` answers goes back to the last
//!   sender untouched). Arrival times are taken when the datagram is read; each packet leaves
//!   at the embedder's release time, waited for by sleeping until 300 µs before it and then
//!   spinning, and the error (actual - intended) of every send is measured and reported.
//! - `detect`: every UDP flow of a pcap/pcapng capture (or the one named) through the detector
//!   of each mark id given; a verdict, the Hamming distance or score, and the false-positive
//!   probability per flow.
//! - `eval`: the seeded evaluation (`voxgate_trace::eval`), tables (CSV), plots (SVG) and the
//!   targets to DIR.
//! - `keygen`: a random key (64 hex digits).

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::json;
use voxgate_trace::eval::{self, EvalConfig, Experiment};
use voxgate_trace::{detect_any, Detector, Embedder, MarkId, SchemeParams, Verdict, WatermarkKey};

#[derive(Debug, clap::Subcommand)]
pub enum TraceCommand {
    /// A random watermark key (64 hex digits) on stdout.
    Keygen,
    /// A UDP relay that embeds the watermark in the flow it forwards to --to.
    Embed(EmbedArgs),
    /// Decodes the UDP flows of a capture and says which carry the watermark.
    Detect(DetectArgs),
    /// The seeded evaluation: TP/FP against delay, duration, adjustment, loss, ROC, visibility,
    /// the multi-flow attack; CSV tables, SVG plots, targets.
    Eval(EvalArgs),
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum SchemeArg {
    /// Wang, Chen, Jajodia (CCS 2005): l=24, r=25, a=3 ms, h=4.
    Ccs05,
    /// voxgate's interval-phase scheme (docs/watermark.md).
    Interval,
}

impl SchemeArg {
    fn params(self) -> SchemeParams {
        match self {
            SchemeArg::Ccs05 => SchemeParams::ccs05_paper(),
            SchemeArg::Interval => SchemeParams::interval_default(),
        }
    }
}

fn parse_key(s: &str) -> anyhow::Result<WatermarkKey> {
    let text = match s.strip_prefix('@') {
        Some(f) => std::fs::read_to_string(f).with_context(|| format!("reading {f}"))?,
        None => s.to_string(),
    };
    WatermarkKey::from_hex(text.trim()).context("--key: 64 hex digits (or @FILE)")
}

fn parse_mark(s: &str) -> anyhow::Result<MarkId> {
    let v = match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    }
    .with_context(|| format!("--mark {s:?}: a number (decimal or 0x hex)"))?;
    Ok(MarkId(v))
}

#[derive(Debug, clap::Args)]
pub struct EmbedArgs {
    /// Where the upstream flow arrives.
    #[arg(long)]
    pub listen: SocketAddr,
    /// Where it is forwarded.
    #[arg(long)]
    pub to: SocketAddr,
    /// The key (64 hex digits, or @FILE).
    #[arg(long)]
    pub key: String,
    /// The mark id of this flow (the detector must be given the same).
    #[arg(long)]
    pub mark: String,
    #[arg(long, value_enum, default_value_t = SchemeArg::Interval)]
    pub scheme: SchemeArg,
    /// Stop after this many seconds (default: at SIGTERM / Ctrl-C).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Write the delay-error statistics (JSON) here on exit.
    #[arg(long)]
    pub stats: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct DetectArgs {
    /// The capture (pcap or pcapng).
    #[arg(long)]
    pub pcap: PathBuf,
    /// The key (64 hex digits, or @FILE).
    #[arg(long)]
    pub key: String,
    /// Mark ids to test (each flow against all; the false-positive probability is corrected
    /// for the number tested).
    #[arg(long, required = true, num_args = 1..)]
    pub mark: Vec<String>,
    #[arg(long, value_enum, default_value_t = SchemeArg::Interval)]
    pub scheme: SchemeArg,
    /// Only this flow: `SRC-DST` (e.g. 10.0.0.1:4000-10.0.0.2:5000).
    #[arg(long)]
    pub flow: Option<String>,
    /// Flows with fewer packets are not listed.
    #[arg(long, default_value_t = 10)]
    pub min_packets: usize,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// Full trial counts (>= 100,000 negatives per false-positive estimate); default reduced.
    #[arg(long)]
    pub full: bool,
    #[arg(long, default_value_t = 2005)]
    pub seed: u64,
    #[arg(long, default_value = "trace-eval")]
    pub out: PathBuf,
    /// Comma-separated experiments (reproduction, delay, duration, adjustment, robustness,
    /// roc, visibility, multiflow); default all.
    #[arg(long)]
    pub experiments: Option<String>,
    #[arg(long)]
    pub positives: Option<u64>,
    #[arg(long)]
    pub negatives: Option<u64>,
    #[arg(long)]
    pub threads: Option<usize>,
    /// Exit with status 1 unless these targets (comma-separated names, or `all`) are met.
    #[arg(long)]
    pub require: Option<String>,
}

pub fn run(cmd: TraceCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TraceCommand::Keygen => {
            let k = WatermarkKey::generate().context("generating a key")?;
            println!("{}", k.to_hex());
            Ok(ExitCode::SUCCESS)
        }
        TraceCommand::Embed(a) => embed(a),
        TraceCommand::Detect(a) => detect(a),
        TraceCommand::Eval(a) => run_eval(a),
    }
}

// ---------------------------------------------------------------------------------------------
// embed

#[derive(Default)]
struct DelayStats {
    packets: u64,
    delayed: u64,
    /// Send error (actual - intended), µs, every packet.
    errors_us: Vec<u64>,
}

impl DelayStats {
    fn summary(&self) -> serde_json::Value {
        let mut e = self.errors_us.clone();
        e.sort_unstable();
        let q = |p: f64| -> u64 {
            if e.is_empty() {
                0
            } else {
                e[((e.len() - 1) as f64 * p).round() as usize]
            }
        };
        let mean = if e.is_empty() {
            0.0
        } else {
            e.iter().sum::<u64>() as f64 / e.len() as f64
        };
        json!({
            "packets": self.packets,
            "delayed": self.delayed,
            "send_error_us": {
                "mean": mean, "p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "max": q(1.0),
                "under_100us": e.iter().filter(|x| **x < 100).count() as f64 / e.len().max(1) as f64,
                "under_1ms": e.iter().filter(|x| **x < 1000).count() as f64 / e.len().max(1) as f64,
            }
        })
    }
}

fn embed(a: EmbedArgs) -> anyhow::Result<ExitCode> {
    let key = parse_key(&a.key)?;
    let mark = parse_mark(&a.mark)?;
    let params = a.scheme.params();
    let mut embedder = Embedder::new(&params, &key, mark).context("the embedder")?;
    let down = UdpSocket::bind(a.listen).with_context(|| format!("binding {}", a.listen))?;
    let up = UdpSocket::bind(SocketAddr::new(
        if a.to.is_ipv4() {
            std::net::Ipv4Addr::UNSPECIFIED.into()
        } else {
            std::net::Ipv6Addr::UNSPECIFIED.into()
        },
        0,
    ))?;
    up.connect(a.to).with_context(|| format!("--to {}", a.to))?;
    down.set_read_timeout(Some(Duration::from_millis(100)))?;
    up.set_read_timeout(Some(Duration::from_millis(100)))?;
    println!("listening udp {}", down.local_addr()?);
    println!("ready");
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let _ = signal_hook_flag(sig, stop.clone());
    }
    let start = Instant::now();
    let stats = Arc::new(Mutex::new(DelayStats::default()));
    let last_client: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
    // The way back: untouched.
    let back = {
        let (down, up, stop, last) = (
            down.try_clone()?,
            up.try_clone()?,
            stop.clone(),
            last_client.clone(),
        );
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65_536];
            while !stop.load(Ordering::Relaxed) {
                if let Ok(n) = up.recv(&mut buf) {
                    if let Some(c) = *last.lock().unwrap_or_else(|p| p.into_inner()) {
                        let _ = down.send_to(&buf[..n], c);
                    }
                }
            }
        })
    };
    // The sender: each packet at its release time, in order.
    let (tx, rx) = mpsc::channel::<(u64, Vec<u8>)>();
    let sender = {
        let (up, stats) = (up.try_clone()?, stats.clone());
        std::thread::spawn(move || {
            while let Ok((release_us, p)) = rx.recv() {
                let target = start + Duration::from_micros(release_us);
                let now = Instant::now();
                if target > now + Duration::from_micros(300) {
                    std::thread::sleep(target - now - Duration::from_micros(300));
                }
                while Instant::now() < target {
                    std::hint::spin_loop();
                }
                let _ = up.send(&p);
                let err = Instant::now().saturating_duration_since(target).as_micros() as u64;
                stats
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .errors_us
                    .push(err);
            }
        })
    };
    let mut buf = vec![0u8; 65_536];
    while !stop.load(Ordering::Relaxed) {
        if a.duration
            .is_some_and(|d| start.elapsed().as_secs_f64() >= d)
        {
            break;
        }
        let Ok((n, from)) = down.recv_from(&mut buf) else {
            continue;
        };
        let arrival = start.elapsed().as_micros() as u64;
        *last_client.lock().unwrap_or_else(|p| p.into_inner()) = Some(from);
        let release = embedder.on_packet(arrival);
        {
            let mut s = stats.lock().unwrap_or_else(|p| p.into_inner());
            s.packets += 1;
            if release > arrival {
                s.delayed += 1;
            }
        }
        if tx.send((release, buf[..n].to_vec())).is_err() {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    drop(tx);
    let _ = sender.join();
    let _ = back.join();
    let summary = stats.lock().unwrap_or_else(|p| p.into_inner()).summary();
    println!("{summary}");
    if let Some(p) = &a.stats {
        std::fs::write(p, serde_json::to_vec_pretty(&summary)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Sets `flag` when the signal arrives (a plain sigaction; the handler only stores).
fn signal_hook_flag(sig: libc::c_int, flag: Arc<AtomicBool>) -> std::io::Result<()> {
    static FLAG: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();
    let _ = FLAG.set(flag);
    extern "C" fn handler(_: libc::c_int) {
        if let Some(f) = FLAG.get() {
            f.store(true, Ordering::Relaxed);
        }
    }
    // SAFETY: installs an async-signal-safe handler (an atomic store).
    let r = unsafe { libc::signal(sig, handler as *const () as libc::sighandler_t) };
    if r == libc::SIG_ERR {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// detect

fn parse_flow(s: &str) -> anyhow::Result<(SocketAddr, SocketAddr)> {
    // SRC-DST; IPv6 addresses are in brackets, so the separator is the '-' after a port.
    let bad = || anyhow::anyhow!("--flow {s:?}: SRC-DST, e.g. 10.0.0.1:4000-10.0.0.2:5000");
    for (i, _) in s.match_indices('-') {
        if let (Ok(a), Ok(b)) = (s[..i].parse(), s[i + 1..].parse()) {
            return Ok((a, b));
        }
    }
    Err(bad())
}

fn detect(a: DetectArgs) -> anyhow::Result<ExitCode> {
    let key = parse_key(&a.key)?;
    let params = a.scheme.params();
    let marks: Vec<MarkId> = a
        .mark
        .iter()
        .map(|m| parse_mark(m))
        .collect::<Result<_, _>>()?;
    let detectors: Vec<Detector> = marks
        .iter()
        .map(|m| Detector::new(&params, &key, *m))
        .collect::<Result<_, _>>()
        .context("the detector")?;
    let only = a.flow.as_deref().map(parse_flow).transpose()?;
    let (flows, skipped, problem) = read_flows(&a.pcap)?;
    let mut rows = Vec::new();
    for ((src, dst), mut ts) in flows {
        if only.is_some_and(|f| f != (src, dst)) {
            continue;
        }
        if ts.len() < a.min_packets && only.is_none() {
            continue;
        }
        ts.sort_unstable();
        let d = detect_any(&detectors, &ts).context("detecting")?;
        rows.push((src, dst, d));
    }
    if a.json {
        let flows: Vec<_> = rows
            .iter()
            .map(
                |(s, d, det)| json!({"src": s.to_string(), "dst": d.to_string(), "detection": det}),
            )
            .collect();
        println!(
            "{}",
            json!({"capture": a.pcap.display().to_string(), "scheme": params.scheme().name(),
                   "flows": flows, "frames_skipped": skipped, "capture_problem": problem})
        );
    } else {
        if let Some(p) = &problem {
            eprintln!("warning: {p} (the frames before it are decoded)");
        }
        println!(
            "{:<47} {:>7}  {:<15} {:>10} {:>9}  {:>9}",
            "flow", "packets", "verdict", "statistic", "threshold", "P(false)"
        );
        for (s, d, det) in &rows {
            let stat = match (det.hamming, det.score) {
                (Some(h), _) => format!("H={h}"),
                (None, Some(z)) => format!("Z={z:.2}"),
                _ => "-".into(),
            };
            println!(
                "{:<47} {:>7}  {:<15} {:>10} {:>9.2}  {:>9.2e}{}",
                format!("{s} -> {d}"),
                det.packets,
                match det.verdict {
                    Verdict::Watermarked => "WATERMARKED",
                    Verdict::NotWatermarked => "not watermarked",
                    Verdict::Undecided => "undecided",
                },
                stat,
                det.threshold,
                det.false_positive_probability,
                det.reason
                    .as_deref()
                    .map(|r| format!("  ({r})"))
                    .unwrap_or_default()
            );
        }
        if rows.is_empty() {
            println!("no UDP flow with at least {} packets", a.min_packets);
        }
        if skipped > 0 {
            println!("{skipped} frame(s) not UDP (skipped)");
        }
    }
    if only.is_some() && rows.is_empty() {
        bail!(
            "the flow {} is not in the capture",
            a.flow.unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}

type Flows = BTreeMap<(SocketAddr, SocketAddr), Vec<u64>>;

/// The arrival times (µs) of every UDP flow; frames that are not UDP are counted; a damaged
/// capture ends the reading with a message, keeping what came before.
fn read_flows(p: &Path) -> anyhow::Result<(Flows, u64, Option<String>)> {
    let f = std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))?;
    let mut r = voxgate_capture::CaptureReader::new(std::io::BufReader::new(f))
        .with_context(|| format!("{}: not a pcap or pcapng capture", p.display()))?;
    let mut flows: Flows = BTreeMap::new();
    let mut skipped = 0u64;
    let mut problem = None;
    while let Some(item) = r.next_item() {
        let frame = match item {
            Ok(voxgate_capture::Item::Frame(f)) => f,
            Ok(_) => continue,
            Err(e) => {
                problem = Some(format!("{}: {e}", p.display()));
                break;
            }
        };
        match voxgate_capture::locate_udp(frame.link, &frame.data) {
            Ok(loc) => {
                let v = flows.entry((loc.src, loc.dst)).or_default();
                if v.len() < 10_000_000 {
                    v.push(frame.timestamp.as_micros() as u64);
                }
            }
            Err(_) => skipped += 1,
        }
    }
    Ok((flows, skipped, problem))
}

// ---------------------------------------------------------------------------------------------
// eval

fn run_eval(a: EvalArgs) -> anyhow::Result<ExitCode> {
    let mut config = if a.full {
        EvalConfig::full(a.seed)
    } else {
        EvalConfig::reduced(a.seed)
    };
    if let Some(list) = &a.experiments {
        config.experiments = list
            .split(',')
            .map(|s| s.trim().parse::<Experiment>())
            .collect::<Result<_, _>>()?;
    }
    config.positives = a.positives.or(config.positives);
    config.negatives = a.negatives.or(config.negatives);
    if let Some(t) = a.threads {
        config.threads = t;
    }
    let started = Instant::now();
    eprintln!(
        "evaluating ({} counts, seed {}, {} thread(s)): {}",
        if config.full { "full" } else { "reduced" },
        config.seed,
        config.threads,
        config
            .experiments
            .iter()
            .map(|e| e.name())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let report = eval::run(&config)?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    for t in &report.tables {
        std::fs::write(a.out.join(format!("{}.csv", t.name)), t.to_csv())?;
    }
    for p in &report.plots {
        std::fs::write(a.out.join(format!("{}.svg", p.name)), &p.svg)?;
    }
    let summary = report.summary_markdown();
    std::fs::write(a.out.join("summary.md"), &summary)?;
    std::fs::write(
        a.out.join("targets.json"),
        serde_json::to_vec_pretty(&report.targets)?,
    )?;
    println!("{summary}");
    eprintln!(
        "wrote {} tables and {} plots to {} in {:.1} s",
        report.tables.len(),
        report.plots.len(),
        a.out.display(),
        started.elapsed().as_secs_f64()
    );
    if let Some(req) = &a.require {
        let missed: Vec<&str> = report
            .targets
            .iter()
            .filter(|t| (req == "all" || req.split(',').any(|r| r.trim() == t.name)) && !t.met)
            .map(|t| t.name.as_str())
            .collect();
        let unknown: Vec<&str> = if req == "all" {
            Vec::new()
        } else {
            req.split(',')
                .map(str::trim)
                .filter(|r| !report.targets.iter().any(|t| t.name == *r))
                .collect()
        };
        if !unknown.is_empty() {
            bail!("--require: no target named {}", unknown.join(", "));
        }
        if !missed.is_empty() {
            eprintln!("targets missed: {}", missed.join(", "));
            return Ok(ExitCode::from(1));
        }
    }
    Ok(ExitCode::SUCCESS)
}
