//! voxgate-audit: what a capture exposes, and the quality of the calls in it.
//!
//! Sans-I/O: the driver feeds frames ([`Auditor::handle_frame`]: link type, capture time,
//! bytes), drains recovered audio ([`Auditor::drain_audio`]) and finally takes the
//! [`Report`] ([`Auditor::finish`]). Nothing here opens a file or a socket or reads a clock.
//!
//! - [`net`]: link/IP/UDP/TCP decoding, IP fragment reassembly (bounded, capture-time timeouts).
//! - [`tcp`]: SIP over TCP, reassembled per flow and framed by Content-Length.
//! - [`sip`]: SDP media endpoints and codecs, SDES keys, NULL suites and credentials.
//! - [`rtp`]: per-stream statistics computed as Wireshark's `rtp,streams` computes them.
//! - [`emodel`]: the ITU-T G.107 E-model MOS estimate.
//! - [`html`]: the self-contained HTML rendering of the report.
#![forbid(unsafe_code)]
#![warn(missing_debug_implementations)]

pub mod emodel;
#[doc(hidden)]
pub mod fuzzing;
pub mod html;
pub mod net;
pub mod report;
pub mod rtp;
pub mod sip;
pub mod tcp;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::json;
use voxgate_rtp::g711::Law;
use voxgate_rtp::packet::{is_rtcp, RtpHeader};
use voxgate_rtp::KeyRing;
use voxgate_sip::message::Framing;

pub use report::{Finding, Report, Severity, StreamReport};

use net::{Reassembler, Skip, Transport};
use report::*;
use rtp::{ByteEntropy, TimestampUnwrap, WiresharkStats};

impl Stream {
    /// Enough payload seen to tell plaintext from ciphertext.
    fn crypt_decidable(&self) -> bool {
        match self.law {
            Some(_) => self.corr.samples() >= rtp::CORRELATION_SAMPLES,
            None => self.entropy.total() >= 4000,
        }
    }

    /// Whether the payload looks like plaintext (G.711: sample correlation; others: entropy).
    fn payload_looks_plain(&self) -> bool {
        match self.law {
            Some(_) => self.corr.looks_plain(),
            None => !self.entropy.looks_random(),
        }
    }
}
use sip::{Credential, MediaDesc};
use tcp::SipStreams;

/// Limits that bound the auditor's memory whatever the capture holds.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// RTP streams tracked; packets of further streams are counted, not analysed.
    pub max_streams: usize,
    /// Streams under trial by the RTP heuristic at once.
    pub max_candidates: usize,
    /// SDP media endpoints remembered.
    pub max_media: usize,
    /// SIP calls listed in the report.
    pub max_calls: usize,
    /// Seconds of per-second series kept per stream.
    pub max_seconds: usize,
    /// Per-second points kept over all streams together.
    pub max_series_points: usize,
    /// Longest silence inserted into recovered audio for a gap (samples at 8 kHz).
    pub max_gap_samples: u64,
    /// Samples held for the driver before [`Auditor::drain_audio`]; beyond, audio is dropped.
    pub max_pending_audio: usize,
    /// Find RTP without signalling.
    pub heuristic: bool,
    /// Recover audio (G.711) at all.
    pub audio: bool,
    pub frag: net::FragLimits,
    pub tcp: tcp::TcpLimits,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_streams: 4096,
            max_candidates: 4096,
            max_media: 8192,
            max_calls: 4096,
            max_seconds: 24 * 3600,
            max_series_points: 2_000_000,
            max_gap_samples: 8000 * 10,
            max_pending_audio: 1 << 20,
            heuristic: true,
            audio: true,
            frag: net::FragLimits::default(),
            tcp: tcp::TcpLimits::default(),
        }
    }
}

/// FxHash (rustc's): stream lookups are on the per-packet path and need no DoS resistance
/// beyond the table bounds.
#[derive(Default, Clone, Copy)]
struct FxHasher(u64);

impl Hasher for FxHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(*b as u64);
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.write_u64(i as u64)
    }
    fn write_u16(&mut self, i: u16) {
        self.write_u64(i as u64)
    }
    fn write_u32(&mut self, i: u32) {
        self.write_u64(i as u64)
    }
    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64)
    }
}

type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// An RTP stream's identity, as Wireshark's: addresses, ports and SSRC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StreamKey {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub ssrc: u32,
}

/// How the plaintext of a stream is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Crypt {
    /// Not decided yet (heuristic stream, too few bytes seen).
    Unknown,
    Plain,
    /// SRTP per SDP (RTP/SAVP) or because the payload looks random.
    Srtp,
}

#[derive(Debug, Default)]
struct Series {
    points: Vec<SecondStats>,
    jitter_n: u32,
    expected_at_start: i64,
}

#[derive(Debug, Default)]
struct DelayAcc {
    reference: usize,
    n: u64,
    min: f64,
    max: f64,
    sum: f64,
}

#[derive(Debug)]
struct Stream {
    key: StreamKey,
    found_by: &'static str,
    media: Option<usize>,
    ws: WiresharkStats,
    unwrap: TimestampUnwrap,
    pt: u8,
    codec: String,
    clock_rate: u32,
    law: Option<Law>,
    crypt: Crypt,
    packets: u64,
    first_ms: f64,
    last_ms: f64,
    entropy: ByteEntropy,
    /// For G.711 streams: whether the payload decodes to audio-like samples.
    corr: rtp::SampleCorrelation,
    series: Series,
    delay: Option<DelayAcc>,
    srtp: Option<SrtpStats>,
    /// Packets (timestamp, payload) held until a heuristic stream's encryption is known.
    hold: Vec<(i64, Vec<u8>)>,
    audio_next_ts: Option<i64>,
    /// The WAV file name ([`audio_file_name`]), made once.
    audio_file: String,
    audio_samples: u64,
    audio_concealed: u64,
    /// The last timestamp step between consecutive packets (for the packetisation time).
    last_seq_ts: Option<(u16, i64)>,
    ptime_ms: f64,
}

