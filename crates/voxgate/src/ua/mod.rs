//! `voxgate ua`: a small SIP user agent. Registers (digest), calls or answers, and hangs up;
//! the audio comes from a WAV file and goes to one, as G.711 inside SRTP keyed by SDES under
//! the encryption policy. The SIP logic is the sans-I/O [`sip_ua::UserAgent`] and the media the
//! sans-I/O [`media::MediaSession`]; this module is the tokio driver around them.

pub(crate) use voxgate_rtp::g711;
mod media;
mod sip_ua;
pub(crate) mod transport;

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use serde::Serialize;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, oneshot};
use tokio_rustls::TlsAcceptor;
use voxgate_sip::sdp::{EncryptionPolicy, Security};
use voxgate_sip::Timers;
use zeroize::Zeroizing;

use media::{MediaPlan, MediaSession, MediaStats};
use sip_ua::{Dest, Event, FlowId, Output, TransportKind, UaConfig, UserAgent};
use transport::{Flows, NetEvent};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TransportArg {
    Tls,
    Tcp,
    Udp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EncryptionArg {
    Mandatory,
    Optional,
    Off,
}

/// Arguments of `voxgate ua`.
#[derive(Debug, clap::Args)]
pub struct UaArgs {
    /// Our address of record, user@domain.
    #[arg(long, value_name = "USER@DOMAIN")]
    user: String,
    /// Read the digest password from the first line of this file.
    #[arg(long, value_name = "FILE", conflicts_with = "password_env")]
    password_file: Option<PathBuf>,
    /// Read the digest password from this environment variable.
    #[arg(long, value_name = "VAR")]
    password_env: Option<String>,
    /// Outbound proxy (and registrar), ip:port or host:port; every request goes through it.
    #[arg(long, value_name = "ADDR")]
    proxy: Option<String>,
    #[arg(long, value_enum, default_value_t = TransportArg::Tls)]
    transport: TransportArg,
    /// CA certificate(s) to verify TLS peers with.
    #[arg(long, value_name = "PEM")]
    ca: Option<PathBuf>,
    /// Client certificate for mutual TLS (with --key).
    #[arg(long, value_name = "PEM", requires = "key")]
    cert: Option<PathBuf>,
    #[arg(long, value_name = "PEM", requires = "cert")]
    key: Option<PathBuf>,
    /// Server certificate to accept incoming TLS connections (with --tls-key).
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Address to listen on for SIP.
    #[arg(long, value_name = "IP:PORT", default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Address for RTP (default: the --listen address, or 127.0.0.1 if that is a wildcard).
    #[arg(long, value_name = "IP")]
    media_ip: Option<IpAddr>,
    #[arg(long, value_enum, default_value_t = EncryptionArg::Mandatory)]
    encryption: EncryptionArg,
    /// Register with the proxy (digest on 401) and stay registered.
    #[arg(long)]
    register: bool,
    /// Call this SIP URI, then hang up after --duration or the end of --play.
    #[arg(long, value_name = "SIP-URI", conflicts_with = "answer")]
    call: Option<String>,
    /// Answer incoming calls.
    #[arg(long)]
    answer: bool,
    /// With --answer: exit after this many calls.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    max_calls: u32,
    /// Hang up after this many seconds of call.
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// Give up (hang up, exit non-zero) after this many seconds in all.
    #[arg(long, value_name = "SECS")]
    timeout: Option<f64>,
    /// Audio to send: WAV, 8 kHz mono 16-bit (silence without it).
    #[arg(long, value_name = "WAV")]
    play: Option<PathBuf>,
    /// Write the received audio here (WAV, 8 kHz mono 16-bit).
    #[arg(long, value_name = "WAV")]
    record: Option<PathBuf>,
    /// Print a JSON summary on stdout at the end.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Summary {
    calls: u32,
    encrypted: bool,
    suite: Option<&'static str>,
    rtp_sent: u64,
    rtp_received: u64,
    srtp_auth_failures: u64,
    /// Time in calls (from the call being up to its end), summed over the calls.
    duration_ms: u64,
    /// Time from start to exit.
    elapsed_ms: u64,
    final_status: Option<u16>,
    error: Option<String>,
}

fn seconds(v: Option<f64>, what: &str) -> Result<Option<Duration>> {
    match v {
        None => Ok(None),
        Some(s) if s.is_finite() && s > 0.0 && s < 1e7 => Ok(Some(Duration::from_secs_f64(s))),
        Some(_) => bail!("--{what} must be a positive number of seconds"),
    }
}

fn read_password(a: &UaArgs) -> Result<Option<Zeroizing<String>>> {
    if let Some(p) = &a.password_file {
        let raw = Zeroizing::new(
            std::fs::read_to_string(p)
                .with_context(|| format!("cannot read the password file {}", p.display()))?,
        );
        let line = raw.lines().next().unwrap_or("");
        if line.is_empty() {
            bail!("the password file {} is empty", p.display());
        }
        return Ok(Some(Zeroizing::new(line.to_string())));
    }
    if let Some(var) = &a.password_env {
        let v = std::env::var(var).with_context(|| {
            format!("the environment variable {var} (--password-env) is not set")
        })?;
        return Ok(Some(Zeroizing::new(v)));
    }
    Ok(None)
}

/// Reads a WAV that must be 8 kHz mono 16-bit PCM.
fn read_wav(p: &std::path::Path) -> Result<Arc<[i16]>> {
    let r = hound::WavReader::open(p).with_context(|| format!("cannot read {}", p.display()))?;
    let s = r.spec();
    if s.sample_rate != 8000
        || s.channels != 1
        || s.bits_per_sample != 16
        || s.sample_format != hound::SampleFormat::Int
    {
        bail!(
            "{}: {} Hz, {} channel(s), {}-bit {:?}: voxgate ua plays only 8000 Hz mono 16-bit PCM WAV (convert it, e.g. sox in.wav -r 8000 -c 1 -b 16 out.wav)",
            p.display(),
            s.sample_rate,
            s.channels,
            s.bits_per_sample,
            s.sample_format
        );
    }
    let samples = r
        .into_samples::<i16>()
        .collect::<std::result::Result<Vec<_>, _>>()
        .with_context(|| format!("{}: truncated or malformed WAV", p.display()))?;
    Ok(samples.into())
}

fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    rustls::crypto::aws_lc_rs::default_provider()
        .secure_random
        .fill(&mut b)
        .map_err(|_| anyhow::anyhow!("the system random number generator failed"))?;
    Ok(b)
}

