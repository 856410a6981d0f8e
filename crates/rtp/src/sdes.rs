//! SDES: the SDP `a=crypto` attribute (RFC 4568 §4, §9.1 grammar; RFC 7714 §14.2 for GCM).
//!
//! ```text
//! a=crypto:<tag> <crypto-suite> <key-params> [<session-params>]
//! key-params = key-param *(";" key-param)
//! key-param  = "inline:" <base64 key||salt> ["|" lifetime] ["|" MKI ":" length]
//! ```
//! Key material is zeroized on drop and never printed by `Debug`.

use base64::alphabet::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::keys::MasterKey;
use crate::profile::SrtpProfile;
use crate::replay::{DEFAULT_REPLAY_WINDOW, MAX_REPLAY_WINDOW};
use crate::srtp::SrtpPolicy;

/// Standard base64; padding optional on input (some peers drop it), always written on output.
const B64: GeneralPurpose = GeneralPurpose::new(
    &STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Most master keys one attribute may carry (libsrtp's limit too).
pub const MAX_KEYS: usize = 16;

/// Longest attribute value accepted (a sane bound; real ones are under 200 bytes).
pub const MAX_CRYPTO_ATTRIBUTE_LEN: usize = 4096;

/// One `inline:` key parameter.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyParam {
    /// `master key || master salt`.
    pub key_salt: Zeroizing<Vec<u8>>,
    /// Master key lifetime in packets, if given (`|2^20` or `|1048576`).
    pub lifetime: Option<u64>,
    /// MKI value and its length in bytes (`|1:4`).
    pub mki: Option<Mki>,
}

impl core::fmt::Debug for KeyParam {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("KeyParam")
            .field("key_salt", &"<redacted>")
            .field("lifetime", &self.lifetime)
            .field("mki", &self.mki)
            .finish()
    }
}

/// An MKI as SDES writes it: a decimal value and a byte length (RFC 4568 §6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mki {
    pub value: u64,
    pub len: u8,
}

impl Mki {
    /// The MKI bytes in the packet: the value, big-endian, in `len` bytes.
    pub fn bytes(&self) -> Vec<u8> {
        let be = self.value.to_be_bytes();
        let len = self.len as usize;
        if len >= 8 {
            let mut v = vec![0u8; len - 8];
            v.extend_from_slice(&be);
            v
        } else {
            be[8 - len..].to_vec()
        }
    }
}

/// SDES session parameters (RFC 4568 §6.3, §6.4). `Debug` hides the FEC key.
#[derive(Clone, PartialEq, Eq)]
pub enum SessionParam {
    /// `KDR=n`: key derivation rate 2^n.
    Kdr(u8),
    UnencryptedSrtp,
    UnencryptedSrtcp,
    UnauthenticatedSrtp,
    /// `FEC_ORDER=...`
    FecOrder(String),
    /// `FEC_KEY=...`
    FecKey(String),
    /// `WSH=n`: window size hint.
    Wsh(u32),
    /// A parameter this crate does not know (kept for error reporting and round trips).
    Other(String),
}

/// The name of a session parameter for error messages: never its value, which may be key
/// material (`FEC_KEY=inline:...`, or a second key separated by a space instead of `;`).
fn param_name(p: &SessionParam) -> String {
    match p {
        SessionParam::Other(s) => {
            let name: String = s
                .split(['=', ':'])
                .next()
                .unwrap_or("")
                .chars()
                .take(32)
                .collect();
            if s.contains(['=', ':']) {
                format!("{name}=<value hidden>")
            } else {
                name
            }
        }
        SessionParam::FecKey(_) => "FEC_KEY=<value hidden>".into(),
        other => other.to_string(),
    }
}

impl core::fmt::Debug for SessionParam {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SessionParam::FecKey(_) => f.write_str("FecKey(<redacted>)"),
            SessionParam::Other(s) if s.contains("inline:") => f.write_str("Other(<redacted>)"),
            other => write!(f, "{other}"),
        }
    }
}

impl core::fmt::Display for SessionParam {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SessionParam::Kdr(n) => write!(f, "KDR={n}"),
            SessionParam::UnencryptedSrtp => f.write_str("UNENCRYPTED_SRTP"),
            SessionParam::UnencryptedSrtcp => f.write_str("UNENCRYPTED_SRTCP"),
            SessionParam::UnauthenticatedSrtp => f.write_str("UNAUTHENTICATED_SRTP"),
            SessionParam::FecOrder(v) => write!(f, "FEC_ORDER={v}"),
            SessionParam::FecKey(v) => write!(f, "FEC_KEY={v}"),
            SessionParam::Wsh(n) => write!(f, "WSH={n}"),
            SessionParam::Other(s) => f.write_str(s),
        }
    }
}

