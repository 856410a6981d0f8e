//! The SPG's media relay: the sans-I/O `voxgate_media::relay::Relay` as the data plane of a
//! media thread (`voxgate_netio::plane`: one socket per relay port, epoll, recvmmsg/sendmmsg,
//! each datagram's IPv4 options). Commands (legs from the SIP side, sessions armed and
//! disarmed by the escrow side) arrive on a channel and are applied between polls.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use voxgate_escrow::gate::{DropReason, Mode, Sampling};
use voxgate_media::relay::{Decision, Relay, RelayCommand, RelayConfig, RelayDrop};
use voxgate_netio::portset::{Action, Datagram, PortSet};
use voxgate_netio::OptionsBuf;

use super::config::{GateMode, MediaSection};

/// Every drop reason the relay counts, in metric order.
pub(crate) const DROPS: [RelayDrop; 8] = [
    RelayDrop::Gate(DropReason::NoSessionId),
    RelayDrop::Gate(DropReason::UnknownSessionId),
    RelayDrop::Gate(DropReason::WrongTuple),
    RelayDrop::Gate(DropReason::TagMismatch),
    RelayDrop::Gate(DropReason::Replay),
    RelayDrop::Gate(DropReason::Malformed),
    RelayDrop::NoRoute,
    RelayDrop::WrongSource,
];

/// The relay's counters, published by its thread after every poll.
#[derive(Debug, Default)]
pub(crate) struct RelayMetrics {
    pub received: AtomicU64,
    pub forwarded: AtomicU64,
    pub verified: AtomicU64,
    pub send_failed: AtomicU64,
    pub legs: AtomicU64,
    pub armed: AtomicU64,
    pub drops: [AtomicU64; 8],
}

impl RelayMetrics {
    pub fn render(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut s = String::new();
        let mut one = |name: &str, kind: &str, help: &str, v: u64| {
            crate::metrics_http::metric(&mut s, name, kind, help, v)
        };
        one(
            "voxgate_relay_received_total",
            "counter",
            "Media datagrams received by the relay.",
            g(&self.received),
        );
        one(
            "voxgate_relay_forwarded_total",
            "counter",
            "Media datagrams forwarded.",
            g(&self.forwarded),
        );
        one(
            "voxgate_relay_verified_total",
            "counter",
            "Forwarded datagrams whose SRTP/SRTCP tag was verified with the escrowed key.",
            g(&self.verified),
        );
        one(
            "voxgate_relay_send_failed_total",
            "counter",
            "Datagrams the kernel did not take (send buffer full).",
            g(&self.send_failed),
        );
        one(
            "voxgate_relay_legs",
            "gauge",
            "Relay ports in use by calls.",
            g(&self.legs),
        );
        one(
            "voxgate_relay_sessions_armed",
            "gauge",
            "Escrowed sessions the gate checks.",
            g(&self.armed),
        );
        s.push_str("# HELP voxgate_relay_dropped_total Media datagrams dropped, by reason (tag_mismatch: the gateway escrowed a key it does not use).\n# TYPE voxgate_relay_dropped_total counter\n");
        for (i, r) in DROPS.iter().enumerate() {
            s.push_str(&format!(
                "voxgate_relay_dropped_total{{reason=\"{}\"}} {}\n",
                r.name(),
                g(&self.drops[i])
            ));
        }
        s
    }
}

/// The other threads' handle on the relay.
pub(crate) type RelayHandle = voxgate_netio::plane::Handle<RelayCommand>;

/// The relay's settings; `gateways` (their names) share the first port pair when
/// `[media] shared_port` is on.
pub(crate) fn relay_config(m: &MediaSection, gateways: &[String]) -> RelayConfig {
    RelayConfig {
        address: IpAddr::V4(m.address),
        first_port: m.first_port,
        port_count: m.port_count,
        shared_for: if m.shared_port {
            gateways.to_vec()
        } else {
            Vec::new()
        },
    }
}

/// The relay as a data plane of the media thread.
struct RelayPlane {
    relay: Relay,
    /// Copies of tapped calls' datagrams, to lawful interception.
    tap: Option<std::sync::mpsc::SyncSender<super::li::TapCopy>>,
    tap_metrics: Option<Arc<super::li::LiMetrics>>,
    address: std::net::Ipv4Addr,
    metrics: Arc<RelayMetrics>,
    last_fault_log: Option<Instant>,
    faults_unlogged: u64,
}

impl voxgate_netio::plane::Plane for RelayPlane {
    type Command = RelayCommand;

    fn apply(&mut self, cmd: RelayCommand) {
        if let Err(e) = self.relay.apply(cmd) {
            tracing::error!(error = %e, "relay command refused");
        }
    }

