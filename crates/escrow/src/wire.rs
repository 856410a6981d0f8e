//! The escrow wire protocol between a voice gateway and its service-provider gateway (SPG),
//! carried over mutual TLS. docs/escrow-protocol.md has the byte-level description and
//! examples; `tests/golden.rs` pins them.
//!
//! A frame is a 6-byte header and a CBOR payload (RFC 8949, a map with small integer keys):
//!
//! ```text
//! +---------+--------+--------------------------+------------------------+
//! | version | type   | payload length (u32, BE) | payload (CBOR map)     |
//! | 0x01    | 1 byte | <= MAX_PAYLOAD           | length bytes           |
//! +---------+--------+--------------------------+------------------------+
//! ```
//!
//! Types: 0x01 key_update, 0x02 key_update_reply, 0x03 session_end, 0x04 session_end_reply,
//! 0x7f error. Every request carries a request id (unique per gateway, increasing) and the
//! gateway's wall-clock time; a retried request (same id, same bytes) gets the same reply
//! (idempotent), a different request under a used id, or one outside the time window, is a
//! replay (error 409).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use minicbor::{Decode, Encode};
use zeroize::Zeroizing;

/// The protocol version this code speaks.
pub const VERSION: u8 = 1;
/// The largest payload accepted (a key_update of 16 streams is well under 4 KiB).
pub const MAX_PAYLOAD: usize = 16 * 1024;
/// Frame header length.
pub const HEADER_LEN: usize = 6;
/// Streams (direction x SSRC) one key_update may carry.
pub const MAX_STREAMS: usize = 16;

/// Frame types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameType {
    KeyUpdate = 0x01,
    KeyUpdateReply = 0x02,
    SessionEnd = 0x03,
    SessionEndReply = 0x04,
    Error = 0x7f,
}

impl FrameType {
    fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            0x01 => FrameType::KeyUpdate,
            0x02 => FrameType::KeyUpdateReply,
            0x03 => FrameType::SessionEnd,
            0x04 => FrameType::SessionEndReply,
            0x7f => FrameType::Error,
            _ => return None,
        })
    }
}

/// Why a frame was refused; each maps to the error code sent back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// More bytes are needed (streams): not an error to report.
    #[error("incomplete frame")]
    Incomplete,
    #[error("unsupported protocol version {0}")]
    Version(u8),
    #[error("unknown frame type 0x{0:02x}")]
    FrameType(u8),
    #[error("payload of {0} bytes exceeds the limit")]
    TooLarge(usize),
    #[error("malformed payload: {0}")]
    Malformed(String),
    #[error("invalid field: {0}")]
    Invalid(&'static str),
}

impl WireError {
    /// The error code the SPG answers with.
    pub fn code(&self) -> ErrorCode {
        match self {
            WireError::Version(_) => ErrorCode::UnsupportedVersion,
            WireError::TooLarge(_) => ErrorCode::TooLarge,
            _ => ErrorCode::Malformed,
        }
    }
}

/// Error codes carried in an error frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum ErrorCode {
    /// The frame or its payload does not parse, or a field is out of range.
    Malformed = 400,
    /// The gateway is not allowed this (not party to the call, identity mismatch).
    Forbidden = 403,
    /// The session_ID is unknown (or belongs to another gateway).
    UnknownSession = 404,
    /// A replayed or stale request.
    Replay = 409,
    TooLarge = 413,
    /// The SPG cannot take more sessions now.
    Unavailable = 503,
    UnsupportedVersion = 505,
}

impl ErrorCode {
    pub fn from_u16(v: u16) -> Option<Self> {
        Some(match v {
            400 => ErrorCode::Malformed,
            403 => ErrorCode::Forbidden,
            404 => ErrorCode::UnknownSession,
            409 => ErrorCode::Replay,
            413 => ErrorCode::TooLarge,
            503 => ErrorCode::Unavailable,
            505 => ErrorCode::UnsupportedVersion,
            _ => return None,
        })
    }
}

/// A transport address as CBOR: `[ip bytes (4 or 16), port]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addr(pub SocketAddr);

