//! The service-provider gateway's media relay, sans-I/O.
//!
//! **Control plane** ([`RelayAnchor`], a [`MediaAnchor`] behind the SPG's proxy): every SDP
//! body that crosses the SPG is rewritten so that media flows through the relay, as session
//! border controllers and rtpengine do. Each media stream of a call gets two port pairs, one
//! facing each side: the caller sends to the caller-facing port and the relay forwards from
//! the callee-facing port to the callee, and back. Keys (`a=crypto`) are left as they are: the
//! SPG relays SRTP, it does not decrypt it. The relay learns each side's media address from
//! that side's SDP, and which trusted peer (voice gateway or peer SPG) is on each side.
//!
//! **Escrow check** ([`CallTable::check_key_update`]): a key_update is accepted only from a
//! gateway that is a party to the call, and only for streams that are the call's real media
//! paths through this SPG (the gateway's media address from its SDP, the relay port facing
//! it), with the SSRC its SDP announced, if it announced one.
//!
//! **Data plane** ([`Relay`]): per datagram, in place, no allocation: the port it arrived on
//! gives the leg; the carrier gives the session_ID (IPv4 option, else the RTP header extension
//! the leg's SDP negotiated); the escrow gate checks the session, the 5-tuple and the SRTP tag
//! with the escrowed key; the source must be the leg's peer; then the datagram is forwarded
//! from the opposite leg's port to the other side.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use voxgate_escrow::carrier::{session_id_from_ipv4_options, session_id_from_rtp};
use voxgate_escrow::gate::{DropReason, GateError, MediaGate, Mode, Sampling, Verdict};
use voxgate_escrow::server::Session;
use voxgate_escrow::wire::{Direction, KeyUpdate};
use voxgate_sip::anchor::{MediaAnchor, Refusal, SdpContext, Side};
use voxgate_sip::sdp::SessionDescription;

use crate::ports::PortPool;
use crate::sdp_edit::{anchor_media, media_info, set_session_address};

/// One direction of a stream at the relay: datagrams arriving on a port from `peer` go out
/// of `out_port` to `dst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leg {
    /// The only source accepted (the side's media address from its SDP); `None` until known.
    pub peer: Option<SocketAddr>,
    pub out_port: u16,
    /// Where to forward; `None` until the other side's SDP is known.
    pub dst: Option<SocketAddr>,
    /// The RTP header extension id carrying the session_ID on this leg, if negotiated.
    pub ext_id: Option<u8>,
    /// Set while the call is intercepted: forwarded datagrams are also copied to the
    /// lawful-interception tap ([`Relay::tap`]).
    pub tap: Option<Tap>,
}

/// How a leg's datagrams are copied to the lawful-interception tap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tap {
    /// The intercepted call's tap id (chosen by the SPG).
    pub id: u32,
    /// Which 5-tuple identifies the datagram to the mediation: the one it arrived with (it
    /// comes from a voice gateway of this SPG, whose escrowed keys name that tuple) or the one
    /// it leaves with (it goes to one).
    pub inbound: bool,
}

/// What the data plane must learn, in order.
#[derive(Debug)]
pub enum RelayCommand {
    /// Sets (or, with `None`, clears) the leg of a dedicated port.
    Leg { port: u16, leg: Option<Leg> },
    /// Sets (or clears) the leg of `peer` on the shared port `port`.
    SharedLeg {
        port: u16,
        peer: SocketAddr,
        leg: Option<Leg>,
    },
    /// Arms the gate for an escrowed session (or re-arms it after a rekey).
    Arm(Box<Session>),
    /// The session ended: its keys are dropped (and wiped).
    Disarm(u64),
}

/// Where the control plane's commands go (a channel to the relay's thread, or a Vec in tests).
pub type CommandSink = Box<dyn FnMut(RelayCommand) + Send>;

