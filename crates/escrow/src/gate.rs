//! The SPG's per-datagram decision, sans-I/O: read the carrier's session_ID, find the session,
//! check that the datagram's 5-tuple (and SSRC) belong to it, verify the SRTP/SRTCP
//! authentication tag with the escrowed key (every packet, or every packet of the first N and
//! then one in K), then forward or drop with a counted reason. A tag that fails with the
//! escrowed key on the right tuple means the gateway escrowed a key it does not use: reported
//! as a gateway fault.
//!
//! Two modes (the seed paper's): **source-based**, where only datagrams from the registered
//! voice gateways must carry a valid session_ID (others pass), and **global**, where every
//! RTP/RTCP datagram must.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use voxgate_rtp::{Error as RtpError, MasterKey, SrtpPolicy, SrtpProfile, SrtpSession};

use crate::server::Session;

/// Which datagrams must be escrowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Datagrams from these voice gateways (source addresses) need a valid session_ID.
    SourceBased { gateways: Vec<IpAddr> },
    /// Every RTP/RTCP datagram needs one.
    Global,
}

/// How often tags are verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sampling {
    /// Every packet of a stream up to this many verified packets...
    pub first: u64,
    /// ... then one in this many (1: every packet).
    pub one_in: u64,
}

impl Sampling {
    pub const EVERY_PACKET: Sampling = Sampling {
        first: 0,
        one_in: 1,
    };
}

/// Why a datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Must be escrowed but carries no session_ID.
    NoSessionId,
    /// The session_ID is not a live session.
    UnknownSessionId,
    /// The session exists but this 5-tuple or SSRC is not one of its streams.
    WrongTuple,
    /// The authentication tag does not verify with the escrowed key: the sender does not use
    /// the key it escrowed (a gateway fault).
    TagMismatch,
    /// A replayed packet (already seen by the verifier).
    Replay,
    /// The carrier or the packet is malformed.
    Malformed,
}

impl DropReason {
    pub const ALL: [DropReason; 6] = [
        DropReason::NoSessionId,
        DropReason::UnknownSessionId,
        DropReason::WrongTuple,
        DropReason::TagMismatch,
        DropReason::Replay,
        DropReason::Malformed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DropReason::NoSessionId => "no_session_id",
            DropReason::UnknownSessionId => "unknown_session_id",
            DropReason::WrongTuple => "wrong_tuple",
            DropReason::TagMismatch => "tag_mismatch",
            DropReason::Replay => "replay",
            DropReason::Malformed => "malformed",
        }
    }
}

/// What to do with a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Forward; `verified` says whether its tag was checked (else sampled out or not escrowed).
    Forward {
        session_id: Option<u64>,
        verified: bool,
    },
    Drop(DropReason),
}

/// Errors arming a session.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GateError {
    #[error("stream {index}: {source}")]
    Key { index: usize, source: RtpError },
}

struct GateStream {
    src: SocketAddr,
    dst: SocketAddr,
    ssrc: Option<u32>,
    /// A receiver context with the escrowed key, used on copies of the packets.
    srtp: SrtpSession,
    /// After a rekey, the previous generation's context: packets still protected with the
    /// old key (in flight, or sent before the peer switched) verify with it until the first
    /// packet verifies with the new key.
    previous: Option<SrtpSession>,
    seen: u64,
    /// SHA-256 of the suite, master key and MKI (to tell a rekey from the same keys again).
    key_id: [u8; 32],
}

fn key_id(k: &crate::wire::StreamKey) -> [u8; 32] {
    let mut c = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    c.update(k.suite.as_bytes());
    c.update(&[0]);
    c.update(&k.master.0);
    c.update(&[0]);
    if let Some(m) = &k.mki {
        c.update(m);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(c.finish().as_ref());
    out
}

struct GateSession {
    streams: Vec<GateStream>,
}

/// Counters per reason and of forwarded/verified packets.
#[derive(Debug, Default, Clone)]
pub struct GateStats {
    pub forwarded: u64,
    pub verified: u64,
    pub dropped: HashMap<DropReason, u64>,
}

/// The gate.
pub struct MediaGate {
    mode: Mode,
    sampling: Sampling,
    sessions: HashMap<u64, GateSession>,
    stats: GateStats,
    scratch: Vec<u8>,
}

impl std::fmt::Debug for MediaGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaGate")
            .field("mode", &self.mode)
            .field("sessions", &self.sessions.len())
            .finish_non_exhaustive()
    }
}

