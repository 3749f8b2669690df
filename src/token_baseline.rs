//! The optimal token baseline (verl 0.9.1 `optimal_token_baseline` and
//! `tir_optimal_token_baseline`, `verl/trainer/ppo/core_algos.py` 871-1121): a baseline per
//! time step of each group, weighted by each response's cumulative path variance.
//!
//! For response i of a group, with mask m, rewards r, old log-probs lp, sum_pi_squared q and
//! optional rollout importance weights rho (all of shape (bs, L), rows contiguous):
//!
//! ```text
//! G_i[t] = sum_{s >= t} r_i[s] m_i[s]                      (returns, reward-to-go)
//! w_i[t] = (1 - 2 exp(lp_i[t]) + q_i[t]) * rho_i[t]^2       (path-variance proxy)
//! W_i[t] = sum_{s <= t} w_i[s] m_i[s]                       (cumulative)
//! b[k]   = sum_i G_i W_i m_i / (sum_i W_i m_i + eps)          (over the group, at step k)
//! A_i[t] = (G_i[t] - b[k(t)]) m_i[t]
//! ```
//!
//! `Align::Position` (optimal_token_baseline): step k is the column t. `Align::Turn`
//! (tir_optimal_token_baseline, multi-turn / tool interaction): step k is the rank of t among
//! the response's valid tokens (its masked tool tokens are skipped), responses without valid
//! tokens are left out of their group and get 0 everywhere, and masked tokens get 0.
//! A group of one response gets baseline 0 (A = G). With `handle_zero_tail`, the unique
//! longest response of a group gets baseline 0 from the second-longest length on.
//!
//! Everything is summed in f64. One deliberate difference from verl: at a step where every
//! response that carries weight (W m != 0) has the same return, the baseline is that return
//! exactly (the policy's exact-0 rule: no spread, no signal), where verl's `+ eps` and float32
//! rounding leave noise of order G eps / sum W.

use crate::parallel::{map_on, resolve_threads, SERIAL_BELOW};
use crate::policy::{AdvError, NonFinite};
use crate::real::Real;
use std::ops::Range;

/// Where a response's time step meets the others' in the group baseline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Align {
    /// By column (verl `optimal_token_baseline`).
    Position,
    /// By rank among the valid tokens (verl `tir_optimal_token_baseline`).
    Turn,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Params {
    pub align: Align,
    pub handle_zero_tail: bool,
    pub eps: f64,
    /// `Raise` or `Propagate` (verl's arithmetic); `Omit` is not defined here.
    pub nonfinite: NonFinite,
    /// 0: the default thread count.
    pub threads: usize,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            align: Align::Position,
            handle_zero_tail: true,
            eps: 1e-8,
            nonfinite: NonFinite::Raise,
            threads: 0,
        }
    }
}

/// An element of a response mask, read as verl multiplies by it: only 0 and 1 are valid.
pub trait MaskValue: Copy + Send + Sync + 'static {
    fn to_f64(self) -> f64;
}

macro_rules! mask_value {
    ($($t:ty),*) => {$(
        impl MaskValue for $t {
            #[inline(always)]
            fn to_f64(self) -> f64 {
                self as f64
            }
        }
    )*};
}
mask_value!(u8, i32, i64, f32, f64);

/// The (bs, L) inputs, row-major; `mask` must hold only 0 and 1 (checked).
#[derive(Clone, Copy)]
pub struct Inputs<'a, T, M = u8> {
    pub rows: usize,
    pub width: usize,
    pub rewards: &'a [T],
    pub mask: &'a [M],
    pub old_log_probs: &'a [T],
    pub sum_pi_squared: &'a [T],
    pub is_weights: Option<&'a [T]>,
}

/// The output rows, shared by the workers: each writes only the rows of its own groups.
struct Rows<T> {
    ptr: *mut T,
    len: usize,
}
// SAFETY: the pointer is only used to write disjoint rows (each row belongs to one group,
// each group to one worker), while the owning slice is borrowed mutably by `compute`.
unsafe impl<T: Send> Send for Rows<T> {}
// SAFETY: as above: no two workers touch the same row.
unsafe impl<T: Send> Sync for Rows<T> {}

