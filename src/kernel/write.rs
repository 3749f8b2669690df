//! The per-group loops the block loops share: masked sums over a group inside its batch,
//! the affine write with its overflow probe, and the block of affine factors.

use super::BLOCK;
use crate::policy::{loo_factor, ratio, Center, Denom, Params, Scale};
use crate::real::Real;
use crate::stats::{lanes_sum, std_of};

/// Can no advantage of a group of `n` rewards overflow T, when scaled by its own std?
/// Every |r - mean| is at most sqrt(M2), and k = factor / (sqrt(M2 / (n - ddof)) + eps) with
/// factor <= 2, so sqrt(M2) * |k| <= 2 sqrt(n) <= 2 n, and |mean - mu| * |k| + 2 n bounds
/// every |(r - mu) * k| (the factor 2 below covers rounding). When this holds, the write
/// needs no overflow probe; centred, it always holds for a finite k. Other scales
/// (`group_scale = false`) keep the probe.
#[inline(always)]
pub(super) fn cannot_overflow<T: Real>(
    n: f64,
    mean: f64,
    mu: f64,
    k: f64,
    group_scale: bool,
) -> bool {
    group_scale && (mean - mu).abs() * k.abs() + 2.0 * n <= T::MAX_F64 * 0.5
}

/// Write (r - mu) * k for every reward; false if an advantage is not finite in T (the
/// result overflowed: finite rewards, finite mu and k, but a residual beyond T's range).
/// With `probe` false the check is skipped (the caller proved no overflow can happen).
#[inline(always)]
pub(super) fn write_affine<T: Real>(x: &[T], out: &mut [T], mu: f64, k: f64, probe: bool) -> bool {
    if !probe {
        for (o, &v) in out.iter_mut().zip(x) {
            *o = T::from_f64((v.to_f64() - mu) * k);
        }
        return true;
    }
    // Fixed-width chunks with a separate f64 staging array: this shape vectorizes whether or
    // not the group length is a compile-time constant. `probe` stays 0 unless some output is
    // inf or NaN (v * 0 is NaN exactly for those), at one multiply-add per element.
    let mut probe = [0.0f64; 8];
    let mut xc = x.chunks_exact(8);
    let mut oc = out.chunks_exact_mut(8);
    for (xs, os) in (&mut xc).zip(&mut oc) {
        let mut t = [0.0f64; 8];
        for i in 0..8 {
            t[i] = (xs[i].to_f64() - mu) * k;
        }
        for i in 0..8 {
            os[i] = T::from_f64(t[i]);
            probe[i] += os[i].to_f64() * 0.0;
        }
    }
    let mut rest = 0.0f64;
    for (o, &v) in oc.into_remainder().iter_mut().zip(xc.remainder()) {
        *o = T::from_f64((v.to_f64() - mu) * k);
        rest += o.to_f64() * 0.0;
    }
    probe.iter().sum::<f64>() + rest == 0.0
}

