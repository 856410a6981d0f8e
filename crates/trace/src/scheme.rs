//! What the embedder and the detector agree on besides the key and the mark id.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ccs05::Ccs05Params;
use crate::interval::IntervalParams;
use crate::key::{MarkId, WatermarkKey};
use crate::TraceError;

/// The two watermarking schemes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scheme {
    /// Wang, Chen, Jajodia, CCS 2005: IPDD of keyed packet pairs, hard bits, Hamming threshold.
    Ccs05,
    /// Keyed time slots delayed whole, phase against the frame clock, correlation score.
    IntervalPhase,
}

impl Scheme {
    /// Short name used in tables and on the command line (`ccs05`, `interval`).
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Ccs05 => "ccs05",
            Scheme::IntervalPhase => "interval",
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A scheme and its parameters (JSON: `{"scheme": "ccs05", ...}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "scheme", rename_all = "snake_case")]
pub enum SchemeParams {
    /// See [`Ccs05Params`].
    Ccs05(Ccs05Params),
    /// See [`IntervalParams`].
    IntervalPhase(IntervalParams),
}

impl SchemeParams {
    /// The CCS 2005 experiment's setup: l = 24, r = 25, a = 3 ms, h = 4, pairs drawn from the
    /// first 3000 packets (90 s of 30 ms packets).
    pub fn ccs05_paper() -> Self {
        SchemeParams::Ccs05(Ccs05Params::paper())
    }

    /// The interval-phase scheme's defaults ([`IntervalParams::default`]).
    pub fn interval_default() -> Self {
        SchemeParams::IntervalPhase(IntervalParams::default())
    }

    /// Which scheme.
    pub fn scheme(&self) -> Scheme {
        match self {
            SchemeParams::Ccs05(_) => Scheme::Ccs05,
            SchemeParams::IntervalPhase(_) => Scheme::IntervalPhase,
        }
    }

    /// The number of watermark bits.
    pub fn bits(&self) -> u32 {
        match self {
            SchemeParams::Ccs05(p) => p.bits,
            SchemeParams::IntervalPhase(p) => p.bits,
        }
    }

    /// The adjustment (delay) a, in microseconds.
    pub fn adjustment_us(&self) -> u64 {
        match self {
            SchemeParams::Ccs05(p) => p.adjustment_us,
            SchemeParams::IntervalPhase(p) => p.adjustment_us,
        }
    }

    /// [`SchemeParams::validate`], and that `watermark` has this scheme's number of bits.
    pub fn check_watermark(&self, watermark: &Watermark) -> Result<(), TraceError> {
        self.validate()?;
        if watermark.len() != self.bits() as usize {
            return Err(TraceError::WatermarkLength {
                expected: self.bits(),
                got: watermark.len(),
            });
        }
        Ok(())
    }

    /// Checks every parameter's range.
    pub fn validate(&self) -> Result<(), TraceError> {
        match self {
            SchemeParams::Ccs05(p) => p.validate(),
            SchemeParams::IntervalPhase(p) => p.validate(),
        }
    }
}

/// The watermark's bits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watermark {
    bits: Vec<bool>,
}

impl Watermark {
    /// A watermark from its bits.
    pub fn from_bits(bits: Vec<bool>) -> Self {
        Self { bits }
    }

    /// The watermark a (key, mark id) carries under `params` when none is given: `bits`
    /// pseudo-random bits from the keyed stream (`<scheme>/bits`).
    pub fn derive(
        params: &SchemeParams,
        key: &WatermarkKey,
        mark: MarkId,
    ) -> Result<Self, TraceError> {
        let label = match params.scheme() {
            Scheme::Ccs05 => "ccs05/bits",
            Scheme::IntervalPhase => "interval/bits",
        };
        let mut stream = key.stream(label, mark)?;
        let n = params.bits() as usize;
        let mut bits = Vec::with_capacity(n);
        let mut word = 0u64;
        for i in 0..n {
            if i % 64 == 0 {
                word = stream.next_u64()?;
            }
            bits.push((word >> (i % 64)) & 1 == 1);
        }
        Ok(Self { bits })
    }

    /// The bits.
    pub fn bits(&self) -> &[bool] {
        &self.bits
    }

    /// The number of bits.
    pub fn len(&self) -> usize {
        self.bits.len()
    }

    /// Whether there are no bits.
    pub fn is_empty(&self) -> bool {
        self.bits.is_empty()
    }
}

impl fmt::Display for Watermark {
    /// `0`s and `1`s, first bit first.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.bits {
            f.write_str(if *b { "1" } else { "0" })?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Watermark {
    type Err = TraceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut bits = Vec::new();
        for c in s.trim().chars() {
            match c {
                '0' => bits.push(false),
                '1' => bits.push(true),
                _ => {
                    return Err(TraceError::InvalidParameter {
                        name: "watermark",
                        reason: format!("{c:?} is not 0 or 1"),
                    })
                }
            }
        }
        Ok(Self { bits })
    }
}
