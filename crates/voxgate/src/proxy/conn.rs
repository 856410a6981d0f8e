//! TCP and TLS connections of the proxy: accepting, connecting, framing, limits, reuse.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use voxgate_sip::config::{Limits, TransportKind};
use voxgate_sip::message::{Framing, ParseLimits, SipMessage};
use voxgate_sip::proxy::Flow;
use voxgate_sip::ErrorKind;

use super::{secs, Event};
use crate::tls::{load_certs, load_key, load_roots, provider};

/// The TLS server side, and the client side for outbound connections when a CA is known.
pub(crate) struct TlsConfigs {
    pub acceptor: TlsAcceptor,
    pub connector: Option<TlsConnector>,
}

/// Loads the server certificate and key, and the CA for client certificates and outbound
/// connections.
pub(crate) fn tls_configs(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> anyhow::Result<TlsConfigs> {
    let chain = load_certs(cert)?;
    let key = load_key(key)?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS versions")?;
    let mut roots = rustls::RootCertStore::empty();
    let server = match client_ca {
        Some(ca) => {
            roots = load_roots(ca)?;
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots.clone()),
                provider(),
            )
            .allow_unauthenticated()
            .build()
            .context("client certificate verifier")?;
            builder
                .with_client_cert_verifier(verifier)
                .with_single_cert(chain, key)
        }
        None => builder.with_no_client_auth().with_single_cert(chain, key),
    }
    .context("the server certificate and key do not fit together")?;
    let connector = if roots.is_empty() {
        None
    } else {
        let c = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .context("TLS versions")?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Some(TlsConnector::from(Arc::new(c)))
    };
    Ok(TlsConfigs {
        acceptor: TlsAcceptor::from(Arc::new(server)),
        connector,
    })
}

/// Connects to `remote` from the listener's address `local` (unless it is a wildcard), so
/// that the peer sees the address the proxy puts in Via and Record-Route (and a trunk peer
/// knows it by that address).
pub(crate) async fn connect_from(
    local: std::net::IpAddr,
    remote: std::net::SocketAddr,
) -> std::io::Result<TcpStream> {
    let sock = if remote.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    if !local.is_unspecified() && local.is_ipv4() == remote.is_ipv4() {
        sock.bind(std::net::SocketAddr::new(local, 0))?;
    }
    sock.connect(remote).await
}

/// Connection counts shared by the accept tasks and the core's task.
pub(crate) struct ConnLimits {
    total: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    max_total: usize,
    max_per_ip: usize,
    next_id: AtomicU64,
    refused: AtomicU64,
}

impl ConnLimits {
    pub fn new(l: &Limits) -> Self {
        ConnLimits {
            total: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
            max_total: l.max_connections,
            max_per_ip: l.max_connections_per_ip,
            next_id: AtomicU64::new(1),
            refused: AtomicU64::new(0),
        }
    }

    /// Takes a slot for a connection with `ip`, or refuses.
    fn acquire(&self, ip: IpAddr) -> bool {
        let mut m = match self.per_ip.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        let n = m.get(&ip).copied().unwrap_or(0);
        if n >= self.max_per_ip || self.total.load(Ordering::Relaxed) >= self.max_total {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        m.insert(ip, n + 1);
        self.total.fetch_add(1, Ordering::Relaxed);
        true
    }

    fn release(&self, ip: IpAddr) {
        let mut m = match self.per_ip.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        if let Some(n) = m.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&ip);
            }
        }
        self.total.fetch_sub(1, Ordering::Relaxed);
    }

    fn id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }
}

/// Releases a connection slot when a connection task ends, however it ends.
struct Slot(Arc<ConnLimits>, IpAddr);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.release(self.1);
    }
}

