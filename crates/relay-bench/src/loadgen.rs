//! The load generator and receiver: one thread, one event loop.
//!
//! Each stream has a sending socket (bound to `send_from`, connected to `send_to`) and a
//! receiving socket (bound to `recv_on`). The loop sends every packet that is due (see
//! [`crate::schedule`]), then waits on epoll for forwarded packets until the next send is due
//! (epoll_pwait2, nanosecond timeout, 1 ns timer slack) and drains the ready sockets with
//! recvmmsg.
//!
//! Packets are RTP v2, PT 0, 160-byte payload, protected with SRTP; each stream's packet is
//! built once (header, optional RFC 8285 extension, payload) and per send only its sequence
//! number and timestamp are written into a copy before `protect_rtp` in place: no allocation per
//! packet.
//!
//! One-way delay: the send time (CLOCK_REALTIME, read just before `send`) is kept per (stream,
//! sequence number) in a ring; a forwarded packet's sequence number (in the clear in the RTP
//! header) finds it, and the delay is the kernel's receive timestamp (SO_TIMESTAMPNS, same
//! clock) minus that. The kernel stamps the datagram when it arrives at loopback's receive path,
//! so the figure does not include the load generator's own wake-up and processing.
//!
//! A step runs `warmup` seconds (not counted), a `seconds`-long measurement window, then
//! `drain` seconds at the same load (not counted) during which packets sent in the window can
//! still arrive. A packet sent in the window counts as lost when it has not arrived by the end of
//! the drain.

use std::collections::HashSet;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use voxgate_escrow::carrier;
use voxgate_rtp::{SrtpPolicy, SrtpSession};

use crate::procfs::{self, UdpSnmp};
use crate::scenario::{Carrier, Stream};
use crate::schedule::{period_ns, Schedule};
use crate::stats::Histogram;
use crate::sys::{self, Epoll, RecvBatch, SendBatch};

/// G.711 at 20 ms.
pub const PAYLOAD_LEN: usize = 160;
const RTP_HEADER_LEN: usize = 12;
const PT_PCMU: u8 = 0;
/// When the next send is nearer than this, poll rather than sleep.
const SPIN_BELOW_NS: u64 = 200_000;
/// At most this many packets per sendmmsg (and between two looks at the receive sockets).
const MAX_SEND_BATCH: usize = 16;
/// Packets due within this much are sent now, in one batch (at most a few packets apart).
const SEND_AHEAD_NS: u64 = 10_000;
/// Wake up this much before the next send is due (a wake-up is late by up to tens of µs).
const WAKE_MARGIN_NS: u64 = 100_000;

/// What a run does.
#[derive(Debug, Clone)]
pub struct Options {
    /// Number of streams of each step (the first N of the scenario).
    pub steps: Vec<usize>,
    pub seconds: f64,
    pub warmup: f64,
    pub drain: f64,
    /// Send straight to the receive sockets (no relay).
    pub direct: bool,
    /// The relay's process, for its CPU time.
    pub relay_pid: Option<u32>,
    /// Verify the SRTP tag of one received packet in this many per stream (0: never).
    pub verify_every: u32,
    pub label: String,
    pub send_mode: SendMode,
}

/// How the load generator sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendMode {
    /// Raw IPv4 socket and sendmmsg when allowed (root or CAP_NET_RAW) and every stream is
    /// IPv4; else one UDP send per packet.
    Auto,
    /// One `send` per packet on each stream's connected UDP socket (the session_ID IPv4
    /// option set on the socket with IP_OPTIONS).
    Udp,
    /// Whole IPv4/UDP datagrams built here (the session_ID option written into the IP header)
    /// and sent in batches with sendmmsg on one raw socket: fewer system calls per packet.
    Raw,
}

impl SendMode {
    pub fn name(self) -> &'static str {
        match self {
            SendMode::Auto => "auto",
            SendMode::Udp => "udp",
            SendMode::Raw => "raw",
        }
    }
}

/// Per-send ring entry: the send time of one sequence number.
#[derive(Debug, Clone, Copy, Default)]
struct Sent {
    sent_ns: u64,
    seq: u16,
    step: u8,
    flags: u8,
}

const VALID: u8 = 1;
const COUNTED: u8 = 2;
const LAST_SECOND: u8 = 4;
const RECEIVED: u8 = 8;

struct StreamState {
    send: UdpSocket,
    recv: UdpSocket,
    srtp: SrtpSession,
    verify: Option<SrtpSession>,
    /// The plaintext RTP packet (sequence number and timestamp rewritten per send).
    template: Vec<u8>,
    /// For raw sending: the IPv4 header (with the session_ID option when that is the carrier)
    /// and UDP header of every packet of the stream, lengths filled in.
    net_hdr: Vec<u8>,
    dst_v4: Option<std::net::Ipv4Addr>,
    /// Length of the packet in the UDP send buffer.
    udp_len: usize,
    ssrc: u32,
    seq: u16,
    ts: u32,
    ts_step: u32,
    period: u64,
    ring: Box<[Sent]>,
    ring_mask: usize,
    // Counters of the current step.
    sent_win: u32,
    recv_win: u32,
    sent_last: u32,
    recv_last: u32,
    last_rx_seq: Option<u16>,
    rx_any: u64,
}

