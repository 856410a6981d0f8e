//! The registrar: digest-authenticated REGISTER, bindings with expiry, refusals.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use voxgate_sip::digest::{ha1, response as digest_response, Algorithm, DigestAuth, DigestConfig};
use voxgate_sip::registrar::{Registrar, RegistrarConfig};
use voxgate_sip::{Framing, ParseLimits, SipMessage, StartLine};
use zeroize::Zeroizing;

fn creds(user: &str, alg: Algorithm) -> Option<Zeroizing<String>> {
    (user == "alice").then(|| ha1(alg, "alice", "a.example", "s3cret pass"))
}

fn register(
    aor_user: &str,
    contact: &str,
    expires: Option<u32>,
    cseq: u32,
    authz: Option<&str>,
) -> Vec<u8> {
    let mut r = format!(
        "REGISTER sip:a.example SIP/2.0\r\nVia: SIP/2.0/TLS 192.0.2.9:5061;branch=z9hG4bKreg{cseq}\r\n\
Max-Forwards: 70\r\nTo: <sip:{aor_user}@a.example>\r\nFrom: <sip:{aor_user}@a.example>;tag=77\r\n\
Call-ID: reg-1@192.0.2.9\r\nCSeq: {cseq} REGISTER\r\nContact: {contact}\r\n"
    );
    if let Some(e) = expires {
        r.push_str(&format!("Expires: {e}\r\n"));
    }
    if let Some(a) = authz {
        r.push_str(&format!("Authorization: {a}\r\n"));
    }
    r.push_str("Content-Length: 0\r\n\r\n");
    r.into_bytes()
}

fn status(resp: &[u8]) -> u16 {
    match SipMessage::parse(resp, Framing::Datagram, &ParseLimits::default())
        .unwrap()
        .start
    {
        StartLine::Response { code, .. } => code,
        _ => panic!("not a response"),
    }
}

/// Answers the first (SHA-256) challenge of a 401.
fn authorize(resp: &[u8], user: &str, password: &str) -> String {
    let text = String::from_utf8_lossy(resp);
    let ch = text
        .lines()
        .find(|l| l.starts_with("WWW-Authenticate:"))
        .unwrap();
    let i = ch.find("nonce=\"").unwrap() + 7;
    let nonce = &ch[i..i + ch[i..].find('"').unwrap()];
    let h = ha1(Algorithm::Sha256, user, "a.example", password);
    let r = digest_response(
        Algorithm::Sha256,
        &h,
        nonce,
        "00000001",
        "abc",
        "REGISTER",
        "sip:a.example",
    );
    format!("Digest username=\"{user}\", realm=\"a.example\", nonce=\"{nonce}\", uri=\"sip:a.example\", response=\"{r}\", algorithm=SHA-256, cnonce=\"abc\", qop=auth, nc=00000001")
}

fn setup() -> (Registrar, DigestAuth, Instant, IpAddr) {
    let reg = Registrar::new(RegistrarConfig {
        domains: vec!["a.example".into()],
        ..Default::default()
    });
    let auth = DigestAuth::new(DigestConfig::new("a.example")).unwrap();
    (reg, auth, Instant::now(), "192.0.2.9".parse().unwrap())
}

fn handle(
    reg: &mut Registrar,
    auth: &mut DigestAuth,
    now: Instant,
    src: IpAddr,
    bytes: &[u8],
) -> Vec<u8> {
    let m = SipMessage::parse(bytes, Framing::Stream, &ParseLimits::default()).unwrap();
    reg.handle_register(now, src, &m, auth, creds)
}

