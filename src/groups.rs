//! Group layouts: how a flat reward buffer is cut into groups.
//!
//! * `Uniform`: consecutive groups of one fixed size.
//! * `Ragged`: consecutive groups given by offsets (`offsets[0] == 0`, non-decreasing,
//!   `offsets[k] == n`); empty groups are allowed.
//! * `Labelled`: groups given by labels in any order, kept as one group code per reward
//!   (passes over them: `labelled`). Built only by [`Grouping::from_codes`].
//!
//! Labelled groups are numbered in order of first appearance. When every label's rewards are
//! already contiguous (verl's `np.repeat(uids, n)` layout), the result is `Ragged`.

use crate::hint::{prefetch, with_capacity_huge, PREFETCH};
use crate::parallel::{
    default_threads, map_on, map_pieces, map_ranges, map_ranges_mut, resolve_threads,
    CHUNK_ELEMENTS, SERIAL_BELOW,
};
use std::collections::HashMap;
use std::fmt;
use std::ops::Range;

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

/// Group code of every reward (groups numbered by first appearance), group sizes, and the
/// index of each group's first reward.
#[derive(Debug, Clone, PartialEq)]
pub struct Labelled {
    codes: Vec<u32>,
    sizes: Vec<u64>,
    first: Vec<usize>,
}

