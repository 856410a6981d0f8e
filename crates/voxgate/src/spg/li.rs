//! The SPG's point of interception (`voxgate_li::poi::Poi`) and its link to the mediation.
//!
//! - The proxy's media anchor reports every call's events here ([`SpgAnchor`] wraps the
//!   relay's anchor); the escrow thread reports each stored key_update (the sealed row).
//! - The POI decides which calls match the mediation's tasks; for those it has the relay tap
//!   the call's legs (`RelayAnchor::set_tap`), and the relay thread copies each forwarded
//!   datagram of a tapped leg into a bounded channel ([`TapCopy`]), read by the `spg-li-tap`
//!   thread.
//! - One TLS connection (mutual TLS, from `[li]`) to the mediation carries the X2/X3 PDUs out
//!   and the task lists in (4-byte big-endian length, JSON `TaskList`). It reconnects every
//!   second while the mediation is away; PDUs queue up to `[li] queue_bytes`, then are dropped
//!   and counted.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use voxgate_keystore::StoredSession;
use voxgate_li::iri::PoiEvent;
use voxgate_li::poi::{Poi, PoiOutput, TaskList};
use voxgate_media::relay::RelayAnchor;
use voxgate_sip::anchor::{CallEvent, MediaAnchor, Refusal, SdpContext, Side};

use super::config::LiSection;
use super::escrow::wall_ms;
use crate::tls::{load_certs, load_key, load_roots, provider};

/// A copy of one forwarded datagram of a tapped call (the 5-tuple the escrowed keys name).
pub(crate) struct TapCopy {
    pub tap: u32,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub time_ms: u64,
    pub packet: Vec<u8>,
}

/// Counters on /metrics.
#[derive(Debug, Default)]
pub(crate) struct LiMetrics {
    pub connected: AtomicBool,
    pub pdus_sent: AtomicU64,
    pub pdus_dropped: AtomicU64,
    pub copies_dropped: AtomicU64,
    pub tasks: AtomicU64,
    pub calls_tapped: AtomicU64,
}

impl LiMetrics {
    pub fn render(&self) -> String {
        let mut s = String::new();
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut one = |name: &str, kind: &str, help: &str, v: u64| {
            crate::metrics_http::metric(&mut s, name, kind, help, v)
        };
        one(
            "voxgate_li_connected",
            "gauge",
            "1 while the mediation link is up.",
            u64::from(self.connected.load(Ordering::Relaxed)),
        );
        one(
            "voxgate_li_tasks",
            "gauge",
            "Interception tasks provisioned by the mediation.",
            g(&self.tasks),
        );
        one(
            "voxgate_li_calls_tapped_total",
            "counter",
            "Calls that matched a task.",
            g(&self.calls_tapped),
        );
        one(
            "voxgate_li_pdus_sent_total",
            "counter",
            "X2/X3 PDUs sent to the mediation.",
            g(&self.pdus_sent),
        );
        one(
            "voxgate_li_pdus_dropped_total",
            "counter",
            "X2/X3 PDUs dropped (queue full while the mediation was slow or away).",
            g(&self.pdus_dropped),
        );
        one(
            "voxgate_li_copies_dropped_total",
            "counter",
            "Datagram copies the relay could not hand over (tap channel full).",
            g(&self.copies_dropped),
        );
        s
    }
}

