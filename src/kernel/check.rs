//! The compiled copies of the write pass (baseline, AVX2, AVX-512F) against the generic one.

use super::write_batch_impl;
#[cfg(target_arch = "x86_64")]
use super::{write_batch_avx2, write_batch_avx512};
use crate::groups::Grouping;
use crate::policy::{Center, Denom, Fault, Params, Scale, Singleton};
use crate::real::Real;

/// A compiled copy of the write pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    Generic,
    Avx2,
    Avx512,
}

impl Isa {
    /// The copy named `avx2` or `avx512f` (`generic` for the baseline).
    pub fn named(name: &str) -> Option<Isa> {
        match name {
            "generic" => Some(Isa::Generic),
            "avx2" => Some(Isa::Avx2),
            "avx512f" => Some(Isa::Avx512),
            _ => None,
        }
    }

    /// Does this CPU run this copy?
    pub fn supported(self) -> bool {
        match self {
            Isa::Generic => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => std::arch::is_x86_feature_detected!("avx2"),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }
}

/// One call of the write pass in the copy `copy` (which the CPU must support).
fn run_copy<T: Real>(
    copy: Isa,
    x: &[T],
    g: &Grouping,
    p: &Params,
) -> Result<Vec<T>, (usize, Fault)> {
    assert!(copy.supported());
    let mut out = vec![T::zero(); x.len()];
    let range = 0..g.n_groups();
    match copy {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU has AVX2 (asserted above).
        Isa::Avx2 => unsafe { write_batch_avx2(x, &mut out, g, range, p, Denom::ONE)? },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU has AVX-512F (asserted above).
        Isa::Avx512 => unsafe { write_batch_avx512(x, &mut out, g, range, p, Denom::ONE)? },
        _ => write_batch_impl::<T, false, super::NoLanes>(x, &mut out, g, range, p, Denom::ONE)?,
    }
    Ok(out)
}

/// Do `copy` and the generic pass write the same bits (both succeeding)?
fn same_bits<T: Real>(copy: Isa, x: &[T], g: &Grouping, p: &Params) -> Result<bool, String> {
    let a = run_copy(copy, x, g, p).map_err(|e| format!("{copy:?}: {e:?}"))?;
    let b = run_copy(Isa::Generic, x, g, p).map_err(|e| format!("generic: {e:?}"))?;
    Ok(a.iter()
        .zip(&b)
        .all(|(u, v)| u.to_f64().to_bits() == v.to_f64().to_bits()))
}

/// A deterministic pseudo-random stream (xorshift64, from a nonzero `seed`): each call
/// `next(m)` gives a number below m. For the self-check's data and the unit tests'.
pub(crate) fn xorshift(seed: u64) -> impl FnMut(u64) -> u64 {
    let mut state = seed;
    move |m: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % m
    }
}

/// The write pass of `copy` against the generic one: the same bits for ragged sizes 0..70
/// and 0..=32 (empty groups and singletons included), ragged groups all of size 13 or 16,
/// uniform sizes 2, 3, 4, 5, 8, 12, 16, 24, 32 and 64, groups without spread among them,
/// under several policies, and the same first faulty group. `Ok(false)`: the CPU lacks the
/// copy's features (nothing was compared). Run by the unit tests and, so that a CPU without the
/// features reports a skip rather than a pass, by `tests/test_native_stages.py`.
pub fn self_check(copy: Isa) -> Result<bool, String> {
    if !copy.supported() {
        return Ok(false);
    }
    let mut next = xorshift(0x9e3779b97f4a7c15);
    let mut offsets = vec![0i64];
    while offsets.len() < 5000 {
        let size = if next(10) == 0 { next(3) } else { 1 + next(70) };
        offsets.push(offsets.last().unwrap() + size as i64);
    }
    let n = *offsets.last().unwrap() as usize;
    let ragged = Grouping::ragged(n, &offsets).unwrap();
    // (every 400 values, a stretch of 40 equal ones: groups without spread in every layout)
    let mut x64: Vec<f64> = (0..n)
        .map(|_| 1e6 + next(1 << 20) as f64 / 1024.0)
        .collect();
    for i in 0..n {
        if i % 400 < 40 {
            x64[i] = x64[i - i % 400];
        }
    }
    let x32: Vec<f32> = x64.iter().map(|&v| v as f32).collect();
    let policies = [
        Params::default(),
        Params {
            center: Center::LeaveOneOut,
            ddof: 1,
            eps: 1e-6,
            singleton: Singleton::Raw,
            ..Params::default()
        },
        Params {
            center: Center::None,
            scale: Scale::None,
            ..Params::default()
        },
        Params {
            ddof: 1,
            eps: 1e-4,
            ..Params::default()
        },
    ];
    // Sizes 0..=32 too: whole blocks of those take the fixed-count loops.
    let mut short = vec![0i64];
    while (*short.last().unwrap() as usize) + 32 <= n {
        let size = if next(10) == 0 { next(3) } else { 1 + next(32) };
        short.push(short.last().unwrap() + size as i64);
    }
    let short = Grouping::ragged(*short.last().unwrap() as usize, &short).unwrap();
    // Blocks of equal sizes take the fixed-count loops too; offsets of one size with a copy
    // of its own (16) take that copy.
    let equal = |size: usize| {
        let offs: Vec<i64> = (0..=n / size).map(|g| (size * g) as i64).collect();
        Grouping::ragged(n / size * size, &offs).unwrap()
    };
    let mut layouts = vec![ragged.clone(), short, equal(13), equal(16)];
    for size in [2usize, 3, 4, 5, 8, 12, 16, 24, 32, 64] {
        layouts.push(Grouping::uniform(n / size * size, size).unwrap());
    }
    for g in &layouts {
        let m = g.len();
        for p in &policies {
            if !same_bits(copy, &x32[..m], g, p)? || !same_bits(copy, &x64[..m], g, p)? {
                return Err(format!(
                    "{copy:?} differs from the generic pass ({g:?}, {p:?})"
                ));
            }
        }
    }
    // Two overflowing groups: both passes name the first.
    let mut y = x32.clone();
    for grp in [4000usize, 37] {
        let (s, e) = ragged.bounds(grp);
        if e - s >= 2 {
            y[s] = -3e38;
            y[s + 1..e].iter_mut().for_each(|v| *v = 3e38);
        }
    }
    let p = Params {
        center: Center::Mean,
        scale: Scale::None,
        ..Params::default()
    };
    let (a, b) = (
        run_copy(copy, &y, &ragged, &p).unwrap_err(),
        run_copy(Isa::Generic, &y, &ragged, &p).unwrap_err(),
    );
    if a != b {
        return Err(format!(
            "{copy:?} names the faulty group {a:?}, the generic pass {b:?}"
        ));
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every compiled copy this CPU runs gives the generic pass's bits (`self_check`). A copy
    /// the CPU cannot run is not compared here: the Python test of the same check reports it
    /// as skipped.
    #[test]
    fn compiled_copies_match_generic_pass_bit_for_bit() {
        for copy in ["avx2", "avx512f"].map(|name| Isa::named(name).unwrap()) {
            match self_check(copy) {
                Ok(true) => {}
                Ok(false) => eprintln!("{copy:?}: not run, this CPU lacks its features"),
                Err(e) => panic!("{e}"),
            }
        }
    }
}
