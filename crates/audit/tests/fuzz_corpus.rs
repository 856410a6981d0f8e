//! Replays the committed corpus of the `audit_packet` fuzz target (fuzz/corpus/audit_packet and
//! fuzz/regressions/audit_packet) through the same logic, and regenerates its seeds:
//! `cargo test -p voxgate-audit --test fuzz_corpus -- --ignored regenerate_seed_corpus`.

use std::path::PathBuf;

use voxgate_audit::fuzzing::{audit_packet, encode};
use voxgate_rtp::{CryptoAttribute, SrtpProfile, SrtpSession};

fn dir(kind: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../../fuzz/{kind}/audit_packet"))
}

#[test]
fn committed_fuzz_corpus_replays() {
    let mut n = 0;
    for kind in ["corpus", "regressions"] {
        let Ok(rd) = std::fs::read_dir(dir(kind)) else {
            continue;
        };
        for e in rd {
            let p = e.unwrap().path();
            audit_packet(&std::fs::read(&p).unwrap());
            n += 1;
        }
    }
    assert!(n >= 5, "the seed corpus is missing ({n} files)");
}

fn ipv4(proto: u8, src: [u8; 4], dst: [u8; 4], id: u16, frag: u16, body: &[u8]) -> Vec<u8> {
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&((20 + body.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&id.to_be_bytes());
    ip.extend_from_slice(&frag.to_be_bytes());
    ip.extend_from_slice(&[64, proto, 0, 0]);
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&dst);
    ip.extend_from_slice(body);
    ip
}

