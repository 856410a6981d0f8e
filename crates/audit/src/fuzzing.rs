//! The logic of the `audit_packet` fuzz target (`fuzz/fuzz_targets/audit_packet.rs`), here so
//! that the committed corpus is replayed by `cargo test` (`tests/fuzz_corpus.rs`) without
//! libFuzzer.
//!
//! Input: one config byte, then frames, each as a 2-byte big-endian length and that many
//! bytes. Config bits 0-2 pick the link type (Ethernet, raw IP, SLL, SLL2, NULL, IPv4, IPv6,
//! an unsupported one); bit 3 shrinks every table limit to a handful of entries (to reach the
//! eviction paths); bit 4 disables the RTP heuristic; bits 5-7 scale the gap between frame
//! timestamps (0 ms to 7 s, and backwards for 7).
//!
//! Checks: no panic, and the report is consistent: every frame is counted, analysed RTP
//! packets are at most the RTP packets seen, drained audio matches the per-stream sample
//! counts, the report serialises and renders.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::{html, net, Auditor, Config};

const LINKS: [u32; 8] = [
    net::link::ETHERNET,
    net::link::RAW,
    net::link::LINUX_SLL,
    net::link::LINUX_SLL2,
    net::link::NULL,
    net::link::IPV4,
    net::link::IPV6,
    147,
];

/// Splits a fuzz input into (config, frames).
pub fn frames(data: &[u8]) -> Option<(u8, Vec<&[u8]>)> {
    let (&config, mut rest) = data.split_first()?;
    let mut out = Vec::new();
    while rest.len() >= 2 {
        let len = u16::from_be_bytes([rest[0], rest[1]]) as usize;
        let body = &rest[2..];
        let take = len.min(body.len());
        out.push(&body[..take]);
        rest = &body[take..];
    }
    Some((config, out))
}

/// Encodes frames in the fuzz input format (for seed corpora).
pub fn encode(config: u8, frames: &[Vec<u8>]) -> Vec<u8> {
    let mut out = vec![config];
    for f in frames {
        out.extend_from_slice(&(f.len() as u16).to_be_bytes());
        out.extend_from_slice(f);
    }
    out
}

pub fn audit_packet(data: &[u8]) {
    let Some((config, frames)) = frames(data) else {
        return;
    };
    let link = LINKS[(config & 7) as usize];
    let mut cfg = Config {
        heuristic: config & 0x10 == 0,
        ..Config::default()
    };
    if config & 0x08 != 0 {
        cfg.max_streams = 2;
        cfg.max_candidates = 2;
        cfg.max_media = 2;
        cfg.max_calls = 2;
        cfg.max_seconds = 3;
        cfg.max_series_points = 5;
        cfg.max_gap_samples = 400;
        cfg.max_pending_audio = 2000;
        cfg.frag.max_pending = 2;
        cfg.frag.max_datagram = 3000;
        cfg.tcp.max_flows = 2;
        cfg.tcp.max_buffer = 600;
    }
    let step = (config >> 5) as u64;
    let mut a = Auditor::new(cfg);
    let mut audio: BTreeMap<usize, u64> = BTreeMap::new();
    let mut t = Duration::from_secs(1_000_000);
    for f in &frames {
        a.handle_frame(link, t, f, f.len() as u32);
        a.drain_audio(|c| *audio.entry(c.stream).or_default() += c.samples.len() as u64);
        t = if step == 7 {
            t.saturating_sub(Duration::from_millis(3))
        } else {
            t + Duration::from_millis(step * step * 150)
        };
    }
    let r = a.finish();
    a.drain_audio(|c| *audio.entry(c.stream).or_default() += c.samples.len() as u64);
    assert_eq!(r.capture.frames, frames.len() as u64);
    let analysed: u64 = r.streams.iter().map(|s| s.packets).sum();
    assert!(
        analysed <= r.capture.rtp_packets,
        "{analysed} > {}",
        r.capture.rtp_packets
    );
    assert!(r.streams.len() <= cfg.max_streams);
    for s in &r.streams {
        let drained = audio.get(&s.id).copied().unwrap_or(0);
        let reported = s.audio.as_ref().map_or(0, |x| x.samples);
        // Audio the driver did not drain in time is dropped and counted, never invented.
        assert!(
            drained <= reported,
            "stream {}: {drained} > {reported}",
            s.id
        );
        if !r
            .limits_reached
            .contains_key("audio samples dropped (not drained)")
        {
            assert_eq!(drained, reported, "stream {}", s.id);
        }
        assert!(s.per_second.len() <= cfg.max_seconds);
    }
    let json = serde_json::to_string(&r).expect("report serialises");
    assert!(json.starts_with('{'));
    let page = html::render(&r);
    assert!(page.ends_with("</html>\n"));
    assert!(!page.contains("<script"));
}
