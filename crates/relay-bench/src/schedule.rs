//! Pacing: when each stream sends its next packet.
//!
//! Every stream sends at its own fixed period; the streams' phases are spread evenly over that
//! period (stream `i` of `n` starts `i * period / n` after the step starts), so `n` streams of
//! the same rate make one smooth aggregate stream with a gap of `period / n` between packets,
//! never a burst of all streams at once. Send times are absolute (start + phase + k * period):
//! a late send does not shift the ones after it.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// The period of a stream of `pps` packets per second, in nanoseconds.
pub fn period_ns(pps: u32) -> u64 {
    1_000_000_000 / u64::from(pps.max(1))
}

/// The phase of stream `i` of `n` within its period.
pub fn phase_ns(i: usize, n: usize, period: u64) -> u64 {
    if n == 0 {
        return 0;
    }
    // u128: period * i does not overflow for any period and stream count.
    (u128::from(period) * i as u128 / n as u128) as u64
}

/// The send schedule of one step: a min-heap of (next send time, stream index).
#[derive(Debug, Default)]
pub struct Schedule {
    heap: BinaryHeap<Reverse<(u64, u32)>>,
    periods: Vec<u64>,
}

impl Schedule {
    /// Streams `0..periods.len()` with the given periods, the first sends at `start`.
    pub fn new(start: u64, periods: &[u64]) -> Schedule {
        let n = periods.len();
        let heap = periods
            .iter()
            .enumerate()
            .map(|(i, &p)| Reverse((start + phase_ns(i, n, p), i as u32)))
            .collect();
        Schedule {
            heap,
            periods: periods.to_vec(),
        }
    }

    /// The next send: (time, stream), without taking it.
    pub fn peek(&self) -> Option<(u64, usize)> {
        self.heap.peek().map(|Reverse((t, i))| (*t, *i as usize))
    }

    /// Takes the next send if it is due at `now`, and schedules that stream's following one.
    pub fn pop_due(&mut self, now: u64) -> Option<(u64, usize)> {
        let mut top = self.heap.peek_mut()?;
        let (t, i) = top.0;
        if t > now {
            return None;
        }
        top.0 = (t + self.periods[i as usize], i);
        // Dropping `top` restores the heap order.
        Some((t, i as usize))
    }

    pub fn len(&self) -> usize {
        self.periods.len()
    }

    pub fn is_empty(&self) -> bool {
        self.periods.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_spread_evenly() {
        let n = 2000;
        let period = period_ns(50);
        assert_eq!(period, 20_000_000);
        let mut s = Schedule::new(1_000, &vec![period; n]);
        let mut times = Vec::new();
        // Two periods' worth of sends, taken in order.
        while let Some((t, _)) = s.pop_due(1_000 + 2 * period - 1) {
            times.push(t);
        }
        assert_eq!(times.len(), 2 * n);
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "in time order");
        let gap = period / n as u64;
        for w in times.windows(2) {
            let d = w[1] - w[0];
            assert!(d.abs_diff(gap) <= 1, "gap {d} vs {gap}");
        }
    }

    #[test]
    fn each_stream_keeps_its_period_and_nothing_is_early() {
        let periods = [10u64, 25, 40];
        let mut s = Schedule::new(100, &periods);
        let mut last = [None::<u64>; 3];
        let mut count = [0u32; 3];
        for now in 100..1100 {
            while let Some((t, i)) = s.pop_due(now) {
                assert!(t <= now);
                if let Some(prev) = last[i] {
                    assert_eq!(t - prev, periods[i]);
                }
                last[i] = Some(t);
                count[i] += 1;
            }
        }
        assert_eq!(count, [100, 40, 25]);
        assert_eq!(s.peek().map(|(t, _)| t >= 1094), Some(true));
    }

    #[test]
    fn phases() {
        assert_eq!(phase_ns(0, 4, 100), 0);
        assert_eq!(phase_ns(3, 4, 100), 75);
        assert_eq!(phase_ns(1, 0, 100), 0);
        assert_eq!(phase_ns(usize::MAX - 1, usize::MAX, u64::MAX), u64::MAX - 1);
    }
}
