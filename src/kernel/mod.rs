//! The write pass of `advantage::advantages`, tuned for speed.
//!
//! * Groups are handled in blocks of `BLOCK`: their means and stds are computed side by side,
//!   so the divisions and square roots of different groups overlap instead of queueing.
//! * Uniform layouts with a small power-of-two group size use a copy of the kernel where the
//!   size is a constant, so the per-group loops are fully unrolled.
//! * The whole batch loop is compiled for baseline x86-64 and again with AVX2 (and with
//!   AVX-512F enabled, for the compiler's own code), and picked at run time. The AVX copies
//!   run the explicit vector loops of `simd` (uniform groups of 4 or a multiple of 8, ragged
//!   groups with masked tails, blocks of groups of up to 32 with a fixed chunk count, equal
//!   sizes or not); no fused multiply-add is introduced, so every copy gives the same bits.
//! * In those vector loops a block's rewards are read (and converted to f64) once: the moment
//!   pass keeps the chunks for the M2 pass and the write; the block's factors are one vector
//!   pass (`simd::group_factors8`).
//! * Writes skip the overflow probe where `cannot_overflow` proves it unneeded.
//!
//! Policies (singletons, non-finite means) are applied by `policy::group_affine`, shared
//! with the general path; a guarded f64 std, scaled maps and the `Omit` policy take the
//! general per-group path (`group_advantages`).

//!
//! Modules: `uniform` and `ragged` (the two block loops), `write` (the per-group sums and
//! writes they share), `group` (one group by the rules: the general path), `check` (the
//! compiled copies against the generic pass).

mod check;
mod group;
// The general one-group path, reused by `components` (per-component group advantages).
pub(crate) use group::group_advantages;
mod ragged;
mod uniform;
mod write;

#[cfg(test)]
pub(crate) use check::xorshift;
pub use check::{self_check, Isa};
#[cfg(all(test, target_arch = "x86_64"))]
pub(crate) use write::{sum_shifted_in, sum_sq_dev_in, write_affine_in};

use crate::groups::Grouping;
use crate::hint::{prefetch_range, STREAM_AHEAD};
use crate::policy::{Denom, Fault, Params};
use crate::real::Real;
use ragged::block;
use std::ops::Range;
use uniform::uniform;

/// Groups per block: their moments and maps are computed side by side.
const BLOCK: usize = 8;

/// Write the advantages of groups `range` to `out`, which starts with the outputs of these
/// groups (`out[0]` is the first reward of group `range.start`; anything after them is left
/// as it is, and may be prefetched for the caller's next groups).
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
    write_batch_impl::<T, false, NoLanes>(x, out, grouping, range, p, batch)
}

/// The batch loop compiled with more vector instructions enabled (same code, same results).
macro_rules! write_batch_with {
    ($name:ident, $features:literal, $wide:ty) => {
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
            write_batch_impl::<T, true, $wide>(x, out, grouping, range, p, batch)
        }
    };
}

write_batch_with!(write_batch_avx2, "avx2", crate::simd::Avx2);
// AVX-512F implies AVX2 (the `Avx512` loops use both).
write_batch_with!(write_batch_avx512, "avx512f,avx2", crate::simd::Avx512);

/// The lanes of the explicit vector loops (`simd::Wide`); a placeholder where there are none.
#[cfg(target_arch = "x86_64")]
pub(crate) use crate::simd::Wide as Lanes;
#[cfg(not(target_arch = "x86_64"))]
pub(crate) trait Lanes {}
#[cfg(not(target_arch = "x86_64"))]
impl Lanes for () {}
/// The lanes type of the baseline copy (whose `AVX` is false: never used).
#[cfg(target_arch = "x86_64")]
pub(crate) type NoLanes = crate::simd::Avx2;
#[cfg(not(target_arch = "x86_64"))]
pub(crate) type NoLanes = ();

