//! The embedder: one per flow, arrival times in, release times out.

use crate::ccs05::Selection;
use crate::interval::{ScheduleGen, SlotPair};
use crate::key::{MarkId, WatermarkKey};
use crate::{SchemeParams, TraceError, Watermark};

/// Counters of one embedder.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct EmbedStats {
    /// Packets seen.
    pub packets: u64,
    /// Packets the watermark delayed (delay > 0).
    pub delayed: u64,
    /// Packets released later than arrival + their own delay because the packet ahead of
    /// them was still held (FIFO).
    pub held_back: u64,
    /// Arrivals earlier than the previous arrival (taken as the previous arrival).
    pub clock_steps_back: u64,
}

/// Watermarks one flow (sans-I/O): feed every packet's arrival time to
/// [`Embedder::on_packet`], send the packet at the time it returns.
///
/// FIFO rule: `release_j = max(arrival_j + delay_j, release_{j-1})`. A packet is never sent
/// before it arrives nor before the packet ahead of it, so the order is kept and a delayed
/// packet holds back those right behind it (they leave at the same instant, in order). With
/// 20-30 ms between voice packets and a few ms of delay this almost never binds.
///
/// CCS'05: the packet index counts from the first packet fed; the pairs lie in the first
/// `span` packets, later packets pass undelayed. Interval-phase: times count from the first
/// packet's arrival; the schedule never ends.
pub struct Embedder {
    kind: Kind,
    mark: MarkId,
    watermark: Watermark,
    adjustment_us: u64,
    origin: Option<u64>,
    last_arrival: u64,
    last_release: u64,
    stats: EmbedStats,
}

enum Kind {
    Ccs05 {
        /// Sorted delayed packet indices and the cursor into them.
        delayed: Vec<u32>,
        next: usize,
    },
    Interval {
        gen: Box<ScheduleGen>,
        current: Option<SlotPair>,
        ramp_us: u64,
        failed: bool,
    },
}

impl Embedder {
    /// The embedder of (key, mark id) under `params`, with the watermark derived from them.
    pub fn new(
        params: &SchemeParams,
        key: &WatermarkKey,
        mark: MarkId,
    ) -> Result<Self, TraceError> {
        params.validate()?;
        let w = Watermark::derive(params, key, mark)?;
        Self::with_watermark(params, key, mark, w)
    }

    /// The embedder of (key, mark id) under `params` embedding the given `watermark`.
    pub fn with_watermark(
        params: &SchemeParams,
        key: &WatermarkKey,
        mark: MarkId,
        watermark: Watermark,
    ) -> Result<Self, TraceError> {
        params.check_watermark(&watermark)?;
        let kind = match params {
            SchemeParams::Ccs05(p) => Kind::Ccs05 {
                delayed: Selection::new(p, key, mark)?.delayed(&watermark),
                next: 0,
            },
            SchemeParams::IntervalPhase(p) => Kind::Interval {
                gen: Box::new(ScheduleGen::new(p, key, mark, &watermark)?),
                current: None,
                ramp_us: p.ramp_us,
                failed: false,
            },
        };
        Ok(Self {
            kind,
            mark,
            watermark,
            adjustment_us: params.adjustment_us(),
            origin: None,
            last_arrival: 0,
            last_release: 0,
            stats: EmbedStats::default(),
        })
    }

    /// The release time of a packet that arrived at `arrival_us`: at least `arrival_us`, at
    /// least the previous release, and `arrival_us + delay` otherwise. An arrival earlier than
    /// the previous one (a clock step) is taken as the previous arrival.
    pub fn on_packet(&mut self, arrival_us: u64) -> u64 {
        let arrival = if self.origin.is_some() && arrival_us < self.last_arrival {
            self.stats.clock_steps_back += 1;
            self.last_arrival
        } else {
            arrival_us
        };
        let origin = *self.origin.get_or_insert(arrival);
        let index = self.stats.packets;
        let delay = self.delay_for(index, arrival - origin);
        let wanted = arrival.saturating_add(delay);
        let release = if index == 0 {
            wanted
        } else {
            wanted.max(self.last_release)
        };
        if delay > 0 {
            self.stats.delayed += 1;
        }
        if release > wanted {
            self.stats.held_back += 1;
        }
        self.stats.packets += 1;
        self.last_arrival = arrival;
        self.last_release = release;
        release
    }

