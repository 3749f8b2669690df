//! The crate's own worker pools, and the parallel maps over ranges that run on them.
//!
//! A call cuts its work into chunks; the calling thread publishes them to the pool and then
//! claims and runs chunks itself, like the workers, through one atomic counter. A worker that
//! wakes late finds nothing left, and the caller never waits for a worker that has not started:
//! only for chunks already claimed (so a call is never slower than running it serially plus
//! one chunk). Workers spin briefly after their last chunk before parking, so that back-to-back
//! calls find them awake. A parallel map hands each chunk its own disjoint piece of the output
//! (`map_pieces`), so no two threads ever share output memory.
//!
//! The pools are owned here (no rayon global pool), bounded in number ([`MAX_POOLS`]) and size
//! ([`MAX_THREADS`]), so that a forked child can drop them (their threads do not exist in the
//! child) and build fresh ones: see [`forget_pools_after_fork`].

use std::any::Any;
use std::cell::UnsafeCell;
use std::ops::Range;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Below this many elements a call runs on the calling thread: waking a pool costs more.
pub const SERIAL_BELOW: usize = 1 << 17;
/// Batches per thread for callers that cut their own ranges per thread (kept for them).
pub const BATCHES_PER_THREAD: usize = 4;
/// Elements per chunk of the contiguous-group passes: small enough that the last chunk
/// (tens of microseconds) evens out a late or busy worker, large enough for long streams.
pub const CHUNK_ELEMENTS: usize = 1 << 15;
/// The most threads one call, `set_num_threads` or `GROUPADV_NUM_THREADS` may ask for: beyond
/// it a pool is an error, not an allocation failure or thousands of OS threads.
pub const MAX_THREADS: usize = 1024;
/// Pools of distinct sizes kept alive; the least recently used one beyond this is dropped
/// (its threads exit), so that calls with many distinct `num_threads` cannot pile up threads.
pub const MAX_POOLS: usize = 4;
/// How long an idle worker spins (checking for new chunks) before it parks: covers the gap
/// between back-to-back calls from Python, costs nothing measurable after a call.
const SPIN: Duration = Duration::from_micros(300);

/// Chunks one published job may have (they share a 64-bit word with the epoch and the next
/// index); a call with more runs consecutive indices per chunk.
const MAX_CHUNKS: usize = (1 << 18) - 1;
const INDEX_BITS: u32 = 18;
const INDEX_MASK: u64 = (1 << INDEX_BITS) - 1;

/// The claim word: epoch (28 bits) | chunks (18 bits) | next unclaimed chunk (18 bits).
fn pack(epoch: u64, chunks: usize, next: usize) -> u64 {
    (epoch << (2 * INDEX_BITS)) | ((chunks as u64) << INDEX_BITS) | next as u64
}
fn epoch_of(s: u64) -> u64 {
    s >> (2 * INDEX_BITS)
}
fn chunks_of(s: u64) -> usize {
    ((s >> INDEX_BITS) & INDEX_MASK) as usize
}
fn next_of(s: u64) -> usize {
    (s & INDEX_MASK) as usize
}

type Panic = Box<dyn Any + Send>;

/// One published call: its chunk function (on the caller's stack) and the first panic of a
/// chunk, re-raised by the caller once every chunk is finished.
struct Job<'a> {
    run: &'a (dyn Fn(usize) + Sync),
    panic: Mutex<Option<Panic>>,
}

/// What a pool's workers and its callers share.
struct Shared {
    /// `pack(epoch, chunks, next)` of the current call; a chunk is claimed by a compare-and-swap
    /// of this whole word, so a claim that succeeds is of the epoch it read (see `claim`).
    state: AtomicU64,
    /// Chunks of the current call finished (run or panicked).
    done: AtomicUsize,
    /// The current call's `Job` (lifetime erased): dereferenced only by a thread that holds a
    /// claimed, unfinished chunk of its epoch, during which the caller is still waiting.
    job: AtomicPtr<Job<'static>>,
    /// Workers parked (or about to park) on `wake`.
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
    shutdown: AtomicBool,
}

