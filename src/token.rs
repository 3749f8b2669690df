//! Token-level layouts (verl, OpenRLHF): per-sequence scores summed from token rewards, and
//! per-sequence advantages broadcast back over the tokens under a response mask.
//!
//! Two layouts: padded rows (`bs x len`, row-major) and packed sequences (flat tokens with
//! offsets). Each step is one parallel pass: reading the token rewards once for the scores,
//! writing the output once for the broadcast; the group advantages in between work on the
//! `bs` scores only.

use crate::parallel::{map_pieces, resolve_threads, SERIAL_BELOW};
use crate::real::Real;
use std::ops::Range;

/// `0..rows` cut into about equal ranges, one per thread, or one in all when the `tokens`
/// they cover are few: a token pass costs by its tokens, not its rows (`parallel`'s
/// `map_ranges_mut` judges by the count it cuts, and a batch of 16384 rows is below it).
pub(crate) fn row_ranges(rows: usize, tokens: usize, threads: usize) -> (usize, Vec<Range<usize>>) {
    let threads = resolve_threads(threads);
    if threads <= 1 || tokens < SERIAL_BELOW || rows < 2 {
        return (threads, std::iter::once(0..rows).collect());
    }
    let k = threads.min(rows);
    (
        threads,
        (0..k).map(|t| rows * t / k..rows * (t + 1) / k).collect(),
    )
}

/// `f(row, out_row)` for each row of `out` (`rows x width`), the rows split over threads as
/// [`row_ranges`] splits them: the one row loop of the token write passes.
pub(crate) fn for_each_row<T: Send>(
    rows: usize,
    width: usize,
    threads: usize,
    out: &mut [T],
    f: impl Fn(usize, &mut [T]) + Sync + Send,
) {
    let (threads, ranges) = row_ranges(rows, out.len(), threads);
    map_pieces(
        threads,
        ranges,
        out,
        |i| i * width,
        |r, o| {
            for (k, row) in r.clone().enumerate() {
                f(row, &mut o[k * width..(k + 1) * width]);
            }
        },
    );
}

/// The sum of one sequence's token rewards, accumulated in f64 and stored as `T`; `false`
/// when finite rewards sum beyond `T`'s range (an overflow, not a non-finite reward).
fn sum_into<T: Real>(tokens: &[T], o: &mut T) -> bool {
    let s: f64 = tokens.iter().map(|v| v.to_f64()).sum();
    store_sum(s, tokens, o)
}

/// Sum of each row of `tokens` (`rows x width`), accumulated in f64 (as verl's
/// `token_level_rewards.sum(-1)`: every token counts, masked or not). `Err(row)`: the first
/// row whose finite token rewards sum beyond `T`'s range.
pub fn row_sums<T: Real>(
    tokens: &[T],
    width: usize,
    threads: usize,
    out: &mut [T],
) -> Result<(), usize> {
    let rows = out.len();
    assert_eq!(
        tokens.len(),
        rows * width,
        "tokens must hold rows x width values"
    );
    let (threads, ranges) = row_ranges(rows, tokens.len(), threads);
    let bad = map_pieces(
        threads,
        ranges,
        out,
        |i| i,
        |r, o| {
            // four rows at a time: four independent chains of additions, each row summed in
            // its own order (the same bits as `sum_into` alone)
            let mut k = 0;
            while k + ROWS_AT_ONCE <= o.len() {
                let row = r.start + k;
                let sums = sums_at_once(&tokens[row * width..(row + ROWS_AT_ONCE) * width], width);
                for (j, s) in sums.into_iter().enumerate() {
                    let t = &tokens[(row + j) * width..(row + j + 1) * width];
                    if !store_sum(s, t, &mut o[k + j]) {
                        return Some(row + j);
                    }
                }
                k += ROWS_AT_ONCE;
            }
            o[k..].iter_mut().zip(r.start + k..).find_map(|(o, row)| {
                (!sum_into(&tokens[row * width..(row + 1) * width], o)).then_some(row)
            })
        },
    );
    bad.into_iter().flatten().min().map_or(Ok(()), Err)
}

/// Rows whose sums [`row_sums`] interleaves: a row's sum is a chain of dependent additions,
/// bound by their latency, not by memory, unless several run side by side.
const ROWS_AT_ONCE: usize = 4;

