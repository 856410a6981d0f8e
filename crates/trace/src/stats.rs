//! The statistics the schemes and the evaluation need, written out so that the numbers do not
//! depend on a crate's version: the normal distribution, binomial tails, Wilson score
//! intervals and the two-sample Kolmogorov-Smirnov test.

/// The complementary error function, `erfc(x)`, with fractional error below 1.2e-7 everywhere
/// (Numerical Recipes' Chebyshev fit, `erfcc`); relative, so tail probabilities keep their
/// precision.
pub fn erfc(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

/// The standard normal distribution function Φ(x).
pub fn normal_cdf(x: f64) -> f64 {
    0.5 * erfc(-x / std::f64::consts::SQRT_2)
}

/// The standard normal upper tail 1 - Φ(x), accurate in the far tail.
pub fn normal_sf(x: f64) -> f64 {
    0.5 * erfc(x / std::f64::consts::SQRT_2)
}

/// The standard normal quantile Φ⁻¹(p) (Acklam's rational approximation refined by one Halley
/// step); ±infinity at 0 and 1, NaN outside [0, 1].
pub fn normal_quantile(p: f64) -> f64 {
    if !(0.0..=1.0).contains(&p) || p.is_nan() {
        return f64::NAN;
    }
    if p == 0.0 {
        return f64::NEG_INFINITY;
    }
    if p == 1.0 {
        return f64::INFINITY;
    }
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    let plow = 0.024_25;
    let x = if p < plow {
        let q = (-2.0 * p.ln()).sqrt();
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    } else if p <= 1.0 - plow {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        let q = (-2.0 * (1.0 - p).ln()).sqrt();
        -(((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    // One Halley step against our Φ (keeps quantile and cdf consistent).
    let e = if p < 0.5 {
        normal_cdf(x) - p
    } else {
        (1.0 - p) - normal_sf(x)
    };
    let u = e * (2.0 * std::f64::consts::PI).sqrt() * (x * x / 2.0).exp();
    x - u / (1.0 + x * u / 2.0)
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7, 9 terms; ~1e-15 relative).
pub fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const COEF: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection.
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = COEF[0];
    let t = x + G + 0.5;
    for (i, c) in COEF.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// ln C(n, k).
pub fn ln_choose(n: u64, k: u64) -> f64 {
    if k > n {
        return f64::NEG_INFINITY;
    }
    ln_gamma(n as f64 + 1.0) - ln_gamma(k as f64 + 1.0) - ln_gamma((n - k) as f64 + 1.0)
}

/// P(X <= k) for X ~ Binomial(n, p).
pub fn binomial_cdf(n: u64, k: u64, p: f64) -> f64 {
    if k >= n {
        return 1.0;
    }
    if p <= 0.0 {
        return 1.0;
    }
    if p >= 1.0 {
        return 0.0;
    }
    let (lp, lq) = (p.ln(), (1.0 - p).ln());
    let mut s = 0.0;
    for i in 0..=k {
        s += (ln_choose(n, i) + i as f64 * lp + (n - i) as f64 * lq).exp();
    }
    s.min(1.0)
}

/// A Wilson score interval for a binomial proportion.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Interval {
    /// successes / trials (0 when there were no trials).
    pub estimate: f64,
    /// Lower bound.
    pub low: f64,
    /// Upper bound.
    pub high: f64,
}

/// The Wilson score interval of `successes` out of `trials` at the two-sided level whose
/// normal quantile is `z` (1.96 for 95 %). No trials gives [0, 1].
pub fn wilson(successes: u64, trials: u64, z: f64) -> Interval {
    if trials == 0 {
        return Interval {
            estimate: 0.0,
            low: 0.0,
            high: 1.0,
        };
    }
    let n = trials as f64;
    let p = successes.min(trials) as f64 / n;
    let z2 = z * z;
    let denom = 1.0 + z2 / n;
    let center = (p + z2 / (2.0 * n)) / denom;
    let half = z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / denom;
    Interval {
        estimate: p,
        low: (center - half).max(0.0),
        high: (center + half).min(1.0),
    }
}

/// The result of a two-sample Kolmogorov-Smirnov test.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct KsResult {
    /// sup |F1 - F2| over the pooled sample.
    pub statistic: f64,
    /// The asymptotic p-value (Kolmogorov distribution with Stephens' small-sample correction).
    pub p_value: f64,
}

/// The two-sample Kolmogorov-Smirnov test of `a` against `b` (any order; NaNs are ignored).
/// With an empty sample the statistic is 0 and the p-value 1.
pub fn ks_two_sample(a: &[f64], b: &[f64]) -> KsResult {
    let mut x: Vec<f64> = a.iter().copied().filter(|v| !v.is_nan()).collect();
    let mut y: Vec<f64> = b.iter().copied().filter(|v| !v.is_nan()).collect();
    if x.is_empty() || y.is_empty() {
        return KsResult {
            statistic: 0.0,
            p_value: 1.0,
        };
    }
    x.sort_by(f64::total_cmp);
    y.sort_by(f64::total_cmp);
    let (n, m) = (x.len(), y.len());
    let (mut i, mut j) = (0usize, 0usize);
    let mut d: f64 = 0.0;
    while i < n && j < m {
        let v = if x[i] <= y[j] { x[i] } else { y[j] };
        while i < n && x[i] <= v {
            i += 1;
        }
        while j < m && y[j] <= v {
            j += 1;
        }
        d = d.max((i as f64 / n as f64 - j as f64 / m as f64).abs());
    }
    let ne = (n as f64 * m as f64) / (n + m) as f64;
    let sq = ne.sqrt();
    let lambda = (sq + 0.12 + 0.11 / sq) * d;
    KsResult {
        statistic: d,
        p_value: kolmogorov_sf(lambda),
    }
}

/// Q_KS(λ) = 2 Σ_{k>=1} (-1)^(k-1) exp(-2 k² λ²), the Kolmogorov distribution's upper tail.
pub fn kolmogorov_sf(lambda: f64) -> f64 {
    if lambda < 0.2 {
        return 1.0;
    }
    let mut sum = 0.0;
    let mut sign = 1.0;
    for k in 1..=100 {
        let kf = k as f64;
        let term = sign * (-2.0 * kf * kf * lambda * lambda).exp();
        sum += term;
        if term.abs() < 1e-12 * sum.abs().max(1e-300) {
            break;
        }
        sign = -sign;
    }
    (2.0 * sum).clamp(0.0, 1.0)
}

/// The median of `v` (reorders `v`); NaN for an empty slice.
pub(crate) fn median_in_place(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mid = v.len() / 2;
    let (_, m, _) = v.select_nth_unstable_by(mid, f64::total_cmp);
    let m = *m;
    if v.len() % 2 == 1 {
        m
    } else {
        let lo = v[..mid].iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (lo + m) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_values() {
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-7);
        assert!((normal_cdf(1.959_963_985) - 0.975).abs() < 1e-7);
        assert!((normal_sf(3.090_232_306) - 1e-3).abs() < 1e-9);
        // Tail keeps relative precision.
        let t = normal_sf(6.0);
        assert!((t / 9.865_876_450_377e-10 - 1.0).abs() < 1e-6, "{t}");
        for &p in &[1e-9, 1e-4, 0.01, 0.3, 0.5, 0.9, 0.999] {
            let x = normal_quantile(p);
            assert!((normal_cdf(x) - p).abs() < 1e-7 * p.max(1e-3), "{p} {x}");
        }
        assert_eq!(normal_quantile(0.0), f64::NEG_INFINITY);
        assert!(normal_quantile(1.5).is_nan());
    }

    #[test]
    fn binomial_and_gamma() {
        assert!((ln_gamma(5.0) - 24f64.ln()).abs() < 1e-12);
        assert!((ln_choose(24, 4) - 10626f64.ln()).abs() < 1e-10);
        // P(Bin(24, 0.5) <= 4) = (1 + 24 + 276 + 2024 + 10626) / 2^24.
        let exact = (1.0 + 24.0 + 276.0 + 2024.0 + 10626.0) / 16_777_216.0;
        assert!((binomial_cdf(24, 4, 0.5) / exact - 1.0).abs() < 1e-10);
        assert_eq!(binomial_cdf(24, 24, 0.3), 1.0);
        assert_eq!(binomial_cdf(24, 3, 0.0), 1.0);
        assert_eq!(binomial_cdf(24, 3, 1.0), 0.0);
    }

    #[test]
    fn wilson_interval() {
        let w = wilson(0, 1000, 1.96);
        assert_eq!(w.low, 0.0);
        assert!((w.high - 0.003_827).abs() < 1e-5, "{w:?}");
        let w = wilson(50, 100, 1.96);
        assert!((w.low - 0.4038).abs() < 1e-3 && (w.high - 0.5962).abs() < 1e-3);
        assert_eq!(wilson(0, 0, 1.96).high, 1.0);
    }

    #[test]
    fn ks_known_values() {
        // Identical samples: D = 0, p = 1.
        let a: Vec<f64> = (0..100).map(f64::from).collect();
        let r = ks_two_sample(&a, &a);
        assert_eq!(r.statistic, 0.0);
        assert_eq!(r.p_value, 1.0);
        // Disjoint samples: D = 1, p tiny.
        let b: Vec<f64> = (1000..1100).map(f64::from).collect();
        let r = ks_two_sample(&a, &b);
        assert_eq!(r.statistic, 1.0);
        assert!(r.p_value < 1e-20);
        // Shift by 10 of 100: D = 0.1.
        let c: Vec<f64> = (10..110).map(f64::from).collect();
        let r = ks_two_sample(&a, &c);
        assert!((r.statistic - 0.1).abs() < 1e-12);
        assert!(r.p_value > 0.5);
        // Q_KS(1.36) ~ 0.049.
        assert!((kolmogorov_sf(1.358) - 0.05).abs() < 1e-3);
        assert_eq!(ks_two_sample(&[], &a).p_value, 1.0);
        assert_eq!(ks_two_sample(&[f64::NAN], &a).p_value, 1.0);
    }

    #[test]
    fn median() {
        assert_eq!(median_in_place(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median_in_place(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median_in_place(&mut []).is_nan());
    }
}
