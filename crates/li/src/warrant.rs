//! The warrant book: which targets may be intercepted, when, how and to where, and who said so.
//!
//! A warrant names one or more targets ([`TargetId`]: a SIP address of record, an E.164 number
//! or a voice gateway), a time window (`start_ms` inclusive, `end_ms` exclusive, Unix ms), what is
//! delivered ([`Delivery`]: IRI only, or IRI and content) and the delivery destination, which
//! must be on the book's allow-list. A warrant is created by one person and becomes effective only
//! after **two approvals by two other, distinct people** (dual control); it can be deactivated at
//! any moment by anyone allowed to, at once and for good.
//!
//! ```text
//!   create ──► PendingApproval ──(2nd approval)──► Scheduled ──(start_ms)──► Active ──(end_ms)──► Expired
//!                    │                                 │                       │
//!                    └──────────── deactivate ─────────┴───────────────────────┴──► Deactivated
//! ```
//!
//! The book does no I/O: every time-dependent call takes `now_ms`; persistence is
//! [`WarrantBook::to_json`] / [`WarrantBook::from_json`], and loading re-checks every invariant
//! so that a hand-edited file (say, a second approval by the same person) is refused.
//!
//! Identities (creator, approvers, who deactivated) are compared **case-insensitively**: if
//! the identity provider does not distinguish `Alice` from `alice`, neither may dual control.

use std::collections::BTreeMap;
use std::fmt;

use aws_lc_rs::digest;
use serde::{Deserialize, Serialize};

/// Longest LIID accepted, in octets.
///
/// The LIID travels in every handover PDU: ETSI TS 102 232-1 (`PSHeader.lawfulInterceptionIdentifier`)
/// takes it from `LawfulInterceptionIdentifier ::= OCTET STRING (SIZE (1..25))` (HI2Operations,
/// ETSI TS 101 671; the same bound as `LIID` in TS 103 280 Common-Parameters). A longer LIID
/// could be stored here but not delivered, so it is refused at creation. The characters are
/// restricted to `[A-Za-z0-9._-]` so that the LIID is safe in logs, file names and URLs.
pub const MAX_LIID_LEN: usize = 25;

/// Default longest window (`end_ms - start_ms`): 90 days.
pub const DEFAULT_MAX_WINDOW_MS: u64 = 90 * 24 * 60 * 60 * 1000;

/// Longest target or party string parsed (longer ones are refused, or simply don't match).
pub const MAX_URI_LEN: usize = 1024;

/// Longest identity (creator, approver) accepted.
pub const MAX_IDENTITY_LEN: usize = 128;

/// Longest gateway name.
pub const MAX_GATEWAY_LEN: usize = 64;

/// The `format` tag of a persisted book.
const FORMAT: &str = "voxgate-warrants-v1";

const XID_DOMAIN: &[u8] = b"voxgate-xid-v1\0";

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Why a warrant operation was refused. Every variant names the LIID it is about (when there is
/// one) and the offending value (clipped to 80 characters: the input may be hostile).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WarrantError {
    #[error("no warrant with LIID {liid:?}")]
    UnknownLiid { liid: String },
    #[error("a warrant with LIID {liid:?} already exists")]
    DuplicateLiid { liid: String },
    #[error("LIID {liid:?} is not valid: {reason}")]
    BadLiid { liid: String, reason: String },
    #[error("warrant {liid:?} names no target")]
    NoTargets { liid: String },
    #[error("{}target {target:?} is not valid: {reason}", in_warrant(.liid))]
    BadTarget {
        /// Empty when the target was parsed outside a warrant ([`TargetId::parse`]).
        liid: String,
        target: String,
        reason: String,
    },
    #[error("warrant {liid:?}: bad time window: {reason}")]
    BadWindow { liid: String, reason: String },
    #[error(
        "warrant {liid:?}: a window of {window_ms} ms is longer than the maximum of {max_ms} ms"
    )]
    WindowTooLong {
        liid: String,
        window_ms: u64,
        max_ms: u64,
    },
    #[error("warrant {liid:?}: destination {destination:?} is not on the allow-list")]
    DestinationNotAllowed { liid: String, destination: String },
    #[error("warrant {liid:?}: {approver:?} has already approved it; the second approval must come from someone else")]
    SameApproverTwice { liid: String, approver: String },
    #[error("warrant {liid:?}: {creator:?} created it and cannot approve it")]
    CreatorCannotApprove { liid: String, creator: String },
    #[error("warrant {liid:?} already has its two approvals")]
    AlreadyApproved { liid: String },
    #[error("warrant {liid:?} cannot be approved: it is {status}")]
    NotApprovable { liid: String, status: Status },
    #[error("warrant {liid:?} is already deactivated")]
    AlreadyDeactivated { liid: String },
    #[error("{}identity {identity:?} is not valid: {reason}", in_warrant(.liid))]
    BadIdentity {
        liid: String,
        identity: String,
        reason: String,
    },
    #[error("the warrant book is corrupt: {0}")]
    Corrupt(String),
}

fn in_warrant(liid: &str) -> String {
    if liid.is_empty() {
        String::new()
    } else {
        format!("warrant {liid:?}: ")
    }
}

