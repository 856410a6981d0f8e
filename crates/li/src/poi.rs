//! The point of interception inside the SPG, sans-I/O.
//!
//! The mediation provisions it with [`Task`]s (XID, one target identifier, whether content is
//! wanted, until when): the warrants that are active right now, and nothing else (no LIID, no
//! agency). The SPG feeds it every call's signalling events, accepted key_updates and, for the
//! calls it decided to tap, their datagrams (still encrypted). For a call whose parties match a
//! task it emits X2 PDUs (the [`PoiEvent`]s, JSON) and X3 PDUs (each datagram as it crossed the
//! relay, with its 5-tuple); it tells the relay to start or stop copying a call's media
//! ([`PoiOutput::Tap`]). Calls that match no task leave nothing here but their bookkeeping.
//!
//! A task added while a call is up taps it from then on (the POI replays the call's attempt,
//! answer and current keys first, so the mediation can decrypt at once); a task removed or
//! expired stops the copy at once.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;

use aws_lc_rs::digest;
use serde::{Deserialize, Serialize};

use crate::iri::{PoiEvent, POI_EVENT_MIME};
use crate::warrant::{parse_xid, CallParties, TargetId};
use crate::x2x3::{Attribute, PayloadDirection, PayloadFormat, Pdu, PduType};

/// Calls tracked at once (beyond this, new calls are not tracked and cannot be tapped; the
/// refusal is counted).
pub const MAX_CALLS: usize = 200_000;

/// One interception task as the mediation provisions it (the X1 role).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Task {
    /// The task's UUID (hyphenated hex), sent back as the XID of every PDU for it.
    pub xid: String,
    /// One target identifier (`sip:`, `tel:`, `gateway:`), as [`TargetId::parse`] reads it.
    pub target: String,
    /// Content (X3) wanted, not only IRI.
    pub content: bool,
    /// The task ends at this Unix time (ms) even if no update comes.
    pub until_ms: u64,
}

/// The whole set of tasks (each message replaces the previous set).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskList {
    pub tasks: Vec<Task>,
}

/// Errors of provisioning.
#[derive(Debug, thiserror::Error)]
pub enum PoiError {
    #[error("task {xid}: the XID is not a UUID")]
    BadXid { xid: String },
    #[error("task {xid}: target {target:?}: {reason}")]
    BadTarget {
        xid: String,
        target: String,
        reason: String,
    },
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoiOutput {
    /// An encoded X2 or X3 PDU to send to the mediation.
    Pdu(Vec<u8>),
    /// Start (`Some(id)`) or stop copying the call's datagrams (`RelayAnchor::set_tap`).
    Tap { call_id: String, tap: Option<u32> },
}

/// Counters.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PoiStats {
    pub calls_tapped: u64,
    pub x2_sent: u64,
    pub x3_sent: u64,
    pub calls_untracked: u64,
}

#[derive(Debug, Clone)]
struct ParsedTask {
    xid: [u8; 16],
    target: TargetId,
    content: bool,
    until_ms: u64,
}

#[derive(Debug)]
struct PoiCall {
    correlation: u64,
    attempt: PoiEvent,
    parties: CallParties,
    answered: Option<PoiEvent>,
    /// The latest accepted key_update of each session of the call.
    keys: BTreeMap<String, PoiEvent>,
    /// The tasks the call matches now: (xid, content).
    tasks: Vec<([u8; 16], bool)>,
    tap: Option<u32>,
}

/// The point of interception.
#[derive(Debug)]
pub struct Poi {
    node: String,
    tasks: Vec<ParsedTask>,
    calls: HashMap<String, PoiCall>,
    taps: HashMap<u32, String>,
    next_tap: u32,
    seq: u32,
    out: VecDeque<PoiOutput>,
    stats: PoiStats,
}

