//! Labelled groups whose rewards are interleaved (not contiguous): streaming passes over the
//! rewards and their group codes, with per-group tables, instead of gathering each group.
//!
//! Every pass reads the rewards and codes in order (split into equal element ranges across
//! threads) and touches only a table with one entry per group, so no permutation of the
//! rewards is ever built and the passes run at close to streaming speed when the table fits
//! in cache.

pub use crate::groups::Labelled;
use crate::hint::{prefetch, PREFETCH};
use crate::parallel::{map_ranges, map_ranges_mut};
use crate::policy::{self, group_affine, AdvError, Denom, Fault, NonFinite, Params};
use crate::real::Real;
use crate::stats::{moments_finite, squares_safe, Moments};
use std::ops::Range;

/// A per-group table of `len` entries set to `fill`. Tables are read and written at random,
/// one access per reward: on Linux they are backed by huge pages where the kernel allows it,
/// which removes most TLB misses once the table outgrows the cache. (The advice used to be
/// given at the allocation's start, which is not page-aligned: the kernel refused it.)
fn table<E: Copy>(len: usize, fill: E) -> Vec<E> {
    let mut v: Vec<E> = crate::hint::with_capacity_huge(len);
    v.resize(len, fill);
    v
}

/// Pair tables ([f64; 2] per group) recycled between passes and calls. The passes need one
/// table per thread, and fresh multi-megabyte tables cost page faults and kernel zeroing on
/// every call (about 11k faults, a fifth of the call, for 625k groups on two threads). At
/// most `POOL_TABLES` tables of at most `POOL_TABLE_BYTES` each are kept. Only `try_lock`:
/// never blocks (so also safe in a forked child).
static POOL: std::sync::Mutex<Vec<Vec<[f64; 2]>>> = std::sync::Mutex::new(Vec::new());
const POOL_TABLES: usize = 4;
const POOL_TABLE_BYTES: usize = 32 << 20;

/// A pair table of `len` entries set to `fill(g)`, recycled when the pool has one.
fn pair_table(len: usize, fill: impl Fn(usize) -> [f64; 2]) -> Vec<[f64; 2]> {
    let recycled = POOL.try_lock().ok().and_then(|mut pool| {
        let i = pool.iter().position(|t| t.capacity() >= len)?;
        Some(pool.swap_remove(i))
    });
    let mut t = recycled.unwrap_or_default();
    t.clear();
    t.reserve_exact(len);
    t.extend((0..len).map(fill));
    t
}

/// The per-thread pair tables of one pass summed into the first (entry 0 of each pair; entry
/// 1 is the same in all), the others recycled.
fn sum_parts(parts: Vec<Vec<[f64; 2]>>) -> Vec<[f64; 2]> {
    let mut parts = parts.into_iter();
    let mut total = parts.next().unwrap();
    for part in parts {
        for (t, v) in total.iter_mut().zip(&part) {
            t[0] += v[0];
        }
        recycle(part);
    }
    total
}

/// Return a table to the pool (dropped if the pool is full, busy, or the table is huge).
fn recycle(t: Vec<[f64; 2]>) {
    if t.capacity() * std::mem::size_of::<[f64; 2]>() <= POOL_TABLE_BYTES {
        if let Ok(mut pool) = POOL.try_lock() {
            if pool.len() < POOL_TABLES {
                pool.push(t);
            }
        }
    }
}

/// Visit the rewards of `r` (as f64) with their group's entry of `t`, asking for each entry
/// `PREFETCH` rewards ahead.
#[inline(always)]
fn visit<T: Real, E>(
    codes: &[u32],
    x: &[T],
    r: Range<usize>,
    t: &mut [E],
    mut f: impl FnMut(&mut E, f64),
) {
    let ahead = &codes[(r.start + PREFETCH).min(r.end)..r.end];
    for (i, (&c, &v)) in codes[r.clone()].iter().zip(&x[r]).enumerate() {
        if let Some(&next) = ahead.get(i) {
            prefetch(&t[next as usize]);
        }
        f(&mut t[c as usize], v.to_f64());
    }
}

