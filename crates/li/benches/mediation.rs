//! The lawful-interception mediation on one core, fed from memory: many concurrent intercepted
//! calls decrypted in real time by `voxgate_li::mediation::Mediation`.
//!
//! World (as `tests/li_flow.rs` builds it): one warrant on `gateway:gw1.a.example`, approved
//! by two officers, so that it matches every call; `--calls N` calls (default 10,000), each
//! with a PoiEvent::Attempt through that gateway and a PoiEvent::KeyUpdate carrying one sealed
//! session (`voxgate_keystore::seal_session`, HPKE to the authority) of two streams (Send and
//! Receive); per stream `--packets P` (default 50, 1 s of a 20 ms G.711 call) 172-byte RTP
//! packets (12-byte header + 160 bytes of mu-law, PT 0) protected beforehand and interleaved as
//! they would arrive: packet k of the Send stream of calls 0..N, then packet k of their Receive
//! streams, then packet k+1 ...
//!
//! Stages, each timed by the measuring thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`, the machine
//! is shared) with the wall clock beside it; each figure is the median of `--runs` runs (default
//! 5), the stages of one run back to back so that they share the machine's noise:
//!
//! - `unseal`: `voxgate_keystore::open_session` alone on the N sealed records (HPKE open and
//!   CBOR decode of one session = 2 stream keys).
//! - `attempt`, `key_update`: `Mediation::handle_event` for the N attempts, then the N
//!   key_updates, outputs drained. The mediation unseals a session's keys when its key_update
//!   arrives for a call under a content warrant (not at the first packet), so `key_update`
//!   includes the unseal, two SRTP contexts, the audit entries (Ed25519-signed) and the IRI
//!   record (X2).
//! - `mediation`: after an untimed warm-up pass over the first packet of every stream (it sets
//!   the call's media origin and the stream's anchor), the other P - 1 packets of every stream
//!   through `handle_content` and the outputs drained after each: every `Output::Pcm` written
//!   into a per-(call, direction) buffer (a ring of 8 frames, where a WAV writer's buffer would
//!   be), every `Output::Content` (the X3 PDU for the agency) counted. Steady state. Checked:
//!   no error, one PCM output and one X3 PDU per packet, the last frames' audio.
//! - `srtp`: the same packets in the same order through 2N fresh `SrtpSession`s of
//!   voxgate-rtp (same policy as the mediation's), copy into a scratch buffer + `unprotect_rtp`:
//!   the floor of the pipeline.
//! - `srtp+g711`: `srtp` plus the G.711 decode (a 256-entry table) written straight into the
//!   same rings: the pipeline with no mediation bookkeeping, outputs or allocations.
//!
//! Also printed: the heap the mediation holds for its calls after the warm-up, and that of the
//! SRTP contexts alone (glibc `mallinfo2`), against the L3 size.
//!
//! Accounting: a G.711 call with 20 ms frames is 50 packets/s per direction, 100 for both;
//! the report gives the rate as packets/s, one-direction streams (pps / 50: the issue's
//! "10,000 calls, i.e. 500,000 packets/s") and two-way calls (pps / 100).
//!
//! `cargo bench -p voxgate-li --bench mediation [-- --calls N --packets P --runs R
//! --suite cm|gcm|all --stages unseal,events,mediation,srtp,g711]`; `bench/li/run.sh` pins it
//! to one core. Under `cargo test --benches` (no `--bench` argument) it runs a small smoke
//! pass.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use voxgate_escrow::seal::AuthorityKeyPair;
use voxgate_escrow::server::Session;
use voxgate_escrow::wire::{Addr, Direction, Secret, StreamKey};
use voxgate_keystore::{open_session, seal_session, StoredSession};
use voxgate_li::audit::{AuditLog, NodeKey};
use voxgate_li::iri::PoiEvent;
use voxgate_li::mediation::{Mediation, Output, TargetDirection};
use voxgate_li::warrant::{Delivery, WarrantBook, WarrantRequest};
use voxgate_rtp::g711::Law;
use voxgate_rtp::{MasterKey, SrtpPolicy, SrtpProfile, SrtpSession};
use zeroize::Zeroizing;

