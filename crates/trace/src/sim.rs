//! Seeded, sans-I/O simulation: VoIP source models and a netem-like path.
//!
//! The generator is our own xoshiro256** (Blackman and Vigna, 2018) seeded through SplitMix64,
//! not the `rand` crate: the evaluation's tables must come out bit-identical from the same seed
//! on every machine and every future build, and `rand`'s `StdRng` and `rand_distr`'s samplers
//! are allowed to change algorithm between versions. Distributions are the textbook
//! inversions (uniform with 53 bits, exponential, Laplace) and Marsaglia's polar method for
//! the normal.

use serde::{Deserialize, Serialize};

/// xoshiro256** seeded by SplitMix64.
#[derive(Clone, Debug)]
pub struct Rng {
    s: [u64; 4],
    spare: Option<f64>,
}

/// SplitMix64's step: a good 64-bit mixer (used for seeding and [`derive_seed`]).
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A seed for one trial from its coordinates (experiment, condition, role, index...): the
/// parts are absorbed one by one through SplitMix64, so trials are independent of the order
/// (and the thread) they run in.
pub fn derive_seed(parts: &[u64]) -> u64 {
    let mut state = 0x7472_6163_6500_0001u64;
    let mut out = splitmix64(&mut state);
    for &p in parts {
        state ^= p.wrapping_mul(0xd6e8_feb8_6659_fd93) ^ out;
        out = splitmix64(&mut state);
    }
    out
}

impl Rng {
    /// A generator from a 64-bit seed.
    pub fn seed_from(seed: u64) -> Self {
        let mut st = seed;
        let s = [
            splitmix64(&mut st),
            splitmix64(&mut st),
            splitmix64(&mut st),
            splitmix64(&mut st),
        ];
        Self { s, spare: None }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1) with 53 bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in 0..=max.
    pub fn uniform_int(&mut self, max: u64) -> u64 {
        if max == u64::MAX {
            return self.next_u64();
        }
        let n = max + 1;
        let zone = u64::MAX - (u64::MAX % n);
        loop {
            let v = self.next_u64();
            if v < zone {
                return v % n;
            }
        }
    }

    /// Bernoulli(p).
    pub fn bernoulli(&mut self, p: f64) -> bool {
        self.uniform() < p
    }

    /// Standard normal (Marsaglia's polar method; the second value is kept for the next call).
    pub fn normal(&mut self) -> f64 {
        if let Some(v) = self.spare.take() {
            return v;
        }
        loop {
            let u = 2.0 * self.uniform() - 1.0;
            let v = 2.0 * self.uniform() - 1.0;
            let s = u * u + v * v;
            if s > 0.0 && s < 1.0 {
                let m = (-2.0 * s.ln() / s).sqrt();
                self.spare = Some(v * m);
                return u * m;
            }
        }
    }

    /// Exponential with the given mean.
    pub fn exponential(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.uniform()).ln()
    }

    /// Laplace(0, scale).
    pub fn laplace(&mut self, scale: f64) -> f64 {
        let u = self.uniform() - 0.5;
        -scale * u.signum() * (1.0 - 2.0 * u.abs()).max(f64::MIN_POSITIVE).ln()
    }
}

/// Talk-spurt/silence alternation (DTX): exponential on and off periods (Brady's model:
/// about 1.0 s talking and 1.35 s silent on average).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Dtx {
    /// Mean talk-spurt length, µs.
    pub talk_mean_us: f64,
    /// Mean silence length, µs.
    pub silence_mean_us: f64,
}

impl Dtx {
    /// Brady's means: 1.0 s on, 1.35 s off.
    pub fn brady() -> Self {
        Self {
            talk_mean_us: 1_000_000.0,
            silence_mean_us: 1_350_000.0,
        }
    }
}

