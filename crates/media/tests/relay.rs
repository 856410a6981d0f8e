//! The SPG relay without sockets: a call's offer and answer cross the anchor (SDP rewritten,
//! ports allocated, legs set), the escrow check accepts only the call's parties and media
//! paths, and the data plane forwards escrowed SRTP and drops everything else with its reason.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use voxgate_escrow::carrier::{ipv4_options, rtp_extension_block};
use voxgate_escrow::gate::{DropReason, Mode, Sampling};
use voxgate_escrow::server::Session;
use voxgate_escrow::wire::{Addr, Direction, KeyUpdate, Secret, StreamKey};
use voxgate_media::relay::{
    CallTable, Decision, Relay, RelayAnchor, RelayCommand, RelayConfig, RelayDrop,
};
use voxgate_media::sdp_edit::media_info;
use voxgate_rtp::{MasterKey, SrtpPolicy, SrtpProfile, SrtpSession};
use voxgate_sip::anchor::{MediaAnchor, SdpContext, SdpKind, Side};
use voxgate_sip::sdp::SessionDescription;
use zeroize::Zeroizing;

const GW_A: &str = "127.0.0.11:40000";
const GW_B: &str = "127.0.0.12:50000";
const KEY_A: [u8; 30] = [0xa1; 30];

fn sdp(ip: &str, port: u16, extra: &str) -> String {
    format!("v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\na=rtcp-mux\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n{extra}")
}

fn ctx<'a>(call: &'a str, side: Side, kind: SdpKind) -> SdpContext<'a> {
    let (from, to, ft, tt) = match side {
        Side::Caller => (GW_A, GW_B, "gw1.a.example", "gw1.b.example"),
        Side::Callee => (GW_B, GW_A, "gw1.b.example", "gw1.a.example"),
    };
    SdpContext {
        call_id: call,
        side,
        kind,
        method: "INVITE",
        status: None,
        from_addr: from.parse().unwrap(),
        to_addr: to.parse().unwrap(),
        from_trusted: Some(ft),
        to_trusted: Some(tt),
        to_tls: true,
    }
}

struct Setup {
    anchor: RelayAnchor,
    table: Arc<Mutex<CallTable>>,
    cmds: Arc<Mutex<Vec<RelayCommand>>>,
    relay: Relay,
}

fn setup(mode: Mode) -> Setup {
    setup_with(mode, Vec::new())
}

fn setup_with(mode: Mode, shared_for: Vec<String>) -> Setup {
    let cfg = RelayConfig {
        address: "127.0.0.1".parse().unwrap(),
        first_port: 20_000,
        port_count: 16,
        shared_for,
    };
    let table = Arc::new(Mutex::new(CallTable::new(cfg.address)));
    let cmds = Arc::new(Mutex::new(Vec::new()));
    let c = cmds.clone();
    let anchor = RelayAnchor::new(
        cfg.clone(),
        table.clone(),
        Box::new(move |cmd| c.lock().unwrap().push(cmd)),
    );
    Setup {
        anchor,
        table,
        cmds,
        relay: Relay::new(&cfg, mode, Sampling::EVERY_PACKET),
    }
}

impl Setup {
    fn pump(&mut self) {
        for c in self.cmds.lock().unwrap().drain(..) {
            self.relay.apply(c).unwrap();
        }
    }
}

fn rewritten_port(body: &[u8]) -> u16 {
    let sd = SessionDescription::parse(body).unwrap();
    let i = media_info(&sd, &sd.media[0]);
    assert_eq!(i.rtp.unwrap().ip().to_string(), "127.0.0.1");
    i.rtp.unwrap().port()
}

fn sender(key: &[u8]) -> SrtpSession {
    let mk = MasterKey::new(SrtpProfile::AesCm128HmacSha1_80, &key[..16], &key[16..]).unwrap();
    SrtpSession::new(SrtpPolicy::new(mk)).unwrap()
}

fn srtp(s: &mut SrtpSession, seq: u16, ext: Option<(u8, u64)>) -> Vec<u8> {
    let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0xaa, 0xbb, 0xcc, 0xdd];
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    if let Some((id, sid)) = ext {
        p[0] |= 0x10;
        p.extend_from_slice(&rtp_extension_block(id, sid));
    }
    p.extend_from_slice(&[0x55; 160]);
    s.protect_rtp_vec(&mut p).unwrap();
    p
}

