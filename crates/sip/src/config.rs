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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
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
    #[serde(rename = "domain")]
    pub domains: Vec<Domain>,
    #[serde(default)]
    pub auth: Auth,
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

    fn validate(&self) -> Result<(), ConfigError> {
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
        if self.domains.is_empty() {
            return Err(invalid("domain", "at least one domain is needed"));
        }
        let a = &self.auth;
        if !(1..=300).contains(&a.nonce_lifetime_secs) {
            return Err(invalid("auth.nonce_lifetime_secs", "must be 1..=300"));
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
                    _ => {
                        return Err(invalid(
                            ukey.clone(),
                            "give exactly one of password or ha1_sha256",
                        ))
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
