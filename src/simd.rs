//! Explicit AVX versions of the per-group loops of the write pass: the shifted sum, the sum
//! of squared deviations and the affine write, for uniform groups (size a multiple of 8, or
//! 4), ragged groups, and ragged blocks of varying sizes.
//!
//! The compiler's own vectorization of the generic loops (`stats::sum_shifted` and friends)
//! picks 128-bit vectors for the f32-to-f64 accumulations; these use eight f64 lanes per
//! chunk of eight rewards: two 256-bit vectors ([`Avx2`]) or one 512-bit vector ([`Avx512`],
//! half the instructions). The arithmetic is the same, operation for operation (eight
//! accumulator lanes, the `stats::lanes_sum` reduction, no fused multiply-add), so the
//! results are bit-identical to the generic code, which the tests check.
//!
//! Every function here must only run inside code compiled with AVX2 enabled (with AVX-512F
//! enabled for [`Avx512`]).

use crate::real::Real;
use std::arch::x86_64::*;
use std::mem::MaybeUninit;

/// Eight f64 lanes (one chunk of eight rewards, or eight accumulators) and the operations
/// the loops below need, for one instruction set.
///
/// # Safety
/// Every method must only run in code compiled with the instruction set of the impl.
pub(crate) trait Wide: Copy {
    /// One f64 in every lane.
    type Splat: Copy;
    /// A selection of lanes.
    type Mask: Copy;
    unsafe fn zeros() -> Self;
    unsafe fn splat(v: f64) -> Self::Splat;
    unsafe fn add(a: Self, b: Self) -> Self;
    /// v - s in every lane.
    unsafe fn minus(v: Self, s: Self::Splat) -> Self;
    unsafe fn squared(d: Self) -> Self;
    /// (v - mu) * k in every lane.
    unsafe fn affine(v: Self, mu: Self::Splat, k: Self::Splat) -> Self;
    /// The lanes of `t` selected by `m`, +0.0 elsewhere.
    unsafe fn masked(t: Self, m: Self::Mask) -> Self;
    /// Lanes selected when their index is below `rem`: all for rem >= 8, none for rem <= 0.
    unsafe fn lanes_below(rem: i64) -> Self::Mask;
    /// The lanes of chunk `c` (values 8c..8c + 8) among the first `n` values (n <= 32):
    /// `lanes_below(n - 8c)`, from one mask of the n values where the lanes are bits.
    unsafe fn chunk_lanes(n: usize, c: usize) -> Self::Mask;
    /// acc + t in the lanes of `m`, acc elsewhere: `add(acc, masked(t, m))` bit for bit when
    /// acc is never -0.0 (accumulators start at +0.0 and add finite or NaN terms under
    /// round-to-nearest, where only -0.0 + -0.0 gives -0.0).
    unsafe fn add_lanes(acc: Self, t: Self, m: Self::Mask) -> Self;
    /// `new` in the lanes of `m`, `old` elsewhere.
    unsafe fn blend(old: Self, new: Self, m: Self::Mask) -> Self;
    /// Eight elements from `p` (valid for 8 reads), as f64.
    unsafe fn load<T: Real>(p: *const T) -> Self;
    /// Store eight lanes to `p` (valid for 8 writes), rounded to T as `from_f64` does.
    unsafe fn store<T: Real>(p: *mut T, v: Self);
    /// Lanes 0-3 + lanes 4-7 (the input of `hsum`).
    unsafe fn halves(acc: Self) -> __m256d;
}

/// Two 256-bit vectors: lanes 0-3 and 4-7 (AVX2).
#[derive(Clone, Copy)]
pub(crate) struct Avx2([__m256d; 2]);

/// One 512-bit vector (AVX-512F).
#[derive(Clone, Copy)]
pub(crate) struct Avx512(__m512d);

fn is_f32<T: Real>() -> bool {
    std::mem::size_of::<T>() == 4
}

