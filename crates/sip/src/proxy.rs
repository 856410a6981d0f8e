//! Registrar, location service and transaction-stateful proxy (RFC 3261 §16, §10), sans-I/O.
//!
//! The driver feeds [`ProxyCore::handle_input`] with each message as it arrived (one datagram,
//! or one framed message of a TCP/TLS connection) and the [`Flow`] it came on, calls
//! [`ProxyCore::handle_timeout`] when [`ProxyCore::poll_timeout`] is due, and sends every
//! [`Transmit`] from [`ProxyCore::poll_transmit`]. No sockets, threads or clocks here.
//!
//! What the proxy does:
//! - REGISTER for its domains goes to the [`Registrar`] (digest, own AOR only); the flow a
//!   contact registered over is remembered so that requests reach it over the same TCP/TLS
//!   connection (connection reuse).
//! - Out-of-dialog requests are digest-challenged (407) before any lookup, so the answer never
//!   depends on whether the target exists; the authenticated user must be the From user.
//! - Max-Forwards (483), loop detection (482, RFC 3261 §16.3 step 4 with a branch derived from
//!   the request), Proxy-Require (420), Record-Route on dialog-creating requests with a token
//!   bound to the Call-ID, so that in-dialog requests are routed only inside dialogs this proxy
//!   created (no open relay).
//! - One server transaction per request and one client transaction per forwarded request;
//!   responses (3xx-6xx included) go back through them; CANCEL is answered hop by hop and sent
//!   on once the next hop has sent a provisional response.
//! - SDP: an INVITE's offer must satisfy the stricter of the caller's and callee's encryption
//!   policy (mandatory: RTP/SAVP with a=crypto, else 488), and a=crypto never crosses a hop
//!   that is not TLS (488). Each call's encryption is logged and counted.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use aws_lc_rs::{digest, hmac, rand::SecureRandom};
use zeroize::Zeroizing;

use crate::anchor::{replace_body, CallEvent, MediaAnchor, Refusal, SdpContext, SdpKind, Side};
use crate::config::{ProxyConfig, TransportKind};
use crate::digest::{ha1, Algorithm, DigestAuth, DigestConfig, Verdict};
use crate::grammar;
use crate::message::{Framing, HeaderKind, ParseLimits, SipMessage, StartLine};
use crate::registrar::{Registrar, RegistrarConfig};
use crate::response::build_response;
use crate::sdp::{EncryptionPolicy, SessionDescription};
use crate::transaction::{
    ClientTransaction, Output, ServerTransaction, State, Timers, Transport, TuEvent,
};

/// Where a message came from or goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Flow {
    pub transport: TransportKind,
    /// The proxy's own listener address on that transport.
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// The TCP/TLS connection; `None`: any open connection to `remote`, or a new one.
    pub conn: Option<u64>,
}

impl Flow {
    fn reliable(&self) -> Transport {
        match self.transport {
            TransportKind::Udp => Transport::Unreliable,
            _ => Transport::Reliable,
        }
    }
}

/// Bytes to send on a flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub flow: Flow,
    pub bytes: Vec<u8>,
}

/// Errors building a proxy.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    #[error("no listener given")]
    NoListener,
    #[error("the system random generator failed")]
    Random,
}

/// Counters exported as Prometheus metrics.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub requests: HashMap<String, u64>,
    pub responses_forwarded: [u64; 7],
    pub responses_local: [u64; 7],
    pub parse_errors: u64,
    pub dropped: u64,
    pub auth_challenges: u64,
    pub auth_failures: u64,
    pub lockouts: u64,
    pub loops: u64,
    pub calls_encrypted: u64,
    pub calls_unencrypted: u64,
    pub calls_refused_policy: u64,
    pub overload: u64,
}

struct UserEntry {
    ha1_sha256: Option<Zeroizing<String>>,
    ha1_md5: Option<Zeroizing<String>>,
    policy: EncryptionPolicy,
    contact: Option<String>,
}

struct ServerEntry {
    tx: ServerTransaction,
    flow: Flow,
    request: Vec<u8>,
    client: Option<String>,
    final_sent: bool,
}

struct ClientEntry {
    tx: ClientTransaction,
    flow: Flow,
    server: Option<String>,
    request: Vec<u8>,
    invite: bool,
    /// For the media anchor: the request's method, Call-ID, the side that sent it, whether it
    /// carried SDP, and whether it is a dialog-creating INVITE (no To tag).
    method: String,
    call_id: String,
    side: Side,
    had_sdp: bool,
    initial: bool,
    provisional: bool,
    cancel_pending: bool,
    final_received: bool,
    /// The last provisional response (Timer C runs from it).
    proceeding_since: Option<Instant>,
}

#[derive(Debug, Clone)]
struct Call {
    caller: String,
    callee: String,
    policy: EncryptionPolicy,
    started: Instant,
    /// The From tag of the initial INVITE: tells the caller's requests from the callee's.
    caller_tag: String,
}

/// A `[[route]]`.
struct RouteEntry {
    domain: String,
    next_hop: String,
    policy: EncryptionPolicy,
}

/// A `[[trusted]]` peer.
struct TrustedEntry {
    name: String,
    addresses: Vec<IpAddr>,
    /// Lowercase; `*` for any domain that is not ours.
    domains: Vec<String>,
}

/// Who sent an out-of-dialog request, once checked.
enum Caller {
    /// A local user, digest-authenticated.
    User { domain: String, user: String },
    /// A trusted peer (trunk), by its name.
    Trusted(String),
    /// Authentication is off.
    Anyone,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum TimerRef {
    Server(String),
    Client(String),
    Housekeeping,
}

/// The proxy core.
pub struct ProxyCore {
    domains: Vec<String>,
    listeners: Vec<(TransportKind, SocketAddr)>,
    authenticate_calls: bool,
    max_transactions: usize,
    limits: ParseLimits,
    timers: Timers,
    users: HashMap<(String, String), UserEntry>,
    auth: HashMap<String, DigestAuth>,
    registrar: Registrar,
    /// Contact URI -> the flow it registered or called from (connection reuse).
    flows: HashMap<String, Flow>,
    server: HashMap<String, ServerEntry>,
    client: HashMap<String, ClientEntry>,
    calls: HashMap<String, Call>,
    heap: BinaryHeap<Reverse<(Instant, TimerRef)>>,
    out: VecDeque<Transmit>,
    secret: Zeroizing<[u8; 32]>,
    stats: Stats,
    next_housekeeping: Option<Instant>,
    routes: Vec<RouteEntry>,
    trusted: Vec<TrustedEntry>,
    anchor: Option<Box<dyn MediaAnchor + Send>>,
}

impl std::fmt::Debug for ProxyCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyCore")
            .field("domains", &self.domains)
            .field("server_transactions", &self.server.len())
            .field("client_transactions", &self.client.len())
            .finish_non_exhaustive()
    }
}

const HOUSEKEEPING: Duration = Duration::from_secs(30);
const MAX_FLOWS: usize = 100_000;
const MAX_CALLS: usize = 100_000;
const CALL_MAX_AGE: Duration = Duration::from_secs(12 * 3600);
/// RFC 3261 §16.6 step 11, Timer C: an INVITE that rings without an answer for this long is
/// cancelled (checked at each housekeeping pass, so it fires within 30 s after).
const TIMER_C: Duration = Duration::from_secs(180);

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The parameters of a SIP URI (`;name=value` after host[:port], before `?`).
fn uri_params(raw: &[u8]) -> Vec<(String, Option<String>)> {
    let s = lossy(raw);
    let s = s.split('?').next().unwrap_or_default();
    let after_at = match s.rfind('@') {
        Some(i) => &s[i + 1..],
        None => s,
    };
    after_at
        .split(';')
        .skip(1)
        .map(|p| match p.split_once('=') {
            Some((n, v)) => (n.trim().to_ascii_lowercase(), Some(v.trim().to_string())),
            None => (p.trim().to_ascii_lowercase(), None),
        })
        .collect()
}

fn uri_param(raw: &[u8], name: &str) -> Option<Option<String>> {
    uri_params(raw)
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v)
}

fn host_ip(host: &[u8]) -> Option<IpAddr> {
    let h = std::str::from_utf8(host).ok()?;
    h.trim_start_matches('[').trim_end_matches(']').parse().ok()
}

fn transport_name(t: TransportKind) -> &'static str {
    match t {
        TransportKind::Udp => "UDP",
        TransportKind::Tcp => "TCP",
        TransportKind::Tls => "TLS",
    }
}

/// The sent-by of a Via value as `host:port` (default port for its transport).
fn sent_by(v: &grammar::Via<'_>) -> String {
    let tls = v.transport.eq_ignore_ascii_case(b"TLS");
    let port = v.port.unwrap_or(if tls { 5061 } else { 5060 });
    format!("{}:{port}", lossy(v.host).to_ascii_lowercase())
}

/// A request that failed to parse: answer it if its Via, From, To, Call-ID and CSeq lines can
/// be copied (they are copied as sent, like any response), else nothing.
fn raw_error_response(bytes: &[u8], code: u16) -> Option<Vec<u8>> {
    let first_end = bytes.windows(2).position(|w| w == b"\r\n")?;
    let first = &bytes[..first_end];
    // A request line (method, URI, version: a wrong version is answered too, with 505); never
    // a response, and never an ACK (RFC 3261 §17: ACKs are not answered).
    if first.starts_with(b"SIP/")
        || first.starts_with(b"ACK ")
        || first.split(|b| *b == b' ').count() != 3
    {
        return None;
    }
    let head_end = bytes[first_end..]
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(bytes.len(), |p| p + first_end);
    let mut lines: Vec<&[u8]> = Vec::new();
    let mut seen = [false; 5];
    let headers = bytes.get(first_end + 2..head_end).unwrap_or_default();
    for line in headers.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let name = grammar::trim(&line[..colon]);
        let idx = match HeaderKind::from_name(name) {
            HeaderKind::Via => 0,
            HeaderKind::From => 1,
            HeaderKind::To => 2,
            HeaderKind::CallId => 3,
            HeaderKind::CSeq => 4,
            _ => continue,
        };
        if line.iter().any(|b| b.is_ascii_control() && *b != b'\t') || line.len() > 1024 {
            return None;
        }
        if idx != 0 && seen[idx] {
            continue; // a duplicated header: the first one is the one answered
        }
        seen[idx] = true;
        lines.push(line);
    }
    if !seen.iter().all(|s| *s) {
        return None;
    }
    let mut r = format!("SIP/2.0 {code} {}\r\n", crate::response::reason(code)).into_bytes();
    for l in lines {
        r.extend_from_slice(l);
        r.extend_from_slice(b"\r\n");
    }
    r.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    Some(r)
}

