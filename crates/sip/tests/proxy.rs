//! The proxy core, driven with real SIP bytes and a simulated clock: registration, digest
//! challenges, forwarding with Record-Route, in-dialog routing, CANCEL, loops, Max-Forwards,
//! the encryption policy, timeouts, unreachable next hops and forged routes.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use voxgate_sip::config::{ProxyConfig, TransportKind};
use voxgate_sip::digest::{ha1, response, Algorithm};
use voxgate_sip::proxy::{Flow, ProxyCore, Transmit};

const UDP: &str = "127.0.0.1:5060";
const TLS: &str = "127.0.0.1:5061";

fn config(policy: &str, udp: bool) -> String {
    let mut c = String::new();
    if udp {
        c.push_str("[[listen]]\ntransport = \"udp\"\naddress = \"127.0.0.1:5060\"\n");
    }
    c.push_str(&format!(
        r#"[[listen]]
transport = "tls"
address = "127.0.0.1:5061"
[tls]
cert = "x.pem"
key = "x.key"
[auth]
max_failures_per_account = 3
[[domain]]
name = "a.example"
encryption = "{policy}"
  [[domain.user]]
  name = "alice"
  password = "alice-pw"
  [[domain.user]]
  name = "bob"
  password = "bob-pw"
  [[domain.user]]
  name = "carol"
  password = "carol-pw"
"#
    ));
    c
}

fn core(policy: &str, udp: bool, now: Instant) -> ProxyCore {
    let cfg = ProxyConfig::from_toml(&config(policy, udp)).expect("config");
    let mut l = vec![(TransportKind::Tls, TLS.parse().unwrap())];
    if udp {
        l.push((TransportKind::Udp, UDP.parse().unwrap()));
    }
    ProxyCore::new(&cfg, l, now).expect("core")
}

fn tls(port: u16, conn: u64) -> Flow {
    Flow {
        transport: TransportKind::Tls,
        local: TLS.parse().unwrap(),
        remote: SocketAddr::from(([127, 0, 0, 1], port)),
        conn: Some(conn),
    }
}

fn udp(port: u16) -> Flow {
    Flow {
        transport: TransportKind::Udp,
        local: UDP.parse().unwrap(),
        remote: SocketAddr::from(([127, 0, 0, 1], port)),
        conn: None,
    }
}

fn feed(p: &mut ProxyCore, now: Instant, flow: Flow, msg: &str) -> Vec<Transmit> {
    p.handle_input(now, flow, msg.as_bytes());
    std::iter::from_fn(|| p.poll_transmit()).collect()
}

fn text(t: &Transmit) -> String {
    String::from_utf8_lossy(&t.bytes).into_owned()
}

fn status(t: &Transmit) -> u16 {
    text(t)[8..11].parse().unwrap_or(0)
}

fn header<'a>(msg: &'a str, name: &str) -> Vec<&'a str> {
    msg.split("\r\n")
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then_some(v.trim())
        })
        .collect()
}

fn param<'a>(challenge: &'a str, name: &str) -> &'a str {
    let start = challenge.find(&format!("{name}=\"")).expect("param") + name.len() + 2;
    let end = challenge[start..].find('"').unwrap() + start;
    &challenge[start..end]
}

fn authorization(challenge: &str, user: &str, pw: &str, method: &str, uri: &str) -> String {
    let alg = if challenge.contains("algorithm=SHA-256") {
        Algorithm::Sha256
    } else {
        Algorithm::Md5
    };
    let nonce = param(challenge, "nonce");
    let h = ha1(alg, user, "a.example", pw);
    let r = response(alg, &h, nonce, "00000001", "c0ffee", method, uri);
    format!(
        "Digest username=\"{user}\", realm=\"a.example\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{r}\", algorithm={}, qop=auth, nc=00000001, cnonce=\"c0ffee\"",
        alg.name()
    )
}