    fn decide(&mut self, d: Datagram<'_>) -> Action {
        match self.relay.handle(d.port, d.src, d.options, &d.buf[..d.len]) {
            Decision::Forward {
                out_port,
                dst: SocketAddr::V4(dst),
            } => {
                if let (Some(t), Some(tx)) = (self.relay.tap(), &self.tap) {
                    let (src, to) = if t.inbound {
                        (d.src, SocketAddr::from((self.address, d.port)))
                    } else {
                        (
                            SocketAddr::from((self.address, out_port)),
                            SocketAddr::V4(dst),
                        )
                    };
                    let copy = super::li::TapCopy {
                        tap: t.id,
                        src,
                        dst: to,
                        time_ms: super::escrow::wall_ms(),
                        packet: d.buf[..d.len].to_vec(),
                    };
                    if tx.try_send(copy).is_err() {
                        if let Some(m) = &self.tap_metrics {
                            m.copies_dropped.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                Action::Send {
                    out_port,
                    dst,
                    len: d.len,
                    options: OptionsBuf::default(),
                }
            }
            Decision::Forward { .. } => Action::Drop,
            Decision::Drop(reason) => {
                if reason == RelayDrop::Gate(DropReason::TagMismatch) {
                    // A gateway fault: it escrowed a key it does not use. Logged at most once
                    // a second.
                    let now = Instant::now();
                    if self
                        .last_fault_log
                        .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
                    {
                        tracing::warn!(port = d.port, src = %d.src, more = self.faults_unlogged, "SRTP tag does not verify with the escrowed key: gateway fault, datagram dropped");
                        self.last_fault_log = Some(now);
                        self.faults_unlogged = 0;
                    } else {
                        self.faults_unlogged += 1;
                    }
                } else {
                    tracing::debug!(port = d.port, src = %d.src, reason = reason.name(), "datagram dropped");
                }
                Action::Drop
            }
        }
    }

    fn publish(&mut self, set: &PortSet) {
        let (relay, m) = (&self.relay, &self.metrics);
        let s = relay.stats();
        m.received.store(s.received, Ordering::Relaxed);
        m.forwarded.store(s.forwarded, Ordering::Relaxed);
        m.verified.store(s.verified, Ordering::Relaxed);
        m.send_failed
            .store(set.stats().send_failed, Ordering::Relaxed);
        m.legs.store(relay.legs() as u64, Ordering::Relaxed);
        m.armed
            .store(relay.gate().sessions() as u64, Ordering::Relaxed);
        for (r, n) in relay.drops() {
            if let Some(i) = DROPS.iter().position(|x| *x == r) {
                m.drops[i].store(n, Ordering::Relaxed);
            }
        }
    }
}

/// Binds the relay's ports and starts its thread.
pub(crate) fn start(
    m: &MediaSection,
    gateways: Vec<IpAddr>,
    names: &[String],
    tap: Option<(
        std::sync::mpsc::SyncSender<super::li::TapCopy>,
        Arc<super::li::LiMetrics>,
    )>,
) -> anyhow::Result<(RelayHandle, Arc<RelayMetrics>, std::thread::JoinHandle<()>)> {
    let set = PortSet::bind_engine(
        m.address,
        m.first_port,
        m.port_count,
        true,
        m.port_queue_bytes,
        m.engine.into(),
    )
    .with_context(|| {
        format!(
            "binding the media relay's ports {}:{}-{}",
            m.address,
            m.first_port,
            u32::from(m.first_port) + u32::from(m.port_count) - 1
        )
    })?;
    let mode = match m.mode {
        GateMode::SourceBased => Mode::SourceBased { gateways },
        GateMode::Global => Mode::Global,
    };
    let sampling = Sampling {
        first: m.verify_first,
        one_in: m.verify_one_in,
    };
    let mut set = set;
    if let Some(p) = relay_config(m, names).shared_port() {
        for port in [p, p + 1] {
            set.set_recv_buffer(port, m.shared_queue_bytes)
                .with_context(|| format!("media.shared_queue_bytes on port {port}"))?;
        }
    }
    tracing::info!(engine = ?set.engine(), ports = m.port_count, "media relay bound");
    let metrics = Arc::new(RelayMetrics::default());
    let plane = RelayPlane {
        relay: Relay::new(&relay_config(m, names), mode, sampling),
        tap_metrics: tap.as_ref().map(|t| t.1.clone()),
        tap: tap.map(|t| t.0),
        address: m.address,
        metrics: metrics.clone(),
        last_fault_log: None,
        faults_unlogged: 0,
    };
    let (handle, thread) = voxgate_netio::plane::spawn("spg-relay", set, plane)?;
    Ok((handle, metrics, thread))
}
