//! The policy stage: the parameters of an advantage and the rules that turn a group's
//! moments into an affine map of its rewards, `A = ((r - mu) * pre - off) * k`, or into a
//! fault naming the group. Every write path (uniform and ragged kernels, labelled groups,
//! given moments) calls these functions; no rule is written anywhere else.
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
//! Denominators are carried in the moments' power-of-two units (`Denom`), so a spread or
//! magnitude whose squares leave the f64 range never turns into a silent 0, inf or NaN.

use crate::stats::{std_of, Moments};
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
    /// A batch standard deviation given by the caller (only with `Scale::Batch` or
    /// `Scale::BatchResidual`): the denominator is then `batch_std + eps`.
    pub batch_std: Option<f64>,
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
            batch_std: None,
        }
    }
}

impl Params {
    /// Does the denominator come from the whole batch?
    pub fn batch_scale(&self) -> bool {
        matches!(self.scale, Scale::Batch | Scale::BatchResidual)
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
    /// A NaN or infinite token input of a scan (`what`: "rewards" or "values", flat position
    /// `index`; `scan`).
    TokenNonFinite {
        what: &'static str,
        index: usize,
        value: f64,
    },
    /// Finite token rewards whose returns leave the output dtype's range (response `row`).
    ReturnsOverflow {
        row: usize,
    },
    /// A NaN or infinite value under the mask of a masked whitening (`whiten`).
    MaskedNonFinite {
        index: usize,
        value: f64,
    },
    /// A whitening mask that selects fewer tokens than the variance needs (`count`: their
    /// number or weight).
    TooFewTokens {
        count: f64,
        unbiased: bool,
    },
    /// Finite masked values whose variance overflows f64.
    MaskedOverflow,
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
            AdvError::TokenNonFinite { what, index, value } => write!(
                f,
                "{what}[{index}] is {value}; pass nan='propagate' to allow non-finite inputs"
            ),
            AdvError::ReturnsOverflow { row } => write!(
                f,
                "the returns of response {row} overflow the output dtype; rescale the rewards"
            ),
            AdvError::MaskedNonFinite { index, value } => write!(
                f,
                "values[{index}] is {value} under the mask; pass nan='propagate' to allow non-finite values"
            ),
            AdvError::TooFewTokens { count, unbiased } => write!(
                f,
                "the mask selects {count} token(s); masked whitening needs {}",
                if *unbiased {
                    "more than one (the unbiased variance divides by count - 1)"
                } else {
                    "at least one"
                }
            ),
            AdvError::MaskedOverflow => {
                f.write_str("the masked values overflow float64 in their variance; rescale them")
            }
        }
    }
}

impl std::error::Error for AdvError {}

/// Why one group could not be computed (turned into an [`AdvError`] with indices by the
/// caller, which has the rewards).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fault {
    NonFinite,
    Singleton,
    /// Finite rewards whose group statistics (or advantages) overflow.
    Overflow,
}

/// The error for a fault of group `g` whose rewards sit at `members` (in input order),
/// naming the offending reward: the first non-finite one (none: an overflow), or a singleton's
/// one valid reward. `value(i)` reads reward `i`. Every layout reports its faults through it.
pub fn fault_error(
    members: impl Iterator<Item = usize> + Clone,
    value: impl Fn(usize) -> f64,
    g: usize,
    fault: Fault,
) -> AdvError {
    match fault {
        Fault::NonFinite => members
            .clone()
            .find(|&i| !value(i).is_finite())
            .map(|index| AdvError::NonFinite {
                index,
                value: value(index),
            })
            .unwrap_or(AdvError::Overflow { group: g }),
        Fault::Singleton => {
            let first = members.clone().next().unwrap_or(0);
            let index = members
                .clone()
                .find(|&i| value(i).is_finite())
                .unwrap_or(first);
            AdvError::Singleton { group: g, index }
        }
        Fault::Overflow => AdvError::Overflow { group: g },
    }
}

/// The parameters' own rules (before any data is read).
pub fn check_params(p: &Params) -> Result<(), AdvError> {
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
    if let Some(b) = p.batch_std {
        if !p.batch_scale() {
            return Err(AdvError::BadParameter(
                "batch_std is only used with scale='batch' or 'batch_residual'".into(),
            ));
        }
        // NaN is allowed: an undefined batch std (a batch poisoned by a non-finite reward under
        // Propagate, or with no more rewards than ddof), which scales advantages to NaN exactly
        // as a batch std computed here would.
        if b < 0.0 || b.is_infinite() {
            return Err(AdvError::BadParameter(format!(
                "batch_std must be a number >= 0 (or NaN: undefined), got {b}"
            )));
        }
    }
    Ok(())
}

