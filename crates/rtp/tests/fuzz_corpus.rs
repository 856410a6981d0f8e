//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/`) and regression inputs
//! (`fuzz/regressions/<target>/`) through the logic of the cargo-fuzz targets, so `cargo test`
//! checks them without cargo-fuzz. The target logic itself lives in `fuzz/fuzz_logic.rs`,
//! shared with the targets.
//!
//! The seed corpora are made by `regenerate_seed_corpus` below (ignored; run it with
//! `cargo test -p voxgate-rtp --test fuzz_corpus -- --ignored regenerate_seed_corpus`).

#[path = "../../../fuzz/fuzz_logic.rs"]
mod fuzz_logic;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use fuzz_logic::{join_packets, sample_rtcp, sample_rtp, Config, Stats, MKI_TWO};
use voxgate_rtp::{CryptoAttribute, SrtpProfile, SrtpSession};

type Target = fn(&[u8]) -> Stats;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// The files of one directory, sorted by name. `required`: the directory must exist and hold
/// at least one file (so a missing corpus cannot make the test pass vacuously).
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

/// Runs every corpus and regression input of `name` through `target`; fails with the list of
/// inputs that panicked. Returns the summed stats of the corpus and the number of files.
fn replay(name: &str, target: Target) -> (Stats, usize) {
    let mut inputs = files_in(&fuzz_dir().join("corpus").join(name), true);
    inputs.extend(files_in(&fuzz_dir().join("regressions").join(name), false));
    let mut stats = Stats::default();
    let mut failed = Vec::new();
    for (path, bytes) in &inputs {
        match std::panic::catch_unwind(|| target(bytes)) {
            Ok(s) => stats.add(s),
            Err(e) => {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                failed.push(format!("{}: {msg}", path.display()));
            }
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
    (stats, inputs.len())
}

#[test]
fn srtp_unprotect_corpus() {
    let (stats, n) = replay("srtp_unprotect", fuzz_logic::srtp_unprotect);
    assert!(n >= 20, "{n} inputs");
    // The seeds hold valid packets of every profile: most of them must authenticate.
    assert!(stats.ok >= 100 && stats.err >= 20, "{stats:?}");
}

#[test]
fn keyring_unprotect_corpus() {
    let (stats, n) = replay("keyring_unprotect", fuzz_logic::keyring_unprotect);
    assert!(n >= 20, "{n} inputs");
    // Seeds made with key 0 of each profile (and no MKI) authenticate through the ring.
    assert!(stats.ok >= 20 && stats.err >= 10, "{stats:?}");
}

#[test]
fn sdp_parse_corpus() {
    let (stats, n) = replay("sdp_parse", fuzz_logic::sdp_parse);
    assert!(n >= 4, "{n} inputs");
    assert!(stats.ok >= 3 && stats.err >= 1, "{stats:?}");
}

#[test]
fn sip_parse_corpus() {
    let (stats, n) = replay("sip_parse", fuzz_logic::sip_parse);
    assert!(n >= 40, "{n} inputs");
    // The RFC 4475 seeds: most parse, 20 are refused (each input counts twice: datagram, stream).
    assert!(stats.ok >= 40 && stats.err >= 20, "{stats:?}");
}

#[test]
fn escrow_wire_corpus() {
    let (stats, n) = replay("escrow_wire", fuzz_logic::escrow_wire);
    assert!(n >= 7, "{n} inputs");
    assert!(stats.ok >= 6, "{stats:?}");
}

#[test]
fn proxy_input_corpus() {
    let (stats, n) = replay("proxy_input", fuzz_logic::proxy_input);
    assert!(n >= 50, "{n} inputs");
    // Most seeds get an answer (a challenge, a 400, a forwarded request).
    assert!(stats.ok >= 40, "{stats:?}");
}

#[test]
fn srtp_protect_corpus() {
    let (stats, n) = replay("srtp_protect", fuzz_logic::srtp_protect);
    assert!(n >= 20, "{n} inputs");
    assert!(stats.ok >= 100 && stats.err >= 20, "{stats:?}");
}

#[test]
fn sdes_parse_corpus() {
    let (stats, n) = replay("sdes_parse", fuzz_logic::sdes_parse);
    assert!(n >= 20, "{n} inputs");
    assert!(stats.ok >= 10 && stats.err >= 10, "{stats:?}");
}

#[test]
fn rtp_parse_corpus() {
    let (stats, n) = replay("rtp_parse", fuzz_logic::rtp_parse);
    assert!(n >= 10, "{n} inputs");
    assert!(stats.ok >= 10 && stats.err >= 5, "{stats:?}");
}

/// The committed corpora hold every generated seed, byte for byte (so the generator and the
/// corpus cannot drift apart, and the SRTP wire format of the crate is pinned by the seeds).
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

/// Writes the seed corpora into `fuzz/corpus/<target>/` (overwriting the `seed-*` files; files
/// of other names, such as minimised fuzzer finds, are kept).
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
        ("srtp_unprotect", srtp_unprotect_seeds()),
        ("srtp_protect", srtp_protect_seeds()),
        ("sdes_parse", sdes_parse_seeds()),
        ("rtp_parse", rtp_parse_seeds()),
    ]
}

