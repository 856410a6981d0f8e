//! Packet index estimation (RFC 3711 §3.3.1) and replay protection (RFC 3711 §3.3.2).
//!
//! [`ReplayWindow`] tracks the highest index seen and a bitmap of the `size` indices below it.
//! The same structure serves the sender (which must never protect two packets under one index,
//! or it would reuse keystream) and the receiver. State changes only through [`ReplayWindow::add`],
//! which the SRTP code calls after a packet authenticated, so a forged packet cannot move it.

use crate::error::{Error, Result};

/// Default replay window, in packets (libsrtp's default too).
pub const DEFAULT_REPLAY_WINDOW: usize = 128;
/// Largest replay window accepted (libsrtp's limit as well).
pub const MAX_REPLAY_WINDOW: usize = 0x8000;

/// The rollover counter of an SRTP stream (RFC 3711 §3.2.1).
pub type Roc = u32;

/// Result of estimating a packet's index against the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Estimate {
    /// The estimated 48-bit index `i = 2^16 * v + SEQ` (RFC 3711 §3.3.1).
    pub index: u64,
    /// `index - highest index seen`; positive means new.
    pub delta: i64,
}

impl Estimate {
    /// The ROC `v` of the estimated index.
    pub fn roc(&self) -> Roc {
        (self.index >> 16) as Roc
    }
}

/// Estimates the 48-bit SRTP index of a packet with sequence number `seq`, given the highest
/// index `top` accepted so far (RFC 3711 §3.3.1). While the stream is young (`top <= 2^15`) the
/// ROC is taken as 0, as libsrtp does, so a stream that starts with a high sequence number is not
/// read as ROC -1.
#[inline]
pub fn estimate_srtp_index(top: u64, seq: u16) -> Estimate {
    let seq = seq as i64;
    let t = top as i64;
    if top <= 0x8000 {
        return Estimate {
            index: seq as u64,
            delta: seq - t,
        };
    }
    let roc = t >> 16;
    let s_l = t & 0xffff;
    let v = if s_l < 0x8000 {
        if seq - s_l > 0x8000 {
            roc - 1
        } else {
            roc
        }
    } else if s_l - 0x8000 > seq {
        roc + 1
    } else {
        roc
    };
    let index = (v << 16) | seq;
    Estimate {
        index: index as u64,
        delta: index - t,
    }
}

/// Sliding window over packet indices.
#[derive(Clone)]
pub struct ReplayWindow {
    /// Highest index accepted so far (`ROC * 2^16 + s_l` for SRTP).
    top: u64,
    /// Ring bitmap: bit `idx & mask` set when index `idx` (within the window) was accepted.
    bits: Box<[u64]>,
    mask: u64,
    size: u64,
}

impl core::fmt::Debug for ReplayWindow {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ReplayWindow")
            .field("top", &self.top)
            .field("size", &self.size)
            .finish()
    }
}

impl ReplayWindow {
    /// A window of `size` packets (64..=32768) whose highest index starts at `initial`.
    pub fn new(size: usize, initial: u64) -> Result<Self> {
        if !(64..=MAX_REPLAY_WINDOW).contains(&size) {
            return Err(Error::InvalidPolicy {
                reason: "replay window must be 64..=32768 packets",
            });
        }
        let ring = size.next_power_of_two().max(64);
        Ok(ReplayWindow {
            top: initial,
            bits: vec![0u64; ring / 64].into_boxed_slice(),
            mask: ring as u64 - 1,
            size: size as u64,
        })
    }

    /// Highest index accepted so far.
    pub fn top(&self) -> u64 {
        self.top
    }

    /// The ROC part of the highest index.
    pub fn roc(&self) -> Roc {
        (self.top >> 16) as Roc
    }

    /// Estimates the index of a packet with sequence number `seq`; see [`estimate_srtp_index`].
    #[inline]
    pub fn estimate_srtp(&self, seq: u16) -> Estimate {
        estimate_srtp_index(self.top, seq)
    }

    /// An estimate for an index carried explicitly (the SRTCP index).
    #[inline]
    pub fn estimate_explicit(&self, index: u64) -> Estimate {
        Estimate {
            index,
            delta: index as i64 - self.top as i64,
        }
    }

