//! Reading a role's TOML configuration file: its text and the directory relative paths in it
//! are relative to.

use std::path::{Path, PathBuf};

use anyhow::Context;

/// The file's text and its directory.
pub(crate) fn read(path: &Path) -> anyhow::Result<(String, PathBuf)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    Ok((text, base))
}

/// `p` as written in a configuration: absolute, or relative to `base`.
pub(crate) fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}
