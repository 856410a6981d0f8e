//! `voxgate proxy`: the tokio driver around the sans-I/O `voxgate_sip::proxy::ProxyCore`.
//!
//! One task owns the core and is the only one to touch it; sockets talk to it over a channel:
//! - UDP: one receive task per listener; the core's task sends with `try_send_to`.
//! - TCP/TLS: an accept task per listener, a task per connection that frames messages
//!   (Content-Length, `Framing::Stream`) and writes what the core queues for it. Outbound
//!   connections are opened on demand and reused (a flow is keyed by transport and remote
//!   address); limits on connections in all and per IP, a handshake timeout and an idle
//!   timeout bound what a peer can hold.
//! - Metrics in Prometheus text format on `GET /metrics` when `[metrics] address` is set.

pub(crate) mod conn;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, oneshot};
use voxgate_sip::config::{ProxyConfig, TransportKind};
use voxgate_sip::proxy::{Flow, ProxyCore};

use conn::{ConnLimits, Connections};

/// Arguments of `voxgate proxy`.
#[derive(Debug, clap::Args)]
pub struct ProxyArgs {
    /// The TOML configuration (see examples/proxy.toml). Relative paths in it are relative to
    /// the file's directory.
    #[arg(long)]
    pub config: PathBuf,
    /// Only load and check the configuration (and the TLS files), then exit.
    #[arg(long)]
    pub check_config: bool,
}

/// What the sockets tell the core's task.
pub(crate) enum Event {
    Datagram {
        local: SocketAddr,
        remote: SocketAddr,
        bytes: Vec<u8>,
    },
    /// A connection is up (accepted, or an outbound one connected).
    Opened {
        id: u64,
        flow: Flow,
        writer: mpsc::Sender<Vec<u8>>,
    },
    Message {
        flow: Flow,
        bytes: Vec<u8>,
    },
    Closed {
        flow: Flow,
        failed: bool,
    },
    Metrics(oneshot::Sender<String>),
}

use crate::config_file::resolve;

pub fn run(args: ProxyArgs) -> anyhow::Result<ExitCode> {
    let (text, base) = crate::config_file::read(&args.config)?;
    let cfg = ProxyConfig::from_toml(&text)
        .with_context(|| format!("configuration {}", args.config.display()))?;
    let tls = match &cfg.tls {
        Some(t) => Some(conn::tls_configs(
            &resolve(&base, &t.cert),
            &resolve(&base, &t.key),
            t.client_ca.as_ref().map(|c| resolve(&base, c)).as_deref(),
        )?),
        None => None,
    };
    if args.check_config {
        println!(
            "configuration OK: {} listener(s), {} domain(s), {} user(s)",
            cfg.listeners.len(),
            cfg.domains.len(),
            cfg.domains.iter().map(|d| d.users.len()).sum::<usize>()
        );
        return Ok(ExitCode::SUCCESS);
    }
    // One thread: the core is single-threaded anyway, and handing every datagram from a
    // receiving thread to the core's thread cost more (wake-ups, context switches) than the
    // SIP work itself. Run several proxies (SO_REUSEPORT) to use more cores.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(serve(cfg, tls))
}

/// A SIP core running in its task: the addresses its listeners bound and the channel to it.
pub(crate) struct SipNode {
    pub bound: Vec<(TransportKind, SocketAddr)>,
    pub events: mpsc::Sender<Event>,
}

impl SipNode {
    /// The core's metrics (Prometheus text), asked through its task.
    pub async fn metrics(&self) -> Option<String> {
        let (otx, orx) = oneshot::channel();
        self.events.send(Event::Metrics(otx)).await.ok()?;
        orx.await.ok()
    }
}

