//! SRTP and SRTCP (RFC 3711) with AES-CM/HMAC-SHA1 and AES-GCM (RFC 7714).
//!
//! [`SrtpSession`] is a sans-I/O context: bytes in, bytes out, in place in the caller's buffer,
//! with no allocation per packet (a stream's state is allocated once, when its SSRC is first
//! seen). It keeps per-SSRC streams, each with a sender index window (so an index is never
//! protected twice: keystream reuse) and receiver replay windows for SRTP and SRTCP.
//!
//! Packet layouts (what libsrtp does too):
//! - AES-CM SRTP:  `header | E(payload) | [MKI] | tag(10 or 4)`, tag = HMAC-SHA1(header | E(payload) | ROC)
//! - GCM SRTP:     `header | E(payload) | tag(16) | [MKI]`, AAD = header
//! - AES-CM SRTCP: `hdr(8) | E(rest) | E-flag+index | [MKI] | tag(10)`
//! - GCM SRTCP:    `hdr(8) | E(rest) | tag(16) | E-flag+index | [MKI]`, AAD = hdr | E-flag+index

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use aws_lc_rs::cipher::EncryptionContext;

use crate::error::{Error, Result};
use crate::hmac_sha1::HmacSha1;
use crate::keys::{CmKeys, MasterKey, RawSessionKeys, SessionCrypto};
use crate::packet::{RtcpHeader, RtpHeader, RTCP_HEADER_LEN};
use crate::profile::SrtpProfile;
use crate::replay::{estimate_srtp_index, Estimate, ReplayWindow, Roc, DEFAULT_REPLAY_WINDOW};

/// Default limit on the number of SSRCs one session tracks.
pub const DEFAULT_MAX_STREAMS: usize = 1024;
const SRTCP_E_FLAG: u32 = 0x8000_0000;
const SRTCP_INDEX_MASK: u32 = 0x7fff_ffff;
const MAX_SRTP_INDEX: u64 = (1 << 48) - 1;

/// What an [`SrtpSession`] is configured with.
#[derive(Debug, Clone)]
pub struct SrtpPolicy {
    pub profile: SrtpProfile,
    /// One key, or several keys that all carry an MKI of the same length (RFC 3711 §3.1).
    pub keys: Vec<MasterKey>,
    /// Replay window size in packets (64..=32768, default 128).
    pub replay_window: usize,
    /// Maximum number of SSRCs (streams) the session keeps state for.
    pub max_streams: usize,
    /// Allow protecting the same packet index twice (retransmission of identical packets).
    /// Off by default: two different packets under one index leak their XOR.
    pub allow_repeat_tx: bool,
}

impl SrtpPolicy {
    /// A policy with one master key and default limits.
    pub fn new(key: MasterKey) -> Self {
        SrtpPolicy {
            profile: key.profile(),
            keys: vec![key],
            replay_window: DEFAULT_REPLAY_WINDOW,
            max_streams: DEFAULT_MAX_STREAMS,
            allow_repeat_tx: false,
        }
    }

    /// Sets the replay window size.
    pub fn with_replay_window(mut self, packets: usize) -> Self {
        self.replay_window = packets;
        self
    }

    /// Adds another master key (all keys of an MKI session must carry MKIs).
    pub fn with_key(mut self, key: MasterKey) -> Self {
        self.keys.push(key);
        self
    }
}

/// Which kind of packet a counter applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketKind {
    Srtp,
    Srtcp,
}

/// Packets processed under one master key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeyUsage {
    pub srtp_packets: u64,
    pub srtcp_packets: u64,
}

struct SessionKeys {
    mki: Box<[u8]>,
    srtp: SessionCrypto,
    srtcp: SessionCrypto,
    usage: KeyUsage,
    srtp_limit: u64,
    srtcp_limit: u64,
}

impl SessionKeys {
    #[inline]
    fn check_limit(&self, kind: PacketKind) -> Result<()> {
        let (used, limit) = match kind {
            PacketKind::Srtp => (self.usage.srtp_packets, self.srtp_limit),
            PacketKind::Srtcp => (self.usage.srtcp_packets, self.srtcp_limit),
        };
        if used >= limit {
            Err(Error::KeyExhausted { used })
        } else {
            Ok(())
        }
    }
}