pub fn run(args: UaArgs) -> Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    rt.block_on(drive(args))
}

/// A running call's media task.
struct MediaTask {
    started: Instant,
    stop: oneshot::Sender<()>,
    done: tokio::task::JoinHandle<Result<MediaSession>>,
}

async fn media_task(
    sock: Arc<UdpSocket>,
    plan: MediaPlan,
    play: Option<Arc<[i16]>>,
    mut stop: oneshot::Receiver<()>,
    ended: mpsc::UnboundedSender<()>,
) -> Result<MediaSession> {
    let mut s = MediaSession::new(&plan, play, random_bytes()?)?;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut out = Vec::with_capacity(256);
    let mut rbuf = vec![0u8; 2048];
    let mut told = false;
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tick.tick() => {
                if s.next_packet(&mut out)? {
                    if let Some(to) = plan.remote {
                        if let Err(e) = sock.send_to(&out, to).await {
                            tracing::debug!("RTP send: {e}");
                        }
                    }
                } else if !told {
                    told = true;
                    let _ = ended.send(());
                }
            }
            r = sock.recv_from(&mut rbuf) => {
                if let Ok((n, _)) = r {
                    let mut pkt = rbuf[..n].to_vec();
                    s.handle_packet(&mut pkt);
                }
            }
        }
    }
    Ok(s)
}