/// Moments of every group (count of valid rewards, mean, M2), two passes in f64.
/// Means are taken relative to a member of the group (its first valid reward), so all-equal
/// groups get their value exactly and M2 = 0.
pub(crate) fn moments<T: Real>(x: &[T], l: &Labelled, p: &Params) -> Vec<Moments> {
    let omit = p.nonfinite == NonFinite::Omit;
    let codes = l.codes();
    let k = l.n_groups();
    let mut shift: Vec<f64> = l.first().iter().map(|&i| x[i].to_f64()).collect();
    if omit && shift.iter().any(|s| !s.is_finite()) {
        // Rare: a group starts with a non-finite reward; shift by its first finite one.
        let mut found: Vec<bool> = shift.iter().map(|s| s.is_finite()).collect();
        for (&c, &v) in codes.iter().zip(x) {
            let (c, v) = (c as usize, v.to_f64());
            if !found[c] && v.is_finite() {
                shift[c] = v;
                found[c] = true;
            }
        }
    }
    // Pass 1: [count, sum of (r - shift), shift] per group, 32 bytes so that each reward
    // touches one cache line of the table. Without `Omit` every reward counts, the counts
    // are the group sizes, and the entry shrinks to [sum, shift] (16 bytes): tables half the
    // size stay in cache for twice as many groups. The means overwrite the shifts (one
    // table fewer to fault in).
    let mut mean = shift;
    let counts: Option<Vec<u64>> = if omit {
        let parts = map_ranges(x.len(), p.threads, |r| {
            let mut t = table(k, [0.0f64; 4]);
            for (e, &sh) in t.iter_mut().zip(&mean) {
                e[2] = sh;
            }
            visit(codes, x, r, &mut t, |e, v| {
                if v.is_finite() {
                    e[0] += 1.0;
                    e[1] += v - e[2];
                }
            });
            t
        });
        let mut parts = parts.into_iter();
        let mut sums = parts.next().unwrap();
        for part in parts {
            for (t, v) in sums.iter_mut().zip(part) {
                t[0] += v[0];
                t[1] += v[1];
            }
        }
        for (m, s) in mean.iter_mut().zip(&sums) {
            *m = if s[0] > 0.0 { s[2] + s[1] / s[0] } else { 0.0 };
        }
        Some(sums.iter().map(|s| s[0] as u64).collect())
    } else {
        let parts = map_ranges(x.len(), p.threads, |r| {
            let mut t = pair_table(k, |g| [0.0, mean[g]]);
            visit(codes, x, r, &mut t, |e, v| e[0] += v - e[1]);
            t
        });
        let sums = sum_parts(parts);
        for ((m, s), &n) in mean.iter_mut().zip(&sums).zip(l.sizes()) {
            *m = if n > 0 { s[1] + s[0] / n as f64 } else { 0.0 };
        }
        recycle(sums);
        None
    };
    // Pass 2: [M2, mean] per group.
    let parts = map_ranges(x.len(), p.threads, |r| {
        let mut t = pair_table(k, |g| [0.0, mean[g]]);
        visit(codes, x, r, &mut t, |e, v| {
            if !omit || v.is_finite() {
                let d = v - e[1];
                e[0] += d * d;
            }
        });
        t
    });
    let m2 = sum_parts(parts);
    // (Fresh memory of 32 bytes a group, megabytes for many groups: huge pages.)
    let mut moments: Vec<Moments> = crate::hint::with_capacity_huge(k);
    moments.extend((0..k).map(|g| Moments {
        count: counts.as_ref().map_or(l.sizes()[g], |c| c[g]) as f64,
        mean: mean[g],
        m2: m2[g][0],
        scale: 1.0,
    }));
    recycle(m2);
    if !T::SQUARES_FIT_F64 {
        guard(x, l, omit, &mut moments);
    }
    moments
}

/// The guard of `stats` for f64 groups whose squared deviations may have under- or
/// overflowed: their moments recomputed from their gathered rewards (one pass for all).
fn guard<T: Real>(x: &[T], l: &Labelled, omit: bool, moments: &mut [Moments]) {
    let risky = |m: &Moments| m.count > 0.0 && !squares_safe::<T>(m.mean, m.m2);
    let groups: Vec<usize> = (0..moments.len()).filter(|&g| risky(&moments[g])).collect();
    if groups.is_empty() {
        return;
    }
    let mut slot = vec![u32::MAX; moments.len()];
    for (j, &g) in groups.iter().enumerate() {
        slot[g] = j as u32;
    }
    let mut vals: Vec<Vec<T>> = vec![Vec::new(); groups.len()];
    for (&c, &v) in l.codes().iter().zip(x) {
        if let Some(vs) = vals.get_mut(slot[c as usize] as usize) {
            vs.push(v);
        }
    }
    for (&g, vs) in groups.iter().zip(&vals) {
        moments[g] = if omit {
            moments_finite(vs)
        } else {
            crate::stats::moments(vs)
        };
    }
}

/// Moments of every group with frequency weights `w` (see `stats::moments_weighted`): the
/// rewards and weights of each group gathered in one pass (no fast path needed here).
pub(crate) fn moments_weighted<T: Real>(
    x: &[T],
    w: &[f64],
    l: &Labelled,
    omit: bool,
) -> Vec<Moments> {
    let mut vals: Vec<(Vec<T>, Vec<f64>)> = l
        .sizes()
        .iter()
        .map(|&s| {
            (
                Vec::with_capacity(s as usize),
                Vec::with_capacity(s as usize),
            )
        })
        .collect();
    for ((&c, &v), &wi) in l.codes().iter().zip(x).zip(w) {
        let (vs, ws) = &mut vals[c as usize];
        vs.push(v);
        ws.push(wi);
    }
    vals.iter()
        .map(|(vs, ws)| crate::stats::moments_weighted(vs, ws, omit))
        .collect()
}