/// The rule for a group (of `count` valid rewards) whose mean is not finite: `Err` for a
/// fault, `Ok(true)` for a group poisoned by request (`Propagate`: all NaN), `Ok(false)` for
/// a finite mean. `has_nonfinite` is called only to tell a non-finite reward from an overflow.
#[inline(always)]
pub fn nonfinite_mean(
    count: f64,
    mean: f64,
    has_nonfinite: impl FnOnce() -> bool,
    p: &Params,
) -> Result<bool, Fault> {
    if count == 0.0 || mean.is_finite() {
        return Ok(false);
    }
    match p.nonfinite {
        NonFinite::Raise => Err(Fault::NonFinite),
        // Only finite rewards were summed: they overflowed.
        NonFinite::Omit => Err(Fault::Overflow),
        NonFinite::Propagate if !has_nonfinite() => Err(Fault::Overflow),
        NonFinite::Propagate => Ok(true),
    }
}

/// The faults a group's moments must report before they enter a batch statistic:
/// non-finite rewards under `Raise`, overflowing finite rewards, singletons under
/// `Singleton::Error`.
#[inline]
pub fn batch_fault(m: &Moments, has_nonfinite: impl FnOnce() -> bool, p: &Params) -> Option<Fault> {
    match nonfinite_mean(m.count, m.mean, has_nonfinite, p) {
        Err(f) => Some(f),
        // A poisoned group is NaN, whatever its size.
        Ok(true) => None,
        Ok(false) => {
            (m.count == 1.0 && p.singleton == Singleton::Error).then_some(Fault::Singleton)
        }
    }
}

/// The per-group statistics rule (`group_stats`): the mean's faults, then an overflowing std
/// of finite rewards. Returns the (count, mean, std) to report.
pub fn reported_stats(
    m: &Moments,
    has_nonfinite: impl FnOnce() -> bool,
    p: &Params,
) -> Result<(f64, f64, f64), Fault> {
    nonfinite_mean(m.count, m.mean, has_nonfinite, p)?;
    let mean = if m.count == 0.0 { f64::NAN } else { m.mean };
    let std = if mean.is_finite() {
        m.std(p.ddof)
    } else {
        f64::NAN
    };
    if mean.is_finite() && m.count > p.ddof as f64 && !std.is_finite() {
        return Err(Fault::Overflow);
    }
    Ok((m.count, mean, std))
}

/// A denominator in units of `1 / pre` (`pre` a power of two, 1 unless the moments are
/// scaled): `A = ((r - mu) * pre - off) * factor / d`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Denom {
    pub pre: f64,
    pub d: f64,
}

impl Denom {
    /// No scaling (`Scale::None`, and where no batch statistic is needed).
    pub const ONE: Denom = Denom { pre: 1.0, d: 1.0 };

    /// `std + eps` from moments in the scaled form; Err when the std overflows f64.
    #[inline(always)]
    fn of(m2: f64, scale: f64, count: f64, p: &Params) -> Result<Denom, ()> {
        let s = std_of(m2, count, p.ddof as f64);
        if !s.is_finite() {
            return Err(());
        }
        if scale == 1.0 {
            return Ok(Denom {
                pre: 1.0,
                d: s + p.eps,
            });
        }
        let pre = 1.0 / scale;
        Ok(Denom {
            pre,
            d: s + p.eps * pre,
        })
    }
}

/// The leave-one-out factor of a group of `n` rewards: r - mean of the others is
/// n / (n - 1) * (r - mean). (Shared with the vector loops of `kernel`.)
#[inline(always)]
pub fn loo_factor(n: f64) -> f64 {
    n / (n - 1.0)
}

/// The factor of the affine map: `factor / d`, and 0 for a scope without spread (d = 0):
/// no signal, never 0/0. (Shared with the vector loops of `kernel`.)
#[inline(always)]
pub fn ratio(factor: f64, d: f64) -> f64 {
    if d == 0.0 {
        0.0
    } else {
        factor / d
    }
}

/// The denominator of the batch scales: `batch_std + eps` when the caller gave the batch std,
/// else the std of the batch moments `bm` (NaN when undefined or `poisoned` by a non-finite
/// reward under `Propagate`; an overflow error when finite rewards overflow it).
pub fn batch_denom(bm: &Moments, poisoned: bool, p: &Params) -> Result<Denom, AdvError> {
    if let Some(b) = p.batch_std {
        return Ok(Denom {
            pre: 1.0,
            d: b + p.eps,
        });
    }
    let nan = Denom {
        pre: 1.0,
        d: f64::NAN,
    };
    if poisoned || bm.count.is_nan() || bm.count <= p.ddof as f64 {
        return Ok(nan);
    }
    if !bm.mean.is_finite() {
        return Err(AdvError::BatchOverflow);
    }
    Denom::of(bm.m2, bm.scale, bm.count, p).map_err(|_| AdvError::BatchOverflow)
}

