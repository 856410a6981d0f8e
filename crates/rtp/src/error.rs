//! The crate's one error type. Variants name the fault; none carries key material.

/// Errors from packet parsing, SRTP/SRTCP processing and SDES parsing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The packet is shorter than its own headers say, or than the minimum for its kind.
    #[error("packet truncated: {len} bytes, need at least {need}")]
    Truncated { len: usize, need: usize },
    /// The RTP/RTCP version field is not 2.
    #[error("bad RTP/RTCP version {version} (expected 2)")]
    BadVersion { version: u8 },
    /// An RFC 8285 header extension element is malformed.
    #[error("malformed RTP header extension element at offset {offset}")]
    BadExtension { offset: usize },
    /// The RTP padding count is zero or larger than the payload.
    #[error("bad RTP padding length {pad}")]
    BadPadding { pad: usize },
    /// The caller's buffer has no room for the SRTP/SRTCP trailer.
    #[error("buffer too small: need {need} bytes, have {have}")]
    BufferTooSmall { need: usize, have: usize },
    /// The authentication tag (HMAC-SHA1 or GCM tag) does not verify.
    #[error("authentication failed (tag mismatch)")]
    AuthTagMismatch,
    /// The packet index was already received (RFC 3711 §3.3.2).
    #[error("replayed packet (index {index})")]
    Replayed { index: u64 },
    /// The packet index is older than the replay window covers.
    #[error("packet too old for the replay window (index {index})")]
    ReplayTooOld { index: u64 },
    /// protect() was asked to reuse a packet index, which would reuse keystream.
    #[error("refusing to protect index {index} twice (keystream reuse)")]
    IndexReuse { index: u64 },
    /// The MKI in the packet names no known master key.
    #[error("unknown MKI")]
    UnknownMki,
    /// The MKI given for a key does not have the session's MKI length.
    #[error("MKI length {got} does not match the session's MKI length {want}")]
    MkiLength { got: usize, want: usize },
    /// The master key has protected or unprotected as many packets as its lifetime allows.
    #[error("master key lifetime exhausted ({used} packets)")]
    KeyExhausted { used: u64 },
    /// The 48-bit SRTP or 31-bit SRTCP index space of a stream is used up.
    #[error("index space exhausted for SSRC {ssrc:#010x}")]
    IndexExhausted { ssrc: u32 },
    /// Creating one more stream would exceed the configured limit.
    #[error("stream limit reached ({limit} SSRCs)")]
    TooManyStreams { limit: usize },
    /// The SRTCP E flag disagrees with the session's policy.
    #[error("SRTCP encryption flag does not match policy")]
    EncryptionFlagMismatch,
    /// An unknown or unsupported SRTP crypto suite name.
    #[error("unknown crypto suite {name:?}")]
    UnknownSuite { name: String },
    /// A key or salt of the wrong length for the suite.
    #[error("wrong key length for {suite}: got {got} bytes, expected {want}")]
    KeyLength {
        suite: &'static str,
        got: usize,
        want: usize,
    },
    /// A session policy that cannot be used (no keys, MKI on one key only, bad window size...).
    #[error("invalid SRTP policy: {reason}")]
    InvalidPolicy { reason: &'static str },
    /// SDES: the key material is not valid base64.
    #[error("SDES: invalid base64 in inline key material")]
    Base64,
    /// SDES: the attribute does not follow the RFC 4568 grammar.
    #[error("SDES: malformed crypto attribute at byte {offset}: {reason}")]
    SdesSyntax { offset: usize, reason: &'static str },
    /// SDES: a session parameter that voxgate does not implement.
    #[error("SDES: unsupported session parameter {param}")]
    UnsupportedSessionParam { param: String },
    /// A cryptographic primitive failed (should not happen with valid keys).
    #[error("crypto backend failure")]
    Crypto,
}

/// Result alias for this crate.
pub type Result<T, E = Error> = core::result::Result<T, E>;
