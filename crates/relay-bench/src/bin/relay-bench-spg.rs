//! relay-bench-spg: the SPG's media relay under benchmark load, with everything the real
//! `voxgate spg` runs per datagram: the same `voxgate_netio::plane` thread over a `PortSet`
//! (one socket per relay port, epoll, recvmmsg/sendmmsg, IP_RECVOPTS), the same
//! `voxgate_media::relay::Relay` (carrier, session lookup, 5-tuple, SRTP tag verified with the
//! escrowed key, source check), in source-based mode with the load generator's address as the
//! voice gateway, so every datagram must carry a valid session_ID.
//!
//! What differs from `voxgate spg` is only how the calls are set up: instead of SIP and the
//! escrow protocol (TLS, key store), each call's offer and answer go through the real
//! `RelayAnchor` (SDP rewritten, ports allocated, legs set) and its keys through the real
//! `CallTable::check_key_update` before the session is armed, all in process.
//!
//! Writes the scenario for relay-loadgen (`--scenario-out`), prints `ready`, relays until
//! SIGTERM/SIGINT, then prints one JSON line of counters.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Parser;
use relay_bench::scenario::{make_scenario, CarrierKind, MakeScenario, StreamSpec};
use voxgate_escrow::gate::{Mode, Sampling};
use voxgate_escrow::server::Session;
use voxgate_escrow::wire::{Addr, Direction, KeyUpdate, Secret, StreamKey};
use voxgate_media::relay::{
    CallTable, Decision, Relay, RelayAnchor, RelayCommand, RelayConfig, RelayDrop,
};
use voxgate_netio::plane::Plane;
use voxgate_netio::portset::{Action, Datagram, EngineChoice, PortSet};
use voxgate_netio::OptionsBuf;
use voxgate_rtp::SrtpProfile;
use voxgate_sip::anchor::{MediaAnchor, SdpContext, SdpKind, Side};

#[derive(Debug, Parser)]
#[command(about = "The SPG relay with escrowed sessions, for bench/relay/run.sh")]
struct Args {
    /// Calls (streams) to set up.
    #[arg(long)]
    calls: usize,
    /// Tag verification: "every" packet, or "1in16" (the first 50 of a stream, then 1 in 16).
    #[arg(long, default_value = "every")]
    sampling: String,
    /// Carrier of the session_ID: ipv4-option or rtp-extension.
    #[arg(long, default_value = "ipv4-option")]
    carrier: String,
    /// First relay port; the relay uses 4 per call (a port pair facing each side).
    #[arg(long)]
    relay_base: u16,
    #[arg(long)]
    send_base: u16,
    #[arg(long)]
    recv_base: u16,
    #[arg(long, default_value = "127.0.0.1")]
    host: Ipv4Addr,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Receive queue per relay port (`[media] port_queue_bytes`; the SPG's default).
    #[arg(long, default_value_t = 8 * 1024)]
    port_queue: usize,
    #[arg(long)]
    scenario_out: PathBuf,
    /// Receive queue of the shared port pair (`[media] shared_queue_bytes`; the SPG's default).
    #[arg(long, default_value_t = 4 << 20)]
    shared_queue: usize,
    /// A port pair per call side instead of the shared gateway port (`[media] shared_port =
    /// false`).
    #[arg(long)]
    dedicated_ports: bool,
    /// The relay's I/O engine, as `[media] engine` of voxgate spg: auto, uring, raw or sockets.
    #[arg(long, default_value = "auto")]
    engine: String,
}

#[derive(Default)]
struct Counters {
    received: AtomicU64,
    forwarded: AtomicU64,
    verified: AtomicU64,
    send_failed: AtomicU64,
    dropped: AtomicU64,
}

struct BenchPlane {
    relay: Relay,
    counters: Arc<Counters>,
    drops: Arc<Mutex<Vec<(RelayDrop, u64)>>>,
}

impl Plane for BenchPlane {
    type Command = RelayCommand;

    fn apply(&mut self, cmd: RelayCommand) {
        let _ = self.relay.apply(cmd);
    }

    fn decide(&mut self, d: Datagram<'_>) -> Action {
        match self.relay.handle(d.port, d.src, d.options, &d.buf[..d.len]) {
            Decision::Forward {
                out_port,
                dst: SocketAddr::V4(dst),
            } => Action::Send {
                out_port,
                dst,
                len: d.len,
                options: OptionsBuf::default(),
            },
            _ => Action::Drop,
        }
    }

