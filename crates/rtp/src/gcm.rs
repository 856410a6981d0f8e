//! AES-GCM (NIST SP 800-38D) for short packets, on AES-NI and PCLMULQDQ.
//!
//! Why not aws-lc-rs here: for an SRTP packet (12-byte AAD, 160-byte payload) about 95 ns of a
//! `LessSafeKey` call is fixed cost inside AWS-LC (a copy of the GCM key context per call,
//! single-block GHASH calls for the AAD and length blocks, separate IV set-up), which keeps SRTP
//! below the 3x-libsrtp target. This implementation keeps the key schedule and eight powers of H
//! precomputed, encrypts J0 together with the first counter blocks, and hashes eight blocks per
//! reduction. `open` authenticates before it decrypts, so a packet that fails is left as it was.
//!
//! GHASH is computed through POLYVAL (RFC 8452 Appendix A): GHASH(H, X) =
//! ByteReverse(POLYVAL(mulX_POLYVAL(ByteReverse(H)), ByteReverse(X_i)...)), which avoids bit
//! reflection. Everything is constant time (AES-NI and carry-less multiply, no table lookups).
//! Used only when the CPU has AES-NI, PCLMULQDQ, SSSE3 and SSE4.1; otherwise the caller uses
//! aws-lc-rs. Tests compare it with aws-lc-rs on random keys, IVs, AADs and lengths.
#![allow(unsafe_code)]

#[cfg(target_arch = "x86_64")]
pub(crate) use imp::AesNiGcm;

#[cfg(not(target_arch = "x86_64"))]
pub(crate) struct AesNiGcm;

#[cfg(not(target_arch = "x86_64"))]
impl AesNiGcm {
    pub(crate) fn new(_key: &[u8]) -> Option<Self> {
        None
    }
    pub(crate) fn seal(&self, _iv: &[u8; 12], _aad: &[u8], _data: &mut [u8]) -> [u8; 16] {
        unreachable!("never constructed on this architecture")
    }
    pub(crate) fn ctr_keystream(&self, _iv: &[u8; 16], _data: &mut [u8]) -> bool {
        false
    }
    pub(crate) fn open(&self, _iv: &[u8; 12], _aad: &[u8], _data: &mut [u8], _tag: &[u8]) -> bool {
        unreachable!("never constructed on this architecture")
    }
}

#[cfg(target_arch = "x86_64")]
mod imp {
    use core::arch::x86_64::*;

    /// Blocks hashed per reduction: a 480-byte SRTP payload with its header and length block is
    /// one group.
    const GROUP: usize = 32;

    /// An AES-128 or AES-256 GCM key with precomputed round keys and powers of H.
    pub(crate) struct AesNiGcm {
        rk: [__m128i; 15],
        rounds: usize,
        /// hpow[i] = H^(i+1) in the POLYVAL domain.
        hpow: [__m128i; GROUP],
        /// Which path runs: 128-bit AES-NI/PCLMULQDQ, 256-bit VAES/VPCLMULQDQ (`*_wide`), or
        /// 512-bit AVX-512 VAES/VPCLMULQDQ (`*_x4`).
        width: Width,
        /// hpair[j] = (H^(j+2), H^(j+1)) in the (low, high) lanes (256-bit path).
        hpair: [__m256i; GROUP - 1],
        /// hquad[t] = (H^t, H^(t-1), H^(t-2), H^(t-3)) in lanes 0..4, zero where the exponent
        /// is below 1 (512-bit path): the factors for up to four blocks when `t` blocks are
        /// left in the group.
        hquad: [__m512i; GROUP + 1],
    }

