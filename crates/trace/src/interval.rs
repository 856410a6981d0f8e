//! The interval-phase watermark (ours): keyed time slots delayed whole, detected as a phase
//! shift against the flow's own frame clock, decided by a self-normalized correlation score.
//!
//! # Schedule
//! Time is measured from the flow's first packet (the origin), so a lost or inserted packet
//! moves nothing else. The keyed stream of (key, mark id) (`interval/schedule`) cuts time into
//! consecutive slot pairs (A, B); each slot's length is drawn uniformly from
//! [`slot_min_us`, `slot_max_us`], so two mark ids never share slot edges beyond chance and an
//! aggregate of many flows shows no common edge (the multi-flow attack). Pair p carries a
//! keyed chip c_p = ±1 and watermark bit b_{p mod l} (bits interleaved: every bit is carried
//! all along the call); its sign s_p = c_p (2 b - 1) says which slot is delayed: A if +1, B if
//! -1. Every packet of the delayed slot is held a (with optional linear ramps of `ramp_us` at
//! both ends of the slot, which spread the edge over several inter-packet delays).
//!
//! # Detection
//! VoIP senders emit one packet per codec frame, clocked by the audio device, also across
//! silence (DTX leaves frames out, it does not move the clock). The detector estimates that
//! period T (the mode of the inter-packet delays, recentred on the peak, then least-squares
//! refinement of the tracked phase), then tracks the frame index k_j of every packet: the step
//! from the previous packet's index (0 to 3 frames) minimizing r²/(2σ²) plus a penalty of
//! -ln(1 %) per frame away from a one-frame step, r measured against an exponentially smoothed
//! reference phase; a lost packet skips an index, an inserted one shares one, a silence rounds.
//! The residual is r_j = t_j - t_0 - k_j T. A delayed slot shifts its packets' residuals by a;
//! network delay and sender jitter are noise, slow drift (clock skew, queue build-up) cancels
//! in the difference of two adjacent slots. For pair p with slot means m_A, m_B and counts
//! n_A, n_B:
//!
//! d_p = m_A - m_B,  v_p = 1 / (1/n_A + 1/n_B),  Z = Σ s_p v_p ψ(d_p) / √(Σ v_p² ψ(d_p)²)
//!
//! with ψ clipping at 3 median|d|. For a flow that does not carry this (key, mark id) the signs
//! s_p are independent fair coins whatever the flow is (unrelated, unmarked, or marked under
//! another key or mark id), so conditionally on the d_p, Z is a Rademacher sum normalized by its
//! own standard deviation: ≈ N(0, 1), with P(Z >= z) <= exp(-z²/2) (Hoeffding) whatever the
//! noise. The threshold is z* = Φ⁻¹(1 - FP / K) for K origin candidates (the first K packets
//! tried as origin, in case the first ones were lost or injected): no flow model needed.
//!
//! # True-positive model
//! With P pairs of n packets per slot, per-packet residual noise σ (√(σ_s² + D²/12) under
//! sender jitter σ_s and FIFO U[0, D]), σ_d² = 2σ²/n and effective amplitude
//! a' = a (1 - ramp / L̄): Z ≈ N(μ, s²) with μ = √P a' / √(a'² + σ_d²) and, by the delta method,
//! s² = σ_d²/q + a'²σ_d²(2a'² + σ_d²)/(2q³) - 2a'²σ_d²/q², q = a'² + σ_d²;
//! TP = 1 - Φ((z* - μ)/s).

use serde::{Deserialize, Serialize};

use crate::key::{KeyStream, MarkId, WatermarkKey};
use crate::stats::{median_in_place, normal_quantile, normal_sf};
use crate::{TraceError, Watermark};

/// Parameters of the interval-phase scheme.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntervalParams {
    /// l: watermark bits, interleaved over the slot pairs (decoded and reported; the verdict
    /// uses the whole correlation score).
    pub bits: u32,
    /// a: the delay of a delayed slot's packets, µs.
    pub adjustment_us: u64,
    /// Shortest slot, µs.
    pub slot_min_us: u64,
    /// Longest slot, µs.
    pub slot_max_us: u64,
    /// Linear ramp at each end of a delayed slot, µs (0: a step).
    pub ramp_us: u64,
    /// The false-positive probability the threshold is set for (per flow and mark id).
    pub false_positive: f64,
    /// How many leading packets are tried as the origin (1: only the first).
    pub origin_candidates: u32,
    /// The frame period if known (e.g. from SDP `a=ptime`), µs; estimated from the flow if not.
    #[serde(default)]
    pub period_us: Option<u64>,
    /// Below this estimated detection probability a flow that does not carry the watermark
    /// is `Undecided` rather than `NotWatermarked`.
    pub undecided_power: f64,
}

