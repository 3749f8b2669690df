//! The write pass of `advantage::advantages`, tuned for speed.
//!
//! * Groups are handled in blocks of `BLOCK`: their means and stds are computed side by side,
//!   so the divisions and square roots of different groups overlap instead of queueing.
//! * Uniform layouts with a small power-of-two group size use a copy of the kernel where the
//!   size is a constant, so the per-group loops are fully unrolled.
//! * The whole batch loop is compiled for baseline x86-64 and again with AVX2 (and with
//!   AVX-512F enabled, for the compiler's own code), and picked at run time. The AVX copies
//!   run the explicit vector loops of `simd` (uniform groups of 4 or a multiple of 8, ragged
//!   groups with masked tails, ragged blocks of varying sizes up to 32 with a fixed chunk
//!   count); no fused multiply-add is introduced, so every copy gives the same bits.
//! * Writes skip the overflow probe where `cannot_overflow` proves it unneeded.
//!
//! Policies (singletons, non-finite means) are applied by `policy::group_affine`, shared
//! with the general path; a guarded f64 std, scaled maps and the `Omit` policy take the
//! general per-group path (`group_advantages`).

use crate::groups::Grouping;
use crate::policy::{group_affine, Center, Denom, Fault, NonFinite, Params, Scale};
use crate::real::Real;
#[cfg(target_arch = "x86_64")]
use crate::simd;
use crate::stats::{lanes_sum, moments, moments_finite, sum_shifted, sum_sq_dev, SMALL_M2};
use std::ops::Range;

const BLOCK: usize = 8;

/// Write the advantages of groups `range` to `out`, which holds exactly the outputs of
/// these groups (`out[0]` is the first reward of group `range.start`).
pub(crate) fn write_batch<T: Real>(
    x: &[T],
    out: &mut [T],
    grouping: &Grouping,
    range: Range<usize>,
    p: &Params,
    batch: Denom,
) -> Result<(), (usize, Fault)> {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked just above).
            return unsafe { write_batch_avx512(x, out, grouping, range, p, batch) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked just above).
            return unsafe { write_batch_avx2(x, out, grouping, range, p, batch) };
        }
    }
    write_batch_impl::<T, false>(x, out, grouping, range, p, batch)
}

/// The batch loop compiled with more vector instructions enabled (same code, same results).
macro_rules! write_batch_with {
    ($name:ident, $features:literal) => {
        /// # Safety
        /// The CPU must have the target features of this copy.
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)]
        unsafe fn $name<T: Real>(
            x: &[T],
            out: &mut [T],
            grouping: &Grouping,
            range: Range<usize>,
            p: &Params,
            batch: Denom,
        ) -> Result<(), (usize, Fault)> {
            write_batch_impl::<T, true>(x, out, grouping, range, p, batch)
        }
    };
}

write_batch_with!(write_batch_avx2, "avx2");
write_batch_with!(write_batch_avx512, "avx512f");

/// The batch loop. `AVX` only in the copies compiled with AVX2 (or more) enabled: it selects
/// the explicit vector loops of `simd`, whose instructions the CPU must then have.
#[inline(always)]
fn write_batch_impl<T: Real, const AVX: bool>(
    x: &[T],
    out: &mut [T],
    grouping: &Grouping,
    range: Range<usize>,
    p: &Params,
    batch: Denom,
) -> Result<(), (usize, Fault)> {
    if range.is_empty() {
        return Ok(());
    }
    let mut spans = [(0usize, 0usize); BLOCK];
    match grouping {
        Grouping::Labelled(_) => unreachable!("labelled groups are written by `labelled`"),
        Grouping::Uniform { size, .. } => {
            let (a, b) = (range.start * size, range.end * size);
            let os = out;
            let xs = &x[a..b];
            match *size {
                2 => uniform::<T, 2, AVX>(xs, os, range.start, p, batch)?,
                4 => uniform::<T, 4, AVX>(xs, os, range.start, p, batch)?,
                8 => uniform::<T, 8, AVX>(xs, os, range.start, p, batch)?,
                16 => uniform::<T, 16, AVX>(xs, os, range.start, p, batch)?,
                32 => uniform::<T, 32, AVX>(xs, os, range.start, p, batch)?,
                64 => uniform::<T, 64, AVX>(xs, os, range.start, p, batch)?,
                g => {
                    for g0 in range.clone().step_by(BLOCK) {
                        let g1 = (g0 + BLOCK).min(range.end);
                        for (j, grp) in (g0..g1).enumerate() {
                            spans[j] = ((grp - range.start) * g, (grp - range.start + 1) * g);
                        }
                        block::<T, AVX>(xs, os, &spans[..g1 - g0], g0, p, batch)?;
                    }
                }
            }
        }
        Grouping::Ragged { offsets } => {
            let (a, b) = (offsets[range.start], offsets[range.end]);
            let os = out;
            let xs = &x[a..b];
            for g0 in range.clone().step_by(BLOCK) {
                let g1 = (g0 + BLOCK).min(range.end);
                for (j, g) in (g0..g1).enumerate() {
                    spans[j] = (offsets[g] - a, offsets[g + 1] - a);
                }
                block::<T, AVX>(xs, os, &spans[..g1 - g0], g0, p, batch)?;
            }
        }
    }
    Ok(())
}

