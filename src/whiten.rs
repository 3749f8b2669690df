//! Masked whitening over tokens (verl `masked_whiten`, OpenRLHF's global advantage
//! normalisation): one mean and variance over the masked tokens of the whole batch, then
//! `out = (x - mean) * rstd` over every token.
//!
//! Statistics are float64. Each chunk's mean is taken relative to its first masked value and
//! chunks merge with Chan's formula (`stats::Moments::merge`), so a batch whose masked values
//! are all equal has a mean exactly equal to that value and a variance of exactly 0: its
//! masked outputs are exactly 0 (verl turns float32 rounding into outputs near +-1e-4).

use crate::parallel::{map_on, map_pieces, resolve_threads, SERIAL_BELOW};
use crate::policy::AdvError;
use crate::real::Real;
use crate::stats::Moments;
use crate::token::{Mask, Span, Weights, Wide};
use std::ops::Range;

/// Elements per statistics chunk: small enough that the second (squared deviations) pass over
/// a chunk reads from cache.
const CHUNK: usize = 1 << 14;

/// The rules of one whitening.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WhitenParams {
    /// false: the mean is added back after scaling (verl `shift_mean=False`).
    pub shift_mean: bool,
    /// false: only centre (OpenRLHF `no_std_norm`).
    pub scale: bool,
    /// Bessel's correction n/(n-1) (verl: true; OpenRLHF: false).
    pub unbiased: bool,
    pub eps: f64,
    /// `rsqrt(max(var, eps))` (OpenRLHF `clamp`) instead of `rsqrt(var + eps)` (verl).
    pub clamp: bool,
    /// Multiply the output by the mask (0 outside a flags mask).
    pub apply_mask: bool,
    /// Non-finite masked values give NaN everywhere (the peers' behaviour) instead of an error.
    pub propagate: bool,
    pub threads: usize,
}

impl Default for WhitenParams {
    fn default() -> Self {
        WhitenParams {
            shift_mean: true,
            scale: true,
            unbiased: true,
            eps: 1e-8,
            clamp: false,
            apply_mask: false,
            propagate: false,
            threads: 0,
        }
    }
}

/// Moments of the masked values of `x[r]` (weights: the mask), or the first non-finite one.
fn chunk_moments<T: Real>(
    x: &[T],
    mask: &Mask<'_, T>,
    r: Range<usize>,
) -> Result<Moments, (usize, f64)> {
    slice_moments(&x[r.clone()], mask, r.start)
}

/// Moments of the masked values of `xs`, whose first value is token `start` of the mask
/// (a response a scan has just written, still in cache), or the first non-finite one `(flat
/// index, value)`.
pub fn slice_moments<T: Real>(
    xs: &[T],
    mask: &Mask<'_, T>,
    start: usize,
) -> Result<Moments, (usize, f64)> {
    crate::with_weights!(mask, w => slice_moments_w(xs, &w, start))
}

/// [`slice_moments`] compiled for one mask kind.
#[inline]
pub fn slice_moments_w<T: Real, W: Weights>(
    xs: &[T],
    mask: &W,
    start: usize,
) -> Result<Moments, (usize, f64)> {
    if W::BINARY {
        if let Some(m) = flag_moments(xs, mask, start) {
            return Ok(m);
        }
    }
    let (mut count, mut sum, mut x0) = (0.0f64, 0.0f64, None);
    for (k, x) in xs.iter().enumerate() {
        let w = mask.at(start + k);
        if w == 0.0 {
            continue;
        }
        let v = x.to_f64();
        if !v.is_finite() {
            return Err((start + k, v));
        }
        let s = *x0.get_or_insert(v);
        count += w;
        sum += w * (v - s);
    }
    let Some(x0) = x0 else {
        return Ok(Moments::EMPTY);
    };
    // Relative to the first value: all-equal values give exactly that mean and M2 = 0.
    let mean = if sum == 0.0 { x0 } else { x0 + sum / count };
    let mut m2 = 0.0f64;
    for (k, x) in xs.iter().enumerate() {
        let w = mask.at(start + k);
        if w != 0.0 {
            let d = x.to_f64() - mean;
            m2 += w * d * d;
        }
    }
    Ok(Moments {
        count,
        mean,
        m2,
        scale: 1.0,
    })
}

/// Independent partial sums of [`flag_moments`]: no chain of dependent additions through
/// every token (a scan's statistics would otherwise cost more than its memory traffic).
const LANES: usize = 4;

