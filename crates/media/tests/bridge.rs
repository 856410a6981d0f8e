//! The voice gateway's bridge without sockets: SDP re-keyed in both call directions, the
//! escrow request carrying exactly the keys used outside, and packets re-encrypted and tagged
//! with either carrier (held until escrowed).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use voxgate_escrow::carrier::{session_id_from_ipv4_options, session_id_from_rtp};
use voxgate_escrow::wire::Direction;
use voxgate_media::bridge::{
    Bridge, BridgeAnchor, BridgeCommand, BridgeConfig, BridgeDecision, BridgeDrop, Carrier,
    EscrowRequest, HEADROOM,
};
use voxgate_media::sdp_edit::media_info;
use voxgate_rtp::{CryptoAttribute, MasterKey, SrtpPolicy, SrtpProfile, SrtpSession};
use voxgate_sip::anchor::{MediaAnchor, SdpContext, SdpKind, Side};
use voxgate_sip::sdp::{EncryptionPolicy, SessionDescription};

const USER: &str = "127.0.0.50:4000";
const RELAY: &str = "127.0.0.1:20000";
const USER_KEY: &str = "1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz";
const FAR_KEY: &str = "1 AES_CM_128_HMAC_SHA1_80 inline:QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVowMTIz";

fn sdp(addr: &str, crypto: Option<&str>, extra: &str) -> String {
    let a: SocketAddr = addr.parse().unwrap();
    let (proto, c) = match crypto {
        Some(k) => ("RTP/SAVP", format!("a=crypto:{k}\r\n")),
        None => ("RTP/AVP", String::new()),
    };
    format!(
        "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} {proto} 0\r\na=rtpmap:0 PCMU/8000\r\n{c}{extra}",
        ip = a.ip(),
        port = a.port()
    )
}

fn ctx(call: &str, side: Side, kind: SdpKind, from_provider: bool) -> SdpContext<'_> {
    let (from, to) = if from_provider {
        (Some("spg"), None)
    } else {
        (None, Some("spg"))
    };
    SdpContext {
        call_id: call,
        side,
        kind,
        method: "INVITE",
        status: None,
        from_addr: "127.0.0.1:5061".parse().unwrap(),
        to_addr: "127.0.0.1:5061".parse().unwrap(),
        from_trusted: from,
        to_trusted: to,
        to_tls: true,
    }
}

type Log<T> = Arc<Mutex<Vec<T>>>;

fn anchor(
    carrier: Carrier,
    inside: EncryptionPolicy,
) -> (BridgeAnchor, Bridge, Log<BridgeCommand>, Log<EscrowRequest>) {
    let cfg = BridgeConfig {
        inside_address: "127.0.0.11".parse().unwrap(),
        outside_address: "127.0.0.11".parse().unwrap(),
        first_port: 30_000,
        port_count: 40,
        carrier,
        inside_policy: inside,
        provider: "spg".into(),
        cname: "gw1.a.example".into(),
    };
    let media: Log<BridgeCommand> = Arc::default();
    let escrow: Log<EscrowRequest> = Arc::default();
    let (m, e) = (media.clone(), escrow.clone());
    let a = BridgeAnchor::new(
        cfg.clone(),
        Box::new(move |c| m.lock().unwrap().push(c)),
        Box::new(move |r| e.lock().unwrap().push(r)),
    );
    (a, Bridge::new(&cfg), media, escrow)
}

fn pump(b: &mut Bridge, cmds: &Log<BridgeCommand>) {
    for c in cmds.lock().unwrap().drain(..) {
        b.apply(c);
    }
}

fn crypto_of(body: &[u8]) -> Vec<CryptoAttribute> {
    let sd = SessionDescription::parse(body).unwrap();
    sd.media[0]
        .attributes("crypto")
        .map(|v| CryptoAttribute::parse(v).unwrap())
        .collect()
}

fn addr_of(body: &[u8]) -> SocketAddr {
    let sd = SessionDescription::parse(body).unwrap();
    media_info(&sd, &sd.media[0]).rtp.unwrap()
}