/// The POI, the relay's anchor it taps through, and the queue towards the mediation.
pub(crate) struct LiTap {
    poi: Mutex<Poi>,
    /// The relay to tap through (an SPG); `None` on a voice gateway, which reports only
    /// registrations.
    relay: Option<Arc<Mutex<RelayAnchor>>>,
    queue: Mutex<(VecDeque<Vec<u8>>, usize)>,
    queue_max: usize,
    notify: tokio::sync::Notify,
    pub metrics: Arc<LiMetrics>,
    /// Sessions of calls a task matched: their stored keys are kept past the retention
    /// (`[li] keep_file`, one session_ID in hex per line, survives restarts).
    kept: Mutex<std::collections::HashSet<u64>>,
    keep_file: std::path::PathBuf,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl LiTap {
    pub fn new(
        node: &str,
        relay: Option<Arc<Mutex<RelayAnchor>>>,
        queue_max: usize,
        metrics: Arc<LiMetrics>,
        keep_file: &std::path::Path,
    ) -> anyhow::Result<Arc<LiTap>> {
        let kept = match std::fs::read_to_string(keep_file) {
            Ok(t) => t
                .lines()
                .filter_map(|l| u64::from_str_radix(l.trim(), 16).ok())
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Default::default(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", keep_file.display())),
        };
        Ok(Arc::new(LiTap {
            kept: Mutex::new(kept),
            keep_file: keep_file.to_path_buf(),
            poi: Mutex::new(Poi::new(node)),
            relay,
            queue: Mutex::new((VecDeque::new(), 0)),
            queue_max,
            notify: tokio::sync::Notify::new(),
            metrics,
        }))
    }

    /// Whether a session's stored keys are kept past the retention (its call matched a task).
    pub fn keeps(&self, session_id: u64) -> bool {
        lock(&self.kept).contains(&session_id)
    }

    /// Carries out what the POI decided: taps to the relay, PDUs to the queue.
    fn pump(&self) {
        let outs: Vec<PoiOutput> = {
            let mut p = lock(&self.poi);
            let v = std::iter::from_fn(|| p.poll_output()).collect();
            self.metrics
                .calls_tapped
                .store(p.stats().calls_tapped, Ordering::Relaxed);
            v
        };
        let mut queued = false;
        for o in outs {
            match o {
                PoiOutput::Tap { call_id, tap } => {
                    if let Some(r) = &self.relay {
                        lock(r).set_tap(&call_id, tap);
                    }
                    tracing::info!(%call_id, tapped = tap.is_some(), "interception tap");
                }
                PoiOutput::Pdu(b) => {
                    let mut q = lock(&self.queue);
                    if q.1 + b.len() > self.queue_max {
                        self.metrics.pdus_dropped.fetch_add(1, Ordering::Relaxed);
                    } else {
                        q.1 += b.len();
                        q.0.push_back(b);
                        queued = true;
                    }
                }
            }
        }
        if queued {
            self.notify.notify_one();
        }
    }

    pub fn call_event(&self, ev: &CallEvent<'_>) {
        let now = wall_ms();
        {
            let mut p = lock(&self.poi);
            match ev {
                CallEvent::Registered {
                    aor,
                    contacts,
                    expires,
                    source,
                } => p.registration(now, aor, contacts, *expires, *source),
                CallEvent::Attempt {
                    call_id,
                    from_uri,
                    request_uri,
                    to_uri,
                    from_trusted,
                    to_trusted,
                } => p.attempt(
                    now,
                    call_id,
                    from_uri,
                    to_uri,
                    request_uri,
                    *from_trusted,
                    *to_trusted,
                ),
                CallEvent::Alerting { call_id, status } => p.event(
                    now,
                    PoiEvent::Alerting {
                        call_id: call_id.to_string(),
                        time_ms: now,
                        status: *status,
                    },
                ),
                CallEvent::Answered { call_id } => p.event(
                    now,
                    PoiEvent::Answered {
                        call_id: call_id.to_string(),
                        time_ms: now,
                    },
                ),
                CallEvent::Failed { call_id, status } => p.event(
                    now,
                    PoiEvent::Failed {
                        call_id: call_id.to_string(),
                        time_ms: now,
                        status: *status,
                    },
                ),
                CallEvent::Modified { call_id, method } => p.event(
                    now,
                    PoiEvent::Modified {
                        call_id: call_id.to_string(),
                        time_ms: now,
                        method: method.to_string(),
                    },
                ),
            }
        }
        self.pump();
    }

    pub fn call_ended(&self, call_id: &str) {
        let now = wall_ms();
        lock(&self.poi).event(
            now,
            PoiEvent::Ended {
                call_id: call_id.to_string(),
                time_ms: now,
            },
        );
        self.pump();
    }

    /// A key_update stored (sealed to the authority: the SPG cannot open it).
    pub fn key_update(&self, rec: &StoredSession) {
        let now = wall_ms();
        if lock(&self.poi).is_tapped(&rec.call_id) && lock(&self.kept).insert(rec.session_id) {
            use std::io::Write;
            let r = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.keep_file)
                .and_then(|mut f| {
                    writeln!(f, "{:016x}", rec.session_id)?;
                    f.sync_data()
                });
            if let Err(e) = r {
                tracing::error!(error = %e, file = %self.keep_file.display(), "recording a session to keep failed");
            }
        }
        lock(&self.poi).event(
            now,
            PoiEvent::KeyUpdate {
                call_id: rec.call_id.clone(),
                time_ms: now,
                session_id: format!("{:016x}", rec.session_id),
                gateway: rec.gateway.clone(),
                generation: rec.generation,
                created_ms: rec.created_ms,
                sealed: base64::engine::general_purpose::STANDARD.encode(&rec.sealed),
            },
        );
        self.pump();
    }

    fn copy(&self, c: TapCopy) {
        lock(&self.poi).datagram(c.time_ms, c.tap, c.src, c.dst, &c.packet);
        self.pump();
    }

    fn set_tasks(&self, list: &TaskList) {
        let now = wall_ms();
        let r = lock(&self.poi).set_tasks(now, list);
        match r {
            Ok(()) => {
                self.metrics
                    .tasks
                    .store(list.tasks.len() as u64, Ordering::Relaxed);
                tracing::info!(tasks = list.tasks.len(), "interception tasks provisioned");
            }
            Err(e) => tracing::error!(error = %e, "interception tasks refused"),
        }
        self.pump();
    }

    fn expire(&self) {
        lock(&self.poi).handle_timeout(wall_ms());
        self.pump();
    }

    fn take_queue(&self) -> Vec<Vec<u8>> {
        let mut q = lock(&self.queue);
        q.1 = 0;
        q.0.drain(..).collect()
    }
}

/// The relay's anchor, with the call events also going to the POI and the ends of calls to
/// the escrow (which ends sessions their gateways left open).
pub(crate) struct SpgAnchor {
    pub relay: Arc<Mutex<RelayAnchor>>,
    pub li: Option<Arc<LiTap>>,
    pub escrow: Option<tokio::sync::mpsc::Sender<super::escrow::Job>>,
}

/// How long after a call's end its gateway has to send session_end itself.
const SESSION_END_GRACE: Duration = Duration::from_secs(5);

impl MediaAnchor for SpgAnchor {
    fn sdp(
        &mut self,
        now: Instant,
        ctx: &SdpContext<'_>,
        body: &[u8],
    ) -> Result<Option<Vec<u8>>, Refusal> {
        lock(&self.relay).sdp(now, ctx, body)
    }

