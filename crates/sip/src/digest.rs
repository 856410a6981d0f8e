//! SIP digest authentication, server side (RFC 3261 §22, RFC 7616 as used by RFC 8760):
//! SHA-256 first and MD5 for old clients, `qop=auth`, short-lived single-use nonces with `nc`
//! checked, and limits that make guessing useless:
//!
//! - an unknown user gets exactly the challenge a known user with a wrong password gets (the
//!   response is even computed against a per-user dummy secret), so an enumerator learns nothing;
//! - failures are counted per source address and per account name; past the limit the source
//!   or account is locked out for a while, and during the lockout even the right password fails.
//!
//! Sans-I/O: the caller passes `now`, the source address and a credential lookup.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use aws_lc_rs::{digest, hmac, rand::SecureRandom};
use base64::Engine;
use md5::Digest as _;
use zeroize::Zeroizing;

use crate::grammar;

/// Digest algorithms offered, in order of preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Sha256,
    Md5,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Md5 => "MD5",
        }
    }

    pub(crate) fn from_name(s: &[u8]) -> Option<Self> {
        if s.eq_ignore_ascii_case(b"SHA-256") {
            Some(Algorithm::Sha256)
        } else if s.eq_ignore_ascii_case(b"MD5") {
            Some(Algorithm::Md5)
        } else {
            None
        }
    }

    /// Lower-case hex of H(data).
    pub fn hex(self, data: &[u8]) -> String {
        let bytes: Vec<u8> = match self {
            Algorithm::Sha256 => digest::digest(&digest::SHA256, data).as_ref().to_vec(),
            Algorithm::Md5 => md5::Md5::digest(data).to_vec(),
        };
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// RFC 7616 §3.4.1 with qop=auth: the `response` a client sends.
#[allow(clippy::too_many_arguments)]
pub fn response(
    alg: Algorithm,
    ha1: &str,
    nonce: &str,
    nc: &str,
    cnonce: &str,
    method: &str,
    uri: &str,
) -> String {
    let ha2 = alg.hex(format!("{method}:{uri}").as_bytes());
    alg.hex(format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}").as_bytes())
}

/// HA1 = H(username ":" realm ":" password).
pub fn ha1(alg: Algorithm, user: &str, realm: &str, password: &str) -> Zeroizing<String> {
    Zeroizing::new(alg.hex(format!("{user}:{realm}:{password}").as_bytes()))
}

/// Limits and parameters of a realm.
#[derive(Debug, Clone)]
pub struct DigestConfig {
    pub realm: String,
    pub algorithms: Vec<Algorithm>,
    /// How long a nonce may be used after it was issued.
    pub nonce_lifetime: Duration,
    /// Outstanding nonces kept; the oldest are forgotten beyond this.
    pub max_nonces: usize,
    /// Failures from one source address, within `failure_window`, before it is locked out.
    pub max_failures_per_source: u32,
    /// Failures for one account name, within `failure_window`, before it is locked out.
    pub max_failures_per_account: u32,
    pub failure_window: Duration,
    pub lockout: Duration,
}

impl DigestConfig {
    pub fn new(realm: &str) -> Self {
        DigestConfig {
            realm: realm.to_string(),
            algorithms: vec![Algorithm::Sha256, Algorithm::Md5],
            nonce_lifetime: Duration::from_secs(30),
            max_nonces: 65_536,
            max_failures_per_source: 10,
            max_failures_per_account: 5,
            failure_window: Duration::from_secs(300),
            lockout: Duration::from_secs(900),
        }
    }
}

/// What to do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Authenticated as this user.
    Accepted { user: String },
    /// Answer 401/407 with [`DigestAuth::challenges`] (`stale` when the nonce had only expired).
    Challenge { stale: bool },
    /// The source or account is locked out: answer 403 and do not verify.
    LockedOut,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    since: Instant,
    locked_until: Option<Instant>,
}

/// The server side of digest authentication for one realm.
pub struct DigestAuth {
    config: DigestConfig,
    secret: Zeroizing<[u8; 32]>,
    nonces: HashMap<String, Instant>,
    /// Nonces in the order they were issued (some already spent), to forget the oldest in O(1).
    nonce_order: std::collections::VecDeque<String>,
    /// Lockouts that started since the last [`DigestAuth::take_lockouts`].
    new_lockouts: Vec<String>,
    by_source: HashMap<IpAddr, Failures>,
    by_account: HashMap<String, Failures>,
    rng: aws_lc_rs::rand::SystemRandom,
}

