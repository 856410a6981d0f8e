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
    pub sip: Option<SipSection>,
    pub media: Option<MediaSection>,
    #[serde(rename = "gateway", default)]
    pub gateways: Vec<GatewaySection>,
    #[serde(rename = "peer", default)]
    pub peers: Vec<PeerSection>,
    pub authority: AuthoritySection,
    pub store: StoreSection,
    pub metrics: Option<MetricsSection>,
    pub li: Option<LiSection>,
    pub audit: Option<AuditSection>,
}

/// `[li]`: the lawful-interception mediation this SPG reports to (it connects out with mutual
/// TLS; the mediation provisions what to copy, nothing is copied without it).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiSection {
    /// The mediation's X2/X3 listener.
    pub mediation: SocketAddr,
    /// The name in the mediation's certificate.
    pub server_name: String,
    /// This SPG's client certificate and key (its name there is the certificate's CN).
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The CA that issued the mediation's certificate.
    pub ca: PathBuf,
    /// Copies of intercepted datagrams queued while the mediation is slow or away; beyond
    /// this they are dropped (and counted).
    #[serde(default = "default_li_queue")]
    pub queue_bytes: usize,
    /// The sessions whose calls matched a task (their keys outlive the retention).
    #[serde(default = "default_keep_file")]
    pub keep_file: PathBuf,
}

fn default_keep_file() -> PathBuf {
    PathBuf::from("li-keep.txt")
}

fn default_li_queue() -> usize {
    64 << 20
}

/// `[audit]`: the node's tamper-evident audit log (every key_update and session end), signed
/// with an Ed25519 key (PKCS#8 DER, made by `voxgate li keygen`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSection {
    pub path: PathBuf,
    pub key: PathBuf,
    /// The node's name in the entries.
    pub node: String,
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
    /// How a key_update's party is checked: "sip" (default): the gateway must be a party to
    /// that call through this SPG's proxy, and the streams its media paths; "none": any
    /// registered gateway may escrow any Call-ID (an escrow-only node with no SIP of its own).
    #[serde(default)]
    pub party_check: PartyCheck,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PartyCheck {
    #[default]
    Sip,
    None,
}

/// `[sip]`: the SPG's SIP proxy for its gateways' domains (TLS only: SDES keys cross it).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipSection {
    /// TLS listener addresses.
    pub listen: Vec<SocketAddr>,
    /// The encryption policy calls through the SPG must meet ("off": the gateways decide).
    #[serde(default = "default_sip_policy")]
    pub encryption: voxgate_sip::config::PolicyName,
}

fn default_sip_policy() -> voxgate_sip::config::PolicyName {
    voxgate_sip::config::PolicyName::Off
}

/// `[media]`: the relay media is anchored in.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaSection {
    /// The relay's IPv4 address (bound, and written into the SDP).
    pub address: std::net::Ipv4Addr,
    /// First port and number of ports (two pairs per call stream).
    pub first_port: u16,
    pub port_count: u16,
    /// "source-based" (default): datagrams from the registered gateways must carry a valid
    /// session_ID; "global": every RTP datagram must.
    #[serde(default)]
    pub mode: GateMode,
    /// Tags verified: every packet (`verify_first = 0, verify_one_in = 1`, the default), or
    /// the first N packets of a stream then one in K.
    #[serde(default)]
    pub verify_first: u64,
    #[serde(default = "one")]
    pub verify_one_in: u64,
    /// Receive queue of each relay port (SO_RCVBUF, which Linux doubles and charges per
    /// packet with its overhead): what it holds bounds the delay a stream can build up when
    /// the relay is overloaded; beyond it the stream's excess packets are shed (each port
    /// sheds its own: every call keeps flowing). The default holds 19 packets, 0.38 s of a 50
    /// packets/s stream on loopback.
    #[serde(default = "default_media_buffer")]
    pub port_queue_bytes: usize,
    /// The voice gateways' side of every call on one shared port pair (the first of the
    /// range), told apart by source address: one socket, batched I/O (default). Off: a pair
    /// per call side, as rtpengine does (for gateways that send every call from one address).
    #[serde(default = "yes")]
    pub shared_port: bool,
    /// Receive queue of each port of the shared pair (it carries every gateway's streams).
    #[serde(default = "default_shared_queue")]
    pub shared_queue_bytes: usize,
    /// How datagrams move: "uring" (io_uring: multishot receives on every port and the sends
    /// on one ring, no system call per datagram; Linux 6.1), "raw" (epoll and a receive call
    /// per ready port, sends batched on one raw socket; CAP_NET_RAW), "sockets" (epoll, a
    /// receive and a send call per datagram), or "auto" (the first of these that works here).
    #[serde(default)]
    pub engine: EngineName,
}