/// The f64 sums of `ROWS_AT_ONCE` consecutive rows of `width` tokens, each in token order
/// from the start value of `Iterator::sum` (so each equals that row's `sum_into`).
#[inline]
fn sums_at_once<T: Real>(tokens: &[T], width: usize) -> [f64; ROWS_AT_ONCE] {
    let zero: f64 = std::iter::empty::<f64>().sum();
    let mut s = [zero; ROWS_AT_ONCE];
    let (a, rest) = tokens.split_at(width);
    let (b, rest) = rest.split_at(width);
    let (c, d) = rest.split_at(width);
    for t in 0..width {
        s[0] += a[t].to_f64();
        s[1] += b[t].to_f64();
        s[2] += c[t].to_f64();
        s[3] += d[t].to_f64();
    }
    s
}

/// `*o = s` as `T`; `false` when finite `tokens` sum beyond `T`'s range (as `sum_into`).
#[inline]
fn store_sum<T: Real>(s: f64, tokens: &[T], o: &mut T) -> bool {
    *o = T::from_f64(s);
    o.to_f64().is_finite() || tokens.iter().any(|v| !v.to_f64().is_finite())
}

/// Sum of each segment `tokens[offsets[i]..offsets[i + 1]]`, accumulated in f64; `Err(i)` as
/// for `row_sums`.
pub fn segment_sums<T: Real>(
    tokens: &[T],
    offsets: &[usize],
    threads: usize,
    out: &mut [T],
) -> Result<(), usize> {
    assert_eq!(offsets.len(), out.len() + 1);
    let (threads, ranges) = row_ranges(out.len(), tokens.len(), threads);
    let bad = map_pieces(
        threads,
        ranges,
        out,
        |i| i,
        |r, o| {
            o.iter_mut()
                .zip(r)
                .find_map(|(o, i)| (!sum_into(&tokens[offsets[i]..offsets[i + 1]], o)).then_some(i))
        },
    );
    bad.into_iter().flatten().min().map_or(Ok(()), Err)
}

