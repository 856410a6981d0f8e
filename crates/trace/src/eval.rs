//! The evaluation: seeded, reproducible simulations of both schemes, as CSV tables, SVG plots
//! and a list of the issue's targets with what was measured.
//!
//! Every trial draws its randomness from `derive_seed([seed, experiment, condition, scheme,
//! role, index])`, so the numbers do not depend on the number of threads or on which
//! experiments run together. Positives: a fresh mark id per flow, the flow watermarked, sent
//! through the path, detected with its own mark id. Negatives, in turn: two unmarked flows,
//! one marked under the same key with another mark id, one marked under another key; each
//! detected with a fresh mark id of the evaluation key.

use std::fmt::Write as _;
use std::str::FromStr;

use serde::Serialize;

use crate::ccs05::{self, Ccs05Params};
use crate::interval::{self, IntervalParams};
use crate::plot::{LineChart, Series};
use crate::sim::{derive_seed, Dtx, Impairment, Path, Rng, Source};
use crate::stats::{ks_two_sample, normal_quantile, wilson, Interval};
use crate::{Detector, Embedder, MarkId, SchemeParams, TraceError, Verdict, WatermarkKey};

/// The experiments.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Experiment {
    /// The CCS 2005 setup (l = 24, a = 3 ms, 90 s of 30 ms packets, FIFO U[0, 10 ms]) for
    /// both schemes, with the analytic numbers.
    Reproduction,
    /// TP and FP against D (20 and 30 ms packets).
    Delay,
    /// TP and FP against the call duration.
    Duration,
    /// TP and FP against the adjustment a.
    Adjustment,
    /// Loss, bursty loss, chaff, Laplace jitter, DTX, sender jitter, the re-timing relay.
    Robustness,
    /// ROC curves at a hard operating point.
    Roc,
    /// Two-sample Kolmogorov-Smirnov test of marked against unmarked inter-packet delays.
    Visibility,
    /// The multi-flow attack: aggregate 10 and 50 flows marked under one key.
    MultiFlow,
}

impl Experiment {
    /// Every experiment, in report order.
    pub fn all() -> Vec<Experiment> {
        use Experiment::*;
        vec![
            Reproduction,
            Delay,
            Duration,
            Adjustment,
            Robustness,
            Roc,
            Visibility,
            MultiFlow,
        ]
    }

    /// The name used on the command line and in file names.
    pub fn name(self) -> &'static str {
        match self {
            Experiment::Reproduction => "reproduction",
            Experiment::Delay => "delay",
            Experiment::Duration => "duration",
            Experiment::Adjustment => "adjustment",
            Experiment::Robustness => "robustness",
            Experiment::Roc => "roc",
            Experiment::Visibility => "visibility",
            Experiment::MultiFlow => "multiflow",
        }
    }

    fn tag(self) -> u64 {
        self as u64 + 1
    }
}

impl FromStr for Experiment {
    type Err = TraceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Experiment::all()
            .into_iter()
            .find(|e| e.name() == s)
            .ok_or_else(|| {
                TraceError::InvalidConfig(format!(
                    "unknown experiment {s:?} (known: {})",
                    Experiment::all()
                        .iter()
                        .map(|e| e.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })
    }
}

/// What to run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EvalConfig {
    /// Which experiments.
    pub experiments: Vec<Experiment>,
    /// The seed of everything.
    pub seed: u64,
    /// Full trial counts instead of reduced: 100,000 negatives for the headline false-positive
    /// estimates (reproduction, ROC) and 20,000 per point of the sweeps.
    pub full: bool,
    /// Override: positives per condition.
    pub positives: Option<u64>,
    /// Override: negatives per headline false-positive estimate (sweeps use at most 20,000).
    pub negatives: Option<u64>,
    /// Worker threads (results do not depend on it).
    pub threads: usize,
}

impl EvalConfig {
    /// Every experiment, reduced counts (200 positives, 1,000 negatives per point).
    pub fn reduced(seed: u64) -> Self {
        Self {
            experiments: Experiment::all(),
            seed,
            full: false,
            positives: None,
            negatives: None,
            threads: default_threads(),
        }
    }

    /// Every experiment, full counts (100,000 negatives per headline false-positive estimate).
    pub fn full(seed: u64) -> Self {
        Self {
            full: true,
            ..Self::reduced(seed)
        }
    }

    fn positives(&self, full: u64, reduced: u64) -> u64 {
        self.positives
            .unwrap_or(if self.full { full } else { reduced })
    }

    /// Negatives of the headline false-positive estimates (reproduction, ROC).
    fn negatives(&self) -> u64 {
        self.negatives
            .unwrap_or(if self.full { 100_000 } else { 1_000 })
    }

    /// Negatives per point of the sweeps (delay, duration, adjustment, robustness).
    fn sweep_negatives(&self) -> u64 {
        self.negatives
            .map(|n| n.min(20_000))
            .unwrap_or(if self.full { 20_000 } else { 1_000 })
    }
}

fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(8)
}

/// One CSV table.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Table {
    /// File stem (`reproduction`, `delay`, ...).
    pub name: String,
    /// Column names.
    pub header: Vec<String>,
    /// Rows, already formatted.
    pub rows: Vec<Vec<String>>,
}

impl Table {
    fn new<H: ToString>(name: &str, header: &[H]) -> Self {
        Self {
            name: name.to_string(),
            header: header.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// The table as CSV (RFC 4180 quoting where needed).
    pub fn to_csv(&self) -> String {
        let quote = |s: &str| {
            if s.contains([',', '"', '\n']) {
                format!("\"{}\"", s.replace('"', "\"\""))
            } else {
                s.to_string()
            }
        };
        let mut out = String::new();
        let line = |cells: &[String]| cells.iter().map(|c| quote(c)).collect::<Vec<_>>().join(",");
        out.push_str(&line(&self.header));
        out.push('\n');
        for r in &self.rows {
            out.push_str(&line(r));
            out.push('\n');
        }
        out
    }

    /// The table as a Markdown table.
    pub fn to_markdown(&self) -> String {
        let mut out = format!("| {} |\n", self.header.join(" | "));
        out.push_str(&format!("|{}\n", "---|".repeat(self.header.len())));
        for r in &self.rows {
            out.push_str(&format!("| {} |\n", r.join(" | ")));
        }
        out
    }
}

/// One SVG plot.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Plot {
    /// File stem.
    pub name: String,
    /// The SVG document.
    pub svg: String,
}

/// One of the issue's targets and what the evaluation measured.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TargetCheck {
    /// Short name.
    pub name: String,
    /// The target as stated.
    pub target: String,
    /// What was measured (with its interval).
    pub measured: String,
    /// Whether the point estimate meets the target.
    pub met: bool,
}

