//! Work splitting over groups and the crate's own rayon pools.
//!
//! Work is cut on group boundaries into batches of about equal element counts, so a batch
//! never shares a group (and, for contiguous layouts, never shares output memory) with another.
//! The pools are owned here, not rayon's global pool, so that a forked child can drop them
//! (their threads do not exist in the child) and build fresh ones: see [`forget_pools_after_fork`].

use crate::groups::Grouping;
use rayon::{ThreadPool, ThreadPoolBuilder};
use std::ops::Range;
use std::sync::{Arc, Mutex, OnceLock};

/// Below this many elements a call runs on the calling thread: waking a pool costs more.
pub const SERIAL_BELOW: usize = 1 << 17;
/// Batches per thread: a few, so that uneven groups or a busy core even out.
const BATCHES_PER_THREAD: usize = 4;
/// The most threads one call, `set_num_threads` or `GROUPADV_NUM_THREADS` may ask for: beyond
/// it a pool is an error, not an allocation failure or thousands of OS threads.
pub const MAX_THREADS: usize = 1024;
/// Pools of distinct sizes kept alive; the least recently used one beyond this is dropped
/// (its threads exit), so that calls with many distinct `num_threads` cannot pile up threads.
pub const MAX_POOLS: usize = 4;

struct Pools {
    default_threads: usize,
    /// Most recently used last.
    by_size: Vec<(usize, Arc<ThreadPool>)>,
}

static POOLS: Mutex<Pools> = Mutex::new(Pools {
    default_threads: 0,
    by_size: Vec::new(),
});

fn lock() -> std::sync::MutexGuard<'static, Pools> {
    // A panic while holding the lock leaves plain data behind; keep going.
    POOLS.lock().unwrap_or_else(|e| e.into_inner())
}

fn cpus() -> usize {
    static CPUS: OnceLock<usize> = OnceLock::new();
    *CPUS.get_or_init(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(MAX_THREADS)
    })
}

/// Why `GROUPADV_NUM_THREADS` (or a thread count) cannot be used.
pub fn check_threads(n: usize, what: &str) -> Result<usize, String> {
    if n > MAX_THREADS {
        return Err(format!(
            "{what} must be at most {MAX_THREADS} (groupadv.MAX_THREADS), got {n}"
        ));
    }
    Ok(n)
}

/// `GROUPADV_NUM_THREADS` (an integer in 1..=MAX_THREADS, or unset/empty), read once:
/// `available_parallelism` reads cgroup files on every call, far too slow for a per-call default.
pub fn environment_threads() -> Result<Option<usize>, String> {
    static THREADS: OnceLock<Result<Option<usize>, String>> = OnceLock::new();
    THREADS
        .get_or_init(|| {
            let Some(raw) = std::env::var_os("GROUPADV_NUM_THREADS") else {
                return Ok(None);
            };
            let text = raw.to_string_lossy();
            let v = text.trim();
            if v.is_empty() {
                return Ok(None);
            }
            let bad = || {
                format!(
                    "GROUPADV_NUM_THREADS must be an integer from 1 to {MAX_THREADS}, got {text:?}"
                )
            };
            match v.parse::<u64>() {
                Ok(n) if (1..=MAX_THREADS as u64).contains(&n) => Ok(Some(n as usize)),
                _ => Err(bad()),
            }
        })
        .clone()
}

/// The thread count used when a call does not name one: `set_num_threads`, else the
/// `GROUPADV_NUM_THREADS` environment variable (read at first use), else the CPUs available.
/// An unusable `GROUPADV_NUM_THREADS` is an error here (the bindings raise it).
pub fn checked_default_threads() -> Result<usize, String> {
    match lock().default_threads {
        0 => Ok(environment_threads()?.unwrap_or_else(cpus)),
        n => Ok(n),
    }
}

/// As [`checked_default_threads`], with an unusable environment variable read as unset
/// (the Python API has already raised for it).
pub fn default_threads() -> usize {
    checked_default_threads().unwrap_or_else(|_| cpus())
}

/// Set the default thread count (0 returns to the environment/CPU default).
pub fn set_default_threads(n: usize) -> Result<(), String> {
    lock().default_threads = check_threads(n, "the number of threads")?;
    Ok(())
}

