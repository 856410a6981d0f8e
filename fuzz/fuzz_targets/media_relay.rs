//! cargo-fuzz target `media_relay`: SDP into the SPG's `RelayAnchor`, its commands and
//! armed sessions into a `Relay`, datagrams into `Relay::handle`;
//! the logic and the properties it checks are in `fuzz/fuzz_logic_media.rs`
//! (`fuzz_logic_media::media_relay`), shared with the corpus replay test of voxgate-media.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../fuzz_logic_media.rs"]
mod fuzz_logic_media;

fuzz_target!(|data: &[u8]| {
    fuzz_logic_media::media_relay(data);
});