/// Per-SSRC state.
struct Stream {
    srtp_tx: ReplayWindow,
    /// Whether the sender has protected (or been told of) any SRTP packet.
    tx_started: bool,
    srtp_rx: ReplayWindow,
    /// Whether any SRTP packet of this SSRC has been received (authenticated).
    rx_started: bool,
    /// A ROC signalled for the first received packet (late join): that packet's index is then
    /// exactly `roc * 2^16 + SEQ`, with no estimation.
    rx_roc_hint: Option<Roc>,
    srtcp_tx_next: u32,
    srtcp_tx_started: bool,
    srtcp_rx: ReplayWindow,
}

impl Stream {
    fn new(window: usize, rx_roc_hint: Option<Roc>) -> Result<Self> {
        Ok(Stream {
            srtp_tx: ReplayWindow::new(window, 0)?,
            tx_started: false,
            srtp_rx: ReplayWindow::new(window, 0)?,
            rx_started: false,
            rx_roc_hint,
            srtcp_tx_next: 0,
            srtcp_tx_started: false,
            srtcp_rx: ReplayWindow::new(window, 0)?,
        })
    }
}

/// The index of the first packet received on a stream: exact when a ROC was signalled,
/// otherwise estimated from a fresh window (RFC 3711 §3.3.1, ROC 0), as libsrtp does.
#[inline]
fn first_rx_estimate(hint: Option<Roc>, seq: u16, top: u64) -> Estimate {
    match hint {
        Some(roc) => {
            let index = ((roc as u64) << 16) | seq as u64;
            Estimate {
                index,
                delta: index as i64 - top as i64,
            }
        }
        None => estimate_srtp_index(top, seq),
    }
}

/// SSRCs are random 32-bit values: a multiplicative hash is enough and much cheaper than SipHash.
/// (An attacker cannot grow the map: receive-side streams are created only after authentication.)
#[derive(Default)]
struct SsrcHasher(u64);

impl Hasher for SsrcHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u32(&mut self, v: u32) {
        // Fold the high half down: hashbrown picks buckets with the low bits.
        let x = (v as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = x ^ (x >> 32);
    }
}

type StreamMap = HashMap<u32, Stream, BuildHasherDefault<SsrcHasher>>;

/// The stream of an SSRC, created on first use; a free function so that callers can hold it
/// while they borrow the session's keys.
#[inline]
fn stream_entry<'a>(
    streams: &'a mut StreamMap,
    pending_roc: &mut HashMap<u32, Roc, BuildHasherDefault<SsrcHasher>>,
    max_streams: usize,
    window: usize,
    ssrc: u32,
) -> Result<&'a mut Stream> {
    let full = streams.len() >= max_streams;
    match streams.entry(ssrc) {
        std::collections::hash_map::Entry::Occupied(o) => Ok(o.into_mut()),
        std::collections::hash_map::Entry::Vacant(v) => {
            if full {
                return Err(Error::TooManyStreams { limit: max_streams });
            }
            let hint = pending_roc.remove(&ssrc);
            Ok(v.insert(Stream::new(window, hint)?))
        }
    }
}

/// An SRTP/SRTCP crypto context for one direction of a media session (one master key set, any
/// number of SSRCs). Use one session to protect what you send and another, keyed with the
/// peer's key, to unprotect what you receive.
pub struct SrtpSession {
    profile: SrtpProfile,
    keys: Vec<SessionKeys>,
    mki_len: usize,
    active: usize,
    streams: StreamMap,
    window: usize,
    max_streams: usize,
    allow_repeat_tx: bool,
    pending_roc: HashMap<u32, Roc, BuildHasherDefault<SsrcHasher>>,
}

impl core::fmt::Debug for SrtpSession {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SrtpSession")
            .field("profile", &self.profile)
            .field("keys", &self.keys.len())
            .field("streams", &self.streams.len())
            .finish_non_exhaustive()
    }
}

