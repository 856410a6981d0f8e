//! The mediation function, sans-I/O: warrants in, X2/X3 from the SPGs in, IRI records,
//! decrypted content and PCM out, every sensitive step in the audit log.
//!
//! Nothing is decrypted unless a warrant is active *now* and its targets match the call by the
//! mediation's own check of the call's parties (what an SPG claims is not trusted: an SPG's
//! task list only decides what it copies). The escrowed keys of a session are unsealed (HPKE,
//! the authority's key) the first time they are needed for such a call, once per key_update
//! generation, and the unseal is audited; they are dropped (and wiped) when the call ends or
//! when its last content warrant stops (deactivated or past its window).
//!
//! Per content datagram: the call by (SPG, correlation ID), the stream by its 5-tuple among the
//! call's escrowed streams, SRTP unprotect with that stream's key (replay-checked), then the
//! plaintext RTP packet is delivered (X3) to each warrant's agency and G.711 is decoded to PCM
//! placed by RTP timestamp ([`Output::Pcm`]), per direction relative to the target.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use voxgate_escrow::seal::AuthorityKeyPair;
use voxgate_escrow::wire::Direction;
use voxgate_keystore::open_session;
use voxgate_keystore::StoredSession;
use voxgate_rtp::g711::Law;
use voxgate_rtp::{MasterKey, SrtpPolicy, SrtpProfile, SrtpSession};

use crate::audit::{fields, AuditLog, Entry};
use crate::iri::{IriRecord, IriType, PoiEvent, IRI_MIME, POI_EVENT_MIME};
use crate::poi::{Task, TaskList};
use crate::warrant::{
    CallParties, Delivery, MatchedAs, Warrant, WarrantBook, WarrantError, WarrantRequest,
};
use crate::x2x3::{Attribute, PayloadDirection, PayloadFormat, Pdu, PduType};

/// Calls followed at once per mediation.
pub const MAX_CALLS: usize = 100_000;

/// Errors of one PDU from an SPG. None of them stops the mediation.
#[derive(Debug, thiserror::Error)]
pub enum MediationError {
    #[error("X2 payload is not a PoiEvent: {0}")]
    BadEvent(String),
    #[error("X2 PDU without the content type {POI_EVENT_MIME}")]
    WrongContentType,
    #[error("PDU type not expected from an SPG")]
    UnexpectedPdu,
    #[error("no active warrant matches the call {correlation:#018x} from {poi}: nothing kept")]
    NoWarrant { poi: String, correlation: u64 },
    #[error("content for an unknown call {correlation:#018x} from {poi}: dropped")]
    UnknownCall { poi: String, correlation: u64 },
    #[error("content for call {correlation:#018x}: no active content warrant: dropped")]
    NotAuthorized { correlation: u64 },
    #[error("content for call {correlation:#018x}: no escrowed stream {src} -> {dst}")]
    NoStream {
        correlation: u64,
        src: SocketAddr,
        dst: SocketAddr,
    },
    #[error("content PDU without its 5-tuple attributes")]
    NoTuple,
    #[error("session {session_id}: sealed keys cannot be opened: {reason}")]
    Unseal { session_id: String, reason: String },
    #[error("SRTP: {0}")]
    Srtp(String),
}

/// Which way a stream goes, seen from the warrant's target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TargetDirection {
    FromTarget,
    ToTarget,
}

impl TargetDirection {
    pub fn name(self) -> &'static str {
        match self {
            TargetDirection::FromTarget => "from-target",
            TargetDirection::ToTarget => "to-target",
        }
    }
}

/// What the driver must do.
#[derive(Debug)]
pub enum Output {
    /// Append to the audit log file.
    Audit(Entry),
    /// An IRI record: write it (iri.json) and send `pdu` (X2) to `destination`.
    Iri {
        destination: String,
        record: Box<IriRecord>,
        pdu: Vec<u8>,
    },
    /// Decrypted content: send `pdu` (X3, the plaintext RTP packet) to `destination`.
    Content {
        destination: String,
        liid: String,
        pdu: Vec<u8>,
    },
    /// Decoded audio of a call for a warrant: `samples` (8 kHz) at `at_sample` of its track.
    Pcm {
        liid: String,
        correlation: u64,
        direction: TargetDirection,
        at_sample: u64,
        samples: Vec<i16>,
    },
    /// A warrant's delivery for a call is over (its audio files can be closed).
    Closed { liid: String, correlation: u64 },
    /// The SPGs' task set changed: send it to every SPG.
    Tasks(TaskList),
}

/// Counters.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MediationStats {
    pub calls: u64,
    pub iri_records: u64,
    pub content_packets: u64,
    pub content_refused: u64,
    pub content_errors: u64,
    pub unseals: u64,
    pub unseal_failures: u64,
    pub events_refused: u64,
}

#[derive(Debug)]
struct MfDelivery {
    liid: String,
    xid: [u8; 16],
    destination: String,
    content: bool,
    target: String,
    matched_as: MatchedAs,
    seq: u64,
    packets: u64,
    closed: bool,
    /// The warrant's window, copied when the delivery opens: a warrant's window never changes,
    /// and a deactivation closes its deliveries (`enforce`).
    start_ms: u64,
    end_ms: u64,
    /// For a gateway target: whether it is the caller's gateway (decided when it opens).
    gateway_is_caller: bool,
}