    /// Vector width of the GCM code path.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) enum Width {
        W128,
        W256,
        W512,
    }

    fn cpu_wide() -> bool {
        std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("vaes")
            && std::is_x86_feature_detected!("vpclmulqdq")
    }

    fn cpu_x4() -> bool {
        cpu_wide()
            && std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
    }

    /// The widest path this CPU runs.
    pub(crate) fn best_width() -> Width {
        if cpu_x4() {
            Width::W512
        } else if cpu_wide() {
            Width::W256
        } else {
            Width::W128
        }
    }

    fn cpu_ok() -> bool {
        std::is_x86_feature_detected!("aes")
            && std::is_x86_feature_detected!("pclmulqdq")
            && std::is_x86_feature_detected!("ssse3")
            && std::is_x86_feature_detected!("sse4.1")
    }

    impl AesNiGcm {
        /// A key of 16 or 32 bytes; `None` when the CPU lacks the instructions.
        pub(crate) fn new(key: &[u8]) -> Option<Self> {
            Self::with_width(key, best_width())
        }

        /// As `new`, with at most the given width (capped at what the CPU runs). Tests use it
        /// to cover every path.
        pub(crate) fn with_width(key: &[u8], width: Width) -> Option<Self> {
            if !cpu_ok() || !(key.len() == 16 || key.len() == 32) {
                return None;
            }
            let width = match (width, best_width()) {
                (Width::W512, b) => b,
                (Width::W256, Width::W128) => Width::W128,
                (Width::W256, _) => Width::W256,
                (Width::W128, _) => Width::W128,
            };
            // SAFETY: the CPU features were checked above.
            let mut g = unsafe { Self::new_impl(key) };
            g.width = width;
            match width {
                Width::W128 => {}
                Width::W256 => {
                    for j in 0..GROUP - 1 {
                        // SAFETY: AVX is implied by AVX2, checked by cpu_wide().
                        g.hpair[j] = unsafe { pair(g.hpow[j], g.hpow[j + 1]) };
                    }
                }
                Width::W512 => {
                    for t in 0..=GROUP {
                        // Lane L holds H^(t-L), or zero when t-L < 1.
                        let lane = |l: usize| {
                            if t > l {
                                g.hpow[t - l - 1]
                            } else {
                                // SAFETY: an all-zero __m128i is valid.
                                unsafe { core::mem::zeroed() }
                            }
                        };
                        let lanes = [lane(0), lane(1), lane(2), lane(3)];
                        // SAFETY: [__m128i; 4] and __m512i have the same size.
                        g.hquad[t] =
                            unsafe { core::mem::transmute::<[__m128i; 4], __m512i>(lanes) };
                    }
                }
            }
            Some(g)
        }

        #[target_feature(enable = "aes,pclmulqdq,ssse3,sse4.1")]
        unsafe fn new_impl(key: &[u8]) -> Self {
            let mut rk = [_mm_setzero_si128(); 15];
            let rounds = if key.len() == 16 {
                expand128(key, &mut rk);
                10
            } else {
                expand256(key, &mut rk);
                14
            };
            let mut g = AesNiGcm {
                rk,
                rounds,
                hpow: [_mm_setzero_si128(); GROUP],
                width: Width::W128,
                hpair: [core::mem::zeroed(); GROUP - 1],
                hquad: [core::mem::zeroed(); GROUP + 1],
            };
            // H = E_K(0^128); the POLYVAL key is mulX_POLYVAL(ByteReverse(H)).
            let h = g.encrypt1(_mm_setzero_si128());
            let mut hb = [0u8; 16];
            _mm_storeu_si128(hb.as_mut_ptr().cast(), h);
            let mut v = u128::from_be_bytes(hb);
            let carry = v >> 127;
            v <<= 1;
            if carry == 1 {
                v ^= (1u128 << 127) | (1u128 << 126) | (1u128 << 121) | 1;
            }
            let mut vb = v.to_le_bytes();
            let h1 = _mm_loadu_si128(vb.as_ptr().cast());
            g.hpow[0] = h1;
            for i in 1..GROUP {
                let (lo, mid, hi) = mul(g.hpow[i - 1], h1);
                g.hpow[i] = reduce(lo, mid, hi);
            }
            zeroize::Zeroize::zeroize(&mut hb);
            zeroize::Zeroize::zeroize(&mut vb);
            g
        }

        /// The vector width this key runs on.
        #[cfg(test)]
        pub(crate) fn width(&self) -> Width {
            self.width
        }

        /// RFC 3711 §4.1.1 AES-CM: XORs the keystream E(IV), E(IV+1), ... into `data`. The IV's
        /// low 16 bits are zero (SRTP puts the block counter there), so `data` may be at most
        /// 2^16 blocks; longer input returns false and is left unchanged.
        pub(crate) fn ctr_keystream(&self, iv: &[u8; 16], data: &mut [u8]) -> bool {
            if data.len() > (1 << 16) * 16 || iv[14] != 0 || iv[15] != 0 {
                return false;
            }
            // SAFETY: the CPU features of `width` were checked at construction.
            unsafe {
                let ivb = _mm_loadu_si128(iv.as_ptr().cast());
                match self.width {
                    Width::W512 => self.ctr_x4_from(ivb, data, 0),
                    _ => {
                        self.ctr_from(ivb, data, false, 0);
                    }
                }
            }
            true
        }

        /// Encrypts `data` in place and returns the tag.
        pub(crate) fn seal(&self, iv: &[u8; 12], aad: &[u8], data: &mut [u8]) -> [u8; 16] {
            // SAFETY: an AesNiGcm exists only after the CPU features of its width were checked.
            unsafe {
                let ivb = load_iv(iv);
                let ej0 = self.ctr_any(ivb, data, true);
                let mut out = [0u8; 16];
                _mm_storeu_si128(out.as_mut_ptr().cast(), self.tag_any(aad, data, ej0));
                out
            }
        }

        /// Verifies `tag` over `aad` and the ciphertext `data`, then decrypts in place. On a
        /// mismatch returns false and leaves `data` unchanged.
        pub(crate) fn open(&self, iv: &[u8; 12], aad: &[u8], data: &mut [u8], tag: &[u8]) -> bool {
            if tag.len() != 16 {
                return false;
            }
            // SAFETY: as above; `tag` is 16 readable bytes.
            unsafe {
                let ivb = load_iv(iv);
                let ej0 = self.encrypt1(_mm_insert_epi32::<3>(ivb, 1u32.swap_bytes() as i32));
                let t = self.tag_any(aad, data, ej0);
                let given = _mm_loadu_si128(tag.as_ptr().cast());
                // Constant time: one compare of all 16 bytes, one branch on the result.
                if _mm_movemask_epi8(_mm_cmpeq_epi8(t, given)) != 0xffff {
                    return false;
                }
                self.ctr_any(ivb, data, false);
            }
            true
        }

        /// GCM CTR over `data` on this key's width; with `j0`, also returns E(J0).
        #[inline]
        unsafe fn ctr_any(&self, ivb: __m128i, data: &mut [u8], j0: bool) -> __m128i {
            match self.width {
                Width::W512 => {
                    self.ctr_x4(ivb, data);
                    if j0 {
                        self.encrypt1(_mm_insert_epi32::<3>(ivb, 1u32.swap_bytes() as i32))
                    } else {
                        _mm_setzero_si128()
                    }
                }
                Width::W256 => self.ctr_wide(ivb, data, j0),
                Width::W128 => self.ctr(ivb, data, j0),
            }
        }

        /// The tag over `aad` and ciphertext `ct` on this key's width.
        #[inline]
        unsafe fn tag_any(&self, aad: &[u8], ct: &[u8], ej0: __m128i) -> __m128i {
            match self.width {
                Width::W512 => self.tag_x4(aad, ct, ej0),
                Width::W256 => self.tag_wide(aad, ct, ej0),
                Width::W128 => self.tag(aad, ct, ej0),
            }
        }

        #[target_feature(enable = "aes,pclmulqdq,ssse3,sse4.1")]
        unsafe fn encrypt1(&self, mut x: __m128i) -> __m128i {
            x = _mm_xor_si128(x, self.rk[0]);
            for r in 1..self.rounds {
                x = _mm_aesenc_si128(x, self.rk[r]);
            }
            _mm_aesenclast_si128(x, self.rk[self.rounds])
        }

        /// Encrypts `N` blocks in parallel (the rounds interleave across blocks).
        #[inline]
        #[target_feature(enable = "aes,pclmulqdq,ssse3,sse4.1")]
        unsafe fn encrypt_blocks<const N: usize>(&self, b: &mut [__m128i; N]) {
            let k0 = self.rk[0];
            for x in b.iter_mut() {
                *x = _mm_xor_si128(*x, k0);
            }
            for r in 1..self.rounds {
                let k = self.rk[r];
                for x in b.iter_mut() {
                    *x = _mm_aesenc_si128(*x, k);
                }
            }
            let k = self.rk[self.rounds];
            for x in b.iter_mut() {
                *x = _mm_aesenclast_si128(*x, k);
            }
        }

        /// XORs the keystream of counters `*ctr..*ctr+N` into `chunk` (16*N bytes).
        #[inline]
        #[target_feature(enable = "aes,pclmulqdq,ssse3,sse4.1")]
        unsafe fn ctr_batch<const N: usize>(&self, iv: __m128i, ctr: &mut u32, chunk: &mut [u8]) {
            debug_assert_eq!(chunk.len(), 16 * N);
            let mut b = [_mm_setzero_si128(); N];
            for (i, x) in b.iter_mut().enumerate() {
                // XOR, not insert: GCM's IV has zeros there, AES-CM's has index bytes in 12..14.
                let c = ctr.wrapping_add(i as u32).swap_bytes() as i32;
                *x = _mm_xor_si128(iv, _mm_set_epi32(c, 0, 0, 0));
            }
            *ctr = ctr.wrapping_add(N as u32);
            self.encrypt_blocks::<N>(&mut b);
            let p = chunk.as_mut_ptr();
            for (i, ks) in b.iter().enumerate() {
                let q = p.add(16 * i).cast::<__m128i>();
                _mm_storeu_si128(q, _mm_xor_si128(_mm_loadu_si128(q), *ks));
            }
        }

        /// GCM's CTR mode over `data`, counters from 2 (inc32 of J0 = IV || 1). With `j0`, E(J0)
        /// (the tag mask) is computed in the last batch, alongside the data, and returned.
        #[target_feature(enable = "aes,pclmulqdq,ssse3,sse4.1")]
        unsafe fn ctr(&self, iv: __m128i, data: &mut [u8], j0: bool) -> __m128i {
            self.ctr_from(iv, data, j0, 2)
        }

        /// CTR over `data` with counters from `first` XORed into the last word of `iv`.
        #[target_feature(enable = "aes,pclmulqdq,ssse3,sse4.1")]
        unsafe fn ctr_from(&self, iv: __m128i, data: &mut [u8], j0: bool, first: u32) -> __m128i {
            let mut ctr: u32 = first;
            let mut chunks = data.chunks_exact_mut(128);
            for c in &mut chunks {
                self.ctr_batch::<8>(iv, &mut ctr, c);
            }
            let rest = chunks.into_remainder();
            if !j0 {
                let mut ctr2 = ctr;
                let mut full = rest.chunks_exact_mut(16);
                for c in &mut full {
                    self.ctr_batch::<1>(iv, &mut ctr2, c);
                }
                let tail = full.into_remainder();
                if !tail.is_empty() {
                    let mut tmp = [0u8; 16];
                    tmp[..tail.len()].copy_from_slice(tail);
                    self.ctr_batch::<1>(iv, &mut ctr2, &mut tmp);
                    tail.copy_from_slice(&tmp[..tail.len()]);
                }
                return _mm_setzero_si128();
            }
            // The last 0..=8 blocks (the last one possibly partial) and J0 in one batch.
            match rest.len().div_ceil(16) {
                0 => self.tail_j0::<0, 1>(iv, ctr, rest),
                1 => self.tail_j0::<1, 2>(iv, ctr, rest),
                2 => self.tail_j0::<2, 3>(iv, ctr, rest),
                3 => self.tail_j0::<3, 4>(iv, ctr, rest),
                4 => self.tail_j0::<4, 5>(iv, ctr, rest),
                5 => self.tail_j0::<5, 6>(iv, ctr, rest),
                6 => self.tail_j0::<6, 7>(iv, ctr, rest),
                7 => self.tail_j0::<7, 8>(iv, ctr, rest),
                _ => self.tail_j0::<8, 9>(iv, ctr, rest),
            }
        }

        /// CTR over the last `D` blocks of data (the last one possibly partial) plus J0: `M`
        /// blocks in one batch (`M == D + 1`). Returns E(J0).
        #[inline]
        #[target_feature(enable = "aes,pclmulqdq,ssse3,sse4.1")]
        unsafe fn tail_j0<const D: usize, const M: usize>(
            &self,
            iv: __m128i,
            ctr: u32,
            rest: &mut [u8],
        ) -> __m128i {
            debug_assert!(M == D + 1 && rest.len().div_ceil(16) == D);
            let mut b = [_mm_setzero_si128(); M];
            for (i, x) in b.iter_mut().enumerate().take(D) {
                *x = _mm_insert_epi32::<3>(iv, ctr.wrapping_add(i as u32).swap_bytes() as i32);
            }
            b[D] = _mm_insert_epi32::<3>(iv, 1u32.swap_bytes() as i32);
            self.encrypt_blocks::<M>(&mut b);
            for (i, ks) in b.iter().enumerate().take(D) {
                let at = 16 * i;
                let n = (rest.len() - at).min(16);
                if n == 16 {
                    let q = rest.as_mut_ptr().add(at).cast::<__m128i>();
                    _mm_storeu_si128(q, _mm_xor_si128(_mm_loadu_si128(q), *ks));
                } else {
                    let mut tmp = [0u8; 16];
                    tmp[..n].copy_from_slice(&rest[at..]);
                    let x = _mm_xor_si128(_mm_loadu_si128(tmp.as_ptr().cast()), *ks);
                    _mm_storeu_si128(tmp.as_mut_ptr().cast(), x);
                    rest[at..].copy_from_slice(&tmp[..n]);
                }
            }
            b[D]
        }

        /// The GCM tag: GHASH over `aad`, `ct` (each zero-padded) and the length block, XOR
        /// E(J0). Blocks are hashed in groups of up to `GROUP` with one reduction per group:
        /// within a group each block is multiplied by the power of H its distance from the
        /// group's end calls for, so segments are walked independently over contiguous memory,
        /// and the running value enters the next group as one more product.
        #[target_feature(enable = "aes,pclmulqdq,ssse3,sse4.1")]
        unsafe fn tag(&self, aad: &[u8], ct: &[u8], ej0: __m128i) -> __m128i {
            let mut lens = [0u8; 16];
            lens[..8].copy_from_slice(&((aad.len() as u64) * 8).to_be_bytes());
            lens[8..].copy_from_slice(&((ct.len() as u64) * 8).to_be_bytes());
            let total = aad.len().div_ceil(16) + ct.len().div_ceil(16) + 1;
            let mut g = Ghash {
                hpow: &self.hpow,
                total,
                idx: 0,
                group_end: match total % GROUP {
                    0 => GROUP,
                    n => n,
                },
                lo: _mm_setzero_si128(),
                mid: _mm_setzero_si128(),
                hi: _mm_setzero_si128(),
                acc: _mm_setzero_si128(),
                rev: bswap_mask(),
            };
            g.absorb(aad);
            g.absorb(ct);
            g.absorb(&lens);
            _mm_xor_si128(_mm_shuffle_epi8(g.acc, g.rev), ej0)
        }
    }

    /// Aggregated GHASH state (POLYVAL domain) over a sequence of segments; see `tag`.
    struct Ghash<'a> {
        hpow: &'a [__m128i; GROUP],
        total: usize,
        idx: usize,
        group_end: usize,
        lo: __m128i,
        mid: __m128i,
        hi: __m128i,
        acc: __m128i,
        rev: __m128i,
    }

    impl Ghash<'_> {
        #[inline]
        #[target_feature(enable = "aes,pclmulqdq,ssse3,sse4.1")]
        unsafe fn block(&mut self, x: __m128i) {
            let x = _mm_shuffle_epi8(x, self.rev);
            let (l, m, h) = mul(x, self.hpow[self.group_end - self.idx - 1]);
            self.lo = _mm_xor_si128(self.lo, l);
            self.mid = _mm_xor_si128(self.mid, m);
            self.hi = _mm_xor_si128(self.hi, h);
            self.idx += 1;
            if self.idx == self.group_end {
                self.acc = reduce(self.lo, self.mid, self.hi);
                let next = (self.total - self.idx).min(GROUP);
                if next > 0 {
                    // The running value joins the next group as acc * H^next.
                    let (l, m, h) = mul(self.acc, self.hpow[next - 1]);
                    self.lo = l;
                    self.mid = m;
                    self.hi = h;
                    self.group_end += next;
                }
            }
        }

        /// Hashes `seg` as whole blocks, the last one zero-padded.
        #[inline]
        #[target_feature(enable = "aes,pclmulqdq,ssse3,sse4.1")]
        unsafe fn absorb(&mut self, seg: &[u8]) {
            let mut blocks = seg.chunks_exact(16);
            for b in &mut blocks {
                self.block(_mm_loadu_si128(b.as_ptr().cast()));
            }
            let tail = blocks.remainder();
            if !tail.is_empty() {
                let mut tmp = [0u8; 16];
                tmp[..tail.len()].copy_from_slice(tail);
                self.block(_mm_loadu_si128(tmp.as_ptr().cast()));
            }
        }
    }

    // ---- 256-bit path: VAES + VPCLMULQDQ, two blocks per instruction ----

    impl AesNiGcm {
        /// CTR over `data` (counters from 2), two blocks per ymm register, up to 16 blocks per
        /// batch; with `j0`, E(J0) rides in the last batch and is returned.
        #[target_feature(enable = "aes,pclmulqdq,ssse3,sse4.1,avx2,vaes,vpclmulqdq")]
        unsafe fn ctr_wide(&self, iv: __m128i, data: &mut [u8], j0: bool) -> __m128i {
            let nblocks = data.len().div_ceil(16);
            let total = nblocks + usize::from(j0);
            let mut ej0 = _mm_setzero_si128();
            let mut v = 0;
            while v < total {
                let n = (total - v).min(16);
                let a = Lanes {
                    iv,
                    v0: v,
                    nblocks,
                    j0,
                };
                match n.div_ceil(2) {
                    1 => self.batch_wide::<1>(&a, data, &mut ej0),
                    2 => self.batch_wide::<2>(&a, data, &mut ej0),
                    3 => self.batch_wide::<3>(&a, data, &mut ej0),
                    4 => self.batch_wide::<4>(&a, data, &mut ej0),
                    5 => self.batch_wide::<5>(&a, data, &mut ej0),
                    6 => self.batch_wide::<6>(&a, data, &mut ej0),
                    7 => self.batch_wide::<7>(&a, data, &mut ej0),
                    _ => self.batch_wide::<8>(&a, data, &mut ej0),
                }
                v += n;
            }
            ej0
        }

        #[inline]
        #[target_feature(enable = "aes,pclmulqdq,ssse3,sse4.1,avx2,vaes,vpclmulqdq")]
        unsafe fn batch_wide<const NY: usize>(
            &self,
            a: &Lanes,
            data: &mut [u8],
            ej0: &mut __m128i,
        ) {
            let mut b: [__m256i; NY] = [_mm256_setzero_si256(); NY];
            for (k, x) in b.iter_mut().enumerate() {
                let lo = a.counter(a.v0 + 2 * k);
                let hi = a.counter(a.v0 + 2 * k + 1);
                *x = _mm256_set_m128i(hi, lo);
            }
            let k0 = _mm256_broadcastsi128_si256(self.rk[0]);
            for x in b.iter_mut() {
                *x = _mm256_xor_si256(*x, k0);
            }
            for r in 1..self.rounds {
                let k = _mm256_broadcastsi128_si256(self.rk[r]);
                for x in b.iter_mut() {
                    *x = _mm256_aesenc_epi128(*x, k);
                }
            }
            let k = _mm256_broadcastsi128_si256(self.rk[self.rounds]);
            for x in b.iter_mut() {
                *x = _mm256_aesenclast_epi128(*x, k);
            }
            let len = data.len();
            for (k, ks) in b.iter().enumerate() {
                let v = a.v0 + 2 * k;
                if v + 2 <= a.nblocks && (v + 2) * 16 <= len {
                    let q = data.as_mut_ptr().add(16 * v).cast::<__m256i>();
                    _mm256_storeu_si256(q, _mm256_xor_si256(_mm256_loadu_si256(q), *ks));
                    continue;
                }
                for (lane, ksl) in [
                    _mm256_castsi256_si128(*ks),
                    _mm256_extracti128_si256::<1>(*ks),
                ]
                .into_iter()
                .enumerate()
                {
                    let v = v + lane;
                    if v < a.nblocks {
                        xor_block(data, 16 * v, ksl);
                    } else if v == a.nblocks && a.j0 {
                        *ej0 = ksl;
                    }
                }
            }
        }

        #[target_feature(enable = "aes,pclmulqdq,ssse3,sse4.1,avx2,vaes,vpclmulqdq")]
        unsafe fn tag_wide(&self, aad: &[u8], ct: &[u8], ej0: __m128i) -> __m128i {
            let mut lens = [0u8; 16];
            lens[..8].copy_from_slice(&((aad.len() as u64) * 8).to_be_bytes());
            lens[8..].copy_from_slice(&((ct.len() as u64) * 8).to_be_bytes());
            let total = aad.len().div_ceil(16) + ct.len().div_ceil(16) + 1;
            let rev = bswap_mask();
            let mut g = GhashWide {
                hpow: &self.hpow,
                hpair: &self.hpair,
                total,
                idx: 0,
                group_end: match total % GROUP {
                    0 => GROUP,
                    n => n,
                },
                lo: _mm_setzero_si128(),
                mid: _mm_setzero_si128(),
                hi: _mm_setzero_si128(),
                lo2: _mm256_setzero_si256(),
                mid2: _mm256_setzero_si256(),
                hi2: _mm256_setzero_si256(),
                acc: _mm_setzero_si128(),
                rev,
                rev2: _mm256_broadcastsi128_si256(rev),
            };
            g.absorb(aad);
            g.absorb(ct);
            g.absorb(&lens);
            _mm_xor_si128(_mm_shuffle_epi8(g.acc, rev), ej0)
        }
    }

    /// Which counter each lane of a wide CTR batch takes: data block v uses counter v + 2; the
    /// block after the data is J0 (counter 1) when asked for; lanes past that are unused.
    struct Lanes {
        iv: __m128i,
        v0: usize,
        nblocks: usize,
        j0: bool,
    }

    impl Lanes {
        #[inline]
        #[target_feature(enable = "aes,pclmulqdq,ssse3,sse4.1")]
        unsafe fn counter(&self, v: usize) -> __m128i {
            let c = if v < self.nblocks {
                (v as u32).wrapping_add(2)
            } else if v == self.nblocks && self.j0 {
                1
            } else {
                0
            };
            _mm_insert_epi32::<3>(self.iv, c.swap_bytes() as i32)
        }
    }

    /// XORs a keystream block into `data[at..]` (a whole block, or the partial last one).
    #[inline]
    #[target_feature(enable = "aes,pclmulqdq,ssse3,sse4.1")]
    unsafe fn xor_block(data: &mut [u8], at: usize, ks: __m128i) {
        let n = (data.len() - at).min(16);
        if n == 16 {
            let q = data.as_mut_ptr().add(at).cast::<__m128i>();
            _mm_storeu_si128(q, _mm_xor_si128(_mm_loadu_si128(q), ks));
        } else {
            let mut tmp = [0u8; 16];
            tmp[..n].copy_from_slice(&data[at..]);
            let x = _mm_xor_si128(_mm_loadu_si128(tmp.as_ptr().cast()), ks);
            _mm_storeu_si128(tmp.as_mut_ptr().cast(), x);
            data[at..].copy_from_slice(&tmp[..n]);
        }
    }

    /// (lo, hi) lanes of a ymm register.
    #[inline]
    #[target_feature(enable = "avx")]
    unsafe fn pair(hi: __m128i, lo: __m128i) -> __m256i {
        _mm256_set_m128i(hi, lo)
    }

    /// The GHASH state of `Ghash`, with a second set of accumulators for two-block products.
    struct GhashWide<'a> {
        hpow: &'a [__m128i; GROUP],
        hpair: &'a [__m256i; GROUP - 1],
        total: usize,
        idx: usize,
        group_end: usize,
        lo: __m128i,
        mid: __m128i,
        hi: __m128i,
        lo2: __m256i,
        mid2: __m256i,
        hi2: __m256i,
        acc: __m128i,
        rev: __m128i,
        rev2: __m256i,
    }

    impl GhashWide<'_> {
        #[inline]
        #[target_feature(enable = "aes,pclmulqdq,ssse3,sse4.1,avx2,vaes,vpclmulqdq")]
        unsafe fn end_group(&mut self) {
            let fold = |x: __m256i| {
                _mm_xor_si128(_mm256_castsi256_si128(x), _mm256_extracti128_si256::<1>(x))
            };
            let lo = _mm_xor_si128(self.lo, fold(self.lo2));
            let mid = _mm_xor_si128(self.mid, fold(self.mid2));
            let hi = _mm_xor_si128(self.hi, fold(self.hi2));
            self.lo2 = _mm256_setzero_si256();
            self.mid2 = _mm256_setzero_si256();
            self.hi2 = _mm256_setzero_si256();
            self.acc = reduce(lo, mid, hi);
            let next = (self.total - self.idx).min(GROUP);
            if next > 0 {
                let (l, m, h) = mul(self.acc, self.hpow[next - 1]);
                self.lo = l;
                self.mid = m;
                self.hi = h;
                self.group_end += next;
            }
        }

        #[inline]
        #[target_feature(enable = "aes,pclmulqdq,ssse3,sse4.1,avx2,vaes,vpclmulqdq")]
        unsafe fn single(&mut self, x: __m128i) {
            let x = _mm_shuffle_epi8(x, self.rev);
            let (l, m, h) = mul(x, self.hpow[self.group_end - self.idx - 1]);
            self.lo = _mm_xor_si128(self.lo, l);
            self.mid = _mm_xor_si128(self.mid, m);
            self.hi = _mm_xor_si128(self.hi, h);
            self.idx += 1;
            if self.idx == self.group_end {
                self.end_group();
            }
        }

        #[inline]
        #[target_feature(enable = "aes,pclmulqdq,ssse3,sse4.1,avx2,vaes,vpclmulqdq")]
        unsafe fn double(&mut self, x: __m256i) {
            let x = _mm256_shuffle_epi8(x, self.rev2);
            let h = self.hpair[self.group_end - self.idx - 2];
            self.lo2 = _mm256_xor_si256(self.lo2, _mm256_clmulepi64_epi128::<0x00>(x, h));
            self.hi2 = _mm256_xor_si256(self.hi2, _mm256_clmulepi64_epi128::<0x11>(x, h));
            self.mid2 = _mm256_xor_si256(
                self.mid2,
                _mm256_xor_si256(
                    _mm256_clmulepi64_epi128::<0x10>(x, h),
                    _mm256_clmulepi64_epi128::<0x01>(x, h),
                ),
            );
            self.idx += 2;
            if self.idx == self.group_end {
                self.end_group();
            }
        }

        #[inline]
        #[target_feature(enable = "aes,pclmulqdq,ssse3,sse4.1,avx2,vaes,vpclmulqdq")]
        unsafe fn absorb(&mut self, seg: &[u8]) {
            let mut off = 0;
            loop {
                let rem = seg.len() - off;
                if rem >= 32 && self.idx + 2 <= self.group_end {
                    self.double(_mm256_loadu_si256(seg.as_ptr().add(off).cast()));
                    off += 32;
                } else if rem >= 16 {
                    self.single(_mm_loadu_si128(seg.as_ptr().add(off).cast()));
                    off += 16;
                } else if rem > 0 {
                    let mut tmp = [0u8; 16];
                    tmp[..rem].copy_from_slice(&seg[off..]);
                    self.single(_mm_loadu_si128(tmp.as_ptr().cast()));
                    break;
                } else {
                    break;
                }
            }
        }
    }

    // ---- 512-bit path: AVX-512 VAES + VPCLMULQDQ, four blocks per instruction ----

    impl AesNiGcm {
        /// CTR over `data` (counters from 2), four blocks per zmm register, up to 16 blocks per
        /// batch; the tail is read and written with byte masks.
        #[target_feature(
            enable = "aes,pclmulqdq,ssse3,sse4.1,avx2,avx512f,avx512bw,vaes,vpclmulqdq"
        )]
        unsafe fn ctr_x4(&self, iv: __m128i, data: &mut [u8]) {
            self.ctr_x4_from(iv, data, 2)
        }

        /// CTR over `data` with counters from `first` XORed into the last word of `iv`.
        #[target_feature(
            enable = "aes,pclmulqdq,ssse3,sse4.1,avx2,avx512f,avx512bw,vaes,vpclmulqdq"
        )]
        unsafe fn ctr_x4_from(&self, iv: __m128i, data: &mut [u8], first: u32) {
            let base = _mm512_broadcast_i32x4(iv);
            // Little-endian counters in dword 3 of each lane; byte-swapped into place per use.
            let f = first as i32;
            let mut ctr = _mm512_set_epi32(
                f.wrapping_add(3),
                0,
                0,
                0,
                f.wrapping_add(2),
                0,
                0,
                0,
                f.wrapping_add(1),
                0,
                0,
                0,
                f,
                0,
                0,
                0,
            );
            let mut off = 0;
            while off < data.len() {
                let quads = (data.len() - off).div_ceil(64).min(4);
                match quads {
                    1 => self.batch_x4::<1>(base, &mut ctr, data, &mut off),
                    2 => self.batch_x4::<2>(base, &mut ctr, data, &mut off),
                    3 => self.batch_x4::<3>(base, &mut ctr, data, &mut off),
                    _ => self.batch_x4::<4>(base, &mut ctr, data, &mut off),
                }
            }
        }

        #[inline]
        #[target_feature(
            enable = "aes,pclmulqdq,ssse3,sse4.1,avx2,avx512f,avx512bw,vaes,vpclmulqdq"
        )]
        unsafe fn batch_x4<const NQ: usize>(
            &self,
            base: __m512i,
            ctr: &mut __m512i,
            data: &mut [u8],
            off: &mut usize,
        ) {
            // Swap the bytes of dword 3 of each lane (big-endian counter), leave the rest.
            let swap = _mm512_broadcast_i32x4(_mm_set_epi8(
                12, 13, 14, 15, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0,
            ));
            let four = _mm512_set_epi32(4, 0, 0, 0, 4, 0, 0, 0, 4, 0, 0, 0, 4, 0, 0, 0);
            let mut b: [__m512i; NQ] = [_mm512_setzero_si512(); NQ];
            for x in b.iter_mut() {
                *x = _mm512_xor_si512(base, _mm512_shuffle_epi8(*ctr, swap));
                *ctr = _mm512_add_epi32(*ctr, four);
            }
            let k0 = _mm512_broadcast_i32x4(self.rk[0]);
            for x in b.iter_mut() {
                *x = _mm512_xor_si512(*x, k0);
            }
            for r in 1..self.rounds {
                let k = _mm512_broadcast_i32x4(self.rk[r]);
                for x in b.iter_mut() {
                    *x = _mm512_aesenc_epi128(*x, k);
                }
            }
            let k = _mm512_broadcast_i32x4(self.rk[self.rounds]);
            for x in b.iter_mut() {
                *x = _mm512_aesenclast_epi128(*x, k);
            }
            for ks in b.iter() {
                let n = (data.len() - *off).min(64);
                let p = data.as_mut_ptr().add(*off);
                if n == 64 {
                    let v = _mm512_loadu_si512(p.cast());
                    _mm512_storeu_si512(p.cast(), _mm512_xor_si512(v, *ks));
                } else {
                    let m: __mmask64 = (1u64 << n) - 1;
                    let v = _mm512_maskz_loadu_epi8(m, p.cast());
                    _mm512_mask_storeu_epi8(p.cast(), m, _mm512_xor_si512(v, *ks));
                }
                *off += n;
            }
        }

        #[target_feature(
            enable = "aes,pclmulqdq,ssse3,sse4.1,avx2,avx512f,avx512bw,vaes,vpclmulqdq"
        )]
        unsafe fn tag_x4(&self, aad: &[u8], ct: &[u8], ej0: __m128i) -> __m128i {
            let mut lens = [0u8; 16];
            lens[..8].copy_from_slice(&((aad.len() as u64) * 8).to_be_bytes());
            lens[8..].copy_from_slice(&((ct.len() as u64) * 8).to_be_bytes());
            let total = aad.len().div_ceil(16) + ct.len().div_ceil(16) + 1;
            let rev = bswap_mask();
            let mut g = GhashX4 {
                hpow: &self.hpow,
                hquad: &self.hquad,
                total,
                idx: 0,
                group_end: match total % GROUP {
                    0 => GROUP,
                    n => n,
                },
                lo: _mm_setzero_si128(),
                mid: _mm_setzero_si128(),
                hi: _mm_setzero_si128(),
                lo4: _mm512_setzero_si512(),
                mid4: _mm512_setzero_si512(),
                hi4: _mm512_setzero_si512(),
                acc: _mm_setzero_si128(),
                rev4: _mm512_broadcast_i32x4(rev),
            };
            g.absorb(aad);
            g.absorb(ct);
            g.absorb(&lens);
            _mm_xor_si128(_mm_shuffle_epi8(g.acc, rev), ej0)
        }
    }

    /// GHASH state for the 512-bit path: up to four blocks per multiply, partial blocks and
    /// partial quads read with byte masks (the missing lanes are zero and so add nothing).
    struct GhashX4<'a> {
        hpow: &'a [__m128i; GROUP],
        hquad: &'a [__m512i; GROUP + 1],
        total: usize,
        idx: usize,
        group_end: usize,
        lo: __m128i,
        mid: __m128i,
        hi: __m128i,
        lo4: __m512i,
        mid4: __m512i,
        hi4: __m512i,
        acc: __m128i,
        rev4: __m512i,
    }

    impl GhashX4<'_> {
        #[inline]
        #[target_feature(
            enable = "aes,pclmulqdq,ssse3,sse4.1,avx2,avx512f,avx512bw,vaes,vpclmulqdq"
        )]
        unsafe fn end_group(&mut self) {
            let fold = |x: __m512i| {
                _mm_xor_si128(
                    _mm_xor_si128(_mm512_castsi512_si128(x), _mm512_extracti32x4_epi32::<1>(x)),
                    _mm_xor_si128(
                        _mm512_extracti32x4_epi32::<2>(x),
                        _mm512_extracti32x4_epi32::<3>(x),
                    ),
                )
            };
            let lo = _mm_xor_si128(self.lo, fold(self.lo4));
            let mid = _mm_xor_si128(self.mid, fold(self.mid4));
            let hi = _mm_xor_si128(self.hi, fold(self.hi4));
            self.lo4 = _mm512_setzero_si512();
            self.mid4 = _mm512_setzero_si512();
            self.hi4 = _mm512_setzero_si512();
            self.acc = reduce(lo, mid, hi);
            let next = (self.total - self.idx).min(GROUP);
            if next > 0 {
                let (l, m, h) = mul(self.acc, self.hpow[next - 1]);
                self.lo = l;
                self.mid = m;
                self.hi = h;
                self.group_end += next;
            } else {
                self.lo = _mm_setzero_si128();
                self.mid = _mm_setzero_si128();
                self.hi = _mm_setzero_si128();
            }
        }

        #[inline]
        #[target_feature(
            enable = "aes,pclmulqdq,ssse3,sse4.1,avx2,avx512f,avx512bw,vaes,vpclmulqdq"
        )]
        unsafe fn absorb(&mut self, seg: &[u8]) {
            let mut off = 0;
            while off < seg.len() {
                let left_blocks = (seg.len() - off).div_ceil(16);
                let k = left_blocks.min(4).min(self.group_end - self.idx);
                let n = (seg.len() - off).min(16 * k);
                let p = seg.as_ptr().add(off);
                let x = if n == 64 {
                    _mm512_loadu_si512(p.cast())
                } else {
                    _mm512_maskz_loadu_epi8((1u64 << n) - 1, p.cast())
                };
                let x = _mm512_shuffle_epi8(x, self.rev4);
                let h = self.hquad[self.group_end - self.idx];
                self.lo4 = _mm512_xor_si512(self.lo4, _mm512_clmulepi64_epi128::<0x00>(x, h));
                self.hi4 = _mm512_xor_si512(self.hi4, _mm512_clmulepi64_epi128::<0x11>(x, h));
                self.mid4 = _mm512_xor_si512(
                    self.mid4,
                    _mm512_xor_si512(
                        _mm512_clmulepi64_epi128::<0x10>(x, h),
                        _mm512_clmulepi64_epi128::<0x01>(x, h),
                    ),
                );
                self.idx += k;
                off += n;
                if self.idx == self.group_end {
                    self.end_group();
                }
            }
        }
    }

    impl Drop for AesNiGcm {
        fn drop(&mut self) {
            // Wipe the key schedule and the powers of H (volatile so it is not optimised out).
            for k in self.rk.iter_mut().chain(self.hpow.iter_mut()) {
                // SAFETY: k is a valid, aligned __m128i owned by self.
                unsafe { core::ptr::write_volatile(k, core::mem::zeroed()) };
            }
            for k in self.hpair.iter_mut() {
                // SAFETY: as above.
                unsafe { core::ptr::write_volatile(k, core::mem::zeroed()) };
            }
            for k in self.hquad.iter_mut() {
                // SAFETY: as above.
                unsafe { core::ptr::write_volatile(k, core::mem::zeroed()) };
            }
        }
    }

    #[inline]
    #[target_feature(enable = "aes,pclmulqdq,ssse3,sse4.1")]
    unsafe fn load_iv(iv: &[u8; 12]) -> __m128i {
        let mut b = [0u8; 16];
        b[..12].copy_from_slice(iv);
        _mm_loadu_si128(b.as_ptr().cast())
    }

    #[inline]
    #[target_feature(enable = "aes,pclmulqdq,ssse3,sse4.1")]
    unsafe fn bswap_mask() -> __m128i {
        _mm_set_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
    }

    /// Unreduced carry-less product: (low, middle, high) partial products.
    #[inline]
    #[target_feature(enable = "aes,pclmulqdq,ssse3,sse4.1")]
    unsafe fn mul(a: __m128i, b: __m128i) -> (__m128i, __m128i, __m128i) {
        let lo = _mm_clmulepi64_si128::<0x00>(a, b);
        let hi = _mm_clmulepi64_si128::<0x11>(a, b);
        let mid = _mm_xor_si128(
            _mm_clmulepi64_si128::<0x10>(a, b),
            _mm_clmulepi64_si128::<0x01>(a, b),
        );
        (lo, mid, hi)
    }

    /// POLYVAL Montgomery reduction of a 256-bit product: returns product * x^-128 mod
    /// x^128 + x^127 + x^126 + x^121 + 1 (RFC 8452).
    #[inline]
    #[target_feature(enable = "aes,pclmulqdq,ssse3,sse4.1")]
    unsafe fn reduce(lo: __m128i, mid: __m128i, hi: __m128i) -> __m128i {
        let lo = _mm_xor_si128(lo, _mm_slli_si128::<8>(mid));
        let hi = _mm_xor_si128(hi, _mm_srli_si128::<8>(mid));
        let poly = _mm_set_epi64x(0xc200_0000_0000_0000u64 as i64, 1);
        let t = _mm_clmulepi64_si128::<0x10>(lo, poly);
        let lo = _mm_xor_si128(_mm_shuffle_epi32::<78>(lo), t);
        let t = _mm_clmulepi64_si128::<0x10>(lo, poly);
        let lo = _mm_xor_si128(_mm_shuffle_epi32::<78>(lo), t);
        _mm_xor_si128(lo, hi)
    }

    macro_rules! expand_step {
        ($k:expr, $t:expr) => {{
            let mut k = $k;
            k = _mm_xor_si128(k, _mm_slli_si128::<4>(k));
            k = _mm_xor_si128(k, _mm_slli_si128::<4>(k));
            k = _mm_xor_si128(k, _mm_slli_si128::<4>(k));
            _mm_xor_si128(k, $t)
        }};
    }

    /// FIPS 197 key expansion for AES-128 with AESKEYGENASSIST.
    #[target_feature(enable = "aes,pclmulqdq,ssse3,sse4.1")]
    unsafe fn expand128(key: &[u8], rk: &mut [__m128i; 15]) {
        macro_rules! r {
            ($i:expr, $rcon:expr) => {
                rk[$i] = expand_step!(
                    rk[$i - 1],
                    _mm_shuffle_epi32::<0xff>(_mm_aeskeygenassist_si128::<$rcon>(rk[$i - 1]))
                );
            };
        }
        rk[0] = _mm_loadu_si128(key.as_ptr().cast());
        r!(1, 0x01);
        r!(2, 0x02);
        r!(3, 0x04);
        r!(4, 0x08);
        r!(5, 0x10);
        r!(6, 0x20);
        r!(7, 0x40);
        r!(8, 0x80);
        r!(9, 0x1b);
        r!(10, 0x36);
    }

    /// FIPS 197 key expansion for AES-256 with AESKEYGENASSIST.
    #[target_feature(enable = "aes,pclmulqdq,ssse3,sse4.1")]
    unsafe fn expand256(key: &[u8], rk: &mut [__m128i; 15]) {
        macro_rules! a {
            ($i:expr, $rcon:expr) => {
                rk[$i] = expand_step!(
                    rk[$i - 2],
                    _mm_shuffle_epi32::<0xff>(_mm_aeskeygenassist_si128::<$rcon>(rk[$i - 1]))
                );
            };
        }
        macro_rules! b {
            ($i:expr) => {
                rk[$i] = expand_step!(
                    rk[$i - 2],
                    _mm_shuffle_epi32::<0xaa>(_mm_aeskeygenassist_si128::<0>(rk[$i - 1]))
                );
            };
        }
        rk[0] = _mm_loadu_si128(key.as_ptr().cast());
        rk[1] = _mm_loadu_si128(key.as_ptr().add(16).cast());
        a!(2, 0x01);
        b!(3);
        a!(4, 0x02);
        b!(5);
        a!(6, 0x04);
        b!(7);
        a!(8, 0x08);
        b!(9);
        a!(10, 0x10);
        b!(11);
        a!(12, 0x20);
        b!(13);
        a!(14, 0x40);
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::imp::Width;
    use super::AesNiGcm;
    use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, AES_256_GCM};

    /// A small deterministic generator for test inputs.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.next() as u8).collect()
        }
    }

    #[test]
    fn aes_cm_keystream_matches_aws_lc_ctr() {
        use aws_lc_rs::cipher::{
            EncryptingKey, EncryptionContext, UnboundCipherKey, AES_128, AES_256,
        };
        let mut rng = Rng(11);
        for case in 0..600 {
            let klen = if case % 2 == 0 { 16 } else { 32 };
            let key = rng.bytes(klen);
            let mut iv = [0u8; 16];
            iv[..14].copy_from_slice(&rng.bytes(14));
            let len = [0usize, 1, 15, 16, 17, 64, 100, 160, 172, 1000, 1500][case % 11];
            let plain = rng.bytes(len);
            let alg = if klen == 16 { &AES_128 } else { &AES_256 };
            let reference = EncryptingKey::ctr(UnboundCipherKey::new(alg, &key).unwrap()).unwrap();
            let mut want = plain.clone();
            reference
                .less_safe_encrypt(&mut want, EncryptionContext::Iv128(iv.into()))
                .unwrap();
            let width = [Width::W128, Width::W256, Width::W512][case % 3];
            let ours = AesNiGcm::with_width(&key, width).unwrap();
            let mut got = plain.clone();
            assert!(ours.ctr_keystream(&iv, &mut got));
            assert_eq!(got, want, "case {case} len {len} {width:?}");
        }
        let k = AesNiGcm::new(&[0u8; 16]).unwrap();
        let mut iv = [0u8; 16];
        iv[15] = 1;
        assert!(
            !k.ctr_keystream(&iv, &mut [0u8; 16]),
            "IV with a non-zero counter is refused"
        );
    }

    #[test]
    fn requested_widths_resolve_to_what_the_cpu_runs() {
        // The random tests below ask for every width; a CPU without VAES/AVX-512 runs the
        // narrower path in its place. Check the capping, and say which paths this run covers.
        let best = super::imp::best_width();
        let expect = |w: Width| match (w, best) {
            (Width::W512, b) => b,
            (Width::W256, Width::W128) => Width::W128,
            (w, _) => w,
        };
        let mut ran = Vec::new();
        for w in [Width::W128, Width::W256, Width::W512] {
            let Some(k) = AesNiGcm::with_width(&[1u8; 16], w) else {
                eprintln!("CPU without AES-NI/PCLMULQDQ: only the aws-lc-rs path runs");
                return;
            };
            assert_eq!(k.width(), expect(w), "{w:?} requested");
            ran.push(k.width());
        }
        assert_eq!(AesNiGcm::new(&[1u8; 32]).unwrap().width(), best);
        ran.dedup();
        eprintln!("GCM/CTR paths tested on this CPU: {ran:?}");
    }

    #[test]
    fn matches_aws_lc_on_random_inputs() {
        let Some(_) = AesNiGcm::new(&[0u8; 16]) else {
            eprintln!("CPU without AES-NI/PCLMULQDQ: nothing to compare");
            return;
        };
        let mut rng = Rng(7);
        for case in 0..3000 {
            let klen = if case % 2 == 0 { 16 } else { 32 };
            let key = rng.bytes(klen);
            let iv: [u8; 12] = rng.bytes(12).try_into().unwrap();
            let aad_len = [0, 1, 8, 12, 15, 16, 17, 24, 44, 72, 200][case % 11];
            let aad = rng.bytes(aad_len);
            let len = match case % 7 {
                0 => (rng.next() % 1500) as usize,
                1 => 160,
                2 => (rng.next() % 17) as usize,
                3 => 128 + (rng.next() % 33) as usize,
                _ => (rng.next() % 300) as usize,
            };
            let plain = rng.bytes(len);
            let alg = if klen == 16 {
                &AES_128_GCM
            } else {
                &AES_256_GCM
            };
            let reference = LessSafeKey::new(UnboundKey::new(alg, &key).unwrap());
            let mut want = plain.clone();
            let want_tag = reference
                .seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key(iv),
                    Aad::from(&aad),
                    &mut want,
                )
                .unwrap();
            let width = [Width::W128, Width::W256, Width::W512][case % 3];
            let ours = AesNiGcm::with_width(&key, width).unwrap();
            let mut got = plain.clone();
            let tag = ours.seal(&iv, &aad, &mut got);
            assert_eq!(
                got, want,
                "case {case} ciphertext (klen {klen}, aad {aad_len}, len {len})"
            );
            assert_eq!(
                &tag[..],
                want_tag.as_ref(),
                "case {case} tag (klen {klen}, aad {aad_len}, len {len})"
            );
            assert!(ours.open(&iv, &aad, &mut got, &tag), "case {case} open");
            assert_eq!(got, plain);
            // Any flipped bit fails and leaves the ciphertext unchanged.
            let mut ct = want.clone();
            let mut bad_tag = tag;
            bad_tag[case % 16] ^= 1 << (case % 8);
            assert!(!ours.open(&iv, &aad, &mut ct, &bad_tag));
            assert_eq!(ct, want, "failed open must not touch the data");
            if !ct.is_empty() {
                let at = case % ct.len();
                ct[at] ^= 0x80;
                assert!(!ours.open(&iv, &aad, &mut ct, &tag));
            }
            if !aad.is_empty() {
                let mut aad2 = aad.clone();
                aad2[0] ^= 1;
                let mut ct = want.clone();
                assert!(!ours.open(&iv, &aad2, &mut ct, &tag));
            }
        }
    }
}