    fn publish(&mut self, set: &PortSet) {
        let s = self.relay.stats();
        let c = &self.counters;
        c.received.store(s.received, Ordering::Relaxed);
        c.forwarded.store(s.forwarded, Ordering::Relaxed);
        c.verified.store(s.verified, Ordering::Relaxed);
        c.send_failed
            .store(set.stats().send_failed, Ordering::Relaxed);
        let d = self.relay.drops();
        c.dropped
            .store(d.iter().map(|(_, n)| n).sum(), Ordering::Relaxed);
        *self.drops.lock().unwrap_or_else(|p| p.into_inner()) = d;
    }
}

fn sdp(addr: SocketAddr, extra: &str) -> String {
    format!(
        "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\na=rtcp-mux\r\n{extra}",
        ip = addr.ip(),
        port = addr.port()
    )
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let sampling = match a.sampling.as_str() {
        "every" => Sampling::EVERY_PACKET,
        "1in16" => Sampling {
            first: 50,
            one_in: 16,
        },
        other => bail!("--sampling {other:?}: every or 1in16"),
    };
    let carrier = CarrierKind::from_name(&a.carrier)?;
    if carrier == CarrierKind::None {
        bail!("--carrier: the SPG relay needs a session_ID carrier");
    }
    let ports = u16::try_from(a.calls * 4).context("--calls: at most 16383")?;
    let host = IpAddr::V4(a.host);
    // Signals are waited for by this thread; block them before any other thread exists.
    // SAFETY: plain signal-mask calls on valid, initialised sets.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    let ext_id = 1u8;
    let mut scenario = make_scenario(&MakeScenario {
        streams: a.calls,
        host,
        send_base: a.send_base,
        relay_base: a.relay_base,
        recv_base: a.recv_base,
        single: false,
        carrier,
        ext_id,
        suite: SrtpProfile::AesCm128HmacSha1_80,
        pps: 50,
        seed: a.seed,
        relay_map: None,
    })?;
    let cfg = RelayConfig {
        address: host,
        first_port: a.relay_base,
        port_count: ports,
        shared_for: if a.dedicated_ports {
            Vec::new()
        } else {
            vec!["gw-a".into(), "gw-b".into()]
        },
    };
    // Control plane: the real anchor and call table; commands collected, then applied.
    let table = Arc::new(Mutex::new(CallTable::new(host)));
    let cmds: Arc<Mutex<Vec<RelayCommand>>> = Arc::default();
    let c = cmds.clone();
    let mut anchor = RelayAnchor::new(
        cfg.clone(),
        table.clone(),
        Box::new(move |cmd| c.lock().unwrap_or_else(|p| p.into_inner()).push(cmd)),
    );
    let mut relay = Relay::new(
        &cfg,
        Mode::SourceBased {
            gateways: vec![host],
        },
        sampling,
    );
    let now = Instant::now();
    let setup = Instant::now();
    for (i, s) in scenario.streams.iter_mut().enumerate() {
        let call_id = format!("bench-{i}");
        let ext = match carrier {
            CarrierKind::RtpExtension => {
                format!("a=extmap:{ext_id} urn:voxgate:escrow:session-id\r\n")
            }
            _ => String::new(),
        };
        let offer = sdp(
            s.send_from,
            &format!("{ext}a=ssrc:{} cname:gw-a\r\n", s.ssrc),
        );
        let ctx = |side, kind| SdpContext {
            call_id: &call_id,
            side,
            kind,
            method: "INVITE",
            status: None,
            from_addr: s.send_from,
            to_addr: s.recv_on,
            from_trusted: Some(if side == Side::Caller { "gw-a" } else { "gw-b" }),
            to_trusted: Some(if side == Side::Caller { "gw-b" } else { "gw-a" }),
            to_tls: true,
        };
        anchor
            .sdp(now, &ctx(Side::Caller, SdpKind::Offer), offer.as_bytes())
            .map_err(|r| anyhow::anyhow!("offer {i}: {}", r.reason))?;
        let answer = anchor
            .sdp(
                now,
                &ctx(Side::Callee, SdpKind::Answer),
                sdp(s.recv_on, "").as_bytes(),
            )
            .map_err(|r| anyhow::anyhow!("answer {i}: {}", r.reason))?
            .context("the anchor rewrites the answer")?;
        let port = std::str::from_utf8(&answer)?
            .lines()
            .find_map(|l| l.strip_prefix("m=audio "))
            .and_then(|l| l.split(' ').next()?.parse::<u16>().ok())
            .context("the rewritten answer's port")?;
        s.send_to = SocketAddr::new(host, port);
        arm(&mut relay, &table, s, &call_id)?;
    }
    for cmd in cmds.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
        relay.apply(cmd)?;
    }
    let setup_ms = setup.elapsed().as_millis();
    let engine = match a.engine.as_str() {
        "auto" => EngineChoice::Auto,
        "raw" => EngineChoice::Raw,
        "uring" => EngineChoice::Uring,
        "sockets" => EngineChoice::Sockets,
        other => bail!("--engine {other:?}: auto, uring, raw or sockets"),
    };
    let ports_set = PortSet::bind_engine(a.host, a.relay_base, ports, true, a.port_queue, engine)
        .with_context(|| format!("binding {}:{}+{ports}", a.host, a.relay_base))?;
    let counters = Arc::new(Counters::default());
    let drops: Arc<Mutex<Vec<(RelayDrop, u64)>>> = Arc::default();
    let plane = BenchPlane {
        relay,
        counters: counters.clone(),
        drops: drops.clone(),
    };
    std::fs::write(&a.scenario_out, serde_json::to_string_pretty(&scenario)?)
        .with_context(|| format!("writing {}", a.scenario_out.display()))?;
    let mut ports_set = ports_set;
    if let Some(p) = cfg.shared_port() {
        for port in [p, p + 1] {
            ports_set.set_recv_buffer(port, a.shared_queue)?;
        }
    }
    let engine_used = ports_set.engine();
    let (handle, thread) = voxgate_netio::plane::spawn("spg-relay", ports_set, plane)?;
    println!("ready");
    eprintln!(
        "relay-bench-spg: {} calls escrowed in {setup_ms} ms, {ports} relay ports from {}, sampling {}, carrier {carrier}, engine {engine_used:?}",
        a.calls, a.relay_base, a.sampling
    );
    let mut sig: libc::c_int = 0;
    // SAFETY: waits for one of the blocked signals.
    unsafe { libc::sigwait(&set, &mut sig) };
    handle.stop();
    let _ = thread.join();
    let g = |x: &AtomicU64| x.load(Ordering::Relaxed);
    let by_reason: serde_json::Map<String, serde_json::Value> = drops
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(r, n)| (r.name().to_string(), (*n).into()))
        .collect();
    println!(
        "{}",
        serde_json::json!({
            "calls": a.calls,
            "sampling": a.sampling,
            "carrier": carrier.name(),
            "engine": format!("{engine_used:?}").to_lowercase(),
            "received": g(&counters.received),
            "forwarded": g(&counters.forwarded),
            "verified": g(&counters.verified),
            "send_failed": g(&counters.send_failed),
            "dropped": g(&counters.dropped),
            "dropped_by_reason": by_reason,
        })
    );
    Ok(())
}

