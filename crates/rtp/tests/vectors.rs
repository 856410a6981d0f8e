//! Known-answer tests: voxgate-rtp against published SRTP/SRTCP vectors, through the public API.
//!
//! Sources:
//! - RFC 3711 Appendix B.2 (AES-CM keystream) and B.3 (key derivation).
//! - RFC 7714 §16 (SRTP AES-GCM) and §17 (SRTCP AES-GCM).
//! - libsrtp 2.8.0 `test/srtp_driver.c` (`srtp_validate`, `srtp_validate_gcm`).
//!
//! Not covered, because voxgate does not implement the transform:
//! - RFC 7714 §16.1.3/§16.1.4/§16.2.3/§16.2.4 (SRTP "authentication tagging" only, i.e. GCM with
//!   the whole packet as AAD and no encryption) and §17.3/§17.4 (unencrypted SRTCP, E flag 0).
//!   Those packets are checked to be *refused* instead (see `rfc7714_*_unencrypted_is_refused`).
//! - RFC 6188 / libsrtp `srtp_validate_aes_256` and `srtp_validate_aes_192` (AES-256-CM and
//!   AES-192-CM), libsrtp `srtp_validate_null_*` (NULL cipher), `srtp_validate_cryptex*`
//!   (RFC 9335) and `srtp_validate_encrypted_extensions_headers*` (RFC 6904).
//! - RFC 7714 §16/§17 contain no vector with CSRCs, a header extension or a non-zero ROC.

use voxgate_rtp::{Error, MasterKey, RawSessionKeys, SrtpPolicy, SrtpProfile, SrtpSession};

/// Hex to bytes; whitespace is ignored so vectors can be laid out as in their source.
fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Protects `plain` with the in-place API and returns the SRTP packet.
fn protect_rtp(s: &mut SrtpSession, plain: &[u8]) -> Result<Vec<u8>, Error> {
    let mut buf = plain.to_vec();
    buf.resize(plain.len() + s.srtp_overhead(), 0xee);
    let n = s.protect_rtp(&mut buf, plain.len())?;
    assert_eq!(n, plain.len() + s.srtp_overhead(), "protect_rtp length");
    buf.truncate(n);
    Ok(buf)
}

fn unprotect_rtp(s: &mut SrtpSession, pkt: &[u8]) -> Result<Vec<u8>, Error> {
    let mut buf = pkt.to_vec();
    let n = s.unprotect_rtp(&mut buf, pkt.len())?;
    buf.truncate(n);
    Ok(buf)
}

fn protect_rtcp(s: &mut SrtpSession, plain: &[u8]) -> Result<Vec<u8>, Error> {
    let mut buf = plain.to_vec();
    buf.resize(plain.len() + s.srtcp_overhead(), 0xee);
    let n = s.protect_rtcp(&mut buf, plain.len())?;
    assert_eq!(n, plain.len() + s.srtcp_overhead(), "protect_rtcp length");
    buf.truncate(n);
    Ok(buf)
}

fn unprotect_rtcp(s: &mut SrtpSession, pkt: &[u8]) -> Result<Vec<u8>, Error> {
    let mut buf = pkt.to_vec();
    let n = s.unprotect_rtcp(&mut buf, pkt.len())?;
    buf.truncate(n);
    Ok(buf)
}

