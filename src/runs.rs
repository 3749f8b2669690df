//! Labels in runs. Rollouts keep each prompt's responses together (`np.repeat`, verl's
//! `DataProto.repeat`, whole blocks reordered by `balance_batch`), so labels arrive in runs of
//! equal neighbours. The runs are found first (one streaming comparison of neighbours) and only
//! the first label of each run is numbered; when every run brings a new label the layout is
//! contiguous (offsets) and no per-reward code is written at all.
//!
//! The grouping is exactly that of numbering every label on its own (`groups::factorize`):
//! codes in order of first appearance, a label that comes back in a later run joins its group.

use crate::groups::{factorize, factorize_dense, Grouping, Labelled, LayoutError};
use crate::hint::{prefetch, with_capacity_huge, zeroed, PREFETCH};
use crate::parallel::{map_pieces, map_ranges, map_ranges_mut, resolve_threads, SERIAL_BELOW};
use std::ops::Range;
use std::sync::Mutex;

/// Mean run length (sampled) from which runs are found first; below it the labels are
/// numbered one by one (fully shuffled rows), as before runs existed.
pub const MIN_MEAN_RUN: usize = 3;
/// The sample: this many windows of `WINDOW` neighbours, spread evenly over the input.
const WINDOWS: usize = 16;
const WINDOW: usize = 256;

/// Whether `ids` looks like runs of mean length at least [`MIN_MEAN_RUN`], judged on a sample
/// (all of it when small). Only the speed depends on the answer, never the grouping.
pub fn looks_like_runs<K: PartialEq>(ids: &[K]) -> bool {
    let n = ids.len();
    let (mut pairs, mut breaks) = (0usize, 0usize);
    let mut count = |w: Range<usize>| {
        pairs += w.len().saturating_sub(1);
        breaks += (w.start + 1..w.end)
            .filter(|&i| ids[i] != ids[i - 1])
            .count();
    };
    if n <= WINDOWS * WINDOW {
        count(0..n);
    } else {
        for t in 0..WINDOWS {
            let a = (n - WINDOW) * t / (WINDOWS - 1);
            count(a..a + WINDOW);
        }
    }
    // A run of length L has L - 1 equal pairs per break.
    breaks * MIN_MEAN_RUN <= pairs
}

/// Start and label of every run of equal neighbours in `ids` (0 first, when not empty), in
/// order; on `threads` workers (0: the default) for large inputs. The labels are taken in the
/// same pass (read again later they would cost a second strided sweep over `ids`).
pub fn runs<K: PartialEq + Copy + Sync + Send>(ids: &[K], threads: usize) -> (Vec<usize>, Vec<K>) {
    // Room for runs of mean length MIN_MEAN_RUN, the first range's for all ranges (joined
    // into it after): reserved pages that are never written are never faulted in, whereas
    // growing or concatenating multi-megabyte vectors costs copies and page faults.
    let n = ids.len();
    let parts = map_ranges(n, threads, |r| {
        let room = if r.start == 0 { n } else { r.len() } / MIN_MEAN_RUN + 64;
        let mut out = (Vec::with_capacity(room), Vec::with_capacity(room));
        runs_in(ids, r, &mut out);
        out
    });
    let mut parts = parts.into_iter();
    let (mut starts, mut heads) = parts.next().unwrap_or_default();
    for (s, h) in parts {
        starts.extend_from_slice(&s);
        heads.extend_from_slice(&h);
    }
    (starts, heads)
}

/// The runs of `ids` that start within `r` (`r.start` counts as one only when it differs from
/// its left neighbour, or is 0). Blocks of 64 neighbours are compared into a bit mask first,
/// so the compare loop is branch-free and only the (few) run starts cost a branch.
fn runs_in<K: PartialEq + Copy>(ids: &[K], r: Range<usize>, out: &mut (Vec<usize>, Vec<K>)) {
    let mut push = |i: usize| {
        out.0.push(i);
        out.1.push(ids[i]);
    };
    let mut i = r.start;
    if i == 0 {
        if r.end == 0 {
            return;
        }
        push(0);
        i = 1;
    }
    while i + 64 <= r.end {
        let w: &[K; 65] = ids[i - 1..i + 64].try_into().unwrap();
        let mut mask = 0u64;
        for j in 0..64 {
            mask |= ((w[j + 1] != w[j]) as u64) << j;
        }
        while mask != 0 {
            push(i + mask.trailing_zeros() as usize);
            mask &= mask - 1;
        }
        i += 64;
    }
    for i in i..r.end {
        if ids[i] != ids[i - 1] {
            push(i);
        }
    }
}