/// A possible stream seen by the heuristic, not yet confirmed.
#[derive(Debug)]
struct Candidate {
    packets: Vec<(f64, Vec<u8>)>,
    last_seq: u16,
    pt: u8,
}

/// Largest datagram the RTP heuristic looks at.
const MAX_CANDIDATE_PACKET: usize = 1600;

/// Packets of one SSRC that confirm a stream.
const CONFIRM_PACKETS: usize = 4;

/// The arrival times of recent packets of an SSRC, for one-way delay between capture points.
#[derive(Debug)]
struct SsrcTrack {
    owner: usize,
    /// Slot by sequence number modulo the length: (seq + 1, arrival ms); 0 = empty.
    slots: Box<[(u32, f64)]>,
}

const SSRC_SLOTS: usize = 512;

#[derive(Debug)]
struct CallAcc {
    from: String,
    to: String,
    transport: &'static str,
    sdes_keys: usize,
}

#[derive(Debug, Default)]
struct Signalling {
    messages_udp: u64,
    messages_tcp: u64,
    parse_errors: u64,
    first_parse_error: Option<String>,
    /// Endpoint pairs that spoke SIP without TLS (bounded).
    clear_endpoints: BTreeSet<(String, String, &'static str)>,
    calls: BTreeMap<String, CallAcc>,
    media: Vec<MediaDesc>,
    media_by_addr: FxMap<SocketAddr, usize>,
    keyring: KeyRing,
    /// Key material seen, to add each key once (compared by value, never reported).
    keys_seen: BTreeSet<Vec<u8>>,
    /// Key ring position → call id.
    key_calls: Vec<String>,
    digest: BTreeMap<(String, String, String), u64>,
    basic: BTreeMap<(String, usize), u64>,
    null_suites: BTreeMap<(String, String), u64>,
    limits: BTreeMap<&'static str, u64>,
}

impl Signalling {
    fn on_message(
        &mut self,
        raw: &[u8],
        framing: Framing,
        src: SocketAddr,
        dst: SocketAddr,
        cfg: &Config,
    ) {
        let transport = match framing {
            Framing::Datagram => {
                self.messages_udp += 1;
                "UDP"
            }
            Framing::Stream => {
                self.messages_tcp += 1;
                "TCP"
            }
        };
        if self.clear_endpoints.len() < 64 {
            let (a, b) = if src <= dst { (src, dst) } else { (dst, src) };
            self.clear_endpoints
                .insert((a.to_string(), b.to_string(), transport));
        }
        let facts = match sip::analyse(raw, framing) {
            Ok(f) => f,
            Err(e) => {
                self.parse_errors += 1;
                self.first_parse_error.get_or_insert_with(|| e.to_string());
                return;
            }
        };
        let call_id = facts.call_id.clone().unwrap_or_default();
        if !call_id.is_empty() && !self.calls.contains_key(&call_id) {
            if self.calls.len() < cfg.max_calls {
                self.calls.insert(
                    call_id.clone(),
                    CallAcc {
                        from: facts.from.clone().unwrap_or_default(),
                        to: facts.to.clone().unwrap_or_default(),
                        transport,
                        sdes_keys: 0,
                    },
                );
            } else {
                *self.limits.entry("calls not listed").or_default() += 1;
            }
        }
        for c in facts.credentials {
            match c {
                Credential::Digest {
                    username,
                    realm,
                    algorithm,
                } => {
                    if self.digest.len() < 256 {
                        *self.digest.entry((username, realm, algorithm)).or_default() += 1;
                    }
                }
                Credential::Basic {
                    username,
                    password_len,
                } => {
                    if self.basic.len() < 256 {
                        *self.basic.entry((username, password_len)).or_default() += 1;
                    }
                }
            }
        }
        for m in facts.media {
            for s in &m.null_suites {
                if self.null_suites.len() < 256 {
                    *self
                        .null_suites
                        .entry((m.call_id.clone(), s.clone()))
                        .or_default() += 1;
                }
            }
            for a in &m.crypto {
                let Ok(keys) = a.master_keys() else { continue };
                let Some(first) = keys.first() else { continue };
                let material = first.key_salt().to_vec();
                if self.keys_seen.contains(&material) || self.keys_seen.len() >= 1024 {
                    continue;
                }
                if let Ok(policy) = a.to_policy() {
                    if self.keyring.add(policy, None).is_ok() {
                        self.keys_seen.insert(material);
                        self.key_calls.push(m.call_id.clone());
                        if let Some(c) = self.calls.get_mut(&m.call_id) {
                            c.sdes_keys += 1;
                        }
                    }
                }
            }
            match self.media_by_addr.get(&m.addr) {
                Some(&i) => self.media[i] = m,
                None if self.media.len() < cfg.max_media => {
                    self.media_by_addr.insert(m.addr, self.media.len());
                    self.media.push(m);
                }
                None => *self.limits.entry("SDP media not remembered").or_default() += 1,
            }
        }
    }
}

/// Audio recovered since the last drain: `(stream id, range in the sample buffer)`.
#[derive(Debug, Default)]
struct AudioQueue {
    samples: Vec<i16>,
    chunks: Vec<(usize, usize, usize)>,
}

/// The audit of one capture.
#[derive(Debug)]
pub struct Auditor {
    cfg: Config,
    summary: CaptureSummary,
    skipped: BTreeMap<Skip, u64>,
    capture_error: Option<String>,
    first_ts: Option<Duration>,
    last_ms: f64,
    frags: Reassembler,
    tcp: SipStreams,
    sig: Signalling,
    streams: Vec<Stream>,
    index: FxMap<StreamKey, usize>,
    candidates: FxMap<StreamKey, Candidate>,
    ssrcs: FxMap<u32, SsrcTrack>,
    audio: AudioQueue,
    /// Per-second points held over all streams.
    series_points: usize,
    /// G.711 decoding tables (mu-law, A-law): one lookup per byte on the audio path.
    g711: Box<[[i16; 256]; 2]>,
    scratch: Vec<u8>,
    limits: BTreeMap<&'static str, u64>,
}

/// What [`Auditor::drain_audio`] hands out.
#[derive(Debug)]
pub struct AudioChunk<'a> {
    pub stream: usize,
    /// The file name the report gives this stream's audio (in the output directory).
    pub file: &'a str,
    pub samples: &'a [i16],
}

