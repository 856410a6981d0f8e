//! The detector: a flow's arrival times in, a verdict with its confidence out.

use serde::Serialize;

use crate::ccs05::{self, Selection};
use crate::interval;
use crate::key::{MarkId, WatermarkKey};
use crate::stats::binomial_cdf;
use crate::{Scheme, SchemeParams, TraceError, Watermark};

/// The three answers a detector gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The flow carries the watermark of this (key, mark id).
    Watermarked,
    /// It does not, and a watermark would have been seen (estimated power at least the
    /// params' `undecided_power`).
    NotWatermarked,
    /// The flow is too short (or too noisy) to say: not a "no".
    Undecided,
}

/// What the detector says about one flow and one mark id.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Detection {
    /// The scheme.
    pub scheme: Scheme,
    /// The mark id tested.
    pub mark: MarkId,
    /// The verdict.
    pub verdict: Verdict,
    /// CCS'05: the Hamming distance between decoded and embedded bits (bits the flow is too
    /// short for, and ties, count as mismatches).
    pub hamming: Option<u32>,
    /// Interval-phase: the correlation score Z (≈ N(0, 1) without the watermark).
    pub score: Option<f64>,
    /// The decision threshold: h (CCS'05, watermarked iff hamming <= h) or z* (interval,
    /// watermarked iff score >= z*).
    pub threshold: f64,
    /// Watermark bits with at least one IPDD (CCS'05) or slot pair (interval) in the flow.
    pub bits_used: u32,
    /// Bits decoded differently from the embedded watermark (missing ones included).
    pub bit_errors: u32,
    /// IPDDs (CCS'05) or slot pairs (interval) the flow had the packets for.
    pub units_used: u32,
    /// The probability that a flow without this watermark scores at least this well, under
    /// the scheme's analytic model (the confidence of a `Watermarked` verdict; multiplied by
    /// the number of mark ids tested in [`detect_any`]).
    pub false_positive_probability: f64,
    /// Estimated probability that this flow would have been detected had it carried the
    /// watermark, from its own noise.
    pub power: f64,
    /// Interval-phase: the frame period the detector locked onto, µs.
    pub period_us: Option<f64>,
    /// Packets in the flow.
    pub packets: usize,
    /// Why the verdict is `Undecided`, when it is.
    pub reason: Option<String>,
}

impl Detection {
    /// A "larger is more marked" number for ROC curves: bits - hamming (CCS'05) or Z.
    pub fn statistic(&self) -> f64 {
        match (self.hamming, self.score) {
            (Some(h), _) => self.bits_used.max(h) as f64 - h as f64,
            (None, Some(z)) => z,
            _ => f64::NEG_INFINITY,
        }
    }
}

/// The detector of one (key, mark id) under one scheme; reusable across flows.
pub struct Detector {
    params: SchemeParams,
    mark: MarkId,
    watermark: Watermark,
    inner: Inner,
}

enum Inner {
    Ccs05(Selection),
    Interval(WatermarkKey),
}

impl Detector {
    /// The detector of (key, mark id) under `params`, for the watermark derived from them.
    pub fn new(
        params: &SchemeParams,
        key: &WatermarkKey,
        mark: MarkId,
    ) -> Result<Self, TraceError> {
        params.validate()?;
        let w = Watermark::derive(params, key, mark)?;
        Self::with_watermark(params, key, mark, w)
    }

    /// The detector of (key, mark id) under `params` for a given `watermark`.
    pub fn with_watermark(
        params: &SchemeParams,
        key: &WatermarkKey,
        mark: MarkId,
        watermark: Watermark,
    ) -> Result<Self, TraceError> {
        params.check_watermark(&watermark)?;
        let inner = match params {
            SchemeParams::Ccs05(p) => Inner::Ccs05(Selection::new(p, key, mark)?),
            SchemeParams::IntervalPhase(_) => Inner::Interval(key.clone()),
        };
        Ok(Self {
            params: params.clone(),
            mark,
            watermark,
            inner,
        })
    }

    /// The mark id this detector tests.
    pub fn mark(&self) -> MarkId {
        self.mark
    }

    /// The watermark it looks for.
    pub fn watermark(&self) -> &Watermark {
        &self.watermark
    }

    /// Tests one flow: `timestamps_us` are its packets' arrival times in capture order,
    /// starting with the flow's first packet. Refuses times that go backwards
    /// ([`TraceError::NotSorted`]); any length is accepted (too short gives `Undecided`).
    pub fn detect(&self, timestamps_us: &[u64]) -> Result<Detection, TraceError> {
        if let Some(i) = (1..timestamps_us.len()).find(|&i| timestamps_us[i] < timestamps_us[i - 1])
        {
            return Err(TraceError::NotSorted {
                index: i,
                previous: timestamps_us[i - 1],
                value: timestamps_us[i],
            });
        }
        match (&self.params, &self.inner) {
            (SchemeParams::Ccs05(p), Inner::Ccs05(sel)) => {
                Ok(self.detect_ccs05(p, sel, timestamps_us))
            }
            (SchemeParams::IntervalPhase(p), Inner::Interval(key)) => {
                self.detect_interval(p, key, timestamps_us)
            }
            // `new` pairs each params variant with its own inner state.
            _ => Err(TraceError::InvalidConfig("detector state mismatch".into())),
        }
    }

