//! Ragged groups (and uniform groups of a size without its own copy), a block of up to
//! `BLOCK` groups at a time.

use super::group::{finish_group, group_advantages, guarded};
use super::write::{block_affine, cannot_overflow, sum_shifted_in, sum_sq_dev_in, write_affine_in};
use super::{Lanes, BLOCK};
use crate::policy::{Center, Denom, Fault, NonFinite, Params, Scale};
use crate::real::Real;
#[cfg(target_arch = "x86_64")]
use crate::simd;

/// Up to BLOCK groups; group j is `x[spans[j].0..spans[j].1]`, written to the same positions
/// of `out` (`x` and `out` cover the whole batch, so chunks may read past a group's end).
/// `g0` is the index of the first group (for error reports); `longest` is the largest group
/// size of the block (found by the caller while it fills `spans`: read back here as vectors,
/// the freshly stored spans stalled on store forwarding).
#[inline(always)]
pub(super) fn block<T: Real, const AVX: bool, W: Lanes>(
    x: &[T],
    out: &mut [T],
    spans: &[(usize, usize)],
    longest: usize,
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
    // same number of chunks for every group (`simd::moments_fixed8`, unrolled): no branch on
    // group sizes. Blocks of equal sizes too: at 1e7 rewards in groups of 3, 5, 12 or 16
    // (one thread), 35-50% faster than the per-group loops, which predict well but run a
    // remainder step per group and pass.
    let chunks = longest.div_ceil(8).max(1);
    let fixed = simd && nb == BLOCK && chunks <= 4 && spans[nb - 1].0 + 8 * chunks <= x.len();
    let blk = Block {
        spans,
        longest,
        g0,
        simd,
    };
    match (fixed, chunks) {
        (false, _) => chunked::<T, AVX, W, 0>(x, out, blk, p, batch),
        (true, 1) => chunked::<T, AVX, W, 1>(x, out, blk, p, batch),
        (true, 2) => chunked::<T, AVX, W, 2>(x, out, blk, p, batch),
        (true, 3) => chunked::<T, AVX, W, 3>(x, out, blk, p, batch),
        (true, _) => chunked::<T, AVX, W, 4>(x, out, blk, p, batch),
    }
}

/// A block's groups, as `chunked` needs them.
struct Block<'a> {
    spans: &'a [(usize, usize)],
    /// The largest group size.
    longest: usize,
    /// The index of the first group.
    g0: usize,
    /// The AVX loops may run (`block`).
    simd: bool,
}

