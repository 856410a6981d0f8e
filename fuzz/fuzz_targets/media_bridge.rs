//! cargo-fuzz target `media_bridge`: SDP into the voice gateway's `BridgeAnchor`, its
//! commands and the escrow's answers into a `Bridge`, datagrams into `Bridge::handle`;
//! the logic and the properties it checks are in `fuzz/fuzz_logic_media.rs`
//! (`fuzz_logic_media::media_bridge`), shared with the corpus replay test of voxgate-media.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../fuzz_logic_media.rs"]
mod fuzz_logic_media;

fuzz_target!(|data: &[u8]| {
    fuzz_logic_media::media_bridge(data);
});