impl<C> Encode<C> for Addr {
    fn encode<W: minicbor::encode::Write>(
        &self,
        e: &mut minicbor::Encoder<W>,
        _: &mut C,
    ) -> Result<(), minicbor::encode::Error<W::Error>> {
        e.array(2)?;
        match self.0.ip() {
            IpAddr::V4(a) => e.bytes(&a.octets())?,
            IpAddr::V6(a) => e.bytes(&a.octets())?,
        };
        e.u16(self.0.port())?;
        Ok(())
    }
}

impl<'b, C> Decode<'b, C> for Addr {
    fn decode(d: &mut minicbor::Decoder<'b>, _: &mut C) -> Result<Self, minicbor::decode::Error> {
        if d.array()? != Some(2) {
            return Err(minicbor::decode::Error::message(
                "address: expected [ip, port]",
            ));
        }
        let ip = d.bytes()?;
        let ip = match ip.len() {
            4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(ip).unwrap_or_default())),
            16 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(ip).unwrap_or_default())),
            _ => return Err(minicbor::decode::Error::message("address: 4 or 16 bytes")),
        };
        Ok(Addr(SocketAddr::new(ip, d.u16()?)))
    }
}

/// Key material as CBOR bytes, wiped when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub Zeroizing<Vec<u8>>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({} bytes, redacted)", self.0.len())
    }
}

impl<C> Encode<C> for Secret {
    fn encode<W: minicbor::encode::Write>(
        &self,
        e: &mut minicbor::Encoder<W>,
        _: &mut C,
    ) -> Result<(), minicbor::encode::Error<W::Error>> {
        e.bytes(&self.0)?;
        Ok(())
    }
}

impl<'b, C> Decode<'b, C> for Secret {
    fn decode(d: &mut minicbor::Decoder<'b>, _: &mut C) -> Result<Self, minicbor::decode::Error> {
        Ok(Secret(Zeroizing::new(d.bytes()?.to_vec())))
    }
}

/// Which way a stream flows, seen from the gateway that escrows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
#[cbor(index_only)]
pub enum Direction {
    /// The gateway encrypts with this key (its own key).
    #[n(0)]
    Send,
    /// The peer encrypts with this key (the gateway decrypts).
    #[n(1)]
    Receive,
}

/// One direction of one media stream and the SRTP master key that protects it.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct StreamKey {
    #[n(0)]
    pub direction: Direction,
    /// Source and destination transport addresses of the datagrams (the 5-tuple, UDP).
    #[n(1)]
    pub src: Addr,
    #[n(2)]
    pub dst: Addr,
    /// The RTP SSRC, when known at escrow time (a receive stream may not be known yet).
    #[n(3)]
    pub ssrc: Option<u32>,
    /// The SDES crypto-suite name (RFC 4568 / RFC 7714).
    #[n(4)]
    pub suite: String,
    /// Master key || master salt.
    #[n(5)]
    pub master: Secret,
    /// The MKI, if the key has one.
    #[n(6)]
    pub mki: Option<minicbor::bytes::ByteVec>,
}

/// A gateway escrows (or, with `session_id`, rekeys) a call's keys.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct KeyUpdate {
    #[n(0)]
    pub request_id: u64,
    /// The gateway's wall clock, milliseconds since the Unix epoch.
    #[n(1)]
    pub time_ms: u64,
    /// The SIP Call-ID of the call.
    #[n(2)]
    pub call_id: String,
    /// Present for a rekey of an existing session.
    #[n(3)]
    pub session_id: Option<u64>,
    #[n(4)]
    pub streams: Vec<StreamKey>,
}

/// The SPG's answer to a key_update: the session_ID to tag every datagram with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct KeyUpdateReply {
    #[n(0)]
    pub request_id: u64,
    #[n(1)]
    pub session_id: u64,
}

/// The call is over: the SPG forgets the live keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct SessionEnd {
    #[n(0)]
    pub request_id: u64,
    #[n(1)]
    pub time_ms: u64,
    #[n(2)]
    pub session_id: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct SessionEndReply {
    #[n(0)]
    pub request_id: u64,
    #[n(1)]
    pub session_id: u64,
}

