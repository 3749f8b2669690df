//! Multi-component rewards: an (N, K) row-major buffer (K reward components per sample, e.g.
//! TRL's `rewards_per_func`, verl GDPO's `gdpo_reward_keys`) with one weight per component.
//!
//! * `weighted_row_sums`: `s_i = sum_k w_k x_ik` (TRL's `sum_then_normalize` first step,
//!   `(rewards_per_func * reward_weights).nansum(dim=1)`); the caller then takes group
//!   advantages of `s` with the ordinary stages.
//! * `normalize_then_sum`: `A_i = sum_k w_k A_k(x_ik)` where `A_k` is the group advantage of
//!   component k within the sample's group (GDPO; TRL `normalize_then_sum`), in one pass
//!   over the buffer: each group's K columns are gathered (cache-resident) and each goes
//!   through `kernel::group::group_advantages`, the general path of the write pass, so every
//!   rule of `policy` (centre, scale, eps, ddof, singleton, the exact 0 of an all-equal
//!   component, NaN) is the one of `advantages`.
//!
//! Non-finite values: `Raise` is an error naming the sample (row); `Propagate` spreads NaN
//! (into the row's sum, or over the component's group); `Omit` leaves the value out (a row
//! whose every component is left out has sum NaN, so that the next stage leaves it out too;
//! an omitted value's component advantage is 0).

use crate::advantage::{AdvError, Denom, Fault, NonFinite, Params, Scale};
use crate::groups::{map_batches_mut, Grouping};
use crate::kernel::group_advantages;
use crate::parallel::map_ranges_mut;
use crate::policy::{check_params, fault_error, group_affine};
use crate::real::Real;
use crate::stats::squares_safe;

fn check_shape(len: usize, k: usize, w: &[f64]) -> Result<usize, AdvError> {
    if k == 0 || !len.is_multiple_of(k) {
        return Err(AdvError::BadParameter(format!(
            "a buffer of {len} values is not (N, K) with K = {k} >= 1"
        )));
    }
    if w.len() != k {
        return Err(AdvError::LengthMismatch {
            what: "weights",
            len: w.len(),
            n: k,
        });
    }
    if let Some(j) = w.iter().position(|v| !v.is_finite()) {
        return Err(AdvError::BadParameter(format!(
            "weights must be finite, got weights[{j}] = {}",
            w[j]
        )));
    }
    Ok(len / k)
}

/// `out[i] = sum_k w[k] * x[i, k]`, summed in f64 and stored as `O` (a sum that overflows
/// `O` is an error; see the module doc for non-finite values).
pub fn weighted_row_sums<T: Real, O: Real>(
    x: &[T],
    k: usize,
    w: &[f64],
    out: &mut [O],
    nonfinite: NonFinite,
    threads: usize,
) -> Result<(), AdvError> {
    let n = check_shape(x.len(), k, w)?;
    if out.len() != n {
        return Err(AdvError::LengthMismatch {
            what: "out",
            len: out.len(),
            n,
        });
    }
    let parts = map_ranges_mut(
        n,
        threads,
        out,
        |i| i,
        |rows, o| {
            // The usual K with every value finite and every sum in range: one tight pass
            // with K known at compile time (the same sums); else the general loop below
            // (which overwrites it and applies the rules for non-finite values).
            let xs = &x[rows.start * k..rows.end * k];
            if match k {
                1 => finite_row_sums::<T, O, 1>(xs, w, o),
                2 => finite_row_sums::<T, O, 2>(xs, w, o),
                3 => finite_row_sums::<T, O, 3>(xs, w, o),
                4 => finite_row_sums::<T, O, 4>(xs, w, o),
                5 => finite_row_sums::<T, O, 5>(xs, w, o),
                6 => finite_row_sums::<T, O, 6>(xs, w, o),
                7 => finite_row_sums::<T, O, 7>(xs, w, o),
                8 => finite_row_sums::<T, O, 8>(xs, w, o),
                _ => false,
            } {
                return Ok(());
            }
            for (o, i) in o.iter_mut().zip(rows) {
                let row = &x[i * k..(i + 1) * k];
                let (mut s, mut valid) = (0.0f64, false);
                for (v, &wk) in row.iter().zip(w) {
                    let v = v.to_f64();
                    if !v.is_finite() {
                        match nonfinite {
                            NonFinite::Raise => {
                                return Err(AdvError::NonFinite { index: i, value: v })
                            }
                            NonFinite::Omit => continue,
                            NonFinite::Propagate => {}
                        }
                    }
                    valid = true;
                    s += wk * v;
                }
                let v = if valid { s } else { f64::NAN };
                *o = O::from_f64(v);
                if v.is_finite() && !o.to_f64().is_finite() {
                    return Err(AdvError::BadParameter(format!(
                        "the weighted sum of rewards row {i} ({v:e}) overflows the rewards' dtype"
                    )));
                }
            }
            Ok(())
        },
    );
    parts.into_iter().collect()
}