const HDR_LEN: usize = 12;
const PAYLOAD_LEN: usize = 160;
const RTP_LEN: usize = HDR_LEN + PAYLOAD_LEN;
/// Bytes per pre-protected packet slot (172 + tag, rounded to cache lines).
const STRIDE: usize = 192;
/// Samples kept per (call, direction): 8 frames of 20 ms.
const RING: usize = 8 * PAYLOAD_LEN;
const T0: u64 = 1_800_000_000_000;
const T_ATTEMPT: u64 = T0 + 1_000;
const T_KEYS: u64 = T0 + 2_000;
const T_MEDIA: u64 = T0 + 3_000;
const POI: &str = "spg-a";
const GATEWAY: &str = "gw1.a.example";
const CORR_BASE: u64 = 0x5000_0000_0000_0000;
const LIID: &str = "LIID-MASS";

/// `struct timespec` of 64-bit Linux.
#[repr(C)]
struct Timespec {
    tv_sec: i64,
    tv_nsec: i64,
}

/// Linux's clock id (uapi/linux/time.h).
const CLOCK_THREAD_CPUTIME_ID: i32 = 3;

extern "C" {
    // From the C library std links anyway (no `libc` crate needed for one call).
    fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
}

/// CPU time of the calling thread: the machine is shared, and the wall clock would also count
/// the time other processes hold the core.
fn cpu_now() -> f64 {
    let mut ts = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    let rc = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// One timed stage of one run.
#[derive(Clone, Copy)]
struct Run {
    ops: u64,
    cpu: f64,
    wall: f64,
}

struct Timer {
    cpu: f64,
    wall: Instant,
}

impl Timer {
    fn start() -> Timer {
        Timer {
            cpu: cpu_now(),
            wall: Instant::now(),
        }
    }

    fn stop(self, ops: u64) -> Run {
        let cpu = cpu_now() - self.cpu;
        Run {
            ops,
            cpu,
            wall: self.wall.elapsed().as_secs_f64(),
        }
    }
}

struct Cfg {
    calls: usize,
    packets: usize,
    runs: usize,
    suites: Vec<SrtpProfile>,
    unseal: bool,
    events: bool,
    mediation: bool,
    srtp: bool,
    g711: bool,
}

fn usage() -> ! {
    eprintln!(
        "usage: mediation [--calls N] [--packets P] [--runs R] [--suite cm|gcm|all] \
         [--stages unseal,events,mediation,srtp,g711]"
    );
    std::process::exit(2)
}

fn parse_args() -> Cfg {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let smoke = !args.iter().any(|a| a == "--bench");
    let mut cfg = Cfg {
        calls: if smoke { 20 } else { 10_000 },
        packets: if smoke { 5 } else { 50 },
        runs: if smoke { 1 } else { 5 },
        suites: vec![SrtpProfile::AesCm128HmacSha1_80, SrtpProfile::AeadAes128Gcm],
        unseal: true,
        events: true,
        mediation: true,
        srtp: true,
        g711: true,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().cloned().unwrap_or_else(|| usage());
        match a.as_str() {
            "--bench" => {}
            "--calls" => cfg.calls = val().parse().unwrap_or_else(|_| usage()),
            "--packets" => cfg.packets = val().parse().unwrap_or_else(|_| usage()),
            "--runs" => cfg.runs = val().parse().unwrap_or_else(|_| usage()),
            "--suite" => {
                cfg.suites = match val().as_str() {
                    "cm" => vec![SrtpProfile::AesCm128HmacSha1_80],
                    "gcm" => vec![SrtpProfile::AeadAes128Gcm],
                    "all" => cfg.suites.clone(),
                    _ => usage(),
                }
            }
            "--stages" => {
                let v = val();
                let has = |s: &str| v.split(',').any(|x| x == s);
                cfg.unseal = has("unseal");
                cfg.events = has("events");
                cfg.mediation = has("mediation");
                cfg.srtp = has("srtp");
                cfg.g711 = has("g711");
            }
            "--help" | "-h" => usage(),
            // libtest-style flags cargo may pass (e.g. under `cargo test --benches`).
            s if s.starts_with("--") => {}
            _ => usage(),
        }
    }
    if cfg.calls == 0 || cfg.packets < 2 || cfg.runs == 0 {
        usage();
    }
    if cfg.calls > voxgate_li::mediation::MAX_CALLS {
        eprintln!(
            "--calls: at most {} (Mediation's MAX_CALLS)",
            voxgate_li::mediation::MAX_CALLS
        );
        std::process::exit(2);
    }
    cfg
}

// -----------------------------------------------------------------------------------------
// The fixture: sealed sessions and protected packets, built once per suite.

fn corr(c: usize) -> u64 {
    CORR_BASE + c as u64
}

/// The gateway's and the SPG's addresses of call `c`; direction 0 (Send) goes gateway -> SPG.
fn tuple(c: usize, d: usize) -> (SocketAddr, SocketAddr) {
    let gw = SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(10, (c >> 16) as u8, (c >> 8) as u8, c as u8)),
        30_000,
    );
    let spg = SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        20_000 + (c % 40_000) as u16,
    );
    if d == 0 {
        (gw, spg)
    } else {
        (spg, gw)
    }
}