/// Does a group need the general path? Only for a guarded f64 std (the policies for
/// singletons and non-finite means are applied by `group_affine`).
#[inline(always)]
fn guarded<T: Real>(n: usize, mean: f64, m2: f64, p: &Params) -> bool {
    !T::SQUARES_FIT_F64
        && p.scale == Scale::Group
        && n > p.ddof as usize
        && mean.is_finite()
        && !(m2.is_finite() && m2 >= SMALL_M2)
}

/// Advantages of one group (n >= 1 rewards in x) from its mean and M2.
#[inline(always)]
fn finish_group<T: Real>(
    x: &[T],
    out: &mut [T],
    mean: f64,
    m2: f64,
    p: &Params,
    batch: Denom,
) -> Result<(), Fault> {
    let n = x.len();
    if guarded::<T>(n, mean, m2, p) {
        return group_advantages(x, out, p, batch);
    }
    let has_nonfinite = || x.iter().any(|v| !v.to_f64().is_finite());
    let a = group_affine(n as f64, mean, || (m2, 1.0), has_nonfinite, p, batch)?;
    if !a.plain() {
        return group_advantages(x, out, p, batch);
    }
    // A NaN map (a poisoned group under "propagate") is NaN by request.
    if !write_affine(x, out, a.mu, a.k, true) && !a.k.is_nan() {
        return Err(Fault::Overflow);
    }
    Ok(())
}

/// One group's advantages (the general path: any policy, the guarded f64 moments, scaled
/// maps centred exactly on the group).
pub(crate) fn group_advantages<T: Real>(
    x: &[T],
    out: &mut [T],
    p: &Params,
    batch: Denom,
) -> Result<(), Fault> {
    if x.is_empty() {
        return Ok(());
    }
    let omit = p.nonfinite == NonFinite::Omit;
    let m = if omit { moments_finite(x) } else { moments(x) };
    let has_nonfinite = || x.iter().any(|v| !v.to_f64().is_finite());
    let valid = x.iter().map(|v| v.to_f64()).filter(|v| !omit || v.is_finite());
    let a = group_affine(m.count, m.mean, || (m.m2, m.scale), has_nonfinite, p, batch)?
        .recentred(p, valid);
    let mut overflow = false;
    for (o, &v) in out.iter_mut().zip(x) {
        let v = v.to_f64();
        // Omitted rewards get 0.
        *o = T::from_f64(if omit && !v.is_finite() {
            0.0
        } else {
            a.apply(v)
        });
        overflow |= !o.to_f64().is_finite();
    }
    // A NaN map (a poisoned group under "propagate") is NaN by request; otherwise a
    // non-finite advantage from finite rewards is an overflow of the output type.
    if overflow && !a.k.is_nan() {
        return Err(Fault::Overflow);
    }
    Ok(())
}

/// Can no advantage of a group of `n` rewards overflow T, when scaled by its own std?
/// Every |r - mean| is at most sqrt(M2), and k = factor / (sqrt(M2 / (n - ddof)) + eps) with
/// factor <= 2, so sqrt(M2) * |k| <= 2 sqrt(n) <= 2 n, and |mean - mu| * |k| + 2 n bounds
/// every |(r - mu) * k| (the factor 2 below covers rounding). When this holds, the write
/// needs no overflow probe; centred, it always holds for a finite k. Other scales
/// (`group_scale = false`) keep the probe.
#[inline(always)]
fn cannot_overflow<T: Real>(n: f64, mean: f64, mu: f64, k: f64, group_scale: bool) -> bool {
    group_scale && (mean - mu).abs() * k.abs() + 2.0 * n <= T::MAX_F64 * 0.5
}

