//! The scenario file: which streams the load generator sends, where, and how they are keyed.
//!
//! ```json
//! { "streams": [
//!   { "send_from": "127.0.0.1:30000", "send_to": "127.0.0.1:20000", "recv_on": "127.0.0.1:40000",
//!     "ssrc": 305419896, "suite": "AES_CM_128_HMAC_SHA1_80", "key": "<base64 of key||salt>",
//!     "carrier": { "kind": "ipv4-option", "session_id": 1234605616436508552 },
//!     "pps": 50 } ] }
//! ```
//!
//! `carrier.kind` is `none`, `ipv4-option` or `rtp-extension` (which also needs `ext_id`, 1..=14);
//! a `carrier` may be left out (none). `session_id` is a JSON number (any u64) or a string
//! (decimal or `0x` hex). `pps` defaults to 50. Fields not listed here are refused, except
//! `ext_id` beside a carrier that does not use it (ignored).
//!
//! [`Scenario::parse`] checks everything the load generator relies on (suite, key length,
//! addresses, unique sockets) and names the stream at fault. [`make_scenario`] writes one for a
//! relay whose ports map one to one onto the streams.

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use voxgate_rtp::{MasterKey, SrtpProfile};

use crate::rng::SplitMix64;

/// Packets per second of a stream when the scenario does not say (G.711 at 20 ms).
pub const DEFAULT_PPS: u32 = 50;
/// The highest rate one stream may ask for.
pub const MAX_PPS: u32 = 10_000;

/// A whole scenario file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub streams: Vec<StreamSpec>,
}

/// One stream: one UDP flow of SRTP packets through the relay (a "call" in the benchmark).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamSpec {
    pub send_from: SocketAddr,
    pub send_to: SocketAddr,
    pub recv_on: SocketAddr,
    pub ssrc: u32,
    pub suite: String,
    /// Base64 of the master key followed by the master salt (as SDES `inline:` carries it).
    pub key: String,
    #[serde(default)]
    pub carrier: CarrierSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pps: Option<u32>,
}

/// The carrier as written in the file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CarrierSpec {
    pub kind: CarrierKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<SessionIdValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ext_id: Option<u8>,
}

/// How a stream's datagrams carry their session_ID.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CarrierKind {
    #[default]
    None,
    Ipv4Option,
    RtpExtension,
}

impl CarrierKind {
    pub fn name(self) -> &'static str {
        match self {
            CarrierKind::None => "none",
            CarrierKind::Ipv4Option => "ipv4-option",
            CarrierKind::RtpExtension => "rtp-extension",
        }
    }

    pub fn from_name(s: &str) -> Result<CarrierKind> {
        Ok(match s {
            "none" => CarrierKind::None,
            "ipv4-option" => CarrierKind::Ipv4Option,
            "rtp-extension" => CarrierKind::RtpExtension,
            other => bail!("unknown carrier {other:?} (none, ipv4-option or rtp-extension)"),
        })
    }
}

impl fmt::Display for CarrierKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A session_ID as a JSON number or a string (decimal or `0x` hex): 64-bit values do not
/// survive every JSON writer as numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SessionIdValue {
    Number(u64),
    Text(#[serde(with = "session_id_text")] u64),
}

impl SessionIdValue {
    pub fn get(self) -> u64 {
        match self {
            SessionIdValue::Number(v) | SessionIdValue::Text(v) => v,
        }
    }
}

mod session_id_text {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{v:#018x}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let s = String::deserialize(d)?;
        let t = s.trim();
        let parsed = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
            Some(hex) => u64::from_str_radix(hex, 16),
            None => t.parse(),
        };
        parsed.map_err(|_| D::Error::custom(format!("session_id {s:?} is not a 64-bit number")))
    }
}

/// A checked carrier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carrier {
    None,
    Ipv4Option { session_id: u64 },
    RtpExtension { session_id: u64, ext_id: u8 },
}

impl Carrier {
    pub fn kind(self) -> CarrierKind {
        match self {
            Carrier::None => CarrierKind::None,
            Carrier::Ipv4Option { .. } => CarrierKind::Ipv4Option,
            Carrier::RtpExtension { .. } => CarrierKind::RtpExtension,
        }
    }
}

/// A stream after [`Scenario::parse`]: every field checked and decoded.
#[derive(Debug, Clone)]
pub struct Stream {
    pub send_from: SocketAddr,
    pub send_to: SocketAddr,
    pub recv_on: SocketAddr,
    pub ssrc: u32,
    pub key: MasterKey,
    pub carrier: Carrier,
    pub pps: u32,
}

impl Scenario {
    /// Parses and checks a scenario (the text of the file).
    pub fn parse(text: &str) -> Result<(Scenario, Vec<Stream>)> {
        let scenario: Scenario = serde_json::from_str(text).context("scenario is not valid")?;
        let streams = scenario.check()?;
        Ok((scenario, streams))
    }

