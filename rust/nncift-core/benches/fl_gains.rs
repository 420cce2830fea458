//! The facility-location gain loop on a dense kernel: one batch of marginal gains over the
//! whole pool (what every naive step and the lazy greedy's first pass evaluate), and a
//! whole lazy-greedy run.
//!
//! `cargo bench -p nncift-core --bench fl_gains`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ndarray::Array2;
use nncift_core::select::{
    maximize, Extras, KernelData, Optimizer, Problem, RunConfig, SetFunction,
};
use rand_xoshiro::rand_core::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

/// A random non-negative symmetric `(n, n)` kernel with a unit diagonal.
fn kernel(n: usize, seed: u64) -> Array2<f32> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut k = Array2::<f32>::zeros((n, n));
    for i in 0..n {
        k[[i, i]] = 1.0;
        for j in 0..i {
            let v = (rng.next_u32() >> 8) as f32 / (1u32 << 24) as f32;
            k[[i, j]] = v;
            k[[j, i]] = v;
        }
    }
    k
}

fn bench_gains(c: &mut Criterion) {
    let pool = nncift_core::thread_pool(1).expect("pool");
    let mut group = c.benchmark_group("fl_gains");
    for n in [2_000usize, 8_000] {
        let k = kernel(n, 3);
        group.throughput(Throughput::Elements((n * n) as u64));
        group.bench_function(BenchmarkId::new("all_candidates_after_10", n), |b| {
            pool.install(|| {
                let mut p = Problem::new(
                    &SetFunction::FacilityLocation,
                    Some(KernelData::Dense(k.view())),
                    Extras::default(),
                )
                .expect("problem");
                for j in 0..10 {
                    p.insert(j * 7).expect("insert");
                }
                let cands: Vec<usize> = (0..n).collect();
                let mut out = vec![0f64; n];
                b.iter(|| {
                    p.gains(std::hint::black_box(&cands), &mut out)
                        .expect("gains");
                    std::hint::black_box(&out);
                });
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("fl_lazy_greedy");
    group.sample_size(10);
    let n = 4_000;
    let k = kernel(n, 5);
    group.bench_function(BenchmarkId::new("select_100", n), |b| {
        pool.install(|| {
            b.iter(|| {
                let mut p = Problem::new(
                    &SetFunction::FacilityLocation,
                    Some(KernelData::Dense(k.view())),
                    Extras::default(),
                )
                .expect("problem");
                let cfg = RunConfig {
                    optimizer: Optimizer::Lazy,
                    count: 100,
                    ..RunConfig::default()
                };
                std::hint::black_box(maximize(&mut p, &cfg).expect("maximize"))
            })
        })
    });
    group.finish();
}

criterion_group!(benches, bench_gains);
criterion_main!(benches);