/// The valid rewards of group `g` (rare paths only: error reports, guarded stds).
fn members<T: Real>(x: &[T], l: &Labelled, g: usize) -> Vec<usize> {
    (0..x.len())
        .filter(|&i| l.codes()[i] as usize == g)
        .collect()
}

/// True when group `g` holds only finite rewards (so a non-finite mean is an overflow).
pub(crate) fn overflowed<T: Real>(x: &[T], l: &Labelled, g: usize) -> bool {
    members(x, l, g).iter().all(|&i| x[i].to_f64().is_finite())
}

/// The error for a fault of group `g` (the policy's `fault_error` over its members).
pub(crate) fn fault_error<T: Real>(x: &[T], l: &Labelled, g: usize, fault: Fault) -> AdvError {
    let idx = members(x, l, g);
    policy::fault_error(idx.iter().copied(), |i| x[i].to_f64(), g, fault)
}

/// Advantages of interleaved labelled groups, from their moments.
pub(crate) fn advantages<T: Real>(
    x: &[T],
    out: &mut [T],
    l: &Labelled,
    p: &Params,
    moments: &[Moments],
    batch: Denom,
) -> Result<(), AdvError> {
    // (mu, k) per group: the advantage of a valid reward r is (r - mu) * k. Groups with a
    // scaled map get k = 0 here and are rewritten after.
    let mut affine = pair_table(moments.len(), |_| [0.0; 2]);
    let mut scaled = Vec::new();
    for (g, (m, e)) in moments.iter().zip(affine.iter_mut()).enumerate() {
        let has_nonfinite = || !overflowed(x, l, g);
        let a = group_affine(m.count, m.mean, || (m.m2, m.scale), has_nonfinite, p, batch)
            .map_err(|f| fault_error(x, l, g, f))?;
        if a.plain() {
            *e = [a.mu, a.k];
        } else {
            scaled.push((g, a));
            *e = [a.mu, 0.0];
        }
    }
    let omit = p.nonfinite == NonFinite::Omit;
    let codes = l.codes();
    let overflowed = map_ranges_mut(
        x.len(),
        p.threads,
        out,
        |i| i,
        |r, o| {
            let start = r.start;
            let mut first_bad: Option<usize> = None;
            let ahead = &codes[(r.start + PREFETCH).min(r.end)..r.end];
            for (i, ((o, &v), &c)) in o.iter_mut().zip(&x[r.clone()]).zip(&codes[r]).enumerate() {
                if let Some(&c_next) = ahead.get(i) {
                    prefetch(&affine[c_next as usize]);
                }
                let [mu, k] = affine[c as usize];
                let v = v.to_f64();
                *o = T::from_f64(if omit && !v.is_finite() {
                    0.0
                } else {
                    (v - mu) * k
                });
                // Non-finite output from a non-poisoned group: an overflow (checked after).
                if !o.to_f64().is_finite() && !k.is_nan() && first_bad.is_none() {
                    first_bad = Some(start + i);
                }
            }
            first_bad
        },
    );
    recycle(affine);
    if let Some(g) = overflowed
        .into_iter()
        .flatten()
        .map(|i| codes[i] as usize)
        .min()
    {
        return Err(AdvError::Overflow { group: g });
    }
    // Rare: groups whose spread or denominator leaves the f64 range, with their scaled map.
    for (g, a) in scaled {
        let idx = members(x, l, g);
        let valid = idx
            .iter()
            .map(|&i| x[i].to_f64())
            .filter(|v| !omit || v.is_finite());
        let a = a.recentred(valid);
        for i in idx {
            let v = x[i].to_f64();
            out[i] = T::from_f64(if omit && !v.is_finite() {
                0.0
            } else {
                a.apply(v)
            });
            if !out[i].to_f64().is_finite() && !a.k.is_nan() {
                return Err(AdvError::Overflow { group: g });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Recycled tables come back with exactly the requested length and fill, whether the
    /// recycled one was longer, shorter or dirty.
    #[test]
    fn recycled_tables_are_refilled() {
        for len in [1000usize, 10, 5000, 0, 1000] {
            let mut t = pair_table(len, |g| [g as f64, -1.0]);
            assert_eq!(t.len(), len);
            assert!(t.iter().enumerate().all(|(g, e)| *e == [g as f64, -1.0]));
            t.iter_mut().for_each(|e| *e = [f64::NAN; 2]);
            recycle(t);
        }
    }
}