/// A refused request.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct ErrorReply {
    /// The request's id, 0 when it could not be read.
    #[n(0)]
    pub request_id: u64,
    #[n(1)]
    pub code: u16,
    /// Human-readable, never containing key material.
    #[n(2)]
    pub reason: String,
}

/// Any frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    KeyUpdate(KeyUpdate),
    KeyUpdateReply(KeyUpdateReply),
    SessionEnd(SessionEnd),
    SessionEndReply(SessionEndReply),
    Error(ErrorReply),
}

impl Message {
    pub fn frame_type(&self) -> FrameType {
        match self {
            Message::KeyUpdate(_) => FrameType::KeyUpdate,
            Message::KeyUpdateReply(_) => FrameType::KeyUpdateReply,
            Message::SessionEnd(_) => FrameType::SessionEnd,
            Message::SessionEndReply(_) => FrameType::SessionEndReply,
            Message::Error(_) => FrameType::Error,
        }
    }

    pub fn request_id(&self) -> u64 {
        match self {
            Message::KeyUpdate(m) => m.request_id,
            Message::KeyUpdateReply(m) => m.request_id,
            Message::SessionEnd(m) => m.request_id,
            Message::SessionEndReply(m) => m.request_id,
            Message::Error(m) => m.request_id,
        }
    }

    /// The whole frame.
    pub fn encode(&self) -> Vec<u8> {
        let payload = match self {
            Message::KeyUpdate(m) => minicbor::to_vec(m),
            Message::KeyUpdateReply(m) => minicbor::to_vec(m),
            Message::SessionEnd(m) => minicbor::to_vec(m),
            Message::SessionEndReply(m) => minicbor::to_vec(m),
            Message::Error(m) => minicbor::to_vec(m),
        }
        .unwrap_or_default(); // writing to a Vec cannot fail
        let payload = Zeroizing::new(payload);
        let mut f = Vec::with_capacity(HEADER_LEN + payload.len());
        f.push(VERSION);
        f.push(self.frame_type() as u8);
        f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        f.extend_from_slice(&payload);
        f
    }

    /// Decodes the first frame of `buf`; returns it and the bytes it took.
    /// [`WireError::Incomplete`] means: read more and try again.
    pub fn decode(buf: &[u8]) -> Result<(Message, usize), WireError> {
        if buf.is_empty() {
            return Err(WireError::Incomplete);
        }
        if buf[0] != VERSION {
            return Err(WireError::Version(buf[0]));
        }
        if buf.len() < HEADER_LEN {
            return Err(WireError::Incomplete);
        }
        let t = FrameType::from_u8(buf[1]).ok_or(WireError::FrameType(buf[1]))?;
        let len = u32::from_be_bytes([buf[2], buf[3], buf[4], buf[5]]) as usize;
        if len > MAX_PAYLOAD {
            return Err(WireError::TooLarge(len));
        }
        let Some(payload) = buf.get(HEADER_LEN..HEADER_LEN + len) else {
            return Err(WireError::Incomplete);
        };
        let bad = |e: minicbor::decode::Error| WireError::Malformed(short(&e.to_string()));
        let msg = match t {
            FrameType::KeyUpdate => Message::KeyUpdate(decode_all(payload).map_err(bad)?),
            FrameType::KeyUpdateReply => Message::KeyUpdateReply(decode_all(payload).map_err(bad)?),
            FrameType::SessionEnd => Message::SessionEnd(decode_all(payload).map_err(bad)?),
            FrameType::SessionEndReply => {
                Message::SessionEndReply(decode_all(payload).map_err(bad)?)
            }
            FrameType::Error => Message::Error(decode_all(payload).map_err(bad)?),
        };
        msg.validate()?;
        Ok((msg, HEADER_LEN + len))
    }