/// Rows whose sums [`finite_row_sums`] takes side by side.
const BLOCK: usize = 8;

/// `out[i] = sum_k w[k] * x[i, k]` as `weighted_row_sums` (the same order) for K values a
/// row; false at the first row (or block of rows) with a non-finite value or sum (the
/// caller redoes it all).
fn finite_row_sums<T: Real, O: Real, const K: usize>(xs: &[T], w: &[f64], out: &mut [O]) -> bool {
    let Ok(w) = <&[f64; K]>::try_from(w) else {
        return false;
    };
    let (rows, _) = xs.as_chunks::<K>();
    // BLOCK rows side by side: their sums are independent chains (a row's K additions
    // depend on each other; one row at a time leaves the pass bound by their latency), each
    // row summed in the same order as below, so the same bits
    let (blocks, _) = rows.as_chunks::<BLOCK>();
    for (block, o) in blocks.iter().zip(out.as_chunks_mut::<BLOCK>().0) {
        let mut s = [0.0f64; BLOCK];
        for c in 0..K {
            for j in 0..BLOCK {
                s[j] += w[c] * block[j][c].to_f64();
            }
        }
        let mut finite = true;
        for j in 0..BLOCK {
            let t = O::from_f64(s[j]);
            finite &= t.to_f64().is_finite();
            o[j] = t;
        }
        if !finite {
            return false;
        }
    }
    let done = blocks.len() * BLOCK;
    for (row, o) in rows[done..].iter().zip(out[done..].iter_mut()) {
        let mut s = 0.0f64;
        for c in 0..K {
            s += w[c] * row[c].to_f64();
        }
        // NaN or inf in the row makes the sum non-finite (the weights are finite).
        let t = O::from_f64(s);
        if !t.to_f64().is_finite() {
            return false;
        }
        *o = t;
    }
    true
}

