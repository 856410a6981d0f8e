//! The interception chain without I/O: an SPG's point of interception (`Poi`) provisioned by
//! the mediation's tasks, a call's events and its SRTP datagrams in, the mediation
//! (`Mediation`) unsealing the escrowed keys (real HPKE records) and decrypting; the IRI
//! sequence, the recovered audio, and what must not happen (other calls, outside the window,
//! after deactivation, corrupt sealed keys) checked at exact times.

use std::net::SocketAddr;

use voxgate_escrow::seal::AuthorityKeyPair;
use voxgate_escrow::server::Session;
use voxgate_escrow::wire::{Addr, Direction, Secret, StreamKey};
use voxgate_keystore::seal_session;
use voxgate_li::audit::{self, AuditLog, NodeKey};
use voxgate_li::iri::{IriType, PoiEvent};
use voxgate_li::mediation::{Mediation, Output, TargetDirection};
use voxgate_li::poi::{Poi, PoiOutput};
use voxgate_li::warrant::{Delivery, WarrantBook, WarrantRequest};
use voxgate_li::x2x3::{Decoder, Pdu, PduType};
use voxgate_rtp::g711::Law;
use voxgate_rtp::{MasterKey, SrtpPolicy, SrtpProfile, SrtpSession};
use zeroize::Zeroizing;

const T0: u64 = 1_800_000_000_000;
const SUITE: &str = "AES_CM_128_HMAC_SHA1_80";

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

struct World {
    poi: Poi,
    med: Mediation,
    authority: AuthorityKeyPair,
    audit_key_hex: String,
    audit_lines: Vec<String>,
    iri: Vec<voxgate_li::iri::IriRecord>,
    pcm: Vec<(String, TargetDirection, u64, Vec<i16>)>,
    content_pdus: usize,
    closed: Vec<String>,
    taps: Vec<(String, Option<u32>)>,
}

impl World {
    fn new() -> World {
        let authority = AuthorityKeyPair::generate().unwrap();
        let (key, _) = NodeKey::generate().unwrap();
        let audit_key_hex = key.public_hex();
        let book = WarrantBook::new(vec!["agency-1".into()]);
        let med = Mediation::new(
            "li-1",
            book,
            AuthorityKeyPair::from_secret_bytes(authority.secret_bytes()),
            AuditLog::new("li-1", key),
        );
        World {
            poi: Poi::new("spg-a"),
            med,
            authority,
            audit_key_hex,
            audit_lines: Vec::new(),
            iri: Vec::new(),
            pcm: Vec::new(),
            content_pdus: 0,
            closed: Vec::new(),
            taps: Vec::new(),
        }
    }

    fn warrant(&mut self, liid: &str, target: &str, start: u64, end: u64) {
        let req = WarrantRequest {
            liid: liid.into(),
            targets: vec![target.into()],
            start_ms: start,
            end_ms: end,
            delivery: Delivery::IriAndContent,
            destination: "agency-1".into(),
        };
        self.med.create_warrant(T0, "officer-1", req).unwrap();
        self.med.approve_warrant(T0, "officer-2", liid).unwrap();
        self.med.approve_warrant(T0, "officer-3", liid).unwrap();
        self.pump(T0);
    }

    /// Moves PDUs from the POI to the mediation and collects the mediation's outputs.
    fn pump(&mut self, now: u64) {
        loop {
            let mut moved = false;
            while let Some(o) = self.med.poll_output() {
                moved = true;
                match o {
                    Output::Audit(e) => self.audit_lines.push(serde_json::to_string(&e).unwrap()),
                    Output::Iri { record, pdu, .. } => {
                        let (p, n) = Pdu::decode(&pdu).unwrap();
                        assert_eq!(n, pdu.len());
                        assert_eq!(p.pdu_type, PduType::X2);
                        self.iri.push(*record);
                    }
                    Output::Content { pdu, .. } => {
                        let (p, _) = Pdu::decode(&pdu).unwrap();
                        assert_eq!(p.pdu_type, PduType::X3);
                        self.content_pdus += 1;
                    }
                    Output::Pcm {
                        liid,
                        direction,
                        at_sample,
                        samples,
                        ..
                    } => self.pcm.push((liid, direction, at_sample, samples)),
                    Output::Closed { liid, .. } => self.closed.push(liid),
                    Output::Tasks(t) => self.poi.set_tasks(now, &t).unwrap(),
                }
            }
            let mut dec = Decoder::new(1 << 20);
            while let Some(o) = self.poi.poll_output() {
                moved = true;
                match o {
                    PoiOutput::Pdu(b) => dec.push(&b),
                    PoiOutput::Tap { call_id, tap } => self.taps.push((call_id, tap)),
                }
            }
            while let Some(p) = dec.next_pdu().unwrap() {
                let _ = self.med.handle_pdu(now, "spg-a", &p);
            }
            if !moved {
                break;
            }
        }
    }

