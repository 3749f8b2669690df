//! Uniform groups of a constant size (a copy per small power-of-two size: the per-group
//! loops unroll), `BLOCK` groups at a time.

use super::group::{finish_group, group_advantages, guarded};
use super::write::{block_affine_uniform, cannot_overflow, write_affine};
use super::{Lanes, BLOCK};
use crate::hint::{prefetch_range, STREAM_AHEAD};
use crate::policy::{Center, Denom, Fault, NonFinite, Params, Scale};
use crate::real::Real;
#[cfg(target_arch = "x86_64")]
use crate::simd;
use crate::stats::{sum_shifted, sum_sq_dev};

/// Uniform groups of a constant size G (x.len() is a multiple of G). With `AVX` (only in
/// code compiled with AVX2) and G a multiple of 8, the per-group loops are `simd`'s.
#[inline(always)]
pub(super) fn uniform<T: Real, const G: usize, const AVX: bool, W: Lanes>(
    x: &[T],
    out: &mut [T],
    first_group: usize,
    p: &Params,
    batch: Denom,
) -> Result<(), (usize, Fault)> {
    let per_block = BLOCK * G;
    let ahead = STREAM_AHEAD / std::mem::size_of::<T>();
    for (bi, start) in (0..x.len()).step_by(per_block).enumerate() {
        let end = (start + per_block).min(x.len());
        prefetch_range(x, start + ahead, end + ahead);
        prefetch_range(out, start + ahead, end + ahead);
        let (xb, ob) = (&x[start..end], &mut out[start..end]);
        let g0 = first_group + bi * BLOCK;
        let nb = xb.len() / G;
        if p.nonfinite == NonFinite::Omit || batch.pre != 1.0 {
            for j in 0..nb {
                let (xs, os) = (&xb[j * G..(j + 1) * G], &mut ob[j * G..(j + 1) * G]);
                group_advantages(xs, os, p, batch).map_err(|f| (g0 + j, f))?;
            }
            continue;
        }
        let mut mean = [0.0f64; BLOCK];
        let mut m2 = [0.0f64; BLOCK];
        let simd = cfg!(target_arch = "x86_64") && AVX && G.is_multiple_of(8);
        // Groups of four: one group per vector lane (`simd::moments4x8`).
        let fours = cfg!(target_arch = "x86_64") && AVX && G == 4;
        // A whole block takes the block-wide vector moments; a partial one, per-group loops.
        let whole = nb == BLOCK && (simd || fours);
        // The chunks `simd::moments8` reads, kept for its M2 pass and the write (written by
        // it; a whole block of groups of a multiple of 8 values).
        #[cfg(target_arch = "x86_64")]
        let mut stage = std::mem::MaybeUninit::<[W; G]>::uninit();
        #[cfg(target_arch = "x86_64")]
        if whole {
            let m2 = (p.scale == Scale::Group).then_some(&mut m2);
            // SAFETY: AVX2 is enabled (AVX); xb holds BLOCK groups of G values.
            unsafe {
                if fours {
                    simd::moments4x8(xb.as_ptr(), &mut mean, m2)
                } else {
                    simd::moments8::<T, W, G>(xb.as_ptr(), &mut stage, &mut mean, m2)
                }
            };
        }
        if !whole {
            for j in 0..nb {
                let xs: &[T; G] = xb[j * G..(j + 1) * G].try_into().unwrap();
                let x0 = xs[0].to_f64();
                #[cfg(target_arch = "x86_64")]
                if simd {
                    // SAFETY: AVX2 is enabled (AVX), xs holds G values.
                    mean[j] =
                        x0 + unsafe { simd::sum_shifted::<T, W, G>(xs.as_ptr(), x0) } / G as f64;
                    continue;
                }
                mean[j] = x0 + sum_shifted(xs, x0) / G as f64;
            }
            if p.scale == Scale::Group {
                for j in 0..nb {
                    let xs: &[T; G] = xb[j * G..(j + 1) * G].try_into().unwrap();
                    #[cfg(target_arch = "x86_64")]
                    if simd {
                        // SAFETY: as above.
                        m2[j] = unsafe { simd::sum_sq_dev::<T, W, G>(xs.as_ptr(), mean[j]) };
                        continue;
                    }
                    m2[j] = sum_sq_dev(xs, mean[j]);
                }
            }
        }
        // The affine maps of the whole block side by side (vector sqrt and division): every
        // group here has G >= 2 rewards, so `group_affine` reduces to this unless a group is
        // unusual, and then the block takes the per-group route.
        let centred = p.center != Center::None;
        let k = block_affine_uniform::<AVX>(G as f64, &m2, p, batch);
        // Plain loops with `&` (not `Iterator::all`, which is compiled out of line here,
        // without the vector instructions, and branches per group).
        // Over the whole block (lanes past `nb` count as usual), so that the loop is one
        // vector pass; |v| < inf is `is_finite` (false for NaN).
        let mut usual = true;
        for j in 0..BLOCK {
            let finite = (mean[j].abs() < f64::INFINITY) & (k[j].abs() < f64::INFINITY);
            usual &= (j >= nb) | (finite & !guarded::<T>(G, mean[j], m2[j], p));
        }
        if !usual {
            for j in 0..nb {
                let xs: &[T; G] = xb[j * G..(j + 1) * G].try_into().unwrap();
                let os: &mut [T; G] = (&mut ob[j * G..(j + 1) * G]).try_into().unwrap();
                finish_group(xs, os, mean[j], m2[j], p, batch).map_err(|f| (g0 + j, f))?;
            }
            continue;
        }
        let known = p.scale == Scale::Group;
        // Each group's centre read from `mean` where it is used: a copy of the whole array
        // here was a 64-byte load of values just stored in pieces (a store-forwarding stall).
        let mu_of = |j: usize| if centred { mean[j] } else { 0.0 };
        #[cfg(target_arch = "x86_64")]
        if fours && whole {
            let mut safe = true;
            for j in 0..BLOCK {
                safe &= cannot_overflow::<T>(G as f64, mean[j], mu_of(j), k[j], known);
            }
            if safe {
                // SAFETY: AVX2 is enabled (AVX); xb and ob hold BLOCK groups of 4 values.
                let mu: [f64; BLOCK] = std::array::from_fn(mu_of);
                // SAFETY: as above.
                unsafe { simd::write_affine4x8(xb.as_ptr(), ob.as_mut_ptr(), &mu, &k) };
                continue;
            }
        }
        // Centred on the group's own (finite) mean and scaled by its own (finite) std, no
        // advantage can overflow: `cannot_overflow` holds for every group (|mean - mu| = 0).
        let proven = centred && known && cannot_overflow::<T>(G as f64, 0.0, 0.0, 0.0, true);
        for j in 0..nb {
            let mu = mu_of(j);
            let probe = !proven && !cannot_overflow::<T>(G as f64, mean[j], mu, k[j], known);
            let (xs, os) = (&xb[j * G..(j + 1) * G], &mut ob[j * G..(j + 1) * G]);
            #[cfg(target_arch = "x86_64")]
            if simd && whole {
                // SAFETY: as above; os holds G values; `moments8` wrote the stage (whole).
                if !unsafe {
                    let kept = &stage.assume_init_ref()[G / 8 * j..G / 8 * (j + 1)];
                    simd::write_affine_kept::<T, W>(kept, os.as_mut_ptr(), G, mu, k[j], probe)
                } {
                    return Err((g0 + j, Fault::Overflow));
                }
                continue;
            }
            #[cfg(target_arch = "x86_64")]
            if simd {
                // SAFETY: as above; os holds G values.
                if !unsafe {
                    simd::write_affine_in::<T, W>(
                        xs.as_ptr(),
                        os.as_mut_ptr(),
                        0,
                        G,
                        mu,
                        k[j],
                        probe,
                    )
                } {
                    return Err((g0 + j, Fault::Overflow));
                }
                continue;
            }
            if !write_affine(xs, os, mu, k[j], probe) {
                return Err((g0 + j, Fault::Overflow));
            }
        }
    }
    Ok(())
}