impl Default for IntervalParams {
    /// l = 24, a = 3 ms, slots of 200 to 400 ms, ramps of 30 ms, FP 5e-4 (z* = 3.29, below
    /// CCS'05's 7.7e-4 at h = 4), one origin.
    fn default() -> Self {
        Self {
            bits: 24,
            adjustment_us: 3000,
            slot_min_us: 200_000,
            slot_max_us: 400_000,
            ramp_us: 30_000,
            false_positive: 5e-4,
            origin_candidates: 1,
            period_us: None,
            undecided_power: 0.95,
        }
    }
}

impl IntervalParams {
    /// Checks every parameter's range.
    pub fn validate(&self) -> Result<(), TraceError> {
        let bad = |name, reason: String| Err(TraceError::InvalidParameter { name, reason });
        if self.bits == 0 || self.bits > 1024 {
            return bad("bits", format!("{} is not in 1..=1024", self.bits));
        }
        if self.adjustment_us == 0 || self.adjustment_us > 1_000_000 {
            return bad(
                "adjustment_us",
                format!("{} is not in 1..=1000000", self.adjustment_us),
            );
        }
        if self.slot_min_us < 1000 || self.slot_min_us > 60_000_000 {
            return bad(
                "slot_min_us",
                format!("{} is not in 1000..=60000000", self.slot_min_us),
            );
        }
        if self.slot_max_us < self.slot_min_us || self.slot_max_us > 60_000_000 {
            return bad(
                "slot_max_us",
                format!(
                    "{} is not in slot_min_us ({})..=60000000",
                    self.slot_max_us, self.slot_min_us
                ),
            );
        }
        if self.ramp_us * 2 > self.slot_min_us {
            return bad(
                "ramp_us",
                format!("{} exceeds half the shortest slot", self.ramp_us),
            );
        }
        if !(self.false_positive > 0.0 && self.false_positive < 0.5) {
            return bad(
                "false_positive",
                format!("{} is not in (0, 0.5)", self.false_positive),
            );
        }
        if self.origin_candidates == 0 || self.origin_candidates > 64 {
            return bad(
                "origin_candidates",
                format!("{} is not in 1..=64", self.origin_candidates),
            );
        }
        if let Some(p) = self.period_us {
            if !(100..=1_000_000).contains(&p) {
                return bad("period_us", format!("{p} is not in 100..=1000000"));
            }
        }
        if !(0.0..=1.0).contains(&self.undecided_power) {
            return bad(
                "undecided_power",
                format!("{} is not in [0, 1]", self.undecided_power),
            );
        }
        Ok(())
    }

    /// The mean slot length L̄, µs.
    pub fn mean_slot_us(&self) -> f64 {
        (self.slot_min_us + self.slot_max_us) as f64 / 2.0
    }

    /// The effective amplitude a' = a (1 - ramp / L̄), µs: the mean delay over a delayed slot.
    pub fn effective_adjustment_us(&self) -> f64 {
        self.adjustment_us as f64 * (1.0 - self.ramp_us as f64 / self.mean_slot_us())
    }

    /// The score threshold z* = Φ⁻¹(1 - FP / K).
    pub fn threshold(&self) -> f64 {
        threshold(self.false_positive, self.origin_candidates)
    }
}

/// z* = Φ⁻¹(1 - fp / candidates).
pub fn threshold(false_positive: f64, candidates: u32) -> f64 {
    normal_quantile(1.0 - false_positive / candidates.max(1) as f64)
}

/// The false-positive probability of a score `z` with `candidates` origins tried:
/// min(1, K (1 - Φ(z))).
pub fn false_positive_probability(z: f64, candidates: u32) -> f64 {
    (candidates.max(1) as f64 * normal_sf(z)).min(1.0)
}

/// Hoeffding's distribution-free bound on the same probability: min(1, K exp(-z²/2)) for z > 0.
pub fn false_positive_bound(z: f64, candidates: u32) -> f64 {
    if z <= 0.0 {
        return 1.0;
    }
    (candidates.max(1) as f64 * (-z * z / 2.0).exp()).min(1.0)
}