/// [`slice_moments_w`] for a 0/1 mask, each sum taken in [`LANES`] partial sums: the same
/// shifted moments (an all-equal slice: mean == its first masked value, m2 == 0 exactly),
/// rounded in another order. None where a sum is not finite (a non-finite masked value, or an
/// overflow): the caller's sequential loop then names the value or gives the same overflow.
#[inline]
fn flag_moments<T: Real, W: Weights>(xs: &[T], mask: &W, start: usize) -> Option<Moments> {
    let n = xs.len();
    let set = |k: usize| mask.at(start + k) != 0.0;
    let Some(first) = (0..n).find(|&k| set(k)) else {
        return Some(Moments::EMPTY);
    };
    let x0 = xs[first].to_f64();
    let count = lane_sum(xs, mask, start, first, |_| 1.0);
    let sum = lane_sum(xs, mask, start, first, |v| v - x0);
    if !sum.is_finite() {
        return None;
    }
    let mean = if sum == 0.0 { x0 } else { x0 + sum / count };
    let m2 = lane_sum(xs, mask, start, first, |v| (v - mean) * (v - mean));
    m2.is_finite().then_some(Moments {
        count,
        mean,
        m2,
        scale: 1.0,
    })
}

/// The sum of `f(x_k)` over the masked tokens `k >= first` of `xs`, in [`LANES`] partial sums.
#[inline(always)]
fn lane_sum<T: Real, W: Weights>(
    xs: &[T],
    mask: &W,
    start: usize,
    first: usize,
    f: impl Fn(f64) -> f64,
) -> f64 {
    let set = |k: usize| mask.at(start + k) != 0.0;
    let mut acc = [0.0f64; LANES];
    let (chunks, tail) = xs[first..].as_chunks::<LANES>();
    for (c, chunk) in chunks.iter().enumerate() {
        let at = first + c * LANES;
        for j in 0..LANES {
            let v = f(chunk[j].to_f64());
            acc[j] += if set(at + j) { v } else { 0.0 };
        }
    }
    let at = first + chunks.len() * LANES;
    for (j, x) in tail.iter().enumerate() {
        if set(at + j) {
            acc[j] += f(x.to_f64());
        }
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3])
}

/// The (mean, multiplier) of a whitening from moments a pass gathered (`Err`: its first
/// non-finite masked value, NaN everywhere under `propagate`).
pub fn affine_from(
    stats: Result<Moments, (usize, f64)>,
    p: &WhitenParams,
) -> Result<(f64, f64), AdvError> {
    match stats {
        Err(_) if p.propagate => Ok((f64::NAN, f64::NAN)),
        Err((index, value)) => Err(AdvError::MaskedNonFinite { index, value }),
        Ok(m) => whiten_affine(&m, p),
    }
}

/// `x[i] = (x[i] - mean) * k + back` in place, in parallel over element ranges (a whitening
/// without the mask, over values a scan has just written).
pub fn affine_in_place<T: Real>(x: &mut [T], mean: f64, k: f64, back: f64, threads: usize) {
    let n = x.len();
    map_pieces(
        threads,
        element_ranges(n, threads),
        x,
        |i| i,
        |_, o| {
            for d in o.iter_mut() {
                *d = T::from_f64((d.to_f64() - mean) * k + back);
            }
        },
    );
}

fn element_ranges(n: usize, threads: usize) -> Vec<Range<usize>> {
    if threads <= 1 || n < SERIAL_BELOW {
        std::iter::once(0..n).collect()
    } else {
        (0..threads)
            .map(|t| n * t / threads..n * (t + 1) / threads)
            .collect()
    }
}

/// Chunk indices `0..n_chunks` cut into about equal ranges, one per thread (one in all for
/// small inputs of `n` elements).
fn chunk_ranges(n_chunks: usize, n: usize, threads: usize) -> Vec<Range<usize>> {
    if threads <= 1 || n < SERIAL_BELOW {
        return std::iter::once(0..n_chunks).collect();
    }
    (0..threads)
        .map(|t| n_chunks * t / threads..n_chunks * (t + 1) / threads)
        .collect()
}