impl Wide for Avx2 {
    type Splat = __m256d;
    type Mask = [__m256d; 2];
    #[inline(always)]
    unsafe fn zeros() -> Self {
        // SAFETY: AVX2 code (the trait's contract).
        unsafe { Avx2([_mm256_setzero_pd(); 2]) }
    }
    #[inline(always)]
    unsafe fn splat(v: f64) -> __m256d {
        // SAFETY: as above.
        unsafe { _mm256_set1_pd(v) }
    }
    #[inline(always)]
    unsafe fn add(a: Self, b: Self) -> Self {
        // SAFETY: as above.
        unsafe { Avx2([_mm256_add_pd(a.0[0], b.0[0]), _mm256_add_pd(a.0[1], b.0[1])]) }
    }
    #[inline(always)]
    unsafe fn minus(v: Self, s: __m256d) -> Self {
        // SAFETY: as above.
        unsafe { Avx2([_mm256_sub_pd(v.0[0], s), _mm256_sub_pd(v.0[1], s)]) }
    }
    #[inline(always)]
    unsafe fn squared(d: Self) -> Self {
        // SAFETY: as above.
        unsafe { Avx2([_mm256_mul_pd(d.0[0], d.0[0]), _mm256_mul_pd(d.0[1], d.0[1])]) }
    }
    #[inline(always)]
    unsafe fn affine(v: Self, mu: __m256d, k: __m256d) -> Self {
        // SAFETY: as above.
        unsafe {
            Avx2([
                _mm256_mul_pd(_mm256_sub_pd(v.0[0], mu), k),
                _mm256_mul_pd(_mm256_sub_pd(v.0[1], mu), k),
            ])
        }
    }
    #[inline(always)]
    unsafe fn masked(t: Self, m: [__m256d; 2]) -> Self {
        // SAFETY: as above.
        unsafe { Avx2([_mm256_and_pd(t.0[0], m[0]), _mm256_and_pd(t.0[1], m[1])]) }
    }
    #[inline(always)]
    unsafe fn lanes_below(rem: i64) -> [__m256d; 2] {
        // SAFETY: as above.
        unsafe {
            let r = _mm256_set1_epi64x(rem);
            [
                _mm256_castsi256_pd(_mm256_cmpgt_epi64(r, _mm256_set_epi64x(3, 2, 1, 0))),
                _mm256_castsi256_pd(_mm256_cmpgt_epi64(r, _mm256_set_epi64x(7, 6, 5, 4))),
            ]
        }
    }
    #[inline(always)]
    unsafe fn chunk_lanes(n: usize, c: usize) -> [__m256d; 2] {
        // SAFETY: as above.
        unsafe { Self::lanes_below(n as i64 - 8 * c as i64) }
    }
    #[inline(always)]
    unsafe fn add_lanes(acc: Self, t: Self, m: [__m256d; 2]) -> Self {
        // SAFETY: as above.
        unsafe { Self::add(acc, Self::masked(t, m)) }
    }
    #[inline(always)]
    unsafe fn blend(old: Self, new: Self, m: [__m256d; 2]) -> Self {
        // SAFETY: as above.
        unsafe {
            Avx2([
                _mm256_blendv_pd(old.0[0], new.0[0], m[0]),
                _mm256_blendv_pd(old.0[1], new.0[1], m[1]),
            ])
        }
    }
    #[inline(always)]
    unsafe fn load<T: Real>(p: *const T) -> Self {
        // SAFETY: p valid for 8 reads (the trait's contract).
        unsafe { Avx2(T::load8(p)) }
    }
    #[inline(always)]
    unsafe fn store<T: Real>(p: *mut T, v: Self) {
        // SAFETY: p valid for 8 writes (the trait's contract).
        unsafe { T::store8(p, v.0) }
    }
    #[inline(always)]
    unsafe fn halves(acc: Self) -> __m256d {
        // SAFETY: as above.
        unsafe { _mm256_add_pd(acc.0[0], acc.0[1]) }
    }
}

impl Wide for Avx512 {
    type Splat = __m512d;
    type Mask = __mmask8;
    #[inline(always)]
    unsafe fn zeros() -> Self {
        // SAFETY: AVX-512F code (the trait's contract).
        unsafe { Avx512(_mm512_setzero_pd()) }
    }
    #[inline(always)]
    unsafe fn splat(v: f64) -> __m512d {
        // SAFETY: as above.
        unsafe { _mm512_set1_pd(v) }
    }
    #[inline(always)]
    unsafe fn add(a: Self, b: Self) -> Self {
        // SAFETY: as above.
        unsafe { Avx512(_mm512_add_pd(a.0, b.0)) }
    }
    #[inline(always)]
    unsafe fn minus(v: Self, s: __m512d) -> Self {
        // SAFETY: as above.
        unsafe { Avx512(_mm512_sub_pd(v.0, s)) }
    }
    #[inline(always)]
    unsafe fn squared(d: Self) -> Self {
        // SAFETY: as above.
        unsafe { Avx512(_mm512_mul_pd(d.0, d.0)) }
    }
    #[inline(always)]
    unsafe fn affine(v: Self, mu: __m512d, k: __m512d) -> Self {
        // SAFETY: as above.
        unsafe { Avx512(_mm512_mul_pd(_mm512_sub_pd(v.0, mu), k)) }
    }
    #[inline(always)]
    unsafe fn masked(t: Self, m: __mmask8) -> Self {
        // SAFETY: as above.
        unsafe { Avx512(_mm512_maskz_mov_pd(m, t.0)) }
    }
    #[inline(always)]
    unsafe fn lanes_below(rem: i64) -> __mmask8 {
        (((1u32 << rem.clamp(0, 8)) - 1) & 0xff) as __mmask8
    }
    #[inline(always)]
    unsafe fn chunk_lanes(n: usize, c: usize) -> __mmask8 {
        (((1u64 << n) - 1) >> (8 * c)) as __mmask8
    }
    #[inline(always)]
    unsafe fn add_lanes(acc: Self, t: Self, m: __mmask8) -> Self {
        // SAFETY: as above. Merge masking: the lanes outside m keep acc.
        unsafe { Avx512(_mm512_mask_add_pd(acc.0, m, acc.0, t.0)) }
    }
    #[inline(always)]
    unsafe fn blend(old: Self, new: Self, m: __mmask8) -> Self {
        // SAFETY: as above.
        unsafe { Avx512(_mm512_mask_blend_pd(m, old.0, new.0)) }
    }
    #[inline(always)]
    unsafe fn load<T: Real>(p: *const T) -> Self {
        // SAFETY: p valid for 8 reads of T, which is f32 or f64 (the only `Real`s).
        unsafe {
            if is_f32::<T>() {
                Avx512(_mm512_cvtps_pd(_mm256_loadu_ps(p as *const f32)))
            } else {
                Avx512(_mm512_loadu_pd(p as *const f64))
            }
        }
    }
    #[inline(always)]
    unsafe fn store<T: Real>(p: *mut T, v: Self) {
        // SAFETY: p valid for 8 writes of T, which is f32 or f64. The f32 rounding is the
        // current mode's (round to nearest even), as `from_f64`'s `as f32`.
        unsafe {
            if is_f32::<T>() {
                _mm256_storeu_ps(p as *mut f32, _mm512_cvtpd_ps(v.0))
            } else {
                _mm512_storeu_pd(p as *mut f64, v.0)
            }
        }
    }
    #[inline(always)]
    unsafe fn halves(acc: Self) -> __m256d {
        // SAFETY: as above.
        unsafe {
            _mm256_add_pd(
                _mm512_castpd512_pd256(acc.0),
                _mm512_extractf64x4_pd::<1>(acc.0),
            )
        }
    }
}