/// The layout of `n` rewards cut into runs starting at `starts` (increasing, `starts[0] == 0`)
/// whose labels have the group codes `run_codes` (dense, numbered by first appearance over the
/// runs; neighbouring runs may share a code), and the first index of each group.
pub fn from_runs(
    n: usize,
    starts: &[usize],
    run_codes: &[u32],
    threads: usize,
) -> Result<(Grouping, Vec<usize>), LayoutError> {
    if n == 0 {
        return Err(LayoutError::Empty);
    }
    if n > u32::MAX as usize {
        return Err(LayoutError::TooManyRewards(n));
    }
    debug_assert_eq!(starts.len(), run_codes.len());
    debug_assert_eq!(starts.first(), Some(&0));
    // First appearance of each code: the start of its first run.
    let mut first: Vec<usize> = Vec::new();
    let mut contiguous = true;
    for (j, (&s, &c)) in starts.iter().zip(run_codes).enumerate() {
        if c as usize == first.len() {
            first.push(s);
        } else {
            debug_assert!((c as usize) < first.len(), "codes by first appearance");
            contiguous &= run_codes[j - 1] == c;
        }
    }
    if contiguous {
        let mut offsets = first.clone();
        offsets.push(n);
        return Ok((contiguous_layout(offsets), first));
    }
    let end = |j: usize| starts.get(j + 1).copied().unwrap_or(n);
    let mut sizes = vec![0u64; first.len()];
    for (j, &c) in run_codes.iter().enumerate() {
        sizes[c as usize] += (end(j) - starts[j]) as u64;
    }
    // Each reward's code: its run's, written in parallel element ranges.
    let mut codes = vec![0u32; n];
    map_ranges_mut(
        n,
        threads,
        &mut codes,
        |i| i,
        |r, piece| {
            let mut j = starts.partition_point(|&s| s <= r.start) - 1;
            let mut i = r.start;
            while i < r.end {
                let stop = end(j).min(r.end);
                piece[i - r.start..stop - r.start].fill(run_codes[j]);
                i = stop;
                j += 1;
            }
        },
    );
    let layout = Grouping::Labelled(Labelled::new(codes, sizes, first.clone()));
    Ok((layout, first))
}

/// Integer labels resolved: the layout, the first index of each group, and the label of each
/// group (`ids[first[g]]`, taken during the passes: gathering them afterwards from a large
/// `ids` costs a cache miss per group).
pub type Resolved = (Grouping, Vec<usize>, Vec<i64>);

/// Contiguous groups cut at `offsets`: `Uniform` when they all have one size (its passes
/// are the fastest), else `Ragged`.
fn contiguous_layout(offsets: Vec<usize>) -> Grouping {
    let size = offsets[1] - offsets[0];
    if size > 0 && offsets.windows(2).all(|w| w[1] - w[0] == size) {
        return Grouping::Uniform {
            n: offsets[offsets.len() - 1],
            size,
        };
    }
    Grouping::Ragged { offsets }
}

/// Groups from integer labels (numbered by first appearance), the first index and the label
/// of each group: runs first when the labels come in runs, else every label numbered on its
/// own. Runs of one length, each of a new label (verl's batch: `np.repeat` of distinct ids,
/// whole blocks reordered), are `Uniform` groups.
pub fn group_ints(ids: &[i64], threads: usize) -> Result<Resolved, LayoutError> {
    let n = ids.len();
    if n > u32::MAX as usize {
        return Err(LayoutError::TooManyRewards(n));
    }
    if n == 0 {
        return Err(LayoutError::Empty);
    }
    if !looks_like_runs(ids) {
        let (codes, first) = match factorize_dense(ids)? {
            Some(done) => done,
            None => factorize(ids.iter().copied(), n)?,
        };
        let labels = first.iter().map(|&i| ids[i]).collect();
        return Ok((Grouping::from_factorized(codes, &first)?, first, labels));
    }
    if let Some((size, heads)) = equal_runs(ids, threads) {
        if all_distinct(&heads) {
            let mut first = zeroed(heads.len());
            first
                .iter_mut()
                .enumerate()
                .for_each(|(g, f)| *f = g * size);
            return Ok((Grouping::uniform(n, size)?, first, heads));
        }
        let starts: Vec<usize> = (0..n / size).map(|g| g * size).collect();
        return from_heads(n, &starts, heads, threads);
    }
    let (starts, heads) = runs(ids, threads);
    if all_distinct(&heads) {
        // Every run a new label: contiguous groups, cut at the run starts.
        let mut offsets = Vec::with_capacity(starts.len() + 1);
        offsets.extend_from_slice(&starts);
        offsets.push(n);
        return Ok((contiguous_layout(offsets), starts, heads));
    }
    from_heads(n, &starts, heads, threads)
}

/// The layout of runs starting at `starts` with labels `heads` (some label in several runs).
fn from_heads(
    n: usize,
    starts: &[usize],
    heads: Vec<i64>,
    threads: usize,
) -> Result<Resolved, LayoutError> {
    let codes = number(&heads);
    let (g, first) = from_runs(n, starts, &codes, threads)?;
    // The label of group c is the head of its first run (the first run with code c).
    let mut labels = Vec::with_capacity(first.len());
    for (&c, &h) in codes.iter().zip(&heads) {
        if c as usize == labels.len() {
            labels.push(h);
        }
    }
    Ok((g, first, labels))
}

