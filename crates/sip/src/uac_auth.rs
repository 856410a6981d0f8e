//! The client side of digest authentication (RFC 3261 §22.2, RFC 7616, RFC 8760): read the
//! `WWW-Authenticate` / `Proxy-Authenticate` challenges of a 401/407 (several may be offered,
//! e.g. SHA-256 and MD5: SHA-256 is chosen when offered), and answer with an `Authorization` /
//! `Proxy-Authorization` value using `qop=auth`, `nc=00000001` and a fresh random cnonce.

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use crate::digest::{digest_params, ha1, response, Algorithm, ParamsError};
use crate::message::SipMessage;

/// Why no authorization could be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    #[error("malformed digest challenge")]
    Malformed,
    #[error("challenge is not Digest")]
    NotDigest,
    #[error("unsupported digest algorithm {0:?}")]
    UnsupportedAlgorithm(String),
    #[error("challenge offers qop without \"auth\"")]
    UnsupportedQop,
    #[error("no usable digest challenge (SHA-256 or MD5) in the response")]
    NoUsableChallenge,
    #[error("random number generator failed")]
    Random,
}

/// Whether the challenge asked for `qop=auth` or is an RFC 2069 challenge without qop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qop {
    Auth,
    None,
}

/// One parsed digest challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub realm: String,
    pub nonce: String,
    pub algorithm: Algorithm,
    pub qop: Qop,
    pub opaque: Option<String>,
    pub stale: bool,
}

/// Parses one `Digest realm=..., nonce=..., ...` challenge (RFC 7616 §3.3).
pub fn parse_challenge(value: &[u8]) -> Result<Challenge, AuthError> {
    let params = digest_params(value).map_err(|e| match e {
        ParamsError::NotDigest => AuthError::NotDigest,
        ParamsError::Malformed => AuthError::Malformed,
    })?;
    let (mut realm, mut nonce, mut algorithm, mut qop, mut opaque, mut stale) =
        (None, None, None, None, None, false);
    for (name, s) in params {
        match &name[..] {
            b"realm" => realm = Some(s),
            b"nonce" => nonce = Some(s),
            b"algorithm" => algorithm = Some(s),
            b"qop" => qop = Some(s),
            b"opaque" => opaque = Some(s),
            b"stale" => stale = s.eq_ignore_ascii_case("true"),
            _ => {}
        }
    }
    let algorithm = match algorithm.as_deref() {
        // RFC 7616 §3.3: absent means MD5.
        None => Algorithm::Md5,
        Some(a) => match Algorithm::from_name(a.as_bytes()) {
            Some(alg) => alg,
            None => {
                // Shown in errors: at most 32 printable characters.
                let shown: String = a
                    .chars()
                    .filter(|c| c.is_ascii_graphic())
                    .take(32)
                    .collect();
                return Err(AuthError::UnsupportedAlgorithm(shown));
            }
        },
    };
    let qop = match qop {
        None => Qop::None,
        Some(list) if list.split(',').any(|q| q.trim() == "auth") => Qop::Auth,
        Some(_) => return Err(AuthError::UnsupportedQop),
    };
    Ok(Challenge {
        realm: realm.ok_or(AuthError::Malformed)?,
        nonce: nonce
            .filter(|n| !n.is_empty())
            .ok_or(AuthError::Malformed)?,
        algorithm,
        qop,
        opaque,
        stale,
    })
}

/// The challenge to answer among those of a 401 (`WWW-Authenticate`) or 407
/// (`Proxy-Authenticate`): SHA-256 when offered, else MD5. Unusable challenges are skipped.
pub fn select_challenge(resp: &SipMessage<'_>, proxy: bool) -> Result<Challenge, AuthError> {
    let name = if proxy {
        "Proxy-Authenticate"
    } else {
        "WWW-Authenticate"
    };
    let usable: Vec<Challenge> = resp
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case(name.as_bytes()))
        .filter_map(|h| parse_challenge(&h.value).ok())
        .collect();
    usable
        .iter()
        .find(|c| c.algorithm == Algorithm::Sha256)
        .or_else(|| usable.first())
        .cloned()
        .ok_or(AuthError::NoUsableChallenge)
}

/// The header that carries the answer to a 401 or a 407.
pub fn authorization_header(proxy: bool) -> &'static str {
    if proxy {
        "Proxy-Authorization"
    } else {
        "Authorization"
    }
}

fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// The `Authorization` / `Proxy-Authorization` value answering `ch` for a request with this
/// method and Request-URI, with a fresh random cnonce and `nc=00000001`.
pub fn authorization(
    ch: &Challenge,
    username: &str,
    password: &str,
    method: &str,
    uri: &str,
) -> Result<String, AuthError> {
    let mut raw = Zeroizing::new([0u8; 16]);
    SystemRandom::new()
        .fill(&mut raw[..])
        .map_err(|_| AuthError::Random)?;
    let cnonce: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    Ok(authorization_with(
        ch, username, password, method, uri, &cnonce, 1,
    ))
}

