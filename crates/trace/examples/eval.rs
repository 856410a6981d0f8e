//! Runs the watermark evaluation and writes its tables, plots and summary.
//!
//! `cargo run -p voxgate-trace --release --example eval -- [--full] [--seed N] [--out DIR]
//!  [--experiments a,b,...] [--positives N] [--negatives N] [--threads N]`

use std::path::PathBuf;
use std::time::Instant;

use voxgate_trace::eval::{self, EvalConfig, Experiment};

fn main() {
    if let Err(e) = real_main() {
        eprintln!("eval: {e}");
        std::process::exit(2);
    }
}

fn real_main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = EvalConfig::reduced(2005);
    let mut out = PathBuf::from("target/trace-eval");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--full" => config.full = true,
            "--seed" => config.seed = value("--seed")?.parse()?,
            "--out" => out = PathBuf::from(value("--out")?),
            "--positives" => config.positives = Some(value("--positives")?.parse()?),
            "--negatives" => config.negatives = Some(value("--negatives")?.parse()?),
            "--threads" => config.threads = value("--threads")?.parse()?,
            "--experiments" => {
                config.experiments = value("--experiments")?
                    .split(',')
                    .map(|s| s.trim().parse::<Experiment>())
                    .collect::<Result<_, _>>()?
            }
            "-h" | "--help" => {
                println!("usage: eval [--full] [--seed N] [--out DIR] [--experiments a,b] [--positives N] [--negatives N] [--threads N]");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    let started = Instant::now();
    let report = eval::run(&config)?;
    std::fs::create_dir_all(&out)?;
    for t in &report.tables {
        std::fs::write(out.join(format!("{}.csv", t.name)), t.to_csv())?;
    }
    for p in &report.plots {
        std::fs::write(out.join(format!("{}.svg", p.name)), &p.svg)?;
    }
    let summary = report.summary_markdown();
    std::fs::write(out.join("summary.md"), &summary)?;
    println!("{summary}");
    println!(
        "wrote {} tables and {} plots to {} in {:.1} s",
        report.tables.len(),
        report.plots.len(),
        out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
