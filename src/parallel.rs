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

struct Pools {
    default_threads: usize,
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

/// `GROUPADV_NUM_THREADS`, else the CPUs available, read once: `available_parallelism`
/// reads cgroup files on every call, far too slow for a per-call default.
fn environment_threads() -> usize {
    static THREADS: OnceLock<usize> = OnceLock::new();
    *THREADS.get_or_init(|| {
        std::env::var("GROUPADV_NUM_THREADS")
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .filter(|&n| n > 0)
            .unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1)
            })
    })
}

/// The thread count used when a call does not name one: `set_num_threads`, else the
/// `GROUPADV_NUM_THREADS` environment variable (read at first use), else the CPUs available.
pub fn default_threads() -> usize {
    match lock().default_threads {
        0 => environment_threads(),
        n => n,
    }
}

/// Set the default thread count (0 returns to the environment/CPU default).
pub fn set_default_threads(n: usize) {
    lock().default_threads = n;
}

pub(crate) fn pool(threads: usize) -> Arc<ThreadPool> {
    let mut pools = lock();
    if let Some((_, p)) = pools.by_size.iter().find(|(t, _)| *t == threads) {
        return p.clone();
    }
    let p = Arc::new(
        ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("groupadv-{i}"))
            .build()
            .expect("failed to start groupadv worker threads"),
    );
    pools.by_size.push((threads, p.clone()));
    p
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
            let starts = map_ranges_mut(n, 3, &mut out, |i| 2 * i, |r, o| {
                assert_eq!(o.len(), 2 * r.len());
                o.iter_mut().enumerate().for_each(|(j, v)| *v = 2 * r.start + j);
                r.start
            });
            assert!(out.iter().enumerate().all(|(i, &v)| v == i));
            assert_eq!(starts[0], 0);
            assert_eq!(starts.len() > 1, n >= SERIAL_BELOW);
        }
    }
}
