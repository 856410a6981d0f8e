//! The SPG's side of the escrow protocol, sans-I/O: sessions in memory, session_IDs, replay
//! protection and idempotent retries. The driver authenticates the gateway (mutual TLS, the
//! certificate's identity matched to a registered gateway) and passes its id with every frame;
//! persistence (sealed records) is the caller's, from the [`Event`]s.

use std::collections::{HashMap, VecDeque};

use aws_lc_rs::rand::{SecureRandom, SystemRandom};

use crate::wire::{
    ErrorCode, ErrorReply, KeyUpdate, KeyUpdateReply, Message, SessionEnd, SessionEndReply,
    StreamKey,
};

/// Limits and windows.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// A request's `time_ms` must be within this of the SPG's clock.
    pub time_window_ms: u64,
    /// Replies remembered per gateway for idempotent retries (and replay detection).
    pub remembered_requests: usize,
    /// Live sessions in all.
    pub max_sessions: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            time_window_ms: 30_000,
            remembered_requests: 4096,
            max_sessions: 1_000_000,
        }
    }
}

/// An escrowed call.
#[derive(Debug, Clone)]
pub struct Session {
    pub id: u64,
    pub gateway: String,
    pub call_id: String,
    pub streams: Vec<StreamKey>,
    /// 0 for the first key_update, +1 per rekey.
    pub generation: u32,
    pub created_ms: u64,
}

/// What changed, for the caller to persist (sealed) and to arm verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Escrowed {
        session_id: u64,
        gateway: String,
        call_id: String,
        generation: u32,
    },
    Ended {
        session_id: u64,
    },
    /// A request was refused (for the log and metrics).
    Refused {
        gateway: String,
        code: u16,
        reason: String,
    },
}

#[derive(Debug, Default)]
struct Remembered {
    order: VecDeque<u64>,
    /// request id -> (digest of the request frame, the reply sent)
    replies: HashMap<u64, ([u8; 32], Message)>,
    /// Lowest id still remembered once some were forgotten: older ids are replays.
    floor: u64,
}

/// The escrow server state.
#[derive(Debug)]
pub struct EscrowServer {
    config: ServerConfig,
    sessions: HashMap<u64, Session>,
    by_call: HashMap<(String, String), u64>,
    remembered: HashMap<String, Remembered>,
    events: Vec<Event>,
    rng: SystemRandom,
}

fn digest(frame: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, frame);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

impl EscrowServer {
    pub fn new(config: ServerConfig) -> Self {
        EscrowServer {
            config,
            sessions: HashMap::new(),
            by_call: HashMap::new(),
            remembered: HashMap::new(),
            events: Vec::new(),
            rng: SystemRandom::new(),
        }
    }

    pub fn session(&self, id: u64) -> Option<&Session> {
        self.sessions.get(&id)
    }

    pub fn sessions(&self) -> impl Iterator<Item = &Session> {
        self.sessions.values()
    }

    /// Restores a session from storage (after a restart).
    pub fn restore(&mut self, s: Session) {
        self.by_call
            .insert((s.gateway.clone(), s.call_id.clone()), s.id);
        self.sessions.insert(s.id, s);
    }

    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    fn new_session_id(&self) -> Option<u64> {
        for _ in 0..8 {
            let mut b = [0u8; 8];
            self.rng.fill(&mut b).ok()?;
            let id = u64::from_be_bytes(b);
            if id != 0 && !self.sessions.contains_key(&id) {
                return Some(id);
            }
        }
        None
    }

    fn refuse(&mut self, gateway: &str, request_id: u64, code: ErrorCode, reason: &str) -> Message {
        self.events.push(Event::Refused {
            gateway: gateway.to_string(),
            code: code as u16,
            reason: reason.to_string(),
        });
        Message::Error(ErrorReply {
            request_id,
            code: code as u16,
            reason: reason.to_string(),
        })
    }

    /// Answers one frame (`frame` is its bytes, `msg` the decoded message) from the
    /// authenticated gateway `gateway`. `now_ms` is the SPG's wall clock; `party(key_update,
    /// gateway)` says whether the gateway is party to the call and its streams are the call's
    /// (the SPG's SIP side knows), or why not.
    pub fn handle(
        &mut self,
        now_ms: u64,
        gateway: &str,
        frame: &[u8],
        msg: &Message,
        party: impl Fn(&KeyUpdate, &str) -> Result<(), String>,
    ) -> Message {
        let rid = msg.request_id();
        let time_ms = match msg {
            Message::KeyUpdate(k) => k.time_ms,
            Message::SessionEnd(e) => e.time_ms,
            _ => return self.refuse(gateway, rid, ErrorCode::Malformed, "not a request"),
        };
        // Idempotent retries and replays.
        let fp = digest(frame);
        if let Some(r) = self.remembered.get(gateway) {
            if let Some((d, reply)) = r.replies.get(&rid) {
                if *d == fp {
                    return reply.clone();
                }
                return self.refuse(gateway, rid, ErrorCode::Replay, "request id reused");
            }
            if rid < r.floor {
                return self.refuse(gateway, rid, ErrorCode::Replay, "request id too old");
            }
        }
        if now_ms.abs_diff(time_ms) > self.config.time_window_ms {
            return self.refuse(gateway, rid, ErrorCode::Replay, "time outside the window");
        }
        let reply = match msg {
            Message::KeyUpdate(k) => self.key_update(now_ms, gateway, k, &party),
            Message::SessionEnd(e) => self.session_end(gateway, e),
            _ => unreachable_reply(rid),
        };
        self.remember(gateway, rid, fp, reply.clone());
        reply
    }

