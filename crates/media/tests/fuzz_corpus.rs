//! Replays the committed corpora of the voxgate-media fuzz targets (`fuzz/corpus/media_relay/`,
//! `fuzz/corpus/media_bridge/`) and their regression inputs (`fuzz/regressions/<target>/`)
//! through the targets' logic, so `cargo test` checks them without cargo-fuzz. The logic lives
//! in `fuzz/fuzz_logic_media.rs`, shared with the targets.
//!
//! Regression files named `open-*` are failures found by the fuzzer and not fixed yet: they
//! must still fail (so the bug stays visible); once one passes, drop its `open-` prefix and it
//! is replayed as an ordinary regression.
//!
//! The seeds are made by `regenerate_seed_corpus` below (ignored; run it with
//! `cargo test -p voxgate-media --test fuzz_corpus -- --ignored regenerate_seed_corpus`).

#[path = "../../../fuzz/fuzz_logic_media.rs"]
mod fuzz_logic_media;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use fuzz_logic_media::{
    relay_sender, ArmStream, BridgeFuzzConfig, BridgeInput, MediaStats, Peer, RelayFuzzConfig,
    RelayInput, GW_A, GW_B, RELAY, SESSION_IDS, SSRC_A, SSRC_B, USER,
};
use voxgate_escrow::carrier::{ipv4_options, rtp_extension_block};
use voxgate_media::bridge::Carrier;
use voxgate_rtp::{CryptoAttribute, SrtpProfile, SrtpSession};
use voxgate_sip::anchor::{SdpKind, Side};
use voxgate_sip::sdp::EncryptionPolicy;

type Target = fn(&[u8]) -> MediaStats;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// The files of one directory, sorted by name. `required`: the directory must exist and hold
/// at least one file (a missing corpus cannot make the test pass vacuously).
fn files_in(dir: &Path, required: bool) -> Vec<(PathBuf, Vec<u8>)> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => panic!("cannot read {}: {e}", dir.display()),
    };
    let mut files: Vec<_> = entries
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file())
        .map(|p| {
            let bytes = std::fs::read(&p).expect("read corpus file");
            (p, bytes)
        })
        .collect();
    files.sort();
    assert!(
        !required || !files.is_empty(),
        "{} holds no file",
        dir.display()
    );
    files
}

fn is_open(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("open-"))
}

fn panic_message(e: &(dyn std::any::Any + Send)) -> String {
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// Runs every corpus and regression input of `name` through `target`; fails with the list of
/// inputs that panicked (or, for `open-*` regressions, that no longer do). Returns the summed
/// stats of the inputs that passed and the number of corpus files.
fn replay(name: &str, target: Target) -> (MediaStats, usize) {
    let corpus = files_in(&fuzz_dir().join("corpus").join(name), true);
    let n = corpus.len();
    let mut inputs = corpus;
    inputs.extend(files_in(&fuzz_dir().join("regressions").join(name), false));
    let mut stats = MediaStats::default();
    let mut failed = Vec::new();
    for (path, bytes) in &inputs {
        let r = std::panic::catch_unwind(|| target(bytes));
        match (r, is_open(path)) {
            (Ok(s), false) => stats.add(s),
            (Err(e), false) => failed.push(format!("{}: {}", path.display(), panic_message(&*e))),
            (Ok(_), true) => failed.push(format!(
                "{} passes now: drop its open- prefix (it becomes an ordinary regression)",
                path.display()
            )),
            (Err(e), true) => eprintln!(
                "{name}: known open failure {}: {}",
                path.display(),
                panic_message(&*e)
            ),
        }
    }
    assert!(
        failed.is_empty(),
        "{name}: {} of {} inputs failed:\n{}",
        failed.len(),
        inputs.len(),
        failed.join("\n")
    );
    eprintln!("{name}: {} inputs, {stats:?}", inputs.len());
    (stats, n)
}

#[test]
fn media_relay_corpus() {
    let (s, n) = replay("media_relay", fuzz_logic_media::media_relay);
    assert!(n >= 10, "{n} inputs");
    // The seeds set calls up, arm sessions and send escrowed SRTP: the success paths are hit.
    assert!(s.sdp_rewritten >= 20 && s.sdp_refused >= 2, "{s:?}");
    assert!(s.escrowed >= 8 && s.key_updates_refused >= 2, "{s:?}");
    assert!(s.forwarded_escrowed >= 20 && s.dropped >= 20, "{s:?}");
    // The shared port pair: calls on it forward, and collisions fall back or are refused.
    assert!(s.forwarded_shared >= 8, "{s:?}");
}

#[test]
fn media_bridge_corpus() {
    let (s, n) = replay("media_bridge", fuzz_logic_media::media_bridge);
    assert!(n >= 8, "{n} inputs");
    assert!(s.sdp_rewritten >= 15 && s.sdp_refused >= 3, "{s:?}");
    assert!(s.escrowed >= 5, "{s:?}");
    // Outward packets tagged and readable with the escrowed key, inward ones too.
    assert!(
        s.forwarded_escrowed >= 10 && s.escrow_readable >= 10,
        "{s:?}"
    );
    assert!(
        s.forwarded > s.forwarded_escrowed && s.dropped >= 10,
        "{s:?}"
    );
}

/// The committed corpora hold every generated seed, byte for byte.
#[test]
fn committed_corpus_holds_generated_seeds() {
    let mut missing = Vec::new();
    for (target, seeds) in seeds() {
        for (name, bytes) in seeds {
            let path = fuzz_dir().join("corpus").join(target).join(&name);
            match std::fs::read(&path) {
                Ok(b) if b == bytes => {}
                Ok(_) => missing.push(format!("{} differs", path.display())),
                Err(e) => missing.push(format!("{}: {e}", path.display())),
            }
        }
    }
    assert!(
        missing.is_empty(),
        "run the ignored test regenerate_seed_corpus:\n{}",
        missing.join("\n")
    );
}

/// Writes the seed corpora into `fuzz/corpus/<target>/` (overwriting the `seed-*` files and
/// removing those no longer made; files of other names, such as fuzzer finds, are kept).
#[test]
#[ignore = "writes fuzz/corpus; run by hand to regenerate the seeds"]
fn regenerate_seed_corpus() {
    for (target, seeds) in seeds() {
        let dir = fuzz_dir().join("corpus").join(target);
        std::fs::create_dir_all(&dir).expect("create corpus dir");
        for old in files_in(&dir, false) {
            let stale = old
                .0
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("seed-") && !seeds.contains_key(n));
            if stale {
                std::fs::remove_file(&old.0).expect("remove stale seed");
            }
        }
        for (name, bytes) in seeds {
            std::fs::write(dir.join(name), bytes).expect("write seed");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Seed generator
// ---------------------------------------------------------------------------------------------

type Seeds = BTreeMap<String, Vec<u8>>;

fn seeds() -> Vec<(&'static str, Seeds)> {
    vec![
        ("media_relay", relay_seeds()),
        ("media_bridge", bridge_seeds()),
    ]
}

/// An RTP packet (version 2, PT 0, 160 bytes of payload) with an optional header extension
/// block (profile and length included).
fn rtp(seq: u16, ssrc: u32, ext: Option<&[u8]>) -> Vec<u8> {
    let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 0];
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[4..8].copy_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    if let Some(e) = ext {
        p[0] |= 0x10;
        p.extend_from_slice(e);
    }
    p.extend((0..160u32).map(|i| (i as u8).wrapping_mul(7) ^ seq as u8));
    p
}

fn srtp(tx: &mut SrtpSession, seq: u16, ssrc: u32, ext: Option<&[u8]>) -> Vec<u8> {
    let mut p = rtp(seq, ssrc, ext);
    tx.protect_rtp_vec(&mut p).expect("seed packet");
    p
}

/// A sender report + SDES CNAME, protected.
fn srtcp(tx: &mut SrtpSession, ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 200, 0, 6];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend((0..20u8).map(|i| i ^ 0x3c));
    p.extend_from_slice(&[0x81, 202, 0, 3]);
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[1, 3, b'g', b'w', b'a', 0]);
    tx.protect_rtcp_vec(&mut p).expect("seed packet");
    p
}

