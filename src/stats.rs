//! Per-group moments (count, mean, M2) accumulated in f64, mergeable (Chan et al.).
//!
//! The mean is computed relative to the group's first (valid) element, so that a group of
//! identical values has a mean *exactly* equal to that value and residuals that are exactly 0,
//! in every dtype. That is what keeps all-equal groups at advantage 0.0.

use crate::real::Real;

/// Count, mean and sum of squared deviations of a set of values.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Moments {
    pub count: u64,
    pub mean: f64,
    pub m2: f64,
}

impl Default for Moments {
    fn default() -> Self {
        Moments {
            count: 0,
            mean: 0.0,
            m2: 0.0,
        }
    }
}

impl Moments {
    /// Combine the moments of two disjoint sets (Chan, Golub & LeVeque).
    pub fn merge(self, other: Moments) -> Moments {
        if self.count == 0 {
            return other;
        }
        if other.count == 0 {
            return self;
        }
        let n = self.count + other.count;
        let (na, nb, nn) = (self.count as f64, other.count as f64, n as f64);
        let delta = other.mean - self.mean;
        // Weighted mean is exact for equal means (delta == 0), keeping constant data constant.
        let mean = if delta == 0.0 {
            self.mean
        } else {
            self.mean + delta * (nb / nn)
        };
        let m2 = self.m2 + other.m2 + delta * delta * (na * nb / nn);
        Moments { count: n, mean, m2 }
    }

    /// Standard deviation with `ddof` delta degrees of freedom; NaN when count <= ddof.
    pub fn std(&self, ddof: u32) -> f64 {
        if self.count <= ddof as u64 {
            return f64::NAN;
        }
        (self.m2 / (self.count - ddof as u64) as f64).sqrt()
    }
}

/// Moments of all values of `x` (which must be non-empty). Non-finite values propagate.
#[inline]
pub fn moments<T: Real>(x: &[T]) -> Moments {
    debug_assert!(!x.is_empty());
    let x0 = x[0].to_f64();
    let n = x.len();
    let s = sum_shifted(x, x0);
    let mean = x0 + s / n as f64;
    let m2 = sum_sq_dev(x, mean);
    Moments {
        count: n as u64,
        mean,
        m2,
    }
}

/// Moments of the finite values of `x` only (NaN and +-inf are skipped).
pub fn moments_finite<T: Real>(x: &[T]) -> Moments {
    let mut it = x.iter().map(|v| v.to_f64()).filter(|v| v.is_finite());
    let Some(x0) = it.next() else {
        return Moments::default();
    };
    let (mut n, mut s) = (1u64, 0.0f64);
    for v in it {
        n += 1;
        s += v - x0;
    }
    let mean = x0 + s / n as f64;
    let m2 = x
        .iter()
        .map(|v| v.to_f64())
        .filter(|v| v.is_finite())
        .map(|v| (v - mean) * (v - mean))
        .sum();
    Moments { count: n, mean, m2 }
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

/// Standard deviation of the group `x` whose moments are `m`, robust to f64 overflow and
/// underflow of the squared deviations (only possible for f64 data beyond ~1e154 or with
/// spreads below ~1e-146). `finite_only` must match how `m` was computed.
pub fn group_std<T: Real>(x: &[T], m: &Moments, ddof: u32, finite_only: bool) -> f64 {
    let std = m.std(ddof);
    if T::SQUARES_FIT_F64 || !m.mean.is_finite() || m.count <= ddof as u64 {
        return std;
    }
    // Squares of deviations below this may have lost precision to underflow.
    const SMALL: f64 = 1e-280;
    if m.m2.is_finite() && m.m2 >= SMALL {
        return std;
    }
    // Rare path: rescale by the largest absolute deviation.
    let devs = x
        .iter()
        .map(|v| v.to_f64())
        .filter(|v| !finite_only || v.is_finite())
        .map(|v| (v - m.mean).abs());
    let amax = devs.clone().fold(0.0f64, f64::max);
    if amax == 0.0 || !amax.is_finite() {
        return if amax == 0.0 { 0.0 } else { std };
    }
    let q: f64 = devs.map(|d| (d / amax) * (d / amax)).sum();
    amax * (q / (m.count - ddof as u64) as f64).sqrt()
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
        assert_eq!(m.count, 2);
        assert_eq!(m.mean, 2.0);
        assert_eq!(m.m2, 2.0);
        assert_eq!(moments_finite(&[f32::NAN]).count, 0);
        assert!(moments(&x).mean.is_nan());
    }

    #[test]
    fn std_survives_huge_and_tiny_f64() {
        for scale in [1e200f64, 1e-200] {
            let x = [-scale, scale];
            let m = moments(&x);
            let s = group_std(&x, &m, 0, false);
            assert!((s / scale - 1.0).abs() < 1e-12, "scale {scale}: std {s}");
        }
        let x = [5e300f64; 4];
        assert_eq!(group_std(&x, &moments(&x), 0, false), 0.0);
    }
}
