//! `voxgate li`: the lawful-interception mediation and its tools.
//!
//! - `serve --config FILE`: the mediation (`voxgate_li::mediation::Mediation`, sans-I/O) with
//!   its drivers: the warrant API (HTTPS, mutual TLS, api.rs), the X2/X3 listener the SPGs
//!   connect to (mutual TLS; each SPG's certificate CN must be listed), the deliveries to the
//!   agencies (X2/X3 over mutual TLS), the audit log (synced per entry, signed head beside it),
//!   the warrant book file, and per warrant the IRI (iri.json) and the decrypted audio (a WAV
//!   per direction and mixed).
//! - `keygen --out DIR`: the authority's X25519 key pair (the SPGs seal session keys to its
//!   public half) and a node's Ed25519 audit key.
//! - `audit verify LOG --public HEX`: checks a log (and its head) and says where it was
//!   tampered with.
//! - `agency --listen ADDR ...`: a receiving agency for tests and the demo: takes X2/X3 over
//!   mutual TLS, writes the IRI it got and the audio of the content.

pub(crate) mod agency;
pub(crate) mod api;
mod wav;

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use voxgate_escrow::seal::AuthorityKeyPair;
use voxgate_li::audit::{self, AuditLog, NodeKey};
use voxgate_li::mediation::{Mediation, Output, TargetDirection};
use voxgate_li::poi::TaskList;
use voxgate_li::warrant::{WarrantBook, WarrantError, WarrantRequest};
use voxgate_li::x2x3::Decoder;

use crate::audit_file::{self, AuditWriter};
use crate::config_file::resolve;
use crate::spg::wall_ms;
use crate::tls::{load_certs, load_key, load_roots, provider};

#[derive(Debug, clap::Subcommand)]
pub enum LiCommand {
    /// Runs the mediation: warrant API, X2/X3 from the SPGs, delivery to agencies, audit.
    Serve {
        /// The TOML configuration (see examples/li.toml).
        #[arg(long)]
        config: PathBuf,
    },
    /// Makes the authority's X25519 key pair (authority.key, authority.pub) and a node's
    /// Ed25519 audit key (audit.key, audit.pub) in DIR.
    Keygen {
        #[arg(long)]
        out: PathBuf,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
    },
    /// The audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// A receiving agency (for tests and the demo): X2/X3 over mutual TLS into DIR.
    Agency(agency::AgencyArgs),
}

#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Verifies a log: every entry's hash, chain link, sequence and signature, and the tail
    /// against the signed head (LOG.head unless --head). Exit 0 if intact, 1 if not.
    Verify {
        log: PathBuf,
        /// The node's public key (64 hex digits), or @FILE to read it from a file.
        #[arg(long)]
        public: String,
        #[arg(long)]
        head: Option<PathBuf>,
        /// Check without a head (a truncated tail then goes unnoticed).
        #[arg(long)]
        no_head: bool,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: LiCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        LiCommand::Serve { config } => serve_main(&config),
        LiCommand::Keygen { out, force } => keygen(&out, force),
        LiCommand::Audit {
            command:
                AuditCommand::Verify {
                    log,
                    public,
                    head,
                    no_head,
                    json,
                },
        } => audit_verify(&log, &public, head.as_deref(), no_head, json),
        LiCommand::Agency(a) => agency::run(a),
    }
}

fn write_secret(p: &Path, data: &[u8], force: bool) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).mode(0o600);
    if force {
        o.create(true).truncate(true);
    } else {
        o.create_new(true);
    }
    let mut f = o
        .open(p)
        .with_context(|| format!("creating {} (--force to replace)", p.display()))?;
    f.write_all(data)?;
    f.sync_all()?;
    Ok(())
}

