//! The session_ID on every media datagram, in one of two carriers:
//!
//! - **IPv4 option** (the seed paper's design): experimental option type 158 (RFC 4727: copy
//!   flag 1, class 0, number 30, so routers copy it into fragments), length 10, the 8-byte
//!   session_ID in network order, then two bytes of padding (End of Option List, 0x00) so the
//!   options fill 12 bytes and the header length stays a multiple of 4:
//!
//!   ```text
//!   9e 0a  s0 s1 s2 s3 s4 s5 s6 s7  00 00
//!   ```
//!
//! - **RTP header extension** (RFC 8285) for paths that strip IP options: an element whose ID
//!   is negotiated with `a=extmap:<id> urn:voxgate:escrow:session-id`, 8 bytes, network order.
//!   In SRTP the header extension is authenticated but not encrypted (without RFC 6904), so the
//!   SPG reads it without keys and a sender cannot change it without breaking the tag.

use voxgate_rtp::RtpPacket;

/// RFC 4727 experimental IPv4 option: copy flag set, class 0, number 30.
pub const IPV4_OPTION_TYPE: u8 = 0x9e;
/// Type, length and the 8-byte session_ID.
pub const IPV4_OPTION_LEN: u8 = 10;
/// The options as sent: the option and its padding.
pub const IPV4_OPTIONS_BYTES: usize = 12;
/// The extmap URI of the RTP header extension carrier.
pub const RTP_EXTENSION_URI: &str = "urn:voxgate:escrow:session-id";

/// Why a datagram's carrier could not be read (the SPG counts and drops it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CarrierError {
    #[error("not an IPv4 packet")]
    NotIpv4,
    #[error("truncated IPv4 header")]
    Truncated,
    #[error("malformed IPv4 options")]
    BadOptions,
    #[error("the session_ID option appears more than once")]
    Duplicate,
    #[error("the session_ID element has the wrong length")]
    BadLength,
    #[error("not an RTP packet")]
    NotRtp,
}

/// The 12 option bytes for `setsockopt(IP_OPTIONS)`.
pub fn ipv4_options(session_id: u64) -> [u8; IPV4_OPTIONS_BYTES] {
    let mut o = [0u8; IPV4_OPTIONS_BYTES];
    o[0] = IPV4_OPTION_TYPE;
    o[1] = IPV4_OPTION_LEN;
    o[2..10].copy_from_slice(&session_id.to_be_bytes());
    o
}

/// The session_ID in IPv4 options (as `IP_RECVOPTS` or a raw header gives them): `Ok(None)`
/// when there is no such option. Options are walked as RFC 791 TLVs; a malformed list, or the
/// option twice, is an error (a datagram with an ambiguous tag is dropped, never guessed).
pub fn session_id_from_ipv4_options(options: &[u8]) -> Result<Option<u64>, CarrierError> {
    let mut found = None;
    let mut i = 0;
    while i < options.len() {
        match options[i] {
            0 => break,  // End of Option List
            1 => i += 1, // No Operation
            t => {
                let len = *options.get(i + 1).ok_or(CarrierError::BadOptions)? as usize;
                if len < 2 || i + len > options.len() {
                    return Err(CarrierError::BadOptions);
                }
                if t == IPV4_OPTION_TYPE {
                    if len != IPV4_OPTION_LEN as usize {
                        return Err(CarrierError::BadLength);
                    }
                    if found.is_some() {
                        return Err(CarrierError::Duplicate);
                    }
                    let mut id = [0u8; 8];
                    id.copy_from_slice(&options[i + 2..i + 10]);
                    found = Some(u64::from_be_bytes(id));
                }
                i += len;
            }
        }
    }
    Ok(found)
}

/// The options of a raw IPv4 packet (from its header length).
pub fn ipv4_options_of(packet: &[u8]) -> Result<&[u8], CarrierError> {
    let first = *packet.first().ok_or(CarrierError::Truncated)?;
    if first >> 4 != 4 {
        return Err(CarrierError::NotIpv4);
    }
    let ihl = (first & 0x0f) as usize * 4;
    if ihl < 20 {
        return Err(CarrierError::BadOptions);
    }
    packet.get(20..ihl).ok_or(CarrierError::Truncated)
}

