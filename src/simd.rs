//! Explicit AVX versions of the per-group loops of the write pass: the shifted sum, the sum
//! of squared deviations and the affine write, for uniform groups (size a multiple of 8, or
//! 4), ragged groups, and ragged blocks of varying sizes.
//!
//! The compiler's own vectorization of the generic loops (`stats::sum_shifted` and friends)
//! picks 128-bit vectors for the f32-to-f64 accumulations; these use 256-bit vectors. The
//! arithmetic is the same, operation for operation (eight accumulator lanes, the
//! `stats::lanes_sum` reduction, no fused multiply-add), so the results are bit-identical
//! to the generic code, which the tests check.
//!
//! Every function here must only run inside code compiled with AVX2 enabled.

use crate::real::Real;
use std::arch::x86_64::*;

/// Eight f64 lanes, 0-3 and 4-7: one chunk of eight rewards, or eight accumulators.
type Lanes = [__m256d; 2];

#[inline(always)]
unsafe fn zeros() -> Lanes {
    // SAFETY: the caller upholds this function's contract (see its doc and the module's).
    unsafe { [_mm256_setzero_pd(); 2] }
}

#[inline(always)]
unsafe fn add(a: Lanes, b: Lanes) -> Lanes {
    // SAFETY: the caller upholds this function's contract (see its doc and the module's).
    unsafe { [_mm256_add_pd(a[0], b[0]), _mm256_add_pd(a[1], b[1])] }
}

/// v - s in every lane.
#[inline(always)]
unsafe fn minus(v: Lanes, s: __m256d) -> Lanes {
    // SAFETY: the caller upholds this function's contract (see its doc and the module's).
    unsafe { [_mm256_sub_pd(v[0], s), _mm256_sub_pd(v[1], s)] }
}

#[inline(always)]
unsafe fn squared(d: Lanes) -> Lanes {
    // SAFETY: the caller upholds this function's contract (see its doc and the module's).
    unsafe { [_mm256_mul_pd(d[0], d[0]), _mm256_mul_pd(d[1], d[1])] }
}

/// (v - mu) * k in every lane.
#[inline(always)]
unsafe fn affine(v: Lanes, mu: __m256d, k: __m256d) -> Lanes {
    // SAFETY: the caller upholds this function's contract (see its doc and the module's).
    unsafe {
        [
            _mm256_mul_pd(_mm256_sub_pd(v[0], mu), k),
            _mm256_mul_pd(_mm256_sub_pd(v[1], mu), k),
        ]
    }
}

/// The lanes of `t` selected by `m`, +0.0 elsewhere.
#[inline(always)]
unsafe fn masked(t: Lanes, m: Lanes) -> Lanes {
    // SAFETY: the caller upholds this function's contract (see its doc and the module's).
    unsafe { [_mm256_and_pd(t[0], m[0]), _mm256_and_pd(t[1], m[1])] }
}

/// Lanes selected when their index is below `rem`: all for rem >= 8, none for rem <= 0.
#[inline(always)]
unsafe fn lanes_below(rem: i64) -> Lanes {
    // SAFETY: the caller upholds this function's contract (see its doc and the module's).
    unsafe {
        let r = _mm256_set1_epi64x(rem);
        [
            _mm256_castsi256_pd(_mm256_cmpgt_epi64(r, _mm256_set_epi64x(3, 2, 1, 0))),
            _mm256_castsi256_pd(_mm256_cmpgt_epi64(r, _mm256_set_epi64x(7, 6, 5, 4))),
        ]
    }
}

/// Overflow probe: adds w * 0 of the selected lanes to `found`, which stays 0 unless some
/// value is inf or NaN (w * 0 is NaN exactly for those).
#[inline(always)]
unsafe fn probe_into(found: &mut __m256d, w: Lanes, m: Lanes) {
    // SAFETY: the caller upholds this function's contract (see its doc and the module's).
    unsafe {
        let z = _mm256_setzero_pd();
        let t = masked([_mm256_mul_pd(w[0], z), _mm256_mul_pd(w[1], z)], m);
        *found = _mm256_add_pd(*found, _mm256_add_pd(t[0], t[1]));
    }
}

