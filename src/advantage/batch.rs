//! The batch statistics of the batch scales: the group moments merged in a fixed order of
//! groups (so that no result depends on the thread count), and the denominator they give.

use super::{check_len, contiguous_moments, fault_to_error, has_nonfinite};
use crate::groups::{split_groups, Grouping};
use crate::labelled;
use crate::parallel::{map_on, resolve_threads, SERIAL_BELOW};
use crate::policy::{batch_denom, batch_fault, check_params, AdvError, Denom, Fault, NonFinite};
use crate::policy::{Params, Scale};
use crate::real::Real;
use crate::stats::{Moments, SMALL_M2};
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

    /// The batch moments of consecutive groups (`ms`: non-empty groups, in order). In the
    /// common case (unit scales, finite values) in closed form, two passes with no division per
    /// group: n = sum n_g, mean = m_0 + sum n_g (m_g - m_0) / n, M2 = sum M2_g +
    /// sum n_g (m_g - mean)^2 (residuals: sum M2_g). Otherwise, or where the result leaves the
    /// unscaled range, the group-by-group merge. Either way a function of `ms` alone.
    pub fn of_groups(ms: &[Moments]) -> BatchMoments {
        let plain = ms
            .iter()
            .all(|m| m.scale == 1.0 && m.mean.is_finite() && m.m2.is_finite());
        if plain && !ms.is_empty() {
            let shift = ms[0].mean;
            let (mut n, mut s, mut within) = (0.0f64, 0.0f64, 0.0f64);
            for m in ms {
                n += m.count;
                s += m.count * (m.mean - shift);
                within += m.m2;
            }
            let mean = if s == 0.0 { shift } else { shift + s / n };
            let mut between = 0.0f64;
            for m in ms {
                let d = m.mean - mean;
                between += m.count * d * d;
            }
            let m2 = within + between;
            let in_range = |v: f64| v == 0.0 || (v.is_finite() && v >= SMALL_M2);
            // an all-equal batch: every group mean equals the shift, M2 exactly 0
            if mean.is_finite() && in_range(m2) && in_range(within) {
                return BatchMoments {
                    rewards: Moments {
                        count: n,
                        mean,
                        m2,
                        scale: 1.0,
                    },
                    residual: Moments {
                        count: n,
                        mean: 0.0,
                        m2: within,
                        scale: 1.0,
                    },
                };
            }
        }
        let mut acc = BatchMoments::default();
        for &m in ms {
            acc.add(m);
        }
        acc
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

/// Groups per partial merge of given group moments, and rewards per partial merge of
/// contiguous groups (cut on group boundaries). Fixed (not per thread), so that the order of
/// the merges, and hence every bit of a batch statistic, is the same for any thread count.
const MERGE_GROUPS: usize = 1024;
const MERGE_REWARDS: usize = 1 << 14;

/// Chunks of `k` groups of `MERGE_GROUPS` each.
fn group_chunks(k: usize) -> Vec<Range<usize>> {
    (0..k)
        .step_by(MERGE_GROUPS)
        .map(|a| a..(a + MERGE_GROUPS).min(k))
        .collect()
}

/// The batch moments of the groups of `chunks` (consecutive, from group 0), merged within
/// each chunk (in parallel when the call of `n` rewards is large), then the chunks in order.
/// `group(g)` gives a group's moments (None for an empty group) or its fault; the fault of
/// the first faulty group is returned.
pub(super) fn merge_groups(
    chunks: Vec<Range<usize>>,
    n: usize,
    threads: usize,
    group: impl Fn(usize) -> Result<Option<Moments>, Fault> + Sync,
) -> Result<BatchMoments, (usize, Fault)> {
    let threads = if n < SERIAL_BELOW {
        1
    } else {
        resolve_threads(threads)
    };
    let parts = map_on(threads, chunks, |r| {
        let mut ms = Vec::with_capacity(r.len());
        for g in r {
            if let Some(m) = group(g).map_err(|f| (g, f))? {
                ms.push(m);
            }
        }
        Ok(BatchMoments::of_groups(&ms))
    });
    let mut total = BatchMoments::default();
    for part in parts {
        total = total.merge(part?);
    }
    Ok(total)
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
    let chunks = split_groups(grouping, x.len().div_ceil(MERGE_REWARDS));
    merge_groups(chunks, x.len(), p.threads, |g| {
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
    merge_groups(group_chunks(ms.len()), x.len(), p.threads, |g| {
        let m = &ms[g];
        // given moments carry the non-finite rewards of other batches or shards (Propagate)
        let poison = || p.nonfinite == NonFinite::Propagate || has_nonfinite(x, grouping, g);
        match batch_fault(m, poison, p) {
            Some(f) => Err(f),
            None => Ok((m.count > 0.0).then_some(*m)),
        }
    })
    .map_err(|(g, f)| fault_to_error(x, grouping, g, f))
}

/// The denominator of a batch scale: the caller's `batch_std`, or the batch moments' std
/// (group moments `ms` when given, else computed from the rewards).
pub(super) fn batch_scale<T: Real>(
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