impl Labelled {
    /// `codes` must be dense first-appearance codes (checked by `Grouping::from_codes`).
    pub(crate) fn new(codes: Vec<u32>, sizes: Vec<u64>, first: Vec<usize>) -> Labelled {
        Labelled {
            codes,
            sizes,
            first,
        }
    }
    pub fn codes(&self) -> &[u32] {
        &self.codes
    }
    pub fn sizes(&self) -> &[u64] {
        &self.sizes
    }
    pub fn first(&self) -> &[usize] {
        &self.first
    }
    pub fn len(&self) -> usize {
        self.codes.len()
    }
    pub fn is_empty(&self) -> bool {
        self.codes.is_empty()
    }
    pub fn n_groups(&self) -> usize {
        self.sizes.len()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Grouping {
    Uniform { n: usize, size: usize },
    Ragged { offsets: Vec<usize> },
    Labelled(Labelled),
}

impl Grouping {
    pub fn uniform(n: usize, size: usize) -> Result<Grouping, LayoutError> {
        if n == 0 {
            return Err(LayoutError::Empty);
        }
        if size == 0 || !n.is_multiple_of(size) {
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
        let last = *offsets.last().unwrap();
        // Copied and checked in one pass, on the default threads for long offsets (the copy
        // is memory-bound: ~0.9 ms serial for 625k offsets, a tenth of a 1e7-reward call).
        // (huge pages: a fresh copy per call otherwise takes a page fault per 4 KiB, which a
        // call after idle time pays several times over)
        let mut copy: Vec<usize> = with_capacity_huge(offsets.len());
        let decreasing = map_ranges_mut(
            offsets.len(),
            0,
            &mut copy.spare_capacity_mut()[..offsets.len()],
            |i| i,
            |r, piece| {
                let mut decreasing = false;
                let mut prev = offsets[r.start.saturating_sub(1)];
                for (slot, &o) in piece.iter_mut().zip(&offsets[r]) {
                    decreasing |= o < prev;
                    prev = o;
                    slot.write(o as usize);
                }
                decreasing
            },
        );
        if decreasing.contains(&true) {
            let i = offsets.windows(2).position(|w| w[1] < w[0]).unwrap_or(0);
            return Err(LayoutError::OffsetsDecreasing {
                index: i + 1,
                prev: offsets[i],
                next: offsets[i + 1],
            });
        }
        if last != n as i64 {
            return Err(LayoutError::OffsetsEnd { last, n });
        }
        // SAFETY: the pieces cover 0..offsets.len() (map_ranges_mut's ranges), each slot
        // written above.
        unsafe { copy.set_len(offsets.len()) };
        Ok(Grouping::Ragged { offsets: copy })
    }

    /// From dense group codes numbered in order of first appearance (group `g` first
    /// appears after group `g - 1`), as `factorize` produces them. Panics otherwise.
    pub fn from_codes(codes: Vec<u32>, n_groups: usize) -> Result<Grouping, LayoutError> {
        let n = codes.len();
        if n == 0 {
            return Err(LayoutError::Empty);
        }
        let mut counts = vec![0usize; n_groups + 1];
        let mut first = Vec::with_capacity(n_groups);
        let mut contiguous = true;
        let mut prev = 0u32;
        for (i, &c) in codes.iter().enumerate() {
            assert!(
                (c as usize) <= first.len(),
                "group codes must be numbered by first appearance"
            );
            if c as usize == first.len() {
                first.push(i);
            }
            counts[c as usize + 1] += 1;
            contiguous &= c >= prev;
            prev = c;
        }
        assert_eq!(first.len(), n_groups, "n_groups does not match the codes");
        if contiguous {
            let mut offsets = counts;
            for g in 0..n_groups {
                offsets[g + 1] += offsets[g];
            }
            return Ok(Grouping::Ragged { offsets });
        }
        let sizes: Vec<u64> = counts[1..].iter().map(|&c| c as u64).collect();
        Ok(Grouping::Labelled(Labelled::new(codes, sizes, first)))
    }

    /// Like [`Grouping::from_codes`] for the output of [`factorize`] or [`factorize_dense`],
    /// whose codes are numbered by first appearance by construction (so not checked again)
    /// and whose `first` is known: the group sizes and the contiguity check run in parallel.
    pub fn from_factorized(codes: Vec<u32>, first: &[usize]) -> Result<Grouping, LayoutError> {
        let n = codes.len();
        if n == 0 {
            return Err(LayoutError::Empty);
        }
        let k = first.len();
        let parts = map_ranges(n, 0, |r| {
            let mut counts = vec![0u32; k];
            let mut sorted = true;
            let mut prev = codes[r.start.saturating_sub(1)];
            let ahead = &codes[(r.start + PREFETCH).min(r.end)..r.end];
            for (i, &c) in codes[r].iter().enumerate() {
                if let Some(&next) = ahead.get(i) {
                    prefetch(&counts[next as usize]);
                }
                counts[c as usize] += 1;
                sorted &= c >= prev;
                prev = c;
            }
            (counts, sorted)
        });
        let contiguous = parts.iter().all(|p| p.1);
        let mut parts = parts.into_iter().map(|p| p.0);
        let mut counts = parts.next().unwrap();
        for part in parts {
            for (c, v) in counts.iter_mut().zip(part) {
                *c += v;
            }
        }
        if contiguous {
            let mut offsets = Vec::with_capacity(k + 1);
            offsets.push(0usize);
            for &c in &counts {
                offsets.push(offsets.last().unwrap() + c as usize);
            }
            return Ok(Grouping::Ragged { offsets });
        }
        let sizes = counts.iter().map(|&c| c as u64).collect();
        Ok(Grouping::Labelled(Labelled::new(
            codes,
            sizes,
            first.to_vec(),
        )))
    }

    /// Groups from integer labels, numbered in order of first appearance.
    pub fn from_ids(ids: &[i64]) -> Result<(Grouping, Vec<usize>), LayoutError> {
        let (codes, first) = match factorize_dense(ids)? {
            Some(done) => done,
            None => factorize(ids.iter().copied(), ids.len())?,
        };
        Ok((Grouping::from_factorized(codes, &first)?, first))
    }

    pub fn len(&self) -> usize {
        match self {
            Grouping::Uniform { n, .. } => *n,
            Grouping::Ragged { offsets } => *offsets.last().unwrap(),
            Grouping::Labelled(l) => l.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn n_groups(&self) -> usize {
        match self {
            Grouping::Uniform { n, size } => n / size,
            Grouping::Ragged { offsets } => offsets.len() - 1,
            Grouping::Labelled(l) => l.n_groups(),
        }
    }

    /// Element range of group `g` of a contiguous layout (Uniform or Ragged).
    #[inline]
    pub fn bounds(&self, g: usize) -> (usize, usize) {
        match self {
            Grouping::Uniform { size, .. } => (g * size, (g + 1) * size),
            Grouping::Ragged { offsets } => (offsets[g], offsets[g + 1]),
            Grouping::Labelled(_) => panic!("labelled groups are not contiguous"),
        }
    }

    /// Prefix sums of the group sizes, in group order.
    pub fn offsets(&self) -> Vec<usize> {
        match self {
            Grouping::Uniform { n, size } => (0..=n / size).map(|g| g * size).collect(),
            Grouping::Ragged { offsets } => offsets.clone(),
            Grouping::Labelled(l) => std::iter::once(0)
                .chain(l.sizes().iter().scan(0usize, |acc, &s| {
                    *acc += s as usize;
                    Some(*acc)
                }))
                .collect(),
        }
    }

    /// Group code of every reward, in input order.
    pub fn codes(&self) -> Vec<u32> {
        match self {
            Grouping::Labelled(l) => l.codes().to_vec(),
            _ => {
                let mut codes = vec![0u32; self.len()];
                for g in 0..self.n_groups() {
                    let (a, b) = self.bounds(g);
                    codes[a..b].fill(g as u32);
                }
                codes
            }
        }
    }
}

/// Group codes of every reward and the first index of each group.
pub type Factorized = (Vec<u32>, Vec<usize>);

/// Like [`factorize`] for integer labels whose range is at most about `2 n`: a direct table
/// instead of a hash map (the usual case of prompt indices). None when the range is wider.
///
/// Large inputs are split into one element range per thread. Each range is numbered on its
/// own (its own table, codes in order of first appearance within the range); then the
/// ranges are joined in order, which numbers labels first seen in a later range after all
/// those of earlier ranges, exactly as one sequential pass would; finally each later
/// range's codes are translated to the joined numbering.
pub fn factorize_dense(ids: &[i64]) -> Result<Option<Factorized>, LayoutError> {
    let n = ids.len();
    if n > u32::MAX as usize {
        return Err(LayoutError::TooManyRewards(n));
    }
    let bounds = map_ranges(n, 0, |r| {
        let s = &ids[r];
        (s.iter().copied().min(), s.iter().copied().max())
    });
    let lo = bounds.iter().filter_map(|b| b.0).min();
    let hi = bounds.iter().filter_map(|b| b.1).max();
    let (Some(lo), Some(hi)) = (lo, hi) else {
        return Ok(None);
    };
    let range = (hi as i128 - lo as i128 + 1) as u128;
    if range > (2 * n as u128).max(1 << 16) {
        return Ok(None);
    }
    let range = range as usize;
    let slot = |id: i64| (id as i128 - lo as i128) as usize;
    // One table per range: only while the tables together stay within 4 n entries.
    let parts = default_threads().min((4 * n / range).max(1));
    let mut codes = vec![0u32; n];
    if parts <= 1 || n < SERIAL_BELOW {
        let (table, first) = number_range(ids, 0, &mut codes, range, slot);
        drop(table);
        return Ok(Some((codes, first)));
    }
    let ranges: Vec<std::ops::Range<usize>> = (0..parts)
        .map(|t| n * t / parts..n * (t + 1) / parts)
        .collect();
    let numbered = map_pieces(
        parts,
        ranges.clone(),
        &mut codes,
        |i| i,
        |r, piece| number_range(&ids[r.clone()], r.start, piece, range, slot),
    );
    // Join in order: the first range's numbering stands; later ranges' new labels follow.
    let mut numbered = numbered.into_iter();
    let (mut table, mut first) = numbered.next().unwrap();
    let mut maps: Vec<Vec<u32>> = Vec::with_capacity(parts - 1);
    for (_, local_first) in numbered {
        let map = local_first
            .iter()
            .map(|&i| {
                let e = &mut table[slot(ids[i])];
                if *e == UNSEEN {
                    *e = first.len() as u32;
                    first.push(i);
                }
                *e
            })
            .collect();
        maps.push(map);
    }
    // Translate the later ranges' local codes (in parallel; the first range is done).
    map_pieces(
        parts,
        ranges.clone(),
        &mut codes,
        |i| i,
        |r, piece| {
            if let Some(t) = ranges[1..].iter().position(|q| q.start == r.start) {
                for c in piece.iter_mut() {
                    *c = maps[t][*c as usize];
                }
            }
        },
    );
    Ok(Some((codes, first)))
}

const UNSEEN: u32 = u32::MAX;

/// Number the labels of `ids` (a range starting at element `start`) by first appearance
/// within it, writing each reward's code to `codes`; returns the table (slot -> code) and
/// the first index (in the whole input) of each code.
fn number_range(
    ids: &[i64],
    start: usize,
    codes: &mut [u32],
    range: usize,
    slot: impl Fn(i64) -> usize,
) -> (Vec<u32>, Vec<usize>) {
    let mut table = vec![UNSEEN; range];
    let mut first = Vec::new();
    let ahead = &ids[PREFETCH.min(ids.len())..];
    for (i, (&id, code)) in ids.iter().zip(codes.iter_mut()).enumerate() {
        if let Some(&next) = ahead.get(i) {
            prefetch(&table[slot(next)]);
        }
        let e = &mut table[slot(id)];
        if *e == UNSEEN {
            *e = first.len() as u32;
            first.push(start + i);
        }
        *code = *e;
    }
    (table, first)
}

/// Dense codes (first-appearance order) and the first index of each group, for hashable labels.
pub fn factorize<K, I>(ids: I, n: usize) -> Result<Factorized, LayoutError>
where
    K: std::hash::Hash + Eq + Copy,
    I: IntoIterator<Item = K>,
{
    if n > u32::MAX as usize {
        return Err(LayoutError::TooManyRewards(n));
    }
    // foldhash: fast, and good in its high bits (the table's tags); FxHash collided badly on
    // uid-like strings.
    let mut map: HashMap<K, u32, foldhash::fast::RandomState> = HashMap::default();
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

// ---- work split: batches of whole groups for the parallel passes ----

/// Cut groups `0..k` into batches of about `n / batches` elements each, on group boundaries.
pub fn split_groups(grouping: &Grouping, batches: usize) -> Vec<Range<usize>> {
    let (k, n) = (grouping.n_groups(), grouping.len());
    let bounds = batch_bounds(k, n, batches, |t| first_group_ending_after(grouping, t));
    bounds.windows(2).map(|w| w[0]..w[1]).collect()
}

/// The group bounds `0 = b0 < b1 < ... < bm = k` that cut groups `0..k`, of `n` elements in
/// all, into at most `batches` batches of about `n / batches` elements each, on group
/// boundaries (just `[0]` for k = 0). `reach(t)` is the smallest g whose first g groups hold
/// at least t elements (anything above k counts as k: raw offsets may say anything).
pub fn batch_bounds(
    k: usize,
    n: usize,
    batches: usize,
    reach: impl Fn(usize) -> usize,
) -> Vec<usize> {
    let batches = batches.clamp(1, k.max(1));
    let mut bounds = Vec::with_capacity(batches + 1);
    bounds.push(0);
    for b in 1..=batches {
        let g = if b == batches {
            k
        } else {
            reach(n * b / batches).min(k)
        };
        if g > bounds[bounds.len() - 1] {
            bounds.push(g);
        }
    }
    bounds
}

/// Smallest g such that the first g groups hold at least `target` elements.
fn first_group_ending_after(grouping: &Grouping, target: usize) -> usize {
    match grouping {
        Grouping::Uniform { size, .. } => target.div_ceil(*size),
        _ => {
            let Grouping::Ragged { offsets } = grouping else {
                unreachable!("batches of groups are for contiguous layouts")
            };
            offsets.partition_point(|&o| o < target)
        }
    }
}

/// Run `f` over the batches of `grouping`, in parallel when it is large enough, and return
/// the results in batch order. `threads == 0` means the default.
pub fn map_batches<R, F>(grouping: &Grouping, threads: usize, f: F) -> Vec<R>
where
    R: Send,
    F: Fn(Range<usize>) -> R + Sync + Send,
{
    let threads = resolve_threads(threads);
    let ranges = batches(grouping, threads);
    if ranges.len() <= 1 {
        return vec![f(0..grouping.n_groups())];
    }
    map_on(threads, ranges, f)
}

/// The batches of a call on `threads` threads: one in all when small or serial, else chunks
/// of about `CHUNK_ELEMENTS` rewards (whole groups), claimed by whichever thread is free.
fn batches(grouping: &Grouping, threads: usize) -> Vec<Range<usize>> {
    if threads <= 1 || grouping.len() < SERIAL_BELOW {
        return std::iter::once(0..grouping.n_groups()).collect();
    }
    split_groups(grouping, grouping.len().div_ceil(CHUNK_ELEMENTS))
}

/// `map_batches` with each batch's own piece of `out` (indexed like the rewards: the piece
/// of groups `r` is `out[bounds(r.start).0..bounds(r.end - 1).1]`). Contiguous layouts only.
pub fn map_batches_mut<T, R, F>(grouping: &Grouping, threads: usize, out: &mut [T], f: F) -> Vec<R>
where
    T: Send,
    R: Send,
    F: Fn(Range<usize>, &mut [T]) -> R + Sync + Send,
{
    let threads = resolve_threads(threads);
    let start = |g: usize| match grouping {
        Grouping::Uniform { size, .. } => g * size,
        Grouping::Ragged { offsets } => offsets[g],
        Grouping::Labelled(_) => unreachable!("batches of groups are for contiguous layouts"),
    };
    map_pieces(threads, batches(grouping, threads), out, start, f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_and_ragged_validation() {
        assert_eq!(Grouping::uniform(0, 4), Err(LayoutError::Empty));
        assert!(matches!(
            Grouping::uniform(10, 4),
            Err(LayoutError::BadGroupSize { .. })
        ));
        assert!(matches!(
            Grouping::uniform(10, 0),
            Err(LayoutError::BadGroupSize { .. })
        ));
        let g = Grouping::uniform(12, 4).unwrap();
        assert_eq!(g.n_groups(), 3);
        assert_eq!(g.bounds(2), (8, 12));
        assert_eq!(g.offsets(), vec![0, 4, 8, 12]);

        assert_eq!(Grouping::ragged(5, &[0]), Err(LayoutError::OffsetsTooShort));
        assert_eq!(
            Grouping::ragged(5, &[1, 5]),
            Err(LayoutError::OffsetsStart(1))
        );
        assert_eq!(
            Grouping::ragged(5, &[0, 4]),
            Err(LayoutError::OffsetsEnd { last: 4, n: 5 })
        );
        assert_eq!(
            Grouping::ragged(5, &[0, 3, 2, 5]),
            Err(LayoutError::OffsetsDecreasing {
                index: 2,
                prev: 3,
                next: 2
            })
        );
        let g = Grouping::ragged(5, &[0, 2, 2, 5]).unwrap();
        assert_eq!(g.n_groups(), 3);
        assert_eq!(g.bounds(1), (2, 2));
    }

    /// Long offsets are copied and checked in pieces on several threads: the same layout,
    /// and the first decrease named, wherever the pieces meet.
    #[test]
    fn long_offsets_checked_in_pieces() {
        let len = 3 * SERIAL_BELOW + 7;
        let offsets: Vec<i64> = (0..len as i64).map(|i| 3 * i).collect();
        let n = 3 * (len - 1);
        let g = Grouping::ragged(n, &offsets).unwrap();
        assert_eq!(
            g.offsets(),
            offsets.iter().map(|&o| o as usize).collect::<Vec<_>>()
        );
        // Decreases at the start of every possible piece (2 to 8 threads) and one early.
        let mut starts: Vec<usize> = (2..=8)
            .flat_map(|t| (1..t).map(move |k| len * k / t))
            .collect();
        starts.push(1000);
        for &at in &starts {
            let mut bad = offsets.clone();
            bad[at] = bad[at - 1] - 1;
            let later = (at + len / 2).min(len - 2);
            bad[later] = bad[later - 1] - 1;
            assert_eq!(
                Grouping::ragged(n, &bad),
                Err(LayoutError::OffsetsDecreasing {
                    index: at.min(later),
                    prev: bad[at.min(later) - 1],
                    next: bad[at.min(later)],
                })
            );
        }
    }

    #[test]
    fn contiguous_ids_become_ragged() {
        let (g, first) = Grouping::from_ids(&[7, 7, 3, 3, 3, 9]).unwrap();
        assert_eq!(
            g,
            Grouping::Ragged {
                offsets: vec![0, 2, 5, 6]
            }
        );
        assert_eq!(first, vec![0, 2, 5]);
    }

    #[test]
    fn interleaved_ids_are_labelled() {
        let (g, first) = Grouping::from_ids(&[5, 1, 5, 2, 1, 5]).unwrap();
        assert_eq!(first, vec![0, 1, 3]);
        assert_eq!(g.offsets(), vec![0, 3, 5, 6]);
        assert_eq!(g.codes(), vec![0, 1, 0, 2, 1, 0]);
        match g {
            Grouping::Labelled(l) => {
                assert_eq!(l.sizes(), &[3, 2, 1]);
                assert_eq!(l.first(), &[0, 1, 3]);
            }
            other => panic!("expected Labelled, got {other:?}"),
        }
    }

    #[test]
    fn dense_and_hashed_factorizations_agree() {
        let mut s = 7u64;
        for spread in [10i64, 1000, 1 << 40] {
            let ids: Vec<i64> = (0..5000)
                .map(|_| {
                    s = s
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((s >> 20) as i64 % spread) - spread / 2
                })
                .collect();
            let hashed = factorize(ids.iter().copied(), ids.len()).unwrap();
            match factorize_dense(&ids).unwrap() {
                Some(dense) => assert_eq!(dense, hashed),
                None => assert_eq!(spread, 1 << 40),
            }
        }
        let extremes = [i64::MIN, i64::MAX, i64::MIN];
        assert_eq!(factorize_dense(&extremes).unwrap(), None);
        assert_eq!(Grouping::from_ids(&extremes).unwrap().1, vec![0, 1]);
    }

    /// Inputs large enough for the parallel numbering (one range per thread, then joined):
    /// the same codes and first indices as the sequential hash map, and the same grouping as
    /// the checked `from_codes`, for labels first seen in every range, in one range only,
    /// and in contiguous runs.
    #[test]
    fn parallel_dense_numbering_matches_sequential() {
        let n = 3 * crate::parallel::SERIAL_BELOW;
        let mut s = 11u64;
        let mut next = move || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            s >> 20
        };
        let shuffled: Vec<i64> = (0..n).map(|_| (next() % 40_000) as i64 - 7).collect();
        // Most labels appear only in the second half, so later ranges number new labels.
        let late: Vec<i64> = (0..n)
            .map(|i| {
                if i < n / 2 {
                    (next() % 50) as i64
                } else {
                    (next() % 90_000) as i64
                }
            })
            .collect();
        let runs: Vec<i64> = (0..n).map(|i| (i / 16) as i64 * 3).collect();
        for ids in [shuffled, late, runs] {
            let hashed = factorize(ids.iter().copied(), ids.len()).unwrap();
            let dense = factorize_dense(&ids).unwrap().expect("dense range");
            assert_eq!(dense, hashed);
            let (codes, first) = dense;
            let checked = Grouping::from_codes(codes.clone(), first.len()).unwrap();
            assert_eq!(Grouping::from_factorized(codes, &first).unwrap(), checked);
        }
    }

    #[test]
    fn a_label_that_comes_back_is_one_group() {
        let (g, first) = Grouping::from_ids(&[1, 1, 2, 1]).unwrap();
        assert_eq!(first, vec![0, 2]);
        assert_eq!(g.n_groups(), 2);
        assert_eq!(g.offsets(), vec![0, 3, 4]);
    }

    fn covers(r: &[Range<usize>], k: usize) -> bool {
        r.first().map(|x| x.start) == Some(0)
            && r.last().map(|x| x.end) == Some(k)
            && r.windows(2)
                .all(|w| w[0].end == w[1].start && w[0].start < w[0].end)
    }

    #[test]
    fn splits_cover_all_groups_on_boundaries() {
        let u = Grouping::uniform(1600, 16).unwrap();
        let r = split_groups(&u, 8);
        assert_eq!(r.len(), 8);
        assert!(covers(&r, 100));

        let offs: Vec<i64> = [0, 0, 1, 1, 500, 501, 502, 1000, 1000].to_vec();
        let g = Grouping::ragged(1000, &offs).unwrap();
        for b in 1..12 {
            let r = split_groups(&g, b);
            assert!(covers(&r, 8), "{b}: {r:?}");
        }
    }

    #[test]
    fn batch_bounds_increase_strictly_whatever_reach_says() {
        assert_eq!(batch_bounds(0, 0, 4, |_| 0), vec![0]);
        // a reach past k (raw offsets that lie), or stuck at 0: bounds stay in 0..=k, strictly
        // increasing, and end at k
        assert_eq!(batch_bounds(5, 100, 4, |_| 99), vec![0, 5]);
        assert_eq!(batch_bounds(5, 100, 4, |_| 0), vec![0, 5]);
        assert_eq!(batch_bounds(8, 80, 4, |t| t / 10), vec![0, 2, 4, 6, 8]);
        assert_eq!(batch_bounds(3, 80, 10, |t| t / 10), vec![0, 2, 3]);
    }

    #[test]
    fn map_batches_runs_every_group_once() {
        let g = Grouping::uniform(1 << 17, 4).unwrap();
        let counts = map_batches(&g, 2, |r| r.len());
        assert_eq!(counts.iter().sum::<usize>(), g.n_groups());
        assert!(counts.len() > 1);
    }
}