struct MfStream {
    src: SocketAddr,
    dst: SocketAddr,
    from_caller: bool,
    srtp: SrtpSession,
    /// RTP timestamp of the first packet and its place in the track (samples).
    anchor: Option<(u32, u64)>,
}

struct MfSession {
    session_id: String,
    gateway: String,
    generation: u32,
    record: StoredSession,
    /// Unsealed keys (`None` until needed).
    streams: Option<Vec<MfStream>>,
}

struct MfCall {
    poi: String,
    correlation: u64,
    call_id: String,
    caller: String,
    callee: String,
    caller_peer: Option<String>,
    callee_peer: Option<String>,
    parties: CallParties,
    /// Events kept to open a delivery for a warrant that starts mid-call.
    history: Vec<PoiEvent>,
    answered: bool,
    deliveries: Vec<MfDelivery>,
    sessions: Vec<MfSession>,
    /// Capture time of the call's first content datagram (the tracks' origin).
    media_origin_ms: Option<u64>,
}

/// A call: (the SPG's interned name, its correlation ID).
type CallKey = (u32, u64);

/// The mediation function.
pub struct Mediation {
    node: String,
    book: WarrantBook,
    authority: AuthorityKeyPair,
    audit: AuditLog,
    calls: HashMap<CallKey, MfCall>,
    /// SPG names seen in events, interned (as many as there are SPGs).
    pois: HashMap<String, u32>,
    /// The X3 PDU of the last datagram, kept for its buffers.
    x3: Pdu,
    out: VecDeque<Output>,
    stats: MediationStats,
    /// Refusals already audited (once per SPG and call).
    refused: std::collections::HashSet<(String, u64)>,
    last_tasks: Option<TaskList>,
    scratch: Vec<u8>,
    /// G.711 decoding tables, mu-law and A-law: `g711[i][c] == law.decode(c)`.
    g711: Box<[[i16; 256]; 2]>,
}

impl std::fmt::Debug for Mediation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mediation")
            .field("node", &self.node)
            .field("calls", &self.calls.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

fn matched_name(m: MatchedAs) -> &'static str {
    match m {
        MatchedAs::Caller => "caller",
        MatchedAs::Callee => "callee",
        MatchedAs::Gateway => "gateway",
    }
}

fn sid_hex(id: u64) -> String {
    format!("{id:016x}")
}

impl Mediation {
    pub fn new(
        node: &str,
        book: WarrantBook,
        authority: AuthorityKeyPair,
        audit: AuditLog,
    ) -> Self {
        Mediation {
            node: node.to_string(),
            book,
            authority,
            audit,
            calls: HashMap::new(),
            pois: HashMap::new(),
            x3: Pdu {
                pdu_type: PduType::X3,
                format: PayloadFormat::RtpPacket,
                direction: PayloadDirection::ToTarget,
                xid: [0; 16],
                correlation_id: 0,
                attributes: Vec::with_capacity(2),
                payload: Vec::with_capacity(2048),
            },
            out: VecDeque::new(),
            stats: MediationStats::default(),
            refused: Default::default(),
            last_tasks: None,
            scratch: Vec::with_capacity(2048),
            g711: Box::new([
                std::array::from_fn(|c| Law::Mu.decode(c as u8)),
                std::array::from_fn(|c| Law::A.decode(c as u8)),
            ]),
        }
    }

    pub fn stats(&self) -> &MediationStats {
        &self.stats
    }

    pub fn book(&self) -> &WarrantBook {
        &self.book
    }

    pub fn audit_log(&self) -> &AuditLog {
        &self.audit
    }

