//! `voxgate spg`: the service-provider gateway, three parts in one process:
//!
//! - **SIP proxy** for its gateways' domains (the proxy driver of `voxgate proxy` with a
//!   `voxgate_media::relay::RelayAnchor`): calls are routed to the gateway or peer SPG that
//!   serves the callee's domain, trusted peers are known by address, and every SDP body is
//!   rewritten so that media flows through the relay;
//! - **escrow server**: gateways escrow their calls' SRTP keys over mutual TLS
//!   (docs/escrow-protocol.md); a key_update is accepted only from a party to the call for the
//!   call's media paths; the keys are sealed to the lawful-intercept authority and stored
//!   before the reply is sent, then the relay's gate is armed with them;
//! - **media relay** (relay.rs): one thread over the relay's ports that checks every datagram
//!   (session_ID carrier, 5-tuple, SRTP tag with the escrowed key) before forwarding it.
//!
//! Thin drivers: `EscrowServer` decides, one thread owns it with the key store (escrow.rs), a
//! tokio task per connection frames requests; `ProxyCore` and `Relay` decide for SIP and media.

mod config;
mod escrow;
pub(crate) mod li;
mod metrics;
mod relay;

pub(crate) use config::{EngineName, LiSection};
pub(crate) use escrow::wall_ms;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use voxgate_keystore::{KeyStore, PgStore, SqliteStore};
use voxgate_media::relay::{CallTable, RelayAnchor};

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
    let (text, base) = crate::config_file::read(&args.config)?;
    let cfg = config::load(&text, &base)
        .with_context(|| format!("configuration {}", args.config.display()))?;
    let acceptor = escrow::tls_acceptor(&cfg)
        .with_context(|| format!("configuration {}", args.config.display()))?;
    let sip_tls = match &cfg.sip {
        Some(sip) => {
            let t = sip.tls.as_ref().context("[sip] needs TLS")?;
            Some(
                crate::proxy::conn::tls_configs(&t.cert, &t.key, t.client_ca.as_deref())
                    .with_context(|| format!("configuration {}", args.config.display()))?,
            )
        }
        None => None,
    };
    if args.check_config {
        println!(
            "configuration OK: {} gateway(s), {} peer(s), {}, store {}",
            cfg.gateways.len(),
            cfg.peers.len(),
            match &cfg.media {
                Some(m) => format!(
                    "media relay {}:{}+{}",
                    m.address, m.first_port, m.port_count
                ),
                None => "escrow only".into(),
            },
            match &cfg.store {
                StoreLocation::Sqlite(_) => "sqlite",
                StoreLocation::Postgres(..) => "postgres",
            }
        );
        return Ok(ExitCode::SUCCESS);
    }
    // Opened outside the async runtime: the PostgreSQL client runs its own.
    let store: Box<dyn KeyStore> = match &cfg.store {
        StoreLocation::Sqlite(p) => {
            Box::new(SqliteStore::open(p).with_context(|| format!("store.sqlite {}", p.display()))?)
        }
        StoreLocation::Postgres(s, None) => {
            Box::new(PgStore::connect(s).context("store.postgres")?)
        }
        StoreLocation::Postgres(s, Some(schema)) => Box::new(
            PgStore::connect_in_schema(s, schema)
                .context("store.postgres, store.postgres_schema")?,
        ),
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
    // Lawful interception: copies of tapped calls' datagrams leave the relay on this channel.
    let li_metrics = Arc::new(li::LiMetrics::default());
    let (tap_tx, tap_rx) = std::sync::mpsc::sync_channel::<li::TapCopy>(16_384);
    let audit = match &cfg.audit {
        Some(a) => {
            Some(crate::audit_file::AuditFile::open(&a.path, &a.key, &a.node).context("[audit]")?)
        }
        None => None,
    };
    // The media relay and the call table the escrow checks key_updates against.
    let names: Vec<String> = cfg.gateways.iter().map(|g| g.name.clone()).collect();
    let media = match &cfg.media {
        Some(m) => {
            let gateways = cfg
                .gateways
                .iter()
                .flat_map(|g| g.addresses.iter().map(|a| a.to_canonical()))
                .collect();
            let tap = cfg
                .li
                .as_ref()
                .map(|_| (tap_tx.clone(), li_metrics.clone()));
            let (handle, relay_metrics, thread) = relay::start(m, gateways, &names, tap)?;
            let calls = Arc::new(Mutex::new(CallTable::new(std::net::IpAddr::V4(m.address))));
            Some((handle, relay_metrics, thread, calls))
        }
        None => {
            tracing::warn!("no [sip]/[media]: escrow-only node (party_check = \"none\")");
            None
        }
    };
    drop(tap_tx);
    // The relay's anchor (the SIP proxy's), and the point of interception tapping through it.
    let anchor = match (&media, &cfg.media) {
        (Some((handle, _, _, calls)), Some(m)) => {
            let h = handle.clone();
            let mut a = RelayAnchor::new(
                relay::relay_config(m, &names),
                calls.clone(),
                Box::new(move |cmd| h.send(cmd)),
            );
            a.set_gateways(names.clone());
            Some(Arc::new(Mutex::new(a)))
        }
        _ => None,
    };
    let li_tap = match (&cfg.li, &anchor) {
        (Some(l), Some(a)) => {
            let node = cfg.audit.as_ref().map_or("spg", |a| a.node.as_str());
            let tap = li::LiTap::new(
                node,
                Some(a.clone()),
                l.queue_bytes,
                li_metrics.clone(),
                &l.keep_file,
            )?;
            li::spawn_copier(tap.clone(), tap_rx)?;
            Some(tap)
        }
        (Some(_), None) => anyhow::bail!("[li] needs [sip] and [media] (the calls and the relay)"),
        _ => None,
    };
    let escrow = match &media {
        Some((handle, _, _, calls)) => escrow.with_media(calls.clone(), handle.clone()),
        None => escrow,
    };
    let escrow = escrow.with_li_and_audit(li_tap.clone(), audit);
    let metrics = escrow.metrics.clone();
    let (tx, rx) = mpsc::channel::<escrow::Job>(1024);
    let core = std::thread::Builder::new()
        .name("spg-escrow".into())
        .spawn(move || escrow::run_escrow(escrow, rx))
        .context("starting the escrow thread")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let cfg = Arc::new(cfg);
    let media_parts = media
        .as_ref()
        .map(|(h, m, _, calls)| (h.clone(), m.clone(), calls.clone()));
    let local = tokio::task::LocalSet::new();
    let result = local.block_on(
        &rt,
        serve(
            cfg,
            acceptor,
            tx,
            metrics,
            sip_tls,
            media_parts,
            anchor,
            li_tap,
        ),
    );
    drop(local);
    // Dropping the runtime drops the connections' senders: the escrow thread then ends, and
    // the store is closed after its last write.
    drop(rt);
    if core.join().is_err() {
        anyhow::bail!("the escrow thread panicked");
    }
    if let Some((handle, _, thread, _)) = media {
        handle.stop();
        if thread.join().is_err() {
            anyhow::bail!("the relay thread panicked");
        }
    }
    result
}

