//! `voxgate spg`: the service-provider gateway. Today its escrow side: gateways escrow their
//! calls' SRTP keys over mutual TLS (docs/escrow-protocol.md), the keys are sealed to the
//! lawful-intercept authority and stored before the reply is sent. The media relay (the
//! per-datagram `gate`) comes next.
//!
//! A thin driver: `voxgate_escrow::server::EscrowServer` decides, one thread owns it with the
//! key store (escrow.rs), a tokio task per connection frames requests and talks to it over a
//! channel.

mod config;
mod escrow;
mod metrics;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use voxgate_keystore::{KeyStore, PgStore, SqliteStore};

use config::StoreLocation;

/// Arguments of `voxgate spg`.
#[derive(Debug, clap::Args)]
pub struct SpgArgs {
    /// The TOML configuration (see examples/spg.toml). Relative paths in it are relative to
    /// the file's directory.
    #[arg(long)]
    pub config: PathBuf,
    /// Only load and check the configuration (and the TLS files), then exit.
    #[arg(long)]
    pub check_config: bool,
}

pub fn run(args: SpgArgs) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("reading {}", args.config.display()))?;
    let base = args
        .config
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let cfg = config::load(&text, &base)
        .with_context(|| format!("configuration {}", args.config.display()))?;
    let acceptor = escrow::tls_acceptor(&cfg)
        .with_context(|| format!("configuration {}", args.config.display()))?;
    if args.check_config {
        println!(
            "configuration OK: {} gateway(s), store {}",
            cfg.gateways.len(),
            match &cfg.store {
                StoreLocation::Sqlite(_) => "sqlite",
                StoreLocation::Postgres(_) => "postgres",
            }
        );
        return Ok(ExitCode::SUCCESS);
    }
    // Opened outside the async runtime: the PostgreSQL client runs its own.
    let store: Box<dyn KeyStore> = match &cfg.store {
        StoreLocation::Sqlite(p) => {
            Box::new(SqliteStore::open(p).with_context(|| format!("store.sqlite {}", p.display()))?)
        }
        StoreLocation::Postgres(s) => Box::new(PgStore::connect(s).context("store.postgres")?),
    };
    let (escrow, restored) = escrow::Escrow::open(
        store,
        cfg.authority,
        cfg.gateways.iter().map(|g| g.name.clone()),
    )?;
    if restored > 0 {
        // Their keys are sealed to the authority: the gateways must rekey these calls.
        tracing::warn!(
            restored,
            "live sessions restored without keys: their gateways must rekey"
        );
    }
    let metrics = escrow.metrics.clone();
    let (tx, rx) = mpsc::channel::<escrow::Request>(1024);
    let core = std::thread::Builder::new()
        .name("spg-escrow".into())
        .spawn(move || escrow::run_escrow(escrow, rx))
        .context("starting the escrow thread")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let cfg = Arc::new(cfg);
    let result = rt.block_on(serve(cfg, acceptor, tx, metrics));
    // Dropping the runtime drops the connections' senders: the escrow thread then ends, and
    // the store is closed after its last write.
    drop(rt);
    if core.join().is_err() {
        anyhow::bail!("the escrow thread panicked");
    }
    result
}

async fn serve(
    cfg: Arc<config::Loaded>,
    acceptor: tokio_rustls::TlsAcceptor,
    tx: mpsc::Sender<escrow::Request>,
    metrics: Arc<metrics::Metrics>,
) -> anyhow::Result<ExitCode> {
    let listener = TcpListener::bind(cfg.escrow.listen)
        .await
        .with_context(|| format!("binding escrow.listen {}", cfg.escrow.listen))?;
    let local = listener.local_addr()?;
    tokio::spawn(escrow::accept_loop(
        listener,
        acceptor,
        cfg.clone(),
        tx,
        metrics.clone(),
    ));
    println!("listening escrow {local}");
    if let Some(addr) = cfg.metrics {
        let l = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding metrics.address {addr}"))?;
        println!("listening metrics {}", l.local_addr()?);
        tokio::spawn(crate::metrics_http::serve(l, move || {
            let m = metrics.clone();
            async move { Some(m.render()) }
        }));
    }
    println!("ready");
    use std::io::Write;
    let _ = std::io::stdout().flush();
    tracing::info!(%local, gateways = cfg.gateways.len(), "voxgate spg ready");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    Ok(ExitCode::SUCCESS)
}
