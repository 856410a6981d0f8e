//! voxgate-sip: SIP (RFC 3261) without I/O. This first part is the message parser: it keeps
//! what it was given byte-exact, refuses malformed and hostile input with a typed error that
//! names the offset, the header and the response code, and bounds every size.
#![forbid(unsafe_code)]

pub mod anchor;
pub mod config;
pub mod dialog;
pub mod digest;
pub mod error;
pub mod grammar;
pub mod message;
pub mod proxy;
pub mod registrar;
pub mod response;
pub mod sdp;
pub mod transaction;
pub mod uac_auth;

pub use digest::{Algorithm, DigestAuth, DigestConfig, Verdict};
pub use error::{ErrorKind, ParseError};
pub use grammar::{NameAddr, Uri, Via};
pub use message::{CSeq, Framing, Header, HeaderKind, ParseLimits, SipMessage, StartLine};
pub use transaction::{
    ClientTransaction, Output, ServerTransaction, State, Timers, Transport, TuEvent,
};