impl WarrantError {
    /// A stable snake_case identifier, for the API's JSON errors.
    pub fn code(&self) -> &'static str {
        match self {
            WarrantError::UnknownLiid { .. } => "unknown_liid",
            WarrantError::DuplicateLiid { .. } => "duplicate_liid",
            WarrantError::BadLiid { .. } => "bad_liid",
            WarrantError::NoTargets { .. } => "no_targets",
            WarrantError::BadTarget { .. } => "bad_target",
            WarrantError::BadWindow { .. } => "bad_window",
            WarrantError::WindowTooLong { .. } => "window_too_long",
            WarrantError::DestinationNotAllowed { .. } => "destination_not_allowed",
            WarrantError::SameApproverTwice { .. } => "same_approver_twice",
            WarrantError::CreatorCannotApprove { .. } => "creator_cannot_approve",
            WarrantError::AlreadyApproved { .. } => "already_approved",
            WarrantError::NotApprovable { .. } => "not_approvable",
            WarrantError::AlreadyDeactivated { .. } => "already_deactivated",
            WarrantError::BadIdentity { .. } => "bad_identity",
            WarrantError::Corrupt(_) => "corrupt",
        }
    }

    /// The HTTP status the API answers with: 404 unknown LIID; 409 a conflict with the book's
    /// state (duplicate LIID, already approved or deactivated, not approvable in its state:
    /// expired or deactivated); 422 a request that does not validate; 403 a dual-control rule
    /// broken (same approver twice, the creator approving, an unusable identity); 500 a corrupt
    /// stored book.
    pub fn http_status(&self) -> u16 {
        match self {
            WarrantError::UnknownLiid { .. } => 404,
            WarrantError::DuplicateLiid { .. }
            | WarrantError::AlreadyApproved { .. }
            | WarrantError::AlreadyDeactivated { .. }
            | WarrantError::NotApprovable { .. } => 409,
            WarrantError::BadLiid { .. }
            | WarrantError::NoTargets { .. }
            | WarrantError::BadTarget { .. }
            | WarrantError::BadWindow { .. }
            | WarrantError::WindowTooLong { .. }
            | WarrantError::DestinationNotAllowed { .. } => 422,
            WarrantError::SameApproverTwice { .. }
            | WarrantError::CreatorCannotApprove { .. }
            | WarrantError::BadIdentity { .. } => 403,
            WarrantError::Corrupt(_) => 500,
        }
    }
}

/// At most 80 characters of untrusted text, for error messages.
fn clip(s: &str) -> String {
    const MAX: usize = 80;
    match s.char_indices().nth(MAX) {
        None => s.to_string(),
        Some((i, _)) => format!("{}…", &s[..i]),
    }
}

// ---------------------------------------------------------------------------------------------
// Targets
// ---------------------------------------------------------------------------------------------

/// What a warrant names, in canonical form (so that derived equality is the right equality).
///
/// - `SipUri`: a SIP or SIPS address of record. The host is lower-cased (hosts compare
///   case-insensitively) and a trailing dot dropped; the user keeps its case (RFC 3261 19.1.4),
///   with `%XX` escapes of unreserved characters decoded and other escapes upper-cased, and a
///   user that is a global number (`+1-555-0100`) reduced to `+` and digits. Port, parameters,
///   headers, password and display name are ignored; `sip:` and `sips:` name the same target.
/// - `Tel`: an E.164 number, `+` and 3 to 15 digits (visual separators `-`, `.`, `(`, `)` and
///   space removed; `tel:` parameters ignored).
/// - `Gateway`: a voice gateway's configured name (`[A-Za-z0-9._-]`, 1 to 64), lower-cased.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum TargetId {
    SipUri { user: String, host: String },
    Tel(String),
    Gateway(String),
}

/// How a target took part in a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchedAs {
    Caller,
    Callee,
    Gateway,
}

/// Who is in a call, as the signalling shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallParties {
    /// A SIP or tel URI as seen in From (raw: display name, brackets and parameters allowed).
    pub caller: Option<String>,
    /// The Request-URI or To (raw).
    pub callee: Option<String>,
    /// Names of the voice gateways the call went through.
    pub gateways: Vec<String>,
}

/// [`CallParties`] with the URIs parsed once (an unparseable URI is `None`: it matches nothing).
struct ParsedParties<'a> {
    caller: Option<TargetId>,
    callee: Option<TargetId>,
    gateways: &'a [String],
}

impl<'a> ParsedParties<'a> {
    fn new(p: &'a CallParties) -> Self {
        let parse = |s: &Option<String>| s.as_deref().and_then(|s| parse_target(s).ok());
        ParsedParties {
            caller: parse(&p.caller),
            callee: parse(&p.callee),
            gateways: &p.gateways,
        }
    }
}

impl TargetId {
    /// Parses `sip:…`, `sips:…`, `tel:…`, `+digits` or `gateway:NAME` (a display name and
    /// angle brackets around a URI are allowed and ignored). A SIP target must name a user.
    pub fn parse(input: &str) -> Result<TargetId, WarrantError> {
        parse_target(input).map_err(|reason| WarrantError::BadTarget {
            liid: String::new(),
            target: clip(input),
            reason,
        })
    }

    /// Whether this target takes part in the call, and how: as the caller, the callee (checked
    /// in that order) or a gateway. A `Tel` target also matches a SIP URI whose user part is
    /// the same E.164 number (`sip:+15550100@a.example;user=phone`); `user=phone` is not
    /// required, since many user agents leave it out, while a user starting with `+` followed
    /// only by digits and visual separators is a global number in any case. Unparseable URIs
    /// match nothing.
    pub fn matches(&self, parties: &CallParties) -> Option<MatchedAs> {
        self.matches_parsed(&ParsedParties::new(parties))
    }

    fn matches_parsed(&self, p: &ParsedParties<'_>) -> Option<MatchedAs> {
        if let TargetId::Gateway(name) = self {
            return p
                .gateways
                .iter()
                .any(|g| g.trim().eq_ignore_ascii_case(name))
                .then_some(MatchedAs::Gateway);
        }
        if p.caller.as_ref().is_some_and(|c| self.matches_uri(c)) {
            Some(MatchedAs::Caller)
        } else if p.callee.as_ref().is_some_and(|c| self.matches_uri(c)) {
            Some(MatchedAs::Callee)
        } else {
            None
        }
    }

