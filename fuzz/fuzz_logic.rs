//! The logic of the voxgate-rtp fuzz targets, shared by the cargo-fuzz targets
//! (`fuzz/fuzz_targets/*.rs`) and by the corpus replay test
//! (`crates/rtp/tests/fuzz_corpus.rs`), which both include this file with `#[path]`.
//!
//! It depends on `voxgate_rtp` and `std` only, so that the replay test builds with the crate's
//! ordinary dev-dependencies. Every function takes arbitrary bytes: bad input must never panic;
//! the only panics are the property asserts below, each of which names what it checks.
//!
//! The SRTP targets share one input format:
//!
//! ```text
//! byte 0      config: bits 0-1 profile (index into SrtpProfile::ALL)
//!                     0x04 SRTCP instead of SRTP
//!                     0x08 the session's keys carry an MKI
//!                     0x10 two master keys (needs 0x08; without it the policy must be refused)
//!                     0x20 replay window of 64 (the minimum) instead of the default 128
//!                     0x40 master key lifetime of SHORT_LIFETIME packets
//!                     0x80 four bytes follow: a start ROC (SRTP) or SRTCP index
//! then        packets, each a big-endian u16 length and that many bytes (cut short at the
//!             end of the input), at most MAX_PACKETS of them
//! ```
#![allow(dead_code)]

use voxgate_rtp::packet::{is_rtcp, rtcp_compound, write_header_extension};
use voxgate_rtp::{
    CryptoAttribute, Error, ExtensionElement, ExtensionForm, MasterKey, RtcpHeader, RtpHeader,
    RtpPacket, SrtpPolicy, SrtpProfile, SrtpSession,
};

/// Packets of one input beyond this are ignored (keeps each run short).
pub const MAX_PACKETS: usize = 16;
/// The lifetime given to the keys when `FLAG_SHORT_LIFETIME` is set.
pub const SHORT_LIFETIME: u64 = 6;
/// The MKI of the single key of an MKI session.
pub const MKI_SINGLE: &[u8] = &[0x2a];
/// The MKIs of the two keys of a two-key session (key 0 is the active one at first).
pub const MKI_TWO: [&[u8]; 2] = [&[0, 0, 0, 1], &[0, 0, 0, 2]];

pub const FLAG_RTCP: u8 = 0x04;
pub const FLAG_MKI: u8 = 0x08;
pub const FLAG_TWO_KEYS: u8 = 0x10;
pub const FLAG_SMALL_WINDOW: u8 = 0x20;
pub const FLAG_SHORT_LIFETIME: u8 = 0x40;
pub const FLAG_START: u8 = 0x80;

/// Byte written after the end of the data in every buffer handed to the crate, to check that
/// in-place processing never writes past the bytes it returns.
const SENTINEL: u8 = 0xa5;
const SLACK: usize = 16;

/// What one run did: operations that succeeded and that were refused. The replay test uses it to
/// check that the seeds reach the success paths, not only the error paths.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub ok: usize,
    pub err: usize,
}

impl Stats {
    pub fn add(&mut self, other: Stats) {
        self.ok += other.ok;
        self.err += other.err;
    }
}

/// The session configuration picked by the first input byte(s) of the SRTP targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    pub profile: SrtpProfile,
    pub rtcp: bool,
    pub mki: bool,
    pub two_keys: bool,
    pub small_window: bool,
    pub short_lifetime: bool,
    /// Start ROC (SRTP) or start SRTCP index (SRTCP).
    pub start: Option<u32>,
}

impl Config {
    /// A plain configuration: one key, no MKI, default window, no lifetime.
    pub fn new(profile: SrtpProfile, rtcp: bool) -> Self {
        Config {
            profile,
            rtcp,
            mki: false,
            two_keys: false,
            small_window: false,
            short_lifetime: false,
            start: None,
        }
    }

    /// Splits the config off the front of an input.
    pub fn decode(data: &[u8]) -> Option<(Config, &[u8])> {
        let (&b, mut rest) = data.split_first()?;
        let start = if b & FLAG_START != 0 {
            let (s, r) = rest.split_at_checked(4)?;
            rest = r;
            Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
        } else {
            None
        };
        let cfg = Config {
            profile: SrtpProfile::ALL[(b & 3) as usize],
            rtcp: b & FLAG_RTCP != 0,
            mki: b & FLAG_MKI != 0,
            two_keys: b & FLAG_TWO_KEYS != 0,
            small_window: b & FLAG_SMALL_WINDOW != 0,
            short_lifetime: b & FLAG_SHORT_LIFETIME != 0,
            start,
        };
        Some((cfg, rest))
    }

    /// The bytes that [`Config::decode`] reads back as `self`.
    pub fn encode(&self) -> Vec<u8> {
        let p = SrtpProfile::ALL
            .iter()
            .position(|p| *p == self.profile)
            .unwrap_or(0) as u8;
        let flag = |on: bool, f: u8| if on { f } else { 0 };
        let mut v = vec![
            p | flag(self.rtcp, FLAG_RTCP)
                | flag(self.mki, FLAG_MKI)
                | flag(self.two_keys, FLAG_TWO_KEYS)
                | flag(self.small_window, FLAG_SMALL_WINDOW)
                | flag(self.short_lifetime, FLAG_SHORT_LIFETIME)
                | flag(self.start.is_some(), FLAG_START),
        ];
        if let Some(s) = self.start {
            v.extend_from_slice(&s.to_be_bytes());
        }
        v
    }