    #[inline]
    fn bit(&self, index: u64) -> (usize, u64) {
        let slot = index & self.mask;
        ((slot >> 6) as usize, 1u64 << (slot & 63))
    }

    /// Checks an estimate without changing state: new, or within the window and unseen.
    #[inline]
    pub fn check(&self, est: &Estimate) -> Result<()> {
        if est.delta > 0 {
            return Ok(());
        }
        if (-est.delta) as u64 >= self.size {
            return Err(Error::ReplayTooOld { index: est.index });
        }
        let (w, m) = self.bit(est.index);
        if self.bits[w] & m != 0 {
            return Err(Error::Replayed { index: est.index });
        }
        Ok(())
    }

    /// Records an index as seen (call only after the packet authenticated).
    #[inline]
    pub fn add(&mut self, est: &Estimate) {
        if est.delta > 0 {
            let d = est.delta as u64;
            if d > self.mask {
                self.bits.fill(0);
            } else {
                // Clear the slots the window slides over.
                for i in self.top + 1..=est.index {
                    let (w, m) = self.bit(i);
                    self.bits[w] &= !m;
                }
            }
            self.top = est.index;
        }
        let (w, m) = self.bit(est.index);
        self.bits[w] |= m;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3711_index_estimation_across_wrap() {
        let mut w = ReplayWindow::new(512, 0).unwrap();
        // Walk a sender from seq 65500 through the wrap.
        let mut seq: u16 = 65500;
        for n in 0..200u64 {
            let e = w.estimate_srtp(seq);
            assert_eq!(e.index, 65500 + n, "seq {seq}");
            w.check(&e).unwrap();
            w.add(&e);
            seq = seq.wrapping_add(1);
        }
        assert_eq!(w.roc(), 1);
        // A late packet from before the wrap is estimated with ROC 0.
        let e = w.estimate_srtp(65530);
        assert_eq!(e.roc(), 0);
        assert!(matches!(w.check(&e), Err(Error::Replayed { .. })));
    }

    #[test]
    fn replay_and_too_old() {
        let mut w = ReplayWindow::new(128, 0).unwrap();
        for s in 1..=1000u16 {
            let e = w.estimate_srtp(s);
            w.add(&e);
        }
        let e = w.estimate_srtp(1000);
        assert_eq!(w.check(&e), Err(Error::Replayed { index: 1000 }));
        let e = w.estimate_srtp(1000 - 127);
        assert_eq!(w.check(&e), Err(Error::Replayed { index: 873 }));
        let e = w.estimate_srtp(1000 - 128);
        assert_eq!(w.check(&e), Err(Error::ReplayTooOld { index: 872 }));
        // a gap inside the window is accepted once
        let mut w = ReplayWindow::new(128, 0).unwrap();
        for s in [1u16, 2, 5] {
            let e = w.estimate_srtp(s);
            w.add(&e);
        }
        let e = w.estimate_srtp(4);
        assert!(w.check(&e).is_ok());
        w.add(&e);
        assert!(w.check(&w.estimate_srtp(4)).is_err());
        assert!(w.check(&w.estimate_srtp(3)).is_ok());
    }

    #[test]
    fn big_jump_clears_window() {
        let mut w = ReplayWindow::new(64, 0).unwrap();
        for s in 1..=10u16 {
            let e = w.estimate_srtp(s);
            w.add(&e);
        }
        let e = w.estimate_srtp(10 + 64 + 1);
        w.add(&e);
        // Slot of 10 reused for 74 (mod 64) must have been cleared.
        for s in 12..=74u16 {
            assert!(w.check(&w.estimate_srtp(s)).is_ok(), "{s}");
        }
    }

    #[test]
    fn window_size_limits() {
        assert!(ReplayWindow::new(63, 0).is_err());
        assert!(ReplayWindow::new(MAX_REPLAY_WINDOW + 1, 0).is_err());
        let w = ReplayWindow::new(1000, 0).unwrap();
        assert_eq!(w.size, 1000);
    }
}
