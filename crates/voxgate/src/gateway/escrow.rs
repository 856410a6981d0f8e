//! The gateway's escrow client: one mutual-TLS connection to its SPG (reconnected with
//! backoff), the sans-I/O `voxgate_escrow::client::EscrowClient` for framing, retries and
//! resends, and per call the session_ID: a first key_update gets one, later ones rekey under
//! it, hang-up ends it. A call's key_updates are sent one at a time (a rekey asked for while
//! one is in flight waits for its answer). Each session_ID goes to the bridge, which tags the
//! call's outward datagrams with it from then on; a refusal leaves the call untagged, so its
//! media never leaves the gateway.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::TlsConnector;
use voxgate_escrow::client::{ClientEvent, EscrowClient, RetryPolicy};
use voxgate_escrow::wire::StreamKey;
use voxgate_media::bridge::{BridgeCommand, EscrowRequest};

use crate::spg::wall_ms;
use voxgate_netio::plane::Handle;

#[derive(Debug, Default)]
pub(crate) struct EscrowMetrics {
    pub escrowed: AtomicU64,
    pub rekeys: AtomicU64,
    pub ended: AtomicU64,
    pub refused: AtomicU64,
    pub timed_out: AtomicU64,
    pub connected: AtomicU64,
}

impl EscrowMetrics {
    pub fn render(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut s = String::new();
        for (name, kind, help, v) in [
            (
                "voxgate_gateway_escrowed_total",
                "counter",
                "Calls escrowed (key_update answered with a session_ID).",
                g(&self.escrowed),
            ),
            (
                "voxgate_gateway_rekeys_total",
                "counter",
                "Rekeys escrowed under an existing session_ID.",
                g(&self.rekeys),
            ),
            (
                "voxgate_gateway_sessions_ended_total",
                "counter",
                "session_end answered.",
                g(&self.ended),
            ),
            (
                "voxgate_gateway_escrow_refused_total",
                "counter",
                "key_update or session_end refused by the SPG (the call's media stays blocked).",
                g(&self.refused),
            ),
            (
                "voxgate_gateway_escrow_timeouts_total",
                "counter",
                "Escrow requests without an answer after every retry.",
                g(&self.timed_out),
            ),
            (
                "voxgate_gateway_escrow_connected",
                "gauge",
                "1 while the escrow connection to the SPG is up.",
                g(&self.connected),
            ),
        ] {
            crate::metrics_http::metric(&mut s, name, kind, help, v);
        }
        s
    }
}

#[derive(Debug, Default)]
struct CallEscrow {
    session_id: Option<u64>,
    outside_port: u16,
    in_flight: Option<u64>,
    /// A key_update asked for while another was in flight.
    queued: Option<Vec<StreamKey>>,
    end: bool,
}

struct Client {
    client: EscrowClient,
    calls: HashMap<String, CallEscrow>,
    /// request id -> Call-ID (for key_updates).
    requests: HashMap<u64, String>,
    bridge: Handle<BridgeCommand>,
    metrics: Arc<EscrowMetrics>,
}

impl Client {
    fn key_update(&mut self, now: Instant, call_id: &str, streams: Vec<StreamKey>) {
        let Some(c) = self.calls.get_mut(call_id) else {
            return;
        };
        if c.in_flight.is_some() {
            c.queued = Some(streams);
            return;
        }
        let rid = self
            .client
            .key_update(now, wall_ms(), call_id, c.session_id, streams);
        c.in_flight = Some(rid);
        self.requests.insert(rid, call_id.to_string());
    }

    fn request(&mut self, now: Instant, r: EscrowRequest) {
        match r {
            EscrowRequest::KeyUpdate {
                call_id,
                outside_port,
                streams,
            } => {
                let c = self.calls.entry(call_id.clone()).or_default();
                c.outside_port = outside_port;
                c.end = false;
                self.key_update(now, &call_id, streams);
            }
            EscrowRequest::End { call_id } => {
                let Some(c) = self.calls.get_mut(&call_id) else {
                    return;
                };
                match (c.session_id, c.in_flight) {
                    (Some(id), None) => {
                        self.client.session_end(now, wall_ms(), id);
                        self.calls.remove(&call_id);
                    }
                    // Ended when the key_update in flight is answered.
                    (_, Some(_)) => c.end = true,
                    (None, None) => {
                        self.calls.remove(&call_id);
                    }
                }
            }
        }
    }