    fn matches_uri(&self, party: &TargetId) -> bool {
        match (self, party) {
            (TargetId::SipUri { user, host }, TargetId::SipUri { user: pu, host: ph }) => {
                user == pu && host == ph
            }
            (TargetId::Tel(n), TargetId::Tel(pn)) => n == pn,
            (TargetId::Tel(n), TargetId::SipUri { user, .. }) => {
                e164_in_user(user).as_deref() == Some(n.as_str())
            }
            _ => false,
        }
    }
}

impl fmt::Display for TargetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetId::SipUri { user, host } => write!(f, "sip:{user}@{host}"),
            TargetId::Tel(n) => write!(f, "tel:{n}"),
            TargetId::Gateway(g) => write!(f, "gateway:{g}"),
        }
    }
}

impl std::str::FromStr for TargetId {
    type Err = WarrantError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TargetId::parse(s)
    }
}

impl TryFrom<String> for TargetId {
    type Error = WarrantError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        TargetId::parse(&s)
    }
}

impl From<TargetId> for String {
    fn from(t: TargetId) -> String {
        t.to_string()
    }
}

fn parse_target(input: &str) -> Result<TargetId, String> {
    if input.len() > MAX_URI_LEN {
        return Err(format!("longer than {MAX_URI_LEN} bytes"));
    }
    let spec = addr_spec(input)?;
    if spec.is_empty() {
        return Err("empty".into());
    }
    if spec.starts_with('+') {
        return parse_global_number(spec).map(TargetId::Tel);
    }
    let Some((scheme, rest)) = spec.split_once(':') else {
        return Err("no scheme (expected sip:, sips:, tel:, gateway: or +digits)".into());
    };
    if scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("sips") {
        parse_sip(rest)
    } else if scheme.eq_ignore_ascii_case("tel") {
        // Parameters (";ext=", ";isub=", ...) are ignored: the number is the line.
        let number = rest.split(';').next().unwrap_or("");
        parse_global_number(number).map(TargetId::Tel)
    } else if scheme.eq_ignore_ascii_case("gateway") {
        parse_gateway(rest).map(TargetId::Gateway)
    } else {
        Err(format!(
            "unknown scheme {:?} (expected sip:, sips:, tel:, gateway: or +digits)",
            clip(scheme)
        ))
    }
}

/// The addr-spec of a name-addr (`"Alice" <sip:alice@a.example>;tag=1` gives
/// `sip:alice@a.example`), or the trimmed input when there are no angle brackets.
fn addr_spec(input: &str) -> Result<&str, String> {
    let s = input.trim();
    let mut in_quotes = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if in_quotes {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_quotes = false;
            }
            continue;
        }
        match c {
            '"' => in_quotes = true,
            '<' => {
                let inner = &s[i + 1..];
                let end = inner.find('>').ok_or("'<' without '>'")?;
                return Ok(inner[..end].trim());
            }
            _ => {}
        }
    }
    if in_quotes {
        return Err("unterminated quoted display name".into());
    }
    Ok(s)
}

/// `+` and 3 to 15 digits, the first not 0 (E.164), visual separators removed.
fn parse_global_number(s: &str) -> Result<String, String> {
    let Some(rest) = s.strip_prefix('+') else {
        return Err("not a global number (expected '+' and digits)".into());
    };
    let mut out = String::with_capacity(16);
    out.push('+');
    for c in rest.chars() {
        if c.is_ascii_digit() {
            out.push(c);
        } else if !matches!(c, '-' | '.' | '(' | ')' | ' ') {
            return Err(format!(
                "character {c:?} is not allowed in a telephone number"
            ));
        }
    }
    let digits = out.len() - 1;
    if !(3..=15).contains(&digits) {
        return Err(format!("{digits} digits (an E.164 number has 3 to 15)"));
    }
    if out.as_bytes()[1] == b'0' {
        return Err("an E.164 number does not start with 0".into());
    }
    Ok(out)
}

fn parse_gateway(name: &str) -> Result<String, String> {
    if name.is_empty() || name.len() > MAX_GATEWAY_LEN {
        return Err(format!(
            "a gateway name has 1 to {MAX_GATEWAY_LEN} characters"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!("character {c:?} is not allowed in a gateway name"));
    }
    Ok(name.to_ascii_lowercase())
}

/// After `sip:` / `sips:`: `user[:password]@host[:port][;params][?headers]`.
fn parse_sip(rest: &str) -> Result<TargetId, String> {
    // The user part cannot hold a raw '@', so the first one ends the userinfo.
    let Some((userinfo, hostport)) = rest.split_once('@') else {
        return Err("no user part (a SIP target is sip:user@host)".into());
    };
    let raw_user = userinfo.split(':').next().unwrap_or("");
    let user = normalize_user(raw_user)?;
    let (host, after) = if let Some(r) = hostport.strip_prefix('[') {
        let close = r.find(']').ok_or("unterminated IPv6 reference")?;
        let h = &r[..close];
        if !h.contains(':')
            || !h
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
        {
            return Err(format!("{:?} is not an IPv6 reference", clip(h)));
        }
        (format!("[{}]", h.to_ascii_lowercase()), &r[close + 1..])
    } else {
        let end = hostport.find([':', ';', '?']).unwrap_or(hostport.len());
        (normalize_host(&hostport[..end])?, &hostport[end..])
    };
    let after = match after.strip_prefix(':') {
        Some(p) => {
            let end = p.find([';', '?']).unwrap_or(p.len());
            let port = &p[..end];
            if port.is_empty()
                || port.len() > 5
                || !port.bytes().all(|b| b.is_ascii_digit())
                || port.parse::<u32>().map_or(true, |n| n > 65535)
            {
                return Err(format!("{:?} is not a port", clip(port)));
            }
            &p[end..]
        }
        None => after,
    };
    if !(after.is_empty() || after.starts_with(';') || after.starts_with('?')) {
        return Err(format!("unexpected {:?} after the host", clip(after)));
    }
    Ok(TargetId::SipUri { user, host })
}

fn normalize_host(h: &str) -> Result<String, String> {
    let h = h.strip_suffix('.').unwrap_or(h);
    if h.is_empty() {
        return Err("empty host".into());
    }
    for label in h.split('.') {
        if label.is_empty()
            || label.starts_with('-')
            || label.ends_with('-')
            || !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(format!("{:?} is not a host name", clip(h)));
        }
    }
    Ok(h.to_ascii_lowercase())
}