/// Overflow probe: adds w * 0 of the selected lanes to `found`, which stays 0 unless some
/// value is inf or NaN (w * 0 is NaN exactly for those).
#[inline(always)]
unsafe fn probe_into<W: Wide>(found: &mut W, w: W, m: W::Mask) {
    // SAFETY: the caller upholds this function's contract (see its doc and the module's).
    unsafe {
        let z = W::splat(0.0);
        // w * 0 as (w - 0) * 0
        *found = W::add(*found, W::masked(W::affine(w, z, z), m));
    }
}

/// Store (v - mu) * k of the chunk of `x` at `i` to `out` and, with `probe`, probe the
/// lanes `m` of what was stored (read back: the rounding to T is what may overflow).
#[inline(always)]
unsafe fn store_chunk<T: Real, W: Wide>(
    (x, out, i): (*const T, *mut T, usize),
    (mu, k): (W::Splat, W::Splat),
    probe: bool,
    m: W::Mask,
    found: &mut W,
) {
    // SAFETY: the caller upholds this function's contract (see its doc and the module's).
    unsafe {
        W::store(out.add(i), W::affine(W::load(x.add(i)), mu, k));
        if probe {
            probe_into(found, W::load(out.add(i)), m);
        }
    }
}

/// True when no probed value was inf or NaN.
#[inline(always)]
unsafe fn all_finite<W: Wide>(found: W) -> bool {
    // SAFETY: the caller upholds this function's contract (see its doc and the module's).
    unsafe {
        let h = W::halves(found);
        _mm256_movemask_pd(_mm256_cmp_pd::<_CMP_EQ_OQ>(h, _mm256_setzero_pd())) == 0b1111
    }
}

/// `stats::lanes_sum` of eight lanes held as `h` = lanes 0-3 + lanes 4-7:
/// (h0 + h1) + (h2 + h3).
#[inline(always)]
unsafe fn hsum(h: __m256d) -> f64 {
    // SAFETY: the caller upholds this function's contract (see its doc and the module's).
    unsafe {
        let t = _mm256_hadd_pd(h, h);
        _mm_cvtsd_f64(_mm_add_sd(
            _mm256_castpd256_pd128(t),
            _mm256_extractf128_pd::<1>(t),
        ))
    }
}

/// `hsum` of four groups at once: lane j of the result is `hsum(h[j])`.
#[inline(always)]
unsafe fn hsum4(h: [__m256d; 4]) -> __m256d {
    // SAFETY: the caller upholds this function's contract (see its doc and the module's).
    unsafe {
        let t01 = _mm256_hadd_pd(h[0], h[1]);
        let t23 = _mm256_hadd_pd(h[2], h[3]);
        _mm256_add_pd(
            _mm256_permute2f128_pd::<0x20>(t01, t23),
            _mm256_permute2f128_pd::<0x31>(t01, t23),
        )
    }
}

// Uniform groups of G values, G a multiple of 8 (no partial chunk).

/// The accumulators of the shifted sum of the G values at `x`.
#[inline(always)]
unsafe fn shifted_acc<T: Real, W: Wide, const G: usize>(x: *const T, shift: f64) -> W {
    // SAFETY: the caller upholds this function's contract (see its doc and the module's).
    unsafe {
        let s = W::splat(shift);
        acc_in(x, 0, G, |v: W| W::minus(v, s))
    }
}

/// The accumulators of the squared deviations of the G values at `x`.
#[inline(always)]
unsafe fn sq_dev_acc<T: Real, W: Wide, const G: usize>(x: *const T, mean: f64) -> W {
    // SAFETY: the caller upholds this function's contract (see its doc and the module's).
    unsafe {
        let m = W::splat(mean);
        acc_in(x, 0, G, |v: W| W::squared(W::minus(v, m)))
    }
}

/// Sum of (x_i - shift) over the G elements at `x`; equals `stats::sum_shifted` (which adds
/// its empty scalar remainder, 0.0, first).
#[inline(always)]
pub(crate) unsafe fn sum_shifted<T: Real, W: Wide, const G: usize>(x: *const T, shift: f64) -> f64 {
    // SAFETY: the caller upholds this function's contract (see its doc and the module's).
    unsafe { 0.0 + hsum(W::halves(shifted_acc::<T, W, G>(x, shift))) }
}

/// Sum of (x_i - mean)^2 over the G elements at `x`; equals `stats::sum_sq_dev`.
#[inline(always)]
pub(crate) unsafe fn sum_sq_dev<T: Real, W: Wide, const G: usize>(x: *const T, mean: f64) -> f64 {
    // SAFETY: the caller upholds this function's contract (see its doc and the module's).
    unsafe { 0.0 + hsum(W::halves(sq_dev_acc::<T, W, G>(x, mean))) }
}

/// The accumulators of `term` over `chunks` full chunks at `x`: `acc_in` over
/// `x[0..8 chunks]` (no partial chunk), each chunk, as read (converted to f64), written to
/// `kept[..chunks]`.
#[inline(always)]
unsafe fn acc_keep<T: Real, W: Wide>(
    x: *const T,
    kept: *mut W,
    chunks: usize,
    term: impl Fn(W) -> W,
) -> W {
    // SAFETY: the caller upholds this function's contract (see its doc and the module's).
    unsafe {
        let mut acc = W::zeros();
        for c in 0..chunks {
            let v = W::load(x.add(8 * c));
            kept.add(c).write(v);
            acc = W::add(acc, term(v));
        }
        acc
    }
}