    fn remember(&mut self, gateway: &str, rid: u64, fp: [u8; 32], reply: Message) {
        let max = self.config.remembered_requests.max(1);
        let r = self.remembered.entry(gateway.to_string()).or_default();
        r.replies.insert(rid, (fp, reply));
        r.order.push_back(rid);
        while r.order.len() > max {
            if let Some(old) = r.order.pop_front() {
                r.replies.remove(&old);
                r.floor = r.floor.max(old.saturating_add(1));
            }
        }
    }

    fn key_update(
        &mut self,
        now_ms: u64,
        gateway: &str,
        k: &KeyUpdate,
        party: &impl Fn(&KeyUpdate, &str) -> Result<(), String>,
    ) -> Message {
        let rid = k.request_id;
        if let Err(why) = party(k, gateway) {
            return self.refuse(gateway, rid, ErrorCode::Forbidden, &why);
        }
        match k.session_id {
            Some(id) => {
                let Some(s) = self.sessions.get_mut(&id) else {
                    return self.refuse(
                        gateway,
                        rid,
                        ErrorCode::UnknownSession,
                        "unknown session_ID",
                    );
                };
                if s.gateway != gateway || s.call_id != k.call_id {
                    return self.refuse(
                        gateway,
                        rid,
                        ErrorCode::UnknownSession,
                        "unknown session_ID",
                    );
                }
                s.streams = k.streams.clone();
                s.generation += 1;
                let generation = s.generation;
                self.events.push(Event::Escrowed {
                    session_id: id,
                    gateway: gateway.to_string(),
                    call_id: k.call_id.clone(),
                    generation,
                });
                Message::KeyUpdateReply(KeyUpdateReply {
                    request_id: rid,
                    session_id: id,
                })
            }
            None => {
                if self
                    .by_call
                    .contains_key(&(gateway.to_string(), k.call_id.clone()))
                {
                    return self.refuse(
                        gateway,
                        rid,
                        ErrorCode::Replay,
                        "call already escrowed: rekey under its session_ID",
                    );
                }
                if self.sessions.len() >= self.config.max_sessions {
                    return self.refuse(gateway, rid, ErrorCode::Unavailable, "session table full");
                }
                let Some(id) = self.new_session_id() else {
                    return self.refuse(
                        gateway,
                        rid,
                        ErrorCode::Unavailable,
                        "random generator failed",
                    );
                };
                self.sessions.insert(
                    id,
                    Session {
                        id,
                        gateway: gateway.to_string(),
                        call_id: k.call_id.clone(),
                        streams: k.streams.clone(),
                        generation: 0,
                        created_ms: now_ms,
                    },
                );
                self.by_call
                    .insert((gateway.to_string(), k.call_id.clone()), id);
                self.events.push(Event::Escrowed {
                    session_id: id,
                    gateway: gateway.to_string(),
                    call_id: k.call_id.clone(),
                    generation: 0,
                });
                Message::KeyUpdateReply(KeyUpdateReply {
                    request_id: rid,
                    session_id: id,
                })
            }
        }
    }

    /// Ends every session of a call the SPG saw end (its in-dialog BYE) when its gateway did
    /// not: the keys are dropped (wiped) and [`Event::Ended`] is emitted for each. Returns the
    /// session_IDs ended.
    pub fn end_call(&mut self, call_id: &str) -> Vec<u64> {
        let ids: Vec<u64> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.call_id == call_id)
            .map(|(id, _)| *id)
            .collect();
        for id in &ids {
            if let Some(s) = self.sessions.remove(id) {
                self.by_call.remove(&(s.gateway, s.call_id));
            }
            self.events.push(Event::Ended { session_id: *id });
        }
        ids
    }

    fn session_end(&mut self, gateway: &str, e: &SessionEnd) -> Message {
        let owned = self
            .sessions
            .get(&e.session_id)
            .is_some_and(|s| s.gateway == gateway);
        if !owned {
            return self.refuse(
                gateway,
                e.request_id,
                ErrorCode::UnknownSession,
                "unknown session_ID",
            );
        }
        if let Some(s) = self.sessions.remove(&e.session_id) {
            // Dropping the streams wipes the keys (Secret is Zeroizing).
            self.by_call.remove(&(s.gateway, s.call_id));
        }
        self.events.push(Event::Ended {
            session_id: e.session_id,
        });
        Message::SessionEndReply(SessionEndReply {
            request_id: e.request_id,
            session_id: e.session_id,
        })
    }
}