/// Escrows a stream's send key as the SPG does: the key_update must pass the call table's
/// party and media-path check; then the gate is armed.
fn arm(
    relay: &mut Relay,
    table: &Mutex<CallTable>,
    s: &StreamSpec,
    call_id: &str,
) -> anyhow::Result<()> {
    use base64::Engine;
    let key = base64::engine::general_purpose::STANDARD.decode(&s.key)?;
    let streams = vec![StreamKey {
        direction: Direction::Send,
        src: Addr(s.send_from),
        dst: Addr(s.send_to),
        ssrc: Some(s.ssrc),
        suite: s.suite.clone(),
        master: Secret(zeroize::Zeroizing::new(key)),
        mki: None,
    }];
    let ku = KeyUpdate {
        request_id: 1,
        time_ms: 0,
        call_id: call_id.to_string(),
        session_id: None,
        streams,
    };
    table
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .check_key_update("gw-a", &ku)
        .map_err(|e| anyhow::anyhow!("{call_id}: {e}"))?;
    let id = s
        .carrier
        .session_id
        .map(|v| v.get())
        .context("a session_ID")?;
    relay.apply(RelayCommand::Arm(Box::new(Session {
        id,
        gateway: "gw-a".into(),
        call_id: call_id.to_string(),
        streams: ku.streams,
        generation: 0,
        created_ms: 0,
    })))?;
    Ok(())
}
