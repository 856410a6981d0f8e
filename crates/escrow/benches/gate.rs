//! Per-datagram cost of the SPG's gate (`MediaGate::check`) on one core: carrier session_ID in,
//! session lookup among many live calls, 5-tuple/SSRC check, and SRTP tag verification with the
//! escrowed key on a copy of the packet; every packet, one in 16 after the first 10, or none
//! after the first (lookup and tuple check only).
//!
//! `cargo bench -p voxgate-escrow --bench gate` (env `VOXGATE_BENCH_CALLS`, default 2000 calls,
//! 100 packets each, interleaved; 172-byte RTP packets, AES_CM_128_HMAC_SHA1_80 and
//! AEAD_AES_128_GCM). Each figure is the median of 5 runs. Under `cargo test --benches` it runs
//! a small smoke pass.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use voxgate_escrow::gate::{MediaGate, Mode, Sampling, Verdict};
use voxgate_escrow::server::Session;
use voxgate_escrow::wire::{Addr, Direction, Secret, StreamKey};
use voxgate_rtp::{MasterKey, SrtpPolicy, SrtpProfile, SrtpSession};
use zeroize::Zeroizing;

struct Packet {
    src: SocketAddr,
    dst: SocketAddr,
    id: u64,
    bytes: Vec<u8>,
}

fn build(profile: SrtpProfile, calls: usize, per_call: usize) -> (Vec<Session>, Vec<Packet>) {
    let mut sessions = Vec::new();
    let mut per = Vec::new();
    for c in 0..calls {
        let key: Vec<u8> = (0..profile.key_len() + profile.salt_len())
            .map(|i| (i * 7 + c) as u8)
            .collect();
        let src = SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(10, 0, (c >> 8) as u8, c as u8)),
            40000,
        );
        let dst = SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(10, 1, 0, 1)),
            50000 + (c % 10000) as u16,
        );
        let id = 0x1000_0000_0000_0000 + c as u64;
        let ssrc = 0xabc0_0000 + c as u32;
        sessions.push(Session {
            id,
            gateway: "gw".into(),
            call_id: format!("c{c}"),
            streams: vec![StreamKey {
                direction: Direction::Send,
                src: Addr(src),
                dst: Addr(dst),
                ssrc: Some(ssrc),
                suite: profile.name().into(),
                master: Secret(Zeroizing::new(key.clone())),
                mki: None,
            }],
            generation: 0,
            created_ms: 0,
        });
        let (k, s) = key.split_at(profile.key_len());
        let mut tx =
            SrtpSession::new(SrtpPolicy::new(MasterKey::new(profile, k, s).unwrap())).unwrap();
        let mut pkts = Vec::new();
        for seq in 0..per_call {
            let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
            p[2..4].copy_from_slice(&(seq as u16).to_be_bytes());
            p[4..8].copy_from_slice(&((seq * 160) as u32).to_be_bytes());
            p[8..12].copy_from_slice(&ssrc.to_be_bytes());
            p.extend_from_slice(&[0x5a; 160]);
            tx.protect_rtp_vec(&mut p).unwrap();
            pkts.push(Packet {
                src,
                dst,
                id,
                bytes: p,
            });
        }
        per.push(pkts);
    }
    // Interleave the calls as a relay sees them.
    let mut iters: Vec<_> = per.into_iter().map(|v| v.into_iter()).collect();
    let mut all = Vec::with_capacity(calls * per_call);
    for _ in 0..per_call {
        for it in iters.iter_mut() {
            if let Some(p) = it.next() {
                all.push(p);
            }
        }
    }
    (sessions, all)
}

fn run(sessions: &[Session], packets: &[Packet], sampling: Sampling) -> f64 {
    let mut g = MediaGate::new(Mode::Global, sampling);
    for s in sessions {
        g.arm(s).unwrap();
    }
    let t = Instant::now();
    let mut ok = 0usize;
    for p in packets {
        if let Verdict::Forward { .. } =
            g.check(p.src, p.dst, Ok(Some(p.id)), std::hint::black_box(&p.bytes))
        {
            ok += 1;
        }
    }
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(ok, packets.len(), "every packet verifies");
    packets.len() as f64 / secs
}

fn main() {
    let smoke = !std::env::args().any(|a| a == "--bench");
    let calls: usize = std::env::var("VOXGATE_BENCH_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if smoke { 20 } else { 2000 });
    let per_call = if smoke { 20 } else { 100 };
    let runs = if smoke { 1 } else { 5 };
    println!("gate: {calls} calls x {per_call} packets of 172 bytes, interleaved; median of {runs} runs; one core");
    println!(
        "{:<26} {:>14} {:>14} {:>14}",
        "suite", "every packet", "1 in 16", "lookup only"
    );
    for profile in [SrtpProfile::AesCm128HmacSha1_80, SrtpProfile::AeadAes128Gcm] {
        let (sessions, packets) = build(profile, calls, per_call);
        let mut cols = Vec::new();
        for sampling in [
            Sampling::EVERY_PACKET,
            Sampling {
                first: 10,
                one_in: 16,
            },
            Sampling {
                first: 1,
                one_in: u64::MAX,
            },
        ] {
            let mut v: Vec<f64> = (0..runs)
                .map(|_| run(&sessions, &packets, sampling))
                .collect();
            v.sort_by(|a, b| a.total_cmp(b));
            cols.push(v[v.len() / 2]);
        }
        println!(
            "{:<26} {:>12.0}/s {:>12.0}/s {:>12.0}/s",
            profile.name(),
            cols[0],
            cols[1],
            cols[2]
        );
    }
}