fn session(k: &CryptoAttribute) -> SrtpSession {
    SrtpSession::new(k.to_policy().unwrap()).unwrap()
}

fn session_from_escrow(master: &[u8]) -> SrtpSession {
    let mk = MasterKey::from_key_salt(SrtpProfile::AesCm128HmacSha1_80, master).unwrap();
    SrtpSession::new(SrtpPolicy::new(mk)).unwrap()
}

fn rtp(seq: u16, ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[8..12].copy_from_slice(&ssrc.to_be_bytes());
    p.extend((0..160).map(|i| (i as u8).wrapping_mul(seq as u8)));
    p
}

fn through(b: &mut Bridge, port: u16, src: &str, pkt: &[u8]) -> (BridgeDecision, Vec<u8>) {
    let mut buf = vec![0u8; 2048];
    buf[..pkt.len()].copy_from_slice(pkt);
    assert!(pkt.len() + HEADROOM <= buf.len());
    let d = b.handle(port, src.parse().unwrap(), &mut buf, pkt.len());
    let len = match d {
        BridgeDecision::Forward { len, .. } => len,
        _ => 0,
    };
    (d, buf[..len].to_vec())
}

fn outgoing_call(carrier: Carrier) {
    let (mut a, mut b, media, escrow) = anchor(carrier, EncryptionPolicy::Mandatory);
    let now = Instant::now();
    // The user offers SRTP with its key.
    let offer = sdp(
        USER,
        Some(USER_KEY),
        "a=candidate:1 1 UDP 1 127.0.0.50 4000 typ host\r\n",
    );
    let out = a
        .sdp(
            now,
            &ctx("c1", Side::Caller, SdpKind::Offer, false),
            offer.as_bytes(),
        )
        .unwrap()
        .unwrap();
    let text = String::from_utf8(out.clone()).unwrap();
    let go = addr_of(&out);
    assert_eq!(go.ip().to_string(), "127.0.0.11");
    let ours = crypto_of(&out);
    assert_eq!(ours.len(), 1);
    assert_eq!(ours[0].tag, Some(1));
    assert!(
        !text.contains("WVNfX19zZW1jdGwg"),
        "the user's key never leaves: {text}"
    );
    assert!(!text.contains("candidate"));
    assert!(text.contains("a=ssrc:"));
    assert_eq!(
        text.contains("a=extmap:5 urn:voxgate:escrow:session-id"),
        matches!(carrier, Carrier::RtpExtension { .. })
    );
    // The provider answers with the far gateway's key and the relay's address.
    let answer = sdp(RELAY, Some(FAR_KEY), "a=ssrc:4242 cname:far\r\n");
    let inside = a
        .sdp(
            now,
            &ctx("c1", Side::Callee, SdpKind::Answer, true),
            answer.as_bytes(),
        )
        .unwrap()
        .unwrap();
    let gi = addr_of(&inside);
    let inside_key = crypto_of(&inside);
    assert_eq!(inside_key.len(), 1);
    assert!(
        !String::from_utf8_lossy(&inside).contains("QUJDREVG"),
        "the far key stays outside"
    );
    // The same 200 again (a retransmission): the same answer, no new keys.
    let again = a
        .sdp(
            now,
            &ctx("c1", Side::Callee, SdpKind::Answer, true),
            answer.as_bytes(),
        )
        .unwrap()
        .unwrap();
    assert_eq!(again, inside);
    // Escrow at once: the SPG saw the answer before us.
    let reqs: Vec<EscrowRequest> = escrow.lock().unwrap().drain(..).collect();
    assert_eq!(reqs.len(), 1, "the retransmission is not escrowed again");
    let EscrowRequest::KeyUpdate {
        call_id,
        outside_port,
        streams,
    } = &reqs[0]
    else {
        panic!("{reqs:?}")
    };
    assert_eq!((call_id.as_str(), *outside_port), ("c1", go.port()));
    assert_eq!(streams[0].direction, Direction::Send);
    assert_eq!(streams[0].src.0, go);
    assert_eq!(streams[0].dst.0, RELAY.parse::<SocketAddr>().unwrap());
    assert_eq!(*streams[0].master.0, *ours[0].keys[0].key_salt);
    assert_eq!(streams[1].direction, Direction::Receive);
    assert_eq!(streams[1].ssrc, Some(4242));
    let far_attr = CryptoAttribute::parse(FAR_KEY).unwrap();
    assert_eq!(*streams[1].master.0, *far_attr.keys[0].key_salt);
    let ssrc_out = streams[0].ssrc.unwrap();
    pump(&mut b, &media);

    // Media from the user: held until escrowed, then re-encrypted with the escrowed key.
    let user_attr = CryptoAttribute::parse(USER_KEY).unwrap();
    let mut user = session(&user_attr);
    let mut p = rtp(1, 0x1111);
    user.protect_rtp_vec(&mut p).unwrap();
    let (d, _) = through(&mut b, gi.port(), USER, &p);
    assert_eq!(d, BridgeDecision::Drop(BridgeDrop::NotEscrowed));
    let sid = 0x0102_0304_0506_0708;
    b.apply(BridgeCommand::Tag {
        port: go.port(),
        session_id: Some(sid),
    });
    let mut p = rtp(2, 0x1111);
    user.protect_rtp_vec(&mut p).unwrap();
    let (d, mut wire) = through(&mut b, gi.port(), USER, &p);
    let BridgeDecision::Forward {
        out_port,
        dst,
        ipv4_options,
        ..
    } = d
    else {
        panic!("{d:?}")
    };
    assert_eq!((out_port, dst), (go.port(), RELAY.parse().unwrap()));
    match carrier {
        Carrier::Ipv4Option => {
            assert_eq!(
                session_id_from_ipv4_options(&ipv4_options.unwrap()),
                Ok(Some(sid))
            );
        }
        Carrier::RtpExtension { id } => {
            assert!(ipv4_options.is_none());
            assert_eq!(session_id_from_rtp(&wire, id), Ok(Some(sid)));
        }
    }
    // Whoever holds the escrowed Send key reads it; its SSRC is the gateway's.
    let mut lawful = session_from_escrow(&streams[0].master.0);
    let n = wire.len();
    let n = lawful.unprotect_rtp(&mut wire, n).unwrap();
    assert_eq!(
        u32::from_be_bytes(wire[8..12].try_into().unwrap()),
        ssrc_out
    );
    let hdr = if matches!(carrier, Carrier::RtpExtension { .. }) {
        28
    } else {
        12
    };
    assert_eq!(&wire[hdr..n], &rtp(2, 0x1111)[12..]);
    // A stranger on the user's port is dropped; a packet with the wrong key too.
    let (d, _) = through(&mut b, gi.port(), "127.0.0.51:4000", &p);
    assert_eq!(d, BridgeDecision::Drop(BridgeDrop::WrongSource));
    let mut rogue = session(&CryptoAttribute::parse(FAR_KEY).unwrap());
    let mut p = rtp(3, 0x1111);
    rogue.protect_rtp_vec(&mut p).unwrap();
    assert_eq!(
        through(&mut b, gi.port(), USER, &p).0,
        BridgeDecision::Drop(BridgeDrop::Unprotect)
    );

    // Media from the far side (with a session_ID extension of its own): decrypted with the
    // far key, its extension removed, re-encrypted with the key the user was given.
    let mut far = session(&far_attr);
    let mut p = rtp(7, 4242);
    p[0] |= 0x10;
    p.splice(12..12, voxgate_escrow::carrier::rtp_extension_block(5, 99));
    far.protect_rtp_vec(&mut p).unwrap();
    let (d, mut inside_pkt) = through(&mut b, go.port(), RELAY, &p);
    let BridgeDecision::Forward {
        out_port,
        dst,
        ipv4_options,
        ..
    } = d
    else {
        panic!("{d:?}")
    };
    assert_eq!(
        (out_port, dst, ipv4_options),
        (gi.port(), USER.parse().unwrap(), None)
    );
    let mut user_rx = session(&inside_key[0]);
    let n = inside_pkt.len();
    let n = user_rx.unprotect_rtp(&mut inside_pkt, n).unwrap();
    assert_eq!(&inside_pkt[..n], &rtp(7, 4242)[..]);

    // Hang-up: legs cleared, ports back, session_end asked for.
    let free = a.free_pairs();
    a.call_ended(now, "c1");
    pump(&mut b, &media);
    assert_eq!(a.free_pairs(), free + 2);
    assert!(matches!(
        escrow.lock().unwrap().as_slice(),
        [EscrowRequest::End { call_id }] if call_id == "c1"
    ));
    let mut p = rtp(4, 0x1111);
    user.protect_rtp_vec(&mut p).unwrap();
    assert_eq!(
        through(&mut b, gi.port(), USER, &p).0,
        BridgeDecision::Drop(BridgeDrop::NoRoute)
    );
}

