//! Both schemes end to end on simulated flows: round trips, bad input, multiple mark ids,
//! and the analytic true-positive models against simulation.

use voxgate_trace::ccs05::{self, Ccs05Params};
use voxgate_trace::interval::{self, IntervalParams};
use voxgate_trace::sim::{derive_seed, Dtx, Impairment, Path, Rng, Source};
use voxgate_trace::stats::wilson;
use voxgate_trace::{
    detect_any, Detector, Embedder, MarkId, SchemeParams, TraceError, Verdict, Watermark,
    WatermarkKey,
};

fn key() -> WatermarkKey {
    WatermarkKey::from_hex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
        .unwrap()
}

fn schemes() -> Vec<SchemeParams> {
    vec![
        SchemeParams::ccs05_paper(),
        SchemeParams::interval_default(),
    ]
}

/// decode(embed(flow)) recovers every bit without perturbation, for 20 and 30 ms flows, with
/// the derived watermark and with a given one.
#[test]
fn round_trip_recovers_every_bit() {
    for params in schemes() {
        for (period, jitter) in [(30_000u64, 0.0), (30_000, 1000.0), (20_000, 1000.0)] {
            let mut rng = Rng::seed_from(period + jitter as u64);
            let flow = Source::constant(period, jitter, 90_000_000).generate(&mut rng);
            for (i, given) in [
                None,
                Some("101100111000111100001010".parse::<Watermark>().unwrap()),
            ]
            .into_iter()
            .enumerate()
            {
                let mark = MarkId(77 + i as u64);
                let (mut e, d) = match &given {
                    None => (
                        Embedder::new(&params, &key(), mark).unwrap(),
                        Detector::new(&params, &key(), mark).unwrap(),
                    ),
                    Some(w) => (
                        Embedder::with_watermark(&params, &key(), mark, w.clone()).unwrap(),
                        Detector::with_watermark(&params, &key(), mark, w.clone()).unwrap(),
                    ),
                };
                let out = e.embed_flow(&flow);
                let det = d.detect(&out).unwrap();
                assert_eq!(det.verdict, Verdict::Watermarked, "{params:?} {det:?}");
                assert_eq!(det.bit_errors, 0, "{det:?}");
                assert_eq!(det.bits_used, 24);
                if let Some(h) = det.hamming {
                    assert_eq!(h, 0);
                }
                // The same flow unmarked is not watermarked.
                let det = d.detect(&flow).unwrap();
                assert_ne!(det.verdict, Verdict::Watermarked, "{det:?}");
            }
        }
    }
}

/// A detector for another mark id or another key does not see the watermark.
#[test]
fn other_marks_and_keys_do_not_match() {
    let other_key = WatermarkKey::from_bytes([0xee; 32]);
    for params in schemes() {
        let mut rng = Rng::seed_from(5);
        let flow = Source::constant(30_000, 1000.0, 90_000_000).generate(&mut rng);
        let out = Embedder::new(&params, &key(), MarkId(1))
            .unwrap()
            .embed_flow(&flow);
        let path = Path(vec![Impairment::FifoUniform { max_us: 10_000 }]);
        let seen = path.apply(&out, &mut rng);
        for (k, m) in [(key(), MarkId(2)), (other_key.clone(), MarkId(1))] {
            let det = Detector::new(&params, &k, m)
                .unwrap()
                .detect(&seen)
                .unwrap();
            assert_eq!(det.verdict, Verdict::NotWatermarked, "{det:?}");
            assert!(det.false_positive_probability > 1e-3);
        }
        // Among several candidates, the right one is found with a corrected probability.
        let dets: Vec<Detector> = (0..5)
            .map(|m| Detector::new(&params, &key(), MarkId(m)).unwrap())
            .collect();
        let best = detect_any(&dets, &seen).unwrap();
        assert_eq!(best.mark, MarkId(1));
        assert_eq!(best.verdict, Verdict::Watermarked);
        let alone = dets[1].detect(&seen).unwrap();
        assert!(
            (best.false_positive_probability - (alone.false_positive_probability * 5.0).min(1.0))
                .abs()
                < 1e-12
        );
        assert!(matches!(
            detect_any(&[], &seen),
            Err(TraceError::InvalidConfig(_))
        ));
    }
}

