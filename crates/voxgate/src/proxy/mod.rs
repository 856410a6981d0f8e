//! `voxgate proxy`: the tokio driver around `voxgate_sip::proxy` (being written).

use std::process::ExitCode;

/// Arguments of `voxgate proxy`.
#[derive(Debug, clap::Args)]
pub struct ProxyArgs {
    /// The TOML configuration (see examples/proxy.toml).
    #[arg(long)]
    pub config: std::path::PathBuf,
    /// Only load and check the configuration, then exit.
    #[arg(long)]
    pub check_config: bool,
}

pub fn run(_args: ProxyArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("voxgate proxy: not written yet")
}