fn register(p: &mut ProxyCore, now: Instant, flow: Flow, user: &str, pw: &str, contact: &str) {
    let base = |cseq: u32, extra: &str| {
        format!(
            "REGISTER sip:a.example SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:{port};branch=z9hG4bKreg{cseq}{user}\r\nMax-Forwards: 70\r\nFrom: <sip:{user}@a.example>;tag=r{user}\r\nTo: <sip:{user}@a.example>\r\nCall-ID: reg-{user}\r\nCSeq: {cseq} REGISTER\r\nContact: <{contact}>\r\nExpires: 600\r\n{extra}Content-Length: 0\r\n\r\n",
            port = flow.remote.port()
        )
    };
    let out = feed(p, now, flow, &base(1, ""));
    assert_eq!(status(&out[0]), 401);
    let t = text(&out[0]);
    let ch = header(&t, "WWW-Authenticate")[0].to_string();
    let a = authorization(&ch, user, pw, "REGISTER", "sip:a.example");
    let out = feed(p, now, flow, &base(2, &format!("Authorization: {a}\r\n")));
    assert_eq!(status(&out[0]), 200, "{}", text(&out[0]));
}

const SRTP_SDP: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n";
const PLAIN_SDP: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

fn invite(
    via_port: u16,
    transport: &str,
    branch: &str,
    cseq: u32,
    extra: &str,
    sdp: &str,
) -> String {
    format!(
        "INVITE sip:bob@a.example SIP/2.0\r\nVia: SIP/2.0/{transport} 127.0.0.1:{via_port};branch={branch}\r\nMax-Forwards: 70\r\nFrom: \"Alice\" <sip:alice@a.example>;tag=al1\r\nTo: <sip:bob@a.example>\r\nCall-ID: call-1@alice\r\nCSeq: {cseq} INVITE\r\nContact: <sip:alice@127.0.0.1:{via_port};transport=tls>\r\n{extra}Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
}

/// INVITE through the 407 challenge; returns what the proxy sent after the authenticated one.
fn authenticated_invite(p: &mut ProxyCore, now: Instant, a: Flow, sdp: &str) -> Vec<Transmit> {
    let out = feed(p, now, a, &invite(7001, "TLS", "z9hG4bKinv1", 1, "", sdp));
    assert_eq!(out.iter().map(status).collect::<Vec<_>>(), vec![100, 407]);
    let t = text(&out[1]);
    let ch = header(&t, "Proxy-Authenticate")[0].to_string();
    let auth = authorization(&ch, "alice", "alice-pw", "INVITE", "sip:bob@a.example");
    let extra = format!("Proxy-Authorization: {auth}\r\n");
    feed(
        p,
        now,
        a,
        &invite(7001, "TLS", "z9hG4bKinv2", 2, &extra, sdp),
    )
}

#[test]
fn registered_call_through_the_proxy_with_record_route_and_in_dialog_routing() {
    let now = Instant::now();
    let mut p = core("mandatory", false, now);
    let (a, b) = (tls(7001, 1), tls(7002, 2));
    register(
        &mut p,
        now,
        a,
        "alice",
        "alice-pw",
        "sip:alice@127.0.0.1:7001;transport=tls",
    );
    register(
        &mut p,
        now,
        b,
        "bob",
        "bob-pw",
        "sip:bob@127.0.0.1:7002;transport=tls",
    );
    let out = authenticated_invite(&mut p, now, a, SRTP_SDP);
    assert_eq!(out.len(), 2, "100 upstream + INVITE downstream");
    assert_eq!(status(&out[0]), 100);
    let fwd = text(&out[1]);
    assert_eq!(out[1].flow, b, "sent over bob's registration connection");
    assert!(
        fwd.starts_with("INVITE sip:bob@127.0.0.1:7002;transport=tls SIP/2.0\r\n"),
        "{fwd}"
    );
    let vias = header(&fwd, "Via");
    assert!(
        vias[0].starts_with("SIP/2.0/TLS 127.0.0.1:5061;branch=z9hG4bK"),
        "{fwd}"
    );
    assert!(vias[1].contains("z9hG4bKinv2"));
    assert_eq!(header(&fwd, "Max-Forwards"), vec!["69"]);
    assert!(
        header(&fwd, "Proxy-Authorization").is_empty(),
        "credentials are not forwarded"
    );
    let rr = header(&fwd, "Record-Route")[0].to_string();
    assert!(
        rr.starts_with("<sip:127.0.0.1:5061;transport=tls;lr;vx="),
        "{rr}"
    );
    assert!(fwd.ends_with(SRTP_SDP), "body forwarded byte-exact");

    // Bob answers 180 then 200 (with the Via stack and Record-Route copied, as a UAS does).
    let our_via = vias[0].to_string();
    let resp = |code: &str, body: &str| {
        format!(
            "SIP/2.0 {code}\r\nVia: {our_via}\r\nVia: {}\r\nRecord-Route: {rr}\r\nFrom: \"Alice\" <sip:alice@a.example>;tag=al1\r\nTo: <sip:bob@a.example>;tag=bo1\r\nCall-ID: call-1@alice\r\nCSeq: 2 INVITE\r\nContact: <sip:bob@127.0.0.1:7002;transport=tls>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
            vias[1],
            body.len()
        )
    };
    let out = feed(&mut p, now, b, &resp("180 Ringing", ""));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].flow, a);
    assert_eq!(
        header(&text(&out[0]), "Via").len(),
        1,
        "our Via is stripped"
    );
    let out = feed(&mut p, now, b, &resp("200 OK", SRTP_SDP));
    assert_eq!(status(&out[0]), 200);
    assert_eq!(out[0].flow, a);
    assert_eq!(p.stats().calls_encrypted, 1);

    // ACK and BYE from alice carry the route set; they reach bob without a challenge.
    let in_dialog = |method: &str, cseq: u32, branch: &str| {
        format!(
            "{method} sip:bob@127.0.0.1:7002;transport=tls SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:7001;branch={branch}\r\nRoute: {rr}\r\nMax-Forwards: 70\r\nFrom: \"Alice\" <sip:alice@a.example>;tag=al1\r\nTo: <sip:bob@a.example>;tag=bo1\r\nCall-ID: call-1@alice\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
        )
    };
    let out = feed(&mut p, now, a, &in_dialog("ACK", 2, "z9hG4bKack1"));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].flow, b);
    assert!(
        header(&text(&out[0]), "Route").is_empty(),
        "our Route is popped"
    );
    let out = feed(&mut p, now, a, &in_dialog("BYE", 3, "z9hG4bKbye1"));
    assert_eq!(out.len(), 1);
    assert!(text(&out[0]).starts_with("BYE sip:bob@127.0.0.1:7002;transport=tls SIP/2.0"));

    // Bob hangs up the other way: BYE to alice's Contact goes over alice's connection.
    let bye_to_alice = format!(
        "BYE sip:alice@127.0.0.1:7001;transport=tls SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:7002;branch=z9hG4bKbbye\r\nRoute: {rr}\r\nMax-Forwards: 70\r\nFrom: <sip:bob@a.example>;tag=bo1\r\nTo: \"Alice\" <sip:alice@a.example>;tag=al1\r\nCall-ID: call-1@alice\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n"
    );
    let out = feed(&mut p, now, b, &bye_to_alice);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].flow, a);

    // A Route of ours whose token belongs to another Call-ID is refused (no open relay).
    let forged = bye_to_alice
        .replace("call-1@alice", "other@x")
        .replace("z9hG4bKbbye", "z9hG4bKf");
    let out = feed(&mut p, now, b, &forged);
    assert_eq!(out.iter().map(status).collect::<Vec<_>>(), vec![403]);
    // An ACK outside any dialog of ours is dropped.
    let stray = in_dialog("ACK", 9, "z9hG4bKstray").replace(&format!("Route: {rr}\r\n"), "");
    assert!(feed(&mut p, now, a, &stray).is_empty());
}

