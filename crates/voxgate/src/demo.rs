//! `voxgate demo [--out DIR]`: the whole system on loopback, in one command.
//!
//! Starts (as child processes of this binary, on 127.0.60.x) two service-provider gateways
//! (spg-a for a.example, spg-b for b.example, peering with each other), a voice gateway behind
//! each (gw1.a.example, gw1.b.example), the lawful-interception mediation connected to spg-a
//! (the provider served with the warrant), and a receiving agency. Two officers approve a
//! warrant on alice that a third created (dual control). alice calls bob over TLS/SRTP playing
//! speech while carol calls dave (not a target); a rogue sender pushes unescrowed SRTP at
//! spg-a; a packet capture (root only) records the wire.
//!
//! DIR then holds: `intercepted/{from-target,to-target,mixed}.wav` (what the mediation
//! decrypted), `iri.json`, `audit.log` (+ `.head`, `audit.pub`), `spg-a-audit.log`,
//! `wire.pcap`, `summary.json`, `logs/` and `work/` (configurations, certificates, keys).
//! The summary says what each part proved, and the exit status is 0 only if every check held.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};

/// The speech the calls play (12.4 s, 8 kHz mono; tests/fixtures/audio/README.md).
const SPEECH: &[u8] = include_bytes!("../../../tests/fixtures/audio/speech-8k.wav");

const NET: [u8; 3] = [127, 0, 60];
const LIID: &str = "DEMO-ALICE-1";

fn ip(h: u8) -> Ipv4Addr {
    Ipv4Addr::new(NET[0], NET[1], NET[2], h)
}

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Where the results go (created; files of an earlier run are replaced).
    #[arg(long, default_value = "demo-out")]
    pub out: PathBuf,
    /// Length of the calls, seconds.
    #[arg(long, default_value_t = 8)]
    pub seconds: u32,
    /// Print the summary as JSON (one line) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// A child process of this binary whose stdout lines are read (up to `ready`).
struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
    lines: mpsc::Receiver<String>,
}

