//! The logic of the voxgate-media fuzz targets (`media_relay`, `media_bridge`), shared by the
//! cargo-fuzz targets (`fuzz/fuzz_targets/media_*.rs`) and by the corpus replay test
//! (`crates/media/tests/fuzz_corpus.rs`), which both include this file with `#[path]`.
//!
//! It is kept apart from `fuzz_logic.rs` (included by voxgate-rtp's replay test) so that
//! voxgate-rtp's tests never depend on voxgate-media. It uses voxgate-media, voxgate-rtp,
//! voxgate-sip, voxgate-escrow, zeroize and std: the normal dependencies of voxgate-media.
//!
//! Both targets read one config byte, then a sequence of operations (at most [`MAX_OPS`]),
//! each an op byte followed by its fields (see [`RelayInput`] and [`BridgeInput`], which write
//! them for the seed generator). A field cut short by the end of the input ends the run.
//! Bad input must never panic; the only panics are the property asserts below, each of which
//! names what it checks.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use voxgate_escrow::carrier::{session_id_from_ipv4_options, session_id_from_rtp};
use voxgate_escrow::gate::{Mode, Sampling};
use voxgate_escrow::server::Session;
use voxgate_escrow::wire::{Addr, Direction, KeyUpdate, Secret, StreamKey};
use voxgate_media::bridge::{
    Bridge, BridgeAnchor, BridgeCommand, BridgeConfig, BridgeDecision, Carrier, EscrowRequest,
    HEADROOM,
};
use voxgate_media::relay::{
    CallTable, Decision, Leg, Relay, RelayAnchor, RelayCommand, RelayConfig, RelayDrop,
};
use voxgate_media::sdp_edit::{media_info, parse_connection};
use voxgate_rtp::{CryptoAttribute, MasterKey, SrtpPolicy, SrtpProfile, SrtpSession};
use voxgate_sip::anchor::{MediaAnchor, SdpContext, SdpKind, Side};
use voxgate_sip::sdp::{EncryptionPolicy, SessionDescription};
use zeroize::Zeroizing;

/// Operations of one input beyond this are ignored (keeps each run short).
pub const MAX_OPS: usize = 48;
/// Calls an input can name (`call-0` ... `call-3`).
pub const CALLS: u8 = 4;
/// The session_IDs an input can arm (relay) or tag with (bridge).
pub const SESSION_IDS: [u64; 4] = [
    0x5e55_1000_0000_0001,
    0x5e55_1000_0000_0002,
    0x0000_0000_0000_0003,
    0xffff_ffff_ffff_fffe,
];
/// Byte written after the data in every buffer handed to the bridge.
const SENTINEL: u8 = 0xa5;
const SLACK: usize = 16;

/// What one run did; the replay test checks that the seeds reach the success paths.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MediaStats {
    /// SDP bodies the anchor rewrote.
    pub sdp_rewritten: usize,
    /// SDP bodies the anchor refused.
    pub sdp_refused: usize,
    /// Datagrams forwarded.
    pub forwarded: usize,
    /// Relay: forwarded with a valid session_ID; bridge: forwarded outward (tagged).
    pub forwarded_escrowed: usize,
    /// Datagrams dropped.
    pub dropped: usize,
    /// Relay: sessions armed after check_key_update; bridge: key_update requests.
    pub escrowed: usize,
    /// Relay: key_updates check_key_update refused.
    pub key_updates_refused: usize,
    /// Bridge: outward packets that authenticated with the escrowed Send key.
    pub escrow_readable: usize,
    /// Relay: datagrams forwarded from the shared port pair.
    pub forwarded_shared: usize,
}

impl MediaStats {
    pub fn add(&mut self, o: MediaStats) {
        self.sdp_rewritten += o.sdp_rewritten;
        self.sdp_refused += o.sdp_refused;
        self.forwarded += o.forwarded;
        self.forwarded_escrowed += o.forwarded_escrowed;
        self.dropped += o.dropped;
        self.escrowed += o.escrowed;
        self.key_updates_refused += o.key_updates_refused;
        self.escrow_readable += o.escrow_readable;
        self.forwarded_shared += o.forwarded_shared;
    }
}

/// The bytes of an input, read front to back.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    /// Up to `n` bytes (fewer at the end of the input).
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        a
    }

    /// A block prefixed by its big-endian u16 length.
    fn block16(&mut self) -> Option<&'a [u8]> {
        let hi = self.u8()?;
        let lo = self.u8()?;
        Some(self.take(usize::from(u16::from_be_bytes([hi, lo]))))
    }

    /// A block prefixed by its u8 length.
    fn block8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        Some(self.take(usize::from(n)))
    }
}

/// Writes inputs (the inverse of [`Reader`]), for the seed generator.
#[derive(Debug, Clone)]
struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, b: u8) {
        self.0.push(b);
    }

    fn block16(&mut self, b: &[u8]) {
        let n = u16::try_from(b.len()).expect("seed blocks are under 64 KiB");
        self.0.extend_from_slice(&n.to_be_bytes());
        self.0.extend_from_slice(b);
    }

    fn block8(&mut self, b: &[u8]) {
        let n = u8::try_from(b.len()).expect("seed options are under 256 bytes");
        self.0.push(n);
        self.0.extend_from_slice(b);
    }
}

pub fn call_id(call: u8) -> String {
    format!("call-{}", call % CALLS)
}

fn side_of(bit: bool) -> Side {
    if bit {
        Side::Callee
    } else {
        Side::Caller
    }
}

fn kind_of(bit: bool) -> SdpKind {
    if bit {
        SdpKind::Answer
    } else {
        SdpKind::Offer
    }
}

fn looks_like_rtp(p: &[u8]) -> bool {
    p.len() >= 12 && p[0] >> 6 == 2
}

fn is_rtcp(p: &[u8]) -> bool {
    p.len() >= 2 && (192..=223).contains(&p[1])
}

