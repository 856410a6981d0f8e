//! SDP (RFC 4566) and offer/answer (RFC 3264) with SDES keys (RFC 4568) under an encryption
//! policy that never falls back silently:
//!
//! - `Mandatory`: offer `RTP/SAVP` with `a=crypto` only; a peer without SRTP gets 488, and an
//!   answer without a usable key is an error for the caller to end the call on;
//! - `Optional`: offer SRTP as `RTP/AVP` with `a=crypto` (SDES best effort, as baresip's
//!   `mediaenc=srtp` does); a plain-RTP answer is accepted but the result says `Unencrypted`,
//!   for the caller to log and mark the call;
//! - `Off`: plain RTP; an offer that insists on `RTP/SAVP` gets 488.
//!
//! Only the first audio stream is negotiated; other streams are refused with port 0.

use std::net::IpAddr;

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use voxgate_rtp::{CryptoAttribute, SrtpProfile};

/// Errors of SDP parsing and offer/answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SdpError {
    #[error("malformed SDP at line {line}: {reason}")]
    Syntax { line: usize, reason: &'static str },
    /// Answer 488 Not Acceptable Here.
    #[error("not acceptable: {reason}")]
    NotAcceptable { reason: &'static str },
    /// The peer's answer breaks the policy or the offer (end the call).
    #[error("unacceptable answer: {reason}")]
    BadAnswer { reason: &'static str },
    #[error("random number generator failed")]
    Random,
}

impl SdpError {
    /// The SIP status for answering an offer that failed this way.
    pub fn status(&self) -> u16 {
        match self {
            SdpError::NotAcceptable { .. } => 488,
            _ => 400,
        }
    }
}

/// One `x=value` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub kind: char,
    pub value: String,
}

/// A media description (`m=` and the lines under it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media {
    pub media: String,
    pub port: u16,
    pub proto: String,
    pub formats: Vec<String>,
    pub lines: Vec<Line>,
}

impl Media {
    /// Values of the `a=` lines with this name (`a=name:value` or `a=name`).
    pub fn attributes<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.lines
            .iter()
            .filter(|l| l.kind == 'a')
            .filter_map(move |l| {
                let (n, v) = l.value.split_once(':').unwrap_or((&l.value, ""));
                (n == name).then_some(v)
            })
    }
}

/// A session description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDescription {
    pub session: Vec<Line>,
    pub media: Vec<Media>,
}

/// Longest SDP accepted.
pub const MAX_SDP: usize = 65_535;

impl SessionDescription {
    pub fn parse(body: &[u8]) -> Result<Self, SdpError> {
        if body.len() > MAX_SDP {
            return Err(SdpError::Syntax {
                line: 0,
                reason: "too large",
            });
        }
        let text = std::str::from_utf8(body).map_err(|_| SdpError::Syntax {
            line: 0,
            reason: "not UTF-8",
        })?;
        let mut sd = SessionDescription {
            session: Vec::new(),
            media: Vec::new(),
        };
        for (i, raw) in text.split('\n').enumerate() {
            let line = raw.strip_suffix('\r').unwrap_or(raw);
            if line.is_empty() {
                continue;
            }
            let bad = |reason| SdpError::Syntax {
                line: i + 1,
                reason,
            };
            let mut chars = line.chars();
            let kind = chars.next().ok_or(bad("empty"))?;
            if !kind.is_ascii_lowercase() || chars.next() != Some('=') {
                return Err(bad("expected x=value"));
            }
            if line.chars().any(|c| c.is_control() && c != '\t') {
                return Err(bad("control character"));
            }
            let value = line[2..].to_string();
            if i == 0 && (kind != 'v' || value != "0") {
                return Err(bad("must start with v=0"));
            }
            if kind == 'm' {
                let mut f = value.split(' ');
                let media = f.next().unwrap_or_default().to_string();
                let port = f
                    .next()
                    .and_then(|p| p.split('/').next())
                    .and_then(|p| p.parse::<u16>().ok())
                    .ok_or(bad("bad port"))?;
                let proto = f.next().ok_or(bad("missing proto"))?.to_string();
                let formats: Vec<String> = f.filter(|s| !s.is_empty()).map(String::from).collect();
                if media.is_empty() || formats.is_empty() {
                    return Err(bad("bad m= line"));
                }
                sd.media.push(Media {
                    media,
                    port,
                    proto,
                    formats,
                    lines: Vec::new(),
                });
            } else if let Some(m) = sd.media.last_mut() {
                m.lines.push(Line { kind, value });
            } else {
                sd.session.push(Line { kind, value });
            }
        }
        if sd.session.first().map(|l| (l.kind, l.value.as_str())) != Some(('v', "0")) {
            return Err(SdpError::Syntax {
                line: 1,
                reason: "must start with v=0",
            });
        }
        Ok(sd)
    }

