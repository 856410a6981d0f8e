//! The voice gateway's TOML configuration (examples/gateway.toml). Unknown keys are refused
//! with the key named; `[sip]` is exactly the format of `voxgate proxy`'s configuration (the
//! gateway's users register there), and the route to the provider and its trust are added
//! from `[provider]`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Deserialize;
use voxgate_media::bridge::{BridgeConfig, Carrier};
use voxgate_sip::config::{PolicyName, ProxyConfig, Route, Trusted};
use voxgate_sip::sdp::EncryptionPolicy;

/// The trusted-peer name the provider's SPG gets in the gateway's proxy.
pub const PROVIDER: &str = "provider";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayFile {
    pub gateway: GatewaySection,
    pub sip: ProxyConfig,
    pub provider: ProviderSection,
    pub media: MediaSection,
    pub metrics: Option<MetricsSection>,
    /// Lawful interception: the registrations of warrant targets are reported (IRI REPORT) to
    /// the mediation (the calls are intercepted at the SPG).
    pub li: Option<crate::spg::LiSection>,
}

/// `[gateway]`: who this gateway is.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySection {
    /// Its name: a DNS name of its certificate, as its SPG knows it (`[[gateway]] name`).
    pub name: String,
}

/// `[provider]`: the service-provider gateway (SPG) the gateway sends its calls and keys to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSection {
    /// The SPG's SIP address, e.g. `sip:192.0.2.1:5061;transport=tls`: every call to a domain
    /// that is not the gateway's goes there.
    pub sip: String,
    /// The SPG's addresses: its requests are trusted (not challenged) for calls from other
    /// domains to the gateway's users.
    pub addresses: Vec<IpAddr>,
    /// The SPG's escrow server (mutual TLS with the gateway's certificate, `[sip.tls]`).
    pub escrow: SocketAddr,
    /// The CA that signed the SPG's certificate (default: `[sip.tls] client_ca`).
    pub ca: Option<PathBuf>,
}

/// `[media]`: the bridge's ports.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaSection {
    /// Address toward the provider (in SDP to the SPG, and the escrowed 5-tuples).
    pub outside_address: Ipv4Addr,
    /// Address toward the users (default: the outside address).
    pub inside_address: Option<Ipv4Addr>,
    /// Address the media sockets bind to (default: the outside address when both are the
    /// same, else 0.0.0.0).
    pub bind_address: Option<Ipv4Addr>,
    pub first_port: u16,
    pub port_count: u16,
    /// "ipv4-option" (option type 158, needs CAP_NET_RAW) or "rtp-extension" (RFC 8285).
    pub carrier: CarrierName,
    /// The RTP header extension id (1-14) with `carrier = "rtp-extension"`.
    #[serde(default = "default_ext_id")]
    pub extension_id: u8,
    /// Receive queue of each media port (as the SPG's `port_queue_bytes`).
    #[serde(default = "default_buffer")]
    pub port_queue_bytes: usize,
    /// As the SPG's `[media] engine`: "auto", "raw" or "sockets".
    #[serde(default)]
    pub engine: crate::spg::EngineName,
}

fn default_ext_id() -> u8 {
    1
}
fn default_buffer() -> usize {
    8 * 1024
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CarrierName {
    Ipv4Option,
    RtpExtension,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    pub address: SocketAddr,
}

/// The configuration checked, paths resolved.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub name: String,
    pub sip: ProxyConfig,
    pub bridge: BridgeConfig,
    pub bind: Ipv4Addr,
    pub port_queue_bytes: usize,
    pub engine: crate::spg::EngineName,
    pub escrow: SocketAddr,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
    pub metrics: Option<SocketAddr>,
    pub li: Option<crate::spg::LiSection>,
}

use crate::config_file::resolve;