/// What a response mask holds: 0/1 flags (bool, uint8), wider integers read as the caller
/// holds them (verl passes int64: no conversion pass), or weights of the output's dtype. Any
/// nonzero integer selects its token.
pub enum Mask<'a, T> {
    Flags(&'a [u8]),
    /// 2-, 4- or 8-byte integers (signed ones viewed as unsigned: nonzero is the same).
    Wide(Wide<'a>),
    Values(&'a [T]),
    /// Every token of every sequence counts (packed layouts).
    None,
}

/// An integer mask wider than a byte.
#[derive(Clone, Copy)]
pub enum Wide<'a> {
    B2(&'a [u16]),
    B4(&'a [u32]),
    B8(&'a [u64]),
}

impl Wide<'_> {
    #[inline(always)]
    pub fn is_set(&self, i: usize) -> bool {
        match self {
            Wide::B2(m) => m[i] != 0,
            Wide::B4(m) => m[i] != 0,
            Wide::B8(m) => m[i] != 0,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Wide::B2(m) => m.len(),
            Wide::B4(m) => m.len(),
            Wide::B8(m) => m.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T: Real> Mask<'_, T> {
    /// The weight of token `i`: 0/1 for flags, the value for weights, 1 without a mask.
    #[inline(always)]
    pub fn weight(&self, i: usize) -> f64 {
        match self {
            Mask::Flags(m) => (m[i] != 0) as u8 as f64,
            Mask::Wide(w) => w.is_set(i) as u8 as f64,
            Mask::Values(m) => m[i].to_f64(),
            Mask::None => 1.0,
        }
    }

    /// `dst[k] = a * mask[start + k]` (flags: `a` where set, else 0), one vectorisable loop
    /// per mask kind.
    #[inline]
    pub fn fill_scaled(&self, dst: &mut [T], start: usize, a: T) {
        let end = start + dst.len();
        match self {
            Mask::Flags(m) => select(dst, &m[start..end], a),
            Mask::Wide(Wide::B2(m)) => select(dst, &m[start..end], a),
            Mask::Wide(Wide::B4(m)) => select(dst, &m[start..end], a),
            Mask::Wide(Wide::B8(m)) => select(dst, &m[start..end], a),
            Mask::Values(m) => {
                let af = a.to_f64();
                for (d, &w) in dst.iter_mut().zip(&m[start..end]) {
                    *d = T::from_f64(af * w.to_f64());
                }
            }
            Mask::None => dst.fill(a),
        }
    }
}

/// A mask's weight of token `i`, one implementation per mask kind: a pass written over
/// `W: Weights` is compiled once per kind, with no per-token dispatch (see [`with_weights`]).
pub trait Weights: Sync {
    /// Every weight is 0 or 1.
    const BINARY: bool;
    fn at(&self, i: usize) -> f64;
    /// [`Weights::BINARY`] of a value.
    fn binary(&self) -> bool {
        Self::BINARY
    }
    /// The first, and the last, token of `r` with a nonzero weight.
    fn first_last(&self, r: Range<usize>) -> Option<(usize, usize)> {
        let first = r.clone().find(|&i| self.at(i) != 0.0)?;
        Some((first, (first..r.end).rev().find(|&i| self.at(i) != 0.0)?))
    }
    /// The number of tokens of `r` with a nonzero weight.
    fn count_set(&self, r: Range<usize>) -> usize {
        r.filter(|&i| self.at(i) != 0.0).count()
    }
}

/// Every token counts.
pub struct NoMask;
/// 0/nonzero flags of any integer width.
pub struct FlagsOf<'a, F>(pub &'a [F]);
/// Weights of the values' dtype.
pub struct ValuesOf<'a, T>(pub &'a [T]);

impl Weights for NoMask {
    const BINARY: bool = true;
    #[inline(always)]
    fn at(&self, _: usize) -> f64 {
        1.0
    }
}

impl<F: Copy + Default + PartialEq + Sync> Weights for FlagsOf<'_, F> {
    const BINARY: bool = true;
    #[inline(always)]
    fn at(&self, i: usize) -> f64 {
        (self.0[i] != F::default()) as u8 as f64
    }
    // on the flags themselves: one vectorised loop, no per-token conversion
    #[inline]
    fn first_last(&self, r: Range<usize>) -> Option<(usize, usize)> {
        let fl = &self.0[r.clone()];
        let first = fl.iter().position(|&f| f != F::default())?;
        let last = fl.iter().rposition(|&f| f != F::default())?;
        Some((r.start + first, r.start + last))
    }
    #[inline]
    fn count_set(&self, r: Range<usize>) -> usize {
        self.0[r]
            .iter()
            .map(|&f| (f != F::default()) as usize)
            .sum()
    }
}

impl<T: Real> Weights for ValuesOf<'_, T> {
    const BINARY: bool = false;
    #[inline(always)]
    fn at(&self, i: usize) -> f64 {
        self.0[i].to_f64()
    }
}

/// `$body` with `$w` bound to the [`Weights`] of the `&Mask` `$mask`: one compiled copy of
/// `$body` per mask kind.
#[macro_export]
macro_rules! with_weights {
    ($mask:expr, $w:ident => $body:expr) => {
        match $mask {
            $crate::token::Mask::Flags(m) => {
                let $w = $crate::token::FlagsOf(*m);
                $body
            }
            $crate::token::Mask::Wide($crate::token::Wide::B2(m)) => {
                let $w = $crate::token::FlagsOf(*m);
                $body
            }
            $crate::token::Mask::Wide($crate::token::Wide::B4(m)) => {
                let $w = $crate::token::FlagsOf(*m);
                $body
            }
            $crate::token::Mask::Wide($crate::token::Wide::B8(m)) => {
                let $w = $crate::token::FlagsOf(*m);
                $body
            }
            $crate::token::Mask::Values(m) => {
                let $w = $crate::token::ValuesOf(*m);
                $body
            }
            $crate::token::Mask::None => {
                let $w = $crate::token::NoMask;
                $body
            }
        }
    };
}

#[inline(always)]
fn select<T: Real, F: Copy + Default + PartialEq>(dst: &mut [T], flags: &[F], a: T) {
    let zero = F::default();
    for (d, &f) in dst.iter_mut().zip(flags) {
        *d = if f != zero { a } else { T::zero() };
    }
}

/// `out[row, t] = adv[row] * mask[row, t]` over `rows x width` (flags: adv where set, else 0).
pub fn broadcast_rows<T: Real>(
    adv: &[T],
    mask: &Mask<'_, T>,
    width: usize,
    threads: usize,
    out: &mut [T],
) {
    let rows = adv.len();
    assert_eq!(out.len(), rows * width, "out must hold rows x width values");
    for_each_row(rows, width, threads, out, |row, o| {
        mask.fill_scaled(o, row * width, adv[row]);
    });
}

/// `out[offsets[i]..offsets[i + 1]] = adv[i]` (times the mask where one is given).
pub fn broadcast_segments<T: Real>(
    adv: &[T],
    offsets: &[usize],
    mask: &Mask<'_, T>,
    threads: usize,
    out: &mut [T],
) {
    assert_eq!(offsets.len(), adv.len() + 1);
    let base = offsets[0];
    let (threads, ranges) = row_ranges(adv.len(), out.len(), threads);
    map_pieces(
        threads,
        ranges,
        out,
        |i| offsets[i] - base,
        |r, o| {
            let start = offsets[r.start];
            for i in r {
                let (a0, b0) = (offsets[i], offsets[i + 1]);
                mask.fill_scaled(&mut o[a0 - start..b0 - start], a0, adv[i]);
            }
        },
    );
}

/// Where a row's set flags lie, relative to the row's start: one run `start..end` (an empty
/// run when none is set), or scattered (multi-turn masks with observation tokens). verl's
/// response masks are one run per row: a later pass over such a row writes zeros and values
/// by position and reads no mask at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Span {
    Run { start: usize, end: usize },
    Scattered,
}

