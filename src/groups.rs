//! Group layouts: how a flat reward buffer is cut into groups.
//!
//! * `Uniform`: consecutive groups of one fixed size.
//! * `Ragged`: consecutive groups given by offsets (`offsets[0] == 0`, non-decreasing,
//!   `offsets[k] == n`); empty groups are allowed.
//! * `Permuted`: groups given by labels in any order. Built only by [`Grouping::from_codes`],
//!   which guarantees that `perm` is a permutation of `0..n` (the parallel writer relies on it).
//!
//! Labelled groups are numbered in order of first appearance. When every label's rewards are
//! already contiguous (verl's `np.repeat(uids, n)` layout), the result is `Ragged` and no
//! permutation is built.

use rustc_hash::FxHashMap;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayoutError {
    Empty,
    BadGroupSize { size: usize, n: usize },
    OffsetsTooShort,
    OffsetsStart(i64),
    OffsetsEnd { last: i64, n: usize },
    OffsetsDecreasing { index: usize, prev: i64, next: i64 },
    LengthMismatch { ids: usize, n: usize },
    TooManyRewards(usize),
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayoutError::Empty => write!(f, "rewards is empty"),
            LayoutError::BadGroupSize { size, n } => write!(
                f,
                "group_size={size} does not divide the number of rewards ({n}); \
                 group_size must be a positive divisor of len(rewards)"
            ),
            LayoutError::OffsetsTooShort => write!(f, "offsets must have at least 2 entries"),
            LayoutError::OffsetsStart(v) => write!(f, "offsets[0] must be 0, got {v}"),
            LayoutError::OffsetsEnd { last, n } => write!(
                f,
                "offsets[-1] must equal len(rewards) = {n}, got {last}"
            ),
            LayoutError::OffsetsDecreasing { index, prev, next } => write!(
                f,
                "offsets must be non-decreasing, but offsets[{}] = {prev} > offsets[{index}] = {next}",
                index - 1
            ),
            LayoutError::LengthMismatch { ids, n } => write!(
                f,
                "group_ids has length {ids} but rewards has length {n}"
            ),
            LayoutError::TooManyRewards(n) => write!(
                f,
                "group_ids supports at most {} rewards, got {n}; pass contiguous groups as offsets instead",
                u32::MAX
            ),
        }
    }
}

impl std::error::Error for LayoutError {}

#[derive(Debug, Clone, PartialEq)]
pub enum Grouping {
    Uniform { n: usize, size: usize },
    Ragged { offsets: Vec<usize> },
    Permuted(Permuted),
}

/// Labelled, non-contiguous groups: group `g` is `perm[offsets[g]..offsets[g + 1]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Permuted {
    offsets: Vec<usize>,
    perm: Vec<u32>,
}

impl Permuted {
    pub fn offsets(&self) -> &[usize] {
        &self.offsets
    }
    /// Source indices, grouped: a permutation of `0..n` (stable within each group).
    pub fn perm(&self) -> &[u32] {
        &self.perm
    }
}

impl Grouping {
    pub fn uniform(n: usize, size: usize) -> Result<Grouping, LayoutError> {
        if n == 0 {
            return Err(LayoutError::Empty);
        }
        if size == 0 || n % size != 0 {
            return Err(LayoutError::BadGroupSize { size, n });
        }
        Ok(Grouping::Uniform { n, size })
    }

    pub fn ragged(n: usize, offsets: &[i64]) -> Result<Grouping, LayoutError> {
        if n == 0 {
            return Err(LayoutError::Empty);
        }
        if offsets.len() < 2 {
            return Err(LayoutError::OffsetsTooShort);
        }
        if offsets[0] != 0 {
            return Err(LayoutError::OffsetsStart(offsets[0]));
        }
        for (i, w) in offsets.windows(2).enumerate() {
            if w[1] < w[0] {
                return Err(LayoutError::OffsetsDecreasing { index: i + 1, prev: w[0], next: w[1] });
            }
        }
        let last = *offsets.last().unwrap();
        if last != n as i64 {
            return Err(LayoutError::OffsetsEnd { last, n });
        }
        Ok(Grouping::Ragged { offsets: offsets.iter().map(|&o| o as usize).collect() })
    }

    /// From dense group codes in order of first appearance (`codes[i] < n_groups`, and group
    /// `g` first appears after group `g - 1`), as produced by the factorize functions.
    pub fn from_codes(codes: &[u32], n_groups: usize) -> Result<Grouping, LayoutError> {
        let n = codes.len();
        if n == 0 {
            return Err(LayoutError::Empty);
        }
        let mut counts = vec![0usize; n_groups + 1];
        let mut contiguous = true;
        let mut prev = 0u32;
        for &c in codes {
            assert!((c as usize) < n_groups, "group code out of range");
            counts[c as usize + 1] += 1;
            contiguous &= c >= prev;
            prev = c;
        }
        for g in 0..n_groups {
            counts[g + 1] += counts[g];
        }
        let offsets = counts;
        if contiguous {
            return Ok(Grouping::Ragged { offsets });
        }
        let mut cursor = offsets[..n_groups].to_vec();
        let mut perm = vec![0u32; n];
        for (i, &c) in codes.iter().enumerate() {
            let slot = &mut cursor[c as usize];
            perm[*slot] = i as u32;
            *slot += 1;
        }
        Ok(Grouping::Permuted(Permuted { offsets, perm }))
    }

