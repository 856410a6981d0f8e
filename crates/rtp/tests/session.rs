//! SRTP/SRTCP session behaviour: round trips for every profile, MKI, replay, tampering, limits.

use voxgate_rtp::{Error, MasterKey, SrtpPolicy, SrtpProfile, SrtpSession};

fn master(profile: SrtpProfile, seed: u8) -> MasterKey {
    let key: Vec<u8> = (0..profile.key_len() as u8)
        .map(|i| i.wrapping_mul(7) ^ seed)
        .collect();
    let salt: Vec<u8> = (0..profile.salt_len() as u8)
        .map(|i| i.wrapping_mul(13) ^ seed)
        .collect();
    MasterKey::new(profile, &key, &salt).unwrap()
}

fn pair(profile: SrtpProfile) -> (SrtpSession, SrtpSession) {
    let p = SrtpPolicy::new(master(profile, 1));
    (
        SrtpSession::new(p.clone()).unwrap(),
        SrtpSession::new(p).unwrap(),
    )
}

fn rtp(seq: u16, ssrc: u32, payload_len: usize) -> Vec<u8> {
    let mut p = vec![0x80, 0x00];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(seq as u32 * 160).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend((0..payload_len).map(|i| (i as u8) ^ (seq as u8)));
    p
}

fn rtcp_sr(ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 200, 0, 6];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[0x11; 20]);
    p
}

#[test]
fn round_trip_every_profile_across_rollover() {
    for profile in SrtpProfile::ALL {
        let (mut tx, mut rx) = pair(profile);
        let mut seq: u16 = 65000;
        for _ in 0..2000 {
            let plain = rtp(seq, 0x1234_5678, 160);
            let mut pkt = plain.clone();
            tx.protect_rtp_vec(&mut pkt).unwrap();
            assert_eq!(pkt.len(), plain.len() + profile.srtp_tag_len());
            assert_ne!(
                &pkt[12..plain.len()],
                &plain[12..],
                "{profile}: payload encrypted"
            );
            rx.unprotect_rtp_vec(&mut pkt).unwrap();
            assert_eq!(pkt, plain, "{profile} seq {seq}");
            seq = seq.wrapping_add(1);
        }
        assert_eq!(tx.tx_roc(0x1234_5678), Some(1));
        assert_eq!(rx.rx_roc(0x1234_5678), Some(1));
        for _ in 0..3 {
            let plain = rtcp_sr(0x1234_5678);
            let mut pkt = plain.clone();
            tx.protect_rtcp_vec(&mut pkt).unwrap();
            assert_eq!(pkt.len(), plain.len() + tx.srtcp_overhead());
            rx.unprotect_rtcp_vec(&mut pkt).unwrap();
            assert_eq!(pkt, plain, "{profile} rtcp");
        }
    }
}

#[test]
fn tampering_is_an_auth_error_and_does_not_move_state() {
    for profile in SrtpProfile::ALL {
        let (mut tx, mut rx) = pair(profile);
        let mut pkt = rtp(10, 7, 50);
        tx.protect_rtp_vec(&mut pkt).unwrap();
        for bit in [0usize, 8 * 3, 8 * 12 + 1, 8 * (pkt.len() - 1)] {
            let mut bad = pkt.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            let r = rx.unprotect_rtp_vec(&mut bad);
            assert!(
                matches!(
                    r,
                    Err(Error::AuthTagMismatch) | Err(Error::BadVersion { .. })
                ),
                "{profile} bit {bit}: {r:?}"
            );
        }
        assert_eq!(rx.stream_count(), 0, "failed packets create no stream");
        let mut good = pkt.clone();
        rx.unprotect_rtp_vec(&mut good).unwrap();
        let mut again = pkt.clone();
        assert_eq!(
            rx.unprotect_rtp_vec(&mut again),
            Err(Error::Replayed { index: 10 })
        );
        // SRTCP too
        let mut c = rtcp_sr(7);
        tx.protect_rtcp_vec(&mut c).unwrap();
        let mut bad = c.clone();
        bad[9] ^= 0x80;
        assert_eq!(rx.unprotect_rtcp_vec(&mut bad), Err(Error::AuthTagMismatch));
        let mut ok = c.clone();
        rx.unprotect_rtcp_vec(&mut ok).unwrap();
        let mut again = c.clone();
        assert!(matches!(
            rx.unprotect_rtcp_vec(&mut again),
            Err(Error::Replayed { .. })
        ));
    }
}