/// Count (sum of mask weights), mean and sum of squared deviations of the masked values.
/// `Err(NonFinite)` names the first non-finite masked value (under `propagate` the caller
/// turns it into NaN output).
pub fn masked_moments<T: Real>(
    x: &[T],
    mask: &Mask<'_, T>,
    threads: usize,
) -> Result<Moments, AdvError> {
    let threads = resolve_threads(threads);
    // Serial runs also go chunk by chunk, so that the result does not depend on `threads`.
    let all: Vec<Range<usize>> = (0..x.len().div_ceil(CHUNK))
        .map(|c| c * CHUNK..((c + 1) * CHUNK).min(x.len()))
        .collect();
    // Chunk moments merged in chunk order, whatever thread computed them.
    let per = map_on(threads, chunk_ranges(all.len(), x.len(), threads), |cr| {
        cr.map(|c| chunk_moments(x, mask, all[c].clone()))
            .collect::<Vec<_>>()
    });
    let mut acc = Moments::EMPTY;
    let mut bad: Option<(usize, f64)> = None;
    for p in per.into_iter().flatten() {
        match p {
            Ok(m) => acc = acc.merge(m),
            Err(e) => {
                if bad.is_none() {
                    bad = Some(e)
                }
            }
        }
    }
    match bad {
        Some((index, value)) => Err(AdvError::MaskedNonFinite { index, value }),
        None => Ok(acc),
    }
}

/// The (mean, multiplier) of a whitening: `out = (x - mean) * k`, from the masked moments.
pub fn whiten_affine(m: &Moments, p: &WhitenParams) -> Result<(f64, f64), AdvError> {
    let needed = if p.unbiased {
        m.count > 1.0
    } else {
        m.count > 0.0
    };
    if !needed {
        return Err(AdvError::TooFewTokens {
            count: m.count,
            unbiased: p.unbiased,
        });
    }
    if !p.scale {
        return Ok((m.mean, 1.0));
    }
    let m2 = m.m2_unscaled();
    let var = m2 / if p.unbiased { m.count - 1.0 } else { m.count };
    if !var.is_finite() || !m.mean.is_finite() {
        return Err(AdvError::MaskedOverflow);
    }
    let v = if p.clamp { var.max(p.eps) } else { var + p.eps };
    let k = if v > 0.0 { 1.0 / v.sqrt() } else { 1.0 };
    Ok((m.mean, k))
}

/// Whiten `x` over its masked tokens into `out` (same length): `(x - mean) * k`, plus the
/// mean when `!shift_mean`, times the mask when `apply_mask`. Returns (mean, k).
pub fn masked_whiten<T: Real>(
    x: &[T],
    mask: &Mask<'_, T>,
    p: &WhitenParams,
    out: &mut [T],
) -> Result<(f64, f64), AdvError> {
    assert_eq!(x.len(), out.len(), "out must have the length of the values");
    let threads = resolve_threads(p.threads);
    let (mean, k) = match masked_moments(x, mask, threads) {
        Err(AdvError::MaskedNonFinite { .. }) if p.propagate => (f64::NAN, f64::NAN),
        Err(e) => return Err(e),
        Ok(m) => whiten_affine(&m, p)?,
    };
    let back = if p.shift_mean { 0.0 } else { mean };
    write_affine(x, mask, mean, k, back, p.apply_mask, threads, out);
    Ok((mean, k))
}

/// `out[i] = ((x[i] - mean) * k + back) [* mask[i]]`, in parallel over element ranges.
#[allow(clippy::too_many_arguments)]
pub fn write_affine<T: Real>(
    x: &[T],
    mask: &Mask<'_, T>,
    mean: f64,
    k: f64,
    back: f64,
    apply_mask: bool,
    threads: usize,
    out: &mut [T],
) {
    map_pieces(
        threads,
        element_ranges(x.len(), threads),
        out,
        |i| i,
        |r, o| {
            let xs = &x[r.clone()];
            match (apply_mask, mask) {
                (true, Mask::Flags(m)) => affine_flags(o, xs, &m[r], mean, k, back),
                (true, Mask::Wide(Wide::B2(m))) => affine_flags(o, xs, &m[r], mean, k, back),
                (true, Mask::Wide(Wide::B4(m))) => affine_flags(o, xs, &m[r], mean, k, back),
                (true, Mask::Wide(Wide::B8(m))) => affine_flags(o, xs, &m[r], mean, k, back),
                (true, Mask::Values(m)) => {
                    for ((d, &v), &w) in o.iter_mut().zip(xs).zip(&m[r]) {
                        *d = T::from_f64(((v.to_f64() - mean) * k + back) * w.to_f64());
                    }
                }
                _ => {
                    for (d, &v) in o.iter_mut().zip(xs) {
                        *d = T::from_f64((v.to_f64() - mean) * k + back);
                    }
                }
            }
        },
    );
}