/// A VoIP sender: one packet per codec frame on the sender's clock, each sent with independent
/// jitter; with DTX, frames in silences are not sent (the frame clock runs on).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Source {
    /// Packetization (frame period), µs: 20 000 or 30 000.
    pub period_us: u64,
    /// Standard deviation of the sender's per-packet jitter (normal), µs.
    pub jitter_sd_us: f64,
    /// Silence suppression, if any.
    pub dtx: Option<Dtx>,
    /// Call length, µs.
    pub duration_us: u64,
    /// Largest sender clock skew, ppm: each flow draws its skew uniformly in ±this.
    pub skew_ppm: f64,
}

impl Source {
    /// A constant-rate source (no DTX) with ±50 ppm clock skew.
    pub fn constant(period_us: u64, jitter_sd_us: f64, duration_us: u64) -> Self {
        Self {
            period_us,
            jitter_sd_us,
            dtx: None,
            duration_us,
            skew_ppm: 50.0,
        }
    }

    /// One flow's send times (sorted, µs, starting between 1 s and 2 s).
    pub fn generate(&self, rng: &mut Rng) -> Vec<u64> {
        let mut out = Vec::with_capacity((self.duration_us / self.period_us.max(1) + 1) as usize);
        self.generate_into(rng, &mut out);
        out
    }

    /// [`Source::generate`] into a caller's buffer (cleared first).
    pub fn generate_into(&self, rng: &mut Rng, out: &mut Vec<u64>) {
        out.clear();
        let skew = 1.0 + (2.0 * rng.uniform() - 1.0) * self.skew_ppm * 1e-6;
        let period = self.period_us.max(1) as f64 * skew;
        let start = 1_000_000.0 + rng.uniform() * 1_000_000.0;
        let frames = (self.duration_us as f64 / period) as u64;
        // DTX state: talking until `switch_at` (µs from the start), then silent, and so on.
        let mut talking = true;
        let mut switch_at = match self.dtx {
            Some(d) => rng.exponential(d.talk_mean_us),
            None => f64::INFINITY,
        };
        let mut last = 0u64;
        for k in 0..frames {
            let nominal = k as f64 * period;
            if let Some(d) = self.dtx {
                while nominal >= switch_at {
                    talking = !talking;
                    switch_at += rng.exponential(if talking {
                        d.talk_mean_us
                    } else {
                        d.silence_mean_us
                    });
                }
                if !talking {
                    continue;
                }
            }
            let jitter = if self.jitter_sd_us > 0.0 {
                rng.normal() * self.jitter_sd_us
            } else {
                0.0
            };
            let t = ((start + nominal + jitter).max(0.0) + 0.5) as u64;
            let t = t.max(last);
            out.push(t);
            last = t;
        }
    }
}

/// One impairment of a path, applied in order (like a netem qdisc chain).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Impairment {
    /// Each packet an independent delay uniform in [0, max], FIFO kept:
    /// `out_j = max(out_{j-1}, in_j + U[0, max])` (the CCS 2005 perturbation model).
    FifoUniform {
        /// D, µs.
        max_us: u64,
    },
    /// Each packet delayed `max(0, base + Laplace(0, scale))`, FIFO kept.
    Laplace {
        /// Mean delay, µs.
        base_us: f64,
        /// Laplace scale b, µs (standard deviation b√2).
        scale_us: f64,
    },
    /// Independent loss.
    Loss {
        /// Per-packet loss probability.
        probability: f64,
    },
    /// Gilbert bursty loss: a two-state chain, every packet lost in the bad state.
    Gilbert {
        /// P(good → bad) per packet.
        enter_bad: f64,
        /// P(bad → good) per packet (mean burst 1/this).
        leave_bad: f64,
    },
    /// Inserted (chaff) packets at independent uniform times between the first and last
    /// packet: round(fraction × n) of them.
    Chaff {
        /// Inserted packets per real packet.
        fraction: f64,
    },
    /// A constant-rate re-timing relay: from `buffer` after the first arrival it sends one
    /// packet every `period` (the oldest queued one, or a cover packet if none is queued) until
    /// every packet has left; each send jittered by U[0, jitter].
    Retime {
        /// Output period, µs.
        period_us: u64,
        /// Playout buffer, µs.
        buffer_us: u64,
        /// Scheduling jitter of the relay, µs.
        jitter_us: u64,
    },
}