#[test]
fn challenges_do_not_reveal_whether_a_user_exists() {
    let now = Instant::now();
    let mut p = core("mandatory", false, now);
    let a = tls(7001, 1);
    let masked = |t: &Transmit| {
        let s = text(t);
        let mut out = String::new();
        for l in s.split("\r\n") {
            if let Some(i) = l.find("nonce=\"") {
                out.push_str(&l[..i]);
            } else if !l.starts_with("To:") && !l.starts_with("Call-ID:") && !l.starts_with("Via:")
            {
                out.push_str(l);
            }
            out.push('\n');
        }
        out
    };
    let known = invite(7001, "TLS", "z9hG4bKk1", 1, "", SRTP_SDP);
    let missing = invite(7001, "TLS", "z9hG4bKk2", 1, "", SRTP_SDP)
        .replace("bob@a.example", "nobody@a.example")
        .replace("call-1@alice", "call-2@alice");
    let k = feed(&mut p, now, a, &known);
    let m = feed(&mut p, now, a, &missing);
    assert_eq!(status(&k[1]), 407);
    assert_eq!(masked(&k[1]), masked(&m[1]));
    // After authentication, the missing user is 404 and an unregistered one 480.
    let out = authenticated_invite(&mut p, now, a, SRTP_SDP);
    assert_eq!(status(out.last().unwrap()), 480, "bob is not registered");
}