/// RFC 3261 user: unreserved, escaped and user-unreserved characters. Escapes of unreserved
/// characters are decoded (they are equivalent), other escapes upper-cased; a global number is
/// reduced to `+` and digits.
fn normalize_user(raw: &str) -> Result<String, String> {
    if raw.is_empty() {
        return Err("empty user part".into());
    }
    let b = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'%' {
            let hex = |x: u8| (x as char).to_digit(16);
            let (Some(hi), Some(lo)) = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            ) else {
                return Err("bad %-escape in the user part".into());
            };
            let v = (hi * 16 + lo) as u8;
            if is_unreserved(v) {
                out.push(v as char);
            } else {
                out.push_str(&format!("%{v:02X}"));
            }
            i += 3;
        } else if is_unreserved(c) || b"&=+$,;?/".contains(&c) {
            out.push(c as char);
            i += 1;
        } else {
            let ch = raw[i..].chars().next().unwrap_or('?');
            return Err(format!(
                "character {ch:?} is not allowed in a SIP user part"
            ));
        }
    }
    match parse_global_number(&out) {
        Ok(n) => Ok(n),
        Err(_) => Ok(out),
    }
}

fn is_unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&c)
}

/// The E.164 number a (canonical) SIP user part is, if it is one (user parameters such as
/// `;isub=` are ignored).
fn e164_in_user(user: &str) -> Option<String> {
    let number = user.split(';').next()?;
    parse_global_number(number).ok()
}

// ---------------------------------------------------------------------------------------------
// Warrants
// ---------------------------------------------------------------------------------------------

/// What is delivered for a warrant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// Intercept-related information only (who, when, how long): a pen register.
    IriOnly,
    /// IRI and the call content.
    IriAndContent,
}

/// A warrant as the HTTPS JSON API receives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WarrantRequest {
    pub liid: String,
    /// Each parsed with [`TargetId::parse`].
    pub targets: Vec<String>,
    pub start_ms: u64,
    pub end_ms: u64,
    pub delivery: Delivery,
    /// Must be on the book's allow-list (exact match).
    pub destination: String,
}

/// One approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    pub by: String,
    pub at_ms: u64,
}

/// Who stopped a warrant, when and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deactivation {
    pub by: String,
    pub at_ms: u64,
    pub reason: String,
}

/// Where a warrant stands at a given moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Fewer than two approvals, window not over.
    PendingApproval,
    /// Approved, before `start_ms`.
    Scheduled,
    /// Approved, `start_ms <= now < end_ms`, not deactivated.
    Active,
    /// `now >= end_ms` (approved or not).
    Expired,
    /// Deactivated (whatever the window says).
    Deactivated,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::PendingApproval => "pending approval",
            Status::Scheduled => "scheduled",
            Status::Active => "active",
            Status::Expired => "expired",
            Status::Deactivated => "deactivated",
        })
    }
}

/// A warrant in the book.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Warrant {
    pub liid: String,
    /// The task's XID (a UUID), derived from the LIID: see [`xid_for`]. Serialized as the
    /// usual 8-4-4-4-12 hex string.
    #[serde(with = "xid_serde")]
    pub xid: [u8; 16],
    pub targets: Vec<TargetId>,
    /// First millisecond of the window (inclusive).
    pub start_ms: u64,
    /// End of the window (exclusive).
    pub end_ms: u64,
    pub delivery: Delivery,
    pub destination: String,
    pub created_by: String,
    pub created_ms: u64,
    /// At most two, by distinct identities, neither the creator.
    pub approvals: Vec<Approval>,
    pub deactivated: Option<Deactivation>,
    /// 1 at creation, +1 at every change (approval, deactivation): for optimistic concurrency
    /// (ETag) in the API.
    pub version: u64,
}

impl Warrant {
    /// Where the warrant stands at `now_ms`.
    pub fn status(&self, now_ms: u64) -> Status {
        if self.deactivated.is_some() {
            Status::Deactivated
        } else if now_ms >= self.end_ms {
            Status::Expired
        } else if self.approvals.len() < 2 {
            Status::PendingApproval
        } else if now_ms < self.start_ms {
            Status::Scheduled
        } else {
            Status::Active
        }
    }

    /// Two approvals, not deactivated, `start_ms <= now_ms < end_ms`.
    pub fn is_active(&self, now_ms: u64) -> bool {
        self.status(now_ms) == Status::Active
    }

    /// Whether the warrant has its two approvals and is not deactivated (its window may be
    /// before, at or past `now`).
    pub fn is_approved(&self) -> bool {
        self.approvals.len() >= 2 && self.deactivated.is_none()
    }

