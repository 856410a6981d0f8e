//! The proxy's configuration (TOML): listeners, TLS, domains with users and their encryption
//! policy, digest limits. [`ProxyConfig::from_toml`] refuses unknown keys (naming them) and any
//! configuration that would carry `a=crypto` keys over UDP or TCP: SDES keys travel only over
//! TLS.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::sdp::EncryptionPolicy;

/// Errors loading a configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// TOML syntax, an unknown key or a wrongly typed value (the message names the key).
    #[error("{0}")]
    Syntax(String),
    /// A value that parses but cannot work, with the key it is under.
    #[error("{key}: {reason}")]
    Invalid { key: String, reason: String },
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    Udp,
    Tcp,
    Tls,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyName {
    Mandatory,
    Optional,
    Off,
}

impl From<PolicyName> for EncryptionPolicy {
    fn from(p: PolicyName) -> Self {
        match p {
            PolicyName::Mandatory => EncryptionPolicy::Mandatory,
            PolicyName::Optional => EncryptionPolicy::Optional,
            PolicyName::Off => EncryptionPolicy::Off,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    pub transport: TransportKind,
    pub address: SocketAddr,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CA whose client certificates are accepted (mutual TLS); none: no client certificates.
    pub client_ca: Option<PathBuf>,
}

/// A user; exactly one of `password`, `ha1_sha256` (with `ha1_md5` optionally beside it).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub name: String,
    pub password: Option<String>,
    pub ha1_sha256: Option<String>,
    pub ha1_md5: Option<String>,
    /// Overrides the domain's policy for this account.
    pub encryption: Option<PolicyName>,
    /// A static location binding (a SIP URI that never expires), e.g. for a PBX or test UAS;
    /// a user with a static contact needs no password.
    pub contact: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Domain {
    pub name: String,
    pub encryption: PolicyName,
    #[serde(default, rename = "user")]
    pub users: Vec<User>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    #[serde(default = "d_nonce")]
    pub nonce_lifetime_secs: u64,
    #[serde(default = "d_src")]
    pub max_failures_per_source: u32,
    #[serde(default = "d_acct")]
    pub max_failures_per_account: u32,
    #[serde(default = "d_lock")]
    pub lockout_secs: u64,
    /// Digest algorithms offered, in order of preference (RFC 8760): "sha-256", "md5".
    #[serde(default = "d_algs")]
    pub algorithms: Vec<AlgorithmName>,
    /// Challenge out-of-dialog requests (INVITE, MESSAGE, ...) from callers with 407. Turning
    /// this off makes the proxy route anyone's calls: only for benchmarks and closed labs.
    #[serde(default = "d_true")]
    pub authenticate_calls: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum AlgorithmName {
    #[serde(rename = "sha-256", alias = "SHA-256")]
    Sha256,
    #[serde(rename = "md5", alias = "MD5")]
    Md5,
}

impl From<AlgorithmName> for crate::digest::Algorithm {
    fn from(a: AlgorithmName) -> Self {
        match a {
            AlgorithmName::Sha256 => crate::digest::Algorithm::Sha256,
            AlgorithmName::Md5 => crate::digest::Algorithm::Md5,
        }
    }
}

fn d_algs() -> Vec<AlgorithmName> {
    vec![AlgorithmName::Sha256, AlgorithmName::Md5]
}
fn d_true() -> bool {
    true
}

fn d_nonce() -> u64 {
    30
}
fn d_src() -> u32 {
    10
}
fn d_acct() -> u32 {
    5
}
fn d_lock() -> u64 {
    900
}

impl Default for Auth {
    fn default() -> Self {
        Auth {
            nonce_lifetime_secs: d_nonce(),
            max_failures_per_source: d_src(),
            max_failures_per_account: d_acct(),
            lockout_secs: d_lock(),
            algorithms: d_algs(),
            authenticate_calls: true,
        }
    }
}

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    #[serde(rename = "listen")]
    pub listeners: Vec<Listen>,
    pub tls: Option<Tls>,
    #[serde(rename = "domain", default)]
    pub domains: Vec<Domain>,
    /// Static routes for domains that are not ours (a peer provider, a gateway, an upstream).
    #[serde(rename = "route", default)]
    pub routes: Vec<Route>,
    /// Trunks: peers whose out-of-dialog requests are not digest-challenged, identified by
    /// their source address (and, over TLS, by the certificate the transport verified).
    #[serde(rename = "trusted", default)]
    pub trusted: Vec<Trusted>,
    #[serde(default)]
    pub auth: Auth,
    #[serde(default)]
    pub limits: Limits,
    pub metrics: Option<Metrics>,
}

/// `[[route]]`: requests whose Request-URI is in `domain` (not one of ours) go to `next_hop`,
/// with the Request-URI unchanged. `domain = "*"` matches every domain that is not ours and
/// has no route of its own (a default route, e.g. a voice gateway's provider).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub domain: String,
    /// A sip: or sips: URI with an IP address, e.g. `sip:192.0.2.1:5061;transport=tls`.
    pub next_hop: String,
    /// The encryption policy calls to this domain must meet (default: off, i.e. only the
    /// caller's own policy applies).
    pub encryption: Option<PolicyName>,
}

/// `[[trusted]]`: a trunk. Its out-of-dialog requests are routed without a digest challenge,
/// but only for callers (From) in `domains` (`"*"`: any domain that is not ours).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trusted {
    /// A name for logs and for the SPG's party check (e.g. the gateway's certificate name).
    pub name: String,
    pub addresses: Vec<std::net::IpAddr>,
    pub domains: Vec<String>,
}

