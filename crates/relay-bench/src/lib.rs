//! The media-relay benchmark (bench/relay/run.sh): scenario files, pacing, statistics and the
//! load generator that sends SRTP streams through a relay and measures what comes out.
//!
//! In this benchmark a "call" is one stream of (by default) 50 SRTP packets/s through the relay.
//! The binary is `relay-loadgen` (`relay-loadgen --help`).
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_debug_implementations)]

pub mod loadgen;
pub mod procfs;
pub mod rng;
pub mod scenario;
pub mod schedule;
pub mod stats;
pub mod sys;
