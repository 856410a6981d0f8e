//! The voice gateway's side of the escrow protocol, sans-I/O: numbered requests, replies
//! matched by request id, retries of the very same bytes (so the SPG answers a retry with the
//! reply it already gave), and a resend of everything pending after a reconnect.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::wire::{KeyUpdate, Message, SessionEnd, StreamKey, WireError};

/// What the gateway learns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// The keys are escrowed: tag the call's datagrams with `session_id`.
    Escrowed {
        request_id: u64,
        call_id: String,
        session_id: u64,
    },
    Ended {
        request_id: u64,
        session_id: u64,
    },
    /// The SPG refused the request (the call must not send media untagged: hang up or retry
    /// the call with the SPG in the loop).
    Refused {
        request_id: u64,
        code: u16,
        reason: String,
    },
    /// No answer after every retry.
    TimedOut {
        request_id: u64,
    },
}

struct Pending {
    frame: Vec<u8>,
    call_id: String,
    next_at: Instant,
    attempts: u32,
}

/// Retry policy.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub first: Duration,
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            first: Duration::from_millis(500),
            max_attempts: 5,
        }
    }
}

/// The gateway's escrow client.
pub struct EscrowClient {
    next_id: u64,
    policy: RetryPolicy,
    pending: BTreeMap<u64, Pending>,
    out: VecDeque<Vec<u8>>,
    events: VecDeque<ClientEvent>,
    inbuf: Vec<u8>,
}