/// Never a panic, whatever the input: empty, one packet, identical times, extreme values,
/// unsorted (a typed error), bunched arrivals.
#[test]
fn bad_input_never_panics() {
    for params in schemes() {
        let d = Detector::new(&params, &key(), MarkId(9)).unwrap();
        for ts in [
            vec![],
            vec![5],
            vec![7; 100],
            vec![0, u64::MAX / 2, u64::MAX - 1, u64::MAX],
            (0..50u64).map(|i| i * i * 1000).collect(),
            (0..10_000u64).map(|i| i / 7).collect(),
        ] {
            let det = d.detect(&ts).unwrap();
            assert_ne!(det.verdict, Verdict::Watermarked, "{ts:?} {det:?}");
        }
        for ts in [vec![], vec![5], vec![1, 2, 3]] {
            let det = d.detect(&ts).unwrap();
            assert_eq!(det.verdict, Verdict::Undecided, "{det:?}");
            assert!(det.reason.is_some());
        }
        match d.detect(&[1, 5, 3, 9]) {
            Err(TraceError::NotSorted {
                index: 2,
                previous: 5,
                value: 3,
            }) => {}
            other => panic!("{other:?}"),
        }
        // Embedding extreme arrivals saturates instead of overflowing.
        let mut e = Embedder::new(&params, &key(), MarkId(9)).unwrap();
        for t in [u64::MAX - 10, u64::MAX - 5, u64::MAX, 3] {
            assert!(e.on_packet(t) >= t.min(u64::MAX - 10));
        }
    }
}

/// A flow shorter than the CCS'05 selection is Undecided, not "no"; the interval scheme says
/// Undecided for a flow too short to reach its threshold.
#[test]
fn short_flows_are_undecided() {
    let mut rng = Rng::seed_from(11);
    let flow = Source::constant(30_000, 1000.0, 10_000_000).generate(&mut rng);
    let d = Detector::new(&SchemeParams::ccs05_paper(), &key(), MarkId(3)).unwrap();
    let det = d.detect(&flow).unwrap();
    assert_eq!(det.verdict, Verdict::Undecided, "{det:?}");
    let d = Detector::new(&SchemeParams::interval_default(), &key(), MarkId(3)).unwrap();
    let det = d.detect(&flow[..40]).unwrap();
    assert_eq!(det.verdict, Verdict::Undecided, "{det:?}");
    let det = d.detect(&flow).unwrap();
    assert_eq!(det.verdict, Verdict::NotWatermarked, "{det:?}");
}

/// The interval scheme survives what breaks CCS'05: loss, chaff, DTX, a lost first packet.
#[test]
fn interval_survives_loss_chaff_and_dtx() {
    let params = SchemeParams::interval_default();
    let mut rng = Rng::seed_from(21);
    for (source, path) in [
        (
            Source::constant(30_000, 1000.0, 45_000_000),
            vec![
                Impairment::FifoUniform { max_us: 10_000 },
                Impairment::Loss { probability: 0.05 },
            ],
        ),
        (
            Source::constant(20_000, 1000.0, 45_000_000),
            vec![
                Impairment::FifoUniform { max_us: 10_000 },
                Impairment::Chaff { fraction: 0.2 },
            ],
        ),
        (
            Source {
                dtx: Some(Dtx::brady()),
                ..Source::constant(20_000, 1000.0, 60_000_000)
            },
            vec![Impairment::FifoUniform { max_us: 10_000 }],
        ),
    ] {
        let flow = source.generate(&mut rng);
        let mark = MarkId(rng.next_u64());
        let out = Embedder::new(&params, &key(), mark)
            .unwrap()
            .embed_flow(&flow);
        let mut seen = Path(path).apply(&out, &mut rng);
        let det = Detector::new(&params, &key(), mark)
            .unwrap()
            .detect(&seen)
            .unwrap();
        assert_eq!(det.verdict, Verdict::Watermarked, "{det:?}");
        seen.remove(0);
        let det = Detector::new(&params, &key(), mark)
            .unwrap()
            .detect(&seen)
            .unwrap();
        assert_eq!(
            det.verdict,
            Verdict::Watermarked,
            "first packet lost: {det:?}"
        );
    }
}

