//! Group-relative advantages: centring (mean | leave-one-out | none) and scaling
//! (group std | batch std of rewards | batch std of group residuals | none).
//!
//! For a group with n valid rewards, mean m and standard deviation s:
//!
//! ```text
//! A_i = c * (r_i - mu) / d
//!   mu = m (Mean, LeaveOneOut) or 0 (None);  c = n/(n-1) for LeaveOneOut, else 1
//!   d  = s + eps (Group) | S_batch + eps (Batch, BatchResidual) | 1 (None)
//! ```
//!
//! A zero denominator (possible only with eps = 0 when the scope has no spread) gives 0.0, as
//! does any group whose rewards are all equal: its residuals are exactly 0 (see `stats`).

use crate::groups::Grouping;
use crate::kernel;
use crate::labelled;
use crate::parallel::map_batches;
use crate::real::Real;
use crate::stats::{group_std, moments, moments_finite, Moments};
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Center {
    Mean,
    LeaveOneOut,
    None,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scale {
    /// Standard deviation of the group's rewards.
    Group,
    /// Standard deviation of all rewards in the batch (TRL / Lite PPO "batch").
    Batch,
    /// Standard deviation of the group-centred residuals over the batch (AReaL).
    BatchResidual,
    None,
}

/// What a group with exactly one valid reward gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Singleton {
    /// Advantage 0: nothing to compare against.
    Zero,
    /// verl's convention: mean 0 and std 1, so the advantage is the raw reward (scaled).
    Raw,
    Error,
}

