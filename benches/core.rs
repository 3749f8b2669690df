//! The Rust core on its own (no Python): time per call against a plain copy of the same
//! buffer, measured in the same run. `cargo bench --bench core` (N = 1e7 float32 by default;
//! `GROUPADV_BENCH_N` changes it, `GROUPADV_NUM_THREADS` the threads, and
//! `GROUPADV_BENCH_ONLY` keeps the cases whose name contains it, for profiling one kernel).

use groupadv::advantage::{advantages, Params, Scale};
use groupadv::groups::Grouping;
use std::time::Instant;

fn median_ms(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut v: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[reps / 2]
}

/// xorshift: reproducible rewards and labels without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn main() {
    let n: usize = std::env::var("GROUPADV_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let mut rng = Rng(0x9e3779b97f4a7c15);
    let x: Vec<f32> = (0..n)
        .map(|_| (rng.next() % 1000) as f32 / 1000.0)
        .collect();
    let mut out = vec![0f32; n];
    let copy = median_ms(11, || out.copy_from_slice(&x));
    println!(
        "n = {n} float32, threads = {}",
        groupadv::parallel::default_threads()
    );
    println!("{:34} {:>9} {:>9}", "case", "ms", "x copy");
    println!("{:34} {:9.3} {:9.2}", "copy (memcpy)", copy, 1.0);
    let only = std::env::var("GROUPADV_BENCH_ONLY").unwrap_or_default();
    let mut report = |name: &str, g: &Grouping, p: &Params| {
        if !name.contains(only.as_str()) {
            return;
        }
        let m = g.len();
        let t = median_ms(11, || advantages(&x[..m], &mut out[..m], g, p).unwrap());
        println!("{name:34} {t:9.3} {:9.2}", t / copy);
    };
    let p = Params::default();
    for size in [4usize, 16, 64] {
        let m = n / size * size;
        report(
            &format!("uniform G={size}"),
            &Grouping::uniform(m, size).unwrap(),
            &p,
        );
    }
    let g16 = Grouping::uniform(n / 16 * 16, 16).unwrap();
    report(
        "uniform G=16, scale=batch",
        &g16,
        &Params {
            scale: Scale::Batch,
            ..p
        },
    );
    let mut offsets = vec![0i64];
    while (*offsets.last().unwrap() as usize) < n {
        let next = *offsets.last().unwrap() + 1 + (rng.next() % 31) as i64;
        offsets.push(next.min(n as i64));
    }
    report(
        "ragged sizes 1..31",
        &Grouping::ragged(n, &offsets).unwrap(),
        &p,
    );
    let mut ids: Vec<i64> = (0..n as i64).map(|i| i / 16).collect();
    for i in (1..n).rev() {
        ids.swap(i, (rng.next() % (i as u64 + 1)) as usize);
    }
    if "shuffled int ids: resolve labels".contains(only.as_str()) {
        let t = median_ms(5, || {
            let _ = Grouping::from_ids(&ids).unwrap();
        });
        println!(
            "{:34} {t:9.3} {:9.2}",
            "shuffled int ids: resolve labels",
            t / copy
        );
    }
    report(
        "shuffled int ids: advantages",
        &Grouping::from_ids(&ids).unwrap().0,
        &p,
    );
}