/// The factors k of a block of groups with `n` rewards and squared deviations `m2`, side by
/// side (vector sqrt and division): what `group_affine` gives a group of two or more rewards.
/// Groups it does not cover (fewer than 2, non-finite, guarded) are sent elsewhere by callers.
/// With `AVX` (only in the kernel's copies compiled with AVX2) the group scale takes the
/// explicit 4-lane vectors of `simd::group_factors8`: the same operations, the same bits
/// (the compiler's own vectors here read `m2` across the stores that wrote it).
#[inline(always)]
pub(super) fn block_affine<const AVX: bool>(
    n: &[f64; BLOCK],
    m2: &[f64; BLOCK],
    p: &Params,
    batch: Denom,
) -> [f64; BLOCK] {
    #[cfg(target_arch = "x86_64")]
    if AVX && p.scale == Scale::Group {
        let loo = p.center == Center::LeaveOneOut;
        // SAFETY: `AVX` is true only in code compiled with AVX2 enabled.
        return unsafe { crate::simd::group_factors8(n, m2, p.ddof as f64, p.eps, loo) };
    }
    // Branches on the parameters outside the loops, so that each loop is one vector pass.
    let denom = match p.scale {
        Scale::Group => {
            let (ddof, eps) = (p.ddof as f64, p.eps);
            let mut d = [0.0f64; BLOCK];
            for j in 0..BLOCK {
                d[j] = std_of(m2[j], n[j], ddof) + eps;
            }
            d
        }
        Scale::Batch | Scale::BatchResidual => [batch.d; BLOCK],
        Scale::None => [1.0; BLOCK],
    };
    let mut factor = [1.0f64; BLOCK];
    if p.center == Center::LeaveOneOut {
        for j in 0..BLOCK {
            factor[j] = loo_factor(n[j]);
        }
    }
    let mut k = [0.0f64; BLOCK];
    for j in 0..BLOCK {
        k[j] = ratio(factor[j], denom[j]);
    }
    k
}

/// `block_affine` for groups of one size `g`: the per-group division of M2 by `g - ddof`
/// becomes a multiplication where that count is a power of two (its reciprocal is exact, so
/// the product rounds the same real number as the quotient: the same bits), which frees the
/// divider for the division of the factor by the denominator. (The AVX copies take
/// `block_affine`'s explicit vectors, faster still.)
#[inline(always)]
pub(super) fn block_affine_uniform<const AVX: bool>(
    g: f64,
    m2: &[f64; BLOCK],
    p: &Params,
    batch: Denom,
) -> [f64; BLOCK] {
    let c = g - p.ddof as f64;
    let power_of_two = (1.0..=1e300).contains(&c) && (c.to_bits() & ((1u64 << 52) - 1)) == 0;
    if AVX || p.scale != Scale::Group || !power_of_two {
        return block_affine::<AVX>(&[g; BLOCK], m2, p, batch);
    }
    let (inv, eps) = (1.0 / c, p.eps);
    let factor = if p.center == Center::LeaveOneOut {
        loo_factor(g)
    } else {
        1.0
    };
    let mut k = [0.0f64; BLOCK];
    for j in 0..BLOCK {
        k[j] = ratio(factor, (m2[j] * inv).sqrt() + eps);
    }
    k
}

/// Sum of (x_i - shift) over `x[a..b]`, eight lanes wide. A group's last partial chunk is
/// read as a full chunk of `x` where `x` extends far enough (the next group's values), with
/// the lanes past `b` masked out: ragged groups then need no scalar remainder loop.
#[inline(always)]
pub(crate) fn sum_shifted_in<T: Real>(x: &[T], a: usize, b: usize, shift: f64) -> f64 {
    let mut acc = [0.0f64; 8];
    let full = a + (b - a) / 8 * 8;
    for c in x[a..full].chunks_exact(8) {
        for k in 0..8 {
            acc[k] += c[k].to_f64() - shift;
        }
    }
    let rem = b - full;
    if rem > 0 {
        if full + 8 <= x.len() {
            let c = &x[full..full + 8];
            for k in 0..8 {
                acc[k] += if k < rem { c[k].to_f64() - shift } else { 0.0 };
            }
        } else {
            for (k, v) in x[full..b].iter().enumerate() {
                acc[k] += v.to_f64() - shift;
            }
        }
    }
    lanes_sum(&acc)
}

/// Sum of (x_i - mean)^2 over `x[a..b]`, masked like `sum_shifted_in`.
#[inline(always)]
pub(crate) fn sum_sq_dev_in<T: Real>(x: &[T], a: usize, b: usize, mean: f64) -> f64 {
    let mut acc = [0.0f64; 8];
    let full = a + (b - a) / 8 * 8;
    for c in x[a..full].chunks_exact(8) {
        for k in 0..8 {
            let d = c[k].to_f64() - mean;
            acc[k] += d * d;
        }
    }
    let rem = b - full;
    if rem > 0 {
        if full + 8 <= x.len() {
            let c = &x[full..full + 8];
            for k in 0..8 {
                let d = c[k].to_f64() - mean;
                acc[k] += if k < rem { d * d } else { 0.0 };
            }
        } else {
            for (k, v) in x[full..b].iter().enumerate() {
                let d = v.to_f64() - mean;
                acc[k] += d * d;
            }
        }
    }
    lanes_sum(&acc)
}

