//! SIP transactions (RFC 3261 §17, with the RFC 6026 "Accepted" states for 2xx to INVITE),
//! sans-I/O: every input carries `now`; outputs are datagrams to (re)transmit, events for the
//! transaction user (TU) and the next deadline. Timers A-M follow RFC 3261 Table 4.
//!
//! ```text
//! let mut tx = ClientTransaction::new(now, request_bytes, Transport::Unreliable, Timers::default())?;
//! while let Some(out) = tx.poll_output() { /* send Output::Transmit, deliver Output::Tu */ }
//! if let Some(at) = tx.poll_timeout() { /* arm a timer; then tx.handle_timeout(at) */ }
//! ```

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::error::{ErrorKind, ParseError};
use crate::grammar;
use crate::message::{Framing, HeaderKind, ParseLimits, SipMessage, StartLine};

/// RFC 3261 timer base values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    pub t1: Duration,
    pub t2: Duration,
    pub t4: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

/// Whether the transport retransmits for us (TCP, TLS) or not (UDP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Reliable,
    Unreliable,
}

/// Transaction states (RFC 3261 §17 figures 5-8, RFC 6026 figures 5 and 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Calling,
    Trying,
    Proceeding,
    Accepted,
    Completed,
    Confirmed,
    Terminated,
}

/// What the transaction user learns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TuEvent {
    /// A response for a client transaction (first copy of each; retransmissions of a final
    /// non-2xx are absorbed).
    Response { code: u16, message: Vec<u8> },
    /// An ACK for a 2xx, received by a server INVITE transaction in the Accepted state.
    Ack { message: Vec<u8> },
    /// Timer B/F (client) or H (server) fired: no answer, or no ACK.
    Timeout,
}

/// Outputs, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send these bytes to the peer (request, retransmission, ACK, response).
    Transmit(Vec<u8>),
    Tu(TuEvent),
    /// The transaction is over; drop it.
    Terminated,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    /// A (INVITE) / E (non-INVITE) retransmission, G response retransmission.
    Retransmit,
    /// B / F / H: give up.
    Timeout,
    /// D / K / I / J / L / M: linger, then terminate.
    Linger,
}

#[derive(Debug)]
struct Clock {
    deadlines: Vec<(Timer, Instant)>,
    interval: Duration,
}

impl Clock {
    fn set(&mut self, t: Timer, at: Instant) {
        self.cancel(t);
        self.deadlines.push((t, at));
    }
    fn cancel(&mut self, t: Timer) {
        self.deadlines.retain(|(k, _)| *k != t);
    }
    fn next(&self) -> Option<Instant> {
        self.deadlines.iter().map(|(_, at)| *at).min()
    }
    /// The timers due at `now`, earliest first, removed.
    fn due(&mut self, now: Instant) -> Vec<Timer> {
        let mut due: Vec<(Timer, Instant)> = self
            .deadlines
            .iter()
            .copied()
            .filter(|(_, at)| *at <= now)
            .collect();
        due.sort_by_key(|(_, at)| *at);
        self.deadlines.retain(|(_, at)| *at > now);
        due.into_iter().map(|(t, _)| t).collect()
    }
}

/// What every transaction has: its state, its timers and its queued outputs.
#[derive(Debug)]
struct Machine {
    state: State,
    clock: Clock,
    out: VecDeque<Output>,
}

impl Machine {
    fn new(state: State, t1: Duration) -> Self {
        Machine {
            state,
            clock: Clock {
                deadlines: Vec::new(),
                interval: t1,
            },
            out: VecDeque::new(),
        }
    }

    fn terminate(&mut self) {
        self.state = State::Terminated;
        self.clock.deadlines.clear();
        self.out.push_back(Output::Terminated);
    }
}

/// The status code of a response, read off its status line (`SIP/2.0 NNN ...`) without
/// parsing the rest: transactions only need the code, and the messages they see have already
/// been parsed by their caller (or are the caller's own).
fn status_of(bytes: &[u8]) -> Result<u16, ParseError> {
    let bad = || ParseError::new(ErrorKind::BadStartLine, 0);
    let rest = bytes.strip_prefix(b"SIP/2.0 ").ok_or_else(bad)?;
    let digits = rest.get(..3).ok_or_else(bad)?;
    if !digits.iter().all(u8::is_ascii_digit) || rest.get(3).is_some_and(|b| *b != b' ') {
        return Err(ParseError::new(ErrorKind::BadStatusCode, 8));
    }
    let code = digits
        .iter()
        .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    if !(100..=699).contains(&code) {
        return Err(ParseError::new(ErrorKind::BadStatusCode, 8));
    }
    Ok(code)
}