impl Proc {
    fn start(work: &Path, logs: &Path, name: &str, args: &[&str]) -> anyhow::Result<Proc> {
        let exe = std::env::current_exe().context("finding this program")?;
        let log = logs.join(format!("{name}.log"));
        let mut child = Command::new(exe)
            .args(args)
            .current_dir(work)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let out = child.stdout.take().context("child stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Ok(Proc {
            name: name.to_string(),
            child,
            log,
            lines,
        })
    }

    fn ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.lines.recv_timeout(Duration::from_millis(200)) {
                Ok(l) if l == "ready" => return Ok(()),
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Ok(Some(s)) = self.child.try_wait() {
                        bail!(
                            "{} exited ({s}) before it was ready; its log {}:\n{}",
                            self.name,
                            self.log.display(),
                            tail(&self.log)
                        );
                    }
                    if Instant::now() > deadline {
                        bail!(
                            "{} not ready after 30 s; log:\n{}",
                            self.name,
                            tail(&self.log)
                        );
                    }
                }
                Err(_) => bail!("{} closed its output; log:\n{}", self.name, tail(&self.log)),
            }
        }
    }

    /// Waits for the exit (at most `secs`) and returns the JSON line it printed, if any.
    fn finish(&mut self, secs: u64) -> anyhow::Result<(i32, Value)> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let code = loop {
            if let Some(s) = self.child.try_wait()? {
                break s.code().unwrap_or(-1);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                bail!("{} did not finish; log:\n{}", self.name, tail(&self.log));
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let mut v = Value::Null;
        while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(300)) {
            if l.starts_with('{') {
                v = serde_json::from_str(&l).unwrap_or(Value::Null);
            }
        }
        Ok((code, v))
    }

    /// SIGTERM, then SIGKILL after 5 s.
    fn stop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe {
                libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tail(p: &Path) -> String {
    let t = std::fs::read_to_string(p).unwrap_or_default();
    let lines: Vec<&str> = t.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Runs this binary to completion (cert, keygen).
fn run_tool(work: &Path, args: &[&str]) -> anyhow::Result<String> {
    let exe = std::env::current_exe()?;
    let out = Command::new(exe)
        .args(args)
        .current_dir(work)
        .output()
        .with_context(|| format!("running voxgate {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "voxgate {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

struct Progress {
    step: usize,
    total: usize,
    quiet: bool,
}

impl Progress {
    fn say(&mut self, what: &str) {
        self.step += 1;
        if !self.quiet {
            eprintln!("[{}/{}] {what}", self.step, self.total);
        }
    }
}

pub fn run(a: DemoArgs) -> anyhow::Result<ExitCode> {
    let out = a.out.clone();
    let work = out.join("work");
    let logs = out.join("logs");
    for d in [&work, &logs] {
        if d.exists() {
            std::fs::remove_dir_all(d).with_context(|| format!("clearing {}", d.display()))?;
        }
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let work = work.canonicalize()?;
    let logs = logs.canonicalize()?;
    let mut p = Progress {
        step: 0,
        total: 10,
        quiet: false,
    };
    let mut checks: Vec<(String, bool, String)> = Vec::new();

    p.say("certificates (a development CA) and keys (the authority's X25519, the audit keys)");
    prepare(&work)?;
    let secs = a.seconds.clamp(3, 60);
    write_configs(&work)?;
    let speech = read_wav_bytes(SPEECH)?;
    std::fs::write(work.join("speech.wav"), SPEECH)?;
    // bob answers with the speech reversed; carol and dave with tones.
    let bob_audio: Vec<i16> = speech.iter().rev().copied().collect();
    write_wav(&work.join("bob.wav"), &bob_audio)?;
    write_wav(&work.join("tone.wav"), &tone(8000 * 20, 350.0))?;

    p.say("starting the agency, the mediation, spg-a, spg-b, gw1.a.example, gw1.b.example");
    let mut agency = Proc::start(
        &work,
        &logs,
        "agency",
        &[
            "li",
            "agency",
            "--listen",
            &format!("{}:7700", ip(6)),
            "--cert",
            "certs/agency.example.pem",
            "--key",
            "certs/agency.example.key",
            "--client-ca",
            "certs/ca.pem",
            "--out",
            "agency-out",
        ],
    )?;
    agency.ready()?;
    let mut li = Proc::start(&work, &logs, "li", &["li", "serve", "--config", "li.toml"])?;
    li.ready()?;
    let mut nodes = Vec::new();
    for (name, cfg, kind) in [
        ("spg-a", "spg-a.toml", "spg"),
        ("spg-b", "spg-b.toml", "spg"),
        ("gw-a", "gw-a.toml", "gateway"),
        ("gw-b", "gw-b.toml", "gateway"),
    ] {
        let mut n = Proc::start(&work, &logs, name, &[kind, "--config", cfg])?;
        n.ready()?;
        nodes.push(n);
    }

    p.say(
        "warrant on sip:alice@a.example: created by officer-1, approved by officer-2 and officer-3",
    );
    let now = crate::spg::wall_ms();
    let req = json!({
        "liid": LIID,
        "targets": ["sip:alice@a.example"],
        "start_ms": now.saturating_sub(1000),
        "end_ms": now + 3_600_000,
        "delivery": "iri_and_content",
        "destination": "agency-1",
    });
    let (st, body) = api(&work, "officer-1", "POST", "/v1/warrants", Some(&req))?;
    if st != 201 {
        bail!("creating the warrant: {st} {body}");
    }
    let (st2, _) = api(
        &work,
        "officer-2",
        "POST",
        &format!("/v1/warrants/{LIID}/approve"),
        None,
    )?;
    // Dual control: the same officer cannot approve twice, the creator cannot approve.
    let (twice, twice_body) = api(
        &work,
        "officer-2",
        "POST",
        &format!("/v1/warrants/{LIID}/approve"),
        None,
    )?;
    let (own, _) = api(
        &work,
        "officer-1",
        "POST",
        &format!("/v1/warrants/{LIID}/approve"),
        None,
    )?;
    let (st3, w) = api(
        &work,
        "officer-3",
        "POST",
        &format!("/v1/warrants/{LIID}/approve"),
        None,
    )?;
    let active = w.get("status").and_then(Value::as_str) == Some("active");
    checks.push((
        "warrant active after two distinct approvals; second approval by the same officer and the creator's refused".into(),
        st2 == 200 && st3 == 200 && active && twice == 403 && own == 403,
        format!(
            "approvals: officer-2 {st2}, officer-2 again {twice} ({}), officer-1 (creator) {own}, officer-3 {st3}; status {}",
            twice_body["error"]["code"].as_str().unwrap_or("?"),
            w.get("status").and_then(Value::as_str).unwrap_or("?")
        ),
    ));
    // spg-a learns the target (it copies nothing else).
    wait_for(Duration::from_secs(10), || {
        metric(&format!("{}:9460", ip(1)), "voxgate_li_tasks").is_some_and(|n| n >= 1)
    });

    p.say("capturing the wire on the loopback interface (wire.pcap)");
    let capture = Capture::start(&out.join("wire.pcap"));
    if let Err(e) = &capture {
        eprintln!("      no capture: {e:#} (needs root)");
    }

    p.say(&format!(
        "calls: alice -> bob (speech, {secs} s) and, at the same time, carol -> dave (not a target)"
    ));
    let ua = |user: &str, host: u8, gw: u8, extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "ua",
            "--user",
            &format!("{user}@{}.example", if gw == 11 { "a" } else { "b" }),
            "--password-file",
            &format!("{user}.pw"),
            "--register",
            "--proxy",
            &format!("{}:5061", ip(gw)),
            "--ca",
            "certs/ca.pem",
            "--listen",
            &format!("{}:0", ip(host)),
            "--json",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let start = |name: &str, args: Vec<String>| -> anyhow::Result<Proc> {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        Proc::start(&work, &logs, name, &refs)
    };
    let mut bob = start(
        "bob",
        ua(
            "bob",
            51,
            12,
            &["--answer", "--play", "bob.wav", "--record", "bob-heard.wav"],
        ),
    )?;
    bob.ready()?;
    let mut dave = start(
        "dave",
        ua("dave", 53, 12, &["--answer", "--play", "tone.wav"]),
    )?;
    dave.ready()?;
    let dur = secs.to_string();
    let mut alice = start(
        "alice",
        ua(
            "alice",
            50,
            11,
            &[
                "--call",
                "sip:bob@b.example",
                "--play",
                "speech.wav",
                "--record",
                "alice-heard.wav",
                "--duration",
                &dur,
            ],
        ),
    )?;
    let mut carol = start(
        "carol",
        ua(
            "carol",
            52,
            11,
            &[
                "--call",
                "sip:dave@b.example",
                "--play",
                "tone.wav",
                "--duration",
                &dur,
            ],
        ),
    )?;

    p.say("a rogue sender pushes unescrowed SRTP from gw1.a.example's address at spg-a");
    std::thread::sleep(Duration::from_secs(2));
    let m_before = metrics_text(&format!("{}:9460", ip(1)));
    let rogue_sent = rogue(ip(11), SocketAddr::from((ip(1), 21_000)), 50)?;
    std::thread::sleep(Duration::from_millis(500));
    let m_after = metrics_text(&format!("{}:9460", ip(1)));
    let dropped = |reason: &str| {
        let name = format!("voxgate_relay_dropped_total{{reason=\"{reason}\"}}");
        metric_in(&m_after, &name).unwrap_or(0) - metric_in(&m_before, &name).unwrap_or(0)
    };
    let rogue_dropped = dropped("no_session_id");
    checks.push((
        "a rogue, unescrowed stream from a voice gateway's address was dropped by the SPG".into(),
        rogue_dropped >= rogue_sent,
        format!("{rogue_sent} sent, {rogue_dropped} dropped as no_session_id"),
    ));

    p.say("waiting for the calls to end");
    let (ac, aj) = alice.finish(u64::from(secs) + 30)?;
    let (cc, cj) = carol.finish(u64::from(secs) + 30)?;
    let (_, bj) = bob.finish(20)?;
    let _ = dave.finish(20);
    let encrypted = aj["encrypted"] == json!(true) && bj["encrypted"] == json!(true);
    checks.push((
        "call set up over TLS with SRTP end to end (alice -> gw-a -> spg-a -> spg-b -> gw-b -> bob)".into(),
        ac == 0 && cc == 0 && encrypted && aj["rtp_received"].as_u64().unwrap_or(0) > 0,
        format!(
            "alice: exit {ac}, suite {}, {} packets sent, {} received; carol: exit {cc}, {} sent",
            aj["suite"].as_str().unwrap_or("none"),
            aj["rtp_sent"],
            aj["rtp_received"],
            cj["rtp_sent"]
        ),
    ));

    p.say("collecting what the mediation intercepted");
    let li_dir = work.join("li-out").join(LIID);
    wait_for(Duration::from_secs(15), || {
        find_suffix(&li_dir, "-mixed.wav").is_some()
    });
    let capture_stats = match capture {
        Ok(c) => Some(c.stop()),
        Err(_) => None,
    };
    let inter = out.join("intercepted");
    std::fs::create_dir_all(&inter)?;
    let mut from_share = 0.0;
    let mut to_share = 0.0;
    let mut corr_ids = Vec::new();
    for entry in std::fs::read_dir(&li_dir).into_iter().flatten().flatten() {
        let n = entry.file_name().to_string_lossy().to_string();
        if let Some(c) = n.split('-').next() {
            if n.ends_with(".wav") && !corr_ids.contains(&c.to_string()) {
                corr_ids.push(c.to_string());
            }
        }
    }
    for (suffix, name) in [
        ("-from-target.wav", "from-target.wav"),
        ("-to-target.wav", "to-target.wav"),
        ("-mixed.wav", "mixed.wav"),
    ] {
        if let Some(f) = find_suffix(&li_dir, suffix) {
            std::fs::copy(&f, inter.join(name))?;
        }
    }
    let quant = |v: &[i16]| -> Vec<i16> {
        v.iter()
            .map(|x| voxgate_rtp::g711::Law::Mu.quantize(*x))
            .collect()
    };
    let (q_speech, q_bob) = (quant(&speech), quant(&bob_audio));
    let mut from_corr = 0.0;
    if let Ok(rec) = read_wav_file(&inter.join("from-target.wav")) {
        from_share = match_share(&rec, &q_speech);
        from_corr = aligned_correlation(&rec, &q_speech);
    }
    if let Ok(rec) = read_wav_file(&inter.join("to-target.wav")) {
        to_share = match_share(&rec, &q_bob);
    }
    checks.push((
        "the warrant-scoped interception recovered the speech (sample-exact after G.711)".into(),
        from_share > 0.95 && to_share > 0.95,
        format!(
            "from the target (alice): {:.1}% of samples equal the source, correlation {from_corr:.3}; to the target (bob): {:.1}%",
            from_share * 100.0,
            to_share * 100.0
        ),
    ));
    checks.push((
        "the non-target call (carol -> dave) was not intercepted".into(),
        corr_ids.len() == 1,
        format!("{} intercepted call(s) for {LIID}", corr_ids.len()),
    ));
    if let Some((pkts, corr)) = &capture_stats {
        checks.push((
            "media encrypted on the wire: a passive capture without keys yields noise".into(),
            *pkts > 0 && corr.abs() < 0.1,
            format!(
                "{pkts} RTP packets from gw1.a.example to spg-a captured; their payloads decoded as G.711 correlate {corr:.3} with the speech"
            ),
        ));
    }

    // IRI: what the mediation wrote, and what the agency received.
    let iri_text = std::fs::read_to_string(li_dir.join("iri.json")).unwrap_or_default();
    std::fs::write(out.join("iri.json"), &iri_text)?;
    let records: Vec<Value> = iri_text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect();
    let kind = |v: &Value| {
        format!(
            "{} {}",
            v["type"].as_str().unwrap_or("?"),
            v["event"].as_str().unwrap_or("?")
        )
    };
    let reports: Vec<String> = records
        .iter()
        .filter(|v| v["type"] == json!("REPORT"))
        .map(kind)
        .collect();
    let seq: Vec<String> = records
        .iter()
        .filter(|v| v["type"] != json!("REPORT"))
        .map(kind)
        .collect();
    let iri_ok = seq.first().map(String::as_str) == Some("BEGIN attempt")
        && seq.last().map(String::as_str) == Some("END release")
        && seq.iter().any(|s| s == "CONTINUE answer")
        && seq.iter().any(|s| s == "CONTINUE key_update")
        && reports.iter().any(|s| s == "REPORT registration");
    checks.push((
        "IRI delivered: REPORT for alice's registration (from gw1.a.example); for the call BEGIN at the attempt, CONTINUE for the answer and the key_update, END at the release".into(),
        iri_ok,
        format!("{}; call: {}", reports.join(", "), seq.join(", ")),
    ));

    // Retention: carol's keys (no warrant) are purged from spg-a's store, alice's are kept.
    let stored = || -> Option<u64> {
        use voxgate_keystore::KeyStore;
        voxgate_keystore::SqliteStore::open(work.join("spg-a-keys.db"))
            .and_then(|mut s| s.count())
            .ok()
    };
    let purged = wait_for(Duration::from_secs(15), || stored() == Some(1));
    // The one left is the session spg-a recorded as matched (li-keep.txt).
    let kept_ok = std::fs::read_to_string(work.join("li-keep.txt"))
        .ok()
        .and_then(|t| u64::from_str_radix(t.lines().next()?.trim(), 16).ok())
        .and_then(|id| {
            use voxgate_keystore::KeyStore;
            voxgate_keystore::SqliteStore::open(work.join("spg-a-keys.db"))
                .and_then(|mut s| s.get(id))
                .ok()
                .flatten()
        })
        .is_some();
    let purged = purged && kept_ok;
    checks.push((
        "retention: the keys of the call no warrant matched were purged, the intercepted call's kept".into(),
        purged,
        format!(
            "spg-a's key store holds {} session(s) after the 3 s retention (alice's)",
            stored().map_or("?".into(), |n| n.to_string())
        ),
    ));

    p.say("verifying the audit logs (hash chain, Ed25519 signatures, signed head)");
    // The mediation finishes its files on SIGTERM.
    li.stop();
    for n in nodes.iter_mut() {
        n.stop();
    }
    agency.stop();
    let agency_summary: Value = serde_json::from_str(
        &std::fs::read_to_string(work.join("agency-out/summary.json")).unwrap_or_default(),
    )
    .unwrap_or(Value::Null);
    checks.push((
        "the agency received the IRI (X2) and the decrypted content (X3) over TLS".into(),
        agency_summary["x2"].as_u64().unwrap_or(0) >= records.len() as u64
            && agency_summary["x3"].as_u64().unwrap_or(0) > 0
            && agency_summary["bad"].as_u64() == Some(0),
        format!(
            "{} X2 and {} X3 PDUs",
            agency_summary["x2"], agency_summary["x3"]
        ),
    ));
    for (src, dst) in [
        ("li-audit.log", "audit.log"),
        ("li-audit.log.head", "audit.log.head"),
        ("keys/audit.pub", "audit.pub"),
        ("spg-a-audit.log", "spg-a-audit.log"),
        ("spg-a-audit.log.head", "spg-a-audit.log.head"),
        ("keys-spg-a/audit.pub", "spg-a-audit.pub"),
    ] {
        let _ = std::fs::copy(work.join(src), out.join(dst));
    }
    let verify = |log: &str, public: &str| -> Result<voxgate_li::audit::Summary, String> {
        let text = std::fs::read_to_string(out.join(log)).map_err(|e| e.to_string())?;
        let head: voxgate_li::audit::Head = serde_json::from_slice(
            &std::fs::read(out.join(format!("{log}.head"))).map_err(|e| e.to_string())?,
        )
        .map_err(|e| e.to_string())?;
        let public = std::fs::read_to_string(out.join(public)).map_err(|e| e.to_string())?;
        voxgate_li::audit::verify(&text, public.trim(), Some(&head)).map_err(|e| e.to_string())
    };
    let li_audit = verify("audit.log", "audit.pub");
    let spg_audit = verify("spg-a-audit.log", "spg-a-audit.pub");
    let describe = |r: &Result<voxgate_li::audit::Summary, String>| match r {
        Ok(s) => format!(
            "{} entries ({})",
            s.count,
            s.events
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Err(e) => format!("FAILED: {e}"),
    };
    let unsealed = li_audit
        .as_ref()
        .map(|s| s.events.get("key_unseal").copied().unwrap_or(0))
        .unwrap_or(0);
    checks.push((
        "audit logs intact: the mediation's (warrant, approvals, key unseal, delivery) and spg-a's (key_update)".into(),
        li_audit.is_ok() && spg_audit.is_ok() && unsealed >= 1,
        format!("mediation: {}; spg-a: {}", describe(&li_audit), describe(&spg_audit)),
    ));

    p.say("summary");
    let ok = checks.iter().all(|c| c.1);
    let summary = json!({
        "ok": ok,
        "out": out.display().to_string(),
        "liid": LIID,
        "checks": checks.iter().map(|(what, pass, detail)| json!({"check": what, "ok": pass, "detail": detail})).collect::<Vec<_>>(),
        "from_target_match": from_share,
        "to_target_match": to_share,
        "iri": seq,
    });
    std::fs::write(
        out.join("summary.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;
    if a.json {
        println!("{summary}");
    } else {
        println!();
        for (what, pass, detail) in &checks {
            println!("{} {what}", if *pass { "[ok]  " } else { "[FAIL]" });
            println!("       {detail}");
        }
        println!();
        println!("results in {}:", out.display());
        println!("  intercepted/from-target.wav, to-target.wav, mixed.wav   what the mediation decrypted");
        println!("  iri.json                                                the IRI records");
        println!("  audit.log, audit.log.head, audit.pub                    the mediation's audit (voxgate li audit verify audit.log --public @audit.pub)");
        println!("  spg-a-audit.log                                         spg-a's audit (every key_update)");
        println!("  wire.pcap                                               the loopback wire (root only)");
        println!("  logs/, work/                                            every node's log, configuration and keys");
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn prepare(work: &Path) -> anyhow::Result<()> {
    run_tool(work, &["cert", "ca", "--out", "certs"])?;
    let issue = |name: &str, ipaddr: Option<Ipv4Addr>, client_only: bool| -> anyhow::Result<()> {
        let mut args = vec![
            "cert".to_string(),
            "issue".into(),
            "--ca-cert".into(),
            "certs/ca.pem".into(),
            "--ca-key".into(),
            "certs/ca.key".into(),
            "--name".into(),
            name.into(),
            "--out-cert".into(),
            format!("certs/{name}.pem"),
            "--out-key".into(),
            format!("certs/{name}.key"),
        ];
        if let Some(a) = ipaddr {
            args.push("--ip".into());
            args.push(a.to_string());
        }
        if client_only {
            args.push("--client-only".into());
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        run_tool(work, &refs).map(|_| ())
    };
    issue("spg-a", Some(ip(1)), false)?;
    issue("spg-b", Some(ip(2)), false)?;
    issue("gw1.a.example", Some(ip(11)), false)?;
    issue("gw1.b.example", Some(ip(12)), false)?;
    issue("li.example", Some(ip(5)), false)?;
    issue("agency.example", Some(ip(6)), false)?;
    for o in ["officer-1", "officer-2", "officer-3"] {
        issue(o, None, true)?;
    }
    run_tool(work, &["li", "keygen", "--out", "keys"])?;
    run_tool(work, &["li", "keygen", "--out", "keys-spg-a"])?;
    for (u, pw) in [
        ("alice", "alice"),
        ("bob", "bob"),
        ("carol", "carol"),
        ("dave", "dave"),
    ] {
        std::fs::write(work.join(format!("{u}.pw")), format!("{pw} demo secret\n"))?;
    }
    Ok(())
}

fn write_configs(work: &Path) -> anyhow::Result<()> {
    let authority = std::fs::read_to_string(work.join("keys/authority.pub"))?;
    let authority = authority.trim();
    for (me, my_ip, domain, gw_ip, peer, peer_ip, peer_domain, first_port) in [
        ("spg-a", ip(1), "a", ip(11), "spg-b", ip(2), "b", 21_000u16),
        ("spg-b", ip(2), "b", ip(12), "spg-a", ip(1), "a", 22_000u16),
    ] {
        let li = if me == "spg-a" {
            format!(
                r#"
# Lawful interception: this provider was served the warrant; it reports to the mediation.
[li]
mediation = "{li}:7444"
server_name = "li.example"
cert = "certs/spg-a.pem"
key = "certs/spg-a.key"
ca = "certs/ca.pem"

[audit]
path = "spg-a-audit.log"
key = "keys-spg-a/audit.key"
node = "spg-a"
"#,
                li = ip(5)
            )
        } else {
            String::new()
        };
        std::fs::write(
            work.join(format!("{me}.toml")),
            format!(
                r#"# {me}: the service-provider gateway of {domain}.example
[escrow]
listen = "{my_ip}:7450"
[tls]
cert = "certs/{me}.pem"
key = "certs/{me}.key"
client_ca = "certs/ca.pem"
[sip]
listen = ["{my_ip}:5061"]
encryption = "mandatory"
[media]
address = "{my_ip}"
first_port = {first_port}
port_count = 40
[[gateway]]
name = "gw1.{domain}.example"
addresses = ["{gw_ip}"]
domains = ["{domain}.example"]
sip = "sip:{gw_ip}:5061;transport=tls"
[[peer]]
name = "{peer}"
addresses = ["{peer_ip}"]
domains = ["{peer_domain}.example"]
sip = "sip:{peer_ip}:5061;transport=tls"
[authority]
public_key = "{authority}"
[store]
sqlite = "{me}-keys.db"
# Keys of sessions that ended more than 3 s ago are deleted, unless a warrant matched the call.
retention_secs = 3
[metrics]
address = "{my_ip}:9460"
{li}"#
            ),
        )?;
    }
    for (d, gw_ip, spg_ip, users) in [
        ("a", ip(11), ip(1), ["alice", "carol"]),
        ("b", ip(12), ip(2), ["bob", "dave"]),
    ] {
        let user_toml: String = users
            .iter()
            .map(|u| {
                format!(
                    "  [[sip.domain.user]]\n  name = \"{u}\"\n  password = \"{u} demo secret\"\n"
                )
            })
            .collect();
        std::fs::write(
            work.join(format!("gw-{d}.toml")),
            format!(
                r#"# gw1.{d}.example: the voice gateway of {d}.example
[gateway]
name = "gw1.{d}.example"
[sip]
[[sip.listen]]
transport = "tls"
address = "{gw_ip}:5061"
[sip.tls]
cert = "certs/gw1.{d}.example.pem"
key = "certs/gw1.{d}.example.key"
client_ca = "certs/ca.pem"
[[sip.domain]]
name = "{d}.example"
encryption = "mandatory"
{user_toml}
[provider]
sip = "sip:{spg_ip}:5061;transport=tls"
addresses = ["{spg_ip}"]
escrow = "{spg_ip}:7450"
[media]
outside_address = "{gw_ip}"
first_port = 30000
port_count = 20
# The RTP header extension carries the session_ID (no CAP_NET_RAW needed).
carrier = "rtp-extension"
extension_id = 3
{li}"#,
                li = if d == "a" {
                    format!(
                        r#"
# Registrations of warrant targets are reported to the mediation (IRI REPORT).
[li]
mediation = "{}:7444"
server_name = "li.example"
cert = "certs/gw1.a.example.pem"
key = "certs/gw1.a.example.key"
ca = "certs/ca.pem"
"#,
                        ip(5)
                    )
                } else {
                    String::new()
                }
            ),
        )?;
    }
    std::fs::write(
        work.join("li.toml"),
        format!(
            r#"# The lawful-interception mediation
node = "li-1"
[api]
listen = "{li}:7443"
cert = "certs/li.example.pem"
key = "certs/li.example.key"
client_ca = "certs/ca.pem"
[x2x3]
listen = "{li}:7444"
cert = "certs/li.example.pem"
key = "certs/li.example.key"
client_ca = "certs/ca.pem"
pois = ["spg-a", "gw1.a.example"]
[authority]
secret_file = "keys/authority.key"
[audit]
path = "li-audit.log"
key = "keys/audit.key"
[warrants]
path = "warrants.json"
[[destination]]
name = "agency-1"
address = "{agency}:7700"
server_name = "agency.example"
ca = "certs/ca.pem"
[output]
dir = "li-out"
"#,
            li = ip(5),
            agency = ip(6)
        ),
    )?;
    Ok(())
}

/// One request to the mediation's warrant API as `officer` (its client certificate).
fn api(
    work: &Path,
    officer: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> anyhow::Result<(u16, Value)> {
    let roots = crate::tls::load_roots(&work.join("certs/ca.pem"))?;
    let chain = crate::tls::load_certs(&work.join(format!("certs/{officer}.pem")))?;
    let key = crate::tls::load_key(&work.join(format!("certs/{officer}.key")))?;
    let cfg = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    let tcp = TcpStream::connect((ip(5), 7443)).context("connecting to the warrant API")?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let conn = rustls::ClientConnection::new(
        Arc::new(cfg),
        rustls::pki_types::ServerName::try_from("li.example")?,
    )?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let ct = if body.is_empty() {
        String::new()
    } else {
        "Content-Type: application/json\r\n".to_string()
    };
    write!(
        tls,
        "{method} {path} HTTP/1.1\r\nHost: li.example\r\n{ct}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    tls.flush()?;
    let mut resp = Vec::new();
    let _ = tls.read_to_end(&mut resp);
    let text = String::from_utf8_lossy(&resp);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no HTTP status from the warrant API")?;
    let json = text
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or(Value::Null);
    Ok((status, json))
}

fn metrics_text(addr: &str) -> String {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn metric_in(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

fn metric(addr: &str, name: &str) -> Option<u64> {
    metric_in(&metrics_text(addr), name)
}

fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

fn find_suffix(dir: &Path, suffix: &str) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(suffix))
}

/// Unescrowed SRTP-looking datagrams from `from` (a gateway's address, another port) to the
/// relay: no session_ID.
fn rogue(from: Ipv4Addr, to: SocketAddr, n: u64) -> anyhow::Result<u64> {
    let s = UdpSocket::bind((from, 0)).context("binding the rogue sender")?;
    let mut x: u32 = 12345;
    for i in 0..n {
        let mut p = vec![0x80u8, 0, 0, 0, 0, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef];
        p[2..4].copy_from_slice(&(i as u16).to_be_bytes());
        for _ in 0..170 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            p.push((x >> 16) as u8);
        }
        s.send_to(&p, to)?;
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(n)
}

fn read_wav_bytes(b: &[u8]) -> anyhow::Result<Vec<i16>> {
    let r = hound::WavReader::new(std::io::Cursor::new(b))?;
    Ok(r.into_samples::<i16>().collect::<Result<_, _>>()?)
}

fn read_wav_file(p: &Path) -> anyhow::Result<Vec<i16>> {
    let r = hound::WavReader::open(p)?;
    Ok(r.into_samples::<i16>().collect::<Result<_, _>>()?)
}

fn write_wav(p: &Path, s: &[i16]) -> anyhow::Result<()> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(p, spec)?;
    for x in s {
        w.write_sample(*x)?;
    }
    w.finalize()?;
    Ok(())
}

fn tone(n: usize, hz: f64) -> Vec<i16> {
    (0..n)
        .map(|i| (8000.0 * (2.0 * std::f64::consts::PI * hz * i as f64 / 8000.0).sin()) as i16)
        .collect()
}

/// Share of the recording (from its first sound) equal to the quantized source, aligned on
/// the first 20 ms that match.
pub(crate) fn match_share(rec: &[i16], q: &[i16]) -> f64 {
    let Some((first, at)) = alignment(rec, q) else {
        return 0.0;
    };
    let n = (rec.len() - first).min(q.len() - at);
    let same = rec[first..first + n]
        .iter()
        .zip(&q[at..at + n])
        .filter(|(a, b)| a == b)
        .count();
    same as f64 / n.max(1) as f64
}

/// Where the recording (from its first sound) lines up with the quantized source: (first
/// sound in `rec`, position in `q`), found by the first 20 ms matching exactly.
fn alignment(rec: &[i16], q: &[i16]) -> Option<(usize, usize)> {
    let first = rec.iter().position(|x| *x != 0)?;
    let window = rec.get(first..first + 160)?;
    let at = q.windows(160).position(|w| w == window)?;
    Some((first, at))
}

/// Pearson correlation of two equally long signals.
fn pearson(a: &[i16], b: &[i16]) -> f64 {
    let n = a.len().min(b.len());
    if n < 2 {
        return 0.0;
    }
    let ma = a[..n].iter().map(|x| f64::from(*x)).sum::<f64>() / n as f64;
    let mb = b[..n].iter().map(|x| f64::from(*x)).sum::<f64>() / n as f64;
    let (mut cov, mut va, mut vb) = (0.0, 0.0, 0.0);
    for (x, y) in a[..n].iter().zip(&b[..n]) {
        let (x, y) = (f64::from(*x) - ma, f64::from(*y) - mb);
        cov += x * y;
        va += x * x;
        vb += y * y;
    }
    if va > 0.0 && vb > 0.0 {
        cov / (va * vb).sqrt()
    } else {
        0.0
    }
}

/// The correlation of the recovered audio with the source, aligned.
pub(crate) fn aligned_correlation(rec: &[i16], q: &[i16]) -> f64 {
    match alignment(rec, q) {
        Some((first, at)) => pearson(&rec[first..], &q[at..]),
        None => 0.0,
    }
}

/// The strongest correlation of `rec` with `src` over lags 0..=`max_lag` samples (the
/// captured packets start with the source, give or take the first packets).
pub(crate) fn best_correlation_near(rec: &[i16], src: &[i16], max_lag: usize) -> f64 {
    let mut best: f64 = 0.0;
    for lag in 0..=max_lag.min(src.len()) {
        let r = pearson(rec, &src[lag..]);
        if r.abs() > best.abs() {
            best = r;
        }
    }
    best
}

/// A live capture of the loopback interface (AF_PACKET, root) into a pcap file, keeping the
/// payloads of the RTP datagrams gw1.a.example sends spg-a (the "eavesdropper's" view).
/// An RTP stream's SSRC and its payloads decoded as G.711.
type Stream = (u32, Vec<i16>);

struct Capture {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(u64, Vec<Stream>)>,
}

impl Capture {
    fn start(path: &Path) -> anyhow::Result<Capture> {
        // SAFETY: plain socket(2)/setsockopt(2) calls; the fd is owned by the thread below.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW,
                i32::from((libc::ETH_P_ALL as u16).to_be()),
            )
        };
        if fd < 0 {
            bail!("AF_PACKET socket: {}", std::io::Error::last_os_error());
        }
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 200_000,
        };
        // SAFETY: valid fd and option buffer.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            );
        }
        let file = std::fs::File::create(path)?;
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let thread = std::thread::spawn(move || {
            let header = pcap_file::pcap::PcapHeader {
                datalink: pcap_file::DataLink::ETHERNET,
                ..Default::default()
            };
            let mut w = pcap_file::pcap::PcapWriter::with_header(file, header).ok();
            let mut buf = vec![0u8; 65_536];
            let mut packets = 0u64;
            let mut decoded: Vec<Stream> = Vec::new();
            while !s2.load(Ordering::Relaxed) {
                // SAFETY: buf and the address are valid for their lengths.
                let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
                let mut flen = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
                let n = unsafe {
                    libc::recvfrom(
                        fd,
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        0,
                        (&mut from as *mut libc::sockaddr_ll).cast(),
                        &mut flen,
                    )
                };
                // The loopback shows each packet twice (sent, received): keep it once, as
                // libpcap does.
                if n <= 0 || from.sll_pkttype == libc::PACKET_OUTGOING {
                    continue;
                }
                let frame = &buf[..n as usize];
                // Only our demo's network, 127.0.60.0/24 (IPv4 over the loopback's Ethernet).
                if frame.len() < 34 || frame[12..14] != [0x08, 0x00] || frame[26..29] != NET {
                    continue;
                }
                let ts = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                if let Some(w) = w.as_mut() {
                    let _ = w.write_packet(&pcap_file::pcap::PcapPacket::new(
                        ts,
                        frame.len() as u32,
                        frame,
                    ));
                }
                // gw1.a.example -> spg-a, UDP, the shared media port: the encrypted leg.
                let ihl = usize::from(frame[14] & 0x0f) * 4;
                if frame[23] == 17 && frame[29] == 11 && frame[33] == 1 {
                    let udp = 14 + ihl;
                    let Some(u) = frame.get(udp..udp + 8) else {
                        continue;
                    };
                    let dport = u16::from_be_bytes([u[2], u[3]]);
                    if dport != 21_000 {
                        continue;
                    }
                    let Some(rtp) = frame.get(udp + 8..) else {
                        continue;
                    };
                    if rtp.len() > 12 + 10 + 160 && rtp[0] >> 6 == 2 && rtp[1] & 0x7f == 0 {
                        packets += 1;
                        // What an eavesdropper would play: the payload taken as mu-law, per
                        // stream (SSRC).
                        let ssrc = u32::from_be_bytes([rtp[8], rtp[9], rtp[10], rtp[11]]);
                        let track = match decoded.iter_mut().find(|(s, _)| *s == ssrc) {
                            Some((_, t)) => t,
                            None => {
                                decoded.push((ssrc, Vec::new()));
                                &mut decoded.last_mut().expect("just pushed").1
                            }
                        };
                        for b in &rtp[rtp.len() - 170..rtp.len() - 10] {
                            track.push(voxgate_rtp::g711::Law::Mu.decode(*b));
                        }
                    }
                }
            }
            // SAFETY: closing our own fd.
            unsafe {
                libc::close(fd);
            }
            (packets, decoded)
        });
        Ok(Capture { stop, thread })
    }

    /// Stops it; returns the encrypted-leg packet count and the strongest correlation of a
    /// stream's payloads (decoded as G.711) with the speech.
    fn stop(self) -> (u64, f64) {
        self.stop.store(true, Ordering::Relaxed);
        let (n, decoded) = self.thread.join().unwrap_or_default();
        let speech = read_wav_bytes(SPEECH).unwrap_or_default();
        let q: Vec<i16> = speech
            .iter()
            .map(|x| voxgate_rtp::g711::Law::Mu.quantize(*x))
            .collect();
        // The strongest of the streams (alice's, carol's).
        let best = decoded
            .iter()
            .map(|(_, t)| best_correlation_near(&t[..t.len().min(40_000)], &q, 1600))
            .fold(0.0f64, |a, b| if b.abs() > a.abs() { b } else { a });
        (n, best)
    }
}
