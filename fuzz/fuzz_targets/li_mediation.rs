//! cargo-fuzz target `li_mediation` (crate voxgate-li): arbitrary bytes as an SPG's X2/X3 stream
//! into the mediation; the logic and its checks are in `fuzz/fuzz_logic_li.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../fuzz_logic_li.rs"]
mod fuzz_logic_li;

fuzz_target!(|data: &[u8]| {
    fuzz_logic_li::li_mediation(data);
});