    /// Calls followed now.
    pub fn calls(&self) -> usize {
        self.calls.len()
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// A warrant operation refused: who tried what on which LIID, and why.
    fn audit_refusal(&mut self, now_ms: u64, op: &str, liid: &str, who: &str, e: &WarrantError) {
        self.audit(
            now_ms,
            "warrant_refused",
            fields([
                ("liid", liid.into()),
                ("by", who.into()),
                ("op", op.into()),
                ("error", e.to_string().into()),
            ]),
        );
    }

    fn audit(&mut self, now_ms: u64, event: &str, f: BTreeMap<String, serde_json::Value>) {
        let e = self.audit.append(now_ms, event, f);
        self.out.push_back(Output::Audit(e));
    }

    // -----------------------------------------------------------------------------------
    // Warrants (called by the provisioning API with the authenticated caller)

    pub fn create_warrant(
        &mut self,
        now_ms: u64,
        who: &str,
        req: WarrantRequest,
    ) -> Result<Warrant, WarrantError> {
        let liid = req.liid.clone();
        match self.book.create(req, who, now_ms) {
            Ok(w) => {
                let w = w.clone();
                let targets: Vec<String> = w.targets.iter().map(|t| t.to_string()).collect();
                self.audit(
                    now_ms,
                    "warrant_created",
                    fields([
                        ("liid", w.liid.clone().into()),
                        ("by", who.into()),
                        ("targets", targets.into()),
                        ("start_ms", w.start_ms.into()),
                        ("end_ms", w.end_ms.into()),
                        ("destination", w.destination.clone().into()),
                        (
                            "content",
                            matches!(w.delivery, Delivery::IriAndContent).into(),
                        ),
                    ]),
                );
                Ok(w)
            }
            Err(e) => {
                self.audit_refusal(now_ms, "create", &liid, who, &e);
                Err(e)
            }
        }
    }

    pub fn approve_warrant(
        &mut self,
        now_ms: u64,
        who: &str,
        liid: &str,
    ) -> Result<Warrant, WarrantError> {
        let r = self.book.approve(liid, who, now_ms).cloned();
        match &r {
            Ok(w) => {
                let approvals = w.approvals.len();
                let active = w.is_active(now_ms);
                self.audit(
                    now_ms,
                    "warrant_approved",
                    fields([
                        ("liid", liid.into()),
                        ("by", who.into()),
                        ("approvals", approvals.into()),
                        ("active", active.into()),
                    ]),
                );
                self.reprovision(now_ms);
            }
            Err(e) => self.audit_refusal(now_ms, "approve", liid, who, e),
        }
        r
    }

    pub fn deactivate_warrant(
        &mut self,
        now_ms: u64,
        who: &str,
        liid: &str,
        reason: &str,
    ) -> Result<Warrant, WarrantError> {
        let r = self.book.deactivate(liid, who, reason, now_ms).cloned();
        match &r {
            Ok(_) => {
                self.audit(
                    now_ms,
                    "warrant_deactivated",
                    fields([
                        ("liid", liid.into()),
                        ("by", who.into()),
                        ("reason", reason.into()),
                    ]),
                );
                self.enforce(now_ms);
                self.reprovision(now_ms);
            }
            Err(e) => self.audit_refusal(now_ms, "deactivate", liid, who, e),
        }
        r
    }

    /// A read of one warrant (audited: who looked at what).
    pub fn read_warrant(
        &mut self,
        now_ms: u64,
        who: &str,
        liid: &str,
    ) -> Result<Warrant, WarrantError> {
        let r = self.book.get(liid).cloned();
        self.audit(
            now_ms,
            "warrant_read",
            fields([
                ("liid", liid.into()),
                ("by", who.into()),
                ("found", r.is_ok().into()),
            ]),
        );
        r
    }

    /// The tasks for the SPGs: one per target of each warrant active now.
    pub fn tasks(&self, now_ms: u64) -> TaskList {
        let mut tasks = Vec::new();
        for w in self.book.list() {
            if !w.is_active(now_ms) {
                continue;
            }
            for t in &w.targets {
                tasks.push(Task {
                    xid: crate::warrant::format_xid(&w.xid),
                    target: t.to_string(),
                    content: matches!(w.delivery, Delivery::IriAndContent),
                    until_ms: w.end_ms,
                });
            }
        }
        TaskList { tasks }
    }

    fn reprovision(&mut self, now_ms: u64) {
        let t = self.tasks(now_ms);
        if self.last_tasks.as_ref() != Some(&t) {
            self.last_tasks = Some(t.clone());
            self.audit(
                now_ms,
                "tasks_provisioned",
                fields([("tasks", t.tasks.len().into())]),
            );
            self.out.push_back(Output::Tasks(t));
        }
    }

    /// When a warrant's window next opens or closes.
    pub fn poll_timeout(&self, now_ms: u64) -> Option<u64> {
        self.book.next_change_ms(now_ms)
    }

    /// At a window's edge: deliveries whose warrant ended stop (keys dropped), the SPGs get
    /// the new task set.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        self.enforce(now_ms);
        self.reprovision(now_ms);
    }

    /// Stops every delivery whose warrant is not active now; drops the keys of calls left
    /// without a content delivery.
    fn enforce(&mut self, now_ms: u64) {
        let mut stopped = Vec::new();
        for call in self.calls.values_mut() {
            for d in call.deliveries.iter_mut().filter(|d| !d.closed) {
                let active = self.book.get(&d.liid).is_ok_and(|w| w.is_active(now_ms));
                if !active {
                    d.closed = true;
                    stopped.push((d.liid.clone(), call.correlation, d.packets));
                }
            }
            if !call.deliveries.iter().any(|d| !d.closed && d.content) {
                for s in &mut call.sessions {
                    s.streams = None;
                }
            }
        }
        for (liid, correlation, packets) in stopped {
            self.audit(
                now_ms,
                "delivery_stopped",
                fields([
                    ("liid", liid.clone().into()),
                    ("correlation", sid_hex(correlation).into()),
                    ("reason", "warrant not active".into()),
                    ("content_packets", packets.into()),
                ]),
            );
            self.out.push_back(Output::Closed { liid, correlation });
        }
        self.calls
            .retain(|_, c| c.deliveries.iter().any(|d| !d.closed));
    }

    // -----------------------------------------------------------------------------------
    // PDUs from the SPGs