#[test]
fn identity_must_match_the_credentials() {
    let now = Instant::now();
    let mut p = core("mandatory", false, now);
    let a = tls(7001, 1);
    let out = feed(
        &mut p,
        now,
        a,
        &invite(7001, "TLS", "z9hG4bKi1", 1, "", SRTP_SDP),
    );
    let ch = header(&text(&out[1]), "Proxy-Authenticate")[0].to_string();
    // carol's valid credentials on a request From alice.
    let auth = authorization(&ch, "carol", "carol-pw", "INVITE", "sip:bob@a.example");
    let out = feed(
        &mut p,
        now,
        a,
        &invite(
            7001,
            "TLS",
            "z9hG4bKi2",
            2,
            &format!("Proxy-Authorization: {auth}\r\n"),
            SRTP_SDP,
        ),
    );
    assert_eq!(status(out.last().unwrap()), 403);
}

#[test]
fn encryption_policy_is_enforced_on_the_offer() {
    let now = Instant::now();
    let mut p = core("mandatory", false, now);
    let a = tls(7001, 1);
    register(
        &mut p,
        now,
        tls(7002, 2),
        "bob",
        "bob-pw",
        "sip:bob@127.0.0.1:7002;transport=tls",
    );
    let out = authenticated_invite(&mut p, now, a, PLAIN_SDP);
    let last = out.last().unwrap();
    assert_eq!(status(last), 488);
    assert!(
        text(last).contains("Warning: 399 voxgate"),
        "{}",
        text(last)
    );
    assert_eq!(p.stats().calls_refused_policy, 1);

    // Policy off, but a=crypto on a UDP hop: the keys would travel in clear; refused.
    let mut p = core("off", true, now);
    let u = udp(7003);
    let out = feed(
        &mut p,
        now,
        u,
        &invite(7003, "UDP", "z9hG4bKu1", 1, "", SRTP_SDP),
    );
    let ch = header(&text(&out[1]), "Proxy-Authenticate")[0].to_string();
    let auth = authorization(&ch, "alice", "alice-pw", "INVITE", "sip:bob@a.example");
    let out = feed(
        &mut p,
        now,
        u,
        &invite(
            7003,
            "UDP",
            "z9hG4bKu2",
            2,
            &format!("Proxy-Authorization: {auth}\r\n"),
            SRTP_SDP,
        ),
    );
    let last = out.last().unwrap();
    assert_eq!(status(last), 488);
    assert!(text(last).contains("only over TLS"));
}