fn master(profile: SrtpProfile, c: usize, d: usize) -> Vec<u8> {
    (0..profile.key_len() + profile.salt_len())
        .map(|i| (i * 13 + c * 7 + d * 101) as u8 ^ (c >> 8) as u8)
        .collect()
}

fn ssrc(c: usize, d: usize) -> u32 {
    0x1000_0000 + (2 * c + d) as u32
}

/// The mu-law payload of packet k of stream (c, d).
fn payload(c: usize, d: usize, k: usize, out: &mut [u8]) {
    let mut x = (c as u32)
        .wrapping_mul(0x9E37_79B9)
        .wrapping_add((d as u32) << 28)
        .wrapping_add((k as u32).wrapping_mul(0x85EB_CA6B));
    for b in out.iter_mut() {
        x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        *b = (x >> 24) as u8;
    }
}

struct Fixture {
    profile: SrtpProfile,
    calls: usize,
    packets: usize,
    /// Per call: the sealed session as a KeyUpdate carries it (base64), and as stored.
    sealed_b64: Vec<String>,
    records: Vec<StoredSession>,
    /// Packet i = (k * 2 + d) * calls + c, at i * STRIDE.
    bytes: Vec<u8>,
    len: usize,
}

impl Fixture {
    fn packet(&self, i: usize) -> &[u8] {
        &self.bytes[i * STRIDE..i * STRIDE + self.len]
    }