impl Shared {
    /// Claim the next chunk of the current call: its index and the call's job.
    ///
    /// The job pointer is read between the load of `state` and the swap; the swap succeeds
    /// only if `state` still holds that epoch with that chunk unclaimed, and the next call's
    /// job is stored only after every chunk of this one is claimed and finished: so the
    /// pointer read is this call's, alive until this chunk is finished.
    fn claim(&self) -> Option<(usize, *const Job<'static>)> {
        let mut s = self.state.load(SeqCst);
        loop {
            if next_of(s) >= chunks_of(s) {
                return None;
            }
            let job = self.job.load(SeqCst);
            match self.state.compare_exchange_weak(s, s + 1, SeqCst, SeqCst) {
                Ok(_) => return Some((next_of(s), job)),
                Err(now) => s = now,
            }
        }
    }

    fn has_work(&self) -> bool {
        let s = self.state.load(SeqCst);
        next_of(s) < chunks_of(s)
    }

    /// Run claimed chunk `i` of `job`; a panic is kept for the caller. Then count it done
    /// (after which this thread no longer touches the job).
    fn run_chunk(&self, i: usize, job: *const Job<'static>) {
        // SAFETY: chunk i of this job is claimed and not yet counted done, so its caller is
        // still waiting in `Pool::run` and the job is alive (see `claim`).
        let job = unsafe { &*job };
        if let Err(p) = catch_unwind(AssertUnwindSafe(|| (job.run)(i))) {
            let mut first = job.panic.lock().unwrap_or_else(|e| e.into_inner());
            first.get_or_insert(p);
        }
        self.done.fetch_add(1, SeqCst);
    }
}

/// A worker: run chunks while there are any, spin for `SPIN`, then park until woken.
fn worker(sh: Arc<Shared>) {
    loop {
        if let Some((i, job)) = sh.claim() {
            sh.run_chunk(i, job);
            continue;
        }
        // Spin: a call published now is picked up without a wake-up.
        let start = Instant::now();
        let mut found = false;
        'spin: while start.elapsed() < SPIN {
            for _ in 0..64 {
                if sh.has_work() || sh.shutdown.load(Relaxed) {
                    found = true;
                    break 'spin;
                }
                std::hint::spin_loop();
            }
        }
        if sh.shutdown.load(SeqCst) {
            return;
        }
        if found {
            continue;
        }
        // Park. `sleepers` is raised before the last check and a caller reads it after
        // publishing (both SeqCst), and notifies under `lock`: no wake-up is lost.
        let mut g = sh.lock.lock().unwrap_or_else(|e| e.into_inner());
        sh.sleepers.fetch_add(1, SeqCst);
        while !sh.has_work() && !sh.shutdown.load(SeqCst) {
            g = sh.wake.wait(g).unwrap_or_else(|e| e.into_inner());
        }
        sh.sleepers.fetch_sub(1, SeqCst);
    }
}

/// A pool of `threads - 1` workers; the calling thread is the last one.
pub(crate) struct Pool {
    shared: Arc<Shared>,
    threads: usize,
    /// One call at a time publishes to the pool; a concurrent call (another Python thread, or
    /// a call made inside a chunk) runs on its own thread instead of waiting.
    busy: AtomicBool,
}

impl Pool {
    fn new(threads: usize) -> Pool {
        Pool::with_workers(threads, threads.saturating_sub(1))
    }

    /// A pool for `threads` threads with only `workers` of its workers started (tests: a
    /// call must finish even when no worker ever runs).
    fn with_workers(threads: usize, workers: usize) -> Pool {
        let shared = Arc::new(Shared {
            state: AtomicU64::new(0),
            done: AtomicUsize::new(0),
            job: AtomicPtr::new(std::ptr::null_mut()),
            sleepers: AtomicUsize::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
            shutdown: AtomicBool::new(false),
        });
        let mut started = 1;
        for i in 1..threads.min(workers + 1) {
            let sh = shared.clone();
            // A thread that cannot be started leaves a smaller pool: the caller and the
            // workers that did start share the chunks.
            let spawned = std::thread::Builder::new()
                .name(format!("groupadv-{i}"))
                .spawn(move || worker(sh));
            if spawned.is_err() {
                break;
            }
            started += 1;
        }
        Pool {
            shared,
            threads: if workers + 1 < threads {
                threads
            } else {
                started
            },
            busy: AtomicBool::new(false),
        }
    }

