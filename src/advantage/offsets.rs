//! Advantages over ragged groups given by the caller's offsets, without a copy of them.
//!
//! A `Grouping::ragged` layout owns a checked copy of the offsets, which a one-off call
//! (`offsets=` each step) pays for in a pass of its own: at 1e7 rewards in groups of ~16 it
//! reads 5 MB and writes 5 MB that the write pass then reads again, ~2.5 ms of an 11 ms call
//! after idle time (measured against the same call on a made layout, `groups=`). Here each
//! batch reads the caller's offsets of a run of groups into a small buffer, checks them
//! there and writes those groups at once, while the offsets are in cache: after idle time
//! the call now takes what the `groups=` call does; back to back, about what it took with
//! the copy (the offsets, read in a burst per run, cost what the copy did).
//!
//! The advantages are those of `advantages_with` on `Grouping::ragged` bit for bit (the same
//! write pass, group by group); so are the errors: offsets that fail a check are reported
//! by `Grouping::ragged` itself, faults by `fault_to_error` on that layout.
//!
//! The caller's offsets may change while the call reads them (another thread writing to
//! the array: a bug of the caller, as writing to the rewards would be): every index used is
//! one read once into the buffer and checked there, so the call never reads or writes out
//! of bounds. Offsets found bad this way are checked again from a copy, which raises the
//! layout error or gives the advantages of the offsets as they are then.

use super::{advantages_with, fault_to_error, AdvError, Denom, Fault, Params};
use crate::groups::{batch_bounds, Grouping, LayoutError};
use crate::kernel;
use crate::parallel::{map_pieces, resolve_threads, CHUNK_ELEMENTS, SERIAL_BELOW};
use crate::real::Real;

/// Groups whose offsets one batch reads into its buffer at a time (32 KiB of offsets; a
/// batch of `CHUNK_ELEMENTS` rewards in groups of ~16 is one run).
const RUN: usize = 4096;