/// `out[i] = sum_k w[k] * A_k(x[i, k])` with `A_k` the group advantage of component k under
/// `p` (group or no scale: the batch scales belong to a later stage); see the module doc.
pub fn normalize_then_sum<T: Real>(
    x: &[T],
    k: usize,
    w: &[f64],
    out: &mut [T],
    grouping: &Grouping,
    p: &Params,
) -> Result<(), AdvError> {
    check_params(p)?;
    if p.batch_scale() {
        return Err(AdvError::BadParameter(
            "normalize_then_sum takes scale='group' or 'none' per component".into(),
        ));
    }
    let n = check_shape(x.len(), k, w)?;
    for (what, len) in [("rewards", n), ("out", out.len())] {
        if len != grouping.len() {
            return Err(AdvError::LengthMismatch {
                what,
                len,
                n: grouping.len(),
            });
        }
    }
    let error = |rows: &[usize], c: usize, g: usize, f: Fault| {
        fault_error(rows.iter().copied(), |i| x[i * k + c].to_f64(), g, f)
    };
    // One group: its rows (input order), a scratch column and its advantages, the f64 sums.
    // The common case (finite values, a plain affine map, squares in range) is one sweep per
    // component with the moments shifted by the first value, as `stats::moments` (an
    // all-equal component has mean == that value and m2 == 0 exactly); anything else goes
    // through `group_advantages`, the general path of the write pass.
    let group =
        |rows: &[usize], g: usize, col: &mut Vec<f64>, adv: &mut Vec<f64>, acc: &mut Vec<f64>| {
            acc.clear();
            acc.resize(rows.len(), 0.0);
            let n = rows.len() as f64;
            for c in 0..k {
                let v = |i: usize| x[i * k + c].to_f64();
                let x0 = v(rows[0]);
                let mut s = 0.0f64;
                for &i in rows {
                    s += v(i) - x0;
                }
                let mean = x0 + s / n;
                let mut m2 = 0.0f64;
                for &i in rows {
                    let d = v(i) - mean;
                    m2 += d * d;
                }
                if let Some((mu, k)) =
                    plain_affine::<T>(n, mean, m2, p).map_err(|f| error(rows, c, g, f))?
                {
                    let f = w[c] * k;
                    for (o, &i) in acc.iter_mut().zip(rows) {
                        *o += (v(i) - mu) * f;
                    }
                    continue;
                }
                col.clear();
                col.extend(rows.iter().map(|&i| v(i)));
                adv.clear();
                adv.resize(rows.len(), 0.0);
                group_advantages(col, adv, p, Denom::ONE).map_err(|f| error(rows, c, g, f))?;
                for (a, v) in acc.iter_mut().zip(adv.iter()) {
                    *a += w[c] * v;
                }
            }
            // A non-finite sum is NaN by request (a poisoned component under `Propagate`) or
            // an overflow of finite rewards (large weights or spreads).
            if acc.iter().any(|a| !a.is_finite()) {
                let poisoned = p.nonfinite == NonFinite::Propagate
                    && rows.iter().any(|&i| {
                        x[i * k..(i + 1) * k]
                            .iter()
                            .any(|v| !v.to_f64().is_finite())
                    });
                if !poisoned {
                    return Err(AdvError::Overflow { group: g });
                }
            }
            Ok::<(), AdvError>(())
        };
    let narrow = |v: f64, g: usize| {
        let t = T::from_f64(v);
        if !t.to_f64().is_finite() && v.is_finite() {
            return Err(AdvError::Overflow { group: g });
        }
        Ok(t)
    };
    if let Grouping::Labelled(l) = grouping {
        // Interleaved groups: their members by a counting sort of the codes, then group by group.
        let mut start = vec![0usize; l.n_groups() + 1];
        for &c in l.codes() {
            start[c as usize + 1] += 1;
        }
        for g in 0..l.n_groups() {
            start[g + 1] += start[g];
        }
        let mut fill = start.clone();
        let mut rows = vec![0usize; n];
        for (i, &c) in l.codes().iter().enumerate() {
            rows[fill[c as usize]] = i;
            fill[c as usize] += 1;
        }
        let (mut col, mut adv, mut acc) = (Vec::new(), Vec::new(), Vec::new());
        for g in 0..l.n_groups() {
            let members = &rows[start[g]..start[g + 1]];
            group(members, g, &mut col, &mut adv, &mut acc)?;
            for (&i, &a) in members.iter().zip(&acc) {
                out[i] = narrow(a, g)?;
            }
        }
        return Ok(());
    }
    let parts = map_batches_mut(grouping, p.threads, out, |range, o| {
        let (mut col, mut adv, mut acc, mut rows) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut sweep = Sweep::new(k);
        let base = grouping.bounds(range.start).0;
        for g in range {
            let (a, b) = grouping.bounds(g);
            if sweep.run(&x[a * k..b * k], k, w, p, &mut o[a - base..b - base]) {
                continue;
            }
            rows.clear();
            rows.extend(a..b);
            group(&rows, g, &mut col, &mut adv, &mut acc)?;
            for (o, &v) in o[a - base..b - base].iter_mut().zip(&acc) {
                *o = narrow(v, g)?;
            }
        }
        Ok(())
    });
    parts.into_iter().collect()
}