    /// The XID as an 8-4-4-4-12 hex string.
    pub fn xid_string(&self) -> String {
        format_xid(&self.xid)
    }
}

/// The XID of the task for `liid`: `SHA-256("voxgate-xid-v1" 0x00 || liid)` truncated to 16
/// octets, with the UUID version set to 8 and the variant to 0b10 (RFC 9562 section 5.8, custom
/// UUIDs; its appendix B.2 uses SHA-256 the same way). Deterministic, so that every node (and a
/// reloaded book) gives the same XID for the same LIID.
pub fn xid_for(liid: &str) -> [u8; 16] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(XID_DOMAIN);
    ctx.update(liid.as_bytes());
    let d = ctx.finish();
    let mut x = [0u8; 16];
    x.copy_from_slice(&d.as_ref()[..16]);
    x[6] = (x[6] & 0x0f) | 0x80;
    x[8] = (x[8] & 0x3f) | 0x80;
    x
}

/// A UUID as 8-4-4-4-12 lower-case hex.
pub fn format_xid(x: &[u8; 16]) -> String {
    let mut s = String::with_capacity(36);
    for (i, b) in x.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Parses an 8-4-4-4-12 hex UUID.
pub fn parse_xid(s: &str) -> Option<[u8; 16]> {
    let b = s.as_bytes();
    if b.len() != 36 {
        return None;
    }
    let mut out = [0u8; 16];
    let mut n = 0;
    let mut i = 0;
    while i < 36 {
        if matches!(i, 8 | 13 | 18 | 23) {
            if b[i] != b'-' {
                return None;
            }
            i += 1;
            continue;
        }
        let hi = (b[i] as char).to_digit(16)?;
        let lo = (*b.get(i + 1)? as char).to_digit(16)?;
        *out.get_mut(n)? = (hi * 16 + lo) as u8;
        n += 1;
        i += 2;
    }
    (n == 16).then_some(out)
}

mod xid_serde {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(x: &[u8; 16], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_xid(x))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 16], D::Error> {
        let s = String::deserialize(d)?;
        super::parse_xid(&s).ok_or_else(|| D::Error::custom("xid is not an 8-4-4-4-12 hex UUID"))
    }
}

/// A warrant that applies to a call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Match {
    pub liid: String,
    pub xid: [u8; 16],
    pub delivery: Delivery,
    pub destination: String,
    /// The warrant's target that matched.
    pub matched: TargetId,
    /// How it took part in the call.
    pub as_: MatchedAs,
}

fn validate_liid(liid: &str) -> Result<(), WarrantError> {
    let bad = |reason: String| WarrantError::BadLiid {
        liid: clip(liid),
        reason,
    };
    if liid.is_empty() || liid.len() > MAX_LIID_LEN {
        return Err(bad(format!(
            "{} octets; an LIID has 1 to {MAX_LIID_LEN} (ETSI LawfulInterceptionIdentifier)",
            liid.len()
        )));
    }
    if let Some(c) = liid
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(bad(format!(
            "character {c:?} is not allowed (only A-Z, a-z, 0-9, '.', '_' and '-')"
        )));
    }
    Ok(())
}

fn validate_identity(liid: &str, identity: &str) -> Result<(), WarrantError> {
    let reason = if identity.trim().is_empty() {
        Some("empty".to_string())
    } else if identity.chars().count() > MAX_IDENTITY_LEN {
        Some(format!("longer than {MAX_IDENTITY_LEN} characters"))
    } else if identity.chars().any(char::is_control) {
        Some("control character".to_string())
    } else if identity.trim() != identity {
        Some("leading or trailing white space".to_string())
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(WarrantError::BadIdentity {
            liid: liid.to_string(),
            identity: clip(identity),
            reason,
        }),
    }
}

/// Identities compare case-insensitively (see the module documentation).
fn same_identity(a: &str, b: &str) -> bool {
    a == b || a.to_lowercase() == b.to_lowercase()
}

// ---------------------------------------------------------------------------------------------
// The book
// ---------------------------------------------------------------------------------------------

/// The warrants of a node, keyed by LIID, and the destinations they may deliver to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WarrantBook {
    allow_list: Vec<String>,
    warrants: BTreeMap<String, Warrant>,
    /// Longest window accepted by [`WarrantBook::create`] (default [`DEFAULT_MAX_WINDOW_MS`]).
    /// Not persisted: it is configuration; warrants already in the book are not re-checked
    /// against it.
    pub max_window_ms: u64,
}

#[derive(Serialize)]
struct BookOut<'a> {
    format: &'static str,
    warrants: Vec<&'a Warrant>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BookIn {
    format: String,
    warrants: Vec<Warrant>,
}

impl WarrantBook {
    /// An empty book whose warrants may deliver only to the destinations in `allow_list`.
    pub fn new(allow_list: Vec<String>) -> Self {
        WarrantBook {
            allow_list,
            warrants: BTreeMap::new(),
            max_window_ms: DEFAULT_MAX_WINDOW_MS,
        }
    }

    /// The destinations warrants may deliver to.
    pub fn allow_list(&self) -> &[String] {
        &self.allow_list
    }

    /// Whether `destination` is on the allow-list (exact match).
    pub fn is_allowed(&self, destination: &str) -> bool {
        self.allow_list.iter().any(|d| d == destination)
    }

