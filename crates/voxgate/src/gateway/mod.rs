//! `voxgate gateway`: an enterprise voice gateway with CALEA key escrow.
//!
//! - **SIP**: the proxy driver of `voxgate proxy` (its users register with it, digest
//!   authentication, the inside encryption policy), with every call to another domain routed
//!   to the provider's SPG over TLS, and the SPG trusted for calls coming in;
//! - **media**: a `voxgate_media::bridge::BridgeAnchor` behind the proxy re-keys every call's
//!   SDP, and the bridge thread (`voxgate_netio::plane` over a `PortSet`) decrypts, re-encrypts
//!   and tags every datagram with the call's session_ID (IPv4 option 158, or the RTP header
//!   extension), holding outward media until the call is escrowed;
//! - **escrow** (escrow.rs): the keys of each call, both directions, go to the SPG in
//!   key_update over mutual TLS; the session_ID that comes back is handed to the bridge.

mod config;
mod escrow;

use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use voxgate_media::bridge::{
    Bridge, BridgeAnchor, BridgeCommand, BridgeDecision, BridgeDrop, Carrier, EscrowRequest,
};
use voxgate_netio::portset::{Action, Datagram, PortSet};
use voxgate_netio::OptionsBuf;

/// Arguments of `voxgate gateway`.
#[derive(Debug, clap::Args)]
pub struct GatewayArgs {
    /// The TOML configuration (see examples/gateway.toml). Relative paths in it are relative
    /// to the file's directory.
    #[arg(long)]
    pub config: PathBuf,
    /// Only load and check the configuration (and the TLS files), then exit.
    #[arg(long)]
    pub check_config: bool,
}

/// The bridge's counters, published by its thread.
#[derive(Debug, Default)]
struct BridgeMetrics {
    received: AtomicU64,
    outward: AtomicU64,
    inward: AtomicU64,
    send_failed: AtomicU64,
    drops: [AtomicU64; 6],
}

impl BridgeMetrics {
    fn render(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut s = String::new();
        for (name, help, v) in [
            (
                "voxgate_bridge_received_total",
                "Media datagrams received by the bridge.",
                g(&self.received),
            ),
            (
                "voxgate_bridge_outward_total",
                "Datagrams re-encrypted and tagged toward the provider.",
                g(&self.outward),
            ),
            (
                "voxgate_bridge_inward_total",
                "Datagrams re-encrypted toward users.",
                g(&self.inward),
            ),
            (
                "voxgate_bridge_send_failed_total",
                "Datagrams the kernel did not take.",
                g(&self.send_failed),
            ),
        ] {
            crate::metrics_http::metric(&mut s, name, "counter", help, v);
        }
        s.push_str("# HELP voxgate_bridge_dropped_total Datagrams dropped, by reason (not_escrowed: held until the SPG answers key_update).\n# TYPE voxgate_bridge_dropped_total counter\n");
        for (i, r) in BridgeDrop::ALL.iter().enumerate() {
            s.push_str(&format!(
                "voxgate_bridge_dropped_total{{reason=\"{}\"}} {}\n",
                r.name(),
                g(&self.drops[i])
            ));
        }
        s
    }
}

struct BridgePlane {
    bridge: Bridge,
    metrics: Arc<BridgeMetrics>,
}

impl voxgate_netio::plane::Plane for BridgePlane {
    type Command = BridgeCommand;

    fn apply(&mut self, cmd: BridgeCommand) {
        self.bridge.apply(cmd);
    }

    fn decide(&mut self, d: Datagram<'_>) -> Action {
        match self.bridge.handle(d.port, d.src, d.buf, d.len) {
            BridgeDecision::Forward {
                out_port,
                dst: SocketAddr::V4(dst),
                len,
                ipv4_options,
            } => Action::Send {
                out_port,
                dst,
                len,
                options: ipv4_options
                    .and_then(|o| OptionsBuf::from_slice(&o))
                    .unwrap_or_default(),
            },
            BridgeDecision::Forward { .. } => Action::Drop,
            BridgeDecision::Drop(r) => {
                tracing::trace!(port = d.port, src = %d.src, reason = r.name(), "media dropped");
                Action::Drop
            }
        }
    }