#[test]
fn an_outgoing_call_is_rekeyed_escrowed_and_tagged_with_the_ipv4_option() {
    outgoing_call(Carrier::Ipv4Option);
}

#[test]
fn an_outgoing_call_is_rekeyed_escrowed_and_tagged_with_the_rtp_extension() {
    outgoing_call(Carrier::RtpExtension { id: 5 });
}

#[test]
fn an_incoming_call_is_escrowed_once_the_ack_has_crossed_the_spg() {
    let (mut a, mut b, media, escrow) = anchor(Carrier::Ipv4Option, EncryptionPolicy::Optional);
    let now = Instant::now();
    // The provider offers; the user (optional policy inside) is offered RTP/AVP with keys.
    let offer = sdp(RELAY, Some(FAR_KEY), "");
    let inside = a
        .sdp(
            now,
            &ctx("c2", Side::Caller, SdpKind::Offer, true),
            offer.as_bytes(),
        )
        .unwrap()
        .unwrap();
    let t = String::from_utf8(inside.clone()).unwrap();
    assert!(
        t.contains("m=audio 30000 RTP/AVP 0") || t.contains("RTP/AVP 0"),
        "{t}"
    );
    let offered_inside = crypto_of(&inside);
    assert_eq!(offered_inside.len(), 1);
    // The user answers in plain RTP (allowed by the optional policy).
    let answer = sdp(USER, None, "");
    let out = a
        .sdp(
            now,
            &ctx("c2", Side::Callee, SdpKind::Answer, false),
            answer.as_bytes(),
        )
        .unwrap()
        .unwrap();
    let ours = crypto_of(&out);
    assert_eq!(
        ours.len(),
        1,
        "the provider leg is SRTP whatever the inside"
    );
    assert!(escrow.lock().unwrap().is_empty(), "not before the ACK");
    a.acked(now, "c2", Side::Caller);
    let reqs: Vec<EscrowRequest> = escrow.lock().unwrap().drain(..).collect();
    let [EscrowRequest::KeyUpdate { streams, .. }] = reqs.as_slice() else {
        panic!("{reqs:?}")
    };
    assert_eq!(*streams[0].master.0, *ours[0].keys[0].key_salt);
    pump(&mut b, &media);
    // Plain RTP from the user goes out as SRTP under the escrowed key.
    let go = addr_of(&out).port();
    let gi = addr_of(&inside).port();
    b.apply(BridgeCommand::Tag {
        port: go,
        session_id: Some(7),
    });
    let (d, mut wire) = through(&mut b, gi, USER, &rtp(1, 9));
    assert!(matches!(d, BridgeDecision::Forward { .. }), "{d:?}");
    let mut lawful = session_from_escrow(&streams[0].master.0);
    let n = wire.len();
    lawful.unprotect_rtp(&mut wire, n).unwrap();
}