    /// Threads working on a call: the workers and the caller.
    pub(crate) fn current_num_threads(&self) -> usize {
        self.threads
    }

    /// Run `f(i)` for every chunk `i` in `0..n` (n <= MAX_CHUNKS), on the calling thread and
    /// the workers; returns when all are finished. A panic in a chunk is raised here, after
    /// every chunk has finished.
    fn run(&self, n: usize, f: &(dyn Fn(usize) + Sync)) {
        debug_assert!(n <= MAX_CHUNKS);
        if self.busy.swap(true, Acquire) {
            return (0..n).for_each(f);
        }
        struct Unbusy<'a>(&'a AtomicBool);
        impl Drop for Unbusy<'_> {
            fn drop(&mut self) {
                self.0.store(false, Release);
            }
        }
        let _unbusy = Unbusy(&self.busy);
        let sh = &*self.shared;
        let job = Job {
            run: f,
            panic: Mutex::new(None),
        };
        sh.done.store(0, SeqCst);
        // SAFETY (of the lifetime erasure): the job is dereferenced only for claimed chunks,
        // and this function returns only once all n chunks are finished.
        sh.job
            .store(&job as *const Job<'_> as *mut Job<'static>, SeqCst);
        let epoch = (epoch_of(sh.state.load(SeqCst)) + 1) & ((1 << 28) - 1);
        sh.state.store(pack(epoch, n, 0), SeqCst);
        if sh.sleepers.load(SeqCst) > 0 {
            let _g = sh.lock.lock().unwrap_or_else(|e| e.into_inner());
            sh.wake.notify_all();
        }
        while let Some((i, j)) = sh.claim() {
            sh.run_chunk(i, j);
        }
        // Every chunk is claimed: wait only for those still running on workers.
        let mut spins = 0u32;
        while sh.done.load(SeqCst) < n {
            if spins < 1 << 12 {
                std::hint::spin_loop();
                spins += 1;
            } else {
                std::thread::yield_now();
            }
        }
        sh.job.store(std::ptr::null_mut(), SeqCst);
        if let Some(p) = job.panic.into_inner().unwrap_or_else(|e| e.into_inner()) {
            resume_unwind(p);
        }
    }
}

impl Drop for Pool {
    /// The workers exit (they are not joined: an evicted pool's threads end on their own).
    fn drop(&mut self) {
        self.shared.shutdown.store(true, SeqCst);
        let _g = self.shared.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.shared.wake.notify_all();
    }
}

/// Run `f(i)` for every `i` in `0..n` on up to `threads` threads (the caller included), each
/// index exactly once; indices are claimed in order by whichever thread is free.
pub fn for_each_index(threads: usize, n: usize, f: impl Fn(usize) + Sync) {
    if threads <= 1 || n <= 1 {
        return (0..n).for_each(f);
    }
    let p = pool(threads.min(n));
    if n <= MAX_CHUNKS {
        return p.run(n, &f);
    }
    let per = n.div_ceil(MAX_CHUNKS);
    p.run(n.div_ceil(per), &|c| {
        (c * per..((c + 1) * per).min(n)).for_each(&f)
    });
}

/// One value per index, each written by the one thread that runs that index.
struct Slots<T>(Vec<UnsafeCell<Option<T>>>);

// SAFETY: slot i is only touched by the thread running index i (each index runs once), and
// read by the caller after every index has finished.
unsafe impl<T: Send> Sync for Slots<T> {}

