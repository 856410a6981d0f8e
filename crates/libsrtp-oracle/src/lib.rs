//! A test oracle for voxgate: the system libsrtp2 (Debian `libsrtp2-dev`) behind a small safe
//! API, for differential tests of `voxgate-rtp` and for making libsrtp-protected captures.
//!
//! A [`LibSrtp`] is one libsrtp session with a single wildcard policy: `ssrc_any_outbound` for a
//! [`Direction::Sender`] (protects any SSRC) or `ssrc_any_inbound` for a [`Direction::Receiver`]
//! (unprotects any SSRC). Replay window 128, no header-extension encryption, no repeated
//! transmissions. SRTCP is always encrypted. Errors are libsrtp status codes
//! (`srtp_err_status_t`), see [`status`].
//!
//! ```
//! use voxgate_libsrtp_oracle::{Direction, LibSrtp};
//! use voxgate_rtp::SrtpProfile;
//!
//! let key_salt = [7u8; 30];
//! let mut tx = LibSrtp::new(SrtpProfile::AesCm128HmacSha1_80, &key_salt, None, Direction::Sender)?;
//! let mut rx = LibSrtp::new(SrtpProfile::AesCm128HmacSha1_80, &key_salt, None, Direction::Receiver)?;
//! let mut pkt = vec![0x80, 0, 0, 1, 0, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3];
//! tx.protect_rtp(&mut pkt)?;
//! rx.unprotect_rtp(&mut pkt)?;
//! # Ok::<(), i32>(())
//! ```
//!
//! Note: libsrtp's first SRTCP index is 1, where voxgate (RFC 3711 §3.4) starts at 0.

use std::ffi::{c_char, c_int, c_uint, c_ulong, c_void, CStr};
use std::ptr::NonNull;
use std::sync::OnceLock;

use voxgate_rtp::SrtpProfile;

/// The libsrtp status codes (`srtp_err_status_t`) the tests care about.
pub mod status {
    pub const OK: i32 = 0;
    pub const FAIL: i32 = 1;
    pub const BAD_PARAM: i32 = 2;
    pub const ALLOC_FAIL: i32 = 3;
    pub const INIT_FAIL: i32 = 5;
    pub const AUTH_FAIL: i32 = 7;
    pub const CIPHER_FAIL: i32 = 8;
    pub const REPLAY_FAIL: i32 = 9;
    pub const REPLAY_OLD: i32 = 10;
    pub const NO_CTX: i32 = 13;
    pub const KEY_EXPIRED: i32 = 15;
    pub const PARSE_ERR: i32 = 21;
    pub const BAD_MKI: i32 = 25;
    pub const PKT_IDX_OLD: i32 = 26;
    pub const PKT_IDX_ADV: i32 = 27;

    /// The `srtp_err_status_t` name of a status code, for messages.
    pub fn name(code: i32) -> &'static str {
        match code {
            0 => "ok",
            1 => "fail",
            2 => "bad_param",
            3 => "alloc_fail",
            4 => "dealloc_fail",
            5 => "init_fail",
            6 => "terminus",
            7 => "auth_fail",
            8 => "cipher_fail",
            9 => "replay_fail",
            10 => "replay_old",
            11 => "algo_fail",
            12 => "no_such_op",
            13 => "no_ctx",
            14 => "cant_check",
            15 => "key_expired",
            16 => "socket_err",
            17 => "signal_err",
            18 => "nonce_bad",
            19 => "read_fail",
            20 => "write_fail",
            21 => "parse_err",
            22 => "encode_err",
            23 => "semaphore_err",
            24 => "pfkey_err",
            25 => "bad_mki",
            26 => "pkt_idx_old",
            27 => "pkt_idx_adv",
            _ => "unknown",
        }
    }
}

mod ffi {
    use super::*;

