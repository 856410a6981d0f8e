//! Master keys and the SRTP key derivation function (RFC 3711 §4.3, RFC 7714 §11).

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, AES_256_GCM};
use aws_lc_rs::cipher::{EncryptingKey, EncryptionContext, UnboundCipherKey, AES_128, AES_256};
use zeroize::{Zeroize, Zeroizing};

use crate::error::{Error, Result};
use crate::gcm::AesNiGcm;
use crate::hmac_sha1::HmacSha1;
use crate::profile::SrtpProfile;

/// A master key, its master salt, and optionally its MKI and lifetime (RFC 3711 §8.1, RFC 4568
/// §6.1). Zeroized on drop; its `Debug` output never shows the key.
#[derive(Clone)]
pub struct MasterKey {
    profile: SrtpProfile,
    key: Zeroizing<Vec<u8>>,
    salt: Zeroizing<Vec<u8>>,
    mki: Option<Box<[u8]>>,
    lifetime: Option<u64>,
}

impl core::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MasterKey")
            .field("profile", &self.profile)
            .field("key", &"<redacted>")
            .field("mki", &self.mki)
            .field("lifetime", &self.lifetime)
            .finish()
    }
}

impl MasterKey {
    /// A master key and salt for `profile`; checks both lengths.
    pub fn new(profile: SrtpProfile, key: &[u8], salt: &[u8]) -> Result<Self> {
        if key.len() != profile.key_len() {
            return Err(Error::KeyLength {
                suite: profile.name(),
                got: key.len(),
                want: profile.key_len(),
            });
        }
        if salt.len() != profile.salt_len() {
            return Err(Error::KeyLength {
                suite: profile.name(),
                got: salt.len(),
                want: profile.salt_len(),
            });
        }
        Ok(MasterKey {
            profile,
            key: Zeroizing::new(key.to_vec()),
            salt: Zeroizing::new(salt.to_vec()),
            mki: None,
            lifetime: None,
        })
    }

    /// From the concatenated `key || salt`, as SDES carries it.
    pub fn from_key_salt(profile: SrtpProfile, key_salt: &[u8]) -> Result<Self> {
        let want = profile.key_len() + profile.salt_len();
        if key_salt.len() != want {
            return Err(Error::KeyLength {
                suite: profile.name(),
                got: key_salt.len(),
                want,
            });
        }
        let (k, s) = key_salt.split_at(profile.key_len());
        Self::new(profile, k, s)
    }

    /// Attaches a Master Key Identifier (1..=128 bytes in RFC 4568).
    pub fn with_mki(mut self, mki: &[u8]) -> Self {
        self.mki = Some(mki.into());
        self
    }

    /// Limits the key to `packets` SRTP (and, separately, SRTCP) packets.
    pub fn with_lifetime(mut self, packets: u64) -> Self {
        self.lifetime = Some(packets);
        self
    }

    pub fn profile(&self) -> SrtpProfile {
        self.profile
    }
    pub fn mki(&self) -> Option<&[u8]> {
        self.mki.as_deref()
    }
    pub fn lifetime(&self) -> Option<u64> {
        self.lifetime
    }
    /// `key || salt`; the caller must keep it secret (it is zeroized on drop).
    pub fn key_salt(&self) -> Zeroizing<Vec<u8>> {
        let mut v = Zeroizing::new(Vec::with_capacity(self.key.len() + self.salt.len()));
        v.extend_from_slice(&self.key);
        v.extend_from_slice(&self.salt);
        v
    }
}

/// SRTP KDF labels (RFC 3711 §4.3.1, §4.3.2).
#[derive(Debug, Clone, Copy)]
#[repr(u8)]
pub(crate) enum Label {
    RtpEncryption = 0x00,
    RtpAuth = 0x01,
    RtpSalt = 0x02,
    RtcpEncryption = 0x03,
    RtcpAuth = 0x04,
    RtcpSalt = 0x05,
}

/// The AES-CM PRF keyed by a master key (RFC 3711 §4.3.3). Key derivation rate is 0 (the only
/// rate SDES peers use in practice, and the only one libsrtp implements), so r = 0.
pub(crate) struct Kdf {
    key: EncryptingKey,
    salt: Zeroizing<[u8; 14]>,
}

