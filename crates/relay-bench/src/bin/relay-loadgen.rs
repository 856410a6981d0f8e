//! relay-loadgen: sends SRTP streams through a media relay (or straight to itself) and reports
//! delivery, loss and one-way delay per step as JSON lines. See bench/relay/run.sh.

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use relay_bench::loadgen::{LoadGen, Options, SendMode};
use relay_bench::scenario::{self, CarrierKind, MakeScenario, Scenario};
use voxgate_rtp::SrtpProfile;

/// SRTP load generator and receiver for the media-relay benchmark.
///
/// In this benchmark a "call" is ONE stream of `pps` (default 50) SRTP packets/s through the
/// relay. Each step sends the first N streams of the scenario for --seconds (after --warmup,
/// not counted, and followed by --drain at the same load so late packets can still arrive) and
/// prints one JSON line.
#[derive(Parser, Debug)]
#[command(name = "relay-loadgen", args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the load (the default when no subcommand is given).
    Run(RunArgs),
    /// Write a scenario for a relay whose port relay-base+i forwards stream i to recv-base+i.
    MakeScenario(MakeArgs),
}

#[derive(Args, Debug)]
struct RunArgs {
    /// The scenario file (JSON).
    #[arg(long)]
    scenario: Option<PathBuf>,
    /// Streams per step, comma-separated (the first N of the scenario); default: all of them.
    #[arg(long, value_delimiter = ',')]
    calls: Vec<usize>,
    /// Measured seconds per step.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Seconds of load before each step's measurement (not counted).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Seconds of load after each step's measurement, for its last packets to arrive (not counted).
    #[arg(long, default_value_t = 0.5)]
    drain: f64,
    /// Send straight to the receive sockets, without a relay: the load generator's own ceiling.
    #[arg(long)]
    direct: bool,
    /// The relay's process id: its CPU time (all threads) is reported per step.
    #[arg(long)]
    relay_pid: Option<u32>,
    /// Check the SRTP tag of one received packet in N per stream (0: never).
    #[arg(long, default_value_t = 64)]
    verify_every: u32,
    /// A label copied into every JSON line.
    #[arg(long, default_value = "")]
    label: String,
    /// How to send: raw (whole IPv4 datagrams in sendmmsg batches on a raw socket; needs
    /// CAP_NET_RAW), udp (one send per packet on each stream's UDP socket), or auto (raw when
    /// allowed).
    #[arg(long, default_value = "auto", value_parser = ["auto", "udp", "raw"])]
    send_mode: String,
    /// Also append the JSON lines to this file.
    #[arg(long)]
    json_out: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct MakeArgs {
    /// Number of streams.
    #[arg(long)]
    streams: usize,
    /// Stream i sends from send-base+i.
    #[arg(long)]
    send_base: u16,
    /// Stream i sends to relay-base+i (or relay-base for all with --single).
    #[arg(long, default_value_t = 0)]
    relay_base: u16,
    /// Stream i is received on recv-base+i.
    #[arg(long)]
    recv_base: u16,
    /// none, ipv4-option or rtp-extension.
    #[arg(long, default_value = "none")]
    carrier: String,
    /// RFC 8285 element id for --carrier rtp-extension (1..=14).
    #[arg(long, default_value_t = 1)]
    ext_id: u8,
    #[arg(long, default_value = "AES_CM_128_HMAC_SHA1_80")]
    suite: String,
    /// Packets per second of every stream.
    #[arg(long, default_value_t = scenario::DEFAULT_PPS)]
    pps: u32,
    /// Seed of the keys, SSRCs and session_IDs.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// All streams send to relay-base (a relay with one socket that forwards by source port).
    #[arg(long)]
    single: bool,
    /// Take the relay address of each stream from this file (`<index> <ip:port>` per line).
    #[arg(long)]
    relay_map: Option<PathBuf>,
    /// Write here instead of stdout.
    #[arg(long)]
    out: Option<PathBuf>,
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("relay-loadgen: error: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::MakeScenario(m)) => make(m),
        Some(Command::Run(r)) => run(r),
        None => run(cli.run),
    }
}

fn make(m: MakeArgs) -> Result<()> {
    let carrier = CarrierKind::from_name(&m.carrier)?;
    let suite = SrtpProfile::from_name(&m.suite).with_context(|| format!("--suite {}", m.suite))?;
    let relay_map = match &m.relay_map {
        Some(p) => {
            let text = fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            Some(
                scenario::parse_relay_map(&text, m.host)
                    .with_context(|| p.display().to_string())?,
            )
        }
        None => {
            if m.relay_base == 0 {
                bail!("give --relay-base or --relay-map");
            }
            None
        }
    };
    let s = scenario::make_scenario(&MakeScenario {
        streams: m.streams,
        host: m.host,
        send_base: m.send_base,
        relay_base: m.relay_base,
        recv_base: m.recv_base,
        single: m.single,
        carrier,
        ext_id: m.ext_id,
        suite,
        pps: m.pps,
        seed: m.seed,
        relay_map,
    })?;
    let mut text = serde_json::to_string_pretty(&s)?;
    text.push('\n');
    match &m.out {
        Some(p) => fs::write(p, text).with_context(|| format!("writing {}", p.display()))?,
        None => std::io::stdout().write_all(text.as_bytes())?,
    }
    Ok(())
}

fn run(r: RunArgs) -> Result<()> {
    let Some(path) = &r.scenario else {
        bail!("--scenario FILE is needed (or a subcommand; see --help)");
    };
    for (name, v, min) in [
        ("--seconds", r.seconds, 0.1),
        ("--warmup", r.warmup, 0.0),
        ("--drain", r.drain, 0.0),
    ] {
        if !(v.is_finite() && (min..=86_400.0).contains(&v)) {
            bail!("{name} {v} is out of range ({min}..=86400)");
        }
    }
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let (_, streams): (Scenario, _) =
        Scenario::parse(&text).with_context(|| path.display().to_string())?;
    let steps = if r.calls.is_empty() {
        vec![streams.len()]
    } else {
        r.calls.clone()
    };
    if let Some(&bad) = steps.iter().find(|&&n| n == 0 || n > streams.len()) {
        bail!(
            "--calls {bad}: the scenario has {} streams (each step uses the first N, N >= 1)",
            streams.len()
        );
    }
    let mut out_file = match &r.json_out {
        Some(p) => Some(
            fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("opening {}", p.display()))?,
        ),
        None => None,
    };
    let opts = Options {
        steps: steps.clone(),
        seconds: r.seconds,
        warmup: r.warmup,
        drain: r.drain,
        direct: r.direct,
        relay_pid: r.relay_pid,
        verify_every: r.verify_every,
        label: r.label.clone(),
        send_mode: match r.send_mode.as_str() {
            "udp" => SendMode::Udp,
            "raw" => SendMode::Raw,
            _ => SendMode::Auto,
        },
    };
    let mut lg = LoadGen::new(&streams, opts)?;
    eprintln!(
        "relay-loadgen: {} streams ready ({}), steps {:?}, {} s each",
        steps.iter().max().copied().unwrap_or(0),
        if r.direct {
            "direct, no relay"
        } else {
            "through the relay"
        },
        steps,
        r.seconds
    );
    lg.run(|rep| {
        let line = serde_json::to_string(rep)?;
        let mut so = std::io::stdout().lock();
        writeln!(so, "{line}")?;
        so.flush()?;
        if let Some(f) = out_file.as_mut() {
            writeln!(f, "{line}").context("writing --json-out")?;
        }
        eprintln!(
            "relay-loadgen: {} streams: offered {} pps, delivered {} pps, loss {}%, abandoned {}, p99 {} us, loadgen CPU {}% (busy {}%){}",
            rep.streams,
            rep.offered_pps,
            rep.delivered_pps,
            rep.loss_pct,
            rep.abandoned,
            rep.latency_us.p99.map_or("-".to_string(), |v| v.to_string()),
            rep.loadgen_cpu_pct,
            rep.loadgen_busy_pct,
            if rep.loadgen_saturated { " (load generator saturated)" } else { "" }
        );
        Ok(())
    })
}