#[inline]
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// RFC 3711 §4.1.1: IV = (k_s * 2^16) XOR (SSRC * 2^64) XOR (i * 2^16).
#[inline]
pub(crate) fn cm_iv(salt: &[u8; 14], ssrc: u32, index: u64) -> [u8; 16] {
    let mut iv = [0u8; 16];
    iv[..14].copy_from_slice(salt);
    let s = ssrc.to_be_bytes();
    let i = index.to_be_bytes(); // 48-bit index in bytes 2..8
    for k in 0..4 {
        iv[4 + k] ^= s[k];
    }
    for k in 0..6 {
        iv[8 + k] ^= i[2 + k];
    }
    iv
}

/// RFC 7714 §8.1: IV = (00 00 || SSRC || ROC || SEQ) XOR salt.
#[inline]
fn gcm_srtp_iv(salt: &[u8; 12], ssrc: u32, index: u64) -> [u8; 12] {
    let mut iv = [0u8; 12];
    iv[2..6].copy_from_slice(&ssrc.to_be_bytes());
    iv[6..12].copy_from_slice(&index.to_be_bytes()[2..8]);
    for k in 0..12 {
        iv[k] ^= salt[k];
    }
    iv
}

/// RFC 7714 §9.1: IV = (00 00 || SSRC || 00 00 || 0 || SRTCP index) XOR salt.
#[inline]
fn gcm_srtcp_iv(salt: &[u8; 12], ssrc: u32, index: u32) -> [u8; 12] {
    let mut iv = [0u8; 12];
    iv[2..6].copy_from_slice(&ssrc.to_be_bytes());
    iv[8..12].copy_from_slice(&(index & SRTCP_INDEX_MASK).to_be_bytes());
    for k in 0..12 {
        iv[k] ^= salt[k];
    }
    iv
}

#[inline]
pub(crate) fn cm_crypt(keys: &CmKeys, iv: [u8; 16], data: &mut [u8]) -> Result<()> {
    if data.is_empty() {
        return Ok(());
    }
    if let Some(fast) = &keys.fast {
        if fast.ctr_keystream(&iv, data) {
            return Ok(());
        }
    }
    keys.cipher
        .less_safe_encrypt(data, EncryptionContext::Iv128(iv.into()))
        .map(|_| ())
        .map_err(|_| Error::Crypto)
}

/// HMAC-SHA1 over `a || b`, full 20 bytes.
#[inline]
fn hmac_sha1(key: &HmacSha1, a: &[u8], b: &[u8]) -> [u8; 20] {
    key.tag(a, b)
}

#[inline]
fn need(buf: &[u8], need: usize) -> Result<()> {
    if buf.len() < need {
        Err(Error::BufferTooSmall {
            need,
            have: buf.len(),
        })
    } else {
        Ok(())
    }
}

impl SrtpSession {
    /// Creates a session; derives the session keys of every master key (RFC 3711 §4.3).
    pub fn new(policy: SrtpPolicy) -> Result<Self> {
        if policy.keys.is_empty() {
            return Err(Error::InvalidPolicy {
                reason: "no master key",
            });
        }
        if policy.max_streams == 0 {
            return Err(Error::InvalidPolicy {
                reason: "max_streams must be at least 1",
            });
        }
        // Validate the window size once, up front.
        ReplayWindow::new(policy.replay_window, 0)?;
        let mki_len = policy.keys[0].mki().map_or(0, <[u8]>::len);
        if policy.keys.len() > 1 && mki_len == 0 {
            return Err(Error::InvalidPolicy {
                reason: "several master keys need an MKI each",
            });
        }
        if mki_len > 128 {
            return Err(Error::InvalidPolicy {
                reason: "MKI longer than 128 bytes",
            });
        }
        let mut keys = Vec::with_capacity(policy.keys.len());
        for mk in &policy.keys {
            if mk.profile() != policy.profile {
                return Err(Error::InvalidPolicy {
                    reason: "master key profile differs from policy profile",
                });
            }
            let this_len = mk.mki().map_or(0, <[u8]>::len);
            if this_len != mki_len {
                return Err(Error::MkiLength {
                    got: this_len,
                    want: mki_len,
                });
            }
            if keys
                .iter()
                .any(|k: &SessionKeys| mki_len > 0 && Some(&*k.mki) == mk.mki())
            {
                return Err(Error::InvalidPolicy {
                    reason: "duplicate MKI",
                });
            }
            let lifetime = mk.lifetime().unwrap_or(u64::MAX);
            keys.push(SessionKeys {
                mki: mk.mki().unwrap_or(&[]).into(),
                srtp: SessionCrypto::derive(mk, false)?,
                srtcp: SessionCrypto::derive(mk, true)?,
                usage: KeyUsage::default(),
                srtp_limit: lifetime.min(policy.profile.max_srtp_packets()),
                srtcp_limit: lifetime.min(policy.profile.max_srtcp_packets()),
            });
        }
        Ok(SrtpSession {
            profile: policy.profile,
            keys,
            mki_len,
            active: 0,
            streams: StreamMap::default(),
            window: policy.replay_window,
            max_streams: policy.max_streams,
            allow_repeat_tx: policy.allow_repeat_tx,
            pending_roc: Default::default(),
        })
    }