    fn detect_ccs05(&self, p: &ccs05::Ccs05Params, sel: &Selection, ts: &[u64]) -> Detection {
        let d = ccs05::decode(sel, &self.watermark, ts);
        let fp = ccs05::false_positive_rate(p.bits, d.hamming);
        // Power: each bit decoded from the IPDDs present, noise from their variance (which
        // includes the watermark's ±a if present: conservative), missing bits wrong.
        let r_eff = if p.bits > d.missing {
            d.ipdds as f64 / (p.bits - d.missing) as f64
        } else {
            0.0
        };
        let power = if d.missing > p.threshold || d.ipdds < 2 {
            0.0
        } else {
            let pe = if d.ipdd_variance <= 0.0 {
                0.0
            } else {
                crate::stats::normal_cdf(
                    -(p.adjustment_us as f64) * r_eff.sqrt() / d.ipdd_variance.sqrt(),
                )
            };
            binomial_cdf(
                (p.bits - d.missing) as u64,
                (p.threshold - d.missing) as u64,
                pe,
            )
        };
        let (verdict, reason) = if d.hamming <= p.threshold {
            (Verdict::Watermarked, None)
        } else if d.missing > 0 && d.hamming - d.missing <= p.threshold {
            (
                Verdict::Undecided,
                Some(format!(
                    "flow has {} packets; {} of {} bits lie beyond its end (selection spans {} packets)",
                    ts.len(),
                    d.missing,
                    p.bits,
                    p.span
                )),
            )
        } else if power < p.undecided_power {
            (
                Verdict::Undecided,
                Some(format!(
                    "too noisy: a watermark would be found with probability {power:.3} < {}",
                    p.undecided_power
                )),
            )
        } else {
            (Verdict::NotWatermarked, None)
        };
        Detection {
            scheme: Scheme::Ccs05,
            mark: self.mark,
            verdict,
            hamming: Some(d.hamming),
            score: None,
            threshold: p.threshold as f64,
            bits_used: p.bits - d.missing,
            bit_errors: d.hamming,
            units_used: d.ipdds,
            false_positive_probability: fp,
            power,
            period_us: None,
            packets: ts.len(),
            reason,
        }
    }

    fn detect_interval(
        &self,
        p: &interval::IntervalParams,
        key: &WatermarkKey,
        ts: &[u64],
    ) -> Result<Detection, TraceError> {
        let threshold = p.threshold();
        let scored = interval::score(p, key, self.mark, &self.watermark, ts)?;
        let Some(s) = scored else {
            return Ok(Detection {
                scheme: Scheme::IntervalPhase,
                mark: self.mark,
                verdict: Verdict::Undecided,
                hamming: None,
                score: None,
                threshold,
                bits_used: 0,
                bit_errors: p.bits,
                units_used: 0,
                false_positive_probability: 1.0,
                power: 0.0,
                period_us: None,
                packets: ts.len(),
                reason: Some(if ts.len() < 8 {
                    format!(
                        "flow has {} packets, too few to find its frame clock",
                        ts.len()
                    )
                } else {
                    "no frame period found in the inter-packet delays".to_string()
                }),
            });
        };
        let period = interval::tracked_period(ts, p.period_us);
        let fp = interval::false_positive_probability(s.z, s.candidates);
        let (verdict, reason) = if s.z >= threshold {
            (Verdict::Watermarked, None)
        } else if s.power < p.undecided_power {
            (
                Verdict::Undecided,
                Some(format!(
                    "{} slot pairs in {} packets: a watermark would be found with probability {:.3} < {}",
                    s.pairs,
                    ts.len(),
                    s.power,
                    p.undecided_power
                )),
            )
        } else {
            (Verdict::NotWatermarked, None)
        };
        Ok(Detection {
            scheme: Scheme::IntervalPhase,
            mark: self.mark,
            verdict,
            hamming: None,
            score: Some(s.z),
            threshold,
            bits_used: s.bits_used,
            bit_errors: s.bit_errors,
            units_used: s.pairs,
            false_positive_probability: fp,
            power: s.power,
            period_us: period,
            packets: ts.len(),
            reason,
        })
    }
}

/// Tests one flow against several mark ids (same scheme) and returns the strongest detection
/// (smallest false-positive probability), that probability multiplied by the number of mark
/// ids tested (Bonferroni), and its verdict re-decided at the scheme's design level (CCS'05:
/// FP(h); interval: `false_positive`): `Watermarked` iff the corrected probability is within
/// it; otherwise `NotWatermarked` if any detector could say no, else `Undecided`.
pub fn detect_any(detectors: &[Detector], timestamps_us: &[u64]) -> Result<Detection, TraceError> {
    let mut all = Vec::with_capacity(detectors.len());
    for d in detectors {
        all.push(d.detect(timestamps_us)?);
    }
    let any_no = all.iter().any(|d| d.verdict == Verdict::NotWatermarked);
    let Some(mut best) = all.into_iter().min_by(|a, b| {
        a.false_positive_probability
            .total_cmp(&b.false_positive_probability)
    }) else {
        return Err(TraceError::InvalidConfig("no mark ids to test".into()));
    };
    if detectors.len() == 1 {
        return Ok(best);
    }
    let level = match &detectors[0].params {
        SchemeParams::Ccs05(p) => ccs05::false_positive_rate(p.bits, p.threshold),
        SchemeParams::IntervalPhase(p) => p.false_positive,
    };
    best.false_positive_probability =
        (best.false_positive_probability * detectors.len() as f64).min(1.0);
    if best.false_positive_probability <= level {
        best.verdict = Verdict::Watermarked;
        best.reason = None;
    } else if any_no {
        best.verdict = Verdict::NotWatermarked;
        best.reason = None;
    } else {
        best.verdict = Verdict::Undecided;
    }
    Ok(best)
}
