//! voxgate-rtp: the media security core of voxgate.
//!
//! - [`packet`]: RTP/RTCP header views and RFC 8285 header extensions.
//! - [`srtp`]: SRTP/SRTCP protect and unprotect (RFC 3711, RFC 7714), in place, sans I/O.
//! - [`sdes`]: the SDP `a=crypto` attribute (RFC 4568).
//!
//! Nothing here opens a socket, reads a clock or spawns a thread: bytes in, bytes out.
// Unsafe code is denied everywhere but `hmac_sha1` (FFI) and `gcm` (AES-NI/PCLMULQDQ intrinsics).
#![deny(unsafe_code)]
#![warn(missing_debug_implementations)]

pub mod error;
pub mod g711;
mod gcm;
mod hmac_sha1;
pub mod keyring;
pub mod keys;
pub mod packet;
pub mod profile;
pub mod replay;
pub mod sdes;
pub mod srtp;

pub use error::{Error, Result};
pub use keyring::{KeyRing, Processed};
pub use keys::{MasterKey, RawSessionKeys};
pub use packet::{
    ExtensionElement, ExtensionForm, HeaderExtension, RtcpHeader, RtpHeader, RtpPacket,
};
pub use profile::SrtpProfile;
pub use replay::{ReplayWindow, Roc};
pub use sdes::{CryptoAttribute, KeyParam, Mki, SessionParam};
pub use srtp::{KeyUsage, PacketKind, SrtpPolicy, SrtpSession};