/// The normal model of the score of a watermarked flow: (mean, standard deviation) of Z for
/// `pairs` slot pairs, amplitude `a_us` and per-pair difference noise variance `pair_var_us2`.
pub fn score_model(pairs: f64, a_us: f64, pair_var_us2: f64) -> (f64, f64) {
    if pairs <= 0.0 {
        return (0.0, 1.0);
    }
    let (a2, s2) = (a_us * a_us, pair_var_us2.max(0.0));
    let q = a2 + s2;
    if q <= 0.0 {
        return (0.0, 1.0);
    }
    let mean = pairs.sqrt() * a_us / q.sqrt();
    let var = s2 / q + a2 * s2 * (2.0 * a2 + s2) / (2.0 * q * q * q) - 2.0 * a2 * s2 / (q * q);
    (mean, var.max(1e-12).sqrt())
}

/// TP = P(Z > z*) under [`score_model`].
pub fn true_positive_rate(threshold: f64, pairs: f64, a_us: f64, pair_var_us2: f64) -> f64 {
    let (m, s) = score_model(pairs, a_us, pair_var_us2);
    normal_sf((threshold - m) / s)
}

/// The analytic true-positive rate of `params` on a call of `duration_us` with frame period
/// `period_us`, independent sender jitter `sender_jitter_sd_us` and FIFO U[0, `max_delay_us`]:
/// P = duration / 2L̄ pairs, n = L̄ / T packets per slot, σ² = σ_s² + D²/12, σ_d² = 2σ²/n.
pub fn analytic_true_positive(
    params: &IntervalParams,
    period_us: f64,
    duration_us: f64,
    sender_jitter_sd_us: f64,
    max_delay_us: f64,
) -> f64 {
    let l = params.mean_slot_us();
    let pairs = (duration_us / (2.0 * l)).floor();
    let n = l / period_us;
    let sigma2 = sender_jitter_sd_us.powi(2) + max_delay_us.powi(2) / 12.0;
    true_positive_rate(
        params.threshold(),
        pairs,
        params.effective_adjustment_us(),
        2.0 * sigma2 / n,
    )
}

/// One keyed slot pair, times relative to the flow's origin (µs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotPair {
    /// Start of slot A.
    pub start_us: u64,
    /// Length of slot A.
    pub first_us: u64,
    /// Length of slot B (which starts where A ends).
    pub second_us: u64,
    /// The keyed chip (true: +1).
    pub chip: bool,
    /// Which watermark bit the pair carries.
    pub bit: u32,
    /// Whether slot A (true) or slot B (false) is delayed: chip == bit.
    pub first_delayed: bool,
}

impl SlotPair {
    /// End of slot B.
    pub fn end_us(&self) -> u64 {
        self.start_us + self.first_us + self.second_us
    }

    /// The delayed slot, [start, end).
    pub fn delayed_slot(&self) -> (u64, u64) {
        if self.first_delayed {
            (self.start_us, self.start_us + self.first_us)
        } else {
            (self.start_us + self.first_us, self.end_us())
        }
    }

    /// The delay of a packet arriving `t_us` after the origin (0 outside the delayed slot;
    /// a trapezoid of height `a_us` with ramps of `ramp_us` inside it).
    pub fn delay_at(&self, t_us: u64, a_us: u64, ramp_us: u64) -> u64 {
        let (s, e) = self.delayed_slot();
        if t_us < s || t_us >= e {
            return 0;
        }
        if ramp_us == 0 {
            return a_us;
        }
        let edge = (t_us - s).min(e - t_us) as f64 / ramp_us as f64;
        (a_us as f64 * edge.min(1.0)).round() as u64
    }
}

/// The keyed slot schedule of one (key, mark id), generated pair by pair.
pub(crate) struct ScheduleGen {
    stream: KeyStream,
    next_start: u64,
    index: u64,
    slot_min: u64,
    slot_range: u64,
    bits: Vec<bool>,
}

impl ScheduleGen {
    pub(crate) fn new(
        params: &IntervalParams,
        key: &WatermarkKey,
        mark: MarkId,
        watermark: &Watermark,
    ) -> Result<Self, TraceError> {
        params.validate()?;
        if watermark.len() != params.bits as usize {
            return Err(TraceError::WatermarkLength {
                expected: params.bits,
                got: watermark.len(),
            });
        }
        Ok(Self {
            stream: key.stream("interval/schedule", mark)?,
            next_start: 0,
            index: 0,
            slot_min: params.slot_min_us,
            slot_range: params.slot_max_us - params.slot_min_us + 1,
            bits: watermark.bits().to_vec(),
        })
    }