/// Counters of a step that are not per stream.
#[derive(Debug, Default)]
struct StepCounters {
    duplicates: u64,
    out_of_order: u64,
    stale: u64,
    foreign: u64,
    send_errors: u64,
    last_send_error: Option<String>,
    recv_errors: u64,
    verify_checked: u64,
    verify_failed: u64,
    verify_replayed: u64,
    no_kernel_stamp: u64,
    /// Time spent in polls that found nothing to do, within the window.
    idle_poll_ns: u64,
}

/// Latency figures in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyUs {
    pub min: Option<f64>,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    pub p999: Option<f64>,
    pub max: Option<f64>,
    pub mean: Option<f64>,
}

impl LatencyUs {
    fn of(h: &Histogram) -> LatencyUs {
        let r = |v: Option<f64>| v.map(|x| (x * 10.0).round() / 10.0);
        LatencyUs {
            min: r(h.min_us()),
            p50: r(h.quantile_us(0.5)),
            p90: r(h.quantile_us(0.9)),
            p99: r(h.quantile_us(0.99)),
            p999: r(h.quantile_us(0.999)),
            max: r(h.max_us()),
            mean: r(h.mean_us()),
        }
    }
}

/// Kernel UDP counters over the whole step, warm-up and drain included (system-wide deltas,
/// and drops per socket).
#[derive(Debug, Clone, Serialize)]
pub struct KernelDrops {
    /// Datagrams dropped by the load generator's own sockets (its receive buffers).
    pub loadgen_sockets: u64,
    /// Datagrams dropped by every other UDP socket (the relay's, on this loopback benchmark).
    pub other_sockets: u64,
    pub rcvbuf_errors: u64,
    pub sndbuf_errors: u64,
    pub in_errors: u64,
    /// Datagrams to a port nobody listens on.
    pub no_ports: u64,
}

/// SRTP verification of a sample of the received packets.
#[derive(Debug, Clone, Serialize)]
pub struct Verify {
    pub every: u32,
    pub checked: u64,
    pub failed: u64,
    pub replayed: u64,
}

/// One JSON line per step.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub label: String,
    /// "relay" or "direct" (no relay: the load generator's own ceiling).
    pub mode: &'static str,
    /// A "call" is one stream of `pps_per_stream` packets/s through the relay.
    pub unit: &'static str,
    pub carrier: String,
    pub suite: String,
    /// SRTP packet size (UDP payload).
    pub packet_bytes: usize,
    /// How the load generator sent: "raw" (sendmmsg on a raw socket) or "udp".
    pub send_mode: &'static str,
    pub step: usize,
    pub streams: usize,
    pub pps_per_stream: Option<u32>,
    pub seconds: f64,
    pub offered_pps_target: f64,
    pub offered_pps: f64,
    pub delivered_pps: f64,
    pub sent: u64,
    pub received: u64,
    pub lost: u64,
    pub loss_pct: f64,
    pub duplicates: u64,
    pub out_of_order: u64,
    /// Received packets whose send record was already overwritten (or never sent).
    pub stale: u64,
    /// Received packets with another SSRC, or not RTP.
    pub foreign: u64,
    pub send_errors: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_send_error: Option<String>,
    pub recv_errors: u64,
    /// Streams that sent in the last second of the window and received none of those packets.
    pub abandoned: usize,
    pub streams_with_loss: usize,
    pub min_stream_delivery: f64,
    pub latency_us: LatencyUs,
    /// How late the load generator sent, against its schedule.
    pub send_lateness_us: LatencyUs,
    /// CPU time of the load generator over the window (it polls rather than sleeps when the next
    /// send is near, so this is high even when it has time to spare).
    pub loadgen_cpu_pct: f64,
    /// loadgen_cpu_pct minus the time spent in polls that found nothing to do: the part of its
    /// core the load generator needed.
    pub loadgen_busy_pct: f64,
    pub relay_cpu_pct: Option<f64>,
    /// Each CPU's busy share over the window (all but idle: softirqs included).
    pub cpu_busy_pct: Vec<f64>,
    /// Each CPU's share charged to tasks (user + system), over the window: minus the relay's
    /// or the load generator's own CPU share, what other processes took from that core.
    pub cpu_task_pct: Vec<f64>,
    pub kernel_drops: KernelDrops,
    pub verify: Verify,
    /// Received packets without a kernel timestamp (their delay was taken from user space).
    pub no_kernel_stamp: u64,
    /// The load generator could not keep to its schedule (offered < 99% of the target, or p99
    /// send lateness above 1 ms): the figures then say more about it than about the relay.
    pub loadgen_saturated: bool,
}

