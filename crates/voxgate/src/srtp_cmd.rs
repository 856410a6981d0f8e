//! `voxgate srtp decrypt|encrypt`: SRTP for captures (Wireshark cannot decrypt SRTP).
//!
//! Every frame is copied to the output in order; the UDP payloads that are SRTP/SRTCP (decrypt)
//! or RTP/RTCP (encrypt) and that a key processes are replaced, with IP/UDP lengths and
//! checksums fixed. Each `--crypto` key serves the streams it authenticates (decrypt) or the
//! streams it is given in order of appearance (encrypt); `ssrc=N` before the suite pins a key to
//! one SSRC.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde::Serialize;
use voxgate_capture::{
    locate_udp, replace_udp_payload, CaptureReader, CaptureWriter, Item, NotUdp,
};
use voxgate_rtp::keyring::classify;
use voxgate_rtp::{CryptoAttribute, Error as SrtpError, KeyRing, PacketKind};

#[derive(Debug, Subcommand)]
pub enum SrtpCommand {
    /// Decrypt SRTP/SRTCP in a capture to plain RTP/RTCP.
    Decrypt(SrtpArgs),
    /// Encrypt RTP/RTCP in a capture to SRTP/SRTCP.
    Encrypt(SrtpArgs),
}

#[derive(Args)]
pub struct SrtpArgs {
    /// A key as in SDP: '<suite> inline:<base64 key||salt>[|lifetime][|MKI:len]' (an a=crypto
    /// line also works). Repeat for other streams. Prefix 'ssrc=0x1234abcd ' to pin it to one SSRC.
    #[arg(
        long = "crypto",
        value_name = "SPEC",
        required_unless_present = "crypto_file"
    )]
    crypto: Vec<String>,
    /// Read key specs from a file instead (one per line, same forms as --crypto, '#' starts a
    /// comment): keys on the command line are visible to other users in `ps`.
    #[arg(long = "crypto-file", value_name = "FILE")]
    crypto_file: Option<PathBuf>,
    /// Input capture (pcap or pcapng).
    #[arg(long = "in", value_name = "FILE")]
    input: PathBuf,
    /// Output capture (same format as the input).
    #[arg(long = "out", value_name = "FILE")]
    output: PathBuf,
    /// Print the per-stream report as JSON on stdout.
    #[arg(long)]
    json: bool,
}

impl std::fmt::Debug for SrtpArgs {
    // The keys are secrets: never print them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SrtpArgs")
            .field(
                "crypto",
                &format_args!("<{} keys redacted>", self.crypto.len()),
            )
            .field("input", &self.input)
            .field("output", &self.output)
            .field("json", &self.json)
            .finish()
    }
}

/// One key given on the command line, as shown in the report (never the key itself).
#[derive(Debug, Serialize)]
struct KeyInfo {
    position: usize,
    suite: &'static str,
    ssrc: Option<u32>,
}

#[derive(Debug, Default, Serialize)]
struct StreamStats {
    ssrc: u32,
    kind: &'static str,
    key: Option<usize>,
    processed: u64,
    auth_failures: u64,
    replays: u64,
    other_errors: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    first_error: Option<String>,
}

#[derive(Debug, Default, Serialize)]
struct Report {
    operation: &'static str,
    frames: u64,
    udp_datagrams: u64,
    not_rtp: u64,
    ip_fragments: u64,
    undecodable_frames: u64,
    keys: Vec<KeyInfo>,
    streams: Vec<StreamStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    capture_error: Option<String>,
}

fn parse_crypto(spec: &str) -> Result<(CryptoAttribute, Option<u32>)> {
    let spec = spec.trim();
    let (ssrc, rest) = match spec.strip_prefix("ssrc=") {
        Some(r) => {
            let (num, rest) = r.split_once(char::is_whitespace).unwrap_or((r, ""));
            let ssrc = match num.strip_prefix("0x").or_else(|| num.strip_prefix("0X")) {
                Some(hex) => u32::from_str_radix(hex, 16),
                None => num.parse(),
            }
            .with_context(|| format!("bad SSRC {num:?} in --crypto"))?;
            (Some(ssrc), rest)
        }
        None => (None, spec),
    };
    let attr = CryptoAttribute::parse(rest).context("bad --crypto")?;
    Ok((attr, ssrc))
}

