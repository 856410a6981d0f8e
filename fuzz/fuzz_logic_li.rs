//! The `li_mediation` fuzz target's logic, shared with its corpus replay test
//! (`crates/li/tests/fuzz_corpus.rs`).
//!
//! Input: a byte stream as an SPG would send it to the mediation (X2/X3 PDUs, TS 103 221-2),
//! fed to `Mediation::handle_pdu` with one warrant active that matches every call of gateway
//! `gw1.a.example` (IRI and content), the authority key the seeds' records are sealed to, and
//! times that advance 20 ms per PDU.
//!
//! Checks: no panic on any input; every output names that warrant; the audit log verifies;
//! then the warrant is deactivated and the same stream replayed: **nothing** is decrypted or
//! delivered (no content, no audio, no IRI) — whatever the bytes claim.

use voxgate_escrow::seal::AuthorityKeyPair;
use voxgate_li::audit::{self, AuditLog, NodeKey};
use voxgate_li::mediation::{Mediation, Output};
use voxgate_li::warrant::{Delivery, WarrantBook, WarrantRequest};
use voxgate_li::x2x3::Decoder;

pub const T0: u64 = 1_800_000_000_000;
pub const AUTHORITY_SECRET: [u8; 32] = [7; 32];
pub const LIID: &str = "FUZZ-1";

pub fn mediation() -> (Mediation, String) {
    let (key, _) = NodeKey::generate().expect("an Ed25519 key");
    let public = key.public_hex();
    let mut med = Mediation::new(
        "li-fuzz",
        WarrantBook::new(vec!["agency".into()]),
        AuthorityKeyPair::from_secret_bytes(&AUTHORITY_SECRET),
        AuditLog::new("li-fuzz", key),
    );
    let req = WarrantRequest {
        liid: LIID.into(),
        targets: vec!["gateway:gw1.a.example".into()],
        start_ms: T0,
        end_ms: T0 + 86_400_000,
        delivery: Delivery::IriAndContent,
        destination: "agency".into(),
    };
    med.create_warrant(T0, "officer-1", req)
        .expect("the warrant");
    med.approve_warrant(T0, "officer-2", LIID)
        .expect("approval");
    med.approve_warrant(T0, "officer-3", LIID)
        .expect("approval");
    (med, public)
}

/// Feeds the stream; returns (content outputs, audio outputs, IRI outputs, audit lines).
fn feed(med: &mut Mediation, data: &[u8], start: u64) -> (usize, usize, usize, Vec<String>) {
    let mut dec = Decoder::new(64 * 1024);
    dec.push(data);
    let (mut content, mut pcm, mut iri) = (0, 0, 0);
    let mut audit_lines = Vec::new();
    let mut now = start;
    while let Ok(Some(p)) = dec.next_pdu() {
        now += 20;
        let _ = med.handle_pdu(now, "spg-a", &p);
        while let Some(o) = med.poll_output() {
            match o {
                Output::Content { liid, .. } => {
                    assert_eq!(liid, LIID);
                    content += 1;
                }
                Output::Pcm { liid, samples, .. } => {
                    assert_eq!(liid, LIID);
                    assert!(samples.len() <= 64 * 1024);
                    pcm += 1;
                }
                Output::Iri { record, .. } => {
                    assert_eq!(record.liid, LIID);
                    iri += 1;
                }
                Output::Audit(e) => audit_lines.push(serde_json::to_string(&e).expect("json")),
                Output::Closed { liid, .. } => assert_eq!(liid, LIID),
                Output::Tasks(_) => {}
            }
        }
    }
    (content, pcm, iri, audit_lines)
}

pub fn li_mediation(data: &[u8]) {
    let (mut med, public) = mediation();
    let mut lines: Vec<String> = Vec::new();
    while let Some(o) = med.poll_output() {
        if let Output::Audit(e) = o {
            lines.push(serde_json::to_string(&e).expect("json"));
        }
    }
    let (_, _, _, more) = feed(&mut med, data, T0 + 1000);
    lines.extend(more);
    // Deactivated: the same stream (new calls, new keys, same content) yields nothing.
    med.deactivate_warrant(T0 + 500_000, "officer-2", LIID, "fuzz")
        .expect("deactivation");
    let (content, pcm, iri, more) = feed(&mut med, data, T0 + 600_000);
    lines.extend(more);
    assert_eq!(
        (content, pcm, iri),
        (0, 0, 0),
        "delivered after the warrant was deactivated"
    );
    audit::verify(&lines.join("\n"), &public, None).expect("the audit log verifies");
}
