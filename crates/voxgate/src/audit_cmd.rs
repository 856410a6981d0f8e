//! `voxgate audit CAPTURE --out DIR`: what a capture exposes (plain RTP turned back into audio,
//! SDES keys in clear SIP and the SRTP they decrypt, weak SIP authentication, SIP without TLS,
//! NULL ciphers) and the quality of its calls, with Wireshark's figures.
//!
//! A thin driver over the sans-I/O `voxgate-audit` core: it streams the capture into the
//! [`Auditor`], writes the recovered audio to WAV files as it comes, and writes report.json
//! and report.html at the end.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use voxgate_audit::{html, Auditor, Config, Report};
use voxgate_capture::{CaptureReader, Item};

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// The capture to audit (pcap or pcapng).
    capture: PathBuf,
    /// Directory for report.json, report.html and the recovered audio (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Print report.json on stdout instead of the summary.
    #[arg(long)]
    json: bool,
    /// Show a progress bar on stderr even when it is not a terminal.
    #[arg(long)]
    progress: bool,
    /// Do not recover audio (statistics and findings only).
    #[arg(long)]
    no_audio: bool,
    /// Only analyse RTP that SIP/SDP announced (no heuristic stream detection).
    #[arg(long)]
    no_heuristic: bool,
    /// Most RTP streams tracked (bounds memory).
    #[arg(long, default_value_t = 4096)]
    max_streams: usize,
}

/// Counts the bytes read, for the progress bar.
struct Counting<R> {
    inner: R,
    read: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

struct Progress {
    total: u64,
    started: Instant,
    enabled: bool,
    shown: bool,
}

impl Progress {
    fn show(&mut self, done: u64, frames: u64) {
        if !self.enabled {
            return;
        }
        let frac = if self.total > 0 {
            (done as f64 / self.total as f64).min(1.0)
        } else {
            0.0
        };
        let width = 30;
        let filled = (frac * width as f64) as usize;
        let secs = self.started.elapsed().as_secs_f64().max(1e-6);
        eprint!(
            "\r[{}{}] {:5.1}% {:.0}/{:.0} MB {:.0} MB/s {} frames ",
            "#".repeat(filled),
            ".".repeat(width - filled),
            frac * 100.0,
            done as f64 / 1e6,
            self.total as f64 / 1e6,
            done as f64 / 1e6 / secs,
            frames
        );
        self.shown = true;
    }

    fn done(&mut self) {
        if self.shown {
            eprintln!();
        }
    }
}

/// A 16-bit mono 8 kHz WAV written as the audio comes; the RIFF and data sizes are patched
/// when it is finished.
struct Wav {
    out: BufWriter<File>,
    data_bytes: u64,
}

impl Wav {
    fn create(path: &Path) -> std::io::Result<Wav> {
        let mut out = BufWriter::with_capacity(1 << 16, File::create(path)?);
        let mut h = Vec::with_capacity(44);
        h.extend_from_slice(b"RIFF\0\0\0\0WAVEfmt ");
        h.extend_from_slice(&16u32.to_le_bytes());
        h.extend_from_slice(&1u16.to_le_bytes()); // PCM
        h.extend_from_slice(&1u16.to_le_bytes()); // mono
        h.extend_from_slice(&8000u32.to_le_bytes());
        h.extend_from_slice(&16000u32.to_le_bytes()); // bytes per second
        h.extend_from_slice(&2u16.to_le_bytes()); // block align
        h.extend_from_slice(&16u16.to_le_bytes()); // bits per sample
        h.extend_from_slice(b"data\0\0\0\0");
        out.write_all(&h)?;
        Ok(Wav { out, data_bytes: 0 })
    }

    fn write(&mut self, samples: &[i16], buf: &mut Vec<u8>) -> std::io::Result<()> {
        buf.clear();
        buf.resize(samples.len() * 2, 0);
        for (d, s) in buf.chunks_exact_mut(2).zip(samples) {
            d.copy_from_slice(&s.to_le_bytes());
        }
        self.out.write_all(buf)?;
        self.data_bytes += buf.len() as u64;
        Ok(())
    }