    /// Groups from integer labels, numbered in order of first appearance.
    pub fn from_ids(ids: &[i64]) -> Result<(Grouping, Vec<usize>), LayoutError> {
        let (codes, first) = factorize(ids.iter().copied(), ids.len())?;
        Ok((Grouping::from_codes(&codes, first.len())?, first))
    }

    pub fn len(&self) -> usize {
        match self {
            Grouping::Uniform { n, .. } => *n,
            Grouping::Ragged { offsets } => *offsets.last().unwrap(),
            Grouping::Permuted(p) => p.perm.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn n_groups(&self) -> usize {
        match self {
            Grouping::Uniform { n, size } => n / size,
            Grouping::Ragged { offsets } => offsets.len() - 1,
            Grouping::Permuted(p) => p.offsets.len() - 1,
        }
    }

    /// Element range of group `g` (in grouped order: source positions for Uniform/Ragged,
    /// positions in `perm` for Permuted).
    #[inline]
    pub fn bounds(&self, g: usize) -> (usize, usize) {
        match self {
            Grouping::Uniform { size, .. } => (g * size, (g + 1) * size),
            Grouping::Ragged { offsets } => (offsets[g], offsets[g + 1]),
            Grouping::Permuted(p) => (p.offsets[g], p.offsets[g + 1]),
        }
    }

    /// Offsets array for any layout (uniform layouts materialise it).
    pub fn offsets(&self) -> Vec<usize> {
        match self {
            Grouping::Uniform { n, size } => (0..=n / size).map(|g| g * size).collect(),
            Grouping::Ragged { offsets } => offsets.clone(),
            Grouping::Permuted(p) => p.offsets.clone(),
        }
    }
}

/// Dense codes (first-appearance order) and the first index of each group, for hashable labels.
pub fn factorize<K, I>(ids: I, n: usize) -> Result<(Vec<u32>, Vec<usize>), LayoutError>
where
    K: std::hash::Hash + Eq + Copy,
    I: IntoIterator<Item = K>,
{
    if n > u32::MAX as usize {
        return Err(LayoutError::TooManyRewards(n));
    }
    let mut map: FxHashMap<K, u32> = FxHashMap::default();
    let mut codes = Vec::with_capacity(n);
    let mut first = Vec::new();
    let mut run: Option<(K, u32)> = None;
    for (i, id) in ids.into_iter().enumerate() {
        // Runs of equal labels (the usual rollout layout) cost one comparison, not one lookup.
        if let Some((k, c)) = run {
            if k == id {
                codes.push(c);
                continue;
            }
        }
        let next = first.len() as u32;
        let code = *map.entry(id).or_insert(next);
        if code == next {
            first.push(i);
        }
        codes.push(code);
        run = Some((id, code));
    }
    Ok((codes, first))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_and_ragged_validation() {
        assert_eq!(Grouping::uniform(0, 4), Err(LayoutError::Empty));
        assert!(matches!(Grouping::uniform(10, 4), Err(LayoutError::BadGroupSize { .. })));
        assert!(matches!(Grouping::uniform(10, 0), Err(LayoutError::BadGroupSize { .. })));
        let g = Grouping::uniform(12, 4).unwrap();
        assert_eq!(g.n_groups(), 3);
        assert_eq!(g.bounds(2), (8, 12));
        assert_eq!(g.offsets(), vec![0, 4, 8, 12]);

        assert_eq!(Grouping::ragged(5, &[0]), Err(LayoutError::OffsetsTooShort));
        assert_eq!(Grouping::ragged(5, &[1, 5]), Err(LayoutError::OffsetsStart(1)));
        assert_eq!(Grouping::ragged(5, &[0, 4]), Err(LayoutError::OffsetsEnd { last: 4, n: 5 }));
        assert_eq!(
            Grouping::ragged(5, &[0, 3, 2, 5]),
            Err(LayoutError::OffsetsDecreasing { index: 2, prev: 3, next: 2 })
        );
        let g = Grouping::ragged(5, &[0, 2, 2, 5]).unwrap();
        assert_eq!(g.n_groups(), 3);
        assert_eq!(g.bounds(1), (2, 2));
    }

    #[test]
    fn contiguous_ids_become_ragged() {
        let (g, first) = Grouping::from_ids(&[7, 7, 3, 3, 3, 9]).unwrap();
        assert_eq!(g, Grouping::Ragged { offsets: vec![0, 2, 5, 6] });
        assert_eq!(first, vec![0, 2, 5]);
    }

    #[test]
    fn interleaved_ids_are_permuted_stably() {
        let (g, first) = Grouping::from_ids(&[5, 1, 5, 2, 1, 5]).unwrap();
        assert_eq!(first, vec![0, 1, 3]);
        match g {
            Grouping::Permuted(p) => {
                assert_eq!(p.offsets(), &[0, 3, 5, 6]);
                assert_eq!(p.perm(), &[0, 2, 5, 1, 4, 3]);
            }
            other => panic!("expected Permuted, got {other:?}"),
        }
    }

    #[test]
    fn a_label_that_comes_back_is_one_group() {
        let (g, first) = Grouping::from_ids(&[1, 1, 2, 1]).unwrap();
        assert_eq!(first, vec![0, 2]);
        assert_eq!(g.n_groups(), 2);
        assert_eq!(g.bounds(0), (0, 3));
    }
}