/// Media state of one stream (one `m=` line) of a call.
#[derive(Debug, Clone)]
struct StreamMedia {
    /// Indexed by [`side_index`]: the (even) port that side sends its RTP to.
    ports: [u16; 2],
    /// Whether that port is the shared one (else a pair of the pool, the call's own).
    shared: [bool; 2],
    rtp: [Option<SocketAddr>; 2],
    rtcp: [Option<SocketAddr>; 2],
    ext_id: [Option<u8>; 2],
    ssrc: [Option<u32>; 2],
    /// The shared-port legs installed for each side: (port, peer) of RTP and RTCP.
    installed: [Vec<(u16, SocketAddr)>; 2],
}

/// Media state of a call.
#[derive(Debug, Clone, Default)]
struct CallMedia {
    streams: Vec<Option<StreamMedia>>,
    /// The trusted peer (voice gateway, peer SPG) on each side.
    parties: [Option<String>; 2],
}

fn side_index(s: Side) -> usize {
    match s {
        Side::Caller => 0,
        Side::Callee => 1,
    }
}

/// The calls through the relay, shared between the proxy (which writes it) and the escrow
/// server (which checks key_updates against it).
#[derive(Debug)]
pub struct CallTable {
    relay_ip: IpAddr,
    calls: HashMap<String, CallMedia>,
}

impl CallTable {
    pub fn new(relay_ip: IpAddr) -> Self {
        CallTable {
            relay_ip,
            calls: HashMap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.calls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// Whether `gateway` (the name its escrow certificate matched) may escrow these streams:
    /// it must be a party to the call, and every stream must be one of the call's media paths
    /// on its side (`Send`: from its SDP address to the relay port facing it; `Recv`: back),
    /// with the SSRC its SDP announced when it announced one.
    pub fn check_key_update(&self, gateway: &str, k: &KeyUpdate) -> Result<(), String> {
        let Some(call) = self.calls.get(&k.call_id) else {
            return Err("no such call through this SPG".into());
        };
        let sides: Vec<usize> = (0..2)
            .filter(|i| {
                call.parties[*i]
                    .as_deref()
                    .is_some_and(|p| p.eq_ignore_ascii_case(gateway))
            })
            .collect();
        if sides.is_empty() {
            return Err("gateway is not party to this call".into());
        }
        for (n, s) in k.streams.iter().enumerate() {
            let ok = sides.iter().any(|&side| {
                call.streams.iter().flatten().any(|m| {
                    let here_rtp = SocketAddr::new(self.relay_ip, m.ports[side]);
                    let here_rtcp = SocketAddr::new(self.relay_ip, m.ports[side].wrapping_add(1));
                    let paths = [(m.rtp[side], here_rtp), (m.rtcp[side], here_rtcp)];
                    let path_ok = paths.iter().any(|(theirs, here)| match s.direction {
                        Direction::Send => *theirs == Some(s.src.0) && *here == s.dst.0,
                        Direction::Receive => *here == s.src.0 && *theirs == Some(s.dst.0),
                    });
                    let ssrc_ok = match (s.direction, m.ssrc[side], s.ssrc) {
                        (Direction::Send, Some(announced), Some(given)) => announced == given,
                        _ => true,
                    };
                    path_ok && ssrc_ok
                })
            });
            if !ok {
                return Err(format!(
                    "stream {n} ({} -> {}) is not a media path of this call",
                    s.src.0, s.dst.0
                ));
            }
        }
        Ok(())
    }
}

/// Relay settings.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// The address in rewritten SDP (the relay's sockets are bound to it).
    pub address: IpAddr,
    pub first_port: u16,
    pub port_count: u16,
    /// The trusted peers (voice gateways) whose side of a call is anchored on the relay's
    /// shared port pair (the first pair of the range) instead of a pair of its own: the relay
    /// tells their streams apart by source address, so that one socket (and one system call
    /// per batch) serves all of them. Peer SPGs, whose calls all come from one address, get
    /// pairs of their own. Empty: every side gets its own pair.
    pub shared_for: Vec<String>,
}

impl RelayConfig {
    /// The shared pair's RTP port, when there is one.
    pub fn shared_port(&self) -> Option<u16> {
        if self.shared_for.is_empty() {
            return None;
        }
        let even = self.first_port.checked_add(self.first_port % 2)?;
        (u32::from(even) + 1 < u32::from(self.first_port) + u32::from(self.port_count))
            .then_some(even)
    }

