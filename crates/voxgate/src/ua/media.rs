//! The media of one call, sans-I/O: 20 ms G.711 frames from the played samples into RTP (and
//! SRTP with our key), received (S)RTP authenticated with the peer's key, decoded and placed
//! in the recording by RTP timestamp (so loss and reordering keep the timeline). The driver
//! owns the socket and the 20 ms clock.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use voxgate_rtp::{Error as SrtpError, RtpPacket, SrtpSession};
use voxgate_sip::sdp::{Security, SessionDescription};

use super::g711::Law;

/// Samples per 20 ms frame at 8 kHz.
pub const FRAME: usize = 160;
/// Longest recording kept per call (one hour at 8 kHz): a peer cannot grow memory without bound.
const MAX_RECORD: usize = 8000 * 3600;

/// Where and how to send and receive the call's media (the outcome of offer/answer).
#[derive(Debug, Clone)]
pub struct MediaPlan {
    /// The peer's RTP address (`None`: the peer sends only, or is on hold).
    pub remote: Option<SocketAddr>,
    pub law: Law,
    pub security: Security,
}

/// Counters of one or more calls.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MediaStats {
    pub rtp_sent: u64,
    pub rtp_received: u64,
    pub srtp_auth_failures: u64,
    /// Replays, malformed packets, unknown payload types.
    pub dropped: u64,
}

impl MediaStats {
    pub fn add(&mut self, o: &MediaStats) {
        self.rtp_sent += o.rtp_sent;
        self.rtp_received += o.rtp_received;
        self.srtp_auth_failures += o.srtp_auth_failures;
        self.dropped += o.dropped;
    }
}

/// One call's media.
pub struct MediaSession {
    law: Law,
    tx: Option<SrtpSession>,
    rx: Option<SrtpSession>,
    ssrc: u32,
    seq: u16,
    timestamp: u32,
    play: Option<Arc<[i16]>>,
    pos: usize,
    record: Vec<i16>,
    /// (SSRC, RTP timestamp of recording sample 0) of the stream being recorded.
    rec_base: Option<(u32, u32)>,
    pub stats: MediaStats,
}

impl std::fmt::Debug for MediaSession {
    // The SRTP sessions hold keys: only counters are shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaSession")
            .field("law", &self.law)
            .field("srtp", &self.tx.is_some())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl MediaSession {
    /// `random` gives the SSRC and the initial sequence number and timestamp (RFC 3550 §5.1).
    pub fn new(
        plan: &MediaPlan,
        play: Option<Arc<[i16]>>,
        random: [u8; 10],
    ) -> anyhow::Result<Self> {
        let (tx, rx) = match &plan.security {
            Security::Srtp { send, receive, .. } => (
                Some(SrtpSession::new(send.to_policy()?)?),
                Some(SrtpSession::new(receive.to_policy()?)?),
            ),
            Security::Unencrypted => (None, None),
        };
        let ssrc = u32::from_be_bytes([random[0], random[1], random[2], random[3]]);
        // Keep the sequence number low enough that the ROC guess of a late joiner is trivial.
        let seq = u16::from_be_bytes([random[4], random[5]]) & 0x7fff;
        let timestamp = u32::from_be_bytes([random[6], random[7], random[8], random[9]]);
        Ok(MediaSession {
            law: plan.law,
            tx,
            rx,
            ssrc,
            seq,
            timestamp,
            play,
            pos: 0,
            record: Vec::new(),
            rec_base: None,
            stats: MediaStats::default(),
        })
    }

    /// Whether the played samples are all sent (never, without `--play`: silence forever).
    pub fn source_ended(&self) -> bool {
        self.play.as_ref().is_some_and(|p| self.pos >= p.len())
    }

    /// The next 20 ms packet into `out` (RTP header, G.711 payload, SRTP trailer). Returns
    /// `false` once the played samples are used up.
    pub fn next_packet(&mut self, out: &mut Vec<u8>) -> anyhow::Result<bool> {
        if self.source_ended() {
            return Ok(false);
        }
        out.clear();
        out.push(0x80);
        out.push(self.law.payload_type() | if self.pos == 0 { 0x80 } else { 0 });
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&self.ssrc.to_be_bytes());
        for i in 0..FRAME {
            let s = match &self.play {
                // The last frame is padded with silence.
                Some(p) => p.get(self.pos + i).copied().unwrap_or(0),
                None => 0,
            };
            out.push(self.law.encode(s));
        }
        self.pos += FRAME;
        if let Some(tx) = &mut self.tx {
            tx.protect_rtp_vec(out)?;
        }
        self.seq = self.seq.wrapping_add(1);
        self.timestamp = self.timestamp.wrapping_add(FRAME as u32);
        self.stats.rtp_sent += 1;
        Ok(true)
    }