    /// Checks every stream; the error names the first stream at fault.
    pub fn check(&self) -> Result<Vec<Stream>> {
        if self.streams.is_empty() {
            bail!("the scenario has no streams");
        }
        let mut senders = HashSet::new();
        let mut receivers = HashSet::new();
        let mut out = Vec::with_capacity(self.streams.len());
        for (i, s) in self.streams.iter().enumerate() {
            let st = s.check().with_context(|| format!("stream {i}"))?;
            if !senders.insert(st.send_from) {
                bail!(
                    "stream {i}: send_from {} is used by an earlier stream",
                    st.send_from
                );
            }
            if !receivers.insert(st.recv_on) {
                bail!(
                    "stream {i}: recv_on {} is used by an earlier stream",
                    st.recv_on
                );
            }
            out.push(st);
        }
        if let Some(a) = senders.intersection(&receivers).next() {
            bail!("{a} is both a send_from and a recv_on address");
        }
        Ok(out)
    }
}

impl StreamSpec {
    fn check(&self) -> Result<Stream> {
        let profile = SrtpProfile::from_name(&self.suite)
            .with_context(|| format!("suite {:?}", self.suite))?;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(self.key.trim())
            .context("key is not valid base64")?;
        let key = MasterKey::from_key_salt(profile, &raw).context("key")?;
        let pps = self.pps.unwrap_or(DEFAULT_PPS);
        if pps == 0 || pps > MAX_PPS {
            bail!("pps {pps} is out of range (1..={MAX_PPS})");
        }
        for (name, a) in [
            ("send_from", self.send_from),
            ("send_to", self.send_to),
            ("recv_on", self.recv_on),
        ] {
            if a.port() == 0 && name != "send_from" {
                bail!("{name} {a} has port 0");
            }
        }
        if self.send_from.is_ipv4() != self.send_to.is_ipv4() {
            bail!(
                "send_from {} and send_to {} are not of the same address family",
                self.send_from,
                self.send_to
            );
        }
        let c = &self.carrier;
        let carrier = match c.kind {
            CarrierKind::None => Carrier::None,
            CarrierKind::Ipv4Option => {
                let session_id = c
                    .session_id
                    .context("carrier ipv4-option needs a session_id")?
                    .get();
                if !self.send_from.is_ipv4() {
                    bail!(
                        "carrier ipv4-option needs an IPv4 send_from, got {}",
                        self.send_from
                    );
                }
                Carrier::Ipv4Option { session_id }
            }
            CarrierKind::RtpExtension => {
                let session_id = c
                    .session_id
                    .context("carrier rtp-extension needs a session_id")?
                    .get();
                let ext_id = c.ext_id.context("carrier rtp-extension needs an ext_id")?;
                if !(1..=14).contains(&ext_id) {
                    bail!("ext_id {ext_id} is out of range (one-byte header: 1..=14)");
                }
                Carrier::RtpExtension { session_id, ext_id }
            }
        };
        Ok(Stream {
            send_from: self.send_from,
            send_to: self.send_to,
            recv_on: self.recv_on,
            ssrc: self.ssrc,
            key,
            carrier,
            pps,
        })
    }
}

/// What [`make_scenario`] needs.
#[derive(Debug, Clone)]
pub struct MakeScenario {
    pub streams: usize,
    pub host: IpAddr,
    pub send_base: u16,
    pub relay_base: u16,
    pub recv_base: u16,
    /// All streams send to `relay_base` (one relay socket, destination by source port).
    pub single: bool,
    pub carrier: CarrierKind,
    pub ext_id: u8,
    pub suite: SrtpProfile,
    pub pps: u32,
    pub seed: u64,
    /// Relay addresses by stream index (from a mapping file), instead of `relay_base + i`.
    pub relay_map: Option<Vec<SocketAddr>>,
}

fn port_at(base: u16, i: usize, what: &str) -> Result<u16> {
    u16::try_from(usize::from(base) + i)
        .ok()
        .filter(|p| *p != 0)
        .with_context(|| format!("{what} port {base} + {i} is beyond 65535"))
}

