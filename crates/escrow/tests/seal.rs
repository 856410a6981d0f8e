//! Sealed key records (HPKE, RFC 9180) through the public API of `voxgate_escrow::seal`.

use voxgate_escrow::seal::{
    open, seal, AuthorityKeyPair, AuthorityPublicKey, SealError, SealedRecord, HEADER_LEN,
    MAX_INFO_LEN, SESSION_KEY_INFO, TAG_LEN,
};

fn hex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex");
    s.as_bytes()
        .chunks_exact(2)
        .map(|p| {
            let hi = char::from(p[0]).to_digit(16).expect("hex digit");
            let lo = char::from(p[1]).to_digit(16).expect("hex digit");
            u8::try_from(hi << 4 | lo).expect("byte")
        })
        .collect()
}

fn arr(s: &str) -> [u8; 32] {
    hex(s).try_into().expect("32 bytes")
}

fn fixture(name: &str) -> String {
    let text = include_str!("fixtures/hpke/rfc9180-a1-1.txt");
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim() == name)
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_else(|| panic!("fixture lacks {name}"))
}

/// An SRTP master key and salt for one direction (AES_CM_128: 16 + 14 bytes).
const KEY_SALT: [u8; 30] = [
    0xe1, 0xf9, 0x7a, 0x0d, 0x3e, 0x01, 0x8b, 0xe0, 0xd6, 0x4f, 0xa3, 0x2c, 0x06, 0xde, 0x41, 0x39,
    0x0e, 0xc6, 0x75, 0xad, 0x49, 0x8a, 0xfe, 0xeb, 0xb6, 0x96, 0x0b, 0x3a, 0xab, 0xe6,
];

/// The aad of one `session_key` row: session_ID then gateway id.
fn row_aad(session_id: u64, gateway: &str) -> Vec<u8> {
    let mut aad = session_id.to_be_bytes().to_vec();
    aad.extend_from_slice(gateway.as_bytes());
    aad
}

fn sealed_row(kp: &AuthorityKeyPair, aad: &[u8]) -> SealedRecord {
    seal(kp.public(), SESSION_KEY_INFO, aad, &KEY_SALT).expect("seal")
}

#[test]
fn rfc9180_a1_1_open_vector() {
    let kp = AuthorityKeyPair::from_secret_bytes(&arr(&fixture("skRm")));
    assert_eq!(kp.public().to_hex(), fixture("pkRm"));
    let rec = SealedRecord {
        enc: arr(&fixture("enc")),
        ciphertext: hex(&fixture("ct")),
    };
    let pt = open(&kp, &hex(&fixture("info")), &hex(&fixture("aad")), &rec).expect("open");
    assert_eq!(pt.as_slice(), hex(&fixture("pt")).as_slice());
    // The same record through the byte encoding.
    let back = SealedRecord::from_bytes(&rec.to_bytes()).expect("decode");
    assert_eq!(back, rec);
    // Sequence number 1's aad does not open sequence 0's ciphertext (single-shot, nonce 0).
    assert_eq!(
        open(&kp, &hex(&fixture("info")), b"Count-1", &rec),
        Err(SealError::OpenFailed)
    );
}

#[test]
fn round_trip() {
    let kp = AuthorityKeyPair::generate().expect("generate");
    let aad = row_aad(0x0123_4567_89ab_cdef, "gw1.a.example");
    let rec = sealed_row(&kp, &aad);
    assert_eq!(rec.ciphertext.len(), KEY_SALT.len() + TAG_LEN);
    assert_ne!(&rec.ciphertext[..KEY_SALT.len()], &KEY_SALT[..]);
    let pt = open(&kp, SESSION_KEY_INFO, &aad, &rec).expect("open");
    assert_eq!(pt.as_slice(), &KEY_SALT[..]);
}

#[test]
fn round_trip_empty_plaintext_and_aad() {
    let kp = AuthorityKeyPair::generate().expect("generate");
    let rec = seal(kp.public(), b"", b"", b"").expect("seal");
    assert_eq!(rec.ciphertext.len(), TAG_LEN);
    assert!(open(&kp, b"", b"", &rec).expect("open").is_empty());
}