    /// A datagram from the media socket. RTCP is ignored; SRTP that does not authenticate is
    /// counted and dropped.
    pub fn handle_packet(&mut self, pkt: &mut Vec<u8>) {
        if pkt.len() < 2 || voxgate_rtp::packet::is_rtcp(pkt) {
            return;
        }
        if let Some(rx) = &mut self.rx {
            match rx.unprotect_rtp_vec(pkt) {
                Ok(()) => {}
                Err(SrtpError::AuthTagMismatch) => {
                    self.stats.srtp_auth_failures += 1;
                    return;
                }
                Err(_) => {
                    self.stats.dropped += 1;
                    return;
                }
            }
        }
        let Ok(rtp) = RtpPacket::parse(pkt) else {
            self.stats.dropped += 1;
            return;
        };
        let Some(law) = Law::from_payload_type(rtp.payload_type()) else {
            // Comfort noise, DTMF and the like are not audio for the recording.
            self.stats.dropped += 1;
            return;
        };
        self.stats.rtp_received += 1;
        let (ssrc, ts) = (rtp.ssrc(), rtp.timestamp());
        let base = match self.rec_base {
            Some((s, b)) if s == ssrc => b,
            _ => {
                // A new stream continues the recording where it stands.
                let b = ts.wrapping_sub(self.record.len() as u32);
                self.rec_base = Some((ssrc, b));
                b
            }
        };
        let offset = ts.wrapping_sub(base) as usize;
        let payload = rtp.payload();
        let end = offset.saturating_add(payload.len());
        if end > MAX_RECORD {
            self.stats.dropped += 1;
            return;
        }
        if self.record.len() < end {
            self.record.resize(end, 0);
        }
        for (slot, c) in self.record[offset..end].iter_mut().zip(payload) {
            *slot = law.decode(*c);
        }
    }

    /// The received audio so far (taken).
    pub fn take_recording(&mut self) -> Vec<i16> {
        std::mem::take(&mut self.record)
    }
}

fn connection_address(lines: &[voxgate_sip::sdp::Line]) -> Option<IpAddr> {
    lines.iter().filter(|l| l.kind == 'c').find_map(|l| {
        let mut f = l.value.split_whitespace();
        match (f.next(), f.next(), f.next()) {
            (Some("IN"), Some("IP4" | "IP6"), Some(a)) => a.split('/').next()?.parse().ok(),
            _ => None,
        }
    })
}

/// The peer's RTP address and G.711 law from its offer or answer: the first audio stream with
/// a port, its `c=` (or the session's), the first of its formats that is PCMU or PCMA.
pub fn peer_media(sd: &SessionDescription) -> Option<(Option<SocketAddr>, Law)> {
    let m = sd
        .media
        .iter()
        .find(|m| m.media == "audio" && m.port != 0)?;
    let law = m
        .formats
        .iter()
        .filter_map(|f| f.parse::<u8>().ok())
        .find_map(Law::from_payload_type)?;
    let ip = connection_address(&m.lines).or_else(|| connection_address(&sd.session));
    let remote = ip
        .filter(|ip| !ip.is_unspecified())
        .map(|ip| SocketAddr::new(ip, m.port));
    Some((remote, law))
}

#[cfg(test)]
mod tests {
    use super::*;
    use voxgate_rtp::{CryptoAttribute, SrtpProfile};

    fn plan(security: Security) -> MediaPlan {
        MediaPlan {
            remote: None,
            law: Law::Mu,
            security,
        }
    }

    #[test]
    fn srtp_frames_round_trip_and_land_by_timestamp() {
        let k1 = CryptoAttribute::new(1, SrtpProfile::AesCm128HmacSha1_80, &[7u8; 30]);
        let k2 = CryptoAttribute::new(1, SrtpProfile::AesCm128HmacSha1_80, &[9u8; 30]);
        let sec = |a: &CryptoAttribute, b: &CryptoAttribute| Security::Srtp {
            suite: SrtpProfile::AesCm128HmacSha1_80,
            send: a.clone(),
            receive: b.clone(),
        };
        let tone: Arc<[i16]> = (0..800)
            .map(|i| ((i as f64 * 0.3).sin() * 8000.0) as i16)
            .collect();
        let mut alice =
            MediaSession::new(&plan(sec(&k1, &k2)), Some(tone.clone()), [1; 10]).unwrap();
        let mut bob = MediaSession::new(&plan(sec(&k2, &k1)), None, [2; 10]).unwrap();
        let mut pkts = Vec::new();
        let mut buf = Vec::new();
        while alice.next_packet(&mut buf).unwrap() {
            pkts.push(buf.clone());
        }
        assert_eq!(pkts.len(), 5);
        assert!(alice.source_ended());
        // Out of order, one tampered.
        pkts.swap(1, 3);
        let mut bad = pkts[0].clone();
        bad[20] ^= 1;
        bob.handle_packet(&mut bad);
        for p in &mut pkts {
            bob.handle_packet(p);
        }
        assert_eq!(bob.stats.rtp_received, 5);
        assert_eq!(bob.stats.srtp_auth_failures, 1);
        let rec = bob.take_recording();
        let want: Vec<i16> = tone.iter().map(|s| Law::Mu.quantize(*s)).collect();
        assert_eq!(rec, want);
    }

    #[test]
    fn plain_rtp_and_sdp_peer_media() {
        let mut a = MediaSession::new(&plan(Security::Unencrypted), None, [3; 10]).unwrap();
        let mut buf = Vec::new();
        assert!(a.next_packet(&mut buf).unwrap());
        assert_eq!(buf.len(), 12 + FRAME);
        assert!(!a.source_ended(), "silence never ends");
        let sd = SessionDescription::parse(
            b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 RTP/SAVP 8 0\r\n",
        )
        .unwrap();
        let (remote, law) = peer_media(&sd).unwrap();
        assert_eq!(remote, Some("192.0.2.1:4000".parse().unwrap()));
        assert_eq!(law, Law::A);
        // Garbage is dropped without a panic.
        for junk in [&[][..], &[0x80], &[0x80, 0, 0], &[0xff; 40]] {
            a.handle_packet(&mut junk.to_vec());
        }
    }
}
