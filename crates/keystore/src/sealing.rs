//! Sessions to stored records and back: the streams' keys sealed to the lawful-intercept
//! authority (HPKE, [`voxgate_escrow::seal`]), bound to the row's identity.

use minicbor::{Decode, Encode};
use voxgate_escrow::seal::{
    open, seal, AuthorityKeyPair, AuthorityPublicKey, SealedRecord, SESSION_KEY_INFO,
};
use voxgate_escrow::server::Session;
use voxgate_escrow::wire::{Addr, Direction, StreamKey};
use zeroize::Zeroizing;

use crate::{StoreError, StoredSession};

/// The non-secret part of a stream, stored in clear (`tuples`) so that the SPG can re-arm its
/// 5-tuple/SSRC checks after a restart without the authority's key.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct StreamTuple {
    #[n(0)]
    pub direction: Direction,
    #[n(1)]
    pub src: Addr,
    #[n(2)]
    pub dst: Addr,
    #[n(3)]
    pub ssrc: Option<u32>,
    #[n(4)]
    pub suite: String,
}

impl From<&StreamKey> for StreamTuple {
    fn from(k: &StreamKey) -> Self {
        StreamTuple {
            direction: k.direction,
            src: k.src,
            dst: k.dst,
            ssrc: k.ssrc,
            suite: k.suite.clone(),
        }
    }
}

/// The HPKE aad of a record: session_id (8 bytes, big-endian) || gateway || 0x00 || call_id ||
/// generation (4 bytes, big-endian). A record moved to another row, gateway, call or generation
/// no longer opens.
pub fn session_aad(session_id: u64, gateway: &str, call_id: &str, generation: u32) -> Vec<u8> {
    let mut aad = Vec::with_capacity(8 + gateway.len() + 1 + call_id.len() + 4);
    aad.extend_from_slice(&session_id.to_be_bytes());
    aad.extend_from_slice(gateway.as_bytes());
    aad.push(0);
    aad.extend_from_slice(call_id.as_bytes());
    aad.extend_from_slice(&generation.to_be_bytes());
    aad
}

/// The record to store for `s` (live: `ended_ms` is `None`): its streams CBOR-encoded and
/// sealed to `pk`, their tuples in clear.
pub fn seal_session(pk: &AuthorityPublicKey, s: &Session) -> Result<StoredSession, StoreError> {
    // Sized up front so that the encoder does not leave reallocated copies of the keys behind;
    // wiped on drop.
    let mut plain = Zeroizing::new(Vec::with_capacity(256 + 256 * s.streams.len()));
    minicbor::encode(&s.streams, &mut *plain).map_err(|e| StoreError::Cbor {
        what: "streams",
        reason: e.to_string(),
    })?;
    let aad = session_aad(s.id, &s.gateway, &s.call_id, s.generation);
    let sealed = seal(pk, SESSION_KEY_INFO, &aad, &plain)?;
    let tuples: Vec<StreamTuple> = s.streams.iter().map(StreamTuple::from).collect();
    let tuples = minicbor::to_vec(&tuples).map_err(|e| StoreError::Cbor {
        what: "tuples",
        reason: e.to_string(),
    })?;
    Ok(StoredSession {
        session_id: s.id,
        gateway: s.gateway.clone(),
        call_id: s.call_id.clone(),
        generation: s.generation,
        created_ms: s.created_ms,
        ended_ms: None,
        sealed: sealed.to_bytes(),
        tuples,
    })
}

/// Opens a record's streams with the authority's key pair (the LI side). Fails with
/// [`StoreError::Seal`] if the record was moved to another row or modified.
pub fn open_session(
    kp: &AuthorityKeyPair,
    rec: &StoredSession,
) -> Result<Vec<StreamKey>, StoreError> {
    let sealed = SealedRecord::from_bytes(&rec.sealed)?;
    let aad = session_aad(rec.session_id, &rec.gateway, &rec.call_id, rec.generation);
    let plain = open(kp, SESSION_KEY_INFO, &aad, &sealed)?;
    minicbor::decode(&plain).map_err(|e| StoreError::Cbor {
        what: "sealed streams",
        reason: e.to_string(),
    })
}

/// Decodes a record's `tuples` (empty: none).
pub fn decode_tuples(tuples: &[u8]) -> Result<Vec<StreamTuple>, StoreError> {
    if tuples.is_empty() {
        return Ok(Vec::new());
    }
    minicbor::decode(tuples).map_err(|e| StoreError::Cbor {
        what: "tuples",
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aad_layout() {
        let aad = session_aad(0x0102_0304_0506_0708, "gw", "c", 0x0a0b_0c0d);
        assert_eq!(
            aad,
            [1, 2, 3, 4, 5, 6, 7, 8, b'g', b'w', 0, b'c', 0x0a, 0x0b, 0x0c, 0x0d]
        );
    }

    #[test]
    fn bad_tuples_are_an_error() {
        assert!(decode_tuples(&[]).unwrap().is_empty());
        assert!(matches!(
            decode_tuples(&[0xff, 0x00]),
            Err(StoreError::Cbor { .. })
        ));
    }
}