fn short_name(p: SrtpProfile) -> &'static str {
    match p {
        SrtpProfile::AesCm128HmacSha1_80 => "cm80",
        SrtpProfile::AesCm128HmacSha1_32 => "cm32",
        SrtpProfile::AeadAes128Gcm => "gcm128",
        SrtpProfile::AeadAes256Gcm => "gcm256",
    }
}

/// The key variants of the SRTP seeds: (name, mki, two_keys).
const KEY_VARIANTS: [(&str, bool, bool); 3] = [
    ("nomki", false, false),
    ("mki1", true, false),
    ("mki2keys", true, true),
];

/// One-byte (RFC 8285 §4.2) extension body: ID 1 (3 bytes), ID 5 (1 byte), padding.
const EXT_ONE_BYTE: &[u8] = &[0x12, 0xaa, 0xbb, 0xcc, 0x50, 0x01, 0x00, 0x00];
/// Two-byte (RFC 8285 §4.3) extension body: ID 20 (5 bytes), ID 3 (0 bytes), padding.
const EXT_TWO_BYTE: &[u8] = &[20, 5, 1, 2, 3, 4, 5, 3, 0, 0, 0, 0];

/// Plain RTP packets of a stream that crosses a sequence number rollover, with CSRCs and
/// header extensions on some of them.
fn rtp_stream(ssrc: u32, first_seq: u16, count: u16) -> Vec<Vec<u8>> {
    (0..count)
        .map(|i| {
            let seq = first_seq.wrapping_add(i);
            match i % 4 {
                0 => sample_rtp(seq, ssrc, &[], None, 24),
                1 => sample_rtp(seq, ssrc, &[0x0102_0304, 0x0506_0708], None, 17),
                2 => sample_rtp(seq, ssrc, &[], Some((0xBEDE, EXT_ONE_BYTE)), 33),
                _ => sample_rtp(seq, ssrc, &[0x0a0b_0c0d], Some((0x1000, EXT_TWO_BYTE)), 8),
            }
        })
        .collect()
}

/// Protects `plains` in order with a sender of `cfg`'s keys (the lifetime left out, so any
/// number of packets can be made), using key `i % keys` for packet `i` in two-key sessions.
fn protect_all(cfg: &Config, plains: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let unlimited = Config {
        short_lifetime: false,
        ..*cfg
    };
    let mut tx = SrtpSession::new(unlimited.policy()).expect("seed policy");
    plains
        .iter()
        .enumerate()
        .map(|(i, p)| {
            if cfg.mki && cfg.two_keys {
                tx.set_active_key(MKI_TWO[i % 2]).unwrap();
            }
            if let Some(start) = cfg.start {
                if cfg.rtcp {
                    let ssrc = voxgate_rtp::RtcpHeader::parse(p).unwrap().ssrc;
                    if tx.tx_roc(ssrc).is_none() {
                        tx.set_srtcp_tx_index(ssrc, start).unwrap();
                    }
                } else {
                    let ssrc = voxgate_rtp::RtpHeader::parse(p).unwrap().ssrc;
                    if tx.tx_roc(ssrc).is_none() {
                        tx.set_tx_index(ssrc, u64::from(start) << 16).unwrap();
                    }
                }
            }
            let mut v = p.clone();
            if cfg.rtcp {
                tx.protect_rtcp_vec(&mut v).unwrap();
            } else {
                tx.protect_rtp_vec(&mut v).unwrap();
            }
            v
        })
        .collect()
}

