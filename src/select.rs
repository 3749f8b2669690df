//! Top-2 per group, and the pass@k advantage built on it (verl `grpo_passk`,
//! `verl/trainer/ppo/core_algos.py` 471-530): only each group's best reward gets a non-zero
//! advantage, `(r_max - r_2nd) / d` with `d = group std + eps` (`Scale::Group`) or 1
//! (`Scale::None`); every other reward gets 0.
//!
//! The group std is the moments stage's guarded std; the singleton and non-finite rules are
//! those of `policy` (a group with one valid reward: `Singleton::Zero` gives 0, `Error` the
//! singleton error; `Raw` has no meaning here and is rejected). Under `Propagate` a NaN
//! counts as the largest value (as `torch.topk`), so the NaN sample gets NaN.

use crate::advantage::{self, AdvError, Fault, NonFinite, Params, Scale, Singleton};
use crate::groups::Grouping;
use crate::policy::{fault_error, ratio};
use crate::real::Real;

/// The two largest valid values of a group and where the largest is (first of ties).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Top2 {
    pub best: usize,
    pub max: f64,
    pub second: f64,
    /// Number of valid values seen.
    pub n: usize,
}

impl Top2 {
    pub const EMPTY: Top2 = Top2 {
        best: usize::MAX,
        max: f64::NEG_INFINITY,
        second: f64::NEG_INFINITY,
        n: 0,
    };

    /// `a > b` with NaN greater than everything (torch.topk's order); NaN never beats NaN.
    #[inline(always)]
    fn above(a: f64, b: f64) -> bool {
        if a.is_nan() {
            !b.is_nan()
        } else {
            a > b
        }
    }

    #[inline(always)]
    pub fn push(&mut self, i: usize, v: f64) {
        if self.n == 0 || Top2::above(v, self.max) {
            if self.n > 0 {
                self.second = self.max;
            }
            self.max = v;
            self.best = i;
        } else if self.n == 1 || Top2::above(v, self.second) {
            self.second = v;
        }
        self.n += 1;
    }
}

/// The top-2 record of every group (indices are positions in `x`), `omit`: non-finite values
/// are left out.
pub fn top2_per_group<T: Real>(x: &[T], grouping: &Grouping, omit: bool) -> Vec<Top2> {
    let mut t = vec![Top2::EMPTY; grouping.n_groups()];
    let keep = |v: f64| !omit || v.is_finite();
    match grouping {
        Grouping::Labelled(l) => {
            for (i, (&c, v)) in l.codes().iter().zip(x).enumerate() {
                let v = v.to_f64();
                if keep(v) {
                    t[c as usize].push(i, v);
                }
            }
        }
        _ => {
            for (g, rec) in t.iter_mut().enumerate() {
                let (a, b) = grouping.bounds(g);
                for (i, v) in x[a..b].iter().enumerate() {
                    let v = v.to_f64();
                    if keep(v) {
                        rec.push(a + i, v);
                    }
                }
            }
        }
    }
    t
}

/// The members of group `g` in input order (for error messages).
fn members(grouping: &Grouping, g: usize) -> Vec<usize> {
    match grouping {
        Grouping::Labelled(l) => (0..l.len())
            .filter(|&i| l.codes()[i] as usize == g)
            .collect(),
        _ => {
            let (a, b) = grouping.bounds(g);
            (a..b).collect()
        }
    }
}

