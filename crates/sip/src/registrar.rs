//! Registrar and location service (RFC 3261 §10.3), sans-I/O. REGISTER requests for the
//! domains served are authenticated with digest (an unknown user is challenged exactly like a
//! known one), may only register the authenticated user's own address of record, and add,
//! refresh or remove bindings with expiry. `lookup` gives the live contacts of an AOR.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use crate::digest::{Algorithm, DigestAuth, Verdict};
use crate::grammar;
use crate::message::{HeaderKind, SipMessage};
use crate::response::build_response;

/// Registrar limits.
#[derive(Debug, Clone)]
pub struct RegistrarConfig {
    pub domains: Vec<String>,
    pub min_expires: u32,
    pub max_expires: u32,
    pub default_expires: u32,
    pub max_bindings_per_aor: usize,
}

impl Default for RegistrarConfig {
    fn default() -> Self {
        RegistrarConfig {
            domains: Vec::new(),
            min_expires: 60,
            max_expires: 3600,
            default_expires: 3600,
            max_bindings_per_aor: 10,
        }
    }
}

/// A contact bound to an address of record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The Contact URI (without angle brackets), as sent.
    pub contact: String,
    pub expires_at: Instant,
    pub call_id: String,
    pub cseq: u32,
    /// Where the REGISTER came from (for NAT and for flows).
    pub source: IpAddr,
}

/// The registrar of one or more domains.
#[derive(Debug)]
pub struct Registrar {
    config: RegistrarConfig,
    salt: [u8; 16],
    bindings: HashMap<String, Vec<Binding>>,
}

/// `user@host` of a SIP URI, lower-case host.
fn aor_of(uri: &grammar::Uri<'_>) -> Option<String> {
    let user = std::str::from_utf8(uri.user?).ok()?;
    let host = std::str::from_utf8(uri.host).ok()?.to_ascii_lowercase();
    Some(format!("{user}@{host}"))
}

impl Registrar {
    pub fn new(config: RegistrarConfig) -> Self {
        let mut salt = [0u8; 16];
        // Without a working system RNG the tags are still unique per Call-ID.
        let _ =
            aws_lc_rs::rand::SecureRandom::fill(&aws_lc_rs::rand::SystemRandom::new(), &mut salt);
        Registrar {
            config,
            salt,
            bindings: HashMap::new(),
        }
    }

    fn tag_for(&self, call_id: &[u8]) -> String {
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        ctx.update(&self.salt);
        ctx.update(call_id);
        ctx.finish().as_ref()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// The live contacts of an address of record (`user@domain`).
    pub fn lookup(&self, now: Instant, aor: &str) -> Vec<&Binding> {
        self.bindings
            .get(aor)
            .map(|v| v.iter().filter(|b| b.expires_at > now).collect())
            .unwrap_or_default()
    }

    /// Every live contact URI.
    pub fn contacts(&self, now: Instant) -> impl Iterator<Item = &str> + '_ {
        self.bindings
            .values()
            .flatten()
            .filter(move |b| b.expires_at > now)
            .map(|b| b.contact.as_str())
    }

    /// Drops expired bindings (call now and then).
    pub fn purge(&mut self, now: Instant) {
        for v in self.bindings.values_mut() {
            v.retain(|b| b.expires_at > now);
        }
        self.bindings.retain(|_, v| !v.is_empty());
    }