/// Cheap snapshots taken at the edges of the measurement window (a few µs: the sends around
/// them keep their pace).
struct Snap {
    mono: u64,
    cpu: u64,
    relay: Option<u64>,
    cores: Vec<procfs::CpuTimes>,
}

impl Snap {
    fn take(relay_pid: Option<u32>) -> Snap {
        Snap {
            relay: relay_pid.and_then(procfs::process_cpu_ns),
            cores: procfs::cpu_times(),
            cpu: sys::self_cpu_ns(),
            mono: sys::mono_ns(),
        }
    }
}

/// Kernel drop counters, read before and after a whole step (reading /proc/net/udp with
/// thousands of sockets takes milliseconds, too long inside the paced loop).
struct DropSnap {
    snmp: UdpSnmp,
    drops: (u64, u64),
}

impl DropSnap {
    fn take(own_ports: &HashSet<u16>) -> DropSnap {
        DropSnap {
            snmp: UdpSnmp::read(),
            drops: procfs::udp_socket_drops(own_ports),
        }
    }
}

/// The load generator, its sockets bound and sessions keyed.
pub struct LoadGen {
    streams: Vec<StreamState>,
    epoll: Epoll,
    own_ports: HashSet<u16>,
    opts: Options,
    carrier: String,
    suite: String,
    packet_bytes: usize,
    send_buf: Vec<u8>,
    rx: RecvBatch,
    raw: Option<(std::os::fd::OwnedFd, SendBatch)>,
    send_mode: SendMode,
}

impl std::fmt::Debug for LoadGen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadGen")
            .field("streams", &self.streams.len())
            .finish_non_exhaustive()
    }
}

/// The plaintext RTP packet of a stream (sequence number and timestamp zero).
pub fn build_template(ssrc: u32, carrier: Carrier, room: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(RTP_HEADER_LEN + 16 + PAYLOAD_LEN + room);
    let x = matches!(carrier, Carrier::RtpExtension { .. });
    p.push(0x80 | if x { 0x10 } else { 0 });
    p.push(PT_PCMU);
    p.extend_from_slice(&[0; 6]);
    p.extend_from_slice(&ssrc.to_be_bytes());
    if let Carrier::RtpExtension { session_id, ext_id } = carrier {
        p.extend_from_slice(&carrier::rtp_extension_block(ext_id, session_id));
    }
    // A fixed, non-constant payload (it is encrypted anyway).
    p.extend((0..PAYLOAD_LEN).map(|i| (i as u8).wrapping_mul(37) ^ 0x55));
    p
}

/// The IPv4 and UDP headers of a stream's datagrams (`payload_len` bytes of SRTP each). The
/// kernel fills the IP identification and checksum of a raw socket's datagrams; the UDP checksum
/// is 0 (none, as RFC 768 allows over IPv4), which loopback traffic does not verify anyway.
pub fn build_net_header(
    src: std::net::SocketAddrV4,
    dst: std::net::SocketAddrV4,
    carrier: Carrier,
    payload_len: usize,
) -> Vec<u8> {
    let opts: Vec<u8> = match carrier {
        Carrier::Ipv4Option { session_id } => carrier::ipv4_options(session_id).to_vec(),
        _ => Vec::new(),
    };
    let ihl = 20 + opts.len();
    let total = ihl + 8 + payload_len;
    let mut h = Vec::with_capacity(ihl + 8);
    h.push(0x40 | (ihl / 4) as u8);
    h.push(0); // TOS
    h.extend_from_slice(&(total as u16).to_be_bytes());
    h.extend_from_slice(&[0, 0]); // identification: the kernel picks one
    h.extend_from_slice(&0x4000u16.to_be_bytes()); // DF, as Linux sets on UDP
    h.push(64); // TTL
    h.push(17); // UDP
    h.extend_from_slice(&[0, 0]); // checksum: the kernel computes it
    h.extend_from_slice(&src.ip().octets());
    h.extend_from_slice(&dst.ip().octets());
    h.extend_from_slice(&opts);
    h.extend_from_slice(&src.port().to_be_bytes());
    h.extend_from_slice(&dst.port().to_be_bytes());
    h.extend_from_slice(&((8 + payload_len) as u16).to_be_bytes());
    h.extend_from_slice(&[0, 0]);
    h
}

fn sock_err(what: &str, addr: SocketAddr, e: io::Error) -> anyhow::Error {
    let hint = match e.kind() {
        io::ErrorKind::AddrInUse => " (address in use: another process or stream has it)",
        io::ErrorKind::AddrNotAvailable => " (not an address of this host)",
        _ => "",
    };
    anyhow::anyhow!("{what} {addr}: {e}{hint}")
}

