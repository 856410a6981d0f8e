//! SDP offer/answer with SDES under each encryption policy, and the keys it yields working
//! in real SRTP sessions.

use voxgate_rtp::{SrtpProfile, SrtpSession};
use voxgate_sip::sdp::{
    accept_answer, answer_offer, create_offer, EncryptionPolicy as P, LocalMedia, SdpError,
    Security, SessionDescription,
};

fn local(port: u16, suites: &[SrtpProfile]) -> LocalMedia {
    LocalMedia {
        address: "127.0.0.1".parse().unwrap(),
        port,
        formats: vec![(0, "PCMU/8000".into()), (8, "PCMA/8000".into())],
        suites: suites.to_vec(),
    }
}

const ALL: &[SrtpProfile] = &[SrtpProfile::AeadAes128Gcm, SrtpProfile::AesCm128HmacSha1_80];

fn rtp(seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9];
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&[0xd5; 160]);
    p
}

#[test]
fn mandatory_both_sides_gives_working_srtp_keys() {
    let (offer, keys) = create_offer(P::Mandatory, &local(4000, ALL)).unwrap();
    let text = String::from_utf8(offer.to_bytes()).unwrap();
    assert!(text.contains("m=audio 4000 RTP/SAVP 0 8\r\n"), "{text}");
    assert_eq!(text.matches("a=crypto:").count(), 2);
    // Over the wire and back.
    let offer = SessionDescription::parse(&offer.to_bytes()).unwrap();
    let (answer, b_sec) = answer_offer(
        &offer,
        P::Mandatory,
        &local(5000, &[SrtpProfile::AesCm128HmacSha1_80]),
    )
    .unwrap();
    let answer = SessionDescription::parse(&answer.to_bytes()).unwrap();
    let a_sec = accept_answer(P::Mandatory, &keys, &answer).unwrap();
    let (
        Security::Srtp {
            suite,
            send: a_send,
            receive: a_recv,
        },
        Security::Srtp {
            send: b_send,
            receive: b_recv,
            ..
        },
    ) = (a_sec, b_sec)
    else {
        panic!("SRTP expected")
    };
    assert_eq!(
        suite,
        SrtpProfile::AesCm128HmacSha1_80,
        "the answerer's only suite"
    );
    assert_eq!(a_send, b_recv);
    assert_eq!(a_recv, b_send);
    assert_ne!(
        a_send.keys[0].key_salt, b_send.keys[0].key_salt,
        "each direction has its own key"
    );
    // A packet protected with A's key is read with B's receive key, and back.
    let mut a_tx = SrtpSession::new(a_send.to_policy().unwrap()).unwrap();
    let mut b_rx = SrtpSession::new(b_recv.to_policy().unwrap()).unwrap();
    let mut p = rtp(1);
    a_tx.protect_rtp_vec(&mut p).unwrap();
    b_rx.unprotect_rtp_vec(&mut p).unwrap();
    assert_eq!(p, rtp(1));
    let mut b_tx = SrtpSession::new(b_send.to_policy().unwrap()).unwrap();
    let mut a_rx = SrtpSession::new(a_recv.to_policy().unwrap()).unwrap();
    let mut p = rtp(2);
    b_tx.protect_rtp_vec(&mut p).unwrap();
    a_rx.unprotect_rtp_vec(&mut p).unwrap();
    assert_eq!(p, rtp(2));
}

#[test]
fn preference_picks_gcm_and_skips_unusable_lines() {
    let (mut offer, _) = create_offer(
        P::Mandatory,
        &local(
            4000,
            &[SrtpProfile::AesCm128HmacSha1_80, SrtpProfile::AeadAes128Gcm],
        ),
    )
    .unwrap();
    // A line with an unsupported session parameter is unusable, not fatal.
    offer.media[0].lines.push(voxgate_sip::sdp::Line {
        kind: 'a',
        value: "crypto:9 AEAD_AES_256_GCM inline:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA KDR=3".into(),
    });
    let (_, sec) = answer_offer(
        &offer,
        P::Mandatory,
        &local(
            5000,
            &[SrtpProfile::AeadAes256Gcm, SrtpProfile::AeadAes128Gcm],
        ),
    )
    .unwrap();
    match sec {
        Security::Srtp { suite, send, .. } => {
            assert_eq!(suite, SrtpProfile::AeadAes128Gcm);
            assert_eq!(send.tag, Some(2), "the answer uses the offer's tag");
        }
        Security::Unencrypted => panic!("SRTP expected"),
    }
}