/// The full check of one SRTP vector: `tx` protects `plain` to exactly `expected`; a fresh
/// receiver unprotects `expected` back to `plain`; flipping the low bit of any single byte of
/// `expected` fails with `AuthTagMismatch` (and leaves the receiver's state alone, so the genuine
/// packet is still accepted afterwards, once).
fn check_srtp_vector(
    name: &str,
    make: impl Fn() -> SrtpSession,
    mut tx: SrtpSession,
    plain: &[u8],
    expected: &[u8],
) {
    let got = protect_rtp(&mut tx, plain).unwrap_or_else(|e| panic!("{name}: protect: {e}"));
    assert_eq!(to_hex(&got), to_hex(expected), "{name}: protect_rtp output");

    let mut rx = make();
    let back =
        unprotect_rtp(&mut rx, expected).unwrap_or_else(|e| panic!("{name}: unprotect: {e}"));
    assert_eq!(to_hex(&back), to_hex(plain), "{name}: unprotect_rtp output");

    let mut rx = make();
    for i in 0..expected.len() {
        let mut bad = expected.to_vec();
        bad[i] ^= 0x01;
        assert_eq!(
            unprotect_rtp(&mut rx, &bad),
            Err(Error::AuthTagMismatch),
            "{name}: bit flip in byte {i} must fail authentication"
        );
    }
    assert_eq!(
        unprotect_rtp(&mut rx, expected).as_deref(),
        Ok(plain),
        "{name}: genuine packet after forgeries"
    );
    assert!(
        matches!(
            unprotect_rtp(&mut rx, expected),
            Err(Error::Replayed { .. })
        ),
        "{name}: second copy must be a replay"
    );
}

/// Same as [`check_srtp_vector`] for SRTCP.
fn check_srtcp_vector(
    name: &str,
    make: impl Fn() -> SrtpSession,
    mut tx: SrtpSession,
    plain: &[u8],
    expected: &[u8],
) {
    let got = protect_rtcp(&mut tx, plain).unwrap_or_else(|e| panic!("{name}: protect: {e}"));
    assert_eq!(
        to_hex(&got),
        to_hex(expected),
        "{name}: protect_rtcp output"
    );

    let mut rx = make();
    let back =
        unprotect_rtcp(&mut rx, expected).unwrap_or_else(|e| panic!("{name}: unprotect: {e}"));
    assert_eq!(
        to_hex(&back),
        to_hex(plain),
        "{name}: unprotect_rtcp output"
    );

    let mut rx = make();
    for i in 0..expected.len() {
        let mut bad = expected.to_vec();
        bad[i] ^= 0x01;
        assert_eq!(
            unprotect_rtcp(&mut rx, &bad),
            Err(Error::AuthTagMismatch),
            "{name}: bit flip in byte {i} must fail authentication"
        );
    }
    assert_eq!(
        unprotect_rtcp(&mut rx, expected).as_deref(),
        Ok(plain),
        "{name}: genuine packet after forgeries"
    );
    assert!(
        matches!(
            unprotect_rtcp(&mut rx, expected),
            Err(Error::Replayed { .. })
        ),
        "{name}: second copy must be a replay"
    );
}

// ---------------------------------------------------------------------------------------------
// RFC 3711 Appendix B.2 and B.3
// ---------------------------------------------------------------------------------------------

/// RFC 3711 B.2: session key, session salt (the RFC lists it "already shifted", i.e. followed by
/// 0000) and the keystream blocks for counters ...0000, 0001, 0002 and ...FEFF, FF00, FF01.
const B2_SESSION_KEY: &str = "2B7E151628AED2A6ABF7158809CF4F3C";
const B2_SESSION_SALT: &str = "F0F1F2F3F4F5F6F7F8F9FAFBFCFD";
const B2_KEYSTREAM_FIRST: &str = "E03EAD0935C95E80E166B16DD92B4EB4
                                  D23513162B02D0F72A43A2FE4A5F97AB
                                  41E95B3BB0A2E8DD477901E4FCA894C0";
const B2_KEYSTREAM_LAST: &str = "EC8CDF7398607CB0F2D21675EA9EA1E4
                                 362B7C3C6773516318A077D7FC5073AE
                                 6A2CC3787889374FBEB4C81B17BA6C44";