#[test]
fn max_forwards_loops_and_proxy_require() {
    let now = Instant::now();
    let mut p = core("mandatory", false, now);
    let a = tls(7001, 1);
    let zero = invite(7001, "TLS", "z9hG4bKm0", 1, "", SRTP_SDP)
        .replace("Max-Forwards: 70", "Max-Forwards: 0");
    assert_eq!(
        feed(&mut p, now, a, &zero)
            .iter()
            .map(status)
            .collect::<Vec<_>>(),
        vec![483]
    );
    let req = invite(
        7001,
        "TLS",
        "z9hG4bKpr",
        1,
        "Proxy-Require: foo\r\n",
        SRTP_SDP,
    );
    let out = feed(&mut p, now, a, &req);
    assert_eq!(status(&out[0]), 420);
    assert!(text(&out[0]).contains("Unsupported: foo"));

    // A request that comes back with our own Via and the same branch has looped.
    register(
        &mut p,
        now,
        tls(7002, 2),
        "bob",
        "bob-pw",
        "sip:bob@127.0.0.1:7002;transport=tls",
    );
    let out = authenticated_invite(&mut p, now, a, SRTP_SDP);
    let fwd = text(&out[1]);
    // Feed the forwarded request back with the same Request-URI as the original.
    let looped = fwd
        .replacen(
            "INVITE sip:bob@127.0.0.1:7002;transport=tls",
            "INVITE sip:bob@a.example",
            1,
        )
        .replacen(
            "Via: ",
            "Via: SIP/2.0/TLS 127.0.0.1:7009;branch=z9hG4bKother\r\nVia: ",
            1,
        );
    let out = feed(&mut p, now, tls(7009, 9), &looped);
    assert_eq!(out.iter().map(status).collect::<Vec<_>>(), vec![482]);
    assert_eq!(p.stats().loops, 1);
}

#[test]
fn cancel_before_and_after_a_provisional_response() {
    let now = Instant::now();
    let mut p = core("mandatory", false, now);
    let (a, b) = (tls(7001, 1), tls(7002, 2));
    register(
        &mut p,
        now,
        b,
        "bob",
        "bob-pw",
        "sip:bob@127.0.0.1:7002;transport=tls",
    );
    let out = authenticated_invite(&mut p, now, a, SRTP_SDP);
    let fwd = text(&out[1]);
    let vias = header(&fwd, "Via");
    let cancel = "CANCEL sip:bob@a.example SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:7001;branch=z9hG4bKinv2\r\nMax-Forwards: 70\r\nFrom: \"Alice\" <sip:alice@a.example>;tag=al1\r\nTo: <sip:bob@a.example>\r\nCall-ID: call-1@alice\r\nCSeq: 2 CANCEL\r\nContent-Length: 0\r\n\r\n";
    let out = feed(&mut p, now, a, cancel);
    assert_eq!(
        out.iter().map(status).collect::<Vec<_>>(),
        vec![200],
        "CANCEL answered; not sent on before a provisional"
    );
    // Bob rings: the 180 goes up and the CANCEL goes down now.
    let r180 = format!(
        "SIP/2.0 180 Ringing\r\nVia: {}\r\nVia: {}\r\nFrom: \"Alice\" <sip:alice@a.example>;tag=al1\r\nTo: <sip:bob@a.example>;tag=bo1\r\nCall-ID: call-1@alice\r\nCSeq: 2 INVITE\r\nContent-Length: 0\r\n\r\n",
        vias[0], vias[1]
    );
    let out = feed(&mut p, now, b, &r180);
    let kinds: Vec<String> = out
        .iter()
        .map(|t| text(t).lines().next().unwrap().to_string())
        .collect();
    assert!(
        kinds.iter().any(|k| k.starts_with("SIP/2.0 180")),
        "{kinds:?}"
    );
    let c = out
        .iter()
        .find(|t| text(t).starts_with("CANCEL "))
        .expect("CANCEL sent downstream");
    assert_eq!(c.flow, b);
    assert_eq!(
        header(&text(c), "Via")[0],
        vias[0],
        "CANCEL has the INVITE's branch"
    );
    // Bob: 487 to the INVITE goes up to alice; the proxy ACKs it hop by hop.
    let r487 = r180.replace("180 Ringing", "487 Request Terminated");
    let out = feed(&mut p, now, b, &r487);
    assert!(out.iter().any(|t| t.flow == a && status(t) == 487));
    assert!(out
        .iter()
        .any(|t| t.flow == b && text(t).starts_with("ACK ")));

    // A CANCEL that matches nothing: 481.
    let other = cancel.replace("z9hG4bKinv2", "z9hG4bKnothing");
    assert_eq!(
        feed(&mut p, now, a, &other)
            .iter()
            .map(status)
            .collect::<Vec<_>>(),
        vec![481]
    );
}