    pub(crate) fn next_pair(&mut self) -> Result<SlotPair, TraceError> {
        let first = self.slot_min + self.stream.below(self.slot_range)?;
        let second = self.slot_min + self.stream.below(self.slot_range)?;
        let chip = self.stream.next_u64()? & 1 == 1;
        let bit = (self.index % self.bits.len() as u64) as u32;
        let pair = SlotPair {
            start_us: self.next_start,
            first_us: first,
            second_us: second,
            chip,
            bit,
            first_delayed: chip == self.bits[bit as usize],
        };
        self.next_start = pair.end_us();
        self.index += 1;
        Ok(pair)
    }
}

/// The slot pairs of (key, mark id) that start before `horizon_us` after the origin.
pub fn schedule(
    params: &IntervalParams,
    key: &WatermarkKey,
    mark: MarkId,
    watermark: &Watermark,
    horizon_us: u64,
) -> Result<Vec<SlotPair>, TraceError> {
    let mut gen = ScheduleGen::new(params, key, mark, watermark)?;
    let mut v = Vec::new();
    loop {
        let p = gen.next_pair()?;
        if p.start_us >= horizon_us {
            return Ok(v);
        }
        v.push(p);
    }
}

/// Smoothing of the tracker's reference phase.
const TRACK_ALPHA: f64 = 0.1;
/// Smoothing of the refinement passes: fast first (a coarse period drifts a few percent of a
/// frame per packet), slow last.
const TRACK_ALPHAS: [f64; 4] = [0.5, 0.3, 0.1, TRACK_ALPHA];

/// Estimates the frame period from the inter-packet delays: the densest window (1/12 of the
/// median IPD wide) of the sorted positive IPDs locates the mode c, then c is moved to the
/// mean of the IPDs within [2c/3, 4c/3] (silences, losses and most split intervals left out)
/// until it settles. None with
/// fewer than 4 positive IPDs or a period under 100 µs.
pub fn estimate_period(timestamps_us: &[u64]) -> Option<f64> {
    let mut ipds: Vec<u64> = timestamps_us
        .windows(2)
        .map(|w| w[1].saturating_sub(w[0]))
        .filter(|&d| d > 0)
        .collect();
    if ipds.len() < 4 {
        return None;
    }
    ipds.sort_unstable();
    let med = ipds[ipds.len() / 2];
    let width = (med / 12).max(50);
    let (mut best_i, mut best_j) = (0, 0);
    let mut j = 0;
    for i in 0..ipds.len() {
        while j < ipds.len() && ipds[j] - ipds[i] <= width {
            j += 1;
        }
        if j - i > best_j - best_i {
            (best_i, best_j) = (i, j);
        }
    }
    // Recentre: the mean of the IPDs within c ± c/3, until it settles (a symmetric window
    // around the mode converges on the centre of the frame-interval peak; each step removes
    // about a third of the offset even when the noise is as wide as the window).
    let mut prefix = Vec::with_capacity(ipds.len() + 1);
    prefix.push(0u128);
    for &d in &ipds {
        prefix.push(prefix[prefix.len() - 1] + d as u128);
    }
    let mut c = ipds[(best_i + best_j) / 2] as f64;
    for _ in 0..40 {
        let lo = ipds.partition_point(|&d| (d as f64) < c * 2.0 / 3.0);
        let hi = ipds.partition_point(|&d| (d as f64) <= c * 4.0 / 3.0);
        if hi <= lo {
            break;
        }
        let next = (prefix[hi] - prefix[lo]) as f64 / (hi - lo) as f64;
        let done = (next - c).abs() < 0.5;
        c = next;
        if done {
            break;
        }
    }
    (c >= 100.0).then_some(c)
}

/// The frame tracker's output for one flow.
pub(crate) struct Tracked {
    pub(crate) period: f64,
    pub(crate) residual: Vec<f64>,
}

/// Cost of an index step other than one frame (a lost or an inserted packet): -ln(1 %).
const SLIP_PENALTY: f64 = 4.6;

