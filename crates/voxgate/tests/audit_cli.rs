//! `voxgate audit` end to end: real calls between two `voxgate ua` on loopback, captured by
//! dumpcap, audited by the real binary, and checked against Wireshark (`tshark -q -z
//! rtp,streams`) and against the audio the caller played.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{require_tool, scratch, voxgate};
use serde_json::Value;

const SPEECH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/audio/speech-8k.wav"
);

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// dumpcap on an interface, writing to a file until dropped (SIGINT, then wait).
struct Dumpcap {
    child: Child,
}

impl Dumpcap {
    fn start(iface: &str, out: &Path, dir: &Path) -> Dumpcap {
        require_tool("dumpcap", "tshark");
        let err = dir.join("dumpcap.stderr");
        let child = Command::new("dumpcap")
            .args([
                "-i",
                iface,
                "-q",
                "-f",
                "udp or tcp port 5060",
                "-w",
                s(out),
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .expect("dumpcap");
        let t0 = Instant::now();
        loop {
            let e = std::fs::read_to_string(&err).unwrap_or_default();
            if e.contains("Capturing on") || out.exists() && t0.elapsed() > Duration::from_secs(1) {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(15),
                "dumpcap did not start: {e}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(300));
        Dumpcap { child }
    }

    fn stop(mut self) {
        std::thread::sleep(Duration::from_millis(300));
        // SAFETY: signalling our own child process by its pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let _ = self.child.wait();
    }
}

impl Drop for Dumpcap {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Captures run one at a time: each test's call must be the only one in its capture window
/// as far as this file's tests go (other traffic on loopback is tolerated: see `our_streams`).
static CAPTURE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs one call (bob answers, alice calls and plays speech for `secs`), captured on `iface`.
/// Returns the scratch dir, the capture and bob's SIP address.
fn captured_call(
    name: &str,
    encryption: &str,
    iface: &str,
    secs: u32,
) -> (PathBuf, PathBuf, String) {
    require_tool("tshark", "tshark");
    let _one_at_a_time = CAPTURE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch(name);
    let cap = dir.join("call.pcapng");
    let dc = Dumpcap::start(iface, &cap, &dir);
    let mut bob = Command::new(voxgate())
        .args([
            "ua",
            "--user",
            "bob@b.example",
            "--answer",
            "--transport",
            "udp",
        ])
        .args([
            "--listen",
            "127.0.0.1:0",
            "--encryption",
            encryption,
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("bob.stderr")).unwrap())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(bob.stdout.take().unwrap()).lines();
    let mut addr = String::new();
    for l in lines.by_ref() {
        let l = l.unwrap();
        if let Some(a) = l.strip_prefix("listening udp ") {
            addr = a.trim().to_string();
        }
        if l == "ready" {
            break;
        }
    }
    assert!(!addr.is_empty(), "bob did not listen");
    let status = Command::new(voxgate())
        .args(["ua", "--user", "alice@a.example", "--transport", "udp"])
        .args(["--call", &format!("sip:bob@{addr};transport=udp")])
        .args(["--encryption", encryption, "--play", SPEECH])
        .args(["--duration", &secs.to_string(), "--json"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("alice.stderr")).unwrap())
        .status()
        .unwrap();
    assert!(
        status.success(),
        "alice: {}",
        std::fs::read_to_string(dir.join("alice.stderr")).unwrap_or_default()
    );
    std::thread::sleep(Duration::from_millis(500));
    let _ = bob.kill();
    let _ = bob.wait();
    dc.stop();
    (dir, cap, addr)
}

/// The streams of the call to bob at `addr` (the capture may hold other loopback traffic).
fn our_streams(r: &Value, addr: &str) -> Vec<Value> {
    let call = r["sip"]["calls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| {
            c["to"].as_str().unwrap_or_default().contains(addr)
                && !c["streams"].as_array().unwrap().is_empty()
        })
        .unwrap_or_else(|| panic!("no call to {addr} with streams: {r}"));
    let ids: Vec<u64> = call["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    r["streams"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| ids.contains(&s["id"].as_u64().unwrap()))
        .cloned()
        .collect()
}

/// Runs `voxgate audit` and returns report.json.
fn audit(cap: &Path, out: &Path) -> Value {
    let o = Command::new(voxgate())
        .args(["audit", s(cap), "--out", s(out)])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "audit failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("report:"), "summary: {text}");
    serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap()
}

/// One row of `tshark -q -z rtp,streams`.
#[derive(Debug)]
struct TsharkStream {
    src: String,
    dst: String,
    ssrc: u32,
    packets: u64,
    lost: i64,
    max_delta: f64,
    mean_jitter: f64,
    max_jitter: f64,
}

/// Parses tshark's table. Wireshark 4.0 columns: start, end, src, port, dst, port, SSRC,
/// payload, pkts, lost, (pct), min/mean/max delta, min/mean/max jitter, problems.
fn tshark_streams(cap: &Path, heuristic: bool) -> Vec<TsharkStream> {
    let mut cmd = Command::new("tshark");
    cmd.args(["-q", "-z", "rtp,streams", "-r", s(cap)]);
    if heuristic {
        cmd.args(["--enable-heuristic", "rtp_udp"]);
    }
    let o = cmd.output().expect("tshark");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let mut out = Vec::new();
    for line in text.lines() {
        let t: Vec<&str> = line.split_whitespace().collect();
        if t.len() < 17 || !t[6].starts_with("0x") {
            continue;
        }
        let f = |i: usize| t[i].parse::<f64>().unwrap();
        out.push(TsharkStream {
            src: format!("{}:{}", t[2], t[3]),
            dst: format!("{}:{}", t[4], t[5]),
            ssrc: u32::from_str_radix(&t[6][2..], 16).unwrap(),
            packets: t[8].parse().unwrap(),
            lost: t[9].parse().unwrap(),
            max_delta: f(13),
            mean_jitter: f(15),
            max_jitter: f(16),
        });
    }
    assert!(!out.is_empty(), "no RTP stream in tshark's table:\n{text}");
    out
}

/// Every tshark stream is in the report, within 1% on counts and 0.1 ms on jitter. Returns
/// the agreement table (for the logs).
fn assert_agrees(report: &Value, tshark: &[TsharkStream]) -> String {
    let streams = report["streams"].as_array().unwrap();
    let mut table = String::from(
        "stream | packets (ours/tshark) | lost | max jitter ms | mean jitter ms | max delta ms\n",
    );
    for t in tshark {
        let ssrc = format!("0x{:08X}", t.ssrc);
        let ours = streams
            .iter()
            .find(|x| {
                x["src"] == t.src.as_str()
                    && x["dst"] == t.dst.as_str()
                    && x["ssrc"] == ssrc.as_str()
            })
            .unwrap_or_else(|| panic!("tshark stream {t:?} not in the report"));
        let packets = ours["packets"].as_u64().unwrap();
        let lost = ours["lost"].as_i64().unwrap();
        let maxj = ours["max_jitter_ms"].as_f64().unwrap();
        let meanj = ours["mean_jitter_ms"].as_f64().unwrap();
        let maxd = ours["max_delta_ms"].as_f64().unwrap();
        let tol = (t.packets as f64 * 0.01).max(0.0);
        assert!(
            (packets as f64 - t.packets as f64).abs() <= tol,
            "packets {packets} vs {t:?}"
        );
        assert!(
            (lost as f64 - t.lost as f64).abs() <= tol.max(0.0),
            "lost {lost} vs {t:?}"
        );
        assert!(
            (maxj - t.max_jitter).abs() <= 0.1,
            "max jitter {maxj} vs {t:?}"
        );
        assert!(
            (meanj - t.mean_jitter).abs() <= 0.1,
            "mean jitter {meanj} vs {t:?}"
        );
        assert!(
            (maxd - t.max_delta).abs() <= 0.1,
            "max delta {maxd} vs {t:?}"
        );
        table.push_str(&format!(
            "{} -> {} {ssrc} | {packets}/{} | {lost}/{} | {maxj:.3}/{:.3} | {meanj:.3}/{:.3} | {maxd:.3}/{:.3}\n",
            t.src, t.dst, t.packets, t.lost, t.max_jitter, t.mean_jitter, t.max_delta
        ));
    }
    eprintln!("{table}");
    table
}

/// The recovered audio holds the played speech, sample for sample (after G.711).
fn assert_audio_is_the_source(wav: &Path) {
    let got = common::read_wav(wav);
    let src: Vec<i16> = common::read_wav(Path::new(SPEECH))
        .iter()
        .map(|x| common::ulaw_quantize(*x))
        .collect();
    let n = 8000.min(got.len() / 2);
    assert!(
        n >= 4000,
        "too little audio recovered: {} samples",
        got.len()
    );
    // The call may start a few samples into the file or with silence: find the alignment.
    let start = (0..got.len() - n)
        .find(|k| got[*k..*k + n] == src[..n])
        .or_else(|| {
            (0..src.len() - n)
                .find(|k| src[*k..*k + n] == got[..n])
                .map(|_| 0)
        });
    assert!(
        start.is_some(),
        "the recovered audio is not the played speech"
    );
    // And the whole overlap matches, not just one window.
    let k = (0..src.len() - n)
        .find(|k| src[*k..*k + n] == got[..n])
        .unwrap_or(0);
    let m = got.len().min(src.len() - k);
    assert_eq!(
        &got[..m],
        &src[k..k + m],
        "recovered audio differs from the source"
    );
}

fn finding_for(r: &Value, kind: &str, stream: &Value) -> Option<Value> {
    r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| {
            f["kind"] == kind
                && f["streams"]
                    .as_array()
                    .is_some_and(|v| v.contains(&stream["id"]))
        })
        .cloned()
}

#[test]
fn plain_call_is_decoded_and_agrees_with_tshark() {
    let (dir, cap, addr) = captured_call("audit-plain", "off", "lo", 3);
    let out = dir.join("report");
    let r = audit(&cap, &out);
    assert_agrees(&r, &tshark_streams(&cap, false));
    let streams = our_streams(&r, &addr);
    assert_eq!(streams.len(), 2, "{r}");
    for s in &streams {
        let f = finding_for(&r, "unencrypted_rtp", s).expect("unencrypted_rtp finding");
        assert_eq!(f["severity"], "high");
    }
    assert!(r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["kind"] == "sip_without_tls"));
    // alice's stream (the one whose audio is not silence) is the speech she played.
    let mut checked = 0;
    for s in &streams {
        assert_eq!(s["found_by"], "sdp");
        let file = out.join(s["audio"]["file"].as_str().unwrap());
        if common::read_wav(&file)
            .iter()
            .any(|x| *x != 0 && x.abs() > 8)
        {
            assert_audio_is_the_source(&file);
            checked += 1;
        }
    }
    assert_eq!(checked, 1);
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("<audio"));
    assert!(
        !html.contains("http://") || !html.contains("src=\"http"),
        "no external resources"
    );
    assert!(!html.contains("<script"));
}

/// Perturbs a real capture: drops, delays, duplicates and reorders RTP packets, then checks
/// loss and jitter against tshark (with RTP found by the heuristic on both sides: the SIP is
/// removed too).
#[test]
fn lossy_jittery_capture_agrees_with_tshark() {
    use voxgate_capture::{CaptureReader, CaptureWriter, Item};
    let (dir, cap, _) = captured_call("audit-lossy", "off", "lo", 4);
    let lossy = dir.join("lossy.pcapng");
    let mut reader = CaptureReader::new(std::fs::File::open(&cap).unwrap()).unwrap();
    let mut writer = CaptureWriter::like(&reader, std::fs::File::create(&lossy).unwrap()).unwrap();
    let mut n = 0u64;
    let mut held: Option<(voxgate_capture::Frame<'static>, Vec<u8>)> = None;
    let mut x = 12345u32;
    while let Some(item) = reader.next_item() {
        match item.unwrap() {
            Item::Other(b) => writer.write_other(&b).unwrap(),
            Item::Frame(f) => {
                let data = f.data.to_vec();
                if data
                    .windows(8)
                    .any(|w| w == b"SIP/2.0 " || w == b"SIP/2.0\r")
                {
                    continue; // no signalling: both tools must find the RTP by themselves
                }
                n += 1;
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                if n.is_multiple_of(23) {
                    continue; // lost
                }
                let mut f2 = voxgate_capture::Frame {
                    index: f.index,
                    link: f.link,
                    interface_id: f.interface_id,
                    timestamp: f.timestamp,
                    orig_len: f.orig_len,
                    data: std::borrow::Cow::Owned(data.clone()),
                };
                // Up to 30 ms of extra delay on some packets, keeping file order.
                if n.is_multiple_of(5) {
                    f2.timestamp += Duration::from_micros((x % 30_000) as u64);
                }
                if n.is_multiple_of(41) {
                    held = Some((f2, data)); // reordered: written after the next one
                    continue;
                }
                writer.write_frame(&f2, &data, f2.orig_len).unwrap();
                if n.is_multiple_of(37) {
                    writer.write_frame(&f2, &data, f2.orig_len).unwrap(); // duplicated
                }
                if let Some((hf, hd)) = held.take() {
                    writer.write_frame(&hf, &hd, hf.orig_len).unwrap();
                }
            }
        }
    }
    writer.finish().unwrap();
    let r = audit(&lossy, &dir.join("report"));
    let t = tshark_streams(&lossy, true);
    assert!(t.iter().any(|s| s.lost > 0), "{t:?}");
    assert!(t.iter().any(|s| s.max_jitter > 1.0), "{t:?}");
    let table = assert_agrees(&r, &t);
    std::fs::write(dir.join("agreement.txt"), table).unwrap();
    for s in r["streams"].as_array().unwrap() {
        assert_eq!(s["found_by"], "heuristic");
    }
}

/// SRTP keyed by SDES over plain UDP SIP, captured on `any` (Linux cooked headers): the audit
/// takes the keys from the SIP, decrypts the SRTP and recovers the speech.
#[test]
fn sdes_keys_in_clear_sip_decrypt_the_call() {
    let (dir, cap, addr) = captured_call("audit-sdes", "optional", "any", 3);
    let out = dir.join("report");
    let r = audit(&cap, &out);
    let streams = our_streams(&r, &addr);
    assert_eq!(streams.len(), 2, "{r}");
    let f = finding_for(&r, "sdes_keys_in_clear", &streams[0])
        .unwrap_or_else(|| panic!("no SDES finding: {r}"));
    assert_eq!(f["severity"], "critical");
    assert!(
        f["evidence"]["packets_authenticated"].as_u64().unwrap() > 200,
        "{f}"
    );
    for s in &streams {
        assert_eq!(s["encryption"], "srtp-decrypted", "{s}");
        assert!(finding_for(&r, "unencrypted_rtp", s).is_none());
    }
    let mut speech = 0;
    for s in &streams {
        let file = out.join(s["audio"]["file"].as_str().unwrap());
        if common::read_wav(&file).iter().any(|x| x.abs() > 8) {
            assert_audio_is_the_source(&file);
            speech += 1;
        }
    }
    assert_eq!(speech, 1);
    // Stats agree with tshark on SRTP too (headers are in clear).
    assert_agrees(&r, &tshark_streams(&cap, false));
}

#[test]
fn damaged_captures_are_reported_and_not_fatal() {
    let (dir, cap, _) = captured_call("audit-damaged", "off", "lo", 1);
    let bytes = std::fs::read(&cap).unwrap();
    // Truncated in the middle of a block.
    let cut = dir.join("cut.pcapng");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3 + 7]).unwrap();
    let r = audit(&cut, &dir.join("cut"));
    assert!(r["capture_error"].is_string(), "{r}");
    assert!(r["streams"].as_array().unwrap().len() >= 2);
    // Corrupted bytes throughout (headers and payloads): never a panic.
    let mut bad = bytes.clone();
    let mut x = 7u32;
    for i in (200..bad.len()).step_by(97) {
        x = x.wrapping_mul(1664525).wrapping_add(1013904223);
        bad[i] = (x >> 24) as u8;
    }
    let badp = dir.join("bad.pcapng");
    std::fs::write(&badp, &bad).unwrap();
    let o = Command::new(voxgate())
        .args(["audit", s(&badp), "--out", s(&dir.join("bad"))])
        .output()
        .unwrap();
    assert!(o.status.code().is_some(), "killed by a signal");
    assert!(!String::from_utf8_lossy(&o.stderr).contains("panicked"));
    // Not a capture at all: a clear error.
    let junk = dir.join("junk.pcap");
    std::fs::write(&junk, b"this is not a capture").unwrap();
    let o = Command::new(voxgate())
        .args(["audit", s(&junk), "--out", s(&dir.join("junk"))])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not a pcap"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