/// Store (v - mu) * k of the chunk of `x` at `i` to `out` and, with `probe`, probe the
/// lanes `m` of what was stored (read back: the rounding to T is what may overflow).
#[inline(always)]
unsafe fn store_chunk<T: Real>(
    (x, out, i): (*const T, *mut T, usize),
    (mu, k): (__m256d, __m256d),
    probe: bool,
    m: Lanes,
    found: &mut __m256d,
) {
    // SAFETY: the caller upholds this function's contract (see its doc and the module's).
    unsafe {
        T::store8(out.add(i), affine(T::load8(x.add(i)), mu, k));
        if probe {
            probe_into(found, T::load8(out.add(i)), m);
        }
    }
}

/// True when no probed value was inf or NaN.
#[inline(always)]
unsafe fn all_finite(found: __m256d) -> bool {
    // SAFETY: the caller upholds this function's contract (see its doc and the module's).
    unsafe { _mm256_movemask_pd(_mm256_cmp_pd::<_CMP_EQ_OQ>(found, _mm256_setzero_pd())) == 0b1111 }
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

/// Lanes 0-3 + lanes 4-7 of eight accumulators (the input of `hsum`).
#[inline(always)]
unsafe fn halves(acc: Lanes) -> __m256d {
    // SAFETY: the caller upholds this function's contract (see its doc and the module's).
    unsafe { _mm256_add_pd(acc[0], acc[1]) }
}

// Uniform groups of G values, G a multiple of 8 (no partial chunk).

/// The accumulators of the shifted sum of the G values at `x`.
#[inline(always)]
unsafe fn shifted_acc<T: Real, const G: usize>(x: *const T, shift: f64) -> Lanes {
    // SAFETY: the caller upholds this function's contract (see its doc and the module's).
    unsafe {
        let s = _mm256_set1_pd(shift);
        acc_in(x, 0, G, |v| minus(v, s))
    }
}

/// The accumulators of the squared deviations of the G values at `x`.
#[inline(always)]
unsafe fn sq_dev_acc<T: Real, const G: usize>(x: *const T, mean: f64) -> Lanes {
    // SAFETY: the caller upholds this function's contract (see its doc and the module's).
    unsafe {
        let m = _mm256_set1_pd(mean);
        acc_in(x, 0, G, |v| squared(minus(v, m)))
    }
}

/// Sum of (x_i - shift) over the G elements at `x`; equals `stats::sum_shifted` (which adds
/// its empty scalar remainder, 0.0, first).
#[inline(always)]
pub(crate) unsafe fn sum_shifted<T: Real, const G: usize>(x: *const T, shift: f64) -> f64 {
    // SAFETY: the caller upholds this function's contract (see its doc and the module's).
    unsafe { 0.0 + hsum(halves(shifted_acc::<T, G>(x, shift))) }
}

/// Sum of (x_i - mean)^2 over the G elements at `x`; equals `stats::sum_sq_dev`.
#[inline(always)]
pub(crate) unsafe fn sum_sq_dev<T: Real, const G: usize>(x: *const T, mean: f64) -> f64 {
    // SAFETY: the caller upholds this function's contract (see its doc and the module's).
    unsafe { 0.0 + hsum(halves(sq_dev_acc::<T, G>(x, mean))) }
}

/// Means (`x0 + sum_shifted / G`, x0 each group's first value) and, with `m2`, sums of
/// squared deviations of the 8 consecutive groups of G values at `x`: the same results as
/// the per-group functions, with the horizontal sums of four groups done together.
#[inline(always)]
pub(crate) unsafe fn moments8<T: Real, const G: usize>(
    x: *const T,
    mean: &mut [f64; 8],
    m2: Option<&mut [f64; 8]>,
) {
    // SAFETY: the caller upholds this function's contract (see its doc and the module's).
    unsafe {
        let zero = _mm256_setzero_pd();
        let size = _mm256_set1_pd(G as f64);
        for q in 0..2 {
            let mut h = [zero; 4];
            let mut x0 = [0.0f64; 4];
            for j in 0..4 {
                let p = x.add((4 * q + j) * G);
                x0[j] = (*p).to_f64();
                h[j] = halves(shifted_acc::<T, G>(p, x0[j]));
            }
            let sums = _mm256_add_pd(zero, hsum4(h));
            let m = _mm256_add_pd(_mm256_loadu_pd(x0.as_ptr()), _mm256_div_pd(sums, size));
            _mm256_storeu_pd(mean.as_mut_ptr().add(4 * q), m);
        }
        let Some(m2) = m2 else { return };
        for q in 0..2 {
            let mut h = [zero; 4];
            for j in 0..4 {
                h[j] = halves(sq_dev_acc::<T, G>(x.add((4 * q + j) * G), mean[4 * q + j]));
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
unsafe fn acc_in<T: Real>(x: *const T, a: usize, b: usize, term: impl Fn(Lanes) -> Lanes) -> Lanes {
    // SAFETY: the caller upholds this function's contract (see its doc and the module's).
    unsafe {
        let mut acc = zeros();
        let mut i = a;
        while i + 8 <= b {
            acc = add(acc, term(T::load8(x.add(i))));
            i += 8;
        }
        if i < b {
            acc = add(
                acc,
                masked(term(T::load8(x.add(i))), lanes_below((b - i) as i64)),
            );
        }
        acc
    }
}

/// Sum of `term` over the chunks of `x[a..b]` (`acc_in`, reduced).
#[inline(always)]
unsafe fn sum_in<T: Real>(x: *const T, a: usize, b: usize, term: impl Fn(Lanes) -> Lanes) -> f64 {
    // SAFETY: the caller upholds this function's contract (see its doc and the module's).
    unsafe { hsum(halves(acc_in(x, a, b, term))) }
}

/// Sum of (x_i - shift) over `x[a..b]` (masked tail).
#[inline(always)]
pub(crate) unsafe fn sum_shifted_in<T: Real>(x: *const T, a: usize, b: usize, shift: f64) -> f64 {
    // SAFETY: the caller upholds this function's contract (see its doc and the module's).
    unsafe {
        let s = _mm256_set1_pd(shift);
        sum_in(x, a, b, |v| minus(v, s))
    }
}

/// Sum of (x_i - mean)^2 over `x[a..b]` (masked tail).
#[inline(always)]
pub(crate) unsafe fn sum_sq_dev_in<T: Real>(x: *const T, a: usize, b: usize, mean: f64) -> f64 {
    // SAFETY: the caller upholds this function's contract (see its doc and the module's).
    unsafe {
        let m = _mm256_set1_pd(mean);
        sum_in(x, a, b, |v| squared(minus(v, m)))
    }
}

/// Write (x_i - mu) * k over `[a, b)` of `x` into `out`; the partial chunk keeps the old
/// values of `out` past `b`. With `probe`, false if a written value is not finite in T.
/// Also the write of a uniform group (a = 0, b = G a multiple of 8: no partial chunk).
#[inline(always)]
pub(crate) unsafe fn write_affine_in<T: Real>(
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
        let (m, kk) = (_mm256_set1_pd(mu), _mm256_set1_pd(k));
        let (all, mut found) = (lanes_below(8), _mm256_setzero_pd());
        let mut i = a;
        while i + 8 <= b {
            store_chunk((x, out, i), (m, kk), probe, all, &mut found);
            i += 8;
        }
        if i < b {
            let lanes = lanes_below((b - i) as i64);
            let (old, new) = (T::load8(out.add(i)), affine(T::load8(x.add(i)), m, kk));
            T::store8(
                out.add(i),
                [
                    _mm256_blendv_pd(old[0], new[0], lanes[0]),
                    _mm256_blendv_pd(old[1], new[1], lanes[1]),
                ],
            );
            if probe {
                probe_into(&mut found, T::load8(out.add(i)), lanes);
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

/// Sum of `term` over `chunks` chunks from `x[a]`, each masked to the lanes before `b`.
#[inline(always)]
unsafe fn sum_fixed<T: Real>(
    x: *const T,
    a: usize,
    b: usize,
    chunks: usize,
    term: impl Fn(Lanes) -> Lanes,
) -> f64 {
    // SAFETY: the caller upholds this function's contract (see its doc and the module's).
    unsafe {
        let mut acc = zeros();
        for c in 0..chunks {
            let i = a + 8 * c;
            acc = add(
                acc,
                masked(term(T::load8(x.add(i))), lanes_below(b as i64 - i as i64)),
            );
        }
        hsum(halves(acc))
    }
}

/// `sum_shifted_in` over `x[a..b]` as `chunks` masked chunks (reads `x[a..a + 8 chunks]`).
#[inline(always)]
pub(crate) unsafe fn sum_shifted_fixed<T: Real>(
    x: *const T,
    a: usize,
    b: usize,
    shift: f64,
    chunks: usize,
) -> f64 {
    // SAFETY: the caller upholds this function's contract (see its doc and the module's).
    unsafe {
        let s = _mm256_set1_pd(shift);
        sum_fixed(x, a, b, chunks, |v| minus(v, s))
    }
}

/// `sum_sq_dev_in` over `x[a..b]` as `chunks` masked chunks.
#[inline(always)]
pub(crate) unsafe fn sum_sq_dev_fixed<T: Real>(
    x: *const T,
    a: usize,
    b: usize,
    mean: f64,
    chunks: usize,
) -> f64 {
    // SAFETY: the caller upholds this function's contract (see its doc and the module's).
    unsafe {
        let m = _mm256_set1_pd(mean);
        sum_fixed(x, a, b, chunks, |v| squared(minus(v, m)))
    }
}

/// Write (x_i - mu) * k over `x[a..a + 8 chunks]` to `out` (values past `b` are to be
/// overwritten by the following groups). With `probe`, false if a value of `[a, b)` is not
/// finite in T.
#[inline(always)]
pub(crate) unsafe fn write_affine_fixed<T: Real>(
    x: *const T,
    out: *mut T,
    (a, b): (usize, usize),
    mu: f64,
    k: f64,
    probe: bool,
    chunks: usize,
) -> bool {
    // SAFETY: the caller upholds this function's contract (see its doc and the module's).
    unsafe {
        let (m, kk) = (_mm256_set1_pd(mu), _mm256_set1_pd(k));
        let mut found = _mm256_setzero_pd();
        for c in 0..chunks {
            let i = a + 8 * c;
            store_chunk(
                (x, out, i),
                (m, kk),
                probe,
                lanes_below(b as i64 - i as i64),
                &mut found,
            );
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
            let y = transpose4(c.map(|ck| _mm256_mul_pd(_mm256_sub_pd(ck, m), kk)));
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
        // SAFETY: the caller upholds this function's contract (see its doc and the module's).
        unsafe {
            for b in x.chunks_exact(8 * G) {
                let (mut mean, mut m2) = ([0.0; 8], [0.0; 8]);
                moments8::<T, G>(b.as_ptr(), &mut mean, Some(&mut m2));
                for (j, g) in b.chunks_exact(G).enumerate() {
                    let x0 = g[0].to_f64();
                    let want = x0 + stats::sum_shifted(g, x0) / G as f64;
                    assert_eq!(mean[j].to_bits(), want.to_bits());
                    assert_eq!(m2[j].to_bits(), stats::sum_sq_dev(g, want).to_bits());
                }
            }
            for g in x.chunks_exact(G) {
                let x0 = g[0].to_f64();
                let s = sum_shifted::<T, G>(g.as_ptr(), x0);
                assert_eq!(s.to_bits(), stats::sum_shifted(g, x0).to_bits());
                let mean = x0 + s / G as f64;
                let m2 = sum_sq_dev::<T, G>(g.as_ptr(), mean);
                assert_eq!(m2.to_bits(), stats::sum_sq_dev(g, mean).to_bits());
                let k = 1.0 / (m2 / G as f64).sqrt();
                let mut fast = vec![T::zero(); G];
                let ok = write_affine_in(g.as_ptr(), fast.as_mut_ptr(), 0, G, mean, k, probe);
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
                }
            }
        }
        ragged_loops_match_kernel();
        let mut big = [3e38f32; 8];
        big[0] = -3e38;
        let mut out = [0f32; 8];
        // SAFETY: AVX2 was detected; 8 values each.
        let ok = unsafe { write_affine_in(big.as_ptr(), out.as_mut_ptr(), 0, 8, 0.0, 2.0, true) };
        assert!(!ok);
    }

    /// The masked ragged loops against `kernel`'s generic ones, bit for bit, every length 0..40
    /// at every start within a chunk, with NaN past the group to show the masking.
    fn ragged_loops_match_kernel() {
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
                        sum_shifted_in(x.as_ptr(), a, b, shift),
                        crate::kernel::sum_shifted_in(&x, a, b, shift),
                    );
                    assert_eq!(s.to_bits(), s_ref.to_bits());
                    let mean = shift + s / (b - a).max(1) as f64;
                    let q = sum_sq_dev_in(x.as_ptr(), a, b, mean);
                    assert_eq!(
                        q.to_bits(),
                        crate::kernel::sum_sq_dev_in(&x, a, b, mean).to_bits()
                    );
                    let (mut fast, mut plain) = (vec![-7.0f32; 64], vec![-7.0f32; 64]);
                    assert!(write_affine_in(
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