    fn pool(&self) -> PortPool {
        match self.shared_port() {
            Some(p) => {
                let used = p + 2 - self.first_port;
                PortPool::new(p + 2, self.port_count.saturating_sub(used))
            }
            None => PortPool::new(self.first_port, self.port_count),
        }
    }
}

/// The SPG's [`MediaAnchor`].
pub struct RelayAnchor {
    cfg: RelayConfig,
    pool: PortPool,
    table: Arc<Mutex<CallTable>>,
    sink: CommandSink,
    /// Legs on the shared port pair, keyed like the data plane keys them (port, source), and
    /// the call and stream (media line) each belongs to.
    shared_peers: HashMap<(u16, SocketAddr), (String, usize)>,
    /// Calls being intercepted, and their tap id.
    taps: HashMap<String, u32>,
    /// This SPG's voice gateways (whose side of a call the tap reports).
    gateways: Vec<String>,
}

impl std::fmt::Debug for RelayAnchor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayAnchor")
            .field("cfg", &self.cfg)
            .field("free_pairs", &self.pool.available())
            .finish_non_exhaustive()
    }
}

impl RelayAnchor {
    pub fn new(cfg: RelayConfig, table: Arc<Mutex<CallTable>>, sink: CommandSink) -> Self {
        RelayAnchor {
            pool: cfg.pool(),
            cfg,
            table,
            sink,
            shared_peers: HashMap::new(),
            taps: HashMap::new(),
            gateways: Vec::new(),
        }
    }

    fn may_share(&self, peer: Option<&str>) -> bool {
        self.cfg.shared_port().is_some()
            && peer.is_some_and(|p| {
                self.cfg
                    .shared_for
                    .iter()
                    .any(|g| g.eq_ignore_ascii_case(p))
            })
    }

    /// Port pairs still free.
    pub fn free_pairs(&self) -> usize {
        self.pool.available()
    }

    /// Names this SPG's voice gateways (trusted peer names): a tapped datagram is reported
    /// with the 5-tuple on a gateway's side, the one its escrowed keys name.
    pub fn set_gateways(&mut self, gateways: Vec<String>) {
        self.gateways = gateways;
    }

    fn is_gateway(&self, party: Option<&str>) -> bool {
        party.is_some_and(|p| self.gateways.iter().any(|g| g.eq_ignore_ascii_case(p)))
    }

    /// Starts (`Some`) or stops (`None`) copying a call's media to the lawful-interception
    /// tap: every leg of the call, now and after any re-offer, carries the tap id. Returns
    /// whether the call is known (a call not yet seen gets the tap on its first legs).
    pub fn set_tap(&mut self, call_id: &str, tap: Option<u32>) -> bool {
        match tap {
            Some(t) => self.taps.insert(call_id.to_string(), t),
            None => self.taps.remove(call_id),
        };
        let table = self.table.clone();
        let mut t = table.lock().unwrap_or_else(|p| p.into_inner());
        let Some(call) = t.calls.get_mut(call_id) else {
            return false;
        };
        let parties = call.parties.clone();
        for (i, st) in call.streams.iter_mut().enumerate() {
            if let Some(st) = st {
                self.legs_of(call_id, i, &parties, st);
            }
        }
        true
    }

