//! voxgate-trace: tracing anonymized encrypted calls by an active timing watermark, without I/O.
//!
//! A tracer on the caller's side delays a few packets of an upstream flow by a few milliseconds,
//! following a pattern only its secret key can reproduce; wherever the flow comes out of the
//! anonymizing network (re-encrypted, re-addressed, re-framed), a detector holding the key
//! finds the pattern in the packets' arrival times. Two schemes:
//!
//! - [`Scheme::Ccs05`]: the inter-packet-delay watermark of Wang, Chen and Jajodia, "Tracking
//!   anonymous peer-to-peer VoIP calls on the Internet" (CCS 2005), reproduced faithfully:
//!   keyed selection of packet pairs by packet index, IPDD = (IPD2 - IPD1)/2, bit 1 delays P1
//!   and P4 by `a`, bit 0 delays P2 and P3, r IPDDs per bit decoded by the sign of their mean,
//!   watermarked iff the Hamming distance is at most h ([`ccs05`]).
//! - [`Scheme::IntervalPhase`]: ours ([`interval`]). Whole keyed time intervals ("slots",
//!   measured from the flow's first packet, not counted in packets) are delayed by `a`; the
//!   detector locks onto the flow's frame clock and compares the packets' phase between the two
//!   slots of each keyed pair, and a self-normalized correlation score with an analytic
//!   threshold decides. Loss and inserted packets only remove or dilute samples, every packet
//!   of the call carries signal, and only the inter-packet delays at slot edges change.
//!
//! docs/watermark.md has the derivations, the analytic true- and false-positive formulas, the
//! chosen thresholds and the measured tables.
//!
//! # API for drivers
//!
//! ```
//! use voxgate_trace::{Detector, Embedder, MarkId, SchemeParams, Verdict, WatermarkKey};
//!
//! let key = WatermarkKey::from_hex(&"11".repeat(32))?;        // `--key` (64 hex digits)
//! let params = SchemeParams::interval_default();              // or SchemeParams::ccs05_paper()
//! let mark = MarkId(0x5eed);                                  // MarkId::random()? per flow
//!
//! // Upstream, per flow (the live relay, or the simulation): arrival in, release time out.
//! let mut embedder = Embedder::new(&params, &key, mark)?;
//! let mut downstream = Vec::new();
//! for k in 0..1500u64 {
//!     let arrival_us = 1_000_000 + 30_000 * k;                 // a 30 ms flow
//!     let release_us = embedder.on_packet(arrival_us);        // >= arrival, non-decreasing
//!     downstream.push(release_us + 20_000);                   // network latency
//! }
//!
//! // Downstream: the arrival times of one captured flow, sorted, from its first packet.
//! let detector = Detector::new(&params, &key, mark)?;
//! let detection = detector.detect(&downstream)?;
//! assert_eq!(detection.verdict, Verdict::Watermarked);
//! # Ok::<(), voxgate_trace::TraceError>(())
//! ```
//!
//! - Times are integers in microseconds on any clock (only differences matter); the embedder
//!   and the detector need not share a clock.
//! - [`Embedder::on_packet`] returns when to send the packet: never before its arrival, and
//!   never before the previous packet's release (FIFO: a delayed packet holds back the ones
//!   behind it; see [`Embedder`]).
//! - [`Detector::detect`] refuses unsorted timestamps with [`TraceError::NotSorted`] (sort
//!   the capture's arrival times first); it never panics. A flow too short or too noisy for a
//!   watermark to have been seen is [`Verdict::Undecided`], not "no".
//! - Several candidate mark ids: [`detect_any`] tests each and corrects the false-positive
//!   probability for the number tested (Bonferroni).
//! - The evaluation ([`eval::run`]) returns CSV tables and SVG plots as strings; the CLI and
//!   `cargo run -p voxgate-trace --release --example eval -- [--full]` only write them.
//!
//! Modules: [`key`] (key, mark id, keyed stream), [`ccs05`], [`interval`], [`stats`] (normal,
//! binomial, Wilson, Kolmogorov-Smirnov), [`sim`] (seeded source models and a netem-like
//! path, sans-I/O), [`eval`] (experiments, tables, targets), [`plot`] (SVG line charts).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod ccs05;
mod detect;
mod embed;
pub mod eval;
pub mod interval;
pub mod key;
pub mod plot;
mod scheme;
pub mod sim;
pub mod stats;

pub use detect::{detect_any, Detection, Detector, Verdict};
pub use embed::{EmbedStats, Embedder};
pub use key::{MarkId, WatermarkKey};
pub use scheme::{Scheme, SchemeParams, Watermark};

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// A watermark key that is not 64 hex digits.
    #[error("invalid watermark key: {reason}")]
    InvalidKey {
        /// What is wrong with it.
        reason: String,
    },
    /// A mark id that is not 1 to 16 hex digits.
    #[error("invalid mark id {0:?}: expected 1 to 16 hex digits")]
    InvalidMarkId(String),
    /// A scheme or simulation parameter out of its range.
    #[error("invalid parameter {name}: {reason}")]
    InvalidParameter {
        /// The parameter's name as written in the params struct.
        name: &'static str,
        /// Why it is refused.
        reason: String,
    },
    /// A given watermark whose length is not the scheme's bit count.
    #[error("watermark has {got} bits, the scheme embeds {expected}")]
    WatermarkLength {
        /// The scheme's `bits`.
        expected: u32,
        /// The watermark's length.
        got: usize,
    },
    /// Detection input that is not in non-decreasing time order.
    #[error("timestamps not sorted: index {index} ({value} us) is before index {} ({previous} us); sort the arrival times first", index - 1)]
    NotSorted {
        /// The first index whose time is before its predecessor's.
        index: usize,
        /// The predecessor's time.
        previous: u64,
        /// This index's time.
        value: u64,
    },
    /// An AWS-LC primitive failed (key setup, random bytes).
    #[error("cryptographic primitive failed: {0}")]
    Crypto(&'static str),
    /// An evaluation configuration that cannot run.
    #[error("invalid evaluation config: {0}")]
    InvalidConfig(String),
}
