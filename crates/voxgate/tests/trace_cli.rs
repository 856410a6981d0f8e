//! `voxgate trace detect` and `eval` on good and bad input: a marked flow in a synthetic
//! capture is found and an unmarked one is not; a flow too short to decide is "undecided"
//! (not "no"); non-UDP frames and an unknown link type are skipped and counted; a truncated
//! capture is decoded up to the damage with a warning; a file that is not a capture, a bad key
//! and an unknown experiment are refused with a clear message. Never a panic.

mod common;

use std::path::Path;
use std::process::Command;

use voxgate_trace::{Embedder, MarkId, SchemeParams, WatermarkKey};

const KEY: &str = "3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c";

/// An Ethernet/IPv4/UDP frame from 10.0.0.1:`sport` to 10.0.0.2:`dport` with 172 bytes.
fn frame(sport: u16, dport: u16) -> Vec<u8> {
    let payload = [0x80u8; 172];
    let builder = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .udp(sport, dport);
    let mut out = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut out, &payload).unwrap();
    out
}

/// Writes a pcap: (time in µs, frame) in time order.
fn write_pcap(p: &Path, link: pcap_file::DataLink, frames: &[(u64, Vec<u8>)]) {
    let f = std::fs::File::create(p).unwrap();
    let header = pcap_file::pcap::PcapHeader {
        datalink: link,
        ..Default::default()
    };
    let mut w = pcap_file::pcap::PcapWriter::with_header(f, header).unwrap();
    for (t, data) in frames {
        w.write_packet(&pcap_file::pcap::PcapPacket::new(
            std::time::Duration::from_micros(*t),
            data.len() as u32,
            data,
        ))
        .unwrap();
    }
}

/// Two 60 s flows of 20 ms packets with U[0, 5 ms] FIFO jitter: port 4000 marked, 4001 not;
/// a 40-packet flow on 4002; ARP-like non-IP frames in between.
fn capture(dir: &Path) -> Vec<(u64, Vec<u8>)> {
    let key = WatermarkKey::from_hex(KEY).unwrap();
    let mut emb = Embedder::new(&SchemeParams::interval_default(), &key, MarkId(42)).unwrap();
    let mut x: u64 = 12345;
    let mut rnd = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % 5000
    };
    let mut frames = Vec::new();
    let (mut last_a, mut last_b) = (0u64, 0u64);
    for k in 0..3000u64 {
        let t = 1_000_000 + 20_000 * k;
        let a = (emb.on_packet(t) + 10_000 + rnd()).max(last_a);
        last_a = a;
        frames.push((a, frame(5000, 4000)));
        let b = (t + 7_000 + 10_000 + rnd()).max(last_b);
        last_b = b;
        frames.push((b, frame(5001, 4001)));
        if k < 40 {
            frames.push((t + 3_000, frame(5002, 4002)));
        }
        if k % 100 == 0 {
            let mut arp = frame(1, 1);
            arp[12] = 0x08;
            arp[13] = 0x06;
            frames.push((t + 1, arp));
        }
    }
    frames.sort_by_key(|f| f.0);
    let _ = dir;
    frames
}

fn detect(dir: &Path, file: &str, extra: &[&str]) -> std::process::Output {
    Command::new(common::voxgate())
        .args([
            "trace", "detect", "--pcap", file, "--key", KEY, "--mark", "42",
        ])
        .args(extra)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn flow(v: &serde_json::Value, port: u16) -> &serde_json::Value {
    v["flows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["dst"].as_str().unwrap().ends_with(&format!(":{port}")))
        .map(|f| &f["detection"])
        .unwrap_or_else(|| panic!("no flow to :{port} in {v}"))
}

#[test]
fn detect_finds_the_marked_flow_and_handles_bad_captures() {
    let dir = common::scratch("trace_cli");
    let frames = capture(&dir);
    write_pcap(
        &dir.join("good.pcap"),
        pcap_file::DataLink::ETHERNET,
        &frames,
    );
    let out = detect(&dir, "good.pcap", &["--json", "--min-packets", "5"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(flow(&v, 4000)["verdict"], "watermarked", "{v}");
    assert_eq!(flow(&v, 4001)["verdict"], "not_watermarked", "{v}");
    assert_eq!(flow(&v, 4002)["verdict"], "undecided", "a 0.8 s flow: {v}");
    assert!(v["frames_skipped"].as_u64().unwrap() >= 30, "{v}");
    // The text table names the verdicts too.
    let out = detect(&dir, "good.pcap", &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("WATERMARKED") && text.contains("not watermarked"),
        "{text}"
    );
    // One named flow.
    let out = detect(
        &dir,
        "good.pcap",
        &["--flow", "10.0.0.1:5000-10.0.0.2:4000", "--json"],
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["flows"].as_array().unwrap().len(), 1);
    let out = detect(&dir, "good.pcap", &["--flow", "10.0.0.9:1-10.0.0.2:4000"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not in the capture"));

    // Truncated in the middle of a record: decoded up to there, with a warning.
    let bytes = std::fs::read(dir.join("good.pcap")).unwrap();
    std::fs::write(dir.join("cut.pcap"), &bytes[..bytes.len() * 2 / 3 + 5]).unwrap();
    let out = detect(&dir, "cut.pcap", &["--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["capture_problem"].is_string(), "{v}");
    assert_eq!(flow(&v, 4000)["verdict"], "watermarked", "40 s left: {v}");

    // An unknown link type: every frame skipped, nothing to decide, no panic.
    write_pcap(
        &dir.join("link.pcap"),
        pcap_file::DataLink::IEEE802_11,
        &frames[..500],
    );
    let out = detect(&dir, "link.pcap", &["--json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["flows"].as_array().unwrap().len(), 0);
    assert_eq!(v["frames_skipped"], 500);

    // Not a capture, a bad key.
    std::fs::write(dir.join("junk.pcap"), b"this is not a capture at all").unwrap();
    let out = detect(&dir, "junk.pcap", &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a pcap or pcapng"));
    let out = Command::new(common::voxgate())
        .args([
            "trace",
            "detect",
            "--pcap",
            "good.pcap",
            "--key",
            "abc",
            "--mark",
            "1",
        ])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--key"));
}

#[test]
fn eval_refuses_an_unknown_experiment_and_runs_a_small_one() {
    let dir = common::scratch("trace_cli_eval");
    let out = Command::new(common::voxgate())
        .args(["trace", "eval", "--experiments", "nonsense", "--out", "ev"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown experiment"));
    let out = Command::new(common::voxgate())
        .args(["trace", "eval", "--experiments", "multiflow", "--out", "ev"])
        .args(["--positives", "20", "--negatives", "100", "--threads", "2"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.join("ev/summary.md").exists());
    assert!(dir.join("ev/targets.json").exists());
}