    extern "C" {
        pub fn vg_srtp_init() -> c_int;
        pub fn vg_srtp_version_string() -> *const c_char;
        pub fn vg_srtp_version() -> c_uint;
        pub fn vg_srtp_max_trailer_len() -> usize;
        pub fn vg_srtp_list_debug_modules(out: *mut c_char, cap: usize) -> c_int;
        pub fn vg_srtp_create(
            out: *mut *mut c_void,
            profile: c_int,
            outbound: c_int,
            key_salts: *const u8,
            key_salt_len: usize,
            n_keys: usize,
            mkis: *const u8,
            mki_len: usize,
            window_size: c_ulong,
        ) -> c_int;
        pub fn vg_srtp_dealloc(session: *mut c_void) -> c_int;
        pub fn vg_srtp_protect_rtp(
            session: *mut c_void,
            buf: *mut c_void,
            len: *mut c_int,
            cap: usize,
            use_mki: c_uint,
            mki_index: c_uint,
        ) -> c_int;
        pub fn vg_srtp_unprotect_rtp(
            session: *mut c_void,
            buf: *mut c_void,
            len: *mut c_int,
            cap: usize,
            use_mki: c_uint,
        ) -> c_int;
        pub fn vg_srtp_protect_rtcp(
            session: *mut c_void,
            buf: *mut c_void,
            len: *mut c_int,
            cap: usize,
            use_mki: c_uint,
            mki_index: c_uint,
        ) -> c_int;
        pub fn vg_srtp_unprotect_rtcp(
            session: *mut c_void,
            buf: *mut c_void,
            len: *mut c_int,
            cap: usize,
            use_mki: c_uint,
        ) -> c_int;
    }
}

/// Replay window of every session (libsrtp's default, and voxgate's).
pub const WINDOW_SIZE: u32 = 128;

/// Result of the one-time `srtp_init`: the debug module names, or the init status.
static INIT: OnceLock<Result<Vec<String>, i32>> = OnceLock::new();

/// Runs `srtp_init` once per process, and lists the debug modules right after (before any
/// session exists, as listing briefly installs libsrtp's global log handler).
fn init() -> Result<&'static [String], i32> {
    let r = INIT.get_or_init(|| {
        // SAFETY: plain call; OnceLock guarantees it runs once, before any other libsrtp call
        // made through this crate.
        let st = unsafe { ffi::vg_srtp_init() };
        if st != status::OK {
            return Err(st);
        }
        let mut buf = vec![0u8; 4096];
        // SAFETY: buf is writable for buf.len() bytes; the shim NUL-terminates within it.
        let st = unsafe { ffi::vg_srtp_list_debug_modules(buf.as_mut_ptr().cast(), buf.len()) };
        if st != status::OK {
            return Ok(Vec::new());
        }
        let text = CStr::from_bytes_until_nul(&buf)
            .map(|c| c.to_string_lossy().into_owned())
            .unwrap_or_default();
        // Lines are "debug modules loaded:", then "  <name> " and "(on)"/"(off)" alternately.
        Ok(text
            .lines()
            .filter(|l| l.starts_with("  "))
            .map(|l| l.trim().to_owned())
            .filter(|l| !l.is_empty())
            .collect())
    });
    r.as_deref().map_err(|e| *e)
}

/// The libsrtp version string, e.g. `"libsrtp2 2.5.0"`.
pub fn version() -> String {
    // Not strictly needed for the version string, but keeps the library initialised.
    let _ = init();
    // SAFETY: libsrtp returns a pointer to a static NUL-terminated string.
    unsafe {
        let p = ffi::vg_srtp_version_string();
        if p.is_null() {
            return String::new();
        }
        CStr::from_ptr(p).to_string_lossy().into_owned()
    }
}

/// The libsrtp version as `(major, minor, micro)`, e.g. `(2, 5, 0)` (`srtp_get_version`).
pub fn version_tuple() -> (u32, u32, u32) {
    let _ = init();
    // SAFETY: plain call returning an integer.
    let v = unsafe { ffi::vg_srtp_version() };
    (v >> 24, (v >> 16) & 0xff, v & 0xffff)
}