/// When the runs of `ids` (not empty) all have one length `size` (so that it divides the
/// length) and neighbouring runs differ: `size` and the label of every run, in order. One
/// streaming pass on `threads` workers, left early at the first run of another length.
pub fn equal_runs(ids: &[i64], threads: usize) -> Option<(usize, Vec<i64>)> {
    let n = ids.len();
    let size = ids.iter().position(|&v| v != ids[0]).unwrap_or(n);
    if size == n {
        return Some((n, vec![ids[0]]));
    }
    if !n.is_multiple_of(size) {
        return None;
    }
    let k = n / size;
    let mut heads = zeroed(k);
    // A few ranges per thread: the caller starts at once and runs what a late worker leaves.
    let threads = resolve_threads(threads);
    let parts = if n < SERIAL_BELOW || threads <= 1 {
        1
    } else {
        (4 * threads).min(n / (SERIAL_BELOW / 8))
    };
    let ranges = (0..parts)
        .map(|t| k * t / parts..k * (t + 1) / parts)
        .collect();
    let ok = map_pieces(
        threads,
        ranges,
        &mut heads,
        |g| g,
        |r, piece| match size {
            2 => equal_runs_in::<2>(ids, 2, r, piece),
            4 => equal_runs_in::<4>(ids, 4, r, piece),
            8 => equal_runs_in::<8>(ids, 8, r, piece),
            16 => equal_runs_in::<16>(ids, 16, r, piece),
            32 => equal_runs_in::<32>(ids, 32, r, piece),
            64 => equal_runs_in::<64>(ids, 64, r, piece),
            _ => equal_runs_in::<0>(ids, size, r, piece),
        },
    );
    ok.into_iter().all(|ok| ok).then_some((size, heads))
}

/// Whether the runs `groups` of `ids` (run g: `ids[g * size..(g + 1) * size]`) each hold one
/// label that differs from the one before it; their labels written to `heads`. `L`: `size`
/// as a constant (0: not), so that the per-run loops unroll into vector compares.
#[inline(always)]
fn equal_runs_in<const L: usize>(
    ids: &[i64],
    size: usize,
    groups: Range<usize>,
    heads: &mut [i64],
) -> bool {
    let size = if L > 0 { L } else { size };
    let Some(&h0) = ids.get(groups.start * size) else {
        return true;
    };
    // The label before the first run (none for run 0: any other value).
    let mut prev = groups
        .start
        .checked_sub(1)
        .map_or(!h0, |_| ids[groups.start * size - 1]);
    let ids = &ids[groups.start * size..groups.end * size];
    const CHECK_EVERY: usize = 1024;
    for (blocks, heads) in ids
        .chunks(CHECK_EVERY * size)
        .zip(heads.chunks_mut(CHECK_EVERY))
    {
        // OR of label ^ head over every run: not 0 when a run holds two labels.
        let (mut diff, mut repeat) = (0i64, false);
        for (run, head) in blocks.chunks_exact(size).zip(heads.iter_mut()) {
            let h = run[0];
            diff |= match <&[i64; L]>::try_from(run) {
                // A run of the constant length: unrolled into vector compares.
                Ok(run) => run.iter().fold(0, |acc, &v| acc | (v ^ h)),
                Err(_) => run.iter().fold(0, |acc, &v| acc | (v ^ h)),
            };
            repeat |= h == prev;
            prev = h;
            *head = h;
        }
        if diff != 0 || repeat {
            return false;
        }
    }
    true
}

/// The smallest and largest label (a fold: `min()` / `max()` call the comparison once per
/// label).
fn bounds(labels: &[i64]) -> Option<(i64, i64)> {
    (!labels.is_empty()).then(|| {
        labels
            .iter()
            .fold((i64::MAX, i64::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)))
    })
}

/// Whether the labels `heads` are all distinct: a bit per value when their range is small
/// (a few bits per label: it stays in cache), else a hash set.
pub fn all_distinct(heads: &[i64]) -> bool {
    let Some((lo, hi)) = bounds(heads) else {
        return true;
    };
    let range = hi as i128 - lo as i128 + 1;
    if range < heads.len() as i128 {
        return false;
    }
    if range <= (64 * heads.len() as i128).max(1 << 16) {
        let mut bits = vec![0u64; (range as usize).div_ceil(64)];
        let mut seen = 0u64;
        for &h in heads {
            let v = h.wrapping_sub(lo) as u64;
            let (w, b) = ((v >> 6) as usize, 1u64 << (v & 63));
            seen |= bits[w] & b;
            bits[w] |= b;
        }
        return seen == 0;
    }
    distinct_hashed(heads)
}