    /// One PDU from the SPG `poi` (its authenticated name).
    pub fn handle_pdu(&mut self, now_ms: u64, poi: &str, pdu: &Pdu) -> Result<(), MediationError> {
        match pdu.pdu_type {
            PduType::X2 => {
                let mime = pdu.attributes.iter().find_map(|a| match a {
                    Attribute::MimeContentType(m) => Some(m.as_str()),
                    _ => None,
                });
                if mime != Some(POI_EVENT_MIME) {
                    return Err(MediationError::WrongContentType);
                }
                let ev: PoiEvent = serde_json::from_slice(&pdu.payload)
                    .map_err(|e| MediationError::BadEvent(e.to_string()))?;
                self.handle_event(now_ms, poi, pdu.correlation_id, ev)
            }
            PduType::X3 => {
                let mut src_ip = None;
                let mut dst_ip = None;
                let mut src_port = None;
                let mut dst_port = None;
                let mut time_ms = now_ms;
                for a in &pdu.attributes {
                    match a {
                        Attribute::SourceIpv4(ip) => src_ip = Some(IpAddr::V4(*ip)),
                        Attribute::DestIpv4(ip) => dst_ip = Some(IpAddr::V4(*ip)),
                        Attribute::SourceIpv6(ip) => src_ip = Some(IpAddr::V6(*ip).to_canonical()),
                        Attribute::DestIpv6(ip) => dst_ip = Some(IpAddr::V6(*ip).to_canonical()),
                        Attribute::SourcePort(p) => src_port = Some(*p),
                        Attribute::DestPort(p) => dst_port = Some(*p),
                        Attribute::Timestamp { secs, nanos } => {
                            time_ms = u64::from(*secs) * 1000 + u64::from(*nanos) / 1_000_000
                        }
                        _ => {}
                    }
                }
                let (Some(si), Some(di), Some(sp), Some(dp)) = (src_ip, dst_ip, src_port, dst_port)
                else {
                    return Err(MediationError::NoTuple);
                };
                self.handle_content(
                    now_ms,
                    poi,
                    pdu.correlation_id,
                    time_ms,
                    SocketAddr::new(si, sp),
                    SocketAddr::new(di, dp),
                    &pdu.payload,
                )
            }
            _ => Err(MediationError::UnexpectedPdu),
        }
    }

    fn refuse_once(&mut self, now_ms: u64, poi: &str, correlation: u64, why: &str) {
        if self.refused.len() > 100_000 {
            self.refused.clear();
        }
        if self.refused.insert((poi.to_string(), correlation)) {
            self.audit(
                now_ms,
                "refused",
                fields([
                    ("poi", poi.into()),
                    ("correlation", sid_hex(correlation).into()),
                    ("reason", why.into()),
                ]),
            );
        }
    }