/// Interval schedules of different mark ids are independent: the fraction of time delayed
/// under both is about 1/4 (each delays half the time), and no slot edge is shared.
#[test]
fn interval_schedules_share_positions_only_by_chance() {
    let p = IntervalParams::default();
    let sp = SchemeParams::IntervalPhase(p.clone());
    let horizon = 600_000_000;
    let mut both = 0u64;
    let mut total = 0u64;
    for m in 0..10u64 {
        let wa = Watermark::derive(&sp, &key(), MarkId(2 * m)).unwrap();
        let wb = Watermark::derive(&sp, &key(), MarkId(2 * m + 1)).unwrap();
        let a = interval::schedule(&p, &key(), MarkId(2 * m), &wa, horizon).unwrap();
        let b = interval::schedule(&p, &key(), MarkId(2 * m + 1), &wb, horizon).unwrap();
        let delayed = |s: &[interval::SlotPair], t: u64| {
            s.iter().any(|x| {
                let (lo, hi) = x.delayed_slot();
                lo <= t && t < hi
            })
        };
        let edges_a: Vec<u64> = a.iter().map(|x| x.start_us).collect();
        let shared = b.iter().filter(|x| edges_a.contains(&x.start_us)).count();
        assert!(shared <= 1, "{shared} shared edges"); // 0 at t = 0 is common to all
        for t in (0..horizon).step_by(10_000) {
            total += 1;
            if delayed(&a, t) && delayed(&b, t) {
                both += 1;
            }
        }
    }
    let frac = both as f64 / total as f64;
    assert!((frac - 0.25).abs() < 0.02, "{frac}");
}

/// CCS'05: the analytic TP (normal approximation of the mean IPDD, binomial over bits) matches
/// the simulated TP at a mid-range operating point (r = 5, D = 20 ms, no jitter: TP ≈ 0.8).
#[test]
fn ccs05_analytic_tp_matches_simulation() {
    let p = Ccs05Params {
        redundancy: 5,
        span: 1200,
        ..Ccs05Params::paper()
    };
    let params = SchemeParams::Ccs05(p.clone());
    let analytic = ccs05::analytic_true_positive(&p, 0.0, 20_000.0);
    assert!((0.6..0.95).contains(&analytic), "{analytic}");
    let source = Source::constant(30_000, 0.0, 36_100_000);
    let path = Path(vec![Impairment::FifoUniform { max_us: 20_000 }]);
    let n = 800u64;
    let mut hits = 0;
    for i in 0..n {
        let mut rng = Rng::seed_from(derive_seed(&[1, i]));
        let mark = MarkId(rng.next_u64());
        let flow = source.generate(&mut rng);
        let out = Embedder::new(&params, &key(), mark)
            .unwrap()
            .embed_flow(&flow);
        let seen = path.apply(&out, &mut rng);
        let det = Detector::new(&params, &key(), mark)
            .unwrap()
            .detect(&seen)
            .unwrap();
        hits += (det.verdict == Verdict::Watermarked) as u64;
    }
    let w = wilson(hits, n, 3.0);
    assert!(
        w.low - 0.02 <= analytic && analytic <= w.high + 0.02,
        "analytic {analytic}, simulated {w:?}"
    );
}

/// Interval: the analytic TP (normal model of Z) matches simulation at a mid-range point
/// (a = 1 ms, D = 20 ms, 60 s, 1 ms jitter), and unrelated flows score Z ≈ N(0, 1).
#[test]
fn interval_analytic_tp_and_null_distribution() {
    let p = IntervalParams {
        adjustment_us: 1000,
        ..IntervalParams::default()
    };
    let params = SchemeParams::IntervalPhase(p.clone());
    let dur = 60_000_000u64;
    let analytic = interval::analytic_true_positive(&p, 30_000.0, dur as f64, 1000.0, 20_000.0);
    assert!((0.2..0.9).contains(&analytic), "{analytic}");
    let source = Source::constant(30_000, 1000.0, dur);
    let path = Path(vec![Impairment::FifoUniform { max_us: 20_000 }]);
    let n = 300u64;
    let mut hits = 0;
    let (mut s, mut s2) = (0.0, 0.0);
    for i in 0..n {
        let mut rng = Rng::seed_from(derive_seed(&[2, i]));
        let mark = MarkId(rng.next_u64());
        let flow = source.generate(&mut rng);
        let out = Embedder::new(&params, &key(), mark)
            .unwrap()
            .embed_flow(&flow);
        let seen = path.apply(&out, &mut rng);
        let d = Detector::new(&params, &key(), mark).unwrap();
        hits += (d.detect(&seen).unwrap().verdict == Verdict::Watermarked) as u64;
        let null = path.apply(&flow, &mut rng);
        let z = d.detect(&null).unwrap().score.unwrap();
        s += z;
        s2 += z * z;
    }
    let w = wilson(hits, n, 3.0);
    assert!(
        w.low - 0.05 <= analytic && analytic <= w.high + 0.05,
        "analytic {analytic}, simulated {w:?}"
    );
    let mean = s / n as f64;
    let var = s2 / n as f64 - mean * mean;
    assert!(
        mean.abs() < 0.25 && (var - 1.0).abs() < 0.3,
        "Z mean {mean}, var {var}"
    );
}