/// A parsed `a=crypto` attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CryptoAttribute {
    /// The tag (1..=999999999); `None` when parsed from a tagless CLI spec.
    pub tag: Option<u32>,
    pub suite: SrtpProfile,
    pub keys: Vec<KeyParam>,
    pub session_params: Vec<SessionParam>,
}

fn syntax(offset: usize, reason: &'static str) -> Error {
    Error::SdesSyntax { offset, reason }
}

/// Splits on ASCII whitespace, keeping each token's byte offset.
fn tokens(s: &str) -> impl Iterator<Item = (usize, &str)> {
    let mut pos = 0;
    core::iter::from_fn(move || {
        let rest = &s[pos..];
        let start = rest.find(|c: char| !c.is_ascii_whitespace())?;
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| c.is_ascii_whitespace())
            .unwrap_or(tail.len());
        let at = pos + start;
        pos = at + end;
        Some((at, &tail[..end]))
    })
}

fn parse_decimal(s: &str, offset: usize, what: &'static str) -> Result<u64> {
    if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(syntax(offset, what));
    }
    s.parse().map_err(|_| syntax(offset, what))
}

fn parse_key_param(s: &str, offset: usize, suite: SrtpProfile) -> Result<KeyParam> {
    let rest = s
        .strip_prefix("inline:")
        .ok_or_else(|| syntax(offset, "key method must be \"inline:\""))?;
    let mut parts = rest.split('|');
    let b64 = parts.next().unwrap_or("");
    let key_salt = Zeroizing::new(B64.decode(b64).map_err(|_| Error::Base64)?);
    let want = suite.key_len() + suite.salt_len();
    if key_salt.len() != want {
        return Err(Error::KeyLength {
            suite: suite.name(),
            got: key_salt.len(),
            want,
        });
    }
    let mut lifetime = None;
    let mut mki = None;
    for part in parts {
        let at = offset;
        if let Some((v, l)) = part.split_once(':') {
            if mki.is_some() {
                return Err(syntax(at, "MKI given twice"));
            }
            let value = parse_decimal(v, at, "MKI value is not a decimal number")?;
            let len = parse_decimal(l, at, "MKI length is not a decimal number")?;
            if !(1..=128).contains(&len) {
                return Err(syntax(at, "MKI length must be 1..=128"));
            }
            if len < 8 && value >> (8 * len) != 0 {
                return Err(syntax(at, "MKI value does not fit its length"));
            }
            mki = Some(Mki {
                value,
                len: len as u8,
            });
        } else {
            if lifetime.is_some() || mki.is_some() {
                return Err(syntax(at, "lifetime must come once, before the MKI"));
            }
            let lt = if let Some(exp) = part.strip_prefix("2^") {
                let e = parse_decimal(exp, at, "lifetime exponent is not a number")?;
                if e > 63 {
                    return Err(syntax(at, "lifetime exponent too large"));
                }
                1u64 << e
            } else {
                parse_decimal(part, at, "lifetime is not a number")?
            };
            if lt == 0 {
                return Err(syntax(at, "lifetime must be positive"));
            }
            lifetime = Some(lt);
        }
    }
    Ok(KeyParam {
        key_salt,
        lifetime,
        mki,
    })
}

fn parse_session_param(s: &str) -> SessionParam {
    let num = |v: &str| v.parse::<u32>().ok();
    match s.split_once('=') {
        Some(("KDR", v)) => num(v).filter(|n| *n <= 24).map_or_else(
            || SessionParam::Other(s.into()),
            |n| SessionParam::Kdr(n as u8),
        ),
        Some(("WSH", v)) => num(v).map_or_else(|| SessionParam::Other(s.into()), SessionParam::Wsh),
        Some(("FEC_ORDER", v)) => SessionParam::FecOrder(v.into()),
        Some(("FEC_KEY", v)) => SessionParam::FecKey(v.into()),
        _ => match s {
            "UNENCRYPTED_SRTP" => SessionParam::UnencryptedSrtp,
            "UNENCRYPTED_SRTCP" => SessionParam::UnencryptedSrtcp,
            "UNAUTHENTICATED_SRTP" => SessionParam::UnauthenticatedSrtp,
            _ => SessionParam::Other(s.into()),
        },
    }
}