/// Assigns every packet a frame index and its residual against the frame clock.
///
/// Without `noise_var` the index is the nearest frame to the smoothed reference phase. With
/// it, steps of 0..=3 frames from the previous packet are weighed: cost r²/(2 noise_var) plus
/// [`SLIP_PENALTY`] per frame of difference from a one-frame step, so a single packet pushed
/// far by network delay does not fake a loss, while a real loss (or insertion) still wins
/// against a residual of about half a period plus the penalty. Longer gaps (silences) round.
fn track(
    ts: &[u64],
    period: f64,
    alpha: f64,
    noise_var: Option<f64>,
    index: &mut Vec<i64>,
    residual: &mut Vec<f64>,
    reference: &mut Vec<f64>,
) {
    index.clear();
    residual.clear();
    reference.clear();
    let y0 = ts[0];
    let mut refr = 0.0f64;
    let mut kprev = 0i64;
    let half = period / 2.0;
    let inv_period = 1.0 / period;
    // A one-frame step beats a slip of one frame iff |r| <= T/2 + σ² P / T.
    let one_step = noise_var.map(|v| half + v * SLIP_PENALTY / period);
    let inv_2var = noise_var.map(|v| 0.5 / v).unwrap_or(0.0);
    index.reserve(ts.len());
    residual.reserve(ts.len());
    reference.reserve(ts.len());
    for (j, &y) in ts.iter().enumerate() {
        let t = (y - y0) as f64;
        let nearest = round_i64((t - refr) * inv_period);
        let k = if j == 0 {
            nearest
        } else {
            match one_step {
                Some(limit) if nearest - kprev <= 3 => {
                    let r1 = t - (kprev + 1) as f64 * period - refr;
                    if r1.abs() <= limit {
                        kprev + 1
                    } else {
                        let mut best = (f64::INFINITY, kprev + 1);
                        for m in 0..=3i64 {
                            let r = r1 - (m - 1) as f64 * period;
                            let cost = r * r * inv_2var + SLIP_PENALTY * (m - 1).abs() as f64;
                            if cost < best.0 {
                                best = (cost, kprev + m);
                            }
                        }
                        best.1
                    }
                }
                _ => nearest.max(kprev),
            }
        };
        let r = t - k as f64 * period;
        index.push(k);
        residual.push(r);
        reference.push(refr);
        refr += alpha * (r - refr).clamp(-half, half);
        kprev = k;
    }
}

/// Half the robust variance of the inter-packet delays under 1.5 periods: a first guess of the
/// per-packet noise (an IPD is the difference of two packets' noise), at least 100 µs².
fn ipd_noise_variance(ts: &[u64], period: f64) -> f64 {
    let mut d: Vec<f64> = ts
        .windows(2)
        .map(|w| (w[1] - w[0]) as f64)
        .filter(|&d| d < 1.5 * period)
        .collect();
    let med = median_in_place(&mut d);
    let mut abs: Vec<f64> = d.iter().map(|x| (x - med).abs()).collect();
    let mad = 1.4826 * median_in_place(&mut abs);
    (mad * mad / 2.0).max(100.0)
}

/// Nearest integer, half away from zero (an inlined conversion: `f64::round` is a libm call
/// on baseline x86-64 and dominated the tracker's time).
#[inline]
fn round_i64(x: f64) -> i64 {
    if x >= 0.0 {
        (x + 0.5) as i64
    } else {
        (x - 0.5) as i64
    }
}

/// A robust variance (1.4826 MAD)² of residual - reference, at least 100 µs².
fn noise_variance(residual: &[f64], reference: &[f64]) -> f64 {
    let mut dev: Vec<f64> = residual.iter().zip(reference).map(|(r, f)| r - f).collect();
    let med = median_in_place(&mut dev);
    let mut abs: Vec<f64> = dev.iter().map(|d| (d - med).abs()).collect();
    let mad = 1.4826 * median_in_place(&mut abs);
    (mad * mad).max(100.0)
}

/// Pooled within-run least-squares slope of residual on frame index (runs split at index
/// jumps over 2, i.e. at silences), over packets near the reference.
fn refine(period: f64, index: &[i64], residual: &[f64], reference: &[f64]) -> f64 {
    let (mut num, mut den) = (0.0f64, 0.0f64);
    let (mut sk, mut sr, mut skk, mut skr, mut c) = (0.0, 0.0, 0.0, 0.0, 0.0);
    let mut base = index.first().copied().unwrap_or(0);
    let flush = |sk: f64, sr: f64, skk: f64, skr: f64, c: f64, num: &mut f64, den: &mut f64| {
        if c >= 3.0 {
            *num += skr - sk * sr / c;
            *den += skk - sk * sk / c;
        }
    };
    for j in 0..index.len() {
        if j > 0 && index[j] - index[j - 1] > 2 {
            flush(sk, sr, skk, skr, c, &mut num, &mut den);
            (sk, sr, skk, skr, c) = (0.0, 0.0, 0.0, 0.0, 0.0);
            base = index[j];
        }
        if (residual[j] - reference[j]).abs() > 0.3 * period {
            continue;
        }
        let k = (index[j] - base) as f64;
        let r = residual[j];
        sk += k;
        sr += r;
        skk += k * k;
        skr += k * r;
        c += 1.0;
    }
    flush(sk, sr, skk, skr, c, &mut num, &mut den);
    if den <= 0.0 {
        return period;
    }
    let slope = num / den;
    if !slope.is_finite() || slope.abs() > 0.2 * period {
        return period;
    }
    period + slope
}