/// A scenario for a relay whose port `relay_base + i` forwards stream `i` to `recv_base + i`
/// (stream `i` sends from `send_base + i`). Keys, SSRCs and session_IDs come from `seed`, so
/// the same arguments always give the same file.
pub fn make_scenario(m: &MakeScenario) -> Result<Scenario> {
    if m.streams == 0 {
        bail!("--streams must be at least 1");
    }
    if let Some(map) = &m.relay_map {
        if map.len() < m.streams {
            bail!(
                "the relay map has {} entries, {} streams were asked for",
                map.len(),
                m.streams
            );
        }
    }
    if m.carrier == CarrierKind::RtpExtension && !(1..=14).contains(&m.ext_id) {
        bail!("--ext-id {} is out of range (1..=14)", m.ext_id);
    }
    let mut rng = SplitMix64::new(m.seed);
    let key_len = m.suite.key_len() + m.suite.salt_len();
    let mut streams = Vec::with_capacity(m.streams);
    for i in 0..m.streams {
        let mut key = vec![0u8; key_len];
        rng.fill(&mut key);
        let ssrc = rng.next_u64() as u32;
        // Nonzero, as a real SPG would hand out.
        let session_id = rng.next_u64() | 1;
        let send_to = match &m.relay_map {
            Some(map) => map[i],
            None if m.single => SocketAddr::new(m.host, port_at(m.relay_base, 0, "relay")?),
            None => SocketAddr::new(m.host, port_at(m.relay_base, i, "relay")?),
        };
        let carrier = match m.carrier {
            CarrierKind::None => CarrierSpec::default(),
            CarrierKind::Ipv4Option => CarrierSpec {
                kind: CarrierKind::Ipv4Option,
                session_id: Some(SessionIdValue::Number(session_id)),
                ext_id: None,
            },
            CarrierKind::RtpExtension => CarrierSpec {
                kind: CarrierKind::RtpExtension,
                session_id: Some(SessionIdValue::Number(session_id)),
                ext_id: Some(m.ext_id),
            },
        };
        streams.push(StreamSpec {
            send_from: SocketAddr::new(m.host, port_at(m.send_base, i, "send")?),
            send_to,
            recv_on: SocketAddr::new(m.host, port_at(m.recv_base, i, "recv")?),
            ssrc,
            suite: m.suite.name().to_string(),
            key: base64::engine::general_purpose::STANDARD.encode(&key),
            carrier,
            pps: Some(m.pps),
        });
    }
    let s = Scenario { streams };
    s.check()?;
    Ok(s)
}