/// The fast path of one contiguous group (`xs`: its rows, K values each): all K components in
/// three sweeps over the group's (cache-resident) rows: the sums shifted by the first row,
/// the squared deviations, then `out_i = sum_k w_k (x_ik - mu_k) k_k`. The moments are those
/// of `stats::moments` (an all-equal component: mean == its value, m2 == 0 exactly), the maps
/// those of `policy::group_affine`. Returns false where any component needs the general path
/// (non-finite values, scaled moments, a non-plain map, a fault, an overflow): the caller
/// then takes it and overwrites whatever was written.
struct Sweep {
    x0: Vec<f64>,
    s: Vec<f64>,
    m2: Vec<f64>,
    mu: Vec<f64>,
    f: Vec<f64>,
}

impl Sweep {
    fn new(k: usize) -> Sweep {
        Sweep {
            x0: vec![0.0; k],
            s: vec![0.0; k],
            m2: vec![0.0; k],
            mu: vec![0.0; k],
            f: vec![0.0; k],
        }
    }

    // Indexed loops (K is small): no iterator adaptors left to the inliner in the hot loop.
    // The usual K (1..=8) get a copy with K known at compile time: the per-component state
    // lives in registers and the inner loops unroll (the same operations in the same order,
    // so the same bits as the general copy).
    fn run<T: Real>(&mut self, xs: &[T], k: usize, w: &[f64], p: &Params, out: &mut [T]) -> bool {
        if xs.is_empty() {
            return true;
        }
        match k {
            1 => run_fixed::<T, 1>(xs, w, p, out),
            2 => run_fixed::<T, 2>(xs, w, p, out),
            3 => run_fixed::<T, 3>(xs, w, p, out),
            4 => run_fixed::<T, 4>(xs, w, p, out),
            5 => run_fixed::<T, 5>(xs, w, p, out),
            6 => run_fixed::<T, 6>(xs, w, p, out),
            7 => run_fixed::<T, 7>(xs, w, p, out),
            8 => run_fixed::<T, 8>(xs, w, p, out),
            _ => self.run_any(xs, k, w, p, out),
        }
    }

    fn run_any<T: Real>(
        &mut self,
        xs: &[T],
        k: usize,
        w: &[f64],
        p: &Params,
        out: &mut [T],
    ) -> bool {
        let rows = xs.len() / k;
        let n = rows as f64;
        let (x0, s, m2) = (&mut self.x0[..k], &mut self.s[..k], &mut self.m2[..k]);
        for c in 0..k {
            x0[c] = xs[c].to_f64();
            s[c] = 0.0;
            m2[c] = 0.0;
        }
        for r in 0..rows {
            let row = &xs[r * k..r * k + k];
            for c in 0..k {
                s[c] += row[c].to_f64() - x0[c];
            }
        }
        for c in 0..k {
            s[c] = x0[c] + s[c] / n; // the mean
        }
        for r in 0..rows {
            let row = &xs[r * k..r * k + k];
            for c in 0..k {
                let d = row[c].to_f64() - s[c];
                m2[c] += d * d;
            }
        }
        let (mu, f) = (&mut self.mu[..k], &mut self.f[..k]);
        if !weighted_affines::<T>(n, s, m2, w, p, mu, f) {
            return false;
        }
        for r in 0..rows {
            let row = &xs[r * k..r * k + k];
            let mut a = 0.0f64;
            for c in 0..k {
                a += (row[c].to_f64() - mu[c]) * f[c];
            }
            let t = T::from_f64(a);
            if !t.to_f64().is_finite() {
                return false; // the general path reports the overflow
            }
            out[r] = t;
        }
        true
    }
}