#[test]
fn no_answer_times_out_with_408_and_unreachable_gives_503() {
    let now = Instant::now();
    let mut p = core("off", true, now);
    let u = udp(7003);
    // bob registers over UDP; his UA then never answers.
    let reg = |cseq: u32, extra: &str| {
        format!("REGISTER sip:a.example SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:7004;branch=z9hG4bKr{cseq}\r\nMax-Forwards: 70\r\nFrom: <sip:bob@a.example>;tag=x\r\nTo: <sip:bob@a.example>\r\nCall-ID: r@b\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:bob@127.0.0.1:7004>\r\n{extra}Content-Length: 0\r\n\r\n")
    };
    let out = feed(&mut p, now, udp(7004), &reg(1, ""));
    let ch = header(&text(&out[0]), "WWW-Authenticate")[0].to_string();
    let auth = authorization(&ch, "bob", "bob-pw", "REGISTER", "sip:a.example");
    let out = feed(
        &mut p,
        now,
        udp(7004),
        &reg(2, &format!("Authorization: {auth}\r\n")),
    );
    assert_eq!(status(&out[0]), 200);
    let out = feed(
        &mut p,
        now,
        u,
        &invite(7003, "UDP", "z9hG4bKt1", 1, "", PLAIN_SDP),
    );
    let ch = header(&text(&out[1]), "Proxy-Authenticate")[0].to_string();
    let auth = authorization(&ch, "alice", "alice-pw", "INVITE", "sip:bob@a.example");
    let out = feed(
        &mut p,
        now,
        u,
        &invite(
            7003,
            "UDP",
            "z9hG4bKt2",
            2,
            &format!("Proxy-Authorization: {auth}\r\n"),
            PLAIN_SDP,
        ),
    );
    assert_eq!(out.len(), 2);
    assert_eq!(out[1].flow.remote.port(), 7004);
    // Retransmissions at T1, 2T1, ... then Timer B at 64*T1: 408 to alice.
    let mut t = now;
    let mut retransmits = 0;
    let mut final_up = None;
    while t < now + Duration::from_secs(40) {
        t += Duration::from_millis(250);
        p.handle_timeout(t);
        while let Some(x) = p.poll_transmit() {
            if x.flow.remote.port() == 7004 {
                retransmits += 1;
            } else {
                final_up = Some(status(&x));
            }
        }
    }
    assert_eq!(
        retransmits, 6,
        "INVITE retransmitted at 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 s"
    );
    assert_eq!(final_up, Some(408));

    // A next hop the driver cannot reach: 503 at once.
    let mut p = core("mandatory", false, now);
    let (a, b) = (tls(7001, 1), tls(7002, 2));
    register(
        &mut p,
        now,
        b,
        "bob",
        "bob-pw",
        "sip:bob@127.0.0.1:7002;transport=tls",
    );
    let out = authenticated_invite(&mut p, now, a, SRTP_SDP);
    assert_eq!(out[1].flow, b);
    p.handle_unreachable(now, b);
    let out: Vec<Transmit> = std::iter::from_fn(|| p.poll_transmit()).collect();
    assert_eq!(out.iter().map(status).collect::<Vec<_>>(), vec![503]);
}