#[test]
fn what_the_gateway_refuses() {
    let (mut a, _, _, _) = anchor(Carrier::Ipv4Option, EncryptionPolicy::Mandatory);
    let now = Instant::now();
    // A plain offer from a user under a mandatory policy.
    let r = a
        .sdp(
            now,
            &ctx("c3", Side::Caller, SdpKind::Offer, false),
            sdp(USER, None, "").as_bytes(),
        )
        .unwrap_err();
    assert_eq!(r.status, 488);
    // A plain offer from the provider.
    let r = a
        .sdp(
            now,
            &ctx("c4", Side::Caller, SdpKind::Offer, true),
            sdp(RELAY, None, "").as_bytes(),
        )
        .unwrap_err();
    assert_eq!(r.status, 488);
    // An answer choosing a tag we did not offer.
    a.sdp(
        now,
        &ctx("c5", Side::Caller, SdpKind::Offer, false),
        sdp(USER, Some(USER_KEY), "").as_bytes(),
    )
    .unwrap();
    let wrong = FAR_KEY.replacen("1 ", "7 ", 1);
    let r = a
        .sdp(
            now,
            &ctx("c5", Side::Callee, SdpKind::Answer, true),
            sdp(RELAY, Some(&wrong), "").as_bytes(),
        )
        .unwrap_err();
    assert_eq!(r.status, 502);
    // Garbage.
    let r = a
        .sdp(
            now,
            &ctx("c6", Side::Caller, SdpKind::Offer, false),
            b"\x00\x01",
        )
        .unwrap_err();
    assert_eq!(r.status, 488);
    // Failed new calls gave their ports back: only c5 holds two pairs.
    assert_eq!(a.calls(), 1);
    assert_eq!(a.free_pairs(), 20 - 2);
}