/// The correlation ID of a call at a node: the first 8 bytes of
/// SHA-256("voxgate-correlation-v1" 0x00 || node || 0x00 || Call-ID).
pub fn correlation_id(node: &str, call_id: &str) -> u64 {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(b"voxgate-correlation-v1\0");
    ctx.update(node.as_bytes());
    ctx.update(&[0]);
    ctx.update(call_id.as_bytes());
    let d = ctx.finish();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d.as_ref()[..8]);
    u64::from_be_bytes(b)
}

impl Poi {
    pub fn new(node: &str) -> Self {
        Poi {
            node: node.to_string(),
            tasks: Vec::new(),
            calls: HashMap::new(),
            taps: HashMap::new(),
            next_tap: 1,
            seq: 0,
            out: VecDeque::new(),
            stats: PoiStats::default(),
        }
    }

    pub fn stats(&self) -> &PoiStats {
        &self.stats
    }

    /// Calls tracked.
    pub fn calls(&self) -> usize {
        self.calls.len()
    }

    /// Whether a call matches a task now.
    pub fn is_tapped(&self, call_id: &str) -> bool {
        self.calls.get(call_id).is_some_and(|c| !c.tasks.is_empty())
    }

    /// Calls tapped now.
    pub fn tapped(&self) -> usize {
        self.calls.values().filter(|c| !c.tasks.is_empty()).count()
    }

    pub fn poll_output(&mut self) -> Option<PoiOutput> {
        self.out.pop_front()
    }

    /// When the next task expires (call [`Poi::handle_timeout`] then).
    pub fn poll_timeout(&self) -> Option<u64> {
        self.tasks.iter().map(|t| t.until_ms).min()
    }

    /// Drops expired tasks (and stops what they tapped).
    pub fn handle_timeout(&mut self, now_ms: u64) {
        let before = self.tasks.len();
        self.tasks.retain(|t| t.until_ms > now_ms);
        if self.tasks.len() != before {
            self.rematch_all(now_ms);
        }
    }

    /// Replaces the task set. A task that does not parse refuses the whole set (the previous
    /// one stays): the mediation must know exactly what is intercepted.
    pub fn set_tasks(&mut self, now_ms: u64, list: &TaskList) -> Result<(), PoiError> {
        let mut parsed = Vec::with_capacity(list.tasks.len());
        for t in &list.tasks {
            let xid = parse_xid(&t.xid).ok_or_else(|| PoiError::BadXid { xid: t.xid.clone() })?;
            let target = TargetId::parse(&t.target).map_err(|e| PoiError::BadTarget {
                xid: t.xid.clone(),
                target: t.target.clone(),
                reason: e.to_string(),
            })?;
            if t.until_ms > now_ms {
                parsed.push(ParsedTask {
                    xid,
                    target,
                    content: t.content,
                    until_ms: t.until_ms,
                });
            }
        }
        self.tasks = parsed;
        self.rematch_all(now_ms);
        Ok(())
    }

    fn matches(&self, parties: &CallParties) -> Vec<([u8; 16], bool)> {
        let mut v: Vec<([u8; 16], bool)> = Vec::new();
        for t in &self.tasks {
            if t.target.matches(parties).is_some() {
                match v.iter_mut().find(|(x, _)| *x == t.xid) {
                    Some(e) => e.1 |= t.content,
                    None => v.push((t.xid, t.content)),
                }
            }
        }
        v
    }

    fn rematch_all(&mut self, now_ms: u64) {
        let ids: Vec<String> = self.calls.keys().cloned().collect();
        for id in ids {
            self.rematch(now_ms, &id);
        }
    }

    /// Re-evaluates a call's tasks: newly matched tasks get the call's history, the tap follows.
    fn rematch(&mut self, now_ms: u64, call_id: &str) {
        let Some(parties) = self.calls.get(call_id).map(|c| c.parties.clone()) else {
            return;
        };
        let new = self.matches(&parties);
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        let fresh: Vec<[u8; 16]> = new
            .iter()
            .filter(|(x, _)| !call.tasks.iter().any(|(o, _)| o == x))
            .map(|(x, _)| *x)
            .collect();
        if call.tasks.is_empty() && !new.is_empty() {
            self.stats.calls_tapped += 1;
        }
        call.tasks = new;
        let mut history = vec![call.attempt.clone()];
        history.extend(call.answered.clone());
        history.extend(call.keys.values().cloned());
        let corr = call.correlation;
        for xid in fresh {
            for ev in &history {
                self.send_x2(now_ms, xid, corr, ev);
            }
        }
        self.update_tap(call_id);
    }

