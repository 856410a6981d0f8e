//! The escrow side of the SPG: the key store behind `voxgate_escrow::server::EscrowServer`
//! ([`Escrow`], owned by one thread) and the mutual-TLS connections of the gateways (tokio
//! tasks that frame requests and talk to it over a channel).
//!
//! Order of effects for a request: the server decides, every `Event::Escrowed` is sealed to the
//! authority and `put` into the store (durable), every `Event::Ended` is marked in the store,
//! and only then is the reply written: a `key_update_reply` means the keys are stored. If the
//! store (or sealing) fails, the reply is 503 and the records that could not be written are kept and retried
//! before any further request is answered; until they are stored every request gets 503, so a
//! retry can never be answered with a remembered reply whose keys are not on disk.
//!
//! After a restart the live sessions are restored from the store by identity only (session_ID,
//! gateway, Call-ID, generation): the SPG cannot open the sealed records (only the authority
//! can), so restored sessions have no live keys. A gateway must therefore rekey its calls
//! (`key_update` with their session_ID) after an SPG restart; the rekey is stored as the next
//! generation. A retry of a pre-restart `key_update` without session_ID is refused with 409
//! ("call already escrowed: rekey under its session_ID"), since the replies remembered for
//! idempotent retries are not persisted; `session_end` of a restored session works as before.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_rustls::TlsAcceptor;
use voxgate_escrow::seal::AuthorityPublicKey;
use voxgate_escrow::server::{EscrowServer, Event, ServerConfig, Session};
use voxgate_escrow::wire::{ErrorCode, ErrorReply, Message, WireError};
use voxgate_keystore::{seal_session, KeyStore, StoredSession};
use voxgate_media::relay::{CallTable, RelayCommand};
use zeroize::Zeroizing;

use super::config::Loaded;
use crate::tls::{load_certs, load_key, load_roots, provider};

/// The wall clock in ms since 1970 (the escrow protocol's `time_ms`).
pub(crate) fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A write to the store still owed.
#[derive(Debug)]
enum StoreOp {
    /// Seal the session's current keys and store them (sealed at write time, so that a failure
    /// of either step is retried like a failed write).
    Seal {
        session_id: u64,
    },
    End {
        session_id: u64,
        ended_ms: u64,
    },
}

/// The escrow server with its store: one owner, no locks.
pub(crate) struct Escrow {
    server: EscrowServer,
    store: Box<dyn KeyStore>,
    authority: AuthorityPublicKey,
    /// Registered gateway names (lowercase).
    gateways: HashSet<String>,
    unsaved: VecDeque<StoreOp>,
    pub metrics: std::sync::Arc<super::metrics::Metrics>,
    /// The calls through the SPG's proxy (`None`: an escrow-only node, see
    /// `escrow.party_check`).
    calls: Option<Arc<std::sync::Mutex<CallTable>>>,
    /// The media relay, whose gate is armed with each escrowed session.
    relay: Option<super::relay::RelayHandle>,
    /// Sessions escrowed whose records are not stored yet: armed in the relay once they are.
    to_arm: Vec<u64>,
    /// Lawful interception: each stored record is reported to the point of interception.
    li: Option<Arc<super::li::LiTap>>,
    /// The node's audit log: every stored key_update and session end.
    audit: Option<crate::audit_file::AuditFile>,
}