fn ssrc_of(p: &[u8]) -> Option<u32> {
    let at = if is_rtcp(p) { 4 } else { 8 };
    let b = p.get(at..at + 4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// The SDES keys (`a=crypto` of a media description, as `Media::attributes` finds them) of an
/// SDP body: (suite, master key || salt, the base64 text of each `inline:` key).
fn sdes_keys(sd: &SessionDescription) -> Vec<(SrtpProfile, Vec<u8>, Vec<String>)> {
    let mut out = Vec::new();
    for m in &sd.media {
        for v in m.attributes("crypto") {
            let Ok(a) = CryptoAttribute::parse(v) else {
                continue;
            };
            let texts: Vec<String> = v
                .split("inline:")
                .skip(1)
                .map(|s| {
                    s.split(|c: char| c == '|' || c == ';' || c.is_whitespace())
                        .next()
                        .unwrap_or_default()
                        .to_string()
                })
                // Real keys are 38 or more base64 characters; shorter texts (of session
                // parameters) would match by chance.
                .filter(|t: &String| t.len() >= 16)
                .collect();
            for k in &a.keys {
                out.push((a.suite, k.key_salt.to_vec(), texts.clone()));
            }
        }
    }
    out
}

/// The text of an SDP body without the lines `Media::attributes("crypto")` reads as keys: what
/// the writer published of its own accord (codec lines, other attributes).
fn text_without_crypto(sd: &SessionDescription) -> String {
    let mut s = String::new();
    for l in &sd.session {
        s.push_str(&l.value);
        s.push('\n');
    }
    for m in &sd.media {
        s.push_str(&format!(
            "{} {} {} {}\n",
            m.media,
            m.port,
            m.proto,
            m.formats.join(" ")
        ));
        for l in &m.lines {
            let name = l.value.split_once(':').map_or(l.value.as_str(), |(n, _)| n);
            if !(l.kind == 'a' && name == "crypto") {
                s.push_str(&l.value);
                s.push('\n');
            }
        }
    }
    s
}

// ---------------------------------------------------------------------------------------------
// media_relay
// ---------------------------------------------------------------------------------------------

/// The relay's address in rewritten SDP.
pub const RELAY_IP: [u8; 4] = [10, 0, 0, 1];
/// The two voice gateways (their IPs are the source-based mode's gateway list).
pub const GW_A: &str = "192.0.2.11:40000";
pub const GW_B: &str = "198.51.100.12:50000";
/// Source addresses a datagram can come from (selector without bit 7).
pub const RELAY_SOURCES: [&str; 8] = [
    GW_A,
    "192.0.2.11:40001",
    GW_B,
    "198.51.100.12:50001",
    "192.0.2.11:40010",
    "203.0.113.99:1234",
    "192.0.2.200:7078",
    "[2001:db8::1]:40000",
];
/// Trusted-peer names: the caller's gateway, the callee's, and one that is party to nothing.
pub const GW_NAMES: [&str; 3] = ["gw-a", "gw-b", "gw-c"];
/// The SSRCs of the seeds' streams (selector values 1 and 2 of an armed stream's SSRC).
pub const SSRC_A: u32 = 0xaabb_ccdd;
pub const SSRC_B: u32 = 0x1122_3344;

/// The escrowed keys an input can arm a stream with: (suite, master key || salt).
pub fn relay_key(n: u8) -> (SrtpProfile, Vec<u8>) {
    let p = SrtpProfile::ALL[usize::from(n % 4)];
    let ks = (0..p.key_len() + p.salt_len())
        .map(|i| (i as u8).wrapping_mul(0x3b) ^ (0xa1 + n % 4))
        .collect();
    (p, ks)
}

/// A sender of [`relay_key`] `n` (for the seeds' SRTP packets).
pub fn relay_sender(n: u8) -> SrtpSession {
    let (p, ks) = relay_key(n);
    let mk = MasterKey::from_key_salt(p, &ks).expect("fixed key lengths match the profile");
    SrtpSession::new(SrtpPolicy::new(mk)).expect("one key, no MKI")
}

/// The `shared_for` lists (`RelayConfig::shared_for`) config bit 6 turns on; bits 5 and 7 pick
/// one: both gateways; only the caller's; only the callee's (in upper case: names match
/// ignoring case); both gateways and the stranger gw-c.
pub const SHARED_FOR: [&[&str]; 4] = [
    &["gw-a", "gw-b"],
    &["gw-a"],
    &["GW-B"],
    &["gw-a", "gw-b", "gw-c"],
];

/// The relay's settings picked by the config byte.
///
/// ```text
/// bit 0      gate mode: source-based (gateways GW_A, GW_B) or global
/// bit 1      sampling: every packet, or the first 2 of a stream then one in 3
/// bits 2-3   port_count: 16, 8, 6, 32
/// bit 4      first_port 20001 (odd, which the pool rounds up) instead of 20000
/// bit 6      a shared port pair (the first of the range) for the gateways of
///            SHARED_FOR[bit 5 | bit 7 << 1]; without bit 6 bits 5 and 7 mean nothing
/// ```
///
/// (Bit 6 turns sharing on, not bit 5, so that the regression input of config byte 0xa9,
/// written before the shared pair existed, keeps its meaning.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayFuzzConfig {
    pub global: bool,
    pub sampled: bool,
    pub port_count: u16,
    pub odd_first_port: bool,
    /// The index into [`SHARED_FOR`] of the shared pair's gateways; `None`: no shared pair.
    pub shared: Option<u8>,
}

impl RelayFuzzConfig {
    pub const DEFAULT: RelayFuzzConfig = RelayFuzzConfig {
        global: false,
        sampled: false,
        port_count: 16,
        odd_first_port: false,
        shared: None,
    };

    pub fn decode(b: u8) -> Self {
        RelayFuzzConfig {
            global: b & 1 != 0,
            sampled: b & 2 != 0,
            port_count: [16, 8, 6, 32][usize::from(b >> 2 & 3)],
            odd_first_port: b & 0x10 != 0,
            shared: (b & 0x40 != 0).then_some(b >> 5 & 1 | b >> 6 & 2),
        }
    }

    pub fn encode(&self) -> u8 {
        let size = [16, 8, 6, 32]
            .iter()
            .position(|n| *n == self.port_count)
            .unwrap_or(0) as u8;
        let shared = self
            .shared
            .map_or(0, |i| 0x40 | (i & 1) << 5 | (i >> 1 & 1) << 7);
        u8::from(self.global)
            | u8::from(self.sampled) << 1
            | size << 2
            | u8::from(self.odd_first_port) << 4
            | shared
    }

    pub fn relay_config(&self) -> RelayConfig {
        RelayConfig {
            address: IpAddr::from(RELAY_IP),
            first_port: if self.odd_first_port { 20_001 } else { 20_000 },
            port_count: self.port_count,
            shared_for: self.shared.map_or_else(Vec::new, |i| {
                SHARED_FOR[usize::from(i & 3)]
                    .iter()
                    .map(|n| n.to_string())
                    .collect()
            }),
        }
    }

    fn mode(&self) -> Mode {
        if self.global {
            Mode::Global
        } else {
            Mode::SourceBased {
                gateways: [GW_A, GW_B]
                    .iter()
                    .map(|a| a.parse::<SocketAddr>().expect("fixed address").ip())
                    .collect(),
            }
        }
    }

    fn sampling(&self) -> Sampling {
        if self.sampled {
            Sampling {
                first: 2,
                one_in: 3,
            }
        } else {
            Sampling::EVERY_PACKET
        }
    }
}

/// Who a body comes from / goes to (`SdpContext::from_trusted`/`to_trusted`), relative to the
/// side that wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// That side's own gateway (caller: gw-a, callee: gw-b).
    Natural,
    /// Not a trusted peer.
    Untrusted,
    /// gw-c, party to nothing.
    Stranger,
    /// The other side's gateway.
    Swapped,
}

impl Peer {
    fn decode(b: u8) -> Peer {
        [
            Peer::Natural,
            Peer::Untrusted,
            Peer::Stranger,
            Peer::Swapped,
        ][usize::from(b & 3)]
    }

    fn encode(self) -> u8 {
        self as u8
    }

    fn name(self, natural: &'static str, other: &'static str) -> Option<&'static str> {
        match self {
            Peer::Natural => Some(natural),
            Peer::Untrusted => None,
            Peer::Stranger => Some(GW_NAMES[2]),
            Peer::Swapped => Some(other),
        }
    }
}

/// One stream of an armed session: `sel` bit 7 makes it a Receive stream, bit 6 takes fixed
/// (wrong) addresses, bits 0-5 pick a live leg; `key` a [`relay_key`]; `ssrc` 0: none, 1:
/// [`SSRC_A`], 2: [`SSRC_B`], n: n.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArmStream {
    pub sel: u8,
    pub key: u8,
    pub ssrc: u8,
}

/// Writes `media_relay` inputs.
///
/// ```text
/// op 0  sdp        sel (bits 0-1 call, 2 callee side, 3 answer, 4-5 from peer, 6-7 to peer),
///                  u16 length, body
/// op 1  datagram   port selector, source selector, u8 length + IPv4 options,
///                  u16 length + UDP payload
/// op 2  call_ended call
/// op 3  arm        sel (bits 0-1 call, 2-3 session_ID), gateway name, stream count, streams
///                  (3 bytes each, see ArmStream); the key_update is checked with
///                  CallTable::check_key_update and armed only if accepted
/// op 4  disarm     session_ID index
/// ```
///
/// A port selector with bit 7 picks the n-th port holding a leg (in port order), else port
/// `first_port - 1 + (sel % (port_count + 2))` (one below and one above the range included).
/// A source selector with bit 7 is the peer of the n-th leg, else [`RELAY_SOURCES`]`[n]`. The
/// legs are counted (here and by an armed stream's `sel`) dedicated ones first in port order,
/// then those of the shared pair in (port, source) order.
#[derive(Debug, Clone)]
pub struct RelayInput(Writer);

impl RelayInput {
    pub fn new(cfg: RelayFuzzConfig) -> Self {
        RelayInput(Writer(vec![cfg.encode()]))
    }

    pub fn sdp(&mut self, call: u8, side: Side, kind: SdpKind, from: Peer, to: Peer, body: &str) {
        self.0.u8(0);
        self.0.u8(call & 3
            | u8::from(side == Side::Callee) << 2
            | u8::from(kind == SdpKind::Answer) << 3
            | from.encode() << 4
            | to.encode() << 6);
        self.0.block16(body.as_bytes());
    }

    pub fn datagram(&mut self, port_sel: u8, src_sel: u8, options: &[u8], packet: &[u8]) {
        self.0.u8(1);
        self.0.u8(port_sel);
        self.0.u8(src_sel);
        self.0.block8(options);
        self.0.block16(packet);
    }

    pub fn call_ended(&mut self, call: u8) {
        self.0.u8(2);
        self.0.u8(call);
    }

    pub fn arm(&mut self, call: u8, session: u8, gateway: u8, streams: &[ArmStream]) {
        self.0.u8(3);
        self.0.u8(call & 3 | (session & 3) << 2);
        self.0.u8(gateway);
        self.0.u8(streams.len() as u8);
        for s in streams {
            self.0.u8(s.sel);
            self.0.u8(s.key);
            self.0.u8(s.ssrc);
        }
    }

    pub fn disarm(&mut self, session: u8) {
        self.0.u8(4);
        self.0.u8(session);
    }