/// What a NaN or infinite reward does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NonFinite {
    Raise,
    /// Its whole group (and any batch statistic) becomes NaN.
    Propagate,
    /// Left out of every statistic; its own advantage is 0.
    Omit,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Params {
    pub center: Center,
    pub scale: Scale,
    pub ddof: u32,
    pub eps: f64,
    pub singleton: Singleton,
    pub nonfinite: NonFinite,
    /// 0: the default thread count.
    pub threads: usize,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            center: Center::Mean,
            scale: Scale::Group,
            ddof: 0,
            eps: 0.0,
            singleton: Singleton::Zero,
            nonfinite: NonFinite::Raise,
            threads: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum AdvError {
    /// A non-finite reward under `NonFinite::Raise`.
    NonFinite {
        index: usize,
        value: f64,
    },
    /// Finite rewards whose group statistics or advantages overflow.
    Overflow {
        group: usize,
    },
    /// Finite rewards whose batch std overflows f64.
    BatchOverflow,
    Singleton {
        group: usize,
        index: usize,
    },
    LengthMismatch {
        what: &'static str,
        len: usize,
        n: usize,
    },
    BadParameter(String),
}

impl fmt::Display for AdvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdvError::NonFinite { index, value } => write!(
                f,
                "rewards[{index}] is {value}; pass nan='propagate' or nan='omit' to allow non-finite rewards"
            ),
            AdvError::Overflow { group } => write!(
                f,
                "the rewards of group {group} overflow float64 in its statistics, or the output \
                 dtype in its advantages; rescale rewards of magnitude near the float range"
            ),
            AdvError::BatchOverflow => write!(
                f,
                "the rewards overflow float64 in the batch std; rescale rewards of magnitude near \
                 the float range"
            ),
            AdvError::Singleton { group, index } => write!(
                f,
                "group {group} (rewards[{index}]) has a single reward, and singleton='error'; \
                 use singleton='zero' or 'raw' to allow it"
            ),
            AdvError::LengthMismatch { what, len, n } => {
                write!(f, "{what} has length {len} but the groups cover {n} rewards")
            }
            AdvError::BadParameter(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for AdvError {}

/// Batch-level statistics (episode-weighted: each reward counts once).
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct BatchMoments {
    /// Moments of the raw rewards over the batch.
    pub rewards: Moments,
    /// Sum over groups of the squared deviations from the group mean, and the count behind it.
    pub residual_m2: f64,
    pub residual_count: u64,
}

impl BatchMoments {
    pub fn merge(self, o: BatchMoments) -> BatchMoments {
        BatchMoments {
            rewards: self.rewards.merge(o.rewards),
            residual_m2: self.residual_m2 + o.residual_m2,
            residual_count: self.residual_count + o.residual_count,
        }
    }

    /// The batch standard deviation that `scale` divides by (before eps).
    pub fn std(&self, scale: Scale, ddof: u32) -> f64 {
        match scale {
            Scale::Batch => self.rewards.std(ddof),
            Scale::BatchResidual => {
                if self.residual_count <= ddof as u64 {
                    f64::NAN
                } else {
                    (self.residual_m2 / (self.residual_count - ddof as u64) as f64).sqrt()
                }
            }
            Scale::Group | Scale::None => 1.0,
        }
    }
}

/// Why one group could not be computed (turned into an [`AdvError`] with indices by the caller).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Fault {
    NonFinite,
    Singleton,
    /// Finite rewards whose group statistics overflow f64.
    Overflow,
}

fn check_params(p: &Params) -> Result<(), AdvError> {
    if p.ddof > 1 {
        return Err(AdvError::BadParameter(format!(
            "ddof must be 0 or 1, got {}",
            p.ddof
        )));
    }
    if !(p.eps >= 0.0 && p.eps.is_finite()) {
        return Err(AdvError::BadParameter(format!(
            "eps must be a finite number >= 0, got {}",
            p.eps
        )));
    }
    Ok(())
}

/// Output pointer shared by the batches; each batch writes only its own, disjoint elements.
#[derive(Clone, Copy)]
pub(crate) struct SharedOut<T>(pub(crate) *mut T);
unsafe impl<T: Send> Send for SharedOut<T> {}
unsafe impl<T: Send> Sync for SharedOut<T> {}

impl<T> SharedOut<T> {
    // A method, so that closures capture the whole (Sync) wrapper, not the raw pointer field.
    #[inline(always)]
    pub(crate) fn ptr(&self) -> *mut T {
        self.0
    }
}

/// Visit groups `range` of a contiguous layout with their values as one slice.
/// `f(g, values)` may return early with an error.
fn visit_groups<T: Real, E>(
    x: &[T],
    grouping: &Grouping,
    range: std::ops::Range<usize>,
    mut f: impl FnMut(usize, &[T]) -> Result<(), E>,
) -> Result<(), E> {
    for g in range {
        let (a, b) = grouping.bounds(g);
        f(g, &x[a..b])?;
    }
    Ok(())
}

fn fault_to_error<T: Real>(x: &[T], grouping: &Grouping, g: usize, fault: Fault) -> AdvError {
    if let Grouping::Labelled(l) = grouping {
        return labelled::fault_error(x, l, g, fault);
    }
    let (a, b) = grouping.bounds(g);
    match fault {
        Fault::NonFinite => (a..b)
            .find(|&i| !x[i].to_f64().is_finite())
            .map(|index| AdvError::NonFinite {
                index,
                value: x[index].to_f64(),
            })
            .unwrap_or(AdvError::Overflow { group: g }),
        Fault::Singleton => {
            let index = (a..b).find(|&i| x[i].to_f64().is_finite()).unwrap_or(a);
            AdvError::Singleton { group: g, index }
        }
        Fault::Overflow => AdvError::Overflow { group: g },
    }
}

/// Run a per-group pass over all batches and turn the first fault into an error.
fn run_batches<T: Real, R: Send>(
    x: &[T],
    grouping: &Grouping,
    threads: usize,
    per_batch: impl Fn(std::ops::Range<usize>) -> Result<R, (usize, Fault)> + Sync + Send,
) -> Result<Vec<R>, AdvError> {
    map_batches(grouping, threads, per_batch)
        .into_iter()
        .collect::<Result<Vec<R>, _>>()
        .map_err(|(g, fault)| fault_to_error(x, grouping, g, fault))
}

#[inline]
fn group_moments<T: Real>(x: &[T], nonfinite: NonFinite) -> Moments {
    match nonfinite {
        NonFinite::Omit => moments_finite(x),
        _ => moments(x),
    }
}

/// The batch std that `p.scale` divides by, guarded like `stats::group_std` against f64
/// over/underflow of the squared deviations (rewards beyond ~1e154 or spreads below ~1e-146):
/// then recomputed, serially, from deviations rescaled by their largest magnitude.
fn batch_std<T: Real>(
    x: &[T],
    grouping: &Grouping,
    p: &Params,
    bm: &BatchMoments,
    labelled_moments: Option<&[Moments]>,
) -> f64 {
    let mut batch_mean = bm.rewards.mean;
    let overflowed_mean = !batch_mean.is_finite();
    if overflowed_mean {
        let poisoned =
            p.nonfinite == NonFinite::Propagate && x.iter().any(|v| !v.to_f64().is_finite());
        if poisoned || bm.rewards.count == 0 {
            // A non-finite reward (under "propagate") poisons every batch statistic.
            return f64::NAN;
        }
        // Finite group means whose merge overflowed: weight them instead (no partial sum can
        // exceed the largest group mean).
        let total = bm.rewards.count as f64;
        let weighted = |m: Moments| (m.count as f64 / total) * m.mean;
        batch_mean = match (grouping, labelled_moments) {
            (Grouping::Labelled(_), Some(ms)) => ms
                .iter()
                .filter(|m| m.count > 0)
                .map(|&m| weighted(m))
                .sum(),
            _ => (0..grouping.n_groups())
                .map(|g| grouping.bounds(g))
                .filter(|&(a, b)| b > a)
                .map(|(a, b)| group_moments(&x[a..b], p.nonfinite))
                .filter(|m| m.count > 0)
                .map(weighted)
                .sum(),
        };
    }
    let std = bm.std(p.scale, p.ddof);
    let (m2, count) = match p.scale {
        Scale::Batch => (bm.rewards.m2, bm.rewards.count),
        _ => (bm.residual_m2, bm.residual_count),
    };
    if count <= p.ddof as u64 {
        return f64::NAN;
    }
    if !overflowed_mean && (T::SQUARES_FIT_F64 || (m2.is_finite() && m2 >= 1e-280)) {
        return std;
    }
    // Deviation of every valid reward from the batch mean (Batch) or its group mean.
    let mut devs: Vec<f64> = Vec::new();
    let valid = |v: f64| p.nonfinite != NonFinite::Omit || v.is_finite();
    let mut push_group = |xs: &mut dyn Iterator<Item = f64>, centre: f64| {
        devs.extend(xs.filter(|&v| valid(v)).map(|v| (v - centre).abs()));
    };
    match (grouping, labelled_moments) {
        (Grouping::Labelled(l), Some(ms)) => {
            for (i, &c) in l.codes().iter().enumerate() {
                let centre = if p.scale == Scale::Batch {
                    batch_mean
                } else {
                    ms[c as usize].mean
                };
                push_group(&mut std::iter::once(x[i].to_f64()), centre);
            }
        }
        _ => {
            for g in 0..grouping.n_groups() {
                let (a, b) = grouping.bounds(g);
                if a == b {
                    continue;
                }
                let centre = if p.scale == Scale::Batch {
                    batch_mean
                } else {
                    group_moments(&x[a..b], p.nonfinite).mean
                };
                push_group(&mut x[a..b].iter().map(|v| v.to_f64()), centre);
            }
        }
    }
    let amax = devs.iter().copied().fold(0.0f64, f64::max);
    if amax == 0.0 || !amax.is_finite() {
        return if amax == 0.0 { 0.0 } else { std };
    }
    let q: f64 = devs.iter().map(|d| (d / amax) * (d / amax)).sum();
    amax * (q / (count - p.ddof as u64) as f64).sqrt()
}

/// A batch std is NaN when undefined or poisoned (by request); infinite only by overflow.
fn checked(batch_std: f64) -> Result<f64, AdvError> {
    if batch_std.is_infinite() {
        return Err(AdvError::BatchOverflow);
    }
    Ok(batch_std)
}

/// Faults that a batch statistic must report before it is used: non-finite rewards under
/// `Raise`, overflowing finite rewards, singletons under `Singleton::Error`.
#[inline]
fn batch_fault(m: &Moments, all_finite: impl FnOnce() -> bool, p: &Params) -> Option<Fault> {
    if m.count > 0 && !m.mean.is_finite() {
        match p.nonfinite {
            NonFinite::Raise => return Some(Fault::NonFinite),
            NonFinite::Omit => return Some(Fault::Overflow),
            NonFinite::Propagate if all_finite() => return Some(Fault::Overflow),
            // A poisoned group is NaN, whatever its size.
            NonFinite::Propagate => return None,
        }
    }
    if m.count == 1 && p.singleton == Singleton::Error {
        Some(Fault::Singleton)
    } else {
        None
    }
}

fn add_group(acc: &mut BatchMoments, m: Moments) {
    acc.rewards = acc.rewards.merge(m);
    acc.residual_m2 += m.m2;
    acc.residual_count += m.count;
}

/// Batch statistics over all groups (needed before writing when scaling by a batch std).
pub fn batch_moments<T: Real>(
    x: &[T],
    grouping: &Grouping,
    p: &Params,
) -> Result<BatchMoments, AdvError> {
    check_params(p)?;
    check_len(x.len(), grouping, "rewards")?;
    if let Grouping::Labelled(l) = grouping {
        return batch_from_moments(x, grouping, &labelled::moments(x, l, p), p);
    }
    let parts = run_batches(x, grouping, p.threads, |range| {
        let mut acc = BatchMoments::default();
        visit_groups(x, grouping, range, |g, xs| {
            if xs.is_empty() {
                return Ok(());
            }
            let m = group_moments(xs, p.nonfinite);
            if let Some(f) = batch_fault(&m, || xs.iter().all(|v| v.to_f64().is_finite()), p) {
                return Err((g, f));
            }
            add_group(&mut acc, m);
            Ok(())
        })?;
        Ok(acc)
    })?;
    Ok(parts
        .into_iter()
        .fold(BatchMoments::default(), BatchMoments::merge))
}

fn batch_from_moments<T: Real>(
    x: &[T],
    grouping: &Grouping,
    moments: &[Moments],
    p: &Params,
) -> Result<BatchMoments, AdvError> {
    let mut acc = BatchMoments::default();
    for (g, m) in moments.iter().enumerate() {
        let all_finite = || match grouping {
            Grouping::Labelled(l) => labelled::overflowed(x, l, g),
            _ => true,
        };
        if let Some(f) = batch_fault(m, all_finite, p) {
            return Err(fault_to_error(x, grouping, g, f));
        }
        if m.count > 0 {
            add_group(&mut acc, *m);
        }
    }
    Ok(acc)
}

fn check_len(len: usize, grouping: &Grouping, what: &'static str) -> Result<(), AdvError> {
    if len != grouping.len() {
        return Err(AdvError::LengthMismatch {
            what,
            len,
            n: grouping.len(),
        });
    }
    Ok(())
}

/// Advantages of all rewards `x` into `out` (same length, input order).
/// On error, `out` may be partly written.
pub fn advantages<T: Real>(
    x: &[T],
    out: &mut [T],
    grouping: &Grouping,
    p: &Params,
) -> Result<(), AdvError> {
    check_params(p)?;
    check_len(x.len(), grouping, "rewards")?;
    check_len(out.len(), grouping, "out")?;
    let batch_scale = matches!(p.scale, Scale::Batch | Scale::BatchResidual);
    if let Grouping::Labelled(l) = grouping {
        let moments = labelled::moments(x, l, p);
        let batch_denom = if batch_scale {
            let bm = batch_from_moments(x, grouping, &moments, p)?;
            checked(batch_std(x, grouping, p, &bm, Some(&moments)))? + p.eps
        } else {
            1.0
        };
        return labelled::advantages(x, out, l, p, &moments, batch_denom);
    }
    let batch_denom = if batch_scale {
        checked(batch_std(
            x,
            grouping,
            p,
            &batch_moments(x, grouping, p)?,
            None,
        ))? + p.eps
    } else {
        1.0
    };
    let shared = SharedOut(out.as_mut_ptr());
    run_batches(x, grouping, p.threads, |range| {
        // SAFETY: each batch writes only the elements of its own groups (see SharedOut).
        unsafe { kernel::write_batch(x, shared.ptr(), grouping, range, p, batch_denom) }
    })?;
    Ok(())
}

/// The affine map of a group: every valid reward r gets the advantage ((r - mu) * pre) * k.
/// `pre` is 1 except when 1/denominator overflows (a subnormal spread with eps = 0): then it
/// is a power of two that lifts the residuals out of the subnormal range first.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Affine {
    pub mu: f64,
    pub k: f64,
    pub pre: f64,
}