    /// Sends the data plane the legs of a stream (both sides, RTP and RTCP); a shared side's
    /// legs are keyed by its address, and those it had under an old address are cleared.
    fn legs_of(
        &mut self,
        call_id: &str,
        stream: usize,
        parties: &[Option<String>; 2],
        m: &mut StreamMedia,
    ) {
        for side in 0..2 {
            let other = 1 - side;
            let tap = self.taps.get(call_id).map(|&id| Tap {
                id,
                inbound: self.is_gateway(parties[side].as_deref())
                    || !self.is_gateway(parties[other].as_deref()),
            });
            let mut keys = Vec::new();
            for (rtcp, off) in [(false, 0u16), (true, 1u16)] {
                let (peer, dst) = if rtcp {
                    (m.rtcp[side], m.rtcp[other])
                } else {
                    (m.rtp[side], m.rtp[other])
                };
                let leg = Leg {
                    peer,
                    out_port: m.ports[other].wrapping_add(off),
                    dst,
                    ext_id: m.ext_id[side],
                    tap,
                };
                let port = m.ports[side].wrapping_add(off);
                if m.shared[side] {
                    if let Some(peer) = peer {
                        keys.push((port, peer));
                        self.shared_peers
                            .insert((port, peer), (call_id.to_string(), stream));
                        (self.sink)(RelayCommand::SharedLeg {
                            port,
                            peer,
                            leg: Some(leg),
                        });
                    }
                } else {
                    (self.sink)(RelayCommand::Leg {
                        port,
                        leg: Some(leg),
                    });
                }
            }
            for (port, peer) in std::mem::replace(&mut m.installed[side], keys.clone()) {
                if !keys.contains(&(port, peer)) {
                    self.drop_shared(call_id, stream, port, peer);
                }
            }
        }
    }

    /// Clears a shared leg of this call's stream (never one another stream has taken since).
    fn drop_shared(&mut self, call_id: &str, stream: usize, port: u16, peer: SocketAddr) {
        match self.shared_peers.get(&(port, peer)) {
            Some((c, s)) if c == call_id && *s == stream => {
                self.shared_peers.remove(&(port, peer));
            }
            _ => return,
        }
        (self.sink)(RelayCommand::SharedLeg {
            port,
            peer,
            leg: None,
        });
    }

    fn release(&mut self, call_id: &str, stream: usize, m: &StreamMedia) {
        for side in 0..2 {
            if m.shared[side] {
                for (port, peer) in m.installed[side].clone() {
                    self.drop_shared(call_id, stream, port, peer);
                }
                continue;
            }
            for off in 0..2u16 {
                (self.sink)(RelayCommand::Leg {
                    port: m.ports[side].wrapping_add(off),
                    leg: None,
                });
            }
            self.pool.release(m.ports[side]);
        }
    }
}

