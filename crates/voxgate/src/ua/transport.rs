//! The UA's SIP transports (tokio): TLS and TCP connections framed by the SIP parser, one UDP
//! socket; every connection and UDP peer is a numbered flow. Reader tasks hand complete
//! messages to the driver over one channel; writer tasks send what the driver gives them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ServerConfig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::tls::{load_certs, load_key, load_roots, provider};
use voxgate_sip::{ErrorKind, Framing, ParseLimits, SipMessage};

use super::sip_ua::{FlowId, TransportKind};

/// What the network tells the driver.
#[derive(Debug)]
pub enum NetEvent {
    /// A connection is up (accepted by a listener).
    Opened {
        id: FlowId,
        peer: SocketAddr,
        writer: Writer,
    },
    /// One complete SIP message.
    Message {
        id: FlowId,
        bytes: Vec<u8>,
    },
    /// A UDP datagram.
    Datagram {
        peer: SocketAddr,
        bytes: Vec<u8>,
    },
    Closed {
        id: FlowId,
    },
}

static NEXT_FLOW: AtomicU64 = AtomicU64::new(1);

pub fn next_flow_id() -> FlowId {
    FlowId(NEXT_FLOW.fetch_add(1, Ordering::Relaxed))
}

/// The TLS client configuration: trust `ca`, present `cert`/`key` if given.
pub fn client_config(ca: &Path, cert: Option<(&Path, &Path)>) -> Result<Arc<ClientConfig>> {
    let roots = load_roots(ca)?;
    let b = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let cfg = match cert {
        Some((c, k)) => b
            .with_client_auth_cert(load_certs(c)?, load_key(k)?)
            .context("client certificate and key do not fit")?,
        None => b.with_no_client_auth(),
    };
    Ok(Arc::new(cfg))
}

/// The TLS server configuration for incoming connections.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>> {
    let cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(load_certs(cert)?, load_key(key)?)
        .context("server certificate and key do not fit")?;
    Ok(Arc::new(cfg))
}

/// Frames SIP messages out of a byte stream (RFC 3261 §18.3: Content-Length) and hands each
/// to the driver; keep-alive CRLFs are skipped. A framing error closes the connection: the
/// stream cannot be resynchronised.
async fn read_loop<R: AsyncRead + Unpin>(
    id: FlowId,
    mut r: R,
    events: mpsc::UnboundedSender<NetEvent>,
) {
    let limits = ParseLimits::default();
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut chunk = vec![0u8; 16384];
    'outer: loop {
        loop {
            let skip = buf
                .iter()
                .take_while(|b| **b == b'\r' || **b == b'\n')
                .count();
            buf.drain(..skip);
            if buf.is_empty() {
                break;
            }
            match SipMessage::parse(&buf, Framing::Stream, &limits) {
                Ok(m) => {
                    let len = m.len.min(buf.len());
                    let bytes: Vec<u8> = buf.drain(..len).collect();
                    if events.send(NetEvent::Message { id, bytes }).is_err() {
                        break 'outer;
                    }
                }
                Err(e) if e.kind == ErrorKind::Incomplete => break,
                Err(e) => {
                    tracing::warn!(flow = id.0, "closing a connection: unframeable SIP: {e}");
                    break 'outer;
                }
            }
        }
        match r.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let _ = events.send(NetEvent::Closed { id });
}

async fn write_loop<W: AsyncWrite + Unpin>(mut w: W, mut rx: mpsc::UnboundedReceiver<Vec<u8>>) {
    while let Some(b) = rx.recv().await {
        if w.write_all(&b).await.is_err() || w.flush().await.is_err() {
            break;
        }
    }
    let _ = w.shutdown().await;
}

/// A connection's writer: the channel to it and its task (awaited at exit so that the last
/// messages, e.g. the 200 to a BYE, are written before the process ends).
#[derive(Debug)]
pub struct Writer {
    pub tx: mpsc::UnboundedSender<Vec<u8>>,
    pub task: tokio::task::JoinHandle<()>,
}

/// Starts the reader and writer of a connection. An accepted connection (`announce` with its
/// peer) is announced to the driver before its reader can deliver anything; an outgoing one's
/// writer is returned for the driver to add.
pub fn spawn_stream<S>(
    id: FlowId,
    stream: S,
    events: mpsc::UnboundedSender<NetEvent>,
    announce: Option<SocketAddr>,
) -> Option<Writer>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (r, w) = tokio::io::split(stream);
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(write_loop(w, rx));
    let writer = Writer { tx, task };
    let ret = match announce {
        Some(peer) => {
            let _ = events.send(NetEvent::Opened { id, peer, writer });
            None
        }
        None => Some(writer),
    };
    tokio::spawn(read_loop(id, r, events));
    ret
}