pub fn run(cmd: SrtpCommand) -> Result<ExitCode> {
    let (args, decrypt) = match cmd {
        SrtpCommand::Decrypt(a) => (a, true),
        SrtpCommand::Encrypt(a) => (a, false),
    };
    let mut ring = KeyRing::new();
    let mut keys = Vec::new();
    let mut specs = args.crypto.clone();
    if let Some(f) = &args.crypto_file {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?;
        specs.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(String::from),
        );
    }
    if specs.is_empty() {
        bail!("no key given (--crypto or --crypto-file)");
    }
    for (i, spec) in specs.iter().enumerate() {
        let (attr, ssrc) = parse_crypto(spec).with_context(|| format!("key #{}", i + 1))?;
        let policy = attr
            .to_policy()
            .with_context(|| format!("key #{}", i + 1))?;
        ring.add(policy, ssrc)?;
        keys.push(KeyInfo {
            position: i + 1,
            suite: attr.suite.name(),
            ssrc,
        });
    }
    let input =
        File::open(&args.input).with_context(|| format!("cannot open {}", args.input.display()))?;
    let mut reader = CaptureReader::new(input)
        .with_context(|| format!("cannot read {}", args.input.display()))?;
    let out = File::create(&args.output)
        .with_context(|| format!("cannot create {}", args.output.display()))?;
    let mut writer = CaptureWriter::like(&reader, BufWriter::new(out))?;

    let mut report = Report {
        operation: if decrypt { "decrypt" } else { "encrypt" },
        keys,
        ..Report::default()
    };
    let mut streams: BTreeMap<(u32, &'static str), StreamStats> = BTreeMap::new();
    let overhead = ring.max_overhead();
    let mut work = Vec::with_capacity(2048);
    let mut frame_out = Vec::with_capacity(2048);

    while let Some(item) = reader.next_item() {
        let frame = match item {
            Ok(Item::Frame(f)) => f,
            Ok(Item::Other(block)) => {
                writer.write_other(&block)?;
                continue;
            }
            Err(e) => {
                tracing::warn!("capture stops early: {e}");
                report.capture_error = Some(e.to_string());
                break;
            }
        };
        report.frames += 1;
        let loc = match locate_udp(frame.link, &frame.data) {
            Ok(l) => l,
            Err(why) => {
                match why {
                    NotUdp::Fragment => report.ip_fragments += 1,
                    NotUdp::Malformed | NotUdp::UnsupportedLink => report.undecodable_frames += 1,
                    NotUdp::OtherProtocol => {}
                }
                writer.write_frame(&frame, &frame.data, frame.orig_len)?;
                continue;
            }
        };
        report.udp_datagrams += 1;
        let payload = &frame.data[loc.payload_offset..loc.payload_offset + loc.payload_len];
        let Ok((kind, ssrc)) = classify(payload) else {
            report.not_rtp += 1;
            writer.write_frame(&frame, &frame.data, frame.orig_len)?;
            continue;
        };
        work.clear();
        work.extend_from_slice(payload);
        work.resize(payload.len() + overhead, 0);
        let result = if decrypt {
            ring.unprotect(&mut work, payload.len())
        } else {
            ring.protect(&mut work, payload.len())
        };
        let kind_name = match kind {
            PacketKind::Srtp => "RTP",
            PacketKind::Srtcp => "RTCP",
        };
        let st = streams
            .entry((ssrc, kind_name))
            .or_insert_with(|| StreamStats {
                ssrc,
                kind: kind_name,
                ..StreamStats::default()
            });
        match result {
            Ok(p) => match replace_udp_payload(&frame.data, &loc, &work[..p.len], &mut frame_out) {
                Ok(delta) => {
                    st.processed += 1;
                    st.key = Some(p.key + 1);
                    let orig = (frame.orig_len as i64 + delta as i64).max(frame_out.len() as i64);
                    writer.write_frame(&frame, &frame_out, orig as u32)?;
                }
                Err(e) => {
                    // E.g. a datagram that no longer fits once the tag is added.
                    st.other_errors += 1;
                    st.first_error.get_or_insert_with(|| e.to_string());
                    writer.write_frame(&frame, &frame.data, frame.orig_len)?;
                }
            },
            Err(e) => {
                match e {
                    SrtpError::AuthTagMismatch => st.auth_failures += 1,
                    SrtpError::Replayed { .. } | SrtpError::ReplayTooOld { .. } => st.replays += 1,
                    _ => st.other_errors += 1,
                }
                if st.first_error.is_none() {
                    st.first_error = Some(e.to_string());
                }
                st.key = st.key.or(ring.binding(ssrc).map(|k| k + 1));
                tracing::debug!(frame = frame.index, ssrc, "left unchanged: {e}");
                writer.write_frame(&frame, &frame.data, frame.orig_len)?;
            }
        }
    }
    writer
        .finish()
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    report.streams = streams.into_values().collect();

    let total: u64 = report.streams.iter().map(|s| s.processed).sum();
    if args.json {
        let mut stdout = std::io::stdout().lock();
        serde_json::to_writer_pretty(&mut stdout, &report)?;
        writeln!(stdout)?;
    } else {
        print_report(&report);
    }
    if let Some(e) = &report.capture_error {
        bail!(
            "{}: {e} (output holds the frames before it)",
            args.input.display()
        );
    }
    if total == 0 {
        eprintln!(
            "voxgate: no packet was {} with the given keys",
            if decrypt { "decrypted" } else { "encrypted" }
        );
        return Ok(ExitCode::from(2));
    }
    Ok(ExitCode::SUCCESS)
}

fn print_report(r: &Report) {
    println!(
        "{} frames, {} UDP datagrams ({} not RTP/RTCP), {} IP fragments skipped, {} undecodable frames",
        r.frames, r.udp_datagrams, r.not_rtp, r.ip_fragments, r.undecodable_frames
    );
    for k in &r.keys {
        match k.ssrc {
            Some(s) => println!(
                "key #{}: {} (pinned to SSRC {s:#010x})",
                k.position, k.suite
            ),
            None => println!("key #{}: {}", k.position, k.suite),
        }
    }
    let verb = if r.operation == "decrypt" {
        "decrypted"
    } else {
        "encrypted"
    };
    println!(
        "{:<12} {:<5} {:<4} {:>10} {:>10} {:>8} {:>8}",
        "SSRC", "kind", "key", verb, "auth-fail", "replays", "other"
    );
    for s in &r.streams {
        let key = s.key.map_or("-".to_string(), |k| format!("#{k}"));
        println!(
            "{:<12} {:<5} {:<4} {:>10} {:>10} {:>8} {:>8}",
            format!("{:#010x}", s.ssrc),
            s.kind,
            key,
            s.processed,
            s.auth_failures,
            s.replays,
            s.other_errors
        );
        if let Some(e) = &s.first_error {
            if s.processed == 0 {
                println!("{:<12} first error: {e}", "");
            }
        }
    }
}