/// [`write_affine`] with the mask applied, over `rows x width` whose rows' flags are
/// described by `spans` ([`Span`]): a row whose flags are one run is written by position
/// (zeros, the affine map, zeros) without reading the mask; a scattered row reads it.
#[allow(clippy::too_many_arguments)]
pub fn write_affine_spans<T: Real>(
    x: &[T],
    spans: &[Span],
    width: usize,
    mask: &Mask<'_, T>,
    mean: f64,
    k: f64,
    back: f64,
    threads: usize,
    out: &mut [T],
) {
    let rows = spans.len();
    assert!(x.len() == rows * width && out.len() == x.len());
    crate::token::for_each_row(rows, width, threads, out, |row, o| {
        let at = row * width;
        let xs = &x[at..at + width];
        spans[row].fill(
            o,
            |d, start| {
                for (d, &v) in d.iter_mut().zip(&xs[start..]) {
                    *d = T::from_f64((v.to_f64() - mean) * k + back);
                }
            },
            |d| {
                let r = at..at + width;
                match mask {
                    Mask::Flags(m) => affine_flags(d, xs, &m[r], mean, k, back),
                    Mask::Wide(Wide::B2(m)) => affine_flags(d, xs, &m[r], mean, k, back),
                    Mask::Wide(Wide::B4(m)) => affine_flags(d, xs, &m[r], mean, k, back),
                    Mask::Wide(Wide::B8(m)) => affine_flags(d, xs, &m[r], mean, k, back),
                    _ => unreachable!("spans come from a 0/1 mask"),
                }
            },
        );
    });
}