impl CryptoAttribute {
    /// Parses an attribute. Accepts the full SDP line (`a=crypto:1 ...`), the attribute value
    /// (`1 AES_CM_128_HMAC_SHA1_80 inline:...`) or a tagless spec (`AES_CM_128_HMAC_SHA1_80
    /// inline:...`, as the CLI takes it). Unknown suites and malformed keys are errors; session
    /// parameters are parsed, and [`CryptoAttribute::to_policy`] rejects the unsupported ones.
    pub fn parse(input: &str) -> Result<Self> {
        // Cheap guard first; the exact limit applies to the canonical form below, so that
        // whatever parses also parses again after formatting.
        if input.len() > 2 * MAX_CRYPTO_ATTRIBUTE_LEN {
            return Err(syntax(MAX_CRYPTO_ATTRIBUTE_LEN, "attribute too long"));
        }
        let mut s = input.trim_end_matches(['\r', '\n']);
        let mut base = 0;
        for prefix in ["a=crypto:", "crypto:"] {
            if let Some(rest) = s.strip_prefix(prefix) {
                base = prefix.len();
                s = rest;
                break;
            }
        }
        let mut toks = tokens(s).map(|(o, t)| (o + base, t)).peekable();
        let (o, first) = toks.next().ok_or_else(|| syntax(base, "empty attribute"))?;
        let tag = if first.bytes().all(|b| b.is_ascii_digit()) {
            let t = parse_decimal(first, o, "tag is not a number")?;
            if !(1..=999_999_999).contains(&t) {
                return Err(syntax(o, "tag must be 1..=999999999"));
            }
            Some(t as u32)
        } else {
            None
        };
        let (so, suite_name) = if tag.is_some() {
            toks.next()
                .ok_or_else(|| syntax(o + first.len(), "missing crypto suite"))?
        } else {
            (o, first)
        };
        if suite_name.starts_with("inline:") {
            return Err(syntax(so, "missing crypto suite"));
        }
        let suite = SrtpProfile::from_name(suite_name)?;
        let (ko, key_params) = toks
            .next()
            .ok_or_else(|| syntax(so + suite_name.len(), "missing key parameters"))?;
        let mut keys = Vec::new();
        let mut at = ko;
        for kp in key_params.split(';') {
            if keys.len() == MAX_KEYS {
                return Err(syntax(at, "more than 16 keys in one attribute"));
            }
            keys.push(parse_key_param(kp, at, suite)?);
            at += kp.len() + 1;
        }
        // RFC 4568 §6.1: with several keys, every key needs an MKI of one common length.
        if keys.len() > 1 {
            let lens: Vec<_> = keys.iter().map(|k| k.mki.map(|m| m.len)).collect();
            if lens.iter().any(Option::is_none) || lens.windows(2).any(|w| w[0] != w[1]) {
                return Err(syntax(ko, "several keys need MKIs of one length"));
            }
        }
        let session_params = toks.map(|(_, t)| parse_session_param(t)).collect();
        let attr = CryptoAttribute {
            tag,
            suite,
            keys,
            session_params,
        };
        if attr.to_string().len() > MAX_CRYPTO_ATTRIBUTE_LEN {
            return Err(syntax(MAX_CRYPTO_ATTRIBUTE_LEN, "attribute too long"));
        }
        Ok(attr)
    }

    /// A fresh attribute with one key and no options.
    pub fn new(tag: u32, suite: SrtpProfile, key_salt: &[u8]) -> Self {
        CryptoAttribute {
            tag: Some(tag),
            suite,
            keys: vec![KeyParam {
                key_salt: Zeroizing::new(key_salt.to_vec()),
                lifetime: None,
                mki: None,
            }],
            session_params: vec![],
        }
    }

    /// The master keys this attribute carries.
    pub fn master_keys(&self) -> Result<Vec<MasterKey>> {
        self.keys
            .iter()
            .map(|k| {
                let mut mk = MasterKey::from_key_salt(self.suite, &k.key_salt)?;
                if let Some(m) = k.mki {
                    mk = mk.with_mki(&m.bytes());
                }
                if let Some(lt) = k.lifetime {
                    mk = mk.with_lifetime(lt);
                }
                Ok(mk)
            })
            .collect()
    }