thread_local! {
    /// The offsets buffer of `write_run_by_run` on this thread (at most `RUN + 1` values).
    static RUN_OFFSETS: std::cell::Cell<Vec<usize>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Why an offsets call failed: its layout, or the advantages on it.
#[derive(Debug)]
pub enum OffsetsError {
    Layout(LayoutError),
    Advantage(AdvError),
}

impl From<LayoutError> for OffsetsError {
    fn from(e: LayoutError) -> Self {
        OffsetsError::Layout(e)
    }
}

impl From<AdvError> for OffsetsError {
    fn from(e: AdvError) -> Self {
        OffsetsError::Advantage(e)
    }
}

/// What a batch found: a fault of one of its groups, or offsets that fail a check.
enum Stop {
    Fault(usize, Fault),
    BadOffsets,
}

/// `advantages_with(x, out, &Grouping::ragged(x.len(), offsets)?, p, None)`, reading the
/// offsets in place (see the module's notes). Batch scales need every group's moments
/// before the first write: they take that path.
pub fn advantages_offsets<T: Real>(
    x: &[T],
    out: &mut [T],
    offsets: &[i64],
    p: &Params,
) -> Result<(), OffsetsError> {
    let n = x.len();
    let plain = !p.batch_scale()
        && n > 0
        && out.len() == n
        && offsets.len() >= 2
        && offsets[0] == 0
        && offsets[offsets.len() - 1] == n as i64;
    if !plain {
        return checked_copy(x, out, offsets, p);
    }
    super::check_params(p)?;
    let k = offsets.len() - 1;
    let threads = resolve_threads(p.threads);
    // Batches of about CHUNK_ELEMENTS rewards (as `map_batches_mut`), cut where the offsets
    // (as read now) say; `cuts` keeps the offset read at each cut, so that the pieces of
    // `out` are disjoint whatever the offsets hold later.
    let batches = if threads <= 1 || n < SERIAL_BELOW {
        1
    } else {
        n.div_ceil(CHUNK_ELEMENTS)
    };
    let bounds = batch_bounds(k, n, batches, |t| {
        offsets.partition_point(|&o| o < t as i64)
    });
    let cuts: Vec<i64> = bounds.iter().map(|&g| offsets[g]).collect();
    if cuts.windows(2).any(|w| w[1] < w[0]) || cuts[0] != 0 || cuts[cuts.len() - 1] != n as i64 {
        return checked_copy(x, out, offsets, p);
    }
    let ranges: Vec<_> = bounds.windows(2).map(|w| w[0]..w[1]).collect();
    let cut = |g: usize| cuts[bounds.partition_point(|&b| b < g)] as usize;
    let stops = map_pieces(threads, ranges, out, cut, |range, piece| {
        // This thread's buffer, kept between batches and calls (no allocation per batch).
        let mut run = Grouping::Ragged {
            offsets: RUN_OFFSETS.take(),
        };
        let span = cut(range.start)..cut(range.end);
        let stop = write_run_by_run(x, piece, offsets, range, span, p, &mut run);
        if let Grouping::Ragged { offsets } = run {
            RUN_OFFSETS.set(offsets);
        }
        stop
    });
    let mut fault = None;
    for s in stops.into_iter().flatten() {
        match s {
            Stop::BadOffsets => return checked_copy(x, out, offsets, p),
            Stop::Fault(g, f) => {
                fault.get_or_insert((g, f));
            }
        }
    }
    match fault {
        None => Ok(()),
        Some((g, f)) => {
            let grouping = Grouping::ragged(n, offsets)?;
            Err(fault_to_error(x, &grouping, g, f).into())
        }
    }
}

/// Groups `range` (rewards `span` = a..b as the cuts read them; `piece` is `out[a..b]`), `RUN`
/// groups at a time: their offsets read once into `run`'s buffer and checked there
/// (non-decreasing, within `a..=b`, the last one `b`), then written by the kernel from it. `None`, or
/// the batch's first fault, or `BadOffsets` at the first failed check.
fn write_run_by_run<T: Real>(
    x: &[T],
    piece: &mut [T],
    offsets: &[i64],
    range: std::ops::Range<usize>,
    span: std::ops::Range<usize>,
    p: &Params,
    run: &mut Grouping,
) -> Option<Stop> {
    let (a, b) = (span.start, span.end);
    let mut prev = a;
    let mut g = range.start;
    while g < range.end {
        let g1 = (g + RUN).min(range.end);
        let Grouping::Ragged { offsets: buffer } = &mut *run else {
            unreachable!()
        };
        let src = &offsets[g + 1..=g1];
        buffer.resize(src.len() + 1, 0);
        buffer[0] = prev;
        // (a negative offset read as usize is huge: caught by the checks below)
        for (slot, &o) in buffer[1..].iter_mut().zip(src) {
            *slot = o as usize;
        }
        // Non-decreasing from `prev` (>= a) and the last at most b: every offset in a..=b.
        // Below 2^62 (as every offset of a batch is), u - l wraps past 2^63 exactly when
        // u < l: subtractions and ors, which baseline x86-64 vectorizes (it has no 64-bit
        // compare).
        let (lower, upper) = (&buffer[..src.len()], &buffer[1..]);
        let (mut high, mut down) = (0usize, 0usize);
        for (&l, &u) in lower.iter().zip(upper) {
            high |= u;
            down |= u.wrapping_sub(l);
        }
        let sorted = high < 1 << 62 && down < 1 << 63;
        let first = prev;
        prev = buffer[buffer.len() - 1];
        if !sorted || prev > b || (g1 == range.end && prev != b) {
            return Some(Stop::BadOffsets);
        }
        // The rest of the batch's piece from this run on (the kernel writes this run's groups
        // only, and prefetches past them into the next run's).
        let rest = &mut piece[first - a..];
        if let Err((j, f)) = kernel::write_batch(x, rest, run, 0..g1 - g, p, Denom::ONE) {
            return Some(Stop::Fault(g + j, f));
        }
        g = g1;
    }
    None
}

/// The copying path: the layout checked and copied first (its errors are the offsets'
/// errors), then the usual call.
fn checked_copy<T: Real>(
    x: &[T],
    out: &mut [T],
    offsets: &[i64],
    p: &Params,
) -> Result<(), OffsetsError> {
    let grouping = Grouping::ragged(x.len(), offsets)?;
    Ok(advantages_with(x, out, &grouping, p, None)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::xorshift;
    use crate::policy::{NonFinite, Scale, Singleton};

    /// Random ragged offsets of `k` groups of 0..=max rewards.
    fn layout(k: usize, max: u64, seed: u64) -> Vec<i64> {
        let mut next = xorshift(seed);
        let mut offsets = vec![0i64];
        for _ in 0..k {
            let size = next(max + 1) as i64;
            offsets.push(offsets.last().unwrap() + size);
        }
        offsets
    }

    fn rewards(n: usize, seed: u64) -> Vec<f32> {
        let mut next = xorshift(seed);
        (0..n).map(|_| next(1000) as f32 / 7.0).collect()
    }

    /// The result, or the error's text, of both paths.
    fn both(
        x: &[f32],
        offsets: &[i64],
        p: &Params,
    ) -> (Result<Vec<u32>, String>, Result<Vec<u32>, String>) {
        let mut a = vec![f32::NAN; x.len()];
        let mut b = vec![f32::NAN; x.len()];
        let ours = advantages_offsets(x, &mut a, offsets, p)
            .map(|()| a.iter().map(|v| v.to_bits()).collect())
            .map_err(|e| match e {
                OffsetsError::Layout(e) => e.to_string(),
                OffsetsError::Advantage(e) => e.to_string(),
            });
        let copied = Grouping::ragged(x.len(), offsets)
            .map_err(|e| e.to_string())
            .and_then(|g| advantages_with(x, &mut b, &g, p, None).map_err(|e| e.to_string()))
            .map(|()| b.iter().map(|v| v.to_bits()).collect());
        (ours, copied)
    }

    /// The same bits as the copied layout, for every thread count, runs longer and shorter
    /// than `RUN`, empty groups, and batch scales (which take the copying path).
    #[test]
    fn same_bits_as_the_copied_layout() {
        for (k, max, seed) in [
            (1usize, 5u64, 1u64),
            (300, 3, 2),
            (20_000, 31, 3),
            (9_000, 64, 4),
            (3, 70_000, 5),
        ] {
            let offsets = layout(k, max, seed);
            let n = *offsets.last().unwrap() as usize;
            if n == 0 {
                continue;
            }
            let x = rewards(n, seed + 10);
            for threads in [1, 2, 3] {
                for scale in [Scale::Group, Scale::None, Scale::Batch] {
                    let p = Params {
                        threads,
                        scale,
                        eps: 1e-6,
                        ..Params::default()
                    };
                    let (ours, copied) = both(&x, &offsets, &p);
                    assert!(ours.is_ok(), "{k} {max} {threads}: {ours:?}");
                    assert_eq!(ours, copied, "{k} {max} {threads} {scale:?}");
                }
            }
        }
    }

    /// Offsets that fail a check give the copied layout's error, wherever the fault lies
    /// (in the first run, at a batch cut, in the last group), on any thread count.
    #[test]
    fn bad_offsets_give_the_layout_errors() {
        let good = layout(40_000, 31, 7);
        let n = *good.last().unwrap() as usize;
        let x = rewards(n, 8);
        let mut cases: Vec<Vec<i64>> = Vec::new();
        for at in [1, 2, 100, 2048, 2049, 20_000, 39_999] {
            let mut o = good.clone();
            o[at] = o[at - 1] - 1; // decreasing
            cases.push(o);
            let mut o = good.clone();
            o[at] = -5;
            cases.push(o);
            let mut o = good.clone();
            o[at] = n as i64 + 3;
            cases.push(o);
        }
        let mut o = good.clone();
        o[0] = 1;
        cases.push(o);
        let mut o = good.clone();
        *o.last_mut().unwrap() -= 1;
        cases.push(o);
        cases.push(vec![0]);
        for offsets in &cases {
            for threads in [1, 2, 4] {
                let p = Params {
                    threads,
                    ..Params::default()
                };
                let (ours, copied) = both(&x, offsets, &p);
                assert!(copied.is_err());
                assert_eq!(ours, copied, "{threads}");
            }
        }
        let (ours, copied) = both(&[], &[0, 0], &Params::default());
        assert!(copied.is_err());
        assert_eq!(ours, copied);
    }

    /// A fault (a NaN under nan="raise", a one-reward group under singleton="error") is
    /// the copied layout's error: the first one in group order.
    #[test]
    fn faults_are_reported_as_on_the_copied_layout() {
        let offsets = layout(30_000, 31, 9);
        let n = *offsets.last().unwrap() as usize;
        let mut x = rewards(n, 10);
        x[n / 2] = f32::NAN;
        x[n - 3] = f32::NAN;
        for threads in [1, 2, 3] {
            let p = Params {
                threads,
                ..Params::default()
            };
            let (ours, copied) = both(&x, &offsets, &p);
            assert!(copied.is_err());
            assert_eq!(ours, copied);
            let p = Params {
                threads,
                nonfinite: NonFinite::Propagate,
                singleton: Singleton::Error,
                ..Params::default()
            };
            let (ours, copied) = both(&x, &offsets, &p);
            assert_eq!(ours, copied);
        }
    }
}