    /// Adds a warrant, pending approval. Checks, in this order: the LIID (1 to
    /// [`MAX_LIID_LEN`] of `[A-Za-z0-9._-]`), that it is new, the creator's identity, at least
    /// one target and every target (parsed, no two the same), `start_ms < end_ms`, `end_ms >
    /// now_ms`, `end_ms - start_ms <= max_window_ms`, the destination on the allow-list.
    pub fn create(
        &mut self,
        req: WarrantRequest,
        created_by: &str,
        now_ms: u64,
    ) -> Result<&Warrant, WarrantError> {
        validate_liid(&req.liid)?;
        let liid = req.liid;
        if self.warrants.contains_key(&liid) {
            return Err(WarrantError::DuplicateLiid { liid });
        }
        validate_identity(&liid, created_by)?;
        if req.targets.is_empty() {
            return Err(WarrantError::NoTargets { liid });
        }
        let mut targets: Vec<TargetId> = Vec::with_capacity(req.targets.len());
        for t in &req.targets {
            let id = parse_target(t).map_err(|reason| WarrantError::BadTarget {
                liid: liid.clone(),
                target: clip(t),
                reason,
            })?;
            if let Some(same) = targets.iter().find(|x| **x == id) {
                return Err(WarrantError::BadTarget {
                    liid,
                    target: clip(t),
                    reason: format!("the same target as {same}"),
                });
            }
            targets.push(id);
        }
        if req.start_ms >= req.end_ms {
            return Err(WarrantError::BadWindow {
                liid,
                reason: format!("start {} is not before end {}", req.start_ms, req.end_ms),
            });
        }
        if req.end_ms <= now_ms {
            return Err(WarrantError::BadWindow {
                liid,
                reason: format!("the window ended at {}, it is now {now_ms}", req.end_ms),
            });
        }
        let window_ms = req.end_ms - req.start_ms;
        if window_ms > self.max_window_ms {
            return Err(WarrantError::WindowTooLong {
                liid,
                window_ms,
                max_ms: self.max_window_ms,
            });
        }
        if !self.is_allowed(&req.destination) {
            return Err(WarrantError::DestinationNotAllowed {
                liid,
                destination: clip(&req.destination),
            });
        }
        let w = Warrant {
            xid: xid_for(&liid),
            liid: liid.clone(),
            targets,
            start_ms: req.start_ms,
            end_ms: req.end_ms,
            delivery: req.delivery,
            destination: req.destination,
            created_by: created_by.to_string(),
            created_ms: now_ms,
            approvals: Vec::new(),
            deactivated: None,
            version: 1,
        };
        Ok(self.warrants.entry(liid).or_insert(w))
    }

    /// Records an approval. Dual control: two approvals, by two distinct identities, neither
    /// the creator (identities compare case-insensitively). A deactivated or expired warrant
    /// cannot be approved, nor one that already has its two approvals.
    pub fn approve(
        &mut self,
        liid: &str,
        approver: &str,
        now_ms: u64,
    ) -> Result<&Warrant, WarrantError> {
        let w = self
            .warrants
            .get_mut(liid)
            .ok_or_else(|| WarrantError::UnknownLiid { liid: clip(liid) })?;
        validate_identity(liid, approver)?;
        let status = w.status(now_ms);
        if matches!(status, Status::Deactivated | Status::Expired) {
            return Err(WarrantError::NotApprovable {
                liid: liid.to_string(),
                status,
            });
        }
        if w.approvals.len() >= 2 {
            return Err(WarrantError::AlreadyApproved {
                liid: liid.to_string(),
            });
        }
        if same_identity(&w.created_by, approver) {
            return Err(WarrantError::CreatorCannotApprove {
                liid: liid.to_string(),
                creator: clip(approver),
            });
        }
        if w.approvals.iter().any(|a| same_identity(&a.by, approver)) {
            return Err(WarrantError::SameApproverTwice {
                liid: liid.to_string(),
                approver: clip(approver),
            });
        }
        w.approvals.push(Approval {
            by: approver.to_string(),
            at_ms: now_ms,
        });
        w.version += 1;
        Ok(w)
    }

    /// Stops a warrant at once and for good (whatever its status; twice is an error).
    pub fn deactivate(
        &mut self,
        liid: &str,
        by: &str,
        reason: &str,
        now_ms: u64,
    ) -> Result<&Warrant, WarrantError> {
        let w = self
            .warrants
            .get_mut(liid)
            .ok_or_else(|| WarrantError::UnknownLiid { liid: clip(liid) })?;
        validate_identity(liid, by)?;
        if w.deactivated.is_some() {
            return Err(WarrantError::AlreadyDeactivated {
                liid: liid.to_string(),
            });
        }
        w.deactivated = Some(Deactivation {
            by: by.to_string(),
            at_ms: now_ms,
            reason: reason.to_string(),
        });
        w.version += 1;
        Ok(w)
    }

    /// The warrant with this LIID.
    pub fn get(&self, liid: &str) -> Result<&Warrant, WarrantError> {
        self.warrants
            .get(liid)
            .ok_or_else(|| WarrantError::UnknownLiid { liid: clip(liid) })
    }

