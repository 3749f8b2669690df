//! Advantages from group moments given by the caller (streaming or sharded data): the
//! same rules (`policy::group_affine`), one write pass of the affine maps.

use super::batch::batch_scale;
use super::{fault_to_error, has_nonfinite};
use crate::groups::{map_batches_mut, Grouping};
use crate::policy::{group_affine, AdvError, Affine, NonFinite, Params};
use crate::real::Real;
use crate::stats::Moments;

/// Advantages from given group moments: the affine map of every group by the policy, then
/// one write pass (`Affine::apply`; a non-finite advantage of a finite reward is an overflow).
pub(super) fn from_moments<T: Real>(
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
            // Under Propagate a non-finite mean is the poison of non-finite rewards the given
            // moments saw (maybe in other batches or shards), not an overflow of these rewards.
            let has_nonfinite =
                || p.nonfinite == NonFinite::Propagate || has_nonfinite(x, grouping, g);
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
            crate::parallel::map_ranges_mut(
                x.len(),
                p.threads,
                out,
                |i| i,
                |r, o| {
                    let mut bad: Option<usize> = None;
                    for ((o, &v), &c) in o.iter_mut().zip(&x[r.clone()]).zip(&codes[r]) {
                        if !write(o, v, &maps[c as usize]) {
                            bad = Some(bad.map_or(c as usize, |b| b.min(c as usize)));
                        }
                    }
                    bad
                },
            )
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