    fn attempt(&mut self, now: u64, call_id: &str, from: &str, to: &str) {
        self.poi.attempt(
            now,
            call_id,
            from,
            to,
            to,
            Some("gw1.a.example"),
            Some("gw1.b.example"),
        );
        self.pump(now);
    }

    fn event(&mut self, now: u64, ev: PoiEvent) {
        self.poi.event(now, ev);
        self.pump(now);
    }

    fn tap_of(&self, call_id: &str) -> Option<u32> {
        self.taps
            .iter()
            .rev()
            .find(|(c, _)| c == call_id)
            .and_then(|(_, t)| *t)
    }
}

/// A call's keys at gateway A: it sends with `send`, receives with `recv`.
struct Keys {
    send: [u8; 30],
    recv: [u8; 30],
}

fn session(call_id: &str, id: u64, k: &Keys, generation: u32) -> Session {
    let key = |direction, src: &str, dst: &str, m: &[u8; 30]| StreamKey {
        direction,
        src: Addr(sa(src)),
        dst: Addr(sa(dst)),
        ssrc: None,
        suite: SUITE.into(),
        master: Secret(Zeroizing::new(m.to_vec())),
        mki: None,
    };
    Session {
        id,
        gateway: "gw1.a.example".into(),
        call_id: call_id.into(),
        streams: vec![
            key(
                Direction::Send,
                "127.0.0.11:30000",
                "127.0.0.1:20000",
                &k.send,
            ),
            key(
                Direction::Receive,
                "127.0.0.1:20000",
                "127.0.0.11:30000",
                &k.recv,
            ),
        ],
        generation,
        created_ms: T0,
    }
}

fn key_update(w: &mut World, now: u64, s: &Session) {
    let rec = seal_session(w.authority.public(), s).unwrap();
    let ev = PoiEvent::KeyUpdate {
        call_id: s.call_id.clone(),
        time_ms: now,
        session_id: format!("{:016x}", s.id),
        gateway: s.gateway.clone(),
        generation: s.generation,
        created_ms: s.created_ms,
        sealed: base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &rec.sealed),
    };
    w.event(now, ev);
}

fn tone(n: usize, seed: u32) -> Vec<i16> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            ((x >> 16) as i32 - 32768) as i16 / 4
        })
        .collect()
}

/// Sends `frames` 20 ms G.711 frames of `audio` protected with `key` as the relay would copy
/// them (tuple `src` -> `dst`), starting at `now`.
#[allow(clippy::too_many_arguments)]
fn stream(
    w: &mut World,
    call_id: &str,
    now: u64,
    key: &[u8; 30],
    ssrc: u32,
    src: &str,
    dst: &str,
    audio: &[i16],
) {
    let mk = MasterKey::from_key_salt(SrtpProfile::AesCm128HmacSha1_80, key).unwrap();
    let mut s = SrtpSession::new(SrtpPolicy::new(mk)).unwrap();
    for (i, frame) in audio.chunks(160).enumerate() {
        let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        p[2..4].copy_from_slice(&(i as u16).to_be_bytes());
        p[4..8].copy_from_slice(&(1000 + 160 * i as u32).to_be_bytes());
        p[8..12].copy_from_slice(&ssrc.to_be_bytes());
        p.extend(frame.iter().map(|x| Law::Mu.encode(*x)));
        s.protect_rtp_vec(&mut p).unwrap();
        let t = now + 20 * i as u64;
        if let Some(tap) = w.tap_of(call_id) {
            w.poi.datagram(t, tap, sa(src), sa(dst), &p);
        }
        w.pump(t);
    }
}

fn track(w: &World, liid: &str, dir: TargetDirection) -> Vec<i16> {
    let mut out: Vec<i16> = Vec::new();
    for (l, d, at, s) in &w.pcm {
        if l == liid && *d == dir {
            let at = *at as usize;
            if out.len() < at + s.len() {
                out.resize(at + s.len(), 0);
            }
            out[at..at + s.len()].copy_from_slice(s);
        }
    }
    out
}