#[test]
fn policies_never_fall_back_silently() {
    // Mandatory offer to a peer with encryption off: 488.
    let (offer, _) = create_offer(P::Mandatory, &local(4000, ALL)).unwrap();
    let e = answer_offer(&offer, P::Off, &local(5000, ALL)).unwrap_err();
    assert_eq!(e.status(), 488);
    // Plain offer to a mandatory answerer: 488.
    let (plain, _) = create_offer(P::Off, &local(4000, ALL)).unwrap();
    assert!(!String::from_utf8(plain.to_bytes())
        .unwrap()
        .contains("crypto"));
    assert_eq!(
        answer_offer(&plain, P::Mandatory, &local(5000, ALL))
            .unwrap_err()
            .status(),
        488
    );
    // Optional offer (RTP/AVP + a=crypto) to a plain peer: accepted, marked unencrypted.
    let (opt, keys) = create_offer(P::Optional, &local(4000, ALL)).unwrap();
    assert!(String::from_utf8(opt.to_bytes())
        .unwrap()
        .contains("RTP/AVP"));
    let (ans, sec) = answer_offer(&opt, P::Off, &local(5000, ALL)).unwrap();
    assert_eq!(sec, Security::Unencrypted);
    assert_eq!(
        accept_answer(P::Optional, &keys, &ans).unwrap(),
        Security::Unencrypted
    );
    // ...but the same plain answer to a mandatory offer is refused (end the call).
    let (_, mkeys) = create_offer(P::Mandatory, &local(4000, ALL)).unwrap();
    assert!(matches!(
        accept_answer(P::Mandatory, &mkeys, &ans),
        Err(SdpError::BadAnswer { .. })
    ));
    // Optional offer to an optional peer: SRTP.
    let (_, sec) = answer_offer(&opt, P::Optional, &local(5000, ALL)).unwrap();
    assert!(matches!(sec, Security::Srtp { .. }));
    // RTP/SAVP without a usable key: 488 even under optional.
    let mut savp = opt.clone();
    savp.media[0].proto = "RTP/SAVP".into();
    savp.media[0]
        .lines
        .retain(|l| !l.value.starts_with("crypto:"));
    assert_eq!(
        answer_offer(&savp, P::Optional, &local(5000, ALL))
            .unwrap_err()
            .status(),
        488
    );
    // An answer whose tag was never offered.
    let (_, keys) = create_offer(
        P::Mandatory,
        &local(4000, &[SrtpProfile::AesCm128HmacSha1_80]),
    )
    .unwrap();
    let (offer2, _) = create_offer(
        P::Mandatory,
        &local(
            4000,
            &[SrtpProfile::AesCm128HmacSha1_80, SrtpProfile::AeadAes128Gcm],
        ),
    )
    .unwrap();
    let (ans2, _) = answer_offer(
        &offer2,
        P::Mandatory,
        &local(5000, &[SrtpProfile::AeadAes128Gcm]),
    )
    .unwrap();
    assert!(matches!(
        accept_answer(P::Mandatory, &keys, &ans2),
        Err(SdpError::BadAnswer { .. })
    ));
    // No common codec: 488.
    let mut l = local(5000, ALL);
    l.formats = vec![(9, "G722/8000".into())];
    assert_eq!(
        answer_offer(&offer2, P::Mandatory, &l)
            .unwrap_err()
            .status(),
        488
    );
}

#[test]
fn malformed_sdp_is_a_typed_error() {
    for bad in [
        &b""[..],
        b"o=x\r\n",
        b"v=1\r\n",
        b"v=0\r\nm=audio notaport RTP/AVP 0\r\n",
        b"v=0\r\nm=audio 4000 RTP/AVP\r\n",
        b"v=0\r\nX=upper\r\n",
        b"v=0\r\ns=a\x01b\r\n",
        b"v=0\r\n\xff\xfe\r\n",
    ] {
        assert!(
            SessionDescription::parse(bad).is_err(),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    let ok = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
    let sd = SessionDescription::parse(ok).unwrap();
    assert_eq!(sd.to_bytes(), ok.to_vec());
}