impl LoadGen {
    /// Binds every socket and keys every session of the streams the largest step uses.
    pub fn new(streams: &[Stream], opts: Options) -> Result<LoadGen> {
        let max = opts.steps.iter().copied().max().unwrap_or(0);
        if max == 0 {
            bail!("no step has any stream");
        }
        if max > streams.len() {
            bail!(
                "a step asks for {max} streams, the scenario has {}",
                streams.len()
            );
        }
        if opts.steps.len() > 250 {
            bail!("at most 250 steps");
        }
        let want_fds = 2 * max as u64 + 64;
        let got = sys::raise_nofile(want_fds).context("raising RLIMIT_NOFILE")?;
        if got < want_fds {
            bail!("{max} streams need {want_fds} open files, the limit is {got} (run as root or raise `ulimit -Hn`)");
        }
        if let Err(e) = sys::set_timer_slack_ns(1) {
            eprintln!("relay-loadgen: warning: could not set the timer slack ({e}); pacing will be coarser");
        }
        let all_v4 = streams[..max]
            .iter()
            .all(|s| s.send_from.is_ipv4() && s.send_to.is_ipv4() && s.recv_on.is_ipv4());
        let raw = match opts.send_mode {
            SendMode::Udp => None,
            SendMode::Raw if !all_v4 => bail!("--send-mode raw needs IPv4 streams"),
            SendMode::Raw => Some(
                sys::raw_ipv4_socket()
                    .context("raw IPv4 socket (--send-mode raw needs root or CAP_NET_RAW)")?,
            ),
            SendMode::Auto if !all_v4 => None,
            SendMode::Auto => sys::raw_ipv4_socket().ok(),
        };
        let send_mode = if raw.is_some() {
            SendMode::Raw
        } else {
            SendMode::Udp
        };
        if let Some(fd) = &raw {
            sys::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, 4 << 20)
                .context("SO_SNDBUF")?;
        }
        let epoll = Epoll::new().context("epoll_create1")?;
        let mut states = Vec::with_capacity(max);
        let mut own_ports = HashSet::new();
        let first = &streams[0];
        let carrier_kind = first.carrier.kind();
        let carrier = if streams[..max]
            .iter()
            .all(|s| s.carrier.kind() == carrier_kind)
        {
            carrier_kind.name().to_string()
        } else {
            "mixed".to_string()
        };
        let suite = first.key.profile().name().to_string();
        let mut packet_bytes = 0;
        for (i, s) in streams[..max].iter().enumerate() {
            let st = Self::open_stream(i, s, &opts).with_context(|| format!("stream {i}"))?;
            epoll
                .add_readable(st.recv.as_raw_fd(), i as u64)
                .with_context(|| format!("stream {i}: epoll_ctl"))?;
            own_ports.insert(s.send_from.port());
            own_ports.insert(s.recv_on.port());
            packet_bytes = st.template.len() + st.srtp.srtp_overhead();
            states.push(st);
        }
        Ok(LoadGen {
            streams: states,
            epoll,
            own_ports,
            opts,
            carrier,
            suite,
            packet_bytes,
            send_buf: vec![0; RecvBatch::BUF],
            rx: RecvBatch::new(),
            raw: raw.map(|fd| (fd, SendBatch::new())),
            send_mode,
        })
    }

    fn open_stream(i: usize, s: &Stream, opts: &Options) -> Result<StreamState> {
        let send = UdpSocket::bind(s.send_from).map_err(|e| sock_err("bind", s.send_from, e))?;
        let dst = if opts.direct { s.recv_on } else { s.send_to };
        if let Carrier::Ipv4Option { session_id } = s.carrier {
            voxgate_netio::set_ip_options(&send, &carrier::ipv4_options(session_id))
                .context("setting the session_ID IPv4 option")?;
        }
        send.connect(dst).map_err(|e| sock_err("connect", dst, e))?;
        send.set_nonblocking(true).context("O_NONBLOCK")?;
        let recv = UdpSocket::bind(s.recv_on).map_err(|e| sock_err("bind", s.recv_on, e))?;
        recv.set_nonblocking(true).context("O_NONBLOCK")?;
        sys::setsockopt_int(&recv, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1)
            .context("SO_TIMESTAMPNS")?;
        let srtp = SrtpSession::new(SrtpPolicy::new(s.key.clone())).context("SRTP session")?;
        let verify = if opts.verify_every > 0 {
            Some(SrtpSession::new(SrtpPolicy::new(s.key.clone())).context("SRTP session")?)
        } else {
            None
        };
        let ring_len = (s.pps as usize * 4).next_power_of_two().max(64);
        // Start sequence numbers and timestamps somewhere other than 0, as real senders do.
        let mix = (s.ssrc as u64 ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))
            .wrapping_mul(0xbf58_476d_1ce4_e5b9);
        let template = build_template(s.ssrc, s.carrier, srtp.srtp_overhead());
        let (net_hdr, dst_v4) = match (s.send_from, dst) {
            (SocketAddr::V4(src), SocketAddr::V4(d)) => (
                build_net_header(src, d, s.carrier, template.len() + srtp.srtp_overhead()),
                Some(*d.ip()),
            ),
            _ => (Vec::new(), None),
        };
        Ok(StreamState {
            send,
            recv,
            template,
            net_hdr,
            dst_v4,
            udp_len: 0,
            srtp,
            verify,
            ssrc: s.ssrc,
            seq: (mix >> 16) as u16,
            ts: (mix >> 32) as u32,
            ts_step: (8000 / s.pps).max(1),
            period: period_ns(s.pps),
            ring: vec![Sent::default(); ring_len].into_boxed_slice(),
            ring_mask: ring_len - 1,
            sent_win: 0,
            recv_win: 0,
            sent_last: 0,
            recv_last: 0,
            last_rx_seq: None,
            rx_any: 0,
        })
    }

    /// Runs every step; `report` gets each step's result as it finishes.
    pub fn run(&mut self, mut report: impl FnMut(&StepReport) -> Result<()>) -> Result<()> {
        let steps = self.opts.steps.clone();
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
        let mut ready = Vec::with_capacity(1024);
        for (k, &n) in steps.iter().enumerate() {
            let r = self.run_step(k, n, &mut events, &mut ready)?;
            report(&r)?;
        }
        Ok(())
    }

    fn run_step(
        &mut self,
        k: usize,
        n: usize,
        events: &mut [libc::epoll_event],
        ready: &mut Vec<u64>,
    ) -> Result<StepReport> {
        let step_tag = (k % 251) as u8 + 1;
        let mut c = StepCounters::default();
        let mut latency = Histogram::new();
        let mut lateness = Histogram::new();
        for s in &mut self.streams {
            s.sent_win = 0;
            s.recv_win = 0;
            s.sent_last = 0;
            s.recv_last = 0;
        }
        let periods: Vec<u64> = self.streams[..n].iter().map(|s| s.period).collect();
        let drops_before = DropSnap::take(&self.own_ports);
        let t0 = sys::mono_ns();
        let secs_ns = |s: f64| (s * 1e9) as u64;
        let win_start = t0 + secs_ns(self.opts.warmup);
        let win_end = win_start + secs_ns(self.opts.seconds);
        let last_start = win_end - secs_ns(self.opts.seconds.min(1.0));
        let end = win_end + secs_ns(self.opts.drain);
        let mut sched = Schedule::new(t0, &periods);
        let mut snap_start: Option<Snap> = None;
        let mut snap_end: Option<Snap> = None;
        loop {
            let now = sys::mono_ns();
            if snap_start.is_none() && now >= win_start {
                snap_start = Some(Snap::take(self.opts.relay_pid));
            }
            if snap_end.is_none() && now >= win_end {
                snap_end = Some(Snap::take(self.opts.relay_pid));
            }
            if now >= end {
                break;
            }
            // Sends that are due (or due within SEND_AHEAD_NS), at most a batch before looking
            // at receives again.
            let mut budget = MAX_SEND_BATCH;
            let mut batch: [Pending; MAX_SEND_BATCH] = [Pending::default(); MAX_SEND_BATCH];
            while budget > 0 {
                let Some((t, i)) = sched.pop_due(now + SEND_AHEAD_NS) else {
                    break;
                };
                let k = MAX_SEND_BATCH - budget;
                budget -= 1;
                let mono = sys::mono_ns();
                let flags = if (win_start..win_end).contains(&mono) {
                    COUNTED | if mono >= last_start { LAST_SECOND } else { 0 }
                } else {
                    0
                };
                if flags & COUNTED != 0 {
                    lateness.record(mono.saturating_sub(t));
                }
                batch[k] = Pending {
                    stream: i as u32,
                    seq: 0,
                    flags,
                    ok: false,
                };
                self.prepare(k, &mut batch[k], &mut c);
                if self.raw.is_none() {
                    self.send_udp(&batch[k], step_tag, &mut c);
                }
            }
            let queued = MAX_SEND_BATCH - budget;
            if self.raw.is_some() && queued > 0 {
                self.send_raw(&batch[..queued], step_tag, &mut c);
            }
            // Wait for forwarded packets until the next send (or a window edge) is due. Close
            // to it, poll instead of sleeping: a sleep and wake-up costs several µs of CPU (more
            // in a VM) and wakes late.
            let sent_some = queued > 0;
            let timeout = if budget == 0 {
                0
            } else {
                let mut next = end;
                if let Some((t, _)) = sched.peek() {
                    next = next.min(t);
                }
                if snap_start.is_none() {
                    next = next.min(win_start);
                } else if snap_end.is_none() {
                    next = next.min(win_end);
                }
                let d = next.saturating_sub(sys::mono_ns());
                if d > SPIN_BELOW_NS {
                    d - WAKE_MARGIN_NS
                } else {
                    0
                }
            };
            self.epoll
                .wait(events, timeout, ready)
                .context("epoll_pwait2")?;
            if timeout == 0 && !sent_some && ready.is_empty() {
                // An idle poll: time the load generator had to spare.
                let t = sys::mono_ns();
                if (win_start..win_end).contains(&t) {
                    c.idle_poll_ns += t - now;
                }
            }
            for &tok in ready.iter() {
                self.drain_socket(tok as usize, step_tag, &mut c, &mut latency);
            }
        }
        let (Some(a), Some(b)) = (snap_start, snap_end) else {
            bail!("internal: measurement window not observed");
        };
        let drops_after = DropSnap::take(&self.own_ports);
        Ok(self.step_report(
            k,
            n,
            &c,
            (&latency, &lateness),
            (&a, &b),
            (&drops_before, &drops_after),
        ))
    }

    /// Builds the next packet of stream `p.stream`: into the raw batch's slot `k` (with its IP
    /// and UDP headers), or into the UDP send buffer.
    fn prepare(&mut self, k: usize, p: &mut Pending, c: &mut StepCounters) {
        let s = &mut self.streams[p.stream as usize];
        let (buf, off) = match self.raw.as_mut() {
            Some((_, b)) => (&mut b.buf_mut(k)[..], s.net_hdr.len()),
            None => (&mut self.send_buf[..], 0),
        };
        let len = s.template.len();
        buf[..off].copy_from_slice(&s.net_hdr[..off]);
        let rtp = &mut buf[off..];
        rtp[..len].copy_from_slice(&s.template);
        let seq = s.seq;
        rtp[2..4].copy_from_slice(&seq.to_be_bytes());
        rtp[4..8].copy_from_slice(&s.ts.to_be_bytes());
        s.seq = s.seq.wrapping_add(1);
        s.ts = s.ts.wrapping_add(s.ts_step);
        p.seq = seq;
        match s.srtp.protect_rtp(rtp, len) {
            Ok(out_len) => {
                p.ok = true;
                if let (Some((_, b)), Some(dst)) = (self.raw.as_mut(), s.dst_v4) {
                    b.set(k, off + out_len, dst);
                } else {
                    s.udp_len = out_len;
                }
            }
            Err(e) => {
                p.ok = false;
                c.send_errors += 1;
                c.last_send_error = Some(format!("SRTP protect: {e}"));
            }
        }
    }

    fn send_udp(&mut self, p: &Pending, step_tag: u8, c: &mut StepCounters) {
        if !p.ok {
            return;
        }
        let s = &mut self.streams[p.stream as usize];
        let sent_ns = sys::realtime_ns();
        let r = s.send.send(&self.send_buf[..s.udp_len]).map(|_| ());
        record_send(s, p, sent_ns, step_tag, r.err(), c);
    }

    fn send_raw(&mut self, batch: &[Pending], step_tag: u8, c: &mut StepCounters) {
        let Some((fd, b)) = self.raw.as_mut() else {
            return;
        };
        // The kernel sends the batch's datagrams one after the other (each through loopback
        // into the relay's socket before the next): the send time of datagram k is taken
        // between the clock readings before and after the call, in proportion.
        let before = sys::realtime_ns();
        let (n, err) = b.send(fd.as_raw_fd(), batch.len());
        let after = sys::realtime_ns();
        let per = after.saturating_sub(before) / (n.max(1) as u64);
        let mut err = err.map(|e| e.to_string());
        for (k, p) in batch.iter().enumerate() {
            let sent_ns = before + per * k as u64;
            if !p.ok {
                continue;
            }
            let e = if k < n {
                None
            } else {
                Some(io::Error::other(
                    err.take().unwrap_or_else(|| "not sent".into()),
                ))
            };
            record_send(
                &mut self.streams[p.stream as usize],
                p,
                sent_ns,
                step_tag,
                e,
                c,
            );
        }
    }

    fn drain_socket(
        &mut self,
        i: usize,
        step_tag: u8,
        c: &mut StepCounters,
        latency: &mut Histogram,
    ) {
        let Some(fd) = self.streams.get(i).map(|s| s.recv.as_raw_fd()) else {
            return;
        };
        loop {
            let n = match self.rx.recv(fd) {
                Ok(n) => n,
                Err(_) => {
                    c.recv_errors += 1;
                    return;
                }
            };
            let fallback = if n > 0 { sys::realtime_ns() } else { 0 };
            for j in 0..n {
                let stamp = match self.rx.stamp(j) {
                    Some(t) => t,
                    None => {
                        c.no_kernel_stamp += 1;
                        fallback
                    }
                };
                let verify_every = self.opts.verify_every;
                let pkt = self.rx.get_mut(j);
                on_receive(
                    &mut self.streams[i],
                    pkt,
                    stamp,
                    step_tag,
                    verify_every,
                    c,
                    latency,
                );
            }
            if n < RecvBatch::BATCH {
                return;
            }
        }
    }

    fn step_report(
        &self,
        k: usize,
        n: usize,
        c: &StepCounters,
        (latency, lateness): (&Histogram, &Histogram),
        (a, b): (&Snap, &Snap),
        (da, db): (&DropSnap, &DropSnap),
    ) -> StepReport {
        let active = &self.streams[..n];
        let window_s = (b.mono.saturating_sub(a.mono)) as f64 / 1e9;
        let window_s = if window_s > 0.0 {
            window_s
        } else {
            self.opts.seconds
        };
        let sent: u64 = active.iter().map(|s| u64::from(s.sent_win)).sum();
        let received: u64 = active.iter().map(|s| u64::from(s.recv_win)).sum();
        let lost = sent.saturating_sub(received);
        let abandoned = active
            .iter()
            .filter(|s| s.sent_last > 0 && s.recv_last == 0)
            .count();
        let streams_with_loss = active.iter().filter(|s| s.recv_win < s.sent_win).count();
        let min_stream_delivery = active
            .iter()
            .filter(|s| s.sent_win > 0)
            .map(|s| f64::from(s.recv_win.min(s.sent_win)) / f64::from(s.sent_win))
            .fold(1.0f64, f64::min);
        let pps: Vec<u64> = active.iter().map(|s| 1_000_000_000 / s.period).collect();
        let offered_target: f64 = active.iter().map(|s| 1e9 / s.period as f64).sum();
        let uniform = pps.windows(2).all(|w| w[0] == w[1]);
        let offered = sent as f64 / window_s;
        let pct = |x: u64, total: u64| {
            if total == 0 {
                0.0
            } else {
                (x as f64 * 100.0 / total as f64 * 1e4).round() / 1e4
            }
        };
        let cpu_pct = |d: u64| (d as f64 / (window_s * 1e9) * 100.0 * 10.0).round() / 10.0;
        let snmp = db.snmp.since(da.snmp);
        let cores = procfs::cpu_pct(&a.cores, &b.cores);
        let lateness_us = LatencyUs::of(lateness);
        let saturated =
            offered < 0.99 * offered_target || lateness_us.p99.is_some_and(|p| p > 1000.0);
        StepReport {
            label: self.opts.label.clone(),
            mode: if self.opts.direct { "direct" } else { "relay" },
            unit: "call = one stream of pps_per_stream SRTP packets/s through the relay",
            carrier: self.carrier.clone(),
            suite: self.suite.clone(),
            packet_bytes: self.packet_bytes,
            send_mode: self.send_mode.name(),
            step: k + 1,
            streams: n,
            pps_per_stream: if uniform {
                pps.first().map(|&p| p as u32)
            } else {
                None
            },
            seconds: (window_s * 1000.0).round() / 1000.0,
            offered_pps_target: offered_target.round(),
            offered_pps: offered.round(),
            delivered_pps: (received as f64 / window_s).round(),
            sent,
            received,
            lost,
            loss_pct: pct(lost, sent),
            duplicates: c.duplicates,
            out_of_order: c.out_of_order,
            stale: c.stale,
            foreign: c.foreign,
            send_errors: c.send_errors,
            last_send_error: c.last_send_error.clone(),
            recv_errors: c.recv_errors,
            abandoned,
            streams_with_loss,
            min_stream_delivery: (min_stream_delivery * 1e4).round() / 1e4,
            latency_us: LatencyUs::of(latency),
            send_lateness_us: lateness_us,
            loadgen_cpu_pct: cpu_pct(b.cpu.saturating_sub(a.cpu)),
            loadgen_busy_pct: cpu_pct(b.cpu.saturating_sub(a.cpu).saturating_sub(c.idle_poll_ns)),
            relay_cpu_pct: match (a.relay, b.relay) {
                (Some(x), Some(y)) => Some(cpu_pct(y.saturating_sub(x))),
                _ => None,
            },
            cpu_busy_pct: cores.iter().map(|c| c.0).collect(),
            cpu_task_pct: cores.iter().map(|c| c.1).collect(),
            kernel_drops: KernelDrops {
                loadgen_sockets: db.drops.0.saturating_sub(da.drops.0),
                other_sockets: db.drops.1.saturating_sub(da.drops.1),
                rcvbuf_errors: snmp.rcvbuf_errors,
                sndbuf_errors: snmp.sndbuf_errors,
                in_errors: snmp.in_errors,
                no_ports: snmp.no_ports,
            },
            verify: Verify {
                every: self.opts.verify_every,
                checked: c.verify_checked,
                failed: c.verify_failed,
                replayed: c.verify_replayed,
            },
            no_kernel_stamp: c.no_kernel_stamp,
            loadgen_saturated: saturated,
        }
    }
}

