//! The CCS 2005 inter-packet-delay (IPD) watermark (Wang, Chen, Jajodia), reproduced.
//!
//! Selection: the first `span` packets of the flow are cut into `span / 2` blocks of two
//! consecutive packets (2b, 2b + 1); the keyed stream of (key, mark id) draws `2 r l` distinct
//! blocks (partial Fisher-Yates). Block number `2 (i r + k)` is the pair (P1, P2) and block
//! `2 (i r + k) + 1` the pair (P3, P4) of the k-th IPDD of bit i. Pairs are disjoint, so no
//! packet serves twice, and two mark ids share a block only by chance (hypergeometric).
//!
//! Embedding: IPD1 = t(P2) - t(P1), IPD2 = t(P4) - t(P3), IPDD = (IPD2 - IPD1) / 2. Bit 1:
//! P1 and P4 are delayed by a (IPD1 - a, IPD2 + a: IPDD + a); bit 0: P2 and P3 (IPDD - a).
//!
//! Decoding: the mean of a bit's r IPDDs, 1 if positive, 0 if negative; a mean of exactly 0
//! (or a bit with no complete IPDD: the flow is shorter than the selection) counts as a
//! mismatch. Watermarked iff the Hamming distance to the embedded bits is at most h.
//!
//! Analytic model (the paper's): an unrelated flow decodes to independent fair bits, so
//! FP = P(Bin(l, 1/2) <= h) = Σ_{i<=h} C(l, i) 2^-l. Under FIFO uniform delay U[0, D] every
//! packet gets an independent delay (FIFO rarely binds while D + a < the packet spacing), so an
//! IPDD's perturbation is ((δ4 - δ3) - (δ2 - δ1)) / 2 with variance D²/12, plus σ_s² from
//! independent sender jitter of standard deviation σ_s. The mean of r IPDDs is then
//! approximately N(±a, (σ_s² + D²/12) / r), a bit is wrong with probability
//! p = Φ(-a √r / √(σ_s² + D²/12)), and TP = P(Bin(l, p) <= h).

use serde::{Deserialize, Serialize};

use crate::key::{MarkId, WatermarkKey};
use crate::stats::{binomial_cdf, normal_cdf};
use crate::{TraceError, Watermark};

/// Parameters of the CCS 2005 scheme.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ccs05Params {
    /// l: watermark bits.
    pub bits: u32,
    /// r: IPDDs per bit.
    pub redundancy: u32,
    /// a: the delay added to the selected packets, µs.
    pub adjustment_us: u64,
    /// h: the largest Hamming distance still called watermarked.
    pub threshold: u32,
    /// The number of leading packets the pairs are drawn from (at least 4 r l).
    pub span: u32,
    /// Below this estimated detection probability a flow that does not carry the watermark
    /// is `Undecided` rather than `NotWatermarked`.
    #[serde(default = "default_power")]
    pub undecided_power: f64,
}

fn default_power() -> f64 {
    0.95
}

impl Ccs05Params {
    /// The CCS 2005 experiment: l = 24, r = 25, a = 3 ms, h = 4 (FP = 7.7e-4), 1200 pairs
    /// (2 r l) drawn from the first 3000 packets (90 s of 30 ms packets).
    pub fn paper() -> Self {
        Self {
            bits: 24,
            redundancy: 25,
            adjustment_us: 3000,
            threshold: 4,
            span: 3000,
            undecided_power: default_power(),
        }
    }

    /// The paper's setup scaled to a call of `packets` packets: l = 24, h = 4, a = 3 ms and
    /// r = min(25, packets / 120), i.e. 40 % of the packets in pairs as in 1200 of 3000.
    pub fn for_packets(packets: u32, adjustment_us: u64) -> Self {
        let r = (packets / 120).clamp(1, 25);
        Self {
            redundancy: r,
            adjustment_us,
            span: packets.max(4 * r * 24),
            ..Self::paper()
        }
    }

