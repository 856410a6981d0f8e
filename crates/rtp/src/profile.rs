//! SRTP protection profiles (crypto suites) and their parameters.

use crate::error::{Error, Result};

/// The crypto suites voxgate implements: RFC 3711/RFC 4568 AES-CM with HMAC-SHA1, and RFC 7714
/// AES-GCM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SrtpProfile {
    /// AES-128 counter mode, HMAC-SHA1 80-bit tag (RFC 4568 §6.2.1).
    AesCm128HmacSha1_80,
    /// AES-128 counter mode, HMAC-SHA1 32-bit tag for SRTP, 80-bit for SRTCP (RFC 4568 §6.2.2).
    AesCm128HmacSha1_32,
    /// AES-128 GCM, 16-byte tag (RFC 7714 §14.2).
    AeadAes128Gcm,
    /// AES-256 GCM, 16-byte tag (RFC 7714 §14.2).
    AeadAes256Gcm,
}

impl SrtpProfile {
    /// All supported profiles.
    pub const ALL: [SrtpProfile; 4] = [
        SrtpProfile::AesCm128HmacSha1_80,
        SrtpProfile::AesCm128HmacSha1_32,
        SrtpProfile::AeadAes128Gcm,
        SrtpProfile::AeadAes256Gcm,
    ];

    /// The SDES suite name (RFC 4568 §6.2, RFC 7714 §14.2).
    pub fn name(self) -> &'static str {
        match self {
            SrtpProfile::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            SrtpProfile::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
            SrtpProfile::AeadAes128Gcm => "AEAD_AES_128_GCM",
            SrtpProfile::AeadAes256Gcm => "AEAD_AES_256_GCM",
        }
    }

    /// Looks a suite up by its SDES name.
    pub fn from_name(name: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|p| p.name() == name)
            .ok_or_else(|| Error::UnknownSuite {
                // Suite names are upper case, digits and '_'; anything else (say, a key typed
                // where the suite goes) is not echoed back.
                name: if name.len() <= 48
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
                {
                    name.to_string()
                } else {
                    "<not a suite name>".to_string()
                },
            })
    }

    /// Whether this is an AEAD (RFC 7714) profile.
    pub fn is_aead(self) -> bool {
        matches!(
            self,
            SrtpProfile::AeadAes128Gcm | SrtpProfile::AeadAes256Gcm
        )
    }

    /// Master (and session) encryption key length in bytes.
    pub fn key_len(self) -> usize {
        match self {
            SrtpProfile::AeadAes256Gcm => 32,
            _ => 16,
        }
    }

    /// Master (and session) salt length in bytes: 112 bits for AES-CM, 96 for GCM.
    pub fn salt_len(self) -> usize {
        if self.is_aead() {
            12
        } else {
            14
        }
    }

    /// SRTP authentication tag length in bytes.
    pub fn srtp_tag_len(self) -> usize {
        match self {
            SrtpProfile::AesCm128HmacSha1_80 => 10,
            SrtpProfile::AesCm128HmacSha1_32 => 4,
            _ => 16,
        }
    }

    /// SRTCP authentication tag length in bytes (80 bits for both HMAC profiles).
    pub fn srtcp_tag_len(self) -> usize {
        if self.is_aead() {
            16
        } else {
            10
        }
    }

    /// Maximum master key lifetime for SRTP packets (RFC 3711 §9.2: 2^48; RFC 7714: same).
    pub fn max_srtp_packets(self) -> u64 {
        1 << 48
    }

    /// Maximum master key lifetime for SRTCP packets (2^31).
    pub fn max_srtcp_packets(self) -> u64 {
        1 << 31
    }
}

impl core::fmt::Display for SrtpProfile {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

impl core::str::FromStr for SrtpProfile {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::from_name(s)
    }
}