pub(crate) async fn accept_loop(
    listener: TcpListener,
    transport: TransportKind,
    local: SocketAddr,
    tls: Option<TlsAcceptor>,
    tx: mpsc::Sender<Event>,
    limits: Arc<ConnLimits>,
    cfg: Limits,
) {
    loop {
        let (tcp, remote) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if !limits.acquire(remote.ip()) {
            tracing::warn!(%remote, "connection refused: connection limit reached");
            drop(tcp);
            continue;
        }
        let slot = Slot(limits.clone(), remote.ip());
        let _ = tcp.set_nodelay(true);
        let id = limits.id();
        let flow = Flow {
            transport,
            local,
            remote,
            conn: Some(id),
        };
        let tx = tx.clone();
        let tls = tls.clone();
        let cfg = cfg.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let (wtx, wrx) = mpsc::channel(1024);
            match tls {
                Some(acc) => {
                    let hs =
                        tokio::time::timeout(secs(cfg.handshake_timeout_secs), acc.accept(tcp));
                    let stream = match hs.await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::info!(%remote, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::info!(%remote, "TLS handshake timed out");
                            return;
                        }
                    };
                    if tx
                        .send(Event::Opened {
                            id,
                            flow,
                            writer: wtx,
                        })
                        .await
                        .is_err()
                    {
                        return;
                    }
                    let failed = run_conn(stream, flow, wrx, &tx, &cfg).await;
                    let _ = tx.send(Event::Closed { flow, failed }).await;
                }
                None => {
                    if tx
                        .send(Event::Opened {
                            id,
                            flow,
                            writer: wtx,
                        })
                        .await
                        .is_err()
                    {
                        return;
                    }
                    let failed = run_conn(tcp, flow, wrx, &tx, &cfg).await;
                    let _ = tx.send(Event::Closed { flow, failed }).await;
                }
            }
        });
    }
}

/// Reads framed messages and writes queued ones until the peer closes, an error, or the idle
/// timeout. Returns whether it ended in a failure.
async fn run_conn<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    flow: Flow,
    mut rx: mpsc::Receiver<Vec<u8>>,
    tx: &mpsc::Sender<Event>,
    cfg: &Limits,
) -> bool {
    let (mut rd, mut wr) = tokio::io::split(stream);
    let limits = ParseLimits {
        max_message: cfg.max_message_bytes,
        max_body: cfg.max_message_bytes,
        ..ParseLimits::default()
    };
    let idle = secs(cfg.idle_timeout_secs);
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut tmp = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            r = rd.read(&mut tmp) => {
                let n = match r {
                    Ok(0) => return false,
                    Ok(n) => n,
                    Err(e) => {
                        tracing::debug!(remote = %flow.remote, error = %e, "connection read");
                        return false;
                    }
                };
                buf.extend_from_slice(&tmp[..n]);
                loop {
                    // RFC 5626 keep-alive: a double CRLF ping gets a CRLF pong.
                    while buf.starts_with(b"\r\n\r\n") {
                        buf.drain(..4);
                        if wr.write_all(b"\r\n").await.is_err() {
                            return true;
                        }
                    }
                    let lead = buf.iter().take_while(|b| **b == b'\r' || **b == b'\n').count();
                    if lead > 0 && lead == buf.len() && lead < 4 {
                        break; // maybe the start of a ping; wait for more
                    }
                    buf.drain(..lead);
                    if buf.is_empty() {
                        break;
                    }
                    match SipMessage::parse(&buf, Framing::Stream, &limits) {
                        Ok(m) => {
                            let n = m.len;
                            let bytes = buf[..n].to_vec();
                            buf.drain(..n);
                            if tx.send(Event::Message { flow, bytes }).await.is_err() {
                                return false;
                            }
                        }
                        Err(e) if e.kind == ErrorKind::Incomplete => break,
                        Err(e) => {
                            // Framing is lost: let the core answer what it can, then close.
                            tracing::info!(remote = %flow.remote, error = %e, "malformed message on a stream; closing");
                            let bytes = std::mem::take(&mut buf);
                            let _ = tx.send(Event::Message { flow, bytes }).await;
                            // Give the core a moment to queue its answer.
                            let _ = tokio::time::timeout(Duration::from_millis(200), async {
                                if let Some(b) = rx.recv().await {
                                    let _ = wr.write_all(&b).await;
                                }
                            }).await;
                            return false;
                        }
                    }
                }
            }
            m = rx.recv() => {
                let Some(b) = m else { return false };
                if let Err(e) = wr.write_all(&b).await {
                    tracing::debug!(remote = %flow.remote, error = %e, "connection write");
                    return true;
                }
            }
            _ = tokio::time::sleep(idle) => {
                tracing::debug!(remote = %flow.remote, "idle connection closed");
                return false;
            }
        }
    }
}

struct Handle {
    writer: mpsc::Sender<Vec<u8>>,
    flow: Flow,
}

/// The core task's table of open connections.
pub(crate) struct Connections {
    by_id: HashMap<u64, Handle>,
    by_remote: HashMap<(TransportKind, SocketAddr), u64>,
    events: mpsc::Sender<Event>,
    limits: Arc<ConnLimits>,
    cfg: Limits,
    connector: Option<TlsConnector>,
    opened_total: u64,
    outbound_total: u64,
}