fn flip(mut p: Vec<u8>, at_from_end: usize) -> Vec<u8> {
    let i = p.len() - at_from_end;
    p[i] ^= 0x01;
    p
}

fn srtp_unprotect_seeds() -> Seeds {
    let mut out = Seeds::new();
    for profile in SrtpProfile::ALL {
        for (kname, mki, two_keys) in KEY_VARIANTS {
            // SRTP: a stream across the rollover delivered out of order, with a replay, a
            // tampered tag, a second SSRC and an unknown-MKI (or truncated) packet.
            let cfg = Config {
                mki,
                two_keys,
                ..Config::new(profile, false)
            };
            let mut plains = rtp_stream(0x1111_2222, 65533, 6);
            plains.extend(rtp_stream(0x3333_4444, 7, 2));
            let s = protect_all(&cfg, &plains);
            let mut unknown_mki = s[7].clone();
            if mki {
                // MKI is before the tag (AES-CM) or at the end (GCM).
                let at = if profile.is_aead() {
                    unknown_mki.len() - 1
                } else {
                    unknown_mki.len() - profile.srtp_tag_len() - 1
                };
                unknown_mki[at] ^= 0x80;
            } else {
                unknown_mki.truncate(14);
            }
            let packets = vec![
                s[0].clone(),
                s[1].clone(),
                s[3].clone(), // seq 0: ROC 1
                s[2].clone(), // seq 65535, late across the rollover: ROC 0
                s[4].clone(),
                s[3].clone(), // replay
                flip(s[5].clone(), 1),
                s[5].clone(),
                s[6].clone(),
                unknown_mki,
                s[7].clone(),
            ];
            let name = format!("seed-srtp-{}-{kname}", short_name(profile));
            out.insert(name, join_packets(&cfg, &packets));

            // SRTCP: compound packets, out of order, a replay and a tampered one.
            let cfg = Config { rtcp: true, ..cfg };
            let plains: Vec<Vec<u8>> = (0..5u8)
                .map(|i| sample_rtcp(0x5555_6666 + u32::from(i / 3), i % 3))
                .collect();
            let s = protect_all(&cfg, &plains);
            let packets = vec![
                s[0].clone(),
                s[2].clone(),
                s[1].clone(),
                s[1].clone(), // replay
                flip(s[3].clone(), 2),
                s[3].clone(),
                s[4].clone(),
            ];
            let name = format!("seed-srtcp-{}-{kname}", short_name(profile));
            out.insert(name, join_packets(&cfg, &packets));
        }
    }
    // A stream that starts at ROC 7 (signalled to the receiver).
    let cfg = Config {
        start: Some(7),
        ..Config::new(SrtpProfile::AesCm128HmacSha1_80, false)
    };
    let s = protect_all(&cfg, &rtp_stream(0x7777_0001, 1, 4));
    out.insert("seed-srtp-cm80-roc7".into(), join_packets(&cfg, &s));
    let cfg = Config {
        start: Some(0xffff),
        ..Config::new(SrtpProfile::AeadAes128Gcm, false)
    };
    let s = protect_all(&cfg, &rtp_stream(0x7777_0002, 100, 3));
    out.insert("seed-srtp-gcm128-roc65535".into(), join_packets(&cfg, &s));
    // SRTCP indices near the 31-bit limit.
    let cfg = Config {
        start: Some(0x7fff_fffd),
        ..Config::new(SrtpProfile::AeadAes256Gcm, true)
    };
    let s = protect_all(&cfg, &(0..3).map(|i| sample_rtcp(9, i)).collect::<Vec<_>>());
    out.insert("seed-srtcp-gcm256-highindex".into(), join_packets(&cfg, &s));
    // Small replay window: a packet 100 behind the newest one is too old.
    let cfg = Config {
        small_window: true,
        ..Config::new(SrtpProfile::AesCm128HmacSha1_32, false)
    };
    let plains: Vec<_> = [10u16, 11, 100, 200]
        .iter()
        .map(|&q| sample_rtp(q, 0x0bad_cafe, &[], None, 12))
        .collect();
    let s = protect_all(&cfg, &plains);
    let packets = [&s[0], &s[1], &s[3], &s[2], &s[0]];
    out.insert(
        "seed-srtp-cm32-window64".into(),
        join_packets(&cfg, &packets),
    );
    // Short key lifetime: the seventh packet under the key is refused.
    let cfg = Config {
        short_lifetime: true,
        ..Config::new(SrtpProfile::AeadAes128Gcm, false)
    };
    let s = protect_all(&cfg, &rtp_stream(0x0001_0001, 1, 8));
    out.insert("seed-srtp-gcm128-lifetime".into(), join_packets(&cfg, &s));
    // Two keys without MKI: the policy is refused.
    let cfg = Config {
        two_keys: true,
        ..Config::new(SrtpProfile::AesCm128HmacSha1_80, false)
    };
    out.insert(
        "seed-srtp-cm80-2keys-nomki".into(),
        join_packets(&cfg, &rtp_stream(1, 1, 1)),
    );
    out
}