/// Write (r - mu) * k for every reward; false if an advantage is not finite in T (the
/// result overflowed: finite rewards, finite mu and k, but a residual beyond T's range).
/// With `probe` false the check is skipped (the caller proved no overflow can happen).
#[inline(always)]
fn write_affine<T: Real>(x: &[T], out: &mut [T], mu: f64, k: f64, probe: bool) -> bool {
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
#[inline(always)]
fn block_affine(n: &[f64; BLOCK], m2: &[f64; BLOCK], p: &Params, batch: Denom) -> [f64; BLOCK] {
    // Branches on the parameters outside the loops, so that each loop is one vector pass.
    let denom = match p.scale {
        Scale::Group => {
            let (ddof, eps) = (p.ddof as f64, p.eps);
            let mut d = [0.0f64; BLOCK];
            for j in 0..BLOCK {
                d[j] = (m2[j] / (n[j] - ddof)).sqrt() + eps;
            }
            d
        }
        Scale::Batch | Scale::BatchResidual => [batch.d; BLOCK],
        Scale::None => [1.0; BLOCK],
    };
    let mut factor = [1.0f64; BLOCK];
    if p.center == Center::LeaveOneOut {
        for j in 0..BLOCK {
            factor[j] = n[j] / (n[j] - 1.0);
        }
    }
    let mut k = [0.0f64; BLOCK];
    for j in 0..BLOCK {
        k[j] = if denom[j] == 0.0 {
            0.0
        } else {
            factor[j] / denom[j]
        };
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

/// Up to BLOCK groups; group j is `x[spans[j].0..spans[j].1]`, written to the same positions
/// of `out` (`x` and `out` cover the whole batch, so chunks may read past a group's end).
/// `g0` is the index of the first group (for error reports).
#[inline(always)]
fn block<T: Real, const AVX: bool>(
    x: &[T],
    out: &mut [T],
    spans: &[(usize, usize)],
    g0: usize,
    p: &Params,
    batch: Denom,
) -> Result<(), (usize, Fault)> {
    if p.nonfinite == NonFinite::Omit || batch.pre != 1.0 {
        for (j, &(a, b)) in spans.iter().enumerate() {
            group_advantages(&x[a..b], &mut out[a..b], p, batch).map_err(|f| (g0 + j, f))?;
        }
        return Ok(());
    }
    let nb = spans.len();
    // Chunked reads of the last group stay inside the batch: the AVX loops may run.
    let simd = cfg!(target_arch = "x86_64") && AVX && spans[nb - 1].1 + 8 <= x.len();
    // A whole block of groups of up to 32 values whose chunks all stay in the batch runs the
    // same number of chunks for every group (`simd::*_fixed`): no branch on group sizes.
    // (Blocks of equal sizes keep the per-group loops: they predict well and do no extra work.)
    let (mut shortest, mut longest) = (usize::MAX, 0);
    for &(a, b) in spans {
        (shortest, longest) = (shortest.min(b - a), longest.max(b - a));
    }
    let chunks = longest.div_ceil(8).max(1);
    let fixed = simd
        && nb == BLOCK
        && shortest != longest
        && chunks <= 4
        && spans[nb - 1].0 + 8 * chunks <= x.len();
    let mut mean = [0.0f64; BLOCK];
    let mut m2 = [0.0f64; BLOCK];
    let mut n = [0.0f64; BLOCK];
    // Shifted sums first, then all the means in one vector pass (a division per group
    // waits on its sum; side by side the divisions overlap).
    let (mut x0, mut sum) = ([0.0f64; BLOCK], [0.0f64; BLOCK]);
    for (j, &(a, b)) in spans.iter().enumerate() {
        if b > a {
            x0[j] = x[a].to_f64();
            n[j] = (b - a) as f64;
            #[cfg(target_arch = "x86_64")]
            if fixed {
                // SAFETY: AVX2 is enabled (AVX); reads end before x.len() (checked above).
                sum[j] = unsafe { simd::sum_shifted_fixed(x.as_ptr(), a, b, x0[j], chunks) };
                continue;
            }
            #[cfg(target_arch = "x86_64")]
            if simd {
                // SAFETY: AVX2 is enabled (AVX); reads end before x.len() (checked above).
                sum[j] = unsafe { simd::sum_shifted_in(x.as_ptr(), a, b, x0[j]) };
                continue;
            }
            sum[j] = sum_shifted_in(x, a, b, x0[j]);
        }
    }
    for j in 0..BLOCK {
        // Empty groups (n = 0, also the unused tail of a short block) keep mean 0.
        mean[j] = if n[j] > 0.0 {
            x0[j] + sum[j] / n[j]
        } else {
            0.0
        };
    }
    if p.scale == Scale::Group {
        for (j, &(a, b)) in spans.iter().enumerate() {
            #[cfg(target_arch = "x86_64")]
            if fixed {
                // SAFETY: as above.
                m2[j] = unsafe { simd::sum_sq_dev_fixed(x.as_ptr(), a, b, mean[j], chunks) };
                continue;
            }
            #[cfg(target_arch = "x86_64")]
            if simd {
                // SAFETY: as above.
                m2[j] = unsafe { simd::sum_sq_dev_in(x.as_ptr(), a, b, mean[j]) };
                continue;
            }
            m2[j] = sum_sq_dev_in(x, a, b, mean[j]);
        }
    }
    // The affine maps side by side, as in `uniform`; an unusual group (fewer than 2
    // rewards, non-finite, guarded) takes the per-group route, its neighbours do not.
    let centred = p.center != Center::None;
    let k = block_affine(&n, &m2, p, batch);
    let known = p.scale == Scale::Group;
    for j in 0..nb {
        let (a, b) = spans[j];
        let usual = b - a >= 2
            && mean[j].is_finite()
            && k[j].is_finite()
            && !guarded::<T>(b - a, mean[j], m2[j], p);
        if !usual {
            if b > a {
                finish_group(&x[a..b], &mut out[a..b], mean[j], m2[j], p, batch)
                    .map_err(|f| (g0 + j, f))?;
            }
            continue;
        }
        let mu = if centred { mean[j] } else { 0.0 };
        let probe = !cannot_overflow::<T>(n[j], mean[j], mu, k[j], known);
        #[cfg(target_arch = "x86_64")]
        if fixed {
            // SAFETY: as above; the stores past b stay in the batch and are overwritten by
            // the following groups, written after this one; this thread owns the batch.
            if !unsafe {
                simd::write_affine_fixed(
                    x.as_ptr(),
                    out.as_mut_ptr(),
                    (a, b),
                    mu,
                    k[j],
                    probe,
                    chunks,
                )
            } {
                return Err((g0 + j, Fault::Overflow));
            }
            continue;
        }
        #[cfg(target_arch = "x86_64")]
        if simd {
            // SAFETY: as above; out has x's length, and this thread owns it.
            if !unsafe {
                simd::write_affine_in(x.as_ptr(), out.as_mut_ptr(), a, b, mu, k[j], probe)
            } {
                return Err((g0 + j, Fault::Overflow));
            }
            continue;
        }
        if !write_affine_in(x, out, a, b, mu, k[j], probe) {
            return Err((g0 + j, Fault::Overflow));
        }
    }
    Ok(())
}

/// Uniform groups of a constant size G (x.len() is a multiple of G). With `AVX` (only in
/// code compiled with AVX2) and G a multiple of 8, the per-group loops are `simd`'s.
#[inline(always)]
fn uniform<T: Real, const G: usize, const AVX: bool>(
    x: &[T],
    out: &mut [T],
    first_group: usize,
    p: &Params,
    batch: Denom,
) -> Result<(), (usize, Fault)> {
    let per_block = BLOCK * G;
    for (bi, (xb, ob)) in x
        .chunks(per_block)
        .zip(out.chunks_mut(per_block))
        .enumerate()
    {
        let g0 = first_group + bi * BLOCK;
        let nb = xb.len() / G;
        if p.nonfinite == NonFinite::Omit || batch.pre != 1.0 {
            for j in 0..nb {
                let (xs, os) = (&xb[j * G..(j + 1) * G], &mut ob[j * G..(j + 1) * G]);
                group_advantages(xs, os, p, batch).map_err(|f| (g0 + j, f))?;
            }
            continue;
        }
        let mut mean = [0.0f64; BLOCK];
        let mut m2 = [0.0f64; BLOCK];
        let simd = cfg!(target_arch = "x86_64") && AVX && G % 8 == 0;
        // Groups of four: one group per vector lane (`simd::moments4x8`).
        let fours = cfg!(target_arch = "x86_64") && AVX && G == 4;
        // A whole block takes the block-wide vector moments; a partial one, per-group loops.
        let whole = nb == BLOCK && (simd || fours);
        #[cfg(target_arch = "x86_64")]
        if whole {
            let m2 = (p.scale == Scale::Group).then_some(&mut m2);
            // SAFETY: AVX2 is enabled (AVX); xb holds BLOCK groups of G values.
            unsafe {
                if fours {
                    simd::moments4x8(xb.as_ptr(), &mut mean, m2)
                } else {
                    simd::moments8::<T, G>(xb.as_ptr(), &mut mean, m2)
                }
            };
        }
        if !whole {
            for j in 0..nb {
                let xs: &[T; G] = xb[j * G..(j + 1) * G].try_into().unwrap();
                let x0 = xs[0].to_f64();
                #[cfg(target_arch = "x86_64")]
                if simd {
                    // SAFETY: AVX2 is enabled (AVX), xs holds G values.
                    mean[j] = x0 + unsafe { simd::sum_shifted::<T, G>(xs.as_ptr(), x0) } / G as f64;
                    continue;
                }
                mean[j] = x0 + sum_shifted(xs, x0) / G as f64;
            }
            if p.scale == Scale::Group {
                for j in 0..nb {
                    let xs: &[T; G] = xb[j * G..(j + 1) * G].try_into().unwrap();
                    #[cfg(target_arch = "x86_64")]
                    if simd {
                        // SAFETY: as above.
                        m2[j] = unsafe { simd::sum_sq_dev::<T, G>(xs.as_ptr(), mean[j]) };
                        continue;
                    }
                    m2[j] = sum_sq_dev(xs, mean[j]);
                }
            }
        }
        // The affine maps of the whole block side by side (vector sqrt and division): every
        // group here has G >= 2 rewards, so `group_affine` reduces to this unless a group is
        // unusual, and then the block takes the per-group route.
        let centred = p.center != Center::None;
        let k = block_affine(&[G as f64; BLOCK], &m2, p, batch);
        // Plain loops with `&` (not `Iterator::all`, which is compiled out of line here,
        // without the vector instructions, and branches per group).
        let mut usual = true;
        for j in 0..nb {
            usual &= mean[j].is_finite() & k[j].is_finite() & !guarded::<T>(G, mean[j], m2[j], p);
        }
        if !usual {
            for j in 0..nb {
                let xs: &[T; G] = xb[j * G..(j + 1) * G].try_into().unwrap();
                let os: &mut [T; G] = (&mut ob[j * G..(j + 1) * G]).try_into().unwrap();
                finish_group(xs, os, mean[j], m2[j], p, batch).map_err(|f| (g0 + j, f))?;
            }
            continue;
        }
        let known = p.scale == Scale::Group;
        let mu: [f64; BLOCK] = if centred { mean } else { [0.0; BLOCK] };
        #[cfg(target_arch = "x86_64")]
        if fours && whole {
            let mut safe = true;
            for j in 0..BLOCK {
                safe &= cannot_overflow::<T>(G as f64, mean[j], mu[j], k[j], known);
            }
            if safe {
                // SAFETY: AVX2 is enabled (AVX); xb and ob hold BLOCK groups of 4 values.
                unsafe { simd::write_affine4x8(xb.as_ptr(), ob.as_mut_ptr(), &mu, &k) };
                continue;
            }
        }
        for j in 0..nb {
            let mu = mu[j];
            let probe = !cannot_overflow::<T>(G as f64, mean[j], mu, k[j], known);
            let (xs, os) = (&xb[j * G..(j + 1) * G], &mut ob[j * G..(j + 1) * G]);
            #[cfg(target_arch = "x86_64")]
            if simd {
                // SAFETY: as above; os holds G values.
                if !unsafe {
                    simd::write_affine_in(xs.as_ptr(), os.as_mut_ptr(), 0, G, mu, k[j], probe)
                } {
                    return Err((g0 + j, Fault::Overflow));
                }
                continue;
            }
            if !write_affine(xs, os, mu, k[j], probe) {
                return Err((g0 + j, Fault::Overflow));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Singleton;

    #[cfg(target_arch = "x86_64")]
    fn run<T: Real>(
        x: &[T],
        g: &Grouping,
        p: &Params,
        avx: bool,
    ) -> Result<Vec<T>, (usize, Fault)> {
        let mut out = vec![T::zero(); x.len()];
        let range = 0..g.n_groups();
        if avx {
            // SAFETY: the caller checked that the CPU has AVX2.
            unsafe { write_batch_avx2(x, &mut out, g, range, p, Denom::ONE)? };
            return Ok(out);
        }
        write_batch_impl::<T, false>(x, &mut out, g, range, p, Denom::ONE)?;
        Ok(out)
    }

    /// The AVX write pass against the generic one: the same bits for ragged sizes 0..70 and
    /// 0..=32 (empty groups and singletons included) and uniform sizes 4, 8, 16 and 24, under
    /// several policies, and the same first faulty group.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn avx_pass_matches_generic_pass_bit_for_bit() {
        if !std::arch::is_x86_feature_detected!("avx2") {
            return;
        }
        let mut state = 0x9e3779b97f4a7c15u64;
        let mut next = move |m: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % m
        };
        let mut offsets = vec![0i64];
        while offsets.len() < 5000 {
            let size = if next(10) == 0 { next(3) } else { 1 + next(70) };
            offsets.push(offsets.last().unwrap() + size as i64);
        }
        let n = *offsets.last().unwrap() as usize;
        let ragged = Grouping::ragged(n, &offsets).unwrap();
        let x64: Vec<f64> = (0..n)
            .map(|_| 1e6 + next(1 << 20) as f64 / 1024.0)
            .collect();
        let x32: Vec<f32> = x64.iter().map(|&v| v as f32).collect();
        let policies = [
            Params::default(),
            Params {
                center: Center::LeaveOneOut,
                ddof: 1,
                eps: 1e-6,
                singleton: Singleton::Raw,
                ..Params::default()
            },
            Params {
                center: Center::None,
                scale: Scale::None,
                ..Params::default()
            },
        ];
        // Sizes 0..=32 too: whole blocks of those take the fixed-count loops.
        let mut short = vec![0i64];
        while (*short.last().unwrap() as usize) + 32 <= n {
            let size = if next(10) == 0 { next(3) } else { 1 + next(32) };
            short.push(short.last().unwrap() + size as i64);
        }
        let short = Grouping::ragged(*short.last().unwrap() as usize, &short).unwrap();
        let mut layouts = vec![ragged.clone(), short];
        for size in [4usize, 8, 16, 24] {
            layouts.push(Grouping::uniform(n / size * size, size).unwrap());
        }
        for g in &layouts {
            let m = g.len();
            for p in &policies {
                let (a, b) = (
                    run(&x32[..m], g, p, true).unwrap(),
                    run(&x32[..m], g, p, false).unwrap(),
                );
                assert!(a.iter().zip(&b).all(|(u, v)| u.to_bits() == v.to_bits()));
                let (a, b) = (
                    run(&x64[..m], g, p, true).unwrap(),
                    run(&x64[..m], g, p, false).unwrap(),
                );
                assert!(a.iter().zip(&b).all(|(u, v)| u.to_bits() == v.to_bits()));
            }
        }
        // Two overflowing groups: both passes name the first.
        let mut y = x32.clone();
        for grp in [4000usize, 37] {
            let (s, e) = ragged.bounds(grp);
            if e - s >= 2 {
                y[s] = -3e38;
                y[s + 1..e].iter_mut().for_each(|v| *v = 3e38);
            }
        }
        let p = Params {
            center: Center::Mean,
            scale: Scale::None,
            ..Params::default()
        };
        assert_eq!(
            run(&y, &ragged, &p, true).unwrap_err(),
            run(&y, &ragged, &p, false).unwrap_err()
        );
    }
}
