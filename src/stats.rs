//! The moments stage: per-group count, mean and sum of squared deviations in f64, optionally
//! weighted, mergeable (Chan et al.), with one guarded standard deviation for group, batch
//! and merged moments.
//!
//! The mean is computed relative to the group's first (valid) element, so that a group of
//! identical values has a mean *exactly* equal to that value and residuals that are exactly 0,
//! in every dtype. That is what keeps all-equal groups at advantage 0.0.
//!
//! The sum of squared deviations is stored scaled, M2 = m2 * scale^2, where `scale` is 1 unless
//! the squares would overflow or underflow f64 (deviations beyond ~1e150, spreads below
//! ~1e-140, subnormal spreads); then it is a power of two near the largest deviation, so that
//! the rescaling is exact. `Moments::std` is the one standard deviation formula of the crate.

use crate::real::Real;

/// An unscaled M2 below this may have lost precision to underflow in its squares.
pub const SMALL_M2: f64 = 1e-280;

/// Count (sum of weights), mean and scaled sum of squared deviations of a set of values.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Moments {
    /// Number of values (the sum of their weights when weighted).
    pub count: f64,
    pub mean: f64,
    /// The sum of squared deviations from the mean is `m2 * scale * scale`.
    pub m2: f64,
    /// A power of two (1 unless the squares of the deviations leave the f64 range).
    pub scale: f64,
}

impl Default for Moments {
    fn default() -> Self {
        Moments::EMPTY
    }
}

/// The largest power of two <= v (v finite and > 0), never below the smallest normal f64
/// (so that its reciprocal is finite). 0 for v = 0.
fn pow2_floor(v: f64) -> f64 {
    if v == 0.0 {
        return 0.0;
    }
    f64::from_bits(v.max(f64::MIN_POSITIVE).to_bits() & 0x7ff0_0000_0000_0000)
}

impl Moments {
    /// No values.
    pub const EMPTY: Moments = Moments {
        count: 0.0,
        mean: 0.0,
        m2: 0.0,
        scale: 1.0,
    };

    /// A record in canonical form: scale 1 whenever M2 itself is a normal f64 of full
    /// precision (or exactly 0), else the given power-of-two scale.
    fn canonical(count: f64, mean: f64, m2: f64, scale: f64) -> Moments {
        if scale != 1.0 {
            let unscaled = (m2 * scale) * scale;
            if unscaled.is_finite() && unscaled >= SMALL_M2 {
                return Moments {
                    count,
                    mean,
                    m2: unscaled,
                    scale: 1.0,
                };
            }
        }
        Moments {
            count,
            mean,
            m2,
            scale,
        }
    }

    /// The sum of squared deviations M2 (may overflow to inf or underflow, for display only).
    pub fn m2_unscaled(&self) -> f64 {
        (self.m2 * self.scale) * self.scale
    }

    /// Combine the moments of two disjoint sets (Chan, Golub & LeVeque), in the scaled form.
    /// Means whose difference overflows f64 give a non-finite mean (an overflow to report).
    pub fn merge(self, other: Moments) -> Moments {
        if self.count == 0.0 {
            return other;
        }
        if other.count == 0.0 {
            return self;
        }
        let (na, nb) = (self.count, other.count);
        let n = na + nb;
        let delta = other.mean - self.mean;
        // Weighted mean is exact for equal means (delta == 0), keeping constant data constant.
        let mean = if delta == 0.0 {
            self.mean
        } else {
            self.mean + delta * (nb / n)
        };
        let w = na * nb / n;
        if self.scale == 1.0 && other.scale == 1.0 {
            let m2 = self.m2 + other.m2 + delta * delta * w;
            let exact_zero = self.m2 == 0.0 && other.m2 == 0.0 && delta == 0.0;
            if exact_zero || (m2.is_finite() && m2 >= SMALL_M2) {
                return Moments {
                    count: n,
                    mean,
                    m2,
                    scale: 1.0,
                };
            }
        }
        if !delta.is_finite() || !self.m2.is_finite() || !other.m2.is_finite() {
            // Non-finite inputs (NaN under "propagate") or means too far apart for f64.
            let m2 = if delta.is_nan() || self.m2.is_nan() || other.m2.is_nan() {
                f64::NAN
            } else {
                f64::INFINITY
            };
            let mean = if mean.is_finite() { f64::NAN } else { mean };
            return Moments {
                count: n,
                mean,
                m2,
                scale: 1.0,
            };
        }
        // A common power-of-two scale: that of the largest part (deviations of either set,
        // or the difference of the means).
        // (A scaled record's m2 is of order its count: its scale is its size.)
        let size = |m: &Moments| match m.m2 {
            0.0 => 0.0,
            _ if m.scale == 1.0 => pow2_floor(m.m2.sqrt()),
            _ => m.scale,
        };
        let s = size(&self).max(size(&other)).max(pow2_floor(delta.abs()));
        if s == 0.0 {
            return Moments {
                count: n,
                mean,
                m2: 0.0,
                scale: 1.0,
            };
        }
        let (ra, rb, d) = (self.scale / s, other.scale / s, delta / s);
        let m2 = (self.m2 * ra) * ra + (other.m2 * rb) * rb + d * d * w;
        Moments::canonical(n, mean, m2, s)
    }