/// Pass@k advantages of `x` into `out` (same length): see the module doc. `p.center` is not
/// used; `p.scale` must be `Group` or `None`.
pub fn passk_advantages<T: Real>(
    x: &[T],
    out: &mut [T],
    grouping: &Grouping,
    p: &Params,
) -> Result<(), AdvError> {
    if !matches!(p.scale, Scale::Group | Scale::None) {
        return Err(AdvError::BadParameter(
            "pass@k advantages take scale='group' or 'none'".into(),
        ));
    }
    if p.singleton == Singleton::Raw {
        return Err(AdvError::BadParameter(
            "pass@k advantages take singleton='zero' or 'error' ('raw' has no meaning here)".into(),
        ));
    }
    if out.len() != x.len() {
        return Err(AdvError::LengthMismatch {
            what: "out",
            len: out.len(),
            n: x.len(),
        });
    }
    // The moments stage: length and parameter checks, the non-finite rules, the group std.
    let ms = advantage::group_moments(x, grouping, p, None)?;
    let top = top2_per_group(x, grouping, p.nonfinite == NonFinite::Omit);
    let value = |i: usize| x[i].to_f64();
    let error = |g: usize, f: Fault| fault_error(members(grouping, g).into_iter(), value, g, f);
    out.iter_mut().for_each(|o| *o = T::from_f64(0.0));
    for (g, (m, t)) in ms.iter().zip(&top).enumerate() {
        if t.n == 0 {
            continue;
        }
        if t.n == 1 {
            match p.singleton {
                Singleton::Error => return Err(error(g, Fault::Singleton)),
                _ => continue,
            }
        }
        let diff = t.max - t.second;
        let adv = match p.scale {
            // In the moments' power-of-two units: exact for spreads beyond the f64 squares.
            Scale::Group => {
                let pre = 1.0 / m.scale;
                ratio(diff * pre, m.std_scaled(p.ddof) + p.eps * pre)
            }
            _ => diff,
        };
        let a = T::from_f64(adv);
        // Finite rewards whose advantage leaves the output type: the overflow error.
        if !a.to_f64().is_finite()
            && t.max.is_finite()
            && t.second.is_finite()
            && m.mean.is_finite()
        {
            return Err(error(g, Fault::Overflow));
        }
        out[t.best] = a;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(scale: Scale, ddof: u32, eps: f64) -> Params {
        Params {
            scale,
            ddof,
            eps,
            ..Params::default()
        }
    }

    #[test]
    fn only_the_best_of_each_group() {
        let x = [1.0f64, 3.0, 2.0, 5.0, 5.0, 0.0];
        let g = Grouping::uniform(6, 3).unwrap();
        let mut out = [9.0; 6];
        passk_advantages(&x, &mut out, &g, &params(Scale::None, 1, 0.0)).unwrap();
        assert_eq!(out, [0.0, 1.0, 0.0, 0.0, 0.0, 0.0]);
        passk_advantages(&x, &mut out, &g, &params(Scale::Group, 1, 0.0)).unwrap();
        assert_eq!(out[1], 1.0 / 1.0);
        assert_eq!(out[3], 0.0); // a tie at the top: r_max - r_2nd = 0
    }

    #[test]
    fn labelled_and_singletons() {
        let (g, _) = Grouping::from_ids(&[7, 8, 7, 9]).unwrap();
        let x = [1.0f32, 4.0, 3.0, 2.0];
        let mut out = [0.0f32; 4];
        passk_advantages(&x, &mut out, &g, &params(Scale::None, 1, 0.0)).unwrap();
        assert_eq!(out, [0.0, 0.0, 2.0, 0.0]);
        let p = Params {
            singleton: Singleton::Error,
            ..params(Scale::None, 1, 0.0)
        };
        assert!(matches!(
            passk_advantages(&x, &mut out, &g, &p),
            Err(AdvError::Singleton { group: 1, index: 1 })
        ));
    }

    #[test]
    fn nan_rules() {
        let g = Grouping::uniform(3, 3).unwrap();
        let x = [1.0f64, f64::NAN, 0.0];
        let mut out = [0.0; 3];
        assert!(matches!(
            passk_advantages(&x, &mut out, &g, &params(Scale::Group, 1, 0.0)),
            Err(AdvError::NonFinite { index: 1, .. })
        ));
        let p = Params {
            nonfinite: NonFinite::Propagate,
            ..params(Scale::None, 1, 0.0)
        };
        passk_advantages(&x, &mut out, &g, &p).unwrap();
        assert!(out[1].is_nan() && out[0] == 0.0 && out[2] == 0.0);
        let p = Params {
            nonfinite: NonFinite::Omit,
            ..params(Scale::None, 1, 0.0)
        };
        passk_advantages(&x, &mut out, &g, &p).unwrap();
        assert_eq!(out, [1.0, 0.0, 0.0]);
    }
}
