//! Latency histogram: fixed memory, no allocation per sample, microsecond resolution where it
//! matters (below 10 ms), 100 µs above, up to 10 s; the exact minimum and maximum are kept.

/// Buckets of 1 µs below this.
const FINE_US: u64 = 10_000;
/// Buckets of 100 µs from FINE_US up to this; above, one overflow bucket.
const COARSE_END_US: u64 = 10_000_000;
const COARSE_STEP_US: u64 = 100;
const BUCKETS: usize = (FINE_US + (COARSE_END_US - FINE_US) / COARSE_STEP_US + 1) as usize;

/// A histogram of durations given in nanoseconds, read back in microseconds.
#[derive(Clone)]
pub struct Histogram {
    counts: Box<[u64]>,
    total: u64,
    min_ns: u64,
    max_ns: u64,
    sum_ns: u128,
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("total", &self.total)
            .field("min_ns", &self.min_ns)
            .field("max_ns", &self.max_ns)
            .finish()
    }
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram::new()
    }
}

fn bucket_of(us: u64) -> usize {
    if us < FINE_US {
        us as usize
    } else if us < COARSE_END_US {
        (FINE_US + (us - FINE_US) / COARSE_STEP_US) as usize
    } else {
        BUCKETS - 1
    }
}

/// The upper edge (µs) of a bucket: a percentile is reported as the edge of its bucket.
fn bucket_upper_us(b: usize) -> u64 {
    let b = b as u64;
    if b < FINE_US {
        b + 1
    } else {
        FINE_US + (b - FINE_US + 1) * COARSE_STEP_US
    }
}

impl Histogram {
    pub fn new() -> Histogram {
        Histogram {
            counts: vec![0; BUCKETS].into_boxed_slice(),
            total: 0,
            min_ns: u64::MAX,
            max_ns: 0,
            sum_ns: 0,
        }
    }

    pub fn record(&mut self, ns: u64) {
        self.counts[bucket_of(ns / 1000)] += 1;
        self.total += 1;
        self.min_ns = self.min_ns.min(ns);
        self.max_ns = self.max_ns.max(ns);
        self.sum_ns += u128::from(ns);
    }

    pub fn reset(&mut self) {
        self.counts.fill(0);
        self.total = 0;
        self.min_ns = u64::MAX;
        self.max_ns = 0;
        self.sum_ns = 0;
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    /// The `q` quantile (0..=1) in µs: the upper edge of the bucket that holds it, never above
    /// the exact maximum. None when empty.
    pub fn quantile_us(&self, q: f64) -> Option<f64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (b, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                if b == BUCKETS - 1 {
                    return self.max_us();
                }
                let edge = bucket_upper_us(b) as f64;
                return Some(edge.min(self.max_us().unwrap_or(edge)));
            }
        }
        self.max_us()
    }

    pub fn max_us(&self) -> Option<f64> {
        (self.total > 0).then(|| self.max_ns as f64 / 1000.0)
    }

    pub fn min_us(&self) -> Option<f64> {
        (self.total > 0).then(|| self.min_ns as f64 / 1000.0)
    }

    pub fn mean_us(&self) -> Option<f64> {
        (self.total > 0).then(|| self.sum_ns as f64 / self.total as f64 / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles() {
        let mut h = Histogram::new();
        assert_eq!(h.quantile_us(0.5), None);
        // 1..=100 µs, one sample each (recorded at x.5 µs).
        for us in 1..=100u64 {
            h.record(us * 1000 + 500);
        }
        assert_eq!(h.count(), 100);
        assert_eq!(h.quantile_us(0.5), Some(51.0));
        assert_eq!(h.quantile_us(0.99), Some(100.0));
        assert_eq!(h.quantile_us(1.0), Some(100.5));
        assert_eq!(h.min_us(), Some(1.5));
        assert_eq!(h.max_us(), Some(100.5));
        h.record(25_000_000); // 25 ms: coarse bucket
        h.record(20_000_000_000); // 20 s: overflow bucket
        assert_eq!(h.max_us(), Some(20_000_000.0));
        assert_eq!(h.quantile_us(1.0), Some(20_000_000.0));
        h.reset();
        assert_eq!(h.count(), 0);
        h.record(12_345_000);
        assert_eq!(h.quantile_us(0.5), Some(12_345.0));
    }

    #[test]
    fn bucket_edges() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(9_999), 9_999);
        assert_eq!(bucket_of(10_000), 10_000);
        assert_eq!(bucket_of(10_099), 10_000);
        assert_eq!(bucket_of(10_100), 10_001);
        assert_eq!(bucket_of(u64::MAX / 1000), BUCKETS - 1);
        assert_eq!(bucket_upper_us(10_000), 10_100);
    }
}
