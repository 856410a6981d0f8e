//! HMAC-SHA1 (RFC 2104) with the inner and outer hash states precomputed once per session key.
//!
//! Why not `aws_lc_rs::hmac`: its `Context::with_key` clones a whole `HMAC_CTX` (three hash
//! contexts) per message and cleanses it on drop; for a 172-byte SRTP packet that overhead cost
//! about as much as the hashing itself. Here a packet costs one copy of a 96-byte SHA-1 state
//! per hash, the SHA-1 blocks, and a wipe of the two copies. SHA-1 itself is AWS-LC's (with SHA-NI
//! where the CPU has it); only the two-pass HMAC construction is ours, and RFC 2202's vectors and
//! the SRTP vectors check it.
#![allow(unsafe_code)]

use aws_lc_sys::{SHA1_Final, SHA1_Init, SHA1_Update, SHA_CTX};
use zeroize::Zeroize;

const BLOCK: usize = 64;
/// SHA-1 output length.
pub(crate) const SHA1_LEN: usize = 20;

fn wipe(ctx: &mut SHA_CTX) {
    ctx.h.zeroize();
    ctx.Nl.zeroize();
    ctx.Nh.zeroize();
    ctx.data.zeroize();
    ctx.num.zeroize();
}

fn init() -> SHA_CTX {
    // SAFETY: SHA_CTX is plain data; SHA1_Init fully initialises it.
    let mut ctx: SHA_CTX = unsafe { core::mem::zeroed() };
    // SAFETY: ctx is a valid, writable SHA_CTX.
    unsafe { SHA1_Init(&mut ctx) };
    ctx
}

#[inline]
fn update(ctx: &mut SHA_CTX, data: &[u8]) {
    if !data.is_empty() {
        // SAFETY: ctx was initialised by SHA1_Init; data is valid for data.len() bytes.
        unsafe { SHA1_Update(ctx, data.as_ptr().cast(), data.len()) };
    }
}

#[inline]
fn finish(ctx: &mut SHA_CTX, out: &mut [u8; SHA1_LEN]) {
    // SAFETY: out has room for the 20-byte digest; ctx was initialised.
    unsafe { SHA1_Final(out.as_mut_ptr(), ctx) };
}

/// An HMAC-SHA1 key, ready to authenticate many messages.
pub(crate) struct HmacSha1 {
    inner: SHA_CTX,
    outer: SHA_CTX,
}

impl HmacSha1 {
    pub(crate) fn new(key: &[u8]) -> Self {
        let mut k = [0u8; BLOCK];
        if key.len() > BLOCK {
            let mut c = init();
            update(&mut c, key);
            let mut d = [0u8; SHA1_LEN];
            finish(&mut c, &mut d);
            k[..SHA1_LEN].copy_from_slice(&d);
            d.zeroize();
            wipe(&mut c);
        } else {
            k[..key.len()].copy_from_slice(key);
        }
        let mut pad = [0u8; BLOCK];
        let mut inner = init();
        pad.iter_mut().zip(&k).for_each(|(p, k)| *p = k ^ 0x36);
        update(&mut inner, &pad);
        let mut outer = init();
        pad.iter_mut().zip(&k).for_each(|(p, k)| *p = k ^ 0x5c);
        update(&mut outer, &pad);
        pad.zeroize();
        k.zeroize();
        HmacSha1 { inner, outer }
    }

    /// HMAC-SHA1(key, a || b).
    #[inline]
    pub(crate) fn tag(&self, a: &[u8], b: &[u8]) -> [u8; SHA1_LEN] {
        let mut out = [0u8; SHA1_LEN];
        let mut c = self.inner;
        update(&mut c, a);
        update(&mut c, b);
        finish(&mut c, &mut out);
        let mut o = self.outer;
        update(&mut o, &out);
        finish(&mut o, &mut out);
        // The copies hold key-equivalent state.
        wipe(&mut c);
        wipe(&mut o);
        out
    }
}

impl Drop for HmacSha1 {
    fn drop(&mut self) {
        wipe(&mut self.inner);
        wipe(&mut self.outer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// RFC 2202 §3: HMAC-SHA-1 test cases 1-7.
    #[test]
    fn rfc2202_hmac_sha1() {
        let long_key = [0xaau8; 80];
        let cases: [(&[u8], &[u8], &str); 7] = [
            (
                &[0x0b; 20],
                b"Hi There",
                "b617318655057264e28bc0b6fb378c8ef146be00",
            ),
            (
                b"Jefe",
                b"what do ya want for nothing?",
                "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79",
            ),
            (
                &[0xaa; 20],
                &[0xdd; 50],
                "125d7342b9ac11cd91a39af48aa17b4f63f175d3",
            ),
            (
                &hex("0102030405060708090a0b0c0d0e0f10111213141516171819"),
                &[0xcd; 50],
                "4c9007f4026250c6bc8414f9bf50c86c2d7235da",
            ),
            (
                &[0x0c; 20],
                b"Test With Truncation",
                "4c1a03424b55e07fe7f27be1d58bb9324a9a5a04",
            ),
            (
                &long_key,
                b"Test Using Larger Than Block-Size Key - Hash Key First",
                "aa4ae5e15272d00e95705637ce8a3b55ed402112",
            ),
            (
                &long_key,
                b"Test Using Larger Than Block-Size Key and Larger Than One Block-Size Data",
                "e8e99d0f45237d786d6bbaa7965c7808bbff1a91",
            ),
        ];
        for (i, (key, data, want)) in cases.iter().enumerate() {
            let h = HmacSha1::new(key);
            // Split the message anywhere: the two parts are hashed as one.
            let (a, b) = data.split_at(data.len() / 3);
            assert_eq!(h.tag(a, b).to_vec(), hex(want), "case {}", i + 1);
            assert_eq!(h.tag(data, &[]).to_vec(), hex(want), "case {} again", i + 1);
        }
    }
}
