//! Reverse scans over each response's tokens: discounted returns and GAE (generalised
//! advantage estimation), parallel over responses.
//!
//! A response is a segment `offsets[i]..offsets[i + 1]` of the flat token arrays (padded
//! `(bs, L)` rows are segments of length L). Each scan runs from the last token back to the
//! first, in f64, and stores in `T`. Two rules for tokens outside the mask (weight m):
//!
//! * `Skip` (verl, `core_algos.py:250-257, 720-727`): the running return / GAE carry over the
//!   token unchanged, `run = new * m + run * (1 - m)`, and its output is `new * m` (returns) or
//!   the carried value (GAE);
//! * `Zero` (OpenRLHF, `experience_maker.py:366-376, 403-409`): rewards and values are
//!   multiplied by the mask first, and the scan runs over every token.

use crate::parallel::{resolve_threads, SERIAL_BELOW};
use crate::policy::{fault_error, AdvError, Fault};
use crate::real::Real;
use crate::stats::Moments;
use crate::token::Mask;
use crate::token::{Span, Weights};
use crate::whiten::slice_moments_w;
use std::ops::Range;

/// The masked moments of a scan's outputs, for a whitening that follows it (each response's
/// moments taken while it is in cache, merged in response order), or the first non-finite
/// masked output `(flat index, value)`.
pub type ScanMoments = Result<Moments, (usize, f64)>;

/// What a scan asked for statistics gives: the masked moments of its outputs and, for a 0/1
/// mask, each response's [`Span`].
pub type ScanStats = (ScanMoments, Option<Vec<Span>>);

/// What a token outside the response mask does in a scan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unmasked {
    Skip,
    Zero,
}

/// Parameters of a scan.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScanParams {
    pub gamma: f64,
    /// GAE's lambda (unused by discounted returns).
    pub lam: f64,
    pub unmasked: Unmasked,
    /// Report non-finite inputs and overflows (else they propagate as in the peers).
    pub check: bool,
    pub threads: usize,
}

/// Consecutive ranges of responses with about equal numbers of tokens, one per thread (one
/// in all for small inputs).
fn row_ranges(offsets: &[usize], threads: usize) -> Vec<Range<usize>> {
    let rows = offsets.len() - 1;
    let (base, total) = (offsets[0], offsets[rows] - offsets[0]);
    if threads <= 1 || total < SERIAL_BELOW || rows < 2 {
        return std::iter::once(0..rows).collect();
    }
    let pieces = threads.min(rows);
    let mut cuts = vec![0usize];
    for k in 1..pieces {
        let target = base + total * k / pieces;
        let r = offsets.partition_point(|&o| o < target).min(rows);
        cuts.push(r.max(*cuts.last().unwrap()));
    }
    cuts.push(rows);
    cuts.windows(2).map(|w| w[0]..w[1]).collect()
}

/// The error of a response whose outputs are not all finite: its first non-finite input
/// (the policy's `fault_error` over the response's tokens), else an overflow.
fn row_fault<T: Real>(
    rewards: &[T],
    values: Option<&[T]>,
    seg: Range<usize>,
    row: usize,
) -> AdvError {
    for (what, xs) in [("rewards", Some(rewards)), ("values", values)] {
        if let Some(xs) = xs {
            let e = fault_error(seg.clone(), |i| xs[i].to_f64(), row, Fault::NonFinite);
            if let AdvError::NonFinite { index, value } = e {
                return AdvError::TokenNonFinite { what, index, value };
            }
        }
    }
    AdvError::ReturnsOverflow { row }
}

/// Discounted returns `G_t = r_t + gamma * G_{t+1}` of every response (see the module doc
/// for masked tokens), into `out` (same length as `rewards`).
pub fn discounted_returns<T: Real>(
    rewards: &[T],
    mask: &Mask<'_, T>,
    offsets: &[usize],
    p: &ScanParams,
    out: &mut [T],
) -> Result<(), AdvError> {
    returns_fused(rewards, mask, offsets, p, out, None, false).map(|_| ())
}