// --- media_relay ---

const RELAY_KEY_LINE: &str =
    "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n";
const EXTMAP: &str = "a=extmap:3 urn:voxgate:escrow:session-id\r\n";

/// An SDP body of a gateway at `addr` (one audio stream, SRTP) plus `extra` lines.
fn gw_sdp(addr: &str, extra: &str) -> String {
    let a: std::net::SocketAddr = addr.parse().expect("seed address");
    format!(
        "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/SAVP 0\r\n\
         a=rtpmap:0 PCMU/8000\r\n{RELAY_KEY_LINE}{extra}",
        ip = a.ip(),
        port = a.port()
    )
}

fn caller_offer() -> String {
    gw_sdp(
        GW_A,
        &format!(
            "{EXTMAP}a=ssrc:{SSRC_A} cname:gw-a\r\na=candidate:1 1 UDP 1 192.0.2.11 40000 typ host\r\n\
             a=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdef012345\r\n"
        ),
    )
}

fn callee_answer() -> String {
    gw_sdp(GW_B, &format!("{EXTMAP}a=ssrc:{SSRC_B} cname:gw-b\r\n"))
}

/// Port selector of `port` (raw, for first_port 20000).
fn rport(port: u16) -> u8 {
    (port - 19_999) as u8
}

/// Source selectors (indexes into RELAY_SOURCES).
const S_GW_A: u8 = 0;
const S_GW_A_RTCP: u8 = 1;
const S_GW_B: u8 = 2;
const S_GW_A_OTHER: u8 = 4;
const S_STRANGER: u8 = 5;
const S_PHONE: u8 = 6;

/// Offer from the caller's gateway and answer from the callee's for `call` (natural peers).
fn relay_call(inp: &mut RelayInput, call: u8) {
    inp.sdp(
        call,
        Side::Caller,
        SdpKind::Offer,
        Peer::Natural,
        Peer::Natural,
        &caller_offer(),
    );
    inp.sdp(
        call,
        Side::Callee,
        SdpKind::Answer,
        Peer::Natural,
        Peer::Natural,
        &callee_answer(),
    );
}

/// Arms `session` for gw-a's streams of call 0 (ports 20000-20003, legs in port order): its
/// RTP and RTCP send streams and its receive stream.
fn arm_gw_a(inp: &mut RelayInput, session: u8, key: u8) {
    inp.arm(
        0,
        session,
        0,
        &[
            ArmStream {
                sel: 0,
                key,
                ssrc: 1,
            },
            ArmStream {
                sel: 1,
                key,
                ssrc: 1,
            },
            ArmStream {
                sel: 0x80 | 2,
                key,
                ssrc: 2,
            },
        ],
    );
}