impl Affine {
    #[inline(always)]
    pub fn apply(&self, v: f64) -> f64 {
        ((v - self.mu) * self.pre) * self.k
    }
}

/// The affine map of a group with `count` valid rewards of mean `mean`. `std` is called only
/// when the group std is needed, `has_nonfinite` only to tell a non-finite reward from an
/// overflow. Err for a policy fault.
#[inline(always)]
pub(crate) fn group_affine(
    count: u64,
    mean: f64,
    std: impl FnOnce() -> f64,
    has_nonfinite: impl FnOnce() -> bool,
    p: &Params,
    batch_denom: f64,
) -> Result<Affine, Fault> {
    if count > 0 && !mean.is_finite() {
        return match p.nonfinite {
            NonFinite::Raise => Err(Fault::NonFinite),
            // Only finite rewards were summed: they overflowed.
            NonFinite::Omit => Err(Fault::Overflow),
            NonFinite::Propagate if !has_nonfinite() => Err(Fault::Overflow),
            // The whole group becomes NaN.
            NonFinite::Propagate => Ok(Affine {
                mu: 0.0,
                k: f64::NAN,
                pre: 1.0,
            }),
        };
    }
    let denom_for = |group_std: f64| match p.scale {
        Scale::Group => group_std + p.eps,
        Scale::Batch | Scale::BatchResidual => batch_denom,
        Scale::None => 1.0,
    };
    let (mu, factor, denom) = match count {
        0 => (0.0, 0.0, 1.0),
        1 => match p.singleton {
            Singleton::Zero => (0.0, 0.0, 1.0),
            Singleton::Error => return Err(Fault::Singleton),
            Singleton::Raw => (0.0, 1.0, denom_for(1.0)),
        },
        n => {
            let (mu, factor) = match p.center {
                Center::Mean => (mean, 1.0),
                Center::LeaveOneOut => (mean, n as f64 / (n - 1) as f64),
                Center::None => (0.0, 1.0),
            };
            let s = if p.scale == Scale::Group { std() } else { 1.0 };
            if !s.is_finite() {
                // Finite rewards (the mean is finite) whose deviations overflow f64.
                return Err(Fault::Overflow);
            }
            (mu, factor, denom_for(s))
        }
    };
    // A scope without spread carries no signal: 0, never 0/0.
    if denom == 0.0 {
        return Ok(Affine {
            mu,
            k: 0.0,
            pre: 1.0,
        });
    }
    let k = factor / denom;
    if k.is_infinite() && denom.is_finite() {
        const LIFT: f64 = 1.152_921_504_606_847e18; // 2^60: exact scaling
        return Ok(Affine {
            mu,
            k: factor / (denom * LIFT),
            pre: LIFT,
        });
    }
    Ok(Affine { mu, k, pre: 1.0 })
}