    /// The MKIs of the policy's keys, in order (`None` for a key without MKI).
    pub fn mkis(&self) -> Vec<Option<&'static [u8]>> {
        match (self.mki, self.two_keys) {
            (false, false) => vec![None],
            (false, true) => vec![None, None],
            (true, false) => vec![Some(MKI_SINGLE)],
            (true, true) => MKI_TWO.iter().map(|m| Some(*m)).collect(),
        }
    }

    /// The session policy: fixed keys (see [`master_key`]), the options the flags choose.
    /// With `two_keys` but not `mki` this policy is invalid on purpose.
    pub fn policy(&self) -> SrtpPolicy {
        let mut keys = self.mkis().into_iter().enumerate().map(|(n, mki)| {
            let mut k = master_key(self.profile, n as u8);
            if let Some(m) = mki {
                k = k.with_mki(m);
            }
            if self.short_lifetime {
                k = k.with_lifetime(SHORT_LIFETIME);
            }
            k
        });
        let first = keys.next().expect("mkis() is never empty");
        let mut policy = SrtpPolicy::new(first);
        for k in keys {
            policy = policy.with_key(k);
        }
        if self.small_window {
            policy = policy.with_replay_window(64);
        }
        policy
    }

    /// A session for this config, or `None` when the policy is (rightly) refused.
    pub fn session(&self) -> Option<SrtpSession> {
        match SrtpSession::new(self.policy()) {
            Ok(s) => Some(s),
            Err(e) => {
                assert!(
                    self.two_keys && !self.mki,
                    "SrtpSession::new refused a valid policy {self:?}: {e}"
                );
                assert!(
                    matches!(e, Error::InvalidPolicy { .. }),
                    "two keys without MKI: expected InvalidPolicy, got {e:?}"
                );
                None
            }
        }
    }

    fn mki_len(&self) -> usize {
        match (self.mki, self.two_keys) {
            (false, _) => 0,
            (true, false) => MKI_SINGLE.len(),
            (true, true) => MKI_TWO[0].len(),
        }
    }

    fn overhead(&self) -> usize {
        if self.rtcp {
            self.profile.srtcp_tag_len() + 4 + self.mki_len()
        } else {
            self.profile.srtp_tag_len() + self.mki_len()
        }
    }
}

/// The fixed master key number `n` of a profile (key and salt are simple byte patterns).
pub fn master_key(profile: SrtpProfile, n: u8) -> MasterKey {
    let key: Vec<u8> = (0..profile.key_len() as u8)
        .map(|i| i.wrapping_mul(0x1d).wrapping_add(0x41) ^ n.wrapping_mul(0x5b))
        .collect();
    let salt: Vec<u8> = (0..profile.salt_len() as u8)
        .map(|i| i.wrapping_mul(0x33).wrapping_add(0x07) ^ n.wrapping_mul(0x6d))
        .collect();
    MasterKey::new(profile, &key, &salt).expect("fixed key lengths match the profile")
}

/// Splits the packet part of an input: u16 big-endian length prefixes.
pub fn split_packets(mut data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while data.len() >= 2 && out.len() < MAX_PACKETS {
        let len = u16::from_be_bytes([data[0], data[1]]) as usize;
        let rest = &data[2..];
        let (pkt, tail) = rest.split_at(len.min(rest.len()));
        out.push(pkt);
        data = tail;
    }
    out
}

/// The inverse of [`Config::decode`] + [`split_packets`], for the seed generator.
pub fn join_packets<P: AsRef<[u8]>>(cfg: &Config, packets: &[P]) -> Vec<u8> {
    let mut v = cfg.encode();
    for p in packets {
        let p = p.as_ref();
        let len = u16::try_from(p.len()).expect("seed packets are under 64 KiB");
        v.extend_from_slice(&len.to_be_bytes());
        v.extend_from_slice(p);
    }
    v
}

fn unprotect(s: &mut SrtpSession, rtcp: bool, buf: &mut [u8], len: usize) -> Result<usize, Error> {
    if rtcp {
        s.unprotect_rtcp(buf, len)
    } else {
        s.unprotect_rtp(buf, len)
    }
}

fn protect(s: &mut SrtpSession, rtcp: bool, buf: &mut [u8], len: usize) -> Result<usize, Error> {
    if rtcp {
        s.protect_rtcp(buf, len)
    } else {
        s.protect_rtp(buf, len)
    }
}

fn with_slack(pkt: &[u8], extra: usize) -> Vec<u8> {
    let mut b = pkt.to_vec();
    b.resize(pkt.len() + extra + SLACK, SENTINEL);
    b
}

fn assert_no_write_past(buf: &[u8], from: usize, what: &str) {
    assert!(
        buf[from..].iter().all(|&b| b == SENTINEL),
        "{what} wrote past the end of its data (from byte {from})"
    );
}

/// Length of the part of a packet that protect leaves in the clear: the RTP header (fixed part,
/// CSRCs, extension) or the first 8 bytes of RTCP.
fn clear_header_len(rtcp: bool, pkt: &[u8]) -> usize {
    if rtcp {
        8
    } else {
        RtpHeader::parse(pkt).map_or(0, |h| h.header_len)
    }
}

/// Target `srtp_unprotect`: feeds the packets of one input to one receiving session.
///
/// Checks, for every packet: unprotect never panics nor writes past `len`; a `len` beyond the
/// buffer is `Truncated`; an accepted packet loses exactly the trailer, keeps its header, is
/// refused when it comes again (replay), and protecting its plaintext again under the index it
/// was accepted at (same key) gives back exactly the input bytes.
pub fn srtp_unprotect(data: &[u8]) -> Stats {
    let mut stats = Stats::default();
    let Some((cfg, rest)) = Config::decode(data) else {
        return stats;
    };
    let Some(mut rx) = cfg.session() else {
        return stats;
    };
    for pkt in split_packets(rest) {
        let len = pkt.len();
        if let (false, Some(roc)) = (cfg.rtcp, cfg.start) {
            if let Ok(h) = RtpHeader::parse(pkt) {
                if rx.rx_roc(h.ssrc).is_none() {
                    rx.set_rx_roc(h.ssrc, roc)
                        .expect("set_rx_roc on a new SSRC cannot fail");
                }
            }
        }
        // A length beyond the buffer is refused, not a panic.
        let mut exact = pkt.to_vec();
        let r = unprotect(&mut rx, cfg.rtcp, &mut exact, len + 1);
        assert!(
            matches!(r, Err(Error::Truncated { .. })),
            "len > buf.len() gave {r:?}"
        );

        let mut buf = with_slack(pkt, 0);
        match unprotect(&mut rx, cfg.rtcp, &mut buf, len) {
            Ok(n) => {
                stats.ok += 1;
                assert_no_write_past(&buf, len, "unprotect");
                assert_eq!(
                    n + cfg.overhead(),
                    len,
                    "unprotect removed the trailer only"
                );
                let hl = clear_header_len(cfg.rtcp, pkt);
                assert_eq!(&buf[..hl], &pkt[..hl], "unprotect changed the header");
                let plain = &buf[..n];
                assert!(
                    reprotect_matches(&cfg, &rx, pkt, plain),
                    "protecting the plaintext again did not give the input packet back"
                );
                let mut again = pkt.to_vec();
                let r = unprotect(&mut rx, cfg.rtcp, &mut again, len);
                assert!(
                    matches!(r, Err(Error::Replayed { .. } | Error::KeyExhausted { .. })),
                    "a packet accepted once must be refused as a replay, got {r:?}"
                );
            }
            Err(e) => {
                stats.err += 1;
                assert_no_write_past(&buf, len, "failed unprotect");
                assert!(!matches!(e, Error::Crypto), "crypto backend failure: {e}");
            }
        }
    }
    stats
}