    fn update_tap(&mut self, call_id: &str) {
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        let want = call.tasks.iter().any(|(_, c)| *c);
        match (want, call.tap) {
            (true, None) => {
                let id = self.next_tap;
                self.next_tap = self.next_tap.wrapping_add(1).max(1);
                call.tap = Some(id);
                self.taps.insert(id, call_id.to_string());
                self.out.push_back(PoiOutput::Tap {
                    call_id: call_id.to_string(),
                    tap: Some(id),
                });
            }
            (false, Some(id)) => {
                call.tap = None;
                self.taps.remove(&id);
                self.out.push_back(PoiOutput::Tap {
                    call_id: call_id.to_string(),
                    tap: None,
                });
            }
            _ => {}
        }
    }

    fn send_x2(&mut self, time_ms: u64, xid: [u8; 16], corr: u64, ev: &PoiEvent) {
        let Ok(payload) = serde_json::to_vec(ev) else {
            return;
        };
        self.seq = self.seq.wrapping_add(1);
        let pdu = Pdu {
            pdu_type: PduType::X2,
            format: PayloadFormat::Mime,
            direction: PayloadDirection::NotApplicable,
            xid,
            correlation_id: corr,
            attributes: vec![
                Attribute::SequenceNumber(self.seq),
                Attribute::timestamp_ms(time_ms),
                Attribute::MimeContentType(POI_EVENT_MIME.to_string()),
            ],
            payload,
        };
        if let Ok(b) = pdu.encode() {
            self.stats.x2_sent += 1;
            self.out.push_back(PoiOutput::Pdu(b));
        }
    }

    /// Sends an event of a tapped call once, under its first task's XID (the mediation
    /// delivers it to every warrant the call matches there).
    fn report(&mut self, now_ms: u64, call_id: &str, ev: &PoiEvent) {
        let Some(call) = self.calls.get(call_id) else {
            return;
        };
        let corr = call.correlation;
        if let Some(&(xid, _)) = call.tasks.first() {
            self.send_x2(now_ms, xid, corr, ev);
        }
    }

    /// A registration accepted by this node's registrar (a voice gateway's): reported (X2)
    /// under the first task its address of record matches; nothing is kept.
    pub fn registration(
        &mut self,
        now_ms: u64,
        aor: &str,
        contacts: &str,
        expires: Option<u32>,
        source: SocketAddr,
    ) {
        let parties = CallParties {
            caller: Some(aor.to_string()),
            callee: None,
            gateways: Vec::new(),
        };
        let Some((xid, _)) = self.matches(&parties).first().copied() else {
            return;
        };
        let corr = correlation_id(&self.node, &format!("registration:{aor}"));
        let ev = PoiEvent::Registration {
            time_ms: now_ms,
            aor: aor.to_string(),
            contacts: contacts.to_string(),
            expires,
            source: source.to_string(),
        };
        self.send_x2(now_ms, xid, corr, &ev);
    }