    /// One call event from an SPG.
    pub fn handle_event(
        &mut self,
        now_ms: u64,
        poi: &str,
        correlation: u64,
        ev: PoiEvent,
    ) -> Result<(), MediationError> {
        if let PoiEvent::Registration { .. } = &ev {
            return self.report(now_ms, poi, correlation, &ev);
        }
        let next = u32::try_from(self.pois.len()).unwrap_or(u32::MAX);
        let poi_id = match self.pois.get(poi) {
            Some(id) => *id,
            None => *self.pois.entry(poi.to_string()).or_insert(next),
        };
        let key = (poi_id, correlation);
        if let PoiEvent::Attempt {
            call_id,
            from_uri,
            to_uri,
            caller_peer,
            callee_peer,
            ..
        } = &ev
        {
            if !self.calls.contains_key(&key) {
                if self.calls.len() >= MAX_CALLS {
                    self.stats.events_refused += 1;
                    return Err(MediationError::NoWarrant {
                        poi: poi.to_string(),
                        correlation,
                    });
                }
                let parties = CallParties {
                    caller: Some(from_uri.clone()),
                    callee: Some(to_uri.clone()),
                    gateways: caller_peer
                        .iter()
                        .chain(callee_peer.iter())
                        .cloned()
                        .collect(),
                };
                self.calls.insert(
                    key,
                    MfCall {
                        poi: poi.to_string(),
                        correlation,
                        call_id: call_id.clone(),
                        caller: from_uri.clone(),
                        callee: to_uri.clone(),
                        caller_peer: caller_peer.clone(),
                        callee_peer: callee_peer.clone(),
                        parties,
                        history: Vec::new(),
                        answered: false,
                        deliveries: Vec::new(),
                        sessions: Vec::new(),
                        media_origin_ms: None,
                    },
                );
                self.stats.calls += 1;
            }
        }
        let Some(call) = self.calls.get_mut(&key) else {
            self.stats.events_refused += 1;
            self.refuse_once(now_ms, poi, correlation, "event of a call not followed");
            return Err(MediationError::UnknownCall {
                poi: poi.to_string(),
                correlation,
            });
        };
        // Duplicates (an SPG replays a call's history to a task added mid-call).
        let dup = match &ev {
            PoiEvent::Attempt { .. } => !call.history.is_empty(),
            PoiEvent::Answered { .. } => call.answered,
            PoiEvent::KeyUpdate {
                session_id,
                generation,
                ..
            } => call
                .sessions
                .iter()
                .any(|s| &s.session_id == session_id && s.generation >= *generation),
            _ => false,
        };
        if !dup {
            if matches!(ev, PoiEvent::Answered { .. }) {
                call.answered = true;
            }
            if let PoiEvent::KeyUpdate {
                session_id,
                gateway,
                generation,
                created_ms,
                sealed,
                call_id,
                ..
            } = &ev
            {
                let sealed = B64
                    .decode(sealed)
                    .map_err(|e| MediationError::BadEvent(format!("sealed: {e}")))?;
                let id = u64::from_str_radix(session_id, 16)
                    .map_err(|e| MediationError::BadEvent(format!("session_id: {e}")))?;
                let record = StoredSession {
                    session_id: id,
                    gateway: gateway.clone(),
                    call_id: call_id.clone(),
                    generation: *generation,
                    created_ms: *created_ms,
                    ended_ms: None,
                    sealed,
                    tuples: Vec::new(),
                };
                call.sessions.retain(|s| &s.session_id != session_id);
                call.sessions.push(MfSession {
                    session_id: session_id.clone(),
                    gateway: gateway.clone(),
                    generation: *generation,
                    record,
                    streams: None,
                });
            }
            if !matches!(ev, PoiEvent::Alerting { .. } | PoiEvent::Modified { .. }) {
                call.history.push(ev.clone());
            }
        }
        // The mediation's own check: which warrants are active and match this call now.
        let matches = self.book.matching(now_ms, &call.parties);
        let mut opened = Vec::new();
        for m in matches {
            if call.deliveries.iter().any(|d| d.liid == m.liid) {
                continue;
            }
            let (start_ms, end_ms) = self
                .book
                .get(&m.liid)
                .map_or((0, 0), |w| (w.start_ms, w.end_ms));
            let target = m.matched.to_string();
            let gateway_is_caller = call
                .caller_peer
                .as_deref()
                .is_some_and(|p| is_gateway_target(&target, p));
            call.deliveries.push(MfDelivery {
                liid: m.liid.clone(),
                xid: m.xid,
                destination: m.destination.clone(),
                content: matches!(m.delivery, Delivery::IriAndContent),
                target,
                matched_as: m.as_,
                seq: 0,
                packets: 0,
                closed: false,
                start_ms,
                end_ms,
                gateway_is_caller,
            });
            opened.push(call.deliveries.len() - 1);
        }
        // Deliveries whose warrant stopped: closed.
        for d in call.deliveries.iter_mut().filter(|d| !d.closed) {
            if !self.book.get(&d.liid).is_ok_and(|w| w.is_active(now_ms)) {
                d.closed = true;
            }
        }
        if call.deliveries.iter().all(|d| d.closed) {
            let ended = matches!(ev, PoiEvent::Ended { .. } | PoiEvent::Failed { .. });
            self.calls.remove(&key);
            self.stats.events_refused += 1;
            if !ended {
                self.refuse_once(
                    now_ms,
                    poi,
                    correlation,
                    "no active warrant matches the call",
                );
            }
            return Err(MediationError::NoWarrant {
                poi: poi.to_string(),
                correlation,
            });
        }
        // New deliveries get the call's history; the others this event (if new).
        let history = call.history.clone();
        let mut records = Vec::new();
        for (i, d) in call.deliveries.iter_mut().enumerate() {
            if d.closed {
                continue;
            }
            if opened.contains(&i) {
                for h in &history {
                    records.push(Self::record(
                        call_ref(
                            poi,
                            correlation,
                            &call.caller,
                            &call.callee,
                            &call.caller_peer,
                            &call.callee_peer,
                        ),
                        d,
                        h,
                    ));
                }
                if !history.contains(&ev) && !dup {
                    records.push(Self::record(
                        call_ref(
                            poi,
                            correlation,
                            &call.caller,
                            &call.callee,
                            &call.caller_peer,
                            &call.callee_peer,
                        ),
                        d,
                        &ev,
                    ));
                }
            } else if !dup {
                records.push(Self::record(
                    call_ref(
                        poi,
                        correlation,
                        &call.caller,
                        &call.callee,
                        &call.caller_peer,
                        &call.callee_peer,
                    ),
                    d,
                    &ev,
                ));
            }
        }
        let opened_liids: Vec<(String, String)> = opened
            .iter()
            .map(|&i| {
                (
                    call.deliveries[i].liid.clone(),
                    call.deliveries[i].destination.clone(),
                )
            })
            .collect();
        let wants_content = call.deliveries.iter().any(|d| !d.closed && d.content);
        let call_id = call.call_id.clone();
        for (liid, destination) in opened_liids {
            self.audit(
                now_ms,
                "delivery_started",
                fields([
                    ("liid", liid.into()),
                    ("poi", poi.into()),
                    ("correlation", sid_hex(correlation).into()),
                    ("call_id", call_id.clone().into()),
                    ("destination", destination.into()),
                ]),
            );
        }
        for (destination, record, pdu) in records {
            self.stats.iri_records += 1;
            self.out.push_back(Output::Iri {
                destination,
                record: Box::new(record),
                pdu,
            });
        }
        // Keys: unsealed as soon as a content warrant needs them.
        if wants_content {
            self.unseal_pending(now_ms, &key);
        }
        if matches!(ev, PoiEvent::Ended { .. } | PoiEvent::Failed { .. }) {
            self.close_call(now_ms, &key);
        }
        Ok(())
    }