    /// Handles a REGISTER; returns the response bytes.
    pub fn handle_register(
        &mut self,
        now: Instant,
        source: IpAddr,
        req: &SipMessage<'_>,
        auth: &mut DigestAuth,
        credentials: impl Fn(&str, Algorithm) -> Option<Zeroizing<String>>,
    ) -> Vec<u8> {
        // A To tag unique to this registration (RFC 3261 §19.3), stable across retransmissions.
        let tag = self.tag_for(req.call_id().unwrap_or_default());
        let tag = tag.as_str();
        let reply =
            |code: u16, extra: &[(&str, String)]| build_response(req, code, Some(tag), extra, None);
        if req.method() != Some("REGISTER") {
            return reply(405, &[("Allow", "REGISTER".into())]);
        }
        if req.validate_request().is_err() {
            return reply(400, &[]);
        }
        let Some(to) = req.to() else {
            return reply(400, &[]);
        };
        let Some(aor) = aor_of(&to.uri).filter(|_| to.uri.is_sip()) else {
            return reply(404, &[]);
        };
        let domain = aor.rsplit('@').next().unwrap_or_default().to_string();
        if !self
            .config
            .domains
            .iter()
            .any(|d| d.eq_ignore_ascii_case(&domain))
        {
            return reply(403, &[]);
        }
        let request_uri = match req.start {
            crate::message::StartLine::Request { uri, .. } => {
                String::from_utf8_lossy(uri).into_owned()
            }
            _ => return reply(400, &[]),
        };
        let authz = req.header_named("Authorization").map(|h| h.raw_value);
        let user = match auth.verify(now, source, "REGISTER", &request_uri, authz, credentials) {
            Verdict::Accepted { user } => user,
            Verdict::Challenge { stale } => {
                let ch = auth.challenges(now, stale);
                let extra: Vec<(&str, String)> =
                    ch.into_iter().map(|c| ("WWW-Authenticate", c)).collect();
                return reply(401, &extra);
            }
            Verdict::LockedOut => return reply(403, &[]),
        };
        // Only one's own address of record.
        if aor.split('@').next() != Some(user.as_str()) {
            return reply(403, &[]);
        }
        let call_id = req
            .call_id()
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .unwrap_or_default();
        let cseq = req.cseq().map(|c| c.number).unwrap_or(0);
        let header_expires = req.header_named("Expires").and_then(|h| {
            std::str::from_utf8(grammar::trim(&h.value))
                .ok()?
                .parse::<u32>()
                .ok()
        });
        let contacts: Vec<&crate::message::Header<'_>> = req
            .headers
            .iter()
            .filter(|h| h.kind == HeaderKind::Contact)
            .collect();
        let list = self.bindings.entry(aor.clone()).or_default();
        list.retain(|b| b.expires_at > now);
        // RFC 3261 §10.3 step 6: "Contact: *" with Expires 0 removes every binding.
        if contacts.len() == 1 && grammar::trim(&contacts[0].value) == b"*" {
            if header_expires != Some(0) {
                return reply(400, &[]);
            }
            list.clear();
            return reply(200, &[]);
        }
        for h in contacts {
            let Ok(items) = grammar::split_list(&h.value) else {
                return reply(400, &[]);
            };
            for item in items {
                let Ok(na) = grammar::name_addr(item) else {
                    return reply(400, &[]);
                };
                let contact = String::from_utf8_lossy(na.uri.raw).into_owned();
                let expires = na
                    .param("expires")
                    .and_then(|v| std::str::from_utf8(v).ok()?.parse::<u32>().ok())
                    .or(header_expires)
                    .unwrap_or(self.config.default_expires);
                if expires != 0 && expires < self.config.min_expires {
                    return reply(423, &[("Min-Expires", self.config.min_expires.to_string())]);
                }
                let expires = expires.min(self.config.max_expires);
                let existing = list.iter().position(|b| b.contact == contact);
                if let Some(i) = existing {
                    // Step 7: a stale or replayed REGISTER of the same Call-ID is refused.
                    if list[i].call_id == call_id && list[i].cseq >= cseq {
                        return reply(400, &[]);
                    }
                    if expires == 0 {
                        list.remove(i);
                        continue;
                    }
                    list[i].expires_at = now + Duration::from_secs(expires as u64);
                    list[i].call_id = call_id.clone();
                    list[i].cseq = cseq;
                    list[i].source = source;
                } else if expires != 0 {
                    if list.len() >= self.config.max_bindings_per_aor {
                        return reply(403, &[]);
                    }
                    list.push(Binding {
                        contact,
                        expires_at: now + Duration::from_secs(expires as u64),
                        call_id: call_id.clone(),
                        cseq,
                        source,
                    });
                }
            }
        }
        let current: Vec<(&str, String)> = list
            .iter()
            .map(|b| {
                let left = b.expires_at.saturating_duration_since(now).as_secs();
                ("Contact", format!("<{}>;expires={left}", b.contact))
            })
            .collect();
        reply(200, &current)
    }
}