    /// The description as bytes, CRLF line ends.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut s = String::new();
        for l in &self.session {
            s.push_str(&format!("{}={}\r\n", l.kind, l.value));
        }
        for m in &self.media {
            s.push_str(&format!(
                "m={} {} {} {}\r\n",
                m.media,
                m.port,
                m.proto,
                m.formats.join(" ")
            ));
            for l in &m.lines {
                s.push_str(&format!("{}={}\r\n", l.kind, l.value));
            }
        }
        s.into_bytes()
    }
}

/// The encryption policy of a domain or account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncryptionPolicy {
    Mandatory,
    Optional,
    Off,
}

/// What this side offers or answers with.
#[derive(Debug, Clone)]
pub struct LocalMedia {
    pub address: IpAddr,
    pub port: u16,
    /// Payload types with their rtpmap (`0`, "PCMU/8000").
    pub formats: Vec<(u8, String)>,
    /// SRTP suites in order of preference.
    pub suites: Vec<SrtpProfile>,
}

/// The negotiated media security of a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Security {
    /// SRTP: `send` is our key (we protect with it), `receive` the peer's.
    Srtp {
        suite: SrtpProfile,
        send: CryptoAttribute,
        receive: CryptoAttribute,
    },
    /// Plain RTP (only under `Optional` or `Off`): the caller must log and mark the call.
    Unencrypted,
}

fn fresh_key(suite: SrtpProfile, tag: u32) -> Result<CryptoAttribute, SdpError> {
    let mut k = zeroize::Zeroizing::new(vec![0u8; suite.key_len() + suite.salt_len()]);
    SystemRandom::new()
        .fill(&mut k)
        .map_err(|_| SdpError::Random)?;
    Ok(CryptoAttribute::new(tag, suite, &k))
}

fn session_lines(local: &LocalMedia) -> Vec<Line> {
    let ip = match local.address {
        IpAddr::V4(a) => format!("IN IP4 {a}"),
        IpAddr::V6(a) => format!("IN IP6 {a}"),
    };
    vec![
        Line {
            kind: 'v',
            value: "0".into(),
        },
        Line {
            kind: 'o',
            value: format!("voxgate 1 1 {ip}"),
        },
        Line {
            kind: 's',
            value: "-".into(),
        },
        Line {
            kind: 'c',
            value: ip,
        },
        Line {
            kind: 't',
            value: "0 0".into(),
        },
    ]
}

/// An offer under `policy`; returns it and the keys offered (one per suite, tags 1..).
pub fn create_offer(
    policy: EncryptionPolicy,
    local: &LocalMedia,
) -> Result<(SessionDescription, Vec<CryptoAttribute>), SdpError> {
    let mut keys = Vec::new();
    let proto = match policy {
        EncryptionPolicy::Mandatory => "RTP/SAVP",
        EncryptionPolicy::Optional | EncryptionPolicy::Off => "RTP/AVP",
    };
    let mut lines: Vec<Line> = local
        .formats
        .iter()
        .map(|(pt, map)| Line {
            kind: 'a',
            value: format!("rtpmap:{pt} {map}"),
        })
        .collect();
    if policy != EncryptionPolicy::Off {
        for (i, suite) in local.suites.iter().enumerate() {
            let k = fresh_key(*suite, i as u32 + 1)?;
            lines.push(Line {
                kind: 'a',
                value: format!("crypto:{k}"),
            });
            keys.push(k);
        }
    }
    let media = Media {
        media: "audio".into(),
        port: local.port,
        proto: proto.into(),
        formats: local.formats.iter().map(|(pt, _)| pt.to_string()).collect(),
        lines,
    };
    Ok((
        SessionDescription {
            session: session_lines(local),
            media: vec![media],
        },
        keys,
    ))
}

/// The usable `a=crypto` lines of a media description, in the peer's order.
fn offered_keys(m: &Media) -> Vec<CryptoAttribute> {
    m.attributes("crypto")
        .filter_map(|v| CryptoAttribute::parse(v).ok())
        // Unsupported session parameters make a line unusable, not the offer.
        .filter(|a| a.tag.is_some() && a.to_policy().is_ok())
        .collect()
}