#[test]
fn malformed_requests_get_400_when_addressable_and_nothing_else_breaks() {
    let now = Instant::now();
    let mut p = core("off", true, now);
    let u = udp(7003);
    let bad = "INVITE sip:bob@a.example SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:7003;branch=z9hG4bKb\r\nFrom: <sip:alice@a.example>;tag=1\r\nTo: <sip:bob@a.example>\r\nCall-ID: bad@x\r\nCSeq: 1 INVITE\r\nCSeq: 2 INVITE\r\nContent-Length: 0\r\n\r\n";
    let out = feed(&mut p, now, u, bad);
    assert_eq!(out.iter().map(status).collect::<Vec<_>>(), vec![400]);
    assert!(feed(&mut p, now, u, "\x00\x01garbage").is_empty());
    assert_eq!(p.stats().parse_errors, 2);
    // A response that belongs to no transaction is dropped.
    let stray = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKvxnothing\r\nFrom: <sip:a@a.example>;tag=1\r\nTo: <sip:b@a.example>;tag=2\r\nCall-ID: s@x\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
    assert!(feed(&mut p, now, u, stray).is_empty());
    // OPTIONS to the proxy itself is answered without a challenge.
    let ping = "OPTIONS sip:127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:7003;branch=z9hG4bKo\r\nMax-Forwards: 70\r\nFrom: <sip:x@a.example>;tag=1\r\nTo: <sip:127.0.0.1:5060>\r\nCall-ID: o@x\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(
        feed(&mut p, now, u, ping)
            .iter()
            .map(status)
            .collect::<Vec<_>>(),
        vec![200]
    );
    // Its retransmission is answered from the transaction, not processed again.
    assert_eq!(
        feed(&mut p, now, u, ping)
            .iter()
            .map(status)
            .collect::<Vec<_>>(),
        vec![200]
    );
}

#[test]
fn timer_c_cancels_an_invite_that_rings_forever() {
    let now = Instant::now();
    let mut p = core("mandatory", false, now);
    let (a, b) = (tls(7001, 1), tls(7002, 2));
    register(
        &mut p,
        now,
        b,
        "bob",
        "bob-pw",
        "sip:bob@127.0.0.1:7002;transport=tls",
    );
    let out = authenticated_invite(&mut p, now, a, SRTP_SDP);
    let vias = header(&text(&out[1]), "Via")
        .iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>();
    let r180 = format!(
        "SIP/2.0 180 Ringing\r\nVia: {}\r\nVia: {}\r\nFrom: \"Alice\" <sip:alice@a.example>;tag=al1\r\nTo: <sip:bob@a.example>;tag=bo1\r\nCall-ID: call-1@alice\r\nCSeq: 2 INVITE\r\nContent-Length: 0\r\n\r\n",
        vias[0], vias[1]
    );
    assert_eq!(feed(&mut p, now, b, &r180).len(), 1);
    let mut sent = Vec::new();
    let mut t = now;
    while t < now + Duration::from_secs(240) {
        t += Duration::from_secs(5);
        p.handle_timeout(t);
        sent.extend(std::iter::from_fn(|| p.poll_transmit()));
    }
    assert!(
        sent.iter()
            .any(|x| x.flow == b && text(x).starts_with("CANCEL ")),
        "CANCEL downstream"
    );
    assert!(
        sent.iter().any(|x| x.flow == a && status(x) == 408),
        "408 upstream"
    );
}