impl core::fmt::Debug for DigestAuth {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("DigestAuth")
            .field("realm", &self.config.realm)
            .field("nonces", &self.nonces.len())
            .finish_non_exhaustive()
    }
}

/// The fields of an `Authorization: Digest ...` value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub realm: String,
    pub nonce: String,
    pub uri: String,
    pub response: String,
    pub algorithm: Option<String>,
    pub cnonce: Option<String>,
    pub qop: Option<String>,
    pub nc: Option<String>,
}

fn unquote(v: &[u8]) -> Option<String> {
    let s = if v.first() == Some(&b'"') {
        if grammar::quoted_len(v).ok()? != v.len() {
            return None;
        }
        let inner = &v[1..v.len() - 1];
        let mut out = Vec::with_capacity(inner.len());
        let mut i = 0;
        while i < inner.len() {
            if inner[i] == b'\\' && i + 1 < inner.len() {
                i += 1;
            }
            out.push(inner[i]);
            i += 1;
        }
        out
    } else {
        v.to_vec()
    };
    String::from_utf8(s).ok()
}

/// Why a `Digest k=v, ...` value could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ParamsError {
    /// Another scheme (or none).
    NotDigest,
    Malformed,
}

/// The parameters of a `Digest k=v, k="v", ...` value (challenge or credentials, RFC 7616
/// §3.3/§3.4): names lower-cased, values unquoted. A duplicated or empty parameter is
/// malformed.
pub(crate) fn digest_params(value: &[u8]) -> Result<Vec<(Vec<u8>, String)>, ParamsError> {
    let v = grammar::trim(value);
    let scheme_len = v.iter().take_while(|b| grammar::is_token(**b)).count();
    if !v[..scheme_len].eq_ignore_ascii_case(b"Digest") {
        return Err(ParamsError::NotDigest);
    }
    let rest = &v[scheme_len..];
    if rest.first().is_none_or(|b| !grammar::is_lws(*b)) {
        return Err(ParamsError::Malformed);
    }
    let mut out: Vec<(Vec<u8>, String)> = Vec::new();
    for item in grammar::split_list(rest).map_err(|_| ParamsError::Malformed)? {
        let eq = item
            .iter()
            .position(|b| *b == b'=')
            .ok_or(ParamsError::Malformed)?;
        let name = grammar::trim(&item[..eq]).to_ascii_lowercase();
        let val = grammar::trim(&item[eq + 1..]);
        if !grammar::all_token(&name) || val.is_empty() || out.iter().any(|(n, _)| *n == name) {
            return Err(ParamsError::Malformed);
        }
        let s = unquote(val).ok_or(ParamsError::Malformed)?;
        out.push((name, s));
    }
    Ok(out)
}

