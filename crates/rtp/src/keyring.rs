//! A set of candidate SRTP keys for streams whose key is not known in advance, as when a capture
//! is decrypted offline with the `a=crypto` lines of its calls: each SSRC is bound to the first
//! key that authenticates one of its packets, then stays with it.
//!
//! Trying a key is safe because [`SrtpSession`] changes no state for a packet that fails to
//! authenticate.

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::packet::{is_rtcp, RtcpHeader, RtpHeader};
use crate::srtp::{PacketKind, SrtpPolicy, SrtpSession};

/// One key of the ring, optionally pinned to one SSRC.
#[derive(Debug)]
struct Entry {
    session: SrtpSession,
    ssrc: Option<u32>,
}

/// Candidate keys and the SSRC → key bindings learned so far.
#[derive(Debug, Default)]
pub struct KeyRing {
    entries: Vec<Entry>,
    bound: HashMap<u32, usize>,
    /// Next key to hand to a new SSRC when protecting.
    next_for_protect: usize,
    /// Copy of a packet under trial: a failed AEAD open may leave the buffer zeroed, so each key
    /// must start from the original bytes.
    scratch: Vec<u8>,
    /// Packets of each still-unbound SSRC tried so far. Trials stop at
    /// [`MAX_TRIALS_PER_SSRC`]: with 32-bit tags every trial has a 2^-32 chance of a false
    /// accept, which would bind the SSRC to a wrong key.
    trials: HashMap<u32, u32>,
}

/// Packets of one SSRC tried against the keys before the ring gives that SSRC up.
pub const MAX_TRIALS_PER_SSRC: u32 = 1000;

/// What happened to a packet given to the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Processed {
    /// The new packet length.
    pub len: usize,
    /// Which key (by position in the ring) processed it.
    pub key: usize,
    pub ssrc: u32,
    pub kind: PacketKind,
}

/// Classifies a datagram as RTP or RTCP (RFC 5761 §4) and returns its SSRC.
pub fn classify(buf: &[u8]) -> Result<(PacketKind, u32)> {
    if is_rtcp(buf) {
        Ok((PacketKind::Srtcp, RtcpHeader::parse(buf)?.ssrc))
    } else {
        Ok((PacketKind::Srtp, RtpHeader::parse(buf)?.ssrc))
    }
}