/// Means (`x0 + sum_shifted / G`, x0 each group's first value) and, with `m2`, sums of
/// squared deviations of the 8 consecutive groups of G values at `x` (G a multiple of 8):
/// the same results as the per-group functions, with the horizontal sums of four groups done
/// together. Each chunk is read once: kept in `stage` (group j's G / 8 chunks from
/// `G / 8 * j`; this initializes it) for the M2 pass and the caller's `write_affine_kept`.
#[inline(always)]
pub(crate) unsafe fn moments8<T: Real, W: Wide, const G: usize>(
    x: *const T,
    stage: &mut MaybeUninit<[W; G]>,
    mean: &mut [f64; 8],
    m2: Option<&mut [f64; 8]>,
) {
    debug_assert!(G.is_multiple_of(8));
    let c = G / 8;
    // SAFETY: the caller upholds this function's contract (see its doc and the module's).
    unsafe {
        let zero = _mm256_setzero_pd();
        let size = _mm256_set1_pd(G as f64);
        let kept = stage.as_mut_ptr() as *mut W;
        for q in 0..2 {
            let mut h = [zero; 4];
            let mut x0 = [0.0f64; 4];
            for j in 0..4 {
                let g = 4 * q + j;
                let p = x.add(g * G);
                x0[j] = (*p).to_f64();
                let s = W::splat(x0[j]);
                h[j] = W::halves(acc_keep::<T, W>(p, kept.add(c * g), c, |v: W| {
                    W::minus(v, s)
                }));
            }
            let sums = _mm256_add_pd(zero, hsum4(h));
            let m = _mm256_add_pd(_mm256_loadu_pd(x0.as_ptr()), _mm256_div_pd(sums, size));
            _mm256_storeu_pd(mean.as_mut_ptr().add(4 * q), m);
        }
        let Some(m2) = m2 else { return };
        // (every chunk written just above)
        let kept = stage.assume_init_ref();
        for q in 0..2 {
            let mut h = [zero; 4];
            for (j, hj) in h.iter_mut().enumerate() {
                let g = 4 * q + j;
                let m = W::splat(mean[g]);
                let mut acc = W::zeros();
                for &v in &kept[c * g..c * g + c] {
                    acc = W::add(acc, W::squared(W::minus(v, m)));
                }
                *hj = W::halves(acc);
            }
            _mm256_storeu_pd(m2.as_mut_ptr().add(4 * q), _mm256_add_pd(zero, hsum4(h)));
        }
    }
}

// Ragged groups `x[a..b]`. The `_in` versions equal `kernel`'s functions of the same names:
// full chunks of 8, then the last partial chunk read as a full chunk with the lanes past `b`
// masked out. Callers guarantee that the chunk fits: b - a < 8 or the partial chunk's 8 reads
// and writes stay inside the batch (index + 8 <= batch length).

/// The accumulators of `term` over the chunks of `x[a..b]`: full chunks, then the partial
/// one masked (none when b - a is a multiple of 8, as for uniform groups).
#[inline(always)]
unsafe fn acc_in<T: Real, W: Wide>(x: *const T, a: usize, b: usize, term: impl Fn(W) -> W) -> W {
    // SAFETY: the caller upholds this function's contract (see its doc and the module's).
    unsafe {
        let mut acc = W::zeros();
        let mut i = a;
        while i + 8 <= b {
            acc = W::add(acc, term(W::load(x.add(i))));
            i += 8;
        }
        if i < b {
            let lanes = W::lanes_below((b - i) as i64);
            acc = W::add_lanes(acc, term(W::load(x.add(i))), lanes);
        }
        acc
    }
}

/// Sum of `term` over the chunks of `x[a..b]` (`acc_in`, reduced).
#[inline(always)]
unsafe fn sum_in<T: Real, W: Wide>(x: *const T, a: usize, b: usize, term: impl Fn(W) -> W) -> f64 {
    // SAFETY: the caller upholds this function's contract (see its doc and the module's).
    unsafe { hsum(W::halves(acc_in(x, a, b, term))) }
}

/// Sum of (x_i - shift) over `x[a..b]` (masked tail).
#[inline(always)]
pub(crate) unsafe fn sum_shifted_in<T: Real, W: Wide>(
    x: *const T,
    a: usize,
    b: usize,
    shift: f64,
) -> f64 {
    // SAFETY: the caller upholds this function's contract (see its doc and the module's).
    unsafe {
        let s = W::splat(shift);
        sum_in(x, a, b, |v: W| W::minus(v, s))
    }
}

/// Sum of (x_i - mean)^2 over `x[a..b]` (masked tail).
#[inline(always)]
pub(crate) unsafe fn sum_sq_dev_in<T: Real, W: Wide>(
    x: *const T,
    a: usize,
    b: usize,
    mean: f64,
) -> f64 {
    // SAFETY: the caller upholds this function's contract (see its doc and the module's).
    unsafe {
        let m = W::splat(mean);
        sum_in(x, a, b, |v: W| W::squared(W::minus(v, m)))
    }
}

