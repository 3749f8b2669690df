//! Group-relative advantages: the orchestration of the stages. A call cuts the rewards into
//! groups (`groups`), takes their moments (`stats`), turns them into per-group affine maps
//! by the rules of `policy`, and writes the advantages (`kernel` for contiguous groups,
//! `labelled` for interleaved ones). Batch scales merge the group moments first, in a fixed
//! order, so that the thread count never changes a result.
//!
//! The parameters, rules and errors are those of `policy` (re-exported here).

use crate::groups::{map_batches, map_batches_mut, Grouping};
use crate::kernel;
use crate::labelled;
use crate::parallel::{map_on, resolve_threads, SERIAL_BELOW};
use crate::policy::{batch_denom, batch_fault, check_params, group_affine, reported_stats};
pub use crate::policy::{
    AdvError, Affine, Center, Denom, Fault, NonFinite, Params, Scale, Singleton,
};
use crate::real::Real;
use crate::stats::{moments, moments_finite, moments_weighted, Moments};
use std::ops::Range;

/// Batch-level statistics (episode-weighted: each reward counts once), the merge of the
/// group moments in group order.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct BatchMoments {
    /// Moments of the raw rewards over the batch (`Scale::Batch`).
    pub rewards: Moments,
    /// Counts and M2s of the group-centred residuals, summed over the groups (mean 0;
    /// `Scale::BatchResidual`).
    pub residual: Moments,
}

impl BatchMoments {
    /// Add the moments of one more group (after all groups before it).
    pub fn add(&mut self, m: Moments) {
        self.rewards = self.rewards.merge(m);
        self.residual = self.residual.merge_residuals(m);
    }

    pub fn merge(self, o: BatchMoments) -> BatchMoments {
        BatchMoments {
            rewards: self.rewards.merge(o.rewards),
            residual: self.residual.merge_residuals(o.residual),
        }
    }

    /// The record whose std `scale` divides by.
    pub fn of(&self, scale: Scale) -> &Moments {
        match scale {
            Scale::BatchResidual => &self.residual,
            _ => &self.rewards,
        }
    }
}

/// Groups per partial merge of the batch moments. Fixed (not per thread), so that the order
/// of the merges, and hence every bit of a batch statistic, is the same for any thread count.
const MERGE_CHUNK: usize = 1024;

