//! What a SIP message in clear gives away: the media endpoints and codecs of its SDP, SDES keys
//! (RFC 4568 `a=crypto`), NULL SRTP suites, and credentials (RFC 3261 §22 digest, RFC 7617
//! Basic).

use std::net::{IpAddr, SocketAddr};

use base64::Engine;
use voxgate_rtp::CryptoAttribute;
use voxgate_sip::message::{Framing, HeaderKind, ParseLimits, SipMessage};
use voxgate_sip::sdp::SessionDescription;

/// One codec of an `m=` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Codec {
    pub pt: u8,
    pub name: String,
    pub clock_rate: u32,
}

/// An `m=audio` description: where its sender wants to receive media.
#[derive(Debug, Clone)]
pub struct MediaDesc {
    pub call_id: String,
    pub addr: SocketAddr,
    pub proto: String,
    pub codecs: Vec<Codec>,
    /// SDES attributes that parsed (the keys in clear).
    pub crypto: Vec<CryptoAttribute>,
    /// Suite names of `a=crypto` lines that ask for no encryption or no authentication.
    pub null_suites: Vec<String>,
}

impl MediaDesc {
    pub fn secure_profile(&self) -> bool {
        self.proto.contains("SAVP")
    }

    pub fn codec(&self, pt: u8) -> Option<&Codec> {
        self.codecs.iter().find(|c| c.pt == pt)
    }
}

/// Credentials seen in an Authorization or Proxy-Authorization header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    Digest {
        username: String,
        realm: String,
        algorithm: String,
    },
    Basic {
        username: String,
        password_len: usize,
    },
}

/// What one SIP message says.
#[derive(Debug, Default)]
pub struct SipFacts {
    pub call_id: Option<String>,
    pub method: Option<String>,
    pub status: Option<u16>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub media: Vec<MediaDesc>,
    pub credentials: Vec<Credential>,
    pub sdp_error: Option<String>,
}

/// Errors that keep a message from being analysed.
#[derive(Debug, thiserror::Error)]
pub enum SipError {
    #[error("SIP parse error: {0}")]
    Parse(String),
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Parameters of a `Digest a=b, c="d"` credential (RFC 3261 §25.1 digest-response).
fn auth_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        rest = rest.trim_start_matches([',', ' ', '\t']);
        let Some(eq) = rest.find('=') else { break };
        let name = rest[..eq].trim().to_ascii_lowercase();
        rest = rest[eq + 1..].trim_start();
        let value;
        if let Some(r) = rest.strip_prefix('"') {
            let end = r.find('"').unwrap_or(r.len());
            value = r[..end].to_string();
            rest = r.get(end + 1..).unwrap_or("");
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            value = rest[..end].trim().to_string();
            rest = &rest[end..];
        }
        out.push((name, value));
        if out.len() > 32 {
            break;
        }
    }
    out
}

