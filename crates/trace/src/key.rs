//! The tracer's secret key, the per-flow mark id, and the keyed pseudo-random stream that
//! both schemes draw their selections and watermark bits from.
//!
//! Derivation: `subkey = HMAC-SHA256(key, "voxgate-trace/v1" 0x00 label 0x00 mark_be64)`, then
//! the stream is AES-256-CTR under `subkey` with a zero initial counter block, read as
//! little-endian `u64` words. Labels separate the uses (`ccs05/select`, `ccs05/bits`,
//! `interval/schedule`, `interval/bits`), so no two uses of one (key, mark id) share bytes.

use std::fmt;
use std::str::FromStr;

use aws_lc_rs::cipher::{EncryptingKey, EncryptionContext, UnboundCipherKey, AES_256};
use aws_lc_rs::hmac;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::TraceError;

/// The tracer's secret watermark key: 32 bytes, written as 64 hex digits.
///
/// Zeroized on drop; its `Debug` shows no key material.
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct WatermarkKey([u8; 32]);

impl WatermarkKey {
    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// A fresh random key (AWS-LC's DRBG).
    pub fn generate() -> Result<Self, TraceError> {
        let mut bytes = [0u8; 32];
        aws_lc_rs::rand::fill(&mut bytes).map_err(|_| TraceError::Crypto("random key"))?;
        Ok(Self(bytes))
    }

    /// Parses 64 hex digits (either case; surrounding whitespace ignored).
    pub fn from_hex(text: &str) -> Result<Self, TraceError> {
        let text = text.trim();
        if text.len() != 64 {
            return Err(TraceError::InvalidKey {
                reason: format!("expected 64 hex digits, got {} characters", text.len()),
            });
        }
        let mut bytes = [0u8; 32];
        for (i, chunk) in text.as_bytes().chunks(2).enumerate() {
            let hi = hex_digit(chunk[0]);
            let lo = hex_digit(chunk[1]);
            match (hi, lo) {
                (Some(hi), Some(lo)) => bytes[i] = (hi << 4) | lo,
                _ => {
                    bytes.zeroize();
                    return Err(TraceError::InvalidKey {
                        reason: format!("non-hex digit at offset {}", 2 * i),
                    });
                }
            }
        }
        Ok(Self(bytes))
    }

    /// The key as 64 lower-case hex digits (secret: do not log it).
    pub fn to_hex(&self) -> String {
        to_hex(&self.0)
    }

    /// The raw bytes (secret).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The keyed stream for one use (`label`) of this key for one flow (`mark`).
    pub(crate) fn stream(&self, label: &str, mark: MarkId) -> Result<KeyStream, TraceError> {
        let hmac_key = hmac::Key::new(hmac::HMAC_SHA256, &self.0);
        let mut ctx = hmac::Context::with_key(&hmac_key);
        ctx.update(b"voxgate-trace/v1\0");
        ctx.update(label.as_bytes());
        ctx.update(b"\0");
        ctx.update(&mark.0.to_be_bytes());
        let tag = ctx.sign();
        KeyStream::new(tag.as_ref())
    }
}

impl fmt::Debug for WatermarkKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WatermarkKey(<redacted>)")
    }
}

impl FromStr for WatermarkKey {
    type Err = TraceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_hex(s)
    }
}

/// The per-flow mark id: the tracer picks one for every flow it watermarks and keeps it with
/// what it knows of the flow (upstream 5-tuple, start time); the detector is given the mark
/// ids to test.
///
/// Selection cannot depend on the observed 5-tuple: across a relay or an anonymizing network
/// the downstream 5-tuple (addresses, ports, even the protocol's framing) is not the upstream
/// one, and the point of the watermark is that the detector does not know which downstream
/// flow is which. The mark id is the only flow-specific input both sides share. Written as
/// 16 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct MarkId(pub u64);

impl MarkId {
    /// A fresh random mark id (AWS-LC's DRBG).
    pub fn random() -> Result<Self, TraceError> {
        let mut bytes = [0u8; 8];
        aws_lc_rs::rand::fill(&mut bytes).map_err(|_| TraceError::Crypto("random mark id"))?;
        Ok(Self(u64::from_be_bytes(bytes)))
    }
}

impl fmt::Display for MarkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for MarkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MarkId({:016x})", self.0)
    }
}

impl FromStr for MarkId {
    type Err = TraceError;
    /// 1 to 16 hex digits, optionally prefixed by `0x`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let t = t
            .strip_prefix("0x")
            .or_else(|| t.strip_prefix("0X"))
            .unwrap_or(t);
        if t.is_empty() || t.len() > 16 || !t.bytes().all(|b| hex_digit(b).is_some()) {
            return Err(TraceError::InvalidMarkId(s.to_string()));
        }
        u64::from_str_radix(t, 16)
            .map(MarkId)
            .map_err(|_| TraceError::InvalidMarkId(s.to_string()))
    }
}