/// The WAV file name of a stream.
pub fn audio_file_name(id: usize, ssrc: u32) -> String {
    format!("stream-{id:03}-{ssrc:08x}.wav")
}

fn rel_ms(ts: Duration, first: Duration) -> f64 {
    // Wireshark: nstime_to_msec(rel_ts) = secs*1000 + nsecs/1e6.
    let (s, ns) = if ts >= first {
        let d = ts - first;
        (d.as_secs() as f64, d.subsec_nanos() as f64)
    } else {
        let d = first - ts;
        (-(d.as_secs() as f64), -(d.subsec_nanos() as f64))
    };
    s * 1000.0 + ns / 1_000_000.0
}

impl Auditor {
    pub fn new(cfg: Config) -> Self {
        Auditor {
            cfg,
            summary: CaptureSummary::default(),
            skipped: BTreeMap::new(),
            capture_error: None,
            first_ts: None,
            last_ms: 0.0,
            frags: Reassembler::new(cfg.frag),
            tcp: SipStreams::new(cfg.tcp),
            sig: Signalling::default(),
            streams: Vec::new(),
            index: FxMap::default(),
            candidates: FxMap::default(),
            ssrcs: FxMap::default(),
            audio: AudioQueue::default(),
            series_points: 0,
            g711: Box::new([
                std::array::from_fn(|c| Law::Mu.decode(c as u8)),
                std::array::from_fn(|c| Law::A.decode(c as u8)),
            ]),
            scratch: Vec::with_capacity(2048),
            limits: BTreeMap::new(),
        }
    }

    /// Frames seen so far.
    pub fn frames(&self) -> u64 {
        self.summary.frames
    }