    /// Counts and M2s added, means ignored (0): the moments of the group-centred residuals of
    /// two disjoint sets of groups (the `batch_residual` statistic).
    pub fn merge_residuals(self, other: Moments) -> Moments {
        if self.scale == 1.0 && other.scale == 1.0 {
            // The common case, without the general merge's divisions: the sums themselves.
            let m2 = self.m2 + other.m2;
            if m2 >= SMALL_M2 && m2.is_finite() || self.m2 == 0.0 && other.m2 == 0.0 {
                return Moments {
                    count: self.count + other.count,
                    mean: 0.0,
                    m2,
                    scale: 1.0,
                };
            }
        }
        let centred = |m: Moments| Moments { mean: 0.0, ..m };
        centred(self).merge(centred(other))
    }

    /// Standard deviation with `ddof` delta degrees of freedom; NaN when count <= ddof.
    /// The crate's one std formula: group, batch and merged moments all use it.
    pub fn std(&self, ddof: u32) -> f64 {
        self.scale * self.std_scaled(ddof)
    }

    /// The standard deviation in units of `scale`.
    pub fn std_scaled(&self, ddof: u32) -> f64 {
        let ddof = ddof as f64;
        if self.count.is_nan() || self.count <= ddof {
            return f64::NAN;
        }
        std_of(self.m2, self.count, ddof)
    }
}

/// The standard deviation of `count` values (count > ddof) whose squared deviations sum to
/// `m2`: the one formula, also used by the vector loops of the write pass.
#[inline(always)]
pub fn std_of(m2: f64, count: f64, ddof: f64) -> f64 {
    (m2 / (count - ddof)).sqrt()
}

/// Is an unscaled `m2` (of values of type `T`, around a finite or non-finite `mean`) safe
/// from under- and overflow of its squares? Where not, the moments are rescaled.
#[inline(always)]
pub fn squares_safe<T: Real>(mean: f64, m2: f64) -> bool {
    T::SQUARES_FIT_F64 || !mean.is_finite() || (m2.is_finite() && m2 >= SMALL_M2)
}

/// The record of values whose unscaled `m2` (around `mean`, shifted by their first value
/// `x0`) was just summed: kept when its squares are safe, else recomputed from deviations
/// rescaled by a power of two near the largest (the rare path: f64 data only).
/// `vals` yields each valid value with its weight.
#[inline]
fn guarded<T: Real, I: Iterator<Item = (f64, f64)>>(
    count: f64,
    x0: f64,
    mean: f64,
    m2: f64,
    vals: impl Fn() -> I,
) -> Moments {
    if squares_safe::<T>(mean, m2) {
        return Moments {
            count,
            mean,
            m2,
            scale: 1.0,
        };
    }
    rescaled(count, x0, mean, vals)
}

#[cold]
fn rescaled<I: Iterator<Item = (f64, f64)>>(
    count: f64,
    x0: f64,
    mean: f64,
    vals: impl Fn() -> I,
) -> Moments {
    let amax = vals().map(|(v, _)| (v - x0).abs()).fold(0.0f64, f64::max);
    if amax == 0.0 {
        return Moments {
            count,
            mean: x0,
            m2: 0.0,
            scale: 1.0,
        };
    }
    // A deviation from the mean beyond the f64 range is an overflow (the documented limit),
    // even where the std itself would be finite.
    let spread = vals().map(|(v, _)| (v - mean).abs()).fold(amax, f64::max);
    if !spread.is_finite() {
        return Moments {
            count,
            mean,
            m2: f64::INFINITY,
            scale: 1.0,
        };
    }
    let s = pow2_floor(amax);
    let pre = 1.0 / s;
    let (sw, su) = vals().fold((0.0, 0.0), |(sw, su), (v, w)| {
        (sw + w, su + w * ((v - x0) * pre))
    });
    let off = su / sw;
    let m2 = vals()
        .map(|(v, w)| {
            let d = (v - x0) * pre - off;
            w * (d * d)
        })
        .sum();
    Moments::canonical(count, x0 + off * s, m2, s)
}