/// `[media] engine`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineName {
    #[default]
    Auto,
    Uring,
    Raw,
    Sockets,
}

impl From<EngineName> for voxgate_netio::portset::EngineChoice {
    fn from(e: EngineName) -> Self {
        use voxgate_netio::portset::EngineChoice;
        match e {
            EngineName::Auto => EngineChoice::Auto,
            EngineName::Uring => EngineChoice::Uring,
            EngineName::Raw => EngineChoice::Raw,
            EngineName::Sockets => EngineChoice::Sockets,
        }
    }
}

fn one() -> u64 {
    1
}
fn yes() -> bool {
    true
}
fn default_shared_queue() -> usize {
    4 << 20
}
fn default_media_buffer() -> usize {
    8 * 1024
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GateMode {
    #[default]
    SourceBased,
    Global,
}

/// `[[peer]]`: another provider's SPG (its domains are routed to it; its requests are
/// trusted for those domains).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerSection {
    pub name: String,
    pub addresses: Vec<IpAddr>,
    pub domains: Vec<String>,
    /// Its SIP address, e.g. `sip:192.0.2.2:5061;transport=tls`.
    pub sip: String,
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
    /// The gateway's IP addresses: escrow connections (and SIP requests, and media) from any
    /// other address are refused.
    pub addresses: Vec<IpAddr>,
    /// The domains whose users are behind this gateway (calls to them are routed to it; it
    /// may place calls only from them). Needed with `[sip]`.
    #[serde(default)]
    pub domains: Vec<String>,
    /// Its SIP address, e.g. `sip:192.0.2.11:5061;transport=tls`. Needed with `[sip]`.
    pub sip: Option<String>,
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
    /// With `postgres`: the PostgreSQL schema the table lives in (default: the search path).
    pub postgres_schema: Option<String>,
    /// Retention: the keys of sessions that ended more than this many seconds ago are deleted,
    /// except those of calls lawful interception matched (`[li]`). Unset: kept.
    pub retention_secs: Option<u64>,
}

/// Where the key store is, resolved.
#[derive(Debug, Clone)]
pub enum StoreLocation {
    Sqlite(PathBuf),
    /// A libpq-style connection string (may hold a password: never logged), and a schema.
    Postgres(String, Option<String>),
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
    pub retention_secs: Option<u64>,
    /// The SIP proxy's configuration, derived from `[sip]`, `[[gateway]]` and `[[peer]]`.
    pub sip: Option<voxgate_sip::config::ProxyConfig>,
    pub media: Option<MediaSection>,
    pub peers: Vec<PeerSection>,
    pub li: Option<LiSection>,
    pub audit: Option<AuditSection>,
}

use crate::config_file::resolve;

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
    let store = match (c.store.sqlite.clone(), c.store.postgres.clone()) {
        (Some(p), None) => StoreLocation::Sqlite(resolve(base, &p)),
        (None, Some(s)) => StoreLocation::Postgres(s, c.store.postgres_schema.clone()),
        (Some(_), Some(_)) => bail!("store: give either store.sqlite or store.postgres, not both"),
        (None, None) => bail!("store: store.sqlite or store.postgres is needed"),
    };
    let sip = match (&c.sip, &c.media) {
        (Some(sip), Some(_)) => Some(proxy_config(&c, sip, base)?),
        (None, None) => {
            if c.escrow.party_check == PartyCheck::Sip {
                bail!("escrow.party_check = \"sip\" needs [sip] and [media] (or set party_check = \"none\" for an escrow-only node)");
            }
            if !c.peers.is_empty() {
                bail!("peer: [[peer]] needs [sip]");
            }
            None
        }
        (Some(_), None) => {
            bail!("media: [sip] needs [media] (media is anchored in the SPG's relay)")
        }
        (None, Some(_)) => bail!("sip: [media] needs [sip]"),
    };
    if let Some(m) = &c.media {
        if m.port_count < 4 {
            bail!("media.port_count: at least 4 (two port pairs per call stream)");
        }
        if u32::from(m.first_port) + u32::from(m.port_count) > 65_536 || m.first_port < 1024 {
            bail!("media.first_port + media.port_count: must lie within 1024..=65535");
        }
        if m.verify_one_in == 0 {
            bail!("media.verify_one_in: at least 1 (1: every packet)");
        }
    }
    Ok(Loaded {
        sip,
        media: c.media.clone(),
        peers: c.peers.clone(),
        escrow: c.escrow,
        cert: resolve(base, &c.tls.cert),
        key: resolve(base, &c.tls.key),
        client_ca: resolve(base, &c.tls.client_ca),
        gateways: c.gateways,
        authority,
        store,
        metrics: c.metrics.map(|m| m.address),
        retention_secs: c.store.retention_secs,
        li: c.li.map(|l| LiSection {
            cert: resolve(base, &l.cert),
            key: resolve(base, &l.key),
            ca: resolve(base, &l.ca),
            keep_file: resolve(base, &l.keep_file),
            ..l
        }),
        audit: c.audit.map(|a| AuditSection {
            path: resolve(base, &a.path),
            key: resolve(base, &a.key),
            ..a
        }),
    })
}

