//! The crate's own rayon pools, and the parallel maps over ranges that run on them.
//!
//! A parallel map hands each range its own disjoint piece of the output (`map_pieces`), so
//! no two threads ever share output memory. The pools are owned here, not rayon's global pool, so that a forked child can drop them
//! (their threads do not exist in the child) and build fresh ones: see [`forget_pools_after_fork`].

use rayon::{ThreadPool, ThreadPoolBuilder};
use std::ops::Range;
use std::sync::{Arc, Mutex, OnceLock};

/// Below this many elements a call runs on the calling thread: waking a pool costs more.
pub const SERIAL_BELOW: usize = 1 << 17;
/// Batches per thread: a few, so that uneven groups or a busy core even out.
pub const BATCHES_PER_THREAD: usize = 4;
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

/// Run `f` over about equal element ranges covering `0..n` (one per thread, or one in all
/// when n is small), returning the results in order. `threads == 0` means the default.
pub fn map_ranges<R, F>(n: usize, threads: usize, f: F) -> Vec<R>
where
    R: Send,
    F: Fn(Range<usize>) -> R + Sync + Send,
{
    let threads = resolve_threads(threads);
    let ranges = even_ranges(n, threads);
    if ranges.len() == 1 {
        return vec![f(0..n)];
    }
    use rayon::prelude::*;
    pool(threads).install(|| ranges.into_par_iter().map(&f).collect())
}

/// The thread count for a call: `threads`, or the default when 0.
pub fn resolve_threads(threads: usize) -> usize {
    if threads == 0 {
        default_threads()
    } else {
        threads
    }
}

/// `ranges` (consecutive, in order) cut out of `0..n` into one per thread; one in all when
/// the work is small or serial.
fn even_ranges(n: usize, threads: usize) -> Vec<Range<usize>> {
    if threads <= 1 || n < SERIAL_BELOW {
        return std::iter::once(0..n).collect();
    }
    (0..threads)
        .map(|t| n * t / threads..n * (t + 1) / threads)
        .collect()
}

/// Run `f` over `ranges` (in parallel on `threads` workers when there are several),
/// returning the results in order.
pub fn map_on<R, F>(threads: usize, ranges: Vec<Range<usize>>, f: F) -> Vec<R>
where
    R: Send,
    F: Fn(Range<usize>) -> R + Sync + Send,
{
    if threads <= 1 || ranges.len() <= 1 {
        return ranges.into_iter().map(f).collect();
    }
    use rayon::prelude::*;
    pool(threads).install(|| ranges.into_par_iter().map(&f).collect())
}

/// Run `f` over consecutive `ranges` (in parallel on `threads` workers when there are
/// several), each with its own piece `out[cut(r.start)..cut(r.end)]` of `out`, and return
/// the results in order. `cut` must be non-decreasing with `cut(ranges[0].start) == 0`.
pub fn map_pieces<T, R, F>(
    threads: usize,
    ranges: Vec<Range<usize>>,
    out: &mut [T],
    cut: impl Fn(usize) -> usize,
    f: F,
) -> Vec<R>
where
    T: Send,
    R: Send,
    F: Fn(Range<usize>, &mut [T]) -> R + Sync + Send,
{
    let mut rest = out;
    let mut pieces = Vec::with_capacity(ranges.len());
    for r in &ranges {
        let (piece, tail) = std::mem::take(&mut rest).split_at_mut(cut(r.end) - cut(r.start));
        pieces.push(piece);
        rest = tail;
    }
    if ranges.len() == 1 {
        let piece = pieces.pop().unwrap();
        return vec![f(ranges.into_iter().next().unwrap(), piece)];
    }
    use rayon::prelude::*;
    pool(threads).install(|| {
        ranges
            .into_par_iter()
            .zip(pieces)
            .map(|(r, o)| f(r, o))
            .collect()
    })
}

/// Run `f` over about equal element ranges covering `0..n` (one per thread, or one in all
/// when n is small), each with its piece `out[cut(r.start)..cut(r.end)]`, results in order.
/// `threads == 0` means the default.
pub fn map_ranges_mut<T, R, F>(
    n: usize,
    threads: usize,
    out: &mut [T],
    cut: impl Fn(usize) -> usize,
    f: F,
) -> Vec<R>
where
    T: Send,
    R: Send,
    F: Fn(Range<usize>, &mut [T]) -> R + Sync + Send,
{
    let threads = resolve_threads(threads);
    map_pieces(threads, even_ranges(n, threads), out, cut, f)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every range gets exactly its own piece, in order, serial or parallel.
    #[test]
    fn pieces_are_the_ranges_of_out() {
        for n in [10usize, 3 * SERIAL_BELOW] {
            let mut out = vec![0usize; 2 * n];
            let starts = map_ranges_mut(
                n,
                3,
                &mut out,
                |i| 2 * i,
                |r, o| {
                    assert_eq!(o.len(), 2 * r.len());
                    o.iter_mut()
                        .enumerate()
                        .for_each(|(j, v)| *v = 2 * r.start + j);
                    r.start
                },
            );
            assert!(out.iter().enumerate().all(|(i, &v)| v == i));
            assert_eq!(starts[0], 0);
            assert_eq!(starts.len() > 1, n >= SERIAL_BELOW);
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
}