/// Moments of all values of `x` (which must be non-empty). Non-finite values propagate.
#[inline]
pub fn moments<T: Real>(x: &[T]) -> Moments {
    debug_assert!(!x.is_empty());
    let x0 = x[0].to_f64();
    let n = x.len() as f64;
    let s = sum_shifted(x, x0);
    let mean = x0 + s / n;
    let m2 = sum_sq_dev(x, mean);
    guarded::<T, _>(n, x0, mean, m2, || x.iter().map(|v| (v.to_f64(), 1.0)))
}

/// Moments of the finite values of `x` only (NaN and +-inf are skipped).
pub fn moments_finite<T: Real>(x: &[T]) -> Moments {
    let finite = || x.iter().map(|v| v.to_f64()).filter(|v| v.is_finite());
    let Some(x0) = finite().next() else {
        return Moments::EMPTY;
    };
    let (mut n, mut s) = (0u64, 0.0f64);
    for v in finite() {
        n += 1;
        s += v - x0;
    }
    let mean = x0 + s / n as f64;
    let m2 = finite().map(|v| (v - mean) * (v - mean)).sum();
    guarded::<T, _>(n as f64, x0, mean, m2, || finite().map(|v| (v, 1.0)))
}

/// Moments of `x` with frequency weights `w` (finite, >= 0, same length): count = sum w,
/// mean = sum w r / sum w, M2 = sum w (r - mean)^2. With `omit`, non-finite rewards are
/// left out; else they propagate (NaN mean and M2).
pub fn moments_weighted<T: Real>(x: &[T], w: &[f64], omit: bool) -> Moments {
    debug_assert_eq!(x.len(), w.len());
    let valid = || {
        x.iter()
            .zip(w)
            .map(|(v, &w)| (v.to_f64(), w))
            .filter(move |(v, _)| !omit || v.is_finite())
    };
    // The shift: the first valid reward that carries weight (exact mean for equal rewards).
    let Some((x0, _)) = valid().find(|&(_, w)| w > 0.0) else {
        return Moments::EMPTY;
    };
    let (mut sw, mut s) = (0.0f64, 0.0f64);
    for (v, w) in valid() {
        sw += w;
        s += w * (v - x0);
    }
    let mean = x0 + s / sw;
    let m2 = valid()
        .map(|(v, w)| {
            let d = v - mean;
            w * (d * d)
        })
        .sum();
    guarded::<T, _>(sw, x0, mean, m2, valid)
}

/// Sum of eight accumulator lanes: lanes k and k + 4 first (the two halves of a vector
/// unit's accumulators), then adjacent pairs, the order of a horizontal add, so that the
/// vector code (`simd`) reduces four groups' lanes at once with the same result.
#[inline(always)]
pub fn lanes_sum(acc: &[f64; 8]) -> f64 {
    let h = [
        acc[0] + acc[4],
        acc[1] + acc[5],
        acc[2] + acc[6],
        acc[3] + acc[7],
    ];
    (h[0] + h[1]) + (h[2] + h[3])
}

/// Sum of (x_i - shift), with independent accumulators so that the loop vectorizes.
#[inline(always)]
pub fn sum_shifted<T: Real>(x: &[T], shift: f64) -> f64 {
    let mut acc = [0.0f64; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for k in 0..8 {
            acc[k] += c[k].to_f64() - shift;
        }
    }
    let mut s = 0.0;
    for v in chunks.remainder() {
        s += v.to_f64() - shift;
    }
    s + lanes_sum(&acc)
}

