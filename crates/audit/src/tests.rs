//! Tests of the whole auditor on synthetic frames.

use super::*;
use voxgate_rtp::{CryptoAttribute, SrtpPolicy, SrtpProfile, SrtpSession};

fn udp_frame(src: &str, dst: &str, payload: &[u8]) -> Vec<u8> {
    let s: SocketAddr = src.parse().unwrap();
    let d: SocketAddr = dst.parse().unwrap();
    let (std::net::IpAddr::V4(si), std::net::IpAddr::V4(di)) = (s.ip(), d.ip()) else {
        panic!()
    };
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
    let total = (20 + 8 + payload.len()) as u16;
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&[0, 1, 0, 0, 64, 17, 0, 0]);
    f.extend_from_slice(&si.octets());
    f.extend_from_slice(&di.octets());
    f.extend_from_slice(&s.port().to_be_bytes());
    f.extend_from_slice(&d.port().to_be_bytes());
    f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
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

fn tone(i: usize) -> Vec<i16> {
    (0..160)
        .map(|k| (((i * 160 + k) as f64 * 0.07).sin() * 4000.0) as i16)
        .collect()
}

const A: &str = "10.0.0.1:40000";
const B: &str = "10.0.0.2:50000";

fn feed_tone(a: &mut Auditor, n: usize, skip: &[usize], law: Law) -> Vec<i16> {
    let mut expect = Vec::new();
    for i in 0..n {
        let pcm = tone(i);
        let payload: Vec<u8> = pcm.iter().map(|s| law.encode(*s)).collect();
        if skip.contains(&i) {
            expect.extend(std::iter::repeat_n(0, 160));
            continue;
        }
        expect.extend(pcm.iter().map(|s| law.quantize(*s)));
        let pkt = rtp(
            law.payload_type(),
            1000 + i as u16,
            5000 + 160 * i as u32,
            0xabc,
            &payload,
        );
        let t = Duration::from_millis(20 * i as u64) + Duration::from_micros((i % 3) as u64 * 700);
        a.handle_frame(net::link::ETHERNET, t, &udp_frame(A, B, &pkt), 0);
    }
    expect
}

fn drain(a: &mut Auditor) -> BTreeMap<String, Vec<i16>> {
    let mut out: BTreeMap<String, Vec<i16>> = BTreeMap::new();
    a.drain_audio(|c| {
        out.entry(c.file.to_string())
            .or_default()
            .extend_from_slice(c.samples)
    });
    out
}

#[test]
fn plain_g711_found_heuristically_is_decoded_with_gaps_filled() {
    let mut a = Auditor::new(Config::default());
    let expect = feed_tone(&mut a, 200, &[50, 51, 120], Law::A);
    let mut audio = drain(&mut a);
    let r = a.finish();
    for (k, v) in drain(&mut a) {
        audio.entry(k).or_default().extend(v);
    }
    assert_eq!(r.streams.len(), 1);
    let s = &r.streams[0];
    assert_eq!(s.packets, 197);
    assert_eq!(s.lost, 3);
    assert_eq!(s.sequence_errors, 2);
    assert_eq!(s.found_by, "heuristic");
    assert_eq!(s.encryption, "plain");
    assert_eq!(s.codec, "PCMA");
    assert!(s.max_jitter_ms > 0.0);
    let got = audio.get(&s.audio.as_ref().unwrap().file).unwrap();
    assert_eq!(got.len(), expect.len());
    assert!(got == &expect, "recovered audio differs");
    assert!(r.findings.iter().any(|f| f.kind == "unencrypted_rtp"));
    assert!(r.findings.iter().any(|f| f.kind == "poor_quality"));
    let lost: i64 = s.per_second.iter().map(|p| p.lost).sum();
    assert_eq!(lost, 3);
}

