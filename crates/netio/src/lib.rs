//! The socket side of CALEA session_ID tagging (issue 4): IPv4 header options on UDP sockets.
//!
//! Every media datagram of an escrowed call carries its 64-bit session_ID in an IPv4 header option (experimental
//! type 158, RFC 4727). The option bytes themselves are encoded and decoded by the sans-I/O escrow code; this
//! crate only moves them between a UDP socket and the kernel:
//!
//! - [`set_ip_options`]: `setsockopt(IPPROTO_IP, IP_OPTIONS)`, the options of every datagram the socket sends
//!   (an empty slice clears them).
//! - [`send_with_options`]: `sendmsg` with the options as an `IP_RETOPTS` control message, for one datagram only
//!   (one socket shared by many sessions, no `setsockopt` per session). Linux accepts ancillary IPv4 options
//!   under the type `IP_RETOPTS`; `IP_OPTIONS` as a control message type is refused with `EINVAL`.
//! - [`enable_recv_options`] and [`recv_with_options`]: `IP_RECVOPTS` and `recvmsg`, the datagram, its source
//!   and the options exactly as they were in the received IP header, into a fixed [`OptionsBuf`] (no allocation).
//!
//! What Linux does with the bytes (observed on 6.18, loopback and through a forwarding namespace, see
//! `tests/ip_options.rs`): options are sent as given; a length that is not a multiple of 4 is padded by the kernel
//! with EOL (0) bytes, and any byte after an EOL is rewritten to EOL, which is why both are refused here so that
//! the receiver sees exactly what was set. The receiver's control message has type `IP_RECVOPTS` and holds the
//! raw option bytes of the header. A router (Linux forwarding) passes an unknown option such as 158 unchanged.
//!
//! Privilege: the kernel lets an unprivileged socket send only the options it knows (EOL, NOP, RR, TS, LSRR,
//! SSRR, Router Alert); any other type, 158 included, needs `CAP_NET_RAW`, and without it the kernel answers
//! `EINVAL` (not `EPERM`). Both are reported as [`NetError::NeedCapNetRaw`] when the options hold such a type
//! and the calling thread does not have `CAP_NET_RAW` in its effective set.
//!
//! Sockets are taken as [`AsFd`], so std, socket2 and tokio sockets all work. Nothing here blocks by itself: on a
//! non-blocking socket `recv_with_options` returns an error whose [`NetError::kind`] is
//! [`io::ErrorKind::WouldBlock`], and `io::Error::from(NetError)` keeps that kind, so the calls fit in
//! `tokio::net::UdpSocket::try_io`. Linux only.
#![cfg(target_os = "linux")]
#![deny(unsafe_op_in_unsafe_fn)]

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;

pub mod plane;
pub mod portset;
mod sys;
mod uring;

/// The maximum length of IPv4 header options (RFC 791: header at most 60 bytes, 20 of them fixed).
pub const MAX_OPTIONS_LEN: usize = 40;