/// Locks onto the flow's frame clock: period (hint or estimate, then two refinements) and
/// every packet's residual. None if no period can be found.
pub(crate) fn track_flow(ts: &[u64], hint: Option<u64>) -> Option<Tracked> {
    let mut period = match hint {
        Some(p) => p as f64,
        None => estimate_period(ts)?,
    };
    let (mut index, mut residual, mut reference) = (Vec::new(), Vec::new(), Vec::new());
    // Each pass tracks with the current period, then refines it by least squares; the first,
    // with a fast reference, follows a coarse period's drift (the noise guessed from the
    // inter-packet delays), the last ones track the refined period with the slow reference.
    let mut var = ipd_noise_variance(ts, period);
    for alpha in TRACK_ALPHAS {
        track(
            ts,
            period,
            alpha,
            Some(var),
            &mut index,
            &mut residual,
            &mut reference,
        );
        period = refine(period, &index, &residual, &reference);
        var = noise_variance(&residual, &reference);
    }
    track(
        ts,
        period,
        TRACK_ALPHA,
        Some(var),
        &mut index,
        &mut residual,
        &mut reference,
    );
    Some(Tracked { period, residual })
}

/// Drops packets that look inserted: an interior packet whose two inter-packet delays are
/// together under 1.25 periods with the shorter under 0.4 periods (a real packet between two
/// real ones has about two periods around it). The detector applies it when the flow's noise
/// range is under 0.6 periods; it does not look at the key, so the score's null distribution
/// holds.
pub fn drop_suspected_chaff(timestamps_us: &[u64], period: f64) -> Vec<u64> {
    let n = timestamps_us.len();
    let mut out = Vec::with_capacity(n);
    for j in 0..n {
        if j > 0 && j + 1 < n {
            let a = (timestamps_us[j] - timestamps_us[j - 1]) as f64;
            let b = (timestamps_us[j + 1] - timestamps_us[j]) as f64;
            if a + b < 1.25 * period && a.min(b) < 0.4 * period {
                continue;
            }
        }
        out.push(timestamps_us[j]);
    }
    out
}

/// The packets the detector works on (suspected chaff dropped) and their tracking.
pub(crate) fn prepare(ts: &[u64], hint: Option<u64>) -> Option<(Vec<u64>, Tracked)> {
    if ts.len() < 8 {
        return None;
    }
    let coarse = match hint {
        Some(p) => p as f64,
        None => estimate_period(ts)?,
    };
    // The filter is only safe while the network noise cannot bring two real packets within
    // 1.25 periods around a third: judge the noise range D from the upper tail of the IPDs
    // (inserted packets only add short ones): for FIFO U[0, D], q90 - T = 0.55 D.
    let mut ipds: Vec<f64> = ts.windows(2).map(|w| (w[1] - w[0]) as f64).collect();
    let q90_at = ipds.len() * 9 / 10;
    let q90 = *ipds.select_nth_unstable_by(q90_at, f64::total_cmp).1;
    let noise_range = (q90 - coarse).max(0.0) / 0.55;
    let clean = if noise_range < 0.6 * coarse {
        drop_suspected_chaff(ts, coarse)
    } else {
        ts.to_vec()
    };
    if clean.len() < 8 {
        return None;
    }
    let tracked = track_flow(&clean, hint)?;
    Some((clean, tracked))
}

/// What the interval-phase detector found (before the verdict).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Scored {
    pub(crate) z: f64,
    pub(crate) pairs: u32,
    pub(crate) bits_used: u32,
    pub(crate) bit_errors: u32,
    pub(crate) power: f64,
    pub(crate) origin: usize,
    pub(crate) candidates: u32,
}

struct SlotStat {
    mean: f64,
    count: f64,
}

/// The mean of one slot's residuals. Adds their squared deviations to `ss` and their count
/// less one to `dof` (the pooled within-slot noise).
fn slot_stat(buf: &[f64], ss: &mut f64, dof: &mut f64) -> Option<SlotStat> {
    if buf.is_empty() {
        return None;
    }
    let c = buf.len() as f64;
    let mean = buf.iter().sum::<f64>() / c;
    *ss += buf.iter().map(|r| (r - mean) * (r - mean)).sum::<f64>();
    *dof += c - 1.0;
    Some(SlotStat { mean, count: c })
}

struct PairStat {
    sign: f64,
    chip: f64,
    bit: u32,
    d: f64,
    v: f64,
}