fn key_update(call: &str, src: SocketAddr, dst: SocketAddr, ssrc: Option<u32>) -> KeyUpdate {
    KeyUpdate {
        request_id: 1,
        time_ms: 0,
        call_id: call.into(),
        session_id: None,
        streams: vec![StreamKey {
            direction: Direction::Send,
            src: Addr(src),
            dst: Addr(dst),
            ssrc,
            suite: "AES_CM_128_HMAC_SHA1_80".into(),
            master: Secret(Zeroizing::new(KEY_A.to_vec())),
            mki: None,
        }],
    }
}

#[test]
fn a_call_through_the_relay_with_both_carriers_and_every_drop_reason() {
    let gw_a: SocketAddr = GW_A.parse().unwrap();
    let gw_b: SocketAddr = GW_B.parse().unwrap();
    let mut s = setup(Mode::SourceBased {
        gateways: vec![gw_a.ip(), gw_b.ip()],
    });
    let now = Instant::now();
    // Gateway A offers (with the session_ID extension negotiated, id 3, and its SSRC).
    let offer = sdp(
        "127.0.0.11",
        40_000,
        "a=extmap:3 urn:voxgate:escrow:session-id\r\na=ssrc:2864434397 cname:gw\r\na=candidate:1 1 UDP 1 127.0.0.11 40000 typ host\r\n",
    );
    let to_b = s
        .anchor
        .sdp(
            now,
            &ctx("c1", Side::Caller, SdpKind::Offer),
            offer.as_bytes(),
        )
        .unwrap()
        .unwrap();
    let port_b = rewritten_port(&to_b); // B sends here
    assert!(!String::from_utf8_lossy(&to_b).contains("candidate"));
    assert!(
        String::from_utf8_lossy(&to_b).contains("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNf")
    );
    let answer = sdp("127.0.0.12", 50_000, "");
    let to_a = s
        .anchor
        .sdp(
            now,
            &ctx("c1", Side::Callee, SdpKind::Answer),
            answer.as_bytes(),
        )
        .unwrap()
        .unwrap();
    let port_a = rewritten_port(&to_a); // A sends here
    assert_ne!(port_a, port_b);
    s.pump();
    assert_eq!(s.relay.legs(), 4, "RTP and RTCP legs of both sides");
    let relay_a: SocketAddr = format!("127.0.0.1:{port_a}").parse().unwrap();

    // The escrow check.
    let t = s.table.lock().unwrap();
    let ku = key_update("c1", gw_a, relay_a, Some(0xaabb_ccdd));
    assert_eq!(t.check_key_update("gw1.a.example", &ku), Ok(()));
    assert!(t
        .check_key_update("gw1.c.example", &ku)
        .unwrap_err()
        .contains("not party"));
    assert!(t
        .check_key_update("gw1.a.example", &key_update("c9", gw_a, relay_a, None))
        .unwrap_err()
        .contains("no such call"));
    let wrong_path = key_update("c1", "127.0.0.11:40002".parse().unwrap(), relay_a, None);
    assert!(t
        .check_key_update("gw1.a.example", &wrong_path)
        .unwrap_err()
        .contains("not a media path"));
    let wrong_ssrc = key_update("c1", gw_a, relay_a, Some(1));
    assert!(t.check_key_update("gw1.a.example", &wrong_ssrc).is_err());
    // Gateway B may not escrow A's path.
    assert!(t.check_key_update("gw1.b.example", &ku).is_err());
    drop(t);

    // Escrowed: the gate is armed with gateway A's send key.
    let sid = 0x1234_5678_9abc_def0;
    s.relay
        .apply(RelayCommand::Arm(Box::new(Session {
            id: sid,
            gateway: "gw1.a.example".into(),
            call_id: "c1".into(),
            streams: ku.streams.clone(),
            generation: 0,
            created_ms: 0,
        })))
        .unwrap();
    let mut a = sender(&KEY_A);
    let fwd = Decision::Forward {
        out_port: port_b,
        dst: gw_b,
    };
    // Carrier (a): the IPv4 option.
    let opts = ipv4_options(sid);
    assert_eq!(
        s.relay.handle(port_a, gw_a, &opts, &srtp(&mut a, 1, None)),
        fwd
    );
    // Carrier (b): the RTP header extension negotiated in A's SDP.
    assert_eq!(
        s.relay
            .handle(port_a, gw_a, &[], &srtp(&mut a, 2, Some((3, sid)))),
        fwd
    );
    // No session_ID from a gateway.
    let d = s.relay.handle(port_a, gw_a, &[], &srtp(&mut a, 3, None));
    assert_eq!(d, Decision::Drop(RelayDrop::Gate(DropReason::NoSessionId)));
    // A forged session_ID.
    let d = s
        .relay
        .handle(port_a, gw_a, &ipv4_options(sid ^ 1), &srtp(&mut a, 4, None));
    assert_eq!(
        d,
        Decision::Drop(RelayDrop::Gate(DropReason::UnknownSessionId))
    );
    // A valid session_ID on the wrong tuple (another port of the gateway).
    let other: SocketAddr = "127.0.0.11:40002".parse().unwrap();
    let d = s.relay.handle(port_a, other, &opts, &srtp(&mut a, 5, None));
    assert_eq!(d, Decision::Drop(RelayDrop::Gate(DropReason::WrongTuple)));
    // The right session_ID and tuple, but a key other than the escrowed one.
    let mut rogue = sender(&[0x77; 30]);
    let d = s
        .relay
        .handle(port_a, gw_a, &opts, &srtp(&mut rogue, 6, None));
    assert_eq!(d, Decision::Drop(RelayDrop::Gate(DropReason::TagMismatch)));
    // A stranger (not a gateway) without a session_ID: not the leg's peer.
    let stranger: SocketAddr = "127.0.0.99:1234".parse().unwrap();
    let d = s
        .relay
        .handle(port_a, stranger, &[], &srtp(&mut a, 7, None));
    assert_eq!(d, Decision::Drop(RelayDrop::WrongSource));
    // A port no call uses.
    let d = s.relay.handle(20_014, gw_a, &opts, &srtp(&mut a, 8, None));
    assert_eq!(d, Decision::Drop(RelayDrop::NoRoute));
    // Still forwarding after all that.
    assert_eq!(
        s.relay.handle(port_a, gw_a, &opts, &srtp(&mut a, 9, None)),
        fwd
    );
    assert_eq!(s.relay.stats().verified, 3);

    // Hang-up: the legs and ports are released.
    let free = s.anchor.free_pairs();
    s.anchor.call_ended(now, "c1");
    s.pump();
    assert_eq!(s.relay.legs(), 0);
    assert_eq!(s.anchor.free_pairs(), free + 2);
    assert!(s.table.lock().unwrap().is_empty());
    let d = s.relay.handle(port_a, gw_a, &opts, &srtp(&mut a, 10, None));
    assert_eq!(d, Decision::Drop(RelayDrop::NoRoute));
}