/// A chain of impairments.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Path(pub Vec<Impairment>);

impl Path {
    /// Runs `flow` (sorted times) through the chain.
    pub fn apply(&self, flow: &[u64], rng: &mut Rng) -> Vec<u64> {
        let mut cur = flow.to_vec();
        let mut scratch = Vec::with_capacity(flow.len());
        for imp in &self.0 {
            imp.apply(&cur, rng, &mut scratch);
            std::mem::swap(&mut cur, &mut scratch);
        }
        cur
    }
}

impl Impairment {
    /// Applies this impairment to sorted `input`, writing sorted output to `out`.
    pub fn apply(&self, input: &[u64], rng: &mut Rng, out: &mut Vec<u64>) {
        out.clear();
        match *self {
            Impairment::FifoUniform { max_us } => {
                let mut last = 0u64;
                for &t in input {
                    let r = (t + rng.uniform_int(max_us)).max(last);
                    out.push(r);
                    last = r;
                }
            }
            Impairment::Laplace { base_us, scale_us } => {
                let mut last = 0u64;
                for &t in input {
                    let d = ((base_us + rng.laplace(scale_us)).max(0.0) + 0.5) as u64;
                    let r = (t + d).max(last);
                    out.push(r);
                    last = r;
                }
            }
            Impairment::Loss { probability } => {
                out.extend(
                    input
                        .iter()
                        .copied()
                        .filter(|_| !rng.bernoulli(probability)),
                );
            }
            Impairment::Gilbert {
                enter_bad,
                leave_bad,
            } => {
                let mut bad = false;
                for &t in input {
                    bad = if bad {
                        !rng.bernoulli(leave_bad)
                    } else {
                        rng.bernoulli(enter_bad)
                    };
                    if !bad {
                        out.push(t);
                    }
                }
            }
            Impairment::Chaff { fraction } => {
                out.extend_from_slice(input);
                if input.len() >= 2 {
                    let (a, b) = (input[0], input[input.len() - 1]);
                    let n = (fraction * input.len() as f64).round() as usize;
                    for _ in 0..n {
                        out.push(a + rng.uniform_int(b - a));
                    }
                    out.sort_unstable();
                }
            }
            Impairment::Retime {
                period_us,
                buffer_us,
                jitter_us,
            } => {
                let Some(&first) = input.first() else {
                    return;
                };
                let period = period_us.max(1);
                let mut slot = first + buffer_us;
                let mut j = 0;
                while j < input.len() {
                    if input[j] <= slot {
                        j += 1; // a real packet leaves
                    } // else a cover packet leaves
                    out.push(slot + rng.uniform_int(jitter_us.min(period - 1)));
                    slot += period;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_reference_and_determinism() {
        // xoshiro256** reference: state {1, 2, 3, 4} gives 11520, 0, 1509978240, 1215971899390074240.
        let mut r = Rng {
            s: [1, 2, 3, 4],
            spare: None,
        };
        assert_eq!(r.next_u64(), 11520);
        assert_eq!(r.next_u64(), 0);
        assert_eq!(r.next_u64(), 1_509_978_240);
        assert_eq!(r.next_u64(), 1_215_971_899_390_074_240);
        let mut a = Rng::seed_from(42);
        let mut b = Rng::seed_from(42);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        assert_ne!(derive_seed(&[1, 2]), derive_seed(&[2, 1]));
        assert_ne!(derive_seed(&[1]), derive_seed(&[1, 0]));
    }

    #[test]
    fn distributions_have_their_moments() {
        let mut r = Rng::seed_from(7);
        let n = 200_000;
        let (mut s, mut s2, mut e, mut l2) = (0.0, 0.0, 0.0, 0.0);
        for _ in 0..n {
            let x = r.normal();
            s += x;
            s2 += x * x;
            e += r.exponential(2.0);
            let y = r.laplace(3.0);
            l2 += y * y;
        }
        let n = n as f64;
        assert!((s / n).abs() < 0.01);
        assert!((s2 / n - 1.0).abs() < 0.02);
        assert!((e / n - 2.0).abs() < 0.03);
        assert!((l2 / n - 18.0).abs() < 0.5); // Var Laplace = 2 b²
        for _ in 0..1000 {
            assert!(r.uniform_int(10) <= 10);
        }
    }

    #[test]
    fn source_models() {
        let mut r = Rng::seed_from(1);
        let f = Source::constant(30_000, 1000.0, 90_000_000).generate(&mut r);
        assert!((2999..=3001).contains(&f.len()), "{}", f.len());
        assert!(f.windows(2).all(|w| w[0] <= w[1]));
        let dtx = Source {
            dtx: Some(Dtx::brady()),
            skew_ppm: 0.0,
            ..Source::constant(20_000, 0.0, 600_000_000)
        };
        let g = dtx.generate(&mut r);
        let frac = g.len() as f64 / 30_000.0;
        assert!((frac - 1.0 / 2.35).abs() < 0.06, "talk fraction {frac}");
        // Talk spurts resume on the frame grid (no jitter, no skew).
        let off = |t: u64| (t - g[0]) as f64 % 20_000.0;
        assert!(g.iter().all(|&t| off(t) < 1000.0 || off(t) > 19_000.0));
    }

    #[test]
    fn impairments() {
        let mut r = Rng::seed_from(3);
        let flow: Vec<u64> = (0..10_000u64).map(|k| 1_000_000 + k * 20_000).collect();
        let out = Path(vec![Impairment::FifoUniform { max_us: 50_000 }]).apply(&flow, &mut r);
        assert_eq!(out.len(), flow.len());
        assert!(out.windows(2).all(|w| w[0] <= w[1]));
        assert!(out
            .iter()
            .zip(&flow)
            .all(|(o, i)| o >= i && o - i <= 50_000));
        let lost = Path(vec![Impairment::Loss { probability: 0.01 }]).apply(&flow, &mut r);
        assert!((9850..=9950).contains(&lost.len()), "{}", lost.len());
        let g = Path(vec![Impairment::Gilbert {
            enter_bad: 0.005,
            leave_bad: 0.25,
        }])
        .apply(&flow, &mut r);
        let loss = 1.0 - g.len() as f64 / 10_000.0;
        assert!((loss - 0.005 / 0.255).abs() < 0.01, "{loss}");
        let c = Path(vec![Impairment::Chaff { fraction: 0.1 }]).apply(&flow, &mut r);
        assert_eq!(c.len(), 11_000);
        assert!(c.windows(2).all(|w| w[0] <= w[1]));
        let l = Path(vec![Impairment::Laplace {
            base_us: 8000.0,
            scale_us: 2000.0,
        }])
        .apply(&flow, &mut r);
        assert!(l.windows(2).all(|w| w[0] <= w[1]));
        // The re-timing relay: perfectly periodic output (but for its jitter), nothing lost.
        let rt = Path(vec![Impairment::Retime {
            period_us: 20_000,
            buffer_us: 60_000,
            jitter_us: 0,
        }])
        .apply(&out, &mut r);
        assert!(rt.len() >= flow.len());
        assert!(rt.windows(2).all(|w| w[1] - w[0] == 20_000));
        assert!(Path(vec![Impairment::Retime {
            period_us: 20_000,
            buffer_us: 0,
            jitter_us: 0
        }])
        .apply(&[], &mut r)
        .is_empty());
    }
}