    fn publish(&mut self, set: &PortSet) {
        let s = self.bridge.stats();
        let m = &self.metrics;
        m.received.store(s.received, Ordering::Relaxed);
        m.outward.store(s.outward, Ordering::Relaxed);
        m.inward.store(s.inward, Ordering::Relaxed);
        m.send_failed
            .store(set.stats().send_failed, Ordering::Relaxed);
        for (i, r) in BridgeDrop::ALL.iter().enumerate() {
            m.drops[i].store(s.dropped.get(r).copied().unwrap_or(0), Ordering::Relaxed);
        }
    }
}

/// Fails with a clear message when the IPv4-option carrier cannot be sent (it needs
/// CAP_NET_RAW).
fn check_carrier(carrier: Carrier) -> anyhow::Result<()> {
    if carrier != Carrier::Ipv4Option {
        return Ok(());
    }
    let probe = std::net::UdpSocket::bind("127.0.0.1:0").context("a probe socket")?;
    voxgate_netio::set_ip_options(
        &probe,
        &voxgate_escrow::carrier::ipv4_options(0x0102_0304_0506_0708),
    )
    .map_err(|e| {
        anyhow::anyhow!(
            "media.carrier = \"ipv4-option\": {e} (or use carrier = \"rtp-extension\", which needs no privilege)"
        )
    })?;
    Ok(())
}

pub fn run(args: GatewayArgs) -> anyhow::Result<ExitCode> {
    let (text, base) = crate::config_file::read(&args.config)?;
    let cfg = config::load(&text, &base)
        .with_context(|| format!("configuration {}", args.config.display()))?;
    let tls = cfg.sip.tls.as_ref().context("sip.tls")?;
    let sip_tls = crate::proxy::conn::tls_configs(&tls.cert, &tls.key, tls.client_ca.as_deref())
        .with_context(|| format!("configuration {}", args.config.display()))?;
    let escrow_tls = crate::ua::transport::client_config(&cfg.ca, Some((&cfg.cert, &cfg.key)))
        .context("the escrow connection's TLS (provider.ca, sip.tls cert and key)")?;
    if args.check_config {
        println!(
            "configuration OK: gateway {}, {} user(s), carrier {:?}",
            cfg.name,
            cfg.sip.domains.iter().map(|d| d.users.len()).sum::<usize>(),
            cfg.bridge.carrier
        );
        return Ok(ExitCode::SUCCESS);
    }
    let set = PortSet::bind_engine(
        cfg.bind,
        cfg.bridge.first_port,
        cfg.bridge.port_count,
        false,
        cfg.port_queue_bytes,
        cfg.engine.into(),
    )
    .with_context(|| format!("binding the media ports on {}", cfg.bind))?;
    if set.engine() != voxgate_netio::portset::Engine::Raw {
        // Option 158 goes out with each datagram through the port's socket: CAP_NET_RAW.
        check_carrier(cfg.bridge.carrier)?;
    }
    tracing::info!(engine = ?set.engine(), "media ports bound");
    let bridge_metrics = Arc::new(BridgeMetrics::default());
    let plane = BridgePlane {
        bridge: Bridge::new(&cfg.bridge),
        metrics: bridge_metrics.clone(),
    };
    let (media, media_thread) = voxgate_netio::plane::spawn("gateway-media", set, plane)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let local = tokio::task::LocalSet::new();
    let result = local.block_on(
        &rt,
        serve(cfg, sip_tls, escrow_tls, media.clone(), bridge_metrics),
    );
    drop(local);
    drop(rt);
    media.stop();
    if media_thread.join().is_err() {
        anyhow::bail!("the media thread panicked");
    }
    result
}