#[test]
fn protect_refuses_index_reuse() {
    let (mut tx, _) = pair(SrtpProfile::AesCm128HmacSha1_80);
    let mut a = rtp(5, 1, 20);
    tx.protect_rtp_vec(&mut a).unwrap();
    let mut b = rtp(5, 1, 20);
    assert_eq!(
        tx.protect_rtp_vec(&mut b),
        Err(Error::IndexReuse { index: 5 })
    );
    assert_eq!(b, rtp(5, 1, 20), "a refused packet is left as it was");
}

#[test]
fn mki_selects_key() {
    for profile in SrtpProfile::ALL {
        let k1 = master(profile, 1).with_mki(&[0, 1]);
        let k2 = master(profile, 2).with_mki(&[0, 2]);
        let policy = SrtpPolicy::new(k1).with_key(k2);
        let mut tx = SrtpSession::new(policy.clone()).unwrap();
        let mut rx = SrtpSession::new(policy).unwrap();
        let mut p1 = rtp(1, 9, 40);
        tx.protect_rtp_vec(&mut p1).unwrap();
        tx.set_active_key(&[0, 2]).unwrap();
        let mut p2 = rtp(2, 9, 40);
        tx.protect_rtp_vec(&mut p2).unwrap();
        assert_eq!(p2.len(), 12 + 40 + 2 + profile.srtp_tag_len());
        rx.unprotect_rtp_vec(&mut p1).unwrap();
        rx.unprotect_rtp_vec(&mut p2).unwrap();
        assert_eq!(p2, rtp(2, 9, 40));
        assert_eq!(rx.key_usage(&[0, 1]).unwrap().srtp_packets, 1);
        assert_eq!(rx.key_usage(&[0, 2]).unwrap().srtp_packets, 1);
        let mut p3 = rtp(3, 9, 40);
        tx.protect_rtp_vec(&mut p3).unwrap();
        let at = if profile.is_aead() {
            p3.len() - 2
        } else {
            p3.len() - profile.srtp_tag_len() - 2
        };
        p3[at + 1] = 9;
        assert_eq!(rx.unprotect_rtp_vec(&mut p3), Err(Error::UnknownMki));
        let mut c = rtcp_sr(9);
        tx.protect_rtcp_vec(&mut c).unwrap();
        rx.unprotect_rtcp_vec(&mut c).unwrap();
        assert_eq!(c, rtcp_sr(9));
    }
}

#[test]
fn key_lifetime_is_enforced() {
    let policy = SrtpPolicy::new(master(SrtpProfile::AeadAes128Gcm, 3).with_lifetime(3));
    let mut tx = SrtpSession::new(policy).unwrap();
    for s in 0..3 {
        tx.protect_rtp_vec(&mut rtp(s, 1, 10)).unwrap();
    }
    assert_eq!(
        tx.protect_rtp_vec(&mut rtp(3, 1, 10)),
        Err(Error::KeyExhausted { used: 3 })
    );
}

#[test]
fn stream_limit() {
    let mut policy = SrtpPolicy::new(master(SrtpProfile::AesCm128HmacSha1_32, 3));
    policy.max_streams = 2;
    let mut tx = SrtpSession::new(policy).unwrap();
    tx.protect_rtp_vec(&mut rtp(0, 1, 10)).unwrap();
    tx.protect_rtp_vec(&mut rtp(0, 2, 10)).unwrap();
    assert_eq!(
        tx.protect_rtp_vec(&mut rtp(0, 3, 10)),
        Err(Error::TooManyStreams { limit: 2 })
    );
}

