//! The proxy core as a service provider's routing proxy: static routes per domain, trusted
//! peers (trunks) that are not challenged but may only speak for their own domains, and the
//! media anchor that sees (and may rewrite) every SDP body crossing the proxy.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use voxgate_sip::anchor::{MediaAnchor, Refusal, SdpContext, SdpKind, Side};
use voxgate_sip::config::{ProxyConfig, TransportKind};
use voxgate_sip::proxy::{Flow, ProxyCore, Transmit};

const TLS: &str = "127.0.0.1:5061";

const CONFIG: &str = r#"
[[listen]]
transport = "tls"
address = "127.0.0.1:5061"
[tls]
cert = "x.pem"
key = "x.key"
[[route]]
domain = "a.example"
next_hop = "sip:127.0.0.11:5061;transport=tls"
encryption = "mandatory"
[[route]]
domain = "b.example"
next_hop = "sip:127.0.0.12:5061;transport=tls"
encryption = "mandatory"
[[trusted]]
name = "gw1.a.example"
addresses = ["127.0.0.11"]
domains = ["a.example"]
[[trusted]]
name = "gw1.b.example"
addresses = ["127.0.0.12"]
domains = ["b.example"]
"#;

#[derive(Debug, Clone)]
struct Seen {
    call_id: String,
    side: Side,
    kind: SdpKind,
    method: String,
    status: Option<u16>,
    from_trusted: Option<String>,
    to_trusted: Option<String>,
}

#[derive(Default)]
struct Log {
    seen: Vec<Seen>,
    ended: Vec<String>,
    refuse: bool,
}

struct Recorder(Arc<Mutex<Log>>);

impl MediaAnchor for Recorder {
    fn sdp(
        &mut self,
        _now: Instant,
        ctx: &SdpContext<'_>,
        body: &[u8],
    ) -> Result<Option<Vec<u8>>, Refusal> {
        let mut l = self.0.lock().unwrap();
        l.seen.push(Seen {
            call_id: ctx.call_id.to_string(),
            side: ctx.side,
            kind: ctx.kind,
            method: ctx.method.to_string(),
            status: ctx.status,
            from_trusted: ctx.from_trusted.map(str::to_string),
            to_trusted: ctx.to_trusted.map(str::to_string),
        });
        if l.refuse {
            return Err(Refusal::new(503, "no relay ports left"));
        }
        let s = String::from_utf8_lossy(body).replace("c=IN IP4 127.0.0.", "c=IN IP4 198.51.100.");
        Ok(Some(format!("{s}a=anchored\r\n").into_bytes()))
    }

    fn call_ended(&mut self, _now: Instant, call_id: &str) {
        self.0.lock().unwrap().ended.push(call_id.to_string());
    }
}

fn flow(ip: [u8; 4], port: u16, conn: u64) -> Flow {
    Flow {
        transport: TransportKind::Tls,
        local: TLS.parse().unwrap(),
        remote: SocketAddr::from((ip, port)),
        conn: Some(conn),
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
        .take_while(|l| !l.is_empty())
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then_some(v.trim())
        })
        .collect()
}

fn body(msg: &str) -> &str {
    msg.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("")
}

const SDP_A: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.11\r\ns=-\r\nc=IN IP4 127.0.0.11\r\nt=0 0\r\nm=audio 40000 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n";
const SDP_B: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.12\r\ns=-\r\nc=IN IP4 127.0.0.12\r\nt=0 0\r\nm=audio 50000 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVowMTIz\r\n";