    /// Checks every parameter's range.
    pub fn validate(&self) -> Result<(), TraceError> {
        let bad = |name, reason: String| Err(TraceError::InvalidParameter { name, reason });
        if self.bits == 0 || self.bits > 1024 {
            return bad("bits", format!("{} is not in 1..=1024", self.bits));
        }
        if self.redundancy == 0 || self.redundancy > 10_000 {
            return bad(
                "redundancy",
                format!("{} is not in 1..=10000", self.redundancy),
            );
        }
        if self.adjustment_us == 0 || self.adjustment_us > 1_000_000 {
            return bad(
                "adjustment_us",
                format!("{} is not in 1..=1000000", self.adjustment_us),
            );
        }
        if self.threshold >= self.bits {
            return bad(
                "threshold",
                format!("{} must be below bits ({})", self.threshold, self.bits),
            );
        }
        let need = 4u64 * self.redundancy as u64 * self.bits as u64;
        if (self.span as u64) < need {
            return bad(
                "span",
                format!(
                    "{} packets cannot hold 2 r l = {} disjoint pairs (need at least {need})",
                    self.span,
                    need / 2
                ),
            );
        }
        if !(0.0..=1.0).contains(&self.undecided_power) {
            return bad(
                "undecided_power",
                format!("{} is not in [0, 1]", self.undecided_power),
            );
        }
        Ok(())
    }
}

/// The keyed selection of one (key, mark id): for bit i and IPDD k, entry `i r + k` holds the
/// first packet index of (P1, P2) and of (P3, P4); P2 = P1 + 1, P4 = P3 + 1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection {
    bits: u32,
    redundancy: u32,
    pairs: Vec<[u32; 2]>,
}

impl Selection {
    /// Draws the selection of (key, mark id) under `params` (validated first).
    pub fn new(params: &Ccs05Params, key: &WatermarkKey, mark: MarkId) -> Result<Self, TraceError> {
        params.validate()?;
        let mut stream = key.stream("ccs05/select", mark)?;
        let blocks = params.span / 2;
        let want = 2 * params.redundancy as usize * params.bits as usize;
        let mut order: Vec<u32> = (0..blocks).collect();
        // Partial Fisher-Yates: the first `want` entries are a uniform random draw without
        // replacement, in random order.
        for i in 0..want {
            let j = i + stream.below((blocks as usize - i) as u64)? as usize;
            order.swap(i, j);
        }
        let pairs = order[..want]
            .chunks_exact(2)
            .map(|c| [2 * c[0], 2 * c[1]])
            .collect();
        Ok(Self {
            bits: params.bits,
            redundancy: params.redundancy,
            pairs,
        })
    }

    /// `[P1, P3]` (first packets of the two pairs) of IPDD k of bit i.
    pub fn ipdd(&self, bit: u32, k: u32) -> [u32; 2] {
        self.pairs[(bit * self.redundancy + k) as usize]
    }

    /// Every selected packet index (P1..P4 of every IPDD), sorted.
    pub fn packets(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self
            .pairs
            .iter()
            .flat_map(|&[p1, p3]| [p1, p1 + 1, p3, p3 + 1])
            .collect();
        v.sort_unstable();
        v
    }

    /// The packet indices delayed for `watermark` (bit 1: P1 and P4; bit 0: P2 and P3), sorted.
    pub fn delayed(&self, watermark: &Watermark) -> Vec<u32> {
        let mut v = Vec::with_capacity(self.pairs.len() * 2);
        for (i, &b) in watermark.bits().iter().enumerate().take(self.bits as usize) {
            for k in 0..self.redundancy {
                let [p1, p3] = self.ipdd(i as u32, k);
                if b {
                    v.extend([p1, p3 + 1]);
                } else {
                    v.extend([p1 + 1, p3]);
                }
            }
        }
        v.sort_unstable();
        v
    }
}

/// What decoding a flow gave.
#[derive(Clone, Debug, PartialEq)]
pub struct Decoded {
    /// Hamming distance to the embedded bits; missing and tied bits count as mismatches.
    pub hamming: u32,
    /// Bits without a single complete IPDD (the flow ended before their packets).
    pub missing: u32,
    /// IPDDs whose four packets were all present.
    pub ipdds: u32,
    /// The decoded bits (`None`: missing or a mean of exactly 0).
    pub bits: Vec<Option<bool>>,
    /// The sample variance of every complete IPDD, µs² (0 with fewer than two).
    pub ipdd_variance: f64,
}