/// Whether this libsrtp has bug #733 (fixed in 2.7.0): `srtp_unprotect_rtcp_mki` looks for the
/// MKI using the SRTP tag length instead of the SRTCP one, so with AES_CM_128_HMAC_SHA1_32 and
/// an MKI it rejects every SRTCP packet (its own included) with `bad_mki`.
pub fn has_rtcp_mki_tag_len_bug() -> bool {
    version_tuple() < (2, 7, 0)
}

/// The names of libsrtp's debug modules (`srtp_list_debug_modules`), e.g. `"aes icm nss"`.
pub fn debug_modules() -> Vec<String> {
    init().map(<[String]>::to_vec).unwrap_or_default()
}

/// Which crypto library libsrtp was built with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CryptoBackend {
    /// libsrtp's own AES and SHA-1 (no AES-GCM).
    Builtin,
    OpenSsl,
    Nss,
    MbedTls,
    /// The module names did not say.
    Unknown,
}

/// The crypto backend, read from the debug module names (libsrtp names its AES-ICM module
/// `"aes icm"`, `"aes icm ossl"`, `"aes icm nss"` or `"aes icm mbedtls"`).
pub fn crypto_backend() -> CryptoBackend {
    let mods = debug_modules();
    let Some(icm) = mods.iter().find(|m| m.starts_with("aes icm")) else {
        return CryptoBackend::Unknown;
    };
    match icm.trim_start_matches("aes icm").trim() {
        "" => CryptoBackend::Builtin,
        "ossl" | "openssl" => CryptoBackend::OpenSsl,
        "nss" => CryptoBackend::Nss,
        "mbedtls" => CryptoBackend::MbedTls,
        _ => CryptoBackend::Unknown,
    }
}

/// Which wildcard SSRC policy a session gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// `ssrc_any_outbound`: protect packets of any SSRC.
    Sender,
    /// `ssrc_any_inbound`: unprotect packets of any SSRC.
    Receiver,
}

fn profile_code(p: SrtpProfile) -> c_int {
    match p {
        SrtpProfile::AesCm128HmacSha1_80 => 0,
        SrtpProfile::AesCm128HmacSha1_32 => 1,
        SrtpProfile::AeadAes128Gcm => 2,
        SrtpProfile::AeadAes256Gcm => 3,
    }
}

/// One libsrtp session (`srtp_t`), freed on drop.
#[derive(Debug)]
pub struct LibSrtp {
    session: NonNull<c_void>,
    profile: SrtpProfile,
    direction: Direction,
    mkis: Vec<Vec<u8>>,
    active: usize,
}

// SAFETY: a libsrtp session has no thread affinity; it is only touched through &mut self.
unsafe impl Send for LibSrtp {}

impl LibSrtp {
    /// A session with one master key (`key_salt` = master key || master salt, 30, 28 or 44
    /// bytes), with an MKI when `mki` is given (then packets carry it, as with
    /// `srtp_protect_mki(use_mki = 1)`).
    pub fn new(
        profile: SrtpProfile,
        key_salt: &[u8],
        mki: Option<&[u8]>,
        direction: Direction,
    ) -> Result<Self, i32> {
        match mki {
            None => Self::create(profile, &[key_salt], &[], 0, direction),
            Some(m) => Self::with_keys(profile, &[(key_salt, m)], direction),
        }
    }