fn unreachable_reply(rid: u64) -> Message {
    Message::Error(ErrorReply {
        request_id: rid,
        code: ErrorCode::Malformed as u16,
        reason: "not a request".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Addr, Direction, Secret};
    use zeroize::Zeroizing;

    fn ku(rid: u64, time_ms: u64, call: &str, session_id: Option<u64>, key: u8) -> Message {
        Message::KeyUpdate(KeyUpdate {
            request_id: rid,
            time_ms,
            call_id: call.into(),
            session_id,
            streams: vec![StreamKey {
                direction: Direction::Send,
                src: Addr("192.0.2.10:4000".parse().unwrap()),
                dst: Addr("198.51.100.20:5000".parse().unwrap()),
                ssrc: Some(1),
                suite: "AES_CM_128_HMAC_SHA1_80".into(),
                master: Secret(Zeroizing::new(vec![key; 30])),
                mki: None,
            }],
        })
    }

    fn send(s: &mut EscrowServer, now: u64, gw: &str, m: &Message) -> Message {
        let f = m.encode();
        s.handle(now, gw, &f, m, |k, _| {
            if k.call_id == "not-mine" {
                Err("gateway is not party to this call".into())
            } else {
                Ok(())
            }
        })
    }

    const NOW: u64 = 1_764_000_000_000;

    #[test]
    fn escrow_rekey_end() {
        let mut s = EscrowServer::new(ServerConfig::default());
        let Message::KeyUpdateReply(r) = send(&mut s, NOW, "gw1", &ku(1, NOW, "c1", None, 1))
        else {
            panic!("no reply");
        };
        assert_ne!(r.session_id, 0);
        let id = r.session_id;
        // The same request again (a retry): the same reply, nothing new.
        let again = send(&mut s, NOW + 10, "gw1", &ku(1, NOW, "c1", None, 1));
        assert_eq!(again, Message::KeyUpdateReply(r));
        assert_eq!(s.sessions().count(), 1);
        // Rekey under the session_ID.
        let rk = send(&mut s, NOW, "gw1", &ku(2, NOW, "c1", Some(id), 2));
        assert!(
            matches!(rk, Message::KeyUpdateReply(KeyUpdateReply { session_id, .. }) if session_id == id)
        );
        assert_eq!(s.session(id).unwrap().generation, 1);
        assert_eq!(*s.session(id).unwrap().streams[0].master.0, vec![2; 30]);
        // Another gateway cannot rekey or end it.
        let other = send(&mut s, NOW, "gw2", &ku(1, NOW, "c1", Some(id), 3));
        assert!(matches!(
            other,
            Message::Error(ErrorReply { code: 404, .. })
        ));
        let end = Message::SessionEnd(SessionEnd {
            request_id: 2,
            time_ms: NOW,
            session_id: id,
        });
        assert!(matches!(
            send(&mut s, NOW, "gw2", &end),
            Message::Error(ErrorReply { code: 404, .. })
        ));
        let end = Message::SessionEnd(SessionEnd {
            request_id: 3,
            time_ms: NOW,
            session_id: id,
        });
        assert!(matches!(
            send(&mut s, NOW, "gw1", &end),
            Message::SessionEndReply(_)
        ));
        assert!(s.session(id).is_none());
        let ev = s.take_events();
        assert!(ev.contains(&Event::Ended { session_id: id }));
    }

    #[test]
    fn replays_stale_times_and_strangers_are_refused() {
        let mut s = EscrowServer::new(ServerConfig {
            remembered_requests: 4,
            ..ServerConfig::default()
        });
        send(&mut s, NOW, "gw1", &ku(10, NOW, "c1", None, 1));
        // Same id, different content.
        let r = send(&mut s, NOW, "gw1", &ku(10, NOW, "c2", None, 1));
        assert!(
            matches!(r, Message::Error(ErrorReply { code: 409, .. })),
            "{r:?}"
        );
        // Outside the time window.
        let r = send(&mut s, NOW, "gw1", &ku(11, NOW - 60_000, "c3", None, 1));
        assert!(matches!(r, Message::Error(ErrorReply { code: 409, .. })));
        // A second key_update for an escrowed call without its session_ID.
        let r = send(&mut s, NOW, "gw1", &ku(12, NOW, "c1", None, 1));
        assert!(matches!(r, Message::Error(ErrorReply { code: 409, .. })));
        // Not party to the call.
        let r = send(&mut s, NOW, "gw1", &ku(13, NOW, "not-mine", None, 1));
        assert!(matches!(r, Message::Error(ErrorReply { code: 403, .. })));
        // Forgotten ids are replays once newer ones pushed them out.
        for i in 20..30 {
            send(&mut s, NOW, "gw1", &ku(i, NOW, &format!("x{i}"), None, 1));
        }
        let r = send(&mut s, NOW, "gw1", &ku(10, NOW, "c1", None, 1));
        assert!(
            matches!(r, Message::Error(ErrorReply { code: 409, .. })),
            "{r:?}"
        );
        // Ids are per gateway.
        let r = send(&mut s, NOW, "gw2", &ku(10, NOW, "c1", None, 1));
        assert!(matches!(r, Message::KeyUpdateReply(_)));
    }
}