/// Whether protecting `plain` with a fresh sender (same policy) at the index `original` was
/// accepted under reproduces `original`. The key is unknown here (it depends on the MKI), and
/// for SRTP so is the ROC: an accepted packet's ROC is the stream's current ROC or the one
/// before it (the replay window is shorter than 2^16); every combination is tried.
fn reprotect_matches(cfg: &Config, rx: &SrtpSession, original: &[u8], plain: &[u8]) -> bool {
    for mki in cfg.mkis() {
        let mut candidates = Vec::new();
        if cfg.rtcp {
            let h = RtcpHeader::parse(plain).expect("an accepted SRTCP packet has an RTCP header");
            let at = if cfg.profile.is_aead() {
                original.len() - cfg.mki_len() - 4
            } else {
                original.len() - cfg.profile.srtcp_tag_len() - cfg.mki_len() - 4
            };
            let e_index = u32::from_be_bytes([
                original[at],
                original[at + 1],
                original[at + 2],
                original[at + 3],
            ]);
            candidates.push((h.ssrc, u64::from(e_index & 0x7fff_ffff)));
        } else {
            let h = RtpHeader::parse(plain).expect("an accepted SRTP packet has an RTP header");
            let roc = rx
                .rx_roc(h.ssrc)
                .expect("an accepted packet's stream exists");
            let seq = u64::from(h.sequence_number);
            candidates.push((h.ssrc, u64::from(roc) << 16 | seq));
            if roc > 0 {
                candidates.push((h.ssrc, u64::from(roc - 1) << 16 | seq));
            }
        }
        for (ssrc, index) in candidates {
            let mut tx = SrtpSession::new(cfg.policy()).expect("policy was accepted before");
            if let Some(m) = mki {
                tx.set_active_key(m).expect("MKI of the policy");
            }
            if cfg.rtcp {
                tx.set_srtcp_tx_index(ssrc, index as u32)
                    .expect("fresh session");
            } else if index > 0 {
                // set_tx_index marks the index it is given as used: give the one before.
                tx.set_tx_index(ssrc, index - 1).expect("fresh session");
            }
            let mut out = with_slack(plain, cfg.overhead());
            let n = protect(&mut tx, cfg.rtcp, &mut out, plain.len())
                .expect("re-protecting an accepted packet's plaintext must succeed");
            if out[..n] == *original {
                return true;
            }
        }
    }
    false
}