impl Span {
    /// The span of the flags `w.at(start + k)`, `k < len` (0/1 weights), and their count.
    #[inline]
    pub fn of<W: Weights>(w: &W, start: usize, len: usize) -> (Span, usize) {
        let Some((first, last)) = w.first_last(start..start + len) else {
            return (Span::Run { start: 0, end: 0 }, 0);
        };
        let count = w.count_set(first..last + 1);
        let span = if count == last + 1 - first {
            Span::Run {
                start: first - start,
                end: last + 1 - start,
            }
        } else {
            Span::Scattered
        };
        (span, count)
    }

    /// A row's output: 0 outside the run and `inside(&mut dst[start..end], start)` in it; a
    /// scattered row gets `scattered(dst)`.
    #[inline]
    pub fn fill<T: Real>(
        &self,
        dst: &mut [T],
        inside: impl FnOnce(&mut [T], usize),
        scattered: impl FnOnce(&mut [T]),
    ) {
        match *self {
            Span::Run { start, end } => {
                dst[..start].fill(T::zero());
                inside(&mut dst[start..end], start);
                dst[end..].fill(T::zero());
            }
            Span::Scattered => scattered(dst),
        }
    }
}

/// Each row's number of set flags and [`Span`] over `rows x width` (a 0/1 mask: flags of any
/// width, or none), in one parallel pass over the mask.
pub fn row_spans<T: Real>(
    mask: &Mask<'_, T>,
    width: usize,
    threads: usize,
    counts: &mut [f64],
    spans: &mut [Span],
) {
    let rows = counts.len();
    assert_eq!(spans.len(), rows);
    let (threads, ranges) = row_ranges(rows, rows * width, threads);
    let per: Vec<Vec<(Span, usize)>> = crate::with_weights!(mask, w => {
        assert!(
            <_ as Weights>::binary(&w),
            "row spans need a 0/1 mask (flags)"
        );
        let mut none: [u8; 0] = [];
        map_pieces(threads, ranges, &mut none[..], |_| 0, |rs, _| {
            rs.map(|row| Span::of(&w, row * width, width)).collect()
        })
    });
    for ((c, s), (span, n)) in counts
        .iter_mut()
        .zip(spans.iter_mut())
        .zip(per.into_iter().flatten())
    {
        (*c, *s) = (n as f64, span);
    }
}

/// `out[row, t] = adv[row]` on the row's set flags, else 0, over `rows x width`: a row whose
/// flags are one run (`spans`, from [`row_spans`]) is written without reading the mask.
pub fn broadcast_spans<T: Real>(
    adv: &[T],
    spans: &[Span],
    mask: &Mask<'_, T>,
    width: usize,
    threads: usize,
    out: &mut [T],
) {
    let rows = adv.len();
    assert_eq!(spans.len(), rows);
    assert_eq!(out.len(), rows * width, "out must hold rows x width values");
    for_each_row(rows, width, threads, out, |row, o| {
        let a = adv[row];
        spans[row].fill(o, |d, _| d.fill(a), |d| mask.fill_scaled(d, row * width, a));
    });
}