/// Scores one origin candidate.
fn score_origin(
    params: &IntervalParams,
    pairs: &[SlotPair],
    ts: &[u64],
    residual: &[f64],
    origin: usize,
    bits: &[bool],
) -> (f64, u32, u32, u32, f64) {
    let origin_t = ts[origin];
    let mut stats: Vec<PairStat> = Vec::with_capacity(pairs.len());
    let (mut buf_a, mut buf_b) = (Vec::new(), Vec::new());
    let (mut ss, mut dof) = (0.0f64, 0.0f64);
    let mut j = origin;
    for pair in pairs {
        buf_a.clear();
        buf_b.clear();
        let mid = pair.start_us + pair.first_us;
        let end = pair.end_us();
        while j < ts.len() {
            let t = ts[j] - origin_t;
            if t < pair.start_us {
                j += 1;
                continue;
            }
            if t >= end {
                break;
            }
            if t < mid {
                buf_a.push(residual[j]);
            } else {
                buf_b.push(residual[j]);
            }
            j += 1;
        }
        let a = slot_stat(&buf_a, &mut ss, &mut dof);
        let b = slot_stat(&buf_b, &mut ss, &mut dof);
        if let (Some(a), Some(b)) = (a, b) {
            let sign = if pair.first_delayed { 1.0 } else { -1.0 };
            stats.push(PairStat {
                sign,
                chip: if pair.chip { 1.0 } else { -1.0 },
                bit: pair.bit,
                d: a.mean - b.mean,
                v: 1.0 / (1.0 / a.count + 1.0 / b.count),
            });
        }
        if j >= ts.len() {
            break;
        }
    }
    if stats.is_empty() {
        return (0.0, 0, 0, params.bits, 0.0);
    }
    let mut abs: Vec<f64> = stats.iter().map(|s| s.d.abs()).collect();
    let clip = 3.0 * median_in_place(&mut abs);
    let (mut num, mut den) = (0.0f64, 0.0f64);
    let mut per_bit = vec![(0.0f64, 0u32); params.bits as usize];
    let (mut sv, mut svv) = (0.0f64, 0.0f64);
    for s in &stats {
        let psi = s.d.clamp(-clip, clip);
        num += s.sign * s.v * psi;
        den += s.v * s.v * psi * psi;
        let e = &mut per_bit[s.bit as usize];
        e.0 += s.chip * s.v * psi;
        e.1 += 1;
        sv += s.v;
        svv += s.v * s.v;
    }
    let z = if den > 0.0 { num / den.sqrt() } else { 0.0 };
    let mut bits_used = 0;
    let mut bit_errors = 0;
    for (i, &(score, count)) in per_bit.iter().enumerate() {
        if count > 0 {
            bits_used += 1;
        }
        let decoded = if score > 0.0 {
            Some(true)
        } else if score < 0.0 {
            Some(false)
        } else {
            None
        };
        if decoded != Some(bits[i]) {
            bit_errors += 1;
        }
    }
    // Power against a watermark of amplitude a' under this flow's own noise.
    let sigma2 = if dof > 0.0 { ss / dof } else { 0.0 };
    let p_eff = sv * sv / svv;
    let v_eff = svv / sv;
    let (m, sd) = score_model(p_eff, params.effective_adjustment_us(), sigma2 / v_eff);
    let power = normal_sf((params.threshold() - m) / sd);
    (z, stats.len() as u32, bits_used, bit_errors, power)
}

/// Runs the detector on sorted timestamps. None if the flow is too short or has no frame clock.
pub(crate) fn score(
    params: &IntervalParams,
    key: &WatermarkKey,
    mark: MarkId,
    watermark: &Watermark,
    ts: &[u64],
) -> Result<Option<Scored>, TraceError> {
    let Some((clean, tracked)) = prepare(ts, params.period_us) else {
        return Ok(None);
    };
    let ts = &clean[..];
    let horizon = ts[ts.len() - 1] - ts[0];
    let pairs = schedule(params, key, mark, watermark, horizon + 1)?;
    let candidates = (params.origin_candidates as usize).min(ts.len() - 1);
    let mut best: Option<Scored> = None;
    for origin in 0..candidates {
        let (z, n, bits_used, bit_errors, power) = score_origin(
            params,
            &pairs,
            ts,
            &tracked.residual,
            origin,
            watermark.bits(),
        );
        if best.as_ref().is_none_or(|b| z > b.z) {
            best = Some(Scored {
                z,
                pairs: n,
                bits_used,
                bit_errors,
                power,
                origin,
                candidates: candidates as u32,
            });
        }
    }
    Ok(best.map(|mut b| {
        b.candidates = candidates as u32;
        b
    }))
}