fn srtp_protect_seeds() -> Seeds {
    let mut out = Seeds::new();
    for profile in SrtpProfile::ALL {
        for (kname, mki, two_keys) in KEY_VARIANTS {
            let cfg = Config {
                mki,
                two_keys,
                ..Config::new(profile, false)
            };
            let mut plains = rtp_stream(0x2222_1111, 65534, 4);
            plains.push(plains[1].clone()); // index reuse: refused by the sender
            plains.push(vec![0x80, 0x60, 0, 1, 0, 0, 0, 0]); // too short
            plains.push(vec![0x40; 12]); // version 1
            plains.extend(rtp_stream(0x4444_3333, 1000, 2));
            let name = format!("seed-srtp-{}-{kname}", short_name(profile));
            out.insert(name, join_packets(&cfg, &plains));

            let cfg = Config { rtcp: true, ..cfg };
            let plains = vec![
                sample_rtcp(0x6666_5555, 0),
                sample_rtcp(0x6666_5555, 2),
                vec![0x81, 203, 0, 1, 0x66, 0x66, 0x55, 0x55], // BYE
                vec![0x80, 201, 0, 1, 0, 0, 0],                // short
                sample_rtcp(0x1234_5678, 1),
            ];
            let name = format!("seed-srtcp-{}-{kname}", short_name(profile));
            out.insert(name, join_packets(&cfg, &plains));
        }
    }
    let cfg = Config {
        start: Some(0xffff_fffe),
        ..Config::new(SrtpProfile::AesCm128HmacSha1_80, false)
    };
    out.insert(
        "seed-srtp-cm80-roc-near-max".into(),
        join_packets(&cfg, &rtp_stream(0x0f0f_0f0f, 65533, 5)),
    );
    let cfg = Config {
        start: Some(0x7fff_fffe),
        ..Config::new(SrtpProfile::AeadAes128Gcm, true)
    };
    let plains: Vec<_> = (0..4).map(|i| sample_rtcp(3, i)).collect();
    out.insert(
        "seed-srtcp-gcm128-index-near-max".into(),
        join_packets(&cfg, &plains),
    );
    let cfg = Config {
        short_lifetime: true,
        small_window: true,
        ..Config::new(SrtpProfile::AeadAes256Gcm, false)
    };
    out.insert(
        "seed-srtp-gcm256-lifetime-window64".into(),
        join_packets(&cfg, &rtp_stream(0x0101_0101, 500, 8)),
    );
    out
}

const RFC4568_KEY: &str = "PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR";