/// One component's map `(r - mu) * k` from its moments, when it is of the plain form the
/// sweeps write: `Ok(Some((mu, k)))`; `Ok(None)` where the general per-group path must run (a
/// non-finite mean, squares out of range, a map that is not plain); the policy's fault as it
/// gives it.
#[inline(always)]
fn plain_affine<T: Real>(
    n: f64,
    mean: f64,
    m2: f64,
    p: &Params,
) -> Result<Option<(f64, f64)>, Fault> {
    if !mean.is_finite() || (p.scale == Scale::Group && !squares_safe::<T>(mean, m2)) {
        return Ok(None);
    }
    let a = group_affine(n, mean, || (m2, 1.0), || false, p, Denom::ONE)?;
    Ok(a.plain().then_some((a.mu, a.k)))
}

/// `mu[c]`, `f[c] = w[c] * k` of every component's plain map; false where any component needs
/// the general path (which also reports faults).
#[inline(always)]
fn weighted_affines<T: Real>(
    n: f64,
    mean: &[f64],
    m2: &[f64],
    w: &[f64],
    p: &Params,
    mu: &mut [f64],
    f: &mut [f64],
) -> bool {
    for c in 0..mean.len() {
        match plain_affine::<T>(n, mean[c], m2[c], p) {
            Ok(Some((m, k))) => (mu[c], f[c]) = (m, w[c] * k),
            _ => return false,
        }
    }
    true
}

/// `Sweep::run_any` with K a constant (`xs` not empty): the same sweeps, the same order.
#[inline(always)]
fn run_fixed<T: Real, const K: usize>(xs: &[T], w: &[f64], p: &Params, out: &mut [T]) -> bool {
    let (rows, _) = xs.as_chunks::<K>();
    let n = rows.len() as f64;
    let mut x0 = [0.0f64; K];
    let mut s = [0.0f64; K];
    let mut m2 = [0.0f64; K];
    for c in 0..K {
        x0[c] = rows[0][c].to_f64();
    }
    for row in rows {
        for c in 0..K {
            s[c] += row[c].to_f64() - x0[c];
        }
    }
    for c in 0..K {
        s[c] = x0[c] + s[c] / n; // the mean
    }
    for row in rows {
        for c in 0..K {
            let d = row[c].to_f64() - s[c];
            m2[c] += d * d;
        }
    }
    let (mut mu, mut f) = ([0.0f64; K], [0.0f64; K]);
    if !weighted_affines::<T>(n, &s, &m2, w, p, &mut mu, &mut f) {
        return false;
    }
    for (row, o) in rows.iter().zip(out.iter_mut()) {
        let mut a = 0.0f64;
        for c in 0..K {
            a += (row[c].to_f64() - mu[c]) * f[c];
        }
        let t = T::from_f64(a);
        if !t.to_f64().is_finite() {
            return false; // the general path reports the overflow
        }
        *o = t;
    }
    true
}

