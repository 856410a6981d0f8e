//! The SPG's TOML configuration (examples/spg.toml). Unknown keys are refused with the key
//! named (serde `deny_unknown_fields`; toml reports the line and the key); values that parse
//! but make no sense (no gateway, two stores, a bad authority key) are refused naming the key.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Deserialize;
use voxgate_escrow::seal::AuthorityPublicKey;

/// `voxgate spg` configuration, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpgConfig {
    pub escrow: EscrowSection,
    pub tls: TlsSection,
    #[serde(rename = "gateway", default)]
    pub gateways: Vec<GatewaySection>,
    pub authority: AuthoritySection,
    pub store: StoreSection,
    pub metrics: Option<MetricsSection>,
}

/// `[metrics]`: Prometheus text format on `GET /metrics` (plain HTTP: bind it to a management
/// address).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    pub address: std::net::SocketAddr,
}

/// `[escrow]`: the escrow protocol's listener and per-connection limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EscrowSection {
    /// Address to listen on for gateways' mutual-TLS escrow connections.
    pub listen: SocketAddr,
    /// A connection with no frame for this long is closed.
    #[serde(default = "default_idle")]
    pub idle_timeout_secs: u64,
    /// The TLS handshake must finish within this.
    #[serde(default = "default_handshake")]
    pub handshake_timeout_secs: u64,
    /// Escrow connections open at once (all gateways).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

fn default_idle() -> u64 {
    300
}
fn default_handshake() -> u64 {
    10
}
fn default_max_connections() -> usize {
    1024
}

/// `[tls]`: the SPG's certificate and the CA its gateways' client certificates chain to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Mutual TLS is required: a gateway without a certificate from this CA is refused.
    pub client_ca: PathBuf,
}

/// `[[gateway]]`: a voice gateway allowed to escrow.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySection {
    /// Must equal a DNS name (subjectAltName) of the gateway's client certificate.
    pub name: String,
    /// The gateway's IP addresses: escrow connections from any other address are refused.
    pub addresses: Vec<IpAddr>,
}

/// `[authority]`: the lawful-intercept authority's public key, to which keys are sealed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthoritySection {
    /// 64 hex digits or base64 of the X25519 public key.
    pub public_key: String,
}

/// `[store]`: where the sealed key records go (exactly one of the two).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    pub sqlite: Option<PathBuf>,
    pub postgres: Option<String>,
}

/// Where the key store is, resolved.
#[derive(Debug, Clone)]
pub enum StoreLocation {
    Sqlite(PathBuf),
    /// A libpq-style connection string (may hold a password: never logged).
    Postgres(String),
}

/// The configuration checked, with relative paths resolved against the file's directory.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub escrow: EscrowSection,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
    pub gateways: Vec<GatewaySection>,
    pub authority: AuthorityPublicKey,
    pub store: StoreLocation,
    pub metrics: Option<std::net::SocketAddr>,
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// Parses and checks `text`; `base` is the directory relative paths are relative to.
pub fn load(text: &str, base: &Path) -> anyhow::Result<Loaded> {
    let c: SpgConfig = toml::from_str(text)?;
    if c.gateways.is_empty() {
        bail!("gateway: at least one [[gateway]] is needed");
    }
    for (i, g) in c.gateways.iter().enumerate() {
        if g.name.is_empty()
            || !g
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            bail!("gateway[{i}].name = {:?}: not a DNS name", g.name);
        }
        if g.addresses.is_empty() {
            bail!(
                "gateway[{i}].addresses: at least one address for {}",
                g.name
            );
        }
        if c.gateways[..i]
            .iter()
            .any(|o| o.name.eq_ignore_ascii_case(&g.name))
        {
            bail!("gateway[{i}].name = {:?}: configured twice", g.name);
        }
    }
    if c.escrow.idle_timeout_secs == 0 {
        bail!("escrow.idle_timeout_secs: must be at least 1");
    }
    if c.escrow.handshake_timeout_secs == 0 {
        bail!("escrow.handshake_timeout_secs: must be at least 1");
    }
    if c.escrow.max_connections == 0 {
        bail!("escrow.max_connections: must be at least 1");
    }
    let authority: AuthorityPublicKey = c
        .authority
        .public_key
        .parse()
        .context("authority.public_key")?;
    let store = match (c.store.sqlite, c.store.postgres) {
        (Some(p), None) => StoreLocation::Sqlite(resolve(base, &p)),
        (None, Some(s)) => StoreLocation::Postgres(s),
        (Some(_), Some(_)) => bail!("store: give either store.sqlite or store.postgres, not both"),
        (None, None) => bail!("store: store.sqlite or store.postgres is needed"),
    };
    Ok(Loaded {
        escrow: c.escrow,
        cert: resolve(base, &c.tls.cert),
        key: resolve(base, &c.tls.key),
        client_ca: resolve(base, &c.tls.client_ca),
        gateways: c.gateways,
        authority,
        store,
        metrics: c.metrics.map(|m| m.address),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PK: &str = "0900000000000000000000000000000000000000000000000000000000000000";

    fn text(extra_store: &str) -> String {
        format!(
            r#"[escrow]
listen = "127.0.0.1:0"
[tls]
cert = "certs/server.pem"
key = "certs/server.key"
client_ca = "certs/ca.pem"
[[gateway]]
name = "gw1.a.example"
addresses = ["127.0.0.1"]
[authority]
public_key = "{PK}"
[store]
{extra_store}
"#
        )
    }

    #[test]
    fn loads_and_resolves_paths() {
        let l = load(&text("sqlite = \"k.db\""), Path::new("/etc/spg")).unwrap();
        assert_eq!(l.cert, PathBuf::from("/etc/spg/certs/server.pem"));
        assert!(matches!(l.store, StoreLocation::Sqlite(ref p) if p == Path::new("/etc/spg/k.db")));
        assert_eq!(l.escrow.idle_timeout_secs, 300);
        assert_eq!(l.escrow.handshake_timeout_secs, 10);
        assert_eq!(l.gateways[0].name, "gw1.a.example");
    }

    #[test]
    fn errors_name_the_key() {
        let e = load(&text("sqlite = \"k.db\"\nsqlit = 1"), Path::new(".")).unwrap_err();
        assert!(format!("{e:#}").contains("sqlit"), "{e:#}");
        let e = load(&text(""), Path::new(".")).unwrap_err();
        assert!(format!("{e:#}").contains("store.sqlite"), "{e:#}");
        let e = load(
            &text("sqlite = \"k.db\"\npostgres = \"host=x\""),
            Path::new("."),
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("not both"), "{e:#}");
        let bad_key = text("sqlite = \"k.db\"").replace(PK, "zz");
        let e = load(&bad_key, Path::new(".")).unwrap_err();
        assert!(format!("{e:#}").contains("authority.public_key"), "{e:#}");
        let no_gw = text("sqlite = \"k.db\"").replace(
            "[[gateway]]\nname = \"gw1.a.example\"\naddresses = [\"127.0.0.1\"]\n",
            "",
        );
        let e = load(&no_gw, Path::new(".")).unwrap_err();
        assert!(format!("{e:#}").contains("gateway"), "{e:#}");
    }

    #[test]
    fn the_example_loads_and_its_development_key_is_documented() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
        let text = std::fs::read_to_string(dir.join("spg.toml")).unwrap();
        let l = load(&text, &dir).unwrap();
        let kp = voxgate_escrow::seal::AuthorityKeyPair::from_secret_base64(
            "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=",
        )
        .unwrap();
        assert_eq!(*kp.public(), l.authority);
        assert!(text.contains("AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA="));
    }
}