/// `write_affine` over `x[a..b]` into `out[a..b]`; the last partial chunk is written as a
/// full chunk where `out` extends far enough, keeping the old values past `b` (a blend).
#[inline(always)]
pub(crate) fn write_affine_in<T: Real>(
    x: &[T],
    out: &mut [T],
    a: usize,
    b: usize,
    mu: f64,
    k: f64,
    probe: bool,
) -> bool {
    let full = a + (b - a) / 8 * 8;
    let mut ok = write_affine(&x[a..full], &mut out[a..full], mu, k, probe);
    let rem = b - full;
    if rem > 0 {
        if full + 8 <= x.len() {
            let (c, o) = (&x[full..full + 8], &mut out[full..full + 8]);
            let mut found = 0.0f64;
            for i in 0..8 {
                let v = T::from_f64((c[i].to_f64() - mu) * k);
                found += if probe && i < rem {
                    v.to_f64() * 0.0
                } else {
                    0.0
                };
                o[i] = if i < rem { v } else { o[i] };
            }
            ok &= found == 0.0;
        } else {
            ok &= write_affine(&x[full..b], &mut out[full..b], mu, k, probe);
        }
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Scale;

    /// `block_affine_uniform` as the AVX copies run it (`simd::group_factors8`).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn vector_factors(g: f64, m2: &[f64; BLOCK], p: &Params) -> [f64; BLOCK] {
        block_affine_uniform::<true>(g, m2, p, Denom::ONE)
    }

    /// The product with the exact reciprocal gives the bits of the quotient: every size and
    /// ddof (powers of two and not), M2 from subnormal to huge, zero, inf and NaN.
    #[test]
    fn uniform_factors_equal_the_general_ones() {
        let mut s = 0x9e3779b97f4a7c15u64;
        let mut m2s = vec![
            0.0,
            f64::MIN_POSITIVE / 3.0,
            5e-324,
            1e300,
            f64::MAX,
            f64::INFINITY,
            f64::NAN,
        ];
        for _ in 0..400 {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            m2s.push(f64::from_bits(s >> 2));
        }
        for g in [2.0, 3.0, 4.0, 8.0, 15.0, 16.0, 17.0, 32.0, 64.0, 1024.0] {
            for ddof in [0u32, 1] {
                for center in [Center::Mean, Center::LeaveOneOut] {
                    let p = Params {
                        scale: Scale::Group,
                        center,
                        ddof,
                        eps: if ddof == 0 { 0.0 } else { 1e-6 },
                        ..Params::default()
                    };
                    for m2 in m2s.chunks_exact(BLOCK) {
                        let m2: &[f64; BLOCK] = m2.try_into().unwrap();
                        let a = block_affine_uniform::<false>(g, m2, &p, Denom::ONE);
                        let b = block_affine::<false>(&[g; BLOCK], m2, &p, Denom::ONE);
                        assert_eq!(
                            a.map(f64::to_bits),
                            b.map(f64::to_bits),
                            "{g} {ddof} {m2:?}"
                        );
                        #[cfg(target_arch = "x86_64")]
                        if std::arch::is_x86_feature_detected!("avx2") {
                            // SAFETY: the CPU has AVX2 (checked just above).
                            let v = unsafe { vector_factors(g, m2, &p) };
                            assert_eq!(v.map(f64::to_bits), b.map(f64::to_bits), "{g} {m2:?}");
                        }
                    }
                }
            }
        }
    }
}