    /// Builds an SRTP policy. Rejects session parameters voxgate does not implement (KDR other
    /// than 0, unencrypted or unauthenticated SRTP/SRTCP, FEC, unknown ones) with
    /// [`Error::UnsupportedSessionParam`]; a window size hint sets the replay window.
    pub fn to_policy(&self) -> Result<SrtpPolicy> {
        let mut window = DEFAULT_REPLAY_WINDOW;
        for p in &self.session_params {
            match p {
                SessionParam::Kdr(0) => {}
                SessionParam::Wsh(n) => {
                    // RFC 4568 §6.3.7: the minimum is 64; larger hints are capped, not refused.
                    if *n < 64 {
                        return Err(Error::UnsupportedSessionParam {
                            param: p.to_string(),
                        });
                    }
                    // (WSH=n carries no secret: its text is safe to show.)
                    window = (*n as usize).min(MAX_REPLAY_WINDOW);
                }
                other => {
                    return Err(Error::UnsupportedSessionParam {
                        param: param_name(other),
                    })
                }
            }
        }
        let mut keys = self.master_keys()?.into_iter();
        let first = keys.next().ok_or(Error::InvalidPolicy {
            reason: "no master key",
        })?;
        let mut policy = SrtpPolicy::new(first).with_replay_window(window);
        for k in keys {
            policy = policy.with_key(k);
        }
        Ok(policy)
    }
}