#[test]
fn register_with_digest_then_lookup_refresh_and_remove() {
    let (mut reg, mut auth, t0, src) = setup();
    let c = "<sip:alice@192.0.2.9:5061;transport=tls>";
    let r401 = handle(
        &mut reg,
        &mut auth,
        t0,
        src,
        &register("alice", c, None, 1, None),
    );
    assert_eq!(status(&r401), 401);
    assert_eq!(
        String::from_utf8_lossy(&r401)
            .matches("WWW-Authenticate:")
            .count(),
        2
    );
    let a = authorize(&r401, "alice", "s3cret pass");
    let ok = handle(
        &mut reg,
        &mut auth,
        t0,
        src,
        &register("alice", c, None, 2, Some(&a)),
    );
    assert_eq!(status(&ok), 200, "{}", String::from_utf8_lossy(&ok));
    assert!(String::from_utf8_lossy(&ok)
        .contains("Contact: <sip:alice@192.0.2.9:5061;transport=tls>;expires=3600"));
    assert_eq!(reg.lookup(t0, "alice@a.example").len(), 1);
    // It expires.
    assert!(reg
        .lookup(t0 + Duration::from_secs(3601), "alice@a.example")
        .is_empty());
    // Too short an interval: 423 with Min-Expires.
    let r = handle(
        &mut reg,
        &mut auth,
        t0,
        src,
        &register("alice", c, Some(30), 3, None),
    );
    let a = authorize(&r, "alice", "s3cret pass");
    let r = handle(
        &mut reg,
        &mut auth,
        t0,
        src,
        &register("alice", c, Some(30), 4, Some(&a)),
    );
    assert_eq!(status(&r), 423);
    assert!(String::from_utf8_lossy(&r).contains("Min-Expires: 60"));
    // The same Call-ID with an old CSeq is refused.
    let r = handle(
        &mut reg,
        &mut auth,
        t0,
        src,
        &register("alice", c, None, 5, None),
    );
    let a = authorize(&r, "alice", "s3cret pass");
    let r = handle(
        &mut reg,
        &mut auth,
        t0,
        src,
        &register("alice", c, None, 1, Some(&a)),
    );
    assert_eq!(status(&r), 400);
    // "Contact: *" with Expires 0 removes everything.
    let r = handle(
        &mut reg,
        &mut auth,
        t0,
        src,
        &register("alice", "*", Some(0), 6, None),
    );
    let a = authorize(&r, "alice", "s3cret pass");
    let r = handle(
        &mut reg,
        &mut auth,
        t0,
        src,
        &register("alice", "*", Some(0), 7, Some(&a)),
    );
    assert_eq!(status(&r), 200);
    assert!(reg.lookup(t0, "alice@a.example").is_empty());
}

#[test]
fn enumeration_and_hijack_get_nothing() {
    let (mut reg, mut auth, t0, src) = setup();
    // An unknown user is challenged exactly like a known one, and fails the same way.
    let known = handle(
        &mut reg,
        &mut auth,
        t0,
        src,
        &register("alice", "<sip:x@h>", None, 1, None),
    );
    let unknown = handle(
        &mut reg,
        &mut auth,
        t0,
        src,
        &register("nobody", "<sip:x@h>", None, 1, None),
    );
    let shape = |r: &[u8]| {
        String::from_utf8_lossy(r)
            .lines()
            .map(|l| l.split(['=', ':']).next().unwrap_or("").to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(status(&known), 401);
    assert_eq!(status(&unknown), 401);
    assert_eq!(
        shape(&known),
        shape(&unknown),
        "the same challenge, field for field"
    );
    let bad = authorize(&unknown, "nobody", "guess");
    let r1 = handle(
        &mut reg,
        &mut auth,
        t0,
        src,
        &register("nobody", "<sip:x@h>", None, 2, Some(&bad)),
    );
    let bad = authorize(&known, "alice", "guess");
    let r2 = handle(
        &mut reg,
        &mut auth,
        t0,
        src,
        &register("alice", "<sip:x@h>", None, 2, Some(&bad)),
    );
    assert_eq!((status(&r1), status(&r2)), (401, 401));
    // Alice may not register bob's address of record.
    let r = handle(
        &mut reg,
        &mut auth,
        t0,
        src,
        &register("bob", "<sip:x@h>", None, 3, None),
    );
    let a = authorize(&r, "alice", "s3cret pass");
    let r = handle(
        &mut reg,
        &mut auth,
        t0,
        src,
        &register("bob", "<sip:x@h>", None, 4, Some(&a)),
    );
    assert_eq!(status(&r), 403);
    assert!(reg.lookup(t0, "bob@a.example").is_empty());
    // A domain this registrar does not serve.
    let other = String::from_utf8(register("alice", "<sip:x@h>", None, 5, None))
        .unwrap()
        .replace("@a.example>", "@b.example>");
    let r = handle(&mut reg, &mut auth, t0, src, other.as_bytes());
    assert_eq!(status(&r), 403);
}