async fn drive(a: UaArgs) -> Result<ExitCode> {
    let started = Instant::now();
    // Check everything the user gave before any network activity.
    let (user, domain) = a
        .user
        .split_once('@')
        .filter(|(u, d)| !u.is_empty() && !d.is_empty())
        .context("--user must be user@domain")?;
    let password = read_password(&a)?;
    let play = a.play.as_deref().map(read_wav).transpose()?;
    let duration = seconds(a.duration, "duration")?;
    let overall = seconds(a.timeout, "timeout")?;
    if !a.register && a.call.is_none() && !a.answer {
        bail!("nothing to do: give --register, --call or --answer");
    }
    if a.register && a.proxy.is_none() {
        bail!("--register needs --proxy");
    }
    let mut recorder = match &a.record {
        Some(p) => Some(
            hound::WavWriter::create(
                p,
                hound::WavSpec {
                    channels: 1,
                    sample_rate: 8000,
                    bits_per_sample: 16,
                    sample_format: hound::SampleFormat::Int,
                },
            )
            .with_context(|| format!("cannot create {}", p.display()))?,
        ),
        None => None,
    };
    let kind = match a.transport {
        TransportArg::Tls => TransportKind::Tls,
        TransportArg::Tcp => TransportKind::Tcp,
        TransportArg::Udp => TransportKind::Udp,
    };
    let policy = match a.encryption {
        EncryptionArg::Mandatory => EncryptionPolicy::Mandatory,
        EncryptionArg::Optional => EncryptionPolicy::Optional,
        EncryptionArg::Off => EncryptionPolicy::Off,
    };
    if kind != TransportKind::Tls && policy != EncryptionPolicy::Off {
        // SDES keys travel in SIP: over plain TCP/UDP anyone on the path reads them.
        tracing::warn!(
            "SDES keys over {} are visible on the network: use --transport tls",
            kind.name()
        );
    }
    let tls_client = match &a.ca {
        Some(ca) => Some(transport::client_config(
            ca,
            a.cert.as_deref().zip(a.key.as_deref()),
        )?),
        None => None,
    };
    let tls_server = match (&a.tls_cert, &a.tls_key) {
        (Some(c), Some(k)) => Some(transport::server_config(c, k)?),
        _ => None,
    };
    let proxy = match &a.proxy {
        Some(p) => Some(
            tokio::net::lookup_host(p.as_str())
                .await
                .with_context(|| format!("--proxy {p}: cannot resolve (give ip:port)"))?
                .next()
                .with_context(|| format!("--proxy {p}: no address"))?,
        ),
        None => None,
    };
    let proxy_host = a
        .proxy
        .as_deref()
        .and_then(|p| p.rsplit_once(':').map(|(h, _)| h.to_string()));

    // Listeners.
    let (events_tx, mut events) = mpsc::unbounded_channel::<NetEvent>();
    let mut flows = Flows::default();
    let mut stdout = std::io::stdout();
    let mut udp: Option<Arc<UdpSocket>> = None;
    let mut contact_addr: Option<SocketAddr> = None;
    match kind {
        TransportKind::Udp => {
            let s = Arc::new(
                UdpSocket::bind(a.listen)
                    .await
                    .with_context(|| format!("cannot bind UDP {}", a.listen))?,
            );
            let addr = s.local_addr()?;
            writeln!(stdout, "listening udp {addr}")?;
            transport::spawn_udp(s.clone(), events_tx.clone());
            udp = Some(s);
            contact_addr = Some(addr);
        }
        TransportKind::Tcp | TransportKind::Tls => {
            let acceptor = tls_server.clone().map(TlsAcceptor::from);
            if kind == TransportKind::Tcp || acceptor.is_some() {
                let l = TcpListener::bind(a.listen)
                    .await
                    .with_context(|| format!("cannot listen on {}", a.listen))?;
                let addr = l.local_addr()?;
                writeln!(stdout, "listening {} {addr}", kind.name())?;
                transport::spawn_listener(l, acceptor, events_tx.clone());
                contact_addr = Some(addr);
            } else if a.answer && !a.register {
                bail!("--answer over TLS needs --tls-cert and --tls-key (or connect through --proxy with --register)");
            }
        }
    }
    stdout.flush()?;
    if kind == TransportKind::Tls && tls_client.is_none() && (a.call.is_some() || proxy.is_some()) {
        bail!("TLS needs --ca to verify the peer's certificate");
    }

    // Without a listener (TLS client only), the first hop's connection gives the Contact
    // address, and the peer reaches us over that connection.
    // The flow to the first hop when we have no listener (its local address is our Contact).
    let mut primary: Option<(FlowId, SocketAddr, String)> = None;
    if contact_addr.is_none() {
        let (addr, host) = match (proxy, &a.call) {
            (Some(p), _) => (p, proxy_host.clone().unwrap_or_else(|| p.ip().to_string())),
            (None, Some(uri)) => {
                let t = voxgate_sip::dialog::parse_target(uri)
                    .map_err(|e| anyhow::anyhow!("--call {uri}: {e}"))?;
                (
                    resolve(&t.host, t.port.unwrap_or(kind.default_port())).await?,
                    t.host,
                )
            }
            (None, None) => bail!("nothing to connect to"),
        };
        let (id, local, tx) =
            transport::connect(kind, addr, &host, tls_client.as_ref(), events_tx.clone()).await?;
        flows.add_stream(id, addr, tx);
        contact_addr = Some(local);
        primary = Some((id, addr, host));
    }
    let contact_addr = contact_addr.context("no local address")?;
    let media_ip = a.media_ip.unwrap_or(if a.listen.ip().is_unspecified() {
        IpAddr::from([127, 0, 0, 1])
    } else {
        a.listen.ip()
    });
    let media_sock = Arc::new(
        UdpSocket::bind(SocketAddr::new(media_ip, 0))
            .await
            .with_context(|| format!("cannot bind a UDP port for RTP on {media_ip}"))?,
    );
    let media_addr = media_sock.local_addr()?;

    let mut ua = UserAgent::new(UaConfig {
        user: user.to_string(),
        domain: domain.to_string(),
        password,
        transport: kind,
        contact_addr,
        proxy,
        policy,
        media_addr,
        register: a.register,
        register_expires: 600,
        call: a.call.clone(),
        answer: a.answer,
        max_calls: a.max_calls,
        call_duration: duration,
        timers: Timers::default(),
    });
    ua.start(Instant::now());

    let (ended_tx, mut ended_rx) = mpsc::unbounded_channel::<()>();
    let mut media: Option<MediaTask> = None;
    let mut stats = MediaStats::default();
    let mut recording: Vec<i16> = Vec::new();
    let mut in_calls = Duration::ZERO;
    #[cfg(not(unix))]
    let mut sigterm = ();
    #[cfg(unix)]
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot handle SIGTERM")?;
    let deadline = overall.map(|d| tokio::time::Instant::now() + d);
    let mut shutdown_at: Option<tokio::time::Instant> = None;
    let far = || tokio::time::Instant::now() + Duration::from_secs(3600);
    let mut done: Option<Result<(), String>> = None;
    let result: Result<(), String> = 'run: loop {
        if let Some(r) = done.take() {
            break 'run r;
        }
        while let Some(o) = ua.poll_output() {
            match o {
                Output::Send { dest, bytes } => {
                    match send(
                        &mut flows,
                        &dest,
                        bytes.clone(),
                        kind,
                        udp.as_deref(),
                        tls_client.as_ref(),
                        proxy_host.as_deref(),
                        &events_tx,
                    )
                    .await
                    {
                        Ok(Some(local)) if primary.is_some() => {
                            // Without a listener, a new connection is our new Contact.
                            ua.set_contact_addr(local);
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!("send failed: {e:#}");
                            ua.send_failed(Instant::now(), &bytes, &format!("{e:#}"));
                        }
                    }
                }
                Output::Event(Event::Ready) => {
                    writeln!(stdout, "ready")?;
                    stdout.flush()?;
                }
                Output::Event(Event::CallStarted(plan)) => {
                    match &plan.security {
                        Security::Srtp { suite, .. } => {
                            tracing::info!(%suite, "call up, SRTP");
                            eprintln!("voxgate ua: call up, SRTP {suite}");
                        }
                        Security::Unencrypted => {
                            tracing::warn!("call unencrypted");
                            eprintln!("voxgate ua: call unencrypted (the peer does not do SRTP; policy {:?} allows it)", a.encryption);
                        }
                    }
                    if let Some(old) = media.take() {
                        finish_media(old, &mut stats, &mut recording, &mut in_calls).await;
                    }
                    let (stop, stop_rx) = oneshot::channel();
                    let done = tokio::spawn(media_task(
                        media_sock.clone(),
                        plan,
                        play.clone(),
                        stop_rx,
                        ended_tx.clone(),
                    ));
                    media = Some(MediaTask {
                        started: Instant::now(),
                        stop,
                        done,
                    });
                }
                Output::Event(Event::CallEnded) => {
                    if let Some(m) = media.take() {
                        finish_media(m, &mut stats, &mut recording, &mut in_calls).await;
                    }
                }
                // Whatever else is queued is still sent before leaving.
                Output::Event(Event::Done(r)) => done = Some(r),
            }
        }
        if done.is_some() {
            continue;
        }
        let next = ua
            .poll_timeout()
            .map(tokio::time::Instant::from_std)
            .unwrap_or_else(far);
        tokio::select! {
            ev = events.recv() => {
                let now = Instant::now();
                match ev {
                    Some(NetEvent::Opened { id, peer, writer }) => flows.add_stream(id, peer, writer),
                    Some(NetEvent::Message { id, bytes }) => ua.handle_message(now, id, &bytes),
                    Some(NetEvent::Datagram { peer, bytes }) => {
                        // Keep-alives and stray bytes are not SIP.
                        if bytes.iter().any(|b| !b.is_ascii_whitespace()) {
                            let id = flows.udp_flow(peer);
                            ua.handle_message(now, id, &bytes);
                        }
                    }
                    Some(NetEvent::Closed { id }) => {
                        flows.remove(id);
                        // Without a listener the first hop reaches us only over our own
                        // connection: open a new one (and take its address as Contact)
                        // before the core registers again.
                        if let Some((pid, addr, host)) = primary.clone() {
                            if pid == id && done.is_none() {
                                match transport::connect(kind, addr, &host, tls_client.as_ref(), events_tx.clone()).await {
                                    Ok((nid, local, w)) => {
                                        flows.add_stream(nid, addr, w);
                                        primary = Some((nid, addr, host));
                                        ua.set_contact_addr(local);
                                    }
                                    Err(e) => tracing::warn!("reconnecting to {addr}: {e:#}"),
                                }
                            }
                        }
                        ua.flow_closed(Instant::now(), id);
                    }
                    None => break 'run Err("network tasks ended".into()),
                }
            }
            _ = tokio::time::sleep_until(next) => ua.handle_timeout(Instant::now()),
            Some(()) = ended_rx.recv() => {
                tracing::info!("end of --play: hanging up");
                ua.hangup(Instant::now());
            }
            _ = tokio::signal::ctrl_c() => {
                ua.shutdown(Instant::now(), Some("interrupted".into()));
                shutdown_at.get_or_insert(tokio::time::Instant::now() + Duration::from_secs(3));
            }
            _ = terminated(&mut sigterm) => {
                // SIGTERM: hang up and de-register, then exit normally.
                ua.shutdown(Instant::now(), None);
                shutdown_at.get_or_insert(tokio::time::Instant::now() + Duration::from_secs(3));
            }
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(far)), if deadline.is_some() && shutdown_at.is_none() => {
                let secs = overall.map_or(0.0, |d| d.as_secs_f64());
                ua.shutdown(Instant::now(), Some(format!("timed out after {secs} s")));
                shutdown_at = Some(tokio::time::Instant::now() + Duration::from_secs(3));
            }
            _ = tokio::time::sleep_until(shutdown_at.unwrap_or_else(far)), if shutdown_at.is_some() => {
                break 'run Err("gave up waiting for the call to end".into());
            }
        }
    };
    if let Some(m) = media.take() {
        finish_media(m, &mut stats, &mut recording, &mut in_calls).await;
    }
    flows.close(Duration::from_secs(2)).await;
    if let Some(w) = recorder.as_mut() {
        for s in &recording {
            w.write_sample(*s)?;
        }
    }
    if let Some(w) = recorder {
        w.finalize().context("cannot finish the --record WAV")?;
    }
    let log = &ua.log;
    if a.json {
        let summary = Summary {
            calls: log.calls,
            encrypted: log.encrypted.unwrap_or(false),
            suite: if log.encrypted == Some(true) {
                log.suite
            } else {
                None
            },
            rtp_sent: stats.rtp_sent,
            rtp_received: stats.rtp_received,
            srtp_auth_failures: stats.srtp_auth_failures,
            duration_ms: in_calls.as_millis() as u64,
            elapsed_ms: started.elapsed().as_millis() as u64,
            final_status: log.final_status,
            error: result.as_ref().err().cloned(),
        };
        writeln!(stdout, "{}", serde_json::to_string(&summary)?)?;
        stdout.flush()?;
    }
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => bail!("{e}"),
    }
}