    pub fn finish(self) -> Vec<u8> {
        self.0 .0
    }
}

/// Where a leg lives on the relay: a dedicated port, or (port, source) on the shared pair.
/// Dedicated legs sort first, each kind in port order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum LegKey {
    Port(u16),
    Shared(u16, SocketAddr),
}

impl LegKey {
    fn port(self) -> u16 {
        match self {
            LegKey::Port(p) | LegKey::Shared(p, _) => p,
        }
    }
}

/// The relay as the fuzzer sees it: the anchor, the data plane, and the model built from the
/// commands the anchor sent.
struct RelayRun {
    cfg: RelayFuzzConfig,
    relay_ip: IpAddr,
    first_port: u16,
    /// The shared pair's RTP port (its RTCP port is the next one), if the config has one.
    shared_port: Option<u16>,
    anchor: RelayAnchor,
    table: Arc<Mutex<CallTable>>,
    cmds: Arc<Mutex<Vec<RelayCommand>>>,
    relay: Relay,
    /// The legs the commands set (dedicated by port, shared by port and source).
    legs: BTreeMap<LegKey, Leg>,
    /// The call whose SDP set each live leg.
    owner: HashMap<LegKey, u8>,
    /// Armed sessions: their streams' (src, dst, ssrc).
    armed: HashMap<u64, Vec<(SocketAddr, SocketAddr, Option<u32>)>>,
    generation: HashMap<u64, u32>,
    /// The gateways of source-based mode (empty in global mode).
    gateways: Vec<IpAddr>,
    total_pairs: usize,
    stats: MediaStats,
}

impl RelayRun {
    fn new(cfg: RelayFuzzConfig) -> Self {
        let rc = cfg.relay_config();
        let table = Arc::new(Mutex::new(CallTable::new(rc.address)));
        let cmds: Arc<Mutex<Vec<RelayCommand>>> = Arc::default();
        let c = cmds.clone();
        let anchor = RelayAnchor::new(
            rc.clone(),
            table.clone(),
            Box::new(move |cmd| c.lock().unwrap_or_else(|p| p.into_inner()).push(cmd)),
        );
        let total_pairs = anchor.free_pairs();
        // The pairs of the range (even port and its odd neighbour inside it), but the shared
        // one: the shared pair is never in the pool.
        let end = u32::from(rc.first_port) + u32::from(rc.port_count);
        let even = u32::from(rc.first_port) + u32::from(rc.first_port % 2);
        let pairs = (even..end).step_by(2).filter(|p| p + 1 < end).count();
        let shared_port = rc.shared_port();
        if cfg.shared.is_some() {
            assert_eq!(
                shared_port,
                u16::try_from(even).ok(),
                "the shared pair is the first pair of the range"
            );
        }
        assert_eq!(
            total_pairs,
            pairs - usize::from(shared_port.is_some()),
            "the pool holds every pair of the range but the shared one"
        );
        RelayRun {
            cfg,
            relay_ip: rc.address,
            first_port: rc.first_port,
            shared_port,
            relay: Relay::new(&rc, cfg.mode(), cfg.sampling()),
            anchor,
            table,
            cmds,
            legs: BTreeMap::new(),
            owner: HashMap::new(),
            armed: HashMap::new(),
            generation: HashMap::new(),
            gateways: match cfg.mode() {
                Mode::SourceBased { gateways } => gateways,
                Mode::Global => Vec::new(),
            },
            total_pairs,
            stats: MediaStats::default(),
        }
    }