/// A packet built for sending.
#[derive(Debug, Clone, Copy, Default)]
struct Pending {
    stream: u32,
    seq: u16,
    flags: u8,
    /// Built (SRTP protect succeeded).
    ok: bool,
}

/// Books a packet sent (or not: `err`) at `sent_ns` in its stream's ring and counters.
fn record_send(
    s: &mut StreamState,
    p: &Pending,
    sent_ns: u64,
    step_tag: u8,
    err: Option<io::Error>,
    c: &mut StepCounters,
) {
    let slot = usize::from(p.seq) & s.ring_mask;
    if p.flags & COUNTED != 0 {
        // A packet the load generator failed to send counts as sent and lost: the failure is
        // visible in send_errors.
        s.sent_win += 1;
        if p.flags & LAST_SECOND != 0 {
            s.sent_last += 1;
        }
    }
    match err {
        None => {
            s.ring[slot] = Sent {
                sent_ns,
                seq: p.seq,
                step: step_tag,
                flags: VALID | p.flags,
            };
        }
        Some(e) => {
            // The slot may still hold an older packet: make sure a late copy of it is not
            // taken for this one.
            s.ring[slot].flags = 0;
            c.send_errors += 1;
            if c.last_send_error.is_none() {
                c.last_send_error = Some(format!("send: {e}"));
            }
        }
    }
}