/// Write (x_i - mu) * k over `[a, b)` of `x` into `out`; the partial chunk keeps the old
/// values of `out` past `b`. With `probe`, false if a written value is not finite in T.
/// Also the write of a uniform group (a = 0, b = G a multiple of 8: no partial chunk).
#[inline(always)]
pub(crate) unsafe fn write_affine_in<T: Real, W: Wide>(
    x: *const T,
    out: *mut T,
    a: usize,
    b: usize,
    mu: f64,
    k: f64,
    probe: bool,
) -> bool {
    // SAFETY: the caller upholds this function's contract (see its doc and the module's).
    unsafe {
        let (m, kk) = (W::splat(mu), W::splat(k));
        let (all, mut found) = (W::lanes_below(8), W::zeros());
        let mut i = a;
        while i + 8 <= b {
            store_chunk::<T, W>((x, out, i), (m, kk), probe, all, &mut found);
            i += 8;
        }
        if i < b {
            let lanes = W::lanes_below((b - i) as i64);
            let (old, new) = (W::load(out.add(i)), W::affine(W::load(x.add(i)), m, kk));
            W::store(out.add(i), W::blend(old, new, lanes));
            if probe {
                probe_into(&mut found, W::load(out.add(i)), lanes);
            }
        }
        all_finite(found)
    }
}

// Ragged blocks without a data-dependent branch per group: every group of a block runs the
// same number of chunks (enough for the block's largest group, at most 4), each chunk's
// lanes masked to the group's own values. Group sizes that vary from group to group would
// otherwise mispredict every loop's exit, about once per group and pass. Masked lanes add
// +0.0 to accumulators that are never -0.0, so the sums equal those of the `_in` functions
// bit for bit. The write stores whole chunks: lanes past the group's end get values that
// the following groups, written later and in order, overwrite (callers keep every chunk
// inside the batch and write the groups in increasing order).

/// The accumulators of `term` over `C` chunks from `x[a]`, each masked to the lanes before `b`;
/// each chunk, as read (converted to f64), is written to `kept[..C]` for the later passes.
#[inline(always)]
unsafe fn acc_fixed<T: Real, W: Wide, const C: usize>(
    x: *const T,
    (a, b): (usize, usize),
    kept: *mut W,
    term: impl Fn(W) -> W,
) -> W {
    // SAFETY: the caller upholds this function's contract (see its doc and the module's).
    unsafe {
        let mut acc = W::zeros();
        for c in 0..C {
            let lanes = W::chunk_lanes(b - a, c);
            let v = W::load(x.add(a + 8 * c));
            kept.add(c).write(v);
            acc = W::add_lanes(acc, term(v), lanes);
        }
        acc
    }
}

/// `acc_fixed` over the chunks kept in `stage` by it (a group of `n` values).
#[inline(always)]
unsafe fn acc_staged<W: Wide, const C: usize>(
    stage: &[W; C],
    n: usize,
    term: impl Fn(W) -> W,
) -> W {
    // SAFETY: the caller upholds this function's contract (see its doc and the module's).
    unsafe {
        let mut acc = W::zeros();
        for (c, &kept) in stage.iter().enumerate() {
            acc = W::add_lanes(acc, term(kept), W::chunk_lanes(n, c));
        }
        acc
    }
}

/// `write::block_affine` of eight groups under the group scale, four groups per vector:
/// k = factor / (sqrt(m2 / (n - ddof)) + eps), +0 where that denominator is 0 (`ratio`), with
/// factor n / (n - 1) when `loo` (`loo_factor`), else 1: the same operations in the same
/// order, so the same bits (and those of `block_affine_uniform`, whose product by an exact
/// reciprocal rounds like this quotient). The compiler's own vectors read `m2` across the
/// two 4-lane stores that wrote it (ragged blocks: mixed 2- and 4-lane pieces; uniform
/// blocks: one 8-lane load), which stalled the division chain on store forwarding: ~10%
/// of a block's time at 1e7 rewards.
#[inline(always)]
pub(crate) unsafe fn group_factors8(
    n: &[f64; 8],
    m2: &[f64; 8],
    ddof: f64,
    eps: f64,
    loo: bool,
) -> [f64; 8] {
    // SAFETY: the caller upholds this function's contract (see its doc and the module's).
    unsafe {
        let mut k = [0.0f64; 8];
        let (ddof, eps, one) = (
            _mm256_set1_pd(ddof),
            _mm256_set1_pd(eps),
            _mm256_set1_pd(1.0),
        );
        for q in 0..2 {
            let nv = _mm256_loadu_pd(n.as_ptr().add(4 * q));
            let m2v = _mm256_loadu_pd(m2.as_ptr().add(4 * q));
            let d = _mm256_add_pd(
                _mm256_sqrt_pd(_mm256_div_pd(m2v, _mm256_sub_pd(nv, ddof))),
                eps,
            );
            let factor = if loo {
                _mm256_div_pd(nv, _mm256_sub_pd(nv, one))
            } else {
                one
            };
            let nonzero = _mm256_cmp_pd::<_CMP_NEQ_UQ>(d, _mm256_setzero_pd());
            let kv = _mm256_and_pd(_mm256_div_pd(factor, d), nonzero);
            _mm256_storeu_pd(k.as_mut_ptr().add(4 * q), kv);
        }
        k
    }
}

/// The chunks of eight groups that `moments_fixed8` read, as f64, for `write_affine_kept`:
/// each chunk is read and converted once instead of once per pass (for f32 rewards the
/// conversions were a third of the vector instructions of these loops; ragged calls at 1e7
/// rewards measured 5-8% faster).
pub(crate) type Stage<W, const C: usize> = [[W; C]; 8];