    fn build(profile: SrtpProfile, calls: usize, packets: usize, a: &AuthorityKeyPair) -> Self {
        let len = RTP_LEN + profile.srtp_tag_len();
        assert!(len <= STRIDE);
        let mut sealed_b64 = Vec::with_capacity(calls);
        let mut records = Vec::with_capacity(calls);
        let mut bytes = vec![0u8; 2 * calls * packets * STRIDE];
        let mut pkt = Vec::with_capacity(STRIDE);
        for c in 0..calls {
            let key = |d: usize| {
                let (src, dst) = tuple(c, d);
                StreamKey {
                    direction: if d == 0 {
                        Direction::Send
                    } else {
                        Direction::Receive
                    },
                    src: Addr(src),
                    dst: Addr(dst),
                    ssrc: Some(ssrc(c, d)),
                    suite: profile.name().into(),
                    master: Secret(Zeroizing::new(master(profile, c, d))),
                    mki: None,
                }
            };
            let s = Session {
                id: 0x7000_0000_0000_0000 + c as u64,
                gateway: GATEWAY.into(),
                call_id: format!("call-{c}"),
                streams: vec![key(0), key(1)],
                generation: 0,
                created_ms: T_KEYS,
            };
            let rec = seal_session(a.public(), &s).expect("seal_session");
            sealed_b64.push(B64.encode(&rec.sealed));
            records.push(rec);
            for d in 0..2 {
                let m = master(profile, c, d);
                let (k, salt) = m.split_at(profile.key_len());
                let mk = MasterKey::new(profile, k, salt).expect("master key");
                let mut tx = SrtpSession::new(SrtpPolicy::new(mk)).expect("srtp");
                let seq0 = (c * 7 + d * 3000) as u16;
                let ts0 = (c as u32).wrapping_mul(1000).wrapping_add(d as u32);
                for k in 0..packets {
                    pkt.clear();
                    pkt.extend_from_slice(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
                    pkt[2..4].copy_from_slice(&seq0.wrapping_add(k as u16).to_be_bytes());
                    pkt[4..8].copy_from_slice(&ts0.wrapping_add(160 * k as u32).to_be_bytes());
                    pkt[8..12].copy_from_slice(&ssrc(c, d).to_be_bytes());
                    pkt.resize(RTP_LEN, 0);
                    payload(c, d, k, &mut pkt[HDR_LEN..]);
                    tx.protect_rtp_vec(&mut pkt).expect("protect");
                    assert_eq!(pkt.len(), len);
                    let i = (k * 2 + d) * calls + c;
                    bytes[i * STRIDE..i * STRIDE + len].copy_from_slice(&pkt);
                }
            }
        }
        Fixture {
            profile,
            calls,
            packets,
            sealed_b64,
            records,
            bytes,
            len,
        }
    }

    fn time_ms(k: usize) -> u64 {
        T_MEDIA + 20 * k as u64
    }
}

/// Per-(call, direction) rings of decoded samples: where the audio is "written".
struct Rings(Vec<i16>);

impl Rings {
    fn new(calls: usize) -> Rings {
        // Non-zero so that every page is written (faulted in) here, not in a timed stage.
        Rings(vec![1; 2 * calls * RING])
    }

    #[inline]
    fn write(&mut self, stream: usize, at: u64, samples: &[i16]) {
        let ring = &mut self.0[stream * RING..(stream + 1) * RING];
        let mut at = (at % RING as u64) as usize;
        let mut s = samples;
        while !s.is_empty() {
            let n = s.len().min(RING - at);
            ring[at..at + n].copy_from_slice(&s[..n]);
            s = &s[n..];
            at = 0;
        }
    }

    /// G.711 decode straight into the ring, through a 256-entry table (`table[c] ==
    /// law.decode(c)`).
    #[inline]
    fn decode_into(&mut self, stream: usize, at: u64, table: &[i16; 256], codes: &[u8]) {
        let ring = &mut self.0[stream * RING..(stream + 1) * RING];
        let mut at = (at % RING as u64) as usize;
        let mut c = codes;
        while !c.is_empty() {
            let n = c.len().min(RING - at);
            for (o, x) in ring[at..at + n].iter_mut().zip(&c[..n]) {
                *o = table[usize::from(*x)];
            }
            c = &c[n..];
            at = 0;
        }
    }