#[test]
fn each_seal_uses_a_fresh_ephemeral_key() {
    let kp = AuthorityKeyPair::generate().expect("generate");
    let aad = row_aad(7, "gw1");
    let a = sealed_row(&kp, &aad);
    let b = sealed_row(&kp, &aad);
    assert_ne!(a.enc, b.enc);
    assert_ne!(a.ciphertext, b.ciphertext);
}

#[test]
fn wrong_aad_fails() {
    let kp = AuthorityKeyPair::generate().expect("generate");
    let rec = sealed_row(&kp, &row_aad(1, "gw1"));
    for aad in [row_aad(2, "gw1"), row_aad(1, "gw2"), Vec::new()] {
        assert_eq!(
            open(&kp, SESSION_KEY_INFO, &aad, &rec),
            Err(SealError::OpenFailed)
        );
    }
}

#[test]
fn wrong_info_fails() {
    let kp = AuthorityKeyPair::generate().expect("generate");
    let aad = row_aad(1, "gw1");
    let rec = sealed_row(&kp, &aad);
    assert_eq!(
        open(&kp, b"voxgate session_key v2", &aad, &rec),
        Err(SealError::OpenFailed)
    );
}

#[test]
fn wrong_key_fails() {
    let kp = AuthorityKeyPair::generate().expect("generate");
    let other = AuthorityKeyPair::generate().expect("generate");
    let aad = row_aad(1, "gw1");
    let rec = sealed_row(&kp, &aad);
    assert_eq!(
        open(&other, SESSION_KEY_INFO, &aad, &rec),
        Err(SealError::OpenFailed)
    );
}

/// A record (or part of one) copied into another row of the table does not open there.
#[test]
fn records_are_bound_to_their_row() {
    let kp = AuthorityKeyPair::generate().expect("generate");
    let aad_a = row_aad(100, "gw1.a.example");
    let aad_b = row_aad(101, "gw1.a.example");
    let rec_a = sealed_row(&kp, &aad_a);
    let rec_b = sealed_row(&kp, &aad_b);
    // Whole record moved.
    assert_eq!(
        open(&kp, SESSION_KEY_INFO, &aad_b, &rec_a),
        Err(SealError::OpenFailed)
    );
    // Parts mixed across rows.
    let mixed = SealedRecord {
        enc: rec_a.enc,
        ciphertext: rec_b.ciphertext.clone(),
    };
    assert_eq!(
        open(&kp, SESSION_KEY_INFO, &aad_a, &mixed),
        Err(SealError::OpenFailed)
    );
    assert_eq!(
        open(&kp, SESSION_KEY_INFO, &aad_b, &mixed),
        Err(SealError::OpenFailed)
    );
    // Each still opens in its own row.
    assert!(open(&kp, SESSION_KEY_INFO, &aad_a, &rec_a).is_ok());
    assert!(open(&kp, SESSION_KEY_INFO, &aad_b, &rec_b).is_ok());
}

#[test]
fn truncated_records_fail() {
    let kp = AuthorityKeyPair::generate().expect("generate");
    let aad = row_aad(1, "gw1");
    let bytes = sealed_row(&kp, &aad).to_bytes();
    for len in 0..bytes.len() {
        let cut = &bytes[..len];
        match SealedRecord::from_bytes(cut) {
            Err(SealError::Truncated { len: l, min }) => {
                assert_eq!(l, len);
                assert_eq!(min, HEADER_LEN + TAG_LEN);
                assert!(len < min);
            }
            Err(e) => panic!("length {len}: unexpected {e}"),
            Ok(rec) => assert_eq!(
                open(&kp, SESSION_KEY_INFO, &aad, &rec),
                Err(SealError::OpenFailed),
                "length {len}"
            ),
        }
    }
    // A record built by hand with less than a tag.
    let short = SealedRecord {
        enc: [9; 32],
        ciphertext: vec![0; TAG_LEN - 1],
    };
    assert!(matches!(
        open(&kp, SESSION_KEY_INFO, &aad, &short),
        Err(SealError::Truncated { .. })
    ));
}