impl<T> Rows<T> {
    fn new(out: &mut [T]) -> Rows<T> {
        Rows {
            ptr: out.as_mut_ptr(),
            len: out.len(),
        }
    }
    /// Row `i` of width `w`.
    ///
    /// # Safety
    /// No other reference to that row may be alive (the caller owns row `i`'s group).
    #[allow(clippy::mut_from_ref)]
    unsafe fn row(&self, i: usize, w: usize) -> &mut [T] {
        assert!((i + 1) * w <= self.len);
        // SAFETY: in bounds (checked above); exclusive by the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(i * w), w) }
    }
}

fn check<M>(
    inp: &Inputs<'_, impl Real, M>,
    codes: &[u32],
    n_groups: usize,
) -> Result<(), AdvError> {
    let n = inp.rows * inp.width;
    let lens = [
        ("token_level_rewards", inp.rewards.len()),
        ("response_mask", inp.mask.len()),
        ("old_log_probs", inp.old_log_probs.len()),
        ("sum_pi_squared", inp.sum_pi_squared.len()),
        ("rollout_is_weights", inp.is_weights.map_or(n, |w| w.len())),
    ];
    for (what, len) in lens {
        if len != n {
            return Err(AdvError::BadParameter(format!(
                "{what} has {len} elements, expected {} x {} = {n}",
                inp.rows, inp.width
            )));
        }
    }
    if codes.len() != inp.rows {
        return Err(AdvError::LengthMismatch {
            what: "the group labels",
            len: codes.len(),
            n: inp.rows,
        });
    }
    if let Some(&c) = codes.iter().find(|&&c| c as usize >= n_groups) {
        return Err(AdvError::BadParameter(format!(
            "group code {c} is out of range for {n_groups} groups"
        )));
    }
    Ok(())
}

/// The rows of every group, group after group (input order within a group), and where each
/// group starts in that list: a counting sort of the codes.
fn members(codes: &[u32], n_groups: usize) -> (Vec<usize>, Vec<usize>) {
    let mut start = vec![0usize; n_groups + 1];
    for &c in codes {
        start[c as usize + 1] += 1;
    }
    for g in 0..n_groups {
        start[g + 1] += start[g];
    }
    let mut next = start.clone();
    let mut rows = vec![0usize; codes.len()];
    for (i, &c) in codes.iter().enumerate() {
        rows[next[c as usize]] = i;
        next[c as usize] += 1;
    }
    (rows, start)
}

/// e^x in f64, within 1 ulp of `f64::exp`, written without branches or calls so that the
/// w loop vectorizes (libm's exp, a call per token, took a third of the estimator's time).
/// Range reduction x = k ln2 + r (|r| <= ln2 / 2), a degree-13 Taylor polynomial (truncation
/// below 1e-17), then 2^k in two exact steps (so that subnormal results round once).
/// NaN gives NaN, +inf gives inf, -inf gives 0.
#[inline(always)]
fn exp(x: f64) -> f64 {
    const INV_LN2: f64 = std::f64::consts::LOG2_E;
    const LN2_HI: f64 = 6.931_471_803_691_238e-1;
    const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
    const ROUND: f64 = 6_755_399_441_055_744.0; // 1.5 * 2^52: adding it rounds to an integer
    let xc = x.clamp(-745.2, 709.8);
    let kd = xc * INV_LN2 + ROUND;
    let k = kd.to_bits() as i64 - ROUND.to_bits() as i64;
    let kf = kd - ROUND;
    let r = (xc - kf * LN2_HI) - kf * LN2_LO;
    const C: [f64; 12] = [
        1.0 / 2.0,
        1.0 / 6.0,
        1.0 / 24.0,
        1.0 / 120.0,
        1.0 / 720.0,
        1.0 / 5040.0,
        1.0 / 40320.0,
        1.0 / 362880.0,
        1.0 / 3628800.0,
        1.0 / 39916800.0,
        1.0 / 479001600.0,
        1.0 / 6227020800.0,
    ];
    let mut p = C[11];
    for c in C[..11].iter().rev() {
        p = p * r + c;
    }
    let p = 1.0 + r * (1.0 + r * p);
    // k = k1 + k2 with k1 = round(k / 2), by the same rounding trick (integer ops only:
    // AVX2 has no 64-bit arithmetic shift).
    let k1 = (kf * 0.5 + ROUND).to_bits() as i64 - ROUND.to_bits() as i64;
    let k2 = k - k1;
    let s1 = f64::from_bits(((k1 + 1023) as u64) << 52);
    let s2 = f64::from_bits(((k2 + 1023) as u64) << 52);
    p * s1 * s2
}