/// The affine map of a group: every valid reward r gets the advantage
/// `((r - mu) * pre - off) * k`. `pre` is 1 (and `off` 0) except for groups whose spread or
/// denominator leaves the f64 range: then `pre` is a power of two that brings the residuals
/// into range first (exact), and `off` may hold the mean in those units (see `recentred`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Affine {
    pub mu: f64,
    pub pre: f64,
    pub off: f64,
    pub k: f64,
    /// Is `mu` the group's mean (a centred map, which `recentred` may centre exactly)?
    pub centred: bool,
}

impl Affine {
    const ZERO: Affine = Affine {
        mu: 0.0,
        pre: 1.0,
        off: 0.0,
        k: 0.0,
        centred: false,
    };

    #[inline(always)]
    pub fn apply(&self, v: f64) -> f64 {
        ((v - self.mu) * self.pre - self.off) * self.k
    }

    /// Is this map of the plain form `(r - mu) * k` (what the fast write loops compute)?
    #[inline(always)]
    pub fn plain(&self) -> bool {
        self.pre == 1.0 && self.off == 0.0
    }

    /// The same map centred exactly on the group's valid values `vals` (their first value
    /// `x0` and their mean in units of `1 / pre`), for a scaled map (`pre != 1`) of a centred
    /// group: the mean of a group with a subnormal spread is not always an f64, its scaled
    /// offset is.
    pub fn recentred(self, mut vals: impl Iterator<Item = f64> + Clone) -> Affine {
        if self.pre == 1.0 || !self.k.is_finite() || self.k == 0.0 || !self.centred {
            return self;
        }
        let Some(x0) = vals.clone().next() else {
            return self;
        };
        let (mut n, mut s) = (0.0f64, 0.0f64);
        for v in vals.by_ref() {
            n += 1.0;
            s += (v - x0) * self.pre;
        }
        Affine {
            mu: x0,
            off: s / n,
            ..self
        }
    }
}

/// The affine map of a group with `count` valid rewards of mean `mean`. `spread` (called
/// only when the group std is needed) gives the group's scaled (m2, scale); `has_nonfinite`
/// is called only to tell a non-finite reward from an overflow; `batch` is the batch
/// denominator (used by the batch scales). Err for a policy fault.
#[inline(always)]
pub fn group_affine(
    count: f64,
    mean: f64,
    spread: impl FnOnce() -> (f64, f64),
    has_nonfinite: impl FnOnce() -> bool,
    p: &Params,
    batch: Denom,
) -> Result<Affine, Fault> {
    if nonfinite_mean(count, mean, has_nonfinite, p)? {
        // The whole group becomes NaN.
        return Ok(Affine {
            k: f64::NAN,
            ..Affine::ZERO
        });
    }
    let scope = match p.scale {
        Scale::Batch | Scale::BatchResidual => batch,
        _ => Denom::ONE,
    };
    // Groups of one reward are never centred on their mean.
    let mut centred = false;
    let (mu, factor, denom) = if count == 0.0 {
        return Ok(Affine::ZERO);
    } else if count == 1.0 {
        match p.singleton {
            Singleton::Zero => return Ok(Affine::ZERO),
            Singleton::Error => return Err(Fault::Singleton),
            // Mean 0 and std 1.
            Singleton::Raw if p.scale == Scale::Group => (
                0.0,
                1.0,
                Ok(Denom {
                    pre: 1.0,
                    d: 1.0 + p.eps,
                }),
            ),
            Singleton::Raw => (0.0, 1.0, Ok(scope)),
        }
    } else {
        let (mu, factor) = match p.center {
            Center::Mean => (mean, 1.0),
            Center::LeaveOneOut => (mean, loo_factor(count)),
            Center::None => (0.0, 1.0),
        };
        centred = p.center != Center::None;
        let denom = match p.scale {
            Scale::Group => {
                let (m2, scale) = spread();
                Denom::of(m2, scale, count, p)
            }
            _ => Ok(scope),
        };
        (mu, factor, denom)
    };
    // Finite rewards (the mean is finite) whose deviations overflow f64.
    let Denom { pre, d } = denom.map_err(|_| Fault::Overflow)?;
    let k = ratio(factor, d);
    if d == 0.0 {
        return Ok(Affine { mu, ..Affine::ZERO });
    }
    if k.is_infinite() && d.is_finite() {
        // 1/d overflows (a subnormal denominator): lift the residuals first.
        const LIFT: f64 = 1.152_921_504_606_847e18; // 2^60: exact scaling
        return Ok(Affine {
            mu,
            pre: pre * LIFT,
            off: 0.0,
            k: factor / (d * LIFT),
            centred,
        });
    }
    Ok(Affine {
        mu,
        pre,
        off: 0.0,
        k,
        centred,
    })
}