    fn call_ended(&mut self, now: Instant, call_id: &str) {
        lock(&self.relay).call_ended(now, call_id);
        if let Some(li) = &self.li {
            li.call_ended(call_id);
        }
        if let (Some(tx), Ok(rt)) = (&self.escrow, tokio::runtime::Handle::try_current()) {
            let (tx, call_id) = (tx.clone(), call_id.to_string());
            rt.spawn(async move {
                tokio::time::sleep(SESSION_END_GRACE).await;
                let _ = tx.send(super::escrow::Job::CallEnded(call_id)).await;
            });
        }
    }

    fn acked(&mut self, now: Instant, call_id: &str, side: Side) {
        lock(&self.relay).acked(now, call_id, side);
    }

    fn call_event(&mut self, _now: Instant, ev: &CallEvent<'_>) {
        if let Some(li) = &self.li {
            li.call_event(ev);
        }
    }
}

/// Reads the relay's copies and hands them to the POI (its own thread: the relay never
/// waits on it).
pub(crate) fn spawn_copier(
    li: Arc<LiTap>,
    rx: std::sync::mpsc::Receiver<TapCopy>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("spg-li-tap".into())
        .spawn(move || loop {
            match rx.recv_timeout(Duration::from_millis(500)) {
                Ok(c) => li.copy(c),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => li.expire(),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
            }
        })
        .context("starting the interception tap thread")
}

/// The mediation link: connect, send PDUs, read task lists; reconnect while it is away.
pub(crate) async fn link(cfg: LiSection, li: Arc<LiTap>) {
    let tls = match client_config(&cfg) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "[li]: no mediation link");
            return;
        }
    };
    let connector = tokio_rustls::TlsConnector::from(tls);
    let Ok(name) = rustls::pki_types::ServerName::try_from(cfg.server_name.clone()) else {
        tracing::error!(name = %cfg.server_name, "[li] server_name is not a DNS name or address");
        return;
    };
    loop {
        match once(&cfg, &connector, name.clone(), &li).await {
            Ok(()) => tracing::warn!("mediation link closed"),
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "mediation link down"),
        }
        li.metrics.connected.store(false, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn once(
    cfg: &LiSection,
    connector: &tokio_rustls::TlsConnector,
    name: rustls::pki_types::ServerName<'static>,
    li: &Arc<LiTap>,
) -> anyhow::Result<()> {
    let tcp = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(cfg.mediation),
    )
    .await
    .context("connect timed out")?
    .with_context(|| format!("connecting to {}", cfg.mediation))?;
    let _ = tcp.set_nodelay(true);
    let tls = tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
        .await
        .context("TLS handshake timed out")?
        .context("TLS handshake")?;
    tracing::info!(mediation = %cfg.mediation, "mediation link up");
    li.metrics.connected.store(true, Ordering::Relaxed);
    let (mut rd, mut wr) = tokio::io::split(tls);
    let reader = {
        let li = li.clone();
        async move {
            loop {
                let mut len = [0u8; 4];
                rd.read_exact(&mut len)
                    .await
                    .context("reading a task list")?;
                let n = u32::from_be_bytes(len) as usize;
                if n > 16 << 20 {
                    anyhow::bail!("task list of {n} bytes: refused");
                }
                let mut buf = vec![0u8; n];
                rd.read_exact(&mut buf)
                    .await
                    .context("reading a task list")?;
                let list: TaskList =
                    serde_json::from_slice(&buf).context("task list is not JSON TaskList")?;
                li.set_tasks(&list);
            }
            #[allow(unreachable_code)]
            Ok::<(), anyhow::Error>(())
        }
    };
    let writer = {
        let li = li.clone();
        async move {
            loop {
                let batch = li.take_queue();
                if batch.is_empty() {
                    li.notify.notified().await;
                    continue;
                }
                for b in &batch {
                    wr.write_all(b).await.context("sending to the mediation")?;
                }
                wr.flush().await?;
                li.metrics
                    .pdus_sent
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
            }
            #[allow(unreachable_code)]
            Ok::<(), anyhow::Error>(())
        }
    };
    tokio::select! {
        r = reader => r,
        r = writer => r,
    }
}

fn client_config(cfg: &LiSection) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let roots = load_roots(&cfg.ca).context("li.ca")?;
    let chain = load_certs(&cfg.cert).context("li.cert")?;
    let key = load_key(&cfg.key).context("li.key")?;
    let c = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .context("li.cert and li.key do not fit together")?;
    Ok(Arc::new(c))
}