#[test]
fn a_re_invite_rekeys_the_provider_leg_on_the_same_ports() {
    let (mut a, mut b, media, escrow) = anchor(Carrier::Ipv4Option, EncryptionPolicy::Mandatory);
    let now = Instant::now();
    let offer = sdp(USER, Some(USER_KEY), "");
    let out1 = a
        .sdp(
            now,
            &ctx("c7", Side::Caller, SdpKind::Offer, false),
            offer.as_bytes(),
        )
        .unwrap()
        .unwrap();
    a.sdp(
        now,
        &ctx("c7", Side::Callee, SdpKind::Answer, true),
        sdp(RELAY, Some(FAR_KEY), "").as_bytes(),
    )
    .unwrap();
    // The user re-offers (say after a hold): a new offer with a new key.
    let new_user_key = "1 AES_CM_128_HMAC_SHA1_80 inline:MTIzNDU2Nzg5MGFiY2RlZmdoaWprbG1ub3BxcnN0";
    let out2 = a
        .sdp(
            now,
            &ctx("c7", Side::Caller, SdpKind::Offer, false),
            sdp(USER, Some(new_user_key), "").as_bytes(),
        )
        .unwrap()
        .unwrap();
    assert_eq!(addr_of(&out1), addr_of(&out2), "same ports");
    assert_ne!(
        crypto_of(&out1)[0],
        crypto_of(&out2)[0],
        "a fresh provider key"
    );
    let v = |b: &[u8]| {
        String::from_utf8_lossy(b)
            .lines()
            .find(|l| l.starts_with("o="))
            .unwrap()
            .to_string()
    };
    assert_ne!(v(&out1), v(&out2), "the o= version moves on");
    let far2 = "1 AES_CM_128_HMAC_SHA1_80 inline:enl4d3Z1dHNycXBvbm1sa2ppaGdmZWRjYmEwOTg3";
    a.sdp(
        now,
        &ctx("c7", Side::Callee, SdpKind::Answer, true),
        sdp(RELAY, Some(far2), "").as_bytes(),
    )
    .unwrap();
    let reqs: Vec<EscrowRequest> = escrow.lock().unwrap().drain(..).collect();
    let keys: Vec<_> = reqs
        .iter()
        .map(|r| match r {
            EscrowRequest::KeyUpdate {
                outside_port,
                streams,
                ..
            } => (*outside_port, streams[0].master.0.to_vec()),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(keys.len(), 2, "escrowed, then rekeyed");
    assert_eq!(keys[0].0, keys[1].0);
    assert_ne!(keys[0].1, keys[1].1);
    assert_eq!(keys[1].1, crypto_of(&out2)[0].keys[0].key_salt.to_vec());
    pump(&mut b, &media);
    assert_eq!(a.calls(), 1);
}