/// A relay mapping file: one line per stream, `<index> <ip:port>` (or `<index> <port>` on
/// `default_host`); blank lines and `#` comments are skipped. Every index from 0 up must be
/// present exactly once.
pub fn parse_relay_map(text: &str, default_host: IpAddr) -> Result<Vec<SocketAddr>> {
    let mut entries: Vec<Option<SocketAddr>> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut parts = line.split_whitespace();
        let (Some(idx), Some(addr), None) = (parts.next(), parts.next(), parts.next()) else {
            bail!("relay map line {}: expected `<index> <ip:port>`", n + 1);
        };
        let idx: usize = idx
            .parse()
            .with_context(|| format!("relay map line {}: bad index {idx:?}", n + 1))?;
        let addr = match addr.parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => SocketAddr::new(
                default_host,
                addr.parse::<u16>()
                    .with_context(|| format!("relay map line {}: bad address {addr:?}", n + 1))?,
            ),
        };
        if idx >= 1_000_000 {
            bail!("relay map line {}: index {idx} is too large", n + 1);
        }
        if entries.len() <= idx {
            entries.resize(idx + 1, None);
        }
        if entries[idx].replace(addr).is_some() {
            bail!("relay map line {}: index {idx} appears twice", n + 1);
        }
    }
    entries
        .into_iter()
        .enumerate()
        .map(|(i, a)| a.with_context(|| format!("relay map: no entry for stream {i}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY30: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwd";

    fn one(carrier: &str) -> String {
        format!(
            r#"{{ "streams": [ {{ "send_from": "127.0.0.1:30000", "send_to": "127.0.0.1:20000",
              "recv_on": "127.0.0.1:40000", "ssrc": 305419896, "suite": "AES_CM_128_HMAC_SHA1_80",
              "key": "{KEY30}", {carrier} "pps": 50 }} ] }}"#
        )
    }

    #[test]
    fn parses_the_documented_example() {
        let text = one(
            r#""carrier": { "kind": "ipv4-option", "session_id": 1234605616436508552, "ext_id": 1 },"#,
        );
        let (_, s) = Scenario::parse(&text).expect("parses");
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].send_to, "127.0.0.1:20000".parse().unwrap());
        assert_eq!(s[0].ssrc, 0x1234_5678);
        assert_eq!(s[0].pps, 50);
        assert_eq!(
            s[0].carrier,
            Carrier::Ipv4Option {
                session_id: 1234605616436508552
            }
        );
    }

    #[test]
    fn carriers_and_defaults() {
        let (_, s) = Scenario::parse(&one("")).expect("no carrier");
        assert_eq!(s[0].carrier, Carrier::None);
        let (_, s) = Scenario::parse(&one(
            r#""carrier": { "kind": "rtp-extension", "session_id": "0xfedcba9876543210", "ext_id": 3 },"#,
        ))
        .expect("hex session id");
        assert_eq!(
            s[0].carrier,
            Carrier::RtpExtension {
                session_id: 0xfedc_ba98_7654_3210,
                ext_id: 3
            }
        );
        let (_, s) = Scenario::parse(&one(
            r#""carrier": { "kind": "rtp-extension", "session_id": 18446744073709551615, "ext_id": 14 },"#,
        ))
        .expect("u64::MAX as a number");
        assert_eq!(
            s[0].carrier,
            Carrier::RtpExtension {
                session_id: u64::MAX,
                ext_id: 14
            }
        );
    }

    #[test]
    fn refusals_name_the_fault() {
        let err = |t: &str| format!("{:#}", Scenario::parse(t).unwrap_err());
        assert!(err(&one(
            r#""carrier": { "kind": "rtp-extension", "session_id": 1 },"#
        ))
        .contains("ext_id"));
        assert!(err(&one(
            r#""carrier": { "kind": "rtp-extension", "session_id": 1, "ext_id": 15 },"#
        ))
        .contains("out of range"));
        assert!(err(&one(r#""carrier": { "kind": "ipv4-option" },"#)).contains("session_id"));
        assert!(err(&one(r#""carrier": { "kind": "carrier-pigeon" },"#)).contains("unknown"));
        assert!(err(&one(r#""colour": "blue","#)).contains("colour"));
        assert!(err(&one("").replace(KEY30, "AAEC")).contains("key length"));
        assert!(err(&one("").replace("AES_CM_128_HMAC_SHA1_80", "ROT13")).contains("suite"));
        assert!(err(r#"{ "streams": [] }"#).contains("no streams"));
        // The same stream twice: its sockets clash.
        let (sc, _) = Scenario::parse(&one("")).unwrap();
        let twice = Scenario {
            streams: vec![sc.streams[0].clone(), sc.streams[0].clone()],
        };
        let e = format!("{:#}", twice.check().unwrap_err());
        assert!(e.contains("used by an earlier stream"), "{e}");
    }

    fn maker() -> MakeScenario {
        MakeScenario {
            streams: 3,
            host: "127.0.0.1".parse().unwrap(),
            send_base: 10000,
            relay_base: 22000,
            recv_base: 16000,
            single: false,
            carrier: CarrierKind::RtpExtension,
            ext_id: 2,
            suite: SrtpProfile::from_name("AES_CM_128_HMAC_SHA1_80").unwrap(),
            pps: 50,
            seed: 7,
            relay_map: None,
        }
    }

    #[test]
    fn make_scenario_is_deterministic_and_round_trips() {
        let a = make_scenario(&maker()).unwrap();
        let b = make_scenario(&maker()).unwrap();
        let ta = serde_json::to_string(&a).unwrap();
        assert_eq!(ta, serde_json::to_string(&b).unwrap());
        let (_, s) = Scenario::parse(&ta).unwrap();
        assert_eq!(s[2].send_from.port(), 10002);
        assert_eq!(s[2].send_to.port(), 22002);
        assert_eq!(s[2].recv_on.port(), 16002);
        assert_ne!(s[0].ssrc, s[1].ssrc);
        let single = make_scenario(&MakeScenario {
            single: true,
            ..maker()
        })
        .unwrap();
        assert!(single.streams.iter().all(|s| s.send_to.port() == 22000));
        let other_seed = make_scenario(&MakeScenario { seed: 8, ..maker() }).unwrap();
        assert_ne!(a.streams[0].key, other_seed.streams[0].key);
    }

    #[test]
    fn relay_map() {
        let host = "127.0.0.1".parse().unwrap();
        let m = parse_relay_map(
            "# index addr\n1 127.0.0.1:40002\n0 40000\n\n2 [::1]:5 # v6\n",
            host,
        )
        .unwrap();
        assert_eq!(m[0], "127.0.0.1:40000".parse().unwrap());
        assert_eq!(m[1], "127.0.0.1:40002".parse().unwrap());
        assert_eq!(m[2], "[::1]:5".parse().unwrap());
        assert!(parse_relay_map("0 1\n2 3\n", host).is_err());
        assert!(parse_relay_map("0 1\n0 3\n", host).is_err());
        assert!(parse_relay_map("0 nope\n", host).is_err());
        let s = make_scenario(&MakeScenario {
            relay_map: Some(parse_relay_map("0 41000\n1 41004\n2 41008\n", host).unwrap()),
            ..maker()
        })
        .unwrap();
        assert_eq!(s.streams[1].send_to.port(), 41004);
        assert!(make_scenario(&MakeScenario {
            relay_map: Some(vec![]),
            ..maker()
        })
        .is_err());
    }
}