/// [`authorization`] with a given cnonce and nonce count (for tests and vectors).
pub fn authorization_with(
    ch: &Challenge,
    username: &str,
    password: &str,
    method: &str,
    uri: &str,
    cnonce: &str,
    nc: u32,
) -> String {
    let alg = ch.algorithm;
    let h1 = ha1(alg, username, &ch.realm, password);
    let nc = format!("{nc:08x}");
    let mut v = format!(
        "Digest username={}, realm={}, nonce={}, uri={}",
        quote(username),
        quote(&ch.realm),
        quote(&ch.nonce),
        quote(uri)
    );
    match ch.qop {
        Qop::Auth => {
            let r = response(alg, &h1, &ch.nonce, &nc, cnonce, method, uri);
            v.push_str(&format!(
                ", response=\"{r}\", algorithm={}, cnonce={}, qop=auth, nc={nc}",
                alg.name(),
                quote(cnonce)
            ));
        }
        Qop::None => {
            // RFC 2069 compatibility (RFC 7616 §3.4.1 without qop): H(HA1:nonce:HA2).
            let ha2 = alg.hex(format!("{method}:{uri}").as_bytes());
            let r = alg.hex(format!("{}:{}:{ha2}", &*h1, ch.nonce).as_bytes());
            v.push_str(&format!(", response=\"{r}\", algorithm={}", alg.name()));
        }
    }
    if let Some(o) = &ch.opaque {
        v.push_str(&format!(", opaque={}", quote(o)));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::{parse_authorization, DigestAuth, DigestConfig, Verdict};
    use crate::message::{Framing, ParseLimits};
    use std::net::IpAddr;
    use std::time::Instant;

    /// RFC 7616 §3.9.1: the SHA-256 and MD5 examples, from the challenge text.
    #[test]
    fn rfc7616_examples() {
        let cnonce = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
        for (alg, expected) in [
            (
                "SHA-256",
                "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
            ),
            ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ] {
            let challenge = format!(
                "Digest\r\n realm=\"http-auth@example.org\",\r\n qop=\"auth, auth-int\",\r\n algorithm={alg},\r\n nonce=\"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v\",\r\n opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\""
            )
            .replace("\r\n", "");
            let ch = parse_challenge(challenge.as_bytes()).unwrap();
            assert_eq!(ch.qop, Qop::Auth);
            assert_eq!(ch.realm, "http-auth@example.org");
            let v = authorization_with(
                &ch,
                "Mufasa",
                "Circle of Life",
                "GET",
                "/dir/index.html",
                cnonce,
                1,
            );
            let c = parse_authorization(v.as_bytes()).unwrap();
            assert_eq!(c.response, expected);
            assert_eq!(c.nc.as_deref(), Some("00000001"));
            assert_eq!(c.cnonce.as_deref(), Some(cnonce));
            assert!(v.contains("opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\""));
        }
    }

    fn response_with(challenges: &[String], header: &str) -> Vec<u8> {
        let mut r = b"SIP/2.0 401 Unauthorized\r\nVia: SIP/2.0/TLS h;branch=z9hG4bK1\r\n\
From: <sip:alice@a.example>;tag=1\r\nTo: <sip:alice@a.example>;tag=2\r\nCall-ID: c\r\n\
CSeq: 1 REGISTER\r\n"
            .to_vec();
        for c in challenges {
            r.extend_from_slice(format!("{header}: {c}\r\n").as_bytes());
        }
        r.extend_from_slice(b"Content-Length: 0\r\n\r\n");
        r
    }

    fn lookup(user: &str, alg: Algorithm) -> Option<Zeroizing<String>> {
        (user == "alice").then(|| ha1(alg, "alice", "a.example", "correct horse"))
    }

    #[test]
    fn round_trip_with_the_server_side_prefers_sha256() {
        for proxy in [false, true] {
            let mut auth = DigestAuth::new(DigestConfig::new("a.example")).unwrap();
            let now = Instant::now();
            let src: IpAddr = "192.0.2.1".parse().unwrap();
            let header = if proxy {
                "Proxy-Authenticate"
            } else {
                "WWW-Authenticate"
            };
            let resp = response_with(&auth.challenges(now, false), header);
            let m = SipMessage::parse(&resp, Framing::Datagram, &ParseLimits::default()).unwrap();
            let ch = select_challenge(&m, proxy).unwrap();
            assert_eq!(ch.algorithm, Algorithm::Sha256);
            let v =
                authorization(&ch, "alice", "correct horse", "REGISTER", "sip:a.example").unwrap();
            assert!(v.contains("algorithm=SHA-256") && v.contains("nc=00000001"));
            let verdict = auth.verify(
                now,
                src,
                "REGISTER",
                "sip:a.example",
                Some(v.as_bytes()),
                lookup,
            );
            assert_eq!(
                verdict,
                Verdict::Accepted {
                    user: "alice".into()
                }
            );
            // The wrong header kind finds nothing.
            assert_eq!(
                select_challenge(&m, !proxy),
                Err(AuthError::NoUsableChallenge)
            );
        }
    }

    #[test]
    fn md5_only_and_wrong_password() {
        let mut cfg = DigestConfig::new("a.example");
        cfg.algorithms = vec![Algorithm::Md5];
        let mut auth = DigestAuth::new(cfg).unwrap();
        let now = Instant::now();
        let src: IpAddr = "192.0.2.1".parse().unwrap();
        let resp = response_with(&auth.challenges(now, false), "WWW-Authenticate");
        let m = SipMessage::parse(&resp, Framing::Datagram, &ParseLimits::default()).unwrap();
        let ch = select_challenge(&m, false).unwrap();
        assert_eq!(ch.algorithm, Algorithm::Md5);
        let good = authorization(&ch, "alice", "correct horse", "INVITE", "sip:bob@b").unwrap();
        let bad = authorization(&ch, "alice", "wrong", "INVITE", "sip:bob@b").unwrap();
        assert_eq!(
            auth.verify(
                now,
                src,
                "INVITE",
                "sip:bob@b",
                Some(bad.as_bytes()),
                lookup
            ),
            Verdict::Challenge { stale: false }
        );
        let resp = response_with(&auth.challenges(now, false), "WWW-Authenticate");
        let m = SipMessage::parse(&resp, Framing::Datagram, &ParseLimits::default()).unwrap();
        let ch = select_challenge(&m, false).unwrap();
        let good2 = authorization(&ch, "alice", "correct horse", "INVITE", "sip:bob@b").unwrap();
        assert_ne!(good, good2, "fresh cnonce and nonce");
        assert_eq!(
            auth.verify(
                now,
                src,
                "INVITE",
                "sip:bob@b",
                Some(good2.as_bytes()),
                lookup
            ),
            Verdict::Accepted {
                user: "alice".into()
            }
        );
    }

    #[test]
    fn unusable_challenges_are_refused_or_skipped() {
        assert_eq!(
            parse_challenge(b"Basic realm=\"x\""),
            Err(AuthError::NotDigest)
        );
        assert_eq!(
            parse_challenge(b"Digest realm=\"x\", nonce=\"n\", algorithm=SHA-512-256"),
            Err(AuthError::UnsupportedAlgorithm("SHA-512-256".into()))
        );
        assert_eq!(
            parse_challenge(b"Digest realm=\"x\", nonce=\"n\", qop=\"auth-int\""),
            Err(AuthError::UnsupportedQop)
        );
        assert_eq!(
            parse_challenge(b"Digest realm=\"x\""),
            Err(AuthError::Malformed)
        );
        assert_eq!(
            parse_challenge(b"Digest realm=\"x\", realm=\"y\", nonce=\"n\""),
            Err(AuthError::Malformed)
        );
        assert_eq!(
            parse_challenge(b"Digest realm=\"unterminated, nonce=\"n\""),
            Err(AuthError::Malformed)
        );
        assert_eq!(parse_challenge(b""), Err(AuthError::NotDigest));
        assert_eq!(parse_challenge(b"Digest"), Err(AuthError::Malformed));
        // Absent algorithm means MD5; stale is read; no qop is RFC 2069 style.
        let ch = parse_challenge(b"Digest realm=\"x\", nonce=\"n\", stale=TRUE").unwrap();
        assert_eq!(ch.algorithm, Algorithm::Md5);
        assert!(ch.stale);
        assert_eq!(ch.qop, Qop::None);
        let v = authorization_with(&ch, "u", "p", "REGISTER", "sip:x", "c", 1);
        assert!(!v.contains("qop") && !v.contains("cnonce"));
        // An unusable SHA-512 challenge next to a usable MD5 one: MD5 is taken.
        let resp = response_with(
            &[
                "Digest realm=\"x\", nonce=\"a\", algorithm=SHA-512-256, qop=\"auth\"".into(),
                "Digest realm=\"x\", nonce=\"b\", algorithm=MD5, qop=\"auth\"".into(),
            ],
            "WWW-Authenticate",
        );
        let m = SipMessage::parse(&resp, Framing::Datagram, &ParseLimits::default()).unwrap();
        assert_eq!(select_challenge(&m, false).unwrap().nonce, "b");
        // Quotes in user names are escaped.
        let v = authorization_with(&ch, "a\"b", "p", "REGISTER", "sip:x", "c", 1);
        assert_eq!(parse_authorization(v.as_bytes()).unwrap().username, "a\"b");
    }
}