#[test]
fn rfc3711_b2_aes_cm_keystream() {
    let key = hex(B2_SESSION_KEY);
    let salt = hex(B2_SESSION_SALT);
    let auth = [0x5a; 20]; // any: B.2 only concerns the keystream
    let raw = RawSessionKeys {
        encryption_key: &key,
        salt: &salt,
        auth_key: &auth,
    };
    let make =
        || SrtpSession::from_session_keys(SrtpProfile::AesCm128HmacSha1_80, &raw, &raw).unwrap();
    // SSRC 0, SEQ 0, ROC 0: IV = salt * 2^16, so keystream block k is encrypted under counter
    // F0F1...FD || k and lands at payload offset 16 * k. The RFC's segment is 0xFF02 blocks
    // (1044512 octets): far larger than any real packet, fine for an in-memory buffer.
    const BLOCKS: usize = 0xFF02;
    let mut plain = vec![0x80, 0x00, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0];
    plain.resize(12 + BLOCKS * 16, 0);

    let mut tx = make();
    let pkt = protect_rtp(&mut tx, &plain).unwrap();
    assert_eq!(&pkt[..12], &plain[..12], "header stays in the clear");
    let ks = &pkt[12..12 + BLOCKS * 16];
    assert_eq!(to_hex(&ks[..48]), to_hex(&hex(B2_KEYSTREAM_FIRST)));
    assert_eq!(
        to_hex(&ks[0xFEFF * 16..0xFF02 * 16]),
        to_hex(&hex(B2_KEYSTREAM_LAST))
    );

    // And back to zeros.
    let mut rx = make();
    assert_eq!(unprotect_rtp(&mut rx, &pkt).unwrap(), plain);
}

/// RFC 3711 B.3: master key/salt and the SRTP session keys the KDF must derive from them.
const B3_MASTER_KEY: &str = "E1F97A0D3E018BE0D64FA32C06DE4139";
const B3_MASTER_SALT: &str = "0EC675AD498AFEEBB6960B3AABE6";
const B3_CIPHER_KEY: &str = "C61E7A93744F39EE10734AFE3FF7A087";
const B3_CIPHER_SALT: &str = "30CBBC08863D8C85D49DB34A9AE1";
/// The first 160 bits of the B.3 authentication key stream (HMAC-SHA1 uses a 20-byte key).
const B3_AUTH_KEY: &str = "CEBE321F6FF7716B6FD4AB49AF256A15 6D38BAA4";

/// End-to-end B.3: a session built from the B.3 master key (through the KDF) must protect RTP
/// exactly as a session keyed directly with the B.3 session keys. (B.3 lists no SRTCP keys, so
/// only SRTP is compared.) libsrtp's `test_key` is this same master key, so the directly keyed
/// session must also reproduce libsrtp's `srtp_validate` ciphertext.
#[test]
fn rfc3711_b3_key_derivation() {
    let (k, s, a) = (hex(B3_CIPHER_KEY), hex(B3_CIPHER_SALT), hex(B3_AUTH_KEY));
    let raw = RawSessionKeys {
        encryption_key: &k,
        salt: &s,
        auth_key: &a,
    };
    for profile in [
        SrtpProfile::AesCm128HmacSha1_80,
        SrtpProfile::AesCm128HmacSha1_32,
    ] {
        let mk = MasterKey::new(profile, &hex(B3_MASTER_KEY), &hex(B3_MASTER_SALT)).unwrap();
        let mut derived = SrtpSession::new(SrtpPolicy::new(mk)).unwrap();
        let mut direct = SrtpSession::from_session_keys(profile, &raw, &raw).unwrap();
        for (seq, ssrc, len) in [(0u16, 0u32, 0usize), (1, 0xcafebabe, 16), (0xffff, 7, 160)] {
            let mut rtp = vec![0x80, 0x60];
            rtp.extend_from_slice(&seq.to_be_bytes());
            rtp.extend_from_slice(&0x1234_5678u32.to_be_bytes());
            rtp.extend_from_slice(&ssrc.to_be_bytes());
            rtp.extend((0..len).map(|i| i as u8));
            let a = protect_rtp(&mut derived, &rtp).unwrap();
            let b = protect_rtp(&mut direct, &rtp).unwrap();
            assert_eq!(to_hex(&a), to_hex(&b), "{profile:?} seq {seq}");
        }
    }

    let mut direct =
        SrtpSession::from_session_keys(SrtpProfile::AesCm128HmacSha1_80, &raw, &raw).unwrap();
    let got = protect_rtp(&mut direct, &hex(LIBSRTP_RTP_PLAIN)).unwrap();
    assert_eq!(to_hex(&got), to_hex(&hex(LIBSRTP_SRTP_CIPHER)));
}