    /// A registration: an IRI REPORT to each warrant active now whose target is its address of
    /// record (the mediation's own check).
    fn report(
        &mut self,
        now_ms: u64,
        poi: &str,
        correlation: u64,
        ev: &PoiEvent,
    ) -> Result<(), MediationError> {
        let PoiEvent::Registration {
            time_ms,
            aor,
            contacts,
            expires,
            source,
        } = ev
        else {
            return Ok(());
        };
        let parties = CallParties {
            caller: Some(aor.clone()),
            callee: None,
            gateways: Vec::new(),
        };
        let matches = self.book.matching(now_ms, &parties);
        if matches.is_empty() {
            self.stats.events_refused += 1;
            self.refuse_once(
                now_ms,
                poi,
                correlation,
                "no active warrant matches the registration",
            );
            return Err(MediationError::NoWarrant {
                poi: poi.to_string(),
                correlation,
            });
        }
        for m in matches {
            let record = IriRecord {
                liid: m.liid.clone(),
                correlation_id: sid_hex(correlation),
                seq: 0,
                iri_type: IriType::Report,
                event: if *expires == Some(0) {
                    "deregistration".into()
                } else {
                    "registration".into()
                },
                time_ms: *time_ms,
                poi: poi.to_string(),
                caller: aor.clone(),
                callee: String::new(),
                caller_peer: None,
                callee_peer: None,
                target: m.matched.to_string(),
                matched_as: matched_name(m.as_).to_string(),
                status: None,
                session_id: None,
                gateway: None,
                generation: None,
                contacts: Some(contacts.clone()),
                expires: *expires,
                source: Some(source.clone()),
            };
            let pdu = iri_pdu(&record, m.xid, correlation);
            self.audit(
                now_ms,
                "report_delivered",
                fields([
                    ("liid", m.liid.clone().into()),
                    ("poi", poi.into()),
                    ("event", record.event.clone().into()),
                    ("destination", m.destination.clone().into()),
                ]),
            );
            self.stats.iri_records += 1;
            self.out.push_back(Output::Iri {
                destination: m.destination.clone(),
                record: Box::new(record),
                pdu,
            });
        }
        Ok(())
    }

    fn record(c: CallRef<'_>, d: &mut MfDelivery, ev: &PoiEvent) -> (String, IriRecord, Vec<u8>) {
        let (iri_type, event, status, session) = match ev {
            PoiEvent::Attempt { .. } => (IriType::Begin, "attempt", None, None),
            PoiEvent::Alerting { status, .. } => {
                (IriType::Continue, "alerting", Some(*status), None)
            }
            PoiEvent::Answered { .. } => (IriType::Continue, "answer", None, None),
            PoiEvent::Modified { .. } => (IriType::Continue, "modify", None, None),
            PoiEvent::KeyUpdate {
                session_id,
                gateway,
                generation,
                ..
            } => (
                IriType::Continue,
                if *generation == 0 {
                    "key_update"
                } else {
                    "rekey"
                },
                None,
                Some((session_id.clone(), gateway.clone(), *generation)),
            ),
            PoiEvent::Failed { status, .. } => (IriType::End, "failed", Some(*status), None),
            PoiEvent::Ended { .. } => (IriType::End, "release", None, None),
            PoiEvent::Registration { .. } => (IriType::Report, "registration", None, None),
        };
        let record = IriRecord {
            liid: d.liid.clone(),
            correlation_id: sid_hex(c.correlation),
            seq: d.seq,
            iri_type,
            event: event.to_string(),
            time_ms: ev.time_ms(),
            poi: c.poi.to_string(),
            caller: c.caller.to_string(),
            callee: c.callee.to_string(),
            caller_peer: c.caller_peer.clone(),
            callee_peer: c.callee_peer.clone(),
            target: d.target.clone(),
            matched_as: matched_name(d.matched_as).to_string(),
            status,
            session_id: session.as_ref().map(|s| s.0.clone()),
            gateway: session.as_ref().map(|s| s.1.clone()),
            generation: session.as_ref().map(|s| s.2),
            contacts: None,
            expires: None,
            source: None,
        };
        d.seq += 1;
        let pdu = iri_pdu(&record, d.xid, c.correlation);
        (d.destination.clone(), record, pdu)
    }

    /// Opens the sealed keys of the call's sessions not opened yet (audited).
    fn unseal_pending(&mut self, now_ms: u64, key: &CallKey) {
        let Some(call) = self.calls.get_mut(key) else {
            return;
        };
        let liids: Vec<String> = call
            .deliveries
            .iter()
            .filter(|d| !d.closed && d.content)
            .map(|d| d.liid.clone())
            .collect();
        let mut entries = Vec::new();
        for s in call.sessions.iter_mut().filter(|s| s.streams.is_none()) {
            let caller_side = match (&call.caller_peer, &call.callee_peer) {
                (Some(p), _) if p.eq_ignore_ascii_case(&s.gateway) => true,
                (_, Some(p)) if p.eq_ignore_ascii_case(&s.gateway) => false,
                _ => true,
            };
            let opened = open_session(&self.authority, &s.record)
                .map_err(|e| e.to_string())
                .and_then(|keys| {
                    keys.iter()
                        .map(|k| {
                            let profile =
                                SrtpProfile::from_name(&k.suite).map_err(|e| e.to_string())?;
                            let (key, salt) =
                                k.master.0.split_at(profile.key_len().min(k.master.0.len()));
                            let mut mk =
                                MasterKey::new(profile, key, salt).map_err(|e| e.to_string())?;
                            if let Some(m) = &k.mki {
                                mk = mk.with_mki(m);
                            }
                            let srtp =
                                SrtpSession::new(SrtpPolicy::new(mk)).map_err(|e| e.to_string())?;
                            let from_gw = k.direction == Direction::Send;
                            Ok(MfStream {
                                src: k.src.0,
                                dst: k.dst.0,
                                from_caller: from_gw == caller_side,
                                srtp,
                                anchor: None,
                            })
                        })
                        .collect::<Result<Vec<_>, String>>()
                });
            match opened {
                Ok(streams) => {
                    let n = streams.len();
                    s.streams = Some(streams);
                    entries.push((
                        "key_unseal",
                        fields([
                            ("liids", liids.clone().into()),
                            ("poi", call.poi.clone().into()),
                            ("correlation", sid_hex(call.correlation).into()),
                            ("session_id", s.session_id.clone().into()),
                            ("gateway", s.gateway.clone().into()),
                            ("generation", s.generation.into()),
                            ("streams", n.into()),
                        ]),
                    ));
                }
                Err(reason) => {
                    // Kept sealed: refused again at the next need, never guessed.
                    entries.push((
                        "key_unseal_failed",
                        fields([
                            ("liids", liids.clone().into()),
                            ("poi", call.poi.clone().into()),
                            ("session_id", s.session_id.clone().into()),
                            ("generation", s.generation.into()),
                            ("error", reason.into()),
                        ]),
                    ));
                }
            }
        }
        for (event, f) in entries {
            if event == "key_unseal" {
                self.stats.unseals += 1;
            } else {
                self.stats.unseal_failures += 1;
                tracing::warn!(event, "sealed session keys could not be opened");
            }
            self.audit(now_ms, event, f);
        }
    }