    fn event(&mut self, now: Instant, ev: ClientEvent) {
        match ev {
            ClientEvent::Escrowed {
                request_id,
                call_id,
                session_id,
            } => {
                self.requests.remove(&request_id);
                let Some(c) = self.calls.get_mut(&call_id) else {
                    return;
                };
                let rekey = c.session_id.is_some();
                c.session_id = Some(session_id);
                c.in_flight = None;
                let c_port = c.outside_port;
                let (end, queued) = (c.end, c.queued.take());
                if rekey {
                    self.metrics.rekeys.fetch_add(1, Ordering::Relaxed);
                } else {
                    self.metrics.escrowed.fetch_add(1, Ordering::Relaxed);
                }
                tracing::info!(%call_id, session_id = format_args!("{session_id:#018x}"), rekey, "escrowed");
                if end {
                    self.client.session_end(now, wall_ms(), session_id);
                    self.calls.remove(&call_id);
                    return;
                }
                self.bridge.send(BridgeCommand::Tag {
                    port: c_port,
                    session_id: Some(session_id),
                });
                if let Some(s) = queued {
                    self.key_update(now, &call_id, s);
                }
            }
            ClientEvent::Ended { session_id, .. } => {
                self.metrics.ended.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    session_id = format_args!("{session_id:#018x}"),
                    "session ended"
                );
            }
            ClientEvent::Refused {
                request_id,
                code,
                reason,
            } => {
                self.metrics.refused.fetch_add(1, Ordering::Relaxed);
                let call = self.requests.remove(&request_id);
                tracing::error!(call_id = ?call, code, %reason, "escrow refused by the SPG: the call's media is not sent");
                if let Some(c) = call.and_then(|id| self.calls.get_mut(&id)) {
                    c.in_flight = None;
                    c.queued = None;
                }
            }
            ClientEvent::TimedOut { request_id } => {
                self.metrics.timed_out.fetch_add(1, Ordering::Relaxed);
                let call = self.requests.remove(&request_id);
                tracing::error!(call_id = ?call, "no answer from the SPG's escrow server: the call's media is not sent");
                if let Some(c) = call.and_then(|id| self.calls.get_mut(&id)) {
                    c.in_flight = None;
                }
            }
        }
    }

    fn events(&mut self, now: Instant) {
        while let Some(ev) = self.client.poll_event() {
            self.event(now, ev);
        }
    }
}

/// Runs the escrow client until `requests` closes.
pub(crate) async fn run(
    local: std::net::IpAddr,
    spg: SocketAddr,
    connector: TlsConnector,
    mut requests: mpsc::UnboundedReceiver<EscrowRequest>,
    bridge: Handle<BridgeCommand>,
    metrics: Arc<EscrowMetrics>,
) {
    let mut c = Client {
        // Request ids only grow, across restarts too: start from the wall clock.
        client: EscrowClient::new(wall_ms(), RetryPolicy::default()),
        calls: HashMap::new(),
        requests: HashMap::new(),
        bridge,
        metrics,
    };
    let mut backoff = Duration::from_millis(200);
    loop {
        // Connect (requests keep being taken and queued meanwhile).
        let name = rustls::pki_types::ServerName::IpAddress(spg.ip().into());
        let conn = async {
            // From the gateway's own address: the SPG knows it by it.
            let tcp: TcpStream = crate::proxy::conn::connect_from(local, spg).await?;
            let _ = tcp.set_nodelay(true);
            connector.connect(name, tcp).await
        };
        let mut tls = tokio::select! {
            r = tokio::time::timeout(Duration::from_secs(10), conn) => match r {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::warn!(%spg, error = %e, "escrow connection failed; retrying");
                    if !wait(&mut c, &mut requests, backoff).await { return; }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
                Err(_) => {
                    tracing::warn!(%spg, "escrow connection timed out; retrying");
                    if !wait(&mut c, &mut requests, backoff).await { return; }
                    continue;
                }
            },
            r = requests.recv() => {
                match r {
                    Some(r) => { c.request(Instant::now(), r); continue; }
                    None => return,
                }
            }
        };
        backoff = Duration::from_millis(200);
        tracing::info!(%spg, "escrow connection up");
        c.metrics.connected.store(1, Ordering::Relaxed);
        c.client.reconnected(Instant::now());
        let mut buf = vec![0u8; 16 * 1024];
        let why = loop {
            let mut failed = None;
            while let Some(frame) = c.client.poll_transmit() {
                if let Err(e) = tls.write_all(&frame).await {
                    failed = Some(format!("write: {e}"));
                    break;
                }
            }
            if let Some(f) = failed {
                break f;
            }
            let deadline = c.client.poll_timeout();
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = requests.recv() => match r {
                    Some(r) => c.request(Instant::now(), r),
                    None => return,
                },
                r = tls.read(&mut buf) => match r {
                    Ok(0) => break "closed by the SPG".to_string(),
                    Ok(n) => {
                        if let Err(e) = c.client.handle_input(&buf[..n]) {
                            break format!("unreadable frame from the SPG: {e}");
                        }
                        c.events(Instant::now());
                    }
                    Err(e) => break format!("read: {e}"),
                },
                _ = sleep => {
                    c.client.handle_timeout(Instant::now());
                    c.events(Instant::now());
                }
            }
        };
        c.metrics.connected.store(0, Ordering::Relaxed);
        tracing::warn!(%spg, "escrow connection lost ({why}); reconnecting");
    }
}

/// Waits `d` while taking requests; false once the requests channel is closed.
async fn wait(
    c: &mut Client,
    requests: &mut mpsc::UnboundedReceiver<EscrowRequest>,
    d: Duration,
) -> bool {
    let until = tokio::time::Instant::now() + d;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(until) => return true,
            r = requests.recv() => match r {
                Some(r) => c.request(Instant::now(), r),
                None => return false,
            }
        }
    }
}