    fn delay_for(&mut self, index: u64, t_rel: u64) -> u64 {
        let a = self.adjustment_us;
        match &mut self.kind {
            Kind::Ccs05 { delayed, next } => {
                while *next < delayed.len() && (delayed[*next] as u64) < index {
                    *next += 1;
                }
                if *next < delayed.len() && delayed[*next] as u64 == index {
                    a
                } else {
                    0
                }
            }
            Kind::Interval {
                gen,
                current,
                ramp_us,
                failed,
            } => {
                if *failed {
                    return 0;
                }
                loop {
                    match current {
                        Some(p) if t_rel < p.end_us() => return p.delay_at(t_rel, a, *ramp_us),
                        _ => match gen.next_pair() {
                            Ok(p) => *current = Some(p),
                            Err(_) => {
                                // AES-CTR over a valid key does not fail; if it ever did, the
                                // flow passes unmarked rather than stalling.
                                *failed = true;
                                return 0;
                            }
                        },
                    }
                }
            }
        }
    }

    /// The flow's mark id.
    pub fn mark(&self) -> MarkId {
        self.mark
    }

    /// The embedded watermark.
    pub fn watermark(&self) -> &Watermark {
        &self.watermark
    }

    /// The counters.
    pub fn stats(&self) -> EmbedStats {
        self.stats
    }

    /// Arrival time of the first packet (the interval schedule's origin), once seen.
    pub fn origin_us(&self) -> Option<u64> {
        self.origin
    }

    /// Watermarks a whole flow of sorted arrival times (a convenience for simulations).
    pub fn embed_flow(&mut self, arrivals_us: &[u64]) -> Vec<u64> {
        arrivals_us.iter().map(|&t| self.on_packet(t)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ccs05::Ccs05Params;
    use crate::interval::IntervalParams;

    fn key() -> WatermarkKey {
        WatermarkKey::from_bytes([1; 32])
    }

    fn all_params() -> Vec<SchemeParams> {
        vec![
            SchemeParams::ccs05_paper(),
            SchemeParams::interval_default(),
            SchemeParams::IntervalPhase(IntervalParams {
                ramp_us: 0,
                ..IntervalParams::default()
            }),
        ]
    }

    /// Never early, never out of order, even with bunched arrivals and clock steps back.
    #[test]
    fn never_early_and_fifo() {
        for params in all_params() {
            let mut e = Embedder::new(&params, &key(), MarkId(3)).unwrap();
            let mut x = 12_345u64;
            let mut t = 1_000_000u64;
            let mut last = 0;
            for i in 0..4000u64 {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                // Mostly 30 ms, sometimes bunched (0-2 ms), sometimes a clock step back.
                let step = match (x >> 60) as u8 {
                    0 => (x >> 20) % 2000,
                    1 if i > 0 => 0,
                    _ => 30_000,
                };
                let arrival = if (x >> 58) & 31 == 7 {
                    t.saturating_sub(500)
                } else {
                    t + step
                };
                t = t.max(arrival);
                let r = e.on_packet(arrival);
                assert!(r >= arrival, "early: {r} < {arrival}");
                assert!(r >= last, "reordered");
                assert!(r - arrival <= 3000 + 2 * 30_000, "held too long");
                last = r;
            }
            let s = e.stats();
            assert_eq!(s.packets, 4000);
            assert!(s.delayed > 0);
            assert!(s.clock_steps_back > 0);
        }
    }

    #[test]
    fn ccs05_delays_exactly_the_selection() {
        let p = Ccs05Params::paper();
        let params = SchemeParams::Ccs05(p.clone());
        let mut e = Embedder::new(&params, &key(), MarkId(4)).unwrap();
        let flow: Vec<u64> = (0..3500u64).map(|k| 1_000_000 + k * 30_000).collect();
        let out = e.embed_flow(&flow);
        let delayed: Vec<u32> = (0..out.len())
            .filter(|&i| out[i] != flow[i])
            .map(|i| i as u32)
            .collect();
        let sel = Selection::new(&p, &key(), MarkId(4)).unwrap();
        assert_eq!(delayed, sel.delayed(e.watermark()));
        assert!(out
            .iter()
            .zip(&flow)
            .all(|(o, f)| o - f == 0 || o - f == 3000));
    }

    #[test]
    fn watermark_length_checked() {
        let e = Embedder::with_watermark(
            &SchemeParams::ccs05_paper(),
            &key(),
            MarkId(1),
            Watermark::from_bits(vec![true; 3]),
        );
        assert!(matches!(
            e,
            Err(TraceError::WatermarkLength {
                expected: 24,
                got: 3
            })
        ));
    }
}