fn sdes_parse_seeds() -> Seeds {
    let mut lines: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut add = |name: &'static str, s: String| lines.push((name, s.into_bytes()));
    // RFC 4568 §4 example, as an SDP line, as an attribute value and as a tagless spec.
    add(
        "rfc4568-example",
        format!("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{RFC4568_KEY}|2^20|1:4"),
    );
    add(
        "rfc4568-value-crlf",
        format!("1 AES_CM_128_HMAC_SHA1_80 inline:{RFC4568_KEY}|2^20|1:4\r\n"),
    );
    add(
        "tagless",
        format!("AES_CM_128_HMAC_SHA1_80 inline:{RFC4568_KEY}"),
    );
    add(
        "crypto-prefix-tabs",
        format!("crypto:7\tAES_CM_128_HMAC_SHA1_32  inline:{RFC4568_KEY}|1048576"),
    );
    add(
        "two-keys-wsh-kdr",
        format!(
            "2 AES_CM_128_HMAC_SHA1_32 inline:{RFC4568_KEY}|2^20|1:4;\
             inline:QUJjZGVmMTIzNDU2Nzg5QUJDREUwMTIzNDU2Nzg5|2^20|2:4 WSH=256 KDR=0"
        ),
    );
    // GCM suites (RFC 7714 §14.2), keys made with the crate's own Display.
    for (name, profile, seed) in [
        ("gcm128", SrtpProfile::AeadAes128Gcm, 3u8),
        ("gcm256", SrtpProfile::AeadAes256Gcm, 4),
        ("cm80-key2", SrtpProfile::AesCm128HmacSha1_80, 5),
    ] {
        let ks: Vec<u8> = (0..(profile.key_len() + profile.salt_len()) as u8)
            .map(|i| i.wrapping_mul(29) ^ seed)
            .collect();
        add(
            name,
            CryptoAttribute::new(u32::from(seed), profile, &ks).to_string(),
        );
    }
    let gcm128 = CryptoAttribute::new(1, SrtpProfile::AeadAes128Gcm, &[0x5a; 28]).to_string();
    add("gcm128-unpadded", gcm128.trim_end_matches('=').to_string());
    let gcm256 = CryptoAttribute::new(9, SrtpProfile::AeadAes256Gcm, &[0xc3; 44]).to_string();
    add("gcm256-mki-lifetime", format!("{gcm256}|2^31|1000:2"));
    add(
        "three-keys-mki1",
        format!(
            "3 AES_CM_128_HMAC_SHA1_80 inline:{RFC4568_KEY}|1:1;inline:{RFC4568_KEY}|2:1;\
             inline:{RFC4568_KEY}|3:1"
        ),
    );
    add(
        "mki-128-bytes",
        format!("4 AES_CM_128_HMAC_SHA1_80 inline:{RFC4568_KEY}|2^10|18446744073709551615:128"),
    );
    add(
        "duplicate-mki",
        format!("5 AES_CM_128_HMAC_SHA1_80 inline:{RFC4568_KEY}|1:4;inline:{RFC4568_KEY}|1:4"),
    );
    add(
        "wsh-capped-kdr0",
        format!("6 AES_CM_128_HMAC_SHA1_80 inline:{RFC4568_KEY} WSH=100000 KDR=0"),
    );
    add(
        "unsupported-params",
        format!(
            "1 AES_CM_128_HMAC_SHA1_80 inline:{RFC4568_KEY} UNENCRYPTED_SRTCP \
             UNAUTHENTICATED_SRTP FEC_ORDER=FEC_SRTP FEC_KEY=inline:{RFC4568_KEY} KDR=1 FOO=bar"
        ),
    );
    add(
        "wsh-too-small",
        format!("1 AES_CM_128_HMAC_SHA1_80 inline:{RFC4568_KEY} WSH=10"),
    );
    // Near-valid lines: each broken in one place.
    add(
        "bad-base64",
        "1 AES_CM_128_HMAC_SHA1_80 inline:!!!!notbase64!!!!".into(),
    );
    add("short-key", "1 AES_CM_128_HMAC_SHA1_80 inline:AAAA".into());
    add(
        "unknown-suite",
        format!("1 AES_256_CM_HMAC_SHA1_80 inline:{RFC4568_KEY}"),
    );
    add(
        "lowercase-suite",
        format!("1 aes_cm_128_hmac_sha1_80 inline:{RFC4568_KEY}"),
    );
    add("missing-key", "1 AES_CM_128_HMAC_SHA1_80".into());
    add(
        "tag-zero",
        format!("0 AES_CM_128_HMAC_SHA1_80 inline:{RFC4568_KEY}"),
    );
    add(
        "tag-too-big",
        format!("1000000000 AES_CM_128_HMAC_SHA1_80 inline:{RFC4568_KEY}"),
    );
    add(
        "lifetime-2-64",
        format!("1 AES_CM_128_HMAC_SHA1_80 inline:{RFC4568_KEY}|2^64"),
    );
    add(
        "mki-value-too-big",
        format!("1 AES_CM_128_HMAC_SHA1_80 inline:{RFC4568_KEY}|256:1"),
    );
    add(
        "mki-before-lifetime",
        format!("1 AES_CM_128_HMAC_SHA1_80 inline:{RFC4568_KEY}|1:4|2^20"),
    );
    add(
        "uri-method",
        format!("1 AES_CM_128_HMAC_SHA1_80 uri:{RFC4568_KEY}"),
    );
    add(
        "two-keys-no-mki",
        format!("1 AES_CM_128_HMAC_SHA1_80 inline:{RFC4568_KEY};inline:{RFC4568_KEY}"),
    );
    add(
        "gcm-key-of-cm-length",
        format!("1 AEAD_AES_128_GCM inline:{RFC4568_KEY}"),
    );
    let mut out: Seeds = lines
        .into_iter()
        .map(|(n, b)| (format!("seed-{n}"), b))
        .collect();
    // Not UTF-8: the target parses the lossy conversion.
    let mut latin1 = format!("1 AES_CM_128_HMAC_SHA1_80 inline:{RFC4568_KEY} FOO=").into_bytes();
    latin1.extend_from_slice(&[0xe9, 0xff]);
    out.insert("seed-not-utf8".into(), latin1);
    out
}