/// Everything an evaluation produced.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EvalReport {
    /// The configuration it ran.
    pub config: EvalConfig,
    /// CSV tables.
    pub tables: Vec<Table>,
    /// SVG plots.
    pub plots: Vec<Plot>,
    /// The targets.
    pub targets: Vec<TargetCheck>,
}

impl EvalReport {
    /// A Markdown summary: targets, then every table.
    pub fn summary_markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "seed {}, {} counts, experiments: {}\n",
            self.config.seed,
            if self.config.full { "full" } else { "reduced" },
            self.config
                .experiments
                .iter()
                .map(|e| e.name())
                .collect::<Vec<_>>()
                .join(", ")
        );
        if !self.targets.is_empty() {
            s.push_str("| target | required | measured | met |\n|---|---|---|---|\n");
            for t in &self.targets {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} |",
                    t.name,
                    t.target,
                    t.measured,
                    if t.met { "yes" } else { "NO" }
                );
            }
            s.push('\n');
        }
        for t in &self.tables {
            let _ = writeln!(s, "### {}\n\n{}", t.name, t.to_markdown());
        }
        s
    }

    /// A table by name.
    pub fn table(&self, name: &str) -> Option<&Table> {
        self.tables.iter().find(|t| t.name == name)
    }
}

/// Runs the configured experiments.
pub fn run(config: &EvalConfig) -> Result<EvalReport, TraceError> {
    if config.threads == 0 {
        return Err(TraceError::InvalidConfig(
            "threads must be at least 1".into(),
        ));
    }
    if config.experiments.is_empty() {
        return Err(TraceError::InvalidConfig("no experiments selected".into()));
    }
    let mut report = EvalReport {
        config: config.clone(),
        tables: Vec::new(),
        plots: Vec::new(),
        targets: Vec::new(),
    };
    let ctx = Ctx::new(config);
    for &e in &config.experiments {
        match e {
            Experiment::Reproduction => reproduction(&ctx, &mut report)?,
            Experiment::Delay => delay(&ctx, &mut report)?,
            Experiment::Duration => duration(&ctx, &mut report)?,
            Experiment::Adjustment => adjustment(&ctx, &mut report)?,
            Experiment::Robustness => robustness(&ctx, &mut report)?,
            Experiment::Roc => roc(&ctx, &mut report)?,
            Experiment::Visibility => visibility(&ctx, &mut report)?,
            Experiment::MultiFlow => multiflow(&ctx, &mut report)?,
        }
    }
    Ok(report)
}

// ---------------------------------------------------------------------------------------------
// Trial machinery

struct Ctx<'a> {
    config: &'a EvalConfig,
    key: WatermarkKey,
    other_key: WatermarkKey,
}

impl<'a> Ctx<'a> {
    fn new(config: &'a EvalConfig) -> Self {
        let bytes = |salt: u64| {
            let mut r = Rng::seed_from(derive_seed(&[config.seed, salt]));
            let mut b = [0u8; 32];
            for c in b.chunks_mut(8) {
                c.copy_from_slice(&r.next_u64().to_le_bytes());
            }
            b
        };
        Self {
            config,
            key: WatermarkKey::from_bytes(bytes(0x6b6579)),
            other_key: WatermarkKey::from_bytes(bytes(0x6f74686572)),
        }
    }
}

/// A flow model and the path it takes.
#[derive(Clone, Debug)]
struct Condition {
    source: Source,
    path: Path,
}

/// Counts of one side (positives or negatives).
#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    trials: u64,
    watermarked: u64,
    undecided: u64,
}

impl Counts {
    fn rate(&self) -> Interval {
        wilson(self.watermarked, self.trials, 1.96)
    }
}

struct Outcome {
    pos: Counts,
    neg: Counts,
    pos_stats: Vec<f64>,
    neg_stats: Vec<f64>,
}

/// Maps `f` over 0..n on `threads` threads; results in index order.
fn par_map<T: Send, F: Fn(u64) -> T + Sync>(n: u64, threads: usize, f: F) -> Vec<T> {
    if threads <= 1 || n < 64 {
        return (0..n).map(f).collect();
    }
    let threads = threads.min(n as usize);
    let mut parts: Vec<Vec<(u64, T)>> = Vec::new();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let f = &f;
                s.spawn(move || {
                    (t as u64..n)
                        .step_by(threads)
                        .map(|i| (i, f(i)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            // A worker only panics if `f` does; re-raise it here.
            parts.push(h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)));
        }
    });
    let mut all: Vec<(u64, T)> = parts.into_iter().flatten().collect();
    all.sort_by_key(|(i, _)| *i);
    all.into_iter().map(|(_, t)| t).collect()
}

fn scheme_tag(p: &SchemeParams) -> u64 {
    match p {
        SchemeParams::Ccs05(_) => 1,
        SchemeParams::IntervalPhase(_) => 2,
    }
}

/// One positive trial: (verdict, statistic).
fn positive_trial(
    ctx: &Ctx,
    cond: &Condition,
    params: &SchemeParams,
    seed: u64,
) -> Result<(Verdict, f64), TraceError> {
    let mut rng = Rng::seed_from(seed);
    let mark = MarkId(rng.next_u64());
    let flow = cond.source.generate(&mut rng);
    let mut emb = Embedder::new(params, &ctx.key, mark)?;
    let marked = emb.embed_flow(&flow);
    let observed = cond.path.apply(&marked, &mut rng);
    let det = Detector::new(params, &ctx.key, mark)?.detect(&observed)?;
    Ok((det.verdict, det.statistic()))
}

/// One negative trial (kind = index mod 4: unmarked, unmarked, other mark, other key).
fn negative_trial(
    ctx: &Ctx,
    cond: &Condition,
    params: &SchemeParams,
    seed: u64,
    index: u64,
) -> Result<(Verdict, f64), TraceError> {
    let mut rng = Rng::seed_from(seed);
    let mark = MarkId(rng.next_u64());
    let other = MarkId(rng.next_u64());
    let flow = cond.source.generate(&mut rng);
    let sent = match index % 4 {
        2 => Embedder::new(params, &ctx.key, other)?.embed_flow(&flow),
        3 => Embedder::new(params, &ctx.other_key, other)?.embed_flow(&flow),
        _ => flow,
    };
    let observed = cond.path.apply(&sent, &mut rng);
    let det = Detector::new(params, &ctx.key, mark)?.detect(&observed)?;
    Ok((det.verdict, det.statistic()))
}