fn relay_seeds() -> Seeds {
    let mut out = Seeds::new();
    let opts = |n: usize| ipv4_options(SESSION_IDS[n]);

    // A full call with the IPv4 option carrier and every drop reason.
    let mut inp = RelayInput::new(RelayFuzzConfig::DEFAULT);
    relay_call(&mut inp, 0);
    arm_gw_a(&mut inp, 0, 0);
    inp.arm(
        0,
        1,
        1,
        &[ArmStream {
            sel: 2,
            key: 2,
            ssrc: 2,
        }],
    );
    let mut a = relay_sender(0);
    let mut b = relay_sender(2);
    let mut rogue = relay_sender(1);
    inp.datagram(
        rport(20_000),
        S_GW_A,
        &opts(0),
        &srtp(&mut a, 1, SSRC_A, None),
    );
    let p2 = srtp(&mut a, 2, SSRC_A, None);
    inp.datagram(rport(20_000), S_GW_A, &opts(0), &p2);
    inp.datagram(rport(20_000), S_GW_A, &opts(0), &p2); // replay
    inp.datagram(rport(20_000), S_GW_A, &[], &srtp(&mut a, 3, SSRC_A, None)); // no session_ID
    inp.datagram(
        rport(20_000),
        S_GW_A,
        &opts(2),
        &srtp(&mut a, 4, SSRC_A, None),
    ); // not armed
    let p5 = srtp(&mut a, 5, SSRC_A, None);
    inp.datagram(rport(20_000), S_GW_A_OTHER, &opts(0), &p5); // wrong tuple
    inp.datagram(
        rport(20_000),
        S_GW_A,
        &opts(0),
        &srtp(&mut rogue, 6, SSRC_A, None),
    ); // key
    inp.datagram(rport(20_000), S_STRANGER, &[], &p5); // not the leg's peer
    inp.datagram(rport(20_014), S_GW_A, &opts(0), &p5); // no leg
    inp.datagram(rport(20_000), S_GW_A, &[0x9e, 4, 0, 0], &p5); // malformed option
    inp.datagram(rport(20_001), S_GW_A_RTCP, &opts(0), &srtcp(&mut a, SSRC_A));
    inp.datagram(
        rport(20_002),
        S_GW_B,
        &opts(1),
        &srtp(&mut b, 100, SSRC_B, None),
    );
    inp.datagram(rport(20_002), S_GW_B, &[], &srtp(&mut b, 101, SSRC_B, None));
    inp.datagram(
        rport(20_000),
        S_GW_A,
        &opts(0),
        &srtp(&mut a, 7, SSRC_A, None),
    );
    inp.disarm(1);
    inp.datagram(
        rport(20_002),
        S_GW_B,
        &opts(1),
        &srtp(&mut b, 102, SSRC_B, None),
    );
    inp.call_ended(0);
    inp.datagram(
        rport(20_000),
        S_GW_A,
        &opts(0),
        &srtp(&mut a, 8, SSRC_A, None),
    );
    out.insert("seed-call-ipv4-option".into(), inp.finish());

    // The RTP header extension carrier (id 3 in both SDPs), with a bad-length element.
    let mut inp = RelayInput::new(RelayFuzzConfig::DEFAULT);
    relay_call(&mut inp, 0);
    arm_gw_a(&mut inp, 0, 0);
    let mut a = relay_sender(0);
    let ext = |n: usize| rtp_extension_block(3, SESSION_IDS[n]);
    for seq in 1..4 {
        let p = srtp(&mut a, seq, SSRC_A, Some(&ext(0)));
        inp.datagram(rport(20_000), S_GW_A, &[], &p);
    }
    inp.datagram(
        rport(20_000),
        S_GW_A,
        &[],
        &srtp(&mut a, 4, SSRC_A, Some(&ext(3))),
    );
    let bad_len = [0xbe, 0xde, 0, 1, 0x33, 1, 2, 3];
    inp.datagram(
        rport(20_000),
        S_GW_A,
        &[],
        &srtp(&mut a, 5, SSRC_A, Some(&bad_len)),
    );
    // Option and extension together: the option wins.
    let p = srtp(&mut a, 6, SSRC_A, Some(&ext(3)));
    inp.datagram(rport(20_000), S_GW_A, &opts(0), &p);
    inp.datagram(0x80, 0x80, &[], &srtp(&mut a, 7, SSRC_A, Some(&ext(0))));
    out.insert("seed-call-rtp-extension".into(), inp.finish());

    // Global mode: a phone that is no gateway must carry a session_ID too (for RTP); other
    // datagrams from the leg's peer pass.
    let cfg = RelayFuzzConfig {
        global: true,
        ..RelayFuzzConfig::DEFAULT
    };
    let mut inp = RelayInput::new(cfg);
    let phone = gw_sdp("192.0.2.200:7078", "a=rtcp-mux\r\n");
    inp.sdp(
        0,
        Side::Caller,
        SdpKind::Offer,
        Peer::Untrusted,
        Peer::Natural,
        &phone,
    );
    inp.sdp(
        0,
        Side::Callee,
        SdpKind::Answer,
        Peer::Natural,
        Peer::Untrusted,
        &callee_answer(),
    );
    let mut a = relay_sender(0);
    inp.datagram(rport(20_000), S_PHONE, &[], &srtp(&mut a, 1, SSRC_A, None));
    inp.datagram(rport(20_000), S_PHONE, &[], b"\x00\x01\x00\x00stun-like");
    inp.datagram(rport(20_001), S_PHONE, &[], b"\x00\x01\x00\x00stun-like");
    // The phone is no party: its key_update is refused.
    inp.arm(
        0,
        0,
        1,
        &[ArmStream {
            sel: 0,
            key: 0,
            ssrc: 0,
        }],
    );
    inp.arm(
        0,
        0,
        0,
        &[ArmStream {
            sel: 0,
            key: 0,
            ssrc: 0,
        }],
    );
    inp.datagram(rport(20_002), S_GW_B, &[], &srtp(&mut a, 2, SSRC_B, None));
    out.insert("seed-global-mode".into(), inp.finish());

    // Sampling: the first 2 packets verified, then one in 3.
    let cfg = RelayFuzzConfig {
        sampled: true,
        ..RelayFuzzConfig::DEFAULT
    };
    let mut inp = RelayInput::new(cfg);
    relay_call(&mut inp, 0);
    arm_gw_a(&mut inp, 0, 3);
    let mut a = relay_sender(3);
    for seq in 10..18 {
        inp.datagram(
            rport(20_000),
            S_GW_A,
            &opts(0),
            &srtp(&mut a, seq, SSRC_A, None),
        );
    }
    out.insert("seed-sampled".into(), inp.finish());

    // A rekey: the session re-armed with a new key; the old key verifies until the new one did.
    let mut inp = RelayInput::new(RelayFuzzConfig::DEFAULT);
    relay_call(&mut inp, 0);
    arm_gw_a(&mut inp, 0, 0);
    let mut old = relay_sender(0);
    let mut new = relay_sender(1);
    inp.datagram(
        rport(20_000),
        S_GW_A,
        &opts(0),
        &srtp(&mut old, 1, SSRC_A, None),
    );
    arm_gw_a(&mut inp, 0, 1);
    inp.datagram(
        rport(20_000),
        S_GW_A,
        &opts(0),
        &srtp(&mut old, 2, SSRC_A, None),
    );
    inp.datagram(
        rport(20_000),
        S_GW_A,
        &opts(0),
        &srtp(&mut new, 3, SSRC_A, None),
    );
    inp.datagram(
        rport(20_000),
        S_GW_A,
        &opts(0),
        &srtp(&mut old, 4, SSRC_A, None),
    );
    inp.datagram(
        rport(20_000),
        S_GW_A,
        &opts(0),
        &srtp(&mut new, 5, SSRC_A, None),
    );
    out.insert("seed-rekey".into(), inp.finish());

    // Re-INVITEs: a new address, hold (0.0.0.0), a video stream added, then refused.
    let mut inp = RelayInput::new(RelayFuzzConfig::DEFAULT);
    relay_call(&mut inp, 0);
    let moved = gw_sdp("192.0.2.11:40100", "a=rtcp:40105 IN IP4 192.0.2.11\r\n");
    inp.sdp(
        0,
        Side::Caller,
        SdpKind::Offer,
        Peer::Natural,
        Peer::Natural,
        &moved,
    );
    inp.sdp(
        0,
        Side::Callee,
        SdpKind::Answer,
        Peer::Natural,
        Peer::Natural,
        &callee_answer(),
    );
    // The legs now take gw-a's new address (the peer of the first leg, port 20000).
    arm_gw_a(&mut inp, 0, 2);
    let mut a = relay_sender(2);
    inp.datagram(
        rport(20_000),
        0x80,
        &opts(0),
        &srtp(&mut a, 1, SSRC_A, None),
    );
    inp.datagram(
        rport(20_000),
        S_GW_A,
        &opts(0),
        &srtp(&mut a, 2, SSRC_A, None),
    );
    let hold = gw_sdp(GW_A, "a=sendonly\r\n").replace("c=IN IP4 192.0.2.11", "c=IN IP4 0.0.0.0");
    inp.sdp(
        0,
        Side::Caller,
        SdpKind::Offer,
        Peer::Natural,
        Peer::Natural,
        &hold,
    );
    let video = format!(
        "{}m=video 40002 RTP/SAVP 96\r\na=rtpmap:96 VP8/90000\r\n{RELAY_KEY_LINE}",
        caller_offer()
    );
    inp.sdp(
        0,
        Side::Caller,
        SdpKind::Offer,
        Peer::Natural,
        Peer::Natural,
        &video,
    );
    let video_answer = format!(
        "{}m=video 50002 RTP/SAVP 96\r\nc=IN IP4 198.51.100.13\r\n{RELAY_KEY_LINE}",
        callee_answer()
    );
    inp.sdp(
        0,
        Side::Callee,
        SdpKind::Answer,
        Peer::Natural,
        Peer::Natural,
        &video_answer,
    );
    inp.datagram(0x80, 0x80, &opts(0), &srtp(&mut a, 3, SSRC_A, None));
    inp.datagram(0x84, 0x81, &[], &srtp(&mut a, 4, SSRC_A, None));
    let no_video = format!("{}m=video 0 RTP/SAVP 96\r\n", caller_offer());
    inp.sdp(
        0,
        Side::Caller,
        SdpKind::Offer,
        Peer::Natural,
        Peer::Natural,
        &no_video,
    );
    out.insert("seed-reinvite".into(), inp.finish());

    // Two calls at once; a gateway may not escrow the other call; call 1 ends first.
    let mut inp = RelayInput::new(RelayFuzzConfig::DEFAULT);
    relay_call(&mut inp, 0);
    relay_call(&mut inp, 1);
    arm_gw_a(&mut inp, 0, 0);
    // gw-b names call 0's gw-a stream: not its side.
    inp.arm(
        0,
        1,
        1,
        &[ArmStream {
            sel: 0,
            key: 2,
            ssrc: 0,
        }],
    );
    // gw-a names call 1's stream under call 0: not a media path of call 0.
    inp.arm(
        0,
        2,
        0,
        &[ArmStream {
            sel: 4,
            key: 0,
            ssrc: 0,
        }],
    );
    inp.arm(
        1,
        2,
        0,
        &[ArmStream {
            sel: 4,
            key: 0,
            ssrc: 1,
        }],
    );
    let mut a = relay_sender(0);
    inp.datagram(
        rport(20_004),
        S_GW_A,
        &opts(2),
        &srtp(&mut a, 1, SSRC_A, None),
    );
    inp.datagram(
        rport(20_000),
        S_GW_A,
        &opts(2),
        &srtp(&mut a, 2, SSRC_A, None),
    );
    inp.call_ended(1);
    inp.datagram(
        rport(20_004),
        S_GW_A,
        &opts(2),
        &srtp(&mut a, 3, SSRC_A, None),
    );
    relay_call(&mut inp, 2);
    out.insert("seed-two-calls".into(), inp.finish());

    // Bodies the relay refuses, and SDP variants it reads.
    let mut inp = RelayInput::new(RelayFuzzConfig::DEFAULT);
    inp.sdp(
        0,
        Side::Caller,
        SdpKind::Offer,
        Peer::Natural,
        Peer::Natural,
        "not sdp",
    );
    let v6 = caller_offer().replace("c=IN IP4 192.0.2.11", "c=IN IP6 2001:db8::1");
    inp.sdp(
        1,
        Side::Caller,
        SdpKind::Offer,
        Peer::Natural,
        Peer::Natural,
        &v6,
    );
    let media_c = "v=0\r\no=gw 7 7 IN IP4 192.0.2.11\r\ns=-\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0 8\r\n\
                   c=IN IP4 192.0.2.11\r\na=rtcp-mux\r\na=rtcp:40000\r\nm=audio 40002/2 RTP/AVP 0\r\n\
                   c=IN IP4 192.0.2.12\r\n";
    inp.sdp(
        2,
        Side::Caller,
        SdpKind::Offer,
        Peer::Untrusted,
        Peer::Natural,
        media_c,
    );
    inp.sdp(
        2,
        Side::Callee,
        SdpKind::Answer,
        Peer::Swapped,
        Peer::Stranger,
        &callee_answer(),
    );
    inp.arm(
        2,
        0,
        1,
        &[ArmStream {
            sel: 0x82,
            key: 0,
            ssrc: 0,
        }],
    );
    out.insert("seed-sdp-variants".into(), inp.finish());

    // A pool of 8 ports: two calls take all four pairs, a third is refused (503).
    let cfg = RelayFuzzConfig {
        port_count: 8,
        ..RelayFuzzConfig::DEFAULT
    };
    let mut inp = RelayInput::new(cfg);
    relay_call(&mut inp, 0);
    relay_call(&mut inp, 1);
    relay_call(&mut inp, 2);
    inp.call_ended(0);
    relay_call(&mut inp, 2);
    out.insert("seed-pool-full".into(), inp.finish());

    // first_port 20001: the pool's pairs start at 20002.
    let cfg = RelayFuzzConfig {
        odd_first_port: true,
        ..RelayFuzzConfig::DEFAULT
    };
    let mut inp = RelayInput::new(cfg);
    relay_call(&mut inp, 0);
    inp.arm(
        0,
        0,
        0,
        &[ArmStream {
            sel: 0,
            key: 0,
            ssrc: 1,
        }],
    );
    let mut a = relay_sender(0);
    inp.datagram(0x80, S_GW_A, &opts(0), &srtp(&mut a, 1, SSRC_A, None));
    out.insert("seed-odd-first-port".into(), inp.finish());
    // The shared pair (both gateways): both sides of a call on port 20000/20001, told apart
    // by source; the IPv4 option and the RTP extension carriers; sources with no leg there.
    let shared = RelayFuzzConfig {
        shared: Some(0),
        ..RelayFuzzConfig::DEFAULT
    };
    let mut inp = RelayInput::new(shared);
    relay_call(&mut inp, 0);
    // Legs: (20000, gw-a), (20000, gw-b), (20001, gw-a RTCP), (20001, gw-b RTCP).
    inp.arm(
        0,
        0,
        0,
        &[
            ArmStream {
                sel: 0,
                key: 0,
                ssrc: 1,
            },
            ArmStream {
                sel: 2,
                key: 0,
                ssrc: 1,
            },
            ArmStream {
                sel: 0x80 | 1,
                key: 0,
                ssrc: 2,
            },
        ],
    );
    inp.arm(
        0,
        1,
        1,
        &[ArmStream {
            sel: 1,
            key: 2,
            ssrc: 2,
        }],
    );
    let mut a = relay_sender(0);
    let mut b = relay_sender(2);
    let ext = |n: usize| rtp_extension_block(3, SESSION_IDS[n]);
    let p1 = srtp(&mut a, 1, SSRC_A, None);
    inp.datagram(rport(20_000), S_GW_A, &opts(0), &p1);
    inp.datagram(
        rport(20_000),
        S_GW_A,
        &[],
        &srtp(&mut a, 2, SSRC_A, Some(&ext(0))),
    );
    inp.datagram(rport(20_000), S_GW_A, &opts(0), &p1); // replay
    inp.datagram(
        rport(20_000),
        S_GW_B,
        &opts(1),
        &srtp(&mut b, 100, SSRC_B, None),
    );
    inp.datagram(rport(20_001), S_GW_A_RTCP, &opts(0), &srtcp(&mut a, SSRC_A));
    // gw-a's address with no leg on the shared port, with the option and with the extension.
    inp.datagram(
        rport(20_000),
        S_GW_A_OTHER,
        &opts(0),
        &srtp(&mut a, 3, SSRC_A, None),
    );
    inp.datagram(
        rport(20_000),
        S_GW_A_OTHER,
        &[],
        &srtp(&mut a, 4, SSRC_A, Some(&ext(0))),
    );
    inp.datagram(
        rport(20_000),
        S_STRANGER,
        &[],
        &srtp(&mut a, 5, SSRC_A, None),
    );
    // gw-b's RTP address on the RTCP port: no leg there.
    inp.datagram(
        rport(20_001),
        S_GW_B,
        &opts(1),
        &srtp(&mut b, 101, SSRC_B, None),
    );
    inp.datagram(0x80, 0x80, &opts(0), &srtp(&mut a, 6, SSRC_A, None));
    inp.call_ended(0);
    inp.datagram(
        rport(20_000),
        S_GW_A,
        &opts(0),
        &srtp(&mut a, 7, SSRC_A, None),
    );
    out.insert("seed-shared-call".into(), inp.finish());

    // A second call of gw-a from the address its first call has on the shared port: the caller
    // side falls back to a pair of its own (20002); the callee answers from a new address, on
    // the shared port. Once the first call ended, its address is free there again.
    let mut inp = RelayInput::new(shared);
    relay_call(&mut inp, 0);
    let b2 = gw_sdp(
        "198.51.100.12:50002",
        &format!("{EXTMAP}a=ssrc:{SSRC_B} cname:gw-b\r\n"),
    );
    inp.sdp(
        1,
        Side::Caller,
        SdpKind::Offer,
        Peer::Natural,
        Peer::Natural,
        &caller_offer(),
    );
    inp.sdp(
        1,
        Side::Callee,
        SdpKind::Answer,
        Peer::Natural,
        Peer::Natural,
        &b2,
    );
    // Legs: 20002, 20003 (call 1's gw-a), then on the shared pair (20000, gw-a),
    // (20000, gw-b), (20000, gw-b's second address), (20001, ...) likewise.
    inp.arm(
        1,
        2,
        0,
        &[ArmStream {
            sel: 0,
            key: 0,
            ssrc: 1,
        }],
    );
    inp.arm(
        0,
        0,
        0,
        &[ArmStream {
            sel: 2,
            key: 0,
            ssrc: 1,
        }],
    );
    inp.arm(
        1,
        3,
        1,
        &[ArmStream {
            sel: 4,
            key: 2,
            ssrc: 2,
        }],
    );
    // gw-a names call 1's path under call 0: refused.
    inp.arm(
        0,
        1,
        0,
        &[ArmStream {
            sel: 0,
            key: 0,
            ssrc: 1,
        }],
    );
    let mut a0 = relay_sender(0);
    let mut a1 = relay_sender(0);
    let mut b = relay_sender(2);
    inp.datagram(
        rport(20_002),
        S_GW_A,
        &opts(2),
        &srtp(&mut a1, 1, SSRC_A, None),
    );
    inp.datagram(
        rport(20_000),
        S_GW_A,
        &opts(0),
        &srtp(&mut a0, 100, SSRC_A, None),
    );
    // Call 1's session_ID on call 0's leg: not its stream.
    inp.datagram(
        rport(20_000),
        S_GW_A,
        &opts(2),
        &srtp(&mut a1, 2, SSRC_A, None),
    );
    // From gw-b's second address (the peer of the fifth leg) to call 1's gw-a.
    inp.datagram(
        rport(20_000),
        0x84,
        &opts(3),
        &srtp(&mut b, 50, SSRC_B, None),
    );
    inp.call_ended(0);
    inp.datagram(
        rport(20_000),
        S_GW_A,
        &opts(0),
        &srtp(&mut a0, 101, SSRC_A, None),
    );
    inp.datagram(
        rport(20_002),
        S_GW_A,
        &opts(2),
        &srtp(&mut a1, 3, SSRC_A, None),
    );
    relay_call(&mut inp, 2);
    out.insert("seed-shared-collision".into(), inp.finish());

    // A callee answering from an address another call has on the shared port is refused
    // (488), and so is a re-offer moving there; once that call moved away, it is accepted.
    let mut inp = RelayInput::new(shared);
    relay_call(&mut inp, 0);
    let a2 = "192.0.2.11:40010";
    inp.sdp(
        1,
        Side::Caller,
        SdpKind::Offer,
        Peer::Natural,
        Peer::Natural,
        &gw_sdp(a2, ""),
    );
    inp.sdp(
        1,
        Side::Callee,
        SdpKind::Answer,
        Peer::Natural,
        Peer::Natural,
        &callee_answer(),
    );
    inp.sdp(
        1,
        Side::Callee,
        SdpKind::Answer,
        Peer::Natural,
        Peer::Natural,
        &gw_sdp("198.51.100.12:50002", ""),
    );
    let to_a2 = gw_sdp(a2, "").replace("o=- 1 1", "o=- 1 2");
    inp.sdp(
        0,
        Side::Caller,
        SdpKind::Offer,
        Peer::Natural,
        Peer::Natural,
        &to_a2,
    );
    let away = gw_sdp("192.0.2.11:40100", "").replace("o=- 1 1", "o=- 1 2");
    inp.sdp(
        1,
        Side::Caller,
        SdpKind::Offer,
        Peer::Natural,
        Peer::Natural,
        &away,
    );
    inp.sdp(
        0,
        Side::Caller,
        SdpKind::Offer,
        Peer::Natural,
        Peer::Natural,
        &to_a2.replace("o=- 1 2", "o=- 1 3"),
    );
    // Legs on 20000: 192.0.2.11:40010 (call 0), 192.0.2.11:40100 (call 1), then gw-b's.
    inp.arm(
        0,
        0,
        0,
        &[ArmStream {
            sel: 0,
            key: 0,
            ssrc: 0,
        }],
    );
    inp.arm(
        0,
        1,
        0,
        &[ArmStream {
            sel: 1,
            key: 0,
            ssrc: 0,
        }],
    );
    let mut a = relay_sender(0);
    inp.datagram(
        rport(20_000),
        S_GW_A_OTHER,
        &opts(0),
        &srtp(&mut a, 1, SSRC_A, None),
    );
    inp.datagram(
        rport(20_000),
        S_GW_A,
        &opts(0),
        &srtp(&mut a, 2, SSRC_A, None),
    );
    out.insert("seed-shared-refused-answer".into(), inp.finish());

    // Only the callee's gateway shares (named in upper case), global mode, 6 ports: the
    // caller's side takes one of the two pairs left, so a third call is refused (503) until
    // one ends. Call 1's answer from gw-b's address, which call 0 has, is refused (488), then
    // it answers from another address.
    let cfg = RelayFuzzConfig {
        global: true,
        port_count: 6,
        shared: Some(2),
        ..RelayFuzzConfig::DEFAULT
    };
    let mut inp = RelayInput::new(cfg);
    let phone = gw_sdp("192.0.2.200:7078", "a=rtcp-mux\r\n");
    inp.sdp(
        0,
        Side::Caller,
        SdpKind::Offer,
        Peer::Untrusted,
        Peer::Natural,
        &phone,
    );
    inp.sdp(
        0,
        Side::Callee,
        SdpKind::Answer,
        Peer::Natural,
        Peer::Untrusted,
        &callee_answer(),
    );
    relay_call(&mut inp, 1);
    inp.sdp(
        1,
        Side::Callee,
        SdpKind::Answer,
        Peer::Natural,
        Peer::Natural,
        &gw_sdp("198.51.100.12:50002", ""),
    );
    inp.sdp(
        2,
        Side::Caller,
        SdpKind::Offer,
        Peer::Natural,
        Peer::Natural,
        &gw_sdp("192.0.2.11:40010", ""),
    );
    inp.sdp(
        3,
        Side::Caller,
        SdpKind::Offer,
        Peer::Untrusted,
        Peer::Stranger,
        &phone,
    );
    // Legs: 20002, 20003 (the phone), 20004, 20005 (gw-a), then the shared pair's.
    inp.arm(
        0,
        1,
        1,
        &[ArmStream {
            sel: 4,
            key: 2,
            ssrc: 2,
        }],
    );
    let mut p = relay_sender(0);
    let mut b = relay_sender(2);
    inp.datagram(rport(20_002), S_PHONE, &[], &srtp(&mut p, 1, SSRC_A, None));
    inp.datagram(rport(20_002), S_PHONE, &[], b"\x00\x01\x00\x00stun-like");
    inp.datagram(
        rport(20_000),
        S_GW_B,
        &opts(1),
        &srtp(&mut b, 1, SSRC_B, None),
    );
    inp.call_ended(0);
    inp.sdp(
        2,
        Side::Caller,
        SdpKind::Offer,
        Peer::Natural,
        Peer::Natural,
        &gw_sdp("192.0.2.11:40010", ""),
    );
    out.insert("seed-shared-callee-only".into(), inp.finish());

    // The odd first port: the shared pair is 20002/20003. gw-a muxes RTCP (two legs of one
    // address), the callee's gateway is the stranger gw-c (shared too in this config).
    let cfg = RelayFuzzConfig {
        odd_first_port: true,
        shared: Some(3),
        ..RelayFuzzConfig::DEFAULT
    };
    let mut inp = RelayInput::new(cfg);
    let muxed = gw_sdp(
        GW_A,
        &format!("a=rtcp-mux\r\na=ssrc:{SSRC_A} cname:gw-a\r\n"),
    );
    inp.sdp(
        0,
        Side::Caller,
        SdpKind::Offer,
        Peer::Natural,
        Peer::Stranger,
        &muxed,
    );
    inp.sdp(
        0,
        Side::Callee,
        SdpKind::Answer,
        Peer::Stranger,
        Peer::Natural,
        &callee_answer(),
    );
    // Legs: (20002, gw-a), (20002, gw-c), (20003, gw-a), (20003, gw-c RTCP).
    inp.arm(
        0,
        0,
        0,
        &[
            ArmStream {
                sel: 0,
                key: 0,
                ssrc: 1,
            },
            ArmStream {
                sel: 2,
                key: 0,
                ssrc: 1,
            },
        ],
    );
    inp.arm(
        0,
        1,
        2,
        &[ArmStream {
            sel: 1,
            key: 2,
            ssrc: 2,
        }],
    );
    let mut a = relay_sender(0);
    let mut b = relay_sender(2);
    // Port selector n is port 20000 + n with first_port 20001.
    inp.datagram(2, S_GW_A, &opts(0), &srtp(&mut a, 1, SSRC_A, None));
    inp.datagram(3, S_GW_A, &opts(0), &srtcp(&mut a, SSRC_A));
    inp.datagram(2, S_GW_B, &opts(1), &srtp(&mut b, 1, SSRC_B, None));
    out.insert("seed-shared-odd-first-port".into(), inp.finish());
    out
}