    fn take_commands(&self) -> Vec<RelayCommand> {
        std::mem::take(&mut *self.cmds.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Whether `port` is a port of the shared pair.
    fn is_shared(&self, port: u16) -> bool {
        self.shared_port
            .is_some_and(|sp| port == sp || port == sp.wrapping_add(1))
    }

    /// Where the relay looks up the leg of a datagram from `src` on `port`.
    fn key(&self, port: u16, src: SocketAddr) -> LegKey {
        if self.is_shared(port) {
            LegKey::Shared(port, src)
        } else {
            LegKey::Port(port)
        }
    }

    /// The leg a datagram from `src` arriving on `port` takes, in the model.
    fn leg_at(&self, port: u16, src: SocketAddr) -> Option<&Leg> {
        self.legs.get(&self.key(port, src))
    }

    /// Records that `call` set (or, with `None`, cleared) the leg at `key`. `setting`: whether
    /// the anchor is handling a body of `call` (it sets legs only then).
    fn record(&mut self, call: u8, setting: bool, key: LegKey, leg: Option<Leg>) {
        let port = key.port();
        let o = self.owner.get(&key).copied();
        match leg {
            Some(l) => {
                assert!(setting, "the anchor sets legs only while handling a body");
                if let Some(o) = o {
                    match key {
                        LegKey::Port(_) => assert_eq!(
                            o, call,
                            "port {port} handed to call {call} while call {o} uses it"
                        ),
                        LegKey::Shared(_, peer) => assert_eq!(
                            o, call,
                            "call {call} set the leg of {peer} on the shared port {port}, \
                             which call {o} has"
                        ),
                    }
                }
                self.owner.insert(key, call);
                self.legs.insert(key, l);
            }
            None => {
                if let Some(o) = o {
                    assert_eq!(
                        o, call,
                        "call {call} cleared the leg {key:?}, which call {o} has"
                    );
                }
                self.owner.remove(&key);
                self.legs.remove(&key);
            }
        }
    }

    /// Applies the anchor's commands to the relay (as `voxgate spg` does) and to the model:
    /// `call`'s body (`setting`) or its `call_ended`.
    fn pump(&mut self, call: u8, setting: bool) {
        for cmd in self.take_commands() {
            match &cmd {
                RelayCommand::Leg { port, leg } => {
                    assert!(
                        !self.is_shared(*port),
                        "port {port} of the shared pair set as a call's own port"
                    );
                    self.record(call, setting, LegKey::Port(*port), *leg);
                }
                RelayCommand::SharedLeg { port, peer, leg } => {
                    assert!(
                        self.is_shared(*port),
                        "a shared leg on port {port}, which is not of the shared pair"
                    );
                    if let Some(l) = leg {
                        assert_eq!(l.peer, Some(*peer), "a shared leg is keyed by its own peer");
                    }
                    self.record(call, setting, LegKey::Shared(*port, *peer), *leg);
                }
                RelayCommand::Arm(_) | RelayCommand::Disarm(_) => {}
            }
            if let Err(e) = self.relay.apply(cmd) {
                panic!("the relay refused a command of its own anchor: {e}");
            }
        }
        assert_eq!(
            self.relay.legs(),
            self.legs.len(),
            "Relay::legs() counts the legs the commands set (dedicated and shared)"
        );
        for (k, l) in &self.legs {
            let p = k.port();
            // The leg back: out of the port this one goes out of, from where this one goes
            // to. On the shared pair it is keyed by that address, and exists once it is known.
            let back = if self.is_shared(l.out_port) {
                l.dst.map(|d| LegKey::Shared(l.out_port, d))
            } else {
                Some(LegKey::Port(l.out_port))
            };
            if let Some(bk) = back {
                let b = self.legs.get(&bk);
                assert!(
                    b.is_some_and(|b| b.out_port == p && b.dst == l.peer && b.peer == l.dst),
                    "the leg {k:?} ({l:?}) goes out of {} whose leg ({b:?}) comes back to it",
                    l.out_port
                );
                assert_eq!(
                    self.owner.get(&bk),
                    self.owner.get(k),
                    "the leg {k:?} and its way back {bk:?} belong to one call"
                );
            }
        }
        let owned: HashSet<u16> = self
            .owner
            .keys()
            .filter_map(|k| match k {
                LegKey::Port(p) => Some(p & !1),
                LegKey::Shared(..) => None,
            })
            .collect();
        assert!(
            self.anchor.free_pairs() + owned.len() <= self.total_pairs,
            "a port pair is both free and in use (or the shared pair went to the pool)"
        );
    }

    fn port(&self, sel: u8) -> u16 {
        if sel & 0x80 != 0 && !self.legs.is_empty() {
            let ports: BTreeSet<u16> = self.legs.keys().map(|k| k.port()).collect();
            let n = usize::from(sel & 0x7f) % ports.len();
            return *ports.iter().nth(n).expect("n < len");
        }
        let span = self.cfg.port_count + 2;
        (self.first_port - 1).wrapping_add(u16::from(sel & 0x7f) % span)
    }

    fn source(&self, sel: u8) -> SocketAddr {
        if sel & 0x80 != 0 {
            let peers: Vec<SocketAddr> = self.legs.values().filter_map(|l| l.peer).collect();
            if !peers.is_empty() {
                return peers[usize::from(sel & 0x7f) % peers.len()];
            }
        }
        RELAY_SOURCES[usize::from(sel) % RELAY_SOURCES.len()]
            .parse()
            .expect("fixed address")
    }

    fn sdp(&mut self, sel: u8, body: &[u8]) {
        let call = sel & 3;
        let side = side_of(sel & 4 != 0);
        let kind = kind_of(sel & 8 != 0);
        let (natural, other) = match side {
            Side::Caller => (GW_NAMES[0], GW_NAMES[1]),
            Side::Callee => (GW_NAMES[1], GW_NAMES[0]),
        };
        let cid = call_id(call);
        let ctx = SdpContext {
            call_id: &cid,
            side,
            kind,
            method: "INVITE",
            status: (kind == SdpKind::Answer).then_some(200),
            from_addr: GW_A.parse().expect("fixed address"),
            to_addr: GW_B.parse().expect("fixed address"),
            from_trusted: Peer::decode(sel >> 4).name(natural, other),
            to_trusted: Peer::decode(sel >> 6).name(other, natural),
            to_tls: true,
        };
        let escrow_view = self.escrow_view();
        match self.anchor.sdp(Instant::now(), &ctx, body) {
            Ok(out) => {
                self.pump(call, true);
                let out = out.expect("the relay rewrites every body it accepts");
                self.check_rewritten(call, body, &out);
                self.stats.sdp_rewritten += 1;
            }
            Err(r) => {
                assert!(
                    self.take_commands().is_empty(),
                    "a refused body sends the relay no command"
                );
                assert!(
                    (400..=599).contains(&r.status),
                    "a refusal is a 4xx/5xx: {r:?}"
                );
                assert!(
                    self.escrow_view() == escrow_view,
                    "a refused body changed which media paths check_key_update accepts"
                );
                self.stats.sdp_refused += 1;
            }
        }
    }

    /// What the escrow check accepts of the paths the legs route: for every call, trusted
    /// name and leg, whether a key_update of its send path (peer to relay port) and of its
    /// receive path (relay out port to destination) passes `check_key_update`.
    fn escrow_view(&self) -> Vec<bool> {
        let t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let mut v = Vec::new();
        for call in 0..CALLS {
            for gw in GW_NAMES {
                for (k, l) in &self.legs {
                    let port = &k.port();
                    let paths = [
                        (
                            Direction::Send,
                            l.peer,
                            Some(SocketAddr::new(self.relay_ip, *port)),
                        ),
                        (
                            Direction::Receive,
                            Some(SocketAddr::new(self.relay_ip, l.out_port)),
                            l.dst,
                        ),
                    ];
                    for (direction, src, dst) in paths {
                        let (Some(src), Some(dst)) = (src, dst) else {
                            continue;
                        };
                        let ku = KeyUpdate {
                            request_id: 0,
                            time_ms: 0,
                            call_id: call_id(call),
                            session_id: None,
                            streams: vec![StreamKey {
                                direction,
                                src: Addr(src),
                                dst: Addr(dst),
                                ssrc: None,
                                suite: SrtpProfile::AesCm128HmacSha1_80.name().to_string(),
                                master: Secret(Zeroizing::new(vec![0; 30])),
                                mki: None,
                            }],
                        };
                        v.push(t.check_key_update(gw, &ku).is_ok());
                    }
                }
            }
        }
        v
    }

    /// The rewritten SDP parses again; every non-zero media port is on the relay address (RTCP
    /// too, on that port or the next), either the shared pair's RTP port or a port of this
    /// call's legs, each stream its own; ICE is gone; keys are kept. Every media address of
    /// the body is the peer of a leg of this call.
    fn check_rewritten(&self, call: u8, body: &[u8], out: &[u8]) {
        let input = SessionDescription::parse(body).expect("the relay accepted only SDP");
        let sd = SessionDescription::parse(out).unwrap_or_else(|e| {
            panic!(
                "the relay's rewritten SDP does not parse ({e}):\n{}",
                String::from_utf8_lossy(out)
            )
        });
        assert_eq!(
            sd.media.len(),
            input.media.len(),
            "rewriting keeps every m= line"
        );
        let mut seen = HashSet::new();
        for (m, orig) in sd.media.iter().zip(&input.media) {
            assert_eq!(
                m.port == 0,
                orig.port == 0,
                "a refused stream stays refused, an offered one stays offered"
            );
            if m.port == 0 {
                continue;
            }
            let info = media_info(&sd, m);
            assert_eq!(
                info.rtp,
                Some(SocketAddr::new(self.relay_ip, m.port)),
                "every media stream of the rewritten SDP points at the relay"
            );
            assert!(
                info.rtcp.is_none_or(|a| a.ip() == self.relay_ip
                    && (a.port() == m.port || a.port() == m.port.wrapping_add(1))),
                "RTCP of the rewritten SDP points at the relay, at the stream's port or the \
                 next: {:?} (port {})",
                info.rtcp,
                m.port
            );
            if self.is_shared(m.port) {
                // Streams on the shared pair are told apart by their source, not by the port.
                assert_eq!(
                    Some(m.port),
                    self.shared_port,
                    "a stream on the shared pair points at its RTP port"
                );
            } else {
                assert_eq!(
                    self.owner.get(&LegKey::Port(m.port)),
                    Some(&call),
                    "the rewritten SDP names port {} whose leg is set for this call",
                    m.port
                );
                assert!(seen.insert(m.port), "two streams share port {}", m.port);
            }
            for ice in ["candidate", "ice-ufrag", "ice-pwd", "remote-candidates"] {
                assert!(
                    m.attributes(ice).next().is_none(),
                    "the rewritten SDP still carries a={ice}"
                );
            }
            let keys = |m: &voxgate_sip::sdp::Media| -> Vec<String> {
                m.attributes("crypto").map(String::from).collect()
            };
            assert_eq!(keys(m), keys(orig), "the relay keeps the SDES keys");
            // The writer sends from the addresses of its body: a leg of this call takes them.
            let theirs = media_info(&input, orig);
            for a in [theirs.rtp, theirs.rtcp].into_iter().flatten() {
                assert!(
                    self.legs
                        .iter()
                        .any(|(k, l)| l.peer == Some(a) && self.owner.get(k) == Some(&call)),
                    "no leg of call {call} takes the media address {a} of its body"
                );
            }
        }
    }

    fn datagram(&mut self, port_sel: u8, src_sel: u8, options: &[u8], packet: &[u8]) {
        let port = self.port(port_sel);
        let src = self.source(src_sel);
        let verified_before = self.relay.stats().verified;
        let d = self.relay.handle(port, src, options, packet);
        let Decision::Forward { out_port, dst } = d else {
            if self.is_shared(port) && self.leg_at(port, src).is_none() {
                assert!(
                    matches!(
                        d,
                        Decision::Drop(RelayDrop::Gate(_) | RelayDrop::WrongSource)
                    ),
                    "a source with no leg on the shared port goes through the gate, then is \
                     dropped as WrongSource: {d:?}"
                );
            }
            self.stats.dropped += 1;
            return;
        };
        self.stats.forwarded += 1;
        if self.is_shared(port) {
            self.stats.forwarded_shared += 1;
        }
        let leg = *self.leg_at(port, src).unwrap_or_else(|| {
            panic!("forwarded a datagram from {src} on port {port}, which has no leg for it")
        });
        assert_eq!(
            leg.peer,
            Some(src),
            "forwarded only from the leg's known peer"
        );
        assert_eq!(
            (Some(dst), out_port),
            (leg.dst, leg.out_port),
            "forwarded to the leg's known destination, out of its port"
        );
        // The carriers (the relay module's doc): the IPv4 option, else the RTP header extension
        // the leg's SDP negotiated.
        let from_options = if options.is_empty() {
            Ok(None)
        } else {
            session_id_from_ipv4_options(options)
        };
        assert!(
            from_options.is_ok(),
            "a datagram with malformed IPv4 options was forwarded"
        );
        let mut carried: Vec<u64> = from_options.ok().flatten().into_iter().collect();
        if let (Some(id), false) = (leg.ext_id, is_rtcp(packet)) {
            if let Ok(Some(s)) = session_id_from_rtp(packet, id) {
                carried.push(s);
            }
        }
        let must = if self.cfg.global {
            looks_like_rtp(packet)
        } else {
            self.gateways.contains(&src.ip())
        };
        let here = SocketAddr::new(self.relay_ip, port);
        let ssrc = ssrc_of(packet);
        let valid = carried.iter().any(|id| {
            self.armed.get(id).is_some_and(|streams| {
                streams
                    .iter()
                    .any(|(s, d, x)| *s == src && *d == here && (x.is_none() || *x == ssrc))
            })
        });
        // Source-based: a session_ID from a source that is not one of the SPG's gateways is
        // another domain's (a peer SPG's gateway), not checked here.
        if must || (self.cfg.global && !carried.is_empty()) {
            assert!(
                valid,
                "forwarded a datagram from {src} to {here} without the session_ID of an armed \
                 session with that stream (carried: {carried:x?}, must: {must})"
            );
            self.stats.forwarded_escrowed += 1;
            if !self.cfg.sampled {
                assert_eq!(
                    self.relay.stats().verified,
                    verified_before + 1,
                    "every escrowed datagram's tag is verified when sampling every packet"
                );
            }
        }
    }

    fn arm(&mut self, sel: u8, gateway: u8, streams: &[ArmStream]) {
        let call = sel & 3;
        let id = SESSION_IDS[usize::from(sel >> 2 & 3)];
        let gw = GW_NAMES[usize::from(gateway) % GW_NAMES.len()];
        let legs: Vec<(u16, Leg)> = self.legs.iter().map(|(k, l)| (k.port(), *l)).collect();
        let fallback: SocketAddr = GW_A.parse().expect("fixed address");
        let keys: Vec<StreamKey> = streams
            .iter()
            .map(|s| {
                let receive = s.sel & 0x80 != 0;
                let (src, dst) = match legs.get(usize::from(s.sel & 0x3f) % legs.len().max(1)) {
                    Some((port, l)) if s.sel & 0x40 == 0 => {
                        if receive {
                            (
                                SocketAddr::new(self.relay_ip, l.out_port),
                                l.dst.unwrap_or(fallback),
                            )
                        } else {
                            (
                                l.peer.unwrap_or(fallback),
                                SocketAddr::new(self.relay_ip, *port),
                            )
                        }
                    }
                    _ => (
                        self.source(s.sel & 0x3f),
                        SocketAddr::new(self.relay_ip, self.port(s.sel & 0x3f)),
                    ),
                };
                let (suite, master) = relay_key(s.key);
                StreamKey {
                    direction: if receive {
                        Direction::Receive
                    } else {
                        Direction::Send
                    },
                    src: Addr(src),
                    dst: Addr(dst),
                    ssrc: match s.ssrc {
                        0 => None,
                        1 => Some(SSRC_A),
                        2 => Some(SSRC_B),
                        n => Some(u32::from(n)),
                    },
                    suite: suite.name().to_string(),
                    master: Secret(Zeroizing::new(master)),
                    mki: None,
                }
            })
            .collect();
        let ku = KeyUpdate {
            request_id: 1,
            time_ms: 0,
            call_id: call_id(call),
            session_id: None,
            streams: keys,
        };
        let checked = self
            .table
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .check_key_update(gw, &ku);
        if checked.is_err() {
            self.stats.key_updates_refused += 1;
            return;
        }
        // What the escrow accepts, the relay routes: every stream is a path of the call's legs
        // (a Receive stream: a leg of the call goes out of that port to that address, or,
        // while the far side is unknown, comes in on it from there).
        for s in &ku.streams {
            let ours = |k: &LegKey| self.owner.get(k) == Some(&call);
            let routed = match s.direction {
                Direction::Send => {
                    let k = self.key(s.dst.0.port(), s.src.0);
                    s.dst.0.ip() == self.relay_ip
                        && ours(&k)
                        && self.legs.get(&k).is_some_and(|l| l.peer == Some(s.src.0))
                }
                Direction::Receive => {
                    s.src.0.ip() == self.relay_ip
                        && self.legs.iter().any(|(k, l)| {
                            ours(k)
                                && ((l.out_port == s.src.0.port() && l.dst == Some(s.dst.0))
                                    || (k.port() == s.src.0.port() && l.peer == Some(s.dst.0)))
                        })
                }
            };
            assert!(
                routed,
                "check_key_update accepted stream {} -> {} ({:?}), which no leg routes",
                s.src.0, s.dst.0, s.direction
            );
        }
        let generation = self.generation.entry(id).or_default();
        let session = Session {
            id,
            gateway: gw.to_string(),
            call_id: ku.call_id.clone(),
            streams: ku.streams.clone(),
            generation: *generation,
            created_ms: 0,
        };
        *generation += 1;
        if let Err(e) = self.relay.apply(RelayCommand::Arm(Box::new(session))) {
            panic!("arming a session of valid keys failed: {e}");
        }
        self.armed.insert(
            id,
            ku.streams
                .iter()
                .map(|s| (s.src.0, s.dst.0, s.ssrc))
                .collect(),
        );
        self.stats.escrowed += 1;
    }

    fn call_ended(&mut self, call: u8) {
        let call = call % CALLS;
        self.anchor.call_ended(Instant::now(), &call_id(call));
        self.pump(call, false);
        assert!(
            !self.owner.values().any(|c| *c == call),
            "call_ended cleared every leg of the call (its own ports' and the shared pair's)"
        );
    }
}

/// Target `media_relay`: SDP bodies into the SPG's `RelayAnchor`, its commands into a `Relay`,
/// sessions armed after `CallTable::check_key_update`, and datagrams into `Relay::handle`.
///
/// Checks: no panic; the relay takes every command of its anchor; a refused body sends no
/// command and changes none of the paths check_key_update accepts; the rewritten SDP parses,
/// keeps its m= lines and keys, and points every non-zero media port (and RTCP) at the relay,
/// on a port whose leg is set for that call; a port is never
/// handed to two calls at once, legs come in mirrored pairs, and `Relay::legs()` counts the legs
/// the commands set; a datagram is forwarded only from a leg's known peer to its known
/// destination, and, when it carries a session_ID or must (source-based: from a gateway; global:
/// RTP), only with the session_ID of an armed session that has the (src, relay port) stream,
/// its tag verified when sampling every packet; malformed IPv4 options are never forwarded;
/// check_key_update accepts only streams the legs route; after `call_ended` of every call, no
/// leg is left and every port pair is back in the pool.
pub fn media_relay(data: &[u8]) -> MediaStats {
    let mut r = Reader(data);
    let Some(cfg) = r.u8().map(RelayFuzzConfig::decode) else {
        return MediaStats::default();
    };
    let mut run = RelayRun::new(cfg);
    for _ in 0..MAX_OPS {
        let Some(op) = r.u8() else { break };
        let done = match op % 5 {
            0 => (|| {
                let sel = r.u8()?;
                let body = r.block16()?;
                run.sdp(sel, body);
                Some(())
            })(),
            1 => (|| {
                let port = r.u8()?;
                let src = r.u8()?;
                let options = r.block8()?;
                let packet = r.block16()?;
                run.datagram(port, src, options, packet);
                Some(())
            })(),
            2 => r.u8().map(|c| run.call_ended(c)),
            3 => (|| {
                let sel = r.u8()?;
                let gw = r.u8()?;
                let n = r.u8()? % 5;
                let mut streams = Vec::new();
                for _ in 0..n {
                    let b = r.take(3);
                    if b.len() < 3 {
                        return None;
                    }
                    streams.push(ArmStream {
                        sel: b[0],
                        key: b[1],
                        ssrc: b[2],
                    });
                }
                run.arm(sel, gw, &streams);
                Some(())
            })(),
            _ => r.u8().map(|s| {
                let id = SESSION_IDS[usize::from(s & 3)];
                run.armed.remove(&id);
                if let Err(e) = run.relay.apply(RelayCommand::Disarm(id)) {
                    panic!("disarm failed: {e}");
                }
            }),
        };
        if done.is_none() {
            break;
        }
    }
    for call in 0..CALLS {
        run.call_ended(call);
    }
    assert!(run.legs.is_empty(), "legs left after every call ended");
    assert_eq!(
        run.anchor.free_pairs(),
        run.total_pairs,
        "every port pair is back in the pool after every call ended"
    );
    assert!(
        run.table
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty(),
        "the call table is empty after every call ended"
    );
    run.stats
}

// ---------------------------------------------------------------------------------------------
// media_bridge
// ---------------------------------------------------------------------------------------------

/// The provider's trusted-peer name: SDP from it is "outside".
pub const PROVIDER: &str = "spg";
/// The gateway's inside and outside addresses (config bit 6 makes them one address).
pub const INSIDE_IP: [u8; 4] = [10, 1, 0, 1];
pub const OUTSIDE_IP: [u8; 4] = [192, 0, 2, 1];
/// A user's phone, the SPG relay's port facing the gateway, and other sources.
pub const USER: &str = "10.1.0.50:4000";
pub const RELAY: &str = "203.0.113.1:20000";
pub const BRIDGE_SOURCES: [&str; 6] = [
    USER,
    RELAY,
    "10.1.0.51:4002",
    "203.0.113.1:20002",
    "198.51.100.99:1234",
    "10.1.0.50:4001",
];
/// What `from_trusted`/`to_trusted` can be: none (a user), the provider, another trunk.
pub const BRIDGE_PEERS: [Option<&str>; 3] = [None, Some(PROVIDER), Some("peer-x")];
/// The RTP extension ids a config can negotiate.
const EXT_IDS: [u8; 3] = [5, 1, 14];

/// The bridge's settings picked by the config byte.
///
/// ```text
/// bits 0-1   carrier: IPv4 option, RTP extension id 5, 1, 14
/// bits 2-3   inside policy: mandatory, optional, off, mandatory
/// bits 4-5   port_count: 40, 8, 6, 4
/// bit 6      inside and outside on one address (192.0.2.1)
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BridgeFuzzConfig {
    pub carrier: Carrier,
    pub inside_policy: EncryptionPolicy,
    pub port_count: u16,
    pub one_address: bool,
}

impl BridgeFuzzConfig {
    pub const DEFAULT: BridgeFuzzConfig = BridgeFuzzConfig {
        carrier: Carrier::Ipv4Option,
        inside_policy: EncryptionPolicy::Mandatory,
        port_count: 40,
        one_address: false,
    };

    pub fn decode(b: u8) -> Self {
        BridgeFuzzConfig {
            carrier: match b & 3 {
                0 => Carrier::Ipv4Option,
                n => Carrier::RtpExtension {
                    id: EXT_IDS[usize::from(n - 1)],
                },
            },
            inside_policy: match b >> 2 & 3 {
                1 => EncryptionPolicy::Optional,
                2 => EncryptionPolicy::Off,
                _ => EncryptionPolicy::Mandatory,
            },
            port_count: [40, 8, 6, 4][usize::from(b >> 4 & 3)],
            one_address: b & 0x40 != 0,
        }
    }

    pub fn encode(&self) -> u8 {
        let carrier = match self.carrier {
            Carrier::Ipv4Option => 0,
            Carrier::RtpExtension { id } => {
                EXT_IDS.iter().position(|x| *x == id).unwrap_or(0) as u8 + 1
            }
        };
        let policy = match self.inside_policy {
            EncryptionPolicy::Optional => 1,
            EncryptionPolicy::Off => 2,
            _ => 0,
        };
        let size = [40, 8, 6, 4]
            .iter()
            .position(|n| *n == self.port_count)
            .unwrap_or(0) as u8;
        carrier | policy << 2 | size << 4 | u8::from(self.one_address) << 6
    }

    pub fn bridge_config(&self) -> BridgeConfig {
        let outside = IpAddr::from(OUTSIDE_IP);
        BridgeConfig {
            inside_address: if self.one_address {
                outside
            } else {
                IpAddr::from(INSIDE_IP)
            },
            outside_address: outside,
            first_port: 30_000,
            port_count: self.port_count,
            carrier: self.carrier,
            inside_policy: self.inside_policy,
            provider: PROVIDER.into(),
            cname: "gw.fuzz.example".into(),
        }
    }
}

/// Writes `media_bridge` inputs.
///
/// ```text
/// op 0  sdp        sel (bits 0-1 call, 2 callee side, 3 answer, 4-5 from, 6-7 to: an index
///                  into BRIDGE_PEERS), u16 length, body
/// op 1  acked      sel (bits 0-1 call, 2 callee side)
/// op 2  call_ended call
/// op 3  escrowed   sel (bits 0-1 call, 2-3 session_ID): the escrow answered the call's last
///                  key_update: BridgeCommand::Tag for its outside port (as the gateway's
///                  escrow client does); nothing if the call has no key_update
/// op 4  datagram   port selector, source selector, flags (bits 0-1: room after the packet:
///                  HEADROOM, HEADROOM + 40, none, HEADROOM / 2), u16 length + UDP payload
/// ```
///
/// Selectors as in `media_relay` ([`BRIDGE_SOURCES`], first_port 30000).
#[derive(Debug, Clone)]
pub struct BridgeInput(Writer);

impl BridgeInput {
    pub fn new(cfg: BridgeFuzzConfig) -> Self {
        BridgeInput(Writer(vec![cfg.encode()]))
    }

    /// `from`/`to`: indexes into [`BRIDGE_PEERS`].
    pub fn sdp(&mut self, call: u8, side: Side, kind: SdpKind, from: u8, to: u8, body: &str) {
        self.0.u8(0);
        self.0.u8(call & 3
            | u8::from(side == Side::Callee) << 2
            | u8::from(kind == SdpKind::Answer) << 3
            | (from & 3) << 4
            | (to & 3) << 6);
        self.0.block16(body.as_bytes());
    }

    pub fn acked(&mut self, call: u8, side: Side) {
        self.0.u8(1);
        self.0.u8(call & 3 | u8::from(side == Side::Callee) << 2);
    }

    pub fn call_ended(&mut self, call: u8) {
        self.0.u8(2);
        self.0.u8(call);
    }

    pub fn escrowed(&mut self, call: u8, session: u8) {
        self.0.u8(3);
        self.0.u8(call & 3 | (session & 3) << 2);
    }

    pub fn datagram(&mut self, port_sel: u8, src_sel: u8, room: u8, packet: &[u8]) {
        self.0.u8(4);
        self.0.u8(port_sel);
        self.0.u8(src_sel);
        self.0.u8(room);
        self.0.block16(packet);
    }

    pub fn finish(self) -> Vec<u8> {
        self.0 .0
    }
}

/// What the bridge's data plane was told about one port.
#[derive(Debug, Clone, Copy)]
struct LegModel {
    peer: Option<SocketAddr>,
    out_port: u16,
    dst: Option<SocketAddr>,
    outward: bool,
}

/// What the fuzzer knows of one call (by index).
#[derive(Debug, Default)]
struct CallModel {
    /// The outside port our outside SDP named.
    outside_port: Option<u16>,
    /// Keys we put in SDP sent outside: (suite, master key || salt).
    ours: Vec<(SrtpProfile, Vec<u8>)>,
    /// The `a=ssrc` we announced outside.
    our_ssrc: Option<u32>,
    /// Keys the provider sent.
    theirs: Vec<(SrtpProfile, Vec<u8>)>,
    /// The outside port of the last key_update (the escrow client tags it).
    escrow_port: Option<u16>,
    /// Send keys escrowed.
    escrowed: Vec<(SrtpProfile, Vec<u8>)>,
}

struct BridgeRun {
    cfg: BridgeFuzzConfig,
    bc: BridgeConfig,
    anchor: BridgeAnchor,
    bridge: Bridge,
    media: Arc<Mutex<Vec<BridgeCommand>>>,
    escrow: Arc<Mutex<Vec<EscrowRequest>>>,
    legs: BTreeMap<u16, LegModel>,
    owner: HashMap<u16, u8>,
    tags: HashMap<u16, u64>,
    calls: Vec<CallModel>,
    /// Ports named in SDP sent outside.
    outside_ports: HashSet<u16>,
    /// Keys from inside / from the provider: master key || salt, and their base64 texts.
    inside_keys: HashSet<Vec<u8>>,
    inside_texts: HashSet<String>,
    provider_keys: HashSet<Vec<u8>>,
    provider_texts: HashSet<String>,
    /// Outward packets sent, by (key, SSRC, index): their bytes (keystream reuse check).
    sent: HashMap<(Vec<u8>, u32, u64), Vec<u8>>,
    /// Highest ROC seen per (key, SSRC).
    roc: HashMap<(Vec<u8>, u32), u32>,
    total_pairs: usize,
    stats: MediaStats,
}

impl BridgeRun {
    fn new(cfg: BridgeFuzzConfig) -> Self {
        let bc = cfg.bridge_config();
        let media: Arc<Mutex<Vec<BridgeCommand>>> = Arc::default();
        let escrow: Arc<Mutex<Vec<EscrowRequest>>> = Arc::default();
        let (m, e) = (media.clone(), escrow.clone());
        let anchor = BridgeAnchor::new(
            bc.clone(),
            Box::new(move |c| m.lock().unwrap_or_else(|p| p.into_inner()).push(c)),
            Box::new(move |r| e.lock().unwrap_or_else(|p| p.into_inner()).push(r)),
        );
        let total_pairs = anchor.free_pairs();
        BridgeRun {
            cfg,
            bridge: Bridge::new(&bc),
            bc,
            anchor,
            media,
            escrow,
            legs: BTreeMap::new(),
            owner: HashMap::new(),
            tags: HashMap::new(),
            calls: (0..CALLS).map(|_| CallModel::default()).collect(),
            outside_ports: HashSet::new(),
            inside_keys: HashSet::new(),
            inside_texts: HashSet::new(),
            provider_keys: HashSet::new(),
            provider_texts: HashSet::new(),
            sent: HashMap::new(),
            roc: HashMap::new(),
            total_pairs,
            stats: MediaStats::default(),
        }
    }

    /// Applies the anchor's data-plane commands and checks its escrow requests.
    fn pump(&mut self, call: u8) {
        let cmds = std::mem::take(&mut *self.media.lock().unwrap_or_else(|p| p.into_inner()));
        for cmd in cmds {
            match &cmd {
                BridgeCommand::Leg { port, leg: Some(l) } => {
                    if let Some(o) = self.owner.get(port) {
                        assert_eq!(
                            *o, call,
                            "port {port} handed to call {call} while call {o} uses it"
                        );
                    }
                    self.owner.insert(*port, call);
                    self.legs.insert(
                        *port,
                        LegModel {
                            peer: l.peer,
                            out_port: l.out_port,
                            dst: l.dst,
                            outward: l.outward,
                        },
                    );
                }
                BridgeCommand::Leg { port, leg: None } => {
                    self.owner.remove(port);
                    self.legs.remove(port);
                }
                BridgeCommand::Tag { port, session_id } => match session_id {
                    Some(s) => {
                        self.tags.insert(*port, *s);
                    }
                    None => {
                        self.tags.remove(port);
                    }
                },
            }
            self.bridge.apply(cmd);
        }
        let reqs = std::mem::take(&mut *self.escrow.lock().unwrap_or_else(|p| p.into_inner()));
        for r in reqs {
            match r {
                EscrowRequest::KeyUpdate {
                    call_id: cid,
                    outside_port,
                    streams,
                } => {
                    assert_eq!(cid, call_id(call), "a key_update names the call it is for");
                    self.check_key_update(call, outside_port, &streams);
                    self.stats.escrowed += 1;
                }
                EscrowRequest::End { call_id: cid } => {
                    assert_eq!(cid, call_id(call), "session_end names the call that ended");
                }
            }
        }
        // Each leg's port is the even port of a pair of its own (inside, outside).
        assert!(
            self.anchor.free_pairs() + self.owner.len() <= self.total_pairs,
            "a port pair is both free and in use"
        );
    }

    /// A key_update carries exactly our key from the outside SDP we wrote (Send) and the
    /// provider's key from its SDP (Receive), for the outside port our SDP named.
    fn check_key_update(&mut self, call: u8, outside_port: u16, streams: &[StreamKey]) {
        let c = &mut self.calls[usize::from(call)];
        assert_eq!(
            c.outside_port,
            Some(outside_port),
            "a key_update is for the outside port our outside SDP named"
        );
        let here = SocketAddr::new(self.bc.outside_address, outside_port);
        let sends: Vec<&StreamKey> = streams
            .iter()
            .filter(|s| s.direction == Direction::Send)
            .collect();
        let recvs: Vec<&StreamKey> = streams
            .iter()
            .filter(|s| s.direction == Direction::Receive)
            .collect();
        assert!(
            sends.len() == 1 && recvs.len() == 1 && streams.len() == 2,
            "a key_update has one Send and one Receive stream"
        );
        let known = |keys: &[(SrtpProfile, Vec<u8>)], s: &StreamKey| {
            keys.iter()
                .any(|(p, k)| p.name() == s.suite && *k == **s.master.0)
        };
        assert!(
            known(&c.ours, sends[0]),
            "the escrowed Send key is one we put in SDP sent outside for this call"
        );
        assert_eq!(
            sends[0].src.0, here,
            "the Send stream leaves our outside port"
        );
        assert_eq!(
            sends[0].ssrc, c.our_ssrc,
            "the Send stream has the SSRC our outside SDP announced"
        );
        assert!(
            known(&c.theirs, recvs[0]),
            "the escrowed Receive key is one the provider sent for this call"
        );
        assert_eq!(
            recvs[0].dst.0, here,
            "the Receive stream comes to our outside port"
        );
        c.escrow_port = Some(outside_port);
        let p = SrtpProfile::from_name(&sends[0].suite).expect("known suite");
        c.escrowed.push((p, sends[0].master.0.to_vec()));
    }

    fn port(&self, sel: u8) -> u16 {
        if sel & 0x80 != 0 && !self.legs.is_empty() {
            let n = usize::from(sel & 0x7f) % self.legs.len();
            return *self.legs.keys().nth(n).expect("n < len");
        }
        let span = self.cfg.port_count + 2;
        (self.bc.first_port - 1).wrapping_add(u16::from(sel & 0x7f) % span)
    }

    fn source(&self, sel: u8) -> SocketAddr {
        if sel & 0x80 != 0 {
            let peers: Vec<SocketAddr> = self.legs.values().filter_map(|l| l.peer).collect();
            if !peers.is_empty() {
                return peers[usize::from(sel & 0x7f) % peers.len()];
            }
        }
        BRIDGE_SOURCES[usize::from(sel) % BRIDGE_SOURCES.len()]
            .parse()
            .expect("fixed address")
    }

    fn sdp(&mut self, sel: u8, body: &[u8]) {
        let call = sel & 3;
        let cid = call_id(call);
        let from = BRIDGE_PEERS[usize::from(sel >> 4 & 3) % 3];
        let to = BRIDGE_PEERS[usize::from(sel >> 6 & 3) % 3];
        let kind = kind_of(sel & 8 != 0);
        let ctx = SdpContext {
            call_id: &cid,
            side: side_of(sel & 4 != 0),
            kind,
            method: "INVITE",
            status: (kind == SdpKind::Answer).then_some(200),
            from_addr: "127.0.0.1:5061".parse().expect("fixed address"),
            to_addr: "127.0.0.1:5061".parse().expect("fixed address"),
            from_trusted: from,
            to_trusted: to,
            to_tls: true,
        };
        let from_provider = from == Some(PROVIDER);
        let input = SessionDescription::parse(body).ok();
        if let Some(sd) = &input {
            let (keys, texts) = if from_provider {
                (&mut self.provider_keys, &mut self.provider_texts)
            } else {
                (&mut self.inside_keys, &mut self.inside_texts)
            };
            for (suite, k, t) in sdes_keys(sd) {
                keys.insert(k.clone());
                texts.extend(t);
                if from_provider {
                    self.calls[usize::from(call)].theirs.push((suite, k));
                }
            }
        }
        let r = self.anchor.sdp(Instant::now(), &ctx, body);
        self.pump(call);
        match r {
            Ok(None) => {
                assert!(
                    !from_provider && to != Some(PROVIDER),
                    "the bridge passes SDP on unchanged only between users"
                );
            }
            Ok(Some(out)) => {
                self.stats.sdp_rewritten += 1;
                let input = input.expect("the bridge rewrote only SDP it could read");
                self.check_rewritten(call, &input, &out, !from_provider);
            }
            Err(r) => {
                assert!(
                    (400..=599).contains(&r.status),
                    "a refusal is a 4xx/5xx: {r:?}"
                );
                self.stats.sdp_refused += 1;
            }
        }
    }

    /// The SDP the bridge wrote parses; SDP sent outside carries no user key and names only the
    /// gateway's outside address; SDP sent inside carries no provider key.
    fn check_rewritten(&mut self, call: u8, input: &SessionDescription, out: &[u8], outside: bool) {
        let sd = SessionDescription::parse(out).unwrap_or_else(|e| {
            panic!(
                "the bridge's SDP does not parse ({e}):\n{}",
                String::from_utf8_lossy(out)
            )
        });
        let text = String::from_utf8_lossy(out);
        let published = text_without_crypto(input);
        let (keys, texts, what) = if outside {
            (
                &self.inside_keys,
                &self.inside_texts,
                "a user's key in SDP sent outside",
            )
        } else {
            (
                &self.provider_keys,
                &self.provider_texts,
                "a provider's key in SDP sent inside",
            )
        };
        for t in texts {
            assert!(
                !text.contains(t.as_str()) || published.contains(t.as_str()),
                "{what}: {t}\n{text}"
            );
        }
        for (_, k, _) in sdes_keys(&sd) {
            assert!(!keys.contains(&k), "{what} (as a=crypto)\n{text}");
        }
        if !outside {
            return;
        }
        // Topology: SDP sent outside names only the gateway's outside address.
        let own = self.bc.outside_address;
        for l in sd
            .session
            .iter()
            .chain(sd.media.iter().flat_map(|m| &m.lines))
        {
            let addr = match l.kind {
                'c' => parse_connection(&l.value),
                'o' => l
                    .value
                    .split_whitespace()
                    .nth(5)
                    .and_then(|a| a.parse::<IpAddr>().ok()),
                _ => continue,
            };
            assert_eq!(
                addr,
                Some(own),
                "SDP sent outside names only the outside address: {}={}\n{text}",
                l.kind,
                l.value
            );
        }
        let c = &mut self.calls[usize::from(call)];
        if let Some(m) = sd.media.iter().find(|m| m.media == "audio" && m.port != 0) {
            c.outside_port = Some(m.port);
            self.outside_ports.insert(m.port);
            if let Some(s) = m
                .attributes("ssrc")
                .next()
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
            {
                c.our_ssrc = Some(s);
            }
        }
        for (suite, k, _) in sdes_keys(&sd) {
            c.ours.push((suite, k));
        }
    }

    fn escrowed(&mut self, sel: u8) {
        let call = sel & 3;
        // The escrow client tags the call's outside port once the SPG answered (and only while
        // the call lasts).
        if let Some(port) = self.calls[usize::from(call)].escrow_port {
            let sid = SESSION_IDS[usize::from(sel >> 2 & 3)];
            self.tags.insert(port, sid);
            self.bridge.apply(BridgeCommand::Tag {
                port,
                session_id: Some(sid),
            });
        }
    }

    fn call_ended(&mut self, call: u8) {
        let call = call % CALLS;
        self.anchor.call_ended(Instant::now(), &call_id(call));
        self.pump(call);
        assert!(
            !self.owner.values().any(|c| *c == call),
            "call_ended cleared every leg of the call"
        );
        self.calls[usize::from(call)] = CallModel::default();
    }

    fn datagram(&mut self, port_sel: u8, src_sel: u8, room: u8, packet: &[u8]) {
        let port = self.port(port_sel);
        let src = self.source(src_sel);
        let len = packet.len();
        let room = match room & 3 {
            0 => HEADROOM,
            1 => HEADROOM + 40,
            2 => 0,
            _ => HEADROOM / 2,
        };
        let mut buf = packet.to_vec();
        buf.resize(len + room + SLACK, SENTINEL);
        let d = self.bridge.handle(port, src, &mut buf[..len + room], len);
        let BridgeDecision::Forward {
            out_port,
            dst,
            len: n,
            ipv4_options,
        } = d
        else {
            self.stats.dropped += 1;
            return;
        };
        self.stats.forwarded += 1;
        assert!(
            n <= len + room,
            "the forwarded length {n} lies inside the buffer"
        );
        assert!(
            buf[len.max(n)..].iter().all(|b| *b == SENTINEL),
            "the bridge wrote past the returned length {n} (packet of {len} bytes)"
        );
        let leg = *self
            .legs
            .get(&port)
            .unwrap_or_else(|| panic!("forwarded a datagram of port {port}, which has no leg"));
        assert_eq!(
            leg.peer,
            Some(src),
            "forwarded only from the leg's known peer"
        );
        assert_eq!(
            (Some(dst), out_port),
            (leg.dst, leg.out_port),
            "forwarded to the leg's known destination, out of its port"
        );
        let out = &buf[..n];
        if !(leg.outward || self.outside_ports.contains(&out_port)) {
            assert!(
                ipv4_options.is_none(),
                "a datagram going inside carries no session_ID option"
            );
            return;
        }
        let sid = *self.tags.get(&out_port).unwrap_or_else(|| {
            panic!("a datagram went outward by port {out_port}, for which no session_ID was given")
        });
        match self.cfg.carrier {
            Carrier::Ipv4Option => assert_eq!(
                ipv4_options.map(|o| session_id_from_ipv4_options(&o)),
                Some(Ok(Some(sid))),
                "an outward datagram carries its session_ID in the IPv4 option"
            ),
            Carrier::RtpExtension { id } => assert_eq!(
                session_id_from_rtp(out, id),
                Ok(Some(sid)),
                "an outward datagram carries its session_ID in the RTP header extension"
            ),
        }
        self.stats.forwarded_escrowed += 1;
        self.check_outward_srtp(out_port, out);
    }

    /// An outward packet is SRTP under a key our outside SDP announced for its port, and no
    /// (key, SSRC, index) ever carries two different packets (keystream reuse).
    fn check_outward_srtp(&mut self, out_port: u16, out: &[u8]) {
        let mut keys: Vec<(SrtpProfile, Vec<u8>)> = Vec::new();
        let mut escrowed: Vec<Vec<u8>> = Vec::new();
        for c in self
            .calls
            .iter()
            .filter(|c| c.outside_port == Some(out_port))
        {
            keys.extend(c.ours.iter().cloned());
            escrowed.extend(c.escrowed.iter().map(|(_, k)| k.clone()));
        }
        let ssrc = ssrc_of(out).expect("a forwarded packet has an RTP header");
        let seq = u64::from(u16::from_be_bytes([out[2], out[3]]));
        for (p, k) in &keys {
            let top = self.roc.get(&(k.clone(), ssrc)).copied().unwrap_or(0);
            let mut rocs = vec![0, top, top.saturating_add(1), top.saturating_sub(1)];
            rocs.dedup();
            for roc in rocs {
                let Ok(mk) = MasterKey::from_key_salt(*p, k) else {
                    continue;
                };
                let Ok(mut rx) = SrtpSession::new(SrtpPolicy::new(mk)) else {
                    continue;
                };
                if roc > 0 && rx.set_rx_roc(ssrc, roc).is_err() {
                    continue;
                }
                let mut copy = out.to_vec();
                if rx.unprotect_rtp(&mut copy, out.len()).is_err() {
                    continue;
                }
                let index = u64::from(roc) << 16 | seq;
                if let Some(before) = self.sent.insert((k.clone(), ssrc, index), out.to_vec()) {
                    assert!(
                        before == out,
                        "keystream reuse: two different packets under one key, SSRC {ssrc:#x}, \
                         index {index}"
                    );
                }
                let t = self.roc.entry((k.clone(), ssrc)).or_default();
                *t = (*t).max(roc);
                if escrowed.contains(k) {
                    self.stats.escrow_readable += 1;
                }
                return;
            }
        }
        panic!("an outward packet is not SRTP under any key our outside SDP announced");
    }
}

/// Target `media_bridge`: SDP bodies (offers and answers, from users and from the provider)
/// into the voice gateway's `BridgeAnchor`, `acked` and `call_ended`; its commands into a
/// `Bridge`, the escrow's answers as `BridgeCommand::Tag`; datagrams into `Bridge::handle`.
///
/// Checks: no panic; SDP the bridge writes parses; SDP sent outside carries no key that came
/// from inside and names only the outside address; SDP sent inside carries no provider key; SDP
/// goes on unchanged only between users; a key_update carries one Send stream with a key of our
/// outside SDP (its SSRC, from our outside port) and one Receive stream with a key the provider
/// sent; a port is never handed to two calls at once; a datagram is forwarded only from a leg's
/// peer to its destination, never with bytes written past the returned length; an outward one
/// only when a session_ID was given for its port, carrying it in the configured carrier, as SRTP
/// under a key our outside SDP announced, never reusing a (key, SSRC, index) for other bytes;
/// after `call_ended` of every call no call and no leg is left and every port pair is back.
pub fn media_bridge(data: &[u8]) -> MediaStats {
    let mut r = Reader(data);
    let Some(cfg) = r.u8().map(BridgeFuzzConfig::decode) else {
        return MediaStats::default();
    };
    let mut run = BridgeRun::new(cfg);
    for _ in 0..MAX_OPS {
        let Some(op) = r.u8() else { break };
        let done = match op % 5 {
            0 => (|| {
                let sel = r.u8()?;
                let body = r.block16()?;
                run.sdp(sel, body);
                Some(())
            })(),
            1 => r.u8().map(|sel| {
                let call = sel & 3;
                run.anchor
                    .acked(Instant::now(), &call_id(call), side_of(sel & 4 != 0));
                run.pump(call);
            }),
            2 => r.u8().map(|c| run.call_ended(c)),
            3 => r.u8().map(|sel| run.escrowed(sel)),
            _ => (|| {
                let port = r.u8()?;
                let src = r.u8()?;
                let room = r.u8()?;
                let packet = r.block16()?;
                run.datagram(port, src, room, packet);
                Some(())
            })(),
        };
        if done.is_none() {
            break;
        }
    }
    for call in 0..CALLS {
        run.call_ended(call);
    }
    assert_eq!(run.anchor.calls(), 0, "no call left after every call ended");
    assert!(run.legs.is_empty(), "legs left after every call ended");
    assert_eq!(
        run.anchor.free_pairs(),
        run.total_pairs,
        "every port pair is back in the pool after every call ended"
    );
    run.stats
}