/// `o = (xs - mean) * k + back` where the flag is set, else 0: one loop per flag width.
#[inline]
fn affine_flags<T: Real, F: Copy + Default + PartialEq>(
    o: &mut [T],
    xs: &[T],
    flags: &[F],
    mean: f64,
    k: f64,
    back: f64,
) {
    let zero = F::default();
    for ((d, &v), &f) in o.iter_mut().zip(xs).zip(flags) {
        *d = if f != zero {
            T::from_f64((v.to_f64() - mean) * k + back)
        } else {
            T::zero()
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(x: &[f64], m: &[u8], unbiased: bool) -> Vec<f64> {
        let sel: Vec<f64> = x
            .iter()
            .zip(m)
            .filter(|(_, &f)| f != 0)
            .map(|(&v, _)| v)
            .collect();
        let n = sel.len() as f64;
        let mean = sel.iter().sum::<f64>() / n;
        let ss: f64 = sel.iter().map(|v| (v - mean) * (v - mean)).sum();
        let var = ss / if unbiased { n - 1.0 } else { n };
        x.iter().map(|v| (v - mean) / (var + 1e-8).sqrt()).collect()
    }

    #[test]
    fn matches_the_two_pass_formula_serial_and_parallel() {
        let n = 3 * SERIAL_BELOW + 17;
        let x: Vec<f64> = (0..n)
            .map(|i| ((i * 37) % 101) as f64 * 0.1 - 3.0)
            .collect();
        let m: Vec<u8> = (0..n).map(|i| (i % 7 != 0) as u8).collect();
        let want = reference(&x, &m, true);
        for threads in [1, 3] {
            let p = WhitenParams {
                threads,
                ..Default::default()
            };
            let mut out = vec![0.0; n];
            masked_whiten(&x, &Mask::Flags(&m), &p, &mut out).unwrap();
            for (a, b) in out.iter().zip(&want) {
                assert!((a - b).abs() < 1e-9, "{a} vs {b}");
            }
        }
        // the statistics do not depend on the thread count
        let a = masked_moments(&x, &Mask::Flags(&m), 1).unwrap();
        let b = masked_moments(&x, &Mask::Flags(&m), 3).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn flag_moments_equal_the_sequential_ones() {
        use crate::token::FlagsOf;
        let n = 1003;
        let x: Vec<f32> = (0..n)
            .map(|i| ((i * 29) % 97) as f32 * 0.37 - 9.0)
            .collect();
        let m: Vec<u64> = (0..n).map(|i| ((i * 7) % 5 != 0 && i > 3) as u64).collect();
        let seq = |xs: &[f32], fl: &[u64]| {
            let v: Vec<f64> = xs
                .iter()
                .zip(fl)
                .filter(|(_, &f)| f != 0)
                .map(|(&x, _)| x as f64)
                .collect();
            let c = v.len() as f64;
            let mean = v.iter().sum::<f64>() / c;
            (
                c,
                mean,
                v.iter().map(|a| (a - mean) * (a - mean)).sum::<f64>(),
            )
        };
        for (a, b) in [(0, n), (5, 9), (0, 4), (17, 17 + 64), (100, 103)] {
            let got = flag_moments(&x[a..b], &FlagsOf(&m[..]), a);
            let (c, mean, m2) = seq(&x[a..b], &m[a..b]);
            let Some(got) = got else {
                panic!("finite values")
            };
            assert_eq!(got.count, c);
            if c > 0.0 {
                assert!((got.mean - mean).abs() <= 1e-12 * mean.abs().max(1.0));
                assert!((got.m2 - m2).abs() <= 1e-12 * m2.max(1.0));
            }
        }
        // all-equal masked values: the mean is that value and m2 exactly 0
        let eq = vec![0.1f32; 77];
        let got = flag_moments(&eq, &FlagsOf(&m[..]), 0).unwrap();
        assert_eq!((got.mean, got.m2), (0.1f32 as f64, 0.0));
        // a non-finite masked value: None (the sequential loop names it); unmasked: ignored
        let mut bad = x.clone();
        bad[1] = f32::NAN; // unmasked (i <= 3)
        assert!(flag_moments(&bad, &FlagsOf(&m[..]), 0).is_some());
        bad[6] = f32::INFINITY;
        assert!(flag_moments(&bad, &FlagsOf(&m[..]), 0).is_none());
        assert_eq!(
            slice_moments_w(&bad, &FlagsOf(&m[..]), 0),
            Err((6, f64::INFINITY))
        );
    }

    #[test]
    fn all_equal_masked_values_give_exact_zero() {
        let x = [0.1f32, 0.1, 0.1, 5.0, 0.1];
        let m = [1u8, 1, 1, 0, 1];
        let mut out = [9.0f32; 5];
        let p = WhitenParams::default();
        masked_whiten(&x, &Mask::Flags(&m), &p, &mut out).unwrap();
        assert_eq!([out[0], out[1], out[2], out[4]], [0.0; 4]);
        assert!(out[3] > 1e4); // (5 - 0.1) * rsqrt(1e-8), as verl computes it
        let p = WhitenParams {
            apply_mask: true,
            ..Default::default()
        };
        masked_whiten(&x, &Mask::Flags(&m), &p, &mut out).unwrap();
        assert_eq!(out, [0.0; 5]);
    }

    #[test]
    fn rules_and_errors() {
        let x = [1.0f64, 2.0, 3.0, 4.0];
        let mut out = [0.0; 4];
        let biased = WhitenParams {
            unbiased: false,
            clamp: true,
            ..Default::default()
        };
        let (mean, k) = masked_whiten(&x, &Mask::None, &biased, &mut out).unwrap();
        assert_eq!(mean, 2.5);
        assert!((k - 1.0 / 1.25f64.sqrt()).abs() < 1e-15);
        let keep = WhitenParams {
            shift_mean: false,
            ..Default::default()
        };
        masked_whiten(&x, &Mask::None, &keep, &mut out).unwrap();
        assert!((out.iter().sum::<f64>() / 4.0 - 2.5).abs() < 1e-12);
        let one = [0u8, 1, 0, 0];
        assert!(matches!(
            masked_whiten(&x, &Mask::Flags(&one), &WhitenParams::default(), &mut out),
            Err(AdvError::TooFewTokens { .. })
        ));
        assert!(masked_whiten(&x, &Mask::Flags(&one), &biased, &mut out).is_ok());
        let y = [1.0, f64::NAN, 3.0, f64::NAN];
        let m = [1u8, 0, 1, 1];
        let got = masked_whiten(&y, &Mask::Flags(&m), &WhitenParams::default(), &mut out);
        assert!(matches!(
            got,
            Err(AdvError::MaskedNonFinite { index: 3, .. })
        ));
        let prop = WhitenParams {
            propagate: true,
            ..Default::default()
        };
        masked_whiten(&y, &Mask::Flags(&m), &prop, &mut out).unwrap();
        assert!(out.iter().all(|v| v.is_nan()));
        // weights: the mean and variance are weighted by the mask values
        let w = [1.0, 0.0, 3.0, 0.0];
        let (mean, _) =
            masked_whiten(&x, &Mask::Values(&w), &WhitenParams::default(), &mut out).unwrap();
        assert_eq!(mean, 2.5);
    }
}