/// Whether an SDP body offers SRTP (RTP/SAVP with a=crypto on every active audio stream), and
/// whether it carries any a=crypto at all.
fn sdp_security(body: &[u8]) -> Option<(bool, bool)> {
    let sd = SessionDescription::parse(body).ok()?;
    let active: Vec<_> = sd
        .media
        .iter()
        .filter(|m| m.media == "audio" && m.port != 0)
        .collect();
    let srtp = !active.is_empty()
        && active
            .iter()
            .all(|m| m.proto == "RTP/SAVP" && m.attributes("crypto").next().is_some());
    let any_crypto = sd
        .media
        .iter()
        .any(|m| m.attributes("crypto").next().is_some());
    Some((srtp, any_crypto))
}

/// The SDP offer of a request: `None` without a body, else (SRTP offered, a=crypto present);
/// a body that is not SDP counts as no SRTP.
fn offer_of(msg: &SipMessage<'_>) -> Option<(bool, bool)> {
    if msg.body.is_empty() {
        return None;
    }
    if is_sdp(msg) {
        // An SDP that does not parse still must not carry keys over a plain hop.
        Some(sdp_security(msg.body).unwrap_or((false, contains_crypto(msg.body))))
    } else {
        Some((false, false))
    }
}

/// Whether a message's body is SDP (by its Content-Type).
fn is_sdp(msg: &SipMessage<'_>) -> bool {
    msg.header(HeaderKind::ContentType).is_some_and(|h| {
        lossy(&h.value)
            .to_ascii_lowercase()
            .starts_with("application/sdp")
    })
}

fn contains_crypto(body: &[u8]) -> bool {
    body.windows(9)
        .any(|w| w.eq_ignore_ascii_case(b"a=crypto:"))
}

/// Why an offer (as [`offer_of`] describes it) may not cross a hop of `transport` under
/// `policy`, if it may not.
fn policy_violation(
    policy: EncryptionPolicy,
    offer: Option<(bool, bool)>,
    transport: TransportKind,
) -> Option<&'static str> {
    match (policy, offer) {
        (_, Some((_, true))) if transport != TransportKind::Tls => {
            Some("SDES keys (a=crypto) may travel only over TLS")
        }
        (EncryptionPolicy::Mandatory, None) => {
            Some("encryption is mandatory: an SDP offer with SRTP is required")
        }
        (EncryptionPolicy::Mandatory, Some((false, _))) => {
            Some("encryption is mandatory: the offer must be RTP/SAVP with a=crypto")
        }
        _ => None,
    }
}

fn strictest(a: EncryptionPolicy, b: EncryptionPolicy) -> EncryptionPolicy {
    use EncryptionPolicy::*;
    match (a, b) {
        (Mandatory, _) | (_, Mandatory) => Mandatory,
        (Optional, _) | (_, Optional) => Optional,
        _ => Off,
    }
}

enum Target {
    /// Send here.
    Flow(Flow),
    /// Answer with this status.
    Fail(u16),
}

impl ProxyCore {
    /// A proxy for the configuration, with the addresses its listeners really bound.
    pub fn new(
        cfg: &ProxyConfig,
        listeners: Vec<(TransportKind, SocketAddr)>,
        now: Instant,
    ) -> Result<Self, ProxyError> {
        if listeners.is_empty() {
            return Err(ProxyError::NoListener);
        }
        let mut users = HashMap::new();
        let mut auth = HashMap::new();
        let algorithms: Vec<Algorithm> = cfg.auth.algorithms.iter().map(|a| (*a).into()).collect();
        for d in &cfg.domains {
            let realm = d.name.to_ascii_lowercase();
            for u in &d.users {
                let (s, m) = match &u.password {
                    Some(p) => (
                        Some(ha1(Algorithm::Sha256, &u.name, &realm, p)),
                        Some(ha1(Algorithm::Md5, &u.name, &realm, p)),
                    ),
                    None => (
                        u.ha1_sha256.clone().map(Zeroizing::new),
                        u.ha1_md5.clone().map(Zeroizing::new),
                    ),
                };
                users.insert(
                    (realm.clone(), u.name.clone()),
                    UserEntry {
                        ha1_sha256: s,
                        ha1_md5: m,
                        policy: u.encryption.unwrap_or(d.encryption).into(),
                        contact: u.contact.clone(),
                    },
                );
            }
            let mut dc = DigestConfig::new(&realm);
            dc.algorithms = algorithms.clone();
            dc.nonce_lifetime = Duration::from_secs(cfg.auth.nonce_lifetime_secs);
            dc.max_failures_per_source = cfg.auth.max_failures_per_source;
            dc.max_failures_per_account = cfg.auth.max_failures_per_account;
            dc.lockout = Duration::from_secs(cfg.auth.lockout_secs);
            auth.insert(
                realm.clone(),
                DigestAuth::new(dc).map_err(|_| ProxyError::Random)?,
            );
        }
        let domains: Vec<String> = cfg
            .domains
            .iter()
            .map(|d| d.name.to_ascii_lowercase())
            .collect();
        let mut secret = Zeroizing::new([0u8; 32]);
        aws_lc_rs::rand::SystemRandom::new()
            .fill(&mut secret[..])
            .map_err(|_| ProxyError::Random)?;
        let limits = ParseLimits {
            max_message: cfg.limits.max_message_bytes,
            max_body: cfg.limits.max_message_bytes,
            ..ParseLimits::default()
        };
        let mut heap = BinaryHeap::new();
        heap.push(Reverse((now + HOUSEKEEPING, TimerRef::Housekeeping)));
        let routes = cfg
            .routes
            .iter()
            .map(|r| RouteEntry {
                domain: r.domain.to_ascii_lowercase(),
                next_hop: r.next_hop.clone(),
                policy: r
                    .encryption
                    .map(EncryptionPolicy::from)
                    .unwrap_or(EncryptionPolicy::Off),
            })
            .collect();
        let trusted = cfg
            .trusted
            .iter()
            .map(|t| TrustedEntry {
                name: t.name.clone(),
                addresses: t.addresses.iter().map(|a| a.to_canonical()).collect(),
                domains: t.domains.iter().map(|d| d.to_ascii_lowercase()).collect(),
            })
            .collect();
        Ok(ProxyCore {
            routes,
            trusted,
            anchor: None,
            registrar: Registrar::new(RegistrarConfig {
                domains: domains.clone(),
                ..RegistrarConfig::default()
            }),
            domains,
            listeners,
            authenticate_calls: cfg.auth.authenticate_calls,
            max_transactions: cfg.limits.max_transactions,
            limits,
            timers: Timers::default(),
            users,
            auth,
            flows: HashMap::new(),
            server: HashMap::new(),
            client: HashMap::new(),
            calls: HashMap::new(),
            heap,
            out: VecDeque::new(),
            secret,
            stats: Stats::default(),
            next_housekeeping: Some(now + HOUSEKEEPING),
        })
    }

    /// Hands every SDP body the proxy forwards to `anchor` (see [`crate::anchor`]).
    pub fn set_anchor(&mut self, anchor: Box<dyn MediaAnchor + Send>) {
        self.anchor = Some(anchor);
    }

    /// The anchor set with [`ProxyCore::set_anchor`].
    pub fn anchor_mut(&mut self) -> Option<&mut (dyn MediaAnchor + Send + 'static)> {
        self.anchor.as_deref_mut()
    }

    /// The name of the trusted peer at `ip`, if it is one.
    pub fn trusted_name(&self, ip: IpAddr) -> Option<&str> {
        let ip = ip.to_canonical();
        self.trusted
            .iter()
            .find(|t| t.addresses.contains(&ip))
            .map(|t| t.name.as_str())
    }

    /// The route for a domain that is not ours: its own, else the default (`*`).
    fn route_for(&self, domain: &str) -> Option<&RouteEntry> {
        let d = domain.to_ascii_lowercase();
        self.routes
            .iter()
            .find(|r| r.domain == d)
            .or_else(|| self.routes.iter().find(|r| r.domain == "*"))
    }

    /// Which side of its call sent a request (by the From tag of the initial INVITE).
    fn side_of(&self, msg: &SipMessage<'_>) -> Side {
        let call_id = lossy(msg.call_id().unwrap_or_default());
        let from_tag = msg
            .from()
            .and_then(|f| f.param("tag"))
            .map(lossy)
            .unwrap_or_default();
        match self.calls.get(&call_id) {
            Some(c) if c.caller_tag != from_tag => Side::Callee,
            _ => Side::Caller,
        }
    }

    /// Ends a call: forgets it and has the anchor release its media.
    fn end_call(&mut self, now: Instant, call_id: &str) {
        if let Some(c) = self.calls.remove(call_id) {
            tracing::info!(caller = %c.caller, callee = %c.callee, secs = now.duration_since(c.started).as_secs(), "call ended");
        }
        if let Some(a) = self.anchor.as_mut() {
            a.call_ended(now, call_id);
        }
    }

    /// Hands the SDP body of a request to the anchor. `Ok(None)`: forward the body as it is.
    fn anchor_request(
        &mut self,
        now: Instant,
        inbound: Flow,
        out: Flow,
        msg: &SipMessage<'_>,
    ) -> Result<Option<Vec<u8>>, Refusal> {
        if self.anchor.is_none() || msg.body.is_empty() || !is_sdp(msg) {
            return Ok(None);
        }
        let method = msg.method().unwrap_or_default();
        let kind = match method {
            "INVITE" | "UPDATE" => SdpKind::Offer,
            "ACK" | "PRACK" => SdpKind::Answer,
            _ => return Ok(None),
        };
        let call_id = lossy(msg.call_id().unwrap_or_default());
        let side = self.side_of(msg);
        let from_trusted = self.trusted_name(inbound.remote.ip()).map(str::to_string);
        let to_trusted = self.trusted_name(out.remote.ip()).map(str::to_string);
        let ctx = SdpContext {
            call_id: &call_id,
            side,
            kind,
            method,
            status: None,
            from_addr: inbound.remote,
            to_addr: out.remote,
            from_trusted: from_trusted.as_deref(),
            to_trusted: to_trusted.as_deref(),
            to_tls: out.transport == TransportKind::Tls,
        };
        match self.anchor.as_mut() {
            Some(a) => a.sdp(now, &ctx, msg.body),
            None => Ok(None),
        }
    }