impl Escrow {
    /// Restores the live sessions of `store` (identities only, see the module documentation).
    /// Returns the escrow and the number of sessions restored.
    pub fn open(
        mut store: Box<dyn KeyStore>,
        authority: AuthorityPublicKey,
        gateways: impl IntoIterator<Item = String>,
    ) -> anyhow::Result<(Escrow, usize)> {
        let mut server = EscrowServer::new(ServerConfig::default());
        let live = store
            .list_live()
            .context("listing the live sessions of the key store")?;
        let n = live.len();
        for s in live {
            server.restore(Session {
                id: s.session_id,
                gateway: s.gateway,
                call_id: s.call_id,
                // The keys are sealed to the authority: the SPG cannot restore them.
                streams: Vec::new(),
                generation: s.generation,
                created_ms: s.created_ms,
            });
        }
        let metrics: Arc<super::metrics::Metrics> = Default::default();
        metrics
            .live_sessions
            .store(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok((
            Escrow {
                server,
                store,
                authority,
                gateways: gateways
                    .into_iter()
                    .map(|g| g.to_ascii_lowercase())
                    .collect(),
                unsaved: VecDeque::new(),
                metrics,
                calls: None,
                relay: None,
                to_arm: Vec::new(),
                li: None,
                audit: None,
            },
            n,
        ))
    }

    /// Checks key_updates against the SPG's calls and arms the relay's gate with what is
    /// escrowed.
    pub fn with_media(
        mut self,
        calls: Arc<std::sync::Mutex<CallTable>>,
        relay: super::relay::RelayHandle,
    ) -> Self {
        self.calls = Some(calls);
        self.relay = Some(relay);
        self
    }

    /// Reports stored records to lawful interception and records them in the audit log.
    pub fn with_li_and_audit(
        mut self,
        li: Option<Arc<super::li::LiTap>>,
        audit: Option<crate::audit_file::AuditFile>,
    ) -> Self {
        self.li = li;
        self.audit = audit;
        self
    }

    /// Writes what is owed to the store (and the audit log), in order; false if some is
    /// still owed.
    fn flush(&mut self) -> bool {
        while let Some(op) = self.unsaved.front() {
            let now = wall_ms();
            let r: anyhow::Result<()> = match op {
                StoreOp::Seal { session_id } => match self.server.session(*session_id) {
                    Some(sess) => seal_session(&self.authority, sess)
                        .and_then(|rec: StoredSession| self.store.put(&rec).map(|_| rec))
                        .map_err(anyhow::Error::from)
                        .and_then(|rec| {
                            if let Some(a) = &mut self.audit {
                                a.append(
                                    now,
                                    "key_update",
                                    voxgate_li::audit::fields([
                                        ("session_id", format!("{:016x}", rec.session_id).into()),
                                        ("gateway", rec.gateway.clone().into()),
                                        ("call_id", rec.call_id.clone().into()),
                                        ("generation", rec.generation.into()),
                                        ("streams", sess.streams.len().into()),
                                    ]),
                                )?;
                            }
                            if let Some(li) = &self.li {
                                li.key_update(&rec);
                            }
                            Ok(())
                        }),
                    // Not reachable (nothing is handled while a write is owed); nothing to seal.
                    None => Ok(()),
                },
                StoreOp::End {
                    session_id,
                    ended_ms,
                } => self
                    .store
                    .mark_ended(*session_id, *ended_ms)
                    .map_err(anyhow::Error::from)
                    .and_then(|_| match &mut self.audit {
                        Some(a) => a.append(
                            now,
                            "session_end",
                            voxgate_li::audit::fields([(
                                "session_id",
                                format!("{session_id:016x}").into(),
                            )]),
                        ),
                        None => Ok(()),
                    }),
            };
            match r {
                Ok(()) => {
                    self.unsaved.pop_front();
                }
                Err(e) => {
                    self.metrics
                        .store_errors
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::error!(error = %format!("{e:#}"), owed = self.unsaved.len(), "key store or audit log write failed");
                    return false;
                }
            }
        }
        true
    }

    /// Answers one request frame from the authenticated gateway `gateway` (its configured
    /// name) at wall-clock `now_ms`.
    pub fn handle(&mut self, now_ms: u64, gateway: &str, frame: &[u8], msg: &Message) -> Message {
        let unavailable = |reason: &str| {
            Message::Error(ErrorReply {
                request_id: msg.request_id(),
                code: ErrorCode::Unavailable as u16,
                reason: reason.into(),
            })
        };
        if !self.flush() {
            return unavailable("key store unavailable");
        }
        self.arm_stored();
        // The party check: with the SPG's proxy, the gateway must be a party to that call and
        // the streams its media paths through the relay; an escrow-only node can only check
        // that the gateway is registered.
        let gateways = &self.gateways;
        let calls = self.calls.clone();
        let reply = self.server.handle(now_ms, gateway, frame, msg, |k, gw| {
            if !gateways.contains(&gw.to_ascii_lowercase()) {
                return Err("not a registered gateway".into());
            }
            match &calls {
                Some(c) => c
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .check_key_update(gw, k),
                None => Ok(()),
            }
        });
        self.process_events(now_ms, gateway);
        self.metrics.live_sessions.store(
            self.server.sessions().count() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        if !self.flush() {
            return unavailable("key store unavailable");
        }
        self.arm_stored();
        reply
    }

    /// Carries out the escrow server's events (store writes owed, relay commands, metrics).
    fn process_events(&mut self, now_ms: u64, gateway: &str) {
        for ev in self.server.take_events() {
            match ev {
                Event::Escrowed {
                    session_id,
                    gateway,
                    call_id,
                    generation,
                } => {
                    self.unsaved.push_back(StoreOp::Seal { session_id });
                    // The gate is armed once the record is stored (below).
                    self.to_arm.push(session_id);
                    let c = if generation == 0 {
                        &self.metrics.escrowed
                    } else {
                        &self.metrics.rekeys
                    };
                    c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::info!(
                        session_id = format_args!("{session_id:#018x}"),
                        %gateway,
                        %call_id,
                        generation,
                        "escrowed"
                    );
                }
                Event::Ended { session_id } => {
                    if let Some(r) = &self.relay {
                        r.send(RelayCommand::Disarm(session_id));
                    }
                    self.unsaved.push_back(StoreOp::End {
                        session_id,
                        ended_ms: now_ms,
                    });
                    self.metrics
                        .ended
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::info!(session_id = format_args!("{session_id:#018x}"), %gateway, "session ended");
                }
                Event::Refused {
                    gateway,
                    code,
                    reason,
                } => {
                    self.metrics.refused(code);
                    tracing::info!(%gateway, code, %reason, "request refused")
                }
            }
        }
    }

    /// The SPG saw the call end (its in-dialog BYE) some seconds ago: sessions of it that their
    /// gateway did not end are ended here (keys wiped, gate disarmed, the end stored).
    pub fn call_ended(&mut self, now_ms: u64, call_id: &str) {
        let ids = self.server.end_call(call_id);
        if ids.is_empty() {
            return;
        }
        tracing::warn!(%call_id, sessions = ids.len(), "call over but its gateway did not end its escrow session: ended by the SPG");
        self.process_events(now_ms, "-");
        self.metrics.live_sessions.store(
            self.server.sessions().count() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        if !self.flush() {
            tracing::error!(%call_id, "the end of its sessions is not stored yet (retried)");
        }
    }

    /// Retention: deletes the stored keys of sessions that ended more than `retention_ms` ago,
    /// except those of calls lawful interception matched.
    pub fn purge(&mut self, now_ms: u64, retention_ms: u64) {
        if !self.flush() {
            return;
        }
        let before = now_ms.saturating_sub(retention_ms);
        let li = self.li.clone();
        let keep = move |s: &StoredSession| li.as_ref().is_some_and(|l| l.keeps(s.session_id));
        match self.store.purge_ended_before(before, &keep) {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(purged = n, "keys of ended sessions past retention deleted");
                if let Some(a) = &mut self.audit {
                    if let Err(e) = a.append(
                        now_ms,
                        "keys_purged",
                        voxgate_li::audit::fields([
                            ("sessions", n.into()),
                            ("ended_before_ms", before.into()),
                        ]),
                    ) {
                        tracing::error!(error = %format!("{e:#}"), "audit log write failed");
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "purging the key store failed"),
        }
    }

    /// Arms the relay's gate with the sessions whose records are now stored.
    fn arm_stored(&mut self) {
        for id in std::mem::take(&mut self.to_arm) {
            if let (Some(r), Some(s)) = (&self.relay, self.server.session(id)) {
                r.send(RelayCommand::Arm(Box::new(s.clone())));
            }
        }
    }
}

/// A request for the escrow's thread.
pub(crate) struct Request {
    pub gateway: Arc<str>,
    pub frame: Zeroizing<Vec<u8>>,
    pub msg: Message,
    pub reply: oneshot::Sender<Message>,
}

/// Work for the escrow's thread.
pub(crate) enum Job {
    Request(Request),
    /// The SPG's proxy saw this call end (some seconds ago).
    CallEnded(String),
    /// Retention: purge keys of sessions ended more than this many ms ago.
    Purge(u64),
}

/// Runs the escrow on the calling thread until every sender is gone. The store is synchronous
/// (SQLite fsyncs, the PostgreSQL client blocks), hence a thread of its own.
pub(crate) fn run_escrow(mut escrow: Escrow, mut rx: mpsc::Receiver<Job>) {
    while let Some(job) = rx.blocking_recv() {
        match job {
            Job::Request(r) => {
                let reply = escrow.handle(wall_ms(), &r.gateway, &r.frame, &r.msg);
                let _ = r.reply.send(reply);
            }
            Job::CallEnded(call_id) => escrow.call_ended(wall_ms(), &call_id),
            Job::Purge(retention_ms) => escrow.purge(wall_ms(), retention_ms),
        }
    }
}

/// The TLS server side: the SPG's certificate, client certificates REQUIRED and verified
/// against `client_ca` (no unauthenticated clients).
pub(crate) fn tls_acceptor(cfg: &Loaded) -> anyhow::Result<TlsAcceptor> {
    let chain = load_certs(&cfg.cert).context("tls.cert")?;
    let key = load_key(&cfg.key).context("tls.key")?;
    let roots = load_roots(&cfg.client_ca).context("tls.client_ca")?;
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .context("client certificate verifier")?;
    let server = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .context("tls.cert and tls.key do not fit together")?;
    Ok(TlsAcceptor::from(Arc::new(server)))
}

/// The DNS names (subjectAltName) of a DER certificate.
fn dns_names(der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(s) => Some((*s).to_string()),
            _ => None,
        })
        .collect()
}

/// Maps an authenticated connection to a registered gateway: exactly one configured gateway
/// name among the certificate's DNS names, and the connection from one of its addresses.
fn identify(cfg: &Loaded, der: &[u8], remote: SocketAddr) -> Result<Arc<str>, String> {
    let names = dns_names(der);
    let matched: Vec<_> = cfg
        .gateways
        .iter()
        .filter(|g| names.iter().any(|n| n.eq_ignore_ascii_case(&g.name)))
        .collect();
    let g = match matched.as_slice() {
        [g] => *g,
        [] => {
            return Err(format!(
                "certificate names {names:?} match no configured gateway"
            ))
        }
        _ => {
            return Err(format!(
                "certificate names {names:?} match several gateways"
            ))
        }
    };
    let ip = remote.ip().to_canonical();
    if !g.addresses.iter().any(|a| a.to_canonical() == ip) {
        return Err(format!(
            "gateway {} is not configured with address {ip}",
            g.name
        ));
    }
    Ok(Arc::from(g.name.as_str()))
}

fn refused(m: &super::metrics::Metrics) {
    m.connections_refused
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// Accepts gateways' connections until the listener fails.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    cfg: Arc<Loaded>,
    tx: mpsc::Sender<Job>,
    metrics: Arc<super::metrics::Metrics>,
) {
    let slots = Arc::new(Semaphore::new(cfg.escrow.max_connections));
    loop {
        let (tcp, remote) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refused(&metrics);
            tracing::warn!(%remote, "escrow connection refused: connection limit reached");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, cfg, tx, metrics) =
            (acceptor.clone(), cfg.clone(), tx.clone(), metrics.clone());
        tokio::spawn(async move {
            let _slot = slot;
            connection(tcp, remote, acceptor, cfg, tx, metrics).await;
        });
    }
}

async fn connection(
    tcp: TcpStream,
    remote: SocketAddr,
    acceptor: TlsAcceptor,
    cfg: Arc<Loaded>,
    tx: mpsc::Sender<Job>,
    metrics: Arc<super::metrics::Metrics>,
) {
    let hs = Duration::from_secs(cfg.escrow.handshake_timeout_secs);
    let mut tls = match tokio::time::timeout(hs, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            refused(&metrics);
            tracing::warn!(%remote, error = %e, "escrow connection refused: TLS handshake failed");
            return;
        }
        Err(_) => {
            refused(&metrics);
            tracing::warn!(%remote, "escrow connection refused: TLS handshake timed out");
            return;
        }
    };
    let leaf = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.as_ref().to_vec());
    let Some(leaf) = leaf else {
        // Not reachable: the verifier requires a certificate.
        tracing::warn!(%remote, "escrow connection refused: no client certificate");
        return;
    };
    let gateway = match identify(&cfg, &leaf, remote) {
        Ok(g) => g,
        Err(why) => {
            refused(&metrics);
            tracing::warn!(%remote, "escrow connection refused: {why}");
            let _ = tls.shutdown().await;
            return;
        }
    };
    tracing::info!(%remote, %gateway, "escrow connection");
    let idle = Duration::from_secs(cfg.escrow.idle_timeout_secs);
    let why = serve(&mut tls, &gateway, idle, &tx).await;
    tracing::info!(%remote, %gateway, "escrow connection closed: {why}");
    let _ = tls.shutdown().await;
}