// --- media_bridge ---

fn key_attr(tag: u32, profile: SrtpProfile, seed: u8) -> CryptoAttribute {
    let ks: Vec<u8> = (0..(profile.key_len() + profile.salt_len()) as u8)
        .map(|i| i.wrapping_mul(0x2f) ^ seed)
        .collect();
    CryptoAttribute::new(tag, profile, &ks)
}

fn user_key() -> CryptoAttribute {
    key_attr(1, SrtpProfile::AesCm128HmacSha1_80, 0x11)
}

fn user_key_gcm() -> CryptoAttribute {
    key_attr(2, SrtpProfile::AeadAes128Gcm, 0x12)
}

fn far_key() -> CryptoAttribute {
    key_attr(1, SrtpProfile::AesCm128HmacSha1_80, 0x21)
}

fn far_key_2() -> CryptoAttribute {
    key_attr(1, SrtpProfile::AesCm128HmacSha1_80, 0x22)
}

fn sender(k: &CryptoAttribute) -> SrtpSession {
    SrtpSession::new(k.to_policy().expect("seed key")).expect("seed key")
}

/// An SDP body at `addr` with these keys (RTP/SAVP), or none (RTP/AVP), plus `extra` lines.
fn body(addr: &str, keys: &[&CryptoAttribute], extra: &str) -> String {
    let a: std::net::SocketAddr = addr.parse().expect("seed address");
    let proto = if keys.is_empty() {
        "RTP/AVP"
    } else {
        "RTP/SAVP"
    };
    let crypto: String = keys.iter().map(|k| format!("a=crypto:{k}\r\n")).collect();
    format!(
        "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} {proto} 0 8\r\n\
         a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n{crypto}{extra}",
        ip = a.ip(),
        port = a.port()
    )
}