/// Option type: End of Option List (RFC 791).
pub const IPOPT_EOL: u8 = 0;
/// Option type: No Operation (RFC 791).
pub const IPOPT_NOP: u8 = 1;

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The options are longer than 40 bytes or not a multiple of 4 (the IP header length counts 32-bit words).
    #[error(
        "IPv4 options must be a multiple of 4 bytes and at most 40 bytes long, got {len} bytes"
    )]
    OptionsLength {
        /// The length given.
        len: usize,
    },
    /// The options are not a well-formed RFC 791 option list.
    #[error("malformed IPv4 options at byte {offset}: {reason}")]
    MalformedOptions {
        /// Offset of the faulty option in the options.
        offset: usize,
        /// What is wrong there.
        reason: &'static str,
    },
    /// The kernel refused an option type it only lets privileged sockets send.
    #[error(
        "sending IPv4 option type {option_type} needs CAP_NET_RAW: run as root or grant the capability with \
         `setcap cap_net_raw+ep <binary>`"
    )]
    NeedCapNetRaw {
        /// The first option type in the options that needs the capability.
        option_type: u8,
    },
    /// The kernel refused well-formed options for another reason (for example an RR option with a bad pointer).
    #[error("the kernel refused the IPv4 options: {0}")]
    OptionsRefused(#[source] io::Error),
    /// IPv4 options can only be sent to an IPv4 address.
    #[error("IPv4 options need an IPv4 destination, got {addr}")]
    NotIpv4 {
        /// The destination given.
        addr: SocketAddr,
    },
    /// The datagram did not fit in the buffer; the rest of it is lost.
    #[error("datagram truncated: it is larger than the {capacity}-byte buffer")]
    Truncated {
        /// The buffer's length.
        capacity: usize,
    },
    /// The received control messages did not fit (other ancillary data enabled on the socket).
    #[error("received control messages truncated; the IP options may be missing")]
    ControlTruncated,
    /// Any other system call error, `WouldBlock` included.
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl NetError {
    /// The `io::ErrorKind` that best describes the error (`WouldBlock` for a non-blocking socket with no data).
    pub fn kind(&self) -> io::ErrorKind {
        match self {
            NetError::Io(e) | NetError::OptionsRefused(e) => e.kind(),
            NetError::NeedCapNetRaw { .. } => io::ErrorKind::PermissionDenied,
            NetError::OptionsLength { .. }
            | NetError::MalformedOptions { .. }
            | NetError::NotIpv4 { .. } => io::ErrorKind::InvalidInput,
            NetError::Truncated { .. } | NetError::ControlTruncated => io::ErrorKind::InvalidData,
        }
    }

    /// True when a non-blocking socket had nothing to receive (or no room to send).
    pub fn is_would_block(&self) -> bool {
        self.kind() == io::ErrorKind::WouldBlock
    }
}

impl From<NetError> for io::Error {
    fn from(e: NetError) -> io::Error {
        match e {
            NetError::Io(e) => e,
            other => io::Error::new(other.kind(), other),
        }
    }
}

/// IPv4 header options as received: up to 40 bytes, inline.
#[derive(Clone, Copy)]
pub struct OptionsBuf {
    bytes: [u8; MAX_OPTIONS_LEN],
    len: u8,
}

impl Default for OptionsBuf {
    fn default() -> OptionsBuf {
        OptionsBuf {
            bytes: [0; MAX_OPTIONS_LEN],
            len: 0,
        }
    }
}

impl PartialEq for OptionsBuf {
    fn eq(&self, other: &OptionsBuf) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for OptionsBuf {}

impl std::hash::Hash for OptionsBuf {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_slice().hash(state);
    }
}

impl OptionsBuf {
    /// Options made of `bytes`, or `None` when they are longer than 40 bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<OptionsBuf> {
        let mut buf = OptionsBuf::default();
        buf.bytes.get_mut(..bytes.len())?.copy_from_slice(bytes);
        buf.len = u8::try_from(bytes.len()).ok()?;
        Some(buf)
    }

    /// The option bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// The number of option bytes.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// True when the datagram carried no options.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl std::ops::Deref for OptionsBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl AsRef<[u8]> for OptionsBuf {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl fmt::Debug for OptionsBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OptionsBuf(")?;
        for b in self.as_slice() {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

/// Checks that `options` can go into an IPv4 header unchanged: a multiple of 4 bytes, at most 40, a well-formed
/// option list (RFC 791 §3.1: single-byte EOL and NOP, otherwise type, length >= 2, data) with only EOL bytes after
/// an EOL (Linux rewrites anything else there to EOL).
pub fn check_options(options: &[u8]) -> Result<(), NetError> {
    if options.len() > MAX_OPTIONS_LEN || !options.len().is_multiple_of(4) {
        return Err(NetError::OptionsLength { len: options.len() });
    }
    let mut i = 0;
    while let Some(&option_type) = options.get(i) {
        match option_type {
            IPOPT_EOL => {
                return match options[i..].iter().position(|&b| b != IPOPT_EOL) {
                    Some(p) => Err(NetError::MalformedOptions {
                        offset: i + p,
                        reason: "non-zero byte after End of Option List",
                    }),
                    None => Ok(()),
                };
            }
            IPOPT_NOP => i += 1,
            _ => {
                let len = match options.get(i + 1) {
                    Some(&len) => usize::from(len),
                    None => {
                        return Err(NetError::MalformedOptions {
                            offset: i,
                            reason: "option length byte missing",
                        })
                    }
                };
                if len < 2 {
                    return Err(NetError::MalformedOptions {
                        offset: i,
                        reason: "option length below 2",
                    });
                }
                if i + len > options.len() {
                    return Err(NetError::MalformedOptions {
                        offset: i,
                        reason: "option runs past the end of the options",
                    });
                }
                i += len;
            }
        }
    }
    Ok(())
}

/// The first option type in a well-formed option list that Linux lets only `CAP_NET_RAW` sockets send: anything
/// but EOL, NOP, RR (7), TS (68), LSRR (131), SSRR (137) and Router Alert (148) (net/ipv4/ip_options.c,
/// `ip_options_compile`).
fn privileged_option_type(options: &[u8]) -> Option<u8> {
    let mut i = 0;
    while let Some(&t) = options.get(i) {
        match t {
            IPOPT_EOL => return None,
            IPOPT_NOP => i += 1,
            7 | 68 | 131 | 137 | 148 => {
                i += usize::from(options.get(i + 1).copied().unwrap_or(2)).max(2)
            }
            other => return Some(other),
        }
    }
    None
}

/// Turns the kernel's refusal of options into the typed error: `EPERM`, or the `EINVAL` Linux gives for a
/// privileged option type, when the calling thread lacks `CAP_NET_RAW`.
fn classify_options_error(options: &[u8], err: io::Error) -> NetError {
    let errno = err.raw_os_error();
    if errno == Some(libc::EPERM) || errno == Some(libc::EINVAL) {
        if let Some(option_type) = privileged_option_type(options) {
            if !sys::has_cap_net_raw() {
                return NetError::NeedCapNetRaw { option_type };
            }
        }
        if errno == Some(libc::EINVAL) {
            return NetError::OptionsRefused(err);
        }
    }
    NetError::Io(err)
}

/// Sets the IPv4 options of every datagram `sock` sends (`setsockopt(IPPROTO_IP, IP_OPTIONS)`); an empty slice
/// clears them. `sock` must be an IPv4 socket.
pub fn set_ip_options(sock: &impl AsFd, options: &[u8]) -> Result<(), NetError> {
    check_options(options)?;
    sys::setsockopt_bytes(sock.as_fd(), libc::IPPROTO_IP, libc::IP_OPTIONS, options)
        .map_err(|e| classify_options_error(options, e))
}

/// The IPv4 options `sock` currently sends (`getsockopt(IPPROTO_IP, IP_OPTIONS)`).
pub fn ip_options(sock: &impl AsFd) -> Result<OptionsBuf, NetError> {
    let mut buf = OptionsBuf::default();
    let len = sys::getsockopt_bytes(
        sock.as_fd(),
        libc::IPPROTO_IP,
        libc::IP_OPTIONS,
        &mut buf.bytes,
    )?;
    buf.len = u8::try_from(len.min(MAX_OPTIONS_LEN)).unwrap_or(0);
    Ok(buf)
}

/// Asks the kernel to hand over the IPv4 options of every received datagram (`IP_RECVOPTS`).
pub fn enable_recv_options(sock: &impl AsFd) -> Result<(), NetError> {
    sys::setsockopt_int(sock.as_fd(), libc::IPPROTO_IP, libc::IP_RECVOPTS, 1)?;
    Ok(())
}

/// Receives one datagram into `buf` with `recvmsg`: its length, its source and the IPv4 options of its header
/// (empty when it had none or when [`enable_recv_options`] was not called). Blocks or not as the socket does;
/// `EINTR` is retried.
pub fn recv_with_options(
    sock: &impl AsFd,
    buf: &mut [u8],
) -> Result<(usize, SocketAddr, OptionsBuf), NetError> {
    sys::recvmsg_options(sock.as_fd(), buf)
}

/// Sends one datagram to `to` with `options` in its IPv4 header, for this datagram only (`sendmsg` with an
/// `IP_RETOPTS` control message), whatever [`set_ip_options`] set on the socket. Empty `options` send no control
/// message, so the socket's own options (if any) apply.
pub fn send_with_options(
    sock: &impl AsFd,
    datagram: &[u8],
    to: SocketAddr,
    options: &[u8],
) -> Result<usize, NetError> {
    let SocketAddr::V4(to) = to else {
        return Err(NetError::NotIpv4 { addr: to });
    };
    check_options(options)?;
    sys::sendmsg_options(sock.as_fd(), datagram, to, options)
        .map_err(|e| classify_options_error(options, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAG: [u8; 12] = [158, 10, 1, 2, 3, 4, 5, 6, 7, 8, IPOPT_NOP, IPOPT_EOL];

    #[test]
    fn session_id_option_is_well_formed() {
        check_options(&TAG).unwrap();
        check_options(&[]).unwrap();
        check_options(&[158, 10, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0]).unwrap();
        check_options(&[1, 1, 1, 1]).unwrap();
        assert_eq!(privileged_option_type(&TAG), Some(158));
        assert_eq!(privileged_option_type(&[148, 4, 0, 0]), None);
        assert_eq!(
            privileged_option_type(&[1, 148, 4, 0, 0, 130, 3, 0]),
            Some(130)
        );
    }

    #[test]
    fn bad_lengths_refused() {
        for len in [1, 2, 3, 10, 11, 41, 44, 64] {
            let v = vec![IPOPT_NOP; len];
            assert!(
                matches!(check_options(&v), Err(NetError::OptionsLength { len: l }) if l == len)
            );
        }
    }

    #[test]
    fn malformed_lists_refused() {
        let cases: [(&[u8], usize); 4] = [
            (&[158, 1, 0, 0], 0),
            (&[1, 1, 1, 158], 3),
            (&[158, 13, 1, 2, 3, 4, 5, 6, 7, 8, 1, 0], 0),
            (&[158, 10, 1, 2, 3, 4, 5, 6, 7, 8, 0, 1], 11),
        ];
        for (opts, at) in cases {
            match check_options(opts) {
                Err(NetError::MalformedOptions { offset, .. }) => {
                    assert_eq!(offset, at, "{opts:?}")
                }
                other => panic!("{opts:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn options_buf() {
        let b = OptionsBuf::from_slice(&TAG).unwrap();
        assert_eq!(b.as_slice(), &TAG);
        assert_eq!(format!("{b:?}"), "OptionsBuf(9e0a01020304050607080100)");
        assert!(OptionsBuf::from_slice(&[0; 41]).is_none());
        assert!(OptionsBuf::default().is_empty());
    }

    #[test]
    fn would_block_kind_survives() {
        let e = NetError::Io(io::Error::from(io::ErrorKind::WouldBlock));
        assert!(e.is_would_block());
        assert_eq!(io::Error::from(e).kind(), io::ErrorKind::WouldBlock);
        let e = NetError::NeedCapNetRaw { option_type: 158 };
        assert!(
            e.to_string().contains("CAP_NET_RAW")
                && e.to_string().contains("setcap cap_net_raw+ep")
        );
    }
}