impl<T> Slots<T> {
    fn new(items: impl IntoIterator<Item = Option<T>>) -> Slots<T> {
        Slots(items.into_iter().map(UnsafeCell::new).collect())
    }
    /// # Safety
    /// Only the thread running index `i` may call this.
    unsafe fn take(&self, i: usize) -> Option<T> {
        // SAFETY: the caller is the only thread touching slot i (see the impl of Sync).
        unsafe { (*self.0[i].get()).take() }
    }
    /// # Safety
    /// Only the thread running index `i` may call this.
    unsafe fn put(&self, i: usize, v: T) {
        // SAFETY: the caller is the only thread touching slot i (see the impl of Sync).
        unsafe { *self.0[i].get() = Some(v) }
    }
    fn into_vec(self) -> Vec<T> {
        self.0
            .into_iter()
            .map(|c| c.into_inner().expect("every index ran"))
            .collect()
    }
}

/// `f(i)` for every `i` in `0..n` (as [`for_each_index`]), the results in index order.
pub fn map_indices<R: Send>(threads: usize, n: usize, f: impl Fn(usize) -> R + Sync) -> Vec<R> {
    if threads <= 1 || n <= 1 {
        return (0..n).map(f).collect();
    }
    let out = Slots::new((0..n).map(|_| None));
    // SAFETY: index i is run by exactly one thread.
    for_each_index(threads, n, |i| unsafe { out.put(i, f(i)) });
    out.into_vec()
}

