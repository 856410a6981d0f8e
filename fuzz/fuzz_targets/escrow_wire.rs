//! cargo-fuzz target `escrow_wire`: the escrow frame decoder and the session_ID carriers; the
//! logic and the properties it checks are in `fuzz/fuzz_logic.rs` (`fuzz_logic::escrow_wire`),
//! shared with the corpus replay test.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../fuzz_logic.rs"]
mod fuzz_logic;

fuzz_target!(|data: &[u8]| {
    fuzz_logic::escrow_wire(data);
});