/// Target `srtp_protect`: protects each packet of an input with one sending session and
/// unprotects the result with one receiving session (same keys).
///
/// Checks: protect never panics nor writes past its output; a too-small buffer is refused
/// and left untouched; a protected packet grows by exactly the
/// overhead and keeps its header in the clear; it equals, byte for byte, what an independent
/// sender built on aws-lc-rs primitives makes ([`reference`]); with any one bit flipped, or its
/// last byte cut, it is refused; the receiver accepts every packet the sender protected and gets
/// the original bytes back; sender and receiver agree on the ROC; and once all packets went
/// through, none of the protected packets is accepted a second time.
pub fn srtp_protect(data: &[u8]) -> Stats {
    let mut stats = Stats::default();
    let Some((cfg, rest)) = Config::decode(data) else {
        return stats;
    };
    let (Some(mut tx), Some(mut rx)) = (cfg.session(), cfg.session()) else {
        return stats;
    };
    let reference: Vec<reference::Keys> = (0..cfg.mkis().len())
        .map(|n| reference::Keys::derive(&master_key(cfg.profile, n as u8), cfg.rtcp))
        .collect();
    let mut srtcp_next: std::collections::HashMap<u32, u32> = Default::default();
    let mut sent: Vec<Vec<u8>> = Vec::new();
    for (i, pkt) in split_packets(rest).into_iter().enumerate() {
        let len = pkt.len();
        // Two-key sessions alternate the sending key.
        let key_n = if cfg.mki && cfg.two_keys { i % 2 } else { 0 };
        if cfg.mki && cfg.two_keys {
            tx.set_active_key(MKI_TWO[key_n])
                .expect("MKI of the policy");
        }
        if let Some(start) = cfg.start {
            let ssrc = if cfg.rtcp {
                RtcpHeader::parse(pkt).ok().map(|h| h.ssrc)
            } else {
                RtpHeader::parse(pkt).ok().map(|h| h.ssrc)
            };
            // A stream that the sender does not know yet starts at the given ROC/index.
            if let Some(ssrc) = ssrc.filter(|s| tx.tx_roc(*s).is_none()) {
                if cfg.rtcp {
                    tx.set_srtcp_tx_index(ssrc, start).expect("new stream");
                } else {
                    // The first packet goes out under ROC `start` exactly (set_tx_index takes
                    // the index before it), and the receiver is told that ROC.
                    let seq = RtpHeader::parse(pkt).map_or(0, |h| u64::from(h.sequence_number));
                    let first = u64::from(start) << 16 | seq;
                    if first > 0 {
                        tx.set_tx_index(ssrc, first - 1).expect("new stream");
                    }
                    rx.set_rx_roc(ssrc, start).expect("new stream");
                }
            }
        }

        // One byte short of room: refused before anything is touched.
        let mut small = pkt.to_vec();
        small.resize(len + cfg.overhead() - 1, SENTINEL);
        let before = small.clone();
        let r = protect(&mut tx, cfg.rtcp, &mut small, len);
        assert!(r.is_err(), "protect into a too-small buffer succeeded");
        assert_eq!(
            small, before,
            "a refused protect changed the buffer ({r:?})"
        );

        let mut buf = with_slack(pkt, cfg.overhead());
        match protect(&mut tx, cfg.rtcp, &mut buf, len) {
            Ok(n) => {
                stats.ok += 1;
                assert_eq!(n, len + cfg.overhead(), "protect added the overhead");
                assert_no_write_past(&buf, n, "protect");
                let hl = clear_header_len(cfg.rtcp, pkt);
                assert_eq!(&buf[..hl], &pkt[..hl], "protect changed the header");
                let protected = buf[..n].to_vec();
                let mki = cfg.mkis()[key_n].unwrap_or(&[]);
                let refk = &reference[key_n];
                if cfg.rtcp {
                    let ssrc = RtcpHeader::parse(pkt).expect("protected, so parses").ssrc;
                    let next = srtcp_next
                        .entry(ssrc)
                        .or_insert(cfg.start.unwrap_or(0) & 0x7fff_ffff);
                    let want = refk.protect_rtcp(pkt, *next, mki);
                    assert!(
                        protected == want,
                        "SRTCP packet {i} differs from the reference (index {next})"
                    );
                    *next += 1;
                } else {
                    let ssrc = RtpHeader::parse(pkt).expect("protected, so parses").ssrc;
                    let roc = tx.tx_roc(ssrc).expect("stream exists after protect");
                    let seq = u64::from(u16::from_be_bytes([pkt[2], pkt[3]]));
                    let tag_len = cfg.profile.srtp_tag_len();
                    let same =
                        |r: u32| refk.protect_rtp(pkt, u64::from(r) << 16 | seq, mki, tag_len);
                    assert!(
                        protected == same(roc) || (roc > 0 && protected == same(roc - 1)),
                        "SRTP packet {i} differs from the reference (ROC {roc} or the one before)"
                    );
                }
                // Any one bit flipped, or the last byte cut off: refused.
                let bit = protected
                    .iter()
                    .fold(i, |h, &b| h.wrapping_mul(31).wrapping_add(b as usize))
                    % (n * 8);
                let mut forged = protected.clone();
                forged[bit / 8] ^= 1 << (bit % 8);
                let r = unprotect(&mut rx, cfg.rtcp, &mut forged, n);
                assert!(r.is_err(), "packet {i} with bit {bit} flipped was accepted");
                let mut cut = protected.clone();
                let r = unprotect(&mut rx, cfg.rtcp, &mut cut, n - 1);
                assert!(r.is_err(), "packet {i} without its last byte was accepted");
                let mut back = with_slack(&protected, 0);
                let m = unprotect(&mut rx, cfg.rtcp, &mut back, n).unwrap_or_else(|e| {
                    panic!("receiver refused packet {i} that the sender protected: {e}")
                });
                assert_no_write_past(&back, n, "unprotect");
                assert_eq!(&back[..m], pkt, "round trip changed packet {i}");
                if !cfg.rtcp {
                    let ssrc = RtpHeader::parse(pkt).expect("protected, so parses").ssrc;
                    assert_eq!(
                        tx.tx_roc(ssrc),
                        rx.rx_roc(ssrc),
                        "ROC of sender and receiver"
                    );
                }
                sent.push(protected);
            }
            Err(e) => {
                stats.err += 1;
                assert_no_write_past(&buf, len + cfg.overhead(), "failed protect");
                assert_eq!(
                    &buf[..len],
                    pkt,
                    "a refused protect changed the packet ({e})"
                );
                assert!(!matches!(e, Error::Crypto), "crypto backend failure: {e}");
            }
        }
    }
    for (i, p) in sent.iter().enumerate() {
        let mut b = p.clone();
        let r = unprotect(&mut rx, cfg.rtcp, &mut b, p.len());
        assert!(r.is_err(), "protected packet {i} was accepted twice");
    }
    stats
}

/// Target `sdes_parse`: parses the input as an `a=crypto` attribute, as UTF-8 when it is, and
/// as the lossy UTF-8 conversion of the bytes.
///
/// Checks on an attribute that parses: `Display` then parse gives an equal attribute and the same
/// text again (also as a full `a=crypto:` SDP line); `Debug` shows no key; the master keys build;
/// `to_policy` fails only on an unsupported session parameter; `SrtpSession::new` fails only on a
/// duplicate MKI; and with the session, every key protects an RTP and an RTCP packet that a
/// second session of the same policy unprotects back to the original.
pub fn sdes_parse(data: &[u8]) -> Stats {
    let mut stats = Stats::default();
    if let Ok(s) = std::str::from_utf8(data) {
        sdes_one(s, &mut stats);
    } else {
        sdes_one(&String::from_utf8_lossy(data), &mut stats);
    }
    stats
}