impl From<MarkId> for String {
    fn from(m: MarkId) -> String {
        m.to_string()
    }
}

impl TryFrom<String> for MarkId {
    type Error = TraceError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// AES-256-CTR keystream read as `u64` words (see the module doc).
pub(crate) struct KeyStream {
    key: EncryptingKey,
    /// Index of the next 16-byte counter block.
    block: u128,
    buf: [u8; 512],
    pos: usize,
}

impl KeyStream {
    fn new(subkey: &[u8]) -> Result<Self, TraceError> {
        let key = UnboundCipherKey::new(&AES_256, subkey)
            .and_then(EncryptingKey::ctr)
            .map_err(|_| TraceError::Crypto("AES-256-CTR key"))?;
        let mut s = Self {
            key,
            block: 0,
            buf: [0u8; 512],
            pos: 512,
        };
        s.refill()?;
        Ok(s)
    }

    fn refill(&mut self) -> Result<(), TraceError> {
        self.buf = [0u8; 512];
        let iv = self.block.to_be_bytes();
        self.key
            .less_safe_encrypt(&mut self.buf, EncryptionContext::Iv128(iv.into()))
            .map_err(|_| TraceError::Crypto("AES-256-CTR keystream"))?;
        self.block = self.block.wrapping_add((self.buf.len() / 16) as u128);
        self.pos = 0;
        Ok(())
    }

    /// The next 64 bits of the stream.
    pub(crate) fn next_u64(&mut self) -> Result<u64, TraceError> {
        if self.pos + 8 > self.buf.len() {
            self.refill()?;
        }
        let mut w = [0u8; 8];
        w.copy_from_slice(&self.buf[self.pos..self.pos + 8]);
        self.pos += 8;
        Ok(u64::from_le_bytes(w))
    }

    /// A uniform integer in `0..n` (rejection sampling, no modulo bias); `n` must be > 0.
    pub(crate) fn below(&mut self, n: u64) -> Result<u64, TraceError> {
        debug_assert!(n > 0);
        let n = n.max(1);
        let zone = u64::MAX - (u64::MAX % n);
        loop {
            let v = self.next_u64()?;
            if v < zone {
                return Ok(v % n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_hex_round_trip_and_errors() {
        let hex = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";
        let k = WatermarkKey::from_hex(hex).unwrap();
        assert_eq!(k.to_hex(), hex.to_ascii_lowercase());
        assert_eq!(format!("{k:?}"), "WatermarkKey(<redacted>)");
        assert!(matches!(
            WatermarkKey::from_hex("abcd"),
            Err(TraceError::InvalidKey { .. })
        ));
        let bad = format!("{}zz", &hex[..62]);
        let e = WatermarkKey::from_hex(&bad).unwrap_err().to_string();
        assert!(e.contains("offset 62"), "{e}");
    }

    #[test]
    fn mark_id_parse_and_format() {
        let m: MarkId = "0x00000000000000ff".parse().unwrap();
        assert_eq!(m, MarkId(255));
        assert_eq!(m.to_string(), "00000000000000ff");
        assert_eq!("ff".parse::<MarkId>().unwrap(), MarkId(255));
        assert!("".parse::<MarkId>().is_err());
        assert!("0x".parse::<MarkId>().is_err());
        assert!("12345678901234567".parse::<MarkId>().is_err());
        assert!("-1".parse::<MarkId>().is_err());
        let j = serde_json::to_string(&m).unwrap();
        assert_eq!(j, "\"00000000000000ff\"");
        assert_eq!(serde_json::from_str::<MarkId>(&j).unwrap(), m);
    }

    #[test]
    fn streams_are_deterministic_and_separated() {
        let k = WatermarkKey::from_bytes([7; 32]);
        let mut a = k.stream("x", MarkId(1)).unwrap();
        let mut b = k.stream("x", MarkId(1)).unwrap();
        let mut c = k.stream("x", MarkId(2)).unwrap();
        let mut d = k.stream("y", MarkId(1)).unwrap();
        let va: Vec<u64> = (0..200).map(|_| a.next_u64().unwrap()).collect();
        let vb: Vec<u64> = (0..200).map(|_| b.next_u64().unwrap()).collect();
        let vc: Vec<u64> = (0..200).map(|_| c.next_u64().unwrap()).collect();
        let vd: Vec<u64> = (0..200).map(|_| d.next_u64().unwrap()).collect();
        assert_eq!(va, vb);
        assert_ne!(va, vc);
        assert_ne!(va, vd);
        // Words past the first refill differ from the first ones (the counter advances).
        assert_ne!(va[..64], va[64..128]);
        let mut e = k.stream("x", MarkId(3)).unwrap();
        for _ in 0..1000 {
            assert!(e.below(7).unwrap() < 7);
        }
    }
}
