//! cargo-fuzz target `proxy_input`: sequences of messages into the proxy core; the logic and
//! the properties it checks are in `fuzz/fuzz_logic.rs` (`fuzz_logic::proxy_input`), shared
//! with the corpus replay test.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../fuzz_logic.rs"]
mod fuzz_logic;

fuzz_target!(|data: &[u8]| {
    fuzz_logic::proxy_input(data);
});