/// Accepts TCP or TLS connections for ever.
pub fn spawn_listener(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    events: mpsc::UnboundedSender<NetEvent>,
) {
    tokio::spawn(async move {
        loop {
            let Ok((tcp, peer)) = listener.accept().await else {
                continue;
            };
            let events = events.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let id = next_flow_id();
                match tls {
                    Some(acc) => {
                        match tokio::time::timeout(Duration::from_secs(10), acc.accept(tcp)).await {
                            Ok(Ok(s)) => {
                                spawn_stream(id, s, events, Some(peer));
                            }
                            Ok(Err(e)) => {
                                tracing::warn!(%peer, "TLS handshake failed: {e}");
                            }
                            Err(_) => {
                                tracing::warn!(%peer, "TLS handshake timed out");
                            }
                        }
                    }
                    None => {
                        spawn_stream(id, tcp, events, Some(peer));
                    }
                }
            });
        }
    });
}

/// Receives UDP datagrams for ever.
pub fn spawn_udp(sock: Arc<UdpSocket>, events: mpsc::UnboundedSender<NetEvent>) {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_535];
        loop {
            match sock.recv_from(&mut buf).await {
                Ok((n, peer)) => {
                    let bytes = buf[..n].to_vec();
                    if events.send(NetEvent::Datagram { peer, bytes }).is_err() {
                        break;
                    }
                }
                Err(e) => tracing::debug!("UDP receive error: {e}"),
            }
        }
    });
}

/// Opens a connection to `addr` (TLS: the certificate must name `host`).
pub async fn connect(
    kind: TransportKind,
    addr: SocketAddr,
    host: &str,
    tls: Option<&Arc<ClientConfig>>,
    events: mpsc::UnboundedSender<NetEvent>,
) -> Result<(FlowId, SocketAddr, Writer)> {
    let tcp = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
        .await
        .with_context(|| format!("connecting to {addr} timed out"))?
        .with_context(|| format!("cannot connect to {addr}"))?;
    let local = tcp.local_addr()?;
    let _ = tcp.set_nodelay(true);
    let id = next_flow_id();
    let writer = match kind {
        TransportKind::Tls => {
            let cfg = tls.context("TLS needs --ca to verify the peer")?;
            let name = host.trim_start_matches('[').trim_end_matches(']');
            let server_name = ServerName::try_from(name.to_string())
                .with_context(|| format!("{name:?} is not a valid TLS server name"))?;
            let s = tokio::time::timeout(
                Duration::from_secs(10),
                TlsConnector::from(cfg.clone()).connect(server_name, tcp),
            )
            .await
            .with_context(|| format!("TLS handshake with {addr} timed out"))?
            .with_context(|| format!("TLS handshake with {addr} failed"))?;
            spawn_stream(id, s, events, None)
        }
        _ => spawn_stream(id, tcp, events, None),
    }
    .context("internal error: no writer")?;
    Ok((id, local, writer))
}

/// The driver's table of flows: connections by id and by peer address, UDP peers.
#[derive(Debug, Default)]
pub struct Flows {
    streams: HashMap<FlowId, (SocketAddr, mpsc::UnboundedSender<Vec<u8>>)>,
    writers: Vec<tokio::task::JoinHandle<()>>,
    udp: HashMap<FlowId, SocketAddr>,
    by_addr: HashMap<SocketAddr, FlowId>,
}

impl Flows {
    pub fn add_stream(&mut self, id: FlowId, peer: SocketAddr, w: Writer) {
        self.writers.retain(|t| !t.is_finished());
        self.writers.push(w.task);
        self.streams.insert(id, (peer, w.tx));
        self.by_addr.insert(peer, id);
    }

    pub fn udp_flow(&mut self, peer: SocketAddr) -> FlowId {
        if let Some(id) = self.by_addr.get(&peer) {
            return *id;
        }
        let id = next_flow_id();
        self.udp.insert(id, peer);
        self.by_addr.insert(peer, id);
        id
    }

    pub fn remove(&mut self, id: FlowId) {
        if let Some((peer, _)) = self.streams.remove(&id) {
            if self.by_addr.get(&peer) == Some(&id) {
                self.by_addr.remove(&peer);
            }
        }
    }

    pub fn by_addr(&self, peer: SocketAddr) -> Option<FlowId> {
        self.by_addr.get(&peer).copied()
    }

    /// Closes every connection after what is queued on it is written (at most `wait`).
    pub async fn close(self, wait: Duration) {
        drop(self.streams);
        let all = futures_join(self.writers);
        let _ = tokio::time::timeout(wait, all).await;
    }

    /// Sends on a flow; `false` if it is gone.
    pub async fn send(&self, id: FlowId, udp: Option<&UdpSocket>, bytes: Vec<u8>) -> bool {
        if let Some((_, tx)) = self.streams.get(&id) {
            return tx.send(bytes).is_ok();
        }
        match (self.udp.get(&id), udp) {
            (Some(peer), Some(sock)) => sock.send_to(&bytes, peer).await.is_ok(),
            _ => false,
        }
    }
}

async fn futures_join(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for t in tasks {
        let _ = t.await;
    }
}