/// The method of a request, read off its request line (`METHOD SP Request-URI SP SIP/2.0`).
fn method_of(bytes: &[u8]) -> Result<&str, ParseError> {
    let bad = || ParseError::new(ErrorKind::BadStartLine, 0);
    let end = bytes
        .windows(2)
        .position(|w| w == b"\r\n")
        .ok_or_else(bad)?;
    let line = &bytes[..end];
    let sp = line.iter().position(|b| *b == b' ').ok_or_else(bad)?;
    if sp == 0 || !line.ends_with(b" SIP/2.0") || line.starts_with(b"SIP/") {
        return Err(bad());
    }
    std::str::from_utf8(&line[..sp]).map_err(|_| bad())
}

/// A client transaction (INVITE or non-INVITE, from the request's method).
#[derive(Debug)]
pub struct ClientTransaction {
    request: Vec<u8>,
    invite: bool,
    transport: Transport,
    timers: Timers,
    m: Machine,
    ack: Option<Vec<u8>>,
}

impl ClientTransaction {
    /// Starts a transaction for `request` (sent at once).
    pub fn new(
        now: Instant,
        request: Vec<u8>,
        transport: Transport,
        timers: Timers,
    ) -> Result<Self, ParseError> {
        let invite = method_of(&request)? == "INVITE";
        let mut t = ClientTransaction {
            request,
            invite,
            transport,
            timers,
            m: Machine::new(
                if invite {
                    State::Calling
                } else {
                    State::Trying
                },
                timers.t1,
            ),
            ack: None,
        };
        t.m.out.push_back(Output::Transmit(t.request.clone()));
        if transport == Transport::Unreliable {
            t.m.clock.set(Timer::Retransmit, now + timers.t1);
        }
        t.m.clock.set(Timer::Timeout, now + 64 * timers.t1);
        Ok(t)
    }

    pub fn state(&self) -> State {
        self.m.state
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.m.out.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.m.clock.next()
    }

    /// A response matched to this transaction arrived.
    pub fn handle_response(&mut self, now: Instant, bytes: &[u8]) -> Result<(), ParseError> {
        let code = status_of(bytes)?;
        let tu = Output::Tu(TuEvent::Response {
            code,
            message: bytes.to_vec(),
        });
        match (self.m.state, code) {
            (State::Calling | State::Trying | State::Proceeding, 100..=199) => {
                if self.invite {
                    // RFC 3261 §17.1.1.2: a provisional response stops A and B.
                    self.m.clock.cancel(Timer::Retransmit);
                    self.m.clock.cancel(Timer::Timeout);
                } else if self.transport == Transport::Unreliable {
                    // Figure 6: in Proceeding, E fires every T2.
                    self.m.clock.interval = self.timers.t2;
                }
                self.m.state = State::Proceeding;
                self.m.out.push_back(tu);
            }
            (State::Calling | State::Proceeding, 200..=299) if self.invite => {
                // RFC 6026: Accepted, absorbing 2xx retransmissions for 64*T1 (Timer M); the
                // TU (the UA core) sends the ACK for a 2xx.
                self.m.clock.deadlines.clear();
                self.m.clock.set(Timer::Linger, now + 64 * self.timers.t1);
                self.m.state = State::Accepted;
                self.m.out.push_back(tu);
            }
            (State::Accepted, 200..=299) => self.m.out.push_back(tu),
            (State::Calling | State::Proceeding, 300..=699) if self.invite => {
                let resp = SipMessage::parse(bytes, Framing::Datagram, &ParseLimits::default())?;
                let ack = build_ack(&self.request, &resp)?;
                self.m.out.push_back(tu);
                self.m.out.push_back(Output::Transmit(ack.clone()));
                self.ack = Some(ack);
                self.m.clock.deadlines.clear();
                let d = match self.transport {
                    Transport::Unreliable => Duration::from_secs(32).max(64 * self.timers.t1),
                    Transport::Reliable => Duration::ZERO,
                };
                self.m.clock.set(Timer::Linger, now + d);
                self.m.state = State::Completed;
            }
            (State::Completed, 300..=699) if self.invite => {
                // A retransmitted final response: ACK it again, do not bother the TU.
                if let Some(a) = &self.ack {
                    self.m.out.push_back(Output::Transmit(a.clone()));
                }
            }
            (State::Trying | State::Proceeding, 200..=699) if !self.invite => {
                self.m.clock.deadlines.clear();
                let k = match self.transport {
                    Transport::Unreliable => self.timers.t4,
                    Transport::Reliable => Duration::ZERO,
                };
                self.m.clock.set(Timer::Linger, now + k);
                self.m.state = State::Completed;
                self.m.out.push_back(tu);
            }
            // Late or duplicate responses in other states are absorbed.
            _ => {}
        }
        if self.m.state != State::Terminated {
            if let Some(at) = self.m.clock.next() {
                if at <= now {
                    self.handle_timeout(now);
                }
            }
        }
        Ok(())
    }

