//! The audit log on disk: one JSON line per entry (`voxgate_li::audit`), appended and synced
//! before the action it records is reported done, and the signed head beside it
//! (`<log>.head`, replaced atomically after every entry) so that a verifier can tell a
//! truncated log from a whole one.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use voxgate_li::audit::{self, AuditLog, Entry, Head, NodeKey};

/// Reads a node key (PKCS#8 DER, as `voxgate li keygen` writes it).
pub(crate) fn load_node_key(p: &Path) -> anyhow::Result<NodeKey> {
    let der = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
    NodeKey::from_pkcs8(&der).with_context(|| format!("{}: not an Ed25519 PKCS#8 key", p.display()))
}

/// The head file of a log.
pub(crate) fn head_path(log: &Path) -> PathBuf {
    let mut s = log.as_os_str().to_owned();
    s.push(".head");
    PathBuf::from(s)
}

/// Appends entries made elsewhere (the mediation core keeps the chain) and their head.
pub(crate) struct AuditWriter {
    file: File,
    path: PathBuf,
}

impl AuditWriter {
    pub fn open(path: &Path) -> anyhow::Result<AuditWriter> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening the audit log {}", path.display()))?;
        Ok(AuditWriter {
            file,
            path: path.to_path_buf(),
        })
    }

    /// Appends `e` (synced), then replaces the head.
    pub fn write(&mut self, e: &Entry, head: &Head) -> anyhow::Result<()> {
        let mut line = serde_json::to_vec(e).context("encoding an audit entry")?;
        line.push(b'\n');
        self.file
            .write_all(&line)
            .and_then(|_| self.file.sync_data())
            .with_context(|| format!("appending to the audit log {}", self.path.display()))?;
        let hp = head_path(&self.path);
        let tmp = hp.with_extension("head.tmp");
        std::fs::write(&tmp, serde_json::to_vec(head)?)
            .and_then(|_| std::fs::rename(&tmp, &hp))
            .with_context(|| format!("writing {}", hp.display()))
    }
}

/// Reads an existing log for `key`: verified whole (and against its head, if there is one)
/// before anything is appended to it. A log that does not verify is never extended.
pub(crate) fn resume(path: &Path, node: &str, key: NodeKey) -> anyhow::Result<AuditLog> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let hp = head_path(path);
    let head: Option<Head> = match std::fs::read(&hp) {
        Ok(b) => Some(
            serde_json::from_slice(&b).with_context(|| format!("{}: not a head", hp.display()))?,
        ),
        Err(_) => None,
    };
    if let Some(h) = &head {
        audit::verify(&text, &key.public_hex(), Some(h)).with_context(|| {
            format!(
                "the audit log {} does not verify against its head: refusing to extend it",
                path.display()
            )
        })?;
    } else if !text.trim().is_empty() {
        bail!(
            "the audit log {} has entries but no head file {}: refusing to extend it",
            path.display(),
            hp.display()
        );
    }
    AuditLog::resume(node, key, &text).with_context(|| {
        format!(
            "the audit log {} does not verify: refusing to extend it",
            path.display()
        )
    })
}

/// A log this process keeps itself (the SPG's).
pub(crate) struct AuditFile {
    log: AuditLog,
    writer: AuditWriter,
}

impl AuditFile {
    pub fn open(path: &Path, key: &Path, node: &str) -> anyhow::Result<AuditFile> {
        let key = load_node_key(key)?;
        let log = resume(path, node, key)?;
        let writer = AuditWriter::open(path)?;
        Ok(AuditFile { log, writer })
    }

    pub fn append(
        &mut self,
        time_ms: u64,
        event: &str,
        fields: std::collections::BTreeMap<String, serde_json::Value>,
    ) -> anyhow::Result<()> {
        let e = self.log.append(time_ms, event, fields);
        let head = self.log.head();
        self.writer.write(&e, &head)
    }
}