/// `block` with `C` chunks for every group (`simd::moments_fixed8`), or with per-group chunk
/// counts (C = 0; the AVX loops where `simd`, else the generic ones).
#[inline(always)]
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
fn chunked<T: Real, const AVX: bool, W: Lanes, const C: usize>(
    x: &[T],
    out: &mut [T],
    Block {
        spans,
        longest,
        g0,
        simd,
    }: Block,
    p: &Params,
    batch: Denom,
) -> Result<(), (usize, Fault)> {
    let nb = spans.len();
    let fixed = cfg!(target_arch = "x86_64") && C > 0;
    let mut mean = [0.0f64; BLOCK];
    let mut m2 = [0.0f64; BLOCK];
    let n: [f64; BLOCK] =
        std::array::from_fn(|j| spans.get(j).map_or(0.0, |&(a, b)| (b - a) as f64));
    // The chunks the fixed-count loops read, kept for their later passes (written by
    // `moments_fixed8`; not zeroed first: that was a 2 KiB memset per block).
    #[cfg(target_arch = "x86_64")]
    let mut stage = std::mem::MaybeUninit::<simd::Stage<W, C>>::uninit();
    #[cfg(target_arch = "x86_64")]
    if fixed {
        let m2 = (p.scale == Scale::Group).then_some(&mut m2);
        // SAFETY: AVX2 is enabled (AVX, as `fixed` implies); a whole block (nb = BLOCK) whose
        // chunk reads end before x.len() (checked by `block`).
        unsafe { simd::moments_fixed8::<T, W, C>(x.as_ptr(), spans, &mut stage, &mut mean, m2) };
    }
    if !fixed {
        // Shifted sums first, then all the means in one vector pass (a division per group
        // waits on its sum; side by side the divisions overlap).
        let (mut x0, mut sum) = ([0.0f64; BLOCK], [0.0f64; BLOCK]);
        for (j, &(a, b)) in spans.iter().enumerate() {
            if b > a {
                x0[j] = x[a].to_f64();
                #[cfg(target_arch = "x86_64")]
                if simd {
                    // SAFETY: AVX2 is enabled (AVX); reads end before x.len() (checked above).
                    sum[j] = unsafe { simd::sum_shifted_in::<T, W>(x.as_ptr(), a, b, x0[j]) };
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
                if simd {
                    // SAFETY: as above.
                    m2[j] = unsafe { simd::sum_sq_dev_in::<T, W>(x.as_ptr(), a, b, mean[j]) };
                    continue;
                }
                m2[j] = sum_sq_dev_in(x, a, b, mean[j]);
            }
        }
    }
    // The affine maps side by side, as in `uniform`; an unusual group (fewer than 2
    // rewards, non-finite, guarded) takes the per-group route, its neighbours do not.
    let centred = p.center != Center::None;
    let k = block_affine::<AVX>(&n, &m2, p, batch);
    let known = p.scale == Scale::Group;
    // Centred on its own finite mean (|mean - mu| = 0), `cannot_overflow` reduces to a
    // bound on n, which grows with n: checked once for the longest group, without products.
    let proven = centred && known && cannot_overflow::<T>(longest as f64, 0.0, 0.0, 0.0, true);
    #[cfg(target_arch = "x86_64")]
    if fixed && proven {
        // Every group written by the vector loop, then the unusual ones (fewer than 2
        // rewards, non-finite, guarded: found in one vector pass, plain `&`/`|` without a
        // branch per group, as in `uniform`) rewritten by the rules. Their first writes are
        // overwritten: inside the group by `finish_group`, past it by the following groups.
        let mut unusual = 0u32;
        for j in 0..BLOCK {
            let finite = (mean[j].abs() < f64::INFINITY) & (k[j].abs() < f64::INFINITY);
            let usual = (n[j] >= 2.0) & finite & !guarded::<T>(n[j] as usize, mean[j], m2[j], p);
            unusual |= (!usual as u32) << j;
        }
        // SAFETY: `moments_fixed8` wrote every row of the stage (fixed).
        let stage = unsafe { stage.assume_init_ref() };
        for (j, &(a, b)) in spans.iter().enumerate() {
            // SAFETY: AVX2 is enabled (AVX); the chunk reads and writes end before x.len()
            // (checked by `block`); the stores past b are overwritten by the following
            // groups, written after this one; this thread owns `out`. No probe: `proven`.
            unsafe {
                simd::write_affine_kept::<T, W>(
                    &stage[j],
                    out.as_mut_ptr().add(a),
                    b - a,
                    mean[j],
                    k[j],
                    false,
                )
            };
        }
        while unusual != 0 {
            let j = unusual.trailing_zeros() as usize;
            unusual &= unusual - 1;
            let (a, b) = spans[j];
            if b > a {
                finish_group(&x[a..b], &mut out[a..b], mean[j], m2[j], p, batch)
                    .map_err(|f| (g0 + j, f))?;
            }
        }
        return Ok(());
    }
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
        let probe = !proven && !cannot_overflow::<T>(n[j], mean[j], mu, k[j], known);
        #[cfg(target_arch = "x86_64")]
        if fixed {
            // SAFETY: as above; `moments_fixed8` wrote every row of the stage (fixed).
            if !unsafe {
                simd::write_affine_kept::<T, W>(
                    &stage.assume_init_ref()[j],
                    out.as_mut_ptr().add(a),
                    b - a,
                    mu,
                    k[j],
                    probe,
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
                simd::write_affine_in::<T, W>(x.as_ptr(), out.as_mut_ptr(), a, b, mu, k[j], probe)
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