/// Peer indexes (into BRIDGE_PEERS).
const USER_PEER: u8 = 0;
const SPG: u8 = 1;
/// Port selectors: call 0's inside and outside ports (first_port 30000), the n-th leg.
const INSIDE_0: u8 = 1;
const OUTSIDE_0: u8 = 3;
/// Source selectors (indexes into BRIDGE_SOURCES).
const S_USER: u8 = 0;
const S_RELAY: u8 = 1;
const S_OTHER_USER: u8 = 2;
const S_STRANGER_OUT: u8 = 4;
/// Room after the packet: HEADROOM, HEADROOM + 40, none.
const ROOM: u8 = 0;
const ROOM_MORE: u8 = 1;
const ROOM_NONE: u8 = 2;

/// Room for outward packets: with the RTP extension carrier the bridge wants HEADROOM left
/// after inserting the 16-byte extension block, so it is given more than HEADROOM.
fn out_room(carrier: Carrier) -> u8 {
    match carrier {
        Carrier::Ipv4Option => ROOM,
        Carrier::RtpExtension { .. } => ROOM_MORE,
    }
}

/// A user's call out through the provider, escrowed, with media both ways.
fn outgoing(carrier: Carrier) -> Vec<u8> {
    let cfg = BridgeFuzzConfig {
        carrier,
        ..BridgeFuzzConfig::DEFAULT
    };
    let room = out_room(carrier);
    let mut inp = BridgeInput::new(cfg);
    let (uk, fk) = (user_key(), far_key());
    let offer = body(
        USER,
        &[&uk, &user_key_gcm()],
        "a=candidate:1 1 UDP 1 10.1.0.50 4000 typ host\r\na=ssrc:4660 cname:alice\r\n",
    );
    inp.sdp(0, Side::Caller, SdpKind::Offer, USER_PEER, SPG, &offer);
    let answer = body(RELAY, &[&fk], "a=ssrc:4242 cname:far\r\n");
    inp.sdp(0, Side::Callee, SdpKind::Answer, SPG, USER_PEER, &answer);
    inp.sdp(0, Side::Callee, SdpKind::Answer, SPG, USER_PEER, &answer); // retransmission
    let mut user = sender(&uk);
    let mut far = sender(&fk);
    let mut rogue = sender(&far_key_2());
    inp.datagram(INSIDE_0, S_USER, room, &srtp(&mut user, 1, 4660, None)); // not escrowed
    inp.escrowed(0, 0);
    for seq in 2..6 {
        inp.datagram(INSIDE_0, S_USER, room, &srtp(&mut user, seq, 4660, None));
    }
    let p = srtp(&mut user, 6, 4660, Some(&rtp_extension_block(9, 1)));
    inp.datagram(INSIDE_0, S_USER, ROOM_MORE, &p);
    inp.datagram(INSIDE_0, S_USER, room, &p); // replay
    inp.datagram(
        INSIDE_0,
        S_OTHER_USER,
        room,
        &srtp(&mut user, 7, 4660, None),
    );
    inp.datagram(INSIDE_0, S_USER, room, &srtp(&mut rogue, 8, 4660, None));
    inp.datagram(INSIDE_0, S_USER, room, &srtcp(&mut user, 4660));
    inp.datagram(INSIDE_0, S_USER, room, &[0x80, 0, 0, 1]);
    inp.datagram(INSIDE_0, S_USER, ROOM_NONE, &srtp(&mut user, 9, 4660, None));
    inp.datagram(INSIDE_0, S_USER, ROOM, &srtp(&mut user, 12, 4660, None));
    // From the provider: its own session_ID extension, removed inside.
    let p = srtp(&mut far, 70, 4242, Some(&rtp_extension_block(5, 99)));
    inp.datagram(OUTSIDE_0, S_RELAY, ROOM, &p);
    inp.datagram(OUTSIDE_0, S_RELAY, ROOM, &srtp(&mut far, 71, 4242, None));
    inp.datagram(
        OUTSIDE_0,
        S_STRANGER_OUT,
        ROOM,
        &srtp(&mut far, 72, 4242, None),
    );
    inp.datagram(0x80, 0x80, room, &srtp(&mut user, 10, 4660, None));
    inp.call_ended(0);
    inp.datagram(INSIDE_0, S_USER, ROOM, &srtp(&mut user, 11, 4660, None));
    inp.finish()
}