    /// Timers due at `now` fire.
    pub fn handle_timeout(&mut self, now: Instant) {
        for t in self.m.clock.due(now) {
            if self.m.state == State::Terminated {
                return;
            }
            match t {
                Timer::Retransmit => {
                    self.m.out.push_back(Output::Transmit(self.request.clone()));
                    let next = if self.invite {
                        self.m.clock.interval * 2
                    } else if self.m.state == State::Proceeding {
                        self.timers.t2
                    } else {
                        (self.m.clock.interval * 2).min(self.timers.t2)
                    };
                    self.m.clock.interval = next;
                    self.m.clock.set(Timer::Retransmit, now + next);
                }
                Timer::Timeout => {
                    self.m.out.push_back(Output::Tu(TuEvent::Timeout));
                    self.m.terminate();
                }
                Timer::Linger => self.m.terminate(),
            }
        }
    }
}

/// RFC 3261 §17.1.1.3: the ACK for a non-2xx final response to `request`.
pub fn build_ack(request: &[u8], response: &SipMessage<'_>) -> Result<Vec<u8>, ParseError> {
    let req = SipMessage::parse(request, Framing::Datagram, &ParseLimits::default())?;
    let StartLine::Request { uri, .. } = req.start else {
        return Err(ParseError::new(ErrorKind::BadStartLine, 0));
    };
    let missing = |k| ParseError::new(k, 0);
    let top_via = req
        .header(HeaderKind::Via)
        .and_then(|h| grammar::split_list(&h.value).ok())
        .and_then(|l| l.first().map(|v| v.to_vec()))
        .ok_or(missing(ErrorKind::BadHeaderValue))?;
    let cseq = req.cseq().ok_or(missing(ErrorKind::BadHeaderValue))?;
    let get = |m: &SipMessage<'_>, k| m.header(k).map(|h| h.value.to_vec());
    let from = get(&req, HeaderKind::From).ok_or(missing(ErrorKind::BadHeaderValue))?;
    let call_id = get(&req, HeaderKind::CallId).ok_or(missing(ErrorKind::BadHeaderValue))?;
    let to = get(response, HeaderKind::To).ok_or(missing(ErrorKind::BadHeaderValue))?;
    let mut a = Vec::with_capacity(512);
    a.extend_from_slice(b"ACK ");
    a.extend_from_slice(uri);
    a.extend_from_slice(b" SIP/2.0\r\nVia: ");
    a.extend_from_slice(&top_via);
    for r in req.headers.iter().filter(|h| h.kind == HeaderKind::Route) {
        a.extend_from_slice(b"\r\nRoute: ");
        a.extend_from_slice(&r.value);
    }
    a.extend_from_slice(b"\r\nFrom: ");
    a.extend_from_slice(&from);
    a.extend_from_slice(b"\r\nTo: ");
    a.extend_from_slice(&to);
    a.extend_from_slice(b"\r\nCall-ID: ");
    a.extend_from_slice(&call_id);
    a.extend_from_slice(
        format!(
            "\r\nCSeq: {} ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            cseq.number
        )
        .as_bytes(),
    );
    Ok(a)
}

/// A server transaction (INVITE or non-INVITE). The request itself goes to the TU by the
/// caller; the transaction absorbs retransmissions and retransmits responses.
#[derive(Debug)]
pub struct ServerTransaction {
    invite: bool,
    transport: Transport,
    timers: Timers,
    m: Machine,
    last_response: Option<Vec<u8>>,
}