fn events(w: &World, liid: &str) -> Vec<(IriType, String)> {
    w.iri
        .iter()
        .filter(|r| r.liid == liid)
        .map(|r| (r.iri_type, r.event.clone()))
        .collect()
}

fn keys(a: u8) -> Keys {
    Keys {
        send: [a; 30],
        recv: [a.wrapping_add(1); 30],
    }
}

#[test]
fn a_target_call_is_decrypted_both_ways_and_its_iri_is_in_order() {
    let mut w = World::new();
    w.warrant("LIID-1", "sip:alice@a.example", T0, T0 + 3_600_000);
    let t = T0 + 1000;
    w.attempt(t, "c1", "<sip:alice@a.example>;tag=1", "sip:bob@b.example");
    // A call of others at the same time: never tapped, never decrypted.
    w.attempt(t, "c2", "<sip:carol@a.example>;tag=2", "sip:dave@b.example");
    assert!(w.tap_of("c1").is_some());
    assert!(w.tap_of("c2").is_none());
    w.event(
        t + 100,
        PoiEvent::Alerting {
            call_id: "c1".into(),
            time_ms: t + 100,
            status: 180,
        },
    );
    w.event(
        t + 200,
        PoiEvent::Answered {
            call_id: "c1".into(),
            time_ms: t + 200,
        },
    );
    let k = keys(7);
    key_update(&mut w, t + 300, &session("c1", 0x1111, &k, 0));
    key_update(&mut w, t + 300, &session("c2", 0x2222, &keys(9), 0));
    let alice = tone(160 * 50, 1);
    let bob = tone(160 * 50, 2);
    stream(
        &mut w,
        "c1",
        t + 400,
        &k.send,
        0xa,
        "127.0.0.11:30000",
        "127.0.0.1:20000",
        &alice,
    );
    stream(
        &mut w,
        "c1",
        t + 400,
        &k.recv,
        0xb,
        "127.0.0.1:20000",
        "127.0.0.11:30000",
        &bob,
    );
    // A re-INVITE (e.g. the rekey's signalling), then the rekey under the same session_ID:
    // new keys, the audio keeps decrypting.
    w.event(
        t + 1400,
        PoiEvent::Modified {
            call_id: "c1".into(),
            time_ms: t + 1400,
            method: "INVITE".into(),
        },
    );
    let k2 = keys(20);
    key_update(&mut w, t + 1500, &session("c1", 0x1111, &k2, 1));
    stream(
        &mut w,
        "c1",
        t + 1600,
        &k2.send,
        0xa,
        "127.0.0.11:30000",
        "127.0.0.1:20000",
        &alice[..1600],
    );
    w.event(
        t + 3000,
        PoiEvent::Ended {
            call_id: "c1".into(),
            time_ms: t + 3000,
        },
    );
    assert_eq!(
        events(&w, "LIID-1"),
        vec![
            (IriType::Begin, "attempt".into()),
            (IriType::Continue, "alerting".into()),
            (IriType::Continue, "answer".into()),
            (IriType::Continue, "key_update".into()),
            (IriType::Continue, "modify".into()),
            (IriType::Continue, "rekey".into()),
            (IriType::End, "release".into()),
        ]
    );
    let seqs: Vec<u64> = w.iri.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (0..7).collect::<Vec<_>>());
    // Audio: from the target = alice's, to the target = bob's, sample for sample after G.711.
    let q = |v: &[i16]| v.iter().map(|x| Law::Mu.quantize(*x)).collect::<Vec<_>>();
    let from = track(&w, "LIID-1", TargetDirection::FromTarget);
    let to = track(&w, "LIID-1", TargetDirection::ToTarget);
    assert_eq!(&from[..alice.len()], &q(&alice)[..]);
    assert_eq!(&to[..bob.len()], &q(&bob)[..]);
    assert_eq!(w.content_pdus, 100 + 10);
    assert_eq!(w.closed, vec!["LIID-1".to_string()]);
    // The other call left nothing: no IRI, no unseal of its keys.
    assert!(w.iri.iter().all(|r| r.caller.contains("alice")));
    let log = w.audit_lines.join("\n");
    assert!(
        !log.contains("2222"),
        "c2's session appears in the audit: {log}"
    );
    let s = audit::verify(&log, &w.audit_key_hex, None).unwrap();
    assert_eq!(s.events.get("key_unseal"), Some(&2), "{:?}", s.events);
    assert_eq!(s.events.get("delivery_started"), Some(&1));
    assert_eq!(s.events.get("delivery_ended"), Some(&1));
}