fn measure(
    ctx: &Ctx,
    tag: &[u64],
    cond: &Condition,
    params: &SchemeParams,
    positives: u64,
    negatives: u64,
) -> Result<Outcome, TraceError> {
    let base: Vec<u64> = [ctx.config.seed]
        .iter()
        .chain(tag)
        .copied()
        .chain([scheme_tag(params)])
        .collect();
    let seed_of = |role: u64, i: u64| {
        let mut v = base.clone();
        v.extend([role, i]);
        derive_seed(&v)
    };
    let pos = par_map(positives, ctx.config.threads, |i| {
        positive_trial(ctx, cond, params, seed_of(1, i))
    });
    let neg = par_map(negatives, ctx.config.threads, |i| {
        negative_trial(ctx, cond, params, seed_of(2, i), i)
    });
    let mut out = Outcome {
        pos: Counts::default(),
        neg: Counts::default(),
        pos_stats: Vec::with_capacity(pos.len()),
        neg_stats: Vec::with_capacity(neg.len()),
    };
    for (side, stats, results) in [
        (&mut out.pos, &mut out.pos_stats, pos),
        (&mut out.neg, &mut out.neg_stats, neg),
    ] {
        for r in results {
            let (v, s) = r?;
            side.trials += 1;
            match v {
                Verdict::Watermarked => side.watermarked += 1,
                Verdict::Undecided => side.undecided += 1,
                Verdict::NotWatermarked => {}
            }
            stats.push(s);
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Setups

const MS: u64 = 1000;
const S: u64 = 1_000_000;

/// The default source of the reproduction: 30 ms packets, 1 ms sender jitter, no DTX
/// (Skype sent continuously).
fn source(period_us: u64, duration_us: u64) -> Source {
    Source::constant(period_us, 1000.0, duration_us)
}

fn fifo(d_us: u64) -> Path {
    Path(vec![Impairment::FifoUniform { max_us: d_us }])
}

fn ccs05_for(period_us: u64, duration_us: u64, a_us: u64) -> SchemeParams {
    let packets = (duration_us / period_us) as u32;
    SchemeParams::Ccs05(Ccs05Params::for_packets(packets, a_us))
}

fn interval_with(a_us: u64) -> SchemeParams {
    SchemeParams::IntervalPhase(IntervalParams {
        adjustment_us: a_us,
        ..IntervalParams::default()
    })
}

fn analytic_tp(
    params: &SchemeParams,
    period_us: u64,
    duration_us: u64,
    jitter: f64,
    d: u64,
) -> f64 {
    match params {
        SchemeParams::Ccs05(p) => ccs05::analytic_true_positive(p, jitter, d as f64),
        SchemeParams::IntervalPhase(p) => interval::analytic_true_positive(
            p,
            period_us as f64,
            duration_us as f64,
            jitter,
            d as f64,
        ),
    }
}

fn analytic_fp(params: &SchemeParams) -> f64 {
    match params {
        SchemeParams::Ccs05(p) => ccs05::false_positive_rate(p.bits, p.threshold),
        SchemeParams::IntervalPhase(p) => p.false_positive,
    }
}

fn f(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() < 1e-3 {
        format!("{v:.2e}")
    } else {
        format!("{v:.4}")
    }
}

const RATE_COLUMNS: [&str; 10] = [
    "tp",
    "tp_low",
    "tp_high",
    "tp_analytic",
    "fp",
    "fp_low",
    "fp_high",
    "fp_analytic",
    "undecided_pos",
    "undecided_neg",
];

fn rate_cells(o: &Outcome, tp_analytic: Option<f64>, fp_analytic: f64) -> Vec<String> {
    let (tp, fp) = (o.pos.rate(), o.neg.rate());
    vec![
        f(tp.estimate),
        f(tp.low),
        f(tp.high),
        tp_analytic.map(f).unwrap_or_default(),
        f(fp.estimate),
        f(fp.low),
        f(fp.high),
        f(fp_analytic),
        o.pos.undecided.to_string(),
        o.neg.undecided.to_string(),
    ]
}

fn header_with(prefix: &[&str]) -> Vec<String> {
    prefix
        .iter()
        .chain(RATE_COLUMNS.iter())
        .chain(["positives", "negatives"].iter())
        .map(|s| s.to_string())
        .collect()
}

fn describe(i: Interval) -> String {
    format!("{} [{}, {}]", f(i.estimate), f(i.low), f(i.high))
}

// ---------------------------------------------------------------------------------------------
// Experiments

fn reproduction(ctx: &Ctx, report: &mut EvalReport) -> Result<(), TraceError> {
    let e = Experiment::Reproduction;
    let (np, nn) = (ctx.config.positives(10_000, 200), ctx.config.negatives());
    let mut table = Table::new(
        "reproduction",
        &header_with(&["scheme", "duration_s", "period_ms", "d_ms", "a_ms"]),
    );
    let mut setups = vec![
        (ccs05_for(30 * MS, 90 * S, 3 * MS), 90 * S),
        (interval_with(3 * MS), 45 * S),
    ];
    if ctx.config.full {
        setups.push((interval_with(3 * MS), 90 * S));
    }
    for (k, (params, dur)) in setups.iter().enumerate() {
        let cond = Condition {
            source: source(30 * MS, *dur),
            path: fifo(10 * MS),
        };
        let o = measure(ctx, &[e.tag(), k as u64], &cond, params, np, nn)?;
        let tp_a = analytic_tp(params, 30 * MS, *dur, 1000.0, 10 * MS);
        let fp_a = analytic_fp(params);
        let mut row = vec![
            params.scheme().name().to_string(),
            (dur / S).to_string(),
            "30".into(),
            "10".into(),
            "3".into(),
        ];
        row.extend(rate_cells(&o, Some(tp_a), fp_a));
        row.extend([np.to_string(), nn.to_string()]);
        table.rows.push(row);
        let (tp, fp) = (o.pos.rate(), o.neg.rate());
        let name = format!("{} {} s", params.scheme().name(), dur / S);
        if k == 0 || (k == 1) {
            report.targets.push(TargetCheck {
                name: format!("{name}: TP (FIFO U[0,10 ms], a = 3 ms)"),
                target: ">= 0.99".into(),
                measured: describe(tp),
                met: tp.estimate >= 0.99,
            });
            report.targets.push(TargetCheck {
                name: format!("{name}: FP"),
                target: "<= 1e-3".into(),
                measured: describe(fp),
                met: fp.estimate <= 1e-3,
            });
        }
    }
    report.tables.push(table);
    Ok(())
}

const DELAYS_MS: [u64; 9] = [0, 5, 10, 15, 20, 25, 30, 40, 50];

fn delay(ctx: &Ctx, report: &mut EvalReport) -> Result<(), TraceError> {
    let e = Experiment::Delay;
    let (np, nn) = (
        ctx.config.positives(1_000, 100),
        ctx.config.sweep_negatives(),
    );
    let mut table = Table::new(
        "delay",
        &header_with(&["scheme", "duration_s", "period_ms", "d_ms", "a_ms"]),
    );
    let mut tp_series: Vec<Series> = Vec::new();
    let mut fp_series: Vec<Series> = Vec::new();
    for (pi, period) in [30 * MS, 20 * MS].into_iter().enumerate() {
        for (si, (params, dur)) in [
            (ccs05_for(period, 90 * S, 3 * MS), 90 * S),
            (interval_with(3 * MS), 45 * S),
        ]
        .iter()
        .enumerate()
        {
            let label = format!(
                "{} {} s, {} ms",
                params.scheme().name(),
                dur / S,
                period / MS
            );
            let (mut tp_pts, mut tpa_pts, mut fp_pts) = (Vec::new(), Vec::new(), Vec::new());
            for (di, d_ms) in DELAYS_MS.iter().enumerate() {
                let cond = Condition {
                    source: source(period, *dur),
                    path: fifo(d_ms * MS),
                };
                let o = measure(
                    ctx,
                    &[e.tag(), pi as u64, si as u64, di as u64],
                    &cond,
                    params,
                    np,
                    nn,
                )?;
                let tp_a = analytic_tp(params, period, *dur, 1000.0, d_ms * MS);
                let mut row = vec![
                    params.scheme().name().to_string(),
                    (dur / S).to_string(),
                    (period / MS).to_string(),
                    d_ms.to_string(),
                    "3".into(),
                ];
                row.extend(rate_cells(&o, Some(tp_a), analytic_fp(params)));
                row.extend([np.to_string(), nn.to_string()]);
                table.rows.push(row);
                tp_pts.push((*d_ms as f64, o.pos.rate().estimate));
                tpa_pts.push((*d_ms as f64, tp_a));
                fp_pts.push((*d_ms as f64, o.neg.rate().estimate));
            }
            push_measured_and_analytic(&mut tp_series, &label, tp_pts, tpa_pts);
            fp_series.push(Series {
                name: label,
                points: fp_pts,
                dashed: false,
            });
        }
    }
    report.tables.push(table);
    report.plots.push(tp_plot(
        "tp_vs_delay",
        "True positives vs FIFO uniform delay U[0, D] (a = 3 ms)",
        "D (ms)",
        tp_series,
    ));
    report.plots.push(Plot {
        name: "fp_vs_delay".into(),
        svg: LineChart {
            title: format!("False positives vs D ({nn} negatives per point)"),
            x_label: "D (ms)".into(),
            y_label: "false-positive rate (0 not drawn)".into(),
            log_x: false,
            log_y: true,
            y_range: Some((1e-5, 1e-1)),
            x_range: None,
            series: fp_series,
        }
        .to_svg(),
    });
    Ok(())
}

const DURATIONS_S: [u64; 8] = [10, 15, 20, 30, 45, 60, 90, 120];

fn duration(ctx: &Ctx, report: &mut EvalReport) -> Result<(), TraceError> {
    let e = Experiment::Duration;
    let (np, nn) = (
        ctx.config.positives(1_000, 100),
        ctx.config.sweep_negatives(),
    );
    let mut table = Table::new(
        "duration",
        &header_with(&["scheme", "duration_s", "period_ms", "d_ms", "a_ms", "r"]),
    );
    let mut series = Vec::new();
    for si in 0..2u64 {
        let (mut pts, mut apts) = (Vec::new(), Vec::new());
        let mut name = String::new();
        for (di, dur_s) in DURATIONS_S.iter().enumerate() {
            let dur = dur_s * S;
            let params = if si == 0 {
                ccs05_for(30 * MS, dur, 3 * MS)
            } else {
                interval_with(3 * MS)
            };
            name = params.scheme().name().to_string();
            let cond = Condition {
                source: source(30 * MS, dur),
                path: fifo(10 * MS),
            };
            let o = measure(ctx, &[e.tag(), si, di as u64], &cond, &params, np, nn)?;
            let tp_a = analytic_tp(&params, 30 * MS, dur, 1000.0, 10 * MS);
            let r = match &params {
                SchemeParams::Ccs05(p) => p.redundancy.to_string(),
                _ => String::new(),
            };
            let mut row = vec![
                name.clone(),
                dur_s.to_string(),
                "30".into(),
                "10".into(),
                "3".into(),
                r,
            ];
            row.extend(rate_cells(&o, Some(tp_a), analytic_fp(&params)));
            row.extend([np.to_string(), nn.to_string()]);
            table.rows.push(row);
            pts.push((*dur_s as f64, o.pos.rate().estimate));
            apts.push((*dur_s as f64, tp_a));
        }
        push_measured_and_analytic(&mut series, &name, pts, apts);
    }
    report.tables.push(table);
    report.plots.push(tp_plot(
        "tp_vs_duration",
        "True positives vs call duration (30 ms packets, D = 10 ms, a = 3 ms)",
        "call duration (s)",
        series,
    ));
    Ok(())
}

const ADJUSTMENTS_US: [u64; 7] = [500, 1000, 1500, 2000, 3000, 4000, 5000];

fn adjustment(ctx: &Ctx, report: &mut EvalReport) -> Result<(), TraceError> {
    let e = Experiment::Adjustment;
    let (np, nn) = (
        ctx.config.positives(1_000, 100),
        ctx.config.sweep_negatives(),
    );
    let mut table = Table::new(
        "adjustment",
        &header_with(&["scheme", "duration_s", "period_ms", "d_ms", "a_ms"]),
    );
    let mut series = Vec::new();
    for si in 0..2u64 {
        let (mut pts, mut apts) = (Vec::new(), Vec::new());
        let mut name = String::new();
        for (ai, a) in ADJUSTMENTS_US.iter().enumerate() {
            let (params, dur) = if si == 0 {
                (ccs05_for(30 * MS, 90 * S, *a), 90 * S)
            } else {
                (interval_with(*a), 45 * S)
            };
            name = format!("{} {} s", params.scheme().name(), dur / S);
            let cond = Condition {
                source: source(30 * MS, dur),
                path: fifo(10 * MS),
            };
            let o = measure(ctx, &[e.tag(), si, ai as u64], &cond, &params, np, nn)?;
            let tp_a = analytic_tp(&params, 30 * MS, dur, 1000.0, 10 * MS);
            let mut row = vec![
                params.scheme().name().to_string(),
                (dur / S).to_string(),
                "30".into(),
                "10".into(),
                format!("{}", *a as f64 / 1000.0),
            ];
            row.extend(rate_cells(&o, Some(tp_a), analytic_fp(&params)));
            row.extend([np.to_string(), nn.to_string()]);
            table.rows.push(row);
            pts.push((*a as f64 / 1000.0, o.pos.rate().estimate));
            apts.push((*a as f64 / 1000.0, tp_a));
        }
        push_measured_and_analytic(&mut series, &name, pts, apts);
    }
    report.tables.push(table);
    report.plots.push(tp_plot(
        "tp_vs_adjustment",
        "True positives vs adjustment a (30 ms packets, D = 10 ms)",
        "a (ms)",
        series,
    ));
    Ok(())
}

/// One robustness condition: (name, period, source jitter, DTX, path).
type RobustnessCondition = (&'static str, u64, f64, Option<Dtx>, Vec<Impairment>);

/// The robustness conditions.
fn robustness_conditions() -> Vec<RobustnessCondition> {
    let base = || Impairment::FifoUniform { max_us: 10 * MS };
    let loss = |p: f64| vec![base(), Impairment::Loss { probability: p }];
    let chaff = |c: f64| vec![base(), Impairment::Chaff { fraction: c }];
    vec![
        ("baseline", 30 * MS, 1000.0, None, vec![base()]),
        ("loss 0.1%", 30 * MS, 1000.0, None, loss(0.001)),
        ("loss 0.5%", 30 * MS, 1000.0, None, loss(0.005)),
        ("loss 1%", 30 * MS, 1000.0, None, loss(0.01)),
        ("loss 2%", 30 * MS, 1000.0, None, loss(0.02)),
        ("loss 5%", 30 * MS, 1000.0, None, loss(0.05)),
        (
            "gilbert 2% (bursts of 4)",
            30 * MS,
            1000.0,
            None,
            vec![
                base(),
                Impairment::Gilbert {
                    enter_bad: 0.005,
                    leave_bad: 0.25,
                },
            ],
        ),
        ("chaff 1%", 30 * MS, 1000.0, None, chaff(0.01)),
        ("chaff 5%", 30 * MS, 1000.0, None, chaff(0.05)),
        ("chaff 10%", 30 * MS, 1000.0, None, chaff(0.10)),
        ("chaff 20%", 30 * MS, 1000.0, None, chaff(0.20)),
        (
            "laplace b=2 ms",
            30 * MS,
            1000.0,
            None,
            vec![Impairment::Laplace {
                base_us: 8000.0,
                scale_us: 2000.0,
            }],
        ),
        (
            "laplace b=5 ms",
            30 * MS,
            1000.0,
            None,
            vec![Impairment::Laplace {
                base_us: 20_000.0,
                scale_us: 5000.0,
            }],
        ),
        ("sender jitter 5 ms", 30 * MS, 5000.0, None, vec![base()]),
        ("20 ms packets", 20 * MS, 1000.0, None, vec![base()]),
        (
            "DTX 30 ms",
            30 * MS,
            1000.0,
            Some(Dtx::brady()),
            vec![base()],
        ),
        (
            "DTX 20 ms",
            20 * MS,
            1000.0,
            Some(Dtx::brady()),
            vec![base()],
        ),
        (
            "re-timing relay",
            30 * MS,
            1000.0,
            None,
            vec![
                base(),
                Impairment::Retime {
                    period_us: 30 * MS,
                    buffer_us: 60 * MS,
                    jitter_us: 200,
                },
            ],
        ),
    ]
}

fn robustness(ctx: &Ctx, report: &mut EvalReport) -> Result<(), TraceError> {
    let e = Experiment::Robustness;
    let (np, nn) = (
        ctx.config.positives(1_000, 100),
        ctx.config.sweep_negatives(),
    );
    let mut table = Table::new(
        "robustness",
        &header_with(&["condition", "scheme", "duration_s"]),
    );
    for (ci, (name, period, jitter, dtx, path)) in robustness_conditions().into_iter().enumerate() {
        for (si, dur) in [90 * S, 45 * S].into_iter().enumerate() {
            let params = if si == 0 {
                // With DTX the tracer draws its pairs from the packets a call of this length
                // has (95 % of the expected talk time), not from the frame count.
                let packets = match dtx {
                    Some(d) => {
                        let talk = d.talk_mean_us / (d.talk_mean_us + d.silence_mean_us);
                        ((dur / period) as f64 * talk * 0.95) as u32
                    }
                    None => (dur / period) as u32,
                };
                SchemeParams::Ccs05(Ccs05Params::for_packets(packets, 3 * MS))
            } else {
                interval_with(3 * MS)
            };
            let cond = Condition {
                source: Source {
                    dtx,
                    ..Source::constant(period, jitter, dur)
                },
                path: Path(path.clone()),
            };
            let o = measure(
                ctx,
                &[e.tag(), ci as u64, si as u64],
                &cond,
                &params,
                np,
                nn,
            )?;
            let mut row = vec![
                name.to_string(),
                params.scheme().name().to_string(),
                (dur / S).to_string(),
            ];
            row.extend(rate_cells(&o, None, analytic_fp(&params)));
            row.extend([np.to_string(), nn.to_string()]);
            table.rows.push(row);
            let tp = o.pos.rate();
            let fp = o.neg.rate();
            let label = format!("{} {} s", params.scheme().name(), dur / S);
            if name == "loss 1%" {
                report.targets.push(TargetCheck {
                    name: format!("{label}: TP with 1% random loss"),
                    target: if si == 1 { ">= 0.95" } else { "(report)" }.into(),
                    measured: describe(tp),
                    met: si == 0 || tp.estimate >= 0.95,
                });
            }
            if name == "re-timing relay" {
                // Chance: the marked flows are detected no more often than unmarked ones
                // (TP within the FP's 95 % interval, or below 1 %).
                report.targets.push(TargetCheck {
                    name: format!("{label}: re-timing relay pushes detection to chance"),
                    target: "TP ~ FP".into(),
                    measured: format!("TP {}, FP {}", describe(tp), describe(fp)),
                    met: tp.low <= fp.high.max(0.01),
                });
            }
        }
    }
    report.tables.push(table);
    Ok(())
}

/// ROC points (fpr, tpr) from the statistics of positives and negatives ("larger is marked").
fn roc_points(pos: &[f64], neg: &[f64]) -> Vec<(f64, f64)> {
    let mut thresholds: Vec<f64> = pos
        .iter()
        .chain(neg)
        .copied()
        .filter(|v| v.is_finite())
        .collect();
    thresholds.sort_by(|a, b| b.total_cmp(a));
    thresholds.dedup();
    let mut p: Vec<f64> = pos.to_vec();
    let mut n: Vec<f64> = neg.to_vec();
    p.sort_by(|a, b| b.total_cmp(a));
    n.sort_by(|a, b| b.total_cmp(a));
    let (mut ip, mut ineg) = (0usize, 0usize);
    let mut out = Vec::new();
    for t in thresholds {
        while ip < p.len() && p[ip] >= t {
            ip += 1;
        }
        while ineg < n.len() && n[ineg] >= t {
            ineg += 1;
        }
        out.push((
            ineg as f64 / n.len().max(1) as f64,
            ip as f64 / p.len().max(1) as f64,
        ));
    }
    out
}

fn roc(ctx: &Ctx, report: &mut EvalReport) -> Result<(), TraceError> {
    let e = Experiment::Roc;
    let (np, nn) = (ctx.config.positives(2_000, 200), ctx.config.negatives());
    let mut table = Table::new(
        "roc",
        &["scheme", "duration_s", "d_ms", "a_ms", "fpr", "tpr"],
    );
    let mut series = Vec::new();
    let setups = [
        (ccs05_for(30 * MS, 90 * S, 3 * MS), 90 * S),
        (interval_with(3 * MS), 90 * S),
        (interval_with(3 * MS), 45 * S),
    ];
    for (si, (params, dur)) in setups.iter().enumerate() {
        let cond = Condition {
            source: source(30 * MS, *dur),
            path: fifo(40 * MS),
        };
        let o = measure(ctx, &[e.tag(), si as u64], &cond, params, np, nn)?;
        let pts = roc_points(&o.pos_stats, &o.neg_stats);
        // Thin the curve for the CSV: keep points where FPR changes by a factor or TPR by 0.005.
        let mut kept: Vec<(f64, f64)> = Vec::new();
        for &(x, y) in &pts {
            let keep = match kept.last() {
                None => true,
                Some(&(lx, ly)) => (x > 0.0 && (lx == 0.0 || x / lx > 1.15)) || y - ly > 0.005,
            };
            if keep {
                kept.push((x, y));
            }
        }
        for &(x, y) in &kept {
            table.rows.push(vec![
                params.scheme().name().to_string(),
                (dur / S).to_string(),
                "40".into(),
                "3".into(),
                f(x),
                f(y),
            ]);
        }
        series.push(Series {
            name: format!("{} {} s", params.scheme().name(), dur / S),
            points: kept.into_iter().filter(|p| p.0 > 0.0).collect(),
            dashed: false,
        });
    }
    report.tables.push(table);
    report.plots.push(Plot {
        name: "roc".into(),
        svg: LineChart {
            title: "ROC, 30 ms packets, FIFO U[0, 40 ms], a = 3 ms".into(),
            x_label: "false-positive rate".into(),
            y_label: "true-positive rate".into(),
            log_x: true,
            log_y: false,
            y_range: Some((0.0, 1.0)),
            x_range: Some((1e-5, 1.0)),
            series,
        }
        .to_svg(),
    });
    Ok(())
}

/// A measured series and its analytic counterpart (dashed), named after `name`.
fn push_measured_and_analytic(
    series: &mut Vec<Series>,
    name: &str,
    measured: Vec<(f64, f64)>,
    analytic: Vec<(f64, f64)>,
) {
    series.push(Series {
        name: name.to_string(),
        points: measured,
        dashed: false,
    });
    series.push(Series {
        name: format!("{name} (analytic)"),
        points: analytic,
        dashed: true,
    });
}

/// A true-positive-rate plot on linear axes, y from 0 to 1.
fn tp_plot(name: &str, title: &str, x_label: &str, series: Vec<Series>) -> Plot {
    Plot {
        name: name.into(),
        svg: LineChart {
            title: title.into(),
            x_label: x_label.into(),
            y_label: "true-positive rate".into(),
            log_x: false,
            log_y: false,
            y_range: Some((0.0, 1.0)),
            x_range: None,
            series,
        }
        .to_svg(),
    }
}

fn ipds(ts: &[u64]) -> Vec<f64> {
    ts.windows(2).map(|w| (w[1] - w[0]) as f64).collect()
}

fn visibility(ctx: &Ctx, report: &mut EvalReport) -> Result<(), TraceError> {
    let e = Experiment::Visibility;
    let n = ctx.config.positives(2_000, 200);
    let mut table = Table::new(
        "visibility",
        &[
            "scheme",
            "duration_s",
            "sender_jitter_ms",
            "flagged_p_lt_0.01",
            "flagged_low",
            "flagged_high",
            "median_ks_statistic",
            "flows",
        ],
    );
    let configs: Vec<(Option<SchemeParams>, u64, f64)> = vec![
        (None, 45 * S, 5000.0),
        (Some(ccs05_for(30 * MS, 45 * S, 3 * MS)), 45 * S, 5000.0),
        (Some(interval_with(3 * MS)), 45 * S, 5000.0),
        (None, 90 * S, 5000.0),
        (Some(ccs05_for(30 * MS, 90 * S, 3 * MS)), 90 * S, 5000.0),
        (Some(interval_with(3 * MS)), 90 * S, 5000.0),
        (None, 90 * S, 1000.0),
        (Some(ccs05_for(30 * MS, 90 * S, 3 * MS)), 90 * S, 1000.0),
        (Some(interval_with(3 * MS)), 90 * S, 1000.0),
    ];
    for (ci, (params, dur, jitter)) in configs.iter().enumerate() {
        let src = Source::constant(30 * MS, *jitter, *dur);
        let results = par_map(
            n,
            ctx.config.threads,
            |i| -> Result<(bool, f64), TraceError> {
                let mut rng =
                    Rng::seed_from(derive_seed(&[ctx.config.seed, e.tag(), ci as u64, i]));
                let a = src.generate(&mut rng);
                let b = src.generate(&mut rng);
                let a = match params {
                    Some(p) => Embedder::new(p, &ctx.key, MarkId(rng.next_u64()))?.embed_flow(&a),
                    None => a,
                };
                let ks = ks_two_sample(&ipds(&a), &ipds(&b));
                Ok((ks.p_value < 0.01, ks.statistic))
            },
        );
        let mut flagged = 0u64;
        let mut stats = Vec::with_capacity(results.len());
        for r in results {
            let (fl, d) = r?;
            flagged += fl as u64;
            stats.push(d);
        }
        let rate = wilson(flagged, n, 1.96);
        let med = crate::stats::median_in_place(&mut stats);
        let name = params
            .as_ref()
            .map(|p| p.scheme().name())
            .unwrap_or("unmarked");
        table.rows.push(vec![
            name.to_string(),
            (dur / S).to_string(),
            format!("{}", jitter / 1000.0),
            f(rate.estimate),
            f(rate.low),
            f(rate.high),
            f(med),
            n.to_string(),
        ]);
        if *jitter == 5000.0 && params.is_some() {
            let is_interval = ci % 3 == 2;
            report.targets.push(TargetCheck {
                name: format!(
                    "{name} {} s: KS on IPDs flags marked flows at p < 0.01 (30 ms, 5 ms jitter)",
                    dur / S
                ),
                target: if is_interval { "<= 5%" } else { "(report)" }.into(),
                measured: describe(rate),
                met: !is_interval || rate.estimate <= 0.05,
            });
        }
    }
    report.tables.push(table);
    Ok(())
}

/// The multi-flow attack: the attacker holds `flows` flows marked under one key (captured right
/// after the embedder), aligns them (CCS'05: by packet index; interval: by time from the first
/// packet), averages a per-position delay statistic and flags the positions that stand out.
fn multiflow(ctx: &Ctx, report: &mut EvalReport) -> Result<(), TraceError> {
    let e = Experiment::MultiFlow;
    let mut table = Table::new(
        "multiflow",
        &[
            "scheme",
            "selection",
            "flows",
            "positions",
            "marked_positions",
            "flagged_marked",
            "flagged_unmarked",
            "exposed_fraction",
            "false_flag_rate",
        ],
    );
    let dur = 90 * S;
    let src = source(30 * MS, dur);
    let z_flag = normal_quantile(1.0 - 1e-3);
    let repeats = if ctx.config.full { 5 } else { 1 };
    for (si, params) in [ccs05_for(30 * MS, dur, 3 * MS), interval_with(3 * MS)]
        .iter()
        .enumerate()
    {
        for shared in [true, false] {
            for flows in [10usize, 50] {
                let mut acc = [0f64; 4];
                for rep in 0..repeats {
                    let mut rng = Rng::seed_from(derive_seed(&[
                        ctx.config.seed,
                        e.tag(),
                        si as u64,
                        shared as u64,
                        flows as u64,
                        rep,
                    ]));
                    let shared_mark = MarkId(rng.next_u64());
                    let mut marked_flows = Vec::with_capacity(flows);
                    let mut marks = Vec::with_capacity(flows);
                    for _ in 0..flows {
                        let mark = if shared {
                            shared_mark
                        } else {
                            MarkId(rng.next_u64())
                        };
                        let flow = src.generate(&mut rng);
                        let out = Embedder::new(params, &ctx.key, mark)?.embed_flow(&flow);
                        marked_flows.push(out);
                        marks.push(mark);
                    }
                    let r = match params {
                        SchemeParams::Ccs05(p) => {
                            attack_ccs05(p, &ctx.key, &marks, &marked_flows, z_flag)?
                        }
                        SchemeParams::IntervalPhase(p) => {
                            attack_interval(p, &ctx.key, &marks, &marked_flows, z_flag)?
                        }
                    };
                    for k in 0..4 {
                        acc[k] += r[k];
                    }
                }
                let rf = repeats as f64;
                let [positions, marked, fm, fu] = acc.map(|v| v / rf);
                table.rows.push(vec![
                    params.scheme().name().to_string(),
                    if shared {
                        "shared (one mark id)"
                    } else {
                        "per-flow mark ids"
                    }
                    .into(),
                    flows.to_string(),
                    format!("{positions:.0}"),
                    format!("{marked:.0}"),
                    format!("{fm:.1}"),
                    format!("{fu:.1}"),
                    f(if marked > 0.0 { fm / marked } else { 0.0 }),
                    f(if positions > marked {
                        fu / (positions - marked)
                    } else {
                        0.0
                    }),
                ]);
                if !shared {
                    report.targets.push(TargetCheck {
                        name: format!(
                            "{} per-flow selection, {flows} flows: marked positions exposed",
                            params.scheme().name()
                        ),
                        target: "chance (~ false-flag rate)".into(),
                        measured: format!(
                            "{} of marked vs {} of unmarked flagged",
                            f(if marked > 0.0 { fm / marked } else { 0.0 }),
                            f(fu / (positions - marked).max(1.0))
                        ),
                        met: marked == 0.0
                            || fm / marked <= 3.0 * (fu / (positions - marked).max(1.0)) + 0.01,
                    });
                }
            }
        }
    }
    report.tables.push(table);
    Ok(())
}

/// The attacker's per-position statistic from per-flow values `sum` and `sum_sq` over `n`
/// flows: t_j = mean_j √n / s̃, with s̃² the median over positions of the across-flow sample
/// variance (where the marked positions are shared, the flows agree on the delay and the
/// variance is the noise alone; where they are not, it includes the watermark).
fn across_flow_t(sum: &[f64], sum_sq: &[f64], n: f64) -> Vec<f64> {
    if n < 2.0 {
        return vec![0.0; sum.len()];
    }
    let mut var: Vec<f64> = sum
        .iter()
        .zip(sum_sq)
        .map(|(s, q)| ((q - s * s / n) / (n - 1.0)).max(0.0))
        .collect();
    let pooled = crate::stats::median_in_place(&mut var).sqrt();
    let pooled = if pooled > 0.0 { pooled } else { 1.0 };
    sum.iter().map(|s| s / n * n.sqrt() / pooled).collect()
}

/// CCS'05 attack: per packet index j, the per-flow value y_j - (y_{j-1} + y_{j+1}) / 2 (a
/// delayed packet between two undelayed ones shows +a), a t statistic across flows
/// ([`across_flow_t`]), flagged when t > z_flag. Marked positions: the first flow's delayed
/// packets. Returns [positions, marked, flagged marked, flagged unmarked].
fn attack_ccs05(
    p: &Ccs05Params,
    key: &WatermarkKey,
    marks: &[MarkId],
    flows: &[Vec<u64>],
    z_flag: f64,
) -> Result<[f64; 4], TraceError> {
    let n = flows
        .iter()
        .map(|f| f.len())
        .min()
        .unwrap_or(0)
        .min(p.span as usize);
    if n < 3 {
        return Ok([0.0; 4]);
    }
    let mut sum = vec![0.0f64; n];
    let mut sum_sq = vec![0.0f64; n];
    for fl in flows {
        for j in 1..n - 1 {
            let v = fl[j] as f64 - (fl[j - 1] as f64 + fl[j + 1] as f64) / 2.0;
            sum[j] += v;
            sum_sq[j] += v * v;
        }
    }
    let z = across_flow_t(&sum[1..n - 1], &sum_sq[1..n - 1], flows.len() as f64);
    let sel = ccs05::Selection::new(p, key, marks[0])?;
    let w = crate::Watermark::derive(&SchemeParams::Ccs05(p.clone()), key, marks[0])?;
    let delayed = sel.delayed(&w);
    let mut is_marked = vec![false; n];
    for d in delayed {
        if (d as usize) < n {
            is_marked[d as usize] = true;
        }
    }
    let mut r = [0.0f64; 4];
    for (k, zk) in z.iter().enumerate() {
        let j = k + 1;
        r[0] += 1.0;
        if is_marked[j] {
            r[1] += 1.0;
        }
        if *zk > z_flag {
            if is_marked[j] {
                r[2] += 1.0;
            } else {
                r[3] += 1.0;
            }
        }
    }
    Ok(r)
}

/// Interval attack: every flow's residuals against its frame clock (the public tracker),
/// high-passed (minus the flow's mean over ±1 s), averaged in 100 ms bins from the first
/// packet; a t statistic across flows per bin ([`across_flow_t`]), flagged when t > z_flag.
/// Marked positions: bins wholly inside the first flow's delayed slots.
fn attack_interval(
    p: &IntervalParams,
    key: &WatermarkKey,
    marks: &[MarkId],
    flows: &[Vec<u64>],
    z_flag: f64,
) -> Result<[f64; 4], TraceError> {
    const BIN: u64 = 100_000;
    let horizon = flows
        .iter()
        .map(|f| f.last().copied().unwrap_or(0) - f.first().copied().unwrap_or(0))
        .min()
        .unwrap_or(0);
    let bins = (horizon / BIN) as usize;
    if bins < 4 {
        return Ok([0.0; 4]);
    }
    let mut sum = vec![0.0f64; bins];
    let mut sum_sq = vec![0.0f64; bins];
    let mut used = 0.0f64;
    for fl in flows {
        let Some((fl, res)) = interval::residuals(fl, p.period_us) else {
            continue;
        };
        let fl = &fl[..];
        // High-pass: subtract a centred ±1 s moving average (prefix sums over packets).
        let t0 = fl[0];
        let mut prefix = vec![0.0f64; res.len() + 1];
        for (i, r) in res.iter().enumerate() {
            prefix[i + 1] = prefix[i] + r;
        }
        let (mut lo, mut hi) = (0usize, 0usize);
        let mut bsum = vec![0.0f64; bins];
        let mut bcnt = vec![0.0f64; bins];
        for j in 0..fl.len() {
            while fl[lo] + 1_000_000 < fl[j] {
                lo += 1;
            }
            while hi < fl.len() && fl[hi] <= fl[j] + 1_000_000 {
                hi += 1;
            }
            let avg = (prefix[hi] - prefix[lo]) / (hi - lo) as f64;
            let b = ((fl[j] - t0) / BIN) as usize;
            if b < bins {
                bsum[b] += res[j] - avg;
                bcnt[b] += 1.0;
            }
        }
        for b in 0..bins {
            let v = if bcnt[b] > 0.0 {
                bsum[b] / bcnt[b]
            } else {
                0.0
            };
            sum[b] += v;
            sum_sq[b] += v * v;
        }
        used += 1.0;
    }
    let z = across_flow_t(&sum, &sum_sq, used);
    let w = crate::Watermark::derive(&SchemeParams::IntervalPhase(p.clone()), key, marks[0])?;
    let sched = interval::schedule(p, key, marks[0], &w, horizon)?;
    let mut r = [0.0f64; 4];
    for (b, zb) in z.iter().enumerate() {
        let (s, e) = (b as u64 * BIN, (b as u64 + 1) * BIN);
        let marked = sched.iter().any(|pair| {
            let (ds, de) = pair.delayed_slot();
            s >= ds && e <= de
        });
        r[0] += 1.0;
        if marked {
            r[1] += 1.0;
        }
        if *zb > z_flag {
            if marked {
                r[2] += 1.0;
            } else {
                r[3] += 1.0;
            }
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn experiment_names_round_trip() {
        for e in Experiment::all() {
            assert_eq!(e.name().parse::<Experiment>().unwrap(), e);
        }
        assert!("nope".parse::<Experiment>().is_err());
    }

    #[test]
    fn par_map_is_ordered_and_thread_independent() {
        let a = par_map(1000, 1, |i| i * i);
        let b = par_map(1000, 3, |i| i * i);
        assert_eq!(a, b);
    }

    #[test]
    fn csv_quoting() {
        let mut t = Table::new("x", &["a", "b"]);
        t.rows.push(vec!["1,2".into(), "say \"hi\"".into()]);
        assert_eq!(t.to_csv(), "a,b\n\"1,2\",\"say \"\"hi\"\"\"\n");
    }

    #[test]
    fn roc_points_monotone() {
        let pts = roc_points(&[3.0, 2.0, 1.0], &[0.0, 1.5, -1.0]);
        assert!(pts.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
        assert_eq!(*pts.last().unwrap(), (1.0, 1.0));
    }

    #[test]
    fn bad_configs_refused() {
        let mut c = EvalConfig::reduced(1);
        c.threads = 0;
        assert!(run(&c).is_err());
        c.threads = 1;
        c.experiments.clear();
        assert!(run(&c).is_err());
    }
}