    /// A session keyed directly with session keys, skipping the KDF: only for known-answer tests
    /// whose vectors give session keys (RFC 7714 §16, §17). Real sessions use [`Self::new`].
    #[doc(hidden)]
    pub fn from_session_keys(
        profile: SrtpProfile,
        srtp: &RawSessionKeys<'_>,
        srtcp: &RawSessionKeys<'_>,
    ) -> Result<Self> {
        Ok(SrtpSession {
            profile,
            keys: vec![SessionKeys {
                mki: Box::new([]),
                srtp: SessionCrypto::from_raw(profile, srtp)?,
                srtcp: SessionCrypto::from_raw(profile, srtcp)?,
                usage: KeyUsage::default(),
                srtp_limit: profile.max_srtp_packets(),
                srtcp_limit: profile.max_srtcp_packets(),
            }],
            mki_len: 0,
            active: 0,
            streams: StreamMap::default(),
            window: DEFAULT_REPLAY_WINDOW,
            max_streams: DEFAULT_MAX_STREAMS,
            allow_repeat_tx: false,
            pending_roc: Default::default(),
        })
    }

    pub fn profile(&self) -> SrtpProfile {
        self.profile
    }

    /// Bytes that protect_rtp adds (tag + MKI).
    pub fn srtp_overhead(&self) -> usize {
        self.profile.srtp_tag_len() + self.mki_len
    }

    /// Bytes that protect_rtcp adds (tag + E/index word + MKI).
    pub fn srtcp_overhead(&self) -> usize {
        self.profile.srtcp_tag_len() + 4 + self.mki_len
    }

    /// Chooses the master key (by MKI) used to protect from now on.
    pub fn set_active_key(&mut self, mki: &[u8]) -> Result<()> {
        self.active = self
            .keys
            .iter()
            .position(|k| &*k.mki == mki)
            .ok_or(Error::UnknownMki)?;
        Ok(())
    }

    /// Usage counters of the key with this MKI (empty slice when the session has no MKI).
    pub fn key_usage(&self, mki: &[u8]) -> Option<KeyUsage> {
        self.keys.iter().find(|k| &*k.mki == mki).map(|k| k.usage)
    }