fn udp(sp: u16, dp: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::new();
    u.extend_from_slice(&sp.to_be_bytes());
    u.extend_from_slice(&dp.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

fn tcp(sp: u16, dp: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(&sp.to_be_bytes());
    t.extend_from_slice(&dp.to_be_bytes());
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
    t.extend_from_slice(payload);
    t
}

fn eth(ip: Vec<u8>, et: u16) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
    f.extend_from_slice(&et.to_be_bytes());
    f.extend_from_slice(&ip);
    f
}

fn rtp(pt: u8, seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, pt];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

const A: [u8; 4] = [10, 0, 0, 1];
const B: [u8; 4] = [10, 0, 0, 2];

fn invite(sdp: &str, extra: &str) -> Vec<u8> {
    format!(
        "INVITE sip:bob@10.0.0.2 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1\r\n\
From: <sip:alice@a>;tag=1\r\nTo: <sip:bob@b>\r\nCall-ID: seed-1\r\nCSeq: 1 INVITE\r\n\
Max-Forwards: 70\r\n{extra}Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
    .into_bytes()
}

#[test]
#[ignore = "writes fuzz/corpus/audit_packet"]
fn regenerate_seed_corpus() {
    let out = dir("corpus");
    std::fs::create_dir_all(&out).unwrap();
    let tone: Vec<u8> = (0..160).map(|i| ((i * 7) % 256) as u8 ^ 0x55).collect();
    let mut seeds: Vec<(&str, Vec<u8>)> = Vec::new();

    // 1. SDES in clear SIP, then SRTP that the key decrypts, RTCP, a lost and a late packet.
    let key: Vec<u8> = (0u8..30).collect();
    let attr = CryptoAttribute::new(1, SrtpProfile::AesCm128HmacSha1_80, &key);
    let sdp = format!(
        "v=0\r\no=- 1 1 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\n\
m=audio 50000 RTP/SAVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\na=crypto:{}\r\n\
a=crypto:2 NULL_HMAC_SHA1_80 inline:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\r\n",
        attr.to_string().trim_start_matches("a=crypto:")
    );
    let mut frames = vec![eth(
        ipv4(17, A, B, 1, 0, &udp(5060, 5060, &invite(&sdp, ""))),
        0x0800,
    )];
    let mut tx = SrtpSession::new(attr.to_policy().unwrap()).unwrap();
    for i in [0u16, 1, 2, 4, 3, 5, 6, 7] {
        let mut p = rtp(0, i, 160 * i as u32, 7, &tone);
        tx.protect_rtp_vec(&mut p).unwrap();
        frames.push(eth(
            ipv4(17, A, B, 2 + i, 0, &udp(40000, 50000, &p)),
            0x0800,
        ));
    }
    let rtcp = [
        0x80, 200, 0, 6, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    frames.push(eth(
        ipv4(17, A, B, 99, 0, &udp(40001, 50001, &rtcp)),
        0x0800,
    ));
    seeds.push(("seed-sdes-srtp", encode(0x20, &frames)));

    // 2. Plain PCMA found by the heuristic, with loss and a sequence wrap, over raw IP.
    let frames: Vec<Vec<u8>> = (0..12u16)
        .filter(|i| *i != 6)
        .map(|i| {
            ipv4(
                17,
                A,
                B,
                i,
                0,
                &udp(
                    4000,
                    5000,
                    &rtp(8, 65530u16.wrapping_add(i), 160 * i as u32, 9, &tone),
                ),
            )
        })
        .collect();
    seeds.push(("seed-heuristic-pcma-raw", encode(0x21, &frames)));

    // 3. SIP over TCP in two segments with Basic and digest credentials.
    let reg = "REGISTER sip:a SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.1:5060;branch=z9hG4bK2\r\n\
From: <sip:alice@a>;tag=1\r\nTo: <sip:alice@a>\r\nCall-ID: reg-1\r\nCSeq: 2 REGISTER\r\n\
Max-Forwards: 70\r\nAuthorization: Digest username=\"alice\", realm=\"a\", nonce=\"x\", uri=\"sip:a\", response=\"00\"\r\n\
Proxy-Authorization: Basic YWxpY2U6cGFzc3dvcmQ=\r\nContent-Length: 0\r\n\r\n";
    let b = reg.as_bytes();
    let frames = vec![
        eth(
            ipv4(6, A, B, 1, 0x4000, &tcp(5060, 5060, 100, &b[..50])),
            0x0800,
        ),
        eth(
            ipv4(6, A, B, 2, 0x4000, &tcp(5060, 5060, 150, &b[50..])),
            0x0800,
        ),
    ];
    seeds.push(("seed-sip-tcp-credentials", encode(0x00, &frames)));

    // 4. A SIP INVITE with plain SDP in three IPv4 fragments, then its RTP.
    let sdp = "v=0\r\no=- 1 1 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\nm=audio 50000 RTP/AVP 0\r\n";
    let whole = udp(
        5060,
        5060,
        &invite(sdp, "X-Pad: 0123456789012345678901234567890123456789\r\n"),
    );
    let mut frames = Vec::new();
    let chunks: Vec<&[u8]> = whole.chunks(200).collect();
    for (k, c) in chunks.iter().enumerate().rev() {
        let more = if k + 1 < chunks.len() { 0x2000 } else { 0 };
        frames.push(eth(ipv4(17, A, B, 77, more | (k as u16 * 25), c), 0x0800));
    }
    for i in 0..6u16 {
        frames.push(eth(
            ipv4(
                17,
                A,
                B,
                80 + i,
                0,
                &udp(40000, 50000, &rtp(0, i, 160 * i as u32, 3, &[0xff; 160])),
            ),
            0x0800,
        ));
    }
    seeds.push(("seed-fragmented-invite", encode(0x20, &frames)));

    // 5. IPv6 RTP on a Linux cooked v2 (SLL2) link.
    let mut frames = Vec::new();
    for i in 0..6u16 {
        let u = udp(6000, 7000, &rtp(0, i, 160 * i as u32, 11, &tone));
        let mut ip6 = vec![0x60, 0, 0, 0];
        ip6.extend_from_slice(&(u.len() as u16).to_be_bytes());
        ip6.extend_from_slice(&[17, 64]);
        ip6.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        ip6.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        ip6.extend_from_slice(&u);
        let mut sll2 = vec![
            0x86, 0xdd, 0, 0, 0, 0, 0, 1, 0, 1, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0,
        ];
        sll2.extend_from_slice(&ip6);
        frames.push(sll2);
    }
    seeds.push(("seed-ipv6-sll2", encode(0x23, &frames)));

    // 6. Tight limits with many streams: eviction paths.
    let frames: Vec<Vec<u8>> = (0..40u16)
        .map(|i| {
            eth(
                ipv4(
                    17,
                    A,
                    B,
                    i,
                    0,
                    &udp(
                        4000 + i % 5,
                        5000,
                        &rtp(0, i / 5, 160 * (i / 5) as u32, (i % 5) as u32, &tone),
                    ),
                ),
                0x0800,
            )
        })
        .collect();
    seeds.push(("seed-tight-limits", encode(0x28, &frames)));

    for (name, bytes) in &seeds {
        audit_packet(bytes);
        std::fs::write(out.join(name), bytes).unwrap();
    }
}

/// Each seed reaches the path it was made for (else the fuzzer starts from nothing).
#[test]
fn seeds_reach_their_paths() {
    use std::time::Duration;
    use voxgate_audit::fuzzing::frames;
    use voxgate_audit::{net, Auditor, Config};
    let run = |name: &str, link: u32| {
        let bytes = std::fs::read(dir("corpus").join(name)).unwrap();
        let (_, fr) = frames(&bytes).unwrap();
        let mut a = Auditor::new(Config::default());
        for (i, f) in fr.iter().enumerate() {
            a.handle_frame(
                link,
                Duration::from_millis(20 * i as u64),
                f,
                f.len() as u32,
            );
        }
        a.finish()
    };
    let r = run("seed-sdes-srtp", net::link::ETHERNET);
    assert_eq!(r.streams[0].encryption, "srtp-decrypted");
    assert!(r.findings.iter().any(|f| f.kind == "srtp_null_cipher"));
    assert_eq!(r.capture.rtcp_packets, 1);
    let r = run("seed-heuristic-pcma-raw", net::link::RAW);
    assert_eq!(r.streams[0].lost, 1);
    let r = run("seed-sip-tcp-credentials", net::link::ETHERNET);
    assert_eq!(r.sip.messages_tcp, 1);
    let r = run("seed-fragmented-invite", net::link::ETHERNET);
    assert_eq!(r.capture.ip_fragments_reassembled, 1);
    assert_eq!(r.streams[0].found_by, "sdp");
    let r = run("seed-ipv6-sll2", net::link::LINUX_SLL2);
    assert_eq!(r.streams.len(), 1);
    assert!(r.streams[0].src.starts_with("[fe80::1]"));
}