    /// Replaces the RFC 3261 timer values (tests use short ones).
    pub fn set_timers(&mut self, timers: Timers) {
        self.timers = timers;
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Live server and client transactions.
    pub fn transactions(&self) -> (usize, usize) {
        (self.server.len(), self.client.len())
    }

    /// Calls set up and not yet ended.
    pub fn active_calls(&self) -> usize {
        self.calls.len()
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// The metrics in Prometheus text format.
    pub fn render_metrics(&self) -> String {
        let s = &self.stats;
        let mut m = String::new();
        let mut counter = |name: &str, help: &str, v: u64| {
            m.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n"
            ));
        };
        counter(
            "voxgate_sip_parse_errors_total",
            "Messages refused by the parser.",
            s.parse_errors,
        );
        counter(
            "voxgate_sip_dropped_total",
            "Messages dropped (no transaction, not addressable).",
            s.dropped,
        );
        counter(
            "voxgate_sip_auth_challenges_total",
            "Digest challenges sent (401/407).",
            s.auth_challenges,
        );
        counter(
            "voxgate_sip_auth_failures_total",
            "Requests refused after authentication failed or for identity mismatch.",
            s.auth_failures,
        );
        counter(
            "voxgate_sip_lockouts_total",
            "Requests refused because the source or account is locked out.",
            s.lockouts,
        );
        counter(
            "voxgate_sip_loops_total",
            "Requests refused with 482 Loop Detected.",
            s.loops,
        );
        counter(
            "voxgate_sip_overload_total",
            "Requests refused with 503 because of the transaction limit.",
            s.overload,
        );
        counter(
            "voxgate_calls_refused_policy_total",
            "INVITEs refused with 488 by the encryption policy.",
            s.calls_refused_policy,
        );
        m.push_str("# HELP voxgate_calls_established_total Calls answered, by media encryption.\n# TYPE voxgate_calls_established_total counter\n");
        m.push_str(&format!(
            "voxgate_calls_established_total{{encrypted=\"true\"}} {}\nvoxgate_calls_established_total{{encrypted=\"false\"}} {}\n",
            s.calls_encrypted, s.calls_unencrypted
        ));
        m.push_str("# HELP voxgate_sip_requests_total Requests received, by method.\n# TYPE voxgate_sip_requests_total counter\n");
        let mut methods: Vec<_> = s.requests.iter().collect();
        methods.sort();
        for (k, v) in methods {
            m.push_str(&format!(
                "voxgate_sip_requests_total{{method=\"{k}\"}} {v}\n"
            ));
        }
        m.push_str("# HELP voxgate_sip_responses_total Responses sent, by class and origin.\n# TYPE voxgate_sip_responses_total counter\n");
        for c in 1..7 {
            m.push_str(&format!(
                "voxgate_sip_responses_total{{class=\"{c}xx\",origin=\"forwarded\"}} {}\nvoxgate_sip_responses_total{{class=\"{c}xx\",origin=\"local\"}} {}\n",
                s.responses_forwarded[c], s.responses_local[c]
            ));
        }
        m.push_str(&format!(
            "# HELP voxgate_sip_transactions Live transactions.\n# TYPE voxgate_sip_transactions gauge\nvoxgate_sip_transactions{{side=\"server\"}} {}\nvoxgate_sip_transactions{{side=\"client\"}} {}\n",
            self.server.len(),
            self.client.len()
        ));
        m.push_str(&format!(
            "# HELP voxgate_calls_active Calls set up through the proxy and not ended.\n# TYPE voxgate_calls_active gauge\nvoxgate_calls_active {}\n",
            self.calls.len()
        ));
        m
    }

    fn is_local_addr(&self, host: &[u8], port: Option<u16>) -> bool {
        let Some(ip) = host_ip(host) else {
            return false;
        };
        self.listeners
            .iter()
            .any(|(_, a)| a.ip() == ip && port.is_none_or(|p| p == a.port()))
    }

    fn our_domain(&self, host: &[u8]) -> Option<String> {
        let h = lossy(host).to_ascii_lowercase();
        if self.domains.contains(&h) {
            return Some(h);
        }
        // The proxy's own address stands for the first domain.
        if self.is_local_addr(host, None) {
            return self.domains.first().cloned();
        }
        None
    }