// ---------------------------------------------------------------------------------------------
// RFC 7714 §16 (SRTP) and §17 (SRTCP), AES-GCM with session keys
// ---------------------------------------------------------------------------------------------

/// RFC 7714 §16: "The 16-octet (128-bit) key is 00 01 02 ... 0f, and the 32-octet (256-bit) key
/// is 00 01 02 ... 1f." The salt is "Quid pro quo". These are session keys/salts.
const R7714_KEY_128: &str = "000102030405060708090a0b0c0d0e0f";
const R7714_KEY_256: &str = "000102030405060708090a0b0c0d0e0f 101112131415161718191a1b1c1d1e1f";
const R7714_SALT: &str = "51756964 2070726f 2071756f";

/// RFC 7714 §16.1.1 / §16.2.1 plaintext packet (SSRC 5501a0b2, SEQ f17b, ROC 0).
const R7714_RTP_PLAIN: &str = "8040f17b 8041f8d3 5501a0b2 47616c6c
                               69612065 7374206f 6d6e6973 20646976
                               69736120 696e2070 61727465 73207472
                               6573";
/// RFC 7714 §16.1.1 "Encrypted and tagged packet" (AEAD_AES_128_GCM).
const R7714_16_1_SRTP: &str = "8040f17b 8041f8d3 5501a0b2 f24de3a3
                               fb34de6c acba861c 9d7e4bca be633bd5
                               0d294e6f 42a5f47a 51c7d19b 36de3adf
                               8833899d 7f27beb1 6a9152cf 765ee439
                               0cce";
/// RFC 7714 §16.2.1 "Encrypted and tagged packet" (AEAD_AES_256_GCM).
const R7714_16_2_SRTP: &str = "8040f17b 8041f8d3 5501a0b2 32b1de78
                               a822fe12 ef9f78fa 332e33aa b1801238
                               9a58e2f3 b50b2a02 76ffae0f 1ba63799
                               b87b7aa3 db36dfff d6b0f9bb 7878d7a7
                               6c13";
/// RFC 7714 §16.1.3 "Tagged packet" (authentication only, AEAD_AES_128_GCM).
const R7714_16_1_3_TAGGED: &str = "8040f17b 8041f8d3 5501a0b2 47616c6c
                                   69612065 7374206f 6d6e6973 20646976
                                   69736120 696e2070 61727465 73207472
                                   65732249 3f82d2bc e397e9d7 9e3b19aa
                                   4216";
/// RFC 7714 §16.2.3 "Tagged packet" (authentication only, AEAD_AES_256_GCM).
const R7714_16_2_3_TAGGED: &str = "8040f17b 8041f8d3 5501a0b2 47616c6c
                                   69612065 7374206f 6d6e6973 20646976
                                   69736120 696e2070 61727465 73207472
                                   6573a866 d5910f88 7463067c eefec452
                                   15d4";

/// RFC 7714 §17.1 / §17.2 plaintext RTCP packet (SSRC 4d617273). Note: the §17 preamble shows a
/// slightly different packet (81c8000e ... 4e545031 ... 0000eb98); the vectors in §17.1-§17.4
/// all use this one. Its length field (13 words) does not match its size; SRTCP ignores it.
const R7714_RTCP_PLAIN: &str = "81c8000d 4d617273 4e545031 4e545032
                                52545020 0000042a 0000e930 4c756e61
                                deadbeef deadbeef deadbeef deadbeef
                                deadbeef";