    /// The last frame of a few streams holds the decoded payload of their last packet.
    fn check(&self, fx: &Fixture, what: &str) {
        let k = fx.packets - 1;
        let mut code = [0u8; PAYLOAD_LEN];
        for c in [0, fx.calls / 2, fx.calls - 1] {
            for d in 0..2 {
                payload(c, d, k, &mut code);
                let at = (160 * k) % RING;
                let stream = 2 * c + d;
                let got = &self.0[stream * RING + at..stream * RING + at + PAYLOAD_LEN];
                let want: Vec<i16> = code.iter().map(|x| Law::Mu.decode(*x)).collect();
                assert_eq!(got, &want[..], "{what}: audio of call {c} direction {d}");
            }
        }
    }
}

// -----------------------------------------------------------------------------------------
// The stages

fn unseal_stage(fx: &Fixture, a: &AuthorityKeyPair) -> Run {
    let t = Timer::start();
    let mut streams = 0usize;
    for r in &fx.records {
        let keys = open_session(a, black_box(r)).expect("open_session");
        streams += keys.len();
        black_box(&keys);
    }
    let run = t.stop(fx.records.len() as u64);
    assert_eq!(streams, 2 * fx.calls);
    run
}

#[derive(Default)]
struct Sink {
    pcm: u64,
    content: u64,
    content_bytes: u64,
    other: u64,
}

impl Sink {
    #[inline]
    fn drain(&mut self, med: &mut Mediation, rings: &mut Rings) {
        while let Some(o) = med.poll_output() {
            match o {
                Output::Pcm {
                    correlation,
                    direction,
                    at_sample,
                    samples,
                    ..
                } => {
                    let c = correlation.wrapping_sub(CORR_BASE) as usize;
                    let d = match direction {
                        TargetDirection::FromTarget => 0,
                        TargetDirection::ToTarget => 1,
                    };
                    rings.write(2 * c + d, at_sample, &samples);
                    self.pcm += 1;
                }
                Output::Content { pdu, .. } => {
                    self.content += 1;
                    self.content_bytes += black_box(&pdu).len() as u64;
                }
                o => {
                    black_box(&o);
                    self.other += 1;
                }
            }
        }
    }
}

fn new_mediation(a: &AuthorityKeyPair) -> Mediation {
    let (key, _) = NodeKey::generate().expect("node key");
    let mut med = Mediation::new(
        "li-1",
        WarrantBook::new(vec!["agency-1".into()]),
        AuthorityKeyPair::from_secret_bytes(a.secret_bytes()),
        AuditLog::new("li-1", key),
    );
    let req = WarrantRequest {
        liid: LIID.into(),
        targets: vec![format!("gateway:{GATEWAY}")],
        start_ms: T0,
        end_ms: T0 + 3_600_000,
        delivery: Delivery::IriAndContent,
        destination: "agency-1".into(),
    };
    med.create_warrant(T0, "officer-1", req).expect("warrant");
    med.approve_warrant(T0, "officer-2", LIID).expect("approve");
    med.approve_warrant(T0, "officer-3", LIID).expect("approve");
    while med.poll_output().is_some() {}
    med
}

struct MediationRuns {
    attempt: Run,
    key_update: Run,
    steady: Run,
    /// Heap bytes the mediation holds for its calls after the warm-up.
    state_bytes: u64,
}

/// glibc's `struct mallinfo2`.
#[repr(C)]
struct MallInfo2 {
    arena: usize,
    ordblks: usize,
    smblks: usize,
    hblks: usize,
    hblkhd: usize,
    usmblks: usize,
    fsmblks: usize,
    uordblks: usize,
    fordblks: usize,
    keepcost: usize,
}

extern "C" {
    fn mallinfo2() -> MallInfo2;
}

/// Bytes allocated and not freed (glibc malloc: small chunks plus mmapped ones).
fn heap_in_use() -> u64 {
    // SAFETY: mallinfo2 takes no arguments and returns a plain struct.
    let m = unsafe { mallinfo2() };
    (m.uordblks + m.hblkhd) as u64
}

fn mediation_stage(fx: &Fixture, a: &AuthorityKeyPair, rings: &mut Rings) -> MediationRuns {
    let n = fx.calls;
    let heap0 = heap_in_use();
    let mut med = new_mediation(a);
    let mut sink = Sink::default();
    let attempts: Vec<PoiEvent> = (0..n)
        .map(|c| PoiEvent::Attempt {
            call_id: format!("call-{c}"),
            time_ms: T_ATTEMPT,
            from_uri: format!("<sip:user{c}@a.example>;tag={c}"),
            to_uri: format!("sip:peer{c}@b.example"),
            request_uri: format!("sip:peer{c}@b.example"),
            caller_peer: Some(GATEWAY.into()),
            callee_peer: Some("gw1.b.example".into()),
        })
        .collect();
    let key_updates: Vec<PoiEvent> = (0..n)
        .map(|c| PoiEvent::KeyUpdate {
            call_id: format!("call-{c}"),
            time_ms: T_KEYS,
            session_id: format!("{:016x}", fx.records[c].session_id),
            gateway: GATEWAY.into(),
            generation: 0,
            created_ms: T_KEYS,
            sealed: fx.sealed_b64[c].clone(),
        })
        .collect();

    let t = Timer::start();
    for (c, ev) in attempts.into_iter().enumerate() {
        med.handle_event(T_ATTEMPT, POI, corr(c), ev)
            .expect("attempt");
        sink.drain(&mut med, rings);
    }
    let attempt = t.stop(n as u64);
    assert_eq!(med.calls(), n);

    let t = Timer::start();
    for (c, ev) in key_updates.into_iter().enumerate() {
        med.handle_event(T_KEYS, POI, corr(c), ev)
            .expect("key_update");
        sink.drain(&mut med, rings);
    }
    let key_update = t.stop(n as u64);
    assert_eq!(med.stats().unseals, n as u64, "one unseal per session");
    assert_eq!(med.stats().unseal_failures, 0);

    // Warm-up (untimed): the first packet of every stream.
    let feed = |med: &mut Mediation, i: usize| {
        let k = i / (2 * n);
        let d = (i / n) % 2;
        let c = i % n;
        let (src, dst) = tuple(c, d);
        let now = Fixture::time_ms(k);
        med.handle_content(now, POI, corr(c), now, src, dst, fx.packet(i))
    };
    for i in 0..2 * n {
        feed(&mut med, i).expect("content");
        sink.drain(&mut med, rings);
    }
    let state_bytes = heap_in_use().saturating_sub(heap0);
    let before = (sink.pcm, sink.content);
    let total = 2 * n * fx.packets;
    let mut errors = 0u64;
    let t = Timer::start();
    for i in 2 * n..total {
        if feed(&mut med, i).is_err() {
            errors += 1;
        }
        sink.drain(&mut med, rings);
    }
    let steady = t.stop((total - 2 * n) as u64);
    assert_eq!(errors, 0, "every packet decrypts");
    assert_eq!(sink.pcm, total as u64, "one PCM output per packet");
    assert_eq!(sink.content, total as u64, "one X3 PDU per packet");
    assert!(sink.pcm - before.0 == steady.ops && sink.content - before.1 == steady.ops);
    assert_eq!(med.stats().content_packets, total as u64);
    black_box(sink.content_bytes);
    rings.check(fx, "mediation");
    // Tear-down (dropping 10,000 calls, wiping their keys) is not timed.
    drop(med);
    MediationRuns {
        attempt,
        key_update,
        steady,
        state_bytes,
    }
}

/// Raw SRTP unprotect (and, with `rings`, G.711 decode into them) of the same packets in the
/// same order with 2N contexts, as the mediation holds them.
fn srtp_stage(fx: &Fixture, mut rings: Option<&mut Rings>) -> (Run, u64) {
    let n = fx.calls;
    let heap0 = heap_in_use();
    let mut sessions: Vec<SrtpSession> = (0..2 * n)
        .map(|s| {
            let m = master(fx.profile, s / 2, s % 2);
            let (k, salt) = m.split_at(fx.profile.key_len());
            SrtpSession::new(SrtpPolicy::new(
                MasterKey::new(fx.profile, k, salt).expect("key"),
            ))
            .expect("srtp")
        })
        .collect();
    let mut anchors = vec![0u32; 2 * n];
    let tables: [[i16; 256]; 2] = [
        std::array::from_fn(|c| Law::Mu.decode(c as u8)),
        std::array::from_fn(|c| Law::A.decode(c as u8)),
    ];
    let mut scratch = Vec::with_capacity(2048);
    let mut one = |i: usize, sessions: &mut [SrtpSession], rings: &mut Option<&mut Rings>| {
        let d = (i / n) % 2;
        let c = i % n;
        let s = 2 * c + d;
        scratch.clear();
        scratch.extend_from_slice(fx.packet(i));
        let len = scratch.len();
        let Ok(m) = sessions[s].unprotect_rtp(&mut scratch, len) else {
            return false;
        };
        if let Some(r) = rings.as_deref_mut() {
            let ts = u32::from_be_bytes([scratch[4], scratch[5], scratch[6], scratch[7]]);
            if i < 2 * n {
                anchors[s] = ts;
            }
            let at = u64::from(ts.wrapping_sub(anchors[s]));
            let table = match Law::from_payload_type(scratch[1] & 0x7f) {
                Some(Law::A) => &tables[1],
                _ => &tables[0],
            };
            r.decode_into(s, at, table, &scratch[HDR_LEN..m]);
        } else {
            black_box(&scratch[..m]);
        }
        true
    };
    for i in 0..2 * n {
        assert!(one(i, &mut sessions, &mut rings));
    }
    let state_bytes = heap_in_use().saturating_sub(heap0);
    let total = 2 * n * fx.packets;
    let mut ok = 0u64;
    let t = Timer::start();
    for i in 2 * n..total {
        ok += u64::from(one(i, &mut sessions, &mut rings));
    }
    let run = t.stop((total - 2 * n) as u64);
    assert_eq!(ok, run.ops, "every packet decrypts");
    if let Some(r) = rings {
        r.check(fx, "srtp+g711");
    }
    (run, state_bytes)
}

// -----------------------------------------------------------------------------------------
// Report

struct Summary {
    rate: f64,
    min: f64,
    max: f64,
    wall_rate: f64,
    share: f64,
}

fn summarize(runs: &[Run]) -> Summary {
    let mut r: Vec<f64> = runs.iter().map(|r| r.ops as f64 / r.cpu).collect();
    r.sort_by(|a, b| a.total_cmp(b));
    let mut w: Vec<f64> = runs.iter().map(|r| r.ops as f64 / r.wall).collect();
    w.sort_by(|a, b| a.total_cmp(b));
    let mut s: Vec<f64> = runs.iter().map(|r| (r.cpu / r.wall).min(1.0)).collect();
    s.sort_by(|a, b| a.total_cmp(b));
    Summary {
        rate: r[r.len() / 2],
        min: r[0],
        max: r[r.len() - 1],
        wall_rate: w[w.len() / 2],
        share: s[0],
    }
}

fn proc_field(file: &str, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
}

/// The L3 size in MiB, from sysfs.
fn l3_mib() -> Option<u64> {
    let s = std::fs::read_to_string("/sys/devices/system/cpu/cpu0/cache/index3/size").ok()?;
    let s = s.trim();
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = n.parse().ok()?;
    Some(match unit {
        "K" => n >> 10,
        "M" => n,
        _ => return None,
    })
}

fn main() {
    let cfg = parse_args();
    let a = AuthorityKeyPair::generate().expect("authority key");
    println!(
        "# li mediation bench: {} calls x 2 streams x {} packets of {} bytes RTP (G.711 mu-law \
         20 ms), interleaved; median of {} runs, timed by thread CPU time",
        cfg.calls, cfg.packets, RTP_LEN, cfg.runs
    );
    println!(
        "# cpu: {}; allowed cpus: {}; load average: {}",
        proc_field("/proc/cpuinfo", "model name").unwrap_or_else(|| "?".into()),
        proc_field("/proc/self/status", "Cpus_allowed_list").unwrap_or_else(|| "?".into()),
        std::fs::read_to_string("/proc/loadavg")
            .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    );
    let mut table: Vec<(String, &'static str, Summary, &'static str)> = Vec::new();
    let mut verdicts = Vec::new();
    for &profile in &cfg.suites {
        let t = Instant::now();
        let fx = Fixture::build(profile, cfg.calls, cfg.packets, &a);
        println!(
            "# {}: fixture built in {:.1} s ({} MB of packets)",
            profile.name(),
            t.elapsed().as_secs_f64(),
            fx.bytes.len() >> 20
        );
        let mut rings = Rings::new(cfg.calls);
        let mut unseal = Vec::new();
        let mut attempt = Vec::new();
        let mut key_update = Vec::new();
        let mut steady = Vec::new();
        let mut srtp = Vec::new();
        let mut g711 = Vec::new();
        for _ in 0..cfg.runs {
            if cfg.unseal {
                unseal.push(unseal_stage(&fx, &a));
            }
            if cfg.mediation || cfg.events {
                let m = mediation_stage(&fx, &a, &mut rings);
                if steady.is_empty() {
                    println!(
                        "# {}: the mediation holds {} MB of heap for {} calls ({} bytes per \
                         call, glibc mallinfo2), against a {} MiB L3",
                        profile.name(),
                        m.state_bytes >> 20,
                        cfg.calls,
                        m.state_bytes / cfg.calls as u64,
                        l3_mib().map_or_else(|| "?".to_string(), |v| v.to_string())
                    );
                }
                attempt.push(m.attempt);
                key_update.push(m.key_update);
                steady.push(m.steady);
            }
            if cfg.srtp {
                let (run, bytes) = srtp_stage(&fx, None);
                if srtp.is_empty() {
                    println!(
                        "# {}: {} SRTP receive contexts alone (one SSRC each) hold {} MB of heap \
                         ({} bytes per context)",
                        profile.name(),
                        2 * cfg.calls,
                        bytes >> 20,
                        bytes / (2 * cfg.calls) as u64
                    );
                }
                srtp.push(run);
            }
            if cfg.g711 {
                rings.0.fill(0);
                g711.push(srtp_stage(&fx, Some(&mut rings)).0);
            }
        }
        let suite = profile.name();
        let mut row = |stage: &'static str, runs: &[Run], unit: &'static str| {
            if runs.is_empty() {
                return None;
            }
            let s = summarize(runs);
            println!(
                "li_bench suite={suite} stage={stage} rate={:.0} unit={unit} min={:.0} max={:.0} \
                 wall_rate={:.0} cpu_share={:.2} runs={} calls={} packets={}",
                s.rate,
                s.min,
                s.max,
                s.wall_rate,
                s.share,
                runs.len(),
                cfg.calls,
                cfg.packets
            );
            let rate = s.rate;
            table.push((suite.to_string(), stage, s, unit));
            Some(rate)
        };
        row("unseal", &unseal, "sessions/s");
        if cfg.events {
            row("attempt", &attempt, "events/s");
            row("key_update", &key_update, "events/s");
        }
        let med = if cfg.mediation {
            row("mediation", &steady, "pkt/s")
        } else {
            None
        };
        let raw = row("srtp", &srtp, "pkt/s");
        let dec = row("srtp+g711", &g711, "pkt/s");
        if let Some(m) = med {
            verdicts.push(format!(
                "{suite}: mediation {m:.0} pkt/s = {:.0} one-direction streams (50 pkt/s, the \
                 issue's \"calls\") = {:.0} two-way calls (100 pkt/s) in real time; target \
                 500,000 pkt/s: {}{}{}",
                m / 50.0,
                m / 100.0,
                if m >= 500_000.0 { "met" } else { "MISSED" },
                raw.map(|r| format!(
                    "; raw SRTP unprotect {r:.0} pkt/s, mediation/srtp = {:.2}",
                    m / r
                ))
                .unwrap_or_default(),
                dec.map(|r| format!(
                    "; srtp+g711 {r:.0} pkt/s, mediation/(srtp+g711) = {:.2}",
                    m / r
                ))
                .unwrap_or_default(),
            ));
        }
    }
    println!();
    println!(
        "| {:<24} | {:<10} | {:>12} | {:>10} | {:>23} | {:>12} | {:>9} |",
        "suite", "stage", "rate", "unit", "min-max", "wall rate", "ns/op"
    );
    println!(
        "|{:-<26}|{:-<12}|{:->14}|{:->12}|{:->25}|{:->14}|{:->11}|",
        "", "", ":", "", ":", ":", ":"
    );
    for (suite, stage, s, unit) in &table {
        println!(
            "| {:<24} | {:<10} | {:>12.0} | {:>10} | {:>23} | {:>12.0} | {:>9.0} |",
            suite,
            stage,
            s.rate,
            unit,
            format!("{:.0}-{:.0}", s.min, s.max),
            s.wall_rate,
            1e9 / s.rate
        );
    }
    println!();
    for v in verdicts {
        println!("{v}");
    }
}