    fn validate(&self) -> Result<(), WireError> {
        if let Message::KeyUpdate(k) = self {
            if k.call_id.is_empty() || k.call_id.len() > 256 {
                return Err(WireError::Invalid("call_id: 1..=256 bytes"));
            }
            if k.streams.is_empty() || k.streams.len() > MAX_STREAMS {
                return Err(WireError::Invalid("streams: 1..=16"));
            }
            if k.session_id == Some(0) {
                return Err(WireError::Invalid("session_id: never 0"));
            }
            for s in &k.streams {
                let profile = voxgate_rtp::SrtpProfile::from_name(&s.suite)
                    .map_err(|_| WireError::Invalid("suite: not a supported SRTP suite"))?;
                if s.master.0.len() != profile.key_len() + profile.salt_len() {
                    return Err(WireError::Invalid("master: wrong length for the suite"));
                }
                if s.mki.as_ref().is_some_and(|m| m.is_empty() || m.len() > 4) {
                    return Err(WireError::Invalid("mki: 1..=4 bytes"));
                }
            }
        }
        Ok(())
    }
}

/// A payload must be exactly one CBOR item.
fn decode_all<'b, T: Decode<'b, ()>>(payload: &'b [u8]) -> Result<T, minicbor::decode::Error> {
    let mut d = minicbor::Decoder::new(payload);
    let v = d.decode()?;
    if d.position() != payload.len() {
        return Err(minicbor::decode::Error::message(
            "trailing bytes after the payload",
        ));
    }
    Ok(v)
}

fn short(s: &str) -> String {
    s.chars().take(120).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> KeyUpdate {
        KeyUpdate {
            request_id: 7,
            time_ms: 1_764_000_000_000,
            call_id: "a84b4c76e66710@gw1.a.example".into(),
            session_id: None,
            streams: vec![StreamKey {
                direction: Direction::Send,
                src: Addr("192.0.2.10:4000".parse().unwrap()),
                dst: Addr("198.51.100.20:5000".parse().unwrap()),
                ssrc: Some(0x1234_5678),
                suite: "AES_CM_128_HMAC_SHA1_80".into(),
                master: Secret(Zeroizing::new(vec![0x11; 30])),
                mki: None,
            }],
        }
    }

    #[test]
    fn round_trip_and_streaming() {
        let m = Message::KeyUpdate(sample());
        let f = m.encode();
        let (back, n) = Message::decode(&f).unwrap();
        assert_eq!(back, m);
        assert_eq!(n, f.len());
        for cut in 0..f.len() {
            assert_eq!(
                Message::decode(&f[..cut]),
                Err(WireError::Incomplete),
                "cut {cut}"
            );
        }
        let mut two = f.clone();
        two.extend_from_slice(
            &Message::KeyUpdateReply(KeyUpdateReply {
                request_id: 7,
                session_id: 9,
            })
            .encode(),
        );
        let (_, n) = Message::decode(&two).unwrap();
        assert!(matches!(
            Message::decode(&two[n..]),
            Ok((Message::KeyUpdateReply(_), _))
        ));
    }

    #[test]
    fn refusals_are_typed() {
        let f = Message::KeyUpdate(sample()).encode();
        let mut v = f.clone();
        v[0] = 2;
        assert_eq!(Message::decode(&v), Err(WireError::Version(2)));
        let mut t = f.clone();
        t[1] = 0x55;
        assert_eq!(Message::decode(&t), Err(WireError::FrameType(0x55)));
        let mut big = f.clone();
        big[2..6].copy_from_slice(&(1u32 << 20).to_be_bytes());
        assert_eq!(Message::decode(&big), Err(WireError::TooLarge(1 << 20)));
        let mut bad_key = sample();
        bad_key.streams[0].master = Secret(Zeroizing::new(vec![1; 29]));
        assert!(matches!(
            Message::decode(&Message::KeyUpdate(bad_key).encode()),
            Err(WireError::Invalid(_))
        ));
        let mut bad_suite = sample();
        bad_suite.streams[0].suite = "NULL".into();
        assert!(matches!(
            Message::decode(&Message::KeyUpdate(bad_suite).encode()),
            Err(WireError::Invalid(_))
        ));
        // Garbage payloads never panic.
        let mut g = f.clone();
        for i in HEADER_LEN..g.len() {
            g[i] ^= 0xa5;
            let _ = Message::decode(&g);
        }
    }

    #[test]
    fn debug_never_shows_keys() {
        let s = format!("{:?}", sample());
        assert!(s.contains("redacted"));
        assert!(!s.contains("17, 17"));
    }
}
