//! voxgate-escrow: CALEA key escrow without I/O.
//!
//! - [`wire`]: the escrow protocol between a voice gateway and its service-provider gateway
//!   (SPG): versioned, length-prefixed CBOR messages (`key_update`, `key_update_reply`,
//!   `session_end`, errors) with request ids for idempotent retries and replay protection.
//! - [`server`]: the SPG's session logic (session_IDs, rekeys, retries, replays); [`client`]:
//!   the gateway's (numbered requests, retries of the same bytes, resend after a reconnect).
//! - [`gate`]: the SPG's per-datagram decision (carrier, session, tuple, SRTP tag verified with
//!   the escrowed key, sampling) with drop reasons.
//! - [`carrier`]: the session_ID on every media datagram: the IPv4 option (type 158, RFC 4727
//!   experimental) and the RTP header extension (RFC 8285).
//! - [`seal`]: session keys sealed at rest to the lawful-intercept authority (HPKE, RFC 9180).
#![forbid(unsafe_code)]

pub mod carrier;
pub mod client;
pub mod gate;
pub mod seal;
pub mod server;
pub mod wire;
