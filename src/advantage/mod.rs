//! Group-relative advantages: the orchestration of the stages. A call cuts the rewards into
//! groups (`groups`), takes their moments (`stats`), turns them into per-group affine maps
//! by the rules of `policy`, and writes the advantages (`kernel` for contiguous groups,
//! `labelled` for interleaved ones). Batch scales merge the group moments first, in a fixed
//! order, so that the thread count never changes a result.
//!
//! The parameters, rules and errors are those of `policy` (re-exported here).

//!
//! Modules: `batch` (the batch moments and the batch denominator), `given` (advantages
//! from given group moments), `offsets` (ragged groups from the caller's offsets, read in
//! place).

mod batch;
mod given;
mod offsets;

use batch::batch_scale;
pub use batch::{batch_moments, BatchMoments};
use given::from_moments;
pub use offsets::{advantages_offsets, OffsetsError};

use crate::groups::{map_batches, map_batches_mut, Grouping};
use crate::kernel;
use crate::labelled;
use crate::policy::{self, check_params, reported_stats};
pub use crate::policy::{
    AdvError, Affine, Center, Denom, Fault, NonFinite, Params, Scale, Singleton,
};
use crate::real::Real;
use crate::stats::{moments, moments_finite, moments_weighted, Moments};

pub(super) fn fault_to_error<T: Real>(
    x: &[T],
    grouping: &Grouping,
    g: usize,
    fault: Fault,
) -> AdvError {
    let value = |i: usize| x[i].to_f64();
    match grouping {
        Grouping::Labelled(l) => labelled::fault_error(x, l, g, fault),
        _ => {
            let (a, b) = grouping.bounds(g);
            policy::fault_error(a..b, value, g, fault)
        }
    }
}

/// Does group `g` hold a non-finite reward (to tell one from an overflow; rare paths)?
pub(super) fn has_nonfinite<T: Real>(x: &[T], grouping: &Grouping, g: usize) -> bool {
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
pub(super) fn contiguous_moments<T: Real>(xs: &[T], nonfinite: NonFinite) -> Moments {
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

pub(super) fn check_len(
    len: usize,
    grouping: &Grouping,
    what: &'static str,
) -> Result<(), AdvError> {
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
