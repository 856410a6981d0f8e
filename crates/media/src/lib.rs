//! voxgate-media: media anchoring without I/O.
//!
//! - [`sdp_edit`]: what an anchor reads from an SDP body (media addresses, RTCP, SDES keys,
//!   SSRCs, the session_ID extension's id) and how it rewrites one (addresses, ports, ICE).
//! - [`ports`]: the relay port pool (RTP even, RTCP odd).
//! - [`relay`]: the service-provider gateway's relay: [`relay::RelayAnchor`] rewrites SDP and
//!   allocates ports as calls cross the SPG's proxy (control plane), [`relay::Relay`] decides
//!   per datagram (carrier session_ID, the escrow gate, the call's 5-tuple) where it goes
//!   (data plane), and [`relay::CallTable`] lets the escrow server check that a key_update
//!   comes from a party to the call and names the call's real media paths.
//! - [`bridge`]: the voice gateway's SRTP bridge: it terminates the inside leg, re-encrypts
//!   toward the SPG with its own keys (the ones it escrows) and tags every datagram with the
//!   session_ID.
#![forbid(unsafe_code)]

pub mod bridge;
pub mod ports;
pub mod relay;
pub mod sdp_edit;