/// The crate's pool of `threads` workers (capped at [`MAX_THREADS`]), from a small cache.
pub(crate) fn pool(threads: usize) -> Arc<ThreadPool> {
    let threads = threads.clamp(1, MAX_THREADS);
    let mut pools = lock();
    if let Some(i) = pools.by_size.iter().position(|(t, _)| *t == threads) {
        let entry = pools.by_size.remove(i);
        let p = entry.1.clone();
        pools.by_size.push(entry);
        return p;
    }
    let p = Arc::new(
        ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("groupadv-{i}"))
            .build()
            .expect("failed to start groupadv worker threads"),
    );
    pools.by_size.push((threads, p.clone()));
    let evicted: Vec<_> = if pools.by_size.len() > MAX_POOLS {
        let extra = pools.by_size.len() - MAX_POOLS;
        pools.by_size.drain(..extra).collect()
    } else {
        Vec::new()
    };
    drop(pools);
    // Dropped outside the lock: the last handle of a pool ends its threads (a call still
    // running on an evicted pool keeps it alive until it returns).
    drop(evicted);
    p
}

/// Pools currently cached and their total worker threads (for tests and diagnostics).
pub fn cached_pools() -> (usize, usize) {
    let pools = lock();
    (
        pools.by_size.len(),
        pools.by_size.iter().map(|(t, _)| t).sum(),
    )
}

/// In a child process after `fork`, the pools' worker threads are gone: leak the pool
/// handles (dropping them would wait on threads that no longer exist) and start afresh.
pub fn forget_pools_after_fork() {
    let mut pools = lock();
    for (_, p) in pools.by_size.drain(..) {
        std::mem::forget(p);
    }
}

/// Cut groups `0..k` into batches of about `n / batches` elements each, on group boundaries.
pub fn split_groups(grouping: &Grouping, batches: usize) -> Vec<Range<usize>> {
    let k = grouping.n_groups();
    let n = grouping.len();
    let batches = batches.clamp(1, k.max(1));
    let mut out = Vec::with_capacity(batches);
    let mut g0 = 0;
    for b in 1..=batches {
        let g1 = if b == batches {
            k
        } else {
            let target = n * b / batches;
            first_group_ending_after(grouping, target).max(g0)
        };
        if g1 > g0 {
            out.push(g0..g1);
        }
        g0 = g1;
    }
    out
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
    let threads = if threads == 0 {
        default_threads()
    } else {
        threads
    };
    if threads <= 1 || grouping.len() < SERIAL_BELOW {
        return vec![f(0..grouping.n_groups())];
    }
    let ranges = split_groups(grouping, threads * BATCHES_PER_THREAD);
    use rayon::prelude::*;
    pool(threads).install(|| ranges.into_par_iter().map(&f).collect())
}

/// Run `f` over about equal element ranges covering `0..n` (one per thread, or one in all
/// when n is small), returning the results in order. `threads == 0` means the default.
pub fn map_ranges<R, F>(n: usize, threads: usize, f: F) -> Vec<R>
where
    R: Send,
    F: Fn(Range<usize>) -> R + Sync + Send,
{
    let threads = if threads == 0 {
        default_threads()
    } else {
        threads
    };
    if threads <= 1 || n < SERIAL_BELOW {
        return vec![f(0..n)];
    }
    let ranges: Vec<Range<usize>> = (0..threads)
        .map(|t| n * t / threads..n * (t + 1) / threads)
        .collect();
    use rayon::prelude::*;
    pool(threads).install(|| ranges.into_par_iter().map(&f).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn pool_cache_is_bounded_and_thread_counts_checked() {
        for t in 2..12 {
            let p = pool(t);
            assert_eq!(p.current_num_threads(), t);
            let (pools, _) = cached_pools();
            assert!(pools <= MAX_POOLS);
        }
        assert_eq!(pool(MAX_THREADS * 4).current_num_threads(), MAX_THREADS);
        assert!(check_threads(MAX_THREADS, "n").is_ok());
        assert!(check_threads(MAX_THREADS + 1, "n").is_err());
        assert!(set_default_threads(usize::MAX).is_err());
    }

    #[test]
    fn map_batches_runs_every_group_once() {
        let g = Grouping::uniform(1 << 17, 4).unwrap();
        let counts = map_batches(&g, 2, |r| r.len());
        assert_eq!(counts.iter().sum::<usize>(), g.n_groups());
        assert!(counts.len() > 1);
    }
}