    /// Number of SSRCs with state.
    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }

    /// The receive-side ROC of an SSRC, if the stream exists.
    pub fn rx_roc(&self, ssrc: u32) -> Option<Roc> {
        self.streams.get(&ssrc).map(|s| s.srtp_rx.roc())
    }

    /// The send-side ROC of an SSRC, if the stream exists.
    pub fn tx_roc(&self, ssrc: u32) -> Option<Roc> {
        self.streams.get(&ssrc).map(|s| s.srtp_tx.roc())
    }

    /// Tells the receiver the ROC of a stream it joins late (e.g. interception that starts in
    /// the middle of a call). Applies to the next packet of that SSRC.
    pub fn set_rx_roc(&mut self, ssrc: u32, roc: Roc) -> Result<()> {
        match self.streams.get_mut(&ssrc) {
            // Once packets were received the ROC is tracked; resetting it would reopen replays.
            Some(s) if s.rx_started => {
                return Err(Error::InvalidPolicy {
                    reason: "the stream is already receiving; its ROC is tracked",
                })
            }
            Some(s) => s.rx_roc_hint = Some(roc),
            None => {
                self.pending_roc.insert(ssrc, roc);
            }
        }
        Ok(())
    }

    /// Sets the index (`ROC * 2^16 + SEQ`) of the last packet the sender protected for an SSRC,
    /// e.g. to continue a stream after a restart. That index counts as used: protecting it again
    /// is refused like any other index reuse.
    pub fn set_tx_index(&mut self, ssrc: u32, index: u64) -> Result<()> {
        if index > MAX_SRTP_INDEX {
            return Err(Error::IndexExhausted { ssrc });
        }
        let window = self.window;
        let s = self.stream_mut(ssrc)?;
        // Never rewind a sender: indices it used would be used again (keystream reuse).
        if s.tx_started && index <= s.srtp_tx.top() {
            return Err(Error::IndexReuse { index });
        }
        let mut w = ReplayWindow::new(window, index)?;
        w.add(&w.estimate_explicit(index));
        s.srtp_tx = w;
        s.tx_started = true;
        Ok(())
    }

    /// Sets the next SRTCP index the sender uses for an SSRC (RFC 3711 §3.4 starts at 0). It may
    /// only move forward once SRTCP packets were sent.
    pub fn set_srtcp_tx_index(&mut self, ssrc: u32, index: u32) -> Result<()> {
        let s = self.stream_mut(ssrc)?;
        let index = index & SRTCP_INDEX_MASK;
        if s.srtcp_tx_started && index < s.srtcp_tx_next {
            return Err(Error::IndexReuse {
                index: index as u64,
            });
        }
        s.srtcp_tx_next = index;
        Ok(())
    }

    /// The stream of an SSRC, created on first use (one hash lookup either way).
    fn stream_mut(&mut self, ssrc: u32) -> Result<&mut Stream> {
        stream_entry(
            &mut self.streams,
            &mut self.pending_roc,
            self.max_streams,
            self.window,
            ssrc,
        )
    }

    #[inline]
    fn key_for_mki(&self, mki: &[u8]) -> Result<usize> {
        if self.mki_len == 0 {
            return Ok(0);
        }
        if self.keys.len() == 1 {
            return if *self.keys[0].mki == *mki {
                Ok(0)
            } else {
                Err(Error::UnknownMki)
            };
        }
        self.keys
            .iter()
            .position(|k| ct_eq(&k.mki, mki))
            .ok_or(Error::UnknownMki)
    }

    /// Protects the RTP packet in `buf[..len]` in place (RFC 3711 §3.3) and returns the SRTP
    /// length. `buf` must have room for [`Self::srtp_overhead`] more bytes.
    pub fn protect_rtp(&mut self, buf: &mut [u8], len: usize) -> Result<usize> {
        let plain = buf.get(..len).ok_or(Error::Truncated {
            len: buf.len(),
            need: len,
        })?;
        let hdr = RtpHeader::parse(plain)?;
        let tag_len = self.profile.srtp_tag_len();
        let out_len = len + tag_len + self.mki_len;
        need(buf, out_len)?;
        let key_idx = self.active;
        self.keys[key_idx].check_limit(PacketKind::Srtp)?;
        let stream = stream_entry(
            &mut self.streams,
            &mut self.pending_roc,
            self.max_streams,
            self.window,
            hdr.ssrc,
        )?;
        let est = stream.srtp_tx.estimate_srtp(hdr.sequence_number);
        if est.index > MAX_SRTP_INDEX {
            return Err(Error::IndexExhausted { ssrc: hdr.ssrc });
        }
        match stream.srtp_tx.check(&est) {
            Ok(()) => {}
            Err(Error::Replayed { .. }) if self.allow_repeat_tx => {}
            Err(Error::Replayed { index } | Error::ReplayTooOld { index }) => {
                return Err(Error::IndexReuse { index })
            }
            Err(e) => return Err(e),
        }
        let keys = &mut self.keys[key_idx];
        let mki_len = self.mki_len;
        match &keys.srtp {
            SessionCrypto::Cm(k) => {
                cm_crypt(
                    k,
                    cm_iv(&k.salt, hdr.ssrc, est.index),
                    &mut buf[hdr.header_len..len],
                )?;
                if mki_len > 0 {
                    buf[len..len + mki_len].copy_from_slice(&keys.mki);
                }
                let tag = hmac_sha1(&k.auth, &buf[..len], &est.roc().to_be_bytes());
                let at = len + mki_len;
                buf[at..at + tag_len].copy_from_slice(&tag[..tag_len]);
            }
            SessionCrypto::Gcm(k) => {
                let iv = gcm_srtp_iv(&k.salt, hdr.ssrc, est.index);
                let (head, rest) = buf.split_at_mut(hdr.header_len);
                let tag = k.aead.seal(iv, head, &mut rest[..len - hdr.header_len])?;
                buf[len..len + 16].copy_from_slice(&tag);
                if mki_len > 0 {
                    buf[len + 16..out_len].copy_from_slice(&keys.mki);
                }
            }
        }
        stream.srtp_tx.add(&est);
        stream.tx_started = true;
        keys.usage.srtp_packets += 1;
        Ok(out_len)
    }

    /// Verifies and decrypts the SRTP packet in `buf[..len]` in place (RFC 3711 §3.3) and returns
    /// the RTP length. Replay state changes only for packets that authenticate. On an error the
    /// packet bytes are unspecified (a GCM packet that fails authentication is left as it was on
    /// the AES-NI path and zeroed on the aws-lc path), never unauthenticated plaintext. Keep a
    /// copy if the original is still needed.
    pub fn unprotect_rtp(&mut self, buf: &mut [u8], len: usize) -> Result<usize> {
        let pkt = buf.get(..len).ok_or(Error::Truncated {
            len: buf.len(),
            need: len,
        })?;
        let tag_len = self.profile.srtp_tag_len();
        let trailer = tag_len + self.mki_len;
        let hdr = RtpHeader::parse(pkt)?;
        if len < hdr.header_len + trailer {
            return Err(Error::Truncated {
                len,
                need: hdr.header_len + trailer,
            });
        }
        let body_end = len - trailer; // end of header + encrypted payload
        let mki_at = if self.profile.is_aead() {
            body_end + tag_len
        } else {
            body_end
        };
        let key_idx = self.key_for_mki(&pkt[mki_at..mki_at + self.mki_len])?;
        self.keys[key_idx].check_limit(PacketKind::Srtp)?;

        // Hold the stream (if any) across the crypto: one hash lookup per packet.
        let streams_full = self.streams.len() >= self.max_streams;
        let stream = self.streams.get_mut(&hdr.ssrc);
        let est = match stream.as_deref() {
            Some(s) if s.rx_started => {
                let e = s.srtp_rx.estimate_srtp(hdr.sequence_number);
                s.srtp_rx.check(&e)?;
                e
            }
            // A stream that exists (we sent on it) but has received nothing yet.
            Some(s) => first_rx_estimate(s.rx_roc_hint, hdr.sequence_number, s.srtp_rx.top()),
            None => {
                if streams_full {
                    return Err(Error::TooManyStreams {
                        limit: self.max_streams,
                    });
                }
                let hint = self.pending_roc.get(&hdr.ssrc).copied();
                first_rx_estimate(hint, hdr.sequence_number, 0)
            }
        };
        if est.index > MAX_SRTP_INDEX {
            return Err(Error::IndexExhausted { ssrc: hdr.ssrc });
        }

        let keys = &mut self.keys[key_idx];
        match &keys.srtp {
            SessionCrypto::Cm(k) => {
                let tag = hmac_sha1(&k.auth, &buf[..body_end], &est.roc().to_be_bytes());
                let got = &buf[len - tag_len..len];
                if !ct_eq(&tag[..tag_len], got) {
                    return Err(Error::AuthTagMismatch);
                }
                cm_crypt(
                    k,
                    cm_iv(&k.salt, hdr.ssrc, est.index),
                    &mut buf[hdr.header_len..body_end],
                )?;
            }
            SessionCrypto::Gcm(k) => {
                let iv = gcm_srtp_iv(&k.salt, hdr.ssrc, est.index);
                let (head, rest) = buf.split_at_mut(hdr.header_len);
                k.aead
                    .open(iv, head, &mut rest[..body_end + tag_len - hdr.header_len])?;
            }
        }
        keys.usage.srtp_packets += 1;
        match stream {
            Some(s) => {
                s.srtp_rx.add(&est);
                s.rx_started = true;
            }
            None => {
                let s = stream_entry(
                    &mut self.streams,
                    &mut self.pending_roc,
                    self.max_streams,
                    self.window,
                    hdr.ssrc,
                );
                match s {
                    Ok(s) => {
                        s.srtp_rx.add(&est);
                        s.rx_started = true;
                    }
                    Err(e) => {
                        // Over the stream limit: the packet authenticated but cannot be tracked
                        // for replay, so it is not delivered.
                        self.keys[key_idx].usage.srtp_packets -= 1;
                        return Err(e);
                    }
                }
            }
        }
        Ok(body_end)
    }

    /// Protects the (compound) RTCP packet in `buf[..len]` in place (RFC 3711 §3.4) and returns
    /// the SRTCP length. `buf` must have room for [`Self::srtcp_overhead`] more bytes.
    pub fn protect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize> {
        let plain = buf.get(..len).ok_or(Error::Truncated {
            len: buf.len(),
            need: len,
        })?;
        let hdr = RtcpHeader::parse(plain)?;
        let tag_len = self.profile.srtcp_tag_len();
        let out_len = len + tag_len + 4 + self.mki_len;
        need(buf, out_len)?;
        let key_idx = self.active;
        self.keys[key_idx].check_limit(PacketKind::Srtcp)?;
        let stream = self.stream_mut(hdr.ssrc)?;
        let index = stream.srtcp_tx_next;
        if index > SRTCP_INDEX_MASK {
            return Err(Error::IndexExhausted { ssrc: hdr.ssrc });
        }
        let e_index = (SRTCP_E_FLAG | index).to_be_bytes();
        let keys = &self.keys[key_idx];
        match &keys.srtcp {
            SessionCrypto::Cm(k) => {
                cm_crypt(
                    k,
                    cm_iv(&k.salt, hdr.ssrc, index as u64),
                    &mut buf[RTCP_HEADER_LEN..len],
                )?;
                buf[len..len + 4].copy_from_slice(&e_index);
                buf[len + 4..len + 4 + self.mki_len].copy_from_slice(&keys.mki);
                let tag = hmac_sha1(&k.auth, &buf[..len + 4], &[]);
                let at = len + 4 + self.mki_len;
                buf[at..at + tag_len].copy_from_slice(&tag[..tag_len]);
            }
            SessionCrypto::Gcm(k) => {
                let iv = gcm_srtcp_iv(&k.salt, hdr.ssrc, index);
                let mut aad = [0u8; 12];
                aad[..8].copy_from_slice(&buf[..8]);
                aad[8..].copy_from_slice(&e_index);
                let tag = k.aead.seal(iv, &aad, &mut buf[RTCP_HEADER_LEN..len])?;
                buf[len..len + 16].copy_from_slice(&tag);
                buf[len + 16..len + 20].copy_from_slice(&e_index);
                buf[len + 20..out_len].copy_from_slice(&keys.mki);
            }
        }
        if let Some(s) = self.streams.get_mut(&hdr.ssrc) {
            s.srtcp_tx_next = index + 1;
            s.srtcp_tx_started = true;
        }
        self.keys[key_idx].usage.srtcp_packets += 1;
        Ok(out_len)
    }

    /// Verifies and decrypts the SRTCP packet in `buf[..len]` in place and returns the RTCP
    /// length.
    pub fn unprotect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize> {
        let pkt = buf.get(..len).ok_or(Error::Truncated {
            len: buf.len(),
            need: len,
        })?;
        let hdr = RtcpHeader::parse(pkt)?;
        let tag_len = self.profile.srtcp_tag_len();
        let trailer = tag_len + 4 + self.mki_len;
        if len < RTCP_HEADER_LEN + trailer {
            return Err(Error::Truncated {
                len,
                need: RTCP_HEADER_LEN + trailer,
            });
        }
        let body_end = len - trailer;
        let aead = self.profile.is_aead();
        // Offsets of the E/index word and the MKI, per layout.
        let (eidx_at, mki_at) = if aead {
            (body_end + tag_len, body_end + tag_len + 4)
        } else {
            (body_end, body_end + 4)
        };
        let e_index = u32::from_be_bytes([
            pkt[eidx_at],
            pkt[eidx_at + 1],
            pkt[eidx_at + 2],
            pkt[eidx_at + 3],
        ]);
        if e_index & SRTCP_E_FLAG == 0 {
            // Every policy voxgate offers encrypts SRTCP; an unencrypted one is refused.
            return Err(Error::EncryptionFlagMismatch);
        }
        let index = e_index & SRTCP_INDEX_MASK;
        let key_idx = self.key_for_mki(&pkt[mki_at..mki_at + self.mki_len])?;
        self.keys[key_idx].check_limit(PacketKind::Srtcp)?;
        let est = match self.streams.get(&hdr.ssrc) {
            Some(s) => {
                let e = s.srtcp_rx.estimate_explicit(index as u64);
                s.srtcp_rx.check(&e)?;
                e
            }
            None => Estimate {
                index: index as u64,
                delta: index as i64,
            },
        };
        let keys = &self.keys[key_idx];
        match &keys.srtcp {
            SessionCrypto::Cm(k) => {
                let tag = hmac_sha1(&k.auth, &buf[..body_end + 4], &[]);
                if !ct_eq(&tag[..tag_len], &buf[len - tag_len..len]) {
                    return Err(Error::AuthTagMismatch);
                }
                cm_crypt(
                    k,
                    cm_iv(&k.salt, hdr.ssrc, index as u64),
                    &mut buf[RTCP_HEADER_LEN..body_end],
                )?;
            }
            SessionCrypto::Gcm(k) => {
                let iv = gcm_srtcp_iv(&k.salt, hdr.ssrc, index);
                let mut aad = [0u8; 12];
                aad[..8].copy_from_slice(&buf[..8]);
                aad[8..].copy_from_slice(&e_index.to_be_bytes());
                k.aead
                    .open(iv, &aad, &mut buf[RTCP_HEADER_LEN..body_end + tag_len])?;
            }
        }
        let s = self.stream_mut(hdr.ssrc)?;
        s.srtcp_rx.add(&est);
        self.keys[key_idx].usage.srtcp_packets += 1;
        Ok(body_end)
    }

    /// Runs an in-place operation on a packet held in a `Vec`: grows it by `room` first, then
    /// truncates to the result (or back to the original length on error).
    fn on_vec(
        &mut self,
        pkt: &mut Vec<u8>,
        room: usize,
        op: fn(&mut Self, &mut [u8], usize) -> Result<usize>,
    ) -> Result<()> {
        let len = pkt.len();
        pkt.resize(len + room, 0);
        let r = op(self, pkt, len);
        pkt.truncate(*r.as_ref().unwrap_or(&len));
        r.map(|_| ())
    }

    /// Convenience: protects an RTP packet held in a `Vec`, growing it as needed.
    pub fn protect_rtp_vec(&mut self, pkt: &mut Vec<u8>) -> Result<()> {
        let room = self.srtp_overhead();
        self.on_vec(pkt, room, Self::protect_rtp)
    }

    /// Convenience: unprotects an SRTP packet held in a `Vec`, shrinking it.
    pub fn unprotect_rtp_vec(&mut self, pkt: &mut Vec<u8>) -> Result<()> {
        self.on_vec(pkt, 0, Self::unprotect_rtp)
    }

    /// Convenience: protects an RTCP packet held in a `Vec`.
    pub fn protect_rtcp_vec(&mut self, pkt: &mut Vec<u8>) -> Result<()> {
        let room = self.srtcp_overhead();
        self.on_vec(pkt, room, Self::protect_rtcp)
    }

    /// Convenience: unprotects an SRTCP packet held in a `Vec`.
    pub fn unprotect_rtcp_vec(&mut self, pkt: &mut Vec<u8>) -> Result<()> {
        self.on_vec(pkt, 0, Self::unprotect_rtcp)
    }
}