struct Pools {
    default_threads: usize,
    /// Most recently used last.
    by_size: Vec<(usize, Arc<Pool>)>,
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
pub(crate) fn pool(threads: usize) -> Arc<Pool> {
    let threads = threads.clamp(1, MAX_THREADS);
    let mut pools = lock();
    if let Some(i) = pools.by_size.iter().position(|(t, _)| *t == threads) {
        let entry = pools.by_size.remove(i);
        let p = entry.1.clone();
        pools.by_size.push(entry);
        return p;
    }
    let p = Arc::new(Pool::new(threads));
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
        pools
            .by_size
            .iter()
            .map(|(_, p)| p.current_num_threads())
            .sum(),
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

/// `f` applied to every item of `items` (each an owned piece of work, such as a range with
/// its own `&mut` pieces of several outputs), on up to `threads` threads, results in order.
pub fn map_owned<P: Send, R: Send>(
    threads: usize,
    items: Vec<P>,
    f: impl Fn(P) -> R + Sync,
) -> Vec<R> {
    if threads <= 1 || items.len() <= 1 {
        return items.into_iter().map(f).collect();
    }
    let n = items.len();
    let items = Slots::new(items.into_iter().map(Some));
    map_indices(threads, n, |i| {
        // SAFETY: index i runs on one thread only.
        let item = unsafe { items.take(i) }.unwrap();
        f(item)
    })
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
    map_indices(threads, ranges.len(), |i| f(ranges[i].clone()))
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
    map_indices(threads, ranges.len(), |i| f(ranges[i].clone()))
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
    if threads <= 1 || ranges.len() == 1 {
        return ranges
            .into_iter()
            .zip(pieces)
            .map(|(r, o)| f(r, o))
            .collect();
    }
    let pieces = Slots::new(pieces.into_iter().map(Some));
    // Index i is run by exactly one thread, which takes piece i once.
    map_indices(threads, ranges.len(), |i| {
        // SAFETY: index i runs on one thread only.
        let piece = unsafe { pieces.take(i) }.unwrap();
        f(ranges[i].clone(), piece)
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

    use std::collections::HashSet;
    use std::sync::atomic::AtomicU32;

    /// Every index runs exactly once, for any thread count, including calls with more
    /// indices than one job holds (`MAX_CHUNKS`).
    #[test]
    fn every_index_is_claimed_exactly_once() {
        for threads in 1..=6 {
            for n in [0usize, 1, 2, 3, 100, 1000, MAX_CHUNKS + 3] {
                let hits: Vec<AtomicU32> = (0..n).map(|_| AtomicU32::new(0)).collect();
                for_each_index(threads, n, |i| {
                    hits[i].fetch_add(1, SeqCst);
                });
                assert!(hits.iter().all(|h| h.load(SeqCst) == 1), "{threads} {n}");
                let got = map_indices(threads, n.min(5000), |i| 3 * i);
                assert_eq!(got, (0..n.min(5000)).map(|i| 3 * i).collect::<Vec<_>>());
            }
        }
    }

    /// The calling thread runs chunks itself.
    #[test]
    fn the_caller_takes_part() {
        let me = std::thread::current().id();
        let who = Mutex::new(HashSet::new());
        for_each_index(2, 64, |_| {
            who.lock().unwrap().insert(std::thread::current().id());
            std::thread::sleep(Duration::from_micros(200));
        });
        assert!(who.lock().unwrap().contains(&me));
    }

    /// A call never waits for a worker that has not started: on a pool whose workers never
    /// run, the caller does every chunk and returns.
    #[test]
    fn a_call_finishes_without_any_worker() {
        let p = Pool::with_workers(4, 0);
        assert_eq!(p.current_num_threads(), 4);
        let hits: Vec<AtomicU32> = (0..500).map(|_| AtomicU32::new(0)).collect();
        p.run(500, &|i| {
            hits[i].fetch_add(1, SeqCst);
        });
        assert!(hits.iter().all(|h| h.load(SeqCst) == 1));
    }

    /// A call on a pool that another call is using runs on its own thread instead of
    /// waiting (two Python threads, or a parallel map inside a chunk).
    #[test]
    fn a_busy_pool_runs_a_second_call_on_its_caller() {
        let inner = AtomicUsize::new(0);
        for_each_index(2, 8, |_| {
            // nested on the same pool: it must not deadlock
            for_each_index(2, 16, |_| {
                inner.fetch_add(1, SeqCst);
            });
        });
        assert_eq!(inner.load(SeqCst), 8 * 16);
    }

    /// A panic inside a chunk (on a worker or the caller) reaches the caller after every
    /// chunk has finished, and the pool keeps working.
    #[test]
    fn a_panic_in_a_chunk_reaches_the_caller() {
        // A pool of its own: the cached ones may be busy with other tests (their calls then
        // run serially, where a panic simply ends the loop).
        let p = Pool::new(2);
        for bad in [0usize, 1, 63] {
            let finished = AtomicUsize::new(0);
            let r = catch_unwind(AssertUnwindSafe(|| {
                p.run(64, &|i| {
                    std::thread::sleep(Duration::from_micros(50));
                    if i == bad {
                        panic!("chunk {i} failed");
                    }
                    finished.fetch_add(1, SeqCst);
                })
            }));
            let msg = r.unwrap_err().downcast::<String>().unwrap();
            assert_eq!(*msg, format!("chunk {bad} failed"));
            assert_eq!(finished.load(SeqCst), 63);
            let hits = AtomicUsize::new(0);
            p.run(10, &|_| {
                hits.fetch_add(1, SeqCst);
            });
            assert_eq!(hits.load(SeqCst), 10);
        }
    }

    /// Owned items (here ranges with their own output pieces) each reach `f` once, in order.
    #[test]
    fn owned_items_run_once_in_order() {
        let mut a = vec![0usize; 100];
        let mut b = vec![0usize; 100];
        let items: Vec<_> = a.chunks_mut(7).zip(b.chunks_mut(7)).enumerate().collect();
        let lens = map_owned(3, items, |(i, (x, y))| {
            x.fill(i);
            y.fill(2 * i);
            x.len()
        });
        assert_eq!(lens.iter().sum::<usize>(), 100);
        assert!(a.iter().enumerate().all(|(j, &v)| v == j / 7));
        assert!(b.iter().enumerate().all(|(j, &v)| v == 2 * (j / 7)));
    }

    /// Workers spin then park; calls after an idle gap (parked workers) still use them and
    /// finish, many times over.
    #[test]
    fn calls_after_idle_gaps_wake_the_pool() {
        for gap in [0u64, 1, 5] {
            for _ in 0..5 {
                std::thread::sleep(Duration::from_millis(gap));
                let s: usize = map_indices(3, 40, |i| i).into_iter().sum();
                assert_eq!(s, 40 * 39 / 2);
            }
        }
    }

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