fn bridge_seeds() -> Seeds {
    let mut out = Seeds::new();
    out.insert(
        "seed-outgoing-ipv4-option".into(),
        outgoing(Carrier::Ipv4Option),
    );
    out.insert(
        "seed-outgoing-rtp-extension".into(),
        outgoing(Carrier::RtpExtension { id: 5 }),
    );
    out.insert(
        "seed-outgoing-rtp-extension-14".into(),
        outgoing(Carrier::RtpExtension { id: 14 }),
    );

    // The provider calls a user (optional policy inside): the user answers plain RTP; escrow
    // at the ACK; plain RTP out as SRTP, SRTP in as plain RTP.
    let cfg = BridgeFuzzConfig {
        inside_policy: EncryptionPolicy::Optional,
        ..BridgeFuzzConfig::DEFAULT
    };
    let mut inp = BridgeInput::new(cfg);
    let fk = far_key();
    let gcm = key_attr(2, SrtpProfile::AeadAes256Gcm, 0x23);
    let offer = body(RELAY, &[&fk, &gcm], "a=ssrc:4242 cname:far\r\n");
    inp.sdp(1, Side::Caller, SdpKind::Offer, SPG, USER_PEER, &offer);
    inp.sdp(
        1,
        Side::Callee,
        SdpKind::Answer,
        USER_PEER,
        SPG,
        &body(USER, &[], ""),
    );
    inp.escrowed(1, 1); // nothing to tag before the ACK
    inp.acked(1, Side::Caller);
    inp.escrowed(1, 1);
    // Ports of call 1 (the first call of this input): 30000 inside, 30002 outside.
    for seq in 1..4 {
        inp.datagram(INSIDE_0, S_USER, ROOM, &rtp(seq, 77, None));
    }
    let mut far = sender(&fk);
    for seq in 500..503 {
        inp.datagram(OUTSIDE_0, S_RELAY, ROOM, &srtp(&mut far, seq, 4242, None));
    }
    inp.datagram(INSIDE_0, S_USER, ROOM, &rtp(3, 77, None)); // index reuse
    out.insert("seed-incoming-optional".into(), inp.finish());

    // Inside policy off: the provider's SRTP offer becomes a plain offer inside.
    let cfg = BridgeFuzzConfig {
        inside_policy: EncryptionPolicy::Off,
        one_address: true,
        ..BridgeFuzzConfig::DEFAULT
    };
    let mut inp = BridgeInput::new(cfg);
    inp.sdp(
        0,
        Side::Caller,
        SdpKind::Offer,
        SPG,
        USER_PEER,
        &body(RELAY, &[&fk], ""),
    );
    inp.sdp(
        0,
        Side::Callee,
        SdpKind::Answer,
        USER_PEER,
        SPG,
        &body(USER, &[], ""),
    );
    inp.acked(0, Side::Caller);
    inp.escrowed(0, 2);
    inp.datagram(INSIDE_0, S_USER, ROOM, &rtp(1, 5, None));
    let mut far = sender(&fk);
    inp.datagram(OUTSIDE_0, S_RELAY, ROOM, &srtp(&mut far, 1, 4242, None));
    out.insert("seed-incoming-off".into(), inp.finish());

    // A re-INVITE from the user: a new user key, a fresh provider-leg key on the same ports,
    // escrowed again (a rekey).
    let mut inp = BridgeInput::new(BridgeFuzzConfig::DEFAULT);
    let (uk, fk) = (user_key(), far_key());
    inp.sdp(
        0,
        Side::Caller,
        SdpKind::Offer,
        USER_PEER,
        SPG,
        &body(USER, &[&uk], ""),
    );
    inp.sdp(
        0,
        Side::Callee,
        SdpKind::Answer,
        SPG,
        USER_PEER,
        &body(RELAY, &[&fk], ""),
    );
    inp.escrowed(0, 0);
    let mut user = sender(&uk);
    inp.datagram(INSIDE_0, S_USER, ROOM, &srtp(&mut user, 1, 9, None));
    let uk2 = key_attr(1, SrtpProfile::AesCm128HmacSha1_80, 0x13);
    let fk2 = far_key_2();
    let reoffer = body(USER, &[&uk2], "a=sendrecv\r\n").replace("o=- 1 1", "o=- 1 2");
    inp.sdp(0, Side::Caller, SdpKind::Offer, USER_PEER, SPG, &reoffer);
    inp.sdp(
        0,
        Side::Callee,
        SdpKind::Answer,
        SPG,
        USER_PEER,
        &body(RELAY, &[&fk2], ""),
    );
    inp.escrowed(0, 0);
    let mut user2 = sender(&uk2);
    inp.datagram(INSIDE_0, S_USER, ROOM, &srtp(&mut user2, 2, 9, None));
    inp.datagram(INSIDE_0, S_USER, ROOM, &srtp(&mut user, 3, 9, None)); // old key: refused
    let mut far2 = sender(&fk2);
    inp.datagram(OUTSIDE_0, S_RELAY, ROOM, &srtp(&mut far2, 1, 4242, None));
    out.insert("seed-reinvite-rekey".into(), inp.finish());

    // Early media: the provider answers in a 183, then in the 200 (o= version moved on).
    let cfg = BridgeFuzzConfig {
        carrier: Carrier::RtpExtension { id: 1 },
        ..BridgeFuzzConfig::DEFAULT
    };
    let mut inp = BridgeInput::new(cfg);
    inp.sdp(
        0,
        Side::Caller,
        SdpKind::Offer,
        USER_PEER,
        SPG,
        &body(USER, &[&uk], ""),
    );
    let early = body(RELAY, &[&fk], "a=sendonly\r\n");
    inp.sdp(0, Side::Callee, SdpKind::Answer, SPG, USER_PEER, &early);
    inp.escrowed(0, 3);
    let mut user = sender(&uk);
    inp.datagram(INSIDE_0, S_USER, ROOM_MORE, &srtp(&mut user, 1, 9, None));
    let fin = body(RELAY, &[&fk], "a=sendrecv\r\n").replace("o=- 1 1", "o=- 1 2");
    inp.sdp(0, Side::Callee, SdpKind::Answer, SPG, USER_PEER, &fin);
    inp.escrowed(0, 3);
    inp.datagram(INSIDE_0, S_USER, ROOM_MORE, &srtp(&mut user, 2, 9, None));
    inp.datagram(INSIDE_0, S_USER, ROOM_MORE, &srtp(&mut user, 3, 9, None));
    out.insert("seed-early-media".into(), inp.finish());

    // What the gateway refuses (and what it passes on unchanged).
    let mut inp = BridgeInput::new(BridgeFuzzConfig::DEFAULT);
    inp.sdp(
        0,
        Side::Caller,
        SdpKind::Offer,
        USER_PEER,
        SPG,
        &body(USER, &[], ""),
    ); // plain
    inp.sdp(
        1,
        Side::Caller,
        SdpKind::Offer,
        SPG,
        USER_PEER,
        &body(RELAY, &[], ""),
    ); // plain
    inp.sdp(
        2,
        Side::Caller,
        SdpKind::Offer,
        USER_PEER,
        SPG,
        &body(USER, &[&uk], ""),
    );
    let wrong_tag = key_attr(7, SrtpProfile::AesCm128HmacSha1_80, 0x21);
    inp.sdp(
        2,
        Side::Callee,
        SdpKind::Answer,
        SPG,
        USER_PEER,
        &body(RELAY, &[&wrong_tag], ""),
    );
    inp.sdp(
        2,
        Side::Caller,
        SdpKind::Answer,
        USER_PEER,
        SPG,
        &body(USER, &[&uk], ""),
    );
    let two = body(RELAY, &[&fk, &far_key_2()], "");
    inp.sdp(2, Side::Callee, SdpKind::Answer, SPG, USER_PEER, &two);
    inp.sdp(
        3,
        Side::Caller,
        SdpKind::Offer,
        USER_PEER,
        SPG,
        "\u{0}\u{1}",
    );
    inp.sdp(
        3,
        Side::Callee,
        SdpKind::Answer,
        SPG,
        USER_PEER,
        &body(RELAY, &[&fk], ""),
    );
    let video_only = body(USER, &[&uk], "").replace("m=audio", "m=video");
    inp.sdp(3, Side::Caller, SdpKind::Offer, USER_PEER, SPG, &video_only);
    let tcp = body(USER, &[&uk], "").replace("RTP/SAVP", "TCP/RTP/SAVP");
    inp.sdp(3, Side::Caller, SdpKind::Offer, USER_PEER, SPG, &tcp);
    inp.sdp(
        1,
        Side::Caller,
        SdpKind::Offer,
        USER_PEER,
        USER_PEER,
        &body(USER, &[&uk], ""),
    );
    inp.sdp(
        1,
        Side::Caller,
        SdpKind::Offer,
        2,
        SPG,
        &body(USER, &[&uk], ""),
    );
    out.insert("seed-refusals".into(), inp.finish());

    // The provider refuses the audio stream (port 0): the refusal is passed on inside.
    let mut inp = BridgeInput::new(BridgeFuzzConfig::DEFAULT);
    let offer = format!(
        "{}m=video 4002 RTP/SAVP 96\r\na=crypto:{}\r\n",
        body(USER, &[&uk], ""),
        user_key_gcm()
    );
    inp.sdp(0, Side::Caller, SdpKind::Offer, USER_PEER, SPG, &offer);
    let refused = body(RELAY, &[&fk], "").replace("m=audio 20000", "m=audio 0");
    inp.sdp(0, Side::Callee, SdpKind::Answer, SPG, USER_PEER, &refused);
    inp.datagram(INSIDE_0, S_USER, ROOM, &srtp(&mut sender(&uk), 1, 9, None));
    out.insert("seed-audio-refused".into(), inp.finish());

    // A pool of 4 ports: one call takes both pairs, the next is refused (503).
    let cfg = BridgeFuzzConfig {
        port_count: 4,
        carrier: Carrier::RtpExtension { id: 5 },
        ..BridgeFuzzConfig::DEFAULT
    };
    let mut inp = BridgeInput::new(cfg);
    inp.sdp(
        0,
        Side::Caller,
        SdpKind::Offer,
        USER_PEER,
        SPG,
        &body(USER, &[&uk], ""),
    );
    inp.sdp(
        1,
        Side::Caller,
        SdpKind::Offer,
        USER_PEER,
        SPG,
        &body(USER, &[&uk], ""),
    );
    inp.sdp(
        0,
        Side::Callee,
        SdpKind::Answer,
        SPG,
        USER_PEER,
        &body(RELAY, &[&fk], ""),
    );
    inp.escrowed(0, 1);
    let mut user = sender(&uk);
    inp.datagram(INSIDE_0, S_USER, ROOM_MORE, &srtp(&mut user, 1, 9, None));
    inp.call_ended(0);
    inp.sdp(
        1,
        Side::Caller,
        SdpKind::Offer,
        USER_PEER,
        SPG,
        &body(USER, &[&uk], ""),
    );
    out.insert("seed-pool-full".into(), inp.finish());
    out
}