/// Discounted returns into `out` in one pass that may also write `minus = (baselines, adv)`:
/// `adv[i] = ret[i] - baselines[row] * mask[i]`, each product and difference rounded to `T`
/// as torch computes it in `T` (verl remax), and with `stats` return the masked moments of
/// the returns (the statistics of a whitening that follows) and, for a 0/1 mask, each
/// response's [`Span`] (so that the whitening's write reads no mask where it is one run).
pub fn returns_fused<T: Real>(
    rewards: &[T],
    mask: &Mask<'_, T>,
    offsets: &[usize],
    p: &ScanParams,
    out: &mut [T],
    minus: Option<(&[T], &mut [T])>,
    stats: bool,
) -> Result<Option<ScanStats>, AdvError> {
    assert_eq!(rewards.len(), out.len());
    let threads = resolve_threads(p.threads);
    let (baselines, adv) = match minus {
        Some((b, a)) => {
            assert!(b.len() + 1 == offsets.len() && a.len() == out.len());
            (Some(b), Some(a))
        }
        None => (None, None),
    };
    let results = crate::with_weights!(mask, w => returns_rows(rewards, &w, offsets, p, threads, out, baselines, adv, stats));
    finish(results, stats)
}

/// What one thread's responses gave: their first error, and (when asked) each response's
/// masked moments and, for a 0/1 mask, its span.
struct Rows {
    err: Option<AdvError>,
    moments: Vec<ScanMoments>,
    spans: Option<Vec<Span>>,
}

/// The rows of [`returns_fused`], compiled for one mask kind.
#[allow(clippy::too_many_arguments)]
fn returns_rows<T: Real, W: Weights>(
    rewards: &[T],
    w: &W,
    offsets: &[usize],
    p: &ScanParams,
    threads: usize,
    out: &mut [T],
    baselines: Option<&[T]>,
    adv: Option<&mut [T]>,
    stats: bool,
) -> Vec<Rows> {
    let g = p.gamma;
    // 0/1 weights (flags, no mask) with checked inputs: a select carries the running value
    // (equal to the blend, up to the sign of a zero; unchecked non-finite inputs keep the
    // blend, whose NaN spreads as the peers')
    let select = W::BINARY && p.check;
    over_rows(offsets, threads, out, adv, |rows, o, mut adv| {
        let start = offsets[rows.start];
        let mut moments = Vec::new();
        // spans of a 0/1 mask (taken while the response's flags are in cache)
        let mut spans = (stats && W::BINARY).then(Vec::new);
        for row in rows {
            let seg = offsets[row]..offsets[row + 1];
            let b = baselines.map_or(0.0, |b| b[row].to_f64());
            let mut run = 0.0f64;
            let mut finite = true;
            for i in seg.clone().rev() {
                let m = w.at(i);
                let r = rewards[i].to_f64();
                let v = match p.unmasked {
                    Unmasked::Skip => {
                        let new = r + g * run;
                        run = if select {
                            // 0/1 flags, inputs checked: the carried value without the
                            // weighted blend's two roundings on the critical path
                            if m != 0.0 {
                                new
                            } else {
                                run
                            }
                        } else {
                            new * m + run * (1.0 - m)
                        };
                        new * m
                    }
                    Unmasked::Zero => {
                        run = r * m + g * run;
                        run
                    }
                };
                let t = T::from_f64(v);
                finite &= t.to_f64().is_finite();
                o[i - start] = t;
                if let Some(a) = adv.as_deref_mut() {
                    let base = T::from_f64(b * m).to_f64();
                    a[i - start] = T::from_f64(t.to_f64() - base);
                }
            }
            if p.check && !finite {
                return Rows {
                    err: Some(row_fault(rewards, None, seg, row)),
                    moments,
                    spans,
                };
            }
            if stats {
                let local = seg.start - start..seg.end - start;
                moments.push(slice_moments_w(&o[local], w, seg.start));
            }
            if let Some(sp) = spans.as_mut() {
                sp.push(Span::of(w, seg.start, seg.len()).0);
            }
        }
        Rows {
            err: None,
            moments,
            spans,
        }
    })
}

/// The first error of the pieces, else the merged moments (when asked for) and the spans
/// (when gathered).
fn finish(results: Vec<Rows>, stats: bool) -> Result<Option<ScanStats>, AdvError> {
    if let Some(e) = results.iter().find_map(|r| r.err.clone()) {
        return Err(e);
    }
    if !stats {
        return Ok(None);
    }
    let spans = if results.iter().all(|r| r.spans.is_some()) {
        Some(
            results
                .iter()
                .flat_map(|r| r.spans.iter().flatten().copied())
                .collect(),
        )
    } else {
        None
    };
    // merged in response order: the statistics do not depend on the thread count
    let mut acc = Moments::EMPTY;
    for m in results.into_iter().flat_map(|r| r.moments) {
        match m {
            Ok(m) => acc = acc.merge(m),
            Err(e) => return Ok(Some((Err(e), spans))),
        }
    }
    Ok(Some((Ok(acc), spans)))
}