    /// A session with several master keys, each `(key || salt, MKI)`; all MKIs must have the
    /// same length (1..=128 bytes), at most 16 keys. The sender protects with the first key
    /// until [`Self::set_active_mki`] picks another.
    pub fn with_keys(
        profile: SrtpProfile,
        keys: &[(&[u8], &[u8])],
        direction: Direction,
    ) -> Result<Self, i32> {
        let Some(&(_, first_mki)) = keys.first() else {
            return Err(status::BAD_PARAM);
        };
        let mki_len = first_mki.len();
        if mki_len == 0 || keys.iter().any(|(_, m)| m.len() != mki_len) {
            return Err(status::BAD_PARAM);
        }
        let key_salts: Vec<&[u8]> = keys.iter().map(|(k, _)| *k).collect();
        let mkis: Vec<&[u8]> = keys.iter().map(|(_, m)| *m).collect();
        Self::create(profile, &key_salts, &mkis, mki_len, direction)
    }

    fn create(
        profile: SrtpProfile,
        key_salts: &[&[u8]],
        mkis: &[&[u8]],
        mki_len: usize,
        direction: Direction,
    ) -> Result<Self, i32> {
        init()?;
        let ks_len = profile.key_len() + profile.salt_len();
        if key_salts.is_empty() || key_salts.iter().any(|k| k.len() != ks_len) {
            return Err(status::BAD_PARAM);
        }
        let flat_keys: Vec<u8> = key_salts.concat();
        let flat_mkis: Vec<u8> = mkis.concat();
        let mut out: *mut c_void = std::ptr::null_mut();
        // SAFETY: all pointers are valid for the lengths given; libsrtp copies what it keeps.
        let st = unsafe {
            ffi::vg_srtp_create(
                &mut out,
                profile_code(profile),
                c_int::from(direction == Direction::Sender),
                flat_keys.as_ptr(),
                ks_len,
                key_salts.len(),
                if mki_len == 0 {
                    std::ptr::null()
                } else {
                    flat_mkis.as_ptr()
                },
                mki_len,
                c_ulong::from(WINDOW_SIZE),
            )
        };
        if st != status::OK {
            return Err(st);
        }
        let session = NonNull::new(out).ok_or(status::FAIL)?;
        Ok(LibSrtp {
            session,
            profile,
            direction,
            mkis: mkis.iter().map(|m| m.to_vec()).collect(),
            active: 0,
        })
    }

    pub fn profile(&self) -> SrtpProfile {
        self.profile
    }

    pub fn direction(&self) -> Direction {
        self.direction
    }

    /// Chooses, by its MKI, the master key the sender protects with from now on.
    pub fn set_active_mki(&mut self, mki: &[u8]) -> Result<(), i32> {
        self.active = self
            .mkis
            .iter()
            .position(|m| m == mki)
            .ok_or(status::BAD_MKI)?;
        Ok(())
    }

    fn use_mki(&self) -> c_uint {
        c_uint::from(!self.mkis.is_empty())
    }

    /// Runs one libsrtp packet function on `pkt`, with `spare` extra bytes of room.
    fn run(
        &mut self,
        pkt: &mut Vec<u8>,
        spare: usize,
        f: impl FnOnce(*mut c_void, *mut c_void, *mut c_int, usize) -> c_int,
    ) -> Result<(), i32> {
        let orig = pkt.len();
        let mut len = c_int::try_from(orig).map_err(|_| status::BAD_PARAM)?;
        pkt.resize(orig + spare, 0);
        let st = f(
            self.session.as_ptr(),
            pkt.as_mut_ptr().cast(),
            &mut len,
            pkt.len(),
        );
        match usize::try_from(len) {
            Ok(n) if st == status::OK && n <= pkt.len() => {
                pkt.truncate(n);
                Ok(())
            }
            _ => {
                pkt.truncate(orig);
                Err(if st == status::OK { status::FAIL } else { st })
            }
        }
    }

    /// `srtp_protect_mki`: RTP in, SRTP out (the vector grows by tag + MKI).
    pub fn protect_rtp(&mut self, pkt: &mut Vec<u8>) -> Result<(), i32> {
        // SAFETY: trailer length is a constant of the header.
        let spare = unsafe { ffi::vg_srtp_max_trailer_len() };
        let (use_mki, idx) = (self.use_mki(), self.active as c_uint);
        // SAFETY: buf is valid for cap bytes, len <= cap - spare (checked again in C).
        self.run(pkt, spare, |s, b, l, cap| unsafe {
            ffi::vg_srtp_protect_rtp(s, b, l, cap, use_mki, idx)
        })
    }