#[test]
fn nothing_is_decrypted_outside_the_window_or_after_deactivation() {
    let mut w = World::new();
    // Starts in 10 s, ends 20 s later.
    w.warrant("LIID-2", "sip:alice@a.example", T0 + 10_000, T0 + 30_000);
    // Before the window: the SPG has no task, the call is not tapped.
    w.attempt(
        T0 + 5000,
        "early",
        "sip:alice@a.example",
        "sip:bob@b.example",
    );
    assert!(w.tap_of("early").is_none());
    // The window opens: the mediation's timer re-provisions; the call in progress is tapped
    // from then on (its history replayed to the mediation).
    assert_eq!(w.med.poll_timeout(T0 + 5000), Some(T0 + 10_000));
    w.med.handle_timeout(T0 + 10_000);
    w.pump(T0 + 10_000);
    assert!(w.tap_of("early").is_some());
    assert_eq!(
        events(&w, "LIID-2"),
        vec![(IriType::Begin, "attempt".into())]
    );
    let k = keys(3);
    key_update(&mut w, T0 + 10_100, &session("early", 0x33, &k, 0));
    stream(
        &mut w,
        "early",
        T0 + 10_200,
        &k.send,
        1,
        "127.0.0.11:30000",
        "127.0.0.1:20000",
        &tone(1600, 5),
    );
    assert_eq!(w.content_pdus, 10);
    // Deactivated: stops at once (the next datagram is refused, the SPG untaps).
    w.med
        .deactivate_warrant(T0 + 12_000, "officer-2", "LIID-2", "court order lifted")
        .unwrap();
    w.pump(T0 + 12_000);
    assert!(w.tap_of("early").is_none(), "the SPG still copies the call");
    // Even if an SPG kept sending, nothing is decrypted.
    let before = w.content_pdus;
    let mk = MasterKey::from_key_salt(SrtpProfile::AesCm128HmacSha1_80, &k.send).unwrap();
    let mut s = SrtpSession::new(SrtpPolicy::new(mk)).unwrap();
    let mut p = vec![0x80, 0, 0, 50, 0, 0, 0, 0, 0, 0, 0, 1];
    p.extend_from_slice(&[0xff; 160]);
    s.protect_rtp_vec(&mut p).unwrap();
    let corr = voxgate_li::poi::correlation_id("spg-a", "early");
    let r = w.med.handle_content(
        T0 + 12_001,
        "spg-a",
        corr,
        T0 + 12_001,
        sa("127.0.0.11:30000"),
        sa("127.0.0.1:20000"),
        &p,
    );
    assert!(r.is_err());
    w.pump(T0 + 12_001);
    assert_eq!(w.content_pdus, before);
    // An expired warrant: a new call after the end is not intercepted.
    w.warrant("LIID-3", "sip:carol@a.example", T0 + 13_000, T0 + 14_000);
    w.med.handle_timeout(T0 + 14_000);
    w.pump(T0 + 14_000);
    w.attempt(
        T0 + 15_000,
        "late",
        "sip:carol@a.example",
        "sip:bob@b.example",
    );
    assert!(w.tap_of("late").is_none());
    assert!(events(&w, "LIID-3").is_empty());
}

#[test]
fn an_unapproved_warrant_intercepts_nothing() {
    let mut w = World::new();
    let req = WarrantRequest {
        liid: "LIID-4".into(),
        targets: vec!["sip:alice@a.example".into()],
        start_ms: T0,
        end_ms: T0 + 60_000,
        delivery: Delivery::IriAndContent,
        destination: "agency-1".into(),
    };
    w.med.create_warrant(T0, "officer-1", req).unwrap();
    w.med.approve_warrant(T0, "officer-2", "LIID-4").unwrap();
    // One approver twice and the creator: refused, still one approval.
    assert!(w.med.approve_warrant(T0, "officer-2", "LIID-4").is_err());
    assert!(w.med.approve_warrant(T0, "officer-1", "LIID-4").is_err());
    w.pump(T0);
    w.attempt(T0 + 1000, "c", "sip:alice@a.example", "sip:bob@b.example");
    assert!(w.tap_of("c").is_none());
    // Even a forged attempt straight to the mediation finds no warrant.
    let r = w.med.handle_event(
        T0 + 1000,
        "spg-a",
        7,
        PoiEvent::Attempt {
            call_id: "c".into(),
            time_ms: T0 + 1000,
            from_uri: "sip:alice@a.example".into(),
            to_uri: "sip:bob@b.example".into(),
            request_uri: "sip:bob@b.example".into(),
            caller_peer: None,
            callee_peer: None,
        },
    );
    assert!(r.is_err());
    assert!(w.iri.is_empty());
}