    /// Streams found so far.
    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }

    /// Records that the capture could not be read to its end.
    pub fn handle_capture_error(&mut self, error: &str) {
        self.capture_error = Some(error.chars().take(500).collect());
    }

    /// Records a frame the driver could not even hand over (e.g. unknown pcapng interface).
    pub fn handle_skipped_frame(&mut self) {
        *self.skipped.entry(Skip::UnsupportedLink).or_default() += 1;
    }

    /// Feeds one captured frame: `link_type` is the pcap LINKTYPE number, `timestamp` the
    /// capture time, `orig_len` the length on the wire.
    pub fn handle_frame(
        &mut self,
        link_type: u32,
        timestamp: Duration,
        data: &[u8],
        orig_len: u32,
    ) {
        self.summary.frames += 1;
        self.summary.bytes += data.len() as u64;
        if (orig_len as usize) > data.len() {
            self.summary.frames_cut_at_snaplen += 1;
        }
        let first = *self.first_ts.get_or_insert(timestamp);
        let now_ms = rel_ms(timestamp, first);
        if now_ms > self.last_ms {
            self.last_ms = now_ms;
        }
        let mut frags = std::mem::take(&mut self.frags);
        let before = frags.dropped;
        match net::decode(link_type, data, now_ms / 1000.0, &mut frags) {
            Err(why) => *self.skipped.entry(why).or_default() += 1,
            Ok(None) => {}
            Ok(Some(p)) => match p.transport {
                Transport::Udp => {
                    self.summary.udp_datagrams += 1;
                    if tcp::looks_like_sip(p.payload) {
                        self.sig
                            .on_message(p.payload, Framing::Datagram, p.src, p.dst, &self.cfg);
                    } else {
                        self.on_udp(p.src, p.dst, p.payload, now_ms);
                    }
                }
                Transport::Tcp { seq, syn, fin, rst } => {
                    self.summary.tcp_segments += 1;
                    let (sig, cfg) = (&mut self.sig, &self.cfg);
                    let (src, dst) = (p.src, p.dst);
                    self.tcp.segment(
                        src,
                        dst,
                        seq,
                        syn,
                        fin || rst,
                        p.payload,
                        now_ms / 1000.0,
                        &mut |m| sig.on_message(m, Framing::Stream, src, dst, cfg),
                    );
                }
            },
        }
        if frags.dropped > before {
            *self.skipped.entry(Skip::FragmentDropped).or_default() += frags.dropped - before;
        }
        self.summary.ip_fragments_reassembled = frags.reassembled;
        self.frags = frags;
    }

    fn on_udp(&mut self, src: SocketAddr, dst: SocketAddr, payload: &[u8], now_ms: f64) {
        if payload.len() < 12 || payload[0] >> 6 != 2 {
            self.summary.other_udp += 1;
            return;
        }
        if is_rtcp(payload) {
            self.summary.rtcp_packets += 1;
            return;
        }
        let Ok(hdr) = RtpHeader::parse(payload) else {
            self.summary.other_udp += 1;
            return;
        };
        let key = StreamKey {
            src,
            dst,
            ssrc: hdr.ssrc,
        };
        if let Some(&i) = self.index.get(&key) {
            self.summary.rtp_packets += 1;
            self.on_rtp(i, &hdr, payload, now_ms);
            return;
        }
        let media = self
            .sig
            .media_by_addr
            .get(&dst)
            .or_else(|| self.sig.media_by_addr.get(&src))
            .copied();
        if media.is_some() {
            if let Some(i) = self.new_stream(key, media, "sdp", hdr.payload_type) {
                self.summary.rtp_packets += 1;
                self.on_rtp(i, &hdr, payload, now_ms);
            }
            return;
        }
        // Candidates hold copies of their first packets: only datagram sizes RTP audio and
        // video use (within an Ethernet MTU) are tried, so the table stays small.
        if !self.cfg.heuristic
            || (64..96).contains(&hdr.payload_type)
            || payload.len() > MAX_CANDIDATE_PACKET
        {
            self.summary.other_udp += 1;
            return;
        }
        // The heuristic: CONFIRM_PACKETS packets of one SSRC, same payload type, sequence
        // numbers stepping forward by 1..=10.
        let confirmed = match self.candidates.get_mut(&key) {
            Some(c) => {
                let step = hdr.sequence_number.wrapping_sub(c.last_seq);
                if c.pt != hdr.payload_type || !(1..=10).contains(&step) {
                    c.packets.clear();
                    c.pt = hdr.payload_type;
                }
                c.last_seq = hdr.sequence_number;
                c.packets.push((now_ms, payload.to_vec()));
                c.packets.len() >= CONFIRM_PACKETS
            }
            None => {
                if self.candidates.len() >= self.cfg.max_candidates {
                    *self
                        .limits
                        .entry("heuristic candidates flushed")
                        .or_default() += self.candidates.len() as u64;
                    self.candidates.clear();
                }
                self.candidates.insert(
                    key,
                    Candidate {
                        packets: vec![(now_ms, payload.to_vec())],
                        last_seq: hdr.sequence_number,
                        pt: hdr.payload_type,
                    },
                );
                false
            }
        };
        if !confirmed {
            self.summary.other_udp += 1;
            return;
        }
        let Some(c) = self.candidates.remove(&key) else {
            return;
        };
        // The held packets were counted as other UDP: they are RTP after all.
        self.summary.other_udp -= (c.packets.len() - 1) as u64;
        let Some(i) = self.new_stream(key, None, "heuristic", c.pt) else {
            return;
        };
        for (t, pkt) in &c.packets {
            if let Ok(h) = RtpHeader::parse(pkt) {
                self.summary.rtp_packets += 1;
                self.on_rtp(i, &h, pkt, *t);
            }
        }
    }

    fn new_stream(
        &mut self,
        key: StreamKey,
        media: Option<usize>,
        found_by: &'static str,
        pt: u8,
    ) -> Option<usize> {
        if self.streams.len() >= self.cfg.max_streams {
            *self
                .limits
                .entry("packets of streams beyond max_streams")
                .or_default() += 1;
            return None;
        }
        let md = media.map(|m| &self.sig.media[m]);
        let crypt = match md {
            Some(m) if m.secure_profile() || !m.crypto.is_empty() => Crypt::Srtp,
            Some(_) => Crypt::Plain,
            None => Crypt::Unknown,
        };
        let id = self.streams.len();
        self.streams.push(Stream {
            key,
            found_by,
            media,
            ws: WiresharkStats::default(),
            unwrap: TimestampUnwrap::default(),
            pt,
            codec: String::new(),
            clock_rate: 0,
            law: None,
            crypt,
            packets: 0,
            first_ms: 0.0,
            last_ms: 0.0,
            entropy: ByteEntropy::default(),
            corr: rtp::SampleCorrelation::default(),
            series: Series::default(),
            delay: None,
            srtp: (crypt == Crypt::Srtp).then(SrtpStats::default),
            hold: Vec::new(),
            audio_next_ts: None,
            audio_file: audio_file_name(id, key.ssrc),
            audio_samples: 0,
            audio_concealed: 0,
            last_seq_ts: None,
            ptime_ms: 20.0,
        });
        self.index.insert(key, id);
        Some(id)
    }

    /// The codec, clock rate and G.711 law of a payload type for a stream.
    fn codec_of(&self, media: Option<usize>, pt: u8) -> (String, u32, Option<Law>) {
        let from_sdp = media.and_then(|m| self.sig.media[m].codec(pt));
        let (name, rate) = match from_sdp {
            Some(c) => (c.name.clone(), c.clock_rate),
            None => (
                rtp::static_codec_name(pt)
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("PT{pt}")),
                // Wireshark knows dynamic clock rates only from signalling.
                if pt < 96 {
                    rtp::static_clock_rate(pt)
                } else {
                    0
                },
            ),
        };
        // Wireshark: no jitter for telephone-event (its timestamps do not advance).
        let rate = if pt >= 96 && name.eq_ignore_ascii_case("telephone-event") {
            0
        } else {
            rate
        };
        let law = if name.eq_ignore_ascii_case("PCMU") {
            Some(Law::Mu)
        } else if name.eq_ignore_ascii_case("PCMA") {
            Some(Law::A)
        } else {
            None
        };
        (name, rate, law)
    }

    fn on_rtp(&mut self, i: usize, hdr: &RtpHeader, pkt: &[u8], now_ms: f64) {
        let media = self.streams[i].media;
        let (codec, rate, law) = {
            let s = &self.streams[i];
            if s.packets > 0 && s.pt == hdr.payload_type && !s.codec.is_empty() {
                (None, s.clock_rate, s.law)
            } else {
                let (c, r, l) = self.codec_of(media, hdr.payload_type);
                (Some(c), r, l)
            }
        };
        let s = &mut self.streams[i];
        if let Some(c) = codec {
            // The stream's codec is its main payload type: keep the first audio codec.
            if s.codec.is_empty() || (s.law.is_none() && law.is_some()) {
                s.codec = c;
                s.law = law;
            }
            if rate != 0 || s.clock_rate == 0 {
                s.clock_rate = rate.max(s.clock_rate);
            }
            s.pt = hdr.payload_type;
        }
        let rate = if hdr.payload_type == s.pt { rate } else { 0 };
        if s.packets == 0 {
            s.first_ms = now_ms;
        }
        s.packets += 1;
        s.last_ms = now_ms;
        let ext_ts = s.unwrap.extend(hdr.timestamp);
        let expected_before = s.ws.expected();
        s.ws.analyse(
            now_ms,
            hdr.sequence_number,
            ext_ts,
            hdr.payload_type,
            hdr.marker,
            rate,
        );
        // Packetisation time from consecutive packets.
        if let Some((seq, ts)) = s.last_seq_ts {
            if hdr.sequence_number == seq.wrapping_add(1) && ext_ts > ts && rate != 0 {
                s.ptime_ms = (ext_ts - ts) as f64 * 1000.0 / rate as f64;
            }
        }
        s.last_seq_ts = Some((hdr.sequence_number, ext_ts));
        // Per-second series: loss as expected − received within the second.
        let sec = (now_ms / 1000.0).max(0.0) as u32;
        let expected = s.ws.expected();
        let series = &mut s.series;
        if series.points.last().is_none_or(|p| p.t != sec)
            && series.points.len() < self.cfg.max_seconds
            && self.series_points < self.cfg.max_series_points
        {
            series.expected_at_start = expected_before;
            series.points.push(SecondStats {
                t: sec,
                ..Default::default()
            });
            series.jitter_n = 0;
            self.series_points += 1;
        }
        if let Some(p) = series.points.last_mut().filter(|p| p.t == sec) {
            p.packets += 1;
            p.lost = expected - series.expected_at_start - p.packets as i64;
            if rate != 0 {
                p.max_jitter_ms = p.max_jitter_ms.max(s.ws.jitter);
                series.jitter_n += 1;
                p.mean_jitter_ms += (s.ws.jitter - p.mean_jitter_ms) / series.jitter_n as f64;
            }
        }
        // One-way delay between two capture points of the same SSRC.
        self.track_delay(i, hdr, now_ms);
        // Payload: decrypt when keys are known, then audio.
        let pad = if hdr.padding {
            pkt.last().copied().unwrap_or(0) as usize
        } else {
            0
        };
        let raw_payload = pkt.get(hdr.header_len..pkt.len().saturating_sub(pad));
        if let Some(p) = raw_payload {
            let s = &mut self.streams[i];
            if s.entropy.total() < rtp::ENTROPY_SAMPLE {
                s.entropy.add(p);
            }
            if let Some(law) = s.law {
                if hdr.payload_type == s.pt && s.corr.samples() < rtp::CORRELATION_SAMPLES * 4 {
                    s.corr.add(p.iter().map(|c| law.decode(*c)));
                }
            }
        }
        let s = &mut self.streams[i];
        if s.crypt == Crypt::Unknown && s.crypt_decidable() {
            s.crypt = if s.payload_looks_plain() {
                Crypt::Plain
            } else {
                Crypt::Srtp
            };
            if s.crypt == Crypt::Srtp {
                s.srtp.get_or_insert_with(SrtpStats::default);
                s.hold.clear();
            } else {
                let hold = std::mem::take(&mut s.hold);
                for (ts, p) in hold {
                    self.push_audio(i, ts, &p);
                }
            }
        }
        let s = &mut self.streams[i];
        if !self.cfg.audio || s.law.is_none() || hdr.payload_type != s.pt {
            return;
        }
        match s.crypt {
            Crypt::Plain => {
                if let Some(p) = raw_payload {
                    self.push_audio(i, ext_ts, p);
                }
            }
            Crypt::Unknown => {
                if let Some(p) = raw_payload {
                    if s.hold.len() < 64 {
                        s.hold.push((ext_ts, p.to_vec()));
                    }
                }
            }
            Crypt::Srtp => {
                if self.sig.keyring.is_empty() {
                    return;
                }
                self.scratch.clear();
                self.scratch.extend_from_slice(pkt);
                let len = pkt.len();
                let res = self.sig.keyring.unprotect(&mut self.scratch, len);
                let s = &mut self.streams[i];
                let st = s.srtp.get_or_insert_with(SrtpStats::default);
                match res {
                    Ok(p) => {
                        st.authenticated += 1;
                        let plain = std::mem::take(&mut self.scratch);
                        if let Ok(h) = RtpHeader::parse(&plain[..p.len]) {
                            let pad = if h.padding {
                                plain[p.len - 1] as usize
                            } else {
                                0
                            };
                            if let Some(payload) =
                                plain.get(h.header_len..p.len.saturating_sub(pad))
                            {
                                self.push_audio(i, ext_ts, payload);
                            }
                        }
                        self.scratch = plain;
                    }
                    Err(_) => st.auth_failures += 1,
                }
            }
        }
    }

    fn track_delay(&mut self, i: usize, hdr: &RtpHeader, now_ms: f64) {
        let slot = hdr.sequence_number as usize % SSRC_SLOTS;
        let seq1 = hdr.sequence_number as u32 + 1;
        let track = match self.ssrcs.get_mut(&hdr.ssrc) {
            Some(t) => t,
            None => {
                if self.ssrcs.len() >= self.cfg.max_streams {
                    return;
                }
                self.ssrcs.entry(hdr.ssrc).or_insert_with(|| SsrcTrack {
                    owner: i,
                    slots: vec![(0u32, 0f64); SSRC_SLOTS].into_boxed_slice(),
                })
            }
        };
        if track.owner == i {
            track.slots[slot] = (seq1, now_ms);
            return;
        }
        let (s, t) = track.slots[slot];
        if s != seq1 {
            return;
        }
        // Only a stream to another address is a second capture point of the same packets.
        let owner_key = self.streams[track.owner].key;
        let key = self.streams[i].key;
        if owner_key.src == key.src && owner_key.dst == key.dst {
            return;
        }
        let d = (now_ms - t).abs();
        let acc = self.streams[i].delay.get_or_insert(DelayAcc {
            reference: track.owner,
            n: 0,
            min: f64::MAX,
            max: 0.0,
            sum: 0.0,
        });
        acc.n += 1;
        acc.min = acc.min.min(d);
        acc.max = acc.max.max(d);
        acc.sum += d;
    }

    /// Decodes a G.711 payload at RTP time `ts` into the audio queue, with silence for gaps.
    fn push_audio(&mut self, i: usize, ts: i64, payload: &[u8]) {
        let max_gap = self.cfg.max_gap_samples;
        let s = &mut self.streams[i];
        let Some(law) = s.law else { return };
        let next = *s.audio_next_ts.get_or_insert(ts);
        if ts < next {
            // Late or duplicate: its place in the audio is already filled.
            return;
        }
        if self.audio.samples.len() + payload.len() + max_gap as usize > self.cfg.max_pending_audio
            && !self.audio.samples.is_empty()
        {
            *self
                .limits
                .entry("audio samples dropped (not drained)")
                .or_default() += payload.len() as u64;
            return;
        }
        let start = self.audio.samples.len();
        let gap = ((ts - next) as u64).min(max_gap);
        self.audio
            .samples
            .extend(std::iter::repeat_n(0i16, gap as usize));
        let table = &self.g711[usize::from(law == Law::A)];
        self.audio
            .samples
            .extend(payload.iter().map(|c| table[*c as usize]));
        s.audio_concealed += gap;
        s.audio_samples += gap + payload.len() as u64;
        s.audio_next_ts = Some(ts + payload.len() as i64);
        let end = self.audio.samples.len();
        match self.audio.chunks.last_mut() {
            Some((id, _, e)) if *id == i && *e == start => *e = end,
            _ => self.audio.chunks.push((i, start, end)),
        }
    }

    /// Samples of recovered audio waiting for [`Auditor::drain_audio`] (a driver may drain
    /// every frame, or in batches while this stays well under `Config::max_pending_audio`).
    pub fn pending_audio(&self) -> usize {
        self.audio.samples.len()
    }

    /// Hands the audio recovered since the last call to `f`, stream by stream, in order.
    pub fn drain_audio(&mut self, mut f: impl FnMut(AudioChunk<'_>)) {
        if self.audio.chunks.is_empty() {
            return;
        }
        for &(id, a, b) in &self.audio.chunks {
            f(AudioChunk {
                stream: id,
                file: &self.streams[id].audio_file,
                samples: &self.audio.samples[a..b],
            });
        }
        self.audio.chunks.clear();
        self.audio.samples.clear();
    }

    /// Ends the audit: flushes held audio (drain it afterwards with [`Auditor::drain_audio`])
    /// and returns the report.
    pub fn finish(&mut self) -> Report {
        // Short heuristic streams whose encryption was never decided: decide now.
        for i in 0..self.streams.len() {
            let s = &mut self.streams[i];
            if s.crypt == Crypt::Unknown {
                s.crypt = if s.payload_looks_plain() {
                    Crypt::Plain
                } else {
                    Crypt::Srtp
                };
                let hold = std::mem::take(&mut s.hold);
                if s.crypt == Crypt::Plain {
                    for (ts, p) in hold {
                        self.push_audio(i, ts, &p);
                    }
                }
            }
        }
        let streams: Vec<StreamReport> = (0..self.streams.len())
            .map(|i| self.stream_report(i))
            .collect();
        let findings = self.findings(&streams);
        let mut calls: Vec<CallReport> = self
            .sig
            .calls
            .iter()
            .map(|(id, c)| CallReport {
                call_id: id.clone(),
                from: c.from.clone(),
                to: c.to.clone(),
                transport: c.transport,
                sdes_keys: c.sdes_keys,
                streams: streams
                    .iter()
                    .filter(|s| s.call_id.as_deref() == Some(id))
                    .map(|s| s.id)
                    .collect(),
            })
            .collect();
        calls.sort_by(|a, b| a.call_id.cmp(&b.call_id));
        let mut summary = self.summary.clone();
        summary.duration_s = self.last_ms / 1000.0;
        let mut limits = self.limits.clone();
        limits.extend(self.sig.limits.iter().map(|(k, v)| (*k, *v)));
        let t = self.tcp.counters;
        if t.gaps > 0 {
            limits.insert("SIP/TCP gaps resynchronised", t.gaps);
        }
        if t.overflows > 0 {
            limits.insert("SIP/TCP buffers overflowed", t.overflows);
        }
        if t.flows_evicted > 0 {
            limits.insert("SIP/TCP flows evicted", t.flows_evicted);
        }
        Report {
            tool: "voxgate audit",
            version: env!("CARGO_PKG_VERSION"),
            capture: summary,
            skipped: self
                .skipped
                .iter()
                .map(|(k, v)| (k.as_str(), *v))
                .collect(),
            capture_error: self.capture_error.clone(),
            sip: SipSummary {
                messages_udp: self.sig.messages_udp,
                messages_tcp: self.sig.messages_tcp,
                parse_errors: self.sig.parse_errors,
                calls,
            },
            streams,
            findings,
            limits_reached: limits,
            mos_model: "ITU-T G.107 E-model: R = 93.2 - Idd(Ta) - Ie,eff; Ie,eff = Ie + (95 - Ie)*Ppl/(Ppl + Bpl) (BurstR = 1); G.711: Ie = 0, Bpl = 4.3 (G.113 App. I, no PLC); Ta = measured one-way delay (0 when not measured) + packetisation time + 2 x mean jitter; MOS from R by G.107 Annex B",
        }
    }

    fn stream_report(&self, i: usize) -> StreamReport {
        let s = &self.streams[i];
        let expected = s.ws.expected();
        let lost = s.ws.lost();
        let lost_pct = if expected > 0 {
            lost as f64 * 100.0 / expected as f64
        } else {
            0.0
        };
        let delay = s.delay.as_ref().map(|d| DelayStats {
            reference_stream: d.reference,
            samples: d.n,
            min_ms: d.min,
            mean_ms: d.sum / d.n.max(1) as f64,
            max_ms: d.max,
        });
        let c = emodel::codec_impairment(&s.codec);
        let ta = delay.as_ref().map_or(0.0, |d| d.mean_ms) + s.ptime_ms + 2.0 * s.ws.mean_jitter;
        let loss = lost_pct.max(0.0);
        let r = emodel::r_factor(c, loss, ta);
        let encryption = match (s.crypt, &s.srtp) {
            (Crypt::Srtp, Some(st)) if st.authenticated > 0 => "srtp-decrypted",
            (Crypt::Srtp, _) if s.crypt_decidable() && s.payload_looks_plain() => {
                "srtp-null-cipher"
            }
            (Crypt::Srtp, _) => "srtp",
            _ => "plain",
        };
        StreamReport {
            id: i,
            src: s.key.src.to_string(),
            dst: s.key.dst.to_string(),
            ssrc: format!("0x{:08X}", s.key.ssrc),
            payload_type: s.pt,
            codec: s.codec.clone(),
            clock_rate: s.clock_rate,
            found_by: s.found_by,
            call_id: s.media.map(|m| self.sig.media[m].call_id.clone()),
            encryption,
            packets: s.packets,
            expected,
            lost,
            lost_pct,
            sequence_errors: s.ws.sequence,
            max_delta_ms: s.ws.max_delta,
            max_jitter_ms: s.ws.max_jitter,
            mean_jitter_ms: s.ws.mean_jitter,
            first_seen_s: s.first_ms / 1000.0,
            last_seen_s: s.last_ms / 1000.0,
            payload_entropy_bits: s.entropy.bits(),
            one_way_delay: delay,
            mos: MosEstimate {
                r_factor: r,
                mos: emodel::mos_from_r(r),
                ta_ms: ta,
                loss_pct: loss,
                ie: c.ie,
                bpl: c.bpl,
            },
            srtp: s.srtp.clone(),
            audio: (s.audio_samples > 0).then(|| AudioInfo {
                file: s.audio_file.clone(),
                samples: s.audio_samples,
                seconds: s.audio_samples as f64 / 8000.0,
                concealed_samples: s.audio_concealed,
            }),
            per_second: s.series.points.clone(),
        }
    }

    fn findings(&self, streams: &[StreamReport]) -> Vec<Finding> {
        let mut out = Vec::new();
        let finding = |severity, kind, title: String, detail: String| Finding {
            severity,
            kind,
            title,
            detail,
            streams: Vec::new(),
            files: Vec::new(),
            evidence: BTreeMap::new(),
        };
        // SDES keys in clear, per call, with the proof: packets that authenticated.
        let mut by_call: BTreeMap<&str, usize> = BTreeMap::new();
        for c in &self.sig.key_calls {
            *by_call.entry(c.as_str()).or_default() += 1;
        }
        for (call, keys) in by_call {
            let proof: Vec<&StreamReport> = streams
                .iter()
                .filter(|s| s.call_id.as_deref() == Some(call))
                .filter(|s| s.srtp.as_ref().is_some_and(|t| t.authenticated > 0))
                .collect();
            let authenticated: u64 = proof
                .iter()
                .map(|s| s.srtp.as_ref().map_or(0, |t| t.authenticated))
                .sum();
            let mut f = finding(
                Severity::Critical,
                "sdes_keys_in_clear",
                format!("SRTP keys (SDES) sent in clear SIP, call {call}"),
                format!(
                    "{keys} a=crypto key(s) were read from SIP that was not protected by TLS; \
                     with them {authenticated} SRTP packets in {} stream(s) authenticated and \
                     were decrypted. Anyone on the path can listen to this call: carry SIP over \
                     TLS (sips:) or key SRTP with DTLS-SRTP.",
                    proof.len()
                ),
            );
            f.streams = proof.iter().map(|s| s.id).collect();
            f.files = proof
                .iter()
                .filter_map(|s| s.audio.as_ref().map(|a| a.file.clone()))
                .collect();
            f.evidence.insert("keys".into(), json!(keys));
            f.evidence
                .insert("packets_authenticated".into(), json!(authenticated));
            out.push(f);
        }
        for s in streams.iter().filter(|s| s.encryption == "plain") {
            let mut f = finding(
                Severity::High,
                "unencrypted_rtp",
                format!("Unencrypted RTP {} -> {} ({})", s.src, s.dst, s.codec),
                match &s.audio {
                    Some(a) => format!(
                        "{} packets of plain RTP; {:.1} s of audio were recovered to {}.",
                        s.packets, a.seconds, a.file
                    ),
                    None => format!(
                        "{} packets of plain RTP ({} cannot be decoded here, but anyone can \
                         decode it with the right codec).",
                        s.packets, s.codec
                    ),
                },
            );
            f.streams.push(s.id);
            if let Some(a) = &s.audio {
                f.files.push(a.file.clone());
            }
            out.push(f);
        }
        for ((call, suite), n) in &self.sig.null_suites {
            let mut f = finding(
                Severity::High,
                "srtp_null_cipher",
                format!("SRTP offered without encryption ({suite})"),
                format!(
                    "The SDP of call {call} offers {suite} ({n} time(s)): media keyed this way \
                     is sent in clear or unauthenticated."
                ),
            );
            f.evidence.insert("suite".into(), json!(suite));
            out.push(f);
        }
        for s in streams
            .iter()
            .filter(|s| s.encryption == "srtp-null-cipher")
        {
            let mut f = finding(
                Severity::High,
                "srtp_null_cipher",
                format!("SRTP stream {} -> {} carries plaintext", s.src, s.dst),
                format!(
                    "The stream is announced as SRTP but its payload decodes as plain {} \
                     ({:.2} bits/byte of entropy): a NULL cipher.",
                    s.codec, s.payload_entropy_bits
                ),
            );
            f.streams.push(s.id);
            out.push(f);
        }
        for ((user, len), n) in &self.sig.basic {
            let mut f = finding(
                Severity::High,
                "sip_basic_auth",
                format!("HTTP Basic credentials in clear for user {user:?}"),
                format!(
                    "{n} message(s) carry user name and password ({len} characters, not \
                     reproduced here) base64-encoded, readable by anyone on the path."
                ),
            );
            f.evidence.insert("username".into(), json!(user));
            out.push(f);
        }
        for ((user, realm, alg), n) in &self.sig.digest {
            let weak = alg.to_ascii_uppercase().starts_with("MD5");
            let mut f = finding(
                if weak {
                    Severity::Medium
                } else {
                    Severity::Low
                },
                "sip_digest_md5",
                format!("SIP digest authentication ({alg}) in clear for {user:?}@{realm:?}"),
                format!(
                    "{n} message(s) carry a digest response an eavesdropper can attack offline \
                     (dictionary or brute force over {alg}); use TLS, and SHA-256 digests \
                     (RFC 8760)."
                ),
            );
            f.evidence.insert("username".into(), json!(user));
            f.evidence.insert("realm".into(), json!(realm));
            f.evidence.insert("algorithm".into(), json!(alg));
            out.push(f);
        }
        let clear = self.sig.messages_udp + self.sig.messages_tcp;
        if clear > 0 {
            let mut f = finding(
                Severity::Medium,
                "sip_without_tls",
                "SIP signalling without TLS".to_string(),
                format!(
                    "{} SIP message(s) over UDP and {} over TCP: who calls whom, when, and any \
                     SDES keys or credentials they carry are visible.",
                    self.sig.messages_udp, self.sig.messages_tcp
                ),
            );
            f.evidence.insert(
                "endpoints".into(),
                json!(self
                    .sig
                    .clear_endpoints
                    .iter()
                    .map(|(a, b, t)| format!("{a} <-> {b} ({t})"))
                    .collect::<Vec<_>>()),
            );
            out.push(f);
        }
        for s in streams {
            let bad_loss = s.lost_pct >= 1.0;
            if bad_loss || s.mos.mos < 3.6 || s.max_jitter_ms > 30.0 {
                let mut f = finding(
                    if s.lost_pct >= 5.0 {
                        Severity::Medium
                    } else {
                        Severity::Low
                    },
                    "poor_quality",
                    format!("Poor call quality {} -> {}", s.src, s.dst),
                    format!(
                        "{:.1}% lost, max jitter {:.1} ms, estimated MOS {:.2} (R {:.0}).",
                        s.lost_pct, s.max_jitter_ms, s.mos.mos, s.mos.r_factor
                    ),
                );
                f.streams.push(s.id);
                out.push(f);
            }
        }
        let skipped: u64 = self.skipped.values().sum();
        if self.capture_error.is_some() || self.sig.parse_errors > 0 {
            let mut f = finding(
                Severity::Info,
                "capture_damaged",
                "Parts of the capture could not be analysed".to_string(),
                format!(
                    "{}{skipped} frame(s) skipped (see `skipped`), {} SIP message(s) did not \
                     parse{}.",
                    self.capture_error
                        .as_ref()
                        .map(|e| format!("reading stopped early: {e}; "))
                        .unwrap_or_default(),
                    self.sig.parse_errors,
                    self.sig
                        .first_parse_error
                        .as_ref()
                        .map(|e| format!(" (first: {e})"))
                        .unwrap_or_default()
                ),
            );
            f.evidence.insert("skipped_frames".into(), json!(skipped));
            out.push(f);
        }
        out.sort_by_key(|f| f.severity);
        out
    }
}

#[cfg(test)]
mod tests;