/// The proxy configuration of the SPG: TLS listeners, no local users, a route per gateway and
/// peer domain, the gateways and peers as trusted peers for their domains.
fn proxy_config(
    c: &SpgConfig,
    sip: &SipSection,
    base: &Path,
) -> anyhow::Result<voxgate_sip::config::ProxyConfig> {
    use voxgate_sip::config::{Listen, ProxyConfig, Route, Tls, TransportKind, Trusted};
    if sip.listen.is_empty() {
        bail!("sip.listen: at least one address");
    }
    let mut routes = Vec::new();
    let mut trusted = Vec::new();
    for (i, g) in c.gateways.iter().enumerate() {
        let Some(uri) = &g.sip else {
            bail!("gateway[{i}].sip: needed with [sip] (the gateway's SIP address)");
        };
        if g.domains.is_empty() {
            bail!(
                "gateway[{i}].domains: needed with [sip] (the domains behind {})",
                g.name
            );
        }
        for d in &g.domains {
            routes.push(Route {
                domain: d.clone(),
                next_hop: uri.clone(),
                encryption: Some(sip.encryption),
            });
        }
        trusted.push(Trusted {
            name: g.name.clone(),
            addresses: g.addresses.clone(),
            domains: g.domains.clone(),
        });
    }
    for (i, p) in c.peers.iter().enumerate() {
        if p.domains.is_empty() || p.addresses.is_empty() {
            bail!("peer[{i}]: domains and addresses are needed");
        }
        for d in &p.domains {
            routes.push(Route {
                domain: d.clone(),
                next_hop: p.sip.clone(),
                encryption: Some(sip.encryption),
            });
        }
        trusted.push(Trusted {
            name: p.name.clone(),
            addresses: p.addresses.clone(),
            domains: p.domains.clone(),
        });
    }
    let cfg = ProxyConfig {
        listeners: sip
            .listen
            .iter()
            .map(|a| Listen {
                transport: TransportKind::Tls,
                address: *a,
            })
            .collect(),
        tls: Some(Tls {
            cert: resolve(base, &c.tls.cert),
            key: resolve(base, &c.tls.key),
            client_ca: Some(resolve(base, &c.tls.client_ca)),
        }),
        domains: Vec::new(),
        routes,
        trusted,
        auth: Default::default(),
        limits: Default::default(),
        metrics: None,
    };
    cfg.validate()
        .map_err(|e| anyhow::anyhow!("[sip], [[gateway]], [[peer]]: {e}"))?;
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PK: &str = "0900000000000000000000000000000000000000000000000000000000000000";

    fn text(extra_store: &str) -> String {
        format!(
            r#"[escrow]
listen = "127.0.0.1:0"
party_check = "none"
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
    fn the_sip_side_needs_its_sections_and_the_party_check_needs_sip() {
        let escrow_only = text("sqlite = \"k.db\"");
        let e = load(
            &escrow_only.replace("party_check = \"none\"\n", ""),
            Path::new("."),
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("party_check"), "{e:#}");
        let with_sip = escrow_only.replace(
            "party_check = \"none\"\n",
            "[sip]\nlisten = [\"127.0.0.1:5061\"]\n[media]\naddress = \"127.0.0.1\"\nfirst_port = 20000\nport_count = 100\n",
        );
        // The gateway has no SIP address nor domains yet.
        let e = load(&with_sip, Path::new(".")).unwrap_err();
        assert!(format!("{e:#}").contains("gateway[0].sip"), "{e:#}");
        let full = with_sip.replace(
            "addresses = [\"127.0.0.1\"]\n",
            "addresses = [\"127.0.0.1\"]\ndomains = [\"a.example\"]\nsip = \"sip:127.0.0.11:5061;transport=tls\"\n",
        );
        let l = load(&full, Path::new("/etc/spg")).unwrap();
        let sip = l.sip.unwrap();
        assert_eq!(sip.routes[0].domain, "a.example");
        assert_eq!(sip.trusted[0].name, "gw1.a.example");
        let bad = full.replace("port_count = 100", "port_count = 2");
        let e = load(&bad, Path::new(".")).unwrap_err();
        assert!(format!("{e:#}").contains("media.port_count"), "{e:#}");
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