impl Connections {
    pub fn new(
        events: mpsc::Sender<Event>,
        limits: Arc<ConnLimits>,
        cfg: Limits,
        connector: Option<TlsConnector>,
    ) -> Self {
        Connections {
            by_id: HashMap::new(),
            by_remote: HashMap::new(),
            events,
            limits,
            cfg,
            connector,
            opened_total: 0,
            outbound_total: 0,
        }
    }

    pub fn opened(&mut self, id: u64, flow: Flow, writer: mpsc::Sender<Vec<u8>>) {
        self.opened_total += 1;
        self.by_remote.insert((flow.transport, flow.remote), id);
        self.by_id.insert(id, Handle { writer, flow });
    }

    pub fn closed(&mut self, flow: &Flow) {
        if let Some(id) = flow.conn {
            self.by_id.remove(&id);
            if self.by_remote.get(&(flow.transport, flow.remote)) == Some(&id) {
                self.by_remote.remove(&(flow.transport, flow.remote));
            }
        }
    }

    /// Queues bytes on the flow's connection, reusing one to the same remote, or opening one.
    /// `Err(flow)`: the flow cannot be reached.
    pub fn send(&mut self, flow: Flow, bytes: Vec<u8>) -> Result<(), Flow> {
        let id = match flow.conn {
            Some(id) => Some(id),
            None => self.by_remote.get(&(flow.transport, flow.remote)).copied(),
        };
        if let Some(id) = id {
            let Some(h) = self.by_id.get(&id) else {
                return Err(flow);
            };
            return match h.writer.try_send(bytes) {
                Ok(()) => Ok(()),
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!(remote = %flow.remote, "connection write queue full: message dropped");
                    Ok(())
                }
                Err(mpsc::error::TrySendError::Closed(_)) => Err(h.flow),
            };
        }
        self.connect(flow, bytes)
    }

    fn connect(&mut self, flow: Flow, first: Vec<u8>) -> Result<(), Flow> {
        let connector = match flow.transport {
            TransportKind::Tls => match &self.connector {
                Some(c) => Some(c.clone()),
                None => {
                    tracing::warn!(remote = %flow.remote, "no CA configured ([tls] client_ca) to open an outbound TLS connection");
                    return Err(flow);
                }
            },
            _ => None,
        };
        if !self.limits.acquire(flow.remote.ip()) {
            return Err(flow);
        }
        let slot = Slot(self.limits.clone(), flow.remote.ip());
        let id = self.limits.id();
        let flow = Flow {
            conn: Some(id),
            ..flow
        };
        let (wtx, wrx) = mpsc::channel(1024);
        let _ = wtx.try_send(first);
        self.outbound_total += 1;
        self.opened(id, flow, wtx);
        let events = self.events.clone();
        let cfg = self.cfg.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let hs = secs(cfg.handshake_timeout_secs);
            let tcp =
                match tokio::time::timeout(hs, connect_from(flow.local.ip(), flow.remote)).await {
                    Ok(Ok(s)) => s,
                    _ => {
                        tracing::info!(remote = %flow.remote, "outbound connection failed");
                        let _ = events.send(Event::Closed { flow, failed: true }).await;
                        return;
                    }
                };
            let _ = tcp.set_nodelay(true);
            let failed = match connector {
                Some(c) => {
                    let name = ServerName::IpAddress(flow.remote.ip().into());
                    match tokio::time::timeout(hs, c.connect(name, tcp)).await {
                        Ok(Ok(s)) => run_conn(s, flow, wrx, &events, &cfg).await,
                        _ => {
                            tracing::info!(remote = %flow.remote, "outbound TLS handshake failed");
                            true
                        }
                    }
                }
                None => run_conn(tcp, flow, wrx, &events, &cfg).await,
            };
            let _ = events.send(Event::Closed { flow, failed }).await;
        });
        Ok(())
    }

    pub fn render_metrics(&self) -> String {
        format!(
            "# HELP voxgate_connections Open TCP/TLS connections.\n# TYPE voxgate_connections gauge\nvoxgate_connections {}\n\
# HELP voxgate_connections_opened_total Connections opened (accepted and outbound).\n# TYPE voxgate_connections_opened_total counter\nvoxgate_connections_opened_total {}\n\
# HELP voxgate_connections_outbound_total Outbound connections opened.\n# TYPE voxgate_connections_outbound_total counter\nvoxgate_connections_outbound_total {}\n\
# HELP voxgate_connections_refused_total Connections refused by the limits.\n# TYPE voxgate_connections_refused_total counter\nvoxgate_connections_refused_total {}\n",
            self.by_id.len(),
            self.opened_total,
            self.outbound_total,
            self.limits.refused.load(Ordering::Relaxed)
        )
    }
}
