//! `voxgate ua`: a small SIP user agent (being written).

use std::process::ExitCode;

/// Arguments of `voxgate ua`.
#[derive(Debug, clap::Args)]
pub struct UaArgs {}

pub fn run(_args: UaArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("voxgate ua: not written yet")
}