impl KeyRing {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a key; `ssrc` pins it to one stream (no trial on others). Returns its position.
    pub fn add(&mut self, policy: SrtpPolicy, ssrc: Option<u32>) -> Result<usize> {
        self.entries.push(Entry {
            session: SrtpSession::new(policy)?,
            ssrc,
        });
        Ok(self.entries.len() - 1)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The key an SSRC is bound to, if any.
    pub fn binding(&self, ssrc: u32) -> Option<usize> {
        self.bound.get(&ssrc).copied()
    }

    fn run(
        session: &mut SrtpSession,
        kind: PacketKind,
        protect: bool,
        buf: &mut [u8],
        len: usize,
    ) -> Result<usize> {
        match (kind, protect) {
            (PacketKind::Srtp, false) => session.unprotect_rtp(buf, len),
            (PacketKind::Srtcp, false) => session.unprotect_rtcp(buf, len),
            (PacketKind::Srtp, true) => session.protect_rtp(buf, len),
            (PacketKind::Srtcp, true) => session.protect_rtcp(buf, len),
        }
    }

    /// Unprotects an SRTP or SRTCP packet in place. An SSRC not yet bound is tried against
    /// every key that may serve it; the first that authenticates is bound. When none does, the
    /// error is [`Error::AuthTagMismatch`] (or the packet's parse error), and the packet is left
    /// as it came. After [`MAX_TRIALS_PER_SSRC`] failed packets an SSRC is no longer tried.
    pub fn unprotect(&mut self, buf: &mut [u8], len: usize) -> Result<Processed> {
        let (kind, ssrc) = classify(buf.get(..len).ok_or(Error::Truncated {
            len: buf.len(),
            need: len,
        })?)?;
        if let Some(&key) = self.bound.get(&ssrc) {
            let n = Self::run(&mut self.entries[key].session, kind, false, buf, len)?;
            return Ok(Processed {
                len: n,
                key,
                ssrc,
                kind,
            });
        }
        let tried = self.trials.entry(ssrc).or_insert(0);
        if *tried >= MAX_TRIALS_PER_SSRC {
            return Err(Error::AuthTagMismatch);
        }
        *tried += 1;
        let mut last = Error::AuthTagMismatch;
        self.scratch.clear();
        self.scratch.extend_from_slice(&buf[..len]);
        for (key, e) in self.entries.iter_mut().enumerate() {
            if e.ssrc.is_some_and(|s| s != ssrc) {
                continue;
            }
            buf[..len].copy_from_slice(&self.scratch);
            match Self::run(&mut e.session, kind, false, buf, len) {
                Ok(n) => {
                    self.bound.insert(ssrc, key);
                    self.trials.remove(&ssrc);
                    return Ok(Processed {
                        len: n,
                        key,
                        ssrc,
                        kind,
                    });
                }
                // A key of another suite may see a different trailer layout: keep trying.
                Err(err) => last = err,
            }
        }
        buf[..len].copy_from_slice(&self.scratch);
        Err(match last {
            Error::UnknownMki | Error::Truncated { .. } => Error::AuthTagMismatch,
            e => e,
        })
    }

    /// Protects an RTP or RTCP packet in place (`buf` needs room for the trailer). A new SSRC
    /// takes the key pinned to it, else the next unpinned key in order (the last one is reused
    /// when they run out).
    pub fn protect(&mut self, buf: &mut [u8], len: usize) -> Result<Processed> {
        let (kind, ssrc) = classify(buf.get(..len).ok_or(Error::Truncated {
            len: buf.len(),
            need: len,
        })?)?;
        let key = match self.bound.get(&ssrc) {
            Some(&k) => k,
            None => {
                let pinned = self.entries.iter().position(|e| e.ssrc == Some(ssrc));
                let k = match pinned {
                    Some(k) => k,
                    None => {
                        let free: Vec<usize> = (0..self.entries.len())
                            .filter(|&i| self.entries[i].ssrc.is_none())
                            .collect();
                        let k = *free
                            .get(self.next_for_protect.min(free.len().saturating_sub(1)))
                            .ok_or(Error::InvalidPolicy {
                                reason: "no key for this SSRC",
                            })?;
                        self.next_for_protect += 1;
                        k
                    }
                };
                self.bound.insert(ssrc, k);
                k
            }
        };
        let n = Self::run(&mut self.entries[key].session, kind, true, buf, len)?;
        Ok(Processed {
            len: n,
            key,
            ssrc,
            kind,
        })
    }

    /// The largest trailer any key adds (room to leave after a packet for [`Self::protect`]).
    pub fn max_overhead(&self) -> usize {
        self.entries
            .iter()
            .map(|e| e.session.srtp_overhead().max(e.session.srtcp_overhead()))
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MasterKey, SrtpProfile};

    fn policy(p: SrtpProfile, seed: u8) -> SrtpPolicy {
        SrtpPolicy::new(
            MasterKey::new(
                p,
                &vec![seed; p.key_len()],
                &vec![seed ^ 0x5a; p.salt_len()],
            )
            .unwrap(),
        )
    }

    fn rtp(seq: u16, ssrc: u32) -> Vec<u8> {
        let mut v = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        v[2..4].copy_from_slice(&seq.to_be_bytes());
        v[8..12].copy_from_slice(&ssrc.to_be_bytes());
        v.extend_from_slice(&[0xd5; 160]);
        v
    }

    #[test]
    fn binds_each_ssrc_to_the_key_that_authenticates() {
        let pa = policy(SrtpProfile::AesCm128HmacSha1_80, 1);
        let pb = policy(SrtpProfile::AeadAes128Gcm, 2);
        let mut ta = SrtpSession::new(pa.clone()).unwrap();
        let mut tb = SrtpSession::new(pb.clone()).unwrap();
        let mut ring = KeyRing::new();
        ring.add(pa, None).unwrap();
        ring.add(pb, None).unwrap();
        for seq in 0..5u16 {
            let mut a = rtp(seq, 0xa);
            ta.protect_rtp_vec(&mut a).unwrap();
            let mut b = rtp(seq, 0xb);
            tb.protect_rtp_vec(&mut b).unwrap();
            let la = a.len();
            let r = ring.unprotect(&mut a, la).unwrap();
            assert_eq!((r.key, r.ssrc, &a[..r.len]), (0, 0xa, &rtp(seq, 0xa)[..]));
            let lb = b.len();
            let r = ring.unprotect(&mut b, lb).unwrap();
            assert_eq!((r.key, r.ssrc, &b[..r.len]), (1, 0xb, &rtp(seq, 0xb)[..]));
        }
        assert_eq!(ring.binding(0xa), Some(0));
        // A stream no key authenticates.
        let mut c = rtp(1, 0xc);
        c.extend_from_slice(&[0; 10]);
        let lc = c.len();
        assert_eq!(ring.unprotect(&mut c, lc), Err(Error::AuthTagMismatch));
        assert_eq!(ring.binding(0xc), None);
    }

    #[test]
    fn a_failed_aead_trial_does_not_spoil_the_packet_for_the_next_key() {
        // GCM first: its failed open zeroes the buffer; the AES-CM key after it must still see
        // the original packet. And a packet no key takes is left as it came.
        let pa = policy(SrtpProfile::AesCm128HmacSha1_80, 1);
        let mut ring = KeyRing::new();
        ring.add(policy(SrtpProfile::AeadAes256Gcm, 9), None)
            .unwrap();
        ring.add(pa.clone(), None).unwrap();
        let mut tx = SrtpSession::new(pa).unwrap();
        let mut a = rtp(1, 0xa);
        tx.protect_rtp_vec(&mut a).unwrap();
        let la = a.len();
        assert_eq!(ring.unprotect(&mut a, la).unwrap().key, 1);
        let mut ring = KeyRing::new();
        ring.add(policy(SrtpProfile::AeadAes128Gcm, 9), None)
            .unwrap();
        let mut b = rtp(2, 0xa);
        tx.protect_rtp_vec(&mut b).unwrap();
        let orig = b.clone();
        let lb = b.len();
        assert!(ring.unprotect(&mut b, lb).is_err());
        assert_eq!(b, orig);
    }

    #[test]
    fn protect_assigns_keys_in_order_and_respects_pins() {
        let mut ring = KeyRing::new();
        ring.add(policy(SrtpProfile::AesCm128HmacSha1_80, 1), None)
            .unwrap();
        ring.add(policy(SrtpProfile::AesCm128HmacSha1_32, 2), Some(0x77))
            .unwrap();
        ring.add(policy(SrtpProfile::AeadAes256Gcm, 3), None)
            .unwrap();
        let mut out = Vec::new();
        for ssrc in [0x10u32, 0x77, 0x20, 0x30] {
            let mut p = rtp(0, ssrc);
            let n = p.len();
            p.resize(n + ring.max_overhead(), 0);
            out.push(ring.protect(&mut p, n).unwrap().key);
        }
        assert_eq!(out, vec![0, 1, 2, 2]);
    }
}