#[test]
fn the_pool_running_dry_refuses_the_offer_and_bad_sdp_is_refused() {
    let mut s = setup(Mode::Global);
    let now = Instant::now();
    // 16 ports: 8 pairs, 2 per call.
    for i in 0..4 {
        let call = format!("c{i}");
        let offer = sdp("127.0.0.11", 40_000 + i * 2, "");
        assert!(s
            .anchor
            .sdp(
                now,
                &ctx(&call, Side::Caller, SdpKind::Offer),
                offer.as_bytes()
            )
            .is_ok());
    }
    let offer = sdp("127.0.0.11", 40_100, "");
    let r = s
        .anchor
        .sdp(
            now,
            &ctx("c5", Side::Caller, SdpKind::Offer),
            offer.as_bytes(),
        )
        .unwrap_err();
    assert_eq!(r.status, 503);
    let r = s
        .anchor
        .sdp(now, &ctx("c6", Side::Caller, SdpKind::Offer), b"not sdp")
        .unwrap_err();
    assert_eq!(r.status, 488);
    let v6 = sdp("127.0.0.11", 40_000, "").replace("c=IN IP4 127.0.0.11", "c=IN IP6 ::1");
    s.anchor.call_ended(now, "c0");
    let r = s
        .anchor
        .sdp(now, &ctx("c7", Side::Caller, SdpKind::Offer), v6.as_bytes())
        .unwrap_err();
    assert_eq!(r.status, 488);
}