/// §17: "with 32-bit SRTCP index 000005d4".
const R7714_SRTCP_INDEX: u32 = 0x0000_05d4;
const R7714_RTCP_SSRC: u32 = 0x4d61_7273;
/// RFC 7714 §17.1 "Encrypted and tagged packet" (AEAD_AES_128_GCM).
const R7714_17_1_SRTCP: &str = "81c8000d 4d617273 63e94885 dcdab67c
                                a727d766 2f6b7e99 7ff5c0f7 6c06f32d
                                c676a5f1 730d6fda 4ce09b46 86303ded
                                0bb9275b c84aa458 96cf4d2f c5abf872
                                45d9eade 800005d4";
/// RFC 7714 §17.2 packet to decrypt (AEAD_AES_256_GCM).
const R7714_17_2_SRTCP: &str = "81c8000d 4d617273 d50ae4d1 f5ce5d30
                                4ba297e4 7d470c28 2c3ece5d bffe0a50
                                a2eaa5c1 110555be 8415f658 c61de047
                                6f1b6fad 1d1eb30c 4446839f 57ff6f6c
                                b26ac3be 800005d4";
/// RFC 7714 §17.3 "Tagged packet" (E flag 0, AEAD_AES_128_GCM).
const R7714_17_3_TAGGED: &str = "81c8000d 4d617273 4e545031 4e545032
                                 52545020 0000042a 0000e930 4c756e61
                                 deadbeef deadbeef deadbeef deadbeef
                                 deadbeef 841dd968 3dd78ec9 2ae58790
                                 125f62b3 000005d4";
/// RFC 7714 §17.4 packet to verify (E flag 0, AEAD_AES_256_GCM).
const R7714_17_4_TAGGED: &str = "81c8000d 4d617273 4e545031 4e545032
                                 52545020 0000042a 0000e930 4c756e61
                                 deadbeef deadbeef deadbeef deadbeef
                                 deadbeef 91db4afb feee5a97 8fab4393
                                 ed2615fe 000005d4";

fn r7714_session(profile: SrtpProfile) -> SrtpSession {
    let key = hex(match profile {
        SrtpProfile::AeadAes128Gcm => R7714_KEY_128,
        SrtpProfile::AeadAes256Gcm => R7714_KEY_256,
        _ => unreachable!("RFC 7714 vectors are GCM only"),
    });
    let salt = hex(R7714_SALT);
    // The same session key and salt serve SRTP and SRTCP in §16 and §17.
    let raw = RawSessionKeys {
        encryption_key: &key,
        salt: &salt,
        auth_key: &[],
    };
    SrtpSession::from_session_keys(profile, &raw, &raw).unwrap()
}

fn r7714_srtcp_sender(profile: SrtpProfile) -> SrtpSession {
    let mut s = r7714_session(profile);
    s.set_srtcp_tx_index(R7714_RTCP_SSRC, R7714_SRTCP_INDEX)
        .unwrap();
    s
}

#[test]
fn rfc7714_16_srtp_aes128_gcm() {
    let p = SrtpProfile::AeadAes128Gcm;
    check_srtp_vector(
        "RFC 7714 16.1.1/16.1.2",
        || r7714_session(p),
        r7714_session(p),
        &hex(R7714_RTP_PLAIN),
        &hex(R7714_16_1_SRTP),
    );
}

#[test]
fn rfc7714_16_srtp_aes256_gcm() {
    let p = SrtpProfile::AeadAes256Gcm;
    check_srtp_vector(
        "RFC 7714 16.2.1/16.2.2",
        || r7714_session(p),
        r7714_session(p),
        &hex(R7714_RTP_PLAIN),
        &hex(R7714_16_2_SRTP),
    );
}