#[test]
fn bit_flipped_records_fail() {
    let kp = AuthorityKeyPair::generate().expect("generate");
    let aad = row_aad(1, "gw1");
    let bytes = sealed_row(&kp, &aad).to_bytes();
    for i in 0..bytes.len() * 8 {
        let mut flipped = bytes.clone();
        flipped[i / 8] ^= 1 << (i % 8);
        let res = SealedRecord::from_bytes(&flipped)
            .and_then(|rec| open(&kp, SESSION_KEY_INFO, &aad, &rec).map(|pt| pt.to_vec()));
        match res {
            Err(SealError::UnsupportedVersion(_)) => assert_eq!(i / 8, 0, "bit {i}"),
            Err(SealError::UnsupportedSuite { .. }) => {
                assert!((1..7).contains(&(i / 8)), "bit {i}")
            }
            // Flipping the top bit of enc (ignored by X25519) or any other: the tag catches it.
            Err(SealError::OpenFailed) | Err(SealError::InvalidEncapsulatedKey) => {}
            other => panic!("bit {i}: {other:?}"),
        }
    }
}

#[test]
fn garbage_records_fail_without_panic() {
    let kp = AuthorityKeyPair::generate().expect("generate");
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    for len in [0, 1, 38, 39, 54, 55, 56, 100, 1000] {
        let mut bytes: Vec<u8> = (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state.to_le_bytes()[0]
            })
            .collect();
        if len >= 7 {
            bytes[..7].copy_from_slice(&[1, 0x00, 0x20, 0x00, 0x01, 0x00, 0x01]);
        }
        if let Ok(rec) = SealedRecord::from_bytes(&bytes) {
            assert!(open(&kp, SESSION_KEY_INFO, b"", &rec).is_err());
        }
    }
}

#[test]
fn low_order_enc_is_refused() {
    let kp = AuthorityKeyPair::generate().expect("generate");
    for enc in [[0u8; 32], {
        let mut one = [0u8; 32];
        one[0] = 1;
        one
    }] {
        let rec = SealedRecord {
            enc,
            ciphertext: vec![0; 40],
        };
        assert_eq!(
            open(&kp, SESSION_KEY_INFO, b"", &rec),
            Err(SealError::InvalidEncapsulatedKey)
        );
    }
}

#[test]
fn encoding_round_trip_and_layout() {
    let kp = AuthorityKeyPair::generate().expect("generate");
    let rec = sealed_row(&kp, &row_aad(5, "gw1"));
    let bytes = rec.to_bytes();
    assert_eq!(bytes.len(), rec.encoded_len());
    assert_eq!(bytes.len(), HEADER_LEN + KEY_SALT.len() + TAG_LEN);
    assert_eq!(&bytes[..7], &[0x01, 0x00, 0x20, 0x00, 0x01, 0x00, 0x01]);
    assert_eq!(&bytes[7..39], &rec.enc);
    assert_eq!(&bytes[39..], rec.ciphertext.as_slice());
    assert_eq!(SealedRecord::from_bytes(&bytes), Ok(rec));
}

#[test]
fn unknown_version_and_suite_are_refused() {
    let kp = AuthorityKeyPair::generate().expect("generate");
    let bytes = sealed_row(&kp, b"row").to_bytes();
    let mut v2 = bytes.clone();
    v2[0] = 2;
    assert_eq!(
        SealedRecord::from_bytes(&v2),
        Err(SealError::UnsupportedVersion(2))
    );
    let mut chacha = bytes.clone();
    chacha[6] = 0x03;
    assert_eq!(
        SealedRecord::from_bytes(&chacha),
        Err(SealError::UnsupportedSuite {
            kem: 0x0020,
            kdf: 0x0001,
            aead: 0x0003
        })
    );
}

#[test]
fn overlong_info_is_refused() {
    let kp = AuthorityKeyPair::generate().expect("generate");
    let info = vec![b'i'; MAX_INFO_LEN + 1];
    let err = SealError::InfoTooLong {
        len: MAX_INFO_LEN + 1,
        max: MAX_INFO_LEN,
    };
    assert_eq!(seal(kp.public(), &info, b"", b"k"), Err(err.clone()));
    let rec = seal(kp.public(), &info[..MAX_INFO_LEN], b"", b"k").expect("seal");
    assert_eq!(open(&kp, &info, b"", &rec), Err(err));
    assert!(open(&kp, &info[..MAX_INFO_LEN], b"", &rec).is_ok());
}