/// [`all_distinct`] with an open-addressing set (linear probing, at most half full) whose
/// slots are prefetched ahead: the labels are read at random.
fn distinct_hashed(heads: &[i64]) -> bool {
    let bits = (2 * heads.len())
        .max(2)
        .next_power_of_two()
        .trailing_zeros();
    let mask = (1usize << bits) - 1;
    let slot = |h: i64| {
        let h = (h as u64 ^ (h as u64 >> 32)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (h >> (64 - bits)) as usize & mask
    };
    // EMPTY marks a free slot; the label EMPTY itself is tracked on the side.
    const EMPTY: i64 = i64::MIN;
    let mut table = vec![EMPTY; mask + 1];
    let mut empty_seen = false;
    for (j, &h) in heads.iter().enumerate() {
        if let Some(&a) = heads.get(j + PREFETCH) {
            prefetch(&table[slot(a)]);
        }
        if h == EMPTY {
            if empty_seen {
                return false;
            }
            empty_seen = true;
            continue;
        }
        let mut s = slot(h);
        loop {
            let t = table[s];
            if t == h {
                return false;
            }
            if t == EMPTY {
                table[s] = h;
                break;
            }
            s = (s + 1) & mask;
        }
    }
    true
}

/// Codes of `labels` by first appearance, in one serial pass: a direct table when their range
/// is at most about twice their number, else a hash map. (Run heads: mostly distinct, and
/// far fewer than the rewards, so one pass beats splitting them across threads.)
fn number(labels: &[i64]) -> Vec<u32> {
    const UNSEEN: u32 = u32::MAX;
    let Some((lo, hi)) = bounds(labels) else {
        return Vec::new();
    };
    let range = hi as i128 - lo as i128 + 1;
    if range > (2 * labels.len() as i128).max(1 << 16) {
        let mut map: std::collections::HashMap<i64, u32, foldhash::fast::RandomState> =
            Default::default();
        return labels
            .iter()
            .map(|&v| {
                let next = map.len() as u32;
                *map.entry(v).or_insert(next)
            })
            .collect();
    }
    let slot = |v: i64| v.wrapping_sub(lo) as u64 as usize;
    let mut table = vec![UNSEEN; range as usize];
    let mut next = 0u32;
    let ahead = &labels[PREFETCH.min(labels.len())..];
    let mut codes = Vec::with_capacity(labels.len());
    for (i, &v) in labels.iter().enumerate() {
        if let Some(&a) = ahead.get(i) {
            prefetch(&table[slot(a)]);
        }
        let e = &mut table[slot(v)];
        if *e == UNSEEN {
            *e = next;
            next += 1;
        }
        codes.push(*e);
    }
    codes
}

/// Group codes keyed by object address (labels resolved by identity): open addressing, linear
/// probing, at most half full, 16 bytes an entry; slots can be prefetched ahead of the lookup,
/// which a general hash map does not allow (rows in shuffled order miss the cache on almost
/// every lookup once there are tens of thousands of labels).
struct AddrMap {
    slots: Vec<(usize, u32)>,
    shift: u32,
    len: usize,
}

impl Default for AddrMap {
    fn default() -> Self {
        AddrMap::with_bits(MIN_ADDR_BITS)
    }
}

impl Drop for AddrMap {
    fn drop(&mut self) {
        ADDR_SLOTS.give(std::mem::take(&mut self.slots));
    }
}

const MIN_ADDR_BITS: u32 = 10;
static ADDR_SLOTS: Recycled<(usize, u32)> = Recycled::new();

impl AddrMap {
    fn with_bits(bits: u32) -> Self {
        AddrMap {
            slots: ADDR_SLOTS.take(|_| 1 << bits, (0, 0)),
            shift: 64 - bits,
            len: 0,
        }
    }

    /// A map for at most `n` objects: it starts as large as the last one recycled (tables
    /// grown in earlier calls are not grown again), but never larger than `n` objects need.
    fn for_objects(n: usize) -> Self {
        let most = (2 * n)
            .next_power_of_two()
            .trailing_zeros()
            .max(MIN_ADDR_BITS);
        let mut bits = MIN_ADDR_BITS;
        let slots = ADDR_SLOTS.take(
            |cap| {
                let recycled = usize::BITS - 1 - cap.max(1).leading_zeros();
                bits = recycled.clamp(MIN_ADDR_BITS, most);
                1 << bits
            },
            (0, 0),
        );
        AddrMap {
            slots,
            shift: 64 - bits,
            len: 0,
        }
    }

    #[inline(always)]
    fn slot(&self, addr: usize) -> usize {
        ((addr as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> self.shift) as usize
    }

    /// Ask for the cache line that a lookup of `addr` will read first.
    #[inline(always)]
    fn prefetch(&self, addr: usize) {
        prefetch(&self.slots[self.slot(addr)]);
    }

    /// The code of `addr` (never 0), inserting `make()` when absent.
    #[inline]
    fn get_or_insert<E>(
        &mut self,
        addr: usize,
        make: impl FnOnce() -> Result<u32, E>,
    ) -> Result<u32, E> {
        debug_assert_ne!(addr, 0);
        let mask = self.slots.len() - 1;
        let mut s = self.slot(addr);
        loop {
            let (k, v) = self.slots[s];
            if k == addr {
                return Ok(v);
            }
            if k == 0 {
                break;
            }
            s = (s + 1) & mask;
        }
        let v = make()?;
        self.slots[s] = (addr, v);
        self.len += 1;
        if 2 * self.len > self.slots.len() {
            self.grow();
        }
        Ok(v)
    }

    fn grow(&mut self) {
        let bits = 64 - self.shift + 1;
        let old = std::mem::replace(self, AddrMap::with_bits(bits));
        let mask = self.slots.len() - 1;
        for &(k, v) in old.slots.iter().filter(|e| e.0 != 0) {
            let mut s = self.slot(k);
            while self.slots[s].0 != 0 {
                s = (s + 1) & mask;
            }
            self.slots[s] = (k, v);
        }
        self.len = old.len;
    }
}

/// The most ranges `codes_by_address` cuts its input into: each range's distinct objects are
/// looked up again when the ranges are joined, which costs more than it saves beyond a few.
pub(crate) const ADDRESS_RANGES: usize = 4;

/// Codes by object address (identity): the code of a label is the index of its object among
/// the distinct objects in order of first appearance, and `fresh` holds the first index of
/// each. Large inputs are cut into up to `ADDRESS_RANGES` ranges numbered on the pool's
/// threads, each with its own table; the ranges' objects are then numbered in order (a lookup
/// per object of each range after the first) and their codes mapped in one more pass.
pub fn codes_by_address(addrs: &[usize], threads: usize) -> (Vec<u32>, Vec<usize>) {
    let n = addrs.len();
    let threads = resolve_threads(threads).min(ADDRESS_RANGES);
    let mut codes: Vec<u32> = with_capacity_huge(n);
    // Each range: its codes (into its own `fresh`), its first indices, its table.
    let mut parts = map_ranges_mut(
        n,
        threads,
        &mut codes.spare_capacity_mut()[..n],
        |i| i,
        |r, piece| {
            let mut map = AddrMap::for_objects(r.len());
            let mut fresh = Vec::new();
            let mut prev = (0usize, 0u32);
            let start = r.start;
            for (i, c) in r.zip(piece.iter_mut()) {
                let addr = addrs[i];
                if addr != prev.0 {
                    if let Some(&next) = addrs.get(i + PREFETCH_SLOTS) {
                        map.prefetch(next);
                    }
                    let code = map.get_or_insert(addr, || {
                        fresh.push(i);
                        Ok::<_, ()>(fresh.len() as u32 - 1)
                    });
                    prev = (addr, code.unwrap_or_default());
                }
                c.write(prev.1);
            }
            (start, fresh, map)
        },
    )
    .into_iter();
    // SAFETY: the ranges cover 0..n (map_ranges_mut's pieces), each slot written above.
    unsafe { codes.set_len(n) };
    let Some((_, mut fresh, mut map)) = parts.next() else {
        return (codes, Vec::new());
    };
    // The later ranges' objects numbered after the first range's, in order of appearance.
    let later: Vec<(usize, Vec<u32>)> = parts
        .map(|(start, local, table)| {
            drop(table);
            let remap = local
                .iter()
                .map(|&i| {
                    map.get_or_insert(addrs[i], || {
                        fresh.push(i);
                        Ok::<_, ()>(fresh.len() as u32 - 1)
                    })
                    .unwrap_or_default()
                })
                .collect();
            (start, remap)
        })
        .collect();
    drop(map);
    if !later.is_empty() {
        let first_end = later[0].0;
        map_pieces(
            threads,
            later
                .iter()
                .enumerate()
                .map(|(k, &(s, _))| s..later.get(k + 1).map_or(n, |l| l.0))
                .collect(),
            &mut codes[first_end..],
            |i| i - first_end,
            |r, piece| {
                let remap = &later.iter().find(|l| l.0 == r.start).unwrap().1;
                for c in piece.iter_mut() {
                    *c = remap[*c as usize];
                }
            },
        );
    }
    (codes, fresh)
}

/// Codes (by first appearance) of `n` values given by their hashes, equal values being one
/// code: `same(a, b)` compares values `a` and `b`, and is asked only when their hashes are
/// equal. An open-addressing table sized once (at most half full) whose slots are prefetched
/// ahead, since they are read at random. A slot is 8 bytes, the low half of the hash (a tag)
/// above the code + 1 (0: free), so that the table is half the size it would be with the
/// whole hash and the value in it: it stays in cache twice as long and costs half to clear
/// (measured ~2x faster for 62.5k labels). A code's value is `owner[code]`, read only when the
/// tag matches.
pub fn number_by_hash<E>(
    hashes: &[u64],
    mut same: impl FnMut(usize, usize) -> Result<bool, E>,
) -> Result<Vec<u32>, E> {
    let n = hashes.len();
    let bits = (2 * n).max(2).next_power_of_two().trailing_zeros();
    let mask = (1usize << bits) - 1;
    let slot = |h: u64| ((h.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - bits)) as usize) & mask;
    let tag = |h: u64| h << 32;
    let mut table = HASH_SLOTS.take(|_| mask + 1, 0u64);
    let mut owner: Vec<u32> = Vec::new();
    let mut codes = Vec::with_capacity(n);
    for (j, &h) in hashes.iter().enumerate() {
        if let Some(&ahead) = hashes.get(j + PREFETCH_SLOTS) {
            prefetch(&table[slot(ahead)]);
        }
        let mut s = slot(h);
        let code = loop {
            let e = table[s];
            if e == 0 {
                let c = owner.len() as u32;
                table[s] = tag(h) | (c as u64 + 1);
                owner.push(j as u32);
                break c;
            }
            if e >> 32 << 32 == tag(h) {
                let c = (e as u32).wrapping_sub(1);
                let v = owner[c as usize] as usize;
                if hashes[v] == h && same(v, j)? {
                    break c;
                }
            }
            s = (s + 1) & mask;
        };
        codes.push(code);
    }
    HASH_SLOTS.give(table);
    Ok(codes)
}

static HASH_SLOTS: Recycled<u64> = Recycled::new();

/// Buffers kept between calls for a kind of table that every call fills afresh (up to
/// `RECYCLED_KEPT`, the largest ones): fresh multi-megabyte tables cost a page fault per
/// 4 KiB each call once the allocator has given the memory back to the system (as it does
/// after any large free, such as another library's), which made calls after idle time
/// several times slower than back-to-back ones. Buffers up to `RECYCLED_BYTES` each (at most
/// `RECYCLED_KEPT` times that kept, only after tables of millions of distinct labels);
/// `try_lock` only: never blocks (nor in a forked child), a busy slot just means a fresh
/// table.
pub(crate) struct Recycled<T>(Mutex<Vec<Vec<T>>>);

const RECYCLED_BYTES: usize = 32 << 20;
/// Buffers kept per kind of table: one per thread of `codes_by_address` (at most
/// `ADDRESS_RANGES`), which fill tables of the same kind at the same time.
const RECYCLED_KEPT: usize = ADDRESS_RANGES;

impl<T: Copy> Recycled<T> {
    pub(crate) const fn new() -> Self {
        Recycled(Mutex::new(Vec::new()))
    }

    /// A table of `len(capacity of the kept buffer)` entries set to `fill`: the largest kept
    /// buffer when it is large enough.
    pub(crate) fn take(&self, len: impl FnOnce(usize) -> usize, fill: T) -> Vec<T> {
        let mut v = match self.0.try_lock() {
            Ok(mut kept) => kept.pop().unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        let len = len(v.capacity());
        if v.capacity() < len {
            v = Vec::new();
        }
        v.clear();
        v.resize(len, fill);
        v
    }

    /// Keep `v` for a later call (not huge; the smallest kept buffer makes room for a larger
    /// one). The kept buffers stay sorted by capacity, so `take` gets the largest.
    pub(crate) fn give(&self, v: Vec<T>) {
        if v.capacity() == 0 || v.capacity() * size_of::<T>() > RECYCLED_BYTES {
            return;
        }
        if let Ok(mut kept) = self.0.try_lock() {
            if kept.len() == RECYCLED_KEPT {
                if kept[0].capacity() >= v.capacity() {
                    return;
                }
                kept.remove(0);
            }
            let at = kept.partition_point(|k| k.capacity() <= v.capacity());
            kept.insert(at, v);
        }
    }
}

/// How many labels ahead the numbering tables read at random (`number_by_hash` by hash,
/// `codes_by_address` by address) prefetch a slot.
const PREFETCH_SLOTS: usize = 16;

/// Ask for the first two cache lines of the object at `addr` (a short str: its header, hash
/// and text). A hint only: never dereferenced, so any address is harmless.
#[inline(always)]
pub fn prefetch_object(addr: usize) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetching is a hint; it never faults, whatever the address.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(addr as *const i8);
        _mm_prefetch::<_MM_HINT_T0>(addr.wrapping_add(64) as *const i8);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = addr;
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The reference: every label numbered on its own.
    fn general(ids: &[i64]) -> (Grouping, Vec<usize>) {
        let (codes, first) = factorize(ids.iter().copied(), ids.len()).unwrap();
        (Grouping::from_factorized(codes, &first).unwrap(), first)
    }

    /// `group_ints` against the reference: the same groups, first indices and labels; the
    /// same layout, except that contiguous groups of one size may be `Uniform`.
    fn check_ints(ids: &[i64], threads: usize) -> Grouping {
        let (g, first, labels) = group_ints(ids, threads).unwrap();
        assert_eq!(labels, first.iter().map(|&i| ids[i]).collect::<Vec<_>>());
        same_layout(&(g.clone(), first), &general(ids));
        g
    }

    /// The same groups and first indices; the same layout, except that contiguous groups of
    /// one size may be `Uniform` where the reference has `Ragged`.
    fn same_layout(got: &(Grouping, Vec<usize>), want: &(Grouping, Vec<usize>)) {
        let ((g, first), (w, want_first)) = (got, want);
        assert_eq!(first, want_first);
        assert_eq!(g.len(), w.len());
        assert_eq!(g.codes(), w.codes());
        assert_eq!(g.offsets(), w.offsets());
        match (g, w) {
            (Grouping::Uniform { size, .. }, Grouping::Ragged { offsets }) => {
                assert!(offsets.windows(2).all(|o| o[1] - o[0] == *size))
            }
            _ => assert_eq!(g, w),
        }
    }

    fn runs_path(ids: &[i64], threads: usize) -> (Grouping, Vec<usize>) {
        let (starts, heads) = runs(ids, threads);
        assert_eq!(heads, starts.iter().map(|&s| ids[s]).collect::<Vec<_>>());
        from_runs(ids.len(), &starts, &number(&heads), threads).unwrap()
    }

    fn naive_starts(ids: &[i64]) -> Vec<usize> {
        (0..ids.len())
            .filter(|&i| i == 0 || ids[i] != ids[i - 1])
            .collect()
    }

    /// Labels as runs of random lengths over a small alphabet: runs that come back later,
    /// neighbouring runs, long and short runs, sizes around the 64-wide blocks.
    fn runs_of_labels() -> impl Strategy<Value = Vec<i64>> {
        prop::collection::vec((0i64..12, 1usize..80), 1..60).prop_map(|runs| {
            runs.into_iter()
                .flat_map(|(v, len)| std::iter::repeat_n(v, len))
                .collect()
        })
    }

    proptest! {
        #[test]
        fn runs_group_exactly_as_labels_one_by_one(ids in runs_of_labels(), threads in 1usize..4) {
            prop_assert_eq!(runs(&ids, threads).0, naive_starts(&ids));
            same_layout(&runs_path(&ids, threads), &general(&ids));
            check_ints(&ids, threads);
        }

        #[test]
        fn shuffled_labels_group_as_before(ids in prop::collection::vec(-5i64..5, 1..500)) {
            same_layout(&runs_path(&ids, 2), &general(&ids));
            check_ints(&ids, 2);
        }
    }

    /// Large inputs (parallel run search and code fill, ranges cut inside runs): blocks of 16
    /// in shuffled order are contiguous (offsets); a block that comes back makes them labelled.
    #[test]
    fn large_blocks_and_repeats() {
        let k = 40_000i64;
        let order: Vec<i64> = (0..k).map(|b| (b * 7919) % k).collect();
        let mut ids: Vec<i64> = order
            .iter()
            .flat_map(|&b| std::iter::repeat_n(b * 1_000_003, 16))
            .collect();
        assert!(looks_like_runs(&ids));
        let g = check_ints(&ids, 2);
        assert_eq!(
            g,
            Grouping::Uniform {
                n: ids.len(),
                size: 16
            }
        );
        ids.extend(std::iter::repeat_n(order[5] * 1_000_003, 3));
        ids.extend(std::iter::repeat_n(-1, 5));
        assert!(matches!(check_ints(&ids, 2), Grouping::Labelled(_)));
        for threads in [1, 2, 3] {
            same_layout(&runs_path(&ids, threads), &general(&ids));
        }
    }

    /// Labels in runs of one length: a small alphabet gives neighbouring runs of one label
    /// (a longer run: not of one length) and labels that come back later (not contiguous);
    /// `spread` multiplies the labels so that both the bit table and the hash set decide.
    fn equal_runs_of_labels() -> impl Strategy<Value = Vec<i64>> {
        (
            1usize..20,
            prop::collection::vec(0i64..30, 1..80),
            prop::sample::select(vec![1i64, 1 << 40, -7_919]),
        )
            .prop_map(|(size, labels, spread)| {
                labels
                    .into_iter()
                    .flat_map(|v| std::iter::repeat_n(v.wrapping_mul(spread), size))
                    .collect()
            })
    }

    proptest! {
        #[test]
        fn equal_runs_group_exactly_as_labels_one_by_one(ids in equal_runs_of_labels(), threads in 1usize..4) {
            let g = check_ints(&ids, threads);
            let found = equal_runs(&ids, threads);
            let starts = naive_starts(&ids);
            let size = starts.get(1).copied().unwrap_or(ids.len());
            let equal = starts.len() * size == ids.len() && (0..starts.len()).all(|j| starts[j] == j * size);
            prop_assert_eq!(found.is_some(), equal);
            if let Some((s, heads)) = found {
                prop_assert_eq!(s, size);
                prop_assert_eq!(heads, starts.iter().map(|&i| ids[i]).collect::<Vec<_>>());
            }
            let mut sorted = starts.iter().map(|&i| ids[i]).collect::<Vec<_>>();
            sorted.sort();
            let distinct = sorted.windows(2).all(|w| w[0] != w[1]);
            // (Labels not sampled as runs are numbered one by one: contiguous groups `Ragged`.)
            let uniform = looks_like_runs(&ids) && equal && distinct;
            prop_assert_eq!(matches!(g, Grouping::Uniform { .. }), uniform);
        }

        /// The distinctness test agrees with sorting, for dense and for spread labels.
        #[test]
        fn all_distinct_is_sorting(mut v in prop::collection::vec(-300i64..300, 0..400), wide in any::<bool>()) {
            if wide {
                v.iter_mut().for_each(|x| *x = x.wrapping_mul(0x0123_4567_89AB_CDEF));
                v.push(i64::MIN);
            }
            let mut sorted = v.clone();
            sorted.sort();
            prop_assert_eq!(all_distinct(&v), sorted.windows(2).all(|w| w[0] != w[1]));
        }
    }

    /// Large layouts through every path, on one to three threads: blocks of one size in any
    /// order (uniform), the same with one label that comes back (labelled), one giant run,
    /// all singletons (distinct and not), runs of two lengths (ragged), shuffled rows.
    #[test]
    fn large_layouts_of_every_kind() {
        let n = 3 * SERIAL_BELOW;
        let k = (n / 8) as i64;
        let mut s = 5u64;
        let mut rnd = move |m: u64| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 33) % m
        };
        let blocks: Vec<i64> = (0..n as i64).map(|i| ((i / 8) * 7_919) % k - 3).collect();
        let mut repeated = blocks.clone();
        repeated[n - 8..].fill(blocks[0]);
        let wide: Vec<i64> = blocks
            .iter()
            .map(|&v| v.wrapping_mul(0x5DEE_CE66_D000_0001))
            .collect();
        let giant = vec![42i64; n];
        let singletons: Vec<i64> = (0..n as i64).rev().collect();
        let mut some_twice = singletons.clone();
        some_twice[n / 2] = some_twice[7];
        let mut ragged = Vec::new();
        while ragged.len() < n {
            let len = if rnd(2) == 0 { 3 } else { 17 };
            ragged.extend(std::iter::repeat_n(ragged.len() as i64 * 31, len));
        }
        let shuffled: Vec<i64> = (0..n).map(|_| rnd(k as u64) as i64).collect();
        for threads in 1..=3 {
            let uniform = |size| Grouping::Uniform { n, size };
            assert_eq!(check_ints(&blocks, threads), uniform(8));
            assert_eq!(check_ints(&wide, threads), uniform(8));
            assert!(matches!(
                check_ints(&repeated, threads),
                Grouping::Labelled(_)
            ));
            assert_eq!(check_ints(&giant, threads), uniform(n));
            assert!(matches!(
                check_ints(&singletons, threads),
                Grouping::Ragged { .. }
            ));
            assert!(matches!(
                check_ints(&some_twice, threads),
                Grouping::Labelled(_)
            ));
            assert!(matches!(
                check_ints(&ragged, threads),
                Grouping::Ragged { .. }
            ));
            assert!(matches!(
                check_ints(&shuffled, threads),
                Grouping::Labelled(_)
            ));
        }
    }

    #[test]
    fn sample_tells_runs_from_shuffled_rows() {
        let blocks: Vec<i64> = (0..100_000).map(|i| i / 16).collect();
        assert!(looks_like_runs(&blocks));
        let shuffled: Vec<i64> = (0..100_000).map(|i| (i * 7919) % 6250).collect();
        assert!(!looks_like_runs(&shuffled));
        assert!(looks_like_runs(&[1i64]));
        assert!(looks_like_runs::<i64>(&[]));
    }

    proptest! {
        /// Numbering by hash is numbering by value, whatever the hash collisions.
        #[test]
        fn number_by_hash_is_numbering_by_value(
            values in prop::collection::vec(0u64..40, 0..300),
            hash_bits in 0u32..7,
        ) {
            // (hash_bits >= 4: hashes that differ only above the low 32 bits, whose tags are
            // equal)
            let hashes: Vec<u64> = values
                .iter()
                .map(|v| match hash_bits {
                    0..4 => v & ((1 << hash_bits) - 1),
                    _ => (v & ((1 << (hash_bits - 3)) - 1)) << 32,
                })
                .collect();
            let mut asked = 0;
            let codes = number_by_hash(&hashes, |a, b| {
                asked += 1;
                prop_assert_eq!(hashes[a], hashes[b]);
                Ok(values[a] == values[b])
            })?;
            let want: Vec<u32> = factorize(values.iter().copied(), values.len()).unwrap().0;
            prop_assert_eq!(codes, want);
            let _ = asked;
        }
    }

    /// The address map returns what was inserted, across growth, with clustered keys.
    #[test]
    fn addr_map_is_a_map() {
        let mut m = AddrMap::default();
        let keys: Vec<usize> = (1..20_000usize)
            .map(|i| i * 16 + (i % 3) * (1 << 40))
            .collect();
        for (j, &k) in keys.iter().enumerate() {
            assert_eq!(m.get_or_insert(k, || Ok::<u32, ()>(j as u32)), Ok(j as u32));
        }
        for (j, &k) in keys.iter().enumerate().rev() {
            m.prefetch(k);
            assert_eq!(m.get_or_insert(k, || Err(())), Ok(j as u32));
        }
        assert_eq!(m.get_or_insert(8, || Err("absent")), Err("absent"));
        assert_eq!(m.len, keys.len());
    }

    /// Codes by address on 1 to 6 threads (ranges of up to `ADDRESS_RANGES` joined) equal a
    /// dict's numbering by first appearance, for shuffled, clustered and all-distinct objects.
    #[test]
    fn codes_by_address_number_by_first_appearance() {
        let mut next = crate::kernel::xorshift(0x2545_f491_4f6c_dd1d);
        let n = 3 * SERIAL_BELOW + 11;
        let shuffled: Vec<usize> = (0..n).map(|_| 64 + 48 * next(9000) as usize).collect();
        let clustered: Vec<usize> = (0..n)
            .map(|i| 64 + 48 * (i / 700 + next(3) as usize))
            .collect();
        let distinct: Vec<usize> = (0..n).map(|i| 64 + 16 * i).collect();
        for addrs in [shuffled, clustered, distinct, vec![4096; 5], vec![]] {
            let (want, want_first) = factorize(addrs.iter().copied(), addrs.len()).unwrap();
            for threads in 1..=6 {
                let (codes, fresh) = codes_by_address(&addrs, threads);
                assert_eq!(codes, want, "{threads} threads");
                assert_eq!(fresh, want_first, "{threads} threads");
            }
        }
    }

    #[test]
    fn empty_and_single() {
        assert_eq!(runs::<i64>(&[], 2), (vec![], vec![]));
        assert!(matches!(from_runs(0, &[], &[], 1), Err(LayoutError::Empty)));
        assert!(matches!(group_ints(&[], 1), Err(LayoutError::Empty)));
        assert_eq!(
            group_ints(&[7], 1).unwrap(),
            (Grouping::Uniform { n: 1, size: 1 }, vec![0], vec![7])
        );
    }
}