/// The batch loop. `AVX` only in the copies compiled with AVX2 (or more) enabled: it selects
/// the explicit vector loops of `simd` on lanes `W`, whose instructions the CPU must then have.
#[inline(always)]
fn write_batch_impl<T: Real, const AVX: bool, W: Lanes>(
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
    match grouping {
        Grouping::Labelled(_) => unreachable!("labelled groups are written by `labelled`"),
        Grouping::Uniform { size, .. } => {
            let (a, b) = (range.start * size, range.end * size);
            if !sized::<T, AVX, W>(&x[a..b], out, *size, range.start, p, batch)? {
                let g = *size;
                blocks::<T, AVX, W>(x, out, range, |grp| grp * g, p, batch)?;
            }
        }
        Grouping::Ragged { offsets } => {
            // Offsets of one size (a fixed number of samples per prompt, given as offsets)
            // take that size's copy of the kernel, if it has one: the same bits.
            let (a, b) = (offsets[range.start], offsets[range.end]);
            let size = offsets[range.start + 1] - a;
            let one = matches!(size, 2 | 4 | 8 | 16 | 32 | 64)
                && b - offsets[range.end - 1] == size
                && one_size(&offsets[range.clone()], size);
            if !(one && sized::<T, AVX, W>(&x[a..b], out, size, range.start, p, batch)?) {
                blocks::<T, AVX, W>(x, out, range, |grp| offsets[grp], p, batch)?;
            }
        }
    }
    Ok(())
}

/// The groups of `size` rewards in `xs` (the first is group `first_group`) by the copy of
/// `uniform` for that size; false, having written nothing, for a size without its own copy.
#[inline(always)]
fn sized<T: Real, const AVX: bool, W: Lanes>(
    xs: &[T],
    out: &mut [T],
    size: usize,
    first_group: usize,
    p: &Params,
    batch: Denom,
) -> Result<bool, (usize, Fault)> {
    match size {
        2 => uniform::<T, 2, AVX, W>(xs, out, first_group, p, batch)?,
        4 => uniform::<T, 4, AVX, W>(xs, out, first_group, p, batch)?,
        8 => uniform::<T, 8, AVX, W>(xs, out, first_group, p, batch)?,
        16 => uniform::<T, 16, AVX, W>(xs, out, first_group, p, batch)?,
        32 => uniform::<T, 32, AVX, W>(xs, out, first_group, p, batch)?,
        64 => uniform::<T, 64, AVX, W>(xs, out, first_group, p, batch)?,
        _ => return Ok(false),
    }
    Ok(true)
}

/// Are `starts` (group starts) `size` apart, one after the other? Checked in chunks of 64
/// without a branch inside (vector compares), so that a batch of one size costs ~0.1 ns a
/// group; other offsets stop at their first chunk.
fn one_size(starts: &[usize], size: usize) -> bool {
    let base = starts[0];
    starts.chunks(64).enumerate().all(|(c, chunk)| {
        let mut same = true;
        for (i, &s) in chunk.iter().enumerate() {
            same &= s == base + (64 * c + i) * size;
        }
        same
    })
}

/// Groups `range` of any sizes, group `g` starting at `x[start(g)]` (`start(range.end)` is the
/// end of the last one), a block of `BLOCK` groups at a time (`ragged::block`).
#[inline(always)]
fn blocks<T: Real, const AVX: bool, W: Lanes>(
    x: &[T],
    out: &mut [T],
    range: Range<usize>,
    start: impl Fn(usize) -> usize,
    p: &Params,
    batch: Denom,
) -> Result<(), (usize, Fault)> {
    let mut spans = [(0usize, 0usize); BLOCK];
    let (a, b) = (start(range.start), start(range.end));
    let xs = &x[a..b];
    // The rewards and outputs `STREAM_AHEAD` ahead of the block (`prefetch_range`): the
    // block loop computes between its reads. One page ahead measured 5-15% faster at 1e7
    // rewards than none (noisy A/B runs); four pages, ~20% faster again after idle.
    let ahead = STREAM_AHEAD / std::mem::size_of::<T>();
    for g0 in range.clone().step_by(BLOCK) {
        let g1 = (g0 + BLOCK).min(range.end);
        let (from, to) = (start(g0) - a + ahead, start(g1) - a + ahead);
        // (the rewards from x itself: past the range's last group too, where a caller
        // writing consecutive ranges goes next)
        prefetch_range(x, a + from, a + to);
        prefetch_range(out, from, to);
        let mut longest = 0;
        for (j, g) in (g0..g1).enumerate() {
            let (s, e) = (start(g) - a, start(g + 1) - a);
            spans[j] = (s, e);
            longest = longest.max(e - s);
        }
        block::<T, AVX, W>(xs, out, &spans[..g1 - g0], longest, g0, p, batch)?;
    }
    Ok(())
}