#[test]
fn low_order_public_keys_are_refused() {
    // RFC 7748 §6.1 / libsodium's blocklist: 0, 1, and a point of order 8.
    let order8 = arr("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800");
    let one = {
        let mut b = [0u8; 32];
        b[0] = 1;
        b
    };
    for bytes in [[0u8; 32], one, order8] {
        assert_eq!(
            AuthorityPublicKey::from_bytes(bytes),
            Err(SealError::LowOrderPublicKey)
        );
        assert_eq!(
            hex_string(&bytes).parse::<AuthorityPublicKey>(),
            Err(SealError::LowOrderPublicKey)
        );
    }
}

fn hex_string(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn public_key_parses_from_hex_and_base64() {
    let kp = AuthorityKeyPair::generate().expect("generate");
    let pk = *kp.public();
    assert_eq!(pk.to_hex().parse::<AuthorityPublicKey>(), Ok(pk));
    assert_eq!(
        pk.to_hex().to_uppercase().parse::<AuthorityPublicKey>(),
        Ok(pk)
    );
    assert_eq!(pk.to_base64().parse::<AuthorityPublicKey>(), Ok(pk));
    assert_eq!(
        pk.to_base64()
            .trim_end_matches('=')
            .parse::<AuthorityPublicKey>(),
        Ok(pk)
    );
    assert_eq!(format!("  {pk}\n").parse::<AuthorityPublicKey>(), Ok(pk));
    assert_eq!(pk.to_string(), pk.to_hex());
    assert_eq!(AuthorityPublicKey::from_bytes(*pk.as_bytes()), Ok(pk));
    assert_eq!(
        format!("{pk:?}"),
        format!("AuthorityPublicKey({})", pk.to_hex())
    );
    for bad in [
        "",
        "zz",
        &pk.to_hex()[..62],
        &format!("{}00", pk.to_hex()),
        "AAAA",
        &format!("{}AAAA", pk.to_base64().trim_end_matches('=')),
    ] {
        assert!(
            matches!(
                bad.parse::<AuthorityPublicKey>(),
                Err(SealError::KeyEncoding { .. })
            ),
            "{bad:?}"
        );
    }
}

#[test]
fn secret_export_import_round_trip() {
    let kp = AuthorityKeyPair::generate().expect("generate");
    let exported = kp.secret_to_base64();
    assert_eq!(exported.len(), 44);
    let back = AuthorityKeyPair::from_secret_base64(&exported).expect("import");
    assert_eq!(back.public(), kp.public());
    assert_eq!(back.secret_bytes(), kp.secret_bytes());
    // A record sealed to the original opens with the imported pair.
    let rec = sealed_row(&kp, b"row");
    assert_eq!(
        open(&back, SESSION_KEY_INFO, b"row", &rec)
            .expect("open")
            .as_slice(),
        &KEY_SALT[..]
    );
    for bad in ["", "!!!!", "AAAA", &format!("{}AAAA", exported.as_str())] {
        assert!(
            matches!(
                AuthorityKeyPair::from_secret_base64(bad),
                Err(SealError::KeyEncoding { .. })
            ),
            "{bad:?}"
        );
    }
}

#[test]
fn generated_key_pairs_differ() {
    let a = AuthorityKeyPair::generate().expect("generate");
    let b = AuthorityKeyPair::generate().expect("generate");
    assert_ne!(a.public(), b.public());
    assert_ne!(a.secret_bytes(), b.secret_bytes());
}

#[test]
fn key_pair_debug_hides_the_secret() {
    let kp = AuthorityKeyPair::from_secret_bytes(&arr(&fixture("skRm")));
    let dbg = format!("{kp:?}");
    let pretty = format!("{kp:#?}");
    for shown in [&dbg, &pretty] {
        assert!(shown.contains("<redacted>"), "{shown}");
        assert!(shown.contains(&fixture("pkRm")), "{shown}");
        assert!(!shown.contains(&fixture("skRm")), "{shown}");
        assert!(!shown.contains(kp.secret_to_base64().as_str()), "{shown}");
        assert!(!shown.contains("70, 18, 197"), "{shown}"); // skRm's first bytes in decimal
    }
}
