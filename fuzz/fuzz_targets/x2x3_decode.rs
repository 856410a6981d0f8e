//! cargo-fuzz target `x2x3_decode` (crate voxgate-li): arbitrary bytes as an X2/X3 stream
//! (ETSI TS 103 221-2, `voxgate_li::x2x3`). The logic is here, not in `fuzz_logic.rs`:
//! voxgate-rtp's replay test includes that file and does not depend on voxgate-li; the committed
//! corpus is replayed by `crates/li/tests/x2x3_vectors.rs` (`committed_fuzz_corpus_round_trips`).
//!
//! Input: one config byte, then the stream. Config bits 0-3: the decoder is fed chunks of that
//! many bytes (0: all at once); bits 4-5: its limit (no limit, 48, 256, 4096 bytes).
//!
//! Checks: no panic; `Pdu::decode` in a loop over the stream: every PDU that decodes encodes
//! again, to the same bytes but the version (written as 5), and that decodes to the same PDU
//! with the same length; `Decoder` fed the stream in chunks yields exactly those PDUs and then
//! the verdict `Pdu::decode` implies (waiting where the slice is truncated, `TooLarge` where a
//! PDU's declared length is over the limit, otherwise the same error); once failed it stays
//! failed with the same error and holds nothing; with a limit, it never holds a whole PDU's
//! worth of unread bytes after being drained.
#![no_main]

use libfuzzer_sys::fuzz_target;
use voxgate_li::x2x3::{Decoder, Pdu, X2x3Error, VERSION};

const LIMITS: [usize; 4] = [usize::MAX, 48, 256, 4096];

fuzz_target!(|data: &[u8]| {
    let Some((&config, stream)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(config & 0x0f);
    let limit = LIMITS[usize::from(config >> 4) & 3];

    // The model: PDUs one after the other out of the slice, and what the decoder must end with.
    let mut expected = Vec::new();
    let mut verdict = None;
    let mut rest = stream;
    while !rest.is_empty() {
        let declared = (rest.len() >= 12).then(|| {
            u64::from(u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]))
                + u64::from(u32::from_be_bytes([rest[8], rest[9], rest[10], rest[11]]))
        });
        let too_large = |length: u64| X2x3Error::TooLarge { length, max: limit };
        let over = |d: u64| usize::try_from(d).map_or(true, |d| d > limit);
        match Pdu::decode(rest) {
            Ok((pdu, n)) => {
                assert!(n >= 40 && n <= rest.len());
                assert_eq!(declared, Some(n as u64));
                let bytes = pdu.encode().expect("a decoded PDU encodes");
                assert_eq!(pdu.encoded_len(), Ok(n));
                assert_eq!(bytes.len(), n);
                assert_eq!(&bytes[..2], &VERSION.to_be_bytes());
                assert_eq!(&bytes[2..], &rest[2..n], "re-encoding changed the PDU");
                assert_eq!(Pdu::decode(&bytes), Ok((pdu.clone(), n)));
                if over(n as u64) {
                    verdict = Some(too_large(n as u64));
                    break;
                }
                expected.push(pdu);
                rest = &rest[n..];
            }
            Err(
                e @ (X2x3Error::UnsupportedVersion(_)
                | X2x3Error::UnknownPduType(_)
                | X2x3Error::HeaderTooShort { .. }),
            ) => {
                verdict = Some(e);
                break;
            }
            Err(X2x3Error::Truncated { needed, available }) => {
                assert_eq!(available, rest.len());
                assert!(needed > available);
                verdict = declared.filter(|d| over(*d)).map(too_large);
                break;
            }
            Err(e) => {
                let d = declared.expect("only the 12-byte prefix fails before the whole PDU");
                verdict = Some(if over(d) { too_large(d) } else { e });
                break;
            }
        }
    }

    // The decoder, fed in chunks.
    let mut decoder = Decoder::new(limit);
    let mut got = Vec::new();
    let mut error = None;
    let step = if chunk == 0 {
        stream.len().max(1)
    } else {
        chunk
    };
    'feed: for piece in stream.chunks(step) {
        decoder.push(piece);
        loop {
            match decoder.next_pdu() {
                Ok(Some(pdu)) => got.push(pdu),
                Ok(None) => break,
                Err(e) => {
                    error = Some(e);
                    break 'feed;
                }
            }
        }
        if limit != usize::MAX {
            assert!(
                decoder.buffered() < limit.max(12),
                "holds {} bytes with a limit of {limit}",
                decoder.buffered()
            );
        }
    }
    assert_eq!(got, expected);
    assert_eq!(error, verdict);
    if let Some(e) = error {
        assert_eq!(decoder.error(), Some(&e));
        decoder.push(stream);
        assert_eq!(decoder.buffered(), 0);
        assert_eq!(decoder.next_pdu(), Err(e));
    } else {
        assert_eq!(decoder.error(), None);
    }
});