fn credential(value: &str) -> Option<Credential> {
    let value = value.trim();
    let (scheme, rest) = value.split_once([' ', '\t']).unwrap_or((value, ""));
    if scheme.eq_ignore_ascii_case("digest") {
        let p = auth_params(rest);
        let get = |n: &str| {
            p.iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let alg = get("algorithm");
        Some(Credential::Digest {
            username: get("username"),
            realm: get("realm"),
            // RFC 3261: MD5 when absent.
            algorithm: if alg.is_empty() { "MD5".into() } else { alg },
        })
    } else if scheme.eq_ignore_ascii_case("basic") {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(rest.trim())
            .ok()?;
        let s = String::from_utf8_lossy(&raw).into_owned();
        let (user, pass) = s.split_once(':').unwrap_or((&s, ""));
        Some(Credential::Basic {
            username: user.to_string(),
            password_len: pass.chars().count(),
        })
    } else {
        None
    }
}

fn rtpmap(v: &str) -> Option<Codec> {
    // a=rtpmap:<pt> <name>/<rate>[/<channels>]
    let (pt, rest) = v.split_once(' ')?;
    let pt: u8 = pt.trim().parse().ok()?;
    let mut f = rest.trim().split('/');
    let name = f.next()?.to_string();
    let clock_rate = f.next()?.parse().ok()?;
    Some(Codec {
        pt,
        name,
        clock_rate,
    })
}

fn connection(lines: &[voxgate_sip::sdp::Line]) -> Option<IpAddr> {
    lines.iter().filter(|l| l.kind == 'c').find_map(|l| {
        // c=IN IP4 192.0.2.1[/ttl]
        let addr = l.value.split(' ').nth(2)?;
        addr.split('/').next()?.parse().ok()
    })
}

/// Finds the SDP inside a body (plain, or one part of a multipart body).
fn sdp_of(body: &[u8]) -> Option<&[u8]> {
    if body.starts_with(b"v=0") {
        return Some(body);
    }
    let at = body
        .windows(5)
        .position(|w| w == b"\nv=0\r" || w == b"\nv=0\n")?;
    let sdp = &body[at + 1..];
    // A multipart part ends at the next boundary line.
    let end = sdp
        .windows(3)
        .position(|w| w == b"\n--")
        .map_or(sdp.len(), |e| e + 1);
    Some(&sdp[..end])
}

/// Parses one SIP message and extracts what matters to the audit.
pub fn analyse(raw: &[u8], framing: Framing) -> Result<SipFacts, SipError> {
    let msg = SipMessage::parse(raw, framing, &ParseLimits::default())
        .map_err(|e| SipError::Parse(e.to_string()))?;
    let mut f = SipFacts {
        call_id: msg.call_id().map(text),
        method: msg.method().map(str::to_string),
        ..Default::default()
    };
    if let voxgate_sip::message::StartLine::Response { code, .. } = &msg.start {
        f.status = Some(*code);
    }
    f.from = msg.header(HeaderKind::From).map(|h| text(&h.value));
    f.to = msg.header(HeaderKind::To).map(|h| text(&h.value));
    for h in &msg.headers {
        if h.name.eq_ignore_ascii_case(b"authorization")
            || h.name.eq_ignore_ascii_case(b"proxy-authorization")
        {
            if let Some(c) = credential(&text(&h.value)) {
                f.credentials.push(c);
            }
        }
    }
    let Some(sdp) = sdp_of(msg.body) else {
        return Ok(f);
    };
    let sd = match SessionDescription::parse(sdp) {
        Ok(sd) => sd,
        Err(e) => {
            f.sdp_error = Some(e.to_string());
            return Ok(f);
        }
    };
    let session_addr = connection(&sd.session);
    let call_id = f.call_id.clone().unwrap_or_default();
    for m in sd
        .media
        .iter()
        .filter(|m| m.media == "audio" && m.port != 0)
    {
        let Some(ip) = connection(&m.lines).or(session_addr) else {
            continue;
        };
        let mut codecs: Vec<Codec> = m.attributes("rtpmap").filter_map(rtpmap).collect();
        for fmt in &m.formats {
            if let Ok(pt) = fmt.parse::<u8>() {
                if !codecs.iter().any(|c| c.pt == pt) {
                    if let Some(name) = crate::rtp::static_codec_name(pt) {
                        codecs.push(Codec {
                            pt,
                            name: name.to_string(),
                            clock_rate: crate::rtp::static_clock_rate(pt),
                        });
                    }
                }
            }
        }
        let mut crypto = Vec::new();
        let mut null_suites = Vec::new();
        for v in m.attributes("crypto") {
            let suite = v.split_whitespace().nth(1).unwrap_or_default();
            if suite.starts_with("NULL")
                || v.contains("UNENCRYPTED_SRTP")
                || v.contains("UNAUTHENTICATED_SRTP")
            {
                null_suites.push(suite.chars().take(48).collect());
            }
            if let Ok(a) = CryptoAttribute::parse(v) {
                crypto.push(a);
            }
        }
        f.media.push(MediaDesc {
            call_id: call_id.clone(),
            addr: SocketAddr::new(ip, m.port),
            proto: m.proto.clone(),
            codecs,
            crypto,
            null_suites,
        });
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &str = "INVITE sip:bob@b.example SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1\r\n\
From: <sip:alice@a.example>;tag=1\r\n\
To: <sip:bob@b.example>\r\n\
Call-ID: abc@10.0.0.1\r\n\
CSeq: 1 INVITE\r\n\
Max-Forwards: 70\r\n\
Proxy-Authorization: Digest username=\"alice\", realm=\"a.example\", nonce=\"n\", uri=\"sip:bob@b.example\", response=\"0123\"\r\n\
Authorization: Basic YWxpY2U6c2VjcmV0\r\n\
Content-Type: application/sdp\r\n\
Content-Length: LEN\r\n\r\n";

    const SDP: &str = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
m=audio 40000 RTP/SAVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n\
a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n\
a=crypto:2 NULL_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n";

    #[test]
    fn invite_with_sdes_and_credentials() {
        let raw = INVITE.replace("LEN", &SDP.len().to_string()) + SDP;
        let f = analyse(raw.as_bytes(), Framing::Datagram).unwrap();
        assert_eq!(f.call_id.as_deref(), Some("abc@10.0.0.1"));
        assert_eq!(f.media.len(), 1);
        let m = &f.media[0];
        assert_eq!(m.addr, "10.0.0.1:40000".parse().unwrap());
        assert!(m.secure_profile());
        assert_eq!(m.crypto.len(), 1);
        assert_eq!(m.null_suites, vec!["NULL_HMAC_SHA1_80".to_string()]);
        assert_eq!(m.codec(0).unwrap().name, "PCMU");
        assert_eq!(m.codec(101).unwrap().clock_rate, 8000);
        assert_eq!(
            f.credentials,
            vec![
                Credential::Digest {
                    username: "alice".into(),
                    realm: "a.example".into(),
                    algorithm: "MD5".into()
                },
                Credential::Basic {
                    username: "alice".into(),
                    password_len: 6
                }
            ]
        );
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(analyse(b"INVITE \xff\r\n\r\n", Framing::Datagram).is_err());
        assert!(auth_params("a=\"unterminated, b").len() <= 2);
        assert!(credential("Basic !!!").is_none());
    }
}
