//! Replays the committed corpus of the `li_mediation` fuzz target (fuzz/corpus/li_mediation)
//! through the target's own logic (fuzz/fuzz_logic_li.rs): no panic, nothing delivered once the
//! warrant is deactivated, the audit log verifies. `write_seeds` (ignored) made the seeds: a
//! whole intercepted call (attempt, answer, key_update sealed to the fuzz authority key, 50
//! SRTP packets each way, release), and variants (a corrupt sealed record, content before the
//! key_update, an X3 PDU for an unknown call, a truncated stream).

#[path = "../../../fuzz/fuzz_logic_li.rs"]
mod fuzz_logic_li;

use std::path::PathBuf;

fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/li_mediation")
}

#[test]
fn committed_corpus_replays() {
    let mut n = 0;
    for e in std::fs::read_dir(corpus()).expect("the corpus") {
        let p = e.unwrap().path();
        let data = std::fs::read(&p).unwrap();
        fuzz_logic_li::li_mediation(&data);
        n += 1;
    }
    assert!(n >= 5, "{n} seeds");
}

/// The full seed decrypts: content and audio come out while the warrant is active.
#[test]
fn the_call_seed_is_decrypted_while_the_warrant_is_active() {
    use voxgate_li::mediation::Output;
    use voxgate_li::x2x3::Decoder;
    let data = std::fs::read(corpus().join("seed-call")).unwrap();
    let (mut med, _) = fuzz_logic_li::mediation();
    let mut dec = Decoder::new(64 * 1024);
    dec.push(&data);
    let mut pcm = 0;
    let mut now = fuzz_logic_li::T0 + 1000;
    while let Ok(Some(p)) = dec.next_pdu() {
        now += 20;
        med.handle_pdu(now, "spg-a", &p).unwrap();
        while let Some(o) = med.poll_output() {
            if matches!(o, Output::Pcm { .. }) {
                pcm += 1;
            }
        }
    }
    assert_eq!(pcm, 100);
}