/// The same §16 vector reached through `set_tx_index`: a sender continuing a stream whose last
/// index was f17a protects SEQ f17b under index f17b (ROC 0).
#[test]
fn rfc7714_16_srtp_aes128_gcm_after_set_tx_index() {
    let p = SrtpProfile::AeadAes128Gcm;
    let mut tx = r7714_session(p);
    tx.set_tx_index(0x5501_a0b2, 0xf17a).unwrap();
    let got = protect_rtp(&mut tx, &hex(R7714_RTP_PLAIN)).unwrap();
    assert_eq!(to_hex(&got), to_hex(&hex(R7714_16_1_SRTP)));
    assert_eq!(tx.tx_roc(0x5501_a0b2), Some(0));
    // Protecting the same index again would reuse keystream: refused.
    assert!(matches!(
        protect_rtp(&mut tx, &hex(R7714_RTP_PLAIN)),
        Err(Error::IndexReuse { index: 0xf17b })
    ));
}

/// §16.1.3/§16.2.3 (GCM authentication only, no encryption): not supported by voxgate, which
/// always encrypts SRTP. Such a packet must be rejected, never accepted as plaintext.
#[test]
fn rfc7714_16_srtp_auth_only_is_refused() {
    for (p, v) in [
        (SrtpProfile::AeadAes128Gcm, R7714_16_1_3_TAGGED),
        (SrtpProfile::AeadAes256Gcm, R7714_16_2_3_TAGGED),
    ] {
        let mut rx = r7714_session(p);
        assert_eq!(
            unprotect_rtp(&mut rx, &hex(v)),
            Err(Error::AuthTagMismatch),
            "{p:?}"
        );
    }
}

#[test]
fn rfc7714_17_srtcp_aes128_gcm() {
    let p = SrtpProfile::AeadAes128Gcm;
    check_srtcp_vector(
        "RFC 7714 17.1",
        || r7714_session(p),
        r7714_srtcp_sender(p),
        &hex(R7714_RTCP_PLAIN),
        &hex(R7714_17_1_SRTCP),
    );
}

/// §17.2 gives only the decryption; encryption of the same plaintext under the same index is
/// its inverse, so protect is checked against the same packet.
#[test]
fn rfc7714_17_srtcp_aes256_gcm() {
    let p = SrtpProfile::AeadAes256Gcm;
    check_srtcp_vector(
        "RFC 7714 17.2",
        || r7714_session(p),
        r7714_srtcp_sender(p),
        &hex(R7714_RTCP_PLAIN),
        &hex(R7714_17_2_SRTCP),
    );
}