impl MediaAnchor for RelayAnchor {
    fn sdp(
        &mut self,
        _now: Instant,
        ctx: &SdpContext<'_>,
        body: &[u8],
    ) -> Result<Option<Vec<u8>>, Refusal> {
        let mut sd = SessionDescription::parse(body)
            .map_err(|e| Refusal::new(488, format!("SDP the relay cannot read: {e}")))?;
        let me = side_index(ctx.side);
        let other = 1 - me;
        let table = self.table.clone();
        let mut t = table.lock().unwrap_or_else(|p| p.into_inner());
        let relay_ip = t.relay_ip;
        // Worked on a copy: a refused body changes nothing (ports, legs, the escrow check).
        let mut call = t.calls.get(ctx.call_id).cloned().unwrap_or_default();
        if let Some(n) = ctx.from_trusted {
            call.parties[me] = Some(n.to_string());
        }
        if let Some(n) = ctx.to_trusted {
            call.parties[other] = Some(n.to_string());
        }
        let mut changed = Vec::new();
        let mut released = Vec::new();
        let mut allocated: Vec<u16> = Vec::new();
        let mut refusal = None;
        // Shared-port sources claimed by this body's streams so far.
        let mut claimed: Vec<(u16, SocketAddr, usize)> = Vec::new();
        let infos: Vec<_> = sd.media.iter().map(|m| media_info(&sd, m)).collect();
        for (i, (m, info)) in sd.media.iter_mut().zip(infos).enumerate() {
            if call.streams.len() <= i {
                call.streams.resize(i + 1, None);
            }
            if m.port == 0 {
                if let Some(s) = call.streams[i].take() {
                    released.push((i, s));
                }
                continue;
            }
            if info.rtp.is_some_and(|a| a.is_ipv4() != relay_ip.is_ipv4()) {
                refusal = Some(Refusal::new(
                    488,
                    "media address family differs from the relay's",
                ));
                break;
            }
            // A source another call, or another stream of this call, already has on the
            // shared port cannot be told apart from it.
            let sp = self.cfg.shared_port().unwrap_or(0);
            let taken = |port: u16, a: Option<SocketAddr>| {
                a.is_some_and(|a| {
                    self.shared_peers
                        .get(&(port, a))
                        .is_some_and(|(c, s)| c != ctx.call_id || *s != i)
                        || claimed
                            .iter()
                            .any(|&(p, b, s)| p == port && b == a && s != i)
                })
            };
            let clash = taken(sp, info.rtp) || taken(sp.wrapping_add(1), info.rtcp);
            let stream = match &mut call.streams[i] {
                Some(s) => s,
                slot @ None => {
                    // The port facing each side: the shared pair for a gateway (the writer of
                    // this body only if its address is free there), else a pair of its own.
                    let mut ports = [0u16; 2];
                    let mut shared = [false; 2];
                    let shared_port = self.cfg.shared_port().unwrap_or(0);
                    for side in [me, other] {
                        let eligible =
                            self.may_share(call.parties[side].as_deref()) && (side != me || !clash);
                        if eligible {
                            ports[side] = shared_port;
                            shared[side] = true;
                            continue;
                        }
                        let Some(p) = self.pool.alloc() else {
                            refusal = Some(Refusal::new(503, "no relay ports left"));
                            break;
                        };
                        allocated.push(p);
                        ports[side] = p;
                    }
                    if refusal.is_some() {
                        break;
                    }
                    slot.insert(StreamMedia {
                        ports,
                        shared,
                        rtp: [None; 2],
                        rtcp: [None; 2],
                        ext_id: [None; 2],
                        ssrc: [None; 2],
                        installed: [Vec::new(), Vec::new()],
                    })
                }
            };
            if stream.shared[me] && clash {
                refusal = Some(Refusal::new(
                    488,
                    "media address already used by another call on the relay's shared port",
                ));
                break;
            }
            if stream.shared[me] {
                for (port, a) in [(sp, info.rtp), (sp.wrapping_add(1), info.rtcp)] {
                    if let Some(a) = a {
                        claimed.push((port, a, i));
                    }
                }
            }
            stream.rtp[me] = info.rtp;
            stream.rtcp[me] = info.rtcp;
            stream.ext_id[me] = info.session_id_ext;
            stream.ssrc[me] = info.ssrc;
            // The other side sends to the port facing it.
            anchor_media(m, relay_ip, stream.ports[other]);
            changed.push(i);
        }
        if let Some(r) = refusal {
            // Nothing of this body takes effect: the pairs taken for it go back, the call
            // stays as it was (a call that had no media yet is released by the proxy, with
            // call_ended, when it answers the refusal).
            for p in allocated {
                self.pool.release(p);
            }
            return Err(r);
        }
        set_session_address(&mut sd, relay_ip);
        for (i, s) in &released {
            self.release(ctx.call_id, *i, s);
        }
        for i in changed {
            if let Some(mut st) = call.streams[i].take() {
                self.legs_of(ctx.call_id, i, &call.parties, &mut st);
                call.streams[i] = Some(st);
            }
        }
        t.calls.insert(ctx.call_id.to_string(), call);
        drop(t);
        Ok(Some(sd.to_bytes()))
    }

    fn call_ended(&mut self, _now: Instant, call_id: &str) {
        self.taps.remove(call_id);
        let call = {
            let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
            t.calls.remove(call_id)
        };
        if let Some(c) = call {
            for (i, s) in c.streams.iter().enumerate() {
                if let Some(s) = s {
                    self.release(call_id, i, s);
                }
            }
        }
    }
}