/// Is this scale one a per-component normalisation accepts?
pub fn component_scale(s: Scale) -> bool {
    matches!(s, Scale::Group | Scale::None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::advantage::{self, Singleton};

    #[test]
    fn overflow_of_finite_rewards_is_an_error() {
        let x = [1e300f64, 0.0, -1e300, 0.0];
        let g = Grouping::uniform(2, 2).unwrap();
        let mut out = [0.0; 2];
        let p = Params {
            scale: Scale::None,
            ..Params::default()
        };
        let r = normalize_then_sum(&x, 2, &[1e10, 1.0], &mut out, &g, &p);
        assert!(
            matches!(r, Err(AdvError::Overflow { group: 0 })),
            "{r:?} {out:?}"
        );
    }

    #[test]
    fn block_sums_equal_each_row_summed_in_order() {
        // 8-row blocks and a tail, every K with a fixed-size copy: the bits of the loop
        for k in 1..=8usize {
            for n in [5usize, 8, 21] {
                let x: Vec<f32> = (0..n * k)
                    .map(|i| ((i * 37) % 29) as f32 * 0.071 - 1.0)
                    .collect();
                let w: Vec<f64> = (0..k).map(|c| 0.3 + c as f64 * 0.7).collect();
                let mut got = vec![0.0f32; n];
                weighted_row_sums(&x, k, &w, &mut got, NonFinite::Raise, 1).unwrap();
                for i in 0..n {
                    let mut s = 0.0f64;
                    for c in 0..k {
                        s += w[c] * x[i * k + c] as f64;
                    }
                    assert_eq!(
                        got[i].to_bits(),
                        (s as f32).to_bits(),
                        "k {k} n {n} row {i}"
                    );
                }
                // a NaN in a block: the general loop's rule (raise, naming the row)
                let mut bad = x.clone();
                bad[(n - 1) * k] = f32::NAN;
                let e = weighted_row_sums(&bad, k, &w, &mut got, NonFinite::Raise, 1);
                assert!(
                    matches!(e, Err(AdvError::NonFinite { index, .. }) if index == n - 1),
                    "{e:?}"
                );
            }
        }
    }

    #[test]
    fn sums_and_nan_rules() {
        let x = [1.0f64, 2.0, f64::NAN, 4.0, f64::NAN, f64::NAN];
        let w = [1.0, 0.5];
        let mut out = [0.0f64; 3];
        weighted_row_sums(&x, 2, &w, &mut out, NonFinite::Omit, 1).unwrap();
        assert_eq!(out[..2], [2.0, 2.0]);
        assert!(out[2].is_nan());
        assert!(matches!(
            weighted_row_sums(&x, 2, &w, &mut out, NonFinite::Raise, 1),
            Err(AdvError::NonFinite { index: 1, .. })
        ));
        assert!(weighted_row_sums(&x, 4, &w, &mut out, NonFinite::Omit, 1).is_err());
        // The fast K path hands a row with inf, or a sum out of f32's range, to the general rules.
        let y = [1.0f32, 2.0, f32::INFINITY, 1.0, 3e38, 3e38];
        let mut o32 = [0.0f32; 3];
        let r = weighted_row_sums(&y[..4], 2, &[1.0, 1.0], &mut o32[..2], NonFinite::Omit, 1);
        assert!(r.is_ok() && o32[..2] == [3.0, 1.0], "{r:?} {o32:?}");
        assert!(matches!(
            weighted_row_sums(&y, 2, &[1.0, 1.0], &mut o32, NonFinite::Omit, 1),
            Err(AdvError::BadParameter(_))
        ));
    }

    #[test]
    fn normalize_then_sum_is_the_weighted_sum_of_component_advantages() {
        let x: Vec<f64> = (0..24).map(|i| ((i * 7919) % 13) as f64).collect();
        let w = [2.0, -1.0, 0.5];
        let p = Params {
            ddof: 1,
            eps: 1e-6,
            singleton: Singleton::Raw,
            ..Params::default()
        };
        for grouping in [
            Grouping::uniform(8, 4).unwrap(),
            Grouping::ragged(8, &[0, 1, 5, 8]).unwrap(),
            Grouping::from_ids(&[3, 1, 3, 2, 1, 3, 2, 2]).unwrap().0,
        ] {
            let mut out = [0.0; 8];
            normalize_then_sum(&x, 3, &w, &mut out, &grouping, &p).unwrap();
            let mut want = [0.0; 8];
            for c in 0..3 {
                let col: Vec<f64> = (0..8).map(|i| x[i * 3 + c]).collect();
                let mut a = [0.0; 8];
                advantage::advantages(&col, &mut a, &grouping, &p).unwrap();
                for i in 0..8 {
                    want[i] += w[c] * a[i];
                }
            }
            for i in 0..8 {
                assert!(
                    (out[i] - want[i]).abs() <= 1e-12 * (1.0 + want[i].abs()),
                    "{i}"
                );
            }
        }
    }
}