/// Decodes `timestamps_us` (packet i's arrival time; the flow's first packet is index 0)
/// against `watermark` with `selection`.
pub fn decode(selection: &Selection, watermark: &Watermark, timestamps_us: &[u64]) -> Decoded {
    let n = timestamps_us.len();
    let mut hamming = 0;
    let mut missing = 0;
    let mut ipdds = 0u32;
    let mut bits = Vec::with_capacity(selection.bits as usize);
    let (mut sum_all, mut sum_sq_all) = (0.0f64, 0.0f64);
    for i in 0..selection.bits {
        let mut sum = 0.0f64;
        let mut count = 0u32;
        for k in 0..selection.redundancy {
            let [p1, p3] = selection.ipdd(i, k);
            let (p1, p3) = (p1 as usize, p3 as usize);
            if p1 + 1 >= n || p3 + 1 >= n {
                continue;
            }
            let ipd1 = timestamps_us[p1 + 1] as f64 - timestamps_us[p1] as f64;
            let ipd2 = timestamps_us[p3 + 1] as f64 - timestamps_us[p3] as f64;
            let ipdd = (ipd2 - ipd1) / 2.0;
            sum += ipdd;
            sum_all += ipdd;
            sum_sq_all += ipdd * ipdd;
            count += 1;
        }
        ipdds += count;
        let expected = watermark.bits().get(i as usize).copied().unwrap_or(false);
        let decoded = if count == 0 {
            missing += 1;
            None
        } else if sum > 0.0 {
            Some(true)
        } else if sum < 0.0 {
            Some(false)
        } else {
            None
        };
        if decoded != Some(expected) {
            hamming += 1;
        }
        bits.push(decoded);
    }
    let ipdd_variance = if ipdds >= 2 {
        let m = sum_all / ipdds as f64;
        ((sum_sq_all - ipdds as f64 * m * m) / (ipdds as f64 - 1.0)).max(0.0)
    } else {
        0.0
    };
    Decoded {
        hamming,
        missing,
        ipdds,
        bits,
        ipdd_variance,
    }
}

/// FP = P(Hamming <= h | independent fair bits) = Σ_{i<=h} C(l, i) 2^-l.
pub fn false_positive_rate(bits: u32, threshold: u32) -> f64 {
    binomial_cdf(bits as u64, threshold as u64, 0.5)
}

/// The largest h whose false-positive rate is at most `target` (None if even h = 0 is above).
pub fn threshold_for(bits: u32, target: f64) -> Option<u32> {
    (0..bits)
        .take_while(|&h| false_positive_rate(bits, h) <= target)
        .last()
}

/// The standard deviation (µs) of one IPDD of an unmarked flow under independent sender
/// jitter of standard deviation `sender_jitter_sd_us` and FIFO uniform delay U[0, D]:
/// √(σ_s² + D²/12).
pub fn ipdd_sd(sender_jitter_sd_us: f64, max_delay_us: f64) -> f64 {
    (sender_jitter_sd_us.powi(2) + max_delay_us.powi(2) / 12.0).sqrt()
}

/// The probability that a bit decodes wrong: Φ(-a √r / σ_IPDD).
pub fn bit_error_probability(adjustment_us: f64, redundancy: u32, ipdd_sd_us: f64) -> f64 {
    if ipdd_sd_us <= 0.0 {
        return 0.0;
    }
    normal_cdf(-adjustment_us * (redundancy as f64).sqrt() / ipdd_sd_us)
}

/// TP = P(Bin(l, p) <= h) for the per-bit error probability p.
pub fn true_positive_rate(bits: u32, threshold: u32, bit_error: f64) -> f64 {
    binomial_cdf(bits as u64, threshold as u64, bit_error)
}