    /// `srtp_unprotect_mki`: SRTP in, RTP out. On error the vector's contents are unspecified
    /// (libsrtp may have decrypted in place) but its length is unchanged.
    pub fn unprotect_rtp(&mut self, pkt: &mut Vec<u8>) -> Result<(), i32> {
        let use_mki = self.use_mki();
        // SAFETY: buf is valid for cap bytes and len == cap.
        self.run(pkt, 0, |s, b, l, cap| unsafe {
            ffi::vg_srtp_unprotect_rtp(s, b, l, cap, use_mki)
        })
    }

    /// `srtp_protect_rtcp_mki`: RTCP in, SRTCP out (E flag set, first index 1).
    pub fn protect_rtcp(&mut self, pkt: &mut Vec<u8>) -> Result<(), i32> {
        // SAFETY: trailer length is a constant of the header.
        let spare = unsafe { ffi::vg_srtp_max_trailer_len() } + 4;
        let (use_mki, idx) = (self.use_mki(), self.active as c_uint);
        // SAFETY: buf is valid for cap bytes, len <= cap - spare (checked again in C).
        self.run(pkt, spare, |s, b, l, cap| unsafe {
            ffi::vg_srtp_protect_rtcp(s, b, l, cap, use_mki, idx)
        })
    }

    /// `srtp_unprotect_rtcp_mki`: SRTCP in, RTCP out.
    pub fn unprotect_rtcp(&mut self, pkt: &mut Vec<u8>) -> Result<(), i32> {
        let use_mki = self.use_mki();
        // SAFETY: buf is valid for cap bytes and len == cap.
        self.run(pkt, 0, |s, b, l, cap| unsafe {
            ffi::vg_srtp_unprotect_rtcp(s, b, l, cap, use_mki)
        })
    }
}

impl Drop for LibSrtp {
    fn drop(&mut self) {
        // SAFETY: the session was created by srtp_create and is freed exactly once.
        unsafe {
            ffi::vg_srtp_dealloc(self.session.as_ptr());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_and_backend() {
        let v = version();
        assert!(v.starts_with("libsrtp2 2."), "{v}");
        let (major, minor, micro) = version_tuple();
        assert_eq!(v, format!("libsrtp2 {major}.{minor}.{micro}"));
        assert!(!debug_modules().is_empty());
        assert_ne!(crypto_backend(), CryptoBackend::Unknown);
    }

    #[test]
    fn round_trip_each_profile() {
        for p in SrtpProfile::ALL {
            let ks = vec![0x5a; p.key_len() + p.salt_len()];
            let mut tx = LibSrtp::new(p, &ks, None, Direction::Sender).unwrap();
            let mut rx = LibSrtp::new(p, &ks, None, Direction::Receiver).unwrap();
            let plain = vec![0x80, 0x60, 0, 1, 0, 0, 0, 9, 1, 2, 3, 4, 0xaa, 0xbb, 0xcc];
            let mut pkt = plain.clone();
            tx.protect_rtp(&mut pkt).unwrap();
            assert_eq!(pkt.len(), plain.len() + p.srtp_tag_len());
            rx.unprotect_rtp(&mut pkt).unwrap();
            assert_eq!(pkt, plain);
            let mut again = plain.clone();
            tx.protect_rtp(&mut again).unwrap_err();
        }
    }

    #[test]
    fn bad_key_length() {
        let e = LibSrtp::new(
            SrtpProfile::AeadAes128Gcm,
            &[0; 30],
            None,
            Direction::Sender,
        )
        .unwrap_err();
        assert_eq!(e, status::BAD_PARAM);
    }
}