/// The period the tracker locks onto for `timestamps_us` (for reports), µs.
pub fn tracked_period(timestamps_us: &[u64], hint: Option<u64>) -> Option<f64> {
    prepare(timestamps_us, hint).map(|(_, t)| t.period)
}

/// The packets kept (suspected chaff dropped) and their residuals against the flow's frame
/// clock: the public part of the detector, which an attacker can run too (the multi-flow
/// attack uses it). None if no period is found.
pub fn residuals(timestamps_us: &[u64], hint: Option<u64>) -> Option<(Vec<u64>, Vec<f64>)> {
    prepare(timestamps_us, hint).map(|(c, t)| (c, t.residual))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> WatermarkKey {
        WatermarkKey::from_bytes([9; 32])
    }

    fn wm(p: &IntervalParams) -> Watermark {
        Watermark::derive(
            &crate::SchemeParams::IntervalPhase(p.clone()),
            &key(),
            MarkId(1),
        )
        .unwrap()
    }

    #[test]
    fn defaults_validate_and_threshold() {
        let p = IntervalParams::default();
        p.validate().unwrap();
        assert!((p.threshold() - 3.290_527).abs() < 1e-4);
        let p3 = IntervalParams {
            origin_candidates: 3,
            ..p.clone()
        };
        assert!((p3.threshold() - normal_quantile(1.0 - 5e-4 / 3.0)).abs() < 1e-9);
        assert!((false_positive_probability(p.threshold(), 1) - 5e-4).abs() < 1e-8);
        assert!(false_positive_bound(3.09, 1) > 1e-3);
        let bad = IntervalParams {
            ramp_us: 150_000,
            ..p.clone()
        };
        assert!(bad.validate().is_err());
        let bad = IntervalParams {
            slot_max_us: 1000,
            ..p
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn schedule_is_contiguous_and_keyed() {
        let p = IntervalParams::default();
        let w = wm(&p);
        let s = schedule(&p, &key(), MarkId(1), &w, 60_000_000).unwrap();
        assert!(s.len() > 60);
        assert_eq!(s[0].start_us, 0);
        for win in s.windows(2) {
            assert_eq!(win[0].end_us(), win[1].start_us);
        }
        for (i, pair) in s.iter().enumerate() {
            assert!((p.slot_min_us..=p.slot_max_us).contains(&pair.first_us));
            assert_eq!(pair.bit as usize, i % 24);
            assert_eq!(pair.first_delayed, pair.chip == w.bits()[pair.bit as usize]);
        }
        let other = schedule(&p, &key(), MarkId(2), &w, 60_000_000).unwrap();
        assert_ne!(s[0], other[0]);
        assert!(matches!(
            schedule(&p, &key(), MarkId(1), &Watermark::from_bits(vec![true]), 1),
            Err(TraceError::WatermarkLength { .. })
        ));
    }

    #[test]
    fn delay_profile() {
        let pair = SlotPair {
            start_us: 1000,
            first_us: 300_000,
            second_us: 300_000,
            chip: true,
            bit: 0,
            first_delayed: true,
        };
        assert_eq!(pair.delay_at(999, 3000, 0), 0);
        assert_eq!(pair.delay_at(1000, 3000, 0), 3000);
        assert_eq!(pair.delay_at(301_000, 3000, 0), 0);
        assert_eq!(pair.delay_at(1000, 3000, 30_000), 0);
        assert_eq!(pair.delay_at(16_000, 3000, 30_000), 1500);
        assert_eq!(pair.delay_at(150_000, 3000, 30_000), 3000);
        assert_eq!(pair.delay_at(286_000, 3000, 30_000), 1500);
    }

    #[test]
    fn period_estimate_and_tracking() {
        // 30 ms frames with 5 % of the frames lost and a few inserted packets.
        let mut ts: Vec<u64> = (0..2000u64)
            .filter(|k| k % 20 != 7)
            .map(|k| 5_000_000 + k * 30_000 + (k * 7919 % 4000))
            .collect();
        ts.extend([
            5_000_000 + 12_345,
            5_000_000 + 900_001,
            5_000_000 + 30_000_000 + 17,
        ]);
        ts.sort_unstable();
        let t0 = estimate_period(&ts).unwrap();
        assert!((t0 - 30_000.0).abs() < 1500.0, "{t0}");
        let t = track_flow(&ts, None).unwrap();
        assert!((t.period - 30_000.0).abs() < 5.0, "{}", t.period);
        assert!(estimate_period(&[1, 2, 3]).is_none());
        assert!(track_flow(&[5; 20], None).is_none());
    }
}