/// Why the relay dropped a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RelayDrop {
    /// The escrow gate's reason.
    Gate(DropReason),
    /// No call uses the port, or the other side is not known yet.
    NoRoute,
    /// The source is not the leg's peer (and the gate had nothing against it).
    WrongSource,
}

impl RelayDrop {
    pub fn name(self) -> &'static str {
        match self {
            RelayDrop::Gate(r) => r.name(),
            RelayDrop::NoRoute => "no_route",
            RelayDrop::WrongSource => "wrong_source",
        }
    }
}

/// What to do with a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Forward { out_port: u16, dst: SocketAddr },
    Drop(RelayDrop),
}

/// Counters of the data plane.
#[derive(Debug, Default, Clone)]
pub struct RelayStats {
    pub received: u64,
    pub forwarded: u64,
    pub verified: u64,
    pub no_route: u64,
    pub wrong_source: u64,
}

/// The data plane.
pub struct Relay {
    address: IpAddr,
    first_port: u16,
    legs: Vec<Option<Leg>>,
    /// The shared pair's legs, by (port, source).
    shared: HashMap<(u16, SocketAddr), Leg>,
    shared_port: Option<u16>,
    /// The RTP extension ids negotiated on the shared port (a bit per id).
    shared_ext_ids: u16,
    live: usize,
    gate: MediaGate,
    stats: RelayStats,
    last_tap: Option<Tap>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("address", &self.address)
            .field("first_port", &self.first_port)
            .field("gate", &self.gate)
            .finish_non_exhaustive()
    }
}

/// Errors applying a command.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    #[error("port {0} is outside the relay's range")]
    PortOutOfRange(u16),
    #[error("session {id:#018x}: {source}")]
    Arm { id: u64, source: GateError },
}

impl Relay {
    pub fn new(cfg: &RelayConfig, mode: Mode, sampling: Sampling) -> Self {
        Relay {
            address: cfg.address,
            first_port: cfg.first_port,
            legs: vec![None; usize::from(cfg.port_count)],
            shared: HashMap::new(),
            shared_port: cfg.shared_port(),
            shared_ext_ids: 0,
            live: 0,
            gate: MediaGate::new(mode, sampling),
            stats: RelayStats::default(),
            last_tap: None,
        }
    }

    pub fn stats(&self) -> &RelayStats {
        &self.stats
    }

    pub fn gate(&self) -> &MediaGate {
        &self.gate
    }

    /// The tap of the leg the last datagram [`Relay::handle`] forwarded went through: `Some`
    /// when the driver must also copy it to the lawful-interception tap.
    pub fn tap(&self) -> Option<Tap> {
        self.last_tap
    }

    /// Live legs.
    pub fn legs(&self) -> usize {
        self.live
    }

    fn slot(&self, port: u16) -> Option<usize> {
        let i = usize::from(port.checked_sub(self.first_port)?);
        (i < self.legs.len()).then_some(i)
    }

    pub fn apply(&mut self, cmd: RelayCommand) -> Result<(), RelayError> {
        match cmd {
            RelayCommand::SharedLeg { port, peer, leg } => {
                let sp = self.shared_port.ok_or(RelayError::PortOutOfRange(port))?;
                if port != sp && port != sp.wrapping_add(1) {
                    return Err(RelayError::PortOutOfRange(port));
                }
                let before = match leg {
                    Some(l) => {
                        if let Some(id) = l.ext_id.filter(|id| (1..=14).contains(id)) {
                            self.shared_ext_ids |= 1 << id;
                        }
                        self.shared.insert((port, peer), l)
                    }
                    None => self.shared.remove(&(port, peer)),
                };
                match (before.is_some(), leg.is_some()) {
                    (false, true) => self.live += 1,
                    (true, false) => self.live -= 1,
                    _ => {}
                }
            }
            RelayCommand::Leg { port, leg } => {
                let i = self.slot(port).ok_or(RelayError::PortOutOfRange(port))?;
                match (self.legs[i].is_some(), leg.is_some()) {
                    (false, true) => self.live += 1,
                    (true, false) => self.live -= 1,
                    _ => {}
                }
                self.legs[i] = leg;
            }
            RelayCommand::Arm(s) => self
                .gate
                .arm(&s)
                .map_err(|source| RelayError::Arm { id: s.id, source })?,
            RelayCommand::Disarm(id) => self.gate.disarm(id),
        }
        Ok(())
    }