fn sdes_one(s: &str, stats: &mut Stats) {
    let a = match CryptoAttribute::parse(s) {
        Ok(a) => a,
        Err(e) => {
            stats.err += 1;
            assert!(!matches!(e, Error::Crypto), "crypto backend failure: {e}");
            return;
        }
    };
    stats.ok += 1;
    let text = a.to_string();
    let b = CryptoAttribute::parse(&text)
        .unwrap_or_else(|e| panic!("Display output does not parse ({e}): {text:?}"));
    assert_eq!(a, b, "Display then parse changed the attribute ({text:?})");
    assert_eq!(b.to_string(), text, "Display is not stable");
    if a.tag.is_some() {
        let line = format!("a=crypto:{text}\r\n");
        let c = CryptoAttribute::parse(&line)
            .unwrap_or_else(|e| panic!("SDP line {line:?} does not parse: {e}"));
        assert_eq!(a, c, "the a=crypto: line parses differently");
    }
    // The keys' Debug only: session parameters are shown as given (FEC_KEY's value included).
    let debug = format!("{:?}", a.keys);
    for k in &a.keys {
        let hex: String = k.key_salt.iter().map(|b| format!("{b:02x}")).collect();
        let one = CryptoAttribute::new(1, a.suite, &k.key_salt).to_string();
        let b64 = one.rsplit("inline:").next().unwrap_or_default();
        assert!(
            !debug.contains(&hex) && !debug.contains(b64),
            "Debug shows key material: {debug}"
        );
    }

    let keys = a
        .master_keys()
        .unwrap_or_else(|e| panic!("parsed attribute's master keys: {e}"));
    assert_eq!(keys.len(), a.keys.len());
    let policy = match a.to_policy() {
        Ok(p) => p,
        Err(e) => {
            assert!(
                matches!(e, Error::UnsupportedSessionParam { .. }),
                "to_policy of a parsed attribute failed with {e:?}"
            );
            return;
        }
    };
    let mkis: Vec<Option<Vec<u8>>> = a.keys.iter().map(|k| k.mki.map(|m| m.bytes())).collect();
    let mut tx = match SrtpSession::new(policy.clone()) {
        Ok(s) => s,
        Err(e) => {
            let dup = (0..mkis.len()).any(|i| mkis[..i].contains(&mkis[i]));
            assert!(
                dup && matches!(e, Error::InvalidPolicy { .. }),
                "SrtpSession::new refused the policy of {text:?}: {e:?}"
            );
            return;
        }
    };
    let mut rx = SrtpSession::new(policy).expect("same policy as tx");
    for (i, mki) in mkis.iter().enumerate() {
        tx.set_active_key(mki.as_deref().unwrap_or(&[]))
            .expect("MKI of the policy");
        for rtcp in [false, true] {
            let pkt = if rtcp {
                sample_rtcp(0x5d5d_0001, 1)
            } else {
                sample_rtp(i as u16, 0x5d5d_0001, &[], None, 20)
            };
            let mut buf = pkt.clone();
            buf.resize(pkt.len() + 4 + 16 + 128, 0);
            let n = protect(&mut tx, rtcp, &mut buf, pkt.len())
                .unwrap_or_else(|e| panic!("protect with key {i} of {text:?}: {e}"));
            let m = unprotect(&mut rx, rtcp, &mut buf, n)
                .unwrap_or_else(|e| panic!("unprotect with key {i} of {text:?}: {e}"));
            assert_eq!(&buf[..m], &pkt[..], "round trip with key {i} of {text:?}");
        }
    }
}

/// An RTP packet: version 2, the given CSRCs, an optional header extension block
/// (profile, body), and `payload_len` payload bytes.
pub fn sample_rtp(
    seq: u16,
    ssrc: u32,
    csrcs: &[u32],
    ext: Option<(u16, &[u8])>,
    payload_len: usize,
) -> Vec<u8> {
    let b0 = 0x80 | if ext.is_some() { 0x10 } else { 0 } | (csrcs.len() as u8 & 0x0f);
    let mut p = vec![b0, 0x60];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&u32::from(seq).wrapping_mul(160).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    for c in csrcs {
        p.extend_from_slice(&c.to_be_bytes());
    }
    if let Some((profile, body)) = ext {
        assert_eq!(body.len() % 4, 0, "extension body is whole words");
        p.extend_from_slice(&profile.to_be_bytes());
        p.extend_from_slice(&((body.len() / 4) as u16).to_be_bytes());
        p.extend_from_slice(body);
    }
    p.extend((0..payload_len).map(|i| (i as u8).wrapping_mul(3) ^ seq as u8));
    p
}

/// A compound RTCP packet: a sender report with `reports` report blocks, then an SDES CNAME.
pub fn sample_rtcp(ssrc: u32, reports: u8) -> Vec<u8> {
    let words = 6 + 6 * reports as u16;
    let mut p = vec![0x80 | reports, 200];
    p.extend_from_slice(&words.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend((0..20).map(|i| i as u8 ^ 0x3c)); // NTP, RTP timestamp, counts
    for r in 0..reports {
        p.extend_from_slice(&(0x1000_0000 + u32::from(r)).to_be_bytes());
        p.extend((0..20).map(|i| (i as u8).wrapping_add(r)));
    }
    // SDES: one chunk, CNAME "voxgate", end, padding to a word.
    p.extend_from_slice(&[0x81, 202, 0, 4]);
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[1, 7]);
    p.extend_from_slice(b"voxgate");
    p.extend_from_slice(&[0, 0, 0]);
    p
}

/// Target `rtp_parse`: every packet view on arbitrary bytes.
///
/// Checks: `RtpHeader` and `RtpPacket` agree and stay inside the buffer; the CSRC list, the
/// extension and the payload are inside it; RFC 8285 elements are inside the extension block and,
/// when the block is well-formed, `write_header_extension` writes elements that parse back equal;
/// `rtcp_compound` yields packets that tile the front of the buffer.
pub fn rtp_parse(data: &[u8]) -> Stats {
    let mut stats = Stats::default();
    let header = RtpHeader::parse(data);
    match (&header, RtpPacket::parse(data)) {
        (Ok(h), Ok(p)) => {
            stats.ok += 1;
            assert_eq!(p.header(), h);
            assert!(h.header_len <= data.len());
            assert!(h.header_len >= 12 + 4 * h.csrc_count as usize);
            assert_eq!(p.csrcs().count(), h.csrc_count as usize);
            let payload = p.payload();
            assert!(h.header_len + payload.len() <= data.len());
            assert_eq!(p.as_bytes(), data);
            assert_eq!(p.extension().is_some(), h.extension);
            if let Some(ext) = p.extension() {
                check_extension(ext.profile, ext.data);
                assert!(ext.data.len() + 16 <= h.header_len);
            }
        }
        (Ok(h), Err(e)) => {
            stats.err += 1;
            assert!(
                h.padding,
                "only padding makes RtpPacket stricter than RtpHeader"
            );
            assert!(matches!(e, Error::BadPadding { .. }), "{e:?}");
        }
        (Err(e), Ok(_)) => panic!("RtpPacket parsed what RtpHeader refused ({e})"),
        (Err(_), Err(_)) => stats.err += 1,
    }
    // Any bytes as an extension block too (profile from the first two bytes).
    if let Some((p, body)) = data.split_at_checked(2) {
        check_extension(u16::from_be_bytes([p[0], p[1]]), body);
    }

    let _ = is_rtcp(data);
    if let Ok(h) = RtcpHeader::parse(data) {
        assert!(h.packet_len >= 4 && h.packet_len % 4 == 0);
    }
    let mut pos = 0;
    for r in rtcp_compound(data) {
        match r {
            Ok((h, bytes)) => {
                stats.ok += 1;
                assert_eq!(bytes.len(), h.packet_len);
                assert_eq!(bytes, &data[pos..pos + h.packet_len]);
                pos += h.packet_len;
            }
            Err(_) => stats.err += 1,
        }
    }
    assert!(pos <= data.len());
    stats
}