/// Run `work(responses, a, b)` over consecutive pieces of responses with about equal token
/// counts, `a` and `b` (when given) cut at the same responses, one piece per thread;
/// results in order.
fn over_rows<T: Send, R: Send>(
    offsets: &[usize],
    threads: usize,
    a: &mut [T],
    b: Option<&mut [T]>,
    work: impl Fn(Range<usize>, &mut [T], Option<&mut [T]>) -> R + Sync + Send,
) -> Vec<R> {
    let ranges = row_ranges(offsets, threads);
    let base = offsets[0];
    let cuts: Vec<usize> = ranges
        .iter()
        .map(|r| offsets[r.start] - base)
        .chain(std::iter::once(offsets[offsets.len() - 1] - base))
        .collect();
    let pa = split_pieces(a, &cuts);
    let pb: Vec<Option<&mut [T]>> = match b {
        Some(b) => split_pieces(b, &cuts).into_iter().map(Some).collect(),
        None => (0..ranges.len()).map(|_| None).collect(),
    };
    if ranges.len() == 1 {
        return ranges
            .into_iter()
            .zip(pa)
            .zip(pb)
            .map(|((r, a), b)| work(r, a, b))
            .collect();
    }
    let items: Vec<_> = ranges.into_iter().zip(pa).zip(pb).collect();
    crate::parallel::map_owned(threads, items, |((r, a), b)| work(r, a, b))
}

/// `out[cuts[k]..cuts[k + 1]]` as separate mutable pieces.
fn split_pieces<'a, T>(out: &'a mut [T], cuts: &[usize]) -> Vec<&'a mut [T]> {
    let mut rest = out;
    let mut pieces = Vec::with_capacity(cuts.len().saturating_sub(1));
    for w in cuts.windows(2) {
        let (piece, tail) = std::mem::take(&mut rest).split_at_mut(w[1] - w[0]);
        pieces.push(piece);
        rest = tail;
    }
    pieces
}

/// GAE of every response: `delta_t = r_t + gamma * V_next - V_t`,
/// `A_t = delta_t + gamma * lam * A_next`, returns `A_t + V_t` (values times the mask under
/// `Zero`), into `adv` and `ret`. Under `Skip`, `V_next` / `A_next` are those of the next
/// masked token (verl); under `Zero` of the next token (OpenRLHF).
pub fn gae<T: Real>(
    rewards: &[T],
    values: &[T],
    mask: &Mask<'_, T>,
    offsets: &[usize],
    p: &ScanParams,
    adv: &mut [T],
    ret: &mut [T],
) -> Result<(), AdvError> {
    gae_fused(rewards, values, mask, offsets, p, adv, ret, false).map(|_| ())
}

/// As [`gae`], with `stats` also returning the masked moments of the advantages (for verl's
/// whitening of them), gathered in the same pass.
#[allow(clippy::too_many_arguments)]
pub fn gae_fused<T: Real>(
    rewards: &[T],
    values: &[T],
    mask: &Mask<'_, T>,
    offsets: &[usize],
    p: &ScanParams,
    adv: &mut [T],
    ret: &mut [T],
    stats: bool,
) -> Result<Option<ScanMoments>, AdvError> {
    let n = rewards.len();
    assert!(values.len() == n && adv.len() == n && ret.len() == n);
    let threads = resolve_threads(p.threads);
    let results = crate::with_weights!(mask, w => gae_rows(rewards, values, &w, offsets, p, threads, adv, ret, stats));
    Ok(finish(results, stats)?.map(|(m, _)| m))
}