/// Binds the listeners of `cfg` and builds the core (with `anchor`, if given, for the SDP it
/// forwards). Returns the node and the core's loop, for the caller to run (it runs until the
/// runtime stops).
pub(crate) async fn start_sip(
    cfg: &ProxyConfig,
    tls: Option<conn::TlsConfigs>,
    anchor: Option<Box<dyn voxgate_sip::anchor::MediaAnchor + Send>>,
) -> anyhow::Result<(SipNode, impl std::future::Future<Output = ()>)> {
    let (tx, mut rx) = mpsc::channel::<Event>(8192);
    let limits = Arc::new(ConnLimits::new(&cfg.limits));
    let mut udp: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut bound: Vec<(TransportKind, SocketAddr)> = Vec::new();
    for l in &cfg.listeners {
        match l.transport {
            TransportKind::Udp => {
                let s = udp_socket(l.address, cfg.limits.udp_buffer_bytes)
                    .with_context(|| format!("binding udp {}", l.address))?;
                let local = s.local_addr()?;
                let s = Arc::new(s);
                udp.insert(local, s.clone());
                bound.push((TransportKind::Udp, local));
                let tx = tx.clone();
                let max = cfg.limits.max_message_bytes;
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65_536];
                    loop {
                        match s.recv_from(&mut buf).await {
                            Ok((n, remote)) => {
                                if n > max {
                                    tracing::debug!(%remote, n, "datagram over the size limit dropped");
                                    continue;
                                }
                                let ev = Event::Datagram {
                                    local,
                                    remote,
                                    bytes: buf[..n].to_vec(),
                                };
                                if tx.send(ev).await.is_err() {
                                    break;
                                }
                            }
                            // ICMP errors surface here on Linux; keep serving.
                            Err(e) => tracing::debug!(error = %e, "udp receive"),
                        }
                    }
                });
            }
            t @ (TransportKind::Tcp | TransportKind::Tls) => {
                let acceptor = if t == TransportKind::Tls {
                    let Some(c) = &tls else {
                        bail!("a TLS listener needs [tls]");
                    };
                    Some(c.acceptor.clone())
                } else {
                    None
                };
                let listener = TcpListener::bind(l.address)
                    .await
                    .with_context(|| format!("binding {t:?} {}", l.address))?;
                let local = listener.local_addr()?;
                bound.push((t, local));
                tokio::spawn(conn::accept_loop(
                    listener,
                    t,
                    local,
                    acceptor,
                    tx.clone(),
                    limits.clone(),
                    cfg.limits.clone(),
                ));
            }
        }
    }
    let mut core =
        ProxyCore::new(cfg, bound.clone(), Instant::now()).context("starting the proxy core")?;
    if let Some(a) = anchor {
        core.set_anchor(a);
    }
    let mut conns = Connections::new(
        tx.clone(),
        limits.clone(),
        cfg.limits.clone(),
        tls.as_ref().and_then(|t| t.connector.clone()),
    );
    let run = async move {
        loop {
            let deadline = core.poll_timeout();
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                ev = rx.recv() => {
                    let Some(ev) = ev else { break };
                    handle(&mut core, &mut conns, ev);
                    // Take what else is queued before sending, so bursts are cheap.
                    for _ in 0..256 {
                        match rx.try_recv() {
                            Ok(ev) => handle(&mut core, &mut conns, ev),
                            Err(_) => break,
                        }
                    }
                }
                _ = sleep => core.handle_timeout(Instant::now()),
            }
            flush(&mut core, &mut conns, &udp);
        }
    };
    Ok((SipNode { bound, events: tx }, run))
}