async fn finish_media(
    m: MediaTask,
    stats: &mut MediaStats,
    recording: &mut Vec<i16>,
    in_calls: &mut Duration,
) {
    *in_calls += m.started.elapsed();
    let _ = m.stop.send(());
    match m.done.await {
        Ok(Ok(mut s)) => {
            stats.add(&s.stats);
            recording.extend(s.take_recording());
        }
        Ok(Err(e)) => tracing::warn!("media: {e:#}"),
        Err(e) => tracing::warn!("media task: {e}"),
    }
}

#[cfg(unix)]
async fn terminated(s: &mut tokio::signal::unix::Signal) {
    s.recv().await;
}

#[cfg(not(unix))]
async fn terminated(_: &mut ()) {
    std::future::pending::<()>().await
}

async fn resolve(host: &str, port: u16) -> Result<SocketAddr> {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = h.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    tokio::net::lookup_host((h, port))
        .await
        .with_context(|| format!("cannot resolve {h}"))?
        .next()
        .with_context(|| format!("{h}: no address"))
}

/// Sends `bytes` where the core says: on a flow, or to an address/URI over an existing flow to
/// it (connection reuse) or a new connection, whose local address is returned.
#[allow(clippy::too_many_arguments)]
async fn send(
    flows: &mut Flows,
    dest: &Dest,
    bytes: Vec<u8>,
    kind: TransportKind,
    udp: Option<&UdpSocket>,
    tls: Option<&Arc<rustls::ClientConfig>>,
    proxy_host: Option<&str>,
    events: &mpsc::UnboundedSender<NetEvent>,
) -> Result<Option<SocketAddr>> {
    let (addr, host): (SocketAddr, String) = match dest {
        Dest::Flow(id) => {
            if flows.send(*id, udp, bytes).await {
                return Ok(None);
            }
            bail!("the connection is gone");
        }
        Dest::Addr(a) => (
            *a,
            proxy_host.map_or_else(|| a.ip().to_string(), String::from),
        ),
        Dest::Uri(t) => (
            resolve(&t.host, t.port.unwrap_or(kind.default_port())).await?,
            t.host.clone(),
        ),
    };
    let (id, opened) = match flows.by_addr(addr) {
        Some(id) => (id, None),
        None if kind == TransportKind::Udp => (flows.udp_flow(addr), None),
        None => {
            let (id, local, tx) =
                transport::connect(kind, addr, &host, tls, events.clone()).await?;
            flows.add_stream(id, addr, tx);
            (id, Some(local))
        }
    };
    if flows.send(id, udp, bytes).await {
        Ok(opened)
    } else {
        bail!("cannot send to {addr}")
    }
}
