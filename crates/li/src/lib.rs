//! voxgate-li: lawful interception without I/O.
//!
//! - [`audit`]: the tamper-evident audit log: hash-chained entries (SHA-256), each signed by
//!   the node (Ed25519); [`audit::verify`] detects an edited, removed, inserted or reordered
//!   entry, and a truncated tail against a signed head.
#![forbid(unsafe_code)]

pub mod audit;
pub mod iri;
pub mod mediation;
pub mod poi;
pub mod warrant;
pub mod x2x3;