    /// Every warrant, in LIID order (whatever its status).
    pub fn list(&self) -> impl Iterator<Item = &Warrant> + '_ {
        self.warrants.values()
    }

    /// Warrants that deliver now: active, and whose destination is still on the allow-list (a
    /// book loaded with a shorter allow-list keeps its history but delivers nowhere else).
    fn live(&self, now_ms: u64) -> impl Iterator<Item = &Warrant> + '_ {
        self.warrants
            .values()
            .filter(move |w| w.is_active(now_ms) && self.is_allowed(&w.destination))
    }

    /// The warrants active at `now_ms` that apply to this call: one [`Match`] per warrant (its
    /// first target, in the warrant's order, that takes part in the call), in LIID order.
    pub fn matching(&self, now_ms: u64, parties: &CallParties) -> Vec<Match> {
        let parsed = ParsedParties::new(parties);
        self.live(now_ms)
            .filter_map(|w| {
                w.targets.iter().find_map(|t| {
                    t.matches_parsed(&parsed).map(|as_| Match {
                        liid: w.liid.clone(),
                        xid: w.xid,
                        delivery: w.delivery,
                        destination: w.destination.clone(),
                        matched: t.clone(),
                        as_,
                    })
                })
            })
            .collect()
    }

    /// Every (LIID, target, end of window) active at `now_ms`: what a service-provider gateway
    /// must be told to copy, and until when.
    pub fn active_targets(&self, now_ms: u64) -> Vec<(String, TargetId, u64)> {
        self.live(now_ms)
            .flat_map(|w| {
                w.targets
                    .iter()
                    .map(move |t| (w.liid.clone(), t.clone(), w.end_ms))
            })
            .collect()
    }

    /// The next moment after `now_ms` at which an approved warrant (not deactivated, destination
    /// allowed) starts or ends: when a driver must re-provision. `None` when nothing changes
    /// by itself any more (approvals and deactivations are changes the driver makes itself).
    pub fn next_change_ms(&self, now_ms: u64) -> Option<u64> {
        self.warrants
            .values()
            .filter(|w| w.is_approved() && self.is_allowed(&w.destination))
            .flat_map(|w| [w.start_ms, w.end_ms])
            .filter(|&t| t > now_ms)
            .min()
    }

    /// The book as JSON, for persistence (`{"format": "voxgate-warrants-v1", "warrants": [...]}`,
    /// warrants in LIID order). The allow-list and `max_window_ms` are configuration and not
    /// written.
    pub fn to_json(&self) -> String {
        let out = BookOut {
            format: FORMAT,
            warrants: self.warrants.values().collect(),
        };
        // Cannot fail: plain structs, string keys, infallible field serializers.
        serde_json::to_string_pretty(&out).expect("a warrant book always serializes")
    }

    /// Loads a book written by [`WarrantBook::to_json`], re-checking every invariant: LIID
    /// syntax and uniqueness, the XID derived from the LIID, targets present and distinct, a
    /// non-empty window not already over when created, valid identities, at most two approvals
    /// by distinct identities, neither the creator, none after the window's end, a version no
    /// smaller than the changes recorded. Unknown fields are refused. A warrant whose
    /// destination is no longer on `allow_list` is kept (history) but never matches. Windows
    /// are not re-checked against `max_window_ms`.
    pub fn from_json(text: &str, allow_list: Vec<String>) -> Result<WarrantBook, WarrantError> {
        let input: BookIn = serde_json::from_str(text)
            .map_err(|e| WarrantError::Corrupt(format!("not a warrant book: {e}")))?;
        if input.format != FORMAT {
            return Err(WarrantError::Corrupt(format!(
                "format {:?}, expected {FORMAT:?}",
                clip(&input.format)
            )));
        }
        let mut book = WarrantBook::new(allow_list);
        for w in input.warrants {
            check_stored(&w)
                .map_err(|e| WarrantError::Corrupt(format!("warrant {:?}: {e}", clip(&w.liid))))?;
            if book.warrants.contains_key(&w.liid) {
                return Err(WarrantError::Corrupt(format!(
                    "warrant {:?} appears twice",
                    w.liid
                )));
            }
            book.warrants.insert(w.liid.clone(), w);
        }
        Ok(book)
    }
}