#[test]
fn short_and_malformed_packets_are_typed_errors() {
    for profile in SrtpProfile::ALL {
        let (_, mut rx) = pair(profile);
        for len in 0..40 {
            let mut buf = vec![0x80u8; len];
            let r = rx.unprotect_rtp(&mut buf, len);
            assert!(r.is_err(), "{profile} len {len}");
            let r = rx.unprotect_rtcp(&mut buf, len);
            assert!(r.is_err(), "{profile} rtcp len {len}");
        }
        let mut buf = vec![0u8; 64];
        assert_eq!(
            rx.unprotect_rtp(&mut buf, 64),
            Err(Error::BadVersion { version: 0 })
        );
        // len larger than buffer
        assert!(rx.unprotect_rtp(&mut buf, 65).is_err());
        // no room for the tag
        let (mut tx, _) = pair(profile);
        let mut p = rtp(1, 1, 10);
        let n = p.len();
        assert!(matches!(
            tx.protect_rtp(&mut p, n),
            Err(Error::BufferTooSmall { .. })
        ));
    }
}

#[test]
fn late_joiner_with_signalled_roc() {
    let (mut tx, mut rx) = pair(SrtpProfile::AesCm128HmacSha1_80);
    tx.set_tx_index(5, (7 << 16) | 100).unwrap();
    let mut p = rtp(101, 5, 30);
    tx.protect_rtp_vec(&mut p).unwrap();
    let mut copy = p.clone();
    assert_eq!(rx.unprotect_rtp_vec(&mut copy), Err(Error::AuthTagMismatch));
    rx.set_rx_roc(5, 7).unwrap();
    rx.unprotect_rtp_vec(&mut p).unwrap();
    assert_eq!(p, rtp(101, 5, 30));
}

#[test]
fn set_tx_index_marks_that_index_used() {
    let (mut tx, _) = pair(SrtpProfile::AeadAes128Gcm);
    tx.set_tx_index(3, 0xf17b).unwrap();
    assert_eq!(
        tx.protect_rtp_vec(&mut rtp(0xf17b, 3, 10)),
        Err(Error::IndexReuse { index: 0xf17b })
    );
    tx.protect_rtp_vec(&mut rtp(0xf17c, 3, 10)).unwrap();
}

#[test]
fn late_joiner_with_high_sequence_number_and_a_wrap() {
    for profile in SrtpProfile::ALL {
        let (mut tx, mut rx) = pair(profile);
        // The sender is at ROC 5, SEQ 40000 when the receiver joins; it then wraps to ROC 6.
        tx.set_tx_index(9, (5 << 16) | 39999).unwrap();
        rx.set_rx_roc(9, 5).unwrap();
        let mut seq: u16 = 40000;
        for _ in 0..30000 {
            let mut p = rtp(seq, 9, 20);
            tx.protect_rtp_vec(&mut p).unwrap();
            rx.unprotect_rtp_vec(&mut p)
                .unwrap_or_else(|e| panic!("{profile} seq {seq}: {e}"));
            seq = seq.wrapping_add(1);
        }
        assert_eq!(rx.rx_roc(9), Some(6));
    }
}

#[test]
fn signalled_state_cannot_rewind_a_stream() {
    let (mut tx, mut rx) = pair(SrtpProfile::AesCm128HmacSha1_80);
    let mut p = rtp(100, 4, 20);
    tx.protect_rtp_vec(&mut p).unwrap();
    rx.unprotect_rtp_vec(&mut p.clone()).unwrap();
    // Resetting a receiving stream's ROC would accept old packets again.
    assert!(matches!(
        rx.set_rx_roc(4, 0),
        Err(Error::InvalidPolicy { .. })
    ));
    assert_eq!(
        rx.unprotect_rtp_vec(&mut p),
        Err(Error::Replayed { index: 100 })
    );
    // A sender cannot be moved back onto indices it used (keystream reuse); forward is fine.
    assert_eq!(tx.set_tx_index(4, 50), Err(Error::IndexReuse { index: 50 }));
    assert_eq!(
        tx.set_tx_index(4, 100),
        Err(Error::IndexReuse { index: 100 })
    );
    tx.set_tx_index(4, 1000).unwrap();
    tx.protect_rtp_vec(&mut rtp(1001, 4, 20)).unwrap();
    let mut c = rtcp_sr(4);
    tx.protect_rtcp_vec(&mut c).unwrap();
    tx.protect_rtcp_vec(&mut rtcp_sr(4)).unwrap();
    assert_eq!(
        tx.set_srtcp_tx_index(4, 1),
        Err(Error::IndexReuse { index: 1 })
    );
    tx.set_srtcp_tx_index(4, 10).unwrap();
}