/// Means and (with `m2`) sums of squared deviations of the eight groups `spans` of `x`, `C`
/// masked chunks each (reads `x[a..a + 8 C]` of every group and keeps the chunks in `stage`,
/// which it initializes): the means are `x0 + sum_shifted_in / n` (x0 the group's first
/// value; 0 for an empty group) and the M2 `sum_sq_dev_in` around them, bit for bit, with the
/// horizontal sums of four groups done together and the divisions side by side.
#[inline(always)]
pub(crate) unsafe fn moments_fixed8<T: Real, W: Wide, const C: usize>(
    x: *const T,
    spans: &[(usize, usize)],
    stage: &mut MaybeUninit<Stage<W, C>>,
    mean: &mut [f64; 8],
    m2: Option<&mut [f64; 8]>,
) {
    // SAFETY: the caller upholds this function's contract (see its doc and the module's).
    unsafe {
        let zero = _mm256_setzero_pd();
        let kept = stage.as_mut_ptr() as *mut W; // (row j: kept[C j..C j + C])
        for q in 0..2 {
            let mut h = [zero; 4];
            let (mut x0, mut n) = ([0.0f64; 4], [0.0f64; 4]);
            for j in 0..4 {
                let (a, b) = spans[4 * q + j];
                x0[j] = (*x.add(a)).to_f64();
                n[j] = (b - a) as f64;
                let s = W::splat(x0[j]);
                let row = kept.add(C * (4 * q + j));
                h[j] = W::halves(acc_fixed::<T, W, C>(x, (a, b), row, |v: W| W::minus(v, s)));
            }
            let n = _mm256_loadu_pd(n.as_ptr());
            let m = _mm256_add_pd(_mm256_loadu_pd(x0.as_ptr()), _mm256_div_pd(hsum4(h), n));
            // Empty groups keep mean 0 (their 0 / 0 is masked out).
            let m = _mm256_and_pd(m, _mm256_cmp_pd::<_CMP_GT_OQ>(n, zero));
            _mm256_storeu_pd(mean.as_mut_ptr().add(4 * q), m);
        }
        let Some(m2) = m2 else { return };
        // (every row written just above)
        let stage = stage.assume_init_ref();
        for q in 0..2 {
            let mut h = [zero; 4];
            for j in 0..4 {
                let (a, b) = spans[4 * q + j];
                let m = W::splat(mean[4 * q + j]);
                h[j] = W::halves(acc_staged::<W, C>(&stage[4 * q + j], b - a, |v: W| {
                    W::squared(W::minus(v, m))
                }));
            }
            _mm256_storeu_pd(m2.as_mut_ptr().add(4 * q), hsum4(h));
        }
    }
}

/// Write (x_i - mu) * k of the chunks `kept` (a group's values as `moments8` or
/// `moments_fixed8` kept them) to `out[..8 kept.len()]`: values past the group's `n` are to
/// be overwritten by the following groups. With `probe`, false if one of the first `n`
/// values is not finite in T.
#[inline(always)]
pub(crate) unsafe fn write_affine_kept<T: Real, W: Wide>(
    kept: &[W],
    out: *mut T,
    n: usize,
    mu: f64,
    k: f64,
    probe: bool,
) -> bool {
    // SAFETY: the caller upholds this function's contract (see its doc and the module's).
    unsafe {
        let (m, kk) = (W::splat(mu), W::splat(k));
        let mut found = W::zeros();
        for (c, &v) in kept.iter().enumerate() {
            let at = out.add(8 * c);
            W::store(at, W::affine(v, m, kk));
            if probe {
                probe_into(
                    &mut found,
                    W::load(at),
                    W::lanes_below(n as i64 - 8 * c as i64),
                );
            }
        }
        all_finite(found)
    }
}

// Groups of four: one group per vector lane. Four groups are loaded as four vectors and
// transposed, so that vector k holds element k of each group; the statistics are then plain
// vertical arithmetic, in the order of the generic loops (for G = 4 they have no full chunk
// of 8, so they add the four values one by one to 0.0, then add the empty lanes' 0.0).

/// Transpose a 4x4 block of f64 (its own inverse).
#[inline(always)]
unsafe fn transpose4(v: [__m256d; 4]) -> [__m256d; 4] {
    // SAFETY: the caller upholds this function's contract (see its doc and the module's).
    unsafe {
        let t0 = _mm256_unpacklo_pd(v[0], v[1]);
        let t1 = _mm256_unpackhi_pd(v[0], v[1]);
        let t2 = _mm256_unpacklo_pd(v[2], v[3]);
        let t3 = _mm256_unpackhi_pd(v[2], v[3]);
        [
            _mm256_permute2f128_pd::<0x20>(t0, t2),
            _mm256_permute2f128_pd::<0x20>(t1, t3),
            _mm256_permute2f128_pd::<0x31>(t0, t2),
            _mm256_permute2f128_pd::<0x31>(t1, t3),
        ]
    }
}

/// Elements k = 0..4 of the four groups of four at `x`, as vector k (lane j: group j).
#[inline(always)]
unsafe fn columns4<T: Real>(x: *const T) -> [__m256d; 4] {
    // SAFETY: the caller upholds this function's contract (see its doc and the module's).
    unsafe {
        transpose4([
            T::load4(x),
            T::load4(x.add(4)),
            T::load4(x.add(8)),
            T::load4(x.add(12)),
        ])
    }
}