#[test]
fn corrupt_sealed_keys_are_refused_and_audited() {
    let mut w = World::new();
    w.warrant("LIID-5", "sip:alice@a.example", T0, T0 + 60_000);
    w.attempt(T0 + 1000, "c", "sip:alice@a.example", "sip:bob@b.example");
    let k = keys(4);
    let s = session("c", 0x55, &k, 0);
    let mut rec = seal_session(w.authority.public(), &s).unwrap();
    let n = rec.sealed.len();
    rec.sealed[n - 3] ^= 0x40;
    w.event(
        T0 + 1100,
        PoiEvent::KeyUpdate {
            call_id: "c".into(),
            time_ms: T0 + 1100,
            session_id: "0000000000000055".into(),
            gateway: s.gateway.clone(),
            generation: 0,
            created_ms: T0,
            sealed: base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &rec.sealed),
        },
    );
    stream(
        &mut w,
        "c",
        T0 + 1200,
        &k.send,
        1,
        "127.0.0.11:30000",
        "127.0.0.1:20000",
        &tone(800, 9),
    );
    assert_eq!(w.content_pdus, 0);
    assert!(w.pcm.is_empty());
    let log = w.audit_lines.join("\n");
    assert!(log.contains("key_unseal_failed"), "{log}");
    assert!(!log.contains("\"key_unseal\""), "{log}");
}

#[test]
fn a_failed_call_gets_begin_and_end() {
    let mut w = World::new();
    w.warrant("LIID-6", "sip:bob@b.example", T0, T0 + 60_000);
    w.attempt(T0 + 1000, "f", "sip:alice@a.example", "sip:bob@b.example");
    w.event(
        T0 + 1500,
        PoiEvent::Failed {
            call_id: "f".into(),
            time_ms: T0 + 1500,
            status: 486,
        },
    );
    let r: Vec<_> = w.iri.iter().filter(|r| r.liid == "LIID-6").collect();
    assert_eq!(r.len(), 2);
    assert_eq!(
        (r[0].iri_type, r[0].matched_as.as_str()),
        (IriType::Begin, "callee")
    );
    assert_eq!(
        (r[1].iri_type, r[1].event.as_str(), r[1].status),
        (IriType::End, "failed", Some(486))
    );
    assert_eq!(w.med.calls(), 0);
    assert_eq!(w.poi.calls(), 0);
}

#[test]
fn a_registration_of_the_target_is_reported_and_no_one_elses() {
    let mut w = World::new();
    w.warrant("LIID-7", "sip:alice@a.example", T0, T0 + 60_000);
    w.poi.registration(
        T0 + 100,
        "<sip:alice@a.example>",
        "<sip:alice@127.0.0.50:5061;transport=tls>",
        Some(3600),
        sa("127.0.0.50:40000"),
    );
    w.poi.registration(
        T0 + 200,
        "<sip:carol@a.example>",
        "<sip:carol@127.0.0.52:5061>",
        Some(3600),
        sa("127.0.0.52:40000"),
    );
    w.poi.registration(
        T0 + 300,
        "<sip:alice@a.example>",
        "*",
        Some(0),
        sa("127.0.0.50:40000"),
    );
    w.pump(T0 + 300);
    let r: Vec<_> = w.iri.iter().filter(|r| r.liid == "LIID-7").collect();
    assert_eq!(r.len(), 2, "{:?}", w.iri);
    assert_eq!(
        (r[0].iri_type, r[0].event.as_str()),
        (IriType::Report, "registration")
    );
    assert_eq!(
        r[0].contacts.as_deref(),
        Some("<sip:alice@127.0.0.50:5061;transport=tls>")
    );
    assert_eq!(r[0].expires, Some(3600));
    assert_eq!(
        (r[1].iri_type, r[1].event.as_str()),
        (IriType::Report, "deregistration")
    );
    assert!(w.iri.iter().all(|r| !r.caller.contains("carol")));
    // No warrant: not even a report.
    w.med
        .deactivate_warrant(T0 + 400, "officer-2", "LIID-7", "done")
        .unwrap();
    w.pump(T0 + 400);
    w.poi.registration(
        T0 + 500,
        "sip:alice@a.example",
        "<sip:a@x>",
        None,
        sa("127.0.0.50:1"),
    );
    w.pump(T0 + 500);
    assert_eq!(w.iri.len(), 2);
}