fn is_rtcp(packet: &[u8]) -> bool {
    // RFC 5761: RTCP packet types 192-223 in the second byte.
    packet.len() >= 2 && (192..=223).contains(&packet[1])
}

fn looks_like_rtp(packet: &[u8]) -> bool {
    packet.len() >= 12 && packet[0] >> 6 == 2
}

fn ssrc_of(packet: &[u8]) -> Option<u32> {
    let off = if is_rtcp(packet) { 4 } else { 8 };
    let b = packet.get(off..off + 4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

impl MediaGate {
    pub fn new(mode: Mode, sampling: Sampling) -> Self {
        MediaGate {
            mode,
            sampling: Sampling {
                one_in: sampling.one_in.max(1),
                ..sampling
            },
            sessions: HashMap::new(),
            stats: GateStats::default(),
            scratch: Vec::with_capacity(2048),
        }
    }

    pub fn stats(&self) -> &GateStats {
        &self.stats
    }

    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// Arms (or re-arms after a rekey) the checks of an escrowed session. On a rekey, each
    /// stream's previous key stays usable until the new one has verified a packet; a stream
    /// whose key did not change keeps its context (its replay window is not reset).
    pub fn arm(&mut self, s: &Session) -> Result<(), GateError> {
        let mut old = self.sessions.remove(&s.id);
        let mut streams = Vec::with_capacity(s.streams.len());
        for (index, k) in s.streams.iter().enumerate() {
            let key_err = |source| GateError::Key { index, source };
            let profile = SrtpProfile::from_name(&k.suite).map_err(key_err)?;
            let (key, salt) = k.master.0.split_at(profile.key_len().min(k.master.0.len()));
            let mut mk = MasterKey::new(profile, key, salt).map_err(key_err)?;
            if let Some(m) = &k.mki {
                mk = mk.with_mki(m);
            }
            let id = key_id(k);
            let before = old.as_mut().and_then(|o| {
                let i = o
                    .streams
                    .iter()
                    .position(|p| p.src == k.src.0 && p.dst == k.dst.0)?;
                Some(o.streams.swap_remove(i))
            });
            match before {
                Some(mut same) if same.key_id == id => {
                    same.ssrc = k.ssrc;
                    streams.push(same);
                }
                before => {
                    let srtp = SrtpSession::new(SrtpPolicy::new(mk)).map_err(key_err)?;
                    streams.push(GateStream {
                        src: k.src.0,
                        dst: k.dst.0,
                        ssrc: k.ssrc,
                        srtp,
                        previous: before.map(|b| b.srtp),
                        seen: 0,
                        key_id: id,
                    });
                }
            }
        }
        self.sessions.insert(s.id, GateSession { streams });
        Ok(())
    }

    /// Forgets a session (its keys are wiped with it).
    pub fn disarm(&mut self, session_id: u64) {
        self.sessions.remove(&session_id);
    }

    fn drop(&mut self, r: DropReason) -> Verdict {
        *self.stats.dropped.entry(r).or_default() += 1;
        Verdict::Drop(r)
    }

    /// Decides about one datagram (UDP payload `packet`) from `src` to `dst` whose carrier
    /// gave `session_id` (`Err(())` when the carrier was malformed).
    pub fn check(
        &mut self,
        src: SocketAddr,
        dst: SocketAddr,
        session_id: Result<Option<u64>, ()>,
        packet: &[u8],
    ) -> Verdict {
        let id = match session_id {
            Err(()) => return self.drop(DropReason::Malformed),
            Ok(Some(_)) if matches!(&self.mode, Mode::SourceBased { gateways } if !gateways.contains(&src.ip())) =>
            {
                // Source-based: only this SPG's gateways escrow here. A session_ID from any
                // other source (a peer SPG relaying its own gateway's media, whose
                // session_IDs are that SPG's) is not ours to check.
                self.stats.forwarded += 1;
                return Verdict::Forward {
                    session_id: None,
                    verified: false,
                };
            }
            Ok(Some(id)) => id,
            Ok(None) => {
                let must = match &self.mode {
                    Mode::SourceBased { gateways } => gateways.contains(&src.ip()),
                    Mode::Global => looks_like_rtp(packet),
                };
                if must {
                    return self.drop(DropReason::NoSessionId);
                }
                self.stats.forwarded += 1;
                return Verdict::Forward {
                    session_id: None,
                    verified: false,
                };
            }
        };
        let sampling = self.sampling;
        let Some(session) = self.sessions.get_mut(&id) else {
            return self.drop(DropReason::UnknownSessionId);
        };
        if !looks_like_rtp(packet) {
            return self.drop(DropReason::Malformed);
        }
        let ssrc = ssrc_of(packet);
        let Some(stream) = session
            .streams
            .iter_mut()
            .find(|s| s.src == src && s.dst == dst && (s.ssrc.is_none() || s.ssrc == ssrc))
        else {
            return self.drop(DropReason::WrongTuple);
        };
        stream.seen += 1;
        let verify = stream.seen <= sampling.first
            || sampling.one_in <= 1
            || (stream.seen - sampling.first) % sampling.one_in == 1;
        if !verify {
            self.stats.forwarded += 1;
            return Verdict::Forward {
                session_id: Some(id),
                verified: false,
            };
        }
        // Verify on a copy: the datagram is forwarded as it came.
        self.scratch.clear();
        self.scratch.extend_from_slice(packet);
        let len = self.scratch.len();
        let rtcp = is_rtcp(packet);
        let mut r = if rtcp {
            stream.srtp.unprotect_rtcp(&mut self.scratch, len)
        } else {
            stream.srtp.unprotect_rtp(&mut self.scratch, len)
        };
        match (&r, stream.previous.as_mut()) {
            (Ok(_), Some(_)) => stream.previous = None,
            (Err(RtpError::AuthTagMismatch | RtpError::UnknownMki), Some(prev)) => {
                self.scratch.clear();
                self.scratch.extend_from_slice(packet);
                r = if rtcp {
                    prev.unprotect_rtcp(&mut self.scratch, len)
                } else {
                    prev.unprotect_rtp(&mut self.scratch, len)
                };
            }
            _ => {}
        }
        match r {
            Ok(_) => {
                self.stats.forwarded += 1;
                self.stats.verified += 1;
                Verdict::Forward {
                    session_id: Some(id),
                    verified: true,
                }
            }
            Err(RtpError::Replayed { .. } | RtpError::ReplayTooOld { .. }) => {
                self.drop(DropReason::Replay)
            }
            Err(RtpError::AuthTagMismatch | RtpError::UnknownMki) => {
                self.drop(DropReason::TagMismatch)
            }
            Err(_) => self.drop(DropReason::Malformed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Addr, Direction, Secret, StreamKey};
    use zeroize::Zeroizing;

    const A: &str = "192.0.2.10:40000";
    const B: &str = "198.51.100.7:50000";

    fn session(id: u64, key: u8) -> Session {
        Session {
            id,
            gateway: "gw1".into(),
            call_id: "c1".into(),
            streams: vec![StreamKey {
                direction: Direction::Send,
                src: Addr(A.parse().unwrap()),
                dst: Addr(B.parse().unwrap()),
                ssrc: Some(0x1111),
                suite: "AES_CM_128_HMAC_SHA1_80".into(),
                master: Secret(Zeroizing::new(vec![key; 30])),
                mki: None,
            }],
            generation: 0,
            created_ms: 0,
        }
    }

    fn sender(key: u8) -> SrtpSession {
        let mk = MasterKey::new(SrtpProfile::AesCm128HmacSha1_80, &[key; 16], &[key; 14]).unwrap();
        SrtpSession::new(SrtpPolicy::new(mk)).unwrap()
    }

    fn rtp(seq: u16, ssrc: u32) -> Vec<u8> {
        let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        p[4..8].copy_from_slice(&(u32::from(seq) * 160).to_be_bytes());
        p[8..12].copy_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(&[0x55; 160]);
        p
    }

    fn srtp(s: &mut SrtpSession, seq: u16, ssrc: u32) -> Vec<u8> {
        let mut p = rtp(seq, ssrc);
        s.protect_rtp_vec(&mut p).unwrap();
        p
    }

    #[test]
    fn every_drop_reason() {
        let (a, b) = (A.parse().unwrap(), B.parse().unwrap());
        let gw: SocketAddr = A.parse().unwrap();
        let mut g = MediaGate::new(
            Mode::SourceBased {
                gateways: vec![gw.ip()],
            },
            Sampling::EVERY_PACKET,
        );
        g.arm(&session(42, 7)).unwrap();
        let mut good = sender(7);
        // Escrowed, right tuple, right key.
        let p = srtp(&mut good, 1, 0x1111);
        assert_eq!(
            g.check(a, b, Ok(Some(42)), &p),
            Verdict::Forward {
                session_id: Some(42),
                verified: true
            }
        );
        // The same packet again: a replay.
        assert_eq!(
            g.check(a, b, Ok(Some(42)), &p),
            Verdict::Drop(DropReason::Replay)
        );
        // No session_ID from a gateway.
        let p = srtp(&mut good, 2, 0x1111);
        assert_eq!(
            g.check(a, b, Ok(None), &p),
            Verdict::Drop(DropReason::NoSessionId)
        );
        // Forged session_ID.
        assert_eq!(
            g.check(a, b, Ok(Some(43)), &p),
            Verdict::Drop(DropReason::UnknownSessionId)
        );
        // Valid session_ID on the wrong tuple (another port of the gateway), and the wrong SSRC.
        let other = SocketAddr::new(gw.ip(), gw.port().wrapping_add(1000));
        assert_eq!(
            g.check(other, b, Ok(Some(42)), &p),
            Verdict::Drop(DropReason::WrongTuple)
        );
        // A session_ID from a source that is not one of our gateways (a peer SPG relaying its
        // own gateway's media): not ours to check, forwarded unverified.
        let peer: SocketAddr = "192.0.2.99:40000".parse().unwrap();
        assert_eq!(
            g.check(peer, b, Ok(Some(43)), &p),
            Verdict::Forward {
                session_id: None,
                verified: false
            }
        );
        let p2 = srtp(&mut good, 3, 0x2222);
        assert_eq!(
            g.check(a, b, Ok(Some(42)), &p2),
            Verdict::Drop(DropReason::WrongTuple)
        );
        // Right session_ID and tuple, but encrypted with a key other than the escrowed one.
        let mut rogue = sender(8);
        let p3 = srtp(&mut rogue, 4, 0x1111);
        assert_eq!(
            g.check(a, b, Ok(Some(42)), &p3),
            Verdict::Drop(DropReason::TagMismatch)
        );
        // A malformed carrier.
        assert_eq!(
            g.check(a, b, Err(()), &p3),
            Verdict::Drop(DropReason::Malformed)
        );
        // Not from a gateway, no session_ID: source-based mode lets it pass.
        let p4 = srtp(&mut good, 5, 0x1111);
        assert!(matches!(
            g.check(peer, b, Ok(None), &p4),
            Verdict::Forward {
                session_id: None,
                ..
            }
        ));
        // In global mode every RTP datagram needs a session_ID.
        let mut global = MediaGate::new(Mode::Global, Sampling::EVERY_PACKET);
        assert_eq!(
            global.check(peer, b, Ok(None), &p4),
            Verdict::Drop(DropReason::NoSessionId)
        );
        assert!(matches!(
            global.check(peer, b, Ok(None), b"not rtp"),
            Verdict::Forward { .. }
        ));
        for r in DropReason::ALL {
            let want = if r == DropReason::WrongTuple { 2 } else { 1 };
            assert_eq!(
                g.stats().dropped.get(&r).copied(),
                Some(want),
                "{}",
                r.name()
            );
        }
        // Disarmed: unknown.
        g.disarm(42);
        let p5 = srtp(&mut good, 6, 0x1111);
        assert_eq!(
            g.check(a, b, Ok(Some(42)), &p5),
            Verdict::Drop(DropReason::UnknownSessionId)
        );
    }

    #[test]
    fn after_a_rekey_the_old_key_verifies_until_the_new_one_does() {
        let (a, b) = (A.parse().unwrap(), B.parse().unwrap());
        let mut g = MediaGate::new(Mode::Global, Sampling::EVERY_PACKET);
        g.arm(&session(9, 1)).unwrap();
        let (mut old, mut new) = (sender(1), sender(2));
        let fwd = |v| matches!(v, Verdict::Forward { verified: true, .. });
        assert!(fwd(g.check(a, b, Ok(Some(9)), &srtp(&mut old, 1, 0x1111))));
        let mut rekeyed = session(9, 2);
        rekeyed.generation = 1;
        g.arm(&rekeyed).unwrap();
        // In flight with the old key: still verified.
        assert!(fwd(g.check(a, b, Ok(Some(9)), &srtp(&mut old, 2, 0x1111))));
        // The new key verifies; from then on the old one is refused.
        assert!(fwd(g.check(a, b, Ok(Some(9)), &srtp(&mut new, 3, 0x1111))));
        assert_eq!(
            g.check(a, b, Ok(Some(9)), &srtp(&mut old, 4, 0x1111)),
            Verdict::Drop(DropReason::TagMismatch)
        );
        // A third key was never escrowed.
        assert_eq!(
            g.check(a, b, Ok(Some(9)), &srtp(&mut sender(3), 5, 0x1111)),
            Verdict::Drop(DropReason::TagMismatch)
        );
    }

    #[test]
    fn re_arming_the_same_keys_keeps_the_replay_window() {
        let (a, b) = (A.parse().unwrap(), B.parse().unwrap());
        let mut g = MediaGate::new(Mode::Global, Sampling::EVERY_PACKET);
        g.arm(&session(5, 1)).unwrap();
        let mut s = sender(1);
        let p = srtp(&mut s, 1, 0x1111);
        assert!(matches!(
            g.check(a, b, Ok(Some(5)), &p),
            Verdict::Forward { verified: true, .. }
        ));
        // The same key_update again (e.g. a second answer to one offer): still a replay.
        g.arm(&session(5, 1)).unwrap();
        assert_eq!(
            g.check(a, b, Ok(Some(5)), &p),
            Verdict::Drop(DropReason::Replay)
        );
    }

    #[test]
    fn sampling_verifies_the_first_n_then_one_in_k() {
        let (a, b) = (A.parse().unwrap(), B.parse().unwrap());
        let mut g = MediaGate::new(
            Mode::Global,
            Sampling {
                first: 10,
                one_in: 16,
            },
        );
        g.arm(&session(1, 3)).unwrap();
        let mut s = sender(3);
        let mut verified = 0;
        for seq in 1..=170u16 {
            let p = srtp(&mut s, seq, 0x1111);
            match g.check(a, b, Ok(Some(1)), &p) {
                Verdict::Forward { verified: true, .. } => verified += 1,
                Verdict::Forward {
                    verified: false, ..
                } => {}
                v => panic!("{v:?}"),
            }
        }
        // 10 + one in 16 of the other 160.
        assert_eq!(verified, 20);
        // A forged packet among sampled-out ones is still caught when its turn comes.
        let mut rogue = sender(4);
        let mut caught = 0;
        for seq in 171..=202u16 {
            let p = srtp(&mut rogue, seq, 0x1111);
            if g.check(a, b, Ok(Some(1)), &p) == Verdict::Drop(DropReason::TagMismatch) {
                caught += 1;
            }
        }
        assert_eq!(caught, 2);
    }
}