    /// Decides about one datagram: `packet` (the UDP payload) arrived on the relay's `port`
    /// from `src`, with the IPv4 header options `ip_options` (empty when none).
    pub fn handle(
        &mut self,
        port: u16,
        src: SocketAddr,
        ip_options: &[u8],
        packet: &[u8],
    ) -> Decision {
        self.stats.received += 1;
        self.last_tap = None;
        let on_shared = self
            .shared_port
            .is_some_and(|sp| port == sp || port == sp.wrapping_add(1));
        let leg = if on_shared {
            self.shared.get(&(port, src)).copied()
        } else {
            match self.slot(port).and_then(|i| self.legs[i]) {
                Some(l) => Some(l),
                None => {
                    self.stats.no_route += 1;
                    return Decision::Drop(RelayDrop::NoRoute);
                }
            }
        };
        let rtcp = packet.len() >= 2 && (192..=223).contains(&packet[1]);
        let mut carrier = if ip_options.is_empty() {
            Ok(None)
        } else {
            session_id_from_ipv4_options(ip_options).map_err(|_| ())
        };
        if let (Ok(None), false) = (carrier, rtcp) {
            // The extension id the leg negotiated; for a source without a leg on the shared
            // port, the ids in use there (so that its drop gets its precise reason).
            let ids = match leg {
                Some(l) => l.ext_id.map_or(0, |id| 1u16 << id),
                None => self.shared_ext_ids,
            };
            for id in 1..=14u8 {
                if ids & (1 << id) != 0 {
                    carrier = session_id_from_rtp(packet, id).map_err(|_| ());
                    if !matches!(carrier, Ok(None)) {
                        break;
                    }
                }
            }
        }
        let here = SocketAddr::new(self.address, port);
        let verified = match self.gate.check(src, here, carrier, packet) {
            Verdict::Drop(r) => return Decision::Drop(RelayDrop::Gate(r)),
            Verdict::Forward { verified, .. } => verified,
        };
        let Some(leg) = leg else {
            // On the shared port, a source that is no call's side.
            self.stats.wrong_source += 1;
            return Decision::Drop(RelayDrop::WrongSource);
        };
        match leg.peer {
            None => {
                self.stats.no_route += 1;
                return Decision::Drop(RelayDrop::NoRoute);
            }
            Some(p) if p != src => {
                self.stats.wrong_source += 1;
                return Decision::Drop(RelayDrop::WrongSource);
            }
            Some(_) => {}
        }
        let Some(dst) = leg.dst else {
            self.stats.no_route += 1;
            return Decision::Drop(RelayDrop::NoRoute);
        };
        self.stats.forwarded += 1;
        if verified {
            self.stats.verified += 1;
        }
        self.last_tap = leg.tap;
        Decision::Forward {
            out_port: leg.out_port,
            dst,
        }
    }

    /// Drops per reason, the gate's and the relay's.
    pub fn drops(&self) -> Vec<(RelayDrop, u64)> {
        let mut v: Vec<(RelayDrop, u64)> = DropReason::ALL
            .iter()
            .map(|r| {
                (
                    RelayDrop::Gate(*r),
                    self.gate.stats().dropped.get(r).copied().unwrap_or(0),
                )
            })
            .collect();
        v.push((RelayDrop::NoRoute, self.stats.no_route));
        v.push((RelayDrop::WrongSource, self.stats.wrong_source));
        v
    }
}