#[test]
#[ignore = "writes the seed corpus"]
fn write_seeds() {
    use base64::Engine;
    use voxgate_escrow::seal::AuthorityKeyPair;
    use voxgate_escrow::server::Session;
    use voxgate_escrow::wire::{Addr, Direction, Secret, StreamKey};
    use voxgate_li::iri::PoiEvent;
    use voxgate_li::poi::{Poi, PoiOutput, Task, TaskList};
    use voxgate_rtp::{MasterKey, SrtpPolicy, SrtpProfile, SrtpSession};

    let t = fuzz_logic_li::T0 + 1000;
    let authority = AuthorityKeyPair::from_secret_bytes(&fuzz_logic_li::AUTHORITY_SECRET);
    let mut poi = Poi::new("spg-a");
    poi.set_tasks(
        t,
        &TaskList {
            tasks: vec![Task {
                xid: voxgate_li::warrant::format_xid(&voxgate_li::warrant::xid_for(
                    fuzz_logic_li::LIID,
                )),
                target: "gateway:gw1.a.example".into(),
                content: true,
                until_ms: t + 86_400_000,
            }],
        },
    )
    .unwrap();
    let mut out: Vec<u8> = Vec::new();
    let mut tap = None;
    let drain = |poi: &mut Poi, out: &mut Vec<u8>, tap: &mut Option<u32>| {
        while let Some(o) = poi.poll_output() {
            match o {
                PoiOutput::Pdu(b) => out.extend_from_slice(&b),
                PoiOutput::Tap { tap: t, .. } => *tap = t,
            }
        }
    };
    poi.attempt(
        t,
        "c1",
        "sip:alice@a.example",
        "sip:bob@b.example",
        "sip:bob@b.example",
        Some("gw1.a.example"),
        Some("spg-b"),
    );
    poi.event(
        t + 10,
        PoiEvent::Answered {
            call_id: "c1".into(),
            time_ms: t + 10,
        },
    );
    drain(&mut poi, &mut out, &mut tap);
    let (ks, kr) = ([3u8; 30], [4u8; 30]);
    let key = |direction, src: &str, dst: &str, m: &[u8; 30]| StreamKey {
        direction,
        src: Addr(src.parse().unwrap()),
        dst: Addr(dst.parse().unwrap()),
        ssrc: None,
        suite: "AES_CM_128_HMAC_SHA1_80".into(),
        master: Secret(zeroize::Zeroizing::new(m.to_vec())),
        mki: None,
    };
    let s = Session {
        id: 0x77,
        gateway: "gw1.a.example".into(),
        call_id: "c1".into(),
        streams: vec![
            key(Direction::Send, "127.0.0.11:30000", "127.0.0.1:20000", &ks),
            key(
                Direction::Receive,
                "127.0.0.1:20000",
                "127.0.0.11:30000",
                &kr,
            ),
        ],
        generation: 0,
        created_ms: t,
    };
    let rec = voxgate_keystore::seal_session(authority.public(), &s).unwrap();
    let ku = |sealed: &[u8]| PoiEvent::KeyUpdate {
        call_id: "c1".into(),
        time_ms: t + 20,
        session_id: "0000000000000077".into(),
        gateway: "gw1.a.example".into(),
        generation: 0,
        created_ms: t,
        sealed: base64::engine::general_purpose::STANDARD.encode(sealed),
    };
    let head = out.clone();
    poi.event(t + 20, ku(&rec.sealed));
    drain(&mut poi, &mut out, &mut tap);
    let with_keys = out.clone();
    let tap = tap.expect("tapped");
    let mut media = Vec::new();
    for (k, ssrc, src, dst) in [
        (&ks, 1u32, "127.0.0.11:30000", "127.0.0.1:20000"),
        (&kr, 2u32, "127.0.0.1:20000", "127.0.0.11:30000"),
    ] {
        let mk = MasterKey::from_key_salt(SrtpProfile::AesCm128HmacSha1_80, k).unwrap();
        let mut srtp = SrtpSession::new(SrtpPolicy::new(mk)).unwrap();
        for i in 0..50u16 {
            let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
            p[2..4].copy_from_slice(&i.to_be_bytes());
            p[4..8].copy_from_slice(&(160 * u32::from(i)).to_be_bytes());
            p[8..12].copy_from_slice(&ssrc.to_be_bytes());
            p.extend((0..160).map(|x| (x as u8).wrapping_mul(i as u8 | 1)));
            srtp.protect_rtp_vec(&mut p).unwrap();
            poi.datagram(
                t + 40 + 20 * u64::from(i),
                tap,
                src.parse().unwrap(),
                dst.parse().unwrap(),
                &p,
            );
        }
    }
    let mut m = Vec::new();
    drain(&mut poi, &mut m, &mut None);
    media.extend_from_slice(&m);
    poi.event(
        t + 2000,
        PoiEvent::Ended {
            call_id: "c1".into(),
            time_ms: t + 2000,
        },
    );
    let mut end = Vec::new();
    drain(&mut poi, &mut end, &mut None);
    let dir = corpus();
    std::fs::create_dir_all(&dir).unwrap();
    let call = [with_keys.clone(), media.clone(), end.clone()].concat();
    std::fs::write(dir.join("seed-call"), &call).unwrap();
    // Content before the keys; a corrupt sealed record; an unknown call's content; truncated.
    std::fs::write(
        dir.join("seed-content-before-keys"),
        [head.clone(), media.clone(), end.clone()].concat(),
    )
    .unwrap();
    let mut bad = rec.sealed.clone();
    let n = bad.len();
    bad[n - 1] ^= 1;
    let mut corrupt = head.clone();
    let pdu = voxgate_li::x2x3::Pdu {
        pdu_type: voxgate_li::x2x3::PduType::X2,
        format: voxgate_li::x2x3::PayloadFormat::Mime,
        direction: voxgate_li::x2x3::PayloadDirection::NotApplicable,
        xid: voxgate_li::warrant::xid_for(fuzz_logic_li::LIID),
        correlation_id: voxgate_li::poi::correlation_id("spg-a", "c1"),
        attributes: vec![voxgate_li::x2x3::Attribute::MimeContentType(
            voxgate_li::iri::POI_EVENT_MIME.into(),
        )],
        payload: serde_json::to_vec(&ku(&bad)).unwrap(),
    };
    corrupt.extend_from_slice(&pdu.encode().unwrap());
    corrupt.extend_from_slice(&media);
    std::fs::write(dir.join("seed-corrupt-sealed-keys"), &corrupt).unwrap();
    std::fs::write(dir.join("seed-unknown-call-content"), &media).unwrap();
    std::fs::write(dir.join("seed-truncated"), &call[..call.len() / 2 + 7]).unwrap();
}