/// Answers an offer (RFC 3264 §6) under `policy`.
pub fn answer_offer(
    offer: &SessionDescription,
    policy: EncryptionPolicy,
    local: &LocalMedia,
) -> Result<(SessionDescription, Security), SdpError> {
    let na = |reason| SdpError::NotAcceptable { reason };
    let first_audio = offer
        .media
        .iter()
        .position(|m| m.media == "audio" && m.port != 0)
        .ok_or(na("no audio stream"))?;
    let m = &offer.media[first_audio];
    let savp = match m.proto.as_str() {
        "RTP/SAVP" => true,
        "RTP/AVP" => false,
        _ => return Err(na("unsupported transport protocol")),
    };
    let formats: Vec<(u8, String)> = local
        .formats
        .iter()
        .filter(|(pt, _)| m.formats.iter().any(|f| f == &pt.to_string()))
        .cloned()
        .collect();
    if formats.is_empty() {
        return Err(na("no common codec"));
    }
    let offered = offered_keys(m);
    // Our preference among what was offered.
    let chosen = local
        .suites
        .iter()
        .find_map(|s| offered.iter().find(|k| k.suite == *s))
        .cloned();
    let security = match (policy, chosen, savp) {
        (EncryptionPolicy::Off, _, true) => return Err(na("SRTP required by the offer, off here")),
        (EncryptionPolicy::Off, _, false) => Security::Unencrypted,
        (_, Some(remote), _) => Security::Srtp {
            suite: remote.suite,
            send: fresh_key(remote.suite, remote.tag.unwrap_or(1))?,
            receive: remote,
        },
        (EncryptionPolicy::Mandatory, None, _) => return Err(na("no usable SRTP key offered")),
        (EncryptionPolicy::Optional, None, true) => {
            return Err(na("RTP/SAVP offered without a usable key"))
        }
        (EncryptionPolicy::Optional, None, false) => Security::Unencrypted,
    };
    let mut lines: Vec<Line> = formats
        .iter()
        .map(|(pt, map)| Line {
            kind: 'a',
            value: format!("rtpmap:{pt} {map}"),
        })
        .collect();
    if let Security::Srtp { send, .. } = &security {
        lines.push(Line {
            kind: 'a',
            value: format!("crypto:{send}"),
        });
    }
    let mut media: Vec<Media> = offer
        .media
        .iter()
        .map(|o| Media {
            media: o.media.clone(),
            port: 0,
            proto: o.proto.clone(),
            formats: o.formats.clone(),
            lines: vec![],
        })
        .collect();
    media[first_audio] = Media {
        media: "audio".into(),
        port: local.port,
        proto: m.proto.clone(),
        formats: formats.iter().map(|(pt, _)| pt.to_string()).collect(),
        lines,
    };
    Ok((
        SessionDescription {
            session: session_lines(local),
            media,
        },
        security,
    ))
}

/// Checks the peer's answer to our offer (made with [`create_offer`] and `offered` keys).
pub fn accept_answer(
    policy: EncryptionPolicy,
    offered: &[CryptoAttribute],
    answer: &SessionDescription,
) -> Result<Security, SdpError> {
    let bad = |reason| SdpError::BadAnswer { reason };
    let m = answer
        .media
        .iter()
        .find(|m| m.media == "audio" && m.port != 0)
        .ok_or(bad("audio refused"))?;
    let answered: Vec<CryptoAttribute> = m
        .attributes("crypto")
        .filter_map(|v| CryptoAttribute::parse(v).ok())
        .collect();
    match (answered.as_slice(), policy) {
        ([a], EncryptionPolicy::Mandatory | EncryptionPolicy::Optional) => {
            a.to_policy().map_err(|_| bad("answer key unusable"))?;
            let ours = offered
                .iter()
                .find(|k| k.tag == a.tag)
                .ok_or(bad("answer crypto tag was not offered"))?;
            if ours.suite != a.suite {
                return Err(bad("answer changes the suite of the tag"));
            }
            Ok(Security::Srtp {
                suite: a.suite,
                send: ours.clone(),
                receive: a.clone(),
            })
        }
        ([], EncryptionPolicy::Mandatory) => {
            Err(bad("no SRTP key in the answer under a mandatory policy"))
        }
        ([], _) => Ok(Security::Unencrypted),
        (_, EncryptionPolicy::Off) => Err(bad("SRTP answered to a plain offer")),
        _ => Err(bad("several keys in the answer")),
    }
}