/// w[t] = (1 - 2 exp(lp[t]) + q[t]) * rho[t]^2 for one row, with AVX2 where the CPU has it
/// (the same arithmetic, four lanes at a time: no fused multiply-add, so the same bits).
fn weights<T: Real>(lp: &[T], q: &[T], rho: Option<&[T]>, out: &mut [f64]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        unsafe { weights_avx2(lp, q, rho, out) };
        return;
    }
    weights_generic(lp, q, rho, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn weights_avx2<T: Real>(lp: &[T], q: &[T], rho: Option<&[T]>, out: &mut [f64]) {
    weights_generic(lp, q, rho, out)
}

#[inline(always)]
fn weights_generic<T: Real>(lp: &[T], q: &[T], rho: Option<&[T]>, out: &mut [f64]) {
    let n = out.len();
    let (lp, q) = (&lp[..n], &q[..n]);
    match rho {
        None => {
            for t in 0..n {
                out[t] = 1.0 - 2.0 * exp(lp[t].to_f64()) + q[t].to_f64();
            }
        }
        Some(rho) => {
            let rho = &rho[..n];
            for t in 0..n {
                let x = rho[t].to_f64();
                out[t] = (1.0 - 2.0 * exp(lp[t].to_f64()) + q[t].to_f64()) * (x * x);
            }
        }
    }
}

/// Per-thread buffers, reused group after group.
struct Scratch {
    /// G of the group's rows, row after row (f64, kept for the write pass).
    returns: Vec<f64>,
    /// W of the row being read.
    w: Vec<f64>,
    /// Turn alignment: the row's returns and W at its valid tokens, in order.
    gc: Vec<f64>,
    wc: Vec<f64>,
    /// Position alignment: the row's mask as f64.
    mrow: Vec<f64>,
    num: Vec<f64>,
    den: Vec<f64>,
    /// The smallest and largest return among the weight-carrying responses at each step
    /// (lo > hi: none yet); equal: the exact-0 rule.
    lo: Vec<f64>,
    hi: Vec<f64>,
    /// The group's baseline per step.
    b: Vec<f64>,
}

impl Scratch {
    fn new(w: usize) -> Scratch {
        let z = || vec![0.0; w];
        Scratch {
            returns: Vec::new(),
            w: z(),
            gc: z(),
            wc: z(),
            mrow: z(),
            num: z(),
            den: z(),
            lo: z(),
            hi: z(),
            b: z(),
        }
    }
}

/// Advantages and returns of the optimal token baseline, into `adv` and `returns` (both
/// rows x width). `codes[i]` is row i's group (dense, < n_groups).
pub fn compute<T: Real, M: MaskValue>(
    inp: &Inputs<'_, T, M>,
    codes: &[u32],
    n_groups: usize,
    p: &Params,
    adv: &mut [T],
    returns: &mut [T],
) -> Result<(), AdvError> {
    check(inp, codes, n_groups)?;
    if p.nonfinite == NonFinite::Omit {
        return Err(AdvError::BadParameter(
            "the optimal token baseline takes nan='raise' or 'propagate'".into(),
        ));
    }
    let n = inp.rows * inp.width;
    if adv.len() != n || returns.len() != n {
        return Err(AdvError::BadParameter(format!(
            "the outputs must hold {n} elements"
        )));
    }
    if n == 0 {
        return Ok(());
    }
    let (rows, start) = members(codes, n_groups);
    let threads = resolve_threads(p.threads);
    let ranges = group_batches(&start, inp.width, threads);
    let (a, r) = (Rows::new(adv), Rows::new(returns));
    let results = map_on(threads, ranges, |gs: Range<usize>| {
        let w = inp.width;
        let mut s = Scratch::new(w);
        // Every group is computed; the fault of the earliest row is kept (a group stops at
        // its first faulty row, which is its earliest: members are in row order).
        let mut fault: Option<(usize, AdvError)> = None;
        for g in gs {
            if let Err(e) = group(inp, &rows[start[g]..start[g + 1]], p, &mut s, &a, &r) {
                if fault.as_ref().is_none_or(|f| e.0 < f.0) {
                    fault = Some(e);
                }
            }
        }
        fault.map_or(Ok(()), Err)
    });
    // The error of the earliest row (deterministic whatever the thread count).
    results
        .into_iter()
        .filter_map(Result::err)
        .min_by_key(|e: &(usize, AdvError)| e.0)
        .map_or(Ok(()), |(_, e)| Err(e))
}

/// Consecutive ranges of groups of about equal work, one per worker batch.
fn group_batches(start: &[usize], width: usize, threads: usize) -> Vec<Range<usize>> {
    let k = start.len() - 1;
    let rows = start[k];
    if threads <= 1 || rows * width < SERIAL_BELOW || k <= 1 {
        return std::iter::once(0..k).collect();
    }
    let batches = (threads * 4).min(k);
    let mut out = Vec::with_capacity(batches);
    let mut g0 = 0;
    for b in 1..=batches {
        let target = rows * b / batches;
        let g1 = if b == batches {
            k
        } else {
            start.partition_point(|&s| s < target).clamp(g0, k)
        };
        if g1 > g0 {
            out.push(g0..g1);
        }
        g0 = g1;
    }
    out
}

/// The error naming the first non-finite element of `x` in row `i` (None: all finite).
fn first_bad<T: Real>(x: &[T], i: usize, w: usize) -> Option<(usize, f64)> {
    x[i * w..(i + 1) * w]
        .iter()
        .position(|v| !v.to_f64().is_finite())
        .map(|t| (t, x[i * w + t].to_f64()))
}

/// Why row `i`'s path-variance weights are not finite (under `Raise`).
fn weight_error<T: Real, M>(inp: &Inputs<'_, T, M>, i: usize) -> AdvError {
    let w = inp.width;
    let named = [
        ("old_log_probs", Some(inp.old_log_probs)),
        ("sum_pi_squared", Some(inp.sum_pi_squared)),
        ("rollout_is_weights", inp.is_weights),
    ];
    for (what, x) in named {
        if let Some((t, v)) = x.and_then(|x| first_bad(x, i, w)) {
            if !(what == "old_log_probs" && v == f64::NEG_INFINITY) {
                return AdvError::BadParameter(format!(
                    "{what}[{i}, {t}] is {v}; the path-variance weights must be finite \
                     (pass nan='propagate' to let it spread as verl does)"
                ));
            }
        }
    }
    AdvError::BadParameter(format!(
        "the path-variance weights of response {i} overflow float64; rescale \
         rollout_is_weights"
    ))
}

/// Add one response's steps to the group's sums: `g` its returns, `w` its cumulative
/// weights, `m` its mask (None: all valid). Branch-free, so that it vectorizes.
#[inline(always)]
fn accumulate(s: &mut Scratch, n: usize, g: &[f64], w: &[f64], m: Option<&[f64]>) {
    let (num, den) = (&mut s.num[..n], &mut s.den[..n]);
    let (lo, hi) = (&mut s.lo[..n], &mut s.hi[..n]);
    let (g, w) = (&g[..n], &w[..n]);
    for k in 0..n {
        let wm = match m {
            Some(m) => w[k] * m[k],
            None => w[k],
        };
        num[k] += g[k] * wm;
        den[k] += wm;
        let carries = wm != 0.0;
        lo[k] = if carries { lo[k].min(g[k]) } else { lo[k] };
        hi[k] = if carries { hi[k].max(g[k]) } else { hi[k] };
    }
}

/// One group: returns and cumulative weights row by row (accumulating the baseline sums),
/// the baseline per step, then the advantages.
fn group<T: Real, M: MaskValue>(
    inp: &Inputs<'_, T, M>,
    members: &[usize],
    p: &Params,
    s: &mut Scratch,
    adv: &Rows<T>,
    ret: &Rows<T>,
) -> Result<(), (usize, AdvError)> {
    let w = inp.width;
    let turn = p.align == Align::Turn;
    s.returns.resize(members.len() * w, 0.0);
    s.num.fill(0.0);
    s.den.fill(0.0);
    s.lo.fill(f64::INFINITY);
    s.hi.fill(f64::NEG_INFINITY);
    let raise = p.nonfinite == NonFinite::Raise;
    // Valid-token counts, and how many responses take part (Turn: those with a valid token).
    let mut longest = (0usize, 0usize, 0usize); // (max, second max, rows with the max)
    let mut which = 0usize;
    let mut taking_part = 0usize;
    for (j, &i) in members.iter().enumerate() {
        let m = &inp.mask[i * w..(i + 1) * w];
        let r = &inp.rewards[i * w..(i + 1) * w];
        let lp = &inp.old_log_probs[i * w..(i + 1) * w];
        let q = &inp.sum_pi_squared[i * w..(i + 1) * w];
        let rho = inp.is_weights.map(|x| &x[i * w..(i + 1) * w]);
        if let Some(t) = m.iter().position(|v| !matches!(v.to_f64(), 0.0 | 1.0)) {
            let v = m[t].to_f64();
            return Err((
                i,
                AdvError::BadParameter(format!(
                    "response_mask[{i}, {t}] is {v}; the mask must hold only 0 and 1"
                )),
            ));
        }
        // w per token first (no dependency between tokens: vectorizes), then W, the forward
        // cumulative sum of w m (verl's cumsum over all columns).
        let sw = &mut s.w;
        weights(lp, q, rho, sw);
        let mut acc = 0.0f64;
        let mut len = 0usize;
        for t in 0..w {
            let mt = m[t].to_f64();
            acc += sw[t] * mt;
            len += (mt != 0.0) as usize;
            sw[t] = acc;
        }
        if raise && !acc.is_finite() {
            return Err((i, weight_error(inp, i)));
        }
        // G: reverse cumulative sum of r m, written out and kept in f64.
        let g = &mut s.returns[j * w..(j + 1) * w];
        let mut sum = 0.0f64;
        for t in (0..w).rev() {
            sum += r[t].to_f64() * m[t].to_f64();
            g[t] = sum;
        }
        if raise && !sum.is_finite() {
            let e = match first_bad(inp.rewards, i, w) {
                Some((_, value)) => AdvError::NonFinite { index: i, value },
                None => {
                    AdvError::BadParameter(format!("the returns of response {i} overflow float64"))
                }
            };
            return Err((i, e));
        }
        // SAFETY: row i belongs to this group, handled by this worker only.
        let out = unsafe { ret.row(i, w) };
        for t in 0..w {
            out[t] = T::from_f64(g[t]);
        }
        if turn && len == 0 {
            continue; // left out of its group (verl: no valid token, no baseline)
        }
        taking_part += 1;
        if len > longest.0 {
            longest = (len, longest.0, 1);
            which = j;
        } else if len == longest.0 {
            longest.2 += 1;
        } else if len > longest.1 {
            longest.1 = len;
        }
        let g = &s.returns[j * w..(j + 1) * w];
        if turn {
            // Step k is the k-th valid token.
            let mut k = 0usize;
            for t in 0..w {
                if m[t].to_f64() != 0.0 {
                    s.gc[k] = g[t];
                    s.wc[k] = s.w[t];
                    k += 1;
                }
            }
            let (gc, wc) = (std::mem::take(&mut s.gc), std::mem::take(&mut s.wc));
            accumulate(s, len, &gc, &wc, None);
            (s.gc, s.wc) = (gc, wc);
        } else {
            for (x, v) in s.mrow.iter_mut().zip(m) {
                *x = v.to_f64();
            }
            let (gs, ws, ms) = (
                std::mem::take(&mut s.returns),
                std::mem::take(&mut s.w),
                std::mem::take(&mut s.mrow),
            );
            accumulate(s, w, &gs[j * w..(j + 1) * w], &ws, Some(&ms));
            (s.returns, s.w, s.mrow) = (gs, ws, ms);
        }
    }
    // The baseline per step: every weight-carrying return equal gives exactly that return
    // (unless a NaN took part: verl's arithmetic then), else verl's ratio.
    let baseline = taking_part >= 2;
    for k in 0..w {
        s.b[k] = if !baseline {
            0.0
        } else if s.lo[k] == s.hi[k] && !s.num[k].is_nan() {
            s.lo[k]
        } else {
            s.num[k] / (s.den[k] + p.eps)
        };
    }
    // The unique longest response loses its baseline beyond the second-longest length.
    let tail = if baseline && p.handle_zero_tail && longest.2 == 1 && longest.0 > longest.1 {
        Some((which, longest.1))
    } else {
        None
    };
    for (j, &i) in members.iter().enumerate() {
        let m = &inp.mask[i * w..(i + 1) * w];
        let g = &s.returns[j * w..(j + 1) * w];
        // SAFETY: as above.
        let out = unsafe { adv.row(i, w) };
        let cut = match tail {
            Some((jt, c)) if jt == j => c,
            _ => usize::MAX,
        };
        if turn {
            let mut k = 0usize;
            for t in 0..w {
                let mt = m[t].to_f64();
                out[t] = if mt == 0.0 {
                    T::zero()
                } else {
                    let b = if k >= cut { 0.0 } else { s.b[k] };
                    k += 1;
                    T::from_f64(g[t] - b)
                };
            }
        } else {
            let c = cut.min(w);
            for t in 0..c {
                out[t] = T::from_f64((g[t] - s.b[t]) * m[t].to_f64());
            }
            for t in c..w {
                out[t] = T::from_f64(g[t] * m[t].to_f64());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// verl's loops, transcribed literally in f64 (the reference of the tests below).
    #[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
    fn reference(
        bs: usize,
        l: usize,
        r: &[f64],
        m: &[u8],
        lp: &[f64],
        q: &[f64],
        rho: Option<&[f64]>,
        codes: &[u32],
        p: &Params,
    ) -> (Vec<f64>, Vec<f64>) {
        let mut g = vec![0.0; bs * l];
        let mut cw = vec![0.0; bs * l];
        for i in 0..bs {
            let mut s = 0.0;
            for t in (0..l).rev() {
                s += r[i * l + t] * m[i * l + t] as f64;
                g[i * l + t] = s;
            }
            let mut a = 0.0;
            for t in 0..l {
                let mut w = 1.0 - 2.0 * lp[i * l + t].exp() + q[i * l + t];
                if let Some(rho) = rho {
                    w *= rho[i * l + t] * rho[i * l + t];
                }
                a += w * m[i * l + t] as f64;
                cw[i * l + t] = a;
            }
        }
        // Compact (Turn) or keep (Position) each row's steps.
        let steps = |i: usize| -> Vec<usize> {
            (0..l)
                .filter(|&t| p.align == Align::Position || m[i * l + t] != 0)
                .collect()
        };
        let len = |i: usize| {
            m[i * l..(i + 1) * l]
                .iter()
                .map(|&x| x as usize)
                .sum::<usize>()
        };
        let mut adv = vec![0.0; bs * l];
        let ng = *codes.iter().max().unwrap() as usize + 1;
        for gi in 0..ng {
            let idx: Vec<usize> = (0..bs)
                .filter(|&i| codes[i] as usize == gi && (p.align == Align::Position || len(i) > 0))
                .collect();
            let mut base = vec![vec![0.0; l]; bs];
            if idx.len() >= 2 {
                for k in 0..l {
                    let (mut num, mut den) = (0.0, 0.0);
                    for &i in &idx {
                        if let Some(&t) = steps(i).get(k) {
                            num += g[i * l + t] * cw[i * l + t] * m[i * l + t] as f64;
                            den += cw[i * l + t] * m[i * l + t] as f64;
                        }
                    }
                    for &i in &idx {
                        base[i][k] = num / (den + p.eps);
                    }
                }
                if p.handle_zero_tail {
                    let mut ls: Vec<usize> = idx.iter().map(|&i| len(i)).collect();
                    ls.sort();
                    let (mx, second) = (ls[ls.len() - 1], ls[ls.len() - 2]);
                    let at: Vec<usize> = idx.iter().copied().filter(|&i| len(i) == mx).collect();
                    if at.len() == 1 && mx > second {
                        base[at[0]][second..].iter_mut().for_each(|b| *b = 0.0);
                    }
                }
            }
            for &i in &idx {
                for (k, &t) in steps(i).iter().enumerate() {
                    adv[i * l + t] = (g[i * l + t] - base[i][k]) * m[i * l + t] as f64;
                }
            }
        }
        (adv, g)
    }

    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> f64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    #[allow(clippy::type_complexity)]
    fn random(
        seed: u64,
        bs: usize,
        l: usize,
        holes: bool,
    ) -> (Vec<f64>, Vec<u8>, Vec<f64>, Vec<f64>, Vec<f64>, Vec<u32>) {
        let mut g = Lcg(seed);
        let mut r = vec![0.0; bs * l];
        let mut m = vec![0u8; bs * l];
        let mut lp = vec![0.0; bs * l];
        let mut q = vec![0.0; bs * l];
        let mut rho = vec![0.0; bs * l];
        let codes: Vec<u32> = (0..bs).map(|_| (g.next() * 4.0) as u32).collect();
        for i in 0..bs {
            let len = (g.next() * (l + 1) as f64) as usize;
            for t in 0..l {
                let valid = t < len && !(holes && g.next() < 0.3);
                m[i * l + t] = valid as u8;
                r[i * l + t] = if valid { g.next() - 0.5 } else { 0.0 };
                let pi = g.next();
                lp[i * l + t] = pi.ln();
                q[i * l + t] = pi * pi + g.next() * (1.0 - pi) * (1.0 - pi);
                rho[i * l + t] = 0.5 + g.next();
            }
        }
        (r, m, lp, q, rho, codes)
    }

    fn run(
        inp: &Inputs<'_, f64>,
        codes: &[u32],
        p: &Params,
    ) -> Result<(Vec<f64>, Vec<f64>), AdvError> {
        let n = inp.rows * inp.width;
        let (mut a, mut r) = (vec![0.0; n], vec![0.0; n]);
        let ng = codes.iter().max().map_or(0, |&c| c as usize + 1);
        compute(inp, codes, ng, p, &mut a, &mut r)?;
        Ok((a, r))
    }

    #[test]
    fn matches_verls_loops_both_alignments() {
        for seed in 0..40u64 {
            let (bs, l) = (13, 9);
            let (r, m, lp, q, rho, codes) = random(seed, bs, l, seed % 2 == 1);
            for align in [Align::Position, Align::Turn] {
                for tail in [true, false] {
                    for with_rho in [false, true] {
                        let p = Params {
                            align,
                            handle_zero_tail: tail,
                            threads: 1 + (seed as usize % 3),
                            ..Params::default()
                        };
                        let rho = with_rho.then_some(&rho[..]);
                        let inp = Inputs {
                            rows: bs,
                            width: l,
                            rewards: &r,
                            mask: &m,
                            old_log_probs: &lp,
                            sum_pi_squared: &q,
                            is_weights: rho,
                        };
                        let (a, g) = run(&inp, &codes, &p).unwrap();
                        let (wa, wg) = reference(bs, l, &r, &m, &lp, &q, rho, &codes, &p);
                        assert_eq!(g, wg);
                        for (x, y) in a.iter().zip(&wa) {
                            // Exactly 0 where every weighted return is equal (the
                            // deviation): verl's eps leaves G eps / sum W there.
                            let ok = (x - y).abs() <= 1e-9 * (1.0 + y.abs())
                                || (*x == 0.0 && y.abs() < 1e-5);
                            assert!(ok, "{x} {y}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn exp_is_within_one_ulp_of_libm() {
        let ulp = |v: f64| f64::from_bits(v.abs().to_bits() + 1) - v.abs();
        let mut g = Lcg(7);
        let mut xs: Vec<f64> = (0..200_000).map(|_| (g.next() - 0.9) * 800.0).collect();
        xs.extend((0..100_000).map(|_| -g.next() * 10.0));
        xs.extend([
            0.0, -0.0, 1e-300, -1e-20, 709.78, 709.79, -708.0, -744.0, -745.1, -745.2,
        ]);
        for x in xs {
            let (got, want) = (exp(x), x.exp());
            let ok = got == want || (got - want).abs() <= ulp(want).max(f64::from_bits(1));
            assert!(ok, "exp({x}) = {got}, libm {want}");
        }
        assert!(exp(f64::NAN).is_nan());
        assert_eq!(exp(f64::INFINITY), f64::INFINITY);
        assert_eq!(exp(f64::NEG_INFINITY), 0.0);
        assert_eq!(exp(710.0), f64::INFINITY);
        assert_eq!(exp(0.0), 1.0);
    }

    /// The AVX2 copy of the weights loop gives the generic loop's bits (no fused ops).
    #[test]
    fn weights_dispatch_is_bit_identical() {
        let mut g = Lcg(3);
        let n = 1031;
        let lp: Vec<f32> = (0..n).map(|_| (g.next() as f32).ln()).collect();
        let q: Vec<f32> = (0..n).map(|_| g.next() as f32).collect();
        let rho: Vec<f32> = (0..n).map(|_| 2.0 * g.next() as f32).collect();
        for r in [None, Some(&rho[..])] {
            let (mut a, mut b) = (vec![0.0; n], vec![0.0; n]);
            weights(&lp, &q, r, &mut a);
            weights_generic(&lp, &q, r, &mut b);
            assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
        }
    }

    #[test]
    fn equal_returns_give_exactly_zero_and_singletons_their_return() {
        // Two responses with the same rewards: verl's eps leaves G eps / sum W; here 0.
        let (l, r) = (3, [0.1f64, 0.0, 0.1, 0.1, 0.0, 0.1, 0.5, 0.25, 0.0]);
        let m = [1u8, 1, 1, 1, 1, 1, 1, 1, 0];
        let lp = [-0.5f64; 9];
        let q = [0.4f64; 9];
        let inp = Inputs {
            rows: 3,
            width: l,
            rewards: &r,
            mask: &m,
            old_log_probs: &lp,
            sum_pi_squared: &q,
            is_weights: None,
        };
        let (a, g) = run(&inp, &[0, 0, 1], &Params::default()).unwrap();
        assert_eq!(&a[..6], &[0.0; 6]);
        assert_eq!(&a[6..], &[0.75, 0.25, 0.0]);
        assert_eq!(&g[6..], &[0.75, 0.25, 0.0]);
    }

    #[test]
    fn zero_tail_and_turn_alignment() {
        // Response 0 is longest alone: from column 1 (the other's length) its baseline is 0.
        let r = [0.0f64, 0.0, 1.0, 2.0, 0.0, 0.0];
        let m = [1u8, 1, 1, 1, 0, 0];
        let lp = [0.0f64; 6]; // pi = 1: w = sum_pi_squared - 1
        let q = [2.0f64; 6]; // w = 1 (out of range on purpose: simple weights)
        let mut inp = Inputs {
            rows: 2,
            width: 3,
            rewards: &r,
            mask: &m,
            old_log_probs: &lp,
            sum_pi_squared: &q,
            is_weights: None,
        };
        let (a, _) = run(&inp, &[0, 0], &Params::default()).unwrap();
        // b[0] = (1 * 1 + 2 * 1) / (2 + eps)
        assert!((a[0] - (1.0 - 3.0 / (2.0 + 1e-8))).abs() < 1e-15);
        assert_eq!(&a[1..3], &[1.0, 1.0]);
        // Turn: the second response's valid token moved to column 2 still meets step 0.
        let m2 = [1u8, 1, 1, 0, 0, 1];
        let r2 = [0.0f64, 0.0, 1.0, 0.0, 0.0, 2.0];
        inp.mask = &m2;
        inp.rewards = &r2;
        let p = Params {
            align: Align::Turn,
            ..Params::default()
        };
        let (a, g) = run(&inp, &[0, 0], &p).unwrap();
        assert_eq!(&g[3..], &[2.0, 2.0, 2.0]);
        assert!((a[5] - (2.0 - 3.0 / (2.0 + 1e-8))).abs() < 1e-15);
        assert_eq!(&a[3..5], &[0.0, 0.0]);
    }

    #[test]
    fn nonfinite_inputs_raise_naming_the_response_or_propagate() {
        let mut r = [0.0f64, 1.0, 0.5, 0.5];
        r[2] = f64::NAN;
        let m = [1u8; 4];
        let lp = [-1.0f64; 4];
        let q = [0.5f64; 4];
        let inp = Inputs {
            rows: 2,
            width: 2,
            rewards: &r,
            mask: &m,
            old_log_probs: &lp,
            sum_pi_squared: &q,
            is_weights: None,
        };
        match run(&inp, &[0, 0], &Params::default()) {
            Err(AdvError::NonFinite { index: 1, .. }) => {}
            other => panic!("{other:?}"),
        }
        let p = Params {
            nonfinite: NonFinite::Propagate,
            ..Params::default()
        };
        let (a, _) = run(&inp, &[0, 0], &p).unwrap();
        assert!(a[0].is_nan() && a[2].is_nan());
        let bad_lp = [-1.0f64, f64::NAN, -1.0, -1.0];
        let r = [0.0f64; 4];
        let inp = Inputs {
            rewards: &r,
            old_log_probs: &bad_lp,
            ..inp
        };
        let e = run(&inp, &[0, 0], &Params::default()).unwrap_err();
        assert!(
            e.to_string().starts_with("old_log_probs[0, 1] is NaN"),
            "{e}"
        );
        assert!(run(&inp, &[0, 2], &Params::default()).is_err()); // code out of range
        let half = [1.0f32, 0.5, 1.0, 1.0];
        let inp = Inputs {
            rows: 2,
            width: 2,
            rewards: &r,
            mask: &half[..],
            old_log_probs: &lp,
            sum_pi_squared: &q,
            is_weights: None,
        };
        let (mut a, mut g) = (vec![0.0; 4], vec![0.0; 4]);
        let e = compute(&inp, &[0, 0], 1, &Params::default(), &mut a, &mut g).unwrap_err();
        assert!(
            e.to_string().starts_with("response_mask[0, 1] is 0.5"),
            "{e}"
        );
    }
}