#[allow(clippy::too_many_arguments)]
async fn serve(
    cfg: Arc<config::Loaded>,
    acceptor: tokio_rustls::TlsAcceptor,
    tx: mpsc::Sender<escrow::Job>,
    metrics: Arc<metrics::Metrics>,
    sip_tls: Option<crate::proxy::conn::TlsConfigs>,
    media: Option<(
        relay::RelayHandle,
        Arc<relay::RelayMetrics>,
        Arc<Mutex<CallTable>>,
    )>,
    anchor: Option<Arc<Mutex<RelayAnchor>>>,
    li_tap: Option<Arc<li::LiTap>>,
) -> anyhow::Result<ExitCode> {
    let listener = TcpListener::bind(cfg.escrow.listen)
        .await
        .with_context(|| format!("binding escrow.listen {}", cfg.escrow.listen))?;
    let local = listener.local_addr()?;
    tokio::spawn(escrow::accept_loop(
        listener,
        acceptor,
        cfg.clone(),
        tx.clone(),
        metrics.clone(),
    ));
    if let Some(r) = cfg.retention_secs {
        // Retention: checked every minute (or every tenth of it, if shorter).
        let every = Duration::from_millis((r * 100).clamp(200, 60_000));
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut iv = tokio::time::interval(every);
            loop {
                iv.tick().await;
                if tx.send(escrow::Job::Purge(r * 1000)).await.is_err() {
                    return;
                }
            }
        });
    }
    println!("listening escrow {local}");
    // The SIP proxy with the relay as its media anchor.
    let mut sip = None;
    if let (Some(pcfg), Some(anchor), Some(m)) = (&cfg.sip, anchor, &cfg.media) {
        let anchor = li::SpgAnchor {
            relay: anchor,
            li: li_tap.clone(),
            escrow: Some(tx.clone()),
        };
        let (node, core_loop) = crate::proxy::start_sip(pcfg, sip_tls, Some(Box::new(anchor)))
            .await
            .context("starting the SIP proxy")?;
        for (t, a) in &node.bound {
            println!("listening {} {a}", format!("{t:?}").to_lowercase());
        }
        println!(
            "listening media {}:{}-{}",
            m.address,
            m.first_port,
            u32::from(m.first_port) + u32::from(m.port_count) - 1
        );
        tokio::task::spawn_local(core_loop);
        sip = Some(Arc::new(node));
    }
    if let (Some(l), Some(tap)) = (&cfg.li, &li_tap) {
        tokio::task::spawn_local(li::link(l.clone(), tap.clone()));
    }
    if let Some(addr) = cfg.metrics {
        let l = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding metrics.address {addr}"))?;
        println!("listening metrics {}", l.local_addr()?);
        let relay_metrics = media.as_ref().map(|(_, m, _)| m.clone());
        let li_metrics = li_tap.as_ref().map(|t| t.metrics.clone());
        let sip = sip.clone();
        tokio::task::spawn_local(crate::metrics_http::serve(l, move || {
            let m = metrics.clone();
            let r = relay_metrics.clone();
            let sip = sip.clone();
            let l = li_metrics.clone();
            async move {
                let mut out = m.render();
                if let Some(r) = r {
                    out.push_str(&r.render());
                }
                if let Some(l) = l {
                    out.push_str(&l.render());
                }
                if let Some(s) = sip {
                    out.push_str(&s.metrics().await.unwrap_or_default());
                }
                Some(out)
            }
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
