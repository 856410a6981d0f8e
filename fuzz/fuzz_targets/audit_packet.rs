//! cargo-fuzz target `audit_packet` (crate voxgate-audit): arbitrary frames into the capture
//! auditor: link, IP (fragments), UDP/TCP (SIP reassembly), SIP/SDP (SDES keys, credentials),
//! RTP (statistics, SRTP decryption, audio), then the report and its HTML. The logic is
//! `voxgate_audit::fuzzing::audit_packet` (input format and checks documented there); the
//! committed corpus is replayed by `crates/audit/tests/fuzz_corpus.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    voxgate_audit::fuzzing::audit_packet(data);
});
