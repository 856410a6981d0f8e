//! TLS material for the drivers (proxy, ua, spg): the aws-lc-rs provider, PEM certificates,
//! private keys and CA roots, with errors that name the file.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::RootCertStore;

pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The certificates of a PEM file (at least one).
pub(crate) fn load_certs(p: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let data = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut &data[..])
        .collect::<Result<_, _>>()
        .with_context(|| format!("{}: not PEM certificates", p.display()))?;
    if certs.is_empty() {
        bail!("{}: no certificate in it", p.display());
    }
    Ok(certs)
}

/// The private key of a PEM file.
pub(crate) fn load_key(p: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    let data = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
    rustls_pemfile::private_key(&mut &data[..])
        .with_context(|| format!("{}: not a PEM private key", p.display()))?
        .with_context(|| format!("{}: no private key in it", p.display()))
}

/// The CA certificates of a PEM file as trust roots.
pub(crate) fn load_roots(p: &Path) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for c in load_certs(p)? {
        roots
            .add(c)
            .with_context(|| format!("{}: bad CA certificate", p.display()))?;
    }
    Ok(roots)
}