impl Kdf {
    pub(crate) fn new(master: &MasterKey) -> Result<Self> {
        let alg = if master.key.len() == 32 {
            &AES_256
        } else {
            &AES_128
        };
        let key = UnboundCipherKey::new(alg, &master.key).map_err(|_| Error::Crypto)?;
        let key = EncryptingKey::ctr(key).map_err(|_| Error::Crypto)?;
        // A 96-bit GCM master salt is padded with zeros to 112 bits (RFC 7714 §11).
        let mut salt = Zeroizing::new([0u8; 14]);
        salt[..master.salt.len()].copy_from_slice(&master.salt);
        Ok(Kdf { key, salt })
    }

    /// Fills `out` with the PRF output for `label` (RFC 3711 §4.3.1: x = key_id XOR master_salt,
    /// key_id = label || r, keystream from IV = x * 2^16).
    pub(crate) fn derive(&self, label: Label, out: &mut [u8]) -> Result<()> {
        let mut iv = [0u8; 16];
        iv[..14].copy_from_slice(&*self.salt);
        iv[7] ^= label as u8;
        out.fill(0);
        let ctx = EncryptionContext::Iv128(iv.into());
        self.key
            .less_safe_encrypt(out, ctx)
            .map_err(|_| Error::Crypto)?;
        iv.zeroize();
        Ok(())
    }
}

/// Session keys of one direction kind (SRTP or SRTCP) for AES-CM + HMAC-SHA1.
pub(crate) struct CmKeys {
    pub(crate) cipher: EncryptingKey,
    /// The same AES key on AES-NI (see `gcm.rs`), when the CPU has it: AES-CM is CTR mode, and
    /// this saves aws-lc-rs's per-call overhead on short packets.
    pub(crate) fast: Option<AesNiGcm>,
    pub(crate) salt: Zeroizing<[u8; 14]>,
    pub(crate) auth: HmacSha1,
}

/// Session keys of one direction kind for AES-GCM.
pub(crate) struct GcmKeys {
    pub(crate) aead: GcmCipher,
    pub(crate) salt: Zeroizing<[u8; 12]>,
}

/// AES-GCM: our short-packet implementation where the CPU has AES-NI and PCLMULQDQ (see
/// `gcm.rs` for why), aws-lc-rs elsewhere.
pub(crate) enum GcmCipher {
    AesNi(Box<AesNiGcm>),
    AwsLc(LessSafeKey),
}

impl GcmCipher {
    pub(crate) fn new(key: &[u8]) -> Result<Self> {
        match AesNiGcm::new(key) {
            Some(k) => Ok(GcmCipher::AesNi(Box::new(k))),
            None => Self::new_aws_lc(key),
        }
    }

    pub(crate) fn new_aws_lc(key: &[u8]) -> Result<Self> {
        let alg = if key.len() == 32 {
            &AES_256_GCM
        } else {
            &AES_128_GCM
        };
        Ok(GcmCipher::AwsLc(LessSafeKey::new(
            UnboundKey::new(alg, key).map_err(|_| Error::Crypto)?,
        )))
    }

    /// Encrypts `data` in place; returns the 16-byte tag.
    #[inline]
    pub(crate) fn seal(&self, iv: [u8; 12], aad: &[u8], data: &mut [u8]) -> Result<[u8; 16]> {
        match self {
            GcmCipher::AesNi(k) => Ok(k.seal(&iv, aad, data)),
            GcmCipher::AwsLc(k) => {
                let tag = k
                    .seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(iv),
                        Aad::from(aad),
                        data,
                    )
                    .map_err(|_| Error::Crypto)?;
                let mut out = [0u8; 16];
                out.copy_from_slice(tag.as_ref());
                Ok(out)
            }
        }
    }

    /// Verifies and decrypts `ct_and_tag` (ciphertext followed by the 16-byte tag) in place.
    /// On failure the ciphertext is left as it was (AES-NI path) or zeroed (aws-lc path),
    /// never exposed as unauthenticated plaintext.
    #[inline]
    pub(crate) fn open(&self, iv: [u8; 12], aad: &[u8], ct_and_tag: &mut [u8]) -> Result<()> {
        let n = ct_and_tag
            .len()
            .checked_sub(16)
            .ok_or(Error::AuthTagMismatch)?;
        match self {
            GcmCipher::AesNi(k) => {
                let (ct, tag) = ct_and_tag.split_at_mut(n);
                if k.open(&iv, aad, ct, tag) {
                    Ok(())
                } else {
                    Err(Error::AuthTagMismatch)
                }
            }
            GcmCipher::AwsLc(k) => k
                .open_in_place(Nonce::assume_unique_for_key(iv), Aad::from(aad), ct_and_tag)
                .map(|_| ())
                .map_err(|_| Error::AuthTagMismatch),
        }
    }
}