/// Means and (with `m2`) squared deviations of the eight groups of four values at `x`,
/// equal to `x0 + stats::sum_shifted / 4` and `stats::sum_sq_dev` bit for bit.
#[inline(always)]
pub(crate) unsafe fn moments4x8<T: Real>(
    x: *const T,
    mean: &mut [f64; 8],
    mut m2: Option<&mut [f64; 8]>,
) {
    // SAFETY: the caller upholds this function's contract (see its doc and the module's).
    unsafe {
        let (zero, four) = (_mm256_setzero_pd(), _mm256_set1_pd(4.0));
        for q in 0..2 {
            let c = columns4(x.add(16 * q));
            let x0 = c[0];
            let mut s = zero;
            for ck in c {
                s = _mm256_add_pd(s, _mm256_sub_pd(ck, x0));
            }
            let m = _mm256_add_pd(x0, _mm256_div_pd(_mm256_add_pd(s, zero), four));
            _mm256_storeu_pd(mean.as_mut_ptr().add(4 * q), m);
            if let Some(m2) = m2.as_deref_mut() {
                let mut s = zero;
                for ck in c {
                    let d = _mm256_sub_pd(ck, m);
                    s = _mm256_add_pd(s, _mm256_mul_pd(d, d));
                }
                _mm256_storeu_pd(m2.as_mut_ptr().add(4 * q), _mm256_add_pd(s, zero));
            }
        }
    }
}