    fn finish(self) -> std::io::Result<()> {
        use std::io::{Seek, SeekFrom};
        let mut f = self.out.into_inner().map_err(|e| e.into_error())?;
        // A WAV cannot say more than 4 GiB: past that the sizes saturate (players read on).
        let data = u32::try_from(self.data_bytes).unwrap_or(u32::MAX - 36);
        f.seek(SeekFrom::Start(4))?;
        f.write_all(&(data + 36).to_le_bytes())?;
        f.seek(SeekFrom::Start(40))?;
        f.write_all(&data.to_le_bytes())?;
        Ok(())
    }
}

/// The WAV files being written, one per stream with recovered audio.
struct WavFiles {
    dir: PathBuf,
    /// By stream id.
    open: Vec<Option<Wav>>,
    failed: HashMap<usize, String>,
    buf: Vec<u8>,
}

impl WavFiles {
    fn write(&mut self, stream: usize, file: &str, samples: &[i16]) {
        if self.open.get(stream).is_some_and(Option::is_some) {
            // Fast path: the file is open.
        } else {
            if self.failed.contains_key(&stream) {
                return;
            }
            if self.open.len() <= stream {
                self.open.resize_with(stream + 1, || None);
            }
            match Wav::create(&self.dir.join(file)) {
                Ok(w) => {
                    self.open[stream] = Some(w);
                }
                Err(e) => {
                    tracing::warn!("cannot create {file}: {e}");
                    self.failed.insert(stream, e.to_string());
                    return;
                }
            }
        }
        let Some(Some(w)) = self.open.get_mut(stream) else {
            return;
        };
        if let Err(e) = w.write(samples, &mut self.buf) {
            tracing::warn!("writing {file}: {e}");
            self.open[stream] = None;
            self.failed.insert(stream, e.to_string());
        }
    }