async fn serve(cfg: ProxyConfig, tls: Option<conn::TlsConfigs>) -> anyhow::Result<ExitCode> {
    let (node, core_loop) = start_sip(&cfg, tls, None).await?;
    let node = Arc::new(node);
    let mut metrics_addr = None;
    if let Some(m) = &cfg.metrics {
        let l = TcpListener::bind(m.address)
            .await
            .with_context(|| format!("binding the metrics endpoint {}", m.address))?;
        metrics_addr = Some(l.local_addr()?);
        let node = node.clone();
        tokio::spawn(crate::metrics_http::serve(l, move || {
            let node = node.clone();
            async move { node.metrics().await }
        }));
    }
    for (t, a) in &node.bound {
        println!("listening {} {a}", format!("{t:?}").to_lowercase());
    }
    if let Some(a) = metrics_addr {
        println!("listening metrics {a}");
    }
    println!("ready");
    use std::io::Write;
    let _ = std::io::stdout().flush();
    tracing::info!(listeners = ?node.bound, domains = cfg.domains.len(), "voxgate proxy ready");
    tokio::select! {
        _ = core_loop => {}
        _ = tokio::signal::ctrl_c() => tracing::info!("shutting down"),
    }
    Ok(ExitCode::SUCCESS)
}

fn handle(core: &mut ProxyCore, conns: &mut Connections, ev: Event) {
    let now = Instant::now();
    match ev {
        Event::Datagram {
            local,
            remote,
            bytes,
        } => core.handle_input(
            now,
            Flow {
                transport: TransportKind::Udp,
                local,
                remote,
                conn: None,
            },
            &bytes,
        ),
        Event::Opened { id, flow, writer } => conns.opened(id, flow, writer),
        Event::Message { flow, bytes } => core.handle_input(now, flow, &bytes),
        Event::Closed { flow, failed } => {
            conns.closed(&flow);
            if failed {
                core.handle_unreachable(now, flow);
            }
        }
        Event::Metrics(reply) => {
            let mut m = core.render_metrics();
            m.push_str(&conns.render_metrics());
            let _ = reply.send(m);
        }
    }
}

fn flush(core: &mut ProxyCore, conns: &mut Connections, udp: &HashMap<SocketAddr, Arc<UdpSocket>>) {
    while let Some(t) = core.poll_transmit() {
        match t.flow.transport {
            TransportKind::Udp => {
                let sock = udp.get(&t.flow.local).or_else(|| udp.values().next());
                if let Some(s) = sock {
                    if let Err(e) = s.try_send_to(&t.bytes, t.flow.remote) {
                        tracing::debug!(remote = %t.flow.remote, error = %e, "udp send failed");
                    }
                }
            }
            TransportKind::Tcp | TransportKind::Tls => {
                if let Err(flow) = conns.send(t.flow, t.bytes) {
                    core.handle_unreachable(Instant::now(), flow);
                }
            }
        }
    }
}

/// A UDP socket with large kernel buffers: SO_RCVBUF/SO_SNDBUF as asked, and where the
/// kernel's cap (net.core.rmem_max) is lower, SO_RCVBUFFORCE when the process may (root or
/// CAP_NET_ADMIN). The sizes obtained are logged.
fn udp_socket(addr: SocketAddr, bytes: usize) -> anyhow::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    let _ = s.set_recv_buffer_size(bytes);
    let _ = s.set_send_buffer_size(bytes);
    // Linux reports twice the size set (bookkeeping overhead).
    if s.recv_buffer_size().unwrap_or(0) < bytes {
        force_buffer(&s, libc::SO_RCVBUFFORCE, bytes);
    }
    if s.send_buffer_size().unwrap_or(0) < bytes {
        force_buffer(&s, libc::SO_SNDBUFFORCE, bytes);
    }
    tracing::info!(
        %addr,
        recv = s.recv_buffer_size().unwrap_or(0),
        send = s.send_buffer_size().unwrap_or(0),
        "udp socket buffers"
    );
    s.bind(&addr.into())?;
    s.set_nonblocking(true)?;
    Ok(UdpSocket::from_std(s.into())?)
}

fn force_buffer(s: &socket2::Socket, opt: libc::c_int, bytes: usize) {
    use std::os::fd::AsRawFd;
    let v: libc::c_int = bytes.min(i32::MAX as usize) as libc::c_int;
    // SAFETY: setsockopt on a socket we own, with a pointer to a c_int and its size.
    let _ = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}

/// Keeps the idle-timeout type in one place for the connection module.
pub(crate) fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}