/// Reads frames, has the escrow answer each, writes the replies, until the peer closes, the
/// idle timeout, or a frame that cannot be read (answered with an error frame first).
async fn serve<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    s: &mut S,
    gateway: &Arc<str>,
    idle: Duration,
    tx: &mpsc::Sender<Job>,
) -> String {
    // Frames carry keys: the buffers are wiped when dropped.
    let mut buf: Zeroizing<Vec<u8>> = Zeroizing::new(Vec::with_capacity(4096));
    let mut tmp: Zeroizing<Vec<u8>> = Zeroizing::new(vec![0u8; 16 * 1024]);
    loop {
        loop {
            match Message::decode(&buf) {
                Ok((msg, n)) => {
                    let frame = Zeroizing::new(buf[..n].to_vec());
                    buf.drain(..n);
                    let (rtx, rrx) = oneshot::channel();
                    let req = Request {
                        gateway: gateway.clone(),
                        frame,
                        msg,
                        reply: rtx,
                    };
                    if tx.send(Job::Request(req)).await.is_err() {
                        return "shutting down".into();
                    }
                    let Ok(reply) = rrx.await else {
                        return "shutting down".into();
                    };
                    if let Err(e) = s.write_all(&reply.encode()).await {
                        return format!("write: {e}");
                    }
                }
                Err(WireError::Incomplete) => break,
                Err(e) => {
                    let reply = Message::Error(ErrorReply {
                        request_id: 0,
                        code: e.code() as u16,
                        reason: e.to_string(),
                    });
                    let _ = s.write_all(&reply.encode()).await;
                    let _ = s.flush().await;
                    return format!("unreadable frame ({e}), answered {}", e.code() as u16);
                }
            }
        }
        match tokio::time::timeout(idle, s.read(&mut tmp)).await {
            Ok(Ok(0)) => return "closed by the gateway".into(),
            Ok(Ok(n)) => buf.extend_from_slice(&tmp[..n]),
            Ok(Err(e)) => return format!("read: {e}"),
            Err(_) => return "idle timeout".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use voxgate_escrow::seal::AuthorityKeyPair;
    use voxgate_escrow::wire::{Addr, Direction, KeyUpdate, Secret, StreamKey};
    use voxgate_keystore::{open_session, StoreError};

    /// A store in memory that fails while `fail` is set.
    #[derive(Default)]
    struct Flaky {
        rows: Vec<StoredSession>,
        fail: Arc<AtomicBool>,
    }

    impl Flaky {
        fn check(&self) -> Result<(), StoreError> {
            if self.fail.load(Ordering::Relaxed) {
                return Err(StoreError::Io {
                    path: "flaky".into(),
                    source: std::io::Error::other("disk full"),
                });
            }
            Ok(())
        }
    }

    impl KeyStore for Flaky {
        fn put(&mut self, rec: &StoredSession) -> Result<(), StoreError> {
            self.check()?;
            self.rows
                .retain(|r| (r.session_id, r.generation) != (rec.session_id, rec.generation));
            self.rows.push(rec.clone());
            Ok(())
        }
        fn get(&mut self, id: u64) -> Result<Option<StoredSession>, StoreError> {
            Ok(self.generations(id)?.pop())
        }
        fn generations(&mut self, id: u64) -> Result<Vec<StoredSession>, StoreError> {
            let mut v: Vec<_> = self
                .rows
                .iter()
                .filter(|r| r.session_id == id)
                .cloned()
                .collect();
            v.sort_by_key(|r| r.generation);
            Ok(v)
        }
        fn list_live(&mut self) -> Result<Vec<StoredSession>, StoreError> {
            let mut out: Vec<StoredSession> = Vec::new();
            for r in self.rows.iter().filter(|r| r.ended_ms.is_none()) {
                out.retain(|o| o.session_id != r.session_id || o.generation > r.generation);
                if !out.iter().any(|o| o.session_id == r.session_id) {
                    out.push(r.clone());
                }
            }
            Ok(out)
        }
        fn mark_ended(&mut self, id: u64, ms: u64) -> Result<bool, StoreError> {
            self.check()?;
            let mut found = false;
            for r in self.rows.iter_mut().filter(|r| r.session_id == id) {
                r.ended_ms.get_or_insert(ms);
                found = true;
            }
            Ok(found)
        }
        fn purge_ended_before(
            &mut self,
            _ms: u64,
            _keep: &dyn Fn(&StoredSession) -> bool,
        ) -> Result<usize, StoreError> {
            Ok(0)
        }
        fn count(&mut self) -> Result<u64, StoreError> {
            Ok(self.rows.len() as u64)
        }
    }

    const NOW: u64 = 1_764_028_800_000;

    fn ku(rid: u64, session_id: Option<u64>) -> Message {
        Message::KeyUpdate(KeyUpdate {
            request_id: rid,
            time_ms: NOW,
            call_id: "c1@gw1.a.example".into(),
            session_id,
            streams: vec![StreamKey {
                direction: Direction::Send,
                src: Addr("192.0.2.10:40000".parse().unwrap()),
                dst: Addr("198.51.100.7:50000".parse().unwrap()),
                ssrc: None,
                suite: "AES_CM_128_HMAC_SHA1_80".into(),
                master: Secret(Zeroizing::new(vec![7; 30])),
                mki: None,
            }],
        })
    }

    fn send(e: &mut Escrow, m: &Message) -> Message {
        e.handle(NOW, "gw1.a.example", &m.encode(), m)
    }

    #[test]
    fn no_success_reply_until_the_keys_are_stored() {
        let kp = AuthorityKeyPair::generate().unwrap();
        let fail = Arc::new(AtomicBool::new(true));
        let store = Flaky {
            fail: fail.clone(),
            ..Flaky::default()
        };
        let (mut e, n) =
            Escrow::open(Box::new(store), *kp.public(), ["gw1.a.example".into()]).unwrap();
        assert_eq!(n, 0);
        let m = ku(1, None);
        let r = send(&mut e, &m);
        assert!(
            matches!(r, Message::Error(ErrorReply { code: 503, .. })),
            "{r:?}"
        );
        // The retry, while the store still fails: still 503, not the remembered reply.
        let r = send(&mut e, &m);
        assert!(
            matches!(r, Message::Error(ErrorReply { code: 503, .. })),
            "{r:?}"
        );
        // The store is back: the owed record is written, then the retry gets its reply.
        fail.store(false, Ordering::Relaxed);
        let Message::KeyUpdateReply(r) = send(&mut e, &m) else {
            panic!("no reply")
        };
        let rec = e.store.get(r.session_id).unwrap().unwrap();
        let keys = open_session(&kp, &rec).unwrap();
        assert_eq!(*keys[0].master.0, vec![7; 30]);
    }

    #[test]
    fn restored_sessions_take_rekeys_as_the_next_generation() {
        let kp = AuthorityKeyPair::generate().unwrap();
        let (mut e, _) = Escrow::open(
            Box::<Flaky>::default(),
            *kp.public(),
            ["gw1.a.example".into()],
        )
        .unwrap();
        let Message::KeyUpdateReply(r) = send(&mut e, &ku(1, None)) else {
            panic!("no reply")
        };
        // "Restart": a new escrow over the same rows.
        let rows = e.store;
        let (mut e, n) = Escrow::open(rows, *kp.public(), ["gw1.a.example".into()]).unwrap();
        assert_eq!(n, 1);
        assert!(e.server.session(r.session_id).unwrap().streams.is_empty());
        let again = send(&mut e, &ku(2, Some(r.session_id)));
        assert!(matches!(again, Message::KeyUpdateReply(x) if x.session_id == r.session_id));
        let gens = e.store.generations(r.session_id).unwrap();
        assert_eq!(
            gens.iter().map(|g| g.generation).collect::<Vec<_>>(),
            [0, 1]
        );
    }
}