/// Prometheus text-format metrics over plain HTTP (`GET /metrics`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    pub address: SocketAddr,
}

/// Resource limits of the transports and the transaction layer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Open TCP/TLS connections in all (accepted and opened).
    pub max_connections: usize,
    /// Open TCP/TLS connections from one IP address.
    pub max_connections_per_ip: usize,
    /// A connection without traffic for this long is closed.
    pub idle_timeout_secs: u64,
    /// A TLS handshake (or the first message on TCP) must finish within this.
    pub handshake_timeout_secs: u64,
    /// Live transactions; beyond it new requests get 503.
    pub max_transactions: usize,
    /// The largest SIP message accepted on any transport.
    pub max_message_bytes: usize,
    /// Kernel receive and send buffers of each UDP listener: bursts wait there instead of
    /// being dropped (the default 208 KiB of Linux loses datagrams at a few thousand calls/s).
    pub udp_buffer_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 4096,
            max_connections_per_ip: 64,
            idle_timeout_secs: 300,
            handshake_timeout_secs: 10,
            max_transactions: 1_000_000,
            max_message_bytes: 65_535,
            udp_buffer_bytes: 4 << 20,
        }
    }
}

fn sdes_over_plain(l: &Listen) -> String {
    format!(
        "SRTP keys (a=crypto) may travel only over TLS, but the proxy also listens on {} {}: remove that listener or set encryption = \"off\"",
        format!("{:?}", l.transport).to_lowercase(),
        l.address
    )
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

impl ProxyConfig {
    /// Parses and validates a configuration.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let cfg: ProxyConfig =
            toml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks a configuration built in code (from_toml calls it too).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.listeners.is_empty() {
            return Err(invalid("listen", "at least one listener is needed"));
        }
        let has_tls = self
            .listeners
            .iter()
            .any(|l| l.transport == TransportKind::Tls);
        if has_tls && self.tls.is_none() {
            return Err(invalid("tls", "a TLS listener needs [tls] cert and key"));
        }
        let plain: Vec<&Listen> = self
            .listeners
            .iter()
            .filter(|l| l.transport != TransportKind::Tls)
            .collect();
        if self.domains.is_empty() && self.routes.is_empty() {
            return Err(invalid(
                "domain",
                "at least one domain (or, for a routing-only proxy, one route) is needed",
            ));
        }
        let domain_ok = |d: &str| {
            !d.is_empty()
                && d.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        };
        let mut routed: Vec<String> = Vec::new();
        for (i, r) in self.routes.iter().enumerate() {
            let key = format!("route[{i}]");
            let d = r.domain.to_ascii_lowercase();
            if d != "*" && !domain_ok(&d) {
                return Err(invalid(
                    format!("{key}.domain"),
                    "not a domain name or \"*\"",
                ));
            }
            if self.domains.iter().any(|x| x.name.eq_ignore_ascii_case(&d)) {
                return Err(invalid(
                    format!("{key}.domain"),
                    format!("{d} is one of our own domains"),
                ));
            }
            if routed.contains(&d) {
                return Err(invalid(
                    format!("{key}.domain"),
                    format!("{d} routed twice"),
                ));
            }
            routed.push(d);
            let ok = crate::grammar::uri(r.next_hop.as_bytes()).is_ok_and(|uri| {
                uri.is_sip()
                    && std::str::from_utf8(uri.host).is_ok_and(|h| {
                        h.trim_start_matches('[')
                            .trim_end_matches(']')
                            .parse::<std::net::IpAddr>()
                            .is_ok()
                    })
            });
            if !ok {
                return Err(invalid(
                    format!("{key}.next_hop"),
                    "a sip: or sips: URI with an IP address (no DNS here)",
                ));
            }
            if r.encryption.is_some_and(|p| p != PolicyName::Off) && !plain.is_empty() {
                return Err(invalid(
                    format!("{key}.encryption"),
                    sdes_over_plain(plain[0]),
                ));
            }
        }
        for (i, t) in self.trusted.iter().enumerate() {
            let key = format!("trusted[{i}]");
            if t.name.is_empty() {
                return Err(invalid(format!("{key}.name"), "must not be empty"));
            }
            if t.addresses.is_empty() {
                return Err(invalid(format!("{key}.addresses"), "at least one address"));
            }
            if t.domains.is_empty() {
                return Err(invalid(
                    format!("{key}.domains"),
                    "at least one domain (\"*\" for any)",
                ));
            }
            for d in &t.domains {
                if d != "*" && !domain_ok(&d.to_ascii_lowercase()) {
                    return Err(invalid(
                        format!("{key}.domains"),
                        format!("{d:?} is not a domain"),
                    ));
                }
            }
            if let Some(o) = self.trusted[..i]
                .iter()
                .find(|o| o.addresses.iter().any(|a| t.addresses.contains(a)))
            {
                return Err(invalid(
                    format!("{key}.addresses"),
                    format!("an address of {} is also an address of {}", t.name, o.name),
                ));
            }
        }
        let a = &self.auth;
        if !(1..=300).contains(&a.nonce_lifetime_secs) {
            return Err(invalid("auth.nonce_lifetime_secs", "must be 1..=300"));
        }
        let l = &self.limits;
        if l.max_connections == 0 || l.max_connections_per_ip == 0 || l.max_transactions == 0 {
            return Err(invalid("limits", "limits must be at least 1"));
        }
        if !(1_024..=1_048_576).contains(&l.max_message_bytes) {
            return Err(invalid(
                "limits.max_message_bytes",
                "must be 1024..=1048576",
            ));
        }
        if l.idle_timeout_secs == 0 || l.handshake_timeout_secs == 0 {
            return Err(invalid("limits", "timeouts must be at least 1 s"));
        }
        if a.algorithms.is_empty() {
            return Err(invalid(
                "auth.algorithms",
                "at least one of \"sha-256\", \"md5\"",
            ));
        }
        if a.max_failures_per_source == 0 || a.max_failures_per_account == 0 {
            return Err(invalid("auth.max_failures_*", "must be at least 1"));
        }
        let mut names: Vec<String> = Vec::new();
        for (i, d) in self.domains.iter().enumerate() {
            let key = format!("domain[{i}]");
            let name = d.name.to_ascii_lowercase();
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
            {
                return Err(invalid(format!("{key}.name"), "not a domain name"));
            }
            if names.contains(&name) {
                return Err(invalid(
                    format!("{key}.name"),
                    format!("domain {name} given twice"),
                ));
            }
            names.push(name.clone());
            let mut users: Vec<&str> = Vec::new();
            for (j, u) in d.users.iter().enumerate() {
                let ukey = format!("{key}.user[{j}]");
                if u.name.is_empty()
                    || u.name
                        .bytes()
                        .any(|b| b.is_ascii_whitespace() || b == b'@' || b == b':')
                {
                    return Err(invalid(format!("{ukey}.name"), "not a user name"));
                }
                if users.contains(&u.name.as_str()) {
                    return Err(invalid(
                        format!("{ukey}.name"),
                        format!("user {} given twice", u.name),
                    ));
                }
                users.push(&u.name);
                match (&u.password, &u.ha1_sha256) {
                    (Some(_), None) | (None, Some(_)) => {}
                    (None, None) if u.contact.is_some() => {}
                    _ => {
                        return Err(invalid(
                            ukey.clone(),
                            "give exactly one of password or ha1_sha256 (or only a static contact)",
                        ))
                    }
                }
                if let Some(c) = &u.contact {
                    let ok = crate::grammar::uri(c.as_bytes()).is_ok_and(|uri| {
                        uri.is_sip()
                            && std::str::from_utf8(uri.host).is_ok_and(|h| {
                                h.trim_start_matches('[')
                                    .trim_end_matches(']')
                                    .parse::<std::net::IpAddr>()
                                    .is_ok()
                            })
                    });
                    if !ok {
                        return Err(invalid(
                            format!("{ukey}.contact"),
                            "a sip: or sips: URI with an IP address (no DNS here)",
                        ));
                    }
                }
                if u.ha1_sha256.as_deref().is_some_and(|h| !is_hex(h, 64)) {
                    return Err(invalid(format!("{ukey}.ha1_sha256"), "64 hex digits"));
                }
                if u.ha1_md5.as_deref().is_some_and(|h| !is_hex(h, 32)) {
                    return Err(invalid(format!("{ukey}.ha1_md5"), "32 hex digits"));
                }
                let policy = u.encryption.unwrap_or(d.encryption);
                if policy != PolicyName::Off && !plain.is_empty() {
                    return Err(invalid(
                        format!("{ukey}.encryption"),
                        sdes_over_plain(plain[0]),
                    ));
                }
            }
            if d.encryption != PolicyName::Off && !plain.is_empty() {
                return Err(invalid(
                    format!("{key}.encryption"),
                    sdes_over_plain(plain[0]),
                ));
            }
        }
        Ok(())
    }

    /// The policy of an account (its own, or its domain's).
    pub fn policy(&self, domain: &str, user: &str) -> Option<EncryptionPolicy> {
        let d = self
            .domains
            .iter()
            .find(|d| d.name.eq_ignore_ascii_case(domain))?;
        let p = d
            .users
            .iter()
            .find(|u| u.name == user)
            .and_then(|u| u.encryption)
            .unwrap_or(d.encryption);
        Some(p.into())
    }
}