#[test]
fn gateways_share_one_port_pair_told_apart_by_source() {
    let gw_a: SocketAddr = GW_A.parse().unwrap();
    let gw_b: SocketAddr = GW_B.parse().unwrap();
    let mut s = setup_with(
        Mode::SourceBased {
            gateways: vec![gw_a.ip(), gw_b.ip()],
        },
        vec!["gw1.a.example".into(), "gw1.b.example".into()],
    );
    let now = Instant::now();
    // Two calls from gateway A (media ports 40000 and 40002) to gateway B (50000, 50002).
    let mut ports = Vec::new();
    for (call, a, b) in [("c1", 40_000, 50_000), ("c2", 40_002, 50_002)] {
        let to_b = s
            .anchor
            .sdp(
                now,
                &ctx(call, Side::Caller, SdpKind::Offer),
                sdp("127.0.0.11", a, "").as_bytes(),
            )
            .unwrap()
            .unwrap();
        let to_a = s
            .anchor
            .sdp(
                now,
                &ctx(call, Side::Callee, SdpKind::Answer),
                sdp("127.0.0.12", b, "").as_bytes(),
            )
            .unwrap()
            .unwrap();
        ports.push((rewritten_port(&to_a), rewritten_port(&to_b)));
    }
    // Every gateway-facing side is on the shared pair (the first of the range).
    assert_eq!(ports, [(20_000, 20_000), (20_000, 20_000)]);
    assert_eq!(s.anchor.free_pairs(), 7, "no pair taken from the pool");
    s.pump();
    assert_eq!(s.relay.legs(), 8, "2 calls x 2 sides x RTP and RTCP");
    let relay: SocketAddr = "127.0.0.1:20000".parse().unwrap();
    let a2: SocketAddr = "127.0.0.11:40002".parse().unwrap();
    let ku = key_update("c2", a2, relay, None);
    assert_eq!(
        s.table
            .lock()
            .unwrap()
            .check_key_update("gw1.a.example", &ku),
        Ok(())
    );
    let sid = 77;
    s.relay
        .apply(RelayCommand::Arm(Box::new(Session {
            id: sid,
            gateway: "gw1.a.example".into(),
            call_id: "c2".into(),
            streams: ku.streams.clone(),
            generation: 0,
            created_ms: 0,
        })))
        .unwrap();
    let mut a = sender(&KEY_A);
    // Call 2's datagrams go to call 2's far side, from the shared port.
    assert_eq!(
        s.relay
            .handle(20_000, a2, &ipv4_options(sid), &srtp(&mut a, 1, None)),
        Decision::Forward {
            out_port: 20_000,
            dst: "127.0.0.12:50002".parse().unwrap()
        }
    );
    // The valid session_ID from a source that is no call's side: the wrong tuple.
    let d = s.relay.handle(
        20_000,
        "127.0.0.11:40010".parse().unwrap(),
        &ipv4_options(sid),
        &srtp(&mut a, 2, None),
    );
    assert_eq!(d, Decision::Drop(RelayDrop::Gate(DropReason::WrongTuple)));
    // A stranger without a session_ID (not a gateway): not a side of any call.
    let d = s.relay.handle(
        20_000,
        "127.0.0.99:1".parse().unwrap(),
        &[],
        &srtp(&mut a, 3, None),
    );
    assert_eq!(d, Decision::Drop(RelayDrop::WrongSource));
    // A third call whose caller reuses call 1's media address gets a pair of its own...
    let to_b = s
        .anchor
        .sdp(
            now,
            &ctx("c3", Side::Caller, SdpKind::Offer),
            sdp("127.0.0.11", 40_000, "").as_bytes(),
        )
        .unwrap()
        .unwrap();
    assert_eq!(rewritten_port(&to_b), 20_000, "B's side is still shared");
    let to_a = s
        .anchor
        .sdp(
            now,
            &ctx("c3", Side::Callee, SdpKind::Answer),
            sdp("127.0.0.12", 50_004, "").as_bytes(),
        )
        .unwrap()
        .unwrap();
    assert_ne!(rewritten_port(&to_a), 20_000, "A's side has its own pair");
    // ... and a callee answering with an address another call has there is refused.
    s.anchor
        .sdp(
            now,
            &ctx("c4", Side::Caller, SdpKind::Offer),
            sdp("127.0.0.11", 40_020, "").as_bytes(),
        )
        .unwrap();
    let r = s
        .anchor
        .sdp(
            now,
            &ctx("c4", Side::Callee, SdpKind::Answer),
            sdp("127.0.0.12", 50_002, "").as_bytes(),
        )
        .unwrap_err();
    assert_eq!(r.status, 488);
    // Hang-ups release the shared legs and the pairs.
    for c in ["c1", "c2", "c3", "c4"] {
        s.anchor.call_ended(now, c);
    }
    s.pump();
    assert_eq!(s.relay.legs(), 0);
    assert_eq!(s.anchor.free_pairs(), 7);
}