/// §17.3/§17.4: unencrypted (E = 0) SRTCP. voxgate does not support unencrypted SRTCP, so these
/// vectors cannot be reproduced; the packets must be refused (by their E flag), not accepted.
#[test]
fn rfc7714_17_srtcp_unencrypted_is_refused() {
    for (p, v) in [
        (SrtpProfile::AeadAes128Gcm, R7714_17_3_TAGGED),
        (SrtpProfile::AeadAes256Gcm, R7714_17_4_TAGGED),
    ] {
        let mut rx = r7714_session(p);
        assert_eq!(
            unprotect_rtcp(&mut rx, &hex(v)),
            Err(Error::EncryptionFlagMismatch),
            "{p:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// libsrtp test/srtp_driver.c
// ---------------------------------------------------------------------------------------------
//
// The following vectors are transcribed from libsrtp 2.8.0, file test/srtp_driver.c (functions
// srtp_validate and srtp_validate_gcm, and the test_key / test_key_gcm arrays), which is
// Copyright (c) 2001-2017 Cisco Systems, Inc., distributed under the BSD-3-Clause licence:
//
//   Redistribution and use in source and binary forms, with or without modification, are
//   permitted provided that the following conditions are met: Redistributions of source code
//   must retain the above copyright notice, this list of conditions and the following
//   disclaimer. Redistributions in binary form must reproduce the above copyright notice, this
//   list of conditions and the following disclaimer in the documentation and/or other
//   materials provided with the distribution. Neither the name of the Cisco Systems, Inc. nor
//   the names of its contributors may be used to endorse or promote products derived from this
//   software without specific prior written permission.
//   THIS SOFTWARE IS PROVIDED BY THE COPYRIGHT HOLDERS AND CONTRIBUTORS "AS IS" AND ANY EXPRESS
//   OR IMPLIED WARRANTIES, INCLUDING, BUT NOT LIMITED TO, THE IMPLIED WARRANTIES OF
//   MERCHANTABILITY AND FITNESS FOR A PARTICULAR PURPOSE ARE DISCLAIMED. IN NO EVENT SHALL THE
//   COPYRIGHT HOLDERS OR CONTRIBUTORS BE LIABLE FOR ANY DIRECT, INDIRECT, INCIDENTAL, SPECIAL,
//   EXEMPLARY, OR CONSEQUENTIAL DAMAGES (INCLUDING, BUT NOT LIMITED TO, PROCUREMENT OF
//   SUBSTITUTE GOODS OR SERVICES; LOSS OF USE, DATA, OR PROFITS; OR BUSINESS INTERRUPTION)
//   HOWEVER CAUSED AND ON ANY THEORY OF LIABILITY, WHETHER IN CONTRACT, STRICT LIABILITY, OR
//   TORT (INCLUDING NEGLIGENCE OR OTHERWISE) ARISING IN ANY WAY OUT OF THE USE OF THIS
//   SOFTWARE, EVEN IF ADVISED OF THE POSSIBILITY OF SUCH DAMAGE.
//
// Policies: srtp_validate uses the default policy (AES_CM_128_HMAC_SHA1_80 for SRTP and SRTCP),
// srtp_validate_gcm uses srtp_crypto_policy_set_aes_gcm_128_16_auth (AEAD_AES_128_GCM, 16-byte
// tag) for both; SSRC 0xcafebabe. libsrtp's first SRTCP packet carries index 1.

/// libsrtp `test_key` (46 bytes; an AES-128 policy uses the first 30: key || 14-byte salt).
const LIBSRTP_TEST_KEY: &str = "e1f97a0d3e018be0d64fa32c06de4139 0ec675ad498afeebb6960b3aabe6
                                c173c317f2dabe357793b6960b3aabe6";
/// libsrtp `test_key_gcm` (16-byte key || 12-byte salt).
const LIBSRTP_TEST_KEY_GCM: &str = "000102030405060708090a0b0c0d0e0f a0a1a2a3a4a5a6a7a8a9aaab";
const LIBSRTP_SSRC: u32 = 0xcafe_babe;

/// `srtp_plaintext_ref` (also `rtp_plaintext_ref` in srtp_validate_gcm).
const LIBSRTP_RTP_PLAIN: &str = "800f1234 decafbad cafebabe abababab
                                 abababab abababab abababab";
/// srtp_validate `srtp_ciphertext`.
const LIBSRTP_SRTP_CIPHER: &str = "800f1234 decafbad cafebabe 4e55dc4c
                                   e79978d8 8ca4d215 949d2402 b78d6acc
                                   99ea179b 8dbb";
/// `rtcp_plaintext_ref` (both functions).
const LIBSRTP_RTCP_PLAIN: &str = "81c8000b cafebabe abababab abababab
                                  abababab abababab";
/// srtp_validate `srtcp_ciphertext`.
const LIBSRTP_SRTCP_CIPHER: &str = "81c8000b cafebabe 7128035b e487b9bd
                                    bef89041 f977a5a8 80000001 993e08cd
                                    54d6c123 0798";
/// srtp_validate_gcm `srtp_ciphertext`.
const LIBSRTP_GCM_SRTP_CIPHER: &str = "800f1234 decafbad cafebabe c5002ede
                                       04cfdd2e b91159e0 880aa06e d2976826
                                       f796b201 df3131a1 27e8a392";
/// srtp_validate_gcm `srtcp_ciphertext`.
const LIBSRTP_GCM_SRTCP_CIPHER: &str = "81c8000b cafebabe c98b8b5d f0392a55
                                        852b6c21 ac8e7025 c52c6fbe a2b3b446
                                        ea31123b a88ce61e 80000001";

fn libsrtp_session(profile: SrtpProfile) -> SrtpSession {
    let key = match profile {
        SrtpProfile::AeadAes128Gcm => hex(LIBSRTP_TEST_KEY_GCM),
        _ => hex(LIBSRTP_TEST_KEY),
    };
    let n = profile.key_len() + profile.salt_len();
    let mk = MasterKey::from_key_salt(profile, &key[..n]).unwrap();
    SrtpSession::new(SrtpPolicy::new(mk).with_replay_window(128)).unwrap()
}

fn libsrtp_srtcp_sender(profile: SrtpProfile) -> SrtpSession {
    let mut s = libsrtp_session(profile);
    s.set_srtcp_tx_index(LIBSRTP_SSRC, 1).unwrap();
    s
}

#[test]
fn libsrtp_srtp_validate() {
    let p = SrtpProfile::AesCm128HmacSha1_80;
    check_srtp_vector(
        "libsrtp srtp_validate (SRTP)",
        || libsrtp_session(p),
        libsrtp_session(p),
        &hex(LIBSRTP_RTP_PLAIN),
        &hex(LIBSRTP_SRTP_CIPHER),
    );
    check_srtcp_vector(
        "libsrtp srtp_validate (SRTCP)",
        || libsrtp_session(p),
        libsrtp_srtcp_sender(p),
        &hex(LIBSRTP_RTCP_PLAIN),
        &hex(LIBSRTP_SRTCP_CIPHER),
    );
}

#[test]
fn libsrtp_srtp_validate_gcm() {
    let p = SrtpProfile::AeadAes128Gcm;
    check_srtp_vector(
        "libsrtp srtp_validate_gcm (SRTP)",
        || libsrtp_session(p),
        libsrtp_session(p),
        &hex(LIBSRTP_RTP_PLAIN),
        &hex(LIBSRTP_GCM_SRTP_CIPHER),
    );
    check_srtcp_vector(
        "libsrtp srtp_validate_gcm (SRTCP)",
        || libsrtp_session(p),
        libsrtp_srtcp_sender(p),
        &hex(LIBSRTP_RTCP_PLAIN),
        &hex(LIBSRTP_GCM_SRTCP_CIPHER),
    );
}

/// The 80-bit-tag vector, truncated to 32 bits: for AES_CM_128_HMAC_SHA1_32 the encryption and
/// the HMAC input are the same, only the tag is cut to 4 bytes (RFC 3711 §5.2, RFC 4568 §6.2.1).
/// SRTCP keeps its 80-bit tag under both profiles (RFC 4568 §6.2.1).
#[test]
fn libsrtp_srtp_validate_truncated_to_sha1_32() {
    let p = SrtpProfile::AesCm128HmacSha1_32;
    let full = hex(LIBSRTP_SRTP_CIPHER);
    let short = &full[..full.len() - 6];
    check_srtp_vector(
        "libsrtp srtp_validate, 32-bit tag",
        || libsrtp_session(p),
        libsrtp_session(p),
        &hex(LIBSRTP_RTP_PLAIN),
        short,
    );
    check_srtcp_vector(
        "libsrtp srtp_validate SRTCP under the _32 profile",
        || libsrtp_session(p),
        libsrtp_srtcp_sender(p),
        &hex(LIBSRTP_RTCP_PLAIN),
        &hex(LIBSRTP_SRTCP_CIPHER),
    );
}