fn check_extension(profile: u16, data: &[u8]) {
    let ext = voxgate_rtp::HeaderExtension { profile, data };
    let mut els: Vec<ExtensionElement<'_>> = Vec::new();
    let mut malformed = false;
    for e in ext.elements().take(data.len() + 1) {
        match e {
            Ok(e) => {
                let start = e.data.as_ptr() as usize - data.as_ptr() as usize;
                assert!(
                    start + e.data.len() <= data.len(),
                    "element outside the block"
                );
                els.push(e);
            }
            Err(_) => malformed = true,
        }
    }
    assert!(els.len() <= data.len(), "more elements than bytes");
    if let ExtensionForm::Other(_) = ext.form() {
        assert!(
            els.is_empty() && !malformed,
            "elements of a non-RFC 8285 block"
        );
        return;
    }
    for e in &els {
        let _ = ext.find(e.id);
    }
    // Elements with ID 0 are not written (0 marks padding); see the README for that case.
    if malformed || els.is_empty() || els.iter().any(|e| e.id == 0) {
        return;
    }
    let mut out = vec![0u8; 4 + 2 * els.len() + data.len() + 4];
    let n = write_header_extension(&els, &mut out)
        .unwrap_or_else(|e| panic!("write_header_extension of parsed elements: {e}"));
    assert_eq!(n % 4, 0);
    let words = u16::from_be_bytes([out[2], out[3]]) as usize;
    assert_eq!(4 + 4 * words, n, "extension length word");
    let again = voxgate_rtp::HeaderExtension {
        profile: u16::from_be_bytes([out[0], out[1]]),
        data: &out[4..n],
    };
    let back: Vec<_> = again
        .elements()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("written extension does not parse: {e}"));
    assert_eq!(back, els, "extension elements write/parse round trip");
}

/// An independent SRTP/SRTCP sender written from the RFCs on top of aws-lc-rs primitives
/// (AES-CTR, AES-GCM, HMAC-SHA1), to check the crate's own AES-GCM and HMAC code byte for byte.
/// Layouts as in libsrtp (see `crates/rtp/src/srtp.rs`).
pub mod reference {
    use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, AES_256_GCM};
    use aws_lc_rs::cipher::{EncryptingKey, EncryptionContext, UnboundCipherKey, AES_128, AES_256};
    use aws_lc_rs::hmac;
    use voxgate_rtp::{MasterKey, RtpHeader};

    fn aes_ctr(key: &[u8], iv: [u8; 16], data: &mut [u8]) {
        if data.is_empty() {
            return;
        }
        let alg = if key.len() == 32 { &AES_256 } else { &AES_128 };
        let k = EncryptingKey::ctr(UnboundCipherKey::new(alg, key).expect("AES key"))
            .expect("AES-CTR key");
        k.less_safe_encrypt(data, EncryptionContext::Iv128(iv.into()))
            .expect("AES-CTR");
    }

    /// Session keys of one kind (SRTP or SRTCP).
    pub struct Keys {
        enc: Vec<u8>,
        salt: Vec<u8>,
        auth: Vec<u8>,
        gcm: bool,
    }

    impl Keys {
        /// RFC 3711 §4.3.1 with key derivation rate 0: the PRF is AES-CM keyed by the master
        /// key, IV = (master_salt XOR label * 2^48) * 2^16; a 96-bit GCM master salt is padded
        /// with zeros to 112 bits (RFC 7714 §11). Labels 0/1/2 SRTP, 3/4/5 SRTCP.
        pub fn derive(master: &MasterKey, rtcp: bool) -> Keys {
            let profile = master.profile();
            let ks = master.key_salt();
            let (key, salt) = ks.split_at(profile.key_len());
            let prf = |label: u8, len: usize| {
                let mut iv = [0u8; 16];
                iv[..salt.len()].copy_from_slice(salt);
                iv[7] ^= label;
                let mut out = vec![0u8; len];
                aes_ctr(key, iv, &mut out);
                out
            };
            let base = if rtcp { 3 } else { 0 };
            Keys {
                enc: prf(base, profile.key_len()),
                auth: prf(base + 1, 20),
                salt: prf(base + 2, profile.salt_len()),
                gcm: profile.is_aead(),
            }
        }

        /// RFC 3711 §4.1.1: IV = (k_s * 2^16) XOR (SSRC * 2^64) XOR (i * 2^16).
        fn cm_iv(&self, ssrc: u32, index: u64) -> [u8; 16] {
            let mut iv = [0u8; 16];
            iv[..14].copy_from_slice(&self.salt);
            for (k, b) in ssrc.to_be_bytes().iter().enumerate() {
                iv[4 + k] ^= b;
            }
            for (k, b) in index.to_be_bytes()[2..].iter().enumerate() {
                iv[8 + k] ^= b;
            }
            iv
        }

        fn gcm_seal(&self, iv: [u8; 12], aad: &[u8], data: &mut [u8]) -> Vec<u8> {
            let mut nonce = iv;
            for (n, s) in nonce.iter_mut().zip(&self.salt) {
                *n ^= s;
            }
            let alg = if self.enc.len() == 32 {
                &AES_256_GCM
            } else {
                &AES_128_GCM
            };
            let key = LessSafeKey::new(UnboundKey::new(alg, &self.enc).expect("GCM key"));
            let tag = key
                .seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(aad),
                    data,
                )
                .expect("GCM seal");
            tag.as_ref().to_vec()
        }

        fn hmac(&self, parts: &[&[u8]], tag_len: usize) -> Vec<u8> {
            let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &self.auth);
            let mut ctx = hmac::Context::with_key(&key);
            for p in parts {
                ctx.update(p);
            }
            ctx.sign().as_ref()[..tag_len].to_vec()
        }

        /// SRTP packet of `plain` at 48-bit `index` (RFC 3711 §3.3, RFC 7714 §8).
        pub fn protect_rtp(&self, plain: &[u8], index: u64, mki: &[u8], tag_len: usize) -> Vec<u8> {
            let h = RtpHeader::parse(plain).expect("reference needs a valid RTP header");
            let mut out = plain.to_vec();
            let roc = (index >> 16) as u32;
            if self.gcm {
                // RFC 7714 §8.1: IV = (00 00 || SSRC || ROC || SEQ) XOR salt; AAD = header.
                let mut iv = [0u8; 12];
                iv[2..6].copy_from_slice(&h.ssrc.to_be_bytes());
                iv[6..10].copy_from_slice(&roc.to_be_bytes());
                iv[10..12].copy_from_slice(&(index as u16).to_be_bytes());
                let (head, body) = out.split_at_mut(h.header_len);
                let tag = self.gcm_seal(iv, head, body);
                out.extend_from_slice(&tag);
                out.extend_from_slice(mki);
            } else {
                aes_ctr(
                    &self.enc,
                    self.cm_iv(h.ssrc, index),
                    &mut out[h.header_len..],
                );
                let tag = self.hmac(&[&out, &roc.to_be_bytes()], tag_len);
                out.extend_from_slice(mki);
                out.extend_from_slice(&tag);
            }
            out
        }

        /// SRTCP packet of `plain` with SRTCP `index` and the E flag set (RFC 3711 §3.4,
        /// RFC 7714 §9).
        pub fn protect_rtcp(&self, plain: &[u8], index: u32, mki: &[u8]) -> Vec<u8> {
            let ssrc = u32::from_be_bytes([plain[4], plain[5], plain[6], plain[7]]);
            let e_index = (0x8000_0000 | index).to_be_bytes();
            let mut out = plain.to_vec();
            if self.gcm {
                // RFC 7714 §9.1: IV = (00 00 || SSRC || 00 00 || 0 || index) XOR salt;
                // AAD = first 8 bytes || E+index.
                let mut iv = [0u8; 12];
                iv[2..6].copy_from_slice(&ssrc.to_be_bytes());
                iv[8..12].copy_from_slice(&index.to_be_bytes());
                let mut aad = out[..8].to_vec();
                aad.extend_from_slice(&e_index);
                let tag = self.gcm_seal(iv, &aad, &mut out[8..]);
                out.extend_from_slice(&tag);
                out.extend_from_slice(&e_index);
                out.extend_from_slice(mki);
            } else {
                aes_ctr(&self.enc, self.cm_iv(ssrc, u64::from(index)), &mut out[8..]);
                out.extend_from_slice(&e_index);
                let tag = self.hmac(&[&out], 10);
                out.extend_from_slice(mki);
                out.extend_from_slice(&tag);
            }
            out
        }
    }
}