fn rtp_parse_seeds() -> Seeds {
    let mut out = Seeds::new();
    let mut add = |n: &str, b: Vec<u8>| {
        out.insert(format!("seed-{n}"), b);
    };
    add("rtp-minimal", sample_rtp(1, 0x1234_5678, &[], None, 0));
    add("rtp-payload", sample_rtp(2, 0x1234_5678, &[], None, 160));
    let csrcs: Vec<u32> = (1..=15).collect();
    add("rtp-15-csrcs", sample_rtp(3, 1, &csrcs, None, 4));
    add(
        "rtp-ext-one-byte",
        sample_rtp(4, 1, &[7], Some((0xBEDE, EXT_ONE_BYTE)), 10),
    );
    // One-byte form with ID 15: parsing stops there.
    add(
        "rtp-ext-one-byte-id15",
        sample_rtp(
            5,
            1,
            &[],
            Some((0xBEDE, &[0x10, 0x01, 0xf3, 0x11, 0x22, 0x33, 0, 0])),
            3,
        ),
    );
    add(
        "rtp-ext-two-byte",
        sample_rtp(6, 1, &[], Some((0x1003, EXT_TWO_BYTE)), 10),
    );
    add(
        "rtp-ext-other-profile",
        sample_rtp(7, 1, &[], Some((0xABCD, &[1, 2, 3, 4])), 2),
    );
    // One-byte element longer than the block.
    add(
        "rtp-ext-element-overrun",
        sample_rtp(8, 1, &[], Some((0xBEDE, &[0x1f, 0, 0, 0])), 2),
    );
    let mut padded = sample_rtp(9, 1, &[], None, 5);
    padded.extend_from_slice(&[0, 0, 3]);
    padded[0] |= 0x20;
    add("rtp-padding", padded.clone());
    let last = padded.len() - 1;
    padded[last] = 200;
    add("rtp-bad-padding", padded);
    let mut trunc = sample_rtp(10, 1, &[], Some((0xBEDE, EXT_ONE_BYTE)), 0);
    trunc.truncate(18);
    add("rtp-truncated-ext", trunc);
    add("rtp-version1", vec![0x40; 12]);
    add("rtcp-compound-sr-sdes", sample_rtcp(0x0102_0304, 1));
    let mut rr_bye = vec![0x81, 201, 0, 7, 0, 0, 0, 1];
    rr_bye.extend_from_slice(&[0x22; 24]);
    rr_bye.extend_from_slice(&[0x81, 203, 0, 1, 0, 0, 0, 1]);
    add("rtcp-rr-bye", rr_bye.clone());
    rr_bye[3] = 40;
    add("rtcp-length-overrun", rr_bye);
    // An SRTP packet is also just bytes to the parsers.
    let cfg = Config {
        mki: true,
        ..Config::new(SrtpProfile::AesCm128HmacSha1_80, false)
    };
    let s = protect_all(&cfg, &rtp_stream(0x0abc_0def, 1, 3));
    add("srtp-ext-mki", s[2].clone());
    out
}