    fn finish(self) -> Result<()> {
        for w in self.open.into_iter().flatten() {
            w.finish().context("finishing a WAV file")?;
        }
        Ok(())
    }
}

/// Samples of audio gathered before they are written (the core holds up to 1 Mi samples).
const AUDIO_BATCH: usize = 1 << 16;

pub fn run(args: AuditArgs) -> Result<ExitCode> {
    let file = File::open(&args.capture)
        .with_context(|| format!("cannot open {}", args.capture.display()))?;
    let total = file.metadata().map(|m| m.len()).unwrap_or(0);
    let read = Arc::new(AtomicU64::new(0));
    let mut reader = CaptureReader::new(Counting {
        inner: file,
        read: read.clone(),
    })
    .with_context(|| format!("cannot read {}", args.capture.display()))?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let cfg = Config {
        max_streams: args.max_streams,
        heuristic: !args.no_heuristic,
        audio: !args.no_audio,
        ..Config::default()
    };
    let mut auditor = Auditor::new(cfg);
    let mut wavs = WavFiles {
        dir: args.out.clone(),
        open: Vec::new(),
        failed: HashMap::new(),
        buf: Vec::with_capacity(4096),
    };
    let mut progress = Progress {
        total,
        started: Instant::now(),
        enabled: args.progress || std::io::stderr().is_terminal(),
        shown: false,
    };
    let mut next_progress = Instant::now();
    while let Some(item) = reader.next_item() {
        match item {
            Ok(Item::Frame(f)) => {
                auditor.handle_frame(u32::from(f.link), f.timestamp, &f.data, f.orig_len);
                // In batches: one write per stream and batch rather than one per packet.
                if auditor.pending_audio() >= AUDIO_BATCH {
                    auditor.drain_audio(|c| wavs.write(c.stream, c.file, c.samples));
                }
                if progress.enabled && auditor.frames().is_multiple_of(16384) {
                    let now = Instant::now();
                    if now >= next_progress {
                        progress.show(read.load(Ordering::Relaxed), auditor.frames());
                        next_progress = now + std::time::Duration::from_millis(200);
                    }
                }
            }
            Ok(Item::Other(_)) => {}
            Err(e) => {
                tracing::warn!("capture stops early: {e}");
                auditor.handle_capture_error(&e.to_string());
                break;
            }
        }
    }
    if progress.enabled {
        progress.show(read.load(Ordering::Relaxed), auditor.frames());
    }
    progress.done();
    auditor.drain_audio(|c| wavs.write(c.stream, c.file, c.samples));
    let report = auditor.finish();
    auditor.drain_audio(|c| wavs.write(c.stream, c.file, c.samples));
    wavs.finish()?;
    write_outputs(&args.out, &report)?;
    if args.json {
        let mut out = std::io::stdout().lock();
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        print_summary(&report, &args.out);
    }
    if let Some(e) = &report.capture_error {
        eprintln!(
            "voxgate: {}: {e} (the report covers the frames before it)",
            args.capture.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn write_outputs(dir: &Path, report: &Report) -> Result<()> {
    let p = dir.join("report.json");
    let mut w =
        BufWriter::new(File::create(&p).with_context(|| format!("cannot create {}", p.display()))?);
    serde_json::to_writer_pretty(&mut w, report)?;
    writeln!(w)?;
    w.flush()?;
    let p = dir.join("report.html");
    std::fs::write(&p, html::render(report))
        .with_context(|| format!("cannot write {}", p.display()))?;
    Ok(())
}

/// The terminal summary (a closed stdout, as with `| head`, is not an error).
fn print_summary(r: &Report, dir: &Path) {
    use std::fmt::Write as _;
    let mut o = String::new();
    let c = &r.capture;
    let _ = writeln!(
        o,
        "{} frames, {:.1} MB, {:.1} s: {} RTP packets in {} streams, {} SIP messages in clear ({} UDP, {} TCP), {} frames skipped",
        c.frames,
        c.bytes as f64 / 1e6,
        c.duration_s,
        c.rtp_packets,
        r.streams.len(),
        r.sip.messages_udp + r.sip.messages_tcp,
        r.sip.messages_udp,
        r.sip.messages_tcp,
        r.skipped.values().sum::<u64>()
    );
    if !r.streams.is_empty() {
        let _ = writeln!(
            o,
            "{:>3} {:>21} {:>21} {:>10} {:>7} {:>15} {:>7} {:>13} {:>9} {:>9} {:>9} {:>5}",
            "#",
            "source",
            "destination",
            "SSRC",
            "codec",
            "encryption",
            "pkts",
            "lost",
            "maxΔ ms",
            "maxJ ms",
            "meanJ ms",
            "MOS"
        );
        for s in &r.streams {
            let _ = writeln!(
        o,
                "{:>3} {:>21} {:>21} {:>10} {:>7} {:>15} {:>7} {:>13} {:>9.2} {:>9.2} {:>9.2} {:>5.2}",
                s.id,
                s.src,
                s.dst,
                s.ssrc,
                s.codec,
                s.encryption,
                s.packets,
                format!("{} ({:.1}%)", s.lost, s.lost_pct),
                s.max_delta_ms,
                s.max_jitter_ms,
                s.mean_jitter_ms,
                s.mos.mos
            );
        }
    }
    if r.findings.is_empty() {
        let _ = writeln!(o, "no findings");
    }
    for f in &r.findings {
        let _ = writeln!(o, "[{:>8}] {}", f.severity.as_str().to_uppercase(), f.title);
        for file in &f.files {
            let _ = writeln!(o, "           -> {}", dir.join(file).display());
        }
    }
    let _ = writeln!(
        o,
        "report: {} and {}",
        dir.join("report.json").display(),
        dir.join("report.html").display()
    );
    let _ = std::io::stdout().lock().write_all(o.as_bytes());
}
