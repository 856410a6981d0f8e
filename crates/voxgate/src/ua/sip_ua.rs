//! The user agent's SIP logic, sans-I/O: registration (with digest, refresh before expiry),
//! one call at a time as caller (INVITE, digest on 401/407, ACK, BYE, CANCEL) or callee (180,
//! 200 with the SDP answer, 2xx retransmission until the ACK, BYE), over the transactions and
//! dialogs of `voxgate-sip`. The driver feeds it `(now, flow, bytes)` and timeouts and drains
//! [`Output`]s: bytes to send (on a flow, or to a next hop) and events.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use voxgate_rtp::{CryptoAttribute, SrtpProfile};
use voxgate_sip::dialog::{self, Dialog, Target};
use voxgate_sip::response::build_response;
use voxgate_sip::sdp::{
    accept_answer, answer_offer, create_offer, EncryptionPolicy, Line, LocalMedia, Security,
    SessionDescription,
};
use voxgate_sip::transaction::{self, Timers, Transport, TuEvent};
use voxgate_sip::{
    uac_auth, ClientTransaction, Framing, HeaderKind, ParseLimits, ServerTransaction, SipMessage,
    StartLine,
};
use zeroize::Zeroizing;

use super::media::{peer_media, MediaPlan};

/// The SIP transport the UA uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    Tls,
    Tcp,
    Udp,
}

impl TransportKind {
    pub fn name(self) -> &'static str {
        match self {
            TransportKind::Tls => "tls",
            TransportKind::Tcp => "tcp",
            TransportKind::Udp => "udp",
        }
    }

    fn via(self) -> &'static str {
        match self {
            TransportKind::Tls => "TLS",
            TransportKind::Tcp => "TCP",
            TransportKind::Udp => "UDP",
        }
    }

    pub fn default_port(self) -> u16 {
        match self {
            TransportKind::Tls => 5061,
            _ => 5060,
        }
    }
}

/// A connection (TCP/TLS) or a UDP peer, numbered by the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowId(pub u64);

/// Where to send bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    /// Back on the flow a request came in on (responses, RFC 3261 §18.2.2).
    Flow(FlowId),
    /// The outbound proxy.
    Addr(SocketAddr),
    /// The next hop a URI names (the driver resolves it and reuses a flow to that address).
    Uri(Target),
}

/// What the driver must do or know.
#[derive(Debug)]
pub enum Output {
    Send { dest: Dest, bytes: Vec<u8> },
    Event(Event),
}

#[derive(Debug)]
pub enum Event {
    /// Registered (if asked to) and ready for calls: print `ready`.
    Ready,
    /// A call is up: start the media.
    CallStarted(MediaPlan),
    /// The call is over (BYE sent or received): stop the media.
    CallEnded,
    /// All the work asked for is done; `Err` carries what went wrong.
    Done(Result<(), String>),
}

/// What the user asked for.
pub struct UaConfig {
    pub user: String,
    pub domain: String,
    pub password: Option<Zeroizing<String>>,
    pub transport: TransportKind,
    /// Via sent-by and Contact address.
    pub contact_addr: SocketAddr,
    pub proxy: Option<SocketAddr>,
    pub policy: EncryptionPolicy,
    /// Our RTP address (for SDP).
    pub media_addr: SocketAddr,
    pub register: bool,
    pub register_expires: u32,
    pub call: Option<String>,
    pub answer: bool,
    pub max_calls: u32,
    pub call_duration: Option<Duration>,
    pub timers: Timers,
}

impl std::fmt::Debug for UaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UaConfig")
            .field("user", &self.user)
            .field("domain", &self.domain)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("transport", &self.transport)
            .field("contact_addr", &self.contact_addr)
            .finish_non_exhaustive()
    }
}

/// What happened to the calls (for the summary).
#[derive(Debug, Default, Clone)]
pub struct CallLog {
    pub calls: u32,
    pub final_status: Option<u16>,
    /// `None` until a call is up; false as soon as one call was unencrypted.
    pub encrypted: Option<bool>,
    pub suite: Option<&'static str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TxKind {
    Register,
    Invite,
    Cancel,
    Bye,
}

struct ClientTx {
    tx: ClientTransaction,
    kind: TxKind,
    dest: Dest,
}

struct ServerTx {
    tx: ServerTransaction,
    flow: FlowId,
}

struct Registration {
    call_id: String,
    tag: String,
    cseq: u32,
    expires: u32,
    challenges: u32,
    registered: bool,
    refresh_at: Option<Instant>,
    flow: Option<FlowId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallState {
    /// UAC: INVITE sent (`provisional`: a 1xx came back, CANCEL is possible).
    Inviting {
        provisional: bool,
    },
    Cancelling,
    /// Up; UAS waits for the ACK meanwhile.
    Active,
    /// BYE sent, waiting for its response.
    Ending,
}

struct Call {
    state: CallState,
    uac: bool,
    call_id: String,
    local_tag: String,
    target: String,
    invite: Vec<u8>,
    invite_cseq: u32,
    offer: Vec<u8>,
    offered_keys: Vec<CryptoAttribute>,
    challenges: u32,
    dialog: Option<Dialog>,
    ack: Option<Vec<u8>>,
    dest: Dest,
    hangup_at: Option<Instant>,
    /// UAS over UDP: the 2xx and its retransmission schedule until the ACK (RFC 3261 §13.3.1.4).
    ok: Option<(Vec<u8>, FlowId)>,
    ok_next: Option<(Instant, Duration, Instant)>,
}

/// The user agent core.
pub struct UserAgent {
    cfg: UaConfig,
    client: HashMap<(String, String), ClientTx>,
    server: HashMap<(String, String), ServerTx>,
    reg: Option<Registration>,
    call: Option<Call>,
    ready: bool,
    done: bool,
    shutting_down: bool,
    calls_finished: u32,
    /// What the call ends with once its BYE completes (an error found while it was up).
    pending_result: Option<Result<(), String>>,
    /// The flow the REGISTER response being processed came on.
    reg_flow_hint: Option<FlowId>,
    /// Set while the binding is removed at the end (`Expires: 0`): the result to report then.
    unregistering: Option<Result<(), String>>,
    /// The time of the latest input (for work started from within, e.g. the de-registration).
    now: Option<Instant>,
    pub log: CallLog,
    out: VecDeque<Output>,
}

impl std::fmt::Debug for UserAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserAgent")
            .field("cfg", &self.cfg)
            .field("log", &self.log)
            .finish_non_exhaustive()
    }
}

fn parse(bytes: &[u8]) -> Option<SipMessage<'_>> {
    SipMessage::parse(bytes, Framing::Datagram, &ParseLimits::default()).ok()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn status(m: &SipMessage<'_>) -> Option<(u16, String)> {
    match m.start {
        StartLine::Response { code, reason } => Some((code, text(reason))),
        StartLine::Request { .. } => None,
    }
}

/// "488 Not Acceptable Here" plus the peer's Warning text, if any (printable, bounded).
fn describe(m: &SipMessage<'_>) -> String {
    let (code, reason) = status(m).unwrap_or((0, String::new()));
    let mut s = format!("{code} {reason}");
    if let Some(w) = m.header_named("Warning") {
        let w: String = text(&w.value)
            .chars()
            .filter(|c| !c.is_control())
            .take(200)
            .collect();
        s.push_str(&format!(" (Warning: {w})"));
    }
    s
}

/// The key a transaction is found by: top Via branch and CSeq method (CANCEL shares the
/// INVITE's branch; ACK for a non-2xx belongs to the INVITE transaction).
fn tx_key(m: &SipMessage<'_>) -> Option<(String, String)> {
    let branch = text(m.vias().first()?.branch()?);
    let method = text(m.cseq()?.method);
    let method = if method == "ACK" {
        "INVITE".to_string()
    } else {
        method
    };
    Some((branch, method))
}