/// The session_ID of an RTP (or SRTP) packet's header extension element `ext_id`.
pub fn session_id_from_rtp(packet: &[u8], ext_id: u8) -> Result<Option<u64>, CarrierError> {
    let p = RtpPacket::parse(packet).map_err(|_| CarrierError::NotRtp)?;
    let Some(ext) = p.extension() else {
        return Ok(None);
    };
    match ext.find(ext_id) {
        None => Ok(None),
        Some(v) if v.len() == 8 => {
            let mut id = [0u8; 8];
            id.copy_from_slice(v);
            Ok(Some(u64::from_be_bytes(id)))
        }
        Some(_) => Err(CarrierError::BadLength),
    }
}

/// The RFC 8285 one-byte-header extension block carrying only the session_ID element:
/// `0xBEDE`, length 3 (words), then `id<<4 | 7`, the 8 bytes, and 3 bytes of padding.
pub fn rtp_extension_block(ext_id: u8, session_id: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[0] = 0xbe;
    b[1] = 0xde;
    b[3] = 3;
    b[4] = (ext_id & 0x0f) << 4 | 7;
    b[5..13].copy_from_slice(&session_id.to_be_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_option_round_trip() {
        let o = ipv4_options(0x0123_4567_89ab_cdef);
        assert_eq!(
            o,
            [0x9e, 0x0a, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0, 0]
        );
        assert_eq!(
            session_id_from_ipv4_options(&o),
            Ok(Some(0x0123_4567_89ab_cdef))
        );
        // After other options and NOPs.
        let mut l = vec![1, 1, 0x44, 4, 5, 0];
        l.extend_from_slice(&o);
        assert_eq!(
            session_id_from_ipv4_options(&l),
            Ok(Some(0x0123_4567_89ab_cdef))
        );
        assert_eq!(session_id_from_ipv4_options(&[1, 1, 0, 0]), Ok(None));
        assert_eq!(session_id_from_ipv4_options(&[]), Ok(None));
    }

    #[test]
    fn ipv4_option_refusals() {
        assert_eq!(
            session_id_from_ipv4_options(&[0x9e]),
            Err(CarrierError::BadOptions)
        );
        assert_eq!(
            session_id_from_ipv4_options(&[0x9e, 1]),
            Err(CarrierError::BadOptions)
        );
        assert_eq!(
            session_id_from_ipv4_options(&[0x9e, 12, 0, 0]),
            Err(CarrierError::BadOptions)
        );
        assert_eq!(
            session_id_from_ipv4_options(&[0x9e, 6, 1, 2, 3, 4, 0, 0]),
            Err(CarrierError::BadLength)
        );
        let mut two = ipv4_options(1)[..10].to_vec();
        two.extend_from_slice(&ipv4_options(2)[..10]);
        assert_eq!(
            session_id_from_ipv4_options(&two),
            Err(CarrierError::Duplicate)
        );
        for n in 0..=255u8 {
            let _ = session_id_from_ipv4_options(&[n, n, n, n]);
        }
    }

    #[test]
    fn options_of_a_raw_packet() {
        let mut p = vec![
            0x48, 0, 0, 32, 0, 0, 0, 0, 64, 17, 0, 0, 127, 0, 0, 1, 127, 0, 0, 1,
        ];
        p.extend_from_slice(&ipv4_options(42));
        assert_eq!(ipv4_options_of(&p), Ok(&ipv4_options(42)[..]));
        assert_eq!(ipv4_options_of(&p[..25]), Err(CarrierError::Truncated));
        assert_eq!(ipv4_options_of(&[0x60; 40]), Err(CarrierError::NotIpv4));
        assert_eq!(ipv4_options_of(&[0x44; 40]), Err(CarrierError::BadOptions));
    }

    #[test]
    fn rtp_extension_round_trip() {
        let mut p = vec![0x90, 0, 0, 1, 0, 0, 0, 160, 0xde, 0xad, 0xbe, 0xef];
        p.extend_from_slice(&rtp_extension_block(5, 0xfeed_f00d_1234_5678));
        p.extend_from_slice(&[0xff; 160]);
        assert_eq!(session_id_from_rtp(&p, 5), Ok(Some(0xfeed_f00d_1234_5678)));
        assert_eq!(session_id_from_rtp(&p, 6), Ok(None));
        let plain = [0x80, 0, 0, 1, 0, 0, 0, 160, 0xde, 0xad, 0xbe, 0xef, 1, 2];
        assert_eq!(session_id_from_rtp(&plain, 5), Ok(None));
        assert_eq!(
            session_id_from_rtp(&[0x00; 4], 5),
            Err(CarrierError::NotRtp)
        );
    }
}