/// The invariants `create`, `approve` and `deactivate` keep, checked on a stored warrant.
fn check_stored(w: &Warrant) -> Result<(), String> {
    validate_liid(&w.liid).map_err(|e| e.to_string())?;
    if w.xid != xid_for(&w.liid) {
        return Err(format!(
            "xid {} is not the one derived from the LIID",
            w.xid_string()
        ));
    }
    if w.targets.is_empty() {
        return Err("no target".into());
    }
    for (i, t) in w.targets.iter().enumerate() {
        if w.targets[..i].contains(t) {
            return Err(format!("target {t} appears twice"));
        }
    }
    if w.start_ms >= w.end_ms {
        return Err(format!(
            "start {} is not before end {}",
            w.start_ms, w.end_ms
        ));
    }
    if w.end_ms <= w.created_ms {
        return Err(format!(
            "created at {} after its window ended at {}",
            w.created_ms, w.end_ms
        ));
    }
    validate_identity("", &w.created_by).map_err(|e| format!("creator: {e}"))?;
    if w.approvals.len() > 2 {
        return Err(format!("{} approvals (at most two)", w.approvals.len()));
    }
    for (i, a) in w.approvals.iter().enumerate() {
        validate_identity("", &a.by).map_err(|e| format!("approver: {e}"))?;
        if same_identity(&a.by, &w.created_by) {
            return Err(format!("approved by its creator {:?}", clip(&a.by)));
        }
        if w.approvals[..i].iter().any(|b| same_identity(&a.by, &b.by)) {
            return Err(format!("two approvals by {:?}", clip(&a.by)));
        }
        if a.at_ms >= w.end_ms {
            return Err(format!(
                "approved by {:?} at {}, after its window ended at {}",
                clip(&a.by),
                a.at_ms,
                w.end_ms
            ));
        }
    }
    if let Some(d) = &w.deactivated {
        validate_identity("", &d.by).map_err(|e| format!("deactivated by: {e}"))?;
    }
    let changes = 1 + w.approvals.len() as u64 + u64::from(w.deactivated.is_some());
    if w.version < changes {
        return Err(format!(
            "version {} is less than the {changes} changes it records",
            w.version
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sip(user: &str, host: &str) -> TargetId {
        TargetId::SipUri {
            user: user.into(),
            host: host.into(),
        }
    }

    #[test]
    fn sip_forms() {
        for s in [
            "sip:alice@a.example",
            "sips:alice@a.example",
            "SIP:alice@A.Example",
            "sip:alice@a.example.",
            "sip:alice@a.example:5061",
            "sip:alice:secret@a.example;transport=tls?subject=x",
            "\"Alice <A>\" <sip:alice@a.example;transport=tcp>;tag=77",
            "Alice <sip:alice@a.example>",
            "  <sip:%61lice@a.example>  ",
        ] {
            assert_eq!(parse_target(s), Ok(sip("alice", "a.example")), "{s}");
        }
        assert_eq!(
            parse_target("sip:Alice@a.example"),
            Ok(sip("Alice", "a.example"))
        );
        assert_eq!(
            parse_target("sip:a%3ab@a.example"),
            Ok(sip("a%3Ab", "a.example"))
        );
        assert_eq!(
            parse_target("sip:bob@[2001:DB8::1]:5060"),
            Ok(sip("bob", "[2001:db8::1]"))
        );
        assert_eq!(
            parse_target("sip:bob@192.0.2.1"),
            Ok(sip("bob", "192.0.2.1"))
        );
        assert_eq!(
            parse_target("sip:+1-555-0100@gw.example;user=phone"),
            Ok(sip("+15550100", "gw.example"))
        );
    }

    #[test]
    fn bad_sip_forms() {
        for s in [
            "sip:a.example",
            "sip:@a.example",
            "sip:alice@",
            "sip:alice@a..example",
            "sip:alice@-a.example",
            "sip:alice@a.example:",
            "sip:alice@a.example:99999",
            "sip:alice@a.example:50x",
            "sip:alice@a.example>x",
            "sip:al ice@a.example",
            "sip:al%4@a.example",
            "sip:al%@a.example",
            "sip:alicé@a.example",
            "sip:alice@a_b.example",
            "sip:alice@[zz::1]",
            "sip:alice@[::1",
            "<sip:alice@a.example",
            "\"Alice <sip:alice@a.example>",
            "http://a.example/",
            "alice",
            "",
            "   ",
        ] {
            assert!(
                parse_target(s).is_err(),
                "{s:?} parsed as {:?}",
                parse_target(s)
            );
        }
        assert!(parse_target(&format!("sip:{}@a.example", "a".repeat(MAX_URI_LEN))).is_err());
    }

    #[test]
    fn numbers() {
        for s in [
            "tel:+1-555-0100",
            "+15550100",
            "TEL:+1 (555) 01.00",
            "tel:+15550100;ext=7",
        ] {
            assert_eq!(
                parse_target(s),
                Ok(TargetId::Tel("+15550100".into())),
                "{s}"
            );
        }
        for s in [
            "tel:5550100",
            "tel:+12",
            "+1234567890123456",
            "+0155501",
            "tel:+1-555-0100x",
            "+",
            "tel:",
        ] {
            assert!(parse_target(s).is_err(), "{s:?}");
        }
        assert_eq!(parse_target("+123"), Ok(TargetId::Tel("+123".into())));
        assert_eq!(
            parse_target("+123456789012345"),
            Ok(TargetId::Tel("+123456789012345".into()))
        );
    }

    #[test]
    fn gateways() {
        assert_eq!(
            parse_target("gateway:GW-A.1"),
            Ok(TargetId::Gateway("gw-a.1".into()))
        );
        assert!(parse_target("gateway:").is_err());
        assert!(parse_target("gateway:a b").is_err());
        assert!(parse_target(&format!("gateway:{}", "g".repeat(65))).is_err());
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "sip:alice@a.example",
            "sips:Alice@A.EXAMPLE:5061;transport=tls",
            "sip:a%3ab?c@[2001:db8::1]",
            "sip:+1-555-0100@gw.example;user=phone",
            "tel:+1-555-0100",
            "gateway:GW-A",
        ] {
            let t = TargetId::parse(s).unwrap();
            assert_eq!(TargetId::parse(&t.to_string()), Ok(t.clone()), "{s} -> {t}");
        }
    }

    #[test]
    fn xid_is_a_version_8_uuid() {
        let x = xid_for("LI-1");
        assert_eq!(x[6] >> 4, 8);
        assert_eq!(x[8] >> 6, 0b10);
        assert_eq!(x, xid_for("LI-1"));
        assert_ne!(x, xid_for("LI-2"));
        let s = format_xid(&x);
        assert_eq!(s.len(), 36);
        assert_eq!(parse_xid(&s), Some(x));
        assert_eq!(parse_xid(&s.to_uppercase()), Some(x));
        assert_eq!(parse_xid(&s[..35]), None);
        assert_eq!(parse_xid(&s.replace('-', "x")), None);
        assert_eq!(parse_xid("0123456789abcdef0123456789abcdef----"), None);
    }

    #[test]
    fn clip_is_char_safe() {
        let long = "é".repeat(200);
        let c = clip(&long);
        assert_eq!(c.chars().count(), 81);
        assert_eq!(clip("short"), "short");
    }

    #[test]
    fn identities() {
        assert!(validate_identity("L", "alice").is_ok());
        assert!(validate_identity("L", "").is_err());
        assert!(validate_identity("L", "  ").is_err());
        assert!(validate_identity("L", " alice").is_err());
        assert!(validate_identity("L", "al\nice").is_err());
        assert!(validate_identity("L", &"a".repeat(MAX_IDENTITY_LEN + 1)).is_err());
        assert!(same_identity("Alice", "alice"));
        assert!(!same_identity("alice", "alicia"));
    }
}