fn sip_invite(sdp: &str) -> String {
    format!(
        "INVITE sip:bob@10.0.0.2 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1\r\n\
From: <sip:alice@a>;tag=1\r\nTo: <sip:bob@b>\r\nCall-ID: call-1\r\nCSeq: 1 INVITE\r\n\
Max-Forwards: 70\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
}

#[test]
fn sdes_keys_in_clear_sip_decrypt_the_srtp() {
    let key: Vec<u8> = (0u8..30).collect();
    let attr = CryptoAttribute::new(1, SrtpProfile::AesCm128HmacSha1_80, &key);
    let sdp = format!(
        "v=0\r\no=- 1 1 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\n\
m=audio 50000 RTP/SAVP 0\r\na=crypto:{}\r\n",
        attr.to_string().trim_start_matches("a=crypto:")
    );
    let mut a = Auditor::new(Config::default());
    let inv = sip_invite(&sdp);
    a.handle_frame(
        net::link::ETHERNET,
        Duration::ZERO,
        &udp_frame("10.0.0.1:5060", "10.0.0.2:5060", inv.as_bytes()),
        0,
    );
    let mut tx = SrtpSession::new(attr.to_policy().unwrap()).unwrap();
    let mut expect = Vec::new();
    for i in 0..50usize {
        let pcm = tone(i);
        expect.extend(pcm.iter().map(|s| Law::Mu.quantize(*s)));
        let payload: Vec<u8> = pcm.iter().map(|s| Law::Mu.encode(*s)).collect();
        let mut p = rtp(0, i as u16, 160 * i as u32, 7, &payload);
        tx.protect_rtp_vec(&mut p).unwrap();
        a.handle_frame(
            net::link::ETHERNET,
            Duration::from_millis(20 * i as u64 + 5),
            &udp_frame(A, B, &p),
            0,
        );
    }
    let audio = drain(&mut a);
    let r = a.finish();
    assert_eq!(r.sip.messages_udp, 1, "{:?}", r.sip);
    let s = &r.streams[0];
    assert_eq!(s.found_by, "sdp");
    assert_eq!(s.encryption, "srtp-decrypted");
    assert_eq!(s.srtp.as_ref().unwrap().authenticated, 50);
    assert_eq!(audio.values().next().unwrap(), &expect);
    let f = r
        .findings
        .iter()
        .find(|f| f.kind == "sdes_keys_in_clear")
        .expect("finding");
    assert_eq!(f.severity, Severity::Critical);
    assert_eq!(f.evidence["packets_authenticated"], 50);
    assert!(r.findings.iter().any(|f| f.kind == "sip_without_tls"));
    assert!(!r.findings.iter().any(|f| f.kind == "unencrypted_rtp"));
    // The report never carries key material.
    let json = serde_json::to_string(&r).unwrap();
    assert!(!json.contains(attr.to_string().split("inline:").nth(1).unwrap().trim()));
    let _ = SrtpPolicy::new; // the policy type is part of the API the test relies on
}

#[test]
fn random_payload_without_signalling_is_srtp_and_not_decoded() {
    let mut a = Auditor::new(Config::default());
    let mut x = 0x9e3779b9u32;
    for i in 0..100u16 {
        let payload: Vec<u8> = (0..170)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        let p = rtp(0, i, 160 * i as u32, 9, &payload);
        a.handle_frame(
            net::link::ETHERNET,
            Duration::from_millis(20 * i as u64),
            &udp_frame(A, B, &p),
            0,
        );
    }
    let audio = drain(&mut a);
    let r = a.finish();
    assert!(audio.is_empty());
    assert_eq!(r.streams[0].encryption, "srtp");
    assert_eq!(r.streams[0].packets, 100);
}

#[test]
fn sip_over_tcp_with_basic_and_digest_credentials() {
    let mut a = Auditor::new(Config::default());
    let m = "REGISTER sip:a SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.1:5060;branch=z9hG4bK2\r\n\
From: <sip:alice@a>;tag=1\r\nTo: <sip:alice@a>\r\nCall-ID: reg-1\r\nCSeq: 2 REGISTER\r\n\
Max-Forwards: 70\r\nAuthorization: Digest username=\"alice\", realm=\"a\", nonce=\"x\", uri=\"sip:a\", response=\"00\"\r\n\
Proxy-Authorization: Basic YWxpY2U6cGFzc3dvcmQ=\r\nContent-Length: 0\r\n\r\n";
    let mut seg = |seq: u32, data: &[u8]| {
        let mut tcp = vec![0x13, 0xc4, 0x13, 0xc4];
        tcp.extend_from_slice(&seq.to_be_bytes());
        tcp.extend_from_slice(&[0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
        tcp.extend_from_slice(data);
        let mut ip = vec![0x45, 0];
        ip.extend_from_slice(&((20 + tcp.len()) as u16).to_be_bytes());
        ip.extend_from_slice(&[0, 1, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
        ip.extend_from_slice(&tcp);
        a.handle_frame(net::link::RAW, Duration::ZERO, &ip, 0);
    };
    let b = m.as_bytes();
    seg(100, &b[..40]);
    seg(140, &b[40..]);
    let r = a.finish();
    assert_eq!(r.sip.messages_tcp, 1);
    assert!(r
        .findings
        .iter()
        .any(|f| f.kind == "sip_basic_auth" && f.severity == Severity::High));
    assert!(r.findings.iter().any(|f| f.kind == "sip_digest_md5"));
    let json = serde_json::to_string(&r).unwrap();
    assert!(!json.contains("password\""), "{json}");
}

#[test]
fn one_way_delay_between_two_capture_points() {
    let mut a = Auditor::new(Config::default());
    for i in 0..50u16 {
        let p = rtp(0, i, 160 * i as u32, 5, &[0xff; 160]);
        let t = Duration::from_millis(20 * i as u64);
        a.handle_frame(
            net::link::ETHERNET,
            t,
            &udp_frame(A, "10.0.0.9:7000", &p),
            0,
        );
        a.handle_frame(
            net::link::ETHERNET,
            t + Duration::from_millis(35),
            &udp_frame("10.0.0.9:7002", B, &p),
            0,
        );
    }
    let r = a.finish();
    let d = r.streams[1].one_way_delay.as_ref().expect("delay");
    assert!((d.mean_ms - 35.0).abs() < 1e-6, "{d:?}");
    assert_eq!(d.reference_stream, 0);
}

#[test]
fn garbage_frames_are_counted_never_panic() {
    let mut a = Auditor::new(Config::default());
    let mut x = 1u32;
    for n in 0..2000usize {
        let len = n % 300;
        let mut f: Vec<u8> = (0..len)
            .map(|_| {
                x = x.wrapping_mul(1103515245).wrapping_add(12345);
                (x >> 16) as u8
            })
            .collect();
        if len > 14 && n % 2 == 0 {
            f[12] = 0x08;
            f[13] = 0;
            f[14] = 0x45;
        }
        a.handle_frame(
            (n % 5) as u32 * 50,
            Duration::from_millis(n as u64),
            &f,
            len as u32 + 3,
        );
    }
    let r = a.finish();
    assert!(r.skipped.values().sum::<u64>() > 0);
    let _ = html::render(&r);
}