impl ServerTransaction {
    pub fn new(request: &[u8], transport: Transport, timers: Timers) -> Result<Self, ParseError> {
        let invite = method_of(request)? == "INVITE";
        Ok(ServerTransaction {
            invite,
            transport,
            timers,
            m: Machine::new(
                if invite {
                    State::Proceeding
                } else {
                    State::Trying
                },
                timers.t1,
            ),
            last_response: None,
        })
    }

    pub fn state(&self) -> State {
        self.m.state
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.m.out.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.m.clock.next()
    }

    fn linger(&self, unreliable: Duration) -> Duration {
        match self.transport {
            Transport::Unreliable => unreliable,
            Transport::Reliable => Duration::ZERO,
        }
    }

    /// The TU answers: a provisional or final response to send.
    pub fn send_response(&mut self, now: Instant, response: Vec<u8>) -> Result<(), ParseError> {
        let code = status_of(&response)?;
        match (self.m.state, code) {
            (State::Trying | State::Proceeding, 100..=199) => {
                self.m.state = State::Proceeding;
            }
            (State::Proceeding, 200..=299) if self.invite => {
                // RFC 6026: Accepted, Timer L = 64*T1 (retransmitted INVITEs are absorbed,
                // ACKs go to the TU, the TU retransmits its 2xx).
                self.m.state = State::Accepted;
                self.m.clock.set(Timer::Linger, now + 64 * self.timers.t1);
            }
            (State::Accepted, 200..=299) => {}
            (State::Proceeding, 300..=699) if self.invite => {
                self.m.state = State::Completed;
                if self.transport == Transport::Unreliable {
                    self.m.clock.interval = self.timers.t1;
                    self.m.clock.set(Timer::Retransmit, now + self.timers.t1);
                }
                self.m.clock.set(Timer::Timeout, now + 64 * self.timers.t1);
            }
            (State::Trying | State::Proceeding, 200..=699) if !self.invite => {
                self.m.state = State::Completed;
                let j = self.linger(64 * self.timers.t1);
                self.m.clock.set(Timer::Linger, now + j);
            }
            // A response in a state that does not take one is not sent.
            _ => return Ok(()),
        }
        self.m.out.push_back(Output::Transmit(response.clone()));
        self.last_response = Some(response);
        if let Some(at) = self.m.clock.next() {
            if at <= now {
                self.handle_timeout(now);
            }
        }
        Ok(())
    }

    /// A request matched to this transaction arrived again (retransmission) or, for INVITE,
    /// its ACK.
    pub fn handle_request(&mut self, now: Instant, bytes: &[u8]) -> Result<(), ParseError> {
        let is_ack = method_of(bytes)? == "ACK";
        match (self.m.state, is_ack) {
            (State::Completed, true) if self.invite => {
                self.m.state = State::Confirmed;
                self.m.clock.cancel(Timer::Retransmit);
                self.m.clock.cancel(Timer::Timeout);
                let i = self.linger(self.timers.t4);
                self.m.clock.set(Timer::Linger, now + i);
                if i.is_zero() {
                    self.handle_timeout(now);
                }
            }
            (State::Accepted, true) => self.m.out.push_back(Output::Tu(TuEvent::Ack {
                message: bytes.to_vec(),
            })),
            (State::Proceeding | State::Completed, false) => {
                // Retransmission: send the last response again.
                if let Some(r) = &self.last_response {
                    self.m.out.push_back(Output::Transmit(r.clone()));
                }
            }
            // Trying (nothing to resend yet), Accepted (the TU retransmits 2xx), Confirmed.
            _ => {}
        }
        Ok(())
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        for t in self.m.clock.due(now) {
            if self.m.state == State::Terminated {
                return;
            }
            match t {
                Timer::Retransmit => {
                    if let Some(r) = &self.last_response {
                        self.m.out.push_back(Output::Transmit(r.clone()));
                    }
                    let next = (self.m.clock.interval * 2).min(self.timers.t2);
                    self.m.clock.interval = next;
                    self.m.clock.set(Timer::Retransmit, now + next);
                }
                Timer::Timeout => {
                    self.m.out.push_back(Output::Tu(TuEvent::Timeout));
                    self.m.terminate();
                }
                Timer::Linger => self.m.terminate(),
            }
        }
    }
}