/// Parses `Digest k=v, k="v", ...` (RFC 7616 §3.4). Duplicated parameters, a scheme other than
/// Digest or missing required fields are errors.
pub fn parse_authorization(value: &[u8]) -> Option<Credentials> {
    let mut c = Credentials::default();
    for (name, s) in digest_params(value).ok()? {
        match &name[..] {
            b"username" => c.username = s,
            b"realm" => c.realm = s,
            b"nonce" => c.nonce = s,
            b"uri" => c.uri = s,
            b"response" => c.response = s,
            b"algorithm" => c.algorithm = Some(s),
            b"cnonce" => c.cnonce = Some(s),
            b"qop" => c.qop = Some(s),
            b"nc" => c.nc = Some(s),
            _ => {}
        }
    }
    if c.username.is_empty() || c.nonce.is_empty() || c.uri.is_empty() || c.response.is_empty() {
        return None;
    }
    Some(c)
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl DigestAuth {
    /// A realm's authenticator; `secret` keys the dummy responses for unknown users.
    pub fn new(config: DigestConfig) -> Result<Self, aws_lc_rs::error::Unspecified> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let mut secret = Zeroizing::new([0u8; 32]);
        rng.fill(&mut secret[..])?;
        Ok(DigestAuth {
            config,
            secret,
            nonces: HashMap::new(),
            nonce_order: std::collections::VecDeque::new(),
            new_lockouts: Vec::new(),
            by_source: HashMap::new(),
            by_account: HashMap::new(),
            rng,
        })
    }

    pub fn config(&self) -> &DigestConfig {
        &self.config
    }

    fn new_nonce(&mut self, now: Instant) -> String {
        // Forget the oldest issued nonces beyond the table size (constant time per nonce, so
        // a flood of unauthenticated requests cannot make each challenge costlier).
        while self.nonce_order.len() >= self.config.max_nonces.max(1) {
            if let Some(old) = self.nonce_order.pop_front() {
                self.nonces.remove(&old);
            }
        }
        let mut raw = [0u8; 24];
        // A failing system RNG leaves zeros; the nonce is still unique per table entry check.
        let _ = self.rng.fill(&mut raw);
        let n = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        self.nonce_order.push_back(n.clone());
        self.nonces.insert(n.clone(), now);
        n
    }

    /// The `WWW-Authenticate` / `Proxy-Authenticate` values to send: one challenge per
    /// algorithm, each with a fresh nonce.
    pub fn challenges(&mut self, now: Instant, stale: bool) -> Vec<String> {
        let algs = self.config.algorithms.clone();
        algs.into_iter()
            .map(|a| {
                let nonce = self.new_nonce(now);
                format!(
                    "Digest realm=\"{}\", nonce=\"{nonce}\", algorithm={}, qop=\"auth\"{}",
                    self.config.realm,
                    a.name(),
                    if stale { ", stale=true" } else { "" }
                )
            })
            .collect()
    }

    fn locked(map_entry: Option<&Failures>, now: Instant) -> bool {
        map_entry
            .and_then(|f| f.locked_until)
            .is_some_and(|t| now < t)
    }

    /// Lockouts that started since the last call ("source 192.0.2.1", "account alice"), for
    /// the caller to log once each.
    pub fn take_lockouts(&mut self) -> Vec<String> {
        std::mem::take(&mut self.new_lockouts)
    }

    fn fail(&mut self, now: Instant, source: IpAddr, account: &str) {
        // Failure records are bounded: beyond the cap, those neither locked nor recent go.
        const MAX_RECORDS: usize = 65_536;
        let window = self.config.failure_window;
        for map_len in [self.by_source.len(), self.by_account.len()] {
            if map_len >= MAX_RECORDS {
                let keep = |f: &Failures| {
                    f.locked_until.is_some_and(|t| now < t) || now.duration_since(f.since) <= window
                };
                self.by_source.retain(|_, f| keep(f));
                self.by_account.retain(|_, f| keep(f));
                if self.by_account.len() >= MAX_RECORDS {
                    self.by_account
                        .retain(|_, f| f.locked_until.is_some_and(|t| now < t));
                }
                if self.by_source.len() >= MAX_RECORDS {
                    self.by_source
                        .retain(|_, f| f.locked_until.is_some_and(|t| now < t));
                }
            }
        }
        let cfg = &self.config;
        let bump = |f: &mut Failures, max: u32| -> bool {
            if now.duration_since(f.since) > cfg.failure_window {
                *f = Failures {
                    count: 0,
                    since: now,
                    locked_until: None,
                };
            }
            f.count += 1;
            if f.count >= max {
                let started = f.locked_until.is_none_or(|t| now >= t);
                f.locked_until = Some(now + cfg.lockout);
                return started;
            }
            false
        };
        let fresh = Failures {
            count: 0,
            since: now,
            locked_until: None,
        };
        if bump(
            self.by_source.entry(source).or_insert(fresh),
            cfg.max_failures_per_source,
        ) {
            self.new_lockouts.push(format!("source {source}"));
        }
        let key: String = account.chars().take(128).collect();
        let printable: String = key
            .chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .take(64)
            .collect();
        if bump(
            self.by_account.entry(key).or_insert(fresh),
            cfg.max_failures_per_account,
        ) {
            self.new_lockouts.push(format!("account {printable:?}"));
        }
    }

    /// Verifies an `Authorization` (or `Proxy-Authorization`) value for a request with this
    /// method and Request-URI. `lookup(user, alg)` returns the user's HA1 for the algorithm, or
    /// `None` for an unknown user.
    pub fn verify(
        &mut self,
        now: Instant,
        source: IpAddr,
        method: &str,
        request_uri: &str,
        authorization: Option<&[u8]>,
        lookup: impl Fn(&str, Algorithm) -> Option<Zeroizing<String>>,
    ) -> Verdict {
        if Self::locked(self.by_source.get(&source), now) {
            return Verdict::LockedOut;
        }
        let Some(c) = authorization.and_then(parse_authorization) else {
            return Verdict::Challenge { stale: false };
        };
        if Self::locked(self.by_account.get(&c.username), now) {
            return Verdict::LockedOut;
        }
        let alg = match c.algorithm.as_deref() {
            None => Algorithm::Md5, // RFC 7616: absent means MD5
            Some(a) => match Algorithm::from_name(a.as_bytes()) {
                Some(a) => a,
                None => return Verdict::Challenge { stale: false },
            },
        };
        if !self.config.algorithms.contains(&alg)
            || c.realm != self.config.realm
            || c.qop.as_deref() != Some("auth")
            || c.uri != request_uri
        {
            self.fail(now, source, &c.username);
            return Verdict::Challenge { stale: false };
        }
        let (Some(cnonce), Some(nc)) = (c.cnonce.as_deref(), c.nc.as_deref()) else {
            self.fail(now, source, &c.username);
            return Verdict::Challenge { stale: false };
        };
        // Nonces are ours, short-lived and single-use: the first use must say nc=00000001.
        let issued = match self.nonces.get(&c.nonce) {
            Some(t) => *t,
            None => return Verdict::Challenge { stale: true },
        };
        if now.duration_since(issued) > self.config.nonce_lifetime {
            self.nonces.remove(&c.nonce);
            return Verdict::Challenge { stale: true };
        }
        if nc != "00000001" {
            self.fail(now, source, &c.username);
            return Verdict::Challenge { stale: false };
        }
        // Unknown users are checked against a secret dummy HA1, so the work and the answer are
        // the same as for a wrong password.
        let known = lookup(&c.username, alg);
        let ha1 = match &known {
            Some(h) => h.clone(),
            None => {
                let key = hmac::Key::new(hmac::HMAC_SHA256, &self.secret[..]);
                let tag = hmac::sign(&key, c.username.as_bytes());
                Zeroizing::new(alg.hex(tag.as_ref()))
            }
        };
        let expected = response(alg, &ha1, &c.nonce, nc, cnonce, method, &c.uri);
        // The nonce is spent whatever the outcome.
        self.nonces.remove(&c.nonce);
        if known.is_some()
            && ct_eq(
                expected.as_bytes(),
                c.response.to_ascii_lowercase().as_bytes(),
            )
        {
            self.by_account.remove(&c.username);
            return Verdict::Accepted { user: c.username };
        }
        self.fail(now, source, &c.username);
        Verdict::Challenge { stale: false }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7616 §3.9.1: the MD5 and SHA-256 examples.
    #[test]
    fn rfc7616_examples() {
        let (user, realm, pw) = ("Mufasa", "http-auth@example.org", "Circle of Life");
        let nonce = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
        let cnonce = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
        let r = |alg| {
            response(
                alg,
                &ha1(alg, user, realm, pw),
                nonce,
                "00000001",
                cnonce,
                "GET",
                "/dir/index.html",
            )
        };
        assert_eq!(r(Algorithm::Md5), "8ca523f5e9506fed4657c9700eebdbec");
        assert_eq!(
            r(Algorithm::Sha256),
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        );
    }

    fn nonce_of(ch: &str) -> String {
        let i = ch.find("nonce=\"").unwrap() + 7;
        ch[i..i + ch[i..].find('"').unwrap()].to_string()
    }

    fn authz(alg: Algorithm, user: &str, pw: &str, nonce: &str, nc: &str, uri: &str) -> String {
        let h = ha1(alg, user, "a.example", pw);
        let resp = response(alg, &h, nonce, nc, "c0ffee", "REGISTER", uri);
        format!(
            "Digest username=\"{user}\", realm=\"a.example\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{resp}\", algorithm={}, cnonce=\"c0ffee\", qop=auth, nc={nc}",
            alg.name()
        )
    }

    fn lookup(user: &str, alg: Algorithm) -> Option<Zeroizing<String>> {
        (user == "alice").then(|| ha1(alg, "alice", "a.example", "correct horse"))
    }

    #[test]
    fn challenge_response_single_use_and_stale() {
        let mut auth = DigestAuth::new(DigestConfig::new("a.example")).unwrap();
        let t0 = Instant::now();
        let src: IpAddr = "192.0.2.1".parse().unwrap();
        let ch = auth.challenges(t0, false);
        assert_eq!(ch.len(), 2);
        assert!(ch[0].contains("algorithm=SHA-256") && ch[1].contains("algorithm=MD5"));
        for (i, alg) in [Algorithm::Sha256, Algorithm::Md5].into_iter().enumerate() {
            let n = nonce_of(&ch[i]);
            let a = authz(
                alg,
                "alice",
                "correct horse",
                &n,
                "00000001",
                "sip:a.example",
            );
            let v = auth.verify(
                t0,
                src,
                "REGISTER",
                "sip:a.example",
                Some(a.as_bytes()),
                lookup,
            );
            assert_eq!(
                v,
                Verdict::Accepted {
                    user: "alice".into()
                }
            );
            // The same nonce again (replay, or a later nc): refused.
            let v = auth.verify(
                t0,
                src,
                "REGISTER",
                "sip:a.example",
                Some(a.as_bytes()),
                lookup,
            );
            assert_eq!(v, Verdict::Challenge { stale: true });
        }
        // An expired nonce is stale.
        let n = nonce_of(&auth.challenges(t0, false)[0]);
        let a = authz(
            Algorithm::Sha256,
            "alice",
            "correct horse",
            &n,
            "00000001",
            "sip:a.example",
        );
        let later = t0 + Duration::from_secs(31);
        let v = auth.verify(
            later,
            src,
            "REGISTER",
            "sip:a.example",
            Some(a.as_bytes()),
            lookup,
        );
        assert_eq!(v, Verdict::Challenge { stale: true });
        // The digest URI must be the Request-URI.
        let n = nonce_of(&auth.challenges(t0, false)[0]);
        let a = authz(
            Algorithm::Sha256,
            "alice",
            "correct horse",
            &n,
            "00000001",
            "sip:other.example",
        );
        let v = auth.verify(
            t0,
            src,
            "REGISTER",
            "sip:a.example",
            Some(a.as_bytes()),
            lookup,
        );
        assert_eq!(v, Verdict::Challenge { stale: false });
        assert!(
            auth.verify(t0, src, "REGISTER", "sip:a.example", None, lookup)
                == Verdict::Challenge { stale: false }
        );
        assert!(parse_authorization(b"Basic dXNlcjpwYXNz").is_none());
        assert!(parse_authorization(
            b"Digest username=\"a\", username=\"b\", nonce=x, uri=y, response=z"
        )
        .is_none());
    }

    #[test]
    fn unknown_users_look_like_wrong_passwords_and_guessing_locks_out() {
        let mut cfg = DigestConfig::new("a.example");
        cfg.max_failures_per_account = 5;
        cfg.max_failures_per_source = 8;
        let mut auth = DigestAuth::new(cfg).unwrap();
        let t0 = Instant::now();
        let src: IpAddr = "198.51.100.7".parse().unwrap();
        let attempt = |auth: &mut DigestAuth, user: &str, pw: &str, now: Instant, src: IpAddr| {
            let n = nonce_of(&auth.challenges(now, false)[0]);
            let a = authz(Algorithm::Sha256, user, pw, &n, "00000001", "sip:a.example");
            auth.verify(
                now,
                src,
                "REGISTER",
                "sip:a.example",
                Some(a.as_bytes()),
                lookup,
            )
        };
        // Unknown user and wrong password: the same answer.
        assert_eq!(
            attempt(&mut auth, "mallory", "x", t0, src),
            Verdict::Challenge { stale: false }
        );
        assert_eq!(
            attempt(&mut auth, "alice", "x", t0, src),
            Verdict::Challenge { stale: false }
        );
        // A password guesser against alice from other sources: locked after 5 failures.
        for i in 0..3u8 {
            let s = IpAddr::from([203, 0, 113, i]);
            assert_eq!(
                attempt(&mut auth, "alice", "guess", t0, s),
                Verdict::Challenge { stale: false }
            );
        }
        let s = IpAddr::from([203, 0, 113, 9]);
        assert_eq!(
            attempt(&mut auth, "alice", "guess", t0, s),
            Verdict::Challenge { stale: false }
        );
        // alice has 5 failures now: even the right password is refused during the lockout.
        assert_eq!(
            attempt(&mut auth, "alice", "correct horse", t0, s),
            Verdict::LockedOut
        );
        let after = t0 + Duration::from_secs(901);
        assert_eq!(
            attempt(&mut auth, "alice", "correct horse", after, s),
            Verdict::Accepted {
                user: "alice".into()
            }
        );
        // A source that sprays many accounts is locked by its own counter.
        let sprayer = IpAddr::from([192, 0, 2, 66]);
        for i in 0..8 {
            let v = attempt(&mut auth, &format!("user{i}"), "123456", after, sprayer);
            assert_eq!(v, Verdict::Challenge { stale: false });
        }
        assert_eq!(
            attempt(&mut auth, "alice", "correct horse", after, sprayer),
            Verdict::LockedOut
        );
    }
}