const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS";
const USER_AGENT: &str = concat!("voxgate/", env!("CARGO_PKG_VERSION"));

impl UserAgent {
    pub fn new(cfg: UaConfig) -> Self {
        UserAgent {
            cfg,
            client: HashMap::new(),
            server: HashMap::new(),
            reg: None,
            call: None,
            ready: false,
            done: false,
            shutting_down: false,
            calls_finished: 0,
            pending_result: None,
            reg_flow_hint: None,
            unregistering: None,
            now: None,
            log: CallLog::default(),
            out: VecDeque::new(),
        }
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    fn transport(&self) -> Transport {
        match self.cfg.transport {
            TransportKind::Udp => Transport::Unreliable,
            _ => Transport::Reliable,
        }
    }

    fn contact(&self) -> String {
        format!(
            "<sip:{}@{};transport={}>",
            self.cfg.user,
            self.cfg.contact_addr,
            self.cfg.transport.name()
        )
    }

    fn aor(&self) -> String {
        format!("sip:{}@{}", self.cfg.user, self.cfg.domain)
    }

    fn via(&self, branch: &str) -> String {
        format!(
            "SIP/2.0/{} {};branch={branch};rport",
            self.cfg.transport.via(),
            self.cfg.contact_addr
        )
    }

    /// The next hop of an out-of-dialog request to `uri`: the outbound proxy if there is one.
    fn hop_for(&self, uri: &str) -> Result<Dest, String> {
        match self.cfg.proxy {
            Some(p) => Ok(Dest::Addr(p)),
            None => dialog::parse_target(uri)
                .map(Dest::Uri)
                .map_err(|e| format!("cannot route to {uri}: {e}")),
        }
    }

    /// All work is over: remove our binding first if we registered (RFC 3261 §10.2.2), then
    /// report `Done`.
    fn finish(&mut self, result: Result<(), String>) {
        if self.done || self.unregistering.is_some() {
            return;
        }
        let registered = self.reg.as_ref().is_some_and(|r| r.registered);
        match (registered, self.now) {
            (true, Some(now)) => {
                self.unregistering = Some(result);
                if let Some(reg) = self.reg.as_mut() {
                    reg.expires = 0;
                    reg.refresh_at = None;
                    reg.challenges = 0;
                }
                self.send_register(now, None);
            }
            _ => self.emit_done(result),
        }
    }

    fn emit_done(&mut self, result: Result<(), String>) {
        if !self.done {
            self.done = true;
            self.out.push_back(Output::Event(Event::Done(result)));
        }
    }

    /// Begins: REGISTER if asked, else ready at once.
    pub fn start(&mut self, now: Instant) {
        self.now = Some(now);
        if self.cfg.register {
            self.reg = Some(Registration {
                call_id: dialog::new_call_id(&self.cfg.contact_addr.ip().to_string()),
                tag: dialog::new_tag(),
                cseq: 0,
                expires: self.cfg.register_expires,
                challenges: 0,
                registered: false,
                refresh_at: None,
                flow: None,
            });
            self.send_register(now, None);
        } else {
            self.become_ready(now);
        }
    }

    fn become_ready(&mut self, now: Instant) {
        if self.ready {
            return;
        }
        self.ready = true;
        self.out.push_back(Output::Event(Event::Ready));
        if let Some(target) = self.cfg.call.clone() {
            self.start_call(now, target);
        } else if !self.cfg.answer && !self.cfg.register {
            self.finish(Ok(()));
        }
    }

    fn start_client(&mut self, now: Instant, bytes: Vec<u8>, kind: TxKind, dest: Dest) {
        let key = match parse(&bytes).and_then(|m| tx_key(&m)) {
            Some(k) => k,
            None => {
                self.finish(Err("internal error: built an unparsable request".into()));
                return;
            }
        };
        match ClientTransaction::new(now, bytes, self.transport(), self.cfg.timers) {
            Ok(tx) => {
                self.client.insert(key, ClientTx { tx, kind, dest });
                self.pump(now);
            }
            Err(e) => self.finish(Err(format!("internal error: request refused: {e}"))),
        }
    }

    // ---- Registration (RFC 3261 §10.2) ----

    fn send_register(&mut self, now: Instant, auth: Option<(&'static str, String)>) {
        let contact = self.contact();
        let aor = self.aor();
        let ruri = format!("sip:{}", self.cfg.domain);
        let dest = match self.hop_for(&ruri) {
            Ok(d) => d,
            Err(e) => return self.finish(Err(e)),
        };
        let branch = dialog::new_branch();
        let via = self.via(&branch);
        let Some(reg) = self.reg.as_mut() else { return };
        reg.cseq += 1;
        let mut r = format!(
            "REGISTER {ruri} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\nFrom: <{aor}>;tag={}\r\nTo: <{aor}>\r\nCall-ID: {}\r\nCSeq: {} REGISTER\r\nContact: {contact}\r\nExpires: {}\r\nUser-Agent: {USER_AGENT}\r\n",
            reg.tag, reg.call_id, reg.cseq, reg.expires
        );
        if let Some((h, v)) = auth {
            r.push_str(&format!("{h}: {v}\r\n"));
        }
        r.push_str("Content-Length: 0\r\n\r\n");
        self.start_client(now, r.into_bytes(), TxKind::Register, dest);
    }

    /// The answer to a 401/407: the authorization header, or why there is none.
    fn answer_challenge(
        &self,
        resp: &SipMessage<'_>,
        method: &str,
        uri: &str,
        previous: u32,
    ) -> Result<(&'static str, String), String> {
        let (code, _) = status(resp).unwrap_or((0, String::new()));
        let proxy = code == 407;
        let ch = uac_auth::select_challenge(resp, proxy)
            .map_err(|e| format!("{method} failed: {}: {e}", describe(resp)))?;
        // One try per fresh challenge; a second challenge is a wrong password unless the
        // server says our nonce was only stale.
        if previous >= 1 && !(ch.stale && previous < 3) {
            return Err(format!(
                "{method} failed: {} again after authenticating: wrong user name or password?",
                describe(resp)
            ));
        }
        let Some(pw) = &self.cfg.password else {
            return Err(format!(
                "{method} failed: {}: authentication needed, give --password-file or --password-env",
                describe(resp)
            ));
        };
        let v = uac_auth::authorization(&ch, &self.cfg.user, pw, method, uri)
            .map_err(|e| format!("{method}: {e}"))?;
        Ok((uac_auth::authorization_header(proxy), v))
    }

    fn on_register_response(&mut self, now: Instant, flow: Option<FlowId>, bytes: &[u8]) {
        let Some(m) = parse(bytes) else { return };
        let Some((code, _)) = status(&m) else { return };
        let Some(reg) = self.reg.as_ref() else { return };
        let first = !reg.registered;
        match code {
            100..=199 => {}
            200..=299 if reg.expires == 0 => {
                tracing::info!("unregistered");
                let r = self.unregistering.take().unwrap_or(Ok(()));
                self.emit_done(r);
            }
            200..=299 => {
                let ours = self.contact();
                let ours = ours.trim_start_matches('<').trim_end_matches('>');
                let header_expires = m
                    .header_named("Expires")
                    .and_then(|h| text(&h.value).trim().parse::<u32>().ok());
                let contacts = dialog::contacts(&m);
                let granted = contacts
                    .iter()
                    .find(|c| c.uri.eq_ignore_ascii_case(ours))
                    .and_then(|c| c.expires)
                    .or(header_expires)
                    .unwrap_or(reg.expires);
                let Some(reg) = self.reg.as_mut() else { return };
                reg.registered = true;
                reg.challenges = 0;
                reg.flow = flow;
                // Refresh well before expiry (RFC 3261 §10.2.4).
                let secs = u64::from(granted.max(10));
                let refresh = (secs * 4 / 5).min(secs.saturating_sub(5)).max(5);
                reg.refresh_at = Some(now + Duration::from_secs(refresh));
                tracing::info!(expires = granted, "registered");
                self.become_ready(now);
            }
            401 | 407 => {
                let previous = reg.challenges;
                let uri = format!("sip:{}", self.cfg.domain);
                match self.answer_challenge(&m, "REGISTER", &uri, previous) {
                    Ok(auth) => {
                        if let Some(reg) = self.reg.as_mut() {
                            reg.challenges += 1;
                        }
                        self.send_register(now, Some(auth));
                    }
                    Err(e) => self.register_failed(now, first, e),
                }
            }
            423 => {
                let min = m
                    .header_named("Min-Expires")
                    .and_then(|h| text(&h.value).trim().parse::<u32>().ok());
                match (min, self.reg.as_mut()) {
                    (Some(min), Some(reg)) if min > reg.expires && min <= 86_400 => {
                        reg.expires = min;
                        self.send_register(now, None);
                    }
                    _ => self.register_failed(
                        now,
                        first,
                        format!("REGISTER failed: {}", describe(&m)),
                    ),
                }
            }
            _ => self.register_failed(now, first, format!("REGISTER failed: {}", describe(&m))),
        }
    }

    fn register_failed(&mut self, now: Instant, first: bool, why: String) {
        if let Some(r) = self.unregistering.take() {
            tracing::warn!("removing the registration: {why}");
            self.emit_done(r);
        } else if first {
            self.finish(Err(why));
        } else {
            tracing::warn!("{why}; retrying in 30 s");
            if let Some(reg) = self.reg.as_mut() {
                reg.challenges = 0;
                reg.refresh_at = Some(now + Duration::from_secs(30));
            }
        }
    }

    // ---- Calls as UAC (RFC 3261 §13.2) ----

    fn local_media(&self) -> LocalMedia {
        LocalMedia {
            address: self.cfg.media_addr.ip(),
            port: self.cfg.media_addr.port(),
            formats: vec![(0, "PCMU/8000".into()), (8, "PCMA/8000".into())],
            suites: vec![SrtpProfile::AesCm128HmacSha1_80, SrtpProfile::AeadAes128Gcm],
        }
    }

    fn with_ptime(mut sd: SessionDescription) -> Vec<u8> {
        if let Some(m) = sd.media.iter_mut().find(|m| m.port != 0) {
            m.lines.push(Line {
                kind: 'a',
                value: "ptime:20".into(),
            });
            m.lines.push(Line {
                kind: 'a',
                value: "sendrecv".into(),
            });
        }
        sd.to_bytes()
    }

    fn start_call(&mut self, now: Instant, target: String) {
        if dialog::parse_target(&target).is_err() {
            return self.finish(Err(format!("--call: not a SIP URI: {target}")));
        }
        let dest = match self.hop_for(&target) {
            Ok(d) => d,
            Err(e) => return self.finish(Err(e)),
        };
        let (sd, keys) = match create_offer(self.cfg.policy, &self.local_media()) {
            Ok(x) => x,
            Err(e) => return self.finish(Err(format!("SDP offer: {e}"))),
        };
        self.call = Some(Call {
            state: CallState::Inviting { provisional: false },
            uac: true,
            call_id: dialog::new_call_id(&self.cfg.contact_addr.ip().to_string()),
            local_tag: dialog::new_tag(),
            target,
            invite: Vec::new(),
            invite_cseq: 0,
            offer: Self::with_ptime(sd),
            offered_keys: keys,
            challenges: 0,
            dialog: None,
            ack: None,
            dest,
            hangup_at: None,
            ok: None,
            ok_next: None,
        });
        self.send_invite(now, None);
    }

    fn send_invite(&mut self, now: Instant, auth: Option<(&'static str, String)>) {
        let contact = self.contact();
        let aor = self.aor();
        let branch = dialog::new_branch();
        let via = self.via(&branch);
        let Some(c) = self.call.as_mut() else { return };
        c.invite_cseq += 1;
        let mut r = format!(
            "INVITE {t} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\nFrom: <{aor}>;tag={}\r\nTo: <{t}>\r\nCall-ID: {}\r\nCSeq: {} INVITE\r\nContact: {contact}\r\nAllow: {ALLOW}\r\nUser-Agent: {USER_AGENT}\r\n",
            c.local_tag,
            c.call_id,
            c.invite_cseq,
            t = c.target
        );
        if let Some((h, v)) = auth {
            r.push_str(&format!("{h}: {v}\r\n"));
        }
        r.push_str(&format!(
            "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n",
            c.offer.len()
        ));
        let mut bytes = r.into_bytes();
        bytes.extend_from_slice(&c.offer);
        c.invite = bytes.clone();
        let dest = c.dest.clone();
        self.start_client(now, bytes, TxKind::Invite, dest);
    }

    fn on_invite_response(&mut self, now: Instant, bytes: &[u8]) {
        let Some(m) = parse(bytes) else { return };
        let Some((code, _)) = status(&m) else { return };
        let Some(call) = self.call.as_mut() else {
            return;
        };
        if !call.uac {
            return;
        }
        match code {
            100 => {}
            101..=199 => {
                if let CallState::Inviting { .. } = call.state {
                    call.state = CallState::Inviting { provisional: true };
                }
            }
            200..=299 => self.on_invite_ok(now, &m),
            401 | 407 if matches!(call.state, CallState::Inviting { .. }) => {
                let previous = call.challenges;
                let target = call.target.clone();
                match self.answer_challenge(&m, "INVITE", &target, previous) {
                    Ok(auth) => {
                        if let Some(c) = self.call.as_mut() {
                            c.challenges += 1;
                        }
                        self.send_invite(now, Some(auth));
                    }
                    Err(e) => {
                        self.log.final_status = Some(code);
                        self.end_call(Err(e));
                    }
                }
            }
            _ => {
                self.log.final_status = Some(code);
                let why = if call.state == CallState::Cancelling && code == 487 {
                    Err("call cancelled before it was answered".to_string())
                } else {
                    Err(format!("call failed: {}", describe(&m)))
                };
                self.end_call(why);
            }
        }
    }

    fn on_invite_ok(&mut self, now: Instant, m: &SipMessage<'_>) {
        let Some(call) = self.call.as_ref() else {
            return;
        };
        // A retransmitted 2xx (its ACK was lost, over UDP): ACK again.
        if let Some(d) = &call.dialog {
            if d.matches_response(m) {
                if let Some(a) = call.ack.clone() {
                    let dest = call.dest.clone();
                    self.out.push_back(Output::Send { dest, bytes: a });
                }
                return;
            }
        }
        let have_dialog = call.dialog.is_some();
        let invite_cseq = call.invite_cseq;
        let Some(req) = parse(&call.invite) else {
            return;
        };
        let mut dlg = match Dialog::uac(&req, m) {
            Ok(d) => d,
            Err(e) => {
                self.log.final_status = status(m).map(|s| s.0);
                return self.end_call(Err(format!("call failed: bad 2xx: {e}")));
            }
        };
        let dest = dialog_dest(self.cfg.proxy, &dlg, &call.dest);
        let ack = dlg.ack(invite_cseq, &self.via(&dialog::new_branch()), &[]);
        self.out.push_back(Output::Send {
            dest: dest.clone(),
            bytes: ack.clone(),
        });
        if have_dialog {
            // A 2xx from another fork: one call only, so ACK it and hang it up at once.
            let bye = dlg.request("BYE", &self.via(&dialog::new_branch()), &[], None);
            self.start_client(now, bye, TxKind::Bye, dest);
            return;
        }
        let Some(call) = self.call.as_mut() else {
            return;
        };
        call.dest = dest;
        call.ack = Some(ack);
        call.dialog = Some(dlg);
        self.log.final_status = status(m).map(|s| s.0);
        let security = SessionDescription::parse(m.body)
            .map_err(|e| e.to_string())
            .and_then(|sd| {
                let sec = accept_answer(self.cfg.policy, &call.offered_keys, &sd)
                    .map_err(|e| e.to_string())?;
                let (remote, law) = peer_media(&sd)
                    .ok_or_else(|| "no PCMU/PCMA audio in the answer".to_string())?;
                Ok(MediaPlan {
                    remote,
                    law,
                    security: sec,
                })
            });
        match security {
            Ok(plan) => self.call_up(now, plan),
            Err(e) => {
                // The call is up in SIP terms but breaks our policy: hang up at once.
                self.pending_result = Some(Err(format!("SDP answer refused: {e}")));
                if let Some(c) = self.call.as_mut() {
                    c.state = CallState::Active;
                }
                self.hangup_inner(now);
            }
        }
    }

    fn call_up(&mut self, now: Instant, plan: MediaPlan) {
        let Some(call) = self.call.as_mut() else {
            return;
        };
        call.state = CallState::Active;
        call.hangup_at = self.cfg.call_duration.map(|d| now + d);
        self.log.calls += 1;
        match &plan.security {
            Security::Srtp { suite, .. } => {
                self.log.encrypted.get_or_insert(true);
                self.log.suite = Some(suite.name());
            }
            Security::Unencrypted => {
                self.log.encrypted = Some(false);
            }
        }
        self.out.push_back(Output::Event(Event::CallStarted(plan)));
    }

    /// Hangs up (duration over, media ended, shutdown): BYE, or CANCEL while ringing.
    pub fn hangup(&mut self, now: Instant) {
        self.now = Some(now);
        self.hangup_inner(now);
    }

    fn hangup_inner(&mut self, now: Instant) {
        let Some(call) = self.call.as_mut() else {
            return;
        };
        match call.state {
            CallState::Active => {
                let via = format!(
                    "SIP/2.0/{} {};branch={};rport",
                    self.cfg.transport.via(),
                    self.cfg.contact_addr,
                    dialog::new_branch()
                );
                call.state = CallState::Ending;
                call.hangup_at = None;
                call.ok_next = None;
                let Some(d) = call.dialog.as_mut() else {
                    return;
                };
                let bye = d.request("BYE", &via, &[("User-Agent", USER_AGENT.into())], None);
                let dest = dialog_dest(self.cfg.proxy, d, &call.dest);
                self.out.push_back(Output::Event(Event::CallEnded));
                self.start_client(now, bye, TxKind::Bye, dest);
            }
            CallState::Inviting { provisional: true } => {
                call.state = CallState::Cancelling;
                if let Some(cancel) = build_cancel(&call.invite) {
                    let dest = call.dest.clone();
                    self.start_client(now, cancel, TxKind::Cancel, dest);
                }
            }
            CallState::Inviting { provisional: false } => {
                self.end_call(Err("hung up before the callee answered".into()));
            }
            CallState::Cancelling | CallState::Ending => {}
        }
    }

    fn on_bye_done(&mut self) {
        if matches!(self.call.as_ref().map(|c| c.state), Some(CallState::Ending)) {
            let r = self.pending_result.take().unwrap_or(Ok(()));
            self.end_call(r);
        }
    }

    /// The call is over: account for it and decide whether the UA is done.
    fn end_call(&mut self, result: Result<(), String>) {
        let Some(call) = self.call.take() else { return };
        if matches!(call.state, CallState::Active) {
            self.out.push_back(Output::Event(Event::CallEnded));
        }
        self.calls_finished += 1;
        if call.uac || self.shutting_down {
            self.finish(result);
        } else {
            if let Err(e) = &result {
                tracing::warn!("{e}");
            }
            if self.calls_finished >= self.cfg.max_calls {
                self.finish(Ok(()));
            }
        }
    }

    /// Stops: hang up a call in progress, then report `Done`.
    pub fn shutdown(&mut self, now: Instant, why: Option<String>) {
        self.now = Some(now);
        self.shutting_down = true;
        if self.call.is_some() {
            if let Some(w) = why {
                self.pending_result = Some(Err(w));
            }
            self.hangup_inner(now);
        } else {
            self.finish(why.map_or(Ok(()), Err));
        }
    }

    // ---- Incoming messages ----

    /// A complete SIP message from a flow.
    pub fn handle_message(&mut self, now: Instant, flow: FlowId, bytes: &[u8]) {
        self.now = Some(now);
        let Ok(m) = SipMessage::parse(bytes, Framing::Datagram, &ParseLimits::default()) else {
            tracing::debug!("dropped an unparsable SIP message");
            return;
        };
        if m.is_request() {
            self.handle_request(now, flow, &m, bytes);
        } else if let Some(key) = tx_key(&m) {
            if let Some(ctx) = self.client.get_mut(&key) {
                if ctx.kind == TxKind::Register {
                    self.reg_flow_hint = Some(flow);
                }
                let _ = ctx.tx.handle_response(now, bytes);
                self.pump(now);
            } else if key.1 == "INVITE" && status(&m).is_some_and(|(c, _)| (200..300).contains(&c))
            {
                // A 2xx retransmission after the INVITE transaction is gone.
                self.on_invite_ok(now, &m);
            }
        }
        self.pump(now);
    }

    fn respond(&mut self, now: Instant, key: &(String, String), resp: Vec<u8>) {
        if let Some(st) = self.server.get_mut(key) {
            let _ = st.tx.send_response(now, resp);
        }
        // Out before anything that follows (a `Done` must not overtake the response).
        self.pump(now);
    }

    fn handle_request(&mut self, now: Instant, flow: FlowId, m: &SipMessage<'_>, bytes: &[u8]) {
        let method = m.method().unwrap_or_default();
        let Some(key) = tx_key(m) else { return };
        if m.validate_request().is_err() {
            if method != "ACK" {
                self.out.push_back(Output::Send {
                    dest: Dest::Flow(flow),
                    bytes: build_response(m, 400, Some(&dialog::new_tag()), &[], None),
                });
            }
            return;
        }
        if method == "ACK" {
            if let Some(st) = self.server.get_mut(&key) {
                let _ = st.tx.handle_request(now, bytes);
            } else {
                self.on_ack(m);
            }
            return;
        }
        // A retransmission: the transaction answers it.
        if let Some(st) = self.server.get_mut(&key) {
            let _ = st.tx.handle_request(now, bytes);
            return;
        }
        let tx = match ServerTransaction::new(bytes, self.transport(), self.cfg.timers) {
            Ok(tx) => tx,
            Err(_) => return,
        };
        self.server.insert(key.clone(), ServerTx { tx, flow });
        let in_dialog = m.to().is_some_and(|t| t.param("tag").is_some());
        let reply = |code: u16, extra: &[(&str, String)]| {
            build_response(m, code, Some(&dialog::new_tag()), extra, None)
        };
        if in_dialog {
            let ours = self
                .call
                .as_mut()
                .and_then(|c| c.dialog.as_mut())
                .filter(|d| d.matches_request(m));
            let Some(d) = ours else {
                return self.respond(now, &key, reply(481, &[]));
            };
            if let Err(e) = d.handle_request(m) {
                tracing::debug!("in-dialog request refused: {e}");
                return self.respond(now, &key, reply(500, &[]));
            }
            match method {
                "BYE" => {
                    self.respond(now, &key, reply(200, &[]));
                    tracing::info!("call ended by the peer");
                    let r = self.pending_result.take().unwrap_or(Ok(()));
                    self.end_call(r);
                }
                // Re-INVITE (new keys, hold) is not supported: the call goes on as it is.
                "INVITE" => self.respond(
                    now,
                    &key,
                    reply(
                        488,
                        &[("Warning", "399 voxgate \"re-INVITE not supported\"".into())],
                    ),
                ),
                "OPTIONS" | "INFO" | "UPDATE" => self.respond(now, &key, reply(200, &[])),
                _ => self.respond(now, &key, reply(405, &[("Allow", ALLOW.into())])),
            }
            return;
        }
        match method {
            "INVITE" => self.on_invite(now, flow, &key, m),
            "OPTIONS" => self.respond(
                now,
                &key,
                reply(
                    200,
                    &[
                        ("Allow", ALLOW.into()),
                        ("Accept", "application/sdp".into()),
                    ],
                ),
            ),
            "CANCEL" => {
                // We answer at once, so there is never a pending INVITE to cancel.
                let pending = self.server.contains_key(&(key.0.clone(), "INVITE".into()));
                self.respond(now, &key, reply(if pending { 200 } else { 481 }, &[]));
            }
            _ => self.respond(now, &key, reply(405, &[("Allow", ALLOW.into())])),
        }
    }

    fn on_ack(&mut self, m: &SipMessage<'_>) {
        let Some(call) = self.call.as_mut() else {
            return;
        };
        let Some(d) = call.dialog.as_mut() else {
            return;
        };
        if d.matches_request(m) && d.handle_request(m).is_ok() {
            // RFC 3261 §13.3.1.4: the ACK stops the 2xx retransmissions.
            call.ok_next = None;
            call.ok = None;
        }
    }

    // ---- Calls as UAS (RFC 3261 §13.3) ----

    fn on_invite(
        &mut self,
        now: Instant,
        flow: FlowId,
        key: &(String, String),
        m: &SipMessage<'_>,
    ) {
        let tag = dialog::new_tag();
        let warn = |why: &str| {
            let w: String = why.chars().filter(|c| *c != '"' && *c != '\\').collect();
            ("Warning", format!("399 voxgate \"{w}\""))
        };
        let reply =
            |code: u16, extra: &[(&str, String)]| build_response(m, code, Some(&tag), extra, None);
        if !self.cfg.answer || self.shutting_down || self.done {
            return self.respond(now, key, reply(480, &[]));
        }
        if self.call.is_some() {
            return self.respond(now, key, reply(486, &[]));
        }
        let offer = match SessionDescription::parse(m.body) {
            Ok(sd) if !m.body.is_empty() => sd,
            Ok(_) => {
                let r = reply(488, &[warn("an SDP offer is required")]);
                return self.reject(now, key, r, "INVITE without an SDP offer: 488".into());
            }
            Err(e) => {
                let r = reply(400, &[warn(&e.to_string())]);
                return self.reject(now, key, r, format!("bad SDP offer: {e}"));
            }
        };
        let (answer, security) = match answer_offer(&offer, self.cfg.policy, &self.local_media()) {
            Ok(x) => x,
            Err(e) => {
                let code = e.status();
                let r = reply(code, &[warn(&e.to_string())]);
                return self.reject(now, key, r, format!("refused the call with {code}: {e}"));
            }
        };
        let Some((remote, law)) = peer_media(&offer) else {
            let r = reply(488, &[warn("no PCMU/PCMA audio offered")]);
            return self.reject(now, key, r, "no PCMU/PCMA in the offer: 488".into());
        };
        let mut dlg = match Dialog::uas(m, &tag) {
            Ok(d) => d,
            Err(e) => {
                let r = reply(400, &[warn(&e.to_string())]);
                return self.reject(now, key, r, format!("bad INVITE: {e}"));
            }
        };
        let contact = self.contact();
        let ringing = reply(180, &[("Contact", contact.clone())]);
        self.respond(now, key, ringing);
        let body = Self::with_ptime(answer);
        let ok = build_response(
            m,
            200,
            Some(&tag),
            &[
                ("Contact", contact),
                ("Allow", ALLOW.into()),
                ("User-Agent", USER_AGENT.into()),
            ],
            Some(("application/sdp", &body)),
        );
        self.respond(now, key, ok.clone());
        dlg.confirm();
        self.log.final_status = Some(200);
        let dest = dialog_dest(self.cfg.proxy, &dlg, &Dest::Flow(flow));
        let t1 = self.cfg.timers.t1;
        let retransmit =
            (self.cfg.transport == TransportKind::Udp).then(|| (now + t1, t1, now + 64 * t1));
        self.call = Some(Call {
            state: CallState::Active,
            uac: false,
            call_id: dlg.id().call_id.clone(),
            local_tag: tag.clone(),
            target: dlg.remote_target().to_string(),
            invite: Vec::new(),
            invite_cseq: m.cseq().map_or(0, |c| c.number),
            offer: Vec::new(),
            offered_keys: Vec::new(),
            challenges: 0,
            dest,
            dialog: Some(dlg),
            ack: None,
            hangup_at: None,
            ok: Some((ok, flow)),
            ok_next: retransmit,
        });
        self.call_up(
            now,
            MediaPlan {
                remote,
                law,
                security,
            },
        );
    }

    fn reject(&mut self, now: Instant, key: &(String, String), resp: Vec<u8>, why: String) {
        let code = parse(&resp).and_then(|m| status(&m)).map(|s| s.0);
        self.respond(now, key, resp);
        tracing::warn!("{why}");
        eprintln!("voxgate ua: {why}");
        self.log.final_status = code;
        self.calls_finished += 1;
        if self.calls_finished >= self.cfg.max_calls {
            self.finish(Ok(()));
        }
    }

    // ---- Transport events ----

    /// A request could not be sent (connection refused, TLS failure): RFC 3261 §8.1.3.1 treats
    /// it as a 503 from the transaction.
    pub fn send_failed(&mut self, now: Instant, bytes: &[u8], why: &str) {
        self.now = Some(now);
        let Some(m) = parse(bytes) else { return };
        if !m.is_request() {
            return;
        }
        let Some(key) = tx_key(&m) else { return };
        let Some(ctx) = self.client.remove(&key) else {
            return;
        };
        let msg = format!("cannot reach the next hop: {why}");
        match ctx.kind {
            TxKind::Register => {
                let first = !self.reg.as_ref().is_some_and(|r| r.registered);
                self.register_failed(now, first, format!("REGISTER failed: {msg}"));
            }
            TxKind::Invite => {
                self.log.final_status = Some(503);
                self.end_call(Err(format!("call failed: {msg}")));
            }
            TxKind::Bye | TxKind::Cancel => self.on_bye_done(),
        }
    }

    /// The address our Contact and Via name (a UA without a listener uses its connection's).
    pub fn set_contact_addr(&mut self, addr: SocketAddr) {
        self.cfg.contact_addr = addr;
    }

    /// A connection closed. If it carried the registration, register again now (a new
    /// connection; the proxy reaches us over it).
    pub fn flow_closed(&mut self, now: Instant, flow: FlowId) {
        self.now = Some(now);
        // Our BYE's connection went away with the peer (it answered and left, or crashed):
        // waiting 32 s for Timer F would only delay the end.
        if self
            .call
            .as_ref()
            .is_some_and(|c| c.state == CallState::Ending)
        {
            self.on_bye_done();
        }
        let Some(reg) = self.reg.as_mut() else { return };
        if reg.flow == Some(flow) && reg.registered {
            reg.flow = None;
            reg.refresh_at = Some(now);
        }
    }

    // ---- Timers ----

    pub fn poll_timeout(&self) -> Option<Instant> {
        let tx = self
            .client
            .values()
            .filter_map(|c| c.tx.poll_timeout())
            .chain(self.server.values().filter_map(|s| s.tx.poll_timeout()));
        let reg = self.reg.as_ref().and_then(|r| r.refresh_at);
        let call = self.call.as_ref().and_then(|c| {
            [c.hangup_at, c.ok_next.map(|(at, _, giveup)| at.min(giveup))]
                .into_iter()
                .flatten()
                .min()
        });
        tx.chain(reg).chain(call).min()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = Some(now);
        for c in self.client.values_mut() {
            if c.tx.poll_timeout().is_some_and(|at| at <= now) {
                c.tx.handle_timeout(now);
            }
        }
        for s in self.server.values_mut() {
            if s.tx.poll_timeout().is_some_and(|at| at <= now) {
                s.tx.handle_timeout(now);
            }
        }
        if let Some(reg) = self.reg.as_mut() {
            if reg.refresh_at.is_some_and(|at| at <= now) {
                reg.refresh_at = None;
                reg.challenges = 0;
                self.send_register(now, None);
            }
        }
        let mut hang = false;
        let mut no_ack = false;
        if let Some(call) = self.call.as_mut() {
            if call.hangup_at.is_some_and(|at| at <= now) {
                call.hangup_at = None;
                hang = true;
            }
            if let Some((at, interval, giveup)) = call.ok_next {
                if giveup <= now {
                    call.ok_next = None;
                    no_ack = true;
                } else if at <= now {
                    if let Some((ok, flow)) = &call.ok {
                        self.out.push_back(Output::Send {
                            dest: Dest::Flow(*flow),
                            bytes: ok.clone(),
                        });
                    }
                    let next = (interval * 2).min(self.cfg.timers.t2);
                    call.ok_next = Some((now + next, next, giveup));
                }
            }
        }
        if no_ack {
            // RFC 3261 §13.3.1.4: no ACK for the 2xx: end the call with a BYE.
            self.pending_result = Some(Err("no ACK for our 200 OK".into()));
            self.hangup_inner(now);
        } else if hang {
            self.hangup_inner(now);
        }
        self.pump(now);
    }

    /// Drains the transactions: bytes to send, responses and timeouts for the TU.
    fn pump(&mut self, now: Instant) {
        loop {
            let mut events: Vec<(TxKind, Option<FlowId>, TuEvent)> = Vec::new();
            let mut finished: Vec<(String, String)> = Vec::new();
            for (key, c) in self.client.iter_mut() {
                while let Some(o) = c.tx.poll_output() {
                    match o {
                        transaction::Output::Transmit(b) => self.out.push_back(Output::Send {
                            dest: c.dest.clone(),
                            bytes: b,
                        }),
                        transaction::Output::Tu(ev) => events.push((c.kind, None, ev)),
                        transaction::Output::Terminated => finished.push(key.clone()),
                    }
                }
            }
            for k in &finished {
                self.client.remove(k);
            }
            let mut done_server = Vec::new();
            for (key, s) in self.server.iter_mut() {
                while let Some(o) = s.tx.poll_output() {
                    match o {
                        transaction::Output::Transmit(b) => self.out.push_back(Output::Send {
                            dest: Dest::Flow(s.flow),
                            bytes: b,
                        }),
                        transaction::Output::Tu(_) => {}
                        transaction::Output::Terminated => done_server.push(key.clone()),
                    }
                }
            }
            for k in &done_server {
                self.server.remove(k);
            }
            if events.is_empty() {
                return;
            }
            for (kind, _, ev) in events {
                let flow = if kind == TxKind::Register {
                    self.reg_flow_hint.take()
                } else {
                    None
                };
                match (kind, ev) {
                    (TxKind::Register, TuEvent::Response { message, .. }) => {
                        self.on_register_response(now, flow, &message)
                    }
                    (TxKind::Register, _) => {
                        let first = !self.reg.as_ref().is_some_and(|r| r.registered);
                        self.register_failed(now, first, "REGISTER timed out: no response".into());
                    }
                    (TxKind::Invite, TuEvent::Response { message, .. }) => {
                        self.on_invite_response(now, &message)
                    }
                    (TxKind::Invite, _) => {
                        if matches!(
                            self.call.as_ref().map(|c| c.state),
                            Some(CallState::Inviting { .. } | CallState::Cancelling)
                        ) {
                            self.log.final_status = Some(408);
                            self.end_call(Err("call failed: no answer (408 timeout)".into()));
                        }
                    }
                    (TxKind::Bye, TuEvent::Response { code, .. }) if code < 200 => {}
                    (TxKind::Bye, _) => self.on_bye_done(),
                    (TxKind::Cancel, _) => {}
                }
            }
        }
    }
}

/// Where in-dialog requests go: the outbound proxy, else the dialog's next hop (first route or
/// remote target), else `fallback`.
fn dialog_dest(proxy: Option<SocketAddr>, d: &Dialog, fallback: &Dest) -> Dest {
    match proxy {
        Some(p) => Dest::Addr(p),
        None => dialog::parse_target(&d.next_hop())
            .map(Dest::Uri)
            .unwrap_or_else(|_| fallback.clone()),
    }
}

/// RFC 3261 §9.1: CANCEL for a pending INVITE (same Request-URI, Call-ID, From, To, CSeq
/// number, top Via and Route).
fn build_cancel(invite: &[u8]) -> Option<Vec<u8>> {
    let m = parse(invite)?;
    let StartLine::Request { uri, .. } = m.start else {
        return None;
    };
    let via = m.header(HeaderKind::Via)?;
    let cseq = m.cseq()?.number;
    let mut r = format!(
        "CANCEL {} SIP/2.0\r\nVia: {}\r\n",
        text(uri),
        text(via.raw_value)
    );
    for h in m.headers.iter().filter(|h| h.kind == HeaderKind::Route) {
        r.push_str(&format!("Route: {}\r\n", text(h.raw_value)));
    }
    for k in [HeaderKind::From, HeaderKind::To, HeaderKind::CallId] {
        let h = m.header(k)?;
        r.push_str(&format!("{}: {}\r\n", text(h.name), text(h.raw_value)));
    }
    r.push_str(&format!(
        "CSeq: {cseq} CANCEL\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ));
    Some(r.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use voxgate_sip::digest::ha1;
    use voxgate_sip::registrar::{Registrar, RegistrarConfig};
    use voxgate_sip::{Algorithm, DigestAuth, DigestConfig, Verdict};

    fn config(user: &str, ip: [u8; 4]) -> UaConfig {
        UaConfig {
            user: user.into(),
            domain: format!("{user}.example"),
            password: Some(Zeroizing::new("correct horse".into())),
            transport: TransportKind::Tls,
            contact_addr: SocketAddr::from((ip, 5061)),
            proxy: None,
            policy: EncryptionPolicy::Mandatory,
            media_addr: SocketAddr::from((ip, 4000)),
            register: false,
            register_expires: 600,
            call: None,
            answer: false,
            max_calls: 1,
            call_duration: None,
            timers: Timers::default(),
        }
    }

    fn drain(ua: &mut UserAgent) -> (Vec<(Dest, Vec<u8>)>, Vec<Event>) {
        let (mut sent, mut events) = (Vec::new(), Vec::new());
        while let Some(o) = ua.poll_output() {
            match o {
                Output::Send { dest, bytes } => sent.push((dest, bytes)),
                Output::Event(e) => events.push(e),
            }
        }
        (sent, events)
    }

    fn method(b: &[u8]) -> String {
        let m = parse(b).unwrap();
        match m.start {
            StartLine::Request { method, .. } => method.to_string(),
            StartLine::Response { code, .. } => code.to_string(),
        }
    }

    /// Alice and Bob wired back to back; returns what each saw (messages by method/code).
    fn exchange(
        now: Instant,
        alice: &mut UserAgent,
        bob: &mut UserAgent,
        seen: &mut Vec<String>,
        events: &mut Vec<(&'static str, Event)>,
    ) {
        for _ in 0..20 {
            let (a_out, a_ev) = drain(alice);
            let (b_out, b_ev) = drain(bob);
            events.extend(a_ev.into_iter().map(|e| ("alice", e)));
            events.extend(b_ev.into_iter().map(|e| ("bob", e)));
            if a_out.is_empty() && b_out.is_empty() {
                return;
            }
            for (_, b) in a_out {
                seen.push(format!("a>{}", method(&b)));
                bob.handle_message(now, FlowId(1), &b);
            }
            for (_, b) in b_out {
                seen.push(format!("b>{}", method(&b)));
                alice.handle_message(now, FlowId(2), &b);
            }
        }
        panic!("messages never settle: {seen:?}");
    }

    #[test]
    fn call_answer_and_hang_up_back_to_back() {
        let t0 = Instant::now();
        let mut a = config("alice", [127, 0, 0, 1]);
        a.call = Some("sip:bob@127.0.0.2:5061;transport=tls".into());
        a.call_duration = Some(Duration::from_secs(2));
        let mut b = config("bob", [127, 0, 0, 2]);
        b.answer = true;
        let (mut alice, mut bob) = (UserAgent::new(a), UserAgent::new(b));
        bob.start(t0);
        alice.start(t0);
        let (mut seen, mut events) = (Vec::new(), Vec::new());
        exchange(t0, &mut alice, &mut bob, &mut seen, &mut events);
        assert_eq!(seen, ["a>INVITE", "b>180", "b>200", "a>ACK"]);
        let plans: Vec<_> = events
            .iter()
            .filter_map(|(who, e)| match e {
                Event::CallStarted(p) => Some((*who, p)),
                _ => None,
            })
            .collect();
        assert_eq!(plans.len(), 2);
        for (who, p) in &plans {
            let Security::Srtp { send, receive, .. } = &p.security else {
                panic!("{who}: mandatory gave no SRTP")
            };
            assert_ne!(send.keys[0].key_salt, receive.keys[0].key_salt);
            let port = if *who == "alice" {
                "127.0.0.2:4000"
            } else {
                "127.0.0.1:4000"
            };
            assert_eq!(p.remote, Some(port.parse().unwrap()), "{who}");
        }
        // Each side receives with the key the other sends with.
        let key =
            |who: &str, send: bool| match &plans.iter().find(|p| p.0 == who).unwrap().1.security {
                Security::Srtp {
                    send: s,
                    receive: r,
                    ..
                } => {
                    if send {
                        s.clone()
                    } else {
                        r.clone()
                    }
                }
                Security::Unencrypted => unreachable!(),
            };
        assert_eq!(key("alice", true), key("bob", false));
        assert_eq!(key("bob", true), key("alice", false));

        // The duration runs out: BYE, 200, both done.
        let t1 = t0 + Duration::from_secs(2);
        assert_eq!(alice.poll_timeout(), Some(t1));
        alice.handle_timeout(t1);
        seen.clear();
        events.clear();
        exchange(t1, &mut alice, &mut bob, &mut seen, &mut events);
        assert_eq!(seen, ["a>BYE", "b>200"]);
        let done: Vec<_> = events
            .iter()
            .filter_map(|(w, e)| match e {
                Event::Done(r) => Some((*w, r.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(done, [("bob", Ok(())), ("alice", Ok(()))]);
        assert_eq!(alice.log.calls, 1);
        assert_eq!(alice.log.encrypted, Some(true));
    }

    #[test]
    fn a_plain_callee_refuses_a_mandatory_caller_with_488() {
        let t0 = Instant::now();
        let mut a = config("alice", [127, 0, 0, 1]);
        a.call = Some("sip:bob@127.0.0.2".into());
        let mut b = config("bob", [127, 0, 0, 2]);
        b.answer = true;
        b.policy = EncryptionPolicy::Off;
        let (mut alice, mut bob) = (UserAgent::new(a), UserAgent::new(b));
        bob.start(t0);
        alice.start(t0);
        let (mut seen, mut events) = (Vec::new(), Vec::new());
        exchange(t0, &mut alice, &mut bob, &mut seen, &mut events);
        assert_eq!(seen, ["a>INVITE", "b>488", "a>ACK"]);
        let err = events
            .iter()
            .find_map(|(w, e)| match (w, e) {
                (&"alice", Event::Done(Err(e))) => Some(e.clone()),
                _ => None,
            })
            .expect("alice fails");
        assert!(err.contains("488") && err.contains("off here"), "{err}");
        assert_eq!(alice.log.final_status, Some(488));
    }

    /// The INVITE through a proxy that challenges it: 407, ACK, the INVITE again with a new
    /// CSeq and a Proxy-Authorization the proxy's digest server accepts.
    #[test]
    fn a_407_is_answered_with_proxy_authorization() {
        let t0 = Instant::now();
        let proxy: SocketAddr = "127.0.0.9:5061".parse().unwrap();
        let mut a = config("alice", [127, 0, 0, 1]);
        a.call = Some("sip:bob@b.example".into());
        a.proxy = Some(proxy);
        let mut alice = UserAgent::new(a);
        alice.start(t0);
        let mut auth = DigestAuth::new(DigestConfig::new("alice.example")).unwrap();
        let (sent, _) = drain(&mut alice);
        assert_eq!(sent.len(), 1);
        assert_eq!(
            sent[0].0,
            Dest::Addr(proxy),
            "everything goes to the outbound proxy"
        );
        let inv = parse(&sent[0].1).unwrap();
        let extra: Vec<(&str, String)> = auth
            .challenges(t0, false)
            .into_iter()
            .map(|c| ("Proxy-Authenticate", c))
            .collect();
        let r407 = build_response(&inv, 407, Some("p1"), &extra, None);
        alice.handle_message(t0, FlowId(1), &r407);
        let (sent, _) = drain(&mut alice);
        let methods: Vec<String> = sent.iter().map(|(_, b)| method(b)).collect();
        assert_eq!(methods, ["ACK", "INVITE"]);
        let again = parse(&sent[1].1).unwrap();
        assert_eq!(again.cseq().unwrap().number, inv.cseq().unwrap().number + 1);
        assert_eq!(again.call_id(), inv.call_id());
        assert_ne!(again.vias()[0].branch(), inv.vias()[0].branch());
        let pa = again.header_named("Proxy-Authorization").unwrap();
        assert!(text(&pa.value).contains("algorithm=SHA-256"));
        let v = auth.verify(
            t0,
            "127.0.0.1".parse().unwrap(),
            "INVITE",
            "sip:bob@b.example",
            Some(&pa.value),
            |u, alg| (u == "alice").then(|| ha1(alg, "alice", "alice.example", "correct horse")),
        );
        assert_eq!(
            v,
            Verdict::Accepted {
                user: "alice".into()
            }
        );
        // Challenged again: the password must be wrong; the call fails and says so.
        let r407 = build_response(&again, 407, Some("p1"), &extra, None);
        alice.handle_message(t0, FlowId(1), &r407);
        let (_, events) = drain(&mut alice);
        let err = events
            .iter()
            .find_map(|e| match e {
                Event::Done(Err(e)) => Some(e.clone()),
                _ => None,
            })
            .unwrap();
        assert!(err.contains("407") && err.contains("password"), "{err}");
    }

    #[test]
    fn registration_with_digest_is_refreshed_before_expiry() {
        let t0 = Instant::now();
        let proxy: SocketAddr = "127.0.0.9:5061".parse().unwrap();
        let mut a = config("alice", [127, 0, 0, 1]);
        a.domain = "a.example".into();
        a.register = true;
        a.answer = true;
        a.proxy = Some(proxy);
        let mut alice = UserAgent::new(a);
        let mut registrar = Registrar::new(RegistrarConfig {
            domains: vec!["a.example".into()],
            ..Default::default()
        });
        let mut auth = DigestAuth::new(DigestConfig::new("a.example")).unwrap();
        fn register(
            alice: &mut UserAgent,
            registrar: &mut Registrar,
            auth: &mut DigestAuth,
            now: Instant,
        ) -> (Vec<u16>, Vec<Event>) {
            let creds = |u: &str, alg: Algorithm| {
                (u == "alice").then(|| ha1(alg, "alice", "a.example", "correct horse"))
            };
            let proxy_ip = "127.0.0.9".parse().unwrap();
            let mut codes = Vec::new();
            let mut all = Vec::new();
            for _ in 0..4 {
                let (sent, events) = drain(alice);
                all.extend(events);
                let Some((_, req)) = sent.into_iter().next() else {
                    break;
                };
                let m = parse(&req).unwrap();
                assert_eq!(m.method(), Some("REGISTER"));
                let resp = registrar.handle_register(now, proxy_ip, &m, auth, creds);
                codes.push(parse(&resp).and_then(|r| status(&r)).unwrap().0);
                alice.handle_message(now, FlowId(7), &resp);
            }
            (codes, all)
        }
        alice.start(t0);
        let (codes, events) = register(&mut alice, &mut registrar, &mut auth, t0);
        assert_eq!(codes, [401, 200]);
        assert!(events.iter().any(|e| matches!(e, Event::Ready)));
        assert_eq!(registrar.lookup(t0, "alice@a.example").len(), 1);
        // 600 s granted: refreshed at 480 s, well before expiry.
        let at = alice.poll_timeout().unwrap();
        assert_eq!(at, t0 + Duration::from_secs(480));
        alice.handle_timeout(at);
        let (codes, _) = register(&mut alice, &mut registrar, &mut auth, at);
        assert_eq!(codes, [401, 200]);
        // The registration's connection closes: register again at once.
        let t2 = at + Duration::from_secs(1);
        alice.flow_closed(t2, FlowId(7));
        assert_eq!(alice.poll_timeout(), Some(t2));
        // At the end the binding is removed (Expires: 0, authenticated) before `Done`.
        alice.shutdown(t2, None);
        let (codes, events) = register(&mut alice, &mut registrar, &mut auth, t2);
        assert_eq!(codes, [401, 200]);
        assert!(
            matches!(events.last(), Some(Event::Done(Ok(())))),
            "{events:?}"
        );
        assert!(registrar.lookup(t2, "alice@a.example").is_empty());
    }

    #[test]
    fn hanging_up_while_ringing_cancels_the_invite() {
        let t0 = Instant::now();
        let mut a = config("alice", [127, 0, 0, 1]);
        a.call = Some("sip:bob@127.0.0.2".into());
        let mut alice = UserAgent::new(a);
        alice.start(t0);
        let (sent, _) = drain(&mut alice);
        let inv = parse(&sent[0].1).unwrap();
        let contact = [("Contact", "<sip:bob@127.0.0.2>".to_string())];
        alice.handle_message(
            t0,
            FlowId(1),
            &build_response(&inv, 180, Some("b1"), &contact, None),
        );
        alice.hangup(t0);
        let (sent, _) = drain(&mut alice);
        assert_eq!(sent.len(), 1);
        let cancel = parse(&sent[0].1).unwrap();
        assert_eq!(cancel.method(), Some("CANCEL"));
        assert_eq!(cancel.vias()[0].branch(), inv.vias()[0].branch());
        assert_eq!(cancel.cseq().unwrap().number, inv.cseq().unwrap().number);
        assert!(cancel.to().unwrap().param("tag").is_none());
        alice.handle_message(
            t0,
            FlowId(1),
            &build_response(&cancel, 200, Some("b1"), &[], None),
        );
        alice.handle_message(
            t0,
            FlowId(1),
            &build_response(&inv, 487, Some("b1"), &[], None),
        );
        let (sent, events) = drain(&mut alice);
        assert_eq!(method(&sent[0].1), "ACK", "the transaction ACKs the 487");
        assert!(events
            .iter()
            .any(|e| matches!(e, Event::Done(Err(e)) if e.contains("cancelled"))));
    }

    #[test]
    fn over_udp_the_callee_retransmits_its_200_until_the_ack() {
        let t0 = Instant::now();
        let mut a = config("alice", [127, 0, 0, 1]);
        a.transport = TransportKind::Udp;
        a.call = Some("sip:bob@127.0.0.2:5061;transport=udp".into());
        let mut b = config("bob", [127, 0, 0, 2]);
        b.transport = TransportKind::Udp;
        b.answer = true;
        let (mut alice, mut bob) = (UserAgent::new(a), UserAgent::new(b));
        alice.start(t0);
        bob.start(t0);
        let (sent, _) = drain(&mut alice);
        bob.handle_message(t0, FlowId(1), &sent[0].1);
        let (sent, _) = drain(&mut bob);
        let codes: Vec<String> = sent.iter().map(|(_, b)| method(b)).collect();
        assert_eq!(codes, ["180", "200"]);
        let ok = sent[1].1.clone();
        // The ACK is lost: the 200 goes again after T1, then 2*T1.
        let t1 = t0 + Duration::from_millis(500);
        bob.handle_timeout(t1);
        let (sent, _) = drain(&mut bob);
        assert_eq!(
            sent.iter().map(|(_, b)| method(b)).collect::<Vec<_>>(),
            ["200"]
        );
        // Alice answers every copy of the 200 with an ACK; the first that arrives stops it.
        alice.handle_message(t1, FlowId(2), &ok);
        alice.handle_message(t1, FlowId(2), &ok);
        let (sent, _) = drain(&mut alice);
        let acks: Vec<_> = sent.iter().filter(|(_, b)| method(b) == "ACK").collect();
        assert_eq!(acks.len(), 2);
        bob.handle_message(t1, FlowId(1), &acks[0].1);
        let t2 = t1 + Duration::from_secs(1);
        bob.handle_timeout(t2);
        let (sent, _) = drain(&mut bob);
        assert!(sent.is_empty(), "no 200 after the ACK");
    }

    /// Mutated copies of every message of a call, fed to callers and callees in each state:
    /// nothing panics, and whatever is sent still parses.
    #[test]
    fn mutated_messages_never_panic() {
        let t0 = Instant::now();
        let mut a = config("alice", [127, 0, 0, 1]);
        a.call = Some("sip:bob@127.0.0.2".into());
        a.call_duration = Some(Duration::from_secs(1));
        let mut b = config("bob", [127, 0, 0, 2]);
        b.answer = true;
        let (mut alice, mut bob) = (UserAgent::new(a), UserAgent::new(b));
        bob.start(t0);
        alice.start(t0);
        let mut corpus = Vec::new();
        for round in 0..2 {
            let now = t0 + Duration::from_secs(round * 2);
            alice.handle_timeout(now);
            for _ in 0..10 {
                let (ao, _) = drain(&mut alice);
                let (bo, _) = drain(&mut bob);
                if ao.is_empty() && bo.is_empty() {
                    break;
                }
                for (_, m) in ao {
                    corpus.push(m.clone());
                    bob.handle_message(now, FlowId(1), &m);
                }
                for (_, m) in bo {
                    corpus.push(m.clone());
                    alice.handle_message(now, FlowId(2), &m);
                }
            }
        }
        assert!(corpus.len() >= 6);
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rnd = |n: usize| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n as u64) as usize
        };
        for i in 0..3000 {
            let mut m = corpus[i % corpus.len()].clone();
            for _ in 0..1 + rnd(4) {
                let at = rnd(m.len());
                match rnd(4) {
                    0 => m[at] = rnd(256) as u8,
                    1 => m.truncate(at),
                    2 => m.insert(at, b",;:<>\"\r\n@="[rnd(10)]),
                    _ => {
                        let end = (at + rnd(40)).min(m.len());
                        m.drain(at..end);
                    }
                }
                if m.is_empty() {
                    break;
                }
            }
            let mut callee = config("bob", [127, 0, 0, 2]);
            callee.answer = true;
            let mut fresh = UserAgent::new(callee);
            fresh.start(t0);
            for ua in [&mut alice, &mut bob, &mut fresh] {
                ua.handle_message(t0, FlowId(3), &m);
                ua.handle_timeout(t0 + Duration::from_secs(40));
                let (sent, _) = drain(ua);
                for (_, out) in sent {
                    assert!(parse(&out).is_some(), "{}", String::from_utf8_lossy(&out));
                }
            }
        }
    }
}