fn invite(from: &str, call_id: &str, sdp: &str) -> String {
    format!(
        "INVITE sip:bob@b.example SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.11:5061;branch=z9hG4bKi{call_id}\r\nMax-Forwards: 70\r\nFrom: <sip:{from}>;tag=ft{call_id}\r\nTo: <sip:bob@b.example>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@127.0.0.11:5061;transport=tls>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
}

fn anchored(now: Instant) -> (ProxyCore, Arc<Mutex<Log>>) {
    let cfg = ProxyConfig::from_toml(CONFIG).expect("config");
    let mut p =
        ProxyCore::new(&cfg, vec![(TransportKind::Tls, TLS.parse().unwrap())], now).expect("core");
    let log = Arc::new(Mutex::new(Log::default()));
    p.set_anchor(Box::new(Recorder(log.clone())));
    (p, log)
}

#[test]
fn a_trusted_gateways_call_is_routed_by_domain_and_its_sdp_anchored_both_ways() {
    let now = Instant::now();
    let (mut p, log) = anchored(now);
    let gw_a = flow([127, 0, 0, 11], 40_001, 1);
    let out = feed(&mut p, now, gw_a, &invite("alice@a.example", "c1", SDP_A));
    // 100 Trying upstream, the INVITE to gateway B (no challenge: a trusted peer).
    assert_eq!(status(&out[0]), 100);
    let fwd = out
        .iter()
        .find(|t| text(t).starts_with("INVITE "))
        .expect("forwarded");
    assert_eq!(
        fwd.flow.remote,
        "127.0.0.12:5061".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(fwd.flow.transport, TransportKind::Tls);
    let f = text(fwd);
    assert!(f.starts_with("INVITE sip:bob@b.example SIP/2.0\r\n"), "{f}");
    assert!(body(&f).contains("c=IN IP4 198.51.100.11"), "{f}");
    assert!(body(&f).ends_with("a=anchored\r\n"));
    assert_eq!(header(&f, "Content-Length"), [body(&f).len().to_string()]);
    {
        let l = log.lock().unwrap();
        let s = &l.seen[0];
        assert_eq!(
            (s.side, s.kind, s.method.as_str(), s.status),
            (Side::Caller, SdpKind::Offer, "INVITE", None)
        );
        assert_eq!(s.call_id, "c1");
        assert_eq!(s.from_trusted.as_deref(), Some("gw1.a.example"));
        assert_eq!(s.to_trusted.as_deref(), Some("gw1.b.example"));
    }
    // Gateway B answers with its SDP: anchored as the callee's answer.
    let via = header(&f, "Via").join(", ");
    let rr = header(&f, "Record-Route").join(", ");
    let ok = format!(
        "SIP/2.0 200 OK\r\nVia: {via}\r\nRecord-Route: {rr}\r\nFrom: <sip:alice@a.example>;tag=ftc1\r\nTo: <sip:bob@b.example>;tag=tb\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\nContact: <sip:bob@127.0.0.12:5061;transport=tls>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{SDP_B}",
        SDP_B.len()
    );
    let gw_b = flow([127, 0, 0, 12], 5061, 2);
    let up = feed(&mut p, now, gw_b, &ok);
    let resp = up.iter().find(|t| status(t) == 200).expect("200 upstream");
    assert_eq!(resp.flow.remote, gw_a.remote);
    let r = text(resp);
    assert!(body(&r).contains("c=IN IP4 198.51.100.12"), "{r}");
    assert_eq!(header(&r, "Content-Length"), [body(&r).len().to_string()]);
    {
        let l = log.lock().unwrap();
        let s = &l.seen[1];
        assert_eq!(
            (s.side, s.kind, s.status),
            (Side::Callee, SdpKind::Answer, Some(200))
        );
        assert_eq!(s.from_trusted.as_deref(), Some("gw1.b.example"));
        assert_eq!(s.to_trusted.as_deref(), Some("gw1.a.example"));
        assert!(l.ended.is_empty());
    }
    // The callee hangs up: a BYE inside the dialog ends the call once.
    let token_route = rr.split(", ").next().unwrap().to_string();
    let bye = format!(
        "BYE sip:alice@127.0.0.11:5061;transport=tls SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.12:5061;branch=z9hG4bKbye1\r\nMax-Forwards: 70\r\nRoute: {token_route}\r\nFrom: <sip:bob@b.example>;tag=tb\r\nTo: <sip:alice@a.example>;tag=ftc1\r\nCall-ID: c1\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n"
    );
    let out = feed(&mut p, now, gw_b, &bye);
    assert!(
        out.iter().any(|t| text(t).starts_with("BYE ")),
        "{:?}",
        out.iter().map(text).collect::<Vec<_>>()
    );
    assert_eq!(log.lock().unwrap().ended, ["c1"]);
}

#[test]
fn a_forged_bye_does_not_end_the_call() {
    let now = Instant::now();
    let (mut p, log) = anchored(now);
    let gw_a = flow([127, 0, 0, 11], 40_001, 1);
    feed(&mut p, now, gw_a, &invite("alice@a.example", "c2", SDP_A));
    let bye = "BYE sip:alice@127.0.0.11:5061;transport=tls SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.99:5061;branch=z9hG4bKforged\r\nMax-Forwards: 70\r\nRoute: <sip:127.0.0.1:5061;transport=tls;lr;vx=0000000000000000>\r\nFrom: <sip:bob@b.example>;tag=tb\r\nTo: <sip:alice@a.example>;tag=ftc2\r\nCall-ID: c2\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n";
    let out = feed(&mut p, now, flow([127, 0, 0, 99], 5061, 9), bye);
    assert!(out.iter().any(|t| status(t) == 403));
    assert!(log.lock().unwrap().ended.is_empty());
}

#[test]
fn trusted_peers_speak_only_for_their_domains_and_strangers_are_refused() {
    let now = Instant::now();
    let (mut p, log) = anchored(now);
    // Gateway A may not place calls as a user of b.example.
    let out = feed(
        &mut p,
        now,
        flow([127, 0, 0, 11], 40_001, 1),
        &invite("carol@b.example", "c3", SDP_A),
    );
    assert!(out.iter().any(|t| status(t) == 403));
    // A source that is not a trusted peer gets 403 (there are no local users to challenge).
    let out = feed(
        &mut p,
        now,
        flow([127, 0, 0, 77], 40_001, 3),
        &invite("alice@a.example", "c4", SDP_A),
    );
    assert!(out.iter().any(|t| status(t) == 403));
    assert!(
        log.lock().unwrap().seen.is_empty(),
        "the anchor saw nothing"
    );
}

#[test]
fn an_anchor_refusal_answers_the_invite_and_releases_the_call() {
    let now = Instant::now();
    let (mut p, log) = anchored(now);
    log.lock().unwrap().refuse = true;
    let out = feed(
        &mut p,
        now,
        flow([127, 0, 0, 11], 40_001, 1),
        &invite("alice@a.example", "c5", SDP_A),
    );
    let refusal = out.iter().find(|t| status(t) == 503).expect("503");
    assert!(
        header(&text(refusal), "Warning")[0].contains("no relay ports left"),
        "{}",
        text(refusal)
    );
    assert!(!out.iter().any(|t| text(t).starts_with("INVITE ")));
    assert_eq!(log.lock().unwrap().ended, ["c5"]);
}

#[test]
fn the_route_policy_applies_to_the_offer_as_it_leaves() {
    let now = Instant::now();
    let cfg = ProxyConfig::from_toml(CONFIG).expect("config");
    let mut p =
        ProxyCore::new(&cfg, vec![(TransportKind::Tls, TLS.parse().unwrap())], now).expect("core");
    let plain = "v=0\r\no=- 1 1 IN IP4 127.0.0.11\r\ns=-\r\nc=IN IP4 127.0.0.11\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n";
    let out = feed(
        &mut p,
        now,
        flow([127, 0, 0, 11], 40_001, 1),
        &invite("alice@a.example", "c6", plain),
    );
    assert!(out.iter().any(|t| status(t) == 488), "mandatory route");
}

#[test]
fn route_and_trusted_configuration_errors_name_the_key() {
    let bad = CONFIG.replace("sip:127.0.0.12:5061;transport=tls", "sip:gw.b.example");
    let e = ProxyConfig::from_toml(&bad).unwrap_err().to_string();
    assert!(e.contains("route[1].next_hop"), "{e}");
    let bad = CONFIG.replace(
        "addresses = [\"127.0.0.12\"]",
        "addresses = [\"127.0.0.11\"]",
    );
    let e = ProxyConfig::from_toml(&bad).unwrap_err().to_string();
    assert!(e.contains("trusted[1].addresses"), "{e}");
    let bad = CONFIG.replace("domain = \"b.example\"", "domain = \"a.example\"");
    let e = ProxyConfig::from_toml(&bad).unwrap_err().to_string();
    assert!(e.contains("route[1].domain"), "{e}");
}