impl core::fmt::Display for CryptoAttribute {
    /// Formats the attribute value (without `a=crypto:`); tagless specs print without a tag.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        if let Some(t) = self.tag {
            write!(f, "{t} ")?;
        }
        write!(f, "{} ", self.suite)?;
        for (i, k) in self.keys.iter().enumerate() {
            if i > 0 {
                f.write_str(";")?;
            }
            let b64 = Zeroizing::new(B64.encode(&*k.key_salt));
            write!(f, "inline:{}", &*b64)?;
            if let Some(lt) = k.lifetime {
                if lt.is_power_of_two() {
                    write!(f, "|2^{}", lt.trailing_zeros())?;
                } else {
                    write!(f, "|{lt}")?;
                }
            }
            if let Some(m) = k.mki {
                write!(f, "|{}:{}", m.value, m.len)?;
            }
        }
        for p in &self.session_params {
            write!(f, " {p}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 4568 §4 example.
    const RFC4568_EXAMPLE: &str =
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:4";

    #[test]
    fn rfc4568_example_parses_and_round_trips() {
        let a = CryptoAttribute::parse(RFC4568_EXAMPLE).unwrap();
        assert_eq!(a.tag, Some(1));
        assert_eq!(a.suite, SrtpProfile::AesCm128HmacSha1_80);
        assert_eq!(a.keys.len(), 1);
        assert_eq!(a.keys[0].key_salt.len(), 30);
        assert_eq!(a.keys[0].lifetime, Some(1 << 20));
        assert_eq!(a.keys[0].mki, Some(Mki { value: 1, len: 4 }));
        assert_eq!(a.keys[0].mki.unwrap().bytes(), vec![0, 0, 0, 1]);
        assert_eq!(format!("a=crypto:{a}"), RFC4568_EXAMPLE);
        let p = a.to_policy().unwrap();
        assert_eq!(p.keys[0].mki(), Some(&[0u8, 0, 0, 1][..]));
    }

    #[test]
    fn several_keys_and_session_params() {
        let s = "2 AES_CM_128_HMAC_SHA1_32 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:4;inline:QUJjZGVmMTIzNDU2Nzg5QUJDREUwMTIzNDU2Nzg5|2^20|2:4 WSH=256 KDR=0";
        let a = CryptoAttribute::parse(s).unwrap();
        assert_eq!(a.keys.len(), 2);
        assert_eq!(
            a.session_params,
            vec![SessionParam::Wsh(256), SessionParam::Kdr(0)]
        );
        let p = a.to_policy().unwrap();
        assert_eq!(p.replay_window, 256);
        assert_eq!(p.keys.len(), 2);
        assert_eq!(a.to_string(), s);
    }

    #[test]
    fn tagless_cli_spec_and_gcm() {
        let spec = format!("AEAD_AES_256_GCM inline:{}", B64.encode([7u8; 44]));
        let a = CryptoAttribute::parse(&spec).unwrap();
        assert_eq!(a.to_string(), spec);
        assert_eq!(a.tag, None);
        assert_eq!(a.suite, SrtpProfile::AeadAes256Gcm);
        assert_eq!(a.keys[0].key_salt.len(), 44);
        // unpadded base64 is accepted too
        let padded = B64.encode([7u8; 28]);
        assert!(padded.ends_with("=="));
        let spec = format!("1 AEAD_AES_128_GCM inline:{}", padded.trim_end_matches('='));
        let a = CryptoAttribute::parse(&spec).unwrap();
        assert_eq!(&*a.keys[0].key_salt, &[7u8; 28]);
        // a key of the wrong suite's length is a typed error
        let spec = format!("1 AEAD_AES_128_GCM inline:{}", B64.encode([7u8; 30]));
        assert!(matches!(
            CryptoAttribute::parse(&spec),
            Err(Error::KeyLength {
                got: 30,
                want: 28,
                ..
            })
        ));
    }

    #[test]
    fn unsupported_session_params_are_rejected_clearly() {
        for (p, shown) in [
            ("KDR=1", "KDR=1"),
            ("UNENCRYPTED_SRTP", "UNENCRYPTED_SRTP"),
            ("UNENCRYPTED_SRTCP", "UNENCRYPTED_SRTCP"),
            ("UNAUTHENTICATED_SRTP", "UNAUTHENTICATED_SRTP"),
            ("FEC_ORDER=FEC_SRTP", "FEC_ORDER=FEC_SRTP"),
            ("FOO=1", "FOO=<value hidden>"),
            ("WSH=10", "WSH=10"),
            (
                "FEC_KEY=inline:QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVowMTIz",
                "FEC_KEY=<value hidden>",
            ),
            // a second key after a space instead of ';'
            (
                "inline:QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVowMTIz",
                "inline=<value hidden>",
            ),
        ] {
            let s = format!(
                "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR {p}"
            );
            let a = CryptoAttribute::parse(&s).unwrap();
            match a.to_policy() {
                Err(e @ Error::UnsupportedSessionParam { .. }) => {
                    let msg = e.to_string();
                    assert!(msg.contains(shown), "{p}: {msg}");
                    assert!(!msg.contains("QUJDREVG"), "key material in error: {msg}");
                }
                other => panic!("{p}: {other:?}"),
            }
        }
        let e = CryptoAttribute::parse("QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVowMTIz inline:x")
            .unwrap_err();
        assert!(!e.to_string().contains("QUJDREVG"), "{e}");
    }

    #[test]
    fn malformed_attributes_are_typed_errors() {
        let bad = [
            ("", "empty"),
            ("a=crypto:", "empty"),
            ("1", "missing suite"),
            ("1 AES_CM_128_HMAC_SHA1_80", "missing key"),
            ("1 AES_CM_999 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR", "suite"),
            ("1 AES_CM_128_HMAC_SHA1_80 inline:!!!notbase64!!!", "base64"),
            ("1 AES_CM_128_HMAC_SHA1_80 inline:AAAA", "key length"),
            ("1 AES_CM_128_HMAC_SHA1_80 uri:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR", "method"),
            ("0 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR", "tag"),
            ("1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^99", "lifetime"),
            ("1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|1:0", "mki len"),
            ("1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|256:1", "mki fit"),
            ("1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR;inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR", "mki needed"),
        ];
        let many: Vec<String> = (0..17)
            .map(|i| format!("inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|{i}:1"))
            .collect();
        let s = format!("1 AES_CM_128_HMAC_SHA1_80 {}", many.join(";"));
        assert!(matches!(
            CryptoAttribute::parse(&s),
            Err(Error::SdesSyntax { .. })
        ));
        assert!(CryptoAttribute::parse(
            &s.replace(";inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|16:1", "")
        )
        .is_ok());
        for (s, what) in bad {
            assert!(CryptoAttribute::parse(s).is_err(), "{what}: {s}");
        }
        assert_eq!(
            CryptoAttribute::parse("1 AES_CM_128_HMAC_SHA1_80 inline:!!!!").unwrap_err(),
            Error::Base64
        );
        assert!(matches!(
            CryptoAttribute::parse("1 FOO inline:x").unwrap_err(),
            Error::UnknownSuite { .. }
        ));
    }

    #[test]
    fn debug_does_not_leak_keys() {
        let a = CryptoAttribute::parse(RFC4568_EXAMPLE).unwrap();
        let d = format!("{a:?}");
        assert!(!d.contains("PS1uQ") && d.contains("redacted"), "{d}");
        let fec =
            format!("{RFC4568_EXAMPLE} FEC_KEY=inline:QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVowMTIz");
        let d = format!("{:?}", CryptoAttribute::parse(&fec).unwrap());
        assert!(
            !d.contains("QUJDREVG") && d.contains("FecKey(<redacted>)"),
            "{d}"
        );
    }
}