/// One group's advantages (the general path: any policy, guarded std).
pub(crate) fn group_advantages<T: Real>(
    x: &[T],
    out: &mut [T],
    p: &Params,
    batch_denom: f64,
) -> Result<(), Fault> {
    if x.is_empty() {
        return Ok(());
    }
    let omit = p.nonfinite == NonFinite::Omit;
    let m = group_moments(x, p.nonfinite);
    let has_nonfinite = || x.iter().any(|v| !v.to_f64().is_finite());
    let a = group_affine(
        m.count,
        m.mean,
        || group_std(x, &m, p.ddof, omit),
        has_nonfinite,
        p,
        batch_denom,
    )?;
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

/// Per-group count, mean and standard deviation (NaN where undefined), in group order.
pub fn group_stats<T: Real>(
    x: &[T],
    grouping: &Grouping,
    p: &Params,
    count: &mut [i64],
    mean: &mut [f64],
    std: &mut [f64],
) -> Result<(), AdvError> {
    check_params(p)?;
    check_len(x.len(), grouping, "rewards")?;
    let k = grouping.n_groups();
    for (what, len) in [
        ("count", count.len()),
        ("mean", mean.len()),
        ("std", std.len()),
    ] {
        if len != k {
            return Err(AdvError::BadParameter(format!(
                "{what} output has length {len}, expected {k} (one per group)"
            )));
        }
    }
    if let Grouping::Labelled(l) = grouping {
        let moments = labelled::moments(x, l, p);
        let stds = labelled::stds(x, l, &moments, p);
        for (g, (m, &sd)) in moments.iter().zip(&stds).enumerate() {
            let fault = if m.count > 0 && !m.mean.is_finite() {
                match p.nonfinite {
                    NonFinite::Raise => Some(Fault::NonFinite),
                    NonFinite::Omit => Some(Fault::Overflow),
                    NonFinite::Propagate => {
                        labelled::overflowed(x, l, g).then_some(Fault::Overflow)
                    }
                }
            } else if m.count > p.ddof as u64 && !sd.is_finite() {
                Some(Fault::Overflow)
            } else {
                None
            };
            if let Some(f) = fault {
                return Err(fault_to_error(x, grouping, g, f));
            }
            count[g] = m.count as i64;
            mean[g] = if m.count == 0 { f64::NAN } else { m.mean };
            std[g] = if mean[g].is_finite() { sd } else { f64::NAN };
        }
        return Ok(());
    }
    let (pc, pm, ps) = (
        SharedOut(count.as_mut_ptr()),
        SharedOut(mean.as_mut_ptr()),
        SharedOut(std.as_mut_ptr()),
    );
    run_batches(x, grouping, p.threads, |range| {
        visit_groups(x, grouping, range, |g, xs| {
            let (c, mu, s) = if xs.is_empty() {
                (0, f64::NAN, f64::NAN)
            } else {
                let m = group_moments(xs, p.nonfinite);
                if m.count > 0 && !m.mean.is_finite() {
                    match p.nonfinite {
                        NonFinite::Raise => return Err((g, Fault::NonFinite)),
                        NonFinite::Omit => return Err((g, Fault::Overflow)),
                        NonFinite::Propagate if xs.iter().all(|v| v.to_f64().is_finite()) => {
                            return Err((g, Fault::Overflow))
                        }
                        NonFinite::Propagate => {}
                    }
                }
                let mu = if m.count == 0 { f64::NAN } else { m.mean };
                let s = if mu.is_finite() {
                    group_std(xs, &m, p.ddof, p.nonfinite == NonFinite::Omit)
                } else {
                    f64::NAN
                };
                if mu.is_finite() && m.count > p.ddof as u64 && !s.is_finite() {
                    return Err((g, Fault::Overflow));
                }
                (m.count as i64, mu, s)
            };
            // SAFETY: each group index belongs to exactly one batch.
            unsafe {
                *pc.ptr().add(g) = c;
                *pm.ptr().add(g) = mu;
                *ps.ptr().add(g) = s;
            }
            Ok(())
        })
    })?;
    Ok(())
}

#[cfg(test)]
mod tests;
