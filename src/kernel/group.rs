//! One group by the rules of `policy`: the general path of the write pass (any policy, the
//! guarded f64 moments, scaled maps), and the per-group finish of the block loops.

use super::write::write_affine;
use crate::policy::{group_affine, Denom, Fault, NonFinite, Params, Scale};
use crate::real::Real;
use crate::stats::{moments, moments_finite, squares_safe};

/// Does a group need the general path? Only for a guarded f64 std (the policies for
/// singletons and non-finite means are applied by `group_affine`).
#[inline(always)]
pub(super) fn guarded<T: Real>(n: usize, mean: f64, m2: f64, p: &Params) -> bool {
    p.scale == Scale::Group && n > p.ddof as usize && !squares_safe::<T>(mean, m2)
}

/// Advantages of one group (n >= 1 rewards in x) from its mean and M2.
#[inline(always)]
pub(super) fn finish_group<T: Real>(
    x: &[T],
    out: &mut [T],
    mean: f64,
    m2: f64,
    p: &Params,
    batch: Denom,
) -> Result<(), Fault> {
    let n = x.len();
    if guarded::<T>(n, mean, m2, p) {
        return group_advantages(x, out, p, batch);
    }
    let has_nonfinite = || x.iter().any(|v| !v.to_f64().is_finite());
    let a = group_affine(n as f64, mean, || (m2, 1.0), has_nonfinite, p, batch)?;
    if !a.plain() {
        return group_advantages(x, out, p, batch);
    }
    // A NaN map (a poisoned group under "propagate") is NaN by request.
    if !write_affine(x, out, a.mu, a.k, true) && !a.k.is_nan() {
        return Err(Fault::Overflow);
    }
    Ok(())
}

/// One group's advantages (the general path: any policy, the guarded f64 moments, scaled
/// maps centred exactly on the group).
pub(crate) fn group_advantages<T: Real>(
    x: &[T],
    out: &mut [T],
    p: &Params,
    batch: Denom,
) -> Result<(), Fault> {
    if x.is_empty() {
        return Ok(());
    }
    let omit = p.nonfinite == NonFinite::Omit;
    let m = if omit { moments_finite(x) } else { moments(x) };
    let has_nonfinite = || x.iter().any(|v| !v.to_f64().is_finite());
    let valid = x
        .iter()
        .map(|v| v.to_f64())
        .filter(|v| !omit || v.is_finite());
    let a = group_affine(m.count, m.mean, || (m.m2, m.scale), has_nonfinite, p, batch)?
        .recentred(valid);
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