fn keygen(dir: &Path, force: bool) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let kp = AuthorityKeyPair::generate().context("generating the authority key")?;
    write_secret(
        &dir.join("authority.key"),
        kp.secret_to_base64().as_bytes(),
        force,
    )?;
    std::fs::write(dir.join("authority.pub"), kp.public().to_base64() + "\n")?;
    let (node, der) = NodeKey::generate().context("generating the audit key")?;
    write_secret(&dir.join("audit.key"), &der, force)?;
    std::fs::write(dir.join("audit.pub"), node.public_hex() + "\n")?;
    println!(
        "authority public key (for the SPGs' [authority] public_key): {}",
        kp.public().to_base64()
    );
    println!(
        "audit public key (for `voxgate li audit verify --public`): {}",
        node.public_hex()
    );
    println!(
        "wrote {0}/authority.key, {0}/authority.pub, {0}/audit.key, {0}/audit.pub (keys mode 0600)",
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn audit_verify(
    log: &Path,
    public: &str,
    head: Option<&Path>,
    no_head: bool,
    json_out: bool,
) -> anyhow::Result<ExitCode> {
    let public = match public.strip_prefix('@') {
        Some(f) => std::fs::read_to_string(f)
            .with_context(|| format!("reading {f}"))?
            .trim()
            .to_string(),
        None => public.to_string(),
    };
    let text =
        std::fs::read_to_string(log).with_context(|| format!("reading {}", log.display()))?;
    let head_file = head
        .map(Path::to_path_buf)
        .unwrap_or_else(|| audit_file::head_path(log));
    let head: Option<audit::Head> = if no_head {
        None
    } else {
        let b = std::fs::read(&head_file).with_context(|| {
            format!(
                "reading the head {} (--no-head to check without it)",
                head_file.display()
            )
        })?;
        Some(
            serde_json::from_slice(&b)
                .with_context(|| format!("{}: not an audit head", head_file.display()))?,
        )
    };
    match audit::verify(&text, &public, head.as_ref()) {
        Ok(s) => {
            if json_out {
                println!(
                    "{}",
                    json!({"ok": true, "entries": s.count, "events": s.events, "last_hash": s.last_hash})
                );
            } else {
                println!(
                    "audit log {} intact: {} entries{}",
                    log.display(),
                    s.count,
                    if head.is_some() {
                        ", head matches"
                    } else {
                        " (no head checked)"
                    }
                );
                for (e, n) in &s.events {
                    println!("  {e}: {n}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            if json_out {
                println!("{}", json!({"ok": false, "error": e.to_string()}));
            } else {
                println!("audit log {} TAMPERED: {e}", log.display());
            }
            Ok(ExitCode::from(1))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Configuration

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct LiConfig {
    /// This node's name (in the audit entries).
    node: String,
    api: TlsListen,
    x2x3: X2x3Section,
    authority: AuthoritySection,
    audit: AuditSection,
    warrants: WarrantsSection,
    #[serde(rename = "destination", default)]
    destinations: Vec<DestinationSection>,
    output: OutputSection,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsListen {
    listen: SocketAddr,
    cert: PathBuf,
    key: PathBuf,
    /// Clients must have a certificate from this CA; their identity is its CN.
    client_ca: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct X2x3Section {
    listen: SocketAddr,
    cert: PathBuf,
    key: PathBuf,
    client_ca: PathBuf,
    /// The SPGs allowed to report (their certificates' CN).
    pois: Vec<String>,
    /// Largest PDU accepted.
    #[serde(default = "default_max_pdu")]
    max_pdu: usize,
}

fn default_max_pdu() -> usize {
    256 * 1024
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthoritySection {
    /// The authority's X25519 secret (base64), as `voxgate li keygen` writes it.
    secret_file: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditSection {
    path: PathBuf,
    key: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct WarrantsSection {
    /// The warrant book (JSON), rewritten after every change.
    path: PathBuf,
}

/// `[[destination]]`: an agency deliveries may go to (the allow-list is their names).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct DestinationSection {
    name: String,
    address: SocketAddr,
    /// The name in the agency's certificate.
    server_name: String,
    /// The CA of the agency's certificate. The mediation authenticates with its X2/X3
    /// certificate.
    ca: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct OutputSection {
    /// Per warrant: DIR/LIID/iri.json and DIR/LIID/<correlation>-{from-target,to-target,mixed}.wav.
    dir: PathBuf,
}

fn load_config(path: &Path) -> anyhow::Result<LiConfig> {
    let (text, base) = crate::config_file::read(path)?;
    let mut c: LiConfig =
        toml::from_str(&text).with_context(|| format!("configuration {}", path.display()))?;
    for p in [
        &mut c.api.cert,
        &mut c.api.key,
        &mut c.api.client_ca,
        &mut c.x2x3.cert,
        &mut c.x2x3.key,
        &mut c.x2x3.client_ca,
        &mut c.authority.secret_file,
        &mut c.audit.path,
        &mut c.audit.key,
        &mut c.warrants.path,
        &mut c.output.dir,
    ] {
        *p = resolve(&base, p);
    }
    for d in &mut c.destinations {
        d.ca = resolve(&base, &d.ca);
    }
    if c.x2x3.pois.is_empty() {
        bail!("x2x3.pois: at least one SPG");
    }
    let mut names = std::collections::HashSet::new();
    for d in &c.destinations {
        if !names.insert(d.name.clone()) {
            bail!("destination {:?} is listed twice", d.name);
        }
    }
    Ok(c)
}

// ---------------------------------------------------------------------------------------------
// The mediation node

/// The mediation and what its outputs go to. One lock: every input is handled and its outputs
/// carried out before the next.
struct Core {
    med: Mediation,
    audit: AuditWriter,
    book_path: PathBuf,
    out_dir: PathBuf,
    tracks: HashMap<(String, u64, TargetDirection), wav::Track>,
    iri_files: HashMap<String, File>,
    deliveries: HashMap<String, mpsc::Sender<Vec<u8>>>,
    tasks: watch::Sender<TaskList>,
    dropped_deliveries: u64,
}

fn safe_name(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl Core {
    /// Carries out the mediation's outputs.
    fn drain(&mut self) {
        while let Some(o) = self.med.poll_output() {
            match o {
                Output::Audit(e) => {
                    let head = self.med.audit_log().head();
                    if let Err(err) = self.audit.write(&e, &head) {
                        tracing::error!(error = %format!("{err:#}"), "audit log write failed");
                    }
                }
                Output::Iri {
                    destination,
                    record,
                    pdu,
                } => {
                    let liid = record.liid.clone();
                    let line = serde_json::to_string(&record).unwrap_or_default();
                    if let Err(e) = self.iri_line(&liid, &line) {
                        tracing::error!(error = %format!("{e:#}"), %liid, "iri.json write failed");
                    }
                    self.deliver(&destination, pdu);
                }
                Output::Content {
                    destination, pdu, ..
                } => self.deliver(&destination, pdu),
                Output::Pcm {
                    liid,
                    correlation,
                    direction,
                    at_sample,
                    samples,
                } => {
                    let key = (liid.clone(), correlation, direction);
                    if !self.tracks.contains_key(&key) {
                        let p = self
                            .out_dir
                            .join(safe_name(&liid))
                            .join(format!("{correlation:016x}-{}.wav", direction.name()));
                        match wav::Track::create(&p) {
                            Ok(t) => {
                                self.tracks.insert(key.clone(), t);
                            }
                            Err(e) => {
                                tracing::error!(error = %format!("{e:#}"), "audio file");
                                continue;
                            }
                        }
                    }
                    if let Some(t) = self.tracks.get_mut(&key) {
                        if let Err(e) = t.put(at_sample, &samples) {
                            tracing::error!(error = %format!("{e:#}"), "audio write");
                        }
                    }
                }
                Output::Closed { liid, correlation } => self.close_tracks(&liid, correlation),
                Output::Tasks(t) => {
                    let _ = self.tasks.send(t);
                }
            }
        }
    }

    fn close_tracks(&mut self, liid: &str, correlation: u64) {
        let mut paths = Vec::new();
        for dir in [TargetDirection::FromTarget, TargetDirection::ToTarget] {
            if let Some(mut t) = self.tracks.remove(&(liid.to_string(), correlation, dir)) {
                if let Err(e) = t.finish() {
                    tracing::error!(error = %format!("{e:#}"), "audio file");
                }
                paths.push(t.path.clone());
            }
        }
        if !paths.is_empty() {
            let out = self
                .out_dir
                .join(safe_name(liid))
                .join(format!("{correlation:016x}-mixed.wav"));
            if let Err(e) = wav::mix(&paths, &out) {
                tracing::error!(error = %format!("{e:#}"), "mixing the call's audio");
            }
            tracing::info!(%liid, correlation = format_args!("{correlation:016x}"), "intercepted audio written");
        }
    }

    fn iri_line(&mut self, liid: &str, line: &str) -> anyhow::Result<()> {
        if !self.iri_files.contains_key(liid) {
            let dir = self.out_dir.join(safe_name(liid));
            std::fs::create_dir_all(&dir)?;
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join("iri.json"))?;
            self.iri_files.insert(liid.to_string(), f);
        }
        if let Some(f) = self.iri_files.get_mut(liid) {
            f.write_all(line.as_bytes())?;
            f.write_all(b"\n")?;
            f.flush()?;
        }
        Ok(())
    }

    fn deliver(&mut self, destination: &str, pdu: Vec<u8>) {
        match self.deliveries.get(destination) {
            Some(tx) => {
                if tx.try_send(pdu).is_err() {
                    self.dropped_deliveries += 1;
                }
            }
            None => self.dropped_deliveries += 1,
        }
    }

    fn save_book(&self) {
        let tmp = self.book_path.with_extension("json.tmp");
        let r = std::fs::write(&tmp, self.med.book().to_json())
            .and_then(|_| File::open(&tmp).and_then(|f| f.sync_all()))
            .and_then(|_| std::fs::rename(&tmp, &self.book_path));
        if let Err(e) = r {
            tracing::error!(error = %e, path = %self.book_path.display(), "saving the warrant book failed");
        }
    }

    fn tick(&mut self) {
        let now = wall_ms();
        if self.med.poll_timeout(now).is_some_and(|t| t <= now) {
            self.med.handle_timeout(now);
        }
        self.drain();
    }
}

fn warrant_json(w: &voxgate_li::warrant::Warrant) -> Value {
    let mut v = serde_json::to_value(w).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.insert("status".into(), json!(w.status(wall_ms())));
    }
    v
}

impl api::WarrantService for Core {
    type Request = WarrantRequest;
    type Error = WarrantError;

    fn create(&mut self, who: &str, req: WarrantRequest) -> Result<Value, WarrantError> {
        let r = self.med.create_warrant(wall_ms(), who, req);
        if r.is_ok() {
            self.save_book();
        }
        self.drain();
        r.map(|w| warrant_json(&w))
    }

    fn approve(&mut self, who: &str, liid: &str) -> Result<Value, WarrantError> {
        let r = self.med.approve_warrant(wall_ms(), who, liid);
        if r.is_ok() {
            self.save_book();
        }
        self.drain();
        r.map(|w| warrant_json(&w))
    }

    fn deactivate(&mut self, who: &str, liid: &str, reason: &str) -> Result<Value, WarrantError> {
        let r = self.med.deactivate_warrant(wall_ms(), who, liid, reason);
        if r.is_ok() {
            self.save_book();
        }
        self.drain();
        r.map(|w| warrant_json(&w))
    }

    fn get(&mut self, who: &str, liid: &str) -> Result<Value, WarrantError> {
        let r = self.med.read_warrant(wall_ms(), who, liid);
        self.drain();
        r.map(|w| warrant_json(&w))
    }

    fn list(&mut self, _who: &str) -> Value {
        Value::Array(self.med.book().list().map(warrant_json).collect())
    }

    fn audit_head(&mut self) -> Value {
        serde_json::to_value(self.med.audit_log().head()).unwrap_or(Value::Null)
    }
}

fn serve_main(config: &Path) -> anyhow::Result<ExitCode> {
    let cfg = load_config(config)?;
    let secret = std::fs::read_to_string(&cfg.authority.secret_file)
        .with_context(|| format!("reading {}", cfg.authority.secret_file.display()))?;
    let authority = AuthorityKeyPair::from_secret_base64(secret.trim()).with_context(|| {
        format!(
            "{}: not an authority key",
            cfg.authority.secret_file.display()
        )
    })?;
    let node_key = audit_file::load_node_key(&cfg.audit.key).context("audit.key")?;
    let log: AuditLog = audit_file::resume(&cfg.audit.path, &cfg.node, node_key)?;
    let writer = AuditWriter::open(&cfg.audit.path)?;
    let allow: Vec<String> = cfg.destinations.iter().map(|d| d.name.clone()).collect();
    let book = match std::fs::read_to_string(&cfg.warrants.path) {
        Ok(t) => WarrantBook::from_json(&t, allow.clone())
            .with_context(|| format!("the warrant book {}", cfg.warrants.path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => WarrantBook::new(allow.clone()),
        Err(e) => {
            return Err(e).with_context(|| format!("reading {}", cfg.warrants.path.display()))
        }
    };
    let api_tls =
        api::server_config(&cfg.api.cert, &cfg.api.key, &cfg.api.client_ca).context("[api] TLS")?;
    let x_tls = api::server_config(&cfg.x2x3.cert, &cfg.x2x3.key, &cfg.x2x3.client_ca)
        .context("[x2x3] TLS")?;
    let delivery_tls = {
        let chain = load_certs(&cfg.x2x3.cert).context("x2x3.cert")?;
        let key = load_key(&cfg.x2x3.key).context("x2x3.key")?;
        (chain, key)
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let mut med = Mediation::new(&cfg.node, book, authority, log);
        let now = wall_ms();
        med.handle_timeout(now);
        let (tasks_tx, tasks_rx) = watch::channel(med.tasks(now));
        let mut deliveries = HashMap::new();
        for d in &cfg.destinations {
            let (tx, rx) = mpsc::channel::<Vec<u8>>(65_536);
            deliveries.insert(d.name.clone(), tx);
            let tls = delivery_client(d, &delivery_tls)?;
            tokio::spawn(deliver_loop(d.clone(), tls, rx));
        }
        let core = Arc::new(Mutex::new(Core {
            med,
            audit: writer,
            book_path: cfg.warrants.path.clone(),
            out_dir: cfg.output.dir.clone(),
            tracks: HashMap::new(),
            iri_files: HashMap::new(),
            deliveries,
            tasks: tasks_tx,
            dropped_deliveries: 0,
        }));
        {
            let mut c = core.lock().unwrap_or_else(|p| p.into_inner());
            c.med.handle_timeout(wall_ms());
            c.drain();
            let _ = c.tasks.send(c.med.tasks(wall_ms()));
        }
        let api_l = TcpListener::bind(cfg.api.listen)
            .await
            .with_context(|| format!("binding api.listen {}", cfg.api.listen))?;
        println!("listening api {}", api_l.local_addr()?);
        let x_l = TcpListener::bind(cfg.x2x3.listen)
            .await
            .with_context(|| format!("binding x2x3.listen {}", cfg.x2x3.listen))?;
        println!("listening x2x3 {}", x_l.local_addr()?);
        tokio::spawn(api::serve(api_l, api_tls, core.clone()));
        tokio::spawn(x2x3_accept(
            x_l,
            tokio_rustls::TlsAcceptor::from(x_tls),
            cfg.x2x3.pois.clone(),
            cfg.x2x3.max_pdu,
            core.clone(),
            tasks_rx,
        ));
        {
            let core = core.clone();
            tokio::spawn(async move {
                let mut iv = tokio::time::interval(Duration::from_millis(200));
                loop {
                    iv.tick().await;
                    core.lock().unwrap_or_else(|p| p.into_inner()).tick();
                }
            });
        }
        println!("ready");
        let _ = std::io::stdout().flush();
        tracing::info!(node = %cfg.node, "voxgate li ready");
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("SIGTERM handler")?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        // Open audio files are finished so that what was intercepted stays readable.
        let mut c = core.lock().unwrap_or_else(|p| p.into_inner());
        let open: Vec<(String, u64)> = c.tracks.keys().map(|(l, k, _)| (l.clone(), *k)).collect();
        for (l, k) in open {
            c.close_tracks(&l, k);
        }
        tracing::info!("shutting down");
        Ok::<ExitCode, anyhow::Error>(ExitCode::SUCCESS)
    })
}

fn delivery_client(
    d: &DestinationSection,
    (chain, key): &(
        Vec<rustls::pki_types::CertificateDer<'static>>,
        rustls::pki_types::PrivateKeyDer<'static>,
    ),
) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let roots = load_roots(&d.ca).with_context(|| format!("destination {} ca", d.name))?;
    let c = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain.clone(), key.clone_key())
        .context("x2x3.cert and x2x3.key do not fit together")?;
    Ok(Arc::new(c))
}

/// Sends one agency's PDUs, reconnecting while it is away (queued PDUs wait, bounded).
async fn deliver_loop(
    d: DestinationSection,
    tls: Arc<rustls::ClientConfig>,
    mut rx: mpsc::Receiver<Vec<u8>>,
) {
    let connector = tokio_rustls::TlsConnector::from(tls);
    let Ok(name) = rustls::pki_types::ServerName::try_from(d.server_name.clone()) else {
        tracing::error!(destination = %d.name, "server_name is not a DNS name or address");
        return;
    };
    let mut pending: Option<Vec<u8>> = None;
    loop {
        let conn = async {
            let tcp = tokio::net::TcpStream::connect(d.address).await?;
            let _ = tcp.set_nodelay(true);
            let s = connector.connect(name.clone(), tcp).await?;
            Ok::<_, std::io::Error>(s)
        };
        let mut s = match tokio::time::timeout(Duration::from_secs(10), conn).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::warn!(destination = %d.name, error = %e, "agency unreachable");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(_) => {
                tracing::warn!(destination = %d.name, "agency connection timed out");
                continue;
            }
        };
        tracing::info!(destination = %d.name, "delivering to the agency");
        loop {
            let pdu = match pending.take() {
                Some(p) => p,
                None => match rx.recv().await {
                    Some(p) => p,
                    None => return,
                },
            };
            if let Err(e) = s.write_all(&pdu).await {
                tracing::warn!(destination = %d.name, error = %e, "delivery interrupted");
                pending = Some(pdu);
                break;
            }
            if rx.is_empty() {
                let _ = s.flush().await;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Accepts the SPGs' X2/X3 connections.
async fn x2x3_accept(
    l: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    pois: Vec<String>,
    max_pdu: usize,
    core: Arc<Mutex<Core>>,
    tasks: watch::Receiver<TaskList>,
) {
    loop {
        let Ok((tcp, remote)) = l.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let acceptor = acceptor.clone();
        let pois = pois.clone();
        let core = core.clone();
        let tasks = tasks.clone();
        tokio::spawn(async move {
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(t)) => t,
                    _ => {
                        tracing::warn!(%remote, "X2/X3 connection refused: TLS handshake failed");
                        return;
                    }
                };
            let cn = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| api::identity(c.as_ref()));
            let Some(poi) = cn.filter(|n| pois.iter().any(|p| p == n)) else {
                tracing::warn!(%remote, "X2/X3 connection refused: not a listed SPG");
                return;
            };
            tracing::info!(%remote, %poi, "SPG connected");
            let why = poi_conn(tls, &poi, max_pdu, core, tasks).await;
            tracing::info!(%remote, %poi, "SPG disconnected: {why}");
        });
    }
}

async fn poi_conn(
    tls: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    poi: &str,
    max_pdu: usize,
    core: Arc<Mutex<Core>>,
    mut tasks: watch::Receiver<TaskList>,
) -> String {
    let (mut rd, mut wr) = tokio::io::split(tls);
    let writer = async move {
        loop {
            let list = tasks.borrow_and_update().clone();
            let body = serde_json::to_vec(&list).unwrap_or_default();
            let mut frame = (body.len() as u32).to_be_bytes().to_vec();
            frame.extend_from_slice(&body);
            if let Err(e) = wr.write_all(&frame).await {
                return format!("sending tasks: {e}");
            }
            let _ = wr.flush().await;
            if tasks.changed().await.is_err() {
                return "mediation stopping".to_string();
            }
        }
    };
    let reader = async move {
        let mut dec = Decoder::new(max_pdu);
        let mut buf = vec![0u8; 64 * 1024];
        let mut errors = 0u64;
        loop {
            let n = match rd.read(&mut buf).await {
                Ok(0) => return "closed".to_string(),
                Ok(n) => n,
                Err(e) => return format!("read: {e}"),
            };
            dec.push(&buf[..n]);
            let mut c = core.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                match dec.next_pdu() {
                    Ok(Some(pdu)) => {
                        if let Err(e) = c.med.handle_pdu(wall_ms(), poi, &pdu) {
                            errors += 1;
                            if errors < 20 || errors.is_multiple_of(1000) {
                                tracing::info!(%poi, error = %e, errors, "PDU not delivered");
                            }
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        c.drain();
                        return format!("X2/X3 stream broken: {e}");
                    }
                }
            }
            c.drain();
        }
    };
    tokio::select! {
        w = writer => w,
        r = reader => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_configuration_loads_and_unknown_keys_are_refused() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/li.toml");
        let c = load_config(&p).unwrap();
        assert_eq!(c.x2x3.pois, vec!["spg-a".to_string()]);
        assert_eq!(c.destinations[0].name, "agency-1");
        assert!(c.audit.path.is_absolute());
        let dir = std::env::temp_dir().join(format!("voxgate-li-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let text = std::fs::read_to_string(&p).unwrap() + "\n[extra]\nx = 1\n";
        std::fs::write(dir.join("li.toml"), text).unwrap();
        let e = load_config(&dir.join("li.toml")).unwrap_err();
        assert!(format!("{e:#}").contains("extra"), "{e:#}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