    fn close_call(&mut self, now_ms: u64, key: &CallKey) {
        let Some(call) = self.calls.remove(key) else {
            return;
        };
        for d in call.deliveries.iter().filter(|d| !d.closed) {
            self.audit(
                now_ms,
                "delivery_ended",
                fields([
                    ("liid", d.liid.clone().into()),
                    ("correlation", sid_hex(call.correlation).into()),
                    ("iri_records", d.seq.into()),
                    ("content_packets", d.packets.into()),
                ]),
            );
            self.out.push_back(Output::Closed {
                liid: d.liid.clone(),
                correlation: call.correlation,
            });
        }
        // The call's SRTP contexts (its keys) are dropped here.
    }

    /// One content datagram (still encrypted) of a call, as the SPG saw it.
    #[allow(clippy::too_many_arguments)]
    pub fn handle_content(
        &mut self,
        now_ms: u64,
        poi: &str,
        correlation: u64,
        time_ms: u64,
        src: SocketAddr,
        dst: SocketAddr,
        packet: &[u8],
    ) -> Result<(), MediationError> {
        // An SPG never seen in an event has no call: u32::MAX is no SPG's id.
        let key = (self.pois.get(poi).copied().unwrap_or(u32::MAX), correlation);
        let Some(call) = self.calls.get_mut(&key) else {
            self.stats.content_refused += 1;
            self.refuse_once(now_ms, poi, correlation, "content of a call not followed");
            return Err(MediationError::UnknownCall {
                poi: poi.to_string(),
                correlation,
            });
        };
        // Authorized now? (a warrant can end between two datagrams)
        let open = || call.deliveries.iter().filter(|d| !d.closed && d.content);
        if !open().any(|d| d.start_ms <= now_ms && now_ms < d.end_ms) {
            self.stats.content_refused += 1;
            // A content delivery whose window just ended is closed now (once: afterwards it
            // is closed, and refusing the call's further datagrams scans nothing).
            if open().next().is_some() {
                self.enforce(now_ms);
            }
            return Err(MediationError::NotAuthorized { correlation });
        }
        if call.sessions.iter().any(|s| s.streams.is_none()) {
            self.unseal_pending(now_ms, &key);
        }
        let Some(call) = self.calls.get_mut(&key) else {
            return Ok(());
        };
        let rtcp = packet.len() >= 2 && (192..=223).contains(&packet[1]);
        let origin = *call.media_origin_ms.get_or_insert(time_ms);
        // The newest generation first (a rekey keeps the 5-tuple).
        let mut found = None;
        for (si, s) in call.sessions.iter().enumerate().rev() {
            if let Some(streams) = &s.streams {
                if let Some(i) = streams.iter().position(|st| st.src == src && st.dst == dst) {
                    found = Some((si, i));
                    break;
                }
            }
        }
        let Some((si, i)) = found else {
            self.stats.content_errors += 1;
            return Err(MediationError::NoStream {
                correlation,
                src,
                dst,
            });
        };
        let stream = match call.sessions[si].streams.as_mut() {
            Some(v) => &mut v[i],
            None => return Ok(()),
        };
        self.scratch.clear();
        self.scratch.extend_from_slice(packet);
        let len = self.scratch.len();
        let res = if rtcp {
            stream.srtp.unprotect_rtcp(&mut self.scratch, len)
        } else {
            stream.srtp.unprotect_rtp(&mut self.scratch, len)
        };
        let n = match res {
            Ok(n) => n,
            Err(e) => {
                self.stats.content_errors += 1;
                return Err(MediationError::Srtp(e.to_string()));
            }
        };
        self.scratch.truncate(n);
        self.stats.content_packets += 1;
        let from_caller = stream.from_caller;
        let mut pcm = None;
        if !rtcp {
            if let Some((ts, pt, payload)) = rtp_payload(&self.scratch) {
                if let Some(law) = Law::from_payload_type(pt) {
                    let (first_ts, base) = *stream.anchor.get_or_insert_with(|| {
                        (ts, time_ms.saturating_sub(origin).saturating_mul(8))
                    });
                    let at = base + u64::from(ts.wrapping_sub(first_ts));
                    let table = match law {
                        Law::Mu => &self.g711[0],
                        Law::A => &self.g711[1],
                    };
                    let samples: Vec<i16> =
                        payload.iter().map(|c| table[usize::from(*c)]).collect();
                    pcm = Some((at, samples));
                }
            }
        }
        let mut deliveries = call
            .deliveries
            .iter_mut()
            .filter(|d| !d.closed && d.content)
            .peekable();
        // The plaintext becomes the X3 PDU's payload without a copy; the buffer goes back to
        // `scratch` after the last delivery.
        std::mem::swap(&mut self.x3.payload, &mut self.scratch);
        while let Some(d) = deliveries.next() {
            let last = deliveries.peek().is_none();
            d.packets += 1;
            let from_target = match d.matched_as {
                MatchedAs::Caller => from_caller,
                MatchedAs::Callee => !from_caller,
                MatchedAs::Gateway => from_caller == d.gateway_is_caller,
            };
            let direction = if from_target {
                TargetDirection::FromTarget
            } else {
                TargetDirection::ToTarget
            };
            if !rtcp {
                let x3 = &mut self.x3;
                x3.direction = if from_target {
                    PayloadDirection::FromTarget
                } else {
                    PayloadDirection::ToTarget
                };
                x3.xid = d.xid;
                x3.correlation_id = correlation;
                x3.attributes.clear();
                x3.attributes.push(Attribute::SequenceNumber(
                    u32::try_from(d.packets).unwrap_or(u32::MAX),
                ));
                x3.attributes.push(Attribute::timestamp_ms(time_ms));
                self.out.push_back(Output::Content {
                    destination: d.destination.clone(),
                    liid: d.liid.clone(),
                    pdu: x3.encode().unwrap_or_default(),
                });
            }
            if let Some((at, samples)) = &mut pcm {
                self.out.push_back(Output::Pcm {
                    liid: d.liid.clone(),
                    correlation,
                    direction,
                    at_sample: *at,
                    // The last delivery takes the samples, the others a copy.
                    samples: if last {
                        std::mem::take(samples)
                    } else {
                        samples.clone()
                    },
                });
            }
        }
        std::mem::swap(&mut self.x3.payload, &mut self.scratch);
        Ok(())
    }
}