/// The batch moments of `k` groups, merged by fixed chunks of groups (in parallel when the
/// call is large), then the chunks in order. `group(g)` gives a group's moments (None for
/// an empty group) or its fault; the fault of the first faulty group is returned.
fn merge_groups(
    k: usize,
    n: usize,
    threads: usize,
    group: impl Fn(usize) -> Result<Option<Moments>, Fault> + Sync,
) -> Result<BatchMoments, (usize, Fault)> {
    let threads = if n < SERIAL_BELOW {
        1
    } else {
        resolve_threads(threads)
    };
    let chunks: Vec<Range<usize>> = (0..k)
        .step_by(MERGE_CHUNK)
        .map(|a| a..(a + MERGE_CHUNK).min(k))
        .collect();
    let parts = map_on(threads, chunks, |r| {
        let mut acc = BatchMoments::default();
        for g in r {
            if let Some(m) = group(g).map_err(|f| (g, f))? {
                acc.add(m);
            }
        }
        Ok(acc)
    });
    let mut total = BatchMoments::default();
    for part in parts {
        total = total.merge(part?);
    }
    Ok(total)
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

/// Does group `g` hold a non-finite reward (to tell one from an overflow; rare paths)?
fn has_nonfinite<T: Real>(x: &[T], grouping: &Grouping, g: usize) -> bool {
    match grouping {
        Grouping::Labelled(l) => !labelled::overflowed(x, l, g),
        _ => {
            let (a, b) = grouping.bounds(g);
            x[a..b].iter().any(|v| !v.to_f64().is_finite())
        }
    }
}

/// The moments of one contiguous group (empty: `Moments::EMPTY`).
#[inline]
fn contiguous_moments<T: Real>(xs: &[T], nonfinite: NonFinite) -> Moments {
    match nonfinite {
        _ if xs.is_empty() => Moments::EMPTY,
        NonFinite::Omit => moments_finite(xs),
        _ => moments(xs),
    }
}

/// The moments of every group, in group order, with no rule applied yet.
fn raw_moments<T: Real>(
    x: &[T],
    grouping: &Grouping,
    p: &Params,
    weights: Option<&[f64]>,
) -> Vec<Moments> {
    let omit = p.nonfinite == NonFinite::Omit;
    match (grouping, weights) {
        (Grouping::Labelled(l), None) => labelled::moments(x, l, p),
        (Grouping::Labelled(l), Some(w)) => labelled::moments_weighted(x, w, l, omit),
        (_, w) => map_batches(grouping, p.threads, |range| {
            range
                .map(|g| {
                    let (a, b) = grouping.bounds(g);
                    match w {
                        None => contiguous_moments(&x[a..b], p.nonfinite),
                        Some(w) => moments_weighted(&x[a..b], &w[a..b], omit),
                    }
                })
                .collect::<Vec<_>>()
        })
        .concat(),
    }
}

/// Per-group moments (count, mean, scaled M2, scale) in group order: the moments stage.
/// `weights`: optional frequency weights (finite, >= 0), one per reward. The non-finite
/// rules of `policy` apply (an error names the first non-finite reward under `Raise`;
/// finite rewards that overflow are an error; `Propagate` gives NaN records).
pub fn group_moments<T: Real>(
    x: &[T],
    grouping: &Grouping,
    p: &Params,
    weights: Option<&[f64]>,
) -> Result<Vec<Moments>, AdvError> {
    check_params(p)?;
    check_len(x.len(), grouping, "rewards")?;
    if let Some(w) = weights {
        check_len(w.len(), grouping, "weights")?;
        if let Some(i) = w.iter().position(|v| !(v.is_finite() && *v >= 0.0)) {
            return Err(AdvError::BadParameter(format!(
                "weights must be finite and >= 0, got weights[{i}] = {}",
                w[i]
            )));
        }
    }
    let ms = raw_moments(x, grouping, p, weights);
    for (g, m) in ms.iter().enumerate() {
        crate::policy::nonfinite_mean(m.count, m.mean, || has_nonfinite(x, grouping, g), p)
            .map_err(|f| fault_to_error(x, grouping, g, f))?;
    }
    Ok(ms)
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
    merge_groups(grouping.n_groups(), x.len(), p.threads, |g| {
        let (a, b) = grouping.bounds(g);
        let xs = &x[a..b];
        if xs.is_empty() {
            return Ok(None);
        }
        let m = contiguous_moments(xs, p.nonfinite);
        let has_nonfinite = || xs.iter().any(|v| !v.to_f64().is_finite());
        match batch_fault(&m, has_nonfinite, p) {
            Some(f) => Err(f),
            None => Ok((m.count > 0.0).then_some(m)),
        }
    })
    .map_err(|(g, f)| fault_to_error(x, grouping, g, f))
}

/// The batch moments of given group moments (merged in the same fixed order).
fn batch_from_moments<T: Real>(
    x: &[T],
    grouping: &Grouping,
    ms: &[Moments],
    p: &Params,
) -> Result<BatchMoments, AdvError> {
    merge_groups(ms.len(), x.len(), p.threads, |g| {
        let m = &ms[g];
        match batch_fault(m, || has_nonfinite(x, grouping, g), p) {
            Some(f) => Err(f),
            None => Ok((m.count > 0.0).then_some(*m)),
        }
    })
    .map_err(|(g, f)| fault_to_error(x, grouping, g, f))
}

/// The denominator of a batch scale: the caller's `batch_std`, or the batch moments' std
/// (group moments `ms` when given, else computed from the rewards).
fn batch_scale<T: Real>(
    x: &[T],
    grouping: &Grouping,
    p: &Params,
    ms: Option<&[Moments]>,
) -> Result<Denom, AdvError> {
    if !p.batch_scale() {
        return Ok(Denom::ONE);
    }
    if p.batch_std.is_some() {
        return batch_denom(&Moments::EMPTY, false, p);
    }
    let bm = match ms {
        Some(ms) => batch_from_moments(x, grouping, ms, p)?,
        None => batch_moments(x, grouping, p)?,
    };
    let m = bm.of(p.scale);
    // A non-finite batch record after the group faults: NaN by request (a non-finite reward
    // under "propagate"), or an overflow of finite rewards.
    let poisoned = !(m.mean.is_finite() && m.m2.is_finite())
        && p.nonfinite == NonFinite::Propagate
        && (ms.is_some_and(|ms| ms.iter().any(|m| m.mean.is_nan()))
            || x.iter().any(|v| !v.to_f64().is_finite()));
    batch_denom(m, poisoned, p)
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
    advantages_with(x, out, grouping, p, None)
}

/// `advantages`, with the group moments given (`moments`, one record per group: streaming
/// or sharded data) instead of computed from `x`. The same rules apply; batch scales use
/// the merge of the given moments.
pub fn advantages_with<T: Real>(
    x: &[T],
    out: &mut [T],
    grouping: &Grouping,
    p: &Params,
    moments: Option<&[Moments]>,
) -> Result<(), AdvError> {
    check_params(p)?;
    check_len(x.len(), grouping, "rewards")?;
    check_len(out.len(), grouping, "out")?;
    if let Some(ms) = moments {
        return from_moments(x, out, grouping, p, ms);
    }
    if let Grouping::Labelled(l) = grouping {
        let ms = labelled::moments(x, l, p);
        let batch = batch_scale(x, grouping, p, Some(&ms))?;
        return labelled::advantages(x, out, l, p, &ms, batch);
    }
    let batch = batch_scale(x, grouping, p, None)?;
    first_fault(map_batches_mut(grouping, p.threads, out, |range, o| {
        kernel::write_batch(x, o, grouping, range, p, batch)
    }))
    .map_err(|(g, f)| fault_to_error(x, grouping, g, f))
}

/// The first fault of per-batch results (batches in group order).
fn first_fault(parts: Vec<Result<(), (usize, Fault)>>) -> Result<(), (usize, Fault)> {
    parts.into_iter().collect()
}

/// Advantages from given group moments: the affine map of every group by the policy, then
/// one write pass (`Affine::apply`; a non-finite advantage of a finite reward is an overflow).
fn from_moments<T: Real>(
    x: &[T],
    out: &mut [T],
    grouping: &Grouping,
    p: &Params,
    ms: &[Moments],
) -> Result<(), AdvError> {
    let k = grouping.n_groups();
    if ms.len() != k {
        return Err(AdvError::BadParameter(format!(
            "moments hold {} groups, the layout has {k}",
            ms.len()
        )));
    }
    if let Some(g) = ms.iter().position(|m| {
        !(m.count >= 0.0 && m.count.is_finite() && m.scale > 0.0 && m.scale.is_finite())
            || m.m2 < 0.0
    }) {
        return Err(AdvError::BadParameter(format!(
            "moments of group {g} are not valid (count {}, m2 {}, scale {}): counts must be \
             finite and >= 0, m2 >= 0, scales finite and > 0",
            ms[g].count, ms[g].m2, ms[g].scale
        )));
    }
    if p.nonfinite == NonFinite::Raise {
        if let Some(index) = x.iter().position(|v| !v.to_f64().is_finite()) {
            return Err(AdvError::NonFinite {
                index,
                value: x[index].to_f64(),
            });
        }
    }
    let batch = batch_scale(x, grouping, p, Some(ms))?;
    let maps: Vec<Affine> = ms
        .iter()
        .enumerate()
        .map(|(g, m)| {
            let has_nonfinite = || has_nonfinite(x, grouping, g);
            group_affine(m.count, m.mean, || (m.m2, m.scale), has_nonfinite, p, batch)
                .map_err(|f| fault_to_error(x, grouping, g, f))
        })
        .collect::<Result<_, _>>()?;
    let omit = p.nonfinite == NonFinite::Omit;
    // The advantage of one reward; false for an overflow.
    let write = |o: &mut T, v: T, a: &Affine| {
        let v = v.to_f64();
        *o = T::from_f64(if omit && !v.is_finite() {
            0.0
        } else {
            a.apply(v)
        });
        o.to_f64().is_finite() || !v.is_finite() || a.k.is_nan()
    };
    let bad: Option<usize> = match grouping {
        Grouping::Labelled(l) => {
            let codes = l.codes();
            crate::parallel::map_ranges_mut(x.len(), p.threads, out, |i| i, |r, o| {
                let mut bad: Option<usize> = None;
                for ((o, &v), &c) in o.iter_mut().zip(&x[r.clone()]).zip(&codes[r]) {
                    if !write(o, v, &maps[c as usize]) {
                        bad = Some(bad.map_or(c as usize, |b| b.min(c as usize)));
                    }
                }
                bad
            })
            .into_iter()
            .flatten()
            .min()
        }
        _ => map_batches_mut(grouping, p.threads, out, |range, o| {
            let a0 = grouping.bounds(range.start).0;
            for g in range {
                let (a, b) = grouping.bounds(g);
                let mut ok = true;
                for (o, &v) in o[a - a0..b - a0].iter_mut().zip(&x[a..b]) {
                    ok &= write(o, v, &maps[g]);
                }
                if !ok {
                    return Some(g);
                }
            }
            None
        })
        .into_iter()
        .flatten()
        .next(),
    };
    match bad {
        Some(group) => Err(AdvError::Overflow { group }),
        None => Ok(()),
    }
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
    let ms = raw_moments(x, grouping, p, None);
    for (g, m) in ms.iter().enumerate() {
        let (c, mu, s) = reported_stats(m, || has_nonfinite(x, grouping, g), p)
            .map_err(|f| fault_to_error(x, grouping, g, f))?;
        (count[g], mean[g], std[g]) = (c as i64, mu, s);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