/// Write (x - mu[j]) * k[j] for the eight groups of four values at `x` (no overflow probe:
/// callers have ruled overflow out).
#[inline(always)]
pub(crate) unsafe fn write_affine4x8<T: Real>(
    x: *const T,
    out: *mut T,
    mu: &[f64; 8],
    k: &[f64; 8],
) {
    // SAFETY: the caller upholds this function's contract (see its doc and the module's).
    unsafe {
        for q in 0..2 {
            let c = columns4(x.add(16 * q));
            let (m, kk) = (
                _mm256_loadu_pd(mu.as_ptr().add(4 * q)),
                _mm256_loadu_pd(k.as_ptr().add(4 * q)),
            );
            // (a loop, not `c.map(..)`: array::map calls its closure out of line, where the
            // intrinsics are not inlined: 3x slower for groups of four)
            let mut d = c;
            for dk in &mut d {
                *dk = _mm256_mul_pd(_mm256_sub_pd(*dk, m), kk);
            }
            let y = transpose4(d);
            for (j, yj) in y.into_iter().enumerate() {
                T::store4(out.add(16 * q + 4 * j), yj);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats;

    #[target_feature(enable = "avx2")]
    unsafe fn check<T: Real + std::fmt::Debug, const G: usize>(x: &[T], probe: bool) {
        // SAFETY: AVX2 is enabled here.
        unsafe { check_with::<T, Avx2, G>(x, probe) }
    }

    #[target_feature(enable = "avx512f,avx2")]
    unsafe fn check512<T: Real + std::fmt::Debug, const G: usize>(x: &[T], probe: bool) {
        // SAFETY: AVX-512F is enabled here.
        unsafe { check_with::<T, Avx512, G>(x, probe) }
    }

    #[inline(always)]
    unsafe fn check_with<T: Real + std::fmt::Debug, W: Wide, const G: usize>(x: &[T], probe: bool) {
        // SAFETY: the caller upholds this function's contract (see its doc and the module's).
        unsafe {
            for b in x.chunks_exact(8 * G) {
                let (mut mean, mut m2) = ([0.0f64; 8], [0.0f64; 8]);
                let mut stage = MaybeUninit::<[W; G]>::uninit();
                moments8::<T, W, G>(b.as_ptr(), &mut stage, &mut mean, Some(&mut m2));
                let kept = stage.assume_init_ref();
                for (j, g) in b.chunks_exact(G).enumerate() {
                    let x0 = g[0].to_f64();
                    let want = x0 + stats::sum_shifted(g, x0) / G as f64;
                    assert_eq!(mean[j].to_bits(), want.to_bits());
                    assert_eq!(m2[j].to_bits(), stats::sum_sq_dev(g, want).to_bits());
                    // the write from the kept chunks: the plain map's bits
                    let k = 1.0 / (m2[j] / G as f64).sqrt();
                    let mut fast = vec![T::zero(); G];
                    let rows = &kept[G / 8 * j..G / 8 * (j + 1)];
                    let ok =
                        write_affine_kept::<T, W>(rows, fast.as_mut_ptr(), G, mean[j], k, probe);
                    let plain: Vec<T> = g
                        .iter()
                        .map(|v| T::from_f64((v.to_f64() - mean[j]) * k))
                        .collect();
                    assert!(fast
                        .iter()
                        .zip(&plain)
                        .all(|(a, b)| a.to_f64().to_bits() == b.to_f64().to_bits()));
                    assert!(!probe || ok == plain.iter().all(|v| v.to_f64().is_finite()));
                }
            }
            for g in x.chunks_exact(G) {
                let x0 = g[0].to_f64();
                let s = sum_shifted::<T, W, G>(g.as_ptr(), x0);
                assert_eq!(s.to_bits(), stats::sum_shifted(g, x0).to_bits());
                let mean = x0 + s / G as f64;
                let m2 = sum_sq_dev::<T, W, G>(g.as_ptr(), mean);
                assert_eq!(m2.to_bits(), stats::sum_sq_dev(g, mean).to_bits());
                let k = 1.0 / (m2 / G as f64).sqrt();
                let mut fast = vec![T::zero(); G];
                let ok =
                    write_affine_in::<T, W>(g.as_ptr(), fast.as_mut_ptr(), 0, G, mean, k, probe);
                let plain: Vec<T> = g
                    .iter()
                    .map(|v| T::from_f64((v.to_f64() - mean) * k))
                    .collect();
                assert!(
                    fast.iter()
                        .zip(&plain)
                        .all(|(a, b)| a.to_f64().to_bits() == b.to_f64().to_bits()),
                    "{fast:?} != {plain:?}"
                );
                let finite = plain.iter().all(|v| v.to_f64().is_finite());
                assert!(!probe || ok == finite);
            }
        }
    }

    #[target_feature(enable = "avx2")]
    unsafe fn check4<T: Real + std::fmt::Debug>(x: &[T]) {
        // SAFETY: the caller upholds this function's contract (see its doc and the module's).
        unsafe {
            for b in x.chunks_exact(32) {
                let (mut mean, mut m2) = ([0.0; 8], [0.0; 8]);
                moments4x8::<T>(b.as_ptr(), &mut mean, Some(&mut m2));
                let mut k = [0.0; 8];
                for (j, g) in b.chunks_exact(4).enumerate() {
                    let x0 = g[0].to_f64();
                    let want = x0 + stats::sum_shifted(g, x0) / 4.0;
                    assert_eq!(mean[j].to_bits(), want.to_bits());
                    assert_eq!(m2[j].to_bits(), stats::sum_sq_dev(g, want).to_bits());
                    k[j] = 1.0 / (m2[j] / 4.0).sqrt();
                }
                let mut fast = vec![T::zero(); 32];
                write_affine4x8::<T>(b.as_ptr(), fast.as_mut_ptr(), &mean, &k);
                for (i, (f, v)) in fast.iter().zip(b).enumerate() {
                    let want = T::from_f64((v.to_f64() - mean[i / 4]) * k[i / 4]);
                    assert_eq!(f.to_f64().to_bits(), want.to_f64().to_bits());
                }
            }
        }
    }

    /// Bit-identical to the generic loops, for f32 and f64, sizes 8..64, at small and large
    /// offsets (where rounding differs most), and the overflow probe finds an overflow.
    #[test]
    fn avx_loops_match_generic_bit_for_bit() {
        if !std::arch::is_x86_feature_detected!("avx2") {
            return;
        }
        let mut state = 0x2545f4914f6cdd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        for offset in [0.0, 1e6, -3e9] {
            let x64: Vec<f64> = (0..64 * 40).map(|_| offset + next() * 7.0 - 3.0).collect();
            let x32: Vec<f32> = x64.iter().map(|&v| v as f32).collect();
            // SAFETY: AVX2 was detected.
            unsafe {
                check4::<f32>(&x32);
                check4::<f64>(&x64);
                for probe in [false, true] {
                    check::<f32, 8>(&x32, probe);
                    check::<f32, 16>(&x32, probe);
                    check::<f32, 64>(&x32, probe);
                    check::<f64, 16>(&x64, probe);
                    check::<f64, 32>(&x64, probe);
                    if std::arch::is_x86_feature_detected!("avx512f") {
                        check512::<f32, 8>(&x32, probe);
                        check512::<f32, 16>(&x32, probe);
                        check512::<f32, 64>(&x32, probe);
                        check512::<f64, 16>(&x64, probe);
                        check512::<f64, 32>(&x64, probe);
                    }
                }
            }
        }
        // SAFETY: AVX2 was detected (AVX-512F where the second runs).
        unsafe {
            ragged_loops_match_kernel::<Avx2>();
            if std::arch::is_x86_feature_detected!("avx512f") {
                ragged_loops_match_kernel_512();
            }
        }
        let mut big = [3e38f32; 8];
        big[0] = -3e38;
        let mut out = [0f32; 8];
        // SAFETY: AVX2 was detected; 8 values each.
        let ok = unsafe {
            write_affine_in::<f32, Avx2>(big.as_ptr(), out.as_mut_ptr(), 0, 8, 0.0, 2.0, true)
        };
        assert!(!ok);
    }

    /// The masked ragged loops against `kernel`'s generic ones, bit for bit, every length 0..40
    /// at every start within a chunk, with NaN past the group to show the masking.
    #[target_feature(enable = "avx512f,avx2")]
    unsafe fn ragged_loops_match_kernel_512() {
        // SAFETY: AVX-512F is enabled here.
        unsafe { ragged_loops_match_kernel::<Avx512>() }
    }

    #[inline(always)]
    unsafe fn ragged_loops_match_kernel<W: Wide>() {
        let x: Vec<f32> = (0..64)
            .map(|i| {
                if i >= 48 {
                    f32::NAN
                } else {
                    1e6 + (i * 7 % 13) as f32 * 0.37
                }
            })
            .collect();
        for a in 0..8 {
            for b in a..(a + 40).min(48) {
                let shift = x[a] as f64;
                // SAFETY: AVX2 was detected; b + 8 <= 64 keeps the masked chunk inside x.
                unsafe {
                    let (s, s_ref) = (
                        sum_shifted_in::<f32, W>(x.as_ptr(), a, b, shift),
                        crate::kernel::sum_shifted_in(&x, a, b, shift),
                    );
                    assert_eq!(s.to_bits(), s_ref.to_bits());
                    let mean = shift + s / (b - a).max(1) as f64;
                    let q = sum_sq_dev_in::<f32, W>(x.as_ptr(), a, b, mean);
                    assert_eq!(
                        q.to_bits(),
                        crate::kernel::sum_sq_dev_in(&x, a, b, mean).to_bits()
                    );
                    let (mut fast, mut plain) = (vec![-7.0f32; 64], vec![-7.0f32; 64]);
                    assert!(write_affine_in::<f32, W>(
                        x.as_ptr(),
                        fast.as_mut_ptr(),
                        a,
                        b,
                        mean,
                        0.5,
                        true
                    ));
                    assert!(crate::kernel::write_affine_in(
                        &x, &mut plain, a, b, mean, 0.5, true
                    ));
                    assert_eq!(fast, plain);
                }
            }
        }
    }
}