/// The rows of [`gae_fused`], compiled for one mask kind.
#[allow(clippy::too_many_arguments)]
fn gae_rows<T: Real, W: Weights>(
    rewards: &[T],
    values: &[T],
    w: &W,
    offsets: &[usize],
    p: &ScanParams,
    threads: usize,
    adv: &mut [T],
    ret: &mut [T],
    stats: bool,
) -> Vec<Rows> {
    let select = W::BINARY && p.check; // as in `returns_rows`
    let work = |rows: Range<usize>, a: &mut [T], rt: Option<&mut [T]>| {
        let rt = rt.expect("gae writes two outputs");
        let start = offsets[rows.start];
        let (g, gl) = (p.gamma, p.gamma * p.lam);
        let mut moments = Vec::new();
        for row in rows {
            let seg = offsets[row]..offsets[row + 1];
            let (mut next_v, mut last) = (0.0f64, 0.0f64);
            let mut finite = true;
            for i in seg.clone().rev() {
                let m = w.at(i);
                let (r, v) = (rewards[i].to_f64(), values[i].to_f64());
                let (av, rv) = match p.unmasked {
                    Unmasked::Skip => {
                        let delta = r + g * next_v - v;
                        let new = delta + gl * last;
                        if select {
                            if m != 0.0 {
                                (next_v, last) = (v, new);
                            }
                        } else {
                            next_v = v * m + (1.0 - m) * next_v;
                            last = new * m + (1.0 - m) * last;
                        }
                        (last, last + v)
                    }
                    Unmasked::Zero => {
                        let (rm, vm) = (r * m, v * m);
                        last = rm + g * next_v - vm + gl * last;
                        next_v = vm;
                        (last, last + vm)
                    }
                };
                let (ta, tr) = (T::from_f64(av), T::from_f64(rv));
                finite &= ta.to_f64().is_finite() && tr.to_f64().is_finite();
                a[i - start] = ta;
                rt[i - start] = tr;
            }
            if p.check && !finite {
                return Rows {
                    err: Some(row_fault(rewards, Some(values), seg, row)),
                    moments,
                    spans: None,
                };
            }
            if stats {
                let local = seg.start - start..seg.end - start;
                moments.push(slice_moments_w(&a[local], w, seg.start));
            }
        }
        Rows {
            err: None,
            moments,
            spans: None,
        }
    };
    over_rows(offsets, threads, adv, Some(ret), work)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(gamma: f64, lam: f64, unmasked: Unmasked, threads: usize) -> ScanParams {
        ScanParams {
            gamma,
            lam,
            unmasked,
            check: true,
            threads,
        }
    }

    #[test]
    fn returns_skip_and_zero() {
        // one row: rewards 1, 2, 3, 4 with the third token outside the mask
        let r = [1.0f64, 2.0, 3.0, 4.0];
        let m = [1u8, 1, 0, 1];
        let mut out = [0.0; 4];
        let p = params(0.5, 1.0, Unmasked::Skip, 1);
        discounted_returns(&r, &Mask::Flags(&m), &[0, 4], &p, &mut out).unwrap();
        // skip: G3 = 4, token 2 carries 4 (output 0), G1 = 2 + 0.5*4, G0 = 1 + 0.5*G1
        assert_eq!(out, [3.0, 4.0, 0.0, 4.0]);
        let p = params(0.5, 1.0, Unmasked::Zero, 1);
        discounted_returns(&r, &Mask::Flags(&m), &[0, 4], &p, &mut out).unwrap();
        // zero: G3 = 4, G2 = 0 + 2, G1 = 2 + 1, G0 = 1 + 1.5
        assert_eq!(out, [2.5, 3.0, 2.0, 4.0]);
    }

    #[test]
    fn gae_with_gamma_lam_one_is_returns_minus_values() {
        let r = [0.0f64, 0.0, 1.0, 0.0, 2.0, 0.0];
        let v = [0.5f64, 0.25, 0.75, 1.0, 0.5, 9.0];
        let m = [1u8, 1, 1, 1, 1, 0];
        let (mut a, mut rt) = ([0.0; 6], [0.0; 6]);
        let p = params(1.0, 1.0, Unmasked::Skip, 1);
        gae(&r, &v, &Mask::Flags(&m), &[0, 3, 6], &p, &mut a, &mut rt).unwrap();
        assert_eq!(&a[..3], &[0.5, 0.75, 0.25]);
        assert_eq!(&a[3..5], &[1.0, 1.5]);
        assert_eq!(a[5], 0.0); // trailing padding: nothing carried yet
        assert_eq!(rt[5], 9.0); // returns = adv + values, as verl
    }

    #[test]
    fn parallel_equals_serial_and_errors_name_the_input() {
        let (rows, width) = (400usize, 700usize);
        let n = rows * width;
        let r: Vec<f32> = (0..n).map(|i| ((i * 13) % 17) as f32 * 0.1 - 0.8).collect();
        let v: Vec<f32> = (0..n).map(|i| ((i * 7) % 11) as f32 * 0.05).collect();
        let m: Vec<u8> = (0..n)
            .map(|i| (i % width < 100 + (i / width) % 500) as u8)
            .collect();
        let offs: Vec<usize> = (0..=rows).map(|i| i * width).collect();
        for un in [Unmasked::Skip, Unmasked::Zero] {
            let (mut a1, mut r1, mut a2, mut r2) =
                (vec![0.0; n], vec![0.0; n], vec![0.0; n], vec![0.0; n]);
            gae(
                &r,
                &v,
                &Mask::Flags(&m),
                &offs,
                &params(0.99, 0.95, un, 1),
                &mut a1,
                &mut r1,
            )
            .unwrap();
            gae(
                &r,
                &v,
                &Mask::Flags(&m),
                &offs,
                &params(0.99, 0.95, un, 3),
                &mut a2,
                &mut r2,
            )
            .unwrap();
            assert_eq!((a1, r1), (a2, r2));
            let (mut o1, mut o2) = (vec![0.0; n], vec![0.0; n]);
            discounted_returns(
                &r,
                &Mask::Flags(&m),
                &offs,
                &params(0.9, 1.0, un, 1),
                &mut o1,
            )
            .unwrap();
            discounted_returns(
                &r,
                &Mask::Flags(&m),
                &offs,
                &params(0.9, 1.0, un, 3),
                &mut o2,
            )
            .unwrap();
            assert_eq!(o1, o2);
        }
        let mut bad = r.clone();
        bad[5 * width + 3] = f32::NAN;
        let mut o = vec![0.0; n];
        let e = discounted_returns(
            &bad,
            &Mask::None,
            &offs,
            &params(1.0, 1.0, Unmasked::Skip, 2),
            &mut o,
        );
        assert!(
            matches!(e, Err(AdvError::TokenNonFinite { what: "rewards", index, .. }) if index == 5 * width + 3)
        );
        let big = [3e38f32, 3e38];
        let mut o = [0.0f32; 2];
        let e = discounted_returns(
            &big,
            &Mask::None,
            &[0, 2],
            &params(1.0, 1.0, Unmasked::Skip, 1),
            &mut o,
        );
        assert_eq!(e, Err(AdvError::ReturnsOverflow { row: 0 }));
    }

    #[test]
    fn fused_passes_equal_the_separate_ones() {
        use crate::whiten::{masked_moments, WhitenParams};
        let (rows, width) = (300usize, 500usize);
        let n = rows * width;
        let r: Vec<f32> = (0..n).map(|i| ((i * 13) % 17) as f32 * 0.1 - 0.8).collect();
        let v: Vec<f32> = (0..n).map(|i| ((i * 7) % 11) as f32 * 0.05).collect();
        let m: Vec<u64> = (0..n)
            .map(|i| (i % width < 50 + (i / width) % 400) as u64)
            .collect();
        let mask = Mask::Wide(crate::token::Wide::B8(&m));
        let offs: Vec<usize> = (0..=rows).map(|i| i * width).collect();
        for threads in [1, 3] {
            let p = params(0.99, 0.95, Unmasked::Skip, threads);
            let (mut a, mut rt, mut a2, mut rt2) =
                (vec![0.0; n], vec![0.0; n], vec![0.0; n], vec![0.0; n]);
            gae(&r, &v, &mask, &offs, &p, &mut a, &mut rt).unwrap();
            let st = gae_fused(&r, &v, &mask, &offs, &p, &mut a2, &mut rt2, true)
                .unwrap()
                .unwrap()
                .unwrap();
            assert_eq!((&a, &rt), (&a2, &rt2));
            let whole = masked_moments(&a, &mask, 1).unwrap();
            assert_eq!(st.count, whole.count);
            assert!((st.mean - whole.mean).abs() < 1e-12);
            assert!((st.m2 / whole.m2 - 1.0).abs() < 1e-12);
            // the gathered statistics do not depend on the thread count
            let st1 = gae_fused(
                &r,
                &v,
                &mask,
                &offs,
                &params(0.99, 0.95, Unmasked::Skip, 1),
                &mut a2,
                &mut rt2,
                true,
            )
            .unwrap();
            assert_eq!(st1, Some(Ok(st)));
            let _ = WhitenParams::default();
            // remax: returns and `ret - b * m` in one pass
            let b: Vec<f32> = (0..rows).map(|i| i as f32 * 0.01 - 1.0).collect();
            let pz = params(1.0, 1.0, Unmasked::Zero, threads);
            let (mut ret, mut adv) = (vec![0.0f32; n], vec![0.0f32; n]);
            returns_fused(&r, &mask, &offs, &pz, &mut ret, Some((&b, &mut adv)), false).unwrap();
            let mut want = vec![0.0f32; n];
            discounted_returns(&r, &mask, &offs, &pz, &mut want).unwrap();
            assert_eq!(ret, want);
            for i in 0..n {
                let base = if m[i] != 0 {
                    b[i / width]
                } else {
                    0.0 * b[i / width]
                };
                assert_eq!(adv[i], ret[i] - base);
            }
        }
    }
}