pub fn load(text: &str, base: &Path) -> anyhow::Result<Loaded> {
    let f: GatewayFile = toml::from_str(text)?;
    let mut sip = f.sip;
    if !sip.routes.is_empty() || !sip.trusted.is_empty() {
        bail!("sip.route, sip.trusted: not set by hand on a gateway (they come from [provider])");
    }
    if sip.domains.is_empty() {
        bail!("sip.domain: the gateway's own domain (its users) is needed");
    }
    if f.provider.addresses.is_empty() {
        bail!("provider.addresses: at least one address of the SPG");
    }
    sip.routes.push(Route {
        domain: "*".into(),
        next_hop: f.provider.sip.clone(),
        // The provider leg is always SRTP: the bridge makes sure of it.
        encryption: Some(PolicyName::Mandatory),
    });
    sip.trusted.push(Trusted {
        name: PROVIDER.into(),
        addresses: f.provider.addresses.clone(),
        domains: vec!["*".into()],
    });
    let Some(tls) = sip.tls.as_mut() else {
        bail!("sip.tls: the gateway's certificate (also its escrow identity) is needed");
    };
    tls.cert = resolve(base, &tls.cert);
    tls.key = resolve(base, &tls.key);
    tls.client_ca = tls.client_ca.as_ref().map(|c| resolve(base, c));
    let (cert, key) = (tls.cert.clone(), tls.key.clone());
    let ca = match (&f.provider.ca, &tls.client_ca) {
        (Some(c), _) => resolve(base, c),
        (None, Some(c)) => c.clone(),
        (None, None) => {
            bail!("provider.ca: the CA of the SPG's certificate is needed (or sip.tls.client_ca)")
        }
    };
    sip.validate()
        .map_err(|e| anyhow::anyhow!("sip: {e}"))
        .context("the gateway's SIP side")?;
    let inside_policy: EncryptionPolicy = sip.domains[0].encryption.into();
    let m = &f.media;
    if m.port_count < 4 {
        bail!("media.port_count: at least 4 (two port pairs per call)");
    }
    if u32::from(m.first_port) + u32::from(m.port_count) > 65_536 || m.first_port < 1024 {
        bail!("media.first_port + media.port_count: must lie within 1024..=65535");
    }
    let carrier = match m.carrier {
        CarrierName::Ipv4Option => Carrier::Ipv4Option,
        CarrierName::RtpExtension => {
            if !(1..=14).contains(&m.extension_id) {
                bail!("media.extension_id: 1..=14 (RFC 8285 one-byte form)");
            }
            Carrier::RtpExtension { id: m.extension_id }
        }
    };
    let inside = m.inside_address.unwrap_or(m.outside_address);
    let bind = m.bind_address.unwrap_or(if inside == m.outside_address {
        m.outside_address
    } else {
        Ipv4Addr::UNSPECIFIED
    });
    if f.gateway.name.is_empty() {
        bail!("gateway.name: must not be empty");
    }
    Ok(Loaded {
        name: f.gateway.name.clone(),
        bridge: BridgeConfig {
            inside_address: IpAddr::V4(inside),
            outside_address: IpAddr::V4(m.outside_address),
            first_port: m.first_port,
            port_count: m.port_count,
            carrier,
            inside_policy,
            provider: PROVIDER.into(),
            cname: f.gateway.name.clone(),
        },
        sip,
        bind,
        port_queue_bytes: m.port_queue_bytes,
        engine: m.engine,
        escrow: f.provider.escrow,
        cert,
        key,
        ca,
        metrics: f.metrics.map(|m| m.address),
        li: f.li.map(|l| crate::spg::LiSection {
            cert: crate::config_file::resolve(base, &l.cert),
            key: crate::config_file::resolve(base, &l.key),
            ca: crate::config_file::resolve(base, &l.ca),
            keep_file: crate::config_file::resolve(base, &l.keep_file),
            ..l
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_loads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
        let text = std::fs::read_to_string(dir.join("gateway.toml")).unwrap();
        let l = load(&text, &dir).unwrap();
        assert_eq!(l.sip.routes[0].domain, "*");
        assert_eq!(l.sip.trusted[0].name, PROVIDER);
        assert!(l.cert.is_absolute() || l.cert.starts_with(&dir));
    }

    #[test]
    fn errors_name_the_key() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
        let text = std::fs::read_to_string(dir.join("gateway.toml")).unwrap();
        let e = load(&text.replace("carrier =", "carier ="), &dir).unwrap_err();
        assert!(format!("{e:#}").contains("carier"), "{e:#}");
        let e = load(
            &text
                .replace("carrier = \"ipv4-option\"", "carrier = \"rtp-extension\"")
                .replace("extension_id = 1", "extension_id = 15"),
            &dir,
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("media.extension_id"), "{e:#}");
    }
}