/// `keyring_unprotect`: the packets of an input (after the config byte(s), which are skipped)
/// go to a `KeyRing` holding key 0 of every profile, as `voxgate srtp decrypt` uses it. A packet
/// that no key takes must come back byte for byte as it went in (the ring trials keys on a copy);
/// one that is taken shrinks by exactly its key's trailer and keeps its header.
pub fn keyring_unprotect(data: &[u8]) -> Stats {
    use voxgate_rtp::KeyRing;
    let mut stats = Stats::default();
    let Some((_, rest)) = Config::decode(data) else {
        return stats;
    };
    let mut ring = KeyRing::new();
    for p in SrtpProfile::ALL {
        ring.add(SrtpPolicy::new(master_key(p, 0)), None)
            .expect("fixed keys make valid policies");
    }
    for pkt in split_packets(rest) {
        let len = pkt.len();
        let mut buf = with_slack(pkt, 0);
        match ring.unprotect(&mut buf, len) {
            Ok(p) => {
                stats.ok += 1;
                assert!(p.len <= len, "unprotect grew the packet");
                let profile = SrtpProfile::ALL[p.key];
                let trailer = if voxgate_rtp::packet::is_rtcp(pkt) {
                    profile.srtcp_tag_len() + 4
                } else {
                    profile.srtp_tag_len()
                };
                assert_eq!(
                    p.len + trailer,
                    len,
                    "trailer of key {} removed exactly",
                    p.key
                );
                let keep = clear_header_len(voxgate_rtp::packet::is_rtcp(pkt), pkt).min(p.len);
                assert_eq!(&buf[..keep], &pkt[..keep], "header changed");
                assert_eq!(ring.binding(p.ssrc), Some(p.key), "SSRC bound to the key");
            }
            Err(_) => {
                stats.err += 1;
                if ring.binding(ssrc_of(pkt)).is_none() {
                    assert_eq!(
                        &buf[..len],
                        pkt,
                        "a packet no key took must be left unchanged"
                    );
                }
            }
        }
        assert_no_write_past(&buf, len, "keyring unprotect");
    }
    stats
}