    /// A dialog-creating INVITE forwarded by the SPG.
    #[allow(clippy::too_many_arguments)]
    pub fn attempt(
        &mut self,
        now_ms: u64,
        call_id: &str,
        from_uri: &str,
        to_uri: &str,
        request_uri: &str,
        caller_peer: Option<&str>,
        callee_peer: Option<&str>,
    ) {
        if self.calls.contains_key(call_id) {
            return;
        }
        if self.calls.len() >= MAX_CALLS {
            self.stats.calls_untracked += 1;
            return;
        }
        let parties = CallParties {
            caller: Some(from_uri.to_string()),
            callee: Some(to_uri.to_string()),
            gateways: caller_peer
                .iter()
                .chain(callee_peer.iter())
                .map(|s| s.to_string())
                .collect(),
        };
        let attempt = PoiEvent::Attempt {
            call_id: call_id.to_string(),
            time_ms: now_ms,
            from_uri: from_uri.to_string(),
            to_uri: to_uri.to_string(),
            request_uri: request_uri.to_string(),
            caller_peer: caller_peer.map(str::to_string),
            callee_peer: callee_peer.map(str::to_string),
        };
        self.calls.insert(
            call_id.to_string(),
            PoiCall {
                correlation: correlation_id(&self.node, call_id),
                attempt,
                parties,
                answered: None,
                keys: BTreeMap::new(),
                tasks: Vec::new(),
                tap: None,
            },
        );
        self.rematch(now_ms, call_id);
    }

    /// Any later event of a call (alerting, answer, failure, modification, end).
    pub fn event(&mut self, now_ms: u64, ev: PoiEvent) {
        let call_id = ev.call_id().to_string();
        let Some(call) = self.calls.get_mut(&call_id) else {
            return;
        };
        let closes = matches!(ev, PoiEvent::Failed { .. } | PoiEvent::Ended { .. });
        match &ev {
            PoiEvent::Answered { .. } => call.answered = Some(ev.clone()),
            PoiEvent::KeyUpdate { session_id, .. } => {
                call.keys.insert(session_id.clone(), ev.clone());
            }
            _ => {}
        }
        self.report(now_ms, &call_id, &ev);
        if closes {
            if let Some(c) = self.calls.remove(&call_id) {
                if let Some(id) = c.tap {
                    self.taps.remove(&id);
                    self.out.push_back(PoiOutput::Tap { call_id, tap: None });
                }
            }
        }
    }

    /// A datagram of a tapped call as it crossed the relay, reported with the 5-tuple the
    /// escrowed keys name.
    pub fn datagram(
        &mut self,
        now_ms: u64,
        tap: u32,
        src: SocketAddr,
        dst: SocketAddr,
        packet: &[u8],
    ) {
        let Some(call) = self.taps.get(&tap).and_then(|id| self.calls.get(id)) else {
            return;
        };
        let corr = call.correlation;
        // Once, under the first task that wants content (the mediation fans it out).
        let xid = call.tasks.iter().find(|(_, c)| *c).map(|(x, _)| *x);
        if let Some(xid) = xid {
            self.seq = self.seq.wrapping_add(1);
            let mut attributes = vec![
                Attribute::SequenceNumber(self.seq),
                Attribute::timestamp_ms(now_ms),
            ];
            match (src, dst) {
                (SocketAddr::V4(s), SocketAddr::V4(d)) => {
                    attributes.push(Attribute::SourceIpv4(*s.ip()));
                    attributes.push(Attribute::DestIpv4(*d.ip()));
                }
                _ => {
                    attributes.push(Attribute::SourceIpv6(match src.ip() {
                        std::net::IpAddr::V4(a) => a.to_ipv6_mapped(),
                        std::net::IpAddr::V6(a) => a,
                    }));
                    attributes.push(Attribute::DestIpv6(match dst.ip() {
                        std::net::IpAddr::V4(a) => a.to_ipv6_mapped(),
                        std::net::IpAddr::V6(a) => a,
                    }));
                }
            }
            attributes.push(Attribute::SourcePort(src.port()));
            attributes.push(Attribute::DestPort(dst.port()));
            attributes.push(Attribute::IpProtocol(17));
            let pdu = Pdu {
                pdu_type: PduType::X3,
                format: PayloadFormat::RtpPacket,
                direction: PayloadDirection::Unknown,
                xid,
                correlation_id: corr,
                attributes,
                payload: packet.to_vec(),
            };
            if let Ok(b) = pdu.encode() {
                self.stats.x3_sent += 1;
                self.out.push_back(PoiOutput::Pdu(b));
            }
        }
    }
}