    fn listener(&self, t: TransportKind) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|(k, _)| *k == t)
            .map(|(_, a)| *a)
    }

    fn token(&self, call_id: &[u8]) -> String {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &self.secret[..]);
        hex(&hmac::sign(&key, call_id).as_ref()[..8])
    }

    /// RFC 3261 §16.6 step 8: the branch of a forwarded request, derived from what identifies
    /// it (not from the previous hop's branch), so that a looped copy yields the same value.
    fn branch_for(&self, msg: &SipMessage<'_>) -> String {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(&self.secret[..]);
        if let StartLine::Request { uri, method } = msg.start {
            ctx.update(uri);
            ctx.update(b"\0");
            if method == "ACK" {
                // A stateless ACK (for a 2xx) is its own transaction.
                ctx.update(b"ACK\0");
                if let Some(b) = msg.vias().first().and_then(|v| v.branch()) {
                    ctx.update(b);
                }
            }
        }
        if let Some(t) = msg.from().and_then(|f| f.param("tag")) {
            ctx.update(t);
        }
        ctx.update(b"\0");
        if let Some(t) = msg.to().and_then(|f| f.param("tag")) {
            ctx.update(t);
        }
        ctx.update(b"\0");
        ctx.update(msg.call_id().unwrap_or_default());
        ctx.update(b"\0");
        if let Some(c) = msg.cseq() {
            ctx.update(&c.number.to_be_bytes());
        }
        for h in msg.headers.iter().filter(|h| {
            h.kind == HeaderKind::Route || h.name.eq_ignore_ascii_case(b"Proxy-Require")
        }) {
            ctx.update(&h.value);
        }
        format!("z9hG4bKvx{}", hex(&ctx.finish().as_ref()[..12]))
    }

    fn server_key(msg: &SipMessage<'_>) -> Option<String> {
        let method = msg.method()?;
        let class = match method {
            "ACK" | "INVITE" => "INVITE",
            m => m,
        };
        let vias = msg.vias();
        let top = vias.first()?;
        match top.branch() {
            Some(b) if b.starts_with(b"z9hG4bK") => {
                Some(format!("{}|{}|{class}", lossy(b), sent_by(top)))
            }
            _ => {
                // RFC 2543 peers: the request's identity instead of a branch.
                let from_tag = msg.from().and_then(|f| f.param("tag")).unwrap_or_default();
                let cseq = msg.cseq().map(|c| c.number).unwrap_or(0);
                Some(format!(
                    "{}|{}|{cseq}|{}|{class}",
                    lossy(msg.call_id().unwrap_or_default()),
                    lossy(from_tag),
                    sent_by(top)
                ))
            }
        }
    }

    fn arm(&mut self, r: TimerRef, at: Option<Instant>) {
        if let Some(at) = at {
            self.heap.push(Reverse((at, r)));
        }
    }

    fn count_local(&mut self, code: u16) {
        self.stats.responses_local[(code / 100).min(6) as usize] += 1;
    }

    /// Answers a request without a transaction (the request is not kept).
    #[allow(clippy::too_many_arguments)]
    fn reply_stateless(
        &mut self,
        flow: Flow,
        msg: &SipMessage<'_>,
        code: u16,
        extra: &[(&str, String)],
    ) {
        let tag = self.token(msg.call_id().unwrap_or_default());
        let r = patch_via(
            build_response(msg, code, Some(&tag), extra, None),
            flow.remote,
        );
        self.count_local(code);
        self.out.push_back(Transmit { flow, bytes: r });
    }

    /// Sends a response through a server transaction.
    fn respond(&mut self, now: Instant, key: &str, bytes: Vec<u8>, code: u16, local: bool) {
        let Some(e) = self.server.get_mut(key) else {
            return;
        };
        if code >= 200 {
            e.final_sent = true;
            // The request is kept only to answer it; the transaction itself keeps the final
            // response for retransmissions while it lingers (Timer J/L).
            e.request = Vec::new();
        }
        if e.tx.send_response(now, bytes).is_err() {
            self.stats.dropped += 1;
        }
        if local {
            self.count_local(code);
        } else {
            self.stats.responses_forwarded[(code / 100).min(6) as usize] += 1;
        }
        self.drain_server(key);
    }

    /// Builds a local response to the request of a server transaction and sends it.
    fn respond_local(&mut self, now: Instant, key: &str, code: u16, extra: &[(&str, String)]) {
        let Some(e) = self.server.get(key) else {
            return;
        };
        let req = e.request.clone();
        let Ok(msg) = SipMessage::parse(&req, Framing::Datagram, &self.limits) else {
            return;
        };
        self.respond_to(now, key, &msg, code, extra);
    }

    /// The same with the request already parsed (`msg` is the transaction's request).
    fn respond_to(
        &mut self,
        now: Instant,
        key: &str,
        msg: &SipMessage<'_>,
        code: u16,
        extra: &[(&str, String)],
    ) {
        let Some(flow) = self.server.get(key).map(|e| e.flow) else {
            return;
        };
        let tag = self.token(msg.call_id().unwrap_or_default());
        let r = patch_via(
            build_response(msg, code, Some(&tag), extra, None),
            flow.remote,
        );
        self.respond(now, key, r, code, true);
    }

    fn drain_server(&mut self, key: &str) {
        let Some(e) = self.server.get_mut(key) else {
            return;
        };
        let mut done = false;
        while let Some(o) = e.tx.poll_output() {
            match o {
                Output::Transmit(b) => self.out.push_back(Transmit {
                    flow: e.flow,
                    bytes: b,
                }),
                Output::Terminated => done = true,
                Output::Tu(_) => {}
            }
        }
        let next = e.tx.poll_timeout();
        if done || e.tx.state() == State::Terminated {
            self.server.remove(key);
        } else {
            self.arm(TimerRef::Server(key.to_string()), next);
        }
    }

    fn drain_client(&mut self, now: Instant, key: &str) {
        let Some(e) = self.client.get_mut(key) else {
            return;
        };
        let mut done = false;
        let mut events = Vec::new();
        while let Some(o) = e.tx.poll_output() {
            match o {
                Output::Transmit(b) => self.out.push_back(Transmit {
                    flow: e.flow,
                    bytes: b,
                }),
                Output::Terminated => done = true,
                Output::Tu(ev) => events.push(ev),
            }
        }
        let next = e.tx.poll_timeout();
        if done || e.tx.state() == State::Terminated {
            // Keep the entry until its events are handled below.
        } else {
            self.arm(TimerRef::Client(key.to_string()), next);
        }
        for ev in events {
            self.client_event(now, key, ev);
        }
        if done {
            self.client.remove(key);
        }
    }

    /// Drops expired state and runs due transaction timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((at, _))) = self.heap.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, r))) = self.heap.pop() else {
                break;
            };
            match r {
                TimerRef::Server(k) => {
                    let due = self
                        .server
                        .get(&k)
                        .and_then(|e| e.tx.poll_timeout())
                        .is_some_and(|t| t <= now);
                    if due {
                        if let Some(e) = self.server.get_mut(&k) {
                            e.tx.handle_timeout(now);
                        }
                        self.drain_server(&k);
                    }
                }
                TimerRef::Client(k) => {
                    let due = self
                        .client
                        .get(&k)
                        .and_then(|e| e.tx.poll_timeout())
                        .is_some_and(|t| t <= now);
                    if due {
                        if let Some(e) = self.client.get_mut(&k) {
                            e.tx.handle_timeout(now);
                        }
                        self.drain_client(now, &k);
                    }
                }
                TimerRef::Housekeeping => {
                    if self.next_housekeeping.is_some_and(|t| t <= now) {
                        self.housekeeping(now);
                    }
                }
            }
        }
    }

    fn housekeeping(&mut self, now: Instant) {
        let stale: Vec<(String, Option<String>)> = self
            .client
            .iter()
            .filter(|(_, c)| {
                c.invite
                    && !c.final_received
                    && c.proceeding_since
                        .is_some_and(|t| now.duration_since(t) >= TIMER_C)
            })
            .map(|(k, c)| (k.clone(), c.server.clone()))
            .collect();
        for (k, server) in stale {
            tracing::info!(
                "Timer C: INVITE unanswered for 180 s after a provisional response; cancelling"
            );
            if let Some(c) = self.client.get_mut(&k) {
                c.proceeding_since = None;
            }
            self.send_cancel(now, &k);
            if let Some(s) = server {
                if self.server.get(&s).is_some_and(|e| !e.final_sent) {
                    self.respond_local(now, &s, 408, &[]);
                }
            }
        }
        self.registrar.purge(now);
        let reg = &self.registrar;
        let users = &self.users;
        // Forget flows of contacts that are neither registered nor in a live call.
        self.flows.retain(|contact, _| {
            let _ = users;
            reg.has_contact(now, contact)
        });
        let expired: Vec<String> = self
            .calls
            .iter()
            .filter(|(_, c)| now.duration_since(c.started) >= CALL_MAX_AGE)
            .map(|(k, _)| k.clone())
            .collect();
        for k in expired {
            self.end_call(now, &k);
        }
        self.next_housekeeping = Some(now + HOUSEKEEPING);
        self.heap
            .push(Reverse((now + HOUSEKEEPING, TimerRef::Housekeeping)));
    }

    /// The driver could not reach a flow (connection refused, TLS failure, closed): every
    /// transaction waiting on it ends as if it had timed out (503 upstream).
    pub fn handle_unreachable(&mut self, now: Instant, flow: Flow) {
        let keys: Vec<String> = self
            .client
            .iter()
            .filter(|(_, e)| {
                !e.final_received
                    && e.flow.transport == flow.transport
                    && (e.flow.remote == flow.remote
                        || (e.flow.conn.is_some() && e.flow.conn == flow.conn))
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            if let Some(server) = self.client.get(&k).and_then(|e| e.server.clone()) {
                let pending = self.server.get(&server).is_some_and(|s| !s.final_sent);
                if pending {
                    self.respond_local(now, &server, 503, &[]);
                }
            }
            if let Some(e) = self.client.remove(&k) {
                if e.initial {
                    self.end_call(now, &e.call_id);
                }
            }
        }
        self.flows
            .retain(|_, f| !(f.conn.is_some() && f.conn == flow.conn));
    }

    /// A message arrived on `flow`.
    pub fn handle_input(&mut self, now: Instant, flow: Flow, bytes: &[u8]) {
        let framing = match flow.transport {
            TransportKind::Udp => Framing::Datagram,
            _ => Framing::Stream,
        };
        let msg = match SipMessage::parse(bytes, framing, &self.limits) {
            Ok(m) => m,
            Err(e) => {
                self.stats.parse_errors += 1;
                tracing::debug!(remote = %flow.remote, error = %e, "unparsable message");
                if let Some(r) = raw_error_response(bytes, e.status()) {
                    self.count_local(e.status());
                    self.out.push_back(Transmit { flow, bytes: r });
                }
                return;
            }
        };
        let msg_bytes = &bytes[..msg.len];
        if msg.is_request() {
            self.handle_request(now, flow, &msg, msg_bytes);
        } else {
            self.handle_response(now, flow, &msg, msg_bytes);
        }
    }

    fn handle_request(&mut self, now: Instant, flow: Flow, msg: &SipMessage<'_>, bytes: &[u8]) {
        let method = msg.method().unwrap_or_default().to_string();
        // Methods are counted by name, a bounded number of distinct ones.
        let known = self.stats.requests.contains_key(&method);
        let m = if known || (method.len() <= 16 && self.stats.requests.len() < 32) {
            method.clone()
        } else {
            "other".to_string()
        };
        *self.stats.requests.entry(m).or_default() += 1;
        if let Err(code) = msg.validate_request() {
            if method != "ACK" {
                self.reply_stateless(flow, msg, code, &[]);
            }
            return;
        }
        let Some(key) = Self::server_key(msg) else {
            self.stats.dropped += 1;
            return;
        };
        // A retransmission, or the ACK of a non-2xx final response.
        if self.server.contains_key(&key) {
            let accepted = self
                .server
                .get(&key)
                .is_some_and(|e| e.tx.state() == State::Accepted);
            if let Some(e) = self.server.get_mut(&key) {
                let _ = e.tx.handle_request(now, bytes);
            }
            self.drain_server(&key);
            if method == "ACK" && accepted {
                // An ACK for a 2xx that reused the INVITE's branch: end to end, forward it.
                self.forward_stateless(now, flow, msg);
            }
            return;
        }
        match method.as_str() {
            "ACK" => self.forward_stateless(now, flow, msg),
            "CANCEL" => self.handle_cancel(now, flow, msg, bytes, key),
            _ => self.handle_new_request(now, flow, msg, bytes, key),
        }
    }

    fn new_server_tx(&mut self, flow: Flow, bytes: &[u8], key: &str) -> bool {
        let Ok(tx) = ServerTransaction::new(bytes, flow.reliable(), self.timers) else {
            return false;
        };
        self.server.insert(
            key.to_string(),
            ServerEntry {
                tx,
                flow,
                request: bytes.to_vec(),
                client: None,
                final_sent: false,
            },
        );
        true
    }

    fn handle_cancel(
        &mut self,
        now: Instant,
        flow: Flow,
        msg: &SipMessage<'_>,
        bytes: &[u8],
        key: String,
    ) {
        let invite_key = key.replace("|CANCEL", "|INVITE");
        if !self.server.contains_key(&invite_key) || !key.ends_with("|CANCEL") {
            self.reply_stateless(flow, msg, 481, &[]);
            return;
        }
        if !self.new_server_tx(flow, bytes, &key) {
            return;
        }
        self.respond_local(now, &key, 200, &[]);
        let (client, final_sent) = match self.server.get(&invite_key) {
            Some(e) => (e.client.clone(), e.final_sent),
            None => return,
        };
        if final_sent {
            return;
        }
        match client {
            None => self.respond_local(now, &invite_key, 487, &[]),
            Some(ck) => {
                let ready = self
                    .client
                    .get(&ck)
                    .map(|c| (c.provisional, c.final_received));
                match ready {
                    Some((true, false)) => self.send_cancel(now, &ck),
                    Some((false, false)) => {
                        if let Some(c) = self.client.get_mut(&ck) {
                            c.cancel_pending = true;
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    fn send_cancel(&mut self, now: Instant, client_key: &str) {
        let Some(c) = self.client.get(client_key) else {
            return;
        };
        let flow = c.flow;
        let Some(cancel) = build_cancel(&c.request) else {
            return;
        };
        let ckey = format!("{}|CANCEL", client_key.trim_end_matches("|X"));
        if let Ok(tx) = ClientTransaction::new(now, cancel.clone(), flow.reliable(), self.timers) {
            self.client.insert(
                ckey.clone(),
                ClientEntry {
                    tx,
                    flow,
                    server: None,
                    request: cancel,
                    invite: false,
                    method: "CANCEL".into(),
                    call_id: String::new(),
                    side: Side::Caller,
                    had_sdp: false,
                    initial: false,
                    provisional: false,
                    cancel_pending: false,
                    final_received: false,
                    proceeding_since: None,
                },
            );
            self.drain_client(now, &ckey);
        }
    }

    /// Pops the Route values that name this proxy. `Err(())`: a Route of ours with a token that
    /// does not belong to this Call-ID.
    fn own_routes(&self, msg: &SipMessage<'_>) -> Result<(usize, bool), ()> {
        let routes = route_values(msg);
        let token = self.token(msg.call_id().unwrap_or_default());
        let mut n = 0;
        let mut valid = false;
        for r in &routes {
            let Ok(na) = grammar::name_addr(r) else {
                break;
            };
            if !self.is_local_addr(na.uri.host, na.uri.port) {
                break;
            }
            match uri_param(na.uri.raw, "vx") {
                Some(Some(t)) if t == token => valid = true,
                // A preloaded route to the proxy (an outbound proxy setting): ours, but it
                // proves no dialog.
                None => {}
                _ => return Err(()),
            }
            n += 1;
        }
        Ok((n, valid))
    }

    fn handle_new_request(
        &mut self,
        now: Instant,
        flow: Flow,
        msg: &SipMessage<'_>,
        bytes: &[u8],
        key: String,
    ) {
        let method = msg.method().unwrap_or_default();
        let mf = msg.max_forwards();
        if msg.header(HeaderKind::MaxForwards).is_some() && mf.is_none() {
            self.reply_stateless(flow, msg, 400, &[]);
            return;
        }
        if mf == Some(0) {
            self.reply_stateless(flow, msg, 483, &[]);
            return;
        }
        if let Some(pr) = msg.header_named("Proxy-Require") {
            let v = lossy(grammar::trim(&pr.value));
            self.reply_stateless(flow, msg, 420, &[("Unsupported", v)]);
            return;
        }
        // Loop detection (RFC 3261 §16.3 step 4).
        let branch = self.branch_for(msg);
        let looped = msg.vias().iter().any(|v| {
            self.is_local_addr(v.host, Some(v.port.unwrap_or(5060)))
                && v.branch() == Some(branch.as_bytes())
        });
        if looped {
            self.stats.loops += 1;
            self.reply_stateless(flow, msg, 482, &[]);
            return;
        }
        if self.server.len() + self.client.len() >= self.max_transactions {
            self.stats.overload += 1;
            self.reply_stateless(flow, msg, 503, &[("Retry-After", "5".into())]);
            return;
        }
        if !self.new_server_tx(flow, bytes, &key) {
            return;
        }
        if method == "INVITE" {
            let tag = self.token(msg.call_id().unwrap_or_default());
            let trying = patch_via(build_response(msg, 100, Some(&tag), &[], None), flow.remote);
            self.respond(now, &key, trying, 100, true);
        }
        let (popped, in_dialog) = match self.own_routes(msg) {
            Ok(x) => x,
            Err(()) => {
                self.stats.auth_failures += 1;
                self.respond_to(now, &key, msg, 403, &[]);
                return;
            }
        };
        let routes = route_values(msg);
        let StartLine::Request { uri: ruri, .. } = msg.start else {
            return;
        };
        let Ok(ruri_p) = grammar::uri(ruri) else {
            self.respond_to(now, &key, msg, 416, &[]);
            return;
        };
        let ruri_domain = if ruri_p.is_sip() {
            self.our_domain(ruri_p.host)
        } else {
            None
        };
        let call_id = lossy(msg.call_id().unwrap_or_default());
        // In-dialog requests inside a dialog we record-routed: routed without a challenge.
        if in_dialog && msg.to().and_then(|t| t.param("tag")).is_some() {
            let next = if routes.len() > popped {
                lossy(
                    grammar::name_addr(routes[popped])
                        .map(|n| n.uri.raw)
                        .unwrap_or_default(),
                )
            } else {
                lossy(ruri)
            };
            match self.resolve(&next) {
                Target::Flow(out) => {
                    if out.transport != TransportKind::Tls
                        && offer_of(msg).is_some_and(|(_, crypto)| crypto)
                    {
                        self.refuse_policy(
                            now,
                            msg,
                            &key,
                            "SDES keys (a=crypto) may travel only over TLS",
                        );
                        return;
                    }
                    let body = match self.anchor_request(now, flow, out, msg) {
                        Ok(b) => b,
                        Err(r) => {
                            self.refuse_anchor(now, msg, &key, &r);
                            return;
                        }
                    };
                    if method == "BYE" {
                        // Only a BYE inside a dialog we made ends the call (and its media).
                        self.end_call(now, &call_id);
                    }
                    if matches!(method, "INVITE" | "UPDATE") {
                        if let Some(a) = self.anchor.as_mut() {
                            a.call_event(
                                now,
                                &CallEvent::Modified {
                                    call_id: &call_id,
                                    method,
                                },
                            );
                        }
                    }
                    self.forward(
                        now,
                        flow,
                        msg,
                        &key,
                        &lossy(ruri),
                        out,
                        popped,
                        false,
                        branch,
                        body,
                    )
                }
                Target::Fail(code) => self.respond_to(now, &key, msg, code, &[]),
            }
            return;
        }
        // REGISTER for one of our domains.
        if method == "REGISTER" && ruri_domain.is_some() && routes.len() == popped {
            self.register(now, flow, msg, &key);
            return;
        }
        // OPTIONS to the proxy itself (keep-alive pings, capability queries).
        if method == "OPTIONS" && ruri_p.user.is_none() && ruri_domain.is_some() {
            self.respond_local(
                now,
                &key,
                200,
                &[(
                    "Allow",
                    "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, MESSAGE, INFO, UPDATE".into(),
                )],
            );
            return;
        }
        // Everything else needs an authenticated local caller or a trusted peer (before any
        // lookup).
        let caller = match self.authenticate_caller(now, flow, msg, &key, ruri_domain.as_deref()) {
            Some(c) => c,
            None => return,
        };
        let caller_policy = match &caller {
            Caller::User { domain, user } => self
                .users
                .get(&(domain.clone(), user.clone()))
                .map(|u| u.policy)
                .unwrap_or(EncryptionPolicy::Off),
            Caller::Trusted(_) | Caller::Anyone => EncryptionPolicy::Off,
        };
        // SDES keys never arrive or leave over a hop that is not TLS.
        let offer = if method == "INVITE" {
            offer_of(msg)
        } else {
            None
        };
        if flow.transport != TransportKind::Tls && offer.is_some_and(|(_, crypto)| crypto) {
            self.refuse_policy(
                now,
                msg,
                &key,
                "SDES keys (a=crypto) may travel only over TLS",
            );
            return;
        }
        // Where to: a Route left after ours, the target of the Request-URI in one of our
        // domains, a configured route for its domain, or its address.
        let routed = if ruri_domain.is_none() && ruri_p.is_sip() && host_ip(ruri_p.host).is_none() {
            self.route_for(&lossy(ruri_p.host))
                .map(|r| (r.next_hop.clone(), r.policy))
        } else {
            None
        };
        let (target, callee_policy, callee) = if routes.len() > popped {
            let next = grammar::name_addr(routes[popped])
                .map(|n| lossy(n.uri.raw))
                .unwrap_or_default();
            (self.resolve(&next), EncryptionPolicy::Off, next)
        } else if let Some(d) = &ruri_domain {
            let user = ruri_p.user.map(lossy).unwrap_or_default();
            match self.users.get(&(d.clone(), user.clone())) {
                None => (Target::Fail(404), EncryptionPolicy::Off, String::new()),
                Some(u) => {
                    let policy = u.policy;
                    let aor = format!("{user}@{d}");
                    let contact = u.contact.clone().or_else(|| {
                        self.registrar
                            .lookup(now, &aor)
                            .iter()
                            .max_by_key(|b| b.expires_at)
                            .map(|b| b.contact.clone())
                    });
                    match contact {
                        Some(c) => (self.resolve(&c), policy, c),
                        None => (Target::Fail(480), policy, aor),
                    }
                }
            }
        } else if let Some((hop, policy)) = routed {
            (self.resolve(&hop), policy, lossy(ruri))
        } else {
            (
                self.resolve(&lossy(ruri)),
                EncryptionPolicy::Off,
                lossy(ruri),
            )
        };
        let out = match target {
            Target::Flow(f) => f,
            Target::Fail(code) => {
                self.respond_to(now, &key, msg, code, &[]);
                return;
            }
        };
        // The encryption policy on the offer: the caller's on the offer as it arrived, the
        // callee's on the offer as it leaves (the same body unless an anchor rewrote it).
        let mut body = None;
        if method == "INVITE" {
            if let Some(why) = policy_violation(caller_policy, offer, flow.transport) {
                self.refuse_policy(now, msg, &key, why);
                return;
            }
            if self.calls.len() < MAX_CALLS {
                let from_uri = msg.from().map(|f| lossy(f.uri.raw)).unwrap_or_default();
                let caller_s = match &caller {
                    Caller::User { domain, user } => format!("{user}@{domain}"),
                    Caller::Trusted(peer) => format!("{from_uri} (via {peer})"),
                    Caller::Anyone => from_uri,
                };
                self.calls.insert(
                    call_id.clone(),
                    Call {
                        caller: caller_s,
                        callee: callee.clone(),
                        policy: strictest(caller_policy, callee_policy),
                        started: now,
                        caller_tag: msg
                            .from()
                            .and_then(|f| f.param("tag"))
                            .map(lossy)
                            .unwrap_or_default(),
                    },
                );
            }
            body = match self.anchor_request(now, flow, out, msg) {
                Ok(b) => b,
                Err(r) => {
                    self.refuse_anchor(now, msg, &key, &r);
                    self.end_call(now, &call_id);
                    return;
                }
            };
            if self.anchor.is_some() {
                let from_uri = msg.from().map(|f| lossy(f.uri.raw)).unwrap_or_default();
                let to_uri = msg.to().map(|f| lossy(f.uri.raw)).unwrap_or_default();
                let request_uri = match msg.start {
                    StartLine::Request { uri, .. } => lossy(uri),
                    StartLine::Response { .. } => String::new(),
                };
                let from_trusted = self.trusted_name(flow.remote.ip()).map(str::to_string);
                let to_trusted = self.trusted_name(out.remote.ip()).map(str::to_string);
                if let Some(a) = self.anchor.as_mut() {
                    a.call_event(
                        now,
                        &CallEvent::Attempt {
                            call_id: &call_id,
                            from_uri: &from_uri,
                            request_uri: &request_uri,
                            to_uri: &to_uri,
                            from_trusted: from_trusted.as_deref(),
                            to_trusted: to_trusted.as_deref(),
                        },
                    );
                }
            }
            let offer_out = match &body {
                Some(b) => Some(sdp_security(b).unwrap_or((false, contains_crypto(b)))),
                None => offer,
            };
            if let Some(why) = policy_violation(callee_policy, offer_out, out.transport) {
                self.refuse_policy(now, msg, &key, why);
                self.end_call(now, &call_id);
                return;
            }
            // Connection reuse toward the caller for requests inside the dialog.
            let authenticated = !matches!(caller, Caller::Anyone);
            if flow.conn.is_some() && authenticated && self.flows.len() < MAX_FLOWS {
                if let Some(c) = msg
                    .header(HeaderKind::Contact)
                    .and_then(|h| grammar::name_addr(&h.value).ok())
                {
                    let cu = lossy(c.uri.raw);
                    let keep = self
                        .flows
                        .get(&cu)
                        .is_some_and(|f| f.remote.ip() != flow.remote.ip());
                    if !keep {
                        self.flows.insert(cu, flow);
                    }
                }
            }
        }
        let target_uri = if routes.len() > popped || ruri_domain.is_none() {
            lossy(ruri)
        } else {
            callee.clone()
        };
        let rr = matches!(method, "INVITE" | "SUBSCRIBE" | "REFER");
        self.forward(
            now,
            flow,
            msg,
            &key,
            &target_uri,
            out,
            popped,
            rr,
            branch,
            body,
        );
    }

    fn refuse_anchor(&mut self, now: Instant, msg: &SipMessage<'_>, key: &str, r: &Refusal) {
        tracing::warn!(call_id = %lossy(msg.call_id().unwrap_or_default()), status = r.status, reason = %r.reason, "request refused by the media anchor");
        let reason = r.reason.replace('"', "'");
        self.respond_to(
            now,
            key,
            msg,
            r.status,
            &[("Warning", format!("399 voxgate \"{reason}\""))],
        );
    }

    fn refuse_policy(&mut self, now: Instant, msg: &SipMessage<'_>, key: &str, why: &str) {
        self.stats.calls_refused_policy += 1;
        tracing::warn!(call_id = %lossy(msg.call_id().unwrap_or_default()), reason = %why, "INVITE refused (488)");
        self.respond_to(
            now,
            key,
            msg,
            488,
            &[("Warning", format!("399 voxgate \"{why}\""))],
        );
    }

    /// Checks who sent an out-of-dialog request: a trusted peer (by source address, for the
    /// From domains it may speak for), else a local user by digest. `None`: answered
    /// (407/403).
    fn authenticate_caller(
        &mut self,
        now: Instant,
        flow: Flow,
        msg: &SipMessage<'_>,
        key: &str,
        ruri_domain: Option<&str>,
    ) -> Option<Caller> {
        let from_host = msg
            .from()
            .filter(|f| f.uri.is_sip())
            .map(|f| lossy(f.uri.host).to_ascii_lowercase());
        let src = flow.remote.ip().to_canonical();
        if let Some(t) = self.trusted.iter().find(|t| t.addresses.contains(&src)) {
            let ok = from_host.as_deref().is_some_and(|h| {
                t.domains.iter().any(|d| d == h)
                    || (t.domains.iter().any(|d| d == "*")
                        && self.our_domain(h.as_bytes()).is_none())
            });
            if ok {
                return Some(Caller::Trusted(t.name.clone()));
            }
            let name = t.name.clone();
            self.stats.auth_failures += 1;
            tracing::warn!(peer = %name, from = ?from_host, remote = %flow.remote, "trusted peer sent a request for a domain it does not serve");
            self.respond_to(now, key, msg, 403, &[]);
            return None;
        }
        if !self.authenticate_calls {
            return Some(Caller::Anyone);
        }
        let from_domain = msg
            .from()
            .and_then(|f| self.our_domain(f.uri.host).filter(|_| f.uri.is_sip()));
        let Some(realm) = from_domain
            .clone()
            .or(ruri_domain.map(str::to_string))
            .or_else(|| self.domains.first().cloned())
        else {
            // No domain of ours to authenticate against, and not a trusted peer.
            self.stats.auth_failures += 1;
            tracing::info!(remote = %flow.remote, "request from an untrusted source refused (no local users)");
            self.respond_to(now, key, msg, 403, &[]);
            return None;
        };
        let StartLine::Request { uri, method } = msg.start else {
            return None;
        };
        let authz = msg
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(b"Proxy-Authorization"))
            .find(|h| {
                crate::digest::parse_authorization(h.raw_value).is_some_and(|c| c.realm == realm)
            })
            .map(|h| h.raw_value);
        let users = &self.users;
        let auth = self.auth.get_mut(&realm)?;
        let verdict = auth.verify(
            now,
            flow.remote.ip(),
            method,
            &lossy(uri),
            authz,
            |u, alg| {
                let e = users.get(&(realm.clone(), u.to_string()))?;
                match alg {
                    Algorithm::Sha256 => e.ha1_sha256.clone(),
                    Algorithm::Md5 => e.ha1_md5.clone(),
                }
            },
        );
        for l in auth_lockouts(self.auth.get_mut(&realm)) {
            tracing::warn!(realm = %realm, who = %l, "locked out after repeated authentication failures");
        }
        match verdict {
            Verdict::Accepted { user } => {
                let from_user = msg.from().and_then(|f| f.uri.user.map(lossy));
                if from_domain.as_deref() != Some(realm.as_str())
                    || from_user.as_deref() != Some(user.as_str())
                {
                    self.stats.auth_failures += 1;
                    tracing::warn!(%user, remote = %flow.remote, "authenticated user is not the From user");
                    self.respond_to(now, key, msg, 403, &[]);
                    return None;
                }
                Some(Caller::User {
                    domain: realm,
                    user,
                })
            }
            Verdict::Challenge { stale } => {
                if authz.is_some() && !stale {
                    self.stats.auth_failures += 1;
                    tracing::info!(remote = %flow.remote, "digest authentication failed");
                }
                self.stats.auth_challenges += 1;
                let ch = self
                    .auth
                    .get_mut(&realm)
                    .map(|a| a.challenges(now, stale))
                    .unwrap_or_default();
                let extra: Vec<(&str, String)> =
                    ch.into_iter().map(|c| ("Proxy-Authenticate", c)).collect();
                self.respond_to(now, key, msg, 407, &extra);
                None
            }
            Verdict::LockedOut => {
                self.stats.lockouts += 1;
                tracing::debug!(remote = %flow.remote, "locked out: request refused");
                self.respond_to(now, key, msg, 403, &[]);
                None
            }
        }
    }

    fn register(&mut self, now: Instant, flow: Flow, msg: &SipMessage<'_>, key: &str) {
        let to_domain = msg
            .to()
            .map(|t| lossy(t.uri.host).to_ascii_lowercase())
            .unwrap_or_default();
        let realm = if self.auth.contains_key(&to_domain) {
            to_domain
        } else {
            match self.domains.first() {
                Some(d) => d.clone(),
                None => return,
            }
        };
        let users = &self.users;
        let Some(auth) = self.auth.get_mut(&realm) else {
            return;
        };
        let had_authz = msg.header_named("Authorization").is_some();
        let r = self
            .registrar
            .handle_register(now, flow.remote.ip(), msg, auth, |u, alg| {
                let e = users.get(&(realm.clone(), u.to_string()))?;
                match alg {
                    Algorithm::Sha256 => e.ha1_sha256.clone(),
                    Algorithm::Md5 => e.ha1_md5.clone(),
                }
            });
        let code = std::str::from_utf8(r.get(8..11).unwrap_or_default())
            .ok()
            .and_then(|c| c.parse::<u16>().ok())
            .unwrap_or(500);
        match code {
            401 => {
                self.stats.auth_challenges += 1;
                if had_authz {
                    self.stats.auth_failures += 1;
                }
            }
            403 => {
                self.stats.auth_failures += 1;
                tracing::debug!(remote = %flow.remote, "REGISTER refused (403)");
            }
            200 => {
                if self.anchor.is_some() {
                    let aor = msg.to().map(|t| lossy(t.uri.raw)).unwrap_or_default();
                    let contacts: Vec<String> = msg
                        .headers
                        .iter()
                        .filter(|h| h.kind == HeaderKind::Contact)
                        .map(|h| lossy(&h.value))
                        .collect();
                    let expires = msg
                        .header_named("Expires")
                        .and_then(|h| std::str::from_utf8(&h.value).ok())
                        .and_then(|v| v.trim().parse().ok());
                    if let Some(a) = self.anchor.as_mut() {
                        a.call_event(
                            now,
                            &CallEvent::Registered {
                                aor: &aor,
                                contacts: &contacts.join(", "),
                                expires,
                                source: flow.remote,
                            },
                        );
                    }
                }
                // Remember the flow of every contact registered, for connection reuse.
                for h in msg.headers.iter().filter(|h| h.kind == HeaderKind::Contact) {
                    for item in grammar::split_list(&h.value).unwrap_or_default() {
                        if let Ok(na) = grammar::name_addr(item) {
                            if self.flows.len() < MAX_FLOWS {
                                self.flows.insert(lossy(na.uri.raw), flow);
                            }
                        }
                    }
                }
            }
            _ => {}
        }
        for l in auth_lockouts(self.auth.get_mut(&realm)) {
            tracing::warn!(realm = %realm, who = %l, "locked out after repeated authentication failures");
        }
        let r = patch_via(r, flow.remote);
        self.respond(now, key, r, code, true);
    }

    /// Where a URI leads: the flow it registered over, or its address.
    fn resolve(&self, uri: &str) -> Target {
        if let Some(f) = self.flows.get(uri) {
            return Target::Flow(*f);
        }
        let Ok(u) = grammar::uri(uri.as_bytes()) else {
            return Target::Fail(416);
        };
        if !u.is_sip() {
            return Target::Fail(416);
        }
        let sips = u.scheme.eq_ignore_ascii_case("sips");
        let transport = match uri_param(u.raw, "transport")
            .flatten()
            .map(|t| t.to_ascii_lowercase())
            .as_deref()
        {
            Some("tls") => TransportKind::Tls,
            Some("tcp") if sips => TransportKind::Tls,
            Some("tcp") => TransportKind::Tcp,
            Some("udp") | None if !sips => TransportKind::Udp,
            None => TransportKind::Tls,
            _ => return Target::Fail(503),
        };
        let Some(ip) = host_ip(u.host) else {
            // No DNS here: names other than our domains are not routable.
            return Target::Fail(404);
        };
        let port = u.port.unwrap_or(if transport == TransportKind::Tls {
            5061
        } else {
            5060
        });
        let Some(local) = self.listener(transport) else {
            return Target::Fail(503);
        };
        Target::Flow(Flow {
            transport,
            local,
            remote: SocketAddr::new(ip, port),
            conn: None,
        })
    }

    /// Forwards a request statefully (RFC 3261 §16.6).
    #[allow(clippy::too_many_arguments)]
    fn forward(
        &mut self,
        now: Instant,
        inbound: Flow,
        msg: &SipMessage<'_>,
        server_key: &str,
        target: &str,
        out: Flow,
        popped: usize,
        record_route: bool,
        branch: String,
        body: Option<Vec<u8>>,
    ) {
        let token = self.token(msg.call_id().unwrap_or_default());
        let mut rr = Vec::new();
        if record_route {
            // Double Record-Route when the request changes transport (RFC 5658): the UAS side
            // first.
            let mut rr_uri = |f: &Flow| {
                let t = match f.transport {
                    TransportKind::Udp => String::new(),
                    TransportKind::Tcp => ";transport=tcp".into(),
                    TransportKind::Tls => ";transport=tls".into(),
                };
                let host = match f.local.ip() {
                    IpAddr::V6(a) => format!("[{a}]"),
                    IpAddr::V4(a) => a.to_string(),
                };
                rr.push(format!("<sip:{host}:{}{t};lr;vx={token}>", f.local.port()));
            };
            rr_uri(&out);
            if out.local != inbound.local {
                rr_uri(&inbound);
            }
        }
        let bytes = build_forwarded(
            msg,
            inbound,
            out,
            target,
            &branch,
            popped,
            &rr,
            &self.domains,
        );
        let bytes = match body.as_deref().map(|b| replace_body(&bytes, b)) {
            Some(Some(b)) => b,
            _ => bytes,
        };
        let ckey = format!("{branch}|X");
        let invite = msg.method() == Some("INVITE");
        if msg.method() == Some("ACK") {
            self.out.push_back(Transmit { flow: out, bytes });
            return;
        }
        let side = self.side_of(msg);
        let Ok(tx) = ClientTransaction::new(now, bytes.clone(), out.reliable(), self.timers) else {
            self.respond_local(now, server_key, 500, &[]);
            return;
        };
        self.client.insert(
            ckey.clone(),
            ClientEntry {
                tx,
                flow: out,
                server: Some(server_key.to_string()),
                request: bytes,
                invite,
                method: msg.method().unwrap_or_default().to_string(),
                call_id: lossy(msg.call_id().unwrap_or_default()),
                side,
                had_sdp: !msg.body.is_empty() && is_sdp(msg),
                initial: invite && msg.to().and_then(|t| t.param("tag")).is_none(),
                provisional: false,
                cancel_pending: false,
                final_received: false,
                proceeding_since: None,
            },
        );
        if let Some(s) = self.server.get_mut(server_key) {
            s.client = Some(ckey.clone());
        }
        self.drain_client(now, &ckey);
    }

    /// Forwards an ACK (for a 2xx) without a transaction.
    fn forward_stateless(&mut self, now: Instant, flow: Flow, msg: &SipMessage<'_>) {
        let Ok((popped, in_dialog)) = self.own_routes(msg) else {
            self.stats.dropped += 1;
            return;
        };
        if !in_dialog {
            // An ACK outside a dialog we record-routed: nothing to do (not an open relay).
            self.stats.dropped += 1;
            return;
        }
        let routes = route_values(msg);
        let StartLine::Request { uri, .. } = msg.start else {
            return;
        };
        let next = if routes.len() > popped {
            grammar::name_addr(routes[popped])
                .map(|n| lossy(n.uri.raw))
                .unwrap_or_default()
        } else {
            lossy(uri)
        };
        if let Target::Flow(out) = self.resolve(&next) {
            // An ACK may carry the answer to an offer made in a 2xx (RFC 3264 late offer).
            let body = match self.anchor_request(now, flow, out, msg) {
                Ok(b) => b,
                Err(r) => {
                    tracing::warn!(status = r.status, reason = %r.reason, "ACK with an SDP the media anchor refused: forwarded without it");
                    Some(Vec::new())
                }
            };
            let branch = self.branch_for(msg);
            let bytes = build_forwarded(
                msg,
                flow,
                out,
                &lossy(uri),
                &branch,
                popped,
                &[],
                &self.domains,
            );
            let bytes = match body.as_deref().map(|b| replace_body(&bytes, b)) {
                Some(Some(b)) => b,
                _ => bytes,
            };
            self.out.push_back(Transmit { flow: out, bytes });
            if msg.method() == Some("ACK") {
                let side = self.side_of(msg);
                let call_id = lossy(msg.call_id().unwrap_or_default());
                if let Some(a) = self.anchor.as_mut() {
                    a.acked(now, &call_id, side);
                }
            }
        } else {
            self.stats.dropped += 1;
        }
    }

    fn handle_response(&mut self, now: Instant, _flow: Flow, msg: &SipMessage<'_>, bytes: &[u8]) {
        let vias = msg.vias();
        let Some(top) = vias.first() else {
            self.stats.dropped += 1;
            return;
        };
        let Some(branch) = top.branch() else {
            self.stats.dropped += 1;
            return;
        };
        let is_cancel = msg.cseq().is_some_and(|c| c.method == b"CANCEL");
        let ckey = format!(
            "{}|{}",
            lossy(branch),
            if is_cancel { "CANCEL" } else { "X" }
        );
        if !self.client.contains_key(&ckey) {
            self.stats.dropped += 1;
            return;
        }
        if let Some(c) = self.client.get_mut(&ckey) {
            if c.tx.handle_response(now, bytes).is_err() {
                self.stats.dropped += 1;
                return;
            }
        }
        self.drain_client(now, &ckey);
    }

    fn client_event(&mut self, now: Instant, ckey: &str, ev: TuEvent) {
        let Some(c) = self.client.get_mut(ckey) else {
            return;
        };
        let server = c.server.clone();
        let (method, call_id, side, had_sdp, initial) = (
            c.method.clone(),
            c.call_id.clone(),
            c.side,
            c.had_sdp,
            c.initial,
        );
        match ev {
            TuEvent::Response { code, message } => {
                if code >= 200 {
                    c.final_received = true;
                    c.request = Vec::new(); // kept only to build a CANCEL
                }
                let mut cancel_now = false;
                if (101..200).contains(&code) || code == 100 {
                    if !c.provisional && c.cancel_pending {
                        cancel_now = true;
                    }
                    c.provisional = true;
                    c.proceeding_since = Some(now);
                }
                let invite = c.invite;
                if cancel_now {
                    self.send_cancel(now, ckey);
                }
                let Some(skey) = server else {
                    return; // responses to our own CANCEL end here
                };
                if code == 100 {
                    return; // hop by hop
                }
                let Some(mut up) = strip_top_via(&message) else {
                    return;
                };
                if (101..300).contains(&code) && matches!(method.as_str(), "INVITE" | "UPDATE") {
                    match self.anchor_response(
                        now, ckey, &skey, &up, code, &method, &call_id, side, had_sdp,
                    ) {
                        Ok(Some(b)) => up = b,
                        Ok(None) => {}
                        Err(r) => {
                            tracing::warn!(%call_id, code, status = r.status, reason = %r.reason, "response refused by the media anchor: not forwarded");
                            if code >= 200 {
                                let pending = self.server.get(&skey).is_some_and(|s| !s.final_sent);
                                if pending {
                                    self.respond_local(now, &skey, r.status, &[]);
                                }
                                if initial {
                                    self.end_call(now, &call_id);
                                }
                            }
                            return;
                        }
                    }
                }
                if invite && initial && code > 100 {
                    if let Some(a) = self.anchor.as_mut() {
                        let ev = match code {
                            101..=199 => CallEvent::Alerting {
                                call_id: &call_id,
                                status: code,
                            },
                            200..=299 => CallEvent::Answered { call_id: &call_id },
                            _ => CallEvent::Failed {
                                call_id: &call_id,
                                status: code,
                            },
                        };
                        a.call_event(now, &ev);
                    }
                }
                if invite && code >= 200 {
                    self.call_answered(now, &message, code, initial);
                }
                self.respond(now, &skey, up, code, false);
            }
            TuEvent::Timeout => {
                if let Some(skey) = server {
                    let pending = self.server.get(&skey).is_some_and(|s| !s.final_sent);
                    if pending {
                        self.respond_local(now, &skey, 408, &[]);
                    }
                }
                if initial {
                    if let Some(a) = self.anchor.as_mut() {
                        a.call_event(
                            now,
                            &CallEvent::Failed {
                                call_id: &call_id,
                                status: 408,
                            },
                        );
                    }
                    self.end_call(now, &call_id);
                }
            }
            TuEvent::Ack { .. } => {}
        }
    }

    /// Hands the SDP body of a response to the anchor. `Ok(None)`: forward it as it is.
    #[allow(clippy::too_many_arguments)]
    fn anchor_response(
        &mut self,
        now: Instant,
        ckey: &str,
        skey: &str,
        up: &[u8],
        code: u16,
        method: &str,
        call_id: &str,
        request_side: Side,
        request_had_sdp: bool,
    ) -> Result<Option<Vec<u8>>, Refusal> {
        if self.anchor.is_none() {
            return Ok(None);
        }
        let Ok(m) = SipMessage::parse(up, Framing::Datagram, &self.limits) else {
            return Ok(None);
        };
        if m.body.is_empty() || !is_sdp(&m) {
            return Ok(None);
        }
        let (Some(from), Some(to)) = (
            self.client.get(ckey).map(|c| c.flow),
            self.server.get(skey).map(|s| s.flow),
        ) else {
            return Ok(None);
        };
        let from_trusted = self.trusted_name(from.remote.ip()).map(str::to_string);
        let to_trusted = self.trusted_name(to.remote.ip()).map(str::to_string);
        let ctx = SdpContext {
            call_id,
            side: request_side.other(),
            kind: if request_had_sdp {
                SdpKind::Answer
            } else {
                SdpKind::Offer
            },
            method,
            status: Some(code),
            from_addr: from.remote,
            to_addr: to.remote,
            from_trusted: from_trusted.as_deref(),
            to_trusted: to_trusted.as_deref(),
            to_tls: to.transport == TransportKind::Tls,
        };
        let body = m.body.to_vec();
        let r = match self.anchor.as_mut() {
            Some(a) => a.sdp(now, &ctx, &body)?,
            None => None,
        };
        Ok(r.and_then(|b| replace_body(up, &b)))
    }

    fn call_answered(&mut self, now: Instant, response: &[u8], code: u16, initial: bool) {
        let Ok(m) = SipMessage::parse(response, Framing::Datagram, &self.limits) else {
            return;
        };
        let call_id = lossy(m.call_id().unwrap_or_default());
        if !(200..300).contains(&code) {
            // A failed re-INVITE leaves the call as it was.
            if initial {
                self.end_call(now, &call_id);
            }
            return;
        }
        let Some(call) = self.calls.get(&call_id) else {
            return;
        };
        let encrypted = sdp_security(m.body).is_some_and(|(srtp, _)| srtp);
        if encrypted {
            self.stats.calls_encrypted += 1;
            tracing::info!(call_id = %call_id, caller = %call.caller, callee = %call.callee, "call established, media encrypted (SRTP)");
        } else {
            self.stats.calls_unencrypted += 1;
            if call.policy == EncryptionPolicy::Mandatory {
                tracing::warn!(call_id = %call_id, caller = %call.caller, callee = %call.callee, "call answered without SRTP under a mandatory policy: the endpoints must refuse it");
            } else {
                tracing::info!(call_id = %call_id, caller = %call.caller, callee = %call.callee, "call established UNENCRYPTED");
            }
        }
    }
}

impl Registrar {
    /// Whether a contact URI is bound to any AOR.
    pub fn has_contact(&self, now: Instant, contact: &str) -> bool {
        self.contacts(now).any(|c| c == contact)
    }
}

/// Every Route value, in order.
fn route_values<'a>(msg: &'a SipMessage<'_>) -> Vec<&'a [u8]> {
    msg.headers
        .iter()
        .filter(|h| h.kind == HeaderKind::Route)
        .filter_map(|h| grammar::split_list(&h.value).ok())
        .flatten()
        .collect()
}

/// The forwarded copy of a request: new Request-URI, our Via on top (branch), the previous
/// hop's Via with `received`/`rport`, Max-Forwards decremented, our Route values removed,
/// our Record-Route values added, credentials for our realms removed; everything else as sent.
#[allow(clippy::too_many_arguments)]
fn build_forwarded(
    msg: &SipMessage<'_>,
    inbound: Flow,
    out: Flow,
    target: &str,
    branch: &str,
    popped: usize,
    record_route: &[String],
    realms: &[String],
) -> Vec<u8> {
    let method = msg.method().unwrap_or_default();
    let mut o = Vec::with_capacity(msg.raw.len() + 256);
    o.extend_from_slice(format!("{method} {target} SIP/2.0\r\n").as_bytes());
    let host = match out.local.ip() {
        IpAddr::V6(a) => format!("[{a}]"),
        IpAddr::V4(a) => a.to_string(),
    };
    o.extend_from_slice(
        format!(
            "Via: SIP/2.0/{} {host}:{};branch={branch}\r\n",
            transport_name(out.transport),
            out.local.port()
        )
        .as_bytes(),
    );
    for r in record_route {
        o.extend_from_slice(format!("Record-Route: {r}\r\n").as_bytes());
    }
    let mut first_via = true;
    let mut routes_done = false;
    let mut saw_mf = false;
    for h in &msg.headers {
        match h.kind {
            HeaderKind::Via if first_via => {
                first_via = false;
                let items = grammar::split_list(&h.value).unwrap_or_default();
                let Some((top, rest)) = items.split_first() else {
                    continue;
                };
                let mut v = grammar::trim(top).to_vec();
                if let Ok(p) = grammar::via(top) {
                    let ip = inbound.remote.ip();
                    let has = |n: &str| {
                        p.params
                            .iter()
                            .any(|(k, _)| k.eq_ignore_ascii_case(n.as_bytes()))
                    };
                    if host_ip(p.host) != Some(ip) && !has("received") {
                        v.extend_from_slice(format!(";received={ip}").as_bytes());
                    }
                    if p.params
                        .iter()
                        .any(|(k, val)| k.eq_ignore_ascii_case(b"rport") && val.is_none())
                    {
                        // RFC 3581: fill in the source port.
                        let s = lossy(&v);
                        let filled = fill_rport(&s, inbound.remote.port());
                        v = filled.into_bytes();
                    }
                }
                o.extend_from_slice(b"Via: ");
                o.extend_from_slice(&v);
                for r in rest {
                    o.extend_from_slice(b", ");
                    o.extend_from_slice(grammar::trim(r));
                }
                o.extend_from_slice(b"\r\n");
            }
            HeaderKind::MaxForwards => {
                saw_mf = true;
                let n = msg.max_forwards().unwrap_or(70).saturating_sub(1);
                o.extend_from_slice(format!("Max-Forwards: {n}\r\n").as_bytes());
            }
            HeaderKind::Route => {
                if !routes_done {
                    routes_done = true;
                    for r in route_values(msg).into_iter().skip(popped) {
                        o.extend_from_slice(b"Route: ");
                        o.extend_from_slice(grammar::trim(r));
                        o.extend_from_slice(b"\r\n");
                    }
                }
            }
            _ if h.name.eq_ignore_ascii_case(b"Proxy-Authorization")
                && crate::digest::parse_authorization(h.raw_value)
                    .is_some_and(|c| realms.contains(&c.realm)) => {}
            _ => {
                o.extend_from_slice(h.name);
                o.extend_from_slice(b": ");
                o.extend_from_slice(h.raw_value);
                o.extend_from_slice(b"\r\n");
            }
        }
    }
    if !saw_mf {
        o.extend_from_slice(b"Max-Forwards: 69\r\n");
    }
    o.extend_from_slice(b"\r\n");
    o.extend_from_slice(msg.body);
    o
}

fn auth_lockouts(a: Option<&mut DigestAuth>) -> Vec<String> {
    a.map(|a| a.take_lockouts()).unwrap_or_default()
}

/// RFC 3261 §18.2.1 and RFC 3581 for a response the proxy makes itself: the top Via gets
/// `received` when its host is not the source address, and a valueless `rport` the port.
fn patch_via(resp: Vec<u8>, remote: SocketAddr) -> Vec<u8> {
    let Some(start) = resp.windows(2).position(|w| w == b"\r\n").map(|p| p + 2) else {
        return resp;
    };
    let mut pos = start;
    while pos < resp.len() {
        let end = match resp[pos..].windows(2).position(|w| w == b"\r\n") {
            Some(e) => pos + e,
            None => return resp,
        };
        if end == pos {
            return resp; // end of headers: no Via
        }
        let line = &resp[pos..end];
        let colon = line.iter().position(|b| *b == b':').unwrap_or(0);
        let name = grammar::trim(&line[..colon]);
        if name.eq_ignore_ascii_case(b"via") || name.eq_ignore_ascii_case(b"v") {
            let value = &line[colon + 1..];
            let items = match grammar::split_list(value) {
                Ok(i) if !i.is_empty() => i,
                _ => return resp,
            };
            let Ok(top) = grammar::via(items[0]) else {
                return resp;
            };
            let has = |n: &str| {
                top.params
                    .iter()
                    .any(|(k, _)| k.eq_ignore_ascii_case(n.as_bytes()))
            };
            let mut v = lossy(grammar::trim(items[0]));
            if top
                .params
                .iter()
                .any(|(k, val)| k.eq_ignore_ascii_case(b"rport") && val.is_none())
            {
                v = fill_rport(&v, remote.port());
            }
            if host_ip(top.host) != Some(remote.ip()) && !has("received") {
                v.push_str(&format!(";received={}", remote.ip()));
            }
            let mut out = Vec::with_capacity(resp.len() + 32);
            out.extend_from_slice(&resp[..pos]);
            out.extend_from_slice(&line[..colon + 1]);
            out.push(b' ');
            out.extend_from_slice(v.as_bytes());
            for r in &items[1..] {
                out.extend_from_slice(b", ");
                out.extend_from_slice(grammar::trim(r));
            }
            out.extend_from_slice(&resp[end..]);
            return out;
        }
        pos = end + 2;
    }
    resp
}

fn fill_rport(via: &str, port: u16) -> String {
    let mut out = String::with_capacity(via.len() + 8);
    for (i, part) in via.split(';').enumerate() {
        if i > 0 {
            out.push(';');
        }
        if part.trim().eq_ignore_ascii_case("rport") {
            out.push_str(&format!("rport={port}"));
        } else {
            out.push_str(part);
        }
    }
    out
}

/// A response without its top Via value (the one this proxy added). The response has been
/// parsed already (it matched a transaction), so the header lines are found by a scan.
fn strip_top_via(bytes: &[u8]) -> Option<Vec<u8>> {
    let crlf = |from: usize| {
        bytes
            .get(from..)?
            .windows(2)
            .position(|w| w == b"\r\n")
            .map(|p| p + from)
    };
    let mut pos = crlf(0)? + 2;
    loop {
        let mut end = crlf(pos)?;
        if end == pos {
            return None; // the header section ended without a Via
        }
        // A folded header continues on lines that start with whitespace.
        while matches!(bytes.get(end + 2), Some(b' ' | b'\t')) {
            end = crlf(end + 2)?;
        }
        let line = &bytes[pos..end];
        let colon = line.iter().position(|b| *b == b':')?;
        let name = grammar::trim(&line[..colon]);
        if name.eq_ignore_ascii_case(b"via") || name.eq_ignore_ascii_case(b"v") {
            let value: Vec<u8> = line[colon + 1..]
                .iter()
                .map(|b| if *b == b'\r' || *b == b'\n' { b' ' } else { *b })
                .collect();
            let items = grammar::split_list(&value).ok()?;
            let mut o = Vec::with_capacity(bytes.len());
            o.extend_from_slice(&bytes[..pos]);
            if items.len() > 1 {
                o.extend_from_slice(b"Via: ");
                for (i, r) in items[1..].iter().enumerate() {
                    if i > 0 {
                        o.extend_from_slice(b", ");
                    }
                    o.extend_from_slice(grammar::trim(r));
                }
                o.extend_from_slice(b"\r\n");
            }
            o.extend_from_slice(&bytes[end + 2..]);
            return Some(o);
        }
        pos = end + 2;
    }
}

/// RFC 3261 §9.1: the CANCEL for a forwarded INVITE.
fn build_cancel(invite: &[u8]) -> Option<Vec<u8>> {
    let req = SipMessage::parse(invite, Framing::Datagram, &ParseLimits::default()).ok()?;
    let StartLine::Request { uri, .. } = req.start else {
        return None;
    };
    let top_via = req
        .header(HeaderKind::Via)
        .and_then(|h| grammar::split_list(&h.value).ok())
        .and_then(|l| l.first().map(|v| v.to_vec()))?;
    let cseq = req.cseq()?.number;
    let get = |k| req.header(k).map(|h| h.raw_value.to_vec());
    let mut c = Vec::with_capacity(512);
    c.extend_from_slice(b"CANCEL ");
    c.extend_from_slice(uri);
    c.extend_from_slice(b" SIP/2.0\r\nVia: ");
    c.extend_from_slice(&top_via);
    for r in req.headers.iter().filter(|h| h.kind == HeaderKind::Route) {
        c.extend_from_slice(b"\r\nRoute: ");
        c.extend_from_slice(r.raw_value);
    }
    for (name, k) in [
        ("From", HeaderKind::From),
        ("To", HeaderKind::To),
        ("Call-ID", HeaderKind::CallId),
    ] {
        c.extend_from_slice(format!("\r\n{name}: ").as_bytes());
        c.extend_from_slice(&get(k)?);
    }
    c.extend_from_slice(
        format!("\r\nCSeq: {cseq} CANCEL\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
            .as_bytes(),
    );
    Some(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_error_response_copies_the_needed_lines() {
        let req = b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bK1\r\nFrom: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: 1@x\r\nCSeq: 1 INVITE\r\nContent-Length: 99999999999999999999\r\n\r\n";
        let r = raw_error_response(req, 400).expect("response");
        let s = String::from_utf8(r).expect("utf8");
        assert!(s.starts_with("SIP/2.0 400 Bad Request\r\n"));
        assert!(s.contains("Call-ID: 1@x\r\n"));
        assert!(raw_error_response(b"SIP/2.0 200 OK\r\n\r\n", 400).is_none());
        assert!(raw_error_response(b"INVITE sip:a@b SIP/2.0\r\nVia: x\r\n\r\n", 400).is_none());
    }

    #[test]
    fn local_responses_get_received_and_rport() {
        let r = b"SIP/2.0 407 X\r\nFrom: <sip:a@b>;tag=1\r\nVia: SIP/2.0/UDP host.example;rport;branch=z9hG4bK1, SIP/2.0/UDP 1.2.3.4\r\nContent-Length: 0\r\n\r\n".to_vec();
        let out = String::from_utf8(patch_via(r, "192.0.2.9:5099".parse().unwrap())).unwrap();
        assert!(out.contains("Via: SIP/2.0/UDP host.example;rport=5099;branch=z9hG4bK1;received=192.0.2.9, SIP/2.0/UDP 1.2.3.4\r\n"), "{out}");
        let same =
            b"SIP/2.0 407 X\r\nVia: SIP/2.0/UDP 192.0.2.9:5099;branch=z9hG4bK1\r\n\r\n".to_vec();
        assert_eq!(
            patch_via(same.clone(), "192.0.2.9:5099".parse().unwrap()),
            same
        );
    }

    #[test]
    fn acks_are_never_answered() {
        let ack = b"ACK sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP %s%x%n;branch=z9hG4bK1\r\nFrom: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: 1@x\r\nCSeq: 1 ACK\r\n\r\n";
        assert!(raw_error_response(ack, 400).is_none());
        let v = b"INVITE sip:a@b aaaaa/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: 1@x\r\nCSeq: 1 INVITE\r\n\r\n";
        assert!(raw_error_response(v, 505).is_some());
    }

    #[test]
    fn top_via_is_stripped() {
        let r = b"SIP/2.0 200 OK\r\nFrom: <sip:a@b>;tag=1\r\nVia: SIP/2.0/UDP 1.1.1.1;branch=z9hG4bKa, SIP/2.0/UDP 2.2.2.2;branch=z9hG4bKb\r\nVia: SIP/2.0/UDP 3.3.3.3\r\nContent-Length: 2\r\n\r\nab";
        let out = String::from_utf8(strip_top_via(r).unwrap()).unwrap();
        assert_eq!(out, "SIP/2.0 200 OK\r\nFrom: <sip:a@b>;tag=1\r\nVia: SIP/2.0/UDP 2.2.2.2;branch=z9hG4bKb\r\nVia: SIP/2.0/UDP 3.3.3.3\r\nContent-Length: 2\r\n\r\nab");
        let folded = b"SIP/2.0 200 OK\r\nv: SIP/2.0/UDP 1.1.1.1;branch=z9hG4bKa\r\n ;received=9.9.9.9\r\nVia: SIP/2.0/UDP 3.3.3.3\r\n\r\n";
        let out = String::from_utf8(strip_top_via(folded).unwrap()).unwrap();
        assert_eq!(out, "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 3.3.3.3\r\n\r\n");
        assert!(strip_top_via(b"SIP/2.0 200 OK\r\nTo: <sip:a@b>\r\n\r\n").is_none());
    }

    #[test]
    fn rport_is_filled() {
        assert_eq!(
            fill_rport("SIP/2.0/UDP 1.2.3.4;rport;branch=z9hG4bKx", 5099),
            "SIP/2.0/UDP 1.2.3.4;rport=5099;branch=z9hG4bKx"
        );
    }

    #[test]
    fn uri_params_are_read() {
        let p = uri_params(b"sip:127.0.0.1:5060;transport=tls;lr;vx=ab12");
        assert_eq!(p[0], ("transport".into(), Some("tls".into())));
        assert_eq!(p[1], ("lr".into(), None));
        assert_eq!(uri_param(b"sip:u@h;vx=1?x=y", "vx"), Some(Some("1".into())));
    }
}