/// The analytic true-positive rate of `params` on a flow with independent sender jitter
/// `sender_jitter_sd_us` through FIFO uniform delay U[0, `max_delay_us`].
pub fn analytic_true_positive(
    params: &Ccs05Params,
    sender_jitter_sd_us: f64,
    max_delay_us: f64,
) -> f64 {
    let p = bit_error_probability(
        params.adjustment_us as f64,
        params.redundancy,
        ipdd_sd(sender_jitter_sd_us, max_delay_us),
    );
    true_positive_rate(params.bits, params.threshold, p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> WatermarkKey {
        WatermarkKey::from_bytes([3; 32])
    }

    #[test]
    fn paper_params_and_threshold() {
        let p = Ccs05Params::paper();
        p.validate().unwrap();
        // FP for h = 4: (1 + 24 + 276 + 2024 + 10626) / 2^24.
        let fp = false_positive_rate(24, 4);
        assert!((fp - 12_951.0 / 16_777_216.0).abs() < 1e-12);
        assert!(fp <= 1e-3);
        assert!(false_positive_rate(24, 5) > 1e-3);
        assert_eq!(threshold_for(24, 1e-3), Some(4));
        assert_eq!(threshold_for(24, 1e-9), None);
        let mut bad = p.clone();
        bad.span = 4 * 25 * 24 - 1;
        assert!(matches!(
            bad.validate(),
            Err(TraceError::InvalidParameter { name: "span", .. })
        ));
        assert_eq!(Ccs05Params::for_packets(3000, 3000), p);
        assert_eq!(Ccs05Params::for_packets(1500, 3000).redundancy, 12);
    }

    #[test]
    fn selection_is_disjoint_and_in_span() {
        let p = Ccs05Params::paper();
        let s = Selection::new(&p, &key(), MarkId(1)).unwrap();
        let pk = s.packets();
        assert_eq!(pk.len(), 4 * 25 * 24);
        assert!(pk.windows(2).all(|w| w[0] < w[1]), "packets shared");
        assert!(*pk.last().unwrap() < p.span);
        let w = Watermark::derive(&crate::SchemeParams::Ccs05(p), &key(), MarkId(1)).unwrap();
        let d = s.delayed(&w);
        assert_eq!(d.len(), 2 * 25 * 24);
        assert!(d.windows(2).all(|w| w[0] < w[1]));
    }

    /// Two mark ids share selected blocks only as often as two independent uniform draws do:
    /// with k of N blocks each, the overlap is hypergeometric with mean k²/N.
    #[test]
    fn selection_shares_positions_only_by_chance() {
        let p = Ccs05Params {
            bits: 8,
            redundancy: 5,
            span: 3000,
            ..Ccs05Params::paper()
        };
        let (k, n) = (80.0f64, 1500.0f64);
        let mean = k * k / n;
        let var = k * (k / n) * ((n - k) / n) * ((n - k) / (n - 1.0));
        let mut total = 0.0;
        let trials = 60;
        for m in 0..trials {
            let a = Selection::new(&p, &key(), MarkId(2 * m)).unwrap().packets();
            let b = Selection::new(&p, &key(), MarkId(2 * m + 1))
                .unwrap()
                .packets();
            let shared_blocks = a
                .iter()
                .filter(|x| *x % 2 == 0 && b.binary_search(x).is_ok())
                .count();
            total += shared_blocks as f64;
            assert!(
                (shared_blocks as f64) < mean + 6.0 * var.sqrt(),
                "{shared_blocks} shared"
            );
        }
        let avg = total / trials as f64;
        let se = (var / trials as f64).sqrt();
        assert!((avg - mean).abs() < 4.0 * se, "avg {avg} vs {mean}");
        // Another key with the same mark id is just as unrelated.
        let other = WatermarkKey::from_bytes([4; 32]);
        let a = Selection::new(&p, &key(), MarkId(9)).unwrap();
        let b = Selection::new(&p, &other, MarkId(9)).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn decode_counts_missing_and_ties() {
        let p = Ccs05Params {
            bits: 4,
            redundancy: 2,
            span: 64,
            threshold: 1,
            ..Ccs05Params::paper()
        };
        let s = Selection::new(&p, &key(), MarkId(5)).unwrap();
        let w = Watermark::from_bits(vec![true, false, true, true]);
        // A perfectly regular flow: every IPDD is 0, every bit a tie.
        let flat: Vec<u64> = (0..64).map(|i| i * 30_000).collect();
        let d = decode(&s, &w, &flat);
        assert_eq!(d.hamming, 4);
        assert_eq!(d.missing, 0);
        // No packets: every bit missing.
        let d = decode(&s, &w, &[]);
        assert_eq!((d.hamming, d.missing, d.ipdds), (4, 4, 0));
    }

    #[test]
    fn analytic_tp_monotone() {
        let p = Ccs05Params::paper();
        let near = analytic_true_positive(&p, 1000.0, 10_000.0);
        let far = analytic_true_positive(&p, 1000.0, 60_000.0);
        assert!(near > 0.999_999 && far < near, "{near} {far}");
        assert_eq!(bit_error_probability(3000.0, 25, 0.0), 0.0);
    }
}