pub(crate) enum SessionCrypto {
    // Boxed: the HMAC and AES key schedules make it large, and GCM sessions should not pay for it.
    Cm(Box<CmKeys>),
    Gcm(GcmKeys),
}

/// Raw session keys of one kind (SRTP or SRTCP), bypassing the KDF. Only for known-answer tests
/// whose vectors start from session keys (RFC 7714 §16, §17); real sessions derive them.
#[derive(Clone)]
pub struct RawSessionKeys<'a> {
    pub encryption_key: &'a [u8],
    pub salt: &'a [u8],
    /// HMAC-SHA1 key (20 bytes) for AES-CM profiles; ignored for GCM.
    pub auth_key: &'a [u8],
}

impl core::fmt::Debug for RawSessionKeys<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("RawSessionKeys(<redacted>)")
    }
}

impl SessionCrypto {
    /// Builds session crypto from raw session keys (known-answer tests only).
    pub(crate) fn from_raw(profile: SrtpProfile, raw: &RawSessionKeys<'_>) -> Result<Self> {
        let bad = |got: usize, want: usize| Error::KeyLength {
            suite: profile.name(),
            got,
            want,
        };
        if raw.encryption_key.len() != profile.key_len() {
            return Err(bad(raw.encryption_key.len(), profile.key_len()));
        }
        if raw.salt.len() != profile.salt_len() {
            return Err(bad(raw.salt.len(), profile.salt_len()));
        }
        if profile.is_aead() {
            let aead = GcmCipher::new(raw.encryption_key)?;
            let mut salt = Zeroizing::new([0u8; 12]);
            salt.copy_from_slice(raw.salt);
            Ok(SessionCrypto::Gcm(GcmKeys { aead, salt }))
        } else {
            if raw.auth_key.len() != 20 {
                return Err(bad(raw.auth_key.len(), 20));
            }
            let cipher = EncryptingKey::ctr(
                UnboundCipherKey::new(&AES_128, raw.encryption_key).map_err(|_| Error::Crypto)?,
            )
            .map_err(|_| Error::Crypto)?;
            let mut salt = Zeroizing::new([0u8; 14]);
            salt.copy_from_slice(raw.salt);
            let auth = HmacSha1::new(raw.auth_key);
            let fast = AesNiGcm::new(raw.encryption_key);
            Ok(SessionCrypto::Cm(Box::new(CmKeys {
                cipher,
                fast,
                salt,
                auth,
            })))
        }
    }