fn ssrc_of(pkt: &[u8]) -> u32 {
    let at = if voxgate_rtp::packet::is_rtcp(pkt) {
        4
    } else {
        8
    };
    pkt.get(at..at + 4)
        .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// `sip_parse`: any bytes through the SIP message parser, as a datagram and as a stream.
/// Checks: no panic; a parsed message's body and length stay inside the input; every header's
/// raw value is a slice of the input; the typed accessors do not panic; a rejection names a
/// response code of 400, 501, 505 or 513.
pub fn sip_parse(data: &[u8]) -> Stats {
    use voxgate_sip::{Framing, ParseLimits, SipMessage};
    let mut stats = Stats::default();
    for framing in [Framing::Datagram, Framing::Stream] {
        match SipMessage::parse(data, framing, &ParseLimits::default()) {
            Ok(m) => {
                stats.ok += 1;
                assert!(m.len <= data.len(), "message length past the input");
                assert!(m.body.len() <= m.len);
                let range = data.as_ptr_range();
                for h in &m.headers {
                    let p = h.raw_value.as_ptr_range();
                    assert!(
                        range.start <= p.start && p.end <= range.end,
                        "header outside input"
                    );
                }
                let _ = (
                    m.cseq(),
                    m.call_id(),
                    m.vias(),
                    m.from(),
                    m.to(),
                    m.max_forwards(),
                );
                let _ = m.validate_request();
            }
            Err(e) => {
                stats.err += 1;
                assert!(
                    [400, 501, 505, 513].contains(&e.status()),
                    "status {}",
                    e.status()
                );
                // Incomplete (stream) gives the length needed, which may lie past the input.
                if e.kind != voxgate_sip::ErrorKind::Incomplete {
                    assert!(e.offset <= data.len().max(65_535), "offset {}", e.offset);
                }
            }
        }
    }
    stats
}

/// `sdp_parse`: any bytes through the SDP parser and, when they parse, through offer/answer
/// under every policy. Checks: no panic; a parsed description formats to text that parses to
/// the same description; answering never panics and refuses only with 488.
pub fn sdp_parse(data: &[u8]) -> Stats {
    use voxgate_sip::sdp::{answer_offer, EncryptionPolicy, LocalMedia, SessionDescription};
    let mut stats = Stats::default();
    let Ok(sd) = SessionDescription::parse(data) else {
        stats.err += 1;
        return stats;
    };
    stats.ok += 1;
    let again = SessionDescription::parse(&sd.to_bytes()).expect("formatted SDP parses");
    assert_eq!(again, sd, "SDP round trip");
    let local = LocalMedia {
        address: std::net::IpAddr::from([127, 0, 0, 1]),
        port: 4000,
        formats: vec![(0, "PCMU/8000".into())],
        suites: SrtpProfile::ALL.to_vec(),
    };
    for p in [
        EncryptionPolicy::Mandatory,
        EncryptionPolicy::Optional,
        EncryptionPolicy::Off,
    ] {
        if let Err(e) = answer_offer(&sd, p, &local) {
            assert_eq!(e.status(), 488, "{e}");
        }
    }
    stats
}

/// `proxy_input`: a sequence of messages (separated by `\0\0\0\0`; each message's first byte
/// picks UDP, TCP or TLS and the source port) into a fresh proxy core, with the clock moving
/// between messages. Checks: no panic, and every message the proxy sends parses as SIP.
pub fn proxy_input(data: &[u8]) -> Stats {
    use std::net::SocketAddr;
    use std::time::{Duration, Instant};
    use voxgate_sip::config::{ProxyConfig, TransportKind};
    use voxgate_sip::proxy::{Flow, ProxyCore};
    use voxgate_sip::{Framing, ParseLimits, SipMessage};
    const CONFIG: &str = "[[listen]]\ntransport = \"udp\"\naddress = \"127.0.0.1:5060\"\n\
[[listen]]\ntransport = \"tcp\"\naddress = \"127.0.0.1:5060\"\n\
[[domain]]\nname = \"a.example\"\nencryption = \"off\"\n\
[[domain.user]]\nname = \"alice\"\npassword = \"pw\"\n\
[[domain.user]]\nname = \"bob\"\ncontact = \"sip:bob@127.0.0.1:5070\"\n";
    let mut stats = Stats::default();
    let cfg = ProxyConfig::from_toml(CONFIG).expect("fuzz config");
    let start = Instant::now();
    let listeners = vec![
        (TransportKind::Udp, "127.0.0.1:5060".parse().unwrap()),
        (TransportKind::Tcp, "127.0.0.1:5060".parse().unwrap()),
    ];
    let mut core = ProxyCore::new(&cfg, listeners, start).expect("core");
    let mut now = start;
    let mut rest = data;
    let mut n = 0;
    while !rest.is_empty() && n < 16 {
        n += 1;
        let end = rest
            .windows(4)
            .position(|w| w == b"\0\0\0\0")
            .unwrap_or(rest.len());
        let (msg, tail) = rest.split_at(end);
        rest = tail.get(4..).unwrap_or_default();
        let (sel, body) = match msg.split_first() {
            Some((s, b)) => (*s, b),
            None => continue,
        };
        let transport = if sel & 1 == 0 {
            TransportKind::Udp
        } else {
            TransportKind::Tcp
        };
        let flow = Flow {
            transport,
            local: "127.0.0.1:5060".parse().unwrap(),
            remote: SocketAddr::from(([127, 0, 0, 1], 5070 + (sel >> 4) as u16)),
            conn: (transport == TransportKind::Tcp).then_some((sel >> 4) as u64),
        };
        let framing = match transport {
            TransportKind::Udp => Framing::Datagram,
            _ => Framing::Stream,
        };
        // An answer to a request that does not parse echoes its broken lines (RFC 4475): only
        // answers to well-formed input must parse themselves.
        let input_ok = SipMessage::parse(body, framing, &ParseLimits::default()).is_ok();
        core.handle_input(now, flow, body);
        now += Duration::from_millis(((sel >> 1) & 7) as u64 * 700);
        core.handle_timeout(now);
        if sel & 0x08 != 0 {
            core.handle_unreachable(now, flow);
        }
        while let Some(t) = core.poll_transmit() {
            if !input_ok {
                assert!(
                    t.bytes.starts_with(b"SIP/2.0 4") || t.bytes.starts_with(b"SIP/2.0 5"),
                    "a malformed request gets a 4xx/5xx or nothing"
                );
                stats.ok += 1;
                continue;
            }
            if let Err(e) = SipMessage::parse(&t.bytes, Framing::Datagram, &ParseLimits::default())
            {
                panic!(
                    "the proxy sent a message that does not parse ({e}):\n{}",
                    String::from_utf8_lossy(&t.bytes)
                );
            }
            stats.ok += 1;
        }
    }
    if stats.ok == 0 {
        stats.err += 1;
    }
    let _ = core.render_metrics();
    stats
}

/// `escrow_wire`: any bytes through the escrow frame decoder (as a stream of frames) and the
/// session_ID carrier parsers. Checks: no panic; a decoded frame re-encodes to a frame that
/// decodes to the same message; consumed lengths stay inside the input.
pub fn escrow_wire(data: &[u8]) -> Stats {
    use voxgate_escrow::carrier;
    use voxgate_escrow::wire::Message;
    let mut stats = Stats::default();
    let mut rest = data;
    while !rest.is_empty() {
        match Message::decode(rest) {
            Ok((m, n)) => {
                assert!(n <= rest.len() && n >= 6);
                let again = m.encode();
                let (back, n2) = Message::decode(&again).expect("re-encoded frame decodes");
                assert_eq!(back, m);
                assert_eq!(n2, again.len());
                stats.ok += 1;
                rest = &rest[n..];
            }
            Err(_) => {
                stats.err += 1;
                break;
            }
        }
    }
    let _ = carrier::session_id_from_ipv4_options(data);
    let _ = carrier::ipv4_options_of(data);
    let _ = carrier::session_id_from_rtp(data, data.first().map_or(1, |b| b & 0x0f));
    stats
}