/// Whether `target` (canonical: `gateway:NAME`) names the gateway `peer`, ASCII case ignored:
/// `target.eq_ignore_ascii_case(&format!("gateway:{peer}"))` without the allocation.
fn is_gateway_target(target: &str, peer: &str) -> bool {
    let (t, p) = (target.as_bytes(), peer.as_bytes());
    t.len() == 8 + p.len()
        && t[..8].eq_ignore_ascii_case(b"gateway:")
        && t[8..].eq_ignore_ascii_case(p)
}

struct CallRef<'a> {
    poi: &'a str,
    correlation: u64,
    caller: &'a str,
    callee: &'a str,
    caller_peer: &'a Option<String>,
    callee_peer: &'a Option<String>,
}

fn call_ref<'a>(
    poi: &'a str,
    correlation: u64,
    caller: &'a str,
    callee: &'a str,
    caller_peer: &'a Option<String>,
    callee_peer: &'a Option<String>,
) -> CallRef<'a> {
    CallRef {
        poi,
        correlation,
        caller,
        callee,
        caller_peer,
        callee_peer,
    }
}

/// The X2 PDU of an IRI record for the agency: its sequence number, time and matched target as
/// attributes, the record as JSON.
fn iri_pdu(record: &IriRecord, xid: [u8; 16], correlation: u64) -> Vec<u8> {
    Pdu {
        pdu_type: PduType::X2,
        format: PayloadFormat::Mime,
        direction: PayloadDirection::NotApplicable,
        xid,
        correlation_id: correlation,
        attributes: vec![
            Attribute::SequenceNumber(u32::try_from(record.seq).unwrap_or(u32::MAX)),
            Attribute::timestamp_ms(record.time_ms),
            Attribute::MatchedTargetId(record.target.clone()),
            Attribute::MimeContentType(IRI_MIME.to_string()),
        ],
        payload: serde_json::to_vec(record).unwrap_or_default(),
    }
    .encode()
    .unwrap_or_default()
}

/// (timestamp, payload type, payload without padding) of a plaintext RTP packet.
fn rtp_payload(p: &[u8]) -> Option<(u32, u8, &[u8])> {
    if p.len() < 12 || p[0] >> 6 != 2 {
        return None;
    }
    let cc = usize::from(p[0] & 0x0f);
    let mut at = 12 + 4 * cc;
    if p[0] & 0x10 != 0 {
        let h = p.get(at..at + 4)?;
        at += 4 + 4 * usize::from(u16::from_be_bytes([h[2], h[3]]));
    }
    let mut end = p.len();
    if p[0] & 0x20 != 0 {
        let pad = usize::from(*p.last()?);
        end = end.checked_sub(pad)?;
    }
    let payload = p.get(at..end)?;
    let ts = u32::from_be_bytes([p[4], p[5], p[6], p[7]]);
    Some((ts, p[1] & 0x7f, payload))
}