impl std::fmt::Debug for EscrowClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EscrowClient")
            .field("next_id", &self.next_id)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl EscrowClient {
    /// `first_request_id`: larger than any id used before (e.g. the wall clock in ms at
    /// start), since the SPG refuses ids older than those it remembers.
    pub fn new(first_request_id: u64, policy: RetryPolicy) -> Self {
        EscrowClient {
            next_id: first_request_id.max(1),
            policy,
            pending: BTreeMap::new(),
            out: VecDeque::new(),
            events: VecDeque::new(),
            inbuf: Vec::new(),
        }
    }

    fn send(&mut self, now: Instant, m: Message, call_id: String) -> u64 {
        let id = m.request_id();
        let frame = m.encode();
        self.out.push_back(frame.clone());
        self.pending.insert(
            id,
            Pending {
                frame,
                call_id,
                next_at: now + self.policy.first,
                attempts: 1,
            },
        );
        id
    }

    /// Escrows a call's keys (`session_id` for a rekey). Returns the request id.
    pub fn key_update(
        &mut self,
        now: Instant,
        wall_ms: u64,
        call_id: &str,
        session_id: Option<u64>,
        streams: Vec<StreamKey>,
    ) -> u64 {
        let request_id = self.next_id;
        self.next_id += 1;
        let m = Message::KeyUpdate(KeyUpdate {
            request_id,
            time_ms: wall_ms,
            call_id: call_id.to_string(),
            session_id,
            streams,
        });
        self.send(now, m, call_id.to_string())
    }

    /// The call is over.
    pub fn session_end(&mut self, now: Instant, wall_ms: u64, session_id: u64) -> u64 {
        let request_id = self.next_id;
        self.next_id += 1;
        let m = Message::SessionEnd(SessionEnd {
            request_id,
            time_ms: wall_ms,
            session_id,
        });
        self.send(now, m, String::new())
    }

    /// Bytes from the SPG (any split). A malformed stream is an error: reconnect.
    pub fn handle_input(&mut self, bytes: &[u8]) -> Result<(), WireError> {
        self.inbuf.extend_from_slice(bytes);
        loop {
            match Message::decode(&self.inbuf) {
                Ok((m, n)) => {
                    self.inbuf.drain(..n);
                    self.reply(m);
                }
                Err(WireError::Incomplete) => return Ok(()),
                Err(e) => {
                    self.inbuf.clear();
                    return Err(e);
                }
            }
        }
    }

    fn reply(&mut self, m: Message) {
        let Some(p) = self.pending.remove(&m.request_id()) else {
            return; // a late duplicate
        };
        let ev = match m {
            Message::KeyUpdateReply(r) => ClientEvent::Escrowed {
                request_id: r.request_id,
                call_id: p.call_id,
                session_id: r.session_id,
            },
            Message::SessionEndReply(r) => ClientEvent::Ended {
                request_id: r.request_id,
                session_id: r.session_id,
            },
            Message::Error(e) => ClientEvent::Refused {
                request_id: e.request_id,
                code: e.code,
                reason: e.reason,
            },
            other => ClientEvent::Refused {
                request_id: other.request_id(),
                code: 400,
                reason: "unexpected frame from the SPG".into(),
            },
        };
        self.events.push_back(ev);
    }

    /// A new connection: everything pending goes again, same bytes.
    pub fn reconnected(&mut self, now: Instant) {
        for p in self.pending.values_mut() {
            self.out.push_back(p.frame.clone());
            p.next_at = now + self.policy.first;
        }
        self.inbuf.clear();
    }

    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.out.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.pending.values().map(|p| p.next_at).min()
    }

    /// Retries what is due (doubling the interval), gives up after the last attempt.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut gone = Vec::new();
        for (id, p) in self.pending.iter_mut() {
            if p.next_at > now {
                continue;
            }
            if p.attempts >= self.policy.max_attempts {
                gone.push(*id);
                continue;
            }
            p.attempts += 1;
            self.out.push_back(p.frame.clone());
            p.next_at = now + self.policy.first * 2u32.saturating_pow(p.attempts - 1);
        }
        for id in gone {
            self.pending.remove(&id);
            self.events
                .push_back(ClientEvent::TimedOut { request_id: id });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::{EscrowServer, ServerConfig};
    use crate::wire::{Addr, Direction, Secret};
    use zeroize::Zeroizing;

    fn streams() -> Vec<StreamKey> {
        vec![StreamKey {
            direction: Direction::Send,
            src: Addr("192.0.2.10:40000".parse().unwrap()),
            dst: Addr("198.51.100.7:50000".parse().unwrap()),
            ssrc: None,
            suite: "AEAD_AES_128_GCM".into(),
            master: Secret(Zeroizing::new(vec![9; 28])),
            mki: None,
        }]
    }

    const WALL: u64 = 1_764_028_800_000;

    /// Carries every frame from the client to the server and back.
    fn pump(c: &mut EscrowClient, s: &mut EscrowServer, lose_replies: bool) {
        while let Some(f) = c.poll_transmit() {
            let (m, _) = Message::decode(&f).unwrap();
            let r = s.handle(WALL, "gw1", &f, &m, |_, _| Ok(()));
            if !lose_replies {
                c.handle_input(&r.encode()).unwrap();
            }
        }
    }

    #[test]
    fn escrow_with_a_lost_reply_is_retried_without_a_second_session() {
        let t0 = Instant::now();
        let mut c = EscrowClient::new(100, RetryPolicy::default());
        let mut s = EscrowServer::new(ServerConfig::default());
        let id = c.key_update(t0, WALL, "call-1", None, streams());
        pump(&mut c, &mut s, true); // the reply is lost
        assert!(c.poll_event().is_none());
        c.handle_timeout(t0 + Duration::from_millis(600));
        pump(&mut c, &mut s, false);
        let Some(ClientEvent::Escrowed {
            request_id,
            session_id,
            call_id,
        }) = c.poll_event()
        else {
            panic!("not escrowed");
        };
        assert_eq!((request_id, call_id.as_str()), (id, "call-1"));
        assert_eq!(s.sessions().count(), 1, "the retry made no second session");
        // Rekey and end.
        c.key_update(t0, WALL, "call-1", Some(session_id), streams());
        c.session_end(t0, WALL, session_id);
        pump(&mut c, &mut s, false);
        assert!(matches!(c.poll_event(), Some(ClientEvent::Escrowed { .. })));
        assert!(matches!(c.poll_event(), Some(ClientEvent::Ended { .. })));
        assert_eq!(s.sessions().count(), 0);
        assert_eq!(c.poll_timeout(), None);
    }

    #[test]
    fn refusals_timeouts_and_split_input() {
        let t0 = Instant::now();
        let mut c = EscrowClient::new(
            1,
            RetryPolicy {
                first: Duration::from_millis(100),
                max_attempts: 3,
            },
        );
        let mut s = EscrowServer::new(ServerConfig::default());
        c.session_end(t0, WALL, 12345);
        let f = c.poll_transmit().unwrap();
        let (m, _) = Message::decode(&f).unwrap();
        let reply = s.handle(WALL, "gw1", &f, &m, |_, _| Ok(())).encode();
        // Delivered one byte at a time.
        for b in &reply {
            c.handle_input(std::slice::from_ref(b)).unwrap();
        }
        assert!(matches!(
            c.poll_event(),
            Some(ClientEvent::Refused { code: 404, .. })
        ));
        // Nobody answers: 3 attempts, then a timeout.
        c.key_update(t0, WALL, "call-2", None, streams());
        let mut sent = 0;
        let mut t = t0;
        while c.poll_timeout().is_some() {
            while c.poll_transmit().is_some() {
                sent += 1;
            }
            t += Duration::from_millis(50);
            c.handle_timeout(t);
        }
        assert_eq!(sent, 3);
        assert!(matches!(c.poll_event(), Some(ClientEvent::TimedOut { .. })));
        // Garbage from the SPG is an error (the driver reconnects).
        assert!(c.handle_input(&[9, 9, 9, 9, 9, 9, 9]).is_err());
    }
}