    /// Derives the session keys for SRTP (`rtcp == false`) or SRTCP.
    pub(crate) fn derive(master: &MasterKey, rtcp: bool) -> Result<Self> {
        let kdf = Kdf::new(master)?;
        let (enc_l, auth_l, salt_l) = if rtcp {
            (Label::RtcpEncryption, Label::RtcpAuth, Label::RtcpSalt)
        } else {
            (Label::RtpEncryption, Label::RtpAuth, Label::RtpSalt)
        };
        let profile = master.profile;
        let mut enc = Zeroizing::new(vec![0u8; profile.key_len()]);
        kdf.derive(enc_l, &mut enc)?;
        if profile.is_aead() {
            let aead = GcmCipher::new(&enc)?;
            let mut salt = Zeroizing::new([0u8; 12]);
            kdf.derive(salt_l, &mut salt[..])?;
            Ok(SessionCrypto::Gcm(GcmKeys { aead, salt }))
        } else {
            let cipher = EncryptingKey::ctr(
                UnboundCipherKey::new(&AES_128, &enc).map_err(|_| Error::Crypto)?,
            )
            .map_err(|_| Error::Crypto)?;
            let mut auth_key = Zeroizing::new([0u8; 20]);
            kdf.derive(auth_l, &mut auth_key[..])?;
            let auth = HmacSha1::new(&auth_key[..]);
            let mut salt = Zeroizing::new([0u8; 14]);
            kdf.derive(salt_l, &mut salt[..])?;
            let fast = AesNiGcm::new(&enc);
            Ok(SessionCrypto::Cm(Box::new(CmKeys {
                cipher,
                fast,
                salt,
                auth,
            })))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// RFC 3711 Appendix B.3: key derivation test vectors.
    #[test]
    fn rfc3711_b3_key_derivation() {
        let master = MasterKey::new(
            SrtpProfile::AesCm128HmacSha1_80,
            &hex("E1F97A0D3E018BE0D64FA32C06DE4139"),
            &hex("0EC675AD498AFEEBB6960B3AABE6"),
        )
        .unwrap();
        let kdf = Kdf::new(&master).unwrap();
        let mut enc = [0u8; 16];
        kdf.derive(Label::RtpEncryption, &mut enc).unwrap();
        assert_eq!(enc.to_vec(), hex("C61E7A93744F39EE10734AFE3FF7A087"));
        let mut salt = [0u8; 14];
        kdf.derive(Label::RtpSalt, &mut salt).unwrap();
        assert_eq!(salt.to_vec(), hex("30CBBC08863D8C85D49DB34A9AE1"));
        let mut auth = [0u8; 94];
        kdf.derive(Label::RtpAuth, &mut auth).unwrap();
        assert_eq!(
            auth.to_vec(),
            hex(
                "CEBE321F6FF7716B6FD4AB49AF256A15 6D38BAA48F0A0ACF3C34E2359E6CDBCE
                 E049646C43D9327AD175578EF7227098 6371C10C9A369AC2F94A8C5FBCDDDC25
                 6D6E919A48B610EF17C2041E47403576 6B68642C59BBFC2F34DB60DBDFB2"
            )
        );
    }

    #[test]
    fn both_gcm_implementations_agree() {
        for klen in [16usize, 32] {
            let key: Vec<u8> = (0..klen as u8).collect();
            let ours = GcmCipher::new(&key).unwrap();
            let theirs = GcmCipher::new_aws_lc(&key).unwrap();
            for len in [0usize, 1, 15, 16, 17, 160, 1000] {
                let aad = [0xa5u8; 12];
                let iv = [len as u8; 12];
                let plain: Vec<u8> = (0..len).map(|i| i as u8).collect();
                let (mut a, mut b) = (plain.clone(), plain.clone());
                let ta = ours.seal(iv, &aad, &mut a).unwrap();
                let tb = theirs.seal(iv, &aad, &mut b).unwrap();
                assert_eq!((&a, ta), (&b, tb), "klen {klen} len {len}");
                for g in [&ours, &theirs] {
                    let mut ct = a.clone();
                    ct.extend_from_slice(&ta);
                    g.open(iv, &aad, &mut ct).unwrap();
                    assert_eq!(&ct[..len], &plain[..]);
                    let mut bad = a.clone();
                    bad.extend_from_slice(&ta);
                    bad[len] ^= 1;
                    assert_eq!(g.open(iv, &aad, &mut bad), Err(Error::AuthTagMismatch));
                }
            }
        }
    }

    #[test]
    fn wrong_lengths_are_typed_errors() {
        let e = MasterKey::new(SrtpProfile::AeadAes256Gcm, &[0; 16], &[0; 12]).unwrap_err();
        assert_eq!(
            e,
            Error::KeyLength {
                suite: "AEAD_AES_256_GCM",
                got: 16,
                want: 32
            }
        );
        assert!(MasterKey::from_key_salt(SrtpProfile::AesCm128HmacSha1_80, &[0; 29]).is_err());
    }

    #[test]
    fn debug_redacts_key() {
        let m = MasterKey::new(SrtpProfile::AesCm128HmacSha1_80, &[0xab; 16], &[0xcd; 14]).unwrap();
        let s = format!("{m:?}");
        assert!(
            !s.contains("171") && !s.to_lowercase().contains("ab, "),
            "{s}"
        );
        assert!(s.contains("redacted"));
    }
}