/// Each row's mask weight (its number of set flags, or the sum of its float weights) over
/// `rows x width`; for integer masks wider than a byte also a uint8 copy of the flags, written
/// in the same pass (`flags`), so that a later pass reads one byte a token instead of eight.
pub fn row_weights<T: Real>(
    mask: &Mask<'_, T>,
    width: usize,
    threads: usize,
    out: &mut [f64],
    flags: Option<&mut [u8]>,
) {
    let rows = out.len();
    let (threads, ranges) = row_ranges(rows, rows * width, threads);
    let count = |row: usize, fl: Option<&mut [u8]>| -> f64 {
        let r = row * width..(row + 1) * width;
        match (mask, fl) {
            (Mask::Wide(w), Some(fl)) => {
                let mut c = 0usize;
                for (f, i) in fl.iter_mut().zip(r) {
                    let set = w.is_set(i);
                    *f = set as u8;
                    c += set as usize;
                }
                c as f64
            }
            (Mask::Flags(m), _) => m[r].iter().filter(|&&f| f != 0).count() as f64,
            _ => r.map(|i| mask.weight(i)).sum(),
        }
    };
    let per: Vec<Vec<f64>> = match flags {
        Some(fl) => {
            assert_eq!(fl.len(), rows * width);
            map_pieces(
                threads,
                ranges,
                fl,
                |i| i * width,
                |rs, fl| {
                    let start = rs.start;
                    rs.map(|row| {
                        let k = row - start;
                        count(row, Some(&mut fl[k * width..(k + 1) * width]))
                    })
                    .collect()
                },
            )
        }
        None => {
            let mut none: [u8; 0] = [];
            map_pieces(
                threads,
                ranges,
                &mut none[..],
                |_| 0,
                |rs, _| rs.map(|row| count(row, None)).collect(),
            )
        }
    };
    for (o, w) in out.iter_mut().zip(per.into_iter().flatten()) {
        *o = w;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_and_segments() {
        let tokens = [0.0f32, 0.0, 1.0, 0.5, 0.5, 0.0];
        let mut s = [0.0f32; 2];
        row_sums(&tokens, 3, 1, &mut s).unwrap();
        assert_eq!(s, [1.0, 1.0]);
        let mut s2 = [0.0f32; 3];
        segment_sums(&tokens, &[0, 3, 3, 6], 1, &mut s2).unwrap();
        assert_eq!(s2, [1.0, 0.0, 1.0]);
        let mut out = [9.0f32; 6];
        broadcast_rows(
            &[2.0, -1.0],
            &Mask::Flags(&[1, 1, 0, 1, 0, 0]),
            3,
            1,
            &mut out,
        );
        assert_eq!(out, [2.0, 2.0, 0.0, -1.0, 0.0, 0.0]);
        broadcast_rows(
            &[2.0, -1.0],
            &Mask::Values(&[1.0, 0.5, 0.0, 1.0, 1.0, 0.0]),
            3,
            1,
            &mut out,
        );
        assert_eq!(out, [2.0, 1.0, 0.0, -1.0, -1.0, 0.0]);
        let mut out = [9.0f32; 6];
        broadcast_segments(&[1.0, 5.0, 2.0], &[0, 3, 3, 6], &Mask::None, 1, &mut out);
        assert_eq!(out, [1.0, 1.0, 1.0, 2.0, 2.0, 2.0]);
    }

    #[test]
    fn interleaved_row_sums_equal_each_row_summed_alone() {
        for (rows, width) in [(11usize, 7usize), (4, 1), (9, 33), (3, 5)] {
            let mut tokens: Vec<f32> = (0..rows * width)
                .map(|i| ((i * 31) % 23) as f32 * 0.013 - 0.11)
                .collect();
            tokens[..width].fill(-0.0); // an all -0.0 row keeps the sign of Iterator::sum
            let mut got = vec![9.0f32; rows];
            row_sums(&tokens, width, 1, &mut got).unwrap();
            for (r, g) in got.iter().enumerate() {
                let want = tokens[r * width..(r + 1) * width]
                    .iter()
                    .map(|v| v.to_f64())
                    .sum::<f64>() as f32;
                assert_eq!(g.to_bits(), want.to_bits(), "row {r} of {rows} x {width}");
            }
            // an overflowing row inside a block of four, and one after: the first is named
            if rows >= 6 {
                let mut big = tokens.clone();
                big[2 * width..3 * width].fill(3e38);
                big[5 * width..6 * width].fill(3e38);
                if width > 1 {
                    assert_eq!(row_sums(&big, width, 1, &mut got), Err(2));
                }
            }
        }
    }

    #[test]
    fn spans_of_every_row_shape() {
        let m: [u64; 24] = [
            0, 1, 1, 1, 0, 0, // a run inside
            1, 1, 1, 1, 1, 1, // all
            0, 0, 0, 0, 0, 0, // none
            1, 0, 1, 0, 0, 0, // scattered
        ];
        let w = FlagsOf(&m[..]);
        let got: Vec<(Span, usize)> = (0..4).map(|r| Span::of(&w, r * 6, 6)).collect();
        assert_eq!(
            got,
            vec![
                (Span::Run { start: 1, end: 4 }, 3),
                (Span::Run { start: 0, end: 6 }, 6),
                (Span::Run { start: 0, end: 0 }, 0),
                (Span::Scattered, 2),
            ]
        );
        let (mut c, mut sp) = ([0.0; 4], [Span::Scattered; 4]);
        row_spans::<f32>(&Mask::Wide(Wide::B8(&m)), 6, 1, &mut c, &mut sp);
        assert_eq!(c, [3.0, 6.0, 0.0, 2.0]);
        let adv = [1.0f32, 2.0, 3.0, 4.0];
        let mut out = [9.0f32; 24];
        broadcast_spans(&adv, &sp, &Mask::Wide(Wide::B8(&m)), 6, 1, &mut out);
        let mut want = [9.0f32; 24];
        broadcast_rows(&adv, &Mask::Wide(Wide::B8(&m)), 6, 1, &mut want);
        assert_eq!(out, want);
    }

    #[test]
    fn finite_tokens_summing_past_the_range_are_reported() {
        let tokens = [1.0f32, 2.0, 3e38, 3e38, f32::INFINITY, 1.0];
        let mut s = [0.0f32; 3];
        assert_eq!(row_sums(&tokens, 2, 1, &mut s), Err(1));
        // an infinite token reward is a non-finite reward, not an overflow
        assert_eq!(row_sums(&tokens[4..], 2, 1, &mut s[..1]), Ok(()));
        let mut s2 = [0.0f32; 2];
        assert_eq!(segment_sums(&tokens[..4], &[0, 1, 4], 1, &mut s2), Err(1));
    }

    #[test]
    fn parallel_rows_equal_serial() {
        let (rows, width) = (5000usize, 40usize);
        let tokens: Vec<f64> = (0..rows * width)
            .map(|i| ((i * 7) % 13) as f64 * 0.25)
            .collect();
        let (mut a, mut b) = (vec![0.0; rows], vec![0.0; rows]);
        row_sums(&tokens, width, 1, &mut a).unwrap();
        row_sums(&tokens, width, 2, &mut b).unwrap();
        assert_eq!(a, b);
        let mask: Vec<u8> = (0..rows * width).map(|i| (i % 3 != 0) as u8).collect();
        let (mut o1, mut o2) = (vec![0.0; rows * width], vec![0.0; rows * width]);
        broadcast_rows(&a, &Mask::Flags(&mask), width, 1, &mut o1);
        broadcast_rows(&a, &Mask::Flags(&mask), width, 2, &mut o2);
        assert_eq!(o1, o2);
    }

    #[test]
    fn wide_integer_masks_select_as_flags() {
        let adv = [2.0f32, -1.0];
        let f: Vec<u8> = vec![1, 1, 0, 1, 0, 0];
        let w8: Vec<u64> = f.iter().map(|&x| x as u64 * 7).collect();
        let w4: Vec<u32> = f.iter().map(|&x| x as u32).collect();
        let w2: Vec<u16> = f.iter().map(|&x| x as u16 * 300).collect();
        let mut want = [9.0f32; 6];
        broadcast_rows(&adv, &Mask::Flags(&f), 3, 1, &mut want);
        for m in [
            Mask::Wide(Wide::B8(&w8)),
            Mask::Wide(Wide::B4(&w4)),
            Mask::Wide(Wide::B2(&w2)),
        ] {
            let mut out = [9.0f32; 6];
            broadcast_rows(&adv, &m, 3, 1, &mut out);
            assert_eq!(out, want);
            let (mut c, mut fl) = ([0.0f64; 2], [9u8; 6]);
            row_weights(&m, 3, 1, &mut c, Some(&mut fl));
            assert_eq!(c, [2.0, 1.0]);
            assert_eq!(fl.to_vec(), f);
        }
        let mut c = [0.0f64; 2];
        row_weights::<f64>(
            &Mask::Values(&[0.5, 1.0, 0.0, 0.25, 0.0, 0.0]),
            3,
            1,
            &mut c,
            None,
        );
        assert_eq!(c, [1.5, 0.25]);
    }
}