/// Sum of (x_i - mean)^2 with independent accumulators.
#[inline(always)]
pub fn sum_sq_dev<T: Real>(x: &[T], mean: f64) -> f64 {
    let mut acc = [0.0f64; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for k in 0..8 {
            let d = c[k].to_f64() - mean;
            acc[k] += d * d;
        }
    }
    let mut s = 0.0;
    for v in chunks.remainder() {
        let d = v.to_f64() - mean;
        s += d * d;
    }
    s + lanes_sum(&acc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_group_is_exact_in_f32_and_f64() {
        let x32 = [0.1f32; 8];
        let m = moments(&x32);
        assert_eq!(m.mean, 0.1f32 as f64);
        assert_eq!(m.m2, 0.0);
        let x64 = [0.1f64; 7];
        let m = moments(&x64);
        assert_eq!(m.mean, 0.1);
        assert_eq!(m.m2, 0.0);
    }

    #[test]
    fn moments_match_two_pass_reference() {
        let x = [0.2f64, 0.5, 0.8, 0.3, 0.7, 1.5, -2.0, 3.25, 4.0, 0.0];
        let m = moments(&x);
        let mean = x.iter().sum::<f64>() / x.len() as f64;
        let m2: f64 = x.iter().map(|v| (v - mean) * (v - mean)).sum();
        assert!((m.mean - mean).abs() < 1e-15);
        assert!((m.m2 - m2).abs() < 1e-13);
        assert!((m.std(1) - (m2 / 9.0).sqrt()).abs() < 1e-15);
        assert!(m.std(10).is_nan());
    }

    #[test]
    fn merge_equals_whole() {
        let x: Vec<f64> = (0..101)
            .map(|i| ((i * 37) % 17) as f64 * 0.31 - 2.0)
            .collect();
        let whole = moments(&x);
        for cut in [1, 13, 50, 100] {
            let merged = moments(&x[..cut]).merge(moments(&x[cut..]));
            assert_eq!(merged.count, whole.count);
            assert!((merged.mean - whole.mean).abs() < 1e-12);
            assert!((merged.m2 - whole.m2).abs() < 1e-10);
        }
        assert_eq!(Moments::default().merge(whole), whole);
        assert_eq!(whole.merge(Moments::default()), whole);
    }

    #[test]
    fn finite_only_skips_nan_and_inf() {
        let x = [f64::NAN, 1.0, f64::INFINITY, 3.0];
        let m = moments_finite(&x);
        assert_eq!(m.count, 2.0);
        assert_eq!(m.mean, 2.0);
        assert_eq!(m.m2, 2.0);
        assert_eq!(moments_finite(&[f32::NAN]).count, 0.0);
        assert!(moments(&x).mean.is_nan());
    }

    #[test]
    fn std_survives_huge_and_tiny_f64() {
        for scale in [1e200f64, 1e-200] {
            let x = [-scale, scale];
            let s = moments(&x).std(0);
            assert!((s / scale - 1.0).abs() < 1e-12, "scale {scale}: std {s}");
        }
        let x = [5e300f64; 4];
        assert_eq!(moments(&x).std(0), 0.0);
        assert_eq!(moments(&x).scale, 1.0);
        // Subnormal spread: the exact mean (7.5e-324) is not an f64, the scaled record is.
        let m = moments(&[5e-324f64, 1e-323]);
        assert_eq!((m.scale, m.m2), (2f64.powi(-1022), 2f64.powi(-105)));
    }

    /// The scaled merge equals the whole, also where the unscaled M2 would under/overflow.
    #[test]
    fn scaled_merge_equals_whole() {
        for unit in [1.0, 1e200, 1e-200, 1e-310] {
            let x: Vec<f64> = (0..40).map(|i| ((i * 7) % 11) as f64 * unit).collect();
            let whole = moments(&x);
            for cut in [1, 17, 39] {
                let m = moments(&x[..cut]).merge(moments(&x[cut..]));
                assert_eq!(m.count, whole.count);
                assert!(
                    (m.std(0) / whole.std(0) - 1.0).abs() < 1e-12,
                    "{unit} {cut}"
                );
                assert!((m.mean / whole.mean - 1.0).abs() < 1e-12, "{unit} {cut}");
            }
        }
        // Means whose difference overflows f64: a non-finite (overflow) record.
        let m = moments(&[1.7e308f64]).merge(moments(&[-1.7e308f64]));
        assert!(!m.mean.is_finite() && !m.std(0).is_finite());
        // Residual moments: counts and M2s add.
        let (a, b) = (moments(&[0.0f64, 2.0]), moments(&[10.0f64, 14.0]));
        let r = a.merge_residuals(b);
        assert_eq!((r.count, r.m2), (4.0, 10.0));
    }

    #[test]
    fn weighted_moments_are_frequency_weights() {
        let x = [1.0f64, 2.0, 4.0, f64::NAN];
        let m = moments_weighted(&x, &[2.0, 0.0, 1.0, 1.0], true);
        let r = moments(&[1.0f64, 1.0, 4.0]);
        assert_eq!((m.count, m.mean, m.m2), (r.count, r.mean, r.m2));
        assert!(moments_weighted(&x, &[1.0; 4], false).mean.is_nan());
        assert_eq!(moments_weighted(&x, &[0.0; 4], true), Moments::EMPTY);
        let c = moments_weighted(&[0.1f32; 3], &[0.5, 2.0, 1.0], false);
        assert_eq!((c.mean, c.m2), (0.1f32 as f64, 0.0));
    }
}