/// One forwarded packet of stream `s`, received at `stamp` (CLOCK_REALTIME ns).
fn on_receive(
    s: &mut StreamState,
    pkt: &mut [u8],
    stamp: u64,
    step_tag: u8,
    verify_every: u32,
    c: &mut StepCounters,
    latency: &mut Histogram,
) {
    if pkt.len() < RTP_HEADER_LEN || pkt[0] >> 6 != 2 || pkt[8..12] != s.ssrc.to_be_bytes() {
        c.foreign += 1;
        return;
    }
    s.rx_any += 1;
    let seq = u16::from_be_bytes([pkt[2], pkt[3]]);
    if let Some(last) = s.last_rx_seq {
        let d = seq.wrapping_sub(last) as i16;
        if d < 0 {
            c.out_of_order += 1;
        } else if d > 0 {
            s.last_rx_seq = Some(seq);
        }
    } else {
        s.last_rx_seq = Some(seq);
    }
    let e = &mut s.ring[usize::from(seq) & s.ring_mask];
    if e.flags & VALID == 0 || e.seq != seq {
        c.stale += 1;
        return;
    }
    if e.flags & RECEIVED != 0 {
        c.duplicates += 1;
        return;
    }
    e.flags |= RECEIVED;
    if e.step == step_tag && e.flags & COUNTED != 0 {
        s.recv_win += 1;
        if e.flags & LAST_SECOND != 0 {
            s.recv_last += 1;
        }
        latency.record(stamp.saturating_sub(e.sent_ns));
    }
    if let Some(v) = s.verify.as_mut() {
        if s.rx_any % u64::from(verify_every) == 1 || verify_every == 1 {
            c.verify_checked += 1;
            let len = pkt.len();
            match v.unprotect_rtp(pkt, len) {
                Ok(_) => {}
                Err(
                    voxgate_rtp::Error::Replayed { .. } | voxgate_rtp::Error::ReplayTooOld { .. },
                ) => c.verify_replayed += 1,
                Err(_) => c.verify_failed += 1,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_layout() {
        let plain = build_template(0x0102_0304, Carrier::None, 10);
        assert_eq!(plain.len(), 12 + PAYLOAD_LEN);
        assert_eq!(&plain[..2], &[0x80, 0]);
        assert_eq!(&plain[8..12], &[1, 2, 3, 4]);
        let ext = build_template(
            7,
            Carrier::RtpExtension {
                session_id: 0xfeed_f00d_1234_5678,
                ext_id: 5,
            },
            10,
        );
        assert_eq!(ext.len(), 12 + 16 + PAYLOAD_LEN);
        assert_eq!(ext[0], 0x90);
        assert_eq!(
            carrier::session_id_from_rtp(&ext, 5),
            Ok(Some(0xfeed_f00d_1234_5678))
        );
    }

    #[test]
    fn net_header_layout() {
        let src = "127.0.0.1:10001".parse().unwrap();
        let dst = "127.0.0.2:22001".parse().unwrap();
        let plain = build_net_header(src, dst, Carrier::None, 182);
        assert_eq!(plain.len(), 28);
        assert_eq!(plain[0], 0x45);
        assert_eq!(u16::from_be_bytes([plain[2], plain[3]]), 28 + 182);
        assert_eq!(plain[9], 17);
        assert_eq!(&plain[12..20], &[127, 0, 0, 1, 127, 0, 0, 2]);
        assert_eq!(u16::from_be_bytes([plain[20], plain[21]]), 10001);
        assert_eq!(u16::from_be_bytes([plain[22], plain[23]]), 22001);
        assert_eq!(u16::from_be_bytes([plain[24], plain[25]]), 8 + 182);
        let opt = build_net_header(src, dst, Carrier::Ipv4Option { session_id: 42 }, 182);
        assert_eq!(opt.len(), 40);
        assert_eq!(opt[0], 0x48);
        assert_eq!(u16::from_be_bytes([opt[2], opt[3]]), 40 + 182);
        assert_eq!(
            carrier::ipv4_options_of(&opt),
            Ok(&carrier::ipv4_options(42)[..])
        );
        assert_eq!(u16::from_be_bytes([opt[32], opt[33]]), 10001);
    }
}