async fn serve(
    cfg: config::Loaded,
    sip_tls: crate::proxy::conn::TlsConfigs,
    escrow_tls: Arc<rustls::ClientConfig>,
    media: voxgate_netio::plane::Handle<BridgeCommand>,
    bridge_metrics: Arc<BridgeMetrics>,
) -> anyhow::Result<ExitCode> {
    let (etx, erx) = mpsc::unbounded_channel::<EscrowRequest>();
    let escrow_metrics = Arc::new(escrow::EscrowMetrics::default());
    tokio::task::spawn_local(escrow::run(
        cfg.bridge.outside_address,
        cfg.escrow,
        tokio_rustls::TlsConnector::from(escrow_tls),
        erx,
        media.clone(),
        escrow_metrics.clone(),
    ));
    let m = media.clone();
    let anchor = BridgeAnchor::new(
        cfg.bridge.clone(),
        Box::new(move |c| m.send(c)),
        Box::new(move |r| {
            let _ = etx.send(r);
        }),
    );
    // Lawful interception: registrations of targets go to the mediation as IRI REPORTs.
    let li_tap = match &cfg.li {
        Some(l) => {
            let tap = crate::spg::li::LiTap::new(
                &cfg.name,
                None,
                l.queue_bytes,
                Arc::default(),
                &l.keep_file,
            )?;
            tokio::task::spawn_local(crate::spg::li::link(l.clone(), tap.clone()));
            Some(tap)
        }
        None => None,
    };
    let anchor = GatewayAnchor {
        bridge: anchor,
        li: li_tap,
    };
    let (node, core_loop) =
        crate::proxy::start_sip(&cfg.sip, Some(sip_tls), Some(Box::new(anchor)))
            .await
            .context("starting the SIP side")?;
    for (t, a) in &node.bound {
        println!("listening {} {a}", format!("{t:?}").to_lowercase());
    }
    let last = u32::from(cfg.bridge.first_port) + u32::from(cfg.bridge.port_count) - 1;
    println!(
        "listening media {}:{}-{last}",
        SocketAddrV4::new(cfg.bind, cfg.bridge.first_port).ip(),
        cfg.bridge.first_port
    );
    let node = Arc::new(node);
    if let Some(addr) = cfg.metrics {
        let l = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding metrics.address {addr}"))?;
        println!("listening metrics {}", l.local_addr()?);
        let node = node.clone();
        tokio::task::spawn_local(crate::metrics_http::serve(l, move || {
            let (b, e, node) = (bridge_metrics.clone(), escrow_metrics.clone(), node.clone());
            async move {
                let mut out = b.render();
                out.push_str(&e.render());
                out.push_str(&node.metrics().await.unwrap_or_default());
                Some(out)
            }
        }));
    }
    println!("ready");
    use std::io::Write;
    let _ = std::io::stdout().flush();
    tracing::info!(gateway = %cfg.name, escrow = %cfg.escrow, outside = %IpAddr::from(cfg.bind), "voxgate gateway ready");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("SIGTERM handler")?;
    tokio::select! {
        _ = core_loop => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    Ok(ExitCode::SUCCESS)
}

/// The bridge's anchor, with registrations also reported to lawful interception.
struct GatewayAnchor {
    bridge: BridgeAnchor,
    li: Option<Arc<crate::spg::li::LiTap>>,
}

impl voxgate_sip::anchor::MediaAnchor for GatewayAnchor {
    fn sdp(
        &mut self,
        now: std::time::Instant,
        ctx: &voxgate_sip::anchor::SdpContext<'_>,
        body: &[u8],
    ) -> Result<Option<Vec<u8>>, voxgate_sip::anchor::Refusal> {
        self.bridge.sdp(now, ctx, body)
    }

    fn call_ended(&mut self, now: std::time::Instant, call_id: &str) {
        self.bridge.call_ended(now, call_id)
    }

    fn acked(&mut self, now: std::time::Instant, call_id: &str, side: voxgate_sip::anchor::Side) {
        self.bridge.acked(now, call_id, side)
    }

    fn call_event(&mut self, now: std::time::Instant, ev: &voxgate_sip::anchor::CallEvent<'_>) {
        self.bridge.call_event(now, ev);
        if let (Some(li), voxgate_sip::anchor::CallEvent::Registered { .. }) = (&self.li, ev) {
            li.call_event(ev);
        }
    }
}
